//! Per-seat and per-queue figures for one day (Asia/Shanghai), folded from the same
//! [`Record`]s that go to the durable store. Call control folds them live; `hotline figures`
//! folds the stored rows of a day; the same code on the same events gives the same numbers.

use super::record::{
    CallbackOutcome, EndedBy, Event, OfferOutcome, QueueExit, Record, RepeatTreatment, TargetLabel,
    TransferOutcome,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// Service-level thresholds the hotline is scored on (answered within 15 s and 30 s).
pub const SL_SHORT_S: f64 = 15.0;
pub const SL_LONG_S: f64 = 30.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeatFigures {
    /// Offers to the seat (ring-all offers another seat answered first are not counted).
    pub offered: u64,
    pub answered: u64,
    /// Rang out (ring-no-answer).
    pub missed: u64,
    pub rejected: u64,
    pub failed: u64,
    /// The caller hung up while the seat rang.
    pub withdrawn: u64,
    /// Seconds from offer to answer, summed over answered offers.
    pub answer_time_s: f64,
    pub talk_time_s: f64,
    pub wrap_up_time_s: f64,
    /// answered ÷ offered (1 when nothing was offered).
    pub answer_rate: f64,
    pub survey: SurveyFigures,
    /// Answered calls the agent passed on to a target (three-way or blind transfer, hand-off);
    /// answered − transferred are resolved at once (即时解答).
    pub transferred: u64,
    /// Conversations cut by a crash of the daemon (closed at the next start; no talk time).
    pub lost: u64,
}

/// Satisfaction survey answers (满意 / 基本满意 / 不满意) and calls where none came.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SurveyFigures {
    pub satisfied: u64,
    pub basically_satisfied: u64,
    pub dissatisfied: u64,
    pub no_answer: u64,
    /// (satisfied + basically satisfied) ÷ ratings given (1 when none).
    pub satisfaction_rate: f64,
}

impl SurveyFigures {
    fn add(&mut self, rating: Option<u64>) {
        match rating {
            Some(1) => self.satisfied += 1,
            Some(2) => self.basically_satisfied += 1,
            Some(3) => self.dissatisfied += 1,
            _ => self.no_answer += 1,
        }
        let rated = self.satisfied + self.basically_satisfied + self.dissatisfied;
        self.satisfaction_rate = if rated == 0 {
            1.0
        } else {
            (self.satisfied + self.basically_satisfied) as f64 / rated as f64
        };
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueFigures {
    /// Callers who entered the queue.
    pub offered: u64,
    pub answered: u64,
    /// Hung up while waiting.
    pub abandoned: u64,
    /// Of those, hung up within the queue's short_abandon_s.
    pub short_abandoned: u64,
    /// Left at the maximum wait (sorry prompt or overflow).
    pub timed_out: u64,
    /// Sent on because no seat was logged in.
    pub no_agents: u64,
    /// Waiting when the daemon crashed (closed at the next start): neither answered nor
    /// abandoned.
    pub lost: u64,
    pub answered_within_15s: u64,
    pub answered_within_30s: u64,
    /// Average speed of answer: mean wait of answered callers, seconds.
    pub asa_s: f64,
    /// Average handle time: mean talk plus wrap-up of handled calls, seconds.
    pub aht_s: f64,
    /// The longest wait of a caller who left the queue (answered or not), seconds.
    pub longest_wait_s: f64,
    /// answered_within_15s ÷ (answered + abandoned - short_abandoned).
    pub service_level_15s: f64,
    pub service_level_30s: f64,
    pub survey: SurveyFigures,
    /// Callbacks (回拨) asked for while waiting in this queue: each keeps its place and is
    /// counted once, answered or failed (a request is not an abandon).
    pub callbacks_requested: u64,
    pub callbacks_answered: u64,
    pub callbacks_failed: u64,
    #[serde(skip)]
    wait_answered_s: f64,
    #[serde(skip)]
    handled: u64,
    #[serde(skip)]
    handle_s: f64,
}

/// A transfer target's (sub-centre, emergency centre, …) figures: the transfers agents made to
/// it and the answer-rate probes of its line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetFigures {
    pub name: String,
    pub kind: String,
    pub unit: String,
    /// Transfers and hand-offs dialled to it.
    pub transfers: u64,
    pub transfers_answered: u64,
    /// Busy, no answer within its timeout, or refused.
    pub transfers_failed: u64,
    /// Given up because the caller (or the agent of a blind transfer) went first.
    pub transfers_abandoned: u64,
    /// Answered ÷ (answered + failed): the sub-centre's answer rate.
    pub transfer_answer_rate: f64,
    /// Average seconds from dialling to its answer.
    pub transfer_asa_s: f64,
    #[serde(skip)]
    answer_s: f64,
    /// Probe rounds (up to `probes.attempts` calls each) and attempts.
    pub probe_rounds: u64,
    pub probe_attempts: u64,
    /// Rounds in which no attempt was answered (电话不通、无人值守).
    pub probe_failures: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// The day (YYYY-MM-DD, Asia/Shanghai) these figures are for; a record of a later day
    /// starts a new one.
    pub day: String,
    pub seats: BTreeMap<String, SeatFigures>,
    pub queues: BTreeMap<String, QueueFigures>,
    /// Per transfer target and probed line, by number.
    pub targets: BTreeMap<String, TargetFigures>,
    /// Repeat callers of the day.
    pub repeat_callers: RepeatFigures,
    /// Revisit ratings (回访) per handling unit.
    pub revisits: BTreeMap<String, SurveyFigures>,
    /// Fold every record given, whatever its day (a month's report).
    #[serde(skip)]
    pub whole_period: bool,
}

/// Numbers that called again within the repeat-caller window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepeatFigures {
    /// Calls that were a repeat (the second or later of their number in the window).
    pub calls: u64,
    /// Of those, calls that heard the reminder, and calls sent to the designated queue.
    pub reminded: u64,
    pub designated: u64,
}

