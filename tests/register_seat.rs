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
