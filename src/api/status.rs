//! The job-status routes: current statuses, setting one, and the history of changes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::data::{limit_param, machine_param};
use super::{ApiError, AppState, json_body, parse_query};
use crate::reading::MachineId;
use crate::service::StatusAnswer;
use crate::status::{JobStatus, MAX_REASON, StatusChange};
use crate::timestamp::Timestamp;

/// A machine's current job status (set through `POST /status`; not a state the machine
/// reports in its readings).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CurrentStatus {
    #[schema(value_type = String, example = "press-01")]
    machine_id: MachineId,
    status: JobStatus,
    /// Since when; null for a machine whose status was never set.
    #[schema(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// The statuses it may move to next (SPEC §4's table), so that clients need not copy it.
    allowed_next: &'static [JobStatus],
}

impl CurrentStatus {
    fn new(machine_id: MachineId, status: JobStatus, since: Option<Timestamp>) -> Self {
        CurrentStatus {
            machine_id,
            status,
            since,
            allowed_next: status.allowed_next(),
        }
    }
}

/// The answer to a status change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SetStatusAnswer {
    #[schema(value_type = String)]
    machine_id: MachineId,
    status: JobStatus,
    previous: JobStatus,
    #[schema(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
}

impl From<StatusAnswer> for SetStatusAnswer {
    fn from(a: StatusAnswer) -> Self {
        SetStatusAnswer {
            machine_id: a.machine_id,
            status: a.status,
            previous: a.previous,
            since: a.since,
        }
    }
}

/// The body of `POST /status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetStatus {
    /// One of IDLE STARTED RUNNING PAUSED COMPLETED FAILED.
    #[schema(example = "STARTED")]
    status: serde_json::Value,
    /// The machine; absent: the default machine.
    #[schema(value_type = Option<String>, example = "press-01")]
    machine_id: Option<serde_json::Value>,
    /// Why, such as a stop reason; kept in the history. At most 256 bytes.
    #[schema(value_type = Option<String>, max_length = 256, example = "material jam")]
    reason: Option<serde_json::Value>,
}

/// Every known machine's job status, sorted by machine id.
#[utoipa::path(get, path = "/status", tag = "status",
    responses((status = 200, description = "Every known machine's job status (what machines report in their readings is in /data)", body = [CurrentStatus])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<CurrentStatus>> {
    let book = state.service.status_view();
    let list = state
        .service
        .machines()
        .into_iter()
        .map(|m| {
            let (status, since) = book.get(&m);
            CurrentStatus::new(m, status, since)
        })
        .collect();
    Json(list)
}

/// One machine's job status; a machine whose job was never set is IDLE since null.
#[utoipa::path(get, path = "/status/{machine_id}", tag = "status",
    params(("machine_id" = String, Path, description = "The machine")),
    responses(
        (status = 200, description = "The job status", body = CurrentStatus),
        (status = 400, description = "Not a valid machine id", body = super::ErrorBody),
    ))]
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(machine_id): Path<String>,
) -> Result<Json<CurrentStatus>, ApiError> {
    let m = MachineId::parse(&machine_id)
        .map_err(|e| ApiError::BadRequest(format!("machine_id: {e}")))?;
    let (status, since) = state.service.status_of(&m);
    Ok(Json(CurrentStatus::new(m, status, since)))
}

fn field_str<'a>(v: &'a serde_json::Value, field: &str) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::BadRequest(format!("field {field:?}: must be a string")))
}

/// Sets a machine's job status if the lifecycle allows the change.
#[utoipa::path(post, path = "/status", tag = "status",
    request_body = SetStatus,
    responses(
        (status = 200, description = "Changed, or already so", body = SetStatusAnswer),
        (status = 400, description = "Not a status (the answer lists the valid ones), a bad machine id, or a reason over 256 bytes", body = super::ErrorBody),
        (status = 409, description = "Not allowed from the current status; names the allowed next statuses", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
    ))]
pub(crate) async fn set(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<SetStatusAnswer>, ApiError> {
    let body = json_body(&state, &headers, body)?;
    let req: SetStatus =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let status = JobStatus::parse(field_str(&req.status, "status")?)
        .map_err(|e| ApiError::BadRequest(format!("field \"status\": {e}")))?;
    let machine = match req.machine_id.as_ref().filter(|v| !v.is_null()) {
        Some(v) => MachineId::parse(field_str(v, "machine_id")?)
            .map_err(|e| ApiError::BadRequest(format!("field \"machine_id\": {e}")))?,
        None => state.service.default_machine(),
    };
    let reason = match req.reason.as_ref().filter(|v| !v.is_null()) {
        Some(v) => {
            let r = field_str(v, "reason")?;
            if r.len() > MAX_REASON {
                return Err(ApiError::BadRequest(format!(
                    "field \"reason\": {} bytes is over the limit of {MAX_REASON}",
                    r.len()
                )));
            }
            // An empty reason is no reason: the history and the Pareto list show null.
            (!r.is_empty()).then(|| compact_str::CompactString::from(r))
        }
        None => None,
    };
    Ok(Json(
        state
            .service
            .set_status_with_reason(machine, status, reason)
            .await?
            .into(),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct HistoryParams {
    machine_id: Option<String>,
    limit: Option<String>,
}

/// Job status changes, oldest first (the newest `limit`).
#[utoipa::path(get, path = "/status/history", tag = "status",
    params(
        ("machine_id" = Option<String>, Query, description = "Only this machine"),
        ("limit" = Option<usize>, Query, description = "At most this many, the newest (default 100, at most 10000)"),
    ),
    responses(
        (status = 200, description = "Changes, oldest first", body = [StatusChange]),
        (status = 400, description = "A bad parameter", body = super::ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<StatusChange>>, ApiError> {
    let p: HistoryParams = parse_query(raw.as_deref())?;
    let machine = machine_param("machine_id", p.machine_id.as_deref())?;
    let limit = limit_param(p.limit.as_deref())?;
    Ok(Json(
        state
            .service
            .store()
            .status_history(machine.as_ref(), limit)
            .await?,
    ))
}
