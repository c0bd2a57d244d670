//! MQTT: `mqtt://[user:pass@]host:port/topic-filter` (or `mqtts://` for TLS), QoS 1, a
//! persistent session under a stable client id, reconnecting with backoff.
//!
//! The acknowledgement to the broker (PUBACK) goes out only after the message's readings are
//! stored (or, in `ingest`, printed): at least once end to end, and with the duplicate rule
//! of SPEC §2, exactly once in effect. A message whose readings could not be stored is not
//! acknowledged, so the broker delivers it again after the next reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{mpsc, oneshot};

use super::{Batch, Source, SourceError};
use crate::reading::{MachineId, parse_all};

/// A parsed `mqtt://` source. Its Debug form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttSpec {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
    /// The topic filter to subscribe to, such as `plant/+/telemetry` or `plant/#`.
    pub filter: String,
}

impl std::fmt::Debug for MqttSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSpec")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("filter", &self.filter)
            .finish()
    }
}

/// The variable that gives the MQTT password when the URL names a user without one, so that
/// the password is not on the command line (where `ps` shows it).
pub const PASSWORD_ENV: &str = "MILLWATCH_MQTT_PASSWORD";

impl MqttSpec {
    /// The user name and password to log in with: the URL's, the password from
    /// [`PASSWORD_ENV`] when the URL gives a user but no password.
    pub fn login(&self) -> Option<(String, String)> {
        self.login_with(std::env::var(PASSWORD_ENV).ok())
    }

    fn login_with(&self, from_env: Option<String>) -> Option<(String, String)> {
        let (user, password) = self.credentials.clone()?;
        match from_env {
            Some(p) if password.is_empty() => Some((user, p)),
            _ => Some((user, password)),
        }
    }

    /// Reads `mqtt[s]://[user:pass@]host[:port]/topic-filter`. The filter is taken verbatim
    /// (a `#` is not a URL fragment here); `%23` and `%2B` also stand for `#` and `+`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("{s:?} is not an mqtt:// or mqtts:// URL"));
        };
        let (authority, filter) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: add the topic filter after the host, as in mqtt://host:1883/plant/+/telemetry"))?;
        let filter = filter
            .replace("%23", "#")
            .replace("%2B", "+")
            .replace("%2b", "+");
        if filter.is_empty() {
            return Err(format!("{s:?}: the topic filter is empty"));
        }
        let valid_filter = filter.split('/').enumerate().all(|(i, level)| {
            let last = i == filter.split('/').count() - 1;
            match level {
                "#" => last,
                "+" => true,
                l => !l.contains('#') && !l.contains('+'),
            }
        });
        if !valid_filter {
            return Err(format!("{filter:?} is not a valid MQTT topic filter"));
        }
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((cred, hp)) => {
                let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, authority),
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: {p:?} is not a port"))?,
            ),
            None => (hostport, default_port),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: the broker host is missing"));
        }
        Ok(MqttSpec {
            host: host.to_owned(),
            port,
            tls,
            credentials,
            filter,
        })
    }

    /// The machine named by the topic level that the filter's first `+` matched.
    pub fn machine_from_topic(&self, topic: &str) -> Option<MachineId> {
        let at = self.filter.split('/').position(|l| l == "+")?;
        MachineId::parse(topic.split('/').nth(at)?).ok()
    }
}

/// The default client id: stable across restarts of the same host, so the broker keeps the
/// session (and the messages queued while millwatch was away).
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    format!("millwatch-{host}")
}

/// Subscribes to a broker.
pub struct MqttSource {
    spec: MqttSpec,
    client_id: String,
    name: Arc<str>,
}

