//! Liveness, metrics, the OpenAPI document and the dashboard page.

use std::fmt::Write;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::OpenApi;

use super::AppState;

/// A processed record: `machine_id`, `timestamp` (RFC 3339 UTC), every parameter of the
/// reading, and `P_avg`, the moving average, for each numeric parameter `P`.
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"machine_id": "press-01", "timestamp": "2026-11-28T05:30:00Z", "temperature": 71.5, "status": "RUNNING", "temperature_avg": 70.9}))]
#[allow(dead_code)]
pub(crate) struct RecordDoc {
    machine_id: String,
    timestamp: String,
}

/// A reading: optional `machine_id` and `timestamp`; every other field is a parameter (a
/// number, a string, or null for absent). A string, such as a `status` field, is a state the
/// machine reports, not its job status (`POST /status`).
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"machine_id": "press-01", "timestamp": "2026-11-28T05:30:00Z", "temperature": 71.5, "speed": 1480, "status": "RUNNING"}))]
#[allow(dead_code)]
pub(crate) struct ReadingDoc {
    machine_id: Option<String>,
    timestamp: Option<String>,
}

/// The OpenAPI 3 document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "millwatch",
        description = "Machine telemetry: readings, moving averages, job status, analytics."
    ),
    paths(
        super::data::list,
        super::data::latest,
        super::data::ingest,
        super::data::write_v1,
        super::data::write_v2,
        super::analytics::get,
        super::analytics::post,
        super::status::list,
        super::status::one,
        super::status::set,
        super::status::history,
        super::states::get_states,
        super::states::get_oee,
        super::alerts::list,
        super::alerts::history,
        super::alerts::rules,
        super::alerts::put_rule,
        super::alerts::delete_rule,
        super::events::stream,
        healthz,
        metrics,
        openapi,
        dashboard,
    ),
    components(schemas(
        super::ErrorBody,
        crate::status::JobStatus,
        crate::status::StatusChange
    ))
)]
pub struct ApiDoc;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// Liveness: 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Prometheus text format: readings by source and outcome, HTTP requests by route and code,
/// request latency, and each machine's latest moving averages.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    // Rendered from the latest records at scrape time rather than set per reading: a gauge
    // update per reading would cost more than the reading itself.
    let latest = state.service.latest();
    if !latest.is_empty() {
        text.push_str("# HELP millwatch_moving_average The latest moving average of each machine and parameter.\n");
        text.push_str("# TYPE millwatch_moving_average gauge\n");
        for r in &latest {
            for (name, _, avg) in r.numeric() {
                let _ = writeln!(
                    text,
                    "millwatch_moving_average{{machine_id=\"{}\",parameter=\"{}\"}} {avg}",
                    r.machine_id, name
                );
            }
        }
    }
    if !latest.is_empty() {
        text.push_str(
            "# HELP millwatch_value The latest raw value of each machine and numeric parameter.\n",
        );
        text.push_str("# TYPE millwatch_value gauge\n");
        for r in &latest {
            for (name, value, _) in r.numeric() {
                let _ = writeln!(
                    text,
                    "millwatch_value{{machine_id=\"{}\",parameter=\"{}\"}} {value}",
                    r.machine_id, name
                );
            }
        }
    }
    // One series per (machine, status), 1 for the current one: Prometheus's way to show a
    // state, which Grafana maps to a status per machine.
    let machines = state.service.machines();
    if !machines.is_empty() {
        text.push_str("# HELP millwatch_job_status 1 for each machine's current job status, 0 for the others.\n");
        text.push_str("# TYPE millwatch_job_status gauge\n");
        for m in &machines {
            let (current, _) = state.service.status_of(m);
            for s in crate::status::JobStatus::ALL {
                let _ = writeln!(
                    text,
                    "millwatch_job_status{{machine_id=\"{m}\",status=\"{}\"}} {}",
                    s.as_str(),
                    u8::from(s == current)
                );
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3")))]
pub(crate) async fn openapi() -> Json<&'static serde_json::Value> {
    Json(super::openapi::document())
}

/// The dashboard.
#[utoipa::path(get, path = "/", tag = "live", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub(crate) async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

/// The dashboard's files, compiled into the binary: it needs no network and no build step.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "auth.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/auth.js"),
    ),
    (
        "auth.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/auth.css"),
    ),
    (
        "states.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/states.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
    (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/uplot/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/LICENSE"),
    ),
];

/// A file of the dashboard.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<impl IntoResponse, super::ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| super::ApiError::NotFound(format!("no asset {file}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    ))
}
