//! Repeat callers, sans-IO: one number calling many times within `repeat_callers.window_h`
//! hours gets graduated handling, as configured: from the `remind_at`-th call in the window a
//! reminder prompt first, from the `queue_at`-th call (after the reminder) a designated queue.
//! Never a silent block: every call is answered and served. Emergency-related numbers (the
//! configured `exempt` ones, every emergency target's number and the priority callers such as
//! 110's hand-over line) are never counted.

use crate::config::Config;
use crate::metrics::record::RepeatTreatment;
use std::collections::{HashMap, HashSet, VecDeque};

pub struct RepeatCallers {
    enabled: bool,
    window_s: i64,
    remind_at: u32,
    queue_at: u32,
    exempt: HashSet<String>,
    /// Per number: the times (Unix seconds) of its calls within the window, oldest first.
    calls: HashMap<String, VecDeque<i64>>,
}

impl RepeatCallers {
    pub fn new(cfg: &Config) -> RepeatCallers {
        let r = &cfg.repeat_callers;
        let mut exempt = cfg.repeat_exempt();
        exempt.extend(cfg.acd.priority_callers.keys().cloned());
        RepeatCallers {
            enabled: r.enabled,
            window_s: (r.window_h as i64).saturating_mul(3600),
            remind_at: r.remind_at,
            queue_at: r.queue_at,
            exempt,
            calls: HashMap::new(),
        }
    }

    /// A call from `number` at `at` (Unix seconds): its count in the window (this one
    /// included) and what it gets, when it is a repeat (the second call or later).
    pub fn on_call(&mut self, number: &str, at: i64) -> Option<(u32, RepeatTreatment)> {
        if !self.enabled || self.exempt.contains(number) || !crate::acd::callback::callable(number)
        {
            return None;
        }
        let window = self.window_s;
        let times = self.calls.entry(number.to_string()).or_default();
        while times.front().is_some_and(|&t| at - t >= window) {
            times.pop_front();
        }
        times.push_back(at);
        let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
        if count < 2 {
            return None;
        }
        let treatment = if count >= self.queue_at {
            RepeatTreatment::Designated
        } else if count >= self.remind_at {
            RepeatTreatment::Reminded
        } else {
            RepeatTreatment::None
        };
        Some((count, treatment))
    }

    /// Forgets numbers with no call left in the window at `at` (housekeeping).
    pub fn prune(&mut self, at: i64) {
        let window = self.window_s;
        self.calls
            .retain(|_, t| t.back().is_some_and(|&last| at - last < window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(text: &str) -> RepeatCallers {
        let cfg = Config::from_toml(text, std::path::Path::new("/tmp/hotline.toml")).unwrap();
        RepeatCallers::new(&cfg)
    }

    #[test]
    fn graduated_within_the_window_and_never_for_emergency_numbers() {
        let mut r = tracker(
            "[repeat_callers]\nenabled = true\nwindow_h = 1\nremind_at = 2\nqueue_at = 3\nqueue = \"general\"\nexempt = [\"110\", \"119\"]\n[queues.general]\n",
        );
        assert_eq!(r.on_call("13800138000", 0), None);
        assert_eq!(
            r.on_call("13800138000", 60),
            Some((2, RepeatTreatment::Reminded))
        );
        assert_eq!(
            r.on_call("13800138000", 120),
            Some((3, RepeatTreatment::Designated))
        );
        // An hour after the first two calls they have left the window (the third has not).
        assert_eq!(
            r.on_call("13800138000", 3700),
            Some((2, RepeatTreatment::Reminded))
        );
        for _ in 0..5 {
            assert_eq!(r.on_call("110", 10), None);
        }
        assert_eq!(r.on_call("anonymous", 10), None);
        r.prune(100_000);
        assert!(r.calls.is_empty());
    }
}