impl Figures {
    fn target(&mut self, t: &TargetLabel) -> &mut TargetFigures {
        let f = self.targets.entry(t.number.clone()).or_default();
        t.name.clone_into(&mut f.name);
        kind_name(t.kind).clone_into(&mut f.kind);
        t.unit.clone_into(&mut f.unit);
        f
    }

    pub fn apply(&mut self, r: &Record) {
        let day = r.day();
        if day != self.day && !self.whole_period {
            if day < self.day.as_str() {
                return; // a late record of a closed day (clock step): not today's
            }
            *self = Figures {
                day: day.to_string(),
                ..Figures::default()
            };
        }
        match &r.event {
            Event::Offer {
                outcome, ring_s, ..
            } => {
                let Some(seat) = &r.seat else { return };
                let s = self.seats.entry(seat.clone()).or_default();
                let counter = match outcome {
                    OfferOutcome::Answered => &mut s.answered,
                    OfferOutcome::Missed => &mut s.missed,
                    OfferOutcome::Rejected => &mut s.rejected,
                    OfferOutcome::Failed => &mut s.failed,
                    OfferOutcome::Withdrawn => &mut s.withdrawn,
                    // Ring-all: not an offer to this seat.
                    OfferOutcome::AnsweredElsewhere => return,
                };
                *counter += 1;
                s.offered += 1;
                if *outcome == OfferOutcome::Answered {
                    s.answer_time_s += ring_s;
                }
                s.answer_rate = if s.offered == 0 {
                    1.0
                } else {
                    s.answered as f64 / s.offered as f64
                };
            }
            Event::TalkEnd {
                ended_by: EndedBy::Lost,
                ..
            } => {
                if let Some(seat) = &r.seat {
                    self.seats.entry(seat.clone()).or_default().lost += 1;
                }
            }
            Event::TalkEnd { talk_s, wrap_s, .. } => {
                if let Some(seat) = &r.seat {
                    let s = self.seats.entry(seat.clone()).or_default();
                    s.talk_time_s += talk_s;
                    s.wrap_up_time_s += wrap_s;
                }
                if let Some(q) = &r.queue {
                    let q = self.queues.entry(q.clone()).or_default();
                    q.handled += 1;
                    q.handle_s += talk_s + wrap_s;
                    q.aht_s = q.handle_s / q.handled as f64;
                }
            }
            Event::Survey {
                rating,
                unit: Some(unit),
                ..
            } if r.seat.is_none() => {
                self.revisits
                    .entry(unit.clone())
                    .or_default()
                    .add(rating.map(u64::from));
            }
            Event::Callback(c) => {
                let Some(q) = &r.queue else { return };
                let q = self.queues.entry(q.clone()).or_default();
                match c.outcome {
                    CallbackOutcome::Requested => q.callbacks_requested += 1,
                    CallbackOutcome::Answered => q.callbacks_answered += 1,
                    CallbackOutcome::Failed => q.callbacks_failed += 1,
                    CallbackOutcome::AttemptFailed => {}
                }
                // An answered callback is an answered call of the queue, its wait counted
                // from the original arrival (service level and ASA).
                if c.outcome == CallbackOutcome::Answered {
                    let waited = c.waited_s.unwrap_or(0.0);
                    q.answered += 1;
                    q.wait_answered_s += waited;
                    q.asa_s = q.wait_answered_s / q.answered as f64;
                    q.answered_within_15s += u64::from(waited <= SL_SHORT_S);
                    q.answered_within_30s += u64::from(waited <= SL_LONG_S);
                    q.longest_wait_s = q.longest_wait_s.max(waited);
                    q.service_levels();
                }
            }
            Event::RepeatCaller { treatment, .. } => {
                let f = &mut self.repeat_callers;
                f.calls += 1;
                match treatment {
                    RepeatTreatment::Reminded => f.reminded += 1,
                    RepeatTreatment::Designated => f.designated += 1,
                    RepeatTreatment::None => {}
                }
            }
            Event::Survey { rating, .. } => {
                let rating = rating.map(u64::from);
                if let Some(seat) = &r.seat {
                    self.seats
                        .entry(seat.clone())
                        .or_default()
                        .survey
                        .add(rating);
                }
                if let Some(q) = &r.queue {
                    self.queues.entry(q.clone()).or_default().survey.add(rating);
                }
            }
            Event::Transfer(x) => {
                let t = self.target(&x.target);
                match x.outcome {
                    TransferOutcome::Started => t.transfers += 1,
                    TransferOutcome::Answered => {
                        t.transfers_answered += 1;
                        t.answer_s += x.answer_s.unwrap_or(0.0);
                        t.transfer_asa_s = t.answer_s / t.transfers_answered as f64;
                    }
                    TransferOutcome::Abandoned => t.transfers_abandoned += 1,
                    TransferOutcome::Busy | TransferOutcome::NoAnswer | TransferOutcome::Failed => {
                        t.transfers_failed += 1
                    }
                }
                let tried = t.transfers_answered + t.transfers_failed;
                t.transfer_answer_rate = if tried == 0 {
                    1.0
                } else {
                    t.transfers_answered as f64 / tried as f64
                };
                if x.outcome == TransferOutcome::Started
                    && let Some(seat) = &r.seat
                {
                    self.seats.entry(seat.clone()).or_default().transferred += 1;
                }
            }
            Event::Probe { target, .. } => {
                self.target(target).probe_attempts += 1;
            }
            Event::ProbeRound {
                target, answered, ..
            } => {
                let t = self.target(target);
                t.probe_rounds += 1;
                if !answered {
                    t.probe_failures += 1;
                }
            }
            Event::QueueEnter { .. } => {
                if let Some(q) = &r.queue {
                    self.queues.entry(q.clone()).or_default().offered += 1;
                }
            }
            Event::QueueExit {
                reason,
                waited_s,
                short,
                ..
            } => {
                let Some(q) = &r.queue else { return };
                let q = self.queues.entry(q.clone()).or_default();
                let waited = *waited_s;
                q.longest_wait_s = q.longest_wait_s.max(waited);
                match reason {
                    QueueExit::Answered => {
                        q.answered += 1;
                        q.wait_answered_s += waited;
                        q.asa_s = q.wait_answered_s / q.answered as f64;
                        q.answered_within_15s += u64::from(waited <= SL_SHORT_S);
                        q.answered_within_30s += u64::from(waited <= SL_LONG_S);
                    }
                    QueueExit::Abandoned => {
                        q.abandoned += 1;
                        if *short {
                            q.short_abandoned += 1;
                        }
                    }
                    QueueExit::Timeout => q.timed_out += 1,
                    QueueExit::NoAgents => q.no_agents += 1,
                    QueueExit::Lost => q.lost += 1,
                    // Counted when the callback is answered or fails.
                    QueueExit::Callback | QueueExit::Shutdown => {}
                }
                q.service_levels();
            }
            _ => {}
        }
    }
}

