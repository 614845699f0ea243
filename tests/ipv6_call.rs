//! A call over IPv6 (loopback ::1), on UDP and on TCP, with media to an IPv6 address.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn call_over_ipv6_udp_and_tcp() {
    let port = free_port();
    let listen = format!("[::1]:{port}");
    let d = Daemon::start(&[
        ("HOTLINE__SIP__LISTEN", listen.as_str()),
        ("HOTLINE__RTP__BIND_IP", "::1"),
    ]);
    for transport in ["u1", "t1"] {
        let sink = RtpSink::bind("[::1]:0");
        let out = sipp(
            &d,
            "uac_call.xml",
            "12345",
            &[
                "-t",
                transport,
                "-key",
                "rtp_port",
                &sink.port.to_string(),
                "-d",
                "1200",
            ],
        );
        assert_sipp_ok(&out, &d);
        let packets = sink.packets();
        check_stream(&packets, Duration::from_millis(100));
        assert!(packets[0].from.is_ipv6());
        assert_heard_at(&decode_pcmu(&packets), "welcome", 0);
    }
    d.wait_idle(Duration::from_secs(2));
}
