//! A queue's waiting line and the choice of seat: who is served next (priority, bounded
//! overtaking) and which of the free seats gets the call (strategy, penalties that widen
//! with the wait). Pure functions of the line, the candidates and the time; call control
//! does the offering.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a free seat is chosen among a queue's members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The seat idle the longest (since its last call or log-in).
    #[default]
    LongestIdle,
    /// Members in turn, starting after the one offered last (Asterisk's rrmemory).
    RoundRobin,
    /// Every eligible free seat at once; the first to answer gets the caller.
    RingAll,
    /// The seat that has taken the fewest calls from this queue today.
    FewestCalls,
}

/// One caller waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: u64,
    /// Higher is served first (e.g. calls handed over from 110).
    pub priority: u8,
    /// When the caller started waiting (kept across an overflow to another queue, so the
    /// caller keeps its place by seniority).
    pub since: Instant,
}

/// The callers of one queue; order is computed when asked because it changes with time
/// (a caller who has waited past the overtaking bound moves ahead of priority callers).
#[derive(Debug, Clone, Default)]
pub struct Line {
    entries: Vec<Entry>,
}

impl Line {
    pub fn push(&mut self, e: Entry) {
        if !self.entries.iter().any(|x| x.key == e.key) {
            self.entries.push(e);
        }
    }

    pub fn remove(&mut self, key: u64) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    pub fn contains(&self, key: u64) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The callers in the order they are served. Higher priority goes first, then the longer
    /// wait; but a caller who has waited `overtake_bound` or more ranks above every priority,
    /// so no caller is overtaken for longer than that (0 = priority always wins).
    pub fn ordered(&self, now: Instant, overtake_bound: Duration) -> Vec<Entry> {
        let mut v = self.entries.clone();
        v.sort_by_key(|e| serving_key(e, now, overtake_bound));
        v
    }

    /// 1-based place of `key` in the serving order.
    pub fn position(&self, key: u64, now: Instant, overtake_bound: Duration) -> Option<usize> {
        let me = self.entries.iter().find(|e| e.key == key)?;
        let mine = serving_key(me, now, overtake_bound);
        Some(
            1 + self
                .entries
                .iter()
                .filter(|e| e.key != key && serving_key(e, now, overtake_bound) < mine)
                .count(),
        )
    }
}

/// Sort key: smaller is served first.
pub fn serving_key(
    e: &Entry,
    now: Instant,
    overtake_bound: Duration,
) -> (bool, std::cmp::Reverse<u8>, Instant, u64) {
    let promoted =
        !overtake_bound.is_zero() && now.saturating_duration_since(e.since) >= overtake_bound;
    // `promoted` callers rank above all priorities and among themselves by wait only.
    let priority = if promoted { u8::MAX } else { e.priority };
    (!promoted, std::cmp::Reverse(priority), e.since, e.key)
}

/// A free seat that belongs to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub seat: usize,
    /// 0 is the queue's first choice; higher penalties are reached as the wait grows.
    pub penalty: u32,
    /// Free since (for longest-idle).
    pub idle_since: Instant,
    /// Calls taken from this queue today (for fewest-calls).
    pub calls_taken: u64,
}

/// The highest penalty a caller who has waited `waited` may be offered to: one step per
/// `widen_every` (every penalty at once when 0).
pub fn max_penalty(waited: Duration, widen_every: Duration) -> u32 {
    if widen_every.is_zero() {
        return u32::MAX;
    }
    (waited.as_millis() / widen_every.as_millis().max(1)).min(u32::MAX as u128) as u32
}

