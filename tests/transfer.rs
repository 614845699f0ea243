//! Three-party transfer (三方转接) and the one-key emergency hand-off (一键转接), end to end:
//! SIPp callers, SIPp seat phones whose media are RtpSinks that speak (tones) and key DTMF,
//! SIPp sub-centres and emergency centres behind trunks. What each party hears is decoded
//! and checked by tone: in the three-way call each hears both others (and not itself), and
//! after the agent leaves caller and target still hear each other.
mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CALLER_HZ: f64 = 1000.0;
// Whole cycles per 20 ms frame (multiples of 50 Hz): a frame the mixer fills with silence
// because a sender's packet came a little late does not shift the tone's phase, so one
// Goertzel over seconds still sees it.
const AGENT_HZ: f64 = 400.0;
const TARGET_HZ: f64 = 1500.0;

fn targets(trunk: u16, timeout_s: u64) -> String {
    format!(
        "[trunks.subcentres]\naddress = \"127.0.0.1:{trunk}\"\n[trunks.emergency]\naddress = \"127.0.0.1:{trunk}\"\n\
         [[targets]]\nnumber = \"12366\"\nname = \"税务 12366\"\nkind = \"subcentre\"\ntrunk = \"subcentres\"\nunit = \"省税务局\"\ntimeout_s = {timeout_s}\n\
         [[targets]]\nnumber = \"110\"\nname = \"公安 110\"\nkind = \"emergency\"\ntrunk = \"emergency\"\ntimeout_s = {timeout_s}\n\
         [[targets]]\nnumber = \"8801\"\nname = \"社保专家\"\nkind = \"expert\"\nqueue = \"line-12333\"\ntimeout_s = {timeout_s}\n"
    )
}

/// PCM of the packets a sink received between two instants.
fn heard(sink: &RtpSink, from: Instant, to: Instant) -> Vec<i16> {
    let p: Vec<Packet> = sink
        .packets()
        .into_iter()
        .filter(|p| p.at >= from && p.at < to && p.pt == 0)
        .collect();
    decode_pcmu(&p)
}

fn keys(sink: &RtpSink, to: SocketAddr, code: &str) {
    for (i, c) in code.chars().enumerate() {
        sink.send_dtmf(to, c, 1000 + i as u16 * 10, 8000 * i as u32);
        std::thread::sleep(Duration::from_millis(60));
    }
}

fn port_s(p: u16) -> String {
    p.to_string()
}

/// The SIPp caller to 12348 whose media is `sink`: it speaks a 1 kHz tone for `ms` and then
/// hangs up; the SIPp run to join.
fn caller_speaks<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    d: &'scope Daemon,
    sink: &'scope RtpSink,
    ms: u64,
) -> std::thread::ScopedJoinHandle<'scope, std::process::Output> {
    let run = s.spawn(move || {
        sipp(
            d,
            "uac_call.xml",
            "12348",
            &[
                "-key",
                "rtp_port",
                &port_s(sink.port),
                "-d",
                &ms.to_string(),
            ],
        )
    });
    let to = sink.wait_first(Duration::from_secs(10));
    s.spawn(move || sink.send_tone(to, CALLER_HZ, ms - 500));
    run
}

/// Seat 1003 registered from a fresh port (where a SIPp seat phone then answers) and logged
/// in; the port.
fn sipp_seat(d: &Daemon) -> u16 {
    let port = free_port();
    register_contact(d, "1003", "demo-1003", port, port, 300);
    agent_api(d, "1003", "login");
    port
}

/// Seat 1004 (the only member of queue line-12333, the expert group 8801) registered from a
/// fresh port and logged in; the port.
fn expert_seat(d: &Daemon) -> u16 {
    let port = free_port();
    register_contact(d, "1004", "demo-1004", port, port, 300);
    agent_api(d, "1004", "login");
    port
}

