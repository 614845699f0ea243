//! Repeat callers: call control's side of [`crate::acd::repeat`]. The treatment changes only
//! the call's first prompts and where it goes after them: the reminder is played before the
//! dialplan's flow, and from `queue_at` on the caller goes to the designated queue after the
//! reminder. Every repeat call is a `repeat_caller` record (figures per day).

use super::*;
use crate::ivr::dialplan::{Decision, Next};
use crate::metrics::record::RepeatTreatment;

impl<M: MediaIo> Core<M> {
    /// The decision for a call from `number`, with the repeat-caller treatment applied, and
    /// the record to write once the call exists.
    pub(super) fn repeat_treatment(
        &mut self,
        now: Now,
        number: &str,
        decision: Decision,
    ) -> (Decision, Option<RecordEvent>) {
        let Decision::Run { mut first, next } = decision else {
            return (decision, None);
        };
        let Some((count, treatment)) = self.repeat.on_call(number, now.unix_s() as i64) else {
            return (Decision::Run { first, next }, None);
        };
        let reminder = self.media.engine.prompts().id("repeat/reminder");
        let designated = self
            .env
            .plan
            .queues
            .iter()
            .position(|q| q.name == self.env.cfg.repeat_callers.queue)
            .map(QueueId);
        let next = match treatment {
            RepeatTreatment::None => next,
            RepeatTreatment::Reminded => {
                first.extend(reminder);
                next
            }
            RepeatTreatment::Designated => {
                first.extend(reminder);
                designated.map(Next::Queue).unwrap_or(next)
            }
        };
        info!(count, ?treatment, "repeat caller");
        (
            Decision::Run { first, next },
            Some(RecordEvent::RepeatCaller { count, treatment }),
        )
    }

    /// The window's calls already in the store (`call_start` records) count after a restart.
    pub fn preload_repeat(&mut self, records: &[Record]) {
        for r in records {
            if let RecordEvent::CallStart { caller, .. } = &r.event
                && let Ok(at) = chrono::DateTime::parse_from_rfc3339(&r.at)
            {
                self.repeat.on_call(caller, at.timestamp());
            }
        }
    }
}
