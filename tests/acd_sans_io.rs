//! The ACD's choices without sockets or sleeping: ring-all and the seat beaten to the
//! answer, priority callers and the bound on overtaking, penalties that widen with the wait,
//! and the "nobody logged in" overflow. SIP goes in with a virtual `now`; what the core sends
//! comes out.
mod sim;

use hotline::config::Config;
use hotline::core::AgentAction;
use hotline::time::Now;
use sim::{header, sent, udp};
use std::time::Duration;

type C = sim::SimCore;

/// The shipped configuration with `f` applied; 12348 greets and queues in line-12348.
fn core(f: impl FnOnce(&mut Config)) -> C {
    sim::core_with(true, |cfg| {
        cfg.sip.ring_ms = 0;
        cfg.registrar.qualify_s = 0;
        f(cfg)
    })
}

/// Seat `user` registers from `addr` (digest) and logs in.
fn seat_up(c: &mut C, t: Now, user: &str, addr: &str) {
    use hotline::sip::digest::{Algorithm, ha1};
    let reg = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKr{user}{cseq}\r\nFrom: <sip:{user}@127.0.0.1>;tag=r\r\n\
             To: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{addr}>\r\nExpires: 3600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    c.handle_datagram(t, reg(1, "").as_bytes(), udp(addr));
    let challenge = sent(c).pop().unwrap();
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let h1 = ha1(Algorithm::Md5, user, "hotline", &format!("demo-{user}"));
    let h2 = Algorithm::Md5.hash_hex("REGISTER:sip:127.0.0.1");
    let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:c:auth:{h2}"));
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"c\"\r\n"
    );
    c.handle_datagram(t, reg(2, &auth).as_bytes(), udp(addr));
    assert!(sent(c)[0].starts_with("SIP/2.0 200"));
    c.agent_action_by_id(t, user, AgentAction::Login, "test")
        .unwrap();
}

/// A caller `from` dials `number` (call id `id`); the To header of the daemon's answer.
fn call(c: &mut C, t: Now, id: &str, from: &str, number: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let inv = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{id}\r\n\
         From: <sip:{from}@127.0.0.1>;tag=t-{id}\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:{from}@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    c.handle_datagram(t, inv.as_bytes(), udp("127.0.0.1:5070"));
    let out = sent(c);
    let ok = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("answered");
    let ack = format!(
        "ACK sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ack-{id}\r\n{}\r\n{}\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(ok, "From:"),
        header(ok, "To:")
    );
    c.handle_datagram(t, ack.as_bytes(), udp("127.0.0.1:5070"));
    header(ok, "To:").to_string()
}

/// Runs media and timers in 5 ms steps from `from` to `until`; every message sent, with
/// the time it went out.
fn run(c: &mut C, from: Now, until: Now) -> Vec<(Now, String)> {
    let mut now = from;
    let mut out = vec![];
    while now < until {
        now += Duration::from_millis(5);
        c.tick_media(now);
        c.handle_timeout(now);
        out.extend(sent(c).into_iter().map(|m| (now, m)));
    }
    out
}

/// The first INVITE to each seat (a request line `INVITE sip:<user>@`), in order sent.
fn offers(msgs: &[(Now, String)]) -> Vec<(Now, String, String)> {
    let mut seen = std::collections::HashSet::new();
    msgs.iter()
        .filter(|(_, m)| m.starts_with("INVITE sip:100"))
        .filter(|(_, m)| seen.insert(header(m, "Call-ID:").to_string()))
        .map(|(t, m)| (*t, m[11..15].to_string(), m.clone()))
        .collect()
}

fn ringing(c: &mut C, t: Now, invite: &str, seat_addr: &str) {
    let r = format!(
        "SIP/2.0 180 Ringing\r\n{}\r\n{}\r\n{};tag=seat\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header(invite, "Via:"),
        header(invite, "From:"),
        header(invite, "To:"),
        header(invite, "Call-ID:"),
        header(invite, "CSeq:"),
    );
    c.handle_datagram(t, r.as_bytes(), udp(seat_addr));
}

fn answer(c: &mut C, t: Now, invite: &str, seat_addr: &str) {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=seat\r\n{}\r\n{}\r\nContact: <sip:seat@{seat_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(invite, "Via:"),
        header(invite, "From:"),
        header(invite, "To:"),
        header(invite, "Call-ID:"),
        header(invite, "CSeq:"),
        sdp.len()
    );
    c.handle_datagram(t, ok.as_bytes(), udp(seat_addr));
}

fn seat_today(c: &C, id: &str) -> hotline::metrics::figures::SeatFigures {
    c.seat_directory().get(id).unwrap().today.clone()
}

const S1: &str = "127.0.0.1:6001";
const S2: &str = "127.0.0.1:6002";

#[test]
fn ring_all_rings_every_free_seat_and_the_first_answer_wins() {
    let mut c = core(|cfg| {
        cfg.queues.get_mut("line-12348").unwrap().strategy = hotline::acd::queue::Strategy::RingAll;
        cfg.seats[0].queues.push("line-12348".into());
        cfg.seats[1].queues.push("line-12348".into());
    });
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1001", S1);
    seat_up(&mut c, t0, "1002", S2);
    call(&mut c, t0, "a", "13800000001", "12348");
    let msgs = run(&mut c, t0, t0 + Duration::from_secs(8));
    let o = offers(&msgs);
    let seats: Vec<&str> = o.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(seats, ["1001", "1002"], "both seats ring at once");
    assert_eq!(o[0].0, o[1].0);
    // Both ring; 1002 answers; 1001 is CANCELled and not counted as offered.
    let t1 = t0 + Duration::from_secs(8);
    ringing(&mut c, t1, &o[0].2, S1);
    ringing(&mut c, t1, &o[1].2, S2);
    answer(&mut c, t1, &o[1].2, S2);
    let out = sent(&mut c);
    let cancel = out
        .iter()
        .find(|m| m.starts_with("CANCEL sip:1001@"))
        .expect("1001's ringing is cancelled");
    assert_eq!(header(cancel, "Call-ID:"), header(&o[0].2, "Call-ID:"));
    let caller_tx = 2; // the first RTP endpoint opened
    assert!(c.media_io().bridged.contains(&caller_tx));
    let s1 = seat_today(&c, "1001");
    let s2 = seat_today(&c, "1002");
    assert_eq!((s2.offered, s2.answered), (1, 1));
    assert_eq!(
        (s1.offered, s1.answered, s1.missed),
        (0, 0, 0),
        "beaten to the answer is not an offer"
    );
    sent(&mut c);
    run(&mut c, t1, t1 + Duration::from_millis(1100)); // the queue view is refreshed each second
    let q = c.queue_directory().get("line-12348").unwrap().today.clone();
    assert_eq!((q.offered, q.answered), (1, 1));
    // 1001's phone answers too late (the 200 crossed the CANCEL): hung up at once, and the
    // caller stays bridged to 1002.
    let t1 = t1 + Duration::from_millis(1100);
    answer(&mut c, t1, &o[0].2, S1);
    let out = sent(&mut c);
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE sip:seat@127.0.0.1:6001")),
        "{out:?}"
    );
    assert_eq!(seat_today(&c, "1001").offered, 0);
    assert_eq!(
        c.seat_directory().get("1001").unwrap().state,
        hotline::acd::agent::State::Available
    );
    assert!(
        c.media_io().bridged.contains(&caller_tx),
        "the loser's hang-up leaves the winner's bridge alone"
    );
    assert_eq!(
        c.seat_directory().get("1002").unwrap().state,
        hotline::acd::agent::State::OnCall
    );
}

