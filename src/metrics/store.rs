//! The durable store: SQLite (bundled) in WAL mode, written by its own thread so call control
//! never waits on a disk. Events are committed as they come (a batch is only what queued up
//! while the previous commit ran), so killing the daemon loses at most the events of the last
//! few microseconds, never a call that had ended before.
//!
//! No call is left open in the record: beside the events the store keeps, in the same
//! transactions, which calls are open (`open_calls`: waiting in which queue, talking with
//! which seat) and when the daemon was last alive (a heartbeat every second). At the next
//! start, a call still open was cut by a crash: it is closed as lost at the last moment the
//! daemon was known to be alive ([`Store::open`] returns how many).
//!
//! Every event carries the node that wrote it (`node`, config `node.id`) beside its id, so
//! (node, id) names it across nodes: the PostgreSQL shipper and the NATS feed key on it, and
//! keep their cursors (the last id each has delivered) in this store's `cursors` table. Stores
//! written before node ids have no `node` column: it is added at open, and their earlier
//! events (node NULL) are this store's node's.

use super::Record;
use super::record::{CallEnd, EndCause, EndedBy, Event, OfferOutcome, QueueExit};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where call control sends records; dropping it flushes and closes the store.
pub struct Store {
    tx: Option<mpsc::Sender<Message>>,
    thread: Option<JoinHandle<()>>,
}

enum Message {
    Record(Record),
    /// The daemon is alive at this time (RFC 3339, as records are stamped).
    Alive(String),
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    call_id TEXT,
    seat    TEXT,
    queue   TEXT,
    detail  TEXT NOT NULL,
    node    TEXT
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_seat ON events(seat, at);
CREATE TABLE IF NOT EXISTS open_calls (
    call_id    TEXT PRIMARY KEY,
    started    TEXT NOT NULL,
    answered   INTEGER NOT NULL DEFAULT 0,
    queue      TEXT,
    entered    TEXT,
    seat       TEXT,
    talk_queue TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
";

/// How long a writer waits for another connection's write (a cursor update of the shipper or
/// the feed: one row, microseconds) before it gives up.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Brings a store of an earlier version up to this one (after [`SCHEMA`], which creates what
/// is missing): `events.node`.
fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_node = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'node'")?
        .exists([])?;
    if !has_node {
        conn.execute_batch("ALTER TABLE events ADD COLUMN node TEXT")?;
        tracing::info!("store migrated: events now carry their node");
    }
    Ok(())
}

impl Store {
    /// Opens the store at `path` for node `node`, and the queue_log at `queue_log` unless it
    /// is empty. Calls a crash left open are closed first, as lost: the second value is how
    /// many.
    pub fn open(path: &Path, queue_log: &Path, node: &str) -> Result<(Store, usize), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = rusqlite::Connection::open(path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        migrate(&conn).map_err(sql)?;
        let node = node.to_string();
        let lost = reconcile(&mut conn, &node).map_err(sql)?;
        let mut qlog = if queue_log.as_os_str().is_empty() {
            None
        } else {
            Some(
                super::queue_log::QueueLog::open(queue_log).map_err(|source| StoreError::Io {
                    path: queue_log.to_path_buf(),
                    source,
                })?,
            )
        };
        let (tx, rx) = mpsc::channel::<Message>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut alive = None;
                    let mut batch = Vec::new();
                    for m in std::iter::once(first).chain(rx.try_iter().take(1023)) {
                        match m {
                            Message::Record(r) => batch.push(r),
                            Message::Alive(at) => alive = Some(at),
                        }
                    }
                    if let Err(e) = write(&mut conn, &node, &batch, alive.as_deref()) {
                        tracing::error!(store = %shown, error = %e, lost = batch.len(), "cannot write call records");
                    }
                    if let Some(q) = qlog.as_mut() {
                        let written = batch.iter().try_for_each(|r| q.write(r)).and_then(|_| q.flush());
                        if let Err(e) = written {
                            tracing::error!(error = %e, "cannot write the queue_log");
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        Ok((
            Store {
                tx: Some(tx),
                thread: Some(thread),
            },
            lost,
        ))
    }

    pub fn record(&self, r: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Record(r));
        }
    }

    /// The daemon is alive at `at` (a record stamp): a crash after it closes open calls at
    /// this time.
    pub fn alive(&self, at: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Alive(at));
        }
    }
}

