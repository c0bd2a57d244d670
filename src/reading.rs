//! Readings as they arrive (SPEC §1): the types that carry a validated reading, and the parser
//! that turns one object, a JSON array or NDJSON into readings, streaming, so that a file of any
//! size is read in constant memory.
//!
//! Validation happens while parsing, in one pass: a reading that is valid JSON but breaks a rule
//! of SPEC §1 comes out as a [`ReadingError`] naming the field, and the parser goes on with the
//! next reading. Only broken JSON stops an array (an NDJSON stream resumes at the next line).

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::timestamp::Timestamp;

/// Most parameters one reading may carry.
pub const MAX_PARAMETERS: usize = 256;
/// Longest state value, in bytes.
pub const MAX_STATE_BYTES: usize = 256;
/// Longest machine id and parameter name, in characters (all ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Why a reading was rejected; the message names the field when one is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadingError {
    /// One field broke a rule.
    #[error("field {field:?}: {reason}")]
    Field {
        /// The field's name as it arrived.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The reading as a whole is wrong (not an object, too many parameters).
    #[error("{0}")]
    Reading(String),
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

impl ReadingError {
    fn field(field: &str, reason: impl Into<String>) -> Self {
        ReadingError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Which bytes may appear in names: `A–Z a–z 0–9 . _ -`. A table, because names are checked
/// for every field of every reading.
const NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-';
        c += 1;
    }
    t
};

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_NAME_LEN} characters, got {}",
            s.chars().count()
        ));
    }
    if s.bytes().all(|b| NAME_BYTES[usize::from(b)]) {
        return Ok(());
    }
    let bad = s
        .chars()
        .find(|c| !c.is_ascii() || !NAME_BYTES[*c as usize])
        .unwrap_or('?');
    Err(format!("{bad:?} is not allowed: use A-Z a-z 0-9 . _ -"))
}

/// A machine's identifier: 1–64 characters of `A–Z a–z 0–9 . _ -`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct MachineId(CompactString);

impl MachineId {
    /// Checks the rules of SPEC §1; the error says which one was broken.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_name(s)?;
        // Ids name files, URL path segments and topic levels, where these two mean a directory.
        if s == "." || s == ".." {
            return Err(format!("{s:?} is not allowed as a machine id"));
        }
        Ok(MachineId(CompactString::from(s)))
    }

    /// An id the program made itself from valid characters; checked in debug builds only.
    pub(crate) fn trusted(s: &str) -> Self {
        debug_assert!(check_name(s).is_ok(), "{s:?} is not a valid machine id");
        MachineId(CompactString::from(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for MachineId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for MachineId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MachineId::parse(s)
    }
}

/// A parameter's name: `[A-Za-z0-9_.-]{1,64}`, not ending in `_avg`, not a reserved field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ParamName(CompactString);

impl ParamName {
    /// Checks the rules of SPEC §1.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_name(s)?;
        if s.ends_with("_avg") {
            return Err("names ending in _avg are reserved for moving averages".into());
        }
        if s == "machine_id" || s == "timestamp" {
            return Err("is reserved".into());
        }
        Ok(ParamName(CompactString::from(s)))
    }

    /// A name the program made itself; checked in debug builds only.
    pub(crate) fn trusted(s: &str) -> Self {
        debug_assert!(
            ParamName::parse(s).is_ok(),
            "{s:?} is not a valid parameter name"
        );
        ParamName(CompactString::from(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ParamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A parameter's value: a finite number, or a state such as a job status.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A numeric parameter; always finite.
    Number(f64),
    /// A state parameter, at most 256 bytes.
    State(CompactString),
}

/// One parameter of a reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The parameter's name.
    pub name: ParamName,
    /// Its value.
    pub value: Value,
}

/// A reading's parameters, held inline up to a typical reading's four: a record then takes
/// one allocation instead of three, which is most of what freeing records costs.
pub type Fields = smallvec::SmallVec<[Field; 4]>;

/// One validated reading, before the pipeline gives it a machine, a time and averages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    /// The machine, when the reading named one.
    pub machine_id: Option<MachineId>,
    /// The time, when the reading carried one.
    pub timestamp: Option<Timestamp>,
    /// The parameters in the order they arrived; `null` ones are left out.
    pub fields: Fields,
}

/// Where a reading stood in its input, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 0-based index among the readings of the input.
    pub index: u64,
    /// 1-based line where the reading starts, when known.
    pub line: Option<u64>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading {}", self.index)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// A reading or the reason it was rejected, with its position in the input.
pub type Parsed = (Position, Result<Reading, ReadingError>);

/// A string that borrows from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, reduced to what validation needs; containers are skipped, not built.
enum Raw<'de> {
    Null,
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    Bool,
    Array,
    Object,
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Raw::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Raw::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Raw::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Raw::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Raw::Object)
            }
        }
        d.deserialize_any(V)
    }
}

impl Raw<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Int(_) | Raw::Float(_) => "a number",
            Raw::Str(_) => "a string",
            Raw::Bool => "a boolean",
            Raw::Array => "an array",
            Raw::Object => "an object",
        }
    }
}

