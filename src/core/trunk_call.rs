//! Calls the daemon places over a trunk: to a transfer target (sub-centre, retained-seat line,
//! emergency centre) or to a unit's line as an answer-rate probe. The SIP side is the sans-IO
//! [`Uac`]; this layer gives it an RTP port, sends what it returns, routes responses, timers
//! and the far end's BYE to it, and tells the owner (transfer or probe) what happened.

use super::*;
use crate::sip::uac::{self, Uac};

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A transfer or hand-off of caller `call`.
    Transfer { call: u64 },
    /// Attempt `attempt` (from 1) of probe round `round` of target `target`.
    Probe { round: u64, attempt: u32 },
    /// A seat's consultation call `call` (before an attended transfer).
    Consult { call: u64 },
}

pub(super) struct TrunkCall {
    pub(super) uac: Uac,
    pub(super) purpose: Purpose,
    pub(super) stream: StreamId,
    pub(super) started: Instant,
    pub(super) answered_at: Option<Instant>,
    /// The timer set for `uac.next_timer()`, so it is set once.
    armed: Option<Instant>,
    /// Our media as offered; its SDP version goes up only when what we answer changes.
    local: LocalMedia,
    last_sdp: String,
    contact: String,
    /// CSeq of the far end's last in-dialog request.
    remote_cseq: u32,
    /// Our 2xx to the far end's re-INVITE, retransmitted until its ACK.
    pub(super) ok: Option<crate::sip::pending_ok::PendingOk>,
}

/// Why a trunk call could not be placed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("no RTP port free")]
    NoPort,
    #[error("target {0} has no trunk")]
    NoTrunk(String),
}

impl<M: MediaIo> Core<M> {
    /// Calls target `target` presenting `caller` as the calling number; media in `codec`.
    pub(super) fn dial_target(
        &mut self,
        now: Instant,
        target: usize,
        caller: &str,
        purpose: Purpose,
        ring_timeout: Duration,
        (codec, pt): (crate::media::Codec, u8),
        extra: &[(&str, &str)],
    ) -> Result<u64, DialError> {
        let t = &self.cfg.targets[target];
        let Some(trunk) = t.trunk.as_ref().and_then(|n| self.cfg.trunks.get(n)) else {
            return Err(DialError::NoTrunk(t.number.clone()));
        };
        let (gateway, number) = (trunk.address, t.number.clone());
        let credentials = trunk.username.clone().zip(trunk.password.clone());
        let key = self.next_key;
        let Some((tx, port)) = self.media_io.open(key) else {
            return Err(DialError::NoPort);
        };
        self.next_key += 1;
        let local_ip = self.local_ip(gateway.ip());
        let mut rng = rand::rng();
        let params = StreamParams::random(codec, pt);
        let stream = self.media.add(now, tx, None, params);
        self.media.set_sending(stream, false);
        let local = LocalMedia {
            ip: self.cfg.rtp.public_ip.unwrap_or(local_ip),
            port,
            session_id: rng.random::<u32>() as u64,
            version: 1,
        };
        let sdp = sdp::offer_codec(&local, codec, pt);
        let host = SocketAddr::new(local_ip, self.cfg.sip.listen.port()).to_string();
        let local_media = local.clone();
        let contact = format!("<sip:hotline@{host}>");
        let host_for_uri = match gateway {
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => a.to_string(),
        };
        // Only plain numbers go into our From; anything else is presented as anonymous.
        let caller = if !caller.is_empty()
            && caller.len() <= 32
            && caller
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+*#".contains(&b))
        {
            caller
        } else {
            "anonymous"
        };
        let peer = Peer {
            transport: crate::sip::Transport::Udp,
            addr: gateway,
        };
        let params = uac::Params {
            peer,
            target: format!("sip:{number}@{host_for_uri}"),
            caller,
            via_host: &host,
            contact: &contact,
            user_agent: &self.cfg.sip.user_agent,
            sdp: sdp.as_bytes(),
            extra,
            ring_timeout,
            credentials,
        };
        let (uac, invite) = Uac::new(
            now,
            params,
            random_token(),
            format!("{}@hotline", random_token()),
            format!("z9hG4bK{}", random_token()),
        );
        self.trunk_by_branch.insert(uac.branch().to_string(), key);
        self.trunk_calls.insert(
            key,
            TrunkCall {
                uac,
                purpose,
                stream,
                started: now,
                answered_at: None,
                armed: None,
                local: local_media,
                last_sdp: sdp.clone(),
                contact: contact.clone(),
                remote_cseq: 0,
                ok: None,
            },
        );
        self.out.push_back(Transmit {
            peer,
            bytes: invite,
        });
        self.arm_trunk(key);
        Ok(key)
    }

    fn arm_trunk(&mut self, key: u64) {
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        if let Some(at) = c.uac.next_timer() {
            if c.armed != Some(at) {
                c.armed = Some(at);
                self.timers.push(at, (key, CallTimer::Trunk));
            }
        }
    }

