//! The running alert engine: the pure [`crate::core::alerts::Engine`] behind a lock, fed by
//! the service in pipeline order, with the rules of `--rules FILE` and of the API, and a task
//! that stores every change (state, history, outbox) in the store's order before it is shown
//! live and handed to the notifiers. Ingestion never waits for that task.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::core::alerts::{Alert, Change, Engine, Rule, RuleError, RuleName, State};
use crate::pipeline::ProcessedRecord;
use crate::service::Event;
use crate::status::StatusChange;
use crate::store::alerts::{AlertWrite, HistoryRow, StateRow};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Why a rule change through the API was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The rule is not valid; the error names the field (400).
    #[error(transparent)]
    Invalid(#[from] RuleError),
    /// The rule comes from `--rules FILE` and cannot be changed through the API (409).
    #[error(
        "rule {0} comes from the rules file and cannot be changed through the API: edit the file and restart"
    )]
    FileRule(String),
    /// No rule of that name (404).
    #[error("no rule named {0:?}")]
    Unknown(String),
    /// The store could not keep the change.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A rule as `GET /alerts/rules` lists it: its JSON and where it comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedRule {
    /// The rule as JSON.
    #[serde(flatten)]
    pub rule: serde_json::Value,
    /// `file` (read-only) or `api`.
    pub source: &'static str,
}

enum Msg {
    Changes(Vec<Change>),
    Flush(oneshot::Sender<()>),
}

/// The alert engine of a running service.
pub struct Alerting {
    engine: Mutex<Engine>,
    file_rules: BTreeSet<RuleName>,
    store: Arc<dyn Store>,
    /// Targets by their `--notify` text: each change that notifies is queued once per target.
    targets: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    /// Moves on whenever the outbox has new notifications; notifiers watch it.
    wake: watch::Sender<u64>,
}

