//! Bounded resources (SPEC §9), over raw sockets so that the test controls exactly what is
//! sent and when: the header read timeout, the connection cap, 413 before the body, the body
//! timeout, the open-file limit raised at start, and TLS.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millwatch::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestApp;

/// A server whose limits `tweak` sets.
async fn app(tweak: impl FnOnce(&mut millwatch::api::ServerOptions)) -> TestApp {
    TestApp::with(Arc::new(MemoryStore::new()), |s| {
        s.max_body = 1024;
        tweak(&mut s.server);
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// A new connection to `app` that has sent `bytes`.
async fn connect_sending(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Everything the server sends until it closes, or until `limit` passes (then `None`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The first response on `stream`, read up to the end of its headers, within `limit`.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("the connection reads");
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn stalled_headers_are_closed_after_the_header_timeout() {
    let app = app(|o| o.header_timeout = Duration::from_millis(600)).await;
    let start = Instant::now();
    let mut stalled = connect_sending(&app, b"GET /healthz HTTP/1.1\r\nHo").await;
    let got = read_until_closed(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled header is closed, not kept");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    assert!(
        !got.contains("200 OK"),
        "no answer to half a request: {got}"
    );

    // A client that sends its headers in time, even in pieces, is served.
    let mut prompt = connect_sending(&app, b"GET /healthz HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    prompt.write_all(b"st: 127.0.0.1\r\n\r\n").await.unwrap();
    let head = read_head(&mut prompt, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_503_and_closed() {
    let app = app(|o| o.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_sending(&app, GET_HEALTHZ).await;
        let head = read_head(&mut s, Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    let mut third = connect_sending(&app, GET_HEALTHZ).await;
    let got = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .expect("the refused connection is closed");
    let lower = got.to_ascii_lowercase();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(lower.contains("retry-after: "), "{got}");
    assert!(lower.contains("connection: close"), "{got}");
    assert!(got.contains("too many open connections"), "{got}");

    // Closing a held connection frees its place.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = app.get("/healthz").await;
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503);
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body() {
    let app = app(|_| {}).await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    // Headers only: the answer must come without a byte of the body.
    s.write_all(
        b"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    // At the limit the body is read and handled: here a bad reading, so 400, not 413.
    let body = format!("{{\"x\": \"{}\"}}", "a".repeat(1000));
    assert!(body.len() <= 1024);
    let a = app.post("/ingest", &body).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = app.post("/ingest", &"a".repeat(1025)).await;
    assert_eq!(a.status, 413, "{}", a.body);
}

/// Sends POST /ingest headers declaring 100 bytes, then `send` the body's bytes slowly.
async fn slow_body(app: &TestApp, drip: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(
        b"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"machine_id\"",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let (mut read, mut write) = s.into_split();
    let dripper = tokio::spawn(async move {
        if drip {
            // One byte every 200 ms: 87 bytes would take 17 s.
            for _ in 0..87 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if write.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(write);
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(8), read.read(&mut buf)).await {
            Err(_) => panic!("no answer to a stalled body: {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    dripper.abort();
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let app = app(|o| o.body_timeout = Duration::from_secs(1)).await;
    for drip in [false, true] {
        let (got, took) = slow_body(&app, drip).await;
        assert!(got.starts_with("HTTP/1.1 408"), "drip {drip}: {got}");
        assert!(got.contains("did not arrive within 1 s"), "{got}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "drip {drip}: answered after {took:?}"
        );
    }
    // A body that arrives in time is handled as usual.
    let a = app
        .post(
            "/ingest",
            r#"{"machine_id": "m-1", "timestamp": "2026-01-01T00:00:00Z", "t": 1.5}"#,
        )
        .await;
    assert!(a.status < 300, "{} {}", a.status, a.body);
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("sh runs");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$0\" serve --source none --store memory --listen 127.0.0.1:0",
        ])
        .arg(crate::serve_bin::bin())
        .env("MILLWATCH_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("open-file limit") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("serve logs the open-file limit");
    assert!(
        line.contains(&format!("open_files={hard}")),
        "hard limit {hard}; log: {line}"
    );
}

#[tokio::test]
async fn tls_serves_https_with_the_given_certificate() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let acceptor = millwatch::api::server::tls_acceptor(&cert, &key).expect("a usable pair");
    let app = app(|o| o.tls = Some(acceptor)).await;
    let port = addr(&app).rsplit(':').next().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(r.status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );

    // A key that is not the certificate's is refused at start, naming neither secret.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    let e = millwatch::api::server::tls_acceptor(&cert, &key)
        .err()
        .expect("a mismatch");
    assert!(e.to_string().contains("cannot be used"), "{e}");
    std::fs::write(&key, "not pem").unwrap();
    let e = millwatch::api::server::tls_acceptor(&cert, &key)
        .err()
        .expect("not PEM");
    assert!(e.to_string().contains("not a PEM private key"), "{e}");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_ends_event_streams() {
    let pipeline = millwatch::pipeline::Pipeline::new(
        5,
        millwatch::reading::MachineId::parse("machine-1").unwrap(),
    );
    let service = millwatch::service::Service::start(pipeline, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let state = millwatch::api::AppState::new(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(millwatch::api::run(listener, state, async move {
        let _ = stopped.await;
    }));

    let body = r#"{"machine_id": "m-1", "timestamp": "2026-01-01T00:00:00Z", "t": 1.5}"#;
    let mut inflight = TcpStream::connect(at).await.unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    inflight.write_all(head.as_bytes()).await.unwrap();
    inflight.write_all(&body.as_bytes()[..10]).await.unwrap();
    let events = reqwest::get(format!("http://{at}/events")).await.unwrap();
    assert_eq!(events.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(at).await.is_err(),
        "no new connection after shutdown"
    );
    // The request under way is still answered.
    inflight.write_all(&body.as_bytes()[10..]).await.unwrap();
    let answer = read_head(&mut inflight, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
    // The event stream ends, and with it the server.
    let mut events = events;
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await
    .expect("the event stream ends at shutdown");
    drop(inflight);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
