//! Revisit calls (回访): call control's side of [`crate::revisit`]. Due cases are called over
//! `[revisit] trunk` presenting `[revisit] caller`; the citizen hears `revisit/intro` and the
//! satisfaction survey, played by the same IVR survey as after a seat's call (a key barges
//! in, asked twice, 5 s to answer). Every call is a `revisit` record; a rating is also a
//! `survey` record naming the case as its matter and the case's unit, so reports fold it into
//! the unit's score next to the in-call survey.

use super::trunk::Purpose;
use super::*;
use crate::ivr::dialplan::Next;
use crate::ivr::engine::{Action, Input, Ivr};
use crate::metrics::queue_log::mask_number;
use crate::metrics::record::Revisit;
use crate::revisit::{Book, Closed, NewCase, State};
use std::collections::BTreeMap;
use tracing::warn;

/// Revisit calls up at once, at most.
const MAX_CALLS: usize = 8;

#[derive(Default)]
pub(super) struct Revisits {
    book: Book,
    calls: HashMap<u64, Call>,
}

/// A revisit call in progress.
struct Call {
    case: String,
    trunk: TrunkId,
    /// The survey, once the citizen answered.
    ivr: Option<Ivr>,
    epoch: u32,
    intro_played: bool,
    rating: Option<u8>,
}

/// A case as `GET /api/revisits/<case>` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevisitView {
    pub case: String,
    pub state: State,
    pub attempts: u32,
    pub rating: Option<u8>,
    pub unit: String,
    pub due: chrono::NaiveDate,
    /// Masked.
    pub number: String,
}

/// Why a batch of cases was refused (nothing of it is stored).
#[derive(Debug, thiserror::Error)]
pub enum RevisitError {
    #[error("bad cases: {}", .0.join("; "))]
    BadCases(Vec<String>),
    #[error("revisit calls are off: no [revisit] trunk is configured")]
    Off,
}

impl<M: MediaIo> Core<M> {
    /// A batch of cases from the API: every one accepted, or none (with each bad case's
    /// reason).
    pub fn accept_revisits(
        &mut self,
        now: Now,
        batch: Vec<NewCase>,
    ) -> Result<usize, RevisitError> {
        if self.env.cfg.revisit.trunk.is_empty() {
            return Err(RevisitError::Off);
        }
        self.revisits
            .book
            .check(&batch, &self.env.cfg.units())
            .map_err(RevisitError::BadCases)?;
        let n = batch.len();
        for c in batch {
            let event = RecordEvent::Revisit(Revisit::Accepted {
                case: c.case.clone(),
                number: c.number.clone(),
                unit: c.unit.clone(),
                due: c.due,
            });
            self.record(now, event, None, None, None);
            self.revisits.book.add(c);
        }
        info!(cases = n, "revisit cases accepted");
        self.timers.set(Timer::Revisits, Some(now.mono));
        Ok(n)
    }

    /// A case's state for the API.
    pub fn revisit_view(&self, case: &str) -> Option<RevisitView> {
        let c = self.revisits.book.get(case)?;
        Some(RevisitView {
            case: case.to_string(),
            state: c.state,
            attempts: c.attempts,
            rating: c.rating,
            unit: c.unit.clone(),
            due: c.due,
            number: mask_number(&c.number),
        })
    }

    /// Cases from the store (every `revisit` record, oldest first): the book as it was.
    pub fn preload_revisits(&mut self, records: &[Record]) {
        let mut cases: BTreeMap<String, (NewCase, u32, State, Option<u8>)> = BTreeMap::new();
        for r in records {
            match &r.event {
                RecordEvent::Revisit(Revisit::Accepted {
                    case,
                    number,
                    unit,
                    due,
                }) => {
                    let c = NewCase {
                        case: case.clone(),
                        number: number.clone(),
                        unit: unit.clone(),
                        due: *due,
                    };
                    cases.insert(case.clone(), (c, 0, State::Pending, None));
                }
                RecordEvent::Revisit(Revisit::Attempt { case, attempt, .. }) => {
                    if let Some(c) = cases.get_mut(case) {
                        c.1 = *attempt;
                    }
                }
                RecordEvent::Revisit(Revisit::Closed {
                    case,
                    state,
                    rating,
                    ..
                }) => {
                    if let Some(c) = cases.get_mut(case) {
                        c.2 = if state == "rated" {
                            State::Rated
                        } else {
                            State::Unreached
                        };
                        c.3 = *rating;
                    }
                }
                _ => {}
            }
        }
        let pending = cases.values().filter(|c| c.2 == State::Pending).count();
        for (_, (c, attempts, state, rating)) in cases {
            self.revisits.book.restore(c, attempts, state, rating);
        }
        if pending > 0 {
            info!(pending, "revisit cases restored from the store");
        }
    }