#[test]
fn three_way_by_dtmf_each_hears_both_others_then_caller_and_target_stay() {
    let trunk = free_port();
    let recordings = temp_dir("recordings");
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[
            ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
            ("HOTLINE__QUEUES__LINE-12348__RECORD", "true"),
            ("HOTLINE__ACD__RECORDINGS", recordings.to_str().unwrap()),
        ],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent_sink, target) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // Agent: talks 12 s then hangs up (leaves the three-way call); target rings 1 s.
    let agent = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent_sink.port), "-d", "12000"],
    );
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port), "-d", "1000"],
    );
    let caller_ms = greeting_ms + 21000;
    let (answered_at, conf_from, conf_to, after_from, after_to) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        // Bridged: the agent hears the caller through the daemon's leg port.
        let agent_from = agent_sink.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let answered_at = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        keys(&agent_sink, agent_from, "*12366#");
        let a = &agent_sink;
        s.spawn(move || a.send_tone(agent_from, AGENT_HZ, 11000));
        let target_from = target.wait_first(Duration::from_secs(10));
        let t = &target;
        s.spawn(move || t.send_tone(target_from, TARGET_HZ, 15000));
        let up = Instant::now();
        // The agent leaves 12 s after answering.
        let agent_leaves = answered_at + Duration::from_millis(12000);
        let after_from = agent_leaves + Duration::from_millis(1500);
        let windows = (
            answered_at,
            up + Duration::from_millis(1500),
            agent_leaves - Duration::from_millis(500),
            after_from,
            after_from + Duration::from_millis(3000),
        );
        assert_sipp_ok(&run.join().unwrap(), &d);
        windows
    });
    child_ok(agent, "agent");
    child_ok(centre, "sub-centre (must see the caller's number)");
    assert!(
        conf_to > conf_from + Duration::from_secs(3),
        "the three-way call lasted long enough to check"
    );

    let share = |pcm: &[i16], hz: f64| tone_share(pcm, hz);
    let c = heard(&caller, conf_from, conf_to);
    let a = heard(&agent_sink, conf_from, conf_to);
    let t = heard(&target, conf_from, conf_to);
    let log = d.log_text();
    eprintln!(
        "conference: caller hears agent {:.2} target {:.2} self {:.2}; agent hears caller {:.2} target {:.2}; target hears caller {:.2} agent {:.2}; samples {} {} {}",
        share(&c, AGENT_HZ),
        share(&c, TARGET_HZ),
        share(&c, CALLER_HZ),
        share(&a, CALLER_HZ),
        share(&a, TARGET_HZ),
        share(&t, CALLER_HZ),
        share(&t, AGENT_HZ),
        c.len(),
        a.len(),
        t.len()
    );
    assert!(
        share(&c, AGENT_HZ) > 0.2 && share(&c, TARGET_HZ) > 0.2,
        "caller hears agent {:.2} and target {:.2}\n{}",
        share(&c, AGENT_HZ),
        share(&c, TARGET_HZ),
        tail(&log, 40)
    );
    assert!(
        share(&c, CALLER_HZ) < 0.05,
        "caller does not hear itself ({:.2})",
        share(&c, CALLER_HZ)
    );
    assert!(
        share(&a, CALLER_HZ) > 0.2 && share(&a, TARGET_HZ) > 0.2,
        "agent hears caller {:.2} and target {:.2}",
        share(&a, CALLER_HZ),
        share(&a, TARGET_HZ)
    );
    assert!(
        share(&t, CALLER_HZ) > 0.2 && share(&t, AGENT_HZ) > 0.2,
        "target hears caller {:.2} and agent {:.2}",
        share(&t, CALLER_HZ),
        share(&t, AGENT_HZ)
    );
    // After the agent left: caller and target, each hearing the other.
    let c = heard(&caller, after_from, after_to);
    let t = heard(&target, after_from, after_to);
    assert!(
        c.len() > 8000 * 2 && t.len() > 8000 * 2,
        "audio after the agent left: {} / {} samples",
        c.len(),
        t.len()
    );
    assert!(
        share(&c, TARGET_HZ) > 0.5,
        "caller hears the target after the agent left ({:.2})",
        share(&c, TARGET_HZ)
    );
    assert!(
        share(&t, CALLER_HZ) > 0.5,
        "target hears the caller after the agent left ({:.2})",
        share(&t, CALLER_HZ)
    );
    assert!(d.metric("hotline_rtp_mixed_total") > 3 * 100);

    // The recording goes on through the transfer: the caller on the left throughout; on the
    // right what the caller heard, the agent and the target in the three-way call, then the
    // target. (It starts when the agent answered.)
    let (left, right) = recording_in(&recordings);
    let at = |i: Instant| (i.duration_since(answered_at).as_secs_f64() * 8000.0) as usize;
    let part =
        |v: &[i16], a: Instant, b: Instant| v[at(a).min(v.len())..at(b).min(v.len())].to_vec();
    let (l, r) = (
        part(&left, conf_from, conf_to),
        part(&right, conf_from, conf_to),
    );
    assert!(
        l.len() > 8000 * 2 && share(&l, CALLER_HZ) > 0.5,
        "caller recorded in the three-way call: {} samples, {:.2}",
        l.len(),
        share(&l, CALLER_HZ)
    );
    assert!(
        share(&r, AGENT_HZ) > 0.2 && share(&r, TARGET_HZ) > 0.2 && share(&r, CALLER_HZ) < 0.05,
        "the three-way call's other side recorded: agent {:.2}, target {:.2}, caller {:.2}",
        share(&r, AGENT_HZ),
        share(&r, TARGET_HZ),
        share(&r, CALLER_HZ)
    );
    let (l, r) = (
        part(&left, after_from, after_to),
        part(&right, after_from, after_to),
    );
    assert!(
        share(&l, CALLER_HZ) > 0.5 && share(&r, TARGET_HZ) > 0.5,
        "after the agent left: caller {:.2} and target {:.2} recorded ({} samples in all)",
        share(&l, CALLER_HZ),
        share(&r, TARGET_HZ),
        left.len()
    );

    // Figures: the agent transferred one answered call; the sub-centre answered one transfer.
    let view = wait_seat(
        &d,
        "1003",
        Duration::from_secs(10),
        "agent free after wrap-up",
        |s| s["state"] == "available",
    );
    assert_eq!(view["today"]["transferred"], 1);
    assert_eq!(view["today"]["answered"], 1);
    d.wait_idle(Duration::from_secs(5));
    let events = d.stored_events();
    let tr: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| &e.4)
        .collect();
    assert_eq!(tr.len(), 2, "{tr:?}");
    assert_eq!(
        (
            tr[0]["outcome"].as_str(),
            tr[0]["number"].as_str(),
            tr[0]["caller"].as_str()
        ),
        (Some("started"), Some("12366"), Some("13800138000"))
    );
    assert_eq!(tr[0]["by"], "seat 1003 (DTMF)");
    assert_eq!(tr[1]["outcome"], "answered");
    assert!(tr[1]["answer_s"].as_f64().unwrap() >= 1.0);
}

