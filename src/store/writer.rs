//! What the SQLite and PostgreSQL writers share: the commands they take, how a group of
//! commands is gathered and numbered, and how each command is answered after the commit.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::oneshot;

use super::{Ack, StoreError};
use crate::pipeline::ProcessedRecord;
use crate::reading::MachineId;
use crate::status::StatusChange;
use crate::timestamp::Timestamp;

/// Most commands one commit takes, and most records.
const MAX_GROUP_COMMANDS: usize = 4096;
const MAX_GROUP_RECORDS: usize = 500_000;

/// Where a command's result goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Records as the caller hands them over.
pub(crate) type Records = Vec<Arc<ProcessedRecord>>;

/// What an append carries: the records themselves (PostgreSQL), or records the caller has
/// encoded already (SQLite).
pub(crate) trait Appended: Send + 'static {
    /// How many records.
    fn records(&self) -> usize;
}

impl Appended for Records {
    fn records(&self) -> usize {
        self.len()
    }
}

impl Appended for super::codec::Batch {
    fn records(&self) -> usize {
        super::codec::Batch::records(self)
    }
}

/// One request to a writer.
pub(crate) enum Command<A = Records> {
    /// Store these records, all or nothing.
    Append(A, Reply<()>),
    /// Store a status change.
    Status(StatusChange, Reply<()>),
    /// Store alert bookkeeping, in the same transaction as the group.
    Alerts(super::alerts::AlertWrite, Reply<()>),
    /// Delete one small step of chunks older than the cut-off; answers how many went.
    Retain(Timestamp, Reply<usize>),
    /// Flush and stop.
    Close(oneshot::Sender<()>),
}

/// `first` and whatever else is queued (from `next`), up to the group limits.
pub(crate) fn gather<A: Appended>(
    first: Command<A>,
    mut next: impl FnMut() -> Option<Command<A>>,
) -> Vec<Command<A>> {
    let mut group = vec![first];
    let mut records = 0;
    while group.len() < MAX_GROUP_COMMANDS && records < MAX_GROUP_RECORDS {
        match next() {
            Some(cmd) => {
                if let Command::Append(r, _) = &cmd {
                    records += r.records();
                }
                group.push(cmd);
            }
            None => break,
        }
    }
    group
}

/// One machine's records of a group, numbered, in arrival order.
pub(crate) type MachineRows<'a> = (&'a MachineId, Vec<(u64, &'a Arc<ProcessedRecord>)>);

/// The group's records per machine in arrival order, numbered from `*next_seq` on, sorted by
/// machine. (A hash map to gather them: a commit holds thousands of records of hundreds of
/// machines; seeded at random, so that chosen machine ids cannot make it slow.)
pub(crate) fn per_machine<'a>(group: &'a [Command], next_seq: &mut u64) -> Vec<MachineRows<'a>> {
    let mut index: HashMap<&MachineId, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut out: Vec<MachineRows<'a>> = Vec::new();
    for cmd in group {
        if let Command::Append(records, _) = cmd {
            for r in records {
                let i = *index.entry(&r.machine_id).or_insert_with(|| {
                    out.push((&r.machine_id, Vec::new()));
                    out.len() - 1
                });
                out[i].1.push((*next_seq, r));
                *next_seq += 1;
            }
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out
}

/// The time range and arrival range of one machine's chunk.
pub(crate) fn bounds<R: AsRef<ProcessedRecord>>(
    rows: &[(u64, R)],
) -> (Timestamp, Timestamp, u64, u64) {
    let ts_min = rows
        .iter()
        .map(|(_, r)| r.as_ref().timestamp)
        .min()
        .unwrap_or(Timestamp::MIN);
    let ts_max = rows
        .iter()
        .map(|(_, r)| r.as_ref().timestamp)
        .max()
        .unwrap_or(Timestamp::MAX);
    let seq_min = rows.first().map_or(0, |r| r.0);
    let seq_max = rows.last().map_or(0, |r| r.0);
    (ts_min, ts_max, seq_min, seq_max)
}

/// Answers every command of a committed (or failed) group; true when one of them was Close.
pub(crate) fn answer<A>(group: Vec<Command<A>>, result: &Result<usize, StoreError>) -> bool {
    let mut closing = false;
    for cmd in group {
        match cmd {
            Command::Append(_, reply) | Command::Status(_, reply) | Command::Alerts(_, reply) => {
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
            Command::Retain(_, reply) => {
                let _ = reply.send(result.clone());
            }
            Command::Close(done) => {
                let _ = done.send(());
                closing = true;
            }
        }
    }
    closing
}

/// The acknowledgement of a command handed to a writer (or of the failure to hand it over).
pub(crate) fn ack(
    sent: Result<(), StoreError>,
    rx: oneshot::Receiver<Result<(), StoreError>>,
) -> Ack {
    match sent {
        Ok(()) => async move {
            rx.await
                .map_err(|_| StoreError::Failed("the writer stopped".into()))?
        }
        .boxed(),
        Err(e) => futures::future::ready(Err(e)).boxed(),
    }
}

/// Hands `records` to a writer through `send`; the `Ack` resolves once they are durable.
pub(crate) fn append<A>(
    send: impl FnOnce(Command<A>) -> Result<(), StoreError>,
    records: A,
) -> Ack {
    let (tx, rx) = oneshot::channel();
    ack(send(Command::Append(records, tx)), rx)
}

/// Hands a status change to a writer through `send`.
pub(crate) fn append_status<A>(
    send: impl FnOnce(Command<A>) -> Result<(), StoreError>,
    change: StatusChange,
) -> Ack {
    let (tx, rx) = oneshot::channel();
    ack(send(Command::Status(change, tx)), rx)
}

/// Hands alert bookkeeping to a writer through `send`.
pub(crate) fn write_alerts<A>(
    send: impl FnOnce(Command<A>) -> Result<(), StoreError>,
    write: super::alerts::AlertWrite,
) -> Ack {
    let (tx, rx) = oneshot::channel();
    ack(send(Command::Alerts(write, tx)), rx)
}

/// Deletes chunks older than `cutoff` one small step (one commit) at a time, yielding between
/// steps so that queued ingestion commits go first; returns how many chunks went.
pub(crate) async fn retain<A>(
    send: impl Fn(Command<A>) -> Result<(), StoreError>,
    cutoff: Timestamp,
) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let (tx, rx) = oneshot::channel();
        send(Command::Retain(cutoff, tx))?;
        let n = rx
            .await
            .map_err(|_| StoreError::Failed("the writer stopped".into()))??;
        total += n;
        if n == 0 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
