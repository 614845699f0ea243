//! Revisit calls (回访), sans-IO: the platform calls citizens back after their case is closed
//! and asks them to rate the handling unit (满意 / 基本满意 / 不满意; seeds 000 and 004, which
//! scores units on it). Cases come in through `POST /api/revisits` as a batch that is taken
//! whole or not at all; each is called from its due date, only within the allowed hours
//! (Asia/Shanghai, never at night), up to `revisit.attempts` times `revisit.spacing_s` apart.
//! A case ends `rated` (a key 1–3) or `unreached`. Call control places the calls and plays
//! the survey; this is the book of cases and what is due when.

use crate::config::{Hours, RevisitConfig};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// A case as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    pub case: String,
    pub number: String,
    pub unit: String,
    pub due: NaiveDate,
}

/// Where a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its due date, the allowed hours or its next attempt.
    Pending,
    /// A call is up (ringing or asking the survey).
    Calling,
    Rated,
    Unreached,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub number: String,
    pub unit: String,
    pub due: NaiveDate,
    pub state: State,
    pub attempts: u32,
    pub rating: Option<u8>,
    /// Not called again before this (the spacing after an attempt).
    next_try: Option<Instant>,
}

/// What a finished call did for its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Still pending: another attempt follows.
    Again,
    Rated(u8),
    Unreached,
}

/// Every case, by its id.
#[derive(Debug, Default)]
pub struct Book {
    cases: BTreeMap<String, Case>,
}

/// A case id: 1 to 64 of letters, digits and `-_./`.
fn valid_case_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

