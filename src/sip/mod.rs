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

/// Which transport a message came on or leaves by. TCP connections are numbered by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp(u64),
}

impl Transport {
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp(_))
    }
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
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
