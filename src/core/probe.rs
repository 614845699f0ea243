//! Answer-rate probes (电话接通率, seed 004): the platform calls each probed unit line; a round
//! is up to `probes.attempts` calls `probes.spacing_s` apart and ends at the first answer. A
//! round nobody answered is one failure, which the scoring rules deduct. Every attempt and
//! every round is a record, so the report can show what was dialled when.

use super::trunk::Purpose;
use super::*;
use crate::metrics::record::ProbeOutcome;
use tracing::warn;

#[derive(Default)]
pub(super) struct Probes {
    rounds: HashMap<u64, Round>,
    started: u64,
}

struct Round {
    target: usize,
    attempt: u32,
    /// Whether any attempt reached the trunk (a round we could not place is not the unit's
    /// failure).
    placed: bool,
}

impl<M: MediaIo> Core<M> {
    /// Schedules the first round of every probed line.
    pub(super) fn start_probes(&mut self, now: Now) {
        if !self.env.cfg.probes.enabled {
            return;
        }
        let first = Duration::from_secs(self.env.cfg.probes.first_after_s);
        for (i, t) in self.env.cfg.targets.iter().enumerate() {
            if t.probe {
                self.timers
                    .set(Timer::ProbeRound(i), Some(now.mono + first));
            }
        }
    }

    /// A new round for target `target`; the next one is scheduled at once.
    pub(super) fn probe_round(&mut self, now: Now, target: usize) {
        if self.shutting_down {
            return;
        }
        self.timers.set(
            Timer::ProbeRound(target),
            Some(now.mono + Duration::from_secs(self.env.cfg.probes.every_s)),
        );
        self.probes.started += 1;
        let round = self.probes.started;
        self.probes.rounds.insert(
            round,
            Round {
                target,
                attempt: 0,
                placed: false,
            },
        );
        self.probe_attempt(now, round);
    }

    pub(super) fn probe_attempt(&mut self, now: Now, round: u64) {
        let Some(p) = self.probes.rounds.get_mut(&round) else {
            return;
        };
        p.attempt += 1;
        let (target, attempt) = (p.target, p.attempt);
        let caller = self.env.cfg.probes.caller.clone();
        let ring = Duration::from_secs(self.env.cfg.probes.ring_timeout_s);
        let label = self.target_label(target);
        info!(number = %label.number, name = %label.name, round, attempt, "answer-rate probe");
        Stats::inc(&self.env.stats.probes);
        match self.dial_target(
            now,
            target,
            &caller,
            Purpose::Probe { round, attempt },
            ring,
            (crate::media::Codec::Pcmu, 0),
            &[("X-Hotline-Probe", "answer-rate")],
        ) {
            Ok(_) => {
                if let Some(p) = self.probes.rounds.get_mut(&round) {
                    p.placed = true;
                }
            }
            Err(e) => {
                warn!(number = %label.number, error = %e, "probe not placed");
                self.probe_outcome(now, round, ProbeOutcome::NotPlaced, None, 0.0);
            }
        }
    }

    /// What became of a probe call.
    pub(super) fn probe_outcome_of(
        &mut self,
        now: Now,
        id: TrunkId,
        round: u64,
        outcome: Result<(), u16>,
    ) {
        let ring_s = self
            .legs
            .trunks
            .get(&id)
            .map(|c| now.since(c.started).as_secs_f64())
            .unwrap_or(0.0);
        match outcome {
            Ok(()) => {
                // Answered is all a probe needs to know: hang up at once.
                self.end_trunk(now, id);
                self.probe_outcome(now, round, ProbeOutcome::Answered, Some(200), ring_s);
            }
            Err(code) => {
                let outcome = ProbeOutcome::of_failure(code);
                self.probe_outcome(now, round, outcome, Some(code), ring_s);
            }
        }
    }

    fn probe_outcome(
        &mut self,
        now: Now,
        round: u64,
        outcome: ProbeOutcome,
        code: Option<u16>,
        ring_s: f64,
    ) {
        let Some(p) = self.probes.rounds.get(&round) else {
            return;
        };
        let (target, attempt, placed) = (p.target, p.attempt, p.placed);
        let label = self.target_label(target);
        info!(number = %label.number, round, attempt, ?outcome, "probe attempt over");
        let event = RecordEvent::Probe {
            target: label.clone(),
            round,
            attempt,
            outcome,
            code,
            ring_s,
        };
        self.record(now, event, None, None, None);
        let answered = outcome == ProbeOutcome::Answered;
        if !answered && attempt < self.env.cfg.probes.attempts {
            self.timers.set(
                Timer::ProbeAttempt(round),
                Some(now.mono + Duration::from_secs(self.env.cfg.probes.spacing_s)),
            );
            return;
        }
        self.probes.rounds.remove(&round);
        if !answered && !placed {
            warn!(number = %label.number, round, "no probe attempt of this round could be placed; not counted against the unit");
            return;
        }
        if !answered {
            warn!(number = %label.number, name = %label.name, round, "probe round unanswered: the line counts as not answered (电话不通)");
        }
        let event = RecordEvent::ProbeRound {
            target: label,
            round,
            attempts: attempt,
            answered,
        };
        self.record(now, event, None, None, None);
    }
}
