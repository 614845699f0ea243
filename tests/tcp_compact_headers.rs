//! SIP over TCP with compact header forms; the answer keeps the caller's codec order (PCMA
//! first) and the media is PCMA.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn compact_headers_over_tcp_and_callers_codec_order() {
    let d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "uac_compact.xml",
        "12345",
        &[
            "-t",
            "t1",
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            "1500",
        ],
    );
    assert_sipp_ok(&out, &d);
    let packets = sink.packets();
    check_stream(&packets, Duration::from_millis(100));
    assert!(
        packets.iter().all(|p| p.pt == 8),
        "PCMA, the caller's first choice"
    );
    d.wait_idle(Duration::from_secs(2));
}