#[test]
fn a_priority_caller_goes_first_but_not_past_the_overtaking_bound() {
    let mut c = core(|cfg| {
        cfg.queues.get_mut("line-12348").unwrap().max_overtaken_s = 20;
    });
    let t0 = sim::t0();
    // Three callers queue while the seat is logged out: a normal caller, then (2 s later)
    // 110 handing over a caller, then another normal one.
    call(&mut c, t0, "early", "13800000001", "12348");
    let t1 = t0 + Duration::from_secs(2);
    let mut msgs = run(&mut c, t0, t1);
    call(&mut c, t1, "from110", "110", "12348");
    call(&mut c, t1, "late", "13800000002", "12348");
    // The seat logs in 10 s on: the 110 caller overtakes the early one (waited < 20 s).
    let t2 = t0 + Duration::from_secs(10);
    msgs.extend(run(&mut c, t1, t2));
    seat_up(&mut c, t2, "1003", S1);
    msgs.extend(run(&mut c, t2, t2 + Duration::from_millis(20)));
    let o = offers(&msgs);
    assert_eq!(o.len(), 1);
    assert!(
        o[0].2.contains("From: \"110\""),
        "the 110 hand-over first: {}",
        header(&o[0].2, "From:")
    );
    // The seat lets it ring out (15 s) and rests 5 s. By then the early caller has waited
    // past the 20 s bound: it is not overtaken again and goes before "late" and 110.
    let t3 = t2 + Duration::from_secs(40);
    msgs.extend(run(&mut c, t2 + Duration::from_millis(20), t3));
    let o = offers(&msgs);
    assert!(o.len() >= 2, "{}", o.len());
    assert!(
        o[1].2.contains("From: \"13800000001\""),
        "{}",
        header(&o[1].2, "From:")
    );
    assert_eq!(
        o[1].0.duration_since(t2),
        Duration::from_secs(20),
        "after the 15 s ring and the 5 s retry delay"
    );
}

#[test]
fn a_high_penalty_seat_is_offered_the_caller_only_once_the_wait_has_widened() {
    // Shipped: general widens every 30 s and seat 1002 has penalty 1 there.
    let mut c = core(|_| {});
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1002", S2);
    call(&mut c, t0, "a", "13800000001", "12345");
    // Welcome, then the menu; the caller waits for the menu timeouts and lands in "agent"
    // (general) via on_fail after the retries: simpler to press 0 than to wait.
    let mut now = t0;
    let mut msgs = vec![];
    msgs.extend(run(&mut c, now, now + Duration::from_secs(7)));
    now += Duration::from_secs(7);
    // DTMF 0 through the RTP reader's event
    let key = c.call_keys().into_iter().next().unwrap();
    c.handle_rtp_event(now, hotline::core::RtpEvent::Digit(key, '0'));
    let queued = now;
    msgs.extend(run(&mut c, now, now + Duration::from_secs(40)));
    let o = offers(&msgs);
    assert_eq!(o.len(), 1, "one offer");
    let waited = o[0].0.duration_since(queued);
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_millis(30_100),
        "offered after {waited:?}"
    );
}

#[test]
fn with_nobody_logged_in_the_enterprise_queue_sends_callers_to_general() {
    let mut c = core(|_| {});
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1001", S1); // general only
    call(&mut c, t0, "a", "13800000001", "12345");
    let mut msgs = run(&mut c, t0, t0 + Duration::from_secs(7));
    let now = t0 + Duration::from_secs(7);
    let key = c.call_keys().into_iter().next().unwrap();
    c.handle_rtp_event(now, hotline::core::RtpEvent::Digit(key, '3')); // enterprise
    msgs.extend(run(&mut c, now, now + Duration::from_secs(2)));
    let o = offers(&msgs);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].1, "1001");
    assert!(o[0].2.contains("X-Hotline-Queue: general"));
    assert!(
        o[0].0.duration_since(now) < Duration::from_millis(50),
        "at once, not after the maximum wait"
    );
    let q = c.queue_directory().get("enterprise").unwrap().today.clone();
    assert_eq!((q.offered, q.no_agents), (1, 1));
}

#[test]
fn when_the_maximum_wait_ends_a_seat_still_ringing_is_cancelled() {
    let mut c = core(|cfg| {
        let q = cfg.queues.get_mut("line-12348").unwrap();
        q.max_wait_s = 20;
        q.ring_timeout_s = 60;
        q.on_timeout = "sorry".into();
    });
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1);
    call(&mut c, t0, "a", "13800000001", "12348");
    let msgs = run(&mut c, t0, t0 + Duration::from_secs(8));
    let o = offers(&msgs);
    assert_eq!(o.len(), 1);
    let t1 = t0 + Duration::from_secs(8);
    ringing(&mut c, t1, &o[0].2, S1);
    let queued = o[0].0;
    let more = run(&mut c, t1, t1 + Duration::from_secs(20));
    let (at, cancel) = more
        .iter()
        .find(|(_, m)| m.starts_with("CANCEL sip:1003@"))
        .expect("the ringing seat is cancelled");
    assert_eq!(header(cancel, "Call-ID:"), header(&o[0].2, "Call-ID:"));
    let waited = at.duration_since(queued);
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_millis(20_100),
        "{waited:?}"
    );
    let s = seat_today(&c, "1003");
    assert_eq!(
        (s.offered, s.withdrawn, s.missed),
        (1, 1, 0),
        "the caller's wait ended, not the seat's fault"
    );
}

