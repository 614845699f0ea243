//! The ACD (automatic call distribution), behind one owner ([`Acd`]): the agents and their
//! states ([`agent`]), the waiting lines and the choice of seat ([`queue`]), what callers are
//! told while they wait ([`announce`]), and which offers ring for whom. It is sans-IO: call
//! control asks it what to offer to which seats ([`Acd::plan`]), places those calls, and
//! tells it how each offer ended.
//!
//! Two things wait for seats: a caller in a queue, and a caller's transfer to an expert group
//! (which holds a caller and an agent, so it goes ahead of callers). Both are [`Waiting`].

pub mod agent;
pub mod announce;
pub mod callback;
pub mod queue;
pub mod repeat;

use crate::config::SeatConfig;
use crate::ivr::dialplan::{Dialplan, QueueId};
use agent::{Agent, State};
use queue::{Candidate, Entry, Line};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What waits for a seat: a caller (by its id), or a caller's transfer to an expert group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Waiting {
    Caller(u64),
    Transfer(u64),
}

/// A transfer waiting for an expert of `queue` (since `since`, by the agent at `by_seat`).
#[derive(Debug, Clone, Copy)]
struct ExpertWait {
    caller: u64,
    queue: QueueId,
    since: Instant,
    by_seat: usize,
}

/// Offer `what` to these seats of `queue` (several with ring-all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub what: Waiting,
    pub queue: QueueId,
    pub seats: Vec<usize>,
}

pub struct Acd {
    agents: Vec<Agent>,
    /// Callers waiting, per queue.
    lines: Vec<Line>,
    /// Per queue: its member seats with their penalties.
    members: Vec<Vec<(usize, u32)>>,
    /// Per queue: the seat round-robin offered last.
    rr_last: Vec<Option<usize>>,
    /// (queue, seat) → calls taken today, for fewest-calls.
    taken: HashMap<(usize, usize), u64>,
    experts: Vec<ExpertWait>,
    /// The offers ringing, by what they offer (leg ids).
    offers: HashMap<Waiting, Vec<u64>>,
}

