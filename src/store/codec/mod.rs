//! The binary form of a chunk: the records of one machine written in one commit.
//!
//! Durable stores keep records in chunks rather than a row per record: one insert per machine
//! per commit instead of one per reading (and one per value), which is what lets a single
//! SQLite file take hundreds of thousands of readings a second. A chunk names each parameter
//! once in a small dictionary; records refer to names by index.
//!
//! ```text
//! chunk  := version:u8 n_names:u16 name* n_records:u32 record*
//! name   := len:u8 utf8
//! record := seq:u64 ts:i64 n_fields:u16 field*
//! field  := name_index:u16 (0:u8 value:f64 average:f64 | 1:u8 len:u16 utf8)
//! ```
//! All integers little-endian. Decoding checks every length: a damaged chunk is an error,
//! never a panic.

use std::collections::HashMap;

mod bits;
mod columnar;

use compact_str::CompactString;

use crate::pipeline::{Averages, ProcessedRecord};
use crate::reading::{Field, Fields, MachineId, ParamName, Value};
use crate::timestamp::Timestamp;

const VERSION: u8 = 1;

/// A record with its arrival number, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Arrival order across the whole store.
    pub seq: u64,
    /// The record.
    pub record: ProcessedRecord,
}

/// A chunk that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged chunk: {0}")]
pub struct CodecError(pub(crate) &'static str);

/// Most distinct parameter names one chunk's dictionary holds (its indexes are `u16`).
const MAX_NAMES: usize = u16::MAX as usize;

/// A chunk stops taking records once it holds this many bytes, so that no single value
/// (SQLite's and PostgreSQL's limits are 1 GB) grows with the size of a commit.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Encodes records of one machine (in arrival order) with their arrival numbers, as chunks
/// of at most `max_records` records: yields each chunk with the rows it holds.
///
/// A chunk also ends before its dictionary would overflow or once it passes
/// [`CHUNK_BYTES`]; it always takes at least one record (one record has at most 256 fields of
/// at most 256 bytes), so every row is in exactly one chunk, in order.
pub fn chunks<R: AsRef<ProcessedRecord>>(
    rows: &[(u64, R)],
    max_records: usize,
) -> impl Iterator<Item = (&[(u64, R)], Vec<u8>)> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, used) = encode_some(&rest[..rest.len().min(max_records.max(1))]);
        let (piece, tail) = rest.split_at(used);
        rest = tail;
        Some((piece, chunk))
    })
}

/// Encodes the longest prefix of `rows` that fits one chunk; returns it and its length.
fn encode_some<R: AsRef<ProcessedRecord>>(rows: &[(u64, R)]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let used = Encoder::default().encode(rows, &mut out);
    (out, used)
}

/// Encodes chunks one after another, keeping its buffers from one to the next (a request's
/// log entry holds a chunk for each of its machines).
#[derive(Default)]
struct Encoder<'a> {
    names: Vec<&'a str>,
    index: HashMap<&'a str, usize, foldhash::fast::RandomState>,
    body: Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Appends to `out` the chunk of the longest prefix of `rows` that fits one; returns the
    /// prefix's length.
    ///
    /// One pass: the records go into the body while the name dictionary grows, and the
    /// header is put in front at the end. This runs for every stored reading (on the
    /// request's own task; compaction copies the encoded records instead), so it is kept
    /// lean.
    fn encode<R: AsRef<ProcessedRecord>>(
        &mut self,
        rows: &'a [(u64, R)],
        out: &mut Vec<u8>,
    ) -> usize {
        self.names.clear();
        // Looked up only when a name is not where the previous records had it.
        self.index.clear();
        self.body.clear();
        let (names, index, body) = (&mut self.names, &mut self.index, &mut self.body);
        let mut used = 0;
        for (seq, r) in rows {
            let r = r.as_ref();
            if used > 0 && (names.len() + r.fields.len() > MAX_NAMES || body.len() >= CHUNK_BYTES) {
                break;
            }
            used += 1;
            let mut head = [0u8; 18];
            head[..8].copy_from_slice(&seq.to_le_bytes());
            head[8..16].copy_from_slice(&r.timestamp.as_nanos().to_le_bytes());
            head[16..].copy_from_slice(&(r.fields.len() as u16).to_le_bytes());
            body.extend_from_slice(&head);
            let mut avgs = r.averages.iter();
            for (i, f) in r.fields.iter().enumerate() {
                let name = f.name.as_str();
                // Records of a machine nearly always name the same parameters in the same
                // order, so the name at the same position is tried before the dictionary.
                let idx = if names.get(i) == Some(&name) {
                    i
                } else {
                    *index.entry(name).or_insert_with(|| {
                        names.push(name);
                        names.len() - 1
                    })
                };
                match &f.value {
                    Value::Number(v) => {
                        let mut field = [0u8; 19];
                        field[..2].copy_from_slice(&(idx as u16).to_le_bytes());
                        field[3..11].copy_from_slice(&v.to_le_bytes());
                        let avg = avgs.next().copied().unwrap_or(*v);
                        field[11..].copy_from_slice(&avg.to_le_bytes());
                        body.extend_from_slice(&field);
                    }
                    Value::State(s) => {
                        body.extend_from_slice(&(idx as u16).to_le_bytes());
                        body.push(1);
                        body.extend_from_slice(&(s.len() as u16).to_le_bytes());
                        body.extend_from_slice(s.as_bytes());
                    }
                }
            }
        }
        let header = 7 + names.iter().map(|n| 1 + n.len()).sum::<usize>();
        out.reserve(header + body.len());
        out.push(VERSION);
        out.extend_from_slice(&(names.len() as u16).to_le_bytes());
        for n in names.iter() {
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
        }
        out.extend_from_slice(&(used as u32).to_le_bytes());
        out.extend_from_slice(body);
        used
    }
}

