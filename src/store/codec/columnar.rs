//! Version 2 of the chunk: compressed by column, in the manner of Gorilla and InfluxDB's TSM.
//!
//! ```text
//! chunk   := 2:u8 n_names:u16 name* n_records:u32 seqs times shapes records columns
//! seqs    := runs of the delta-of-delta of the arrival numbers (zigzag varints)
//! times   := the same for the timestamps (a regular interval is one run of zeros)
//! shapes  := n:varint (n_fields:varint (name_index << 1 | is_state):varint*)*
//! records := runs of each record's shape index
//! columns := for each name in order: if it has numbers, values and averages, each
//!            len:varint + Gorilla XOR bits; if it has states, len:varint + a dictionary
//!            (n:varint (len:varint utf8)*) and runs of the indexes
//! ```
//! A run is `value:varint run:varint`. A column's values are in record order; a record's
//! shape says which columns its fields come from. Lengths let the analytics scan skip
//! every column but the one it reads.

use std::collections::HashMap;

use super::bits::{
    delta_of_delta, put_runs, put_varint, put_xor, runs, undo_delta_of_delta, varint, xor,
};
use compact_str::CompactString;

use super::{CHUNK_BYTES, CodecError, Cursor, FIELD_BYTES, RECORD_BYTES, StoredRecord};
use crate::pipeline::{Averages, ProcessedRecord};
use crate::reading::{Field, Fields, MachineId, Value};
use crate::timestamp::Timestamp;

pub(super) const VERSION: u8 = 2;

/// Most records and fields a chunk holds (what a version 1 chunk of [`CHUNK_BYTES`] and one
/// record more can): a damaged count never makes the decoder expand runs without end.
const MAX_RECORDS: usize = CHUNK_BYTES / RECORD_BYTES + 1;
const MAX_FIELDS: usize = 2 * CHUNK_BYTES / FIELD_BYTES;

/// One parameter's values in a chunk, in record order.
#[derive(Default)]
struct Column<'a> {
    values: Vec<u64>,
    averages: Vec<u64>,
    states: Vec<&'a [u8]>,
}

/// Re-encodes a version 1 chunk as version 2. An error means the bytes are not a chunk the
/// encoder wrote (the caller keeps them as they are).
pub(super) fn compress(v1: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut c = Cursor { buf: v1 };
    let names_at = 1;
    let (names, count) = super::header(&mut c)?;
    let count = count as usize;
    if count > MAX_RECORDS {
        return Err(CodecError("too many records"));
    }
    let dictionary = &v1[names_at..v1.len() - c.buf.len() - 4];
    let mut seqs = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut columns: Vec<Column> = (0..names.len()).map(|_| Column::default()).collect();
    let mut shapes: HashMap<Vec<u64>, u64, foldhash::fast::RandomState> = HashMap::default();
    let mut shape_list: Vec<Vec<u64>> = Vec::new();
    let mut of_record = Vec::with_capacity(count);
    let mut shape = Vec::new();
    let mut fields = 0usize;
    for _ in 0..count {
        seqs.push(c.u64()?);
        times.push(c.u64()?);
        let n = c.u16()?;
        shape.clear();
        for _ in 0..n {
            let idx = c.u16()? as usize;
            let column = columns.get_mut(idx).ok_or(CodecError("name index"))?;
            match c.u8()? {
                0 => {
                    column.values.push(c.u64()?);
                    column.averages.push(c.u64()?);
                    shape.push((idx as u64) << 1);
                }
                1 => {
                    let len = c.u16()? as usize;
                    column.states.push(c.take(len)?);
                    shape.push(((idx as u64) << 1) | 1);
                }
                _ => return Err(CodecError("field tag")),
            }
        }
        fields += shape.len();
        let next = shape_list.len() as u64;
        let i = *shapes.entry(shape.clone()).or_insert_with(|| {
            shape_list.push(shape.clone());
            next
        });
        of_record.push(i);
    }
    if !c.buf.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    if fields > MAX_FIELDS {
        return Err(CodecError("too many fields"));
    }
    let mut out = Vec::with_capacity(v1.len() / 4);
    out.push(VERSION);
    out.extend_from_slice(dictionary);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    put_runs(&mut out, delta_of_delta(&seqs));
    put_runs(&mut out, delta_of_delta(&times));
    put_varint(&mut out, shape_list.len() as u64);
    for s in &shape_list {
        put_varint(&mut out, s.len() as u64);
        for &f in s {
            put_varint(&mut out, f);
        }
    }
    put_runs(&mut out, of_record);
    for col in &columns {
        if !col.values.is_empty() {
            for bits in [put_xor(&col.values), put_xor(&col.averages)] {
                put_varint(&mut out, bits.len() as u64);
                out.extend_from_slice(&bits);
            }
        }
        if !col.states.is_empty() {
            let mut dict: HashMap<&[u8], u64, foldhash::fast::RandomState> = HashMap::default();
            let mut words: Vec<&[u8]> = Vec::new();
            let indexes: Vec<u64> = col
                .states
                .iter()
                .map(|s| {
                    *dict.entry(s).or_insert_with(|| {
                        words.push(s);
                        words.len() as u64 - 1
                    })
                })
                .collect();
            let mut body = Vec::new();
            put_varint(&mut body, words.len() as u64);
            for w in &words {
                put_varint(&mut body, w.len() as u64);
                body.extend_from_slice(w);
            }
            put_runs(&mut body, indexes);
            put_varint(&mut out, body.len() as u64);
            out.extend_from_slice(&body);
        }
    }
    Ok(out)
}

