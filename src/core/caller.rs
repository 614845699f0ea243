//! A citizen's call (the UAS leg): answered with the dialplan's decision, the IVR, the queue
//! and the seat it talks to, the survey at the end. Everything SIP is the leg's
//! [`InviteSession`]; this is what the call is doing.

use super::*;
use crate::ivr::dialplan::{Decision, Next};
use crate::ivr::engine::{Action, ExitReason, Input, Ivr};
use crate::media::engine::StreamParams;
use crate::metrics::record::{CallEnd, EndCause, QueueExit};
use crate::sdp::{self, LocalMedia, RemoteMedia, SdpError};
use crate::sip::dialog::DialogParams;
use crate::sip::dialog::invite::{EndCause as SessionEnd, Incoming};
use crate::sip::message;
use tracing::{Span, warn};

/// The dialplan's script for the call: waiting for the answer, or running.
pub(super) enum Script {
    /// Decided when the INVITE came; starts once the call is answered (and media is known).
    Pending(Decision),
    Running(Ivr),
}

/// Where the caller is in the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Service {
    /// Prompts and the menu.
    Ivr,
    /// Waiting in `queue` since `entered`; the position and minutes last announced
    /// (announcements never go back).
    Queued {
        queue: QueueId,
        entered: Instant,
        announced: Option<(usize, u64)>,
    },
    /// Talking with the seat of this leg (or being transferred by it).
    Seat(SeatLegId),
    /// With a transfer's target, the agent gone.
    Target,
    /// Asked to rate the call.
    Rating,
    /// The rating is recorded (or none came).
    Rated,
}

/// The seat the caller talked with last, and from which queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Served {
    pub(super) seat: usize,
    pub(super) queue: QueueId,
}

pub(super) struct Caller {
    pub(super) session: InviteSession,
    pub(super) span: Span,
    pub(super) call_id: String,
    /// The caller's number (From user) and the number dialled.
    pub(super) number: String,
    pub(super) dialled: String,
    pub(super) stream: StreamId,
    pub(super) local_media: LocalMedia,
    pub(super) remote_media: Option<RemoteMedia>,
    script: Option<Script>,
    /// The epoch of each IVR timer kind armed last.
    ivr_epochs: HashMap<TimerKind, u32>,
    pub(super) answered_at: Option<Instant>,
    /// When the caller first started waiting (its first queue; kept across overflows).
    pub(super) queued_at: Option<Instant>,
    /// Its seat was lost mid-call: the next queue announcement says so first.
    pub(super) lost_seat: bool,
    pub(super) service: Service,
    pub(super) served: Option<Served>,
    /// The caller's business with us is over (we or it ended the call); the session may
    /// still be finishing.
    gone: bool,
    /// A shed call hearing the busy prompt.
    busy: bool,
    /// What ended the call, once something did.
    end_cause: Option<EndCause>,
    /// The caller asked for confidentiality (保密): seats, logs and the API see no number.
    pub(super) confidential: bool,
    /// 110's incident reference of a call 110 handed over.
    pub(super) incident: Option<String>,
    /// The queue the caller waited in last (a callback step books its place there).
    pub(super) last_queue: Option<QueueId>,
}

impl Caller {
    /// The IVR, once it runs.
    pub(super) fn ivr_mut(&mut self) -> Option<&mut Ivr> {
        match self.script.as_mut() {
            Some(Script::Running(ivr)) => Some(ivr),
            _ => None,
        }
    }

