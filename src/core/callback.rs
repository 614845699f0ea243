//! Callbacks that keep the caller's place (回拨): call control's side of
//! [`crate::acd::callback`]. A request stands in its queue's line under a key of its own, with
//! the caller's original arrival and priority; the ACD offers it like a caller. The seat rings
//! first, shown a callback (From `"回拨 <number> 等候<N>秒"`, `X-Hotline-Callback`); once the
//! agent answers, the citizen is called over `[callback] trunk` presenting `[callback] caller`,
//! hears `callback/connected`, and is bridged with the agent.

use super::seat_leg::LegState;
use super::trunk::Purpose;
use super::*;
use crate::acd::callback::{AfterMiss, Request, State};
use crate::ivr::dialplan::Next;
use crate::ivr::engine::Input;
use crate::ivr::engine::{Action, Ivr};
use crate::metrics::queue_log::mask_number;
use crate::metrics::record::{Callback, CallbackOutcome, EndedBy, QueueExit};
use std::collections::BTreeMap;
use tracing::warn;

/// A called-back citizen rating the call after the agent hung up (by trunk leg).
pub(super) struct Rating {
    ivr: Ivr,
    /// The call that asked for the callback: the rating is recorded with it.
    call_id: String,
    seat: Option<usize>,
    queue: QueueId,
    epoch: u32,
    rated: bool,
}

/// What a seat's phone is shown about what it is offered.
pub(super) struct Presented {
    pub(super) span: tracing::Span,
    pub(super) codec: (crate::media::Codec, u8),
    /// From's display name and user (`anonymous` for a confidential caller).
    pub(super) display: String,
    pub(super) user: String,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Presented {
    /// The From of the seat's INVITE.
    pub(super) fn from(&self, host: &str) -> String {
        if self.user == "anonymous" {
            // RFC 3323 §4.1.1.3: an anonymous From.
            "\"anonymous\" <sip:anonymous@anonymous.invalid>".to_string()
        } else {
            format!("\"{}\" <sip:{}@{host}>", self.display, self.user)
        }
    }
}

impl<M: MediaIo> Core<M> {
    /// What the seat is shown for what waits under `k`: a caller or a callback.
    pub(super) fn presented(&self, now: Now, k: CallerId) -> Option<Presented> {
        if let Some(c) = self.legs.callers.get(&k) {
            return Some(self.caller_presented(c));
        }
        let r = self.callbacks.get(&k.0)?;
        let number = presentable(&r.number).to_string();
        let waited = now.since(r.since).as_secs();
        let span =
            tracing::info_span!("callback", call_id = %r.call_id, number = %mask_number(&r.number));
        Some(Presented {
            span,
            codec: (crate::media::Codec::Pcmu, 0),
            display: format!("回拨 {number} 等候{waited}秒"),
            user: number.clone(),
            headers: vec![
                (
                    "X-Hotline-Callback",
                    format!("{number};waited={waited};attempt={}", r.attempts + 1),
                ),
                ("X-Hotline-Dialled", "12345".into()),
            ],
        })
    }

    /// The Call-ID the records of what waits under `k` name (a callback: its caller's call).
    pub(super) fn call_id_of(&self, k: CallerId) -> Option<String> {
        self.legs
            .callers
            .get(&k)
            .map(|c| c.call_id.clone())
            .or_else(|| self.callbacks.get(&k.0).map(|r| r.call_id.clone()))
    }

