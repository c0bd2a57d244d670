//! Damaged stored data (SPEC §4, §6): a chunk that no longer decodes is a 500 that names the
//! machine and the time range lost, never a "retry later" 503 and never a path of the server.

use std::sync::Arc;

use millwatch::store::Store;
use millwatch::store::sqlite::{Durability, SqliteStore};

use crate::support::TestApp;

#[tokio::test]
async fn a_damaged_chunk_is_a_500_naming_the_machine_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    // 10,000 readings: several chunks of one machine, so that the oldest can be damaged while
    // a start (which reads the newest records) still succeeds.
    let body: String = (0..10_000)
        .map(|i| {
            format!(
                "{{\"machine_id\":\"dmg-1\",\"timestamp\":\"2026-01-01T{:02}:{:02}:{:02}Z\",\"x\":{i}}}\n",
                i / 3600,
                i / 60 % 60,
                i % 60
            )
        })
        .collect();
    {
        let store = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
        let app = TestApp::with(store.clone(), |_| {}).await;
        let a = app.post_as("/ingest", &body, "application/x-ndjson").await;
        assert_eq!(a.status, 200, "{}", a.body);
        store.close().await.unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let changed = conn
            .execute(
                "UPDATE chunks SET data = substr(data, 1, 12)
                 WHERE id = (SELECT id FROM chunks WHERE machine_id = 'dmg-1' ORDER BY ts_min LIMIT 1)",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1, "one chunk damaged");
    }
    let store = Arc::new(SqliteStore::open(&path, Durability::Full).unwrap());
    let app = TestApp::with(store, |_| {}).await;
    // The newest readings are intact and still served.
    let newest = app.get("/data?machine_id=dmg-1&limit=3").await;
    assert_eq!(newest.status, 200, "{}", newest.body);
    assert_eq!(newest.body[2]["x"], 9999);
    // The damaged range: a 500 saying what is lost.
    let a = app
        .get("/data?machine_id=dmg-1&since=2026-01-01T00:00:00Z&until=2026-01-01T00:10:00Z")
        .await;
    assert_eq!(a.status, 500, "{}", a.body);
    let msg = a.body["error"].as_str().unwrap();
    assert!(msg.contains("damaged") && msg.contains("dmg-1"), "{msg}");
    assert!(
        msg.contains("2026-01-01T00:00:00"),
        "names the range: {msg}"
    );
    let dir_text = dir.path().to_string_lossy();
    assert!(!msg.contains(dir_text.as_ref()), "no server path: {msg}");
}

/// Where each commit frame of a log segment starts (frame: magic, segment, len, crc, data).
fn frame_offsets(segment: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while segment.len() >= at + 20 && segment[at..at + 4] == 0x4d57_4c47u32.to_le_bytes() {
        out.push(at);
        let len = u32::from_le_bytes(segment[at + 12..at + 16].try_into().unwrap()) as usize;
        at += 20 + len;
    }
    out
}

/// Starts `serve` on `store` with `extra` arguments; returns the child, its URL and the log
/// lines before it listened, or `None` for the URL if it exited first (its lines then hold
/// why).
fn spawn_serve(store: &str, extra: &[&str]) -> (std::process::Child, Option<String>, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .args(["--source", "none", "--store", store])
        .args(extra)
        .env("MILLWATCH_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on http://") {
            let url = line[at + "listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            std::thread::spawn(move || for _ in lines {});
            return (child, Some(url), seen);
        }
        seen.push(line);
    }
    (child, None, seen)
}

/// A byte changed in the middle of a log segment (SPEC §6: corruption is reported, never
/// silent): the start refuses, naming the file and the offset; with `--recover-damaged` the
/// frames before and after the damaged one are kept and the loss is logged.
#[tokio::test]
async fn a_damaged_log_frame_stops_the_start_unless_recovering() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let store = format!("sqlite:{}", db.display());
    let (mut first, url, _) = spawn_serve(&store, &[]);
    let url = url.expect("the first start serves");
    let client = reqwest::Client::new();
    // One request at a time: each is its own commit, one frame in the log.
    for i in 0..10 {
        let r = client
            .post(format!("{url}/ingest"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"machine_id": "seg-1", "timestamp": {}, "x": {i}}}"#,
                1_700_000_000 + i
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Killed before its idle compaction (5 s): the readings are only in the log.
    first.kill().unwrap();
    first.wait().unwrap();

    let segment = dir.path().join("log.db-log.1");
    let mut bytes = std::fs::read(&segment).unwrap();
    let frames = frame_offsets(&bytes);
    assert_eq!(frames.len(), 10, "one frame per acknowledged request");
    let damaged = frames[4];
    bytes[damaged + 20 + 3] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();

    let (mut refused, url, lines) = spawn_serve(&store, &[]);
    if url.is_some() {
        refused.kill().unwrap();
        panic!("a damaged log must stop the start: {lines:?}");
    }
    assert!(!refused.wait().unwrap().success());
    let said = lines.join("\n");
    assert!(said.contains("log.db-log.1"), "names the file: {said}");
    assert!(
        said.contains(&format!("at byte {damaged} ")),
        "names the offset: {said}"
    );
    assert!(
        said.contains("5 acknowledged commit frames follow"),
        "{said}"
    );
    assert!(
        said.contains("--recover-damaged"),
        "says what to do: {said}"
    );

    let (mut recovering, url, lines) = spawn_serve(&store, &["--recover-damaged"]);
    let url = url.unwrap_or_else(|| panic!("--recover-damaged starts: {lines:?}"));
    let said = lines.join("\n");
    assert!(
        said.contains("damaged commit frame dropped")
            && said.contains(&format!("offset={damaged}")),
        "logs the loss: {said}"
    );
    let text = client
        .get(format!("{url}/data?machine_id=seg-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let xs: Vec<i64> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["x"].as_i64().unwrap())
        .collect();
    assert_eq!(
        xs,
        [0, 1, 2, 3, 5, 6, 7, 8, 9],
        "all but the damaged frame's reading"
    );
    recovering.kill().unwrap();
    recovering.wait().unwrap();
}
