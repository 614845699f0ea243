//! Seats register with digest authentication: SIPp (MD5) and a real baresip softphone; a
//! wrong password gets 403 and is logged; a source that keeps failing is blocked for a while.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn sipp_registers_with_digest_and_unregisters() {
    let d = Daemon::start(&[]);
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "register_auth.xml",
                "1001",
                &["-au", "1001", "-ap", "demo-1001", "-d", "2000"],
            )
        });
        let view = wait_seat(&d, "1001", Duration::from_secs(5), "registered", |s| {
            s["registered"] == true
        });
        let c = &view["contacts"][0];
        assert_eq!(c["transport"], "UDP");
        assert!(c["expires_in_s"].as_u64().unwrap() > 100);
        assert!(c["source"].as_str().unwrap().starts_with("127.0.0.1:"));
        let out = run.join().unwrap();
        assert_sipp_ok(&out, &d);
    });
    wait_seat(
        &d,
        "1001",
        Duration::from_secs(2),
        "unregistered by Contact: *",
        |s| s["registered"] == false,
    );
}

#[test]
fn wrong_password_is_refused_logged_and_then_throttled() {
    let d = Daemon::start(&[("HOTLINE__REGISTRAR__MAX_FAILURES", "3")]);
    for _ in 0..3 {
        let out = sipp(
            &d,
            "register_wrong_password.xml",
            "1002",
            &["-au", "1002", "-ap", "guess"],
        );
        assert_sipp_ok(&out, &d);
    }
    assert!(d.log_text().contains("REGISTER refused"), "attempt logged");
    assert!(d.log_text().contains("source blocked"));
    // Blocked now: even the right password is refused at once, with Retry-After.
    let out = sipp(&d, "register_throttled.xml", "1002", &[]);
    assert_sipp_ok(&out, &d);
    assert_eq!(seat(&d, "1002")["registered"], false);
}

#[test]
fn baresip_softphone_registers_with_digest_auth_and_unregisters_on_exit() {
    let d = Daemon::start(&[]);
    let mut phone = Baresip::start(&d, "1001", "demo-1001");
    let view = wait_seat(
        &d,
        "1001",
        Duration::from_secs(10),
        "baresip registered",
        |s| s["registered"] == true,
    );
    let source = view["contacts"][0]["source"].as_str().unwrap().to_string();
    assert_eq!(
        source,
        format!("127.0.0.1:{}", phone.sip_port),
        "reached where its REGISTER came from"
    );
    phone.quit();
    wait_seat(
        &d,
        "1001",
        Duration::from_secs(5),
        "baresip unregistered on exit",
        |s| s["registered"] == false,
    );

    let _bad = Baresip::start(&d, "1002", "wrong");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(seat(&d, "1002")["registered"], false);
    assert!(
        d.log_text().contains("REGISTER refused"),
        "{}",
        tail(&d.log_text(), 20)
    );
}

/// One digest-authenticated REGISTER attempt for `user` with `password` from 127.0.0.1:`port`
/// (the challenge, then the answer to it); the final response's status line.
fn register_attempt(d: &Daemon, user: &str, password: &str, port: u16) -> String {
    use hotline::sip::digest::{Algorithm, ha1};
    let sock = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let req = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ra{cseq}-{user}-{port};rport\r\n\
             From: <sip:{user}@{host}>;tag=ra{port}\r\nTo: <sip:{user}@{host}>\r\nCall-ID: ra-{user}-{port}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: 300\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            host = d.sip
        )
    };
    let mut buf = [0u8; 4096];
    sock.send_to(req(1, "").as_bytes(), d.sip).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("a response");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let Some(nonce) = text
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
    else {
        return text.lines().next().unwrap_or("").to_string();
    };
    let uri = format!("sip:{}", d.sip);
    let h1 = ha1(Algorithm::Md5, user, "hotline", password);
    let h2 = Algorithm::Md5.hash_hex(&format!("REGISTER:{uri}"));
    let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:abc:auth:{h2}"));
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
    );
    sock.send_to(req(2, &auth).as_bytes(), d.sip).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("a final response");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn behind_one_address_a_stale_password_blocks_only_its_seat_while_a_scan_blocks_the_address() {
    let d = Daemon::start(&[
        ("HOTLINE__REGISTRAR__MAX_FAILURES", "3"),
        ("HOTLINE__REGISTRAR__MAX_FAILURES_PER_SOURCE", "10"),
    ]);
    // Seat 1002's phone has a stale password: three failures block 1002 from this address.
    for _ in 0..3 {
        assert!(register_attempt(&d, "1002", "stale", free_port()).starts_with("SIP/2.0 403"));
    }
    let refused = register_attempt(&d, "1002", "demo-1002", free_port());
    assert!(
        refused.starts_with("SIP/2.0 403"),
        "1002 blocked even with its right password: {refused}"
    );
    // Seat 1001, behind the same address, registers as usual.
    let ok = register_attempt(&d, "1001", "demo-1001", free_port());
    assert!(
        ok.starts_with("SIP/2.0 200"),
        "the other seat is not blocked: {ok}"
    );
    assert_eq!(seat(&d, "1001")["registered"], true);
    assert!(
        d.log_text()
            .contains("source blocked for it (other users from this address are not)")
    );
    // A scan: wrong passwords for many users from the same address blocks the address.
    for i in 0..8 {
        let user = format!("scan{i}");
        let r = register_attempt(&d, &user, "guess", free_port());
        assert!(r.starts_with("SIP/2.0 403"), "{user}: {r}");
    }
    assert!(
        d.log_text()
            .contains("a scan: too many failed REGISTERs from this address")
    );
    let r = register_attempt(&d, "1003", "demo-1003", free_port());
    assert!(
        r.starts_with("SIP/2.0 403"),
        "after a scan the address is blocked for every user: {r}"
    );
}