#[test]
fn busy_target_brings_the_agent_back_to_the_caller_with_a_failure_prompt() {
    let tr = target_not_reached("12366", "trunk_busy.xml", 20, 0);
    assert_eq!(
        tr.iter()
            .map(|t| t["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["started", "busy"]
    );
    assert_eq!(tr[1]["code"], 486);
}

#[test]
fn target_not_answering_in_time_is_cancelled_and_the_agent_has_the_caller_back() {
    let tr = target_not_reached("12366", "trunk_no_answer.xml", 3, 3000);
    assert_eq!(
        tr.iter()
            .map(|t| t["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["started", "no_answer"]
    );
    let ring_s = tr[1]["ring_s"].as_f64().unwrap();
    assert!(
        (2.9..4.5).contains(&ring_s),
        "cancelled at the target's 3 s timeout, not at {ring_s} s"
    );
}

#[test]
fn expert_group_not_answering_in_time_gives_the_caller_back_to_the_agent() {
    let tr = target_not_reached("8801", "agent_ring_cancelled.xml", 3, 3000);
    assert_eq!(
        tr.iter()
            .map(|t| t["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["started", "no_answer"]
    );
    let ring_s = tr[1]["ring_s"].as_f64().unwrap();
    assert!(
        (2.9..4.5).contains(&ring_s),
        "given up at the group's 3 s timeout, not at {ring_s} s"
    );
}

/// The agent keys a transfer to `number` (12366: a sub-centre; 8801: the expert group whose
/// only seat 1004 is logged in) whose phone plays `scenario` (busy, or rings past
/// `timeout_s`): the agent hears "transfer failed", then the caller again; the report counts
/// the failure. The stored transfer records.
fn target_not_reached(
    number: &str,
    scenario: &str,
    timeout_s: u64,
    ring_ms: u64,
) -> Vec<serde_json::Value> {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, timeout_s),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // The caller hangs up first (the daemon then hangs up the agent's phone).
    let mut agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "60000"],
    );
    let far_port = if number == "8801" {
        expert_seat(&d)
    } else {
        trunk
    };
    let centre = sipp_uas_with(&d, scenario, far_port, 1, &[]);
    let caller_ms = greeting_ms + 9000 + ring_ms;
    let (keyed, back_from) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        let from = agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let keyed = Instant::now();
        keys(&agent, from, &format!("*{number}#"));
        let back_from = keyed
            + Duration::from_millis(ring_ms + prompt_frames("transfer/failed") as u64 * 20 + 1500);
        assert_sipp_ok(&run.join().unwrap(), &d);
        (keyed, back_from)
    });
    let _ = agent_sipp.kill();
    child_ok(centre, scenario);
    // The agent heard "transfer failed", then the caller again.
    let after: Vec<Packet> = agent
        .packets()
        .into_iter()
        .filter(|p| p.at >= keyed)
        .collect();
    let pcm = decode_pcmu(&after);
    let failed = prompt_pcm("transfer/failed");
    let found = find_prompt(&pcm, &failed, 0);
    assert!(
        found.is_some_and(|(_, c)| c > 0.8),
        "agent hears transfer/failed: {found:?}"
    );
    let back = heard(&agent, back_from, back_from + Duration::from_secs(2));
    assert!(
        tone_share(&back, CALLER_HZ) > 0.5,
        "agent hears the caller again ({:.2})",
        tone_share(&back, CALLER_HZ)
    );
    d.wait_idle(Duration::from_secs(5));
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["report", "--day", &today()])
        .env("HOTLINE__STORE__PATH", &d.store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    let name = if number == "8801" {
        "社保专家"
    } else {
        "税务 12366"
    };
    assert!(
        text.contains(&format!(
            "{number} {name}: transfers 1, answered 0 (0.0%), failed 1"
        )),
        "{text}"
    );
    d.stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4)
        .collect()
}

fn today() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d")
        .to_string()
}

#[test]
fn caller_hanging_up_during_the_transfer_cancels_the_target_and_frees_the_agent() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // The agent would talk long; the caller hangs up 3 s after the transfer starts.
    let mut agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "60000"],
    );
    let centre = sipp_uas_with(&d, "trunk_no_answer.xml", trunk, 1, &[]);
    let caller_ms = greeting_ms + 6000;
    std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        let from = agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        keys(&agent, from, "*12366#");
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    // The target got its CANCEL (the scenario ends with it) and the agent its BYE.
    child_ok(centre, "sub-centre cancelled");
    d.wait_idle(Duration::from_secs(5));
    let view = wait_seat(&d, "1003", Duration::from_secs(10), "agent free", |s| {
        s["state"] == "available"
    });
    assert_eq!(view["today"]["answered"], 1);
    let _ = agent_sipp.kill();
    let events = d.stored_events();
    let tr: Vec<&str> = events
        .iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(tr, ["started", "abandoned"]);
    assert_eq!(d.health("calls_active"), 0);
}

