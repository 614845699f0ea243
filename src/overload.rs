//! Admission control for new calls (RFC 3261 §21.5.4: 503 with Retry-After), decided on
//! cheap signals before any state is made for the call: the configured ceilings (calls at
//! once, new calls per second, like FreeSWITCH's `max-sessions` and `sessions-per-second`)
//! and a measured one, the event loop's lateness, so the default needs no tuning. Nothing
//! else is ever shed: ACK, BYE, CANCEL, in-dialog requests, REGISTER, our own calls to seats
//! and trunks, seats' consultations and feature codes all go through.
//!
//! Sans-IO: the runtime reports the media clock's lateness on every tick
//! ([`Admission::loop_lag`]); call control asks [`Admission::admit`] for every new INVITE.

use crate::config::OverloadConfig;
use crate::stats::Stats;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The measuring window of the event loop's lateness.
const WINDOW: Duration = Duration::from_millis(100);
/// How long a shed INVITE's branch is remembered: as long as its retransmissions can come
/// (64·T1), so one that crossed our 503, or waited in a socket buffer while the node caught
/// up, gets the 503 again rather than a call its caller no longer waits for.
const REMEMBER: Duration = Duration::from_secs(32);
/// At most this many are remembered (8,000 sheds a second for 32 s); the oldest go first.
const REMEMBER_MAX: usize = 262_144;
/// After the loop ran late, new calls are paced (not let in by bursts): the pace starts at
/// this share of what was admitted while it ran late, …
const PACE_CUT: f64 = 0.8;
/// … grows by this share each window that stays on time while calls are still shed, …
const PACE_GROWTH: f64 = 1.05;
/// … never starts below this (calls a second), …
const PACE_FLOOR: f64 = 20.0;
/// … and ends after this long with nothing shed.
const PACE_END: Duration = Duration::from_secs(5);

/// Why a new call was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The event loop runs late: the node is past what it can serve.
    Lag,
    /// `overload.max_calls` calls are up.
    Calls,
    /// `overload.calls_per_s` new calls this second.
    Rate,
    /// Only the RTP ports kept for emergency hand-offs are left.
    Ports,
    /// A retransmission of an INVITE just shed (not counted again).
    Again,
}

impl Shed {
    pub fn label(self) -> &'static str {
        match self {
            Shed::Lag => "event loop late",
            Shed::Calls => "calls at the configured ceiling",
            Shed::Rate => "new calls per second at the configured ceiling",
            Shed::Ports => "at capacity",
            Shed::Again => "lines busy",
        }
    }
}

/// Admissions paced after the event loop ran late (additive increase, multiplicative
/// decrease), so calls come in evenly instead of by bursts at each window's edge.
#[derive(Debug, Clone, Copy)]
struct Pace {
    rate: f64,
    tokens: f64,
    filled: Instant,
    last_shed: Instant,
}

pub struct Admission {
    cfg: OverloadConfig,
    stats: Arc<Stats>,
    /// Tokens of the per-second bucket, and when it was last filled.
    tokens: f64,
    filled: Option<Instant>,
    /// The start of the window being measured.
    window: Option<Instant>,
    /// Shedding on lateness (with hysteresis: it ends when a window stays under half the
    /// limit).
    lagging: bool,
    /// Smoothed lateness, in µs (for /metrics).
    lag_ewma_us: f64,
    /// Calls admitted in the present window, and whether any was shed in it.
    window_admitted: u32,
    window_shed: bool,
    /// The pace new calls are let in at, after the loop ran late (calls a second), its
    /// bucket, and the last time a call was shed for it.
    pace: Option<Pace>,
    /// Hashes of the branches of INVITEs shed lately, oldest first.
    shed: std::collections::VecDeque<(Instant, u64)>,
    shed_set: std::collections::HashSet<u64>,
}

impl Admission {
    pub fn new(cfg: OverloadConfig, stats: Arc<Stats>) -> Admission {
        Admission {
            tokens: f64::from(cfg.calls_per_s),
            cfg,
            stats,
            filled: None,
            window: None,
            lagging: false,
            lag_ewma_us: 0.0,
            window_admitted: 0,
            window_shed: false,
            pace: None,
            shed: Default::default(),
            shed_set: Default::default(),
        }
    }

    fn hash(branch: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        branch.hash(&mut h);
        h.finish()
    }

    /// The INVITE with this branch was shed at `now`.
    pub fn remember(&mut self, now: Instant, branch: &str) {
        self.forget_old(now);
        let h = Self::hash(branch);
        if self.shed_set.insert(h) {
            self.shed.push_back((now, h));
        }
        while self.shed.len() > REMEMBER_MAX {
            if let Some((_, old)) = self.shed.pop_front() {
                self.shed_set.remove(&old);
            }
        }
    }

