//! Test harness: starts the real daemon on loopback ports, runs real SIPp scenarios against it,
//! and records the RTP the caller receives in a small sink, so tests check the audio heard and
//! not only the signalling.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free loopback port for both UDP and TCP.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A base for SIPp's `-mp`: SIPp binds its audio port and the video port two above it (and
/// their RTCP ports), so all four must be free, not only the first.
pub fn free_media_port() -> u16 {
    loop {
        let base = free_port();
        if base % 2 != 0 || base > 65000 {
            continue;
        }
        if (0..4).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// The API token every test daemon accepts (`http.tokens.tests`).
pub const API_TOKEN: &str = "tests-token-0123456789";

pub struct Daemon {
    pub child: Child,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    /// This daemon's own SQLite store.
    pub store: PathBuf,
}

/// The shipped configuration's text with its relative paths (prompts, dialplans, scoring
/// rules) made absolute, so it can be written anywhere.
fn shipped_config() -> String {
    let r = repo();
    std::fs::read_to_string(r.join("config/hotline.toml"))
        .unwrap()
        .replace(
            "prompts = \"../prompts\"",
            &format!("prompts = \"{}/prompts\"", r.display()),
        )
        .replace(
            "dialplans = \"../dialplans\"",
            &format!("dialplans = \"{}/dialplans\"", r.display()),
        )
        .replace(
            "rules = \"scoring.toml\"",
            &format!("rules = \"{}/config/scoring.toml\"", r.display()),
        )
}

impl Daemon {
    /// Starts `hotline run` on the shipped configuration with loopback ports and `env` on top.
    /// A daemon that exits at once because a port it was given got taken meanwhile by another
    /// test is started again on fresh ports.
    pub fn start(env: &[(&str, &str)]) -> Daemon {
        Daemon::start_config(&repo().join("config/hotline.toml"), env)
    }

    /// The shipped configuration with its trunks, targets and probes replaced by `targets`
    /// (TOML): arrays of tables can't be overridden from the environment.
    pub fn start_with_targets(targets: &str, env: &[(&str, &str)]) -> Daemon {
        let shipped = shipped_config();
        let head = shipped.split("\n# Trunks").next().unwrap();
        Daemon::start_text(&format!("{head}\n{targets}\n"), env)
    }

    /// The whole shipped configuration, paths made absolute, changed by `edit` (for what the
    /// environment can't override, such as a field of one seat).
    #[allow(dead_code)]
    pub fn start_edited(edit: impl Fn(String) -> String, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_text(&edit(shipped_config()), env)
    }

    /// A configuration written to a file of its own, then started.
    fn start_text(text: &str, env: &[(&str, &str)]) -> Daemon {
        let path = temp_dir(&format!("config-{}", free_port())).join("hotline.toml");
        std::fs::write(&path, text).unwrap();
        Daemon::start_config(&path, env)
    }

    fn start_config(config: &Path, env: &[(&str, &str)]) -> Daemon {
        for _ in 0..3 {
            match Daemon::try_start(config, env) {
                Ok(d) => return d,
                Err(log) if log.contains("in use") => continue,
                Err(log) => panic!("daemon did not come up; log:\n{log}"),
            }
        }
        panic!("daemon did not come up: its ports were taken three times");
    }

    fn try_start(config: &Path, env: &[(&str, &str)]) -> Result<Daemon, String> {
        let sip_port = free_port();
        let http_port = free_port();
        // A port range of its own per daemon: tests run in parallel.
        let base = 30000 + (sip_port as u32 * 7 % 25000) as u16 / 2 * 2;
        let log = std::env::temp_dir().join(format!("hotline-test-{sip_port}.log"));
        let store = std::env::temp_dir().join(format!("hotline-test-{sip_port}.sqlite"));
        // Files of an earlier daemon on the same port (an earlier test or run) must not leak
        // into this one: the store and the queue_log, which is appended to.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
        }
        let _ = std::fs::remove_file(store.with_extension("queue_log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotline"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("HOTLINE__SIP__LISTEN", format!("127.0.0.1:{sip_port}"))
            .env("HOTLINE__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("HOTLINE__RTP__PORT_MIN", base.to_string())
            .env("HOTLINE__RTP__PORT_MAX", (base + 4000).to_string())
            .env("HOTLINE__RTP__BIND_IP", "127.0.0.1")
            .env("HOTLINE__LOG__LEVEL", "debug")
            // Lag-based shedding measures this machine, which parallel tests keep busy: off
            // unless a test turns it on (tests/overload.rs does).
            .env("HOTLINE__OVERLOAD__MAX_LAG_MS", "0")
            .env("HOTLINE__STORE__PATH", &store)
            .env("HOTLINE__HTTP__TOKENS__TESTS", API_TOKEN)
            .env("HOTLINE__REPORTS__FOLDER", store.with_extension("reports"))
            .env(
                "HOTLINE__STORE__QUEUE_LOG",
                store.with_extension("queue_log"),
            )
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start hotline");
        let sip = env
            .iter()
            .find(|(k, _)| *k == "HOTLINE__SIP__LISTEN")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| format!("127.0.0.1:{sip_port}").parse().unwrap());
        let d = Daemon {
            child,
            sip,
            http: format!("127.0.0.1:{http_port}").parse().unwrap(),
            log,
            store,
        };
        let mut d = d;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if d.http_get("/healthz").is_some() {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("exited with {status}\n{}", d.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(d.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the HTTP port; the body, or None if it is not answering.
    pub fn http_get(&self, path: &str) -> Option<String> {
        self.http_get_with(path, Some(API_TOKEN))
    }

    /// GET with the given bearer token (or none); the body.
    pub fn http_get_with(&self, path: &str, token: Option<&str>) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.http, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    /// A number from `/healthz`.
    pub fn health(&self, field: &str) -> u64 {
        let body = self.http_get("/healthz").expect("healthz");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} missing in {body}"))
    }

    /// A counter from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let body = self.http_get("/metrics").expect("metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    /// Waits until no call is active (the daemon released everything).
    pub fn wait_idle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.health("calls_active") == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "calls still active after {within:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Daemon {
    /// SIGKILL, as a crash would: nothing gets a chance to flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// (kind, call_id, seat, queue, detail) of every stored event, oldest first.
    pub fn stored_events(
        &self,
    ) -> Vec<(
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        serde_json::Value,
    )> {
        let conn = rusqlite::Connection::open(&self.store).expect("open store");
        let mut stmt = conn
            .prepare("SELECT kind, call_id, seat, queue, detail FROM events ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            let detail: String = r.get(4)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                serde_json::from_str(&detail).unwrap_or_default(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs SIPp with a scenario from `sipp-scenarios/` against the daemon, bounded in time.
pub fn sipp(d: &Daemon, scenario: &str, service: &str, extra: &[&str]) -> Output {
    let local_port = free_port();
    let scen = repo().join("sipp-scenarios").join(scenario);
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg("sipp")
        .arg(d.sip.to_string())
        .arg("-sf")
        .arg(&scen)
        .arg("-s")
        .arg(service)
        .arg("-i")
        .arg(if d.sip.is_ipv6() { "::1" } else { "127.0.0.1" })
        .arg("-p")
        .arg(local_port.to_string())
        .arg("-m")
        .arg("1")
        .arg("-nostdin")
        .arg("-timeout")
        .arg("50")
        .arg("-timeout_error")
        .arg("-max_recv_loops")
        .arg("1000")
        .args(extra)
        .current_dir(std::env::temp_dir());
    cmd.output().expect("run sipp (apt-get install sip-tester)")
}

pub fn assert_sipp_ok(out: &Output, d: &Daemon) {
    assert!(
        out.status.success(),
        "sipp failed ({:?})\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&d.log_text(), 60)
    );
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub at: Instant,
    pub from: SocketAddr,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// A UDP socket that plays the caller's RTP endpoint: records every packet and can send
/// RFC 4733 DTMF back to where the daemon's RTP comes from.
pub struct RtpSink {
    socket: UdpSocket,
    pub port: u16,
    packets: Arc<Mutex<Vec<Packet>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RtpSink {
    pub fn new() -> RtpSink {
        Self::bind("127.0.0.1:0")
    }

    pub fn bind(addr: &str) -> RtpSink {
        let socket = UdpSocket::bind(addr).expect("bind sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, p, st) = (socket.try_clone().unwrap(), packets.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(r) = rtp_rs::RtpReader::new(&buf[..n]) else {
                    continue;
                };
                p.lock().unwrap().push(Packet {
                    at: Instant::now(),
                    from,
                    pt: r.payload_type(),
                    seq: r.sequence_number().into(),
                    ts: r.timestamp(),
                    ssrc: r.ssrc(),
                    marker: r.mark(),
                    payload: r.payload().to_vec(),
                });
            }
        });
        RtpSink {
            socket,
            port,
            packets,
            stop,
            thread: Some(thread),
        }
    }

    pub fn packets(&self) -> Vec<Packet> {
        self.packets.lock().unwrap().clone()
    }

    /// Waits for the first packet; returns where the daemon sends from.
    pub fn wait_first(&self, within: Duration) -> SocketAddr {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(p) = self.packets.lock().unwrap().first() {
                return p.from;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no RTP arrived within {within:?}");
    }

    /// Sends one key press as RFC 4733 packets (payload type 101): three updates, then the end
    /// packet three times, all with the press's start timestamp, like a phone does.
    pub fn send_dtmf(&self, to: SocketAddr, digit: char, seq0: u16, ts: u32) {
        let event = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => panic!("digit"),
        };
        let mut seq = seq0;
        for i in 0..6u16 {
            let end = i >= 3;
            let duration: u16 = 160 * (i.min(3) + 1);
            let d = duration.to_be_bytes();
            let payload = [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]];
            let mut buf = [0u8; 64];
            let n = rtp_rs::RtpPacketBuilder::new()
                .payload_type(101)
                .ssrc(0x1234_5678)
                .sequence(seq.into())
                .timestamp(ts)
                .marked(i == 0)
                .payload(&payload)
                .build_into(&mut buf)
                .unwrap();
            self.socket.send_to(&buf[..n], to).unwrap();
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a few PCMU packets so the daemon learns our address (symmetric RTP).
    pub fn send_audio(&self, to: SocketAddr, count: u16) {
        for i in 0..count {
            let mut buf = [0u8; 200];
            let n = rtp_rs::RtpPacketBuilder::new()
                .payload_type(0)
                .ssrc(0x0bad_cafe)
                .sequence(i.into())
                .timestamp(160 * i as u32)
                .payload(&[0xFFu8; 160])
                .build_into(&mut buf)
                .unwrap();
            self.socket.send_to(&buf[..n], to).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Samples of a prompt as shipped (8 kHz 16-bit mono).
pub fn prompt_pcm(name: &str) -> Vec<i16> {
    let path = repo().join("prompts").join(format!("{name}.wav"));
    let mut r = hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// Length of a prompt as the daemon plays it: whole 20 ms frames.
pub fn prompt_frames(name: &str) -> usize {
    prompt_pcm(name).len().div_ceil(160)
}

/// μ-law payloads → PCM, in arrival order.
pub fn decode_pcmu(packets: &[Packet]) -> Vec<i16> {
    packets
        .iter()
        .filter(|p| p.pt == 0)
        .flat_map(|p| p.payload.iter().map(|&b| ulaw(b)))
        .collect()
}

fn ulaw(byte: u8) -> i16 {
    let b = !byte as i32;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0F;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Normalised cross-correlation of `a` and `b` over their common length.
pub fn correlation(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let (x, y) = (a[i] as f64, b[i] as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Where `prompt` starts in `heard` (at a 20 ms frame boundary, as the daemon plays prompts)
/// and how well it matches; the best offset at or after `from`.
pub fn find_prompt(heard: &[i16], prompt: &[i16], from: usize) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    let mut off = from / 160 * 160;
    while off + prompt.len().min(8000) <= heard.len() {
        let c = correlation(&heard[off..], prompt);
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((off, c));
        }
        off += 160;
    }
    best
}

/// Asserts `prompt` is heard starting at sample `at` (±1 frame), with correlation ≥ 0.95
/// over its first 1.5 s (a prompt may be cut short by a key press after that).
pub fn assert_heard_at(heard: &[i16], name: &str, at: usize) {
    let mut pcm = prompt_pcm(name);
    pcm.truncate(12_000);
    let mut best = (0usize, -1.0f64);
    for delta in [0i64, -160, 160] {
        let off = at as i64 + delta;
        if off < 0 || off as usize >= heard.len() {
            continue;
        }
        let c = correlation(&heard[off as usize..], &pcm);
        if c > best.1 {
            best = (off as usize, c);
        }
    }
    assert!(
        best.1 >= 0.95,
        "prompt {name} not heard at sample {at} (best correlation {:.3} at {})",
        best.1,
        best.0
    );
}

/// RTP stream checks: one SSRC, consecutive sequence numbers, timestamps advancing 160 per
/// packet, and no gap between arrivals above `max_gap`. Returns the largest gap seen.
pub fn check_stream(packets: &[Packet], max_gap: Duration) -> Duration {
    assert!(packets.len() > 10, "only {} RTP packets", packets.len());
    let ssrc = packets[0].ssrc;
    let mut worst = Duration::ZERO;
    for w in packets.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert_eq!(b.ssrc, ssrc, "SSRC changed");
        assert_eq!(
            b.seq,
            a.seq.wrapping_add(1),
            "sequence gap {} → {}",
            a.seq,
            b.seq
        );
        assert_eq!(
            b.ts.wrapping_sub(a.ts),
            160,
            "timestamp step at seq {}",
            b.seq
        );
        worst = worst.max(b.at.duration_since(a.at));
    }
    assert!(worst <= max_gap, "RTP gap of {worst:?} (limit {max_gap:?})");
    assert!(packets[0].marker, "first packet carries the marker bit");
    worst
}

/// Writes `text` to a temporary folder and returns its path.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A real softphone: baresip (Debian's baresip-core), headless, one process per seat, with
/// its own config folder; driven over its ctrl_tcp netstring interface.
pub struct Baresip {
    pub child: Child,
    pub dir: PathBuf,
    pub sip_port: u16,
    pub ctrl_port: u16,
}

impl Baresip {
    /// Starts baresip registering `user` with `password` at the daemon.
    pub fn start(d: &Daemon, user: &str, password: &str) -> Baresip {
        Baresip::start_with_tone(d, user, password, 440)
    }

    /// Same, with a microphone playing a `hz` tone.
    pub fn start_with_tone(d: &Daemon, user: &str, password: &str, hz: u32) -> Baresip {
        let account = format!("<sip:{user}@{}>;auth_pass={password}", d.sip);
        Baresip::start_account(&account, "", hz)
    }

    /// A remote seat: registering over TLS at `tls` (trusting the CA in `ca`) and using SRTP
    /// with SDES keys only (`mediaenc=srtp-mand`).
    #[allow(dead_code)]
    pub fn start_tls(tls: SocketAddr, ca: &Path, user: &str, password: &str, hz: u32) -> Baresip {
        let account =
            format!("<sip:{user}@{tls};transport=tls>;auth_pass={password};mediaenc=srtp-mand");
        let extra = format!("sip_cafile {}\nmodule srtp.so\n", ca.display());
        Baresip::start_account(&account, &extra, hz)
    }

    fn start_account(account: &str, extra_config: &str, hz: u32) -> Baresip {
        let dir = temp_dir(&format!("baresip-{}", free_port()));
        let sip_port = free_port();
        let ctrl_port = free_port();
        // A long tone as the microphone: baresip hangs up when its audio file ends.
        let tone = dir.join("mic.wav");
        let status = Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&tone)
            .args(["synth", "120", "sine", &hz.to_string(), "vol", "0.3"])
            .status()
            .expect("sox");
        assert!(status.success());
        std::fs::write(
            dir.join("config"),
            format!(
                "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:{sip_port}\naudio_source aufile,{}\naudio_player aubridge,x\n\
                 ausrc_srate 8000\nauplay_srate 8000\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n\
                 module sndfile.so\nsnd_path {}\nmodule_tmp uuid.so\nmodule_tmp account.so\nmodule_app menu.so\n\
                 module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl_port}\n{extra_config}",
                tone.display(),
                dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!("{account};regint=60;answermode=auto;audio_codecs=pcmu\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip (apt-get install baresip-core)");
        Baresip {
            child,
            dir,
            sip_port,
            ctrl_port,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Quits baresip and returns what it received in its call (its decoded recording).
    #[allow(dead_code)]
    pub fn heard(self) -> Vec<i16> {
        let dir = self.dir.clone();
        drop(self);
        let recs: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(!recs.is_empty(), "baresip recorded the call");
        wav_pcm(&recs[0])
    }

    /// Sends a ctrl_tcp command; the raw reply.
    pub fn command(&self, command: &str, params: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("ctrl_tcp");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let json = format!("{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"t\"}}");
        write!(s, "{}:{},", json.len(), json).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    /// Asks baresip to quit (it unregisters first) and waits for it.
    pub fn quit(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/api/seats` entry of a seat.
pub fn seat(d: &Daemon, id: &str) -> serde_json::Value {
    let body = d.http_get("/api/seats").expect("api/seats");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no seat {id} in {body}"))
}

/// Waits until `cond` holds for seat `id`, or panics with `what`.
pub fn wait_seat(
    d: &Daemon,
    id: &str,
    within: Duration,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let s = seat(d, id);
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: seat {id} is {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Power of `freq` Hz in 8 kHz PCM relative to the signal's total power (Goertzel), 0..1.
pub fn tone_share(pcm: &[i16], freq: f64) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0f64, 0f64);
    let mut energy = 0f64;
    for &x in pcm {
        let x = x as f64;
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (energy * pcm.len() as f64)
    }
}

impl RtpSink {
    /// Sends a PCMU sine tone to `to` for `ms` milliseconds, paced at 20 ms.
    pub fn send_tone(&self, to: SocketAddr, freq: f64, ms: u64) {
        let frames = ms / 20;
        for i in 0..frames {
            let mut payload = [0u8; 160];
            for (k, b) in payload.iter_mut().enumerate() {
                let t = (i as f64 * 160.0 + k as f64) / 8000.0;
                let v = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
                *b = ulaw_encode(v);
            }
            let mut buf = [0u8; 200];
            let n = rtp_rs::RtpPacketBuilder::new()
                .payload_type(0)
                .ssrc(0x7007_7007)
                .sequence((i as u16).into())
                .timestamp(160 * i as u32)
                .payload(&payload)
                .build_into(&mut buf)
                .unwrap();
            let _ = self.socket.send_to(&buf[..n], to);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ulaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(32635) + 0x84;
    let exponent = (31 - (s as u32).leading_zeros()) as i32 - 7;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// 16-bit samples of a WAV file.
pub fn wav_pcm(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.samples::<i16>().filter_map(Result::ok).collect()
}

/// The daemon's first call recording under `dir` (`<day>/<file>.wav`), once it is readable
/// (waits up to 5 s): its left (caller) and right (seat) channels.
pub fn recording_in(dir: &Path) -> (Vec<i16>, Vec<i16>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let wav = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|day| {
                std::fs::read_dir(day.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
            })
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        if let Some(p) = found.first().filter(|p| hound::WavReader::open(p).is_ok()) {
            break p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recording in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rd = hound::WavReader::open(&wav).unwrap();
    assert_eq!((rd.spec().channels, rd.spec().sample_rate), (2, 8000));
    let samples: Vec<i16> = rd.samples::<i16>().map(Result::unwrap).collect();
    samples.chunks(2).map(|f| (f[0], f[1])).unzip()
}

/// Registers `user` from 127.0.0.1:`port` (digest MD5) and frees the port, so a SIPp UAS
/// started on it afterwards is the seat's phone: the daemon sends to where REGISTER came from.
pub fn register_from_port(d: &Daemon, user: &str, password: &str, port: u16) {
    register_contact(d, user, password, port, port, 300);
}

/// The `Authorization` header line (MD5, qop auth) answering the 401 `challenge` of a
/// REGISTER to `uri`.
pub fn digest_authorization(user: &str, password: &str, uri: &str, challenge: &str) -> String {
    use hotline::sip::digest::{Algorithm, ha1};
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce");
    let h1 = ha1(Algorithm::Md5, user, "hotline", password);
    let h2 = Algorithm::Md5.hash_hex(&format!("REGISTER:{uri}"));
    let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:abc:auth:{h2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
    )
}

/// REGISTER from 127.0.0.1:`from_port` for the contact sip:`user`@127.0.0.1:`contact_port`
/// (`expires` 0 removes it), digest MD5; asserts the 200.
pub fn register_contact(
    d: &Daemon,
    user: &str,
    password: &str,
    from_port: u16,
    contact_port: u16,
    expires: u32,
) {
    let port = from_port;
    let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind agent port");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let req = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg{cseq}-{port};rport\r\n\
             From: <sip:{user}@{host}>;tag=reg{port}\r\nTo: <sip:{user}@{host}>\r\nCall-ID: reg-{user}-{port}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{contact_port}>\r\nExpires: {expires}\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            host = d.sip
        )
    };
    let mut buf = [0u8; 4096];
    sock.send_to(req(1, "").as_bytes(), d.sip).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("401");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let auth = digest_authorization(user, password, &format!("sip:{}", d.sip), &text);
    sock.send_to(req(2, &auth).as_bytes(), d.sip).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("200");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Starts SIPp as a seat's phone (UAS) on `port` with `scenario` for `calls` calls.
pub fn sipp_uas_with(d: &Daemon, scenario: &str, port: u16, calls: u32, extra: &[&str]) -> Child {
    Command::new("timeout")
        .arg("90")
        .arg("sipp")
        .arg(d.sip.to_string())
        .arg("-sf")
        .arg(repo().join("sipp-scenarios").join(scenario))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &calls.to_string(),
            "-nostdin",
            "-timeout",
            "80",
            "-timeout_error",
        ])
        .args(["-mp", &free_media_port().to_string()])
        .args(extra)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp")
}

/// Waits for a SIPp child and asserts it succeeded.
pub fn child_ok(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Changes an agent's state through the HTTP API (`login`, `logout`, `pause`, `unpause`).
pub fn agent_api(d: &Daemon, seat: &str, action: &str) {
    use std::io::{Read, Write};
    let body = format!(r#"{{"action":"{action}"}}"#);
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    write!(s, "POST /api/seats/{seat}/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// Starts SIPp as a seat's phone (UAS) on `port` with `scenario`, for one call.
pub fn sipp_uas(d: &Daemon, scenario: &str, port: u16) -> Child {
    Command::new("timeout")
        .arg("60")
        .arg("sipp")
        .arg(d.sip.to_string())
        .arg("-sf")
        .arg(repo().join("sipp-scenarios").join(scenario))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "50",
            "-timeout_error",
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp")
}

/// A test CA in `dir` (ca.pem, ca.key), made once per folder.
#[allow(dead_code)]
pub fn make_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        let st = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
            ])
            .args(["-subj", "/CN=hotline test CA"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)");
        assert!(st.success());
    }
    ca
}

/// A certificate for 127.0.0.1 signed by the folder's test CA (`name`.pem, `name`.key), valid
/// `days`.
#[allow(dead_code)]
pub fn make_cert(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
    let ca = make_ca(dir);
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            &days.to_string(),
        ])
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(st.success());
    (cert, key)
}

/// Waits until `f` holds, polling every 20 ms, or panics with `what`.
#[allow(dead_code)]
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {within:?}");
}
