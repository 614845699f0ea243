//! Transfers by an agent (三方转接) and the one-key emergency hand-off (一键转接).
//!
//! Three-way: the agent keys `<prefix><number>#` during the call (or ops use the API). The
//! caller hears "transferring you" and hold music while the daemon dials the target over its
//! trunk, presenting the caller's own number. When the target answers, caller, agent and
//! target are mixed into one conference; when the agent hangs up, caller and target stay
//! bridged. If the target is busy or does not answer in time, the agent hears that it failed
//! and is bridged with the caller again.
//!
//! Blind: the agent's softphone sends REFER. The agent is told the progress by NOTIFY; once the
//! target answers, caller and target are bridged and the agent's leg is hung up.
//!
//! Only a seat leg (a dialog the daemon opened to an authenticated, registered seat) can start
//! either: a caller's digits go to the IVR and a caller's REFER is refused.

use super::trunk_call::{DialError, Purpose};
use super::*;
use crate::config::TargetKind;
use crate::ivr::dialplan::QueueId;
use crate::sip::uac;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    ThreeWay,
    /// REFER: the agent leaves as soon as the target answers.
    Blind,
    /// REFER with Replaces: the agent consulted the target first (its own call through us),
    /// and leaves as the caller takes over the target's call.
    Attended,
}

impl Mode {
    /// The agent's phone asked for it (REFER) and is told the outcome by NOTIFY.
    fn by_refer(self) -> bool {
        self != Mode::ThreeWay
    }

    fn label(self) -> &'static str {
        match self {
            Mode::ThreeWay => "three_way",
            Mode::Blind => "blind",
            Mode::Attended => "attended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The target is being called; the caller hears hold music.
    Dialling,
    /// Caller, agent and target in one conference.
    Conference,
    /// The agent left: caller and target bridged.
    Connected,
    /// The target did not answer: the agent hears so, then is bridged with the caller again.
    Restoring,
    /// The agent left and the target did not answer: the caller is told and hung up.
    GivingUp,
}

pub(super) struct Transfer {
    seat_leg: Option<u64>,
    seat: usize,
    /// The configured target (none: a keyed code that was refused, whose failure prompt plays).
    target: Option<usize>,
    /// The target's call over its trunk (all kinds but expert groups).
    trunk: Option<u64>,
    /// Expert groups: the consultation offered to the seats of the expert queue.
    expert: Option<Consult>,
    phase: Phase,
    mode: Mode,
    started: Instant,
    /// An expert group must answer by then (a trunk call has its own ring timeout).
    deadline: Instant,
    /// When the transfer's one timer (expert deadline, end of a prompt) is due; timers set
    /// for an earlier step are ignored.
    due: Option<Instant>,
    /// A blind transfer's agent was told the target rings (several experts may).
    ringing_told: bool,
}

/// A transfer to an expert group waits in the group's queue like a caller, ahead of callers
/// (a caller and an agent are both held by it), and is offered to the queue's free seats by
/// the same dispatch and strategy. The offers are not the caller's own (`Call::legs`): the
/// caller stays bridged to its agent until an expert answers.
struct Consult {
    queue: QueueId,
    /// Offers ringing now.
    offers: Vec<u64>,
    /// The expert's leg, once one answered.
    leg: Option<u64>,
}

impl Transfer {
    /// A transfer of seat leg `seat_leg` (seat `seat`) to `target` whose target is being
    /// called from `now`; the caller sets how it is reached.
    fn new(seat_leg: u64, seat: usize, target: Option<usize>, mode: Mode, now: Instant) -> Self {
        Transfer {
            seat_leg: Some(seat_leg),
            seat,
            target,
            trunk: None,
            expert: None,
            phase: Phase::Dialling,
            mode,
            started: now,
            deadline: now,
            due: None,
            ringing_told: false,
        }
    }

    /// The queue whose free seats should be offered this transfer now, if any.
    pub(super) fn wants_expert(&self) -> Option<(QueueId, Instant)> {
        let c = self.expert.as_ref()?;
        (self.phase == Phase::Dialling && c.offers.is_empty() && c.leg.is_none())
            .then_some((c.queue, self.started))
    }

    /// The expert queue this transfer waits for (ringing or not), and since when.
    pub(super) fn waiting_for_expert(&self) -> Option<(QueueId, Instant)> {
        let c = self.expert.as_ref()?;
        (self.phase == Phase::Dialling && c.leg.is_none()).then_some((c.queue, self.started))
    }

    /// Whether `leg` is an offer of this transfer that may still become its expert.
    pub(super) fn offered(&self, leg: u64) -> bool {
        self.phase == Phase::Dialling
            && self
                .expert
                .as_ref()
                .is_some_and(|c| c.leg.is_none() && c.offers.contains(&leg))
    }

    /// The seat that started the transfer.
    pub(super) fn by_seat(&self) -> usize {
        self.seat
    }
}

/// Why a transfer was not started; each maps to one SIP status for REFER and one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the seat has no answered call to transfer")]
    NotOnCall,
    #[error("{0:?} is not a configured transfer target")]
    UnknownTarget(String),
    #[error("a transfer of this call is already under way")]
    InProgress,
    #[error("no seat of the expert group {0:?} is logged in")]
    NoExperts(String),
    #[error("{0:?} is not an emergency centre")]
    NotEmergency(String),
    #[error("no capacity left for a transfer (the rest is reserved for emergency hand-offs)")]
    NoCapacity,
    #[error("cannot dial the target: {0}")]
    Dial(String),
}

