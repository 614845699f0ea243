//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz with libFuzzer on nightly), kept in
//! the library so the normal test suite replays the stored corpus through exactly the same
//! code on stable (`tests/fuzz_corpus.rs`). Each takes any bytes and must never panic; what
//! it parses it also uses (responds to, answers, validates), so the fuzzer reaches past the
//! parsers.

use crate::config::Config;
use crate::core::{Core, Leg, MediaIo};
use crate::media::prompts::PromptStore;
use crate::sip::{Peer, Transport, framing, glance, message};
use crate::time::Now;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn src() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5070))
}

/// A SIP message: the parser, the header checks, responses built from it, the text-only
/// paths (fallback answers, the overload glance and its 503) and TCP framing.
pub fn sip_message(data: &[u8]) {
    match message::parse(data) {
        Ok(rsipstack::sip::SipMessage::Request(req)) => {
            if message::request_info(&req).is_ok() {
                let spec = message::ResponseSpec {
                    to_tag: Some("t"),
                    ..message::ResponseSpec::new(486, "Busy Here")
                };
                let _ = message::response(&req, src(), "fuzz", &spec);
            }
            for name in ["Contact", "From", "To", "Refer-To", "Require"] {
                if let Some(v) = message::header(&req, name) {
                    let _ = message::addr_spec(v);
                    let _ = message::tag_of(v);
                    let _ = message::user_of(v);
                }
            }
        }
        Ok(rsipstack::sip::SipMessage::Response(resp)) => {
            let _ = message::response_info(&resp);
        }
        Err(_) => {}
    }
    let _ = message::fallback_response(data, src(), "fuzz", "bad");
    let _ = glance::glance(data);
    let _ = glance::refusal(data, src(), "fuzz", 10, "fuzz");
    let _ = framing::next_message(data);
    let _ = framing::keepalive_len(data);
}

/// An SDP body: parsed, then answered (and a codec-kept offer built) when it parses.
pub fn sdp(data: &[u8]) {
    if let Ok(m) = crate::sdp::parse(data) {
        let local = crate::sdp::LocalMedia::plain(std::net::IpAddr::from([127, 0, 0, 1]), 4000, 1);
        let _ = crate::sdp::answer(&local, &m);
        let (codec, pt) = m.primary();
        let _ = crate::sdp::offer_codec(&local, codec, pt);
    }
}

/// An RTP packet: the header reader, and its payload as an RFC 4733 event.
pub fn rtp(data: &[u8]) {
    if let Ok(r) = rtp_rs::RtpReader::new(data) {
        let mut dtmf = crate::media::dtmf::DtmfReceiver::default();
        let _ = dtmf.on_packet(r.timestamp(), r.payload());
        let _ = r.sequence_number();
        let _ = r.payload_type();
    }
}

/// A run of RFC 4733 event payloads (a 4-byte timestamp, then the payload, repeatedly): the
/// receiver keeps state across packets.
pub fn rfc4733(data: &[u8]) {
    let mut dtmf = crate::media::dtmf::DtmfReceiver::default();
    for chunk in data.chunks(8) {
        let (ts, payload) = chunk.split_at(chunk.len().min(4));
        let mut t = [0u8; 4];
        t[..ts.len()].copy_from_slice(ts);
        let _ = dtmf.on_packet(u32::from_be_bytes(t), payload);
    }
}

/// Digest: credentials as a phone sends them (checked against our nonces), and a challenge
/// as a trunk sends it (answered).
pub fn digest(data: &[u8]) {
    use crate::sip::digest::{Algorithm, Credentials, Nonces, authorization};
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = Credentials::parse(&text) {
        let mut n = Nonces::new(
            "hotline",
            300,
            [7; 32],
            vec![Algorithm::Md5, Algorithm::Sha256],
        );
        let _ = n.nonce_is_ours_and_fresh(1000, &c);
        let _ = n.verify(1000, "REGISTER", &c, "0123456789abcdef0123456789abcdef");
    }
    for code in [401, 407] {
        let _ = authorization(code, &text, ("u", "p"), "INVITE", "sip:12366@gw", "c");
    }
}

