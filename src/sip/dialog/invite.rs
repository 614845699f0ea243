//! The INVITE session (after pjsip's `inv`): one sans-IO state machine for every call leg,
//! whichever side sent the INVITE. A caller's call and a seat's consultation are UAS sessions;
//! offers to seats and calls over trunks are UAC sessions. The call logic above keeps only its
//! business data and one of these.
//!
//! Input goes in through `handle_request`, `handle_response`, `handle_timeout` and
//! `handle_request_done` (the outcome of a request we sent through a client transaction),
//! each with the time; the owner's decisions through `accept`, `reject`, `answer`, `respond`,
//! `send_request` and [`InviteSession::end`], which picks CANCEL, a final response or BYE by
//! itself. Output comes out of `poll_transmit` ([`Out`]) and `poll_event` ([`Event`]);
//! `poll_timeout` is the earliest of the session's own timers, so a timer of an earlier step
//! cannot fire into a later one.
//!
//! What it does, so no owner has to: retransmits our INVITE (timer A) until anything is heard
//! and gives up at the ring timeout with a CANCEL that waits for a 1xx (RFC 3261 §9.1); ACKs
//! every final response (a 2xx again when it is retransmitted; a failure on the INVITE's
//! branch, kept for timer D); answers one digest challenge with the trunk's credentials;
//! retransmits our 2xx until its ACK, and ends the dialog with BYE when none comes within
//! 64·T1 (§13.3.1.4); sends a BYE wanted before the ACK once the ACK is in (§15); answers BYE
//! and CANCEL; refuses a re-INVITE that overlaps another (491, 500 with Retry-After) or comes
//! out of order (500), and follows a target refresh.

use super::super::message::{self, RequestInfo, ResponseInfo, ResponseSpec};
use super::super::pending_ok::PendingOk;
use super::super::{ALLOW, Method, Peer, Request, T1};
use super::{Dialog, DialogParams};
use crate::entropy::Entropy;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the session sends. Requests and `Send`s go to the dialog's peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A message with no transaction of its own to keep: an INVITE retransmission, an ACK, a
    /// 2xx again.
    Send(Bytes),
    /// Our INVITE (first, or again with credentials): the router learns its branch, which its
    /// responses carry.
    Invite { branch: String, bytes: Bytes },
    /// A request with its own client transaction (CANCEL, BYE, NOTIFY); `watched`: its outcome
    /// must come back through `handle_request_done`.
    Request {
        branch: String,
        bytes: Bytes,
        watched: bool,
    },
    /// A response through the server transaction of the request with this branch.
    Response {
        branch: String,
        method: Method,
        code: u16,
        bytes: Bytes,
        peer: Peer,
    },
}

/// What happened, once per change.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// UAC: the first provisional response to our INVITE.
    Ringing { code: u16 },
    /// UAC: answered (the 2xx is ACKed); the SDP answer.
    Answered { sdp: Bytes },
    /// UAC: our INVITE will not be answered: its final status, or 408 when our ring timeout
    /// cancelled it (the CANCEL is under way). Not reported after `end`.
    Failed { code: u16 },
    /// UAS: the ACK of our 2xx to the INVITE came; its SDP when our 2xx made the offer.
    Confirmed { sdp: Option<Bytes> },
    /// The far end is gone: it hung up (BYE), cancelled its INVITE, or never acknowledged our
    /// 2xx (we send the BYE). Not reported after `end`.
    Ended(EndCause),
    /// Nothing is pending any more: the owner drops the session. `bye_timed_out`: our BYE got
    /// no answer.
    Terminated { bye_timed_out: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    Bye,
    Cancel,
    NoAck,
}

/// A request in the dialog that the owner must answer (`answer` or `respond`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A re-INVITE (target refresh already applied): answer with SDP, or refuse.
    Reinvite,
    /// UPDATE, INFO, OPTIONS, REFER, NOTIFY or anything else in the dialog.
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uas,
    Uac,
}

/// Timer A of our INVITE: doubling from T1 (never on a reliable transport).
#[derive(Debug, Clone)]
struct Retransmit {
    at: Instant,
    interval: Duration,
}

impl Retransmit {
    fn start(now: Instant, reliable: bool) -> Option<Retransmit> {
        (!reliable).then(|| Retransmit {
            at: now + T1,
            interval: T1,
        })
    }
}

/// Our INVITE, while it is not answered.
#[derive(Debug, Clone)]
struct OurInvite {
    bytes: Bytes,
    branch: String,
    cseq: u32,
    /// Request-URI (the ACK of a failure and the CANCEL reuse it).
    target: String,
    retransmit: Option<Retransmit>,
}

#[derive(Debug, Clone)]
struct Credentials {
    user: String,
    password: String,
}

/// The parts of an INVITE built again when a challenge is answered.
#[derive(Debug, Clone)]
struct InviteParts {
    extra: Vec<(String, String)>,
    sdp: Bytes,
    credentials: Option<Credentials>,
}

/// Our 2xx waiting for its ACK.
#[derive(Debug, Clone)]
struct Unacked {
    ok: PendingOk,
    /// The 2xx of the dialog's INVITE (not of a re-INVITE): its ACK confirms the call.
    initial: bool,
}

