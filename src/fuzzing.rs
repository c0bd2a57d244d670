//! The checks behind the fuzz targets under `fuzz/`, kept here so that the normal test suite
//! replays every saved corpus file through exactly the same checks without building
//! cargo-fuzz (tests/it/fuzz_corpus.rs).
//!
//! Each check takes arbitrary bytes and panics when a property fails: a parser panicking on
//! its own, two parsers that should agree disagreeing, or a value that does not survive a round
//! trip. They are for fuzzing and tests only, which is why the module is hidden.

use std::io::BufReader;

use crate::pipeline::{Averages, ProcessedRecord};
use crate::reading::{
    self, MAX_PARAMETERS, MAX_STATE_BYTES, MachineId, ParamName, Parsed, Reading, ReadingError,
    ReadingStream, Value,
};
use crate::store::codec;
use crate::timestamp::Timestamp;

/// A fuzz target's name and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target: the names are the file names under `fuzz/fuzz_targets/` and the folders
/// under `fuzz/corpus/`.
pub const TARGETS: &[Target] = &[
    ("reading_serde", reading_serde),
    ("reading_fast", reading_fast),
    ("reading_diff", reading_diff),
    ("ndjson", ndjson),
    ("lineproto", lineproto),
    ("csv", csv),
    ("timestamp", timestamp),
    ("analytics_body", analytics_body),
    ("codec_decode", codec_decode),
    ("codec_roundtrip", codec_roundtrip),
];

