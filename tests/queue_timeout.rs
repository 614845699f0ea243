//! A caller waiting with nobody to answer hears the hold prompt, its position ("you are
//! next"), hold music, and at the queue's maximum wait is sent on (never silence): the shipped
//! general queue overflows to the call-back flow; a queue configured "sorry" plays the sorry
//! prompt and hangs up.
mod common;
use common::*;
use std::time::Duration;

/// Calls 12345, presses 0 (the general queue) and returns what the caller heard and where
/// the hold prompt started.
fn wait_in_general(d: &Daemon) -> (Vec<i16>, usize) {
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                d,
                "uac_call_remote_bye.xml",
                "12345",
                &["-key", "rtp_port", &port],
            )
        });
        let from = sink.wait_first(Duration::from_secs(10));
        let t0 = sink.packets()[0].at;
        let press = t0 + Duration::from_millis(prompt_frames("welcome") as u64 * 20 + 1000);
        std::thread::sleep(press.saturating_duration_since(std::time::Instant::now()));
        sink.send_dtmf(from, '0', 1, 1000); // 0 = agent: the general queue
        run.join().unwrap()
    });
    assert_sipp_ok(&out, d);
    let heard = decode_pcmu(&sink.packets());
    let (hold_at, c) = find_prompt(&heard, &prompt_pcm("please-hold"), 0).unwrap();
    assert!(c > 0.95, "please-hold heard ({c:.3})");
    (heard, hold_at)
}

#[test]
fn at_max_wait_the_general_queue_overflows_to_a_callback_request() {
    let d = Daemon::start(&[
        // Long enough for the whole announcement (hold prompt, "you are next", the callback
        // offer) and some music.
        ("HOTLINE__QUEUES__GENERAL__MAX_WAIT_S", "20"),
        ("HOTLINE__QUEUES__GENERAL__HOLD_PROMPT_EVERY_S", "60"),
    ]);
    let (heard, hold_at) = wait_in_general(&d);
    // Alone in the line: "您是下一位" right after the hold prompt, the callback key offered
    // (如需挂机等待回拨，请按9), then hold music.
    let next_at = hold_at + prompt_frames("please-hold") * 160;
    assert_heard_at(&heard, "queue/next", next_at);
    let offer_at = next_at + prompt_frames("queue/next") * 160;
    assert_heard_at(&heard, "callback/offer", offer_at);
    let music = prompt_pcm("hold-music");
    let music_at = offer_at + prompt_frames("callback/offer") * 160;
    assert!(
        correlation(&heard[music_at..], &music[..8000]) > 0.95,
        "hold music follows the announcement"
    );
    // The overflow books a real callback (回拨) keeping the caller's place: the caller hears
    // that its place is kept.
    let (cb_at, c) = find_prompt(&heard, &prompt_pcm("callback/requested"), hold_at).unwrap();
    assert!(c > 0.95, "call-back prompt heard ({c:.3})");
    let waited = (cb_at - hold_at) as f64 / 8000.0;
    assert!(
        (19.8..=20.5).contains(&waited),
        "sent on after {waited:.2} s in the queue, max_wait 20 s"
    );
    d.wait_idle(Duration::from_secs(3));
    let exits: Vec<_> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "queue_exit")
        .collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].3.as_deref(), Some("general"));
    assert_eq!(exits[0].4["reason"], "timeout");
    let callbacks: Vec<_> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "callback")
        .collect();
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].4["outcome"], "requested");
    assert_eq!(callbacks[0].3.as_deref(), Some("general"));
}

#[test]
fn a_queue_configured_sorry_plays_it_and_hangs_up() {
    let d = Daemon::start(&[
        ("HOTLINE__QUEUES__GENERAL__MAX_WAIT_S", "6"),
        ("HOTLINE__QUEUES__GENERAL__HOLD_PROMPT_EVERY_S", "60"),
        ("HOTLINE__QUEUES__GENERAL__ON_TIMEOUT", "sorry"),
    ]);
    let (heard, hold_at) = wait_in_general(&d);
    let (sorry_at, c) = find_prompt(&heard, &prompt_pcm("sorry-busy"), hold_at).unwrap();
    assert!(c > 0.95, "sorry heard ({c:.3})");
    let waited = (sorry_at - hold_at) as f64 / 8000.0;
    assert!(
        (5.8..=6.5).contains(&waited),
        "sorry after {waited:.2} s in the queue, max_wait 6 s"
    );
    d.wait_idle(Duration::from_secs(3));
}