/// A field of a shape: which name, and whether it is a state.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub name: usize,
    pub state: bool,
}

/// The parts of a version 2 chunk before its columns, with the columns' bytes.
pub(super) struct Layout<'a> {
    pub names: Vec<&'a str>,
    pub seqs: Vec<u64>,
    pub times: Vec<u64>,
    pub shapes: Vec<Vec<Slot>>,
    pub of_record: Vec<usize>,
    /// For each name, how many numbers and states the chunk holds.
    pub counts: Vec<(usize, usize)>,
    pub columns: &'a [u8],
}

pub(super) fn layout(chunk: &[u8]) -> Result<Layout<'_>, CodecError> {
    let mut c = Cursor { buf: chunk };
    let (names, count) = super::header(&mut c)?;
    let count = count as usize;
    if count > MAX_RECORDS {
        return Err(CodecError("too many records"));
    }
    let mut buf = c.buf;
    let mut seqs = runs(&mut buf, count)?;
    undo_delta_of_delta(&mut seqs);
    let mut times = runs(&mut buf, count)?;
    undo_delta_of_delta(&mut times);
    let n_shapes = varint(&mut buf)? as usize;
    let mut shapes = Vec::with_capacity(n_shapes.min(buf.len()));
    for _ in 0..n_shapes {
        let n = varint(&mut buf)? as usize;
        let mut shape = Vec::with_capacity(n.min(buf.len()));
        for _ in 0..n {
            let f = varint(&mut buf)?;
            let name = (f >> 1) as usize;
            if name >= names.len() {
                return Err(CodecError("name index"));
            }
            shape.push(Slot {
                name,
                state: f & 1 == 1,
            });
        }
        shapes.push(shape);
    }
    let mut counts = vec![(0usize, 0usize); names.len()];
    let mut fields = 0usize;
    let of_record = runs(&mut buf, count)?
        .into_iter()
        .map(|i| {
            let shape = shapes.get(i as usize).ok_or(CodecError("shape index"))?;
            fields += shape.len();
            if fields > MAX_FIELDS {
                return Err(CodecError("too many fields"));
            }
            for s in shape {
                let n = &mut counts[s.name];
                if s.state { n.1 += 1 } else { n.0 += 1 }
            }
            Ok(i as usize)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Layout {
        names,
        seqs,
        times,
        shapes,
        of_record,
        counts,
        columns: buf,
    })
}

/// One column's stored bytes, taken from the front of `buf`.
fn piece<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let len = varint(buf)? as usize;
    if len > buf.len() {
        return Err(CodecError("column truncated"));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// A name's decoded columns: values and averages (as bits), states.
pub(super) type Decoded<'a> = (Vec<u64>, Vec<u64>, Vec<&'a str>);

/// Decodes every column; with `only`, just that name's numbers (others stay empty).
pub(super) fn columns<'a>(
    l: &Layout<'a>,
    only: Option<usize>,
) -> Result<Vec<Decoded<'a>>, CodecError> {
    let mut buf = l.columns;
    let mut out = Vec::with_capacity(l.counts.len());
    for (i, &(numbers, states)) in l.counts.iter().enumerate() {
        let wanted = only.is_none_or(|o| o == i);
        let mut col: Decoded<'a> = (Vec::new(), Vec::new(), Vec::new());
        if numbers > 0 {
            let (v, a) = (piece(&mut buf)?, piece(&mut buf)?);
            if wanted {
                col.0 = xor(v, numbers)?;
                if only.is_none() {
                    col.1 = xor(a, numbers)?;
                }
            }
        }
        if states > 0 {
            let mut body = piece(&mut buf)?;
            if only.is_none() {
                let n = varint(&mut body)? as usize;
                let mut words = Vec::with_capacity(n.min(body.len()));
                for _ in 0..n {
                    let len = varint(&mut body)? as usize;
                    if len > body.len() {
                        return Err(CodecError("state truncated"));
                    }
                    let (w, rest) = body.split_at(len);
                    body = rest;
                    words
                        .push(std::str::from_utf8(w).map_err(|_| CodecError("text is not UTF-8"))?);
                }
                col.2 = runs(&mut body, states)?
                    .into_iter()
                    .map(|i| {
                        words
                            .get(i as usize)
                            .copied()
                            .ok_or(CodecError("state index"))
                    })
                    .collect::<Result<_, _>>()?;
                if !body.is_empty() {
                    return Err(CodecError("trailing bytes"));
                }
            }
        }
        out.push(col);
        if only.is_some_and(|o| o == i) {
            return Ok(out);
        }
    }
    if only.is_none() && !buf.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(out)
}

