//! Reading in, processed record out (SPEC §2): the machine and time are settled, every numeric
//! parameter moves its (machine, parameter) window, and a reading already taken is recognised
//! as a duplicate and goes no further.

use std::collections::{BTreeSet, HashMap, VecDeque};

use compact_str::CompactString;
use serde::ser::{SerializeMap, Serializer};

use crate::reading::{MachineId, ParamName, Reading, Value};
use crate::timestamp::Timestamp;
use crate::window::MovingAverage;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// How many of each machine's latest readings (by time) a pipeline without a store remembers
/// to recognise duplicates (`millwatch ingest` without `--store`).
pub const DEFAULT_DEDUP_MEMORY: usize = 32_768;

/// How many of each machine's last records a restarted service replays at least: enough to
/// refill the windows of parameters that not every reading has. (Duplicates are looked up in
/// the store: see [`crate::dedup`].)
pub const DEFAULT_RECOVERY: usize = 1024;

/// The moving averages of a record's numeric parameters, inline like its fields.
pub type Averages = smallvec::SmallVec<[f64; 4]>;

/// A reading with its machine, its time and the moving average of each numeric parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedRecord {
    /// The machine it belongs to.
    pub machine_id: MachineId,
    /// When it was taken (or received, when the reading had no time).
    pub timestamp: Timestamp,
    /// The reading's parameters, in arrival order.
    pub fields: crate::reading::Fields,
    /// The moving average of each numeric field, in the order of the numeric fields.
    pub averages: Averages,
}

/// So that stores take records and shared records alike.
impl AsRef<ProcessedRecord> for ProcessedRecord {
    fn as_ref(&self) -> &ProcessedRecord {
        self
    }
}

impl ProcessedRecord {
    /// Each numeric field with its moving average.
    pub fn numeric(&self) -> impl Iterator<Item = (&ParamName, f64, f64)> {
        self.fields
            .iter()
            .filter_map(|f| match f.value {
                Value::Number(v) => Some((&f.name, v)),
                Value::State(_) => None,
            })
            .zip(&self.averages)
            .map(|((name, v), avg)| (name, v, *avg))
    }

    /// The value of one parameter, if the record has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name.as_str() == name)
            .map(|f| &f.value)
    }
}

/// Writes a number the way a person wrote it: integers without a trailing `.0`.
pub(crate) fn serialize_number<S: Serializer>(v: f64, s: S) -> Result<S::Ok, S::Error> {
    // Below 2^53 every integer is exact, so printing it as one loses nothing.
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        s.serialize_i64(v as i64)
    } else {
        s.serialize_f64(v)
    }
}

struct Number(f64);

impl serde::Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_number(self.0, s)
    }
}

impl serde::Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Number(v) => serialize_number(*v, s),
            Value::State(st) => s.serialize_str(st),
        }
    }
}

impl serde::Serialize for ProcessedRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2 + self.fields.len() + self.averages.len()))?;
        map.serialize_entry("machine_id", &self.machine_id)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        for f in &self.fields {
            map.serialize_entry(f.name.as_str(), &f.value)?;
        }
        let mut key = CompactString::default();
        for (name, _, avg) in self.numeric() {
            key.clear();
            key.push_str(name.as_str());
            key.push_str("_avg");
            map.serialize_entry(key.as_str(), &Number(avg))?;
        }
        map.end()
    }
}

/// What became of a reading.
// A record is moved straight into its Arc: boxing it here would bring back an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new reading, processed.
    Record(ProcessedRecord),
    /// The same reading was taken before: acknowledged, counted, not stored or averaged.
    Duplicate,
}

/// A bounded memory of the fingerprints of a machine's recent readings.
///
/// A duplicate has the same time as the reading it repeats, and readings mostly arrive in
/// time order: then the new fingerprint is later than every remembered one, cannot be a
/// duplicate, and goes on the end of a deque without any search (the ends of a deque stay in
/// cache; a hash set of the same size would not). Late readings (earlier than the latest
/// remembered) go into an ordered set of their own, O(log n), so that a stream of late data
/// never costs a shift of the deque. Each part keeps at most `limit` fingerprints, dropping
/// the earliest time first.
#[derive(Debug, Clone, Default)]
struct RecentSet {
    in_order: VecDeque<Fingerprint>,
    late: BTreeSet<Fingerprint>,
}

