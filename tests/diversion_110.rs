//! 110 non-police diversion (110 非警务类诉求分流): a call 110 hands over carries 110's incident
//! reference in `X-110-Incident`; the seat's phone is shown it and the store keeps it. When the
//! agent hands the call back to 110 (one key), the INVITE to 110 carries the 12345 call
//! reference (`X-12345-Call-Ref`) and the incident reference. SIPp caller, SIPp seat and a SIPp
//! 110 behind the emergency trunk, each logging the messages it gets.
mod common;
use common::*;
use std::time::Duration;

const INCIDENT: &str = "JJ110-20261215-0042";

fn targets(trunk: u16) -> String {
    format!(
        "[trunks.emergency]\naddress = \"127.0.0.1:{trunk}\"\n\
         [[targets]]\nnumber = \"110\"\nname = \"公安 110\"\nkind = \"emergency\"\ntrunk = \"emergency\"\ntimeout_s = 20\n"
    )
}

fn api_post(d: &Daemon, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

/// The first INVITE SIPp logged to `file` (`-trace_msg -message_file`).
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
fn the_seat_sees_110_s_incident_and_the_hand_off_back_carries_our_call_reference() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(&targets(trunk), &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")]);
    let dir = temp_dir(&format!("diversion-{trunk}"));
    let (seat_log, centre_log) = (dir.join("seat.msg"), dir.join("centre.msg"));
    let agent_port = free_port();
    register_contact(&d, "1003", "demo-1003", agent_port, agent_port, 300);
    agent_api(&d, "1003", "login");
    let (caller, agent, operator) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
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
            "6000",
            "-trace_msg",
            "-message_file",
            seat_log.to_str().unwrap(),
        ],
    );
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &[
            "-key",
            "rtp_port",
            &operator.port.to_string(),
            "-d",
            "200",
            "-trace_msg",
            "-message_file",
            centre_log.to_str().unwrap(),
        ],
    );
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let caller_ms = (greeting_ms + 8000).to_string();
    let header = format!("X-110-Incident: {INCIDENT}");
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call_as.xml",
                "12348",
                &[
                    "-key",
                    "rtp_port",
                    &caller.port.to_string(),
                    "-d",
                    &caller_ms,
                    "-key",
                    "caller",
                    "13800138000",
                    "-key",
                    "extra_header",
                    &header,
                ],
            )
        });
        let to_daemon = caller.wait_first(Duration::from_secs(10));
        let (c, ms) = (&caller, greeting_ms + 7500);
        s.spawn(move || c.send_tone(to_daemon, 1000.0, ms));
        agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let (code, body) = api_post(&d, "/api/seats/1003/handoff", r#"{"number":"110"}"#);
        assert_eq!(code, 200, "{body}");
        operator.wait_first(Duration::from_secs(5));
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    child_ok(phone, "the seat");
    child_ok(centre, "110 behind the emergency trunk");
    d.wait_idle(Duration::from_secs(5));

    let events = d.stored_events();
    let start = events
        .iter()
        .find(|e| e.0 == "call_start")
        .expect("call_start stored");
    assert_eq!(
        start.4["incident"], INCIDENT,
        "the store keeps 110's reference"
    );
    let call_id = start.1.clone().expect("call id");
    let entered = events
        .iter()
        .find(|e| e.0 == "queue_enter")
        .expect("queued");
    assert_eq!(
        entered.4["priority"], 5,
        "a hand-over from 110 is queued with priority"
    );

    let seat_invite = first_invite(&seat_log);
    assert!(
        seat_invite.contains(&format!("X-Hotline-110-Incident: {INCIDENT}")),
        "the seat is shown 110's incident:\n{seat_invite}"
    );
    let centre_invite = first_invite(&centre_log);
    assert!(
        centre_invite.contains(&format!("X-12345-Call-Ref: {call_id}")),
        "the hand-off to 110 carries our call reference:\n{centre_invite}"
    );
    assert!(
        centre_invite.contains(&format!("X-110-Incident: {INCIDENT}")),
        "and 110's own incident back:\n{centre_invite}"
    );
    let answered = events
        .iter()
        .filter(|e| e.0 == "transfer" && e.4["number"] == "110" && e.4["outcome"] == "answered")
        .count();
    assert_eq!(answered, 1, "110 answered the hand-off once");
}
