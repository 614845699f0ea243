//! RTP sockets: one per call, from the configured port range (even ports, RTCP's odd port left
//! free). Sending is a plain non-blocking `send_to` from the core's media tick; each socket has
//! a small reader task that reports only what call control needs: the peer's source address
//! when it changes (symmetric RTP) and RFC 4733 digits.
//!
//! The sockets are registered with the reactor for readability only: a UDP socket becomes
//! writable again after every packet it sends, and with write interest registered each of
//! those 50 packets per second per call would wake the reactor (measured: most of the daemon's
//! CPU at 1,000 calls).

use crate::config::Config;
use crate::core::{Leg, MediaIo, RtpEvent};
use crate::media::dtmf::DtmfReceiver;
use crate::sdp::LocalWebRtc as WebRtcLocal;
use crate::stats::Stats;
use std::collections::HashSet;
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

const NO_PT: u8 = 0xFF;
/// How long a browser leg's DTLS association is kept after its handshake.
const DTLS_LINGER: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the DTLS thread looks whether associations were dropped, to trim the heap.
const DTLS_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Packets read per reactor wake-up of one socket at most.
const READ_BATCH: usize = 8;

pub struct RtpTx {
    key: Leg,
    socket: Arc<AsyncFd<UdpSocket>>,
    port: u16,
    event_pt: Arc<AtomicU8>,
    learning: Arc<Learning>,
    reader: AbortHandle,
    /// A browser leg's DTLS task (it holds the DTLS association while the leg lasts).
    dtls: std::sync::Mutex<Option<AbortHandle>>,
}

/// Which RTP sources a call accepts. Its SDP address always; otherwise the first other source
/// after each SDP change (a phone behind NAT), and then no other: a stray or hostile packet
/// can't redirect the call's media or inject digits (like Asterisk's strictrtp).
#[derive(Default)]
struct Learning {
    sdp_addr: std::sync::Mutex<Option<SocketAddr>>,
    relearn: std::sync::atomic::AtomicBool,
    /// Where this leg's peer receives: the learned source, else its SDP address.
    remote: std::sync::Mutex<Option<SocketAddr>>,
    /// While bridged: the other leg, to which every accepted packet is relayed as it is.
    forward: std::sync::Mutex<Option<Relay>>,
    /// While recorded: where its audio also goes (the caller's side always, the seat's side
    /// while relayed to the caller), its codec and payload type.
    tap: std::sync::Mutex<Option<(crate::media::recorder::Tap, crate::media::Codec)>>,
    /// Whether `tap` is set: relayed packets of calls not recorded skip its lock.
    recording: std::sync::atomic::AtomicBool,
    /// While in a conference: the mixer this leg's audio goes to, and its member key.
    mix: std::sync::Mutex<Option<(Arc<std::sync::Mutex<Mix>>, u64)>>,
    /// Whether `mix` is set: packets of calls not in a conference skip its lock.
    mixing: std::sync::atomic::AtomicBool,
    /// SRTP (RFC 3711) of this leg: inbound checked and decrypted by the reader, outbound
    /// encrypted by whoever sends to the peer (the core, the other leg's relay, the mixer).
    srtp: std::sync::Mutex<Option<Srtp>>,
    /// Whether `srtp` is set: plain calls skip its lock.
    secure: std::sync::atomic::AtomicBool,
    /// A browser's leg (WebRTC): ICE checks and DTLS are answered here, and until DTLS-SRTP
    /// has keyed `srtp` nothing is sent or taken as media.
    webrtc: std::sync::Mutex<Option<WebRtc>>,
    is_webrtc: std::sync::atomic::AtomicBool,
    /// Set once the peer's SDP is known (call control called `media_changed`): before that
    /// (a seat leg still ringing) no source is learned, so a sprayed packet can't become "the
    /// seat".
    armed: std::sync::atomic::AtomicBool,
}

/// A browser leg's ICE-lite credentials and the way to its DTLS handshake.
struct WebRtc {
    ice: crate::media::ice::IceLite,
    /// DTLS packets for the handshake task; dropped when the leg closes, which ends it.
    dtls_in: Option<mpsc::Sender<Vec<u8>>>,
    /// The browser's fingerprint, once its answer names it.
    expect: Option<tokio::sync::oneshot::Sender<String>>,
    /// Where its DTLS comes from (the handshake's flights go there).
    dtls_peer: Option<SocketAddr>,
}

