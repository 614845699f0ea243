//! Our call to a seat's phone (a UAC leg): the offer of a waiting caller (or of a caller's
//! transfer to an expert group), and, once answered, the agent's side of the conversation:
//! the bridge, hold and resume from the phone, the recording, the agent's wrap-up when it
//! ends. The INVITE's retransmission, ring timeout, CANCEL and BYE are the session's.

use super::caller::{Served, Service};
use super::*;
use crate::acd::Waiting;
use crate::acd::agent::{Event as AgentEvent, State as AgentState};
use crate::ivr::engine::Input;
use crate::metrics::record::{EndedBy, OfferOutcome, QueueExit};
use crate::sdp::{self, LocalMedia, RemoteMedia};
use crate::sip::dialog::DialogParams;
use crate::sip::dialog::invite::{Incoming, UacParams};
use tracing::warn;

pub(super) struct SeatLeg {
    pub(super) session: InviteSession,
    pub(super) seat: usize,
    pub(super) queue: QueueId,
    /// What this leg offers: a waiting caller, or a caller's transfer to an expert group.
    pub(super) what: Waiting,
    pub(super) stream: StreamId,
    pub(super) local_media: LocalMedia,
    /// The contact it rings (an offer to a contact that unregisters is withdrawn).
    contact: String,
    pub(super) offered_at: Instant,
    pub(super) state: LegState,
}

pub(super) enum LegState {
    /// The seat rings.
    Ringing,
    /// A browser answered; its media is not keyed yet (DTLS-SRTP under way). Still an offer:
    /// the caller keeps its place, and a handshake that fails makes the offer fail over like
    /// one not answered.
    Securing(Box<RemoteMedia>),
    /// The offer ended without a conversation; the agent has been told. The session ends.
    Settled,
    /// Answered: the agent talks, with its caller or as an expert in a three-way call.
    Talking(Talk),
    /// The conversation is over for the agent (wrap-up); the session ends.
    Done,
}

#[derive(Default)]
pub(super) struct Talk {
    /// The seat put the caller on hold (re-INVITE): the caller hears hold music.
    on_hold: bool,
    /// DTMF keyed by the agent during the call (a transfer code being entered), and when the
    /// last digit came.
    pub(super) digits: String,
    pub(super) digits_at: Option<Instant>,
    /// The seat's own consultation call about this leg's caller (attended transfer): it ends
    /// when the caller's call with the seat does.
    pub(super) consultation: Option<ConsultationId>,
}

impl SeatLeg {
    /// The caller this leg is about.
    pub(super) fn caller(&self) -> CallerId {
        match self.what {
            Waiting::Caller(k) | Waiting::Transfer(k) => CallerId(k),
        }
    }

