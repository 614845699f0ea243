//! Call control: the B2BUA, sans-IO. SIP datagrams, RTP events and time go in; SIP messages
//! come out of [`Core::poll_transmit`], RTP leaves through [`MediaIo`], records through
//! [`Core::poll_record`], and [`Core::poll_timeout`] says when to call
//! [`Core::handle_timeout`] next.
//!
//! `Core` is a router. The SIP [`Endpoint`] maps every message to a typed [`Leg`]; each leg
//! is its business data plus one [`InviteSession`]:
//! - [`caller`]: a citizen's call (UAS): IVR, queue, the seat it talks to, the survey;
//! - [`seat_leg`]: our call to a seat's phone (UAC): an offer of a caller or of a transfer;
//! - [`trunk`]: our call over a trunk (UAC): a transfer target, a probe, a consultation's target;
//! - [`consultation`]: a seat's own call to a transfer target through us (UAS), before an
//!   attended transfer.
//!
//! Around them: the ACD ([`Acd`], one owner of agents, lines and offers), transfers
//! ([`transfer`]), answer-rate probes ([`probe`]) and the seats' registrations and states
//! ([`seats`]). Time comes in as [`Now`] and randomness from one [`Entropy`]: nothing here
//! reads a clock or the operating system's random numbers.

mod callback;
mod caller;
mod confidential;
mod consultation;
mod diversion;
mod media;
mod probe;
mod repeat;
mod revisit;
mod seat_leg;
mod seats;
mod srtp;
mod transfer;
mod trunk;
mod waiting;

pub use confidential::{CallView, NumberReadError};
pub use media::{MediaIo, RtpEvent};
pub use revisit::{RevisitError, RevisitView};
pub use seats::{AgentAction, ContactView, QueueDirectory, QueueView, SeatDirectory, SeatView};
pub use transfer::TransferError;

use crate::acd::Acd;
use crate::config::Config;
use crate::entropy::Entropy;
use crate::ivr::dialplan::{Dialplan, QueueId, Retained};
use crate::ivr::engine::TimerKind;
use crate::media::engine::{MediaEngine, StreamId};
use crate::metrics::figures::Figures;
use crate::metrics::{Event as RecordEvent, Record};
use crate::registrar::Registrar;
use crate::sip::dialog::invite::{Event as SessionEvent, InviteSession};
use crate::sip::endpoint::{Endpoint, Input};
use crate::sip::glance::Glance;
use crate::sip::message::{RequestInfo, ResponseSpec};
use crate::sip::{ALLOW, Method, Peer, Request, Transmit};
use crate::stats::Stats;
use crate::time::{Now, TimerTable};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info};

const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// A citizen's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(pub u64);
/// Our call to a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatLegId(pub u64);
/// Our call over a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(pub u64);
/// A seat's consultation call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsultationId(pub u64);

/// One call leg: what the router maps every SIP message and RTP event to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leg {
    Caller(CallerId),
    Seat(SeatLegId),
    Trunk(TrunkId),
    Consultation(ConsultationId),
}

/// Who is told the outcome of a request we sent (BYE of a leg; a keep-alive OPTIONS).
#[derive(Debug, Clone)]
enum Owner {
    Leg(Leg),
    Qualify { seat: usize, uri: String },
}

/// Call control's timers: at most one deadline per key (a [`TimerTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// The earliest timer of a leg's INVITE session.
    Session(Leg),
    /// The ring time before a caller is answered (`sip.ring_ms`).
    Answer(CallerId),
    Ivr(CallerId, TimerKind),
    /// A transfer's next step (an expert group's deadline, the end of a prompt).
    Transfer(CallerId),
    /// A seat comes free (wrap-up or a retry delay ends): offer it the next caller at once.
    AgentReady(usize),
    /// Queue `usize` may have no member logged in: its callers are sent on.
    NoAgents(usize),
    ProbeRound(usize),
    ProbeAttempt(u64),
    /// A held callback may go back in line (spacing over, or the allowed hours open).
    Callback(u64),
    /// The revisit cases are looked at (due ones called).
    Revisits,
    /// A revisit call's survey timer (its IVR's epoch).
    RevisitIvr(u64),
    /// A called-back citizen's survey timer (by trunk leg).
    CallbackSurvey(u64),
    Housekeeping,
}

