//! InfluxDB line protocol, so that Telegraf (and anything else that writes to InfluxDB) can
//! feed millwatch unchanged.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one point per line;
//! blank lines and lines starting with `#` are skipped. Each point becomes a reading: the
//! measurement is the state parameter `measurement`; the tag named by `machine_tag` (falling
//! back to `host`) names the machine; other tags are state parameters; float, integer (`i`)
//! and unsigned (`u`) fields are numeric parameters; string and boolean fields are state
//! parameters (booleans as `"true"`/`"false"`). A bad line is reported with its line and
//! column.

use compact_str::CompactString;

use crate::reading::{
    Field, Fields, MAX_PARAMETERS, MAX_STATE_BYTES, MachineId, ParamName, Parsed, Position,
    Reading, ReadingError, Value,
};
use crate::timestamp::Timestamp;

/// The unit of line-protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
}

impl Precision {
    /// Reads `ns`/`n`, `us`/`u`/`µ`, `ms`, `s`, `m`, `h` as InfluxDB 1.x and 2.x do.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return Err(format!("precision {s:?} is not one of ns, us, ms, s, m, h")),
        })
    }

    fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// How points map to readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The unit of timestamps.
    pub precision: Precision,
    /// The tag that names the machine (`host` is the fallback).
    pub machine_tag: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            precision: Precision::Nanoseconds,
            machine_tag: "machine_id".into(),
        }
    }
}

/// Parses a whole body; one entry per point line, positions counting points and lines.
pub fn parse_all(text: &[u8], opts: &Options) -> Vec<Parsed> {
    LineStream::new(text, opts.clone()).collect()
}

/// Points from a byte stream, one line at a time, in constant memory.
pub struct LineStream<R> {
    input: R,
    opts: Options,
    buf: Vec<u8>,
    line: u64,
    index: u64,
}

impl<R: std::io::BufRead> LineStream<R> {
    /// Wraps a reader.
    pub fn new(input: R, opts: Options) -> Self {
        LineStream {
            input,
            opts,
            buf: Vec::new(),
            line: 0,
            index: 0,
        }
    }
}

impl<R: std::io::BufRead> Iterator for LineStream<R> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        loop {
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.line += 1;
                    let err = ReadingError::Syntax(format!("line {}: {e}", self.line));
                    return Some((
                        Position {
                            index: self.index,
                            line: Some(self.line),
                        },
                        Err(err),
                    ));
                }
            }
            self.line += 1;
            let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let trimmed = line.trim_ascii_start();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            let lineno = self.line;
            let result = match std::str::from_utf8(line) {
                Ok(s) => parse_line(s, &self.opts).map_err(|(col, msg)| {
                    ReadingError::Reading(format!("line {lineno} column {col}: {msg}"))
                }),
                Err(e) => Err(ReadingError::Reading(format!(
                    "line {lineno} column {}: not UTF-8",
                    e.valid_up_to() + 1
                ))),
            };
            let position = Position {
                index: self.index,
                line: Some(lineno),
            };
            self.index += 1;
            return Some((position, result));
        }
    }
}

/// A position in a line (0-based byte offset) and the problem there.
type LineError = (usize, String);

struct Scanner<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn err<T>(&self, at: usize, msg: impl Into<String>) -> Result<T, LineError> {
        Err((at + 1, msg.into()))
    }

    /// Reads up to an unescaped byte of `stops`, removing backslashes before `escapable`.
    fn token(&mut self, stops: &[u8], escapable: &[u8]) -> (usize, CompactString) {
        let start = self.at;
        let bytes = self.s.as_bytes();
        let mut out = CompactString::default();
        let mut run = self.at;
        while let Some(&c) = bytes.get(self.at) {
            if c == b'\\'
                && bytes
                    .get(self.at + 1)
                    .is_some_and(|n| escapable.contains(n))
            {
                out.push_str(&self.s[run..self.at]);
                self.at += 1;
                run = self.at;
                self.at += 1;
                continue;
            }
            if stops.contains(&c) {
                break;
            }
            self.at += 1;
        }
        out.push_str(&self.s[run..self.at]);
        (start, out)
    }
}

fn state(s: &str, at: usize, what: &str) -> Result<Value, LineError> {
    if s.len() > MAX_STATE_BYTES {
        return Err((
            at + 1,
            format!("{what} is longer than {MAX_STATE_BYTES} bytes"),
        ));
    }
    Ok(Value::State(CompactString::from(s)))
}