    /// The seat leg the caller talks with.
    pub(super) fn seat_leg(&self) -> Option<SeatLegId> {
        match self.service {
            Service::Seat(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn queue(&self) -> Option<QueueId> {
        match self.service {
            Service::Queued { queue, .. } => Some(queue),
            _ => None,
        }
    }

    /// When the caller entered its present queue.
    pub(super) fn entered(&self) -> Option<Instant> {
        match self.service {
            Service::Queued { entered, .. } => Some(entered),
            _ => None,
        }
    }
}

/// An INVITE's SDP offer (`None` without a body), or the refusal it gets.
pub(super) fn offer_of(req: &Request) -> Result<Option<RemoteMedia>, Refusal> {
    if req.body.is_empty() {
        return Ok(None);
    }
    let ctype = message::header(req, "Content-Type").unwrap_or("");
    if !ctype
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(Refusal::new(415, "Unsupported Media Type").with("Accept", "application/sdp"));
    }
    match sdp::parse(&req.body) {
        Ok(m) => Ok(Some(m)),
        Err(e @ SdpError::Syntax(_)) => {
            Err(Refusal::new(400, "Bad Request").with("Warning", format!("399 hotline \"{e}\"")))
        }
        Err(e) => Err(Refusal::new(488, "Not Acceptable Here")
            .with("Warning", format!("305 hotline \"{e}\""))),
    }
}

impl<M: MediaIo> Core<M> {
    /// The dialogue parameters of a UAS leg for `req` from `peer`, with our new tag.
    pub(super) fn uas_dialog(
        &mut self,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) -> DialogParams {
        let host = self.local_host(peer.addr.ip());
        let user = req.uri.user().unwrap_or("hotline").to_string();
        let transport = peer.transport.uri_param();
        let remote_target = message::header(req, "Contact")
            .map(|c| message::addr_spec(c).to_string())
            .unwrap_or_else(|| req.uri.to_string());
        let route_set = req
            .headers
            .iter()
            .filter_map(|h| match h {
                rsipstack::sip::Header::RecordRoute(r) => Some(r.value().to_string()),
                _ => None,
            })
            .collect();
        DialogParams {
            call_id: info.call_id.clone(),
            local_tag: self.rng.token(),
            local_uri: message::header(req, "To").unwrap_or("").to_string(),
            remote: message::header(req, "From").unwrap_or("").to_string(),
            remote_tag: info.from_tag.clone(),
            remote_target,
            route_set,
            peer,
            contact: format!("<sip:{user}@{host}{transport}>"),
            via_host: host,
            user_agent: self.env.user_agent.clone(),
        }
    }

    /// Our media for a new leg: an RTP port and a stream in `codec`, silent until told.
    pub(super) fn open_media(
        &mut self,
        now: Now,
        leg: Leg,
        peer: IpAddr,
        remote: Option<SocketAddr>,
        (codec, pt): (crate::media::Codec, u8),
    ) -> Option<(StreamId, LocalMedia)> {
        let (tx, port) = self.media.io.open(leg)?;
        let params = StreamParams {
            codec,
            payload_type: pt,
            ssrc: self.rng.u32(),
            first_seq: self.rng.u16(),
            first_ts: self.rng.u32(),
        };
        let stream = self.media.engine.add(now.mono, tx, remote, params);
        self.media.engine.set_sending(stream, false);
        self.media.streams.insert(stream, leg);
        let local_ip = self.local_ip(peer);
        let local = LocalMedia::plain(
            self.env.cfg.rtp.public_ip.unwrap_or(local_ip),
            port,
            u64::from(self.rng.u32()),
        );
        Some((stream, local))
    }

    /// A citizen's call to a number of the dialplan.
    pub(super) fn new_caller(
        &mut self,
        now: Now,
        req: Request,
        info: RequestInfo,
        peer: Peer,
        span: Span,
    ) {
        let decision = match self.env.plan.decide(&info.ruri_user, now.today_shanghai()) {
            None => {
                return self.refuse_invite(now, &req, &info, peer, Refusal::new(404, "Not Found"));
            }
            Some(Decision::Refuse(code, reason)) => {
                return self.refuse_invite(now, &req, &info, peer, Refusal::new(code, reason));
            }
            Some(d) => d,
        };
        let number = message::header(&req, "From")
            .map(message::user_of)
            .unwrap_or("")
            .to_string();
        let (decision, repeat) = self.repeat_treatment(now, &number, decision);
        let call_id = info.call_id.clone();
        if self
            .new_caller_with(now, req, info, peer, span, decision)
            .is_some()
            && let Some(event) = repeat
        {
            self.record(now, event, Some(&call_id), None, None);
        }
    }

    /// A call answered with `decision` (a dialplan's, or a feature code's confirmation).
    pub(super) fn new_caller_with(
        &mut self,
        now: Now,
        req: Request,
        info: RequestInfo,
        peer: Peer,
        span: Span,
        decision: Decision,
    ) -> Option<CallerId> {
        let remote_media = match offer_of(&req) {
            Ok(m) => m,
            Err(r) => {
                self.refuse_invite(now, &req, &info, peer, r);
                return None;
            }
        };
        let keys = match self.new_leg_keys(&req, remote_media.as_ref(), peer) {
            Ok(keys) => keys,
            Err(r) => {
                self.refuse_invite(now, &req, &info, peer, r);
                return None;
            }
        };
        let k = CallerId(self.legs.next_id());
        let codec = remote_media
            .as_ref()
            .map(|m| m.primary())
            .unwrap_or((crate::media::Codec::Pcmu, 0));
        let remote_addr = remote_media.as_ref().and_then(|m| m.addr);
        let Some((stream, mut local_media)) =
            self.open_media(now, Leg::Caller(k), peer.addr.ip(), remote_addr, codec)
        else {
            warn!("no RTP port free");
            let r = Refusal::new(503, "Service Unavailable").with("Retry-After", "5");
            self.refuse_invite(now, &req, &info, peer, r);
            return None;
        };
        let session = keys.apply(&mut local_media);
        if let Some(tx) = self.media.engine.tx(stream) {
            self.media
                .io
                .set_event_pt(tx, remote_media.as_ref().and_then(|m| m.telephone_event));
            self.media.io.media_changed(tx, remote_addr);
            if session.is_some() {
                info!("SRTP keyed");
                self.media.io.set_srtp(tx, session);
            }
        }
        let number = message::header(&req, "From")
            .map(message::user_of)
            .unwrap_or("")
            .to_string();
        let incident = message::header(&req, &self.env.cfg.diversion.incident_header)
            .and_then(super::diversion::incident_reference);
        if let Some(r) = &incident {
            info!(incident = %r, "handed over by 110 (非警务类诉求分流)");
        }
        let dialogue = self.uas_dialog(&req, &info, peer);
        let session = InviteSession::incoming(req, &info, dialogue);
        info!(rtp_port = local_media.port, "new call");
        let event = RecordEvent::CallStart {
            dialled: info.ruri_user.clone(),
            caller: number.clone(),
            source: peer.addr.to_string(),
            transport: peer.transport.via_name().to_string(),
            incident: incident.clone(),
        };
        self.record(now, event, Some(&info.call_id), None, None);
        Stats::inc(&self.env.stats.calls_active);
        self.legs.callers.insert(
            k,
            Caller {
                session,
                span,
                call_id: info.call_id.clone(),
                number,
                dialled: info.ruri_user.clone(),
                stream,
                local_media,
                remote_media,
                script: Some(Script::Pending(decision)),
                ivr_epochs: HashMap::new(),
                answered_at: None,
                queued_at: None,
                lost_seat: false,
                service: Service::Ivr,
                served: None,
                gone: false,
                busy: false,
                end_cause: None,
                confidential: false,
                incident,
                last_queue: None,
            },
        );
        let leg = Leg::Caller(k);
        self.register_session(leg);
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.session.provisional(100, "Trying");
            c.session.provisional(180, "Ringing");
        }
        self.flush(now, leg);
        if self.env.cfg.sip.ring_ms == 0 {
            self.answer_caller(now, k);
        } else {
            let at = now.mono + Duration::from_millis(self.env.cfg.sip.ring_ms);
            self.timers.set(Timer::Answer(k), Some(at));
        }
        Some(k)
    }

    /// A shed call answered with the busy prompt (the lines are busy, call again), then hung
    /// up (`overload.shed = "prompt"`).
    pub(super) fn busy_caller(&mut self, now: Now, req: Request, info: RequestInfo, peer: Peer) {
        let span = tracing::info_span!("call", call_id = %info.call_id, number = %info.ruri_user, from = %peer.addr);
        let _g = span.clone().entered();
        Stats::inc(&self.env.stats.invites);
        if let Err(r) = self.admit(&req, &info, peer) {
            return self.refuse_invite(now, &req, &info, peer, r);
        }
        let prompts = self.media.engine.prompts();
        let Some(p) = prompts.id("overload-busy").or(self.env.plan.sorry) else {
            let r = Refusal::new(503, "Service Unavailable").with("Retry-After", "10");
            return self.refuse_invite(now, &req, &info, peer, r);
        };
        info!("lines busy: the caller hears the busy prompt");
        Stats::inc(&self.env.stats.calls_busy_prompt);
        if let Some(k) =
            self.new_caller_with(now, req, info, peer, span.clone(), Decision::Announce(p))
        {
            if let Some(c) = self.legs.callers.get_mut(&k) {
                c.busy = true;
                self.legs.busy_prompts += 1;
            }
        }
    }

    /// Shed callers hearing the busy prompt now.
    pub(super) fn busy_callers(&self) -> usize {
        self.legs.busy_prompts
    }

    /// 200 OK with our SDP (an answer to the caller's offer, or our offer); the IVR starts
    /// when we know where to send.
    pub(super) fn answer_caller(&mut self, now: Now, k: CallerId) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if !c.session.is_early() {
            return;
        }
        let _g = c.span.clone().entered();
        let body = match &c.remote_media {
            Some(offer) => sdp::answer(&c.local_media, offer),
            None => sdp::offer(&c.local_media),
        };
        c.session.accept(now.mono, body.as_bytes());
        c.answered_at = Some(now.mono);
        let call_id = c.call_id.clone();
        let may_send = c
            .remote_media
            .as_ref()
            .map(|m| (c.stream, m.direction.we_may_send()));
        Stats::inc(&self.env.stats.calls_answered);
        info!("answered");
        self.record(
            now,
            RecordEvent::CallAnswered {},
            Some(&call_id),
            None,
            None,
        );
        self.flush(now, Leg::Caller(k));
        // With an offer we know where to send: the IVR starts now. Without one (delayed
        // offer) it starts when the ACK brings the answer.
        if let Some((stream, may_send)) = may_send {
            self.media.engine.set_sending(stream, may_send);
            self.start_ivr(now, k);
        }
    }

