//! SIP, in layers: rsipstack's message parser behind [`message`] (so the library can be
//! swapped), stream [`framing`], our sans-IO [`transaction`] layer, [`dialog`]s with the one
//! INVITE session every call leg uses, the [`endpoint`] that routes each message to its
//! session, and [`digest`] authentication (both sides).
//!
//! rsipstack's transactions and dialogs run their own tasks and sockets; ours are state
//! machines driven by call control with an explicit `now`, so retransmission timers and CANCEL
//! races are tested without sleeping. The parser is what we take from it: compact headers,
//! folded lines and bracketed IPv6 work there, which rsip 0.4 gets wrong.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod framing;
pub mod glance;
pub mod message;
pub mod pending_ok;
pub mod transaction;

pub use rsipstack::sip::{Method, Request, Response, SipMessage};

/// T1, T2 and T4 of RFC 3261 §17.1.1.1 (defaults).
pub const T1: std::time::Duration = std::time::Duration::from_millis(500);
pub const T2: std::time::Duration = std::time::Duration::from_secs(4);
pub const T4: std::time::Duration = std::time::Duration::from_secs(5);

/// The methods we answer, for Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER";

/// Which transport a message came on or leaves by. Stream connections (TCP, TLS) are numbered
/// by the runtime; a request to a phone goes back over the connection it registered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp(u64),
    Tls(u64),
    /// SIP over WebSocket (RFC 7118), a browser's: the connection of `/sip` on the HTTP
    /// listener (WSS when that listener speaks TLS).
    Ws(u64),
}

impl Transport {
    pub fn reliable(self) -> bool {
        matches!(
            self,
            Transport::Tcp(_) | Transport::Tls(_) | Transport::Ws(_)
        )
    }
    /// Whether the signalling is encrypted on the wire (SIP over TLS): SDES keys for SRTP
    /// are offered and accepted only then (RFC 4568 §8.3).
    pub fn secure(self) -> bool {
        matches!(self, Transport::Tls(_))
    }
    /// A browser's connection: its calls speak WebRTC (ICE-lite, DTLS-SRTP).
    pub fn is_browser(self) -> bool {
        matches!(self, Transport::Ws(_))
    }
    /// The stream connection, if any.
    pub fn connection(self) -> Option<u64> {
        match self {
            Transport::Udp => None,
            Transport::Tcp(c) | Transport::Tls(c) | Transport::Ws(c) => Some(c),
        }
    }
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
            Transport::Tls(_) => "TLS",
            Transport::Ws(_) => "WS",
        }
    }
    /// The `transport` URI parameter for our Contact (RFC 5630 §3: `transport=tls`, not a
    /// `sips:` URI, which would demand TLS on every hop).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp(_) => ";transport=tcp",
            Transport::Tls(_) => ";transport=tls",
            Transport::Ws(_) => ";transport=ws",
        }
    }
}

/// Where a message goes: transport plus peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: std::net::SocketAddr,
}

/// A message for the runtime to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: bytes::Bytes,
}
