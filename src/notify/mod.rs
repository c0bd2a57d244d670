//! Notifications (SPEC §7): each firing and each resolution, kept in the store's outbox until
//! its target took it. One task per target delivers its notifications oldest first, one at a
//! time, retrying the one at the head with back-off until the target answers 2xx (so they
//! arrive in order per (rule, machine), and per target too); only then is it removed from the
//! outbox. At least once: a crash after delivery and before the removal is durable delivers
//! that one again after the restart. Ingestion never waits for any of this.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::store::Store;
use crate::store::alerts::AlertWrite;

mod alertmanager;
mod mqtt;
mod webhook;

/// Why one delivery failed (it is tried again).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The target could not be reached or did not answer in time.
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    /// The target answered, but not with success.
    #[error("the target answered {0}")]
    Refused(String),
    /// The notification in the outbox is not an alert (damaged).
    #[error("the stored notification cannot be read: {0}")]
    Unreadable(String),
}

/// Delivers one notification body (an alert as JSON) to one target.
pub trait Notifier: Send + Sync + 'static {
    /// Sends it; Ok once the target has it.
    fn deliver<'a>(
        &'a self,
        alert: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// A place notifications go, as `--notify` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `webhook:URL`: a POST of the alert as JSON.
    Webhook(String),
    /// `alertmanager:URL`: Prometheus Alertmanager's API v2.
    Alertmanager(String),
    /// `mqtt://host:port/topic`: a QoS 1 publication.
    Mqtt(crate::sources::mqtt::MqttSpec, String),
}

impl Target {
    /// Reads `webhook:URL`, `alertmanager:URL` or `mqtt://host:port/topic`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let http = |url: &str, what: &str| {
            let u =
                reqwest::Url::parse(url).map_err(|e| format!("{what}:{url}: not a URL ({e})"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("{what}:{url}: the URL must be http:// or https://"));
            }
            Ok(url.to_owned())
        };
        if let Some(url) = s.strip_prefix("webhook:") {
            Ok(Target::Webhook(http(url, "webhook")?))
        } else if let Some(url) = s.strip_prefix("alertmanager:") {
            Ok(Target::Alertmanager(http(url, "alertmanager")?))
        } else if s.starts_with("mqtt://") || s.starts_with("mqtts://") {
            let spec = crate::sources::mqtt::MqttSpec::parse(s)?;
            if spec.filter.contains(['#', '+']) {
                return Err(format!("{s}: a topic to publish to has no wildcards"));
            }
            Ok(Target::Mqtt(spec, s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a notification target: use webhook:URL, alertmanager:URL or mqtt://host:port/topic"
            ))
        }
    }

    /// The target as given: what the outbox files its notifications under.
    pub fn key(&self) -> &str {
        match self {
            Target::Webhook(u) | Target::Alertmanager(u) => u,
            Target::Mqtt(_, s) => s,
        }
    }

    /// The target as it may be logged and shown in metrics: secrets hidden.
    pub fn label(&self) -> String {
        match self {
            Target::Webhook(u) => format!("webhook:{}", crate::store::redact_url(u)),
            Target::Alertmanager(u) => format!("alertmanager:{}", crate::store::redact_url(u)),
            Target::Mqtt(_, s) => crate::store::redact_url(s),
        }
    }

    /// The outbox's name for the target: its kind and its text, so that the same URL as a
    /// webhook and as Alertmanager are two targets.
    pub fn outbox_name(&self) -> String {
        match self {
            Target::Webhook(u) => format!("webhook:{u}"),
            Target::Alertmanager(u) => format!("alertmanager:{u}"),
            Target::Mqtt(_, s) => s.clone(),
        }
    }

    fn notifier(&self) -> Result<Arc<dyn Notifier>, NotifyError> {
        Ok(match self {
            Target::Webhook(u) => Arc::new(webhook::Webhook::new(u)?),
            Target::Alertmanager(u) => Arc::new(alertmanager::Alertmanager::new(u)?),
            Target::Mqtt(spec, _) => Arc::new(mqtt::MqttTarget::new(spec)),
        })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.label())
    }
}

/// A client for HTTP targets: a slow target is cut after 10 s and tried again.
pub(crate) fn http_client() -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| NotifyError::Unreachable(e.to_string()))
}

/// POSTs `body` as JSON to `url`; Ok on a 2xx answer.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), NotifyError> {
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .send()
        .await
        .map_err(|e| NotifyError::Unreachable(e.without_url().to_string()))?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(NotifyError::Refused(answer.status().to_string()))
    }
}

/// The back-off between tries of one notification: 200 ms doubling up to 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1 << failures.min(8))
        .min(Duration::from_secs(30))
}

/// Starts one delivery task per target. `wake` moves on when new notifications were queued.
pub fn spawn(
    store: Arc<dyn Store>,
    targets: &[Target],
    wake: tokio::sync::watch::Receiver<u64>,
) -> Result<(), NotifyError> {
    for t in targets {
        let notifier = t.notifier()?;
        tokio::spawn(deliver_all(
            store.clone(),
            t.outbox_name(),
            t.label(),
            notifier,
            wake.clone(),
        ));
    }
    Ok(())
}

/// Delivers the outbox of one target, forever.
async fn deliver_all(
    store: Arc<dyn Store>,
    name: String,
    label: String,
    notifier: Arc<dyn Notifier>,
    mut wake: tokio::sync::watch::Receiver<u64>,
) {
    let sent = metrics::counter!("millwatch_notifications_sent_total", "target" => label.clone());
    let failed =
        metrics::counter!("millwatch_notifications_failed_total", "target" => label.clone());
    let pending = metrics::gauge!("millwatch_notifications_pending", "target" => label.clone());
    let mut store_failures = 0;
    loop {
        // Marked seen before reading, so that a notification queued during the read wakes
        // the next wait.
        wake.borrow_and_update();
        let batch = match store.outbox(&name, 256).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(target = %label, error = %e, "cannot read the outbox; retrying");
                tokio::time::sleep(backoff(store_failures)).await;
                store_failures += 1;
                continue;
            }
        };
        store_failures = 0;
        pending.set(batch.len() as f64);
        if batch.is_empty() {
            // Woken by new notifications; the timeout is a safety net only.
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.changed()).await;
            continue;
        }
        for (done, n) in batch.iter().enumerate() {
            let mut failures = 0;
            loop {
                let result = match serde_json::from_str::<serde_json::Value>(&n.body) {
                    Ok(alert) => notifier.deliver(&alert).await,
                    Err(e) => Err(NotifyError::Unreadable(e.to_string())),
                };
                match result {
                    Ok(()) => break,
                    Err(NotifyError::Unreadable(e)) => {
                        tracing::error!(target = %label, id = n.id, error = %e, "a damaged notification is dropped");
                        break;
                    }
                    Err(e) => {
                        failed.increment(1);
                        if failures == 0 || failures % 10 == 0 {
                            tracing::warn!(target = %label, error = %e, tries = failures + 1, "notification not delivered; retrying");
                        }
                        tokio::time::sleep(backoff(failures)).await;
                        failures += 1;
                    }
                }
            }
            let mut tries = 0;
            while let Err(e) = store
                .write_alerts(AlertWrite {
                    delivered: vec![n.id],
                    ..AlertWrite::default()
                })
                .await
            {
                tracing::warn!(target = %label, error = %e, "cannot mark a notification delivered; retrying");
                tokio::time::sleep(backoff(tries)).await;
                tries += 1;
            }
            sent.increment(1);
            pending.set((batch.len() - done - 1) as f64);
        }
    }
}