    /// Places the calls that are due and arms the next look.
    pub(super) fn revisit_tick(&mut self, now: Now) {
        if self.shutting_down || self.env.cfg.revisit.trunk.is_empty() {
            return;
        }
        let hours = self.env.cfg.revisit.hours;
        let room = MAX_CALLS.saturating_sub(self.revisits.calls.len());
        for case in self
            .revisits
            .book
            .due(now.mono, now.shanghai(), &hours, room)
        {
            self.revisit_dial(now, &case);
        }
        let next = self
            .revisits
            .book
            .next_look(now.mono, now.shanghai(), &hours);
        self.timers.set(Timer::Revisits, next);
    }

    fn revisit_dial(&mut self, now: Now, case: &str) {
        let Some(c) = self.revisits.book.get(case) else {
            return;
        };
        let number = c.number.clone();
        let cfg = &self.env.cfg.revisit;
        let (trunk, caller, ring) = (
            cfg.trunk.clone(),
            cfg.caller.clone(),
            Duration::from_secs(cfg.ring_timeout_s),
        );
        self.revisits.book.calling(case);
        let attempt = self.revisits.book.get(case).map_or(0, |c| c.attempts);
        let id = self.legs.next_id();
        info!(case, attempt, number = %mask_number(&number), "revisit call");
        match self.dial(
            now,
            &trunk,
            &number,
            &caller,
            Purpose::Revisit(id),
            ring,
            (crate::media::Codec::Pcmu, 0),
            &[("X-Hotline-Revisit", case)],
        ) {
            Ok(t) => {
                let call_id = self
                    .legs
                    .trunks
                    .get(&t)
                    .map(|x| x.session.dialog.call_id.clone())
                    .unwrap_or_default();
                info!(case, call_id = %call_id, "revisit call placed");
                self.revisits.calls.insert(
                    id,
                    Call {
                        case: case.to_string(),
                        trunk: t,
                        ivr: None,
                        epoch: 0,
                        intro_played: false,
                        rating: None,
                    },
                );
            }
            Err(e) => {
                warn!(case, error = %e, "revisit call not placed");
                self.revisit_closed(now, case, false, None);
            }
        }
    }

    /// The citizen answered (`Ok`) or not.
    pub(super) fn revisit_outcome(
        &mut self,
        now: Now,
        r: u64,
        t: TrunkId,
        outcome: Result<(), u16>,
    ) {
        match outcome {
            Ok(()) => {
                let Some(call) = self.revisits.calls.get_mut(&r) else {
                    return self.end_trunk(now, t);
                };
                let mut ivr = Ivr::new(self.env.plan.clone(), vec![], Next::Hangup);
                ivr.handle(Input::Bridged);
                call.ivr = Some(ivr);
                if let Some(stream) = self.legs.trunks.get(&t).map(|x| x.stream) {
                    self.media.engine.set_sending(stream, true);
                }
                self.revisit_input(now, r, Input::Survey);
            }
            Err(code) => {
                let Some(call) = self.revisits.calls.remove(&r) else {
                    return;
                };
                info!(case = %call.case, code, "revisit call not answered");
                self.revisit_closed(now, &call.case, false, None);
            }
        }
    }

