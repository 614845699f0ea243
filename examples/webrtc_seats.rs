//! Browser seats without a browser, for the benchmark and the tests (a headless Chromium
//! cannot open hundreds of legs): each seat connects to `/sip` over WebSocket (subprotocol
//! sip), registers with digest like JsSIP, answers each INVITE with a WebRTC answer (ICE
//! full agent, controlling; DTLS client; rtcp-mux), sends ICE checks to the daemon's
//! candidate, runs the DTLS-SRTP handshake and then echoes the caller's audio back, each
//! packet decrypted and encrypted again (what a browser's SRTP costs the daemon is what is
//! measured, so the echo goes through real SRTP both ways).
//!
//!   webrtc_seats HTTP_ADDR USERS PASSWORD SECONDS [--no-dtls]
//!
//! USERS is one user (`1003`) or a range (`b0001-b0500`, scripts/seatpool.py's names);
//! `{user}` in PASSWORD is replaced by each user (`demo-{user}`). With `--no-dtls` the seats
//! answer but never start the handshake (the daemon must fail the offer over). At the end it
//! prints one JSON line: seats registered, calls answered, handshakes done, packets echoed.
use hotline::media::dtls_srtp::{self, DtlsIdentity};
use md5::Digest as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stun::message::Setter;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Default)]
struct Counts {
    registered: AtomicU64,
    answered: AtomicU64,
    keyed: AtomicU64,
    echoed: AtomicU64,
    failed: AtomicU64,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn md5_hex(s: &str) -> String {
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn param<'a>(h: &'a str, name: &str) -> Option<&'a str> {
    let at = h.find(&format!("{name}="))? + name.len() + 1;
    let rest = &h[at..];
    Some(match rest.strip_prefix('"') {
        Some(r) => &r[..r.find('"')?],
        None => rest.split([',', ' ']).next()?,
    })
}

fn sdp_attr<'a>(sdp: &'a str, key: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| {
        l.trim()
            .strip_prefix("a=")?
            .strip_prefix(key)?
            .strip_prefix(':')
    })
}

/// The daemon's host candidate: `a=candidate:1 1 UDP prio IP PORT typ host`.
fn candidate(sdp: &str) -> Option<SocketAddr> {
    let c = sdp_attr(sdp, "candidate")?;
    let f: Vec<&str> = c.split_whitespace().collect();
    format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
}

