//! The router (after quinn-proto's `Endpoint`): every SIP datagram goes through here first. It
//! keeps the transaction layer (our server and non-INVITE client transactions, RFC 3261 §17)
//! and maps what comes in to the session it belongs to, by typed handle `H`:
//! - a request in a dialog by its Call-ID and our tag (in To);
//! - the CANCEL of a far end's INVITE by the INVITE's branch;
//! - a response to our INVITE by its branch (learnt when the session sends the INVITE);
//! - the outcome of one of our other requests by its client transaction, to its owner `O`.
//!
//! What matches no session comes out as [`Input::Request`] for call control to answer
//! (new INVITEs, REGISTER, OPTIONS, requests naming an unknown dialog). Retransmissions are
//! answered here, malformed messages get their 400 (or are dropped and counted), and sessions'
//! output ([`Out`]) becomes datagrams through the right transaction.

use super::dialog::DialogKey;
use super::dialog::invite::Out;
use super::message::{self, RequestInfo, ResponseInfo, ResponseSpec};
use super::transaction::{ClientTransactions, Disposition, ServerTransactions};
use super::{Method, Peer, Request, SipMessage, Transmit};
use crate::entropy::Entropy;
use crate::stats::Stats;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// What a datagram or a timer brought, for call control.
#[derive(Debug)]
pub enum Input<H, O> {
    /// A request for no session we know.
    Request(Box<Request>, RequestInfo, Peer),
    /// A request in session `H`'s dialog, or the CANCEL of its INVITE.
    InDialog(H, Box<Request>, RequestInfo, Peer),
    /// A response to session `H`'s INVITE.
    InviteResponse(H, ResponseInfo),
    /// A request of ours ended: its final status, or `None` when it timed out.
    Done {
        owner: O,
        branch: String,
        code: Option<u16>,
    },
}

/// Keys a session is known by, for its removal.
#[derive(Debug, Clone)]
enum Key {
    Dialog(DialogKey),
    TheirInvite(String),
    OurInvite(String),
    Merged((String, String)),
}

pub struct Endpoint<H, O> {
    server: ServerTransactions,
    client: ClientTransactions<Option<O>>,
    dialogs: HashMap<DialogKey, H>,
    /// The far end's INVITE branch → its UAS session (CANCEL).
    their_invites: HashMap<String, H>,
    /// Our INVITE branches → the UAC session (responses).
    our_invites: HashMap<String, H>,
    /// (Call-ID, the far end's tag) of UAS sessions: a second INVITE with them and no To tag
    /// is a merged request (§8.2.2.2).
    merged: HashMap<(String, String), H>,
    keys: HashMap<H, Vec<Key>>,
    out: VecDeque<Transmit>,
    user_agent: Arc<str>,
    stats: Arc<Stats>,
}

impl<H: Copy + Eq + Hash + std::fmt::Debug, O: Clone> Endpoint<H, O> {
    pub fn new(user_agent: Arc<str>, stats: Arc<Stats>) -> Self {
        Endpoint {
            server: ServerTransactions::default(),
            client: ClientTransactions::default(),
            dialogs: HashMap::new(),
            their_invites: HashMap::new(),
            our_invites: HashMap::new(),
            merged: HashMap::new(),
            keys: HashMap::new(),
            out: VecDeque::new(),
            user_agent,
            stats,
        }
    }

    fn index(&mut self, h: H, k: Key) {
        self.keys.entry(h).or_default().push(k);
    }

    /// Session `h` of dialog `key` exists from now on; `their_invite`: the branch and the far
    /// end's tag of its INVITE when it is a UAS session.
    pub fn insert(&mut self, h: H, key: DialogKey, their_invite: Option<(&str, &str)>) {
        if let Some((branch, remote_tag)) = their_invite {
            self.their_invites.insert(branch.to_string(), h);
            self.index(h, Key::TheirInvite(branch.to_string()));
            let m = (key.call_id.clone(), remote_tag.to_string());
            self.merged.insert(m.clone(), h);
            self.index(h, Key::Merged(m));
        }
        self.dialogs.insert(key.clone(), h);
        self.index(h, Key::Dialog(key));
    }