/// The check of the target called `name`.
pub fn check(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A reading compared bit for bit (so that `0.0` and `-0.0` differ), with its field order.
fn same(a: &Reading, b: &Reading) -> bool {
    a.machine_id == b.machine_id
        && a.timestamp == b.timestamp
        && a.fields.len() == b.fields.len()
        && a.fields.iter().zip(&b.fields).all(|(x, y)| {
            x.name == y.name
                && match (&x.value, &y.value) {
                    (Value::Number(p), Value::Number(q)) => p.to_bits() == q.to_bits(),
                    (Value::State(p), Value::State(q)) => p == q,
                    _ => false,
                }
        })
}

/// What every accepted reading must satisfy (SPEC §1), checked independently of the parser.
fn valid(r: &Reading) {
    assert!(r.fields.len() <= MAX_PARAMETERS, "too many parameters");
    if let Some(m) = &r.machine_id {
        assert!(MachineId::parse(m.as_str()).is_ok(), "bad machine id {m:?}");
    }
    for (i, f) in r.fields.iter().enumerate() {
        // Line protocol's measurement is a name the program gives itself.
        if f.name.as_str() != "measurement" {
            assert!(
                ParamName::parse(f.name.as_str()).is_ok(),
                "bad name {:?}",
                f.name
            );
        }
        assert!(
            r.fields[..i].iter().all(|g| g.name != f.name),
            "{:?} twice",
            f.name
        );
        match &f.value {
            Value::Number(v) => assert!(v.is_finite(), "{:?} = {v}", f.name),
            Value::State(s) => assert!(s.len() <= MAX_STATE_BYTES, "state too long"),
        }
    }
}

fn same_result(a: &Result<Reading, ReadingError>, b: &Result<Reading, ReadingError>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => same(x, y),
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

fn same_parsed(a: &[Parsed], b: &[Parsed]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((p, x), (q, y))| p == q && same_result(x, y))
}

/// The serde path alone: never panics, and what it accepts is a valid reading;
/// `parse_reading` (fast path first) gives the same answer.
pub fn reading_serde(data: &[u8]) {
    let serde = reading::paths::serde(data);
    if let Ok(r) = &serde {
        valid(r);
    }
    let full = reading::parse_reading(data);
    assert!(
        same_result(&serde, &full),
        "parse_reading {full:?} but serde path {serde:?}"
    );
}

/// The fast byte scanner alone: never panics, accepts only valid readings, and its cache of the
/// previous reading's names changes nothing. The first byte says where to split the input into
/// the reading before and the reading checked.
pub fn reading_fast(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let at = if rest.is_empty() {
        0
    } else {
        usize::from(k) % rest.len()
    };
    let (before, text) = rest.split_at(at);
    let fresh = reading::paths::fast(text);
    if let Some(r) = &fresh {
        valid(r);
    }
    let cached = reading::paths::fast_after(before, text);
    match (&fresh, &cached) {
        (None, None) => {}
        (Some(a), Some(b)) if same(a, b) => {}
        _ => panic!("fresh {fresh:?}, after {before:?}: {cached:?}"),
    }
}

/// Differential: whatever the fast path accepts, the serde path accepts with the same values
/// (the fast path never rejects: it declines, and the serde path then explains).
pub fn reading_diff(data: &[u8]) {
    let serde = reading::paths::serde(data);
    if let Some(fast) = reading::paths::fast(data) {
        match &serde {
            Ok(s) if same(&fast, s) => {}
            _ => panic!("fast path {fast:?} but serde path {serde:?}"),
        }
    }
}

/// A reader that hands out at most `n` bytes per fill, so that lines and values straddle its
/// buffer's edges.
fn chopped(data: &[u8], n: usize) -> BufReader<&[u8]> {
    BufReader::with_capacity(n.max(1), data)
}

/// The stream framer (one object, an array, or NDJSON): the same results whatever the read
/// buffer's size and for the in-memory `parse_all`; every accepted reading is valid; and an
/// NDJSON input whose every non-blank line is a reading on its own gives exactly those readings,
/// one per line (an independent framing by `split`).
pub fn ndjson(data: &[u8]) {
    let Some((&k, text)) = data.split_first() else {
        return;
    };
    let whole = reading::parse_all(text);
    let small: Vec<Parsed> = ReadingStream::new(chopped(text, usize::from(k % 16) + 1)).collect();
    assert!(
        same_parsed(&whole, &small),
        "parse_all {whole:?}\nchopped {small:?}"
    );
    for (_, r) in &whole {
        if let Ok(r) = r {
            valid(r);
        }
    }
    if text.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[') {
        return;
    }
    let mut naive = Vec::new();
    for (n, line) in text.split(|&c| c == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match reading::parse_reading(line) {
            Ok(r) => naive.push((
                reading::Position {
                    index: naive.len() as u64,
                    line: Some(n as u64 + 1),
                },
                Ok(r),
            )),
            Err(_) => return,
        }
    }
    assert!(
        same_parsed(&whole, &naive),
        "framed {whole:?}\nline by line {naive:?}"
    );
}

/// InfluxDB line protocol: never panics, every accepted point is a valid reading with its
/// measurement, and the stream gives the same results whatever its read buffer's size. The
/// first byte picks the precision and the buffer size.
pub fn lineproto(data: &[u8]) {
    use crate::lineproto::{LineStream, Options, Precision, parse_all};
    let Some((&k, text)) = data.split_first() else {
        return;
    };
    let precision = ["ns", "us", "ms", "s"][usize::from(k & 3)];
    let opts = Options {
        precision: Precision::parse(precision).unwrap_or(Precision::Nanoseconds),
        ..Options::default()
    };
    let whole = parse_all(text, &opts);
    let small: Vec<Parsed> =
        LineStream::new(chopped(text, usize::from(k >> 4) + 1), opts.clone()).collect();
    assert!(
        same_parsed(&whole, &small),
        "parse_all {whole:?}\nchopped {small:?}"
    );
    for (_, r) in &whole {
        if let Ok(r) = r {
            valid(r);
            assert!(
                r.fields.iter().any(|f| f.name.as_str() == "measurement"),
                "no measurement in {r:?}"
            );
        }
    }
}

/// CSV bodies (`text/csv` on `/ingest`, `.csv` files): never panics; every accepted row is a
/// valid reading with no more parameters than the header has columns; the stream gives the
/// same results whatever its read buffer's size (the first byte picks it).
pub fn csv(data: &[u8]) {
    let Some((&k, text)) = data.split_first() else {
        return;
    };
    let whole = crate::csv_input::parse_all(text);
    let small: Vec<Parsed> =
        crate::csv_input::readings(chopped(text, usize::from(k & 15) + 1)).collect();
    assert!(
        same_parsed(&whole, &small),
        "in memory {whole:?}\nchopped {small:?}"
    );
    // The header is the first line that is not empty (the reader skips empty lines).
    let columns = text
        .split(|&c| c == b'\n' || c == b'\r')
        .find(|line| !line.is_empty())
        .map_or(0, |header| {
            header.iter().filter(|&&c| c == b',').count() + 1
        });
    for (_, r) in &whole {
        if let Ok(r) = r {
            valid(r);
            // A quoted header may hold commas and newlines: then the count above is no bound.
            if !text.contains(&b'"') {
                assert!(
                    r.fields.len()
                        + usize::from(r.machine_id.is_some())
                        + usize::from(r.timestamp.is_some())
                        <= columns,
                    "{} parameters from {columns} columns: {r:?}",
                    r.fields.len()
                );
            }
        }
    }
}

/// Whether `s` is in the subset of forms both our parser and chrono's RFC 3339 parser take:
/// `YYYY-MM-DDTHH:MM:SS`, an optional `.` fraction, and `Z` or `±HH:MM`.
fn rfc3339_subset(s: &[u8]) -> bool {
    let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let date_time = s.len() >= 20
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| digit(i))
        && s[4] == b'-'
        && s[7] == b'-'
        && s[10] == b'T'
        && s[13] == b':'
        && s[16] == b':';
    if !date_time {
        return false;
    }
    let mut i = 19;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while digit(i) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// Timestamps (SPEC §1): the parser never panics; what it reads prints and reads back as the
/// same instant; where the forms overlap it agrees with chrono's RFC 3339 parser; and seconds
/// since the epoch (the first 8 bytes as an `f64`, and as an `i64`) land within a microsecond
/// of plain arithmetic.
pub fn timestamp(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let ours = Timestamp::parse(s);
        if let Ok(t) = &ours {
            let printed = t.to_string();
            assert_eq!(
                Timestamp::parse(&printed).as_ref(),
                Ok(t),
                "{s:?} printed as {printed}"
            );
        }
        if rfc3339_subset(data) {
            let theirs = chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|d| d.timestamp_nanos_opt());
            // chrono reads the leap second :60 (which SPEC §1 does not allow) and offsets
            // up to 23:59 like us; both refuse what is outside 1677..2262 in nanoseconds.
            let leap = &data[17..19] == b"60";
            match (ours.as_ref().ok(), theirs) {
                (Some(a), Some(b)) => assert_eq!(a.as_nanos(), b, "{s:?}"),
                (None, None) => {}
                (None, Some(_)) if leap => {}
                (a, b) => panic!("{s:?}: ours {a:?}, chrono {b:?}"),
            }
        }
    }
    if let Some(bytes) = data.get(..8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        let secs = f64::from_le_bytes(b);
        if let Ok(t) = Timestamp::from_unix_seconds(secs) {
            let want = secs * 1e9;
            let err = (t.as_nanos() as f64 - want).abs();
            // Within a microsecond, or the f64's own precision at that magnitude.
            assert!(
                err <= 1e3_f64.max(want.abs() * 4.0 * f64::EPSILON),
                "{secs} s gave {} ns",
                t.as_nanos()
            );
        } else {
            assert!(
                !secs.is_finite() || secs.abs() > crate::timestamp::MAX_UNIX_SECONDS as f64,
                "{secs} s refused"
            );
        }
        let whole = i64::from_le_bytes(b);
        match Timestamp::from_unix_seconds_int(whole) {
            Ok(t) => assert_eq!(Some(t.as_nanos()), whole.checked_mul(1_000_000_000)),
            Err(_) => assert!(whole.checked_mul(1_000_000_000).is_none()),
        }
    }
}