    /// Input to a revisit call's survey, and its actions carried out.
    pub(super) fn revisit_input(&mut self, now: Now, r: u64, input: Input) {
        let Some(call) = self.revisits.calls.get_mut(&r) else {
            return;
        };
        let Some(ivr) = call.ivr.as_mut() else {
            return;
        };
        let actions = ivr.handle(input);
        let t = call.trunk;
        let stream = self.legs.trunks.get(&t).map(|x| x.stream);
        for action in actions {
            match action {
                Action::Play {
                    mut prompts,
                    loop_last,
                } => {
                    if let Some(call) = self.revisits.calls.get_mut(&r)
                        && !std::mem::replace(&mut call.intro_played, true)
                        && let Some(intro) = self.media.engine.prompts().id("revisit/intro")
                    {
                        prompts.insert(0, intro);
                    }
                    if let Some(s) = stream {
                        self.media.engine.play(s, &prompts, loop_last);
                    }
                }
                Action::Timer { after, epoch, .. } => {
                    if let Some(call) = self.revisits.calls.get_mut(&r) {
                        call.epoch = epoch;
                    }
                    self.timers
                        .set(Timer::RevisitIvr(r), Some(now.mono + after));
                }
                Action::SurveyResult(rating) => {
                    if let Some(call) = self.revisits.calls.get_mut(&r) {
                        call.rating = rating;
                    }
                }
                Action::Hangup => {
                    self.end_trunk(now, t);
                    self.revisit_call_over(now, r, t);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Revisit calls in progress.
    pub(super) fn revisit_calls(&self) -> usize {
        self.revisits.calls.len()
    }

    /// Shutdown: revisit calls are hung up (their cases are tried again after the restart).
    pub(super) fn hang_up_revisits(&mut self, now: Now) {
        let calls: Vec<(u64, TrunkId)> = self
            .revisits
            .calls
            .iter()
            .map(|(&r, c)| (r, c.trunk))
            .collect();
        for (r, t) in calls {
            self.end_trunk(now, t);
            self.revisit_call_over(now, r, t);
        }
    }

    pub(super) fn revisit_ivr_timer(&mut self, now: Now, r: u64) {
        let Some(epoch) = self.revisits.calls.get(&r).map(|c| c.epoch) else {
            return;
        };
        self.revisit_input(
            now,
            r,
            Input::Timer(crate::ivr::engine::TimerKind::MenuTimeout, epoch),
        );
    }

    /// The revisit call is over (we or the citizen hung up): its outcome is stored. Once.
    pub(super) fn revisit_call_over(&mut self, now: Now, r: u64, _t: TrunkId) {
        self.timers.cancel(&Timer::RevisitIvr(r));
        let Some(call) = self.revisits.calls.remove(&r) else {
            return;
        };
        self.revisit_closed(now, &call.case, true, call.rating);
    }

    /// One call of `case` is over (`answered`, with `rating` or none): records, and the
    /// case's next step.
    fn revisit_closed(&mut self, now: Now, case: &str, answered: bool, rating: Option<u8>) {
        let cfg = self.env.cfg.revisit.clone();
        let closed = self.revisits.book.call_over(case, rating, now.mono, &cfg);
        let Some(c) = self.revisits.book.get(case) else {
            return;
        };
        let (unit, attempts) = (c.unit.clone(), c.attempts);
        let event = RecordEvent::Revisit(Revisit::Attempt {
            case: case.to_string(),
            attempt: attempts,
            answered,
            rating,
        });
        self.record(now, event, None, None, None);
        let state = match closed {
            Closed::Again => {
                let next = self
                    .revisits
                    .book
                    .next_look(now.mono, now.shanghai(), &cfg.hours);
                let at = [next, self.timers.get(&Timer::Revisits)]
                    .into_iter()
                    .flatten()
                    .min();
                self.timers.set(Timer::Revisits, at);
                return;
            }
            Closed::Rated(r) => {
                let label = match r {
                    1 => "satisfied",
                    2 => "basically_satisfied",
                    _ => "dissatisfied",
                };
                info!(case, rating = r, unit = %unit, "revisit rated");
                let event = RecordEvent::Survey {
                    rating: Some(r),
                    label: label.to_string(),
                    matter: Some(case.to_string()),
                    unit: Some(unit.clone()),
                };
                self.record(now, event, None, None, None);
                "rated"
            }
            Closed::Unreached => {
                info!(case, attempts, "revisit case unreached");
                "unreached"
            }
        };
        let event = RecordEvent::Revisit(Revisit::Closed {
            case: case.to_string(),
            unit,
            state: state.to_string(),
            attempts,
            rating,
        });
        self.record(now, event, None, None, None);
    }
}
