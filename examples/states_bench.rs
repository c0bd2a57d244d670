//! The benchmark of `GET /states` and `GET /oee` (SPEC §8) from SQLite, run by
//! `bench/states.sh`:
//!
//! - one machine with a year of history: 1,000,000 status changes (a lifecycle-valid random
//!   walk, gaps of 1–62 s, stop reasons on PAUSED and FAILED) and its `parts`/`rejects`
//!   counters read once a minute (525,600 readings);
//! - 1,000 machines over 30 days: a status change every 20 minutes on average and a counter
//!   reading every 10 minutes each (2.2M changes, 4.3M readings).
//!
//! Everything is written through the store's own API, the store is closed and opened again
//! (so the queries read the file, not what the writer still holds), and the real router is
//! asked over loopback HTTP, one request at a time: `/states` and `/oee` over the whole year
//! of the one machine, then `/oee?by=day` over the 30 days for each of the 1,000 machines
//! (1,000 requests, one per machine). Prints p50/p99/max per query.
//!
//! ```text
//! cargo run --release --example states_bench [-- DIR]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use millwatch::api::{self, AppState, StatesConfig};
use millwatch::core::oee::OeeConfig;
use millwatch::pipeline::Pipeline;
use millwatch::reading::{MachineId, Reading, parse_reading};
use millwatch::service::Service;
use millwatch::status::{JobStatus, StatusChange};
use millwatch::store::Store;
use millwatch::store::sqlite::{Durability, SqliteStore};
use millwatch::timestamp::Timestamp;
use tokio_util::sync::CancellationToken;

const SEC: i64 = 1_000_000_000;
const DAY: i64 = 86_400;
/// 2025-01-01T00:00:00Z: the year of the one machine.
const YEAR_START: i64 = 1_735_689_600;
/// 2025-12-02T00:00:00Z: the 30 days of the fleet end a day before this.
const FLEET_START: i64 = YEAR_START + 330 * DAY;
const REASONS: [&str; 6] = [
    "material jam",
    "tool change",
    "no operator",
    "spindle",
    "quality check",
    "setup",
];

fn m(s: &str) -> MachineId {
    MachineId::parse(s).expect("a machine id")
}

/// A lifecycle-valid random walk that mostly runs and pauses, as a plant does.
fn walk(
    rng: &mut fastrand::Rng,
    machine: &MachineId,
    start: i64,
    n: usize,
    gap: i64,
) -> Vec<StatusChange> {
    let mut out = Vec::with_capacity(n);
    let (mut at, mut cur) = (start * SEC, JobStatus::Idle);
    for _ in 0..n {
        at += rng.i64(SEC..gap * SEC);
        let next = cur.allowed_next();
        let to = if next.contains(&JobStatus::Running) && rng.u8(..4) > 0 {
            JobStatus::Running
        } else if cur == JobStatus::Running && rng.u8(..5) > 0 {
            JobStatus::Paused
        } else {
            next[rng.usize(..next.len())]
        };
        let reason = matches!(to, JobStatus::Paused | JobStatus::Failed)
            .then(|| REASONS[rng.usize(..REASONS.len())].into());
        out.push(StatusChange {
            machine_id: machine.clone(),
            status: to,
            previous: cur,
            since: Timestamp::from_nanos(at),
            reason,
        });
        cur = to;
    }
    out
}

async fn append_changes(store: &dyn Store, changes: Vec<StatusChange>) {
    for chunk in changes.chunks(20_000) {
        let acks: Vec<_> = chunk
            .iter()
            .map(|c| store.append_status(c.clone()))
            .collect();
        for a in futures::future::join_all(acks).await {
            a.expect("a status change is stored");
        }
    }
}

fn counter(machine: &str, t: i64, parts: u64, rejects: u64) -> Reading {
    parse_reading(
        format!(
            r#"{{"machine_id":"{machine}","timestamp":{t},"parts":{parts},"rejects":{rejects}}}"#
        )
        .as_bytes(),
    )
    .expect("a reading")
}

