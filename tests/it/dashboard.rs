//! The dashboard in headless Chromium, driven over WebDriver (chromedriver + fantoccini): the
//! real router serves the page, readings are pushed over HTTP, and the page must show them,
//! follow the live stream, change a status through the API and escape what came from input.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::TestApp;

pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PATIENCE: Duration = Duration::from_secs(10);

/// A chromedriver child process in its own process group, killed with the Chromium it started
/// when dropped, also when the test panics (killing chromedriver alone would orphan Chromium).
pub(crate) struct Driver {
    child: Child,
    url: String,
    /// Chromium's profile, removed after the driver is gone.
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub(crate) fn start() -> Driver {
        // A free port: bind port 0, note it, release it for chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("a profile dir"),
        }
    }

    /// A headless Chromium session; retried while chromedriver is still starting.
    pub(crate) async fn connect(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", self.profile.path().display()),
                    "--window-size=1280,900",
                ],
            }),
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            match ClientBuilder::native()
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Whether the browser tests must skip: chromedriver is missing and MILLWATCH_SKIP_SERVICES=1.
/// Missing without it is a failure that says how to install it.
pub(crate) fn no_browser() -> bool {
    if std::path::Path::new(CHROMEDRIVER).exists() {
        return false;
    }
    if std::env::var("MILLWATCH_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!("skipped: {CHROMEDRIVER} is missing (MILLWATCH_SKIP_SERVICES=1)");
        return true;
    }
    panic!(
        "{CHROMEDRIVER} is missing: run scripts/test.sh, which installs chromium and \
         chromium-driver (or set MILLWATCH_SKIP_SERVICES=1 to skip this test)"
    );
}

/// Polls `probe` until it yields `Ok`, for up to `PATIENCE`; panics with the last `Err`, which
/// says what the page showed instead.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out after {PATIENCE:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs a script in the page and returns its value.
pub(crate) async fn js(c: &Client, script: &str, args: Vec<Value>) -> Value {
    c.execute(script, args).await.expect("the script runs")
}

/// The text of a machine's card, or null when there is none.
const CARD_TEXT: &str = r##"
    const card = [...document.querySelectorAll(".card")].find(c => c.dataset.machine === arguments[0]);
    return card ? card.innerText : null;"##;

async fn card_text(c: &Client, machine: &str) -> Result<String, String> {
    match js(c, CARD_TEXT, vec![json!(machine)]).await {
        Value::String(s) => Ok(s),
        other => Err(format!("no card for {machine}: {other}")),
    }
}

/// Waits until the card of `machine` contains `text`.
pub(crate) async fn card_shows(c: &Client, machine: &str, text: &str) -> String {
    eventually(&format!("card {machine} to show {text:?}"), || async {
        let t = card_text(c, machine).await?;
        if t.contains(text) { Ok(t) } else { Err(t) }
    })
    .await
}