    pub(super) fn talk(&mut self) -> Option<&mut Talk> {
        match &mut self.state {
            LegState::Talking(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn is_talking(&self) -> bool {
        matches!(self.state, LegState::Talking(_))
    }

    /// Offered and not yet settled: ringing, or answered by a browser whose media is not
    /// keyed yet.
    pub(super) fn is_offered(&self) -> bool {
        matches!(self.state, LegState::Ringing | LegState::Securing(_))
    }
}

impl<M: MediaIo> Core<M> {
    /// Offers `what` to `seat` of queue `q`; false (it stays first in line) if it can't now.
    pub(super) fn offer(&mut self, now: Now, what: Waiting, seat: usize, q: QueueId) -> bool {
        let Some(binding) = self
            .registrar
            .contacts(seat, now.mono)
            .find(|b| b.reachable)
            .cloned()
        else {
            return false;
        };
        let k = match what {
            Waiting::Caller(k) | Waiting::Transfer(k) => CallerId(k),
        };
        // A callback is offered only within its allowed hours (else it waits, keeping its
        // place, until they open).
        if self.callback_held_for_hours(now, k.0) {
            return true;
        }
        // What the phone is shown: the caller (masked when confidential, with 110's incident),
        // or a callback with its number and original wait.
        let Some(shown) = self.presented(now, k) else {
            return true;
        };
        let span = shown.span.clone();
        let _g = span.enter();
        let codec = shown.codec;
        let l = SeatLegId(self.legs.next_id());
        let Some((stream, mut local)) =
            self.open_media(now, Leg::Seat(l), binding.peer.addr.ip(), None, codec)
        else {
            warn!("no RTP port free for the seat leg; the caller keeps waiting");
            return false;
        };
        let host = self.local_host(binding.peer.addr.ip());
        let seat_cfg = &self.registrar.seats()[seat];
        let seat_cfg_remote = seat_cfg.remote;
        let queue_name = self.env.plan.queues[q.0].name.clone();
        let transport = binding.peer.transport.uri_param();
        let dialog = DialogParams {
            call_id: format!("{}@hotline", self.rng.token()),
            local_tag: self.rng.token(),
            local_uri: shown.from(&host),
            remote: format!("<sip:{}@{host}>", seat_cfg.user),
            remote_tag: None,
            remote_target: binding.uri.clone(),
            route_set: binding.path.clone(),
            peer: binding.peer,
            contact: format!("<sip:hotline@{host}{transport}>"),
            via_host: host,
            user_agent: self.env.user_agent.clone(),
        };
        // An expert's phone shows who is transferring the caller to it.
        let by = match what {
            Waiting::Transfer(_) => self
                .transfers
                .get(&k)
                .and_then(|t| t.by_seat())
                .and_then(|s| self.registrar.seats().get(s))
                .map(|s| s.id.clone()),
            Waiting::Caller(_) => None,
        };
        let mut extra = vec![("X-Hotline-Queue", queue_name.as_str())];
        extra.extend(shown.headers.iter().map(|(n, v)| (*n, v.as_str())));
        extra.push(("Allow", ALLOW));
        if let Some(by) = &by {
            extra.push(("X-Hotline-Transfer-By", by.as_str()));
        }
        // A remote seat (远端座席) registered over TLS is offered SRTP only.
        if seat_cfg_remote && binding.peer.transport.secure() {
            if let Err(why) = super::srtp::offer_keys(&mut local) {
                warn!(error = %why, "no SRTP keys for the seat leg; the caller keeps waiting");
                self.media.release(stream, &self.env.stats);
                return false;
            }
        }
        // A browser's phone (SIP over WebSocket) speaks WebRTC: ICE-lite and DTLS-SRTP.
        if binding.peer.transport.is_browser() {
            let webrtc = self
                .media
                .engine
                .tx(stream)
                .and_then(|tx| self.media.io.webrtc_offer(tx));
            match webrtc {
                Some(w) => local.webrtc = Some(w),
                None => {
                    warn!(seat = %seat_cfg.id, "no WebRTC media for the browser seat; the caller keeps waiting");
                    self.media.release(stream, &self.env.stats);
                    return false;
                }
            }
        }
        let sdp = sdp::offer_codec(&local, codec.0, codec.1);
        let ring_timeout = self.env.plan.queues[q.0].ring_timeout;
        let session = InviteSession::outgoing(
            now.mono,
            UacParams {
                dialog,
                target: binding.uri.clone(),
                extra: &extra,
                sdp: sdp.as_bytes(),
                ring_timeout,
                credentials: None,
            },
            &mut self.rng,
        );
        info!(seat = %seat_cfg.id, contact = %binding.uri, queue = %queue_name, transfer = matches!(what, Waiting::Transfer(_)), "offering the call to a seat");
        self.acd.offered(now.mono, what, l.0, seat);
        self.legs.seats.insert(
            l,
            SeatLeg {
                session,
                seat,
                queue: q,
                what,
                stream,
                local_media: local,
                contact: binding.uri,
                offered_at: now.mono,
                state: LegState::Ringing,
            },
        );
        self.register_session(Leg::Seat(l));
        self.flush(now, Leg::Seat(l));
        self.publish_seat(seat, now);
        true
    }

    pub(super) fn seat_event(&mut self, now: Now, l: SeatLegId, ev: SessionEvent) {
        match ev {
            SessionEvent::Ringing { code } => {
                if let Some(leg) = self.legs.seats.get(&l)
                    && let (Waiting::Transfer(k), true) = (leg.what, (180..190).contains(&code))
                {
                    self.expert_ringing(now, CallerId(k));
                }
            }
            SessionEvent::Answered { sdp } => self.seat_answered(now, l, &sdp),
            SessionEvent::Failed { code } => {
                let Some(leg) = self.legs.seats.get(&l) else {
                    return;
                };
                let seat_id = self.registrar.seats()[leg.seat].id.clone();
                let outcome = match code {
                    408 => {
                        info!(seat = %seat_id, "seat did not answer in time");
                        AgentEvent::Missed
                    }
                    486 | 600 | 603 => AgentEvent::Rejected,
                    480 => AgentEvent::Missed,
                    _ => AgentEvent::Failed,
                };
                if code != 408 {
                    info!(seat = %seat_id, code, "seat declined or failed");
                }
                self.settle_offer(now, l, outcome);
            }
            SessionEvent::Ended(_) => self.seat_hung_up(now, l),
            SessionEvent::Terminated { .. } => {
                // A leg that never got to talk was settled when its offer ended; this is
                // only the session's end.
                self.settle_offer(now, l, AgentEvent::Failed);
                self.release_seat_media(l);
                self.forget(Leg::Seat(l));
                self.legs.seats.remove(&l);
                self.dispatch(now);
            }
            SessionEvent::Confirmed { .. } => {}
        }
    }

    /// The seat answered the offer.
    fn seat_answered(&mut self, now: Now, l: SeatLegId, body: &[u8]) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        if !matches!(leg.state, LegState::Ringing) {
            return;
        }
        let (seat, stream, k) = (leg.seat, leg.stream, leg.caller());
        let browser = leg.local_media.webrtc.is_some();
        let seat_id = self.registrar.seats()[seat].id.clone();
        // A callback's seat answers with no caller on the line yet: the citizen is called
        // next (the seat's own stream stands in until then).
        let callback = self.callbacks.contains_key(&k.0);
        let caller_stream = self
            .legs
            .callers
            .get(&k)
            .filter(|c| !c.session.is_over())
            .map(|c| c.stream)
            .or(callback.then_some(stream));
        if browser {
            // The conversation starts once DTLS-SRTP has keyed the leg.
            let fingerprint = match (sdp::parse_webrtc(body), caller_stream) {
                (Ok(m), Some(_)) => match m.dtls.as_ref().map(|d| d.fingerprint.clone()) {
                    Some(fp) if crate::media::dtls_srtp::parse_fingerprint(&fp).is_some() => {
                        Some((m, fp))
                    }
                    _ => None,
                },
                (_, None) => return self.withdraw_offer(now, l, AgentEvent::Withdrawn),
                (Err(_), _) => None,
            };
            let Some((m, fp)) = fingerprint else {
                warn!(seat = %seat_id, "the browser answered without usable WebRTC SDP (UDP/TLS/RTP/SAVPF, a=fingerprint sha-256); hanging up the seat");
                return self.withdraw_offer(now, l, AgentEvent::Failed);
            };
            if let Some(tx) = self.media.engine.tx(stream) {
                self.media.io.webrtc_answer(tx, &fp);
            }
            info!(seat = %seat_id, "the browser answered; keying its media (DTLS-SRTP)");
            if let Some(leg) = self.legs.seats.get_mut(&l) {
                leg.state = LegState::Securing(Box::new(m));
            }
            return;
        }
        let answer = sdp::parse(body).map_err(|e| e.to_string());
        let (m, caller_stream) = match (answer, caller_stream) {
            (Ok(m), Some(cs)) => {
                let keys = self
                    .legs
                    .seats
                    .get_mut(&l)
                    .map(|leg| super::srtp::accept_answer_keys(&mut leg.local_media, &m));
                match keys {
                    Some(Ok(session)) if session.is_some() => {
                        self.key_leg(Leg::Seat(l), session);
                    }
                    Some(Err(why)) => {
                        warn!(seat = %seat_id, error = %why, "seat answered with unusable SRTP keys; hanging up the seat");
                        return self.withdraw_offer(now, l, AgentEvent::Failed);
                    }
                    _ => {}
                }
                (m, cs)
            }
            (Err(e), _) => {
                warn!(seat = %seat_id, error = %e, "seat answered with unusable SDP; hanging up the seat");
                return self.withdraw_offer(now, l, AgentEvent::Failed);
            }
            (_, None) => return self.withdraw_offer(now, l, AgentEvent::Withdrawn),
        };
        self.seat_connected(now, l, m, caller_stream);
    }

    /// A browser leg's DTLS-SRTP is done: its answer takes effect now.
    pub(super) fn seat_secured(&mut self, now: Now, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get_mut(&l) else {
            return;
        };
        let LegState::Securing(_) = &leg.state else {
            return;
        };
        let LegState::Securing(m) = std::mem::replace(&mut leg.state, LegState::Ringing) else {
            return;
        };
        let (k, stream) = (leg.caller(), leg.stream);
        let callback = self.callbacks.contains_key(&k.0);
        let caller_stream = self
            .legs
            .callers
            .get(&k)
            .filter(|c| !c.session.is_over())
            .map(|c| c.stream)
            .or(callback.then_some(stream));
        match caller_stream {
            Some(cs) => self.seat_connected(now, l, *m, cs),
            None => self.withdraw_offer(now, l, AgentEvent::Withdrawn),
        }
    }

    /// A browser leg's DTLS-SRTP failed or timed out: while offered, the offer fails over to
    /// the next seat like one the seat did not answer.
    pub(super) fn seat_secure_failed(&mut self, now: Now, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        let seat_id = self.registrar.seats()[leg.seat].id.clone();
        if leg.is_offered() {
            warn!(seat = %seat_id, "the browser's media never came up (DTLS-SRTP); the offer goes to the next seat");
            self.withdraw_offer(now, l, AgentEvent::Missed);
            self.dispatch(now);
        } else if leg.is_talking() {
            self.seat_lost(now, l);
        }
    }

    /// The seat's answer takes effect: caller and seat are bridged (or the expert joins).
    fn seat_connected(&mut self, now: Now, l: SeatLegId, m: RemoteMedia, caller_stream: StreamId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        let (seat, queue, stream, what, k) =
            (leg.seat, leg.queue, leg.stream, leg.what, leg.caller());
        let browser = leg.local_media.webrtc.is_some();
        let callback = self.callbacks.contains_key(&k.0);
        let seat_id = self.registrar.seats()[seat].id.clone();
        if let Some(tx) = self.media.engine.tx(stream) {
            // A browser's media address is the one its ICE checks came from, not its SDP's.
            if !browser {
                self.media.io.media_changed(tx, m.addr);
            }
            self.media.io.set_event_pt(tx, m.telephone_event);
        }
        if !browser {
            self.media.engine.set_remote(stream, m.addr);
        }
        let others = self.acd.offer_over(what, l.0, true);
        if let Some(leg) = self.legs.seats.get_mut(&l) {
            leg.state = LegState::Talking(Talk::default());
        }
        let _ = self
            .acd
            .agent_mut(seat)
            .map(|a| a.handle(now.mono, AgentEvent::Answered));
        let ring_s = now.since(self.legs.seats[&l].offered_at).as_secs_f64();
        let call_id = self.call_id_of(k);
        let expert = matches!(what, Waiting::Transfer(_));
        let event = RecordEvent::Offer {
            outcome: OfferOutcome::Answered,
            ring_s,
            agent_state_after: None,
            transfer: expert,
        };
        self.record(now, event, call_id.as_deref(), Some(seat), Some(queue));
        self.acd.took(queue, seat);
        // Ring-all: the other seats stop ringing.
        for other in others {
            self.withdraw_offer(now, SeatLegId(other), AgentEvent::AnsweredElsewhere);
        }
        if expert {
            info!(seat = %seat_id, "an expert answered the transfer");
            self.publish_seat(seat, now);
            return self.expert_answered(now, k, l);
        }
        if callback {
            info!(seat = %seat_id, "the seat answered a callback; calling the citizen");
            self.publish_seat(seat, now);
            return self.callback_seat_answered(now, k.0, l);
        }
        self.media.engine.set_sending(caller_stream, false);
        self.media.bridge(caller_stream, stream);
        self.start_recording(now, k, l);
        self.dequeue(now, k, QueueExit::Answered);
        if let Some(c) = self.legs.callers.get_mut(&k) {
            let _g = c.span.clone().entered();
            info!(seat = %seat_id, "seat answered; caller and seat bridged");
            c.service = Service::Seat(l);
            c.served = Some(Served { seat, queue });
        }
        self.ivr_bridged(k);
        self.publish_seat(seat, now);
    }

    /// The caller is with a human now: the IVR steps aside.
    pub(super) fn ivr_bridged(&mut self, k: CallerId) {
        if let Some(ivr) = self.legs.callers.get_mut(&k).and_then(|c| c.ivr_mut()) {
            ivr.handle(Input::Bridged);
        }
    }

    /// The offer is over without a conversation: the agent is told `outcome`, and what was
    /// offered, if still waiting, is first in line again (having waited longest). Once.
    pub(super) fn settle_offer(&mut self, now: Now, l: SeatLegId, outcome: AgentEvent) {
        let Some(leg) = self.legs.seats.get_mut(&l) else {
            return;
        };
        if !leg.is_offered() {
            return;
        }
        leg.state = LegState::Settled;
        let (seat, queue, what, k) = (leg.seat, leg.queue, leg.what, leg.caller());
        let ring_s = now.since(leg.offered_at).as_secs_f64();
        let call_id = self.call_id_of(k);
        let label = match outcome {
            AgentEvent::Missed => OfferOutcome::Missed,
            AgentEvent::Rejected => OfferOutcome::Rejected,
            AgentEvent::Withdrawn => OfferOutcome::Withdrawn,
            AgentEvent::AnsweredElsewhere => OfferOutcome::AnsweredElsewhere,
            _ => OfferOutcome::Failed,
        };
        let (after, retry) = match self.acd.agent_mut(seat) {
            Some(a) => {
                let _ = a.handle(now.mono, outcome);
                (a.state(), a.retry_after)
            }
            None => (AgentState::LoggedOut, Duration::ZERO),
        };
        self.timers
            .set(Timer::AgentReady(seat), Some(now.mono + retry));
        let event = RecordEvent::Offer {
            outcome: label,
            ring_s,
            agent_state_after: Some(after),
            transfer: false,
        };
        self.record(now, event, call_id.as_deref(), Some(seat), Some(queue));
        self.publish_seat(seat, now);
        // What was offered never left its line while offered: with its last offer gone it
        // is first in line again at the next dispatch.
        self.acd.offer_over(what, l.0, false);
    }

    /// The offer stops: the agent is told `outcome` and the phone stops ringing (CANCEL) or,
    /// if it answered meanwhile, is hung up.
    pub(super) fn withdraw_offer(&mut self, now: Now, l: SeatLegId, outcome: AgentEvent) {
        self.settle_offer(now, l, outcome);
        if let Some(leg) = self.legs.seats.get_mut(&l)
            && matches!(leg.state, LegState::Settled)
        {
            leg.session.end(now.mono, &mut self.rng);
        }
        self.flush(now, Leg::Seat(l));
    }

    /// The caller is gone while the seat talks with it: the seat is hung up.
    pub(super) fn caller_left_seat(&mut self, now: Now, l: SeatLegId) {
        self.end_seat_leg(now, l, EndedBy::Caller);
    }

    /// We end the seat's leg: the agent's conversation ends (`ended_by`), the phone is hung
    /// up, and the leg goes when its BYE is answered.
    pub(super) fn end_seat_leg(&mut self, now: Now, l: SeatLegId, ended_by: EndedBy) {
        self.seat_call_ended(now, l, ended_by);
        self.settle_offer(now, l, AgentEvent::Withdrawn);
        self.release_seat_media(l);
        if let Some(leg) = self.legs.seats.get_mut(&l) {
            leg.session.end(now.mono, &mut self.rng);
        }
        self.flush(now, Leg::Seat(l));
    }

    /// The connection a seat's leg depends on is gone (a browser's WebSocket closed, its
    /// media never keyed): an offer fails over to the next seat; a conversation ends for the
    /// agent, and its caller hears that the line dropped and goes back to the queue, first in
    /// line, instead of being lost.
    pub(super) fn seat_connection_lost(&mut self, now: Now, transport: crate::sip::Transport) {
        let hit: Vec<SeatLegId> = self
            .legs
            .seats
            .iter()
            .filter(|(_, leg)| leg.session.peer().transport == transport)
            .map(|(l, _)| *l)
            .collect();
        for l in hit {
            let Some(leg) = self.legs.seats.get(&l) else {
                continue;
            };
            let seat_id = self.registrar.seats()[leg.seat].id.clone();
            if leg.is_offered() {
                info!(seat = %seat_id, "the seat's connection closed while offered; the offer goes to the next seat");
                self.withdraw_offer(now, l, AgentEvent::Failed);
            } else if leg.is_talking() {
                self.seat_lost(now, l);
            }
        }
        self.dispatch(now);
    }

    /// A conversation whose seat is gone without hanging up: the agent's call ends, and the
    /// caller (unless it is in a transfer, which handles the agent leaving) is told and waits
    /// again in the same queue ahead of everyone, keeping its original arrival time.
    pub(super) fn seat_lost(&mut self, now: Now, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        if !leg.is_talking() {
            return;
        }
        let (k, queue, seat) = (leg.caller(), leg.queue, leg.seat);
        warn!(seat = %self.registrar.seats()[seat].id, "the seat's connection was lost during the call");
        if self.callbacks.contains_key(&k.0) {
            // A callback's conversation: as if the seat had hung up (the request goes back in
            // line while the citizen was still being called).
            return self.callback_seat_left(now, k.0, l);
        }
        let with_caller = self
            .legs
            .callers
            .get(&k)
            .is_some_and(|c| c.seat_leg() == Some(l));
        self.end_seat_leg(now, l, EndedBy::Seat);
        if !with_caller {
            self.transfer_expert_left(now, k, l);
            return;
        }
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.service = Service::Ivr;
        }
        if self.transfer_agent_left(now, k, l) {
            return;
        }
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if !c.session.is_confirmed() {
            return;
        }
        let _g = c.span.clone().entered();
        info!("the seat was lost: the caller hears so and waits again, first in line");
        c.lost_seat = true;
        let cs = c.stream;
        self.media.unbridge(cs);
        self.media.engine.set_sending(cs, true);
        self.ivr_input(now, k, Input::SeatLost(queue));
    }

    /// The seat hung up (BYE on its leg).
    fn seat_hung_up(&mut self, now: Now, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        if !leg.is_talking() {
            return self.settle_offer(now, l, AgentEvent::Failed);
        }
        let k = leg.caller();
        info!(seat = %self.registrar.seats()[leg.seat].id, "seat hung up");
        if self.callbacks.contains_key(&k.0) {
            return self.callback_seat_left(now, k.0, l);
        }
        let with_caller = self
            .legs
            .callers
            .get(&k)
            .is_some_and(|c| c.seat_leg() == Some(l));
        self.release_seat_media(l);
        self.seat_call_ended(now, l, EndedBy::Seat);
        if !with_caller {
            // The expert of a transfer leaving the three-way call; or a leg a transfer
            // already took off the call (our BYE and the phone's crossed).
            self.transfer_expert_left(now, k, l);
            return;
        }
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.service = Service::Ivr;
        }
        if self.transfer_agent_left(now, k, l) {
            return;
        }
        // Queues with a survey ask the caller to rate the call instead of hanging up.
        if !self.ask_survey(now, k) {
            self.end_caller(now, k, None);
        }
    }

