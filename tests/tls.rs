//! SIP over TLS (RFC 3261 §26, RFC 5630): SIPp (through stunnel, as Debian's SIPp has no TLS)
//! calls 12345 over TLS and hears the prompt; a remote seat must register over TLS, and its
//! binding ends with its connection; half-open handshakes and garbage on the TLS port are
//! refused without touching a call in progress; SIGHUP re-reads the certificate.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct TlsSetup {
    d: Daemon,
    dir: PathBuf,
    tls: std::net::SocketAddr,
}

/// The daemon with SIP over TLS on a free port, seat 1003 remote, `env` on top.
fn start(env: &[(&str, &str)]) -> TlsSetup {
    let dir = temp_dir(&format!("tls-{}", free_port()));
    let (cert, key) = make_cert(&dir, "cert", 90);
    let tls: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (tls_s, cert_s, key_s) = (
        tls.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let mut all: Vec<(&str, &str)> = vec![
        ("HOTLINE__SIP__TLS_LISTEN", &tls_s),
        ("HOTLINE__TLS__CERT", &cert_s),
        ("HOTLINE__TLS__KEY", &key_s),
    ];
    all.extend_from_slice(env);
    let d = Daemon::start_edited(|t| t.replacen("# remote = true", "remote = true", 1), &all);
    TlsSetup { d, dir, tls }
}

/// A TLS client that trusts only `ca`.
fn connect(
    tls: std::net::SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(tls.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one SIP message (headers and Content-Length body) from a stream.
fn read_message(s: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "connection ended mid-message ({other:?}): {}",
                String::from_utf8_lossy(&buf)
            ),
        }
        if buf == b"\r\n" {
            buf.clear(); // a keep-alive pong
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Content-Length:")
                .or_else(|| l.strip_prefix("l:"))
        })
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn register_request(
    d: &Daemon,
    user: &str,
    cseq: u32,
    port: u16,
    auth: &str,
    transport: &str,
) -> String {
    format!(
        "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-tls{cseq}-{port};rport\r\n\
         From: <sip:{user}@{host}>;tag=t{port}\r\nTo: <sip:{user}@{host}>\r\nCall-ID: tls-{user}-{port}\r\n\
         CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port};transport={lower}>\r\nExpires: 300\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        host = d.sip,
        lower = transport.to_lowercase()
    )
}

fn digest(d: &Daemon, user: &str, password: &str, challenge: &str) -> String {
    digest_authorization(user, password, &format!("sip:{}", d.sip), challenge)
}

#[test]
fn a_remote_seat_registers_only_over_tls_and_its_binding_ends_with_the_connection() {
    let t = start(&[]);
    let d = &t.d;
    // In the clear: refused at once, before any challenge, with the reason.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = udp.local_addr().unwrap().port();
    udp.send_to(
        register_request(d, "1003", 1, port, "", "UDP").as_bytes(),
        d.sip,
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 403"), "{text}");
    assert!(
        text.contains("Warning: 399") && text.contains("TLS"),
        "{text}"
    );
    assert!(
        !text.contains("WWW-Authenticate"),
        "no digest exchange in the clear: {text}"
    );
    // A seat that is not remote still registers over UDP.
    register_from_port(d, "1001", "demo-1001", free_port());

    // Over TLS, a wrong password is refused ...
    let ca = t.dir.join("ca.pem");
    let mut s = connect(t.tls, &ca);
    let local = s.sock.local_addr().unwrap().port();
    s.write_all(register_request(d, "1003", 1, local, "", "TLS").as_bytes())
        .unwrap();
    let challenge = read_message(&mut s);
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let wrong = digest(d, "1003", "not-the-password", &challenge);
    s.write_all(register_request(d, "1003", 2, local, &wrong, "TLS").as_bytes())
        .unwrap();
    let refused = read_message(&mut s);
    assert!(refused.starts_with("SIP/2.0 403"), "{refused}");
    // ... and the right one registers the seat.
    s.write_all(register_request(d, "1003", 3, local, "", "TLS").as_bytes())
        .unwrap();
    let challenge = read_message(&mut s);
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let right = digest(d, "1003", "demo-1003", &challenge);
    s.write_all(register_request(d, "1003", 4, local, &right, "TLS").as_bytes())
        .unwrap();
    let ok = read_message(&mut s);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("Via: SIP/2.0/TLS"), "{ok}");
    wait_seat(
        d,
        "1003",
        Duration::from_secs(3),
        "registered over TLS",
        |s| s["registered"] == true,
    );
    // CRLF keep-alive (RFC 5626 §3.5.1): a double CRLF gets a single CRLF back.
    s.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    // The connection closes for good: the binding ends with it, not at its expiry.
    s.conn.send_close_notify();
    let _ = s.flush();
    drop(s);
    wait_seat(
        d,
        "1003",
        Duration::from_secs(3),
        "unregistered when its connection closed",
        |s| s["registered"] == false,
    );
    assert_eq!(
        seat(d, "1001")["registered"],
        true,
        "the UDP seat is untouched"
    );
}

/// SIPp speaks TCP; stunnel wraps it in TLS to the daemon's TLS port.
struct Stunnel {
    child: Child,
    port: u16,
}

impl Stunnel {
    fn start(dir: &Path, tls: std::net::SocketAddr, ca: &Path) -> Stunnel {
        let port = free_port();
        let conf = dir.join(format!("stunnel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 4\n[sip]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {tls}\nCAfile = {}\nverifyChain = yes\ncheckIP = 127.0.0.1\n",
                ca.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("stunnel-{port}.log"))).unwrap())
            .spawn()
            .expect("stunnel4 (apt-get install stunnel4)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "stunnel did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Stunnel { child, port }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sipp_over_tls_calls_12345_and_hears_the_welcome() {
    let t = start(&[]);
    let tunnel = Stunnel::start(&t.dir, t.tls, &t.dir.join("ca.pem"));
    let sink = RtpSink::new();
    let out = Command::new("timeout")
        .arg("60")
        .arg("sipp")
        .arg(format!("127.0.0.1:{}", tunnel.port))
        .arg("-sf")
        .arg(repo().join("sipp-scenarios/uac_call.xml"))
        .args([
            "-s",
            "12345",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args([
            "-t",
            "t1",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "50",
            "-timeout_error",
        ])
        .args(["-key", "rtp_port", &sink.port.to_string(), "-d", "4000"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_sipp_ok(&out, &t.d);
    let packets = sink.packets();
    check_stream(&packets, Duration::from_millis(100));
    assert_heard_at(&decode_pcmu(&packets), "welcome", 0);
    let log = t.d.log_text();
    assert!(log.contains("TLS handshake done"), "the call came over TLS");
    t.d.wait_idle(Duration::from_secs(3));
}

#[test]
fn half_open_handshakes_and_garbage_are_dropped_without_touching_a_call() {
    let t = start(&[("HOTLINE__TLS__HANDSHAKE_TIMEOUT_MS", "500")]);
    let d = &t.d;
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    std::thread::scope(|sc| {
        let call = sc.spawn(|| {
            sipp(
                d,
                "uac_call.xml",
                "12345",
                &["-key", "rtp_port", &port, "-d", "3000"],
            )
        });
        sink.wait_first(Duration::from_secs(10));
        // A client that connects and never says hello, and one that sends plain SIP.
        let mut silent = TcpStream::connect(t.tls).unwrap();
        let mut garbage = TcpStream::connect(t.tls).unwrap();
        garbage
            .write_all(b"OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        for (name, s) in [("silent", &mut silent), ("garbage", &mut garbage)] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let started = Instant::now();
            let mut b = [0u8; 512];
            // Closed by the daemon: end of stream (or a reset), never a SIP answer.
            loop {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => assert!(
                        !b[..n].starts_with(b"SIP/2.0"),
                        "{name}: answered in the clear"
                    ),
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{name}: not closed in time"
            );
        }
        assert_sipp_ok(&call.join().unwrap(), d);
    });
    let packets = sink.packets();
    let worst = check_stream(&packets, Duration::from_millis(100));
    eprintln!("call during the bad handshakes: worst gap {worst:?}");
    assert_heard_at(&decode_pcmu(&packets), "welcome", 0);
    assert!(d.metric("hotline_tls_handshake_failures_total") >= 2);
}

/// The certificate the server presented on a fresh connection (DER).
fn presented(tls: std::net::SocketAddr, ca: &Path) -> Vec<u8> {
    let mut s = connect(tls, ca);
    s.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[test]
fn sighup_rereads_the_certificate_and_keeps_connections_up() {
    let t = start(&[]);
    let (cert, key) = (t.dir.join("cert.pem"), t.dir.join("cert.key"));
    let ca = t.dir.join("ca.pem");
    let first = presented(t.tls, &ca);
    let mut kept = connect(t.tls, &ca);
    kept.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    kept.read_exact(&mut pong).unwrap();

    // A broken file on SIGHUP: the old pair stays in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(hup(t.d.child.id()).success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.d.log_text().contains("TLS certificate not re-read") {
        assert!(Instant::now() < deadline, "no log of the failed reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(presented(t.tls, &ca), first);

    // A new pair: new connections get it; the old connection still works.
    let (new_cert, new_key) = make_cert(&t.dir, "renewed", 60);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    assert!(hup(t.d.child.id()).success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.d.log_text().contains("TLS certificate and key re-read") {
        assert!(Instant::now() < deadline, "no log of the reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = presented(t.tls, &ca);
    assert_ne!(first, second, "the renewed certificate is presented");
    kept.write_all(b"\r\n\r\n").unwrap();
    kept.read_exact(&mut pong).unwrap();
    assert_eq!(
        &pong, b"\r\n",
        "a connection from before the reload still works"
    );
    assert!(t.d.http_get("/healthz").is_some());
}

#[test]
fn a_remote_baresip_seat_over_tls_and_srtp_talks_with_a_plain_caller() {
    let t = start(&[]);
    let d = &t.d;
    let agent = Baresip::start_tls(t.tls, &t.dir.join("ca.pem"), "1003", "demo-1003", 440);
    wait_seat(
        d,
        "1003",
        Duration::from_secs(10),
        "registered over TLS",
        |s| s["registered"] == true,
    );
    agent_api(d, "1003", "login");
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let talk_ms = greeting_ms + 6000;
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                d,
                "uac_call.xml",
                "12348",
                &["-key", "rtp_port", &port, "-d", &talk_ms.to_string()],
            )
        });
        let from = sink.wait_first(Duration::from_secs(10));
        sink.send_tone(from, 1000.0, talk_ms - 500);
        run.join().unwrap()
    });
    assert_sipp_ok(&out, d);
    let view = wait_seat(d, "1003", Duration::from_secs(8), "answered", |s| {
        s["counters"]["answered"] == 1
    });
    assert_eq!(view["counters"]["offered"], 1);
    // The plain caller heard the remote seat's tone, which crossed the wire as SRTP.
    let heard = decode_pcmu(&sink.packets());
    assert_heard_at(&heard, "greetings/12348", 0);
    let tail = &heard[heard.len().saturating_sub(16000)..];
    let share = tone_share(tail, 440.0);
    assert!(
        share > 0.5,
        "caller hears the seat's 440 Hz tone (share {share:.2})"
    );
    assert_eq!(d.metric("hotline_srtp_auth_failures_total"), 0);
    assert!(d.log_text().contains("SRTP keyed"));
    let log = agent.log_text();
    assert!(log.contains("SRTP is Enabled"), "baresip used SRTP:\n{log}");
    // The seat heard the caller, decrypted by baresip.
    let pcm = agent.heard();
    let mid = &pcm[pcm.len() / 3..pcm.len() * 2 / 3];
    let share = tone_share(mid, 1000.0);
    assert!(
        share > 0.5,
        "the seat hears the caller's 1 kHz tone (share {share:.2})"
    );
}

/// An INVITE over TLS with an SRTP offer keyed by `ours`; returns the 200's SDP.
fn invite_srtp(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    d: &Daemon,
    rtp_port: u16,
    crypto: &str,
) -> String {
    let local = s.sock.local_addr().unwrap().port();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/SAVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:{crypto}\r\na=sendrecv\r\n"
    );
    let invite = format!(
        "INVITE sip:12345@{host} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{local};branch=z9hG4bK-srtp{local}\r\n\
         From: <sip:13800000000@127.0.0.1>;tag=s{local}\r\nTo: <sip:12345@{host}>\r\nCall-ID: srtp-{local}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:13800000000@127.0.0.1:{local};transport=tls>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        host = d.sip
    );
    s.write_all(invite.as_bytes()).unwrap();
    loop {
        let m = read_message(s);
        if m.starts_with("SIP/2.0 1") {
            continue;
        }
        assert!(m.starts_with("SIP/2.0 200"), "{m}");
        let to = m
            .lines()
            .find(|l| l.starts_with("To:"))
            .unwrap()
            .to_string();
        let ack = format!(
            "ACK sip:12345@{host} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{local};branch=z9hG4bK-srtpack{local}\r\n\
             From: <sip:13800000000@127.0.0.1>;tag=s{local}\r\n{to}\r\nCall-ID: srtp-{local}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            host = d.sip
        );
        s.write_all(ack.as_bytes()).unwrap();
        return m.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    }
}

#[test]
fn srtp_caller_hears_the_welcome_and_tampered_or_replayed_packets_are_dropped() {
    use hotline::media::sdes::CryptoAttr;
    use hotline::media::srtp::SrtpSession;
    let t = start(&[]);
    let d = &t.d;
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let ours = CryptoAttr::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
    )
    .unwrap();
    let mut s = connect(t.tls, &t.dir.join("ca.pem"));
    let answer = invite_srtp(
        &mut s,
        d,
        rtp.local_addr().unwrap().port(),
        &ours.to_string(),
    );
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    let line = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("the answer carries our key");
    let theirs = CryptoAttr::parse(line).unwrap();
    assert_eq!((theirs.tag, theirs.suite), (ours.tag, ours.suite));
    assert_ne!(theirs.key, ours.key, "the daemon keys its own direction");
    let media_port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let daemon_rtp: std::net::SocketAddr = format!("127.0.0.1:{media_port}").parse().unwrap();
    let mut session = SrtpSession::new(&ours, &theirs).unwrap();

    // What the daemon sends decrypts with its key: the welcome prompt.
    let mut heard: Vec<i16> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut plain = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline && heard.len() < 8000 * 3 {
        let Ok(n) = rtp.recv(&mut buf) else { break };
        session
            .unprotect_rtp(&buf[..n], &mut plain)
            .expect("the daemon's SRTP authenticates");
        heard.extend(
            plain[12..]
                .iter()
                .map(|&b| hotline::media::g711::ulaw_decode(b)),
        );
    }
    let welcome = prompt_pcm("welcome");
    let (at, c) = find_prompt(&heard, &welcome[..8000], 0).expect("the welcome, decrypted");
    assert!(at < 1600 && c > 0.9, "welcome at {at} (correlation {c:.2})");

    // Ours to the daemon: good packets are taken, a tampered one and a replay are dropped.
    let mut out = Vec::new();
    let packet = |seq: u16| {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend(std::iter::repeat_n(0xFFu8, 160));
        p
    };
    let received0 = d.metric("hotline_rtp_received_total");
    let mut sent = Vec::new();
    for seq in 1..=20u16 {
        session.protect_rtp(&packet(seq), &mut out).unwrap();
        rtp.send_to(&out, daemon_rtp).unwrap();
        sent.push(out.clone());
        std::thread::sleep(Duration::from_millis(20));
    }
    // New packets (a replayed index is refused before its tag is checked, RFC 3711 §3.3).
    session.protect_rtp(&packet(21), &mut out).unwrap();
    let mut tampered = out.clone();
    tampered[20] ^= 0x01; // the payload
    rtp.send_to(&tampered, daemon_rtp).unwrap();
    session.protect_rtp(&packet(22), &mut out).unwrap();
    let mut forged = out.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x80; // the tag itself
    rtp.send_to(&forged, daemon_rtp).unwrap();
    rtp.send_to(&sent[5], daemon_rtp).unwrap(); // a replay
    let deadline = Instant::now() + Duration::from_secs(3);
    while d.metric("hotline_srtp_replays_total") < 1
        || d.metric("hotline_srtp_auth_failures_total") < 2
    {
        assert!(
            Instant::now() < deadline,
            "tampered {} replayed {}",
            d.metric("hotline_srtp_auth_failures_total"),
            d.metric("hotline_srtp_replays_total")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.metric("hotline_srtp_auth_failures_total"), 2);
    assert_eq!(d.metric("hotline_srtp_replays_total"), 1);
    assert!(
        d.metric("hotline_rtp_received_total") - received0 >= 20,
        "the good packets were taken"
    );
    assert!(d.http_get("/healthz").is_some());
}

#[test]
fn sdes_keys_in_the_clear_and_a_plain_remote_seat_are_refused() {
    let t = start(&[]);
    let d = &t.d;
    let key = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = udp.local_addr().unwrap().port();
    let invite = |from: &str, proto: &str, crypto: &str| {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}"
        );
        format!(
            "INVITE sip:12345@{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{from}{proto}\r\n\
             From: <sip:{from}@127.0.0.1>;tag=c{port}\r\nTo: <sip:12345@{host}>\r\nCall-ID: clear-{from}-{proto}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:{from}@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            host = d.sip
        )
    };
    let mut buf = [0u8; 4096];
    let mut final_answer = |req: String| {
        udp.send_to(req.as_bytes(), d.sip).unwrap();
        loop {
            let (n, _) = udp.recv_from(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    };
    // Keys over plain UDP: refused, the reason in a Warning.
    let r = final_answer(invite(
        "13800000000",
        "RTP/SAVP",
        &format!("a=crypto:{key}\r\n"),
    ));
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    assert!(r.contains("only over TLS"), "{r}");

    // A remote seat's plain offer over TLS: refused.
    let mut s = connect(t.tls, &t.dir.join("ca.pem"));
    let local = s.sock.local_addr().unwrap().port();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let req = format!(
        "INVITE sip:12345@{host} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{local};branch=z9hG4bK-plainremote\r\n\
         From: <sip:1003@127.0.0.1>;tag=p{local}\r\nTo: <sip:12345@{host}>\r\nCall-ID: plain-remote-{local}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:1003@127.0.0.1:{local};transport=tls>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        host = d.sip
    );
    s.write_all(req.as_bytes()).unwrap();
    let r = loop {
        let m = read_message(&mut s);
        if !m.starts_with("SIP/2.0 1") {
            break m;
        }
    };
    assert!(r.starts_with("SIP/2.0 488"), "{r}");
    assert!(r.contains("remote seat must use SRTP"), "{r}");
    d.wait_idle(Duration::from_secs(3));
}

/// stunnel in server mode: TLS in on a free port (with `cert`/`key`), plain TCP out to `to`.
fn stunnel_server(dir: &Path, cert: &Path, key: &Path, to: u16) -> Stunnel {
    let port = free_port();
    let conf = dir.join(format!("stunnel-server-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\ndebug = 4\n[trunk]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{to}\ncert = {}\nkey = {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let child = Command::new("stunnel4")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("stunnel-server-{port}.log"))).unwrap())
        .spawn()
        .expect("stunnel4");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "stunnel did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Stunnel { child, port }
}

#[test]
fn a_trunk_over_tls_with_srtp_answers_and_an_untrusted_one_is_refused() {
    let dir = temp_dir(&format!("tls-trunk-{}", free_port()));
    // The sub-centre's gateway: a certificate from the CA the daemon trusts.
    let (cert, key) = make_cert(&dir, "gateway", 90);
    // An impostor: a certificate from another CA.
    let other = temp_dir(&format!("tls-other-{}", free_port()));
    let (bad_cert, bad_key) = make_cert(&other, "impostor", 90);
    let (uas_port, bad_uas_port) = (free_port(), free_port());
    let uas = Command::new("timeout")
        .args(["60", "sipp", "-sf"])
        .arg(repo().join("sipp-scenarios/probe_answer_srtp.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-t",
            "t1",
            "-m",
            "1",
        ])
        .args([
            "-nostdin",
            "-timeout",
            "50",
            "-timeout_error",
            "-key",
            "rtp_port",
            "9",
            "-d",
            "100",
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let good = stunnel_server(&dir, &cert, &key, uas_port);
    let bad = stunnel_server(&other, &bad_cert, &bad_key, bad_uas_port);
    let targets = format!(
        "[trunks.secure]\naddress = \"127.0.0.1:{}\"\ntransport = \"tls\"\nsrtp = \"mandatory\"\nca = \"{}\"\n\
         [trunks.impostor]\naddress = \"127.0.0.1:{}\"\ntransport = \"tls\"\nca = \"{}\"\n\
         [[targets]]\nnumber = \"12366\"\nname = \"税务 12366\"\nkind = \"subcentre\"\ntrunk = \"secure\"\nunit = \"省税务局\"\nprobe = true\n\
         [[targets]]\nnumber = \"12360\"\nname = \"海关 12360\"\nkind = \"subcentre\"\ntrunk = \"impostor\"\nunit = \"海关\"\nprobe = true\n",
        good.port,
        dir.join("ca.pem").display(),
        bad.port,
        dir.join("ca.pem").display(),
    );
    let d = Daemon::start_with_targets(
        &targets,
        &[
            ("HOTLINE__PROBES__ENABLED", "true"),
            ("HOTLINE__PROBES__FIRST_AFTER_S", "2"),
            ("HOTLINE__PROBES__SPACING_S", "1"),
            ("HOTLINE__PROBES__RING_TIMEOUT_S", "5"),
        ],
    );
    child_ok(uas, "the sub-centre answering over TLS with SRTP");
    // The impostor's link never comes up: its probes are not placed (a fault of ours, not
    // counted against the unit), each at once instead of after 32 s of retransmission.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !d.log_text().contains(
        "no probe attempt of this round could be placed; not counted against the unit number=12360",
    ) {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let rounds: Vec<serde_json::Value> = d
        .stored_events()
        .iter()
        .filter(|e| e.0 == "probe_round")
        .map(|e| e.4.clone())
        .collect();
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    assert_eq!(
        (
            rounds[0]["number"].as_str(),
            rounds[0]["answered"].as_bool()
        ),
        (Some("12366"), Some(true))
    );
    let log = d.log_text();
    assert!(log.contains("trunk link up trunk=secure"), "{log}");
    assert!(
        log.contains("SRTP keyed suite=Some(AesCm128HmacSha1_80)"),
        "{log}"
    );
    assert!(
        log.contains("trunk=impostor") && log.contains("invalid peer certificate"),
        "the impostor's certificate is refused with the reason:\n{log}"
    );
    assert!(!log.contains("trunk link up trunk=impostor"));
    assert!(d.metric("hotline_tls_handshake_failures_total") >= 1);
    drop((good, bad));
    d.wait_idle(Duration::from_secs(3));
}
