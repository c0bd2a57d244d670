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