    /// Whether an INVITE with this branch was shed lately (this is a retransmission of it).
    pub fn was_shed(&mut self, now: Instant, branch: &str) -> bool {
        self.forget_old(now);
        !self.shed.is_empty() && self.shed_set.contains(&Self::hash(branch))
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, h)) = self.shed.front() {
            if now.saturating_duration_since(at) < REMEMBER {
                break;
            }
            self.shed.pop_front();
            self.shed_set.remove(&h);
        }
    }

    /// The media clock ticked `lag` late at `now`.
    pub fn loop_lag(&mut self, now: Instant, lag: Duration) {
        self.lag_ewma_us = 0.9 * self.lag_ewma_us + 0.1 * lag.as_micros() as f64;
        self.stats
            .loop_lag_us
            .store(self.lag_ewma_us as u64, Ordering::Relaxed);
        let start = *self.window.get_or_insert(now);
        let span = now.saturating_duration_since(start);
        if span < WINDOW {
            return;
        }
        self.window = Some(now);
        let (admitted, shed) = (
            std::mem::take(&mut self.window_admitted),
            std::mem::take(&mut self.window_shed),
        );
        if self.cfg.max_lag_ms == 0 {
            return;
        }
        // The smoothed lateness (a time constant of about ten ticks), not a window's worst
        // tick: a single slow pass is not overload; a loop falling behind is.
        let limit = Duration::from_millis(self.cfg.max_lag_ms);
        let smoothed = Duration::from_micros(self.lag_ewma_us as u64);
        let rate_seen = f64::from(admitted) / span.as_secs_f64().max(0.001);
        if smoothed > limit {
            if !self.lagging {
                warn!(
                    smoothed_ms = %format_args!("{:.1}", smoothed.as_secs_f64() * 1e3),
                    admitted_per_s = rate_seen.round(),
                    "event loop late: new calls shed with 503 until it keeps time"
                );
            }
            // Late: shed, and let calls in again at a lower pace than what made it late.
            self.lagging = true;
            let rate = self
                .pace
                .map_or(rate_seen, |p| p.rate.min(rate_seen.max(p.rate * PACE_CUT)))
                * PACE_CUT;
            self.pace = Some(Pace {
                rate: rate.max(PACE_FLOOR),
                tokens: 0.0,
                filled: now,
                last_shed: now,
            });
        } else if smoothed < limit / 2 {
            if self.lagging {
                info!(
                    pace_per_s = self.pace.map(|p| p.rate.round()),
                    "event loop on time again: new calls admitted at a pace"
                );
            }
            self.lagging = false;
            if let Some(p) = self.pace.as_mut() {
                if shed {
                    p.rate *= PACE_GROWTH;
                } else if now.saturating_duration_since(p.last_shed) >= PACE_END {
                    self.pace = None;
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.stats
            .overloaded
            .store(u64::from(self.lagging), Ordering::Relaxed);
    }

    /// Whether new calls are shed for lateness now.
    pub fn lagging(&self) -> bool {
        self.lagging
    }

    /// A new call at `now` with `calls` citizens' calls up and `free_ports` RTP ports free
    /// (`reserved` of them kept for emergency hand-offs; `max_ports`: the port count).
    pub fn admit(
        &mut self,
        now: Instant,
        calls: usize,
        free_ports: usize,
        reserved: usize,
    ) -> Result<(), Shed> {
        let verdict = self.verdict(now, calls, free_ports, reserved);
        if let Err(why) = verdict {
            Stats::inc(&self.stats.calls_shed);
            let c = match why {
                Shed::Lag => &self.stats.calls_shed_lag,
                Shed::Calls | Shed::Rate => &self.stats.calls_shed_ceiling,
                Shed::Ports | Shed::Again => &self.stats.calls_shed_ports,
            };
            Stats::inc(c);
        }
        verdict
    }

    fn verdict(
        &mut self,
        now: Instant,
        calls: usize,
        free_ports: usize,
        reserved: usize,
    ) -> Result<(), Shed> {
        if self.lagging {
            self.window_shed = true;
            return Err(Shed::Lag);
        }
        if let Some(p) = self.pace.as_mut() {
            let elapsed = now.saturating_duration_since(p.filled).as_secs_f64();
            // A bucket 20 ms deep: the pace, not bursts.
            p.tokens = (p.tokens + elapsed * p.rate).min((p.rate * 0.02).max(1.0));
            p.filled = now;
            if p.tokens < 1.0 {
                p.last_shed = now;
                self.window_shed = true;
                return Err(Shed::Lag);
            }
            p.tokens -= 1.0;
        }
        if free_ports <= reserved {
            return Err(Shed::Ports);
        }
        if self.cfg.max_calls > 0 && calls >= self.cfg.max_calls {
            return Err(Shed::Calls);
        }
        if self.cfg.calls_per_s > 0 {
            let rate = f64::from(self.cfg.calls_per_s);
            let elapsed = self
                .filled
                .map(|t| now.saturating_duration_since(t).as_secs_f64())
                .unwrap_or(1.0);
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            self.filled = Some(now);
            if self.tokens < 1.0 {
                return Err(Shed::Rate);
            }
            self.tokens -= 1.0;
        }
        self.window_admitted += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adm(f: impl FnOnce(&mut OverloadConfig)) -> Admission {
        let mut cfg = OverloadConfig::default();
        f(&mut cfg);
        Admission::new(cfg, Arc::new(Stats::default()))
    }

    #[test]
    fn ceilings_shed_what_is_over_them() {
        let t0 = Instant::now();
        let mut a = adm(|c| {
            c.max_calls = 2;
            c.calls_per_s = 3;
        });
        assert_eq!(a.admit(t0, 0, 100, 2), Ok(()));
        assert_eq!(a.admit(t0, 2, 100, 2), Err(Shed::Calls));
        assert_eq!(a.admit(t0, 1, 2, 2), Err(Shed::Ports));
        assert_eq!(a.admit(t0, 1, 100, 2), Ok(()));
        assert_eq!(a.admit(t0, 1, 100, 2), Ok(()));
        assert_eq!(a.admit(t0, 1, 100, 2), Err(Shed::Rate), "three this second");
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(a.admit(t1, 1, 100, 2), Ok(()), "a token back after 1/3 s");
        assert_eq!(a.admit(t1, 1, 100, 2), Err(Shed::Rate));
        assert_eq!(Stats::get(&a.stats.calls_shed), 4);
        a.remember(t0, "z9hG4bK1");
        assert!(a.was_shed(t1, "z9hG4bK1") && !a.was_shed(t1, "z9hG4bK2"));
        assert!(a.was_shed(t0 + Duration::from_secs(31), "z9hG4bK1"));
        assert!(
            !a.was_shed(t0 + Duration::from_secs(33), "z9hG4bK1"),
            "forgotten after 64·T1"
        );
    }

    #[test]
    fn a_late_event_loop_sheds_until_it_keeps_time_again() {
        let t0 = Instant::now();
        let mut a = adm(|c| c.max_lag_ms = 20);
        let ms = Duration::from_millis;
        // Ticks on time, and one slow pass: nothing shed (it is not a loop falling behind).
        for i in 0..30 {
            a.loop_lag(t0 + ms(5 * i), ms(if i == 10 { 40 } else { 1 }));
        }
        assert_eq!(a.admit(t0 + ms(150), 0, 100, 2), Ok(()));
        // The loop falls behind: every tick 35 ms late; at the window's end calls are shed.
        for i in 0..20 {
            a.loop_lag(t0 + ms(155 + 5 * i), ms(35));
        }
        a.loop_lag(t0 + ms(260), ms(35));
        assert_eq!(a.admit(t0 + ms(260), 0, 100, 2), Err(Shed::Lag));
        // Catching up, the lateness smoothed between half the limit and the limit: still
        // shedding.
        for i in 0..4 {
            a.loop_lag(t0 + ms(300 + 25 * i), ms(1));
        }
        a.loop_lag(t0 + ms(370), ms(1));
        assert!(a.lagging());
        // On time again: calls are taken again, at a pace (20 a second at least, since none
        // came while it was late), not all at once.
        for i in 0..20 {
            a.loop_lag(t0 + ms(372 + 5 * i), ms(1));
        }
        a.loop_lag(t0 + ms(480), ms(1));
        assert!(!a.lagging());
        assert_eq!(a.admit(t0 + ms(530), 0, 100, 2), Ok(()));
        assert_eq!(a.admit(t0 + ms(531), 0, 100, 2), Err(Shed::Lag), "paced");
        assert_eq!(
            a.admit(t0 + ms(590), 0, 100, 2),
            Ok(()),
            "50 ms later, the next"
        );
        // With nothing shed for 5 s the pace ends.
        for i in 0..60 {
            a.loop_lag(t0 + ms(600 + 100 * i), ms(1));
        }
        for i in 0..10 {
            assert_eq!(
                a.admit(t0 + ms(6600) + Duration::from_micros(i), 0, 100, 2),
                Ok(())
            );
        }
    }
}