    /// The caller asks for a callback keeping its place in `queue` (its last queue when
    /// `None`). Booked: the caller leaves the line (not an abandon) and the request takes its
    /// place; the IVR is told either way.
    pub(super) fn request_callback(&mut self, now: Now, k: CallerId, queue: Option<QueueId>) {
        let Some(c) = self.legs.callers.get(&k) else {
            return;
        };
        let q = queue.or(c.last_queue);
        let trunk = &self.env.cfg.callback.trunk;
        let (Some(q), true, true) = (
            q,
            !trunk.is_empty(),
            crate::acd::callback::callable(&c.number),
        ) else {
            info!("no callback possible (no callback trunk, no queue or no number to call)");
            return self.ivr_input(now, k, Input::CallbackRefused);
        };
        let (number, call_id, since) = (
            c.number.clone(),
            c.call_id.clone(),
            c.queued_at.unwrap_or(now.mono),
        );
        let priority = self
            .acd
            .waiting(q)
            .iter()
            .find(|e| e.key == k.0)
            .map(|e| e.priority)
            .unwrap_or(0);
        self.dequeue(now, k, QueueExit::Callback);
        self.withdraw_offers(now, crate::acd::Waiting::Caller(k.0));
        let id = self.legs.next_id();
        let mut r = Request::new(number.clone(), call_id.clone(), q, priority, since);
        r.place(now.mono, now.shanghai(), &self.env.cfg.callback.hours);
        info!(number = %mask_number(&number), queue = %self.env.plan.queues[q.0].name, held = !matches!(r.state, State::InLine), "callback booked; the caller keeps its place");
        let event = RecordEvent::Callback(Callback {
            outcome: CallbackOutcome::Requested,
            number,
            attempts: 0,
            waited_s: Some(now.since(since).as_secs_f64()),
        });
        self.record(now, event, Some(&call_id), None, Some(q));
        let state = r.state;
        self.callbacks.insert(id, r);
        self.callback_enter(now, id, state);
        self.ivr_input(now, k, Input::CallbackBooked);
    }

    /// The request goes in line (at its original place) or waits for its timer.
    fn callback_enter(&mut self, now: Now, id: u64, state: State) {
        match state {
            State::InLine => {
                if let Some(r) = self.callbacks.get(&id) {
                    self.acd.enqueue(id, r.queue, r.priority, r.since);
                }
                self.dispatch(now);
            }
            State::Held { until } => self.timers.set(Timer::Callback(id), Some(until)),
            _ => {}
        }
    }

    /// A callback in line whose allowed hours have closed leaves the line until they open
    /// (true); its place comes back with it.
    pub(super) fn callback_held_for_hours(&mut self, now: Now, id: u64) -> bool {
        let hours = self.env.cfg.callback.hours;
        let shutting_down = self.shutting_down;
        let Some(r) = self.callbacks.get_mut(&id) else {
            return false;
        };
        if shutting_down {
            return true; // stays booked; the next start places it
        }
        if r.state != State::InLine || hours.contains(now.shanghai()) {
            return false;
        }
        r.place(now.mono, now.shanghai(), &hours);
        let (q, state) = (r.queue, r.state);
        info!(call_id = %r.call_id, "callback outside its allowed hours: held until they open");
        self.acd.dequeue(id, q);
        self.callback_enter(now, id, state);
        true
    }

    /// Callbacks still waiting when the daemon stopped (their `callback` records, oldest
    /// first) take their places again, their waits counted from the callers' arrivals.
    pub fn preload_callbacks(&mut self, now: Now, records: &[Record]) {
        let mut open: BTreeMap<String, (String, String, u32, f64)> = BTreeMap::new();
        for r in records {
            let (RecordEvent::Callback(c), Some(call_id), Some(queue)) =
                (&r.event, &r.call_id, &r.queue)
            else {
                continue;
            };
            match c.outcome {
                CallbackOutcome::Requested => {
                    // Seconds since the epoch of the caller's arrival in line.
                    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&r.at) else {
                        continue;
                    };
                    let arrival = at.timestamp_millis() as f64 / 1000.0 - c.waited_s.unwrap_or(0.0);
                    open.insert(
                        call_id.clone(),
                        (c.number.clone(), queue.clone(), 0, arrival),
                    );
                }
                CallbackOutcome::AttemptFailed => {
                    if let Some(o) = open.get_mut(call_id) {
                        o.2 = c.attempts;
                    }
                }
                CallbackOutcome::Answered | CallbackOutcome::Failed => {
                    open.remove(call_id);
                }
            }
        }
        let now_s = now.wall.timestamp_millis() as f64 / 1000.0;
        for (call_id, (number, queue, attempts, arrival)) in open {
            let Some(q) = self.env.plan.queues.iter().position(|x| x.name == queue) else {
                continue;
            };
            let waited =
                Duration::try_from_secs_f64((now_s - arrival).max(0.0)).unwrap_or_default();
            let since = now.mono.checked_sub(waited).unwrap_or(now.mono);
            let id = self.legs.next_id();
            let mut r = Request::new(number, call_id, QueueId(q), 0, since);
            r.attempts = attempts;
            r.place(now.mono, now.shanghai(), &self.env.cfg.callback.hours);
            let state = r.state;
            self.callbacks.insert(id, r);
            self.callback_enter(now, id, state);
        }
        if !self.callbacks.is_empty() {
            info!(
                callbacks = self.callbacks.len(),
                "callbacks restored from the store, their places kept"
            );
        }
    }

