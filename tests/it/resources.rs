//! Bounded resources under attack (SPEC §9), each bounded in time: an event-stream client that
//! reads nothing is dropped; fifty stalled bodies of 15 MiB are cut and their memory given
//! back; 1,100 idle connections under a 1,024-descriptor limit never make an ingest on an
//! existing connection fail.

use std::sync::Arc;
use std::time::Duration;

use millwatch::store::memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve_bin::Served;
use crate::support::TestApp;

/// `host:port` of a base URL.
fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// `count` readings of one machine, one a second from `first`, as an NDJSON body.
fn ndjson(machine: &str, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| {
            format!(
                "{{\"machine_id\":\"{machine}\",\"timestamp\":{},\"temperature\":{}.5,\"speed\":{}}}\n",
                1_767_225_600 + i,
                i % 97,
                i % 1000
            )
        })
        .collect()
}

/// A connection to `app` with a small receive window, so that the server's writes wait soon
/// when the test does not read.
async fn small_window(app: &TestApp) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(addr(&app.base).parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_stream_client_that_reads_nothing_is_dropped() {
    let app = TestApp::with(Arc::new(MemoryStore::new()), |s| {
        s.server.write_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stalled = small_window(&app).await;
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // About 10 MB of events: more than the socket buffers on both sides and hyper's own
    // buffer hold. Ingestion is never slowed by the client that does not read.
    let (batches, per_batch) = (120, 500);
    for b in 0..batches {
        let a = app
            .post_as(
                "/ingest",
                &ndjson("m-1", b * per_batch, per_batch),
                "application/x-ndjson",
            )
            .await;
        assert_eq!(a.status, 200, "batch {b}: {}", a.body);
    }
    // The write timeout passes while the server's writes wait.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    let events = text.matches("event: reading").count();
    assert!(
        closed.is_ok(),
        "the server kept the stalled stream open ({events} events read since)"
    );
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(
        events < batches * per_batch,
        "all {events} events were delivered: the client was never dropped"
    );
    // The server goes on serving.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_an_answer_is_cut_by_the_write_timeout() {
    let app = TestApp::with(Arc::new(MemoryStore::new()), |s| {
        s.server.write_timeout = Duration::from_secs(1);
    })
    .await;
    let a = app
        .post_as("/ingest", &ndjson("m-1", 0, 10_000), "application/x-ndjson")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut stalled = small_window(&app).await;
    // Ten answers of 10,000 records each, pipelined: far more than the socket buffers
    // hold, so the server's writes wait for a client that reads nothing.
    let get = "GET /data?machine_id=m-1&limit=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    stalled.write_all(get.repeat(10).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    // Without the write timeout the server would send everything and keep the connection
    // open for the next request.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    let whole = app.get("/data?machine_id=m-1&limit=10000").await;
    let one_answer = whole.body.to_string().len();
    assert!(
        closed.is_ok(),
        "the connection stayed open ({got} bytes read)"
    );
    assert!(
        got < 10 * one_answer,
        "{got} bytes arrived, all ten answers ({} bytes): nothing was cut",
        10 * one_answer
    );
}

/// Anonymous resident memory of process `pid`, in bytes.
fn anon_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon in /proc/PID/status")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_bodies_are_cut_and_their_memory_returned() {
    const MIB: usize = 1024 * 1024;
    let served = Served::start(&[
        "--source",
        "none",
        "--store",
        "memory",
        "--body-timeout",
        "4s",
    ]);
    let pid = served.pid();
    let at = addr(&served.base);
    // Warm up: the first requests allocate what every later one reuses.
    let body = ndjson("m-1", 0, 1000);
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(format!("{}/ingest", served.base))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = anon_rss(pid);

    // Fifty bodies declared 16,000,000 bytes (under the 16 MiB limit), 15 MiB sent, then
    // nothing: valid NDJSON so far, so nothing refuses them before the deadline.
    let chunk = ndjson("m-2", 0, 200);
    let payload: String = chunk.repeat(15 * MIB / chunk.len());
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&at).await.unwrap();
        let head = "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: 16000000\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(payload.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = anon_rss(pid);

    // Every one is answered 408 once its deadline passes.
    for (i, s) in stalled.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = tokio::time::timeout(Duration::from_secs(15), async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(answered.is_ok(), "body {i} was never cut");
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 408"), "body {i}: {head}");
    }
    drop(stalled);
    // The allocator gives freed memory back to the system after a short delay.
    let mut end = anon_rss(pid);
    for _ in 0..50 {
        if end <= start + 100 * MIB as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        end = anon_rss(pid);
    }
    eprintln!(
        "anonymous memory: start {} MiB, with 50 stalled bodies {} MiB, after {} MiB",
        start / MIB as u64,
        peak / MIB as u64,
        end / MIB as u64
    );
    assert!(
        end <= start + 100 * MIB as u64,
        "anonymous memory {} MiB after the bodies were cut, {} MiB before",
        end / MIB as u64,
        start / MIB as u64
    );
    assert_eq!(served.get("/healthz").await.0, 200);
}

/// Sends one request on `stream` and reads its answer (the body by its Content-Length);
/// returns the status, or `None` if the connection failed.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_descriptor_limit_never_fail_an_ingest() {
    // The test itself holds 1,100 connections.
    rlimit::increase_nofile_limit(4096).expect("the test can raise its own open-file limit");
    // The default SQLite store, in the server's temporary directory.
    let served = Served::start_limited(&["--source", "none"], 1024);
    let at = addr(&served.base);
    let log = served.log.lock().unwrap().clone();
    assert!(
        log.contains("connection cap lowered"),
        "the cap is fitted to the limit; log:\n{log}"
    );

    let mut open = TcpStream::connect(&at).await.unwrap();
    let ingest = |i: usize| {
        let body = ndjson("m-1", i * 10, 10);
        format!(
            "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(exchange(&mut open, ingest(0).as_bytes()).await, Some(200));

    // 1,100 connections that send nothing: some are served (and closed by the header
    // timeout), some refused; none may take a descriptor the store needs.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&at)).await {
            Ok(Ok(s)) => idle.push(s),
            _ => break,
        }
    }
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in 1..=50 {
        assert_eq!(
            exchange(&mut open, ingest(i).as_bytes()).await,
            Some(200),
            "ingest {i} on the existing connection, with {} idle ones",
            idle.len()
        );
    }
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let get = b"GET /data?machine_id=m-1&limit=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(exchange(&mut open, get).await, Some(200));
    let (status, body) = served.get("/data?machine_id=m-1&limit=10000").await;
    assert_eq!(status, 200);
    let stored = serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .map(Vec::len);
    assert_eq!(stored, Some(510), "every ingested reading is stored");
    let log = served.log.lock().unwrap().clone();
    assert!(
        !log.contains("Too many open files") || !log.contains("store"),
        "the store ran out of descriptors:\n{log}"
    );
}