/// Deserializes one reading. Validation problems become `Ok(Err(..))` so that the JSON stream
/// stays aligned (the rest of the object is still consumed) and the next reading can follow.
/// `key` holds the field being read when a JSON error strikes, so that the error can name it.
struct ReadingSeed<'k> {
    key: &'k mut String,
}

/// Parses one reading with `de`; a JSON error inside a field's value names the field.
fn read_one<'de, D>(de: D) -> Result<Result<Reading, ReadingError>, JsonFailure>
where
    D: Deserializer<'de, Error = serde_json::Error>,
{
    let mut key = String::new();
    ReadingSeed { key: &mut key }
        .deserialize(de)
        .map_err(|error| JsonFailure { error, key })
}

/// A JSON-level error and the field whose value was being read, if any.
struct JsonFailure {
    error: serde_json::Error,
    key: String,
}

impl JsonFailure {
    fn is_eof(&self) -> bool {
        self.error.is_eof()
    }

    fn into_error(self) -> ReadingError {
        if self.key.is_empty() {
            ReadingError::Syntax(self.error.to_string())
        } else if self.error.is_eof() {
            let reason = format!("invalid JSON: {}", self.error);
            ReadingError::Field {
                field: self.key,
                reason,
            }
        } else {
            let reason = self.error.to_string();
            ReadingError::Field {
                field: self.key,
                reason,
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for ReadingSeed<'_> {
    type Value = Result<Reading, ReadingError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ReadingVisitor { key: self.key })
    }
}

struct ReadingVisitor<'k> {
    key: &'k mut String,
}

impl<'de> Visitor<'de> for ReadingVisitor<'_> {
    type Value = Result<Reading, ReadingError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut reading = Reading {
            fields: Fields::new(),
            ..Reading::default()
        };
        let mut problem: Option<ReadingError> = None;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            self.key.clear();
            self.key.push_str(&key);
            let raw: Raw<'de> = map.next_value()?;
            self.key.clear();
            if problem.is_some() {
                continue; // keep consuming so the stream stays aligned
            }
            if let Err(e) = take_field(&mut reading, &key, raw) {
                problem = Some(e);
            }
        }
        Ok(match problem {
            Some(e) => Err(e),
            None => Ok(reading),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(ReadingError::Reading(
            "a reading must be a JSON object, not an array".into(),
        )))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(not_object("null")))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(not_object("a boolean")))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(not_object("a number")))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(not_object("a string")))
    }
}

fn not_object(kind: &str) -> ReadingError {
    ReadingError::Reading(format!("a reading must be a JSON object, not {kind}"))
}

fn take_field(reading: &mut Reading, key: &str, raw: Raw<'_>) -> Result<(), ReadingError> {
    match key {
        "machine_id" => {
            reading.machine_id = match raw {
                Raw::Null => None,
                Raw::Str(s) => Some(MachineId::parse(&s).map_err(|r| ReadingError::field(key, r))?),
                other => {
                    return Err(ReadingError::field(
                        key,
                        format!("must be a string, not {}", other.kind()),
                    ));
                }
            };
        }
        "timestamp" => {
            let ts = match raw {
                Raw::Null => None,
                Raw::Str(s) => Some(Timestamp::parse(&s)),
                Raw::Int(i) => Some(Timestamp::from_unix_seconds_int(i)),
                Raw::Float(f) => Some(Timestamp::from_unix_seconds(f)),
                other => Some(Err(format!(
                    "must be a time (string) or seconds since the epoch (number), not {}",
                    other.kind()
                ))),
            };
            reading.timestamp = ts.transpose().map_err(|r| ReadingError::field(key, r))?;
        }
        _ => {
            let name = ParamName::parse(key).map_err(|r| ReadingError::field(key, r))?;
            take_param(reading, key, name, raw)?;
        }
    }
    Ok(())
}

/// Adds a parameter whose name `key` is already checked (as `name`).
fn take_param(
    reading: &mut Reading,
    key: &str,
    name: ParamName,
    raw: Raw<'_>,
) -> Result<(), ReadingError> {
    let value = match raw {
        Raw::Null => return Ok(()),
        Raw::Int(i) => Value::Number(i as f64),
        Raw::Float(f) if f.is_finite() => Value::Number(f),
        Raw::Float(_) => return Err(ReadingError::field(key, "number outside f64")),
        Raw::Str(s) if s.len() > MAX_STATE_BYTES => {
            return Err(ReadingError::field(
                key,
                format!("state longer than {MAX_STATE_BYTES} bytes ({})", s.len()),
            ));
        }
        Raw::Str(s) => Value::State(CompactString::from(s.as_ref())),
        other => {
            return Err(ReadingError::field(
                key,
                format!("must be a number, a string or null, not {}", other.kind()),
            ));
        }
    };
    if reading.fields.iter().any(|f| f.name == name) {
        return Err(ReadingError::field(key, "appears twice"));
    }
    if reading.fields.len() == MAX_PARAMETERS {
        return Err(ReadingError::Reading(format!(
            "more than {MAX_PARAMETERS} parameters"
        )));
    }
    reading.fields.push(Field { name, value });
    Ok(())
}

