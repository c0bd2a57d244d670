//! The default store: one SQLite file in WAL mode.
//!
//! All writes go through one thread that owns the write connection. It takes every command
//! waiting in its queue, writes them in one transaction and commits once (group commit: one
//! fsync for many concurrent requests), and only then acknowledges each of them. Reads use
//! their own connections on tokio's blocking pool, so the async runtime never waits on disk.
//!
//! Records are kept in chunks (see [`super::codec`]): one row per machine per commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, Newest, StoredRecord, machine_id};
use super::writer::{self, Command};
use super::{Ack, DataQuery, Recovery, Store, StoreError, ValueSeries};
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::status::{JobStatus, StatusChange};
use crate::timestamp::Timestamp;

/// The schema version this build writes. Each entry of [`MIGRATIONS`] moves a file one
/// version up; a file with a higher version was written by a newer millwatch and is refused.
pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1: chunks of records and the status history.
    "CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL,
        ts_min INTEGER NOT NULL,
        ts_max INTEGER NOT NULL,
        seq_min INTEGER NOT NULL,
        seq_max INTEGER NOT NULL,
        n INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX chunks_ts ON chunks (ts_max);
    -- One index per machine, not two: each commit inserts one entry per machine into every
    -- such index, at a different leaf for each machine, so every index costs whole pages of
    -- WAL per commit. It covers the time bounds, so range queries never touch the rows.
    CREATE INDEX chunks_machine ON chunks (machine_id, seq_max, ts_min, ts_max);
    CREATE TABLE status_history (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL,
        status TEXT NOT NULL,
        previous TEXT NOT NULL,
        since INTEGER NOT NULL
    );
    CREATE INDEX status_history_machine ON status_history (machine_id, id);",
];

/// The page size of new files.
const PAGE_SIZE: i64 = 1024;

/// How far an acknowledgement may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// Every commit is fsync'd: acknowledged data survives a power cut.
    #[default]
    Full,
    /// Commits reach the OS but are not fsync'd: survives `kill -9`, not a power cut.
    Process,
}

/// Rows deleted per retention step, small so that ingestion never waits long.
const RETENTION_STEP: i64 = 500;

/// A SQLite file with a group-commit writer thread.
pub struct SqliteStore {
    path: PathBuf,
    commands: mpsc::UnboundedSender<Command>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn open_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(failed)?;
    // Small pages: a commit touches one index leaf per machine, and the WAL takes whole pages,
    // so the page size multiplies what every commit writes. (Only a new file takes it.)
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(failed)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(failed)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(failed)?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], refusing files from a newer millwatch.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(failed)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Failed(format!(
            "{} has schema version {version}, written by a newer millwatch; this one knows up to \
             {SCHEMA_VERSION}. Upgrade millwatch or use another file.",
            path.display()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = i as i64 + 1;
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", to).map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(file = %path.display(), version = to, "schema migrated");
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let mut conn = open_connection(path, durability)?;
        migrate(&mut conn, path)?;
        let next_seq: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(seq_max), 0) + 1 FROM chunks",
                [],
                |r| r.get(0),
            )
            .map_err(failed)?;
        // The writer only appends to the WAL; copying the WAL into the database file (the
        // checkpoint) happens on a thread of its own, so that it runs on the other core
        // instead of stalling commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(failed)?;
        let checkpointer = open_connection(path, durability)?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &stop_rx))
            .map_err(failed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let file = path.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    next_seq: next_seq as u64,
                    file,
                    _stop_checkpoints: stop_tx,
                }
                .run(rx)
            })
            .map_err(failed)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            commands: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn send(&self, cmd: Command) -> Result<(), StoreError> {
        self.commands
            .send(cmd)
            .map_err(|_| StoreError::Failed("the SQLite writer has stopped".into()))
    }

    /// Runs `f` with a read connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path, Durability::Full)?,
            };
            let out = f(&conn);
            readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            out
        })
        .await
        .map_err(failed)?
    }
}

