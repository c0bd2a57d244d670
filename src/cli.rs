//! The command line (SPEC §3): clap definitions for `ingest`, `analyze` and `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::reading::MachineId;
use crate::sources::SourceSpec;
use crate::store::StoreSpec;
use crate::store::sqlite::Durability;

/// Machine telemetry in one binary: ingest readings, keep moving averages, track job status,
/// answer analytics questions, store it all durably and show it live.
#[derive(Debug, Parser)]
#[command(name = "millwatch", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Which logs to write to stderr, as a tracing filter: error, warn, info, debug, or per
    /// module such as "info,millwatch::sources=debug".
    #[arg(long, global = true, env = "MILLWATCH_LOG", default_value = "info")]
    pub log: String,

    /// How logs are written: text for people, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a source and print one processed record per line (NDJSON) on stdout.
    ///
    /// Every reading comes out with a moving average of each numeric parameter (the field
    /// P_avg). A reading that fails validation is reported on stderr with its position and
    /// the reason and skipped; a finite source then exits 1. Ctrl-C stops cleanly.
    Ingest(IngestArgs),
    /// Summarise a series: count, average, min, max and anomalies, as JSON.
    ///
    /// FILE is a series ({"timestamps": [...], "values": [...]} or {"series": [...]}), or
    /// readings in any form (object, array, NDJSON, CSV in a .csv file, line protocol in a .lp
    /// file): every numeric parameter, or those --parameter names.
    Analyze(AnalyzeArgs),
    /// Run the service: sources, HTTP API, dashboard and store in one process.
    Serve(Box<ServeArgs>),
    /// Make access tokens for `serve --auth FILE`.
    Token(crate::token::TokenArgs),
    /// Write every stored record in a range to CSV, NDJSON or Parquet, oldest first.
    ///
    /// Reads any store a page at a time, in constant memory; a progress bar shows on a
    /// terminal.
    Export(crate::export::ExportArgs),

    /// Alert rules offline.
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

/// The subcommands of `alerts`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Print, as NDJSON, the firings and resolutions that replaying FILE's readings through
    /// the rules would make (stale rules measured in reading time); the same file gives the
    /// same output every time.
    Check(AlertsCheckArgs),
}

/// Arguments of `alerts check`.
#[derive(Debug, Args)]
pub struct AlertsCheckArgs {
    /// A file of readings (object, array, NDJSON, CSV in a .csv file, line protocol in .lp).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The rules (TOML, [[rule]] tables as for serve --rules).
    #[arg(long, value_name = "RULES", value_parser = parse_rules_file)]
    pub rules: RulesFile,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// A checked rules file.
#[derive(Debug, Clone)]
pub struct RulesFile(pub Vec<crate::core::alerts::Rule>);

/// Reads and checks a rules file (`serve --rules`, `alerts check --rules`); the error names
/// the rule and the field.
pub fn parse_rules_file(path: &str) -> Result<RulesFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    crate::core::alerts::parse_rules_file(&text)
        .map(RulesFile)
        .map_err(|e| format!("{path}: {e}"))
}

/// How readings come in and become records: shared by every command that ingests.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// How many of the latest values of each (machine, parameter) the moving average covers.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,

    /// The machine that readings without "machine_id" belong to.
    #[arg(long, env = "MILLWATCH_MACHINE", default_value = "machine-1", value_parser = MachineId::parse)]
    pub machine: MachineId,

    /// In InfluxDB line protocol (POST /write, .lp files): the tag that names the machine;
    /// points without it fall back to the tag "host".
    #[arg(long, default_value = "machine_id")]
    pub machine_tag: String,

    /// The zone in which timestamps without an offset are read (and shifts are laid out): an
    /// IANA name such as Europe/Berlin. A local time that a DST change makes ambiguous takes
    /// the earlier instant; one that does not exist is rejected.
    #[arg(long, env = "MILLWATCH_TIMEZONE", default_value = "UTC", value_parser = parse_timezone)]
    pub timezone: chrono_tz::Tz,

    /// The MQTT client id for mqtt:// sources. Keep it stable: the broker keeps the session
    /// and queues messages for it while millwatch is away. Default: millwatch-HOSTNAME.
    #[arg(long, env = "MILLWATCH_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
}