    /// Callback conversations (a seat on the line) and revisit calls in progress: the daemon
    /// drains them at shutdown like citizens' calls.
    pub(super) fn outreach_calls(&self) -> usize {
        self.callbacks
            .values()
            .filter(|r| r.seat_leg().is_some())
            .count()
            + self.callback_surveys.len()
            + self.revisit_calls()
    }

    /// The end of the shutdown grace: callback conversations and revisit calls are hung up
    /// (a callback whose citizen has not answered stays booked, restored at the next start).
    pub(super) fn hang_up_outreach(&mut self, now: Now) {
        let up: Vec<(u64, Option<u64>, Option<u64>)> = self
            .callbacks
            .iter()
            .filter(|(_, r)| r.seat_leg().is_some())
            .map(|(&id, r)| (id, r.seat_leg(), r.trunk()))
            .collect();
        for (id, l, t) in up {
            if let Some(t) = t {
                self.end_trunk(now, TrunkId(t));
            }
            self.callbacks.remove(&id);
            if let Some(l) = l {
                self.end_seat_leg(now, SeatLegId(l), EndedBy::Caller);
            }
        }
        let rating: Vec<u64> = self.callback_surveys.keys().copied().collect();
        for t in rating {
            self.callback_survey_over(now, TrunkId(t), Some("shutdown"));
            self.end_trunk(now, TrunkId(t));
        }
        self.hang_up_revisits(now);
    }

    /// A held request's time came: back in line if the allowed hours are open.
    pub(super) fn callback_timer(&mut self, now: Now, id: u64) {
        let hours = self.env.cfg.callback.hours;
        let Some(r) = self.callbacks.get_mut(&id) else {
            return;
        };
        if !matches!(r.state, State::Held { .. }) {
            return;
        }
        r.place(now.mono, now.shanghai(), &hours);
        let state = r.state;
        self.callback_enter(now, id, state);
    }

    /// The agent answered the callback's offer: the request leaves the line and the citizen
    /// is called; the agent hears that it is being called.
    pub(super) fn callback_seat_answered(&mut self, now: Now, id: u64, l: SeatLegId) {
        let Some(r) = self.callbacks.get_mut(&id) else {
            return;
        };
        r.seat_answered(l.0);
        let (q, number) = (r.queue, r.number.clone());
        self.acd.dequeue(id, q);
        if let Some(stream) = self.legs.seats.get(&l).map(|leg| leg.stream) {
            let prompts = self.media.engine.prompts();
            let mut play: Vec<_> = prompts.id("callback/dialling").into_iter().collect();
            play.extend(self.env.plan.queues.get(q.0).map(|q| q.hold_music));
            self.media.engine.set_sending(stream, true);
            self.media.engine.play(stream, &play, true);
        }
        let cfg = &self.env.cfg.callback;
        let (trunk, caller, ring) = (
            cfg.trunk.clone(),
            cfg.caller.clone(),
            Duration::from_secs(cfg.ring_timeout_s),
        );
        match self.dial(
            now,
            &trunk,
            &number,
            &caller,
            Purpose::Callback(id),
            ring,
            (crate::media::Codec::Pcmu, 0),
            &[("X-Hotline-Callback", "citizen")],
        ) {
            Ok(t) => {
                let trunk_call = self
                    .legs
                    .trunks
                    .get(&t)
                    .map(|x| x.session.dialog.call_id.clone())
                    .unwrap_or_default();
                if let Some(r) = self.callbacks.get_mut(&id) {
                    r.dialling(t.0);
                    let _g = tracing::info_span!("callback", call_id = %r.call_id).entered();
                    info!(citizen_call_id = %trunk_call, attempt = r.attempts, "calling the citizen back");
                }
            }
            Err(e) => {
                warn!(error = %e, "the callback's call to the citizen could not be placed");
                self.callback_missed(now, id, None);
            }
        }
    }

