//! The ACD's side of call control: callers waiting in queues, offering a call to a seat (the
//! outgoing INVITE, its retransmissions, ring timeout and CANCEL), and the bridge once the
//! seat answers (RTP relayed both ways, hang-up on either side ends both legs).
//!
//! Offers follow longest-idle among available, registered, reachable agents of the queue.

use super::*;
use crate::ivr::dialplan::QueueId;
use rsipstack::sip::prelude::HeadersExt as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegState {
    /// INVITE sent, nothing heard yet (retransmitting on UDP).
    Calling,
    /// 1xx received: the seat rings.
    Proceeding,
    /// CANCEL sent; waiting for the 487 (or a crossing 200).
    Cancelling,
    /// Answered and bridged.
    Up,
    /// BYE sent.
    Ending,
}

pub(super) struct SeatLeg {
    pub(super) call: u64,
    pub(super) seat: usize,
    pub(super) queue: QueueId,
    pub(super) peer: Peer,
    target: String,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    branch: String,
    from: String,
    to: String,
    invite: Bytes,
    pub(super) state: LegState,
    stream: StreamId,
    retransmit_interval: Duration,
    retransmit_at: Option<Instant>,
    ring_deadline: Instant,
    remote_target: String,
    /// What the agent is told when the leg ends before an answer.
    outcome_if_unanswered: AgentEvent,
    local_cseq: u32,
    /// CANCEL wanted before anything was heard: it goes with the first 1xx (RFC 3261 §9.1).
    cancel_pending: bool,
    offered_at: Instant,
    /// The agent and the caller have been told the offer is over (the leg may live on for
    /// its BYE).
    settled: bool,
}

impl<M: MediaIo> Core<M> {
    /// The caller `key` waits in queue `q` from now on.
    pub(super) fn enqueue(&mut self, now: Instant, key: u64, q: QueueId) {
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.queue = Some(q);
        call.queued_at.get_or_insert(now);
        let call_id = call.call_id.clone();
        self.record("queue_enter", Some(&call_id), None, Some(q), serde_json::json!({}));
        if let Some(w) = self.waiting.get_mut(q.0) {
            w.push_back(key);
        }
        self.dispatch(now);
    }

    pub(super) fn dequeue(&mut self, key: u64) {
        if let Some(q) = self.calls.get_mut(&key).and_then(|c| c.queue.take()) {
            if let Some(w) = self.waiting.get_mut(q.0) {
                w.retain(|&k| k != key);
            }
        }
    }

    /// Offers waiting callers to free agents, oldest caller first, longest-idle agent first.
    pub(super) fn dispatch(&mut self, now: Instant) {
        for q in 0..self.waiting.len() {
            while let Some(&key) = self.waiting[q].front() {
                let Some(seat) = self.pick_agent(q, now) else { break };
                self.waiting[q].pop_front();
                if !self.offer(now, key, seat, QueueId(q)) {
                    break; // no port or no contact now; the next dispatch tries again
                }
            }
        }
    }

    fn pick_agent(&self, q: usize, now: Instant) -> Option<usize> {
        let name = &self.plan.queues.get(q)?.name;
        (0..self.agents.len())
            .filter(|&i| self.agents[i].ready(now))
            .filter(|&i| self.registrar.seats()[i].queues.iter().any(|n| n == name))
            .filter(|&i| self.registrar.contacts(i, now).any(|b| b.reachable))
            .min_by_key(|&i| self.agents[i].since())
    }

