//! The simulated network of the sans-IO tests: call control with no sockets and no sleeping.
//! SIP goes in as text with a virtual [`Now`], what the daemon sends comes out, RTP is a fake
//! that counts ports, packets and bridges, and randomness is seeded. When a test's core is
//! dropped, the leak check runs: every call is hung up, the peers stay silent, the clock runs
//! on past every transaction's timeout, and then every leg, session, transfer, offer, stream,
//! conference, transaction, route and timer must be gone.
#![allow(dead_code)]

use hotline::config::Config;
use hotline::core::{Core, Leg, MediaIo};
use hotline::entropy::Entropy;
use hotline::ivr::dialplan;
use hotline::media::prompts::PromptStore;
use hotline::sip::{Peer, Transport};
use hotline::stats::Stats;
use hotline::time::Now;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// RTP that counts instead of sending: ports open, packets sent, endpoints bridged,
/// conferences up. Transmit handles are 2, 4, 6, … in the order ports were opened.
#[derive(Default)]
pub struct Media {
    next: u16,
    pub open: usize,
    pub sent: usize,
    pub bridged: HashSet<u16>,
    pub conferences: HashSet<u64>,
}

impl MediaIo for Media {
    type Tx = u16;
    fn open(&mut self, _leg: Leg) -> Option<(u16, u16)> {
        self.next += 2;
        self.open += 1;
        Some((self.next, 40000 + self.next))
    }
    fn send(&mut self, _tx: &u16, _packet: &[u8], _to: SocketAddr) {
        self.sent += 1;
    }
    fn close(&mut self, tx: u16) {
        self.open -= 1;
        self.bridged.remove(&tx);
    }
    fn set_event_pt(&mut self, _tx: &u16, _pt: Option<u8>) {}
    fn media_changed(&mut self, _tx: &u16, _sdp_addr: Option<SocketAddr>) {}
    fn local_ip_for(&mut self, _peer: std::net::IpAddr) -> Option<std::net::IpAddr> {
        None
    }
    fn bridge(&mut self, a: &u16, b: &u16) {
        self.bridged.insert(*a);
        self.bridged.insert(*b);
    }
    fn unbridge(&mut self, a: &u16) {
        self.bridged.remove(a);
    }
    fn conference(&mut self, id: u64, _members: &[(&u16, hotline::media::Codec, u8)]) {
        self.conferences.insert(id);
    }
    fn end_conference(&mut self, id: u64) {
        self.conferences.remove(&id);
    }
}

/// Call control on the simulated network; derefs to the [`Core`]. Dropping it runs the leak
/// check (unless the test already failed).
pub struct SimCore {
    core: Core<Media>,
}

impl std::ops::Deref for SimCore {
    type Target = Core<Media>;
    fn deref(&self) -> &Core<Media> {
        &self.core
    }
}

impl std::ops::DerefMut for SimCore {
    fn deref_mut(&mut self) -> &mut Core<Media> {
        &mut self.core
    }
}

/// The wall time every scenario starts at (a Thursday morning, Asia/Shanghai).
pub fn t0() -> Now {
    Now::at(chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00+08:00").expect("RFC 3339"))
}

/// The shipped configuration with `f` applied, SIP on 127.0.0.1:5060; `start`: the periodic
/// work (housekeeping, keep-alives, probes) runs.
pub fn core_with(start: bool, f: impl FnOnce(&mut Config)) -> SimCore {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = Config::load(&root.join("config/hotline.toml")).expect("shipped config");
    cfg.sip.listen = "127.0.0.1:5060".parse().expect("address");
    f(&mut cfg);
    let (prompts, _) = PromptStore::load_dir(&cfg.paths.prompts).expect("prompts");
    let plan = dialplan::load(&cfg.paths.dialplans, &prompts, &cfg).expect("dialplans");
    // As `hotline run` does: targets without a unit take the profile's list's.
    plan.fill_target_units(&mut cfg.targets);
    let mut core = Core::new(
        t0(),
        Arc::new(cfg),
        Arc::new(plan),
        Arc::new(prompts),
        Arc::new(Stats::default()),
        Media::default(),
        Entropy::seeded(12345),
    );
    if start {
        core.start(t0());
    }
    SimCore { core }
}

impl Drop for SimCore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        leak_check(&mut self.core);
    }
}

/// Hangs up everything, lets the silent peers time out, and asserts nothing is left.
pub fn leak_check(c: &mut Core<Media>) {
    // Past any scenario's own time: every timer it set is due.
    let mut now = t0() + Duration::from_secs(3600);
    c.begin_shutdown();
    c.hangup_all(now);
    let end = now + Duration::from_secs(40);
    while now < end {
        now += Duration::from_millis(250);
        c.tick_media(now);
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {}
        while c.poll_record().is_some() {}
    }
    let held = c.held();
    assert!(
        held.is_empty(),
        "leak check: still held after the calls: {held:?}"
    );
    let media = c.media_io();
    assert_eq!(media.open, 0, "leak check: RTP ports still open");
    assert!(
        media.conferences.is_empty(),
        "leak check: conferences still up"
    );
}

pub fn udp(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().expect("address"),
    }
}

/// Everything sent since the last call, as text.
pub fn sent(c: &mut Core<Media>) -> Vec<String> {
    let mut v = vec![];
    while let Some(t) = c.poll_transmit() {
        v.push(String::from_utf8_lossy(&t.bytes).to_string());
    }
    v
}

/// The line of `msg` starting with `name` (e.g. `"Via:"`).
pub fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}
