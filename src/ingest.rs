//! `millwatch ingest`: one source through the pipeline to stdout, one record per line; with
//! `--store`, through the same service as `serve`, printing each record once it is durable.

use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::cli::IngestArgs;
use crate::pipeline::{Pipeline, ProcessedRecord};
use crate::reading::Reading;
use crate::service::Service;
use crate::sources::{Batch, SourceError};
use crate::store::StoreError;
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
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// stdout failed for another reason than a closed pipe.
    #[error("cannot write to stdout: {0}")]
    Output(io::Error),
    /// `--source none` has nothing to ingest.
    #[error("ingest needs a source: a file, an http(s):// URL or simulate")]
    NoSource,
}

/// Where readings become records: a bare pipeline, or the service with its store.
enum Processor {
    Bare(Pipeline),
    Stored(Arc<Service>),
}

impl Processor {
    async fn process(
        &mut self,
        readings: Vec<Reading>,
    ) -> Result<(Vec<Arc<ProcessedRecord>>, usize), StoreError> {
        match self {
            Processor::Bare(p) => Ok(p.process_batch(readings, Timestamp::now())),
            Processor::Stored(s) => s.ingest_records(readings).await,
        }
    }
}

/// Runs `ingest` until the source ends, `--count` records were printed, or Ctrl-C.
pub async fn run(args: IngestArgs, out: impl Write) -> Result<Ending, IngestError> {
    crate::timestamp::set_local_zone(args.pipeline.timezone);
    let source_options = crate::sources::SourceOptions {
        interval: args.interval,
        machine_tag: args.pipeline.machine_tag.clone(),
        mqtt_client_id: args.pipeline.mqtt_client_id.clone(),
        mes: None,
    };
    let source = args
        .source
        .build(&source_options)
        .ok_or(IngestError::NoSource)?;
    let source_name = args.source.to_string();
    let pipeline = Pipeline::new(args.pipeline.window as usize, args.pipeline.machine);
    let mut processor = match &args.store {
        None => Processor::Bare(pipeline),
        Some(spec) => Processor::Stored(
            Service::start(
                pipeline,
                spec.open_on_damage(args.storage.durability, args.storage.on_damage())
                    .await?,
            )
            .await?,
        ),
    };
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
        let (mut readings, bad, ack) = batch.split(&source_name);
        rejected += bad as u64;
        // Never take more readings than records still wanted: with a store, whatever is
        // processed is stored, and stored records should all have been printed.
        while !readings.is_empty() {
            let wanted = usize::try_from(limit - printed).unwrap_or(usize::MAX);
            let rest = readings.split_off(wanted.min(readings.len()));
            let (records, dups) = processor.process(readings).await?;
            duplicates += dups as u64;
            for record in records {
                let written = serde_json::to_writer(&mut out, record.as_ref())
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(e) = written {
                    return stdout_failed(e);
                }
                printed += 1;
            }
            if printed == limit {
                break 'outer;
            }
            readings = rest;
        }
        if let Err(e) = out.flush() {
            return stdout_failed(e);
        }
        // Printed (and stored, with --store) in full: the source may acknowledge it. A batch
        // cut short by --count is not acknowledged, so an MQTT broker keeps the rest.
        Batch::finish(ack);
    }
    if let Err(e) = out.flush() {
        return stdout_failed(e);
    }
    drop(rx);
    if let Processor::Stored(s) = &processor {
        s.store().close().await?;
    }
    if printed < limit && !interrupted {
        // The source ended by itself: report how, and whether it lost readings. A failure is
        // the command's error, with no "finished" line before it.
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(SourceError::Read(format!("the source task failed: {e}")).into()),
        }
        tracing::info!(printed, duplicates, rejected, "ingest finished");
        if rejected > 0 {
            return Ok(Ending::Rejected);
        }
    } else {
        producer.abort();
        tracing::info!(printed, duplicates, rejected, "ingest finished");
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
