//! CANCEL while the call rings: 200 to the CANCEL, 487 to the INVITE, nothing left behind.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn cancel_while_ringing_gets_200_and_487() {
    let d = Daemon::start(&[("HOTLINE__SIP__RING_MS", "5000")]);
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "uac_cancel.xml",
        "12345",
        &["-key", "rtp_port", &sink.port.to_string()],
    );
    assert_sipp_ok(&out, &d);
    d.wait_idle(Duration::from_secs(2));
    assert_eq!(d.metric("hotline_calls_cancelled_total"), 1);
    assert_eq!(d.metric("hotline_calls_answered_total"), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.packets().is_empty(), "a cancelled call sends no media");
}
