//! The queue event log in Asterisk's `queue_log` format, so call-centre reporting tools that
//! read Asterisk's can read ours: one line per event,
//! `epoch|callid|queue|agent|EVENT|data1|data2|data3`. Lines are translated from the same
//! records that go to the store (and written by the store's thread). Caller numbers are
//! masked (138****5678); the full number stays in the store.

use super::record::{EndedBy, Event, OfferOutcome, QueueExit, Record};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// What a call's later lines need from its earlier events.
#[derive(Default)]
struct CallInfo {
    caller: String,
    orig_position: u64,
    hold_s: f64,
    ring_s: f64,
    /// The seat that answered.
    agent: String,
}

#[derive(Default)]
pub struct Translator {
    calls: HashMap<String, CallInfo>,
}

/// 13812345678 → 138****5678; numbers shorter than 7 digits (110, 12345) are shown as they are.
pub fn mask_number(n: &str) -> String {
    let chars: Vec<char> = n.chars().collect();
    if chars.len() < 7 {
        return n.to_string();
    }
    let stars = chars.len() - 7;
    chars[..3].iter().collect::<String>()
        + &"*".repeat(stars.max(1))
        + &chars[chars.len() - 4..].iter().collect::<String>()
}

/// A field for the `|`-separated line: no separators or line breaks from the data.
fn field(s: &str) -> String {
    s.chars()
        .map(|c| if c == '|' || c.is_control() { '_' } else { c })
        .collect()
}

