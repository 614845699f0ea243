//! Seats: their registrations (REGISTER, keep-alives), the agent's state from the phone
//! (feature codes, digest-authenticated) or the API, and the live seat and queue views the
//! HTTP API and the wallboard read. Also the once-a-second housekeeping.

use super::*;
use crate::acd::agent::{AgentError, Event as AgentEvent, State as AgentState};
use crate::ivr::dialplan::Decision;
use crate::registrar::{AuthOutcome, Outcome};
use crate::sip::message::{self, InDialogRequest};
use dashmap::DashMap;
use tracing::{Span, warn};

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
    /// Seconds of after-call work left, while in it.
    pub wrap_up_left_s: Option<u64>,
    /// The call offered to the seat or on it (what the desk shows).
    pub call: Option<SeatCall>,
}

/// A call as the seat's desk shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeatCall {
    /// `ringing` (offered) or `talking`.
    pub phase: &'static str,
    /// The caller's number as the seat may see it.
    pub caller: String,
    /// The number the caller dialled, and what it is (a retired line says so).
    pub dialled: String,
    pub dialled_label: String,
    pub queue: String,
    pub queue_label: String,
    /// How long the caller waited before this offer.
    pub waited_s: u64,
    /// An expert's offer: the seat that transfers the caller.
    pub transfer_by: Option<String>,
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
    /// What people see for it (e.g. "12348 全国公共法律服务专用电话"), not the id.
    pub label: String,
    pub waiting: usize,
    pub longest_wait_s: u64,
    pub agents_logged_in: usize,
    pub agents_available: usize,
    pub strategy: crate::acd::queue::Strategy,
    /// Today (Asia/Shanghai), rebuilt the same way by `hotline figures`.
    pub today: crate::metrics::figures::QueueFigures,
}

pub type QueueDirectory = Arc<DashMap<String, QueueView>>;

/// The live views the HTTP side reads.
#[derive(Default)]
pub(super) struct Views {
    seats: SeatDirectory,
    queues: QueueDirectory,
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

impl<M: MediaIo> Core<M> {
    /// The live seat directory (for the HTTP API).
    pub fn seat_directory(&self) -> SeatDirectory {
        self.views.seats.clone()
    }

    /// The live queue directory (for the HTTP API), refreshed once a second.
    pub fn queue_directory(&self) -> QueueDirectory {
        self.views.queues.clone()
    }

    pub(super) fn publish_queues(&self, now: Now) {
        for (q, queue) in self.env.plan.queues.iter().enumerate() {
            let q = QueueId(q);
            // Callers whose agent is transferring them to an expert group wait for it too.
            let transfers: Vec<u64> = self
                .acd
                .expert_waits(q)
                .map(|since| now.since(since).as_secs())
                .collect();
            let longest = self
                .acd
                .waiting(q)
                .iter()
                .filter_map(|e| {
                    self.legs
                        .callers
                        .get(&CallerId(e.key))
                        .and_then(|c| c.entered())
                        // A callback waits from its caller's original arrival.
                        .or_else(|| self.callbacks.get(&e.key).map(|r| r.since))
                })
                .map(|t| now.since(t).as_secs())
                .chain(transfers.iter().copied())
                .max()
                .unwrap_or(0);
            let serving: Vec<usize> = (0..self.registrar.seats().len())
                .filter(|&i| {
                    self.registrar.seats()[i]
                        .queues
                        .iter()
                        .any(|n| n == &queue.name)
                })
                .collect();
            self.views.queues.insert(
                queue.name.clone(),
                QueueView {
                    name: queue.name.clone(),
                    label: self.queue_label(&queue.name),
                    waiting: self.acd.waiting(q).len() + transfers.len(),
                    longest_wait_s: longest,
                    agents_logged_in: serving
                        .iter()
                        .filter(|&&i| self.acd.state(i) != AgentState::LoggedOut)
                        .count(),
                    agents_available: serving
                        .iter()
                        .filter(|&&i| self.acd.state(i) == AgentState::Available)
                        .count(),
                    strategy: queue.strategy,
                    today: self
                        .records
                        .figures
                        .queues
                        .get(&queue.name)
                        .cloned()
                        .unwrap_or_default(),
                },
            );
        }
    }