    /// Session `h` is gone: nothing routes to it any more.
    pub fn remove(&mut self, h: H) {
        for k in self.keys.remove(&h).unwrap_or_default() {
            match k {
                Key::Dialog(d) => {
                    self.dialogs.remove(&d);
                }
                Key::TheirInvite(b) => {
                    self.their_invites.remove(&b);
                }
                Key::OurInvite(b) => {
                    self.our_invites.remove(&b);
                }
                Key::Merged(m) => {
                    self.merged.remove(&m);
                }
            }
        }
    }

    /// The session of the dialog with this Call-ID and our tag.
    pub fn dialog(&self, call_id: &str, local_tag: &str) -> Option<H> {
        self.dialogs
            .get(&DialogKey {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
            })
            .copied()
    }

    /// Whether an INVITE with this branch is one we are already serving (a retransmission).
    pub fn knows_invite(&self, branch: &str) -> bool {
        self.server.contains(branch, Method::Invite)
    }

    /// Whether an INVITE with this Call-ID and From tag (and no To tag) repeats one we have
    /// on another branch: a merged or looped request.
    pub fn is_merged(&self, call_id: &str, from_tag: &str) -> bool {
        self.merged
            .contains_key(&(call_id.to_string(), from_tag.to_string()))
    }

    /// Session `h`'s output, to the dialog's `peer`; `owner` is told of watched requests.
    pub fn send(&mut self, now: Instant, h: H, peer: Peer, out: Out, owner: O) {
        match out {
            Out::Send(bytes) => self.out.push_back(Transmit { peer, bytes }),
            Out::Invite { branch, bytes } => {
                self.our_invites.insert(branch.clone(), h);
                self.index(h, Key::OurInvite(branch));
                self.out.push_back(Transmit { peer, bytes });
            }
            Out::Request {
                branch,
                bytes,
                watched,
            } => {
                let owner = watched.then_some(owner);
                let t = self
                    .client
                    .start(now, &branch, owner, Transmit { peer, bytes });
                self.out.push_back(t);
            }
            Out::Response {
                branch,
                method,
                code,
                bytes,
                peer,
            } => {
                let t = self
                    .server
                    .respond(now, &branch, method, code, bytes.to_vec(), peer);
                self.out.push_back(t);
            }
        }
    }

    /// A request of ours outside any session (a keep-alive OPTIONS): `owner` is told of its
    /// outcome.
    pub fn request(&mut self, now: Instant, branch: &str, t: Transmit, owner: O) {
        let t = self.client.start(now, branch, Some(owner), t);
        self.out.push_back(t);
    }

    /// Answers a request that belongs to no session, through its server transaction; a final
    /// response gets a To tag of its own.
    pub fn respond(
        &mut self,
        now: Instant,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        spec: &ResponseSpec,
        rng: &mut Entropy,
    ) {
        let tag = rng.token();
        let spec = with_to_tag(spec, &tag);
        let bytes = message::response(req, peer.addr, &self.user_agent, &spec);
        let t = self
            .server
            .respond(now, &info.branch, info.method, spec.code, bytes, peer);
        self.out.push_back(t);
    }

    /// A response with no transaction (the request could not be read well enough for one).
    pub fn respond_stateless(
        &mut self,
        req: &Request,
        peer: Peer,
        spec: &ResponseSpec,
        rng: &mut Entropy,
    ) {
        let tag = rng.token();
        let spec = with_to_tag(spec, &tag);
        let bytes = message::response(req, peer.addr, &self.user_agent, &spec);
        self.out.push_back(Transmit {
            peer,
            bytes: bytes.into(),
        });
    }

    /// A message built elsewhere, sent as it is (a shed call's 503).
    pub fn send_stateless(&mut self, t: Transmit) {
        self.out.push_back(t);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.server.poll_timeout(), self.client.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires the transactions' due timers; what timed out comes back as `Done`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Input<H, O>> {
        let mut retrans = Vec::new();
        self.server.handle_timeout(now, &mut retrans);
        let mut done = Vec::new();
        self.client.handle_timeout(now, &mut retrans, &mut done);
        self.out.extend(retrans);
        done.into_iter()
            .filter_map(|d| {
                Some(Input::Done {
                    owner: d.owner?,
                    branch: d.branch,
                    code: d.code,
                })
            })
            .collect()
    }

