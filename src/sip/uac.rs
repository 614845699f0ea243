//! An outgoing call over a trunk (UAC side of one INVITE dialog), with no I/O: the daemon's
//! probes of a unit's line and its transfers to sub-centres and emergency centres. It builds
//! the INVITE, retransmits it (timer A) until anything is heard, gives up at the ring timeout
//! with a CANCEL (sent only after a 1xx, RFC 3261 §9.1), ACKs final responses, answers one
//! digest challenge per INVITE with the trunk's credentials, and ends with a BYE.
//!
//! Call control feeds it responses and timer expiries with the time, and sends what it
//! returns: `Out::Send` as is, `Out::Request` through a client transaction (CANCEL, BYE).

use super::message::{self, InDialogRequest};
use super::{Peer, T1};
use crate::registrar::digest::{Algorithm, ha1};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE sent, nothing heard (retransmitting).
    Calling,
    /// 1xx heard: it rings.
    Proceeding,
    /// CANCEL sent or waiting for a 1xx to send it.
    Cancelling,
    /// Answered (2xx ACKed).
    Up,
    /// BYE sent, or the far end hung up.
    Ended,
}

/// What the caller of the state machine sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A message with no transaction of its own to keep (INVITE retransmission, ACK).
    Send(Bytes),
    /// A request that needs a client transaction (CANCEL, BYE): branch and bytes.
    Request { branch: String, bytes: Bytes },
}

/// What happened to the call, once per change.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ringing,
    /// Answered; the SDP answer.
    Answered {
        body: Bytes,
    },
    /// Over without an answer: the final status (408 for our own ring timeout, 487 when we
    /// cancelled, 0 when nothing at all came back).
    Failed {
        code: u16,
    },
}

/// What the INVITE carries.
pub struct Params<'a> {
    pub peer: Peer,
    /// The Request-URI and To: `sip:<number>@<gateway>`.
    pub target: String,
    /// The number presented as the caller (From user).
    pub caller: &'a str,
    pub via_host: &'a str,
    pub contact: &'a str,
    pub user_agent: &'a str,
    pub sdp: &'a [u8],
    pub extra: &'a [(&'a str, &'a str)],
    pub ring_timeout: Duration,
    /// Digest credentials of the trunk.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug)]
pub struct Uac {
    pub peer: Peer,
    target: String,
    pub call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    branch: String,
    from: String,
    to: String,
    contact: String,
    via_host: String,
    user_agent: String,
    extra: Vec<(String, String)>,
    sdp: Bytes,
    invite: Bytes,
    cseq: u32,
    state: State,
    retransmit_interval: Duration,
    retransmit_at: Option<Instant>,
    /// Ring timeout while calling; the 64*T1 wait for the 487 while cancelling.
    deadline: Instant,
    cancel_pending: bool,
    remote_target: String,
    credentials: Option<(String, String)>,
    auth_tried: bool,
    /// The code to report when the call ends unanswered because of us.
    cancel_code: u16,
}

