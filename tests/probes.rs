//! Answer-rate probes (电话接通率, seed 004) against real SIP lines: a unit whose line answers
//! scores the full 10 points; a unit whose line is busy on all three attempts of a round has
//! one failure recorded and scores 9, in the report built from the store. The targets set no
//! unit: each takes the one the Gansu list names (兰州海关, 省税务局; seed 003 lines 177, 181).
mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_round_unanswered_three_times_is_one_failure_and_costs_one_point() {
    let (up, down) = (free_port(), free_port());
    let targets = format!(
        "[trunks.up]\naddress = \"127.0.0.1:{up}\"\n[trunks.down]\naddress = \"127.0.0.1:{down}\"\n\
         [[targets]]\nnumber = \"12366\"\nname = \"税务 12366\"\nkind = \"subcentre\"\ntrunk = \"up\"\nprobe = true\n\
         [[targets]]\nnumber = \"12360\"\nname = \"海关 12360\"\nkind = \"subcentre\"\ntrunk = \"down\"\nprobe = true\n"
    );
    let d = Daemon::start_with_targets(
        &targets,
        &[
            ("HOTLINE__PROBES__ENABLED", "true"),
            ("HOTLINE__PROBES__FIRST_AFTER_S", "1"),
            ("HOTLINE__PROBES__SPACING_S", "1"),
            ("HOTLINE__PROBES__RING_TIMEOUT_S", "5"),
        ],
    );
    // One answered call on the good line (presenting 12345); three busy ones on the other.
    let answering = sipp_uas_with(
        &d,
        "probe_answer.xml",
        up,
        1,
        &["-key", "rtp_port", "9", "-d", "100"],
    );
    let busy = sipp_uas_with(&d, "trunk_busy.xml", down, 3, &[]);
    child_ok(answering, "the probed line that answers");
    child_ok(busy, "the busy line (three attempts)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rounds = loop {
        let ev = d.stored_events();
        let rounds: Vec<serde_json::Value> = ev
            .iter()
            .filter(|e| e.0 == "probe_round")
            .map(|e| e.4.clone())
            .collect();
        if rounds.len() == 2 || std::time::Instant::now() > deadline {
            break rounds;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    let by = |n: &str| rounds.iter().find(|r| r["number"] == n).cloned().unwrap();
    assert_eq!(
        (
            by("12366")["answered"].as_bool(),
            by("12366")["attempts"].as_u64()
        ),
        (Some(true), Some(1))
    );
    assert_eq!(
        (
            by("12360")["answered"].as_bool(),
            by("12360")["attempts"].as_u64()
        ),
        (Some(false), Some(3))
    );
    let attempts: Vec<(String, String)> = d
        .stored_events()
        .iter()
        .filter(|e| e.0 == "probe")
        .map(|e| {
            (
                e.4["number"].as_str().unwrap_or("").to_string(),
                e.4["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.0 == "12360" && a.1 == "busy")
            .count(),
        3,
        "{attempts:?}"
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.0 == "12366" && a.1 == "answered")
            .count(),
        1
    );
    assert_eq!(d.metric("hotline_probes_total"), 4);

    // The report: 电话接通率 10 − 1 per failure.
    let day = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d")
        .to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["report", "--day", &day])
        .env("HOTLINE__STORE__PATH", &d.store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |unit: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{unit}:")))
            .unwrap_or_else(|| panic!("no {unit} in\n{text}"))
            .to_string()
    };
    assert!(
        line("兰州海关").contains("probes 1 (unanswered 1)")
            && line("兰州海关").contains("电话接通率 9"),
        "{}",
        line("兰州海关")
    );
    assert!(
        line("省税务局").contains("probes 1 (unanswered 0)")
            && line("省税务局").contains("电话接通率 10"),
        "{}",
        line("省税务局")
    );
    assert!(text.contains("12360 海关 12360: transfers 0, answered 0 (—), failed 0, abandoned 0, ASA 0.0 s; probe rounds 1, unanswered 1"), "{text}");
}
