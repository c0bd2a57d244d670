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
    /// readings in any form (object, array, NDJSON, or line protocol in a .lp file), of which
    /// --parameter names the value to analyse.
    Analyze(AnalyzeArgs),
    /// Run the service: sources, HTTP API, dashboard and store in one process.
    Serve(ServeArgs),
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
    /// interval, mqtt://[user:pass@]host:port/topic-filter (or mqtts:// for TLS), or
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
}

/// Arguments of `analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A file of readings (object, array or NDJSON), or a series
    /// {"timestamps": [...], "values": [...]}.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The numeric parameter to analyse; required when FILE holds readings.
    #[arg(long, short)]
    pub parameter: Option<String>,

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

    /// Address and port to listen on. The default binds loopback only.
    #[arg(long, env = "MILLWATCH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where records and statuses are kept: sqlite:FILE, memory, or postgres://user@host/db.
    #[arg(long, env = "MILLWATCH_STORE", default_value = "sqlite:millwatch.db", value_parser = StoreSpec::parse)]
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

    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body: usize,

    /// OEE settings (TOML): a [[machine]] table per group of machines with machines (a
    /// glob), count (the parts counter), good or reject (a counter), ideal_rate (parts per
    /// minute). Without it /oee gives availability only.
    #[arg(long, value_name = "FILE", value_parser = parse_oee_file)]
    pub oee: Option<crate::core::oee::OeeConfig>,

    /// Shift start times, local to --timezone, for /oee?by=shift.
    #[arg(long, default_value = "06:00,14:00,22:00", value_parser = crate::core::oee::Shifts::parse)]
    pub shifts: crate::core::oee::Shifts,

    /// How long a state parameter's value holds without a new reading in /states; time
    /// beyond counts as UNKNOWN.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stale: Duration,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
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
    fn thresholds() {
        assert_eq!(parse_threshold("0"), Ok(0.0));
        assert!(parse_threshold("-0.1").is_err());
        assert!(parse_threshold("NaN").is_err());
        assert!(parse_threshold("inf").is_err());
    }
}