/// Decodes a version 2 chunk.
pub(super) fn decode(
    machine_id: &MachineId,
    chunk: &[u8],
) -> Result<Vec<StoredRecord>, CodecError> {
    let mut l = layout(chunk)?;
    let names = super::parse_names(std::mem::take(&mut l.names))?;
    let cols = columns(&l, None)?;
    // Where each column's next value is.
    let mut at = vec![(0usize, 0usize); cols.len()];
    let mut out = Vec::with_capacity(l.seqs.len());
    for ((&seq, &ts), &shape) in l.seqs.iter().zip(&l.times).zip(&l.of_record) {
        let shape = &l.shapes[shape];
        let mut fields = Fields::with_capacity(shape.len());
        let mut averages = Averages::new();
        for slot in shape {
            let (values, avgs, states) = &cols[slot.name];
            let next = &mut at[slot.name];
            let value = if slot.state {
                next.1 += 1;
                let s = states.get(next.1 - 1).ok_or(CodecError("state column"))?;
                Value::State(CompactString::from(*s))
            } else {
                next.0 += 1;
                let (v, a) = values
                    .get(next.0 - 1)
                    .zip(avgs.get(next.0 - 1))
                    .ok_or(CodecError("number column"))?;
                averages.push(f64::from_bits(*a));
                Value::Number(f64::from_bits(*v))
            };
            fields.push(Field {
                name: names[slot.name].clone(),
                value,
            });
        }
        out.push(StoredRecord {
            seq,
            record: ProcessedRecord {
                machine_id: machine_id.clone(),
                timestamp: Timestamp::from_nanos(ts as i64),
                fields,
                averages,
            },
        });
    }
    Ok(out)
}

