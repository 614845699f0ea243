//! Lossy signalling: in a network namespace of the test's own, nftables drops 20 % of the SIP
//! datagrams each way (this kernel has no netem). Callers to the IVR and callers bridged to a
//! seat's phone all complete through retransmission (theirs and the daemon's), and nothing
//! leaks: every call is written ended and the daemon is idle afterwards.
mod common;
use common::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("hl-loss-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ns = Netns(name);
        ns.must(&["ip", "link", "set", "lo", "up"], true);
        ns.must(&["nft", "add", "table", "inet", "loss"], false);
        ns.must(
            &[
                "nft",
                "add chain inet loss in { type filter hook input priority 0; }",
            ],
            false,
        );
        for dir in ["dport", "sport"] {
            ns.must(
                &[
                    "nft",
                    &format!(
                        "add rule inet loss in udp {dir} 5060 numgen random mod 100 < 20 drop"
                    ),
                ],
                false,
            );
        }
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Runs a setup step (creating the namespace first when `create`); panics with what it said.
    fn must(&self, args: &[&str], create: bool) {
        if create {
            let out = Command::new("ip")
                .args(["netns", "add", &self.0])
                .output()
                .expect("ip (iproute2)");
            assert!(
                out.status.success(),
                "cannot create a network namespace (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let args: Vec<&str> = args.iter().flat_map(|a| a.split(' ')).collect();
        let out = self.cmd(&args).output().expect("run in the namespace");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn http(&self, method: &str, path: &str, body: Option<&str>) -> Option<String> {
        let mut c = self.cmd(&["curl", "-s", "--max-time", "2", "-X", method]);
        c.arg(format!("http://127.0.0.1:8080{path}"))
            .args(["-H", &format!("Authorization: Bearer {API_TOKEN}")]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "-d", b]);
        }
        let out = c.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn health(&self, field: &str) -> Option<u64> {
        let body = self.http("GET", "/healthz", None)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v[field].as_u64()
    }

    fn sipp(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(&[
            "timeout",
            "150",
            "sipp",
            "127.0.0.1:5060",
            "-i",
            "127.0.0.1",
        ]);
        c.args([
            "-nostdin",
            "-timeout",
            "140",
            "-timeout_error",
            "-max_retrans",
            "12",
        ])
        .args(args)
        .current_dir(std::env::temp_dir());
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn scenario(name: &str) -> String {
    repo()
        .join("sipp-scenarios")
        .join(name)
        .display()
        .to_string()
}

fn ok(out: &Output, what: &str, log: &std::path::Path) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&std::fs::read_to_string(log).unwrap_or_default(), 40)
    );
}

/// Retransmissions SIPp counted (the "Retrans" column of its final screen).
fn retransmissions(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("---------->") || l.contains("<----------"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let i = cols.iter().position(|c| c.contains("----"))?;
            let mut nums = cols[i + 1..].iter().filter(|c| c.parse::<u64>().is_ok());
            nums.next();
            nums.next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn with_a_fifth_of_sip_datagrams_lost_each_way_every_call_completes_and_nothing_leaks() {
    let ns = Netns::new();
    let dir = temp_dir("lossy");
    let store = dir.join("store.sqlite");
    let log = dir.join("daemon.log");
    let mut daemon: Child = ns
        .cmd(&[env!("CARGO_BIN_EXE_hotline"), "run", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__SIP__LISTEN", "127.0.0.1:5060")
        .env("HOTLINE__HTTP__LISTEN", "127.0.0.1:8080")
        .env("HOTLINE__RTP__PORT_MIN", "20000")
        .env("HOTLINE__RTP__PORT_MAX", "21000")
        .env("HOTLINE__RTP__BIND_IP", "127.0.0.1")
        .env("HOTLINE__STORE__PATH", &store)
        .env("HOTLINE__STORE__QUEUE_LOG", "")
        .env("HOTLINE__HTTP__TOKENS__TESTS", API_TOKEN)
        .env("HOTLINE__REGISTRAR__QUALIFY_S", "0")
        .env("HOTLINE__OVERLOAD__MAX_LAG_MS", "0")
        .env("HOTLINE__QUEUES__LINE-12348__WRAP_UP_S", "0")
        .env("HOTLINE__LOG__LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("daemon in the namespace");
    let up = Instant::now() + Duration::from_secs(20);
    while ns.health("calls_active").is_none() {
        assert!(Instant::now() < up, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A seat's phone in the namespace, registered (through the loss) and logged in.
    let reg = ns
        .sipp(&[
            "-sf",
            &scenario("register_stay.xml"),
            "-s",
            "1003",
            "-p",
            "5080",
        ])
        .args(["-m", "1", "-au", "1003", "-ap", "demo-1003"])
        .output()
        .unwrap();
    ok(&reg, "REGISTER through the loss", &log);
    let phone = ns
        .sipp(&[
            "-sf",
            &scenario("agent_bridge.xml"),
            "-p",
            "5080",
            "-m",
            "2",
            "-d",
            "300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let login = ns.http(
        "POST",
        "/api/seats/1003/state",
        Some(r#"{"action":"login"}"#),
    );
    assert!(
        login.is_some_and(|b| b.contains("available")),
        "seat logged in"
    );

    // 30 callers to the IVR and 2 to 12348, answered one after the other by the seat (they stay 20 s: with the loss, an offer may ring a while); every
    // SIP datagram has a one-in-five chance of being dropped on the way in either direction.
    let (ivr, seated) = std::thread::scope(|s| {
        let ivr = s.spawn(|| {
            ns.sipp(&[
                "-sf",
                &scenario("uac_call.xml"),
                "-s",
                "12345",
                "-p",
                "5070",
            ])
            .args(["-m", "30", "-r", "5", "-l", "30", "-d", "2000"])
            .args(["-key", "rtp_port", "9"])
            .output()
            .unwrap()
        });
        let seated = s.spawn(|| {
            ns.sipp(&[
                "-sf",
                &scenario("uac_call.xml"),
                "-s",
                "12348",
                "-p",
                "5071",
            ])
            .args(["-m", "2", "-r", "1", "-rp", "3000", "-l", "1", "-d", "20000"])
            .args(["-key", "rtp_port", "9"])
            .output()
            .unwrap()
        });
        (ivr.join().unwrap(), seated.join().unwrap())
    });
    ok(&ivr, "IVR callers", &log);
    ok(&seated, "callers to the seat", &log);
    let phone = phone.wait_with_output().unwrap();
    ok(&phone, "seat phone", &log);
    let retrans = retransmissions(&ivr) + retransmissions(&seated) + retransmissions(&phone);
    eprintln!("SIPp retransmitted {retrans} times");
    assert!(retrans > 10, "the loss was real: {retrans} retransmissions");

    // Nothing leaks: the daemon is idle (its own retransmissions and transactions done) and
    // every call is written ended.
    let idle = Instant::now() + Duration::from_secs(40);
    while ns.health("calls_active") != Some(0) {
        assert!(Instant::now() < idle, "calls still active");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seat = ns.http("GET", "/api/seats", None).unwrap();
    let seats: serde_json::Value = serde_json::from_str(&seat).unwrap();
    let s1003 = seats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "1003")
        .unwrap();
    assert_eq!(s1003["state"], "available", "the seat is free again");
    assert_eq!(s1003["today"]["answered"], 2, "it answered both");
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let conn = rusqlite::Connection::open(&store).unwrap();
    let count = |kind: &str| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM events WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(count("call_start"), 32);
    assert_eq!(count("call_end"), 32, "every call written ended");
    let open: i64 = conn
        .query_row("SELECT COUNT(*) FROM open_calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open, 0);
}
