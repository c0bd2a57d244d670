//! The dashboard's alerts in headless Chromium: a firing alert appears live in the bar and as
//! a red edge on its machine's card, and both clear when it resolves.

use serde_json::{Value, json};

use crate::dashboard::{Driver, card_shows, eventually, js};
use crate::serve_bin::Served;

/// The alert bar's items and whether each card has the red edge.
const ALERT_VIEW: &str = r##"
    const bar = document.getElementById("alert-bar");
    return {
      bar: bar.hidden ? null : bar.innerText,
      trouble: [...document.querySelectorAll(".card.trouble")].map(c => c.dataset.machine),
    };"##;

async fn post(base: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/ingest"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_appears_on_the_dashboard_live_and_clears() {
    if crate::dashboard::no_browser() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"spindle-hot\"\nmachines = \"press-*\"\nparameter = \"temperature\"\nwhen = \"above\"\nvalue = 90\nseverity = \"critical\"\n",
    )
    .unwrap();
    let served = Served::start(&[
        "--source",
        "none",
        "--store",
        "memory",
        "--rules",
        rules.to_str().unwrap(),
    ]);
    post(&served.base, json!([{"machine_id": "press-01", "temperature": 70}, {"machine_id": "press-02", "temperature": 70}])).await;
    let driver = Driver::start();
    let c = driver.connect().await;
    c.goto(&format!("{}/", served.base))
        .await
        .expect("the page loads");
    card_shows(&c, "press-01", "70").await;
    let view = js(&c, ALERT_VIEW, vec![]).await;
    assert_eq!(
        view,
        json!({"bar": null, "trouble": []}),
        "nothing fires yet"
    );

    post(
        &served.base,
        json!({"machine_id": "press-01", "temperature": 95.5}),
    )
    .await;
    let view = eventually("the alert bar to show press-01 firing", || async {
        let v = js(&c, ALERT_VIEW, vec![]).await;
        match v["bar"].as_str() {
            Some(t) if t.contains("press-01") && t.contains("spindle-hot") => Ok(v),
            _ => Err(v.to_string()),
        }
    })
    .await;
    assert!(view["bar"].as_str().unwrap().contains("1 firing"), "{view}");
    assert_eq!(
        view["trouble"],
        json!(["press-01"]),
        "only the machine in trouble has the red edge"
    );

    post(
        &served.base,
        json!({"machine_id": "press-01", "temperature": 80}),
    )
    .await;
    eventually("the alert to clear", || async {
        let v = js(&c, ALERT_VIEW, vec![]).await;
        if v == json!({"bar": null, "trouble": []}) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    // A page opened while an alert fires shows it from GET /alerts.
    post(
        &served.base,
        json!({"machine_id": "press-02", "temperature": 99}),
    )
    .await;
    c.refresh().await.unwrap();
    eventually("a reloaded page to show press-02 firing", || async {
        let v = js(&c, ALERT_VIEW, vec![]).await;
        if v["trouble"] == json!(["press-02"]) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let _ = c.close().await;
}
