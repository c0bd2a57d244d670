//! Shared test scaffolding: the real router on a random loopback port.

use std::sync::Arc;

use millwatch::api::{self, AppState};
use millwatch::pipeline::Pipeline;
use millwatch::reading::MachineId;
use millwatch::service::Service;
use millwatch::store::Store;
use millwatch::store::memory::MemoryStore;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running server and a client for it; the server stops when this is dropped.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A response's status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::with(Arc::new(MemoryStore::new()), |_| {}).await
    }

    pub async fn with(store: Arc<dyn Store>, tweak: impl FnOnce(&mut AppState)) -> TestApp {
        let pipeline = Pipeline::new(5, MachineId::parse("machine-1").unwrap());
        let service = Service::start(pipeline, store)
            .await
            .expect("service starts");
        let mut state = AppState::new(service);
        tweak(&mut state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(api::run(
            listener,
            state,
            async move { s.cancelled().await },
        ));
        TestApp {
            base,
            client: reqwest::Client::new(),
            stop,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.post_as(path, body, "application/json").await
    }

    pub async fn post_as(&self, path: &str, body: &str, content_type: &str) -> Answer {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        answer(req.send().await.unwrap()).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Answer {
        answer(
            self.client
                .request(method, format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Sets a status and asserts the HTTP code.
    pub async fn set_status(&self, machine: &str, status: &str, want: u16) -> Answer {
        let a = self
            .post(
                "/status",
                &format!(r#"{{"machine_id": "{machine}", "status": "{status}"}}"#),
            )
            .await;
        assert_eq!(a.status, want, "{machine} -> {status}: {}", a.body);
        a
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        body,
        content_type,
    }
}
