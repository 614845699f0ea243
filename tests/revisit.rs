//! Revisit calls (回访): cases posted to `/api/revisits` are called over the outbound trunk
//! (a SIPp citizen whose media is an RtpSink) only within the allowed hours, asked the
//! satisfaction survey, and rated; a 不满意 (key 3) costs the case's unit a point of 客户满意度
//! in `hotline report`, as seed 004's rules say. A bad batch is refused whole, with a reason
//! for each bad case. The daemon's wall clock starts at HOTLINE_NOW.
mod common;
use common::*;
use std::time::{Duration, Instant};

fn request(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (code, json)
}

/// The shipped configuration with its outbound trunk at `port`.
fn daemon(port: u16, now: &str) -> Daemon {
    Daemon::start_edited(
        |c| c.replace("127.0.0.1:5073", &format!("127.0.0.1:{port}")),
        &[("HOTLINE_NOW", now)],
    )
}

#[test]
fn a_bad_batch_is_refused_whole_with_a_reason_for_each_bad_case() {
    let d = daemon(free_port(), "2026-12-15T10:00:00+08:00");
    let batch = r#"[
        {"case":"OK-1","number":"13800138000","unit":"省司法厅","due":"2026-12-20"},
        {"case":"BAD-UNIT","number":"13800138000","unit":"火星办","due":"2026-12-20"},
        {"case":"BAD-NUMBER","number":"138-0013","unit":"省司法厅","due":"2026-12-20"},
        {"case":"OK-1","number":"13800138001","unit":"省司法厅","due":"2026-12-20"}
    ]"#;
    let (code, body) = request(&d, "POST", "/api/revisits", batch);
    assert_eq!(code, 400, "{body}");
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("BAD-UNIT") && reasons[0].contains("unknown unit"));
    assert!(reasons[1].contains("BAD-NUMBER") && reasons[1].contains("malformed number"));
    assert!(reasons[2].contains("OK-1") && reasons[2].contains("duplicate"));
    // Nothing of it was stored: the good case is unknown, and can be posted on its own.
    let (code, _) = request(&d, "GET", "/api/revisits/OK-1", "");
    assert_eq!(code, 404);
    assert!(d.stored_events().iter().all(|e| e.0 != "revisit"));
    let (code, body) = request(
        &d,
        "POST",
        "/api/revisits",
        r#"[{"case":"OK-1","number":"13800138000","unit":"省司法厅","due":"2026-12-20"}]"#,
    );
    assert_eq!((code, body["accepted"].as_u64()), (202, Some(1)), "{body}");
    let (code, body) = request(&d, "GET", "/api/revisits/OK-1", "");
    assert_eq!((code, body["state"].as_str()), (200, Some("pending")));
    // Not a JSON array: 400 with the parser's reason; without the token: 401.
    let (code, body) = request(&d, "POST", "/api/revisits", "{}");
    assert_eq!(code, 400, "{body}");
    let out = d
        .http_get_with("/api/revisits/OK-1", None)
        .unwrap_or_default();
    assert!(!out.contains("pending"), "{out}");
}

