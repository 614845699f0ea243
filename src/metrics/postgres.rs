//! One record across nodes: a thread of its own copies this node's stored events to a
//! PostgreSQL table that every node ships to, and `hotline report --from-postgres` reads a
//! whole province back from it.
//!
//! The table is keyed by (node, id): a batch is inserted with `ON CONFLICT DO NOTHING`, so a
//! batch sent twice (the connection broke after the commit, before the cursor was saved) is
//! stored once. The cursor (the last id shipped) is kept in the SQLite store, written after
//! PostgreSQL committed: an outage, or a restart of the daemon, resumes from it. Call control
//! never waits on any of this: the shipper reads the store through its own connection (WAL)
//! and only ever blocks itself.
//!
//! The sync `postgres` crate (rust-postgres, the same maintainers as tokio-postgres) is used:
//! the shipper is a plain thread with a loop of connect, read, insert, sleep, and the daemon's
//! own runtime is one thread that must not carry database I/O, so an async client would only
//! add a second runtime to drive it.

use super::Record;
use super::journal::{BEHIND, Backoff, Entry, Journal, Worker, nap};
use super::store::StoreError;
use crate::stats::Stats;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the shipper thread: {0}")]
    Thread(std::io::Error),
}

/// The shared table. `at` is the record's RFC 3339 stamp (Asia/Shanghai), as in SQLite, so a
/// day is its first ten characters.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hotline_events (
    node    TEXT   NOT NULL,
    id      BIGINT NOT NULL,
    at      TEXT   NOT NULL,
    kind    TEXT   NOT NULL,
    call_id TEXT,
    seat    TEXT,
    queue   TEXT,
    detail  JSONB  NOT NULL,
    PRIMARY KEY (node, id)
);
CREATE INDEX IF NOT EXISTS hotline_events_day ON hotline_events (left(at, 10));
";

const INSERT: &str = "
INSERT INTO hotline_events (node, id, at, kind, call_id, seat, queue, detail)
SELECT u.node, u.id, u.at, u.kind, u.call_id, u.seat, u.queue, u.detail::jsonb
FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
    AS u(node, id, at, kind, call_id, seat, queue, detail)
ON CONFLICT (node, id) DO NOTHING";

/// The cursor's name in the store's `cursors` table.
const CURSOR: &str = "postgres";
const BATCH: usize = 500;
/// How often the store is looked at when everything was shipped.
const IDLE: Duration = Duration::from_millis(200);
/// How often an idle connection is checked.
const CHECK_IDLE: Duration = Duration::from_secs(5);

fn connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut cfg: postgres::Config = url.parse()?;
    cfg.connect_timeout(Duration::from_secs(3))
        .keepalives_idle(Duration::from_secs(30))
        .application_name("hotline-shipper");
    let mut client = cfg.connect(postgres::NoTls)?;
    client.batch_execute(SCHEMA)?;
    Ok(client)
}

/// Inserts `batch` in one statement (one transaction).
fn insert(client: &mut postgres::Client, batch: &[Entry]) -> Result<u64, postgres::Error> {
    let col = |f: fn(&Entry) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    let nodes: Vec<&str> = batch.iter().map(|e| e.node.as_str()).collect();
    let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
    let at: Vec<&str> = batch.iter().map(|e| e.at.as_str()).collect();
    let kind: Vec<&str> = batch.iter().map(|e| e.kind.as_str()).collect();
    let detail: Vec<&str> = batch.iter().map(|e| e.detail.as_str()).collect();
    let (call_id, seat, queue) = (
        col(|e| e.call_id.clone()),
        col(|e| e.seat.clone()),
        col(|e| e.queue.clone()),
    );
    client.execute(
        INSERT,
        &[&nodes, &ids, &at, &kind, &call_id, &seat, &queue, &detail],
    )
}

/// Starts shipping the store at `store` (already opened by the daemon) to `url`.
pub fn start(url: &str, store: &Path, node: &str, stats: Arc<Stats>) -> Result<Worker, ShipError> {
    let journal = Journal::open(store, node)?;
    let url = url.to_string();
    Worker::spawn("pg-shipper", move |stop| ship(&url, journal, &stats, &stop))
        .map_err(ShipError::Thread)
}

