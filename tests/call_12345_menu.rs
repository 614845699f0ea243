//! A caller dials 12345, hears the welcome and the menu, presses 1 during the menu prompt
//! (RFC 4733), and is taken to the queue: checked on the audio the caller receives.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn welcome_menu_and_dtmf_barge_in_reach_the_queue() {
    let d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let welcome = prompt_frames("welcome");
    let press_after_ms = welcome as u64 * 20 + 2000; // two seconds into the menu prompt
    let hold_ms = press_after_ms + 4000;
    let (port, hold) = (sink.port.to_string(), hold_ms.to_string());
    let sip = std::thread::scope(|s| {
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call.xml",
                "12345",
                &["-key", "rtp_port", &port, "-d", &hold],
            )
        });
        let from = sink.wait_first(Duration::from_secs(10));
        let t0 = sink.packets()[0].at;
        std::thread::sleep(
            (t0 + Duration::from_millis(press_after_ms))
                .saturating_duration_since(std::time::Instant::now()),
        );
        sink.send_dtmf(from, '1', 1000, 80_000);
        run.join().unwrap()
    });
    assert_sipp_ok(&sip, &d);
    let packets = sink.packets();
    let worst = check_stream(&packets, Duration::from_millis(100));
    eprintln!("{} packets, worst gap {worst:?}", packets.len());
    let heard = decode_pcmu(&packets);
    assert_heard_at(&heard, "welcome", 0);
    assert_heard_at(&heard, "menu-main", welcome * 160);
    // The key press stops the menu prompt and the queue's "please hold" starts right away.
    let press_at = press_after_ms as usize * 8;
    let (at, c) = find_prompt(&heard, &prompt_pcm("please-hold"), welcome * 160).unwrap();
    assert!(c > 0.95, "please-hold not heard (best {c:.3})");
    assert!(
        at >= press_at && at <= press_at + 8 * 600,
        "please-hold at {} ms, key pressed at {} ms",
        at / 8,
        press_at / 8
    );
    assert_eq!(
        d.metric("hotline_dtmf_digits_total"),
        1,
        "one press, redundant end packets ignored"
    );
    d.wait_idle(Duration::from_secs(5));
    assert!(
        d.log_text().contains("digits=\"1\"") || d.log_text().contains("digits=1"),
        "call record shows the digit"
    );
}
