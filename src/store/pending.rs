//! The SQLite store's recent records: committed to the log, not yet compacted into chunks.
//!
//! Readers see a store as "chunks in their snapshot, plus these": the writer adds a group's
//! records here after its commit and before acknowledging it, and drops the records a
//! compaction moved once it has committed. A reader whose snapshot predates that compaction
//! would miss the records it moved, so [`Pending::covers`] tells it to read again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;

use super::writer::MachineRows;

type Machines = HashMap<MachineId, Vec<(u64, Arc<ProcessedRecord>)>, foldhash::fast::RandomState>;

/// Records taken out of [`Pending`] by a compaction, to be dropped.
pub(crate) struct Compacted(#[allow(dead_code)] Vec<Vec<(u64, Arc<ProcessedRecord>)>>);

/// Records with their arrival numbers, per machine, in arrival order.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Every committed record numbered from here on is in `machines`.
    floor: u64,
    machines: Machines,
    len: usize,
    /// When the oldest record held was committed (or, after a compaction left some, when it
    /// ended); `None` when nothing is held.
    since: Option<Instant>,
}

impl Pending {
    /// Nothing pending; the next record will be numbered `floor`.
    pub(crate) fn new(floor: u64) -> Self {
        Pending {
            floor,
            machines: HashMap::default(),
            len: 0,
            since: None,
        }
    }

    /// Takes a commit's records, per machine, numbered in arrival order.
    pub(crate) fn extend(&mut self, per_machine: &[MachineRows<'_>]) {
        if self.since.is_none() && per_machine.iter().any(|(_, rows)| !rows.is_empty()) {
            self.since = Some(Instant::now());
        }
        for (machine, rows) in per_machine {
            let mine = match self.machines.get_mut(*machine) {
                Some(mine) => mine,
                None => self.machines.entry((*machine).clone()).or_default(),
            };
            mine.extend(rows.iter().map(|(seq, r)| (*seq, Arc::clone(r))));
            self.len += rows.len();
        }
    }

    /// Forgets the records numbered up to `upto`: they have been compacted. Returns them, so
    /// that the caller can free them elsewhere (tens of thousands of them take milliseconds).
    pub(crate) fn clear_upto(&mut self, upto: u64) -> Compacted {
        let mut gone = Vec::new();
        for rows in self.machines.values_mut() {
            let keep = rows.partition_point(|(seq, _)| *seq <= upto);
            if keep == rows.len() {
                gone.push(std::mem::take(rows));
            } else if keep > 0 {
                let rest = rows.split_off(keep);
                gone.push(std::mem::replace(rows, rest));
            }
            self.len -= keep;
        }
        self.floor = self.floor.max(upto + 1);
        self.since = (self.len > 0).then(Instant::now);
        Compacted(gone)
    }

    /// How many records are held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// When the oldest record held was committed, if any is.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Whether this holds every record after `compacted` (the last number a reader's snapshot
    /// has in chunks), so that the snapshot and this together miss nothing.
    pub(crate) fn covers(&self, compacted: u64) -> bool {
        self.floor <= compacted + 1
    }

    /// Each machine with how many records it holds.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&MachineId, usize)> {
        self.machines.iter().map(|(m, rs)| (m, rs.len()))
    }

    /// One machine's records, in arrival order.
    pub(crate) fn rows(&self, machine: &MachineId) -> &[(u64, Arc<ProcessedRecord>)] {
        self.machines.get(machine).map_or(&[], Vec::as_slice)
    }

    /// Each machine's last (at most) `n` records numbered after `compacted`.
    pub(crate) fn tails(
        &self,
        compacted: u64,
        n: usize,
    ) -> impl Iterator<Item = (&MachineId, &[(u64, Arc<ProcessedRecord>)])> {
        self.machines.iter().map(move |(m, rs)| {
            let newer = newer(rs, compacted);
            (m, &newer[newer.len().saturating_sub(n)..])
        })
    }

    /// The records of one machine (or of all) numbered after `compacted`.
    pub(crate) fn after<'a>(
        &'a self,
        machine: Option<&'a MachineId>,
        compacted: u64,
    ) -> impl Iterator<Item = &'a (u64, Arc<ProcessedRecord>)> + 'a {
        let lists: Box<dyn Iterator<Item = &'a Vec<(u64, Arc<ProcessedRecord>)>>> = match machine {
            Some(m) => Box::new(self.machines.get(m).into_iter()),
            None => Box::new(self.machines.values()),
        };
        lists.flat_map(move |rs| newer(rs, compacted).iter())
    }
}

/// The records of one machine's list numbered after `compacted`: a tail, since each list is
/// in arrival order.
fn newer(rs: &[(u64, Arc<ProcessedRecord>)], compacted: u64) -> &[(u64, Arc<ProcessedRecord>)] {
    &rs[rs.partition_point(|(seq, _)| *seq <= compacted)..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    fn rec(m: &str, ts: i64) -> Arc<ProcessedRecord> {
        Arc::new(ProcessedRecord {
            machine_id: MachineId::parse(m).unwrap(),
            timestamp: Timestamp::from_nanos(ts),
            fields: Default::default(),
            averages: Default::default(),
        })
    }

    #[test]
    fn after_and_covers() {
        let mut p = Pending::new(10);
        assert!(p.covers(9));
        assert!(p.covers(20));
        assert!(!p.covers(8));
        let (a1, b2, a3) = (rec("a", 1), rec("b", 2), rec("a", 3));
        let a = MachineId::parse("a").unwrap();
        let b = MachineId::parse("b").unwrap();
        p.extend(&[(&a, vec![(10, &a1), (12, &a3)]), (&b, vec![(11, &b2)])]);
        assert_eq!(p.len(), 3);
        let seqs =
            |it: Vec<&(u64, Arc<ProcessedRecord>)>| it.iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(seqs(p.after(Some(&a), 9).collect()), vec![10, 12]);
        assert_eq!(seqs(p.after(Some(&a), 10).collect()), vec![12]);
        let mut all = seqs(p.after(None, 10).collect());
        all.sort();
        assert_eq!(all, vec![11, 12]);
        assert_eq!(p.after(Some(&MachineId::parse("z").unwrap()), 0).count(), 0);
        let mut tails: Vec<(String, Vec<u64>)> = p
            .tails(9, 1)
            .map(|(m, rs)| (m.as_str().to_owned(), rs.iter().map(|r| r.0).collect()))
            .collect();
        tails.sort();
        assert_eq!(tails, vec![("a".into(), vec![12]), ("b".into(), vec![11])]);
        let a_tail = |compacted, n| -> Vec<u64> {
            let (_, rs) = p
                .tails(compacted, n)
                .find(|(m, _)| m.as_str() == "a")
                .unwrap();
            rs.iter().map(|r| r.0).collect()
        };
        assert_eq!(a_tail(9, 5), vec![10, 12]);
        assert_eq!(a_tail(10, 5), vec![12]);
        assert_eq!(a_tail(12, 5), Vec::<u64>::new());
        assert_eq!(seqs(p.rows(&a).iter().collect()), vec![10, 12]);
        drop(p.clear_upto(11));
        assert_eq!(p.len(), 1);
        assert_eq!(seqs(p.rows(&a).iter().collect()), vec![12]);
        assert!(p.rows(&b).is_empty());
        assert!(p.since().is_some());
        assert!(!p.covers(10));
        assert!(p.covers(11));
        drop(p.clear_upto(13));
        assert_eq!(p.len(), 0);
        assert_eq!(p.since(), None);
        assert!(!p.covers(12));
        assert!(p.covers(13));
    }
}
