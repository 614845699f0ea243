//! The RTP side of the runtime as call control sees it: opening a port for a leg, sending,
//! bridging, recording, conferences; and what the RTP readers report back.

use super::Leg;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The RTP side of the runtime: opening a port for a leg, sending, closing.
pub trait MediaIo {
    type Tx;
    /// Opens an RTP endpoint for `leg`; `None` when no port is free.
    fn open(&mut self, leg: Leg) -> Option<(Self::Tx, u16)>;
    fn send(&mut self, tx: &Self::Tx, packet: &[u8], to: SocketAddr);
    fn close(&mut self, tx: Self::Tx);
    /// The payload type of RFC 4733 events the peer sends on this endpoint, once negotiated.
    fn set_event_pt(&mut self, tx: &Self::Tx, pt: Option<u8>);
    /// The peer's SDP changed: RTP from `sdp_addr` is accepted at once, and the first other
    /// source is learned again (symmetric RTP); any other source is ignored after that.
    fn media_changed(&mut self, tx: &Self::Tx, sdp_addr: Option<SocketAddr>);
    /// SRTP for this endpoint from now on (`None`: plain RTP): what it receives is checked
    /// and decrypted before anything else sees it, and what it sends (our streams, the relay
    /// from the other leg, a conference's mix) is encrypted, so bridges, conferences, the
    /// recorder and DTMF work on plain G.711 whatever each side speaks.
    fn set_srtp(&mut self, _tx: &Self::Tx, _session: Option<crate::media::srtp::SrtpSession>) {}
    /// A browser's leg (WebRTC): the endpoint answers ICE checks as a lite agent with fresh
    /// credentials and serves DTLS-SRTP with the daemon's certificate; nothing is sent or
    /// taken as media until the handshake has keyed it. What our SDP must say, or `None`
    /// when WebRTC is not available.
    fn webrtc_offer(&mut self, _tx: &Self::Tx) -> Option<crate::sdp::LocalWebRtc> {
        None
    }
    /// The browser's answer named its certificate (`a=fingerprint`): the handshake is checked
    /// against it and must complete in time; [`RtpEvent::Secured`] or
    /// [`RtpEvent::SecureFailed`] tells how it went.
    fn webrtc_answer(&mut self, _tx: &Self::Tx, _fingerprint: &str) {}
    /// Our address on the route to `peer`, for Contact, Via and SDP when listening on a
    /// wildcard address.
    fn local_ip_for(&mut self, peer: IpAddr) -> Option<IpAddr>;
    /// Relay RTP between two endpoints (caller and seat), packets as they come.
    fn bridge(&mut self, a: &Self::Tx, b: &Self::Tx);
    fn unbridge(&mut self, a: &Self::Tx);
    /// Record what the bridge of `a` (caller, left channel) and `b` (seat, right) relays, in
    /// `codec`, to a stereo WAV at `path`, until `stop_recording(a)`.
    fn record(
        &mut self,
        _a: &Self::Tx,
        _b: &Self::Tx,
        _codec: crate::media::Codec,
        _path: std::path::PathBuf,
    ) {
    }
    fn stop_recording(&mut self, _a: &Self::Tx) {}
    /// The recording of `a`'s call goes on with `b` as the other side (the caller's new
    /// partner after a transfer); no-op when `a` is not recorded.
    fn record_partner(&mut self, _a: &Self::Tx, _b: &Self::Tx, _codec: crate::media::Codec) {}
    /// Conference `id` of these members (transmitter, codec, payload type): each hears the
    /// others mixed; their packets are no longer relayed. Starting it again re-forms it.
    fn conference(&mut self, _id: u64, _members: &[(&Self::Tx, crate::media::Codec, u8)]) {}
    fn end_conference(&mut self, _id: u64) {}
    /// Called on every media tick (conference mixing, which paces itself to 20 ms frames).
    fn tick(&mut self, _now: Instant) {}
    /// RTP ports still free.
    fn free_ports(&self) -> usize {
        usize::MAX
    }
}

/// What the runtime's RTP readers report.
#[derive(Debug, Clone, Copy)]
pub enum RtpEvent {
    /// RTP arrives from this address: send there (symmetric RTP, for peers behind NAT).
    PeerAddress(Leg, SocketAddr),
    Digit(Leg, char),
    /// A browser's leg is keyed (DTLS-SRTP done): its media flows.
    Secured(Leg),
    /// Its handshake failed or did not complete in time.
    SecureFailed(Leg),
}
