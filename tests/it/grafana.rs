//! Every SQL query of the Grafana dashboard in docs/grafana/ run against the real PostgreSQL,
//! with Grafana's macros and variables expanded as its PostgreSQL data source does, answers
//! what the API answers.

use std::sync::Arc;

use millwatch::store::Store;
use millwatch::store::postgres::PostgresStore;
use millwatch::timestamp::Timestamp;
use serde_json::Value;

use crate::support::TestApp;

const DASHBOARD: &str = include_str!("../../docs/grafana/millwatch-dashboard.json");

/// A query with `$__timeFilter(col)`, `$__timeFrom()`, `$__timeTo()` and `$name` variables
/// replaced as Grafana's PostgreSQL data source replaces them (`col BETWEEN 'from' AND 'to'`,
/// RFC 3339 UTC times), and the schema `millwatch.` left to the search path of the test.
pub fn expand(sql: &str, from: Timestamp, to: Timestamp, vars: &[(&str, &str)]) -> String {
    let (from, to) = (from.to_string(), to.to_string());
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let close = after.find(')').expect("a closing parenthesis");
        out.push_str(&format!(
            "{} BETWEEN '{from}' AND '{to}'",
            after[..close].trim()
        ));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let mut out = out
        .replace("$__timeFrom()", &format!("'{from}'"))
        .replace("$__timeTo()", &format!("'{to}'"))
        .replace("millwatch.", "");
    for (name, value) in vars {
        out = out.replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unexpanded: {out}");
    out
}

/// Every rawSql of the dashboard, by where it stands: panel title or variable name.
fn queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        out.push((
            v["name"].as_str().unwrap().to_owned(),
            v["query"].as_str().unwrap().to_owned(),
        ));
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["rawSql"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

fn query_of(name_has: &str) -> String {
    queries()
        .into_iter()
        .find(|(n, _)| n.contains(name_has))
        .unwrap_or_else(|| panic!("no query named {name_has}"))
        .1
}

fn micros_of(v: &str) -> i64 {
    Timestamp::parse(v).unwrap().as_nanos() / 1000
}

async fn run(db: &tokio_postgres::Client, sql: &str) -> Vec<tokio_postgres::Row> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn every_dashboard_query_answers_what_the_api_does() {
    let Some(url) = crate::pg::fresh_schema("grafana").await else {
        return;
    };
    assert_eq!(
        queries().len(),
        4,
        "each query of the dashboard is checked below"
    );
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    let t0 = 1_795_000_000i64; // 2026-11-18
    let body: String = (0..720)
        .map(|i| {
            format!(
                "{{\"machine_id\": \"press-01\", \"timestamp\": {}, \"temperature\": {}, \"speed\": {}, \"status\": \"RUN\"}}\n\
                 {{\"machine_id\": \"lathe.2\", \"timestamp\": {}, \"load\": {}}}\n",
                t0 + i * 10,
                60.0 + (i % 17) as f64 * 0.5,
                1000 + i % 5,
                t0 + i * 10 + 5,
                i % 3
            )
        })
        .collect();
    let a = app.post_as("/ingest", &body, "application/x-ndjson").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let from = Timestamp::from_nanos((t0 + 1800) * 1_000_000_000);
    let to = Timestamp::from_nanos((t0 + 5400) * 1_000_000_000);

    // Variables: the machines of the range, then the numeric parameters of one.
    let machines: Vec<String> = run(&client, &expand(&query_of("machine"), from, to, &[]))
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(machines, vec!["lathe.2", "press-01"]);
    let params: Vec<String> = run(
        &client,
        &expand(&query_of("parameter"), from, to, &[("machine", "press-01")]),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(params, vec!["speed", "temperature"]);

    // The parameter and its moving average: the records of /data in the same range.
    let vars = [("machine", "press-01"), ("parameter", "temperature")];
    let rows = run(
        &client,
        &expand(&query_of("moving average"), from, to, &vars),
    )
    .await;
    let got: Vec<(i64, f64, f64)> = rows
        .iter()
        .map(|r| {
            let t: std::time::SystemTime = r.get(0);
            let us = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
            (us, r.get(1), r.get(2))
        })
        .collect();
    let data = app
        .get(&format!(
            "/data?machine_id=press-01&since={from}&until={to}&limit=10000"
        ))
        .await
        .body;
    let want: Vec<(i64, f64, f64)> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                micros_of(r["timestamp"].as_str().unwrap()),
                r["temperature"].as_f64().unwrap(),
                r["temperature_avg"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(want.len(), 361);
    assert_eq!(got, want);

    // The job-status timeline: the status holding at the range's start, then each change.
    app.set_status("press-01", "STARTED", 200).await;
    app.set_status("press-01", "RUNNING", 200).await;
    app.set_status("press-01", "PAUSED", 200).await;
    let history = app.get("/status/history?machine_id=press-01").await.body;
    let changes: Vec<(i64, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                micros_of(c["since"].as_str().unwrap()),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 3);
    let timeline = |from: Timestamp, to: Timestamp| {
        let sql = expand(
            &query_of("job status"),
            from,
            to,
            &[("machine", "press-01")],
        );
        let client = &client;
        async move {
            run(client, &sql)
                .await
                .iter()
                .map(|r| {
                    let t: std::time::SystemTime = r.get(0);
                    let us = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
                    (us, r.get::<_, String>(1))
                })
                .collect::<Vec<_>>()
        }
    };
    let end = Timestamp::from_nanos((changes[2].0 + 60_000_000) * 1000);
    let before = Timestamp::from_nanos((changes[0].0 - 60_000_000) * 1000);
    assert_eq!(timeline(before, end).await, changes);
    // From just after the second change: RUNNING holds at the start, then PAUSED.
    let mid = Timestamp::from_nanos((changes[1].0 + 1) * 1000);
    if mid.as_nanos() / 1000 < changes[2].0 {
        assert_eq!(
            timeline(mid, end).await,
            vec![(changes[1].0 + 1, "RUNNING".to_owned()), changes[2].clone()]
        );
    }
    store.close().await.unwrap();
}

/// For Grafana over Prometheus: `/metrics` has each machine's latest raw values and its job
/// status as gauges, following the latest reading and each change.
#[tokio::test]
async fn metrics_show_latest_values_and_job_status_as_gauges() {
    let app = TestApp::start().await;
    let body = r#"{"machine_id": "press-01", "timestamp": 1795000000, "temperature": 70, "speed": 3}
{"machine_id": "press-01", "timestamp": 1795000001, "temperature": 71.5}
{"machine_id": "lathe.2", "timestamp": 1795000000, "load": -2.25}"#;
    let a = app.post_as("/ingest", body, "application/x-ndjson").await;
    assert_eq!(a.status, 200, "{}", a.body);
    app.set_status("press-01", "RUNNING", 200).await;
    let text = app.get("/metrics").await.body.as_str().unwrap().to_owned();
    for line in [
        r#"millwatch_value{machine_id="press-01",parameter="temperature"} 71.5"#,
        r#"millwatch_value{machine_id="lathe.2",parameter="load"} -2.25"#,
        r#"millwatch_job_status{machine_id="press-01",status="RUNNING"} 1"#,
        r#"millwatch_job_status{machine_id="press-01",status="IDLE"} 0"#,
        r#"millwatch_job_status{machine_id="lathe.2",status="IDLE"} 1"#,
        r#"millwatch_job_status{machine_id="lathe.2",status="RUNNING"} 0"#,
        "# TYPE millwatch_value gauge",
        "# TYPE millwatch_job_status gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    // The latest reading lacks speed: its gauge shows the latest reading's parameters only.
    assert!(
        !text.contains(r#"millwatch_value{machine_id="press-01",parameter="speed"}"#),
        "{text}"
    );
}
