//! Answer-rate probes (电话接通率, seed 004): the platform calls each probed unit line; a round
//! is up to `probes.attempts` calls `probes.spacing_s` apart and ends at the first answer. A
//! round nobody answered is one failure, which the scoring rules deduct. Every attempt and
//! every round is a record, so the report can show what was dialled when.

use super::trunk_call::Purpose;
use super::*;
use crate::sip::uac;

pub(super) struct ProbeRound {
    target: usize,
    attempt: u32,
    /// Whether any attempt reached the trunk (a round we could not place is not the unit's
    /// failure).
    placed: bool,
}

impl<M: MediaIo> Core<M> {
    /// Schedules the first round of every probed line.
    pub(super) fn start_probes(&mut self, now: Instant) {
        if !self.cfg.probes.enabled {
            return;
        }
        let first = Duration::from_secs(self.cfg.probes.first_after_s);
        for (i, t) in self.cfg.targets.iter().enumerate() {
            if t.probe {
                self.timers
                    .push(now + first, (HOUSEKEEPING, CallTimer::ProbeRound(i)));
            }
        }
    }

    /// A new round for target `target`; the next one is scheduled at once.
    pub(super) fn probe_round(&mut self, now: Instant, target: usize) {
        if self.shutting_down {
            return;
        }
        self.timers.push(
            now + Duration::from_secs(self.cfg.probes.every_s),
            (HOUSEKEEPING, CallTimer::ProbeRound(target)),
        );
        self.probe_rounds_started += 1;
        let round = self.probe_rounds_started;
        self.probes.insert(
            round,
            ProbeRound {
                target,
                attempt: 0,
                placed: false,
            },
        );
        self.probe_attempt(now, round);
    }

    pub(super) fn probe_attempt(&mut self, now: Instant, round: u64) {
        let Some(p) = self.probes.get_mut(&round) else {
            return;
        };
        p.attempt += 1;
        let (target, attempt) = (p.target, p.attempt);
        let caller = self.cfg.probes.caller.clone();
        let ring = Duration::from_secs(self.cfg.probes.ring_timeout_s);
        let (number, name) = self.target_label(target);
        info!(number = %number, name = %name, round, attempt, "answer-rate probe");
        Stats::inc(&self.stats.probes);
        let purpose = Purpose::Probe { round, attempt };
        match self.dial_target(
            now,
            target,
            &caller,
            purpose,
            ring,
            (crate::media::Codec::Pcmu, 0),
            &[("X-Hotline-Probe", "answer-rate")],
        ) {
            Ok(_) => {
                if let Some(p) = self.probes.get_mut(&round) {
                    p.placed = true;
                }
            }
            Err(e) => {
                warn!(number = %number, error = %e, "probe not placed");
                self.probe_outcome(now, round, "not_placed", None, 0.0);
            }
        }
    }

    /// What became of a probe call.
    pub(super) fn probe_event(
        &mut self,
        now: Instant,
        key: u64,
        round: u64,
        _attempt: u32,
        event: uac::Event,
    ) {
        let ring_s = self
            .trunk_calls
            .get(&key)
            .map(|c| now.saturating_duration_since(c.started).as_secs_f64())
            .unwrap_or(0.0);
        match event {
            uac::Event::Ringing => {}
            uac::Event::Answered { .. } => {
                // Answered is all a probe needs to know: hang up at once.
                self.end_trunk(now, key);
                self.probe_outcome(now, round, "answered", Some(200), ring_s);
            }
            uac::Event::Failed { code } => {
                let outcome = match code {
                    486 | 600 | 603 => "busy",
                    408 | 480 | 487 | 0 => "no_answer",
                    _ => "failed",
                };
                self.probe_outcome(now, round, outcome, Some(code), ring_s);
            }
        }
    }

    fn probe_outcome(
        &mut self,
        now: Instant,
        round: u64,
        outcome: &str,
        code: Option<u16>,
        ring_s: f64,
    ) {
        let Some(p) = self.probes.get(&round) else {
            return;
        };
        let (target, attempt, placed) = (p.target, p.attempt, p.placed);
        let Some(t) = self.cfg.targets.get(target) else {
            return;
        };
        let (number, name, kind, unit) = (
            t.number.clone(),
            t.name.clone(),
            t.kind,
            t.unit_name().to_string(),
        );
        let kind = serde_json::to_value(kind).unwrap_or_default();
        info!(number = %number, round, attempt, outcome, "probe attempt over");
        self.record("probe", None, None, None, serde_json::json!({ "number": number, "name": name, "kind": kind, "unit": unit, "round": round, "attempt": attempt, "outcome": outcome, "code": code, "ring_s": ring_s }));
        let answered = outcome == "answered";
        if !answered && attempt < self.cfg.probes.attempts {
            self.timers.push(
                now + Duration::from_secs(self.cfg.probes.spacing_s),
                (HOUSEKEEPING, CallTimer::ProbeAttempt(round)),
            );
            return;
        }
        self.probes.remove(&round);
        if !answered && !placed {
            warn!(number = %number, round, "no probe attempt of this round could be placed; not counted against the unit");
            return;
        }
        if !answered {
            warn!(number = %number, name = %name, round, "probe round unanswered: the line counts as not answered (电话不通)");
        }
        self.record("probe_round", None, None, None, serde_json::json!({ "number": number, "name": name, "kind": kind, "unit": unit, "round": round, "attempts": attempt, "answered": answered }));
    }
}