#[test]
fn the_answer_to_a_seats_re_invite_is_retransmitted_until_its_ack() {
    let mut c = core(|_| {});
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1);
    call(&mut c, t0, "a", "13800000001", "12348");
    let msgs = run(&mut c, t0, t0 + Duration::from_secs(8));
    let o = offers(&msgs);
    let t1 = t0 + Duration::from_secs(8);
    answer(&mut c, t1, &o[0].2, S1);
    sent(&mut c);
    // The seat puts the caller on hold.
    let invite = &o[0].2;
    let our_tag = header(invite, "From:").split(";tag=").nth(1).unwrap();
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 8 0\r\na=sendonly\r\n";
    let req = |method: &str, cseq: u32, body: &str| {
        format!(
            "{method} sip:hotline@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-{method}{cseq}\r\nFrom: <sip:1003@127.0.0.1>;tag=seat\r\n\
             To: <sip:138@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: {cseq} {method}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            header(invite, "Call-ID:"),
            body.len()
        )
    };
    c.handle_datagram(t1, req("INVITE", 2, sdp).as_bytes(), udp(S1));
    let out = sent(&mut c);
    let ok = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("200 to the hold re-INVITE");
    assert!(ok.contains("a=recvonly"), "{ok}");
    assert!(
        ok.contains("m=audio") && ok.contains("RTP/AVP 0"),
        "answered with the call's codec (PCMU) though PCMA came first: {ok}"
    );
    let again = run(&mut c, t1, t1 + Duration::from_millis(2000));
    let times: Vec<u128> = again
        .iter()
        .filter(|(_, m)| m.starts_with("SIP/2.0 200"))
        .map(|(t, _)| t.duration_since(t1).as_millis())
        .collect();
    assert_eq!(times, [500, 1500], "T1 doubling until the ACK");
    let t2 = t1 + Duration::from_millis(2000);
    c.handle_datagram(t2, req("ACK", 2, "").as_bytes(), udp(S1));
    let after = run(&mut c, t2, t2 + Duration::from_secs(5));
    assert!(
        !after.iter().any(|(_, m)| m.starts_with("SIP/2.0 200")),
        "no retransmission after the ACK"
    );
    assert!(
        !after.iter().any(|(_, m)| m.starts_with("BYE")),
        "the call goes on"
    );
}

/// A small driver for scripted ACD scenarios: two seats (1001, 1002) serve line-12348.
struct Sim {
    c: C,
    now: Now,
    seen: std::collections::HashSet<String>,
}

/// An offer: the seat it went to and the INVITE.
struct Offer {
    seat: String,
    invite: String,
}

impl Sim {
    fn new(strategy: hotline::acd::queue::Strategy) -> Sim {
        let c = core(|cfg| {
            let q = cfg.queues.get_mut("line-12348").unwrap();
            q.strategy = strategy;
            q.wrap_up_s = 0;
            cfg.seats[0].queues.push("line-12348".into());
            cfg.seats[1].queues.push("line-12348".into());
        });
        let mut sim = Sim {
            c,
            now: sim::t0(),
            seen: Default::default(),
        };
        seat_up(&mut sim.c, sim.now, "1001", S1);
        sim.advance(1);
        seat_up(&mut sim.c, sim.now, "1002", S2); // 1001 has been idle longer
        sim
    }

    /// Runs `secs` seconds; the offers made meanwhile.
    fn advance(&mut self, secs: u64) -> Vec<Offer> {
        let msgs = run(&mut self.c, self.now, self.now + Duration::from_secs(secs));
        self.now += Duration::from_secs(secs);
        offers(&msgs)
            .into_iter()
            .filter(|o| self.seen.insert(header(&o.2, "Call-ID:").to_string()))
            .map(|o| Offer {
                seat: o.1,
                invite: o.2,
            })
            .collect()
    }

    /// A caller dials 12348 and waits through the greeting: the offer it gets.
    fn caller(&mut self, id: &str) -> Offer {
        call(&mut self.c, self.now, id, "13800000000", "12348");
        let mut o = self.advance(8);
        assert_eq!(o.len(), 1, "one offer for {id}");
        let o = o.remove(0);
        answer(&mut self.c, self.now, &o.invite, addr_of(&o.seat));
        sent(&mut self.c);
        o
    }

    fn seat_hangs_up(&mut self, o: &Offer) {
        let our_tag = header(&o.invite, "From:")
            .split(";tag=")
            .nth(1)
            .unwrap()
            .to_string();
        let bye = format!(
            "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKbye{}\r\nFrom: <sip:{}@127.0.0.1>;tag=seat\r\n\
             To: <sip:x@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            addr_of(&o.seat),
            our_tag,
            o.seat,
            header(&o.invite, "Call-ID:")
        );
        self.c
            .handle_datagram(self.now, bye.as_bytes(), udp(addr_of(&o.seat)));
        self.advance(1);
    }
}

fn addr_of(seat: &str) -> &'static str {
    if seat == "1001" { S1 } else { S2 }
}

/// A to 1001, B to 1002; 1002 comes free first, then 1001; who gets C?
fn who_gets_c(strategy: hotline::acd::queue::Strategy) -> String {
    let mut sim = Sim::new(strategy);
    let a = sim.caller("a");
    let b = sim.caller("b");
    assert_eq!((a.seat.as_str(), b.seat.as_str()), ("1001", "1002"));
    sim.seat_hangs_up(&b);
    sim.advance(2);
    sim.seat_hangs_up(&a);
    sim.caller("c").seat
}

/// A to 1001, B to 1002; A ends, C to 1001, C ends, then B ends; who gets D?
fn who_gets_d(strategy: hotline::acd::queue::Strategy) -> String {
    let mut sim = Sim::new(strategy);
    let a = sim.caller("a");
    let b = sim.caller("b");
    sim.seat_hangs_up(&a);
    let c = sim.caller("c");
    assert_eq!(c.seat, "1001", "the only free seat");
    sim.seat_hangs_up(&c);
    sim.advance(2);
    sim.seat_hangs_up(&b);
    sim.caller("d").seat
}

#[test]
fn longest_idle_round_robin_and_fewest_calls_choose_differently() {
    use hotline::acd::queue::Strategy::*;
    // C: 1002 has been free longest; round-robin goes on after 1002 (offered last) to 1001;
    // fewest-calls sees a tie (one call each) and takes the longest idle.
    assert_eq!(who_gets_c(LongestIdle), "1002");
    assert_eq!(who_gets_c(RoundRobin), "1001");
    assert_eq!(who_gets_c(FewestCalls), "1002");
    // D: 1001 has been free longest but took two calls to 1002's one.
    assert_eq!(who_gets_d(LongestIdle), "1001");
    assert_eq!(who_gets_d(FewestCalls), "1002");
    assert_eq!(who_gets_d(RoundRobin), "1002", "after 1001, offered last");
}

