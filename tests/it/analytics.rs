//! `/analytics` and `millwatch analyze` against SPEC §5's seed example and each error.

use serde_json::{Value, json};

use crate::support::TestApp;

const SEED_SERIES: &str = r#"{"timestamps": ["2024-10-27T12:00:00", "2024-10-27T12:00:10", "2024-10-27T12:00:20", "2024-10-27T12:00:30", "2024-10-27T12:00:40"], "values": [30, 32, 50, 31, 29]}"#;

fn seed_answer(threshold: f64) -> Value {
    json!({
        "count": 5,
        "average": 34.4,
        "min": {"value": 29, "timestamp": "2024-10-27T12:00:40Z"},
        "max": {"value": 50, "timestamp": "2024-10-27T12:00:20Z"},
        "threshold": threshold,
        "anomalies": [{"timestamp": "2024-10-27T12:00:20Z", "value": 50, "deviation": (50.0 - 34.4) / 34.4}]
    })
}

#[tokio::test]
async fn post_a_series_in_both_forms() {
    let app = TestApp::start().await;
    let a = app.post("/analytics", SEED_SERIES).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, seed_answer(0.2));
    let series = r#"{"series": [
        {"timestamp": "2024-10-27T12:00:00Z", "value": 30}, {"timestamp": "2024-10-27T12:00:10Z", "value": 32},
        {"timestamp": "2024-10-27T12:00:20Z", "value": 50}, {"timestamp": "2024-10-27T12:00:30Z", "value": 31},
        {"timestamp": "2024-10-27T12:00:40Z", "value": 29}], "threshold": 0.2}"#;
    assert_eq!(app.post("/analytics", series).await.body, seed_answer(0.2));
    // A threshold of 0.5 leaves 50 in range.
    let a = app.post("/analytics?threshold=0.5", SEED_SERIES).await;
    assert_eq!(a.body["anomalies"], json!([]));
    let empty = app
        .post("/analytics", r#"{"timestamps": [], "values": []}"#)
        .await;
    assert_eq!(
        empty.body,
        json!({"count": 0, "average": null, "min": null, "max": null, "threshold": 0.2, "anomalies": []})
    );
}

