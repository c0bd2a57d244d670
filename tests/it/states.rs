//! `GET /states`, `GET /oee` and the status `reason` (SPEC §8) through the real router,
//! against a naive per-second model computed here, on random lifecycle histories.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Timelike};
use millwatch::api::StatesConfig;
use millwatch::core::oee::{OeeConfig, Shifts};
use millwatch::reading::MachineId;
use millwatch::status::{JobStatus, StatusChange};
use millwatch::store::Store;
use millwatch::store::memory::MemoryStore;
use millwatch::store::sqlite::{Durability, SqliteStore};
use millwatch::timestamp::Timestamp;
use serde_json::{Value, json};

use crate::support::TestApp;

const SEC: i64 = 1_000_000_000;

fn m(s: &str) -> MachineId {
    MachineId::parse(s).unwrap()
}

fn rfc(secs: i64) -> String {
    Timestamp::from_nanos(secs * SEC).to_string()
}

fn secs_of(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

/// A random history that follows the lifecycle: (second, status, reason).
fn random_history(rng: &mut fastrand::Rng, start: i64, n: usize, gap: i64) -> Vec<StatusChange> {
    let mut out = Vec::new();
    let mut at = start;
    let mut cur = JobStatus::Idle;
    for _ in 0..n {
        at += rng.i64(1..=gap);
        let next = cur.allowed_next();
        let to = next[rng.usize(..next.len())];
        let reason = match (to, rng.u8(..3)) {
            (JobStatus::Paused | JobStatus::Failed, 0) => Some("jam"),
            (JobStatus::Paused | JobStatus::Failed, 1) => Some("setup"),
            _ => None,
        };
        out.push(StatusChange {
            machine_id: m("rnd"),
            status: to,
            previous: cur,
            since: Timestamp::from_nanos(at * SEC),
            reason: reason.map(Into::into),
        });
        cur = to;
    }
    out
}

/// The naive model: the status and reason at second `t`, by a scan of the whole history.
fn status_at(h: &[StatusChange], t: i64) -> (JobStatus, Option<String>) {
    let mut cur = (JobStatus::Idle, None);
    for c in h {
        if c.since.as_nanos() <= t * SEC {
            cur = (c.status, c.reason.as_deref().map(str::to_owned));
        }
    }
    cur
}

async fn app_over(
    store: Arc<dyn Store>,
    history: &[StatusChange],
    config: StatesConfig,
) -> TestApp {
    for c in history {
        store.append_status(c.clone()).await.unwrap();
    }
    TestApp::with(store, move |s| s.states = config).await
}

fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Process).unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn states_match_the_per_second_model_on_random_histories() {
    let mut rng = fastrand::Rng::with_seed(21);
    for case in 0..24 {
        let n = rng.usize(0..40);
        let history = random_history(&mut rng, 10_000, n, 120);
        let (_dir, store): (Option<tempfile::TempDir>, Arc<dyn Store>) = if case % 2 == 0 {
            (None, Arc::new(MemoryStore::new()))
        } else {
            let (d, s) = sqlite();
            (Some(d), s)
        };
        let app = app_over(store, &history, StatesConfig::default()).await;
        // Ranges before the first change, inside and across segments, past the last one.
        for _ in 0..6 {
            let since = 10_000 + rng.i64(-500..3000);
            let until = since + rng.i64(0..3000);
            let a = app
                .get(&format!(
                    "/states?machine_id=rnd&since={}&until={}&timeline=true",
                    rfc(since),
                    rfc(until)
                ))
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            let mut want: HashMap<String, (i64, u64)> = HashMap::new();
            let mut want_reason: HashMap<(String, Option<String>), i64> = HashMap::new();
            for t in since..until {
                let (s, r) = status_at(&history, t);
                want.entry(s.as_str().into()).or_default().0 += 1;
                *want_reason.entry((s.as_str().into(), r)).or_default() += 1;
            }
            for c in &history {
                let at = c.since.as_nanos() / SEC;
                if (since..=until).contains(&at) {
                    want.entry(c.status.as_str().into()).or_default().1 += 1;
                }
            }
            let ctx = format!("case {case} [{since}, {until}]: {}", a.body);
            let mut share_sum = 0.0;
            for s in a.body["states"].as_array().unwrap() {
                let name = s["state"].as_str().unwrap();
                let (secs, entered) = want.get(name).copied().unwrap_or_default();
                assert_eq!(s["seconds"].as_f64().unwrap(), secs as f64, "{name} {ctx}");
                assert_eq!(s["entered"].as_u64().unwrap(), entered, "{name} {ctx}");
                share_sum += s["share"].as_f64().unwrap();
            }
            assert!((share_sum - 1.0).abs() < 1e-9, "{ctx}");
            for ((state, reason), secs) in &want_reason {
                let got = a.body["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["state"] == *state && r["reason"].as_str() == reason.as_deref())
                    .map(|r| r["seconds"].as_f64().unwrap());
                assert_eq!(got, Some(*secs as f64), "{state} {reason:?} {ctx}");
            }
            // The timeline tiles the range, each second in the state the model says.
            let mut at = since;
            for seg in a.body["timeline"].as_array().unwrap() {
                let (from, to) = (
                    secs_of(seg["from"].as_str().unwrap()),
                    secs_of(seg["to"].as_str().unwrap()),
                );
                assert_eq!(from, at, "{ctx}");
                for t in from..to {
                    assert_eq!(seg["state"], status_at(&history, t).0.as_str(), "{ctx}");
                }
                at = to;
            }
            assert_eq!(at, until, "{ctx}");
        }
    }
}

/// Berlin's local hour of an instant, told apart across the repeated hour by its offset.
fn berlin_hour(t: i64) -> String {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let local = tz.timestamp_opt(t, 0).unwrap();
    format!(
        "{} {:02} {}",
        local.date_naive(),
        local.hour(),
        local.format("%z")
    )
}

fn berlin_shift(t: i64) -> String {
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let local = tz.timestamp_opt(t, 0).unwrap();
    let h = local.hour();
    // A night shift belongs to the day it started.
    let (day, name) = match h {
        6..=13 => (local.date_naive(), "06:00"),
        14..=21 => (local.date_naive(), "14:00"),
        22..=23 => (local.date_naive(), "22:00"),
        _ => (local.date_naive().pred_opt().unwrap(), "22:00"),
    };
    format!("{day} {name}")
}

#[tokio::test]
async fn oee_by_hour_and_shift_across_berlin_dst_matches_the_model() {
    let mut rng = fastrand::Rng::with_seed(8);
    // Around both changes of 2026: 29 March (02:00 -> 03:00) and 25 October (03:00 -> 02:00).
    for (case, start) in [
        secs_of("2026-03-28T19:00:00Z"),
        secs_of("2026-10-24T19:00:00Z"),
        secs_of("2026-03-28T23:10:00Z"),
        secs_of("2026-10-24T23:20:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let history = random_history(&mut rng, start - 3000, 120, 900);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        // A parts counter with resets, and a rejects counter.
        let mut readings = Vec::new();
        let (mut parts, mut rejects) = (rng.u32(0..100), 0u32);
        let mut counts = Vec::new();
        let mut t = start - 4000;
        while t < start + 40_000 {
            t += rng.i64(30..600);
            if rng.u8(..15) == 0 {
                parts = rng.u32(0..5);
                rejects = 0;
            } else {
                parts += rng.u32(0..30);
                rejects += rng.u32(0..3);
            }
            counts.push((t, f64::from(parts), f64::from(rejects)));
            readings.push(format!(
                r#"{{"machine_id": "rnd", "timestamp": {t}, "parts": {parts}, "rejects": {rejects}}}"#
            ));
        }
        let config = StatesConfig {
            oee: Arc::new(
                OeeConfig::parse(
                    "[[machine]]\nmachines = \"r*\"\ncount = \"parts\"\nreject = \"rejects\"\nideal_rate = 30\n",
                )
                .unwrap(),
            ),
            shifts: Shifts::default(),
            timezone: "Europe/Berlin".parse().unwrap(),
            stale: std::time::Duration::from_secs(300),
        };
        let app = app_over(store, &history, config).await;
        let a = app
            .post("/ingest", &format!("[{}]", readings.join(",")))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let since = start + rng.i64(0..1800);
        let until = since + 30_000 + rng.i64(0..1800);
        for (by, key) in [
            ("hour", berlin_hour as fn(i64) -> String),
            ("shift", berlin_shift),
        ] {
            let a = app
                .get(&format!(
                    "/oee?machine_id=rnd&since={}&until={}&by={by}",
                    rfc(since),
                    rfc(until)
                ))
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
            let ctx = format!("case {case} by={by}");
            // The model: each second of the range to its local bucket.
            let mut want: Vec<(String, i64, i64, f64, f64)> = Vec::new();
            for t in since..until {
                let k = key(t);
                if want.last().is_none_or(|w| w.0 != k) {
                    want.push((k, 0, 0, 0.0, 0.0));
                }
                let i = want.len() - 1;
                let s = status_at(&history, t).0;
                if matches!(
                    s,
                    JobStatus::Started | JobStatus::Running | JobStatus::Paused | JobStatus::Failed
                ) {
                    want[i].1 += 1;
                }
                if s == JobStatus::Running {
                    want[i].2 += 1;
                }
            }
            let mut prev: Option<(f64, f64)> = None;
            for (t, p, r) in &counts {
                if *t >= since && *t <= until {
                    let k = key((*t).min(until - 1));
                    let i = want.iter().position(|w| w.0 == k).unwrap();
                    if let Some((pp, pr)) = prev {
                        want[i].3 += if *p < pp { *p } else { p - pp };
                        want[i].4 += if *r < pr { *r } else { r - pr };
                    }
                }
                prev = Some((*p, *r));
            }
            let buckets = a.body["buckets"].as_array().unwrap();
            assert_eq!(buckets.len(), want.len(), "{ctx}: {}", a.body);
            let (mut planned, mut running, mut parts_sum) = (0, 0, 0.0);
            for (b, w) in buckets.iter().zip(&want) {
                let bctx = format!("{ctx} bucket {} {b}", w.0);
                assert_eq!(b["planned_seconds"].as_f64().unwrap(), w.1 as f64, "{bctx}");
                assert_eq!(b["running_seconds"].as_f64().unwrap(), w.2 as f64, "{bctx}");
                assert_eq!(b["parts"].as_f64().unwrap(), w.3, "{bctx}");
                assert_eq!(b["good"].as_f64().unwrap(), (w.3 - w.4).max(0.0), "{bctx}");
                let availability = (w.1 > 0).then(|| w.2 as f64 / w.1 as f64);
                assert_eq!(b["availability"].as_f64(), availability, "{bctx}");
                if w.1 == 0 {
                    assert_eq!(b["availability"], Value::Null, "{bctx}");
                    assert_eq!(b["oee"], Value::Null, "{bctx}");
                }
                let performance = (w.2 > 0).then(|| (w.3 / (30.0 * w.2 as f64 / 60.0)).min(1.0));
                assert_eq!(b["performance"].as_f64(), performance, "{bctx}");
                planned += w.1;
                running += w.2;
                parts_sum += w.3;
            }
            assert_eq!(a.body["planned_seconds"].as_f64().unwrap(), planned as f64);
            assert_eq!(a.body["running_seconds"].as_f64().unwrap(), running as f64);
            assert_eq!(a.body["parts"].as_f64().unwrap(), parts_sum);
        }
    }
}

#[tokio::test]
async fn a_known_history_answers_exactly() {
    use JobStatus::*;
    let t0 = secs_of("2026-06-01T06:00:00Z");
    let change =
        |at: i64, status: JobStatus, previous: JobStatus, reason: Option<&str>| StatusChange {
            machine_id: m("press-01"),
            status,
            previous,
            since: Timestamp::from_nanos((t0 + at) * SEC),
            reason: reason.map(Into::into),
        };
    let history = [
        change(0, Running, Idle, None),
        change(3000, Paused, Running, Some("material jam")),
        change(3600, Running, Paused, None),
        change(6000, Failed, Running, Some("spindle")),
        change(7200, Idle, Failed, None),
    ];
    let config = StatesConfig {
        oee: Arc::new(
            OeeConfig::parse(
                "[[machine]]\nmachines = \"press-*\"\ncount = \"parts\"\ngood = \"good\"\nideal_rate = 1\n",
            )
            .unwrap(),
        ),
        ..StatesConfig::default()
    };
    let app = app_over(Arc::new(MemoryStore::new()), &history, config).await;
    let readings: Vec<String> = [(0, 0, 0), (3000, 40, 38), (6000, 80, 76), (7200, 80, 76)]
        .iter()
        .map(|(at, p, g)| {
            format!(
                r#"{{"machine_id": "press-01", "timestamp": {}, "parts": {p}, "good": {g}}}"#,
                t0 + at
            )
        })
        .collect();
    app.post("/ingest", &format!("[{}]", readings.join(",")))
        .await;
    let q = format!(
        "machine_id=press-01&since={}&until={}",
        rfc(t0),
        rfc(t0 + 7200)
    );
    let a = app.get(&format!("/states?{q}")).await;
    assert_eq!(
        a.body["states"],
        json!([
            {"state": "RUNNING", "seconds": 5400.0, "share": 0.75, "entered": 2},
            {"state": "FAILED", "seconds": 1200.0, "share": 1200.0 / 7200.0, "entered": 1},
            {"state": "PAUSED", "seconds": 600.0, "share": 600.0 / 7200.0, "entered": 1},
            {"state": "IDLE", "seconds": 0.0, "share": 0.0, "entered": 1},
        ]),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["reasons"],
        json!([
            {"state": "RUNNING", "reason": null, "seconds": 5400.0, "entered": 2},
            {"state": "FAILED", "reason": "spindle", "seconds": 1200.0, "entered": 1},
            {"state": "PAUSED", "reason": "material jam", "seconds": 600.0, "entered": 1},
            {"state": "IDLE", "reason": null, "seconds": 0.0, "entered": 1},
        ])
    );
    assert!(a.body.get("timeline").is_none(), "only when asked");
    let a = app.get(&format!("/oee?{q}")).await;
    // Planned 7200 s, running 5400 s; 80 parts against an ideal 90; 76 good.
    assert_eq!(a.body["planned_seconds"], 7200.0);
    assert_eq!(a.body["running_seconds"], 5400.0);
    assert_eq!(a.body["parts"], 80.0);
    assert_eq!(a.body["good"], 76.0);
    assert_eq!(a.body["availability"], 0.75);
    assert_eq!(a.body["performance"], 80.0 / 90.0);
    assert_eq!(a.body["quality"], 0.95);
    assert_eq!(a.body["count"], "parts");
    // After the last change the machine is IDLE: zero planned time, null factors.
    let later = format!(
        "machine_id=press-01&since={}&until={}",
        rfc(t0 + 8000),
        rfc(t0 + 9000)
    );
    let a = app.get(&format!("/oee?{later}")).await;
    assert_eq!(a.body["planned_seconds"], 0.0);
    for f in ["availability", "performance", "quality", "oee"] {
        assert_eq!(a.body[f], Value::Null, "{f}: {}", a.body);
    }
    // A machine without a counter in the OEE file: availability only.
    let a = app.get("/oee?machine_id=lathe-1").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        (a.body["count"].clone(), a.body["parts"].clone()),
        (Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn state_parameters_go_unknown_when_stale() {
    let app = TestApp::with(Arc::new(MemoryStore::new()), |s| {
        s.states.stale = std::time::Duration::from_secs(60)
    })
    .await;
    let t0 = 1_000_000;
    let body = format!(
        r#"[{{"machine_id": "m", "timestamp": {}, "mode": "AUTO"}},
            {{"machine_id": "m", "timestamp": {}, "mode": "AUTO"}},
            {{"machine_id": "m", "timestamp": {}, "mode": "MANUAL"}},
            {{"machine_id": "m", "timestamp": {}, "x": 1}}]"#,
        t0,
        t0 + 30,
        t0 + 200,
        t0 + 210
    );
    app.post("/ingest", &body).await;
    // From 20 s after the first reading: AUTO until 90 (30 + 60), UNKNOWN until 200,
    // MANUAL from 200 to 260 (a reading without the parameter does not refresh it).
    let a = app
        .get(&format!(
            "/states?machine_id=m&parameter=mode&since={}&until={}",
            rfc(t0 + 20),
            rfc(t0 + 300)
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let get = |s: &str| {
        a.body["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["state"] == s)
            .map(|x| {
                (
                    x["seconds"].as_f64().unwrap(),
                    x["entered"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(get("AUTO"), Some((70.0, 0)));
    assert_eq!(get("MANUAL"), Some((60.0, 1)));
    assert_eq!(get("UNKNOWN"), Some((150.0, 2)));
    assert_eq!(a.body["parameter"], "mode");
    assert_eq!(a.body["reasons"], json!([]));
}

#[tokio::test]
async fn reasons_are_kept_and_bad_queries_are_400() {
    let app = TestApp::start().await;
    app.set_status("p", "RUNNING", 200).await;
    let a = app
        .post(
            "/status",
            r#"{"machine_id": "p", "status": "PAUSED", "reason": "no material"}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let h = app.get("/status/history?machine_id=p").await;
    assert_eq!(h.body[1]["reason"], "no material");
    assert_eq!(h.body[0]["reason"], Value::Null);
    let a = app
        .get("/states?machine_id=p&since=2020-01-01T00:00:00Z")
        .await;
    let paused = a.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "PAUSED")
        .unwrap()
        .clone();
    assert_eq!(paused["reason"], "no material");

    let long = "x".repeat(257);
    for (path, body, mentions) in [
        (
            "/status",
            format!(r#"{{"machine_id": "p", "status": "FAILED", "reason": "{long}"}}"#),
            "reason",
        ),
        (
            "/status",
            r#"{"machine_id": "p", "status": "FAILED", "reason": 7}"#.to_owned(),
            "reason",
        ),
    ] {
        let a = app.post(path, &body).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body["error"].as_str().unwrap().contains(mentions),
            "{}",
            a.body
        );
    }
    let exactly = "y".repeat(256);
    let a = app
        .post(
            "/status",
            &format!(r#"{{"machine_id": "p", "status": "FAILED", "reason": "{exactly}"}}"#),
        )
        .await;
    assert_eq!(a.status, 200, "256 bytes are allowed: {}", a.body);
    for (q, mentions) in [
        ("/states", "machine_id"),
        ("/states?machine_id=p&timeline=yes", "timeline"),
        ("/states?machine_id=p&color=red", "color"),
        ("/states?machine_id=p&parameter=a%20b", "parameter"),
        ("/oee?machine_id=p&by=week", "by"),
        ("/oee?machine_id=p&limit=3", "limit"),
        ("/oee?machine_id=bad%20id", "machine_id"),
    ] {
        let a = app.get(q).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        assert!(
            a.body["error"].as_str().unwrap().contains(mentions),
            "{q}: {}",
            a.body
        );
    }
    // An inverted range matches nothing (SPEC §4): an empty range at `since`, not an error.
    let a = app
        .get("/states?machine_id=p&since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["until"], "2026-01-02T00:00:00Z", "{}", a.body);
    let seconds: f64 = a.body["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seconds"].as_f64().unwrap())
        .sum();
    assert_eq!(seconds, 0.0, "{}", a.body);
    // A range of more hours than one answer holds gives its newest 10000 hours or fewer.
    let until = "2026-06-01T12:00:00Z";
    let a = app
        .get(&format!(
            "/oee?machine_id=p&by=hour&since=2000-01-01T00:00:00Z&until={until}"
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let buckets = a.body["buckets"].as_array().unwrap();
    assert!(
        (9_990..=10_000).contains(&buckets.len()),
        "{}",
        buckets.len()
    );
    assert_eq!(buckets.last().unwrap()["to"], until);
    assert_eq!(a.body["since"], buckets[0]["from"], "{}", a.body["since"]);
    // A machine never seen is IDLE the whole range, not an error.
    let a = app
        .get("/states?machine_id=never&since=2026-01-01T00:00:00Z&until=2026-01-01T01:00:00Z")
        .await;
    assert_eq!(
        a.body["states"],
        json!([{"state": "IDLE", "seconds": 3600.0, "share": 1.0, "entered": 0}])
    );
}

#[tokio::test]
async fn analyze_states_over_a_readings_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ndjson");
    std::fs::write(
        &path,
        "{\"timestamp\": \"2024-10-27T12:00:00Z\", \"status\": \"RUNNING\"}\n\
         {\"timestamp\": \"2024-10-27T12:00:40Z\", \"status\": \"PAUSED\"}\n\
         {\"timestamp\": \"2024-10-27T12:00:50Z\", \"status\": \"RUNNING\"}\n\
         {\"timestamp\": \"2024-10-27T12:01:00Z\", \"status\": \"RUNNING\"}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["analyze", path.to_str().unwrap(), "--states"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["machine-1"]["states"],
        json!([
            {"state": "RUNNING", "seconds": 50.0, "share": 50.0 / 60.0, "entered": 2},
            {"state": "PAUSED", "seconds": 10.0, "share": 10.0 / 60.0, "entered": 1},
        ]),
        "{v}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args([
            "analyze",
            path.to_str().unwrap(),
            "--states",
            "--parameter",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[tokio::test]
async fn the_openapi_document_describes_states_and_oee() {
    let app = TestApp::start().await;
    let doc = app.get("/openapi.json").await.body;
    for path in ["/states", "/oee"] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} missing: {}", doc["paths"]));
        let required: Vec<&str> = params
            .iter()
            .filter(|p| p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(required, ["machine_id"], "{path}");
    }
    let schemas = &doc["components"]["schemas"];
    for name in ["StatesAnswer", "OeeAnswer", "StateTimeDoc", "BucketDoc"] {
        assert!(schemas.get(name).is_some(), "{name} missing: {schemas}");
    }
    assert_eq!(
        schemas["SetStatus"]["properties"]["reason"]["maxLength"],
        256
    );
    assert_eq!(
        schemas["StatusChange"]["properties"]["reason"]["maxLength"],
        256
    );
}
