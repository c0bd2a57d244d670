//! A plant in a box: machines whose temperature follows their load, whose speed holds a set
//! point with noise, with now and then a spike and a change of job status, so that `serve`
//! shows something real out of the box.

use std::time::Duration;

use compact_str::{CompactString, format_compact};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Batch, Source, SourceError};
use crate::reading::{Field, MachineId, ParamName, Position, Reading, Value};
use crate::timestamp::Timestamp;

const KINDS: [(&str, f64); 5] = [
    ("press", 1480.0),
    ("lathe", 2400.0),
    ("mill", 9000.0),
    ("drill", 3200.0),
    ("saw", 3000.0),
];
const AMBIENT: f64 = 22.0;

/// The state of one simulated machine.
struct SimMachine {
    id: MachineId,
    set_point: f64,
    temperature: f64,
    speed: f64,
    status: &'static str,
}

/// Simulated machines, one reading each per interval.
pub struct Simulator {
    machines: usize,
    interval: Duration,
    seed: u64,
}

impl Simulator {
    /// `machines` machines, a reading each every `interval` (zero: as fast as possible).
    pub fn new(machines: usize, interval: Duration) -> Self {
        Simulator {
            machines,
            interval,
            seed: fastrand::u64(..),
        }
    }

    /// The machine ids the simulator uses: press-01, lathe-02, mill-03, …
    pub fn machine_id(i: usize) -> MachineId {
        let (kind, _) = KINDS[i % KINDS.len()];
        MachineId::trusted(&format_compact!("{kind}-{:02}", i + 1))
    }
}

impl SimMachine {
    fn step(&mut self, rng: &mut fastrand::Rng, now: Timestamp) -> Reading {
        // Job status: mostly running; now and then a pause, a finished job, a restart.
        self.status = match (self.status, rng.u32(..1000)) {
            ("RUNNING", 0..=4) => "PAUSED",
            ("RUNNING", 5..=7) => "COMPLETED",
            ("PAUSED", 0..=99) => "RUNNING",
            ("COMPLETED", 0..=149) => "STARTED",
            ("STARTED", 0..=299) => "RUNNING",
            (s, _) => s,
        };
        let load = match self.status {
            "RUNNING" => 1.0,
            "STARTED" => 0.3,
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
        let round = |v: f64, digits: f64| (v * digits).round() / digits;
        Reading {
            machine_id: Some(self.id.clone()),
            timestamp: Some(now),
            fields: smallvec::smallvec![
                field("temperature", Value::Number(round(temperature, 10.0))),
                field("speed", Value::Number(round(self.speed.max(0.0), 1.0))),
                field(
                    "status",
                    Value::State(CompactString::const_new(self.status)),
                ),
            ],
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
                        status: "RUNNING",
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
