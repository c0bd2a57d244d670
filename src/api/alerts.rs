//! The alert routes of SPEC §7: alerts now, past firings, and the rules (listing them for
//! readers; setting and deleting API rules for admins, SPEC §9).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::data::{limit_param, machine_param, time_param};
use super::{ApiError, AppState, json_body, parse_query};
use crate::alerting::{AlertError, Alerting, ListedRule};
use crate::core::alerts::RuleName;
use crate::store::alerts::HistoryQuery;

/// An alert as the routes answer it (SPEC §7).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct AlertDoc {
    /// The rule's name.
    rule: String,
    /// The machine.
    machine_id: String,
    /// The watched parameter (null for stale and status rules).
    parameter: Option<String>,
    /// pending, firing, or ok (resolved).
    #[schema(pattern = "^(pending|firing|ok)$")]
    state: String,
    /// info, warning or critical.
    #[schema(pattern = "^(info|warning|critical)$")]
    severity: String,
    /// The value that made the last change (a job status for status rules).
    #[schema(value_type = Option<Object>)]
    value: Option<Value>,
    /// What it was held against: the bound, [low, high], the moving average, the statuses or
    /// the stale duration.
    #[schema(value_type = Object)]
    bound: Value,
    /// When the condition started to hold.
    #[schema(format = DateTime)]
    since: String,
    /// When it fired.
    #[schema(format = DateTime)]
    fired_at: Option<String>,
    /// When it resolved.
    #[schema(format = DateTime)]
    resolved_at: Option<String>,
}

/// A rule (SPEC §7), as `PUT /alerts/rules/{name}` takes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct RuleDoc {
    /// The rule's name; when given, the same as in the path.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    name: Option<String>,
    /// A glob over machine ids; default "*".
    machines: Option<String>,
    /// The watched parameter: required except for stale and status rules.
    parameter: Option<String>,
    /// The condition.
    #[schema(pattern = "^(above|below|outside|deviation|stale|status)$")]
    when: String,
    /// above, below: the bound; outside: [low, high].
    #[schema(value_type = Option<Object>)]
    value: Option<Value>,
    /// value (default) or average: the raw value or its moving average.
    #[schema(pattern = "^(value|average)$")]
    of: Option<String>,
    /// deviation: |value − moving average| > threshold × |moving average|.
    #[schema(minimum = 0)]
    threshold: Option<f64>,
    /// status: job statuses that count as trouble.
    statuses: Option<Vec<crate::status::JobStatus>>,
    /// How long the condition must hold, such as "30s" (default 0s; stale: required).
    #[schema(rename = "for")]
    for_: Option<String>,
    /// info, warning (default) or critical.
    #[schema(pattern = "^(info|warning|critical)$")]
    severity: Option<String>,
}

/// A rule as listed: its fields and where it comes from.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ListedRuleDoc {
    /// The rule's fields, as PUT takes them.
    #[schema(inline)]
    rule: RuleDoc,
    /// file (read-only through the API) or api.
    #[schema(pattern = "^(file|api)$")]
    source: String,
}

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Invalid(e) => ApiError::BadRequest(format!("field {e}")),
            AlertError::FileRule(_) => ApiError::Conflict(e.to_string()),
            AlertError::Unknown(_) => ApiError::NotFound(e.to_string()),
            AlertError::Store(s) => s.into(),
        }
    }
}

fn engine(state: &AppState) -> Result<&std::sync::Arc<Alerting>, ApiError> {
    state
        .service
        .alerting()
        .ok_or_else(|| ApiError::Unavailable("alerts are not running in this server".into()))
}

/// Pending and firing alerts now, by machine then rule.
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    responses((status = 200, description = "Pending and firing alerts", body = [AlertDoc])))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<crate::core::alerts::Alert>> {
    Json(
        state
            .service
            .alerting()
            .map(|a| a.alerts())
            .unwrap_or_default(),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct HistoryParams {
    machine_id: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

/// Past firings (each with its resolution once there is one), oldest first by firing time.
#[utoipa::path(get, path = "/alerts/history", tag = "alerts",
    params(
        ("machine_id" = Option<String>, Query, description = "Only this machine"),
        ("rule" = Option<String>, Query, description = "Only this rule"),
        ("since" = Option<String>, Query, description = "Fired at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Fired at or before this time (RFC 3339)"),
        ("limit" = Option<usize>, Query, description = "At most this many, the newest (default 100, at most 10000)"),
    ),
    responses(
        (status = 200, description = "Firings, oldest first", body = [AlertDoc]),
        (status = 400, description = "A bad parameter", body = super::ErrorBody),
    ))]
pub(crate) async fn history(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Value>>, ApiError> {
    let p: HistoryParams = parse_query(raw.as_deref())?;
    let machine = machine_param("machine_id", p.machine_id.as_deref())?;
    let rule = p
        .rule
        .as_deref()
        .map(|r| RuleName::parse(r).map_err(|e| ApiError::BadRequest(format!("rule: {e}"))))
        .transpose()?;
    let q = HistoryQuery {
        machine_id: machine.map(|m| m.to_string()),
        rule: rule.map(|r| r.to_string()),
        since: time_param("since", p.since.as_deref())?.map(|t| t.as_nanos()),
        until: time_param("until", p.until.as_deref())?.map(|t| t.as_nanos()),
        limit: limit_param(p.limit.as_deref())?,
    };
    let rows = state.service.store().alert_history(q).await?;
    rows.into_iter()
        .map(|h| {
            serde_json::from_str(&h.body).map_err(|e| {
                ApiError::Internal(format!(
                    "the stored history of rule {} on {} cannot be read: {e}",
                    h.rule, h.machine_id
                ))
            })
        })
        .collect::<Result<Vec<Value>, ApiError>>()
        .map(Json)
}

/// Every rule, from the file and from the API, by name.
#[utoipa::path(get, path = "/alerts/rules", tag = "alerts",
    responses((status = 200, description = "Every rule with its source", body = [ListedRuleDoc])))]
pub(crate) async fn rules(State(state): State<AppState>) -> Json<Vec<ListedRule>> {
    Json(
        state
            .service
            .alerting()
            .map(|a| a.rules())
            .unwrap_or_default(),
    )
}

/// Sets a rule through the API (stored, surviving restarts); a rule of that name is replaced,
/// and its alerts start over.
#[utoipa::path(put, path = "/alerts/rules/{name}", tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    request_body = RuleDoc,
    responses(
        (status = 200, description = "The rule as stored", body = RuleDoc),
        (status = 400, description = "Not a valid rule; names the field", body = super::ErrorBody),
        (status = 409, description = "A rule of the rules file, read-only here", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
    ))]
pub(crate) async fn put_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&state, &headers, body)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let rule = engine(&state)?.put_rule(&name, &v).await?;
    Ok(Json(rule.to_json()))
}

/// Deletes a rule set through the API; its firing alerts resolve.
#[utoipa::path(delete, path = "/alerts/rules/{name}", tag = "alerts",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule", body = super::ErrorBody),
        (status = 409, description = "A rule of the rules file, read-only here", body = super::ErrorBody),
    ))]
pub(crate) async fn delete_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    engine(&state)?.delete_rule(&name).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
