//! SRTP (RFC 3711, RFC 7714 for AES-GCM) for one RTP stream keyed by SDES: an
//! [`SrtpSession`] holds the outbound context (our key: what we send is encrypted and tagged)
//! and the inbound context (their key: what we receive is checked against its tag and the
//! replay window, then decrypted), each with its rollover counter. Call control stays as it
//! is: the media engine protects after it builds a packet and unprotects before it parses
//! one, and bridges, conferences, the recorder and DTMF see plain G.711.
//!
//! The transforms are the webrtc-rs project's `webrtc-srtp` crate (pure Rust, AES-NI through
//! the RustCrypto `aes` crate): it has the three suites we speak, a rollover counter per SSRC
//! and a sliding replay window. This module wraps it so that:
//! - the hot path writes into a caller's buffer reused across packets;
//! - errors say what the daemon does with a packet: drop it and count it as an
//!   authentication failure ([`SrtpError::AuthFailed`]), a replay ([`SrtpError::Replayed`]) or
//!   a malformed packet ([`SrtpError::Malformed`]), in [`SrtpCounters`] the daemon exports;
//! - SRTCP input is checked before the crate sees it: the crate reads the SRTCP index before
//!   it checks the length (a short packet would panic) and returns a packet whose E flag is
//!   clear without checking its tag; we refuse both, since we never negotiate unencrypted
//!   SRTCP.
//!
//! Replay windows are 128 packets, as libsrtp's: wide enough for any jitter a voice stream
//! tolerates.

use super::sdes::{CryptoAttr, Suite};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Packets a replay window remembers behind the newest one (SRTP and SRTCP).
pub const REPLAY_WINDOW: usize = 128;

/// Why a packet was not protected or unprotected. The daemon drops the packet and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The authentication tag does not match: a forged, corrupted or wrongly keyed packet.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// A packet already received (or older than the replay window).
    #[error("SRTP packet replayed or too old for the replay window")]
    Replayed,
    /// Not an RTP/RTCP packet we can read (too short, bad header).
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The two directions were keyed with different suites (an answer must keep the offer's).
    #[error("our suite {ours} and theirs {theirs} differ")]
    SuiteMismatch { ours: Suite, theirs: Suite },
    /// The key material was refused by the crypto library (length: cannot happen for a parsed
    /// [`CryptoAttr`]).
    #[error("SRTP key refused: {0}")]
    Key(String),
    /// 2^48 packets sent with one key (RFC 3711 §9.2): the key must change.
    #[error("SRTP key exhausted: 2^48 packets sent with one key")]
    KeyExhausted,
}

/// What one session did, for metrics: add them up per daemon (`srtp_auth_failures_total`,
/// `srtp_replays_total`, ...) with [`SrtpCounters::add`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpCounters {
    /// RTP and RTCP packets protected (sent).
    pub protected: u64,
    /// RTP and RTCP packets unprotected (received and accepted).
    pub unprotected: u64,
    /// Received packets dropped because their tag did not match.
    pub auth_failures: u64,
    /// Received packets dropped as replays (or too old for the window).
    pub replays: u64,
    /// Packets dropped as unreadable, either way.
    pub malformed: u64,
}

impl SrtpCounters {
    /// Adds another session's counters to these (daemon totals).
    pub fn add(&mut self, o: &SrtpCounters) {
        self.protected += o.protected;
        self.unprotected += o.unprotected;
        self.auth_failures += o.auth_failures;
        self.replays += o.replays;
        self.malformed += o.malformed;
    }

    fn count(&mut self, r: &Result<(), SrtpError>, sent: bool) {
        match r {
            Ok(()) if sent => self.protected += 1,
            Ok(()) => self.unprotected += 1,
            Err(SrtpError::AuthFailed) => self.auth_failures += 1,
            Err(SrtpError::Replayed) => self.replays += 1,
            Err(SrtpError::Malformed(_)) => self.malformed += 1,
            Err(_) => {}
        }
    }
}

