//! The ops wallboard in a real browser. A daemon has one call behind it (answered by seat 1004
//! on line-12333), seat 1004 logged in with its phone registered, and a caller waiting on
//! line-12348 (no expert logged in). Debian's headless Chromium loads /wallboard#token=…: the
//! rendered page shows every queue and the seats with today's figures, which only the script's
//! token-carrying fetches can have brought; a screenshot is decoded and must show the board,
//! with the available seat's colour. Without a token, or with a wrong one, the page says so.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The state colours of the page (`--available` and the error banner's background).
const AVAILABLE_RGB: [u8; 3] = [0x1a, 0x7f, 0x37];
const BANNER_RGB: [u8; 3] = [0x5a, 0x1e, 0x1e];
const BACKGROUND_RGB: [u8; 3] = [0x0d, 0x11, 0x17];

/// Runs headless Chromium on `url` with `args` (`--dump-dom` or `--screenshot=…`), a fresh
/// profile and a bounded time; fails with its stderr when it does not succeed.
fn chromium(args: &[&str], url: &str) -> Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is not installed: apt-get install chromium (./scripts/test installs it when missing)"
    );
    let profile = temp_dir(&format!("chromium-profile-{}", free_port()));
    let out = Command::new("timeout")
        .args(["-k", "5", "60", CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        // Colours exactly as the CSS says them, for the pixel checks below.
        .args(["--force-color-profile=srgb", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Virtual time: the page's polls run (about three, 1.5 s apart) without 5 s of waiting.
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium under timeout");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium {args:?} {url} failed ({:?})\nstderr:\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    out
}

/// The DOM after the page's script ran.
fn rendered(url: &str) -> String {
    let out = chromium(&["--dump-dom"], url);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dom.contains("id=\"queues\""),
        "not the wallboard:\n{dom}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The markup from the start tag whose attributes contain `marker` up to `end` (after it).
fn element<'a>(dom: &'a str, marker: &str, end: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not on the page:\n{dom}"));
    let from = dom[..at].rfind('<').unwrap_or(at);
    let rest = &dom[at..];
    &dom[from..at + rest.find(end).unwrap_or(rest.len())]
}

/// The text of the first element with class `class` (as its first class) inside `html`.
fn cell(html: &str, class: &str) -> String {
    let needle = format!("class=\"{class}");
    let at = html
        .match_indices(&needle)
        .map(|(i, _)| i)
        .find(|&i| matches!(html.as_bytes().get(i + needle.len()), Some(b'"' | b' ')))
        .unwrap_or_else(|| panic!("no .{class} in {html}"));
    let rest = &html[at..];
    let open = rest.find('>').map(|i| i + 1).unwrap_or(rest.len());
    let text = &rest[open..];
    text[..text.find('<').unwrap_or(text.len())].to_string()
}

/// The page's error banner: (shown, text).
fn banner(dom: &str) -> (bool, String) {
    let tag = element(dom, "id=\"error\"", ">");
    (!tag.contains("hidden"), cell(dom, "banner"))
}

fn queues(d: &Daemon) -> Vec<serde_json::Value> {
    let body = d.http_get("/api/queues").expect("api/queues");
    serde_json::from_str::<serde_json::Value>(&body)
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_queue(d: &Daemon, name: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = queues(d)
            .into_iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("no queue {name}"));
        if cond(&q) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: queue {name} is {q}\n{}",
            tail(&d.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A SIPp caller that stays on the line until the test ends.
struct Caller(Child);

impl Drop for Caller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn waiting_caller(d: &Daemon, number: &str, rtp_port: u16) -> Caller {
    let child = Command::new("sipp")
        .arg(d.sip.to_string())
        .arg("-sf")
        .arg(repo().join("sipp-scenarios/uac_call.xml"))
        .args([
            "-s",
            number,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
        // Holds for 90 s at most, and is killed when the test is done with it.
        .args(["-d", "90000", "-timeout", "100", "-timeout_error"])
        .args(["-key", "rtp_port", &rtp_port.to_string()])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    Caller(child)
}

/// Status line and headers of a GET without a token, and the body.
fn raw_get(d: &Daemon, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&d.http, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

struct Screenshot {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

fn decode_png(path: &Path) -> Screenshot {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0u8; reader.output_buffer_size().expect("image size")];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let samples = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(samples)
        .map(|p| match samples {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Screenshot {
        width: info.width,
        height: info.height,
        rgb,
    }
}

fn near(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

fn screenshot(url: &str, path: &PathBuf) -> Screenshot {
    let _ = std::fs::remove_file(path);
    chromium(
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,800",
        ],
        url,
    );
    decode_png(path)
}

#[test]
fn the_wallboard_shows_queues_and_seats_in_headless_chromium() {
    let d = Daemon::start(&[
        ("HOTLINE__REGISTRAR__QUALIFY_S", "0"),
        ("HOTLINE__QUEUES__LINE-12333__WRAP_UP_S", "1"),
    ]);

    // The page itself is open and holds nothing; the data behind it is not.
    let (head, page) = raw_get(&d, "/wallboard");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("connect-src 'self'"),
        "the token may only go back to the daemon: {head}"
    );
    assert!(
        !page.contains("line-12348") && !page.contains("1004"),
        "the page carries no data"
    );
    assert!(raw_get(&d, "/api/queues").0.starts_with("http/1.1 401"));

    // One call answered by seat 1004, and a caller who waits on line-12348 meanwhile.
    let port = free_port();
    register_from_port(&d, "1004", "demo-1004", port);
    let phone = sipp_uas_with(&d, "agent_answer.xml", port, 1, &["-d", "500"]);
    agent_api(&d, "1004", "login");
    let (sink_a, sink_b) = (RtpSink::new(), RtpSink::new());
    let _waiting = waiting_caller(&d, "12348", sink_b.port);
    let out = sipp(
        &d,
        "uac_call_remote_bye.xml",
        "12333",
        &["-key", "rtp_port", &sink_a.port.to_string()],
    );
    assert_sipp_ok(&out, &d);
    child_ok(phone, "seat 1004's phone");
    wait_seat(
        &d,
        "1004",
        Duration::from_secs(10),
        "free after the call and its wrap-up",
        |s| s["state"] == "available" && s["today"]["answered"] == 1 && s["registered"] == true,
    );
    wait_queue(&d, "line-12333", "the call counted", |q| {
        q["today"]["answered"] == 1
    });
    wait_queue(&d, "line-12348", "a caller waiting", |q| {
        q["waiting"] == 1 && q["longest_wait_s"].as_u64() >= Some(1)
    });

    let base = format!("http://{}/wallboard", d.http);
    let url = format!("{base}#token={API_TOKEN}");
    let dom = rendered(&url);
    let (shown, text) = banner(&dom);
    assert!(!shown, "no error with the right token, yet: {text}");
    for q in queues(&d) {
        let name = q["name"].as_str().expect("queue name");
        assert!(
            dom.contains(&format!("data-queue=\"{name}\"")),
            "queue {name} missing from the board"
        );
    }
    let waiting = element(&dom, "data-queue=\"line-12348\"", "</tr>");
    assert_eq!(cell(waiting, "waiting"), "1", "{waiting}");
    assert_eq!(cell(waiting, "agents"), "0/0", "{waiting}");
    let longest = cell(waiting, "longest");
    assert!(
        longest.len() >= 4
            && longest.contains(':')
            && longest.chars().all(|c| c.is_ascii_digit() || c == ':'),
        "longest wait {longest:?}"
    );
    let served = element(&dom, "data-queue=\"line-12333\"", "</tr>");
    for (class, want) in [
        ("waiting", "0"),
        ("agents", "1/1"),
        ("answered", "1"),
        ("abandoned", "0"),
        ("sl15", "100%"),
        ("satisfaction", "—"),
    ] {
        assert_eq!(cell(served, class), want, "line-12333 {class}: {served}");
    }
    let tile = element(&dom, "data-seat=\"1004\"", "class=\"tile");
    assert!(
        tile.contains("data-state=\"available\"") && tile.contains("state-available"),
        "{tile}"
    );
    assert_eq!(cell(tile, "state"), "空闲 available", "{tile}");
    assert!(
        cell(tile, "unit").contains("省人力资源社会保障厅"),
        "{tile}"
    );
    for (class, want) in [
        ("id", "1004"),
        ("offered", "1"),
        ("answered", "1"),
        ("rate", "100%"),
    ] {
        assert_eq!(cell(tile, class), want, "seat 1004 {class}: {tile}");
    }
    let logged_out = element(&dom, "data-seat=\"1003\"", "class=\"tile");
    assert!(
        logged_out.contains("data-state=\"logged_out\"")
            && logged_out.contains("未签入 logged out"),
        "{logged_out}"
    );
    assert!(!dom.contains(API_TOKEN), "the token stays out of the page");

    // The screenshot: a real 1280×800 picture of the board, not a blank page.
    let shots = temp_dir("wallboard-screenshots");
    let path = shots.join("wallboard.png");
    let shot = screenshot(&url, &path);
    assert_eq!((shot.width, shot.height), (1280, 800), "{}", path.display());
    let total = shot.rgb.len();
    let drawn = shot
        .rgb
        .iter()
        .filter(|&&p| !near(p, BACKGROUND_RGB, 6))
        .count();
    assert!(
        drawn * 100 >= total * 30,
        "only {drawn} of {total} pixels differ from the background: {}",
        path.display()
    );
    // An available seat's tile is some 280×160 pixels of its state colour, less its text.
    let green = shot
        .rgb
        .iter()
        .filter(|&&p| near(p, AVAILABLE_RGB, 4))
        .count();
    assert!(
        green >= 15_000,
        "{green} pixels of the available colour: {}",
        path.display()
    );
    let red = shot.rgb.iter().filter(|&&p| near(p, BANNER_RGB, 4)).count();
    assert!(
        red < 500,
        "an error banner is on the screenshot: {}",
        path.display()
    );

    // Without a token, or with a wrong one: a clear banner and no data.
    let dom = rendered(&base);
    let (shown, text) = banner(&dom);
    assert!(
        shown && text.contains("缺少令牌") && text.contains("#token="),
        "banner without a token: {text:?}"
    );
    assert!(!dom.contains("data-queue="), "no data without a token");
    let dom = rendered(&format!("{base}#token=not-the-token-000"));
    let (shown, text) = banner(&dom);
    assert!(
        shown && text.contains("401") && text.contains("wrong bearer token"),
        "banner with a wrong token: {text:?}"
    );
    assert!(!dom.contains("data-queue="), "no data with a wrong token");
    let shot = screenshot(
        &format!("{base}#token=not-the-token-000"),
        &shots.join("wallboard-401.png"),
    );
    let red = shot.rgb.iter().filter(|&&p| near(p, BANNER_RGB, 4)).count();
    assert!(
        red >= 5_000,
        "{red} pixels of the error banner: {}",
        shots.join("wallboard-401.png").display()
    );

    assert!(
        !d.log_text().contains(API_TOKEN),
        "the token (in the fragment) never reaches the daemon's log"
    );
    // Kept only when an assertion above failed, to be looked at.
    let _ = std::fs::remove_dir_all(&shots);
}
