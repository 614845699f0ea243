//! The per-call IVR: a state machine that takes inputs (start, playback finished, a DTMF
//! digit, a timer) and returns actions (play, set a timer, hang up). It keeps no clock and
//! does no I/O; timers carry a generation so a timer armed in an earlier state is ignored.

use super::dialplan::{Dialplan, FlowId, Menu, Next, Overflow, QueueId, Retained, Step};
use crate::media::prompts::PromptId;
use std::sync::Arc;
use std::time::Duration;

/// A flow that jumps around this many times without playing anything is broken (a `goto`
/// cycle); the call is ended instead of spinning.
const MAX_JUMPS: u32 = 32;
/// Overflows from queue to queue a caller may take; a configuration that sends callers round
/// in a circle (A → B → A, nobody logged in anywhere) ends in the sorry prompt, not a loop.
const MAX_OVERFLOWS: u32 = 4;
/// How long the survey waits for a key after its question, and how often it asks again.
const SURVEY_WAIT: Duration = Duration::from_secs(5);
const SURVEY_RETRIES: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    MenuTimeout,
    HoldPrompt,
    MaxWait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Start,
    PlaybackDone,
    Digit(char),
    Timer(TimerKind, u32),
    /// A seat answered: the caller is with a human now and the IVR steps aside.
    Bridged,
    /// Nobody who serves the caller's queue is logged in.
    NoAgents,
    /// The seat hung up a bridged call of a queue with a survey: ask the caller to rate it.
    Survey,
    /// A retained-seat line's own seats did not answer: 12345's agents take the call (7×24).
    RetainedFailed,
    /// The seat's connection was lost mid-call: the caller waits again in this queue, ahead
    /// of everyone.
    SeatLost(QueueId),
    /// Call control booked the callback asked for ([`Action::Callback`]): the caller hears
    /// that its place is kept, and is hung up.
    CallbackBooked,
    /// The callback could not be booked (no usable number, no trunk): the flow goes on.
    CallbackRefused,
}

/// Why a caller left a queue without a seat (for the queue's figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The queue's maximum wait passed.
    Timeout,
    /// No seat of the queue was logged in.
    NoAgents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Play {
        prompts: Vec<PromptId>,
        loop_last: bool,
    },
    Timer {
        after: Duration,
        kind: TimerKind,
        epoch: u32,
    },
    /// The caller waits in this queue for a seat (the ACD offers the call).
    Enqueue {
        queue: QueueId,
        priority: u8,
    },
    /// Play the queue's hold prompt with the caller's position and expected wait, then hold
    /// music (call control knows the position).
    Announce(QueueId),
    /// The caller no longer waits.
    Dequeue(ExitReason),
    /// The caller's rating (1 满意, 2 基本满意, 3 不满意), or `None` when no valid key came.
    SurveyResult(Option<u8>),
    /// Pass the caller to a retained-seat line's own seats over their trunk; on failure call
    /// control answers with [`Input::RetainedFailed`].
    Retained(Retained),
    /// The caller asks for a callback keeping its place in this queue (`None`: its last one);
    /// call control answers [`Input::CallbackBooked`] or [`Input::CallbackRefused`].
    Callback(Option<QueueId>),
    /// The caller asked for confidentiality (保密).
    Confidential,
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Intro,
    Playing,
    /// The menu prompt (or an error prompt before it) plays; a digit barges in.
    MenuPrompt {
        attempt: u32,
    },
    MenuWait {
        attempt: u32,
    },
    Queued(QueueId),
    /// Being passed to a retained-seat line's own seats.
    Handing(Retained),
    /// A flow's callback step waits for call control's answer.
    Booking,
    /// A final prompt plays, then the call is hung up.
    Closing,
    /// With a seat.
    Bridged,
    /// Rating the call: the question plays or a key is awaited.
    Survey {
        attempt: u32,
    },
    Ended,
}

pub struct Ivr {
    plan: Arc<Dialplan>,
    first: Vec<PromptId>,
    next: Next,
    flow: Option<FlowId>,
    step: usize,
    state: State,
    epoch: u32,
    /// Queue priority, kept across overflows.
    priority: u8,
    overflows: u32,
    /// The digits the caller pressed, in order, for the call record.
    pub digits: String,
}

impl Ivr {
    pub fn new(plan: Arc<Dialplan>, first: Vec<PromptId>, next: Next) -> Self {
        Ivr {
            plan,
            first,
            next,
            flow: None,
            step: 0,
            state: State::Intro,
            epoch: 0,
            priority: 0,
            overflows: 0,
            digits: String::new(),
        }
    }

