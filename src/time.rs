//! Time. Protocol and call logic never read a clock: the runtime reads [`WallClock`] once per
//! event and passes a [`Now`] in, which carries both the monotonic instant (timers, durations)
//! and the wall time (record stamps, nonces, the calendar of transition windows). A drill or a
//! test shifts the wall clock with `HOTLINE_NOW`; the sans-IO tests build their own `Now`s and
//! advance them virtually.

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, NaiveDate, Utc};
use std::time::{Duration, Instant};

/// The time of the event being handled: monotonic and wall clock read together.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    pub fn new(mono: Instant, wall: DateTime<Utc>) -> Now {
        Now { mono, wall }
    }

    /// A virtual start for tests: the monotonic clock's present and a fixed wall time.
    pub fn at(wall: DateTime<FixedOffset>) -> Now {
        Now {
            mono: Instant::now(),
            wall: wall.with_timezone(&Utc),
        }
    }

    /// Time since an earlier instant (zero if it is not earlier).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.mono.saturating_duration_since(earlier)
    }

    /// Time since an earlier `Now` (panics if it is later, as `Instant::duration_since`).
    pub fn duration_since(&self, earlier: Now) -> Duration {
        self.mono.duration_since(earlier.mono)
    }

    pub fn saturating_duration_since(&self, earlier: Now) -> Duration {
        self.mono.saturating_duration_since(earlier.mono)
    }

    /// Seconds since the Unix epoch (digest nonces).
    pub fn unix_s(&self) -> u64 {
        self.wall.timestamp().max(0) as u64
    }

    pub fn shanghai(&self) -> DateTime<FixedOffset> {
        self.wall.with_timezone(&shanghai())
    }

    /// Today's date in Asia/Shanghai.
    pub fn today_shanghai(&self) -> NaiveDate {
        self.shanghai().date_naive()
    }

    /// The stamp of a record: RFC 3339 with milliseconds and the +08:00 offset.
    pub fn stamp(&self) -> String {
        self.shanghai()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    }
}

impl PartialEq for Now {
    fn eq(&self, other: &Now) -> bool {
        self.mono == other.mono
    }
}
impl Eq for Now {}
impl PartialOrd for Now {
    fn partial_cmp(&self, other: &Now) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Now {
    fn cmp(&self, other: &Now) -> std::cmp::Ordering {
        self.mono.cmp(&other.mono)
    }
}

impl std::ops::Add<Duration> for Now {
    type Output = Now;
    fn add(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + ChronoDuration::from_std(d).unwrap_or_default(),
        }
    }
}

impl std::ops::AddAssign<Duration> for Now {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl std::ops::Sub<Duration> for Now {
    type Output = Now;
    fn sub(self, d: Duration) -> Now {
        Now {
            mono: self.mono - d,
            wall: self.wall - ChronoDuration::from_std(d).unwrap_or_default(),
        }
    }
}

impl std::ops::Sub<Now> for Now {
    type Output = Duration;
    fn sub(self, earlier: Now) -> Duration {
        self.mono - earlier.mono
    }
}

/// Asia/Shanghai has been UTC+8 without daylight saving since 1991, so a fixed offset is exact
/// for every date this daemon will see and saves a time-zone database.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Wall clock used for dialplan calendar decisions.
#[derive(Debug, Clone)]
pub struct WallClock {
    /// Offset added to the real clock; zero unless `HOTLINE_NOW` was given.
    shift: ChronoDuration,
    fixed_anchor: Option<(DateTime<Utc>, Instant)>,
}

impl WallClock {
    pub fn real() -> Self {
        WallClock {
            shift: ChronoDuration::zero(),
            fixed_anchor: None,
        }
    }

    /// A clock that reads `start` now and advances in real time from there.
    pub fn starting_at(start: DateTime<FixedOffset>) -> Self {
        WallClock {
            shift: start.with_timezone(&Utc) - Utc::now(),
            fixed_anchor: Some((start.with_timezone(&Utc), Instant::now())),
        }
    }

    /// From the `HOTLINE_NOW` environment variable (RFC 3339), if set.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("HOTLINE_NOW") {
            Ok(v) if !v.trim().is_empty() => DateTime::parse_from_rfc3339(v.trim())
                .map(Self::starting_at)
                .map_err(|e| format!("HOTLINE_NOW={v:?} is not an RFC 3339 time: {e}")),
            _ => Ok(Self::real()),
        }
    }

    pub fn now_utc(&self) -> DateTime<Utc> {
        match self.fixed_anchor {
            // Advance from the anchor by monotonic time so a stepped system clock can't move it.
            Some((at, since)) => at + ChronoDuration::from_std(since.elapsed()).unwrap_or_default(),
            None => Utc::now() + self.shift,
        }
    }

    /// Today's date in Asia/Shanghai.
    pub fn today_shanghai(&self) -> NaiveDate {
        self.now_utc().with_timezone(&shanghai()).date_naive()
    }

    /// Both clocks, read now (the runtime, once per event).
    pub fn now(&self) -> Now {
        Now {
            mono: Instant::now(),
            wall: self.now_utc(),
        }
    }
}

/// Deadlines by owner, at most one per key (quinn's `TimerTable`): setting a key again moves
/// its deadline, and a cancelled or moved deadline is gone, so no stale timer can fire and an
/// empty table means nothing is pending.
#[derive(Debug)]
pub struct TimerTable<K: Ord + Clone + std::hash::Hash + Eq> {
    by_time: std::collections::BTreeSet<(Instant, K)>,
    by_key: std::collections::HashMap<K, Instant>,
}

impl<K: Ord + Clone + std::hash::Hash + Eq> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_time: Default::default(),
            by_key: Default::default(),
        }
    }
}

impl<K: Ord + Clone + std::hash::Hash + Eq> TimerTable<K> {
    /// `key` is due at `at` (replacing its earlier deadline), or at no time (`None`).
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => {
                if let Some(old) = self.by_key.insert(key.clone(), at) {
                    if old == at {
                        return;
                    }
                    self.by_time.remove(&(old, key.clone()));
                }
                self.by_time.insert((at, key));
            }
            None => self.cancel(&key),
        }
    }

    pub fn cancel(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes one key that is due at `now` (its deadline is gone).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (at, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some((at, key))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.by_key.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_or_cancelled_timer_never_fires() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set("a", Some(t0 + Duration::from_secs(1)));
        t.set("b", Some(t0 + Duration::from_secs(2)));
        t.set("a", Some(t0 + Duration::from_secs(3)));
        t.cancel(&"b");
        assert_eq!(t.pop_due(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(3)),
            Some((t0 + Duration::from_secs(3), "a"))
        );
        assert!(t.is_empty());
    }

    #[test]
    fn now_advances_both_clocks() {
        let n = Now::at(chrono::DateTime::parse_from_rfc3339("2026-12-03T23:59:59+08:00").unwrap());
        let m = n + Duration::from_secs(2);
        assert_eq!(m - n, Duration::from_secs(2));
        assert_eq!(m.today_shanghai().to_string(), "2026-12-04");
        assert_eq!(n.stamp(), "2026-12-03T23:59:59.000+08:00");
    }
}
