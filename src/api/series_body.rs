//! The series bodies of `POST /analytics` and `millwatch analyze`: parallel `timestamps` and
//! `values` arrays, or a `series` of `{timestamp, value}` points, with an optional threshold.
//! A streaming serde visitor, so that a body of millions of values is read once without an
//! intermediate `serde_json::Value`, and every error names the field and the element.

use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::timestamp::Timestamp;

/// A series as `POST /analytics` and `millwatch analyze` take it: parallel timestamps and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// When each value was taken.
    pub timestamps: Vec<Timestamp>,
    /// The values, finite.
    pub values: Vec<f64>,
    /// The threshold the body asked for, if any (finite, >= 0).
    pub threshold: Option<f64>,
}

/// Why a body is not a usable series; the message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// The body is not a series at all (a reading, an array, NDJSON, nothing): read it as readings.
    #[error(
        "not a series: expected {{\"timestamps\": [...], \"values\": [...]}} or \
         {{\"series\": [{{\"timestamp\": ..., \"value\": ...}}, ...]}}"
    )]
    NotASeries,
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// One field broke a rule.
    #[error("field {field:?}: {reason}")]
    Field {
        /// The field's name.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// `timestamps` and `values` differ in length.
    #[error("\"timestamps\" has {timestamps} entries and \"values\" {values}: they must be equal")]
    LengthMismatch {
        /// Length of `timestamps`.
        timestamps: usize,
        /// Length of `values`.
        values: usize,
    },
    /// Top-level fields that a series does not have.
    #[error(
        "unknown field{} {}: a series has \"timestamps\", \"values\" and \"threshold\", or \
         \"series\" and \"threshold\"",
        if .0.len() == 1 { "" } else { "s" },
        quoted(.0)
    )]
    UnknownFields(Vec<String>),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SeriesError {
    fn field(field: &str, reason: impl Into<String>) -> Self {
        SeriesError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

const THRESHOLD_RULE: &str = "must be a finite number >= 0";

/// Parses `{"timestamps": [...], "values": [...], "threshold": t}` or
/// `{"series": [{"timestamp": ..., "value": ...}, ...], "threshold": t}` (threshold optional).
///
/// A body is taken for a series when it is an object in which `timestamps`, `values` or `series`
/// holds an array; anything else is [`SeriesError::NotASeries`]. Readings never hold arrays
/// (SPEC §1), so a reading with a parameter that happens to be called `values` stays a reading.
/// Only the first JSON value is read before deciding, so NDJSON readings are recognized at once.
pub fn parse_series(body: &[u8]) -> Result<Series, SeriesError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(SeriesError::NotASeries);
    }
    let mut st = ParseState::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = match (&mut de).deserialize_map(TopVisitor { st: &mut st }) {
        Ok(raw) => raw,
        Err(e) => return Err(st.explain(e)),
    };
    let is_series = raw.timestamps.is_array() || raw.values.is_array() || raw.series.is_array();
    if !is_series {
        return Err(SeriesError::NotASeries);
    }
    de.end().map_err(|e| SeriesError::Syntax(e.to_string()))?;
    if let Some(name) = raw.duplicate {
        return Err(SeriesError::field(name, "appears more than once"));
    }
    if !raw.unknown.is_empty() {
        return Err(SeriesError::UnknownFields(raw.unknown));
    }
    let threshold = match raw.threshold {
        Slot::Absent => None,
        Slot::Array(Some(t)) if t.is_finite() && t >= 0.0 => Some(t),
        _ => return Err(SeriesError::field("threshold", THRESHOLD_RULE)),
    };
    let both = "cannot be combined with \"timestamps\" and \"values\": send one form";
    let (timestamps, values) = match (raw.series, raw.timestamps, raw.values) {
        (Slot::Array(points), Slot::Absent, Slot::Absent) => points.into_iter().unzip(),
        (Slot::Absent, timestamps, values) => {
            let timestamps = required(timestamps, "timestamps")?;
            let values = required(values, "values")?;
            if timestamps.len() != values.len() {
                return Err(SeriesError::LengthMismatch {
                    timestamps: timestamps.len(),
                    values: values.len(),
                });
            }
            (timestamps, values)
        }
        _ => return Err(SeriesError::field("series", both)),
    };
    Ok(Series {
        timestamps,
        values,
        threshold,
    })
}