fn add(fields: &mut Fields, at: usize, name: &str, value: Value) -> Result<(), LineError> {
    let name = ParamName::parse(name).map_err(|e| (at + 1, format!("name {name:?}: {e}")))?;
    if fields.iter().any(|f| f.name == name) {
        return Err((
            at + 1,
            format!("{name:?} appears twice (as a tag, field or the measurement)"),
        ));
    }
    if fields.len() == MAX_PARAMETERS {
        return Err((at + 1, format!("more than {MAX_PARAMETERS} parameters")));
    }
    fields.push(Field { name, value });
    Ok(())
}

/// Parses one point line (not blank, not a comment).
pub fn parse_line(line: &str, opts: &Options) -> Result<Reading, LineError> {
    let mut sc = Scanner { s: line, at: 0 };
    let mut reading = Reading::default();
    let (m_at, measurement) = sc.token(b", ", b", \\");
    if measurement.is_empty() {
        return sc.err(m_at, "missing measurement");
    }
    reading.fields.push(Field {
        name: ParamName::trusted("measurement"),
        value: state(&measurement, m_at, "the measurement")?,
    });
    let mut host: Option<(usize, CompactString)> = None;
    let mut machine: Option<(usize, CompactString)> = None;
    while sc.peek() == Some(b',') {
        sc.at += 1;
        let (k_at, key) = sc.token(b"=, ", b",= \\");
        if sc.peek() != Some(b'=') || key.is_empty() {
            return sc.err(k_at, "expected tag=value");
        }
        sc.at += 1;
        let (v_at, value) = sc.token(b", ", b",= \\");
        if value.is_empty() {
            return sc.err(v_at, format!("tag {key:?} has no value"));
        }
        if key == opts.machine_tag {
            machine = Some((v_at, value));
        } else if key == "host" {
            host = Some((v_at, value));
        } else {
            let v = state(&value, v_at, "a tag value")?;
            add(&mut reading.fields, k_at, &key, v)?;
        }
    }
    if let Some((at, id)) = machine.or(host) {
        reading.machine_id =
            Some(MachineId::parse(&id).map_err(|e| (at + 1, format!("machine {id:?}: {e}")))?);
    }
    if sc.peek() != Some(b' ') {
        return sc.err(sc.at, "expected a space and then fields");
    }
    while sc.peek() == Some(b' ') {
        sc.at += 1;
    }
    loop {
        let (k_at, key) = sc.token(b"=, ", b",= \\");
        if sc.peek() != Some(b'=') || key.is_empty() {
            return sc.err(k_at, "expected field=value");
        }
        sc.at += 1;
        let v_at = sc.at;
        let value = if sc.peek() == Some(b'"') {
            sc.at += 1;
            let (_, text) = sc.token(b"\"", b"\"\\");
            if sc.peek() != Some(b'"') {
                return sc.err(v_at, format!("the string of field {key:?} is not closed"));
            }
            sc.at += 1;
            state(&text, v_at, "a string field")?
        } else {
            let (_, raw) = sc.token(b", ", b"");
            field_value(&raw).map_err(|msg| (v_at + 1, format!("field {key:?}: {msg}")))?
        };
        add(&mut reading.fields, k_at, &key, value)?;
        if sc.peek() == Some(b',') {
            sc.at += 1;
        } else {
            break;
        }
    }
    if sc.peek() == Some(b' ') {
        while sc.peek() == Some(b' ') {
            sc.at += 1;
        }
        let t_at = sc.at;
        let rest = sc.s[sc.at..].trim_end();
        if !rest.is_empty() {
            let n: i64 = rest.parse().map_err(|_| {
                (
                    t_at + 1,
                    format!("{rest:?} is not a timestamp (an integer)"),
                )
            })?;
            let nanos = n
                .checked_mul(opts.precision.nanos())
                .ok_or_else(|| (t_at + 1, format!("timestamp {n} is out of range")))?;
            reading.timestamp = Some(Timestamp::from_nanos(nanos));
            sc.at = sc.s.len();
        }
    }
    if sc.at < sc.s.len() && !sc.s[sc.at..].trim().is_empty() {
        return sc.err(sc.at, "unexpected text after the point");
    }
    Ok(reading)
}