/// The fewest bytes a record (its head) and a field (an empty state) take.
const RECORD_BYTES: usize = 18;
const FIELD_BYTES: usize = 5;

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// `n` items of at least `size` bytes each, or as many as the bytes left can hold: a
    /// damaged count never reserves more memory than the chunk could fill.
    fn at_most(&self, n: usize, size: usize) -> usize {
        n.min(self.buf.len() / size)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, CodecError> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError("text is not UTF-8"))
    }
}

/// The dictionary and record count of a chunk of either version.
fn header<'a>(c: &mut Cursor<'a>) -> Result<(Vec<&'a str>, u32), CodecError> {
    if !matches!(c.u8()?, VERSION | columnar::VERSION) {
        return Err(CodecError("unknown version"));
    }
    let n = c.u16()? as usize;
    let mut names = Vec::with_capacity(c.at_most(n, 1));
    for _ in 0..n {
        let len = c.u8()? as usize;
        names.push(c.str(len)?);
    }
    Ok((names, c.u32()?))
}

/// Re-encodes a chunk in the compressed format (version 2, see [`columnar`]) that the
/// chunks table keeps. A chunk that does not re-encode (none the encoder writes) is kept as
/// it is: both versions decode.
pub fn compress(chunk: Vec<u8>) -> Vec<u8> {
    if chunk.first() != Some(&VERSION) {
        return chunk;
    }
    columnar::compress(&chunk).unwrap_or(chunk)
}

pub(super) fn parse_names(names: Vec<&str>) -> Result<Vec<ParamName>, CodecError> {
    names
        .into_iter()
        .map(|n| ParamName::parse(n).map_err(|_| CodecError("parameter name")))
        .collect()
}