fn required<T>(slot: Slot<Vec<T>>, name: &str) -> Result<Vec<T>, SeriesError> {
    match slot {
        Slot::Array(v) => Ok(v),
        Slot::Absent => Err(SeriesError::field(
            name,
            "missing: a series needs \"timestamps\" and \"values\" of equal length",
        )),
        Slot::Other(kind) => Err(SeriesError::field(
            name,
            format!("must be an array, got {kind}"),
        )),
    }
}

/// Where the parser is, so that an error serde_json raises on its own (a number beyond f64) can
/// still name the field, and the error our visitors found, kept whole rather than as text.
#[derive(Default)]
struct ParseState {
    failure: Option<SeriesError>,
    at: Option<(&'static str, Option<usize>)>,
}

impl ParseState {
    fn explain(&mut self, e: serde_json::Error) -> SeriesError {
        if let Some(f) = self.failure.take() {
            return f;
        }
        // serde_json rejects 1e400 itself, before any visitor sees it.
        if e.to_string().starts_with("number out of range") {
            match self.at {
                Some(("values", Some(i))) => {
                    return SeriesError::field(
                        "values",
                        format!("index {i} is not a finite number"),
                    );
                }
                Some(("threshold", _)) => return SeriesError::field("threshold", THRESHOLD_RULE),
                Some((field, Some(i))) => {
                    return SeriesError::field(field, format!("index {i}: number out of range"));
                }
                Some((field, None)) => return SeriesError::field(field, "number out of range"),
                None => {}
            }
        }
        SeriesError::Syntax(e.to_string())
    }
}

/// A top-level field as found: absent, the expected shape (an array; a number for `threshold`),
/// or something else (named for the error message).
#[derive(Debug, Default)]
enum Slot<T> {
    #[default]
    Absent,
    Array(T),
    Other(&'static str),
}

impl<T> Slot<T> {
    fn is_array(&self) -> bool {
        matches!(self, Slot::Array(_))
    }
}

#[derive(Default)]
struct RawSeries {
    timestamps: Slot<Vec<Timestamp>>,
    values: Slot<Vec<f64>>,
    series: Slot<Vec<(Timestamp, f64)>>,
    /// `Array(None)` is a threshold that is not a number.
    threshold: Slot<Option<f64>>,
    unknown: Vec<String>,
    duplicate: Option<&'static str>,
}

struct TopVisitor<'s> {
    st: &'s mut ParseState,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = RawSeries;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a series object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSeries, A::Error> {
        let mut raw = RawSeries::default();
        while let Some(key) = map.next_key::<String>()? {
            self.st.at = None;
            let (name, duplicate) = match key.as_str() {
                "timestamps" => {
                    let slot = map.next_value_seed(ArrayOr::<TimeElement>::new(self.st))?;
                    ("timestamps", replace(&mut raw.timestamps, slot))
                }
                "values" => {
                    let slot = map.next_value_seed(ArrayOr::<ValueElement>::new(self.st))?;
                    ("values", replace(&mut raw.values, slot))
                }
                "series" => {
                    let slot = map.next_value_seed(ArrayOr::<PointElement>::new(self.st))?;
                    ("series", replace(&mut raw.series, slot))
                }
                "threshold" => {
                    self.st.at = Some(("threshold", None));
                    let t = map.next_value_seed(ScalarSeed(NumberVisitor))?;
                    self.st.at = None;
                    let slot = match t {
                        Scalar::Null => Slot::Absent,
                        Scalar::Value(v) => Slot::Array(v),
                    };
                    ("threshold", replace(&mut raw.threshold, slot))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    raw.unknown.push(key);
                    continue;
                }
            };
            if duplicate && raw.duplicate.is_none() {
                raw.duplicate = Some(name);
            }
        }
        Ok(raw)
    }
}

/// Stores `new` in `slot`; true if the slot was already filled (a duplicate key).
fn replace<T>(slot: &mut Slot<T>, new: Slot<T>) -> bool {
    let was_filled = !matches!(slot, Slot::Absent);
    *slot = new;
    was_filled
}

/// How one kind of array element is read.
trait Element {
    type Item;
    /// The field the array is in.
    const FIELD: &'static str;
    /// Reads element `index`; `Ok(Err(reason))` when it is JSON but not a valid element.
    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<Self::Item, String>, D::Error>;
}

struct ArrayOr<'s, E> {
    st: &'s mut ParseState,
    element: PhantomData<E>,
}

impl<'s, E> ArrayOr<'s, E> {
    fn new(st: &'s mut ParseState) -> Self {
        ArrayOr {
            st,
            element: PhantomData,
        }
    }
}