/// A leg's SRTP session and the buffer its packets are encrypted into (kept across packets).
struct Srtp {
    session: crate::media::srtp::SrtpSession,
    out: Vec<u8>,
}

/// Sends `packet` to `dst` from `socket` for the leg `learning`: encrypted first when the leg
/// speaks SRTP. False when it could not be sent.
fn send_rtp(socket: &UdpSocket, learning: &Learning, packet: &[u8], dst: SocketAddr) -> bool {
    if !learning.secure.load(Ordering::Relaxed) {
        return socket.send_to(packet, dst).is_ok();
    }
    let Ok(mut guard) = learning.srtp.lock() else {
        return false;
    };
    let Some(srtp) = guard.as_mut() else {
        // A browser's leg before its keys: nothing goes out in the clear.
        return !learning.is_webrtc.load(Ordering::Relaxed) && socket.send_to(packet, dst).is_ok();
    };
    let Srtp { session, out } = srtp;
    session.protect_rtp(packet, out).is_ok() && socket.send_to(out, dst).is_ok()
}

/// The other leg of a bridge, as a reader task sees it.
#[derive(Clone)]
struct Relay {
    socket: Arc<AsyncFd<UdpSocket>>,
    learning: Arc<Learning>,
}

/// A conference and where each member's mixed audio goes.
struct Mix {
    conf: crate::media::mixer::Conference,
    outs: std::collections::HashMap<u64, Relay>,
}

pub struct RtpIo {
    bind_ip: IpAddr,
    port_min: u16,
    port_max: u16,
    next: u16,
    routes: std::collections::HashMap<IpAddr, Option<IpAddr>>,
    in_use: HashSet<u16>,
    events: mpsc::UnboundedSender<RtpEvent>,
    stats: Arc<Stats>,
    /// Started with the first recording.
    recorder: Option<(
        crate::media::recorder::Recorder,
        std::thread::JoinHandle<()>,
    )>,
    next_recording: u64,
    /// Caller port → (recording id, caller side, seat side).
    recordings: std::collections::HashMap<u16, (u64, Arc<Learning>, Arc<Learning>)>,
    conferences: std::collections::HashMap<u64, Arc<std::sync::Mutex<Mix>>>,
    /// The mixing clock: when it started and how many 20 ms frames it has mixed.
    mix_epoch: Option<std::time::Instant>,
    mixed_frames: u64,
    /// Browser legs: the DTLS certificate (made with the first), the thread the handshakes
    /// run on (started with the first), and how long one may take.
    dtls_identity: Option<crate::media::dtls_srtp::DtlsIdentity>,
    dtls_runtime: Option<tokio::runtime::Handle>,
    dtls_timeout: std::time::Duration,
}

impl RtpIo {
    pub fn new(cfg: &Config, events: mpsc::UnboundedSender<RtpEvent>, stats: Arc<Stats>) -> Self {
        let min = cfg.rtp.port_min + (cfg.rtp.port_min % 2);
        RtpIo {
            bind_ip: cfg.rtp.bind_ip,
            port_min: min,
            port_max: cfg.rtp.port_max,
            next: min,
            routes: std::collections::HashMap::new(),
            in_use: HashSet::new(),
            events,
            stats,
            recorder: None,
            next_recording: 0,
            recordings: std::collections::HashMap::new(),
            conferences: std::collections::HashMap::new(),
            mix_epoch: None,
            mixed_frames: 0,
            dtls_identity: None,
            dtls_runtime: None,
            dtls_timeout: std::time::Duration::from_millis(cfg.rtp.dtls_timeout_ms.max(100)),
        }
    }

