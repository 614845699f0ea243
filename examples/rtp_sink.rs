//! Benchmark helper: one UDP socket that every benchmark call names as its RTP address.
//! Counts packets per SSRC and the gaps between consecutive packets of each stream inside a
//! measuring window, then prints one JSON line. Not part of the daemon.
//!
//! Arrival times are the kernel's (SO_TIMESTAMPNS): on loopback that is when the daemon sent
//! the packet, so the sink's own scheduling (it shares a core with SIPp) can't show up as a
//! gap in the daemon's stream.
//!
//! With `talk`, it also speaks: every source that sends to it gets a 20 ms PCMU packet every
//! 20 ms back (its own SSRC per source), as a caller's phone would; for bridged calls that is
//! the audio the seat echoes.
//!
//! With `srtp=SUITE:KEY` (an `a=crypto` suite and its base64 inline key||salt, e.g.
//! `srtp=AES_CM_128_HMAC_SHA1_80:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR`), what it receives
//! is SRTP: each packet is authenticated and decrypted with that key before it is counted, and
//! packets that fail (bad tag, replay, unreadable) are counted apart and not as arrivals. What
//! it says with `talk` is encrypted with the same key, or with `srtp_tx=SUITE:KEY` when the
//! daemon expects another; a benchmark keys every call with these, so one sink serves them all
//! (SRTP keeps a rollover counter and replay window per SSRC). The JSON line then also has
//! `srtp_auth_failures`, `srtp_replays` and `srtp_malformed`. Without it, nothing changes.
//!
//! usage: rtp_sink PORT SECONDS WINDOW_START WINDOW_END [talk] [srtp=SUITE:KEY] [srtp_tx=SUITE:KEY]

use hotline::media::sdes::CryptoAttr;
use hotline::media::srtp::SrtpSession;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(d);
    let port = arg(1, 40000.0) as u16;
    let talk = args.iter().skip(5).any(|a| a == "talk");
    let key_arg = |name: &str| {
        args.iter()
            .skip(5)
            .find_map(|a| a.strip_prefix(name))
            .map(|k| {
                CryptoAttr::from_suite_and_inline(k)
                    .unwrap_or_else(|e| panic!("{name}{k}: {e} (want SUITE:BASE64KEY)"))
            })
    };
    // SRTP: inbound keyed with srtp=, outbound with srtp_tx= (else the same key).
    let mut srtp = key_arg("srtp=").map(|rx| {
        let tx = key_arg("srtp_tx=").unwrap_or_else(|| rx.clone());
        SrtpSession::new(&tx, &rx).unwrap_or_else(|e| panic!("SRTP keys: {e}"))
    });
    let (mut plain, mut wire) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
    // (peer, ssrc, seq, ts) of every source, spoken to every 20 ms from its first packet on.
    let mut talkers: Vec<(std::net::SocketAddr, u32, u16, u32)> = Vec::new();
    let mut known: std::collections::HashSet<std::net::SocketAddr> =
        std::collections::HashSet::new();
    let mut next_talk = Instant::now();
    let mut pkt = [0xFFu8; 172];
    let total = Duration::from_secs_f64(arg(2, 30.0));
    let (w0, w1) = (
        Duration::from_secs_f64(arg(3, 10.0)),
        Duration::from_secs_f64(arg(4, 20.0)),
    );
    let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind sink port");
    // A large receive buffer so the sink, not the kernel queue, is what limits us.
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(32 << 20);
    // Busy-poll (yielding) instead of sleeping in recv: on loopback the *sender* runs the
    // receive path, and waking a sleeping receiver is charged to the daemon's CPU, a cost a
    // real NIC would not put on it.
    sock.set_nonblocking(true).unwrap();
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
    let fd = sock.as_raw_fd();
    let start = Instant::now();
    let start_ns = now_realtime_ns();
    let mut last: HashMap<u32, i128> = HashMap::new();
    let (mut in_window, mut total_pkts, mut gaps_over_40, mut max_gap) =
        (0u64, 0u64, 0u64, Duration::ZERO);
    let mut hist = [0u64; 200]; // gap histogram in ms
    let mut streams_in_window = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < total {
        if talk && Instant::now() >= next_talk {
            next_talk += Duration::from_millis(20);
            for (peer, ssrc, seq, ts) in talkers.iter_mut() {
                pkt[0] = 0x80;
                pkt[1] = 0;
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                pkt[4..8].copy_from_slice(&ts.to_be_bytes());
                pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                if let Some(s) = srtp.as_mut() {
                    if s.protect_rtp(&pkt, &mut wire).is_ok() {
                        let _ = sock.send_to(&wire, *peer);
                    }
                } else {
                    let _ = sock.send_to(&pkt, *peer);
                }
                *seq = seq.wrapping_add(1);
                *ts = ts.wrapping_add(160);
            }
        }
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let (n, ts_ns) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let Ok(msg) =
                recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
            else {
                std::thread::yield_now();
                continue;
            };
            let mut ts = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmTimestampns(t) = c {
                        ts = Some(t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128);
                    }
                }
            }
            if talk
                && let Some(src) = msg.address.and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| std::net::SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                })
                && known.insert(src)
            {
                talkers.push((src, 0x5A00_0000 | talkers.len() as u32, 0, 0));
            }
            (msg.bytes, ts.unwrap_or_else(now_realtime_ns))
        };
        // SRTP: only what authenticates (and is no replay) arrives; the rest is counted apart.
        let (buf, n) = match srtp.as_mut() {
            Some(s) => match s.unprotect_rtp(&buf[..n], &mut plain) {
                Ok(()) => (&plain[..], plain.len()),
                Err(_) => continue,
            },
            None => (&buf[..], n),
        };
        total_pkts += 1;
        if n < 12 {
            continue;
        }
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let t = Duration::from_nanos((ts_ns - start_ns).max(0) as u64);
        let prev = last.insert(ssrc, ts_ns);
        if t >= w0 && t <= w1 {
            in_window += 1;
            streams_in_window.insert(ssrc);
            if let Some(p) = prev
                && p - start_ns >= w0.as_nanos() as i128
            {
                let gap = Duration::from_nanos((ts_ns - p).max(0) as u64);
                max_gap = max_gap.max(gap);
                if gap > Duration::from_millis(40) {
                    gaps_over_40 += 1;
                }
                hist[(gap.as_millis() as usize).min(199)] += 1;
            }
        }
    }
    let gaps: u64 = hist.iter().sum();
    let pct = |q: f64| {
        let target = (gaps as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (ms, c) in hist.iter().enumerate() {
            acc += c;
            if acc >= target {
                return ms;
            }
        }
        199
    };
    let secs = (w1 - w0).as_secs_f64();
    let srtp_figures = srtp.map_or(String::new(), |s| {
        let c = s.counters();
        format!(
            ",\"srtp_auth_failures\":{},\"srtp_replays\":{},\"srtp_malformed\":{}",
            c.auth_failures, c.replays, c.malformed
        )
    });
    println!(
        "{{\"packets_total\":{total_pkts},\"packets_window\":{in_window},\"pps_window\":{:.0},\"streams_window\":{},\"max_gap_ms\":{:.1},\"gaps_over_40ms\":{gaps_over_40},\"p99_gap_ms\":{},\"p999_gap_ms\":{}{srtp_figures}}}",
        in_window as f64 / secs,
        streams_in_window.len(),
        max_gap.as_secs_f64() * 1000.0,
        pct(0.99),
        pct(0.999)
    );
}

fn now_realtime_ns() -> i128 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as i128
}
