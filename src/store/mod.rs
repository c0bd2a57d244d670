//! Where processed records and status changes are kept. Every store implements [`Store`]; the
//! rest of the program knows only the trait.
//!
//! Ordering and durability are split on purpose: [`Store::append`] fixes the order of a batch
//! the moment it is called (the caller holds the pipeline lock then, so the store sees batches
//! in pipeline order), and the returned [`Ack`] resolves once the batch is durable. That lets
//! many concurrent requests share one commit (group commit) without reordering anything.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::dedup::{Fingerprint, Wanted, fingerprint};
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::status::StatusChange;
use crate::timestamp::Timestamp;

pub mod alerts;
pub mod codec;
mod logfile;
pub use logfile::OnDamage;
pub mod memory;
mod pending;
mod pg_public;
pub mod postgres;
mod prints;
pub mod sqlite;
mod writer;

/// Resolves once what was handed to the store is durable (or failed to be).
pub type Ack = BoxFuture<'static, Result<(), StoreError>>;

/// What went wrong in a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (a database restarting); worth retrying later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the database's) is full: nothing more can be stored until space is freed.
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// Stored data cannot be read back as written: what was lost is named.
    #[error("stored data is damaged: {0}")]
    Damaged(String),
    /// Anything else.
    #[error("store error: {0}")]
    Failed(String),
}

impl StoreError {
    /// Classifies an error from beneath a store by its type, so that a full disk and damaged
    /// data are told apart from other failures wherever they arise: an I/O error `ENOSPC`,
    /// SQLite's `SQLITE_FULL`, `SQLITE_CORRUPT` and `SQLITE_NOTADB`, a chunk or log entry that
    /// does not decode. Anything else (a message already formatted, say) is [`StoreError::Failed`].
    pub(crate) fn classify<E: std::fmt::Display + 'static>(e: E) -> StoreError {
        let any = &e as &dyn std::any::Any;
        let message = e.to_string();
        if let Some(io) = any.downcast_ref::<std::io::Error>() {
            if is_disk_full(io) {
                return StoreError::DiskFull(message);
            }
        } else if let Some(rusqlite::Error::SqliteFailure(f, _)) =
            any.downcast_ref::<rusqlite::Error>()
        {
            use rusqlite::ErrorCode;
            match f.code {
                ErrorCode::DiskFull => return StoreError::DiskFull(message),
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    return StoreError::Damaged(message);
                }
                _ => {}
            }
        } else if any.downcast_ref::<codec::CodecError>().is_some() {
            return StoreError::Damaged(message);
        } else if let Some(classified) = any.downcast_ref::<StoreError>() {
            return classified.clone();
        }
        StoreError::Failed(message)
    }
}

/// Whether an I/O error says the device has no space left.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Which records `GET /data` wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataQuery {
    /// Only this machine.
    pub machine_id: Option<MachineId>,
    /// From this time on (inclusive).
    pub since: Option<Timestamp>,
    /// Up to this time (inclusive).
    pub until: Option<Timestamp>,
    /// At most this many: the newest ones, returned oldest first.
    pub limit: usize,
}

/// A parameter's numeric values over time, for analytics: parallel arrays, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueSeries {
    /// When each value was taken.
    pub timestamps: Vec<Timestamp>,
    /// The values.
    pub values: Vec<f64>,
}

impl ValueSeries {
    /// Orders (time, arrival, value) points by time, ties by arrival, and splits them.
    pub fn from_points(mut points: Vec<(Timestamp, u64, f64)>) -> Self {
        // The stable sort, as it merges runs: points come as a few runs already in order
        // (the chunks read, then the pending records after them), which an unstable sort
        // would sort from scratch, 1M points in tens of milliseconds.
        points.sort_by_key(|(ts, seq, _)| (*ts, *seq));
        ValueSeries {
            timestamps: points.iter().map(|p| p.0).collect(),
            values: points.iter().map(|p| p.2).collect(),
        }
    }
}

/// How far back [`Store::last_value_before`] looks: a year.
pub const LOOKBACK: i64 = 366 * 24 * 3_600_000_000_000;

