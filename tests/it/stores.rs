//! One suite, every store: append, ranges and limits, latest, status history, atomic batches,
//! duplicates and restart recovery.

use std::sync::Arc;

use millwatch::pipeline::{Pipeline, ProcessedRecord};
use millwatch::reading::{MachineId, parse_reading};
use millwatch::service::Service;
use millwatch::status::JobStatus;
use millwatch::store::memory::MemoryStore;
use millwatch::store::sqlite::{Compaction, Durability, SqliteStore};
use millwatch::store::{DataQuery, Store};
use millwatch::timestamp::Timestamp;

fn m(s: &str) -> MachineId {
    MachineId::parse(s).unwrap()
}

fn reading(json: &str) -> millwatch::reading::Reading {
    parse_reading(json.as_bytes()).unwrap()
}

async fn service(store: Arc<dyn Store>) -> Arc<Service> {
    Service::start(Pipeline::new(3, m("machine-1")), store)
        .await
        .unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_nanos(secs * 1_000_000_000)
}

fn xs(records: &[Arc<ProcessedRecord>]) -> Vec<f64> {
    records
        .iter()
        .map(|r| match r.get("x") {
            Some(millwatch::reading::Value::Number(v)) => *v,
            _ => f64::NAN,
        })
        .collect()
}

