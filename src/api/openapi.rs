//! The OpenAPI document, with every constraint the handlers enforce declared (SPEC §4), so
//! that a client generated from it sends only what the server takes.
//!
//! utoipa derives the routes, types and descriptions from the handlers; the value rules live
//! here, one table by parameter name, because the same name (`machine_id`, `since`, `limit`)
//! has the same rule on every route. Where the server takes more than a JSON Schema pattern
//! can say exactly (times: RFC 3339 and two other forms; durations), the pattern declares a
//! subset that the server always takes.

use std::sync::OnceLock;

use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::reading::MAX_NAME_LEN;

/// A machine id or parameter name (SPEC §1). The schema leaves out names that start with a
/// dot, so that `.` and `..`, which the server refuses, cannot be generated.
fn name_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LEN,
        "pattern": format!("^[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{}}}$", MAX_NAME_LEN - 1),
    })
}

/// An RFC 3339 UTC time within the range a timestamp holds (days up to 28 keep every
/// generated date real).
fn time_schema() -> Value {
    json!({
        "type": "string",
        "format": "date-time",
        "pattern": "^(19[7-9][0-9]|2[01][0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z$",
    })
}

/// Seconds since the epoch as a number (integer or fraction), within what a timestamp holds.
fn seconds_schema() -> Value {
    let max_secs = crate::timestamp::MAX_UNIX_SECONDS;
    json!({"type": "number", "minimum": -max_secs, "maximum": max_secs})
}

/// The rule of each query or path parameter, by name; `route` tells apart the one name that
/// means two things (`bucket`: a duration in /analytics, a bucket name in /api/v2/write).
fn parameter_schema(route: &str, name: &str) -> Option<Value> {
    let limit = crate::api::data::MAX_LIMIT;
    Some(match (route, name) {
        (_, "machine_id") => name_schema(),
        (_, "parameter") => name_schema(),
        (_, "since" | "until") => time_schema(),
        (_, "limit") => json!({"type": "integer", "minimum": 0, "maximum": limit}),
        (_, "threshold") => json!({"type": "number", "minimum": 0}),
        (_, "baseline") => json!({
            "type": "string",
            "pattern": "^(global|moving|moving:([1-9][0-9]{0,4}|100000))$",
        }),
        ("/analytics", "bucket") => {
            json!({"type": "string", "pattern": "^[1-9][0-9]{0,4}(ms|s|m|h|d)$"})
        }
        (_, "bucket" | "db") => json!({"type": "string", "minLength": 1}),
        (_, "precision") => {
            // Empty, as InfluxDB takes it: nanoseconds.
            json!({"type": "string", "enum": ["", "ns", "n", "us", "u", "ms", "s", "m", "h"]})
        }
        (_, "by") => json!({"type": "string", "enum": ["hour", "day", "shift"]}),
        (_, "timeline") => json!({"type": "boolean"}),
        (_, "rule" | "name") => json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
        ("/data", "format") => json!({"type": "string", "enum": ["json", "csv"]}),
        _ => return None,
    })
}

/// The document `/openapi.json` serves, made once.
pub(crate) fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap_or(Value::Null);
        constrain(&mut doc);
        doc
    })
}

/// Declares the table's rules on every parameter, and the rules of the bodies.
fn constrain(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (route, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                    continue;
                };
                for p in params {
                    let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                    if let Some(schema) = parameter_schema(route, name) {
                        p["schema"] = schema;
                    }
                }
            }
        }
    }
    // POST /status: the status is required, one of the enum, never null; an absent or null
    // machine is the default machine.
    if let Some(set) = doc.pointer_mut("/components/schemas/SetStatus") {
        set["properties"]["status"] = json!({"$ref": "#/components/schemas/JobStatus"});
        set["properties"]["machine_id"] = json!({"oneOf": [name_schema(), {"type": "null"}]});
        set["required"] = json!(["status"]);
        set["additionalProperties"] = json!(false);
    }
    // A reading: an id by the rules of names, a time as a string or seconds since the epoch.
    if let Some(reading) = doc.pointer_mut("/components/schemas/ReadingDoc") {
        reading["properties"]["machine_id"] = json!({"oneOf": [name_schema(), {"type": "null"}]});
        reading["properties"]["timestamp"] = json!({"oneOf": [
            time_schema(),
            seconds_schema(),
            {"type": "null"},
        ]});
        // Every other field is a parameter, named by the rules of names: a number, a state
        // or null. A state holds at most 256 bytes, which JSON Schema cannot say: 256
        // characters is exact for ASCII; a longer text in another script is refused.
        reading["propertyNames"] = name_schema();
        reading["additionalProperties"] = json!({"oneOf": [
            {"type": "number"},
            {"type": "string", "maxLength": 256},
            {"type": "null"},
        ]});
    }
    let bodies = [
        ("/analytics", "application/json", analytics_body()),
        ("/write", "text/plain", line_protocol_body()),
        ("/api/v2/write", "text/plain", line_protocol_body()),
        ("/ingest", "text/csv", csv_body()),
        ("/ingest", "application/x-ndjson", ndjson_body()),
    ];
    for (route, content_type, schema) in bodies {
        let pointer = format!(
            "/paths/{}/post/requestBody/content/{}/schema",
            route.replace('/', "~1"),
            content_type.replace('/', "~1")
        );
        if let Some(at) = doc.pointer_mut(&pointer) {
            *at = schema;
        }
    }
}