async fn status_of(app: &TestApp, machine: &str) -> String {
    let a = app.get(&format!("/status/{machine}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["status"].as_str().unwrap_or_default().to_owned()
}

const XSS: &str = "<img src=x onerror=alert(1)>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_machines_live_and_changes_status() {
    if no_browser() {
        return;
    }
    let app = TestApp::start().await;

    // A machine id with HTML in it is refused by the API, so ids cannot carry markup; state
    // values can (any string up to 256 bytes): that is what the page must escape.
    let refused = app
        .post(
            "/ingest",
            r##"{"machine_id": "<b>x</b>", "temperature": 1}"##,
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    let readings = json!([
        {"machine_id": "press-01", "temperature": 70.0, "speed": 1480, "status": "RUNNING"},
        {"machine_id": "press-01", "temperature": 71.5, "speed": 1482, "status": "RUNNING"},
        {"machine_id": "lathe-02", "temperature": 64.25, "speed": 2400, "status": "RUNNING"},
        {"machine_id": "mill-03", "temperature": 55.0, "note": XSS},
    ]);
    let a = app.post("/ingest", &readings.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    app.set_status("lathe-02", "STARTED", 200).await;

    let driver = Driver::start();
    let c = driver.connect().await;
    c.goto(&format!("{}/", app.base))
        .await
        .expect("the page loads");

    // Machines, values, the moving average, the status and sparklines appear.
    let press = card_shows(&c, "press-01", "71.5").await;
    assert!(
        press.contains("avg 70.75"),
        "moving average on the card: {press}"
    );
    assert!(press.contains("IDLE"), "status on the card: {press}");
    card_shows(&c, "lathe-02", "64.25").await;
    card_shows(&c, "lathe-02", "STARTED").await;
    card_shows(&c, "mill-03", "55").await;
    let ids = js(
        &c,
        r##"return [...document.querySelectorAll(".card")].map(c => c.dataset.machine);"##,
        vec![],
    )
    .await;
    assert_eq!(
        ids,
        json!(["lathe-02", "mill-03", "press-01"]),
        "cards sorted by id"
    );
    eventually("a sparkline canvas in a card", || async {
        let n = js(
            &c,
            "return document.querySelectorAll('.card .uplot canvas').length;",
            vec![],
        )
        .await;
        if n.as_u64() > Some(0) {
            Ok(())
        } else {
            Err(format!("{n} canvases"))
        }
    })
    .await;
    eventually("the connection indicator to say live", || async {
        let v = js(
            &c,
            "return document.getElementById('conn').className;",
            vec![],
        )
        .await;
        if v.as_str().is_some_and(|s| s.contains("conn-connected")) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // The state value with markup is shown as text, and no element was made of it.
    let shown = js(
        &c,
        r##"const s = document.querySelector('.card[data-machine="mill-03"] [data-state="note"] .state-value');
           return [s ? s.textContent : null, document.querySelectorAll("img").length];"##,
        vec![],
    )
    .await;
    assert_eq!(
        shown,
        json!([XSS, 0]),
        "the state value is text, not markup"
    );

    // A reading pushed after load appears without a reload, and so does a new machine.
    let a = app
        .post(
            "/ingest",
            r##"{"machine_id": "press-01", "temperature": 88.75, "speed": 1490}"##,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    card_shows(&c, "press-01", "88.75").await;
    let a = app
        .post(
            "/ingest",
            r##"{"machine_id": "drill-04", "temperature": 42.5}"##,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    card_shows(&c, "drill-04", "42.5").await;

    // The detail view: a chart, and buttons for exactly the allowed next statuses.
    c.find(Locator::Css(r##".card[data-machine="press-01"]"##))
        .await
        .expect("the press-01 card")
        .click()
        .await
        .expect("a click on the card");
    eventually("the detail chart", || async {
        let n = js(
            &c,
            "return document.querySelectorAll('#chart .uplot canvas').length;",
            vec![],
        )
        .await;
        if n.as_u64() > Some(0) {
            Ok(())
        } else {
            Err(format!("{n} canvases"))
        }
    })
    .await;
    const OFFER: &str = r##"return [...document.querySelectorAll("#status-buttons button")].map(b => b.dataset.status);"##;
    eventually("the buttons IDLE allows", || async {
        let offer = js(&c, OFFER, vec![]).await;
        if offer == json!(["STARTED", "RUNNING"]) {
            Ok(())
        } else {
            Err(offer.to_string())
        }
    })
    .await;

    // Clicking a button changes the status through the API, and the page follows.
    c.find(Locator::Css(
        r##"#status-buttons button[data-status="STARTED"]"##,
    ))
    .await
    .expect("the STARTED button")
    .click()
    .await
    .expect("a click on STARTED");
    eventually("press-01 to be STARTED in the API", || async {
        let s = status_of(&app, "press-01").await;
        if s == "STARTED" { Ok(()) } else { Err(s) }
    })
    .await;
    eventually("the detail view to show STARTED", || async {
        let v = js(
            &c,
            "return document.getElementById('detail-status').textContent;",
            vec![],
        )
        .await;
        if v == "STARTED" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    card_shows(&c, "press-01", "STARTED").await;
    eventually("the buttons STARTED allows", || async {
        let offer = js(&c, OFFER, vec![]).await;
        let want = json!(["RUNNING", "PAUSED", "COMPLETED", "FAILED", "IDLE"]);
        if offer == want {
            Ok(())
        } else {
            Err(offer.to_string())
        }
    })
    .await;

    // A refused change shows the server's message. Another client completes the job, and in the
    // same script turn (before the page can hear of it) the now stale PAUSED button is clicked.
    js(
        &c,
        r##"const x = new XMLHttpRequest();
           x.open("POST", "/status", false);
           x.setRequestHeader("content-type", "application/json");
           x.send(JSON.stringify({machine_id: "press-01", status: "COMPLETED"}));
           document.querySelector('#status-buttons button[data-status="PAUSED"]').click();
           // PAUSED asks for an optional reason (states.js): sent without one.
           document.querySelector('.reason-ask button[type=submit]').click();"##,
        vec![],
    )
    .await;
    let error = eventually("the refusal to be shown", || async {
        let v = js(
            &c,
            "const e = document.getElementById('status-error'); return e.hidden ? null : e.textContent;",
            vec![],
        )
        .await;
        match v.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(v.to_string()),
        }
    })
    .await;
    assert!(
        error.contains("allowed next"),
        "the server's message: {error}"
    );
    assert_eq!(status_of(&app, "press-01").await, "COMPLETED");
    eventually("the buttons COMPLETED allows", || async {
        let offer = js(&c, OFFER, vec![]).await;
        if offer == json!(["IDLE", "STARTED", "RUNNING"]) {
            Ok(())
        } else {
            Err(offer.to_string())
        }
    })
    .await;

    // A machine first seen in the stream gets its offer too.
    js(&c, "location.hash = 'machine=drill-04';", vec![]).await;
    eventually("the buttons of drill-04, found after load", || async {
        let offer = js(&c, OFFER, vec![]).await;
        if offer == json!(["STARTED", "RUNNING"]) {
            Ok(())
        } else {
            Err(offer.to_string())
        }
    })
    .await;

    c.close().await.expect("the session closes");
    drop(driver);
}

/// SPEC §8 on the page: a machine with a status history and part counters shows today's
/// availability on its card and, in its detail view, the timeline, the stop reasons and OEE
/// per shift; PAUSED asks for a reason, which reaches the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_time_in_state_and_oee() {
    use millwatch::status::{JobStatus::*, StatusChange};
    use millwatch::store::Store;
    if no_browser() {
        return;
    }
    let store = std::sync::Arc::new(millwatch::store::memory::MemoryStore::new());
    let now = millwatch::timestamp::Timestamp::now().as_nanos();
    let min = 60_000_000_000i64;
    let mut previous = Idle;
    for (ago, status, reason) in [
        (50, Running, None),
        (30, Paused, Some("material jam")),
        (20, Running, None),
        (10, Failed, Some("spindle")),
        (5, Running, None),
    ] {
        store
            .append_status(StatusChange {
                machine_id: millwatch::reading::MachineId::parse("press-01").unwrap(),
                status,
                previous,
                since: millwatch::timestamp::Timestamp::from_nanos(now - ago * min),
                reason: reason.map(Into::into),
            })
            .await
            .unwrap();
        previous = status;
    }
    let config = millwatch::api::StatesConfig {
        oee: std::sync::Arc::new(
            millwatch::core::oee::OeeConfig::parse(
                "[[machine]]\nmachines = \"*\"\ncount = \"parts\"\nreject = \"rejects\"\nideal_rate = 2\n",
            )
            .unwrap(),
        ),
        ..Default::default()
    };
    let app = TestApp::with(store, move |s| s.states = config).await;
    let readings: Vec<Value> = (0..=50)
        .rev()
        .step_by(5)
        .map(|ago| {
            json!({"machine_id": "press-01", "timestamp": (now - ago * min) as f64 / 1e9,
                   "parts": (50 - ago) * 2, "rejects": (50 - ago) / 10})
        })
        .collect();
    let a = app
        .post("/ingest", &Value::Array(readings).to_string())
        .await;
    assert_eq!(a.status, 200, "{}", a.body);

    let driver = Driver::start();
    let c = driver.connect().await;
    c.goto(&format!("{}/", app.base))
        .await
        .expect("the page loads");
    // The line is there at once ("–"); the figure follows when /oee answers.
    let card = card_shows(&c, "press-01", " %").await;
    assert!(card.contains("availability today"), "{card}");

    c.goto(&format!("{}/#machine=press-01&range=1h", app.base))
        .await
        .expect("the detail view loads");
    const SEEN: &str = r##"
        const p = document.getElementById("states-panel");
        return {
          segments: [...p.querySelectorAll(".timeline > span")].map(s => s.dataset.state),
          reasons: [...p.querySelectorAll(".pareto li")].map(li => li.dataset.reason),
          shifts: p.querySelectorAll("table.oee tr[data-shift]").length,
          shiftLabel: (p.querySelector("table.oee tr[data-shift] td") || {}).textContent,
          text: p.innerText,
        };"##;
    let seen = eventually(
        "the timeline, the stop reasons and OEE per shift",
        || async {
            let v = js(&c, SEEN, vec![]).await;
            let segments: Vec<&str> = v["segments"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if segments.ends_with(&["IDLE", "RUNNING", "PAUSED", "RUNNING", "FAILED", "RUNNING"])
                && v["reasons"] == json!(["material jam", "spindle"])
                && v["shifts"].as_u64().unwrap_or(0) >= 1
            {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    let text = seen["text"].as_str().unwrap();
    assert!(
        text.contains("availability") && text.contains("OEE"),
        "{text}"
    );
    assert!(text.contains("Parts from \"parts\""), "{text}");
    // Shift labels use the page's one fixed date pattern, never the browser's locale.
    let label = seen["shiftLabel"].as_str().unwrap_or_default();
    assert!(
        label.len() >= 10
            && label.as_bytes()[4] == b'-'
            && label.as_bytes()[7] == b'-'
            && label[..4].bytes().all(|b| b.is_ascii_digit()),
        "shift label {label:?}"
    );

    // PAUSED asks for a reason; it reaches the history.
    c.find(Locator::Css(
        r##"#status-buttons button[data-status="PAUSED"]"##,
    ))
    .await
    .expect("a PAUSED button")
    .click()
    .await
    .expect("a click on PAUSED");
    let input = c
        .wait()
        .for_element(Locator::Css(".reason-ask input"))
        .await
        .expect("a reason field");
    input.send_keys("tool change").await.expect("typing");
    c.find(Locator::Css(".reason-ask button[type=submit]"))
        .await
        .expect("the submit button")
        .click()
        .await
        .expect("a click on submit");
    let last = eventually("the reason in the history", || async {
        let h = app.get("/status/history?machine_id=press-01").await;
        let last = h
            .body
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_default();
        if last["status"] == "PAUSED" {
            Ok(last)
        } else {
            Err(h.body.to_string())
        }
    })
    .await;
    assert_eq!(last["reason"], "tool change");
    c.close().await.expect("the session closes");
}
