//! Requests the daemon refuses, each with its own clear status: unknown number 404, no
//! common codec 488, SUBSCRIBE 405 (with Allow), an unknown method 501; OPTIONS is 200.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn each_refusal_has_its_status() {
    let d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    for (scenario, service) in [
        ("uac_404.xml", "99999"),
        ("uac_404.xml", "123456"), // exact match only: no prefix match on 12345
        ("uac_488.xml", "12345"),
        ("options.xml", "12345"),
        ("subscribe_405.xml", "12345"),
        ("unknown_method_501.xml", "12345"),
    ] {
        let out = sipp(&d, scenario, service, &["-key", "rtp_port", &port]);
        assert_sipp_ok(&out, &d);
    }
    d.wait_idle(Duration::from_secs(2));
    assert_eq!(d.metric("hotline_invites_refused_total"), 3);
}
