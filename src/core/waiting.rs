//! Callers waiting for a seat: entering and leaving a queue (with its records), what they are
//! told while they wait, the "nobody logged in" overflow, and carrying out the ACD's plan of
//! offers.

use super::caller::Service;
use super::*;
use crate::acd::Waiting;
use crate::ivr::engine::Input;
use crate::metrics::record::QueueExit;

/// Average handle time assumed for the expected-wait announcement until the queue has one.
const DEFAULT_AHT_S: f64 = 180.0;

impl<M: MediaIo> Core<M> {
    /// The caller waits in queue `q` from now on.
    pub(super) fn enqueue(&mut self, now: Now, k: CallerId, q: QueueId, priority: u8) {
        // A configured caller number (110's hand-over line), or a call 110 handed over with
        // its incident reference, is queued with priority.
        let bonus = self
            .legs
            .callers
            .get(&k)
            .map(|c| {
                let by_number = self.env.cfg.acd.priority_callers.get(&c.number).copied();
                let by_incident = c
                    .incident
                    .is_some()
                    .then_some(self.env.cfg.diversion.priority);
                by_number.max(by_incident).unwrap_or(0)
            })
            .unwrap_or(0);
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if c.queue() == Some(q) {
            return;
        }
        c.service = Service::Queued {
            queue: q,
            entered: now.mono,
            announced: None,
        };
        c.last_queue = Some(q);
        let since = *c.queued_at.get_or_insert(now.mono);
        let priority = priority.max(bonus);
        let call_id = c.call_id.clone();
        self.acd.enqueue(k.0, q, priority, since);
        let bound = self.max_overtaken(q);
        let position = self.acd.position(k.0, q, now.mono, bound);
        self.record(
            now,
            RecordEvent::QueueEnter { priority, position },
            Some(&call_id),
            None,
            Some(q),
        );
        self.dispatch(now);
        // Checked from the timer table, not here: this runs inside the IVR's own actions, and
        // sending the caller on now would let the rest of those actions (the hold announcement)
        // play over wherever it was sent.
        self.timers.set(Timer::NoAgents(q.0), Some(now.mono));
    }

    fn max_overtaken(&self, q: QueueId) -> Duration {
        self.env
            .plan
            .queues
            .get(q.0)
            .map(|x| x.max_overtaken)
            .unwrap_or_default()
    }

    /// The caller leaves its queue (`reason`; a caller hung up because the daemon stops is
    /// `Shutdown`, not an abandon).
    pub(super) fn dequeue(&mut self, now: Now, k: CallerId, reason: QueueExit) {
        let reason = if reason == QueueExit::Abandoned && self.shutting_down {
            QueueExit::Shutdown
        } else {
            reason
        };
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        let Service::Queued {
            queue: q, entered, ..
        } = c.service
        else {
            return;
        };
        c.service = Service::Ivr;
        let waited = now.since(entered);
        let call_id = c.call_id.clone();
        let position = self.acd.position(k.0, q, now.mono, self.max_overtaken(q));
        self.acd.dequeue(k.0, q);
        let short = reason == QueueExit::Abandoned
            && self
                .env
                .plan
                .queues
                .get(q.0)
                .is_some_and(|queue| waited < queue.short_abandon);
        let event = RecordEvent::QueueExit {
            reason,
            waited_s: waited.as_secs_f64(),
            short,
            position,
        };
        self.record(now, event, Some(&call_id), None, Some(q));
    }

    /// Callers of queue `q` are sent on when no member is logged in and the queue says so.
    pub(super) fn check_no_agents(&mut self, now: Now, q: QueueId) {
        if self
            .env
            .plan
            .queues
            .get(q.0)
            .is_none_or(|queue| queue.when_no_agents.is_none())
            || self.acd.logged_in(q)
        {
            return;
        }
        let callers: Vec<u64> = self.acd.waiting(q).iter().map(|e| e.key).collect();
        for k in callers {
            let k = CallerId(k);
            if let Some(c) = self.legs.callers.get(&k) {
                let _g = c.span.clone().entered();
                info!(queue = %self.env.plan.queues[q.0].name, "no seat of the queue is logged in; the caller is sent on");
            }
            self.ivr_input(now, k, Input::NoAgents);
        }
    }