/// The generic body every store must pass.
pub async fn suite(store: Arc<dyn Store>) {
    let svc = service(store.clone()).await;
    // Two machines, times out of arrival order for one of them.
    let mut batch = Vec::new();
    for i in 0..20 {
        let machine = if i % 2 == 0 { "a" } else { "b" };
        let ts = if machine == "b" { 100 - i } else { i };
        batch.push(reading(&format!(
            r#"{{"machine_id": "{machine}", "timestamp": {ts}, "x": {i}}}"#
        )));
    }
    let done = svc.ingest(batch).await.unwrap();
    assert_eq!((done.stored, done.duplicates), (20, 0));

    let q =
        |machine: Option<&str>, since: Option<i64>, until: Option<i64>, limit: usize| DataQuery {
            machine_id: machine.map(m),
            since: since.map(t),
            until: until.map(t),
            limit,
        };
    // Oldest first by time.
    let a = store.query(q(Some("a"), None, None, 100)).await.unwrap();
    assert_eq!(xs(&a), vec![0., 2., 4., 6., 8., 10., 12., 14., 16., 18.]);
    let b = store.query(q(Some("b"), None, None, 100)).await.unwrap();
    assert_eq!(xs(&b), vec![19., 17., 15., 13., 11., 9., 7., 5., 3., 1.]);
    // The newest `limit`, across machines, bounds inclusive.
    assert_eq!(
        xs(&store.query(q(None, None, None, 3)).await.unwrap()),
        vec![5., 3., 1.]
    );
    assert_eq!(
        xs(&store
            .query(q(Some("a"), Some(4), Some(8), 100))
            .await
            .unwrap()),
        vec![4., 6., 8.]
    );
    assert_eq!(
        xs(&store
            .query(q(Some("a"), Some(4), Some(8), 2))
            .await
            .unwrap()),
        vec![6., 8.]
    );
    assert!(
        store
            .query(q(Some("a"), Some(8), Some(4), 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .query(q(Some("zzz"), None, None, 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .query(q(None, None, None, 0))
            .await
            .unwrap()
            .is_empty()
    );

    // Latest: the last arrived per machine, sorted by machine.
    let latest = store.latest().await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|r| r.machine_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(xs(&latest), vec![18., 19.]);

    // A series for analytics, ordered by time.
    let s = store.series(&m("b"), "x", Some(t(85)), None).await.unwrap();
    assert_eq!(s.values, vec![15., 13., 11., 9., 7., 5., 3., 1.]);
    assert_eq!(s.timestamps.first(), Some(&t(85)));
    assert!(
        store
            .series(&m("b"), "nothing", None, None)
            .await
            .unwrap()
            .values
            .is_empty()
    );

    // Duplicates: the same batch again stores nothing.
    let again = svc
        .ingest(vec![reading(
            r#"{"machine_id": "a", "timestamp": 0, "x": 0}"#,
        )])
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    assert_eq!(
        store
            .query(q(Some("a"), None, None, 100))
            .await
            .unwrap()
            .len(),
        10
    );

    // Status history, oldest first, newest `limit`, per machine.
    for (machine, st) in [
        ("a", JobStatus::Started),
        ("a", JobStatus::Running),
        ("b", JobStatus::Running),
    ] {
        svc.set_status(m(machine), st).await.unwrap();
    }
    let h = store.status_history(None, 100).await.unwrap();
    assert_eq!(
        h.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![JobStatus::Started, JobStatus::Running, JobStatus::Running]
    );
    let h = store.status_history(Some(&m("a")), 1).await.unwrap();
    assert_eq!(
        (h.len(), h[0].status, h[0].previous),
        (1, JobStatus::Running, JobStatus::Started)
    );

    // Concurrent batches: each lands whole, none is lost.
    let mut tasks = Vec::new();
    for k in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let batch = (0..50)
                .map(|i| {
                    reading(&format!(
                        r#"{{"machine_id": "c{k}", "timestamp": {i}, "x": {i}}}"#
                    ))
                })
                .collect();
            svc.ingest(batch).await.unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().stored, 50);
    }
    for k in 0..8 {
        let got = store
            .query(q(Some(&format!("c{k}")), None, None, 1000))
            .await
            .unwrap();
        assert_eq!(xs(&got), (0..50).map(f64::from).collect::<Vec<_>>());
    }

    states_part(&svc, store.as_ref()).await;

    // Retention removes what is old and keeps the rest.
    store.retain(t(50)).await.unwrap();
    assert!(
        store
            .query(q(Some("a"), None, None, 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .query(q(Some("b"), None, None, 100))
            .await
            .unwrap()
            .len(),
        10
    );
    store.close().await.unwrap();
}

/// The reads of time in state and OEE (SPEC §8): status changes of a range with the last one
/// before it, reasons kept, the last counter value before a time, state values of a range.
async fn states_part(svc: &Arc<Service>, store: &dyn Store) {
    let change = |secs: i64, status: JobStatus, previous: JobStatus, reason: Option<&str>| {
        millwatch::status::StatusChange {
            machine_id: m("hist"),
            status,
            previous,
            since: t(secs),
            reason: reason.map(Into::into),
        }
    };
    use JobStatus::*;
    let changes = [
        change(100, Started, Idle, None),
        change(200, Running, Started, None),
        change(300, Paused, Running, Some("material jam")),
        change(400, Running, Paused, None),
        change(500, Failed, Running, Some("spindle")),
    ];
    for c in &changes {
        store.append_status(c.clone()).await.unwrap();
    }
    // Another machine's changes in the same range are not read.
    store
        .append_status(millwatch::status::StatusChange {
            machine_id: m("other"),
            ..changes[0].clone()
        })
        .await
        .unwrap();
    let got = |since: i64, until: i64| async move {
        store
            .status_changes(&m("hist"), t(since), t(until))
            .await
            .unwrap()
            .iter()
            .map(|c| c.since.as_nanos() / 1_000_000_000)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got(0, 50).await,
        Vec::<i64>::new(),
        "before the first change"
    );
    assert_eq!(got(0, 100).await, vec![100], "bounds are inclusive");
    assert_eq!(
        got(250, 400).await,
        vec![200, 300, 400],
        "the last one before, then the range"
    );
    assert_eq!(got(300, 300).await, vec![200, 300]);
    assert_eq!(got(600, 700).await, vec![500], "after the last: only it");
    let all = store
        .status_changes(&m("hist"), t(0), t(1000))
        .await
        .unwrap();
    assert_eq!(all, changes.to_vec(), "every field, the reason included");
    // Through the service, the reason reaches the history too.
    svc.set_status_with_reason(m("why"), Running, None)
        .await
        .unwrap();
    svc.set_status_with_reason(m("why"), Paused, Some("no material".into()))
        .await
        .unwrap();
    let h = store.status_history(Some(&m("why")), 10).await.unwrap();
    assert_eq!(
        h.iter().map(|c| c.reason.as_deref()).collect::<Vec<_>>(),
        vec![None, Some("no material")]
    );

    // Totals per (status, reason) equal the core's over the store's own changes, on a random
    // lifecycle history, for ranges before, across and after it (SQLite: its running sums).
    let mut rng = fastrand::Rng::with_seed(6);
    let (mut at, mut cur) = (10_000i64, Idle);
    for _ in 0..300 {
        at += rng.i64(0..50);
        let next = cur.allowed_next();
        let to = next[rng.usize(..next.len())];
        let reason = matches!(to, Paused | Failed).then(|| ["jam", "setup"][rng.usize(..2)].into());
        store
            .append_status(millwatch::status::StatusChange {
                machine_id: m("tot"),
                status: to,
                previous: cur,
                since: t(at),
                reason,
            })
            .await
            .unwrap();
        cur = to;
    }
    for _ in 0..40 {
        let since = rng.i64(9_000..at + 500);
        let until = since + rng.i64(1..6000);
        let steps: Vec<_> = store
            .status_changes(&m("tot"), t(since), t(until))
            .await
            .unwrap()
            .into_iter()
            .map(|c| millwatch::core::states::Step {
                at: c.since.as_nanos(),
                state: c.status,
                reason: c.reason,
            })
            .collect();
        let want = millwatch::core::states::time_in_state(
            Idle,
            &steps,
            t(since).as_nanos(),
            t(until).as_nanos(),
            None,
        );
        let got = millwatch::core::states::times_from_reasons(
            want.total,
            store
                .status_totals(&m("tot"), t(since), t(until))
                .await
                .unwrap(),
        );
        assert_eq!(got, want, "[{since}, {until}]");
    }

    // A counter's last value before a time, and state values within a range.
    let mut batch = Vec::new();
    for (ts, parts, mode) in [(1000, 5, "ON"), (1010, 9, "OFF"), (1020, 2, "ON")] {
        batch.push(reading(&format!(
            r#"{{"machine_id": "cnt", "timestamp": {ts}, "parts": {parts}, "mode": "{mode}"}}"#
        )));
    }
    batch.push(reading(
        r#"{"machine_id": "cnt", "timestamp": 1030, "parts": 3}"#,
    ));
    svc.ingest(batch).await.unwrap();
    let last = |before: i64| async move {
        store
            .last_value_before(&m("cnt"), "parts", t(before))
            .await
            .unwrap()
    };
    assert_eq!(
        last(1000).await,
        None,
        "exclusive: nothing before the first"
    );
    assert_eq!(last(1001).await, Some((t(1000), 5.0)));
    assert_eq!(last(1020).await, Some((t(1010), 9.0)));
    assert_eq!(
        last(99_999).await,
        Some((t(1030), 3.0)),
        "far after the last"
    );
    assert_eq!(
        store
            .last_value_before(&m("cnt"), "nothing", t(5000))
            .await
            .unwrap(),
        None
    );
    let states = store
        .state_values(&m("cnt"), "mode", t(1005), t(1030))
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![(t(1010), "OFF".into()), (t(1020), "ON".into())]
    );
}

#[tokio::test]
async fn memory_store_suite() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), Durability::Full).unwrap();
    suite(Arc::new(store)).await;
}

