//! No call is left open in the record: a `kill -9` with calls up (one in the IVR, one waiting
//! in a queue, one talking with a seat), then a restart on the same store, closes each as lost
//! at the last moment the daemon was known alive; figures count them as lost, not as talk
//! time or abandons, and `hotline figures` equals the live figures. And at shutdown, calls
//! whose BYE nobody answers are written ended all the same.
mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A SIPp caller in the background (killed by the test).
fn caller(d: &Daemon, service: &str, rtp_port: u16) -> Child {
    Command::new("timeout")
        .arg("60")
        .arg("sipp")
        .arg(d.sip.to_string())
        .arg("-sf")
        .arg(repo().join("sipp-scenarios/uac_call.xml"))
        .args([
            "-s",
            service,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-d", "40000"])
        .args(["-key", "rtp_port", &rtp_port.to_string()])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp")
}

fn today_shanghai() -> String {
    let cst = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    chrono::Utc::now()
        .with_timezone(&cst)
        .date_naive()
        .to_string()
}

/// (kind, call_id, seat, queue, detail) of the events in the store at `path`.
fn events(
    path: &std::path::Path,
) -> Vec<(String, Option<String>, Option<String>, serde_json::Value)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, call_id, seat, detail FROM events ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        let detail: String = r.get(3)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            serde_json::from_str(&detail).unwrap(),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}


#[test]
fn a_crash_leaves_no_call_open_and_the_figures_agree_after_the_restart() {
    let mut d = Daemon::start(&[("HOTLINE__REGISTRAR__QUALIFY_S", "0")]);
    let store = d.store.clone();
    let port = free_port();
    register_from_port(&d, "1003", "demo-1003", port);
    let mut phone = sipp_uas_with(&d, "agent_bridge.xml", port, 1, &["-d", "500", "-rtp_echo"]);
    agent_api(&d, "1003", "login");
    let sinks = [RtpSink::new(), RtpSink::new(), RtpSink::new()];
    // One talks with seat 1003, one waits behind it in line-12348, one is in the 12345 menu.
    let mut callers = vec![caller(&d, "12348", sinks[0].port)];
    wait_for("the seat talks", Duration::from_secs(20), || {
        seat(&d, "1003")["state"] == "on_call"
    });
    callers.push(caller(&d, "12348", sinks[1].port));
    callers.push(caller(&d, "12345", sinks[2].port));
    wait_for("a caller waits", Duration::from_secs(20), || {
        let queues: serde_json::Value =
            serde_json::from_str(&d.http_get("/api/queues").unwrap()).unwrap();
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "line-12348" && q["waiting"] == 1)
    });
    wait_for("three calls up", Duration::from_secs(10), || {
        d.health("calls_active") == 3
    });
    std::thread::sleep(Duration::from_millis(1500)); // a heartbeat after the last event
    d.kill9();
    for c in callers.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = phone.kill();
    let _ = phone.wait();
    let before = events(&store);
    let started: Vec<&String> = before
        .iter()
        .filter(|e| e.0 == "call_start")
        .filter_map(|e| e.1.as_ref())
        .collect();
    assert_eq!(started.len(), 3);
    assert!(
        !before.iter().any(|e| e.0 == "call_end"),
        "killed: nothing ended"
    );

    // The restart on the same store closes all three as lost.
    let d2 = Daemon::start(&[("HOTLINE__STORE__PATH", store.to_str().unwrap())]);
    assert_eq!(d2.metric("hotline_calls_lost_total"), 3);
    assert!(
        d2.log_text()
            .contains("calls left open by a crash closed as lost")
    );
    let after = events(&store);
    for id in &started {
        let end: Vec<_> = after
            .iter()
            .filter(|e| e.0 == "call_end" && e.1.as_ref() == Some(id))
            .collect();
        assert_eq!(end.len(), 1, "{id} closed once: {after:?}");
        assert_eq!(end[0].3["cause"], "lost");
    }
    let lost_exit = after
        .iter()
        .filter(|e| e.0 == "queue_exit" && e.3["reason"] == "lost")
        .count();
    assert_eq!(lost_exit, 1, "the waiting caller left its queue as lost");
    let lost_talk: Vec<_> = after
        .iter()
        .filter(|e| e.0 == "talk_end" && e.3["ended_by"] == "lost")
        .collect();
    assert_eq!(lost_talk.len(), 1);
    assert_eq!(lost_talk[0].2.as_deref(), Some("1003"));
    assert_eq!(lost_talk[0].3["talk_s"], 0.0, "no talk time for a cut call");
    // Closed at the last heartbeat: after the last event before the crash (by the ~1.5 s of
    // heartbeats after it), not at the restart.
    let conn = rusqlite::Connection::open(&store).unwrap();
    let stamp = |sql: &str| -> f64 {
        let at: String = conn.query_row(sql, [], |r| r.get(0)).unwrap();
        chrono::DateTime::parse_from_rfc3339(&at)
            .unwrap()
            .timestamp_millis() as f64
            / 1000.0
    };
    let last_before = stamp(&format!(
        "SELECT MAX(at) FROM events WHERE id <= {}",
        before.len()
    ));
    let closed_at = stamp("SELECT MIN(at) FROM events WHERE kind = 'call_end'");
    let gap = closed_at - last_before;
    assert!(
        (0.5..3.0).contains(&gap),
        "closed {gap:.3} s after the last event"
    );
    let open: i64 = conn
        .query_row("SELECT COUNT(*) FROM open_calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open, 0);

    // The figures: lost, not abandoned; the same live and rebuilt from the store.
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["figures", "--json", "--day", &today_shanghai(), "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__STORE__PATH", &store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = &rebuilt["queues"]["line-12348"];
    assert_eq!(
        (q["lost"].as_u64(), q["abandoned"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(rebuilt["seats"]["1003"]["lost"], 1);
    let queues: serde_json::Value =
        serde_json::from_str(&d2.http_get("/api/queues").unwrap()).unwrap();
    let live_q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "line-12348")
        .unwrap()["today"]
        .clone();
    assert_eq!(&live_q, q, "live queue figures equal the rebuilt ones");
    assert_eq!(seat(&d2, "1003")["today"], rebuilt["seats"]["1003"]);
}

#[test]
fn at_shutdown_calls_whose_bye_nobody_answers_are_written_ended() {
    let d = Daemon::start(&[("HOTLINE__SIP__SHUTDOWN_GRACE_S", "1")]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "Via: SIP/2.0/UDP {local};branch=z9hG4bK-mute;rport\r\nFrom: <sip:13800000007@{local}>;tag=mute\r\n"
    );
    let invite = format!(
        "INVITE sip:12345@{sip} SIP/2.0\r\n{head}To: <sip:12345@{sip}>\r\nCall-ID: mute-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:13800000007@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        sip = d.sip
    );
    sock.send_to(invite.as_bytes(), d.sip).unwrap();
    let mut buf = [0u8; 4096];
    let to = loop {
        let (n, _) = sock.recv_from(&mut buf).expect("answer");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("SIP/2.0 200") {
            break text
                .lines()
                .find(|l| l.starts_with("To:"))
                .unwrap()
                .to_string();
        }
    };
    // The 200 made an offer (no SDP in the INVITE): the ACK answers it.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    let ack = format!(
        "ACK sip:12345@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-mute-ack;rport\r\n\
         From: <sip:13800000007@{local}>;tag=mute\r\n{to}\r\nCall-ID: mute-1\r\nCSeq: 1 ACK\r\n\
         Content-Type: application/sdp\r\nMax-Forwards: 70\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        sip = d.sip
    );
    sock.send_to(ack.as_bytes(), d.sip).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.health("calls_active"), 1);
    let mut d = d;
    d.sigterm();
    // This caller never answers the BYE: the daemon exits after the grace period and 5 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    assert!(
        d.log_text()
            .contains("closing calls whose BYE went unanswered")
    );
    let ends: Vec<_> = events(&d.store)
        .into_iter()
        .filter(|e| e.0 == "call_end" && e.1.as_deref() == Some("mute-1"))
        .collect();
    assert_eq!(ends.len(), 1, "written ended once");
    assert_eq!(ends[0].3["cause"], "shutdown");
    assert_eq!(ends[0].3["answered"], true);
    let conn = rusqlite::Connection::open(&d.store).unwrap();
    let open: i64 = conn
        .query_row("SELECT COUNT(*) FROM open_calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open, 0, "nothing left open for the next start to close");
}
