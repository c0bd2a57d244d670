//! `millwatch analyze FILE`: SPEC §5 over a file, printed as JSON. The file is a series
//! (`{"timestamps", "values"}` or `{"series": [...]}`) or readings in any form, CSV (`.csv`)
//! or InfluxDB line protocol (`.lp`); of readings, every numeric parameter is analysed, or
//! those `--parameter` names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};

use crate::api::series_body::{self, SeriesError};
use crate::cli::AnalyzeArgs;
use crate::core::analytics::{self, Analysis};
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

/// What `analyze` prints: one analysis (a series, or one named parameter), or one per
/// numeric parameter by name (readings with none or several named).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Report {
    /// One series.
    One(Analysis),
    /// Each parameter's analysis, by name.
    Each(BTreeMap<String, Analysis>),
}

/// The analysis and how many readings were rejected on the way.
pub fn run(args: &AnalyzeArgs) -> Result<(Report, u64), AnalyzeError> {
    crate::timestamp::set_local_zone(args.timezone);
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
    let is_csv = crate::csv_input::is_csv_path(&args.file);
    let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if !is_lp && !is_csv && size <= SERIES_PROBE_LIMIT {
        let mut bytes = Vec::with_capacity(size as usize);
        BufReader::new(file).read_to_end(&mut bytes).map_err(|e| {
            AnalyzeError::Input(format!("cannot read {}: {e}", args.file.display()))
        })?;
        match series_body::parse_series(&bytes) {
            Ok(series) => {
                let mut opts = opts;
                if let Some(t) = series.threshold {
                    opts.threshold = t;
                }
                return Ok((
                    Report::One(analytics::analyze(
                        &series.timestamps,
                        &series.values,
                        &opts,
                    )),
                    0,
                ));
            }
            Err(SeriesError::NotASeries) => {}
            Err(e) => return Err(AnalyzeError::Input(format!("{}: {e}", args.file.display()))),
        }
    }
    let readings = open_readings(args)?;
    let default_machine = MachineId::parse("machine-1").map_err(AnalyzeError::Usage)?;
    let now = Timestamp::now();
    let wanted = |name: &str| args.parameter.is_empty() || args.parameter.iter().any(|p| p == name);
    let mut points: BTreeMap<String, Vec<(Timestamp, f64)>> = BTreeMap::new();
    let mut states: BTreeSet<String> = BTreeSet::new();
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
        let at = reading.timestamp.unwrap_or(now);
        for f in &reading.fields {
            match &f.value {
                Value::Number(v) if wanted(f.name.as_str()) => {
                    match points.get_mut(f.name.as_str()) {
                        Some(series) => series.push((at, *v)),
                        None => {
                            points.insert(f.name.as_str().to_owned(), vec![(at, *v)]);
                        }
                    }
                }
                Value::Number(_) => {
                    points.entry(f.name.as_str().to_owned()).or_default();
                }
                Value::State(_) => {
                    if !args.parameter.is_empty() && wanted(f.name.as_str()) {
                        tracing::warn!(
                            "{position}: {:?} is a state, not a number; skipped",
                            f.name.as_str()
                        );
                    }
                    states.insert(f.name.as_str().to_owned());
                }
            }
        }
    }
    // A named parameter that no reading has is a typo or the wrong file: say what there is.
    let missing: Vec<&String> = args
        .parameter
        .iter()
        .filter(|p| points.get(p.as_str()).is_none_or(Vec::is_empty))
        .collect();
    if !missing.is_empty() {
        let numeric: Vec<&str> = points.keys().map(String::as_str).collect();
        let states: Vec<&str> = states.iter().map(String::as_str).collect();
        let whose = match &args.machine {
            Some(m) => format!("readings of {m} in {}", args.file.display()),
            None => format!("readings in {}", args.file.display()),
        };
        return Err(AnalyzeError::Input(format!(
            "no numeric parameter {} in the {whose}; numeric parameters there: {}{}",
            missing
                .iter()
                .map(|m| format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            if numeric.is_empty() {
                "none".to_owned()
            } else {
                numeric.join(", ")
            },
            if states.is_empty() {
                String::new()
            } else {
                format!(" (state parameters: {})", states.join(", "))
            }
        )));
    }
    let mut each = BTreeMap::new();
    for (name, mut series) in points {
        if series.is_empty() {
            continue;
        }
        // Oldest first, as the store answers; readings of equal time keep their file order.
        series.sort_by_key(|p| p.0);
        let (timestamps, values): (Vec<Timestamp>, Vec<f64>) = series.into_iter().unzip();
        each.insert(name, analytics::analyze(&timestamps, &values, &opts));
    }
    if args.parameter.len() == 1
        && let Some((_, one)) = each.pop_first()
    {
        return Ok((Report::One(one), rejected));
    }
    Ok((Report::Each(each), rejected))
}