/// The same with a compaction once 7 records are pending: the suite's first batch (20
/// records) goes into chunks at once, smaller later ones stay in the log for a while, so that
/// the suite's queries meet records both in chunks and still pending.
#[tokio::test]
async fn sqlite_store_suite_compacting_often() {
    let dir = tempfile::tempdir().unwrap();
    let compaction = compacting_at(7);
    let store =
        SqliteStore::open_with(&dir.path().join("t.db"), Durability::Process, compaction).unwrap();
    suite(Arc::new(store)).await;
}

/// Readers racing compactions (one after every commit) see every acknowledged record exactly
/// once: never a record missing because it moved from memory to chunks under them, never one
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_racing_compactions_miss_nothing_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let compaction = Compaction {
        records: 1,
        age: std::time::Duration::ZERO,
        ..Compaction::default()
    };
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(&dir.path().join("t.db"), Durability::Process, compaction).unwrap(),
    );
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (store, acked) = (store.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..1000i64 {
                let batch = ["a", "b"]
                    .iter()
                    .map(|machine| x_record(machine, i, i as f64))
                    .collect();
                store.append(batch).await.unwrap();
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let everything = DataQuery {
        machine_id: None,
        since: None,
        until: None,
        limit: 10_000,
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let before = acked.load(std::sync::atomic::Ordering::SeqCst);
        let all = store.query(everything.clone()).await.unwrap();
        let series = store.series(&m("a"), "x", None, None).await.unwrap();
        let after = acked.load(std::sync::atomic::Ordering::SeqCst);
        // Each batch is one commit: both machines' records or neither.
        let batches = series.values.len();
        assert!(
            before <= batches && batches <= after + 1,
            "{before} <= {batches} <= {after}+1"
        );
        let want: Vec<f64> = (0..batches).map(|i| i as f64).collect();
        assert_eq!(series.values, want, "every value of a once, in order");
        assert!(
            all.len() >= 2 * before,
            "{} records, {before} batches acked",
            all.len()
        );
        let mut keys: Vec<(String, i64)> = all
            .iter()
            .map(|r| (r.machine_id.as_str().to_owned(), r.timestamp.as_nanos()))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "no record twice");
        // The latest record of each machine, and what a restart would replay, are as new as
        // the acknowledgements and run without a gap.
        let latest = xs(&store.latest().await.unwrap());
        let newest = acked.load(std::sync::atomic::Ordering::SeqCst);
        if before > 0 {
            assert_eq!(latest.len(), 2);
            for x in &latest {
                assert!(
                    (before - 1) as f64 <= *x && *x <= newest as f64,
                    "latest {x}, acked {before}..{newest}"
                );
            }
        }
        let replay: Vec<f64> = store
            .recovery(5)
            .await
            .unwrap()
            .records
            .into_iter()
            .filter(|r| r.machine_id == m("a"))
            .map(|r| r.averages[0])
            .collect();
        assert!(
            before.min(5) <= replay.len() && replay.len() <= 5,
            "{} replayed, {before} acked",
            replay.len()
        );
        assert!(
            replay.windows(2).all(|w| w[1] == w[0] + 1.0),
            "replay {replay:?}"
        );
        if let Some(last) = replay.last() {
            assert!(
                (before as f64 - 1.0) <= *last,
                "replay ends at {last}, acked {before}"
            );
        }
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 3, "the readers raced the writer ({reads} rounds)");
    let all = store.query(everything).await.unwrap();
    assert_eq!(all.len(), 2000);
    store.close().await.unwrap();
}