fn ok_response(invite: &str, to_tag: &str, body: &str, contact: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for l in invite.split("\r\n").skip(1) {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(l);
                out.push_str("\r\n");
            }
            "to" => {
                out.push_str(&format!("{l};tag={to_tag}\r\n"));
            }
            "" => break,
            _ => {}
        }
    }
    out.push_str(&format!(
        "Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    out
}

async fn seat(
    http: String,
    user: String,
    password: String,
    identity: DtlsIdentity,
    do_dtls: bool,
    counts: Arc<Counts>,
) -> Result<(), String> {
    let mut req = format!("ws://{http}/sip")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "sip".parse().map_err(|_| "header")?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    use futures_util::{SinkExt, StreamExt};
    let host = format!("{user}.invalid");
    let contact = format!("sip:{user}@{host};transport=ws");
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{http} SIP/2.0\r\nVia: SIP/2.0/WS {host};branch=z9hG4bK{user}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{http}>;tag=r{user}\r\nTo: <sip:{user}@{http}>\r\n\
             Call-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>;expires=3600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    ws.send(Message::text(register(1, "")))
        .await
        .map_err(|e| e.to_string())?;
    let mut cseq = 1;
    let mut legs: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    while let Some(m) = ws.next().await {
        let Ok(Message::Text(t)) = m else { continue };
        let msg = t.as_str();
        if msg.starts_with("SIP/2.0 401") && cseq == 1 {
            let ch = header(msg, "WWW-Authenticate").ok_or("no challenge")?;
            let nonce = param(ch, "nonce").ok_or("no nonce")?;
            let uri = format!("sip:{http}");
            let ha1 = md5_hex(&format!("{user}:hotline:{password}"));
            let ha2 = md5_hex(&format!("REGISTER:{uri}"));
            let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
            let auth = format!(
                "Authorization: Digest username=\"{user}\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
            );
            cseq = 2;
            ws.send(Message::text(register(2, &auth)))
                .await
                .map_err(|e| e.to_string())?;
        } else if msg.starts_with("SIP/2.0 200")
            && header(msg, "CSeq").is_some_and(|c| c.ends_with("REGISTER"))
        {
            counts.registered.fetch_add(1, Ordering::Relaxed);
        } else if msg.starts_with("SIP/2.0 ") {
            if header(msg, "CSeq").is_some_and(|c| c.ends_with("REGISTER")) {
                return Err(format!(
                    "REGISTER refused: {}",
                    msg.lines().next().unwrap_or("")
                ));
            }
        } else if msg.starts_with("INVITE ") {
            let body = msg.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
            let (Some(ufrag), Some(pwd), Some(fp), Some(daemon)) = (
                sdp_attr(body, "ice-ufrag"),
                sdp_attr(body, "ice-pwd"),
                sdp_attr(body, "fingerprint"),
                candidate(body),
            ) else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let pt = body
                .lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|m| m.split_whitespace().nth(2))
                .unwrap_or("0")
                .to_string();
            let sock = Arc::new(
                UdpSocket::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let port = sock.local_addr().map_err(|e| e.to_string())?.port();
            let ours = hotline::media::ice::IceLite::generate(&mut rand::rng());
            let answer = format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio {port} UDP/TLS/RTP/SAVPF {pt} 101\r\n\
                 c=IN IP4 127.0.0.1\r\na=mid:0\r\na=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n\
                 a=fingerprint:{f}\r\na=setup:active\r\na=rtcp-mux\r\na=sendrecv\r\n\
                 a=rtpmap:{pt} {codec}/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                 a=candidate:1 1 UDP 2130706431 127.0.0.1 {port} typ host\r\n",
                u = ours.ufrag,
                p = ours.pwd,
                f = identity.fingerprint,
                codec = if pt == "8" { "PCMA" } else { "PCMU" },
            );
            let ok = ok_response(msg, &format!("t{user}"), &answer, &contact);
            ws.send(Message::text(ok))
                .await
                .map_err(|e| e.to_string())?;
            counts.answered.fetch_add(1, Ordering::Relaxed);
            if !do_dtls {
                continue;
            }
            let (remote_ufrag, remote_pwd, fp) =
                (ufrag.to_string(), pwd.to_string(), fp.to_string());
            let (identity, counts, ours) = (identity.clone(), counts.clone(), ours.clone());
            legs.push(tokio::spawn(async move {
                if let Err(e) = leg(
                    sock,
                    daemon,
                    ours,
                    remote_ufrag,
                    remote_pwd,
                    fp,
                    identity,
                    &counts,
                )
                .await
                {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("leg: {e}");
                }
            }));
        } else if msg.starts_with("BYE ")
            || msg.starts_with("CANCEL ")
            || msg.starts_with("OPTIONS ")
            || msg.starts_with("INFO ")
        {
            let mut out = String::from("SIP/2.0 200 OK\r\n");
            for l in msg.split("\r\n").skip(1) {
                let name = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
                    out.push_str(l);
                    out.push_str("\r\n");
                }
                if l.is_empty() {
                    break;
                }
            }
            out.push_str("Content-Length: 0\r\n\r\n");
            ws.send(Message::text(out))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One answered call: ICE check, DTLS client handshake, then SRTP echo until the daemon
/// stops sending for 3 s.
#[allow(clippy::too_many_arguments)]
async fn leg(
    sock: Arc<UdpSocket>,
    daemon: SocketAddr,
    ours: hotline::media::ice::IceLite,
    remote_ufrag: String,
    remote_pwd: String,
    fingerprint: String,
    identity: DtlsIdentity,
    counts: &Counts,
) -> Result<(), String> {
    use stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME, RawAttribute};
    use stun::message::{BINDING_REQUEST, Message as Stun};
    let mut check = Stun::new();
    {
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(stun::agent::TransactionId::new()),
            Box::new(stun::textattrs::TextAttribute::new(
                ATTR_USERNAME,
                format!("{remote_ufrag}:{}", ours.ufrag),
            )),
            Box::new(RawAttribute {
                typ: ATTR_USE_CANDIDATE,
                length: 0,
                value: vec![],
            }),
            Box::new(stun::integrity::MessageIntegrity::new_short_term_integrity(
                remote_pwd,
            )),
            Box::new(stun::fingerprint::FINGERPRINT),
        ];
        check.build(&setters).map_err(|e| e.to_string())?;
    }
    sock.send_to(&check.raw, daemon)
        .await
        .map_err(|e| e.to_string())?;
    let (dtls_tx, dtls_rx) = mpsc::channel::<Vec<u8>>(32);
    let (expect_tx, expect_rx) = oneshot::channel();
    let _ = expect_tx.send(fingerprint);
    let s2 = sock.clone();
    let send: dtls_srtp::SendFn = Arc::new(move |b: &[u8]| s2.try_send_to(b, daemon));
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut handshake = Box::pin(dtls_srtp::connect(
        identity,
        dtls_rx,
        send,
        local,
        expect_rx,
        Duration::from_secs(10),
    ));
    let mut buf = vec![0u8; 2048];
    let mut session = None;
    let mut _conn = None;
    let mut plain = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    loop {
        tokio::select! {
            r = &mut handshake, if session.is_none() => {
                let secured = r.map_err(|e| e.to_string())?;
                session = Some(secured.session);
                _conn = Some(secured.conn);
                counts.keyed.fetch_add(1, Ordering::Relaxed);
            }
            r = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)) => {
                let Ok(Ok((n, _))) = r else { return Ok(()) };
                let p = &buf[..n];
                match p.first() {
                    Some(0..=3) => {}
                    Some(20..=63) => { let _ = dtls_tx.try_send(p.to_vec()); }
                    Some(128..=191) => {
                        let Some(s) = session.as_mut() else { continue };
                        if p.get(1).is_some_and(|b| (192..=223).contains(b)) { continue; }
                        if s.unprotect_rtp(p, &mut plain).is_ok() && s.protect_rtp(&plain, &mut out).is_ok() {
                            let _ = sock.send_to(&out, daemon).await;
                            counts.echoed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: webrtc_seats HTTP_ADDR USERS PASSWORD SECONDS [--no-dtls]");
        std::process::exit(2);
    }
    let (http, password, seconds) = (
        a[1].clone(),
        a[3].clone(),
        a[4].parse::<u64>().unwrap_or(30),
    );
    let users: Vec<String> = match a[2].split_once('-') {
        Some((from, to)) => {
            let digits = |u: &str| {
                u.trim_start_matches(|c: char| !c.is_ascii_digit())
                    .to_string()
            };
            let prefix = from
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_string();
            let width = digits(from).len();
            let (lo, hi) = (
                digits(from).parse::<u32>().unwrap_or(1),
                digits(to).parse::<u32>().unwrap_or(1),
            );
            (lo..=hi).map(|i| format!("{prefix}{i:0width$}")).collect()
        }
        None => vec![a[2].clone()],
    };
    let do_dtls = !a.iter().any(|x| x == "--no-dtls");
    let identity = match DtlsIdentity::generate() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for user in users {
        let (http, password, identity, counts) = (
            http.clone(),
            password.replace("{user}", &user),
            identity.clone(),
            counts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = seat(
                http,
                user.clone(),
                password,
                identity,
                do_dtls,
                counts.clone(),
            )
            .await
            {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("{user}: {e}");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let c = &counts;
    println!(
        "{{\"registered\": {}, \"answered\": {}, \"keyed\": {}, \"echoed\": {}, \"failed\": {}}}",
        c.registered.load(Ordering::Relaxed),
        c.answered.load(Ordering::Relaxed),
        c.keyed.load(Ordering::Relaxed),
        c.echoed.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed)
    );
    std::process::exit(0);
}
