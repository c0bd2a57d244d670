//! The HTTP API of SPEC §4 against the real router on a random port.

use serde_json::{Value, json};

use crate::support::TestApp;

fn assert_error(a: &crate::support::Answer, status: u16, mentions: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let msg = a.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {}", a.body));
    assert!(
        msg.contains(mentions),
        "{msg:?} should mention {mentions:?}"
    );
    assert!(
        a.content_type.starts_with("application/json"),
        "{}",
        a.content_type
    );
}

const SEED: &str = r#"[
 {"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"},
 {"timestamp": "2024-10-27T12:00:10", "temperature": 72, "speed": 32, "status": "RUNNING"},
 {"timestamp": "2024-10-27T12:00:20", "temperature": 75, "speed": 50, "status": "RUNNING"},
 {"timestamp": "2024-10-27T12:00:30", "temperature": 71, "speed": 31, "status": "RUNNING"},
 {"timestamp": "2024-10-27T12:00:40", "temperature": 74, "speed": 29, "status": "PAUSED"},
 {"timestamp": "2024-10-27T12:00:50", "temperature": 76, "speed": 30, "status": "RUNNING"},
 {"timestamp": "2024-10-27T12:01:00", "temperature": 78, "speed": 30, "status": "RUNNING"}
]"#;

#[tokio::test]
async fn ingest_then_data_equals_what_the_cli_prints() {
    let app = TestApp::start().await;
    let a = app.post("/ingest", SEED).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, json!({"accepted": 7, "duplicates": 0}));

    let data = app.get("/data").await;
    assert_eq!(data.status, 200);

    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, SEED.as_bytes()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["ingest", f.path().to_str().unwrap(), "--interval", "0"])
        .output()
        .unwrap();
    let cli: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(data.body, Value::Array(cli), "one pipeline, two doors");
}