impl Uac {
    /// The call and its first INVITE (to send to `peer`).
    pub fn new(
        now: Instant,
        p: Params,
        tag: String,
        call_id: String,
        branch: String,
    ) -> (Uac, Bytes) {
        let from = format!("<sip:{}@{}>;tag={tag}", p.caller, p.via_host);
        let to = format!("<{}>", p.target);
        let mut uac = Uac {
            peer: p.peer,
            target: p.target.clone(),
            call_id,
            local_tag: tag,
            remote_tag: None,
            branch,
            from,
            to,
            contact: p.contact.to_string(),
            via_host: p.via_host.to_string(),
            user_agent: p.user_agent.to_string(),
            extra: p
                .extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sdp: Bytes::copy_from_slice(p.sdp),
            invite: Bytes::new(),
            cseq: 1,
            state: State::Calling,
            retransmit_interval: T1,
            retransmit_at: (!p.peer.transport.reliable()).then(|| now + T1),
            deadline: now + p.ring_timeout,
            cancel_pending: false,
            remote_target: p.target,
            credentials: p.credentials,
            auth_tried: false,
            cancel_code: 408,
        };
        uac.invite = uac.build_invite(None);
        let invite = uac.invite.clone();
        (uac, invite)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// (Call-ID, the far end's tag) once known: the key of its in-dialog requests.
    pub fn dialog(&self) -> Option<(String, String)> {
        self.remote_tag.clone().map(|t| (self.call_id.clone(), t))
    }

    /// Our tag in the dialog (the To tag of the far end's requests and of our answers to them).
    pub fn local_tag(&self) -> &str {
        &self.local_tag
    }

    /// Whether an in-dialog request with this To tag is ours.
    pub fn is_local_tag(&self, tag: &str) -> bool {
        self.local_tag == tag
    }

    /// When `on_timer` next has something to do.
    pub fn next_timer(&self) -> Option<Instant> {
        match self.state {
            State::Calling | State::Proceeding | State::Cancelling => Some(
                self.retransmit_at
                    .map_or(self.deadline, |r| r.min(self.deadline)),
            ),
            State::Up | State::Ended => None,
        }
    }

    fn build_invite(&self, authorization: Option<(&str, String)>) -> Bytes {
        let mut extra: Vec<(&str, &str)> = vec![("Contact", self.contact.as_str())];
        extra.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((name, value)) = &authorization {
            extra.push((name, value.as_str()));
        }
        extra.push(("Content-Type", "application/sdp"));
        Bytes::from(message::request_with_body(
            &InDialogRequest {
                method: "INVITE",
                target: &self.target,
                via_transport: self.peer.transport.via_name(),
                via_host: &self.via_host,
                branch: &self.branch,
                from: &self.from,
                to: &self.to,
                call_id: &self.call_id,
                cseq: self.cseq,
                routes: &[],
                user_agent: &self.user_agent,
                extra: &extra,
            },
            &self.sdp,
        ))
    }

    fn request(&self, method: &str, target: &str, to: &str, branch: &str, cseq: u32) -> Bytes {
        Bytes::from(message::in_dialog_request(&InDialogRequest {
            method,
            target,
            via_transport: self.peer.transport.via_name(),
            via_host: &self.via_host,
            branch,
            from: &self.from,
            to,
            call_id: &self.call_id,
            cseq,
            routes: &[],
            user_agent: &self.user_agent,
            extra: &[],
        }))
    }

    fn to_with_tag(&self) -> String {
        match &self.remote_tag {
            Some(t) => format!("{};tag={t}", self.to),
            None => self.to.clone(),
        }
    }

    /// A response to our INVITE. `to` is its To header; `contact` its Contact URI;
    /// `challenge` the (header name, value) of a 401/407's challenge.
    pub fn on_response(
        &mut self,
        now: Instant,
        code: u16,
        to: &str,
        contact: Option<&str>,
        challenge: Option<(&str, &str)>,
        body: &Bytes,
    ) -> (Vec<Out>, Option<Event>) {
        let mut out = Vec::new();
        let tag = to
            .split(";tag=")
            .nth(1)
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| !t.is_empty());
        if code < 200 {
            if self.state == State::Calling {
                self.state = State::Proceeding;
                self.retransmit_at = None;
                return (out, Some(Event::Ringing));
            }
            if self.cancel_pending {
                out.push(self.cancel_now());
            }
            return (out, None);
        }
        if code >= 300 {
            // Every final failure is ACKed on the INVITE's branch (§17.1.1.3), retransmissions
            // included.
            out.push(Out::Send(self.request(
                "ACK",
                &self.target,
                to,
                &self.branch,
                self.cseq,
            )));
            if matches!(self.state, State::Up | State::Ended) {
                return (out, None);
            }
            if (code == 401 || code == 407) && self.state != State::Cancelling && !self.auth_tried {
                if let Some(auth) = challenge.and_then(|(_, c)| self.authorize(code, c)) {
                    self.auth_tried = true;
                    self.cseq += 1;
                    self.branch = format!("z9hG4bK{}", crate::sip::random_token());
                    self.invite = self.build_invite(Some(auth));
                    self.state = State::Calling;
                    self.retransmit_interval = T1;
                    self.retransmit_at = (!self.peer.transport.reliable()).then(|| now + T1);
                    out.push(Out::Send(self.invite.clone()));
                    return (out, None);
                }
            }
            let reported = if self.state == State::Cancelling {
                self.cancel_code
            } else {
                code
            };
            self.state = State::Ended;
            return (out, Some(Event::Failed { code: reported }));
        }
        // 2xx: ACK it, every time it comes (a lost ACK makes the far end retransmit).
        if let Some(t) = tag {
            self.remote_tag = Some(t);
        }
        if let Some(c) = contact {
            self.remote_target = message::addr_spec(c).to_string();
        }
        let ack_branch = format!("z9hG4bK{}", crate::sip::random_token());
        out.push(Out::Send(self.request(
            "ACK",
            &self.remote_target,
            &self.to_with_tag(),
            &ack_branch,
            self.cseq,
        )));
        match self.state {
            State::Calling | State::Proceeding => {
                self.state = State::Up;
                self.retransmit_at = None;
                (out, Some(Event::Answered { body: body.clone() }))
            }
            State::Cancelling => {
                // The 2xx crossed our CANCEL: the call is over for us all the same.
                self.state = State::Up;
                out.extend(self.bye());
                (
                    out,
                    Some(Event::Failed {
                        code: self.cancel_code,
                    }),
                )
            }
            State::Up | State::Ended => (out, None),
        }
    }

