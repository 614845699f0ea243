//! An agent's (话务员) state machine: logged out, available, ringing, on call, wrap-up
//! (after-call work) and paused with a reason. Events come from the softphone (feature codes),
//! the HTTP API and the ACD; each returns the new state or why it was refused. Time is passed
//! in; wrap-up ends on [`Agent::tick`].

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    LoggedOut,
    Available,
    Ringing,
    OnCall,
    WrapUp,
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Login,
    Logout,
    Pause(String),
    Unpause,
    /// The ACD rings this agent.
    Offered,
    Answered,
    /// Rang until the ring timeout (or the seat failed).
    Missed,
    /// The seat declined (486/600/603).
    Rejected,
    /// The seat's phone failed the offer (4xx/5xx other than a decline, unusable answer).
    Failed,
    /// The caller withdrew while the seat rang: not the agent's doing.
    Withdrawn,
    /// Ring-all: another seat answered first. Not counted as an offer to this seat: with n
    /// seats ringing, counting it would put every ring-all seat's answer rate near 1/n.
    AnsweredElsewhere,
    CallEnded {
        wrap_up: Duration,
    },
}

impl Event {
    /// The outcome of an offer as records name it.
    pub fn label(&self) -> &'static str {
        match self {
            Event::Answered => "answered",
            Event::Missed => "missed",
            Event::Rejected => "rejected",
            Event::Failed => "failed",
            Event::Withdrawn => "withdrawn",
            Event::AnsweredElsewhere => "answered_elsewhere",
            _ => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("not logged in")]
    NotLoggedIn,
    #[error("already logged in")]
    AlreadyLoggedIn,
    #[error("on a call or ringing")]
    Busy,
    #[error("not paused")]
    NotPaused,
    #[error("event does not fit state {0:?}")]
    Unexpected(State),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub offered: u64,
    pub answered: u64,
    pub missed: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// The agent's state with what each state needs: the end of wrap-up, the pause reason, the
/// rest after a missed offer (the agent is available but not offered calls until then).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    LoggedOut,
    Available { rest_until: Option<Instant> },
    Ringing,
    OnCall,
    WrapUp { until: Instant },
    Paused { reason: String },
}

