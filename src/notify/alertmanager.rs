//! `alertmanager:URL`: Prometheus Alertmanager's API v2, `POST /api/v2/alerts` with one
//! alert labelled `alertname`, `machine_id`, `severity` and `parameter`; `startsAt` when it
//! fired, `endsAt` once it resolved.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Notifier, NotifyError};

/// How far ahead a firing alert's `endsAt` is set. Alertmanager takes an alert without one as
/// over after its `resolve_timeout` (5 minutes by default), which would resolve a long firing
/// by itself; millwatch sends the resolution itself, so a firing alert holds until then.
const FIRING_HOLDS_DAYS: i64 = 365;

/// One Alertmanager target.
pub(crate) struct Alertmanager {
    url: String,
    client: reqwest::Client,
}

impl Alertmanager {
    /// A target at `base` (such as `http://127.0.0.1:9093`).
    pub(crate) fn new(base: &str) -> Result<Self, NotifyError> {
        Ok(Alertmanager {
            url: format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            client: super::http_client()?,
        })
    }
}

/// The Alertmanager form of an alert.
pub(crate) fn postable(alert: &Value) -> Result<Value, NotifyError> {
    let text = |k: &str| alert.get(k).and_then(Value::as_str);
    let (Some(rule), Some(machine), Some(fired)) =
        (text("rule"), text("machine_id"), text("fired_at"))
    else {
        return Err(NotifyError::Unreadable(
            "an alert without rule, machine_id or fired_at".into(),
        ));
    };
    let mut labels = json!({
        "alertname": rule,
        "machine_id": machine,
        "severity": text("severity").unwrap_or("warning"),
    });
    if let Some(p) = text("parameter") {
        labels["parameter"] = json!(p);
    }
    let ends = match text("resolved_at") {
        Some(r) => r.to_owned(),
        None => {
            let fired_at = chrono::DateTime::parse_from_rfc3339(fired)
                .map_err(|e| NotifyError::Unreadable(format!("fired_at: {e}")))?;
            (fired_at + chrono::Duration::days(FIRING_HOLDS_DAYS))
                .to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
    };
    let describe = |k: &str| alert.get(k).map(Value::to_string).unwrap_or_default();
    Ok(json!([{
        "labels": labels,
        "annotations": {
            "value": describe("value"),
            "bound": describe("bound"),
            "since": text("since").unwrap_or_default(),
        },
        "startsAt": fired,
        "endsAt": ends,
    }]))
}

impl Notifier for Alertmanager {
    fn deliver<'a>(&'a self, alert: &'a Value) -> BoxFuture<'a, Result<(), NotifyError>> {
        async move {
            let body = postable(alert)?;
            super::post_json(&self.client, &self.url, &body).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_holds_until_its_resolution_says_when_it_ended() {
        let firing = json!({"rule": "hot", "machine_id": "press-01", "parameter": "temperature",
            "state": "firing", "severity": "critical", "value": 95, "bound": 90,
            "since": "2026-01-01T00:00:00Z", "fired_at": "2026-01-01T00:00:30Z", "resolved_at": null});
        let p = postable(&firing).unwrap();
        assert_eq!(
            p[0]["labels"],
            json!({"alertname": "hot", "machine_id": "press-01", "severity": "critical", "parameter": "temperature"})
        );
        assert_eq!(p[0]["startsAt"], "2026-01-01T00:00:30Z");
        assert_eq!(p[0]["endsAt"], "2027-01-01T00:00:30Z");
        let mut resolved = firing.clone();
        resolved["resolved_at"] = json!("2026-01-01T00:05:00Z");
        assert_eq!(
            postable(&resolved).unwrap()[0]["endsAt"],
            "2026-01-01T00:05:00Z"
        );
        assert!(postable(&json!({"rule": "x"})).is_err());
    }
}
