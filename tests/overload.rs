//! Overload control: what is over a ceiling gets 503 with Retry-After at once, before any
//! state is made for it, while what is under it is served with audio; a flood sheds on the
//! event loop's lag, every caller gets an answer (none times out), and /healthz answers from
//! its own thread all along.
mod common;
use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// A new INVITE sent by hand; the first response to it.
fn first_response(d: &Daemon, call_id: &str) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let invite = format!(
        "INVITE sip:12345@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id};rport\r\n\
         From: <sip:13800000009@{local}>;tag=t-{call_id}\r\nTo: <sip:12345@{sip}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:13800000009@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sip = d.sip
    );
    sock.send_to(invite.as_bytes(), d.sip).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("a response");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[test]
fn a_small_ceiling_sheds_what_is_over_it_at_once_and_serves_what_is_under_it_with_audio() {
    let d = Daemon::start(&[("HOTLINE__OVERLOAD__MAX_CALLS", "2")]);
    let sinks = [RtpSink::new(), RtpSink::new()];
    let ports: Vec<String> = sinks.iter().map(|s| s.port.to_string()).collect();
    let (held, shed) = std::thread::scope(|s| {
        let calls: Vec<_> = ports
            .iter()
            .map(|p| {
                let d = &d;
                s.spawn(move || {
                    sipp(
                        d,
                        "uac_call.xml",
                        "12345",
                        &["-key", "rtp_port", p, "-d", "4000"],
                    )
                })
            })
            .collect();
        for sink in &sinks {
            sink.wait_first(Duration::from_secs(10));
        }
        // Two calls up: a third is over the ceiling. Its first answer is the 503 itself (no
        // 100 Trying: nothing was made for it).
        let shed = first_response(&d, "over-the-ceiling");
        (
            calls
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>(),
            shed,
        )
    });
    for out in &held {
        assert_sipp_ok(out, &d);
    }
    assert!(
        shed.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{shed}"
    );
    assert!(shed.contains("Retry-After: 10\r\n"), "{shed}");
    assert!(shed.contains("calls at the configured ceiling"), "{shed}");
    for sink in &sinks {
        let heard = decode_pcmu(&sink.packets());
        assert_heard_at(&heard, "welcome", 0);
    }
    assert_eq!(d.metric("hotline_calls_shed_total"), 1);
    assert_eq!(d.metric("hotline_calls_shed_ceiling_total"), 1);
    assert_eq!(d.health("calls_shed"), 1);
    // Under the ceiling again: served.
    d.wait_idle(Duration::from_secs(10));
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let out = sipp(
        &d,
        "uac_call.xml",
        "12345",
        &["-key", "rtp_port", &port, "-d", "1000"],
    );
    assert_sipp_ok(&out, &d);
    assert!(
        !sink.packets().is_empty(),
        "the next call is served with audio"
    );
    assert_eq!(d.metric("hotline_calls_shed_total"), 1);
    // The shed call never reached call control: no state, no record.
    let events = d.stored_events();
    assert!(
        !events
            .iter()
            .any(|e| e.1.as_deref() == Some("over-the-ceiling")),
        "a shed call makes no state: {events:?}"
    );
}

#[test]
fn a_flood_sheds_on_the_event_loops_lag_answers_every_caller_and_health_keeps_answering() {
    let d = Daemon::start(&[
        ("HOTLINE__OVERLOAD__MAX_LAG_MS", "20"),
        ("HOTLINE__LOG__LEVEL", "info"),
    ]);
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (flood, polls) = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut polls = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let body = d.http_get_with("/healthz", None);
                polls.push((t.elapsed(), body));
                std::thread::sleep(Duration::from_millis(100));
            }
            polls
        });
        // Far more than a debug build serves: 2,400 new calls a second for 4 s (1,200 a second was
        // served whole on a faster host, with no lag to shed on).
        let flood = sipp(
            &d,
            "uac_call_or_503.xml",
            "12345",
            &[
                "-key", "rtp_port", &port, "-d", "500", "-r", "2400", "-m", "9600", "-l", "9600",
            ],
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (flood, poller.join().unwrap())
    });
    // Every caller was answered: served, or refused with 503 (the scenario takes either).
    // The benchmark holds time-outs to 0.1 % with the daemon on a core of its own; here the
    // debug build shares two cores with SIPp and the other tests, and a caller SIPp itself
    // is too starved to hear may still time out: a few in a hundred at most.
    let stdout = String::from_utf8_lossy(&flood.stdout).to_string();
    let count = |row: &str| -> u64 {
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(row))
            .filter_map(|l| l.rsplit('|').next()?.trim().parse().ok())
            .last()
            .unwrap_or(0)
    };
    let (ok, failed) = (count("Successful call"), count("Failed call"));
    assert_eq!(ok + failed, 9600, "{stdout}");
    assert!(failed * 50 <= 9600, "{failed} callers timed out:\n{stdout}");
    let shed = d.metric("hotline_calls_shed_lag_total");
    let answered = d.metric("hotline_calls_answered_total");
    eprintln!(
        "{answered} calls served, {shed} shed for lag, {} health polls, {} SIP sends refused\n{}",
        polls.len(),
        d.metric("hotline_sip_send_errors_total"),
        String::from_utf8_lossy(&flood.stdout)
            .lines()
            .filter(|l| l.contains("<--") || l.contains("-->"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(shed > 0, "the flood is shed on the event loop's lag");
    assert!(
        d.log_text()
            .contains("event loop late: new calls shed with 503 until it keeps time"),
        "the operator is told why calls are shed"
    );
    assert!(answered > 0, "and calls are still served meanwhile");
    let overloaded = polls
        .iter()
        .filter(|(_, b)| b.as_deref().is_some_and(|b| b.contains("\"overloaded\"")))
        .count();
    assert!(overloaded > 0, "/healthz said overloaded during the flood");
    let worst = polls.iter().map(|(t, _)| *t).max().unwrap();
    assert!(
        polls.iter().all(|(_, b)| b.is_some()),
        "/healthz answered every poll"
    );
    // The target is 100 ms (the benchmark measures it); here, beside the other tests on a
    // shared machine, a generous bound that a health check on the call thread fails.
    assert!(
        worst < Duration::from_secs(1),
        "worst /healthz answer {worst:?}"
    );
    d.wait_idle(Duration::from_secs(30));
}