/// Owns the write connection.
struct Writer {
    conn: Connection,
    next_seq: u64,
    file: PathBuf,
    /// Dropped with the writer, which ends the checkpoint thread.
    _stop_checkpoints: std::sync::mpsc::Sender<()>,
}

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL until the writer is gone. PASSIVE never blocks the writer or readers;
/// what it cannot copy now it copies next time.
fn checkpoint_loop(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "SQLite checkpoint failed; will retry");
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let group = writer::gather(first, || rx.try_recv().ok());
            let seq_before = self.next_seq;
            let result = self.write(&group);
            if result.is_err() {
                self.next_seq = seq_before;
            }
            if writer::answer(group, &result) {
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
                break;
            }
        }
        tracing::debug!(file = %self.file.display(), "SQLite writer stopped");
    }

    fn write(&mut self, group: &[Command]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().map_err(failed)?;
        let mut deleted = 0;
        {
            let per_machine = writer::per_machine(group, &mut self.next_seq);
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO chunks (machine_id, ts_min, ts_max, seq_min, seq_max, n, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(failed)?;
            for (machine, rows) in &per_machine {
                let (ts_min, ts_max, seq_min, seq_max) = writer::bounds(rows);
                let data = codec::encode(rows.iter().copied());
                insert
                    .execute(params![
                        machine,
                        ts_min.as_nanos(),
                        ts_max.as_nanos(),
                        seq_min as i64,
                        seq_max as i64,
                        rows.len() as i64,
                        data
                    ])
                    .map_err(failed)?;
            }
            let mut status = tx
                .prepare_cached(
                    "INSERT INTO status_history (machine_id, status, previous, since) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(failed)?;
            for cmd in group {
                match cmd {
                    Command::Status(c, _) => {
                        status
                            .execute(params![
                                c.machine_id.as_str(),
                                c.status.as_str(),
                                c.previous.as_str(),
                                c.since.as_nanos()
                            ])
                            .map_err(failed)?;
                    }
                    Command::Retain(cutoff, _) => {
                        deleted += tx
                            .execute(
                                "DELETE FROM chunks WHERE id IN
                                 (SELECT id FROM chunks WHERE ts_max < ?1 LIMIT ?2)",
                                params![cutoff.as_nanos(), RETENTION_STEP],
                            )
                            .map_err(failed)?;
                    }
                    Command::Append(..) | Command::Close(_) => {}
                }
            }
        }
        tx.commit().map_err(failed)?;
        Ok(deleted)
    }
}

fn decode_row(m: &str, data: &[u8]) -> Result<Vec<StoredRecord>, StoreError> {
    codec::decode(&machine_id(m)?, data).map_err(failed)
}

fn status_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_change((m, s, p, t): (String, String, String, i64)) -> Result<StatusChange, StoreError> {
    Ok(StatusChange {
        machine_id: machine_id(&m)?,
        status: JobStatus::parse(&s).map_err(failed)?,
        previous: JobStatus::parse(&p).map_err(failed)?,
        since: Timestamp::from_nanos(t),
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> Ack {
        writer::append(|c| self.send(c), records)
    }

    fn append_status(&self, change: StatusChange) -> Ack {
        writer::append_status(|c| self.send(c), change)
    }

    async fn query(&self, q: DataQuery) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        self.read(move |conn| {
            let since = q.since.unwrap_or(Timestamp::MIN);
            let until = q.until.unwrap_or(Timestamp::MAX);
            if q.limit == 0 || since > until {
                return Ok(Vec::new());
            }
            let (sql, machine) = match &q.machine_id {
                Some(m) => (
                    "SELECT machine_id, ts_max, data FROM chunks
                     WHERE machine_id = ?3 AND ts_max >= ?1 AND ts_min <= ?2 ORDER BY ts_max DESC",
                    m.as_str().to_owned(),
                ),
                None => (
                    "SELECT machine_id, ts_max, data FROM chunks
                     WHERE ts_max >= ?1 AND ts_min <= ?2 AND ?3 = ?3 ORDER BY ts_max DESC",
                    String::new(),
                ),
            };
            let mut stmt = conn.prepare_cached(sql).map_err(failed)?;
            let mut rows = stmt
                .query(params![since.as_nanos(), until.as_nanos(), machine])
                .map_err(failed)?;
            let mut newest = Newest::new(q.limit, since, until);
            while let Some(row) = rows.next().map_err(failed)? {
                if !newest.wants(Timestamp::from_nanos(row.get(1).map_err(failed)?)) {
                    break; // every later chunk is older than everything kept
                }
                let m: String = row.get(0).map_err(failed)?;
                let data = row.get_ref(2).map_err(failed)?.as_blob().map_err(failed)?;
                newest.add(&machine_id(&m)?, data).map_err(failed)?;
            }
            Ok(newest.finish())
        })
        .await
    }

    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT machine_id, data, MAX(seq_max) FROM chunks GROUP BY machine_id ORDER BY machine_id")
                .map_err(failed)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .map_err(failed)?;
            let mut out = Vec::new();
            for row in rows {
                let (m, data) = row.map_err(failed)?;
                if let Some(last) = decode_row(&m, &data)?.into_iter().max_by_key(|r| r.seq) {
                    out.push(Arc::new(last.record));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn series(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ValueSeries, StoreError> {
        let machine_id = machine_id.as_str().to_owned();
        let parameter = parameter.to_owned();
        self.read(move |conn| {
            let since = since.unwrap_or(Timestamp::MIN);
            let until = until.unwrap_or(Timestamp::MAX);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT data FROM chunks WHERE machine_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3",
                )
                .map_err(failed)?;
            let mut rows = stmt.query(params![machine_id, since.as_nanos(), until.as_nanos()]).map_err(failed)?;
            let mut points = Vec::new();
            while let Some(row) = rows.next().map_err(failed)? {
                let data = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                codec::values_of(data, &parameter, since, until, &mut points).map_err(failed)?;
            }
            Ok(ValueSeries::from_points(points))
        })
        .await
    }

    async fn status_history(
        &self,
        machine_id: Option<&MachineId>,
        limit: usize,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let machine_id = machine_id.map(|m| m.as_str().to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT machine_id, status, previous, since FROM status_history
                     WHERE ?1 IS NULL OR machine_id = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(failed)?;
            let rows = stmt
                .query_map(params![machine_id, limit as i64], status_row)
                .map_err(failed)?;
            let mut out = rows
                .map(|r| r.map_err(failed).and_then(to_change))
                .collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn recovery(&self, per_machine: usize) -> Result<Recovery, StoreError> {
        self.read(move |conn| {
            let machines: Vec<String> = {
                let mut stmt = conn
                    .prepare("SELECT DISTINCT machine_id FROM chunks")
                    .map_err(failed)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(failed)?;
                rows.collect::<Result<_, _>>().map_err(failed)?
            };
            let mut records = Vec::new();
            let mut stmt = conn
                .prepare("SELECT data, n FROM chunks WHERE machine_id = ?1 ORDER BY seq_max DESC")
                .map_err(failed)?;
            for m in machines {
                let mut rows = stmt.query(params![m]).map_err(failed)?;
                let mut mine: Vec<StoredRecord> = Vec::new();
                while let Some(row) = rows.next().map_err(failed)? {
                    let data: Vec<u8> = row.get(0).map_err(failed)?;
                    mine.extend(decode_row(&m, &data)?);
                    if mine.len() >= per_machine {
                        break;
                    }
                }
                records.extend(codec::last_by_arrival(mine, per_machine));
            }
            let mut stmt = conn
                .prepare(
                    "SELECT machine_id, status, previous, since FROM status_history
                     WHERE id IN (SELECT MAX(id) FROM status_history GROUP BY machine_id)",
                )
                .map_err(failed)?;
            let rows = stmt.query_map([], status_row).map_err(failed)?;
            let statuses = rows
                .map(|r| r.map_err(failed).and_then(to_change))
                .collect::<Result<_, _>>()?;
            Ok(Recovery { records, statuses })
        })
        .await
    }

    async fn retain(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        writer::retain(|c| self.send(c), cutoff).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Close(tx))?;
        rx.await.map_err(failed)
    }
}

/// Counts of what a file holds, for logs and tests.
pub fn census(path: &Path) -> Result<HashMap<String, i64>, StoreError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(failed)?;
    let mut out = HashMap::new();
    for (name, sql) in [
        ("records", "SELECT COALESCE(SUM(n), 0) FROM chunks"),
        ("chunks", "SELECT COUNT(*) FROM chunks"),
        ("status_changes", "SELECT COUNT(*) FROM status_history"),
    ] {
        out.insert(
            name.to_owned(),
            conn.query_row(sql, [], |r| r.get(0)).map_err(failed)?,
        );
    }
    Ok(out)
}