    /// The thread DTLS handshakes run on: their public-key work (about a millisecond each)
    /// stays off the call thread, whose media clock must not wait.
    fn dtls_runtime(&mut self) -> Option<tokio::runtime::Handle> {
        if self.dtls_runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = rt.handle().clone();
            // Associations dropped since the last look: their memory goes back to the system.
            handle.spawn(async {
                let mut every = tokio::time::interval(DTLS_TRIM_EVERY);
                loop {
                    every.tick().await;
                    super::memory::trim_if_released();
                }
            });
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("dtls".into())
                .spawn(move || {
                    rt.block_on(async move {
                        let _ = stop_rx.await;
                    })
                })
                .ok()?;
            // Never sent: the thread lives as long as the process.
            std::mem::forget(stop_tx);
            self.dtls_runtime = Some(handle);
        }
        self.dtls_runtime.clone()
    }

    fn bind(&self, port: u16) -> Option<AsyncFd<UdpSocket>> {
        let sock = UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).ok()?;
        sock.set_nonblocking(true).ok()?;
        // Deprecated because a caller could close the fd while it is registered (tokio #8587);
        // here the AsyncFd owns the socket, so it can't be. The replacement is `unsafe`.
        #[allow(deprecated)]
        AsyncFd::with_interest(sock, Interest::READABLE).ok()
    }
}

impl RtpIo {
    /// One 20 ms frame of every conference.
    fn mix_once(&self) {
        for mix in self.conferences.values() {
            let Ok(mut m) = mix.lock() else { continue };
            let Mix { conf, outs } = &mut *m;
            conf.mix(|key, packet| {
                let Some(out) = outs.get(&key) else { return };
                // A recorded caller: the mix it hears is the recording's other side.
                if out.learning.recording.load(Ordering::Relaxed)
                    && let Some((tap, codec)) = out.learning.tap.lock().ok().and_then(|t| t.clone())
                    && tap.side == 0
                {
                    tap.audio_as(1, codec, packet.get(12..).unwrap_or_default());
                }
                if let Some(dst) = out.learning.remote.lock().ok().and_then(|r| *r) {
                    if send_rtp(out.socket.get_ref(), &out.learning, packet, dst) {
                        Stats::inc(&self.stats.rtp_mixed);
                    } else {
                        Stats::inc(&self.stats.rtp_send_errors);
                    }
                }
            });
        }
    }

    fn stop_recording_port(&mut self, port: u16) {
        let Some((id, a, b)) = self.recordings.remove(&port) else {
            return;
        };
        for l in [a, b] {
            l.recording.store(false, Ordering::Relaxed);
            if let Ok(mut t) = l.tap.lock() {
                *t = None;
            }
        }
        if let Some((r, _)) = &self.recorder {
            r.send(crate::media::recorder::Message::Stop { id });
        }
    }

    /// At exit: every recording still open is closed as a valid WAV before the process ends.
    pub fn finish(&mut self) {
        let ports: Vec<u16> = self.recordings.keys().copied().collect();
        for port in ports {
            self.stop_recording_port(port);
        }
        if let Some((r, handle)) = self.recorder.take() {
            r.send(crate::media::recorder::Message::Shutdown);
            let _ = handle.join();
        }
    }
}

impl MediaIo for RtpIo {
    type Tx = RtpTx;

    fn open(&mut self, key: Leg) -> Option<(RtpTx, u16)> {
        let slots = ((self.port_max - self.port_min) / 2 + 1) as usize;
        for _ in 0..slots {
            let port = self.next;
            self.next = if u32::from(self.next) + 2 > u32::from(self.port_max) {
                self.port_min
            } else {
                self.next + 2
            };
            if self.in_use.contains(&port) {
                continue;
            }
            let Some(socket) = self.bind(port) else {
                continue;
            };
            let socket = Arc::new(socket);
            let event_pt = Arc::new(AtomicU8::new(NO_PT));
            let learning = Arc::new(Learning::default());
            let reader = tokio::spawn(read_loop(
                socket.clone(),
                key,
                event_pt.clone(),
                learning.clone(),
                self.events.clone(),
                self.stats.clone(),
            ))
            .abort_handle();
            self.in_use.insert(port);
            return Some((
                RtpTx {
                    key,
                    socket,
                    port,
                    event_pt,
                    learning,
                    reader,
                    dtls: std::sync::Mutex::new(None),
                },
                port,
            ));
        }
        None
    }