    fn trunk_send(&mut self, now: Instant, key: u64, outs: Vec<uac::Out>) {
        let Some(c) = self.trunk_calls.get(&key) else {
            return;
        };
        let peer = c.uac.peer;
        for o in outs {
            match o {
                uac::Out::Send(bytes) => self.out.push_back(Transmit { peer, bytes }),
                uac::Out::Request { branch, bytes } => {
                    // CANCEL's outcome needs no handling (the INVITE's 487 does); a BYE's ends
                    // the call's bookkeeping.
                    let owner = if bytes.starts_with(b"CANCEL") {
                        CANCEL_OWNER
                    } else {
                        key
                    };
                    let t = self
                        .client_txs
                        .start(now, &branch, owner, Transmit { peer, bytes });
                    self.out.push_back(t);
                }
            }
        }
    }

    /// A response to one of our trunk INVITEs.
    pub(super) fn trunk_response(
        &mut self,
        now: Instant,
        key: u64,
        resp: &rsipstack::sip::Response,
    ) {
        use rsipstack::sip::prelude::*;
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        let code = resp.status_code.code();
        let to = resp
            .to_header()
            .map(|t| t.value().to_string())
            .unwrap_or_default();
        let contact = resp.contact_header().ok().map(|c| c.value().to_string());
        let challenge = resp.headers.iter().find_map(|h| match h {
            rsipstack::sip::Header::WwwAuthenticate(v) => {
                Some(("WWW-Authenticate", v.value().to_string()))
            }
            rsipstack::sip::Header::ProxyAuthenticate(v) => {
                Some(("Proxy-Authenticate", v.value().to_string()))
            }
            _ => None,
        });
        let old_branch = c.uac.branch().to_string();
        let (outs, event) = c.uac.on_response(
            now,
            code,
            &to,
            contact.as_deref(),
            challenge.as_ref().map(|(n, v)| (*n, v.as_str())),
            &resp.body.clone().into(),
        );
        if c.uac.branch() != old_branch {
            // A challenge answered: the new INVITE has its own branch.
            self.trunk_by_branch.insert(c.uac.branch().to_string(), key);
        }
        if let (Some(d), uac::State::Up) = (c.uac.dialog(), c.uac.state()) {
            self.trunk_dialogs.insert(d, key);
        }
        self.trunk_send(now, key, outs);
        self.arm_trunk(key);
        if let Some(e) = event {
            self.trunk_event(now, key, e);
        }
    }

    pub(super) fn trunk_timer(&mut self, now: Instant, key: u64) {
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        c.armed = None;
        let (outs, event) = c.uac.on_timer(now);
        self.trunk_send(now, key, outs);
        self.arm_trunk(key);
        if let Some(e) = event {
            self.trunk_event(now, key, e);
        }
    }

    fn trunk_event(&mut self, now: Instant, key: u64, event: uac::Event) {
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        match &event {
            uac::Event::Answered { body } => {
                c.answered_at = Some(now);
                match sdp::parse(body) {
                    Ok(m) => {
                        let stream = c.stream;
                        if let Some(tx) = self.media.tx(stream) {
                            self.media_io.media_changed(tx, m.addr);
                            self.media_io.set_event_pt(tx, m.telephone_event);
                        }
                        self.media.set_remote(stream, m.addr);
                    }
                    Err(e) => {
                        warn!(error = %e, "the trunk answered with unusable SDP; hanging up");
                        let outs = c.uac.bye();
                        self.trunk_send(now, key, outs);
                        return self.trunk_event(now, key, uac::Event::Failed { code: 488 });
                    }
                }
            }
            uac::Event::Failed { .. } => {
                self.release_trunk_media(key);
            }
            uac::Event::Ringing => {}
        }
        let Some(c) = self.trunk_calls.get(&key) else {
            return;
        };
        let failed = matches!(event, uac::Event::Failed { .. });
        match c.purpose {
            Purpose::Transfer { call } => self.transfer_event(now, call, key, event),
            Purpose::Probe { round, attempt } => self.probe_event(now, key, round, attempt, event),
            Purpose::Consult { call } => self.consult_event(now, call, key, event),
        }
        if failed {
            self.drop_trunk(key);
        }
    }

    fn release_trunk_media(&mut self, key: u64) {
        let Some(c) = self.trunk_calls.get(&key) else {
            return;
        };
        if let Some((tx, _)) = self.media.remove(c.stream) {
            self.media_io.close(tx);
        }
    }

    fn drop_trunk(&mut self, key: u64) {
        self.release_trunk_media(key);
        if let Some(c) = self.trunk_calls.remove(&key) {
            self.trunk_by_branch.retain(|_, k| *k != key);
            if let Some(d) = c.uac.dialog() {
                self.trunk_dialogs.remove(&d);
            }
        }
    }

    /// We end the trunk call: CANCEL while it rings, BYE once answered. It goes when its
    /// INVITE or BYE transaction ends.
    pub(super) fn end_trunk(&mut self, now: Instant, key: u64) {
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        let outs = match c.uac.state() {
            uac::State::Calling | uac::State::Proceeding => c.uac.cancel(now),
            uac::State::Up => c.uac.bye(),
            uac::State::Cancelling | uac::State::Ended => Vec::new(),
        };
        let up = c.uac.state() == uac::State::Ended;
        self.trunk_send(now, key, outs);
        self.arm_trunk(key);
        if up {
            self.release_trunk_media(key);
        }
    }