/// Compaction once `records` are pending, never by age within a test.
fn compacting_at(records: usize) -> Compaction {
    Compaction {
        records,
        age: std::time::Duration::from_secs(3600),
        ..Compaction::default()
    }
}

fn x_record(machine: &str, secs: i64, x: f64) -> Arc<ProcessedRecord> {
    Arc::new(ProcessedRecord {
        machine_id: m(machine),
        timestamp: t(secs),
        fields: smallvec::smallvec![millwatch::reading::Field {
            name: millwatch::reading::ParamName::parse("x").unwrap(),
            value: millwatch::reading::Value::Number(x),
        }],
        averages: smallvec::smallvec![x],
    })
}

/// A compaction round spread over many commits (50 machines, each later commit carrying one
/// machine's chunk): reads in the middle of the round see every record exactly once, as its
/// chunks are not counted until its last slice; a restart in the middle drops those chunks and
/// rebuilds them from the log, losing and repeating nothing.
#[tokio::test]
async fn sqlite_reads_and_restarts_in_the_middle_of_a_compaction_round() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let compaction = Compaction {
        between_commits: false,
        ..compacting_at(100)
    };
    let machines: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    let everything = DataQuery {
        machine_id: None,
        since: None,
        until: None,
        limit: 10_000,
    };
    let chunks_in_file = || -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
            .unwrap()
    };
    let check = |all: Vec<Arc<ProcessedRecord>>, stored: usize| {
        let mut keys: Vec<(String, i64)> = all
            .iter()
            .map(|r| (r.machine_id.as_str().to_owned(), r.timestamp.as_nanos()))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            (all.len(), keys.len()),
            (stored, stored),
            "each record once"
        );
    };
    {
        let store = SqliteStore::open_with(&path, Durability::Process, compaction).unwrap();
        // Two records of each machine in one commit: the round starts after it.
        let batch = (0..2)
            .flat_map(|i| machines.iter().map(move |mc| x_record(mc, i, i as f64)))
            .collect();
        store.append(batch).await.unwrap();
        let mut stored = 100;
        for k in 0..10 {
            store
                .append(vec![x_record("m49", 100 + k, 0.0)])
                .await
                .unwrap();
            stored += 1;
            check(store.query(everything.clone()).await.unwrap(), stored);
            let series = store.series(&m("m07"), "x", None, None).await.unwrap();
            assert_eq!(series.values, vec![0.0, 1.0]);
            let latest = store.latest().await.unwrap();
            assert_eq!(latest.len(), 50);
            let recovery = store.recovery(100).await.unwrap();
            assert_eq!(recovery.records.len(), stored);
        }
        // Ten slices are in the file, the round (50 machines) is not over, and the records
        // counted are those stored.
        let chunks = chunks_in_file();
        assert!((5..50).contains(&chunks), "{chunks} chunks");
        assert_eq!(
            millwatch::store::sqlite::census(&path).unwrap()["records"],
            stored as i64
        );
        // No close: as after a crash, the round stays unfinished.
    }
    // The dropped store's writer stops once its queue is gone; the file is then reopened.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    check(store.query(everything.clone()).await.unwrap(), 110);
    let series = store.series(&m("m49"), "x", None, None).await.unwrap();
    assert_eq!(series.values.len(), 12);
    assert_eq!(
        millwatch::store::sqlite::census(&path).unwrap()["records"],
        110
    );
    store.close().await.unwrap();
}