#[test]
fn a_revisit_waits_for_9_00_and_a_3_lowers_the_unit_s_satisfaction_score() {
    let trunk = free_port();
    // 08:59:53 in Shanghai: the case is due today, but nobody is called before 09:00.
    let d = daemon(trunk, "2026-12-15T08:59:53+08:00");
    let citizen = RtpSink::new();
    let phone = sipp_uas_with(
        &d,
        "citizen_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &citizen.port.to_string(), "-d", "300"],
    );
    let posted = Instant::now();
    let (code, body) = request(
        &d,
        "POST",
        "/api/revisits",
        r#"[{"case":"GS-2026-0001","number":"13800138000","unit":"省司法厅","due":"2026-12-15"}]"#,
    );
    assert_eq!((code, body["accepted"].as_u64()), (202, Some(1)), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let (_, before) = request(&d, "GET", "/api/revisits/GS-2026-0001", "");
    assert_eq!(
        (before["state"].as_str(), before["attempts"].as_u64()),
        (Some("pending"), Some(0)),
        "still before 09:00: {before}"
    );
    assert!(citizen.packets().is_empty(), "nobody called before 09:00");
    let from_daemon = citizen.wait_first(Duration::from_secs(20));
    let waited = posted.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "the call came at 09:00, {waited:?} after the post"
    );
    let (_, during) = request(&d, "GET", "/api/revisits/GS-2026-0001", "");
    assert_eq!(during["state"], "calling", "{during}");
    // The citizen listens to the question, then keys 3 (不满意).
    let intro_ms = prompt_frames("revisit/intro") as u64 * 20;
    std::thread::sleep(Duration::from_millis(intro_ms + 1500));
    citizen.send_dtmf(from_daemon, '3', 500, 16000);
    child_ok(
        phone,
        "the citizen (hung up by the daemon after the thanks)",
    );
    let (_, after) = request(&d, "GET", "/api/revisits/GS-2026-0001", "");
    assert_eq!(
        (
            after["state"].as_str(),
            after["attempts"].as_u64(),
            after["rating"].as_u64()
        ),
        (Some("rated"), Some(1), Some(3)),
        "{after}"
    );
    let heard = decode_pcmu(&citizen.packets());
    assert_heard_at(&heard, "revisit/intro", 0);
    // The question follows the introduction (the key barged in before its end).
    let asked = prompt_frames("revisit/intro") * 160;
    let c = correlation(&heard[asked..asked + 8000], &prompt_pcm("survey")[..8000]);
    assert!(c > 0.9, "the survey question is asked ({c:.2})");
    let (_, c) = find_prompt(&heard, &prompt_pcm("survey-thanks"), 0).expect("thanks");
    assert!(c > 0.9, "and thanks for the rating ({c:.2})");

    // Stored: the attempt at 09:00 or later, the rating as a survey of the unit and the case.
    let events = d.stored_events();
    let survey = events
        .iter()
        .find(|e| e.0 == "survey")
        .expect("survey stored");
    assert_eq!(
        (&survey.4["rating"], &survey.4["unit"], &survey.4["matter"]),
        (
            &serde_json::json!(3),
            &serde_json::json!("省司法厅"),
            &serde_json::json!("GS-2026-0001")
        )
    );
    let conn = rusqlite::Connection::open(&d.store).unwrap();
    let first_attempt: String = conn
        .query_row(
            "SELECT at FROM events WHERE kind = 'revisit' AND detail LIKE '%\"attempt\"%' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        first_attempt.as_str() >= "2026-12-15T09:00:00",
        "no call before 09:00: {first_attempt}"
    );
    // The report: 客户满意度 20 − 1 per 不满意 (seed 004 line 117) for 省司法厅.
    let dir = temp_dir(&format!("revisit-report-{trunk}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["report", "--day", "2026-12-15", "--csv"])
        .arg(&dir)
        .arg("--config")
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__STORE__PATH", &d.store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = std::fs::read_to_string(dir.join("units.csv")).unwrap();
    assert!(
        units.contains("2026-12-15,省司法厅,客户满意度,19"),
        "one 不满意 costs one of 20 points:\n{units}"
    );
    assert!(
        units.contains("2026-12-15,12345热线中心,客户满意度,20"),
        "other units keep theirs:\n{units}"
    );
}

#[test]
fn a_case_posted_in_the_evening_survives_a_crash_and_is_called_the_next_morning() {
    let trunk = free_port();
    // 20:30: past the allowed hours; the case waits.
    let mut d = daemon(trunk, "2026-12-15T20:30:00+08:00");
    let (code, body) = request(
        &d,
        "POST",
        "/api/revisits",
        r#"[{"case":"GS-2026-0002","number":"13800138000","unit":"省税务局","due":"2026-12-15"}]"#,
    );
    assert_eq!(code, 202, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let (_, v) = request(&d, "GET", "/api/revisits/GS-2026-0002", "");
    assert_eq!(v["state"], "pending", "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.stored_events().iter().any(|e| e.0 == "revisit") {
        assert!(Instant::now() < deadline, "the case is stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    let store = d.store.clone();
    // The next morning at 09:00 the node is back on the same store.
    let citizen = RtpSink::new();
    let d = Daemon::start_edited(
        |c| c.replace("127.0.0.1:5073", &format!("127.0.0.1:{trunk}")),
        &[
            ("HOTLINE_NOW", "2026-12-16T09:00:00+08:00"),
            ("HOTLINE__STORE__PATH", store.to_str().unwrap()),
        ],
    );
    let phone = sipp_uas_with(
        &d,
        "citizen_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &citizen.port.to_string(), "-d", "200"],
    );
    let from_daemon = citizen.wait_first(Duration::from_secs(70));
    std::thread::sleep(Duration::from_millis(1000));
    citizen.send_dtmf(from_daemon, '1', 500, 16000);
    child_ok(phone, "the citizen, called the next morning");
    let (_, v) = request(&d, "GET", "/api/revisits/GS-2026-0002", "");
    assert_eq!(
        (
            v["state"].as_str(),
            v["attempts"].as_u64(),
            v["rating"].as_u64()
        ),
        (Some("rated"), Some(1), Some(1)),
        "{v}"
    );
}