    /// One SIP message from the network, routed.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        data: &[u8],
        peer: Peer,
        rng: &mut Entropy,
    ) -> Option<Input<H, O>> {
        let msg = match message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.malformed(data, peer, &e.to_string());
                return None;
            }
        };
        match msg {
            SipMessage::Response(resp) => {
                let info = message::response_info(&resp)?;
                if info.method == Method::Invite {
                    let h = *self.our_invites.get(&info.branch)?;
                    return Some(Input::InviteResponse(h, info));
                }
                let d = self.client.on_response(now, &info.branch, info.code)?;
                debug!(code = info.code, "request answered");
                Some(Input::Done {
                    owner: d.owner?,
                    branch: d.branch,
                    code: d.code,
                })
            }
            SipMessage::Request(req) => {
                let info = match message::request_info(&req) {
                    Ok(i) => i,
                    Err(e) => {
                        debug!(src = %peer.addr, method = %req.method, error = %e, "request refused: unusable headers");
                        if req.method != Method::Ack {
                            let warning = format!("399 hotline \"{e}\"");
                            let hdrs = [("Warning", warning.as_str())];
                            let spec = ResponseSpec {
                                headers: &hdrs,
                                ..ResponseSpec::new(400, "Bad Request")
                            };
                            self.respond_stateless(&req, peer, &spec, rng);
                            Stats::inc(&self.stats.malformed_answered);
                        } else {
                            Stats::inc(&self.stats.malformed_dropped);
                        }
                        return None;
                    }
                };
                if info.max_forwards == Some(0) && info.method != Method::Ack {
                    let spec = ResponseSpec::new(483, "Too Many Hops");
                    self.respond_stateless(&req, peer, &spec, rng);
                    return None;
                }
                match self.server.on_request(now, &info.branch, info.method, peer) {
                    Disposition::Retransmission(Some(t)) => {
                        self.out.push_back(t);
                        return None;
                    }
                    Disposition::Retransmission(None) | Disposition::AckAbsorbed => return None,
                    Disposition::AckForDialog | Disposition::New => {}
                }
                let session = match (info.method, info.to_tag.as_deref()) {
                    (Method::Cancel, _) => self.their_invites.get(&info.branch).copied(),
                    (_, Some(tag)) => self.dialog(&info.call_id, tag),
                    (_, None) => None,
                };
                Some(match session {
                    Some(h) => Input::InDialog(h, Box::new(req), info, peer),
                    None => Input::Request(Box::new(req), info, peer),
                })
            }
        }
    }

    fn malformed(&mut self, data: &[u8], peer: Peer, reason: &str) {
        match message::fallback_response(data, peer.addr, &self.user_agent, reason) {
            Some(bytes) => {
                Stats::inc(&self.stats.malformed_answered);
                debug!(src = %peer.addr, reason, "malformed SIP answered");
                self.out.push_back(Transmit {
                    peer,
                    bytes: bytes.into(),
                });
            }
            None => {
                Stats::inc(&self.stats.malformed_dropped);
                debug!(src = %peer.addr, reason, "malformed SIP dropped");
            }
        }
    }

    /// What is still held: (server transactions, client transactions, routes), for the
    /// leak check of the tests.
    pub fn held(&self) -> (usize, usize, usize) {
        (
            self.server.len(),
            self.client.len(),
            self.dialogs.len()
                + self.their_invites.len()
                + self.our_invites.len()
                + self.merged.len()
                + self.keys.len(),
        )
    }
}

/// A final response must carry a To tag (RFC 3261 §8.2.6.2); `message::response` keeps the
/// request's own tag when it has one.
fn with_to_tag<'a>(spec: &ResponseSpec<'a>, tag: &'a str) -> ResponseSpec<'a> {
    ResponseSpec {
        code: spec.code,
        reason: spec.reason,
        to_tag: spec
            .to_tag
            .or(if spec.code >= 200 { Some(tag) } else { None }),
        headers: spec.headers,
        body: spec.body,
    }
}
