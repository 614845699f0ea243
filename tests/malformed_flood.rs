//! A bounded flood of malformed SIP over UDP and TCP: answerable junk gets 400/501, the rest
//! is dropped and counted, nothing panics, and a real call still works afterwards.
mod common;
use common::*;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

fn junk(i: usize) -> Vec<u8> {
    let good = format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{i}\r\n\
         From: <sip:a@b>;tag={i}\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: flood-{i}\r\nCSeq: 1 INVITE\r\n\
         Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\r\n"
    );
    match i % 10 {
        0 => (0..(i % 700 + 1)).map(|k| (k * 31 + i * 7) as u8).collect(), // random bytes
        1 => good.as_bytes()[..good.len() * (i % 9 + 1) / 10].to_vec(),    // truncated
        2 => good
            .replace("Call-ID: flood", "X-Nothing: flood")
            .into_bytes(), // no Call-ID → 400
        3 => good
            .replace("CSeq: 1 INVITE", "CSeq: one INVITE")
            .into_bytes(), // bad CSeq → 400
        4 => good
            .replace("INVITE sip", "FLOOD sip")
            .replace("1 INVITE", "1 FLOOD")
            .into_bytes(), // 501
        5 => good.replace("v=0", "\u{0}\u{1}\u{2}\u{3}").into_bytes(),     // SDP junk → 400
        6 => good.replace("sip:12345@", "sip:[::1@").into_bytes(),         // broken URI
        7 => format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK{i}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(), // stray response
        8 => vec![0xFF; 1400],
        _ => good.replace("\r\n", "\n").into_bytes(), // bare LF
    }
}

#[test]
fn flood_of_malformed_messages_leaves_the_daemon_answering() {
    let d = Daemon::start(&[]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 4096];
    for i in 0..4000 {
        udp.send_to(&junk(i), d.sip).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        while let Ok((n, _)) = udp.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                text.starts_with("SIP/2.0 400 ")
                    || text.starts_with("SIP/2.0 501 ")
                    || text.starts_with("SIP/2.0 100 ")
                    || text.starts_with("SIP/2.0 180 ")
                    || text.starts_with("SIP/2.0 200 ")
                    || text.starts_with("SIP/2.0 4"),
                "{text}"
            );
            answers += 1;
        }
    }
    // Over TCP: junk without Content-Length closes the connection; the next one still works.
    for i in 0..20 {
        if let Ok(mut s) = TcpStream::connect(d.sip) {
            let _ = s.write_all(&junk(i * 3 + 1));
            let _ = s.write_all(b"INVITE x SIP/2.0\r\nNo-Length: 1\r\n\r\n");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(answers > 0, "answerable junk got answers");
    assert!(
        d.metric("hotline_sip_malformed_answered_total") >= 400,
        "400/501 counted"
    );
    assert!(
        d.metric("hotline_sip_malformed_dropped_total") >= 400,
        "drops counted"
    );
    // still answering real calls
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "uac_call.xml",
        "12345",
        &["-key", "rtp_port", &sink.port.to_string(), "-d", "1000"],
    );
    assert_sipp_ok(&out, &d);
    assert!(sink.packets().len() > 30);
    let out = sipp(
        &d,
        "uac_call.xml",
        "12345",
        &[
            "-t",
            "t1",
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            "300",
        ],
    );
    assert_sipp_ok(&out, &d);
    d.wait_idle(Duration::from_secs(5));
}