/// The readings of `args.file`, by its kind: line protocol (`.lp`), CSV (`.csv`), or JSON (an
/// object, an array or NDJSON).
fn open_readings(args: &AnalyzeArgs) -> Result<Box<dyn Iterator<Item = Parsed>>, AnalyzeError> {
    readings_of(&args.file, &args.machine_tag)
}

/// The readings of the file at `path`, by its kind: line protocol (`.lp`, machines named by
/// the tag `machine_tag`), CSV (`.csv`), or JSON (an object, an array or NDJSON).
pub fn readings_of(
    path: &std::path::Path,
    machine_tag: &str,
) -> Result<Box<dyn Iterator<Item = Parsed>>, AnalyzeError> {
    let file = File::open(path)
        .map_err(|e| AnalyzeError::Usage(format!("cannot open {}: {e}", path.display())))?;
    let input = BufReader::with_capacity(1 << 16, file);
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("lp"))
    {
        let opts = lineproto::Options {
            machine_tag: machine_tag.to_owned(),
            ..lineproto::Options::default()
        };
        Ok(Box::new(LineStream::new(input, opts)))
    } else if crate::csv_input::is_csv_path(path) {
        Ok(Box::new(crate::csv_input::readings(input)))
    } else {
        Ok(Box::new(ReadingStream::new(input)))
    }
}

/// `analyze FILE --states`: time in state of a state parameter (`--parameter`, default
/// `status`) per machine over the file's time span, as `{"MACHINE": answer}` (SPEC §8's
/// answer of `GET /states?parameter=P`) as pretty JSON, with how many readings were rejected.
pub fn states(args: &AnalyzeArgs) -> Result<(String, u64), AnalyzeError> {
    use std::collections::BTreeMap;

    use crate::core::states::{self as core_states, UNKNOWN};
    use compact_str::CompactString;

    let parameter = match args.parameter.as_slice() {
        [] => "status".to_owned(),
        [one] => one.clone(),
        _ => {
            return Err(AnalyzeError::Usage(
                "--states takes one --parameter: the state parameter to time".into(),
            ));
        }
    };
    let readings = open_readings(args)?;
    let default_machine = MachineId::parse("machine-1").map_err(AnalyzeError::Usage)?;
    let now = Timestamp::now().as_nanos();
    let mut values: BTreeMap<MachineId, Vec<(i64, CompactString)>> = BTreeMap::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
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
        let machine = reading
            .machine_id
            .clone()
            .unwrap_or(default_machine.clone());
        if args.machine.as_ref().is_some_and(|m| *m != machine) {
            continue;
        }
        let at = reading.timestamp.map_or(now, Timestamp::as_nanos);
        let value = reading
            .fields
            .iter()
            .find(|f| f.name.as_str() == parameter)
            .map(|f| match &f.value {
                Value::State(s) => s.clone(),
                // A number used as a state code, such as 0 and 1.
                Value::Number(n) => CompactString::from(n.to_string()),
            });
        if let Some(v) = value {
            lo = lo.min(at);
            hi = hi.max(at);
            values.entry(machine).or_default().push((at, v));
        }
    }
    if values.is_empty() {
        return Err(AnalyzeError::Input(format!(
            "no reading in {} has the state parameter {parameter:?}",
            args.file.display()
        )));
    }
    let stale = i64::try_from(args.stale.as_nanos()).unwrap_or(i64::MAX);
    let mut out = BTreeMap::new();
    for (machine, mut v) in values {
        // Time order; readings of equal time keep their file order.
        v.sort_by_key(|p| p.0);
        let steps = core_states::steps_from_readings(&v, stale);
        let times =
            core_states::time_in_state(CompactString::const_new(UNKNOWN), &steps, lo, hi, None);
        let answer = crate::api::states::answer(
            machine.clone(),
            Timestamp::from_nanos(lo),
            Timestamp::from_nanos(hi),
            Some(parameter.clone()),
            times,
            |s| s.to_string(),
        );
        out.insert(machine.as_str().to_owned(), answer);
    }
    let json = serde_json::to_string_pretty(&out)
        .map_err(|e| AnalyzeError::Input(format!("cannot write the answer: {e}")))?;
    Ok((json, rejected))
}
