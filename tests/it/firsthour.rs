//! Issue 19, "the first hour": the points a plant engineer trying millwatch with their own data
//! ran into, each as a test: the job status apart from what machines report (`--status-from`,
//! the simulator's MES that leaves API changes alone), `--timezone`, CSV input, `--listen
//! PORT`, nothing on disk when the port is taken, `analyze` over every parameter, 404s that
//! name what exists, and errors that name their cause.

use std::io::Write;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::serve_bin::{Served, bin, repo};
use crate::support::TestApp;

fn millwatch(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .env("MILLWATCH_LOG", "info")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp_file(suffix: &str, contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(suffix)
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_status_with_the_seed_data_ends_in_the_status_it_implies() {
    let seed = repo().join("examples/data/data.json");
    let served = Served::start(&[
        "--source",
        seed.to_str().unwrap(),
        "--interval",
        "0",
        "--store",
        "memory",
        "--status-from",
        "status",
    ]);
    // The readings say RUNNING four times, then PAUSED: IDLE → RUNNING → PAUSED.
    let body = served
        .wait_for("/status/machine-1", |b| b.contains("PAUSED"))
        .await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["status"], "PAUSED");
    let (_, history) = served.get("/status/history?machine_id=machine-1").await;
    let history: Vec<Value> = serde_json::from_str(&history).unwrap();
    let path: Vec<&str> = history
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["RUNNING", "PAUSED"]);

    // A reported value the lifecycle refuses is counted, never an error of the reading.
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/ingest", served.base))
        .header("content-type", "application/json")
        .body(r#"{"timestamp": "2024-10-27T12:01:00", "temperature": 70, "status": "STARTED"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let metrics = served
        .wait_for("/metrics", |m| {
            m.contains("millwatch_status_from_refused_total")
        })
        .await;
    assert!(
        metrics.contains(r#"millwatch_status_from_refused_total{parameter="status"} 1"#),
        "{metrics}"
    );
    assert!(
        served
            .log
            .lock()
            .unwrap()
            .contains("reported job status not applied")
    );
    let (_, s) = served.get("/status/machine-1").await;
    assert!(s.contains("PAUSED"), "{s}");
}

/// The simulator's plant (with its MES) running against a service until dropped.
struct Plant(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Plant {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn start_plant(service: std::sync::Arc<millwatch::service::Service>) -> Plant {
    use millwatch::sources::Source;
    use millwatch::sources::simulate::{Mes, Simulator};
    let sim = Box::new(Simulator::new(
        3,
        Duration::from_millis(5),
        Some(Mes::new(service.clone())),
    ));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<millwatch::sources::Batch>(64);
    let feeder = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            let (readings, _, _) = batch.split("simulate");
            let _ = service.ingest(readings).await;
        }
    });
    let plant = tokio::spawn(async move {
        let _ = sim.run(tx).await;
    });
    Plant(vec![plant, feeder])
}

/// The job statuses `machine` went through, oldest first.
async fn path_of(app: &TestApp, machine: &str) -> Vec<String> {
    let h = app
        .get(&format!("/status/history?machine_id={machine}&limit=10000"))
        .await;
    h.body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (up to 30 s) until `done` holds for `machine`'s path.
async fn until_path(app: &TestApp, machine: &str, what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let path = path_of(app, machine).await;
        if done(&path) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{machine}: {what}; path {path:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_the_api_is_not_undone_by_the_simulators_mes() {
    let mut service = None;
    let app = TestApp::with(
        std::sync::Arc::new(millwatch::store::memory::MemoryStore::new()),
        |s| service = Some(s.service.clone()),
    )
    .await;
    let service = service.unwrap();
    let plant = start_plant(service.clone());
    // The MES starts its jobs; then a shift lead pauses one through the API.
    until_path(&app, "sim-press-1", "the MES never ran the job", |p| {
        p.last().is_some_and(|s| s == "RUNNING")
    })
    .await;
    let a = app.set_status("sim-press-1", "PAUSED", 200).await;
    assert_eq!(a.body["previous"], "RUNNING");
    let paused_at = path_of(&app, "sim-press-1").await.len();
    // Meanwhile the MES goes on with the other machines: wait until it has moved one of them
    // four times more (without the protection, a pause lasts about 10 ticks of 5 ms; each
    // of those moves takes many more).
    let before = path_of(&app, "sim-lathe-2").await.len();
    until_path(&app, "sim-lathe-2", "the MES stopped moving jobs", |p| {
        p.len() >= before + 4
    })
    .await;
    let path = path_of(&app, "sim-press-1").await;
    assert_eq!(
        path.len(),
        paused_at,
        "the MES undid the API's pause: {path:?}"
    );
    assert_eq!(
        app.get("/status/sim-press-1").await.body["status"],
        "PAUSED"
    );

    // The control: a pause that did not come through the API is the MES's to undo.
    let mill = millwatch::reading::MachineId::parse("sim-mill-3").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !matches!(
        service
            .set_status_by_plant(
                mill.clone(),
                millwatch::status::JobStatus::Paused,
                None,
                None
            )
            .await,
        Ok(Some(_))
    ) {
        // Not now (a finished job cannot pause): try again at the next status.
        assert!(
            std::time::Instant::now() < deadline,
            "sim-mill-3 never pausable"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let paused_at = path_of(&app, "sim-mill-3").await.len();
    until_path(
        &app,
        "sim-mill-3",
        "the MES never moved on from a pause of its own",
        |p| p.len() > paused_at,
    )
    .await;
    drop(plant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_machines_report_a_machine_state_and_part_counters() {
    let served = Served::start(&["--store", "memory", "--interval", "20ms"]);
    let body = served
        .wait_for("/data/latest", |b| b.contains("sim-mill-3"))
        .await;
    let latest: Vec<Value> = serde_json::from_str(&body).unwrap();
    for r in &latest {
        let id = r["machine_id"].as_str().unwrap();
        assert!(id.starts_with("sim-"), "{id}");
        assert!(r["state"].is_string() && r.get("status").is_none(), "{r}");
        assert!(r["parts"].is_number() && r["rejects"].is_number(), "{r}");
    }
}

#[test]
fn timezone_reads_offset_less_times_in_the_zone() {
    let f = temp_file(
        ".ndjson",
        "{\"timestamp\": \"2024-01-15T12:00:00\", \"t\": 1}\n\
         {\"timestamp\": \"2024-07-15T12:00:00\", \"t\": 2}\n\
         {\"timestamp\": \"2024-07-15T12:00:00+02:00\", \"t\": 3}\n\
         {\"timestamp\": \"2024-03-31T02:30:00\", \"t\": 4}\n",
    );
    let path = f.path().to_str().unwrap();
    let out = millwatch(&[
        "ingest",
        path,
        "--interval",
        "0",
        "--timezone",
        "Europe/Berlin",
    ]);
    let times: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["timestamp"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        times,
        [
            "2024-01-15T11:00:00Z",
            "2024-07-15T10:00:00Z",
            "2024-07-15T10:00:00Z"
        ]
    );
    // 02:30 on 31 March never happened in Berlin: rejected, naming the field; exit 1.
    let err = text(&out.stderr);
    assert!(
        err.contains("reading 3")
            && err.contains("field \"timestamp\"")
            && err.contains("does not exist in Europe/Berlin"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    // The default is UTC.
    let out = millwatch(&["ingest", path, "--interval", "0", "--count", "1"]);
    assert!(text(&out.stdout).contains("2024-01-15T12:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_file_csv_body_and_json_give_the_same_records() {
    let csv = std::fs::read_to_string(repo().join("examples/data/readings.csv")).unwrap();
    // The same readings, written as JSON by hand.
    let json = r#"[{"machine_id": "lathe-02", "timestamp": "2026-11-28T05:30:00Z", "temperature": 64.5, "speed": 2400, "status": "RUNNING"},
{"machine_id": "lathe-02", "timestamp": "2026-11-28T05:30:10Z", "temperature": 65, "speed": 2410, "status": "RUNNING"},
{"machine_id": "lathe-02", "timestamp": "2026-11-28T05:30:20Z", "temperature": 65.5, "status": "PAUSED"}]"#;
    let json_file = temp_file(".json", json);
    let from_csv_file = millwatch(&["ingest", "examples/data/readings.csv", "--interval", "0"]);
    assert!(
        from_csv_file.status.success(),
        "{}",
        text(&from_csv_file.stderr)
    );
    let from_json_file = millwatch(&[
        "ingest",
        json_file.path().to_str().unwrap(),
        "--interval",
        "0",
    ]);
    let records = |o: &Output| -> Vec<Value> {
        text(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let want = records(&from_json_file);
    assert_eq!(want.len(), 3);
    assert_eq!(records(&from_csv_file), want);

    for (body, ct) in [(csv.as_str(), "text/csv"), (json, "application/json")] {
        let app = TestApp::start().await;
        let a = app.post_as("/ingest", body, ct).await;
        assert_eq!(a.status, 200, "{ct}: {}", a.body);
        assert_eq!(a.body["accepted"], 3);
        let data = app.get("/data?machine_id=lathe-02").await;
        assert_eq!(data.body, Value::Array(want.clone()), "{ct}");
    }
    // A bad CSV row is a 400 naming it, and nothing is stored.
    let app = TestApp::start().await;
    let a = app
        .post_as(
            "/ingest",
            "machine_id,speed\npress-01,1\npress-01\n",
            "text/csv",
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"].as_str().unwrap().contains("reading 1"),
        "{}",
        a.body
    );
    assert_eq!(app.get("/data").await.body, serde_json::json!([]));
}

#[test]
fn csv_or_line_protocol_read_as_json_gets_a_hint() {
    let f = temp_file(".json", "timestamp,temperature\n2024-10-27T12:00:00,70\n");
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("looks like CSV") && err.contains(".csv"),
        "{err}"
    );
    let f = temp_file(".txt", "modbus,machine_id=p temperature=1 1795843860\n");
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    assert!(text(&out.stderr).contains("looks like InfluxDB line protocol"));
}

#[test]
fn a_failed_ingest_logs_no_finished_line() {
    let out = millwatch(&["ingest", "nosuch.json", "--interval", "0"]);
    let err = text(&out.stderr);
    assert!(err.contains("cannot open nosuch.json"), "{err}");
    assert!(!err.contains("ingest finished"), "{err}");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn analyze_takes_every_numeric_parameter_and_names_them_for_a_typo() {
    let out = millwatch(&["analyze", "examples/data/data.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["speed", "temperature"]);
    assert_eq!(all["speed"]["average"], 34.4);
    assert_eq!(all["temperature"]["count"], 5);
    // One named: that one alone, as before.
    let out = millwatch(&["analyze", "examples/data/data.json", "-p", "speed"]);
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one, all["speed"]);
    // A typo: exit 1, naming what there is.
    let out = millwatch(&["analyze", "examples/data/data.json", "-p", "tempreature"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"tempreature\"")
            && err.contains("speed, temperature")
            && err.contains("status"),
        "{err}"
    );
    // CSV files too.
    let out = millwatch(&["analyze", "examples/data/readings.csv", "-p", "speed"]);
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["count"], 2);
}

#[tokio::test]
async fn analytics_of_an_unknown_machine_or_parameter_is_a_404_naming_what_exists() {
    let app = TestApp::start().await;
    let data = std::fs::read_to_string(repo().join("examples/data/data.json")).unwrap();
    assert_eq!(app.post("/ingest", &data).await.status, 200);
    let a = app
        .get("/analytics?machine_id=mill-3&parameter=speed")
        .await;
    assert_eq!(a.status, 404);
    let e = a.body["error"].as_str().unwrap();
    assert!(e.contains("\"mill-3\"") && e.contains("machine-1"), "{e}");
    let a = app
        .get("/analytics?machine_id=machine-1&parameter=sped")
        .await;
    assert_eq!(a.status, 404);
    let e = a.body["error"].as_str().unwrap();
    assert!(
        e.contains("\"sped\"") && e.contains("speed, temperature"),
        "{e}"
    );
    // A known parameter over a range without values is a count of 0, not an error.
    let a = app
        .get("/analytics?machine_id=machine-1&parameter=speed&since=2030-01-01T00:00:00Z")
        .await;
    assert_eq!((a.status, a.body["count"].clone()), (200, Value::from(0)));
    let a = app
        .get("/analytics?machine_id=machine-1&parameter=speed")
        .await;
    assert_eq!(a.body["count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_port_alone() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--store",
            "memory",
            "--source",
            "none",
            "--listen",
            &port.to_string(),
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "--listen {port} did not serve on 127.0.0.1:{port}");
}

#[test]
fn nothing_is_created_on_disk_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--listen", &port])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot listen on 127.0.0.1:") && err.contains("--listen"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created: {left:?}");
}

#[test]
fn a_fresh_database_is_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.db");
    let out = Command::new(bin())
        .args([
            "ingest",
            "examples/data/data.json",
            "--interval",
            "0",
            "--store",
        ])
        .arg(format!("sqlite:{}", f.display()))
        .current_dir(repo())
        .env("MILLWATCH_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.matches("new database created").count(), 1, "{err}");
    assert!(!err.contains("schema migrated"), "{err}");
}

#[test]
fn connection_errors_name_their_cause() {
    // PostgreSQL on a port where nothing listens.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://postgres@127.0.0.1:9/test",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    // An HTTP poll of a port where nothing listens: the warning gives the cause.
    let mut child = Command::new(bin())
        .args([
            "ingest",
            "http://127.0.0.1:9/readings",
            "--interval",
            "100ms",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains("poll failed") && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
    // An MQTT broker that is not there.
    let mut child = Command::new(bin())
        .args(["ingest", "mqtt://127.0.0.1:9/plant/+/telemetry"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains("broker connection lost") && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
}
