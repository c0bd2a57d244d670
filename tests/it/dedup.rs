//! Duplicates against the whole stored history (SPEC §2), across restarts, on every durable
//! store and through `ingest --store`, and against a naive model that remembers everything.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use millwatch::pipeline::Pipeline;
use millwatch::reading::{MachineId, Reading, parse_reading};
use millwatch::service::Service;
use millwatch::store::Store;
use millwatch::store::memory::MemoryStore;
use millwatch::store::sqlite::{Durability, SqliteStore};
use proptest::prelude::*;

fn m(s: &str) -> MachineId {
    MachineId::parse(s).unwrap()
}

async fn service(store: Arc<dyn Store>) -> Arc<Service> {
    Service::start(Pipeline::new(5, m("default")), store)
        .await
        .unwrap()
}

/// Reading `i` of machine "press": one second apart, two numeric parameters and a state.
fn press(i: usize) -> Reading {
    let json = format!(
        r#"{{"machine_id": "press", "timestamp": {}, "x": {}, "y": {}, "s": "{}"}}"#,
        1_700_000_000 + i,
        i % 97,
        (i * 7) % 13,
        if i.is_multiple_of(3) {
            "RUNNING"
        } else {
            "IDLE"
        }
    );
    parse_reading(json.as_bytes()).unwrap()
}

/// Takes readings `range` in batches of 1,000, as a client would post them.
async fn post(svc: &Service, range: std::ops::Range<usize>) -> (usize, usize) {
    let all: Vec<usize> = range.collect();
    post_in(svc, &all, 1000).await
}

/// Takes the readings numbered `order`, in batches of `batch`: (stored, duplicates).
async fn post_in(svc: &Service, order: &[usize], batch: usize) -> (usize, usize) {
    let (mut stored, mut dups) = (0, 0);
    for part in order.chunks(batch) {
        let done = svc
            .ingest(part.iter().map(|i| press(*i)).collect())
            .await
            .unwrap();
        stored += done.stored;
        dups += done.duplicates;
    }
    (stored, dups)
}

/// How many records of "press" the store holds.
async fn count(store: &dyn Store) -> usize {
    store
        .query(millwatch::store::DataQuery {
            machine_id: Some(m("press")),
            since: None,
            until: None,
            limit: usize::MAX,
        })
        .await
        .unwrap()
        .len()
}

/// The body for each durable store: 45,000 readings, a restart, then 5,000 and 40,000 of them
/// re-posted: nothing stored, every one counted as a duplicate, and the averages go on as if
/// nothing had been re-posted.
async fn restart_then_repost(
    open: impl Fn() -> futures::future::BoxFuture<'static, Arc<dyn Store>>,
) {
    let continuous = service(Arc::new(MemoryStore::new())).await;
    post(&continuous, 0..45_000).await;
    continuous.ingest(vec![press(46_000)]).await.unwrap();
    let (want, _) = continuous
        .ingest_records(vec![press(50_000)])
        .await
        .unwrap();
    {
        let store = open().await;
        let svc = service(store.clone()).await;
        assert_eq!(post(&svc, 0..45_000).await, (45_000, 0));
        store.close().await.unwrap();
    }
    let store = open().await;
    let svc = service(store.clone()).await;
    assert_eq!(post(&svc, 0..5_000).await, (0, 5_000));
    assert_eq!(post(&svc, 5_000..45_000).await, (0, 40_000));
    // Out of order and mixed with a new reading between old ones.
    let mixed = vec![
        press(44_999),
        press(12),
        press(46_000),
        press(30_000),
        press(46_000),
    ];
    let done = svc.ingest(mixed).await.unwrap();
    assert_eq!((done.stored, done.duplicates), (1, 4));
    assert_eq!(count(store.as_ref()).await, 45_001);
    let (got, _) = svc.ingest_records(vec![press(50_000)]).await.unwrap();
    assert_eq!(got[0].averages, want[0].averages);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_after_a_restart_reposted_readings_are_all_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    restart_then_repost(move || {
        let path = path.clone();
        Box::pin(async move {
            Arc::new(SqliteStore::open(&path, Durability::Process).unwrap()) as Arc<dyn Store>
        })
    })
    .await;
}