/// Parses exactly one reading from `text` (a JSON object and nothing else).
pub fn parse_reading(text: &[u8]) -> Result<Reading, ReadingError> {
    if let Some(reading) = flat::parse(text) {
        return Ok(reading);
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let outcome = read_one(&mut de).map_err(JsonFailure::into_error)?;
    de.end().map_err(|e| ReadingError::Syntax(e.to_string()))?;
    outcome
}

/// The fast path and the serde path apart, so that the fuzz targets (`crate::fuzzing`) can
/// check that they agree; [`parse_reading`] is the one to call.
pub(crate) mod paths {
    use super::{JsonFailure, Reading, ReadingError, flat, read_one};

    /// The fast byte scanner alone: `None` where it declines.
    pub(crate) fn fast(text: &[u8]) -> Option<Reading> {
        flat::parse(text)
    }

    /// The fast scanner with the names cache of a stream that read `before` first.
    pub(crate) fn fast_after(before: &[u8], text: &[u8]) -> Option<Reading> {
        let mut names = flat::Names::default();
        let _ = flat::parse_with(before, &mut names);
        flat::parse_with(text, &mut names)
    }

    /// The serde path alone.
    pub(crate) fn serde(text: &[u8]) -> Result<Reading, ReadingError> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let outcome = read_one(&mut de).map_err(JsonFailure::into_error)?;
        de.end().map_err(|e| ReadingError::Syntax(e.to_string()))?;
        outcome
    }
}

/// Parses a whole document held in memory: one object, an array, or NDJSON.
pub fn parse_all(text: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::with_capacity(readings_hint(text));
    out.extend(ReadingStream::new(text));
    out
}

/// Most readings a document held in memory reserves room for before parsing.
const MAX_RESERVED_READINGS: usize = 1 << 16;

/// How many readings to reserve room for in `text`: about one a line, so that readings (a few
/// hundred bytes each) are written once instead of being copied as their vector grows; at
/// most [`MAX_RESERVED_READINGS`], so that a body of blank lines reserves no gigabytes.
pub fn readings_hint(text: &[u8]) -> usize {
    let lines = text.iter().filter(|&&c| c == b'\n').count() + 1;
    lines.min(MAX_RESERVED_READINGS)
}

/// The shape of an input, known after its first non-blank byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON array of readings.
    Array,
    /// One or more objects, one per line (NDJSON) or a single, possibly pretty-printed, object.
    Objects,
    /// Nothing but whitespace so far.
    Empty,
}

/// Readings from a byte stream, one at a time, in constant memory (besides the longest line).
pub struct ReadingStream<R> {
    input: R,
    shape: Option<Shape>,
    index: u64,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    /// The last reading's parameter names, for the fast path.
    names: flat::Names,
}

impl<R: BufRead> ReadingStream<R> {
    /// Wraps a reader; nothing is read until the first call to `next`.
    pub fn new(input: R) -> Self {
        ReadingStream {
            input,
            shape: None,
            index: 0,
            line: 1,
            buf: Vec::new(),
            done: false,
            names: flat::Names::default(),
        }
    }

