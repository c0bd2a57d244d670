//! The SQLite store's recent records: committed to the log, not yet compacted into chunks.
//!
//! They are held as the log holds them, encoded: each commit's chunk of each machine, a slice
//! of the log entry's bytes. That keeps them three times smaller than records, lets a
//! request's records be freed by the request's own task, and lets a compaction copy bytes
//! that lie side by side instead of encoding records scattered over the heap. Readers decode
//! the few they want.
//!
//! Readers see a store as "chunks in their snapshot, plus these": the writer adds a group's
//! records here after its commit and before acknowledging it, and drops the records a
//! compaction moved once it has committed. A reader whose snapshot predates that compaction
//! would miss the records it moved, so [`Pending::covers`] tells it to read again.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::codec::{self, Built, ChunkBuilder, CodecError, StoredRecord};
use crate::reading::MachineId;
use crate::timestamp::Timestamp;

/// One machine's records of one commit (of one request), encoded as a chunk whose arrival
/// numbers count from `base`.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    chunk: Bytes,
    base: u64,
    records: usize,
    /// The arrival numbers of its first and last record.
    first: u64,
    last: u64,
    ts_min: Timestamp,
    ts_max: Timestamp,
}

impl Section {
    /// Whether any of its records may lie within the bounds.
    fn overlaps(&self, since: Timestamp, until: Timestamp) -> bool {
        self.ts_max >= since && self.ts_min <= until
    }

    /// Its records numbered after `compacted`.
    fn decode_after(
        &self,
        machine: &MachineId,
        compacted: u64,
    ) -> Result<Vec<StoredRecord>, CodecError> {
        let mut records = codec::decode(machine, &self.chunk)?;
        for r in &mut records {
            r.seq = r.seq.wrapping_add(self.base);
        }
        records.retain(|r| r.seq > compacted);
        Ok(records)
    }
}