    /// What became of the call to the citizen.
    pub(super) fn callback_citizen_outcome(
        &mut self,
        now: Now,
        id: u64,
        t: TrunkId,
        outcome: Result<(), u16>,
    ) {
        // Only the request's current call counts: one the agent's hang-up cancelled (the
        // request is back in line) or one of a request that is over is not its outcome.
        let current = self
            .callbacks
            .get(&id)
            .is_some_and(|r| r.trunk() == Some(t.0));
        if !current {
            if outcome.is_ok() {
                self.end_trunk(now, t);
            }
            return;
        }
        match outcome {
            Ok(()) => {
                let Some(r) = self.callbacks.get_mut(&id) else {
                    return self.end_trunk(now, t);
                };
                r.citizen_answered();
                let (q, call_id, number, attempts, since) = (
                    r.queue,
                    r.call_id.clone(),
                    r.number.clone(),
                    r.attempts,
                    r.since,
                );
                info!(call_id = %call_id, attempts, "the citizen answered the callback");
                let event = RecordEvent::Callback(Callback {
                    outcome: CallbackOutcome::Answered,
                    number,
                    attempts,
                    waited_s: Some(now.since(since).as_secs_f64()),
                });
                let seat = r
                    .seat_leg()
                    .and_then(|l| self.legs.seats.get(&SeatLegId(l)))
                    .map(|l| l.seat);
                self.record(now, event, Some(&call_id), seat, Some(q));
                if let Some(stream) = self.legs.trunks.get(&t).map(|x| x.stream) {
                    let p = self.media.engine.prompts().id("callback/connected");
                    self.media.engine.set_sending(stream, true);
                    match p {
                        Some(p) => self.media.engine.play(stream, &[p], false),
                        None => self.callback_bridge(now, id),
                    }
                }
            }
            Err(code) => {
                info!(code, "the citizen did not answer the callback");
                self.callback_missed(now, id, Some(code));
            }
        }
    }

    /// The connect prompt is over: the citizen and the agent talk.
    fn callback_bridge(&mut self, _now: Now, id: u64) {
        let Some(r) = self.callbacks.get_mut(&id) else {
            return;
        };
        r.connected();
        let (Some(l), Some(t)) = (r.seat_leg(), r.trunk()) else {
            return;
        };
        let seat_stream = self.legs.seats.get(&SeatLegId(l)).map(|x| x.stream);
        let trunk_stream = self.legs.trunks.get(&TrunkId(t)).map(|x| x.stream);
        if let (Some(a), Some(b)) = (seat_stream, trunk_stream) {
            self.media.quiet(a);
            self.media.quiet(b);
            self.media.bridge(a, b);
            info!("callback: citizen and agent bridged");
        }
    }

    /// A prompt on a trunk call ended.
    pub(super) fn trunk_playback_done(&mut self, now: Now, t: TrunkId) {
        if self.callback_surveys.contains_key(&t.0) {
            return self.callback_survey_input(now, t, Input::PlaybackDone);
        }
        match self.legs.trunks.get(&t).map(|x| x.purpose) {
            Some(Purpose::Callback(id))
                if self
                    .callbacks
                    .get(&id)
                    .is_some_and(|r| matches!(r.state, State::Connecting { .. })) =>
            {
                self.callback_bridge(now, id)
            }
            Some(Purpose::Revisit(r)) => self.revisit_input(now, r, Input::PlaybackDone),
            _ => {}
        }
    }

