//! Access and browser safety (SPEC §9): every route under every credential, InfluxDB clients'
//! credentials, the Origin and Host checks, the security headers, protected mode, `token new`
//! and secrets kept out of the logs. The router on port 0, and the real binary where start-up
//! and logs are the point.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use millwatch::api::auth::{Access, Tokens, hash_token, new_secret};
use millwatch::store::memory::MemoryStore;
use reqwest::Method;
use serde_json::Value;

use crate::support::TestApp;

/// A token per role, and the auth file that holds them.
pub struct Creds {
    pub read: String,
    pub write: String,
    pub operate: String,
    pub admin: String,
    pub file: String,
}

impl Creds {
    pub fn new() -> Creds {
        let read = new_secret().unwrap();
        let write = new_secret().unwrap();
        let operate = new_secret().unwrap();
        let admin = new_secret().unwrap();
        let mut file = String::new();
        for (name, secret, role) in [
            ("reader", &read, "read"),
            ("gateway", &write, "write"),
            ("operator", &operate, "operate"),
            ("admin", &admin, "admin"),
        ] {
            file.push_str(&format!(
                "[[token]]\nname = \"{name}\"\nhash = \"{}\"\nroles = [\"{role}\"]\n\n",
                hash_token(secret)
            ));
        }
        Creds {
            read,
            write,
            operate,
            admin,
            file,
        }
    }

    pub fn access(&self, public_read: bool) -> Access {
        Access {
            tokens: Some(Arc::new(Tokens::parse(&self.file).unwrap())),
            public_read,
            allowed_hosts: vec![],
        }
    }
}

/// The router with `--auth` over a memory store.
pub async fn app_with(access: Access) -> TestApp {
    TestApp::with(Arc::new(MemoryStore::new()), move |s| s.access = access).await
}

/// Sends a request and returns its status and body; `/events` answers only its head.
pub(crate) async fn send(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = app
        .client
        .request(method.clone(), format!("{}{path}", app.base))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let head = resp.headers().clone();
    if path == "/events" && status == 200 {
        return (status, head, String::new());
    }
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the body arrives")
        .unwrap_or_default();
    (status, head, text)
}

/// What a route needs, stated here by hand (SPEC §9) rather than taken from the server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    Open,
    Read,
    Write,
    Operate,
    Admin,
}

/// What a caller with the route's role gets: an exact code, or anything but 401/403 for
/// routes that other work adds (alert rules), whose answers depend on it.
#[derive(Debug, Clone, Copy)]
enum Success {
    Code(u16),
    Passes,
}

struct Route {
    method: Method,
    path: &'static str,
    body: &'static str,
    ct: &'static str,
    needs: Needs,
    ok: Success,
}