/// One RTP stream's SRTP: outbound keyed with our `a=crypto`, inbound with theirs.
pub struct SrtpSession {
    suite: Suite,
    outbound: Context,
    inbound: Context,
    counters: SrtpCounters,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSession")
            .field("suite", &self.suite)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn profile(suite: Suite) -> ProtectionProfile {
    match suite {
        Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

/// One direction's context; the replay windows matter only inbound, but cost nothing outbound.
fn context(attr: &CryptoAttr) -> Result<Context, SrtpError> {
    Context::new(
        &attr.key,
        &attr.salt,
        profile(attr.suite),
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
    )
    .map_err(|e| SrtpError::Key(e.to_string()))
}

/// The crate's error as what the daemon does with the packet.
fn classify(e: webrtc_srtp::Error) -> SrtpError {
    use webrtc_srtp::Error as E;
    match e {
        E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag
        | E::ErrFailedToVerifyAuthTag
        // GCM: the AEAD open failed, which is its tag check.
        | E::AesGcm(_) => SrtpError::AuthFailed,
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) | E::ErrDuplicated => {
            SrtpError::Replayed
        }
        E::ErrExceededMaxPackets => SrtpError::KeyExhausted,
        other => SrtpError::Malformed(other.to_string()),
    }
}

/// The smallest RTP header.
const RTP_HEADER: usize = 12;
/// An RTCP header with the sender's SSRC.
const RTCP_HEADER: usize = 8;

impl SrtpSession {
    /// The session for one stream: we encrypt with `ours` (the key in our SDP) and decrypt with
    /// `theirs` (the key in theirs). Both must name the same suite.
    pub fn new(ours: &CryptoAttr, theirs: &CryptoAttr) -> Result<SrtpSession, SrtpError> {
        if ours.suite != theirs.suite {
            return Err(SrtpError::SuiteMismatch {
                ours: ours.suite,
                theirs: theirs.suite,
            });
        }
        Ok(SrtpSession {
            suite: ours.suite,
            outbound: context(ours)?,
            inbound: context(theirs)?,
            counters: SrtpCounters::default(),
        })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// What this session has done so far.
    pub fn counters(&self) -> SrtpCounters {
        self.counters
    }

    /// Encrypts and tags the RTP packet `rtp` into `out` (cleared first; its capacity is kept
    /// across packets): `out` becomes the SRTP packet to send, [`Suite::rtp_overhead`] bytes
    /// longer.
    pub fn protect_rtp(&mut self, rtp: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let r = if rtp.len() < RTP_HEADER {
            Err(SrtpError::Malformed(format!(
                "RTP packet of {} bytes",
                rtp.len()
            )))
        } else {
            self.outbound
                .encrypt_rtp(rtp)
                .map(|b| out.extend_from_slice(&b))
                .map_err(classify)
        };
        self.counters.count(&r, true);
        r
    }

    /// Checks the tag and the replay window of the SRTP packet `srtp` and decrypts it into
    /// `out` (cleared first): on `Ok`, `out` is the plain RTP packet. On `Err` the packet is
    /// to be dropped; the rollover counter and the replay window are unchanged by it.
    pub fn unprotect_rtp(&mut self, srtp: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let r = if srtp.len() < RTP_HEADER + self.suite.rtp_overhead() {
            Err(SrtpError::Malformed(format!(
                "SRTP packet of {} bytes",
                srtp.len()
            )))
        } else if srtp[0] >> 6 != 2 {
            Err(SrtpError::Malformed("not RTP version 2".into()))
        } else {
            self.inbound
                .decrypt_rtp(srtp)
                .map(|b| out.extend_from_slice(&b))
                .map_err(classify)
        };
        self.counters.count(&r, false);
        r
    }

    /// Encrypts and tags the (possibly compound) RTCP packet `rtcp` into `out` (cleared first),
    /// with the next SRTCP index.
    pub fn protect_rtcp(&mut self, rtcp: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let r = if rtcp.len() < RTCP_HEADER {
            Err(SrtpError::Malformed(format!(
                "RTCP packet of {} bytes",
                rtcp.len()
            )))
        } else {
            self.outbound
                .encrypt_rtcp(rtcp)
                .map(|b| out.extend_from_slice(&b))
                .map_err(classify)
        };
        self.counters.count(&r, true);
        r
    }

    /// Checks and decrypts the SRTCP packet `srtcp` into `out` (cleared first). A packet with
    /// the E flag clear is refused as [`SrtpError::AuthFailed`]: we never agree to unencrypted
    /// SRTCP, so such a packet is not one the peer may send.
    pub fn unprotect_rtcp(&mut self, srtcp: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        out.clear();
        let overhead = self.suite.rtcp_overhead();
        let r = if srtcp.len() < RTCP_HEADER + overhead {
            Err(SrtpError::Malformed(format!(
                "SRTCP packet of {} bytes",
                srtcp.len()
            )))
        } else if srtcp[0] >> 6 != 2 {
            Err(SrtpError::Malformed("not RTCP version 2".into()))
        } else if srtcp[srtcp.len() - self.suite.srtcp_e_flag_from_end()] & 0x80 == 0 {
            Err(SrtpError::AuthFailed)
        } else {
            self.inbound
                .decrypt_rtcp(srtcp)
                .map(|b| out.extend_from_slice(&b))
                .map_err(classify)
        };
        self.counters.count(&r, false);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    /// A 172-byte PCMU packet: 12-byte header, 160 bytes of audio.
    fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    /// A sender report with no report blocks.
    fn rtcp_sr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[7u8; 20]);
        p
    }

    /// Alice's session and Bob's, keyed as an SDES offer/answer would.
    fn pair(suite: Suite, seed: u64) -> (SrtpSession, SrtpSession) {
        let mut r = StdRng::seed_from_u64(seed);
        let a = CryptoAttr::generate(1, suite, &mut r).unwrap();
        let b = CryptoAttr::generate(1, suite, &mut r).unwrap();
        (
            SrtpSession::new(&a, &b).unwrap(),
            SrtpSession::new(&b, &a).unwrap(),
        )
    }

    #[test]
    fn each_suite_round_trips_rtp_and_rtcp_and_hides_the_audio() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 1);
            let (mut wire, mut plain) = (Vec::new(), Vec::new());
            for seq in 0..5u16 {
                let p = rtp(seq, seq as u32 * 160, 0x1234);
                alice.protect_rtp(&p, &mut wire).unwrap();
                assert_eq!(wire.len(), p.len() + suite.rtp_overhead(), "{suite}");
                assert_eq!(wire[..12], p[..12], "the header stays clear");
                assert_ne!(wire[12..172], p[12..], "the audio is encrypted");
                bob.unprotect_rtp(&wire, &mut plain).unwrap();
                assert_eq!(plain, p, "{suite}");
            }
            let sr = rtcp_sr(0x1234);
            alice.protect_rtcp(&sr, &mut wire).unwrap();
            assert_eq!(wire.len(), sr.len() + suite.rtcp_overhead(), "{suite}");
            bob.unprotect_rtcp(&wire, &mut plain).unwrap();
            assert_eq!(plain, sr, "{suite}");
            // And the other way.
            bob.protect_rtp(&rtp(9, 0, 0x9), &mut wire).unwrap();
            alice.unprotect_rtp(&wire, &mut plain).unwrap();
            assert_eq!(plain, rtp(9, 0, 0x9));
            assert_eq!(alice.counters().protected, 6);
            assert_eq!(alice.counters().unprotected, 1);
            assert_eq!(bob.counters().unprotected, 6);
        }
    }

    #[test]
    fn the_rollover_counter_carries_the_stream_across_seq_65535_to_0() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 2);
            let (mut wire, mut plain) = (Vec::new(), Vec::new());
            let mut seq = 65_500u16;
            for i in 0..100u32 {
                let p = rtp(seq, i * 160, 77);
                alice.protect_rtp(&p, &mut wire).unwrap();
                bob.unprotect_rtp(&wire, &mut plain)
                    .unwrap_or_else(|e| panic!("{suite} seq {seq}: {e}"));
                assert_eq!(plain, p);
                seq = seq.wrapping_add(1);
            }
            // A packet of the first cycle sent again after the wrap: its ROC is guessed one
            // back, and the window knows it was received.
            let mut late_sender = pair(suite, 2).0;
            let mut late = Vec::new();
            for s in 65_500u16..=65_530 {
                late_sender.protect_rtp(&rtp(s, 0, 77), &mut late).unwrap();
            }
            // 65530 was already received: a replay; nothing else has changed.
            assert_eq!(
                bob.unprotect_rtp(&late, &mut plain),
                Err(SrtpError::Replayed)
            );
        }
    }

    #[test]
    fn a_late_packet_of_the_first_cycle_is_accepted_after_the_wrap() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 3);
            let (mut wire, mut plain) = (Vec::new(), Vec::new());
            let mut held = Vec::new();
            for s in [65_533u16, 65_534, 65_535, 0, 1, 2] {
                alice.protect_rtp(&rtp(s, 0, 5), &mut wire).unwrap();
                if s == 65_535 {
                    held = wire.clone(); // delivered last
                } else {
                    bob.unprotect_rtp(&wire, &mut plain).unwrap();
                }
            }
            bob.unprotect_rtp(&held, &mut plain).unwrap();
            assert_eq!(plain, rtp(65_535, 0, 5), "{suite}");
        }
    }

    #[test]
    fn a_tampered_packet_fails_authentication_and_is_counted() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 4);
            let (mut wire, mut plain) = (Vec::new(), Vec::new());
            alice.protect_rtp(&rtp(10, 0, 1), &mut wire).unwrap();
            for at in [1usize, 20, wire.len() - 1] {
                let mut bad = wire.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    bob.unprotect_rtp(&bad, &mut plain),
                    Err(SrtpError::AuthFailed),
                    "{suite} byte {at}"
                );
                assert!(plain.is_empty());
            }
            // The genuine packet still passes: a forgery does not move the replay window.
            bob.unprotect_rtp(&wire, &mut plain).unwrap();
            // A packet under another key fails too.
            let (mut mallory, _) = pair(suite, 99);
            mallory.protect_rtp(&rtp(11, 0, 1), &mut wire).unwrap();
            assert_eq!(
                bob.unprotect_rtp(&wire, &mut plain),
                Err(SrtpError::AuthFailed)
            );
            // SRTCP: a flipped bit, and a packet whose E flag was cleared.
            alice.protect_rtcp(&rtcp_sr(1), &mut wire).unwrap();
            let mut bad = wire.clone();
            bad[10] ^= 0x80;
            assert_eq!(
                bob.unprotect_rtcp(&bad, &mut plain),
                Err(SrtpError::AuthFailed)
            );
            let mut clear = wire.clone();
            let e = clear.len() - suite.srtcp_e_flag_from_end();
            clear[e] &= 0x7F;
            assert_eq!(
                bob.unprotect_rtcp(&clear, &mut plain),
                Err(SrtpError::AuthFailed)
            );
            bob.unprotect_rtcp(&wire, &mut plain).unwrap();
            assert_eq!(bob.counters().auth_failures, 6, "{suite}");
        }
    }

    #[test]
    fn a_replayed_packet_is_refused_and_out_of_order_in_the_window_is_accepted() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 5);
            let mut plain = Vec::new();
            let wires: Vec<Vec<u8>> = (100u16..140)
                .map(|s| {
                    let mut w = Vec::new();
                    alice.protect_rtp(&rtp(s, 0, 8), &mut w).unwrap();
                    w
                })
                .collect();
            // 100..140 in a shuffled order: every packet is accepted once.
            let order = [0usize, 3, 1, 2, 10, 4, 39, 5, 6, 7, 8, 9];
            for &i in order.iter().chain((11..39).collect::<Vec<_>>().iter()) {
                bob.unprotect_rtp(&wires[i], &mut plain)
                    .unwrap_or_else(|e| panic!("{suite} {i}: {e}"));
            }
            for &i in &[0usize, 39, 10] {
                assert_eq!(
                    bob.unprotect_rtp(&wires[i], &mut plain),
                    Err(SrtpError::Replayed)
                );
            }
            // SRTCP replay.
            let mut w = Vec::new();
            alice.protect_rtcp(&rtcp_sr(8), &mut w).unwrap();
            bob.unprotect_rtcp(&w, &mut plain).unwrap();
            assert_eq!(bob.unprotect_rtcp(&w, &mut plain), Err(SrtpError::Replayed));
            assert_eq!(bob.counters().replays, 4);
            assert_eq!(bob.counters().unprotected, 41);
        }
    }

    #[test]
    fn a_packet_older_than_the_window_is_refused() {
        let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80, 6);
        let (mut old, mut wire, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        alice.protect_rtp(&rtp(1000, 0, 3), &mut old).unwrap();
        for s in 1001..1001 + REPLAY_WINDOW as u16 + 1 {
            alice.protect_rtp(&rtp(s, 0, 3), &mut wire).unwrap();
            bob.unprotect_rtp(&wire, &mut plain).unwrap();
        }
        assert_eq!(
            bob.unprotect_rtp(&old, &mut plain),
            Err(SrtpError::Replayed)
        );
    }

    #[test]
    fn short_and_garbage_packets_are_malformed_and_never_panic() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite, 7);
            let mut out = Vec::new();
            assert!(matches!(
                alice.protect_rtp(&[0x80; 5], &mut out),
                Err(SrtpError::Malformed(_))
            ));
            assert!(matches!(
                bob.unprotect_rtp(&[0x80; 13], &mut out),
                Err(SrtpError::Malformed(_))
            ));
            assert!(matches!(
                bob.unprotect_rtp(&[0x40; 60], &mut out),
                Err(SrtpError::Malformed(_))
            ));
            assert!(matches!(
                bob.unprotect_rtcp(&[0x80; 12], &mut out),
                Err(SrtpError::Malformed(_))
            ));
            // Random bytes of every length: an error, never a panic.
            let mut r = StdRng::seed_from_u64(8);
            for i in 0..3000usize {
                let mut p = vec![0u8; i % 200];
                rand::Rng::fill_bytes(&mut r, &mut p);
                if i % 2 == 0 && !p.is_empty() {
                    p[0] = 0x80 | (p[0] & 0x3F);
                }
                assert!(bob.unprotect_rtp(&p, &mut out).is_err());
                assert!(bob.unprotect_rtcp(&p, &mut out).is_err());
                let _ = alice.protect_rtp(&p, &mut out);
                let _ = alice.protect_rtcp(&p, &mut out);
            }
            assert_eq!(bob.counters().unprotected, 0);
        }
    }

    #[test]
    fn a_session_can_move_to_a_media_worker_thread() {
        fn send<T: Send>() {}
        send::<SrtpSession>();
    }

    #[test]
    fn directions_keyed_with_different_suites_are_refused() {
        let mut r = StdRng::seed_from_u64(9);
        let a = CryptoAttr::generate(1, Suite::AesCm128HmacSha1_80, &mut r).unwrap();
        let b = CryptoAttr::generate(1, Suite::AeadAes128Gcm, &mut r).unwrap();
        assert_eq!(
            SrtpSession::new(&a, &b).err(),
            Some(SrtpError::SuiteMismatch {
                ours: Suite::AesCm128HmacSha1_80,
                theirs: Suite::AeadAes128Gcm
            })
        );
    }
}
