//! The dashboard for a first hour, in headless Chromium (see dashboard.rs for the driver): the
//! job status and what the machine reports are labelled apart on the card and in the detail
//! view; old (backfilled) data shows in the detail chart, with its span, a legend of the
//! latest values and times in one zone-named pattern; sparklines show their min and max; the
//! anomaly threshold and baseline are chosen in the detail view. Also, ignored by default, the
//! screenshots in docs/ (`cargo test --test it -- --ignored retake_screenshots`).

use std::time::Duration;

use fantoccini::Client;
use serde_json::{Value, json};

use crate::dashboard::{Driver, card_shows, eventually, js};
use crate::serve_bin::{Served, repo};
use crate::support::TestApp;

fn have_chromium() -> bool {
    !crate::dashboard::no_browser()
}

/// Text of the element matching `css` (inside the card of `machine` when given), or null.
const TEXT_OF: &str = r##"
    const root = arguments[1] ? document.querySelector(`.card[data-machine="${arguments[1]}"]`) : document;
    const e = root && root.querySelector(arguments[0]);
    return e ? e.innerText : null;"##;

async fn text_of(c: &Client, css: &str, machine: Option<&str>) -> Result<String, String> {
    match js(c, TEXT_OF, vec![json!(css), json!(machine)]).await {
        Value::String(s) => Ok(s),
        other => Err(format!("nothing at {css}: {other}")),
    }
}

