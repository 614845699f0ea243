//! Call control: the B2BUA's brain, sans-IO. SIP datagrams, media events and time go in;
//! SIP messages to send come out of [`Core::poll_transmit`], RTP leaves through [`MediaIo`],
//! and [`Core::poll_timeout`] says when to call [`Core::handle_timeout`] next.
//!
//! One `Core` owns every call, transaction and media stream, so nothing here locks.

mod consult;
mod probe;
mod seat_leg;
mod transfer;
mod trunk_call;
pub use transfer::TransferError;

use crate::acd::agent::{Agent, AgentError, Event as AgentEvent, State as AgentState};
use crate::config::Config;
use crate::ivr::dialplan::{Decision, Dialplan, Next};
use crate::ivr::engine::{Action, Input, Ivr, TimerKind};
use crate::media::engine::{MediaEngine, MediaEvent, StreamId, StreamParams};
use crate::registrar::{AuthOutcome, Outcome, Registrar};
use crate::sdp::{self, LocalMedia, RemoteMedia, SdpError};
use crate::sip::message::{self, InDialogRequest, RequestInfo, ResponseSpec};
use crate::sip::pending_ok::PendingOk;
use crate::sip::transaction::{
    ClientOutcome, ClientTransactions, Disposition, ServerTransactions, TimerQueue,
};
use crate::sip::{Method, Peer, Request, SipMessage, T1, Transmit};
use crate::stats::Stats;
use crate::time::WallClock;
use bytes::Bytes;
use dashmap::DashMap;
use rand::RngExt as _;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Span, debug, info, info_span, warn};

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER";
/// Timer key for the core's own periodic work (registrations, keep-alives); calls start at 1.
const HOUSEKEEPING: u64 = 0;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
/// Owner of our CANCEL transactions: their outcome needs no handling.
const CANCEL_OWNER: u64 = u64::MAX;

/// A seat as `/api/seats` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeatView {
    #[serde(flatten)]
    pub seat: crate::config::SeatConfig,
    pub registered: bool,
    pub contacts: Vec<ContactView>,
    pub state: AgentState,
    pub state_for_s: u64,
    pub pause_reason: Option<String>,
    /// Since the daemon started.
    pub counters: crate::acd::agent::Counters,
    /// Today (Asia/Shanghai), rebuilt the same way by `hotline figures`.
    pub today: crate::metrics::figures::SeatFigures,
}

/// What an agent (or ops, for an agent) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAction {
    Login,
    Logout,
    Pause(String),
    Unpause,
}

