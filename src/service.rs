//! The running service's core: one pipeline fed by every door (sources and HTTP push), the
//! store behind it, the latest record of each machine, the status book, and a broadcast of
//! everything that happens for live views.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::pipeline::{Pipeline, ProcessedRecord};
use crate::reading::{MachineId, Reading};
use crate::status::{Decision, JobStatus, StatusBook, StatusChange, TransitionRefused};
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;

/// How many events a live client may fall behind before it is dropped.
pub const EVENT_BUFFER: usize = 4096;

/// Something that happened, for `GET /events` and the dashboard.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new processed record.
    Reading(Arc<ProcessedRecord>),
    /// A status change.
    Status(StatusChange),
    /// An alert changed (SPEC §7).
    Alert(Arc<crate::core::alerts::Change>),
}

/// What became of a batch of readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// New records stored.
    pub stored: usize,
    /// Readings already taken before.
    pub duplicates: usize,
}

/// Why setting a status failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The lifecycle does not allow it.
    #[error(transparent)]
    Refused(#[from] TransitionRefused),
    /// The store could not keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `POST /status` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    /// The machine.
    pub machine_id: MachineId,
    /// Its status now.
    pub status: JobStatus,
    /// Its status before the request.
    pub previous: JobStatus,
    /// Since when it has the status now.
    pub since: Option<Timestamp>,
}

/// The latest record of each machine, with the arrival number that made it the latest, and
/// the JSON of the whole map once somebody asked for it (dropped at every change).
#[derive(Default)]
struct Latest {
    records: BTreeMap<MachineId, (u64, Arc<ProcessedRecord>)>,
    json: Option<bytes::Bytes>,
}

/// Rebuilds a pipeline from what the store recovered: the windows from the last records,
/// each machine's newest timestamp for the duplicate rule.
fn restore(pipeline: &mut Pipeline, recovery: &crate::store::Recovery) {
    pipeline.reset();
    for r in &recovery.records {
        pipeline.restore(r);
    }
    for (machine, ts) in &recovery.newest {
        pipeline.note_newest(machine, *ts);
    }
}

/// One pipeline and one store, shared by every source and request.
pub struct Service {
    // std Mutexes: nothing awaits while they are held.
    pipeline: Mutex<(Pipeline, u64)>,
    /// Taken before the pipeline's lock is let go and held while a batch is handed to the
    /// store: batches reach the store in pipeline order, while the next batch is processed
    /// during this one's hand-over (which encodes it, for SQLite).
    handing_over: Mutex<()>,
    /// Held by a batch from its duplicate lookups to the end of its processing, so that what
    /// it looked up cannot change under it (SPEC §2: exact against the whole history).
    gate: tokio::sync::Mutex<()>,
    /// Each batch handed to the store holds a read guard until its `Ack`: a batch with older
    /// readings to look up first takes the write side, so that every earlier batch is
    /// durable, hence visible to the lookup.
    in_flight: Arc<tokio::sync::RwLock<()>>,
    store: Arc<dyn Store>,
    latest: RwLock<Latest>,
    statuses: tokio::sync::Mutex<StatusBook>,
    /// A copy of the book for readers, so that `GET /status` never waits for a store write.
    status_view: RwLock<StatusBook>,
    events: broadcast::Sender<Event>,
    /// Set when a write failed after the pipeline had processed its readings: the pipeline
    /// must be rebuilt from the store before it takes more.
    stale: std::sync::atomic::AtomicBool,
    /// When people last set each machine's job status through the API.
    api_changes: crate::jobs::ApiChanges,
    /// `--status-from`: the state parameter that drives job statuses, if any.
    status_from: std::sync::OnceLock<crate::jobs::StatusFrom>,
    /// The alert engine, once `serve` started one.
    alerting: std::sync::OnceLock<Arc<crate::alerting::Alerting>>,
}

