//! The state machine of SPEC §7, per (rule, machine): `ok → pending → firing → ok`. Fed the
//! pipeline's records in order, the job-status changes and a wall-clock tick; gives back the
//! changes it made. Pure and deterministic: the same inputs give the same changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::rule::{Condition, Of, Rule, RuleName, Severity};
use crate::pipeline::ProcessedRecord;
use crate::reading::{MachineId, ParamName, Value};
use crate::status::{JobStatus, StatusChange};
use crate::timestamp::Timestamp;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// The condition has held for `for`: notified.
    Firing,
    /// Over (resolved, or a pending one that never fired).
    Ok,
}

/// One alert of one rule on one machine, as `GET /alerts` shows it (SPEC §7).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: RuleName,
    /// The machine.
    pub machine_id: MachineId,
    /// The watched parameter, if the rule has one.
    pub parameter: Option<ParamName>,
    /// Where it stands.
    pub state: State,
    /// The rule's severity.
    pub severity: Severity,
    /// The value that made the last change (a job status for status rules; none for stale).
    pub value: Option<Value>,
    /// What the value was held against: the bound, `[low, high]`, the moving average, the
    /// statuses or the stale duration.
    pub bound: Json,
    /// When the condition started to hold (the first reading of the run).
    pub since: Timestamp,
    /// When it fired.
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    pub resolved_at: Option<Timestamp>,
}

impl Alert {
    /// Reads an alert back from its JSON (as a store keeps it); `None` if it is not one.
    pub fn from_json(v: &Json) -> Option<Alert> {
        let time = |k: &str| -> Option<Option<Timestamp>> {
            match v.get(k) {
                None | Some(Json::Null) => Some(None),
                Some(Json::String(s)) => Timestamp::parse(s).ok().map(Some),
                Some(_) => None,
            }
        };
        let state = match v.get("state")?.as_str()? {
            "pending" => State::Pending,
            "firing" => State::Firing,
            "ok" => State::Ok,
            _ => return None,
        };
        let severity = match v.get("severity")?.as_str()? {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return None,
        };
        let value = match v.get("value") {
            Some(Json::Number(n)) => Some(Value::Number(n.as_f64()?)),
            Some(Json::String(s)) => Some(Value::State(s.as_str().into())),
            _ => None,
        };
        let parameter = match v.get("parameter") {
            Some(Json::String(p)) => Some(ParamName::parse(p).ok()?),
            _ => None,
        };
        Some(Alert {
            rule: RuleName::parse(v.get("rule")?.as_str()?).ok()?,
            machine_id: MachineId::parse(v.get("machine_id")?.as_str()?).ok()?,
            parameter,
            state,
            severity,
            value,
            bound: v.get("bound").cloned().unwrap_or(Json::Null),
            since: time("since")??,
            fired_at: time("fired_at")?,
            resolved_at: time("resolved_at")?,
        })
    }
}

/// What kind of change the engine made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// ok → pending.
    Pending,
    /// → firing: notified.
    Fired,
    /// firing → ok: notified.
    Resolved,
    /// pending → ok without firing: not notified.
    Cancelled,
}

impl ChangeKind {
    /// Whether the change is a notification (SPEC §7: each firing and each resolution).
    pub fn notifies(self) -> bool {
        matches!(self, ChangeKind::Fired | ChangeKind::Resolved)
    }
}

/// One change of one alert, with the alert as it is after it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The alert after the change.
    pub alert: Alert,
}

/// One rule's state on one machine: the current alert, if pending or firing.
#[derive(Debug, Clone)]
struct Slot {
    rule: Arc<Rule>,
    alert: Option<Alert>,
}

/// What the engine keeps per machine: a slot per matching rule, when it last sent a reading
/// (wall clock, for stale rules), and its job status.
#[derive(Debug, Clone)]
struct Machine {
    slots: Vec<Slot>,
    /// The numeric rules' checks by parameter, so that a record finds the rules of each of its
    /// parameters with one name comparison per parameter rather than one per rule, and runs
    /// through them in one small array.
    groups: Vec<(ParamName, Vec<Check>)>,
    /// The stale rules' slots.
    stale: Vec<usize>,
    last_seen: Option<Timestamp>,
    status: JobStatus,
}

impl Machine {
    fn new(slots: Vec<Slot>) -> Self {
        let mut m = Machine {
            slots,
            groups: Vec::new(),
            stale: Vec::new(),
            last_seen: None,
            status: JobStatus::Idle,
        };
        m.index();
        m
    }

