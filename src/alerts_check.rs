//! `millwatch alerts check FILE --rules RULES`: the firings and resolutions that replaying
//! FILE's readings through the rules would make, as NDJSON. Stale rules are measured in
//! reading time here (there is no wall clock in a replay), so the output depends on the file
//! alone.

use std::io::Write;

use crate::cli::AlertsCheckArgs;
use crate::core::alerts::Engine;
use crate::pipeline::Pipeline;
use crate::timestamp::Timestamp;

/// What went wrong with `alerts check`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be opened (exit 2).
    #[error(transparent)]
    Open(#[from] crate::analyze::AnalyzeError),
    /// stdout failed.
    #[error("cannot write to stdout: {0}")]
    Output(std::io::Error),
}

/// Readings processed per batch: enough to amortise the pipeline's per-batch work.
const BATCH: usize = 4096;

/// Replays the file; prints one change per line. Returns how many readings were rejected.
pub fn run(args: &AlertsCheckArgs, mut out: impl Write) -> Result<u64, CheckError> {
    let readings = crate::analyze::readings_of(&args.file, &args.pipeline.machine_tag)?;
    let mut pipeline = Pipeline::new(args.pipeline.window as usize, args.pipeline.machine.clone());
    let mut engine = Engine::new(args.rules.0.clone());
    let now = Timestamp::now();
    let mut rejected = 0;
    let mut batch = Vec::with_capacity(BATCH);
    let mut changes = Vec::new();
    let mut flush =
        |batch: &mut Vec<crate::reading::Reading>, out: &mut dyn Write| -> Result<(), CheckError> {
            let (records, _) = pipeline.process_batch(std::mem::take(batch), now);
            for r in &records {
                // The reading's own time is the clock: silence is measured between readings.
                engine.tick(r.timestamp, &mut changes);
                engine.on_record(r, r.timestamp, &mut changes);
            }
            for c in changes.drain(..).filter(|c| c.kind.notifies()) {
                serde_json::to_writer(&mut *out, &c)
                    .map_err(|e| CheckError::Output(std::io::Error::other(e)))?;
                out.write_all(b"\n").map_err(CheckError::Output)?;
            }
            Ok(())
        };
    for (position, reading) in readings {
        match reading {
            Ok(r) => batch.push(r),
            Err(e) => {
                rejected += 1;
                eprintln!("{position}: rejected: {e}");
            }
        }
        if batch.len() >= BATCH {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)?;
    out.flush().map_err(CheckError::Output)?;
    Ok(rejected)
}