impl Service {
    /// Builds the service over `store`, first replaying what the store recovered, so that
    /// averages, duplicates and statuses go on where they stopped.
    pub async fn start(pipeline: Pipeline, store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        let mut pipeline = pipeline;
        pipeline.dedup_by_store();
        let recovery = store
            .recovery(pipeline.window().max(crate::pipeline::DEFAULT_RECOVERY))
            .await?;
        restore(&mut pipeline, &recovery);
        let mut book = StatusBook::new();
        for c in &recovery.statuses {
            book.apply(c);
        }
        let latest = Latest {
            records: store
                .latest()
                .await?
                .into_iter()
                .map(|r| (r.machine_id.clone(), (0, r)))
                .collect(),
            json: None,
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        tracing::info!(
            records = recovery.records.len(),
            statuses = recovery.statuses.len(),
            "state recovered from the store"
        );
        Ok(Arc::new(Service {
            pipeline: Mutex::new((pipeline, 1)),
            handing_over: Mutex::new(()),
            gate: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(tokio::sync::RwLock::new(())),
            store,
            latest: RwLock::new(latest),
            status_view: RwLock::new(book.clone()),
            statuses: tokio::sync::Mutex::new(book),
            events,
            stale: std::sync::atomic::AtomicBool::new(false),
            api_changes: crate::jobs::ApiChanges::default(),
            status_from: std::sync::OnceLock::new(),
            alerting: std::sync::OnceLock::new(),
        }))
    }

    /// Rebuilds the windows and the duplicate memory from the store, after a write failed:
    /// the pipeline had already counted readings that the store never kept, and a client's
    /// retry of them must be stored, not answered as a duplicate.
    async fn resync(&self) -> Result<(), StoreError> {
        let window = self.window();
        let recovery = self
            .store
            .recovery(window.max(crate::pipeline::DEFAULT_RECOVERY))
            .await?;
        let mut guard = self.lock_pipeline();
        let (pipeline, _) = &mut *guard;
        restore(pipeline, &recovery);
        self.stale.store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            records = recovery.records.len(),
            "pipeline rebuilt from the store after a failed write"
        );
        Ok(())
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The window size N of the moving averages.
    pub fn window(&self) -> usize {
        self.lock_pipeline().0.window()
    }

    /// The default machine of readings without `machine_id`.
    pub fn default_machine(&self) -> MachineId {
        self.lock_pipeline().0.default_machine().clone()
    }

    fn lock_pipeline(&self) -> std::sync::MutexGuard<'_, (Pipeline, u64)> {
        self.pipeline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Processes valid readings and returns once the new records are durable. The order of
    /// batches in the store is the order in which they went through the pipeline.
    pub async fn ingest(&self, readings: Vec<Reading>) -> Result<Ingested, StoreError> {
        let (records, duplicates) = self.ingest_records(readings).await?;
        Ok(Ingested {
            stored: records.len(),
            duplicates,
        })
    }

    /// As [`Service::ingest`], returning the new records themselves and the duplicate count.
    pub async fn ingest_records(
        &self,
        readings: Vec<Reading>,
    ) -> Result<(Vec<Arc<ProcessedRecord>>, usize), StoreError> {
        let gate = self.gate.lock().await;
        if self.stale.load(std::sync::atomic::Ordering::SeqCst) {
            self.resync().await?;
        }
        let now = Timestamp::now();
        let wanted = self.lock_pipeline().0.lookups(&readings, now);
        let mut found = crate::dedup::Found::default();
        if !wanted.is_empty() {
            // Every batch handed over before is durable once this is granted.
            drop(self.in_flight.write().await);
            found = crate::dedup::Found::checking();
            for (machine, fp) in self.store.fingerprints_at(&wanted).await? {
                found.add(&machine, fp);
            }
        }
        let in_flight = self.in_flight.clone().read_owned().await;
        let (records, duplicates, first_seq, turn) = {
            let mut guard = self.lock_pipeline();
            let (pipeline, next_seq) = &mut *guard;
            let (records, duplicates) = pipeline.process_batch_with(readings, now, found);
            // Judged in pipeline order, before the next batch goes through.
            if let Some(alerting) = self.alerting.get() {
                alerting.on_records(&records, now);
            }
            let first_seq = *next_seq;
            *next_seq += records.len() as u64;
            // Our turn to hand over comes before the next batch's (lock order: pipeline, then
            // hand-over), and nothing awaits until it is done.
            let turn = self.handing_over.lock().unwrap_or_else(|e| e.into_inner());
            (records, duplicates, first_seq, turn)
        };
        drop(gate);
        let ack = (!records.is_empty()).then(|| self.store.append(records.clone()));
        drop(turn);
        if let Some(ack) = ack
            && let Err(e) = ack.await
        {
            self.stale.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        drop(in_flight);
        self.publish(&records, first_seq);
        if let Some(from) = self.status_from.get() {
            crate::jobs::follow(self, from, &records).await;
        }
        Ok((records, duplicates))
    }

    fn publish(&self, records: &[Arc<ProcessedRecord>], first_seq: u64) {
        if records.is_empty() {
            return;
        }
        {
            // Each machine's last record of the batch, found before taking the lock: a batch
            // holds many records of few machines.
            let mut last: HashMap<&MachineId, usize, foldhash::fast::RandomState> =
                HashMap::default();
            for (i, r) in records.iter().enumerate() {
                last.insert(&r.machine_id, i);
            }
            let mut guard = self.latest.write().unwrap_or_else(|e| e.into_inner());
            guard.json = None;
            let latest = &mut guard.records;
            for (machine, i) in last {
                let (seq, r) = (first_seq + i as u64, &records[i]);
                // Batches committed together may wake in any order: keep the last arrived.
                match latest.get_mut(machine) {
                    Some(slot) if slot.0 > seq => {}
                    Some(slot) => *slot = (seq, r.clone()),
                    None => {
                        latest.insert(machine.clone(), (seq, r.clone()));
                    }
                }
            }
        }
        if self.events.receiver_count() > 0 {
            for r in records {
                let _ = self.events.send(Event::Reading(r.clone()));
            }
        }
    }

    /// The latest record of each machine, sorted by machine id.
    pub fn latest(&self) -> Vec<Arc<ProcessedRecord>> {
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        latest.records.values().map(|(_, r)| r.clone()).collect()
    }

    /// `latest()` as JSON, serialized once per change rather than once per request: the
    /// dashboard and monitoring poll it far more often than most machines report.
    pub fn latest_json(&self) -> bytes::Bytes {
        if let Some(json) = &self.latest.read().unwrap_or_else(|e| e.into_inner()).json {
            return json.clone();
        }
        let mut guard = self.latest.write().unwrap_or_else(|e| e.into_inner());
        if let Some(json) = &guard.json {
            return json.clone();
        }
        let records: Vec<&ProcessedRecord> =
            guard.records.values().map(|(_, r)| r.as_ref()).collect();
        let json =
            bytes::Bytes::from(serde_json::to_vec(&records).unwrap_or_else(|_| b"[]".to_vec()));
        guard.json = Some(json.clone());
        json
    }

    /// The numeric parameters the pipeline knows of `machine` (from its readings since the
    /// start and those recovered from the store), sorted; `None` for a machine it never saw.
    pub fn parameters_of(&self, machine: &MachineId) -> Option<Vec<crate::reading::ParamName>> {
        self.lock_pipeline().0.parameters(machine)
    }

    /// Machines known from records or statuses, sorted.
    pub fn machines(&self) -> Vec<MachineId> {
        let mut ids: Vec<MachineId> = {
            let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
            latest.records.keys().cloned().collect()
        };
        ids.extend(self.status_view().all().into_iter().map(|(m, _, _)| m));
        ids.sort();
        ids.dedup();
        ids
    }

    /// A snapshot of every machine's status.
    pub fn status_view(&self) -> StatusBook {
        self.status_view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One machine's status and since when (never set: IDLE, no time).
    pub fn status_of(&self, machine: &MachineId) -> (JobStatus, Option<Timestamp>) {
        self.status_view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(machine)
    }

    /// Lets the state parameter `param` of every reading drive the job status from now on
    /// (`serve --status-from`); only the first call counts.
    pub fn follow_status_from(&self, param: crate::reading::ParamName) {
        let _ = self.status_from.set(crate::jobs::StatusFrom::new(param));
    }

    /// Starts judging every record and status change with `alerting` (`serve`); only the
    /// first call counts.
    pub fn enable_alerts(&self, alerting: Arc<crate::alerting::Alerting>) {
        let _ = self.alerting.set(alerting);
    }

    /// The alert engine, if one runs.
    pub fn alerting(&self) -> Option<&Arc<crate::alerting::Alerting>> {
        self.alerting.get()
    }

    /// A sender of live events, for parts that make events of their own (alerts).
    pub fn event_sender(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    /// Whether `machine`'s job status was set through the API within the last `span`.
    pub fn api_changed_within(&self, machine: &MachineId, span: std::time::Duration) -> bool {
        self.api_changes.within(machine, span)
    }

    /// Moves a machine to `to` if the lifecycle allows it, as people do through the API;
    /// stored before it is answered. The time is remembered: a plant's MES does not undo it
    /// for a while (see [`Service::set_status_by_plant`]).
    pub async fn set_status(
        &self,
        machine: MachineId,
        to: JobStatus,
    ) -> Result<StatusAnswer, StatusError> {
        self.set_status_with_reason(machine, to, None).await
    }

    /// [`Service::set_status`] with the reason kept in the history (a stop reason, say);
    /// the caller checks its length ([`crate::status::MAX_REASON`]).
    pub async fn set_status_with_reason(
        &self,
        machine: MachineId,
        to: JobStatus,
        reason: Option<compact_str::CompactString>,
    ) -> Result<StatusAnswer, StatusError> {
        let mut book = self.statuses.lock().await;
        let answer = self.change_status(&mut book, machine, to, reason).await?;
        self.api_changes.note(&answer.machine_id);
        Ok(answer)
    }

    /// Moves a machine to `to` for the plant (its MES, or what the machine reports), unless
    /// `respect_api` is given and people set this machine's status through the API within it:
    /// then nothing changes and the answer is `None`.
    pub async fn set_status_by_plant(
        &self,
        machine: MachineId,
        to: JobStatus,
        reason: Option<compact_str::CompactString>,
        respect_api: Option<std::time::Duration>,
    ) -> Result<Option<StatusAnswer>, StatusError> {
        let mut book = self.statuses.lock().await;
        // Checked under the book's lock, so that an API change cannot slip in between.
        if respect_api.is_some_and(|span| self.api_changes.within(&machine, span)) {
            return Ok(None);
        }
        self.change_status(&mut book, machine, to, reason)
            .await
            .map(Some)
    }

    async fn change_status(
        &self,
        // A tokio Mutex: held across the store write so that changes of one machine are
        // decided and stored in the same order.
        book: &mut tokio::sync::MutexGuard<'_, StatusBook>,
        machine: MachineId,
        to: JobStatus,
        reason: Option<compact_str::CompactString>,
    ) -> Result<StatusAnswer, StatusError> {
        match book.decide(&machine, to, Timestamp::now())? {
            Decision::Unchanged { status, since } => Ok(StatusAnswer {
                machine_id: machine,
                status,
                previous: status,
                since,
            }),
            Decision::Change(mut change) => {
                change.reason = reason;
                self.store.append_status(change.clone()).await?;
                book.apply(&change);
                self.status_view
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(&change);
                let _ = self.events.send(Event::Status(change.clone()));
                if let Some(alerting) = self.alerting.get() {
                    alerting.on_status(&change);
                }
                Ok(StatusAnswer {
                    machine_id: change.machine_id,
                    status: change.status,
                    previous: change.previous,
                    since: Some(change.since),
                })
            }
        }
    }
}
