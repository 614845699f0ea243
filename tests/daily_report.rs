//! After midnight (Asia/Shanghai, on the daemon's clock: HOTLINE_NOW) the day before's report
//! is written by itself: a caller who gave up in a queue at 23:59 shows in it.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn the_days_report_is_written_after_midnight() {
    let d = Daemon::start(&[("HOTLINE_NOW", "2026-12-15T23:59:40+08:00")]);
    let sink = RtpSink::new();
    // 12348: greeting (~6.5 s), then the queue; the caller hangs up 9 s in: an abandon.
    let out = sipp(
        &d,
        "uac_call.xml",
        "12348",
        &["-key", "rtp_port", &sink.port.to_string(), "-d", "9000"],
    );
    assert_sipp_ok(&out, &d);
    let dir = d.store.with_extension("reports").join("2026-12-15");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !dir.join("indicators.csv").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no report in {}; log:\n{}",
            dir.display(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    assert!(
        text.contains("2026-12-15")
            && text.contains("line-12348: offered 1, answered 0, abandoned 1"),
        "{text}"
    );
    let ind = std::fs::read_to_string(dir.join("indicators.csv")).unwrap();
    assert!(
        ind.lines()
            .any(|l| l == "2026-12-15,呼损率,1.0000,0.05,operator,false"),
        "{ind}"
    );
    assert!(d.log_text().contains("daily report written"));
}
