//! The default store: one SQLite file in WAL mode.
//!
//! All writes go through one thread that owns the write connection. It takes every command
//! waiting in its queue, writes them in one transaction and commits once (group commit: one
//! fsync for many concurrent requests), and only then acknowledges each of them. Reads use
//! their own connections on tokio's blocking pool, so the async runtime never waits on disk.
//!
//! Each group commit appends its records to the log: files beside the database
//! (`<file>-log.<n>`, see [`super::logfile`]), one write and one `fdatasync` per commit, the
//! group's records of all machines together. (Files made before version 5 may still hold rows
//! in the `log` table, which are read the same way.) Once tens of thousands of records are in
//! the log (or the oldest has waited a few seconds), the writer compacts them into `chunks`
//! (see [`super::codec`]): a row per machine holding its records since the last compaction,
//! which is what queries by machine and time read. A compaction is a round of slices written
//! between commits (and riding along with them when there are no gaps), so that no commit
//! waits for a whole compaction; a round starts a new log file, and its last slice moves
//! `compaction.upto`, the arrival number up to which chunks hold every record; once that is
//! durable, the round's log files are reused. Readers take only chunks up to that number, and
//! add the records the writer keeps in memory ([`Pending`]) after it. After a crash, the
//! chunks of an unfinished round are dropped and the log is compacted on the next start,
//! before anything is served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::codec::{self, Newest, StoredRecord, machine_id};
use super::logfile::{LogFile, LogLock, OnDamage};
use super::pending::Pending;
use super::prints::{self, ChunkPrints};
use super::writer;
use super::{Ack, DataQuery, Recovery, Store, StoreError, ValueSeries};
use crate::core::states::ReasonTime;
use crate::dedup::{Fingerprint, Wanted, fingerprint};
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::status::{JobStatus, StatusChange};
use crate::timestamp::Timestamp;

/// What the SQLite writer takes: appends come encoded by the caller.
type Command = writer::Command<codec::Batch>;

/// The schema version this build writes. Each entry of [`MIGRATIONS`] moves a file one
/// version up; a file with a higher version was written by a newer millwatch and is refused.
pub const SCHEMA_VERSION: i64 = 8;

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
    // 1 -> 2: commits go to a log, compacted into chunks now and then.
    "CREATE TABLE log (
        id INTEGER PRIMARY KEY,
        n INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    -- The arrival number up to which every record is in chunks (one row).
    CREATE TABLE compaction (upto INTEGER NOT NULL);
    INSERT INTO compaction SELECT COALESCE(MAX(seq_max), 0) FROM chunks;",
    // 2 -> 3: compactions in rounds leave chunks past `compaction.upto` until their last
    // slice (after a crash, until the next open drops them). Version 3 keeps older builds,
    // which would count those records twice, from opening such a file; the index makes
    // finding them on open a lookup rather than a scan.
    "CREATE INDEX chunks_seq_min ON chunks (seq_min);",
    // 3 -> 4: log entries may number their records from a base in their head (log format 2),
    // which older builds cannot read: version 4 keeps them from opening a file whose log a
    // crash left in the new format. No table changes; entries of format 1 still decode.
    "-- no table changes",
    // 4 -> 5: new commits go to log files beside the database (see `logfile`), which older
    // builds would not read: version 5 keeps them from opening a file whose records a crash
    // left there. The log table stays for files that still hold rows in it.
    "-- no table changes",
    // 5 -> 6: a status change keeps its reason, and running sums for time in state: `ends`
    // is the time of the machine's next change (null for its latest), `key_nanos` and
    // `key_entries` the time in and entries into the row's (status, reason) over all the
    // machine's earlier rows; `status_keys` lists each machine's (status, reason) pairs. The
    // sums make a range's time per pair a difference of two lookups (see `status_totals`).
    // Rows of older files get their sums here.
    "ALTER TABLE status_history ADD COLUMN reason TEXT;
    ALTER TABLE status_history ADD COLUMN ends INTEGER;
    ALTER TABLE status_history ADD COLUMN key_nanos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE status_history ADD COLUMN key_entries INTEGER NOT NULL DEFAULT 0;
    UPDATE status_history SET ends = n.next FROM
        (SELECT id, LEAD(since) OVER (PARTITION BY machine_id ORDER BY since, id) AS next
         FROM status_history) AS n
        WHERE n.id = status_history.id;
    UPDATE status_history SET key_nanos = w.kn, key_entries = w.ke FROM
        (SELECT id,
            COALESCE(SUM(ends - since) OVER (PARTITION BY machine_id, status, reason
                ORDER BY since, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS kn,
            ROW_NUMBER() OVER (PARTITION BY machine_id, status, reason ORDER BY since, id) - 1
                AS ke
         FROM status_history) AS w
        WHERE w.id = status_history.id;
    CREATE INDEX status_history_machine_since
        ON status_history (machine_id, since, id, status, previous, reason);
    CREATE INDEX status_history_machine_key
        ON status_history (machine_id, status, reason, since, id);
    CREATE TABLE status_keys (
        machine_id TEXT NOT NULL,
        status TEXT NOT NULL,
        has_reason INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (machine_id, status, has_reason, reason)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO status_keys
        SELECT DISTINCT machine_id, status, reason IS NOT NULL, COALESCE(reason, '')
        FROM status_history;",
    // 6 -> 7: alerts (SPEC §7): rules set through the API and each pending or firing alert;
    // 7 -> 8: the history of firings and the outbox of undelivered notifications.
    super::alerts::TABLES,
    super::alerts::sqlite::MIGRATION,
];

/// The page size of new files: SQLite's default. (Files made before the log existed have 1 KiB
/// pages, which suited a chunk per machine per commit; a file keeps its page size.)
const PAGE_SIZE: i64 = 4096;

/// When the writer compacts the log into chunks: a round starts once `records` are pending;
/// its slices go on between commits while no command waits (and ride on the commits when
/// that is not enough), and an idle writer compacts everything once the oldest pending
/// record has waited `age`. Larger means fewer, larger chunks and less
/// index work per record; smaller means less to hold in memory and to replay after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Pending records that start a compaction round.
    pub records: usize,
    /// Age of the oldest pending record that triggers one.
    pub age: Duration,
    /// Pending records beyond which new readings are refused (503) rather than held in
    /// memory: only reached when compactions keep failing (a full disk, say). Checked before
    /// each commit, so one commit's records may go beyond it.
    pub limit: usize,
    /// Whether rounds go on between commits. Off, each slice rides on a commit: a round then
    /// moves only as fast as commits come, which tests use to stop in the middle of one.
    pub between_commits: bool,
    /// Frames in the WAL after which the writer finishes the checkpoint itself, so that the
    /// WAL starts over instead of growing with every commit.
    pub wal_frames: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            records: 65_536,
            age: Duration::from_secs(5),
            limit: 1 << 20,
            between_commits: true,
            wal_frames: WAL_RESTART_FRAMES,
        }
    }
}
/// Most records in one chunk, so that a busy machine's compaction still makes rows that a
/// query can skip by time.
const CHUNK_RECORDS: usize = 4096;
/// Once the WAL holds this many frames, the writer finishes the checkpoint itself (the
/// checkpoint thread has copied most of it by then), so that the next commit starts the WAL
/// over instead of growing it without end: under steady load the checkpoint thread alone
/// never catches up with a WAL that keeps getting frames.
const WAL_RESTART_FRAMES: u64 = 16_384;
/// The writer's page cache, in KiB (SQLite takes a negative `cache_size` as KiB).
const WRITER_CACHE_KIB: i64 = -32 * 1024;
/// What a restarted WAL is cut back to on disk.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

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
    commands: mpsc::Sender<Command>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Records in the log, not yet in chunks.
    pending: Arc<RwLock<Pending>>,
    /// The fingerprints of the chunks duplicate lookups read last.
    prints: Arc<Mutex<ChunkPrints>>,
}

/// A chunk whose blob does not decode: what is lost, by machine and time range.
fn damaged_chunk(machine: &str, from: i64, to: i64, e: codec::CodecError) -> StoreError {
    let at = Timestamp::from_nanos;
    StoreError::Damaged(format!(
        "the readings of {machine} from {} to {} cannot be read: their chunk is damaged ({e})",
        at(from),
        at(to)
    ))
}

/// A failure beneath the store, classified (full disk, damaged data, other).
fn failed<E: std::fmt::Display + 'static>(e: E) -> StoreError {
    StoreError::classify(e)
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
    // Only a new file takes it; see PAGE_SIZE.
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
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(failed)?;
    Ok(conn)
}

/// How much of the file a reader maps into memory. A query over a million values reads tens
/// of megabytes of chunks, thousands of overflow pages: read through the mapping rather than
/// a `pread` each (SQLite's own page cache for readers is 2 MB), it takes about half the time.
const READER_MMAP_BYTES: i64 = 1 << 30;

