//! PostgreSQL as a public interface (SPEC §10): `readings`, `samples` and `status_history`
//! read with plain SQL equal what the API answers; the samples of one machine, one parameter
//! and a time range are read through the index of one partition; a 0.1 database is migrated.

use std::sync::Arc;

use millwatch::store::Store;
use millwatch::store::postgres::PostgresStore;
use serde_json::Value;

use crate::support::TestApp;

/// A plain SQL client on the same schema as the store (or none to skip).
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// A time as the API writes it, from microseconds since the epoch (PostgreSQL's resolution).
fn micros(us: i64) -> String {
    millwatch::timestamp::Timestamp::from_nanos(us * 1000).to_string()
}

/// The relations read with SQL, as the API's JSON: readings as records without averages,
/// samples of one machine's parameter as (time, value, average), the status history.
pub async fn readings_json(db: &tokio_postgres::Client, schema: &str) -> Vec<Value> {
    let rows = db
        .query(
            &format!(
                "SELECT machine_id, (extract(epoch FROM ts) * 1000000)::bigint, fields::text
                 FROM {schema}readings ORDER BY ts, seq"
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let mut obj: serde_json::Map<String, Value> =
                serde_json::from_str(r.get::<_, &str>(2)).unwrap();
            obj.insert("machine_id".into(), Value::String(r.get::<_, String>(0)));
            obj.insert("timestamp".into(), Value::String(micros(r.get(1))));
            Value::Object(obj)
        })
        .collect()
}

/// The API's records with their averages left out: what `readings` holds of each.
fn without_averages(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut o = r.as_object().unwrap().clone();
            o.retain(|k, _| !k.ends_with("_avg"));
            Value::Object(o)
        })
        .collect()
}

async fn samples(
    db: &tokio_postgres::Client,
    machine: &str,
    parameter: &str,
) -> Vec<(String, f64, f64)> {
    db.query(
        "SELECT (extract(epoch FROM ts) * 1000000)::bigint, value, moving_average FROM samples
         WHERE machine_id = $1 AND parameter = $2 ORDER BY ts",
        &[&machine, &parameter],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (micros(r.get(0)), r.get(1), r.get(2)))
    .collect()
}

/// What `samples` should hold for a machine's parameter, from the API's records.
fn samples_of(records: &[Value], machine: &str, parameter: &str) -> Vec<(String, f64, f64)> {
    records
        .iter()
        .filter(|r| r["machine_id"] == machine && r[parameter].is_number())
        .map(|r| {
            (
                r["timestamp"].as_str().unwrap().to_owned(),
                r[parameter].as_f64().unwrap(),
                r[format!("{parameter}_avg")].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn status_json(db: &tokio_postgres::Client) -> Vec<(String, String, String, String)> {
    db.query(
        "SELECT machine_id, status, previous, (extract(epoch FROM since) * 1000000)::bigint
         FROM status_history ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), micros(r.get(3))))
    .collect()
}

fn api_status(h: &Value) -> Vec<(String, String, String, String)> {
    h.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            // The API gives nanoseconds; the relation microseconds.
            let since = millwatch::timestamp::Timestamp::parse(&s("since")).unwrap();
            (
                s("machine_id"),
                s("status"),
                s("previous"),
                micros(since.as_nanos() / 1000),
            )
        })
        .collect()
}

