//! `millwatch ingest` end to end: the built binary on files and on a local HTTP endpoint.

use std::io::Write;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn millwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(args)
        .env("MILLWATCH_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    f
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect()
}

const SEED: &str = r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"}
{"timestamp": "2024-10-27T12:00:10", "temperature": 72, "speed": 32, "status": "RUNNING"}
{"timestamp": "2024-10-27T12:00:20", "temperature": 75, "speed": 50, "status": "RUNNING"}
{"timestamp": "2024-10-27T12:00:30", "temperature": 71, "speed": 31, "status": "RUNNING"}
{"timestamp": "2024-10-27T12:00:40", "temperature": 74, "speed": 29, "status": "PAUSED"}
{"timestamp": "2024-10-27T12:00:50", "temperature": 76, "speed": 30, "status": "RUNNING"}
{"timestamp": "2024-10-27T12:01:00", "temperature": 78, "speed": 30, "status": "RUNNING"}
"#;

#[test]
fn seed_file_prints_records_with_exact_averages() {
    let f = file(SEED);
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"machine_id":"machine-1","timestamp":"2024-10-27T12:00:00Z","temperature":70,"speed":30,"status":"RUNNING","temperature_avg":70,"speed_avg":30}"#
    );
    let avgs: Vec<f64> = lines(&out)
        .iter()
        .map(|r| r["temperature_avg"].as_f64().unwrap())
        .collect();
    assert_eq!(
        avgs,
        vec![70.0, 71.0, 72.333_333_333_333_33, 72.0, 72.4, 73.6, 74.8]
    );
}

#[test]
fn array_and_ndjson_and_pretty_give_the_same_records() {
    let ndjson = millwatch(&[
        "ingest",
        file(SEED).path().to_str().unwrap(),
        "--interval",
        "0",
    ]);
    let array_text = format!("[{}]", SEED.trim().lines().collect::<Vec<_>>().join(",\n"));
    let array = millwatch(&[
        "ingest",
        file(&array_text).path().to_str().unwrap(),
        "--interval",
        "0",
    ]);
    assert_eq!(ndjson.stdout, array.stdout);
    assert!(array.status.success());
}

#[test]
fn window_and_machine_flags() {
    let f = file(SEED);
    let out = millwatch(&[
        "ingest",
        f.path().to_str().unwrap(),
        "--interval",
        "0",
        "--window",
        "2",
        "--machine",
        "press-07",
    ]);
    let recs = lines(&out);
    assert_eq!(recs[2]["machine_id"], "press-07");
    assert_eq!(recs[2]["temperature_avg"], 73.5);
    assert_eq!(recs[2]["speed_avg"], 41);
}

#[test]
fn count_stops_early() {
    let f = file(SEED);
    let out = millwatch(&[
        "ingest",
        f.path().to_str().unwrap(),
        "--interval",
        "0",
        "--count",
        "3",
    ]);
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 3);
}

#[test]
fn replay_with_an_interval_paces_the_readings() {
    let f = file(SEED);
    let start = std::time::Instant::now();
    let out = millwatch(&[
        "ingest",
        f.path().to_str().unwrap(),
        "--interval",
        "100ms",
        "--count",
        "4",
    ]);
    assert!(out.status.success());
    assert_eq!(lines(&out).len(), 4);
    // Three waits of 100 ms between four readings.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn invalid_readings_are_reported_skipped_and_exit_1() {
    let f = file(
        "{\"x\": 1, \"timestamp\": 1}\n{\"x\": true}\nnot json\n{\"x_avg\": 3}\n{\"x\": 3, \"timestamp\": 2}\n",
    );
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let recs = lines(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["x_avg"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading 1 (line 2)") && stderr.contains("\"x\""),
        "{stderr}"
    );
    assert!(stderr.contains("reading 2 (line 3)"), "{stderr}");
    assert!(
        stderr.contains("reading 3 (line 4)") && stderr.contains("_avg"),
        "{stderr}"
    );
}

#[test]
fn duplicates_in_a_file_are_taken_once() {
    let line = "{\"timestamp\": 5, \"x\": 1}\n";
    let f = file(&format!("{line}{line}{{\"timestamp\": 6, \"x\": 3}}\n"));
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    let recs = lines(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["x_avg"], 2);
}

#[test]
fn a_single_object_file_is_read_once_with_interval_0() {
    let f = file("{\n  \"machine_id\": \"oven-2\",\n  \"temperature\": 180.5\n}\n");
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    assert!(out.status.success());
    let recs = lines(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["machine_id"], "oven-2");
    assert_eq!(recs[0]["temperature_avg"], 180.5);
}

