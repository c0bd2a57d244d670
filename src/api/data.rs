//! `GET /data`, `GET /data/latest` and `POST /ingest`: processed records out, readings in.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, json_body, parse_query};
use crate::pipeline::ProcessedRecord;
use crate::reading::{MachineId, parse_all};
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

/// Processed records, oldest first: the newest `limit` matching the filters.
#[utoipa::path(get, path = "/data", tag = "data",
    params(
        ("machine_id" = Option<String>, Query, description = "Only this machine"),
        ("since" = Option<String>, Query, description = "From this time on, inclusive (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Up to this time, inclusive (RFC 3339)"),
        ("limit" = Option<usize>, Query, description = "At most this many, the newest (default 100, at most 10000)"),
    ),
    responses(
        (status = 200, description = "Records, oldest first", body = [super::meta::RecordDoc]),
        (status = 400, description = "A bad parameter", body = super::ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Arc<ProcessedRecord>>>, ApiError> {
    let p: DataParams = parse_query(raw.as_deref())?;
    let q = DataQuery {
        machine_id: machine_param("machine_id", p.machine_id.as_deref())?,
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        limit: limit_param(p.limit.as_deref())?,
    };
    Ok(Json(state.service.store().query(q).await?))
}

/// The latest processed record of each machine, sorted by machine id.
#[utoipa::path(get, path = "/data/latest", tag = "data",
    responses((status = 200, description = "One record per machine", body = [super::meta::RecordDoc])))]
pub(crate) async fn latest(State(state): State<AppState>) -> Json<Vec<Arc<ProcessedRecord>>> {
    Json(state.service.latest())
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
    request_body(content = super::meta::ReadingDoc, description = "A reading, an array of readings, or NDJSON (application/x-ndjson)",
        content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = IngestAnswer),
        (status = 400, description = "Malformed JSON or an invalid reading; names the index and the field", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was stored", body = super::ErrorBody),
    ))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<IngestAnswer>, ApiError> {
    let body = json_body(&state, &headers, body)?;
    let parsed = parse_all(&body);
    let mut readings = Vec::with_capacity(parsed.len());
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
    let accepted = readings.len();
    let done = state.service.ingest(readings).await?;
    crate::metrics::readings("http", "accepted", done.stored);
    crate::metrics::readings("http", "duplicate", done.duplicates);
    Ok(Json(IngestAnswer {
        accepted,
        duplicates: done.duplicates,
    }))
}