#[test]
fn emergency_hand_off_by_api_presents_the_caller_and_is_audited() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent, operator) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "6000"],
    );
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(operator.port), "-d", "200"],
    );
    let caller_ms = greeting_ms + 10000;
    std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        // A non-emergency number is refused by the hand-off endpoint; 110 goes.
        let (code, body) = api_post(&d, "/api/seats/1003/handoff", r#"{"number":"12366"}"#);
        assert_eq!(code, 409, "{body}");
        let (code, body) = api_post(&d, "/api/seats/1003/handoff", r#"{"number":"1100"}"#);
        assert_eq!(code, 404, "exact numbers only: {body}");
        let (code, body) = api_post(&d, "/api/seats/1003/handoff", r#"{"number":"110"}"#);
        assert_eq!(code, 200, "{body}");
        let from = operator.wait_first(Duration::from_secs(5));
        let o = &operator;
        s.spawn(move || o.send_tone(from, TARGET_HZ, 6000));
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    child_ok(agent_sipp, "agent");
    child_ok(centre, "110 (must see the caller's number)");
    let pcm = decode_pcmu(&caller.packets());
    assert!(
        tone_share(&pcm[pcm.len().saturating_sub(16000)..], TARGET_HZ) > 0.5,
        "the caller ends up talking with 110"
    );
    d.wait_idle(Duration::from_secs(5));
    let events = d.stored_events();
    let tr: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| &e.4)
        .collect();
    assert_eq!(
        (
            tr[0]["kind"].as_str(),
            tr[0]["by"].as_str(),
            tr[0]["caller"].as_str()
        ),
        (
            Some("emergency"),
            Some("http api (tests)"),
            Some("13800138000")
        )
    );
    assert_eq!(tr[1]["outcome"], "answered");
    let log = d.log_text();
    let audit = log
        .lines()
        .find(|l| l.contains("EMERGENCY HAND-OFF started"))
        .expect("audit line in the log");
    assert!(
        audit.contains("138****8000") && !audit.contains("13800138000"),
        "the audit line masks the caller: {audit}"
    );
}

fn api_post(d: &Daemon, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

#[test]
fn callers_can_neither_transfer_nor_use_the_daemon_as_a_relay() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let sock = std::net::UdpSocket::bind(("127.0.0.1", trunk)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // An unknown source dialling a target number is challenged (only a seat may call one, to
    // consult it before an attended transfer; the answer does not tell seats from others),
    // and any other number outside the dialplan gets 404: the daemon never places a call for
    // it (toll fraud).
    for number in ["110", "12366"] {
        let out = sipp(&d, "uac_407.xml", number, &["-key", "rtp_port", "9"]);
        assert_sipp_ok(&out, &d);
    }
    for number in ["0086138000", "900012366", "1100"] {
        let out = sipp(&d, "uac_404.xml", number, &["-key", "rtp_port", "9"]);
        assert_sipp_ok(&out, &d);
    }
    // No INVITE reached the trunk.
    let mut buf = [0u8; 2048];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "nothing sent to the trunk"
    );
    // A REFER outside a seat's dialog is refused.
    let out = sipp(&d, "refer_forbidden.xml", "12345", &[]);
    assert_sipp_ok(&out, &d);
    assert_eq!(
        d.stored_events()
            .iter()
            .filter(|e| e.0 == "transfer")
            .count(),
        0
    );
}

/// Digits keyed on a baresip phone during its call (RFC 4733, one `sndcode` per key, as a
/// person presses them).
fn baresip_keys(phone: &Baresip, code: &str) {
    for c in code.chars() {
        phone.command("sndcode", &c.to_string());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What baresip decoded during its call (its sndfile dump), once the call is over.
fn baresip_heard(phone: &Baresip) -> Vec<i16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dumps: Vec<std::path::PathBuf> = std::fs::read_dir(&phone.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = dumps
            .first()
            .filter(|p| hound::WavReader::open(p).is_ok_and(|r| r.len() > 0))
        {
            return wav_pcm(p);
        }
        assert!(
            Instant::now() < deadline,
            "baresip wrote no recording of what it heard\n{}",
            tail(&phone.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A baresip agent logged in as seat 1003 (expert seat of line-12348), its microphone a tone.
fn baresip_agent(d: &Daemon) -> Baresip {
    let phone = Baresip::start_with_tone(d, "1003", "demo-1003", AGENT_HZ as u32);
    wait_seat(
        d,
        "1003",
        Duration::from_secs(10),
        "baresip registered",
        |s| s["registered"] == true,
    );
    agent_api(d, "1003", "login");
    phone
}

#[test]
fn baresip_agent_keys_the_code_on_its_keypad_and_all_three_hear_each_other() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(&targets(trunk, 20), &[]);
    let phone = baresip_agent(&d);
    let (caller, target) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port), "-d", "1000"],
    );
    let caller_ms = greeting_ms + 22000;
    let (conf, after) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        wait_seat(
            &d,
            "1003",
            Duration::from_secs(greeting_ms / 1000 + 10),
            "baresip answered",
            |s| s["state"] == "on_call",
        );
        std::thread::sleep(Duration::from_millis(1000));
        baresip_keys(&phone, "*12366#");
        let target_from = target.wait_first(Duration::from_secs(10));
        let t = &target;
        s.spawn(move || t.send_tone(target_from, TARGET_HZ, 14000));
        let up = Instant::now();
        std::thread::sleep(Duration::from_millis(7000));
        // The agent hangs up on its phone: caller and target stay.
        phone.command("hangup", "");
        let left = Instant::now();
        std::thread::sleep(Duration::from_millis(4500));
        let windows = (
            (
                up + Duration::from_millis(1500),
                left - Duration::from_millis(300),
            ),
            (
                left + Duration::from_millis(1000),
                left + Duration::from_millis(4000),
            ),
        );
        assert_sipp_ok(&run.join().unwrap(), &d);
        windows
    });
    child_ok(centre, "sub-centre (must see the caller's number)");
    let c = heard(&caller, conf.0, conf.1);
    let t = heard(&target, conf.0, conf.1);
    let log = d.log_text();
    assert!(
        tone_share(&c, AGENT_HZ) > 0.2 && tone_share(&c, TARGET_HZ) > 0.2,
        "caller hears agent {:.2} and target {:.2}\n{}",
        tone_share(&c, AGENT_HZ),
        tone_share(&c, TARGET_HZ),
        tail(&log, 30)
    );
    assert!(
        tone_share(&t, CALLER_HZ) > 0.2 && tone_share(&t, AGENT_HZ) > 0.2,
        "target hears caller {:.2} and agent {:.2}",
        tone_share(&t, CALLER_HZ),
        tone_share(&t, AGENT_HZ)
    );
    assert!(
        tone_share(&c, CALLER_HZ) < 0.05 && tone_share(&t, TARGET_HZ) < 0.05,
        "nobody hears itself"
    );
    // The agent's phone heard both others in the last seconds before it hung up.
    let a = baresip_heard(&phone);
    let conf_len = (conf.1 - conf.0).as_millis() as usize * 8;
    assert!(
        a.len() > conf_len + 8000,
        "baresip heard {} samples",
        a.len()
    );
    let a = &a[a.len() - conf_len..a.len() - 4000];
    assert!(
        tone_share(a, CALLER_HZ) > 0.2 && tone_share(a, TARGET_HZ) > 0.2,
        "the baresip agent hears caller {:.2} and target {:.2}",
        tone_share(a, CALLER_HZ),
        tone_share(a, TARGET_HZ)
    );
    let c = heard(&caller, after.0, after.1);
    let t = heard(&target, after.0, after.1);
    assert!(
        tone_share(&c, TARGET_HZ) > 0.5 && tone_share(&t, CALLER_HZ) > 0.5,
        "after the agent left: caller hears target {:.2}, target hears caller {:.2}",
        tone_share(&c, TARGET_HZ),
        tone_share(&t, CALLER_HZ)
    );
    d.wait_idle(Duration::from_secs(5));
    let tr: Vec<serde_json::Value> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4)
        .collect();
    assert_eq!(
        (tr[0]["by"].as_str(), tr[0]["mode"].as_str()),
        (Some("seat 1003 (DTMF)"), Some("three_way"))
    );
    assert_eq!(tr[1]["outcome"], "answered");
    assert_eq!(seat(&d, "1003")["today"]["transferred"], 1);
}

