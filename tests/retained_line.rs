//! A dual-number line that keeps its own seats (保留座席, Gansu's 12369, seed 003 line 170): the
//! caller hears the line's greeting and is passed over the line's trunk to its own seats (a
//! SIPp UAS whose media is an RtpSink), presenting the caller's number; caller and seat hear
//! each other. When the line's seats do not answer, 12345's agents take the call (the 7×24
//! rule): a SIPp seat of the general queue answers and hears the caller.
mod common;
use common::*;
use std::time::{Duration, Instant};

const CALLER_HZ: f64 = 1000.0;
const SEAT_HZ: f64 = 1500.0;

/// The retained trunk on `port`, 12369's retained target on it ringing up to `timeout_s`.
fn retained(port: u16, timeout_s: u64) -> String {
    format!(
        "[trunks.retained]\naddress = \"127.0.0.1:{port}\"\n\
         [[targets]]\nnumber = \"12369\"\nname = \"环保 12369\"\nkind = \"retained\"\ntrunk = \"retained\"\ntimeout_s = {timeout_s}\n"
    )
}

/// PCM of the packets a sink received from `from` on.
fn heard_since(sink: &RtpSink, from: Instant) -> Vec<i16> {
    let p: Vec<Packet> = sink
        .packets()
        .into_iter()
        .filter(|p| p.at >= from && p.pt == 0)
        .collect();
    decode_pcmu(&p)
}

/// Transfer records of the store: (outcome, mode, number).
fn transfers(d: &Daemon) -> Vec<(String, String, String)> {
    d.stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| {
            let s = |k: &str| e.4[k].as_str().unwrap_or("").to_string();
            (s("outcome"), s("mode"), s("number"))
        })
        .collect()
}

#[test]
fn the_line_s_own_seat_answers_over_its_trunk_with_audio_both_ways() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(&retained(trunk, 10), &[]);
    let (caller, seat) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12369") as u64 * 20;
    // The line's seat rings 0.5 s, answers with the seat sink's media, waits for our BYE;
    // trunk_answer.xml checks it is shown the caller's own number.
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &seat.port.to_string(), "-d", "500"],
    );
    let caller_ms = greeting_ms + 4500;
    let answered = std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call.xml",
                "12369",
                &[
                    "-key",
                    "rtp_port",
                    &caller.port.to_string(),
                    "-d",
                    &caller_ms.to_string(),
                ],
            )
        });
        let to_daemon = caller.wait_first(Duration::from_secs(10));
        let c = &caller;
        s.spawn(move || c.send_tone(to_daemon, CALLER_HZ, caller_ms - 500));
        // The daemon's leg to the seat sends RTP once the seat answered.
        let from_daemon = seat.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let answered = Instant::now();
        seat.send_tone(from_daemon, SEAT_HZ, 2500);
        assert_sipp_ok(&run.join().unwrap(), &d);
        answered
    });
    child_ok(centre, "the line's seat (SIPp UAS on its trunk)");
    let h = decode_pcmu(&caller.packets());
    assert_heard_at(&h, "greetings/12369", 0);
    let to_caller = heard_since(&caller, answered + Duration::from_millis(300));
    let to_seat = heard_since(&seat, answered + Duration::from_millis(300));
    let (c, t) = (
        tone_share(&to_caller, SEAT_HZ),
        tone_share(&to_seat, CALLER_HZ),
    );
    assert!(c > 0.5, "the caller hears the line's seat (share {c:.2})");
    assert!(t > 0.5, "the line's seat hears the caller (share {t:.2})");
    d.wait_idle(Duration::from_secs(5));
    let records = transfers(&d);
    assert!(
        records.contains(&("started".into(), "line".into(), "12369".into()))
            && records.iter().any(|r| r.0 == "answered" && r.2 == "12369"),
        "{records:?}"
    );
}

#[test]
fn when_the_line_s_seats_do_not_answer_a_12345_agent_takes_the_call() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &retained(trunk, 2),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    // Seat 1001 serves the general queue, the retained lines' fallback (dialplan.retained_fallback).
    let agent_port = free_port();
    register_contact(&d, "1001", "demo-1001", agent_port, agent_port, 300);
    agent_api(&d, "1001", "login");
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let centre = sipp_uas_with(&d, "trunk_no_answer.xml", trunk, 1, &[]);
    let phone = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &agent.port.to_string(), "-d", "2500"],
    );
    let greeting_ms = prompt_frames("greetings/12369") as u64 * 20;
    let caller_ms = greeting_ms + 5500;
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call.xml",
                "12369",
                &[
                    "-key",
                    "rtp_port",
                    &caller.port.to_string(),
                    "-d",
                    &caller_ms.to_string(),
                ],
            )
        });
        let to_daemon = caller.wait_first(Duration::from_secs(10));
        let c = &caller;
        s.spawn(move || c.send_tone(to_daemon, CALLER_HZ, caller_ms - 500));
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    child_ok(centre, "the line's seat that never answers (CANCELled)");
    child_ok(phone, "the 12345 agent");
    let to_agent = decode_pcmu(&agent.packets());
    let share = tone_share(&to_agent, CALLER_HZ);
    assert!(
        to_agent.len() > 8000 && share > 0.5,
        "the 12345 agent hears the caller ({} samples, share {share:.2})",
        to_agent.len()
    );
    d.wait_idle(Duration::from_secs(5));
    let records = transfers(&d);
    assert!(
        records.contains(&("no_answer".into(), String::new(), "12369".into())),
        "{records:?}"
    );
    let events = d.stored_events();
    assert!(
        events
            .iter()
            .any(|e| e.0 == "queue_enter" && e.3.as_deref() == Some("general")),
        "the caller waited in the general queue"
    );
    let seat = seat(&d, "1001");
    assert_eq!(seat["counters"]["answered"], 1, "{seat}");
}
