//! Every parser that network input reaches, fed a few hundred thousand mutations of valid
//! input (deterministic, so a failure reproduces): none may panic. A cheap stand-in for the
//! coverage-guided fuzzing the parsers should also get.
use hotline::media::dtmf::DtmfReceiver;
use hotline::sip::{framing, message};

const INVITE: &str = "INVITE sip:12345@[::1]:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP [::1]:5070;branch=z9hG4bK-1;rport\r\n\
f: \"Zhang\" <sip:13800001111@[::1]>;tag=abc\r\n\
t: <sip:12345@127.0.0.1>\r\ni: call-1@host\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
m: <sip:13800001111@[::1]:5070>\r\nRecord-Route: <sip:p1;lr>\r\nc: application/sdp\r\nl: 129\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

/// xorshift: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(8) {
        let i = rng.below(v.len());
        match rng.below(6) {
            0 => v[i] = rng.next() as u8,
            1 => {
                v.remove(i.min(v.len().saturating_sub(1)));
            }
            2 => v.insert(i, b"\r\n:;<>[]@=\" \t,"[rng.below(14)]),
            3 => v.truncate(i),
            4 => {
                let j = rng.below(v.len());
                let chunk: Vec<u8> = v[i.min(j)..i.max(j)].to_vec();
                v.splice(i..i, chunk);
            }
            _ => v[i] = v[i].wrapping_add(1),
        }
        if v.is_empty() {
            v.push(b'x');
        }
    }
    v
}

#[test]
fn sip_sdp_framing_rtp_and_dtmf_parsers_survive_mutations() {
    let src = "127.0.0.1:5070".parse().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base = INVITE.as_bytes();
    let sdp_start = INVITE.find("v=0").unwrap();
    let mut parsed = 0;
    for _ in 0..150_000 {
        let m = mutate(&mut rng, base);
        if let Ok(rsipstack::sip::SipMessage::Request(req)) = message::parse(&m) {
            parsed += 1;
            let _ = message::request_info(&req);
            let _ = message::response(
                &req,
                src,
                "t",
                &message::ResponseSpec::new(400, "Bad Request"),
            );
        }
        let _ = message::fallback_response(&m, src, "t", "x");
        let _ = framing::next_message(&m);
        let _ = hotline::sdp::parse(&m[sdp_start.min(m.len())..]);
        let _ = rtp_rs::RtpReader::new(&m[..m.len().min(40)]);
    }
    assert!(
        parsed > 1000,
        "mutations still reach the request checks ({parsed})"
    );
    let mut dtmf = DtmfReceiver::default();
    for _ in 0..100_000 {
        let len = rng.below(8);
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = dtmf.on_packet(rng.next() as u32, &payload);
    }
}