#[test]
fn a_seat_coming_free_after_wrap_up_is_offered_the_next_caller_at_once() {
    let mut c = core(|_| {});
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1); // line-12348, wrap-up 5 s
    call(&mut c, t0, "a", "138", "12348");
    call(&mut c, t0, "b", "139", "12348");
    // Greeting plays (~6.5 s), then both wait in line-12348; the seat gets caller a.
    let msgs = run(&mut c, t0, t0 + Duration::from_secs(10));
    let all_invites = msgs
        .iter()
        .filter(|(_, m)| m.starts_with("INVITE sip:1003@"))
        .count();
    let o = offers(&msgs);
    assert_eq!(o.len(), 1, "one seat, one offer at a time");
    assert!(
        all_invites > 1,
        "unanswered INVITE retransmitted on UDP (timer A)"
    );
    let invite = &o[0].2;
    assert!(invite.contains("X-Hotline-Queue: line-12348"));
    assert!(invite.contains("X-Hotline-Dialled: 12348"));
    assert!(
        invite.contains("From: \"138\" <sip:138@"),
        "the caller's number"
    );
    // The seat answers, then hangs up: caller a gets BYE; the agent wraps up for 5 s.
    let t1 = t0 + Duration::from_secs(10);
    answer(&mut c, t1, invite, S1);
    assert!(sent(&mut c).iter().any(|m| m.starts_with("ACK ")));
    let our_tag = header(invite, "From:").split(";tag=").nth(1).unwrap();
    let bye = format!(
        "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bKbye\r\nFrom: <sip:1003@127.0.0.1>;tag=seat\r\n\
         To: <sip:138@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        header(invite, "Call-ID:")
    );
    c.handle_datagram(t1, bye.as_bytes(), udp(S1));
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("SIP/2.0 200")),
        "200 to the seat's BYE"
    );
    assert!(out.iter().any(|m| m.starts_with("BYE ")), "BYE to caller a");
    // Exactly when wrap-up ends, caller b is offered: no polling delay.
    let next = offers(&run(&mut c, t1, t1 + Duration::from_secs(7)));
    let next: Vec<&(Now, String, String)> = next
        .iter()
        .filter(|x| header(&x.2, "Call-ID:") != header(invite, "Call-ID:"))
        .collect();
    assert_eq!(
        next.first().map(|x| x.0.duration_since(t1)),
        Some(Duration::from_secs(5)),
        "offered the moment wrap-up (5 s) ended"
    );
    assert!(next[0].2.contains("From: \"139\""), "caller b");
}

const S3: &str = "127.0.0.1:6003";

/// A seat's in-dialog BYE on the leg the daemon offered with `invite`.
fn seat_bye(c: &mut C, t: Now, invite: &str, seat_addr: &str) {
    let our_tag = header(invite, "From:").split(";tag=").nth(1).unwrap();
    let bye = format!(
        "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {seat_addr};branch=z9hG4bKbye{our_tag}\r\nFrom: <sip:seat@127.0.0.1>;tag=seat\r\n\
         To: <sip:x@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        header(invite, "Call-ID:")
    );
    c.handle_datagram(t, bye.as_bytes(), udp(seat_addr));
}

/// Expert group 8801 = queue line-12333 (ring-all) with seats 1004 (S2) and 1002 (S3), both
/// logged in; caller "a" to 12348 is answered by agent 1003 (S1). The core, the agent's
/// offer and the time.
fn agent_with_caller_and_two_experts() -> (C, String, String, Now) {
    let mut c = core(|cfg| {
        cfg.queues.get_mut("line-12333").unwrap().strategy = hotline::acd::queue::Strategy::RingAll;
        cfg.seats[1].queues.push("line-12333".into());
        cfg.targets.push(hotline::config::TargetConfig {
            number: "8801".into(),
            name: "社保专家".into(),
            kind: hotline::config::TargetKind::Expert,
            trunk: None,
            queue: Some("line-12333".into()),
            unit: None,
            timeout_s: 30,
            probe: false,
        });
    });
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1);
    let caller_to = call(&mut c, t0, "a", "13800000001", "12348");
    let o = offers(&run(&mut c, t0, t0 + Duration::from_secs(8)));
    let t1 = t0 + Duration::from_secs(8);
    answer(&mut c, t1, &o[0].2, S1);
    seat_up(&mut c, t1, "1004", S2);
    seat_up(&mut c, t1, "1002", S3);
    sent(&mut c);
    (c, o[0].2.clone(), caller_to, t1)
}

/// The transfer's offers to the two experts among `out`, both ringing now: (to 1004, to 1002).
fn experts_ring(c: &mut C, t: Now, out: &[String]) -> (String, String) {
    let o: Vec<&String> = out
        .iter()
        .filter(|m| m.starts_with("INVITE sip:100"))
        .collect();
    assert_eq!(o.len(), 2, "ring-all: both experts are offered it: {out:?}");
    let to = |user: &str| {
        o.iter()
            .find(|m| m.starts_with(&format!("INVITE sip:{user}@")))
            .map(|m| m.to_string())
            .unwrap_or_else(|| panic!("{user} offered: {out:?}"))
    };
    let (to_1004, to_1002) = (to("1004"), to("1002"));
    ringing(c, t, &to_1004, S2);
    ringing(c, t, &to_1002, S3);
    (to_1004, to_1002)
}

fn state(c: &C, id: &str) -> hotline::acd::agent::State {
    c.seat_directory().get(id).unwrap().state
}

