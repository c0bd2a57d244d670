//! Data out (SPEC §10): CSV answers of `GET /data` and `millwatch export`, each read back and
//! compared with the JSON answer record for record.

use serde_json::{Map, Value};

use crate::support::TestApp;

/// Readings of two machines with every kind of cell: integers, fractions, huge and negative
/// numbers, a parameter only some rows have, states that need quoting, fractional times.
pub const READINGS: &str = r#"[
 {"machine_id": "press-01", "timestamp": "2026-11-28T05:30:00Z", "temperature": 71.5, "speed": 1480, "status": "RUNNING"},
 {"machine_id": "lathe.2", "timestamp": "2026-11-28T05:30:00.250Z", "temperature": -3, "note": "said \"hi\", then\nleft"},
 {"machine_id": "press-01", "timestamp": "2026-11-28T06:30:00+01:00", "temperature": 1e300, "status": "PAUSED, waiting"},
 {"machine_id": "press-01", "timestamp": "2026-11-28T05:30:02.000001Z", "speed": 0.1, "vibration": 12345678.125},
 {"machine_id": "lathe.2", "timestamp": "2026-11-28T05:30:03Z", "temperature": 2.5e-7, "speed": 9007199254740993}
]"#;

/// A CSV text read back with the csv crate as JSON objects: a cell that JSON reads as a number
/// is one, another non-empty cell a string, an empty cell absent.
pub fn csv_as_json(text: &[u8]) -> (Vec<String>, Vec<Value>) {
    let mut reader = csv::Reader::from_reader(text);
    let header: Vec<String> = reader
        .headers()
        .expect("a header row")
        .iter()
        .map(str::to_owned)
        .collect();
    let mut rows = Vec::new();
    for row in reader.records() {
        let row = row.expect("a well-formed row");
        assert_eq!(row.len(), header.len(), "{row:?}");
        let mut obj = Map::new();
        for (name, cell) in header.iter().zip(row.iter()) {
            if cell.is_empty() {
                continue;
            }
            let value = match serde_json::from_str::<Value>(cell) {
                Ok(n @ Value::Number(_)) => n,
                _ => Value::String(cell.to_owned()),
            };
            obj.insert(name.clone(), value);
        }
        rows.push(Value::Object(obj));
    }
    (header, rows)
}

/// The header SPEC §10 asks of these records: machine_id, timestamp, every parameter in name
/// order, then the `_avg` of each numeric one.
pub fn expected_header(records: &[Value]) -> Vec<String> {
    let mut params = std::collections::BTreeMap::new();
    for r in records {
        for (k, v) in r.as_object().unwrap() {
            if k == "machine_id" || k == "timestamp" || k.ends_with("_avg") {
                continue;
            }
            let numeric = params.entry(k.clone()).or_insert(false);
            *numeric |= v.is_number();
        }
    }
    let mut h = vec!["machine_id".to_owned(), "timestamp".to_owned()];
    h.extend(params.keys().cloned());
    h.extend(
        params
            .iter()
            .filter(|(_, n)| **n)
            .map(|(k, _)| format!("{k}_avg")),
    );
    h
}

async fn get_raw(app: &TestApp, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = app.client.get(format!("{}{path}", app.base));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn csv_from_data_equals_the_json_record_for_record() {
    let app = TestApp::start().await;
    let a = app.post("/ingest", READINGS).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let json = app.get("/data").await;
    let records = json.body.as_array().unwrap().clone();
    assert_eq!(records.len(), 5);

    for (path, accept) in [
        ("/data?format=csv", None),
        ("/data", Some("text/csv")),
        ("/data", Some("application/json;q=0.5, text/csv")),
        ("/data?format=csv", Some("application/json")),
    ] {
        let (status, ct, body) = get_raw(&app, path, accept).await;
        assert_eq!(status, 200, "{path} {accept:?}");
        assert!(ct.starts_with("text/csv"), "{path} {accept:?}: {ct}");
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("\"said \"\"hi\"\", then\nleft\""), "{text}");
        let (header, rows) = csv_as_json(&body);
        assert_eq!(header, expected_header(&records));
        assert_eq!(rows, records, "{path} {accept:?}: {text}");
    }

    // Filters apply as to JSON.
    let json = app.get("/data?machine_id=lathe.2&limit=1").await;
    let (_, _, body) = get_raw(&app, "/data?machine_id=lathe.2&limit=1&format=csv", None).await;
    assert_eq!(csv_as_json(&body).1, *json.body.as_array().unwrap());

    // JSON stays the answer for JSON, for no Accept and for types neither of the two.
    for accept in [
        None,
        Some("application/json"),
        Some("text/csv;q=0.1, application/json"),
        Some("text/csv;q=0"),
        Some("text/html"),
    ] {
        let (status, ct, body) = get_raw(&app, "/data", accept).await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("application/json"), "{accept:?}: {ct}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 5);
    }

    // Nothing matches: a header alone.
    let (_, _, body) = get_raw(&app, "/data?machine_id=none&format=csv", None).await;
    assert_eq!(String::from_utf8(body).unwrap(), "machine_id,timestamp\r\n");

    let bad = app.get("/data?format=xml").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"].as_str().unwrap().contains("format"));
}