/// The series form of the analytics body; the parallel-arrays form, whose equal lengths a
/// schema cannot state, is described in words.
fn analytics_body() -> Value {
    json!({
        "type": "object",
        "required": ["series"],
        "properties": {
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["timestamp", "value"],
                    "properties": {
                        "timestamp": {"oneOf": [time_schema(), seconds_schema()]},
                        "value": {"type": "number"},
                    },
                    "additionalProperties": false,
                },
            },
            "threshold": {"oneOf": [{"type": "number", "minimum": 0}, {"type": "null"}]},
        },
        "additionalProperties": false,
    })
}

/// Lines of InfluxDB line protocol in the shape Telegraf writes: a measurement, tags, one or
/// more numeric fields and a timestamp that fits any precision (up to 999,999 hours).
fn line_protocol_body() -> Value {
    json!({
        "type": "string",
        "pattern": "^([a-z][a-z0-9_]{0,15},machine_id=[a-z][a-z0-9-]{0,15} [a-z][a-z0-9_]{0,15}=-?[0-9]{1,6}(\\.[0-9]{1,6})?( [0-9]{1,6})?\n)+$",
    })
}

/// CSV with its header row naming the fields, then one row per reading.
fn csv_body() -> Value {
    json!({
        "type": "string",
        "pattern": "^machine_id,timestamp,value\n([a-z][a-z0-9-]{0,15},(19[7-9][0-9]|20[0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z,-?[0-9]{1,6}(\\.[0-9]{1,6})?\n)+$",
    })
}

/// One JSON reading per line.
fn ndjson_body() -> Value {
    json!({
        "type": "string",
        "pattern": "^(\\{\"machine_id\": ?\"[a-z][a-z0-9-]{0,15}\", ?\"value\": ?-?[0-9]{1,6}\\}\n)+$",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::MachineId;

    /// Every string the declared patterns allow is taken by the parser they describe: checked
    /// on samples the patterns accept, against the server's own parsers.
    #[test]
    fn declared_names_and_times_are_taken() {
        for id in ["a", "press-01", "A_b.c-9", &"x".repeat(MAX_NAME_LEN)] {
            assert!(MachineId::parse(id).is_ok(), "{id}");
        }
        for t in ["1970-01-01T00:00:00Z", "2199-12-28T23:59:59.123456789Z"] {
            assert!(
                matches!(crate::api::data::time_param("since", Some(t)), Ok(Some(_))),
                "{t}"
            );
        }
    }

    proptest::proptest! {
        /// The bucket pattern and the parser agree both ways: every width the pattern
        /// declares is taken (the longest, 99999d, included), and a sample of others is not.
        #[test]
        fn bucket_pattern_is_what_the_parser_takes(
            ok in "[1-9][0-9]{0,4}(ms|s|m|h|d)",
            other in "[0-9a-z. ]{0,8}",
        ) {
            let n: i64 = ok.trim_end_matches(char::is_alphabetic).parse().unwrap();
            let unit: i64 = match ok.trim_start_matches(|c: char| c.is_ascii_digit()) {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => 86_400_000_000_000,
            };
            proptest::prop_assert_eq!(crate::api::parse_bucket(&ok), Ok(n * unit));
            let declared = parameter_schema("/analytics", "bucket").unwrap();
            let pattern = regex::Regex::new(declared["pattern"].as_str().unwrap()).unwrap();
            proptest::prop_assert_eq!(
                crate::api::parse_bucket(&other).is_ok(),
                pattern.is_match(&other),
                "{}", other
            );
        }
    }

    #[test]
    fn every_query_parameter_has_a_rule() {
        let doc = document();
        for (route, ops) in doc["paths"].as_object().unwrap() {
            for op in ops.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap();
                    assert!(parameter_schema(route, name).is_some(), "{route} {name}");
                }
            }
        }
    }
}