    fn send(&mut self, tx: &RtpTx, packet: &[u8], to: SocketAddr) {
        if !send_rtp(tx.socket.get_ref(), &tx.learning, packet, to) {
            Stats::inc(&self.stats.rtp_send_errors);
        }
    }

    fn record(
        &mut self,
        a: &RtpTx,
        b: &RtpTx,
        codec: crate::media::Codec,
        path: std::path::PathBuf,
    ) {
        use crate::media::recorder::{Message, Recorder, Tap};
        if self.recorder.is_none() {
            match Recorder::start() {
                Ok(r) => self.recorder = Some(r),
                Err(e) => return tracing::error!(error = %e, "cannot start the recorder"),
            }
        }
        let Some(recorder) = self.recorder.as_ref().map(|r| r.0.clone()) else {
            return;
        };
        self.stop_recording(a);
        self.next_recording += 1;
        let id = self.next_recording;
        recorder.send(Message::Start { id, path });
        for (side, learning) in [(0u8, &a.learning), (1, &b.learning)] {
            if let Ok(mut t) = learning.tap.lock() {
                *t = Some((
                    Tap {
                        recorder: recorder.clone(),
                        id,
                        side,
                    },
                    codec,
                ));
            }
            learning.recording.store(true, Ordering::Relaxed);
        }
        self.recordings
            .insert(a.port, (id, a.learning.clone(), b.learning.clone()));
    }

    fn stop_recording(&mut self, a: &RtpTx) {
        self.stop_recording_port(a.port);
    }

    fn record_partner(&mut self, a: &RtpTx, b: &RtpTx, codec: crate::media::Codec) {
        let Some((id, _, partner)) = self.recordings.get_mut(&a.port) else {
            return;
        };
        let tap = partner
            .tap
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .map(|(tap, _)| tap);
        partner.recording.store(false, Ordering::Relaxed);
        let Some(tap) = tap else { return };
        if let Ok(mut t) = b.learning.tap.lock() {
            *t = Some((
                crate::media::recorder::Tap {
                    recorder: tap.recorder,
                    id: *id,
                    side: 1,
                },
                codec,
            ));
        }
        b.learning.recording.store(true, Ordering::Relaxed);
        *partner = b.learning.clone();
    }

    fn conference(&mut self, id: u64, members: &[(&RtpTx, crate::media::Codec, u8)]) {
        use rand::RngExt as _;
        self.end_conference(id);
        let mut rng = rand::rng();
        let mut mix = Mix {
            conf: Default::default(),
            outs: Default::default(),
        };
        for (tx, codec, pt) in members {
            let key = u64::from(tx.port);
            mix.conf.join(crate::media::mixer::Join {
                key,
                codec: *codec,
                payload_type: *pt,
                ssrc: rng.random(),
                seq: rng.random(),
                ts: rng.random(),
            });
            mix.outs.insert(
                key,
                Relay {
                    socket: tx.socket.clone(),
                    learning: tx.learning.clone(),
                },
            );
        }
        let mix = Arc::new(std::sync::Mutex::new(mix));
        for (tx, _, _) in members {
            if let Ok(mut f) = tx.learning.forward.lock() {
                *f = None;
            }
            if let Ok(mut m) = tx.learning.mix.lock() {
                *m = Some((mix.clone(), u64::from(tx.port)));
            }
            tx.learning.mixing.store(true, Ordering::Relaxed);
        }
        tracing::debug!(conference = id, ports = ?members.iter().map(|(t, _, _)| t.port).collect::<Vec<_>>(), "conference formed");
        self.conferences.insert(id, mix);
    }

    fn end_conference(&mut self, id: u64) {
        let Some(mix) = self.conferences.remove(&id) else {
            return;
        };
        let Ok(m) = mix.lock() else { return };
        for relay in m.outs.values() {
            relay.learning.mixing.store(false, Ordering::Relaxed);
            if let Ok(mut x) = relay.learning.mix.lock() {
                *x = None;
            }
        }
    }