impl TransferError {
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            TransferError::NotOnCall => (481, "Call/Transaction Does Not Exist"),
            TransferError::UnknownTarget(_) => (404, "Not Found"),
            TransferError::InProgress => (491, "Request Pending"),
            TransferError::NotEmergency(_) => (488, "Not Acceptable Here"),
            TransferError::NoExperts(_) => (480, "Temporarily Unavailable"),
            TransferError::NoCapacity | TransferError::Dial(_) => (503, "Service Unavailable"),
        }
    }
}

impl<M: MediaIo> Core<M> {
    /// Seat `seat`'s bridged leg, for transfers asked through the API.
    pub(super) fn bridged_leg_of(&self, seat: usize) -> Option<u64> {
        self.legs
            .iter()
            .find(|(k, l)| {
                l.seat == seat
                    && l.state == seat_leg::LegState::Up
                    && self
                        .calls
                        .get(&l.call)
                        .is_some_and(|c| c.bridged_leg == Some(**k))
            })
            .map(|(k, _)| *k)
    }

    /// A transfer or hand-off asked through the HTTP API for seat `seat_id`.
    pub fn transfer_by_id(
        &mut self,
        now: Instant,
        seat_id: &str,
        number: &str,
        emergency_only: bool,
        by: &str,
    ) -> Result<serde_json::Value, String> {
        let seat = self
            .registrar
            .seat_index(seat_id)
            .ok_or_else(|| format!("no seat {seat_id}"))?;
        let leg = self
            .bridged_leg_of(seat)
            .ok_or_else(|| TransferError::NotOnCall.to_string())?;
        if emergency_only
            && self
                .cfg
                .target(number)
                .is_some_and(|t| self.cfg.targets[t].kind != TargetKind::Emergency)
        {
            return Err(TransferError::NotEmergency(number.to_string()).to_string());
        }
        let name = self
            .start_transfer(now, leg, number, Mode::ThreeWay, by)
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({ "transfer": "dialling", "target": number, "name": name }))
    }

    /// Starts a transfer of the caller bridged to seat leg `leg_key`; the target's name.
    pub(super) fn start_transfer(
        &mut self,
        now: Instant,
        leg_key: u64,
        number: &str,
        mode: Mode,
        by: &str,
    ) -> Result<String, TransferError> {
        let leg = self
            .legs
            .get(&leg_key)
            .filter(|l| l.state == seat_leg::LegState::Up)
            .ok_or(TransferError::NotOnCall)?;
        let (call_key, seat, leg_stream) = (leg.call, leg.seat, leg.stream);
        let call = self
            .calls
            .get(&call_key)
            .filter(|c| c.bridged_leg == Some(leg_key) && c.state == CallState::Confirmed)
            .ok_or(TransferError::NotOnCall)?;
        if self.transfers.contains_key(&call_key) {
            return Err(TransferError::InProgress);
        }
        let target = self
            .cfg
            .target(number)
            .ok_or_else(|| TransferError::UnknownTarget(number.to_string()))?;
        let t = &self.cfg.targets[target];
        // An expert group is one of our queues: with nobody of it logged in the transfer
        // fails now rather than after the caller and agent waited its whole timeout.
        let expert_queue = match (t.kind, t.queue.as_deref()) {
            (TargetKind::Expert, Some(name)) => {
                let q = self
                    .plan
                    .queues
                    .iter()
                    .position(|q| q.name == name)
                    .ok_or_else(|| TransferError::UnknownTarget(number.to_string()))?;
                let staffed = self.members[q].iter().any(|&(i, _)| {
                    !matches!(
                        self.agents[i].state(),
                        AgentState::LoggedOut | AgentState::Paused
                    )
                });
                if !staffed {
                    return Err(TransferError::NoExperts(t.name.clone()));
                }
                Some(QueueId(q))
            }
            (TargetKind::Expert, None) => {
                return Err(TransferError::UnknownTarget(number.to_string()));
            }
            _ => None,
        };
        if !self.room_for(target, 1) {
            return Err(TransferError::NoCapacity);
        }
        use rsipstack::sip::prelude::HeadersExt as _;
        let caller = call
            .invite
            .from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let caller_stream = call.stream;
        let call_id = call.call_id.clone();
        let span = call.span.clone();
        let _g = span.enter();
        let codec = (
            self.media
                .codec(caller_stream)
                .unwrap_or(crate::media::Codec::Pcmu),
            self.media.payload_type(caller_stream).unwrap_or(0),
        );
        let seat_id = self.registrar.seats()[seat].id.clone();
        let extra = [
            ("X-Hotline-Transfer-By", seat_id.as_str()),
            ("X-Hotline-Call", call_id.as_str()),
        ];
        let timeout = Duration::from_secs(t.timeout_s);
        let name = t.name.clone();
        let trunk = match expert_queue {
            Some(_) => None,
            None => Some(
                self.dial_target(
                    now,
                    target,
                    &caller,
                    Purpose::Transfer { call: call_key },
                    timeout,
                    codec,
                    &extra,
                )
                .map_err(|e| match e {
                    DialError::NoPort => TransferError::NoCapacity,
                    e => TransferError::Dial(e.to_string()),
                })?,
            ),
        };
        self.record_started(&call_id, seat, target, mode, by, &caller);
        let t = Transfer {
            trunk,
            expert: expert_queue.map(|queue| Consult {
                queue,
                offers: Vec::new(),
                leg: None,
            }),
            deadline: now + timeout,
            ..Transfer::new(leg_key, seat, Some(target), mode, now)
        };
        self.begin_dialling(call_key, caller_stream, leg_stream, t);
        if expert_queue.is_some() {
            self.transfer_timer_at(call_key, now + timeout);
            self.dispatch(now);
        }
        Ok(name)
    }

    /// Whether calling `target` may take `ports` more RTP ports: ordinary transfers and
    /// consultations leave the reserved ones to emergency hand-offs, which are never refused
    /// for capacity.
    pub(super) fn room_for(&self, target: usize, ports: usize) -> bool {
        self.cfg
            .targets
            .get(target)
            .is_some_and(|t| t.kind == TargetKind::Emergency)
            || self.media_io.free_ports() >= self.cfg.transfer.reserved_for_emergency + ports
    }

    /// The audit of a transfer's start: a `transfer` record, and a log line (a warning for an
    /// emergency hand-off).
    fn record_started(
        &mut self,
        call_id: &str,
        seat: usize,
        target: usize,
        mode: Mode,
        by: &str,
        caller: &str,
    ) {
        let Some(t) = self.cfg.targets.get(target) else {
            return;
        };
        let (number, name, kind, unit) = (
            t.number.clone(),
            t.name.clone(),
            t.kind,
            t.unit_name().to_string(),
        );
        let seat_id = &self.registrar.seats()[seat].id;
        let masked = crate::metrics::queue_log::mask_number(caller);
        if kind == TargetKind::Emergency {
            // The audit trail of a hand-off: who, which caller, where, when (store + log).
            warn!(seat = %seat_id, caller = %masked, number, name = %name, by, "EMERGENCY HAND-OFF started");
        } else {
            info!(seat = %seat_id, caller = %masked, number, name = %name, by, ?mode, "transfer started");
        }
        let kind_v = serde_json::to_value(kind).unwrap_or_default();
        let mode_s = mode.label();
        self.record("transfer", Some(call_id), Some(seat), None, serde_json::json!({ "outcome": "started", "number": number, "name": name, "kind": kind_v, "unit": unit, "mode": mode_s, "by": by, "caller": caller }));
    }

    /// Transfer `t` of caller `call` starts: the caller waits with hold music and the agent
    /// hears that the target is being called.
    fn begin_dialling(
        &mut self,
        call: u64,
        caller_stream: StreamId,
        leg_stream: StreamId,
        t: Transfer,
    ) {
        self.part(
            call,
            caller_stream,
            Some("transfer/connecting"),
            leg_stream,
            "transfer/dialling",
        );
        self.transfers.insert(call, t);
        Stats::inc(&self.stats.transfers_active);
    }

    /// Caller and agent stop hearing each other: the caller hears `caller_first` (if any) and
    /// then the queue's hold music; the agent hears `agent_hears`. Its length in ms.
    fn part(
        &mut self,
        call: u64,
        caller_stream: StreamId,
        caller_first: Option<&str>,
        leg_stream: StreamId,
        agent_hears: &str,
    ) -> u64 {
        if let (Some(a), Some(b)) = (self.media.tx(caller_stream), self.media.tx(leg_stream)) {
            self.media_io.unbridge(a);
            self.media_io.unbridge(b);
        }
        let hold = self
            .calls
            .get(&call)
            .and_then(|c| c.bridged_queue)
            .and_then(|q| self.plan.queues.get(q.0))
            .map(|q| q.hold_music);
        let first = caller_first.and_then(|p| self.media.prompts().id(p));
        let agent = self.media.prompts().id(agent_hears);
        let ms = agent
            .map(|p| self.media.prompts().get(p).duration_ms())
            .unwrap_or(0);
        self.media.set_sending(caller_stream, true);
        self.media.play(
            caller_stream,
            &first.into_iter().chain(hold).collect::<Vec<_>>(),
            true,
        );
        self.media.set_sending(leg_stream, true);
        self.media
            .play(leg_stream, &agent.into_iter().collect::<Vec<_>>(), false);
        ms
    }

    /// A transfer code keyed on the phone was refused (unknown number, nobody of the expert
    /// group logged in, no capacity): the agent hears 转接未成功 while the caller hears hold
    /// music, then they talk again, as after a failed transfer.
    fn keyed_code_refused(&mut self, now: Instant, leg_key: u64) {
        let Some(leg) = self.legs.get(&leg_key) else {
            return;
        };
        let (call, seat, leg_stream) = (leg.call, leg.seat, leg.stream);
        let Some(caller_stream) = self
            .calls
            .get(&call)
            .filter(|c| c.bridged_leg == Some(leg_key) && c.state == CallState::Confirmed)
            .map(|c| c.stream)
        else {
            return;
        };
        if self.transfers.contains_key(&call) {
            return;
        }
        let ms = self.part(call, caller_stream, None, leg_stream, "transfer/failed");
        let t = Transfer {
            phase: Phase::Restoring,
            ..Transfer::new(leg_key, seat, None, Mode::ThreeWay, now)
        };
        self.transfers.insert(call, t);
        self.transfer_timer_at(call, now + Duration::from_millis(ms));
    }

    fn transfer_record(&mut self, call: u64, outcome: &str, extra: serde_json::Value) {
        let Some(t) = self.transfers.get(&call) else {
            return;
        };
        let Some(cfg) = t.target.and_then(|i| self.cfg.targets.get(i)) else {
            return;
        };
        let mut detail = serde_json::json!({ "outcome": outcome, "number": cfg.number, "name": cfg.name, "kind": cfg.kind, "unit": cfg.unit_name() });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        let call_id = self.calls.get(&call).map(|c| c.call_id.clone());
        let seat = t.seat;
        self.record("transfer", call_id.as_deref(), Some(seat), None, detail);
    }

    /// The target's call progressed.
    pub(super) fn transfer_event(
        &mut self,
        now: Instant,
        call: u64,
        trunk: u64,
        event: uac::Event,
    ) {
        let Some(t) = self.transfers.get(&call) else {
            // The transfer is gone (caller hung up): nobody wants this call any more.
            return self.end_trunk(now, trunk);
        };
        match event {
            uac::Event::Ringing => {
                if t.mode.by_refer() {
                    let leg = t.seat_leg;
                    self.refer_notify(now, leg, "SIP/2.0 180 Ringing", false);
                }
            }
            uac::Event::Answered { .. } => self.transfer_answered(now, call),
            uac::Event::Failed { code } => {
                if let Some(t) = self.transfers.get_mut(&call) {
                    t.trunk = None;
                }
                self.transfer_failed(now, call, code);
            }
        }
    }

    /// The media stream of the transfer's target: its trunk call or the expert's leg.
    fn target_stream(&self, t: &Transfer) -> Option<StreamId> {
        match (&t.expert, t.trunk) {
            (Some(c), _) => c.leg.and_then(|l| self.legs.get(&l)).map(|l| l.stream),
            (None, Some(k)) => self.trunk_calls.get(&k).map(|c| c.stream),
            (None, None) => None,
        }
    }

    /// The target answered: a three-way call, or (blind, or the agent already gone) caller
    /// and target bridged.
    fn transfer_answered(&mut self, now: Instant, call: u64) {
        let Some(t) = self.transfers.get(&call) else {
            return;
        };
        let (seat_leg, mode, started) = (t.seat_leg, t.mode, t.started);
        let target_stream = self.target_stream(t);
        let answer_s = now.saturating_duration_since(started).as_secs_f64();
        self.transfer_record(
            call,
            "answered",
            serde_json::json!({ "answer_s": answer_s }),
        );
        let caller_stream = self.calls.get(&call).map(|c| c.stream);
        let leg_stream = seat_leg.and_then(|l| self.legs.get(&l)).map(|l| l.stream);
        let (Some(cs), Some(ts)) = (caller_stream, target_stream) else {
            return;
        };
        for s in [Some(cs), Some(ts), leg_stream].into_iter().flatten() {
            self.media.stop(s);
            self.media.set_sending(s, false);
        }
        match (mode, seat_leg, leg_stream) {
            (Mode::ThreeWay, Some(_), Some(ls)) => {
                info!("target answered: caller, agent and target in a three-way call");
                let members: Vec<(&M::Tx, crate::media::Codec, u8)> = [cs, ls, ts]
                    .iter()
                    .filter_map(|&s| {
                        Some((
                            self.media.tx(s)?,
                            self.media.codec(s)?,
                            self.media.payload_type(s)?,
                        ))
                    })
                    .collect();
                self.media_io.conference(call, &members);
                Stats::inc(&self.stats.conferences_active);
                if let Some(t) = self.transfers.get_mut(&call) {
                    t.phase = Phase::Conference;
                }
            }
            _ => {
                info!("target answered: caller and target bridged");
                self.bridge_to_target(cs, ts);
                if let Some(t) = self.transfers.get_mut(&call) {
                    t.phase = Phase::Connected;
                }
                if let Some(leg) = seat_leg {
                    // Blind: the transfer succeeded; the agent's leg is done.
                    self.refer_notify(now, Some(leg), "SIP/2.0 200 OK", true);
                    self.detach_agent(now, call, leg, "transfer");
                    self.bye_leg(now, leg);
                }
                self.expert_takes_over(now, call);
            }
        }
    }

    /// The target was not reached (`code`: its final response, 408 for our own timeout).
    fn transfer_failed(&mut self, now: Instant, call: u64, code: u16) {
        let Some(t) = self.transfers.get(&call) else {
            return;
        };
        let (seat_leg, mode, started) = (t.seat_leg, t.mode, t.started);
        let outcome = match code {
            486 | 600 | 603 => "busy",
            408 | 480 | 487 | 0 => "no_answer",
            _ => "failed",
        };
        info!(code, outcome, "transfer target not reached");
        self.transfer_record(call, outcome, serde_json::json!({ "code": code, "ring_s": now.saturating_duration_since(started).as_secs_f64() }));
        let frag = format!("SIP/2.0 {code} Transfer failed");
        if mode.by_refer() {
            self.refer_notify(now, seat_leg, &frag, true);
        }
        match seat_leg.and_then(|l| self.legs.get(&l)).map(|l| l.stream) {
            Some(ls) => {
                // The agent hears that it failed, then has the caller back.
                let failed = self.media.prompts().id("transfer/failed");
                let ms = failed
                    .map(|p| self.media.prompts().get(p).duration_ms())
                    .unwrap_or(0);
                self.media
                    .play(ls, &failed.into_iter().collect::<Vec<_>>(), false);
                if let Some(t) = self.transfers.get_mut(&call) {
                    t.phase = Phase::Restoring;
                }
                self.transfer_timer_at(call, now + Duration::from_millis(ms));
            }
            None => self.transfer_give_up(now, call),
        }
    }

    /// Once the agent is gone from a transfer to an expert, the expert's leg becomes the
    /// caller's bridged seat leg like any answered offer (hang-up, survey, the expert's own
    /// transfers and figures then follow the ordinary paths), and the transfer is over.
    fn expert_takes_over(&mut self, now: Instant, call: u64) {
        let Some(t) = self.transfers.get(&call) else {
            return;
        };
        let Some(leg) = t.expert.as_ref().and_then(|c| c.leg) else {
            return;
        };
        if t.seat_leg.is_some() {
            return;
        }
        let Some((seat, queue)) = self.legs.get(&leg).map(|l| (l.seat, l.queue)) else {
            return;
        };
        info!(seat = %self.registrar.seats()[seat].id, "the expert has the caller");
        if let Some(c) = self.calls.get_mut(&call) {
            c.bridged_leg = Some(leg);
            c.bridged_seat = Some(seat);
            c.bridged_queue = Some(queue);
            c.legs.push(leg);
        }
        self.transfer_over(call);
        self.publish_seat(seat, now);
    }

    /// An offer of a transfer to an expert was sent (`leg`).
    pub(super) fn consult_offered(&mut self, call: u64, leg: u64) {
        if let Some(c) = self
            .transfers
            .get_mut(&call)
            .and_then(|t| t.expert.as_mut())
        {
            c.offers.push(leg);
        }
    }

    /// An expert's phone rings: a blind transfer's agent is told so, once.
    pub(super) fn consult_ringing(&mut self, now: Instant, call: u64) {
        let Some(t) = self.transfers.get_mut(&call) else {
            return;
        };
        if !t.mode.by_refer() || std::mem::replace(&mut t.ringing_told, true) {
            return;
        }
        let leg = t.seat_leg;
        self.refer_notify(now, leg, "SIP/2.0 180 Ringing", false);
    }

    /// An offer of a transfer to an expert ended unanswered; the next dispatch offers the
    /// transfer again.
    pub(super) fn consult_offer_over(&mut self, call: u64, leg: u64) {
        if let Some(c) = self
            .transfers
            .get_mut(&call)
            .and_then(|t| t.expert.as_mut())
        {
            c.offers.retain(|&l| l != leg);
        }
    }

    /// An expert answered the transfer's offer `leg` (the leg's media and the expert's state
    /// are set): the other offers stop ringing and the three-way call starts.
    pub(super) fn consult_answered(&mut self, now: Instant, call: u64, leg: u64) {
        let Some(c) = self
            .transfers
            .get_mut(&call)
            .and_then(|t| t.expert.as_mut())
        else {
            return;
        };
        c.leg = Some(leg);
        let others: Vec<u64> = std::mem::take(&mut c.offers)
            .into_iter()
            .filter(|&l| l != leg)
            .collect();
        for other in others {
            self.offer_lost(now, other);
        }
        self.transfer_answered(now, call);
    }

    /// The agent left while nobody reached the target: the caller is told, then hung up.
    fn transfer_give_up(&mut self, now: Instant, call: u64) {
        let Some(cs) = self.calls.get(&call).map(|c| c.stream) else {
            return;
        };
        let sorry = self.media.prompts().id("transfer/sorry");
        let ms = sorry
            .map(|p| self.media.prompts().get(p).duration_ms())
            .unwrap_or(0);
        self.media.set_sending(cs, true);
        self.media
            .play(cs, &sorry.into_iter().collect::<Vec<_>>(), false);
        if let Some(t) = self.transfers.get_mut(&call) {
            t.phase = Phase::GivingUp;
        }
        self.transfer_timer_at(call, now + Duration::from_millis(ms));
    }

    /// The transfer's next step is due at `at`.
    fn transfer_timer_at(&mut self, call: u64, at: Instant) {
        if let Some(t) = self.transfers.get_mut(&call) {
            t.due = Some(at);
            self.timers.push(at, (call, CallTimer::TransferDone));
        }
    }

    /// The failure prompt has played (agent: caller back) or the apology (caller: hung up),
    /// or an expert group did not answer in time.
    pub(super) fn transfer_timer(&mut self, now: Instant, call: u64, at: Instant) {
        let Some(t) = self.transfers.get(&call).filter(|t| t.due == Some(at)) else {
            return;
        };
        match t.phase {
            Phase::Dialling if now >= t.deadline => {
                let Some(c) = t.expert.as_ref() else {
                    return;
                };
                info!("no expert answered in time");
                for leg in c.offers.clone() {
                    self.caller_gone(now, leg);
                }
                self.transfer_failed(now, call, 408);
            }
            Phase::Restoring => {
                let leg = t.seat_leg;
                self.transfer_over(call);
                if let Some(leg) = leg {
                    self.rebridge(call, leg);
                }
            }
            Phase::GivingUp => {
                self.transfer_over(call);
                self.hangup(now, call);
            }
            _ => {}
        }
    }

    /// Caller and agent talk again (the transfer failed, or the target left a three-way call).
    fn rebridge(&mut self, call: u64, leg: u64) {
        let cs = self.calls.get(&call).map(|c| c.stream);
        let ls = self.legs.get(&leg).map(|l| l.stream);
        let (Some(cs), Some(ls)) = (cs, ls) else {
            return;
        };
        for s in [cs, ls] {
            self.media.stop(s);
            self.media.set_sending(s, false);
        }
        if let (Some(a), Some(b)) = (self.media.tx(cs), self.media.tx(ls)) {
            self.media_io.bridge(a, b);
        }
    }

    /// Caller and target talk without the agent; a recorded call goes on being recorded with
    /// the target as its other side.
    fn bridge_to_target(&mut self, cs: StreamId, ts: StreamId) {
        let codec = self.media.codec(ts).unwrap_or(crate::media::Codec::Pcmu);
        if let (Some(a), Some(b)) = (self.media.tx(cs), self.media.tx(ts)) {
            self.media_io.bridge(a, b);
            self.media_io.record_partner(a, b, codec);
        }
    }

    fn transfer_over(&mut self, call: u64) {
        if let Some(t) = self.transfers.remove(&call).filter(|t| t.target.is_some()) {
            if t.phase == Phase::Conference {
                self.media_io.end_conference(call);
                self.stats
                    .conferences_active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.stats
                .transfers_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The agent's side of the call is over but the caller stays (with the target): the agent
    /// goes to wrap-up and the leg no longer belongs to the caller.
    fn detach_agent(&mut self, now: Instant, call: u64, leg: u64, ended_by: &str) {
        self.leg_call_ended(now, leg, ended_by);
        if let Some(c) = self.calls.get_mut(&call) {
            c.bridged_leg = None;
            c.legs.retain(|&l| l != leg);
        }
        if let Some(t) = self.transfers.get_mut(&call) {
            t.seat_leg = None;
        }
    }

    /// The agent hung up during a transfer (its leg's media is already released). True when
    /// the caller stays: with the target, or waiting for it.
    pub(super) fn transfer_agent_left(&mut self, now: Instant, call: u64, leg: u64) -> bool {
        let Some(t) = self.transfers.get(&call) else {
            return false;
        };
        if t.seat_leg != Some(leg) {
            return false;
        }
        match t.phase {
            Phase::Dialling => {
                info!("the agent left; the caller waits for the target");
                self.detach_agent(now, call, leg, "seat");
                true
            }
            Phase::Conference => {
                info!("the agent left the three-way call; caller and target stay connected");
                self.media_io.end_conference(call);
                self.stats
                    .conferences_active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.detach_agent(now, call, leg, "seat");
                if let Some(t) = self.transfers.get_mut(&call) {
                    t.phase = Phase::Connected;
                }
                let cs = self.calls.get(&call).map(|c| c.stream);
                let ts = self
                    .transfers
                    .get(&call)
                    .and_then(|t| self.target_stream(t));
                if let (Some(cs), Some(ts)) = (cs, ts) {
                    self.bridge_to_target(cs, ts);
                }
                self.expert_takes_over(now, call);
                true
            }
            Phase::Restoring => {
                // Nobody is left to take the caller back: the normal end of the call, and of
                // its recording.
                self.transfer_over(call);
                if let Some(tx) = self.calls.get(&call).and_then(|c| self.media.tx(c.stream)) {
                    self.media_io.stop_recording(tx);
                }
                false
            }
            Phase::Connected | Phase::GivingUp => false,
        }
    }

    /// The target hung up.
    pub(super) fn transfer_target_left(&mut self, now: Instant, call: u64, _trunk: u64) {
        let Some(t) = self.transfers.get(&call) else {
            return;
        };
        let (phase, leg) = (t.phase, t.seat_leg);
        info!("the transfer target hung up");
        self.transfer_over(call);
        match (phase, leg) {
            (Phase::Conference, Some(leg)) => self.rebridge(call, leg),
            _ => self.hangup(now, call),
        }
    }

    /// The expert of a transfer hung up (its leg is already gone); false if `leg` was not the
    /// expert of a transfer of `call`.
    pub(super) fn transfer_expert_left(&mut self, now: Instant, call: u64, leg: u64) -> bool {
        let Some(c) = self
            .transfers
            .get_mut(&call)
            .and_then(|t| t.expert.as_mut())
        else {
            return false;
        };
        if c.leg != Some(leg) {
            return false;
        }
        c.leg = None;
        self.transfer_target_left(now, call, leg);
        true
    }

    /// The caller is gone: the target's call is cancelled or hung up.
    pub(super) fn transfer_caller_gone(&mut self, now: Instant, call: u64) {
        let Some(t) = self.transfers.get_mut(&call) else {
            return;
        };
        let (trunk, phase) = (t.trunk, t.phase);
        let (offers, expert) = t
            .expert
            .as_mut()
            .map(|c| (std::mem::take(&mut c.offers), c.leg.take()))
            .unwrap_or_default();
        if phase == Phase::Dialling {
            self.transfer_record(call, "abandoned", serde_json::json!({}));
        }
        self.transfer_over(call);
        if let Some(k) = trunk {
            self.end_trunk(now, k);
        }
        for leg in offers {
            self.caller_gone(now, leg);
        }
        if let Some(leg) = expert {
            self.bye_leg(now, leg);
        }
    }

    /// A DTMF digit from a seat leg: `<prefix><number>#` starts a three-way transfer.
    pub(super) fn leg_digit(&mut self, now: Instant, key: u64, d: char) {
        let timeout = Duration::from_secs(self.cfg.transfer.digit_timeout_s);
        let prefix = self.cfg.transfer.prefix.clone();
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if leg
            .digits_at
            .is_some_and(|t| now.saturating_duration_since(t) > timeout)
        {
            leg.digits.clear();
        }
        leg.digits_at = Some(now);
        if d != '#' {
            if leg.digits.len() < 32 {
                leg.digits.push(d);
            }
            // A code that can no longer become `<prefix>…` is dropped at once.
            let n = leg.digits.len().min(prefix.len());
            if leg.digits[..n] != prefix[..n] {
                leg.digits.clear();
            }
            return;
        }
        let code = std::mem::take(&mut leg.digits);
        let Some(number) = code.strip_prefix(prefix.as_str()).filter(|n| !n.is_empty()) else {
            return;
        };
        let seat = self.registrar.seats()[leg.seat].id.clone();
        let number = number.to_string();
        if let Err(e) = self.start_transfer(
            now,
            key,
            &number,
            Mode::ThreeWay,
            &format!("seat {seat} (DTMF)"),
        ) {
            warn!(seat = %seat, number = %number, error = %e, "transfer by DTMF refused");
            if !matches!(e, TransferError::InProgress | TransferError::NotOnCall) {
                self.keyed_code_refused(now, key);
            }
        }
    }

    /// REFER from the seat's softphone: a blind transfer to the Refer-To number.
    pub(super) fn leg_refer(
        &mut self,
        now: Instant,
        key: u64,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        // The dialog is the one we opened to this registered seat; the REFER must also come
        // from where the seat is, not from someone who learned the Call-ID and tags.
        if peer.addr != leg.peer.addr {
            warn!(src = %peer.addr, "REFER in a seat's dialog from another address refused");
            return self.respond(now, req, info, peer, &ResponseSpec::new(403, "Forbidden"));
        }
        let seat = self.registrar.seats()[leg.seat].id.clone();
        let refer_to = message::header(req, "Refer-To").unwrap_or("").to_string();
        if refer_to.is_empty() {
            warn!(seat = %seat, "REFER without Refer-To refused");
            let hdrs = [("Warning", "399 hotline \"REFER needs a Refer-To\"")];
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(400, "Bad Request")
                },
            );
        }
        if let Some(replaces) = replaces_of(&refer_to) {
            return self.attended_transfer(now, key, req, info, peer, &replaces);
        }
        let uri = message::addr_spec(&refer_to);
        let number = uri
            .split_once(':')
            .map(|(_, r)| r)
            .unwrap_or(uri)
            .split(['@', ';', '?'])
            .next()
            .unwrap_or("")
            .to_string();
        match self.start_transfer(
            now,
            key,
            &number,
            Mode::Blind,
            &format!("seat {seat} (REFER)"),
        ) {
            Ok(_) => {
                self.respond(now, req, info, peer, &ResponseSpec::new(202, "Accepted"));
                self.refer_notify(now, Some(key), "SIP/2.0 100 Trying", false);
            }
            Err(e) => {
                warn!(seat = %seat, number = %number, error = %e, "REFER refused");
                let w = format!("399 hotline \"{}\"", e.to_string().replace('"', "'"));
                let (code, reason) = e.sip_status();
                let hdrs = [("Warning", w.as_str())];
                self.respond(
                    now,
                    req,
                    info,
                    peer,
                    &ResponseSpec {
                        headers: &hdrs,
                        ..ResponseSpec::new(code, reason)
                    },
                );
            }
        }
    }

    /// REFER with Replaces naming the seat's consultation call (attended transfer, RFC 5589
    /// §7): the caller takes over the target's call (or waits for it, if it still rings) and
    /// both of the agent's dialogs end.
    fn attended_transfer(
        &mut self,
        now: Instant,
        leg_key: u64,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        replaces: &str,
    ) {
        let refuse = |core: &mut Self, code: u16, reason: &str, why: &str| {
            warn!(why, "attended transfer refused");
            let w = format!("399 hotline \"{why}\"");
            let hdrs = [("Warning", w.as_str())];
            let spec = ResponseSpec {
                headers: &hdrs,
                ..ResponseSpec::new(code, reason)
            };
            core.respond(now, req, info, peer, &spec);
        };
        let Some((call_key, seat, leg_stream)) =
            self.legs.get(&leg_key).map(|l| (l.call, l.seat, l.stream))
        else {
            return;
        };
        let Some((cid, a, b)) = parse_replaces(replaces) else {
            return refuse(
                self,
                400,
                "Bad Request",
                "Replaces needs call-id;to-tag=…;from-tag=…",
            );
        };
        // Our consultation dialog with this seat, whichever way round its tags are given.
        let consult_key = [(&a, &b), (&b, &a)]
            .into_iter()
            .find_map(|(remote, local)| {
                let k = *self.dialogs.get(&(cid.clone(), remote.clone()))?;
                let c = self.calls.get(&k)?;
                (c.local_tag == *local && c.consult.as_ref().is_some_and(|s| s.seat == seat))
                    .then_some(k)
            });
        let Some(consult_key) = consult_key else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "Replaces names no consultation call of this seat",
            );
        };
        let Some((target, trunk)) = self
            .calls
            .get(&consult_key)
            .and_then(|c| c.consult.as_ref())
            .and_then(|s| Some((s.target, s.trunk?)))
        else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "the consultation call has no target call",
            );
        };
        let Some((caller_stream, call_id, caller)) = self
            .calls
            .get(&call_key)
            .filter(|c| c.bridged_leg == Some(leg_key) && c.state == CallState::Confirmed)
            .map(|c| (c.stream, c.call_id.clone(), self.caller_number(&c.invite)))
        else {
            let (code, reason) = TransferError::NotOnCall.sip_status();
            return refuse(
                self,
                code,
                reason,
                "the seat has no answered call to transfer",
            );
        };
        if self.transfers.contains_key(&call_key) {
            let (code, reason) = TransferError::InProgress.sip_status();
            return refuse(
                self,
                code,
                reason,
                "a transfer of this call is already under way",
            );
        }
        // The target's call (ringing or up) is the caller's from now on.
        let live = self
            .trunk_calls
            .get(&trunk)
            .map(|t| t.uac.state())
            .filter(|s| {
                matches!(
                    s,
                    uac::State::Calling | uac::State::Proceeding | uac::State::Up
                )
            });
        let Some(state) = live else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "the target's call is gone",
            );
        };
        let up = state == uac::State::Up;
        if let Some(t) = self.trunk_calls.get_mut(&trunk) {
            t.purpose = Purpose::Transfer { call: call_key };
        }
        if let Some(c) = self
            .calls
            .get_mut(&consult_key)
            .and_then(|c| c.consult.as_mut())
        {
            c.trunk = None;
        }
        let span = self.calls.get(&call_key).map(|c| c.span.clone());
        let _g = span.as_ref().map(|s| s.enter());
        let seat_id = self.registrar.seats()[seat].id.clone();
        self.record_started(
            &call_id,
            seat,
            target,
            Mode::Attended,
            &format!("seat {seat_id} (REFER with Replaces)"),
            &caller,
        );
        let t = Transfer {
            trunk: Some(trunk),
            ..Transfer::new(leg_key, seat, Some(target), Mode::Attended, now)
        };
        self.begin_dialling(call_key, caller_stream, leg_stream, t);
        self.respond(now, req, info, peer, &ResponseSpec::new(202, "Accepted"));
        self.refer_notify(now, Some(leg_key), "SIP/2.0 100 Trying", false);
        if up {
            self.transfer_answered(now, call_key);
        }
        // The consultation's dialog is over: its target now talks with the caller.
        self.hangup(now, consult_key);
    }

    /// NOTIFY of the REFER's implicit subscription (RFC 3515), with the target's status.
    fn refer_notify(&mut self, now: Instant, leg: Option<u64>, sipfrag: &str, last: bool) {
        let Some(key) = leg else { return };
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let body = format!("{sipfrag}\r\n");
        let hdrs = [
            ("Event", "refer"),
            ("Subscription-State", state),
            ("Content-Type", "message/sipfrag;version=2.0"),
        ];
        self.leg_request(now, key, "NOTIFY", &hdrs, body.as_bytes());
    }
}

