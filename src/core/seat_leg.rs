//! The ACD's side of call control: callers waiting in queues, offering a call to a seat (the
//! outgoing INVITE, its retransmissions, ring timeout and CANCEL), and the bridge once the
//! seat answers (RTP relayed both ways, hang-up on either side ends both legs).
//!
//! Offers follow longest-idle among available, registered, reachable agents of the queue.

use super::*;
use crate::acd::queue::{Candidate, Entry};
use crate::ivr::dialplan::QueueId;
use rsipstack::sip::prelude::HeadersExt as _;

/// Average handle time assumed for the expected-wait announcement until the queue has one.
const DEFAULT_AHT_S: f64 = 180.0;

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
    pub(super) stream: StreamId,
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
    local_media: LocalMedia,
    /// Our Contact in this dialog (with its transport).
    contact: String,
    /// The seat put the caller on hold (re-INVITE): the caller hears hold music.
    on_hold: bool,
    /// CSeq of the seat's last in-dialog request.
    remote_cseq: u32,
    /// Our 2xx to the seat's re-INVITE, retransmitted until its ACK.
    pub(super) ok: Option<crate::sip::pending_ok::PendingOk>,
    /// DTMF keyed by the agent during the call (a transfer code being entered), and when the
    /// last digit came.
    pub(super) digits: String,
    pub(super) digits_at: Option<Instant>,
    /// An offer of a transfer to an expert group (not of a waiting caller).
    consult: bool,
    /// An answered consultation the expert is on: its end is the expert's end of the call.
    talking: bool,
    /// The seat's own consultation call about this leg's caller (attended transfer): it
    /// ends when the caller's call with the seat does.
    pub(super) consultation: Option<u64>,
}

impl<M: MediaIo> Core<M> {
    /// The caller `key` waits in queue `q` from now on.
    pub(super) fn enqueue(&mut self, now: Instant, key: u64, q: QueueId, priority: u8) {
        let bonus = self.caller_priority(key);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.queue == Some(q) {
            return;
        }
        call.queue = Some(q);
        call.queue_entered_at = Some(now);
        call.announced = None;
        let since = *call.queued_at.get_or_insert(now);
        let priority = priority.max(bonus);
        let call_id = call.call_id.clone();
        if let Some(line) = self.lines.get_mut(q.0) {
            line.push(Entry {
                key,
                priority,
                since,
            });
        }
        let bound = self
            .plan
            .queues
            .get(q.0)
            .map(|x| x.max_overtaken)
            .unwrap_or_default();
        let position = self
            .lines
            .get(q.0)
            .and_then(|l| l.position(key, now, bound));
        self.record(
            "queue_enter",
            Some(&call_id),
            None,
            Some(q),
            serde_json::json!({ "priority": priority, "position": position }),
        );
        self.dispatch(now);
        // Checked from the timer queue, not here: this runs inside the IVR's own actions, and
        // sending the caller on now would let the rest of those actions (the hold announcement)
        // play over wherever it was sent.
        self.timers
            .push(now, (HOUSEKEEPING, CallTimer::NoAgents(q.0)));
    }