type Machines = HashMap<MachineId, Vec<Section>, foldhash::fast::RandomState>;

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

    /// Takes a committed batch: its log entries' bytes themselves (moved out of it, shared
    /// by its sections, not copied) and where each machine's records are in them.
    pub(crate) fn extend(&mut self, batch: &mut codec::Batch) {
        let entries: Vec<Bytes> = batch
            .entries
            .drain(..)
            .map(|e| Bytes::from(e.data))
            .collect();
        let (sections, base) = (&batch.sections, batch.base);
        if self.since.is_none() && sections.iter().any(|s| s.records > 0) {
            self.since = Some(Instant::now());
        }
        for s in sections {
            let Some(entry) = entries.get(s.entry) else {
                continue; // not made by encode_log
            };
            let section = Section {
                chunk: entry.slice(s.range.clone()),
                base,
                records: s.records,
                first: base + s.first,
                last: base + s.last,
                ts_min: s.ts_min,
                ts_max: s.ts_max,
            };
            let mine = match self.machines.get_mut(&s.machine) {
                Some(mine) => mine,
                None => self.machines.entry(s.machine.clone()).or_default(),
            };
            mine.push(section);
            self.len += s.records;
        }
    }

    /// Forgets the records numbered up to `upto`: they have been compacted. A compaction
    /// round starts between groups, so `upto` is where a commit ended and no section holds
    /// records on both sides of it.
    pub(crate) fn clear_upto(&mut self, upto: u64) {
        for sections in self.machines.values_mut() {
            let gone = sections.partition_point(|s| s.last <= upto);
            debug_assert!(
                sections.get(gone).is_none_or(|s| s.first > upto),
                "a section holds records on both sides of {upto}"
            );
            self.len -= sections[..gone].iter().map(|s| s.records).sum::<usize>();
            sections.drain(..gone);
        }
        self.machines.retain(|_, sections| !sections.is_empty());
        self.floor = self.floor.max(upto + 1);
        self.since = (self.len > 0).then(Instant::now);
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
        self.machines
            .iter()
            .map(|(m, ss)| (m, ss.iter().map(|s| s.records).sum()))
    }

    /// Chunks of `machine`'s records `from..from + count` (by arrival), of at most
    /// `max_records` each: what a compaction slice writes.
    pub(crate) fn chunks(
        &self,
        machine: &MachineId,
        from: usize,
        count: usize,
        max_records: usize,
    ) -> Result<Vec<Built>, CodecError> {
        let mut out = Vec::new();
        let mut builder = ChunkBuilder::default();
        let (mut skip, mut left) = (from, count);
        for s in self.machines.get(machine).map_or(&[][..], Vec::as_slice) {
            if left == 0 {
                break;
            }
            if skip >= s.records {
                skip -= s.records;
                continue;
            }
            while skip < s.records && left > 0 {
                let empty = builder.records() == 0;
                let room = max_records.max(1) - builder.records();
                let took = builder.extend(&s.chunk, s.base, skip, room.min(left))?;
                if took == 0 && empty {
                    return Err(CodecError("a section holds fewer records than it says"));
                }
                skip += took;
                left -= took;
                if took == 0 || builder.records() >= max_records {
                    out.extend(std::mem::take(&mut builder).finish());
                }
            }
            skip = 0;
        }
        out.extend(builder.finish());
        Ok(out)
    }

    /// The records numbered after `compacted` of one machine (or of all) with a time within
    /// the bounds, in arrival order per machine.
    pub(crate) fn after(
        &self,
        machine: Option<&MachineId>,
        compacted: u64,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<StoredRecord>, CodecError> {
        let mut out = Vec::new();
        for (m, sections) in self.lists(machine) {
            for s in newer(sections, compacted)
                .iter()
                .filter(|s| s.overlaps(since, until))
            {
                let records = s.decode_after(m, compacted)?;
                out.extend(
                    records
                        .into_iter()
                        .filter(|r| r.record.timestamp >= since && r.record.timestamp <= until),
                );
            }
        }
        Ok(out)
    }

    /// Each machine's newest timestamp among its records numbered after `compacted`.
    pub(crate) fn newest(&self, compacted: u64) -> Vec<(MachineId, Timestamp)> {
        self.machines
            .iter()
            .filter_map(|(m, sections)| {
                let ts = newer(sections, compacted).iter().map(|s| s.ts_max).max()?;
                Some((m.clone(), ts))
            })
            .collect()
    }

    /// Each machine's last (at most) `n` records numbered after `compacted`, oldest first.
    pub(crate) fn tails(
        &self,
        compacted: u64,
        n: usize,
    ) -> Result<Vec<(MachineId, Vec<StoredRecord>)>, CodecError> {
        let mut out = Vec::new();
        for (m, sections) in &self.machines {
            let mut tail: Vec<StoredRecord> = Vec::new();
            for s in newer(sections, compacted).iter().rev() {
                if tail.len() >= n {
                    break;
                }
                let mut records = s.decode_after(m, compacted)?;
                records.append(&mut tail);
                tail = records;
            }
            let tail = tail.split_off(tail.len().saturating_sub(n));
            if !tail.is_empty() {
                out.push((m.clone(), tail));
            }
        }
        Ok(out)
    }

    /// The (time, arrival, value) of one numeric parameter of one machine, numbered after
    /// `compacted` and within the bounds.
    pub(crate) fn values(
        &self,
        machine: &MachineId,
        parameter: &str,
        compacted: u64,
        since: Timestamp,
        until: Timestamp,
        out: &mut Vec<(Timestamp, u64, f64)>,
    ) -> Result<(), CodecError> {
        let Some(sections) = self.machines.get(machine) else {
            return Ok(());
        };
        for s in newer(sections, compacted)
            .iter()
            .filter(|s| s.overlaps(since, until))
        {
            let from = out.len();
            codec::values_of(&s.chunk, parameter, since, until, out)?;
            let mut kept = from;
            for i in from..out.len() {
                let (ts, seq, v) = out[i];
                let seq = seq.wrapping_add(s.base);
                if seq > compacted {
                    out[kept] = (ts, seq, v);
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
        Ok(())
    }

    /// One machine's list, or every machine's.
    fn lists<'a>(
        &'a self,
        machine: Option<&'a MachineId>,
    ) -> Box<dyn Iterator<Item = (&'a MachineId, &'a Vec<Section>)> + 'a> {
        match machine {
            Some(m) => Box::new(self.machines.get_key_value(m).into_iter()),
            None => Box::new(self.machines.iter()),
        }
    }
}

/// The sections of one machine's list holding records numbered after `compacted`: a tail,
/// since each list is in arrival order.
fn newer(sections: &[Section], compacted: u64) -> &[Section] {
    &sections[sections.partition_point(|s| s.last <= compacted)..]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::ProcessedRecord;
    use crate::reading::{Field, ParamName, Value};

    fn rec(m: &str, ts: i64, fields: &[(&str, f64)]) -> Arc<ProcessedRecord> {
        Arc::new(ProcessedRecord {
            machine_id: MachineId::parse(m).unwrap(),
            timestamp: Timestamp::from_nanos(ts),
            fields: fields
                .iter()
                .map(|(n, v)| Field {
                    name: ParamName::parse(n).unwrap(),
                    value: Value::Number(*v),
                })
                .collect(),
            averages: fields.iter().map(|(_, v)| v / 2.0).collect(),
        })
    }

    /// Commits `records` as the writer does: encoded, numbered from `base`, then held.
    fn commit(p: &mut Pending, base: u64, records: &[Arc<ProcessedRecord>]) {
        let mut batch = codec::encode_batch(records);
        batch.set_base(base);
        p.extend(&mut batch);
    }

    fn seqs(rs: &[StoredRecord]) -> Vec<u64> {
        let mut s: Vec<u64> = rs.iter().map(|r| r.seq).collect();
        s.sort();
        s
    }

    #[test]
    fn records_read_back_by_number_time_and_machine() {
        let (a, b) = (
            MachineId::parse("a").unwrap(),
            MachineId::parse("b").unwrap(),
        );
        let mut p = Pending::new(10);
        assert!(p.covers(9) && p.covers(20) && !p.covers(8));
        assert_eq!(p.since(), None);
        commit(
            &mut p,
            10,
            &[
                rec("a", 1, &[("x", 1.0)]),
                rec("b", 2, &[("x", 2.0)]),
                rec("a", 3, &[("x", 3.0), ("y", 9.0)]),
            ],
        );
        commit(
            &mut p,
            13,
            &[rec("a", 4, &[("x", 4.0)]), rec("b", 5, &[("y", 5.0)])],
        );
        assert_eq!(p.len(), 5);
        assert!(p.since().is_some());
        let mut counts: Vec<(String, usize)> =
            p.counts().map(|(m, n)| (m.to_string(), n)).collect();
        counts.sort();
        assert_eq!(counts, vec![("a".into(), 3), ("b".into(), 2)]);
        let (lo, hi) = (Timestamp::MIN, Timestamp::MAX);
        assert_eq!(
            seqs(&p.after(None, 9, lo, hi).unwrap()),
            vec![10, 11, 12, 13, 14]
        );
        assert_eq!(seqs(&p.after(Some(&a), 10, lo, hi).unwrap()), vec![12, 13]);
        let t = Timestamp::from_nanos;
        assert_eq!(
            seqs(&p.after(None, 9, t(2), t(4)).unwrap()),
            vec![11, 12, 13]
        );
        let after = p.after(Some(&b), 9, lo, hi).unwrap();
        assert_eq!(after[1].record, *rec("b", 5, &[("y", 5.0)]));
        let mut tails: Vec<(String, Vec<u64>)> = p
            .tails(9, 2)
            .unwrap()
            .into_iter()
            .map(|(m, rs)| (m.to_string(), rs.iter().map(|r| r.seq).collect()))
            .collect();
        tails.sort();
        assert_eq!(
            tails,
            vec![("a".into(), vec![12, 13]), ("b".into(), vec![11, 14])]
        );
        assert!(p.tails(14, 5).unwrap().is_empty());
        let mut v = Vec::new();
        p.values(&a, "x", 10, lo, hi, &mut v).unwrap();
        assert_eq!(v, vec![(t(3), 12, 3.0), (t(4), 13, 4.0)]);
        v.clear();
        p.values(&b, "x", 9, t(3), hi, &mut v).unwrap();
        assert!(v.is_empty());
        p.clear_upto(12);
        assert_eq!(p.len(), 2);
        assert!(!p.covers(11) && p.covers(12));
        assert_eq!(seqs(&p.after(None, 0, lo, hi).unwrap()), vec![13, 14]);
        p.clear_upto(14);
        assert_eq!((p.len(), p.since()), (0, None));
        assert_eq!(p.counts().count(), 0);
    }

    /// A request past 16 MiB is several log entries: each section finds its own entry, and
    /// everything reads back and compacts whole.
    #[test]
    fn a_batch_of_several_entries_reads_back_whole() {
        let big = "x".repeat(60_000);
        let records: Vec<Arc<ProcessedRecord>> = (0..300)
            .map(|i| {
                let mut r =
                    ProcessedRecord::clone(&rec(if i % 2 == 0 { "a" } else { "b" }, i, &[]));
                r.fields.push(Field {
                    name: ParamName::parse("note").unwrap(),
                    value: Value::State(big.as_str().into()),
                });
                Arc::new(r)
            })
            .collect();
        let mut batch = codec::encode_batch(&records);
        assert!(batch.entries.len() >= 2, "{} entries", batch.entries.len());
        batch.set_base(1);
        let mut p = Pending::new(1);
        p.extend(&mut batch);
        let mut back = p.after(None, 0, Timestamp::MIN, Timestamp::MAX).unwrap();
        back.sort_by_key(|r| r.seq);
        assert_eq!(back.len(), 300);
        assert!(back.iter().zip(&records).all(|(b, r)| b.record == **r));
        assert_eq!(back.last().map(|r| r.seq), Some(300));
        let a = MachineId::parse("a").unwrap();
        let chunks = p.chunks(&a, 0, 150, 4096).unwrap();
        assert_eq!(chunks.iter().map(|c| c.records).sum::<usize>(), 150);
        assert!(chunks.len() >= 2, "8 MiB chunks: {}", chunks.len());
    }

    proptest! {
        /// A compaction's chunks, copied from the sections' bytes, hold exactly the records
        /// asked for, with their arrival numbers, at most `max` a chunk, and bounds that match
        /// what they hold: whatever the names (each batch may name its fields differently,
        /// so that dictionaries must be merged), and wherever the range starts and ends.
        #[test]
        fn chunks_hold_exactly_the_records_asked_for(
            batches in prop::collection::vec(
                prop::collection::vec((0usize..4, 0usize..4, -1e3f64..1e3), 1..12),
                1..6,
            ),
            from in 0usize..40,
            count in 0usize..40,
            max in 1usize..9,
        ) {
            let names = ["p", "q", "r", "s"];
            let m = MachineId::parse("m").unwrap();
            let mut p = Pending::new(1);
            let mut all: Vec<(u64, Arc<ProcessedRecord>)> = Vec::new();
            let mut next = 1u64;
            for (b, batch) in batches.iter().enumerate() {
                let records: Vec<Arc<ProcessedRecord>> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, (n1, n2, v))| {
                        let mut fields = vec![(names[*n1], *v)];
                        if n2 != n1 {
                            fields.push((names[*n2], -v));
                        }
                        rec("m", (b * 100 + i) as i64, &fields)
                    })
                    .collect();
                commit(&mut p, next, &records);
                for r in records {
                    all.push((next, r));
                    next += 1;
                }
            }
            let from = from.min(all.len());
            let count = count.min(all.len() - from);
            let built = p.chunks(&m, from, count, max).unwrap();
            let mut back = Vec::new();
            for b in &built {
                prop_assert!(b.records >= 1 && b.records <= max);
                let decoded = codec::decode(&m, &b.data).unwrap();
                prop_assert_eq!(decoded.len(), b.records);
                prop_assert_eq!(b.seq_min, decoded[0].seq);
                prop_assert_eq!(b.seq_max, decoded[decoded.len() - 1].seq);
                let ts = decoded.iter().map(|r| r.record.timestamp);
                prop_assert_eq!(b.ts_min, ts.clone().min().unwrap());
                prop_assert_eq!(b.ts_max, ts.max().unwrap());
                back.extend(decoded.into_iter().map(|r| (r.seq, r.record)));
            }
            let want: Vec<(u64, ProcessedRecord)> = all[from..from + count]
                .iter()
                .map(|(s, r)| (*s, ProcessedRecord::clone(r)))
                .collect();
            prop_assert_eq!(back, want);
        }
    }
}
