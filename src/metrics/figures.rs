//! Per-seat and per-queue figures for one day (Asia/Shanghai), folded from the same
//! [`Record`]s that go to the durable store. Call control folds them live; `hotline figures`
//! folds the stored rows of a day; the same code on the same events gives the same numbers.

use super::Record;
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
    /// Fold every record given, whatever its day (a month's report).
    #[serde(skip)]
    pub whole_period: bool,
}

fn num(r: &Record, key: &str) -> f64 {
    r.detail.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0)
}

impl Figures {
    fn target(&mut self, number: &str, r: &Record) -> &mut TargetFigures {
        let t = self.targets.entry(number.to_string()).or_default();
        for (field, key) in [
            (&mut t.name, "name"),
            (&mut t.kind, "kind"),
            (&mut t.unit, "unit"),
        ] {
            if let Some(v) = r.detail.get(key).and_then(|v| v.as_str()) {
                v.clone_into(field);
            }
        }
        t
    }

    pub fn apply(&mut self, r: &Record) {
        let day = r.at.get(..10).unwrap_or("");
        if day != self.day && !self.whole_period {
            if day < self.day.as_str() {
                return; // a late record of a closed day (clock step): not today's
            }
            *self = Figures {
                day: day.to_string(),
                ..Figures::default()
            };
        }
        match r.kind {
            "offer" => {
                let Some(seat) = &r.seat else { return };
                let s = self.seats.entry(seat.clone()).or_default();
                let outcome = r
                    .detail
                    .get("outcome")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let counter = match outcome {
                    "answered" => &mut s.answered,
                    "missed" => &mut s.missed,
                    "rejected" => &mut s.rejected,
                    "failed" => &mut s.failed,
                    "withdrawn" => &mut s.withdrawn,
                    _ => return, // answered elsewhere (ring-all): not an offer to this seat
                };
                *counter += 1;
                s.offered += 1;
                if outcome == "answered" {
                    s.answer_time_s += num(r, "ring_s");
                }
                s.answer_rate = if s.offered == 0 {
                    1.0
                } else {
                    s.answered as f64 / s.offered as f64
                };
            }
            "talk_end" => {
                if let Some(seat) = &r.seat {
                    let s = self.seats.entry(seat.clone()).or_default();
                    s.talk_time_s += num(r, "talk_s");
                    s.wrap_up_time_s += num(r, "wrap_s");
                }
                if let Some(q) = &r.queue {
                    let q = self.queues.entry(q.clone()).or_default();
                    q.handled += 1;
                    q.handle_s += num(r, "talk_s") + num(r, "wrap_s");
                    q.aht_s = q.handle_s / q.handled as f64;
                }
            }
            "survey" => {
                let rating = r.detail.get("rating").and_then(|v| v.as_u64());
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
            "transfer" => {
                let Some(number) = r.detail.get("number").and_then(|v| v.as_str()) else {
                    return;
                };
                let t = self.target(number, r);
                match r
                    .detail
                    .get("outcome")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                {
                    "started" => t.transfers += 1,
                    "answered" => {
                        t.transfers_answered += 1;
                        t.answer_s += num(r, "answer_s");
                        t.transfer_asa_s = t.answer_s / t.transfers_answered as f64;
                    }
                    "abandoned" => t.transfers_abandoned += 1,
                    _ => t.transfers_failed += 1,
                }
                let tried = t.transfers_answered + t.transfers_failed;
                t.transfer_answer_rate = if tried == 0 {
                    1.0
                } else {
                    t.transfers_answered as f64 / tried as f64
                };
                if r.detail.get("outcome").and_then(|v| v.as_str()) == Some("started") {
                    if let Some(seat) = &r.seat {
                        self.seats.entry(seat.clone()).or_default().transferred += 1;
                    }
                }
            }
            "probe" => {
                let Some(number) = r.detail.get("number").and_then(|v| v.as_str()) else {
                    return;
                };
                let t = self.target(number, r);
                t.probe_attempts += 1;
            }
            "probe_round" => {
                let Some(number) = r.detail.get("number").and_then(|v| v.as_str()) else {
                    return;
                };
                let t = self.target(number, r);
                t.probe_rounds += 1;
                if r.detail.get("answered").and_then(|v| v.as_bool()) == Some(false) {
                    t.probe_failures += 1;
                }
            }
            "queue_enter" => {
                if let Some(q) = &r.queue {
                    self.queues.entry(q.clone()).or_default().offered += 1;
                }
            }
            "queue_exit" => {
                let Some(q) = &r.queue else { return };
                let q = self.queues.entry(q.clone()).or_default();
                let waited = num(r, "waited_s");
                q.longest_wait_s = q.longest_wait_s.max(waited);
                match r
                    .detail
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                {
                    "answered" => {
                        q.answered += 1;
                        q.wait_answered_s += waited;
                        q.asa_s = q.wait_answered_s / q.answered as f64;
                        q.answered_within_15s += u64::from(waited <= SL_SHORT_S);
                        q.answered_within_30s += u64::from(waited <= SL_LONG_S);
                    }
                    "abandoned" => {
                        q.abandoned += 1;
                        if r.detail
                            .get("short")
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false)
                        {
                            q.short_abandoned += 1;
                        }
                    }
                    "timeout" => q.timed_out += 1,
                    "no_agents" => q.no_agents += 1,
                    _ => {}
                }
                let base = (q.answered + q.abandoned).saturating_sub(q.short_abandoned);
                let rate = |n: u64| {
                    if base == 0 {
                        1.0
                    } else {
                        n as f64 / base as f64
                    }
                };
                q.service_level_15s = rate(q.answered_within_15s);
                q.service_level_30s = rate(q.answered_within_30s);
            }
            _ => {}
        }
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
        Record {
            at: at.into(),
            kind,
            call_id: None,
            seat: seat.map(Into::into),
            queue: queue.map(Into::into),
            detail,
        }
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