    /// Offers call `key` to `seat`; false (caller back at the head of the queue) if it can't.
    fn offer(&mut self, now: Instant, key: u64, seat: usize, queue: QueueId) -> bool {
        let Some(binding) = self.registrar.contacts(seat, now).find(|b| b.reachable).cloned() else {
            self.waiting[queue.0].push_front(key);
            return false;
        };
        let local_ip = self.local_ip(binding.peer.addr.ip());
        let Some(call) = self.calls.get(&key) else { return true };
        let _g = call.span.clone().entered();
        let (codec, caller_pt) = call.remote_media.as_ref().map(|m| m.primary()).unwrap_or((crate::media::Codec::Pcmu, 0));
        let leg_key = self.next_key;
        let Some((tx, port)) = self.media_io.open(leg_key) else {
            warn!("no RTP port free for the seat leg; the caller keeps waiting");
            self.waiting[queue.0].push_front(key);
            return false;
        };
        self.next_key += 1;
        let mut rng = rand::rng();
        let params = StreamParams { codec, payload_type: caller_pt, ssrc: rng.random(), first_seq: rng.random(), first_ts: rng.random() };
        let stream = self.media.add(now, tx, None, params);
        self.media.set_sending(stream, false);
        let host = SocketAddr::new(local_ip, self.cfg.sip.listen.port()).to_string();
        let seat_cfg = &self.registrar.seats()[seat];
        // The caller's number as the seat shows it; anything but a plain number is withheld
        // rather than pasted into our From header.
        let caller = call
            .invite
            .from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .filter(|u| !u.is_empty() && u.len() <= 32 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"+*#.-_".contains(&b)))
            .unwrap_or_else(|| "anonymous".into());
        let dialled = call.invite.uri.user().unwrap_or("").to_string();
        let local_tag = random_token();
        let from = format!("\"{caller}\" <sip:{caller}@{host}>;tag={local_tag}");
        let to = format!("<sip:{}@{host}>", seat_cfg.user);
        let call_id = format!("{}@hotline", random_token());
        let branch = format!("z9hG4bK{}", random_token());
        let local = LocalMedia { ip: self.cfg.rtp.public_ip.unwrap_or(local_ip), port, session_id: rng.random::<u32>() as u64, version: 1 };
        let sdp = sdp::offer_codec(&local, codec, caller_pt);
        let queue_name = self.plan.queues[queue.0].name.clone();
        let transport = if binding.peer.transport.reliable() { ";transport=tcp" } else { "" };
        let contact = format!("<sip:hotline@{host}{transport}>");
        let extra = [
            ("Contact", contact.as_str()),
            ("X-Hotline-Queue", queue_name.as_str()),
            ("X-Hotline-Dialled", dialled.as_str()),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ];
        let invite = message::request_with_body(
            &InDialogRequest {
                method: "INVITE",
                target: &binding.uri,
                via_transport: binding.peer.transport.via_name(),
                via_host: &host,
                branch: &branch,
                from: &from,
                to: &to,
                call_id: &call_id,
                cseq: 1,
                routes: &[],
                user_agent: &self.cfg.sip.user_agent,
                extra: &extra,
            },
            sdp.as_bytes(),
        );
        let invite = Bytes::from(invite);
        let ring_timeout = self.plan.queues[queue.0].ring_timeout;
        info!(seat = %seat_cfg.id, contact = %binding.uri, queue = %queue_name, "offering the call to a seat");
        let _ = self.agents[seat].handle(now, AgentEvent::Offered);
        let reliable = binding.peer.transport.reliable();
        self.legs.insert(
            leg_key,
            SeatLeg {
                call: key,
                seat,
                queue,
                peer: binding.peer,
                target: binding.uri.clone(),
                call_id,
                local_tag,
                remote_tag: None,
                branch: branch.clone(),
                from,
                to,
                invite: invite.clone(),
                state: LegState::Calling,
                stream,
                retransmit_interval: T1,
                retransmit_at: (!reliable).then(|| now + T1),
                ring_deadline: now + ring_timeout,
                remote_target: binding.uri.clone(),
                outcome_if_unanswered: AgentEvent::Missed,
                local_cseq: 1,
                cancel_pending: false,
                offered_at: now,
                settled: false,
            },
        );
        self.leg_by_branch.insert(branch, leg_key);
        if !reliable {
            self.timers.push(now + T1, (leg_key, CallTimer::LegRetransmit));
        }
        self.timers.push(now + ring_timeout, (leg_key, CallTimer::LegRingTimeout));
        if let Some(call) = self.calls.get_mut(&key) {
            call.leg = Some(leg_key);
        }
        self.out.push_back(Transmit { peer: binding.peer, bytes: invite });
        self.publish_seat(seat, now);
        true
    }

    pub(super) fn leg_timer(&mut self, now: Instant, key: u64, at: Instant, timer: CallTimer) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        match timer {
            // Timer A: retransmit the INVITE until anything is heard; timer B is the ring
            // timeout here, which is far shorter than 64*T1.
            CallTimer::LegRetransmit if leg.retransmit_at == Some(at) && (leg.state == LegState::Calling || leg.cancel_pending) => {
                self.out.push_back(Transmit { peer: leg.peer, bytes: leg.invite.clone() });
                leg.retransmit_interval *= 2;
                let next = now + leg.retransmit_interval;
                leg.retransmit_at = Some(next);
                self.timers.push(next, (key, CallTimer::LegRetransmit));
            }
            CallTimer::LegRingTimeout if leg.ring_deadline == at && matches!(leg.state, LegState::Calling | LegState::Proceeding) => {
                info!(seat = %self.registrar.seats()[leg.seat].id, "seat did not answer in time");
                leg.outcome_if_unanswered = AgentEvent::Missed;
                self.cancel_leg(now, key);
            }
            // No 487 after our CANCEL within 64*T1: the phone is gone; so is the offer.
            CallTimer::LegRingTimeout if leg.ring_deadline == at && leg.state == LegState::Cancelling => {
                self.end_leg(now, key, true);
            }
            _ => {}
        }
    }

    /// CANCEL an unanswered offer. Before any 1xx the CANCEL must wait for one (RFC 3261
    /// §9.1); either way the offer ends at the latest 64*T1 from now.
    fn cancel_leg(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let deadline = now + 64 * T1;
        leg.ring_deadline = deadline;
        self.timers.push(deadline, (key, CallTimer::LegRingTimeout));
        if leg.state == LegState::Calling {
            leg.state = LegState::Cancelling;
            leg.cancel_pending = true;
            return;
        }
        leg.state = LegState::Cancelling;
        self.send_cancel(now, key);
    }

    fn send_cancel(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.cancel_pending = false;
        leg.retransmit_at = None;
        let host = leg.from.split('@').nth(1).and_then(|h| h.split('>').next()).unwrap_or("").to_string();
        let cancel = message::in_dialog_request(&InDialogRequest {
            method: "CANCEL",
            target: &leg.target,
            via_transport: leg.peer.transport.via_name(),
            via_host: &host,
            branch: &leg.branch,
            from: &leg.from,
            to: &leg.to,
            call_id: &leg.call_id,
            cseq: 1,
            routes: &[],
            user_agent: &self.cfg.sip.user_agent,
            extra: &[],
        });
        let t = Transmit { peer: leg.peer, bytes: cancel.into() };
        let branch = leg.branch.clone();
        // The CANCEL's own transaction; its outcome needs no handling (the INVITE's 487 does).
        let t = self.client_txs.start(now, &branch, CANCEL_OWNER, t);
        self.out.push_back(t);
    }

    /// A response to one of our seat INVITEs.
    pub(super) fn leg_response(&mut self, now: Instant, key: u64, resp: &rsipstack::sip::Response) {
        use rsipstack::sip::prelude::*;
        let code = resp.status_code.code();
        let to_hdr = resp.to_header().map(|t| t.value().to_string()).unwrap_or_default();
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if leg.remote_tag.is_none() {
            leg.remote_tag = to_hdr.split(";tag=").nth(1).map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
        }
        if code < 200 {
            if leg.state == LegState::Calling {
                leg.state = LegState::Proceeding;
                leg.retransmit_at = None;
            } else if leg.cancel_pending {
                self.send_cancel(now, key);
            }
            return;
        }
        if (200..300).contains(&code) {
            // The dialog's tag is the 2xx's (a 1xx may come from another fork).
            if let Some(tag) = to_hdr.split(";tag=").nth(1).map(|t| t.split(';').next().unwrap_or(t).trim().to_string()) {
                leg.remote_tag = Some(tag);
            }
        }
        if code >= 300 {
            // ACK the failure on the INVITE's branch (RFC 3261 §17.1.1.3).
            let ack = self.leg_ack(key, &to_hdr, true);
            let Some(leg) = self.legs.get_mut(&key) else { return };
            self.out.push_back(Transmit { peer: leg.peer, bytes: ack.into() });
            if leg.state != LegState::Cancelling {
                leg.outcome_if_unanswered = match code {
                    486 | 600 | 603 => AgentEvent::Rejected,
                    408 | 480 => AgentEvent::Missed,
                    _ => AgentEvent::Failed,
                };
                info!(seat = %self.registrar.seats()[leg.seat].id, code, "seat declined or failed");
            }
            if leg.state == LegState::Up || leg.state == LegState::Ending {
                return;
            }
            return self.end_leg(now, key, true);
        }
        // 2xx: ACK it (a retransmitted 2xx gets the ACK again).
        if let Some(c) = resp.contact_header().ok() {
            leg.remote_target = message::addr_spec(c.value()).to_string();
        }
        let was = leg.state;
        let ack = self.leg_ack(key, &to_hdr, false);
        let Some(leg) = self.legs.get_mut(&key) else { return };
        self.out.push_back(Transmit { peer: leg.peer, bytes: ack.into() });
        match was {
            LegState::Calling | LegState::Proceeding => {}
            LegState::Cancelling => {
                // The 200 crossed our CANCEL: the offer is over for the agent and the caller
                // (who, if still here, waits on at the head of the queue); the seat is hung up.
                self.settle_unanswered(now, key);
                return self.bye_leg(now, key);
            }
            LegState::Up | LegState::Ending => return,
        }
        leg.state = LegState::Up;
        leg.retransmit_at = None;
        let (call_key, seat, stream) = (leg.call, leg.seat, leg.stream);
        if let Some(tag) = leg.remote_tag.clone() {
            self.leg_dialogs.insert((leg.call_id.clone(), tag), key);
        }
        let answer = sdp::parse(&resp.body);
        let seat_id = self.registrar.seats()[seat].id.clone();
        match (answer, self.calls.get(&call_key).map(|c| c.stream)) {
            (Ok(m), Some(caller_stream)) => {
                if let Some(tx) = self.media.tx(stream) {
                    self.media_io.media_changed(tx, m.addr);
                    self.media_io.set_event_pt(tx, m.telephone_event);
                }
                self.media.set_remote(stream, m.addr);
                self.media.set_sending(caller_stream, false);
                if let (Some(a), Some(b)) = (self.media.tx(caller_stream), self.media.tx(stream)) {
                    self.media_io.bridge(a, b);
                }
                let _ = self.agents[seat].handle(now, AgentEvent::Answered);
                let ring_s = self.legs.get(&key).map(|l| now.saturating_duration_since(l.offered_at).as_secs_f64());
                let queue = self.legs.get(&key).map(|l| l.queue);
                let call_id = self.calls.get(&call_key).map(|c| c.call_id.clone());
                self.record("offer", call_id.as_deref(), Some(seat), queue, serde_json::json!({ "outcome": "answered", "ring_s": ring_s }));
                self.dequeue(call_key);
                if let Some(call) = self.calls.get_mut(&call_key) {
                    let _g = call.span.clone().entered();
                    info!(seat = %seat_id, "seat answered; caller and seat bridged");
                    call.bridged = true;
                    call.bridged_seat = Some(seat);
                    if let Some(ivr) = call.ivr.as_mut() {
                        ivr.handle(Input::Bridged);
                    }
                }
                self.publish_seat(seat, now);
            }
            (Err(e), _) => {
                warn!(seat = %seat_id, error = %e, "seat answered with unusable SDP; hanging up the seat");
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.outcome_if_unanswered = AgentEvent::Failed;
                }
                self.settle_unanswered(now, key);
                self.bye_leg(now, key);
            }
            (_, None) => {
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.outcome_if_unanswered = AgentEvent::Withdrawn;
                }
                self.settle_unanswered(now, key);
                self.bye_leg(now, key);
            }
        }
    }

    /// ACK for a final response: on the INVITE's branch for a failure, a new one for 2xx.
    fn leg_ack(&mut self, key: u64, to_hdr: &str, failure: bool) -> Vec<u8> {
        let Some(leg) = self.legs.get(&key) else { return Vec::new() };
        let host = leg.from.split('@').nth(1).and_then(|h| h.split('>').next()).unwrap_or("").to_string();
        let branch = if failure { leg.branch.clone() } else { format!("z9hG4bK{}", random_token()) };
        let target = if failure { leg.target.clone() } else { leg.remote_target.clone() };
        message::in_dialog_request(&InDialogRequest {
            method: "ACK",
            target: &target,
            via_transport: leg.peer.transport.via_name(),
            via_host: &host,
            branch: &branch,
            from: &leg.from,
            to: to_hdr,
            call_id: &leg.call_id,
            cseq: 1,
            routes: &[],
            user_agent: &self.cfg.sip.user_agent,
            extra: &[],
        })
    }

    /// BYE to the seat; the leg goes when it is answered or times out.
    pub(super) fn bye_leg(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if leg.state == LegState::Ending {
            return;
        }
        leg.state = LegState::Ending;
        leg.local_cseq += 1;
        let host = leg.from.split('@').nth(1).and_then(|h| h.split('>').next()).unwrap_or("").to_string();
        let to = match &leg.remote_tag {
            Some(t) => format!("{};tag={t}", leg.to),
            None => leg.to.clone(),
        };
        let branch = format!("z9hG4bK{}", random_token());
        let bye = message::in_dialog_request(&InDialogRequest {
            method: "BYE",
            target: &leg.remote_target,
            via_transport: leg.peer.transport.via_name(),
            via_host: &host,
            branch: &branch,
            from: &leg.from,
            to: &to,
            call_id: &leg.call_id,
            cseq: leg.local_cseq,
            routes: &[],
            user_agent: &self.cfg.sip.user_agent,
            extra: &[],
        });
        let t = Transmit { peer: leg.peer, bytes: bye.into() };
        let t = self.client_txs.start(now, &branch, key, t);
        self.out.push_back(t);
        self.release_leg_media(key);
        self.leg_call_ended(now, key);
    }

    /// The agent's side of a call that was up: wrap-up, then available again.
    fn leg_call_ended(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get(&key) else { return };
        let (seat, queue) = (leg.seat, leg.queue);
        if self.agents[seat].state() == AgentState::OnCall {
            let talk_s = now.saturating_duration_since(self.agents[seat].since()).as_secs_f64();
            let call_id = self.calls.get(&leg.call).map(|c| c.call_id.clone());
            self.record("talk_end", call_id.as_deref(), Some(seat), Some(queue), serde_json::json!({ "talk_s": talk_s }));
            let wrap_up = self.plan.queues.get(queue.0).map(|q| q.wrap_up).unwrap_or_default();
            let _ = self.agents[seat].handle(now, AgentEvent::CallEnded { wrap_up });
            self.timers.push(now + wrap_up, (HOUSEKEEPING, CallTimer::AgentReady(seat)));
            self.publish_seat(seat, now);
            self.dispatch(now);
        }
    }

    fn release_leg_media(&mut self, key: u64) {
        let Some(leg) = self.legs.get(&key) else { return };
        let stream = leg.stream;
        if let Some(tx) = self.media.tx(stream) {
            self.media_io.unbridge(tx);
        }
        if let Some((tx, _)) = self.media.remove(stream) {
            self.media_io.close(tx);
        }
        let caller = self.calls.get(&leg.call).map(|c| c.stream);
        if let Some(tx) = caller.and_then(|s| self.media.tx(s)) {
            self.media_io.unbridge(tx);
        }
    }

    /// The offer is over without a conversation: the agent is told its outcome, and the
    /// caller, if still waiting, is first in line again (having waited longest). Once only.
    fn settle_unanswered(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if leg.settled {
            return;
        }
        leg.settled = true;
        let (seat, call, queue, outcome) = (leg.seat, leg.call, leg.queue, leg.outcome_if_unanswered.clone());
        let ring_s = now.saturating_duration_since(leg.offered_at).as_secs_f64();
        let call_id = self.calls.get(&call).map(|c| c.call_id.clone());
        let label = format!("{outcome:?}").to_lowercase();
        let _ = self.agents[seat].handle(now, outcome);
        let retry = self.agents[seat].retry_after;
        self.timers.push(now + retry, (HOUSEKEEPING, CallTimer::AgentReady(seat)));
        let after = self.agents[seat].state();
        self.record("offer", call_id.as_deref(), Some(seat), Some(queue), serde_json::json!({ "outcome": label, "ring_s": ring_s, "agent_state_after": after }));
        self.publish_seat(seat, now);
        let back_in_queue = self.calls.get_mut(&call).is_some_and(|c| {
            let ours = c.leg == Some(key);
            if ours {
                c.leg = None;
            }
            ours && !c.bridged && c.queue == Some(queue) && c.state != CallState::Ending
        });
        if back_in_queue {
            self.waiting[queue.0].push_front(call);
        }
    }

    /// An offer ended without an answer: the leg goes.
    pub(super) fn end_leg(&mut self, now: Instant, key: u64, unanswered: bool) {
        if unanswered {
            self.settle_unanswered(now, key);
        }
        self.release_leg_media(key);
        let Some(leg) = self.legs.remove(&key) else { return };
        self.leg_by_branch.remove(&leg.branch);
        if let Some(tag) = &leg.remote_tag {
            self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
        }
        if let Some(c) = self.calls.get_mut(&leg.call) {
            if c.leg == Some(key) {
                c.leg = None;
            }
        }
        self.dispatch(now);
    }

    /// The caller is gone: withdraw the offer or hang up the seat.
    pub(super) fn caller_gone(&mut self, now: Instant, leg_key: u64) {
        let Some(leg) = self.legs.get_mut(&leg_key) else { return };
        match leg.state {
            LegState::Calling | LegState::Proceeding => {
                leg.outcome_if_unanswered = AgentEvent::Withdrawn;
                self.cancel_leg(now, leg_key);
            }
            LegState::Up => self.bye_leg(now, leg_key),
            LegState::Cancelling | LegState::Ending => {}
        }
    }

    /// The seat hung up (BYE on its leg): the caller is hung up too.
    pub(super) fn seat_bye(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get(&key) else { return };
        let call = leg.call;
        info!(seat = %self.registrar.seats()[leg.seat].id, "seat hung up");
        self.release_leg_media(key);
        self.leg_call_ended(now, key);
        if let Some(leg) = self.legs.remove(&key) {
            self.leg_by_branch.remove(&leg.branch);
            if let Some(tag) = &leg.remote_tag {
                self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
            }
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.leg = None;
        }
        self.hangup(now, call);
    }

    /// In-dialog request from a seat leg.
    pub(super) fn leg_dialog(&self, info: &RequestInfo) -> Option<u64> {
        let key = *self.leg_dialogs.get(&(info.call_id.clone(), info.from_tag.clone().unwrap_or_default()))?;
        let leg = self.legs.get(&key)?;
        (info.to_tag.as_deref() == Some(leg.local_tag.as_str())).then_some(key)
    }

    /// The BYE of a leg was answered or timed out: the leg is gone.
    pub(super) fn leg_done(&mut self, key: u64) -> bool {
        let Some(leg) = self.legs.remove(&key) else { return false };
        self.leg_by_branch.remove(&leg.branch);
        if let Some(tag) = &leg.remote_tag {
            self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
        }
        true
    }
}