    /// A key pressed on a trunk call (a revisit's rating, a called-back citizen's).
    pub(super) fn trunk_digit(&mut self, now: Now, t: TrunkId, d: char) {
        if self.callback_surveys.contains_key(&t.0) {
            return self.callback_survey_input(now, t, Input::Digit(d));
        }
        if let Some(Purpose::Revisit(r)) = self.legs.trunks.get(&t).map(|x| x.purpose) {
            self.revisit_input(now, r, Input::Digit(d));
        }
    }

    /// The call to the citizen was not answered (`code`) or not placed (`None`): the agent is
    /// released, and the request waits for its next attempt or fails.
    fn callback_missed(&mut self, now: Now, id: u64, code: Option<u16>) {
        let cfg = self.env.cfg.callback.clone();
        let Some(r) = self.callbacks.get_mut(&id) else {
            return;
        };
        let l = r.seat_leg();
        let after = r.citizen_missed(now.mono, &cfg);
        let (q, call_id, number, attempts, since) = (
            r.queue,
            r.call_id.clone(),
            r.number.clone(),
            r.attempts,
            r.since,
        );
        if let Some(l) = l {
            self.end_seat_leg(now, SeatLegId(l), EndedBy::Caller);
        }
        let outcome = match after {
            AfterMiss::RetryAt(at) => {
                self.timers.set(Timer::Callback(id), Some(at));
                CallbackOutcome::AttemptFailed
            }
            AfterMiss::Failed => {
                warn!(call_id = %call_id, number = %mask_number(&number), attempts, ?code, "callback failed after its attempts");
                self.callbacks.remove(&id);
                CallbackOutcome::Failed
            }
        };
        let event = RecordEvent::Callback(Callback {
            outcome,
            number,
            attempts,
            waited_s: Some(now.since(since).as_secs_f64()),
        });
        self.record(now, event, Some(&call_id), None, Some(q));
    }

    /// The citizen hung up after answering: the agent's leg ends; the callback is done.
    pub(super) fn callback_citizen_left(&mut self, now: Now, id: u64, t: TrunkId) {
        if self.callback_surveys.contains_key(&t.0) {
            return self.callback_survey_over(now, t, Some("caller_hung_up"));
        }
        if self.callbacks.get(&id).and_then(|r| r.trunk()) != Some(t.0) {
            return;
        }
        let Some(r) = self.callbacks.remove(&id) else {
            return;
        };
        if let Some(l) = r.seat_leg() {
            self.end_seat_leg(now, SeatLegId(l), EndedBy::Caller);
        }
    }

    /// The agent hung up during a callback: the call to the citizen ends too. Before the
    /// citizen answered, the request goes back in line at its place (the attempt is not the
    /// citizen's miss); after, the callback is done.
    pub(super) fn callback_seat_left(&mut self, now: Now, id: u64, l: SeatLegId) {
        let seat = self.legs.seats.get(&l).map(|leg| leg.seat);
        self.release_seat_media(l);
        self.seat_call_ended(now, l, EndedBy::Seat);
        if let Some(leg) = self.legs.seats.get_mut(&l) {
            leg.state = LegState::Done;
        }
        let Some(r) = self.callbacks.get_mut(&id) else {
            return;
        };
        let trunk = r.trunk();
        let before_answer = matches!(r.state, State::Dialling { .. });
        if before_answer {
            if let Some(t) = trunk {
                self.end_trunk(now, TrunkId(t));
            }
            if let Some(r) = self.callbacks.get_mut(&id) {
                r.attempts = r.attempts.saturating_sub(u32::from(trunk.is_some()));
                r.state = State::InLine;
            }
            self.callback_enter(now, id, State::InLine);
            return;
        }
        let Some(r) = self.callbacks.remove(&id) else {
            return;
        };
        if let Some(t) = trunk.map(TrunkId)
            && !self.ask_callback_survey(now, &r, seat, t)
        {
            self.end_trunk(now, t);
        }
    }