#[test]
fn a_live_file_is_re_read_every_interval() {
    // No timestamp: each re-read is a new reading at its time of arrival.
    let f = file(r#"{"temperature": 10}"#);
    let path = f.path().to_str().unwrap().to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["ingest", &path, "--interval", "300ms", "--count", "3"])
        .env("MILLWATCH_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The file changes once the first read is printed (not after a fixed sleep, which a
    // loaded machine outlasts before the binary has even started): the third read, 600 ms
    // after the first, sees the change.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut text).unwrap();
    std::fs::write(&path, r#"{"temperature": 40}"#).unwrap();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    assert!(child.wait().unwrap().success());
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["temperature"], 10);
    assert_eq!(recs[2]["temperature"], 40);
    let last_avg = recs[2]["temperature_avg"].as_f64().unwrap();
    assert!(last_avg > 10.0 && last_avg <= 30.0, "{last_avg}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        vec!["ingest", "x.json", "--window", "0"],
        vec!["ingest", "x.json", "--interval", "soon"],
        vec!["ingest", "x.json", "--machine", "bad id"],
        vec!["ingest", "ftp://host/x"],
        vec!["ingest", "/definitely/not/here.json"],
        vec!["ingest", "x.json", "--bogus"],
    ] {
        let out = millwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
}

#[test]
fn help_explains_every_flag() {
    let out = millwatch(&["ingest", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--interval",
        "--window",
        "--machine",
        "--count",
        "SOURCE",
        "simulate",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn simulator_produces_records_for_each_machine() {
    let out = millwatch(&["ingest", "simulate:4", "--interval", "0", "--count", "8"]);
    assert!(out.status.success());
    let recs = lines(&out);
    let mut machines: Vec<String> = recs
        .iter()
        .map(|r| r["machine_id"].as_str().unwrap().to_owned())
        .collect();
    machines.sort();
    machines.dedup();
    assert_eq!(machines.len(), 4);
    for r in &recs {
        assert!(r["temperature"].is_number() && r["temperature_avg"].is_number());
        assert!(r["state"].is_string() && r["machine_id"].as_str().unwrap().starts_with("sim-"));
    }
}

/// A local endpoint whose body changes at every poll; one poll answers 503 in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoint_is_polled_and_failures_are_retried() {
    let polls = Arc::new(AtomicU64::new(0));
    let p = polls.clone();
    let app = axum::Router::new().route(
        "/readings",
        axum::routing::get(move || {
            let n = p.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 1 {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                }
                let body = format!(
                    "{{\"machine_id\": \"lathe-1\", \"timestamp\": {n}, \"speed\": {}}}\n{{\"machine_id\": \"lathe-2\", \"timestamp\": {n}, \"speed\": 5}}",
                    n * 10
                );
                (axum::http::StatusCode::OK, body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readings", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = tokio::task::spawn_blocking(move || {
        // The poll's timeout is its interval: 400 ms leaves a loaded machine room to answer.
        millwatch(&["ingest", &url, "--interval", "400ms", "--count", "5"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = lines(&out);
    let lathe1: Vec<(i64, f64)> = recs
        .iter()
        .filter(|r| r["machine_id"] == "lathe-1")
        .map(|r| {
            (
                r["speed"].as_i64().unwrap(),
                r["speed_avg"].as_f64().unwrap(),
            )
        })
        .collect();
    // Polls 0, 2, 3 answered (1 was a 503): speeds 0, 20, 30 with running means.
    assert_eq!(lathe1, vec![(0, 0.0), (20, 10.0), (30, 50.0 / 3.0)]);
    // lathe-2 sends the same speed at each new time: new readings, not duplicates.
    assert_eq!(
        recs.iter().filter(|r| r["machine_id"] == "lathe-2").count(),
        2
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
}

#[test]
fn line_protocol_files_are_read() {
    let mut f = tempfile::Builder::new().suffix(".lp").tempfile().unwrap();
    f.write_all(b"# telegraf\nm,host=gw,machine_id=oven-1 t=10 1700000000000000000\nm,host=gw,machine_id=oven-1 t=20i 1700000001000000000\nm,machine_id=oven-1 t=bad\n").unwrap();
    let out = millwatch(&["ingest", f.path().to_str().unwrap(), "--interval", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let recs = lines(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["t_avg"], 15);
    assert_eq!(recs[1]["machine_id"], "oven-1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 4 column"));
}
