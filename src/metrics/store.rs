//! The durable store: SQLite (bundled) in WAL mode, written by its own thread so call control
//! never waits on a disk. Events are committed as they come (a batch is only what queued up
//! while the previous commit ran), so killing the daemon loses at most the events of the last
//! few microseconds, never a call that had ended before.

use super::Record;
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
    tx: Option<mpsc::Sender<Record>>,
    thread: Option<JoinHandle<()>>,
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
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE INDEX IF NOT EXISTS events_seat ON events(seat, at);
";

impl Store {
    /// Opens the store at `path`, and the queue_log at `queue_log` unless it is empty.
    pub fn open(path: &Path, queue_log: &Path) -> Result<Store, StoreError> {
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
        conn.execute_batch(SCHEMA).map_err(sql)?;
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
        let (tx, rx) = mpsc::channel::<Record>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter().take(1023));
                    if let Err(e) = write(&mut conn, &batch) {
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
        Ok(Store {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn record(&self, r: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }
}

/// The stored records of one day (`YYYY-MM-DD`, Asia/Shanghai), in the order written.
pub fn read_day(path: &Path, day: &str) -> Result<Vec<Record>, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql)?;
    let mut stmt = conn
        .prepare("SELECT at, kind, call_id, seat, queue, detail FROM events WHERE at >= ?1 AND at < ?2 ORDER BY id")
        .map_err(sql)?;
    // `at` is RFC 3339 with the +08:00 offset, so a day is a string range.
    let rows = stmt
        .query_map(rusqlite::params![day, format!("{day}\u{10ffff}")], |row| {
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
        // Kinds this version doesn't know (written by a newer one) are skipped.
        if let Some(r) = Record::from_parts(at, &kind, call_id, seat, queue, detail) {
            out.push(r);
        }
    }
    Ok(out)
}

fn write(conn: &mut rusqlite::Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let t = conn.transaction()?;
    {
        let mut stmt = t.prepare_cached("INSERT INTO events (at, kind, call_id, seat, queue, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for r in batch {
            stmt.execute(rusqlite::params![
                r.at,
                r.event.kind(),
                r.call_id,
                r.seat,
                r.queue,
                r.event.detail().to_string()
            ])?;
        }
    }
    t.commit()
}

impl Drop for Store {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
