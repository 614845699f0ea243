//! Calls the daemon places over a trunk (UAC legs): to a transfer target (sub-centre,
//! retained-seat line, emergency centre), to a unit's line as an answer-rate probe, or to the
//! target of a seat's consultation. The INVITE, its retransmission, ring timeout, CANCEL,
//! digest challenge and BYE are the session's; this gives it an RTP port, answers the far
//! end's session refreshes, and tells the owner (transfer, probe, consultation) what happened.

use super::*;
use crate::sdp::{self, LocalMedia};
use crate::sip::dialog::DialogParams;
use crate::sip::dialog::invite::{Incoming, UacParams};
use tracing::warn;

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A transfer or hand-off of this caller.
    Transfer(CallerId),
    /// Attempt `attempt` (from 1) of probe round `round`.
    Probe { round: u64, attempt: u32 },
    /// The target of a seat's consultation.
    Consultation(ConsultationId),
    /// The citizen of a callback (回拨), the seat already on the line.
    Callback(u64),
    /// The citizen of a revisit case (回访).
    Revisit(u64),
}

pub(super) struct TrunkCall {
    pub(super) session: InviteSession,
    pub(super) purpose: Purpose,
    pub(super) stream: StreamId,
    pub(super) started: Instant,
    /// Our media as offered; its SDP version goes up only when what we answer changes.
    pub(super) local: LocalMedia,
    last_sdp: String,
}

/// Why a trunk call could not be placed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("no RTP port free")]
    NoPort,
    #[error("target {0} has no trunk")]
    NoTrunk(String),
    #[error("the link to trunk {0} is down")]
    LinkDown(String),
    #[error("no SRTP keys: {0}")]
    Keys(String),
}