/// Decodes every record of a chunk (either version) belonging to `machine_id`.
pub fn decode(machine_id: &MachineId, chunk: &[u8]) -> Result<Vec<StoredRecord>, CodecError> {
    if chunk.first() == Some(&columnar::VERSION) {
        return columnar::decode(machine_id, chunk);
    }
    let mut c = Cursor { buf: chunk };
    let (names, count) = header(&mut c)?;
    // Checked again, like machine ids: the file may be damaged or come from elsewhere.
    let names = names
        .into_iter()
        .map(|n| ParamName::parse(n).map_err(|_| CodecError("parameter name")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(c.at_most(count as usize, RECORD_BYTES));
    for _ in 0..count {
        let seq = c.u64()?;
        let ts = Timestamp::from_nanos(c.u64()? as i64);
        let n = c.u16()? as usize;
        let mut fields = Fields::with_capacity(c.at_most(n, FIELD_BYTES));
        let mut averages = Averages::new();
        for _ in 0..n {
            let name = names
                .get(c.u16()? as usize)
                .ok_or(CodecError("name index"))?
                .clone();
            let value = match c.u8()? {
                0 => {
                    let v = c.f64()?;
                    averages.push(c.f64()?);
                    Value::Number(v)
                }
                1 => {
                    let len = c.u16()? as usize;
                    Value::State(CompactString::from(c.str(len)?))
                }
                _ => return Err(CodecError("field tag")),
            };
            fields.push(Field { name, value });
        }
        let record = ProcessedRecord {
            machine_id: machine_id.clone(),
            timestamp: ts,
            fields,
            averages,
        };
        out.push(StoredRecord { seq, record });
    }
    Ok(out)
}

/// Appends to `out` the (time, arrival, value) of one numeric parameter in a chunk, within
/// the bounds; skips everything else without building records (the analytics hot path).
pub fn values_of(
    chunk: &[u8],
    parameter: &str,
    since: Timestamp,
    until: Timestamp,
    out: &mut Vec<(Timestamp, u64, f64)>,
) -> Result<(), CodecError> {
    if chunk.first() == Some(&columnar::VERSION) {
        return columnar::values_of(chunk, parameter, since..=until, out);
    }
    let mut c = Cursor { buf: chunk };
    let (names, count) = header(&mut c)?;
    let Some(wanted) = names.iter().position(|n| *n == parameter) else {
        return Ok(());
    };
    for _ in 0..count {
        let seq = c.u64()?;
        let ts = Timestamp::from_nanos(c.u64()? as i64);
        let n = c.u16()?;
        let in_range = ts >= since && ts <= until;
        for _ in 0..n {
            let idx = c.u16()? as usize;
            match c.u8()? {
                0 => {
                    let v = c.f64()?;
                    c.take(8)?;
                    if idx == wanted && in_range {
                        out.push((ts, seq, v));
                    }
                }
                1 => {
                    let len = c.u16()? as usize;
                    c.take(len)?;
                }
                _ => return Err(CodecError("field tag")),
            }
        }
    }
    Ok(())
}

/// One row of the log: some of a commit's records, encoded.
#[derive(Debug)]
pub struct LogEntry {
    /// How many records it holds.
    pub records: usize,
    /// The encoded records.
    pub data: Vec<u8>,
}

/// A log entry takes no more sections once it holds this many bytes: a large commit becomes
/// several rows rather than one value beyond the database's limit.
const LOG_ENTRY_BYTES: usize = 2 * CHUNK_BYTES;

/// The log's format: version 2 numbers records from a base in the entry's head, which the
/// writer sets once it knows it; version 1 (files of earlier releases) numbered each record
/// outright.
const LOG_VERSION: u8 = 2;
const LOG_V1: u8 = 1;
/// Where a version 2 entry keeps its base.
const LOG_BASE: std::ops::Range<usize> = 1..9;

/// Where one machine's chunk lies in a log entry, and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The machine.
    pub machine: MachineId,
    /// Which of the batch's entries holds it.
    pub entry: usize,
    /// Its chunk's bytes within that entry.
    pub range: std::ops::Range<usize>,
    /// How many records.
    pub records: usize,
    /// The first and last record's arrival number, counted from the entry's base.
    pub first: u64,
    pub last: u64,
    /// The earliest and latest time of its records.
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
}

/// Records encoded as log entries, with where each machine's records are in them.
#[derive(Debug)]
pub struct Batch {
    /// The arrival number its records count from (set by the writer).
    pub base: u64,
    /// The entries, to be stored as they are.
    pub entries: Vec<LogEntry>,
    /// Each machine's chunks in the entries, in the order of the entries.
    pub sections: Vec<Section>,
}

impl Batch {
    /// How many records the batch holds.
    pub fn records(&self) -> usize {
        self.entries.iter().map(|e| e.records).sum()
    }

    /// Numbers the batch's records from `base` on: sets every entry's base.
    pub fn set_base(&mut self, base: u64) {
        self.base = base;
        for e in &mut self.entries {
            e.data[LOG_BASE].copy_from_slice(&base.to_le_bytes());
        }
    }
}

/// Encodes one commit's records for the log: each machine's chunks, after its name, in
/// entries of about [`LOG_ENTRY_BYTES`] at most. Arrival numbers count from the base, which
/// [`Batch::set_base`] sets (0 until then).
///
/// ```text
/// log     := version:u8 base:u64 n_sections:u32 section*
/// section := len:u8 machine_id chunk_len:u32 chunk
/// ```
pub fn encode_log<'a, R: AsRef<ProcessedRecord> + 'a>(
    machines: impl IntoIterator<Item = (&'a MachineId, &'a [(u64, R)])>,
) -> Batch {
    encode_log_sized(machines, 0)
}

/// [`encode_log`] into a first entry of `bytes` capacity (what the records will take, when
/// the caller knows: an entry grown by doubling copies itself about once over).
fn encode_log_sized<'a, R: AsRef<ProcessedRecord> + 'a>(
    machines: impl IntoIterator<Item = (&'a MachineId, &'a [(u64, R)])>,
    bytes: usize,
) -> Batch {
    fn fresh(capacity: usize) -> LogEntry {
        let mut data = Vec::with_capacity(capacity.clamp(16, LOG_ENTRY_BYTES + CHUNK_BYTES));
        data.push(LOG_VERSION);
        data.extend_from_slice(&0u64.to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        LogEntry { records: 0, data }
    }
    fn seal(entry: &mut LogEntry, sections: u32) {
        entry.data[LOG_BASE.end..LOG_BASE.end + 4].copy_from_slice(&sections.to_le_bytes());
    }
    let mut batch = Batch {
        base: 0,
        entries: Vec::new(),
        sections: Vec::new(),
    };
    let mut entry = fresh(bytes);
    let mut sections = 0u32;
    let mut encoder = Encoder::default();
    for (machine, rows) in machines {
        let mut rest = rows;
        while !rest.is_empty() {
            if entry.data.len() >= LOG_ENTRY_BYTES {
                seal(&mut entry, sections);
                let left = bytes.saturating_sub(entry.data.len());
                batch
                    .entries
                    .push(std::mem::replace(&mut entry, fresh(left)));
                sections = 0;
            }
            entry.data.push(machine.as_str().len() as u8);
            entry.data.extend_from_slice(machine.as_str().as_bytes());
            let len_at = entry.data.len();
            entry.data.extend_from_slice(&0u32.to_le_bytes());
            let at = entry.data.len();
            let used = encoder.encode(rest, &mut entry.data);
            let len = (entry.data.len() - at) as u32;
            entry.data[len_at..at].copy_from_slice(&len.to_le_bytes());
            let (piece, tail) = rest.split_at(used);
            rest = tail;
            let (ts_min, ts_max, first, last) = super::writer::bounds(piece);
            batch.sections.push(Section {
                machine: machine.clone(),
                entry: batch.entries.len(),
                range: at..entry.data.len(),
                records: piece.len(),
                first,
                last,
                ts_min,
                ts_max,
            });
            entry.records += piece.len();
            sections += 1;
        }
    }
    if sections > 0 {
        seal(&mut entry, sections);
        batch.entries.push(entry);
    }
    batch
}

/// Encodes one request's records for the log, each numbered by its place in `records`:
/// the work a request's own task does, so that the writer only stores bytes.
pub fn encode_batch(records: &[std::sync::Arc<ProcessedRecord>]) -> Batch {
    let Some(first) = records.first() else {
        return encode_log(std::iter::empty::<(&MachineId, &[(u64, &ProcessedRecord)])>());
    };
    // Grouped by machine with a counting sort: one pass to number the machines and count
    // their records, one to place each record, and no vector that grows record by record.
    let mut index: HashMap<&MachineId, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut machines: Vec<(&MachineId, usize)> = Vec::new();
    // What the entry will take: each record's bytes, and for each machine its name, the
    // chunk's head and a dictionary (a guess; the entry grows if it is short).
    let mut bytes = 0;
    let group: Vec<usize> = records
        .iter()
        .map(|r| {
            let g = *index.entry(&r.machine_id).or_insert_with(|| {
                machines.push((&r.machine_id, 0));
                bytes += 256;
                machines.len() - 1
            });
            machines[g].1 += 1;
            bytes += RECORD_BYTES
                + r.fields
                    .iter()
                    .map(|f| match &f.value {
                        Value::Number(_) => 19,
                        Value::State(s) => FIELD_BYTES + s.len(),
                    })
                    .sum::<usize>();
            g
        })
        .collect();
    let mut starts = Vec::with_capacity(machines.len());
    let mut total = 0;
    for (_, n) in &machines {
        starts.push(total);
        total += n;
    }
    let mut rows: Vec<(u64, &ProcessedRecord)> = vec![(0, first); records.len()];
    let mut next = starts.clone();
    for (i, (r, g)) in records.iter().zip(group).enumerate() {
        rows[next[g]] = (i as u64, r);
        next[g] += 1;
    }
    encode_log_sized(
        machines
            .iter()
            .zip(starts)
            .map(|((m, n), start)| (*m, &rows[start..start + n])),
        bytes,
    )
}

/// Decodes every record of a log entry.
pub fn decode_log(entry: &[u8]) -> Result<Vec<StoredRecord>, super::StoreError> {
    let damaged = |e: CodecError| super::StoreError::Damaged(e.to_string());
    let mut c = Cursor { buf: entry };
    let base = match c.u8().map_err(damaged)? {
        LOG_V1 => 0,
        LOG_VERSION => c.u64().map_err(damaged)?,
        _ => return Err(damaged(CodecError("unknown log version"))),
    };
    let sections = c.u32().map_err(damaged)?;
    let mut out = Vec::new();
    for _ in 0..sections {
        let len = c.u8().map_err(damaged)? as usize;
        let machine = machine_id(c.str(len).map_err(damaged)?)?;
        let len = c.u32().map_err(damaged)? as usize;
        let mut records = decode(&machine, c.take(len).map_err(damaged)?).map_err(damaged)?;
        for r in &mut records {
            r.seq = r.seq.wrapping_add(base);
        }
        out.extend(records);
    }
    if !c.buf.is_empty() {
        return Err(damaged(CodecError("trailing bytes")));
    }
    Ok(out)
}

/// A chunk made of records that are encoded already (a log's sections), copied rather than
/// decoded and encoded again: how the SQLite writer compacts. Copying bytes that lie side by
/// side costs a fraction of encoding records scattered over the heap.
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    names: Vec<String>,
    index: HashMap<String, u16, foldhash::fast::RandomState>,
    body: Vec<u8>,
    records: usize,
    ts: Option<(Timestamp, Timestamp)>,
    seqs: Option<(u64, u64)>,
}

/// A chunk built, with what its row in the chunks table says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub data: Vec<u8>,
    pub records: usize,
    pub ts_min: Timestamp,
    pub ts_max: Timestamp,
    pub seq_min: u64,
    pub seq_max: u64,
}

