//! SIGTERM: new INVITEs get 503, the call in progress finishes, the daemon exits 0.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn sigterm_refuses_new_calls_and_lets_calls_finish() {
    let mut d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let (first, second) = std::thread::scope(|s| {
        let call = s.spawn(|| {
            sipp(
                &d,
                "uac_call.xml",
                "12345",
                &["-key", "rtp_port", &port, "-d", "3000"],
            )
        });
        sink.wait_first(Duration::from_secs(5));
        d.sigterm();
        std::thread::sleep(Duration::from_millis(300));
        let refused = sipp(&d, "uac_503.xml", "12345", &["-key", "rtp_port", &port]);
        (call.join().unwrap(), refused)
    });
    assert_sipp_ok(&first, &d);
    assert_sipp_ok(&second, &d);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not exit after its calls ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.log_text().contains("all calls ended"));
}
