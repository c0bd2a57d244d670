//! `GET /data`, `GET /data/latest` and `POST /ingest`: processed records out, readings in.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, json_body, parse_query};
use crate::pipeline::ProcessedRecord;
use crate::reading::{MachineId, ReadingStream, readings_hint};
use crate::store::DataQuery;
use crate::timestamp::Timestamp;

/// Most records one `GET /data` returns.
pub const MAX_LIMIT: usize = 10_000;
/// Records returned when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DataParams {
    machine_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

/// A machine id from a query or path; 400 naming the field when invalid.
pub(crate) fn machine_param(field: &str, v: Option<&str>) -> Result<Option<MachineId>, ApiError> {
    v.map(|s| MachineId::parse(s).map_err(|e| ApiError::BadRequest(format!("{field}: {e}"))))
        .transpose()
}

/// A time bound from a query; RFC 3339.
pub(crate) fn time_param(field: &str, v: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    v.map(|s| Timestamp::parse(s).map_err(|e| ApiError::BadRequest(format!("{field}: {e}"))))
        .transpose()
}

/// A limit from a query: 0 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent.
pub(crate) fn limit_param(v: Option<&str>) -> Result<usize, ApiError> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n <= MAX_LIMIT => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit: {s:?} must be a whole number from 0 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// Processed records, oldest first: the newest `limit` matching the filters; as JSON, or as
/// CSV (SPEC §10) with `format=csv` or an `Accept` that prefers `text/csv`.
#[utoipa::path(get, path = "/data", tag = "data",
    params(
        ("machine_id" = Option<String>, Query, description = "Only this machine"),
        ("since" = Option<String>, Query, description = "From this time on, inclusive (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Up to this time, inclusive (RFC 3339)"),
        ("limit" = Option<usize>, Query, description = "At most this many, the newest (default 100, at most 10000)"),
        ("format" = Option<String>, Query, description = "json (default) or csv; without it, an Accept header preferring text/csv answers CSV"),
    ),
    responses(
        (status = 200, description = "Records, oldest first. CSV: header machine_id, timestamp, every parameter of the rows in name order, then the _avg column of each numeric one; RFC 4180 quoting, UTC times",
            content((Vec<super::meta::RecordDoc> = "application/json"), (String = "text/csv"))),
        (status = 400, description = "A bad parameter", body = super::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p: DataParams = parse_query(raw.as_deref())?;
    let csv = match p.format.as_deref() {
        None => accepts_csv(&headers),
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format: {other:?} is not a format: use json or csv"
            )));
        }
    };
    let q = DataQuery {
        machine_id: machine_param("machine_id", p.machine_id.as_deref())?,
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        limit: limit_param(p.limit.as_deref())?,
    };
    let records = state.service.store().query(q).await?;
    if csv {
        csv_answer(records)
    } else {
        Ok(Json(records).into_response())
    }
}

/// Whether an `Accept` header prefers `text/csv` to JSON: its quality is above zero and above
/// that of `application/json` (on a tie, the one listed first). Anything else answers JSON.
fn accepts_csv(headers: &HeaderMap) -> bool {
    let Some(accept) = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // (quality, position) of each of the two media types, when listed.
    let (mut csv, mut json) = (None, None);
    for (pos, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/csv" => csv = Some((q, pos)),
            "application/json" => json = Some((q, pos)),
            _ => {}
        }
    }
    match (csv, json) {
        (Some((q, _)), None) => q > 0.0,
        (Some((qc, pc)), Some((qj, pj))) => qc > 0.0 && (qc > qj || (qc == qj && pc < pj)),
        (None, _) => false,
    }
}

/// Bytes of CSV handed to the connection at a time.
const CSV_PIECE: usize = 64 * 1024;

/// Records as a CSV body, encoded a piece at a time as the connection takes it, so that the
/// whole text is never held at once.
fn csv_answer(records: Vec<Arc<ProcessedRecord>>) -> Result<Response, ApiError> {
    use crate::export::csv::{Columns, CsvEncoder};
    let columns = Columns::of(records.iter().map(|r| r.as_ref()));
    let encoder = CsvEncoder::new(&columns).map_err(|e| ApiError::Internal(e.to_string()))?;
    let pieces = futures::stream::unfold(
        (encoder, records.into_iter(), false),
        |(mut encoder, mut rows, done)| async move {
            if done {
                return None;
            }
            let mut last = false;
            while encoder.pending() < CSV_PIECE {
                match rows.next() {
                    Some(r) => {
                        if let Err(e) = encoder.write(&r) {
                            return Some((Err(std::io::Error::other(e)), (encoder, rows, true)));
                        }
                    }
                    None => {
                        last = true;
                        break;
                    }
                }
            }
            let piece = encoder.take().map_err(std::io::Error::other);
            Some((piece.map(Bytes::from), (encoder, rows, last)))
        },
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/csv; charset=utf-8; header=present",
        )],
        axum::body::Body::from_stream(pieces),
    )
        .into_response())
}

/// The latest processed record of each machine, sorted by machine id.
#[utoipa::path(get, path = "/data/latest", tag = "data",
    responses((status = 200, description = "One record per machine", body = [super::meta::RecordDoc])))]
pub(crate) async fn latest(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.service.latest_json(),
    )
}

/// What `POST /ingest` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IngestAnswer {
    /// Readings taken (new ones and duplicates).
    accepted: usize,
    /// Of those, readings already taken before: acknowledged, not stored again.
    duplicates: usize,
}

