//! SRTP keyed in SDP (SDES, RFC 4568) for call legs: which offers and answers are acceptable,
//! and keying the leg's RTP endpoint once they are. The policy:
//! - keys travel only in encrypted signalling: an `a=crypto` offer that did not come over TLS
//!   is refused (RFC 4568 §8.3: SDES is only as secret as the SIP carrying it);
//! - a remote seat (远端座席) must use SRTP: a plain offer from one, or a plain answer to our
//!   offer, is refused;
//! - once a leg speaks SRTP it does not fall back to plain RTP in a re-INVITE;
//! - a re-offer with the same key keeps the contexts (rollover counter, replay window); a new
//!   key re-keys the leg.
//!
//! The endpoint decrypts on receipt and encrypts on sending, so everything between (bridge,
//! conference, recorder, DTMF, prompts) sees plain G.711, and one side of a call may be SRTP
//! and the other plain RTP.

use super::{Core, Leg, MediaIo};
use crate::media::sdes::{self, CryptoAttr};
use crate::media::srtp::SrtpSession;
use crate::sdp::{LocalMedia, RemoteMedia};
use crate::sip::Peer;

/// Why an SDP exchange is refused (the text of a 488's Warning).
pub(super) type Refused = String;

/// What an offer does to a leg's keys.
pub(super) enum Keys {
    /// Plain RTP as before, or SRTP with the same keys: nothing to do.
    Unchanged,
    /// SRTP with these keys from now on.
    New {
        ours: CryptoAttr,
        theirs: CryptoAttr,
        session: Box<SrtpSession>,
    },
}

impl Keys {
    /// Records the keys in `local` (our answer then carries `a=crypto`); the session to key
    /// the endpoint with, if any.
    pub(super) fn apply(self, local: &mut LocalMedia) -> Option<SrtpSession> {
        match self {
            Keys::Unchanged => None,
            Keys::New {
                ours,
                theirs,
                session,
            } => {
                local.crypto = vec![ours];
                local.theirs = Some(theirs);
                Some(*session)
            }
        }
    }
}

/// The keys for our answer to the offer `m` from `peer`, on a leg whose SDP is `local` (`None`
/// for a new leg), or why the offer is refused.
pub(super) fn answer_keys(
    local: Option<&LocalMedia>,
    m: &RemoteMedia,
    peer: Peer,
    must_be_secure: bool,
) -> Result<Keys, Refused> {
    let (cur_ours, cur_theirs) = match local {
        Some(l) => (l.crypto.first(), l.theirs.as_ref()),
        None => (None, None),
    };
    // Best effort (keys on RTP/AVP, a trunk's `srtp = "optional"`): keys make it SRTP.
    let best_effort = local.is_some_and(|l| l.best_effort) && !m.crypto.is_empty();
    if !m.secure && !best_effort {
        if must_be_secure {
            return Err("a remote seat must use SRTP (RTP/SAVP with a=crypto)".into());
        }
        if cur_theirs.is_some() {
            return Err("this call uses SRTP; it cannot fall back to plain RTP".into());
        }
        return Ok(Keys::Unchanged);
    }
    if !peer.transport.secure() {
        return Err(
            "SRTP keys (a=crypto) are accepted only over TLS: send the INVITE over TLS".into(),
        );
    }
    let theirs = sdes::choose(m.crypto.iter().map(String::as_str)).map_err(|e| e.to_string())?;
    if cur_theirs == Some(&theirs) {
        return Ok(Keys::Unchanged);
    }
    let ours = match (cur_theirs, cur_ours) {
        (Some(_), Some(o)) if o.tag == theirs.tag && o.suite == theirs.suite => o.clone(),
        _ => CryptoAttr::generate(theirs.tag, theirs.suite, &mut crate::entropy::key_rng())
            .map_err(|e| e.to_string())?,
    };
    let session = SrtpSession::new(&ours, &theirs).map_err(|e| e.to_string())?;
    Ok(Keys::New {
        ours,
        theirs,
        session: Box::new(session),
    })
}

/// Our SRTP offer (one `a=crypto` per suite we speak, each with its own key) into `local`.
pub(super) fn offer_keys(local: &mut LocalMedia) -> Result<(), Refused> {
    local.crypto = sdes::offer(&mut crate::entropy::key_rng()).map_err(|e| e.to_string())?;
    local.theirs = None;
    Ok(())
}

