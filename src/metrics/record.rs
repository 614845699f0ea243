//! Typed records: one variant per call or state event. Call control makes them; the store
//! keeps each as its kind and a JSON detail (the SQLite schema is unchanged), and reads them
//! back into the same types, so figures, reports and the queue_log match on variants, never on
//! strings.

use crate::acd::agent::State as AgentState;
use crate::config::TargetKind;
use serde::{Deserialize, Serialize};

/// One call or state event, as call control produces it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Wall-clock time, RFC 3339 (Asia/Shanghai offset).
    pub at: String,
    pub call_id: Option<String>,
    pub seat: Option<String>,
    pub queue: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

/// What happened. Serialised as `{"kind": "<snake_case>", "detail": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Event {
    CallStart {
        #[serde(default)]
        dialled: String,
        #[serde(default)]
        caller: String,
        #[serde(default)]
        source: String,
        #[serde(default)]
        transport: String,
        /// 110's incident reference, for a call 110 handed over (110 非警务类诉求分流).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incident: Option<String>,
    },
    CallRefused {
        dialled: String,
        code: u16,
        reason: String,
        source: String,
    },
    CallAnswered {},
    CallEnd(CallEnd),
    AgentState {
        state: AgentState,
        /// `Login`, `Logout`, `Pause("…")`, `Unpause`.
        action: String,
        by: String,
        #[serde(default)]
        reason: Option<String>,
    },
    QueueEnter {
        #[serde(default)]
        priority: u8,
        #[serde(default)]
        position: Option<usize>,
    },
    QueueExit {
        reason: QueueExit,
        waited_s: f64,
        #[serde(default)]
        short: bool,
        #[serde(default)]
        position: Option<usize>,
    },
    Offer {
        outcome: OfferOutcome,
        ring_s: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_state_after: Option<AgentState>,
        /// An offer of a transfer to an expert group (not of a waiting caller).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        transfer: bool,
    },
    TalkEnd {
        talk_s: f64,
        #[serde(default)]
        wrap_s: f64,
        #[serde(default)]
        ended_by: EndedBy,
    },
    Recording {
        path: String,
        /// The call is confidential (保密): the recording is flagged.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        confidential: bool,
    },
    Survey {
        rating: Option<u8>,
        #[serde(default)]
        label: String,
        /// The case rated, where it is not the call itself (revisit calls rate cases); the
        /// matter of seed 004's per-matter cap.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matter: Option<String>,
        /// The unit rated, where no seat is (a revisit rates the case's handling unit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    Transfer(Transfer),
    /// The caller asked for confidentiality (保密): every output masks its number.
    Confidential {},
    /// The full number of a call was read through the API, by whom.
    NumberRead {
        by: String,
    },
    /// A callback (回拨): requested, an attempt that failed, answered, or failed for good.
    Callback(Callback),
    /// A number calling again within the repeat-caller window, and what it got.
    RepeatCaller {
        /// Its calls in the window, this one included.
        count: u32,
        treatment: RepeatTreatment,
    },
    /// A revisit (回访) case: accepted, one call's outcome, or its end.
    Revisit(Revisit),
    Probe {
        #[serde(flatten)]
        target: TargetLabel,
        round: u64,
        attempt: u32,
        outcome: ProbeOutcome,
        code: Option<u16>,
        ring_s: f64,
    },
    ProbeRound {
        #[serde(flatten)]
        target: TargetLabel,
        round: u64,
        attempts: u32,
        answered: bool,
    },
}

