//! Reading every stored record in a range from any store, oldest first, a page at a time.
//!
//! The [`Store`] trait answers "the newest `limit` records up to a time", which pages
//! backwards: a first pass walks back from the newest record in pages of [`PAGE`], noting
//! where each page starts and which parameters the records have (what a CSV header or a
//! Parquet schema needs before the first row). The second pass reads those windows of time
//! oldest first. Records of one timestamp never straddle two windows, so each window's read
//! is the store's own order (time, then arrival), as `GET /data` gives it. Memory is a page
//! of records plus one timestamp per page, whatever the history's length.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::csv::Columns;
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::store::{DataQuery, Store, StoreError};
use crate::timestamp::Timestamp;

/// Records per page of the first pass: a window of the second holds about as many per
/// machine asked for.
pub const PAGE: usize = 20_000;

/// What an export reads: machines (none: all) and inclusive time bounds.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// Only these machines; empty means every machine.
    pub machines: Vec<MachineId>,
    /// From this time on (inclusive).
    pub since: Option<Timestamp>,
    /// Up to this time (inclusive).
    pub until: Option<Timestamp>,
}

/// The outcome of the first pass: windows of time to read oldest first, the columns of the
/// records, and how many there are.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Inclusive `[from, to]` windows, oldest first, together covering every record found.
    pub windows: Vec<(Timestamp, Timestamp)>,
    /// The parameters of the records found.
    pub columns: Columns,
    /// How many records the first pass found.
    pub total: u64,
}

/// Each machine filter to query: every machine at once, or the ones named.
fn filters(range: &Range) -> Vec<Option<MachineId>> {
    if range.machines.is_empty() {
        vec![None]
    } else {
        range.machines.iter().cloned().map(Some).collect()
    }
}

/// The first pass: walks back from the newest record of the range in pages, noting where
/// pages start, the columns and the count. `progress` is told each page's size.
pub async fn plan(
    store: &dyn Store,
    range: &Range,
    page: usize,
    mut progress: impl FnMut(u64),
) -> Result<Plan, StoreError> {
    let since = range.since.unwrap_or(Timestamp::MIN);
    let until = range.until.unwrap_or(Timestamp::MAX);
    let mut plan = Plan::default();
    if since > until {
        return Ok(plan);
    }
    // Where windows start (besides `since`), and the newest time seen: the end of the last
    // window, so that records stored after this pass are left out of the second, as they
    // are of the columns.
    let mut starts = BTreeSet::new();
    let mut newest: Option<Timestamp> = None;
    for machine in filters(range) {
        let mut cursor = until;
        let mut limit = page.max(1);
        loop {
            let records = store
                .query(DataQuery {
                    machine_id: machine.clone(),
                    since: Some(since),
                    until: Some(cursor),
                    limit,
                })
                .await?;
            let Some(first) = records.first() else {
                break;
            };
            if let Some(last) = records.last() {
                newest = Some(newest.map_or(last.timestamp, |n| n.max(last.timestamp)));
            }
            if records.len() < limit {
                // The last page: nothing older is left in the range.
                for r in &records {
                    plan.columns.add(r);
                }
                plan.total += records.len() as u64;
                progress(records.len() as u64);
                break;
            }
            // A full page may have cut the records of its oldest time: those are read again
            // with the next page, which ends at that time.
            let oldest = first.timestamp;
            let keep = &records[records.partition_point(|r| r.timestamp == oldest)..];
            if keep.is_empty() {
                // One time holds a whole page: read it again with room for all of them.
                limit = limit.saturating_mul(2);
                continue;
            }
            for r in keep {
                plan.columns.add(r);
            }
            plan.total += keep.len() as u64;
            progress(keep.len() as u64);
            if let Some(next) = oldest.as_nanos().checked_add(1) {
                starts.insert(Timestamp::from_nanos(next));
            }
            cursor = oldest;
            limit = page.max(1);
        }
    }
    let Some(end) = newest else {
        return Ok(plan);
    };
    let mut from = since;
    for start in starts.into_iter().filter(|s| *s > since && *s <= end) {
        plan.windows
            .push((from, Timestamp::from_nanos(start.as_nanos() - 1)));
        from = start;
    }
    plan.windows.push((from, end));
    Ok(plan)
}

/// The records of one window of the plan, oldest first: the store's order for one query, a
/// merge by time for several machines (ties in the order the machines were named).
pub async fn window(
    store: &dyn Store,
    range: &Range,
    (from, to): (Timestamp, Timestamp),
) -> Result<Vec<Arc<ProcessedRecord>>, StoreError> {
    let mut out = Vec::new();
    let filters = filters(range);
    let several = filters.len() > 1;
    for machine in filters {
        out.extend(
            store
                .query(DataQuery {
                    machine_id: machine,
                    since: Some(from),
                    until: Some(to),
                    limit: usize::MAX,
                })
                .await?,
        );
    }
    if several {
        out.sort_by_key(|r| r.timestamp);
    }
    Ok(out)
}
