//! The job-status lifecycle (SPEC §4): the statuses, which changes are allowed, and a book of
//! each machine's current status with the history of changes. Pure: persistence is the
//! store's job, the book only decides.

use std::collections::HashMap;
use std::fmt;

use compact_str::CompactString;
use serde::Serialize;

use crate::reading::MachineId;
use crate::timestamp::Timestamp;

/// A machine's job status, exact upper case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// No job.
    Idle,
    /// A job was set up and is about to run.
    Started,
    /// The job runs.
    Running,
    /// The job is held.
    Paused,
    /// The job finished.
    Completed,
    /// The job broke off.
    Failed,
}

use JobStatus::*;

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [Idle, Started, Running, Paused, Completed, Failed];

    /// The statuses a machine may move to from this one (SPEC §4's table).
    pub fn allowed_next(self) -> &'static [JobStatus] {
        match self {
            Idle => &[Started, Running],
            Started => &[Running, Paused, Completed, Failed, Idle],
            Running => &[Paused, Completed, Failed],
            Paused => &[Running, Completed, Failed],
            Completed | Failed => &[Idle, Started, Running],
        }
    }

    /// Whether moving from `self` to `to` is allowed.
    pub fn can_become(self, to: JobStatus) -> bool {
        self.allowed_next().contains(&to)
    }

    /// The wire name, such as `RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Idle => "IDLE",
            Started => "STARTED",
            Running => "RUNNING",
            Paused => "PAUSED",
            Completed => "COMPLETED",
            Failed => "FAILED",
        }
    }

    /// Reads an exact upper-case name; the error lists the valid ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a job status: use one of {}",
                    list(&JobStatus::ALL)
                )
            })
    }
}

/// `A, B, C` for error messages.
pub fn list(statuses: &[JobStatus]) -> String {
    statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a machine's status, as stored and as answered by `POST /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusChange {
    /// The machine.
    #[schema(value_type = String, example = "press-01")]
    pub machine_id: MachineId,
    /// The new status.
    pub status: JobStatus,
    /// The status before.
    pub previous: JobStatus,
    /// When the change was made.
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
    /// Why, when the request said (at most 256 bytes), such as a stop reason.
    #[schema(value_type = Option<String>, max_length = 256)]
    pub reason: Option<CompactString>,
}

/// The longest reason a status change keeps, in bytes.
pub const MAX_REASON: usize = 256;

/// A refused change: SPEC §4 answers it with 409 and the allowed next statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{machine_id} cannot go from {from} to {to}: allowed next are {}", list(from.allowed_next()))]
pub struct TransitionRefused {
    /// The machine.
    pub machine_id: MachineId,
    /// Its current status.
    pub from: JobStatus,
    /// The status asked for.
    pub to: JobStatus,
}

/// What a request to set a status came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A real change, to be stored and applied.
    Change(StatusChange),
    /// The machine already has that status: nothing changes.
    Unchanged {
        status: JobStatus,
        since: Option<Timestamp>,
    },
}

/// The current status of every machine that has one.
#[derive(Debug, Clone, Default)]
pub struct StatusBook {
    current: HashMap<MachineId, (JobStatus, Timestamp)>,
}

impl StatusBook {
    /// An empty book: every machine is `IDLE`.
    pub fn new() -> Self {
        StatusBook::default()
    }

    /// A machine's status and since when; never set: `IDLE`, no time.
    pub fn get(&self, machine: &MachineId) -> (JobStatus, Option<Timestamp>) {
        match self.current.get(machine) {
            Some((s, t)) => (*s, Some(*t)),
            None => (Idle, None),
        }
    }