impl<'de, E: Element> DeserializeSeed<'de> for ArrayOr<'_, E> {
    type Value = Slot<Vec<E::Item>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: Element> Visitor<'de> for ArrayOr<'_, E> {
    type Value = Slot<Vec<E::Item>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array for {:?}", E::FIELD)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        loop {
            let index = out.len();
            self.st.at = Some((E::FIELD, Some(index)));
            match seq.next_element_seed(ElementSeed::<E>(index, PhantomData))? {
                None => break,
                Some(Ok(item)) => out.push(item),
                Some(Err(reason)) => {
                    self.st.failure = Some(SeriesError::field(E::FIELD, reason));
                    return Err(de::Error::custom("invalid element"));
                }
            }
        }
        self.st.at = None;
        Ok(Slot::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Slot::Other("an object"))
    }
    fn visit_unit<Er>(self) -> Result<Self::Value, Er> {
        Ok(Slot::Absent)
    }
    fn visit_bool<Er>(self, _: bool) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a boolean"))
    }
    fn visit_i64<Er>(self, _: i64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_u64<Er>(self, _: u64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_f64<Er>(self, _: f64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_str<Er>(self, _: &str) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a string"))
    }
}

struct ElementSeed<E>(usize, PhantomData<E>);

impl<'de, E: Element> DeserializeSeed<'de> for ElementSeed<E> {
    type Value = Result<E::Item, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        E::read(d, self.0)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A scalar field as read: `null`, or what the visitor made of anything else.
enum Scalar<T> {
    Null,
    Value(T),
}

/// Reads one JSON value with a visitor that maps every kind of value to a `T`.
struct ScalarSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for ScalarSeed<V> {
    type Value = Scalar<V::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(NullOr(self.0))
    }
}

struct NullOr<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for NullOr<V> {
    type Value = Scalar<V::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Scalar::Value)
    }
}

/// Any JSON value to `Some(finite f64)` if it is a number, `None` otherwise.
struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.is_finite().then_some(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(None)
    }
}

/// Any JSON value to a timestamp in one of the three forms of SPEC §1, or the reason it is not.
struct TimeVisitor;

const TIME_FORMS: &str = "expected an RFC 3339 string or seconds since the epoch";

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = Result<Timestamp, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(TIME_FORMS)
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Timestamp::parse(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Timestamp::from_unix_seconds(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Timestamp::from_unix_seconds_int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => Timestamp::from_unix_seconds_int(v),
            Err(_) => Err(format!("{v} seconds since the epoch is outside 1677..2262")),
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(format!("{TIME_FORMS}, got a boolean")))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(format!("{TIME_FORMS}, got null")))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Err(format!("{TIME_FORMS}, got an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Err(format!("{TIME_FORMS}, got an array")))
    }
}

struct ValueElement;

impl Element for ValueElement {
    type Item = f64;
    const FIELD: &'static str = "values";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<f64, String>, D::Error> {
        Ok(d.deserialize_any(NumberVisitor)?
            .ok_or_else(|| format!("index {index} is not a finite number")))
    }
}

struct TimeElement;

impl Element for TimeElement {
    type Item = Timestamp;
    const FIELD: &'static str = "timestamps";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<Timestamp, String>, D::Error> {
        Ok(d.deserialize_any(TimeVisitor)?
            .map_err(|reason| format!("index {index}: {reason}")))
    }
}

struct PointElement;

impl Element for PointElement {
    type Item = (Timestamp, f64);
    const FIELD: &'static str = "series";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<(Timestamp, f64), String>, D::Error> {
        d.deserialize_any(PointVisitor { index })
    }
}

/// One `{"timestamp": ..., "value": ...}` of the `series` form.
struct PointVisitor {
    index: usize,
}

impl PointVisitor {
    fn not_an_object(&self) -> Result<(Timestamp, f64), String> {
        Err(format!(
            "index {} must be an object {{\"timestamp\": ..., \"value\": ...}}",
            self.index
        ))
    }
}