async fn load(path: &std::path::Path) {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(path, Durability::Process).expect("the store opens"));
    let svc = Service::start(Pipeline::new(5, m("machine-1")), store.clone())
        .await
        .expect("the service starts");
    let mut rng = fastrand::Rng::with_seed(2026);
    let t = Instant::now();
    let year = walk(&mut rng, &m("year-1"), YEAR_START, 1_000_000, 62);
    let last = year.last().map(|c| c.since).expect("changes");
    append_changes(store.as_ref(), year).await;
    eprintln!(
        "1,000,000 status changes of year-1 (up to {last}) in {:.1?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (mut parts, mut rejects) = (0u64, 0u64);
    let mut batch = Vec::new();
    for minute in 0..365 * 24 * 60 {
        if rng.u32(..20_000) == 0 {
            (parts, rejects) = (0, 0); // a counter reset
        }
        parts += rng.u64(0..3);
        rejects += u64::from(rng.u8(..50) == 0);
        batch.push(counter("year-1", YEAR_START + minute * 60, parts, rejects));
        if batch.len() == 10_000 {
            svc.ingest(std::mem::take(&mut batch))
                .await
                .expect("stored");
        }
    }
    svc.ingest(batch).await.expect("stored");
    eprintln!("525,600 counter readings of year-1 in {:.1?}", t.elapsed());
    let t = Instant::now();
    let mut total = 0;
    for k in 0..1000 {
        let id = m(&format!("fleet-{k:04}"));
        let changes = walk(&mut rng, &id, FLEET_START, 2160, 2400);
        total += changes.len();
        append_changes(store.as_ref(), changes).await;
    }
    eprintln!(
        "{total} status changes of 1,000 machines in {:.1?}",
        t.elapsed()
    );
    let t = Instant::now();
    let mut counts = vec![(0u64, 0u64); 1000];
    for step in 0..30 * 24 * 6 {
        let at = FLEET_START + step * 600;
        let batch = counts
            .iter_mut()
            .enumerate()
            .map(|(k, (p, r))| {
                *p += rng.u64(0..25);
                *r += rng.u64(0..2);
                counter(&format!("fleet-{k:04}"), at, *p, *r)
            })
            .collect();
        svc.ingest(batch).await.expect("stored");
    }
    eprintln!(
        "4,320,000 counter readings of 1,000 machines in {:.1?}",
        t.elapsed()
    );
    store.close().await.expect("the store closes");
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "{what}: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}

async fn time(client: &reqwest::Client, url: &str) -> (f64, serde_json::Value) {
    let t = Instant::now();
    let r = client.get(url).send().await.expect("an answer");
    let status = r.status();
    let bytes = r.bytes().await.expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(status.is_success(), "{url}: {body}");
    (ms, body)
}

async fn series(client: &reqwest::Client, what: &str, url: &str, n: usize) -> serde_json::Value {
    let (_, body) = time(client, url).await;
    let mut ms = Vec::new();
    for _ in 0..n {
        ms.push(time(client, url).await.0);
    }
    report(what, ms);
    body
}

#[tokio::main]
async fn main() {
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    let path = dir.join("states.db");
    if !path.exists() {
        load(&path).await;
    }
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, Durability::Full).expect("the store opens"));
    let svc = Service::start(Pipeline::new(5, m("machine-1")), store.clone())
        .await
        .expect("the service starts");
    let mut state = AppState::new(svc);
    state.states = StatesConfig {
        oee: Arc::new(
            OeeConfig::parse(
                "[[machine]]\nmachines = \"*\"\ncount = \"parts\"\nreject = \"rejects\"\nideal_rate = 2\n",
            )
            .expect("the OEE config"),
        ),
        timezone: "Europe/Berlin".parse().expect("a zone"),
        ..StatesConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let stop = CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(api::run(
        listener,
        state,
        async move { s.cancelled().await },
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    let ts = |secs: i64| Timestamp::from_nanos(secs * SEC).to_string();
    let year = format!(
        "machine_id=year-1&since={}&until={}",
        ts(YEAR_START),
        ts(YEAR_START + 365 * DAY)
    );
    let body = series(
        &client,
        "GET /states, year-1, a year, 1M changes",
        &format!("{base}/states?{year}"),
        30,
    )
    .await;
    println!("  states: {}", body["states"]);
    series(
        &client,
        "GET /states&timeline=true, year-1, a year",
        &format!("{base}/states?{year}&timeline=true"),
        10,
    )
    .await;
    let body = series(
        &client,
        "GET /oee, year-1, a year",
        &format!("{base}/oee?{year}"),
        30,
    )
    .await;
    println!(
        "  oee: availability {} performance {} quality {} oee {} parts {}",
        body["availability"], body["performance"], body["quality"], body["oee"], body["parts"]
    );
    series(
        &client,
        "GET /oee&by=day, year-1, a year (365 buckets)",
        &format!("{base}/oee?{year}&by=day"),
        10,
    )
    .await;
    let month = format!(
        "since={}&until={}",
        ts(FLEET_START),
        ts(FLEET_START + 30 * DAY)
    );
    let _ = time(
        &client,
        &format!("{base}/oee?machine_id=fleet-0000&{month}&by=day"),
    )
    .await;
    let mut ms = Vec::new();
    let mut buckets = 0;
    for k in 0..1000 {
        let (t, body) = time(
            &client,
            &format!("{base}/oee?machine_id=fleet-{k:04}&{month}&by=day"),
        )
        .await;
        buckets = body["buckets"].as_array().map_or(0, Vec::len);
        ms.push(t);
    }
    report("GET /oee&by=day, 30 days, each of 1,000 machines", ms);
    println!("  {buckets} day buckets per answer");
    stop.cancel();
    let _ = server.await;
    store.close().await.expect("closes");
}