#[tokio::test]
async fn a_large_csv_answer_streams_in_pieces_equal_to_the_json() {
    let app = TestApp::start().await;
    let body: String = (0..10_000)
        .map(|i| {
            format!(
                "{{\"machine_id\": \"m{}\", \"timestamp\": {}, \"t\": {}.25, \"state\": \"S{}\"}}\n",
                i % 7,
                1_700_000_000 + i,
                i,
                i % 3
            )
        })
        .collect();
    let a = app.post_as("/ingest", &body, "application/x-ndjson").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let json = app.get("/data?limit=10000").await;
    let mut resp = app
        .client
        .get(format!("{}/data?limit=10000&format=csv", app.base))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not sized up front"
    );
    let mut text = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = resp.chunk().await.unwrap() {
        pieces += 1;
        text.extend_from_slice(&piece);
    }
    assert!(pieces > 1, "one piece of {} bytes", text.len());
    assert_eq!(csv_as_json(&text).1, *json.body.as_array().unwrap());
}

fn millwatch(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(args)
        .env("MILLWATCH_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "millwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every number as a double, so that `1480` from JSON and `1480.0` from Parquet compare equal.
fn doubles(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap())
            .map(Value::Number)
            .unwrap(),
        Value::Array(a) => Value::Array(a.iter().map(doubles).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), doubles(v))).collect()),
        other => other.clone(),
    }
}

/// A Parquet file read back with the parquet crate's Arrow reader, one JSON object per row
/// (nulls left out), with the column names and types.
pub fn parquet_as_json(path: &std::path::Path) -> (Vec<(String, String)>, Vec<Value>) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampNanosecondType;
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut schema = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        schema = batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        for i in 0..batch.num_rows() {
            let mut obj = Map::new();
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                if col.is_null(i) {
                    continue;
                }
                let v = match field.data_type() {
                    DataType::Utf8 => Value::String(col.as_string::<i32>().value(i).to_owned()),
                    DataType::Float64 => serde_json::json!(
                        col.as_primitive::<arrow_array::types::Float64Type>()
                            .value(i)
                    ),
                    DataType::Timestamp(_, _) => {
                        let ns = col.as_primitive::<TimestampNanosecondType>().value(i);
                        Value::String(millwatch::timestamp::Timestamp::from_nanos(ns).to_string())
                    }
                    other => panic!("unexpected column type {other}"),
                };
                obj.insert(field.name().clone(), v);
            }
            rows.push(Value::Object(obj));
        }
    }
    (schema, rows)
}