    pub(super) fn caller_event(&mut self, now: Now, k: CallerId, ev: SessionEvent) {
        match ev {
            SessionEvent::Confirmed { sdp } => self.caller_confirmed(now, k, sdp),
            SessionEvent::Ended(cause) => {
                let why = match cause {
                    SessionEnd::Bye => {
                        info!("caller hung up");
                        EndCause::Caller
                    }
                    SessionEnd::Cancel => {
                        Stats::inc(&self.env.stats.cancelled);
                        info!("cancelled before answer");
                        EndCause::Caller
                    }
                    SessionEnd::NoAck => {
                        warn!("no ACK for our 200 OK within 64*T1; hanging up");
                        EndCause::NoAck
                    }
                };
                self.set_end_cause(k, why);
                self.caller_gone(now, k);
            }
            SessionEvent::Terminated { bye_timed_out } => {
                if bye_timed_out {
                    Stats::inc(&self.env.stats.bye_timeouts);
                }
                self.finish_caller(now, k);
            }
            SessionEvent::Ringing { .. }
            | SessionEvent::Answered { .. }
            | SessionEvent::Failed { .. } => {}
        }
    }

    /// The ACK of our 2xx: with SDP it answers the offer our 2xx made (delayed offer).
    fn caller_confirmed(&mut self, now: Now, k: CallerId, sdp: Option<bytes::Bytes>) {
        let Some(c) = self.legs.callers.get(&k) else {
            return;
        };
        let waiting_for_answer = c.remote_media.is_none();
        match sdp.map(|b| sdp::parse(&b)) {
            Some(Ok(m)) => {
                self.apply_caller_media(k, m);
                if matches!(
                    self.legs.callers.get(&k).map(|c| &c.script),
                    Some(Some(Script::Pending(_)))
                ) {
                    self.start_ivr(now, k);
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "ACK carries an unusable SDP answer; hanging up");
                self.end_caller(now, k, None);
            }
            None if waiting_for_answer => {
                warn!("delayed-offer call ACKed without an SDP answer; hanging up");
                self.end_caller(now, k, None);
            }
            None => {}
        }
    }

