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
    /// The caller's codec: the consultation must use it, since the target's call is handed
    /// to the caller as it is (no transcoding in a bridge).
    pub(super) codec: crate::media::Codec,
    /// The target's call over its trunk, while there is one.
    pub(super) trunk: Option<u64>,
}

impl<M: MediaIo> Core<M> {
    /// The user part of a request's From (empty if it has none).
    pub(super) fn caller_number(&self, req: &Request) -> String {
        use rsipstack::sip::prelude::HeadersExt as _;
        req.from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default()
    }

    /// The citizen's call seat `seat` is bridged to.
    fn caller_of_seat(&self, seat: usize) -> Option<&Call> {
        let leg = self.legs.get(&self.bridged_leg_of(seat)?)?;
        self.calls.get(&leg.call)
    }

    /// The transfer target dialled, if `number` is one reached over a trunk: only a seat may
    /// call it (to consult it), so whoever sends the INVITE is challenged; the answer does
    /// not tell seat names from others (as the registrar's does not).
    pub(super) fn consult_target(&self, number: &str) -> Option<usize> {
        let target = self.cfg.target(number)?;
        (self.cfg.targets[target].kind != TargetKind::Expert).then_some(target)
    }

    /// Seat `seat` may consult `target` now: it has a caller (whose codec the consultation
    /// must use); else the refusal.
    pub(super) fn seat_consult(&self, seat: usize, target: usize) -> Result<SeatConsult, Refusal> {
        let Some(caller) = self.caller_of_seat(seat) else {
            return Err(Refusal {
                code: 403,
                reason: "Forbidden",
                headers: vec![(
                    "Warning",
                    "399 hotline \"a seat calls a target only to consult it about its caller\""
                        .into(),
                )],
            });
        };
        let codec = self
            .media
            .codec(caller.stream)
            .unwrap_or(crate::media::Codec::Pcmu);
        // Two ports: the consultation's own and its target's call.
        if !self.room_for(target, 2) {
            return Err(Refusal {
                code: 503,
                reason: "Service Unavailable",
                headers: vec![("Retry-After", "5".into())],
            });
        }
        Ok(SeatConsult {
            seat,
            target,
            codec,
            trunk: None,
        })
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
        let (caller, caller_call_id) = self
            .caller_of_seat(seat)
            .map(|c| (self.caller_number(&c.invite), c.call_id.clone()))
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
            Purpose::Consult { call: key },
            timeout,
            codec,
            &extra,
        ) {
            Ok(trunk) => {
                if let Some(c) = self.calls.get_mut(&key).and_then(|c| c.consult.as_mut()) {
                    c.trunk = Some(trunk);
                }
                if let Some(leg) = self
                    .bridged_leg_of(seat)
                    .and_then(|l| self.legs.get_mut(&l))
                {
                    leg.consultation = Some(key);
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