/// Readings in: one object, an array, or NDJSON. All or nothing: either every reading is
/// valid and the batch is stored before the answer, or nothing is stored.
#[utoipa::path(post, path = "/ingest", tag = "data",
    request_body(description = "A reading, an array of readings, NDJSON (application/x-ndjson), or CSV (text/csv) with a header row naming the fields",
        content((super::meta::ReadingDoc = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
    responses(
        (status = 200, description = "Stored", body = IngestAnswer),
        (status = 400, description = "Malformed JSON or an invalid reading; names the index and the field", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Neither JSON nor CSV", body = super::ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was stored", body = super::ErrorBody),
    ))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<IngestAnswer>, ApiError> {
    let body = json_body(&state, &headers, body)?;
    let csv = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| crate::csv_input::is_csv_type(essence.trim()));
    let parsed: Box<dyn Iterator<Item = crate::reading::Parsed>> = if csv {
        Box::new(crate::csv_input::readings(&body[..]))
    } else {
        Box::new(ReadingStream::new(&body[..]))
    };
    // Parsed straight into the readings (not through `parse_all`'s pairs), sized up front.
    let mut readings = Vec::with_capacity(readings_hint(&body));
    for (position, reading) in parsed {
        match reading {
            Ok(r) => readings.push(r),
            Err(e) => {
                crate::metrics::readings("http", "rejected", 1);
                return Err(ApiError::BadRequest(format!(
                    "{position}: {e}; nothing was stored"
                )));
            }
        }
    }
    if readings.is_empty() && !body.iter().any(|c| !c.is_ascii_whitespace()) {
        return Err(ApiError::BadRequest(
            "the body is empty: send a reading, an array or NDJSON".into(),
        ));
    }
    // A header row alone is no CSV of readings: most likely another format sent as text/csv.
    if csv && readings.is_empty() {
        return Err(ApiError::BadRequest(
            "the CSV body has a header row and no readings: send a header row naming the fields, then one row per reading".into(),
        ));
    }
    let accepted = readings.len();
    let done = state.service.ingest(readings).await?;
    crate::metrics::readings("http", "accepted", done.stored);
    crate::metrics::readings("http", "duplicate", done.duplicates);
    Ok(Json(IngestAnswer {
        accepted,
        duplicates: done.duplicates,
    }))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WriteParams {
    db: Option<String>,
    bucket: Option<String>,
    precision: Option<String>,
}

/// InfluxDB 1.x write API: line protocol in, 204 out, so Telegraf's `[[outputs.influxdb]]`
/// can point at millwatch. All or nothing, like `/ingest`; `db` is required (as InfluxDB
/// requires it) but only names the target for the sender's sake.
#[utoipa::path(post, path = "/write", tag = "data",
    params(
        ("db" = String, Query, description = "Required by InfluxDB clients; any name"),
        ("precision" = Option<String>, Query, description = "Timestamp unit: ns (default), us, ms, s, m, h"),
    ),
    request_body(content = String, description = "InfluxDB line protocol", content_type = "text/plain"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "A bad line; names its line and column", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
    ))]
pub(crate) async fn write_v1(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let p: WriteParams = parse_query(raw.as_deref())?;
    if p.db.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::BadRequest(
            "db: the database name is required".into(),
        ));
    }
    write_line_protocol(&state, p.precision.as_deref(), body).await
}

/// InfluxDB 2.x write API: as `/write`, with `bucket` instead of `db`.
#[utoipa::path(post, path = "/api/v2/write", tag = "data",
    params(
        ("bucket" = String, Query, description = "Required by InfluxDB clients; any name"),
        ("precision" = Option<String>, Query, description = "Timestamp unit: ns (default), us, ms, s"),
    ),
    request_body(content = String, description = "InfluxDB line protocol", content_type = "text/plain"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, description = "A bad line; names its line and column", body = super::ErrorBody),
    ))]
pub(crate) async fn write_v2(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let p: WriteParams = parse_query(raw.as_deref())?;
    if p.bucket.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::BadRequest(
            "bucket: the bucket name is required".into(),
        ));
    }
    write_line_protocol(&state, p.precision.as_deref(), body).await
}

async fn write_line_protocol(
    state: &AppState,
    precision: Option<&str>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let precision = crate::lineproto::Precision::parse(precision.unwrap_or("ns"))
        .map_err(|e| ApiError::BadRequest(format!("precision: {e}")))?;
    // Line protocol is text/plain: any content type is taken, as InfluxDB does.
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(state.max_body)
        } else {
            ApiError::BadRequest(format!("cannot read the body: {e}"))
        }
    })?;
    if !body.iter().any(|c| !c.is_ascii_whitespace()) {
        return Err(ApiError::BadRequest(
            "the body is empty: send points in line protocol".into(),
        ));
    }
    let opts = crate::lineproto::Options {
        precision,
        machine_tag: state.machine_tag.clone(),
    };
    let mut readings = Vec::new();
    for (position, reading) in crate::lineproto::parse_all(&body, &opts) {
        match reading {
            Ok(r) => readings.push(r),
            Err(e) => {
                crate::metrics::readings("influx", "rejected", 1);
                return Err(ApiError::BadRequest(format!(
                    "point {}: {e}; nothing was stored",
                    position.index
                )));
            }
        }
    }
    let done = state.service.ingest(readings).await?;
    crate::metrics::readings("influx", "accepted", done.stored);
    crate::metrics::readings("influx", "duplicate", done.duplicates);
    Ok(axum::http::StatusCode::NO_CONTENT)
}
