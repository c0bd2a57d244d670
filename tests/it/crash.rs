//! Acknowledged means durable: the real binary is killed with SIGKILL while clients push
//! batches, restarted on the same file, and every acknowledged reading is still there; the
//! next reading's moving average is the one over the whole stream.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Starts `millwatch serve --source none` on a free port; returns the child and its URL.
pub fn start_server(store: &str) -> (Child, String) {
    start_server_with(&["--source", "none", "--store", store])
}

/// Starts `millwatch serve ARGS` on a free port and returns the child and its base URL.
pub fn start_server_with(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .args(args)
        .env("MILLWATCH_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server logs before it exits")
            .expect("utf-8 log");
        if let Some(at) = line.find("listening on http://") {
            let addr = line[at + "listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            break addr;
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

const WINDOW: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_loses_nothing_acknowledged(&format!(
        "sqlite:{}",
        dir.path().join("crash.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_postgres() {
    let Some(url) = crate::pg::fresh_schema("crash").await else {
        return;
    };
    sigkill_loses_nothing_acknowledged(&url).await;
}

async fn sigkill_loses_nothing_acknowledged(store: &str) {
    let (mut child, base) = start_server(store);
    let client = reqwest::Client::new();
    // Per machine: the x values of every acknowledged batch, in order.
    let acked: Arc<Mutex<Vec<Vec<i64>>>> = Arc::new(Mutex::new(vec![Vec::new(), Vec::new()]));
    let mut tasks = Vec::new();
    for machine in 0..2usize {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            // At most 9,950 readings per machine, so one GET /data (limit 10,000) sees them all.
            for batch in 0..199i64 {
                let xs: Vec<i64> = (0..50).map(|i| batch * 50 + i).collect();
                let body: Vec<String> = xs
                    .iter()
                    .map(|x| {
                        format!(
                            r#"{{"machine_id": "m{machine}", "timestamp": {}, "x": {x}}}"#,
                            1_000_000 + x
                        )
                    })
                    .collect();
                let resp = client
                    .post(format!("{base}/ingest"))
                    .header("content-type", "application/x-ndjson")
                    .body(body.join("\n"))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap()[machine].extend(xs),
                    _ => return, // the server is gone
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Let some batches through, then kill in the middle of the traffic.
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|a| a.len() >= 50),
        "some batches were acknowledged before the kill"
    );

    let (mut child, base) = start_server(store);
    for (machine, xs) in acked.iter().enumerate() {
        let url =
            format!("{base}/data?machine_id=m{machine}&limit=10000&since=1970-01-12T13:46:40Z");
        let stored: Vec<Value> = client.get(url).send().await.unwrap().json_or_panic().await;
        let stored_x: Vec<i64> = stored.iter().map(|r| r["x"].as_i64().unwrap()).collect();
        // Every acknowledged reading is there, in order; after them at most whole batches
        // that were committed but not yet answered when the process died.
        assert!(
            stored_x.len() >= xs.len(),
            "m{machine}: {} stored < {} acknowledged",
            stored_x.len(),
            xs.len()
        );
        assert_eq!(&stored_x[..xs.len()], &xs[..], "m{machine}");
        assert_eq!(stored_x.len() % 50, 0, "batches are all or nothing");

        // The next reading's average continues the whole stream.
        let next = 1_000_000_000i64;
        let body =
            format!(r#"{{"machine_id": "m{machine}", "timestamp": 2000000000, "x": {next}}}"#);
        let r = client
            .post(format!("{base}/ingest"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let latest: Vec<Value> = client
            .get(format!("{base}/data/latest"))
            .send()
            .await
            .unwrap()
            .json_or_panic()
            .await;
        let rec = latest
            .iter()
            .find(|r| r["machine_id"] == format!("m{machine}"))
            .unwrap();
        let tail: Vec<i64> = stored_x[stored_x.len() - (WINDOW - 1)..].to_vec();
        let want = (tail.iter().sum::<i64>() + next) as f64 / WINDOW as f64;
        assert_eq!(rec["x_avg"].as_f64().unwrap(), want, "m{machine}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `json()` needs reqwest's json feature; this reads the body as JSON with serde_json.
pub trait JsonBody {
    async fn json_or_panic<T: serde::de::DeserializeOwned>(self) -> T;
}

impl JsonBody for reqwest::Response {
    async fn json_or_panic<T: serde::de::DeserializeOwned>(self) -> T {
        let bytes = self.bytes().await.expect("a body");
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    }
}

/// CPU time (user + system, in clock ticks) of the process's threads with this name.
#[cfg(target_os = "linux")]
fn thread_ticks(pid: u32, name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is the 3rd field, utime the 14th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        total += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    total
}

/// A status change on an idle server, then nothing: the SQLite writer sleeps. (It once took
/// a commit without readings for pending work and, five seconds later, spun on a deadline in
/// the past, a whole core until the next reading.)
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sqlite_writer_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) =
        start_server(&format!("sqlite:{}", dir.path().join("idle.db").display()));
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{base}/status"))
        .header("content-type", "application/json")
        .body(r#"{"machine_id": "p", "status": "STARTED"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Past the compaction age (5 s), then two seconds of watching.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = thread_ticks(child.id(), "sqlite-writer");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = thread_ticks(child.id(), "sqlite-writer") - before;
    child.kill().unwrap();
    child.wait().unwrap();
    // A spinning writer spends about 200 ticks (a core) in two seconds.
    assert!(spent <= 20, "the idle writer used {spent} ticks in 2 s");
}
