//! Where readings come from. Every kind of source is one file implementing [`Source`]: it
//! sends [`Batch`]es of parsed readings into a channel until it ends or the channel closes.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::reading::Parsed;

pub mod file;
pub mod http_poll;
pub mod mqtt;
pub mod simulate;

/// Readings that arrived together (one poll, one file chunk, one message), with their
/// positions.
#[derive(Debug, Default)]
pub struct Batch {
    /// Each reading, or why it was rejected.
    pub items: Vec<Parsed>,
    /// Where in the source they came from, for logs (an MQTT topic).
    pub origin: Option<std::sync::Arc<str>>,
    /// Told once the batch's records are stored (or printed); the source may then
    /// acknowledge it upstream. Dropped unsent when they were not.
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Batch {
    /// A batch with no origin and no acknowledgement.
    pub fn of(items: Vec<Parsed>) -> Self {
        Batch {
            items,
            origin: None,
            done: None,
        }
    }

    /// Splits the batch into its valid readings and its acknowledgement, logging each
    /// rejected reading (with the batch's origin) under `source`; also returns how many
    /// were rejected.
    pub fn split(
        self,
        source: &str,
    ) -> (
        Vec<crate::reading::Reading>,
        usize,
        Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let mut readings = Vec::with_capacity(self.items.len());
        let mut rejected = 0;
        for (position, reading) in self.items {
            match reading {
                Ok(r) => readings.push(r),
                Err(e) => {
                    rejected += 1;
                    match &self.origin {
                        Some(origin) => {
                            tracing::warn!(source, "{origin}: {position} rejected: {e}")
                        }
                        None => tracing::warn!(source, "{position} rejected: {e}"),
                    }
                }
            }
        }
        (readings, rejected, self.done)
    }

    /// Says the batch is done.
    pub fn finish(done: Option<tokio::sync::oneshot::Sender<()>>) {
        if let Some(d) = done {
            let _ = d.send(());
        }
    }
}

/// Why a source could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be opened at all (a missing file, a bad address).
    #[error("{0}")]
    Open(String),
    /// The source broke while it was being read.
    #[error("{0}")]
    Read(String),
}

/// A stream of reading batches.
pub trait Source: Send + 'static {
    /// Sends batches into `out` until the source ends (Ok) or fails. A closed channel means
    /// nobody listens any more: the source ends quietly.
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}

/// Settings every source takes.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Time between readings or polls; zero: as fast as possible.
    pub interval: Duration,
    /// The line-protocol tag naming the machine, for `.lp` files.
    pub machine_tag: String,
    /// The MQTT client id; default: derived from the host name.
    pub mqtt_client_id: Option<String>,
    /// The job statuses the simulator's MES moves (`serve`); none: its own (`ingest`).
    pub mes: Option<simulate::Mes>,
}

/// A source as named on the command line (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file of readings.
    File(PathBuf),
    /// An `http(s)://` URL polled every interval.
    HttpPoll(String),
    /// An MQTT subscription.
    Mqtt(mqtt::MqttSpec),
    /// The built-in simulator with this many machines.
    Simulate(usize),
    /// No source at all (`serve` with push only).
    None,
}

/// Most machines the simulator will play.
pub const MAX_SIMULATED_MACHINES: usize = 10_000;

impl SourceSpec {
    /// Reads `file.json`, `http(s)://…`, `simulate[:N]`, `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(SourceSpec::None);
        }
        if let Some(rest) = s.strip_prefix("simulate") {
            let n = match rest.strip_prefix(':') {
                None if rest.is_empty() => 3,
                Some(n) => n.parse::<usize>().map_err(|_| {
                    format!("{s:?}: the machine count after simulate: must be a number")
                })?,
                None => return Err(format!("{s:?}: write simulate or simulate:MACHINES")),
            };
            if n == 0 || n > MAX_SIMULATED_MACHINES {
                return Err(format!(
                    "{s:?}: simulate takes 1 to {MAX_SIMULATED_MACHINES} machines"
                ));
            }
            return Ok(SourceSpec::Simulate(n));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
            return Ok(SourceSpec::HttpPoll(s.to_owned()));
        }
        if s.starts_with("mqtt://") || s.starts_with("mqtts://") {
            return Ok(SourceSpec::Mqtt(mqtt::MqttSpec::parse(s)?));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "{scheme}:// sources are not supported: use a file, http(s)://, mqtt(s):// or simulate"
            ));
        }
        if s.is_empty() {
            return Err("the source is empty: give a file, a URL or simulate".into());
        }
        Ok(SourceSpec::File(PathBuf::from(s)))
    }

    /// Builds the source.
    pub fn build(&self, opts: &SourceOptions) -> Option<Box<dyn Source>> {
        let interval = opts.interval;
        match self {
            SourceSpec::File(path) => {
                Some(Box::new(file::FileSource::new(path.clone(), opts.clone())))
            }
            SourceSpec::HttpPoll(url) => {
                Some(Box::new(http_poll::HttpPoll::new(url.clone(), interval)))
            }
            SourceSpec::Simulate(n) => Some(Box::new(simulate::Simulator::new(
                *n,
                interval,
                opts.mes.clone(),
            ))),
            SourceSpec::Mqtt(spec) => Some(Box::new(mqtt::MqttSource::new(
                spec.clone(),
                opts.mqtt_client_id
                    .clone()
                    .unwrap_or_else(mqtt::default_client_id),
                &self.to_string(),
            ))),
            SourceSpec::None => None,
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::File(p) => write!(f, "{}", p.display()),
            SourceSpec::HttpPoll(u) => f.write_str(&crate::store::redact_url(u)),
            SourceSpec::Mqtt(m) => {
                let scheme = if m.tls { "mqtts" } else { "mqtt" };
                write!(f, "{scheme}://{}:{}/{}", m.host, m.port, m.filter)
            }
            SourceSpec::Simulate(n) => write!(f, "simulate:{n}"),
            SourceSpec::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(SourceSpec::parse("simulate"), Ok(SourceSpec::Simulate(3)));
        assert_eq!(
            SourceSpec::parse("simulate:50"),
            Ok(SourceSpec::Simulate(50))
        );
        assert_eq!(SourceSpec::parse("none"), Ok(SourceSpec::None));
        assert_eq!(
            SourceSpec::parse("data.json"),
            Ok(SourceSpec::File("data.json".into()))
        );
        assert!(matches!(
            SourceSpec::parse("http://127.0.0.1:9/x"),
            Ok(SourceSpec::HttpPoll(_))
        ));
        for bad in [
            "simulate:0",
            "simulate:x",
            "simulated",
            "ftp://x",
            "http://",
            "",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