#[test]
fn a_transfer_to_an_expert_group_rings_its_free_experts_and_an_expert_leaving_gives_the_caller_back()
 {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, _, t1) = agent_with_caller_and_two_experts();
    c.transfer_by_id(t1, "1003", "8801", false, "test").unwrap();
    let out = sent(&mut c);
    let (to_1004, to_1002) = experts_ring(&mut c, t1, &out);
    for m in [&to_1004, &to_1002] {
        assert!(m.contains("X-Hotline-Transfer-By: 1003"), "{m}");
        assert!(m.contains("X-Hotline-Queue: line-12333"), "{m}");
        assert!(
            m.contains("From: \"13800000001\""),
            "the caller's number: {m}"
        );
    }
    let t2 = t1 + Duration::from_secs(2);
    run(&mut c, t1, t2);
    answer(&mut c, t2, &to_1004, S2);
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("CANCEL sip:1002@")),
        "the other expert stops ringing: {out:?}"
    );
    assert_eq!(state(&c, "1004"), State::OnCall);
    assert_eq!(
        state(&c, "1003"),
        State::OnCall,
        "the agent is in the three-way call"
    );
    assert_eq!(seat_today(&c, "1002").offered, 0, "beaten to the answer");
    let caller_tx = 2;
    assert!(
        !c.media_io().bridged.contains(&caller_tx),
        "the caller is in the conference, not bridged to the agent alone"
    );
    // The agent's phone holds and resumes during the three-way call: the conference has the
    // caller's media, so the caller is neither given hold music nor bridged to the agent.
    let our_tag = header(&agent_invite, "From:")
        .split(";tag=")
        .nth(1)
        .unwrap();
    for (cseq, dir) in [(2, "sendonly"), (3, "sendrecv")] {
        let sdp = format!(
            "v=0\r\no=- 1 {cseq} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\na={dir}\r\n"
        );
        let reinvite = format!(
            "INVITE sip:hotline@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-hold{cseq}\r\nFrom: <sip:1003@127.0.0.1>;tag=seat\r\n\
             To: <sip:138@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: {cseq} INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header(&agent_invite, "Call-ID:"),
            sdp.len()
        );
        c.handle_datagram(t2, reinvite.as_bytes(), udp(S1));
        assert!(sent(&mut c).iter().any(|m| m.starts_with("SIP/2.0 200")));
        assert!(
            !c.media_io().bridged.contains(&caller_tx),
            "{dir}: the caller stays in the conference"
        );
    }
    // The expert leaves the three-way call: the agent has the caller back; the expert wraps
    // up; the caller is not hung up.
    let t3 = t2 + Duration::from_secs(5);
    run(&mut c, t2, t3);
    seat_bye(&mut c, t3, &to_1004, S2);
    let out = sent(&mut c);
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 200")), "{out:?}");
    assert!(
        !out.iter().any(|m| m.starts_with("BYE ")),
        "nobody else is hung up: {out:?}"
    );
    assert!(
        c.media_io().bridged.contains(&caller_tx),
        "caller and agent bridged again"
    );
    assert_eq!(state(&c, "1004"), State::WrapUp);
    assert_eq!(state(&c, "1003"), State::OnCall);
    assert_eq!(seat_today(&c, "1004").answered, 1);
    assert_eq!(c.active_calls(), 1);
    // The agent can transfer again, since the first one is over.
    c.transfer_by_id(t3, "1003", "8801", false, "test").unwrap();
    let again = sent(&mut c);
    assert!(
        again.iter().any(|m| m.starts_with("INVITE sip:1002@")),
        "{again:?}"
    );
}

#[test]
fn a_caller_hanging_up_while_the_experts_ring_cancels_them_and_frees_everyone() {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, caller_to, t1) = agent_with_caller_and_two_experts();
    c.transfer_by_id(t1, "1003", "8801", false, "test").unwrap();
    let out = sent(&mut c);
    experts_ring(&mut c, t1, &out);
    // The caller hangs up.
    let t2 = t1 + Duration::from_secs(3);
    run(&mut c, t1, t2);
    let waiting = |c: &C| c.queue_directory().get("line-12333").unwrap().waiting;
    assert_eq!(waiting(&c), 1, "the transfer waits for the expert queue");
    let bye = format!(
        "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-a\r\nFrom: <sip:13800000001@127.0.0.1>;tag=t-a\r\n\
         {caller_to}\r\nCall-ID: a\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    c.handle_datagram(t2, bye.as_bytes(), udp("127.0.0.1:5070"));
    let out = sent(&mut c);
    let cancels = out
        .iter()
        .filter(|m| m.starts_with("CANCEL sip:100"))
        .count();
    assert_eq!(cancels, 2, "both experts' offers withdrawn: {out:?}");
    let agent_call_id = header(&agent_invite, "Call-ID:");
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains(agent_call_id)),
        "the agent is hung up"
    );
    assert_eq!(state(&c, "1003"), State::WrapUp);
    run(&mut c, t2, t2 + Duration::from_millis(1100));
    assert_eq!(waiting(&c), 0);
    for e in ["1004", "1002"] {
        assert_eq!(state(&c, e), State::Available, "{e} free again");
        assert_eq!(
            seat_today(&c, e).missed,
            0,
            "a withdrawn offer is not {e}'s miss"
        );
    }
}

#[test]
fn with_the_agent_gone_the_expert_who_answers_has_the_caller_as_an_ordinary_call() {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, _, t1) = agent_with_caller_and_two_experts();
    c.transfer_by_id(t1, "1003", "8801", false, "test").unwrap();
    let out = sent(&mut c);
    let (_, to_1002) = experts_ring(&mut c, t1, &out);
    // The agent hangs up while the experts ring: the caller waits for them.
    let t2 = t1 + Duration::from_secs(2);
    run(&mut c, t1, t2);
    seat_bye(&mut c, t2, &agent_invite, S1);
    let out = sent(&mut c);
    assert!(
        !out.iter()
            .any(|m| m.starts_with("BYE ") || m.starts_with("CANCEL ")),
        "the caller and the offers stay: {out:?}"
    );
    assert_eq!(state(&c, "1003"), State::WrapUp);
    // 1002 answers: caller and expert are bridged, the other offer is CANCELled.
    let t3 = t2 + Duration::from_secs(1);
    answer(&mut c, t3, &to_1002, S3);
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("CANCEL sip:1004@")),
        "{out:?}"
    );
    assert_eq!(state(&c, "1002"), State::OnCall);
    let caller_tx = 2;
    assert!(
        c.media_io().bridged.contains(&caller_tx),
        "caller bridged to the expert"
    );
    // The expert hangs up: an ordinary end of a bridged call (line-12333 has no survey): the
    // caller is hung up and the expert wraps up.
    let t4 = t3 + Duration::from_secs(10);
    run(&mut c, t3, t4);
    seat_bye(&mut c, t4, &to_1002, S3);
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("BYE sip:13800000001@")),
        "the caller is hung up: {out:?}"
    );
    assert_eq!(state(&c, "1002"), State::WrapUp);
    assert_eq!(seat_today(&c, "1002").answered, 1);
    assert_eq!(seat_today(&c, "1004").missed, 0);
}

