//! A caller reaches a human: the queue offers the call to a logged-in baresip agent, which
//! answers; audio flows both ways through the daemon (each side hears the other's tone);
//! hang-up ends both legs; the agent's figures count the offer and the answer; the queue
//! records the call (caller left, seat right).
mod common;
use common::*;
use std::time::Duration;

#[test]
fn queued_caller_is_bridged_to_a_baresip_agent_with_audio_both_ways() {
    let recordings = temp_dir("recordings");
    let mut d = Daemon::start(&[
        ("HOTLINE__QUEUES__LINE-12348__RECORD", "true"),
        ("HOTLINE__ACD__RECORDINGS", recordings.to_str().unwrap()),
    ]);
    let agent = Baresip::start(&d, "1003", "demo-1003"); // expert seat of line-12348
    wait_seat(&d, "1003", Duration::from_secs(10), "registered", |s| {
        s["registered"] == true
    });
    agent_api(&d, "1003", "login");
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let talk_ms = greeting_ms + 7000;
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call.xml",
                "12348",
                &["-key", "rtp_port", &port, "-d", &talk_ms.to_string()],
            )
        });
        let from = sink.wait_first(Duration::from_secs(10));
        // the caller speaks (a 1 kHz tone) from the start: heard by the agent once bridged
        sink.send_tone(from, 1000.0, talk_ms - 500);
        run.join().unwrap()
    });
    assert_sipp_ok(&out, &d);
    assert_eq!(seat(&d, "1003")["state"], "wrap_up");
    let view = wait_seat(
        &d,
        "1003",
        Duration::from_secs(8),
        "agent free again after wrap-up",
        |s| s["state"] == "available",
    );
    assert_eq!(view["counters"]["offered"], 1);
    assert_eq!(view["counters"]["answered"], 1);
    d.wait_idle(Duration::from_secs(5));

    // The caller heard the greeting, then the agent (baresip's microphone is a 440 Hz tone).
    let heard = decode_pcmu(&sink.packets());
    assert_heard_at(&heard, "greetings/12348", 0);
    let tail = &heard[heard.len().saturating_sub(16000)..];
    let share = tone_share(tail, 440.0);
    assert!(
        share > 0.5,
        "caller hears the agent's 440 Hz tone (share {share:.2})"
    );
    assert!(d.metric("hotline_rtp_relayed_total") > 100);
    let metrics = d.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("hotline_seat_offered_total{seat=\"1003\",unit=\"省司法厅\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("hotline_seat_answered_total{seat=\"1003\",unit=\"省司法厅\"} 1\n"));
    assert!(metrics.contains("hotline_seat_missed_total{seat=\"1003\",unit=\"省司法厅\"} 0\n"));
    assert!(metrics.contains("hotline_queue_waiting{queue=\"line-12348\"} 0\n"));
    let queues: serde_json::Value =
        serde_json::from_str(&d.http_get("/api/queues").unwrap()).unwrap();
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "line-12348")
        .unwrap();
    assert_eq!(q["agents_logged_in"], 1);
    assert_eq!(q["waiting"], 0);

    // The agent heard the caller: baresip's recording of what it received.
    let pcm = agent.heard();
    let mid = &pcm[pcm.len() / 3..pcm.len() * 2 / 3];
    let share = tone_share(mid, 1000.0);
    assert!(
        share > 0.5,
        "agent hears the caller's 1 kHz tone (share {share:.2})"
    );

    // The recording: caller's tone on the left, the agent's on the right.
    let (left, right) = recording_in(&recordings);
    assert!(left.len() > 8000 * 4, "{} s recorded", left.len() / 8000);
    let mid = |v: &[i16]| v[v.len() / 3..v.len() * 2 / 3].to_vec();
    assert!(tone_share(&mid(&left), 1000.0) > 0.5, "caller on the left");
    assert!(tone_share(&mid(&right), 440.0) > 0.5, "agent on the right");

    // Killed like a crash: every event of the finished call is in the store already.
    d.kill9();
    let events = d.stored_events();
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    for k in [
        "agent_state",
        "call_start",
        "call_answered",
        "queue_enter",
        "offer",
        "talk_end",
        "call_end",
        "recording",
    ] {
        assert!(kinds.contains(&k), "{k} stored: {kinds:?}");
    }
    let offer = events.iter().find(|e| e.0 == "offer").unwrap();
    assert_eq!(offer.2.as_deref(), Some("1003"));
    assert_eq!(offer.3.as_deref(), Some("line-12348"));
    assert_eq!(offer.4["outcome"], "answered");
    let end = events.iter().find(|e| e.0 == "call_end").unwrap();
    assert_eq!(
        end.2.as_deref(),
        Some("1003"),
        "the call record names the seat"
    );
    assert_eq!(end.4["bridged"], true);
    assert_eq!(events.iter().filter(|e| e.0 == "call_start").count(), 1);
}
