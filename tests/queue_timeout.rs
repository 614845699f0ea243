//! Before the ACD exists, a queued caller hears "please hold" and hold music for the queue's
//! maximum wait, then the sorry prompt, then the daemon hangs up (never silence).
mod common;
use common::*;
use std::time::Duration;

#[test]
fn queue_plays_hold_then_sorry_then_hangs_up() {
    let d = Daemon::start(&[("HOTLINE__QUEUES__GENERAL__MAX_WAIT_S", "8"), ("HOTLINE__QUEUES__GENERAL__HOLD_PROMPT_EVERY_S", "60")]);
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| sipp(&d, "uac_call_remote_bye.xml", "12345", &["-key", "rtp_port", &port]));
        let from = sink.wait_first(Duration::from_secs(10));
        let t0 = sink.packets()[0].at;
        let press = t0 + Duration::from_millis(prompt_frames("welcome") as u64 * 20 + 1000);
        std::thread::sleep(press.saturating_duration_since(std::time::Instant::now()));
        sink.send_dtmf(from, '0', 1, 1000); // 0 = agent: the general queue
        run.join().unwrap()
    });
    assert_sipp_ok(&out, &d);
    let heard = decode_pcmu(&sink.packets());
    let (hold_at, c) = find_prompt(&heard, &prompt_pcm("please-hold"), 0).unwrap();
    assert!(c > 0.95, "please-hold heard ({c:.3})");
    let (sorry_at, c) = find_prompt(&heard, &prompt_pcm("sorry-busy"), hold_at).unwrap();
    assert!(c > 0.95, "sorry heard ({c:.3})");
    let waited = (sorry_at - hold_at) as f64 / 8000.0;
    assert!((7.8..=8.5).contains(&waited), "sorry after {waited:.2} s in the queue, max_wait 8 s");
    let music = prompt_pcm("hold-music");
    let after_hold = hold_at + prompt_frames("please-hold") * 160;
    assert!(correlation(&heard[after_hold..], &music[..8000]) > 0.95, "hold music follows the hold prompt");
    d.wait_idle(Duration::from_secs(3));
}
