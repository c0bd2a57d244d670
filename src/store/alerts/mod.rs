//! What stores keep of alerts (SPEC §6, §7): the rules set through the API, each pending or
//! firing alert, the history of firings, and the outbox of notifications not yet delivered.
//! Kept as JSON bodies, which the alert core reads and writes; the stores only index them.
//!
//! One [`AlertWrite`] is one transaction: the state an engine change leaves, its history row
//! and its notifications are stored together or not at all, so that a restart never finds a
//! firing alert without its notification or the other way round.

/// The migration, the same in SQLite and PostgreSQL, that creates the tables of API rules
/// and alert states; each store's own migration after it adds the history and the outbox.
pub(crate) const TABLES: &str = "CREATE TABLE alert_rules (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE TABLE alert_states (
        rule TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (rule, machine_id)
    );";

pub(crate) mod memory;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The state of one (rule, machine) after a change: its alert's JSON, or none once it is ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// The rule's name.
    pub rule: String,
    /// The machine.
    pub machine_id: String,
    /// The pending or firing alert as JSON; `None`: it is ok, forget it.
    pub body: Option<String>,
}

/// One firing in the history, written when it fires and again when it resolves (the same
/// rule, machine and start replace the row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The rule's name.
    pub rule: String,
    /// The machine.
    pub machine_id: String,
    /// When its condition started to hold, in nanoseconds: with rule and machine, the key.
    pub since: i64,
    /// When it fired, in nanoseconds: what the history is ordered and filtered by.
    pub fired_at: i64,
    /// The alert as JSON.
    pub body: String,
}

/// A notification waiting for its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its place in the outbox: later notifications have larger ids.
    pub id: i64,
    /// The target as given to `--notify`.
    pub target: String,
    /// What to send, as JSON (the change with its alert).
    pub body: String,
}

/// One transaction of alert bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertWrite {
    /// Rules set (`Some(json)`) or deleted (`None`) through the API, by name.
    pub rules: Vec<(String, Option<String>)>,
    /// States after changes, in order.
    pub states: Vec<StateRow>,
    /// Firings and resolutions for the history.
    pub history: Vec<HistoryRow>,
    /// Notifications to queue: (target, body), in order.
    pub outbox: Vec<(String, String)>,
    /// Ids of notifications their target has taken: removed from the outbox.
    pub delivered: Vec<i64>,
}

impl AlertWrite {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.states.is_empty()
            && self.history.is_empty()
            && self.outbox.is_empty()
            && self.delivered.is_empty()
    }
}

/// Which past firings `GET /alerts/history` wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this machine.
    pub machine_id: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Fired at or after (nanoseconds).
    pub since: Option<i64>,
    /// Fired at or before (nanoseconds).
    pub until: Option<i64>,
    /// At most this many, the newest; answered oldest first.
    pub limit: usize,
}

impl HistoryQuery {
    /// Whether a row passes the filters.
    pub(crate) fn admits(&self, h: &HistoryRow) -> bool {
        self.machine_id.as_ref().is_none_or(|m| *m == h.machine_id)
            && self.rule.as_ref().is_none_or(|r| *r == h.rule)
            && self.since.is_none_or(|s| h.fired_at >= s)
            && self.until.is_none_or(|u| h.fired_at <= u)
    }
}
