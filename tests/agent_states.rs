//! Agents change state from the softphone (feature codes, digest-authenticated) and through
//! the HTTP API; /api/seats shows it; a caller who is not a seat can't use the codes.
mod common;
use common::*;
use std::time::Duration;

fn feature(d: &Daemon, code: &str, seat: &str, password: &str) -> std::process::Output {
    let sink = RtpSink::new();
    sipp(
        d,
        "feature_code.xml",
        code,
        &[
            "-key",
            "seat",
            seat,
            "-au",
            seat,
            "-ap",
            password,
            "-key",
            "rtp_port",
            &sink.port.to_string(),
        ],
    )
}

fn post(d: &Daemon, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn feature_codes_from_an_authenticated_seat_change_its_state() {
    let d = Daemon::start(&[]);
    assert_eq!(seat(&d, "1001")["state"], "logged_out");
    assert_sipp_ok(&feature(&d, "*21", "1001", "demo-1001"), &d);
    assert_eq!(seat(&d, "1001")["state"], "available");
    assert_sipp_ok(&feature(&d, "*232", "1001", "demo-1001"), &d);
    let s = seat(&d, "1001");
    assert_eq!(s["state"], "paused");
    assert_eq!(s["pause_reason"], "用餐");
    assert_sipp_ok(&feature(&d, "*24", "1001", "demo-1001"), &d);
    assert_eq!(seat(&d, "1001")["state"], "available");
    assert_sipp_ok(&feature(&d, "*22", "1001", "demo-1001"), &d);
    assert_eq!(seat(&d, "1001")["state"], "logged_out");
    // wrong password, and a caller that is not a seat: 403, state unchanged
    let sink = RtpSink::new();
    let port = sink.port.to_string();
    let out = sipp(
        &d,
        "feature_code_refused.xml",
        "*21",
        &[
            "-key", "seat", "1001", "-au", "1001", "-ap", "nope", "-key", "rtp_port", &port,
        ],
    );
    assert_sipp_ok(&out, &d);
    let out = sipp(&d, "uac_407.xml", "*21", &["-key", "rtp_port", &port]);
    assert_sipp_ok(&out, &d);
    assert_eq!(seat(&d, "1001")["state"], "logged_out");
    d.wait_idle(Duration::from_secs(5));
}

#[test]
fn the_confirmation_prompt_is_heard() {
    let d = Daemon::start(&[]);
    let sink = RtpSink::new();
    let out = sipp(
        &d,
        "feature_code.xml",
        "*21",
        &[
            "-key",
            "seat",
            "1002",
            "-au",
            "1002",
            "-ap",
            "demo-1002",
            "-key",
            "rtp_port",
            &sink.port.to_string(),
        ],
    );
    assert_sipp_ok(&out, &d);
    assert_heard_at(&decode_pcmu(&sink.packets()), "agent/logged-in", 0);
}

#[test]
fn http_api_changes_state_with_clear_errors_and_a_token() {
    let d = Daemon::start(&[("HOTLINE__HTTP__TOKENS__OPS", "s3cret-token-42")]);
    let t = Some("s3cret-token-42");
    assert_eq!(
        post(&d, "/api/seats/1003/state", r#"{"action":"login"}"#, None).0,
        401
    );
    assert_eq!(
        post(&d, "/api/seats/1003/state", r#"{"action":"pause"}"#, t).0,
        409,
        "not logged in"
    );
    assert_eq!(
        post(&d, "/api/seats/1003/state", r#"{"action":"login"}"#, t),
        (200, r#"{"state":"available"}"#.to_string())
    );
    assert_eq!(
        post(
            &d,
            "/api/seats/1003/state",
            r#"{"action":"pause","reason":"培训"}"#,
            t
        )
        .0,
        200
    );
    assert_eq!(
        post(&d, "/api/seats/1003/state", r#"{"action":"dance"}"#, t).0,
        400
    );
    assert_eq!(
        post(&d, "/api/seats/9999/state", r#"{"action":"login"}"#, t).0,
        404
    );
    assert_eq!(
        post(
            &d,
            "/api/seats/1003/state",
            r#"{"action":"unpause"}"#,
            Some("s3cret-token-43")
        )
        .0,
        401,
        "wrong token"
    );
    assert!(
        d.http_get_with("/api/seats", None)
            .unwrap()
            .contains("bearer token"),
        "GET needs the token too"
    );
    assert!(
        d.http_get_with("/api/queues", Some("nope"))
            .unwrap()
            .contains("wrong bearer token")
    );
    assert!(
        d.http_get_with("/healthz", None)
            .unwrap()
            .contains("\"ok\""),
        "health stays open"
    );
    assert!(
        d.http_get_with("/metrics", None)
            .unwrap()
            .contains("hotline_calls_active"),
        "metrics stay open"
    );
    let log = d.log_text();
    assert!(
        log.contains("agent state changed") && log.contains("by=\"http api (ops)\""),
        "who did it is logged"
    );
}

#[test]
fn baresip_logs_in_with_its_own_feature_code_call() {
    let d = Daemon::start(&[]);
    let phone = Baresip::start(&d, "1004", "demo-1004");
    wait_seat(&d, "1004", Duration::from_secs(10), "registered", |s| {
        s["registered"] == true
    });
    let reply = phone.command("dial", &format!("sip:*21@{}", d.sip));
    // baresip answers with its response or first call event; the effect is checked below
    assert!(!reply.is_empty(), "ctrl_tcp answered");
    wait_seat(
        &d,
        "1004",
        Duration::from_secs(10),
        "logged in from baresip",
        |s| s["state"] == "available",
    );
}