    fn authorize(&self, code: u16, challenge: &str) -> Option<(&'static str, String)> {
        let (user, password) = self.credentials.as_ref()?;
        let tok = rsipstack::sip::typed::tokenizers::AuthTokenizer::parse(challenge).ok()?;
        if !tok.scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let get = |k: &str| {
            tok.params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim_matches('"').to_string())
        };
        let realm = get("realm")?;
        let nonce = get("nonce")?;
        let alg = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a)?,
        };
        let h1 = ha1(alg, user, &realm, password);
        let h2 = alg.hash_hex(&format!("INVITE:{}", self.target));
        let qop_auth =
            get("qop").is_some_and(|q| q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")));
        let mut value = format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{}\", algorithm={}",
            self.target,
            alg.name()
        );
        if qop_auth {
            let cnonce = crate::sip::random_token();
            let response = alg.hash_hex(&format!("{h1}:{nonce}:00000001:{cnonce}:auth:{h2}"));
            value.push_str(&format!(
                ", qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\""
            ));
        } else {
            let response = alg.hash_hex(&format!("{h1}:{nonce}:{h2}"));
            value.push_str(&format!(", response=\"{response}\""));
        }
        if let Some(opaque) = get("opaque") {
            value.push_str(&format!(", opaque=\"{opaque}\""));
        }
        Some((
            if code == 407 {
                "Proxy-Authorization"
            } else {
                "Authorization"
            },
            value,
        ))
    }

    /// A timer set at `next_timer()` fired.
    pub fn on_timer(&mut self, now: Instant) -> (Vec<Out>, Option<Event>) {
        let mut out = Vec::new();
        if let Some(at) = self.retransmit_at {
            if now >= at && self.state == State::Calling || now >= at && self.cancel_pending {
                out.push(Out::Send(self.invite.clone()));
                self.retransmit_interval *= 2;
                self.retransmit_at = Some(now + self.retransmit_interval);
            }
        }
        if now >= self.deadline {
            match self.state {
                State::Calling | State::Proceeding => {
                    self.cancel_code = 408;
                    out.extend(self.start_cancel(now));
                }
                State::Cancelling => {
                    // No 487 within 64*T1 of the CANCEL: nobody is there.
                    self.state = State::Ended;
                    self.retransmit_at = None;
                    return (
                        out,
                        Some(Event::Failed {
                            code: if self.cancel_code == 408 { 408 } else { 487 },
                        }),
                    );
                }
                State::Up | State::Ended => {}
            }
        }
        (out, None)
    }

    /// Give up on an unanswered call (the caller or agent went away).
    pub fn cancel(&mut self, now: Instant) -> Vec<Out> {
        self.cancel_code = 487;
        self.start_cancel(now)
    }

    fn start_cancel(&mut self, now: Instant) -> Vec<Out> {
        let was = self.state;
        if !matches!(was, State::Calling | State::Proceeding) {
            return Vec::new();
        }
        self.state = State::Cancelling;
        self.deadline = now + 64 * T1;
        if was == State::Calling {
            self.cancel_pending = true;
            return Vec::new();
        }
        vec![self.cancel_now()]
    }

    fn cancel_now(&mut self) -> Out {
        self.cancel_pending = false;
        self.retransmit_at = None;
        let bytes = self.request("CANCEL", &self.target, &self.to, &self.branch, self.cseq);
        Out::Request {
            branch: self.branch.clone(),
            bytes,
        }
    }

    /// Hang up an answered call.
    pub fn bye(&mut self) -> Vec<Out> {
        if self.state != State::Up {
            return Vec::new();
        }
        self.state = State::Ended;
        self.cseq += 1;
        let branch = format!("z9hG4bK{}", crate::sip::random_token());
        let bytes = self.request(
            "BYE",
            &self.remote_target,
            &self.to_with_tag(),
            &branch,
            self.cseq,
        );
        vec![Out::Request { branch, bytes }]
    }

    /// The far end hung up (its BYE was answered by the caller of this).
    pub fn remote_bye(&mut self) {
        self.state = State::Ended;
        self.retransmit_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn call(now: Instant, creds: Option<(String, String)>) -> (Uac, Bytes) {
        let p = Params {
            peer: Peer {
                transport: Transport::Udp,
                addr: "127.0.0.1:5070".parse().unwrap(),
            },
            target: "sip:12366@127.0.0.1:5070".into(),
            caller: "13800001234",
            via_host: "127.0.0.1:5060",
            contact: "<sip:hotline@127.0.0.1:5060>",
            user_agent: "test",
            sdp: b"v=0\r\n",
            extra: &[],
            ring_timeout: Duration::from_secs(10),
            credentials: creds,
        };
        Uac::new(now, p, "tag1".into(), "cid@h".into(), "z9hG4bKb1".into())
    }

    fn text(o: &Out) -> String {
        match o {
            Out::Send(b) | Out::Request { bytes: b, .. } => String::from_utf8_lossy(b).into_owned(),
        }
    }

    #[test]
    fn retransmits_then_cancels_after_the_first_1xx_at_the_ring_timeout() {
        let t0 = Instant::now();
        let (mut u, invite) = call(t0, None);
        assert!(
            String::from_utf8_lossy(&invite)
                .contains("From: <sip:13800001234@127.0.0.1:5060>;tag=tag1")
        );
        let (out, ev) = u.on_timer(t0 + T1);
        assert_eq!((out.len(), ev), (1, None), "timer A retransmission");
        let (_, ev) = u.on_response(
            t0 + T1,
            180,
            "<sip:12366@x>;tag=r1",
            None,
            None,
            &Bytes::new(),
        );
        assert_eq!(ev, Some(Event::Ringing));
        assert_eq!(
            u.on_timer(t0 + 2 * T1).0.len(),
            0,
            "no retransmission once it rings"
        );
        let (out, _) = u.on_timer(t0 + Duration::from_secs(10));
        assert!(text(&out[0]).starts_with("CANCEL sip:12366@127.0.0.1:5070"));
        let (out, ev) = u.on_response(
            t0 + Duration::from_secs(10),
            487,
            "<sip:12366@x>;tag=r1",
            None,
            None,
            &Bytes::new(),
        );
        assert!(text(&out[0]).starts_with("ACK "));
        assert_eq!(
            ev,
            Some(Event::Failed { code: 408 }),
            "our ring timeout is reported as 408"
        );
    }

    #[test]
    fn a_cancel_before_any_1xx_waits_for_one() {
        let t0 = Instant::now();
        let (mut u, _) = call(t0, None);
        assert!(u.cancel(t0).is_empty());
        let (out, _) = u.on_response(t0, 100, "<sip:12366@x>", None, None, &Bytes::new());
        assert!(text(&out[0]).starts_with("CANCEL "));
    }

    #[test]
    fn answers_a_challenge_once_with_a_new_branch_and_cseq() {
        let t0 = Instant::now();
        let (mut u, _) = call(t0, Some(("hotline".into(), "secret".into())));
        let ch = "Digest realm=\"gw\", nonce=\"abc\", qop=\"auth\"";
        let (out, ev) = u.on_response(
            t0,
            407,
            "<sip:12366@x>;tag=t",
            None,
            Some(("Proxy-Authenticate", ch)),
            &Bytes::new(),
        );
        assert_eq!(ev, None);
        assert!(text(&out[0]).starts_with("ACK ") && text(&out[0]).contains("CSeq: 1 ACK"));
        let again = text(&out[1]);
        assert!(
            again.contains("CSeq: 2 INVITE")
                && again.contains("Proxy-Authorization: Digest username=\"hotline\""),
            "{again}"
        );
        assert_ne!(u.branch(), "z9hG4bKb1");
        let (_, ev) = u.on_response(
            t0,
            407,
            "<sip:12366@x>;tag=t",
            None,
            Some(("Proxy-Authenticate", ch)),
            &Bytes::new(),
        );
        assert_eq!(
            ev,
            Some(Event::Failed { code: 407 }),
            "a second challenge is a failure, not a loop"
        );
    }

    #[test]
    fn answer_then_bye_uses_the_remote_target_and_tag() {
        let t0 = Instant::now();
        let (mut u, _) = call(t0, None);
        let (out, ev) = u.on_response(
            t0,
            200,
            "<sip:12366@x>;tag=rt",
            Some("<sip:agent@10.0.0.9:5080>"),
            None,
            &Bytes::from_static(b"v=0"),
        );
        assert!(text(&out[0]).starts_with("ACK sip:agent@10.0.0.9:5080 "));
        assert_eq!(
            ev,
            Some(Event::Answered {
                body: Bytes::from_static(b"v=0")
            })
        );
        assert_eq!(u.dialog(), Some(("cid@h".into(), "rt".into())));
        let bye = u.bye();
        assert!(
            text(&bye[0]).starts_with("BYE sip:agent@10.0.0.9:5080 ")
                && text(&bye[0]).contains(";tag=rt")
        );
        assert!(u.bye().is_empty(), "one BYE");
    }
}
