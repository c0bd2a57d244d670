//! `millwatch analyze FILE`: SPEC §5 over a file, printed as JSON. The file is a series
//! (`{"timestamps", "values"}` or `{"series": [...]}`) or readings in any form (then
//! `--parameter` names the value to analyse), or InfluxDB line protocol (`.lp`).

use std::fs::File;
use std::io::{BufReader, Read};

use crate::analytics::{self, Analysis, SeriesError};
use crate::cli::AnalyzeArgs;
use crate::lineproto::{self, LineStream};
use crate::reading::{MachineId, Parsed, ReadingStream, Value};
use crate::timestamp::Timestamp;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// A usage mistake: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The file could not be read or is not a series.
    #[error("{0}")]
    Input(String),
}

/// Files up to this size are read whole to see whether they are a series; larger ones are
/// streamed as readings.
const SERIES_PROBE_LIMIT: u64 = 256 * 1024 * 1024;

/// The analysis and how many readings were rejected on the way.
pub fn run(args: &AnalyzeArgs) -> Result<(Analysis, u64), AnalyzeError> {
    let opts = analytics::Options {
        threshold: args.threshold,
        baseline: crate::api::parse_baseline(args.baseline.as_deref(), args.window as usize)
            .map_err(|e| AnalyzeError::Usage(format!("--baseline: {e}")))?,
        bucket: args
            .bucket
            .as_deref()
            .map(crate::api::parse_bucket)
            .transpose()
            .map_err(|e| AnalyzeError::Usage(format!("--bucket: {e}")))?,
    };
    let open = || {
        File::open(&args.file)
            .map_err(|e| AnalyzeError::Usage(format!("cannot open {}: {e}", args.file.display())))
    };
    let file = open()?;
    let is_lp = args
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("lp"));
    let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if !is_lp && size <= SERIES_PROBE_LIMIT {
        let mut bytes = Vec::with_capacity(size as usize);
        BufReader::new(file).read_to_end(&mut bytes).map_err(|e| {
            AnalyzeError::Input(format!("cannot read {}: {e}", args.file.display()))
        })?;
        match analytics::parse_series(&bytes) {
            Ok(series) => {
                let mut opts = opts;
                if let Some(t) = series.threshold {
                    opts.threshold = t;
                }
                return Ok((
                    analytics::analyze(&series.timestamps, &series.values, &opts),
                    0,
                ));
            }
            Err(SeriesError::NotASeries) => {}
            Err(e) => return Err(AnalyzeError::Input(format!("{}: {e}", args.file.display()))),
        }
    }
    let parameter = args.parameter.as_deref().ok_or_else(|| {
        AnalyzeError::Usage(format!(
            "{} holds readings: name the value to analyse with --parameter",
            args.file.display()
        ))
    })?;
    let readings: Box<dyn Iterator<Item = Parsed>> = if is_lp {
        let opts = lineproto::Options {
            machine_tag: args.machine_tag.clone(),
            ..lineproto::Options::default()
        };
        Box::new(LineStream::new(
            BufReader::with_capacity(1 << 16, open()?),
            opts,
        ))
    } else {
        Box::new(ReadingStream::new(BufReader::with_capacity(
            1 << 16,
            open()?,
        )))
    };
    let default_machine = MachineId::parse("machine-1").map_err(AnalyzeError::Usage)?;
    let now = Timestamp::now();
    let mut points: Vec<(Timestamp, f64)> = Vec::new();
    let mut rejected = 0u64;
    for (position, reading) in readings {
        let reading = match reading {
            Ok(r) => r,
            Err(e) => {
                rejected += 1;
                tracing::warn!("{position} rejected: {e}");
                continue;
            }
        };
        let machine = reading.machine_id.as_ref().unwrap_or(&default_machine);
        if args.machine.as_ref().is_some_and(|m| m != machine) {
            continue;
        }
        match reading
            .fields
            .iter()
            .find(|f| f.name.as_str() == parameter)
            .map(|f| &f.value)
        {
            Some(Value::Number(v)) => points.push((reading.timestamp.unwrap_or(now), *v)),
            Some(Value::State(_)) => {
                tracing::warn!("{position}: {parameter:?} is a state, not a number; skipped");
            }
            None => {}
        }
    }
    // Oldest first, as the store answers; readings of equal time keep their file order.
    points.sort_by_key(|p| p.0);
    let (timestamps, values): (Vec<Timestamp>, Vec<f64>) = points.into_iter().unzip();
    Ok((analytics::analyze(&timestamps, &values, &opts), rejected))
}
