//! `millwatch ingest`: one source through the pipeline to stdout, one record per line.

use std::io::{self, Write};

use tokio::sync::mpsc;

use crate::cli::IngestArgs;
use crate::pipeline::{Outcome, Pipeline};
use crate::sources::SourceError;
use crate::timestamp::Timestamp;

/// How an ingestion ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The source ended, `--count` was reached, or Ctrl-C: everything was fine.
    Clean,
    /// The source ended and some readings were rejected.
    Rejected,
}

/// What went wrong with the command as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The source could not be opened or broke.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// stdout failed for another reason than a closed pipe.
    #[error("cannot write to stdout: {0}")]
    Output(io::Error),
    /// `--source none` has nothing to ingest.
    #[error("ingest needs a source: a file, an http(s):// URL or simulate")]
    NoSource,
}

/// Runs `ingest` until the source ends, `--count` records were printed, or Ctrl-C.
pub async fn run(args: IngestArgs, out: impl Write) -> Result<Ending, IngestError> {
    let source = args
        .source
        .build(args.interval)
        .ok_or(IngestError::NoSource)?;
    let mut pipeline = Pipeline::new(args.pipeline.window as usize, args.pipeline.machine);
    let (tx, mut rx) = mpsc::channel(16);
    let producer = tokio::spawn(source.run(tx));
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut printed: u64 = 0;
    let mut rejected: u64 = 0;
    let mut duplicates: u64 = 0;
    let limit = args.count.unwrap_or(u64::MAX);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    'outer: while printed < limit {
        let batch = tokio::select! {
            b = rx.recv() => match b { Some(b) => b, None => break },
            _ = &mut ctrl_c => { interrupted = true; break }
        };
        let now = Timestamp::now();
        for (position, reading) in batch.items {
            match reading {
                Ok(reading) => match pipeline.process(reading, now) {
                    Outcome::Record(record) => {
                        let written = serde_json::to_writer(&mut out, &record)
                            .map_err(io::Error::from)
                            .and_then(|()| out.write_all(b"\n"));
                        if let Err(e) = written {
                            return stdout_failed(e);
                        }
                        printed += 1;
                        if printed == limit {
                            break 'outer;
                        }
                    }
                    Outcome::Duplicate => duplicates += 1,
                },
                Err(e) => {
                    rejected += 1;
                    tracing::warn!("{} rejected: {e}", position);
                }
            }
        }
        if let Err(e) = out.flush() {
            return stdout_failed(e);
        }
    }
    if let Err(e) = out.flush() {
        return stdout_failed(e);
    }
    drop(rx);
    tracing::info!(printed, duplicates, rejected, "ingest finished");
    if printed < limit && !interrupted {
        // The source ended by itself: report how, and whether it lost readings.
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(SourceError::Read(format!("the source task failed: {e}")).into()),
        }
        if rejected > 0 {
            return Ok(Ending::Rejected);
        }
    } else {
        producer.abort();
    }
    Ok(Ending::Clean)
}

/// A reader that went away (`| head`) ends the command quietly; anything else is an error.
fn stdout_failed(e: io::Error) -> Result<Ending, IngestError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(Ending::Clean)
    } else {
        Err(IngestError::Output(e))
    }
}