#[test]
fn a_blind_transfer_by_refer_to_an_expert_group_hands_the_caller_to_the_expert() {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, _, t1) = agent_with_caller_and_two_experts();
    let our_tag = header(&agent_invite, "From:")
        .split(";tag=")
        .nth(1)
        .unwrap();
    let refer = format!(
        "REFER sip:hotline@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-refer\r\nFrom: <sip:1003@127.0.0.1>;tag=seat\r\n\
         To: <sip:138@127.0.0.1>;tag={our_tag}\r\n{}\r\nCSeq: 2 REFER\r\nContact: <sip:1003@{S1}>\r\nRefer-To: <sip:8801@127.0.0.1>\r\nContent-Length: 0\r\n\r\n",
        header(&agent_invite, "Call-ID:")
    );
    c.handle_datagram(t1, refer.as_bytes(), udp(S1));
    let out = sent(&mut c);
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 202")), "{out:?}");
    assert!(
        out.iter()
            .any(|m| m.starts_with("NOTIFY ") && m.contains("SIP/2.0 100 Trying")),
        "{out:?}"
    );
    let (to_1004, _) = experts_ring(&mut c, t1, &out);
    let rung: Vec<String> = sent(&mut c)
        .into_iter()
        .filter(|m| m.starts_with("NOTIFY ") && m.contains("SIP/2.0 180 Ringing"))
        .collect();
    assert_eq!(
        rung.len(),
        1,
        "the agent's phone is told once that experts ring"
    );
    let t2 = t1 + Duration::from_secs(2);
    run(&mut c, t1, t2);
    answer(&mut c, t2, &to_1004, S2);
    let out = sent(&mut c);
    let agent_call_id = header(&agent_invite, "Call-ID:");
    assert!(
        out.iter().any(|m| m.starts_with("NOTIFY ")
            && m.contains("SIP/2.0 200 OK")
            && m.contains("terminated")),
        "the agent's phone is told the transfer succeeded: {out:?}"
    );
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains(agent_call_id)),
        "the agent's leg is done"
    );
    assert!(out.iter().any(|m| m.starts_with("CANCEL sip:1002@")));
    let caller_tx = 2;
    assert!(
        c.media_io().bridged.contains(&caller_tx),
        "caller bridged to the expert"
    );
    assert_eq!(state(&c, "1004"), State::OnCall);
    assert_eq!(state(&c, "1003"), State::WrapUp);
    assert_eq!(seat_today(&c, "1003").transferred, 1);
    assert_eq!(c.active_calls(), 1);
}

const TRUNK: &str = "127.0.0.1:5090";

/// Seat 1003's phone sends INVITE `cseq` for `number` in dialog `cid` (its tag "ct"), with
/// `auth` (a Proxy-Authorization line or nothing); what the core sends back.
fn seat_invite(c: &mut C, t: Now, number: &str, cid: &str, cseq: u32, auth: &str) -> Vec<String> {
    let sdp = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7100 RTP/AVP 0\r\n";
    let inv = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-{cid}-{cseq}\r\nFrom: <sip:1003@127.0.0.1>;tag=ct\r\n\
         To: <sip:{number}@127.0.0.1>\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:1003@{S1}>\r\nMax-Forwards: 70\r\n{auth}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    c.handle_datagram(t, inv.as_bytes(), udp(S1));
    sent(c)
}

/// The seat's consultation call to `number` through the daemon, digest-authenticated; what the
/// core sends once the INVITE is accepted.
fn seat_consults(c: &mut C, t: Now, number: &str, cid: &str) -> Vec<String> {
    use hotline::sip::digest::{Algorithm, ha1};
    let out = seat_invite(c, t, number, cid, 1, "");
    let challenge = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0 407"))
        .unwrap_or_else(|| panic!("challenged: {out:?}"));
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let uri = format!("sip:{number}@127.0.0.1");
    let h1 = ha1(Algorithm::Md5, "1003", "hotline", "demo-1003");
    let h2 = Algorithm::Md5.hash_hex(&format!("INVITE:{uri}"));
    let resp = Algorithm::Md5.hash_hex(&format!("{h1}:{nonce}:00000001:c:auth:{h2}"));
    let auth = format!(
        "Proxy-Authorization: Digest username=\"1003\", realm=\"hotline\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"c\"\r\n"
    );
    seat_invite(c, t, number, cid, 2, &auth)
}

/// The far end of a trunk answers our `invite` (tag "gw"), from TRUNK.
fn trunk_answers(c: &mut C, t: Now, invite: &str) {
    let sdp = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7200 RTP/AVP 0\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=gw\r\n{}\r\n{}\r\nContact: <sip:gw@{TRUNK}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(invite, "Via:"),
        header(invite, "From:"),
        header(invite, "To:"),
        header(invite, "Call-ID:"),
        header(invite, "CSeq:"),
        sdp.len()
    );
    c.handle_datagram(t, ok.as_bytes(), udp(TRUNK));
}

/// Caller "a" (13800000001) bridged to seat 1003 (S1), the sub-centre trunk at TRUNK: the
/// core, the seat's offer, the time and the caller's To header.
fn seat_with_caller() -> (C, String, Now, String) {
    let mut c = core(|cfg| {
        cfg.trunks.get_mut("subcentres").unwrap().address = TRUNK.parse().unwrap();
    });
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1);
    let caller_to = call(&mut c, t0, "a", "13800000001", "12348");
    let o = offers(&run(&mut c, t0, t0 + Duration::from_secs(8)));
    let t1 = t0 + Duration::from_secs(8);
    let agent_invite = o[0].2.clone();
    answer(&mut c, t1, &agent_invite, S1);
    sent(&mut c);
    (c, agent_invite, t1, caller_to)
}

/// The seat's REFER on its leg to the caller, with Replaces naming dialog `cid` (the
/// daemon's tag `our_tag`, the seat's "ct"); what the core sends.
fn refer_replacing(c: &mut C, t: Now, agent_invite: &str, cid: &str, our_tag: &str) -> Vec<String> {
    let leg_tag = header(agent_invite, "From:").split(";tag=").nth(1).unwrap();
    let refer = format!(
        "REFER sip:hotline@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-aref\r\nFrom: <sip:1003@127.0.0.1>;tag=seat\r\n\
         To: <sip:138@127.0.0.1>;tag={leg_tag}\r\n{}\r\nCSeq: 3 REFER\r\nContact: <sip:1003@{S1}>\r\n\
         Refer-To: <sip:12366@127.0.0.1?Replaces={cid}%3Bto-tag%3D{our_tag}%3Bfrom-tag%3Dct>\r\nContent-Length: 0\r\n\r\n",
        header(agent_invite, "Call-ID:")
    );
    c.handle_datagram(t, refer.as_bytes(), udp(S1));
    sent(c)
}