/// Arguments of `ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Where readings come from: a file (one JSON object re-read every interval, or a JSON
    /// array or NDJSON replayed one reading per interval), an http(s):// URL polled every
    /// interval, mqtt://[user:pass@]host:port/topic-filter (or mqtts:// for TLS; with
    /// mqtt://user@host… the password comes from MILLWATCH_MQTT_PASSWORD), or
    /// simulate[:MACHINES].
    #[arg(value_name = "SOURCE", value_parser = SourceSpec::parse)]
    pub source: SourceSpec,

    /// Time between readings (or polls): 10s, 500ms, 1m. 0 takes everything as fast as it
    /// can; a file is then read once.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Also keep the records in a store (sqlite:FILE, postgres://…): each record is printed
    /// only once it is durable. Useful to backfill a file into the service's store.
    #[arg(long, value_parser = StoreSpec::parse)]
    pub store: Option<StoreSpec>,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// How stores acknowledge writes: shared by `serve` and `ingest --store`.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// full: every acknowledged write is fsync'd and survives a power cut. process: writes
    /// survive kill -9 of the process but not a power cut; faster.
    #[arg(long, value_enum, env = "MILLWATCH_DURABILITY", default_value_t = Durability::Full)]
    pub durability: Durability,

    /// Start even if the SQLite store's log is damaged in the middle (a commit frame that
    /// fails its checksum with valid ones after it, from a failing disk or a copy cut short):
    /// keep every valid frame and log what was dropped. Without it, such a start is refused
    /// with the file, the offset and how many commits follow, so that someone can look first.
    #[arg(long, env = "MILLWATCH_RECOVER_DAMAGED")]
    pub recover_damaged: bool,
}

impl StorageArgs {
    /// What the store does with a damaged log at start.
    pub fn on_damage(&self) -> crate::store::OnDamage {
        if self.recover_damaged {
            crate::store::OnDamage::KeepIntact
        } else {
            crate::store::OnDamage::Refuse
        }
    }
}

/// Arguments of `analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A file of readings (object, array or NDJSON), or a series
    /// {"timestamps": [...], "values": [...]}.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The numeric parameter to analyse when FILE holds readings; repeat for several.
    /// Without it: every numeric parameter, as {"P": result, …}.
    #[arg(long, short)]
    pub parameter: Vec<String>,

    /// Only readings of this machine (readings without machine_id count as the default
    /// machine, machine-1).
    #[arg(long, value_parser = MachineId::parse)]
    pub machine: Option<MachineId>,

    /// A value is an anomaly when it deviates from the baseline by more than this fraction
    /// of the baseline's magnitude (0.2 is 20 %).
    #[arg(long, default_value_t = 0.2, value_parser = parse_threshold)]
    pub threshold: f64,

    /// What values are compared with: global (the series' average), moving (each value's
    /// moving average over --window values) or moving:N.
    #[arg(long)]
    pub baseline: Option<String>,

    /// The window of --baseline moving.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,

    /// Also give count, average, min and max per time bucket (1m, 1h, 1d), aligned to UTC.
    #[arg(long)]
    pub bucket: Option<String>,

    /// In line protocol (.lp files): the tag that names the machine (fallback: host).
    #[arg(long, default_value = "machine_id")]
    pub machine_tag: String,

    /// The zone in which timestamps without an offset are read: an IANA name such as
    /// Europe/Berlin.
    #[arg(long, env = "MILLWATCH_TIMEZONE", default_value = "UTC", value_parser = parse_timezone)]
    pub timezone: chrono_tz::Tz,

    /// Time in state instead: how long each machine was in each value of the state
    /// parameter --parameter (default "status") over the file's time span.
    #[arg(long)]
    pub states: bool,

    /// With --states: how long a value holds without a new reading; beyond, UNKNOWN.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stale: Duration,
}

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A source to ingest in the background; repeat for several. Default: simulate (three
    /// machines). "none" serves the API with HTTP push only.
    #[arg(long = "source", value_name = "SOURCE", value_parser = SourceSpec::parse)]
    pub sources: Vec<SourceSpec>,

    /// Address and port to listen on; a port alone (8080) means 127.0.0.1:PORT. The default
    /// binds loopback only.
    #[arg(long, env = "MILLWATCH_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A state parameter of the readings (such as status) whose value drives the job status:
    /// each time a machine's reported value changes to a job status that the lifecycle
    /// allows. A refused change is counted in /metrics and logged, never an error of the
    /// reading.
    #[arg(long, value_name = "PARAM", value_parser = crate::reading::ParamName::parse)]
    pub status_from: Option<crate::reading::ParamName>,

    /// Where records and statuses are kept: sqlite:FILE, memory, or postgres://user@host/db
    /// (a password missing from the URL is taken from PGPASSWORD).
    #[arg(long, env = "MILLWATCH_STORE", hide_env_values = true, default_value = "sqlite:millwatch.db", value_parser = StoreSpec::parse)]
    pub store: StoreSpec,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Delete readings older than this (30d, 12h), in the background, in small steps.
    /// Default: keep everything.
    #[arg(long, value_parser = parse_duration)]
    pub retention: Option<Duration>,

    /// Time between readings of each source (the simulator: one reading per machine).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Largest request body accepted, in bytes (413 above). A larger declared Content-Length
    /// is refused before any of the body is read.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body: usize,

    /// Time a request body has to arrive in full once its headers have (30s, 500ms; a bare
    /// number is seconds); a slower body is cut with 408 and its connection closed.
    #[arg(long, value_name = "SECS", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Time a write to a client may wait for the client to read (20s, 500ms); beyond, the
    /// connection is closed. This drops an event-stream (/events) client that stops reading
    /// once its buffers are full, so it cannot hold memory or a connection.
    #[arg(long, value_name = "SECS", default_value = "20s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Open connections served at once; beyond, a new connection is answered 503 with
    /// Retry-After and closed. Headers must arrive within 10 s of a connection's opening or
    /// of its previous request. Lowered at start if the open-file limit cannot hold this many
    /// connections and still keep descriptors free for the store.
    #[arg(long, value_name = "N", default_value_t = crate::api::server::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key). Default: plain HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (needs --tls-cert). Default: none (plain HTTP).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// OEE settings (TOML): a [[machine]] table per group of machines with machines (a
    /// glob), count (the parts counter), good or reject (a counter), ideal_rate (parts per
    /// minute). Without it /oee gives availability only.
    #[arg(long, value_name = "FILE", value_parser = parse_oee_file)]
    pub oee: Option<crate::core::oee::OeeConfig>,

    /// Alert rules (TOML): [[rule]] tables (SPEC §7). They are read-only through the API,
    /// which adds rules of its own.
    #[arg(long, value_name = "FILE", value_parser = parse_rules_file)]
    pub rules: Option<RulesFile>,

    /// Where notifications of firing and resolved alerts go; repeat for several:
    /// webhook:URL (POST of the alert as JSON), alertmanager:URL (Prometheus Alertmanager
    /// API v2), mqtt://host:port/topic (QoS 1).
    #[arg(long = "notify", value_name = "TARGET", value_parser = crate::notify::Target::parse)]
    pub notify: Vec<crate::notify::Target>,

    /// Shift start times, local to --timezone, for /oee?by=shift.
    #[arg(long, default_value = "06:00,14:00,22:00", value_parser = crate::core::oee::Shifts::parse)]
    pub shifts: crate::core::oee::Shifts,

    /// How long a state parameter's value holds without a new reading in /states; time
    /// beyond counts as UNKNOWN.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stale: Duration,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    #[command(flatten)]
    pub access: AccessArgs,
}

