//! Exact duplicate detection against a machine's whole stored history (SPEC §2), with memory
//! per machine that does not grow with the history.
//!
//! The rule: a reading later than everything stored for its machine cannot repeat one, so
//! the pipeline keeps only each machine's newest timestamp. An earlier reading (a replayed
//! file, a redelivered message, a retried request) is looked up in the store by (machine,
//! timestamp) before the batch is processed: [`lookups`] says which pairs a batch needs,
//! the store answers them in one read per machine ([`crate::store::Store::fingerprints_at`]), and
//! the pipeline compares fingerprints with what it found ([`Found`]) and with the batch's own
//! earlier readings. Readings without a timestamp take their arrival time and are new.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::reading::{Field, MachineId, Reading, Value};
use crate::timestamp::Timestamp;

/// A reading's time (exact) and a 64-bit hash of its fields, in any order.
pub type Fingerprint = (i64, u64);

type FastSet<T> = HashSet<T, foldhash::fast::FixedState>;

/// A reading's fingerprint: its exact time and a hash of its fields, in any order.
pub fn fingerprint(ts: Timestamp, fields: &[Field]) -> Fingerprint {
    let state = foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut acc = 0u64;
    for f in fields {
        let mut h = state.build_hasher();
        f.name.as_str().hash(&mut h);
        match &f.value {
            // Bits, so that 0.0 and -0.0 differ as the readings do; all values are finite.
            Value::Number(v) => (0u8, v.to_bits()).hash(&mut h),
            Value::State(s) => (1u8, s.as_str()).hash(&mut h),
        }
        // A sum of per-field hashes: the same reading with its fields reordered matches.
        acc = acc.wrapping_add(h.finish());
    }
    (ts.as_nanos(), acc)
}

/// The times of each machine that a batch must look up, sorted and without repeats.
pub type Wanted = BTreeMap<MachineId, Vec<Timestamp>>;

/// Which (machine, timestamp) pairs of `readings` must be looked up in the store: those of
/// readings with a timestamp no later than their machine's newest so far (`newest` gives it
/// for the machines the pipeline knows; the batch's own readings move it on).
pub fn lookups(
    readings: &[Reading],
    default_machine: &MachineId,
    now: Timestamp,
    newest: impl Fn(&MachineId) -> Option<i64>,
) -> Wanted {
    let mut moved: std::collections::HashMap<&MachineId, Option<i64>, foldhash::fast::FixedState> =
        Default::default();
    let mut wanted = Wanted::new();
    for r in readings {
        let machine = r.machine_id.as_ref().unwrap_or(default_machine);
        let slot = moved.entry(machine).or_insert_with(|| newest(machine));
        let ts = r.timestamp.unwrap_or(now).as_nanos();
        match (*slot, r.timestamp) {
            (Some(n), Some(t)) if t.as_nanos() <= n => {
                wanted.entry(machine.clone()).or_default().push(t);
            }
            _ => *slot = Some(slot.map_or(ts, |n| n.max(ts))),
        }
    }
    for times in wanted.values_mut() {
        times.sort_unstable();
        times.dedup();
    }
    wanted
}

/// The fingerprints of stored records that a batch's earlier readings may repeat, plus those
/// of the batch's own records as they are taken.
#[derive(Debug, Default)]
pub struct Found {
    seen: FastSet<(MachineId, Fingerprint)>,
    /// Whether the batch has readings to check at all: if not, its new readings need not be
    /// remembered, since none of the batch repeats them.
    checking: bool,
}

impl Found {
    /// For a batch with readings to check ([`lookups`] was not empty).
    pub fn checking() -> Self {
        Found {
            checking: true,
            ..Found::default()
        }
    }

    /// Remembers a new reading of the batch when later ones may repeat it.
    pub fn taken(&mut self, machine: &MachineId, fp: Fingerprint) {
        if self.checking {
            self.insert(machine, fp);
        }
    }

    /// Remembers the fingerprint of a stored record of `machine`.
    pub fn add(&mut self, machine: &MachineId, fp: Fingerprint) {
        self.seen.insert((machine.clone(), fp));
    }

    /// Remembers a reading the batch takes; false if it was found or taken already.
    pub fn insert(&mut self, machine: &MachineId, fp: Fingerprint) -> bool {
        self.seen.insert((machine.clone(), fp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::parse_reading;

    fn m(id: &str) -> MachineId {
        MachineId::parse(id).unwrap()
    }

    fn readings(lines: &[&str]) -> Vec<Reading> {
        lines
            .iter()
            .map(|l| parse_reading(l.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn only_times_up_to_the_newest_are_looked_up() {
        let batch = readings(&[
            r#"{"timestamp": 10, "x": 1}"#,
            r#"{"timestamp": 5, "x": 1}"#,
            r#"{"timestamp": 11, "x": 1}"#,
            r#"{"timestamp": 11, "x": 2}"#,
            r#"{"timestamp": 3, "x": 1, "machine_id": "b"}"#,
            r#"{"timestamp": 2, "x": 1, "machine_id": "b"}"#,
            r#"{"x": 1}"#,
        ]);
        let newest = |id: &MachineId| (id.as_str() == "a").then_some(7_000_000_000);
        let wanted = lookups(&batch, &m("a"), Timestamp::from_nanos(1), newest);
        let secs = |v: &[i64]| -> Vec<Timestamp> {
            v.iter()
                .map(|s| Timestamp::from_nanos(s * 1_000_000_000))
                .collect()
        };
        // a: 5 is before its newest (7), 11 repeats the batch's own; 10 and the first 11 are
        // later than everything. b: unknown, so 3 is new and 2 comes before it. The reading
        // without a time is new.
        assert_eq!(wanted.get(&m("a")).unwrap(), &secs(&[5, 11]));
        assert_eq!(wanted.get(&m("b")).unwrap(), &secs(&[2]));
        assert_eq!(wanted.len(), 2);
    }
}