#[test]
fn attended_transfer_the_seat_consults_the_sub_centre_then_refers_with_replaces() {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, t1, _) = seat_with_caller();
    // The seat is challenged, then its consultation goes out over the trunk with the
    // caller's number.
    let out = seat_consults(&mut c, t1, "12366", "consult-1");
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 180")), "{out:?}");
    let to_trunk = out
        .iter()
        .find(|m| m.starts_with("INVITE sip:12366@127.0.0.1:5090"))
        .unwrap_or_else(|| panic!("the target is dialled over its trunk: {out:?}"))
        .clone();
    assert!(
        to_trunk.contains("From: <sip:13800000001@") || to_trunk.contains("13800000001"),
        "{to_trunk}"
    );
    assert!(
        to_trunk.contains("X-Hotline-Transfer-By: 1003"),
        "{to_trunk}"
    );
    // The sub-centre answers: the seat's consultation is answered and the two are bridged.
    let t2 = t1 + Duration::from_secs(2);
    trunk_answers(&mut c, t2, &to_trunk);
    let out = sent(&mut c);
    let ok = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("Call-ID: consult-1"))
        .unwrap_or_else(|| panic!("the consultation is answered: {out:?}"))
        .clone();
    let our_tag = header(&ok, "To:")
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_string();
    let ack = format!(
        "ACK sip:12366@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-cack\r\nFrom: <sip:1003@127.0.0.1>;tag=ct\r\n\
         To: <sip:12366@127.0.0.1>;tag={our_tag}\r\nCall-ID: consult-1\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    c.handle_datagram(t2, ack.as_bytes(), udp(S1));
    sent(&mut c);
    let mut records = vec![];
    while let Some(r) = c.poll_record() {
        records.push(r);
    }
    assert!(
        !records
            .iter()
            .any(|r| r.call_id.as_deref() == Some("consult-1")),
        "a consultation is not a citizen's call: no record of it"
    );
    // The agent transfers: REFER on the caller's leg, Replaces naming the consultation.
    let t3 = t2 + Duration::from_secs(5);
    let out = refer_replacing(&mut c, t3, &agent_invite, "consult-1", &our_tag);
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 202")), "{out:?}");
    assert!(
        out.iter().any(|m| m.starts_with("NOTIFY ")
            && m.contains("SIP/2.0 200 OK")
            && m.contains("terminated")),
        "the phone is told the transfer succeeded: {out:?}"
    );
    let leg_cid = header(&agent_invite, "Call-ID:");
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains(leg_cid)),
        "the agent's leg to the caller ends: {out:?}"
    );
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains("Call-ID: consult-1")),
        "the consultation ends: {out:?}"
    );
    assert!(
        !out.iter()
            .any(|m| m.starts_with("BYE sip:gw@") || m.starts_with("CANCEL")),
        "the sub-centre's call goes on, now with the caller: {out:?}"
    );
    let caller_tx = 2;
    assert!(
        c.media_io().bridged.contains(&caller_tx),
        "caller bridged to the sub-centre"
    );
    assert_eq!(state(&c, "1003"), State::WrapUp);
    assert_eq!(seat_today(&c, "1003").transferred, 1);
    let mut transfers = vec![];
    while let Some(r) = c.poll_record() {
        if r.event.kind() == "transfer" {
            transfers.push(r.event.detail());
        }
    }
    assert_eq!(
        transfers
            .iter()
            .map(|d| (d["outcome"].as_str(), d["mode"].as_str().or(None)))
            .collect::<Vec<_>>()[0],
        (Some("started"), Some("attended")),
        "{transfers:?}"
    );
    assert_eq!(transfers[1]["outcome"], "answered", "{transfers:?}");
    assert_eq!(transfers[0]["caller"], "13800000001");
    // The sub-centre hangs up at the end: so is the caller.
    let t4 = t3 + Duration::from_secs(30);
    run(&mut c, t3, t4);
    let bye = format!(
        "BYE sip:hotline@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bK-gwbye\r\n{};tag=gw\r\n{}\r\n{}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&to_trunk, "To:").replacen("To:", "From:", 1),
        header(&to_trunk, "From:").replacen("From:", "To:", 1),
        header(&to_trunk, "Call-ID:"),
    );
    c.handle_datagram(t4, bye.as_bytes(), udp(TRUNK));
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("BYE sip:13800000001@")),
        "the caller is hung up after the sub-centre: {out:?}"
    );
}

#[test]
fn semi_attended_transfer_while_the_target_rings_the_caller_waits_for_it() {
    use hotline::acd::agent::State;
    let (mut c, agent_invite, t1, _) = seat_with_caller();
    let out = seat_consults(&mut c, t1, "12366", "consult-2");
    let ringing_180 = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0 180") && m.contains("Call-ID: consult-2"))
        .expect("the consultation rings")
        .clone();
    let our_tag = header(&ringing_180, "To:")
        .split(";tag=")
        .nth(1)
        .unwrap()
        .to_string();
    let to_trunk = out
        .iter()
        .find(|m| m.starts_with("INVITE sip:12366@127.0.0.1:5090"))
        .expect("the target is dialled")
        .clone();
    // The agent transfers before the sub-centre answers: the consultation ends, the caller
    // waits for the sub-centre's call, which goes on.
    let t2 = t1 + Duration::from_secs(2);
    let out = refer_replacing(&mut c, t2, &agent_invite, "consult-2", &our_tag);
    assert!(out.iter().any(|m| m.starts_with("SIP/2.0 202")), "{out:?}");
    assert!(
        out.iter()
            .any(|m| m.starts_with("SIP/2.0 4") && m.contains("Call-ID: consult-2")),
        "the consultation's INVITE is ended: {out:?}"
    );
    assert!(
        !out.iter().any(|m| m.starts_with("CANCEL sip:12366")),
        "the sub-centre keeps ringing: {out:?}"
    );
    assert_eq!(
        state(&c, "1003"),
        State::OnCall,
        "until the sub-centre answers"
    );
    let t3 = t2 + Duration::from_secs(3);
    run(&mut c, t2, t3);
    trunk_answers(&mut c, t3, &to_trunk);
    let out = sent(&mut c);
    assert!(
        out.iter().any(|m| m.starts_with("NOTIFY ")
            && m.contains("SIP/2.0 200 OK")
            && m.contains("terminated")),
        "{out:?}"
    );
    let leg_cid = header(&agent_invite, "Call-ID:");
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains(leg_cid))
    );
    assert!(
        c.media_io().bridged.contains(&2),
        "caller bridged to the sub-centre"
    );
    assert_eq!(state(&c, "1003"), State::WrapUp);
}

