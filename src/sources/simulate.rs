//! A plant in a box, so that `serve` shows something real out of the box. Each machine reports
//! what a machine knows: its temperature (which follows its load), its speed (a set point
//! with noise), a part counter `parts` (total made; back to 0 at a new job), `rejects`, and its
//! machine state `state` (producing, setup, stopped, fault, idle). Apart from the machines, the
//! plant's MES moves each machine's job status on its own schedule (SPEC §4): a job runs, is
//! paused now and then with a reason, completes, fails, and a new one starts. The MES never
//! undoes what people set through the API within [`crate::jobs::API_PROTECTION`], and the
//! machines follow the job status whoever set it: a paused job stops the machine.
//!
//! Machine ids start with `sim-` (sim-press-1, sim-lathe-2, …) so that they never collide with
//! the names a user picks for their own machines (the README's examples use press-01).

use std::sync::Arc;
use std::time::Duration;

use compact_str::{CompactString, format_compact};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Batch, Source, SourceError};
use crate::reading::{Field, MachineId, ParamName, Position, Reading, Value};
use crate::service::Service;
use crate::status::JobStatus;
use crate::timestamp::Timestamp;

const KINDS: [(&str, f64); 5] = [
    ("press", 1480.0),
    ("lathe", 2400.0),
    ("mill", 9000.0),
    ("drill", 3200.0),
    ("saw", 3000.0),
];
const AMBIENT: f64 = 22.0;

/// Why the MES pauses a job, one picked at random.
pub const PAUSE_REASONS: [&str; 4] = [
    "material shortage",
    "tool change",
    "operator break",
    "quality check",
];
/// Why the MES fails a job, one picked at random.
pub const FAIL_REASONS: [&str; 3] = ["spindle overload", "hydraulic pressure low", "jam"];

/// The reason the MES gives for moving a job to `to`, if it gives one.
pub fn stop_reason(to: JobStatus, rng: &mut fastrand::Rng) -> Option<&'static str> {
    match to {
        JobStatus::Paused => Some(PAUSE_REASONS[rng.usize(..PAUSE_REASONS.len())]),
        JobStatus::Failed => Some(FAIL_REASONS[rng.usize(..FAIL_REASONS.len())]),
        _ => None,
    }
}

/// The plant's MES as the simulator sees it: the service's job statuses.
#[derive(Clone)]
pub struct Mes(Arc<Service>);

impl Mes {
    /// The MES of `service`'s job statuses.
    pub fn new(service: Arc<Service>) -> Self {
        Mes(service)
    }
}

impl std::fmt::Debug for Mes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mes")
    }
}

/// The state of one simulated machine.
struct SimMachine {
    id: MachineId,
    set_point: f64,
    temperature: f64,
    speed: f64,
    /// The job status as this machine last saw it.
    job: JobStatus,
    parts: f64,
    rejects: f64,
}

/// Simulated machines, one reading each per interval, and their MES.
pub struct Simulator {
    machines: usize,
    interval: Duration,
    seed: u64,
    mes: Option<Mes>,
}

impl Simulator {
    /// `machines` machines, a reading each every `interval` (zero: as fast as possible). With
    /// `mes`, job statuses are the service's and the MES moves them; without, each machine
    /// keeps a job status of its own.
    pub fn new(machines: usize, interval: Duration, mes: Option<Mes>) -> Self {
        Simulator {
            machines,
            interval,
            seed: fastrand::u64(..),
            mes,
        }
    }

    /// The machine ids the simulator uses: sim-press-1, sim-lathe-2, sim-mill-3, …
    pub fn machine_id(i: usize) -> MachineId {
        let (kind, _) = KINDS[i % KINDS.len()];
        MachineId::trusted(&format_compact!("sim-{kind}-{}", i + 1))
    }
}

/// The MES's next job status for a machine in `job`, if it moves it this tick: mostly
/// running; now and then a pause, a finished or failed job, a new one.
fn mes_schedule(job: JobStatus, rng: &mut fastrand::Rng) -> Option<JobStatus> {
    use JobStatus::*;
    match (job, rng.u32(..1000)) {
        (Running, 0..=4) => Some(Paused),
        (Running, 5..=7) => Some(Completed),
        (Running, 8) => Some(Failed),
        (Paused, 0..=99) => Some(Running),
        (Completed, 0..=149) => Some(Started),
        (Failed, 0..=49) => Some(Started),
        (Started, 0..=299) => Some(Running),
        (Idle, 0..=299) => Some(Running),
        _ => None,
    }
}

/// What a machine reports as its own state while its job is in `job`.
fn machine_state(job: JobStatus) -> &'static str {
    match job {
        JobStatus::Running => "producing",
        JobStatus::Started => "setup",
        JobStatus::Paused => "stopped",
        JobStatus::Failed => "fault",
        JobStatus::Completed | JobStatus::Idle => "idle",
    }
}

