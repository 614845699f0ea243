//! The live feed for the provincial platform: every stored event is published to NATS
//! JetStream, on subject `hotline.<node>.<kind>`, with the header `Nats-Msg-Id: <node>-<id>`
//! (docs/feed.md has the subjects and a JSON schema of each kind).
//!
//! Nothing lost: the publisher reads the store after its own cursor (the last id the stream
//! acknowledged, kept in the store) and moves the cursor only past acknowledged events; after
//! a broker outage, or a restart of the daemon, it publishes again from there. Nothing
//! duplicated: what is published again carries the same message id, and the stream (created
//! if missing: HOTLINE, subjects `hotline.>`, a duplicate window of [`DUPLICATE_WINDOW`])
//! drops a repeat. Like the PostgreSQL shipper it runs on a thread of its own (with a small
//! runtime for the async client), never on call control's.
//!
//! async-nats is pinned (`=0.51.0`) with its `server_2_10`+ features off: it then speaks only
//! what Debian's nats-server 2.9.10 understands, and the tests run against that server.

use super::journal::{BEHIND, Backoff, Entry, Journal, Worker};
use super::store::StoreError;
use crate::stats::Stats;
use async_nats::jetstream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the feed thread: {0}")]
    Thread(std::io::Error),
    #[error("NATS connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("JetStream stream HOTLINE: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
    #[error("JetStream publish: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

/// The stream the feed is published to, and its subjects.
pub const STREAM: &str = "HOTLINE";
pub const SUBJECTS: &str = "hotline.>";
/// How long the stream remembers a message id: a repeat within it is dropped. Events are
/// published again only after an outage, from the last acknowledged one, so minutes suffice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

const CURSOR: &str = "nats";
const BATCH: usize = 256;
const IDLE: Duration = Duration::from_millis(100);

/// The subject of an event: `hotline.<node>.<kind>`.
pub fn subject(e: &Entry) -> String {
    format!("hotline.{}.{}", e.node, e.kind)
}

/// The message id the stream deduplicates on: `<node>-<id>`.
pub fn message_id(e: &Entry) -> String {
    format!("{}-{}", e.node, e.id)
}

/// Starts publishing the store at `store` (already opened by the daemon) to `url`.
pub fn start(url: &str, store: &Path, node: &str, stats: Arc<Stats>) -> Result<Worker, FeedError> {
    let journal = Journal::open(store, node)?;
    let url = url.to_string();
    Worker::spawn("nats-feed", move |stop| {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "cannot start the feed's runtime; feed off");
                return;
            }
        };
        rt.block_on(publish(&url, journal, &stats, &stop));
    })
    .map_err(FeedError::Thread)
}

async fn nap(d: Duration, stop: &AtomicBool) {
    let until = tokio::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50).min(until - tokio::time::Instant::now()))
            .await;
    }
}

async fn connect(url: &str) -> Result<jetstream::Context, FeedError> {
    let client = async_nats::ConnectOptions::new()
        .name("hotline-feed")
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await?;
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(3));
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECTS.into()],
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// Publishes `batch`; the id of the last event acknowledged in order (`None`: not the first),
/// and the error that stopped it, if one did.
async fn send(js: &jetstream::Context, batch: &[Entry]) -> (Option<i64>, Option<FeedError>) {
    let mut acks = Vec::with_capacity(batch.len());
    let mut failed = None;
    for (i, e) in batch.iter().enumerate() {
        if i % 64 == 63 {
            // As the store's writer does: under real-time scheduling, let call control run.
            std::thread::yield_now();
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id(e).as_str());
        let payload = e.json().to_string();
        match js
            .publish_with_headers(subject(e), headers, payload.into())
            .await
        {
            Ok(ack) => acks.push((e.id, ack)),
            Err(err) => {
                failed = Some(err.into());
                break;
            }
        }
    }
    let (mut last, mut repeats) = (None, 0u32);
    let mut failed_ack = None;
    for (id, ack) in acks {
        match ack.await {
            Ok(a) => {
                repeats += u32::from(a.duplicate);
                last = Some(id);
            }
            Err(err) => {
                failed_ack = Some(err.into());
                break;
            }
        }
    }
    if repeats > 0 {
        // Sent before an outage and stored, but not acknowledged to us: the stream knew them.
        info!(
            repeats,
            "events published again were dropped as repeats by the stream"
        );
    }
    (last, failed_ack.or(failed))
}