    /// The agent's side of a conversation is over (`ended_by`): wrap-up, then available
    /// again. Once.
    pub(super) fn seat_call_ended(&mut self, now: Now, l: SeatLegId, ended_by: EndedBy) {
        let Some(leg) = self.legs.seats.get_mut(&l) else {
            return;
        };
        let LegState::Talking(talk) = std::mem::replace(&mut leg.state, LegState::Done) else {
            if matches!(leg.state, LegState::Done) {
                return;
            }
            return;
        };
        let (seat, queue, k) = (leg.seat, leg.queue, leg.caller());
        // A consultation about a caller who is gone has nothing left to transfer (and would
        // keep the seat busy while the ACD thinks it free).
        if let Some(c) = talk.consultation {
            self.end_consultation(now, c, None);
        }
        if self.acd.state(seat) != AgentState::OnCall {
            return;
        }
        let talk_s = self
            .acd
            .agent(seat)
            .map(|a| now.since(a.since()).as_secs_f64())
            .unwrap_or_default();
        let call_id = self.call_id_of(k);
        let wrap_up = self
            .env
            .plan
            .queues
            .get(queue.0)
            .map(|q| q.wrap_up)
            .unwrap_or_default();
        let event = RecordEvent::TalkEnd {
            talk_s,
            wrap_s: wrap_up.as_secs_f64(),
            ended_by,
        };
        self.record(now, event, call_id.as_deref(), Some(seat), Some(queue));
        if let Some(a) = self.acd.agent_mut(seat) {
            let _ = a.handle(now.mono, AgentEvent::CallEnded { wrap_up });
        }
        self.timers
            .set(Timer::AgentReady(seat), Some(now.mono + wrap_up));
        self.publish_seat(seat, now);
        self.dispatch(now);
    }