/// What call control is configured with.
struct Env {
    cfg: Arc<Config>,
    plan: Arc<Dialplan>,
    stats: Arc<Stats>,
    queue_prompts: crate::acd::announce::QueuePrompts,
    user_agent: Arc<str>,
}

/// Every leg, by kind; ids come from one counter, so a leg's id is never reused.
#[derive(Default)]
struct Legs {
    callers: HashMap<CallerId, caller::Caller>,
    seats: HashMap<SeatLegId, seat_leg::SeatLeg>,
    trunks: HashMap<TrunkId, trunk::TrunkCall>,
    consultations: HashMap<ConsultationId, consultation::Consultation>,
    next: u64,
    /// Shed callers hearing the busy prompt.
    busy_prompts: usize,
}

impl Legs {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn session_mut(&mut self, leg: Leg) -> Option<&mut InviteSession> {
        match leg {
            Leg::Caller(k) => self.callers.get_mut(&k).map(|c| &mut c.session),
            Leg::Seat(k) => self.seats.get_mut(&k).map(|l| &mut l.session),
            Leg::Trunk(k) => self.trunks.get_mut(&k).map(|t| &mut t.session),
            Leg::Consultation(k) => self.consultations.get_mut(&k).map(|c| &mut c.session),
        }
    }

    fn session(&self, leg: Leg) -> Option<&InviteSession> {
        match leg {
            Leg::Caller(k) => self.callers.get(&k).map(|c| &c.session),
            Leg::Seat(k) => self.seats.get(&k).map(|l| &l.session),
            Leg::Trunk(k) => self.trunks.get(&k).map(|t| &t.session),
            Leg::Consultation(k) => self.consultations.get(&k).map(|c| &c.session),
        }
    }

    fn span(&self, leg: Leg) -> Option<tracing::Span> {
        match leg {
            Leg::Caller(k) => self.callers.get(&k).map(|c| c.span.clone()),
            Leg::Consultation(k) => self.consultations.get(&k).map(|c| c.span.clone()),
            _ => None,
        }
    }
}

/// The media engine (our streams), the runtime's RTP side, and which leg each stream is.
struct Media<M: MediaIo> {
    engine: MediaEngine<M::Tx>,
    io: M,
    streams: HashMap<StreamId, Leg>,
}

impl<M: MediaIo> Media<M> {
    /// Removes a stream and closes its RTP endpoint.
    fn release(&mut self, stream: StreamId, stats: &Stats) {
        self.streams.remove(&stream);
        if let Some((tx, s)) = self.engine.remove(stream) {
            stats
                .rtp_frames_skipped
                .fetch_add(s.frames_skipped, std::sync::atomic::Ordering::Relaxed);
            self.io.close(tx);
        }
    }

    fn bridge(&mut self, a: StreamId, b: StreamId) {
        if let (Some(x), Some(y)) = (self.engine.tx(a), self.engine.tx(b)) {
            self.io.bridge(x, y);
        }
    }

    fn unbridge(&mut self, a: StreamId) {
        if let Some(x) = self.engine.tx(a) {
            self.io.unbridge(x);
        }
    }

    /// The stream stops sending our audio (the relay or the mixer has it).
    fn quiet(&mut self, s: StreamId) {
        self.engine.stop(s);
        self.engine.set_sending(s, false);
    }

    fn codec(&self, s: StreamId) -> (crate::media::Codec, u8) {
        (
            self.engine.codec(s).unwrap_or(crate::media::Codec::Pcmu),
            self.engine.payload_type(s).unwrap_or(0),
        )
    }
}

/// The records for the store, and today's figures folded from them.
#[derive(Default)]
struct Records {
    queue: VecDeque<Record>,
    figures: Figures,
}

pub struct Core<M: MediaIo> {
    env: Env,
    sip: Endpoint<Leg, Owner>,
    legs: Legs,
    media: Media<M>,
    acd: Acd,
    registrar: Registrar,
    transfers: HashMap<CallerId, transfer::Transfer>,
    /// Callback requests (回拨), by their key in the ACD's lines.
    callbacks: HashMap<u64, crate::acd::callback::Request>,
    /// Called-back citizens rating the call, by trunk leg.
    callback_surveys: HashMap<u64, callback::Rating>,
    revisits: revisit::Revisits,
    repeat: crate::acd::repeat::RepeatCallers,
    probes: probe::Probes,
    timers: TimerTable<Timer>,
    records: Records,
    views: seats::Views,
    rng: Entropy,
    admission: crate::overload::Admission,
    /// Stream links to trunks that are up (their connection numbers).
    links_up: std::collections::HashSet<u64>,
    shutting_down: bool,
}