/// With full durability, a round goes on between commits, in transactions that are not
/// fsync'd on their own: once the writer is idle it finishes without another commit and
/// without the age trigger, every record is counted once, and a restart finds them all.
#[tokio::test]
async fn sqlite_round_finishes_between_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let compaction = compacting_at(100);
    let machines: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    let store = SqliteStore::open_with(&path, Durability::Full, compaction).unwrap();
    for i in 0..2 {
        let batch = machines
            .iter()
            .map(|mc| x_record(mc, i, i as f64))
            .collect();
        store.append(batch).await.unwrap();
    }
    let census = || millwatch::store::sqlite::census(&path).unwrap();
    // The second commit brought 100 records: a round over them starts and runs in the gap.
    let started = std::time::Instant::now();
    while census()["logged"] > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the round did not finish between commits: {:?}",
            census()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((census()["records"], census()["chunks"]), (100, 50));
    let series = store.series(&m("m07"), "x", None, None).await.unwrap();
    assert_eq!(series.values, vec![0.0, 1.0]);
    store.close().await.unwrap();
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    let recovery = store.recovery(10).await.unwrap();
    assert_eq!(recovery.records.len(), 100);
    store.close().await.unwrap();
}

/// Concurrent requests reach the store in the order the pipeline processed them: for every
/// machine, the moving averages stored with its records are exactly those of its values taken
/// in arrival order (what a restart replays). Requests race on four threads, each batch
/// naming every machine, with times that say nothing of arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_reach_the_store_in_pipeline_order() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("t.db"), Durability::Process).unwrap());
    let service = service(store.clone()).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let service = service.clone();
            tokio::spawn(async move {
                for batch in 0..40 {
                    let readings = (0..20)
                        .map(|i| {
                            let secs = ((batch * 20 + i) * 8 + task) * 7919 % 100_000;
                            reading(&format!(
                                r#"{{"machine_id":"m{}","timestamp":{},"x":{}}}"#,
                                i % 4,
                                1_000_000 + secs,
                                task * 1000 + batch * 20 + i
                            ))
                        })
                        .collect();
                    service.ingest(readings).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let recovery = store.recovery(usize::MAX).await.unwrap();
    assert_eq!(recovery.records.len(), 8 * 40 * 20);
    for machine in 0..4 {
        let mine: Vec<_> = recovery
            .records
            .iter()
            .filter(|r| r.machine_id.as_str() == format!("m{machine}"))
            .collect();
        assert_eq!(mine.len(), 8 * 40 * 5);
        let mut window = std::collections::VecDeque::new();
        for r in mine {
            let Some(millwatch::reading::Value::Number(x)) = r.get("x") else {
                panic!("no x in {r:?}");
            };
            window.push_back(*x);
            if window.len() > 3 {
                window.pop_front();
            }
            let naive = window.iter().sum::<f64>() / window.len() as f64;
            assert!(
                (r.averages[0] - naive).abs() <= 1e-9 * naive.abs().max(1.0),
                "m{machine}: stored average {} where arrival order gives {naive}",
                r.averages[0]
            );
        }
    }
}

/// Under steady load (commits back to back, never an idle writer) the WAL stays near its
/// restart threshold: the writer finishes the checkpoint itself once the WAL passes it, so
/// the WAL starts over instead of taking every commit's pages for as long as the load lasts.
/// (The WAL file keeps its largest size, so its size is the high-water mark; without the
/// restart it ends up holding the whole run twice, log and chunks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_steady_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let compaction = Compaction {
        wal_frames: 64,
        ..compacting_at(Compaction::default().records)
    };
    let store = Arc::new(SqliteStore::open_with(&path, Durability::Process, compaction).unwrap());
    let wal = path.with_extension("db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let load = std::time::Duration::from_millis(2500);
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut b = 0;
                while started.elapsed() < load {
                    let batch = (0..500)
                        .map(|i| {
                            // Values that do not repeat, so that compressed chunks still fill
                            // pages at the pace of the load and the WAL has to be cut back.
                            let x = ((b * 500 + i) as f64 * 0.618_033_988_7).sin();
                            x_record(&format!("w{w}-{:02}", i % 50), b * 10 + i / 50, x)
                        })
                        .collect();
                    store.append(batch).await.unwrap();
                    b += 1;
                }
                b * 500
            })
        })
        .collect();
    let mut largest = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        largest = largest.max(wal_len());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    store.close().await.unwrap();
    assert_eq!(
        millwatch::store::sqlite::census(&path).unwrap()["records"],
        written
    );
    // The log's files are reused, round after round: the current one and a few spares.
    let log_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".db-log.")
        })
        .count();
    assert!(
        (1..=3).contains(&log_files),
        "{log_files} log files beside the database"
    );
    let db_len = std::fs::metadata(&path).unwrap().len();
    assert!(
        largest < db_len / 2,
        "the WAL grew to {largest} bytes under steady load ({written} records; database \
         file: {db_len} bytes)"
    );
}

