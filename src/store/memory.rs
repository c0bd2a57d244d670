//! A store in memory: fast, and gone with the process. For tests, demos and `--store memory`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::FutureExt;

use super::{Ack, DataQuery, Recovery, Store, StoreError, ValueSeries};
use crate::dedup::{Fingerprint, Wanted, fingerprint};
use crate::pipeline::ProcessedRecord;
use crate::reading::{MachineId, ParamName};
use crate::status::StatusChange;
use crate::timestamp::Timestamp;

/// Records keyed by (time, arrival), so ranges come out ordered by time, ties by arrival.
type Timeline = BTreeMap<(Timestamp, u64), Arc<ProcessedRecord>>;

/// One numeric parameter of one machine as parallel arrays sorted by (time, arrival): what
/// analytics reads, without walking records.
#[derive(Default)]
struct Column {
    keys: Vec<(Timestamp, u64)>,
    values: Vec<f64>,
}

impl Column {
    fn push(&mut self, key: (Timestamp, u64), value: f64) {
        if self.keys.last().is_none_or(|last| *last < key) {
            self.keys.push(key);
            self.values.push(value);
        } else {
            // Out of time order: rare, and O(n) then.
            let at = self.keys.partition_point(|k| *k < key);
            self.keys.insert(at, key);
            self.values.insert(at, value);
        }
    }

    fn range(&self, lo: (Timestamp, u64), hi: (Timestamp, u64)) -> std::ops::Range<usize> {
        let start = self.keys.partition_point(|k| *k < lo);
        let end = self.keys.partition_point(|k| *k <= hi);
        start..end.max(start)
    }
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    all: Timeline,
    by_machine: HashMap<MachineId, Timeline>,
    columns: HashMap<(MachineId, ParamName), Column>,
    latest: BTreeMap<MachineId, Arc<ProcessedRecord>>,
    history: Vec<StatusChange>,
    alerts: super::alerts::memory::AlertTables,
}

/// Keeps everything in ordered maps behind one lock.
#[derive(Default)]
pub struct MemoryStore {
    // A std RwLock, not tokio's: nothing awaits while it is held.
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn bounds(
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> ((Timestamp, u64), (Timestamp, u64)) {
    (
        (since.unwrap_or(Timestamp::MIN), 0),
        (until.unwrap_or(Timestamp::MAX), u64::MAX),
    )
}

/// The newest `limit` of a time range, oldest first.
fn newest(
    t: &Timeline,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: usize,
) -> Vec<Arc<ProcessedRecord>> {
    let (lo, hi) = bounds(since, until);
    if lo > hi {
        return Vec::new();
    }
    let mut v: Vec<_> = t
        .range(lo..=hi)
        .rev()
        .take(limit)
        .map(|(_, r)| r.clone())
        .collect();
    v.reverse();
    v
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn write_alerts(&self, write: super::alerts::AlertWrite) -> Ack {
        self.write().alerts.apply(write);
        futures::future::ready(Ok(())).boxed()
    }

    async fn alert_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.read().alerts.rules())
    }