    fn tick(&mut self, now: std::time::Instant) {
        if self.conferences.is_empty() {
            self.mix_epoch = None;
            self.mixed_frames = 0;
            return;
        }
        // The ticker runs several times per frame: mix once per 20 ms of wall time, catching
        // up at most a few frames after a stall (older audio is stale anyway).
        let epoch = *self.mix_epoch.get_or_insert(now);
        let due =
            now.saturating_duration_since(epoch).as_millis() as u64 / crate::media::FRAME_MS + 1;
        if due <= self.mixed_frames {
            return;
        }
        let frames = (due - self.mixed_frames).min(3);
        self.mixed_frames = due;
        for _ in 0..frames {
            self.mix_once();
        }
    }

    fn free_ports(&self) -> usize {
        ((self.port_max - self.port_min) / 2 + 1) as usize - self.in_use.len()
    }

    fn close(&mut self, tx: RtpTx) {
        self.stop_recording_port(tx.port);
        tx.learning.mixing.store(false, Ordering::Relaxed);
        let member = tx.learning.mix.lock().ok().and_then(|mut m| m.take());
        if let Some((mix, key)) = member
            && let Ok(mut m) = mix.lock()
        {
            m.conf.leave(key);
            m.outs.remove(&key);
        }
        tx.reader.abort();
        if let Some(task) = tx.dtls.lock().ok().and_then(|mut d| d.take()) {
            task.abort();
        }
        if let Ok(mut w) = tx.learning.webrtc.lock() {
            *w = None;
        }
        if let Ok(mut f) = tx.learning.forward.lock() {
            *f = None;
        }
        self.in_use.remove(&tx.port);
    }

    fn bridge(&mut self, a: &RtpTx, b: &RtpTx) {
        if let Ok(mut f) = a.learning.forward.lock() {
            *f = Some(Relay {
                socket: b.socket.clone(),
                learning: b.learning.clone(),
            });
        }
        if let Ok(mut f) = b.learning.forward.lock() {
            *f = Some(Relay {
                socket: a.socket.clone(),
                learning: a.learning.clone(),
            });
        }
    }

    fn unbridge(&mut self, a: &RtpTx) {
        if let Ok(mut f) = a.learning.forward.lock() {
            *f = None;
        }
    }

    fn set_srtp(&mut self, tx: &RtpTx, session: Option<crate::media::srtp::SrtpSession>) {
        let on = session.is_some();
        if let Ok(mut s) = tx.learning.srtp.lock() {
            *s = session.map(|session| Srtp {
                session,
                out: Vec::with_capacity(256),
            });
        }
        tx.learning.secure.store(on, Ordering::Relaxed);
    }