    /// The agent hung up a callback conversation in a queue with a survey: the citizen is
    /// asked to rate it, as a caller would be (true); the rating counts for the seat.
    fn ask_callback_survey(
        &mut self,
        now: Now,
        r: &Request,
        seat: Option<usize>,
        t: TrunkId,
    ) -> bool {
        let survey = self
            .env
            .plan
            .queues
            .get(r.queue.0)
            .is_some_and(|q| q.survey);
        if !survey || self.env.plan.survey.is_none() {
            return false;
        }
        let Some(stream) = self.legs.trunks.get(&t).map(|x| x.stream) else {
            return false;
        };
        self.media.unbridge(stream);
        self.media.engine.set_sending(stream, true);
        let mut ivr = Ivr::new(self.env.plan.clone(), vec![], Next::Hangup);
        ivr.handle(Input::Bridged);
        info!(call_id = %r.call_id, "callback: the agent hung up; the citizen is asked to rate the call");
        self.callback_surveys.insert(
            t.0,
            Rating {
                ivr,
                call_id: r.call_id.clone(),
                seat,
                queue: r.queue,
                epoch: 0,
                rated: false,
            },
        );
        self.callback_survey_input(now, t, Input::Survey);
        true
    }

    /// Input to a called-back citizen's survey, and its actions carried out.
    fn callback_survey_input(&mut self, now: Now, t: TrunkId, input: Input) {
        let Some(rating) = self.callback_surveys.get_mut(&t.0) else {
            return;
        };
        let actions = rating.ivr.handle(input);
        let stream = self.legs.trunks.get(&t).map(|x| x.stream);
        for action in actions {
            match action {
                Action::Play { prompts, loop_last } => {
                    if let Some(s) = stream {
                        self.media.engine.play(s, &prompts, loop_last);
                    }
                }
                Action::Timer { after, epoch, .. } => {
                    if let Some(r) = self.callback_surveys.get_mut(&t.0) {
                        r.epoch = epoch;
                    }
                    self.timers
                        .set(Timer::CallbackSurvey(t.0), Some(now.mono + after));
                }
                Action::SurveyResult(rating) => self.callback_rated(now, t, rating, None),
                Action::Hangup => {
                    self.callback_survey_over(now, t, None);
                    self.end_trunk(now, t);
                    return;
                }
                _ => {}
            }
        }
    }

    pub(super) fn callback_survey_timer(&mut self, now: Now, t: u64) {
        let Some(epoch) = self.callback_surveys.get(&t).map(|r| r.epoch) else {
            return;
        };
        let input = Input::Timer(crate::ivr::engine::TimerKind::MenuTimeout, epoch);
        self.callback_survey_input(now, TrunkId(t), input);
    }

    /// The citizen's rating (or why there is none), recorded once like a caller's: with the
    /// call that asked for the callback, its seat and its queue.
    fn callback_rated(&mut self, now: Now, t: TrunkId, rating: Option<u8>, why: Option<&str>) {
        let Some(r) = self.callback_surveys.get_mut(&t.0) else {
            return;
        };
        if std::mem::replace(&mut r.rated, true) {
            return;
        }
        let (call_id, seat, queue) = (r.call_id.clone(), r.seat, r.queue);
        let label = match rating {
            Some(1) => "satisfied",
            Some(2) => "basically_satisfied",
            Some(3) => "dissatisfied",
            _ => why.unwrap_or("no_answer"),
        };
        info!(call_id = %call_id, ?rating, label, "satisfaction survey (callback)");
        let event = RecordEvent::Survey {
            rating,
            label: label.to_string(),
            matter: None,
            unit: None,
        };
        self.record(now, event, Some(&call_id), seat, Some(queue));
    }

    /// The survey is over (done, the citizen hung up, or shutdown): unrated, it is recorded
    /// as such.
    fn callback_survey_over(&mut self, now: Now, t: TrunkId, why: Option<&str>) {
        self.timers.cancel(&Timer::CallbackSurvey(t.0));
        self.callback_rated(now, t, None, why);
        self.callback_surveys.remove(&t.0);
    }
}
