//! A conference mixer for three-party transfers: every member hears the sum of the others.
//!
//! No I/O and no clock of its own: received payloads are pushed as they arrive, and the media
//! ticker calls [`Conference::mix`] every 20 ms; each call takes at most one frame per member
//! and returns one RTP packet per member. Each member's incoming frames wait in a short queue
//! (a minimal jitter buffer): a packet that arrives just after a tick is heard at the next
//! one, and a member whose packets come in bursts can't build up delay beyond `MAX_QUEUED`
//! frames. A member with nothing queued contributes silence, so a silent or lost member never
//! stalls the others.

use super::{Codec, FRAME_SAMPLES};
use std::collections::VecDeque;

/// Frames kept per member before the oldest is dropped (60 ms of delay at most).
const MAX_QUEUED: usize = 3;

type Frame = [i16; FRAME_SAMPLES];

struct Member {
    key: u64,
    codec: Codec,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    queued: VecDeque<Frame>,
    marker: bool,
}

/// One conference; members are identified by the caller's key (a leg's key).
#[derive(Default)]
pub struct Conference {
    members: Vec<Member>,
    /// Mixed frames dropped because a member's queue was full, for the stats.
    pub overflows: u64,
}

/// A member's RTP sending state when it joins (its stream's, so sequence numbers go on).
pub struct Join {
    pub key: u64,
    pub codec: Codec,
    pub payload_type: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
}

impl Conference {
    pub fn join(&mut self, j: Join) {
        self.leave(j.key);
        self.members.push(Member {
            key: j.key,
            codec: j.codec,
            payload_type: j.payload_type,
            ssrc: j.ssrc,
            seq: j.seq,
            ts: j.ts,
            queued: VecDeque::with_capacity(MAX_QUEUED),
            marker: true,
        });
    }

