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