/// The POST /analytics body: never panics; an accepted series has as many times as values,
/// finite values and a finite threshold >= 0; and it agrees with a plain `serde_json::Value`
/// reading of the same body (valid JSON, the same numbers).
pub fn analytics_body(data: &[u8]) {
    let Ok(series) = crate::api::series_body::parse_series(data) else {
        return;
    };
    assert_eq!(series.timestamps.len(), series.values.len());
    assert!(series.values.iter().all(|v| v.is_finite()));
    if let Some(t) = series.threshold {
        assert!(t.is_finite() && t >= 0.0, "threshold {t}");
    }
    let value: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => panic!("accepted a body serde_json refuses: {e}"),
    };
    let numbers: Vec<f64> = if let Some(points) = value.get("series").and_then(|s| s.as_array()) {
        points
            .iter()
            .filter_map(|p| p.get("value").and_then(serde_json::Value::as_f64))
            .collect()
    } else {
        value
            .get("values")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        numbers.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        series
            .values
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        "values"
    );
}

fn same_records(a: &[codec::StoredRecord], b: &[codec::StoredRecord]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.seq == y.seq
                && x.record.machine_id == y.record.machine_id
                && same(&as_reading(&x.record), &as_reading(&y.record))
                && x.record.averages.len() == y.record.averages.len()
                && x.record
                    .averages
                    .iter()
                    .zip(&y.record.averages)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

fn as_reading(r: &ProcessedRecord) -> Reading {
    Reading {
        machine_id: Some(r.machine_id.clone()),
        timestamp: Some(r.timestamp),
        fields: r.fields.clone(),
    }
}

/// The chunk and log decoders on arbitrary bytes: never panic; a chunk that decodes encodes
/// (plainly and compressed) and decodes again to the same records; and the analytics scan (`values_of`) finds the same
/// values as the full decoder.
pub fn codec_decode(data: &[u8]) {
    let machine = MachineId::trusted("m");
    let _ = codec::decode_log(data);
    let scan = codec::values_of(data, "p", Timestamp::MIN, Timestamp::MAX, &mut Vec::new());
    let Ok(records) = codec::decode(&machine, data) else {
        return;
    };
    // A decodable chunk scans cleanly; with a dictionary free of repeats (as the encoder
    // writes it) the scan finds every value of "p".
    assert!(scan.is_ok(), "decoded but the scan failed: {scan:?}");
    if unique_names(data) {
        scan_agrees(data, &records);
    }
    // Compressed (or, for a chunk the encoder would not write, kept as it is), it decodes
    // to the same records.
    let packed = codec::compress(data.to_vec());
    match codec::decode(&machine, &packed) {
        Ok(again) => assert!(same_records(&records, &again), "compress, decode"),
        Err(e) => panic!("compressed chunk does not decode: {e}"),
    }
    let rows: Vec<(u64, ProcessedRecord)> =
        records.iter().map(|r| (r.seq, r.record.clone())).collect();
    let again: Vec<codec::StoredRecord> = codec::chunks(&rows, usize::MAX)
        .flat_map(|(_, chunk)| match codec::decode(&machine, &chunk) {
            Ok(r) => r,
            Err(e) => panic!("re-encoded chunk does not decode: {e}"),
        })
        .collect();
    assert!(same_records(&records, &again), "decode, encode, decode");
}

/// The analytics scan of a chunk finds every value of "p" that the full decoder finds.
fn scan_agrees(chunk: &[u8], records: &[codec::StoredRecord]) {
    let mut scanned = Vec::new();
    if let Err(e) = codec::values_of(chunk, "p", Timestamp::MIN, Timestamp::MAX, &mut scanned) {
        panic!("decoded but the scan failed: {e}");
    }
    let want: Vec<(Timestamp, u64, u64)> = records
        .iter()
        .flat_map(|r| {
            r.record.fields.iter().filter_map(move |f| match f.value {
                Value::Number(v) if f.name.as_str() == "p" => {
                    Some((r.record.timestamp, r.seq, v.to_bits()))
                }
                _ => None,
            })
        })
        .collect();
    let got: Vec<(Timestamp, u64, u64)> = scanned
        .iter()
        .map(|&(t, s, v)| (t, s, v.to_bits()))
        .collect();
    assert_eq!(got, want, "values_of against decode");
}

/// Whether a chunk's dictionary (which decoded) names no parameter twice.
fn unique_names(chunk: &[u8]) -> bool {
    let n = usize::from(u16::from_le_bytes([chunk[1], chunk[2]]));
    let mut at = 3;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let len = usize::from(chunk[at]);
        if !seen.insert(&chunk[at + 1..at + 1 + len]) {
            return false;
        }
        at += 1 + len;
    }
    true
}