/// The peer's answer `m` to our SDP: the session to key the leg with when we offered SRTP
/// (`local` keeps only the line it took), `Ok(None)` for plain RTP on both sides.
pub(super) fn accept_answer_keys(
    local: &mut LocalMedia,
    m: &RemoteMedia,
) -> Result<Option<SrtpSession>, Refused> {
    if local.crypto.is_empty() {
        return if m.secure {
            Err("SRTP in an answer to a plain RTP offer".into())
        } else {
            Ok(None)
        };
    }
    if local.theirs.is_some() {
        return Ok(None); // keyed already (an answer repeated)
    }
    if m.crypto.is_empty() && local.best_effort {
        local.crypto.clear(); // best effort: the call stays plain
        return Ok(None);
    }
    if !m.secure && !local.best_effort {
        return Err("answered without SRTP to an SRTP offer".into());
    }
    let mut why = "no a=crypto line in the answer".to_string();
    for value in &m.crypto {
        match sdes::accept_answer(&local.crypto, value) {
            Ok((ours, theirs)) => {
                let session = SrtpSession::new(&ours, &theirs).map_err(|e| e.to_string())?;
                local.crypto = vec![ours];
                local.theirs = Some(theirs);
                return Ok(Some(session));
            }
            Err(e) => why = e.to_string(),
        }
    }
    Err(why)
}

impl<M: MediaIo> Core<M> {
    /// The keys of a new leg for the INVITE `req` from `peer` with the offer `offer`, or the
    /// 488 it gets.
    pub(super) fn new_leg_keys(
        &self,
        req: &crate::sip::Request,
        offer: Option<&RemoteMedia>,
        peer: Peer,
    ) -> Result<Keys, super::Refusal> {
        let Some(m) = offer else {
            return Ok(Keys::Unchanged);
        };
        let from = crate::sip::message::header(req, "From")
            .map(crate::sip::message::user_of)
            .unwrap_or("");
        answer_keys(None, m, peer, self.is_remote_seat(from)).map_err(|why| {
            super::Refusal::new(488, "Not Acceptable Here")
                .with("Warning", format!("399 hotline \"{why}\""))
        })
    }

    /// Whether the From user of a request is a seat that must use SRTP.
    pub(super) fn is_remote_seat(&self, from_user: &str) -> bool {
        self.registrar
            .seats()
            .iter()
            .any(|s| s.remote && s.user == from_user)
    }

    /// Keys `leg`'s endpoint with `session`.
    pub(super) fn key_leg(&mut self, leg: Leg, session: Option<SrtpSession>) {
        let stream = match leg {
            Leg::Caller(k) => self.legs.callers.get(&k).map(|c| c.stream),
            Leg::Seat(k) => self.legs.seats.get(&k).map(|l| l.stream),
            Leg::Trunk(k) => self.legs.trunks.get(&k).map(|t| t.stream),
            Leg::Consultation(k) => self.legs.consultations.get(&k).map(|c| c.stream),
        };
        if let Some(tx) = stream.and_then(|s| self.media.engine.tx(s)) {
            tracing::info!(suite = ?session.as_ref().map(|s| s.suite()), "SRTP keyed");
            self.media.io.set_srtp(tx, session);
        }
    }

    /// The SDP of `leg` that we answer with or offer.
    pub(super) fn local_media_mut(&mut self, leg: Leg) -> Option<&mut LocalMedia> {
        match leg {
            Leg::Caller(k) => self.legs.callers.get_mut(&k).map(|c| &mut c.local_media),
            Leg::Seat(k) => self.legs.seats.get_mut(&k).map(|l| &mut l.local_media),
            Leg::Trunk(k) => self.legs.trunks.get_mut(&k).map(|t| &mut t.local),
            Leg::Consultation(k) => self
                .legs
                .consultations
                .get_mut(&k)
                .map(|c| &mut c.local_media),
        }
    }

    /// A re-offer `m` on an established `leg` from `peer`: keys agreed (or kept), or why not.
    pub(super) fn rekey(
        &mut self,
        leg: Leg,
        m: &RemoteMedia,
        peer: Peer,
        must_be_secure: bool,
    ) -> Result<(), Refused> {
        let Some(local) = self.local_media_mut(leg) else {
            return Ok(());
        };
        if let Some(session) = answer_keys(Some(local), m, peer, must_be_secure)?.apply(local) {
            self.key_leg(leg, Some(session));
        }
        Ok(())
    }
}