    /// The caller's SDP (offer or answer) applies to our stream.
    fn apply_caller_media(&mut self, k: CallerId, m: RemoteMedia) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        let (codec, pt) = m.primary();
        let engine = &mut self.media.engine;
        engine.set_codec(c.stream, codec, pt);
        engine.set_remote(c.stream, m.addr);
        // While with a seat (or a transfer's target) the caller hears the relay or the mix,
        // never our stream.
        let ours = matches!(
            c.service,
            Service::Ivr | Service::Queued { .. } | Service::Rating | Service::Rated
        ) && !self.transfers.contains_key(&k);
        engine.set_sending(
            c.stream,
            m.direction.we_may_send() && m.addr.is_some() && ours,
        );
        if let Some(tx) = engine.tx(c.stream) {
            self.media.io.set_event_pt(tx, m.telephone_event);
            self.media.io.media_changed(tx, m.addr);
        }
        c.remote_media = Some(m);
    }

    /// A request in the caller's dialog that the session left to us.
    pub(super) fn caller_request(
        &mut self,
        now: Now,
        k: CallerId,
        incoming: Incoming,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        match (incoming, info.method) {
            (Incoming::Reinvite, _) => {
                let Ok(offer) = self.reoffer(Leg::Caller(k), req, info, peer, None) else {
                    return;
                };
                info!(
                    hold = offer
                        .as_ref()
                        .map(|o| !o.direction.we_may_send() || o.addr.is_none()),
                    "re-INVITE"
                );
                if let Some(m) = offer.clone() {
                    self.apply_caller_media(k, m);
                }
                let Some(c) = self.legs.callers.get_mut(&k) else {
                    return;
                };
                c.local_media.version += 1;
                let body = match &offer {
                    Some(o) => sdp::answer(&c.local_media, o),
                    None => sdp::offer(&c.local_media),
                };
                c.session.answer(now.mono, req, info, peer, body.as_bytes());
            }
            (_, Method::Info) => {
                let digit = dtmf_relay(req);
                self.respond_in(
                    Leg::Caller(k),
                    req,
                    info,
                    peer,
                    &ResponseSpec::new(200, "OK"),
                );
                if let Some(d) = digit {
                    self.handle_rtp_event(now, RtpEvent::Digit(Leg::Caller(k), d));
                }
            }
            (_, Method::Update) => {
                // Only a media change without SDP is trivial; with SDP, answer like re-INVITE.
                if req.body.is_empty() {
                    return self.respond_in(
                        Leg::Caller(k),
                        req,
                        info,
                        peer,
                        &ResponseSpec::new(200, "OK"),
                    );
                }
                match sdp::parse(&req.body)
                    .map_err(|e| e.to_string())
                    .and_then(|m| self.rekey(Leg::Caller(k), &m, peer, false).map(|()| m))
                {
                    Ok(m) => {
                        self.apply_caller_media(k, m.clone());
                        let Some(c) = self.legs.callers.get_mut(&k) else {
                            return;
                        };
                        c.local_media.version += 1;
                        let body = sdp::answer(&c.local_media, &m);
                        c.session.answer(now.mono, req, info, peer, body.as_bytes());
                    }
                    Err(e) => {
                        let w = format!("305 hotline \"{e}\"");
                        let hdrs = [("Warning", w.as_str())];
                        let spec = ResponseSpec {
                            headers: &hdrs,
                            ..ResponseSpec::new(488, "Not Acceptable Here")
                        };
                        self.respond_in(Leg::Caller(k), req, info, peer, &spec);
                    }
                }
            }
            (_, Method::Options) => self.respond_in(
                Leg::Caller(k),
                req,
                info,
                peer,
                &ResponseSpec::new(200, "OK"),
            ),
            (_, Method::Refer) => {
                // Only an agent's leg may transfer; a caller never can.
                let hdrs = [(
                    "Warning",
                    "399 hotline \"only an agent can transfer a call\"",
                )];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(403, "Forbidden")
                };
                self.respond_in(Leg::Caller(k), req, info, peer, &spec);
            }
            _ => {
                let hdrs = [("Allow", ALLOW)];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(405, "Method Not Allowed")
                };
                self.respond_in(Leg::Caller(k), req, info, peer, &spec);
            }
        }
    }

    /// A response of a leg's session to a request in its dialog.
    pub(super) fn respond_in(
        &mut self,
        leg: Leg,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        spec: &ResponseSpec,
    ) {
        if let Some(s) = self.legs.session_mut(leg) {
            s.respond(req, info, peer, spec);
        }
    }

    /// The SDP of a re-INVITE (`None` without a body), kept to `codec` when one is given (a
    /// bridge relays packets as they are, so a bridged leg keeps the call's codec). Anything
    /// unusable is answered 488 with a Warning saying why, and `Err` returned.
    pub(super) fn reoffer(
        &mut self,
        leg: Leg,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        codec: Option<crate::media::Codec>,
    ) -> Result<Option<RemoteMedia>, ()> {
        if req.body.is_empty() {
            return Ok(None);
        }
        // A browser's re-offer (hold, resume) is WebRTC like its first answer.
        let parsed = if peer.transport.is_browser() {
            sdp::parse_webrtc(&req.body)
        } else {
            sdp::parse(&req.body)
        };
        let why = match parsed {
            Ok(mut m) => match codec {
                Some(c) if !m.codecs.iter().any(|x| x.0 == c) => {
                    "the call's codec must stay the same".to_string()
                }
                _ => match self.rekey(leg, &m, peer, false) {
                    Ok(()) => {
                        if let Some(c) = codec {
                            m.codecs.retain(|x| x.0 == c);
                        }
                        return Ok(Some(m));
                    }
                    Err(why) => why,
                },
            },
            Err(e) => e.to_string(),
        };
        let w = format!("305 hotline \"{why}\"");
        let hdrs = [("Warning", w.as_str())];
        let spec = ResponseSpec {
            headers: &hdrs,
            ..ResponseSpec::new(488, "Not Acceptable Here")
        };
        self.respond_in(leg, req, info, peer, &spec);
        Err(())
    }

    /// A digit the caller keyed (RFC 4733 or SIP INFO).
    pub(super) fn caller_digit(&mut self, now: Now, k: CallerId, d: char) {
        let Some(c) = self.legs.callers.get(&k) else {
            return;
        };
        let _g = c.span.clone().entered();
        info!(digit = %d, "DTMF");
        self.ivr_input(now, k, Input::Digit(d));
    }

    fn start_ivr(&mut self, now: Now, k: CallerId) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        let (first, next) = match c.script.take() {
            Some(Script::Pending(Decision::Run { first, next })) => (first, next),
            Some(Script::Pending(Decision::Announce(p))) => (vec![p], Next::Hangup),
            other => {
                c.script = other;
                return;
            }
        };
        c.script = Some(Script::Running(Ivr::new(
            self.env.plan.clone(),
            first,
            next,
        )));
        self.ivr_input(now, k, Input::Start);
    }

    pub(super) fn ivr_timer(&mut self, now: Now, k: CallerId, kind: TimerKind) {
        let Some(epoch) = self
            .legs
            .callers
            .get(&k)
            .and_then(|c| c.ivr_epochs.get(&kind).copied())
        else {
            return;
        };
        self.ivr_input(now, k, Input::Timer(kind, epoch));
    }

    pub(super) fn ivr_input(&mut self, now: Now, k: CallerId, input: Input) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if c.gone {
            return;
        }
        let Some(Script::Running(ivr)) = c.script.as_mut() else {
            return;
        };
        let _g = c.span.clone().entered();
        let actions = ivr.handle(input);
        let stream = c.stream;
        for action in actions {
            match action {
                Action::Play { prompts, loop_last } => {
                    debug!(?prompts, loop_last, "play");
                    self.media.engine.play(stream, &prompts, loop_last);
                }
                Action::Timer { after, kind, epoch } => {
                    if let Some(c) = self.legs.callers.get_mut(&k) {
                        c.ivr_epochs.insert(kind, epoch);
                    }
                    self.timers.set(Timer::Ivr(k, kind), Some(now.mono + after));
                }
                Action::Enqueue { queue, priority } => self.enqueue(now, k, queue, priority),
                Action::Announce(q) => self.announce(now, k, q),
                Action::SurveyResult(rating) => self.survey_result(now, k, rating, None),
                Action::Retained(r) => self.pass_to_retained(now, k, r),
                Action::Callback(q) => self.request_callback(now, k, q),
                Action::Confidential => self.make_confidential(now, k),
                Action::Dequeue(reason) => {
                    let reason = match reason {
                        ExitReason::Timeout => QueueExit::Timeout,
                        ExitReason::NoAgents => QueueExit::NoAgents,
                    };
                    self.dequeue(now, k, reason);
                    // Seats still ringing for this caller stop: its wait here is over.
                    self.withdraw_offers(now, crate::acd::Waiting::Caller(k.0));
                }
                Action::Hangup => {
                    info!("IVR hangs up");
                    self.end_caller(now, k, None);
                    return;
                }
            }
        }
    }

    /// The seat hung up a bridged call of a queue with a survey: the caller is asked to rate
    /// it (true), instead of being hung up.
    pub(super) fn ask_survey(&mut self, now: Now, k: CallerId) -> bool {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return false;
        };
        let survey = c
            .served
            .and_then(|s| self.env.plan.queues.get(s.queue.0))
            .is_some_and(|q| q.survey);
        if !survey || !c.session.is_confirmed() || self.env.plan.survey.is_none() {
            return false;
        }
        c.service = Service::Rating;
        self.media.engine.set_sending(c.stream, true);
        self.ivr_input(now, k, Input::Survey);
        true
    }

    /// Records the caller's rating of the call with the seat and queue it was about, once.
    fn survey_result(&mut self, now: Now, k: CallerId, rating: Option<u8>, why: Option<&str>) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if c.service != Service::Rating {
            return;
        }
        c.service = Service::Rated;
        let (call_id, served) = (c.call_id.clone(), c.served);
        let label = match rating {
            Some(1) => "satisfied",
            Some(2) => "basically_satisfied",
            Some(3) => "dissatisfied",
            _ => why.unwrap_or("no_answer"),
        };
        info!(call_id = %call_id, ?rating, label, "satisfaction survey");
        let event = RecordEvent::Survey {
            rating,
            label: label.to_string(),
            matter: None, // the call itself
            unit: None,   // the seat's
        };
        self.record(
            now,
            event,
            Some(&call_id),
            served.map(|s| s.seat),
            served.map(|s| s.queue),
        );
    }

    /// What ended the call, unless something already did.
    pub(super) fn set_end_cause(&mut self, k: CallerId, why: EndCause) {
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.end_cause.get_or_insert(why);
        }
    }

    /// We end the caller's call: everything it holds goes now; the session sends the final
    /// response (`code`, 480 by default) or BYE.
    pub(super) fn end_caller(&mut self, now: Now, k: CallerId, code: Option<(u16, &str)>) {
        self.set_end_cause(k, EndCause::Hotline);
        self.caller_gone(now, k);
        if let Some(c) = self.legs.callers.get_mut(&k) {
            let (code, reason) = code.unwrap_or((480, "Temporarily Unavailable"));
            c.session.end_with(now.mono, code, reason, &mut self.rng);
        }
        self.flush(now, Leg::Caller(k));
    }

    /// The caller's business with us is over, whoever ended it: its transfer, its place in
    /// line, the seats ringing for it or talking with it, its survey and its media. Once.
    fn caller_gone(&mut self, now: Now, k: CallerId) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if std::mem::replace(&mut c.gone, true) {
            return;
        }
        let stream = c.stream;
        self.transfer_caller_gone(now, k);
        self.survey_result(now, k, None, Some("caller_hung_up"));
        self.dequeue(now, k, QueueExit::Abandoned);
        self.withdraw_offers(now, crate::acd::Waiting::Caller(k.0));
        if let Some(leg) = self.legs.callers.get(&k).and_then(|c| c.seat_leg()) {
            self.caller_left_seat(now, leg);
        }
        for t in [
            TimerKind::MenuTimeout,
            TimerKind::HoldPrompt,
            TimerKind::MaxWait,
        ] {
            self.timers.cancel(&Timer::Ivr(k, t));
        }
        self.timers.cancel(&Timer::Answer(k));
        // Media stops now; the call record waits for the session's end.
        self.media.unbridge(stream);
        if let Some(tx) = self.media.engine.tx(stream) {
            self.media.io.stop_recording(tx);
        }
        self.media.release(stream, &self.env.stats);
    }

    /// The daemon stops with this call still up (its BYE unanswered): it is closed now, its
    /// record written with the cause `shutdown`.
    pub(super) fn close_caller(&mut self, now: Now, k: CallerId) {
        self.set_end_cause(k, EndCause::Shutdown);
        if let Some(c) = self.legs.callers.get_mut(&k) {
            c.end_cause = Some(EndCause::Shutdown);
        }
        self.finish_caller(now, k);
    }

    /// The caller's session is over: the call leaves, and its record is written.
    fn finish_caller(&mut self, now: Now, k: CallerId) {
        self.caller_gone(now, k);
        self.forget(Leg::Caller(k));
        let Some(c) = self.legs.callers.remove(&k) else {
            return;
        };
        if c.busy {
            self.legs.busy_prompts = self.legs.busy_prompts.saturating_sub(1);
        }
        self.env
            .stats
            .calls_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Stats::inc(&self.env.stats.calls_ended);
        let digits = match &c.script {
            Some(Script::Running(ivr)) => ivr.digits.clone(),
            _ => String::new(),
        };
        {
            let _g = c.span.enter();
            info!(digits, "call ended");
        }
        let event = RecordEvent::CallEnd(CallEnd {
            answered: c.answered_at.is_some(),
            duration_s: c.answered_at.map(|t| now.since(t).as_secs_f64()),
            waited_s: c.queued_at.map(|t| now.since(t).as_secs_f64()),
            bridged: c.served.is_some(),
            digits,
            cause: c.end_cause,
        });
        self.record(now, event, Some(&c.call_id), c.served.map(|s| s.seat), None);
    }
}

/// The digit of a SIP INFO `application/dtmf-relay` body (`Signal=5`), for phones that don't
/// send RFC 4733.
pub(super) fn dtmf_relay(req: &Request) -> Option<char> {
    let ctype = message::header(req, "Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ctype.contains("dtmf") {
        return None;
    }
    let body = String::from_utf8_lossy(&req.body);
    let digit = body.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("signal")
            .then(|| v.trim().chars().next())?
    });
    digit.filter(|d| crate::media::dtmf::char_event(*d).is_some())
}