fn ship(url: &str, journal: Journal, stats: &Stats, stop: &AtomicBool) {
    let mut backoff = Backoff::new();
    let mut client: Option<postgres::Client> = None;
    let mut cursor = match journal.cursor(CURSOR) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read the shipper's cursor; shipping off");
            return;
        }
    };
    let mut behind = false;
    let mut was_down = false;
    let mut idle_checked = Instant::now();
    info!(from = cursor, "shipping events to PostgreSQL");
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let last = journal.last_id().unwrap_or(cursor);
        let lag = (last - cursor).max(0);
        stats.ship_lag.store(lag as u64, Ordering::Relaxed);
        if lag >= BEHIND && !behind {
            warn!(lag, "PostgreSQL shipping is falling behind");
            behind = true;
        } else if lag < BEHIND / 10 && behind {
            info!(lag, "PostgreSQL shipping caught up");
            behind = false;
        }
        if client.is_none() {
            match connect(url) {
                Ok(c) => {
                    if was_down {
                        info!(lag, "PostgreSQL reconnected; shipping resumes");
                    } else {
                        info!(lag, "PostgreSQL connected");
                    }
                    client = Some(c);
                    stats.ship_connected.store(1, Ordering::Relaxed);
                    backoff.reset();
                }
                Err(e) => {
                    if !was_down {
                        warn!(error = %e, lag, "PostgreSQL unreachable; events wait in the local store");
                    }
                    was_down = true;
                    if stopping {
                        return;
                    }
                    nap(backoff.next(), stop);
                    continue;
                }
            }
        }
        let batch = match journal.after(cursor, BATCH) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the store to ship");
                if stopping {
                    return;
                }
                nap(backoff.next(), stop);
                continue;
            }
        };
        let Some(end) = batch.last().map(|e| e.id) else {
            if stopping {
                return;
            }
            // Idle: notice a lost server now, not at the next event.
            if idle_checked.elapsed() >= CHECK_IDLE {
                idle_checked = Instant::now();
                if let Some(Err(e)) = client.as_mut().map(|c| c.is_valid(Duration::from_secs(2))) {
                    warn!(error = %e, "PostgreSQL connection lost; reconnecting");
                    client = None;
                    was_down = true;
                    stats.ship_connected.store(0, Ordering::Relaxed);
                }
            }
            nap(IDLE, stop);
            continue;
        };
        let Some(c) = client.as_mut() else { continue };
        match insert(c, &batch) {
            Ok(_) => {
                was_down = false;
                cursor = end;
                stats
                    .ship_shipped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if let Err(e) = journal.set_cursor(CURSOR, cursor) {
                    // Shipped anyway; at worst sent again after a restart, and stored once.
                    warn!(error = %e, "cannot save the shipper's cursor");
                }
            }
            Err(e) => {
                warn!(error = %e, lag, "PostgreSQL insert failed; reconnecting");
                client = None;
                was_down = true;
                stats.ship_connected.store(0, Ordering::Relaxed);
                if stopping {
                    return;
                }
                nap(backoff.next(), stop);
            }
        }
    }
}

/// The events of every node for `day` (YYYY-MM-DD), each node's in the order it wrote them.
pub fn read_day(url: &str, day: &str) -> Result<Vec<Record>, ShipError> {
    let mut cfg: postgres::Config = url.parse()?;
    cfg.connect_timeout(Duration::from_secs(10))
        .application_name("hotline-report");
    let mut client = cfg.connect(postgres::NoTls)?;
    client.batch_execute(SCHEMA)?;
    let rows = client.query(
        "SELECT at, kind, call_id, seat, queue, detail::text FROM hotline_events WHERE left(at, 10) = $1 ORDER BY node, id",
        &[&day],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let detail: String = row.try_get(5)?;
        let detail = serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null);
        let kind: String = row.try_get(1)?;
        // Kinds this version doesn't know (written by a newer node) are skipped.
        if let Some(r) = Record::from_parts(
            row.try_get(0)?,
            &kind,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            detail,
        ) {
            out.push(r);
        }
    }
    Ok(out)
}
