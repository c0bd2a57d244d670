//! Data out (SPEC §10): records as CSV, NDJSON and Parquet, for `GET /data` and
//! `millwatch export`.
//!
//! `export` reads any store in two passes of [`scan`] (pages back to plan, windows forward to
//! write), so that it holds one page of records at a time however long the history.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::reading::MachineId;
use crate::store::{StoreError, StoreSpec};
use crate::timestamp::Timestamp;

pub mod csv;
pub mod parquet;
pub mod scan;

/// The file formats of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// RFC 4180 CSV with a header row (SPEC §10).
    Csv,
    /// One JSON record per line, as GET /data gives each.
    Ndjson,
    /// Apache Parquet: one row per record, typed columns.
    Parquet,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The store to read: sqlite:FILE, memory or postgres://user@host/db. A SQLite file must
    /// not be open in a running serve at the same time.
    #[arg(long, env = "MILLWATCH_STORE", hide_env_values = true, value_parser = StoreSpec::parse)]
    pub store: StoreSpec,

    /// Only this machine; repeat for several. Default: every machine.
    #[arg(long = "machine", value_name = "ID", value_parser = MachineId::parse)]
    pub machines: Vec<MachineId>,

    /// From this time on, inclusive (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<Timestamp>,

    /// Up to this time, inclusive (RFC 3339).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<Timestamp>,

    /// The file format. Default: from the --out file's extension (.csv, .ndjson, .jsonl,
    /// .parquet), else csv.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Where to write; default stdout. A file appears under its name only once complete.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// What can go wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    /// Encoding CSV failed.
    #[error("CSV: {0}")]
    Csv(#[from] ::csv::Error),
    /// Encoding Parquet failed.
    #[error("Parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    /// Encoding NDJSON failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The command line names something that is not there.
    #[error("{0}")]
    Usage(String),
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s)
}

/// The format asked for, or the one the output file's name implies.
fn format_of(args: &ExportArgs) -> Format {
    if let Some(f) = args.format {
        return f;
    }
    let ext = args
        .out
        .as_deref()
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("parquet") => Format::Parquet,
        Some("ndjson" | "jsonl") => Format::Ndjson,
        _ => Format::Csv,
    }
}

/// The output: stdout, or a file written beside its name and renamed once complete.
struct Output {
    target: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn open(out: Option<&Path>) -> Result<(Self, Box<dyn Write + Send>), ExportError> {
        match out {
            None => Ok((Output { target: None }, Box::new(std::io::stdout()))),
            Some(path) => {
                let mut partial = path.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let file = std::fs::File::create(&partial)
                    .map_err(|e| ExportError::Write(partial.display().to_string(), e))?;
                let target = Some((partial, path.to_owned()));
                Ok((Output { target }, Box::new(file)))
            }
        }
    }

    fn name(&self) -> String {
        match &self.target {
            Some((_, path)) => path.display().to_string(),
            None => "stdout".into(),
        }
    }

    /// Makes the file durable and gives it its name.
    fn complete(self, mut w: Box<dyn Write + Send>) -> Result<(), ExportError> {
        let name = self.name();
        w.flush().map_err(|e| ExportError::Write(name.clone(), e))?;
        drop(w);
        if let Some((partial, path)) = self.target {
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .and_then(|()| std::fs::rename(&partial, &path))
                .map_err(|e| ExportError::Write(name, e))?;
        }
        Ok(())
    }
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress_bar() -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Runs `millwatch export`: every stored record in range, oldest first, into one file.
/// Returns how many records were written.
pub async fn run(args: &ExportArgs) -> Result<u64, ExportError> {
    // Opening a SQLite store makes the file: a mistyped name would export an empty store.
    if let StoreSpec::Sqlite(path) = &args.store
        && !path.exists()
    {
        return Err(ExportError::Usage(format!(
            "--store: there is no SQLite file {}",
            path.display()
        )));
    }
    let store = args
        .store
        .open(crate::store::sqlite::Durability::Full)
        .await?;
    let result = export(store.as_ref(), args).await;
    let closed = store.close().await;
    let n = result?;
    closed?;
    Ok(n)
}

/// Exports from an open store.
pub async fn export(
    store: &dyn crate::store::Store,
    args: &ExportArgs,
) -> Result<u64, ExportError> {
    let range = scan::Range {
        machines: args.machines.clone(),
        since: args.since,
        until: args.until,
    };
    let bar = progress_bar();
    bar.set_message("planning");
    let plan = scan::plan(store, &range, scan::PAGE, |n| bar.inc(n)).await?;
    bar.set_position(0);
    bar.set_length(plan.total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} records {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    let (output, out) = Output::open(args.out.as_deref())?;
    let name = output.name();
    let io = |e: std::io::Error| ExportError::Write(name.clone(), e);
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut written = 0u64;
    match format_of(args) {
        Format::Csv => {
            let mut enc = csv::CsvEncoder::new(&plan.columns)?;
            for w in &plan.windows {
                for r in scan::window(store, &range, *w).await? {
                    enc.write(&r)?;
                    if enc.pending() >= 64 * 1024 {
                        out.write_all(&enc.take()?).map_err(io)?;
                    }
                    written += 1;
                }
                bar.set_position(written);
            }
            out.write_all(&enc.take()?).map_err(io)?;
        }
        Format::Ndjson => {
            for w in &plan.windows {
                for r in scan::window(store, &range, *w).await? {
                    serde_json::to_writer(&mut out, &*r)?;
                    out.write_all(b"\n").map_err(io)?;
                    written += 1;
                }
                bar.set_position(written);
            }
        }
        Format::Parquet => {
            let mut sink = parquet::ParquetSink::new(&mut out, &plan.columns)?;
            for w in &plan.windows {
                let records = scan::window(store, &range, *w).await?;
                sink.write(&records)?;
                written += records.len() as u64;
                bar.set_position(written);
            }
            sink.finish()?;
        }
    }
    bar.finish_and_clear();
    let inner = out.into_inner().map_err(|e| io(e.into_error()))?;
    output.complete(inner)?;
    tracing::info!(records = written, out = %name, "exported");
    Ok(written)
}
