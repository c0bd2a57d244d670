//! The store for a plant that outgrew one box: PostgreSQL, with the same promises as SQLite.
//!
//! One writer task takes every command waiting in its queue, writes them in one transaction
//! (group commit) and acknowledges each only after the commit. Connections come from a pool;
//! when the server goes away, writes and reads fail fast with [`StoreError::Unavailable`]
//! (503 at the API) and the pool reconnects as soon as the server is back. A failed
//! transaction is rolled back whole, so nothing half-written remains.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use super::codec::{self, Newest, StoredRecord, machine_id};
use super::writer::{self, Command};
use super::{Ack, DataQuery, Recovery, Store, StoreError, ValueSeries, pg_public};
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::status::{JobStatus, StatusChange};
use crate::timestamp::Timestamp;

/// The schema version this build writes; a database with a higher one is refused.
pub const SCHEMA_VERSION: i32 = 6;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE chunks (
        id BIGSERIAL PRIMARY KEY,
        machine_id TEXT NOT NULL,
        ts_min BIGINT NOT NULL,
        ts_max BIGINT NOT NULL,
        seq_min BIGINT NOT NULL,
        seq_max BIGINT NOT NULL,
        n INTEGER NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE INDEX chunks_machine_ts ON chunks (machine_id, ts_max);
    CREATE INDEX chunks_ts ON chunks (ts_max);
    CREATE INDEX chunks_machine_seq ON chunks (machine_id, seq_max);
    CREATE TABLE status_history (
        id BIGSERIAL PRIMARY KEY,
        machine_id TEXT NOT NULL,
        status TEXT NOT NULL,
        previous TEXT NOT NULL,
        since BIGINT NOT NULL
    );
    CREATE INDEX status_history_machine ON status_history (machine_id, id);",
    // 1 -> 2: a status change keeps its reason; time in state reads one machine's changes
    // by time.
    "ALTER TABLE status_history ADD COLUMN reason TEXT;
    CREATE INDEX status_history_machine_since ON status_history (machine_id, since, id);",
    // 2 -> 3: alerts (SPEC §7): API rules and alert states; 3 -> 4: history and outbox.
    super::alerts::TABLES,
    super::alerts::postgres::MIGRATION,
    // 4 -> 5: the public relations of SPEC §10 (readings, samples, status_history).
    super::pg_public::MIGRATION,
    // 5 -> 6: the samples index covers value and moving average.
    super::pg_public::COVERING_INDEX,
];

/// The migration that makes the public relations of SPEC §10, which then fills them.
const PUBLIC_RELATIONS_FROM: usize = 4;

/// How long a request waits for a connection before it is told the store is unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETENTION_STEP: i64 = 500;

/// PostgreSQL behind a pool, with a group-commit writer task.
pub struct PostgresStore {
    pool: Pool,
    commands: mpsc::UnboundedSender<Command>,
}

// The whole source chain: deadpool's and tokio-postgres's outer messages ("error connecting
// to server") say nothing of the cause ("Connection refused") on their own.
fn unavailable(e: impl std::error::Error + 'static) -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL: {}; is the server running and the URL's host, port, user and database right?",
        crate::chain::chain(&e)
    ))
}

/// A failure beneath the store with its whole source chain, classified (damaged data, other).
fn failed(e: impl std::error::Error + 'static) -> StoreError {
    let chained = crate::chain::chain(&e);
    match StoreError::classify(e) {
        StoreError::Failed(_) => StoreError::Failed(chained),
        classified => classified,
    }
}

/// Maps a database error: lost connections are worth a retry, a full disk and corrupted data
/// are named, the rest is a failure.
pub(crate) fn db_error(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        _ if e.is_closed() || e.as_db_error().is_none() => unavailable(e),
        Some(c) if *c == SqlState::DISK_FULL => StoreError::DiskFull(crate::chain::chain(&e)),
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            StoreError::Damaged(crate::chain::chain(&e))
        }
        _ => failed(e),
    }
}