/// A connection for the readers' pool.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path, Durability::Full)?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
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
        // A fresh file is one event, not one per step; an older file's upgrade shows each.
        if version > 0 {
            tracing::info!(file = %path.display(), version = to, "schema migrated");
        }
    }
    if version == 0 {
        tracing::info!(file = %path.display(), version = SCHEMA_VERSION, "new database created");
    } else if version < SCHEMA_VERSION {
        tracing::info!(file = %path.display(), from = version, to = SCHEMA_VERSION, "schema upgraded");
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(path, durability, Compaction::default())
    }

    /// Opens the file at `path`, compacting as `compaction` says.
    pub fn open_with(
        path: &Path,
        durability: Durability,
        compaction: Compaction,
    ) -> Result<Self, StoreError> {
        Self::open_full(path, durability, compaction, OnDamage::Refuse)
    }

    /// Opens the file at `path`, doing with a log damaged in the middle what `on_damage` says.
    pub fn open_on_damage(
        path: &Path,
        durability: Durability,
        on_damage: OnDamage,
    ) -> Result<Self, StoreError> {
        Self::open_full(path, durability, Compaction::default(), on_damage)
    }

    fn open_full(
        path: &Path,
        durability: Durability,
        compaction: Compaction,
        on_damage: OnDamage,
    ) -> Result<Self, StoreError> {
        // Before anything reads the log: another process writing it would have its records
        // compacted twice and its log files reused under it.
        let lock = LogLock::take(path)
            .map_err(|e| failed(format!("cannot use {}: {e}", path.display())))?;
        let mut conn = open_connection(path, durability)?;
        migrate(&mut conn, path)?;
        let logged = LogFile::recover(path, on_damage).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                StoreError::Damaged(format!("the log beside {}: {e}", path.display()))
            } else {
                failed(format!(
                    "cannot read the log beside {}: {e}",
                    path.display()
                ))
            }
        })?;
        let recovered = compact_log(&mut conn, &logged)?;
        // Only once the recovered records are durable in chunks are their log files reused:
        // synced here also when compaction found nothing to move (a round's last commit,
        // unsynced before a kill, may be in the page cache only).
        if durability == Durability::Full {
            sync_database(path, true)?;
        }
        let log = LogFile::start(path, durability == Durability::Full, lock).map_err(|e| {
            failed(format!(
                "cannot start the log beside {}: {e}",
                path.display()
            ))
        })?;
        if recovered > 0 {
            tracing::info!(file = %path.display(), records = recovered, "log of the last run compacted");
        }
        let compacted: i64 = conn
            .query_row(
                "SELECT MAX(upto, (SELECT COALESCE(MAX(seq_max), 0) FROM chunks)) FROM compaction",
                [],
                |r| r.get(0),
            )
            .map_err(failed)?;
        let next_seq = compacted as u64 + 1;
        // The writer only appends to the WAL; copying the WAL into the database file (the
        // checkpoint) happens on a thread of its own, so that it runs on the other core
        // instead of stalling commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(failed)?;
        // A compaction writes megabytes in one transaction and then frees the log's pages,
        // reading each overflow page it frees: with SQLite's default 2 MB cache it would spill
        // pages to the WAL mid-transaction and read them back.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(failed)?;
        let wal_frames = Arc::new(AtomicU64::new(0));
        let checkpointer = open_connection(path, durability)?;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let frames = wal_frames.clone();
        let restart_at = compaction.wal_frames;
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &stop_rx, &frames, restart_at))
            .map_err(failed)?;
        let pending = Arc::new(RwLock::new(Pending::new(next_seq)));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            log,
            conn,
            durability,
            unsynced: false,
            next_seq,
            pending: pending.clone(),
            compaction,
            round: None,
            failures: 0,
            retry_at: None,
            wal_frames,
            file: path.to_path_buf(),
            _stop_checkpoints: stop_tx,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(failed)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            commands: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            pending,
            prints: Arc::default(),
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
                None => open_reader(&path)?,
            };
            let out = f(&conn);
            // A connection left inside a transaction (its end failed) would pin an old
            // snapshot for the next read: it is dropped instead.
            if conn.is_autocommit() {
                readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            }
            out
        })
        .await
        .map_err(failed)?
    }

    /// Reads records from one snapshot of the file plus the pending records it lacks. The
    /// snapshot starts with reading up to which arrival number the chunks go; `take` then
    /// copies the pending records after that number (the few a query wants), and `chunks`
    /// reads the chunks of the same snapshot up to that number (later ones belong to a
    /// compaction under way, whose records are still pending) and adds them. A compaction
    /// that moved records out of memory in the moment between the two first steps makes the
    /// read start over: that window is one small query, so a second try practically always
    /// succeeds, however long the chunk read takes.
    async fn read_merged<B, T: Send + 'static>(
        &self,
        take: impl Fn(&Pending, u64) -> B + Send + 'static,
        chunks: impl FnOnce(&Connection, i64, B) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pending = self.pending.clone();
        self.read(move |conn| {
            for _ in 0..MAX_SNAPSHOT_TRIES {
                let tx = conn.unchecked_transaction().map_err(failed)?;
                let compacted: i64 = tx
                    .query_row("SELECT upto FROM compaction", [], |r| r.get(0))
                    .map_err(failed)?;
                let taken = {
                    let pending = pending.read().unwrap_or_else(|e| e.into_inner());
                    if !pending.covers(compacted as u64) {
                        continue;
                    }
                    take(&pending, compacted as u64)
                };
                let out = chunks(&tx, compacted, taken)?;
                tx.finish().map_err(failed)?;
                return Ok(out);
            }
            Err(StoreError::Unavailable(
                "compactions kept overtaking this read; try again".into(),
            ))
        })
        .await
    }
}

/// How often a read starts over because a compaction overtook it, before it gives up.
const MAX_SNAPSHOT_TRIES: usize = 8;