    fn webrtc_offer(&mut self, tx: &RtpTx) -> Option<crate::sdp::LocalWebRtc> {
        use crate::media::dtls_srtp::{self, DtlsIdentity};
        if self.dtls_identity.is_none() {
            match DtlsIdentity::generate() {
                Ok(id) => self.dtls_identity = Some(id),
                Err(e) => {
                    tracing::error!(error = %e, "no DTLS certificate: browser legs cannot be offered");
                    return None;
                }
            }
        }
        let identity = self.dtls_identity.clone()?;
        let rt = self.dtls_runtime()?;
        let ice = crate::media::ice::IceLite::generate(&mut rand::rng());
        let (dtls_in, packets) = mpsc::channel::<Vec<u8>>(32);
        let (expect_tx, expect_rx) = tokio::sync::oneshot::channel::<String>();
        let local = WebRtcLocal {
            ice_ufrag: ice.ufrag.clone(),
            ice_pwd: ice.pwd.clone(),
            fingerprint: identity.fingerprint.clone(),
        };
        if let Ok(mut w) = tx.learning.webrtc.lock() {
            *w = Some(WebRtc {
                ice,
                dtls_in: Some(dtls_in),
                expect: Some(expect_tx),
                dtls_peer: None,
            });
        }
        tx.learning.is_webrtc.store(true, Ordering::Relaxed);
        tx.learning.secure.store(true, Ordering::Relaxed);
        // The handshake's flights leave from the leg's socket towards the address the ICE
        // checks came from.
        let (socket, learning) = (tx.socket.clone(), tx.learning.clone());
        let send: dtls_srtp::SendFn = Arc::new(move |b: &[u8]| {
            let peer = learning
                .webrtc
                .lock()
                .ok()
                .and_then(|w| w.as_ref().and_then(|w| w.dtls_peer));
            let dst = peer
                .or_else(|| learning.remote.lock().ok().and_then(|r| *r))
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
            socket.get_ref().send_to(b, dst)
        });
        let local_addr = SocketAddr::new(self.bind_ip, tx.port);
        let (learning, events, stats, within) = (
            tx.learning.clone(),
            self.events.clone(),
            self.stats.clone(),
            self.dtls_timeout,
        );
        let key = tx.key;
        let task = rt.spawn(async move {
            match dtls_srtp::serve(identity, packets, send, local_addr, expect_rx, within).await {
                Ok(secured) => {
                    let suite = secured.session.suite();
                    if let Ok(mut s) = learning.srtp.lock() {
                        *s = Some(Srtp {
                            session: secured.session,
                            out: Vec::with_capacity(256),
                        });
                    }
                    Stats::inc(&stats.webrtc_dtls_ok);
                    tracing::info!(?key, suite = suite.name(), "browser leg keyed (DTLS-SRTP)");
                    let _ = events.send(RtpEvent::Secured(key));
                    // The association is kept a while to answer a browser that did not get
                    // our last flight and sends its own again; then it goes (dropping it sends
                    // nothing: the keys stay in use) with its buffers, some 40 KiB a leg.
                    tokio::time::sleep(DTLS_LINGER).await;
                    drop(secured.conn);
                    super::memory::released();
                    if let Ok(mut w) = learning.webrtc.lock()
                        && let Some(w) = w.as_mut()
                    {
                        w.dtls_in = None;
                    }
                }
                Err(e) => {
                    Stats::inc(&stats.webrtc_dtls_failed);
                    tracing::warn!(?key, error = %e, "browser leg not keyed: DTLS-SRTP failed");
                    let _ = events.send(RtpEvent::SecureFailed(key));
                }
            }
        });
        if let Ok(mut d) = tx.dtls.lock() {
            *d = Some(task.abort_handle());
        }
        Some(local)
    }

    fn webrtc_answer(&mut self, tx: &RtpTx, fingerprint: &str) {
        let expect = tx
            .learning
            .webrtc
            .lock()
            .ok()
            .and_then(|mut w| w.as_mut().and_then(|w| w.expect.take()));
        if let Some(e) = expect {
            let _ = e.send(fingerprint.to_string());
        }
    }

    fn set_event_pt(&mut self, tx: &RtpTx, pt: Option<u8>) {
        tx.event_pt.store(pt.unwrap_or(NO_PT), Ordering::Relaxed);
    }

    fn media_changed(&mut self, tx: &RtpTx, sdp_addr: Option<SocketAddr>) {
        if let Ok(mut a) = tx.learning.sdp_addr.lock() {
            *a = sdp_addr;
        }
        if let Ok(mut r) = tx.learning.remote.lock() {
            *r = sdp_addr;
        }
        tx.learning.relearn.store(true, Ordering::Relaxed);
        tx.learning.armed.store(true, Ordering::Relaxed);
    }

    fn local_ip_for(&mut self, peer: IpAddr) -> Option<IpAddr> {
        // The kernel's route lookup: a connected UDP socket's local address. No packet is sent.
        *self.routes.entry(peer).or_insert_with(|| {
            let any: SocketAddr = if peer.is_ipv4() {
                "0.0.0.0:0".parse().ok()?
            } else {
                "[::]:0".parse().ok()?
            };
            let s = UdpSocket::bind(any).ok()?;
            s.connect(SocketAddr::new(peer, 9)).ok()?;
            s.local_addr().ok().map(|a| a.ip())
        })
    }
}

