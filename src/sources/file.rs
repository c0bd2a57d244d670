//! A file of readings. One object: a live file that a gateway rewrites, re-read every interval.
//! An array or NDJSON: replayed one reading per interval, or all at once with interval 0,
//! streaming, so a file of any size is read in constant memory. A file ending in `.lp` holds
//! InfluxDB line protocol, one point per line, and one ending in `.csv` a header row and a
//! reading per row (SPEC §1); both are always replayed.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Batch, Source, SourceError, SourceOptions};
use crate::lineproto::{self, LineStream};
use crate::reading::{Parsed, ReadingStream, Shape, parse_all};

/// Readings per batch when a file is taken as fast as possible.
const CHUNK: usize = 1024;

/// Reads readings from a file.
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
    machine_tag: String,
}

impl FileSource {
    /// A source reading `path` every interval (zero: once, as fast as possible).
    pub fn new(path: PathBuf, opts: SourceOptions) -> Self {
        FileSource {
            path,
            interval: opts.interval,
            machine_tag: opts.machine_tag,
        }
    }

    fn is_line_protocol(&self) -> bool {
        self.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("lp"))
    }
}

/// What the reading thread found out about the file.
enum Found {
    /// The file holds exactly one object: a live file.
    Single(Vec<Parsed>),
    /// Part of a replay.
    Chunk(Vec<Parsed>),
}

impl Source for FileSource {
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Batch>,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            let file = File::open(&self.path).map_err(|e| {
                SourceError::Open(format!("cannot open {}: {e}", self.path.display()))
            })?;
            let (tx, mut rx) = mpsc::channel::<Found>(4);
            let per_batch = if self.interval.is_zero() { CHUNK } else { 1 };
            let csv = crate::csv_input::is_csv_path(&self.path);
            let line_protocol = self.is_line_protocol().then(|| lineproto::Options {
                machine_tag: self.machine_tag.clone(),
                ..lineproto::Options::default()
            });
            // The file is read on a blocking thread; it stops when this task stops listening.
            let reader = tokio::task::spawn_blocking(move || match line_protocol {
                Some(opts) => {
                    let points = LineStream::new(BufReader::with_capacity(1 << 16, file), opts);
                    send_chunks(points, per_batch, &tx);
                    Ok(())
                }
                // CSV is a table of readings: always replayed, never a live single object.
                None if csv => {
                    let rows = crate::csv_input::readings(BufReader::with_capacity(1 << 16, file));
                    send_chunks(rows, per_batch, &tx);
                    Ok(())
                }
                None => read_file(file, per_batch, &tx),
            });
            while let Some(found) = rx.recv().await {
                match found {
                    Found::Single(items) => {
                        drop(rx);
                        return live(self.path, self.interval, items, out).await;
                    }
                    Found::Chunk(items) => {
                        let valid = items.iter().any(|(_, r)| r.is_ok());
                        if out.send(Batch::of(items)).await.is_err() {
                            return Ok(());
                        }
                        if valid && !self.interval.is_zero() {
                            tokio::time::sleep(self.interval).await;
                        }
                    }
                }
            }
            match reader.await {
                Ok(result) => result,
                Err(e) => Err(SourceError::Read(format!("the file reader failed: {e}"))),
            }
        })
    }
}

fn read_file(file: File, per_batch: usize, tx: &mpsc::Sender<Found>) -> Result<(), SourceError> {
    let mut stream = ReadingStream::new(BufReader::with_capacity(1 << 16, file));
    let Some(first) = stream.next() else {
        return Ok(());
    };
    let second = stream.next();
    if second.is_none() && stream.shape() == Some(Shape::Objects) {
        let _ = tx.blocking_send(Found::Single(vec![first]));
        return Ok(());
    }
    send_chunks(
        std::iter::once(first).chain(second).chain(stream),
        per_batch,
        tx,
    );
    Ok(())
}

/// Sends readings on in chunks of `per_batch`, until they end or nobody listens.
fn send_chunks(items: impl Iterator<Item = Parsed>, per_batch: usize, tx: &mpsc::Sender<Found>) {
    let mut chunk = Vec::with_capacity(per_batch);
    for item in items {
        chunk.push(item);
        if chunk.len() == per_batch {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(per_batch));
            if tx.blocking_send(Found::Chunk(full)).is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Found::Chunk(chunk));
    }
}

/// A file holding one object: sent now, then re-read every interval (once with interval 0).
/// A file that cannot be read for a moment (a gateway replacing it) is logged and retried.
async fn live(
    path: PathBuf,
    interval: Duration,
    first: Vec<Parsed>,
    out: mpsc::Sender<Batch>,
) -> Result<(), SourceError> {
    if out.send(Batch::of(first)).await.is_err() || interval.is_zero() {
        return Ok(());
    }
    loop {
        tokio::time::sleep(interval).await;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                if out.send(Batch::of(parse_all(&bytes))).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot re-read the live file")
            }
        }
    }
}
