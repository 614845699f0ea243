//! The live feed: a daemon publishes every event to NATS JetStream (Debian's nats-server 2.9,
//! started by the test on a free port). The server is restarted in the middle of the run while
//! calls go on; afterwards the stream holds each of the node's events exactly once, on
//! `hotline.<node>.<kind>`, with `Nats-Msg-Id: <node>-<id>` and the record's JSON.
mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nats-server with JetStream, its storage in a temp dir; killed by pid on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    fn start() -> Nats {
        let port = free_port();
        let dir = temp_dir(&format!("nats-{port}"));
        let mut n = Nats {
            child: None,
            port,
            dir,
        };
        n.up();
        n
    }

    fn up(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.join("js"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("log")).unwrap())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A clean stop (SIGTERM: the server writes out what it acknowledged), waited for.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn short_calls(d: &Daemon, calls: u32) {
    let sink = RtpSink::new();
    let m = calls.to_string();
    let out = sipp(
        d,
        "uac_call.xml",
        "12345",
        &[
            "-m",
            &m,
            "-r",
            "20",
            "-l",
            &m,
            "-d",
            "300",
            "-key",
            "rtp_port",
            &sink.port.to_string(),
        ],
    );
    assert_sipp_ok(&out, d);
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, d: &Daemon) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; log:\n{}",
            tail(&d.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (id, kind) of every event in the daemon's own store.
fn local_events(store: &std::path::Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(store).unwrap();
    let mut s = conn
        .prepare("SELECT id, kind FROM events ORDER BY id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (subject, Nats-Msg-Id, payload) of every message in stream HOTLINE, read by a small
/// consumer with the daemon's own client crate.
fn read_stream(url: &str) -> Vec<(String, String, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("HOTLINE").await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.subjects, vec!["hotline.>".to_string()]);
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        for seq in first..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            let payload = serde_json::from_slice(&m.payload).unwrap();
            out.push((m.subject.to_string(), id, payload));
        }
        out
    })
}

#[test]
fn every_event_is_in_the_stream_exactly_once_across_a_broker_restart() {
    let mut nats = Nats::start();
    let d = Daemon::start(&[
        ("HOTLINE__NODE__ID", "node-a"),
        ("HOTLINE__FEED__NATS", &nats.url()),
    ]);
    let published = |d: &Daemon, store: &std::path::Path| {
        d.metric("hotline_feed_lag_events") == 0
            && d.metric("hotline_feed_published_total") == local_events(store).len() as u64
    };
    short_calls(&d, 3);
    wait_for(
        "the first calls published",
        Duration::from_secs(15),
        || published(&d, &d.store),
        &d,
    );
    assert_eq!(d.metric("hotline_feed_connected"), 1);

    // The broker restarts while calls go on: their events wait in the store.
    nats.down();
    short_calls(&d, 3);
    wait_for(
        "the feed sees the outage",
        Duration::from_secs(15),
        || d.metric("hotline_feed_lag_events") > 0 && d.metric("hotline_feed_connected") == 0,
        &d,
    );
    nats.up();
    short_calls(&d, 2);
    wait_for(
        "the feed caught up",
        Duration::from_secs(25),
        || published(&d, &d.store),
        &d,
    );
    assert!(
        d.log_text().contains("NATS reconnected"),
        "{}",
        tail(&d.log_text(), 40)
    );

    let local = local_events(&d.store);
    assert!(local.len() >= 24, "only {} events", local.len());
    let messages = read_stream(&nats.url());
    let mut ids: Vec<i64> = Vec::new();
    for (subject, msg_id, payload) in &messages {
        let id = payload["id"].as_i64().unwrap();
        let kind = payload["kind"].as_str().unwrap();
        assert_eq!(payload["node"], "node-a");
        assert_eq!(subject, &format!("hotline.node-a.{kind}"));
        assert_eq!(msg_id, &format!("node-a-{id}"));
        assert!(
            payload["at"].is_string() && payload["detail"].is_object(),
            "{payload}"
        );
        ids.push(id);
    }
    ids.sort_unstable();
    let expected: Vec<i64> = local.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids, expected,
        "each stored event exactly once in the stream"
    );
    for (id, kind) in &local {
        let (_, _, p) = messages.iter().find(|(_, _, p)| p["id"] == *id).unwrap();
        assert_eq!(p["kind"], kind.as_str());
    }

    // The daemon restarts on its store with its cursor lost: it publishes everything again,
    // and the stream drops every repeat by its message id.
    let store = d.store.clone();
    let mut d = d;
    d.sigterm();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute("UPDATE cursors SET last_id = 0 WHERE name = 'nats'", [])
        .unwrap();
    let store_env = store.display().to_string();
    let d2 = Daemon::start(&[
        ("HOTLINE__NODE__ID", "node-a"),
        ("HOTLINE__FEED__NATS", &nats.url()),
        ("HOTLINE__STORE__PATH", &store_env),
    ]);
    wait_for(
        "everything published again",
        Duration::from_secs(15),
        || published(&d2, &store),
        &d2,
    );
    assert!(
        d2.log_text().contains("dropped as repeats"),
        "{}",
        tail(&d2.log_text(), 20)
    );
    assert_eq!(
        read_stream(&nats.url()).len(),
        local.len(),
        "published twice, stored once"
    );
}