impl Translator {
    /// The queue_log lines for one record (often none).
    pub fn lines(&mut self, r: &Record) -> Vec<String> {
        let Some(epoch) = chrono::DateTime::parse_from_rfc3339(&r.at)
            .ok()
            .map(|t| t.timestamp())
        else {
            return vec![];
        };
        let callid = field(r.call_id.as_deref().unwrap_or("NONE"));
        let queue = field(r.queue.as_deref().unwrap_or("NONE"));
        let agent = r
            .seat
            .as_deref()
            .map(|s| format!("SIP/{}", field(s)))
            .unwrap_or_else(|| "NONE".into());
        let line = |queue: &str, agent: &str, event: &str, data: &[String]| {
            let mut l = format!("{epoch}|{callid}|{queue}|{agent}|{event}");
            for d in data {
                l.push('|');
                l.push_str(d);
            }
            l
        };
        let secs = |s: f64| format!("{}", s.round() as i64);
        match &r.event {
            Event::CallStart { caller, .. } => {
                if let Some(id) = &r.call_id {
                    self.calls.insert(
                        id.clone(),
                        CallInfo {
                            caller: mask_number(caller),
                            ..Default::default()
                        },
                    );
                }
                vec![]
            }
            Event::CallEnd(_) => {
                if let Some(id) = &r.call_id {
                    self.calls.remove(id);
                }
                vec![]
            }
            Event::QueueEnter { position, .. } => {
                let info = self.info(r);
                info.orig_position = position.unwrap_or(0) as u64;
                let caller = field(&info.caller);
                vec![line(&queue, "NONE", "ENTERQUEUE", &[String::new(), caller])]
            }
            Event::QueueExit {
                reason,
                waited_s,
                position,
                ..
            } => {
                let waited = *waited_s;
                let position = position.unwrap_or(0) as u64;
                let info = self.info(r);
                info.hold_s = waited;
                let (orig, ring, answered_by) =
                    (info.orig_position, info.ring_s, info.agent.clone());
                let exit = |event: &str| {
                    vec![line(
                        &queue,
                        "NONE",
                        event,
                        &[position.to_string(), orig.to_string(), secs(waited)],
                    )]
                };
                match reason {
                    // The seat of CONNECT comes from the offer record just before.
                    QueueExit::Answered => vec![line(
                        &queue,
                        &answered_by,
                        "CONNECT",
                        &[secs(waited), callid.clone(), secs(ring)],
                    )],
                    QueueExit::Abandoned => exit("ABANDON"),
                    QueueExit::Timeout => exit("EXITWITHTIMEOUT"),
                    QueueExit::NoAgents => exit("EXITEMPTY"),
                    // Asterisk has no event for these; the call record says what happened.
                    QueueExit::Shutdown | QueueExit::Lost | QueueExit::Callback => vec![],
                }
            }
            Event::Offer {
                outcome,
                ring_s,
                agent_state_after,
                ..
            } => {
                let ring_ms = format!("{}", (ring_s * 1000.0).round() as i64);
                let mut out = match outcome {
                    OfferOutcome::Answered => {
                        let info = self.info(r);
                        info.ring_s = *ring_s;
                        info.agent = agent.clone();
                        vec![]
                    }
                    OfferOutcome::Missed | OfferOutcome::Rejected | OfferOutcome::Failed => {
                        vec![line(&queue, &agent, "RINGNOANSWER", &[ring_ms])]
                    }
                    OfferOutcome::Withdrawn => {
                        vec![line(&queue, &agent, "RINGCANCELED", &[ring_ms])]
                    }
                    OfferOutcome::AnsweredElsewhere => vec![],
                };
                if *agent_state_after == Some(crate::acd::agent::State::Paused) {
                    out.push(line(
                        "NONE",
                        &agent,
                        "PAUSEALL",
                        &["auto-pause: calls not answered".into()],
                    ));
                }
                out
            }
            Event::TalkEnd {
                ended_by: EndedBy::Lost,
                ..
            } => vec![],
            Event::TalkEnd {
                talk_s, ended_by, ..
            } => {
                let info = self.info(r);
                let (hold, orig) = (info.hold_s, info.orig_position);
                let event = if *ended_by == EndedBy::Seat {
                    "COMPLETEAGENT"
                } else {
                    "COMPLETECALLER"
                };
                vec![line(
                    &queue,
                    &agent,
                    event,
                    &[secs(hold), secs(*talk_s), orig.to_string()],
                )]
            }
            Event::AgentState {
                action, reason, by, ..
            } => {
                let reason = field(reason.as_deref().unwrap_or(""));
                let by = field(by);
                if action == "Login" {
                    vec![line("NONE", &agent, "AGENTLOGIN", &[by])]
                } else if action == "Logout" {
                    vec![line("NONE", &agent, "AGENTLOGOFF", &[by])]
                } else if action.starts_with("Pause") {
                    vec![line("NONE", &agent, "PAUSEALL", &[reason])]
                } else if action == "Unpause" {
                    vec![line("NONE", &agent, "UNPAUSEALL", &[])]
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }

    fn info(&mut self, r: &Record) -> &mut CallInfo {
        self.calls
            .entry(r.call_id.clone().unwrap_or_default())
            .or_default()
    }
}

/// Appends the lines to the queue_log file.
pub struct QueueLog {
    file: std::io::BufWriter<std::fs::File>,
    translator: Translator,
}

impl QueueLog {
    pub fn open(path: &Path) -> std::io::Result<QueueLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(QueueLog {
            file: std::io::BufWriter::new(file),
            translator: Translator::default(),
        })
    }

    pub fn write(&mut self, r: &Record) -> std::io::Result<()> {
        for l in self.translator.lines(r) {
            writeln!(self.file, "{l}")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        at_s: u32,
        kind: &'static str,
        seat: Option<&str>,
        queue: Option<&str>,
        detail: serde_json::Value,
    ) -> Record {
        Record::from_parts(
            format!("2026-11-23T10:00:{at_s:02}.000+08:00"),
            kind,
            Some("c1".into()),
            seat.map(Into::into),
            queue.map(Into::into),
            detail,
        )
        .expect("a known kind with its detail")
    }

    #[test]
    fn a_call_through_the_queue_in_asterisk_terms() {
        let mut t = Translator::default();
        let q = Some("general");
        let mut out = vec![];
        for r in [
            rec(
                0,
                "call_start",
                None,
                None,
                serde_json::json!({ "caller": "13812345678" }),
            ),
            rec(
                8,
                "queue_enter",
                None,
                q,
                serde_json::json!({ "position": 2 }),
            ),
            rec(
                20,
                "offer",
                Some("1001"),
                q,
                serde_json::json!({ "outcome": "missed", "ring_s": 12.0, "agent_state_after": "available" }),
            ),
            rec(
                24,
                "offer",
                Some("1002"),
                q,
                serde_json::json!({ "outcome": "answered", "ring_s": 3.6 }),
            ),
            rec(
                24,
                "queue_exit",
                None,
                q,
                serde_json::json!({ "reason": "answered", "waited_s": 16.2, "position": 1 }),
            ),
            rec(
                54,
                "talk_end",
                Some("1002"),
                q,
                serde_json::json!({ "talk_s": 30.0, "wrap_s": 5.0, "ended_by": "seat" }),
            ),
            rec(54, "call_end", Some("1002"), None, serde_json::json!({})),
        ] {
            out.extend(t.lines(&r));
        }
        let epoch = 1_795_399_200; // 2026-11-23T10:00:00+08:00
        assert_eq!(
            out,
            [
                format!("{}|c1|general|NONE|ENTERQUEUE||138****5678", epoch + 8),
                format!("{}|c1|general|SIP/1001|RINGNOANSWER|12000", epoch + 20),
                format!("{}|c1|general|SIP/1002|CONNECT|16|c1|4", epoch + 24),
                format!("{}|c1|general|SIP/1002|COMPLETEAGENT|16|30|2", epoch + 54),
            ]
        );
        assert!(t.calls.is_empty(), "nothing kept after the call");
    }

    #[test]
    fn masks_and_fields() {
        assert_eq!(mask_number("13812345678"), "138****5678");
        assert_eq!(mask_number("09318929999"), "093****9999");
        assert_eq!(mask_number("110"), "110");
        assert_eq!(mask_number("1234567"), "123*4567");
        assert_eq!(field("a|b\nc"), "a_b_c");
    }
}