/// Waits until the element at `css` contains `want`.
async fn shows(c: &Client, css: &str, machine: Option<&str>, want: &str) -> String {
    eventually(&format!("{css} to show {want:?}"), || async {
        let t = text_of(c, css, machine).await?;
        if t.contains(want) { Ok(t) } else { Err(t) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_and_machine_reports_are_named_apart_and_old_data_charts() {
    if !have_chromium() {
        return;
    }
    let app = TestApp::start().await;
    // The seed's readings of 2024 (machine-1, "status": RUNNING … PAUSED), and press-01 whose
    // readings say RUNNING while its job was only STARTED through the API.
    let seed = std::fs::read_to_string(repo().join("examples/data/data.json")).unwrap();
    assert_eq!(app.post("/ingest", &seed).await.status, 200);
    let press = r#"{"machine_id": "press-01", "temperature": 70.5, "status": "RUNNING"}"#;
    assert_eq!(app.post("/ingest", press).await.status, 200);
    app.set_status("press-01", "STARTED", 200).await;

    let driver = Driver::start();
    let c = driver.connect().await;
    c.goto(&app.base).await.unwrap();
    card_shows(&c, "press-01", "STARTED").await;
    // On the card: the badge is the job's, labelled so; the reading's status is under
    // "machine reports".
    assert_eq!(
        text_of(&c, ".job", Some("press-01"))
            .await
            .unwrap()
            .replace('\n', " "),
        "JOB STARTED"
    );
    assert_eq!(
        text_of(&c, "[data-kind=job]", Some("press-01"))
            .await
            .unwrap(),
        "STARTED"
    );
    let reports = text_of(&c, ".states", Some("press-01")).await.unwrap();
    assert!(
        reports.to_lowercase().contains("machine reports") && reports.contains("status: RUNNING"),
        "{reports}"
    );
    let meta = text_of(&c, ".card-meta", Some("press-01")).await.unwrap();
    assert!(meta.contains("job started for"), "{meta}");
    // machine-1's job was never set: IDLE, said so, while its readings say PAUSED.
    assert_eq!(
        text_of(&c, "[data-kind=job]", Some("machine-1"))
            .await
            .unwrap(),
        "IDLE"
    );
    assert!(
        text_of(&c, ".card-meta", Some("machine-1"))
            .await
            .unwrap()
            .contains("job status never set")
    );
    assert!(
        text_of(&c, ".states", Some("machine-1"))
            .await
            .unwrap()
            .contains("status: PAUSED")
    );
    // The sparkline's scale.
    assert_eq!(
        text_of(&c, "[data-param=temperature] .spark-max", Some("machine-1"))
            .await
            .unwrap(),
        "max 75"
    );
    assert_eq!(
        text_of(&c, "[data-param=temperature] .spark-min", Some("machine-1"))
            .await
            .unwrap(),
        "min 70"
    );

    // The detail view of press-01 names them apart too.
    c.goto(&format!("{}/#machine=press-01", app.base))
        .await
        .unwrap();
    shows(&c, "#detail-status", None, "STARTED").await;
    let head = text_of(&c, ".detail-head .job", None).await.unwrap();
    assert_eq!(head.replace('\n', " "), "JOB STARTED");
    shows(&c, ".reports", None, "status: RUNNING").await;

    // machine-1's readings are two years old: the 5-minute range ends at the latest one.
    c.goto(&format!(
        "{}/#machine=machine-1&param=temperature",
        app.base
    ))
    .await
    .unwrap();
    let span = shows(&c, "#chart-span", None, "ending at the latest reading").await;
    assert!(
        span.contains("2024-10-27 11:55:40 – 2024-10-27 12:00:40 UTC"),
        "{span}"
    );
    shows(&c, "#summary", None, "readings 5").await;
    // Five points drawn, and the legend shows the latest values without hovering.
    let drawn = js(
        &c,
        "return document.querySelectorAll('#chart canvas').length",
        vec![],
    )
    .await;
    assert_eq!(drawn, json!(1));
    let legend = shows(&c, "#legend", None, "temperature").await;
    assert!(
        legend.contains("latest 2024-10-27 12:00:40")
            && legend.contains("74")
            && legend.contains("72.4"),
        "{legend}"
    );
    assert!(!legend.contains("--"), "{legend}");
    // Times in the summary are in the one pattern (no locale), the zone named in the header.
    let summary = text_of(&c, "#summary", None).await.unwrap();
    assert!(
        summary.contains("max 75 (2024-10-27 12:00:20)"),
        "{summary}"
    );
    assert!(
        text_of(&c, "#zone", None)
            .await
            .unwrap()
            .contains("times in UTC")
    );
    // The hour before the latest reading, in buckets, finds them too.
    c.goto(&format!(
        "{}/#machine=machine-1&param=temperature&range=1h",
        app.base
    ))
    .await
    .unwrap();
    shows(
        &c,
        "#chart-span",
        None,
        "2024-10-27 11:00:40 – 2024-10-27 12:00:40 UTC",
    )
    .await;
    shows(&c, "#summary", None, "readings 5").await;
    shows(&c, "#legend", None, "temperature avg").await;
    // "all" takes everything stored.
    c.goto(&format!(
        "{}/#machine=machine-1&param=speed&range=all",
        app.base
    ))
    .await
    .unwrap();
    let span = shows(
        &c,
        "#chart-span",
        None,
        "2024-10-27 12:00:00 – 2024-10-27 12:00:40",
    )
    .await;
    assert!(!span.contains("ending at"), "{span}");
    shows(&c, "#anomaly-count", None, "(1)").await;
    // The threshold is chosen in the view: at ±50 % the speed of 50 is no anomaly.
    c.goto(&format!(
        "{}/#machine=machine-1&param=speed&range=all&threshold=0.5",
        app.base
    ))
    .await
    .unwrap();
    shows(&c, "#anomaly-count", None, "(0)").await;
    shows(&c, "#summary", None, "±50 % of the average of the range").await;
    let selected = js(&c, "return [document.getElementById('threshold').value, document.getElementById('baseline').value]", vec![]).await;
    assert_eq!(selected, json!(["0.5", "global"]));
    c.goto(&format!(
        "{}/#machine=machine-1&param=speed&range=all&baseline=moving",
        app.base
    ))
    .await
    .unwrap();
    shows(&c, "#summary", None, "of the moving average").await;
    c.close().await.ok();
}

/// Retakes docs/dashboard.png and docs/dashboard-detail.png: the default simulator (six
/// machines here) and the seed's data.json, as a first hour shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/*.png; run on purpose"]
async fn retake_screenshots() {
    if !have_chromium() {
        return;
    }
    let served = Served::start(&["--store", "memory", "--source", "simulate:5"]);
    let seed = std::fs::read_to_string(repo().join("examples/data/data.json")).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/ingest", served.base))
        .header("content-type", "application/json")
        .body(seed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A minute and a half of history for the sparklines and the chart.
    tokio::time::sleep(Duration::from_secs(90)).await;
    let driver = Driver::start();
    let c = driver.connect().await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&served.base).await.unwrap();
    card_shows(&c, "sim-saw-5", "producing").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(
        repo().join("docs/dashboard.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.goto(&format!(
        "{}/#machine=sim-press-1&param=temperature",
        served.base
    ))
    .await
    .unwrap();
    shows(&c, "#summary", None, "readings").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(
        repo().join("docs/dashboard-detail.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.close().await.ok();
}