impl Event {
    /// The kind as the store's `kind` column holds it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CallStart { .. } => "call_start",
            Event::CallRefused { .. } => "call_refused",
            Event::CallAnswered {} => "call_answered",
            Event::CallEnd(_) => "call_end",
            Event::AgentState { .. } => "agent_state",
            Event::QueueEnter { .. } => "queue_enter",
            Event::QueueExit { .. } => "queue_exit",
            Event::Offer { .. } => "offer",
            Event::TalkEnd { .. } => "talk_end",
            Event::Recording { .. } => "recording",
            Event::Survey { .. } => "survey",
            Event::Transfer(_) => "transfer",
            Event::Probe { .. } => "probe",
            Event::ProbeRound { .. } => "probe_round",
            Event::Confidential {} => "confidential",
            Event::NumberRead { .. } => "number_read",
            Event::Callback(_) => "callback",
            Event::RepeatCaller { .. } => "repeat_caller",
            Event::Revisit(_) => "revisit",
        }
    }

    /// The detail as the store's `detail` column holds it (JSON).
    pub fn detail(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m.remove("detail").unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }
}

impl Record {
    /// The matter a survey rated, when it names one (else the matter is the call).
    pub fn matter(&self) -> Option<&str> {
        match &self.event {
            Event::Survey { matter, .. } => matter.as_deref(),
            _ => None,
        }
    }

    /// A record from the store's columns; `None` for a kind or detail this version does not
    /// know (written by a newer one).
    pub fn from_parts(
        at: String,
        kind: &str,
        call_id: Option<String>,
        seat: Option<String>,
        queue: Option<String>,
        detail: serde_json::Value,
    ) -> Option<Record> {
        let event =
            serde_json::from_value(serde_json::json!({ "kind": kind, "detail": detail })).ok()?;
        Some(Record {
            at,
            call_id,
            seat,
            queue,
            event,
        })
    }

    /// The day (YYYY-MM-DD, Asia/Shanghai) of the record.
    pub fn day(&self) -> &str {
        self.at.get(..10).unwrap_or("")
    }
}

/// A callback's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub outcome: CallbackOutcome,
    /// The number called back (the store keeps it whole; outputs mask it).
    pub number: String,
    /// Calls to the citizen so far.
    #[serde(default)]
    pub attempts: u32,
    /// Seconds since the caller first queued (its original arrival), when answered or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackOutcome {
    /// The caller asked for it (its place in line is kept; not an abandon).
    Requested,
    /// One call to the citizen was not answered; another follows.
    AttemptFailed,
    /// The citizen answered and was bridged to the seat.
    Answered,
    /// Not answered after the configured attempts.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepeatTreatment {
    /// Counted, nothing different yet.
    None,
    /// The reminder prompt first.
    Reminded,
    /// The reminder, then the designated queue.
    Designated,
}

/// A revisit case's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Revisit {
    Accepted {
        case: String,
        number: String,
        unit: String,
        due: chrono::NaiveDate,
    },
    /// One call: answered (with a rating or none), or not.
    Attempt {
        case: String,
        attempt: u32,
        answered: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating: Option<u8>,
    },
    /// Its end: `rated` or `unreached`.
    Closed {
        case: String,
        unit: String,
        state: String,
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating: Option<u8>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallEnd {
    pub answered: bool,
    pub duration_s: Option<f64>,
    pub waited_s: Option<f64>,
    /// The caller talked with a seat.
    pub bridged: bool,
    #[serde(default)]
    pub digits: String,
    /// What ended it (absent in records of earlier versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<EndCause>,
}

/// What ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// The caller hung up or cancelled.
    Caller,
    /// The hotline ended it (the IVR's end, a seat's hang-up without a survey, …).
    Hotline,
    /// Our 2xx was never acknowledged.
    NoAck,
    /// It reached `sip.max_call_s`.
    MaxDuration,
    /// The daemon stopped (the BYE may have gone unanswered).
    Shutdown,
    /// Found open in the store after a crash: closed at the last moment the daemon was known
    /// to be alive. Not talk time, not an abandon.
    Lost,
}

/// Why a caller left a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueExit {
    Answered,
    Abandoned,
    Timeout,
    NoAgents,
    /// The daemon stopped while the caller waited (not an abandon).
    Shutdown,
    /// The daemon crashed while the caller waited (found open at the next start).
    Lost,
    /// The caller hung up to be called back, keeping its place (not an abandon).
    Callback,
}