impl MqttSource {
    /// A source for `spec` under `client_id`.
    pub fn new(spec: MqttSpec, client_id: String, name: &str) -> Self {
        MqttSource {
            spec,
            client_id,
            name: Arc::from(name),
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Source for MqttSource {
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let spec = self.spec;
            let mut options =
                MqttOptions::new(self.client_id.clone(), spec.host.clone(), spec.port);
            options
                .set_keep_alive(Duration::from_secs(30))
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
            if let Some((u, p)) = spec.login() {
                options.set_credentials(u, p);
            }
            if spec.tls {
                options.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Native));
            }
            let (client, mut events) = AsyncClient::new(options, 64);
            // PUBACKs go out in order of receipt, each once its batch is done.
            let (ack_tx, mut ack_rx) =
                mpsc::unbounded_channel::<(rumqttc::Publish, oneshot::Receiver<()>)>();
            let acker = client.clone();
            let name = self.name.clone();
            tokio::spawn(async move {
                while let Some((publish, done)) = ack_rx.recv().await {
                    if done.await.is_ok()
                        && let Err(e) = acker.ack(&publish).await
                    {
                        tracing::warn!(source = %name, error = %e, "cannot acknowledge");
                    }
                }
            });
            let mut backoff = Duration::from_millis(500);
            let connected =
                metrics::gauge!("millwatch_mqtt_connected", "source" => self.name.to_string());
            connected.set(0.0);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        backoff = Duration::from_millis(500);
                        connected.set(1.0);
                        tracing::info!(source = %self.name, session_present = ack.session_present, "connected to the broker");
                        if !ack.session_present
                            && let Err(e) = client
                                .subscribe(spec.filter.clone(), QoS::AtLeastOnce)
                                .await
                        {
                            return Err(SourceError::Open(format!(
                                "cannot subscribe to {}: {e}",
                                spec.filter
                            )));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut items = parse_all(&publish.payload);
                        let topic_machine = spec.machine_from_topic(&publish.topic);
                        for (_, r) in &mut items {
                            if let Ok(r) = r
                                && r.machine_id.is_none()
                            {
                                r.machine_id = topic_machine.clone();
                            }
                        }
                        let (done_tx, done_rx) = oneshot::channel();
                        let origin = Some(Arc::from(format!("topic {}", publish.topic)));
                        if out
                            .send(Batch {
                                items,
                                origin,
                                done: Some(done_tx),
                            })
                            .await
                            .is_err()
                        {
                            return Ok(());
                        }
                        let _ = ack_tx.send((publish, done_rx));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected.set(0.0);
                        if out.is_closed() {
                            return Ok(());
                        }
                        let error = crate::chain::chain(&e);
                        tracing::warn!(source = %self.name, %error, retry_in = ?backoff, "broker connection lost");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_from_the_environment_only_when_the_url_has_none() {
        let env = || Some("from-env".to_owned());
        let with = MqttSpec::parse("mqtt://mw:inurl@b:1883/t").unwrap();
        assert_eq!(with.login_with(env()), Some(("mw".into(), "inurl".into())));
        let without = MqttSpec::parse("mqtt://mw@b:1883/t").unwrap();
        assert_eq!(
            without.login_with(env()),
            Some(("mw".into(), "from-env".into()))
        );
        assert_eq!(without.login_with(None), Some(("mw".into(), String::new())));
        let anonymous = MqttSpec::parse("mqtt://b:1883/t").unwrap();
        assert_eq!(anonymous.login_with(env()), None);
        assert!(!format!("{with:?}").contains("inurl"), "{with:?}");
        let name = super::super::SourceSpec::Mqtt(with).to_string();
        assert!(!name.contains("inurl"), "{name}");
    }

    #[test]
    fn urls() {
        let s = MqttSpec::parse("mqtt://user:p%40ss@broker.local:1884/plant/+/telemetry").unwrap();
        assert_eq!(s.host, "broker.local");
        assert_eq!(s.port, 1884);
        assert!(!s.tls);
        assert_eq!(s.credentials, Some(("user".into(), "p%40ss".into())));
        assert_eq!(s.filter, "plant/+/telemetry");
        let s = MqttSpec::parse("mqtts://broker/plant/#").unwrap();
        assert_eq!((s.port, s.tls, s.filter.as_str()), (8883, true, "plant/#"));
        assert_eq!(
            MqttSpec::parse("mqtt://127.0.0.1:1883/a/%23")
                .unwrap()
                .filter,
            "a/#"
        );
        for bad in [
            "mqtt://host",
            "mqtt://host:x/t",
            "mqtt:///t",
            "mqtt://h/a/#/b",
            "mqtt://h/a+/b",
            "http://h/t",
        ] {
            assert!(MqttSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn machine_from_the_first_plus() {
        let s = MqttSpec::parse("mqtt://h/plant/+/+/data").unwrap();
        assert_eq!(
            s.machine_from_topic("plant/press-01/line-2/data")
                .unwrap()
                .as_str(),
            "press-01"
        );
        assert_eq!(s.machine_from_topic("plant/bad id/x/data"), None);
        let s = MqttSpec::parse("mqtt://h/plant/#").unwrap();
        assert_eq!(s.machine_from_topic("plant/press-01"), None);
    }
}
