//! Call control without sockets or sleeping: SIP goes in with a virtual `now`, what the core
//! sends comes out. Retransmission timers, the CANCEL race and ACK loss are checked to the
//! millisecond.
mod sim;

use hotline::sip::{Peer, Transport};
use hotline::time::Now;
use sim::SimCore;
use std::time::Duration;

fn core(ring_ms: u64) -> SimCore {
    sim::core_with(false, |cfg| cfg.sip.ring_ms = ring_ms)
}

const PEER: &str = "127.0.0.1:5070";

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: PEER.parse().unwrap(),
    }
}

fn invite(branch: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:138@127.0.0.1>;tag=ft\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:138@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn request(method: &str, branch: &str, to_tag: &str, cseq: u32) -> String {
    format!(
        "{method} sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:138@127.0.0.1>;tag=ft\r\nTo: <sip:12345@127.0.0.1>{to_tag}\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Status codes (and for requests the method) of everything sent since the last call.
fn drain(c: &mut SimCore) -> Vec<String> {
    let mut out = vec![];
    while let Some(t) = c.poll_transmit() {
        let text = String::from_utf8_lossy(&t.bytes).to_string();
        let first = text.lines().next().unwrap_or("").to_string();
        out.push(
            first
                .strip_prefix("SIP/2.0 ")
                .map(|s| s[..3].to_string())
                .unwrap_or_else(|| first.split(' ').next().unwrap().to_string()),
        );
    }
    out
}

fn to_tag_of_last_200(c: &mut SimCore, t0: Now) -> (String, Vec<String>) {
    c.handle_datagram(t0, invite("z9hG4bK1").as_bytes(), peer());
    let mut tag = String::new();
    let mut codes = vec![];
    while let Some(t) = c.poll_transmit() {
        let text = String::from_utf8_lossy(&t.bytes).to_string();
        codes.push(text[8..11].to_string());
        if text.starts_with("SIP/2.0 200") {
            let to = text.lines().find(|l| l.starts_with("To:")).unwrap();
            tag = to.split(";tag=").nth(1).unwrap().trim().to_string();
        }
    }
    (format!(";tag={tag}"), codes)
}

fn run_until(c: &mut SimCore, from: Now, until: Now, step_ms: u64) -> Vec<(u128, String)> {
    let mut now = from;
    let mut out = vec![];
    while now < until {
        now += Duration::from_millis(step_ms);
        c.handle_timeout(now);
        for s in drain(c) {
            out.push(((now - from).as_millis(), s));
        }
    }
    out
}

#[test]
fn invite_is_answered_and_2xx_retransmitted_until_ack() {
    let mut c = core(0);
    let t0 = sim::t0();
    let (tag, codes) = to_tag_of_last_200(&mut c, t0);
    assert_eq!(codes, ["100", "180", "200"]);
    // the same INVITE again: absorbed, no second call
    c.handle_datagram(t0, invite("z9hG4bK1").as_bytes(), peer());
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.active_calls(), 1);
    assert_eq!(c.media_io().open, 1);
    let sent = run_until(&mut c, t0, t0 + Duration::from_millis(2000), 10);
    assert_eq!(
        sent,
        vec![(500, "200".to_string()), (1500, "200".to_string())],
        "T1 doubling"
    );
    c.handle_datagram(t0, request("ACK", "z9hG4bK2", &tag, 1).as_bytes(), peer());
    assert!(
        run_until(
            &mut c,
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(10),
            10
        )
        .is_empty(),
        "ACK stops retransmission"
    );
    c.handle_datagram(t0, request("BYE", "z9hG4bK3", &tag, 2).as_bytes(), peer());
    assert_eq!(drain(&mut c), ["200"]);
    assert_eq!(c.active_calls(), 0);
    assert_eq!(c.media_io().open, 0, "RTP port released");
}

#[test]
fn lost_ack_ends_the_call_with_bye_after_64_t1() {
    let mut c = core(0);
    let t0 = sim::t0();
    to_tag_of_last_200(&mut c, t0);
    let sent = run_until(&mut c, t0, t0 + Duration::from_secs(33), 10);
    let oks: Vec<u128> = sent
        .iter()
        .filter(|(_, s)| s == "200")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        oks,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    let byes: Vec<u128> = sent
        .iter()
        .filter(|(_, s)| s == "BYE")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(byes[..2], [32000, 32500], "BYE at 64*T1, then timer E");
    // BYE unanswered: retransmitted, then the call goes at 64*T1 after it.
    let later = run_until(
        &mut c,
        t0 + Duration::from_secs(33),
        t0 + Duration::from_secs(70),
        10,
    );
    assert!(later.iter().all(|(_, s)| s == "BYE") && !later.is_empty());
    assert_eq!(c.active_calls(), 0);
}

#[test]
fn cancel_races() {
    // CANCEL while ringing: 200 + 487; the 487 is retransmitted until its ACK.
    let mut c = core(3000);
    let t0 = sim::t0();
    c.handle_datagram(t0, invite("z9hG4bK1").as_bytes(), peer());
    assert_eq!(drain(&mut c), ["100", "180"]);
    c.handle_datagram(t0, request("CANCEL", "z9hG4bK1", "", 1).as_bytes(), peer());
    assert_eq!(drain(&mut c), ["200", "487"]);
    assert_eq!(c.active_calls(), 0);
    let re = run_until(&mut c, t0, t0 + Duration::from_millis(1600), 10);
    assert_eq!(
        re,
        vec![(500, "487".to_string()), (1500, "487".to_string())]
    );
    c.handle_datagram(
        t0,
        request("ACK", "z9hG4bK1", ";tag=x", 1).as_bytes(),
        peer(),
    );
    assert!(
        run_until(
            &mut c,
            t0 + Duration::from_millis(1600),
            t0 + Duration::from_secs(5),
            10
        )
        .is_empty()
    );
    // no ring timer fires for the cancelled call
    assert!(
        run_until(
            &mut c,
            t0 + Duration::from_secs(5),
            t0 + Duration::from_secs(6),
            10
        )
        .is_empty()
    );

    // CANCEL after the 200: 200 to the CANCEL, the call goes on.
    let mut c = core(0);
    to_tag_of_last_200(&mut c, t0);
    c.handle_datagram(t0, request("CANCEL", "z9hG4bK1", "", 1).as_bytes(), peer());
    assert_eq!(drain(&mut c), ["200"]);
    assert_eq!(c.active_calls(), 1);

    // CANCEL for nothing: 481.
    let mut c = core(0);
    c.handle_datagram(
        t0,
        request("CANCEL", "z9hG4bKnone", "", 1).as_bytes(),
        peer(),
    );
    assert_eq!(drain(&mut c), ["481"]);
}

#[test]
fn in_dialog_requests_for_unknown_dialogs_get_481_and_media_is_paced() {
    let mut c = core(0);
    let t0 = sim::t0();
    c.handle_datagram(
        t0,
        request("BYE", "z9hG4bK9", ";tag=nope", 2).as_bytes(),
        peer(),
    );
    assert_eq!(drain(&mut c), ["481"]);
    let (tag, _) = to_tag_of_last_200(&mut c, t0);
    c.handle_datagram(t0, request("ACK", "z9hG4bK2", &tag, 1).as_bytes(), peer());
    for ms in (0..=1000).step_by(5) {
        c.tick_media(t0 + Duration::from_millis(ms));
    }
    assert_eq!(
        c.media_io().sent,
        51,
        "one packet per 20 ms, from the first tick"
    );
    // BYE with a wrong to-tag is not our dialog
    c.handle_datagram(
        t0,
        request("BYE", "z9hG4bK8", ";tag=other", 2).as_bytes(),
        peer(),
    );
    assert_eq!(drain(&mut c), ["481"]);
    assert_eq!(c.active_calls(), 1);
}

#[test]
fn bye_while_ringing_gets_200_and_the_invite_487_and_merged_invites_482() {
    let mut c = core(3000);
    let t0 = sim::t0();
    c.handle_datagram(t0, invite("z9hG4bK1").as_bytes(), peer());
    let mut tag = String::new();
    while let Some(t) = c.poll_transmit() {
        let text = String::from_utf8_lossy(&t.bytes).to_string();
        if text.starts_with("SIP/2.0 180") {
            tag = text
                .lines()
                .find(|l| l.starts_with("To:"))
                .unwrap()
                .split(";tag=")
                .nth(1)
                .unwrap()
                .trim()
                .to_string();
        }
    }
    // the same request arriving by another path (new branch, no To tag): 482
    c.handle_datagram(t0, invite("z9hG4bK-other").as_bytes(), peer());
    assert_eq!(drain(&mut c), ["482"]);
    assert_eq!(c.active_calls(), 1);
    c.handle_datagram(
        t0,
        request("BYE", "z9hG4bK5", &format!(";tag={tag}"), 2).as_bytes(),
        peer(),
    );
    assert_eq!(drain(&mut c), ["200", "487"]);
    assert_eq!(c.active_calls(), 0);
    assert_eq!(c.media_io().open, 0);
}

#[test]
fn final_responses_outside_dialogs_carry_a_to_tag() {
    let mut c = core(0);
    let t0 = sim::t0();
    c.handle_datagram(t0, request("OPTIONS", "z9hG4bK7", "", 1).as_bytes(), peer());
    let t = c.poll_transmit().unwrap();
    let text = String::from_utf8_lossy(&t.bytes);
    assert!(text.starts_with("SIP/2.0 200"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("To:") && l.contains(";tag=")),
        "{text}"
    );
}
