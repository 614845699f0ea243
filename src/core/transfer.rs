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
//! Attended: the agent consulted the target first (`consultation.rs`); REFER with Replaces
//! naming that consultation gives the target's call to the caller.
//!
//! An expert group is one of our own queues: the transfer waits in the ACD for one of its
//! seats, ahead of callers. Only a seat leg (a dialog the daemon opened to an authenticated,
//! registered seat) can start a transfer: a caller's digits go to the IVR and a caller's
//! REFER is refused.

use super::caller::Service;
use super::seat_leg::LegState;
use super::trunk::{DialError, Purpose};
use super::*;
use crate::acd::Waiting;
use crate::acd::agent::State as AgentState;
use crate::config::TargetKind;
use crate::metrics::record::{EndedBy, TransferMode as Mode, TransferOutcome};
use crate::sip::message;
use tracing::warn;

/// Where the transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The target is being called; the caller hears hold music.
    Dialling,
    /// Caller, agent and target in one conference.
    Conference,
    /// The agent left: caller and target bridged.
    Connected,
    /// The target was not reached (or a keyed code was refused): the agent hears so, then is
    /// bridged with the caller again.
    Restoring,
    /// The agent left and the target did not answer: the caller is told and hung up.
    GivingUp,
}

/// How the target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Nowhere: a keyed code that was refused (its failure prompt plays).
    Refused,
    /// Over its trunk: the call, while there is one.
    Trunk(Option<TrunkId>),
    /// An expert group: the queue whose seats are offered the transfer, and the expert's leg
    /// once one answered.
    Experts {
        queue: QueueId,
        expert: Option<SeatLegId>,
    },
}

pub(super) struct Transfer {
    /// The transferring agent's leg while the agent is on the transfer.
    agent: Option<SeatLegId>,
    /// The seat that started it; none when the dialplan did (a retained-seat line).
    seat: Option<usize>,
    /// Where the caller goes when the target is not reached and no agent takes it back: the
    /// queue of 12345's agents for a retained-seat line's caller (7×24).
    fallback: Option<QueueId>,
    target: Option<usize>,
    reach: Reach,
    phase: Phase,
    mode: Mode,
    started: Instant,
    /// An expert group must answer by then (a trunk call has its own ring timeout).
    deadline: Instant,
    /// A REFER's agent was told the target rings (several experts may).
    ringing_told: bool,
}

impl Transfer {
    fn new(agent: SeatLegId, seat: usize, target: Option<usize>, mode: Mode, now: Instant) -> Self {
        Transfer {
            agent: Some(agent),
            seat: Some(seat),
            fallback: None,
            target,
            reach: Reach::Refused,
            phase: Phase::Dialling,
            mode,
            started: now,
            deadline: now,
            ringing_told: false,
        }
    }

    /// The seat that started the transfer (none: the dialplan did).
    pub(super) fn by_seat(&self) -> Option<usize> {
        self.seat
    }
}