    pub(super) fn publish_seat(&self, i: usize, now: Now) {
        let Some(seat) = self.registrar.seats().get(i) else {
            return;
        };
        let Some(agent) = self.acd.agent(i) else {
            return;
        };
        let contacts: Vec<ContactView> = self
            .registrar
            .contacts(i, now.mono)
            .map(|b| ContactView {
                uri: b.uri.clone(),
                source: b.peer.addr.to_string(),
                transport: b.peer.transport.via_name(),
                expires_in_s: b.expires_at.saturating_duration_since(now.mono).as_secs(),
                reachable: b.reachable,
            })
            .collect();
        let view = SeatView {
            seat: seat.clone(),
            registered: !contacts.is_empty(),
            contacts,
            state: agent.state(),
            state_for_s: now.since(agent.since()).as_secs(),
            pause_reason: agent.pause_reason().map(str::to_string),
            counters: agent.counters,
            today: self
                .records
                .figures
                .seats
                .get(&seat.id)
                .cloned()
                .unwrap_or_default(),
            wrap_up_left_s: agent
                .wrap_up_until()
                .map(|t| t.saturating_duration_since(now.mono).as_secs()),
            call: self.seat_call(i),
        };
        self.views.seats.insert(seat.id.clone(), view);
    }

    /// The call offered to seat `i` or on it, as its desk shows it.
    fn seat_call(&self, i: usize) -> Option<SeatCall> {
        let leg = self
            .legs
            .seats
            .values()
            .find(|l| l.seat == i && (l.is_offered() || l.is_talking()))?;
        let c = self.legs.callers.get(&leg.caller())?;
        let queue = self.env.plan.queues.get(leg.queue.0)?.name.clone();
        let transfer_by = match leg.what {
            crate::acd::Waiting::Transfer(k) => self
                .transfers
                .get(&super::CallerId(k))
                .and_then(|t| t.by_seat())
                .and_then(|s| self.registrar.seats().get(s))
                .map(|s| s.id.clone()),
            crate::acd::Waiting::Caller(_) => None,
        };
        Some(SeatCall {
            phase: if leg.is_talking() {
                "talking"
            } else {
                "ringing"
            },
            caller: super::presentable(&c.number).to_string(),
            dialled_label: self.env.plan.number_label(&c.dialled),
            dialled: c.dialled.clone(),
            queue_label: self.queue_label(&queue),
            queue,
            waited_s: c
                .queued_at
                .map(|t| leg.offered_at.saturating_duration_since(t).as_secs())
                .unwrap_or(0),
            transfer_by,
        })
    }

    /// What desks and the wallboard show for queue `name`.
    pub(super) fn queue_label(&self, name: &str) -> String {
        if let Some(l) = self
            .env
            .cfg
            .queues
            .get(name)
            .map(|q| q.label.trim())
            .filter(|l| !l.is_empty())
        {
            return l.to_string();
        }
        if let Some(number) = name.strip_prefix("line-") {
            let label = self.env.plan.number_label(number);
            if label != number {
                return label;
            }
        }
        name.to_string()
    }

    /// Every queue's label, by queue name.
    pub fn queue_labels(&self) -> std::collections::HashMap<String, String> {
        self.env
            .plan
            .queues
            .iter()
            .map(|q| (q.name.clone(), self.queue_label(&q.name)))
            .collect()
    }