fn field_value(raw: &str) -> Result<Value, String> {
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => {
            return Ok(Value::State(CompactString::const_new("true")));
        }
        "f" | "F" | "false" | "False" | "FALSE" => {
            return Ok(Value::State(CompactString::const_new("false")));
        }
        "" => return Err("has no value".into()),
        _ => {}
    }
    let number = |s: &str, v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map(Value::Number)
            .ok_or_else(|| format!("{s:?} is not a number"))
    };
    if let Some(int) = raw.strip_suffix('i') {
        return number(raw, int.parse::<i64>().ok().map(|v| v as f64));
    }
    if let Some(uint) = raw.strip_suffix('u') {
        return number(raw, uint.parse::<u64>().ok().map(|v| v as f64));
    }
    // Rust's float syntax is a superset of line protocol's except for words like "inf" and
    // "NaN", which `number` refuses as not finite.
    number(raw, raw.parse::<f64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Reading {
        parse_line(line, &Options::default()).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn get<'a>(r: &'a Reading, name: &str) -> Option<&'a Value> {
        r.fields
            .iter()
            .find(|f| f.name.as_str() == name)
            .map(|f| &f.value)
    }

    fn s(v: &str) -> Value {
        Value::State(v.into())
    }

    #[test]
    fn every_field_type() {
        let r = one(
            r#"m,machine_id=press-01 f=1.5,neg=-2e3,i=42i,u=7u,str="a b",bt=t,bf=FALSE,whole=3 1700000000000000000"#,
        );
        assert_eq!(r.machine_id.as_ref().unwrap().as_str(), "press-01");
        assert_eq!(get(&r, "measurement"), Some(&s("m")));
        assert_eq!(get(&r, "f"), Some(&Value::Number(1.5)));
        assert_eq!(get(&r, "neg"), Some(&Value::Number(-2000.0)));
        assert_eq!(get(&r, "i"), Some(&Value::Number(42.0)));
        assert_eq!(get(&r, "u"), Some(&Value::Number(7.0)));
        assert_eq!(get(&r, "whole"), Some(&Value::Number(3.0)));
        assert_eq!(get(&r, "str"), Some(&s("a b")));
        assert_eq!(get(&r, "bt"), Some(&s("true")));
        assert_eq!(get(&r, "bf"), Some(&s("false")));
        assert_eq!(
            r.timestamp,
            Some(Timestamp::from_nanos(1_700_000_000_000_000_000))
        );
    }

    #[test]
    fn escaping() {
        let r = one(
            r#"my\ meas\,ure,site=plant\ 1,cell=a\,b\=c temp=1,note="say \"hi\" \\ bye",path="C:\dir",eq="a=b, c""#,
        );
        assert_eq!(get(&r, "measurement"), Some(&s("my meas,ure")));
        assert_eq!(get(&r, "site"), Some(&s("plant 1")));
        assert_eq!(get(&r, "cell"), Some(&s("a,b=c")));
        assert_eq!(get(&r, "note"), Some(&s(r#"say "hi" \ bye"#)));
        assert_eq!(get(&r, "path"), Some(&s(r"C:\dir")));
        assert_eq!(get(&r, "eq"), Some(&s("a=b, c")));
        // A backslash before anything else is kept.
        assert_eq!(get(&one(r"m,t=a\b x=1"), "t"), Some(&s(r"a\b")));
    }

    #[test]
    fn machine_tag_and_host_fallback() {
        let opts = Options {
            precision: Precision::Nanoseconds,
            machine_tag: "machine".into(),
        };
        let r = parse_line("cpu,host=gw-1,machine=lathe-2 x=1", &opts).unwrap();
        assert_eq!(r.machine_id.unwrap().as_str(), "lathe-2");
        assert!(
            r.fields
                .iter()
                .all(|f| f.name.as_str() != "machine" && f.name.as_str() != "host")
        );
        let r = parse_line("cpu,host=gw-1 x=1", &opts).unwrap();
        assert_eq!(r.machine_id.unwrap().as_str(), "gw-1");
        assert_eq!(parse_line("cpu x=1", &opts).unwrap().machine_id, None);
    }

    #[test]
    fn every_precision() {
        for (p, mult) in [
            ("ns", 1i64),
            ("n", 1),
            ("us", 1_000),
            ("u", 1_000),
            ("ms", 1_000_000),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ] {
            let opts = Options {
                precision: Precision::parse(p).unwrap(),
                ..Options::default()
            };
            let r = parse_line("m x=1 17", &opts).unwrap();
            assert_eq!(r.timestamp, Some(Timestamp::from_nanos(17 * mult)), "{p}");
        }
        assert!(Precision::parse("d").is_err());
        // No timestamp: the time of arrival, decided by the pipeline.
        assert_eq!(one("m x=1").timestamp, None);
        assert_eq!(one("m x=1   ").timestamp, None);
        assert_eq!(one("m x=1 -5").timestamp, Some(Timestamp::from_nanos(-5)));
        let opts = Options {
            precision: Precision::Hours,
            ..Options::default()
        };
        assert!(parse_line("m x=1 9000000000", &opts).is_err());
    }

    #[test]
    fn comments_blank_lines_and_positions() {
        let body = b"# a comment\n\nm x=1 1\n  # indented comment\r\nm x=oops 2\nm,t=a y=2i 3\r\n";
        let got = parse_all(body, &Options::default());
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].0,
            Position {
                index: 0,
                line: Some(3)
            }
        );
        assert!(got[0].1.is_ok());
        let err = got[1].1.as_ref().unwrap_err().to_string();
        assert_eq!(got[1].0.line, Some(5));
        assert!(
            err.contains("line 5 column 5") && err.contains("\"x\""),
            "{err}"
        );
        assert!(got[2].1.is_ok());
    }

    /// Each malformed line with the column the error must point at.
    #[test]
    fn rejections_name_line_and_column() {
        for (line, col, says) in [
            (",t=1 x=1", 1, "measurement"),
            ("m", 2, "space"),
            ("m ", 3, "field=value"),
            ("m x", 3, "field=value"),
            ("m x=", 5, "no value"),
            ("m x=abc", 5, "not a number"),
            ("m x=inf", 5, "not a number"),
            ("m x=1.5i", 5, "not a number"),
            ("m x=-1u", 5, "not a number"),
            ("m x=\"open", 5, "not closed"),
            ("m,t x=1", 3, "tag=value"),
            ("m,t= x=1", 5, "no value"),
            ("m,bad\\ name=v x=1", 3, "not allowed"),
            ("m x_avg=1", 3, "_avg"),
            ("m x=1,x=2", 7, "twice"),
            ("m,measurement=a x=1", 3, "twice"),
            ("m x=1 12abc", 7, "timestamp"),
            ("m x=1 1 2", 7, "timestamp"),
            ("m,machine_id=a\\ b x=1", 14, "machine"),
        ] {
            let err = parse_line(line, &Options::default()).expect_err(line);
            assert_eq!(err.0, col, "{line}: {err:?}");
            assert!(err.1.contains(says), "{line}: {err:?} should say {says:?}");
        }
    }

    /// A Telegraf-style payload: several measurements and tags, every field type.
    #[test]
    fn telegraf_payload_round_trip() {
        let payload = "\
cpu,cpu=cpu-total,host=plc-gw-01 usage_idle=91.5,usage_user=5.25,usage_system=3.25 1732771800000000000
modbus,host=plc-gw-01,machine_id=press-01,slave_id=1,type=holding_register spindle_speed=1480i,temperature=71.5,door_open=false,alarm=\"none\" 1732771800000000000
opcua,host=plc-gw-02,machine_id=lathe-02,quality=OK feed_rate=0.25,running=true 1732771801000000000
";
        let got = parse_all(payload.as_bytes(), &Options::default());
        assert_eq!(got.len(), 3);
        let rs: Vec<Reading> = got.into_iter().map(|(_, r)| r.unwrap()).collect();
        assert_eq!(rs[0].machine_id.as_ref().unwrap().as_str(), "plc-gw-01");
        assert_eq!(get(&rs[0], "cpu"), Some(&s("cpu-total")));
        assert_eq!(get(&rs[0], "usage_idle"), Some(&Value::Number(91.5)));
        assert_eq!(rs[1].machine_id.as_ref().unwrap().as_str(), "press-01");
        assert_eq!(get(&rs[1], "measurement"), Some(&s("modbus")));
        assert_eq!(get(&rs[1], "slave_id"), Some(&s("1")));
        assert_eq!(get(&rs[1], "spindle_speed"), Some(&Value::Number(1480.0)));
        assert_eq!(get(&rs[1], "door_open"), Some(&s("false")));
        assert_eq!(get(&rs[1], "alarm"), Some(&s("none")));
        assert_eq!(rs[2].timestamp.unwrap().to_string(), "2024-11-28T05:30:01Z");
        assert_eq!(get(&rs[2], "running"), Some(&s("true")));
        assert_eq!(rs[1].fields.len(), 7);
    }
}
