//! Our 2xx to an INVITE or re-INVITE, which the UAS core (not the transaction) retransmits
//! until the ACK with its CSeq arrives (RFC 3261 §13.3.1.4): every T1 doubling up to T2 on
//! unreliable transports, given up after 64*T1. Call control holds one per dialog and arms
//! timers at the instants this asks for.

use super::{T1, T2};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PendingOk {
    bytes: Bytes,
    cseq: u32,
    interval: Duration,
    /// When to send it again (never on a reliable transport).
    next: Option<Instant>,
    /// When to give up waiting for the ACK.
    pub deadline: Instant,
}

impl PendingOk {
    /// Armed at `now`; the caller sets timers at `next_retransmit()` and `deadline`.
    pub fn new(now: Instant, bytes: Bytes, cseq: u32, reliable: bool) -> PendingOk {
        PendingOk {
            bytes,
            cseq,
            interval: T1,
            next: (!reliable).then(|| now + T1),
            deadline: now + 64 * T1,
        }
    }

    pub fn next_retransmit(&self) -> Option<Instant> {
        self.next
    }

    /// The retransmission due for the timer set at `at`, and when the next one is due; `None`
    /// for a timer of an earlier schedule.
    pub fn retransmit(&mut self, now: Instant, at: Instant) -> Option<(Bytes, Instant)> {
        if self.next != Some(at) {
            return None;
        }
        self.interval = (self.interval * 2).min(T2);
        let next = now + self.interval;
        self.next = Some(next);
        Some((self.bytes.clone(), next))
    }

    /// Whether an ACK with this CSeq acknowledges it.
    pub fn acked_by(&self, cseq: u32) -> bool {
        self.cseq == cseq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_t2_and_ignores_stale_timers() {
        let t0 = Instant::now();
        let mut ok = PendingOk::new(t0, Bytes::from_static(b"200"), 1, false);
        let mut at = ok.next_retransmit().unwrap();
        let mut sent = vec![];
        for _ in 0..6 {
            let (_, next) = ok.retransmit(at, at).unwrap();
            sent.push((at - t0).as_millis());
            at = next;
        }
        assert_eq!(sent, [500, 1500, 3500, 7500, 11500, 15500]);
        assert!(
            ok.retransmit(at, t0).is_none(),
            "a timer of an earlier schedule"
        );
        assert_eq!(ok.deadline - t0, Duration::from_secs(32));
        assert!(ok.acked_by(1) && !ok.acked_by(2));
        assert!(
            PendingOk::new(t0, Bytes::new(), 1, true)
                .next_retransmit()
                .is_none(),
            "TCP: no retransmission"
        );
    }
}
