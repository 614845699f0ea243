//! A retired whole-merge number: inside its 3-month window (set with HOTLINE_NOW) the caller
//! hears the transition prompt naming the old number, then 12345's welcome; outside it, the
//! welcome straight away; with `after_window = "reject"`, 410 Gone. The window at a month end:
//! merged on 31 August 2028, the prompt still plays on 30 November and the number is retired
//! on 1 December (the deployment sets both in hotline.toml [dialplan.lines]).
mod common;
use common::*;
use std::time::Duration;

/// Calls `number` with the daemon's clock at `now`; returns the PCM heard.
fn heard(now: &str, number: &str, listen_ms: u64) -> Vec<i16> {
    heard_with(now, number, listen_ms, &[])
}

fn heard_with(now: &str, number: &str, listen_ms: u64, env: &[(&str, &str)]) -> Vec<i16> {
    let mut env = env.to_vec();
    env.push(("HOTLINE_NOW", now));
    let d = Daemon::start(&env);
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "uac_call.xml",
        number,
        &[
            "-key",
            "rtp_port",
            &sink.port.to_string(),
            "-d",
            &listen_ms.to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    let packets = sink.packets();
    check_stream(&packets, Duration::from_millis(100));
    decode_pcmu(&packets)
}

fn transition_parts(number: &str) -> Vec<String> {
    let mut parts = vec!["transition/you-dialled".to_string()];
    parts.extend(number.chars().map(|c| format!("digits/{c}")));
    parts.push(format!("names/{number}"));
    parts.push("transition/merged".into());
    parts
}

fn assert_transition_then_welcome(heard: &[i16], number: &str) {
    let mut at = 0;
    for part in transition_parts(number) {
        assert_heard_at(heard, &part, at);
        at += prompt_frames(&part) * 160;
    }
    assert_heard_at(heard, "welcome", at);
}

fn transition_ms(number: &str) -> u64 {
    transition_parts(number)
        .iter()
        .map(|p| prompt_frames(p) as u64 * 20)
        .sum()
}

#[test]
fn inside_the_window_the_transition_prompt_names_the_number_then_12345_answers() {
    let ms = transition_ms("12396") + 1500;
    let h = heard("2026-12-15T10:00:00+08:00", "12396", ms);
    assert_transition_then_welcome(&h, "12396");
}

#[test]
fn last_day_of_the_window_still_has_the_prompt_for_an_area_code_number() {
    // merged 2026-12-01: three calendar months run to 2027-02-28 inclusive (Asia/Shanghai).
    let ms = transition_ms("09318929999") + 1000;
    let h = heard("2027-02-28T23:58:00+08:00", "09318929999", ms);
    assert_transition_then_welcome(&h, "09318929999");
}

#[test]
fn after_the_window_the_call_goes_straight_to_12345() {
    let h = heard("2027-03-01T00:00:30+08:00", "12396", 2500);
    assert_heard_at(&h, "welcome", 0);
    let (_, c) = find_prompt(&h, &prompt_pcm("transition/you-dialled"), 0).unwrap();
    assert!(
        c < 0.5,
        "no transition prompt after the window (correlation {c:.3})"
    );
}

#[test]
fn before_the_merge_date_there_is_no_transition_prompt() {
    let h = heard("2026-11-30T23:59:00+08:00", "12396", 2500);
    assert_heard_at(&h, "welcome", 0);
}

/// 12396 merged on 31 August 2028 and refused after its window, set where a deployment sets
/// it: `[dialplan.lines."12396"]` (here from the environment).
const MERGED_31_AUGUST: [(&str, &str); 2] = [
    ("HOTLINE__DIALPLAN__LINES__12396__MERGED_ON", "2028-08-31"),
    ("HOTLINE__DIALPLAN__LINES__12396__AFTER_WINDOW", "reject"),
];

#[test]
fn merged_on_31_august_the_prompt_plays_through_30_november() {
    // The prompt's first parts are enough to tell it from the welcome.
    let parts = &transition_parts("12396")[..3];
    let ms = parts
        .iter()
        .map(|p| prompt_frames(p) as u64 * 20)
        .sum::<u64>()
        + 600;
    let h = heard_with("2028-11-30T23:58:00+08:00", "12396", ms, &MERGED_31_AUGUST);
    let mut at = 0;
    for part in parts {
        assert_heard_at(&h, part, at);
        at += prompt_frames(part) * 160;
    }
}

#[test]
fn after_the_window_a_number_configured_to_reject_gets_410() {
    // 1 December 2028 is the first day after the window of a merge on 31 August.
    let mut env = MERGED_31_AUGUST.to_vec();
    env.push(("HOTLINE_NOW", "2028-12-01T00:00:30+08:00"));
    let d = Daemon::start(&env);
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "uac_410.xml",
        "12396",
        &["-key", "rtp_port", &sink.port.to_string()],
    );
    assert_sipp_ok(&out, &d);
    // other retired numbers keep the default: straight to 12345
    let out = sipp(
        &d,
        "uac_call.xml",
        "12300",
        &["-key", "rtp_port", &sink.port.to_string(), "-d", "500"],
    );
    assert_sipp_ok(&out, &d);
    d.wait_idle(Duration::from_secs(5));
}