fn routes() -> Vec<Route> {
    use Needs::*;
    use Success::*;
    let r = |method: Method, path, body, ct, needs, ok| Route {
        method,
        path,
        body,
        ct,
        needs,
        ok,
    };
    let json = "application/json";
    let text = "text/plain";
    vec![
        r(Method::GET, "/healthz", "", "", Open, Code(200)),
        r(Method::GET, "/", "", "", Open, Code(200)),
        r(Method::GET, "/assets/app.js", "", "", Open, Code(200)),
        r(Method::GET, "/assets/auth.js", "", "", Open, Code(200)),
        r(Method::GET, "/data", "", "", Read, Code(200)),
        r(Method::GET, "/data/latest", "", "", Read, Code(200)),
        r(Method::GET, "/status", "", "", Read, Code(200)),
        r(Method::GET, "/status/press-01", "", "", Read, Code(200)),
        r(Method::GET, "/status/history", "", "", Read, Code(200)),
        r(
            Method::GET,
            "/analytics?machine_id=press-01&parameter=temperature",
            "",
            "",
            Read,
            Code(200),
        ),
        r(Method::GET, "/events", "", "", Read, Code(200)),
        r(Method::GET, "/metrics", "", "", Read, Code(200)),
        r(Method::GET, "/openapi.json", "", "", Read, Code(200)),
        r(Method::GET, "/alerts", "", "", Read, Passes),
        r(Method::GET, "/alerts/rules", "", "", Read, Passes),
        r(
            Method::POST,
            "/analytics",
            r#"{"timestamps": [1, 2], "values": [3, 4]}"#,
            json,
            Read,
            Code(200),
        ),
        r(
            Method::POST,
            "/ingest",
            r#"{"machine_id": "press-01", "timestamp": 1, "temperature": 70}"#,
            json,
            Write,
            Code(200),
        ),
        r(
            Method::POST,
            "/write?db=plant",
            "m,machine_id=press-01 temperature=71 2000000000",
            text,
            Write,
            Code(204),
        ),
        r(
            Method::POST,
            "/api/v2/write?bucket=plant",
            "m,machine_id=press-01 temperature=72 3000000000",
            text,
            Write,
            Code(204),
        ),
        r(
            Method::POST,
            "/status",
            r#"{"machine_id": "press-01", "status": "STARTED"}"#,
            json,
            Operate,
            Code(200),
        ),
        r(
            Method::PUT,
            "/alerts/rules/hot",
            r#"{"name": "hot", "parameter": "temperature", "when": "above", "value": 90}"#,
            json,
            Admin,
            Passes,
        ),
        r(Method::DELETE, "/alerts/rules/hot", "", "", Admin, Passes),
    ]
}