impl Book {
    /// Checks a batch against the configured units and the cases already known: every bad
    /// case with its reason, or nothing wrong.
    pub fn check(&self, batch: &[NewCase], units: &BTreeSet<String>) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        if batch.is_empty() {
            problems.push("no cases: the body is an empty array".to_string());
        }
        for (i, c) in batch.iter().enumerate() {
            let who = format!("case {i} ({:?})", c.case);
            if !valid_case_id(&c.case) {
                problems.push(format!(
                    "{who}: the case id must be 1-64 of letters, digits, -_./"
                ));
            } else if self.cases.contains_key(&c.case) || !seen.insert(c.case.as_str()) {
                problems.push(format!("{who}: duplicate case id"));
            }
            if !crate::acd::callback::callable(&c.number) {
                problems.push(format!(
                    "{who}: malformed number {:?} (digits only, 3-20, optional leading +)",
                    c.number
                ));
            }
            if !units.contains(&c.unit) {
                problems.push(format!(
                    "{who}: unknown unit {:?} (not named in the configuration)",
                    c.unit
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Adds a checked case.
    pub fn add(&mut self, c: NewCase) {
        self.cases.insert(
            c.case,
            Case {
                number: c.number,
                unit: c.unit,
                due: c.due,
                state: State::Pending,
                attempts: 0,
                rating: None,
                next_try: None,
            },
        );
    }

    pub fn get(&self, id: &str) -> Option<&Case> {
        self.cases.get(id)
    }

    /// Cases to call now (`wall`: Asia/Shanghai): pending, due today or earlier, past their
    /// spacing, within the allowed hours; at most `room` of them.
    pub fn due(
        &self,
        now: Instant,
        wall: chrono::DateTime<chrono::FixedOffset>,
        hours: &Hours,
        room: usize,
    ) -> Vec<String> {
        if !hours.contains(wall) {
            return vec![];
        }
        let today = wall.date_naive();
        self.cases
            .iter()
            .filter(|(_, c)| {
                c.state == State::Pending && c.due <= today && c.next_try.is_none_or(|t| t <= now)
            })
            .map(|(id, _)| id.clone())
            .take(room)
            .collect()
    }

    /// When to look again: at the next opening of the hours, a retry's time, or in a minute
    /// (a due date may come at midnight); `None` with nothing pending.
    pub fn next_look(
        &self,
        now: Instant,
        wall: chrono::DateTime<chrono::FixedOffset>,
        hours: &Hours,
    ) -> Option<Instant> {
        let pending: Vec<&Case> = self
            .cases
            .values()
            .filter(|c| c.state == State::Pending)
            .collect();
        if pending.is_empty() {
            return None;
        }
        let opens = hours.wait_from(wall);
        if !opens.is_zero() {
            return Some(now + opens);
        }
        let minute = now + Duration::from_secs(60);
        Some(
            pending
                .iter()
                .filter_map(|c| c.next_try)
                .filter(|&t| t > now)
                .min()
                .map_or(minute, |t| t.min(minute)),
        )
    }

    /// A call to the case is placed.
    pub fn calling(&mut self, id: &str) {
        if let Some(c) = self.cases.get_mut(id) {
            c.state = State::Calling;
            c.attempts += 1;
        }
    }

    /// The call is over: `rating` (1–3) if one was given. Without one the case is tried again
    /// after the spacing, or is unreached after its last attempt.
    pub fn call_over(
        &mut self,
        id: &str,
        rating: Option<u8>,
        now: Instant,
        cfg: &RevisitConfig,
    ) -> Closed {
        let Some(c) = self.cases.get_mut(id) else {
            return Closed::Unreached;
        };
        match rating.filter(|r| (1..=3).contains(r)) {
            Some(r) => {
                c.state = State::Rated;
                c.rating = Some(r);
                Closed::Rated(r)
            }
            None if c.attempts >= cfg.attempts => {
                c.state = State::Unreached;
                Closed::Unreached
            }
            None => {
                c.state = State::Pending;
                c.next_try = Some(now + Duration::from_secs(cfg.spacing_s));
                Closed::Again
            }
        }
    }

    /// Rebuilds a case from the store after a restart (its last known state).
    pub fn restore(&mut self, c: NewCase, attempts: u32, state: State, rating: Option<u8>) {
        let id = c.case.clone();
        self.add(c);
        if let Some(x) = self.cases.get_mut(&id) {
            x.attempts = attempts;
            // A call that was up when the daemon stopped is pending again.
            x.state = if state == State::Calling {
                State::Pending
            } else {
                state
            };
            x.rating = rating;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> chrono::DateTime<chrono::FixedOffset> {
        crate::time::shanghai()
            .with_ymd_and_hms(2026, 12, 15, h, m, 0)
            .unwrap()
    }

    fn case(id: &str, number: &str, unit: &str) -> NewCase {
        NewCase {
            case: id.into(),
            number: number.into(),
            unit: unit.into(),
            due: NaiveDate::from_ymd_opt(2026, 12, 15).unwrap(),
        }
    }

    #[test]
    fn a_bad_batch_names_every_bad_case() {
        let units: BTreeSet<String> = ["省司法厅".to_string()].into();
        let mut book = Book::default();
        book.add(case("A1", "13800138000", "省司法厅"));
        let bad = book
            .check(
                &[
                    case("A1", "13800138000", "省司法厅"),
                    case("A2", "12x", "省司法厅"),
                    case("A3", "13800138000", "无此单位"),
                    case("A4", "13800138000", "省司法厅"),
                    case("A4", "13800138000", "省司法厅"),
                ],
                &units,
            )
            .unwrap_err();
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[0].contains("duplicate") && bad[1].contains("malformed"));
        assert!(bad[2].contains("unknown unit") && bad[3].contains("duplicate"));
        assert!(
            book.check(&[case("B1", "13800138000", "省司法厅")], &units)
                .is_ok()
        );
    }

    #[test]
    fn calls_only_within_hours_and_retries_then_gives_up() {
        let cfg = RevisitConfig {
            attempts: 2,
            spacing_s: 600,
            ..RevisitConfig::default()
        };
        let t0 = Instant::now();
        let mut book = Book::default();
        book.add(case("A1", "13800138000", "u"));
        // 08:59: nothing before 09:00, and a look at 09:00.
        assert!(book.due(t0, at(8, 59), &cfg.hours, 4).is_empty());
        assert_eq!(
            book.next_look(t0, at(8, 59), &cfg.hours),
            Some(t0 + Duration::from_secs(60))
        );
        assert!(book.due(t0, at(20, 0), &cfg.hours, 4).is_empty());
        assert_eq!(book.due(t0, at(9, 0), &cfg.hours, 4), ["A1"]);
        book.calling("A1");
        assert_eq!(book.call_over("A1", None, t0, &cfg), Closed::Again);
        assert!(book.due(t0, at(9, 1), &cfg.hours, 4).is_empty(), "spacing");
        let later = t0 + Duration::from_secs(600);
        assert_eq!(book.due(later, at(9, 10), &cfg.hours, 4), ["A1"]);
        book.calling("A1");
        assert_eq!(book.call_over("A1", None, later, &cfg), Closed::Unreached);
        assert_eq!(book.get("A1").map(|c| c.state), Some(State::Unreached));
    }
}