    /// Rebuilds `groups` and `stale` from the slots.
    fn index(&mut self) {
        self.groups.clear();
        self.stale.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            let test = match slot.rule.condition {
                Condition::Above(b) => Test::Above(b),
                Condition::Below(b) => Test::Below(b),
                Condition::Outside(lo, hi) => Test::Outside(lo, hi),
                Condition::Deviation(t) => Test::Deviation(t),
                Condition::Stale => {
                    self.stale.push(i);
                    continue;
                }
                Condition::Status(_) => continue,
            };
            let Some(p) = &slot.rule.parameter else {
                continue;
            };
            let check = Check {
                slot: i,
                test,
                average: slot.rule.of == Of::Average,
                phase: phase_of(&slot.alert),
            };
            match self.groups.iter_mut().find(|(g, _)| g == p) {
                Some((_, list)) => list.push(check),
                None => self.groups.push((p.clone(), vec![check])),
            }
        }
    }
}

/// A numeric rule's test, copied out of its rule so that judging a record reads one small
/// array instead of following each slot to its rule.
#[derive(Debug, Clone, Copy)]
enum Test {
    Above(f64),
    Below(f64),
    Outside(f64, f64),
    Deviation(f64),
}

/// Where a slot's alert stands, mirrored next to its test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ok,
    Pending,
    Firing,
}

fn phase_of(alert: &Option<Alert>) -> Phase {
    match alert.as_ref().map(|a| a.state) {
        Some(State::Firing) => Phase::Firing,
        Some(State::Pending) => Phase::Pending,
        _ => Phase::Ok,
    }
}

/// One numeric rule of a machine, ready to judge.
#[derive(Debug, Clone, Copy)]
struct Check {
    slot: usize,
    test: Test,
    average: bool,
    phase: Phase,
}

/// The alert engine: every rule against every machine it matches.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Sorted by name.
    rules: Vec<Arc<Rule>>,
    /// A hash map, looked up once per record; answers are sorted where order shows.
    machines: HashMap<MachineId, Machine, foldhash::fast::FixedState>,
    /// Whether any rule needs the clock (stale, status): without, a tick has nothing to do.
    clocked: bool,
}

/// Whether a numeric test holds for a value and its moving average, the number it watched,
/// and what it held it against (made JSON only when the state changes: most readings change
/// nothing, and a range's JSON is an allocation).
#[inline]
fn judge(test: Test, average: bool, value: f64, avg: f64) -> (bool, f64, Bound) {
    let watched = if average { avg } else { value };
    match test {
        Test::Above(b) => (watched > b, watched, Bound::One(b)),
        Test::Below(b) => (watched < b, watched, Bound::One(b)),
        Test::Outside(lo, hi) => (watched < lo || watched > hi, watched, Bound::Range(lo, hi)),
        Test::Deviation(t) => ((value - avg).abs() > t * avg.abs(), value, Bound::One(avg)),
    }
}

/// What a numeric rule held a value against, before it becomes JSON.
#[derive(Debug, Clone, Copy)]
enum Bound {
    One(f64),
    Range(f64, f64),
}

impl Bound {
    fn to_json(self) -> Json {
        match self {
            Bound::One(b) => json!(b),
            Bound::Range(lo, hi) => json!([lo, hi]),
        }
    }
}

fn stale_bound(rule: &Rule) -> Json {
    let d = std::time::Duration::from_nanos(rule.for_nanos.max(0) as u64);
    json!(humantime::format_duration(d).to_string())
}

fn new_alert(
    rule: &Rule,
    machine: &MachineId,
    value: Option<Value>,
    bound: Json,
    since: Timestamp,
) -> Alert {
    Alert {
        rule: rule.name.clone(),
        machine_id: machine.clone(),
        parameter: rule.parameter.clone(),
        state: State::Pending,
        severity: rule.severity,
        value,
        bound,
        since,
        fired_at: None,
        resolved_at: None,
    }
}

