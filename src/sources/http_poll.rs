//! An HTTP endpoint polled every interval; its body holds readings in any of the three forms.
//! Time-outs, refused connections and non-2xx answers are logged and retried at the next
//! interval: a gateway that reboots must not stop the service.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Batch, Source, SourceError};
use crate::reading::parse_all;

/// How long one poll may take at most.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed poll when polling as fast as possible.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Polls a URL with GET.
pub struct HttpPoll {
    url: String,
    interval: Duration,
}

impl HttpPoll {
    /// A source polling `url` every `interval` (zero: back to back).
    pub fn new(url: String, interval: Duration) -> Self {
        HttpPoll { url, interval }
    }
}

impl Source for HttpPoll {
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let timeout = if self.interval.is_zero() {
                MAX_TIMEOUT
            } else {
                self.interval.min(MAX_TIMEOUT)
            };
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("millwatch/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| SourceError::Open(format!("cannot build an HTTP client: {e}")))?;
            let mut ticker = tokio::time::interval(self.interval.max(Duration::from_nanos(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if !self.interval.is_zero() {
                    ticker.tick().await;
                }
                match poll(&client, &self.url).await {
                    Ok(bytes) => {
                        if out.send(Batch::of(parse_all(&bytes))).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(url = %crate::store::redact_url(&self.url), error = %e, "poll failed; retrying next interval");
                        if self.interval.is_zero() {
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                }
                if out.is_closed() {
                    return Ok(());
                }
            }
        })
    }
}

async fn poll(client: &reqwest::Client, url: &str) -> Result<bytes::Bytes, String> {
    // Errors without the URL: it may carry a password, and the caller names the source.
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| crate::chain::chain(&e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("the endpoint answered {status}"));
    }
    resp.bytes()
        .await
        .map_err(|e| crate::chain::chain(&e.without_url()))
}