impl SimMachine {
    fn step(&mut self, rng: &mut fastrand::Rng, now: Timestamp) -> Reading {
        let load = match self.job {
            JobStatus::Running => 1.0,
            JobStatus::Started => 0.3,
            _ => 0.0,
        };
        let target_speed = self.set_point * load;
        self.speed +=
            (target_speed - self.speed) * 0.5 + self.set_point * 0.005 * (rng.f64() - 0.5) * load;
        // The temperature lags the load: a first-order approach to its equilibrium.
        let equilibrium = AMBIENT + 50.0 * load;
        self.temperature += (equilibrium - self.temperature) * 0.05 + 0.3 * (rng.f64() - 0.5);
        let mut temperature = self.temperature;
        if rng.u32(..200) == 0 {
            temperature *= 1.3; // a spike the analytics should flag
        }
        if self.job == JobStatus::Running && rng.u32(..10) < 8 {
            self.parts += 1.0;
            if rng.u32(..50) == 0 {
                self.rejects += 1.0;
            }
        }
        let round = |v: f64, digits: f64| (v * digits).round() / digits;
        Reading {
            machine_id: Some(self.id.clone()),
            timestamp: Some(now),
            fields: smallvec::smallvec![
                field("temperature", Value::Number(round(temperature, 10.0))),
                field("speed", Value::Number(round(self.speed.max(0.0), 1.0))),
                field("parts", Value::Number(self.parts)),
                field("rejects", Value::Number(self.rejects)),
                field(
                    "state",
                    Value::State(CompactString::const_new(machine_state(self.job))),
                ),
            ],
        }
    }

    /// One tick of the MES for this machine: the job status it is in now (the service's,
    /// which people may have changed), and the MES's move, if any.
    async fn run_mes(&mut self, mes: Option<&Mes>, rng: &mut fastrand::Rng) {
        if let Some(Mes(service)) = mes {
            self.job = service.status_of(&self.id).0;
        }
        let Some(next) = mes_schedule(self.job, rng) else {
            return;
        };
        let reason = stop_reason(next, rng);
        let Some(Mes(service)) = mes else {
            self.new_job_counters(next);
            self.job = next;
            return;
        };
        match service
            .set_status_by_plant(
                self.id.clone(),
                next,
                reason.map(compact_str::CompactString::const_new),
                Some(crate::jobs::API_PROTECTION),
            )
            .await
        {
            Ok(Some(answer)) => {
                self.new_job_counters(answer.status);
                self.job = answer.status;
            }
            // People set this job through the API a moment ago: the MES leaves it alone.
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(machine = %self.id, error = %e, "the MES's change was not applied")
            }
        }
    }

    /// A new job starts its counters from 0, as a machine's job counter does.
    fn new_job_counters(&mut self, next: JobStatus) {
        if next == JobStatus::Started {
            self.parts = 0.0;
            self.rejects = 0.0;
        }
    }
}

fn field(name: &'static str, value: Value) -> Field {
    Field {
        name: ParamName::trusted(name),
        value,
    }
}

impl Source for Simulator {
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let mut rng = fastrand::Rng::with_seed(self.seed);
            let mut machines: Vec<SimMachine> = (0..self.machines)
                .map(|i| {
                    let (_, set_point) = KINDS[i % KINDS.len()];
                    SimMachine {
                        id: Simulator::machine_id(i),
                        set_point,
                        temperature: AMBIENT + 50.0 + 5.0 * rng.f64(),
                        speed: set_point,
                        job: JobStatus::Running,
                        parts: f64::from(rng.u32(..500)),
                        rejects: f64::from(rng.u32(..5)),
                    }
                })
                .collect();
            let mut ticker = tokio::time::interval(self.interval.max(Duration::from_nanos(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut index = 0u64;
            loop {
                if self.interval.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    ticker.tick().await;
                }
                for m in &mut machines {
                    m.run_mes(self.mes.as_ref(), &mut rng).await;
                }
                let mut now = Timestamp::now();
                let mut items = Vec::with_capacity(machines.len());
                for m in &mut machines {
                    items.push((Position { index, line: None }, Ok(m.step(&mut rng, now))));
                    index += 1;
                    // Distinct times even when the clock does not move between readings.
                    now = Timestamp::from_nanos(now.as_nanos() + 1);
                }
                if out.send(Batch::of(items)).await.is_err() {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_apart_from_the_readmes() {
        assert_eq!(Simulator::machine_id(0).as_str(), "sim-press-1");
        assert_eq!(Simulator::machine_id(2).as_str(), "sim-mill-3");
    }

    #[test]
    fn the_mes_follows_the_lifecycle_and_gives_reasons() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut job = JobStatus::Idle;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200_000 {
            if let Some(next) = mes_schedule(job, &mut rng) {
                assert!(job.can_become(next), "{job} -> {next}");
                let reason = stop_reason(next, &mut rng);
                assert_eq!(
                    reason.is_some(),
                    matches!(next, JobStatus::Paused | JobStatus::Failed)
                );
                job = next;
                seen.insert(job.as_str());
            }
        }
        assert_eq!(seen.len(), 5, "{seen:?}"); // every status but IDLE, which it leaves
    }

    #[test]
    fn counters_count_up_and_restart_with_a_job() {
        let mut m = SimMachine {
            id: Simulator::machine_id(0),
            set_point: 1480.0,
            temperature: 70.0,
            speed: 1480.0,
            job: JobStatus::Running,
            parts: 0.0,
            rejects: 0.0,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut last = 0.0;
        for _ in 0..100 {
            let r = m.step(&mut rng, Timestamp::now());
            let Some(Value::Number(p)) = r
                .fields
                .iter()
                .find(|f| f.name.as_str() == "parts")
                .map(|f| f.value.clone())
            else {
                panic!("no parts");
            };
            assert!(p >= last);
            last = p;
        }
        assert!(last > 50.0);
        m.new_job_counters(JobStatus::Started);
        assert_eq!(m.parts, 0.0);
    }
}