use crate::dedup::{Fingerprint, Found, fingerprint};

impl RecentSet {
    /// Remembers `fp`; false when it was already known.
    fn insert(&mut self, fp: Fingerprint, limit: usize) -> bool {
        match self.in_order.back() {
            // Later than everything in order, and late ones are all earlier than that.
            Some(last) if *last >= fp => {
                if self.in_order.binary_search(&fp).is_ok() || !self.late.insert(fp) {
                    return false;
                }
                if self.late.len() > limit {
                    self.late.pop_first();
                }
            }
            _ => {
                self.in_order.push_back(fp);
                if self.in_order.len() > limit {
                    self.in_order.pop_front();
                }
            }
        }
        true
    }
}

/// The state kept per machine: one window per numeric parameter, the newest timestamp taken,
/// and (without a store) the recent fingerprints.
#[derive(Debug, Clone, Default)]
struct MachineState {
    windows: FastMap<ParamName, MovingAverage>,
    newest: Option<i64>,
    recent: RecentSet,
}

/// Turns readings into processed records; owns every window.
#[derive(Debug, Clone)]
pub struct Pipeline {
    window: usize,
    /// How many fingerprints per machine the bounded memory keeps; 0 once a store answers
    /// for older readings ([`Pipeline::dedup_by_store`]).
    dedup_memory: usize,
    default_machine: MachineId,
    machines: FastMap<MachineId, MachineState>,
}

impl Pipeline {
    /// A pipeline with windows of `window` values, giving readings without a machine to
    /// `default_machine`.
    pub fn new(window: usize, default_machine: MachineId) -> Self {
        Pipeline {
            window: window.max(1),
            dedup_memory: DEFAULT_DEDUP_MEMORY,
            default_machine,
            machines: FastMap::default(),
        }
    }

    /// The window size N.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The machine readings without `machine_id` belong to.
    pub fn default_machine(&self) -> &MachineId {
        &self.default_machine
    }

    /// From now on, recognises duplicates exactly against a store instead of a bounded memory:
    /// a reading later than the machine's newest is new; an earlier one is a duplicate when
    /// the caller found its fingerprint in the store ([`Pipeline::lookups`], then
    /// [`Pipeline::process_batch_with`]).
    pub fn dedup_by_store(&mut self) {
        self.dedup_memory = 0;
        for state in self.machines.values_mut() {
            state.recent = RecentSet::default();
        }
    }

    /// Which (machine, timestamp) pairs of a batch arriving at `now` must be looked up in the
    /// store before it is processed (empty without a store, or when all is new).
    pub fn lookups(&self, readings: &[Reading], now: Timestamp) -> crate::dedup::Wanted {
        if self.dedup_memory > 0 {
            return Default::default();
        }
        crate::dedup::lookups(readings, &self.default_machine, now, |m| {
            self.machines.get(m).and_then(|s| s.newest)
        })
    }

    /// Remembers that `machine` has a record at `ts` stored: later readings are new.
    pub fn note_newest(&mut self, machine: &MachineId, ts: Timestamp) {
        let state = self.machines.entry(machine.clone()).or_default();
        state.newest = Some(state.newest.map_or(ts.as_nanos(), |n| n.max(ts.as_nanos())));
    }

    /// Processes one reading that arrived at `now`.
    pub fn process(&mut self, reading: Reading, now: Timestamp) -> Outcome {
        self.process_with(reading, now, &mut Found::default())
    }