    /// The leg's media goes: its relay, and (when it was the caller's seat and no transfer
    /// keeps the caller going) the caller's relay and recording.
    pub(super) fn release_seat_media(&mut self, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        let (stream, k) = (leg.stream, leg.caller());
        if self.media.engine.tx(stream).is_none() {
            return;
        }
        self.media.unbridge(stream);
        let ours = self
            .legs
            .callers
            .get(&k)
            .filter(|c| c.seat_leg() == Some(l) && !self.transfers.contains_key(&k))
            .map(|c| c.stream);
        self.media.release(stream, &self.env.stats);
        if let Some(cs) = ours {
            self.media.unbridge(cs);
            if let Some(tx) = self.media.engine.tx(cs) {
                self.media.io.stop_recording(tx);
            }
        }
    }

    /// A seat's registrations changed (un-REGISTER, expiry, unreachable): an offer ringing a
    /// contact it no longer has is withdrawn and counted as failed; what it offered is first
    /// in line again at once.
    pub(super) fn seat_contacts_changed(&mut self, now: Now, seat: usize) {
        let live: Vec<String> = self
            .registrar
            .contacts(seat, now.mono)
            .filter(|b| b.reachable)
            .map(|b| b.uri.clone())
            .collect();
        let gone: Vec<SeatLegId> = self
            .legs
            .seats
            .iter()
            .filter(|(_, l)| l.seat == seat && l.is_offered() && !live.contains(&l.contact))
            .map(|(k, _)| *k)
            .collect();
        for l in gone {
            info!(seat = %self.registrar.seats()[seat].id, "the seat's phone went away while it rang; offer withdrawn");
            self.withdraw_offer(now, l, AgentEvent::Failed);
        }
        self.dispatch(now);
    }

