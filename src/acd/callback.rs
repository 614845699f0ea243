//! Callbacks that keep the caller's place in line (回拨), sans-IO. A waiting caller presses the
//! queue's callback key (or its wait overflows into a `callback` step) and hangs up; the
//! request takes the caller's place: it stands in the same line with the caller's original
//! arrival time and priority, so it is served exactly when the caller would have been.
//! When it is first and a seat is free, the seat rings first (it sees a callback, the number
//! and the original wait); once the agent answers, the citizen is called over the outbound
//! trunk. An unanswered call to the citizen is retried after `spacing_s`, up to `attempts`;
//! outside the allowed hours the request is held out of line until they open, its place kept.
//!
//! This module holds a request's state and its transitions; call control (`core/callback.rs`)
//! places the calls and tells it what happened.

use crate::config::{CallbackConfig, Hours};
use crate::ivr::dialplan::QueueId;
use std::time::{Duration, Instant};

/// What a callback is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In its queue's line, at the place its original arrival gives it (a seat may ring).
    InLine,
    /// Out of the line until `until`: spacing after an unanswered call, or outside the
    /// allowed hours. Its place comes back with it.
    Held { until: Instant },
    /// The agent of seat leg `seat_leg` answered; the citizen is being called.
    Dialling { seat_leg: u64, trunk: Option<u64> },
    /// The citizen answered and hears the connect prompt; the agent waits.
    Connecting { seat_leg: u64, trunk: u64 },
    /// Citizen and agent talk.
    Connected { seat_leg: u64, trunk: u64 },
}

/// One callback request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The number to call back (the caller's).
    pub number: String,
    /// The Call-ID of the call that asked for it (its records name it).
    pub call_id: String,
    pub queue: QueueId,
    pub priority: u8,
    /// The caller's original arrival in line: its place and its wait count from here.
    pub since: Instant,
    /// Calls to the citizen so far.
    pub attempts: u32,
    pub state: State,
}

/// What follows a call to the citizen that nobody answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMiss {
    /// Back in line, keeping its place, at this time.
    RetryAt(Instant),
    /// No attempt left: the callback failed.
    Failed,
}

impl Request {
    /// A request for the caller of `call_id` at `number`, in `queue` since `since`.
    pub fn new(
        number: String,
        call_id: String,
        queue: QueueId,
        priority: u8,
        since: Instant,
    ) -> Request {
        Request {
            number,
            call_id,
            queue,
            priority,
            since,
            attempts: 0,
            state: State::InLine,
        }
    }

    /// Where the request goes at `now` (wall clock `wall`, Asia/Shanghai): into the line when
    /// the allowed hours are open, else held until they open.
    pub fn place(
        &mut self,
        now: Instant,
        wall: chrono::DateTime<chrono::FixedOffset>,
        hours: &Hours,
    ) {
        let wait = hours.wait_from(wall);
        self.state = if wait.is_zero() {
            State::InLine
        } else {
            State::Held { until: now + wait }
        };
    }

    /// The agent of `seat_leg` answered: the citizen is called next.
    pub fn seat_answered(&mut self, seat_leg: u64) {
        self.state = State::Dialling {
            seat_leg,
            trunk: None,
        };
    }

    /// The call to the citizen is placed on `trunk`.
    pub fn dialling(&mut self, trunk: u64) {
        if let State::Dialling { seat_leg, .. } = self.state {
            self.attempts += 1;
            self.state = State::Dialling {
                seat_leg,
                trunk: Some(trunk),
            };
        }
    }

    /// The citizen answered.
    pub fn citizen_answered(&mut self) {
        if let State::Dialling {
            seat_leg,
            trunk: Some(trunk),
        } = self.state
        {
            self.state = State::Connecting { seat_leg, trunk };
        }
    }

    /// The connect prompt is over: citizen and agent talk.
    pub fn connected(&mut self) {
        if let State::Connecting { seat_leg, trunk } = self.state {
            self.state = State::Connected { seat_leg, trunk };
        }
    }

    /// The call to the citizen was not answered (or could not be placed): held for the
    /// spacing and tried again, or failed after the last attempt.
    pub fn citizen_missed(&mut self, now: Instant, cfg: &CallbackConfig) -> AfterMiss {
        if matches!(self.state, State::Dialling { trunk: None, .. }) {
            self.attempts += 1; // not placed counts as an attempt: it cannot loop
        }
        if self.attempts >= cfg.attempts {
            return AfterMiss::Failed;
        }
        let at = now + Duration::from_secs(cfg.spacing_s);
        self.state = State::Held { until: at };
        AfterMiss::RetryAt(at)
    }

    /// The seat leg of the request, once an agent answered for it.
    pub fn seat_leg(&self) -> Option<u64> {
        match self.state {
            State::Dialling { seat_leg, .. }
            | State::Connecting { seat_leg, .. }
            | State::Connected { seat_leg, .. } => Some(seat_leg),
            _ => None,
        }
    }

    /// The call to the citizen, once placed.
    pub fn trunk(&self) -> Option<u64> {
        match self.state {
            State::Dialling { trunk, .. } => trunk,
            State::Connecting { trunk, .. } | State::Connected { trunk, .. } => Some(trunk),
            _ => None,
        }
    }
}

/// A number that can be called back: digits (an optional leading `+`), 3 to 20 of them.
pub fn callable(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or(number);
    (3..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> chrono::DateTime<chrono::FixedOffset> {
        crate::time::shanghai()
            .with_ymd_and_hms(2026, 12, 15, h, m, 0)
            .unwrap()
    }

    #[test]
    fn a_request_waits_for_the_allowed_hours_then_retries_and_fails_after_its_attempts() {
        let cfg = CallbackConfig {
            attempts: 2,
            spacing_s: 60,
            ..CallbackConfig::default()
        };
        let t0 = Instant::now();
        let mut r = Request::new("13800138000".into(), "c1".into(), QueueId(0), 0, t0);
        // 07:30, hours 08:00-21:00: held 30 minutes.
        r.place(t0, at(7, 30), &cfg.hours);
        assert_eq!(
            r.state,
            State::Held {
                until: t0 + Duration::from_secs(1800)
            }
        );
        r.place(t0, at(10, 0), &cfg.hours);
        assert_eq!(r.state, State::InLine);
        r.seat_answered(7);
        r.dialling(9);
        assert_eq!((r.attempts, r.seat_leg(), r.trunk()), (1, Some(7), Some(9)));
        assert_eq!(
            r.citizen_missed(t0, &cfg),
            AfterMiss::RetryAt(t0 + Duration::from_secs(60))
        );
        r.seat_answered(8);
        r.dialling(10);
        assert_eq!(r.citizen_missed(t0, &cfg), AfterMiss::Failed);
        // The place never changes: the original arrival and priority stay.
        assert_eq!((r.since, r.priority, r.queue), (t0, 0, QueueId(0)));
    }

    #[test]
    fn only_plain_numbers_are_called_back() {
        assert!(callable("13800138000"));
        assert!(callable("+8613800138000"));
        assert!(!callable("anonymous"));
        assert!(!callable("12"));
        assert!(!callable("138 0013 8000"));
    }
}