    /// Decides whether `machine` may move to `to` at `now`, without changing the book.
    pub fn decide(
        &self,
        machine: &MachineId,
        to: JobStatus,
        now: Timestamp,
    ) -> Result<Decision, TransitionRefused> {
        let (from, since) = self.get(machine);
        // Never before the change it follows (a clock stepping back): the history stays in
        // time order, which time in state relies on.
        let now = since.map_or(now, |s| now.max(s));
        if from == to {
            return Ok(Decision::Unchanged { status: to, since });
        }
        if !from.can_become(to) {
            return Err(TransitionRefused {
                machine_id: machine.clone(),
                from,
                to,
            });
        }
        Ok(Decision::Change(StatusChange {
            machine_id: machine.clone(),
            status: to,
            previous: from,
            since: now,
            reason: None,
        }))
    }

    /// Applies a change (decided here, or read back from the store on restart).
    pub fn apply(&mut self, change: &StatusChange) {
        self.current
            .insert(change.machine_id.clone(), (change.status, change.since));
    }

    /// Every machine with a status, sorted by id.
    pub fn all(&self) -> Vec<(MachineId, JobStatus, Timestamp)> {
        let mut v: Vec<_> = self
            .current
            .iter()
            .map(|(m, (s, t))| (m.clone(), *s, *t))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §4's table, written out independently as (from, to) pairs.
    const ALLOWED: &[(&str, &str)] = &[
        ("IDLE", "STARTED"),
        ("IDLE", "RUNNING"),
        ("STARTED", "RUNNING"),
        ("STARTED", "PAUSED"),
        ("STARTED", "COMPLETED"),
        ("STARTED", "FAILED"),
        ("STARTED", "IDLE"),
        ("RUNNING", "PAUSED"),
        ("RUNNING", "COMPLETED"),
        ("RUNNING", "FAILED"),
        ("PAUSED", "RUNNING"),
        ("PAUSED", "COMPLETED"),
        ("PAUSED", "FAILED"),
        ("COMPLETED", "IDLE"),
        ("COMPLETED", "STARTED"),
        ("COMPLETED", "RUNNING"),
        ("FAILED", "IDLE"),
        ("FAILED", "STARTED"),
        ("FAILED", "RUNNING"),
    ];

    #[test]
    fn transition_table_is_spec_4() {
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let want = ALLOWED.contains(&(from.as_str(), to.as_str()));
                assert_eq!(from.can_become(to), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn parse_is_exact_upper_case() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Ok(s));
        }
        let err = JobStatus::parse("running").unwrap_err();
        assert!(
            err.contains("IDLE, STARTED, RUNNING, PAUSED, COMPLETED, FAILED"),
            "{err}"
        );
        assert!(JobStatus::parse("").is_err());
    }

    #[test]
    fn a_change_is_never_dated_before_the_one_it_follows() {
        let m = MachineId::parse("press-01").unwrap();
        let mut book = StatusBook::new();
        let Decision::Change(c) = book
            .decide(&m, Running, Timestamp::from_nanos(100))
            .unwrap()
        else {
            panic!()
        };
        book.apply(&c);
        // The clock stepped back: the change keeps the history in time order.
        let Decision::Change(c) = book.decide(&m, Paused, Timestamp::from_nanos(40)).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.since, Timestamp::from_nanos(100));
    }

    #[test]
    fn book_decides_and_applies() {
        let m = MachineId::parse("press-01").unwrap();
        let mut book = StatusBook::new();
        assert_eq!(book.get(&m), (Idle, None));
        let t = Timestamp::from_nanos(1);
        let Decision::Change(c) = book.decide(&m, Started, t).unwrap() else {
            panic!()
        };
        assert_eq!((c.previous, c.status), (Idle, Started));
        book.apply(&c);
        assert_eq!(book.get(&m), (Started, Some(t)));
        assert_eq!(
            book.decide(&m, Started, Timestamp::from_nanos(2)).unwrap(),
            Decision::Unchanged {
                status: Started,
                since: Some(t)
            }
        );
        book.apply(&StatusChange {
            machine_id: m.clone(),
            status: Running,
            previous: Started,
            since: t,
            reason: None,
        });
        let err = book.decide(&m, Idle, t).unwrap_err();
        assert_eq!(
            err.to_string(),
            "press-01 cannot go from RUNNING to IDLE: allowed next are PAUSED, COMPLETED, FAILED"
        );
    }
}