impl ChunkBuilder {
    /// How many records the chunk holds so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Copies records of `chunk` from the `skip`th on, at most `take` of them, with arrival
    /// numbers counted from `base`; stops early once the chunk is full (it passed
    /// [`CHUNK_BYTES`] or its dictionary could overflow: then it takes nothing more and the
    /// next records start a new chunk). Returns how many it copied. Lengths and name indexes
    /// are checked (the bytes are the writer's own, made moments ago; text is checked when
    /// a chunk is decoded).
    pub fn extend(
        &mut self,
        chunk: &[u8],
        base: u64,
        skip: usize,
        take: usize,
    ) -> Result<usize, CodecError> {
        if chunk.first() != Some(&VERSION) {
            return Err(CodecError("only version 1 chunks are copied"));
        }
        let mut c = Cursor { buf: chunk };
        let (names, count) = header(&mut c)?;
        if self.records > 0 && self.names.len() + names.len() > MAX_NAMES {
            return Ok(0);
        }
        let mut identity = true;
        let mut remap = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let to = match self.index.get(*name) {
                Some(to) => *to,
                None => {
                    self.names.push((*name).to_owned());
                    let to = (self.names.len() - 1) as u16;
                    self.index.insert((*name).to_owned(), to);
                    to
                }
            };
            identity &= to as usize == i;
            remap.push(to);
        }
        let mut taken = 0;
        for i in 0..count as usize {
            if taken == take || (self.records > 0 && self.body.len() >= CHUNK_BYTES) {
                break;
            }
            let record = c.buf;
            let seq = c.u64()?.wrapping_add(base);
            let ts = Timestamp::from_nanos(c.u64()? as i64);
            let n = c.u16()?;
            for _ in 0..n {
                if c.u16()? as usize >= names.len() {
                    return Err(CodecError("name index"));
                }
                match c.u8()? {
                    0 => {
                        c.take(16)?;
                    }
                    1 => {
                        let len = c.u16()? as usize;
                        c.take(len)?;
                    }
                    _ => return Err(CodecError("field tag")),
                }
            }
            if i < skip {
                continue;
            }
            let record = &record[..record.len() - c.buf.len()];
            let at = self.body.len();
            if identity {
                self.body.extend_from_slice(record);
            } else {
                self.copy_remapped(record, &remap)?;
            }
            self.body[at..at + 8].copy_from_slice(&seq.to_le_bytes());
            self.ts = Some(
                self.ts
                    .map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))),
            );
            self.seqs = Some(self.seqs.map_or((seq, seq), |(lo, _)| (lo, seq)));
            self.records += 1;
            taken += 1;
        }
        Ok(taken)
    }

    /// Appends one record (checked already) with its name indexes mapped by `remap`.
    fn copy_remapped(&mut self, record: &[u8], remap: &[u16]) -> Result<(), CodecError> {
        let mut c = Cursor { buf: record };
        self.body.extend_from_slice(c.take(RECORD_BYTES)?);
        while !c.buf.is_empty() {
            let idx = c.u16()? as usize;
            let to = *remap.get(idx).ok_or(CodecError("name index"))?;
            self.body.extend_from_slice(&to.to_le_bytes());
            let tag = c.u8()?;
            self.body.push(tag);
            let len = if tag == 0 {
                16
            } else {
                let len = c.u16()?;
                self.body.extend_from_slice(&len.to_le_bytes());
                len as usize
            };
            self.body.extend_from_slice(c.take(len)?);
        }
        Ok(())
    }

    /// The chunk, or `None` when it holds no record.
    pub fn finish(self) -> Option<Built> {
        let ((ts_min, ts_max), (seq_min, seq_max)) = (self.ts?, self.seqs?);
        let header = 7 + self.names.iter().map(|n| 1 + n.len()).sum::<usize>();
        let mut data = Vec::with_capacity(header + self.body.len());
        data.push(VERSION);
        data.extend_from_slice(&(self.names.len() as u16).to_le_bytes());
        for n in &self.names {
            data.push(n.len() as u8);
            data.extend_from_slice(n.as_bytes());
        }
        data.extend_from_slice(&(self.records as u32).to_le_bytes());
        data.extend_from_slice(&self.body);
        Some(Built {
            data: compress(data),
            records: self.records,
            ts_min,
            ts_max,
            seq_min,
            seq_max,
        })
    }
}

