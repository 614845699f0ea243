//! Callbacks that keep the caller's place (回拨): callers A, B and C wait in the general queue
//! (nobody logged in); C, third in line, presses 9, hears that its place is kept and is hung
//! up; D comes after. Then the seat logs in: A, B, the callback and D are served in that
//! order. For the callback the seat rings first (X-Hotline-Callback, the number and the wait in
//! From), hears that the citizen is being called, then the citizen is called over the outbound
//! trunk from 12345, hears its prompt and is bridged: each hears the other. The day's figures
//! count the callback once: requested 1, answered 1, no abandon.
mod common;
use common::*;
use std::time::{Duration, Instant};

const SEAT_HZ: f64 = 1500.0;
const CITIZEN_HZ: f64 = 1000.0;

fn waiting(d: &Daemon) -> u64 {
    let body = d.http_get("/api/queues").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v.as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == "general"))
        .and_then(|q| q["waiting"].as_u64())
        .unwrap_or(0)
}

fn wait_for_waiting(d: &Daemon, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while waiting(d) != n {
        assert!(Instant::now() < deadline, "{n} waiting in general");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// INVITEs SIPp logged to `file`, in order.
fn invites(file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split("INVITE sip:")
        .skip(1)
        .map(|m| m.split("\n\n").next().unwrap_or("").to_string())
        .collect()
}

/// PCM a sink got from `from` on, from one source address.
fn heard_from(sink: &RtpSink, since: Instant, src: std::net::SocketAddr) -> Vec<i16> {
    let p: Vec<Packet> = sink
        .packets()
        .into_iter()
        .filter(|p| p.at >= since && p.from == src && p.pt == 0)
        .collect();
    decode_pcmu(&p)
}

#[test]
fn a_callback_requested_at_position_3_is_served_third_seat_first_then_citizen() {
    let trunk = free_port();
    let d = Daemon::start_edited(
        |c| c.replace("127.0.0.1:5073", &format!("127.0.0.1:{trunk}")),
        &[
            ("HOTLINE_NOW", "2026-12-15T10:00:00+08:00"),
            ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
            ("HOTLINE__QUEUES__GENERAL__SURVEY", "false"),
            ("HOTLINE__QUEUES__GENERAL__WRAP_UP_S", "0"),
            ("HOTLINE__QUEUES__GENERAL__HOLD_PROMPT_EVERY_S", "120"),
        ],
    );
    let dir = temp_dir(&format!("callback-{trunk}"));
    let (seat_log, citizen_log) = (dir.join("seat.msg"), dir.join("citizen.msg"));
    let seat_port = free_port();
    register_contact(&d, "1001", "demo-1001", seat_port, seat_port, 300);
    let (seat, citizen) = (RtpSink::new(), RtpSink::new());
    let phone = sipp_uas_with(
        &d,
        "agent_talk_callback.xml",
        seat_port,
        4,
        &[
            "-key",
            "rtp_port",
            &seat.port.to_string(),
            "-d",
            "1500",
            "-trace_msg",
            "-message_file",
            seat_log.to_str().unwrap(),
        ],
    );
    let home = sipp_uas_with(
        &d,
        "citizen_answer.xml",
        trunk,
        1,
        &[
            "-key",
            "rtp_port",
            &citizen.port.to_string(),
            "-d",
            "300",
            "-trace_msg",
            "-message_file",
            citizen_log.to_str().unwrap(),
        ],
    );
    let welcome_ms = prompt_frames("welcome") as u64 * 20;
    let sinks: Vec<RtpSink> = (0..4).map(|_| RtpSink::new()).collect();
    let connected_ms = prompt_frames("callback/connected") as u64 * 20;
    let (seat_leg, bridged_at) = std::thread::scope(|s| {
        let mut runs = Vec::new();
        // The four calls start 1.5 s apart; each keys 0 (the general queue) once its welcome
        // is over, so they line up A, B, C, D.
        let mut started = Vec::new();
        for sink in &sinks {
            let d = &d;
            runs.push(s.spawn(move || {
                sipp(
                    d,
                    "uac_call_remote_bye.xml",
                    "12345",
                    &["-key", "rtp_port", &sink.port.to_string()],
                )
            }));
            let to = sink.wait_first(Duration::from_secs(10));
            started.push((Instant::now(), to));
            std::thread::sleep(Duration::from_millis(1500));
        }
        for (i, (sink, (at, to))) in sinks.iter().zip(started).enumerate() {
            let press = at + Duration::from_millis(welcome_ms + 500);
            std::thread::sleep(press.saturating_duration_since(Instant::now()));
            sink.send_dtmf(to, '0', 10, 8000); // 0: the general queue
            wait_for_waiting(&d, i as u64 + 1);
            if i == 2 {
                // C, third in line, asks for a callback and is hung up; its place stays.
                std::thread::sleep(Duration::from_millis(300));
                sink.send_dtmf(to, '9', 30, 24000);
            }
        }
        // (D's arrival made it four: the callback kept its place among them.)
        agent_api(&d, "1001", "login");
        // The callback: the citizen's phone answers after the seat did.
        let to_daemon = citizen.wait_first(Duration::from_secs(30));
        let answered = Instant::now();
        let seat_leg = seat.packets().last().map(|p| p.from).expect("seat media");
        let (ci, se) = (&citizen, &seat);
        s.spawn(move || ci.send_tone(to_daemon, CITIZEN_HZ, connected_ms + 3000));
        s.spawn(move || se.send_tone(seat_leg, SEAT_HZ, connected_ms + 3000));
        for r in runs {
            assert_sipp_ok(&r.join().unwrap(), &d);
        }
        (seat_leg, answered + Duration::from_millis(connected_ms))
    });
    child_ok(phone, "the seat (four calls)");
    child_ok(home, "the citizen called back");
    d.wait_idle(Duration::from_secs(5));

    // C heard that its place is kept.
    let c_heard = decode_pcmu(&sinks[2].packets());
    // Its first second: a frame late under load shifts the rest of a long match.
    let (_, cc) =
        find_prompt(&c_heard, &prompt_pcm("callback/requested")[..8000], 0).expect("prompt");
    assert!(cc > 0.9, "the caller hears its place is kept ({cc:.2})");
    // Served third, the seat first: the seat's third INVITE is the callback, with the number
    // and the wait; the citizen is called from 12345 after the seat answered.
    let seat_invites = invites(&seat_log);
    assert_eq!(seat_invites.len(), 4, "{seat_invites:?}");
    for (i, inv) in seat_invites.iter().enumerate() {
        assert_eq!(
            inv.contains("X-Hotline-Callback:"),
            i == 2,
            "INVITE {i}:\n{inv}"
        );
    }
    let from = seat_invites[2]
        .lines()
        .find(|l| l.starts_with("From:"))
        .unwrap_or_default();
    assert!(
        from.contains("回拨 13800138000 等候") && from.contains("秒"),
        "{from}"
    );
    let citizen_invite = &invites(&citizen_log)[0];
    assert!(
        citizen_invite.contains("sip:13800138000@"),
        "{citizen_invite}"
    );
    let events = d.stored_events();
    let kinds: Vec<(&str, Option<&str>, String)> = events
        .iter()
        .filter(|e| (e.0 == "offer" && e.4["outcome"] == "answered") || e.0 == "callback")
        .map(|e| {
            (
                e.0.as_str(),
                e.1.as_deref(),
                e.4["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let starts: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "call_start")
        .filter_map(|e| e.1.as_deref())
        .collect();
    let (a, b, c, dd) = (starts[0], starts[1], starts[2], starts[3]);
    let c_entered = events
        .iter()
        .find(|e| e.0 == "queue_enter" && e.1.as_deref() == Some(c))
        .expect("C queued");
    assert_eq!(c_entered.4["position"], 3, "C asked at position 3");
    let c_left = events
        .iter()
        .find(|e| e.0 == "queue_exit" && e.1.as_deref() == Some(c))
        .expect("C left the line");
    assert_eq!(
        c_left.4["reason"], "callback",
        "a request is not an abandon"
    );
    assert_eq!(
        kinds,
        [
            ("callback", Some(c), "requested".to_string()),
            ("offer", Some(a), "answered".to_string()),
            ("offer", Some(b), "answered".to_string()),
            ("offer", Some(c), "answered".to_string()),
            ("callback", Some(c), "answered".to_string()),
            ("offer", Some(dd), "answered".to_string()),
        ],
        "A, B, the callback (seat first, then the citizen), D"
    );
    // Audio both ways once bridged (after the citizen's prompt).
    let citizen_pcm = decode_pcmu(&citizen.packets());
    assert_heard_at(&citizen_pcm, "callback/connected", 0);
    let after_prompt = prompt_frames("callback/connected") * 160 + 2400;
    let share = tone_share(&citizen_pcm[after_prompt..], SEAT_HZ);
    assert!(share > 0.5, "the citizen hears the agent ({share:.2})");
    let to_agent = heard_from(&seat, bridged_at + Duration::from_millis(500), seat_leg);
    let share = tone_share(&to_agent, CITIZEN_HZ);
    assert!(
        to_agent.len() > 8000 && share > 0.5,
        "the agent hears the citizen ({} samples, share {share:.2})",
        to_agent.len()
    );
    // Before the citizen was called, the agent heard that it is being called.
    let leg_pcm = heard_from(&seat, bridged_at - Duration::from_secs(60), seat_leg);
    let (_, dc) = find_prompt(&leg_pcm, &prompt_pcm("callback/dialling"), 0).expect("dialling");
    assert!(
        dc > 0.9,
        "the agent hears that the citizen is being called ({dc:.2})"
    );
    // The day's figures: the callback once, no abandon.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["figures", "--json", "--day", "2026-12-15", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__STORE__PATH", &d.store)
        .output()
        .unwrap();
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("figures");
    let g = &f["queues"]["general"];
    assert_eq!(
        (
            &g["offered"],
            &g["answered"],
            &g["abandoned"],
            &g["callbacks_requested"],
            &g["callbacks_answered"],
            &g["callbacks_failed"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(4),
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{g}"
    );
}

#[test]
fn a_callback_the_citizen_never_answers_is_recorded_failed_after_its_attempts() {
    let trunk = free_port();
    let d = Daemon::start_edited(
        |c| c.replace("127.0.0.1:5073", &format!("127.0.0.1:{trunk}")),
        &[
            ("HOTLINE_NOW", "2026-12-15T10:00:00+08:00"),
            ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
            ("HOTLINE__QUEUES__GENERAL__WRAP_UP_S", "0"),
            ("HOTLINE__CALLBACK__ATTEMPTS", "2"),
            ("HOTLINE__CALLBACK__SPACING_S", "1"),
            (
                "HOTLINE__QUEUES__GENERAL__CALLBACK_PROMPT",
                "callback/offer",
            ),
        ],
    );
    let seat_port = free_port();
    register_contact(&d, "1001", "demo-1001", seat_port, seat_port, 300);
    // The citizen's line is busy both times; the seat answers each attempt and is hung up.
    let home = sipp_uas_with(&d, "trunk_busy.xml", trunk, 2, &[]);
    let seat = RtpSink::new();
    let phone = sipp_uas_with(
        &d,
        "agent_bridge.xml",
        seat_port,
        2,
        &["-key", "rtp_port", &seat.port.to_string(), "-d", "100"],
    );
    let caller = RtpSink::new();
    let welcome_ms = prompt_frames("welcome") as u64 * 20;
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call_remote_bye.xml",
                "12345",
                &["-key", "rtp_port", &caller.port.to_string()],
            )
        });
        let to = caller.wait_first(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(welcome_ms + 500));
        caller.send_dtmf(to, '0', 10, 8000);
        wait_for_waiting(&d, 1);
        // The announcement offers the callback (after the hold prompt and "you are next");
        // the caller takes it once it has heard it.
        let offer_ms = ["please-hold", "queue/next", "callback/offer"]
            .iter()
            .map(|p| prompt_frames(p) as u64 * 20)
            .sum::<u64>();
        std::thread::sleep(Duration::from_millis(offer_ms + 300));
        caller.send_dtmf(to, '9', 30, 24000);
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    let heard = decode_pcmu(&caller.packets());
    let (offer_at, c) = find_prompt(&heard, &prompt_pcm("callback/offer"), 0).expect("offer");
    assert!(c > 0.9, "the announcement offers the callback ({c:.2})");
    let (_, c) =
        find_prompt(&heard, &prompt_pcm("callback/requested")[..8000], offer_at).expect("booked");
    assert!(c > 0.9, "then confirms it ({c:.2})");
    agent_api(&d, "1001", "login");
    child_ok(home, "the citizen's busy line (two attempts)");
    child_ok(phone, "the seat (rung for each attempt)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcomes = loop {
        let o: Vec<(String, u64)> = d
            .stored_events()
            .into_iter()
            .filter(|e| e.0 == "callback")
            .map(|e| {
                (
                    e.4["outcome"].as_str().unwrap_or("").to_string(),
                    e.4["attempts"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if o.len() >= 3 || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        outcomes,
        [
            ("requested".to_string(), 0),
            ("attempt_failed".to_string(), 1),
            ("failed".to_string(), 2)
        ]
    );
    // (The queue view is refreshed once a second.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while waiting(&d) != 0 {
        assert!(
            Instant::now() < deadline,
            "a failed callback leaves the line"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The queue view (refreshed once a second) has today's figures.
    let today = || {
        let body = d.http_get("/api/queues").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.as_array()
            .and_then(|a| a.iter().find(|q| q["name"] == "general"))
            .map(|q| q["today"].clone())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut g = today();
    while g["callbacks_failed"] != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        g = today();
    }
    assert_eq!(
        d.metric("hotline_queue_callbacks_failed_today{queue=\"general\"}"),
        1,
        "and in /metrics"
    );
    assert_eq!(
        (
            &g["callbacks_requested"],
            &g["callbacks_answered"],
            &g["callbacks_failed"],
            &g["abandoned"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{g}"
    );
}

#[test]
fn a_waiting_callback_keeps_its_place_across_a_crash() {
    let trunk = free_port();
    let outbound = |c: String| c.replace("127.0.0.1:5073", &format!("127.0.0.1:{trunk}"));
    let mut d = Daemon::start_edited(outbound, &[("HOTLINE_NOW", "2026-12-15T10:00:00+08:00")]);
    let caller = RtpSink::new();
    let welcome_ms = prompt_frames("welcome") as u64 * 20;
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call_remote_bye.xml",
                "12345",
                &["-key", "rtp_port", &caller.port.to_string()],
            )
        });
        let to = caller.wait_first(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(welcome_ms + 500));
        caller.send_dtmf(to, '0', 10, 8000);
        wait_for_waiting(&d, 1);
        caller.send_dtmf(to, '9', 30, 24000);
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.stored_events().iter().any(|e| e.0 == "callback") {
        assert!(Instant::now() < deadline, "the request is stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    // A minute later (on the daemon's clock) the node is back on the same store.
    let store = d.store.clone();
    let d = Daemon::start_edited(
        outbound,
        &[
            ("HOTLINE_NOW", "2026-12-15T10:01:00+08:00"),
            ("HOTLINE__STORE__PATH", store.to_str().unwrap()),
            ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
        ],
    );
    assert_eq!(waiting(&d), 1, "the callback is in line again");
    let dir = temp_dir(&format!("callback-restart-{trunk}"));
    let seat_log = dir.join("seat.msg");
    let seat_port = free_port();
    register_contact(&d, "1001", "demo-1001", seat_port, seat_port, 300);
    let (seat, citizen) = (RtpSink::new(), RtpSink::new());
    let phone = sipp_uas_with(
        &d,
        "agent_talk_callback.xml",
        seat_port,
        1,
        &[
            "-key",
            "rtp_port",
            &seat.port.to_string(),
            "-d",
            "500",
            "-trace_msg",
            "-message_file",
            seat_log.to_str().unwrap(),
        ],
    );
    let home = sipp_uas_with(
        &d,
        "citizen_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &citizen.port.to_string(), "-d", "300"],
    );
    agent_api(&d, "1001", "login");
    let to_daemon = citizen.wait_first(Duration::from_secs(30));
    child_ok(phone, "the seat");
    // The agent hung up: the citizen, like any caller of the general queue, is asked to rate
    // the call, and keys 2 (基本满意) while the question plays.
    std::thread::sleep(Duration::from_millis(1500));
    citizen.send_dtmf(to_daemon, '2', 500, 800_000);
    child_ok(home, "the citizen called back after the restart");
    let invite = &invites(&seat_log)[0];
    let waited: u64 = invite
        .lines()
        .find_map(|l| l.strip_prefix("X-Hotline-Callback: 13800138000;waited="))
        .and_then(|r| r.split(';').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no callback header:\n{invite}"));
    assert!(
        (50..=70).contains(&waited),
        "the wait counts from the caller's arrival before the crash: {waited} s"
    );
    // (The restarted daemon writes to the first one's store.)
    let answered = || {
        let conn = rusqlite::Connection::open(&store).unwrap();
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'callback' AND detail LIKE '%\"answered\"%'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while answered() != 1 {
        assert!(Instant::now() < deadline, "answered after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rating is the seat's, recorded with the call that asked for the callback.
    let conn = rusqlite::Connection::open(&store).unwrap();
    let asked: String = conn
        .query_row(
            "SELECT call_id FROM events WHERE kind = 'callback' AND detail LIKE '%\"requested\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    type Row = (Option<String>, Option<String>, Option<String>, String);
    let surveys: Vec<Row> = conn
        .prepare("SELECT call_id, seat, queue, detail FROM events WHERE kind = 'survey'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(surveys.len(), 1, "{surveys:?}");
    let (call_id, seat_id, queue, detail) = &surveys[0];
    assert_eq!(
        (call_id.as_deref(), seat_id.as_deref(), queue.as_deref()),
        (Some(asked.as_str()), Some("1001"), Some("general")),
        "{detail}"
    );
    let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
    assert_eq!(detail["rating"], 2, "{detail}");
    let citizen_pcm = decode_pcmu(&citizen.packets());
    let (_, c) = find_prompt(
        &citizen_pcm,
        &prompt_pcm("survey")[..8000],
        prompt_frames("callback/connected") * 160,
    )
    .expect("survey");
    assert!(c > 0.9, "the citizen is asked the survey ({c:.2})");
}
