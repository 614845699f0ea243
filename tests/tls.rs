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

/// A test CA in `dir` (ca.pem, ca.key), made once per folder.
fn make_ca(dir: &Path) -> PathBuf {
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
fn make_cert(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
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
    use hotline::sip::digest::{Algorithm, ha1};
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("nonce");
    let uri = format!("sip:{}", d.sip);
    let h1 = ha1(Algorithm::Md5, user, "hotline", password);
    let h2 = Algorithm::Md5.hash_hex(&format!("REGISTER:{uri}"));
    let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:abc:auth:{h2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
    )
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
    assert_eq!(t.d.http_get("/healthz").is_some(), true);
}