#[test]
fn baresip_agent_transfers_with_its_own_transfer_command() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(&targets(trunk, 20), &[]);
    let phone = baresip_agent(&d);
    let (caller, target) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port), "-d", "1000"],
    );
    let caller_ms = greeting_ms + 14000;
    let (window, seat_after) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        wait_seat(
            &d,
            "1003",
            Duration::from_secs(greeting_ms / 1000 + 10),
            "baresip answered",
            |s| s["state"] == "on_call",
        );
        std::thread::sleep(Duration::from_millis(1000));
        // baresip's own transfer: REFER with Refer-To sip:12366@<the daemon>.
        let reply = phone.command("transfer", "12366");
        let target_from = target.wait_first(Duration::from_secs(10));
        let t = &target;
        s.spawn(move || t.send_tone(target_from, TARGET_HZ, 7000));
        let up = Instant::now();
        // Blind: once the target answered, the agent is off the call and can take the next.
        let seat_after = wait_seat(
            &d,
            "1003",
            Duration::from_secs(5),
            "agent released by the transfer",
            |s| s["state"] != "on_call",
        );
        std::thread::sleep(Duration::from_millis(4000));
        assert_sipp_ok(&run.join().unwrap(), &d);
        (
            (
                up + Duration::from_millis(1000),
                up + Duration::from_millis(4000),
            ),
            (seat_after, reply),
        )
    });
    child_ok(centre, "sub-centre (must see the caller's number)");
    let c = heard(&caller, window.0, window.1);
    let t = heard(&target, window.0, window.1);
    assert!(
        tone_share(&c, TARGET_HZ) > 0.5 && tone_share(&t, CALLER_HZ) > 0.5,
        "caller hears target {:.2}, target hears caller {:.2}\n{}",
        tone_share(&c, TARGET_HZ),
        tone_share(&t, CALLER_HZ),
        tail(&d.log_text(), 30)
    );
    assert!(
        tone_share(&c, AGENT_HZ) < 0.05,
        "the agent is no longer on the call ({:.2})",
        tone_share(&c, AGENT_HZ)
    );
    assert!(
        ["wrap_up", "available"].contains(&seat_after.0["state"].as_str().unwrap_or("")),
        "{:?} (baresip: {})",
        seat_after.0,
        seat_after.1
    );
    // baresip was told the transfer went through (NOTIFY with a 200 sipfrag) and its call ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !phone.log_text().contains("terminated") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = phone.log_text();
    assert!(
        said.contains("terminated") && !said.contains("transfer fail"),
        "baresip's view of its transfer:\n{}",
        tail(&said, 15)
    );
    d.wait_idle(Duration::from_secs(5));
    let tr: Vec<serde_json::Value> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4)
        .collect();
    assert_eq!(
        (
            tr[0]["by"].as_str(),
            tr[0]["mode"].as_str(),
            tr[0]["caller"].as_str()
        ),
        (
            Some("seat 1003 (REFER)"),
            Some("blind"),
            Some("13800138000")
        )
    );
    assert_eq!(tr[1]["outcome"], "answered");
    let view = wait_seat(&d, "1003", Duration::from_secs(10), "agent free", |s| {
        s["state"] == "available"
    });
    assert_eq!(
        (
            view["today"]["answered"].as_u64(),
            view["today"]["transferred"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[test]
fn agent_hanging_up_while_the_target_rings_leaves_the_caller_to_the_target() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent, target) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // The agent hangs up 2.5 s after answering, while the target (ringing 5 s) has not answered.
    let agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "2500"],
    );
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port), "-d", "5000"],
    );
    let caller_ms = greeting_ms + 14000;
    let (seat_while_ringing, window) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        let from = agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        keys(&agent, from, "*12366#");
        // The agent is gone (wrap-up) while the target still rings.
        let seat = wait_seat(&d, "1003", Duration::from_secs(5), "agent released", |s| {
            s["state"] != "on_call"
        });
        let target_from = target.wait_first(Duration::from_secs(10));
        let t = &target;
        s.spawn(move || t.send_tone(target_from, TARGET_HZ, 6000));
        let up = Instant::now();
        assert_sipp_ok(&run.join().unwrap(), &d);
        (
            seat,
            (
                up + Duration::from_millis(1000),
                up + Duration::from_millis(4000),
            ),
        )
    });
    child_ok(agent_sipp, "agent");
    child_ok(centre, "sub-centre (must see the caller's number)");
    assert!(
        ["wrap_up", "available"].contains(&seat_while_ringing["state"].as_str().unwrap_or("")),
        "{seat_while_ringing}"
    );
    // Until the target answered the caller heard "transferring you" (then hold music).
    let pcm = decode_pcmu(&caller.packets());
    let connecting = prompt_pcm("transfer/connecting");
    assert!(
        find_prompt(&pcm, &connecting, 0).is_some_and(|(_, c)| c > 0.8),
        "caller hears transfer/connecting"
    );
    let c = heard(&caller, window.0, window.1);
    let t = heard(&target, window.0, window.1);
    assert!(
        tone_share(&c, TARGET_HZ) > 0.5 && tone_share(&t, CALLER_HZ) > 0.5,
        "caller hears target {:.2}, target hears caller {:.2}",
        tone_share(&c, TARGET_HZ),
        tone_share(&t, CALLER_HZ)
    );
    d.wait_idle(Duration::from_secs(5));
    let tr: Vec<String> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(tr, ["started", "answered"]);
    let view = wait_seat(&d, "1003", Duration::from_secs(10), "agent free", |s| {
        s["state"] == "available"
    });
    assert_eq!(view["today"]["transferred"], 1);
}

#[test]
fn agent_gone_and_target_not_answering_the_caller_is_told_and_hung_up() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 4),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "1500"],
    );
    let centre = sipp_uas_with(&d, "trunk_no_answer.xml", trunk, 1, &[]);
    std::thread::scope(|s| {
        // This caller waits for the daemon's BYE.
        let run = s.spawn(|| {
            sipp(
                &d,
                "uac_call_remote_bye.xml",
                "12348",
                &["-key", "rtp_port", &port_s(caller.port)],
            )
        });
        let to = caller.wait_first(Duration::from_secs(10));
        let c = &caller;
        s.spawn(move || c.send_tone(to, CALLER_HZ, greeting_ms + 4000));
        let from = agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        keys(&agent, from, "*12366#");
        assert_sipp_ok(&run.join().unwrap(), &d);
    });
    child_ok(agent_sipp, "agent");
    child_ok(centre, "sub-centre cancelled at its timeout");
    let pcm = decode_pcmu(&caller.packets());
    let sorry = prompt_pcm("transfer/sorry");
    assert!(
        find_prompt(&pcm, &sorry, 0).is_some_and(|(_, c)| c > 0.8),
        "caller hears transfer/sorry before the daemon hangs up"
    );
    d.wait_idle(Duration::from_secs(5));
    let tr: Vec<String> = d
        .stored_events()
        .into_iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| e.4["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(tr, ["started", "no_answer"]);
    assert_eq!(d.health("calls_active"), 0);
}