fn lock(m: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Alerting {
    /// Builds the engine from the file's rules and the rules the store kept, puts back the
    /// alerts the store kept (a firing alert stays firing, a pending one keeps its start) and
    /// starts the task that stores changes. `events` gets an `alert` event per change.
    pub async fn start(
        file_rules: Vec<Rule>,
        store: Arc<dyn Store>,
        targets: Vec<String>,
        events: broadcast::Sender<Event>,
    ) -> Result<Arc<Self>, StoreError> {
        let names: BTreeSet<RuleName> = file_rules.iter().map(|r| r.name.clone()).collect();
        let mut rules = file_rules;
        for (name, body) in store.alert_rules().await? {
            let parsed = serde_json::from_str(&body)
                .map_err(|e| e.to_string())
                .and_then(|v| Rule::from_json(Some(&name), &v).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) if names.contains(&r.name) => {
                    tracing::warn!(rule = %name, "a stored API rule has the name of a file rule: the file's wins");
                }
                Ok(r) => rules.push(r),
                Err(e) => {
                    return Err(StoreError::Damaged(format!(
                        "stored alert rule {name:?} cannot be read: {e}"
                    )));
                }
            }
        }
        let mut engine = Engine::new(rules);
        let now = Timestamp::now();
        let mut restored = 0;
        for body in store.alert_states().await? {
            match serde_json::from_str(&body)
                .ok()
                .as_ref()
                .and_then(Alert::from_json)
            {
                Some(a) => restored += usize::from(engine.restore(a)),
                None => tracing::warn!(alert = %body, "a stored alert cannot be read; dropped"),
            }
        }
        // Machines known before the restart go stale if they stay silent.
        for r in store.latest().await? {
            engine.note_machine(&r.machine_id, now);
        }
        tracing::info!(
            rules = engine.rules().len(),
            alerts = restored,
            "alert engine started"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let alerting = Arc::new(Alerting {
            engine: Mutex::new(engine),
            file_rules: names,
            store,
            targets,
            tx,
            wake: watch::Sender::new(0),
        });
        tokio::spawn(alerting.clone().store_changes(rx, events));
        alerting.count_states();
        Ok(alerting)
    }

    /// Sends changes to the storing task; called with the engine locked, so that they are
    /// queued in the order the engine made them.
    fn queue(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let _ = self.tx.send(Msg::Changes(changes));
        }
    }

    /// Judges new records; called in pipeline order (under the pipeline's lock).
    pub fn on_records(&self, records: &[Arc<ProcessedRecord>], arrived: Timestamp) {
        let mut engine = lock(&self.engine);
        if engine.rules().is_empty() {
            return;
        }
        let mut out = Vec::new();
        for r in records {
            engine.on_record(r, arrived, &mut out);
        }
        self.queue(out);
    }

    /// Takes a job-status change.
    pub fn on_status(&self, change: &StatusChange) {
        let mut engine = lock(&self.engine);
        let mut out = Vec::new();
        engine.on_status(change, &mut out);
        self.queue(out);
    }

    /// The wall clock's tick: stale rules, and status rules whose `for` passed.
    pub fn tick(&self, now: Timestamp) {
        let mut engine = lock(&self.engine);
        let mut out = Vec::new();
        engine.tick(now, &mut out);
        self.queue(out);
    }

    /// Ticks every second on tokio's clock (so that a test can pause and advance it),
    /// counted from the wall clock at the start.
    pub async fn run_ticks(self: Arc<Self>) {
        let wall = Timestamp::now();
        let start = tokio::time::Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let elapsed = i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX);
            self.tick(Timestamp::from_nanos(
                wall.as_nanos().saturating_add(elapsed),
            ));
            self.count_states();
        }
    }

    /// Changes whenever new notifications are in the outbox.
    pub fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Every pending and firing alert now.
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.engine).alerts()
    }

    /// Every rule, file rules first marked as such.
    pub fn rules(&self) -> Vec<ListedRule> {
        lock(&self.engine)
            .rules()
            .iter()
            .map(|r| ListedRule {
                rule: r.to_json(),
                source: if self.file_rules.contains(&r.name) {
                    "file"
                } else {
                    "api"
                },
            })
            .collect()
    }

    /// Sets (adds or replaces) a rule through the API: stored first, then in force.
    pub async fn put_rule(&self, name: &str, body: &serde_json::Value) -> Result<Rule, AlertError> {
        let rule = Rule::from_json(Some(name), body)?;
        if self.file_rules.contains(&rule.name) {
            return Err(AlertError::FileRule(rule.name.to_string()));
        }
        let json = rule.to_json().to_string();
        self.store
            .write_alerts(AlertWrite {
                rules: vec![(rule.name.to_string(), Some(json))],
                ..AlertWrite::default()
            })
            .await?;
        let mut engine = lock(&self.engine);
        let mut rules: Vec<Rule> = engine
            .rules()
            .iter()
            .filter(|r| r.name != rule.name)
            .map(|r| (**r).clone())
            .collect();
        rules.push(rule.clone());
        let out = engine.set_rules(rules, Timestamp::now());
        self.queue(out);
        Ok(rule)
    }

    /// Deletes a rule set through the API; its firing alerts resolve.
    pub async fn delete_rule(&self, name: &str) -> Result<(), AlertError> {
        if self.file_rules.iter().any(|r| r.as_str() == name) {
            return Err(AlertError::FileRule(name.to_owned()));
        }
        if !lock(&self.engine)
            .rules()
            .iter()
            .any(|r| r.name.as_str() == name)
        {
            return Err(AlertError::Unknown(name.to_owned()));
        }
        self.store
            .write_alerts(AlertWrite {
                rules: vec![(name.to_owned(), None)],
                ..AlertWrite::default()
            })
            .await?;
        let mut engine = lock(&self.engine);
        let rules: Vec<Rule> = engine
            .rules()
            .iter()
            .filter(|r| r.name.as_str() != name)
            .map(|r| (**r).clone())
            .collect();
        let out = engine.set_rules(rules, Timestamp::now());
        self.queue(out);
        Ok(())
    }

    /// Returns once every change queued before the call is stored (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn count_states(&self) {
        let (pending, firing) = lock(&self.engine).counts();
        metrics::gauge!("millwatch_alerts", "state" => "pending").set(pending as f64);
        metrics::gauge!("millwatch_alerts", "state" => "firing").set(firing as f64);
    }

    /// What one run of changes writes: each (rule, machine)'s last state, the history of
    /// firings and resolutions, and a notification per target for each of those.
    fn to_write(&self, changes: &[Change]) -> AlertWrite {
        let mut w = AlertWrite::default();
        for c in changes {
            let a = &c.alert;
            let body = serde_json::to_string(a).unwrap_or_default();
            w.states.push(StateRow {
                rule: a.rule.to_string(),
                machine_id: a.machine_id.to_string(),
                body: (a.state != State::Ok).then(|| body.clone()),
            });
            if c.kind.notifies() {
                w.history.push(HistoryRow {
                    rule: a.rule.to_string(),
                    machine_id: a.machine_id.to_string(),
                    since: a.since.as_nanos(),
                    fired_at: a.fired_at.unwrap_or(a.since).as_nanos(),
                    body: body.clone(),
                });
                for t in &self.targets {
                    w.outbox.push((t.clone(), body.clone()));
                }
            }
        }
        w
    }

    /// Stores changes in the order queued, retrying with back-off while the store fails
    /// (nothing is dropped while the process lives), then shows them and wakes the notifiers.
    async fn store_changes(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        events: broadcast::Sender<Event>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut changes = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Changes(c) => changes.extend(c),
                    Msg::Flush(done) => flushes.push(done),
                }
                next = if changes.len() < 10_000 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !changes.is_empty() {
                let write = self.to_write(&changes);
                let queued = write.outbox.len();
                let mut delay = Duration::from_millis(100);
                while let Err(e) = self.store.write_alerts(write.clone()).await {
                    tracing::warn!(error = %e, "alert changes could not be stored; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                if events.receiver_count() > 0 {
                    for c in changes {
                        let _ = events.send(Event::Alert(Arc::new(c)));
                    }
                }
                if queued > 0 {
                    self.wake.send_modify(|n| *n += 1);
                }
                self.count_states();
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }
}