    /// Processes one reading; `found` holds what the store has at the times looked up and
    /// takes this reading's fingerprint when it is new.
    fn process_with(&mut self, reading: Reading, now: Timestamp, found: &mut Found) -> Outcome {
        let machine_id = reading
            .machine_id
            .unwrap_or_else(|| self.default_machine.clone());
        let timestamp = reading.timestamp.unwrap_or(now);
        let window = self.window;
        let state = match self.machines.get_mut(machine_id.as_str()) {
            Some(s) => s,
            None => self.machines.entry(machine_id.clone()).or_default(),
        };
        let fp = fingerprint(timestamp, &reading.fields);
        if self.dedup_memory > 0 {
            if !state.recent.insert(fp, self.dedup_memory) {
                return Outcome::Duplicate;
            }
        } else {
            let later = state.newest.is_none_or(|n| fp.0 > n) || reading.timestamp.is_none();
            if later {
                // A later reading of the same batch may repeat this one.
                found.taken(&machine_id, fp);
            } else if !found.insert(&machine_id, fp) {
                return Outcome::Duplicate;
            }
            state.newest = Some(state.newest.map_or(fp.0, |n| n.max(fp.0)));
        }
        let mut averages = Averages::new();
        for f in &reading.fields {
            if let Value::Number(v) = f.value {
                let w = match state.windows.get_mut(f.name.as_str()) {
                    Some(w) => w,
                    None => state
                        .windows
                        .entry(f.name.clone())
                        .or_insert_with(|| MovingAverage::new(window)),
                };
                averages.push(w.push(v));
            }
        }
        Outcome::Record(ProcessedRecord {
            machine_id,
            timestamp,
            fields: reading.fields,
            averages,
        })
    }

    /// Processes a batch that arrived at `now`: the new records, and how many readings were
    /// duplicates.
    pub fn process_batch(
        &mut self,
        readings: Vec<Reading>,
        now: Timestamp,
    ) -> (Vec<std::sync::Arc<ProcessedRecord>>, usize) {
        self.process_batch_with(readings, now, Found::default())
    }

    /// As [`Pipeline::process_batch`], with the stored records found at the times
    /// [`Pipeline::lookups`] asked for.
    pub fn process_batch_with(
        &mut self,
        readings: Vec<Reading>,
        now: Timestamp,
        mut found: Found,
    ) -> (Vec<std::sync::Arc<ProcessedRecord>>, usize) {
        let mut records = Vec::with_capacity(readings.len());
        let mut duplicates = 0;
        for r in readings {
            match self.process_with(r, now, &mut found) {
                Outcome::Record(rec) => records.push(std::sync::Arc::new(rec)),
                Outcome::Duplicate => duplicates += 1,
            }
        }
        (records, duplicates)
    }

    /// Forgets every window and every remembered reading (before a rebuild from the store).
    pub fn reset(&mut self) {
        self.machines.clear();
    }

    /// Replays a stored record into the windows and the duplicate memory, without output:
    /// how a restarted service picks up where it stopped.
    pub fn restore(&mut self, record: &ProcessedRecord) {
        let window = self.window;
        let state = self.machines.entry(record.machine_id.clone()).or_default();
        if self.dedup_memory > 0 {
            state.recent.insert(
                fingerprint(record.timestamp, &record.fields),
                self.dedup_memory,
            );
        }
        let ts = record.timestamp.as_nanos();
        state.newest = Some(state.newest.map_or(ts, |n| n.max(ts)));
        for f in &record.fields {
            if let Value::Number(v) = f.value {
                state
                    .windows
                    .entry(f.name.clone())
                    .or_insert_with(|| MovingAverage::new(window))
                    .push(v);
            }
        }
    }

    /// The machines seen so far.
    pub fn machines(&self) -> impl Iterator<Item = &MachineId> {
        self.machines.keys()
    }

    /// The numeric parameters `machine` has a window of, sorted; `None` for a machine never
    /// seen.
    pub fn parameters(&self, machine: &MachineId) -> Option<Vec<ParamName>> {
        let state = self.machines.get(machine)?;
        let mut names: Vec<ParamName> = state.windows.keys().cloned().collect();
        names.sort();
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Field, parse_reading};
    use proptest::prelude::*;