/// [`values_of`] of a version 2 chunk: decodes the one column only.
pub(super) fn values_of(
    chunk: &[u8],
    parameter: &str,
    range: std::ops::RangeInclusive<Timestamp>,
    out: &mut Vec<(Timestamp, u64, f64)>,
) -> Result<(), CodecError> {
    let l = layout(chunk)?;
    let Some(wanted) = l.names.iter().position(|n| *n == parameter) else {
        return Ok(());
    };
    let cols = columns(&l, Some(wanted))?;
    let values = &cols[wanted].0;
    let mut next = 0;
    for ((&seq, &ts), &shape) in l.seqs.iter().zip(&l.times).zip(&l.of_record) {
        let ts = Timestamp::from_nanos(ts as i64);
        let in_range = range.contains(&ts);
        for slot in &l.shapes[shape] {
            if slot.name == wanted && !slot.state {
                let v = values.get(next).ok_or(CodecError("number column"))?;
                next += 1;
                if in_range {
                    out.push((ts, seq, f64::from_bits(*v)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{
        chunks, compress as compress_chunk, decode as decode_any, values_of as scan,
    };
    use super::*;
    use crate::reading::ParamName;
    use proptest::prelude::*;

    /// A record as the bits of everything it holds.
    type Bits = (u64, i64, Vec<(String, Result<u64, String>)>, Vec<u64>);
    /// A field to build: name index, number bits (or a state), average bits, state index.
    type FieldSpec = (usize, Option<u64>, u64, u8);

    /// The bits of every number, value and average: what "bit-exact" compares.
    fn bits_of(rs: &[StoredRecord]) -> Vec<Bits> {
        rs.iter()
            .map(|s| {
                let r = &s.record;
                (
                    s.seq,
                    r.timestamp.as_nanos(),
                    r.fields
                        .iter()
                        .map(|f| {
                            let v = match &f.value {
                                Value::Number(v) => Ok(v.to_bits()),
                                Value::State(s) => Err(s.to_string()),
                            };
                            (f.name.to_string(), v)
                        })
                        .collect(),
                    r.averages.iter().map(|a| a.to_bits()).collect(),
                )
            })
            .collect()
    }

    fn records(rows: Vec<(u64, i64, Vec<FieldSpec>)>) -> Vec<(u64, ProcessedRecord)> {
        let names = ["a", "b", "c.d", "p"];
        let states = ["ON", "OFF", "", "fault: jam"];
        rows.into_iter()
            .map(|(seq, ts, fs)| {
                let mut fields = Fields::new();
                let mut averages = Averages::new();
                for (name, number, avg, state) in fs {
                    let value = match number {
                        Some(bits) => {
                            averages.push(f64::from_bits(avg));
                            Value::Number(f64::from_bits(bits))
                        }
                        None => Value::State(states[usize::from(state) % 4].into()),
                    };
                    fields.push(Field {
                        name: ParamName::parse(names[name]).unwrap(),
                        value,
                    });
                }
                let r = ProcessedRecord {
                    machine_id: MachineId::parse("m").unwrap(),
                    timestamp: Timestamp::from_nanos(ts),
                    fields,
                    averages,
                };
                (seq, r)
            })
            .collect()
    }

    /// Numbers that stress the XOR coder: any bits (NaN payloads, -0.0, infinities,
    /// subnormals), repeats and near repeats.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            Just((-0.0f64).to_bits()),
            Just(0.0f64.to_bits()),
            Just(f64::NAN.to_bits() | 0x1234),
            Just(f64::MAX.to_bits()),
            (0u64..4).prop_map(|i| (20.0 + i as f64 * 0.1).to_bits()),
        ]
    }

    proptest! {
        /// Version 1 → version 2 → records is bit-exact for every double and every series of
        /// arrival numbers and times, and the analytics scan of the compressed chunk finds what
        /// the full decoder finds.
        #[test]
        fn compressed_chunks_round_trip_bit_exact(
            rows in prop::collection::vec(
                (any::<u64>(), prop_oneof![any::<i64>(), 0i64..3], prop::collection::vec(
                    (0usize..4, prop::option::of(number()), number(), any::<u8>()), 0..5)),
                0..40,
            ),
            regular in any::<bool>(),
        ) {
            let mut rows = records(rows);
            if regular {
                for (i, (seq, r)) in rows.iter_mut().enumerate() {
                    *seq = 1000 + i as u64;
                    r.timestamp = Timestamp::from_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000_000);
                }
            }
            let m = MachineId::parse("m").unwrap();
            for (piece, v1) in chunks(&rows, usize::MAX) {
                let plain = decode_any(&m, &v1).unwrap();
                let v2 = compress(&v1).unwrap();
                prop_assert_eq!(v2[0], VERSION);
                let back = decode_any(&m, &v2).unwrap();
                prop_assert_eq!(bits_of(&back), bits_of(&plain));
                prop_assert_eq!(back.len(), piece.len());
                for (a, b) in [(&v1, "p"), (&v2, "p"), (&v1, "a"), (&v2, "a")].iter().map(|(c, n)| {
                    let mut out = Vec::new();
                    scan(c, n, Timestamp::MIN, Timestamp::MAX, &mut out).unwrap();
                    (out.iter().map(|(t, s, v)| (*t, *s, v.to_bits())).collect::<Vec<_>>(), *n)
                }).collect::<Vec<_>>().chunks(2).map(|p| (p[0].clone(), p[1].clone())) {
                    prop_assert_eq!(a, b);
                }
                // Every cut and a few changed bytes: an error or records, never a panic.
                for cut in 0..v2.len() {
                    let _ = decode_any(&m, &v2[..cut]);
                    let _ = scan(&v2[..cut], "p", Timestamp::MIN, Timestamp::MAX, &mut Vec::new());
                }
                prop_assert_eq!(compress_chunk(v2.clone()), v2);
            }
        }
    }

    #[test]
    fn a_regular_series_compresses_well() {
        let rows: Vec<(u64, Vec<FieldSpec>)> = (0..1000u64)
            .map(|i| {
                let v = (20.0 + (i % 7) as f64 * 0.5).to_bits();
                (i, vec![(0, Some(v), v, 0), (3, None, 0, (i / 100) as u8)])
            })
            .collect();
        let rows = records(
            rows.into_iter()
                .map(|(i, f)| (i * 3, i as i64 * 1_000_000_000, f))
                .collect(),
        );
        let (_, v1) = chunks(&rows, usize::MAX).next().unwrap();
        let v2 = compress(&v1).unwrap();
        // Two doubles a record of 7 repeating values: far below the 8 + 8 bytes of version 1.
        assert!(v2.len() < v1.len() / 4, "{} of {}", v2.len(), v1.len());
        let m = MachineId::parse("m").unwrap();
        assert_eq!(decode_any(&m, &v2).unwrap(), decode_any(&m, &v1).unwrap());
    }
}