impl<M: MediaIo> Core<M> {
    /// Calls target `target` presenting `caller` as the calling number; media in `codec`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dial_target(
        &mut self,
        now: Now,
        target: usize,
        caller: &str,
        purpose: Purpose,
        ring_timeout: Duration,
        codec: (crate::media::Codec, u8),
        extra: &[(&str, &str)],
    ) -> Result<TrunkId, DialError> {
        let t = &self.env.cfg.targets[target];
        let Some(trunk_name) = t.trunk.clone() else {
            return Err(DialError::NoTrunk(t.number.clone()));
        };
        let number = t.number.clone();
        self.dial(
            now,
            &trunk_name,
            &number,
            caller,
            purpose,
            ring_timeout,
            codec,
            extra,
        )
    }

    /// Calls `number` over trunk `trunk_name` presenting `caller`; media in `codec`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dial(
        &mut self,
        now: Now,
        trunk_name: &str,
        number: &str,
        caller: &str,
        purpose: Purpose,
        ring_timeout: Duration,
        codec: (crate::media::Codec, u8),
        extra: &[(&str, &str)],
    ) -> Result<TrunkId, DialError> {
        let Some(trunk) = self.env.cfg.trunks.get(trunk_name) else {
            return Err(DialError::NoTrunk(number.to_string()));
        };
        let (gateway, number) = (trunk.address, number.to_string());
        let credentials = trunk.username.clone().zip(trunk.password.clone());
        let trunk_name = trunk_name.to_string();
        let transport = self
            .env
            .cfg
            .trunk_transport(&trunk_name)
            .unwrap_or(crate::sip::Transport::Udp);
        if let Some(c) = transport.connection()
            && !self.links_up.contains(&c)
        {
            return Err(DialError::LinkDown(trunk_name));
        }
        let srtp = trunk.srtp;
        let id = TrunkId(self.legs.next_id());
        let Some((stream, mut local)) =
            self.open_media(now, Leg::Trunk(id), gateway.ip(), None, codec)
        else {
            return Err(DialError::NoPort);
        };
        if srtp != crate::config::SrtpMode::Off {
            if let Err(why) = super::srtp::offer_keys(&mut local) {
                self.media.release(stream, &self.env.stats);
                return Err(DialError::Keys(why));
            }
            local.best_effort = srtp == crate::config::SrtpMode::Optional;
        }
        let sdp = sdp::offer_codec(&local, codec.0, codec.1);
        let host = self.local_host(gateway.ip());
        let host_for_uri = match gateway {
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => a.to_string(),
        };
        let caller = presentable(caller).to_string();
        let target_uri = format!("sip:{number}@{host_for_uri}");
        let peer = Peer {
            transport,
            addr: gateway,
        };
        let dialog = DialogParams {
            call_id: format!("{}@hotline", self.rng.token()),
            local_tag: self.rng.token(),
            local_uri: format!("<sip:{caller}@{host}>"),
            remote: format!("<{target_uri}>"),
            remote_tag: None,
            remote_target: target_uri.clone(),
            route_set: vec![],
            peer,
            contact: format!("<sip:hotline@{host}{}>", transport.uri_param()),
            via_host: host,
            user_agent: self.env.user_agent.clone(),
        };
        let session = InviteSession::outgoing(
            now.mono,
            UacParams {
                dialog,
                target: target_uri,
                extra,
                sdp: sdp.as_bytes(),
                ring_timeout,
                credentials,
            },
            &mut self.rng,
        );
        self.legs.trunks.insert(
            id,
            TrunkCall {
                session,
                purpose,
                stream,
                started: now.mono,
                local,
                last_sdp: sdp,
            },
        );
        self.register_session(Leg::Trunk(id));
        self.flush(now, Leg::Trunk(id));
        Ok(id)
    }

    pub(super) fn trunk_event(&mut self, now: Now, id: TrunkId, ev: SessionEvent) {
        let Some(t) = self.legs.trunks.get(&id) else {
            return;
        };
        let purpose = t.purpose;
        match ev {
            SessionEvent::Answered { sdp: body } => {
                match sdp::parse(&body).map_err(|e| e.to_string()).and_then(|m| {
                    let t = self.legs.trunks.get_mut(&id).ok_or("gone")?;
                    super::srtp::accept_answer_keys(&mut t.local, &m).map(|s| (m, s))
                }) {
                    Ok((m, session)) => {
                        if session.is_some() {
                            self.key_leg(Leg::Trunk(id), session);
                        }
                        let Some(stream) = self.legs.trunks.get(&id).map(|t| t.stream) else {
                            return;
                        };
                        if let Some(tx) = self.media.engine.tx(stream) {
                            self.media.io.media_changed(tx, m.addr);
                            self.media.io.set_event_pt(tx, m.telephone_event);
                        }
                        self.media.engine.set_remote(stream, m.addr);
                        self.trunk_outcome(now, id, purpose, Ok(()));
                    }
                    Err(e) => {
                        warn!(error = %e, "the trunk answered with unusable SDP; hanging up");
                        self.end_trunk(now, id);
                        self.trunk_outcome(now, id, purpose, Err(488));
                    }
                }
            }
            SessionEvent::Failed { code } => {
                self.release_trunk_media(id);
                self.trunk_outcome(now, id, purpose, Err(code));
            }
            SessionEvent::Ringing { .. } => match purpose {
                Purpose::Transfer(k) => self.transfer_ringing(now, k),
                Purpose::Probe { .. }
                | Purpose::Consultation(_)
                | Purpose::Callback(_)
                | Purpose::Revisit(_) => {}
            },
            SessionEvent::Ended(_) => {
                // The far end hung up (or never acknowledged our 2xx to its re-INVITE).
                self.release_trunk_media(id);
                match purpose {
                    Purpose::Transfer(k) => self.transfer_target_left(now, k),
                    Purpose::Consultation(c) => self.consultation_target_left(now, c),
                    Purpose::Callback(cb) => self.callback_citizen_left(now, cb, id),
                    Purpose::Revisit(r) => self.revisit_call_over(now, r, id),
                    Purpose::Probe { .. } => {}
                }
            }
            SessionEvent::Terminated { .. } => {
                self.release_trunk_media(id);
                self.forget(Leg::Trunk(id));
                self.legs.trunks.remove(&id);
            }
            SessionEvent::Confirmed { .. } => {}
        }
    }

    /// Answered (`Ok`) or not (`Err` with the final status): whoever placed the call is told.
    fn trunk_outcome(&mut self, now: Now, id: TrunkId, purpose: Purpose, outcome: Result<(), u16>) {
        match purpose {
            Purpose::Transfer(k) => self.transfer_outcome(now, k, id, outcome),
            Purpose::Probe { round, .. } => self.probe_outcome_of(now, id, round, outcome),
            Purpose::Consultation(c) => self.consultation_outcome(now, c, id, outcome),
            Purpose::Callback(cb) => self.callback_citizen_outcome(now, cb, id, outcome),
            Purpose::Revisit(r) => self.revisit_outcome(now, r, id, outcome),
        }
    }

    pub(super) fn release_trunk_media(&mut self, id: TrunkId) {
        if let Some(t) = self.legs.trunks.get(&id) {
            let stream = t.stream;
            if self.media.engine.tx(stream).is_some() {
                self.media.unbridge(stream);
                self.media.release(stream, &self.env.stats);
            }
        }
    }

    /// We end the trunk call: CANCEL while it rings, BYE once answered; its media goes now.
    pub(super) fn end_trunk(&mut self, now: Now, id: TrunkId) {
        self.release_trunk_media(id);
        if let Some(t) = self.legs.trunks.get_mut(&id) {
            t.session.end(now.mono, &mut self.rng);
        }
        self.flush(now, Leg::Trunk(id));
    }

    /// A request in a trunk call's dialog that the session left to us. A re-INVITE or
    /// UPDATE with SDP is mostly a session timer's refresh (RFC 4028; gateways end a call
    /// whose refresh fails), else a hold or a new media address: answered with our media, the
    /// call going on as it was; a new address is followed. Without SDP in a re-INVITE, our
    /// 2xx carries an offer of the same media.
    pub(super) fn trunk_request(
        &mut self,
        now: Now,
        id: TrunkId,
        incoming: Incoming,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        let leg = Leg::Trunk(id);
        match (incoming, info.method) {
            (Incoming::Reinvite, _) | (_, Method::Update) => {}
            (_, Method::Options | Method::Info) if req.body.is_empty() => {
                return self.respond_in(leg, req, info, peer, &ResponseSpec::new(200, "OK"));
            }
            _ => {
                let hdrs = [("Warning", "399 hotline \"not supported on trunk calls\"")];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(488, "Not Acceptable Here")
                };
                return self.respond_in(leg, req, info, peer, &spec);
            }
        }
        if info.method == Method::Update && req.body.is_empty() {
            return self.respond_in(leg, req, info, peer, &ResponseSpec::new(200, "OK"));
        }
        let Some(t) = self.legs.trunks.get(&id) else {
            return;
        };
        let stream = t.stream;
        let codec = self.media.engine.codec(stream);
        let Ok(offer) = self.reoffer(leg, req, info, peer, codec) else {
            return;
        };
        let (codec, pt) = self.media.codec(stream);
        if let (Some(tx), Some(addr)) = (
            self.media.engine.tx(stream),
            offer.as_ref().and_then(|m| m.addr),
        ) {
            self.media.io.media_changed(tx, Some(addr));
            self.media.engine.set_remote(stream, Some(addr));
        }
        let Some(t) = self.legs.trunks.get_mut(&id) else {
            return;
        };
        let build = |local: &LocalMedia| match &offer {
            Some(o) => sdp::answer(local, o),
            None => sdp::offer_codec(local, codec, pt),
        };
        let mut body = build(&t.local);
        if body != t.last_sdp {
            t.local.version += 1;
            body = build(&t.local);
            t.last_sdp = body.clone();
        }
        debug!(method = %info.method, hold = offer.as_ref().is_some_and(|o| !o.direction.we_may_send()), "trunk call refreshed");
        t.session.answer(now.mono, req, info, peer, body.as_bytes());
    }

    /// The target's number and name, for logs and records.
    pub(super) fn target_label(&self, target: usize) -> crate::metrics::record::TargetLabel {
        match self.env.cfg.targets.get(target) {
            Some(t) => crate::metrics::record::TargetLabel {
                number: t.number.clone(),
                name: t.name.clone(),
                kind: t.kind,
                unit: t.unit_name().to_string(),
            },
            None => crate::metrics::record::TargetLabel {
                number: String::new(),
                name: String::new(),
                kind: crate::config::TargetKind::Subcentre,
                unit: String::new(),
            },
        }
    }
}