impl AgentAction {
    fn prompt(&self) -> &'static str {
        match self {
            AgentAction::Login => "agent/logged-in",
            AgentAction::Logout => "agent/logged-out",
            AgentAction::Pause(_) => "agent/paused",
            AgentAction::Unpause => "agent/unpaused",
        }
    }
    fn event(self) -> AgentEvent {
        match self {
            AgentAction::Login => AgentEvent::Login,
            AgentAction::Logout => AgentEvent::Logout,
            AgentAction::Pause(r) => AgentEvent::Pause(r),
            AgentAction::Unpause => AgentEvent::Unpause,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ContactView {
    pub uri: String,
    pub source: String,
    pub transport: &'static str,
    pub expires_in_s: u64,
    pub reachable: bool,
}

pub type SeatDirectory = Arc<DashMap<String, SeatView>>;

/// A queue as `/api/queues` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueView {
    pub name: String,
    pub waiting: usize,
    pub longest_wait_s: u64,
    pub agents_logged_in: usize,
    pub agents_available: usize,
    pub strategy: crate::acd::queue::Strategy,
    /// Today (Asia/Shanghai), rebuilt the same way by `hotline figures`.
    pub today: crate::metrics::figures::QueueFigures,
}

pub type QueueDirectory = Arc<DashMap<String, QueueView>>;

/// The RTP side of the runtime: opening a port for a call, sending, closing.
pub trait MediaIo {
    type Tx;
    /// Opens an RTP endpoint for call `key`; `None` when no port is free.
    fn open(&mut self, key: u64) -> Option<(Self::Tx, u16)>;
    fn send(&mut self, tx: &Self::Tx, packet: &[u8], to: SocketAddr);
    fn close(&mut self, tx: Self::Tx);
    /// The payload type of RFC 4733 events the peer sends on this endpoint, once negotiated.
    fn set_event_pt(&mut self, tx: &Self::Tx, pt: Option<u8>);
    /// The peer's SDP changed: RTP from `sdp_addr` is accepted at once, and the first other
    /// source is learned again (symmetric RTP); any other source is ignored after that.
    fn media_changed(&mut self, tx: &Self::Tx, sdp_addr: Option<SocketAddr>);
    /// Our address on the route to `peer`, for Contact, Via and SDP when listening on a
    /// wildcard address.
    fn local_ip_for(&mut self, peer: IpAddr) -> Option<IpAddr>;
    /// Relay RTP between two endpoints (caller and seat), packets as they come.
    fn bridge(&mut self, a: &Self::Tx, b: &Self::Tx);
    fn unbridge(&mut self, a: &Self::Tx);
    /// Record what the bridge of `a` (caller, left channel) and `b` (seat, right) relays, in
    /// `codec`, to a stereo WAV at `path`, until `stop_recording(a)`.
    fn record(
        &mut self,
        _a: &Self::Tx,
        _b: &Self::Tx,
        _codec: crate::media::Codec,
        _path: std::path::PathBuf,
    ) {
    }
    fn stop_recording(&mut self, _a: &Self::Tx) {}
    /// The recording of `a`'s call goes on with `b` as the other side (the caller's new
    /// partner after a transfer); no-op when `a` is not recorded.
    fn record_partner(&mut self, _a: &Self::Tx, _b: &Self::Tx, _codec: crate::media::Codec) {}
    /// Conference `id` of these members (transmitter, codec, payload type): each hears the
    /// others mixed; their packets are no longer relayed. Starting it again re-forms it.
    fn conference(&mut self, _id: u64, _members: &[(&Self::Tx, crate::media::Codec, u8)]) {}
    fn end_conference(&mut self, _id: u64) {}
    /// Called on every media tick (conference mixing, which paces itself to 20 ms frames).
    fn tick(&mut self, _now: Instant) {}
    /// RTP ports still free.
    fn free_ports(&self) -> usize {
        usize::MAX
    }
}

/// What the runtime's RTP readers report.
#[derive(Debug, Clone, Copy)]
pub enum RtpEvent {
    /// RTP arrives from this address: send there (symmetric RTP, for peers behind NAT).
    PeerAddress(u64, SocketAddr),
    Digit(u64, char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// INVITE received, no final response yet.
    Ringing,
    /// 200 OK sent, waiting for ACK.
    Answered,
    Confirmed,
    /// We sent BYE and wait for its response.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum CallTimer {
    Answer,
    OkRetransmit,
    OkTimeout,
    Ivr(TimerKindOrd, u32),
    Housekeeping,
    LegRetransmit,
    LegRingTimeout,
    /// Seat `usize`'s wrap-up or retry delay ends: offer it the next caller at once (the
    /// housekeeping second would add up to a second of dispatch latency).
    AgentReady(usize),
    /// Queue `usize` may have no member logged in: its callers are sent on.
    NoAgents(usize),
    /// A trunk call's retransmission or ring timeout.
    Trunk,
    /// A transfer's prompt has played (failed: caller back to the agent; given up: hang up).
    TransferDone,
    /// A new answer-rate probe round for target `usize`.
    ProbeRound(usize),
    /// The next attempt of probe round `u64`.
    ProbeAttempt(u64),
}

/// `TimerKind` with an order, for the timer heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKindOrd {
    MenuTimeout,
    HoldPrompt,
    MaxWait,
}

impl From<TimerKind> for TimerKindOrd {
    fn from(k: TimerKind) -> Self {
        match k {
            TimerKind::MenuTimeout => TimerKindOrd::MenuTimeout,
            TimerKind::HoldPrompt => TimerKindOrd::HoldPrompt,
            TimerKind::MaxWait => TimerKindOrd::MaxWait,
        }
    }
}
impl From<TimerKindOrd> for TimerKind {
    fn from(k: TimerKindOrd) -> Self {
        match k {
            TimerKindOrd::MenuTimeout => TimerKind::MenuTimeout,
            TimerKindOrd::HoldPrompt => TimerKind::HoldPrompt,
            TimerKindOrd::MaxWait => TimerKind::MaxWait,
        }
    }
}

struct Call {
    call_id: String,
    remote_tag: String,
    local_tag: String,
    peer: Peer,
    invite: Request,
    invite_branch: String,
    remote_target: String,
    route_set: Vec<String>,
    local_ip: IpAddr,
    state: CallState,
    stream: StreamId,
    local_media: LocalMedia,
    remote_media: Option<RemoteMedia>,
    /// The 2xx we retransmit until the ACK with this CSeq arrives.
    ok: Option<PendingOk>,
    remote_cseq: u32,
    local_cseq: u32,
    ivr: Option<Ivr>,
    pending: Option<Decision>,
    span: Span,
    answered_at: Option<Instant>,
    /// We want to hang up but our 2xx is not acknowledged yet: BYE follows the ACK (§15).
    bye_after_ack: bool,
    /// The queue the caller waits in.
    queue: Option<crate::ivr::dialplan::QueueId>,
    /// The seat legs offered (several with ring-all) or bridged to this call.
    legs: Vec<u64>,
    /// When the caller started waiting (its first queue; kept across overflows).
    queued_at: Option<Instant>,
    /// When the caller entered `queue`, for that queue's figures.
    queue_entered_at: Option<Instant>,
    /// The last position and expected wait (minutes) announced: announcements never go back.
    announced: Option<(usize, u64)>,
    /// The seat leg the caller is bridged to.
    bridged_leg: Option<u64>,
    /// The caller was asked to rate the call, and whether the answer is recorded.
    survey_asked: bool,
    survey_done: bool,
    /// The seat the caller talked to, and from which queue.
    bridged_seat: Option<usize>,
    bridged_queue: Option<crate::ivr::dialplan::QueueId>,
    bridged: bool,
    /// A seat's own consultation call to a transfer target (before an attended transfer):
    /// not a citizen's call, so it is in no record or figure.
    consult: Option<consult::SeatConsult>,
}

pub struct Core<M: MediaIo> {
    cfg: Arc<Config>,
    plan: Arc<Dialplan>,
    clock: WallClock,
    stats: Arc<Stats>,
    media_io: M,
    media: MediaEngine<M::Tx>,
    server_txs: ServerTransactions,
    client_txs: ClientTransactions,
    calls: HashMap<u64, Call>,
    /// (Call-ID, remote tag) → call key.
    dialogs: HashMap<(String, String), u64>,
    /// INVITE branch → call key, for CANCEL.
    by_branch: HashMap<String, u64>,
    stream_calls: HashMap<StreamId, u64>,
    timers: TimerQueue<(u64, CallTimer)>,
    next_key: u64,
    out: VecDeque<Transmit>,
    shutting_down: bool,
    /// The time of the event being handled, for the few paths that don't take it.
    now: Instant,
    registrar: Registrar,
    /// One per seat, same index as the registrar's seats.
    agents: Vec<Agent>,
    /// Keep-alive OPTIONS in flight: client transaction owner → (seat, contact URI).
    qualifying: HashMap<u64, (usize, String)>,
    last_qualify: Option<Instant>,
    seats: SeatDirectory,
    /// Seat legs (our INVITEs to agents), by key; keys share the call key space.
    legs: HashMap<u64, seat_leg::SeatLeg>,
    leg_by_branch: HashMap<String, u64>,
    /// (Call-ID, seat's tag) → leg, for the seat's in-dialog requests.
    leg_dialogs: HashMap<(String, String), u64>,
    /// Callers waiting for a seat, per queue.
    lines: Vec<crate::acd::queue::Line>,
    /// Per queue: its member seats with their penalties.
    members: Vec<Vec<(usize, u32)>>,
    /// Per queue: the seat round-robin offered last.
    rr_last: Vec<Option<usize>>,
    /// (queue, seat) → calls taken today, for fewest-calls.
    taken: HashMap<(usize, usize), u64>,
    /// Today's per-seat and per-queue figures, folded from the records.
    figures: crate::metrics::figures::Figures,
    queue_prompts: crate::acd::announce::QueuePrompts,
    queue_views: QueueDirectory,
    /// Call and state events for the durable store, drained by the runtime.
    records: VecDeque<crate::metrics::Record>,
    /// Calls we place over trunks (transfers, probes), by key; keys share the call key space.
    trunk_calls: HashMap<u64, trunk_call::TrunkCall>,
    trunk_by_branch: HashMap<String, u64>,
    /// (Call-ID, far end's tag) → trunk call.
    trunk_dialogs: HashMap<(String, String), u64>,
    /// Transfers under way, by the caller's key.
    transfers: HashMap<u64, transfer::Transfer>,
    /// Probe rounds under way, by round number.
    probes: HashMap<u64, probe::ProbeRound>,
    probe_rounds_started: u64,
}

impl<M: MediaIo> Core<M> {
    pub fn new(
        cfg: Arc<Config>,
        plan: Arc<Dialplan>,
        prompts: Arc<crate::media::prompts::PromptStore>,
        clock: WallClock,
        stats: Arc<Stats>,
        media_io: M,
    ) -> Self {
        let plan_queues = plan.queues.len();
        Core {
            plan: plan.clone(),
            clock,
            stats,
            media_io,
            media: MediaEngine::new(prompts.clone()),
            server_txs: ServerTransactions::default(),
            client_txs: ClientTransactions::default(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            by_branch: HashMap::new(),
            stream_calls: HashMap::new(),
            timers: TimerQueue::default(),
            next_key: 1,
            out: VecDeque::new(),
            shutting_down: false,
            now: Instant::now(),
            registrar: Registrar::new(
                cfg.registrar.clone(),
                cfg.seats.clone(),
                rand::rng().random(),
            ),
            agents: (0..cfg.seats.len())
                .map(|_| Agent::new(Instant::now(), cfg.agents.auto_pause_after))
                .collect(),
            qualifying: HashMap::new(),
            last_qualify: None,
            seats: Arc::new(DashMap::new()),
            legs: HashMap::new(),
            leg_by_branch: HashMap::new(),
            leg_dialogs: HashMap::new(),
            lines: vec![Default::default(); plan_queues],
            members: plan
                .queues
                .iter()
                .map(|q| {
                    cfg.seats
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.queues.contains(&q.name))
                        .map(|(i, s)| (i, s.penalties.get(&q.name).copied().unwrap_or(0)))
                        .collect()
                })
                .collect(),
            rr_last: vec![None; plan_queues],
            taken: HashMap::new(),
            figures: Default::default(),
            queue_prompts: crate::acd::announce::QueuePrompts::new(&prompts),
            queue_views: Arc::new(DashMap::new()),
            records: VecDeque::new(),
            trunk_calls: HashMap::new(),
            trunk_by_branch: HashMap::new(),
            trunk_dialogs: HashMap::new(),
            transfers: HashMap::new(),
            probes: HashMap::new(),
            probe_rounds_started: 0,
            cfg,
        }
    }

    /// Starts the periodic work (binding expiry, keep-alives) and publishes the seat list.
    pub fn start(&mut self, now: Instant) {
        self.timers.push(
            now + HOUSEKEEPING_EVERY,
            (HOUSEKEEPING, CallTimer::Housekeeping),
        );
        for i in 0..self.registrar.seats().len() {
            self.publish_seat(i, now);
        }
        self.publish_queues(now);
        self.start_probes(now);
    }

    /// Today's figures so far, from the store's records (a restart mid-day goes on counting).
    pub fn preload_figures(&mut self, records: &[crate::metrics::Record]) {
        for r in records {
            self.figures.apply(r);
        }
    }

    /// The next call or state event for the durable store.
    pub fn poll_record(&mut self) -> Option<crate::metrics::Record> {
        self.records.pop_front()
    }

    fn record(
        &mut self,
        kind: &'static str,
        call_id: Option<&str>,
        seat: Option<usize>,
        queue: Option<crate::ivr::dialplan::QueueId>,
        detail: serde_json::Value,
    ) {
        let at = self
            .clock
            .now_utc()
            .with_timezone(&crate::time::shanghai())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
        let seat = seat
            .and_then(|i| self.registrar.seats().get(i))
            .map(|s| s.id.clone());
        let queue = queue
            .and_then(|q| self.plan.queues.get(q.0))
            .map(|q| q.name.clone());
        let r = crate::metrics::Record {
            at,
            kind,
            call_id: call_id.map(str::to_string),
            seat,
            queue,
            detail,
        };
        let day = self.figures.day.clone();
        self.figures.apply(&r);
        if self.figures.day != day {
            // A new day: fewest-calls counts today's calls.
            self.taken.clear();
        }
        self.records.push_back(r);
    }

    /// The live seat directory (for the HTTP API).
    pub fn seat_directory(&self) -> SeatDirectory {
        self.seats.clone()
    }

    /// The live queue directory (for the HTTP API), refreshed once a second.
    pub fn queue_directory(&self) -> QueueDirectory {
        self.queue_views.clone()
    }

    fn publish_queues(&self, now: Instant) {
        // Callers whose agent is transferring them to an expert group wait for that queue too.
        let transfers: Vec<(usize, u64)> = self
            .transfers
            .values()
            .filter_map(|t| t.waiting_for_expert())
            .map(|(q, since)| (q.0, now.saturating_duration_since(since).as_secs()))
            .collect();
        for (q, queue) in self.plan.queues.iter().enumerate() {
            let serving: Vec<usize> = (0..self.agents.len())
                .filter(|&i| {
                    self.registrar.seats()[i]
                        .queues
                        .iter()
                        .any(|n| n == &queue.name)
                })
                .collect();
            let longest = self.lines[q]
                .entries()
                .iter()
                .filter_map(|e| self.calls.get(&e.key).and_then(|c| c.queue_entered_at))
                .map(|t| now.saturating_duration_since(t).as_secs())
                .chain(transfers.iter().filter(|t| t.0 == q).map(|t| t.1))
                .max()
                .unwrap_or(0);
            self.queue_views.insert(
                queue.name.clone(),
                QueueView {
                    name: queue.name.clone(),
                    waiting: self.lines[q].len() + transfers.iter().filter(|t| t.0 == q).count(),
                    longest_wait_s: longest,
                    agents_logged_in: serving
                        .iter()
                        .filter(|&&i| self.agents[i].state() != AgentState::LoggedOut)
                        .count(),
                    agents_available: serving
                        .iter()
                        .filter(|&&i| self.agents[i].state() == AgentState::Available)
                        .count(),
                    strategy: queue.strategy,
                    today: self
                        .figures
                        .queues
                        .get(&queue.name)
                        .cloned()
                        .unwrap_or_default(),
                },
            );
        }
    }

    fn publish_seat(&self, i: usize, now: Instant) {
        let Some(seat) = self.registrar.seats().get(i) else {
            return;
        };
        let contacts: Vec<ContactView> = self
            .registrar
            .contacts(i, now)
            .map(|b| ContactView {
                uri: b.uri.clone(),
                source: b.peer.addr.to_string(),
                transport: b.peer.transport.via_name(),
                expires_in_s: b.expires_at.duration_since(now).as_secs(),
                reachable: b.reachable,
            })
            .collect();
        let agent = &self.agents[i];
        let view = SeatView {
            seat: seat.clone(),
            registered: !contacts.is_empty(),
            contacts,
            state: agent.state(),
            state_for_s: now.saturating_duration_since(agent.since()).as_secs(),
            pause_reason: agent.pause_reason().map(str::to_string),
            counters: agent.counters,
            today: self
                .figures
                .seats
                .get(&seat.id)
                .cloned()
                .unwrap_or_default(),
        };
        self.seats.insert(seat.id.clone(), view);
    }

    /// The agent action a dialled number stands for, if it is a feature code.
    fn feature_code(&self, number: &str) -> Option<AgentAction> {
        let a = &self.cfg.agents;
        if number == a.login_code {
            Some(AgentAction::Login)
        } else if number == a.logout_code {
            Some(AgentAction::Logout)
        } else if number == a.unpause_code {
            Some(AgentAction::Unpause)
        } else if let Some(key) = number.strip_prefix(a.pause_code.as_str()) {
            match key {
                "" => Some(AgentAction::Pause("暂停".into())),
                k => a
                    .pause_reasons
                    .get(k)
                    .map(|r| AgentAction::Pause(r.clone())),
            }
        } else {
            None
        }
    }

    /// Changes seat `i`'s agent state (from its phone or the API); `by` is logged.
    pub fn agent_action(
        &mut self,
        now: Instant,
        i: usize,
        action: AgentAction,
        by: &str,
    ) -> Result<AgentState, AgentError> {
        let seat = self
            .registrar
            .seats()
            .get(i)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let Some(agent) = self.agents.get_mut(i) else {
            return Err(AgentError::NotLoggedIn);
        };
        let label = format!("{action:?}");
        let r = agent.handle(now, action.event());
        match &r {
            Ok(state) => {
                info!(seat = %seat, action = %label, ?state, by, "agent state changed");
                let reason = self.agents[i].pause_reason().map(str::to_string);
                self.record("agent_state", None, Some(i), None, serde_json::json!({ "state": state, "action": label, "by": by, "reason": reason }));
            }
            Err(e) => info!(seat = %seat, action = %label, error = %e, by, "agent action refused"),
        }
        self.publish_seat(i, now);
        if r.is_ok() {
            self.dispatch(now);
        }
        r
    }

    /// `agent_action` by seat id, for the HTTP API.
    pub fn agent_action_by_id(
        &mut self,
        now: Instant,
        seat: &str,
        action: AgentAction,
        by: &str,
    ) -> Result<AgentState, String> {
        let i = self
            .registrar
            .seat_index(seat)
            .ok_or_else(|| format!("no seat {seat}"))?;
        self.agent_action(now, i, action, by)
            .map_err(|e| e.to_string())
    }

    fn housekeeping(&mut self, now: Instant) {
        for a in &mut self.agents {
            a.tick(now);
        }
        // Agents come free by wrap-up ending or a retry delay passing: offer what waits.
        self.dispatch(now);
        for q in 0..self.lines.len() {
            self.check_no_agents(now, crate::ivr::dialplan::QueueId(q));
        }
        self.publish_queues(now);
        self.timers.push(
            now + HOUSEKEEPING_EVERY,
            (HOUSEKEEPING, CallTimer::Housekeeping),
        );
        // Calls past the maximum duration (a lost BYE): checked here, once a second, rather
        // than with a 4-hour timer per call that would outlive the call in the timer heap.
        let max = Duration::from_secs(self.cfg.sip.max_call_s);
        let overdue: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.state != CallState::Ending
                    && c.answered_at.is_some_and(|t| now.duration_since(t) >= max)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in overdue {
            if let Some(c) = self.calls.get(&key) {
                let _g = c.span.clone().entered();
                info!("maximum call duration reached");
            }
            self.hangup(now, key);
        }
        self.registrar.prune(now);
        let ringing: std::collections::BTreeSet<usize> =
            self.legs.values().map(|l| l.seat).collect();
        for seat in ringing {
            self.seat_contacts_changed(now, seat);
        }
        let qualify = Duration::from_secs(self.cfg.registrar.qualify_s);
        if !qualify.is_zero()
            && self
                .last_qualify
                .is_none_or(|t| now.duration_since(t) >= qualify)
        {
            self.last_qualify = Some(now);
            for (seat, b) in self.registrar.all_bindings(now) {
                self.send_qualify(now, seat, &b);
            }
        }
        for i in 0..self.registrar.seats().len() {
            self.publish_seat(i, now);
        }
    }

    /// Keep-alive OPTIONS to a registered contact; no answer marks it unreachable.
    fn send_qualify(&mut self, now: Instant, seat: usize, b: &crate::registrar::Binding) {
        let owner = self.next_key;
        self.next_key += 1;
        let branch = format!("z9hG4bK{}", random_token());
        let host = SocketAddr::new(self.via_ip(), self.cfg.sip.listen.port()).to_string();
        let from = format!("<sip:hotline@{host}>;tag={}", random_token());
        let to = format!("<{}>", b.uri);
        let call_id = random_token();
        let bytes = message::in_dialog_request(&InDialogRequest {
            method: "OPTIONS",
            target: &b.uri,
            via_transport: b.peer.transport.via_name(),
            via_host: &host,
            branch: &branch,
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            routes: &[],
            user_agent: &self.cfg.sip.user_agent,
            extra: &[],
        });
        self.qualifying.insert(owner, (seat, b.uri.clone()));
        let t = self.client_txs.start(
            now,
            &branch,
            owner,
            Transmit {
                peer: b.peer,
                bytes: bytes.into(),
            },
        );
        self.out.push_back(t);
    }

    fn via_ip(&self) -> IpAddr {
        match (self.cfg.sip.public_ip, self.cfg.sip.listen.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// A client transaction ended: a keep-alive, or a call's BYE.
    fn client_done(&mut self, owner: u64, answered: bool) {
        if owner == CANCEL_OWNER {
            return;
        }
        if let Some((seat, uri)) = self.qualifying.remove(&owner) {
            self.registrar.set_reachable(seat, &uri, answered);
        } else if self.leg_done(owner) || self.trunk_done(owner) {
            // a seat leg's or a trunk call's BYE finished
        } else {
            if !answered {
                Stats::inc(&self.stats.bye_timeouts);
            }
            self.finish(owner);
        }
    }

    fn register(&mut self, now: Instant, req: &Request, info: &RequestInfo, peer: Peer) {
        let now_s = self.clock.now_utc().timestamp().max(0) as u64;
        let outcome = self.registrar.register(now, now_s, req, info, peer);
        let (code, reason) = outcome.status();
        let mut owned: Vec<(&str, String)> = Vec::new();
        match &outcome {
            Outcome::Registered { seat, contacts } => {
                for (uri, left) in contacts {
                    owned.push(("Contact", format!("<{uri}>;expires={left}")));
                }
                if let Some(i) = self.registrar.seats().iter().position(|s| &s.id == seat) {
                    self.seat_contacts_changed(now, i);
                    self.publish_seat(i, now);
                }
                self.dispatch(now);
            }
            Outcome::Challenge { stale } => {
                for c in self.registrar.challenges(now_s, *stale) {
                    owned.push(("WWW-Authenticate", c));
                }
            }
            Outcome::Throttled { retry_after_s } => {
                owned.push(("Retry-After", retry_after_s.to_string()));
                owned.push((
                    "Warning",
                    "399 hotline \"too many failed attempts from this address\"".into(),
                ));
            }
            Outcome::Forbidden(why) => owned.push(("Warning", format!("399 hotline \"{why}\""))),
            Outcome::IntervalTooBrief { min } => owned.push(("Min-Expires", min.to_string())),
            Outcome::BadRequest(why) => owned.push((
                "Warning",
                format!("399 hotline \"{}\"", why.replace('"', "'")),
            )),
            Outcome::NotFound | Outcome::OutOfOrder => {}
        }
        let hdrs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let spec = ResponseSpec {
            headers: &hdrs,
            ..ResponseSpec::new(code, reason)
        };
        self.respond(now, req, info, peer, &spec);
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The keys of the calls in progress (the RTP readers' events name calls by key).
    pub fn call_keys(&self) -> Vec<u64> {
        self.calls.keys().copied().collect()
    }

    pub fn media_io(&mut self) -> &mut M {
        &mut self.media_io
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next(),
            self.server_txs.poll_timeout(),
            self.client_txs.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// New INVITEs get 503 from now on; calls in progress go on.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Hangs up every call (end of the shutdown grace period).
    pub fn hangup_all(&mut self, now: Instant) {
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            match self.calls.get(&key).map(|c| c.state) {
                Some(CallState::Ringing) => {
                    self.reject_ringing(now, key, 503, "Service Unavailable")
                }
                Some(CallState::Ending) | None => {}
                Some(_) => self.hangup(now, key),
            }
        }
    }

    /// Sends every RTP frame that is due, then handles what playback reported.
    pub fn tick_media(&mut self, now: Instant) {
        self.now = now;
        let io = &mut self.media_io;
        let mut sent = 0u64;
        self.media.tick(now, |tx, pkt, to| {
            io.send(tx, pkt, to);
            sent += 1;
        });
        io.tick(now);
        self.stats
            .rtp_sent
            .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
        while let Some(MediaEvent::PlaybackDone(stream)) = self.media.poll_event() {
            if let Some(&key) = self.stream_calls.get(&stream) {
                self.ivr_input(now, key, Input::PlaybackDone);
            }
        }
    }

    pub fn handle_rtp_event(&mut self, now: Instant, ev: RtpEvent) {
        self.now = now;
        match ev {
            RtpEvent::PeerAddress(key, addr) => {
                if let Some(call) = self.calls.get(&key) {
                    let _g = call.span.enter();
                    if self.media.remote(call.stream) != Some(addr) {
                        debug!(%addr, "RTP arrives from a new address; sending there");
                        self.media.set_remote(call.stream, Some(addr));
                    }
                }
            }
            RtpEvent::Digit(key, d) if self.legs.contains_key(&key) => {
                Stats::inc(&self.stats.dtmf_digits);
                self.leg_digit(now, key, d);
            }
            RtpEvent::Digit(key, d) => {
                Stats::inc(&self.stats.dtmf_digits);
                if let Some(call) = self.calls.get(&key) {
                    let _g = call.span.clone().entered();
                    info!(digit = %d, "DTMF");
                    self.ivr_input(now, key, Input::Digit(d));
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let mut retrans = Vec::new();
        self.server_txs.handle_timeout(now, &mut retrans);
        let mut done = Vec::new();
        self.client_txs.handle_timeout(now, &mut retrans, &mut done);
        self.out.extend(retrans);
        for outcome in done {
            if let ClientOutcome::Timeout { owner } = outcome {
                self.client_done(owner, false);
            }
        }
        while let Some((at, (key, timer))) = self.timers.pop_due(now) {
            if key == HOUSEKEEPING {
                match timer {
                    CallTimer::AgentReady(i) => {
                        if let Some(a) = self.agents.get_mut(i) {
                            a.tick(now);
                        }
                        self.publish_seat(i, now);
                        self.dispatch(now);
                    }
                    CallTimer::NoAgents(q) => {
                        self.check_no_agents(now, crate::ivr::dialplan::QueueId(q))
                    }
                    CallTimer::ProbeRound(t) => self.probe_round(now, t),
                    CallTimer::ProbeAttempt(r) => self.probe_attempt(now, r),
                    _ => self.housekeeping(now),
                }
                continue;
            }
            if matches!(timer, CallTimer::OkRetransmit | CallTimer::OkTimeout) {
                self.ok_timer(now, key, at, timer);
                continue;
            }
            if self.legs.contains_key(&key) {
                self.leg_timer(now, key, at, timer);
                continue;
            }
            if timer == CallTimer::Trunk {
                self.trunk_timer(now, key);
                continue;
            }
            if timer == CallTimer::TransferDone {
                self.transfer_timer(now, key, at);
                continue;
            }
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            match timer {
                CallTimer::Answer if call.state == CallState::Ringing => self.answer(now, key),
                CallTimer::Ivr(kind, epoch) => {
                    self.ivr_input(now, key, Input::Timer(kind.into(), epoch))
                }
                _ => {}
            }
        }
    }

    /// One SIP message from the network.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8], peer: Peer) {
        self.now = now;
        let msg = match message::parse(data) {
            Ok(m) => m,
            Err(e) => return self.malformed(data, peer, &e.to_string()),
        };
        match msg {
            SipMessage::Response(resp) => self.handle_response(now, &resp),
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
                            self.send_stateless(&req, peer, &spec);
                            Stats::inc(&self.stats.malformed_answered);
                        } else {
                            Stats::inc(&self.stats.malformed_dropped);
                        }
                        return;
                    }
                };
                self.handle_request(now, req, info, peer);
            }
        }
    }

    fn malformed(&mut self, data: &[u8], peer: Peer, reason: &str) {
        match message::fallback_response(data, peer.addr, &self.cfg.sip.user_agent, reason) {
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

    fn send_stateless(&mut self, req: &Request, peer: Peer, spec: &ResponseSpec) {
        let tag = random_token();
        let spec = &with_to_tag(spec, &tag);
        let bytes = message::response(req, peer.addr, &self.cfg.sip.user_agent, spec);
        self.out.push_back(Transmit {
            peer,
            bytes: bytes.into(),
        });
    }

    /// Sends a response through the server transaction of `info`.
    fn respond(
        &mut self,
        now: Instant,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        spec: &ResponseSpec,
    ) {
        let tag = random_token();
        let spec = &with_to_tag(spec, &tag);
        let bytes = message::response(req, peer.addr, &self.cfg.sip.user_agent, spec);
        let t = self
            .server_txs
            .respond(now, &info.branch, info.method, spec.code, bytes, peer);
        self.out.push_back(t);
    }

    fn handle_response(&mut self, now: Instant, resp: &rsipstack::sip::Response) {
        use rsipstack::sip::prelude::*;
        let Ok(via) = resp.via_header() else { return };
        let Ok(via) = rsipstack::sip::typed::Via::parse(via.value()) else {
            return;
        };
        let Some(branch) = via.branch().map(|b| b.to_string()) else {
            return;
        };
        let is_invite = resp
            .cseq_header()
            .ok()
            .and_then(|c| rsipstack::sip::typed::CSeq::parse(c.value()).ok())
            .is_some_and(|c| c.method == Method::Invite);
        if is_invite {
            if let Some(&leg) = self.leg_by_branch.get(&branch) {
                return self.leg_response(now, leg, resp);
            }
            if let Some(&key) = self.trunk_by_branch.get(&branch) {
                return self.trunk_response(now, key, resp);
            }
            return;
        }
        if let Some(ClientOutcome::Response { owner, code }) =
            self.client_txs
                .on_response(now, &branch, resp.status_code.code())
        {
            debug!(code, "request answered");
            self.client_done(owner, true);
        }
    }

    fn handle_request(&mut self, now: Instant, req: Request, info: RequestInfo, peer: Peer) {
        if info.max_forwards == Some(0) && info.method != Method::Ack {
            let spec = ResponseSpec::new(483, "Too Many Hops");
            return self.send_stateless(&req, peer, &spec);
        }
        match self
            .server_txs
            .on_request(now, &info.branch, info.method, peer)
        {
            Disposition::Retransmission(Some(t)) => return self.out.push_back(t),
            Disposition::Retransmission(None) | Disposition::AckAbsorbed => return,
            Disposition::AckForDialog => return self.handle_ack(now, &req, &info),
            Disposition::New => {}
        }
        if info.to_tag.is_some() && info.method != Method::Ack {
            if let Some(key) = self.trunk_dialog(&info) {
                return match info.method {
                    Method::Bye => {
                        self.respond(now, &req, &info, peer, &ResponseSpec::new(200, "OK"));
                        self.trunk_bye(now, key);
                    }
                    Method::Options | Method::Info | Method::Update if req.body.is_empty() => {
                        self.respond(now, &req, &info, peer, &ResponseSpec::new(200, "OK"))
                    }
                    Method::Invite | Method::Update => {
                        self.trunk_refresh(now, key, &req, &info, peer)
                    }
                    _ => {
                        let hdrs = [("Warning", "399 hotline \"not supported on trunk calls\"")];
                        let spec = ResponseSpec {
                            headers: &hdrs,
                            ..ResponseSpec::new(488, "Not Acceptable Here")
                        };
                        self.respond(now, &req, &info, peer, &spec)
                    }
                };
            }
            if let Some(leg) = self.leg_dialog(&info) {
                return match info.method {
                    Method::Bye => {
                        self.respond(now, &req, &info, peer, &ResponseSpec::new(200, "OK"));
                        self.seat_bye(now, leg);
                    }
                    Method::Options | Method::Info | Method::Update if req.body.is_empty() => {
                        self.respond(now, &req, &info, peer, &ResponseSpec::new(200, "OK"))
                    }
                    Method::Invite => self.leg_reinvite(now, leg, &req, &info, peer),
                    Method::Refer => self.leg_refer(now, leg, &req, &info, peer),
                    _ => {
                        let hdrs = [("Warning", "399 hotline \"not supported on seat legs\"")];
                        let spec = ResponseSpec {
                            headers: &hdrs,
                            ..ResponseSpec::new(488, "Not Acceptable Here")
                        };
                        self.respond(now, &req, &info, peer, &spec)
                    }
                };
            }
        }
        let dialog = info.to_tag.as_ref().and_then(|_| self.dialog_key(&info));
        match info.method {
            Method::Invite if info.to_tag.is_none() => self.new_invite(now, req, info, peer),
            Method::Invite => match dialog {
                Some(key) => self.reinvite(now, key, &req, &info, peer),
                None => self.respond(
                    now,
                    &req,
                    &info,
                    peer,
                    &ResponseSpec::new(481, "Call/Transaction Does Not Exist"),
                ),
            },
            Method::Cancel => self.cancel(now, &req, &info, peer),
            Method::Bye => match dialog {
                Some(key) => {
                    self.respond(now, &req, &info, peer, &ResponseSpec::new(200, "OK"));
                    let ringing = self.calls.get(&key).map(|c| {
                        let _g = c.span.clone().entered();
                        info!("caller hung up");
                        c.state == CallState::Ringing
                    });
                    if ringing == Some(true) {
                        // BYE on the early dialog: the INVITE still needs its final response.
                        self.reject_ringing(now, key, 487, "Request Terminated");
                    } else {
                        self.finish(key);
                    }
                }
                None => self.respond(
                    now,
                    &req,
                    &info,
                    peer,
                    &ResponseSpec::new(481, "Call/Transaction Does Not Exist"),
                ),
            },
            Method::Options => {
                let hdrs = [
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", ""),
                ];
                let spec = ResponseSpec {
                    headers: &hdrs[..2],
                    ..ResponseSpec::new(200, "OK")
                };
                self.respond(now, &req, &info, peer, &spec);
            }
            Method::Info | Method::Update => match dialog {
                Some(key) => self.info_or_update(now, key, &req, &info, peer),
                None => self.respond(
                    now,
                    &req,
                    &info,
                    peer,
                    &ResponseSpec::new(481, "Call/Transaction Does Not Exist"),
                ),
            },
            Method::Register => self.register(now, &req, &info, peer),
            Method::Refer => {
                // Only an agent's leg may transfer; a caller (or anyone else) never can.
                let hdrs = [(
                    "Warning",
                    "399 hotline \"only an agent can transfer a call\"",
                )];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(403, "Forbidden")
                };
                self.respond(now, &req, &info, peer, &spec);
            }
            Method::Ack => {}
            _ => {
                let hdrs = [("Allow", ALLOW)];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(405, "Method Not Allowed")
                };
                self.respond(now, &req, &info, peer, &spec);
            }
        }
    }

    fn dialog_key(&self, info: &RequestInfo) -> Option<u64> {
        let key = *self.dialogs.get(&(
            info.call_id.clone(),
            info.from_tag.clone().unwrap_or_default(),
        ))?;
        let call = self.calls.get(&key)?;
        (info.to_tag.as_deref() == Some(call.local_tag.as_str())).then_some(key)
    }

    /// Our address as this peer should see it: configured, else the listen address, else the
    /// address of the route to the peer.
    fn local_ip(&mut self, peer: IpAddr) -> IpAddr {
        if let Some(ip) = self.cfg.sip.public_ip {
            return ip;
        }
        let listen = self.cfg.sip.listen.ip();
        if !listen.is_unspecified() {
            return listen;
        }
        self.media_io
            .local_ip_for(peer)
            .unwrap_or(if peer.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            })
    }

    fn new_invite(&mut self, now: Instant, req: Request, info: RequestInfo, peer: Peer) {
        Stats::inc(&self.stats.invites);
        let span = info_span!("call", call_id = %info.call_id, number = %info.ruri_user, from = %peer.addr);
        let _g = span.clone().entered();
        let refuse = |core: &mut Self, code: u16, reason: &str, hdrs: &[(&str, &str)]| {
            Stats::inc(&core.stats.invites_refused);
            info!(code, reason, "INVITE refused");
            if code != 407 {
                let detail = serde_json::json!({ "dialled": info.ruri_user, "code": code, "reason": reason, "source": peer.addr.to_string() });
                core.record("call_refused", Some(&info.call_id), None, None, detail);
            }
            let tag = random_token();
            let spec = ResponseSpec {
                to_tag: Some(&tag),
                headers: hdrs,
                ..ResponseSpec::new(code, reason)
            };
            core.respond(now, &req, &info, peer, &spec);
        };
        if self.shutting_down {
            return refuse(self, 503, "Service Unavailable", &[("Retry-After", "30")]);
        }
        if self.media_io.free_ports() <= self.cfg.transfer.reserved_for_emergency {
            // The last ports are kept for emergency hand-offs of calls already here.
            return refuse(
                self,
                503,
                "Service Unavailable",
                &[
                    ("Retry-After", "5"),
                    ("Warning", "399 hotline \"at capacity\""),
                ],
            );
        }
        let Some(from_tag) = info.from_tag.clone() else {
            return refuse(
                self,
                400,
                "Bad Request",
                &[("Warning", "399 hotline \"From has no tag\"")],
            );
        };
        if self
            .dialogs
            .contains_key(&(info.call_id.clone(), from_tag.clone()))
        {
            // Same Call-ID and From tag, new branch, no To tag: a merged or looped request
            // (RFC 3261 §8.2.2.2).
            return refuse(self, 482, "Loop Detected", &[]);
        }
        if let Some(req_ext) = message::header(&req, "Require") {
            // We support no extensions that a caller can require (no 100rel, no timer).
            let unsupported = req_ext.to_string();
            return refuse(
                self,
                420,
                "Bad Extension",
                &[("Unsupported", unsupported.as_str())],
            );
        }
        let mut consult = None;
        let decision = if let Some(action) = self.feature_code(&info.ruri_user) {
            // A seat dials a feature code: only an authenticated seat may change its state.
            let i = match self.authenticate_seat(now, &req, peer) {
                Ok(i) => i,
                Err(r) => return refuse(self, r.code, r.reason, &r.headers()),
            };
            let prompt = action.prompt();
            let ok = self.agent_action(now, i, action, "feature code").is_ok();
            let name = if ok { prompt } else { "agent/refused" };
            match self.media.prompts().id(name).or(self.plan.sorry) {
                Some(p) => Some(Decision::Announce(p)),
                None => return refuse(self, 500, "Server Internal Error", &[]),
            }
        } else if let Some(target) = self.consult_target(&info.ruri_user) {
            // A seat calls a transfer target through us to consult it (attended transfer):
            // only as an authenticated seat that has a caller to transfer.
            let seat_consult = self
                .authenticate_seat(now, &req, peer)
                .and_then(|i| self.seat_consult(i, target));
            match seat_consult {
                Ok(c) => consult = Some(c),
                Err(r) => return refuse(self, r.code, r.reason, &r.headers()),
            }
            None
        } else {
            let today = self.clock.today_shanghai();
            match self.plan.decide(&info.ruri_user, today) {
                None => return refuse(self, 404, "Not Found", &[]),
                Some(Decision::Refuse(code, reason)) => return refuse(self, code, reason, &[]),
                Some(d) => Some(d),
            }
        };
        let remote_media = if req.body.is_empty() {
            None
        } else {
            let ctype = message::header(&req, "Content-Type").unwrap_or("");
            if !ctype
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
            {
                return refuse(
                    self,
                    415,
                    "Unsupported Media Type",
                    &[("Accept", "application/sdp")],
                );
            }
            match sdp::parse(&req.body) {
                Ok(m) => Some(m),
                Err(e @ SdpError::Syntax(_)) => {
                    let w = format!("399 hotline \"{e}\"");
                    return refuse(self, 400, "Bad Request", &[("Warning", w.as_str())]);
                }
                Err(e) => {
                    let w = format!("305 hotline \"{e}\"");
                    return refuse(self, 488, "Not Acceptable Here", &[("Warning", w.as_str())]);
                }
            }
        };
        // A consultation speaks the caller's codec, offered or not.
        let remote_media = match (&consult, remote_media) {
            (None, m) => m,
            (Some(c), Some(mut m)) if m.codecs.iter().any(|x| x.0 == c.codec) => {
                m.codecs.retain(|x| x.0 == c.codec);
                Some(m)
            }
            (Some(_), _) => {
                let w = [(
                    "Warning",
                    "305 hotline \"a consultation must offer the caller's codec\"",
                )];
                return refuse(self, 488, "Not Acceptable Here", &w);
            }
        };
        let key = self.next_key;
        let Some((tx, port)) = self.media_io.open(key) else {
            warn!("no RTP port free");
            return refuse(self, 503, "Service Unavailable", &[("Retry-After", "5")]);
        };
        self.next_key += 1;
        let mut rng = rand::rng();
        let (codec, pt) = remote_media
            .as_ref()
            .map(|m| m.primary())
            .unwrap_or((crate::media::Codec::Pcmu, 0));
        let params = StreamParams::random(codec, pt);
        let remote_addr = remote_media.as_ref().and_then(|m| m.addr);
        self.media_io
            .set_event_pt(&tx, remote_media.as_ref().and_then(|m| m.telephone_event));
        self.media_io.media_changed(&tx, remote_addr);
        let stream = self.media.add(now, tx, remote_addr, params);
        // No early media: nothing is sent before the 200 OK.
        self.media.set_sending(stream, false);
        let local_ip = self.local_ip(peer.addr.ip());
        let media_ip = self.cfg.rtp.public_ip.unwrap_or(local_ip);
        let remote_target = message::header(&req, "Contact")
            .map(|c| message::addr_spec(c).to_string())
            .unwrap_or_else(|| req.uri.to_string());
        let route_set = req
            .headers
            .iter()
            .filter_map(|h| match h {
                rsipstack::sip::Header::RecordRoute(r) => Some(r.value().to_string()),
                _ => None,
            })
            .collect();
        let local_tag = random_token();
        let is_consult = consult.is_some();
        let call = Call {
            call_id: info.call_id.clone(),
            remote_tag: from_tag.clone(),
            local_tag: local_tag.clone(),
            peer,
            invite_branch: info.branch.clone(),
            remote_target,
            route_set,
            local_ip,
            state: CallState::Ringing,
            stream,
            local_media: LocalMedia {
                ip: media_ip,
                port,
                session_id: rng.random::<u32>() as u64,
                version: 1,
            },
            remote_media,
            ok: None,
            remote_cseq: info.cseq,
            local_cseq: 0,
            ivr: None,
            pending: decision,
            span: span.clone(),
            answered_at: None,
            bye_after_ack: false,
            queue: None,
            legs: Vec::new(),
            queued_at: None,
            queue_entered_at: None,
            announced: None,
            bridged_queue: None,
            bridged_leg: None,
            survey_asked: false,
            survey_done: false,
            bridged_seat: None,
            bridged: false,
            consult,
            invite: req,
        };
        info!(rtp_port = port, "new call");
        self.calls.insert(key, call);
        if !is_consult {
            use rsipstack::sip::prelude::HeadersExt as _;
            let caller = self.calls[&key]
                .invite
                .from_header()
                .ok()
                .and_then(|f| f.uri().ok())
                .and_then(|u| u.user().map(str::to_string))
                .unwrap_or_default();
            let detail = serde_json::json!({ "dialled": info.ruri_user, "caller": caller, "source": peer.addr.to_string(), "transport": peer.transport.via_name() });
            self.record("call_start", Some(&info.call_id), None, None, detail);
        }
        self.dialogs.insert((info.call_id.clone(), from_tag), key);
        self.by_branch.insert(info.branch.clone(), key);
        self.stream_calls.insert(stream, key);
        if !is_consult {
            Stats::inc(&self.stats.calls_active);
        }

        let call = &self.calls[&key];
        let trying = message::response(
            &call.invite,
            peer.addr,
            &self.cfg.sip.user_agent,
            &ResponseSpec::new(100, "Trying"),
        );
        let t = self
            .server_txs
            .respond(now, &info.branch, Method::Invite, 100, trying, peer);
        self.out.push_back(t);
        let contact = self.contact(key);
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let spec = ResponseSpec {
            to_tag: Some(&local_tag),
            headers: &hdrs,
            ..ResponseSpec::new(180, "Ringing")
        };
        let ringing = message::response(
            &self.calls[&key].invite,
            peer.addr,
            &self.cfg.sip.user_agent,
            &spec,
        );
        let t = self
            .server_txs
            .respond(now, &info.branch, Method::Invite, 180, ringing, peer);
        self.out.push_back(t);
        if is_consult {
            // Answered when the target answers.
            self.dial_consult(now, key);
        } else if self.cfg.sip.ring_ms == 0 {
            self.answer(now, key);
        } else {
            self.timers.push(
                now + Duration::from_millis(self.cfg.sip.ring_ms),
                (key, CallTimer::Answer),
            );
        }
    }

    /// The seat whose digest (`Proxy-Authorization`) signs this request from a phone, or
    /// the answer to send: 407 with a challenge, 403, 400.
    fn authenticate_seat(
        &mut self,
        now: Instant,
        req: &Request,
        peer: Peer,
    ) -> Result<usize, Refusal> {
        let from_user = self.caller_number(req);
        let now_s = self.clock.now_utc().timestamp().max(0) as u64;
        let refusal = |code, reason, headers| {
            Err(Refusal {
                code,
                reason,
                headers,
            })
        };
        match self
            .registrar
            .authenticate(now, now_s, req, &from_user, "Proxy-Authorization", peer)
        {
            AuthOutcome::Seat(i) => Ok(i),
            AuthOutcome::Challenge { stale } => {
                let ch = self.registrar.challenges(now_s, stale);
                let hdrs = ch.into_iter().map(|c| ("Proxy-Authenticate", c)).collect();
                refusal(407, "Proxy Authentication Required", hdrs)
            }
            AuthOutcome::Throttled { retry_after_s } => refusal(
                403,
                "Forbidden",
                vec![("Retry-After", retry_after_s.to_string())],
            ),
            AuthOutcome::NotFound | AuthOutcome::Forbidden(_) => refusal(403, "Forbidden", vec![]),
            AuthOutcome::BadRequest(why) => {
                let w = format!("399 hotline \"{}\"", why.replace('"', "'"));
                refusal(400, "Bad Request", vec![("Warning", w)])
            }
        }
    }

    fn contact(&self, key: u64) -> String {
        let call = &self.calls[&key];
        let user = call.invite.uri.user().unwrap_or("hotline");
        let host = SocketAddr::new(call.local_ip, self.cfg.sip.listen.port());
        let transport = if call.peer.transport.reliable() {
            ";transport=tcp"
        } else {
            ""
        };
        format!("<sip:{user}@{host}{transport}>")
    }

    fn answer(&mut self, now: Instant, key: u64) {
        let contact = self.contact(key);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let _g = call.span.clone().entered();
        let body = match &call.remote_media {
            Some(offer) => sdp::answer(&call.local_media, offer),
            None => sdp::offer(&call.local_media),
        };
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let spec = ResponseSpec {
            to_tag: Some(&call.local_tag),
            headers: &hdrs,
            body: Some(("application/sdp", body.as_bytes())),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = Bytes::from(message::response(
            &call.invite,
            call.peer.addr,
            &self.cfg.sip.user_agent,
            &spec,
        ));
        let (branch, peer, cseq) = (call.invite_branch.clone(), call.peer, call.remote_cseq);
        call.state = CallState::Answered;
        let consult = call.consult.is_some();
        self.arm_ok(now, key, bytes.clone(), cseq);
        let t = self
            .server_txs
            .respond(now, &branch, Method::Invite, 200, bytes.to_vec(), peer);
        self.out.push_back(t);
        if consult {
            // The seat and the target talk through the bridge the caller of this runs.
            if let Some(call) = self.calls.get_mut(&key) {
                call.answered_at = Some(now);
            }
            return;
        }
        Stats::inc(&self.stats.calls_answered);
        info!("answered");
        let call_id = self.calls.get(&key).map(|c| c.call_id.clone());
        self.record(
            "call_answered",
            call_id.as_deref(),
            None,
            None,
            serde_json::json!({}),
        );
        if let Some(call) = self.calls.get_mut(&key) {
            call.answered_at = Some(now);
        }
        // With an offer we know where to send: the IVR starts now. Without one (delayed
        // offer) it starts when the ACK brings the answer.
        let may_send = self.calls.get(&key).and_then(|c| {
            c.remote_media
                .as_ref()
                .map(|m| (c.stream, m.direction.we_may_send()))
        });
        if let Some((stream, may_send)) = may_send {
            self.media.set_sending(stream, may_send);
            self.start_ivr(now, key);
        }
    }

    /// Our 2xx to an INVITE or re-INVITE in dialog `key` (a caller's, a seat leg's or a trunk
    /// call's) is retransmitted until the ACK (RFC 3261 §13.3.1.4): T1 doubling to T2, for
    /// 64*T1.
    fn arm_ok(&mut self, now: Instant, key: u64, bytes: Bytes, cseq: u32) {
        let Some((slot, peer)) =
            pending_ok_of(&mut self.calls, &mut self.legs, &mut self.trunk_calls, key)
        else {
            return;
        };
        let ok = PendingOk::new(now, bytes, cseq, peer.transport.reliable());
        self.timers.push(ok.deadline, (key, CallTimer::OkTimeout));
        if let Some(next) = ok.next_retransmit() {
            self.timers.push(next, (key, CallTimer::OkRetransmit));
        }
        *slot = Some(ok);
    }

    /// A retransmission of a pending 2xx is due, or the wait for its ACK is over: without the
    /// ACK the dialog's session is over (§13.3.1.4), and so is the call it belongs to.
    fn ok_timer(&mut self, now: Instant, key: u64, at: Instant, timer: CallTimer) {
        let Some((slot, peer)) =
            pending_ok_of(&mut self.calls, &mut self.legs, &mut self.trunk_calls, key)
        else {
            return;
        };
        match timer {
            CallTimer::OkRetransmit => {
                if let Some((bytes, next)) = slot.as_mut().and_then(|ok| ok.retransmit(now, at)) {
                    self.out.push_back(Transmit { peer, bytes });
                    self.timers.push(next, (key, CallTimer::OkRetransmit));
                }
            }
            CallTimer::OkTimeout if slot.as_ref().is_some_and(|ok| ok.deadline == at) => {
                *slot = None;
                if let Some(call) = self.calls.get(&key) {
                    let _g = call.span.clone().entered();
                    warn!("no ACK for our 200 OK within 64*T1; hanging up");
                    self.hangup(now, key);
                } else if let Some(leg) = self.legs.get(&key) {
                    let call = leg.call;
                    warn!(seat = %self.registrar.seats()[leg.seat].id, "no ACK for our 2xx to the seat's re-INVITE; ending its leg");
                    if self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.bridged_leg == Some(key))
                    {
                        self.hangup(now, call);
                    } else {
                        // An expert in a three-way call (or a leg a transfer took off the
                        // call): only this seat goes.
                        self.bye_leg(now, key);
                        self.transfer_expert_left(now, call, key);
                    }
                } else {
                    warn!("no ACK for our 2xx to the trunk's re-INVITE; ending the trunk call");
                    self.end_trunk(now, key);
                    self.trunk_gone(now, key);
                }
            }
            _ => {}
        }
    }

    fn start_ivr(&mut self, now: Instant, key: u64) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let (first, next) = match call.pending.take() {
            Some(Decision::Run { first, next }) => (first, next),
            Some(Decision::Announce(p)) => (vec![p], Next::Hangup),
            _ => return,
        };
        call.ivr = Some(Ivr::new(self.plan.clone(), first, next));
        self.ivr_input(now, key, Input::Start);
    }

    fn ivr_input(&mut self, now: Instant, key: u64, input: Input) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.state == CallState::Ending {
            return;
        }
        let Some(ivr) = call.ivr.as_mut() else { return };
        let _g = call.span.clone().entered();
        let actions = ivr.handle(input);
        let stream = call.stream;
        for action in actions {
            match action {
                Action::Play { prompts, loop_last } => {
                    debug!(?prompts, loop_last, "play");
                    self.media.play(stream, &prompts, loop_last);
                }
                Action::Timer { after, kind, epoch } => {
                    self.timers
                        .push(now + after, (key, CallTimer::Ivr(kind.into(), epoch)));
                }
                Action::Enqueue { queue, priority } => self.enqueue(now, key, queue, priority),
                Action::Announce(q) => self.announce(now, key, q),
                Action::SurveyResult(rating) => self.survey_result(key, rating, None),
                Action::Dequeue(reason) => {
                    let reason = match reason {
                        crate::ivr::engine::ExitReason::Timeout => "timeout",
                        crate::ivr::engine::ExitReason::NoAgents => "no_agents",
                    };
                    self.dequeue(now, key, reason);
                    // Seats still ringing for this caller stop: its wait here is over.
                    for leg in self
                        .calls
                        .get_mut(&key)
                        .map(|c| std::mem::take(&mut c.legs))
                        .unwrap_or_default()
                    {
                        self.caller_gone(now, leg);
                    }
                }
                Action::Hangup => {
                    info!("IVR hangs up");
                    self.hangup(now, key);
                    return;
                }
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, req: &Request, info: &RequestInfo) {
        if let Some(leg) = self.leg_dialog(info) {
            return self.seat_acked(leg, info.cseq);
        }
        if self.trunk_acked(info) {
            return;
        }
        let Some(key) = self.dialog_key(info) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.ok.as_ref().is_some_and(|ok| ok.acked_by(info.cseq)) {
            return;
        }
        call.ok = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        if call.bye_after_ack {
            return self.hangup(now, key);
        }
        if !req.body.is_empty() {
            // The answer to the offer we put in a 2xx (delayed offer).
            match sdp::parse(&req.body) {
                Ok(m) => {
                    self.apply_remote_media(key, m);
                    let starts = self
                        .calls
                        .get(&key)
                        .is_some_and(|c| c.ivr.is_none() && c.consult.is_none());
                    if starts {
                        self.start_ivr(now, key);
                    }
                }
                Err(e) => {
                    let _g = call.span.clone().entered();
                    warn!(error = %e, "ACK carries an unusable SDP answer; hanging up");
                    self.hangup(now, key);
                }
            }
        } else if call.ivr.is_none() && call.remote_media.is_none() {
            let _g = call.span.clone().entered();
            warn!("delayed-offer call ACKed without an SDP answer; hanging up");
            self.hangup(now, key);
        }
    }

    fn apply_remote_media(&mut self, key: u64, m: RemoteMedia) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let (codec, pt) = m.primary();
        self.media.set_codec(call.stream, codec, pt);
        self.media.set_remote(call.stream, m.addr);
        // While bridged (to a seat, or a consultation to its target) the far end hears the
        // relay, never our stream.
        self.media.set_sending(
            call.stream,
            m.direction.we_may_send()
                && m.addr.is_some()
                && !call.bridged
                && call.consult.is_none(),
        );
        if let Some(tx) = self.media.tx(call.stream) {
            self.media_io.set_event_pt(tx, m.telephone_event);
            self.media_io.media_changed(tx, m.addr);
        }
        call.remote_media = Some(m);
    }

    fn reinvite(&mut self, now: Instant, key: u64, req: &Request, info: &RequestInfo, peer: Peer) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let _g = call.span.clone().entered();
        if call.state == CallState::Ringing {
            // An offer while our answer to the INVITE is still pending (RFC 3261 §14.2).
            let spec = ResponseSpec::new(491, "Request Pending");
            return self.respond(now, req, info, peer, &spec);
        }
        if call.ok.is_some() || call.state == CallState::Ending {
            // RFC 3261 §14.2: a re-INVITE while our 2xx is unacknowledged gets 500 + Retry-After.
            let hdrs = [("Retry-After", "1")];
            let spec = ResponseSpec {
                headers: &hdrs,
                ..ResponseSpec::new(500, "Server Internal Error")
            };
            return self.respond(now, req, info, peer, &spec);
        }
        if info.cseq <= call.remote_cseq {
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec::new(500, "Server Internal Error"),
            );
        }
        // A consultation keeps the caller's codec (its target's call goes to the caller).
        let codec = call.consult.as_ref().map(|c| c.codec);
        let Ok(offer) = self.reoffer(now, req, info, peer, codec) else {
            return;
        };
        info!(
            hold = offer
                .as_ref()
                .map(|o| !o.direction.we_may_send() || o.addr.is_none()),
            "re-INVITE"
        );
        if let Some(m) = offer.clone() {
            self.apply_remote_media(key, m);
        }
        let contact = self.contact(key);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.remote_cseq = info.cseq;
        // A target refresh (RFC 3261 §12.2.2): the new Contact is where in-dialog requests go.
        if let Some(c) = message::header(req, "Contact") {
            call.remote_target = message::addr_spec(c).to_string();
        }
        call.local_media.version += 1;
        let body = match &offer {
            Some(o) => sdp::answer(&call.local_media, o),
            None => sdp::offer(&call.local_media),
        };
        let hdrs = [("Contact", contact.as_str()), ("Allow", ALLOW)];
        let spec = ResponseSpec {
            to_tag: Some(&call.local_tag),
            headers: &hdrs,
            body: Some(("application/sdp", body.as_bytes())),
            ..ResponseSpec::new(200, "OK")
        };
        let bytes = Bytes::from(message::response(
            req,
            peer.addr,
            &self.cfg.sip.user_agent,
            &spec,
        ));
        self.arm_ok(now, key, bytes.clone(), info.cseq);
        let t =
            self.server_txs
                .respond(now, &info.branch, Method::Invite, 200, bytes.to_vec(), peer);
        self.out.push_back(t);
    }

    /// The SDP of a re-INVITE (`None` without a body), kept to `codec` when one is given (a
    /// bridge relays packets as they are, so a bridged leg keeps the call's codec). Anything
    /// unusable is answered 488 with a Warning saying why, and `Err` returned.
    pub(super) fn reoffer(
        &mut self,
        now: Instant,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
        codec: Option<crate::media::Codec>,
    ) -> Result<Option<RemoteMedia>, ()> {
        if req.body.is_empty() {
            return Ok(None);
        }
        let why = match sdp::parse(&req.body) {
            Ok(mut m) => match codec {
                None => return Ok(Some(m)),
                Some(c) if m.codecs.iter().any(|x| x.0 == c) => {
                    m.codecs.retain(|x| x.0 == c);
                    return Ok(Some(m));
                }
                Some(_) => "the call's codec must stay the same".to_string(),
            },
            Err(e) => e.to_string(),
        };
        let w = format!("305 hotline \"{why}\"");
        let hdrs = [("Warning", w.as_str())];
        let spec = ResponseSpec {
            headers: &hdrs,
            ..ResponseSpec::new(488, "Not Acceptable Here")
        };
        self.respond(now, req, info, peer, &spec);
        Err(())
    }

    fn info_or_update(
        &mut self,
        now: Instant,
        key: u64,
        req: &Request,
        info: &RequestInfo,
        peer: Peer,
    ) {
        if info.method == Method::Info {
            // SIP INFO DTMF (application/dtmf-relay), for phones that don't send RFC 4733.
            let ctype = message::header(req, "Content-Type")
                .unwrap_or("")
                .to_ascii_lowercase();
            if ctype.contains("dtmf") {
                let body = String::from_utf8_lossy(&req.body);
                let digit = body.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("signal")
                        .then(|| v.trim().chars().next())?
                });
                self.respond(now, req, info, peer, &ResponseSpec::new(200, "OK"));
                if let Some(d) = digit.filter(|d| crate::media::dtmf::char_event(*d).is_some()) {
                    self.handle_rtp_event(now, RtpEvent::Digit(key, d));
                }
                return;
            }
            return self.respond(now, req, info, peer, &ResponseSpec::new(200, "OK"));
        }
        // UPDATE: only a media change without SDP is trivial; with SDP, answer like re-INVITE.
        if req.body.is_empty() {
            return self.respond(now, req, info, peer, &ResponseSpec::new(200, "OK"));
        }
        match sdp::parse(&req.body) {
            Ok(m) => {
                self.apply_remote_media(key, m.clone());
                let Some(call) = self.calls.get_mut(&key) else {
                    return;
                };
                call.local_media.version += 1;
                let body = sdp::answer(&call.local_media, &m);
                let spec = ResponseSpec {
                    body: Some(("application/sdp", body.as_bytes())),
                    ..ResponseSpec::new(200, "OK")
                };
                self.respond(now, req, info, peer, &spec);
            }
            Err(e) => {
                let w = format!("305 hotline \"{e}\"");
                let hdrs = [("Warning", w.as_str())];
                let spec = ResponseSpec {
                    headers: &hdrs,
                    ..ResponseSpec::new(488, "Not Acceptable Here")
                };
                self.respond(now, req, info, peer, &spec);
            }
        }
    }

    fn cancel(&mut self, now: Instant, req: &Request, info: &RequestInfo, peer: Peer) {
        let Some(&key) = self.by_branch.get(&info.branch) else {
            return self.respond(
                now,
                req,
                info,
                peer,
                &ResponseSpec::new(481, "Call/Transaction Does Not Exist"),
            );
        };
        let tag = self.calls.get(&key).map(|c| c.local_tag.clone());
        let spec = ResponseSpec {
            to_tag: tag.as_deref(),
            ..ResponseSpec::new(200, "OK")
        };
        self.respond(now, req, info, peer, &spec);
        if self
            .calls
            .get(&key)
            .is_some_and(|c| c.state == CallState::Ringing)
        {
            Stats::inc(&self.stats.cancelled);
            if let Some(c) = self.calls.get(&key) {
                let _g = c.span.clone().entered();
                info!("cancelled before answer");
            }
            self.reject_ringing(now, key, 487, "Request Terminated");
        }
    }

    /// Final error response to a call that has not been answered, and the call ends.
    fn reject_ringing(&mut self, now: Instant, key: u64, code: u16, reason: &str) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let spec = ResponseSpec {
            to_tag: Some(&call.local_tag),
            ..ResponseSpec::new(code, reason)
        };
        let bytes = message::response(
            &call.invite,
            call.peer.addr,
            &self.cfg.sip.user_agent,
            &spec,
        );
        let t = self.server_txs.respond(
            now,
            &call.invite_branch,
            Method::Invite,
            code,
            bytes,
            call.peer,
        );
        self.out.push_back(t);
        self.finish(key);
    }

    /// We end an answered call: BYE, and the call goes once the BYE is answered or times out.
    fn hangup(&mut self, now: Instant, key: u64) {
        // A consultation's target goes at once, not when the seat answers our BYE.
        if let Some(k) = self
            .calls
            .get_mut(&key)
            .and_then(|c| c.consult.as_mut())
            .and_then(|c| c.trunk.take())
        {
            self.end_trunk(now, k);
        }
        self.transfer_caller_gone(now, key);
        self.dequeue(now, key, "abandoned");
        for leg in self
            .calls
            .get_mut(&key)
            .map(|c| std::mem::take(&mut c.legs))
            .unwrap_or_default()
        {
            self.caller_gone(now, leg);
        }
        let ua = self.cfg.sip.user_agent.clone();
        let listen_port = self.cfg.sip.listen.port();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.state == CallState::Ending {
            return;
        }
        if call.state == CallState::Ringing {
            return self.reject_ringing(now, key, 480, "Temporarily Unavailable");
        }
        if call.state == CallState::Answered && call.ok.is_some() {
            // Our 200 is not acknowledged: the BYE waits for the ACK or the ACK timeout, and
            // media stops now.
            call.bye_after_ack = true;
            self.media.set_sending(call.stream, false);
            return;
        }
        call.state = CallState::Ending;
        call.ok = None;
        call.local_cseq += 1;
        // Media stops now; the call record waits for the BYE's response.
        if let Some((tx, stats)) = self.media.remove(call.stream) {
            self.stats
                .rtp_frames_skipped
                .fetch_add(stats.frames_skipped, std::sync::atomic::Ordering::Relaxed);
            self.media_io.close(tx);
        }
        self.stream_calls.remove(&call.stream);
        let from = format!(
            "{};tag={}",
            message::header(&call.invite, "To").unwrap_or(""),
            call.local_tag
        );
        let to = message::header(&call.invite, "From")
            .unwrap_or("")
            .to_string();
        let branch = format!("z9hG4bK{}", random_token());
        let via_host = SocketAddr::new(call.local_ip, listen_port).to_string();
        let bytes = message::in_dialog_request(&InDialogRequest {
            method: "BYE",
            target: &call.remote_target,
            via_transport: call.peer.transport.via_name(),
            via_host: &via_host,
            branch: &branch,
            from: &from,
            to: &to,
            call_id: &call.call_id,
            cseq: call.local_cseq.max(1),
            routes: &call.route_set,
            user_agent: &ua,
            extra: &[],
        });
        let t = Transmit {
            peer: call.peer,
            bytes: bytes.into(),
        };
        let t = self.client_txs.start(now, &branch, key, t);
        self.out.push_back(t);
    }

    /// Records the caller's rating of the call with the seat and queue it was about, once.
    fn survey_result(&mut self, key: u64, rating: Option<u8>, why: Option<&str>) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.survey_asked || call.survey_done {
            return;
        }
        call.survey_done = true;
        let (call_id, seat, queue) = (call.call_id.clone(), call.bridged_seat, call.bridged_queue);
        let label = match rating {
            Some(1) => "satisfied",
            Some(2) => "basically_satisfied",
            Some(3) => "dissatisfied",
            _ => why.unwrap_or("no_answer"),
        };
        info!(call_id = %call_id, ?rating, label, "satisfaction survey");
        self.record(
            "survey",
            Some(&call_id),
            seat,
            queue,
            serde_json::json!({ "rating": rating, "label": label }),
        );
    }

    /// Removes a call and everything it holds.
    fn finish(&mut self, key: u64) {
        let consult = self
            .calls
            .get(&key)
            .and_then(|c| c.consult.as_ref())
            .map(|c| c.trunk);
        match consult {
            // A seat's consultation: its target's call ends with it.
            Some(trunk) => {
                if let Some(k) = trunk {
                    self.end_trunk(self.now, k);
                }
            }
            None => {
                self.transfer_caller_gone(self.now, key);
                self.survey_result(key, None, Some("caller_hung_up"));
                self.dequeue(self.now, key, "abandoned");
                for leg in self
                    .calls
                    .get_mut(&key)
                    .map(|c| std::mem::take(&mut c.legs))
                    .unwrap_or_default()
                {
                    self.caller_gone(self.now, leg);
                }
            }
        }
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        if let Some((tx, stats)) = self.media.remove(call.stream) {
            self.stats
                .rtp_frames_skipped
                .fetch_add(stats.frames_skipped, std::sync::atomic::Ordering::Relaxed);
            self.media_io.close(tx);
        }
        self.stream_calls.remove(&call.stream);
        self.dialogs
            .remove(&(call.call_id.clone(), call.remote_tag.clone()));
        self.by_branch.remove(&call.invite_branch);
        if consult.is_some() {
            let _g = call.span.enter();
            info!("consultation call ended");
            return;
        }
        self.stats
            .calls_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Stats::inc(&self.stats.calls_ended);
        let digits = call
            .ivr
            .as_ref()
            .map(|i| i.digits.clone())
            .unwrap_or_default();
        {
            let _g = call.span.enter();
            info!(digits, "call ended");
        }
        let now = self.now;
        let detail = serde_json::json!({
            "answered": call.answered_at.is_some(),
            "duration_s": call.answered_at.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            "waited_s": call.queued_at.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            "bridged": call.bridged,
            "digits": digits,
        });
        self.record(
            "call_end",
            Some(&call.call_id),
            call.bridged_seat,
            call.queue,
            detail,
        );
    }
}

/// The pending 2xx of dialog `key` and where it goes: callers, seat legs and trunk calls
/// share one key space.
fn pending_ok_of<'a>(
    calls: &'a mut HashMap<u64, Call>,
    legs: &'a mut HashMap<u64, seat_leg::SeatLeg>,
    trunks: &'a mut HashMap<u64, trunk_call::TrunkCall>,
    key: u64,
) -> Option<(&'a mut Option<PendingOk>, Peer)> {
    if let Some(c) = calls.get_mut(&key) {
        return Some((&mut c.ok, c.peer));
    }
    if let Some(l) = legs.get_mut(&key) {
        return Some((&mut l.ok, l.peer));
    }
    trunks.get_mut(&key).map(|t| (&mut t.ok, t.uac.peer))
}

/// A request refused before any dialog exists: status, reason and extra headers.
struct Refusal {
    code: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
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

use crate::sip::random_token;
