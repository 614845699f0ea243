//! A seat's consultation call (咨询呼叫), the first half of an attended transfer: the agent
//! puts the caller on hold, dials a transfer target from the softphone (an INVITE to us,
//! digest-authenticated like a feature code), and we call the target over its trunk and
//! bridge the two. The agent then completes the transfer with REFER and Replaces naming this
//! dialog (`transfer.rs`), or hangs up and resumes the caller.
//!
//! The consultation is a `Call` (the same UAS dialog handling) marked `consult`: it is not a
//! citizen's call, so it never reaches the IVR, the records or the figures.

use super::trunk_call::{DialError, Purpose};
use super::*;
use crate::config::TargetKind;
use crate::sip::uac;

pub(super) struct SeatConsult {
    pub(super) seat: usize,
    pub(super) target: usize,
    /// The target's call over its trunk, while there is one.
    pub(super) trunk: Option<u64>,
}

impl SeatConsult {
    pub(super) fn new(seat: usize, target: usize) -> SeatConsult {
        SeatConsult {
            seat,
            target,
            trunk: None,
        }
    }
}

impl<M: MediaIo> Core<M> {
    /// The user part of a request's From (empty if it has none).
    pub(super) fn from_user(&self, req: &Request) -> String {
        use rsipstack::sip::prelude::HeadersExt as _;
        req.from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default()
    }

    /// The transfer target a seat dials to consult it, if `number` is one reached over a
    /// trunk and the request claims to come from a seat (it is then authenticated). Anyone
    /// else dialling a target number gets the dialplan's answer (404: never a relay).
    pub(super) fn consult_target(&self, req: &Request, number: &str) -> Option<usize> {
        let target = self.cfg.target(number)?;
        if self.cfg.targets[target].kind == TargetKind::Expert {
            return None;
        }
        let user = self.from_user(req);
        self.registrar
            .seats()
            .iter()
            .any(|s| s.user == user)
            .then_some(target)
    }

    /// Dials the target of consultation `key`, presenting the number of the caller the seat
    /// is about to transfer (the target sees who it will get).
    pub(super) fn dial_consult(&mut self, now: Instant, key: u64) {
        let Some((seat, target, stream)) = self
            .calls
            .get(&key)
            .and_then(|c| c.consult.as_ref().map(|s| (s.seat, s.target, c.stream)))
        else {
            return;
        };
        let caller = self
            .bridged_leg_of(seat)
            .and_then(|l| self.legs.get(&l))
            .and_then(|l| self.calls.get(&l.call))
            .map(|c| self.from_user(&c.invite))
            .unwrap_or_default();
        let codec = (
            self.media
                .codec(stream)
                .unwrap_or(crate::media::Codec::Pcmu),
            self.media.payload_type(stream).unwrap_or(0),
        );
        let seat_id = self.registrar.seats()[seat].id.clone();
        let t = &self.cfg.targets[target];
        let (timeout, name) = (Duration::from_secs(t.timeout_s), t.name.clone());
        let extra = [("X-Hotline-Transfer-By", seat_id.as_str())];
        info!(seat = %seat_id, target = %name, "seat consults a transfer target");
        match self.dial_target(
            now,
            target,
            &caller,
            Purpose::Consult { call: key },
            timeout,
            codec,
            &extra,
        ) {
            Ok(trunk) => {
                if let Some(c) = self.calls.get_mut(&key).and_then(|c| c.consult.as_mut()) {
                    c.trunk = Some(trunk);
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot dial the target for a consultation");
                let (code, reason) = match e {
                    DialError::NoPort => (503, "Service Unavailable"),
                    _ => (502, "Bad Gateway"),
                };
                self.reject_ringing(now, key, code, reason);
            }
        }
    }

    /// The target's call of consultation `call` progressed.
    pub(super) fn consult_event(&mut self, now: Instant, call: u64, trunk: u64, event: uac::Event) {
        if !self.calls.contains_key(&call) {
            // The seat gave up (CANCEL or BYE) meanwhile.
            return self.end_trunk(now, trunk);
        }
        match event {
            uac::Event::Ringing => {}
            uac::Event::Answered { .. } => {
                self.answer(now, call);
                let cs = self.calls.get(&call).map(|c| c.stream);
                let ts = self.trunk_calls.get(&trunk).map(|c| c.stream);
                if let (Some(cs), Some(ts)) = (cs, ts) {
                    self.media.set_sending(cs, false);
                    if let (Some(a), Some(b)) = (self.media.tx(cs), self.media.tx(ts)) {
                        self.media_io.bridge(a, b);
                    }
                }
            }
            uac::Event::Failed { code } => {
                if let Some(c) = self.calls.get_mut(&call).and_then(|c| c.consult.as_mut()) {
                    c.trunk = None;
                }
                let (code, reason) = match code {
                    486 | 600 | 603 => (486, "Busy Here"),
                    _ => (480, "Temporarily Unavailable"),
                };
                self.reject_ringing(now, call, code, reason);
            }
        }
    }

    /// The target hung up the consultation: so do we.
    pub(super) fn consult_target_left(&mut self, now: Instant, call: u64) {
        if let Some(c) = self.calls.get_mut(&call).and_then(|c| c.consult.as_mut()) {
            c.trunk = None;
        }
        self.hangup(now, call);
    }
}
