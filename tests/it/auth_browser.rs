//! The dashboard with `--auth` in headless Chromium (see dashboard.rs for the driver): it
//! asks for a token once, keeps it for the session, follows `/events` with it and changes a
//! status; and the issue's cross-origin attack, run from a real page of another origin,
//! changes nothing.

use std::sync::Arc;

use millwatch::api::auth::{Access, Tokens, hash_token, new_secret};
use reqwest::Method;
use serde_json::Value;

use crate::auth::{Creds, app_with, send, status_now};
use crate::support::TestApp;

/// A page on another origin: a bare HTTP server on its own port, without any policy.
fn foreign_page() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let page = "<!doctype html><title>elsewhere</title><p>another site";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

/// Whether the sign-in form is showing, and its message.
const LOGIN: &str = r##"const o = document.getElementById("login-overlay");
    return o && !o.hidden ? document.getElementById("login-message").textContent : null;"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_with_a_token_and_follows_live_events() {
    use crate::dashboard::{Driver, card_shows, eventually, js};
    use fantoccini::Locator;
    use serde_json::json;
    if crate::dashboard::no_browser() {
        return;
    }
    let creds = Creds::new();
    let operators = new_secret().unwrap();
    let file = format!(
        "{}[[token]]\nname = \"operators\"\nhash = \"{}\"\nroles = [\"read\", \"operate\"]\n",
        creds.file,
        hash_token(&operators)
    );
    let app = app_with(Access {
        tokens: Some(Arc::new(Tokens::parse(&file).unwrap())),
        public_read: false,
        allowed_hosts: vec![],
    })
    .await;
    let gateway = format!("Bearer {}", creds.write);
    let ingest = |body: &'static str| {
        let app = &app;
        let gateway = gateway.clone();
        async move {
            let (s, _, b) = send(
                app,
                &Method::POST,
                "/ingest",
                body,
                &[
                    ("authorization", &gateway),
                    ("content-type", "application/json"),
                ],
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
    };
    ingest(r#"{"machine_id": "press-01", "temperature": 70.25}"#).await;

    let driver = Driver::start();
    let c = driver.connect().await;
    c.goto(&format!("{}/", app.base))
        .await
        .expect("the page loads");
    // The page asks for a token; a wrong one is refused and the form comes back.
    let first = eventually("the sign-in form", || async {
        match js(&c, LOGIN, vec![]).await {
            Value::String(m) => Ok(m),
            v => Err(v.to_string()),
        }
    })
    .await;
    assert!(first.contains("needs an access token"), "{first}");
    let sign_in = |token: String| {
        let c = &c;
        async move {
            let input = c
                .find(Locator::Id("login-token"))
                .await
                .expect("the token field");
            input.send_keys(&token).await.expect("typing the token");
            c.find(Locator::Css("#login button[type=submit]"))
                .await
                .expect("the sign-in button")
                .click()
                .await
                .expect("a click on sign in");
        }
    };
    sign_in(format!("{}x", operators)).await;
    eventually("the form to come back after a wrong token", || async {
        match js(&c, LOGIN, vec![]).await {
            Value::String(m) if m.contains("refused") => Ok(()),
            v => Err(v.to_string()),
        }
    })
    .await;
    // A token that cannot read (the gateway's) is no use to the page: the form asks again.
    sign_in(creds.write.clone()).await;
    eventually("the form to come back after a write-only token", || async {
        match js(&c, LOGIN, vec![]).await {
            Value::String(m) if m.contains("cannot read") => Ok(()),
            v => Err(v.to_string()),
        }
    })
    .await;
    sign_in(operators.clone()).await;

    // Signed in: the snapshot, then the live stream (fetch with the token, not EventSource).
    card_shows(&c, "press-01", "70.25").await;
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
    assert_eq!(js(&c, LOGIN, vec![]).await, Value::Null, "the form is gone");
    // Violations of the content security policy from here on are recorded.
    js(
        &c,
        r##"window.cspViolations = [];
           document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));"##,
        vec![],
    )
    .await;
    ingest(r#"{"machine_id": "press-01", "temperature": 88.5}"#).await;
    card_shows(&c, "press-01", "88.5").await;

    // Once per session: a reload does not ask again, and the token is in sessionStorage only,
    // never in a URL the page fetched.
    c.refresh().await.expect("reload");
    card_shows(&c, "press-01", "88.5").await;
    assert_eq!(js(&c, LOGIN, vec![]).await, Value::Null, "not asked again");
    let kept = js(
        &c,
        r##"return [sessionStorage.getItem("millwatch.token"), localStorage.length, document.cookie,
                   performance.getEntriesByType("resource").map(e => e.name).concat([location.href])];"##,
        vec![],
    )
    .await;
    assert_eq!(kept[0], json!(operators));
    assert_eq!(kept[1], json!(0), "nothing in localStorage");
    assert_eq!(kept[2], json!(""), "no cookie");
    for url in kept[3].as_array().unwrap() {
        assert!(!url.as_str().unwrap().contains(&operators), "{url}");
    }
    js(
        &c,
        r##"window.cspViolations = [];
           document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));"##,
        vec![],
    )
    .await;

    // A status button changes the job status through the API.
    c.find(Locator::Css(r##".card[data-machine="press-01"]"##))
        .await
        .expect("the card")
        .click()
        .await
        .expect("a click on the card");
    let button = r##"#status-buttons button[data-status="STARTED"]"##;
    eventually("the STARTED button", || async {
        let n = js(
            &c,
            &format!("return document.querySelectorAll('{button}').length;"),
            vec![],
        )
        .await;
        if n == json!(1) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    c.find(Locator::Css(button))
        .await
        .expect("the button")
        .click()
        .await
        .expect("a click on STARTED");
    eventually("press-01 to be STARTED in the API", || async {
        let s = status_now(&app, Some(&creds.read)).await;
        if s == "STARTED" { Ok(()) } else { Err(s) }
    })
    .await;
    card_shows(&c, "press-01", "STARTED").await;
    eventually("the chart in the detail view", || async {
        let n = js(
            &c,
            "return document.querySelectorAll('#chart .uplot canvas').length;",
            vec![],
        )
        .await;
        if n.as_u64() > Some(0) {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    let violations = js(&c, "return window.cspViolations;", vec![]).await;
    assert_eq!(violations, json!([]), "the page keeps to its policy");

    // The attack of issue 16, in the browser: a page of another origin posts a status change
    // with `no-cors` and text/plain to the loopback default (no --auth). It changes nothing.
    let victim = TestApp::start().await;
    let evil = foreign_page();
    c.goto(&evil).await.expect("the foreign page loads");
    let sent = c
        .execute_async(
            r##"const done = arguments[arguments.length - 1];
               fetch(arguments[0] + "/status", {method: "POST", mode: "no-cors",
                 headers: {"content-type": "text/plain"},
                 body: JSON.stringify({machine_id: "press-01", status: "RUNNING"})})
               .then(() => done("sent"), (e) => done("failed: " + e));"##,
            vec![json!(victim.base)],
        )
        .await
        .expect("the script runs");
    assert_eq!(
        sent,
        json!("sent"),
        "the browser sent it (an opaque answer)"
    );
    assert_eq!(
        status_now(&victim, None).await,
        "IDLE",
        "and nothing changed"
    );
    c.close().await.expect("the session closes");
    drop(driver);
}