impl<M: MediaIo> Core<M> {
    /// Call control as of `now`, with its RTP side and its random numbers.
    pub fn new(
        now: Now,
        cfg: Arc<Config>,
        plan: Arc<Dialplan>,
        prompts: Arc<crate::media::prompts::PromptStore>,
        stats: Arc<Stats>,
        media_io: M,
        mut rng: Entropy,
    ) -> Self {
        let user_agent: Arc<str> = Arc::from(cfg.sip.user_agent.as_str());
        // The nodes of one centre share the nonce secret: a challenge from one is good at the
        // other behind the same proxy.
        let key = if cfg.registrar.nonce_secret.is_empty() {
            rng.key()
        } else {
            use sha2::Digest as _;
            sha2::Sha256::digest(cfg.registrar.nonce_secret.as_bytes()).into()
        };
        let mut registrar = Registrar::new(cfg.registrar.clone(), cfg.seats.clone(), key);
        registrar.trust_proxies(&cfg.sip.trusted_proxies);
        let acd = Acd::new(&plan, &cfg.seats, now.mono, cfg.agents.auto_pause_after);
        Core {
            sip: Endpoint::new(user_agent.clone(), stats.clone()),
            legs: Legs::default(),
            media: Media {
                engine: MediaEngine::new(prompts.clone()),
                io: media_io,
                streams: HashMap::new(),
            },
            acd,
            registrar,
            transfers: HashMap::new(),
            callbacks: HashMap::new(),
            callback_surveys: HashMap::new(),
            revisits: revisit::Revisits::default(),
            repeat: crate::acd::repeat::RepeatCallers::new(&cfg),
            probes: probe::Probes::default(),
            timers: TimerTable::default(),
            records: Records::default(),
            views: seats::Views::default(),
            rng,
            admission: crate::overload::Admission::new(cfg.overload.clone(), stats.clone()),
            links_up: Default::default(),
            shutting_down: false,
            env: Env {
                queue_prompts: crate::acd::announce::QueuePrompts::new(&prompts),
                cfg,
                plan,
                stats,
                user_agent,
            },
        }
    }

    /// Starts the periodic work (binding expiry, keep-alives, probes) and publishes the seat
    /// and queue lists.
    pub fn start(&mut self, now: Now) {
        self.timers
            .set(Timer::Housekeeping, Some(now.mono + HOUSEKEEPING_EVERY));
        for i in 0..self.registrar.seats().len() {
            self.publish_seat(i, now);
        }
        self.publish_queues(now);
        self.start_probes(now);
        // Revisit cases restored from the store are looked at now.
        self.timers.set(Timer::Revisits, Some(now.mono));
    }

    /// Today's figures so far, from the store's records (a restart mid-day goes on counting).
    pub fn preload_figures(&mut self, records: &[Record]) {
        for r in records {
            self.records.figures.apply(r);
        }
    }

    /// The next call or state event for the durable store.
    pub fn poll_record(&mut self) -> Option<Record> {
        self.records.queue.pop_front()
    }

    /// A record of `event` at `now`, with the call, seat and queue it is about.
    fn record(
        &mut self,
        now: Now,
        event: RecordEvent,
        call_id: Option<&str>,
        seat: Option<usize>,
        queue: Option<QueueId>,
    ) {
        let seat = seat
            .and_then(|i| self.registrar.seats().get(i))
            .map(|s| s.id.clone());
        let queue = queue
            .and_then(|q| self.env.plan.queues.get(q.0))
            .map(|q| q.name.clone());
        let r = Record {
            at: now.stamp(),
            call_id: call_id.map(str::to_string),
            seat,
            queue,
            event,
        };
        let day = self.records.figures.day.clone();
        self.records.figures.apply(&r);
        if self.records.figures.day != day {
            self.acd.new_day();
        }
        self.records.queue.push_back(r);
    }

