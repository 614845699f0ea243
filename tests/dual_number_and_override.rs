//! A dual-number line answers with its own greeting and goes to its own queue; a recorded
//! `prompts/transition/<number>.wav` replaces the composed transition prompt.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn dual_number_line_greets_with_its_own_greeting_then_queues() {
    let d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let ms = prompt_frames("greetings/12348") as u64 * 20 + 1500;
    let out = sipp(
        &d,
        "uac_call.xml",
        "12348",
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &ms.to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    let heard = decode_pcmu(&sink.packets());
    assert_heard_at(&heard, "greetings/12348", 0);
    assert_heard_at(
        &heard,
        "please-hold",
        prompt_frames("greetings/12348") * 160,
    );
}

#[test]
fn a_recorded_transition_prompt_overrides_the_composed_one() {
    let dir = temp_dir("override");
    for sub in ["", "digits", "names", "greetings", "transition", "callback"] {
        copy_dir(&repo().join("prompts").join(sub), &dir.join(sub));
    }
    // "recorded" stand-in: any other speech file will do for telling the two apart
    std::fs::copy(
        repo().join("prompts/goodbye.wav"),
        dir.join("transition/12396.wav"),
    )
    .unwrap();
    let d = Daemon::start(&[
        ("HOTLINE_NOW", "2026-12-02T08:00:00+08:00"),
        ("HOTLINE__PATHS__PROMPTS", dir.to_str().unwrap()),
    ]);
    let sink = RtpSink::new();
    let ms = prompt_frames("goodbye") as u64 * 20 + 1500;
    let out = sipp(
        &d,
        "uac_call.xml",
        "12396",
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &ms.to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    let heard = decode_pcmu(&sink.packets());
    assert_heard_at(&heard, "goodbye", 0);
    assert_heard_at(&heard, "welcome", prompt_frames("goodbye") * 160);
    d.wait_idle(Duration::from_secs(2));
}
