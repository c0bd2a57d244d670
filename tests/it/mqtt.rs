//! MQTT end to end: the real binary subscribed to a real broker. The normal path runs against
//! the local Mosquitto; the restart test starts its own Mosquitto with persistence on a free
//! port and restarts it mid-stream.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::crash::{JsonBody, start_server_with};

/// The broker for the normal path; override with MILLWATCH_TEST_MQTT (host:port).
pub(crate) fn local_broker() -> Option<(String, u16)> {
    let addr = std::env::var("MILLWATCH_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    if std::net::TcpStream::connect(&addr).is_err() {
        if std::env::var("MILLWATCH_SKIP_SERVICES").as_deref() == Ok("1") {
            eprintln!("skipping: no MQTT broker at {addr}");
            return None;
        }
        panic!(
            "no MQTT broker at {addr}. Start Mosquitto (scripts/test.sh does), point MILLWATCH_TEST_MQTT \
             at one, or set MILLWATCH_SKIP_SERVICES=1 to skip these tests."
        );
    }
    let (h, p) = addr.rsplit_once(':').unwrap();
    Some((h.to_owned(), p.parse().unwrap()))
}

/// A QoS 1 publisher whose event loop keeps reconnecting; counts PUBACKs.
struct Publisher {
    client: AsyncClient,
    acks: tokio::sync::watch::Receiver<usize>,
}

impl Publisher {
    fn start(host: &str, port: u16, id: &str) -> Publisher {
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(opts, 1000);
        let (tx, acks) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher { client, acks }
    }

    async fn publish(&self, topic: &str, payload: String) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    async fn wait_acks(&mut self, n: usize, within: Duration) {
        let waited = tokio::time::timeout(within, self.acks.wait_for(|&a| a >= n))
            .await
            .is_ok();
        assert!(
            waited,
            "only {} of {n} publishes acknowledged",
            *self.acks.borrow()
        );
    }
}

async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn data(base: &str, machine: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/data?machine_id={machine}&limit=10000"))
        .await
        .unwrap()
        .json_or_panic()
        .await
}

async fn wait_for_records(base: &str, machine: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = data(base, machine).await;
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_payload_forms_topic_machine_and_bad_payloads() {
    let Some((host, port)) = local_broker() else {
        return;
    };
    let prefix = format!("mwtest-{}", fastrand::u32(..));
    let source = format!("mqtt://{host}:{port}/{prefix}/+/telemetry");
    let client_id = format!("{prefix}-sub");
    let (mut server, base) = start_server_with(&[
        "--store",
        "memory",
        "--source",
        &source,
        "--mqtt-client-id",
        &client_id,
    ]);
    // Wait until the subscription is live: the connection gauge says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics_text(&base).await;
        if m.contains("millwatch_mqtt_connected")
            && m.lines()
                .any(|l| l.starts_with("millwatch_mqtt_connected") && l.ends_with(" 1"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never connected: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the SUBACK follows the CONNACK
    let mut publisher = Publisher::start(&host, port, &format!("{prefix}-pub"));
    let topic = format!("{prefix}/press-01/telemetry");
    publisher
        .publish(&topic, r#"{"timestamp": 1, "x": 1}"#.into())
        .await;
    publisher
        .publish(
            &topic,
            r#"[{"timestamp": 2, "x": 2}, {"timestamp": 3, "x": 3, "machine_id": "other-7"}]"#
                .into(),
        )
        .await;
    publisher
        .publish(
            &topic,
            "{\"timestamp\": 4, \"x\": 4}\n{\"timestamp\": 5, \"x\": 5}".into(),
        )
        .await;
    publisher.publish(&topic, "this is not json".into()).await;
    publisher
        .publish(
            &format!("{prefix}/press-01/telemetry"),
            r#"{"timestamp": 6, "x": true}"#.into(),
        )
        .await;
    publisher
        .publish(&topic, r#"{"timestamp": 7, "x": 7}"#.into())
        .await;
    publisher.wait_acks(6, Duration::from_secs(10)).await;

    let got = wait_for_records(&base, "press-01", 4, Duration::from_secs(10)).await;
    let xs: Vec<i64> = got.iter().map(|r| r["x"].as_i64().unwrap()).collect();
    assert_eq!(xs, vec![1, 2, 4, 5, 7][..xs.len().min(5)].to_vec());
    let got = wait_for_records(&base, "press-01", 5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
    assert_eq!(got[4]["x_avg"], (1.0 + 2.0 + 4.0 + 5.0 + 7.0) / 5.0);
    // A machine_id in the reading wins over the topic.
    assert_eq!(data(&base, "other-7").await.len(), 1);
    let metrics = metrics_text(&base).await;
    let rejected = metrics
        .lines()
        .find(|l| {
            l.starts_with("millwatch_readings_total")
                && l.contains("mqtt://")
                && l.contains("rejected")
        })
        .unwrap_or_else(|| panic!("no rejected count in {metrics}"));
    assert!(rejected.ends_with(" 2"), "{rejected}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// A Mosquitto of the test's own, with persistence, on a free loopback port.
struct Broker {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(dir: &std::path::Path, port: u16) -> Broker {
        // Started as root, mosquitto drops to its own user, which must be able to save here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\n",
                dir.display()
            ),
        )
        .unwrap();
        let mosquitto = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (apt-get install mosquitto)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Stops the broker as an operator would (SIGTERM: it saves its queues) and starts it
    /// again on the same port and data.
    fn restart(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let again = Broker::start(&self.dir.clone(), self.port);
        let old = std::mem::replace(self, again);
        std::mem::forget(old);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every published QoS 1 reading is processed exactly once and in order per machine, across a
/// broker restart in the middle of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_restart_mid_stream_loses_and_repeats_nothing() {
    if local_broker().is_none() {
        return; // the same switch: no MQTT here
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = Broker::start(dir.path(), port);
    let source = format!("mqtt://127.0.0.1:{port}/plant/+/telemetry");
    let (mut server, base) = start_server_with(&[
        "--store",
        "memory",
        "--source",
        &source,
        "--mqtt-client-id",
        "mw-restart-test",
    ]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut publisher = Publisher::start("127.0.0.1", port, "restart-test-pub");
    const N: i64 = 300;
    for i in 0..N {
        if i == N / 2 {
            publisher
                .wait_acks(i as usize * 2, Duration::from_secs(20))
                .await;
            broker.restart();
        }
        for machine in ["press-01", "lathe-02"] {
            let body = format!(r#"{{"timestamp": {}, "x": {i}}}"#, 1_700_000_000 + i);
            publisher
                .publish(&format!("plant/{machine}/telemetry"), body)
                .await;
        }
    }
    publisher
        .wait_acks(2 * N as usize, Duration::from_secs(30))
        .await;
    for machine in ["press-01", "lathe-02"] {
        let got = wait_for_records(&base, machine, N as usize, Duration::from_secs(30)).await;
        let xs: Vec<i64> = got.iter().map(|r| r["x"].as_i64().unwrap()).collect();
        assert_eq!(
            xs,
            (0..N).collect::<Vec<_>>(),
            "{machine}: every reading exactly once"
        );
        // In order: each moving average is the one of the previous five in sequence.
        for (i, r) in got.iter().enumerate() {
            let lo = i.saturating_sub(4);
            let want = xs[lo..=i].iter().sum::<i64>() as f64 / (i - lo + 1) as f64;
            assert_eq!(r["x_avg"].as_f64().unwrap(), want, "{machine} at {i}");
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