#[test]
fn a_sub_centre_refreshing_its_session_keeps_the_call() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent, target) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // The agent leaves 3 s after answering; the centre refreshes 3 s and 4 s after it answered.
    let agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "3000"],
    );
    let centre = sipp_uas_with(
        &d,
        "trunk_refresh.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port)],
    );
    let caller_ms = greeting_ms + 12000;
    let window = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let (code, body) = api_post(&d, "/api/seats/1003/transfer", r#"{"number":"12366"}"#);
        assert_eq!(code, 200, "{body}");
        let from = target.wait_first(Duration::from_secs(5));
        let up = Instant::now();
        let t = &target;
        s.spawn(move || t.send_tone(from, TARGET_HZ, 8000));
        assert_sipp_ok(&run.join().unwrap(), &d);
        (
            up + Duration::from_millis(5000),
            up + Duration::from_millis(7500),
        )
    });
    child_ok(agent_sipp, "agent");
    // The scenario checked that both refreshes got a 200 with our SDP.
    child_ok(centre, "sub-centre refreshing its session");
    let c = heard(&caller, window.0, window.1);
    let t = heard(&target, window.0, window.1);
    assert!(
        c.len() > 8000 && tone_share(&c, TARGET_HZ) > 0.5 && tone_share(&t, CALLER_HZ) > 0.5,
        "after the refreshes: caller hears target {:.2}, target hears caller {:.2}",
        tone_share(&c, TARGET_HZ),
        tone_share(&t, CALLER_HZ)
    );
    assert!(
        !d.log_text().contains("no ACK for our 2xx to the trunk"),
        "the re-INVITE's 2xx was acknowledged"
    );
}

#[test]
fn expert_group_answers_through_its_queue_three_way_then_the_expert_keeps_the_caller() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let expert_port = free_port();
    register_contact(&d, "1004", "demo-1004", expert_port, expert_port, 300);
    let (caller, agent_sink, expert) = (RtpSink::new(), RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    // The agent talks 12 s and leaves the three-way call; the expert rings 1 s and stays
    // until the caller hangs up.
    let agent = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent_sink.port), "-d", "12000"],
    );
    let expert_sipp = sipp_uas_with(
        &d,
        "agent_stay.xml",
        expert_port,
        1,
        &["-key", "rtp_port", &port_s(expert.port), "-d", "1000"],
    );
    let caller_ms = greeting_ms + 21000;
    let (conf_from, conf_to, after_from, after_to) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        let agent_from = agent_sink.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        let answered_at = Instant::now();
        // Nobody of the expert group is logged in yet: refused at once, with the reason.
        let (code, body) = api_post(&d, "/api/seats/1003/transfer", r#"{"number":"8801"}"#);
        assert!(
            (400..500).contains(&code) && body.contains("no seat of the expert group"),
            "{code} {body}"
        );
        agent_api(&d, "1004", "login");
        std::thread::sleep(Duration::from_millis(300));
        keys(&agent_sink, agent_from, "*8801#");
        let a = &agent_sink;
        s.spawn(move || a.send_tone(agent_from, AGENT_HZ, 11000));
        let expert_from = expert.wait_first(Duration::from_secs(10));
        let e = &expert;
        s.spawn(move || e.send_tone(expert_from, TARGET_HZ, 16000));
        let up = Instant::now();
        let agent_leaves = answered_at + Duration::from_millis(12000);
        let after_from = agent_leaves + Duration::from_millis(1500);
        let windows = (
            up + Duration::from_millis(1500),
            agent_leaves - Duration::from_millis(500),
            after_from,
            after_from + Duration::from_millis(3000),
        );
        assert_sipp_ok(&run.join().unwrap(), &d);
        windows
    });
    child_ok(agent, "agent");
    child_ok(
        expert_sipp,
        "expert (offered with X-Hotline-Transfer-By, hung up by the daemon after the caller)",
    );
    assert!(conf_to > conf_from + Duration::from_secs(3));
    let share = |pcm: &[i16], hz: f64| tone_share(pcm, hz);
    let c = heard(&caller, conf_from, conf_to);
    let a = heard(&agent_sink, conf_from, conf_to);
    let e = heard(&expert, conf_from, conf_to);
    let log = d.log_text();
    assert!(
        share(&c, AGENT_HZ) > 0.2 && share(&c, TARGET_HZ) > 0.2 && share(&c, CALLER_HZ) < 0.05,
        "caller hears agent {:.2} and expert {:.2}, not itself {:.2}\n{}",
        share(&c, AGENT_HZ),
        share(&c, TARGET_HZ),
        share(&c, CALLER_HZ),
        tail(&log, 40)
    );
    assert!(
        share(&a, CALLER_HZ) > 0.2 && share(&a, TARGET_HZ) > 0.2,
        "agent hears caller {:.2} and expert {:.2}",
        share(&a, CALLER_HZ),
        share(&a, TARGET_HZ)
    );
    assert!(
        share(&e, CALLER_HZ) > 0.2 && share(&e, AGENT_HZ) > 0.2,
        "expert hears caller {:.2} and agent {:.2}",
        share(&e, CALLER_HZ),
        share(&e, AGENT_HZ)
    );
    let c = heard(&caller, after_from, after_to);
    let e = heard(&expert, after_from, after_to);
    assert!(
        share(&c, TARGET_HZ) > 0.5 && share(&e, CALLER_HZ) > 0.5,
        "after the agent left, caller hears the expert {:.2}, expert hears the caller {:.2}",
        share(&c, TARGET_HZ),
        share(&e, CALLER_HZ)
    );

    // The agent transferred one call; the expert answered one offer and talked until the
    // caller hung up; both are free again after wrap-up.
    let agent_view = wait_seat(&d, "1003", Duration::from_secs(10), "agent free", |s| {
        s["state"] == "available"
    });
    assert_eq!(agent_view["today"]["transferred"], 1);
    let expert_view = wait_seat(&d, "1004", Duration::from_secs(10), "expert free", |s| {
        s["state"] == "available"
    });
    assert_eq!(expert_view["today"]["answered"], 1, "{expert_view}");
    d.wait_idle(Duration::from_secs(5));
    assert_eq!(d.health("calls_active"), 0);
    let events = d.stored_events();
    let tr: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| &e.4)
        .collect();
    assert_eq!(
        tr.iter()
            .map(|t| (t["outcome"].as_str(), t["kind"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("started"), Some("expert")),
            (Some("answered"), Some("expert"))
        ],
        "{tr:?}"
    );
    let expert_talk = events
        .iter()
        .find(|e| e.0 == "talk_end" && e.2.as_deref() == Some("1004"))
        .map(|e| &e.4);
    assert!(
        expert_talk.is_some_and(
            |t| t["ended_by"] == "caller" && t["talk_s"].as_f64().unwrap_or(0.0) > 10.0
        ),
        "the expert's talk is on record until the caller hung up: {expert_talk:?}"
    );
}

