//! Media: G.711, prompts kept as encoded frames, RFC 4733 DTMF, the engine that one clock
//! paces for every call, and SRTP with SDES keys (`sdes`, `srtp`) for encrypted streams.

pub mod dtls_srtp;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod ice;
pub mod mixer;
pub mod prompts;
pub mod recorder;
pub mod sdes;
pub mod srtp;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// One packet every 20 ms.
pub const FRAME_MS: u64 = 20;

/// The audio codecs we speak; both are G.711 at 8 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
    /// The byte that decodes to (near) zero: what we send when nothing plays.
    pub fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Codec::Pcmu => g711::ulaw_encode(s),
            Codec::Pcma => g711::alaw_encode(s),
        }
    }
    pub fn decode(self, b: u8) -> i16 {
        match self {
            Codec::Pcmu => g711::ulaw_decode(b),
            Codec::Pcma => g711::alaw_decode(b),
        }
    }
    /// A frame's bytes decoded (table-driven: the mixer's hot path).
    pub fn decode_frame(self, bytes: &[u8], out: &mut [i16]) {
        g711::decode_frame(self == Codec::Pcma, bytes, out)
    }
    /// Sums, clipped to 16 bits, encoded (table-driven).
    pub fn encode_frame(self, sums: &[i32], out: &mut [u8]) {
        g711::encode_frame(self == Codec::Pcma, sums, out)
    }
}
