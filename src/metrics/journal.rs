//! The store read as a journal: events after a cursor, in id order, for the threads that copy
//! them elsewhere (the PostgreSQL shipper, the NATS feed). Each reader has its own SQLite
//! connection (WAL: reading never holds up the store's writer) and its own cursor, the last id
//! it delivered, kept in the store's `cursors` table so a restart resumes where it stopped.

use super::store::{BUSY_TIMEOUT, StoreError};
use std::path::{Path, PathBuf};

/// One stored event as it leaves the node: its (node, id) key and its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub node: String,
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub call_id: Option<String>,
    pub seat: Option<String>,
    pub queue: Option<String>,
    /// JSON text, as stored.
    pub detail: String,
}

impl Entry {
    /// The feed's payload: the record's JSON (`at`, `call_id`, `seat`, `queue`, `kind`,
    /// `detail`) plus `node` and `id` (docs/feed.md).
    pub fn json(&self) -> serde_json::Value {
        let detail = serde_json::from_str(&self.detail).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "node": self.node,
            "id": self.id,
            "at": self.at,
            "call_id": self.call_id,
            "seat": self.seat,
            "queue": self.queue,
            "kind": self.kind,
            "detail": detail,
        })
    }
}

pub struct Journal {
    conn: rusqlite::Connection,
    path: PathBuf,
    /// Events written before node ids (node NULL) are this node's.
    node: String,
}

impl Journal {
    /// The store at `path`, which [`super::store::Store::open`] has created.
    pub fn open(path: &Path, node: &str) -> Result<Journal, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(BUSY_TIMEOUT).map(|_| c))
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
            node: node.to_string(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The last id delivered by the reader `name` (0: none yet).
    pub fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(last_id), 0) FROM cursors WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records that `name` delivered every event up to `id`.
    pub fn set_cursor(&self, name: &str, id: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO cursors (name, last_id) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET last_id = excluded.last_id",
            )
            .and_then(|mut s| s.execute(rusqlite::params![name, id]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The highest id written so far (0: none).
    pub fn last_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` events with an id above `after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, COALESCE(node, ?1), at, kind, call_id, seat, queue, detail FROM events WHERE id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params![self.node, after, limit as i64], |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    node: r.get(1)?,
                    at: r.get(2)?,
                    kind: r.get(3)?,
                    call_id: r.get(4)?,
                    seat: r.get(5)?,
                    queue: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for (i, row) in rows.enumerate() {
            // Under real-time scheduling (the daemon's threads inherit it) call control gets
            // the core back only when this thread blocks or yields: a long read must yield.
            if i % 64 == 63 {
                std::thread::yield_now();
            }
            out.push(row.map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                source,
            })?);
        }
        Ok(out)
    }
}

/// Waits between attempts to reach a server that is down: 0.5 s, doubling, at most 8 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(8);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub(crate) fn next(&mut self) -> std::time::Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = Backoff::MIN;
    }
}

/// Sleeps `d`, or less once `stop` is set.
pub(crate) fn nap(d: std::time::Duration, stop: &std::sync::atomic::AtomicBool) {
    let until = std::time::Instant::now() + d;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
    }
}

/// Events behind this many, a reader says that it is falling behind (once, until it catches up).
pub(crate) const BEHIND: i64 = 5_000;

/// A thread that copies the journal somewhere. Dropping it asks it to stop: it delivers what
/// the store holds if its server answers, and is waited for at most 5 s (then left to the
/// process's exit).
pub struct Worker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
    name: &'static str,
}

impl Worker {
    pub(crate) fn spawn(
        name: &'static str,
        body: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, done) = std::sync::mpsc::channel::<()>();
        let s = stop.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                body(s);
                drop(tx);
            })?;
        Ok(Worker { stop, done, name })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            self.done.recv_timeout(std::time::Duration::from_secs(5))
        {
            tracing::warn!(
                worker = self.name,
                "still busy at exit; the rest goes at the next start"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::{Event, Record};

    fn record(n: u32) -> Record {
        Record {
            at: format!("2026-12-15T10:00:0{n}.000+08:00"),
            call_id: Some(format!("c{n}")),
            seat: None,
            queue: None,
            event: Event::CallAnswered {},
        }
    }

    #[test]
    fn entries_after_a_cursor_carry_the_node_and_cursors_persist() {
        let dir = std::env::temp_dir().join(format!("journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("s.sqlite");
        {
            let (store, _) =
                crate::metrics::store::Store::open(&path, Path::new(""), "node-x").unwrap();
            for n in 1..=3 {
                store.record(record(n));
            }
        }
        let j = Journal::open(&path, "node-x").unwrap();
        assert_eq!(j.last_id().unwrap(), 3);
        assert_eq!(j.cursor("pg").unwrap(), 0);
        let e = j.after(1, 10).unwrap();
        assert_eq!(e.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(e[0].node, "node-x");
        assert_eq!(e[0].json()["kind"], "call_answered");
        assert_eq!(e[0].json()["id"], 2);
        j.set_cursor("pg", 3).unwrap();
        drop(j);
        assert_eq!(
            Journal::open(&path, "node-x")
                .unwrap()
                .cursor("pg")
                .unwrap(),
            3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_from_before_node_ids_is_migrated_and_its_events_are_this_nodes() {
        let dir = std::env::temp_dir().join(format!("journal-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.sqlite");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, call_id TEXT, seat TEXT, queue TEXT, detail TEXT NOT NULL);
                 INSERT INTO events (at, kind, call_id, detail) VALUES ('2026-12-15T09:00:00.000+08:00', 'call_answered', 'old', '{}');",
            )
            .unwrap();
        }
        {
            let (store, _) =
                crate::metrics::store::Store::open(&path, Path::new(""), "node-b").unwrap();
            store.record(record(1));
        }
        let j = Journal::open(&path, "node-b").unwrap();
        let e = j.after(0, 10).unwrap();
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|e| e.node == "node-b"));
        assert_eq!(e[0].call_id.as_deref(), Some("old"));
        let days = crate::metrics::store::read_day(&path, "2026-12-15").unwrap();
        assert_eq!(days.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