#[derive(Debug, Clone)]
enum State {
    /// UAS: the far end's INVITE waits for our final response.
    Offered {
        invite: Box<Request>,
        branch: String,
    },
    /// UAC: our INVITE is out; `heard` once a 1xx came.
    Calling {
        invite: OurInvite,
        parts: Box<InviteParts>,
        heard: bool,
        /// The ring timeout.
        deadline: Instant,
        auth_tried: bool,
    },
    /// UAC: we gave up on our INVITE: the CANCEL is out, or waits for a 1xx; then the final
    /// response, for at most 64·T1.
    Cancelling {
        invite: OurInvite,
        cancel_sent: bool,
        deadline: Instant,
    },
    /// UAC: the INVITE failed; its final response is ACKed again if it comes again (timer D).
    Completed {
        ack: Bytes,
        until: Instant,
    },
    /// The call is up. Our 2xx may still wait for its ACK (`unacked`); `bye_after_ack`: we want
    /// to end, and the BYE follows the ACK (RFC 3261 §15).
    Up {
        unacked: Option<Unacked>,
        bye_after_ack: bool,
    },
    /// Our BYE is out.
    Ending {
        branch: String,
    },
    Terminated,
}

pub struct InviteSession {
    pub dialog: Dialog,
    role: Role,
    state: State,
    /// The ACK of the 2xx to our INVITE, sent again when the 2xx is.
    ack: Option<Bytes>,
    out: VecDeque<Out>,
    events: VecDeque<Event>,
}

/// What our INVITE carries.
pub struct UacParams<'a> {
    pub dialog: DialogParams,
    /// Request-URI.
    pub target: String,
    pub extra: &'a [(&'a str, &'a str)],
    pub sdp: &'a [u8],
    pub ring_timeout: Duration,
    /// Digest credentials for a challenge (trunks).
    pub credentials: Option<(String, String)>,
}