/// The Replaces header carried in a Refer-To URI (`sip:12366@host?Replaces=…`), decoded.
fn replaces_of(refer_to: &str) -> Option<String> {
    let uri = message::addr_spec(refer_to);
    let (_, headers) = uri.split_once('?')?;
    headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.eq_ignore_ascii_case("Replaces").then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `call-id;to-tag=A;from-tag=B` (RFC 3891): the Call-ID and the two tags.
fn parse_replaces(value: &str) -> Option<(String, String, String)> {
    let mut parts = value.split(';').map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty())?.to_string();
    let (mut to, mut from) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some((n, v)) if n.eq_ignore_ascii_case("to-tag") => to = Some(v.to_string()),
            Some((n, v)) if n.eq_ignore_ascii_case("from-tag") => from = Some(v.to_string()),
            _ => {}
        }
    }
    Some((call_id, to?, from?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_is_read_from_an_escaped_refer_to() {
        let r = replaces_of(
            "<sip:12366@10.0.0.1?Replaces=abc%40host%3Bto-tag%3Dt1%3Bfrom-tag%3Df1&Require=replaces>",
        )
        .unwrap();
        assert_eq!(r, "abc@host;to-tag=t1;from-tag=f1");
        assert_eq!(
            parse_replaces(&r),
            Some(("abc@host".into(), "t1".into(), "f1".into()))
        );
        assert_eq!(replaces_of("<sip:12366@10.0.0.1>"), None);
        assert_eq!(
            parse_replaces("abc;to-tag=t1"),
            None,
            "both tags are needed"
        );
        assert_eq!(parse_replaces(";to-tag=a;from-tag=b"), None);
    }
}