    pub fn leave(&mut self, key: u64) {
        self.members.retain(|m| m.key != key);
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Audio received from member `key` (an RTP payload of its codec). Frames of another size
    /// are cut or padded to 20 ms: phones on G.711 send 20 ms unless told otherwise.
    pub fn push(&mut self, key: u64, payload_type: u8, payload: &[u8]) {
        let Some(m) = self.members.iter_mut().find(|m| m.key == key) else {
            return;
        };
        if payload_type != m.codec.static_pt() {
            return; // telephone-event, comfort noise: not audio to mix
        }
        let mut frame = [0i16; FRAME_SAMPLES];
        m.codec.decode_frame(payload, &mut frame);
        if m.queued.len() == MAX_QUEUED {
            m.queued.pop_front();
            self.overflows += 1;
        }
        m.queued.push_back(frame);
    }

    /// One 20 ms step: `send(member key, packet)` for every member. Runs for every
    /// conference every 20 ms, so it allocates nothing.
    pub fn mix(&mut self, mut send: impl FnMut(u64, &[u8])) {
        let mut total = [0i32; FRAME_SAMPLES];
        for f in self.members.iter().filter_map(|m| m.queued.front()) {
            for (t, &s) in total.iter_mut().zip(f.iter()) {
                *t += i32::from(s);
            }
        }
        let mut buf = [0u8; 12 + FRAME_SAMPLES];
        let mut others = [0i32; FRAME_SAMPLES];
        let mut payload = [0u8; FRAME_SAMPLES];
        for m in self.members.iter_mut() {
            // The others' sum: everything minus what this member said (it must not hear itself).
            match m.queued.pop_front() {
                Some(own) => {
                    for ((o, &t), &s) in others.iter_mut().zip(&total).zip(own.iter()) {
                        *o = t - i32::from(s);
                    }
                    m.codec.encode_frame(&others, &mut payload);
                }
                None => m.codec.encode_frame(&total, &mut payload),
            }
            let built = rtp_rs::RtpPacketBuilder::new()
                .payload_type(m.payload_type)
                .ssrc(m.ssrc)
                .sequence(rtp_rs::Seq::from(m.seq))
                .timestamp(m.ts)
                .marked(m.marker)
                .payload(&payload)
                .build_into(&mut buf);
            if let Ok(n) = built {
                send(m.key, &buf[..n]);
            }
            m.marker = false;
            m.seq = m.seq.wrapping_add(1);
            m.ts = m.ts.wrapping_add(FRAME_SAMPLES as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(c: &mut Conference, key: u64, codec: Codec) {
        c.join(Join {
            key,
            codec,
            payload_type: codec.static_pt(),
            ssrc: key as u32,
            seq: 100,
            ts: 1000,
        });
    }

    fn level(codec: Codec, packet: &[u8]) -> i32 {
        let r = rtp_rs::RtpReader::new(packet).unwrap();
        let s: Vec<i32> = r
            .payload()
            .iter()
            .map(|&b| i32::from(codec.decode(b)))
            .collect();
        s.iter().sum::<i32>() / s.len() as i32
    }

    #[test]
    fn each_member_hears_the_sum_of_the_others_and_not_itself() {
        let mut c = Conference::default();
        join(&mut c, 1, Codec::Pcmu);
        join(&mut c, 2, Codec::Pcma);
        join(&mut c, 3, Codec::Pcmu);
        c.push(1, 0, &[Codec::Pcmu.encode(1000); 160]);
        c.push(2, 8, &[Codec::Pcma.encode(2000); 160]);
        c.push(3, 0, &[Codec::Pcmu.encode(4000); 160]);
        let mut got = std::collections::HashMap::new();
        c.mix(|k, p| {
            got.insert(k, p.to_vec());
        });
        let near = |a: i32, b: i32| (a - b).abs() < b / 20;
        assert!(
            near(level(Codec::Pcmu, &got[&1]), 6000),
            "1 hears 2 + 3: {}",
            level(Codec::Pcmu, &got[&1])
        );
        assert!(
            near(level(Codec::Pcma, &got[&2]), 5000),
            "2 hears 1 + 3 in its own codec"
        );
        assert!(near(level(Codec::Pcmu, &got[&3]), 3000), "3 hears 1 + 2");
        assert_eq!(rtp_rs::RtpReader::new(&got[&2]).unwrap().payload_type(), 8);
    }

    #[test]
    fn a_silent_member_stalls_nobody_and_sequence_numbers_run_on() {
        let mut c = Conference::default();
        join(&mut c, 1, Codec::Pcmu);
        join(&mut c, 2, Codec::Pcmu);
        let mut seqs = vec![];
        for _ in 0..3 {
            c.push(1, 0, &[Codec::Pcmu.encode(3000); 160]);
            c.mix(|k, p| {
                if k == 2 {
                    let r = rtp_rs::RtpReader::new(p).unwrap();
                    seqs.push((
                        u16::from(r.sequence_number()),
                        r.timestamp(),
                        level(Codec::Pcmu, p),
                    ));
                }
            });
        }
        assert_eq!(
            seqs.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            vec![(100, 1000), (101, 1160), (102, 1320)]
        );
        assert!(seqs.iter().all(|s| (s.2 - 3000).abs() < 150));
    }

    #[test]
    fn a_burst_is_bounded_and_dtmf_is_not_mixed() {
        let mut c = Conference::default();
        join(&mut c, 1, Codec::Pcmu);
        join(&mut c, 2, Codec::Pcmu);
        for _ in 0..10 {
            c.push(1, 0, &[0xFF; 160]);
        }
        c.push(1, 101, &[1, 2, 3, 4]);
        assert_eq!(c.overflows, 7);
        c.leave(1);
        assert_eq!(c.len(), 1);
    }
}

#[cfg(test)]
mod tone_tests {
    use super::*;

    fn tone(hz: f64, frame: usize) -> Vec<u8> {
        (0..FRAME_SAMPLES)
            .map(|k| {
                Codec::Pcmu.encode(
                    (8000.0
                        * (2.0 * std::f64::consts::PI * hz * ((frame * FRAME_SAMPLES + k) as f64)
                            / 8000.0)
                            .sin()) as i16,
                )
            })
            .collect()
    }

    fn share(pcm: &[i16], freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2, mut e) = (0f64, 0f64, 0f64);
        for &x in pcm {
            let x = x as f64;
            e += x * x;
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (e * pcm.len() as f64)
    }

    #[test]
    fn three_tones_each_member_hears_the_other_two() {
        let mut c = Conference::default();
        for k in 1..=3 {
            c.join(Join {
                key: k,
                codec: Codec::Pcmu,
                payload_type: 0,
                ssrc: 1,
                seq: 0,
                ts: 0,
            });
        }
        let hz = [0.0, 1000.0, 440.0, 1500.0];
        let mut heard: Vec<Vec<i16>> = vec![vec![]; 4];
        for f in 0..100 {
            for k in 1..=3u64 {
                c.push(k, 0, &tone(hz[k as usize], f));
            }
            c.mix(|k, p| {
                heard[k as usize].extend(
                    rtp_rs::RtpReader::new(p)
                        .unwrap()
                        .payload()
                        .iter()
                        .map(|&b| Codec::Pcmu.decode(b)),
                )
            });
        }
        for k in 1..=3usize {
            for o in 1..=3usize {
                let s = share(&heard[k], hz[o]);
                if k == o {
                    assert!(s < 0.05, "{k} hears itself {s:.2}");
                } else {
                    assert!(s > 0.3, "{k} hears {o}: {s:.2}");
                }
            }
        }
    }
}