#[tokio::test]
async fn postgres_after_a_restart_reposted_readings_are_all_duplicates() {
    let Some(url) = crate::pg::fresh_schema("dedup").await else {
        return;
    };
    restart_then_repost(move || {
        let url = url.clone();
        Box::pin(async move {
            Arc::new(
                millwatch::store::postgres::PostgresStore::open(&url)
                    .await
                    .unwrap(),
            ) as Arc<dyn Store>
        })
    })
    .await;
}

/// `ingest --store` run twice on an unchanged 100,000-line file: the second run prints and
/// stores nothing, and the store holds each reading once.
#[test]
fn ingest_store_rerun_on_an_unchanged_file_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("big.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
    for i in 0..100_000u64 {
        writeln!(
            f,
            r#"{{"machine_id": "m{}", "timestamp": {}, "x": {}, "status": "RUNNING"}}"#,
            i % 7,
            1_700_000_000u64 + i,
            i % 101
        )
        .unwrap();
    }
    drop(f);
    let db = dir.path().join("t.db");
    let store = format!("sqlite:{}", db.display());
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
            .args(["ingest", data.to_str().unwrap(), "--interval", "0"])
            .args(["--store", &store])
            .env("MILLWATCH_LOG", "info")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        first.stdout.iter().filter(|b| **b == b'\n').count(),
        100_000
    );
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(second.stdout.len(), 0, "the re-run printed records");
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(log.contains("duplicates=100000"), "{log}");
    let census = millwatch::store::sqlite::census(&db).unwrap();
    assert_eq!(census.get("records").copied(), Some(100_000), "{census:?}");
}

/// One step of the model test: a batch of readings (machine, time, value) or a restart.
#[derive(Debug, Clone)]
enum Step {
    Batch(Vec<(u8, Option<u8>, u8)>),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0u8..3, prop::option::weighted(0.95, 0u8..40), 0u8..3), 0..30)
            .prop_map(Step::Batch),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model that remembers every reading ever taken: the same duplicates, batch by
    /// batch, across restarts of a SQLite store (and readings without a time always new).
    #[test]
    fn duplicates_match_a_model_that_remembers_everything(
        steps in prop::collection::vec(step(), 1..12)
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let open = || Arc::new(SqliteStore::open(&path, Durability::Process).unwrap()) as Arc<dyn Store>;
            let mut store = open();
            let mut svc = service(store.clone()).await;
            let mut seen: HashSet<(u8, u8, u8)> = HashSet::new();
            let mut total = 0;
            for s in steps {
                match s {
                    Step::Restart => {
                        store.close().await.unwrap();
                        drop(svc);
                        drop(store);
                        store = open();
                        svc = service(store.clone()).await;
                    }
                    Step::Batch(batch) => {
                        let mut want_dups = 0;
                        let readings: Vec<Reading> = batch.iter().map(|(mc, ts, v)| {
                            if ts.is_some_and(|ts| !seen.insert((*mc, ts, *v))) {
                                want_dups += 1;
                            }
                            let time = ts.map(|t| format!(r#""timestamp": {t},"#)).unwrap_or_default();
                            let json = format!(r#"{{"machine_id": "m{mc}", {time} "x": {v}}}"#);
                            parse_reading(json.as_bytes()).unwrap()
                        }).collect();
                        let done = svc.ingest(readings).await.unwrap();
                        prop_assert_eq!(done.duplicates, want_dups, "{:?}", batch);
                        total += done.stored;
                    }
                }
            }
            let stored = store.query(millwatch::store::DataQuery {
                machine_id: None, since: None, until: None, limit: usize::MAX,
            }).await.unwrap().len();
            prop_assert_eq!(stored, total);
            store.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// Eight clients post the same 2,000 readings at once, in batches and orders of their own:
/// each reading is stored exactly once, the rest answered as duplicates (the lookups of one
/// batch see every batch taken before it, durable or not yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap());
    let svc = service(store.clone()).await;
    let mut clients = Vec::new();
    for c in 0..8usize {
        let svc = svc.clone();
        clients.push(tokio::spawn(async move {
            let mut order: Vec<usize> = (0..2000).collect();
            fastrand::Rng::with_seed(c as u64).shuffle(&mut order[..]);
            post_in(&svc, &order, 50 + c * 10).await
        }));
    }
    let (mut stored, mut dups) = (0, 0);
    for c in clients {
        let (s, d) = c.await.unwrap();
        stored += s;
        dups += d;
    }
    assert_eq!((stored, dups), (2000, 7 * 2000));
    assert_eq!(count(store.as_ref()).await, 2000);
    store.close().await.unwrap();
}