    /// The agent action a dialled number stands for, if it is a feature code.
    pub(super) fn feature_code(&self, number: &str) -> Option<AgentAction> {
        let a = &self.env.cfg.agents;
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

    /// A seat dials a feature code: only an authenticated seat may change its state; a prompt
    /// confirms (or says it was refused).
    pub(super) fn feature_call(
        &mut self,
        now: Now,
        req: Request,
        info: RequestInfo,
        peer: Peer,
        action: AgentAction,
        span: Span,
    ) {
        let i = match self.authenticate_seat(now, &req, peer) {
            Ok(i) => i,
            Err(r) => return self.refuse_invite(now, &req, &info, peer, r),
        };
        let prompt = action.prompt();
        let ok = self.agent_action(now, i, action, "feature code").is_ok();
        let name = if ok { prompt } else { "agent/refused" };
        match self.media.engine.prompts().id(name).or(self.env.plan.sorry) {
            Some(p) => {
                self.new_caller_with(now, req, info, peer, span, Decision::Announce(p));
            }
            None => self.refuse_invite(
                now,
                &req,
                &info,
                peer,
                Refusal::new(500, "Server Internal Error"),
            ),
        }
    }

    /// Changes seat `i`'s agent state (from its phone or the API); `by` is logged.
    pub(super) fn agent_action(
        &mut self,
        now: Now,
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
        let Some(agent) = self.acd.agent_mut(i) else {
            return Err(AgentError::NotLoggedIn);
        };
        let label = format!("{action:?}");
        let r = agent.handle(now.mono, action.event());
        let reason = agent.pause_reason().map(str::to_string);
        match &r {
            Ok(state) => {
                info!(seat = %seat, action = %label, ?state, by, "agent state changed");
                let event = RecordEvent::AgentState {
                    state: *state,
                    action: label,
                    by: by.to_string(),
                    reason,
                };
                self.record(now, event, None, Some(i), None);
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
        now: Now,
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

    /// The seat whose digest (`Proxy-Authorization`) signs this request from a phone, or
    /// the answer to send: 407 with a challenge, 403, 400.
    pub(super) fn authenticate_seat(
        &mut self,
        now: Now,
        req: &Request,
        peer: Peer,
    ) -> Result<usize, Refusal> {
        let from_user = message::header(req, "From")
            .map(message::user_of)
            .unwrap_or("")
            .to_string();
        let now_s = now.unix_s();
        match self.registrar.authenticate(
            now.mono,
            now_s,
            req,
            &from_user,
            "Proxy-Authorization",
            peer,
        ) {
            AuthOutcome::Seat(i) => Ok(i),
            AuthOutcome::Challenge { stale } => {
                let salt = self.rng.u64();
                let mut r = Refusal::new(407, "Proxy Authentication Required");
                for c in self.registrar.challenges(now_s, salt, stale) {
                    r = r.with("Proxy-Authenticate", c);
                }
                Err(r)
            }
            AuthOutcome::Throttled { retry_after_s } => {
                Err(Refusal::new(403, "Forbidden").with("Retry-After", retry_after_s.to_string()))
            }
            AuthOutcome::NotFound | AuthOutcome::Forbidden(_) => {
                Err(Refusal::new(403, "Forbidden"))
            }
            AuthOutcome::BadRequest(why) => Err(Refusal::new(400, "Bad Request").with(
                "Warning",
                format!("399 hotline \"{}\"", why.replace('"', "'")),
            )),
        }
    }

    pub(super) fn register(&mut self, now: Now, req: &Request, info: &RequestInfo, peer: Peer) {
        let now_s = now.unix_s();
        let outcome = self.registrar.register(now.mono, now_s, req, info, peer);
        let (code, reason) = outcome.status();
        let mut owned: Vec<(&str, String)> = Vec::new();
        match &outcome {
            Outcome::Registered { seat, contacts } => {
                for (uri, left) in contacts {
                    owned.push(("Contact", format!("<{uri}>;expires={left}")));
                }
                // RFC 3327 §5.3: the Path we stored, back to the proxy and the phone.
                for h in req.headers.iter() {
                    if h.name().eq_ignore_ascii_case("Path") {
                        owned.push(("Path", h.value().to_string()));
                    }
                }
                if let Some(i) = self.registrar.seat_index(seat) {
                    self.seat_contacts_changed(now, i);
                    self.publish_seat(i, now);
                }
                self.dispatch(now);
            }
            Outcome::Challenge { stale } => {
                let salt = self.rng.u64();
                for c in self.registrar.challenges(now_s, salt, *stale) {
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
        self.sip
            .respond(now.mono, req, info, peer, &spec, &mut self.rng);
    }

    /// Keep-alive OPTIONS to a registered contact; no answer marks it unreachable.
    fn send_qualify(&mut self, now: Now, seat: usize, b: &crate::registrar::Binding) {
        let branch = self.rng.branch();
        let host = SocketAddr::new(self.via_ip(), self.env.cfg.sip.listen.port()).to_string();
        let from = format!("<sip:hotline@{host}>;tag={}", self.rng.token());
        let to = format!("<{}>", b.uri);
        let call_id = self.rng.token();
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
            routes: &b.path,
            user_agent: &self.env.user_agent,
            extra: &[],
        });
        let t = Transmit {
            peer: b.peer,
            bytes: bytes.into(),
        };
        let owner = Owner::Qualify {
            seat,
            uri: b.uri.clone(),
        };
        self.sip.request(now.mono, &branch, t, owner);
    }

    /// Once a second: agents whose wrap-up ended, offers, queues without members, the views,
    /// calls past the maximum duration, expired registrations and keep-alives.
    pub(super) fn housekeeping(&mut self, now: Now) {
        if now.unix_s().is_multiple_of(60) {
            self.repeat.prune(now.unix_s() as i64);
        }
        self.acd.tick(now.mono);
        // Agents come free by wrap-up ending or a retry delay passing: offer what waits.
        self.dispatch(now);
        for q in 0..self.env.plan.queues.len() {
            self.check_no_agents(now, QueueId(q));
        }
        self.publish_queues(now);
        self.timers
            .set(Timer::Housekeeping, Some(now.mono + HOUSEKEEPING_EVERY));
        // Calls past the maximum duration (a lost BYE): checked here, once a second, rather
        // than with a 4-hour timer per call.
        let max = Duration::from_secs(self.env.cfg.sip.max_call_s);
        let overdue: Vec<CallerId> = self
            .legs
            .callers
            .iter()
            .filter(|(_, c)| {
                !c.session.is_over() && c.answered_at.is_some_and(|t| now.since(t) >= max)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in overdue {
            if let Some(c) = self.legs.callers.get(&k) {
                let _g = c.span.clone().entered();
                info!("maximum call duration reached");
            }
            self.set_end_cause(k, crate::metrics::record::EndCause::MaxDuration);
            self.end_caller(now, k, None);
        }
        let overdue: Vec<ConsultationId> = self
            .legs
            .consultations
            .iter()
            .filter(|(_, c)| {
                !c.session.is_over() && c.answered_at.is_some_and(|t| now.since(t) >= max)
            })
            .map(|(k, _)| *k)
            .collect();
        for c in overdue {
            warn!("maximum call duration reached (consultation)");
            self.end_consultation(now, c, None);
        }
        self.registrar.prune(now.mono);
        let ringing: std::collections::BTreeSet<usize> =
            self.legs.seats.values().map(|l| l.seat).collect();
        for seat in ringing {
            self.seat_contacts_changed(now, seat);
        }
        let qualify = Duration::from_secs(self.env.cfg.registrar.qualify_s);
        if self.registrar.qualify_due(now.mono, qualify) {
            for (seat, b) in self.registrar.all_bindings(now.mono) {
                self.send_qualify(now, seat, &b);
            }
        }
        for i in 0..self.registrar.seats().len() {
            self.publish_seat(i, now);
        }
    }
}