/// Moves one slot by one observation: `meets` at `at`, with the value and bound seen.
fn step(
    slot: &mut Slot,
    machine: &MachineId,
    meets: bool,
    at: Timestamp,
    value: Option<Value>,
    bound: Json,
    out: &mut Vec<Change>,
) {
    let for_nanos = slot.rule.for_nanos;
    if meets {
        let fresh = slot.alert.is_none();
        let alert = match &mut slot.alert {
            Some(a) if a.state == State::Firing => return,
            Some(a) => a,
            None => {
                let a = new_alert(&slot.rule, machine, value.clone(), bound.clone(), at);
                slot.alert.insert(a)
            }
        };
        alert.value = value;
        alert.bound = bound;
        let held = at.as_nanos().saturating_sub(alert.since.as_nanos());
        if held >= for_nanos {
            alert.state = State::Firing;
            alert.fired_at = Some(at);
            out.push(Change {
                kind: ChangeKind::Fired,
                alert: alert.clone(),
            });
        } else if fresh {
            out.push(Change {
                kind: ChangeKind::Pending,
                alert: alert.clone(),
            });
        }
    } else if let Some(mut alert) = slot.alert.take() {
        let kind = if alert.state == State::Firing {
            alert.resolved_at = Some(at);
            ChangeKind::Resolved
        } else {
            ChangeKind::Cancelled
        };
        alert.state = State::Ok;
        alert.value = value;
        alert.bound = bound;
        out.push(Change { kind, alert });
    }
}