impl InviteSession {
    /// UAS: the far end's INVITE (already checked by the owner) starts the session; nothing is
    /// sent until the owner sends a provisional or final response.
    pub fn incoming(req: Request, info: &RequestInfo, dialog: DialogParams) -> InviteSession {
        let mut dialog = Dialog::new(dialog);
        dialog.remote_cseq = Some(info.cseq);
        InviteSession {
            dialog,
            role: Role::Uas,
            state: State::Offered {
                invite: Box::new(req),
                branch: info.branch.clone(),
            },
            ack: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// UAC: a new INVITE goes out now.
    pub fn outgoing(now: Instant, p: UacParams, rng: &mut Entropy) -> InviteSession {
        let dialog = Dialog::new(p.dialog);
        let parts = InviteParts {
            extra: p
                .extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sdp: Bytes::copy_from_slice(p.sdp),
            credentials: p
                .credentials
                .map(|(user, password)| Credentials { user, password }),
        };
        let mut s = InviteSession {
            dialog,
            role: Role::Uac,
            state: State::Terminated,
            ack: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        let invite = s.build_invite(now, &p.target, &parts, None, rng);
        s.state = State::Calling {
            invite,
            parts: Box::new(parts),
            heard: false,
            deadline: now + p.ring_timeout,
            auth_tried: false,
        };
        s
    }

    fn build_invite(
        &mut self,
        now: Instant,
        target: &str,
        parts: &InviteParts,
        authorization: Option<(&str, String)>,
        rng: &mut Entropy,
    ) -> OurInvite {
        let branch = rng.branch();
        let mut extra: Vec<(&str, &str)> = vec![("Contact", self.dialog.contact.as_str())];
        extra.extend(parts.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((name, value)) = &authorization {
            extra.push((name, value.as_str()));
        }
        extra.push(("Content-Type", "application/sdp"));
        self.dialog.local_cseq += 1;
        let cseq = self.dialog.local_cseq;
        let bytes = self
            .dialog
            .build("INVITE", target, &branch, cseq, &extra, &parts.sdp);
        self.out.push_back(Out::Invite {
            branch: branch.clone(),
            bytes: bytes.clone(),
        });
        OurInvite {
            bytes,
            branch,
            cseq,
            target: target.to_string(),
            retransmit: Retransmit::start(now, self.dialog.peer.transport.reliable()),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The branch of the far end's INVITE while it waits for our final response (UAS): its
    /// CANCEL carries it.
    pub fn invite_branch(&self) -> Option<&str> {
        match &self.state {
            State::Offered { branch, .. } => Some(branch),
            _ => None,
        }
    }

    /// The far end's INVITE while it waits for our final response (UAS).
    pub fn invite(&self) -> Option<&Request> {
        match &self.state {
            State::Offered { invite, .. } => Some(invite),
            _ => None,
        }
    }

    /// Not answered yet (UAS: no final response sent; UAC: no 2xx).
    pub fn is_early(&self) -> bool {
        matches!(self.state, State::Offered { .. } | State::Calling { .. })
    }

    /// Up: answered, and not being ended.
    /// Where the session's requests go (its transport tells the connection a seat's leg
    /// depends on).
    pub fn peer(&self) -> Peer {
        self.dialog.peer
    }

    pub fn is_up(&self) -> bool {
        matches!(
            self.state,
            State::Up {
                bye_after_ack: false,
                ..
            }
        )
    }

    /// Up, and our 2xx (if any) is acknowledged.
    pub fn is_confirmed(&self) -> bool {
        matches!(
            self.state,
            State::Up {
                unacked: None,
                bye_after_ack: false
            }
        )
    }

    /// Our 2xx waits for its ACK.
    pub fn awaiting_ack(&self) -> bool {
        matches!(
            self.state,
            State::Up {
                unacked: Some(_),
                ..
            }
        )
    }

    /// The session is over for the owner (ended, failed, or being torn down).
    pub fn is_over(&self) -> bool {
        matches!(
            self.state,
            State::Cancelling { .. }
                | State::Completed { .. }
                | State::Ending { .. }
                | State::Terminated
                | State::Up {
                    bye_after_ack: true,
                    ..
                }
        )
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    pub fn poll_transmit(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest of the session's timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Calling {
                invite, deadline, ..
            } => Some(
                invite
                    .retransmit
                    .as_ref()
                    .map_or(*deadline, |r| r.at.min(*deadline)),
            ),
            State::Cancelling {
                invite,
                cancel_sent,
                deadline,
            } => Some(match (&invite.retransmit, cancel_sent) {
                (Some(r), false) => r.at.min(*deadline),
                _ => *deadline,
            }),
            State::Completed { until, .. } => Some(*until),
            State::Up {
                unacked: Some(u), ..
            } => Some(
                u.ok.next_retransmit()
                    .map_or(u.ok.deadline, |n| n.min(u.ok.deadline)),
            ),
            _ => None,
        }
    }

    fn respond_with(&mut self, req: &Request, info: &RequestInfo, peer: Peer, spec: &ResponseSpec) {
        let tag = self.dialog.local_tag.clone();
        let spec = ResponseSpec {
            code: spec.code,
            reason: spec.reason,
            to_tag: spec.to_tag.or(Some(&tag)),
            headers: spec.headers,
            body: spec.body,
        };
        let bytes = message::response(req, peer.addr, &self.dialog.user_agent, &spec);
        self.out.push_back(Out::Response {
            branch: info.branch.clone(),
            method: info.method,
            code: spec.code,
            bytes: Bytes::from(bytes),
            peer,
        });
    }

    /// A response of ours to a request in the dialog (our tag in To).
    pub fn respond(&mut self, req: &Request, info: &RequestInfo, peer: Peer, spec: &ResponseSpec) {
        self.respond_with(req, info, peer, spec);
    }

    /// A response to the far end's INVITE (UAS), with our tag unless it is a 100.
    fn respond_invite(&mut self, spec: &ResponseSpec) {
        let State::Offered { invite, branch } = &self.state else {
            return;
        };
        let tag = self.dialog.local_tag.clone();
        let spec = ResponseSpec {
            code: spec.code,
            reason: spec.reason,
            to_tag: if spec.code == 100 { None } else { Some(&tag) },
            headers: spec.headers,
            body: spec.body,
        };
        let bytes = message::response(
            invite,
            self.dialog.peer.addr,
            &self.dialog.user_agent,
            &spec,
        );
        self.out.push_back(Out::Response {
            branch: branch.clone(),
            method: Method::Invite,
            code: spec.code,
            bytes: Bytes::from(bytes),
            peer: self.dialog.peer,
        });
    }

    /// UAS: a provisional response (100 without our tag; 180 and 183 with it, our Contact and
    /// Allow).
    pub fn provisional(&mut self, code: u16, reason: &str) {
        if code == 100 {
            return self.respond_invite(&ResponseSpec::new(100, reason));
        }
        let contact = self.dialog.contact.clone();
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        self.respond_invite(&ResponseSpec {
            headers: &hdrs,
            ..ResponseSpec::new(code, reason)
        });
    }

    /// UAS: 200 OK with our SDP; retransmitted until its ACK.
    pub fn accept(&mut self, now: Instant, sdp: &[u8]) {
        let State::Offered { invite, .. } = &self.state else {
            return;
        };
        let cseq = self.dialog.remote_cseq.unwrap_or(1);
        let contact = self.dialog.contact.clone();
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let tag = self.dialog.local_tag.clone();
        let spec = ResponseSpec {
            to_tag: Some(&tag),
            headers: &hdrs,
            body: Some(("application/sdp", sdp)),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = Bytes::from(message::response(
            invite,
            self.dialog.peer.addr,
            &self.dialog.user_agent,
            &spec,
        ));
        self.respond_invite_bytes(200, bytes.clone());
        let ok = PendingOk::new(now, bytes, cseq, self.dialog.peer.transport.reliable());
        self.state = State::Up {
            unacked: Some(Unacked { ok, initial: true }),
            bye_after_ack: false,
        };
    }

    fn respond_invite_bytes(&mut self, code: u16, bytes: Bytes) {
        if let State::Offered { branch, .. } = &self.state {
            self.out.push_back(Out::Response {
                branch: branch.clone(),
                method: Method::Invite,
                code,
                bytes,
                peer: self.dialog.peer,
            });
        }
    }

    /// UAS: a final failure to the INVITE; the session is over (the transaction layer
    /// retransmits the response until its ACK).
    pub fn reject(&mut self, code: u16, reason: &str, headers: &[(&str, &str)]) {
        if !matches!(self.state, State::Offered { .. }) {
            return;
        }
        self.respond_invite(&ResponseSpec {
            headers,
            ..ResponseSpec::new(code, reason)
        });
        self.terminate(false);
    }

    fn terminate(&mut self, bye_timed_out: bool) {
        if !matches!(self.state, State::Terminated) {
            self.state = State::Terminated;
            self.events.push_back(Event::Terminated { bye_timed_out });
        }
    }

    /// A 2xx with our SDP to the far end's re-INVITE or UPDATE (`req`); a re-INVITE's is
    /// retransmitted until its ACK.
    pub fn answer(
        &mut self,
        now: Instant,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        sdp: &[u8],
    ) {
        let contact = self.dialog.contact.clone();
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let tag = self.dialog.local_tag.clone();
        let spec = ResponseSpec {
            to_tag: Some(&tag),
            headers: &hdrs,
            body: Some(("application/sdp", sdp)),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = Bytes::from(message::response(
            req,
            peer.addr,
            &self.dialog.user_agent,
            &spec,
        ));
        self.out.push_back(Out::Response {
            branch: info.branch.clone(),
            method: info.method,
            code: 200,
            bytes: bytes.clone(),
            peer,
        });
        if info.method == Method::Invite
            && let State::Up { unacked, .. } = &mut self.state
        {
            // A 2xx still waiting for its ACK is superseded by this one.
            *unacked = Some(Unacked {
                ok: PendingOk::new(now, bytes, info.cseq, peer.transport.reliable()),
                initial: false,
            });
        }
    }

    /// A request of ours in the dialog (NOTIFY) while it is up; its outcome is not watched.
    pub fn send_request(
        &mut self,
        method: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        rng: &mut Entropy,
    ) {
        if !self.is_up() {
            return;
        }
        let branch = rng.branch();
        let contact = self.dialog.contact.clone();
        let mut hdrs: Vec<(&str, &str)> = vec![("Contact", contact.as_str())];
        hdrs.extend_from_slice(extra);
        let bytes = self.dialog.request(method, &branch, &hdrs, body);
        self.out.push_back(Out::Request {
            branch,
            bytes,
            watched: false,
        });
    }

    /// We end the session: a final response (480) while the far end's INVITE waits, CANCEL
    /// while ours does, BYE once up (after the ACK if our 2xx still waits for it). No
    /// `Failed` or `Ended` follows; `Terminated` does.
    pub fn end(&mut self, now: Instant, rng: &mut Entropy) {
        self.end_with(now, 480, "Temporarily Unavailable", rng)
    }

    /// As [`end`](Self::end), with the final response to a waiting INVITE given.
    pub fn end_with(&mut self, now: Instant, code: u16, reason: &str, rng: &mut Entropy) {
        match &mut self.state {
            State::Offered { .. } => self.reject(code, reason, &[]),
            State::Calling { .. } => self.cancel(now),
            State::Up {
                unacked: Some(_),
                bye_after_ack,
            } => *bye_after_ack = true,
            State::Up { unacked: None, .. } => self.bye(rng),
            State::Cancelling { .. }
            | State::Completed { .. }
            | State::Ending { .. }
            | State::Terminated => {}
        }
    }

    /// UAC: give up on our INVITE. Before any 1xx the CANCEL waits for one (RFC 3261 §9.1);
    /// either way the session ends at the latest 64·T1 from now.
    fn cancel(&mut self, now: Instant) {
        let State::Calling { invite, heard, .. } = &self.state else {
            return;
        };
        let (invite, heard) = (invite.clone(), *heard);
        self.state = State::Cancelling {
            invite,
            cancel_sent: false,
            deadline: now + 64 * T1,
        };
        if heard {
            self.send_cancel();
        }
    }

    fn send_cancel(&mut self) {
        let State::Cancelling {
            invite,
            cancel_sent,
            ..
        } = &mut self.state
        else {
            return;
        };
        if *cancel_sent {
            return;
        }
        *cancel_sent = true;
        let to = self
            .dialog
            .remote()
            .split(";tag=")
            .next()
            .unwrap_or("")
            .to_string();
        let bytes = self.dialog.build_to(
            "CANCEL",
            &invite.target,
            &to,
            &invite.branch,
            invite.cseq,
            &[],
            &[],
        );
        self.out.push_back(Out::Request {
            branch: invite.branch.clone(),
            bytes,
            watched: false,
        });
    }

    fn bye(&mut self, rng: &mut Entropy) {
        let branch = rng.branch();
        let bytes = self.dialog.request("BYE", &branch, &[], &[]);
        self.out.push_back(Out::Request {
            branch: branch.clone(),
            bytes,
            watched: true,
        });
        self.state = State::Ending { branch };
    }

    /// A request in this dialog (or the CANCEL of the far end's INVITE). What the session
    /// answers itself (ACK, BYE, CANCEL, overlapping or out-of-order re-INVITEs) returns
    /// `None`; the rest is the owner's to answer.
    pub fn handle_request(
        &mut self,
        now: Instant,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        rng: &mut Entropy,
    ) -> Option<Incoming> {
        match info.method {
            Method::Ack => {
                self.handle_ack(req, info, rng);
                None
            }
            Method::Cancel => {
                self.respond_with(req, info, peer, &ResponseSpec::new(200, "OK"));
                if matches!(self.state, State::Offered { .. }) {
                    self.respond_invite(&ResponseSpec::new(487, "Request Terminated"));
                    self.events.push_back(Event::Ended(EndCause::Cancel));
                    self.terminate(false);
                }
                None
            }
            Method::Bye => {
                self.respond_with(req, info, peer, &ResponseSpec::new(200, "OK"));
                match &self.state {
                    State::Offered { .. } => {
                        // BYE on the early dialog: the INVITE still needs its final response.
                        self.respond_invite(&ResponseSpec::new(487, "Request Terminated"));
                        self.events.push_back(Event::Ended(EndCause::Bye));
                        self.terminate(false);
                    }
                    State::Up { bye_after_ack, .. } => {
                        if !*bye_after_ack {
                            self.events.push_back(Event::Ended(EndCause::Bye));
                        }
                        self.terminate(false);
                    }
                    State::Calling { .. } => {
                        self.events.push_back(Event::Ended(EndCause::Bye));
                        self.cancel(now);
                    }
                    // Our BYE crossed theirs; or it is all over already.
                    State::Cancelling { .. }
                    | State::Completed { .. }
                    | State::Ending { .. }
                    | State::Terminated => {}
                }
                None
            }
            Method::Invite => {
                let refuse = match &self.state {
                    // An offer while an INVITE of this dialog is unanswered (§14.2).
                    State::Offered { .. } | State::Calling { .. } | State::Cancelling { .. } => {
                        Some((491, "Request Pending", None))
                    }
                    // We are ending the dialog. (A re-INVITE while our 2xx to the last one
                    // waits for its ACK is taken: its 2xx supersedes that one, §14.2.)
                    State::Up {
                        bye_after_ack: true,
                        ..
                    }
                    | State::Ending { .. } => Some((500, "Server Internal Error", Some("1"))),
                    State::Completed { .. } | State::Terminated => {
                        Some((481, "Call/Transaction Does Not Exist", None))
                    }
                    State::Up { .. } => None,
                };
                let refuse = refuse.or_else(|| {
                    self.dialog
                        .remote_cseq
                        .is_some_and(|c| info.cseq <= c)
                        .then_some((500, "Server Internal Error", None))
                });
                if let Some((code, reason, retry)) = refuse {
                    let hdrs: Vec<(&str, &str)> =
                        retry.map(|r| ("Retry-After", r)).into_iter().collect();
                    self.respond_with(
                        req,
                        info,
                        peer,
                        &ResponseSpec {
                            headers: &hdrs,
                            ..ResponseSpec::new(code, reason)
                        },
                    );
                    return None;
                }
                self.dialog.remote_cseq = Some(info.cseq);
                // A target refresh (§12.2.2): the new Contact is where our requests go.
                if let Some(c) = message::header(req, "Contact") {
                    self.dialog.remote_target = message::addr_spec(c).to_string();
                }
                Some(Incoming::Reinvite)
            }
            _ => {
                if self.dialog.remote_cseq.is_none_or(|c| info.cseq > c) {
                    self.dialog.remote_cseq = Some(info.cseq);
                }
                if info.method == Method::Update
                    && let Some(c) = message::header(req, "Contact")
                {
                    self.dialog.remote_target = message::addr_spec(c).to_string();
                }
                Some(Incoming::Request)
            }
        }
    }

    fn handle_ack(&mut self, req: &Request, info: &RequestInfo, rng: &mut Entropy) {
        let State::Up {
            unacked,
            bye_after_ack,
        } = &mut self.state
        else {
            return;
        };
        let Some(u) = unacked.as_ref().filter(|u| u.ok.acked_by(info.cseq)) else {
            return;
        };
        let initial = u.initial;
        *unacked = None;
        if *bye_after_ack {
            return self.bye(rng);
        }
        if initial {
            let sdp = (!req.body.is_empty()).then(|| Bytes::copy_from_slice(&req.body));
            self.events.push_back(Event::Confirmed { sdp });
        }
    }

    /// A response to our INVITE (UAC).
    pub fn handle_response(&mut self, now: Instant, r: &ResponseInfo, rng: &mut Entropy) {
        if r.method != Method::Invite {
            return;
        }
        if let Some(tag) = &r.to_tag
            && ((200..300).contains(&r.code) || self.dialog.remote_tag.is_none())
        {
            // The dialog's tag is the 2xx's (a 1xx may come from another fork).
            self.dialog.set_remote_tag(tag);
        }
        match &mut self.state {
            State::Calling { invite, heard, .. } => {
                if r.cseq != invite.cseq {
                    return;
                }
                if r.code < 200 {
                    if !*heard {
                        *heard = true;
                        invite.retransmit = None;
                        self.events.push_back(Event::Ringing { code: r.code });
                    }
                } else if r.code < 300 {
                    self.answered(r, rng);
                } else {
                    let (target, branch, cseq) =
                        (invite.target.clone(), invite.branch.clone(), invite.cseq);
                    let ack = self.failure_ack(r, &target, &branch, cseq);
                    self.out.push_back(Out::Send(ack.clone()));
                    let State::Calling {
                        parts, auth_tried, ..
                    } = &mut self.state
                    else {
                        return;
                    };
                    if matches!(r.code, 401 | 407) && !*auth_tried {
                        let auth = parts.credentials.as_ref().and_then(|c| {
                            let (_, challenge) = r.challenge.as_ref()?;
                            crate::sip::digest::authorization(
                                r.code,
                                challenge,
                                (&c.user, &c.password),
                                "INVITE",
                                &target,
                                &rng.token(),
                            )
                        });
                        if let Some(auth) = auth {
                            *auth_tried = true;
                            let parts = parts.clone();
                            let invite = self.build_invite(now, &target, &parts, Some(auth), rng);
                            if let State::Calling {
                                invite: i, heard, ..
                            } = &mut self.state
                            {
                                *i = invite;
                                *heard = false;
                            }
                            return;
                        }
                    }
                    self.complete(now, ack);
                    self.events.push_back(Event::Failed { code: r.code });
                }
            }
            State::Cancelling {
                invite,
                cancel_sent,
                ..
            } => {
                if r.cseq != invite.cseq {
                    return;
                }
                if r.code < 200 {
                    if !*cancel_sent {
                        self.send_cancel();
                    }
                } else if r.code < 300 {
                    // The 2xx crossed our CANCEL: the call is over for us all the same.
                    self.answered(r, rng);
                    self.events.retain(|e| !matches!(e, Event::Answered { .. }));
                    self.bye(rng);
                } else {
                    let (target, branch, cseq) =
                        (invite.target.clone(), invite.branch.clone(), invite.cseq);
                    let ack = self.failure_ack(r, &target, &branch, cseq);
                    self.out.push_back(Out::Send(ack.clone()));
                    self.complete(now, ack);
                }
            }
            State::Completed { ack, .. } => {
                if r.code >= 300 {
                    self.out.push_back(Out::Send(ack.clone()));
                }
            }
            State::Up { .. } | State::Ending { .. } | State::Terminated => {
                // A retransmitted 2xx: our ACK was lost.
                if (200..300).contains(&r.code)
                    && let Some(ack) = &self.ack
                {
                    self.out.push_back(Out::Send(ack.clone()));
                }
            }
            State::Offered { .. } => {}
        }
    }

    /// The 2xx to our INVITE: ACK it; the dialog takes its route set and remote target.
    fn answered(&mut self, r: &ResponseInfo, rng: &mut Entropy) {
        let cseq = match &self.state {
            State::Calling { invite, .. } | State::Cancelling { invite, .. } => invite.cseq,
            _ => return,
        };
        if let Some(c) = &r.contact {
            self.dialog.remote_target = c.clone();
        }
        if !r.record_route.is_empty() {
            self.dialog.route_set = r.record_route.iter().rev().cloned().collect();
        }
        let branch = rng.branch();
        let target = self.dialog.remote_target.clone();
        let ack = self.dialog.build("ACK", &target, &branch, cseq, &[], &[]);
        self.out.push_back(Out::Send(ack.clone()));
        self.ack = Some(ack);
        self.state = State::Up {
            unacked: None,
            bye_after_ack: false,
        };
        self.events.push_back(Event::Answered {
            sdp: r.body.clone(),
        });
    }

    /// The ACK of a failure: on the INVITE's branch, with the response's To (§17.1.1.3).
    fn failure_ack(&self, r: &ResponseInfo, target: &str, branch: &str, cseq: u32) -> Bytes {
        self.dialog
            .build_to("ACK", target, &r.to, branch, cseq, &[], &[])
    }

    /// Our INVITE got its final failure: kept for timer D to ACK retransmissions of it.
    fn complete(&mut self, now: Instant, ack: Bytes) {
        let until = if self.dialog.peer.transport.reliable() {
            now
        } else {
            now + 64 * T1
        };
        self.state = State::Completed { ack, until };
        if self.dialog.peer.transport.reliable() {
            self.terminate(false);
        }
    }

    /// A request we sent through a client transaction ended: `code` its final status, `None`
    /// when it timed out.
    pub fn handle_request_done(&mut self, branch: &str, code: Option<u16>) {
        if let State::Ending { branch: b } = &self.state
            && b == branch
        {
            self.terminate(code.is_none());
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, rng: &mut Entropy) {
        match &mut self.state {
            State::Calling {
                invite, deadline, ..
            } => {
                if let Some(r) = invite.retransmit.as_mut().filter(|r| r.at <= now) {
                    r.interval *= 2;
                    r.at = now + r.interval;
                    self.out.push_back(Out::Send(invite.bytes.clone()));
                }
                if *deadline <= now {
                    self.cancel(now);
                    self.events.push_back(Event::Failed { code: 408 });
                }
            }
            State::Cancelling {
                invite,
                cancel_sent,
                deadline,
            } => {
                if !*cancel_sent && let Some(r) = invite.retransmit.as_mut().filter(|r| r.at <= now)
                {
                    r.interval *= 2;
                    r.at = now + r.interval;
                    self.out.push_back(Out::Send(invite.bytes.clone()));
                }
                if *deadline <= now {
                    // No final response within 64·T1 of the CANCEL: nobody is there.
                    self.terminate(false);
                }
            }
            State::Completed { until, .. } if *until <= now => {
                self.terminate(false);
            }
            State::Up {
                unacked: Some(u),
                bye_after_ack,
            } => {
                if let Some(at) = u.ok.next_retransmit().filter(|&at| at <= now)
                    && let Some((bytes, _)) = u.ok.retransmit(now, at)
                {
                    self.out.push_back(Out::Send(bytes));
                }
                if u.ok.deadline <= now {
                    // No ACK within 64·T1: the dialog is over (§13.3.1.4).
                    let told = *bye_after_ack;
                    self.state = State::Up {
                        unacked: None,
                        bye_after_ack: false,
                    };
                    if !told {
                        self.events.push_back(Event::Ended(EndCause::NoAck));
                    }
                    self.bye(rng);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{SipMessage, Transport};
    use std::sync::Arc;

    fn params(transport: Transport) -> DialogParams {
        DialogParams {
            call_id: "cid@h".into(),
            local_tag: "tag1".into(),
            local_uri: "<sip:13800001234@127.0.0.1:5060>".into(),
            remote: "<sip:12366@127.0.0.1:5070>".into(),
            remote_tag: None,
            remote_target: "sip:12366@127.0.0.1:5070".into(),
            route_set: vec![],
            peer: Peer {
                transport,
                addr: "127.0.0.1:5070".parse().unwrap(),
            },
            via_host: "127.0.0.1:5060".into(),
            contact: "<sip:hotline@127.0.0.1:5060>".into(),
            user_agent: Arc::from("test"),
        }
    }

    fn call(now: Instant, creds: Option<(String, String)>) -> (InviteSession, Entropy) {
        let mut rng = Entropy::seeded(1);
        let s = InviteSession::outgoing(
            now,
            UacParams {
                dialog: params(Transport::Udp),
                target: "sip:12366@127.0.0.1:5070".into(),
                extra: &[],
                sdp: b"v=0\r\n",
                ring_timeout: Duration::from_secs(10),
                credentials: creds,
            },
            &mut rng,
        );
        (s, rng)
    }

    fn text(o: &Out) -> String {
        match o {
            Out::Send(b)
            | Out::Invite { bytes: b, .. }
            | Out::Request { bytes: b, .. }
            | Out::Response { bytes: b, .. } => String::from_utf8_lossy(b).into_owned(),
        }
    }

    fn drain(s: &mut InviteSession) -> Vec<String> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|o| text(&o))
            .collect()
    }

    fn events(s: &mut InviteSession) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// A response to the session's current INVITE.
    fn resp(s: &InviteSession, code: u16, extra: &str) -> ResponseInfo {
        let cseq = s.dialog.local_cseq;
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=tag1\r\n\
             To: <sip:12366@127.0.0.1:5070>;tag=r1\r\nCall-ID: cid@h\r\nCSeq: {cseq} INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let SipMessage::Response(r) = message::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        message::response_info(&r).unwrap()
    }

    #[test]
    fn retransmits_then_cancels_after_the_first_1xx_at_the_ring_timeout() {
        let t0 = Instant::now();
        let (mut s, mut rng) = call(t0, None);
        let first = drain(&mut s);
        assert!(first[0].contains("From: <sip:13800001234@127.0.0.1:5060>;tag=tag1"));
        assert_eq!(s.poll_timeout(), Some(t0 + T1));
        s.handle_timeout(t0 + T1, &mut rng);
        assert_eq!(drain(&mut s).len(), 1, "timer A retransmission");
        assert_eq!(s.poll_timeout(), Some(t0 + 3 * T1), "doubling");
        s.handle_response(t0 + T1, &resp(&s, 180, ""), &mut rng);
        assert_eq!(events(&mut s), [Event::Ringing { code: 180 }]);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + Duration::from_secs(10)),
            "no retransmission once it rings: only the ring timeout is left"
        );
        s.handle_timeout(t0 + Duration::from_secs(10), &mut rng);
        let out = drain(&mut s);
        assert!(
            out[0].starts_with("CANCEL sip:12366@127.0.0.1:5070"),
            "{out:?}"
        );
        assert!(
            out[0].contains("To: <sip:12366@127.0.0.1:5070>\r\n"),
            "CANCEL's To has no tag"
        );
        assert_eq!(events(&mut s), [Event::Failed { code: 408 }]);
        s.handle_response(t0 + Duration::from_secs(10), &resp(&s, 487, ""), &mut rng);
        let out = drain(&mut s);
        assert!(out[0].starts_with("ACK ") && out[0].contains(";tag=r1"));
        assert!(events(&mut s).is_empty(), "the failure was reported once");
        // Timer D: a retransmitted 487 is ACKed again; then the session is over.
        s.handle_response(t0 + Duration::from_secs(11), &resp(&s, 487, ""), &mut rng);
        assert_eq!(drain(&mut s).len(), 1);
        s.handle_timeout(t0 + Duration::from_secs(10) + 64 * T1, &mut rng);
        assert_eq!(
            events(&mut s),
            [Event::Terminated {
                bye_timed_out: false
            }]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_cancel_before_any_1xx_waits_for_one_and_the_invite_goes_on_meanwhile() {
        let t0 = Instant::now();
        let (mut s, mut rng) = call(t0, None);
        drain(&mut s);
        s.end(t0, &mut rng);
        assert!(drain(&mut s).is_empty(), "no CANCEL before a 1xx");
        s.handle_timeout(t0 + T1, &mut rng);
        assert!(
            drain(&mut s)[0].starts_with("INVITE "),
            "INVITE retransmitted"
        );
        s.handle_response(t0 + T1, &resp(&s, 100, ""), &mut rng);
        assert!(drain(&mut s)[0].starts_with("CANCEL "));
        assert!(events(&mut s).is_empty(), "ended by us: no Failed");
        // A 2xx crossing the CANCEL is ACKed and hung up.
        s.handle_response(
            t0 + T1,
            &resp(&s, 200, "Contact: <sip:agent@10.0.0.9:5080>\r\n"),
            &mut rng,
        );
        let out = drain(&mut s);
        assert!(
            out[0].starts_with("ACK sip:agent@10.0.0.9:5080 "),
            "{out:?}"
        );
        assert!(
            out[1].starts_with("BYE sip:agent@10.0.0.9:5080 "),
            "{out:?}"
        );
        assert!(events(&mut s).is_empty());
    }

    #[test]
    fn answers_a_challenge_once_with_a_new_branch_and_cseq() {
        let t0 = Instant::now();
        let (mut s, mut rng) = call(t0, Some(("hotline".into(), "secret".into())));
        drain(&mut s);
        let ch = "Proxy-Authenticate: Digest realm=\"gw\", nonce=\"abc\", qop=\"auth\"\r\n";
        s.handle_response(t0, &resp(&s, 407, ch), &mut rng);
        let out = drain(&mut s);
        assert!(
            out[0].starts_with("ACK ") && out[0].contains("CSeq: 1 ACK"),
            "{out:?}"
        );
        assert!(
            out[1].contains("CSeq: 2 INVITE")
                && out[1].contains("Proxy-Authorization: Digest username=\"hotline\""),
            "{}",
            out[1]
        );
        assert!(events(&mut s).is_empty());
        s.handle_response(t0, &resp(&s, 407, ch), &mut rng);
        assert_eq!(
            events(&mut s),
            [Event::Failed { code: 407 }],
            "a second challenge is a failure, not a loop"
        );
    }

    #[test]
    fn answer_then_bye_uses_the_remote_target_tag_and_route_set() {
        let t0 = Instant::now();
        let (mut s, mut rng) = call(t0, None);
        drain(&mut s);
        let ok = resp(
            &s,
            200,
            "Contact: <sip:agent@10.0.0.9:5080>\r\nRecord-Route: <sip:p2;lr>\r\nRecord-Route: <sip:p1;lr>\r\n",
        );
        s.handle_response(t0, &ok, &mut rng);
        let out = drain(&mut s);
        assert!(
            out[0].starts_with("ACK sip:agent@10.0.0.9:5080 "),
            "{out:?}"
        );
        assert!(
            out[0].contains("Route: <sip:p1;lr>\r\nRoute: <sip:p2;lr>\r\n"),
            "{}",
            out[0]
        );
        assert!(matches!(&events(&mut s)[..], [Event::Answered { .. }]));
        // The 2xx again: the same ACK again.
        s.handle_response(t0, &ok, &mut rng);
        assert_eq!(drain(&mut s), out);
        s.end(t0, &mut rng);
        let bye = drain(&mut s);
        assert!(
            bye[0].starts_with("BYE sip:agent@10.0.0.9:5080 ") && bye[0].contains(";tag=r1"),
            "{bye:?}"
        );
        s.end(t0, &mut rng);
        assert!(drain(&mut s).is_empty(), "one BYE");
        s.handle_request_done("other", Some(200));
        assert!(events(&mut s).is_empty());
        let branch = bye[0]
            .split("branch=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        s.handle_request_done(&branch, None);
        assert_eq!(
            events(&mut s),
            [Event::Terminated {
                bye_timed_out: true
            }]
        );
    }

    fn incoming(t: Transport) -> (InviteSession, Request, RequestInfo) {
        let text = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
                    From: <sip:138@127.0.0.1>;tag=ft\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
                    Contact: <sip:138@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(req) = message::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        let info = message::request_info(&req).unwrap();
        let mut p = params(t);
        p.remote = "<sip:138@127.0.0.1>;tag=ft".into();
        p.remote_tag = Some("ft".into());
        p.remote_target = "sip:138@127.0.0.1:5070".into();
        (InviteSession::incoming(req.clone(), &info, p), req, info)
    }

    fn request(method: &str, cseq: u32) -> (Request, RequestInfo) {
        let text = format!(
            "{method} sip:hotline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{cseq}\r\n\
             From: <sip:138@127.0.0.1>;tag=ft\r\nTo: <sip:12345@127.0.0.1>;tag=tag1\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        );
        let SipMessage::Request(req) = message::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        let info = message::request_info(&req).unwrap();
        (req, info)
    }

    #[test]
    fn uas_2xx_is_retransmitted_until_the_ack_and_a_bye_wanted_meanwhile_follows_it() {
        let t0 = Instant::now();
        let (mut s, _, _) = incoming(Transport::Udp);
        let mut rng = Entropy::seeded(2);
        let peer = s.dialog.peer;
        s.provisional(100, "Trying");
        s.provisional(180, "Ringing");
        s.accept(t0, b"v=0\r\n");
        let out = drain(&mut s);
        assert!(out[0].starts_with("SIP/2.0 100") && !out[0].contains("tag=tag1"));
        assert!(out[1].starts_with("SIP/2.0 180") && out[1].contains(";tag=tag1"));
        assert!(out[2].starts_with("SIP/2.0 200") && out[2].contains("Contact: <sip:hotline@"));
        s.handle_timeout(t0 + T1, &mut rng);
        assert!(
            drain(&mut s)[0].starts_with("SIP/2.0 200"),
            "retransmitted at T1"
        );
        s.end(t0 + T1, &mut rng);
        assert!(drain(&mut s).is_empty(), "the BYE waits for the ACK");
        let (ack, ack_info) = request("ACK", 1);
        assert_eq!(
            s.handle_request(t0 + T1, &ack, &ack_info, peer, &mut rng),
            None
        );
        let out = drain(&mut s);
        assert!(out[0].starts_with("BYE sip:138@127.0.0.1:5070 "), "{out:?}");
        assert!(
            events(&mut s).is_empty(),
            "no Confirmed for a session being ended"
        );
    }

    #[test]
    fn uas_without_ack_ends_with_bye_after_64_t1_and_reinvites_are_ordered() {
        let t0 = Instant::now();
        let (mut s, _, _) = incoming(Transport::Udp);
        let mut rng = Entropy::seeded(3);
        let peer = s.dialog.peer;
        s.accept(t0, b"v=0\r\n");
        drain(&mut s);
        let (re, re_info) = request("INVITE", 1);
        assert_eq!(s.handle_request(t0, &re, &re_info, peer, &mut rng), None);
        assert!(
            drain(&mut s)[0].starts_with("SIP/2.0 500"),
            "out of order: CSeq not above the INVITE's"
        );
        let mut now = t0;
        while let Some(at) = s.poll_timeout() {
            now = at;
            s.handle_timeout(now, &mut rng);
            if !matches!(
                s.state,
                State::Up {
                    unacked: Some(_),
                    ..
                }
            ) {
                break;
            }
        }
        assert_eq!(now - t0, 64 * T1);
        assert_eq!(events(&mut s), [Event::Ended(EndCause::NoAck)]);
        assert!(drain(&mut s).last().unwrap().starts_with("BYE "));
    }

    #[test]
    fn uas_cancel_gets_200_and_the_invite_487() {
        let (mut s, _, _) = incoming(Transport::Udp);
        let mut rng = Entropy::seeded(4);
        let peer = s.dialog.peer;
        let (c, c_info) = request("CANCEL", 1);
        s.handle_request(Instant::now(), &c, &c_info, peer, &mut rng);
        let out = drain(&mut s);
        assert!(out[0].starts_with("SIP/2.0 200") && out[0].contains("CSeq: 1 CANCEL"));
        assert!(out[1].starts_with("SIP/2.0 487") && out[1].contains("CSeq: 1 INVITE"));
        assert_eq!(
            events(&mut s),
            [
                Event::Ended(EndCause::Cancel),
                Event::Terminated {
                    bye_timed_out: false
                }
            ]
        );
    }
}
