//! One set of dialplan files, two provinces: under `anhui` 12393 is a dual-number line (seed
//! 002 line 120) greeted as its own line and queued in line-12393, while 12396 still plays the
//! transition prompt; under `gansu` 12393 is whole-merge (003 line 128) and both play it.
mod common;
use common::*;
use std::time::Duration;

const NOW: (&str, &str) = ("HOTLINE_NOW", "2026-12-15T10:00:00+08:00");

/// What a caller of `number` hears for `ms`.
fn heard(d: &Daemon, number: &str, ms: u64) -> Vec<i16> {
    let sink = RtpSink::new();
    let out = sipp(
        d,
        "uac_call.xml",
        number,
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &ms.to_string(),
        ],
    );
    assert_sipp_ok(&out, d);
    let packets = sink.packets();
    check_stream(&packets, Duration::from_millis(100));
    decode_pcmu(&packets)
}

/// The transition prompt starts: 您拨打的 and the number's first digits.
fn assert_transition_starts(h: &[i16], number: &str) {
    let mut at = 0;
    for part in ["transition/you-dialled".to_string()]
        .into_iter()
        .chain(number.chars().take(2).map(|c| format!("digits/{c}")))
    {
        assert_heard_at(h, &part, at);
        at += prompt_frames(&part) * 160;
    }
}

fn transition_start_ms() -> u64 {
    (prompt_frames("transition/you-dialled") + 2 * prompt_frames("digits/1")) as u64 * 20 + 600
}

#[test]
fn under_anhui_12393_is_its_own_line_and_12396_still_retired() {
    let d = Daemon::start(&[NOW, ("HOTLINE__DIALPLAN__PROVINCE", "anhui")]);
    let greeting = prompt_frames("greetings/12393");
    let h = heard(&d, "12393", greeting as u64 * 20 + 400);
    assert_heard_at(&h, "greetings/12393", 0);
    let (_, c) = find_prompt(&h, &prompt_pcm("transition/you-dialled"), 0).unwrap_or((0, 0.0));
    assert!(c < 0.5, "no transition prompt for 12393 in Anhui ({c:.3})");
    assert_transition_starts(&heard(&d, "12396", transition_start_ms()), "12396");
    d.wait_idle(Duration::from_secs(5));
    let queued: Vec<_> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "queue_enter")
        .map(|e| e.3.unwrap_or_default())
        .collect();
    assert_eq!(queued, ["line-12393"], "12393 queued in its own line");
}

#[test]
fn under_gansu_12393_and_12396_both_play_the_transition_prompt() {
    let d = Daemon::start(&[NOW]);
    for number in ["12393", "12396"] {
        assert_transition_starts(&heard(&d, number, transition_start_ms()), number);
    }
    d.wait_idle(Duration::from_secs(5));
}