#[tokio::test]
async fn get_over_stored_values_with_bounds_buckets_and_moving_baseline() {
    let app = TestApp::start().await;
    let mut readings = Vec::new();
    for (i, v) in [30, 32, 50, 31, 29].iter().enumerate() {
        readings.push(format!(
            r#"{{"machine_id": "press-01", "timestamp": "2024-10-27T12:00:{:02}Z", "speed": {v}, "status": "RUNNING"}}"#,
            i * 10
        ));
    }
    assert_eq!(
        app.post("/ingest", &format!("[{}]", readings.join(",")))
            .await
            .status,
        200
    );
    let a = app
        .get("/analytics?machine_id=press-01&parameter=speed")
        .await;
    assert_eq!(a.body, seed_answer(0.2));
    // Inclusive bounds.
    let a = app
        .get("/analytics?machine_id=press-01&parameter=speed&since=2024-10-27T12:00:10Z&until=2024-10-27T12:00:30Z")
        .await;
    assert_eq!(a.body["count"], 3);
    assert_eq!(a.body["average"], (32.0 + 50.0 + 31.0) / 3.0);
    // Buckets of 20 s aligned to the epoch: [00, 10], [20, 30], [40].
    let a = app
        .get("/analytics?machine_id=press-01&parameter=speed&bucket=20s")
        .await;
    let buckets = a.body["buckets"].as_array().unwrap().clone();
    assert_eq!(buckets.len(), 3);
    assert_eq!(
        buckets[0],
        json!({"start": "2024-10-27T12:00:00Z", "count": 2, "average": 31, "min": 30, "max": 32})
    );
    assert_eq!(buckets[2]["count"], 1);
    // Against the moving average of the last 3: 50 deviates from (30+32+50)/3.
    let a = app
        .get("/analytics?machine_id=press-01&parameter=speed&baseline=moving:3")
        .await;
    let anomalies = a.body["anomalies"].as_array().unwrap();
    assert_eq!(anomalies[0]["value"], 50);
    assert_eq!(anomalies[0]["baseline"], (30.0 + 32.0 + 50.0) / 3.0);
    // A state parameter or an unknown machine: a 404 naming what there is (SPEC §4).
    let a = app
        .get("/analytics?machine_id=press-01&parameter=status")
        .await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("it has: speed"),
        "{}",
        a.body
    );
    let a = app
        .get("/analytics?machine_id=nobody&parameter=speed")
        .await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("press-01"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn analytics_errors_name_the_field() {
    let app = TestApp::start().await;
    let bad = |a: crate::support::Answer, mentions: &str| {
        assert_eq!(a.status, 400, "{}", a.body);
        let msg = a.body["error"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(mentions),
            "{msg:?} should mention {mentions:?}"
        );
    };
    bad(app.get("/analytics").await, "parameter");
    bad(
        app.get("/analytics?parameter=x&threshold=-1").await,
        "threshold",
    );
    bad(
        app.get("/analytics?parameter=x&threshold=NaN").await,
        "threshold",
    );
    bad(app.get("/analytics?parameter=x&since=noon").await, "since");
    bad(
        app.get("/analytics?parameter=x&bucket=soon").await,
        "bucket",
    );
    bad(
        app.get("/analytics?parameter=x&baseline=median").await,
        "baseline",
    );
    bad(
        app.get("/analytics?parameter=x&machine_id=a%20b").await,
        "machine_id",
    );
    bad(
        app.post("/analytics", r#"{"timestamps": [1, 2], "values": [1]}"#)
            .await,
        "equal",
    );
    bad(
        app.post("/analytics", r#"{"timestamps": [1], "values": ["x"]}"#)
            .await,
        "values",
    );
    bad(
        app.post(
            "/analytics",
            r#"{"timestamps": [1], "values": [1], "threshold": -0.5}"#,
        )
        .await,
        "threshold",
    );
    bad(
        app.post("/analytics", r#"{"timestamps": ["noon"], "values": [1]}"#)
            .await,
        "timestamps",
    );
    bad(app.post("/analytics", r#"{"values": [1"#).await, "JSON");
    bad(app.post("/analytics", r#"{"x": 1}"#).await, "series");
}

#[test]
fn analyze_command_on_a_series_and_on_readings() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series.json");
    std::fs::write(&series, SEED_SERIES).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["analyze", series.to_str().unwrap()]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, seed_answer(0.2));

    let readings = dir.path().join("readings.ndjson");
    std::fs::write(
        &readings,
        "{\"timestamp\": \"2024-10-27T12:00:00\", \"speed\": 30, \"machine_id\": \"a\"}\n\
         {\"timestamp\": \"2024-10-27T12:00:10\", \"speed\": 32, \"machine_id\": \"a\"}\n\
         {\"timestamp\": \"2024-10-27T12:00:05\", \"speed\": 1000, \"machine_id\": \"b\"}\n\
         {\"timestamp\": \"2024-10-27T12:00:20\", \"speed\": 50, \"machine_id\": \"a\"}\n",
    )
    .unwrap();
    let out = run(&[
        "analyze",
        readings.to_str().unwrap(),
        "--parameter",
        "speed",
        "--machine",
        "a",
        "--threshold",
        "0.3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["count"], 3);
    assert_eq!(got["average"], 112.0 / 3.0);
    assert_eq!(got["threshold"], 0.3);
    assert_eq!(got["anomalies"][0]["value"], 50);
    // Readings without --parameter: every numeric parameter, by name.
    let out = run(&[
        "analyze",
        readings.to_str().unwrap(),
        "--machine",
        "a",
        "--threshold",
        "0.3",
    ]);
    assert!(out.status.success());
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["speed"], got);
    let out = run(&["analyze", series.to_str().unwrap(), "--threshold", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}
