//! A seat's consultation call (咨询呼叫), the first half of an attended transfer: the agent
//! puts the caller on hold, dials a transfer target from the softphone (an INVITE to us,
//! digest-authenticated like a feature code), and we call the target over its trunk and
//! bridge the two. The agent then completes the transfer with REFER and Replaces naming this
//! dialog (`transfer.rs`), or hangs up and resumes the caller.
//!
//! It is a UAS leg of its own: not a citizen's call, so it never reaches the IVR, the records
//! or the figures.

use super::caller::offer_of;
use super::trunk::{DialError, Purpose};
use super::*;
use crate::config::TargetKind;
use crate::sdp::{self, LocalMedia};
use crate::sip::dialog::invite::{EndCause, Incoming};
use tracing::{Span, warn};

pub(super) struct Consultation {
    pub(super) session: InviteSession,
    pub(super) span: Span,
    pub(super) seat: usize,
    pub(super) target: usize,
    /// The caller's codec: the consultation keeps it, since the target's call is handed to
    /// the caller as it is (no transcoding in a bridge).
    codec: crate::media::Codec,
    pub(super) stream: StreamId,
    pub(super) local_media: LocalMedia,
    remote_media: Option<crate::sdp::RemoteMedia>,
    /// The target's call over its trunk, while there is one.
    pub(super) trunk: Option<TrunkId>,
    pub(super) answered_at: Option<Instant>,
}

impl<M: MediaIo> Core<M> {
    /// The transfer target dialled, if `number` is one reached over a trunk: only a seat may
    /// call it (to consult it), so whoever sends the INVITE is challenged; the answer does
    /// not tell seat names from others (as the registrar's does not).
    ///
    /// A number the dialplan routes (a retained-seat line: 12369 is both the line citizens
    /// dial and the target agents transfer to) is a citizen's call: the dialplan wins, and
    /// agents reach that target by a keyed code or the API, not by consulting it.
    pub(super) fn consultation_target(&self, number: &str) -> Option<usize> {
        if self.env.plan.route(number).is_some() {
            return None;
        }
        let target = self.env.cfg.target(number)?;
        (self.env.cfg.targets[target].kind != TargetKind::Expert).then_some(target)
    }

    /// A seat's INVITE to a transfer target: authenticated, with a caller to consult about,
    /// in that caller's codec; the target is dialled at once.
    pub(super) fn new_consultation(
        &mut self,
        now: Now,
        req: Request,
        info: RequestInfo,
        peer: Peer,
        target: usize,
        span: Span,
    ) {
        let seat = match self.authenticate_seat(now, &req, peer) {
            Ok(i) => i,
            Err(r) => return self.refuse_invite(now, &req, &info, peer, r),
        };
        let Some(k) = self
            .seat_leg_of(seat)
            .and_then(|l| self.legs.seats.get(&l))
            .map(|l| l.caller())
        else {
            let r = Refusal::new(403, "Forbidden").with(
                "Warning",
                "399 hotline \"a seat calls a target only to consult it about its caller\"",
            );
            return self.refuse_invite(now, &req, &info, peer, r);
        };
        let (codec, _) = self
            .legs
            .callers
            .get(&k)
            .map(|c| self.media.codec(c.stream))
            .unwrap_or((crate::media::Codec::Pcmu, 0));
        // Two ports: the consultation's own and its target's call.
        if !self.room_for(target, 2) {
            let r = Refusal::new(503, "Service Unavailable").with("Retry-After", "5");
            return self.refuse_invite(now, &req, &info, peer, r);
        }
        // A consultation speaks the caller's codec, offered or not.
        let offer = match offer_of(&req) {
            Ok(Some(mut m)) if m.codecs.iter().any(|x| x.0 == codec) => {
                m.codecs.retain(|x| x.0 == codec);
                m
            }
            Ok(_) => {
                let r = Refusal::new(488, "Not Acceptable Here").with(
                    "Warning",
                    "305 hotline \"a consultation must offer the caller's codec\"",
                );
                return self.refuse_invite(now, &req, &info, peer, r);
            }
            Err(r) => return self.refuse_invite(now, &req, &info, peer, r),
        };
        let keys = match self.new_leg_keys(&req, Some(&offer), peer) {
            Ok(keys) => keys,
            Err(r) => return self.refuse_invite(now, &req, &info, peer, r),
        };
        let c = ConsultationId(self.legs.next_id());
        let Some((stream, mut local_media)) = self.open_media(
            now,
            Leg::Consultation(c),
            peer.addr.ip(),
            offer.addr,
            offer.primary(),
        ) else {
            warn!("no RTP port free");
            let r = Refusal::new(503, "Service Unavailable").with("Retry-After", "5");
            return self.refuse_invite(now, &req, &info, peer, r);
        };
        let session = keys.apply(&mut local_media);
        if let Some(tx) = self.media.engine.tx(stream) {
            self.media.io.set_event_pt(tx, offer.telephone_event);
            self.media.io.media_changed(tx, offer.addr);
            if session.is_some() {
                self.media.io.set_srtp(tx, session);
            }
        }
        let dialogue = self.uas_dialog(&req, &info, peer);
        let session = InviteSession::incoming(req, &info, dialogue);
        info!(rtp_port = local_media.port, "new consultation call");
        self.legs.consultations.insert(
            c,
            Consultation {
                session,
                span,
                seat,
                target,
                codec,
                stream,
                local_media,
                remote_media: Some(offer),
                trunk: None,
                answered_at: None,
            },
        );
        self.register_session(Leg::Consultation(c));
        if let Some(x) = self.legs.consultations.get_mut(&c) {
            x.session.provisional(100, "Trying");
            x.session.provisional(180, "Ringing");
        }
        self.flush(now, Leg::Consultation(c));
        self.dial_consultation(now, c, k);
    }