/// A machine id read back from a store (checked again: the file may come from elsewhere).
pub fn machine_id(s: &str) -> Result<MachineId, super::StoreError> {
    MachineId::parse(s)
        .map_err(|e| super::StoreError::Damaged(format!("stored machine id {s:?}: {e}")))
}

/// The last `n` records by arrival, oldest first: what recovery replays.
pub fn last_by_arrival(
    mut records: Vec<StoredRecord>,
    n: usize,
) -> impl Iterator<Item = ProcessedRecord> {
    records.sort_by_key(|r| r.seq);
    let skip = records.len().saturating_sub(n);
    records.into_iter().skip(skip).map(|r| r.record)
}

/// A record ordered by (time, arrival), reversed: the heap's top is the oldest kept.
struct ByTime(StoredRecord);

impl ByTime {
    fn key(&self) -> (Timestamp, u64) {
        (self.0.record.timestamp, self.0.seq)
    }
}
impl PartialEq for ByTime {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for ByTime {}
impl PartialOrd for ByTime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByTime {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}

/// Collects the newest `limit` records within bounds from chunks fed newest-first (by their
/// latest time), and says when no further chunk can matter.
pub struct Newest {
    heap: std::collections::BinaryHeap<ByTime>,
    limit: usize,
    since: Timestamp,
    until: Timestamp,
}

impl Newest {
    /// Keeps at most `limit` records with `since <= time <= until`.
    pub fn new(limit: usize, since: Timestamp, until: Timestamp) -> Self {
        Newest {
            heap: std::collections::BinaryHeap::new(),
            limit,
            since,
            until,
        }
    }

