//! Repeat callers: with `remind_at = 2` and `queue_at = 3`, a number's first call is served as
//! usual, its second hears the reminder before the welcome, and its third hears the reminder
//! and then waits in the designated queue (no menu). Never for emergency-related numbers:
//! 110 calling twice is not counted. The day's figures count the repeat calls.
mod common;
use common::*;
use std::time::Duration;

const NUMBER: &str = "13700000001";

/// One SIPp call to 12345 from `number` lasting `ms`; what it heard.
fn call(d: &Daemon, number: &str, ms: u64) -> Vec<i16> {
    let sink = RtpSink::new();
    let out = sipp(
        d,
        "uac_call_as.xml",
        "12345",
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &ms.to_string(),
            "-key",
            "caller",
            number,
            "-key",
            "extra_header",
            "X-Test: repeat",
        ],
    );
    assert_sipp_ok(&out, d);
    decode_pcmu(&sink.packets())
}

#[test]
fn a_repeat_caller_hears_the_reminder_then_reaches_the_designated_queue() {
    let d = Daemon::start(&[
        ("HOTLINE__REPEAT_CALLERS__ENABLED", "true"),
        ("HOTLINE__REPEAT_CALLERS__REMIND_AT", "2"),
        ("HOTLINE__REPEAT_CALLERS__QUEUE_AT", "3"),
        ("HOTLINE__REPEAT_CALLERS__QUEUE", "complaint"),
    ]);
    let reminder = prompt_frames("repeat/reminder");
    let reminder_ms = reminder as u64 * 20;

    // First call: the welcome, no reminder.
    let first = call(&d, NUMBER, 2000);
    assert_heard_at(&first, "welcome", 0);
    // Second: the reminder, then the welcome and the menu as usual.
    let second = call(&d, NUMBER, reminder_ms + 2000);
    assert_heard_at(&second, "repeat/reminder", 0);
    assert_heard_at(&second, "welcome", reminder * 160);
    // Third: the reminder, then the designated queue's hold prompt (no menu).
    let third = call(&d, NUMBER, reminder_ms + 3000);
    assert_heard_at(&third, "repeat/reminder", 0);
    assert_heard_at(&third, "please-hold", reminder * 160);
    // 110 (emergency-related) twice: never a repeat caller.
    for _ in 0..2 {
        let heard = call(&d, "110", 1500);
        assert_heard_at(&heard, "welcome", 0);
    }
    d.wait_idle(Duration::from_secs(5));

    let events = d.stored_events();
    let repeats: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e.0 == "repeat_caller")
        .map(|e| {
            (
                e.4["count"].as_u64().unwrap_or(0),
                e.4["treatment"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        repeats,
        [(2, "reminded".to_string()), (3, "designated".to_string())]
    );
    let starts: Vec<&String> = events
        .iter()
        .filter(|e| e.0 == "call_start")
        .filter_map(|e| e.1.as_ref())
        .collect();
    let third_call = starts[2];
    assert!(
        events.iter().any(|e| e.0 == "queue_enter"
            && e.1.as_ref() == Some(third_call)
            && e.3.as_deref() == Some("complaint")),
        "the third call waited in the designated queue"
    );
    // The day's figures, rebuilt from the store by `hotline figures`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["figures", "--json", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__STORE__PATH", &d.store)
        .output()
        .unwrap();
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("figures json");
    assert_eq!(
        f["repeat_callers"],
        serde_json::json!({ "calls": 2, "reminded": 1, "designated": 1 }),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_window_reaches_back_past_midnight_and_across_a_restart() {
    let repeat = [
        ("HOTLINE__REPEAT_CALLERS__ENABLED", "true"),
        ("HOTLINE__REPEAT_CALLERS__REMIND_AT", "2"),
        ("HOTLINE__REPEAT_CALLERS__QUEUE_AT", "3"),
    ];
    // A call late in the evening...
    let mut env = repeat.to_vec();
    env.push(("HOTLINE_NOW", "2026-12-14T23:50:00+08:00"));
    let mut d = Daemon::start(&env);
    assert_heard_at(&call(&d, NUMBER, 1500), "welcome", 0);
    d.wait_idle(Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d.stored_events().iter().any(|e| e.0 == "call_end") {
        assert!(std::time::Instant::now() < deadline, "the call is stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    let store = d.store.clone();
    // ...and the node back after midnight, on the same store: the next call from that number
    // is its second within 24 hours (yesterday's counts), so it hears the reminder.
    let mut env = repeat.to_vec();
    env.push(("HOTLINE_NOW", "2026-12-15T08:30:00+08:00"));
    env.push(("HOTLINE__STORE__PATH", store.to_str().unwrap()));
    let d2 = Daemon::start(&env);
    let reminder = prompt_frames("repeat/reminder");
    let heard = call(&d2, NUMBER, reminder as u64 * 20 + 1500);
    assert_heard_at(&heard, "repeat/reminder", 0);
    d2.wait_idle(Duration::from_secs(5));
    // d2 writes to d's store (d2.store is a path of its own it does not use).
    let counted: Vec<u64> = d
        .stored_events()
        .iter()
        .filter(|e| e.0 == "repeat_caller")
        .filter_map(|e| e.4["count"].as_u64())
        .collect();
    assert_eq!(counted, [2]);
}