    /// Name of what the call is doing, for logs and status.
    /// Raises the caller's queue priority (e.g. a configured caller number); never lowers it.
    pub fn set_priority(&mut self, p: u8) {
        self.priority = self.priority.max(p);
    }

    pub fn phase(&self) -> &'static str {
        match self.state {
            State::Intro => "intro",
            State::Playing => "playing",
            State::MenuPrompt { .. } | State::MenuWait { .. } => "menu",
            State::Queued(_) => "queued",
            State::Handing(_) => "retained",
            State::Booking => "callback",
            State::Closing => "closing",
            State::Bridged => "bridged",
            State::Survey { .. } => "survey",
            State::Ended => "ended",
        }
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match (input, self.state) {
            (Input::Survey, State::Bridged) => match self.plan.survey {
                Some(q) => {
                    self.epoch += 1;
                    self.state = State::Survey { attempt: 0 };
                    out.push(Action::Play {
                        prompts: vec![q],
                        loop_last: false,
                    });
                }
                None => self.hangup(&mut out),
            },
            (Input::PlaybackDone, State::Survey { .. }) => {
                self.epoch += 1;
                out.push(Action::Timer {
                    after: SURVEY_WAIT,
                    kind: TimerKind::MenuTimeout,
                    epoch: self.epoch,
                });
            }
            (Input::Digit(d), State::Survey { attempt }) => {
                self.digits.push(d);
                match d {
                    '1' | '2' | '3' => {
                        out.push(Action::SurveyResult(d.to_digit(10).map(|n| n as u8)));
                        self.close_with_or_hangup(self.plan.survey_thanks, &mut out);
                    }
                    _ => self.survey_retry(attempt, &mut out),
                }
            }
            (Input::Timer(TimerKind::MenuTimeout, epoch), State::Survey { attempt })
                if epoch == self.epoch =>
            {
                self.survey_retry(attempt, &mut out)
            }
            (Input::SeatLost(q), State::Bridged) => {
                self.priority = u8::MAX;
                self.enter_queue(q, &mut out);
            }
            (_, State::Ended | State::Bridged | State::Survey { .. }) => {}
            (Input::Bridged, _) => {
                self.epoch += 1;
                self.state = State::Bridged;
            }
            (Input::Start, State::Intro) => {
                if self.first.is_empty() {
                    self.go_next(&mut out);
                } else {
                    out.push(Action::Play {
                        prompts: self.first.clone(),
                        loop_last: false,
                    });
                }
            }
            (Input::PlaybackDone, State::Intro) => self.go_next(&mut out),
            (Input::PlaybackDone, State::Playing) => {
                self.step += 1;
                self.run(&mut out);
            }
            (Input::PlaybackDone, State::MenuPrompt { attempt }) => {
                if let Some(menu) = self.menu() {
                    let after = menu.timeout;
                    self.state = State::MenuWait { attempt };
                    self.epoch += 1;
                    out.push(Action::Timer {
                        after,
                        kind: TimerKind::MenuTimeout,
                        epoch: self.epoch,
                    });
                }
            }
            (Input::Digit(d), State::MenuPrompt { attempt } | State::MenuWait { attempt })
                if Some(d) == self.plan.confidential_key =>
            {
                // Confidentiality (保密) in any menu: confirmed, then the same menu again.
                self.digits.push(d);
                out.push(Action::Confidential);
                let mut prompts: Vec<PromptId> =
                    self.plan.confidential_prompt.into_iter().collect();
                prompts.extend(self.menu().map(|m| m.prompt.clone()).unwrap_or_default());
                self.epoch += 1;
                self.state = State::MenuPrompt { attempt };
                out.push(Action::Play {
                    prompts,
                    loop_last: false,
                });
            }
            (Input::Digit(d), State::Queued(q))
                if self.plan.queues[q.0].callback_key == Some(d) =>
            {
                self.digits.push(d);
                out.push(Action::Callback(Some(q)));
            }
            (Input::CallbackBooked, State::Queued(_) | State::Booking) => {
                self.close_with_or_hangup(self.plan.callback_requested, &mut out)
            }
            (Input::CallbackRefused, State::Booking) => {
                self.step += 1;
                self.run(&mut out);
            }
            (Input::Digit(d), State::MenuPrompt { attempt } | State::MenuWait { attempt }) => {
                self.digits.push(d);
                let Some(menu) = self.menu() else { return out };
                match menu.options.get(&d).copied() {
                    Some(flow) => self.enter_flow(flow, &mut out),
                    None => {
                        let p = menu.invalid_prompt;
                        self.menu_retry(attempt, p, &mut out)
                    }
                }
            }
            (Input::Digit(d), _) => self.digits.push(d),
            (Input::Timer(TimerKind::MenuTimeout, epoch), State::MenuWait { attempt })
                if epoch == self.epoch =>
            {
                let p = self.menu().and_then(|m| m.timeout_prompt);
                self.menu_retry(attempt, p, &mut out);
            }
            (Input::Timer(TimerKind::HoldPrompt, epoch), State::Queued(q))
                if epoch == self.epoch =>
            {
                let queue = &self.plan.queues[q.0];
                out.push(Action::Announce(q));
                out.push(Action::Timer {
                    after: queue.hold_prompt_every,
                    kind: TimerKind::HoldPrompt,
                    epoch: self.epoch,
                });
            }
            (Input::Timer(TimerKind::MaxWait, epoch), State::Queued(q)) if epoch == self.epoch => {
                out.push(Action::Dequeue(ExitReason::Timeout));
                let target = self.plan.queues[q.0].on_timeout;
                self.overflow(q, target, &mut out);
            }
            (Input::NoAgents, State::Queued(q)) => {
                if let Some(target) = self.plan.queues[q.0].when_no_agents {
                    out.push(Action::Dequeue(ExitReason::NoAgents));
                    self.overflow(q, target, &mut out);
                }
            }
            (Input::RetainedFailed, State::Handing(r)) => self.enter_queue(r.fallback, &mut out),
            (Input::PlaybackDone, State::Closing) => {
                self.state = State::Ended;
                out.push(Action::Hangup);
            }
            _ => {}
        }
        out
    }

    fn menu(&self) -> Option<&Menu> {
        match self.plan.flows.get(self.flow?.0)?.steps.get(self.step)? {
            Step::Menu(m) => Some(m),
            _ => None,
        }
    }

    fn menu_retry(&mut self, attempt: u32, error_prompt: Option<PromptId>, out: &mut Vec<Action>) {
        let Some(menu) = self.menu() else { return };
        if attempt >= menu.retries {
            match menu.on_fail {
                Some(flow) => self.enter_flow(flow, out),
                None => self.hangup(out),
            }
            return;
        }
        let mut prompts: Vec<PromptId> = error_prompt.into_iter().collect();
        prompts.extend_from_slice(&menu.prompt);
        self.epoch += 1;
        self.state = State::MenuPrompt {
            attempt: attempt + 1,
        };
        out.push(Action::Play {
            prompts,
            loop_last: false,
        });
    }

    fn go_next(&mut self, out: &mut Vec<Action>) {
        match self.next {
            Next::Flow(f) => self.enter_flow(f, out),
            Next::Queue(q) => self.enter_queue(q, out),
            Next::Retained(r) => {
                self.epoch += 1;
                self.state = State::Handing(r);
                out.push(Action::Retained(r));
            }
            Next::Hangup => self.hangup(out),
        }
    }

    fn enter_flow(&mut self, flow: FlowId, out: &mut Vec<Action>) {
        self.flow = Some(flow);
        self.step = 0;
        self.run(out);
    }

    fn enter_queue(&mut self, q: QueueId, out: &mut Vec<Action>) {
        let queue = &self.plan.queues[q.0];
        self.epoch += 1;
        self.state = State::Queued(q);
        // Enqueued first: the announcement tells the caller's position in the line.
        out.push(Action::Enqueue {
            queue: q,
            priority: self.priority,
        });
        out.push(Action::Announce(q));
        out.push(Action::Timer {
            after: queue.hold_prompt_every,
            kind: TimerKind::HoldPrompt,
            epoch: self.epoch,
        });
        out.push(Action::Timer {
            after: queue.max_wait,
            kind: TimerKind::MaxWait,
            epoch: self.epoch,
        });
    }

    /// The wait in queue `from` is over: on to `target`, never silence.
    fn overflow(&mut self, from: QueueId, target: Overflow, out: &mut Vec<Action>) {
        let sorry = self.plan.queues[from.0].sorry;
        self.overflows += 1;
        match target {
            Overflow::Queue(q) if self.overflows <= MAX_OVERFLOWS => self.enter_queue(q, out),
            Overflow::Flow(f) if self.overflows <= MAX_OVERFLOWS => self.enter_flow(f, out),
            _ => self.close_with(sorry, out),
        }
    }

    /// Runs steps from the current one until one waits for something.
    fn run(&mut self, out: &mut Vec<Action>) {
        let plan = self.plan.clone();
        for _ in 0..MAX_JUMPS {
            let Some(flow) = self.flow.and_then(|f| plan.flows.get(f.0)) else {
                return self.hangup(out);
            };
            let Some(step) = flow.steps.get(self.step) else {
                return self.hangup(out);
            };
            self.epoch += 1;
            match step {
                Step::Play(ps) => {
                    self.state = State::Playing;
                    out.push(Action::Play {
                        prompts: ps.clone(),
                        loop_last: false,
                    });
                    return;
                }
                Step::Menu(m) => {
                    self.state = State::MenuPrompt { attempt: 0 };
                    out.push(Action::Play {
                        prompts: m.prompt.clone(),
                        loop_last: false,
                    });
                    return;
                }
                Step::Queue { queue, priority } => {
                    self.priority = self.priority.max(*priority);
                    return self.enter_queue(*queue, out);
                }
                Step::Transfer(_) => {
                    // Transfer targets come with the transfer layer; until then never silence.
                    return match plan.sorry {
                        Some(sorry) => self.close_with(sorry, out),
                        None => self.hangup(out),
                    };
                }
                Step::Goto(f) => {
                    self.flow = Some(*f);
                    self.step = 0;
                }
                Step::Hangup => return self.hangup(out),
                Step::Callback => {
                    self.state = State::Booking;
                    out.push(Action::Callback(None));
                    return;
                }
            }
        }
        tracing::warn!("dialplan loops through goto steps without playing anything; hanging up");
        self.hangup(out);
    }

    /// A wrong key or none: the question once more, then goodbye without a rating.
    fn survey_retry(&mut self, attempt: u32, out: &mut Vec<Action>) {
        match self.plan.survey {
            Some(q) if attempt < SURVEY_RETRIES => {
                self.epoch += 1;
                self.state = State::Survey {
                    attempt: attempt + 1,
                };
                out.push(Action::Play {
                    prompts: vec![q],
                    loop_last: false,
                });
            }
            _ => {
                out.push(Action::SurveyResult(None));
                self.close_with_or_hangup(self.plan.goodbye, out);
            }
        }
    }

    fn close_with_or_hangup(&mut self, prompt: Option<PromptId>, out: &mut Vec<Action>) {
        match prompt {
            Some(p) => self.close_with(p, out),
            None => self.hangup(out),
        }
    }

    fn close_with(&mut self, prompt: PromptId, out: &mut Vec<Action>) {
        self.epoch += 1;
        self.state = State::Closing;
        out.push(Action::Play {
            prompts: vec![prompt],
            loop_last: false,
        });
    }

    fn hangup(&mut self, out: &mut Vec<Action>) {
        self.epoch += 1;
        self.state = State::Ended;
        out.push(Action::Hangup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IVR already with a seat, in a plan that has the survey prompts.
    fn bridged() -> Ivr {
        let mut plan = Dialplan::default();
        (plan.survey, plan.survey_thanks, plan.goodbye) =
            (Some(PromptId(1)), Some(PromptId(2)), Some(PromptId(3)));
        let mut ivr = Ivr::new(Arc::new(plan), vec![], Next::Hangup);
        ivr.handle(Input::Bridged);
        ivr
    }

    fn timer(ivr: &Ivr) -> Input {
        Input::Timer(TimerKind::MenuTimeout, ivr.epoch)
    }

    /// A plan with one queue whose callback key is 9, a menu (1: that queue) in flow 0 with
    /// `*` for confidentiality, and flow 1 = [callback, hangup].
    fn plan_with_keys() -> Arc<Dialplan> {
        use super::super::dialplan::{Flow, Queue};
        let mut plan = Dialplan::default();
        plan.confidential_key = Some('*');
        plan.confidential_prompt = Some(PromptId(7));
        plan.callback_requested = Some(PromptId(8));
        plan.queues.push(Queue {
            name: "general".into(),
            strategy: crate::acd::queue::Strategy::LongestIdle,
            max_wait: Duration::from_secs(120),
            ring_timeout: Duration::from_secs(15),
            wrap_up: Duration::ZERO,
            widen_every: Duration::ZERO,
            max_overtaken: Duration::from_secs(60),
            announce_position: true,
            announce_wait: true,
            on_timeout: Overflow::Flow(FlowId(1)),
            when_no_agents: None,
            short_abandon: Duration::from_secs(5),
            record: false,
            survey: false,
            hold_music: PromptId(4),
            hold_prompt: PromptId(5),
            hold_prompt_every: Duration::from_secs(30),
            sorry: PromptId(6),
            callback_key: Some('9'),
            callback_prompt: None,
        });
        plan.flows.push(Flow {
            name: "main".into(),
            steps: vec![Step::Menu(Menu {
                prompt: vec![PromptId(1)],
                timeout: Duration::from_secs(5),
                retries: 2,
                options: [('1', FlowId(2))].into(),
                invalid_prompt: None,
                timeout_prompt: None,
                on_fail: None,
            })],
        });
        plan.flows.push(Flow {
            name: "callback".into(),
            steps: vec![Step::Callback, Step::Play(vec![PromptId(9)]), Step::Hangup],
        });
        plan.flows.push(Flow {
            name: "queue".into(),
            steps: vec![Step::Queue {
                queue: QueueId(0),
                priority: 0,
            }],
        });
        Arc::new(plan)
    }

    #[test]
    fn the_confidential_key_flags_the_call_and_the_callback_key_asks_for_a_callback() {
        let mut ivr = Ivr::new(plan_with_keys(), vec![], Next::Flow(FlowId(0)));
        ivr.handle(Input::Start);
        // `*` in the menu: flagged, confirmed, the same menu again.
        assert_eq!(
            ivr.handle(Input::Digit('*')),
            [
                Action::Confidential,
                Action::Play {
                    prompts: vec![PromptId(7), PromptId(1)],
                    loop_last: false
                }
            ]
        );
        let queued = ivr.handle(Input::Digit('1'));
        assert!(matches!(queued[0], Action::Enqueue { .. }), "{queued:?}");
        // 9 while waiting: a callback of this queue; booked: the confirmation, then hang up.
        assert_eq!(
            ivr.handle(Input::Digit('9')),
            [Action::Callback(Some(QueueId(0)))]
        );
        assert_eq!(
            ivr.handle(Input::CallbackBooked),
            [Action::Play {
                prompts: vec![PromptId(8)],
                loop_last: false
            }]
        );
        assert_eq!(ivr.handle(Input::PlaybackDone), [Action::Hangup]);
        assert_eq!(ivr.digits, "*19");
    }

    #[test]
    fn a_callback_step_that_cannot_be_booked_goes_on_with_the_flow() {
        let mut ivr = Ivr::new(plan_with_keys(), vec![], Next::Flow(FlowId(1)));
        assert_eq!(ivr.handle(Input::Start), [Action::Callback(None)]);
        assert_eq!(
            ivr.handle(Input::CallbackRefused),
            [Action::Play {
                prompts: vec![PromptId(9)],
                loop_last: false
            }]
        );
    }

    #[test]
    fn survey_takes_a_rating_or_ends_without_one() {
        let mut ivr = bridged();
        assert_eq!(
            ivr.handle(Input::Survey),
            [Action::Play {
                prompts: vec![PromptId(1)],
                loop_last: false
            }]
        );
        // A key during the question: rated, thanks, then hang up.
        assert_eq!(
            ivr.handle(Input::Digit('2')),
            [
                Action::SurveyResult(Some(2)),
                Action::Play {
                    prompts: vec![PromptId(2)],
                    loop_last: false
                }
            ]
        );
        assert_eq!(ivr.handle(Input::PlaybackDone), [Action::Hangup]);

        // No key: asked once more, then goodbye without a rating; a wrong key counts as none.
        let mut ivr = bridged();
        ivr.handle(Input::Survey);
        let wait = ivr.handle(Input::PlaybackDone);
        assert!(matches!(
            wait[..],
            [Action::Timer {
                kind: TimerKind::MenuTimeout,
                ..
            }]
        ));
        assert_eq!(
            ivr.handle(timer(&ivr)),
            [Action::Play {
                prompts: vec![PromptId(1)],
                loop_last: false
            }]
        );
        assert_eq!(
            ivr.handle(Input::Digit('7')),
            [
                Action::SurveyResult(None),
                Action::Play {
                    prompts: vec![PromptId(3)],
                    loop_last: false
                }
            ]
        );
        assert_eq!(ivr.handle(Input::PlaybackDone), [Action::Hangup]);
        assert_eq!(ivr.digits, "7");
    }
}