    /// Calls in progress: citizens' calls and seats' consultations (the daemon drains them
    /// at shutdown).
    pub fn active_calls(&self) -> usize {
        self.legs.callers.len() + self.legs.consultations.len() + self.outreach_calls()
    }

    /// The citizens' calls in progress (RTP events name legs).
    pub fn call_keys(&self) -> Vec<Leg> {
        let mut v: Vec<Leg> = self.legs.callers.keys().map(|&k| Leg::Caller(k)).collect();
        v.sort();
        v
    }

    pub fn media_io(&mut self) -> &mut M {
        &mut self.media.io
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.sip.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timers.next(), self.sip.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// New INVITEs get 503 from now on; calls in progress go on.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Hangs up every call (end of the shutdown grace period): 503 to those not answered.
    pub fn hangup_all(&mut self, now: Now) {
        let callers: Vec<CallerId> = self.legs.callers.keys().copied().collect();
        for k in callers {
            self.set_end_cause(k, crate::metrics::record::EndCause::Shutdown);
            self.end_caller(now, k, Some((503, "Service Unavailable")));
        }
        let consultations: Vec<ConsultationId> = self.legs.consultations.keys().copied().collect();
        for k in consultations {
            self.end_consultation(now, k, Some((503, "Service Unavailable")));
        }
        self.hang_up_outreach(now);
    }

    /// The daemon exits now: calls still up (their BYE unanswered) are closed and written
    /// ended, so no call is left open in the record.
    pub fn close_all(&mut self, now: Now) {
        let callers: Vec<CallerId> = self.legs.callers.keys().copied().collect();
        if !callers.is_empty() {
            tracing::warn!(
                calls = callers.len(),
                "closing calls whose BYE went unanswered"
            );
        }
        for k in callers {
            Stats::inc(&self.env.stats.calls_lost);
            self.close_caller(now, k);
        }
    }

    /// What every leg, transfer and timer holds, for the tests' leak check: each must be zero
    /// once the calls are over and the transactions have timed out.
    pub fn held(&self) -> Held {
        let (lines, experts, offers) = self.acd.held();
        let (server_txs, client_txs, routes) = self.sip.held();
        Held {
            callers: self.legs.callers.len(),
            seat_legs: self.legs.seats.len(),
            trunk_calls: self.legs.trunks.len(),
            consultations: self.legs.consultations.len(),
            transfers: self.transfers.len(),
            streams: self.media.engine.len(),
            waiting: lines + experts,
            offers,
            server_txs,
            client_txs,
            routes,
            timers: self
                .timers
                .keys()
                .filter(|t| {
                    !matches!(
                        t,
                        Timer::Housekeeping
                            | Timer::ProbeRound(_)
                            | Timer::AgentReady(_)
                            | Timer::NoAgents(_)
                            | Timer::Callback(_)
                            | Timer::Revisits
                    )
                })
                .count(),
        }
    }

    /// Sends every RTP frame that is due, then handles what playback reported.
    pub fn tick_media(&mut self, now: Now) {
        let io = &mut self.media.io;
        let mut sent = 0u64;
        self.media.engine.tick(now.mono, |tx, pkt, to| {
            io.send(tx, pkt, to);
            sent += 1;
        });
        io.tick(now.mono);
        self.env
            .stats
            .rtp_sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        while let Some(crate::media::engine::MediaEvent::PlaybackDone(stream)) =
            self.media.engine.poll_event()
        {
            match self.media.streams.get(&stream) {
                Some(&Leg::Caller(k)) => {
                    self.ivr_input(now, k, crate::ivr::engine::Input::PlaybackDone)
                }
                Some(&Leg::Trunk(t)) => self.trunk_playback_done(now, t),
                _ => {}
            }
        }
    }

    pub fn handle_rtp_event(&mut self, now: Now, ev: RtpEvent) {
        match ev {
            RtpEvent::PeerAddress(leg, addr) => {
                let stream = match leg {
                    Leg::Caller(k) => self.legs.callers.get(&k).map(|c| c.stream),
                    Leg::Seat(l) => self.legs.seats.get(&l).map(|s| s.stream),
                    _ => None,
                };
                if let Some(stream) = stream
                    && self.media.engine.remote(stream) != Some(addr)
                {
                    debug!(%addr, "RTP arrives from a new address; sending there");
                    self.media.engine.set_remote(stream, Some(addr));
                }
            }
            RtpEvent::Digit(leg, d) => {
                Stats::inc(&self.env.stats.dtmf_digits);
                match leg {
                    Leg::Seat(k) => self.leg_digit(now, k, d),
                    Leg::Caller(k) => self.caller_digit(now, k, d),
                    Leg::Trunk(t) => self.trunk_digit(now, t, d),
                    Leg::Consultation(_) => {}
                }
            }
            RtpEvent::Secured(Leg::Seat(l)) => self.seat_secured(now, l),
            RtpEvent::SecureFailed(Leg::Seat(l)) => self.seat_secure_failed(now, l),
            RtpEvent::Secured(_) | RtpEvent::SecureFailed(_) => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Now) {
        for input in self.sip.handle_timeout(now.mono) {
            self.route(now, input);
        }
        while let Some((_, timer)) = self.timers.pop_due(now.mono) {
            match timer {
                Timer::Session(leg) => {
                    if let Some(s) = self.legs.session_mut(leg) {
                        s.handle_timeout(now.mono, &mut self.rng);
                    }
                    self.flush(now, leg);
                }
                Timer::Answer(k) => self.answer_caller(now, k),
                Timer::Ivr(k, kind) => self.ivr_timer(now, k, kind),
                Timer::Transfer(k) => self.transfer_timer(now, k),
                Timer::AgentReady(i) => {
                    self.acd.tick(now.mono);
                    self.publish_seat(i, now);
                    self.dispatch(now);
                }
                Timer::NoAgents(q) => self.check_no_agents(now, QueueId(q)),
                Timer::ProbeRound(t) => self.probe_round(now, t),
                Timer::ProbeAttempt(r) => self.probe_attempt(now, r),
                Timer::Callback(id) => self.callback_timer(now, id),
                Timer::Revisits => self.revisit_tick(now),
                Timer::RevisitIvr(r) => self.revisit_ivr_timer(now, r),
                Timer::CallbackSurvey(t) => self.callback_survey_timer(now, t),
                Timer::Housekeeping => self.housekeeping(now),
            }
        }
    }

    /// The media clock ticked `lag` late (the runtime's measure of the event loop).
    pub fn loop_lag(&mut self, now: Now, lag: Duration) {
        self.admission.loop_lag(now.mono, lag);
    }

    /// A link the daemon opened to a trunk is up: calls to the trunk may be placed.
    pub fn connection_up(&mut self, peer: Peer) {
        if let Some(c) = peer.transport.connection() {
            self.links_up.insert(c);
        }
    }

    /// A stream connection (TCP or TLS) closed: the contacts registered over it can no longer
    /// be reached (we do not open connections to phones; RFC 5626 §4.4.1), so they end now
    /// rather than at their expiry, and a seat left without one is no longer offered calls.
    pub fn connection_closed(&mut self, now: Now, peer: Peer) {
        if let Some(c) = peer.transport.connection() {
            self.links_up.remove(&c);
        }
        for seat in self.registrar.drop_connection(peer.transport) {
            self.seat_contacts_changed(now, seat);
            self.publish_seat(seat, now);
        }
        if peer.transport.is_browser() {
            self.seat_connection_lost(now, peer.transport);
        }
    }

    /// One SIP message from the network. A new call beyond what the node can serve is shed
    /// first, from a look at its text, before it is parsed or anything is made for it.
    pub fn handle_datagram(&mut self, now: Now, data: &[u8], peer: Peer) {
        let mut busy = false;
        match crate::sip::glance::glance(data) {
            Glance::RefusalAck => return,
            Glance::NewInvite { user, branch }
                if !self.sip.knows_invite(branch) && !self.exempt_from_shedding(user) =>
            {
                if self.admission.was_shed(now.mono, branch) {
                    // A retransmission that crossed our 503: the same answer again.
                    return self.shed(data, peer, crate::overload::Shed::Again);
                }
                let calls = self.legs.callers.len();
                let free = self.media.io.free_ports();
                let reserved = self.env.cfg.transfer.reserved_for_emergency;
                if let Err(why) = self.admission.admit(now.mono, calls, free, reserved) {
                    if !self.busy_prompt_room(why) {
                        self.admission.remember(now.mono, branch);
                        return self.shed(data, peer, why);
                    }
                    busy = true;
                }
            }
            _ => {}
        }
        if let Some(input) = self
            .sip
            .handle_datagram(now.mono, data, peer, &mut self.rng)
        {
            match input {
                Input::Request(req, info, peer) if busy && info.method == Method::Invite => {
                    self.busy_caller(now, *req, info, peer)
                }
                input => self.route(now, input),
            }
        }
    }

    /// Feature codes and seats' consultations are never shed (they are agents at work).
    fn exempt_from_shedding(&self, user: &str) -> bool {
        self.feature_code(user).is_some() || self.consultation_target(user).is_some()
    }

    /// A shed call gets the busy prompt instead of 503 (`overload.shed = "prompt"`) while
    /// there is room for it: not when the node itself is late, nor past the ports or the
    /// configured number of busy prompts.
    fn busy_prompt_room(&self, why: crate::overload::Shed) -> bool {
        self.env.cfg.overload.shed == crate::config::ShedMode::Prompt
            && matches!(
                why,
                crate::overload::Shed::Calls | crate::overload::Shed::Rate
            )
            && self.busy_callers() < self.env.cfg.overload.max_busy_prompts
    }

    /// 503 with Retry-After, from the INVITE's text; its ACK is dropped unread.
    fn shed(&mut self, data: &[u8], peer: Peer, why: crate::overload::Shed) {
        let retry = self.env.cfg.overload.retry_after_s;
        if let Some(bytes) =
            crate::sip::glance::refusal(data, peer.addr, &self.env.user_agent, retry, why.label())
        {
            self.sip.send_stateless(Transmit {
                peer,
                bytes: bytes.into(),
            });
        }
    }

    fn route(&mut self, now: Now, input: Input<Leg, Owner>) {
        match input {
            Input::Request(req, info, peer) => self.out_of_dialog(now, *req, info, peer),
            Input::InDialog(leg, req, info, peer) => self.in_dialog(now, leg, &req, &info, peer),
            Input::InviteResponse(leg, resp) => {
                if let Some(s) = self.legs.session_mut(leg) {
                    s.handle_response(now.mono, &resp, &mut self.rng);
                }
                self.flush(now, leg);
            }
            Input::Done {
                owner,
                branch,
                code,
            } => match owner {
                Owner::Leg(leg) => {
                    if let Some(s) = self.legs.session_mut(leg) {
                        s.handle_request_done(&branch, code);
                    }
                    self.flush(now, leg);
                }
                Owner::Qualify { seat, uri } => {
                    self.registrar.set_reachable(seat, &uri, code.is_some())
                }
            },
        }
    }

    /// A request in a leg's dialog: the session answers what it can, the leg the rest.
    fn in_dialog(&mut self, now: Now, leg: Leg, req: &Request, info: &RequestInfo, peer: Peer) {
        let _g = self.legs.span(leg).map(|s| s.entered());
        let Some(session) = self.legs.session_mut(leg) else {
            return;
        };
        // The far end's tag must be the dialog's (a request with our tag but another From
        // tag is not of this dialog).
        if info.method != Method::Cancel
            && session
                .dialog
                .remote_tag
                .as_deref()
                .is_some_and(|t| info.from_tag.as_deref() != Some(t))
        {
            let spec = ResponseSpec::new(481, "Call/Transaction Does Not Exist");
            self.sip
                .respond(now.mono, req, info, peer, &spec, &mut self.rng);
            return;
        }
        let incoming = session.handle_request(now.mono, req, info, peer, &mut self.rng);
        if let Some(incoming) = incoming {
            match leg {
                Leg::Caller(k) => self.caller_request(now, k, incoming, req, info, peer),
                Leg::Seat(k) => self.seat_request(now, k, incoming, req, info, peer),
                Leg::Trunk(k) => self.trunk_request(now, k, incoming, req, info, peer),
                Leg::Consultation(k) => {
                    self.consultation_request(now, k, incoming, req, info, peer)
                }
            }
        }
        self.flush(now, leg);
    }

    /// Sends what the leg's session has to send, arms its timer, and handles its events,
    /// until it has nothing more.
    fn flush(&mut self, now: Now, leg: Leg) {
        loop {
            let Some(session) = self.legs.session_mut(leg) else {
                self.timers.cancel(&Timer::Session(leg));
                return;
            };
            let peer = session.dialog.peer;
            while let Some(o) = session.poll_transmit() {
                self.sip.send(now.mono, leg, peer, o, Owner::Leg(leg));
            }
            self.timers.set(Timer::Session(leg), session.poll_timeout());
            let Some(ev) = session.poll_event() else {
                return;
            };
            let _g = self.legs.span(leg).map(|s| s.entered());
            match leg {
                Leg::Caller(k) => self.caller_event(now, k, ev),
                Leg::Seat(k) => self.seat_event(now, k, ev),
                Leg::Trunk(k) => self.trunk_event(now, k, ev),
                Leg::Consultation(k) => self.consultation_event(now, k, ev),
            }
        }
    }

    /// A request that belongs to no leg.
    fn out_of_dialog(&mut self, now: Now, req: Request, info: RequestInfo, peer: Peer) {
        let respond = |core: &mut Self, spec: &ResponseSpec| {
            core.sip
                .respond(now.mono, &req, &info, peer, spec, &mut core.rng)
        };
        match info.method {
            Method::Invite if info.to_tag.is_none() => self.new_invite(now, req, info, peer),
            Method::Options if info.to_tag.is_none() => {
                let hdrs = [("Allow", ALLOW), ("Accept", "application/sdp")];
                respond(
                    self,
                    &ResponseSpec {
                        headers: &hdrs,
                        ..ResponseSpec::new(200, "OK")
                    },
                );
            }
            Method::Register => self.register(now, &req, &info, peer),
            Method::Ack => {}
            // Only an agent's leg may transfer; a caller (or anyone else) never can.
            Method::Refer if info.to_tag.is_none() => {
                let hdrs = [(
                    "Warning",
                    "399 hotline \"only an agent can transfer a call\"",
                )];
                respond(
                    self,
                    &ResponseSpec {
                        headers: &hdrs,
                        ..ResponseSpec::new(403, "Forbidden")
                    },
                );
            }
            Method::Invite
            | Method::Bye
            | Method::Cancel
            | Method::Info
            | Method::Update
            | Method::Options
            | Method::Refer => respond(
                self,
                &ResponseSpec::new(481, "Call/Transaction Does Not Exist"),
            ),
            _ => {
                let hdrs = [("Allow", ALLOW)];
                respond(
                    self,
                    &ResponseSpec {
                        headers: &hdrs,
                        ..ResponseSpec::new(405, "Method Not Allowed")
                    },
                );
            }
        }
    }

    /// A new INVITE: a feature code or a consultation from a seat's phone, or a citizen's
    /// call to a number of the dialplan.
    fn new_invite(&mut self, now: Now, req: Request, info: RequestInfo, peer: Peer) {
        Stats::inc(&self.env.stats.invites);
        let span = tracing::info_span!("call", call_id = %info.call_id, number = %info.ruri_user, from = %peer.addr);
        let _g = span.clone().entered();
        let refusal = self.admit(&req, &info, peer).err();
        if let Some(r) = refusal {
            return self.refuse_invite(now, &req, &info, peer, r);
        }
        if let Some(action) = self.feature_code(&info.ruri_user) {
            return self.feature_call(now, req, info, peer, action, span.clone());
        }
        if let Some(target) = self.consultation_target(&info.ruri_user) {
            return self.new_consultation(now, req, info, peer, target, span.clone());
        }
        self.new_caller(now, req, info, peer, span.clone());
    }

    /// Checks every new INVITE gets before anything is made for it.
    fn admit(&self, req: &Request, info: &RequestInfo, _peer: Peer) -> Result<(), Refusal> {
        if self.shutting_down {
            return Err(Refusal::new(503, "Service Unavailable").with("Retry-After", "30"));
        }
        if self.media.io.free_ports() <= self.env.cfg.transfer.reserved_for_emergency {
            // The last ports are kept for emergency hand-offs of calls already here.
            return Err(Refusal::new(503, "Service Unavailable")
                .with("Retry-After", "5")
                .with("Warning", "399 hotline \"at capacity\""));
        }
        let Some(from_tag) = info.from_tag.as_deref() else {
            return Err(
                Refusal::new(400, "Bad Request").with("Warning", "399 hotline \"From has no tag\"")
            );
        };
        if self.sip.is_merged(&info.call_id, from_tag) {
            // Same Call-ID and From tag, new branch, no To tag: a merged or looped request
            // (RFC 3261 §8.2.2.2).
            return Err(Refusal::new(482, "Loop Detected"));
        }
        if let Some(ext) = crate::sip::message::header(req, "Require") {
            // We support no extensions that a caller can require (no 100rel, no timer).
            return Err(Refusal::new(420, "Bad Extension").with("Unsupported", ext));
        }
        Ok(())
    }

    /// An INVITE refused before any leg exists; recorded unless it is a digest challenge.
    fn refuse_invite(
        &mut self,
        now: Now,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        r: Refusal,
    ) {
        Stats::inc(&self.env.stats.invites_refused);
        info!(code = r.code, reason = r.reason, "INVITE refused");
        if r.code != 407 {
            let event = RecordEvent::CallRefused {
                dialled: info.ruri_user.clone(),
                code: r.code,
                reason: r.reason.to_string(),
                source: peer.addr.to_string(),
            };
            self.record(now, event, Some(&info.call_id), None, None);
        }
        let hdrs = r.headers();
        let spec = ResponseSpec {
            headers: &hdrs,
            ..ResponseSpec::new(r.code, r.reason)
        };
        self.sip
            .respond(now.mono, req, info, peer, &spec, &mut self.rng);
    }

    /// The session of a new leg is known to the router from now on.
    fn register_session(&mut self, leg: Leg) {
        let Some(s) = self.legs.session(leg) else {
            return;
        };
        let key = s.dialog.key();
        let uas = s.invite_branch().map(|b| {
            (
                b.to_string(),
                s.dialog.remote_tag.clone().unwrap_or_default(),
            )
        });
        self.sip.insert(
            leg,
            key,
            uas.as_ref().map(|(b, t)| (b.as_str(), t.as_str())),
        );
    }

    /// A leg whose session is over leaves the router.
    fn forget(&mut self, leg: Leg) {
        self.sip.remove(leg);
        self.timers.cancel(&Timer::Session(leg));
    }

    /// Our address as this peer should see it: configured, else the listen address, else the
    /// address of the route to the peer.
    fn local_ip(&mut self, peer: IpAddr) -> IpAddr {
        if let Some(ip) = self.env.cfg.sip.public_ip {
            return ip;
        }
        let listen = self.env.cfg.sip.listen.ip();
        if !listen.is_unspecified() {
            return listen;
        }
        self.media
            .io
            .local_ip_for(peer)
            .unwrap_or(if peer.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            })
    }

    /// Our host:port as this peer should see it, for Via and Contact.
    fn local_host(&mut self, peer: IpAddr) -> String {
        SocketAddr::new(self.local_ip(peer), self.env.cfg.sip.listen.port()).to_string()
    }

    /// The address for Via of requests not in a dialog (keep-alives).
    fn via_ip(&self) -> IpAddr {
        match (self.env.cfg.sip.public_ip, self.env.cfg.sip.listen.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// What every leg, transfer and timer holds (see [`Core::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub callers: usize,
    pub seat_legs: usize,
    pub trunk_calls: usize,
    pub consultations: usize,
    pub transfers: usize,
    pub streams: usize,
    pub waiting: usize,
    pub offers: usize,
    pub server_txs: usize,
    pub client_txs: usize,
    pub routes: usize,
    pub timers: usize,
}

impl Held {
    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        *self == Held::default()
    }
}

/// A request refused before any dialog exists: status, reason and extra headers.
#[derive(Debug, Clone)]
struct Refusal {
    code: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(code: u16, reason: &'static str) -> Refusal {
        Refusal {
            code,
            reason,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }
}

/// The caller's number as a seat or a trunk is shown it: a plain number, else `anonymous`
/// (anything else is withheld rather than pasted into our From header).
fn presentable(number: &str) -> &str {
    if !number.is_empty()
        && number.len() <= 32
        && number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+*#.-_".contains(&b))
    {
        number
    } else {
        "anonymous"
    }
}
