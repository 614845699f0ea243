//! One record across nodes: two daemons (node-a, node-b) ship their events to one PostgreSQL
//! (Debian's 15, started by the test in a temp dir on a free port). PostgreSQL is stopped in
//! the middle of the run, calls go on, and it is started again: every event of both nodes is
//! in it exactly once, and `hotline report --from-postgres` equals the two nodes' own records
//! folded together.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A PostgreSQL cluster of the test's own; stopped, and its postmaster killed by pid, on drop.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    /// As root (CI), the server runs as the user postgres (it refuses root).
    fn as_server_user(tool: &str) -> Command {
        let root = is_root();
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/{tool}"));
            c
        } else {
            Command::new(format!("{PG_BIN}/{tool}"))
        };
        c.current_dir("/");
        c
    }

    fn init() -> Postgres {
        let port = free_port();
        let dir = temp_dir(&format!("pg-{port}"));
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let out = Postgres::as_server_user("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "hotline", "--auth=trust", "--no-sync"])
            .output()
            .expect("initdb (apt-get install postgresql)");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres { dir, port };
        pg.start();
        pg
    }

    fn start(&self) {
        let out = Postgres::as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "20", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    fn stop(&self) {
        let _ = Postgres::as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "20", "stop"])
            .output();
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn url(&self) -> String {
        format!("postgres://hotline@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = self.pid();
        self.stop();
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `calls` short calls to 12345 (the caller hangs up in the welcome prompt).
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

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, d: &[&Daemon]) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; logs:\n{}",
            d.iter()
                .map(|d| tail(&d.log_text(), 30))
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ids in a node's own store.
fn local_ids(store: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(store).unwrap();
    let mut s = conn.prepare("SELECT id FROM events ORDER BY id").unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn report_cli(args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hotline"));
    c.arg("report")
        .arg("--config")
        .arg(repo().join("config/hotline.toml"))
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "hotline report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn two_nodes_ship_to_one_postgres_through_an_outage_and_its_report_is_their_sum() {
    let pg = Postgres::init();
    let url = pg.url();
    let a = Daemon::start(&[
        ("HOTLINE__NODE__ID", "node-a"),
        ("HOTLINE__STORE__POSTGRES", &url),
    ]);
    let b = Daemon::start(&[
        ("HOTLINE__NODE__ID", "node-b"),
        ("HOTLINE__STORE__POSTGRES", &url),
    ]);
    let both = [&a, &b];
    let caught_up = |d: &Daemon| {
        d.metric("hotline_store_ship_lag_events") == 0
            && d.metric("hotline_store_shipped_total") == local_ids(&d.store).len() as u64
    };

    // One caller on each node waits past the greeting into queue line-12348 and gives up
    // there (an abandon in each node's report), across the outage below.
    let waiting: Vec<_> = both
        .iter()
        .map(|d| {
            let (sip, rtp) = (d.sip, RtpSink::new());
            std::thread::spawn(move || {
                let out = Command::new("timeout")
                    .args(["40", "sipp", &sip.to_string(), "-sf"])
                    .arg(repo().join("sipp-scenarios/uac_call.xml"))
                    .args([
                        "-s",
                        "12348",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        &free_port().to_string(),
                    ])
                    .args([
                        "-m",
                        "1",
                        "-nostdin",
                        "-d",
                        "8500",
                        "-timeout",
                        "30",
                        "-timeout_error",
                    ])
                    .args(["-key", "rtp_port", &rtp.port.to_string()])
                    .current_dir(std::env::temp_dir())
                    .output()
                    .unwrap();
                drop(rtp);
                out
            })
        })
        .collect();
    short_calls(&a, 3);
    short_calls(&b, 2);
    wait_for(
        "both nodes shipped",
        Duration::from_secs(15),
        || both.iter().all(|d| caught_up(d)),
        &both,
    );
    assert!(
        both.iter()
            .all(|d| d.metric("hotline_store_ship_connected") == 1)
    );

    // PostgreSQL goes away; calls go on and their events wait in each node's store.
    pg.stop();
    short_calls(&a, 2);
    short_calls(&b, 3);
    wait_for(
        "the nodes see the outage",
        Duration::from_secs(10),
        || {
            both.iter().all(|d| {
                d.metric("hotline_store_ship_connected") == 0
                    && d.metric("hotline_store_ship_lag_events") > 0
            })
        },
        &both,
    );
    pg.start();
    for w in waiting {
        let out = w.join().unwrap();
        assert!(
            out.status.success(),
            "12348 caller: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    wait_for(
        "both nodes caught up after the outage",
        Duration::from_secs(25),
        || both.iter().all(|d| caught_up(d)),
        &both,
    );
    assert!(
        both.iter()
            .all(|d| d.log_text().contains("PostgreSQL reconnected"))
    );

    // Every event of each node exactly once, under its (node, id).
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for (node, d) in [("node-a", &a), ("node-b", &b)] {
        let ids: Vec<i64> = client
            .query(
                "SELECT id FROM hotline_events WHERE node = $1 ORDER BY id",
                &[&node],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let local = local_ids(&d.store);
        assert!(local.len() >= 12, "{node}: only {} events", local.len());
        assert_eq!(
            ids, local,
            "{node}: PostgreSQL holds exactly the node's events"
        );
    }

    // The province's report (from PostgreSQL) is the nodes' own records folded together.
    let day: String = client
        .query_one("SELECT min(left(at, 10)) FROM hotline_events", &[])
        .unwrap()
        .get(0);
    let from_pg = report_cli(&["--from-postgres", &url, "--day", &day], &[]);
    let cfg = hotline::config::Config::load(&repo().join("config/hotline.toml")).unwrap();
    let rules = hotline::metrics::report::load_rules(&cfg.reports.rules).unwrap();
    let mut records = hotline::metrics::store::read_day(&a.store, &day).unwrap();
    records.extend(hotline::metrics::store::read_day(&b.store, &day).unwrap());
    let summed = hotline::metrics::report::build(
        &day,
        &records,
        &cfg.seat_units(),
        &rules,
        &Default::default(),
    );
    assert_eq!(from_pg, summed.text());
    for d in both {
        let own = report_cli(&["--day", &day], &[("HOTLINE__STORE__PATH", &d.store)]);
        assert!(
            own.contains("line-12348: offered 1, answered 0, abandoned 1"),
            "{own}"
        );
    }
    assert!(
        from_pg.contains("line-12348: offered 2, answered 0, abandoned 2"),
        "{from_pg}"
    );

    // node-a restarts on its store with its cursor lost: it ships everything again, and
    // PostgreSQL keeps each event once.
    let store = a.store.clone();
    let shipped_before = a.metric("hotline_store_shipped_total");
    stop_daemon(a);
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute("UPDATE cursors SET last_id = 0 WHERE name = 'postgres'", [])
        .unwrap();
    let store_env = store.display().to_string();
    let a2 = Daemon::start(&[
        ("HOTLINE__NODE__ID", "node-a"),
        ("HOTLINE__STORE__POSTGRES", &url),
        ("HOTLINE__STORE__PATH", &store_env),
    ]);
    let all = local_ids(&store).len() as u64;
    assert!(all >= shipped_before);
    wait_for(
        "node-a shipped its store again",
        Duration::from_secs(15),
        || {
            a2.metric("hotline_store_shipped_total") == all
                && a2.metric("hotline_store_ship_lag_events") == 0
        },
        &[&a2],
    );
    let ids: Vec<i64> = client
        .query(
            "SELECT id FROM hotline_events WHERE node = 'node-a' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, local_ids(&store), "sent twice, stored once");
}

/// SIGTERM, and waits for the daemon to exit (its shipper delivers the last events first).
fn stop_daemon(mut d: Daemon) {
    d.sigterm();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