impl Status {
    fn kind(&self) -> State {
        match self {
            Status::LoggedOut => State::LoggedOut,
            Status::Available { .. } => State::Available,
            Status::Ringing => State::Ringing,
            Status::OnCall => State::OnCall,
            Status::WrapUp { .. } => State::WrapUp,
            Status::Paused { .. } => State::Paused,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    status: Status,
    since: Instant,
    missed_in_row: u32,
    auto_pause_after: u32,
    pub retry_after: Duration,
    pub counters: Counters,
}

impl Agent {
    pub fn new(now: Instant, auto_pause_after: u32) -> Self {
        Agent {
            status: Status::LoggedOut,
            since: now,
            missed_in_row: 0,
            auto_pause_after,
            retry_after: Duration::from_secs(5),
            counters: Counters::default(),
        }
    }

    /// Available, and not resting after a missed offer.
    pub fn ready(&self, now: Instant) -> bool {
        matches!(self.status, Status::Available { rest_until } if rest_until.is_none_or(|t| t <= now))
    }

    pub fn state(&self) -> State {
        self.status.kind()
    }
    pub fn since(&self) -> Instant {
        self.since
    }
    /// When the after-call work ends, while in it.
    pub fn wrap_up_until(&self) -> Option<Instant> {
        match self.status {
            Status::WrapUp { until } => Some(until),
            _ => None,
        }
    }
    pub fn pause_reason(&self) -> Option<&str> {
        match &self.status {
            Status::Paused { reason } => Some(reason),
            _ => None,
        }
    }

    fn set(&mut self, now: Instant, s: Status) {
        self.status = s;
        self.since = now;
    }

    fn available(&mut self, now: Instant, rest: bool) {
        let rest_until = rest.then(|| now + self.retry_after);
        self.set(now, Status::Available { rest_until });
    }

    pub fn handle(&mut self, now: Instant, ev: Event) -> Result<State, AgentError> {
        use State::*;
        match (ev, self.state()) {
            (Event::Login, LoggedOut) => {
                self.missed_in_row = 0;
                self.available(now, false)
            }
            (Event::Login, _) => return Err(AgentError::AlreadyLoggedIn),
            (Event::Logout, LoggedOut) => return Err(AgentError::NotLoggedIn),
            (Event::Logout, Ringing | OnCall) => return Err(AgentError::Busy),
            (Event::Logout, _) => self.set(now, Status::LoggedOut),
            (Event::Pause(_), LoggedOut) => return Err(AgentError::NotLoggedIn),
            (Event::Pause(_), Ringing | OnCall) => return Err(AgentError::Busy),
            (Event::Pause(reason), _) => self.set(now, Status::Paused { reason }),
            (Event::Unpause, Paused) => {
                self.missed_in_row = 0;
                self.available(now, false)
            }
            (Event::Unpause, LoggedOut) => return Err(AgentError::NotLoggedIn),
            (Event::Unpause, _) => return Err(AgentError::NotPaused),
            (Event::Offered, Available) => {
                self.counters.offered += 1;
                self.set(now, Status::Ringing)
            }
            (Event::Answered, Ringing) => {
                self.counters.answered += 1;
                self.missed_in_row = 0;
                self.set(now, Status::OnCall)
            }
            (Event::Missed, Ringing) => {
                self.counters.missed += 1;
                self.missed_in_row += 1;
                if self.auto_pause_after > 0 && self.missed_in_row >= self.auto_pause_after {
                    let reason =
                        format!("auto: {} calls not answered in a row", self.missed_in_row);
                    self.set(now, Status::Paused { reason });
                } else {
                    self.available(now, true)
                }
            }
            (Event::Rejected, Ringing) => {
                self.counters.rejected += 1;
                self.available(now, true)
            }
            (Event::Failed, Ringing) => {
                self.counters.failed += 1;
                self.available(now, true)
            }
            (Event::Withdrawn, Ringing) => self.available(now, false),
            (Event::AnsweredElsewhere, Ringing) => {
                self.counters.offered = self.counters.offered.saturating_sub(1);
                self.available(now, false)
            }
            (Event::CallEnded { wrap_up }, OnCall) => {
                if wrap_up.is_zero() {
                    self.available(now, false)
                } else {
                    self.set(
                        now,
                        Status::WrapUp {
                            until: now + wrap_up,
                        },
                    );
                }
            }
            (_, s) => return Err(AgentError::Unexpected(s)),
        }
        Ok(self.state())
    }

    /// Wrap-up ends at its time; true when it did now.
    pub fn tick(&mut self, now: Instant) -> bool {
        if let Status::WrapUp { until } = self.status
            && until <= now
        {
            self.available(now, false);
            return true;
        }
        false
    }

    /// When the agent comes free by itself (wrap-up ends, or the rest after a missed offer).
    pub fn free_at(&self) -> Option<Instant> {
        match self.status {
            Status::WrapUp { until } => Some(until),
            Status::Available { rest_until } => rest_until,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_pause_unpause_logout() {
        let t = Instant::now();
        let mut a = Agent::new(t, 3);
        assert_eq!(
            a.handle(t, Event::Pause("x".into())),
            Err(AgentError::NotLoggedIn)
        );
        assert_eq!(a.handle(t, Event::Login), Ok(State::Available));
        assert_eq!(a.handle(t, Event::Login), Err(AgentError::AlreadyLoggedIn));
        assert_eq!(a.handle(t, Event::Pause("用餐".into())), Ok(State::Paused));
        assert_eq!(a.pause_reason(), Some("用餐"));
        assert_eq!(
            a.handle(t, Event::Offered),
            Err(AgentError::Unexpected(State::Paused))
        );
        assert_eq!(a.handle(t, Event::Unpause), Ok(State::Available));
        assert_eq!(a.pause_reason(), None);
        assert_eq!(a.handle(t, Event::Unpause), Err(AgentError::NotPaused));
        assert_eq!(a.handle(t, Event::Logout), Ok(State::LoggedOut));
    }

    #[test]
    fn call_cycle_with_wrap_up() {
        let t = Instant::now();
        let mut a = Agent::new(t, 3);
        a.handle(t, Event::Login).unwrap();
        a.handle(t, Event::Offered).unwrap();
        assert_eq!(a.handle(t, Event::Logout), Err(AgentError::Busy));
        a.handle(t, Event::Answered).unwrap();
        assert_eq!(
            a.handle(
                t,
                Event::CallEnded {
                    wrap_up: Duration::from_secs(10)
                }
            ),
            Ok(State::WrapUp)
        );
        assert!(!a.tick(t + Duration::from_secs(9)));
        assert!(a.tick(t + Duration::from_secs(10)));
        assert_eq!(a.state(), State::Available);
        assert_eq!(
            a.counters,
            Counters {
                offered: 1,
                answered: 1,
                missed: 0,
                rejected: 0,
                failed: 0
            }
        );
    }

    #[test]
    fn consecutive_misses_auto_pause_and_answers_reset_the_count() {
        let t = Instant::now();
        let mut a = Agent::new(t, 2);
        a.handle(t, Event::Login).unwrap();
        for ev in [Event::Missed, Event::Answered] {
            a.handle(t, Event::Offered).unwrap();
            a.handle(t, ev).unwrap();
        }
        a.handle(
            t,
            Event::CallEnded {
                wrap_up: Duration::ZERO,
            },
        )
        .unwrap();
        a.handle(t, Event::Offered).unwrap();
        a.handle(t, Event::Rejected).unwrap(); // a rejection is not a ring-no-answer
        a.handle(t, Event::Offered).unwrap();
        a.handle(t, Event::Withdrawn).unwrap(); // nor is a caller hanging up
        a.handle(t, Event::Offered).unwrap();
        assert_eq!(a.handle(t, Event::Missed), Ok(State::Available));
        a.handle(t, Event::Offered).unwrap();
        assert_eq!(a.handle(t, Event::Missed), Ok(State::Paused));
        assert!(a.pause_reason().unwrap().contains("2 calls not answered"));
        assert_eq!(
            a.counters,
            Counters {
                offered: 6,
                answered: 1,
                missed: 3,
                rejected: 1,
                failed: 0
            }
        );
    }
}
