//! `GET /analytics` over stored values and `POST /analytics` over a posted series (SPEC §5).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::data::{machine_param, time_param};
use super::series_body::{self, SeriesError};
use super::{ApiError, AppState, json_body, parse_query};
use crate::core::analytics::{self, Analysis, Baseline, Options};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AnalyticsParams {
    machine_id: Option<String>,
    parameter: Option<String>,
    since: Option<String>,
    until: Option<String>,
    threshold: Option<String>,
    baseline: Option<String>,
    bucket: Option<String>,
}

/// The options shared by both routes, from query parameters; errors name the parameter.
pub(crate) fn options(
    threshold: Option<&str>,
    baseline: Option<&str>,
    bucket: Option<&str>,
    window: usize,
) -> Result<Options, ApiError> {
    let mut opts = Options::default();
    if let Some(t) = threshold {
        opts.threshold = crate::cli::parse_threshold(t)
            .map_err(|e| ApiError::BadRequest(format!("threshold: {e}")))?;
    }
    opts.baseline = parse_baseline(baseline, window)
        .map_err(|e| ApiError::BadRequest(format!("baseline: {e}")))?;
    opts.bucket = bucket
        .map(parse_bucket)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("bucket: {e}")))?;
    Ok(opts)
}

/// `global` (the default), `moving` (the service's window) or `moving:N`.
pub fn parse_baseline(s: Option<&str>, window: usize) -> Result<Baseline, String> {
    match s {
        None | Some("global") => Ok(Baseline::Global),
        Some("moving") => Ok(Baseline::Moving(window.max(1))),
        Some(other) => match other.strip_prefix("moving:").map(str::parse::<usize>) {
            Some(Ok(n)) if (1..=100_000).contains(&n) => Ok(Baseline::Moving(n)),
            _ => Err(format!(
                "{other:?} is not global, moving or moving:N (N from 1 to 100000)"
            )),
        },
    }
}

/// A bucket width such as `1m` or `1h`, in nanoseconds: a whole number from 1 to 99999 and
/// one of the units ms, s, m, h, d, exactly what the OpenAPI pattern declares (a bare number
/// would leave its unit to guesswork).
pub fn parse_bucket(s: &str) -> Result<i64, String> {
    const MS: i64 = 1_000_000;
    let bad = || format!("{s:?} is not a bucket width: write it like 500ms, 30s, 15m, 1h or 1d");
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() || number.len() > 5 || number.starts_with('0') {
        return Err(bad());
    }
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "ms" => MS,
        "s" => 1_000 * MS,
        "m" => 60_000 * MS,
        "h" => 3_600_000 * MS,
        "d" => 86_400_000 * MS,
        _ => return Err(bad()),
    };
    // 99999 days is the longest: it fits in i64 nanoseconds.
    n.checked_mul(unit).ok_or_else(bad)
}

/// Summary and anomalies of one parameter of one machine over stored raw values.
#[utoipa::path(get, path = "/analytics", tag = "analytics",
    params(
        ("machine_id" = Option<String>, Query, description = "The machine (default: the default machine)"),
        ("parameter" = String, Query, description = "The numeric parameter"),
        ("since" = Option<String>, Query, description = "From this time on, inclusive (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Up to this time, inclusive (RFC 3339)"),
        ("threshold" = Option<f64>, Query, description = "Relative deviation that makes an anomaly (default 0.2)"),
        ("baseline" = Option<String>, Query, description = "global (default), moving, or moving:N"),
        ("bucket" = Option<String>, Query, description = "Adds per-bucket count/average/min/max, buckets aligned to UTC: 1m, 1h, ..."),
    ),
    responses(
        (status = 200, description = "SPEC §5: count, average, min, max, threshold, anomalies (and buckets)", body = Object),
        (status = 400, description = "A missing parameter or a bad value", body = super::ErrorBody),
        (status = 404, description = "A machine never seen, or a parameter the machine never had; names those there are", body = super::ErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Analysis>, ApiError> {
    let p: AnalyticsParams = parse_query(raw.as_deref())?;
    let parameter = p.parameter.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::BadRequest("parameter: required (the numeric parameter to analyse)".into())
    })?;
    let machine = match machine_param("machine_id", p.machine_id.as_deref())? {
        Some(m) => m,
        None => state.service.default_machine(),
    };
    let since = time_param("since", p.since.as_deref())?;
    let until = time_param("until", p.until.as_deref())?;
    let opts = options(
        p.threshold.as_deref(),
        p.baseline.as_deref(),
        p.bucket.as_deref(),
        state.service.window(),
    )?;
    let series = state
        .service
        .store()
        .series(&machine, &parameter, since, until)
        .await?;
    if series.values.is_empty() {
        unknown_machine_or_parameter(
            &state,
            &machine,
            &parameter,
            since.is_some() || until.is_some(),
        )
        .await?;
    }
    // The analysis is CPU work over up to millions of values: off the async workers.
    let analysis = tokio::task::spawn_blocking(move || {
        analytics::analyze(&series.timestamps, &series.values, &opts)
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("analysis failed: {e}")))?;
    Ok(Json(analysis))
}