/// The seats to offer the call to, from free candidates already filtered by penalty. Only
/// the lowest penalty present is used: a penalty-2 seat rings only when no seat with a lower
/// penalty is free. `last_rr` is the seat offered last by round-robin.
pub fn choose(strategy: Strategy, candidates: &[Candidate], last_rr: Option<usize>) -> Vec<usize> {
    let Some(best) = candidates.iter().map(|c| c.penalty).min() else {
        return vec![];
    };
    let mut tier: Vec<&Candidate> = candidates.iter().filter(|c| c.penalty == best).collect();
    match strategy {
        Strategy::RingAll => {
            tier.sort_by_key(|c| c.seat);
            tier.iter().map(|c| c.seat).collect()
        }
        Strategy::LongestIdle => tier
            .iter()
            .min_by_key(|c| (c.idle_since, c.seat))
            .map(|c| vec![c.seat])
            .unwrap_or_default(),
        Strategy::FewestCalls => tier
            .iter()
            .min_by_key(|c| (c.calls_taken, c.idle_since, c.seat))
            .map(|c| vec![c.seat])
            .unwrap_or_default(),
        Strategy::RoundRobin => {
            // The first seat after the last one offered, wrapping around.
            let after = |c: &&&Candidate| match last_rr {
                Some(l) if c.seat > l => (0, c.seat),
                Some(_) => (1, c.seat),
                None => (0, c.seat),
            };
            tier.iter()
                .min_by_key(after)
                .map(|c| vec![c.seat])
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(seat: usize, penalty: u32, idle_s: u64, taken: u64, t0: Instant) -> Candidate {
        Candidate {
            seat,
            penalty,
            idle_since: t0 + Duration::from_secs(idle_s),
            calls_taken: taken,
        }
    }

    #[test]
    fn strategies_pick_as_named() {
        let t0 = Instant::now();
        let c = [
            cand(0, 0, 30, 5, t0),
            cand(1, 0, 10, 9, t0),
            cand(2, 0, 20, 1, t0),
            cand(3, 1, 0, 0, t0),
        ];
        assert_eq!(choose(Strategy::LongestIdle, &c, None), [1]);
        assert_eq!(choose(Strategy::FewestCalls, &c, None), [2]);
        assert_eq!(
            choose(Strategy::RingAll, &c, None),
            [0, 1, 2],
            "penalty 1 waits while penalty 0 is free"
        );
        assert_eq!(choose(Strategy::RoundRobin, &c, None), [0]);
        assert_eq!(choose(Strategy::RoundRobin, &c, Some(0)), [1]);
        assert_eq!(
            choose(Strategy::RoundRobin, &c, Some(2)),
            [0],
            "wraps around"
        );
        assert_eq!(choose(Strategy::RoundRobin, &c[1..], Some(1)), [2]);
        assert!(choose(Strategy::RingAll, &[], None).is_empty());
        assert_eq!(
            choose(Strategy::LongestIdle, &c[3..], None),
            [3],
            "a higher penalty rings when it is all there is"
        );
    }

    #[test]
    fn penalties_widen_with_the_wait() {
        let every = Duration::from_secs(30);
        assert_eq!(max_penalty(Duration::from_secs(0), every), 0);
        assert_eq!(max_penalty(Duration::from_secs(29), every), 0);
        assert_eq!(max_penalty(Duration::from_secs(30), every), 1);
        assert_eq!(max_penalty(Duration::from_secs(95), every), 3);
        assert_eq!(
            max_penalty(Duration::from_secs(5), Duration::ZERO),
            u32::MAX
        );
    }

    #[test]
    fn priority_overtakes_but_only_up_to_the_bound() {
        let t0 = Instant::now();
        let mut line = Line::default();
        line.push(Entry {
            key: 1,
            priority: 0,
            since: t0,
        });
        line.push(Entry {
            key: 2,
            priority: 0,
            since: t0 + Duration::from_secs(10),
        });
        line.push(Entry {
            key: 3,
            priority: 5,
            since: t0 + Duration::from_secs(20),
        });
        line.push(Entry {
            key: 3,
            priority: 5,
            since: t0,
        }); // a duplicate push changes nothing
        let bound = Duration::from_secs(60);
        let keys = |now| {
            line.ordered(now, bound)
                .iter()
                .map(|e| e.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(t0 + Duration::from_secs(25)),
            [3, 1, 2],
            "the priority caller goes first"
        );
        assert_eq!(
            line.position(1, t0 + Duration::from_secs(25), bound),
            Some(2)
        );
        // Caller 1 has waited 60 s: nobody overtakes it any more; caller 2 not yet.
        assert_eq!(keys(t0 + Duration::from_secs(60)), [1, 3, 2]);
        assert_eq!(keys(t0 + Duration::from_secs(70)), [1, 2, 3]);
        assert_eq!(
            line.ordered(t0, Duration::ZERO)[0].key,
            3,
            "bound 0: priority always first"
        );
        assert_eq!(line.remove(1).map(|e| e.key), Some(1));
        assert_eq!(
            line.position(2, t0 + Duration::from_secs(25), bound),
            Some(2)
        );
        assert!(line.remove(1).is_none());
        assert_eq!(line.len(), 2);
    }
}