/// Moves every record of the log left by the last run (its table's rows and the entries of
/// its files, `logged`) into chunks, in one transaction, before the writer starts. Records
/// the log files still hold although a compaction moved them already (it finished, the
/// files were not yet reused) are skipped. Returns how many records moved.
fn compact_log(conn: &mut Connection, logged: &[Vec<u8>]) -> Result<usize, StoreError> {
    let tx = conn.transaction().map_err(failed)?;
    // Chunks of a round that did not finish: their records are still in the log.
    let unfinished = tx
        .execute(
            "DELETE FROM chunks WHERE seq_min > (SELECT upto FROM compaction)",
            [],
        )
        .map_err(failed)?;
    if unfinished > 0 {
        tracing::info!(
            chunks = unfinished,
            "chunks of an unfinished compaction dropped"
        );
    }
    let mut records: Vec<StoredRecord> = Vec::new();
    {
        let mut stmt = tx
            .prepare("SELECT data FROM log ORDER BY id")
            .map_err(failed)?;
        let mut rows = stmt.query([]).map_err(failed)?;
        while let Some(row) = rows.next().map_err(failed)? {
            let data = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
            records.extend(codec::decode_log(data)?);
        }
    }
    let upto: i64 = tx
        .query_row("SELECT upto FROM compaction", [], |r| r.get(0))
        .map_err(failed)?;
    for entry in logged {
        records.extend(
            codec::decode_log(entry)?
                .into_iter()
                .filter(|r| r.seq as i64 > upto),
        );
    }
    if records.is_empty() {
        tx.commit().map_err(failed)?;
        return Ok(0);
    }
    records.sort_by(|a, b| {
        (a.record.machine_id.as_str(), a.seq).cmp(&(b.record.machine_id.as_str(), b.seq))
    });
    let upto = records.iter().map(|r| r.seq).max().unwrap_or(0);
    {
        let mut insert = tx.prepare_cached(INSERT_CHUNK).map_err(failed)?;
        for machine in records.chunk_by(|a, b| a.record.machine_id == b.record.machine_id) {
            let rows: Vec<(u64, &ProcessedRecord)> =
                machine.iter().map(|r| (r.seq, &r.record)).collect();
            insert_chunks(&mut insert, machine[0].record.machine_id.as_str(), &rows)?;
        }
    }
    tx.execute("DELETE FROM log", []).map_err(failed)?;
    tx.execute(
        "UPDATE compaction SET upto = MAX(upto, ?1)",
        params![upto as i64],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(records.len())
}

const INSERT_CHUNK: &str =
    "INSERT INTO chunks (machine_id, ts_min, ts_max, seq_min, seq_max, n, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Inserts one machine's records (in arrival order) as chunks of at most [`CHUNK_RECORDS`].
fn insert_chunks<R: AsRef<ProcessedRecord>>(
    insert: &mut rusqlite::CachedStatement<'_>,
    machine: &str,
    rows: &[(u64, R)],
) -> Result<(), StoreError> {
    let built = codec::chunks(rows, CHUNK_RECORDS).map(|(piece, data)| {
        let (ts_min, ts_max, seq_min, seq_max) = writer::bounds(piece);
        codec::Built {
            data: codec::compress(data),
            records: piece.len(),
            ts_min,
            ts_max,
            seq_min,
            seq_max,
        }
    });
    insert_built(insert, machine, built)
}

/// Inserts chunks of one machine.
fn insert_built(
    insert: &mut rusqlite::CachedStatement<'_>,
    machine: &str,
    built: impl IntoIterator<Item = codec::Built>,
) -> Result<(), StoreError> {
    for b in built {
        insert
            .execute(params![
                machine,
                b.ts_min.as_nanos(),
                b.ts_max.as_nanos(),
                b.seq_min as i64,
                b.seq_max as i64,
                b.records as i64,
                b.data.as_slice()
            ])
            .map_err(failed)?;
    }
    Ok(())
}

/// A group whose records could not be written to the log: the error, and what the database's
/// part did (retention's deleted chunks, the slice) when it had committed already.
type LogFailed = (StoreError, Option<(usize, Option<Slice>)>);

/// Makes everything committed to the database at `path` durable: its WAL holds the commits
/// not yet copied into the file (a WAL starts over only after a checkpoint that synced the
/// file), so syncing it is enough while the writer runs; `with_file` syncs the file too.
fn sync_database(path: &Path, with_file: bool) -> Result<(), StoreError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let files = [PathBuf::from(wal), path.to_path_buf()];
    for file in &files[..if with_file { 2 } else { 1 }] {
        match std::fs::File::open(file) {
            Ok(f) => f
                .sync_all()
                .map_err(|e| failed(format!("cannot sync {}: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(format!("cannot open {}: {e}", file.display()))),
        }
    }
    Ok(())
}

/// Owns the write connection and the log files.
struct Writer {
    /// Where commits' records are made durable first.
    log: LogFile,
    conn: Connection,
    durability: Durability,
    /// Whether the connection was left with `synchronous = NORMAL` by an unsynced slice.
    unsynced: bool,
    next_seq: u64,
    /// Committed records not yet compacted, shared with readers.
    pending: Arc<RwLock<Pending>>,
    compaction: Compaction,
    /// The compaction under way, if any.
    round: Option<Round>,
    /// Compactions that failed in a row, and when the next may try: a failing one is not
    /// retried after every commit.
    failures: u32,
    retry_at: Option<Instant>,
    /// Frames in the WAL, as the checkpoint thread last saw them.
    wal_frames: Arc<AtomicU64>,
    file: PathBuf,
    /// Dropped with the writer, which ends the checkpoint thread.
    _stop_checkpoints: mpsc::Sender<()>,
}

/// A compaction under way: the pending records numbered up to `upto` go into chunks, a slice
/// of them with each commit. Its chunks are not part of the store until its last slice moves
/// `compaction.upto` (readers skip chunks past it; a restart drops them).
struct Round {
    /// Every record numbered up to here that is pending is in this round.
    upto: u64,
    /// The log rows holding the round's records: every row up to this id (and only those).
    log_upto: i64,
    /// The log files holding the round's records: every segment up to this one.
    segment_upto: u64,
    /// Per machine still to do (the next one last): how many of its pending records are in
    /// chunks already, and how many the round takes.
    todo: Vec<(MachineId, usize, usize)>,
}

/// What a slice did, to be applied to its round once the commit holding it succeeded.
struct Slice {
    /// Machines finished, from the end of `todo`.
    finished: usize,
    /// Where the next machine's records stand, when the slice ended inside them.
    partial: Option<usize>,
}

/// A slice takes at least this many times the records its commit brings, so that the pending
/// records shrink while a round goes on.
const SLICE_FACTOR: usize = 2;
/// Records a writer compacts per transaction between commits.
const GAP_SLICE: usize = 1024;
/// Records an idle writer compacts per transaction.
const IDLE_SLICE: usize = 4 * CHUNK_RECORDS;

/// How long after a failed compaction the next one waits: the first, doubled with each
/// further failure in a row, up to the second.
const COMPACTION_RETRY_MIN: Duration = Duration::from_millis(50);
const COMPACTION_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How soon the next copy follows when the WAL nears its restart.
const CHECKPOINT_SOON: Duration = Duration::from_millis(5);

/// When the next checkpoint pass comes, after one that found `frames` in the WAL (`last` at
/// the pass before): soon while a WAL past half the restart size grows, otherwise after the
/// usual period. A WAL fully copied keeps its size until the next write restarts it, so an
/// idle writer's large WAL does not keep the checkpoint thread awake.
fn next_checkpoint(frames: u64, last: u64, restart_at: u64) -> Duration {
    if frames >= (restart_at / 2).max(1) && frames != last {
        CHECKPOINT_SOON
    } else {
        CHECKPOINT_EVERY
    }
}

/// A checkpoint that keeps failing (a full disk) is reported when it starts failing, then at
/// most this often, and once more when it works again: not five times a second.
const CHECKPOINT_WARN_EVERY: Duration = Duration::from_secs(60);

/// Checkpoints the WAL until the writer is gone, publishing how many frames it holds. PASSIVE
/// never blocks the writer or readers; what it cannot copy now it copies next time.
///
/// Once the WAL nears the size at which the writer restarts it (`restart_at` frames) and is
/// still growing, passes follow each other closely: the writer's own checkpoint before the
/// restart, which every request waits for, then has only the last few milliseconds' frames
/// left to copy instead of up to a whole period's (tens of milliseconds of stall, measured).
fn checkpoint_loop(
    conn: &Connection,
    stop: &mpsc::Receiver<()>,
    frames: &AtomicU64,
    restart_at: u64,
) {
    // Failures in a row, and when the last warning went out.
    let mut failing: Option<(u64, Instant)> = None;
    let mut wait = CHECKPOINT_EVERY;
    let mut last = 0;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
        wait = CHECKPOINT_EVERY;
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(n) => {
                let n = n.max(0) as u64;
                frames.store(n, Ordering::Relaxed);
                wait = next_checkpoint(n, last, restart_at);
                last = n;
                if let Some((failures, _)) = failing.take() {
                    tracing::info!(failures, "SQLite checkpoint works again");
                }
            }
            Err(e) => {
                let (failures, warned) = failing.get_or_insert((0, Instant::now()));
                *failures += 1;
                if *failures == 1 || warned.elapsed() >= CHECKPOINT_WARN_EVERY {
                    *warned = Instant::now();
                    tracing::warn!(error = %e, failures = *failures, "SQLite checkpoint failed; will retry");
                }
            }
        }
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        // A command that arrived while the writer compacted between commits.
        let mut carried: Option<Command> = None;
        loop {
            // Idle, the writer still compacts when the oldest pending record comes of age.
            let first = match carried.take() {
                Some(cmd) => cmd,
                None => match self.next_compaction() {
                    None => match rx.recv() {
                        Ok(cmd) => cmd,
                        Err(_) => break,
                    },
                    Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(cmd) => cmd,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.compact_idle();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                },
            };
            let mut group = writer::gather(first, || rx.try_recv().ok());
            if group.iter().any(|c| matches!(c, Command::Retain(..))) && self.may_retry() {
                // Retention deletes chunks; what is still pending should be among them. (While
                // compactions fail, old pending records outlive this pass; the next one after
                // a successful compaction deletes them.)
                self.compact();
            }
            if let Err(refusal) = self.room() {
                let (refused, kept) = group
                    .into_iter()
                    .partition(|c| matches!(c, Command::Append(..)));
                writer::answer(refused, &Err(refusal));
                group = kept;
            }
            let next_seq = self.number(&mut group);
            let budget = SLICE_FACTOR * (next_seq - self.next_seq) as usize;
            let result = match self.write(&group, budget) {
                Ok((deleted, slice)) => {
                    self.next_seq = next_seq;
                    self.remember(&mut group);
                    if let Some(slice) = slice {
                        self.sliced(slice);
                    }
                    Ok(deleted)
                }
                Err((e, committed)) => {
                    if let Some((deleted, slice)) = committed {
                        // The database's part committed before the log failed: a slice in it
                        // is done, and status changes and retention succeeded (answered
                        // failed, a retry would store a status change twice). Only the
                        // appends failed.
                        if let Some(slice) = slice {
                            self.sliced(slice);
                        }
                        let (appends, others): (Vec<Command>, Vec<Command>) = group
                            .into_iter()
                            .partition(|c| matches!(c, Command::Append(..) | Command::Close(_)));
                        writer::answer(others, &Ok(deleted));
                        group = appends;
                    }
                    Err(e)
                }
            };
            if group.iter().any(|c| matches!(c, Command::Close(_))) {
                self.compact();
            }
            if writer::answer(group, &result) {
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
                break;
            }
            // A busy writer never finds the WAL fully checkpointed on its own (new frames
            // arrive while the checkpoint thread copies), so it would grow without end, every
            // commit extending the file; the writer finishes the checkpoint itself now and then.
            self.restart_wal();
            // After answering: the group's records are already visible in `pending`. A round
            // starts once enough records wait; the next commits carry it. Idle, the writer
            // finishes it by age.
            if self.round.is_none()
                && self.may_retry()
                && self.pending_len() >= self.compaction.records
            {
                self.start_round();
            }
            // Between commits, while no command waits, the round goes on in small slices
            // that are not fsync'd (the round's end is: see `release_log`), and no client
            // waits for them.
            while self.compaction.between_commits && self.round.is_some() && self.may_retry() {
                match rx.try_recv() {
                    Ok(cmd) => {
                        carried = Some(cmd);
                        break;
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
                if !self.slice_unsynced(GAP_SLICE) {
                    break;
                }
            }
        }
        tracing::debug!(file = %self.file.display(), "SQLite writer stopped");
    }

    /// Numbers the group's records in arrival order, from the next number on; returns the
    /// number after the last.
    fn number(&self, group: &mut [Command]) -> u64 {
        let mut next = self.next_seq;
        for cmd in group {
            if let Command::Append(batch, _) = cmd {
                batch.set_base(next);
                next += batch.records() as u64;
            }
        }
        next
    }

    /// Hands a committed group's records to readers (before anyone is told they are stored):
    /// the log entries' bytes themselves, shared, not a copy.
    fn remember(&self, group: &mut [Command]) {
        let mut pending = self.pending.write().unwrap_or_else(|e| e.into_inner());
        for cmd in group {
            if let Command::Append(batch, _) = cmd {
                pending.extend(batch);
            }
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether a failed compaction's back-off is over (or none failed).
    fn may_retry(&self) -> bool {
        self.retry_at.is_none_or(|at| at <= Instant::now())
    }

    /// When an idle writer compacts everything pending (now or earlier when it is overdue):
    /// once the oldest pending record comes of age. `None` with nothing pending. (A busy
    /// writer compacts in rounds carried by its commits.)
    fn next_compaction(&self) -> Option<Instant> {
        let since = self
            .pending
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .since()?;
        let due = since + self.compaction.age;
        Some(self.retry_at.map_or(due, |retry| due.max(retry)))
    }

    /// Starts a round over every pending record; false when nothing is pending (or the log
    /// cannot be read).
    fn start_round(&mut self) -> bool {
        let todo: Vec<(MachineId, usize, usize)> = {
            let pending = self.pending.read().unwrap_or_else(|e| e.into_inner());
            let mut todo: Vec<_> = pending
                .counts()
                .filter(|(_, n)| *n > 0)
                .map(|(m, n)| (m.clone(), 0, n))
                .collect();
            // Largest last, so that the first slices take the machines that hold the most.
            todo.sort_unstable_by_key(|(_, _, n)| *n);
            todo
        };
        if todo.is_empty() {
            return false;
        }
        let log_upto = match self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM log", [], |r| r.get(0))
        {
            Ok(id) => id,
            Err(e) => {
                self.compaction_failed(&failed(e));
                return false;
            }
        };
        // Later records go to a new log file, so that the round's files can be reused once
        // it is over.
        let segment_upto = match self.log.rotate() {
            Ok(s) => s,
            Err(e) => {
                self.compaction_failed(&failed(format!("cannot start a log file: {e}")));
                return false;
            }
        };
        self.round = Some(Round {
            upto: self.next_seq - 1,
            log_upto,
            segment_upto,
            todo,
        });
        true
    }

    /// Whether new records may come in: not while the records that failing compactions left
    /// in memory are at the limit (a compaction due by then gets one more try first).
    fn room(&mut self) -> Result<(), StoreError> {
        if self.pending_len() < self.compaction.limit {
            return Ok(());
        }
        if self.may_retry() {
            self.compact();
            if self.pending_len() < self.compaction.limit {
                return Ok(());
            }
        }
        let why = if self.failures > 0 {
            format!(
                "compaction failed {} times in a row (see the log)",
                self.failures
            )
        } else {
            "compaction has not caught up".to_owned()
        };
        Err(StoreError::Unavailable(format!(
            "SQLite store {}: {} records wait to be compacted and {why}; new readings are \
             refused until it succeeds",
            self.file.display(),
            self.pending_len()
        )))
    }

    /// Moves every pending record into chunks now, in a transaction of its own: the round
    /// under way (if any), then one over what came after it. On failure the records stay in
    /// the log and in memory, and a later compaction tries again.
    fn compact(&mut self) {
        for _ in 0..2 {
            if !self.slice_alone(usize::MAX) {
                break;
            }
        }
        self.restart_wal();
    }

    /// One step of an idle writer's compaction: a slice of the round in a transaction of its
    /// own. The next step comes only if no command arrived meanwhile, so that a compaction
    /// after a burst neither delays the next commit nor takes a core away from readers for
    /// long.
    fn compact_idle(&mut self) {
        self.slice_alone(IDLE_SLICE);
        self.restart_wal();
    }

    /// Writes a slice of at least `budget` records of the round (started if none is under
    /// way) in a transaction of its own; false when nothing was pending or it failed.
    fn slice_alone(&mut self, budget: usize) -> bool {
        if self.round.is_none() && !self.start_round() {
            return false;
        }
        let result = (|| {
            let tx = self.conn.unchecked_transaction().map_err(failed)?;
            let slice = self.slice(&tx, budget)?;
            tx.commit().map_err(failed)?;
            Ok(slice)
        })();
        match result {
            Ok(slice) => {
                self.sliced(slice);
                true
            }
            Err(e) => {
                self.compaction_failed(&e);
                false
            }
        }
    }

    /// A slice in a transaction of its own whose commit is not fsync'd (the next one that is
    /// makes it durable, at the latest the one `release_log` makes before the round's log
    /// files are reused; until then a crash loses only compaction work, which the log still
    /// holds).
    fn slice_unsynced(&mut self, budget: usize) -> bool {
        if self.durability == Durability::Full {
            self.unsynced = true;
            let _ = self.conn.pragma_update(None, "synchronous", "NORMAL");
        }
        let sliced = self.slice_alone(budget);
        let _ = self.synced();
        sliced
    }

    /// Puts back `synchronous = FULL` after unsynced slices, before anything is committed
    /// that will be acknowledged; a group commit fails rather than go out without fsync.
    fn synced(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(|e| failed(format!("cannot restore synchronous = FULL: {e}")))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Notes a failed compaction (or slice): the next one waits, longer after each failure
    /// in a row.
    fn compaction_failed(&mut self, e: &StoreError) {
        self.failures += 1;
        let wait = COMPACTION_RETRY_MIN
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(COMPACTION_RETRY_MAX);
        self.retry_at = Some(Instant::now() + wait);
        tracing::warn!(
            error = %e,
            failures = self.failures,
            retry_in_ms = wait.as_millis() as u64,
            pending = self.pending_len(),
            "SQLite compaction failed; the records stay in the log"
        );
    }

    /// Writes the next slice of the round into `tx`: whole chunks of its machines, at least
    /// `budget` records' worth (or what is left); the round's last slice also deletes its log
    /// rows and moves `compaction.upto`. Nothing changes in memory until the commit.
    fn slice(&self, tx: &Connection, budget: usize) -> Result<Slice, StoreError> {
        let Some(round) = &self.round else {
            return Ok(Slice {
                finished: 0,
                partial: None,
            });
        };
        let pending = self.pending.read().unwrap_or_else(|e| e.into_inner());
        let mut insert = tx.prepare_cached(INSERT_CHUNK).map_err(failed)?;
        let (mut taken, mut finished, mut partial) = (0, 0, None);
        for (machine, done, end) in round.todo.iter().rev() {
            if taken >= budget {
                break;
            }
            // Whole chunks only: a slice never makes a chunk smaller than a compaction would.
            let left = end.saturating_sub(*done);
            let chunks = (budget - taken).div_ceil(CHUNK_RECORDS);
            let take = left.min(chunks.saturating_mul(CHUNK_RECORDS));
            let built = pending
                .chunks(machine, *done, take, CHUNK_RECORDS)
                .map_err(failed)?;
            if built.iter().map(|b| b.records).sum::<usize>() != take {
                return Err(StoreError::Failed(format!(
                    "the pending records of {machine} changed under a compaction"
                )));
            }
            insert_built(&mut insert, machine.as_str(), built)?;
            taken += take;
            if take == left {
                finished += 1;
            } else {
                partial = Some(done + take);
                break;
            }
        }
        if finished == round.todo.len() {
            tx.execute("DELETE FROM log WHERE id <= ?1", params![round.log_upto])
                .map_err(failed)?;
            tx.execute(
                "UPDATE compaction SET upto = ?1",
                params![round.upto as i64],
            )
            .map_err(failed)?;
        }
        Ok(Slice { finished, partial })
    }

    /// Applies a committed slice to its round; after the last one, the round's records leave
    /// memory.
    fn sliced(&mut self, slice: Slice) {
        let Some(round) = &mut self.round else {
            return;
        };
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "SQLite compaction succeeded again"
            );
        }
        self.failures = 0;
        self.retry_at = None;
        round.todo.truncate(round.todo.len() - slice.finished);
        if let (Some(done), Some(next)) = (slice.partial, round.todo.last_mut()) {
            next.1 = done;
        }
        if !round.todo.is_empty() {
            return;
        }
        let (upto, segment_upto) = (round.upto, round.segment_upto);
        self.round = None;
        self.release_log(segment_upto);
        let left = {
            let mut pending = self.pending.write().unwrap_or_else(|e| e.into_inner());
            pending.clear_upto(upto);
            pending.len()
        };
        tracing::debug!(upto, left, "log compacted into chunks");
    }

    /// Reuses the log files up to `segment` once a round's last commit is durable: the commit
    /// of an unsynced slice is made so first, by a synced one.
    fn release_log(&mut self, segment: u64) {
        if self.durability == Durability::Full || self.unsynced {
            // The WAL file itself: a commit that changes nothing would not sync it (SQLite
            // skips writing a row equal to the one stored), and the round's last slice may
            // have been committed without sync.
            if let Err(e) = sync_database(&self.file, false) {
                tracing::warn!(error = %e, "cannot sync the compaction; its log files are kept");
                return;
            }
        }
        if let Err(e) = self.log.release(segment) {
            tracing::warn!(error = %e, "cannot reuse log files; they stay until the next start");
        }
    }

    /// Finishes what the checkpoint thread started, so that the WAL starts over. (When the
    /// checkpoint thread holds the checkpoint at that moment, nothing is finished: the next
    /// group tries again.)
    fn restart_wal(&mut self) {
        if self.wal_frames.load(Ordering::Relaxed) >= self.compaction.wal_frames {
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            {
                Ok(0) => self.wal_frames.store(0, Ordering::Relaxed),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; will retry"),
            }
        }
    }

    /// Commits a group: its status changes and retention in the database, with the next
    /// slice of the round under way (at least `budget` records) when compactions are not
    /// backing off, then its records to the log. A failing slice is rolled back alone: the
    /// group still commits. Returns the chunks retention deleted and the slice written; on
    /// failure, the error and the slice if it was committed before the log failed.
    fn write(
        &mut self,
        group: &[Command],
        budget: usize,
    ) -> Result<(usize, Option<Slice>), LogFailed> {
        self.write_database(group, budget)
            .map_err(|e| (e, None))
            .and_then(|(deleted, slice)| {
                // The records themselves: acknowledged once this returns.
                let appended = self.log.append(
                    group
                        .iter()
                        .filter_map(|cmd| match cmd {
                            Command::Append(batch, _) => Some(&batch.entries),
                            _ => None,
                        })
                        .flatten()
                        .map(|e| e.data.as_slice()),
                );
                match appended {
                    Ok(()) => Ok((deleted, slice)),
                    Err(e) => Err((
                        failed(format!("cannot write the log: {e}")),
                        Some((deleted, slice)),
                    )),
                }
            })
    }

    /// The database's part of [`Writer::write`].
    fn write_database(
        &mut self,
        group: &[Command],
        budget: usize,
    ) -> Result<(usize, Option<Slice>), StoreError> {
        self.synced()?;
        let mut tx = self.conn.unchecked_transaction().map_err(failed)?;
        let mut deleted = 0;
        {
            for cmd in group {
                match cmd {
                    Command::Status(c, _) => insert_status(&tx, c)?,
                    Command::Alerts(w, _) => super::alerts::sqlite::apply(&tx, w)?,
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
        let (mut slice, mut slice_failed) = (None, None);
        // Between commits the round goes on unless the writer has no gaps: then the commits
        // carry it, so that pending records do not grow without end.
        if self.round.is_some()
            && self.may_retry()
            && (!self.compaction.between_commits
                || self.pending_len() >= 2 * self.compaction.records)
        {
            let savepoint = tx.savepoint().map_err(failed)?;
            match self.slice(&savepoint, budget.max(1)) {
                Ok(done) => {
                    savepoint.commit().map_err(failed)?;
                    slice = Some(done);
                }
                // Dropping the savepoint rolls the slice back.
                Err(e) => slice_failed = Some(e),
            }
        }
        let committed = tx.commit().map_err(failed);
        // Also when the commit failed: a slice error can abort the whole transaction, and
        // the next groups must not keep trying the slice at once.
        if let Some(e) = slice_failed {
            self.compaction_failed(&e);
        }
        committed?;
        Ok((deleted, slice))
    }
}

/// Stores a status change with its running sums (migration 5 -> 6): the machine's latest
/// change so far gets its end, the new row the sums of its (status, reason) up to it. A
/// change dated before the machine's latest is stored at the latest's time, so that the
/// history stays in time order (the status book never asks for that).
fn insert_status(tx: &Connection, c: &StatusChange) -> Result<(), StoreError> {
    let machine = c.machine_id.as_str();
    let mut since = c.since.as_nanos();
    let last: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT id, since FROM status_history WHERE machine_id = ?1
             ORDER BY since DESC, id DESC LIMIT 1",
        )
        .map_err(failed)?
        .query_row(params![machine], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(failed)?;
    if let Some((id, at)) = last {
        since = since.max(at);
        tx.prepare_cached("UPDATE status_history SET ends = ?1 WHERE id = ?2")
            .map_err(failed)?
            .execute(params![since, id])
            .map_err(failed)?;
    }
    let reason = c.reason.as_deref();
    let same: Option<(i64, i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT since, ends, key_nanos, key_entries FROM status_history
             WHERE machine_id = ?1 AND status = ?2 AND reason IS ?3
             ORDER BY since DESC, id DESC LIMIT 1",
        )
        .map_err(failed)?
        .query_row(params![machine, c.status.as_str(), reason], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or(since),
                r.get(2)?,
                r.get(3)?,
            ))
        })
        .optional()
        .map_err(failed)?;
    let (key_nanos, key_entries) = same.map_or((0, 0), |(at, ends, n, e)| (n + (ends - at), e + 1));
    tx.prepare_cached(
        "INSERT INTO status_history (machine_id, status, previous, since, reason, key_nanos, key_entries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(failed)?
    .execute(params![
        machine,
        c.status.as_str(),
        c.previous.as_str(),
        since,
        reason,
        key_nanos,
        key_entries
    ])
    .map_err(failed)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO status_keys (machine_id, status, has_reason, reason) VALUES (?1, ?2, ?3, ?4)",
    )
    .map_err(failed)?
    .execute(params![machine, c.status.as_str(), reason.is_some(), reason.unwrap_or("")])
    .map_err(failed)?;
    Ok(())
}

/// Time in one (status, reason) up to `at` and its entries up to `at`, from the running sums
/// of the pair's last row at or before `at` (`inclusive`) or before it.
fn key_sums(
    conn: &Connection,
    machine: &str,
    status: &str,
    reason: Option<&str>,
    at: i64,
    inclusive: bool,
) -> Result<(i64, i64), StoreError> {
    let sql = if inclusive {
        "SELECT since, ends, key_nanos, key_entries FROM status_history
         WHERE machine_id = ?1 AND status = ?2 AND reason IS ?3 AND since <= ?4
         ORDER BY since DESC, id DESC LIMIT 1"
    } else {
        "SELECT since, ends, key_nanos, key_entries FROM status_history
         WHERE machine_id = ?1 AND status = ?2 AND reason IS ?3 AND since < ?4
         ORDER BY since DESC, id DESC LIMIT 1"
    };
    let row: Option<(i64, Option<i64>, i64, i64)> = conn
        .prepare_cached(sql)
        .map_err(failed)?
        .query_row(params![machine, status, reason, at], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()
        .map_err(failed)?;
    Ok(row.map_or((0, 0), |(since, ends, nanos, entries)| {
        let end = ends.map_or(at, |e| e.min(at));
        (nanos + (end - since).max(0), entries + 1)
    }))
}

/// A status row as read: machine, status, previous, since, reason.
type StatusRow = (String, String, String, i64, Option<String>);

fn status_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StatusRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_change((m, s, p, t, reason): StatusRow) -> Result<StatusChange, StoreError> {
    Ok(StatusChange {
        machine_id: machine_id(&m)?,
        status: JobStatus::parse(&s).map_err(failed)?,
        previous: JobStatus::parse(&p).map_err(failed)?,
        since: Timestamp::from_nanos(t),
        reason: reason.map(Into::into),
    })
}

/// A change of a known machine from the columns since, status, previous, reason (0..4),
/// without copying the strings it only compares: the time-in-state hot path.
fn change_of(machine: &MachineId, r: &rusqlite::Row<'_>) -> Result<StatusChange, StoreError> {
    let text = |i: usize| -> Result<&str, StoreError> {
        r.get_ref(i).map_err(failed)?.as_str().map_err(failed)
    };
    let reason = match r.get_ref(3).map_err(failed)? {
        rusqlite::types::ValueRef::Null => None,
        v => Some(v.as_str().map_err(failed)?.into()),
    };
    Ok(StatusChange {
        machine_id: machine.clone(),
        status: JobStatus::parse(text(1)?).map_err(failed)?,
        previous: JobStatus::parse(text(2)?).map_err(failed)?,
        since: Timestamp::from_nanos(r.get(0).map_err(failed)?),
        reason,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> Ack {
        // Encoded here, on the caller's task (while the next batch goes through the pipeline
        // and the writer commits the last), so that the one writer thread only stores bytes.
        writer::append(|c| self.send(c), codec::encode_batch(&records))
    }

    fn append_status(&self, change: StatusChange) -> Ack {
        writer::append_status(|c| self.send(c), change)
    }

    fn write_alerts(&self, write: super::alerts::AlertWrite) -> Ack {
        writer::write_alerts(|c| self.send(c), write)
    }

    async fn alert_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(super::alerts::sqlite::rules).await
    }

    async fn alert_states(&self) -> Result<Vec<String>, StoreError> {
        self.read(super::alerts::sqlite::states).await
    }

    async fn alert_history(
        &self,
        q: super::alerts::HistoryQuery,
    ) -> Result<Vec<super::alerts::HistoryRow>, StoreError> {
        self.read(move |c| super::alerts::sqlite::history(c, &q))
            .await
    }

    async fn outbox(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<super::alerts::Notification>, StoreError> {
        let target = target.to_owned();
        self.read(move |c| super::alerts::sqlite::outbox(c, &target, limit))
            .await
    }

    async fn query(&self, q: DataQuery) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        let since = q.since.unwrap_or(Timestamp::MIN);
        let until = q.until.unwrap_or(Timestamp::MAX);
        if q.limit == 0 || since > until {
            return Ok(Vec::new());
        }
        let machine = q.machine_id.clone();
        self.read_merged(
            move |pending, compacted| {
                let mut newest = Newest::new(q.limit, since, until);
                for r in pending
                    .after(machine.as_ref(), compacted, since, until)
                    .map_err(failed)?
                {
                    newest.push(r);
                }
                Ok(newest)
            },
            move |conn, compacted, newest| {
                let mut newest = newest?;
                // Ids and times only: a machine's chunks come from its index unordered by
                // time, and SQLite would sort every row with its blob before the first one
                // (220 ms for 2M readings); sorted without them, the blobs are read one by
                // one, newest first, only while they may hold one of the newest records.
                let (sql, machine) = match &q.machine_id {
                    Some(m) => (
                        "SELECT machine_id, ts_max, id, ts_min FROM chunks
                         WHERE machine_id = ?3 AND ts_max >= ?1 AND ts_min <= ?2 AND seq_max <= ?4
                         ORDER BY ts_max DESC",
                        m.as_str().to_owned(),
                    ),
                    None => (
                        "SELECT machine_id, ts_max, id, ts_min FROM chunks
                         WHERE ts_max >= ?1 AND ts_min <= ?2 AND ?3 = ?3 AND seq_max <= ?4
                         ORDER BY ts_max DESC",
                        String::new(),
                    ),
                };
                let mut blob = conn
                    .prepare_cached("SELECT data FROM chunks WHERE id = ?1")
                    .map_err(failed)?;
                let mut stmt = conn.prepare_cached(sql).map_err(failed)?;
                let mut rows = stmt
                    .query(params![
                        since.as_nanos(),
                        until.as_nanos(),
                        machine,
                        compacted
                    ])
                    .map_err(failed)?;
                while let Some(row) = rows.next().map_err(failed)? {
                    if !newest.wants(Timestamp::from_nanos(row.get(1).map_err(failed)?)) {
                        break; // every later chunk is older than everything kept
                    }
                    let m: String = row.get(0).map_err(failed)?;
                    let id: i64 = row.get(2).map_err(failed)?;
                    let mut data = blob.query([id]).map_err(failed)?;
                    if let Some(d) = data.next().map_err(failed)? {
                        let d = d.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                        newest.add(&machine_id(&m)?, d).map_err(|e| {
                            let (from, to) = (row.get(3).unwrap_or(0), row.get(1).unwrap_or(0));
                            damaged_chunk(&m, from, to, e)
                        })?;
                    }
                }
                Ok(newest.finish())
            },
        )
        .await
    }

    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        self.read_merged(
            |pending, compacted| {
                // Arrival order: a machine's last pending record is its latest.
                let latest: BTreeMap<MachineId, Arc<ProcessedRecord>> = pending
                    .tails(compacted, 1)
                    .map_err(failed)?
                    .into_iter()
                    .filter_map(|(m, mut tail)| Some((m, Arc::new(tail.pop()?.record))))
                    .collect();
                Ok(latest)
            },
            |conn, compacted, latest| {
                let mut latest = latest?;
                // Each machine's last chunk by id from the index alone, then its blob: a
                // bare `data` column beside MAX() would read every chunk's blob.
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT c.machine_id, c.data FROM chunks c JOIN
                           (SELECT machine_id, MAX(seq_max) AS s FROM chunks WHERE seq_max <= ?1
                            GROUP BY machine_id) l
                         ON c.machine_id = l.machine_id AND c.seq_max = l.s",
                    )
                    .map_err(failed)?;
                let mut rows = stmt.query([compacted]).map_err(failed)?;
                while let Some(row) = rows.next().map_err(failed)? {
                    let m = machine_id(row.get_ref(0).map_err(failed)?.as_str().map_err(failed)?)?;
                    if latest.contains_key(&m) {
                        continue; // a pending record is newer than any chunk
                    }
                    let data = row.get_ref(1).map_err(failed)?.as_blob().map_err(failed)?;
                    let records = codec::decode(&m, data).map_err(failed)?;
                    if let Some(last) = records.into_iter().max_by_key(|r| r.seq) {
                        latest.insert(m, Arc::new(last.record));
                    }
                }
                Ok(latest.into_values().collect())
            },
        )
        .await
    }

    async fn series(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ValueSeries, StoreError> {
        let machine = machine_id.clone();
        let parameter = parameter.to_owned();
        let since = since.unwrap_or(Timestamp::MIN);
        let until = until.unwrap_or(Timestamp::MAX);
        let (wanted, name) = (machine.clone(), parameter.clone());
        self.read_merged(
            move |pending, compacted| {
                let mut points = Vec::new();
                pending
                    .values(&wanted, &name, compacted, since, until, &mut points)
                    .map_err(failed)?;
                Ok(points)
            },
            move |conn, compacted, points| {
                let mut points = points?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT data FROM chunks
                         WHERE machine_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3 AND seq_max <= ?4",
                    )
                    .map_err(failed)?;
                let mut rows = stmt
                    .query(params![
                        machine.as_str(),
                        since.as_nanos(),
                        until.as_nanos(),
                        compacted
                    ])
                    .map_err(failed)?;
                while let Some(row) = rows.next().map_err(failed)? {
                    let data = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                    codec::values_of(data, &parameter, since, until, &mut points)
                        .map_err(failed)?;
                }
                Ok(ValueSeries::from_points(points))
            },
        )
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
                    "SELECT machine_id, status, previous, since, reason FROM status_history
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

    async fn status_changes(
        &self,
        machine_id: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let machine = machine_id.clone();
        self.read(move |conn| {
            let mut out = Vec::new();
            let mut before = conn
                .prepare_cached(
                    "SELECT since, status, previous, reason FROM status_history
                     WHERE machine_id = ?1 AND since < ?2 ORDER BY since DESC, id DESC LIMIT 1",
                )
                .map_err(failed)?;
            let mut rows = before
                .query(params![machine.as_str(), since.as_nanos()])
                .map_err(failed)?;
            if let Some(r) = rows.next().map_err(failed)? {
                out.push(change_of(&machine, r)?);
            }
            let mut within = conn
                .prepare_cached(
                    "SELECT since, status, previous, reason FROM status_history
                     WHERE machine_id = ?1 AND since >= ?2 AND since <= ?3 ORDER BY since, id",
                )
                .map_err(failed)?;
            let mut rows = within
                .query(params![
                    machine.as_str(),
                    since.as_nanos(),
                    until.as_nanos()
                ])
                .map_err(failed)?;
            while let Some(r) = rows.next().map_err(failed)? {
                out.push(change_of(&machine, r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn status_totals(
        &self,
        machine_id: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ReasonTime<JobStatus>>, StoreError> {
        let machine = machine_id.clone();
        let (lo, hi) = (since.as_nanos(), until.as_nanos());
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(failed)?;
            let m = machine.as_str();
            let keys: Vec<(String, Option<String>)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT status, CASE WHEN has_reason THEN reason END FROM status_keys
                         WHERE machine_id = ?1",
                    )
                    .map_err(failed)?;
                let rows = stmt
                    .query_map(params![m], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(failed)?;
                rows.collect::<Result<_, _>>().map_err(failed)?
            };
            let mut out = Vec::with_capacity(keys.len() + 1);
            for (status, reason) in &keys {
                let r = reason.as_deref();
                let (upto, entered_upto) = key_sums(&tx, m, status, r, hi, true)?;
                let (before, _) = key_sums(&tx, m, status, r, lo, true)?;
                let (_, entered_before) = key_sums(&tx, m, status, r, lo, false)?;
                out.push(ReasonTime {
                    state: JobStatus::parse(status).map_err(failed)?,
                    reason: reason.as_deref().map(Into::into),
                    nanos: upto - before,
                    entered: (entered_upto - entered_before).max(0) as u64,
                });
            }
            // IDLE before the first change, which no row holds.
            let first: Option<i64> = tx
                .prepare_cached(
                    "SELECT since FROM status_history WHERE machine_id = ?1 ORDER BY since, id LIMIT 1",
                )
                .map_err(failed)?
                .query_row(params![m], |r| r.get(0))
                .optional()
                .map_err(failed)?;
            let idle_before = first.map_or(hi, |f| f.min(hi)) - lo;
            if idle_before > 0 {
                match out
                    .iter_mut()
                    .find(|r| r.state == JobStatus::Idle && r.reason.is_none())
                {
                    Some(r) => r.nanos += idle_before,
                    None => out.push(ReasonTime {
                        state: JobStatus::Idle,
                        reason: None,
                        nanos: idle_before,
                        entered: 0,
                    }),
                }
            }
            tx.finish().map_err(failed)?;
            Ok(out)
        })
        .await
    }

    async fn fingerprints_at(
        &self,
        wanted: &Wanted,
    ) -> Result<Vec<(MachineId, Fingerprint)>, StoreError> {
        let wanted = Arc::new(wanted.clone());
        let times = wanted.clone();
        let cache = self.prints.clone();
        self.read_merged(
            move |pending, compacted| {
                let mut found = Vec::new();
                for (machine, times) in times.iter() {
                    let (Some(lo), Some(hi)) = (times.first(), times.last()) else {
                        continue;
                    };
                    let records = pending
                        .after(Some(machine), compacted, *lo, *hi)
                        .map_err(failed)?;
                    found.extend(
                        records
                            .iter()
                            .filter(|r| times.binary_search(&r.record.timestamp).is_ok())
                            .map(|r| {
                                let fp = fingerprint(r.record.timestamp, &r.record.fields);
                                (machine.clone(), fp)
                            }),
                    );
                }
                Ok(found)
            },
            move |conn, compacted, found| {
                let mut found = found?;
                for (machine, times) in wanted.iter() {
                    chunk_prints(conn, compacted, machine, times, &cache, &mut found)?;
                }
                Ok(found)
            },
        )
        .await
    }

    async fn recovery(&self, per_machine: usize) -> Result<Recovery, StoreError> {
        self.read_merged(
            move |pending, compacted| {
                // Only each machine's last records: pending may hold a million of them.
                let tails = pending.tails(compacted, per_machine).map_err(failed)?;
                let tails = tails
                    .into_iter()
                    .collect::<BTreeMap<MachineId, Vec<StoredRecord>>>();
                Ok((tails, pending.newest(compacted)))
            },
            move |conn, compacted, taken| {
                let (mut records, pending_newest) = taken?;
                let mut newest: BTreeMap<MachineId, Timestamp> = BTreeMap::new();
                {
                    // The chunks_machine index covers ts_max: no chunk is read for this.
                    let mut stmt = conn
                        .prepare(
                            "SELECT machine_id, MAX(ts_max) FROM chunks WHERE seq_max <= ?1
                             GROUP BY machine_id",
                        )
                        .map_err(failed)?;
                    let mut rows = stmt.query([compacted]).map_err(failed)?;
                    while let Some(row) = rows.next().map_err(failed)? {
                        let m: String = row.get(0).map_err(failed)?;
                        newest.insert(
                            machine_id(&m)?,
                            Timestamp::from_nanos(row.get(1).map_err(failed)?),
                        );
                    }
                }
                for (m, ts) in pending_newest {
                    let slot = newest.entry(m).or_insert(ts);
                    *slot = (*slot).max(ts);
                }
                let machines: Vec<String> = {
                    let mut stmt = conn
                        .prepare("SELECT DISTINCT machine_id FROM chunks WHERE seq_max <= ?1")
                        .map_err(failed)?;
                    let rows = stmt.query_map([compacted], |r| r.get(0)).map_err(failed)?;
                    rows.collect::<Result<_, _>>().map_err(failed)?
                };
                let mut stmt = conn
                    .prepare(
                        "SELECT data FROM chunks WHERE machine_id = ?1 AND seq_max <= ?2
                         ORDER BY seq_max DESC",
                    )
                    .map_err(failed)?;
                for m in machines {
                    let id = machine_id(&m)?;
                    let mine = records.entry(id.clone()).or_default();
                    let mut rows = stmt.query(params![m, compacted]).map_err(failed)?;
                    while mine.len() < per_machine {
                        let Some(row) = rows.next().map_err(failed)? else {
                            break;
                        };
                        let data = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                        mine.extend(codec::decode(&id, data).map_err(failed)?);
                    }
                }
                let mut stmt = conn
                    .prepare(
                        "SELECT machine_id, status, previous, since, reason FROM status_history
                         WHERE id IN (SELECT MAX(id) FROM status_history GROUP BY machine_id)",
                    )
                    .map_err(failed)?;
                let rows = stmt.query_map([], status_row).map_err(failed)?;
                let statuses = rows
                    .map(|r| r.map_err(failed).and_then(to_change))
                    .collect::<Result<_, _>>()?;
                let records = records
                    .into_values()
                    .flat_map(|mine| codec::last_by_arrival(mine, per_machine))
                    .collect();
                Ok(Recovery {
                    records,
                    statuses,
                    newest: newest.into_iter().collect(),
                })
            },
        )
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

/// Adds to `found` the fingerprints of `machine`'s chunks (up to `compacted`) at `times`
/// (sorted): the chunk directory of their range (the chunks_machine index covers it), then
/// only the chunks that span one of the times, from `cache` when it holds them.
fn chunk_prints(
    conn: &Connection,
    compacted: i64,
    machine: &MachineId,
    times: &[Timestamp],
    cache: &Mutex<ChunkPrints>,
    found: &mut Vec<(MachineId, Fingerprint)>,
) -> Result<(), StoreError> {
    let (Some(lo), Some(hi)) = (times.first(), times.last()) else {
        return Ok(());
    };
    let mut spans = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, seq_max, ts_min, ts_max FROM chunks
                 WHERE machine_id = ?1 AND ts_max >= ?2 AND ts_min <= ?3 AND seq_max <= ?4",
            )
            .map_err(failed)?;
        let mut rows = stmt
            .query(params![
                machine.as_str(),
                lo.as_nanos(),
                hi.as_nanos(),
                compacted
            ])
            .map_err(failed)?;
        while let Some(row) = rows.next().map_err(failed)? {
            let key = (row.get(0).map_err(failed)?, row.get(1).map_err(failed)?);
            let ts_min = Timestamp::from_nanos(row.get(2).map_err(failed)?);
            let ts_max = Timestamp::from_nanos(row.get(3).map_err(failed)?);
            let from = times.partition_point(|t| *t < ts_min);
            let to = times.partition_point(|t| *t <= ts_max);
            if from < to {
                spans.push((key, from..to));
            }
        }
    }
    let mut stmt = conn
        .prepare_cached("SELECT data FROM chunks WHERE id = ?1")
        .map_err(failed)?;
    for (key, range) in spans {
        let held = cache.lock().unwrap_or_else(|e| e.into_inner()).get(key);
        let prints = match held {
            Some(p) => p,
            None => {
                let mut rows = stmt.query([key.0]).map_err(failed)?;
                let Some(row) = rows.next().map_err(failed)? else {
                    continue;
                };
                let data = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                let prints = codec::decode(machine, data)
                    .map_err(failed)?
                    .iter()
                    .map(|r| fingerprint(r.record.timestamp, &r.record.fields))
                    .collect();
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .put(key, prints)
            }
        };
        for t in &times[range] {
            found.extend(
                prints::at(&prints, t.as_nanos())
                    .iter()
                    .map(|fp| (machine.clone(), *fp)),
            );
        }
    }
    Ok(())
}

/// Counts of what a file holds, for logs and tests. Exact only while nothing compacts: it
/// reads the database, then the log files.
pub fn census(path: &Path) -> Result<HashMap<String, i64>, StoreError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(failed)?;
    let mut out = HashMap::new();
    let upto: i64 = conn
        .query_row("SELECT upto FROM compaction", [], |r| r.get(0))
        .map_err(failed)?;
    let mut in_files = 0;
    for entry in LogFile::recover(path, OnDamage::Refuse).map_err(failed)? {
        in_files += codec::decode_log(&entry)?
            .iter()
            .filter(|r| r.seq as i64 > upto)
            .count() as i64;
    }
    for (name, sql) in [
        (
            "records",
            // Chunks past `upto` belong to an unfinished compaction: their records are also
            // in the log.
            "SELECT (SELECT COALESCE(SUM(n), 0) FROM chunks
                     WHERE seq_max <= (SELECT upto FROM compaction))
                  + (SELECT COALESCE(SUM(n), 0) FROM log)",
        ),
        ("chunks", "SELECT COUNT(*) FROM chunks"),
        // Records in the log (table and files), not yet in chunks.
        ("logged", "SELECT COALESCE(SUM(n), 0) FROM log"),
        ("status_changes", "SELECT COUNT(*) FROM status_history"),
    ] {
        out.insert(
            name.to_owned(),
            conn.query_row(sql, [], |r| r.get(0)).map_err(failed)?,
        );
    }
    *out.entry("records".to_owned()).or_default() += in_files;
    let in_table = out.get("logged").copied().unwrap_or(0);
    out.insert("logged".to_owned(), in_table + in_files);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Field, ParamName, Value};

    fn record(machine: &str, ts: i64, x: f64) -> ProcessedRecord {
        ProcessedRecord {
            machine_id: MachineId::parse(machine).unwrap(),
            timestamp: Timestamp::from_nanos(ts),
            fields: smallvec::smallvec![Field {
                name: ParamName::parse("x").unwrap(),
                value: Value::Number(x),
            }],
            averages: smallvec::smallvec![x],
        }
    }

    /// The totals from the running sums equal the core's over the changes of the range.
    async fn check_totals(store: &SqliteStore, a: &MachineId, lo: i64, hi: i64) {
        use crate::core::states::{Step, time_in_state, times_from_reasons};
        let (lo, hi) = (Timestamp::from_nanos(lo), Timestamp::from_nanos(hi));
        let steps: Vec<Step<JobStatus>> = store
            .status_changes(a, lo, hi)
            .await
            .unwrap()
            .into_iter()
            .map(|c| Step {
                at: c.since.as_nanos(),
                state: c.status,
                reason: c.reason,
            })
            .collect();
        let want = time_in_state(JobStatus::Idle, &steps, lo.as_nanos(), hi.as_nanos(), None);
        let got = times_from_reasons(want.total, store.status_totals(a, lo, hi).await.unwrap());
        assert_eq!(got, want, "[{lo}, {hi}]");
    }

    /// A version 5 file's status history gets its running sums in the migration to 6: the
    /// totals from them equal the core's over the changes, and new changes continue them.
    #[tokio::test]
    async fn a_version_5_history_gets_running_sums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let mut at = 0i64;
        let mut cur = [JobStatus::Idle; 2];
        let mut rng = fastrand::Rng::with_seed(5);
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            for i in 0..200 {
                at += rng.i64(0..30) * 1_000_000_000;
                let k = usize::from(i % 3 == 0);
                let next = cur[k].allowed_next();
                let to = next[rng.usize(..next.len())];
                conn.execute(
                    "INSERT INTO status_history (machine_id, status, previous, since) VALUES (?1, ?2, ?3, ?4)",
                    params![["a", "b"][k], to.as_str(), cur[k].as_str(), at],
                )
                .unwrap();
                cur[k] = to;
            }
        }
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        let a = MachineId::parse("a").unwrap();
        for _ in 0..30 {
            let lo = rng.i64(-1_000_000_000_000..at);
            check_totals(&store, &a, lo, lo + rng.i64(1..at.max(2))).await;
        }
        let since = Timestamp::from_nanos(at + 5_000_000_000);
        let last = store.status_history(Some(&a), 1).await.unwrap()[0].status;
        let to = last.allowed_next()[0];
        store
            .append_status(StatusChange {
                machine_id: a.clone(),
                status: to,
                previous: last,
                since,
                reason: Some("after the migration".into()),
            })
            .await
            .unwrap();
        check_totals(&store, &a, 0, at + 60_000_000_000).await;
    }

    /// A file written before the log existed (schema 1, chunks only) is migrated: its records
    /// stay readable and new ones are numbered after them.
    #[tokio::test]
    async fn a_version_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let old = [record("m", 10, 1.0), record("m", 20, 2.0)];
            let rows = [(1, &old[0]), (2, &old[1])];
            let (_, data) = codec::chunks(&rows, 2).next().unwrap();
            conn.execute(
                "INSERT INTO chunks (machine_id, ts_min, ts_max, seq_min, seq_max, n, data)
                 VALUES ('m', 10, 20, 1, 2, 2, ?1)",
                params![data],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        store
            .append(vec![Arc::new(record("m", 15, 3.0))])
            .await
            .unwrap();
        let q = DataQuery {
            machine_id: None,
            since: None,
            until: None,
            limit: 10,
        };
        let got: Vec<(i64, f64)> = store
            .query(q)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.timestamp.as_nanos(), r.averages[0]))
            .collect();
        assert_eq!(got, vec![(10, 1.0), (15, 3.0), (20, 2.0)]);
        // The new record arrived last.
        let latest = store.latest().await.unwrap();
        assert_eq!(latest[0].timestamp.as_nanos(), 15);
        store.close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let seqs: (i64, i64) = conn
            .query_row("SELECT MIN(seq_min), MAX(seq_max) FROM chunks", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(seqs, (1, 3));
    }

    #[test]
    fn checkpoints_come_soon_only_while_a_large_wal_grows() {
        let at = 1000;
        assert_eq!(next_checkpoint(100, 50, at), CHECKPOINT_EVERY);
        assert_eq!(next_checkpoint(600, 400, at), CHECKPOINT_SOON);
        // Idle: the WAL keeps its size, copied or not.
        assert_eq!(next_checkpoint(600, 600, at), CHECKPOINT_EVERY);
        // Restarted by the writer: small again.
        assert_eq!(next_checkpoint(3, 1200, at), CHECKPOINT_EVERY);
        assert_eq!(next_checkpoint(1, 0, 0), CHECKPOINT_SOON);
        assert_eq!(next_checkpoint(0, 0, 0), CHECKPOINT_EVERY);
    }

    /// What a crash leaves (records only in the log) is in chunks after the next open.
    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused_before_reading_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // No compaction by age while the second open waits for the lock (as long as the
        // default age): `census` is only exact while nothing compacts.
        let compaction = Compaction {
            age: Duration::from_secs(3600),
            ..Compaction::default()
        };
        let store = SqliteStore::open_with(&path, Durability::Full, compaction).unwrap();
        store
            .append(vec![Arc::new(record("a", 1, 1.0))])
            .await
            .unwrap();
        let second = SqliteStore::open(&path, Durability::Full).err().unwrap();
        assert!(second.to_string().contains("another millwatch"), "{second}");
        // The refused store compacted nothing: the record is still in the log, once.
        let census_now = census(&path).unwrap();
        assert_eq!((census_now["records"], census_now["logged"]), (1, 1));
        store.close().await.unwrap();
        let census = census(&path).unwrap();
        assert_eq!((census["records"], census["chunks"]), (1, 1));
    }

    #[tokio::test]
    async fn the_log_of_a_crashed_run_is_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path, Durability::Full).unwrap());
        {
            // As the writer leaves a commit that no compaction followed, and the first slice
            // of a round that did not finish: `a` is in the log and in a chunk past `upto`.
            let conn = Connection::open(&path).unwrap();
            let (a, b) = (record("a", 5, 1.0), record("b", 6, 2.0));
            let mut batch = codec::encode_log([
                (&a.machine_id, &[(0, &a)][..]),
                (&b.machine_id, &[(1, &b)][..]),
            ]);
            batch.set_base(1);
            conn.execute(
                "INSERT INTO log (n, data) VALUES (2, ?1)",
                params![batch.entries[0].data],
            )
            .unwrap();
            let mut insert = conn.prepare_cached(INSERT_CHUNK).unwrap();
            insert_chunks(&mut insert, "a", &[(1, &a)]).unwrap();
            assert_eq!(census(&path).unwrap()["records"], 2);
        }
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        let recovery = store.recovery(10).await.unwrap();
        assert_eq!(recovery.records.len(), 2);
        let census = census(&path).unwrap();
        assert_eq!((census["records"], census["chunks"]), (2, 2));
        store
            .append(vec![Arc::new(record("a", 7, 3.0))])
            .await
            .unwrap();
        let series = store
            .series(&MachineId::parse("a").unwrap(), "x", None, None)
            .await
            .unwrap();
        assert_eq!(series.values, vec![1.0, 3.0]);
        store.close().await.unwrap();
    }
}