#[test]
fn a_refused_transfer_code_tells_the_agent_and_the_call_goes_on() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let agent_port = sipp_seat(&d);
    let (caller, agent) = (RtpSink::new(), RtpSink::new());
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let failed_ms = prompt_frames("transfer/failed") as u64 * 20;
    let mut agent_sipp = sipp_uas_with(
        &d,
        "agent_talk.xml",
        agent_port,
        1,
        &["-key", "rtp_port", &port_s(agent.port), "-d", "60000"],
    );
    let caller_ms = greeting_ms + 6000 + failed_ms;
    let keyed = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        let from = agent.wait_first(Duration::from_secs(greeting_ms / 1000 + 10));
        std::thread::sleep(Duration::from_millis(300));
        let keyed = Instant::now();
        // 9999 is no configured target: the agent hears so and has the caller back.
        keys(&agent, from, "*9999#");
        assert_sipp_ok(&run.join().unwrap(), &d);
        keyed
    });
    let _ = agent_sipp.kill();
    let after: Vec<Packet> = agent
        .packets()
        .into_iter()
        .filter(|p| p.at >= keyed)
        .collect();
    let found = find_prompt(&decode_pcmu(&after), &prompt_pcm("transfer/failed"), 0);
    assert!(
        found.is_some_and(|(_, c)| c > 0.8),
        "agent hears transfer/failed: {found:?}"
    );
    let back_from = keyed + Duration::from_millis(failed_ms + 1000);
    let back = heard(&agent, back_from, back_from + Duration::from_secs(2));
    assert!(
        tone_share(&back, CALLER_HZ) > 0.5,
        "agent hears the caller again ({:.2})",
        tone_share(&back, CALLER_HZ)
    );
    assert!(d.log_text().contains("transfer by DTMF refused"));
    d.wait_idle(Duration::from_secs(5));
    assert!(
        !d.stored_events().iter().any(|e| e.0 == "transfer"),
        "no transfer was started"
    );
    assert_eq!(d.metric("hotline_transfers_active"), 0);
}

/// A seat's phone scripted over real UDP, for what neither Debian's baresip (1.0.0: no
/// attended transfer) nor one SIPp scenario (one dialog per call) can do: two dialogs at once,
/// a consultation call and a REFER with Replaces naming it. It answers the NOTIFYs and BYEs
/// it gets with 200.
struct ScriptedPhone {
    sock: std::net::UdpSocket,
    port: u16,
    daemon: SocketAddr,
}

fn sip_header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

fn tag_of(header: &str) -> String {
    header
        .split(";tag=")
        .nth(1)
        .map(|t| t.split(';').next().unwrap_or(t).to_string())
        .unwrap_or_default()
}

impl ScriptedPhone {
    /// Seat 1003 registered from a fresh port, logged in.
    fn register(d: &Daemon) -> ScriptedPhone {
        let port = free_port();
        register_contact(d, "1003", "demo-1003", port, port, 300);
        agent_api(d, "1003", "login");
        let sock = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        ScriptedPhone {
            sock,
            port,
            daemon: d.sip,
        }
    }

    fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), self.daemon).unwrap();
    }

    /// The next message `want` accepts, within `within`; NOTIFY and BYE on the way get 200.
    fn wait_for(&self, within: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.starts_with("NOTIFY ") || msg.starts_with("BYE ") {
                self.reply(&msg, "200 OK", "", "");
            }
            if want(&msg) {
                return msg;
            }
        }
        panic!("the phone waited {within:?} in vain");
    }

    /// A response to request `req` (our tag added to To when `tag` is set).
    fn reply(&self, req: &str, status: &str, tag: &str, body: &str) {
        let to = if tag.is_empty() || sip_header(req, "To").contains(";tag=") {
            sip_header(req, "To").to_string()
        } else {
            format!("{};tag={tag}", sip_header(req, "To"))
        };
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        self.send(&format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:1003@127.0.0.1:{}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            sip_header(req, "Via"),
            sip_header(req, "From"),
            sip_header(req, "Call-ID"),
            sip_header(req, "CSeq"),
            self.port,
            body.len()
        ));
    }

    fn sdp(rtp_port: u16) -> String {
        format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    }

    /// INVITE for `number` in dialog `cid` (our tag "ct"); the final response.
    fn invite(&self, number: &str, cid: &str, cseq: u32, rtp_port: u16, auth: &str) -> String {
        let sdp = Self::sdp(rtp_port);
        let d = self.daemon;
        self.send(&format!(
            "INVITE sip:{number}@{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{cid}-{cseq}\r\n\
             From: <sip:1003@{d}>;tag=ct\r\nTo: <sip:{number}@{d}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\n\
             Contact: <sip:1003@127.0.0.1:{p}>\r\nMax-Forwards: 70\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len(),
            p = self.port
        ));
        let fin = self.wait_for(Duration::from_secs(20), |m| {
            m.starts_with("SIP/2.0 ")
                && !m.starts_with("SIP/2.0 1")
                && sip_header(m, "Call-ID") == cid
        });
        // ACK: for a failure on the INVITE's branch, for a 2xx a new one.
        let branch = if fin.starts_with("SIP/2.0 2") {
            format!("z9hG4bK-{cid}-{cseq}-ack")
        } else {
            format!("z9hG4bK-{cid}-{cseq}")
        };
        self.send(&format!(
            "ACK sip:{number}@{d} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch={branch}\r\nFrom: <sip:1003@{d}>;tag=ct\r\n\
             To: {}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            sip_header(&fin, "To"),
            p = self.port
        ));
        fin
    }

    /// The consultation call to `number`, answering the daemon's digest challenge; the 200.
    fn consult(&self, number: &str, cid: &str, rtp_port: u16) -> String {
        use hotline::sip::digest::{Algorithm, ha1};
        let challenge = self.invite(number, cid, 1, rtp_port, "");
        assert!(challenge.starts_with("SIP/2.0 407"), "{challenge}");
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        let uri = format!("sip:{number}@{}", self.daemon);
        let h1 = ha1(Algorithm::Md5, "1003", "hotline", "demo-1003");
        let h2 = Algorithm::Md5.hash_hex(&format!("INVITE:{uri}"));
        let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:abc:auth:{h2}"));
        let auth = format!(
            "Proxy-Authorization: Digest username=\"1003\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"\r\n"
        );
        self.invite(number, cid, 2, rtp_port, &auth)
    }
}

