//! The fingerprints of the chunks that duplicate lookups read last, for the SQLite store.
//!
//! A replayed file reads each chunk in many small lookups (a batch of a thousand readings of
//! a hundred machines holds ten of each), and a chunk holds thousands of records: without
//! this, each lookup would read and decode a whole chunk for ten fingerprints. A chunk
//! never changes once written, and its `seq_max` (an arrival number) is never given to
//! another one, so (id, seq_max) names it for good. Bounded by the fingerprints held, not by
//! the history.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::dedup::Fingerprint;

/// How many fingerprints are held at most (16 bytes each).
const HELD: usize = 1 << 20;

/// A chunk by its row id and last arrival number.
pub(crate) type ChunkKey = (i64, i64);

/// The fingerprints of recently read chunks, sorted by time, oldest read dropped first.
#[derive(Debug, Default)]
pub(crate) struct ChunkPrints {
    map: HashMap<ChunkKey, Arc<[Fingerprint]>, foldhash::fast::RandomState>,
    order: VecDeque<ChunkKey>,
    held: usize,
}

impl ChunkPrints {
    /// A chunk's fingerprints, if held.
    pub(crate) fn get(&self, key: ChunkKey) -> Option<Arc<[Fingerprint]>> {
        self.map.get(&key).cloned()
    }

    /// Holds a chunk's fingerprints (sorted here), dropping the oldest read beyond the bound.
    pub(crate) fn put(
        &mut self,
        key: ChunkKey,
        mut prints: Vec<Fingerprint>,
    ) -> Arc<[Fingerprint]> {
        prints.sort_unstable();
        let prints: Arc<[Fingerprint]> = prints.into();
        if let Some(old) = self.map.insert(key, prints.clone()) {
            self.held -= old.len();
        } else {
            self.order.push_back(key);
        }
        self.held += prints.len();
        while self.held > HELD {
            let Some(gone) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.map.remove(&gone) {
                self.held -= old.len();
            }
        }
        prints
    }
}

/// The fingerprints in `prints` (sorted) at one time.
pub(crate) fn at(prints: &[Fingerprint], ts: i64) -> &[Fingerprint] {
    let from = prints.partition_point(|f| f.0 < ts);
    let to = prints.partition_point(|f| f.0 <= ts);
    &prints[from..to.max(from)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_fingerprints_stay_bounded_and_sorted() {
        let mut c = ChunkPrints::default();
        for id in 0..40 {
            c.put((id, id), (0..100_000).rev().map(|t| (t, 7)).collect());
        }
        assert!(c.held <= HELD);
        assert!(c.get((0, 0)).is_none(), "the oldest read went first");
        let last = c.get((39, 39)).unwrap();
        assert_eq!(at(&last, 5), &[(5, 7)]);
        assert!(at(&last, 100_000).is_empty());
    }
}