/// Who may use the API, and from where (SPEC §9).
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Require tokens: a TOML file of [[token]] tables (name, hash, roles), made with
    /// `millwatch token new`. Without it, serve listens on loopback only.
    #[arg(long, env = "MILLWATCH_AUTH", value_name = "FILE")]
    pub auth: Option<PathBuf>,

    /// With --auth: GET routes (the read role) need no token; writes still do.
    #[arg(long, requires = "auth")]
    pub public_read: bool,

    /// Listen on a non-loopback address without --auth: anyone who can reach the port can
    /// then write readings and change job statuses.
    #[arg(long, conflicts_with = "auth")]
    pub insecure_no_auth: bool,

    /// A host name that clients use to reach this server (the Host header), besides IP
    /// addresses and localhost; repeat for several. Other names are refused, which stops
    /// DNS-rebinding pages. "*" allows any name (behind a proxy that checks it).
    #[arg(long = "allowed-host", value_name = "NAME", value_parser = crate::api::auth::parse_allowed_host)]
    pub allowed_hosts: Vec<String>,
}

/// Reads `10s`, `500ms`, `1m`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a duration: it must be 0 or more"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write it like 10s, 500ms or 1m"))
}

/// Reads `HOST:PORT` or a port alone (`8080`), which means `127.0.0.1:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an address to listen on: give a port (8080) or HOST:PORT (127.0.0.1:8080, [::1]:8080)")
    })
}

/// Reads an IANA time zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("{s:?} is not a time zone: give an IANA name such as Europe/Berlin or UTC")
    })
}

/// Reads and checks an OEE file (`serve --oee`).
pub fn parse_oee_file(path: &str) -> Result<crate::core::oee::OeeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    crate::core::oee::OeeConfig::parse(&text).map_err(|e| format!("{path}: {e}"))
}

/// A threshold is a finite fraction, zero or more.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!(
            "{s:?} is not a threshold: give a fraction such as 0.2 (20 %)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("8080").unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(parse_listen("0.0.0.0:9").unwrap().to_string(), "0.0.0.0:9");
        assert_eq!(parse_listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        let e = parse_listen("localhost").unwrap_err();
        assert!(e.contains("give a port"), "{e}");
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("0"), Ok(0.0));
        assert!(parse_threshold("-0.1").is_err());
        assert!(parse_threshold("NaN").is_err());
        assert!(parse_threshold("inf").is_err());
    }
}