    /// A request in the seat's dialog that the session left to us.
    pub(super) fn seat_request(
        &mut self,
        now: Now,
        l: SeatLegId,
        incoming: Incoming,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        match (incoming, info.method) {
            (Incoming::Reinvite, _) => self.seat_reinvite(now, l, req, info, peer),
            (_, Method::Refer) => self.leg_refer(now, l, req, info, peer),
            (_, Method::Options | Method::Info | Method::Update) if req.body.is_empty() => {
                self.respond_in(Leg::Seat(l), req, info, peer, &ResponseSpec::new(200, "OK"))
            }
            (_, Method::Info) => {
                let digit = super::caller::dtmf_relay(req);
                self.respond_in(Leg::Seat(l), req, info, peer, &ResponseSpec::new(200, "OK"));
                if let Some(d) = digit {
                    self.handle_rtp_event(now, RtpEvent::Digit(Leg::Seat(l), d));
                }
            }
            _ => {
                let hdrs = [("Warning", "399 hotline \"not supported on seat legs\"")];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(488, "Not Acceptable Here")
                };
                self.respond_in(Leg::Seat(l), req, info, peer, &spec);
            }
        }
    }

    /// A re-INVITE from the seat: hold (sendonly/inactive or no address) plays hold music to
    /// the caller; resume bridges them again; a new address is followed.
    fn seat_reinvite(
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
        if !leg.is_talking() {
            let spec = ResponseSpec::new(491, "Request Pending");
            return self.respond_in(Leg::Seat(l), req, info, peer, &spec);
        }
        let codec = self.media.engine.codec(leg.stream);
        let Ok(offer) = self.reoffer(Leg::Seat(l), req, info, peer, codec) else {
            return;
        };
        let Some(leg) = self.legs.seats.get_mut(&l) else {
            return;
        };
        leg.local_media.version += 1;
        let (stream, k, seat) = (leg.stream, leg.caller(), leg.seat);
        // A browser's media address is ICE's, not its SDP's (often 0.0.0.0 with ICE).
        let browser = leg.local_media.webrtc.is_some();
        let hold = offer
            .as_ref()
            .is_some_and(|o| !o.direction.we_may_send() || (o.addr.is_none() && !browser));
        let was_on_hold = leg
            .talk()
            .map(|t| std::mem::replace(&mut t.on_hold, hold))
            .unwrap_or(false);
        let (codec, pt) = self.media.codec(stream);
        let body = match &offer {
            Some(o) => sdp::answer(&leg.local_media, o),
            None => sdp::offer_codec(&leg.local_media, codec, pt),
        };
        if let (Some(tx), Some(addr), false) = (
            self.media.engine.tx(stream),
            offer.as_ref().and_then(|m| m.addr),
            browser,
        ) {
            self.media.io.media_changed(tx, Some(addr));
            self.media.engine.set_remote(stream, Some(addr));
        }
        info!(seat = %self.registrar.seats()[seat].id, hold, "re-INVITE from the seat");
        // Hold moves the caller only for the seat it talks with, and not during a transfer
        // (which has the caller's media: hold music, or the three-way call).
        let caller = self
            .legs
            .callers
            .get(&k)
            .filter(|c| c.seat_leg() == Some(l) && !self.transfers.contains_key(&k))
            .map(|c| (c.stream, c.served.map(|s| s.queue)));
        if let Some((cs, queue)) = caller {
            let hold_music = queue
                .and_then(|q| self.env.plan.queues.get(q.0))
                .map(|q| q.hold_music);
            match (hold, was_on_hold) {
                (true, false) => {
                    self.media.unbridge(cs);
                    self.media.unbridge(stream);
                    self.media.engine.set_sending(cs, true);
                    self.media
                        .engine
                        .play(cs, &hold_music.into_iter().collect::<Vec<_>>(), true);
                }
                (false, true) => {
                    self.media.engine.set_sending(cs, false);
                    self.media.bridge(cs, stream);
                }
                _ => {}
            }
        }
        if let Some(leg) = self.legs.seats.get_mut(&l) {
            leg.session
                .answer(now.mono, req, info, peer, body.as_bytes());
        }
    }

    /// Queues with `record = true`: the bridge is recorded to
    /// `<acd.recordings>/<day>/<time>-<seat>-<call id>.wav`, and the path goes in the store.
    fn start_recording(&mut self, now: Now, k: CallerId, l: SeatLegId) {
        let Some(leg) = self.legs.seats.get(&l) else {
            return;
        };
        if !self
            .env
            .plan
            .queues
            .get(leg.queue.0)
            .is_some_and(|q| q.record)
        {
            return;
        }
        let (seat, queue, stream) = (leg.seat, leg.queue, leg.stream);
        let Some(c) = self.legs.callers.get(&k) else {
            return;
        };
        let local = now.shanghai();
        // Call-IDs come from the network: only safe characters reach the file name.
        let cid: String = c
            .call_id
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
                    ch
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let seat_id = self.registrar.seats()[seat].id.clone();
        let path = self
            .env
            .cfg
            .acd
            .recordings
            .join(local.format("%Y-%m-%d").to_string())
            .join(format!("{}-{seat_id}-{cid}.wav", local.format("%H%M%S")));
        let (codec, _) = self.media.codec(stream);
        if let (Some(a), Some(b)) = (self.media.engine.tx(c.stream), self.media.engine.tx(stream)) {
            self.media.io.record(a, b, codec, path.clone());
        }
        let call_id = c.call_id.clone();
        let event = RecordEvent::Recording {
            path: path.display().to_string(),
            confidential: c.confidential,
        };
        self.record(now, event, Some(&call_id), Some(seat), Some(queue));
    }

    /// A request of ours in the seat's dialog (NOTIFY, while the call is up).
    pub(super) fn seat_notify(
        &mut self,
        now: Now,
        l: SeatLegId,
        hdrs: &[(&str, &str)],
        body: &[u8],
    ) {
        if let Some(leg) = self.legs.seats.get_mut(&l) {
            leg.session
                .send_request("NOTIFY", hdrs, body, &mut self.rng);
        }
        self.flush(now, Leg::Seat(l));
    }

    /// The seat leg `seat` talks to its caller on (for transfers asked through the API).
    pub(super) fn seat_leg_of(&self, seat: usize) -> Option<SeatLegId> {
        self.legs.seats.iter().find_map(|(&l, leg)| {
            (leg.seat == seat
                && leg.is_talking()
                && self
                    .legs
                    .callers
                    .get(&leg.caller())
                    .is_some_and(|c| c.seat_leg() == Some(l)))
            .then_some(l)
        })
    }
}