/// The plan PostgreSQL makes for a query, as text.
async fn explain(db: &tokio_postgres::Client, query: &str) -> String {
    db.query(&format!("EXPLAIN {query}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fills a store through the API: readings of two machines, status changes.
async fn fill(app: &TestApp) -> Vec<Value> {
    let a = app.post("/ingest", crate::export::READINGS).await;
    assert_eq!(a.status, 200, "{}", a.body);
    app.set_status("press-01", "STARTED", 200).await;
    app.set_status("press-01", "RUNNING", 200).await;
    app.set_status("lathe.2", "RUNNING", 200).await;
    app.get("/data?limit=10000")
        .await
        .body
        .as_array()
        .unwrap()
        .clone()
}

async fn check_relations(db: &tokio_postgres::Client, app: &TestApp, records: &[Value]) {
    assert_eq!(readings_json(db, "").await, without_averages(records));
    for (m, p) in [
        ("press-01", "temperature"),
        ("press-01", "speed"),
        ("lathe.2", "temperature"),
    ] {
        let want = samples_of(records, m, p);
        assert!(!want.is_empty());
        assert_eq!(samples(db, m, p).await, want, "{m} {p}");
    }
    // State parameters are in readings only.
    let states: i64 = db
        .query_one(
            "SELECT count(*) FROM samples WHERE parameter IN ('status', 'note')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(states, 0);
    let history = app.get("/status/history").await.body;
    let want = api_status(&history);
    assert_eq!(want.len(), 3);
    assert_eq!(status_json(db).await, want);
}

#[tokio::test]
async fn the_relations_equal_the_api_and_a_range_reads_one_partition_by_its_index() {
    let Some(url) = crate::pg::fresh_schema("public_sql").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    let records = fill(&app).await;
    let db = sql(&url).await;
    check_relations(&db, &app, &records).await;

    // Readings of another month go to a partition of their own.
    let a = app
        .post(
            "/ingest",
            r#"{"machine_id": "press-01", "timestamp": "2026-12-01T00:00:00Z", "temperature": 70}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let plan = explain(
        &db,
        "SELECT ts, value, moving_average FROM samples
             WHERE machine_id = 'press-01' AND parameter = 'temperature'
               AND ts BETWEEN '2026-11-28T00:00:00Z' AND '2026-11-28T23:59:59Z'",
    )
    .await;
    let text = plan.clone();
    assert!(text.contains("samples_y2026m11"), "{text}");
    assert!(!text.contains("samples_y2026m12"), "pruned: {text}");
    // Too few rows for the planner to prefer the index on its own; with sequential scans
    // off it must have one to use.
    db.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan = explain(
        &db,
        "SELECT ts, value FROM samples
             WHERE machine_id = 'press-01' AND parameter = 'temperature'
               AND ts BETWEEN '2026-11-28T00:00:00Z' AND '2026-11-28T23:59:59Z'",
    )
    .await;
    assert!(plan.contains("Index"), "{plan}");

    // Retention drops whole partitions before the cutoff; the later month stays.
    let cutoff = millwatch::timestamp::Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
    while store.retain(cutoff).await.unwrap() > 0 {}
    let left: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["readings_y2026m12", "samples_y2026m12"]);
    store.close().await.unwrap();
}

/// Turns a schema of this version back into the 0.1 layout (version 2): no alert tables, no
/// public relations, the status log under its old name.
async fn back_to_0_1(db: &tokio_postgres::Client, schema: &str) {
    db.batch_execute(&format!(
        "SET search_path = {schema};
         DROP VIEW status_history;
         DROP TABLE readings, samples;
         DROP TABLE alert_rules, alert_states, alert_history, alert_outbox;
         ALTER TABLE status_log RENAME TO status_history;
         UPDATE millwatch_schema SET version = 2;"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_0_1_database_is_migrated_and_its_relations_filled() {
    let Some(url) = crate::pg::fresh_schema("migrate01").await else {
        return;
    };
    let schema = url
        .split("search_path%3D")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    let records = fill(&app).await;
    drop(app);
    store.close().await.unwrap();
    let db = sql(&url).await;
    back_to_0_1(&db, &schema).await;
    let gone: Option<String> = db
        .query_one("SELECT to_regclass('readings')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, None);

    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    check_relations(&db, &app, &records).await;
    store.close().await.unwrap();
}

/// A database whose URL names no schema keeps everything in `millwatch`; a 0.1 database's
/// tables in `public` are moved there. In a database of its own, since `millwatch` is one name.
#[tokio::test]
async fn without_a_search_path_everything_is_in_the_schema_millwatch() {
    let Some(_) = crate::pg::fresh_schema("probe").await else {
        return;
    };
    let base = crate::pg::base_url();
    let admin = sql(&base).await;
    let name = format!("mw_own_{}", fastrand::u64(..));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    // A 0.1 database: its tables in public.
    let in_public = format!("{url}?options=-csearch_path%3Dpublic");
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&in_public).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    let records = fill(&app).await;
    drop(app);
    store.close().await.unwrap();
    let db = sql(&url).await;
    back_to_0_1(&db, "public").await;

    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    let app = TestApp::with(store.clone(), |_| {}).await;
    assert_eq!(
        app.get("/data?limit=10000").await.body.as_array().unwrap(),
        &records
    );
    db.batch_execute("SET search_path = nowhere").await.unwrap();
    assert_eq!(
        readings_json(&db, "millwatch.").await,
        without_averages(&records)
    );
    let in_public: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0);
    store.close().await.unwrap();
    drop(app);
    drop(db);
    crate::pg::terminate_database(&name).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
}