async fn read_loop(
    socket: Arc<AsyncFd<UdpSocket>>,
    key: Leg,
    event_pt: Arc<AtomicU8>,
    learning: Arc<Learning>,
    events: mpsc::UnboundedSender<RtpEvent>,
    stats: Arc<Stats>,
) {
    let mut buf = [0u8; 2048];
    let mut plain: Vec<u8> = Vec::with_capacity(2048);
    let mut last_src: Option<SocketAddr> = None;
    let mut dtmf = DtmfReceiver::default();
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return;
        };
        // Drain what is queued (bounded, so one busy socket can't starve the others): under
        // load that is several packets per reactor wake-up instead of one.
        for _ in 0..READ_BATCH {
            let (n, src) = match ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {
                Ok(Ok(x)) => x,
                Ok(Err(_)) => continue,
                Err(_would_block) => break,
            };
            let mut packet = &buf[..n];
            if learning.is_webrtc.load(Ordering::Relaxed) {
                match webrtc_demux(
                    socket.get_ref(),
                    &learning,
                    packet,
                    src,
                    key,
                    &events,
                    &stats,
                ) {
                    Demux::Consumed => continue,
                    Demux::Gone => return,
                    Demux::Media => {}
                }
            }
            if learning.secure.load(Ordering::Relaxed) {
                match unprotect(&learning, packet, &mut plain, &stats) {
                    true => packet = &plain,
                    false => continue,
                }
            }
            if !on_packet(
                packet,
                src,
                key,
                &event_pt,
                &learning,
                &events,
                &stats,
                &mut last_src,
                &mut dtmf,
            ) {
                return;
            }
        }
    }
}

/// What a browser leg's packet is (RFC 7983 §7: by its first byte).
enum Demux {
    /// STUN, DTLS or RTCP: dealt with here.
    Consumed,
    /// SRTP: on to decryption.
    Media,
    /// Call control is gone.
    Gone,
}

/// A browser leg's packet: an ICE check is answered (and its source becomes where the leg's
/// media goes), DTLS goes to the handshake, RTCP is not read (rtcp-mux), media goes on.
fn webrtc_demux(
    socket: &UdpSocket,
    learning: &Learning,
    packet: &[u8],
    src: SocketAddr,
    key: Leg,
    events: &mpsc::UnboundedSender<RtpEvent>,
    stats: &Stats,
) -> Demux {
    use crate::media::{dtls_srtp, ice};
    if ice::is_stun(packet) {
        let checked = learning
            .webrtc
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.ice.check(packet, src)));
        match checked {
            Some(Ok(c)) => {
                Stats::inc(&stats.webrtc_ice_checks);
                let _ = socket.send_to(&c.response, src);
                // The browser checks every pair it has; media follows the pair it nominates
                // (USE-CANDIDATE), and until then the first that checked.
                let changed = learning
                    .remote
                    .lock()
                    .map(|mut r| {
                        let take = c.nominated || r.is_none();
                        take && r.replace(src) != Some(src)
                    })
                    .unwrap_or(false);
                if changed {
                    if let Ok(mut a) = learning.sdp_addr.lock() {
                        *a = Some(src);
                    }
                    learning.relearn.store(true, Ordering::Relaxed);
                    learning.armed.store(true, Ordering::Relaxed);
                    tracing::debug!(?key, %src, nominated = c.nominated, "ICE: the browser's address");
                    if events.send(RtpEvent::PeerAddress(key, src)).is_err() {
                        return Demux::Gone;
                    }
                }
            }
            Some(Err(e)) => {
                Stats::inc(&stats.webrtc_ice_refused);
                tracing::debug!(?key, %src, error = %e, "ICE check refused");
            }
            None => {}
        }
        return Demux::Consumed;
    }
    if dtls_srtp::is_dtls(packet) {
        if let Ok(mut w) = learning.webrtc.lock()
            && let Some(w) = w.as_mut()
        {
            // The handshake answers where the browser's DTLS comes from.
            w.dtls_peer = Some(src);
            if let Some(tx) = w.dtls_in.as_ref() {
                let _ = tx.try_send(packet.to_vec());
            }
        }
        return Demux::Consumed;
    }
    // RTCP multiplexed on the RTP port (RFC 5761 §4: packet types 192–223).
    if packet.get(1).is_some_and(|b| (192..=223).contains(b)) {
        Stats::inc(&stats.rtcp_ignored);
        return Demux::Consumed;
    }
    Demux::Media
}