/// How an offer to a seat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferOutcome {
    Answered,
    Missed,
    Rejected,
    Failed,
    /// The caller went away (or the offer was taken back) while it rang.
    Withdrawn,
    /// Ring-all: another seat answered first (not counted as an offer to this one).
    AnsweredElsewhere,
}

/// Who ended a seat's conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Seat,
    #[default]
    Caller,
    /// The agent left by handing the caller on.
    Transfer,
    /// The daemon crashed during the conversation (found open at the next start): no talk
    /// time is counted.
    Lost,
}

/// A transfer target as records name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetLabel {
    pub number: String,
    pub name: String,
    pub kind: TargetKind,
    #[serde(default)]
    pub unit: String,
}

/// A transfer's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub outcome: TransferOutcome,
    #[serde(flatten)]
    pub target: TargetLabel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TransferMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferOutcome {
    Started,
    Answered,
    Busy,
    NoAnswer,
    Failed,
    /// The caller (or the agent of a blind transfer) went first.
    Abandoned,
}

impl TransferOutcome {
    /// A failed call's final status as an outcome.
    pub fn of_failure(code: u16) -> TransferOutcome {
        match code {
            486 | 600 | 603 => TransferOutcome::Busy,
            408 | 480 | 487 | 0 => TransferOutcome::NoAnswer,
            _ => TransferOutcome::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    ThreeWay,
    /// REFER: the agent leaves as soon as the target answers.
    Blind,
    /// REFER with Replaces, after the agent consulted the target.
    Attended,
    /// No agent: the dialplan passed a retained-seat line's caller to the line's own seats.
    Line,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    Answered,
    Busy,
    NoAnswer,
    Failed,
    /// No attempt could be placed (no port, no trunk): not the unit's failure.
    NotPlaced,
}

impl ProbeOutcome {
    pub fn of_failure(code: u16) -> ProbeOutcome {
        match TransferOutcome::of_failure(code) {
            TransferOutcome::Busy => ProbeOutcome::Busy,
            TransferOutcome::NoAnswer => ProbeOutcome::NoAnswer,
            _ => ProbeOutcome::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_stores_kind_and_detail_and_read_back_the_same() {
        let e = Event::Offer {
            outcome: OfferOutcome::Missed,
            ring_s: 15.0,
            agent_state_after: Some(AgentState::Paused),
            transfer: false,
        };
        assert_eq!(e.kind(), "offer");
        assert_eq!(
            e.detail(),
            serde_json::json!({ "outcome": "missed", "ring_s": 15.0, "agent_state_after": "paused" })
        );
        let t = Event::Transfer(Transfer {
            outcome: TransferOutcome::Started,
            target: TargetLabel {
                number: "12366".into(),
                name: "税务".into(),
                kind: TargetKind::Subcentre,
                unit: "省税务局".into(),
            },
            mode: Some(TransferMode::ThreeWay),
            by: Some("seat 1001 (DTMF)".into()),
            caller: Some("138".into()),
            answer_s: None,
            code: None,
            ring_s: None,
        });
        assert_eq!(
            t.detail(),
            serde_json::json!({ "outcome": "started", "number": "12366", "name": "税务", "kind": "subcentre", "unit": "省税务局", "mode": "three_way", "by": "seat 1001 (DTMF)", "caller": "138" })
        );
        for e in [e, t, Event::CallAnswered {}] {
            let back = Record::from_parts(
                "2026-12-03T10:00:00.000+08:00".into(),
                e.kind(),
                Some("c".into()),
                None,
                None,
                e.detail(),
            )
            .unwrap();
            assert_eq!(back.event, e);
        }
        assert!(
            Record::from_parts(
                "x".into(),
                "from_the_future",
                None,
                None,
                None,
                serde_json::json!({})
            )
            .is_none()
        );
    }
}
