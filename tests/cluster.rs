//! `scripts/cluster up DIR` brings up Kamailio, node-a, node-b, PostgreSQL and NATS on loopback
//! (every pid in DIR/<name>.pid); a call through Kamailio is answered by node-a, its events reach
//! PostgreSQL and NATS; `scripts/cluster down DIR` leaves none of those processes running.
mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// GET on a loopback HTTP port; the body.
fn http_get_at(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn cluster_up_serves_a_call_through_kamailio_and_down_stops_every_process() {
    let dir = temp_dir(&format!("cluster-{}", free_port()));
    let (sip, a, b, ha, hb, pg, nats) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let env = [
        ("CLUSTER_SIP", format!("127.0.0.1:{sip}")),
        ("CLUSTER_NODE_A", a.to_string()),
        ("CLUSTER_NODE_B", b.to_string()),
        ("CLUSTER_HTTP_A", ha.to_string()),
        ("CLUSTER_HTTP_B", hb.to_string()),
        ("CLUSTER_PG", pg.to_string()),
        ("CLUSTER_NATS", nats.to_string()),
        ("HOTLINE_BIN", env!("CARGO_BIN_EXE_hotline").to_string()),
    ];
    let script = repo().join("scripts/cluster");
    let run = |what: &str| {
        let out = Command::new(&script)
            .arg(what)
            .arg(&dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("scripts/cluster");
        assert!(
            out.status.success(),
            "cluster {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("up");
    let names = ["kamailio", "node-a", "node-b", "postgres", "nats"];
    let pids: Vec<u32> = names
        .iter()
        .map(|n| {
            std::fs::read_to_string(dir.join(format!("{n}.pid")))
                .unwrap_or_else(|_| panic!("{n}.pid"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    for (n, p) in names.iter().zip(&pids) {
        assert!(alive(*p), "{n} ({p}) is running");
    }
    let metric = |port: u16, name: &str| -> u64 {
        let body = http_get_at(port, "/metrics").unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    // Dispatcher's first probes.
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new("timeout")
        .arg("40")
        .arg("sipp")
        .arg(format!("127.0.0.1:{sip}"))
        .arg("-sf")
        .arg(repo().join("sipp-scenarios/uac_call_rr.xml"))
        .args([
            "-s",
            "12345",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args([
            "-m",
            "2",
            "-r",
            "2",
            "-nostdin",
            "-timeout",
            "30",
            "-timeout_error",
        ])
        .args(["-key", "rtp_port", "9", "-d", "1000"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (metric(ha, "hotline_store_shipped_total") < 6
        || metric(ha, "hotline_feed_published_total") < 6)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (answered_a, answered_b) = (
        metric(ha, "hotline_calls_answered_total"),
        metric(hb, "hotline_calls_answered_total"),
    );
    let (shipped, published) = (
        metric(ha, "hotline_store_shipped_total"),
        metric(ha, "hotline_feed_published_total"),
    );
    run("down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!((answered_a, answered_b), (2, 0), "node-a owns 12345");
    assert!(
        shipped >= 6 && published >= 6,
        "shipped {shipped}, published {published}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "left running after down: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