    /// Dials the consultation's target, presenting the number of the caller the seat is about
    /// to transfer (the target sees who it will get).
    fn dial_consultation(&mut self, now: Now, c: ConsultationId, k: CallerId) {
        let Some(x) = self.legs.consultations.get(&c) else {
            return;
        };
        let (seat, target, stream) = (x.seat, x.target, x.stream);
        let (caller, caller_call_id) = self
            .legs
            .callers
            .get(&k)
            .map(|c| (c.number.clone(), c.call_id.clone()))
            .unwrap_or_default();
        let codec = self.media.codec(stream);
        let seat_id = self.registrar.seats()[seat].id.clone();
        let t = &self.env.cfg.targets[target];
        let (timeout, name) = (Duration::from_secs(t.timeout_s), t.name.clone());
        let extra = [
            ("X-Hotline-Transfer-By", seat_id.as_str()),
            ("X-Hotline-Call", caller_call_id.as_str()),
        ];
        if t.kind == TargetKind::Emergency {
            // The audit of an emergency centre reached with a citizen's number.
            let masked = crate::metrics::queue_log::mask_number(&caller);
            warn!(seat = %seat_id, caller = %masked, target = %name, "EMERGENCY CONSULTATION started");
        } else {
            info!(seat = %seat_id, target = %name, "seat consults a transfer target");
        }
        match self.dial_target(
            now,
            target,
            &caller,
            Purpose::Consultation(c),
            timeout,
            codec,
            &extra,
        ) {
            Ok(trunk) => {
                if let Some(x) = self.legs.consultations.get_mut(&c) {
                    x.trunk = Some(trunk);
                }
                if let Some(talk) = self
                    .seat_leg_of(seat)
                    .and_then(|l| self.legs.seats.get_mut(&l))
                    .and_then(|l| l.talk())
                {
                    talk.consultation = Some(c);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot dial the target for a consultation");
                let code = match e {
                    DialError::NoPort => (503, "Service Unavailable"),
                    DialError::NoTrunk(_) => (502, "Bad Gateway"),
                    DialError::LinkDown(_) => (503, "Service Unavailable"),
                    DialError::Keys(_) => (500, "Server Internal Error"),
                };
                self.end_consultation(now, c, Some(code));
            }
        }
    }

    /// The target's call of a consultation was answered (`Ok`) or not: the seat's phone is
    /// answered and bridged to it, or refused.
    pub(super) fn consultation_outcome(
        &mut self,
        now: Now,
        c: ConsultationId,
        trunk: TrunkId,
        outcome: Result<(), u16>,
    ) {
        let Some(x) = self.legs.consultations.get_mut(&c) else {
            // The seat gave up (CANCEL or BYE) meanwhile.
            return self.end_trunk(now, trunk);
        };
        match outcome {
            Ok(()) => {
                let body = match &x.remote_media {
                    Some(o) => sdp::answer(&x.local_media, o),
                    None => sdp::offer_codec(&x.local_media, x.codec, 0),
                };
                x.session.accept(now.mono, body.as_bytes());
                x.answered_at = Some(now.mono);
                let cs = x.stream;
                self.flush(now, Leg::Consultation(c));
                if let Some(ts) = self.legs.trunks.get(&trunk).map(|t| t.stream) {
                    self.media.engine.set_sending(cs, false);
                    self.media.bridge(cs, ts);
                }
            }
            Err(code) => {
                x.trunk = None;
                let code = match code {
                    486 | 600 | 603 => (486, "Busy Here"),
                    _ => (480, "Temporarily Unavailable"),
                };
                self.end_consultation(now, c, Some(code));
            }
        }
    }

    /// The target hung up the consultation: so do we.
    pub(super) fn consultation_target_left(&mut self, now: Now, c: ConsultationId) {
        if let Some(x) = self.legs.consultations.get_mut(&c) {
            x.trunk = None;
        }
        self.end_consultation(now, c, None);
    }

    /// We end the consultation (and its target's call, if it still has one).
    pub(super) fn end_consultation(
        &mut self,
        now: Now,
        c: ConsultationId,
        code: Option<(u16, &str)>,
    ) {
        self.consultation_gone(now, c);
        if let Some(x) = self.legs.consultations.get_mut(&c) {
            let (code, reason) = code.unwrap_or((480, "Temporarily Unavailable"));
            x.session.end_with(now.mono, code, reason, &mut self.rng);
        }
        self.flush(now, Leg::Consultation(c));
    }

    /// The consultation is over for the seat: its target's call ends with it; its media goes.
    fn consultation_gone(&mut self, now: Now, c: ConsultationId) {
        let Some(x) = self.legs.consultations.get_mut(&c) else {
            return;
        };
        let (trunk, stream) = (x.trunk.take(), x.stream);
        if let Some(t) = trunk {
            self.end_trunk(now, t);
        }
        if self.media.engine.tx(stream).is_some() {
            self.media.unbridge(stream);
            self.media.release(stream, &self.env.stats);
        }
    }

    pub(super) fn consultation_event(&mut self, now: Now, c: ConsultationId, ev: SessionEvent) {
        match ev {
            SessionEvent::Ended(cause) => {
                if cause == EndCause::NoAck {
                    warn!("no ACK for our 200 OK within 64*T1; hanging up");
                }
                self.consultation_gone(now, c);
            }
            SessionEvent::Terminated { .. } => {
                self.consultation_gone(now, c);
                self.forget(Leg::Consultation(c));
                if let Some(x) = self.legs.consultations.remove(&c) {
                    let _g = x.span.enter();
                    info!("consultation call ended");
                }
            }
            SessionEvent::Confirmed { .. }
            | SessionEvent::Ringing { .. }
            | SessionEvent::Answered { .. }
            | SessionEvent::Failed { .. } => {}
        }
    }

    /// A request in the consultation's dialog that the session left to us.
    pub(super) fn consultation_request(
        &mut self,
        now: Now,
        c: ConsultationId,
        incoming: Incoming,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        let leg = Leg::Consultation(c);
        let Some(codec) = self.legs.consultations.get(&c).map(|x| x.codec) else {
            return;
        };
        match (incoming, info.method) {
            (Incoming::Reinvite, _) => {
                // The consultation keeps the caller's codec (its target's call goes to the
                // caller).
                let Ok(offer) = self.reoffer(leg, req, info, peer, Some(codec)) else {
                    return;
                };
                let Some(x) = self.legs.consultations.get_mut(&c) else {
                    return;
                };
                if let Some(m) = &offer {
                    self.media.engine.set_remote(x.stream, m.addr);
                    if let Some(tx) = self.media.engine.tx(x.stream) {
                        self.media.io.media_changed(tx, m.addr);
                    }
                    x.remote_media = Some(m.clone());
                }
                x.local_media.version += 1;
                let body = match &offer {
                    Some(o) => sdp::answer(&x.local_media, o),
                    None => sdp::offer_codec(&x.local_media, x.codec, 0),
                };
                x.session.answer(now.mono, req, info, peer, body.as_bytes());
            }
            (_, Method::Options | Method::Info | Method::Update) if req.body.is_empty() => {
                self.respond_in(leg, req, info, peer, &ResponseSpec::new(200, "OK"))
            }
            _ => {
                let hdrs = [("Warning", "399 hotline \"not supported on consultations\"")];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(488, "Not Acceptable Here")
                };
                self.respond_in(leg, req, info, peer, &spec);
            }
        }
    }
}
