//! Confidential callers (保密): a caller keys `privacy.confidential_key` in a menu. From then
//! on the seat's phone shows an anonymous caller (RFC 3323 From, no number in any header),
//! transfer targets are shown `anonymous`, the recording and the call's records are flagged
//! (a `confidential` record; `recording` with `confidential: true`), logs and the API's call
//! list show no number, and every read of the full number through the API is logged and
//! stored with who read it (`number_read`).

use super::callback::Presented;
use super::caller::Caller;
use super::*;
use crate::metrics::queue_log::mask_number;

/// The number a seat or a transfer target is shown for this caller.
pub(super) fn shown_number(c: &Caller) -> &str {
    if c.confidential {
        "anonymous"
    } else {
        presentable(&c.number)
    }
}

/// A call as `GET /api/calls` lists it: never the full number.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallView {
    pub call_id: String,
    pub dialled: String,
    /// Masked (138****5678), or `anonymous` for a confidential caller.
    pub number: String,
    pub confidential: bool,
    /// 110's incident reference, for a call 110 handed over.
    pub incident: Option<String>,
}

/// Why the API cannot give a call's full number.
#[derive(Debug, thiserror::Error)]
pub enum NumberReadError {
    #[error("no call {0} in progress")]
    NoSuchCall(String),
}

impl<M: MediaIo> Core<M> {
    /// What the seat is shown for caller `c`.
    pub(super) fn caller_presented(&self, c: &Caller) -> Presented {
        let codec = c
            .remote_media
            .as_ref()
            .map(|m| m.primary())
            .unwrap_or((crate::media::Codec::Pcmu, 0));
        let number = shown_number(c).to_string();
        let mut headers = vec![("X-Hotline-Dialled", c.dialled.clone())];
        if c.confidential {
            headers.push(("X-Hotline-Confidential", "yes".into()));
            headers.push(("Privacy", "id".into()));
        }
        if let Some(i) = &c.incident {
            headers.push(("X-Hotline-110-Incident", i.clone()));
        }
        Presented {
            span: c.span.clone(),
            codec,
            display: number.clone(),
            user: number,
            headers,
        }
    }

    /// The caller keyed the confidentiality key: flagged from now on (once).
    pub(super) fn make_confidential(&mut self, now: Now, k: CallerId) {
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if std::mem::replace(&mut c.confidential, true) {
            return;
        }
        let call_id = c.call_id.clone();
        info!("the caller asked for confidentiality (保密): its number is withheld from now on");
        self.record(
            now,
            RecordEvent::Confidential {},
            Some(&call_id),
            None,
            None,
        );
    }

    /// The calls in progress, numbers masked (`GET /api/calls`).
    pub fn call_views(&self) -> Vec<CallView> {
        let mut v: Vec<CallView> = self
            .legs
            .callers
            .values()
            .map(|c| CallView {
                call_id: c.call_id.clone(),
                dialled: c.dialled.clone(),
                number: if c.confidential {
                    "anonymous".into()
                } else {
                    mask_number(&c.number)
                },
                confidential: c.confidential,
                incident: c.incident.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        v
    }

    /// The full number of call `call_id`, read through the API by `by`: logged and stored
    /// with who read it (for a confidential caller as for any other).
    pub fn read_number(
        &mut self,
        now: Now,
        call_id: &str,
        by: &str,
    ) -> Result<serde_json::Value, NumberReadError> {
        let Some(c) = self.legs.callers.values().find(|c| c.call_id == call_id) else {
            return Err(NumberReadError::NoSuchCall(call_id.to_string()));
        };
        let (number, confidential) = (c.number.clone(), c.confidential);
        tracing::warn!(
            call_id,
            by,
            confidential,
            "full caller number read through the API"
        );
        let event = RecordEvent::NumberRead { by: by.to_string() };
        self.record(now, event, Some(call_id), None, None);
        Ok(
            serde_json::json!({ "call_id": call_id, "number": number, "confidential": confidential }),
        )
    }
}