impl Engine {
    /// An engine with these rules (names unique: a later rule of the same name replaces an
    /// earlier one).
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut e = Engine::default();
        e.set_rules(rules, Timestamp::MIN);
        e
    }

    /// The rules, sorted by name.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Replaces the rules. A machine keeps its alerts of rules that did not change; alerts of
    /// a rule removed or changed end: a firing one resolves at `now` (so that whoever was told
    /// it fired is told it is over), a pending one is cancelled.
    pub fn set_rules(&mut self, rules: Vec<Rule>, now: Timestamp) -> Vec<Change> {
        let mut by_name: BTreeMap<RuleName, Arc<Rule>> = BTreeMap::new();
        for r in rules {
            by_name.insert(r.name.clone(), Arc::new(r));
        }
        // Rules that stay as they were keep their alerts; decided once, not per machine.
        let unchanged: std::collections::BTreeSet<RuleName> = self
            .rules
            .iter()
            .filter(|old| by_name.get(&old.name).is_some_and(|new| **new == ***old))
            .map(|old| old.name.clone())
            .collect();
        self.rules = by_name.into_values().collect();
        self.clocked = self
            .rules
            .iter()
            .any(|r| matches!(r.condition, Condition::Stale | Condition::Status(_)));
        let mut out = Vec::new();
        let mut names: Vec<MachineId> = self.machines.keys().cloned().collect();
        names.sort();
        for id in names {
            let Some(m) = self.machines.get_mut(&id) else {
                continue;
            };
            let mut old: Vec<Slot> = std::mem::take(&mut m.slots);
            for rule in &self.rules {
                if !rule.matches(id.as_str()) {
                    continue;
                }
                let kept = old
                    .iter()
                    .position(|s| s.rule.name == rule.name && unchanged.contains(&rule.name))
                    .map(|i| old.swap_remove(i).alert);
                m.slots.push(Slot {
                    rule: rule.clone(),
                    alert: kept.flatten(),
                });
            }
            m.index();
            old.sort_by(|a, b| a.rule.name.cmp(&b.rule.name));
            for mut s in old {
                let bound = s
                    .alert
                    .as_ref()
                    .map(|a| a.bound.clone())
                    .unwrap_or_default();
                let value = s.alert.as_ref().and_then(|a| a.value.clone());
                step(&mut s, &id, false, now, value, bound, &mut out);
            }
        }
        out
    }

    fn machine(&mut self, id: &MachineId) -> &mut Machine {
        let rules = &self.rules;
        self.machines.entry(id.clone()).or_insert_with(|| {
            Machine::new(
                rules
                    .iter()
                    .filter(|r| r.matches(id.as_str()))
                    .map(|r| Slot {
                        rule: r.clone(),
                        alert: None,
                    })
                    .collect(),
            )
        })
    }

    /// Judges one processed record, in pipeline order; `arrived` is the wall-clock time it was
    /// taken (stale rules measure silence by it).
    pub fn on_record(&mut self, rec: &ProcessedRecord, arrived: Timestamp, out: &mut Vec<Change>) {
        let m = self.machine(&rec.machine_id);
        m.last_seen = Some(m.last_seen.map_or(arrived, |t| t.max(arrived)));
        let Machine {
            slots,
            groups,
            stale,
            ..
        } = m;
        for &i in stale.iter() {
            let slot = &mut slots[i];
            let has = slot
                .rule
                .parameter
                .as_ref()
                .is_none_or(|p| rec.get(p.as_str()).is_some());
            if has && slot.alert.is_some() {
                let bound = stale_bound(&slot.rule);
                step(slot, &rec.machine_id, false, arrived, None, bound, out);
            }
        }
        for (name, v, avg) in rec.numeric() {
            let Some((_, group)) = groups.iter_mut().find(|(p, _)| p == name) else {
                continue;
            };
            for check in group.iter_mut() {
                let (meets, watched, bound) = judge(check.test, check.average, v, avg);
                // Nothing to change: still ok, or already firing.
                if (!meets && check.phase == Phase::Ok) || (meets && check.phase == Phase::Firing) {
                    continue;
                }
                let slot = &mut slots[check.slot];
                step(
                    slot,
                    &rec.machine_id,
                    meets,
                    rec.timestamp,
                    Some(Value::Number(watched)),
                    bound.to_json(),
                    out,
                );
                check.phase = phase_of(&slot.alert);
            }
        }
    }

    /// Takes a job-status change: status rules start or end at its time.
    pub fn on_status(&mut self, change: &StatusChange, out: &mut Vec<Change>) {
        let m = self.machine(&change.machine_id);
        m.status = change.status;
        for slot in &mut m.slots {
            if let Condition::Status(list) = &slot.rule.condition {
                let meets = list.contains(&change.status);
                let value = Some(Value::State(change.status.as_str().into()));
                let bound = json!(list);
                step(
                    slot,
                    &change.machine_id,
                    meets,
                    change.since,
                    value,
                    bound,
                    out,
                );
            }
        }
    }

    /// The wall clock's tick at `now`: stale rules fire for machines silent for their `for`,
    /// and pending status rules fire once their `for` has passed.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Change>) {
        if !self.clocked {
            return;
        }
        let first = out.len();
        for (id, m) in &mut self.machines {
            for slot in &mut m.slots {
                match &slot.rule.condition {
                    Condition::Stale => {
                        let Some(seen) = m.last_seen else { continue };
                        if slot.alert.is_some() {
                            continue;
                        }
                        let silent = now.as_nanos().saturating_sub(seen.as_nanos());
                        if silent >= slot.rule.for_nanos {
                            let mut a =
                                new_alert(&slot.rule, id, None, stale_bound(&slot.rule), seen);
                            a.state = State::Firing;
                            a.fired_at = Some(now);
                            out.push(Change {
                                kind: ChangeKind::Fired,
                                alert: a.clone(),
                            });
                            slot.alert = Some(a);
                        }
                    }
                    Condition::Status(list)
                        if slot
                            .alert
                            .as_ref()
                            .is_some_and(|a| a.state == State::Pending) =>
                    {
                        let value = Some(Value::State(m.status.as_str().into()));
                        step(slot, id, true, now, value, json!(list), out);
                    }
                    _ => {}
                }
            }
        }
        // Machines come out of the hash map in its order: sorted, the output is the same
        // whatever that order.
        out[first..].sort_by(|a, b| {
            (&a.alert.machine_id, &a.alert.rule).cmp(&(&b.alert.machine_id, &b.alert.rule))
        });
    }

    /// Notes that a machine exists (known from the store at a restart) as last seen at
    /// `at`, so that a stale rule fires if it stays silent.
    pub fn note_machine(&mut self, id: &MachineId, at: Timestamp) {
        let m = self.machine(id);
        if m.last_seen.is_none() {
            m.last_seen = Some(at);
        }
    }

    /// Sets a machine's job status without judging (a restart replays the book).
    pub fn note_status(&mut self, id: &MachineId, status: JobStatus) {
        self.machine(id).status = status;
    }

    /// Puts back a pending or firing alert kept by a store: it goes on as it was, so that a
    /// firing one is not notified again and a pending one keeps its start. An alert of a rule
    /// that no longer exists or no longer matches the machine is dropped.
    pub fn restore(&mut self, alert: Alert) -> bool {
        if alert.state == State::Ok {
            return false;
        }
        let m = self.machine(&alert.machine_id);
        match m.slots.iter_mut().find(|s| s.rule.name == alert.rule) {
            Some(slot) => {
                slot.alert = Some(alert);
                m.index();
                true
            }
            None => false,
        }
    }

    /// Every pending and firing alert, by machine then rule.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut ids: Vec<&MachineId> = self.machines.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.machines.get(id))
            .flat_map(|m| m.slots.iter().filter_map(|s| s.alert.clone()))
            .collect()
    }

    /// How many alerts are pending and how many firing.
    pub fn counts(&self) -> (usize, usize) {
        let mut pending = 0;
        let mut firing = 0;
        for a in self
            .machines
            .values()
            .flat_map(|m| m.slots.iter().filter_map(|s| s.alert.as_ref()))
        {
            match a.state {
                State::Pending => pending += 1,
                State::Firing => firing += 1,
                State::Ok => {}
            }
        }
        (pending, firing)
    }
}