    /// Plays the queue's hold prompt with the caller's position and expected wait, then hold
    /// music. Neither figure ever goes up between announcements (a priority caller may
    /// overtake, but the caller is not told it moved back).
    pub(super) fn announce(&mut self, now: Now, k: CallerId, q: QueueId) {
        let Some(queue) = self.env.plan.queues.get(q.0) else {
            return;
        };
        let mut prompts = vec![queue.hold_prompt];
        if let Some(c) = self.legs.callers.get_mut(&k)
            && std::mem::take(&mut c.lost_seat)
            && let Some(p) = self.env.plan.seat_lost
        {
            prompts = vec![p];
        }
        let position = self.acd.position(k.0, q, now.mono, queue.max_overtaken);
        let staffed = self.acd.at_work(q);
        let aht = self
            .records
            .figures
            .queues
            .get(&queue.name)
            .map(|f| f.aht_s)
            .filter(|&a| a > 0.0)
            .unwrap_or(DEFAULT_AHT_S);
        let (announce_position, announce_wait, hold_music) = (
            queue.announce_position,
            queue.announce_wait,
            queue.hold_music,
        );
        // The callback key is offered only where a callback can be booked.
        let callback_offer = queue
            .callback_prompt
            .filter(|_| queue.callback_key.is_some() && !self.env.cfg.callback.trunk.is_empty());
        let Some(c) = self.legs.callers.get_mut(&k) else {
            return;
        };
        if let (Some(position), Service::Queued { announced, .. }) = (position, &mut c.service) {
            // Expected wait: the callers ahead (and this one) served by the seats at work,
            // each taking the queue's average handle time.
            let minutes = ((position as f64 * aht) / (staffed.max(1) as f64) / 60.0)
                .ceil()
                .max(1.0) as u64;
            let (position, minutes) = match *announced {
                Some((p, m)) => (position.min(p), minutes.min(m)),
                None => (position, minutes),
            };
            *announced = Some((position, minutes));
            if announce_position {
                prompts.extend(self.env.queue_prompts.position(position));
            }
            if announce_wait && staffed > 0 {
                prompts.extend(self.env.queue_prompts.wait(minutes));
            }
        }
        prompts.extend(callback_offer);
        prompts.push(hold_music);
        debug!(?position, "queue announcement");
        self.media.engine.play(c.stream, &prompts, true);
    }

    /// Offers what waits to free seats, as the ACD plans it.
    pub(super) fn dispatch(&mut self, now: Now) {
        let registrar = &self.registrar;
        let callers = &self.legs.callers;
        let callbacks = &self.callbacks;
        let proposals = self.acd.plan(
            now.mono,
            &self.env.plan,
            |seat| registrar.contacts(seat, now.mono).any(|b| b.reachable),
            |k| {
                callers
                    .get(&CallerId(k))
                    .and_then(|c| c.entered())
                    .or_else(|| callbacks.get(&k).map(|r| r.since))
            },
        );
        for p in proposals {
            for seat in p.seats {
                if !self.offer(now, p.what, seat, p.queue) {
                    return; // no port or no contact now; the next dispatch tries again
                }
            }
        }
    }

    /// Every seat ringing for `what` stops: it no longer waits (the caller left the queue or
    /// hung up; the transfer is over).
    pub(super) fn withdraw_offers(&mut self, now: Now, what: Waiting) {
        for l in self.acd.withdraw(what) {
            self.withdraw_offer(now, SeatLegId(l), crate::acd::agent::Event::Withdrawn);
        }
    }
}