/// A 404 naming what there is when `machine` was never seen or never had `parameter` (SPEC
/// §4); nothing when the range merely holds no values (a count of 0). Only called for an
/// empty answer, so that the common case costs nothing.
async fn unknown_machine_or_parameter(
    state: &AppState,
    machine: &crate::reading::MachineId,
    parameter: &str,
    bounded: bool,
) -> Result<(), ApiError> {
    let service = &state.service;
    let Some(known) = service.parameters_of(machine) else {
        let machines: Vec<String> = service
            .machines()
            .into_iter()
            .filter(|m| service.parameters_of(m).is_some())
            .map(|m| m.to_string())
            .collect();
        return Err(ApiError::NotFound(format!(
            "machine_id: no readings of \"{machine}\"; machines with readings: {}",
            if machines.is_empty() {
                "none yet".to_owned()
            } else {
                machines.join(", ")
            }
        )));
    };
    if known.iter().any(|p| p.as_str() == parameter) {
        return Ok(());
    }
    // The pipeline keeps only parameters of recent readings: an older one may still be in
    // the store, outside the range asked for.
    if bounded
        && !service
            .store()
            .series(machine, parameter, None, None)
            .await?
            .values
            .is_empty()
    {
        return Ok(());
    }
    let names: Vec<&str> = known.iter().map(|p| p.as_str()).collect();
    Err(ApiError::NotFound(format!(
        "parameter: {machine} has no numeric parameter {parameter:?}; it has: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )))
}

/// Summary and anomalies of a posted series.
#[utoipa::path(post, path = "/analytics", tag = "analytics",
    params(
        ("threshold" = Option<f64>, Query, description = "Used when the body has no threshold (default 0.2)"),
        ("baseline" = Option<String>, Query, description = "global (default), moving, or moving:N"),
        ("bucket" = Option<String>, Query, description = "Per-bucket count/average/min/max: 1m, 1h, ..."),
    ),
    request_body(content = Object, description = "{\"timestamps\": [...], \"values\": [...], \"threshold\": 0.2} (equal lengths) or {\"series\": [{\"timestamp\", \"value\"}]}"),
    responses(
        (status = 200, description = "SPEC §5", body = Object),
        (status = 400, description = "Unequal lengths, a bad value or threshold; names the field", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
    ))]
pub(crate) async fn post(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Analysis>, ApiError> {
    let p: AnalyticsParams = parse_query(raw.as_deref())?;
    let body = json_body(&state, &headers, body)?;
    let series = series_body::parse_series(&body).map_err(|e| match e {
        SeriesError::NotASeries => ApiError::BadRequest(e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    })?;
    let mut opts = options(
        p.threshold.as_deref(),
        p.baseline.as_deref(),
        p.bucket.as_deref(),
        state.service.window(),
    )?;
    if let Some(t) = series.threshold {
        opts.threshold = t;
    }
    let analysis = tokio::task::spawn_blocking(move || {
        analytics::analyze(&series.timestamps, &series.values, &opts)
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("analysis failed: {e}")))?;
    Ok(Json(analysis))
}