impl<'de> Visitor<'de> for PointVisitor {
    type Value = Result<(Timestamp, f64), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object {\"timestamp\", \"value\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let i = self.index;
        let mut timestamp = None;
        let mut value = None;
        // The whole object is read even after a problem, so that the parser stays in step; the
        // first problem is the one reported.
        let mut problem: Option<String> = None;
        while let Some(key) = map.next_key_seed(PointKeySeed)? {
            match key {
                PointKey::Timestamp => {
                    let t = map.next_value_seed(ScalarSeed(TimeVisitor))?;
                    if timestamp.is_some() {
                        problem.get_or_insert(format!("index {i}: duplicate \"timestamp\""));
                    }
                    timestamp = Some(match t {
                        Scalar::Null => Err(format!("{TIME_FORMS}, got null")),
                        Scalar::Value(t) => t,
                    });
                }
                PointKey::Value => {
                    let v = map.next_value_seed(ScalarSeed(NumberVisitor))?;
                    if value.is_some() {
                        problem.get_or_insert(format!("index {i}: duplicate \"value\""));
                    }
                    value = Some(match v {
                        Scalar::Null => None,
                        Scalar::Value(v) => v,
                    });
                }
                PointKey::Other(name) => {
                    map.next_value::<IgnoredAny>()?;
                    problem.get_or_insert(format!(
                        "index {i}: unknown field {name:?}: a point has \"timestamp\" and \"value\""
                    ));
                }
            }
        }
        if let Some(p) = problem {
            return Ok(Err(p));
        }
        Ok(match (timestamp, value) {
            (None, _) => Err(format!("index {i}: missing \"timestamp\"")),
            (_, None) => Err(format!("index {i}: missing \"value\"")),
            (Some(Err(reason)), _) => Err(format!("index {i}: \"timestamp\": {reason}")),
            (_, Some(None)) => Err(format!("index {i}: \"value\" is not a finite number")),
            (Some(Ok(t)), Some(Some(v))) => Ok((t, v)),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(self.not_an_object())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
}

/// A key of a point, matched without allocating for the two expected ones (there may be
/// millions of points).
enum PointKey {
    Timestamp,
    Value,
    Other(String),
}

struct PointKeySeed;

impl<'de> DeserializeSeed<'de> for PointKeySeed {
    type Value = PointKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PointKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PointKeySeed {
    type Value = PointKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<PointKey, E> {
        Ok(match v {
            "timestamp" => PointKey::Timestamp,
            "value" => PointKey::Value,
            other => PointKey::Other(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Series, SeriesError> {
        parse_series(text.as_bytes())
    }

    fn field_error(text: &str) -> String {
        match parse(text) {
            Err(e @ SeriesError::Field { .. }) => e.to_string(),
            other => panic!("{text}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn arrays_form_with_all_three_timestamp_forms() {
        let s = parse(
            r#" {"timestamps": ["2024-10-27T12:00:00", "2024-10-27T13:00:00+01:00", 1729944000, 1729944000.5, -1],
                 "values": [30, 32.5, -1e-3, 0, 7], "threshold": 0.25} "#,
        )
        .unwrap();
        let noon = Timestamp::parse("2024-10-27T12:00:00Z").unwrap();
        assert_eq!(
            s.timestamps,
            vec![
                noon,
                noon,
                Timestamp::from_unix_seconds_int(1_729_944_000).unwrap(),
                Timestamp::from_nanos(1_729_944_000_500_000_000),
                Timestamp::from_nanos(-1_000_000_000),
            ]
        );
        assert_eq!(s.values, vec![30.0, 32.5, -1e-3, 0.0, 7.0]);
        assert_eq!(s.threshold, Some(0.25));
        let s = parse(r#"{"values": [], "timestamps": [], "threshold": null}"#).unwrap();
        assert_eq!(
            s,
            Series {
                timestamps: vec![],
                values: vec![],
                threshold: None
            }
        );
    }

    #[test]
    fn series_form() {
        let s = parse(
            r#"{"series": [{"timestamp": "2024-10-27T12:00:00Z", "value": 70},
                           {"value": 71.5, "timestamp": 1730030460}], "threshold": 0}"#,
        )
        .unwrap();
        assert_eq!(
            s.timestamps,
            vec![
                Timestamp::parse("2024-10-27T12:00:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:01:00Z").unwrap()
            ]
        );
        assert_eq!(s.values, vec![70.0, 71.5]);
        assert_eq!(s.threshold, Some(0.0));
        assert_eq!(
            parse(r#"{"series": []}"#).unwrap().values,
            Vec::<f64>::new()
        );
    }

    #[test]
    fn readings_and_other_shapes_are_not_a_series() {
        for text in [
            "",
            "  \n",
            r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"}"#,
            "{\"temperature\": 70}\n{\"temperature\": 71}\n",
            r#"[{"temperature": 70}]"#,
            r#"{"values": 5, "machine_id": "press-01"}"#,
            r#"{"series": "RUNNING"}"#,
            r#"{}"#,
            "42",
        ] {
            assert_eq!(parse(text), Err(SeriesError::NotASeries), "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"timestamps": [1, 2, 3, 4], "values": [1, 2, 3, "x"]}"#,
                r#"field "values": index 3 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1, null]}"#,
                r#"field "values": index 1 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1e400, 1]}"#,
                r#"field "values": index 0 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1, [2]]}"#,
                r#"field "values": index 1 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, "yesterday"], "values": [1, 2]}"#,
                r#"field "timestamps": index 1: "yesterday" is not a time"#,
            ),
            (
                r#"{"timestamps": [1, true], "values": [1, 2]}"#,
                r#"field "timestamps": index 1: expected an RFC 3339 string or seconds since the epoch, got a boolean"#,
            ),
            (
                r#"{"timestamps": [1e300], "values": [1]}"#,
                r#"field "timestamps": index 0: 100000000000000000000"#,
            ),
            (r#"{"values": [1, 2]}"#, r#"field "timestamps": missing"#),
            (r#"{"timestamps": [1, 2]}"#, r#"field "values": missing"#),
            (
                r#"{"timestamps": [1], "values": {"a": 1}}"#,
                r#"field "values": must be an array, got an object"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": -0.1}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": "20%"}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": 1e999}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "series": []}"#,
                r#"field "series": cannot be combined with "timestamps" and "values""#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "values": [2]}"#,
                r#"field "values": appears more than once"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 2}, 5]}"#,
                r#"field "series": index 1 must be an object {"timestamp": ..., "value": ...}"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 2, "unit": "C"}]}"#,
                r#"field "series": index 0: unknown field "unit": a point has "timestamp" and "value""#,
            ),
            (
                r#"{"series": [{"timestamp": 1}]}"#,
                r#"field "series": index 0: missing "value""#,
            ),
            (
                r#"{"series": [{"value": 1}]}"#,
                r#"field "series": index 0: missing "timestamp""#,
            ),
            (
                r#"{"series": [{"timestamp": "noon", "value": 1}]}"#,
                r#"field "series": index 0: "timestamp": "noon" is not a time"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": "1"}]}"#,
                r#"field "series": index 0: "value" is not a finite number"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 1, "value": 2}]}"#,
                r#"field "series": index 0: duplicate "value""#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 1e999}]}"#,
                r#"field "series": index 0: number out of range"#,
            ),
        ];
        for (text, want) in cases {
            let got = field_error(text);
            assert!(got.starts_with(want), "{text}\n got: {got}\nwant: {want}…");
        }
    }

    #[test]
    fn length_mismatch_unknown_fields_and_syntax() {
        let e = parse(r#"{"timestamps": [1, 2, 3, 4], "values": [1, 2, 3, 4, 5]}"#).unwrap_err();
        assert_eq!(
            e,
            SeriesError::LengthMismatch {
                timestamps: 4,
                values: 5
            }
        );
        assert_eq!(
            e.to_string(),
            r#""timestamps" has 4 entries and "values" 5: they must be equal"#
        );
        let e =
            parse(r#"{"timestamps": [1], "values": [1], "unit": "C", "machine": 1}"#).unwrap_err();
        assert_eq!(
            e,
            SeriesError::UnknownFields(vec!["unit".into(), "machine".into()])
        );
        assert!(
            e.to_string()
                .starts_with(r#"unknown fields "unit", "machine": a series has"#),
            "{e}"
        );
        let e = parse(r#"{"timestamps": [1], "values": [1], "unit": "C"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with(r#"unknown field "unit": "#),
            "{e}"
        );
        for broken in [
            r#"{"timestamps": [1], "values": [1,]}"#,
            r#"{"timestamps": [1], "values": [1]"#,
            r#"{"timestamps": [1], "values": [1]} trailing"#,
            r#"{"temperature": 70,, }"#,
        ] {
            let e = parse(broken).unwrap_err();
            assert!(
                matches!(e, SeriesError::Syntax(_)) && e.to_string().starts_with("invalid JSON: "),
                "{broken}: {e:?}"
            );
        }
    }

    #[test]
    fn parsed_series_analyzes() {
        let s =
            parse(r#"{"timestamps": [1, 2, 3, 4, 5], "values": [30, 32, 50, 31, 29]}"#).unwrap();
        let opts = crate::core::analytics::Options {
            threshold: s.threshold.unwrap_or(0.2),
            ..Default::default()
        };
        let a = crate::core::analytics::analyze(&s.timestamps, &s.values, &opts);
        assert_eq!(a.anomalies.len(), 1);
        assert_eq!(
            a.anomalies[0].timestamp,
            Timestamp::from_nanos(3_000_000_000)
        );
    }
}
