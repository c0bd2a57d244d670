//! Who moves job statuses besides people at `POST /status` (SPEC §4): a reading's state
//! parameter named by `serve --status-from PARAM`, and a plant's MES (the simulator's). The job
//! status and what a machine reports are two things; this is the one place where the second
//! may drive the first, and where the service remembers when people last changed a job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compact_str::CompactString;

use crate::pipeline::ProcessedRecord;
use crate::reading::{MachineId, ParamName, Value};
use crate::service::Service;
use crate::status::JobStatus;

/// How long a change made through the API is protected from a plant's MES (SPEC §4).
pub const API_PROTECTION: Duration = Duration::from_secs(10 * 60);

/// When each machine's job status was last set through the API.
#[derive(Debug, Default)]
pub struct ApiChanges(Mutex<HashMap<MachineId, Instant>>);

impl ApiChanges {
    /// Notes that `machine`'s job status was set through the API now.
    pub fn note(&self, machine: &MachineId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(machine.clone(), Instant::now());
    }

    /// Whether `machine`'s job status was set through the API within the last `span`.
    pub fn within(&self, machine: &MachineId, span: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(machine)
            .is_some_and(|t| t.elapsed() < span)
    }
}

/// `--status-from PARAM`: the parameter, and the value each machine reported last, so that a
/// machine drives its job status when what it reports changes, not on every reading (a
/// machine that keeps reporting RUNNING does not undo a pause set through the API the next
/// second; it does when it reports something else and then RUNNING again).
#[derive(Debug)]
pub struct StatusFrom {
    param: ParamName,
    last: Mutex<HashMap<MachineId, CompactString>>,
}

impl StatusFrom {
    /// Follows `param`.
    pub fn new(param: ParamName) -> Self {
        StatusFrom {
            param,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The parameter followed.
    pub fn param(&self) -> &ParamName {
        &self.param
    }

    /// The job statuses that `records` (stored, in order) ask for: each machine's reported
    /// value where it is a job status and differs from what that machine reported before.
    pub fn wanted(&self, records: &[Arc<ProcessedRecord>]) -> Vec<(MachineId, JobStatus)> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for r in records {
            let Some(Value::State(s)) = r.get(self.param.as_str()) else {
                continue;
            };
            if last.get(&r.machine_id) == Some(s) {
                continue;
            }
            last.insert(r.machine_id.clone(), s.clone());
            if let Ok(status) = JobStatus::parse(s) {
                out.push((r.machine_id.clone(), status));
            }
        }
        out
    }
}

/// Applies what `--status-from` asks of `records` to the job statuses. A change the
/// lifecycle refuses is counted and logged; a store failure is logged: neither is an error of
/// the readings, which are stored already.
pub async fn follow(service: &Service, from: &StatusFrom, records: &[Arc<ProcessedRecord>]) {
    for (machine, status) in from.wanted(records) {
        match service
            .set_status_by_plant(machine.clone(), status, None, None)
            .await
        {
            Ok(_) => {}
            Err(crate::service::StatusError::Refused(e)) => {
                metrics::counter!("millwatch_status_from_refused_total", "parameter" => from.param.to_string())
                    .increment(1);
                tracing::warn!(machine = %machine, parameter = %from.param, "reported job status not applied: {e}");
            }
            Err(e) => {
                tracing::warn!(machine = %machine, parameter = %from.param, error = %e, "reported job status not stored")
            }
        }
    }
}