/// While compactions fail (here a trigger refuses every chunk), commits still go to the log
/// and are acknowledged, up to the limit of records held in memory; past it new readings are
/// refused with "unavailable" (503). Once compaction works again, it catches up by itself and
/// nothing acknowledged is missing, before or after a restart.
#[tokio::test]
async fn sqlite_failing_compactions_back_off_then_refuse_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let compaction = Compaction {
        limit: 20,
        ..compacting_at(4)
    };
    let store = SqliteStore::open_with(&path, Durability::Process, compaction).unwrap();
    let admin = rusqlite::Connection::open(&path).unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON chunks
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        match store.append(vec![x_record("a", i, i as f64)]).await {
            Ok(()) => acked.push(i as f64),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("refused once the limit is reached");
    assert!(
        matches!(refused, millwatch::store::StoreError::Unavailable(_)),
        "{refused}"
    );
    assert!(refused.to_string().contains("compaction"), "{refused}");
    assert_eq!(acked.len(), 20, "acknowledged up to the limit");
    // Everything acknowledged is readable meanwhile.
    let series = store.series(&m("a"), "x", None, None).await.unwrap();
    assert_eq!(series.values, acked);

    admin.execute_batch("DROP TRIGGER refuse").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut i = 40;
    loop {
        match store.append(vec![x_record("a", i, i as f64)]).await {
            Ok(()) => {
                acked.push(i as f64);
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        i += 1;
    }
    let chunks: i64 = admin
        .query_row("SELECT COALESCE(SUM(n), 0) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert!(
        chunks >= 20,
        "compaction caught up ({chunks} records in chunks)"
    );
    store.close().await.unwrap();
    drop(admin);
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let series = store.series(&m("a"), "x", None, None).await.unwrap();
    assert_eq!(series.values, acked);
    store.close().await.unwrap();
}

/// An idle writer still compacts once the oldest pending record comes of age: a burst
/// followed by silence does not sit in the log (and in memory) until the next commit.
#[tokio::test]
async fn sqlite_idle_writer_compacts_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let compaction = Compaction {
        age: std::time::Duration::from_millis(50),
        ..Compaction::default()
    };
    let store = SqliteStore::open_with(&path, Durability::Process, compaction).unwrap();
    store.append(vec![x_record("a", 1, 1.0)]).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let in_chunks = || -> i64 {
        conn.query_row(
            "SELECT COALESCE(SUM(n), 0) FROM chunks WHERE seq_max <= (SELECT upto FROM compaction)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let wait_for = |n: i64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        async move {
            while in_chunks() < n {
                assert!(std::time::Instant::now() < deadline, "never compacted");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(1).await;
    assert_eq!(in_chunks(), 1);
    // More than one idle step takes (each a transaction of a few chunks): the steps go on
    // until the round is done.
    let many = (2..40_002).map(|i| x_record("b", i, i as f64)).collect();
    store.append(many).await.unwrap();
    wait_for(40_001).await;
    assert_eq!(in_chunks(), 40_001);
    store.close().await.unwrap();
}

/// Retention deletes old records that are still pending (not yet compacted) too; a store
/// retained to nothing and reopened numbers new records after the ones it deleted, and a
/// reopened store whose log is empty reads as before.
#[tokio::test]
async fn sqlite_retention_reaches_pending_records_and_numbers_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    for i in 0..10 {
        store
            .append(vec![x_record("a", i, i as f64)])
            .await
            .unwrap();
    }
    store.retain(t(5)).await.unwrap();
    let all = DataQuery {
        machine_id: None,
        since: None,
        until: None,
        limit: 100,
    };
    // Retention works by whole chunks; all ten records were compacted into one that ends at
    // 9 s, so it stays.
    assert_eq!(xs(&store.query(all.clone()).await.unwrap()).len(), 10);
    store.retain(t(100)).await.unwrap();
    assert!(store.query(all.clone()).await.unwrap().is_empty());
    store.close().await.unwrap();

    // Reopened with an empty log and no chunks: still empty, and numbering goes on.
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    assert!(store.query(all.clone()).await.unwrap().is_empty());
    assert!(store.latest().await.unwrap().is_empty());
    store.append(vec![x_record("b", 200, 1.0)]).await.unwrap();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let first: i64 = conn
        .query_row("SELECT MIN(seq_min) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert!(
        first > 10,
        "the new record is numbered {first}, after the deleted ten"
    );
}

/// After a restart on the same file: records, averages, duplicates and statuses go on.
#[tokio::test]
async fn sqlite_restart_recovers_windows_duplicates_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let stream: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"machine_id": "p", "timestamp": {i}, "x": {}}}"#, i * i))
        .collect();
    // Without a restart.
    let whole = service(Arc::new(MemoryStore::new())).await;
    for r in &stream {
        whole.ingest(vec![reading(r)]).await.unwrap();
    }
    let next = r#"{"machine_id": "p", "timestamp": 100, "x": 7}"#;
    let (want, _) = whole.ingest_records(vec![reading(next)]).await.unwrap();

    // With a restart after 6 readings.
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        let svc = service(store.clone()).await;
        for r in &stream[..6] {
            svc.ingest(vec![reading(r)]).await.unwrap();
        }
        svc.set_status(m("p"), JobStatus::Running).await.unwrap();
        store.close().await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
    let svc = service(store.clone()).await;
    assert_eq!(svc.status_of(&m("p")).0, JobStatus::Running);
    // Re-sent readings from before the restart are duplicates.
    let again = svc
        .ingest(stream[..6].iter().map(|r| reading(r)).collect())
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 6));
    for r in &stream[6..] {
        svc.ingest(vec![reading(r)]).await.unwrap();
    }
    let (got, _) = svc.ingest_records(vec![reading(next)]).await.unwrap();
    assert_eq!(got[0].averages, want[0].averages);
    assert_eq!(svc.latest()[0].timestamp, t(100));
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStore::open(&path, Durability::Full).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, Durability::Full)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("newer millwatch"), "{err}");
}