/// A configuration file (TOML), typed and validated as at start-up.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml(text, Path::new("/nonexistent/config"));
    }
}

/// The shipped prompts and queues, loaded once (dialplans refer to them).
fn shipped() -> &'static (Arc<PromptStore>, Config) {
    static SHIPPED: OnceLock<(Arc<PromptStore>, Config)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cfg = Config::load(&root.join("config/hotline.toml")).expect("shipped config");
        let (prompts, _) = PromptStore::load_dir(&cfg.paths.prompts).expect("shipped prompts");
        (Arc::new(prompts), cfg)
    })
}

/// A dialplan file, typed and validated against the shipped prompts and queues.
pub fn dialplan(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let (prompts, cfg) = shipped();
        let files = [(PathBuf::from("fuzz.toml"), text.to_string())];
        let _ = crate::ivr::dialplan::load_from(Path::new("fuzz"), &files, prompts, cfg);
    }
}

/// RTP that goes nowhere, for [`core`].
struct NoMedia(u16);

impl MediaIo for NoMedia {
    type Tx = u16;
    fn open(&mut self, _leg: Leg) -> Option<(u16, u16)> {
        self.0 = self.0.wrapping_add(2);
        Some((self.0, 40000 + self.0 % 1000))
    }
    fn send(&mut self, _tx: &u16, _packet: &[u8], _to: SocketAddr) {}
    fn close(&mut self, _tx: u16) {}
    fn set_event_pt(&mut self, _tx: &u16, _pt: Option<u8>) {}
    fn media_changed(&mut self, _tx: &u16, _sdp_addr: Option<SocketAddr>) {}
    fn local_ip_for(&mut self, _peer: std::net::IpAddr) -> Option<std::net::IpAddr> {
        None
    }
    fn bridge(&mut self, _a: &u16, _b: &u16) {}
    fn unbridge(&mut self, _a: &u16) {}
}

/// Datagrams into call control itself (the shipped configuration): everything the router,
/// the sessions and the legs do with them. The input is split into datagrams at NUL bytes;
/// time moves on 100 ms between them, so timers fire too. One core for the whole run, as a
/// daemon sees one stream of datagrams.
pub fn core(data: &[u8]) {
    thread_local! {
        static CORE: std::cell::RefCell<Option<(Core<NoMedia>, Now)>> = const { std::cell::RefCell::new(None) };
    }
    CORE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (core, now) = cell.get_or_insert_with(|| {
            let (prompts, cfg) = shipped();
            let mut cfg = cfg.clone();
            cfg.sip.listen = "127.0.0.1:5060".parse().expect("address");
            cfg.registrar.qualify_s = 0;
            let plan = crate::ivr::dialplan::load(&cfg.paths.dialplans, prompts, &cfg)
                .expect("shipped dialplans");
            let now = Now::at(
                chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00+08:00")
                    .expect("RFC 3339"),
            );
            let mut core = Core::new(
                now,
                Arc::new(cfg),
                Arc::new(plan),
                prompts.clone(),
                Arc::new(crate::stats::Stats::default()),
                NoMedia(0),
                crate::entropy::Entropy::seeded(1),
            );
            core.start(now);
            (core, now)
        });
        let peer = Peer {
            transport: Transport::Udp,
            addr: src(),
        };
        for datagram in data.split(|&b| b == 0) {
            *now += Duration::from_millis(100);
            core.handle_datagram(*now, datagram, peer);
            core.handle_timeout(*now);
            core.tick_media(*now);
            while core.poll_transmit().is_some() {}
            while core.poll_record().is_some() {}
        }
    });
}

/// The fuzz targets by name, for the corpus replay.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("sip_message", sip_message),
    ("sdp", sdp),
    ("rtp", rtp),
    ("rfc4733", rfc4733),
    ("digest", digest),
    ("config", config),
    ("dialplan", dialplan),
    ("core", core),
];