/// Reads bytes as the recipe for records: a tiny generator, so that the library needs no
/// `arbitrary` dependency.
struct Recipe<'a>(&'a [u8]);

impl Recipe<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Some(u64::from_le_bytes(b))
    }
}

const NAMES: [&str; 6] = ["p", "speed", "temp", "a.b-c_d", "x", "spindle_load"];

fn record(r: &mut Recipe<'_>, machine: &MachineId) -> Option<(u64, ProcessedRecord)> {
    let seq = r.u64()?;
    let ts = Timestamp::from_nanos(r.u64()? as i64);
    let n = usize::from(r.byte()? % 8);
    let mut fields = reading::Fields::new();
    let mut averages = Averages::new();
    for _ in 0..n {
        let tag = r.byte()?;
        let name = ParamName::trusted(NAMES[usize::from(tag % 6)]);
        if fields.iter().any(|f: &reading::Field| f.name == name) {
            continue;
        }
        let value = if tag & 0x80 == 0 {
            // Any bits, NaN and infinities included: the codec stores what it is given.
            let v = f64::from_bits(r.u64()?);
            averages.push(f64::from_bits(r.u64()?));
            Value::Number(v)
        } else {
            let len = usize::from(r.byte()? % 32).min(r.0.len());
            let (text, rest) = r.0.split_at(len);
            r.0 = rest;
            Value::State(String::from_utf8_lossy(text).as_ref().into())
        };
        fields.push(reading::Field { name, value });
    }
    Some((
        seq,
        ProcessedRecord {
            machine_id: machine.clone(),
            timestamp: ts,
            fields,
            averages,
        },
    ))
}