#[test]
fn a_refer_with_replaces_naming_no_consultation_of_the_seat_gets_481() {
    let (mut c, agent_invite, t1, _) = seat_with_caller();
    let out = refer_replacing(&mut c, t1, &agent_invite, "nobody", "x");
    assert!(
        out.iter()
            .any(|m| m.starts_with("SIP/2.0 481") && m.contains("Warning: 399")),
        "{out:?}"
    );
    assert_eq!(
        c.seat_directory().get("1003").unwrap().state,
        hotline::acd::agent::State::OnCall,
        "the call goes on"
    );
}

#[test]
fn a_consultation_ends_when_the_caller_it_is_about_hangs_up() {
    let (mut c, _, t1, caller_to) = seat_with_caller();
    let out = seat_consults(&mut c, t1, "12366", "consult-3");
    let to_trunk = out
        .iter()
        .find(|m| m.starts_with("INVITE sip:12366@127.0.0.1:5090"))
        .expect("the target is dialled")
        .clone();
    let t2 = t1 + Duration::from_secs(1);
    trunk_answers(&mut c, t2, &to_trunk);
    let ok = sent(&mut c)
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("Call-ID: consult-3"))
        .expect("the consultation is answered");
    let ack = format!(
        "ACK sip:12366@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {S1};branch=z9hG4bK-cack3\r\nFrom: <sip:1003@127.0.0.1>;tag=ct\r\n\
         {}\r\nCall-ID: consult-3\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok, "To:")
    );
    c.handle_datagram(t2, ack.as_bytes(), udp(S1));
    sent(&mut c);
    // The caller hangs up while the agent talks with the sub-centre.
    let bye = format!(
        "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-a\r\nFrom: <sip:13800000001@127.0.0.1>;tag=t-a\r\n\
         {caller_to}\r\nCall-ID: a\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    c.handle_datagram(t2, bye.as_bytes(), udp("127.0.0.1:5070"));
    let out = sent(&mut c);
    assert!(
        out.iter()
            .any(|m| m.starts_with("BYE ") && m.contains("Call-ID: consult-3")),
        "the consultation ends with its caller: {out:?}"
    );
    assert!(
        out.iter().any(|m| m.starts_with("BYE sip:gw@")),
        "and so does the sub-centre's call: {out:?}"
    );
}

/// A retained-seat line (Gansu's 12369): after the greeting its own seats are dialled over
/// the retained trunk with the caller's number; the caller hanging up while they ring CANCELs
/// that call and the transfer is recorded abandoned (and nothing is left: the leak check).
#[test]
fn a_retained_line_s_caller_hanging_up_while_its_seats_ring_cancels_them() {
    const GW: &str = "127.0.0.1:5092";
    let mut c = core(|cfg| {
        cfg.trunks.get_mut("retained").unwrap().address = GW.parse().unwrap();
    });
    let t0 = sim::t0();
    let caller_to = call(&mut c, t0, "a", "13800000001", "12369");
    let msgs = run(&mut c, t0, t0 + Duration::from_secs(15));
    let (at, invite) = msgs
        .iter()
        .find(|(_, m)| m.starts_with("INVITE sip:12369@127.0.0.1:5092"))
        .cloned()
        .expect("the line's seats are dialled over the retained trunk");
    assert!(
        at.since(t0.mono) > Duration::from_secs(2),
        "after the greeting, not before"
    );
    assert!(invite.contains("sip:13800000001@"), "{invite}");
    ringing(&mut c, at, &invite, GW);
    let bye = format!(
        "BYE sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye-a\r\nFrom: <sip:13800000001@127.0.0.1>;tag=t-a\r\n\
         {caller_to}\r\nCall-ID: a\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let t1 = t0 + Duration::from_secs(16);
    c.handle_datagram(t1, bye.as_bytes(), udp("127.0.0.1:5070"));
    let out = sent(&mut c);
    assert!(
        out.iter()
            .any(|m| m.starts_with("CANCEL sip:12369@127.0.0.1:5092")),
        "the line's ringing seats are CANCELled: {out:?}"
    );
    let mut outcomes = vec![];
    while let Some(r) = c.poll_record() {
        if let hotline::metrics::Event::Transfer(t) = &r.event {
            outcomes.push(format!("{:?} {:?}", t.outcome, t.mode));
        }
    }
    assert_eq!(outcomes, ["Started Some(Line)", "Abandoned None"]);
}

/// A 12345 agent transfers its caller to a retained-seat line's own seats (Gansu's 12369,
/// kind "retained"): a three-way transfer over the retained trunk, the caller's number shown.
#[test]
fn a_12345_agent_transfers_its_caller_to_a_retained_line_s_own_seats() {
    let mut c = core(|cfg| {
        cfg.trunks.get_mut("retained").unwrap().address = TRUNK.parse().unwrap();
    });
    let t0 = sim::t0();
    seat_up(&mut c, t0, "1003", S1);
    call(&mut c, t0, "a", "13800000001", "12348");
    let o = offers(&run(&mut c, t0, t0 + Duration::from_secs(8)));
    let t1 = t0 + Duration::from_secs(8);
    answer(&mut c, t1, &o[0].2, S1);
    sent(&mut c);
    while c.poll_record().is_some() {}
    c.transfer_by_id(t1, "1003", "12369", false, "test")
        .expect("12369 is a transfer target");
    let out = sent(&mut c);
    let invite = out
        .iter()
        .find(|m| m.starts_with(&format!("INVITE sip:12369@{TRUNK}")))
        .unwrap_or_else(|| panic!("dialled over the retained trunk: {out:?}"))
        .clone();
    assert!(invite.contains("sip:13800000001@"), "{invite}");
    assert!(invite.contains("X-Hotline-Transfer-By: 1003"), "{invite}");
    trunk_answers(&mut c, t1 + Duration::from_secs(1), &invite);
    run(&mut c, t1, t1 + Duration::from_secs(2));
    let mut outcomes = vec![];
    while let Some(r) = c.poll_record() {
        if let hotline::metrics::Event::Transfer(t) = &r.event {
            outcomes.push(format!("{:?} {:?} {}", t.outcome, t.mode, t.target.unit));
        }
    }
    // The unit is the one the Gansu list names for 12369 (003 line 170).
    assert_eq!(
        outcomes,
        [
            "Started Some(ThreeWay) 省生态环境厅",
            "Answered None 省生态环境厅"
        ]
    );
}
