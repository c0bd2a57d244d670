//! CSV readings (SPEC §1): a header row names the fields (`machine_id` and `timestamp`
//! columns optional), each further row is a reading. A cell that parses as a finite number is
//! numeric, an empty cell absent, anything else a state value. Every row goes through the
//! same checks as a JSON reading (it is handed to [`parse_reading`] as the object it means), so
//! CSV and JSON cannot drift apart in what they accept. Also: a hint for text that is CSV or
//! line protocol but is being read as JSON.

use std::fmt::Write as _;
use std::io::Read;

use crate::reading::{Parsed, Position, ReadingError, parse_reading};

/// Whether `path` names a CSV file (ends in `.csv`).
pub fn is_csv_path(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Whether a request's content type is CSV (`text/csv`).
pub fn is_csv_type(essence: &str) -> bool {
    essence.eq_ignore_ascii_case("text/csv")
}

/// Readings from CSV text, one per row after the header, streaming.
pub fn readings<R: Read>(input: R) -> impl Iterator<Item = Parsed> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let headers = reader.headers().cloned();
    let mut records = reader.into_records();
    let mut index = 0u64;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let headers = match &headers {
            Ok(h) => h,
            Err(e) => {
                failed = true;
                return Some((
                    Position {
                        index: 0,
                        line: Some(1),
                    },
                    Err(ReadingError::Reading(format!("CSV header: {e}"))),
                ));
            }
        };
        let row = records.next()?;
        let position = Position {
            index,
            line: row
                .as_ref()
                .ok()
                .and_then(|r| r.position().map(|p| p.line())),
        };
        index += 1;
        Some(match row {
            Ok(row) => (
                position,
                parse_reading(row_as_json(headers, &row).as_bytes()),
            ),
            Err(e) => {
                // A broken byte stream ends the input; a row of the wrong length is one bad
                // reading.
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    failed = true;
                }
                let line = e.position().map(|p| p.line());
                (
                    Position {
                        index: position.index,
                        line,
                    },
                    Err(ReadingError::Reading(format!("CSV: {}", csv_error(&e)))),
                )
            }
        })
    })
}

/// Readings from CSV held in memory.
pub fn parse_all(text: &[u8]) -> Vec<Parsed> {
    readings(text).collect()
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("the row has {len} cells where the header names {expected_len}"),
        _ => e.to_string(),
    }
}

/// The JSON object a CSV row stands for.
fn row_as_json(headers: &csv::StringRecord, row: &csv::StringRecord) -> String {
    let mut out = String::with_capacity(row.as_slice().len() + 16 * row.len() + 2);
    out.push('{');
    let mut first = true;
    for (name, cell) in headers.iter().zip(row.iter()) {
        if cell.is_empty() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{}:", serde_json::Value::from(name));
        if let Ok(i) = cell.parse::<i64>() {
            let _ = write!(out, "{i}");
        } else if let Ok(f) = cell.parse::<f64>()
            && f.is_finite()
            && !cell.eq_ignore_ascii_case("infinity")
        {
            // ryu's shortest form reads back as the same f64.
            let mut buf = ryu::Buffer::new();
            out.push_str(buf.format_finite(f));
        } else {
            let _ = write!(out, "{}", serde_json::Value::from(cell));
        }
    }
    out.push('}');
    out
}

/// What a text that is not JSON looks like, if it looks like another format readings come
/// in: a sentence saying so and how to send it, for the error.
pub fn other_format_hint(text: &[u8]) -> Option<&'static str> {
    let first = text.split(|&c| c == b'\n').next()?;
    let first = std::str::from_utf8(first).ok()?.trim();
    if first.is_empty() || first.starts_with(['{', '[']) {
        return None;
    }
    if let Some((_, rest)) = first.split_once(' ')
        && rest.split(' ').next().is_some_and(|f| f.contains('='))
    {
        return Some(
            "this looks like InfluxDB line protocol, not JSON: name the file .lp, or POST it to /write?db=plant",
        );
    }
    if first.contains(',') {
        return Some(
            "this looks like CSV, not JSON: name the file .csv, or send it with Content-Type: text/csv",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Reading, parse_all as parse_json};

    fn ok(items: Vec<Parsed>) -> Vec<Reading> {
        items.into_iter().map(|(_, r)| r.unwrap()).collect()
    }

    #[test]
    fn rows_are_the_readings_json_would_give() {
        let csv = "machine_id,timestamp,temperature,speed,status\n\
                   press-01,2024-10-27T12:00:00,70,30,RUNNING\n\
                   press-01,1729850410,72.5,,PAUSED\n\
                   ,2024-10-27T12:00:20Z,-1e3,31,\"a, b\"\n";
        let json = r#"{"machine_id":"press-01","timestamp":"2024-10-27T12:00:00","temperature":70,"speed":30,"status":"RUNNING"}
{"machine_id":"press-01","timestamp":1729850410,"temperature":72.5,"status":"PAUSED"}
{"timestamp":"2024-10-27T12:00:20Z","temperature":-1000,"speed":31,"status":"a, b"}"#;
        assert_eq!(
            ok(parse_all(csv.as_bytes())),
            ok(parse_json(json.as_bytes()))
        );
    }

    #[test]
    fn bad_cells_and_rows_name_what_is_wrong() {
        let csv = "machine_id,temperature\nbad id!,1\npress-01\npress-01,NaN\n";
        let items = parse_all(csv.as_bytes());
        assert_eq!(items.len(), 3);
        let e = items[0].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("machine_id"), "{e}");
        let e = items[1].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("1 cells where the header names 2"), "{e}");
        // NaN is no finite number: a state value.
        let r = items[2].1.as_ref().unwrap();
        assert_eq!(
            r.fields[0].value,
            crate::reading::Value::State("NaN".into())
        );
        let e = parse_all(b"a,a\n1,2\n")[0]
            .1
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn hints() {
        assert!(
            other_format_hint(b"timestamp,temperature\n1,2")
                .unwrap()
                .contains("CSV")
        );
        assert!(
            other_format_hint(b"modbus,host=a temperature=1 17000")
                .unwrap()
                .contains("line protocol")
        );
        assert_eq!(other_format_hint(b"{\"a\": 1}"), None);
        assert_eq!(other_format_hint(b"hello"), None);
    }
}
