//! Figures: the durable record of every call and state event ([`store`]), from which daily
//! per-seat and per-queue figures can be rebuilt.

pub mod figures;
pub mod queue_log;
pub mod report;
pub mod store;

use serde::Serialize;

/// One call or state event, as call control produces it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Wall-clock time, RFC 3339 (Asia/Shanghai offset).
    pub at: String,
    pub kind: &'static str,
    pub call_id: Option<String>,
    pub seat: Option<String>,
    pub queue: Option<String>,
    /// Everything else about the event.
    pub detail: serde_json::Value,
}

/// Every record kind call control writes.
pub const KINDS: &[&str] = &[
    "call_start",
    "call_refused",
    "call_answered",
    "call_end",
    "agent_state",
    "queue_enter",
    "queue_exit",
    "offer",
    "talk_end",
    "recording",
    "survey",
    "transfer",
    "probe",
    "probe_round",
];