#[tokio::test]
async fn postgres_store_suite() {
    let Some(url) = crate::pg::fresh_schema("suite").await else {
        return;
    };
    let store = millwatch::store::postgres::PostgresStore::open(&url)
        .await
        .unwrap();
    suite(Arc::new(store)).await;
}

/// Connections killed from SQL (pg_terminate_backend) mid-stream: the store reconnects, and
/// every acknowledged reading is there afterwards.
#[tokio::test]
async fn postgres_reconnects_after_its_connections_are_terminated() {
    let Some(url) = crate::pg::fresh_schema("reconnect").await else {
        return;
    };
    let app_name = url.rsplit("application_name=").next().unwrap().to_owned();
    let store: Arc<dyn Store> = Arc::new(
        millwatch::store::postgres::PostgresStore::open(&url)
            .await
            .unwrap(),
    );
    let svc = service(store.clone()).await;
    let mut acked = Vec::new();
    let mut failures = 0;
    let mut terminated = 0;
    for i in 0..60i64 {
        if i % 15 == 7 {
            terminated += crate::pg::terminate(&app_name).await;
        }
        // A client retries what was not acknowledged, as it would after a 503.
        loop {
            let r = reading(&format!(
                r#"{{"machine_id": "p", "timestamp": {i}, "x": {i}}}"#
            ));
            match svc.ingest(vec![r]).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        matches!(e, millwatch::store::StoreError::Unavailable(_)),
                        "{e}"
                    );
                    failures += 1;
                    assert!(failures < 100, "no reconnection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        acked.push(i as f64);
    }
    let got = store
        .query(DataQuery {
            machine_id: Some(m("p")),
            since: None,
            until: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(xs(&got), acked);
    assert!(
        terminated >= 4,
        "connections were terminated {terminated} times"
    );
    // The windows went on as if nothing happened: the last average is that of 55..59.
    assert_eq!(
        got.last().unwrap().averages.as_slice(),
        [(57.0 + 58.0 + 59.0) / 3.0]
    );
    store.close().await.unwrap();
}

/// A store whose writes fail while `fail` is set: a database that went away.
struct FlakyStore {
    inner: MemoryStore,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    fn append(&self, records: Vec<Arc<ProcessedRecord>>) -> millwatch::store::Ack {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async {
                Err(millwatch::store::StoreError::Unavailable("down".into()))
            });
        }
        self.inner.append(records)
    }
    fn append_status(&self, c: millwatch::status::StatusChange) -> millwatch::store::Ack {
        self.inner.append_status(c)
    }
    async fn query(
        &self,
        q: DataQuery,
    ) -> Result<Vec<Arc<ProcessedRecord>>, millwatch::store::StoreError> {
        self.inner.query(q).await
    }
    async fn latest(&self) -> Result<Vec<Arc<ProcessedRecord>>, millwatch::store::StoreError> {
        self.inner.latest().await
    }
    async fn series(
        &self,
        m: &MachineId,
        p: &str,
        s: Option<Timestamp>,
        u: Option<Timestamp>,
    ) -> Result<millwatch::store::ValueSeries, millwatch::store::StoreError> {
        self.inner.series(m, p, s, u).await
    }
    async fn status_history(
        &self,
        m: Option<&MachineId>,
        l: usize,
    ) -> Result<Vec<millwatch::status::StatusChange>, millwatch::store::StoreError> {
        self.inner.status_history(m, l).await
    }
    async fn recovery(
        &self,
        n: usize,
    ) -> Result<millwatch::store::Recovery, millwatch::store::StoreError> {
        self.inner.recovery(n).await
    }
    async fn retain(&self, c: Timestamp) -> Result<usize, millwatch::store::StoreError> {
        self.inner.retain(c).await
    }
}

/// A write that fails must not leave the pipeline believing it took the readings: the
/// client's retry is stored (not answered as a duplicate) and the averages are the ones over
/// what was stored.
#[tokio::test]
async fn a_failed_write_is_retried_not_swallowed_as_a_duplicate() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        fail: false.into(),
    });
    let svc = service(store.clone()).await;
    let r = |i: i64| {
        reading(&format!(
            r#"{{"machine_id": "p", "timestamp": {i}, "x": {i}}}"#
        ))
    };
    svc.ingest(vec![r(1), r(2)]).await.unwrap();
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(svc.ingest(vec![r(3)]).await.is_err());
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let retried = svc.ingest(vec![r(3)]).await.unwrap();
    assert_eq!((retried.stored, retried.duplicates), (1, 0));
    let got = store
        .query(DataQuery {
            machine_id: Some(m("p")),
            since: None,
            until: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(xs(&got), vec![1.0, 2.0, 3.0]);
    // Window 3 over 1, 2, 3 and not 1, 2, 3, 3.
    assert_eq!(got[2].averages.as_slice(), [2.0]);
    let (next, _) = svc.ingest_records(vec![r(4)]).await.unwrap();
    assert_eq!(next[0].averages.as_slice(), [3.0]);
}
