//! Two nodes behind Kamailio (Debian's 5.6, deploy/kamailio/kamailio.cfg with the dispatcher
//! list and centre table written by scripts/kamailio-gen): 12345 is answered by the owner,
//! node-a; a seat registers through Kamailio (Path), lands on node-a and is offered a caller
//! back through Kamailio; after `kill -9` of node-a the next call is answered by node-b, its
//! standby, within 5 s.
mod common;
use common::*;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kamailio {
    child: Child,
}

impl Kamailio {
    fn start(dir: &Path, port: u16, nodes: &[u16]) -> Kamailio {
        let owners = nodes
            .iter()
            .map(|p| format!("sip:127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let st = Command::new(repo().join("scripts/kamailio-gen"))
            .arg("--out")
            .arg(dir)
            .args(["--listen", &format!("udp:127.0.0.1:{port}")])
            .arg("--centre")
            .arg(format!(
                "{}={owners}",
                repo().join("config/hotline.toml").display()
            ))
            .stdout(Stdio::null())
            .status()
            .expect("scripts/kamailio-gen");
        assert!(st.success());
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(dir.join("hotline.cfg"))
            .arg("-Y")
            .arg(dir)
            .arg("-w")
            .arg(dir)
            .args(["-m", "32", "-M", "4"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
            .spawn()
            .expect("kamailio (apt-get install kamailio)");
        Kamailio { child }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon on `port` as one node of the centre.
fn node(port: u16, name: &str) -> Daemon {
    node_with(port, name, &[])
}

/// A node with `more` settings on top.
fn node_with(port: u16, name: &str, more: &[(&str, &str)]) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = vec![
        ("HOTLINE__SIP__LISTEN", listen.as_str()),
        ("HOTLINE__SIP__TRUSTED_PROXIES", "127.0.0.1"),
        (
            "HOTLINE__REGISTRAR__NONCE_SECRET",
            "centre-secret-shared-by-both-nodes",
        ),
        ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
        ("HOTLINE__SIP__USER_AGENT", name),
    ];
    env.extend_from_slice(more);
    Daemon::start(&env)
}

/// A call to `number` through Kamailio at `proxy`; SIPp's output.
fn call_via(proxy: u16, d: &Daemon, number: &str, rtp: u16, ms: u64) -> std::process::Output {
    Command::new("timeout")
        .arg("40")
        .arg("sipp")
        .arg(format!("127.0.0.1:{proxy}"))
        .arg("-sf")
        .arg(repo().join("sipp-scenarios/uac_call_rr.xml"))
        .args([
            "-s",
            number,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "30", "-timeout_error"])
        .args(["-key", "rtp_port", &rtp.to_string(), "-d", &ms.to_string()])
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("sipp: {e}; {}", d.log_text()))
        .unwrap()
}

/// REGISTER `user` from 127.0.0.1:`port` through Kamailio at `proxy` (digest from the node).
fn register_via(proxy: u16, user: &str, password: &str, port: u16) -> String {
    let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let host = format!("127.0.0.1:{proxy}");
    let req = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-k{cseq}-{port};rport\r\n\
             From: <sip:{user}@{host}>;tag=k{port}\r\nTo: <sip:{user}@{host}>\r\nCall-ID: kam-{user}-{port}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: 300\r\nSupported: path\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut buf = [0u8; 4096];
    sock.send_to(req(1, "").as_bytes(), &host).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("401 through Kamailio");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("SIP/2.0 401"), "{text}");
    let auth = digest_authorization(user, password, &format!("sip:{host}"), &text);
    sock.send_to(req(2, &auth).as_bytes(), &host).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("200 through Kamailio");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// A seat's phone behind Kamailio (SIPp UAS on `port`): answers one call, talks 2 s, hangs up
/// following the Record-Route.
fn seat_phone(port: u16) -> Child {
    Command::new("timeout")
        .args(["40", "sipp", "-sf"])
        .arg(repo().join("sipp-scenarios/agent_answer_rr.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
        .args(["-timeout", "30", "-timeout_error", "-key", "rtp_port", "9"])
        .args(["-mp", &free_media_port().to_string()])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_nodes_behind_kamailio_shard_by_number_and_fail_over_to_the_standby() {
    let dir = temp_dir(&format!("kamailio-{}", free_port()));
    let (pa, pb, pk) = (free_port(), free_port(), free_port());
    let mut a = node(pa, "node-a");
    let b = node(pb, "node-b");
    let _kam = Kamailio::start(&dir, pk, &[pa, pb]);
    // Dispatcher probes both nodes with OPTIONS each second.
    std::thread::sleep(Duration::from_secs(2));

    // 12345 is answered by its owner, node-a, with audio.
    let sink = RtpSink::new();
    let out = call_via(pk, &a, "12345", sink.port, 3000);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
    );
    assert_heard_at(&decode_pcmu(&sink.packets()), "welcome", 0);
    assert_eq!(a.metric("hotline_calls_answered_total"), 1);
    assert_eq!(b.metric("hotline_calls_answered_total"), 0);

    // A seat registers through Kamailio: node-a has it, with Kamailio's Path; node-b does not.
    let seat_port = free_port();
    let ok = register_via(pk, "1004", "demo-1004", seat_port);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("Path:"), "the 200 echoes the Path: {ok}");
    wait_seat(
        &a,
        "1004",
        Duration::from_secs(3),
        "registered on node-a",
        |s| s["registered"] == true,
    );
    assert_eq!(seat(&b, "1004")["registered"], false);
    // It is offered a caller back through Kamailio (the Path is the route to it).
    agent_api(&a, "1004", "login");
    let phone = seat_phone(seat_port);
    let caller = RtpSink::new();
    let greeting_ms = prompt_frames("greetings/12333") as u64 * 20;
    // The seat hangs up after 2 s of talk; the daemon then ends the caller's call itself, which
    // this caller scenario (it hangs up on its own) counts as unexpected: what it heard counts.
    let _ = call_via(pk, &a, "12333", caller.port, greeting_ms + 5000);
    child_ok(
        phone,
        "the seat behind Kamailio answers (its BYE follows the Record-Route)",
    );
    assert_heard_at(&decode_pcmu(&caller.packets()), "greetings/12333", 0);
    let view = wait_seat(&a, "1004", Duration::from_secs(5), "answered", |s| {
        s["counters"]["answered"] == 1
    });
    assert_eq!(view["counters"]["offered"], 1);

    // node-a dies: the next call through Kamailio is answered by node-b within 5 s.
    a.kill9();
    let killed = Instant::now();
    let sink = RtpSink::new();
    let out = call_via(pk, &b, "12345", sink.port, 2000);
    let answered_after = killed.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
    );
    assert_eq!(b.metric("hotline_calls_answered_total"), 1);
    assert_heard_at(&decode_pcmu(&sink.packets()), "welcome", 0);
    eprintln!(
        "kill -9 of node-a -> call answered by node-b after {answered_after:?} (including 2 s of audio)"
    );
    assert!(
        answered_after < Duration::from_secs(5 + 3),
        "{answered_after:?}"
    );

    // The seat re-registers (its next refresh): Kamailio now sends it to node-b, where it logs
    // in and is offered the next caller, back through Kamailio.
    let seat_port = free_port();
    let ok = register_via(pk, "1004", "demo-1004", seat_port);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    wait_seat(
        &b,
        "1004",
        Duration::from_secs(3),
        "registered on node-b",
        |s| s["registered"] == true,
    );
    agent_api(&b, "1004", "login");
    let phone = seat_phone(seat_port);
    let caller = RtpSink::new();
    let _ = call_via(pk, &b, "12333", caller.port, greeting_ms + 5000);
    child_ok(phone, "the seat answers node-b's offer through Kamailio");
    let view = wait_seat(
        &b,
        "1004",
        Duration::from_secs(5),
        "answered on node-b",
        |s| s["counters"]["answered"] == 1,
    );
    assert_eq!(view["counters"]["offered"], 1);
}

/// SIPp `scenario` from 127.0.0.1:`port` (to Kamailio at `to`, if a caller), held until a BYE
/// comes; bounded at 60 s.
fn held(scenario: &str, port: u16, to: Option<(u16, &str, u16)>) -> Child {
    let mut c = Command::new("timeout");
    c.args(["60", "sipp"]);
    if let Some((proxy, _, _)) = to {
        c.arg(format!("127.0.0.1:{proxy}"));
    }
    c.arg("-sf")
        .arg(repo().join("sipp-scenarios").join(scenario));
    c.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
        "-nostdin",
    ]);
    c.args(["-timeout", "55", "-timeout_error"]);
    match to {
        Some((_, number, rtp)) => c.args(["-s", number, "-key", "rtp_port", &rtp.to_string()]),
        None => c.args([
            "-key",
            "rtp_port",
            "9",
            "-mp",
            &free_media_port().to_string(),
        ]),
    };
    c.current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_call_on_a_node_that_dies_ends_for_the_caller_and_the_seat() {
    let dir = temp_dir(&format!("kamailio-ka-{}", free_port()));
    let (pa, pb, pk) = (free_port(), free_port(), free_port());
    let store = dir.join("node-a.db");
    let store_s = store.to_str().unwrap().to_string();
    let a_env = [("HOTLINE__STORE__PATH", store_s.as_str())];
    let mut a = node_with(pa, "node-a", &a_env);
    let _b = node(pb, "node-b");
    let _kam = Kamailio::start(&dir, pk, &[pa, pb]);
    std::thread::sleep(Duration::from_secs(2));
    // Seat 1003 through Kamailio on node-a, and a caller of 12348 talking with it.
    let seat_port = free_port();
    let ok = register_via(pk, "1003", "demo-1003", seat_port);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    agent_api(&a, "1003", "login");
    let phone = held("agent_answer_rr_held.xml", seat_port, None);
    let sink = RtpSink::new();
    let caller = held(
        "uac_call_rr_held.xml",
        free_port(),
        Some((pk, "12348", sink.port)),
    );
    let greeting_ms = prompt_frames("greetings/12348") as u64 * 20;
    wait_seat(
        &a,
        "1003",
        Duration::from_millis(greeting_ms + 10_000),
        "talking through Kamailio",
        |s| s["state"] == "on_call",
    );
    std::thread::sleep(Duration::from_millis(1500)); // a heartbeat after the answer
    // node-a dies mid-call: Kamailio's prober finds it gone and ends the calls that were on
    // it with a BYE to the caller and to the seat.
    a.kill9();
    let killed = Instant::now();
    let seat_out = phone.wait_with_output().unwrap();
    let seat_freed = killed.elapsed();
    let klog = || {
        tail(
            &std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default(),
            30,
        )
    };
    assert!(
        seat_out.status.success(),
        "the seat gets a BYE from Kamailio:\n{}\n{}",
        String::from_utf8_lossy(&seat_out.stdout),
        klog()
    );
    let out = caller.wait_with_output().unwrap();
    let caller_freed = killed.elapsed();
    assert!(
        out.status.success(),
        "the caller gets a BYE from Kamailio:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        klog()
    );
    eprintln!(
        "kill -9 of node-a -> BYE to the seat after {seat_freed:?}, to the caller after {caller_freed:?}"
    );
    // The prober marks node-a down after two missed OPTIONS (~2–3 s), then NODE_GONE_S (10 s);
    // the keep-alives (30 s, then 10 s) would be the backstop.
    assert!(
        caller_freed < Duration::from_secs(25) && seat_freed < Duration::from_secs(25),
        "{caller_freed:?} {seat_freed:?}\n{}",
        klog()
    );
    // node-a back on its store: the call is recorded lost.
    drop(a);
    let a2 = node_with(free_port(), "node-a", &a_env);
    assert_eq!(a2.metric("hotline_calls_lost_total"), 1);
}