    fn m(id: &str) -> MachineId {
        MachineId::parse(id).unwrap()
    }

    fn record(p: &mut Pipeline, json: &str) -> Outcome {
        p.process(
            parse_reading(json.as_bytes()).unwrap(),
            Timestamp::from_nanos(0),
        )
    }

    fn json(o: &Outcome) -> String {
        match o {
            Outcome::Record(r) => serde_json::to_string(r).unwrap(),
            Outcome::Duplicate => "duplicate".into(),
        }
    }

    #[test]
    fn seed_example_through_the_pipeline() {
        let mut p = Pipeline::new(5, m("machine-1"));
        let avgs: Vec<f64> = [70, 72, 75, 71, 74, 76, 78]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let o = record(
                    &mut p,
                    &format!(r#"{{"timestamp": {i}, "temperature": {t}}}"#),
                );
                let Outcome::Record(r) = o else {
                    panic!("duplicate")
                };
                r.averages[0]
            })
            .collect();
        assert_eq!(
            avgs,
            vec![70.0, 71.0, 72.333_333_333_333_33, 72.0, 72.4, 73.6, 74.8]
        );
    }

    #[test]
    fn record_shape() {
        let mut p = Pipeline::new(5, m("machine-1"));
        let o = record(
            &mut p,
            r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30.5, "status": "RUNNING"}"#,
        );
        assert_eq!(
            json(&o),
            r#"{"machine_id":"machine-1","timestamp":"2024-10-27T12:00:00Z","temperature":70,"speed":30.5,"status":"RUNNING","temperature_avg":70,"speed_avg":30.5}"#
        );
    }

    #[test]
    fn missing_time_is_arrival_time() {
        let mut p = Pipeline::new(5, m("m"));
        let o = p.process(
            parse_reading(br#"{"x": 1}"#).unwrap(),
            Timestamp::from_nanos(5_000_000_000),
        );
        assert!(json(&o).contains(r#""timestamp":"1970-01-01T00:00:05Z""#));
    }

    #[test]
    fn duplicates_are_recognised_whatever_the_field_order() {
        let mut p = Pipeline::new(5, m("m"));
        let a = r#"{"timestamp": 1, "x": 1, "s": "A"}"#;
        assert!(matches!(record(&mut p, a), Outcome::Record(_)));
        assert_eq!(record(&mut p, a), Outcome::Duplicate);
        assert_eq!(
            record(&mut p, r#"{"s": "A", "x": 1, "timestamp": 1}"#),
            Outcome::Duplicate
        );
        // Any difference makes a new reading: value, time, machine, an extra field.
        for other in [
            r#"{"timestamp": 1, "x": 2, "s": "A"}"#,
            r#"{"timestamp": 2, "x": 1, "s": "A"}"#,
            r#"{"timestamp": 1, "x": 1, "s": "A", "machine_id": "other"}"#,
            r#"{"timestamp": 1, "x": 1, "s": "A", "y": 0}"#,
            r#"{"timestamp": 1, "x": 1, "s": "B"}"#,
        ] {
            assert!(
                matches!(record(&mut p, other), Outcome::Record(_)),
                "{other}"
            );
        }
        // The duplicate did not move the window: the average is still that of 1, 2, 1, 1, 1.
        let Outcome::Record(r) = record(&mut p, r#"{"timestamp": 9, "x": 4}"#) else {
            panic!()
        };
        assert_eq!(r.averages.as_slice(), [(2.0 + 1.0 + 1.0 + 1.0 + 4.0) / 5.0]);
    }

    #[test]
    fn duplicate_memory_is_bounded() {
        let mut set = RecentSet::default();
        for ts in (0..1000).chain((0..1000).rev().step_by(3).map(|t| t * 2 + 5000)) {
            assert!(set.insert((ts, 0), 100), "{ts} is new");
        }
        assert!(set.in_order.len() <= 100 && set.late.len() <= 100);
        // The latest in order and the latest late ones are remembered.
        for ts in set
            .in_order
            .iter()
            .chain(&set.late)
            .map(|f| f.0)
            .collect::<Vec<_>>()
        {
            assert!(!set.insert((ts, 0), 100), "{ts} forgotten");
            assert!(set.insert((ts, 1), 100), "{ts} with other fields is new");
        }
    }

    #[test]
    fn restore_continues_the_windows() {
        let mut whole = Pipeline::new(3, m("m"));
        let mut records = Vec::new();
        for i in 0..10 {
            if let Outcome::Record(r) = record(
                &mut whole,
                &format!(r#"{{"timestamp": {i}, "x": {}}}"#, i * i),
            ) {
                records.push(r);
            }
        }
        let mut restarted = Pipeline::new(3, m("m"));
        for r in &records[7..] {
            restarted.restore(r);
        }
        let next = r#"{"timestamp": 100, "x": 5}"#;
        assert_eq!(record(&mut restarted, next), record(&mut whole, next));
        assert_eq!(
            record(&mut restarted, r#"{"timestamp": 9, "x": 81}"#),
            Outcome::Duplicate
        );
    }

    proptest! {
        /// Never a false duplicate; and while fewer than `limit` readings came in each way, it
        /// is an exact set.
        #[test]
        fn recent_set_never_invents_a_duplicate(
            limit in 1usize..40,
            fps in prop::collection::vec((0i64..60, 0u64..3), 0..300),
        ) {
            let mut set = RecentSet::default();
            let mut seen = std::collections::HashSet::new();
            for fp in fps {
                let fresh = set.insert(fp, limit);
                if !fresh {
                    prop_assert!(seen.contains(&fp), "{:?} called a duplicate but never seen", fp);
                }
                let small = seen.len() < limit;
                if small {
                    prop_assert_eq!(fresh, !seen.contains(&fp), "{:?}", fp);
                }
                seen.insert(fp);
            }
        }

        /// Random machines, missing parameters and window sizes against a naive recomputation
        /// over each (machine, parameter)'s full history.
        #[test]
        fn matches_naive_per_machine_and_parameter(
            window in 1usize..50,
            readings in prop::collection::vec(
                (0u8..4, prop::option::of(-1e6f64..1e6), prop::option::of(-1e3f64..1e3)),
                1..300,
            ),
        ) {
            let mut p = Pipeline::new(window, m("default"));
            let mut history: HashMap<(u8, &str), Vec<f64>> = HashMap::new();
            for (i, (machine, a, b)) in readings.iter().enumerate() {
                let mut r = Reading {
                    machine_id: (*machine != 0).then(|| m(&format!("m{machine}"))),
                    timestamp: Some(Timestamp::from_nanos(i as i64)),
                    fields: Default::default(),
                };
                for (name, v) in [("a", a), ("b", b)] {
                    if let Some(v) = v {
                        r.fields.push(Field { name: ParamName::parse(name).unwrap(), value: Value::Number(*v) });
                    }
                }
                let Outcome::Record(rec) = p.process(r, Timestamp::from_nanos(0)) else {
                    panic!("no duplicates here: every timestamp differs");
                };
                let want_machine = if *machine == 0 { "default".to_string() } else { format!("m{machine}") };
                prop_assert_eq!(rec.machine_id.as_str(), want_machine.as_str());
                let mut k = 0;
                for (name, v) in [("a", a), ("b", b)] {
                    if let Some(v) = v {
                        let h = history.entry((*machine, name)).or_default();
                        h.push(*v);
                        let tail = &h[h.len().saturating_sub(window)..];
                        let naive = tail.iter().sum::<f64>() / tail.len() as f64;
                        let got = rec.averages[k];
                        prop_assert!((got - naive).abs() <= 1e-9 * naive.abs().max(1.0),
                            "{} {}: {} vs {}", want_machine, name, got, naive);
                        k += 1;
                    }
                }
                prop_assert_eq!(k, rec.averages.len());
            }
        }
    }
}
