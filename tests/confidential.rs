//! Confidential callers (保密): a caller keys `*` in 12345's menu, hears that its number is
//! withheld, and chooses a queue. The seat's phone (SIPp, its messages logged) is offered an
//! anonymous caller: no number anywhere in the INVITE. The call's records and its recording
//! are flagged, the API's call list shows no number, and reading the full number through the
//! API is logged and stored with who read it. Caller and seat still hear each other.
mod common;
use common::*;
use std::time::{Duration, Instant};

const CALLER: &str = "13912345678";

fn keys(sink: &RtpSink, to: std::net::SocketAddr, code: &str, seq: u16) {
    for (i, c) in code.chars().enumerate() {
        sink.send_dtmf(to, c, seq + i as u16 * 10, 8000 * (i as u32 + seq as u32));
        std::thread::sleep(Duration::from_millis(60));
    }
}

fn first_invite(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let start = text.find("INVITE sip:").expect("an INVITE was received");
    let rest = &text[start..];
    rest[..rest
        .find("\n\n")
        .or_else(|| rest.find("\r\n\r\n"))
        .unwrap_or(rest.len())]
        .to_string()
}

#[test]
fn a_confidential_caller_reaches_the_seat_anonymous_and_every_output_masks_it() {
    let dir = temp_dir(&format!("confidential-{}", free_port()));
    let recordings = dir.join("recordings");
    let d = Daemon::start(&[
        ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
        ("HOTLINE__QUEUES__GENERAL__RECORD", "true"),
        ("HOTLINE__ACD__RECORDINGS", recordings.to_str().unwrap()),
    ]);
    let seat_log = dir.join("seat.msg");
    let agent_port = free_port();
    register_contact(&d, "1001", "demo-1001", agent_port, agent_port, 300);
    agent_api(&d, "1001", "login");
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let phone = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &[
            "-key",
            "rtp_port",
            &agent.port.to_string(),
            "-d",
            "4000",
            "-trace_msg",
            "-message_file",
            seat_log.to_str().unwrap(),
        ],
    );
    let welcome_ms = prompt_frames("welcome") as u64 * 20;
    let confirm_ms = prompt_frames("confidential/on") as u64 * 20;
    let caller_ms = welcome_ms + confirm_ms + 9000;
    let mut listed = String::new();
    let mut read = String::new();
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call_as.xml",
                "12345",
                &[
                    "-key",
                    "rtp_port",
                    &caller.port.to_string(),
                    "-d",
                    &caller_ms.to_string(),
                    "-key",
                    "caller",
                    CALLER,
                    "-key",
                    "extra_header",
                    "X-Test: confidential",
                ],
            )
        });
        let to = caller.wait_first(Duration::from_secs(10));
        let started = Instant::now();
        // During the menu: * for confidentiality, then (after the confirmation) 1 for the
        // general queue.
        std::thread::sleep(Duration::from_millis(welcome_ms + 600));
        keys(&caller, to, "*", 100);
        std::thread::sleep(Duration::from_millis(confirm_ms + 300));
        keys(&caller, to, "1", 200);
        let from_daemon = agent.wait_first(Duration::from_secs(10));
        let c = &caller;
        s.spawn(move || c.send_tone(to, 1000.0, 3000));
        agent.send_tone(from_daemon, 1500.0, 1000);
        listed = d.http_get("/api/calls").unwrap_or_default();
        let calls: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let id = calls[0]["call_id"].as_str().unwrap().to_string();
        read = d
            .http_get(&format!("/api/calls/{id}/number"))
            .unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(caller_ms / 1000));
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    child_ok(phone, "the seat");
    d.wait_idle(Duration::from_secs(5));

    // What the caller heard: the confirmation after the welcome.
    let heard = decode_pcmu(&caller.packets());
    let (_, c) = find_prompt(&heard, &prompt_pcm("confidential/on"), 0).expect("confirmation");
    assert!(
        c > 0.9,
        "the caller hears that its number is withheld ({c:.2})"
    );
    // The seat: anonymous, the number nowhere in the INVITE; and it hears the caller.
    let invite = first_invite(&seat_log);
    let from = invite
        .lines()
        .find(|l| l.starts_with("From:"))
        .unwrap_or_default();
    assert!(from.contains("anonymous"), "{from}");
    assert!(
        !invite.contains(CALLER) && !invite.contains("13912"),
        "no number reaches the seat:\n{invite}"
    );
    assert!(invite.contains("X-Hotline-Confidential: yes"), "{invite}");
    let to_seat = decode_pcmu(&agent.packets());
    assert!(
        tone_share(&to_seat, 1000.0) > 0.3,
        "the seat hears the caller"
    );
    // The API's list masks; a read of the full number gives it, and is logged and stored.
    assert!(
        listed.contains("\"anonymous\"") && !listed.contains(CALLER),
        "{listed}"
    );
    assert!(read.contains(CALLER), "{read}");
    let events = d.stored_events();
    assert!(events.iter().any(|e| e.0 == "confidential"), "flagged");
    let reads: Vec<_> = events.iter().filter(|e| e.0 == "number_read").collect();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].4["by"], "http api (tests)");
    let rec = events
        .iter()
        .find(|e| e.0 == "recording")
        .expect("the call was recorded");
    assert_eq!(rec.4["confidential"], true, "the recording is flagged");
    let log = d.log_text();
    let read_line = log
        .lines()
        .find(|l| l.contains("full caller number read through the API"))
        .expect("the read is logged");
    assert!(
        read_line.contains("http api (tests)") && !read_line.contains(CALLER),
        "logged with who read it, not the number: {read_line}"
    );
    let offer_line = log
        .lines()
        .find(|l| l.contains("offering the call to a seat"))
        .unwrap_or_default();
    assert!(!offer_line.contains(CALLER), "{offer_line}");
}