    /// The far end hung up (BYE in the trunk call's dialog, already answered).
    pub(super) fn trunk_bye(&mut self, now: Instant, key: u64) {
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        c.uac.remote_bye();
        self.release_trunk_media(key);
        self.trunk_gone(now, key);
        self.drop_trunk(key);
    }

    /// An answered trunk call is over: whoever it served is told.
    pub(super) fn trunk_gone(&mut self, now: Instant, key: u64) {
        match self.trunk_calls.get(&key).map(|c| c.purpose) {
            Some(Purpose::Transfer { call }) => self.transfer_target_left(now, call, key),
            Some(Purpose::Consult { call }) => self.consult_target_left(now, call),
            Some(Purpose::Probe { .. }) | None => {}
        }
    }

    /// A trunk call's BYE transaction ended.
    pub(super) fn trunk_done(&mut self, key: u64) -> bool {
        if self
            .trunk_calls
            .get(&key)
            .is_some_and(|c| c.uac.state() == uac::State::Ended)
        {
            self.drop_trunk(key);
            return true;
        }
        self.trunk_calls.contains_key(&key)
    }

    /// In-dialog request from a trunk call's far end.
    pub(super) fn trunk_dialog(&self, info: &RequestInfo) -> Option<u64> {
        let key = *self.trunk_dialogs.get(&(
            info.call_id.clone(),
            info.from_tag.clone().unwrap_or_default(),
        ))?;
        let c = self.trunk_calls.get(&key)?;
        info.to_tag
            .as_deref()
            .is_some_and(|t| c.uac.is_local_tag(t))
            .then_some(key)
    }

    /// The target's number and name, for logs and records.
    pub(super) fn target_label(&self, target: usize) -> (String, String) {
        self.cfg
            .targets
            .get(target)
            .map(|t| (t.number.clone(), t.name.clone()))
            .unwrap_or_default()
    }
}

impl<M: MediaIo> Core<M> {
    /// A re-INVITE or UPDATE with SDP from the far end of a trunk call: mostly a session
    /// timer's refresh (RFC 4028; gateways end a call whose refresh fails), else a hold or a
    /// new media address. Answered with our media, the call going on as it was; a new address
    /// is followed. Without SDP in a re-INVITE, our 2xx carries an offer of the same media.
    pub(super) fn trunk_refresh(
        &mut self,
        now: Instant,
        key: u64,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        let Some(c) = self.trunk_calls.get(&key) else {
            return;
        };
        if info.cseq <= c.remote_cseq {
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec::new(500, "Server Internal Error"),
            );
        }
        if info.method == Method::Invite && c.ok.is_some() {
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec::new(491, "Request Pending"),
            );
        }
        let stream = c.stream;
        let codec = self.media.codec(stream);
        let Ok(offer) = self.reoffer(now, req, info, peer, codec) else {
            return;
        };
        let pt = self.media.payload_type(stream).unwrap_or(0);
        if let (Some(tx), Some(addr)) = (self.media.tx(stream), offer.as_ref().and_then(|m| m.addr))
        {
            self.media_io.media_changed(tx, Some(addr));
            self.media.set_remote(stream, Some(addr));
        }
        let Some(c) = self.trunk_calls.get_mut(&key) else {
            return;
        };
        c.remote_cseq = info.cseq;
        let build = |local: &LocalMedia| match &offer {
            Some(o) => sdp::answer(local, o),
            None => sdp::offer_codec(local, codec.unwrap_or(crate::media::Codec::Pcmu), pt),
        };
        let mut body = build(&c.local);
        if body != c.last_sdp {
            c.local.version += 1;
            body = build(&c.local);
            c.last_sdp = body.clone();
        }
        debug!(method = %info.method, hold = offer.as_ref().is_some_and(|o| !o.direction.we_may_send()), "trunk call refreshed");
        let tag = c.uac.local_tag().to_string();
        let contact = c.contact.clone();
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let spec = ResponseSpec {
            to_tag: Some(&tag),
            headers: &hdrs,
            body: Some(("application/sdp", body.as_bytes())),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = message::response(req, peer.addr, &self.cfg.sip.user_agent, &spec);
        let t = self
            .server_txs
            .respond(now, &info.branch, info.method, 200, bytes.clone(), peer);
        self.out.push_back(t);
        if info.method != Method::Invite {
            return;
        }
        self.arm_ok(now, key, Bytes::from(bytes), info.cseq);
    }

    /// The ACK for our 2xx to the far end's re-INVITE; true if it was one.
    pub(super) fn trunk_acked(&mut self, info: &RequestInfo) -> bool {
        let Some(key) = self.trunk_dialog(info) else {
            return false;
        };
        if let Some(c) = self.trunk_calls.get_mut(&key) {
            if c.ok.as_ref().is_some_and(|ok| ok.acked_by(info.cseq)) {
                c.ok = None;
            }
        }
        true
    }
}