    async fn alert_states(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.read().alerts.states())
    }

    async fn alert_history(
        &self,
        q: super::alerts::HistoryQuery,
    ) -> Result<Vec<super::alerts::HistoryRow>, StoreError> {
        Ok(self.read().alerts.history(&q))
    }

    async fn outbox(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<super::alerts::Notification>, StoreError> {
        Ok(self.read().alerts.outbox(target, limit))
    }

    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> Ack {
        let mut inner = self.write();
        for r in records {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let key = (r.timestamp, seq);
            inner.all.insert(key, r.clone());
            inner
                .by_machine
                .entry(r.machine_id.clone())
                .or_default()
                .insert(key, r.clone());
            for (name, value, _) in r.numeric() {
                let id = (r.machine_id.clone(), name.clone());
                inner.columns.entry(id).or_default().push(key, value);
            }
            inner.latest.insert(r.machine_id.clone(), r);
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn append_status(&self, change: StatusChange) -> Ack {
        self.write().history.push(change);
        futures::future::ready(Ok(())).boxed()
    }

    async fn query(&self, q: DataQuery) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        let inner = self.read();
        Ok(match &q.machine_id {
            Some(m) => match inner.by_machine.get(m) {
                Some(t) => newest(t, q.since, q.until, q.limit),
                None => Vec::new(),
            },
            None => newest(&inner.all, q.since, q.until, q.limit),
        })
    }

    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
        Ok(self.read().latest.values().cloned().collect())
    }

    async fn fingerprints_at(
        &self,
        wanted: &Wanted,
    ) -> Result<Vec<(MachineId, Fingerprint)>, StoreError> {
        let inner = self.read();
        let mut out = Vec::new();
        for (machine, times) in wanted {
            let Some(t) = inner.by_machine.get(machine) else {
                continue;
            };
            out.extend(
                times
                    .iter()
                    .flat_map(|ts| t.range((*ts, 0)..=(*ts, u64::MAX)))
                    .map(|(_, r)| (machine.clone(), fingerprint(r.timestamp, &r.fields))),
            );
        }
        Ok(out)
    }

    async fn series(
        &self,
        machine_id: &MachineId,
        parameter: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ValueSeries, StoreError> {
        let inner = self.read();
        let (lo, hi) = bounds(since, until);
        let Ok(name) = ParamName::parse(parameter) else {
            return Ok(ValueSeries::default());
        };
        let Some(column) = inner.columns.get(&(machine_id.clone(), name)) else {
            return Ok(ValueSeries::default());
        };
        if lo > hi {
            return Ok(ValueSeries::default());
        }
        let range = column.range(lo, hi);
        Ok(ValueSeries {
            timestamps: column.keys[range.clone()].iter().map(|k| k.0).collect(),
            values: column.values[range].to_vec(),
        })
    }

    async fn status_history(
        &self,
        machine_id: Option<&MachineId>,
        limit: usize,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let inner = self.read();
        let mut v: Vec<StatusChange> = inner
            .history
            .iter()
            .rev()
            .filter(|c| machine_id.is_none_or(|m| &c.machine_id == m))
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        Ok(v)
    }

    async fn status_changes(
        &self,
        machine_id: &MachineId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let inner = self.read();
        let mine = inner.history.iter().filter(|c| &c.machine_id == machine_id);
        let mut before: Option<&StatusChange> = None;
        let mut out = Vec::new();
        for c in mine {
            if c.since < since {
                // The history is in time order (the status book never goes back in time).
                before = Some(c);
            } else if c.since <= until {
                out.push(c.clone());
            }
        }
        if let Some(b) = before {
            out.insert(0, b.clone());
        }
        Ok(out)
    }

    async fn retain(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut inner = self.write();
        let keep = inner.all.split_off(&(cutoff, 0));
        let gone = std::mem::replace(&mut inner.all, keep);
        for t in inner.by_machine.values_mut() {
            let keep = t.split_off(&(cutoff, 0));
            *t = keep;
        }
        for c in inner.columns.values_mut() {
            let n = c.keys.partition_point(|k| k.0 < cutoff);
            c.keys.drain(..n);
            c.values.drain(..n);
        }
        Ok(gone.len())
    }

    async fn recovery(&self, per_machine: usize) -> Result<Recovery, StoreError> {
        // What the process itself kept: used when the pipeline is rebuilt after a failure.
        let inner = self.read();
        let mut records = Vec::new();
        for timeline in inner.by_machine.values() {
            let mut mine: Vec<(u64, &Arc<ProcessedRecord>)> =
                timeline.iter().map(|((_, seq), r)| (*seq, r)).collect();
            mine.sort_by_key(|(seq, _)| *seq);
            let skip = mine.len().saturating_sub(per_machine);
            records.extend(mine.into_iter().skip(skip).map(|(_, r)| r.as_ref().clone()));
        }
        let mut last: HashMap<&MachineId, &StatusChange> = HashMap::new();
        for c in &inner.history {
            last.insert(&c.machine_id, c);
        }
        let statuses = last.into_values().cloned().collect();
        let newest = inner
            .by_machine
            .iter()
            .filter_map(|(m, t)| Some((m.clone(), t.keys().next_back()?.0)))
            .collect();
        Ok(Recovery {
            records,
            statuses,
            newest,
        })
    }
}