/// A place to keep records and status changes.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes a batch, all or nothing, in the order of calls; the `Ack` says when it is durable.
    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> Ack;

    /// Takes a status change; the `Ack` says when it is durable.
    fn append_status(&self, change: StatusChange) -> Ack;

    /// Records matching `q`, oldest first by time (ties in arrival order).
    async fn query(&self, q: DataQuery) -> Result<Vec<Arc<ProcessedRecord>>, StoreError>;

    /// The latest record (last arrived) of each machine, sorted by machine id.
    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, StoreError>;

    /// The numeric values of one parameter of one machine within the bounds (inclusive).
    async fn series(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ValueSeries, StoreError>;

    /// Status changes, oldest first; at most `limit`, the newest ones.
    async fn status_history(
        &self,
        machine_id: Option<&MachineId>,
        limit: usize,
    ) -> Result<Vec<StatusChange>, StoreError>;

    /// One machine's status changes with `since` in `[since, until]` (inclusive), oldest
    /// first, preceded by the last change before `since` if there is one: all that time in
    /// state over the range needs, read from the range alone. The default reads the whole
    /// history (for wrappers and tests); every store overrides it with a range read.
    async fn status_changes(
        &self,
        machine_id: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let all = self.status_history(Some(machine_id), usize::MAX).await?;
        let first = all.partition_point(|c| c.since < since);
        let last = all.partition_point(|c| c.since <= until);
        Ok(all[first.saturating_sub(1)..last.max(first.saturating_sub(1))].to_vec())
    }

    /// The time and entries of one machine's job status per (status, reason) over
    /// `[since, until]` (`since < until`), IDLE before its first change included: what
    /// `/states` and `/oee` without a timeline or buckets need. The default computes it from
    /// [`Store::status_changes`]; the SQLite store answers from running sums it keeps with
    /// each change, in a few lookups per (status, reason) however long the range.
    async fn status_totals(
        &self,
        machine_id: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<crate::core::states::ReasonTime<crate::status::JobStatus>>, StoreError> {
        use crate::core::states::{Step, time_in_state};
        let steps: Vec<Step<crate::status::JobStatus>> = self
            .status_changes(machine_id, since, until)
            .await?
            .into_iter()
            .map(|c| Step {
                at: c.since.as_nanos(),
                state: c.status,
                reason: c.reason,
            })
            .collect();
        let times = time_in_state(
            crate::status::JobStatus::Idle,
            &steps,
            since.as_nanos(),
            until.as_nanos(),
            None,
        );
        Ok(times.reasons)
    }

    /// The last value of a numeric parameter of one machine before `before` (exclusive):
    /// the base a counter's first rise in a range is measured from. Looks back in growing
    /// windows, up to [`LOOKBACK`]; a store with a faster way overrides it.
    async fn last_value_before(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        before: Timestamp,
    ) -> Result<Option<(Timestamp, f64)>, StoreError> {
        const HOUR: i64 = 3_600_000_000_000;
        let Some(upto) = before.as_nanos().checked_sub(1) else {
            return Ok(None);
        };
        let mut from = upto;
        for window in [HOUR, 24 * HOUR, 30 * 24 * HOUR, LOOKBACK] {
            let lo = upto.saturating_sub(window);
            let s = self
                .series(
                    machine_id,
                    parameter,
                    Some(Timestamp::from_nanos(lo)),
                    Some(Timestamp::from_nanos(from)),
                )
                .await?;
            if let (Some(t), Some(v)) = (s.timestamps.last(), s.values.last()) {
                return Ok(Some((*t, *v)));
            }
            // The next window reads only what this one did not.
            from = lo.saturating_sub(1);
        }
        Ok(None)
    }

    /// The values of one state parameter of one machine within the bounds (inclusive),
    /// oldest first (ties in arrival order): what time in state of a reported state reads.
    async fn state_values(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(Timestamp, compact_str::CompactString)>, StoreError> {
        let records = self
            .query(DataQuery {
                machine_id: Some(machine_id.clone()),
                since: Some(since),
                until: Some(until),
                limit: usize::MAX,
            })
            .await?;
        Ok(records
            .iter()
            .filter_map(|r| match r.get(parameter) {
                Some(crate::reading::Value::State(v)) => Some((r.timestamp, v.clone())),
                _ => None,
            })
            .collect())
    }

    /// The fingerprints ([`crate::dedup::fingerprint`]) of the records of each machine of
    /// `wanted` taken at one of its times, in any order: what recognising older readings as
    /// duplicates looks up (SPEC §2), a whole batch in one call. The default reads each run
    /// of nearby times as one range query; the SQLite store reads, in one snapshot, only the
    /// chunks that hold one of the times, and keeps the fingerprints of the last chunks read.
    async fn fingerprints_at(
        &self,
        wanted: &Wanted,
    ) -> Result<Vec<(MachineId, Fingerprint)>, StoreError> {
        let mut out = Vec::new();
        for (machine, times) in wanted {
            for run in runs(times) {
                let (Some(lo), Some(hi)) = (run.first(), run.last()) else {
                    continue;
                };
                let found = self
                    .query(DataQuery {
                        machine_id: Some(machine.clone()),
                        since: Some(*lo),
                        until: Some(*hi),
                        limit: usize::MAX,
                    })
                    .await?;
                out.extend(
                    found
                        .iter()
                        .filter(|r| run.binary_search(&r.timestamp).is_ok())
                        .map(|r| (machine.clone(), fingerprint(r.timestamp, &r.fields))),
                );
            }
        }
        Ok(out)
    }

    /// What a restarted service needs: for each machine, its last `per_machine` records in
    /// arrival order (oldest first), its newest timestamp, and every machine's last status
    /// change.
    async fn recovery(&self, per_machine: usize) -> Result<Recovery, StoreError>;

    /// Deletes records older than `cutoff`, in small steps; returns how many units (records
    /// or chunks) went.
    async fn retain(&self, cutoff: Timestamp) -> Result<usize, StoreError>;

    /// Stores alert bookkeeping (API rules, alert states, history, outbox) in one
    /// transaction, in the order of calls; the `Ack` says when it is durable. A store that
    /// keeps no alerts refuses it.
    fn write_alerts(&self, write: alerts::AlertWrite) -> Ack {
        drop(write);
        Box::pin(futures::future::ready(Err(StoreError::Failed(
            "this store keeps no alerts".into(),
        ))))
    }

    /// The rules stored through the API: (name, JSON), by name.
    async fn alert_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// The JSON of every pending or firing alert, as last written.
    async fn alert_states(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Past firings, oldest first (the newest `limit`).
    async fn alert_history(
        &self,
        _q: alerts::HistoryQuery,
    ) -> Result<Vec<alerts::HistoryRow>, StoreError> {
        Ok(Vec::new())
    }

    /// The oldest `limit` notifications waiting for `target`, oldest first.
    async fn outbox(
        &self,
        _target: &str,
        _limit: usize,
    ) -> Result<Vec<alerts::Notification>, StoreError> {
        Ok(Vec::new())
    }

    /// Makes everything handed over durable and stops background work.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How far apart two looked-up times may be and still be read by one range query: a replay
/// of a stretch of history reads it once, scattered old readings read a little each.
const RUN_GAP: i64 = 3_600_000_000_000;

/// Splits sorted times into runs whose neighbours are at most [`RUN_GAP`] apart.
pub(crate) fn runs(timestamps: &[Timestamp]) -> impl Iterator<Item = &[Timestamp]> {
    timestamps.chunk_by(|a, b| b.as_nanos().saturating_sub(a.as_nanos()) <= RUN_GAP)
}

/// A store as named by `--store` (SPEC §3). Shown (Display and Debug) with any password
/// of a PostgreSQL URL replaced by `***`, so that it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Kept in memory, lost at exit.
    Memory,
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl StoreSpec {
    /// Reads `memory`, `sqlite:PATH` or `postgres://…`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite: needs a file name, as in sqlite:millwatch.db".into());
            }
            Ok(StoreSpec::Sqlite(path.into()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreSpec::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a store: use sqlite:FILE, memory or postgres://…"
            ))
        }
    }

    /// The spec as it may be logged: a PostgreSQL URL's password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreSpec::Memory => "memory".into(),
            StoreSpec::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreSpec::Postgres(url) => redact_url(url),
        }
    }

    /// Opens the store; a SQLite log damaged in the middle refuses the start.
    pub async fn open(&self, durability: sqlite::Durability) -> Result<Arc<dyn Store>, StoreError> {
        self.open_on_damage(durability, OnDamage::Refuse).await
    }

    /// Opens the store, doing with a SQLite log damaged in the middle what `on_damage` says
    /// (the other stores have no log of their own).
    pub async fn open_on_damage(
        &self,
        durability: sqlite::Durability,
        on_damage: OnDamage,
    ) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            StoreSpec::Memory => Ok(Arc::new(memory::MemoryStore::new())),
            StoreSpec::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open_on_damage(
                path, durability, on_damage,
            )?)),
            StoreSpec::Postgres(url) => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreSpec({:?})", self.redacted())
    }
}