async fn publish(url: &str, journal: Journal, stats: &Stats, stop: &AtomicBool) {
    let mut cursor = match journal.cursor(CURSOR) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read the feed's cursor; feed off");
            return;
        }
    };
    info!(from = cursor, "publishing events to NATS JetStream");
    let mut backoff = Backoff::new();
    let mut js: Option<jetstream::Context> = None;
    let (mut behind, mut was_down) = (false, false);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let last = journal.last_id().unwrap_or(cursor);
        let lag = (last - cursor).max(0);
        stats.feed_lag.store(lag as u64, Ordering::Relaxed);
        if lag >= BEHIND && !behind {
            warn!(lag, "the NATS feed is falling behind");
            behind = true;
        } else if lag < BEHIND / 10 && behind {
            info!(lag, "the NATS feed caught up");
            behind = false;
        }
        if js.is_none() {
            match connect(url).await {
                Ok(c) => {
                    if was_down {
                        info!(lag, "NATS reconnected; the feed resumes");
                    } else {
                        info!(lag, "NATS connected");
                    }
                    js = Some(c);
                    stats.feed_connected.store(1, Ordering::Relaxed);
                    backoff.reset();
                }
                Err(e) => {
                    if !was_down {
                        warn!(error = %e, lag, "NATS unreachable; events wait in the local store");
                    }
                    was_down = true;
                    if stopping {
                        return;
                    }
                    nap(backoff.next(), stop).await;
                    continue;
                }
            }
        }
        let batch = match journal.after(cursor, BATCH) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the store to publish");
                if stopping {
                    return;
                }
                nap(backoff.next(), stop).await;
                continue;
            }
        };
        if batch.is_empty() {
            if stopping {
                return;
            }
            // Idle: notice a lost server now, not at the next event.
            let lost = js.as_ref().is_some_and(|c| {
                c.client().connection_state() == async_nats::connection::State::Disconnected
            });
            if lost {
                warn!("NATS connection lost; reconnecting");
                js = None;
                was_down = true;
                stats.feed_connected.store(0, Ordering::Relaxed);
            }
            nap(IDLE, stop).await;
            continue;
        }
        let Some(ctx) = js.as_ref() else { continue };
        let (acked, failed) = send(ctx, &batch).await;
        if let Some(id) = acked {
            let n = batch.iter().take_while(|e| e.id <= id).count();
            stats.feed_published.fetch_add(n as u64, Ordering::Relaxed);
            cursor = id;
            if let Err(e) = journal.set_cursor(CURSOR, cursor) {
                // Published anyway; at worst published again, and dropped as a repeat.
                warn!(error = %e, "cannot save the feed's cursor");
            }
        }
        if let Some(e) = failed {
            warn!(error = %e, lag, "NATS publish failed; reconnecting");
            js = None;
            was_down = true;
            stats.feed_connected.store(0, Ordering::Relaxed);
            if stopping {
                return;
            }
            nap(backoff.next(), stop).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_message_ids_and_the_docs_cover_every_kind() {
        let e = Entry {
            node: "node-a".into(),
            id: 42,
            at: "2026-12-15T10:00:00.000+08:00".into(),
            kind: "queue_exit".into(),
            call_id: Some("c1".into()),
            seat: None,
            queue: Some("general".into()),
            detail: r#"{"reason":"abandoned","waited_s":1.5,"short":true,"position":null}"#.into(),
        };
        assert_eq!(subject(&e), "hotline.node-a.queue_exit");
        assert_eq!(message_id(&e), "node-a-42");
        let j = e.json();
        assert_eq!(j["detail"]["reason"], "abandoned");
        assert_eq!(j["queue"], "general");
        assert!(j["seat"].is_null());
        let doc = include_str!("../../docs/feed.md");
        for kind in [
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
        ] {
            assert!(
                doc.contains(&format!("| `{kind}` |")),
                "docs/feed.md lacks {kind}"
            );
            assert!(
                doc.contains(&format!("\"{kind}\"")),
                "the schema's kind enum lacks {kind}"
            );
        }
    }
}