    /// The input's shape; `None` before the first reading was asked for.
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Skips whitespace (counting lines) and returns the next byte without consuming it.
    fn peek_non_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let mut n = 0;
            for &c in buf {
                match c {
                    b'\n' => self.line += 1,
                    b' ' | b'\t' | b'\r' => {}
                    _ => {
                        self.input.consume(n);
                        return Ok(Some(c));
                    }
                }
                n += 1;
            }
            self.input.consume(n);
        }
    }

    fn pos_at(&self, line: u64) -> Position {
        Position {
            index: self.index,
            line: Some(line),
        }
    }

    fn fail(&mut self, line: u64, e: ReadingError) -> Option<Parsed> {
        let p = self.pos_at(line);
        self.index += 1;
        Some((p, Err(e)))
    }

    fn next_in_array(&mut self) -> Option<Parsed> {
        let first = self.index == 0;
        let c = match self.peek_non_ws() {
            Ok(c) => c,
            Err(e) => return self.stop(ReadingError::Syntax(e.to_string())),
        };
        match (c, first) {
            (Some(b']'), _) => {
                self.input.consume(1);
                self.done = true;
                return match self.peek_non_ws() {
                    Ok(None) => None,
                    _ => self.stop(ReadingError::Syntax(format!(
                        "unexpected text after the array at line {}",
                        self.line
                    ))),
                };
            }
            (Some(b','), false) => {
                self.input.consume(1);
            }
            (Some(_), true) => {}
            (Some(c), false) => {
                return self.stop(ReadingError::Syntax(format!(
                    "expected , or ] at line {}, found {:?}",
                    self.line, c as char
                )));
            }
            (None, _) => {
                return self.stop(ReadingError::Syntax("the array is not closed".into()));
            }
        }
        if let Err(e) = self.peek_non_ws() {
            return self.stop(ReadingError::Syntax(e.to_string()));
        }
        let line = self.line;
        let first_byte = match self.input.fill_buf() {
            Ok(b) => b.first().copied(),
            Err(e) => return self.stop(ReadingError::Syntax(e.to_string())),
        };
        if matches!(first_byte, Some(b'-' | b'0'..=b'9')) {
            // serde_json would read one byte past a number and lose the separator: skip the
            // number here instead, and report it.
            loop {
                let buf = match self.input.fill_buf() {
                    Ok(b) => b,
                    Err(e) => return self.stop(ReadingError::Syntax(e.to_string())),
                };
                let n = buf
                    .iter()
                    .take_while(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                let at_end = n < buf.len() || buf.is_empty();
                self.input.consume(n);
                if at_end {
                    break;
                }
            }
            return self.fail(line, not_object("a number"));
        }
        // serde_json reads any other value up to its closing byte and no further, so the
        // stream is left at the separator. Lines inside the value are counted as they pass.
        let mut counted = LineCounting {
            inner: &mut self.input,
            lines: 0,
        };
        let mut de = serde_json::Deserializer::from_reader(&mut counted);
        let outcome = read_one(&mut de);
        self.line += counted.lines;
        match outcome {
            Ok(reading) => {
                let p = self.pos_at(line);
                self.index += 1;
                Some((p, reading))
            }
            Err(e) => {
                self.done = true;
                self.fail(line, e.into_error())
            }
        }
    }

    fn stop(&mut self, e: ReadingError) -> Option<Parsed> {
        self.done = true;
        let line = self.line;
        self.fail(line, e)
    }

    fn next_object(&mut self) -> Option<Parsed> {
        self.buf.clear();
        let mut start_line = self.line;
        loop {
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let text = std::mem::take(&mut self.buf);
                    return self.finish_object(&text, start_line);
                }
                Ok(_) => {
                    self.line += 1;
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        self.buf.clear();
                        // The reading starts after the blank lines, not on the first of them.
                        start_line = self.line;
                        continue;
                    }
                    if let Some(reading) = flat::parse_with(&self.buf, &mut self.names) {
                        let p = self.pos_at(start_line);
                        self.index += 1;
                        return Some((p, Ok(reading)));
                    }
                    let mut de = serde_json::Deserializer::from_slice(&self.buf);
                    match read_one(&mut de) {
                        Ok(outcome) => {
                            let outcome = de
                                .end()
                                .map_err(|e| ReadingError::Syntax(e.to_string()))
                                .and(outcome);
                            let p = self.pos_at(start_line);
                            self.index += 1;
                            return Some((p, outcome));
                        }
                        // An object spread over several lines: read on.
                        Err(e) if e.is_eof() => continue,
                        Err(e) => return self.fail(start_line, e.into_error()),
                    }
                }
                Err(e) => return self.stop(ReadingError::Syntax(e.to_string())),
            }
        }
    }

    fn finish_object(&mut self, text: &[u8], line: u64) -> Option<Parsed> {
        let outcome = parse_reading(text);
        let p = self.pos_at(line);
        self.index += 1;
        Some((p, outcome))
    }
}

/// The fast path for the common case: one flat object with plain keys and values (no escapes,
/// no booleans, arrays or nested objects). It accepts only what it can read exactly as the
/// serde path does, and answers `None` for anything else, which the serde path then parses
/// (and, for bad input, explains). The two are checked against each other in a property test.
mod flat {
    use std::borrow::Cow;

    use super::{MAX_PARAMETERS, ParamName, Raw, Reading, take_field, take_param};