#[test]
fn attended_transfer_from_a_phone_the_caller_takes_over_the_consulted_sub_centre() {
    let trunk = free_port();
    let d = Daemon::start_with_targets(
        &targets(trunk, 20),
        &[("HOTLINE__REGISTRAR__QUALIFY_S", "0")],
    );
    let phone = ScriptedPhone::register(&d);
    let (caller, agent, consulting, target) = (
        RtpSink::new(),
        RtpSink::new(),
        RtpSink::new(),
        RtpSink::new(),
    );
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    let centre = sipp_uas_with(
        &d,
        "trunk_answer.xml",
        trunk,
        1,
        &["-key", "rtp_port", &port_s(target.port), "-d", "1000"],
    );
    let caller_ms = greeting_ms + 16000;
    let (consult_window, after_window) = std::thread::scope(|s| {
        let run = caller_speaks(s, &d, &caller, caller_ms);
        // The offer: the phone answers (its media at the agent sink).
        let offer = phone.wait_for(Duration::from_secs(greeting_ms / 1000 + 10), |m| {
            m.starts_with("INVITE ")
        });
        phone.reply(&offer, "200 OK", "ph", &ScriptedPhone::sdp(agent.port));
        phone.wait_for(Duration::from_secs(5), |m| m.starts_with("ACK "));
        // The consultation: the phone dials 12366 through the daemon; the sub-centre answers
        // after 1 s and speaks; the phone hears it.
        let ok = phone.consult("12366", "consult-1", consulting.port);
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        // The agent speaks in the consultation, to the daemon's port in the answer.
        let rtp_port: u16 = ok
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("the consultation's answer has SDP");
        let k = &consulting;
        s.spawn(move || k.send_tone(SocketAddr::from(([127, 0, 0, 1], rtp_port)), AGENT_HZ, 3500));
        let target_from = target.wait_first(Duration::from_secs(10));
        let t = &target;
        s.spawn(move || t.send_tone(target_from, TARGET_HZ, 12000));
        std::thread::sleep(Duration::from_millis(2500));
        let consult_window = (Instant::now() - Duration::from_millis(2000), Instant::now());
        // REFER with Replaces on the caller's leg, naming the consultation.
        let (daemon_tag, d_addr) = (tag_of(sip_header(&ok, "To")), d.sip);
        let contact = message_uri(sip_header(&offer, "Contact"));
        phone.send(&format!(
            "REFER {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-refer1\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: 1 REFER\r\nContact: <sip:1003@127.0.0.1:{p}>\r\nMax-Forwards: 70\r\n\
             Refer-To: <sip:12366@{d_addr}?Replaces=consult-1%3Bto-tag%3D{daemon_tag}%3Bfrom-tag%3Dct>\r\n\
             Referred-By: <sip:1003@{d_addr}>\r\nContent-Length: 0\r\n\r\n",
            format!("{};tag=ph", sip_header(&offer, "To")),
            sip_header(&offer, "From"),
            sip_header(&offer, "Call-ID"),
            p = phone.port
        ));
        let accepted = phone.wait_for(Duration::from_secs(5), |m| {
            m.starts_with("SIP/2.0 ") && sip_header(m, "CSeq").ends_with("REFER")
        });
        assert!(accepted.starts_with("SIP/2.0 202"), "{accepted}");
        // Both of the phone's dialogs end: the NOTIFY says the transfer went through.
        phone.wait_for(Duration::from_secs(5), |m| {
            m.starts_with("NOTIFY ") && m.contains("SIP/2.0 200") && m.contains("terminated")
        });
        let leg_cid = sip_header(&offer, "Call-ID").to_string();
        let mut ended = vec![];
        while ended.len() < 2 {
            let bye = phone.wait_for(Duration::from_secs(5), |m| m.starts_with("BYE "));
            ended.push(sip_header(&bye, "Call-ID").to_string());
        }
        ended.sort();
        let mut want = vec![leg_cid, "consult-1".to_string()];
        want.sort();
        assert_eq!(ended, want, "both of the agent's dialogs end");
        std::thread::sleep(Duration::from_millis(1500));
        let after = (Instant::now(), Instant::now() + Duration::from_millis(3000));
        assert_sipp_ok(&run.join().unwrap(), &d);
        (consult_window, after)
    });
    child_ok(
        centre,
        "sub-centre (hung up by the daemon after the caller)",
    );
    let share = |pcm: &[i16], hz: f64| tone_share(pcm, hz);
    let h = heard(&consulting, consult_window.0, consult_window.1);
    let t = heard(&target, consult_window.0, consult_window.1);
    assert!(
        share(&h, TARGET_HZ) > 0.5 && share(&t, AGENT_HZ) > 0.5,
        "in the consultation the phone hears the sub-centre ({:.2}, {} samples) and the sub-centre the agent ({:.2})",
        share(&h, TARGET_HZ),
        h.len(),
        share(&t, AGENT_HZ)
    );
    let c = heard(&caller, after_window.0, after_window.1);
    let t = heard(&target, after_window.0, after_window.1);
    assert!(
        share(&c, TARGET_HZ) > 0.5 && share(&t, CALLER_HZ) > 0.5,
        "after the transfer the caller hears the sub-centre {:.2}, the sub-centre the caller {:.2}\n{}",
        share(&c, TARGET_HZ),
        share(&t, CALLER_HZ),
        tail(&d.log_text(), 30)
    );
    d.wait_idle(Duration::from_secs(5));
    let events = d.stored_events();
    let tr: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .filter(|e| e.0 == "transfer")
        .map(|e| (e.4["outcome"].as_str(), e.4["mode"].as_str()))
        .collect();
    assert_eq!(
        tr,
        [
            (Some("started"), Some("attended")),
            (Some("answered"), None)
        ]
    );
    assert!(
        !events.iter().any(|e| e.1.as_deref() == Some("consult-1")),
        "the consultation is no citizen's call in the store"
    );
    let view = wait_seat(&d, "1003", Duration::from_secs(10), "agent free", |s| {
        s["state"] == "available"
    });
    assert_eq!(view["today"]["transferred"], 1);
}

/// The URI inside a Contact header value.
fn message_uri(contact: &str) -> String {
    contact
        .split('<')
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or(contact)
        .to_string()
}