    /// Queue priority from the caller's number (`acd.priority_callers`).
    fn caller_priority(&self, key: u64) -> u8 {
        let Some(call) = self.calls.get(&key) else {
            return 0;
        };
        let from = call
            .invite
            .from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string));
        from.and_then(|u| self.cfg.acd.priority_callers.get(&u).copied())
            .unwrap_or(0)
    }

    /// The caller leaves its queue (`reason`: answered, abandoned, timeout, no_agents; a
    /// caller hung up because the daemon stops is `shutdown`, not an abandon).
    pub(super) fn dequeue(&mut self, now: Instant, key: u64, reason: &str) {
        let reason = if reason == "abandoned" && self.shutting_down {
            "shutdown"
        } else {
            reason
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(q) = call.queue.take() else { return };
        let waited = call
            .queue_entered_at
            .take()
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        let call_id = call.call_id.clone();
        let bound = self
            .plan
            .queues
            .get(q.0)
            .map(|x| x.max_overtaken)
            .unwrap_or_default();
        let position = self
            .lines
            .get(q.0)
            .and_then(|l| l.position(key, now, bound));
        if let Some(line) = self.lines.get_mut(q.0) {
            line.remove(key);
        }
        let short = reason == "abandoned"
            && self
                .plan
                .queues
                .get(q.0)
                .is_some_and(|queue| waited < queue.short_abandon);
        let detail = serde_json::json!({ "reason": reason, "waited_s": waited.as_secs_f64(), "short": short, "position": position });
        self.record("queue_exit", Some(&call_id), None, Some(q), detail);
    }

    /// Callers of queue `q` are sent on when no member is logged in and the queue says so.
    pub(super) fn check_no_agents(&mut self, now: Instant, q: QueueId) {
        if self
            .plan
            .queues
            .get(q.0)
            .is_none_or(|queue| queue.when_no_agents.is_none())
        {
            return;
        }
        let staffed = self.members[q.0]
            .iter()
            .any(|&(i, _)| self.agents[i].state() != AgentState::LoggedOut);
        if staffed {
            return;
        }
        let keys: Vec<u64> = self.lines[q.0].entries().iter().map(|e| e.key).collect();
        for key in keys {
            if let Some(c) = self.calls.get(&key) {
                let _g = c.span.clone().entered();
                info!(queue = %self.plan.queues[q.0].name, "no seat of the queue is logged in; the caller is sent on");
            }
            self.ivr_input(now, key, Input::NoAgents);
        }
    }

    /// Plays the queue's hold prompt with the caller's position and expected wait, then hold
    /// music. Neither figure ever goes up between announcements (a priority caller may
    /// overtake, but the caller is not told it moved back).
    pub(super) fn announce(&mut self, now: Instant, key: u64, q: QueueId) {
        let Some(queue) = self.plan.queues.get(q.0) else {
            return;
        };
        let mut prompts = vec![queue.hold_prompt];
        let position = self.lines[q.0].position(key, now, queue.max_overtaken);
        let staffed = self.members[q.0]
            .iter()
            .filter(|&&(i, _)| {
                !matches!(
                    self.agents[i].state(),
                    AgentState::LoggedOut | AgentState::Paused
                )
            })
            .count();
        let aht = self
            .figures
            .queues
            .get(&queue.name)
            .map(|f| f.aht_s)
            .filter(|&a| a > 0.0)
            .unwrap_or(DEFAULT_AHT_S);
        let (announce_position, announce_wait, hold_music) = (
            queue.announce_position,
            queue.announce_wait,
            queue.hold_music,
        );
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(position) = position {
            // Expected wait: the callers ahead (and this one) served by the seats at work,
            // each taking the queue's average handle time.
            let minutes = ((position as f64 * aht) / (staffed.max(1) as f64) / 60.0)
                .ceil()
                .max(1.0) as u64;
            let (position, minutes) = match call.announced {
                Some((p, m)) => (position.min(p), minutes.min(m)),
                None => (position, minutes),
            };
            call.announced = Some((position, minutes));
            if announce_position {
                prompts.extend(self.queue_prompts.position(position));
            }
            if announce_wait && staffed > 0 {
                prompts.extend(self.queue_prompts.wait(minutes));
            }
        }
        prompts.push(hold_music);
        let stream = call.stream;
        debug!(?position, "queue announcement");
        self.media.play(stream, &prompts, true);
    }

    /// Offers waiting callers to free seats: callers in serving order across all queues
    /// (priority within the overtaking bound, then the longest wait), each to the seat(s) its
    /// queue's strategy picks among the free members its wait has widened to.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if !self.agents.iter().any(|a| a.ready(now)) {
            return;
        }
        // Transfers to expert groups first: each holds a caller and an agent.
        let mut consults: Vec<(Instant, u64, QueueId, usize)> = self
            .transfers
            .iter()
            .filter_map(|(&call, t)| {
                t.wants_expert()
                    .map(|(q, since)| (since, call, q, t.by_seat()))
            })
            .collect();
        consults.sort_unstable_by_key(|&(since, call, _, _)| (since, call));
        for (since, call, q, by) in consults {
            // Never back to the agent who is transferring (if it hung up and is free again).
            let waited = now.saturating_duration_since(since);
            let seats = self.pick_seats(now, q.0, waited, Some(by));
            for seat in seats {
                if !self.offer(now, call, seat, q, true) {
                    return;
                }
            }
            if !self.agents.iter().any(|a| a.ready(now)) {
                return;
            }
        }
        let mut line: Vec<(usize, Entry)> = Vec::new();
        for (q, l) in self.lines.iter().enumerate() {
            for e in l.entries() {
                // Callers already being offered wait for that offer's outcome.
                if self.calls.get(&e.key).is_some_and(|c| c.legs.is_empty()) {
                    line.push((q, *e));
                }
            }
        }
        line.sort_by_key(|(q, e)| {
            crate::acd::queue::serving_key(e, now, self.plan.queues[*q].max_overtaken)
        });
        for (q, e) in line {
            let waited = now.saturating_duration_since(
                self.calls
                    .get(&e.key)
                    .and_then(|c| c.queue_entered_at)
                    .unwrap_or(now),
            );
            for seat in self.pick_seats(now, q, waited, None) {
                if !self.offer(now, e.key, seat, QueueId(q), false) {
                    return; // no port or no contact now; the next dispatch tries again
                }
            }
            if !self.agents.iter().any(|a| a.ready(now)) {
                return;
            }
        }
    }

    /// The free seats of queue `q` (but `except`) to offer a call that has waited `waited`, by
    /// the queue's strategy among the members its wait has widened to.
    fn pick_seats(
        &mut self,
        now: Instant,
        q: usize,
        waited: Duration,
        except: Option<usize>,
    ) -> Vec<usize> {
        let queue = &self.plan.queues[q];
        let max_penalty = crate::acd::queue::max_penalty(waited, queue.widen_every);
        let candidates: Vec<Candidate> = self.members[q]
            .iter()
            .filter(|&&(i, p)| {
                p <= max_penalty
                    && Some(i) != except
                    && self.agents[i].ready(now)
                    && self.registrar.contacts(i, now).any(|b| b.reachable)
            })
            .map(|&(i, penalty)| Candidate {
                seat: i,
                penalty,
                idle_since: self.agents[i].since(),
                calls_taken: self.taken.get(&(q, i)).copied().unwrap_or(0),
            })
            .collect();
        let seats = crate::acd::queue::choose(queue.strategy, &candidates, self.rr_last[q]);
        if let Some(&first) = seats.first() {
            self.rr_last[q] = Some(first);
        }
        seats
    }

    /// Offers call `key` to `seat` (`consult`: the call's transfer to an expert group); false
    /// (caller back at the head of the queue) if it can't.
    fn offer(
        &mut self,
        now: Instant,
        key: u64,
        seat: usize,
        queue: QueueId,
        consult: bool,
    ) -> bool {
        let Some(binding) = self
            .registrar
            .contacts(seat, now)
            .find(|b| b.reachable)
            .cloned()
        else {
            return false;
        };
        let local_ip = self.local_ip(binding.peer.addr.ip());
        let Some(call) = self.calls.get(&key) else {
            return true;
        };
        let _g = call.span.clone().entered();
        let (codec, caller_pt) = call
            .remote_media
            .as_ref()
            .map(|m| m.primary())
            .unwrap_or((crate::media::Codec::Pcmu, 0));
        let leg_key = self.next_key;
        let Some((tx, port)) = self.media_io.open(leg_key) else {
            warn!("no RTP port free for the seat leg; the caller keeps waiting");
            return false;
        };
        self.next_key += 1;
        let mut rng = rand::rng();
        let params = StreamParams::random(codec, caller_pt);
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
            .filter(|u| {
                !u.is_empty()
                    && u.len() <= 32
                    && u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+*#.-_".contains(&b))
            })
            .unwrap_or_else(|| "anonymous".into());
        let dialled = call.invite.uri.user().unwrap_or("").to_string();
        let local_tag = random_token();
        let from = format!("\"{caller}\" <sip:{caller}@{host}>;tag={local_tag}");
        let to = format!("<sip:{}@{host}>", seat_cfg.user);
        let call_id = format!("{}@hotline", random_token());
        let branch = format!("z9hG4bK{}", random_token());
        let local = LocalMedia {
            ip: self.cfg.rtp.public_ip.unwrap_or(local_ip),
            port,
            session_id: rng.random::<u32>() as u64,
            version: 1,
        };
        let sdp = sdp::offer_codec(&local, codec, caller_pt);
        let local = local.clone();
        let queue_name = self.plan.queues[queue.0].name.clone();
        let transport = if binding.peer.transport.reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        let contact = format!("<sip:hotline@{host}{transport}>");
        // An expert's phone shows who is transferring the caller to it.
        let by = self
            .transfers
            .get(&key)
            .filter(|_| consult)
            .map(|t| self.registrar.seats()[t.by_seat()].id.clone());
        let mut extra = vec![
            ("Contact", contact.as_str()),
            ("X-Hotline-Queue", queue_name.as_str()),
            ("X-Hotline-Dialled", dialled.as_str()),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ];
        if let Some(by) = &by {
            extra.push(("X-Hotline-Transfer-By", by.as_str()));
        }
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
        info!(seat = %seat_cfg.id, contact = %binding.uri, queue = %queue_name, consult, "offering the call to a seat");
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
                local_media: local,
                contact: contact.clone(),
                on_hold: false,
                remote_cseq: 0,
                ok: None,
                digits: String::new(),
                digits_at: None,
                consult,
                talking: false,
                consultation: None,
            },
        );
        self.leg_by_branch.insert(branch, leg_key);
        if !reliable {
            self.timers
                .push(now + T1, (leg_key, CallTimer::LegRetransmit));
        }
        self.timers
            .push(now + ring_timeout, (leg_key, CallTimer::LegRingTimeout));
        if consult {
            self.consult_offered(key, leg_key);
        } else if let Some(call) = self.calls.get_mut(&key) {
            call.legs.push(leg_key);
        }
        self.out.push_back(Transmit {
            peer: binding.peer,
            bytes: invite,
        });
        self.publish_seat(seat, now);
        true
    }

    pub(super) fn leg_timer(&mut self, now: Instant, key: u64, at: Instant, timer: CallTimer) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        match timer {
            // Timer A: retransmit the INVITE until anything is heard; timer B is the ring
            // timeout here, which is far shorter than 64*T1.
            CallTimer::LegRetransmit
                if leg.retransmit_at == Some(at)
                    && (leg.state == LegState::Calling || leg.cancel_pending) =>
            {
                self.out.push_back(Transmit {
                    peer: leg.peer,
                    bytes: leg.invite.clone(),
                });
                leg.retransmit_interval *= 2;
                let next = now + leg.retransmit_interval;
                leg.retransmit_at = Some(next);
                self.timers.push(next, (key, CallTimer::LegRetransmit));
            }
            CallTimer::LegRingTimeout
                if leg.ring_deadline == at
                    && matches!(leg.state, LegState::Calling | LegState::Proceeding) =>
            {
                info!(seat = %self.registrar.seats()[leg.seat].id, "seat did not answer in time");
                leg.outcome_if_unanswered = AgentEvent::Missed;
                self.cancel_leg(now, key);
            }
            // No 487 after our CANCEL within 64*T1: the phone is gone; so is the offer.
            CallTimer::LegRingTimeout
                if leg.ring_deadline == at && leg.state == LegState::Cancelling =>
            {
                self.end_leg(now, key, true);
            }
            _ => {}
        }
    }

    /// CANCEL an unanswered offer. Before any 1xx the CANCEL must wait for one (RFC 3261
    /// §9.1); either way the leg ends at the latest 64*T1 from now.
    fn cancel_leg(&mut self, now: Instant, key: u64) {
        // The offer is over now for the agent and the caller, whatever the phone does next
        // (a phone that never answered at all would otherwise hold both for 64*T1).
        self.settle_unanswered(now, key);
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
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
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        leg.cancel_pending = false;
        leg.retransmit_at = None;
        let host = leg
            .from
            .split('@')
            .nth(1)
            .and_then(|h| h.split('>').next())
            .unwrap_or("")
            .to_string();
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
        let t = Transmit {
            peer: leg.peer,
            bytes: cancel.into(),
        };
        let branch = leg.branch.clone();
        // The CANCEL's own transaction; its outcome needs no handling (the INVITE's 487 does).
        let t = self.client_txs.start(now, &branch, CANCEL_OWNER, t);
        self.out.push_back(t);
    }

    /// A response to one of our seat INVITEs.
    pub(super) fn leg_response(&mut self, now: Instant, key: u64, resp: &rsipstack::sip::Response) {
        use rsipstack::sip::prelude::*;
        let code = resp.status_code.code();
        let to_hdr = resp
            .to_header()
            .map(|t| t.value().to_string())
            .unwrap_or_default();
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if leg.remote_tag.is_none() {
            leg.remote_tag = to_hdr
                .split(";tag=")
                .nth(1)
                .map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
        }
        if code < 200 {
            if leg.state == LegState::Calling {
                leg.state = LegState::Proceeding;
                leg.retransmit_at = None;
                if leg.consult && (180..190).contains(&code) {
                    let call = leg.call;
                    self.consult_ringing(now, call);
                }
            } else if leg.cancel_pending {
                self.send_cancel(now, key);
            }
            return;
        }
        if (200..300).contains(&code) {
            // The dialog's tag is the 2xx's (a 1xx may come from another fork).
            if let Some(tag) = to_hdr
                .split(";tag=")
                .nth(1)
                .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            {
                leg.remote_tag = Some(tag);
            }
        }
        if code >= 300 {
            // ACK the failure on the INVITE's branch (RFC 3261 §17.1.1.3).
            let ack = self.leg_ack(key, &to_hdr, true);
            let Some(leg) = self.legs.get_mut(&key) else {
                return;
            };
            self.out.push_back(Transmit {
                peer: leg.peer,
                bytes: ack.into(),
            });
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
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        self.out.push_back(Transmit {
            peer: leg.peer,
            bytes: ack.into(),
        });
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
        let (call_key, seat, stream, consult) = (leg.call, leg.seat, leg.stream, leg.consult);
        let lost = if consult {
            !self
                .transfers
                .get(&call_key)
                .is_some_and(|t| t.offered(key))
        } else {
            self.calls.get(&call_key).is_some_and(|c| c.bridged)
        };
        if lost {
            // Ring-all: another seat answered first; this one is thanked and hung up.
            if let Some(leg) = self.legs.get_mut(&key) {
                leg.outcome_if_unanswered = AgentEvent::AnsweredElsewhere;
            }
            self.settle_unanswered(now, key);
            return self.bye_leg(now, key);
        }
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
                if consult {
                    return self.expert_answered(now, call_key, key);
                }
                self.media.set_sending(caller_stream, false);
                if let (Some(a), Some(b)) = (self.media.tx(caller_stream), self.media.tx(stream)) {
                    self.media_io.bridge(a, b);
                }
                self.start_recording(call_key, key);
                let _ = self.agents[seat].handle(now, AgentEvent::Answered);
                let ring_s = self
                    .legs
                    .get(&key)
                    .map(|l| now.saturating_duration_since(l.offered_at).as_secs_f64());
                let queue = self.legs.get(&key).map(|l| l.queue);
                let call_id = self.calls.get(&call_key).map(|c| c.call_id.clone());
                self.record(
                    "offer",
                    call_id.as_deref(),
                    Some(seat),
                    queue,
                    serde_json::json!({ "outcome": "answered", "ring_s": ring_s }),
                );
                if let Some(q) = queue {
                    *self.taken.entry((q.0, seat)).or_default() += 1;
                }
                self.dequeue(now, call_key, "answered");
                // Ring-all: the other seats stop ringing.
                let others: Vec<u64> = self
                    .calls
                    .get(&call_key)
                    .map(|c| c.legs.iter().copied().filter(|&l| l != key).collect())
                    .unwrap_or_default();
                for other in others {
                    self.offer_lost(now, other);
                }
                if let Some(call) = self.calls.get_mut(&call_key) {
                    let _g = call.span.clone().entered();
                    info!(seat = %seat_id, "seat answered; caller and seat bridged");
                    call.bridged = true;
                    call.bridged_leg = Some(key);
                    call.bridged_seat = Some(seat);
                    call.bridged_queue = queue;
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

    /// An expert answered a transfer's offer (its media is set up): the expert is on the
    /// call, and the transfer goes on to the three-way call.
    fn expert_answered(&mut self, now: Instant, call_key: u64, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        leg.talking = true;
        let (seat, queue, ring_s) = (
            leg.seat,
            leg.queue,
            now.saturating_duration_since(leg.offered_at).as_secs_f64(),
        );
        let _ = self.agents[seat].handle(now, AgentEvent::Answered);
        let call_id = self.calls.get(&call_key).map(|c| c.call_id.clone());
        self.record(
            "offer",
            call_id.as_deref(),
            Some(seat),
            Some(queue),
            serde_json::json!({ "outcome": "answered", "ring_s": ring_s, "transfer": true }),
        );
        *self.taken.entry((queue.0, seat)).or_default() += 1;
        info!(seat = %self.registrar.seats()[seat].id, "an expert answered the transfer");
        self.publish_seat(seat, now);
        self.consult_answered(now, call_key, key);
    }

    /// Another seat answered first: this offer stops ringing, and the agent is told so.
    pub(super) fn offer_lost(&mut self, now: Instant, key: u64) {
        if let Some(l) = self.legs.get_mut(&key) {
            l.outcome_if_unanswered = AgentEvent::AnsweredElsewhere;
        }
        self.caller_gone_quietly(now, key);
    }

    /// Queues with `record = true`: the bridge is recorded to
    /// `<acd.recordings>/<day>/<time>-<seat>-<call id>.wav`, and the path goes in the store.
    fn start_recording(&mut self, call_key: u64, leg_key: u64) {
        let Some(leg) = self.legs.get(&leg_key) else {
            return;
        };
        if !self.plan.queues.get(leg.queue.0).is_some_and(|q| q.record) {
            return;
        }
        let (seat, queue, stream) = (leg.seat, leg.queue, leg.stream);
        let Some(call) = self.calls.get(&call_key) else {
            return;
        };
        let local = self.clock.now_utc().with_timezone(&crate::time::shanghai());
        // Call-IDs come from the network: only safe characters reach the file name.
        let cid: String = call
            .call_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let seat_id = self.registrar.seats()[seat].id.clone();
        let path = self
            .cfg
            .acd
            .recordings
            .join(local.format("%Y-%m-%d").to_string())
            .join(format!("{}-{seat_id}-{cid}.wav", local.format("%H%M%S")));
        let codec = self
            .media
            .codec(stream)
            .unwrap_or(crate::media::Codec::Pcmu);
        if let (Some(a), Some(b)) = (self.media.tx(call.stream), self.media.tx(stream)) {
            self.media_io.record(a, b, codec, path.clone());
        }
        let call_id = call.call_id.clone();
        self.record(
            "recording",
            Some(&call_id),
            Some(seat),
            Some(queue),
            serde_json::json!({ "path": path.display().to_string() }),
        );
    }

    /// ACK for a final response: on the INVITE's branch for a failure, a new one for 2xx.
    fn leg_ack(&mut self, key: u64, to_hdr: &str, failure: bool) -> Vec<u8> {
        let Some(leg) = self.legs.get(&key) else {
            return Vec::new();
        };
        let host = leg
            .from
            .split('@')
            .nth(1)
            .and_then(|h| h.split('>').next())
            .unwrap_or("")
            .to_string();
        let branch = if failure {
            leg.branch.clone()
        } else {
            format!("z9hG4bK{}", random_token())
        };
        let target = if failure {
            leg.target.clone()
        } else {
            leg.remote_target.clone()
        };
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

    /// A request of ours in the seat's dialog (NOTIFY, while the call is up); its outcome
    /// needs no handling.
    pub(super) fn leg_request(
        &mut self,
        now: Instant,
        key: u64,
        method: &str,
        hdrs: &[(&str, &str)],
        body: &[u8],
    ) {
        if self.legs.get(&key).is_some_and(|l| l.state == LegState::Up) {
            self.send_in_leg(now, key, method, hdrs, body, CANCEL_OWNER);
        }
    }

    /// Sends `method` in the leg's dialog (next CSeq, the seat's tag and target) through a
    /// client transaction owned by `owner`.
    fn send_in_leg(
        &mut self,
        now: Instant,
        key: u64,
        method: &str,
        hdrs: &[(&str, &str)],
        body: &[u8],
        owner: u64,
    ) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        leg.local_cseq += 1;
        let host = leg
            .from
            .split('@')
            .nth(1)
            .and_then(|h| h.split('>').next())
            .unwrap_or("")
            .to_string();
        let to = match &leg.remote_tag {
            Some(t) => format!("{};tag={t}", leg.to),
            None => leg.to.clone(),
        };
        let branch = format!("z9hG4bK{}", random_token());
        // Contact is not used in a BYE (RFC 3261 table 3); a NOTIFY carries it.
        let mut extra = if method == "BYE" {
            vec![]
        } else {
            vec![("Contact", leg.contact.as_str())]
        };
        extra.extend_from_slice(hdrs);
        let bytes = message::request_with_body(
            &InDialogRequest {
                method,
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
                extra: &extra,
            },
            body,
        );
        let t = Transmit {
            peer: leg.peer,
            bytes: bytes.into(),
        };
        let t = self.client_txs.start(now, &branch, owner, t);
        self.out.push_back(t);
    }

    /// BYE to the seat; the leg goes when it is answered or times out.
    pub(super) fn bye_leg(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if leg.state == LegState::Ending {
            return;
        }
        leg.state = LegState::Ending;
        self.send_in_leg(now, key, "BYE", &[], &[], key);
        self.release_leg_media(key);
        self.leg_call_ended(now, key, "caller");
    }

    /// Whether leg `key` is the one its caller is bridged to (ring-all: not a losing seat,
    /// whose late answer or CANCEL must leave the winner's bridge alone).
    fn is_bridged_leg(&self, key: u64) -> bool {
        self.legs
            .get(&key)
            .and_then(|l| self.calls.get(&l.call))
            .is_some_and(|c| c.bridged_leg == Some(key))
    }

    /// The agent's side of a call that was up: wrap-up, then available again. `ended_by`:
    /// "seat" when the seat hung up, "caller" otherwise.
    pub(super) fn leg_call_ended(&mut self, now: Instant, key: u64, ended_by: &str) {
        let expert = self
            .legs
            .get_mut(&key)
            .is_some_and(|l| std::mem::take(&mut l.talking));
        if !expert && !self.is_bridged_leg(key) {
            return;
        }
        // A consultation about a caller who is gone has nothing left to transfer (and would
        // keep the seat busy while the ACD thinks it free).
        if let Some(k) = self.legs.get_mut(&key).and_then(|l| l.consultation.take())
            && self.calls.get(&k).is_some_and(|c| c.consult.is_some())
        {
            self.hangup(now, k);
        }
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let (seat, queue) = (leg.seat, leg.queue);
        if self.agents[seat].state() == AgentState::OnCall {
            let talk_s = now
                .saturating_duration_since(self.agents[seat].since())
                .as_secs_f64();
            let call_id = self.calls.get(&leg.call).map(|c| c.call_id.clone());
            let wrap_up = self
                .plan
                .queues
                .get(queue.0)
                .map(|q| q.wrap_up)
                .unwrap_or_default();
            self.record("talk_end", call_id.as_deref(), Some(seat), Some(queue), serde_json::json!({ "talk_s": talk_s, "wrap_s": wrap_up.as_secs_f64(), "ended_by": ended_by }));
            let _ = self.agents[seat].handle(now, AgentEvent::CallEnded { wrap_up });
            self.timers
                .push(now + wrap_up, (HOUSEKEEPING, CallTimer::AgentReady(seat)));
            self.publish_seat(seat, now);
            self.dispatch(now);
        }
    }

    fn release_leg_media(&mut self, key: u64) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let stream = leg.stream;
        if let Some(tx) = self.media.tx(stream) {
            self.media_io.unbridge(tx);
        }
        let call = leg.call;
        // A transfer keeps the caller (and its recording) going without this seat.
        let ours = self.is_bridged_leg(key) && !self.transfers.contains_key(&call);
        if let Some((tx, _)) = self.media.remove(stream) {
            self.media_io.close(tx);
        }
        let caller = self.calls.get(&call).map(|c| c.stream);
        if let (true, Some(tx)) = (ours, caller.and_then(|s| self.media.tx(s))) {
            self.media_io.unbridge(tx);
            self.media_io.stop_recording(tx);
        }
    }

    /// The offer is over without a conversation: the agent is told its outcome, and the
    /// caller, if still waiting, is first in line again (having waited longest). Once only.
    fn settle_unanswered(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if leg.settled {
            return;
        }
        leg.settled = true;
        let (seat, call, queue, outcome) = (
            leg.seat,
            leg.call,
            leg.queue,
            leg.outcome_if_unanswered.clone(),
        );
        let ring_s = now.saturating_duration_since(leg.offered_at).as_secs_f64();
        let call_id = self.calls.get(&call).map(|c| c.call_id.clone());
        let label = outcome.label();
        let _ = self.agents[seat].handle(now, outcome);
        let retry = self.agents[seat].retry_after;
        self.timers
            .push(now + retry, (HOUSEKEEPING, CallTimer::AgentReady(seat)));
        let after = self.agents[seat].state();
        self.record(
            "offer",
            call_id.as_deref(),
            Some(seat),
            Some(queue),
            serde_json::json!({ "outcome": label, "ring_s": ring_s, "agent_state_after": after }),
        );
        self.publish_seat(seat, now);
        // The caller never left its line while offered: with its last offer gone it is
        // first in line again (having waited longest) at the next dispatch. So is a transfer
        // to an expert group.
        if let Some(c) = self.calls.get_mut(&call) {
            c.legs.retain(|&l| l != key);
        }
        self.consult_offer_over(call, key);
    }

    /// An offer ended without an answer: the leg goes.
    pub(super) fn end_leg(&mut self, now: Instant, key: u64, unanswered: bool) {
        if unanswered {
            self.settle_unanswered(now, key);
        }
        self.release_leg_media(key);
        let Some(leg) = self.legs.remove(&key) else {
            return;
        };
        self.leg_by_branch.remove(&leg.branch);
        if let Some(tag) = &leg.remote_tag {
            self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
        }
        if let Some(c) = self.calls.get_mut(&leg.call) {
            c.legs.retain(|&l| l != key);
        }
        self.dispatch(now);
    }

    /// The caller is gone: withdraw the offer or hang up the seat.
    pub(super) fn caller_gone(&mut self, now: Instant, leg_key: u64) {
        if let Some(leg) = self.legs.get_mut(&leg_key) {
            leg.outcome_if_unanswered = AgentEvent::Withdrawn;
        }
        self.caller_gone_quietly(now, leg_key);
    }

    /// Ends the leg without changing the outcome the agent will be told.
    fn caller_gone_quietly(&mut self, now: Instant, leg_key: u64) {
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return;
        };
        match leg.state {
            LegState::Calling | LegState::Proceeding => self.cancel_leg(now, leg_key),
            LegState::Up => self.bye_leg(now, leg_key),
            LegState::Cancelling | LegState::Ending => {}
        }
    }

    /// The seat hung up (BYE on its leg): the caller is hung up too.
    pub(super) fn seat_bye(&mut self, now: Instant, key: u64) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let call = leg.call;
        info!(seat = %self.registrar.seats()[leg.seat].id, "seat hung up");
        // A leg a transfer already took off the call (blind transfer: our BYE and the phone's
        // own BYE cross) is only torn down; the caller's call goes on without it.
        let member = self.calls.get(&call).is_some_and(|c| c.legs.contains(&key));
        self.release_leg_media(key);
        self.leg_call_ended(now, key, "seat");
        if let Some(leg) = self.legs.remove(&key) {
            self.leg_by_branch.remove(&leg.branch);
            if let Some(tag) = &leg.remote_tag {
                self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
            }
        }
        if !member {
            // Or it is the expert of a transfer leaving the three-way call.
            self.transfer_expert_left(now, call, key);
            return;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.legs.retain(|&l| l != key);
        }
        if self.transfer_agent_left(now, call, key) {
            return;
        }
        // Queues with a survey ask the caller to rate the call instead of hanging up.
        let survey = self
            .calls
            .get(&call)
            .and_then(|c| c.bridged_queue)
            .and_then(|q| self.plan.queues.get(q.0))
            .is_some_and(|q| q.survey);
        let stream = self
            .calls
            .get(&call)
            .filter(|c| c.state == CallState::Confirmed)
            .map(|c| c.stream);
        if let (true, Some(stream), Some(_)) = (survey, stream, self.plan.survey) {
            if let Some(c) = self.calls.get_mut(&call) {
                c.survey_asked = true;
            }
            self.media.set_sending(stream, true);
            return self.ivr_input(now, call, Input::Survey);
        }
        self.hangup(now, call);
    }

    /// A seat's registrations changed (un-REGISTER, expiry, unreachable): an offer ringing a
    /// contact it no longer has is withdrawn and counted as failed; the caller is first in
    /// line again at once.
    pub(super) fn seat_contacts_changed(&mut self, now: Instant, seat: usize) {
        let live: Vec<String> = self
            .registrar
            .contacts(seat, now)
            .filter(|b| b.reachable)
            .map(|b| b.uri.clone())
            .collect();
        let gone: Vec<u64> = self
            .legs
            .iter()
            .filter(|(_, l)| {
                l.seat == seat
                    && matches!(l.state, LegState::Calling | LegState::Proceeding)
                    && !live.contains(&l.target)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            info!(seat = %self.registrar.seats()[seat].id, "the seat's phone went away while it rang; offer withdrawn");
            if let Some(leg) = self.legs.get_mut(&key) {
                leg.outcome_if_unanswered = AgentEvent::Failed;
            }
            self.cancel_leg(now, key);
        }
        self.dispatch(now);
    }

    /// A re-INVITE from the seat: hold (sendonly/inactive or no address) plays hold music to
    /// the caller; resume bridges them again; a new address is followed.
    pub(super) fn leg_reinvite(
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
        if leg.state != LegState::Up {
            let spec = ResponseSpec::new(491, "Request Pending");
            return self.respond(now, req, info, peer, &spec);
        }
        if info.cseq <= leg.remote_cseq {
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec::new(500, "Server Internal Error"),
            );
        }
        let codec = self.media.codec(leg.stream);
        let Ok(offer) = self.reoffer(now, req, info, peer, codec) else {
            return;
        };
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        leg.remote_cseq = info.cseq;
        if let Some(c) = message::header(req, "Contact") {
            leg.remote_target = message::addr_spec(c).to_string();
        }
        leg.local_media.version += 1;
        let (stream, call_key, seat) = (leg.stream, leg.call, leg.seat);
        let hold = offer
            .as_ref()
            .is_some_and(|o| !o.direction.we_may_send() || o.addr.is_none());
        let was_on_hold = std::mem::replace(&mut leg.on_hold, hold);
        let body = match &offer {
            Some(o) => sdp::answer(&leg.local_media, o),
            None => sdp::offer_codec(
                &leg.local_media,
                self.media
                    .codec(stream)
                    .unwrap_or(crate::media::Codec::Pcmu),
                self.media.payload_type(stream).unwrap_or(0),
            ),
        };
        if let (Some(tx), Some(addr)) = (self.media.tx(stream), offer.as_ref().and_then(|m| m.addr))
        {
            self.media_io.media_changed(tx, Some(addr));
            self.media.set_remote(stream, Some(addr));
        }
        let caller = self.calls.get(&call_key).map(|c| c.stream);
        let hold_music = self
            .calls
            .get(&call_key)
            .and_then(|c| c.bridged_queue)
            .and_then(|q| self.plan.queues.get(q.0))
            .map(|q| q.hold_music);
        info!(seat = %self.registrar.seats()[seat].id, hold, "re-INVITE from the seat");
        // Hold moves the caller only for the seat it is bridged to, and not during a transfer
        // (which has the caller's media: hold music, or the three-way call).
        let caller =
            caller.filter(|_| self.is_bridged_leg(key) && !self.transfers.contains_key(&call_key));
        if let Some(caller) = caller {
            match (hold, was_on_hold) {
                (true, false) => {
                    if let (Some(a), Some(b)) = (self.media.tx(caller), self.media.tx(stream)) {
                        self.media_io.unbridge(a);
                        self.media_io.unbridge(b);
                    }
                    self.media.set_sending(caller, true);
                    self.media
                        .play(caller, &hold_music.into_iter().collect::<Vec<_>>(), true);
                }
                (false, true) => {
                    self.media.set_sending(caller, false);
                    if let (Some(a), Some(b)) = (self.media.tx(caller), self.media.tx(stream)) {
                        self.media_io.bridge(a, b);
                    }
                }
                _ => {}
            }
        }
        let contact = self
            .legs
            .get(&key)
            .map(|l| l.contact.clone())
            .unwrap_or_default();
        let local_tag = self
            .legs
            .get(&key)
            .map(|l| l.local_tag.clone())
            .unwrap_or_default();
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let spec = ResponseSpec {
            to_tag: Some(&local_tag),
            headers: &hdrs,
            body: Some(("application/sdp", body.as_bytes())),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = message::response(req, peer.addr, &self.cfg.sip.user_agent, &spec);
        let t =
            self.server_txs
                .respond(now, &info.branch, Method::Invite, 200, bytes.clone(), peer);
        self.out.push_back(t);
        self.arm_ok(now, key, Bytes::from(bytes), info.cseq);
    }

    /// The ACK for our 2xx to the seat's re-INVITE.
    pub(super) fn seat_acked(&mut self, key: u64, cseq: u32) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if leg.ok.as_ref().is_some_and(|ok| ok.acked_by(cseq)) {
            leg.ok = None;
        }
    }

    /// In-dialog request from a seat leg.
    pub(super) fn leg_dialog(&self, info: &RequestInfo) -> Option<u64> {
        let key = *self.leg_dialogs.get(&(
            info.call_id.clone(),
            info.from_tag.clone().unwrap_or_default(),
        ))?;
        let leg = self.legs.get(&key)?;
        (info.to_tag.as_deref() == Some(leg.local_tag.as_str())).then_some(key)
    }

    /// The BYE of a leg was answered or timed out: the leg is gone.
    pub(super) fn leg_done(&mut self, key: u64) -> bool {
        let Some(leg) = self.legs.remove(&key) else {
            return false;
        };
        self.leg_by_branch.remove(&leg.branch);
        if let Some(tag) = &leg.remote_tag {
            self.leg_dialogs.remove(&(leg.call_id.clone(), tag.clone()));
        }
        true
    }
}