    struct Scan<'a> {
        s: &'a str,
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Scan<'a> {
        fn ws(&mut self) {
            while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        fn eat(&mut self, c: u8) -> Option<()> {
            self.ws();
            (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
        }

        /// A string without escapes or control characters; the opening quote is next.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.i;
            let end = start + string_len(&self.b[start..])?;
            if self.b[end] != b'"' {
                return None;
            }
            self.i = end + 1;
            // Quotes are ASCII, so both ends are character boundaries of the checked text.
            self.s.get(start..end)
        }

        /// A number in strict JSON grammar.
        fn number(&mut self) -> Option<Raw<'a>> {
            let start = self.i;
            let digits = |s: &mut Self| {
                let from = s.i;
                while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                    s.i += 1;
                }
                s.i - from
            };
            if self.b.get(self.i) == Some(&b'-') {
                self.i += 1;
            }
            let int_start = self.i;
            let n = digits(self);
            if n == 0 || (n > 1 && self.b[int_start] == b'0') {
                return None;
            }
            let mut float = false;
            if self.b.get(self.i) == Some(&b'.') {
                self.i += 1;
                if digits(self) == 0 {
                    return None;
                }
                float = true;
            }
            if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if digits(self) == 0 {
                    return None;
                }
                float = true;
            }
            let text = self.s.get(start..self.i)?;
            if float {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Raw::Float)
            } else if n <= 18 {
                // At most 18 digits cannot overflow: summed in a register, not through the
                // generic parser's checks (which kept its running value in memory).
                let magnitude = self.b[int_start..int_start + n]
                    .iter()
                    .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
                Some(if int_start == start {
                    Raw::Int(magnitude)
                } else if magnitude == 0 {
                    // serde_json reads `-0` as the float -0.0, not as the integer 0.
                    Raw::Float(-0.0)
                } else {
                    Raw::Int(-magnitude)
                })
            } else {
                // Integers beyond i64 take the serde path, which reads them as serde_json does.
                text.parse::<i64>().ok().map(Raw::Int)
            }
        }

        fn value(&mut self) -> Option<Raw<'a>> {
            self.ws();
            match self.b.get(self.i)? {
                b'"' => self.string().map(|s| Raw::Str(Cow::Borrowed(s))),
                b'n' if self.b[self.i..].starts_with(b"null") => {
                    self.i += 4;
                    Some(Raw::Null)
                }
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }
    }

    /// Where the first `"`, `\\` or control character of `b` is, if any: the end of a plain
    /// string, or where it stops being plain. Eight bytes at a time, since every key and most
    /// values of every reading pass through here: a byte of `w ^ 0x22…` (or `0x5c…`) is zero
    /// where a quote (backslash) is, and `has_less_than` flags bytes below 0x20. The lowest
    /// flagged byte is always a true match (false flags only appear above one).
    pub(super) fn string_len(b: &[u8]) -> Option<usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
        let mut at = 0;
        while let Some(word) = b.get(at..at + 8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let w = u64::from_le_bytes(bytes);
            let found = has_zero(w ^ (ONES * u64::from(b'"')))
                | has_zero(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
            if found != 0 {
                return Some(at + found.trailing_zeros() as usize / 8);
            }
            at += 8;
        }
        b[at..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .map(|n| at + n)
    }

    /// The parameter names of the last reading a stream read, by position: a gateway sends
    /// the same names in the same order reading after reading, and a name found here is known
    /// to be valid, which saves checking it again.
    #[derive(Debug, Default)]
    pub(super) struct Names(Vec<ParamName>);

    impl Names {
        /// The name `key`, the `position`-th parameter of its reading, checked; `None` when it
        /// is not a valid name or there are too many (the serde path then says why). A
        /// reference, not a `Result` holding the name: moving that through the parser cost a
        /// tenth of its time, in unaligned copies.
        fn name(&mut self, position: usize, key: &str) -> Option<&ParamName> {
            if self
                .0
                .get(position)
                .is_none_or(|known| known.as_str() != key)
            {
                let name = ParamName::parse(key).ok()?;
                match position.cmp(&self.0.len()) {
                    std::cmp::Ordering::Less => self.0[position] = name,
                    std::cmp::Ordering::Equal if position < MAX_PARAMETERS => self.0.push(name),
                    _ => return None,
                }
            }
            self.0.get(position)
        }
    }

    /// The reading, if `text` is a flat object this path reads exactly; else `None`.
    pub(super) fn parse(text: &[u8]) -> Option<Reading> {
        parse_with(text, &mut Names::default())
    }

    /// As [`parse`], with the names of the stream's last reading.
    pub(super) fn parse_with(text: &[u8], names: &mut Names) -> Option<Reading> {
        let s = std::str::from_utf8(text).ok()?;
        let mut sc = Scan { s, b: text, i: 0 };
        sc.eat(b'{')?;
        let mut reading = Reading {
            fields: super::Fields::new(),
            ..Reading::default()
        };
        let mut params = 0;
        sc.ws();
        if sc.b.get(sc.i) == Some(&b'}') {
            sc.i += 1;
        } else {
            loop {
                sc.ws();
                let key = sc.string()?;
                sc.eat(b':')?;
                let raw = sc.value()?;
                if key == "machine_id" || key == "timestamp" {
                    take_field(&mut reading, key, raw).ok()?;
                } else {
                    let name = names.name(params, key)?.clone();
                    params += 1;
                    take_param(&mut reading, key, name, raw).ok()?;
                }
                sc.ws();
                match sc.b.get(sc.i)? {
                    b',' => sc.i += 1,
                    b'}' => {
                        sc.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        sc.ws();
        (sc.i == sc.b.len()).then_some(reading)
    }
}

/// Counts the newlines that pass through a reader.
struct LineCounting<'a, R> {
    inner: &'a mut R,
    lines: u64,
}

impl<R: BufRead> std::io::Read for LineCounting<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.lines += out[..n].iter().filter(|&&c| c == b'\n').count() as u64;
        Ok(n)
    }
}

impl<R: BufRead> Iterator for ReadingStream<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        if self.done {
            return None;
        }
        let shape = match self.shape {
            Some(s) => s,
            None => {
                let s = match self.peek_non_ws() {
                    Ok(Some(b'[')) => {
                        self.input.consume(1);
                        Shape::Array
                    }
                    Ok(Some(c)) => {
                        // Text that is not JSON at all but another format readings come in:
                        // say so, and how to send it, rather than "expected value".
                        if c != b'{'
                            && let Some(hint) = self
                                .input
                                .fill_buf()
                                .ok()
                                .and_then(crate::csv_input::other_format_hint)
                        {
                            return self.stop(ReadingError::Syntax(hint.into()));
                        }
                        Shape::Objects
                    }
                    Ok(None) => Shape::Empty,
                    Err(e) => return self.stop(ReadingError::Syntax(e.to_string())),
                };
                self.shape = Some(s);
                s
            }
        };
        match shape {
            Shape::Array => self.next_in_array(),
            Shape::Objects => self.next_object(),
            Shape::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dot_ids_are_refused() {
        for bad in [".", ".."] {
            let e = MachineId::parse(bad).unwrap_err();
            assert!(e.contains("not allowed"), "{bad}: {e}");
            let r = one(&format!(r#"{{"machine_id": "{bad}", "t": 1}}"#));
            assert!(r.is_err(), "{bad} in a reading");
        }
        for ok in ["...", ".a", "a.", "a..b", "_"] {
            assert!(MachineId::parse(ok).is_ok(), "{ok}");
            assert!(one(&format!(r#"{{"machine_id": "{ok}", "t": 1}}"#)).is_ok());
        }
    }

    fn one(text: &str) -> Result<Reading, ReadingError> {
        parse_reading(text.as_bytes())
    }

    fn num(name: &str, v: f64) -> Field {
        Field {
            name: ParamName::parse(name).unwrap(),
            value: Value::Number(v),
        }
    }

    fn state(name: &str, v: &str) -> Field {
        Field {
            name: ParamName::parse(name).unwrap(),
            value: Value::State(v.into()),
        }
    }

    /// The serde path alone, as it was before the fast path.
    fn serde_only(text: &[u8]) -> Result<Reading, ReadingError> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let outcome = read_one(&mut de).map_err(JsonFailure::into_error)?;
        de.end().map_err(|e| ReadingError::Syntax(e.to_string()))?;
        outcome
    }

    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (-1e6f64..1e6).prop_map(|v| v.to_string()),
            any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            "-?0[0-9]+",
            "[0-9]{1,3}\\.",
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[1, 2]".to_string()),
            Just("{\"a\": 1}".to_string()),
            "\"[a-zA-Z0-9 _:.-]{0,12}\"",
            "\"[a-z]{0,4}\\\\[nt\"\\\\][a-z]{0,4}\"",
            "\"(é|ü|日本|\\u00e9){1,3}\"",
            Just("\"2024-10-27T12:00:00\"".to_string()),
            Just("\"2024-10-27T12:00:00.125+01:00\"".to_string()),
        ]
    }

    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("machine_id".to_string()),
            Just("timestamp".to_string()),
            "[a-z]{1,8}",
            "[a-z]{1,5}_avg",
            "[a-z ]{1,5}",
            "[a-z]{1,3}\\\\u0041",
        ]
    }

    proptest! {
        /// Whatever the fast path accepts, it reads exactly as serde does; and the public
        /// parser always agrees with the serde path, error for error.
        #[test]
        fn fast_path_agrees_with_serde(
            fields in prop::collection::vec((json_key(), json_value(), "[ \t]{0,2}"), 0..8),
            trailing in prop_oneof![Just(""), Just(" "), Just("\n"), Just(" x"), Just(",")],
        ) {
            let body: Vec<String> = fields.iter().map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")).collect();
            let text = format!("{{{}}}{trailing}", body.join(","));
            let slow = serde_only(text.as_bytes());
            if let Some(fast) = flat::parse(text.as_bytes()) {
                prop_assert_eq!(Ok(fast), slow.clone(), "{}", text);
            }
            prop_assert_eq!(parse_reading(text.as_bytes()), slow, "{}", text);
        }
    }

    fn stream_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["a", "b", "temp", "status", "a_avg", "machine_id"])
                .prop_map(str::to_owned),
            1 => json_key(),
        ]
    }

    proptest! {
        /// The plain-string scan stops where a byte-by-byte one does, wherever the stop falls
        /// in or after the eight-byte words.
        #[test]
        fn string_len_finds_the_first_stop(
            bytes in prop::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    1 => 0x80u8..=0xff,
                ],
                0..40,
            ),
        ) {
            let naive = bytes.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            prop_assert_eq!(flat::string_len(&bytes), naive);
        }

        /// A stream remembers its last reading's names; whatever order, repeats or bad names
        /// the next lines bring, each line reads exactly as it would alone (the serde path).
        #[test]
        fn a_stream_reads_each_line_as_alone(
            lines in prop::collection::vec(
                prop::collection::vec((stream_key(), json_value()), 0..6),
                1..8,
            ),
        ) {
            let lines: Vec<String> = lines
                .iter()
                .map(|fields| {
                    let body: Vec<String> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", body.join(","))
                })
                .collect();
            let text = lines.join("\n");
            let streamed: Vec<_> = ReadingStream::new(text.as_bytes()).map(|(_, r)| r).collect();
            let alone: Vec<_> = lines.iter().map(|l| serde_only(l.as_bytes())).collect();
            prop_assert_eq!(streamed, alone, "{}", text);
        }
    }

    #[test]
    fn a_known_name_in_a_new_place_is_still_checked() {
        let text = "{\"a\":1,\"b\":2}\n{\"b\":1,\"b\":2}\n{\"a\":1,\"a_avg\":2}\n{\"b\":3,\"a\":4}";
        let got: Vec<_> = ReadingStream::new(text.as_bytes())
            .map(|(_, r)| r)
            .collect();
        assert_eq!(got[0].as_ref().map(|r| r.fields.len()), Ok(2));
        assert!(
            matches!(&got[1], Err(ReadingError::Field { field, reason }) if field == "b" && reason.contains("twice")),
            "{:?}",
            got[1]
        );
        assert!(
            matches!(&got[2], Err(ReadingError::Field { field, .. }) if field == "a_avg"),
            "{:?}",
            got[2]
        );
        assert_eq!(
            got[3].as_ref().map(|r| r.fields.as_slice()),
            Ok([num("b", 3.0), num("a", 4.0)].as_slice())
        );
    }

    #[test]
    fn common_readings_take_the_fast_path() {
        for text in [
            r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"}"#,
            r#"{"machine_id":"press-001","timestamp":1700000000,"temperature":71.5,"speed":1480,"p":4.25e0,"s":null}"#,
            " { } ",
        ] {
            assert!(flat::parse(text.as_bytes()).is_some(), "{text}");
        }
        for text in [
            r#"{"a": true}"#,
            r#"{"a": "x\ny"}"#,
            r#"{"a": 1}}"#,
            r#"{"a": 01}"#,
            r#"{"a": 99999999999999999999}"#,
        ] {
            assert!(flat::parse(text.as_bytes()).is_none(), "{text}");
        }
    }

    #[test]
    fn seed_format_is_accepted_as_is() {
        let r = one(r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"}"#).unwrap();
        assert_eq!(r.machine_id, None);
        assert_eq!(
            r.timestamp,
            Some(Timestamp::parse("2024-10-27T12:00:00Z").unwrap())
        );
        assert_eq!(
            r.fields.as_slice(),
            [
                num("temperature", 70.0),
                num("speed", 30.0),
                state("status", "RUNNING")
            ]
        );
    }

    #[test]
    fn spec_example_with_machine_and_offset() {
        let r = one(r#"{"machine_id": "press-01", "timestamp": "2026-11-28T06:30:00+01:00", "temperature": 71.5, "speed": 1480, "status": "RUNNING"}"#).unwrap();
        assert_eq!(r.machine_id.unwrap().as_str(), "press-01");
        assert_eq!(r.timestamp.unwrap().to_string(), "2026-11-28T05:30:00Z");
        assert_eq!(r.fields[0], num("temperature", 71.5));
    }

    #[test]
    fn timestamp_forms() {
        let t = |s: &str| one(s).unwrap().timestamp.unwrap().to_string();
        assert_eq!(t(r#"{"timestamp": 1732771800}"#), "2024-11-28T05:30:00Z");
        assert_eq!(
            t(r#"{"timestamp": 1732771800.5}"#),
            "2024-11-28T05:30:00.500Z"
        );
        assert_eq!(
            t(r#"{"timestamp": "2024-11-28T05:30:00Z"}"#),
            "2024-11-28T05:30:00Z"
        );
        assert_eq!(
            t(r#"{"timestamp": "2024-11-28T05:30:00"}"#),
            "2024-11-28T05:30:00Z"
        );
        assert_eq!(
            one(r#"{"timestamp": null, "x": 1}"#).unwrap().timestamp,
            None
        );
        assert_eq!(one(r#"{"x": 1}"#).unwrap().timestamp, None);
    }

    #[test]
    fn room_is_reserved_per_line_within_a_cap() {
        assert_eq!(readings_hint(b"{}"), 1);
        assert_eq!(readings_hint(b"{}\n{}\n{}"), 3);
        assert_eq!(
            readings_hint(&vec![b'\n'; 10_000_000]),
            MAX_RESERVED_READINGS
        );
    }

    #[test]
    fn null_means_absent() {
        let r = one(r#"{"a": null, "b": 2, "machine_id": null}"#).unwrap();
        assert_eq!(r.fields.as_slice(), [num("b", 2.0)]);
        assert_eq!(r.machine_id, None);
    }

    #[test]
    fn escaped_strings_are_read() {
        let r = one(r#"{"st\u0061tus": "RUN\"NING"}"#).unwrap();
        assert_eq!(r.fields.as_slice(), [state("status", "RUN\"NING")]);
    }

    /// Each rejection of SPEC §1 with the field it must name.
    #[test]
    fn rejections_name_the_field() {
        let long_state = format!(r#"{{"s": "{}"}}"#, "x".repeat(257));
        let long_name = format!(r#"{{"{}": 1}}"#, "p".repeat(65));
        let long_id = format!(r#"{{"machine_id": "{}"}}"#, "m".repeat(65));
        let p65 = "p".repeat(65);
        let cases: Vec<(&str, &str, &str)> = vec![
            (r#"{"on": true}"#, "on", "boolean"),
            (r#"{"list": [1, 2]}"#, "list", "array"),
            (r#"{"obj": {"a": 1}}"#, "obj", "object"),
            (r#"{"big": 1e400}"#, "big", "out of range"),
            (r#"{"temperature_avg": 1}"#, "temperature_avg", "_avg"),
            (r#"{"bad name": 1}"#, "bad name", "not allowed"),
            (r#"{"": 1}"#, "", "1 to 64"),
            (r#"{"é": 1}"#, "é", "not allowed"),
            (&long_name, &p65, "1 to 64"),
            (&long_state, "s", "longer than 256"),
            (r#"{"machine_id": "press 01"}"#, "machine_id", "not allowed"),
            (r#"{"machine_id": 7}"#, "machine_id", "must be a string"),
            (r#"{"machine_id": ""}"#, "machine_id", "1 to 64"),
            (&long_id, "machine_id", "1 to 64"),
            (r#"{"timestamp": "noon"}"#, "timestamp", "not a time"),
            (r#"{"timestamp": true}"#, "timestamp", "boolean"),
            (r#"{"timestamp": 1e300}"#, "timestamp", "outside"),
            (r#"{"a": 1, "a": 2}"#, "a", "twice"),
        ];
        for (input, field, reason) in cases {
            let err = one(input).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{field:?}")),
                "{input}: {msg} should name {field:?}"
            );
            assert!(msg.contains(reason), "{input}: {msg} should say {reason:?}");
        }
    }

    #[test]
    fn parameter_count_limit() {
        let mut ok = String::from("{");
        for i in 0..MAX_PARAMETERS {
            ok.push_str(&format!("\"p{i}\": {i},"));
        }
        ok.push_str("\"machine_id\": \"m\"}");
        assert_eq!(one(&ok).unwrap().fields.len(), MAX_PARAMETERS);
        let too_many = ok.replace("{", "{\"extra\": 1, ");
        assert!(
            one(&too_many)
                .unwrap_err()
                .to_string()
                .contains("more than 256")
        );
    }

    #[test]
    fn non_objects_and_syntax_errors() {
        assert!(matches!(one("[1]"), Err(ReadingError::Reading(_))));
        assert!(matches!(one("42"), Err(ReadingError::Reading(_))));
        assert!(matches!(one(r#"{"a": 1"#), Err(ReadingError::Syntax(_))));
        assert!(matches!(one(r#"{"a": 1} x"#), Err(ReadingError::Syntax(_))));
    }

    fn stream(text: &str) -> Vec<(u64, Option<u64>, Result<Reading, String>)> {
        parse_all(text.as_bytes())
            .into_iter()
            .map(|(p, r)| (p.index, p.line, r.map_err(|e| e.to_string())))
            .collect()
    }

    #[test]
    fn three_forms_give_the_same_readings() {
        let object = r#"{"x": 1}"#;
        let array = r#" [ {"x": 1}, {"x": 2} , {"x": 3}] "#;
        let ndjson = "{\"x\": 1}\n\n{\"x\": 2}\r\n{\"x\": 3}";
        let pretty = "{\n  \"x\": 1\n}\n{\n  \"x\": 2\n}\n";
        let xs = |t: &str| -> Vec<f64> {
            stream(t)
                .into_iter()
                .map(|(_, _, r)| match &r.unwrap().fields[0].value {
                    Value::Number(v) => *v,
                    Value::State(_) => f64::NAN,
                })
                .collect()
        };
        assert_eq!(xs(object), vec![1.0]);
        assert_eq!(xs(array), vec![1.0, 2.0, 3.0]);
        assert_eq!(xs(ndjson), vec![1.0, 2.0, 3.0]);
        assert_eq!(xs(pretty), vec![1.0, 2.0]);
        assert!(stream("").is_empty());
        assert!(stream(" \n ").is_empty());
        assert!(stream("[]").is_empty());
    }

    #[test]
    fn ndjson_reports_positions_and_goes_on() {
        let text = "{\"x\": 1}\n{\"x\": true}\n{\"x\": \n\n{broken}\n{\"x\": 4}\n";
        let got = stream(text);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].2.is_ok());
        assert_eq!((got[1].0, got[1].1), (1, Some(2)));
        assert!(got[1].2.as_ref().unwrap_err().contains("\"x\""));
        assert_eq!((got[2].0, got[2].1), (2, Some(3)));
        assert!(got[2].2.is_err());
        assert_eq!((got[3].0, got[3].1), (3, Some(6)));
        assert!(got[3].2.is_ok());
    }

    #[test]
    fn array_reports_invalid_reading_and_goes_on_but_stops_at_broken_json() {
        let got = stream(r#"[{"x": 1}, {"x": false}, 7, {"x": 3}]"#);
        assert_eq!(got.len(), 4);
        assert!(got[1].2.as_ref().unwrap_err().contains("\"x\""));
        assert!(got[2].2.as_ref().unwrap_err().contains("JSON object"));
        assert!(got[3].2.is_ok());

        let got = stream(r#"[{"x": 1}, {"x" 2}, {"x": 3}]"#);
        assert_eq!(got.len(), 2);
        assert!(got[1].2.is_err());

        let got = stream(r#"[{"x": 1}"#);
        assert_eq!(got.len(), 2);
        assert!(got[1].2.as_ref().unwrap_err().contains("not closed"));

        let got = stream(r#"[{"x": 1}] trailing"#);
        assert!(
            got.last()
                .unwrap()
                .2
                .as_ref()
                .unwrap_err()
                .contains("after the array")
        );
    }
}