impl QueueFigures {
    fn service_levels(&mut self) {
        let base = (self.answered + self.abandoned).saturating_sub(self.short_abandoned);
        let rate = |n: u64| {
            if base == 0 {
                1.0
            } else {
                n as f64 / base as f64
            }
        };
        self.service_level_15s = rate(self.answered_within_15s);
        self.service_level_30s = rate(self.answered_within_30s);
    }
}

/// The target kind as figures and reports print it.
pub fn kind_name(k: crate::config::TargetKind) -> &'static str {
    use crate::config::TargetKind;
    match k {
        TargetKind::Subcentre => "subcentre",
        TargetKind::Retained => "retained",
        TargetKind::Expert => "expert",
        TargetKind::Emergency => "emergency",
        TargetKind::Utility => "utility",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        at: &str,
        kind: &'static str,
        seat: Option<&str>,
        queue: Option<&str>,
        detail: serde_json::Value,
    ) -> Record {
        Record::from_parts(
            at.into(),
            kind,
            None,
            seat.map(Into::into),
            queue.map(Into::into),
            detail,
        )
        .expect("a known kind with its detail")
    }

    #[test]
    fn a_day_of_events_gives_the_figures() {
        let d = "2026-11-23T10:00:00.000+08:00";
        let mut f = Figures::default();
        for r in [
            rec(
                d,
                "queue_enter",
                None,
                Some("general"),
                serde_json::json!({}),
            ),
            rec(
                d,
                "offer",
                Some("1001"),
                Some("general"),
                serde_json::json!({ "outcome": "missed", "ring_s": 15.0 }),
            ),
            rec(
                d,
                "offer",
                Some("1002"),
                Some("general"),
                serde_json::json!({ "outcome": "answered", "ring_s": 2.0 }),
            ),
            rec(
                d,
                "offer",
                Some("1001"),
                Some("general"),
                serde_json::json!({ "outcome": "answered_elsewhere", "ring_s": 2.0 }),
            ),
            rec(
                d,
                "queue_exit",
                None,
                Some("general"),
                serde_json::json!({ "reason": "answered", "waited_s": 20.0 }),
            ),
            rec(
                d,
                "talk_end",
                Some("1002"),
                Some("general"),
                serde_json::json!({ "talk_s": 100.0, "wrap_s": 5.0 }),
            ),
            rec(
                d,
                "queue_enter",
                None,
                Some("general"),
                serde_json::json!({}),
            ),
            rec(
                d,
                "queue_exit",
                None,
                Some("general"),
                serde_json::json!({ "reason": "abandoned", "waited_s": 3.0, "short": true }),
            ),
            rec(
                d,
                "queue_enter",
                None,
                Some("general"),
                serde_json::json!({}),
            ),
            rec(
                d,
                "queue_exit",
                None,
                Some("general"),
                serde_json::json!({ "reason": "abandoned", "waited_s": 40.0, "short": false }),
            ),
        ] {
            f.apply(&r);
        }
        let s1 = &f.seats["1001"];
        assert_eq!(
            (s1.offered, s1.answered, s1.missed, s1.answer_rate),
            (1, 0, 1, 0.0)
        );
        let s2 = &f.seats["1002"];
        assert_eq!(
            (
                s2.offered,
                s2.answered,
                s2.answer_time_s,
                s2.talk_time_s,
                s2.wrap_up_time_s
            ),
            (1, 1, 2.0, 100.0, 5.0)
        );
        let q = &f.queues["general"];
        assert_eq!(
            (q.offered, q.answered, q.abandoned, q.short_abandoned),
            (3, 1, 2, 1)
        );
        assert_eq!(
            (
                q.answered_within_15s,
                q.answered_within_30s,
                q.asa_s,
                q.aht_s,
                q.longest_wait_s
            ),
            (0, 1, 20.0, 105.0, 40.0)
        );
        assert_eq!((q.service_level_15s, q.service_level_30s), (0.0, 0.5));
        // The next day starts from zero; a late record of the old day is not counted in it.
        f.apply(&rec(
            "2026-11-24T00:00:01.000+08:00",
            "queue_enter",
            None,
            Some("general"),
            serde_json::json!({}),
        ));
        f.apply(&rec(
            d,
            "queue_enter",
            None,
            Some("general"),
            serde_json::json!({}),
        ));
        assert_eq!(f.day, "2026-11-24");
        assert_eq!(f.queues["general"].offered, 1);
        assert!(f.seats.is_empty());
    }
}