    /// Whether a chunk whose latest record is at `ts_max` can still change the result.
    pub fn wants(&self, ts_max: Timestamp) -> bool {
        self.limit > 0
            && (self.heap.len() < self.limit
                || self
                    .heap
                    .peek()
                    .is_none_or(|oldest| ts_max >= oldest.key().0))
    }

    /// Takes the records of one chunk.
    pub fn add(&mut self, machine_id: &MachineId, chunk: &[u8]) -> Result<(), CodecError> {
        for r in decode(machine_id, chunk)? {
            self.push(r);
        }
        Ok(())
    }

    /// Takes one record (kept only if it is within bounds and among the newest).
    pub fn push(&mut self, r: StoredRecord) {
        if r.record.timestamp < self.since || r.record.timestamp > self.until {
            return;
        }
        self.heap.push(ByTime(r));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// The records kept, oldest first.
    pub fn finish(self) -> Vec<std::sync::Arc<ProcessedRecord>> {
        let mut out: Vec<StoredRecord> = self.heap.into_iter().map(|b| b.0).collect();
        out.sort_by_key(|r| (r.record.timestamp, r.seq));
        out.into_iter()
            .map(|r| std::sync::Arc::new(r.record))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// All of `rows` as one chunk (the tests' rows always fit one).
    fn encode<R: AsRef<ProcessedRecord>>(rows: &[(u64, R)]) -> Vec<u8> {
        let (chunk, used) = encode_some(rows);
        assert_eq!(used, rows.len());
        chunk
    }

    fn record(ts: i64, fields: Vec<(&str, Value)>) -> ProcessedRecord {
        let averages = fields
            .iter()
            .filter_map(|(_, v)| match v {
                Value::Number(x) => Some(x * 0.5),
                Value::State(_) => None,
            })
            .collect();
        ProcessedRecord {
            machine_id: MachineId::parse("m").unwrap(),
            timestamp: Timestamp::from_nanos(ts),
            fields: fields
                .into_iter()
                .map(|(n, value)| Field {
                    name: ParamName::parse(n).unwrap(),
                    value,
                })
                .collect(),
            averages,
        }
    }

    #[test]
    fn round_trip_and_values() {
        let rs = vec![
            record(
                -5,
                vec![
                    ("t", Value::Number(1.5)),
                    ("s", Value::State("RUNNING".into())),
                ],
            ),
            record(
                7,
                vec![("s", Value::State("ü".into())), ("x", Value::Number(-0.0))],
            ),
            record(9, vec![("t", Value::Number(f64::MAX))]),
        ];
        let rows: Vec<(u64, &ProcessedRecord)> = rs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 10, r))
            .collect();
        let chunk = encode(&rows);
        let m = MachineId::parse("m").unwrap();
        let back = decode(&m, &chunk).unwrap();
        assert_eq!(
            back.iter().map(|s| s.seq).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        assert_eq!(back.into_iter().map(|s| s.record).collect::<Vec<_>>(), rs);
        let mut v = Vec::new();
        values_of(&chunk, "t", Timestamp::MIN, Timestamp::MAX, &mut v).unwrap();
        assert_eq!(
            v.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![1.5, f64::MAX]
        );
        v.clear();
        values_of(
            &chunk,
            "t",
            Timestamp::from_nanos(0),
            Timestamp::MAX,
            &mut v,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        v.clear();
        values_of(&chunk, "nothing", Timestamp::MIN, Timestamp::MAX, &mut v).unwrap();
        assert!(v.is_empty());
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let r = record(
            1,
            vec![("t", Value::Number(1.0)), ("s", Value::State("A".into()))],
        );
        let chunk = encode(&[(1, &r)]);
        let m = MachineId::parse("m").unwrap();
        for cut in 0..chunk.len() {
            assert!(decode(&m, &chunk[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = chunk.clone();
        bad[0] = 99;
        assert!(decode(&m, &bad).is_err());
    }

    #[test]
    fn log_entries_round_trip_and_damage_is_an_error() {
        let a = record(1, vec![("t", Value::Number(1.5))]);
        let mut b = record(2, vec![("s", Value::State("IDLE".into()))]);
        b.machine_id = MachineId::parse("press-7").unwrap();
        let (ma, mb) = (a.machine_id.clone(), b.machine_id.clone());
        let rows_a = [(3u64, &a), (5, &a)];
        let rows_b = [(4u64, &b)];
        let mut batch = encode_log([(&ma, &rows_a[..]), (&mb, &rows_b[..])]);
        batch.set_base(100);
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.records(), 3);
        let entry = &batch.entries[0].data;
        let back = decode_log(entry).unwrap();
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![103, 105, 104]
        );
        assert_eq!(back[2].record, b);
        assert_eq!(back[0].record, a);
        // Each section says where its machine's chunk is, with the numbers before the base.
        let sections: Vec<(String, usize, u64, u64)> = batch
            .sections
            .iter()
            .map(|s| (s.machine.to_string(), s.records, s.first, s.last))
            .collect();
        assert_eq!(
            sections,
            vec![("m".into(), 2, 3, 5), ("press-7".into(), 1, 4, 4)]
        );
        let s = &batch.sections[1];
        let decoded = decode(&mb, &entry[s.range.clone()]).unwrap();
        assert_eq!((decoded[0].seq, &decoded[0].record), (4, &b));
        assert_eq!((s.ts_min, s.ts_max), (b.timestamp, b.timestamp));
        for cut in 0..entry.len() {
            assert!(decode_log(&entry[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = entry.clone();
        longer.push(0);
        assert!(decode_log(&longer).is_err());
        // An entry of an earlier release (version 1: no base, each record numbered outright).
        let mut v1 = vec![LOG_V1];
        v1.extend_from_slice(&entry[LOG_BASE.end..]);
        let back = decode_log(&v1).unwrap();
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 5, 4]
        );
        let none: [(&MachineId, &[(u64, &ProcessedRecord)]); 0] = [];
        assert!(encode_log(none).entries.is_empty());
        assert!(encode_batch(&[]).entries.is_empty());
    }

    #[test]
    fn a_batch_numbers_records_by_their_place_in_the_request() {
        let mut rs: Vec<std::sync::Arc<ProcessedRecord>> = Vec::new();
        for i in 0..6 {
            let mut r = record(i, vec![("t", Value::Number(i as f64))]);
            r.machine_id = MachineId::parse(if i % 3 == 0 { "a" } else { "b" }).unwrap();
            rs.push(std::sync::Arc::new(r));
        }
        let mut batch = encode_batch(&rs);
        batch.set_base(10);
        let mut back = decode_log(&batch.entries[0].data).unwrap();
        back.sort_by_key(|r| r.seq);
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (10..16).collect::<Vec<_>>()
        );
        assert!(back.iter().zip(&rs).all(|(b, r)| b.record == **r));
    }

    /// Records of `fields` fields each, all named afresh, as a chunk's rows.
    fn fresh_names(records: usize, fields: usize, state: &str) -> Vec<ProcessedRecord> {
        (0..records)
            .map(|i| {
                let names: Vec<String> = (0..fields).map(|j| format!("p{i}.{j}")).collect();
                record(
                    i as i64,
                    names
                        .iter()
                        .map(|n| (n.as_str(), Value::State(state.into())))
                        .collect(),
                )
            })
            .collect()
    }

    /// Decodes every chunk and checks that they hold `rs` in order, each piece its own rows.
    fn assert_pieces(rs: &[ProcessedRecord], max_records: usize) -> usize {
        let rows: Vec<(u64, &ProcessedRecord)> =
            rs.iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
        let m = MachineId::parse("m").unwrap();
        let mut back = Vec::new();
        let mut pieces = 0;
        for (piece, chunk) in chunks(&rows, max_records) {
            assert!(!piece.is_empty() && piece.len() <= max_records);
            let decoded = decode(&m, &chunk).unwrap();
            assert_eq!(decoded.len(), piece.len());
            back.extend(decoded);
            pieces += 1;
        }
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (0..rs.len() as u64).collect::<Vec<_>>()
        );
        assert!(back.into_iter().map(|r| r.record).eq(rs.iter().cloned()));
        pieces
    }

    #[test]
    fn a_chunk_ends_before_its_dictionary_overflows() {
        // 300 records of 256 new names each: 76,800 names, more than a u16 index reaches.
        let rs = fresh_names(300, 256, "");
        assert_eq!(assert_pieces(&rs, usize::MAX), 2);
        assert_eq!(assert_pieces(&rs[..10], 4), 3);
    }

    #[test]
    fn big_records_make_more_chunks_and_log_entries() {
        // 64 KiB a record: 8 MiB chunks hold about 128 of them, 16 MiB log entries twice that.
        let big = "x".repeat(256);
        let rs = fresh_names(400, 256, &big);
        assert_eq!(assert_pieces(&rs, usize::MAX), 4);
        let rows: Vec<(u64, &ProcessedRecord)> =
            rs.iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
        let m = MachineId::parse("m").unwrap();
        let entries = encode_log([(&m, &rows[..])]).entries;
        assert_eq!(entries.len(), 2);
        assert!(
            entries
                .iter()
                .all(|e| e.data.len() < LOG_ENTRY_BYTES + CHUNK_BYTES + (1 << 17))
        );
        assert_eq!(entries.iter().map(|e| e.records).sum::<usize>(), 400);
        let back: Vec<StoredRecord> = entries
            .iter()
            .flat_map(|e| decode_log(&e.data).unwrap())
            .collect();
        assert!(back.into_iter().map(|r| r.record).eq(rs.iter().cloned()));
    }

    #[test]
    fn a_damaged_count_reserves_nothing_it_cannot_fill() {
        // Four billion records claimed, none there: an error, not an allocation of 400 GB.
        let chunk = [VERSION, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode(&MachineId::parse("m").unwrap(), &chunk),
            Err(CodecError("truncated"))
        );
        let mut names = vec![VERSION, 0xff, 0xff];
        names.extend([0; 4]);
        assert!(decode(&MachineId::parse("m").unwrap(), &names).is_err());
    }

    proptest! {
        /// Whatever the bytes (a damaged file, a file from elsewhere), decoding answers with
        /// records or an error: never a panic, never an allocation the bytes cannot back.
        #[test]
        fn any_bytes_decode_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let m = MachineId::parse("m").unwrap();
            let mut out = Vec::new();
            let _ = decode(&m, &bytes);
            let _ = values_of(&bytes, "t", Timestamp::MIN, Timestamp::MAX, &mut out);
            let _ = decode_log(&bytes);
            // And a valid chunk and log entry with a few bytes changed.
            let r = record(3, vec![("t", Value::Number(2.0)), ("s", Value::State("ON".into()))]);
            let rows = [(1u64, &r), (2, &r)];
            let mut chunk = encode(&rows);
            let mut entry = encode_log([(&m, &rows[..])]).entries.remove(0).data;
            for (at, byte) in flips {
                let i = at.index(chunk.len());
                chunk[i] = byte;
                let j = at.index(entry.len());
                entry[j] = byte;
            }
            let _ = decode(&m, &chunk);
            let _ = values_of(&chunk, "t", Timestamp::MIN, Timestamp::MAX, &mut out);
            let _ = decode_log(&entry);
        }

        #[test]
        fn any_records_round_trip(
            rows in prop::collection::vec(
                (any::<i64>(), prop::collection::vec((0usize..5, prop_oneof![
                    any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(Value::Number),
                    "[ -~]{0,20}".prop_map(|s| Value::State(s.into())),
                ]), 0..6)),
                0..20,
            )
        ) {
            let names = ["a", "b", "c.d", "e_f", "g-h"];
            let rs: Vec<ProcessedRecord> = rows
                .into_iter()
                .map(|(ts, fs)| {
                    let mut seen = Vec::new();
                    let fields: Vec<(&str, Value)> = fs
                        .into_iter()
                        .filter(|(i, _)| { let fresh = !seen.contains(i); seen.push(*i); fresh })
                        .map(|(i, v)| (names[i], v))
                        .collect();
                    record(ts, fields)
                })
                .collect();
            let rows: Vec<(u64, &ProcessedRecord)> =
                rs.iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
            let chunk = encode(&rows);
            let back = decode(&MachineId::parse("m").unwrap(), &chunk).unwrap();
            prop_assert_eq!(back.into_iter().map(|s| s.record).collect::<Vec<_>>(), rs);
        }
    }
}