/// Closes the calls a crash left open: each is written ended as lost (its wait and its
/// conversation too) at the last moment the daemon was known to be alive. How many.
fn reconcile(conn: &mut rusqlite::Connection, node: &str) -> rusqlite::Result<usize> {
    let alive: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'alive_at'", [], |r| {
            r.get(0)
        })
        .ok();
    let last_event: Option<String> = conn
        .query_row("SELECT MAX(at) FROM events", [], |r| r.get(0))
        .ok()
        .flatten();
    let at = match (alive, last_event) {
        (Some(a), Some(e)) => a.max(e),
        (a, e) => a.or(e).unwrap_or_default(),
    };
    type Open = (
        String,
        bool,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let open: Vec<Open> = {
        let mut stmt = conn.prepare(
            "SELECT call_id, answered, queue, entered, seat, talk_queue FROM open_calls ORDER BY started",
        )?;
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? != 0,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    if open.is_empty() {
        return Ok(0);
    }
    let since = |t: &Option<String>| {
        let a = chrono::DateTime::parse_from_rfc3339(&at).ok()?;
        let b = chrono::DateTime::parse_from_rfc3339(t.as_deref()?).ok()?;
        Some((a - b).num_milliseconds().max(0) as f64 / 1000.0)
    };
    let mut records = Vec::new();
    for (call_id, answered, queue, entered, seat, talk_queue) in &open {
        let rec = |event, seat: Option<String>, queue: Option<String>| Record {
            at: at.clone(),
            call_id: Some(call_id.clone()),
            seat,
            queue,
            event,
        };
        if queue.is_some() {
            let event = Event::QueueExit {
                reason: QueueExit::Lost,
                waited_s: since(entered).unwrap_or(0.0),
                short: false,
                position: None,
            };
            records.push(rec(event, None, queue.clone()));
        }
        if seat.is_some() {
            let event = Event::TalkEnd {
                talk_s: 0.0,
                wrap_s: 0.0,
                ended_by: EndedBy::Lost,
            };
            records.push(rec(event, seat.clone(), talk_queue.clone()));
        }
        let event = Event::CallEnd(CallEnd {
            answered: *answered,
            cause: Some(EndCause::Lost),
            ..CallEnd::default()
        });
        records.push(rec(event, None, None));
    }
    tracing::warn!(calls = open.len(), at = %at, "calls left open by a crash closed as lost");
    write(conn, node, &records, None)?;
    Ok(open.len())
}

/// Every record of one kind, whatever its day, oldest first (revisit cases at start-up). A
/// store that does not exist yet has none.
pub fn read_kind(path: &Path, kind: &str) -> Result<Vec<Record>, StoreError> {
    read_kind_since(path, kind, "")
}

/// The records of one kind stamped `since` (an RFC 3339 stamp with the +08:00 offset, as
/// records are) or later, oldest first (the repeat-caller window at start-up).
pub fn read_kind_since(path: &Path, kind: &str, since: &str) -> Result<Vec<Record>, StoreError> {
    if !path.exists() {
        return Ok(vec![]);
    }
    select(path, "kind = ?1 AND at >= ?2", [kind, since])
}

/// The stored records of one day (`YYYY-MM-DD`, Asia/Shanghai), in the order written.
pub fn read_day(path: &Path, day: &str) -> Result<Vec<Record>, StoreError> {
    // `at` is RFC 3339 with the +08:00 offset, so a day is a string range.
    let end = format!("{day}\u{10ffff}");
    select(path, "at >= ?1 AND at < ?2", [day, end.as_str()])
}

/// The records `filter` (an SQL condition on `events` over `params`) selects, in the order
/// written. Kinds this version doesn't know (written by a newer one) are skipped.
fn select(
    path: &Path,
    filter: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Record>, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql)?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT at, kind, call_id, seat, queue, detail FROM events WHERE {filter} ORDER BY id"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (at, kind, call_id, seat, queue, detail) = row.map_err(sql)?;
        let detail = serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null);
        if let Some(r) = Record::from_parts(at, &kind, call_id, seat, queue, detail) {
            out.push(r);
        }
    }
    Ok(out)
}

fn write(
    conn: &mut rusqlite::Connection,
    node: &str,
    batch: &[Record],
    alive: Option<&str>,
) -> rusqlite::Result<()> {
    let t = conn.transaction()?;
    {
        let mut stmt = t.prepare_cached("INSERT INTO events (at, kind, call_id, seat, queue, detail, node) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for (i, r) in batch.iter().enumerate() {
            // Under real-time scheduling the call-control thread gets the core back only
            // when this one yields: a long batch must not hold it.
            if i % 64 == 63 {
                std::thread::yield_now();
            }
            stmt.execute(rusqlite::params![
                r.at,
                r.event.kind(),
                r.call_id,
                r.seat,
                r.queue,
                r.event.detail().to_string(),
                node
            ])?;
            track_open(&t, r)?;
        }
        let last = batch.last().map(|r| r.at.as_str());
        if let Some(at) = alive.into_iter().chain(last).max() {
            t.prepare_cached("INSERT INTO meta (key, value) VALUES ('alive_at', ?1) ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)")?
                .execute([at])?;
        }
    }
    t.commit()
}

/// Keeps `open_calls` in step with the record: which calls are open, in which queue, with
/// which seat.
fn track_open(t: &rusqlite::Transaction, r: &Record) -> rusqlite::Result<()> {
    let Some(call_id) = &r.call_id else {
        return Ok(());
    };
    let (sql, params): (&str, Vec<Option<&str>>) = match &r.event {
        Event::CallStart { .. } => (
            "INSERT OR REPLACE INTO open_calls (call_id, started) VALUES (?1, ?2)",
            vec![Some(call_id), Some(&r.at)],
        ),
        Event::CallAnswered {} => (
            "UPDATE open_calls SET answered = 1 WHERE call_id = ?1",
            vec![Some(call_id)],
        ),
        Event::QueueEnter { .. } => (
            "UPDATE open_calls SET queue = ?2, entered = ?3 WHERE call_id = ?1",
            vec![Some(call_id), r.queue.as_deref(), Some(&r.at)],
        ),
        Event::QueueExit { .. } => (
            "UPDATE open_calls SET queue = NULL, entered = NULL WHERE call_id = ?1",
            vec![Some(call_id)],
        ),
        Event::Offer {
            outcome: OfferOutcome::Answered,
            ..
        } => (
            "UPDATE open_calls SET seat = ?2, talk_queue = ?3 WHERE call_id = ?1",
            vec![Some(call_id), r.seat.as_deref(), r.queue.as_deref()],
        ),
        Event::TalkEnd { .. } => (
            "UPDATE open_calls SET seat = NULL, talk_queue = NULL WHERE call_id = ?1 AND seat IS ?2",
            vec![Some(call_id), r.seat.as_deref()],
        ),
        Event::CallEnd(_) => (
            "DELETE FROM open_calls WHERE call_id = ?1",
            vec![Some(call_id)],
        ),
        _ => return Ok(()),
    };
    t.prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(params))?;
    Ok(())
}

impl Drop for Store {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