/// Round trip: arbitrary records of two machines, encoded as chunks (of a size the first byte
/// picks) and as a log entry, decode to exactly the records given.
pub fn codec_roundtrip(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let machines = [MachineId::trusted("m1"), MachineId::trusted("press-2")];
    let mut recipe = Recipe(rest);
    let mut rows: [Vec<(u64, ProcessedRecord)>; 2] = [Vec::new(), Vec::new()];
    while let Some(which) = recipe.byte() {
        let m = usize::from(which & 1);
        match record(&mut recipe, &machines[m]) {
            Some(row) => rows[m].push(row),
            None => break,
        }
    }
    let stored = |rows: &[(u64, ProcessedRecord)]| -> Vec<codec::StoredRecord> {
        rows.iter()
            .map(|(seq, r)| codec::StoredRecord {
                seq: *seq,
                record: r.clone(),
            })
            .collect()
    };
    let per_chunk = usize::from(k % 5) + 1;
    for (m, rows) in machines.iter().zip(&rows) {
        let mut back = Vec::new();
        for (piece, chunk) in codec::chunks(rows, per_chunk) {
            assert!(piece.len() <= per_chunk);
            let records = match codec::decode(m, &chunk) {
                Ok(r) => r,
                Err(e) => panic!("encoded chunk does not decode: {e}"),
            };
            scan_agrees(&chunk, &records);
            // The compressed form the chunks table keeps decodes and scans the same.
            let packed = codec::compress(chunk.clone());
            match codec::decode(m, &packed) {
                Ok(again) => assert!(same_records(&records, &again), "compressed round trip"),
                Err(e) => panic!("compressed chunk does not decode: {e}"),
            }
            scan_agrees(&packed, &records);
            back.extend(records);
        }
        assert!(same_records(&stored(rows), &back), "chunks round trip");
    }
    let batch = codec::encode_log(machines.iter().zip(rows.iter().map(Vec::as_slice)));
    let back: Vec<codec::StoredRecord> = batch
        .entries
        .iter()
        .flat_map(|e| match codec::decode_log(&e.data) {
            Ok(r) => r,
            Err(e) => panic!("encoded log entry does not decode: {e}"),
        })
        .collect();
    let want: Vec<codec::StoredRecord> = rows.iter().flat_map(|r| stored(r)).collect();
    assert!(same_records(&want, &back), "log round trip");
}