/// `millwatch export` from SQLite and PostgreSQL: CSV, NDJSON and Parquet each equal to the
/// `/data` JSON record for record, in its order, also for one machine and a time range.
#[tokio::test]
async fn export_from_each_store_equals_the_data_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("readings.json");
    std::fs::write(&input, READINGS).unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("m.db").display());
    let mut stores = vec![sqlite.clone()];
    if let Some(url) = crate::pg::fresh_schema("export").await {
        stores.push(url);
    }
    for store in &stores {
        millwatch(&[
            "ingest",
            input.to_str().unwrap(),
            "--interval",
            "0",
            "--store",
            store,
        ]);
        let spec = millwatch::store::StoreSpec::parse(store).unwrap();
        for (query, flags) in [
            ("", vec![]),
            ("?machine_id=press-01", vec!["--machine", "press-01"]),
            (
                "?since=2026-11-28T05:30:00.250Z&until=2026-11-28T05:30:02.000001Z",
                vec![
                    "--since",
                    "2026-11-28T05:30:00.250Z",
                    "--until",
                    "2026-11-28T05:30:02.000001Z",
                ],
            ),
        ] {
            let mut got = std::collections::HashMap::new();
            for format in ["csv", "ndjson", "parquet"] {
                let out = dir.path().join(format!("out.{format}"));
                let mut args = vec!["export", "--store", store, "--out", out.to_str().unwrap()];
                args.extend(&flags);
                millwatch(&args);
                assert!(!dir.path().join(format!("out.{format}.partial")).exists());
                got.insert(format, out);
            }
            // Read after the exports: one process at a time opens a SQLite file.
            let opened = spec
                .open(millwatch::store::sqlite::Durability::Full)
                .await
                .unwrap();
            let app = TestApp::with(opened.clone(), |_| {}).await;
            let json = app
                .get(&format!(
                    "/data{query}{}limit=10000",
                    if query.is_empty() { "?" } else { "&" }
                ))
                .await;
            drop(app);
            opened.close().await.unwrap();
            let records = json.body.as_array().unwrap().clone();
            assert!(!records.is_empty(), "{store} {query}");

            let csv = std::fs::read(&got["csv"]).unwrap();
            let (header, rows) = csv_as_json(&csv);
            assert_eq!(header, expected_header(&records), "{store} {query}");
            assert_eq!(rows, records, "{store} {query}: csv");

            let ndjson = std::fs::read_to_string(&got["ndjson"]).unwrap();
            let rows: Vec<Value> = ndjson
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(rows, records, "{store} {query}: ndjson");

            let (schema, rows) = parquet_as_json(&got["parquet"]);
            assert_eq!(
                doubles(&Value::Array(rows)),
                doubles(&json.body),
                "{store} {query}: parquet"
            );
            assert_eq!(schema[0], ("machine_id".into(), "Utf8".into()));
            assert_eq!(schema[1].1, "Timestamp(ns, \"UTC\")", "{schema:?}");
            assert!(
                schema
                    .iter()
                    .any(|(n, t)| n == "temperature_avg" && t == "Float64"),
                "{schema:?}"
            );
        }
    }
    // A SQLite file that is not there is a usage error, not an empty export.
    let missing = dir.path().join("typo.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args([
            "export",
            "--store",
            &format!("sqlite:{}", missing.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLite file"));
    assert!(!missing.exists());
    // A SQLite store open elsewhere is refused with a reason, not read half.
    let _open = millwatch::store::StoreSpec::parse(&sqlite)
        .unwrap()
        .open(millwatch::store::sqlite::Durability::Full)
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["export", "--store", &sqlite])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}

/// The paged read of every store in small pages, with many records sharing a time across
/// and within machines, gives exactly the records of one big query, in its order.
#[tokio::test]
async fn paged_reads_equal_one_query_whatever_the_page() {
    use millwatch::export::scan::{self, Range};
    use millwatch::store::{DataQuery, Store};
    let store = std::sync::Arc::new(millwatch::store::memory::MemoryStore::new());
    let app = TestApp::with(store.clone(), |_| {}).await;
    let body: String = (0..600)
        .map(|i| {
            // Runs of up to 40 records at one time: ties longer than the page.
            let t = 1_700_000_000 + (i / 40) * 3 + (i % 7 == 0) as i64;
            format!(
                "{{\"machine_id\": \"m{}\", \"timestamp\": {t}, \"x\": {i}}}\n",
                i % 3
            )
        })
        .collect();
    let a = app.post_as("/ingest", &body, "application/x-ndjson").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = |s: &str| millwatch::reading::MachineId::parse(s).unwrap();
    for machines in [vec![], vec![m("m1")], vec![m("m2"), m("m0")]] {
        for page in [1, 7, 40, 1000] {
            let range = Range {
                machines: machines.clone(),
                ..Default::default()
            };
            let plan = scan::plan(store.as_ref(), &range, page, |_| {})
                .await
                .unwrap();
            let mut got = Vec::new();
            for w in &plan.windows {
                got.extend(scan::window(store.as_ref(), &range, *w).await.unwrap());
            }
            let mut want = Vec::new();
            for machine in if machines.is_empty() {
                vec![None]
            } else {
                machines.iter().cloned().map(Some).collect()
            } {
                want.extend(
                    store
                        .query(DataQuery {
                            machine_id: machine,
                            since: None,
                            until: None,
                            limit: usize::MAX,
                        })
                        .await
                        .unwrap(),
                );
            }
            if machines.len() > 1 {
                want.sort_by_key(|r| r.timestamp);
            }
            assert_eq!(plan.total as usize, want.len(), "{machines:?} page {page}");
            assert_eq!(got, want, "{machines:?} page {page}");
        }
    }
}