/// The agent's phone asked for it (REFER) and is told the outcome by NOTIFY.
fn by_refer(mode: Mode) -> bool {
    matches!(mode, Mode::Blind | Mode::Attended)
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
    /// A transfer or hand-off asked through the HTTP API for seat `seat_id`.
    pub fn transfer_by_id(
        &mut self,
        now: Now,
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
            .seat_leg_of(seat)
            .ok_or_else(|| TransferError::NotOnCall.to_string())?;
        if emergency_only
            && self
                .env
                .cfg
                .target(number)
                .is_some_and(|t| self.env.cfg.targets[t].kind != TargetKind::Emergency)
        {
            return Err(TransferError::NotEmergency(number.to_string()).to_string());
        }
        let name = self
            .start_transfer(now, leg, number, Mode::ThreeWay, by)
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({ "transfer": "dialling", "target": number, "name": name }))
    }

    /// The caller seat leg `l` talks with, while it is confirmed and not being transferred.
    fn caller_to_transfer(&self, l: SeatLegId) -> Result<CallerId, TransferError> {
        let leg = self
            .legs
            .seats
            .get(&l)
            .filter(|leg| leg.is_talking())
            .ok_or(TransferError::NotOnCall)?;
        let k = leg.caller();
        self.legs
            .callers
            .get(&k)
            .filter(|c| c.seat_leg() == Some(l) && c.session.is_confirmed())
            .ok_or(TransferError::NotOnCall)?;
        if self.transfers.contains_key(&k) {
            return Err(TransferError::InProgress);
        }
        Ok(k)
    }

    /// Starts a transfer of the caller seat leg `l` talks with; the target's name.
    pub(super) fn start_transfer(
        &mut self,
        now: Now,
        l: SeatLegId,
        number: &str,
        mode: Mode,
        by: &str,
    ) -> Result<String, TransferError> {
        let k = self.caller_to_transfer(l)?;
        let seat = self.legs.seats[&l].seat;
        let target = self
            .env
            .cfg
            .target(number)
            .ok_or_else(|| TransferError::UnknownTarget(number.to_string()))?;
        let t = &self.env.cfg.targets[target];
        // An expert group is one of our queues: with nobody of it at work the transfer fails
        // now rather than after the caller and agent waited its whole timeout.
        let expert_queue = match (t.kind, t.queue.as_deref()) {
            (TargetKind::Expert, Some(name)) => {
                let q = self
                    .env
                    .plan
                    .queues
                    .iter()
                    .position(|q| q.name == name)
                    .map(QueueId)
                    .ok_or_else(|| TransferError::UnknownTarget(number.to_string()))?;
                if self.acd.at_work(q) == 0 {
                    return Err(TransferError::NoExperts(t.name.clone()));
                }
                Some(q)
            }
            (TargetKind::Expert, None) => {
                return Err(TransferError::UnknownTarget(number.to_string()));
            }
            _ => None,
        };
        if !self.room_for(target, 1) {
            return Err(TransferError::NoCapacity);
        }
        let c = &self.legs.callers[&k];
        let (caller, call_id, span, cs) = (
            super::confidential::shown_number(c).to_string(),
            c.call_id.clone(),
            c.span.clone(),
            c.stream,
        );
        let _g = span.enter();
        let codec = self.media.codec(cs);
        let seat_id = self.registrar.seats()[seat].id.clone();
        let mut extra = vec![
            ("X-Hotline-Transfer-By", seat_id.as_str()),
            ("X-Hotline-Call", call_id.as_str()),
        ];
        // A hand-off to an emergency centre carries our call reference (and 110's incident
        // reference, for a call 110 handed over) in the configured headers.
        let diversion = self.diversion_headers(k, target);
        extra.extend(diversion.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let t = &self.env.cfg.targets[target];
        let timeout = Duration::from_secs(t.timeout_s);
        let name = t.name.clone();
        let reach = match expert_queue {
            Some(queue) => Reach::Experts {
                queue,
                expert: None,
            },
            None => Reach::Trunk(Some(
                self.dial_target(
                    now,
                    target,
                    &caller,
                    Purpose::Transfer(k),
                    timeout,
                    codec,
                    &extra,
                )
                .map_err(|e| match e {
                    DialError::NoPort => TransferError::NoCapacity,
                    e => TransferError::Dial(e.to_string()),
                })?,
            )),
        };
        self.record_started(now, &call_id, Some(seat), target, mode, by, &caller);
        let t = Transfer {
            reach,
            deadline: now.mono + timeout,
            ..Transfer::new(l, seat, Some(target), mode, now.mono)
        };
        self.begin_dialling(k, l, t);
        if let Some(q) = expert_queue {
            self.acd.wait_for_expert(k.0, q, now.mono, seat);
            self.timers
                .set(Timer::Transfer(k), Some(now.mono + timeout));
            self.dispatch(now);
        }
        Ok(name)
    }

    /// A retained-seat line's caller, greeted, is passed to the line's own seats over their
    /// trunk (its `retained` target), presenting the caller's number. Like an agent's
    /// three-way transfer the daemon keeps the caller's leg, so the caller is never dropped:
    /// when the seats are busy or do not answer within the target's `timeout_s`, the caller
    /// goes to `fallback`, where 12345's agents take the call (the 7×24 rule: seed 002 line
    /// 98, 003 line 41; 000 line 30: 保留座席…确保12345热线的接通率).
    pub(super) fn pass_to_retained(&mut self, now: Now, k: CallerId, r: Retained) {
        let Some(c) = self.legs.callers.get(&k) else {
            return;
        };
        let (caller, call_id, dialled, cs, span) = (
            super::confidential::shown_number(c).to_string(),
            c.call_id.clone(),
            c.dialled.clone(),
            c.stream,
            c.span.clone(),
        );
        let _g = span.enter();
        let Some(t) = self.env.cfg.targets.get(r.target) else {
            return self.ivr_input(now, k, crate::ivr::engine::Input::RetainedFailed);
        };
        let timeout = Duration::from_secs(t.timeout_s);
        let codec = self.media.codec(cs);
        let extra = [
            ("X-Hotline-Call", call_id.as_str()),
            ("X-Hotline-Dialled", dialled.as_str()),
        ];
        let dialled_ok = if self.room_for(r.target, 1) {
            self.dial_target(
                now,
                r.target,
                &caller,
                Purpose::Transfer(k),
                timeout,
                codec,
                &extra,
            )
            .map_err(|e| e.to_string())
        } else {
            Err("no capacity (the rest is reserved for emergency hand-offs)".into())
        };
        let trunk = match dialled_ok {
            Ok(id) => id,
            Err(why) => {
                warn!(%why, "cannot reach the line's retained seats; 12345's agents take the call");
                return self.ivr_input(now, k, crate::ivr::engine::Input::RetainedFailed);
            }
        };
        self.record_started(
            now,
            &call_id,
            None,
            r.target,
            Mode::Line,
            "dialplan",
            &caller,
        );
        self.transfers.insert(
            k,
            Transfer {
                agent: None,
                seat: None,
                fallback: Some(r.fallback),
                target: Some(r.target),
                reach: Reach::Trunk(Some(trunk)),
                phase: Phase::Dialling,
                mode: Mode::Line,
                started: now.mono,
                deadline: now.mono + timeout,
                ringing_told: false,
            },
        );
        Stats::inc(&self.env.stats.transfers_active);
        // The caller hears 正在为您转接, then the fallback queue's hold music.
        let prompts = self.media.engine.prompts().clone();
        let hold = self.env.plan.queues.get(r.fallback.0).map(|q| q.hold_music);
        let play: Vec<_> = prompts
            .id("transfer/connecting")
            .into_iter()
            .chain(hold)
            .collect();
        self.media.engine.set_sending(cs, true);
        self.media.engine.play(cs, &play, true);
    }

    /// Whether calling `target` may take `ports` more RTP ports: ordinary transfers and
    /// consultations leave the reserved ones to emergency hand-offs, which are never refused
    /// for capacity.
    pub(super) fn room_for(&self, target: usize, ports: usize) -> bool {
        self.env
            .cfg
            .targets
            .get(target)
            .is_some_and(|t| t.kind == TargetKind::Emergency)
            || self.media.io.free_ports() >= self.env.cfg.transfer.reserved_for_emergency + ports
    }

    /// The audit of a transfer's start: a record, and a log line (a warning for an emergency
    /// hand-off).
    #[allow(clippy::too_many_arguments)]
    fn record_started(
        &mut self,
        now: Now,
        call_id: &str,
        seat: Option<usize>,
        target: usize,
        mode: Mode,
        by: &str,
        caller: &str,
    ) {
        let label = self.target_label(target);
        let seat_id = seat
            .and_then(|s| self.registrar.seats().get(s))
            .map_or("-", |s| s.id.as_str());
        let masked = crate::metrics::queue_log::mask_number(caller);
        if label.kind == TargetKind::Emergency {
            // The audit trail of a hand-off: who, which caller, where, when (store + log).
            warn!(seat = %seat_id, caller = %masked, number = %label.number, name = %label.name, by, "EMERGENCY HAND-OFF started");
        } else {
            info!(seat = %seat_id, caller = %masked, number = %label.number, name = %label.name, by, ?mode, "transfer started");
        }
        let event = RecordEvent::Transfer(crate::metrics::record::Transfer {
            outcome: TransferOutcome::Started,
            target: label,
            mode: Some(mode),
            by: Some(by.to_string()),
            caller: Some(caller.to_string()),
            answer_s: None,
            code: None,
            ring_s: None,
        });
        self.record(now, event, Some(call_id), seat, None);
    }

    /// A transfer's later step in the record.
    fn transfer_record(
        &mut self,
        now: Now,
        k: CallerId,
        outcome: TransferOutcome,
        answer_s: Option<f64>,
        failure: Option<(u16, f64)>,
    ) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let (Some(target), seat) = (t.target, t.seat) else {
            return;
        };
        let event = RecordEvent::Transfer(crate::metrics::record::Transfer {
            outcome,
            target: self.target_label(target),
            mode: None,
            by: None,
            caller: None,
            answer_s,
            code: failure.map(|f| f.0),
            ring_s: failure.map(|f| f.1),
        });
        let call_id = self.legs.callers.get(&k).map(|c| c.call_id.clone());
        self.record(now, event, call_id.as_deref(), seat, None);
    }

    /// Transfer `t` of caller `k` starts: the caller waits with hold music and the agent
    /// hears that the target is being called.
    fn begin_dialling(&mut self, k: CallerId, l: SeatLegId, t: Transfer) {
        self.part(k, Some("transfer/connecting"), l, "transfer/dialling");
        self.transfers.insert(k, t);
        Stats::inc(&self.env.stats.transfers_active);
    }

    /// Caller and agent stop hearing each other: the caller hears `caller_first` (if any) and
    /// then the queue's hold music; the agent hears `agent_hears`. Its length in ms.
    fn part(
        &mut self,
        k: CallerId,
        caller_first: Option<&str>,
        l: SeatLegId,
        agent_hears: &str,
    ) -> u64 {
        let (Some(cs), Some(ls)) = (
            self.legs.callers.get(&k).map(|c| c.stream),
            self.legs.seats.get(&l).map(|l| l.stream),
        ) else {
            return 0;
        };
        self.media.unbridge(cs);
        self.media.unbridge(ls);
        let hold = self
            .legs
            .callers
            .get(&k)
            .and_then(|c| c.served)
            .and_then(|s| self.env.plan.queues.get(s.queue.0))
            .map(|q| q.hold_music);
        let prompts = self.media.engine.prompts().clone();
        let first = caller_first.and_then(|p| prompts.id(p));
        let agent = prompts.id(agent_hears);
        let ms = agent.map(|p| prompts.get(p).duration_ms()).unwrap_or(0);
        self.media.engine.set_sending(cs, true);
        self.media
            .engine
            .play(cs, &first.into_iter().chain(hold).collect::<Vec<_>>(), true);
        self.media.engine.set_sending(ls, true);
        self.media
            .engine
            .play(ls, &agent.into_iter().collect::<Vec<_>>(), false);
        ms
    }

    /// A transfer code keyed on the phone was refused (unknown number, nobody of the expert
    /// group at work, no capacity): the agent hears 转接未成功 while the caller hears hold
    /// music, then they talk again, as after a failed transfer.
    fn keyed_code_refused(&mut self, now: Now, l: SeatLegId) {
        let Ok(k) = self.caller_to_transfer(l) else {
            return;
        };
        let seat = self.legs.seats[&l].seat;
        let ms = self.part(k, None, l, "transfer/failed");
        let t = Transfer {
            phase: Phase::Restoring,
            ..Transfer::new(l, seat, None, Mode::ThreeWay, now.mono)
        };
        self.transfers.insert(k, t);
        self.timers.set(
            Timer::Transfer(k),
            Some(now.mono + Duration::from_millis(ms)),
        );
    }

    /// The target's call rings: a REFER's agent is told.
    pub(super) fn transfer_ringing(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        if by_refer(t.mode) {
            let agent = t.agent;
            self.refer_notify(now, agent, "SIP/2.0 180 Ringing", false);
        }
    }

    /// An expert's phone rings: a REFER's agent is told so, once.
    pub(super) fn expert_ringing(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get_mut(&k) else {
            return;
        };
        if !by_refer(t.mode) || std::mem::replace(&mut t.ringing_told, true) {
            return;
        }
        let agent = t.agent;
        self.refer_notify(now, agent, "SIP/2.0 180 Ringing", false);
    }

    /// The target's call over its trunk was answered (`Ok`) or not.
    pub(super) fn transfer_outcome(
        &mut self,
        now: Now,
        k: CallerId,
        trunk: TrunkId,
        outcome: Result<(), u16>,
    ) {
        let Some(t) = self.transfers.get_mut(&k) else {
            // The transfer is gone (caller hung up): nobody wants this call any more.
            return self.end_trunk(now, trunk);
        };
        match outcome {
            Ok(()) => self.transfer_answered(now, k),
            Err(code) => {
                t.reach = Reach::Trunk(None);
                self.transfer_failed(now, k, code);
            }
        }
    }

    /// An expert answered the transfer's offer `l` (the agent's state, the offer's record and
    /// the other offers are done): the three-way call starts.
    pub(super) fn expert_answered(&mut self, now: Now, k: CallerId, l: SeatLegId) {
        let Some(t) = self.transfers.get_mut(&k) else {
            return self.end_seat_leg(now, l, EndedBy::Caller);
        };
        if let Reach::Experts { expert, .. } = &mut t.reach {
            *expert = Some(l);
        }
        self.acd.stop_waiting_for_expert(k.0);
        self.timers.cancel(&Timer::Transfer(k));
        self.transfer_answered(now, k);
    }

    /// The media stream of the transfer's target: its trunk call or the expert's leg.
    fn target_stream(&self, t: &Transfer) -> Option<StreamId> {
        match t.reach {
            Reach::Experts { expert, .. } => expert
                .and_then(|l| self.legs.seats.get(&l))
                .map(|l| l.stream),
            Reach::Trunk(Some(id)) => self.legs.trunks.get(&id).map(|c| c.stream),
            Reach::Trunk(None) | Reach::Refused => None,
        }
    }

    /// The target answered: a three-way call, or (blind, or the agent already gone) caller
    /// and target bridged.
    fn transfer_answered(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let (agent, mode, started) = (t.agent, t.mode, t.started);
        let target_stream = self.target_stream(t);
        self.transfer_record(
            now,
            k,
            TransferOutcome::Answered,
            Some(now.since(started).as_secs_f64()),
            None,
        );
        let caller_stream = self.legs.callers.get(&k).map(|c| c.stream);
        let leg_stream = agent
            .and_then(|l| self.legs.seats.get(&l))
            .map(|l| l.stream);
        let (Some(cs), Some(ts)) = (caller_stream, target_stream) else {
            return;
        };
        for s in [Some(cs), Some(ts), leg_stream].into_iter().flatten() {
            self.media.quiet(s);
        }
        match (mode, agent, leg_stream) {
            (Mode::ThreeWay, Some(_), Some(ls)) => {
                info!("target answered: caller, agent and target in a three-way call");
                let engine = &self.media.engine;
                let members: Vec<_> = [cs, ls, ts]
                    .iter()
                    .filter_map(|&s| {
                        Some((engine.tx(s)?, engine.codec(s)?, engine.payload_type(s)?))
                    })
                    .collect();
                self.media.io.conference(k.0, &members);
                Stats::inc(&self.env.stats.conferences_active);
                if let Some(t) = self.transfers.get_mut(&k) {
                    t.phase = Phase::Conference;
                }
            }
            _ => {
                info!("target answered: caller and target bridged");
                self.bridge_to_target(cs, ts);
                if let Some(t) = self.transfers.get_mut(&k) {
                    t.phase = Phase::Connected;
                }
                if let Some(l) = agent {
                    // Blind or attended: the transfer succeeded; the agent's leg is done.
                    self.refer_notify(now, Some(l), "SIP/2.0 200 OK", true);
                    self.detach_agent(now, k, l, EndedBy::Transfer);
                    self.end_seat_leg(now, l, EndedBy::Transfer);
                }
                if mode == Mode::Line {
                    // A retained-seat line's own seats answered: the IVR steps aside.
                    if let Some(c) = self.legs.callers.get_mut(&k) {
                        c.service = Service::Target;
                    }
                    self.ivr_input(now, k, crate::ivr::engine::Input::Bridged);
                }
                self.expert_takes_over(now, k);
            }
        }
    }

    /// The target was not reached (`code`: its final response, 408 for our own timeout).
    fn transfer_failed(&mut self, now: Now, k: CallerId, code: u16) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let (agent, mode, started) = (t.agent, t.mode, t.started);
        let outcome = TransferOutcome::of_failure(code);
        info!(code, ?outcome, "transfer target not reached");
        self.transfer_record(
            now,
            k,
            outcome,
            None,
            Some((code, now.since(started).as_secs_f64())),
        );
        if by_refer(mode) {
            let frag = format!("SIP/2.0 {code} Transfer failed");
            self.refer_notify(now, agent, &frag, true);
        }
        match agent
            .and_then(|l| self.legs.seats.get(&l))
            .map(|l| l.stream)
        {
            Some(ls) => {
                // The agent hears that it failed, then has the caller back.
                let prompts = self.media.engine.prompts().clone();
                let failed = prompts.id("transfer/failed");
                let ms = failed.map(|p| prompts.get(p).duration_ms()).unwrap_or(0);
                self.media
                    .engine
                    .play(ls, &failed.into_iter().collect::<Vec<_>>(), false);
                if let Some(t) = self.transfers.get_mut(&k) {
                    t.phase = Phase::Restoring;
                }
                self.timers.set(
                    Timer::Transfer(k),
                    Some(now.mono + Duration::from_millis(ms)),
                );
            }
            None => match self.transfers.get(&k).and_then(|t| t.fallback) {
                Some(_) => {
                    // 7×24: the line's own seats did not answer; 12345's agents take the call.
                    info!("the retained seats did not answer; the caller goes to 12345's agents");
                    self.transfer_over(k);
                    self.ivr_input(now, k, crate::ivr::engine::Input::RetainedFailed);
                }
                None => self.transfer_give_up(now, k),
            },
        }
    }

    /// Once the agent is gone from a transfer to an expert, the expert's leg becomes the
    /// caller's seat leg like any answered offer (hang-up, survey, the expert's own
    /// transfers and figures then follow the ordinary paths), and the transfer is over.
    fn expert_takes_over(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let Reach::Experts {
            expert: Some(l), ..
        } = t.reach
        else {
            return;
        };
        if t.agent.is_some() {
            return;
        }
        let Some((seat, queue)) = self.legs.seats.get(&l).map(|l| (l.seat, l.queue)) else {
            return;
        };
        info!(seat = %self.registrar.seats()[seat].id, "the expert has the caller");
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.service = Service::Seat(l);
            c.served = Some(super::caller::Served { seat, queue });
        }
        self.transfer_over(k);
        self.publish_seat(seat, now);
    }

    /// The agent left while nobody reached the target: the caller is told, then hung up.
    fn transfer_give_up(&mut self, now: Now, k: CallerId) {
        let Some(cs) = self.legs.callers.get(&k).map(|c| c.stream) else {
            return;
        };
        let prompts = self.media.engine.prompts().clone();
        let sorry = prompts.id("transfer/sorry");
        let ms = sorry.map(|p| prompts.get(p).duration_ms()).unwrap_or(0);
        self.media.engine.set_sending(cs, true);
        self.media
            .engine
            .play(cs, &sorry.into_iter().collect::<Vec<_>>(), false);
        if let Some(t) = self.transfers.get_mut(&k) {
            t.phase = Phase::GivingUp;
        }
        self.timers.set(
            Timer::Transfer(k),
            Some(now.mono + Duration::from_millis(ms)),
        );
    }

    /// The failure prompt has played (agent: caller back) or the apology (caller: hung up),
    /// or an expert group did not answer in time.
    pub(super) fn transfer_timer(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        match t.phase {
            Phase::Dialling if now.mono >= t.deadline => {
                if !matches!(t.reach, Reach::Experts { .. }) {
                    return;
                }
                info!("no expert answered in time");
                self.acd.stop_waiting_for_expert(k.0);
                self.withdraw_offers(now, Waiting::Transfer(k.0));
                self.transfer_failed(now, k, 408);
            }
            Phase::Restoring => {
                let agent = t.agent;
                self.transfer_over(k);
                if let Some(l) = agent {
                    self.rebridge(k, l);
                }
            }
            Phase::GivingUp => {
                self.transfer_over(k);
                self.end_caller(now, k, None);
            }
            _ => {}
        }
    }

    /// Caller and agent talk again (the transfer failed, or the target left a three-way call).
    fn rebridge(&mut self, k: CallerId, l: SeatLegId) {
        let cs = self.legs.callers.get(&k).map(|c| c.stream);
        let ls = self.legs.seats.get(&l).map(|l| l.stream);
        let (Some(cs), Some(ls)) = (cs, ls) else {
            return;
        };
        self.media.quiet(cs);
        self.media.quiet(ls);
        self.media.bridge(cs, ls);
    }

    /// Caller and target talk without the agent; a recorded call goes on being recorded with
    /// the target as its other side.
    fn bridge_to_target(&mut self, cs: StreamId, ts: StreamId) {
        let (codec, _) = self.media.codec(ts);
        if let (Some(a), Some(b)) = (self.media.engine.tx(cs), self.media.engine.tx(ts)) {
            self.media.io.bridge(a, b);
            self.media.io.record_partner(a, b, codec);
        }
    }

    /// The transfer is over (its conference too); the caller goes on with whoever it has.
    fn transfer_over(&mut self, k: CallerId) {
        self.timers.cancel(&Timer::Transfer(k));
        self.acd.stop_waiting_for_expert(k.0);
        if let Some(t) = self.transfers.remove(&k).filter(|t| t.target.is_some()) {
            if t.phase == Phase::Conference {
                self.media.io.end_conference(k.0);
                self.env
                    .stats
                    .conferences_active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.env
                .stats
                .transfers_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The agent's side of the call is over but the caller stays (with the target): the agent
    /// goes to wrap-up and the leg no longer belongs to the caller.
    fn detach_agent(&mut self, now: Now, k: CallerId, l: SeatLegId, ended_by: EndedBy) {
        self.seat_call_ended(now, l, ended_by);
        if let Some(c) = self.legs.callers.get_mut(&k)
            && c.seat_leg() == Some(l)
        {
            c.service = Service::Target;
        }
        if let Some(t) = self.transfers.get_mut(&k) {
            t.agent = None;
        }
    }

    /// The agent hung up during a transfer (its leg's media is already released). True when
    /// the caller stays: with the target, or waiting for it.
    pub(super) fn transfer_agent_left(&mut self, now: Now, k: CallerId, l: SeatLegId) -> bool {
        let Some(t) = self.transfers.get(&k) else {
            return false;
        };
        if t.agent != Some(l) {
            return false;
        }
        match t.phase {
            Phase::Dialling => {
                info!("the agent left; the caller waits for the target");
                self.detach_agent(now, k, l, EndedBy::Seat);
                true
            }
            Phase::Conference => {
                info!("the agent left the three-way call; caller and target stay connected");
                self.media.io.end_conference(k.0);
                self.env
                    .stats
                    .conferences_active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.detach_agent(now, k, l, EndedBy::Seat);
                if let Some(t) = self.transfers.get_mut(&k) {
                    t.phase = Phase::Connected;
                }
                let cs = self.legs.callers.get(&k).map(|c| c.stream);
                let ts = self.transfers.get(&k).and_then(|t| self.target_stream(t));
                if let (Some(cs), Some(ts)) = (cs, ts) {
                    self.bridge_to_target(cs, ts);
                }
                self.expert_takes_over(now, k);
                true
            }
            Phase::Restoring => {
                // Nobody is left to take the caller back: the normal end of the call, and of
                // its recording.
                self.transfer_over(k);
                if let Some(tx) = self
                    .legs
                    .callers
                    .get(&k)
                    .and_then(|c| self.media.engine.tx(c.stream))
                {
                    self.media.io.stop_recording(tx);
                }
                false
            }
            Phase::Connected | Phase::GivingUp => false,
        }
    }

    /// The target hung up.
    pub(super) fn transfer_target_left(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let (phase, agent) = (t.phase, t.agent);
        info!("the transfer target hung up");
        self.transfer_over(k);
        match (phase, agent) {
            (Phase::Conference, Some(l)) => self.rebridge(k, l),
            _ => self.end_caller(now, k, None),
        }
    }

    /// The expert of a transfer hung up (its leg is already gone); false if `l` was not the
    /// expert of a transfer of `k`.
    pub(super) fn transfer_expert_left(&mut self, now: Now, k: CallerId, l: SeatLegId) -> bool {
        let Some(Reach::Experts { expert, .. }) = self.transfers.get_mut(&k).map(|t| &mut t.reach)
        else {
            return false;
        };
        if *expert != Some(l) {
            return false;
        }
        *expert = None;
        self.transfer_target_left(now, k);
        true
    }

    /// The caller is gone: the target's call is cancelled or hung up, the experts stop
    /// ringing.
    pub(super) fn transfer_caller_gone(&mut self, now: Now, k: CallerId) {
        let Some(t) = self.transfers.get(&k) else {
            return;
        };
        let (reach, phase) = (t.reach, t.phase);
        if phase == Phase::Dialling {
            self.transfer_record(now, k, TransferOutcome::Abandoned, None, None);
        }
        self.transfer_over(k);
        match reach {
            Reach::Trunk(Some(id)) => self.end_trunk(now, id),
            Reach::Experts { expert, .. } => {
                self.withdraw_offers(now, Waiting::Transfer(k.0));
                if let Some(l) = expert {
                    self.end_seat_leg(now, l, EndedBy::Caller);
                }
            }
            Reach::Trunk(None) | Reach::Refused => {}
        }
    }

    /// A DTMF digit from a seat leg: `<prefix><number>#` starts a three-way transfer.
    pub(super) fn leg_digit(&mut self, now: Now, l: SeatLegId, d: char) {
        let timeout = Duration::from_secs(self.env.cfg.transfer.digit_timeout_s);
        let prefix = self.env.cfg.transfer.prefix.clone();
        let Some(leg) = self.legs.seats.get_mut(&l) else {
            return;
        };
        let seat = leg.seat;
        let Some(talk) = leg.talk() else {
            return;
        };
        if talk.digits_at.is_some_and(|t| now.since(t) > timeout) {
            talk.digits.clear();
        }
        talk.digits_at = Some(now.mono);
        if d != '#' {
            if talk.digits.len() < 32 {
                talk.digits.push(d);
            }
            // A code that can no longer become `<prefix>…` is dropped at once.
            let n = talk.digits.len().min(prefix.len());
            if talk.digits[..n] != prefix[..n] {
                talk.digits.clear();
            }
            return;
        }
        let code = std::mem::take(&mut talk.digits);
        let Some(number) = code.strip_prefix(prefix.as_str()).filter(|n| !n.is_empty()) else {
            return;
        };
        let seat = self.registrar.seats()[seat].id.clone();
        let number = number.to_string();
        if let Err(e) = self.start_transfer(
            now,
            l,
            &number,
            Mode::ThreeWay,
            &format!("seat {seat} (DTMF)"),
        ) {
            warn!(seat = %seat, number = %number, error = %e, "transfer by DTMF refused");
            if !matches!(e, TransferError::InProgress | TransferError::NotOnCall) {
                self.keyed_code_refused(now, l);
            }
        }
    }

    /// REFER from the seat's softphone: a blind transfer to the Refer-To number, or with
    /// Replaces an attended one.
    pub(super) fn leg_refer(
        &mut self,
        now: Now,
        l: SeatLegId,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        let refuse = |core: &mut Self, code: u16, reason: &str, why: Option<&str>| {
            let w = why.map(|w| format!("399 hotline \"{}\"", w.replace('"', "'")));
            let hdrs: Vec<(&str, &str)> = w.iter().map(|w| ("Warning", w.as_str())).collect();
            let spec = ResponseSpec {
                headers: &hdrs,
                ..ResponseSpec::new(code, reason)
            };
            core.respond_in(Leg::Seat(l), req, info, peer, &spec);
        };
        // The dialog is the one we opened to this registered seat; the REFER must also come
        // from where the seat is, not from someone who learned the Call-ID and tags.
        if peer.addr != leg.session.dialog.peer.addr {
            warn!(src = %peer.addr, "REFER in a seat's dialog from another address refused");
            return refuse(self, 403, "Forbidden", None);
        }
        let seat = self.registrar.seats()[leg.seat].id.clone();
        let refer_to = message::header(req, "Refer-To").unwrap_or("").to_string();
        if refer_to.is_empty() {
            warn!(seat = %seat, "REFER without Refer-To refused");
            return refuse(self, 400, "Bad Request", Some("REFER needs a Refer-To"));
        }
        if let Some(replaces) = replaces_of(&refer_to) {
            return self.attended_transfer(now, l, req, info, peer, &replaces);
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
            l,
            &number,
            Mode::Blind,
            &format!("seat {seat} (REFER)"),
        ) {
            Ok(_) => {
                self.respond_in(
                    Leg::Seat(l),
                    req,
                    info,
                    peer,
                    &ResponseSpec::new(202, "Accepted"),
                );
                self.refer_notify(now, Some(l), "SIP/2.0 100 Trying", false);
            }
            Err(e) => {
                warn!(seat = %seat, number = %number, error = %e, "REFER refused");
                let (code, reason) = e.sip_status();
                refuse(self, code, reason, Some(&e.to_string()));
            }
        }
    }

    /// REFER with Replaces naming the seat's consultation call (attended transfer, RFC 5589
    /// §7): the caller takes over the target's call (or waits for it, if it still rings) and
    /// both of the agent's dialogs end.
    fn attended_transfer(
        &mut self,
        now: Now,
        l: SeatLegId,
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
            core.respond_in(Leg::Seat(l), req, info, peer, &spec);
        };
        let Some(seat) = self.legs.seats.get(&l).map(|leg| leg.seat) else {
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
        let consultation = [(&a, &b), (&b, &a)]
            .into_iter()
            .find_map(|(remote, local)| {
                let Leg::Consultation(c) = self.sip.dialog(&cid, local)? else {
                    return None;
                };
                let x = self.legs.consultations.get(&c)?;
                (x.session.dialog.remote_tag.as_deref() == Some(remote.as_str()) && x.seat == seat)
                    .then_some(c)
            });
        let Some(c) = consultation else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "Replaces names no consultation call of this seat",
            );
        };
        let Some((target, trunk)) = self
            .legs
            .consultations
            .get(&c)
            .and_then(|x| Some((x.target, x.trunk?)))
        else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "the consultation call has no target call",
            );
        };
        let k = match self.caller_to_transfer(l) {
            Ok(k) => k,
            Err(e) => {
                let (code, reason) = e.sip_status();
                return refuse(self, code, reason, &e.to_string());
            }
        };
        // The target's call (ringing or up) is the caller's from now on.
        let live = self
            .legs
            .trunks
            .get(&trunk)
            .map(|t| (t.session.is_early(), t.session.is_up()))
            .filter(|(early, up)| *early || *up);
        let Some((_, up)) = live else {
            return refuse(
                self,
                481,
                "Call/Transaction Does Not Exist",
                "the target's call is gone",
            );
        };
        if let Some(t) = self.legs.trunks.get_mut(&trunk) {
            t.purpose = Purpose::Transfer(k);
        }
        if let Some(x) = self.legs.consultations.get_mut(&c) {
            x.trunk = None;
        }
        let (call_id, caller, span) = {
            let c = &self.legs.callers[&k];
            (
                c.call_id.clone(),
                super::confidential::shown_number(c).to_string(),
                c.span.clone(),
            )
        };
        let _g = span.enter();
        let seat_id = self.registrar.seats()[seat].id.clone();
        self.record_started(
            now,
            &call_id,
            Some(seat),
            target,
            Mode::Attended,
            &format!("seat {seat_id} (REFER with Replaces)"),
            &caller,
        );
        let t = Transfer {
            reach: Reach::Trunk(Some(trunk)),
            ..Transfer::new(l, seat, Some(target), Mode::Attended, now.mono)
        };
        self.begin_dialling(k, l, t);
        self.respond_in(
            Leg::Seat(l),
            req,
            info,
            peer,
            &ResponseSpec::new(202, "Accepted"),
        );
        self.refer_notify(now, Some(l), "SIP/2.0 100 Trying", false);
        if up {
            self.transfer_answered(now, k);
        }
        // The consultation's dialog is over: its target now talks with the caller.
        self.end_consultation(now, c, None);
    }

    /// NOTIFY of the REFER's implicit subscription (RFC 3515), with the target's status.
    fn refer_notify(&mut self, now: Now, l: Option<SeatLegId>, sipfrag: &str, last: bool) {
        let Some(l) = l else { return };
        if !self.legs.seats.get(&l).is_some_and(|leg| {
            matches!(leg.state, LegState::Talking(_) | LegState::Done) && leg.session.is_up()
        }) {
            return;
        }
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
        self.seat_notify(now, l, &hdrs, body.as_bytes());
    }

    /// Whether seat `seat`'s agent is at work (for expert groups).
    #[allow(dead_code)]
    fn at_work(&self, seat: usize) -> bool {
        !matches!(
            self.acd.state(seat),
            AgentState::LoggedOut | AgentState::Paused
        )
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