#[tokio::test]
async fn ndjson_and_single_object_bodies() {
    let app = TestApp::start().await;
    let nd = "{\"machine_id\": \"a\", \"timestamp\": 1, \"x\": 1}\n{\"machine_id\": \"a\", \"timestamp\": 2, \"x\": 3}\n";
    let a = app.post_as("/ingest", nd, "application/x-ndjson").await;
    assert_eq!(a.body["accepted"], 2);
    let a = app
        .post("/ingest", r#"{"machine_id": "a", "timestamp": 3, "x": 5}"#)
        .await;
    assert_eq!(a.body["accepted"], 1);
    let latest = app.get("/data/latest").await;
    assert_eq!(latest.body[0]["x_avg"], 3);
}

#[tokio::test]
async fn ingest_is_all_or_nothing_and_names_the_bad_index() {
    let app = TestApp::start().await;
    let body = r#"[{"machine_id": "m", "x": 1}, {"machine_id": "m", "x": 2}, {"machine_id": "m", "x": [3]}]"#;
    let a = app.post("/ingest", body).await;
    assert_error(&a, 400, "reading 2");
    assert!(a.body["error"].as_str().unwrap().contains("\"x\""));
    assert_eq!(app.get("/data").await.body, json!([]));
    assert_eq!(app.get("/data/latest").await.body, json!([]));
}

#[tokio::test]
async fn a_retried_batch_changes_nothing() {
    let app = TestApp::start().await;
    let body = r#"[{"machine_id": "m", "timestamp": 1, "x": 1}, {"machine_id": "m", "timestamp": 2, "x": 2}]"#;
    assert_eq!(
        app.post("/ingest", body).await.body,
        json!({"accepted": 2, "duplicates": 0})
    );
    assert_eq!(
        app.post("/ingest", body).await.body,
        json!({"accepted": 2, "duplicates": 2})
    );
    let data = app.get("/data").await.body;
    assert_eq!(data.as_array().unwrap().len(), 2);
    let next = app
        .post("/ingest", r#"{"machine_id": "m", "timestamp": 3, "x": 6}"#)
        .await;
    assert_eq!(next.status, 200);
    assert_eq!(app.get("/data/latest").await.body[0]["x_avg"], 3);
}

#[tokio::test]
async fn data_filters_and_limits() {
    let app = TestApp::start().await;
    let mut body = Vec::new();
    for i in 0..30 {
        let m = if i % 3 == 0 { "a" } else { "b" };
        body.push(format!(
            r#"{{"machine_id": "{m}", "timestamp": "2026-01-01T00:00:{i:02}Z", "x": {i}}}"#
        ));
    }
    assert_eq!(
        app.post("/ingest", &format!("[{}]", body.join(",")))
            .await
            .status,
        200
    );
    let xs = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["x"].as_i64().unwrap())
            .collect()
    };

    assert_eq!(
        xs(&app.get("/data?machine_id=a").await.body),
        vec![0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    );
    // The newest `limit`, oldest first.
    assert_eq!(xs(&app.get("/data?limit=3").await.body), vec![27, 28, 29]);
    assert_eq!(xs(&app.get("/data?limit=0").await.body), Vec::<i64>::new());
    // Both bounds inclusive.
    let range = app
        .get("/data?since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:12Z")
        .await;
    assert_eq!(xs(&range.body), vec![10, 11, 12]);
    let offset = app
        .get("/data?machine_id=b&since=2026-01-01T01:00:10%2B01:00&limit=2")
        .await;
    assert_eq!(xs(&offset.body), vec![28, 29]);
    // Filters that match nothing are not errors.
    assert_eq!(app.get("/data?machine_id=nobody").await.body, json!([]));
    assert_eq!(
        app.get("/data?since=2030-01-01T00:00:00Z").await.body,
        json!([])
    );
    assert_eq!(
        app.get("/data?since=2026-01-01T00:00:20Z&until=2026-01-01T00:00:10Z")
            .await
            .body,
        json!([])
    );
    // Default limit 100.
    let mut many = Vec::new();
    for i in 0..150 {
        many.push(format!(
            r#"{{"machine_id": "c", "timestamp": {}, "x": {i}}}"#,
            2_000_000_000 + i
        ));
    }
    app.post("/ingest", &format!("[{}]", many.join(","))).await;
    let d = app.get("/data?machine_id=c").await.body;
    assert_eq!(d.as_array().unwrap().len(), 100);
    assert_eq!(d[0]["x"], 50);

    assert_error(&app.get("/data?limit=10001").await, 400, "limit");
    assert_error(&app.get("/data?limit=-1").await, 400, "limit");
    assert_error(&app.get("/data?since=yesterday").await, 400, "since");
    assert_error(
        &app.get("/data?until=2026-13-01T00:00:00Z").await,
        400,
        "until",
    );
    assert_error(
        &app.get("/data?machine_id=bad%20id").await,
        400,
        "machine_id",
    );
}

#[tokio::test]
async fn latest_is_one_record_per_machine_sorted() {
    let app = TestApp::start().await;
    app.post("/ingest", r#"[{"machine_id": "zeta", "x": 1}, {"machine_id": "alpha", "x": 2}, {"machine_id": "zeta", "x": 3}]"#).await;
    let l = app.get("/data/latest").await.body;
    assert_eq!(l.as_array().unwrap().len(), 2);
    assert_eq!(
        (l[0]["machine_id"].clone(), l[0]["x"].clone()),
        (json!("alpha"), json!(2))
    );
    assert_eq!(
        (l[1]["machine_id"].clone(), l[1]["x"].clone()),
        (json!("zeta"), json!(3))
    );
}

/// Every (from, to) pair of the six statuses, against SPEC §4's table written out again.
#[tokio::test]
async fn the_whole_transition_table() {
    const ALL: [&str; 6] = [
        "IDLE",
        "STARTED",
        "RUNNING",
        "PAUSED",
        "COMPLETED",
        "FAILED",
    ];
    let allowed = |from: &str, to: &str| -> bool {
        matches!(
            (from, to),
            ("IDLE", "STARTED" | "RUNNING")
                | (
                    "STARTED",
                    "RUNNING" | "PAUSED" | "COMPLETED" | "FAILED" | "IDLE"
                )
                | ("RUNNING", "PAUSED" | "COMPLETED" | "FAILED")
                | ("PAUSED", "RUNNING" | "COMPLETED" | "FAILED")
                | ("COMPLETED" | "FAILED", "IDLE" | "STARTED" | "RUNNING")
        )
    };
    // A path that reaches each status from IDLE.
    let path_to = |s: &str| -> Vec<&str> {
        match s {
            "IDLE" => vec![],
            "STARTED" => vec!["STARTED"],
            "RUNNING" => vec!["RUNNING"],
            "PAUSED" => vec!["RUNNING", "PAUSED"],
            "COMPLETED" => vec!["RUNNING", "COMPLETED"],
            _ => vec!["RUNNING", "FAILED"],
        }
    };
    let app = TestApp::start().await;
    for from in ALL {
        for to in ALL {
            let machine = format!("m-{from}-{to}");
            for step in path_to(from) {
                app.set_status(&machine, step, 200).await;
            }
            let now = app.get(&format!("/status/{machine}")).await.body;
            assert_eq!(now["status"], from);
            if from == to {
                let a = app.set_status(&machine, to, 200).await;
                assert_eq!(a.body["previous"], from);
                assert_eq!(a.body["since"], now["since"], "re-setting changes nothing");
            } else if allowed(from, to) {
                let a = app.set_status(&machine, to, 200).await;
                assert_eq!(
                    (a.body["status"].as_str(), a.body["previous"].as_str()),
                    (Some(to), Some(from))
                );
                assert!(a.body["since"].is_string());
            } else {
                let a = app.set_status(&machine, to, 409).await;
                let msg = a.body["error"].as_str().unwrap();
                for next in ALL.iter().filter(|n| allowed(from, n)) {
                    assert!(msg.contains(next), "{msg} should name {next}");
                }
                assert_eq!(
                    app.get(&format!("/status/{machine}")).await.body["status"],
                    from
                );
            }
        }
    }
}

#[tokio::test]
async fn status_routes() {
    let app = TestApp::start().await;
    let never = app.get("/status/press-09").await;
    assert_eq!(
        never.body,
        json!({"machine_id": "press-09", "status": "IDLE", "since": null, "allowed_next": ["STARTED", "RUNNING"]})
    );
    // No machine: the default machine.
    let a = app.post("/status", r#"{"status": "STARTED"}"#).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["machine_id"], "machine-1");
    assert_eq!(a.body["previous"], "IDLE");
    app.set_status("press-01", "RUNNING", 200).await;
    app.set_status("press-01", "PAUSED", 200).await;

    let all = app.get("/status").await.body;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["machine-1", "press-01"]);

    let h = app.get("/status/history").await.body;
    let changes: Vec<(String, String)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["machine_id"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("machine-1".into(), "STARTED".into()),
            ("press-01".into(), "RUNNING".into()),
            ("press-01".into(), "PAUSED".into())
        ]
    );
    let h = app
        .get("/status/history?machine_id=press-01&limit=1")
        .await
        .body;
    assert_eq!(h.as_array().unwrap().len(), 1);
    assert_eq!(h[0]["status"], "PAUSED");
    assert_eq!(h[0]["previous"], "RUNNING");
    assert_eq!(
        app.get("/status/history?machine_id=nobody").await.body,
        json!([])
    );

    assert_error(
        &app.post("/status", r#"{"status": "running"}"#).await,
        400,
        "IDLE, STARTED, RUNNING, PAUSED, COMPLETED, FAILED",
    );
    assert_error(
        &app.post("/status", r#"{"status": 3}"#).await,
        400,
        "status",
    );
    assert_error(
        &app.post("/status", r#"{"machine_id": "m"}"#).await,
        400,
        "status",
    );
    assert_error(
        &app.post("/status", r#"{"status": "IDLE", "machine_id": "a b"}"#)
            .await,
        400,
        "machine_id",
    );
    assert_error(
        &app.post("/status", r#"{"status": "IDLE""#).await,
        400,
        "body",
    );
    assert_error(&app.get("/status/bad%20id").await, 400, "machine_id");
    assert_error(&app.get("/status/history?limit=x").await, 400, "limit");
}

#[tokio::test]
async fn error_codes() {
    let app = TestApp::with(
        std::sync::Arc::new(millwatch::store::memory::MemoryStore::new()),
        |s| s.max_body = 1024,
    )
    .await;
    assert_error(&app.post("/ingest", "{\"x\": ").await, 400, "JSON");
    assert_error(&app.post("/ingest", "").await, 400, "empty");
    assert_error(&app.post("/ingest", r#"{"x": true}"#).await, 400, "\"x\"");
    assert_error(
        &app.post(
            "/ingest",
            &format!("[{}]", vec![r#"{"x": 1}"#; 200].join(",")),
        )
        .await,
        413,
        "1024",
    );
    assert_error(
        &app.post_as("/ingest", "x=1", "application/x-www-form-urlencoded")
            .await,
        415,
        "content type",
    );
    assert_error(
        &app.post_as("/status", "<a/>", "application/xml").await,
        415,
        "content type",
    );
    // A content type of non-ASCII bytes names nothing we take: 415, never read as "absent".
    let resp = app
        .client
        .post(format!("{}/ingest", app.base))
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"application/j\xc3\xa9son").unwrap(),
        )
        .body(r#"{"machine_id": "ct-1", "x": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(resp.text().await.unwrap().contains("not ASCII"));
    assert_eq!(app.get("/data?machine_id=ct-1").await.body, json!([]));
    assert_error(&app.get("/nope").await, 404, "/nope");
    assert_error(&app.get("/data/latest/extra").await, 404, "no route");
    assert_error(
        &app.request(reqwest::Method::DELETE, "/data").await,
        405,
        "DELETE",
    );
    assert_error(
        &app.request(reqwest::Method::GET, "/ingest").await,
        405,
        "GET",
    );
    assert_error(
        &app.request(reqwest::Method::PUT, "/status").await,
        405,
        "PUT",
    );
}

#[tokio::test]
async fn meta_routes() {
    let app = TestApp::start().await;
    assert_eq!(app.get("/healthz").await.body, json!({"status": "ok"}));
    app.post(
        "/ingest",
        r#"{"machine_id": "press-01", "temperature": 70.5}"#,
    )
    .await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, 200);
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains(
            r#"millwatch_moving_average{machine_id="press-01",parameter="temperature"} 70.5"#
        ),
        "{text}"
    );
    assert!(text.contains("millwatch_http_requests_total"), "{text}");
    assert!(
        text.contains("millwatch_http_request_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains(r#"millwatch_readings_total{source="http",outcome="accepted"}"#),
        "{text}"
    );

    let doc = app.get("/openapi.json").await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/data",
        "/data/latest",
        "/ingest",
        "/status",
        "/status/{machine_id}",
        "/status/history",
        "/events",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        doc["paths"]["/status"]["post"]["responses"]
            .get("409")
            .is_some()
    );
    let page = app.get("/").await;
    assert!(page.content_type.starts_with("text/html"));
}

#[tokio::test]
async fn events_stream_readings_and_status_changes() {
    let app = TestApp::start().await;
    let mut resp = app
        .client
        .get(format!("{}/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    app.post(
        "/ingest",
        r#"{"machine_id": "press-01", "temperature": 70}"#,
    )
    .await;
    app.set_status("press-01", "RUNNING", 200).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(seen.contains("event: reading") && seen.contains("event: status")) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(r#""temperature_avg":70"#), "{seen}");
    assert!(seen.contains(r#""status":"RUNNING""#), "{seen}");
}

/// A client sees the stream open before any event: on a quiet plant (or a paused one) an
/// `EventSource` would otherwise wait for the first reading to learn it is connected.
#[tokio::test]
async fn events_stream_opens_before_the_first_event() {
    let app = TestApp::start().await;
    let mut resp = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.client.get(format!("{}/events", app.base)).send(),
    )
    .await
    .expect("the response head arrives without any event")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(std::time::Duration::from_secs(2), resp.chunk())
        .await
        .expect("an opening comment arrives")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b":"), "{first:?}");
}

#[tokio::test]
async fn influx_line_protocol_write_endpoints() {
    let app = TestApp::start().await;
    let body = "# from telegraf\nmodbus,host=gw-1,machine_id=press-01 temperature=70,speed=1480i,door_open=false 1700000000\nmodbus,host=gw-1 temperature=72 1700000001\n";
    let a = app
        .post_as(
            "/write?db=plant&precision=s",
            body,
            "text/plain; charset=utf-8",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let latest = app.get("/data/latest").await.body;
    let press = latest
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["machine_id"] == "press-01")
        .unwrap()
        .clone();
    assert_eq!(press["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(press["measurement"], "modbus");
    assert_eq!(press["door_open"], "false");
    assert_eq!(press["speed_avg"], 1480);
    // No machine_id tag: the host tag names the machine.
    assert!(
        latest
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["machine_id"] == "gw-1")
    );

    let a = app
        .post_as(
            "/api/v2/write?bucket=b&precision=ms",
            "m,machine_id=press-01 temperature=74 1700000002000",
            "text/plain",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let d = app.get("/data?machine_id=press-01").await.body;
    assert_eq!(d[1]["temperature_avg"], 72);

    // gzip, as Telegraf sends by default.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"m,machine_id=press-01 temperature=76 1700000003").unwrap();
    let resp = app
        .client
        .post(format!("{}/write?db=x&precision=s", app.base))
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.get("/data/latest").await.body.as_array().unwrap().len(),
        2
    );

    // All or nothing, naming the point, line and column.
    let a = app
        .post_as("/write?db=x", "m x=1 1\nm x=oops 2\n", "text/plain")
        .await;
    assert_error(&a, 400, "line 2 column 5");
    assert_eq!(app.get("/data?machine_id=machine-1").await.body, json!([]));
    assert_error(
        &app.post_as("/write", "m x=1", "text/plain").await,
        400,
        "db",
    );
    assert_error(
        &app.post_as("/api/v2/write?bucket=b&precision=d", "m x=1", "text/plain")
            .await,
        400,
        "precision",
    );
}

/// SPEC §4: a query parameter the route does not know is a 400 naming it and the ones the route
/// takes, on every route; the parameters a route documents pass.
#[tokio::test]
async fn unknown_query_parameters_are_refused_on_every_route() {
    let app = TestApp::start().await;
    app.post_as("/ingest", SEED, "application/json").await;
    // (a GET with a misspelt or foreign parameter, what the message must list)
    let refused: &[(&str, &str)] = &[
        ("/data?machine=machine-1", "machine_id, since, until, limit"),
        (
            "/data?machine_id=machine-1&limt=1",
            "machine_id, since, until, limit",
        ),
        ("/data/latest?machine_id=machine-1", "it takes none"),
        ("/status?machine_id=machine-1", "it takes none"),
        ("/status/history?machine=machine-1", "machine_id, limit"),
        ("/status/machine-1?verbose=1", "it takes none"),
        ("/analytics?machine_id=machine-1&param=speed", "parameter"),
        ("/states?machine_id=machine-1&by=day", "timeline"),
        ("/oee?machine_id=machine-1&timeline=true", "by"),
        ("/healthz?full=1", "it takes none"),
        ("/metrics?name=x", "it takes none"),
        ("/openapi.json?v=3", "it takes none"),
        ("/events?machine_id=machine-1", "it takes none"),
    ];
    for (path, takes) in refused {
        let a = app.get(path).await;
        let key = path
            .rsplit(['?', '&'])
            .next()
            .and_then(|kv| kv.split('=').next())
            .unwrap();
        assert_error(&a, 400, &format!("unknown query parameter \"{key}\""));
        assert_error(&a, 400, takes);
    }
    let accepted = [
        "/data?machine_id=machine-1&since=2024-10-27T12:00:00Z&until=2024-10-27T13:00:00Z&limit=2",
        "/status/history?machine_id=machine-1&limit=5",
        "/analytics?machine_id=machine-1&parameter=speed&threshold=10&baseline=moving&bucket=1m",
        "/states?machine_id=machine-1&since=2024-10-27T12:00:00Z&until=2024-10-27T13:00:00Z&timeline=true",
        "/oee?machine_id=machine-1&since=2024-10-27T00:00:00Z&until=2024-10-28T00:00:00Z&by=day",
    ];
    for path in accepted {
        let a = app.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    // POST routes: the same rule; InfluxDB clients' own parameters (`rp`, `consistency`, `org`)
    // pass, so Telegraf works unchanged.
    let a = app
        .post_as("/ingest?machine_id=m", SEED, "application/json")
        .await;
    assert_error(&a, 400, "unknown query parameter \"machine_id\" on /ingest");
    let a = app
        .post_as("/write?database=x", "m,machine_id=lp t=1 1", "text/plain")
        .await;
    assert_error(&a, 400, "db, rp, precision, consistency");
    let a = app
        .post_as(
            "/write?db=x&rp=autogen&consistency=any&precision=s",
            "m,machine_id=lp t=1 1700000000",
            "text/plain",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let a = app
        .post_as(
            "/api/v2/write?org=plant&bucket=b&precision=s",
            "m,machine_id=lp t=2 1700000001",
            "text/plain",
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
}