/// A URL as it may be logged or shown: secrets replaced by `***`.
///
/// The user-info part runs to the first `@`, as tokio-postgres reads it (a password may hold an
/// unencoded `/`); of it only a PostgreSQL user name is kept, since elsewhere (an HTTP source) a
/// lone user name is often a token. Query values are hidden too: a PostgreSQL URL's `password=`,
/// and every value of any other URL (gateways take `?token=` or `?api_key=`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let postgres = matches!(scheme, "postgres" | "postgresql");
    let (userinfo, rest) = match rest.split_once('@') {
        Some((info, after)) => (Some(info), after),
        None => (None, rest),
    };
    let userinfo = userinfo.map(|info| match info.split_once(':') {
        Some((user, _)) if postgres && !user.contains('/') => format!("{user}:***@"),
        None if postgres && !info.contains('/') => format!("{info}@"),
        _ => "***@".to_owned(),
    });
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if !postgres || k.eq_ignore_ascii_case("password") => {
                        format!("{k}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest.to_owned(),
    };
    let userinfo = userinfo.unwrap_or_default();
    if scheme.is_empty() {
        format!("{userinfo}{rest}")
    } else {
        format!("{scheme}://{userinfo}{rest}")
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn secrets_are_hidden_wherever_they_sit() {
        let cases = [
            ("postgres://mw:S3CRET@db/x", "postgres://mw:***@db/x"),
            // tokio-postgres reads user-info up to the first '@', so a '/' in the password
            // must not end it here either.
            (
                "postgres://mw:pa/SECRET@127.0.0.1:5432/plant",
                "postgres://mw:***@127.0.0.1:5432/plant",
            ),
            (
                "postgres://postgres@127.0.0.1/test",
                "postgres://postgres@127.0.0.1/test",
            ),
            (
                "postgres://h/db?sslmode=disable&password=S3CRET",
                "postgres://h/db?sslmode=disable&password=***",
            ),
            (
                "http://gw/r.json?access_token=SECRETQ&x=1",
                "http://gw/r.json?access_token=***&x=***",
            ),
            (
                "http://SECRETUSERTOKEN@gw.invalid/r",
                "http://***@gw.invalid/r",
            ),
            ("https://u:SECRET@gw/r", "https://***@gw/r"),
            (
                "http://127.0.0.1:9000/data.json",
                "http://127.0.0.1:9000/data.json",
            ),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("SECRET"), "{got}");
        }
    }
}

/// The state a store gives back at start: records to replay and the last status of each machine.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Records to replay through the pipeline, oldest first per machine.
    pub records: Vec<ProcessedRecord>,
    /// The latest status change of each machine.
    pub statuses: Vec<StatusChange>,
    /// Each machine's newest timestamp stored (the largest, not the last arrived): a reading
    /// later than it cannot be a duplicate, so only earlier ones are looked up.
    pub newest: Vec<(MachineId, Timestamp)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_passwords_are_not_shown() {
        for (url, want) in [
            (
                "postgres://mw:s3cret@db:5432/plant",
                "postgres://mw:***@db:5432/plant",
            ),
            ("postgres://mw@db/plant", "postgres://mw@db/plant"),
            (
                "postgresql://db/plant?user=mw&password=s3cret&sslmode=require",
                "postgresql://db/plant?user=mw&password=***&sslmode=require",
            ),
            ("postgres://a:b:c@db", "postgres://a:***@db"),
        ] {
            let spec = StoreSpec::parse(url).unwrap();
            assert_eq!(spec.to_string(), want);
            assert!(!format!("{spec:?}").contains("s3cret"));
        }
    }
}