/// Checks and decrypts an SRTP packet into `plain`; false (counted) when it is to be dropped:
/// a wrong tag (tampered, or not keyed by the peer's key), a replay, or not SRTP at all.
fn unprotect(learning: &Learning, packet: &[u8], plain: &mut Vec<u8>, stats: &Stats) -> bool {
    use crate::media::srtp::SrtpError;
    let Ok(mut guard) = learning.srtp.lock() else {
        return false;
    };
    let Some(srtp) = guard.as_mut() else {
        if learning.is_webrtc.load(Ordering::Relaxed) {
            return false;
        }
        plain.clear();
        plain.extend_from_slice(packet);
        return true;
    };
    match srtp.session.unprotect_rtp(packet, plain) {
        Ok(()) => true,
        Err(SrtpError::Replayed) => {
            Stats::inc(&stats.srtp_replays);
            false
        }
        Err(SrtpError::AuthFailed) => {
            Stats::inc(&stats.srtp_auth_failures);
            false
        }
        Err(_) => {
            Stats::inc(&stats.rtp_malformed);
            false
        }
    }
}

/// One received packet: source check, relay, DTMF. False when call control is gone.
#[allow(clippy::too_many_arguments)]
fn on_packet(
    packet: &[u8],
    src: SocketAddr,
    key: Leg,
    event_pt: &AtomicU8,
    learning: &Learning,
    events: &mpsc::UnboundedSender<RtpEvent>,
    stats: &Stats,
    last_src: &mut Option<SocketAddr>,
    dtmf: &mut DtmfReceiver,
) -> bool {
    let Ok(rtp) = rtp_rs::RtpReader::new(packet) else {
        Stats::inc(&stats.rtp_malformed);
        return true;
    };
    Stats::inc(&stats.rtp_received);
    if !learning.armed.load(Ordering::Relaxed) {
        Stats::inc(&stats.rtp_foreign);
        return true;
    }
    if *last_src != Some(src) {
        let from_sdp = learning
            .sdp_addr
            .lock()
            .map(|a| *a == Some(src))
            .unwrap_or(false);
        let learn = last_src.is_none() || learning.relearn.swap(false, Ordering::Relaxed);
        if !from_sdp && !learn {
            Stats::inc(&stats.rtp_foreign);
            return true;
        }
        *last_src = Some(src);
        if let Ok(mut r) = learning.remote.lock() {
            *r = Some(src);
        }
        if events.send(RtpEvent::PeerAddress(key, src)).is_err() {
            return false;
        }
    } else {
        learning.relearn.store(false, Ordering::Relaxed);
    }
    // In a conference: the audio goes to the mixer instead of the other leg.
    if learning.mixing.load(Ordering::Relaxed) {
        let mix = learning.mix.lock().ok().and_then(|m| m.clone());
        if let Some((mix, member)) = mix
            && let Ok(mut m) = mix.lock()
        {
            m.conf.push(member, rtp.payload_type(), rtp.payload());
        }
    }
    // Bridged: relay the packet to the other leg's peer, unchanged.
    let relay = learning.forward.lock().ok().and_then(|f| f.clone());
    let relayed = relay.is_some();
    if let Some(relay) = relay
        && let Some(dst) = relay.learning.remote.lock().ok().and_then(|r| *r)
        && send_rtp(relay.socket.get_ref(), &relay.learning, packet, dst)
    {
        Stats::inc(&stats.rtp_relayed);
    }
    // Recorded: the caller whatever it is connected to (a transfer's hold or conference
    // included); the seat side only while it is what the caller hears.
    if learning.recording.load(Ordering::Relaxed)
        && let Some((tap, codec)) = learning.tap.lock().ok().and_then(|t| t.clone())
        && (relayed || tap.side == 0)
        && rtp.payload_type() == codec.static_pt()
    {
        tap.audio(codec, rtp.payload());
    }
    let pt = event_pt.load(Ordering::Relaxed);
    if pt != NO_PT
        && rtp.payload_type() == pt
        && let Some(d) = dtmf.on_packet(rtp.timestamp(), rtp.payload())
        && events.send(RtpEvent::Digit(key, d)).is_err()
    {
        return false;
    }
    true
}