impl Acd {
    pub fn new(plan: &Dialplan, seats: &[SeatConfig], now: Instant, auto_pause_after: u32) -> Acd {
        Acd {
            agents: seats
                .iter()
                .map(|_| Agent::new(now, auto_pause_after))
                .collect(),
            lines: vec![Line::default(); plan.queues.len()],
            members: plan
                .queues
                .iter()
                .map(|q| {
                    seats
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.queues.contains(&q.name))
                        .map(|(i, s)| (i, s.penalties.get(&q.name).copied().unwrap_or(0)))
                        .collect()
                })
                .collect(),
            rr_last: vec![None; plan.queues.len()],
            taken: HashMap::new(),
            experts: Vec::new(),
            offers: HashMap::new(),
        }
    }

    pub fn agent(&self, seat: usize) -> Option<&Agent> {
        self.agents.get(seat)
    }

    pub fn agent_mut(&mut self, seat: usize) -> Option<&mut Agent> {
        self.agents.get_mut(seat)
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The state of seat `seat`'s agent (logged out for an unknown seat).
    pub fn state(&self, seat: usize) -> State {
        self.agents
            .get(seat)
            .map(|a| a.state())
            .unwrap_or(State::LoggedOut)
    }

    /// Brings every agent's timed state up to `now` (wrap-up ending).
    pub fn tick(&mut self, now: Instant) {
        for a in &mut self.agents {
            a.tick(now);
        }
    }

    pub fn any_ready(&self, now: Instant) -> bool {
        self.agents.iter().any(|a| a.ready(now))
    }

    /// The seats that serve queue `q`.
    pub fn members(&self, q: QueueId) -> impl Iterator<Item = usize> + '_ {
        self.members.get(q.0).into_iter().flatten().map(|&(i, _)| i)
    }

    /// Whether any member of `q` is logged in.
    pub fn logged_in(&self, q: QueueId) -> bool {
        self.members(q).any(|i| self.state(i) != State::LoggedOut)
    }

    /// Members of `q` at work (logged in and not paused).
    pub fn at_work(&self, q: QueueId) -> usize {
        self.members(q)
            .filter(|&i| !matches!(self.state(i), State::LoggedOut | State::Paused))
            .count()
    }

    /// A new day: fewest-calls counts today's calls.
    pub fn new_day(&mut self) {
        self.taken.clear();
    }

    /// Caller `caller` waits in `q` from `since` (its first queue) with `priority`.
    pub fn enqueue(&mut self, caller: u64, q: QueueId, priority: u8, since: Instant) {
        if let Some(line) = self.lines.get_mut(q.0) {
            line.push(Entry {
                key: caller,
                priority,
                since,
            });
        }
    }

    /// The caller's place in `q`'s line (1 = next), with priority callers ahead as far as
    /// the queue's overtaking bound lets them be.
    pub fn position(
        &self,
        caller: u64,
        q: QueueId,
        now: Instant,
        bound: Duration,
    ) -> Option<usize> {
        self.lines.get(q.0)?.position(caller, now, bound)
    }

    /// The caller leaves `q`'s line.
    pub fn dequeue(&mut self, caller: u64, q: QueueId) {
        if let Some(line) = self.lines.get_mut(q.0) {
            line.remove(caller);
        }
    }

    pub fn waiting(&self, q: QueueId) -> &[Entry] {
        self.lines.get(q.0).map(|l| l.entries()).unwrap_or(&[])
    }

    /// A transfer of `caller` by the agent at `by_seat` waits for an expert of `q`.
    pub fn wait_for_expert(&mut self, caller: u64, q: QueueId, since: Instant, by_seat: usize) {
        self.experts.retain(|e| e.caller != caller);
        self.experts.push(ExpertWait {
            caller,
            queue: q,
            since,
            by_seat,
        });
    }

    /// The transfer of `caller` no longer waits for an expert (one answered, or it is over).
    pub fn stop_waiting_for_expert(&mut self, caller: u64) {
        self.experts.retain(|e| e.caller != caller);
    }

    /// Transfers waiting for an expert of `q` (ringing or not), with since when.
    pub fn expert_waits(&self, q: QueueId) -> impl Iterator<Item = Instant> + '_ {
        self.experts
            .iter()
            .filter(move |e| e.queue == q)
            .map(|e| e.since)
    }

    /// The offers ringing for `what`.
    pub fn offers(&self, what: Waiting) -> &[u64] {
        self.offers.get(&what).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Leg `leg` offers `what` to `seat`: the agent rings.
    pub fn offered(&mut self, now: Instant, what: Waiting, leg: u64, seat: usize) {
        self.offers.entry(what).or_default().push(leg);
        if let Some(a) = self.agents.get_mut(seat) {
            let _ = a.handle(now, agent::Event::Offered);
        }
    }

    /// An offer of `what` is over (answered, or not): the other offers of `what` that ring
    /// are returned when it was answered (ring-all: the first answer wins).
    pub fn offer_over(&mut self, what: Waiting, leg: u64, answered: bool) -> Vec<u64> {
        let Some(list) = self.offers.get_mut(&what) else {
            return vec![];
        };
        list.retain(|&l| l != leg);
        let others = if answered {
            std::mem::take(list)
        } else {
            vec![]
        };
        if list.is_empty() {
            self.offers.remove(&what);
        }
        others
    }

    /// All offers of `what` stop (it went away): the legs that ring for it.
    pub fn withdraw(&mut self, what: Waiting) -> Vec<u64> {
        self.offers.remove(&what).unwrap_or_default()
    }

    /// `seat` took a call of `q` (fewest-calls).
    pub fn took(&mut self, q: QueueId, seat: usize) {
        *self.taken.entry((q.0, seat)).or_default() += 1;
    }

    /// What to offer now, in serving order: transfers to expert groups first (each holds a
    /// caller and an agent), then callers across all queues (priority within the overtaking
    /// bound, then the longest wait), each to the seat(s) its queue's strategy picks among the
    /// free members its wait has widened to. Something already ringing waits for that offer's
    /// outcome. `usable(seat)`: the seat has a reachable phone; `entered(caller)`: when the
    /// caller entered its present queue.
    pub fn plan(
        &mut self,
        now: Instant,
        plan: &Dialplan,
        usable: impl Fn(usize) -> bool,
        entered: impl Fn(u64) -> Option<Instant>,
    ) -> Vec<Proposal> {
        let mut out = Vec::new();
        if !self.any_ready(now) {
            return out;
        }
        let mut used = std::collections::HashSet::new();
        let mut experts = self.experts.clone();
        experts.sort_unstable_by_key(|e| (e.since, e.caller));
        for e in experts {
            let what = Waiting::Transfer(e.caller);
            if self.offers.contains_key(&what) {
                continue;
            }
            // Never back to the agent who is transferring.
            let waited = now.saturating_duration_since(e.since);
            let seats = self.pick(now, plan, e.queue, waited, Some(e.by_seat), &usable, &used);
            if !seats.is_empty() {
                used.extend(seats.iter().copied());
                out.push(Proposal {
                    what,
                    queue: e.queue,
                    seats,
                });
            }
        }
        let mut line: Vec<(usize, Entry)> = Vec::new();
        for (q, l) in self.lines.iter().enumerate() {
            for e in l.entries() {
                if !self.offers.contains_key(&Waiting::Caller(e.key)) {
                    line.push((q, *e));
                }
            }
        }
        line.sort_by_key(|(q, e)| queue::serving_key(e, now, plan.queues[*q].max_overtaken));
        for (q, e) in line {
            if self
                .agents
                .iter()
                .enumerate()
                .all(|(i, a)| !a.ready(now) || used.contains(&i))
            {
                break;
            }
            let waited = now.saturating_duration_since(entered(e.key).unwrap_or(now));
            let seats = self.pick(now, plan, QueueId(q), waited, None, &usable, &used);
            if !seats.is_empty() {
                used.extend(seats.iter().copied());
                out.push(Proposal {
                    what: Waiting::Caller(e.key),
                    queue: QueueId(q),
                    seats,
                });
            }
        }
        out
    }

    /// The free seats of queue `q` (but `except` and those already `used`) to offer a call
    /// that has waited `waited`, by the queue's strategy among the members its wait has
    /// widened to.
    #[allow(clippy::too_many_arguments)]
    fn pick(
        &mut self,
        now: Instant,
        plan: &Dialplan,
        q: QueueId,
        waited: Duration,
        except: Option<usize>,
        usable: &impl Fn(usize) -> bool,
        used: &std::collections::HashSet<usize>,
    ) -> Vec<usize> {
        let Some(queue) = plan.queues.get(q.0) else {
            return vec![];
        };
        let max_penalty = queue::max_penalty(waited, queue.widen_every);
        let candidates: Vec<Candidate> = self.members[q.0]
            .iter()
            .filter(|&&(i, p)| {
                p <= max_penalty
                    && Some(i) != except
                    && !used.contains(&i)
                    && self.agents[i].ready(now)
                    && usable(i)
            })
            .map(|&(i, penalty)| Candidate {
                seat: i,
                penalty,
                idle_since: self.agents[i].since(),
                calls_taken: self.taken.get(&(q.0, i)).copied().unwrap_or(0),
            })
            .collect();
        let seats = queue::choose(queue.strategy, &candidates, self.rr_last[q.0]);
        if let Some(&first) = seats.first() {
            self.rr_last[q.0] = Some(first);
        }
        seats
    }

    /// What is still held, for the tests' leak check: (callers in lines, expert waits,
    /// offers).
    pub fn held(&self) -> (usize, usize, usize) {
        (
            self.lines.iter().map(|l| l.len()).sum(),
            self.experts.len(),
            self.offers.values().map(Vec::len).sum(),
        )
    }
}