impl PostgresStore {
    /// Connects, migrates the schema, and starts the writer.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Failed(format!(
                "{:?} is not a PostgreSQL URL: {e}",
                super::redact_url(url)
            ))
        })?;
        // libpq reads PGPASSWORD by itself; tokio-postgres does not. Taken only when the URL
        // has no password, so that it never has to be written where `ps` shows it.
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("millwatch");
        }
        // Everything lives in the schema `millwatch` (SPEC §10) unless the URL sets a
        // search_path of its own (several installations, or tests, in one database).
        let own_schema = !config
            .get_options()
            .is_some_and(|o| o.contains("search_path"));
        if own_schema {
            let options = match config.get_options() {
                Some(o) => format!("{o} -csearch_path={}", pg_public::SCHEMA),
                None => format!("-csearch_path={}", pg_public::SCHEMA),
            };
            config.options(&options);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(failed)?;
        let mut client = pool.get().await.map_err(unavailable)?;
        if own_schema {
            move_into_schema(&mut client).await?;
        }
        migrate(&mut client).await?;
        let next_seq: i64 = client
            .query_one("SELECT COALESCE(MAX(seq_max), 0) + 1 FROM chunks", &[])
            .await
            .map_err(db_error)?
            .get(0);
        drop(client);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(
            Writer {
                pool: pool.clone(),
                next_seq: next_seq as u64,
                partitions: pg_public::Partitions::default(),
            }
            .run(rx),
        );
        Ok(PostgresStore { pool, commands: tx })
    }

    fn send(&self, cmd: Command) -> Result<(), StoreError> {
        self.commands
            .send(cmd)
            .map_err(|_| StoreError::Failed("the PostgreSQL writer has stopped".into()))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS millwatch_schema (version INTEGER NOT NULL)")
        .await
        .map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    // One millwatch migrates at a time.
    tx.batch_execute("LOCK TABLE millwatch_schema IN EXCLUSIVE MODE")
        .await
        .map_err(db_error)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM millwatch_schema", &[])
        .await
        .map_err(db_error)?
        .map_or(0, |r| r.get(0));
    if version > SCHEMA_VERSION {
        return Err(StoreError::Failed(format!(
            "the database has schema version {version}, written by a newer millwatch; this one knows up to {SCHEMA_VERSION}"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        if from == PUBLIC_RELATIONS_FROM {
            backfill_public(&tx).await?;
        }
    }
    if version < SCHEMA_VERSION {
        tx.execute("DELETE FROM millwatch_schema", &[])
            .await
            .map_err(db_error)?;
        tx.execute(
            "INSERT INTO millwatch_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version = SCHEMA_VERSION, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(db_error)
}

/// Moves the tables of a 0.1 database (made in the search_path's schema, `public` by default)
/// into the schema `millwatch`, once, before migrating: with it the relations of SPEC §10
/// are where the contract says.
async fn move_into_schema(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    // One millwatch at a time, even before any table exists to lock.
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(7301842551);
         CREATE SCHEMA IF NOT EXISTS {}",
        pg_public::SCHEMA
    ))
    .await
    .map_err(db_error)?;
    let old: bool = tx
        .query_one(
            "SELECT to_regclass('public.millwatch_schema') IS NOT NULL
                AND to_regclass($1 || '.millwatch_schema') IS NULL",
            &[&pg_public::SCHEMA],
        )
        .await
        .map_err(db_error)?
        .get(0);
    if old {
        for table in ["chunks", "status_history", "millwatch_schema"] {
            tx.batch_execute(&format!(
                "ALTER TABLE IF EXISTS public.{table} SET SCHEMA {}",
                pg_public::SCHEMA
            ))
            .await
            .map_err(db_error)?;
        }
        tracing::info!(
            schema = pg_public::SCHEMA,
            "PostgreSQL tables of 0.1 moved into their schema"
        );
    }
    tx.commit().await.map_err(db_error)
}

/// Fills the public relations from the chunks of a database made before them, a page of
/// chunks at a time, inside the migration's transaction.
async fn backfill_public(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let mut partitions = pg_public::Partitions::default();
    let mut after = 0i64;
    let mut moved = 0usize;
    loop {
        let rows = tx
            .query(
                "SELECT id, machine_id, data FROM chunks WHERE id > $1 ORDER BY id LIMIT 64",
                &[&after],
            )
            .await
            .map_err(db_error)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.get(0);
        let mut records = Vec::new();
        for row in &rows {
            for s in codec::decode(&machine_id(row.get(1))?, row.get(2)).map_err(failed)? {
                records.push((s.seq, Arc::new(s.record)));
            }
        }
        partitions
            .ensure(tx, records.iter().map(|(_, r)| r.timestamp))
            .await
            .map_err(db_error)?;
        let numbered: Vec<_> = records.iter().map(|(seq, r)| (*seq, r)).collect();
        pg_public::insert(tx, &numbered).await.map_err(db_error)?;
        moved += records.len();
    }
    if moved > 0 {
        tracing::info!(
            records = moved,
            "PostgreSQL: readings and samples filled from the chunks"
        );
    }
    Ok(())
}

struct Writer {
    pool: Pool,
    next_seq: u64,
    partitions: pg_public::Partitions,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.recv().await {
            let group = writer::gather(first, || rx.try_recv().ok());
            let seq_before = self.next_seq;
            let result = self.write(&group).await;
            if result.is_err() {
                self.next_seq = seq_before;
            }
            if writer::answer(group, &result) {
                break;
            }
        }
    }

    async fn write(&mut self, group: &[Command]) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let per_machine = writer::per_machine(group, &mut self.next_seq);
        let times: Vec<Timestamp> = per_machine
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|(_, r)| r.timestamp))
            .collect();
        self.partitions
            .ensure(&**client, times.into_iter())
            .await
            .map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        if !per_machine.is_empty() {
            // One multi-row INSERT per commit: chunks are few (one per machine), so this is
            // as fast as COPY here and simpler.
            let mut machines = Vec::new();
            let mut ts_min = Vec::new();
            let mut ts_max = Vec::new();
            let mut seq_min = Vec::new();
            let mut seq_max = Vec::new();
            let mut n = Vec::new();
            let mut data = Vec::new();
            for (machine, rows) in &per_machine {
                for (piece, chunk) in codec::chunks(rows, usize::MAX) {
                    machines.push(machine.as_str());
                    let (lo, hi, first, last) = writer::bounds(piece);
                    ts_min.push(lo.as_nanos());
                    ts_max.push(hi.as_nanos());
                    seq_min.push(first as i64);
                    seq_max.push(last as i64);
                    n.push(piece.len() as i32);
                    data.push(chunk);
                }
            }
            tx.execute(
                "INSERT INTO chunks (machine_id, ts_min, ts_max, seq_min, seq_max, n, data)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bytea[])",
                &[&machines, &ts_min, &ts_max, &seq_min, &seq_max, &n, &data],
            )
            .await
            .map_err(db_error)?;
            let numbered: Vec<_> = per_machine
                .iter()
                .flat_map(|(_, rows)| rows.iter().copied())
                .collect();
            pg_public::insert(&tx, &numbered).await.map_err(db_error)?;
        }
        let mut deleted = 0;
        for cmd in group {
            match cmd {
                Command::Status(c, _) => {
                    tx.execute(
                        "INSERT INTO status_log (machine_id, status, previous, since, reason) VALUES ($1, $2, $3, $4, $5)",
                        &[&c.machine_id.as_str(), &c.status.as_str(), &c.previous.as_str(), &c.since.as_nanos(), &c.reason.as_deref()],
                    )
                    .await
                    .map_err(db_error)?;
                }
                Command::Alerts(w, _) => super::alerts::postgres::apply(&tx, w).await?,
                Command::Retain(cutoff, _) => {
                    deleted += tx
                        .execute(
                            "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE ts_max < $1 LIMIT $2)",
                            &[&cutoff.as_nanos(), &RETENTION_STEP],
                        )
                        .await
                        .map_err(db_error)? as usize;
                }
                Command::Append(..) | Command::Close(_) => {}
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }
}

fn to_change(r: &tokio_postgres::Row) -> Result<StatusChange, StoreError> {
    Ok(StatusChange {
        machine_id: machine_id(r.get(0))?,
        status: JobStatus::parse(r.get(1)).map_err(StoreError::Failed)?,
        previous: JobStatus::parse(r.get(2)).map_err(StoreError::Failed)?,
        since: Timestamp::from_nanos(r.get(3)),
        reason: r.get::<_, Option<&str>>(4).map(Into::into),
    })
}

/// Chunks per round trip of a `GET /data` or recovery read, newest first.
const QUERY_PAGE: i64 = 8;

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> Ack {
        writer::append(|c| self.send(c), records)
    }

    fn append_status(&self, change: StatusChange) -> Ack {
        writer::append_status(|c| self.send(c), change)
    }

    fn write_alerts(&self, write: super::alerts::AlertWrite) -> Ack {
        writer::write_alerts(|c| self.send(c), write)
    }

    async fn alert_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        super::alerts::postgres::rules(&*self.client().await?).await
    }

    async fn alert_states(&self) -> Result<Vec<String>, StoreError> {
        super::alerts::postgres::states(&*self.client().await?).await
    }

    async fn alert_history(
        &self,
        q: super::alerts::HistoryQuery,
    ) -> Result<Vec<super::alerts::HistoryRow>, StoreError> {
        super::alerts::postgres::history(&*self.client().await?, &q).await
    }

    async fn outbox(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<super::alerts::Notification>, StoreError> {
        super::alerts::postgres::outbox(&*self.client().await?, target, limit).await
    }

    async fn query(&self, q: DataQuery) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        let since = q.since.unwrap_or(Timestamp::MIN);
        let until = q.until.unwrap_or(Timestamp::MAX);
        if q.limit == 0 || since > until {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let machine = q.machine_id.as_ref().map(|m| m.as_str());
        // Newest chunks first, a few at a time, while they may hold one of the newest
        // records: the cost follows the answer, not the history.
        let mut newest = Newest::new(q.limit, since, until);
        // Keyset pages: chunks stored meanwhile never shift what the next page holds.
        let mut after = (i64::MAX, i64::MAX);
        'pages: loop {
            let rows = client
                .query(
                    "SELECT machine_id, ts_max, data, id FROM chunks
                     WHERE ($3::text IS NULL OR machine_id = $3) AND ts_max >= $1 AND ts_min <= $2
                       AND (ts_max, id) < ($4, $5)
                     ORDER BY ts_max DESC, id DESC LIMIT $6",
                    &[
                        &since.as_nanos(),
                        &until.as_nanos(),
                        &machine,
                        &after.0,
                        &after.1,
                        &QUERY_PAGE,
                    ],
                )
                .await
                .map_err(db_error)?;
            let last_page = (rows.len() as i64) < QUERY_PAGE;
            for row in rows {
                if !newest.wants(Timestamp::from_nanos(row.get(1))) {
                    break 'pages;
                }
                newest
                    .add(&machine_id(row.get(0))?, row.get(2))
                    .map_err(failed)?;
                after = (row.get(1), row.get(3));
            }
            if last_page {
                break;
            }
        }
        Ok(newest.finish())
    }

    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (machine_id) machine_id, data FROM chunks ORDER BY machine_id, seq_max DESC",
                &[],
            )
            .await
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            let records = codec::decode(&machine_id(row.get(0))?, row.get(1)).map_err(failed)?;
            if let Some(last) = records.into_iter().max_by_key(|r| r.seq) {
                out.push(Arc::new(last.record));
            }
        }
        Ok(out)
    }

    async fn series(
        &self,
        machine: &MachineId,
        parameter: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ValueSeries, StoreError> {
        let since = since.unwrap_or(Timestamp::MIN);
        let until = until.unwrap_or(Timestamp::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT data FROM chunks WHERE machine_id = $1 AND ts_max >= $2 AND ts_min <= $3",
                &[&machine.as_str(), &since.as_nanos(), &until.as_nanos()],
            )
            .await
            .map_err(db_error)?;
        let mut points = Vec::new();
        for row in rows {
            codec::values_of(row.get(0), parameter, since, until, &mut points).map_err(failed)?;
        }
        Ok(ValueSeries::from_points(points))
    }

    async fn status_history(
        &self,
        machine: Option<&MachineId>,
        limit: usize,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let client = self.client().await?;
        let machine = machine.map(|m| m.as_str());
        let rows = client
            .query(
                "SELECT machine_id, status, previous, since, reason FROM status_log
                 WHERE ($1::text IS NULL OR machine_id = $1) ORDER BY id DESC LIMIT $2",
                &[&machine, &(limit as i64)],
            )
            .await
            .map_err(db_error)?;
        let mut out = rows.iter().map(to_change).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    async fn status_changes(
        &self,
        machine: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let client = self.client().await?;
        let before = client
            .query_opt(
                "SELECT machine_id, status, previous, since, reason FROM status_log
                 WHERE machine_id = $1 AND since < $2 ORDER BY since DESC, id DESC LIMIT 1",
                &[&machine.as_str(), &since.as_nanos()],
            )
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                "SELECT machine_id, status, previous, since, reason FROM status_log
                 WHERE machine_id = $1 AND since >= $2 AND since <= $3 ORDER BY since, id",
                &[&machine.as_str(), &since.as_nanos(), &until.as_nanos()],
            )
            .await
            .map_err(db_error)?;
        before.iter().chain(&rows).map(to_change).collect()
    }

    async fn recovery(&self, per_machine: usize) -> Result<Recovery, StoreError> {
        let client = self.client().await?;
        let machines = client
            .query("SELECT DISTINCT machine_id FROM chunks", &[])
            .await
            .map_err(db_error)?;
        let mut records = Vec::new();
        for m in machines {
            let m: &str = m.get(0);
            let id = machine_id(m)?;
            // The newest chunks in keyset pages, only until they hold enough records: not
            // every blob of the machine's history.
            let mut mine: Vec<StoredRecord> = Vec::new();
            let mut before = i64::MAX;
            while mine.len() < per_machine {
                let rows = client
                    .query(
                        "SELECT data, seq_max FROM chunks WHERE machine_id = $1 AND seq_max < $2
                         ORDER BY seq_max DESC LIMIT $3",
                        &[&m, &before, &QUERY_PAGE],
                    )
                    .await
                    .map_err(db_error)?;
                let last_page = (rows.len() as i64) < QUERY_PAGE;
                for row in rows {
                    mine.extend(codec::decode(&id, row.get(0)).map_err(failed)?);
                    before = row.get(1);
                    if mine.len() >= per_machine {
                        break;
                    }
                }
                if last_page {
                    break;
                }
            }
            records.extend(codec::last_by_arrival(mine, per_machine));
        }
        let rows = client
            .query(
                "SELECT machine_id, status, previous, since, reason FROM status_log
                 WHERE id IN (SELECT MAX(id) FROM status_log GROUP BY machine_id)",
                &[],
            )
            .await
            .map_err(db_error)?;
        let statuses = rows.iter().map(to_change).collect::<Result<_, _>>()?;
        // The chunks_machine_ts index gives each machine's largest ts_max.
        let rows = client
            .query(
                "SELECT machine_id, MAX(ts_max) FROM chunks GROUP BY machine_id",
                &[],
            )
            .await
            .map_err(db_error)?;
        let newest = rows
            .iter()
            .map(|r| Ok((machine_id(r.get(0))?, Timestamp::from_nanos(r.get(1)))))
            .collect::<Result<_, StoreError>>()?;
        Ok(Recovery {
            records,
            statuses,
            newest,
        })
    }

    async fn retain(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let chunks = writer::retain(|c| self.send(c), cutoff).await?;
        let client = self.client().await?;
        let partitions = pg_public::drop_before(&client, cutoff)
            .await
            .map_err(db_error)?;
        Ok(chunks + partitions)
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Close(tx))?;
        rx.await.map_err(failed)
    }
}
