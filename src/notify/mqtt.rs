//! `mqtt://host:port/topic`: the alert as JSON, published with QoS 1; delivered once the
//! broker's PUBACK came back.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{Mutex, mpsc};

use super::{Notifier, NotifyError};
use crate::sources::mqtt::MqttSpec;

/// How long a publication waits for its PUBACK before it is tried again.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One MQTT target: a client whose event loop runs on a task of its own.
pub(crate) struct MqttTarget {
    client: AsyncClient,
    topic: String,
    /// PUBACKs as they come. One publication is in flight at a time (the outbox delivers one
    /// by one), so the next PUBACK after a publish is its own.
    acks: Mutex<mpsc::UnboundedReceiver<u16>>,
}

impl MqttTarget {
    /// Connects (in the background, again and again while the broker is away).
    pub(crate) fn new(spec: &MqttSpec) -> Self {
        let id = format!("millwatch-notify-{}", std::process::id());
        let mut options = MqttOptions::new(id, spec.host.clone(), spec.port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = spec.login() {
            options.set_credentials(u, p);
        }
        if spec.tls {
            options.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Native));
        }
        let (client, mut events) = AsyncClient::new(options, 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let host = spec.host.clone();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if tx.send(ack.pkid).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(broker = %host, error = %e, "MQTT notification target unreachable");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        MqttTarget {
            client,
            topic: spec.filter.clone(),
            acks: Mutex::new(rx),
        }
    }
}

impl Notifier for MqttTarget {
    fn deliver<'a>(
        &'a self,
        alert: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        async move {
            let mut acks = self.acks.lock().await;
            // Acknowledgements of earlier tries that timed out: not this one's.
            while acks.try_recv().is_ok() {}
            let payload = serde_json::to_vec(alert).unwrap_or_default();
            self.client
                .publish(&self.topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| NotifyError::Unreachable(e.to_string()))?;
            match tokio::time::timeout(ACK_TIMEOUT, acks.recv()).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(NotifyError::Unreachable("the MQTT client stopped".into())),
                Err(_) => Err(NotifyError::Unreachable(
                    "no PUBACK from the broker in time".into(),
                )),
            }
        }
        .boxed()
    }
}