#[tokio::test]
async fn every_route_under_every_credential() {
    let creds = Creds::new();
    let app = app_with(creds.access(false)).await;
    // press-01 with a temperature, so that GET /analytics has something to answer.
    let (s, _, b) = send(
        &app,
        &Method::POST,
        "/ingest",
        r#"{"machine_id": "press-01", "timestamp": 0, "temperature": 69}"#,
        &[
            ("authorization", &format!("Bearer {}", creds.write)),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let wrong = new_secret().unwrap();
    let who: [(&str, Option<&str>, &[Needs]); 6] = [
        ("no token", None, &[]),
        ("a wrong token", Some(&wrong), &[]),
        ("read", Some(&creds.read), &[Needs::Read]),
        ("write", Some(&creds.write), &[Needs::Write]),
        ("operate", Some(&creds.operate), &[Needs::Operate]),
        (
            "admin",
            Some(&creds.admin),
            &[Needs::Read, Needs::Write, Needs::Operate, Needs::Admin],
        ),
    ];
    let mut checked = 0;
    for route in routes() {
        for (name, token, grants) in &who {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![];
            if let Some(a) = &auth {
                headers.push(("authorization", a.as_str()));
            }
            if !route.ct.is_empty() {
                headers.push(("content-type", route.ct));
            }
            let (status, head, body) =
                send(&app, &route.method, route.path, route.body, &headers).await;
            let what = format!(
                "{} {} with {name}: {status} {body}",
                route.method, route.path
            );
            let allowed = route.needs == Needs::Open || grants.contains(&route.needs);
            if allowed {
                match route.ok {
                    Success::Code(c) => assert_eq!(status, c, "{what}"),
                    Success::Passes => assert!(status != 401 && status != 403, "{what}"),
                }
            } else if token.is_none() || *token == Some(wrong.as_str()) {
                assert_eq!(status, 401, "{what}");
                assert_eq!(
                    head.get("www-authenticate").and_then(|v| v.to_str().ok()),
                    Some("Bearer realm=\"millwatch\""),
                    "{what}"
                );
                let v: Value = serde_json::from_str(&body).expect("a JSON error");
                assert!(v["error"].is_string(), "{what}");
            } else {
                assert_eq!(status, 403, "{what}");
                let v: Value = serde_json::from_str(&body).expect("a JSON error");
                let msg = v["error"].as_str().unwrap_or_default();
                assert!(msg.contains("lacks the role"), "{what}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes().len() * who.len());
}

#[tokio::test]
async fn public_read_opens_gets_only() {
    let creds = Creds::new();
    let app = app_with(creds.access(true)).await;
    for route in routes() {
        let headers: Vec<(&str, &str)> = if route.ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", route.ct)]
        };
        let (status, _, body) = send(&app, &route.method, route.path, route.body, &headers).await;
        let what = format!(
            "{} {} without a token: {status} {body}",
            route.method, route.path
        );
        match route.needs {
            Needs::Open | Needs::Read => assert!(status != 401 && status != 403, "{what}"),
            _ => assert_eq!(status, 401, "{what}"),
        }
    }
}

/// The status of `press-01` as the API reports it.
pub(crate) async fn status_now(app: &TestApp, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (s, _, body) = send(app, &Method::GET, "/status/press-01", "", &headers).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_foreign_origin_changes_nothing() {
    // The default: no --auth, on loopback, where the attack of the issue worked.
    let app = TestApp::start().await;
    let body = r#"{"machine_id": "press-01", "status": "RUNNING"}"#;
    for ct in ["text/plain", "application/json"] {
        for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
            let (s, _, b) = send(
                &app,
                &Method::POST,
                "/status",
                body,
                &[("content-type", ct), ("origin", origin)],
            )
            .await;
            assert_eq!(s, 403, "{ct} from {origin}: {b}");
            assert!(b.contains("Origin"), "{b}");
        }
        let (s, _, b) = send(
            &app,
            &Method::POST,
            "/ingest",
            r#"{"machine_id": "press-01", "temperature": 1}"#,
            &[("content-type", ct), ("origin", "http://evil.example")],
        )
        .await;
        assert_eq!(s, 403, "{b}");
    }
    // Fetch Metadata from a browser that left Origin out.
    let (s, _, b) = send(
        &app,
        &Method::POST,
        "/status",
        body,
        &[
            ("content-type", "text/plain"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(status_now(&app, None).await, "IDLE");
    let (_, _, data) = send(&app, &Method::GET, "/data", "", &[]).await;
    assert_eq!(data, "[]", "no reading was stored");
    // The server's own origin, and no Origin at all (curl), pass.
    let own = app.base.clone();
    let (s, _, b) = send(
        &app,
        &Method::POST,
        "/status",
        body,
        &[("content-type", "application/json"), ("origin", &own)],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(status_now(&app, None).await, "RUNNING");
    let (s, _, b) = send(
        &app,
        &Method::POST,
        "/status",
        r#"{"machine_id": "press-01", "status": "PAUSED"}"#,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_foreign_origin_is_refused_even_with_a_token() {
    let creds = Creds::new();
    let app = app_with(creds.access(false)).await;
    let auth = format!("Bearer {}", creds.admin);
    let (s, _, b) = send(
        &app,
        &Method::POST,
        "/status",
        r#"{"machine_id": "press-01", "status": "RUNNING"}"#,
        &[
            ("content-type", "text/plain"),
            ("origin", "http://evil.example"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(status_now(&app, Some(&creds.read)).await, "IDLE");
}

#[tokio::test]
async fn a_foreign_host_is_refused() {
    let app = TestApp::start().await;
    let (s, _, b) = send(&app, &Method::GET, "/data", "", &[("host", "evil.example")]).await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b.contains("evil.example") && b.contains("--allowed-host"),
        "{b}"
    );
    let (s, _, b) = send(
        &app,
        &Method::GET,
        "/healthz",
        "",
        &[("host", "evil.example:8080")],
    )
    .await;
    assert_eq!(s, 403, "{b}");
    for ok in ["localhost:8080", "127.0.0.1", "[::1]:9", "10.0.0.5:8080"] {
        let (s, _, b) = send(&app, &Method::GET, "/data", "", &[("host", ok)]).await;
        assert_eq!(s, 200, "{ok}: {b}");
    }
    let allowed = TestApp::with(Arc::new(MemoryStore::new()), |s| {
        s.access.allowed_hosts = vec!["mill.example".into()]
    })
    .await;
    let (s, _, b) = send(
        &allowed,
        &Method::GET,
        "/data",
        "",
        &[("host", "mill.example:8080")],
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn security_headers_on_every_answer() {
    let app = TestApp::start().await;
    for path in ["/", "/data", "/nowhere", "/assets/app.js"] {
        let (_, head, _) = send(&app, &Method::GET, path, "", &[]).await;
        let h = |n: &str| {
            head.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let csp = h("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    }
    // The page itself has no inline script, handler or style for the policy to block.
    let (_, _, page) = send(&app, &Method::GET, "/", "", &[]).await;
    for (at, _) in page.match_indices("<script") {
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        assert!(tag.contains("src="), "an inline script: {tag}");
    }
    assert!(!page.contains("style="), "inline style");
    assert!(!page.contains("<style"), "inline style element");
    assert!(!page.contains(" onclick=") && !page.contains(" onload="));
}

#[tokio::test]
async fn influxdb_clients_credentials_are_taken_on_the_write_routes() {
    let creds = Creds::new();
    let app = app_with(creds.access(false)).await;
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{}", creds.write))
        )
    };
    let token = format!("Token {}", creds.write);
    let p = format!("/write?db=telegraf&u=telegraf&p={}", creds.write);
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: [Case; 3] = [
        ("u and p in the query (InfluxDB 1.x)", p.clone(), vec![]),
        (
            "Authorization: Token (InfluxDB 2.x)",
            "/api/v2/write?bucket=b&org=o".into(),
            vec![("authorization", token.as_str())],
        ),
        (
            "HTTP Basic (Telegraf's username and password)",
            "/write?db=telegraf".into(),
            vec![("authorization", basic.as_str())],
        ),
    ];
    for (i, (what, path, headers)) in cases.iter().enumerate() {
        let line = format!(
            "cpu,machine_id=tg-{i} temperature={}.5 1700000000000000000",
            60 + i
        );
        let (s, _, b) = send(&app, &Method::POST, path, &line, headers).await;
        assert_eq!(s, 204, "{what}: {b}");
    }
    let (s, _, body) = send(
        &app,
        &Method::GET,
        "/data",
        "",
        &[("authorization", &format!("Bearer {}", creds.read))],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let records: Vec<Value> = serde_json::from_str(&body).unwrap();
    let mut stored: Vec<(String, f64)> = records
        .iter()
        .map(|r| {
            (
                r["machine_id"].as_str().unwrap().to_owned(),
                r["temperature"].as_f64().unwrap(),
            )
        })
        .collect();
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        stored,
        vec![
            ("tg-0".into(), 60.5),
            ("tg-1".into(), 61.5),
            ("tg-2".into(), 62.5)
        ]
    );
    // A wrong password is a 401; the query credentials are not taken on other routes.
    let (s, _, _) = send(
        &app,
        &Method::POST,
        "/write?db=x&u=telegraf&p=nope",
        "cpu,machine_id=x v=1",
        &[],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = send(
        &app,
        &Method::GET,
        &format!("/data?p={}", creds.admin),
        "",
        &[],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = send(
        &app,
        &Method::GET,
        "/data",
        "",
        &[("authorization", &format!("Token {}", creds.admin))],
    )
    .await;
    assert_eq!(s, 401, "Token is for the write routes only");
}

/// Runs the binary to its end with a deadline; returns the exit code and stderr.
fn run_to_end(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not end: it was meant to refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn protected_mode_refuses_a_public_listen_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_to_end(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--source",
            "none",
            "--store",
            "sqlite:made.db",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        err.contains("--auth FILE") && err.contains("--insecure-no-auth"),
        "says what to do: {err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created on disk"
    );
    // A bad auth file is a usage error too, before anything is created.
    std::fs::write(dir.path().join("auth.toml"), "[[token]]\nname = \"x\"\n").unwrap();
    let (code, err) = run_to_end(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--auth",
            "auth.toml",
            "--store",
            "sqlite:made.db",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("auth.toml"), "{err}");
    assert!(!dir.path().join("made.db").exists());
}

/// A running `serve` whose stderr is collected, killed when dropped.
struct Server {
    child: std::process::Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["serve", "--log-format", "text"])
        .args(args)
        .env("MILLWATCH_LOG", "debug")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the server ended before listening: {}", log.lock().unwrap()))
            .unwrap();
        log.lock().unwrap().push_str(&line);
        log.lock().unwrap().push('\n');
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
        }
    };
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    Server { child, base, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_starts_with_a_warning() {
    let s = serve(
        &[
            "--listen",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--source",
            "none",
            "--store",
            "memory",
        ],
        &[],
    );
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("WITHOUT AUTHENTICATION"), "{log}");
    let port = s.base.rsplit(':').next().unwrap();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_new_output_parses_and_authenticates_and_no_secret_is_logged() {
    let out = Command::new(env!("CARGO_BIN_EXE_millwatch"))
        .args(["token", "new", "--name", "telegraf", "--role", "write"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, lines) = text.split_once('\n').unwrap();
    assert!(!token.is_empty() && !token.contains(' '), "{token:?}");
    let parsed: toml::Table = toml::from_str(lines).expect("the lines are TOML");
    let t = &parsed["token"].as_array().unwrap()[0];
    assert_eq!(t["name"].as_str(), Some("telegraf"));
    assert_eq!(t["roles"].as_array().unwrap().len(), 1);
    assert!(!lines.contains(token), "the file holds the hash only");

    let creds = Creds::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.toml");
    std::fs::write(&file, format!("{lines}\n{}", creds.file)).unwrap();
    let s = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--auth",
            file.to_str().unwrap(),
            "--source",
            "none",
            "--source",
            "mqtt://mw:mqttsecret@127.0.0.1:1/plant/+/telemetry",
            "--source",
            "http://poller:httpsecret@127.0.0.1:1/reading.json",
            "--interval",
            "200ms",
            "--store",
            "memory",
        ],
        &[("MILLWATCH_MQTT_PASSWORD", "envsecret")],
    );
    let client = reqwest::Client::new();
    let write = |path: String, line: &'static str| {
        client.post(format!("{}{path}", s.base)).body(line).send()
    };
    let r = write(
        format!("/write?db=t&u=telegraf&p={token}"),
        "m,machine_id=tg v=1 1",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let r = client
        .post(format!("{}/api/v2/write?bucket=b", s.base))
        .header("authorization", format!("Token {token}"))
        .body("m,machine_id=tg v=2 2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client
        .post(format!("{}/ingest", s.base))
        .header("authorization", format!("Bearer {token}"))
        .body(r#"{"machine_id": "tg", "timestamp": 3, "v": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The telegraf token cannot read or change statuses.
    let r = client
        .get(format!("{}/data", s.base))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .get(format!("{}/data?machine_id=tg", s.base))
        .bearer_auth(&creds.read)
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(records.len(), 3);
    // Refused attempts, so that their failure paths are in the log too.
    let _ = write(format!("/write?db=t&u=x&p={token}x"), "m v=1").await;
    let _ = client
        .get(format!("{}/data", s.base))
        .bearer_auth(format!("{token}y"))
        .send()
        .await;
    // The sources have had time to fail and log a retry or two.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = s.log.lock().unwrap().clone();
    assert!(
        log.contains("127.0.0.1:1"),
        "the sources logged their failures: {log}"
    );
    for secret in [token, &creds.read, "mqttsecret", "httpsecret", "envsecret"] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_is_not_logged() {
    let Some(url) = crate::pg::fresh_schema("auth").await else {
        return;
    };
    // Trust authentication ignores the password, which is only here to be hidden.
    let url = url.replacen("://postgres@", "://postgres:pgsecret@", 1);
    assert!(url.contains("pgsecret"), "{url}");
    let s = serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--source",
            "none",
            "--store",
            &url,
        ],
        &[],
    );
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("store=postgres://postgres:***@"), "{log}");
    assert!(!log.contains("pgsecret"), "{log}");
}
