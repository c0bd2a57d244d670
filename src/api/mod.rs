//! The HTTP API of SPEC §4: an axum router over the [`Service`], built apart from `main` so
//! that tests can drive it on a random port.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::service::Service;

mod alerts;
mod analytics;
pub mod auth;
mod data;
mod error;
mod events;
mod meta;
mod openapi;
pub mod series_body;
pub mod server;
pub(crate) mod states;
mod status;

pub use analytics::{parse_baseline, parse_bucket};
pub use error::{ApiError, ErrorBody};
pub use meta::ApiDoc;
pub use server::ServerOptions;
pub use states::{DEFAULT_STALE, StatesConfig};

/// Default largest request body: 16 MiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline, store and status book.
    pub service: Arc<Service>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The largest body accepted.
    pub max_body: usize,
    /// Cancelled at shutdown, so that live streams end and the server can stop.
    pub shutdown: CancellationToken,
    /// The line-protocol tag that names the machine (`host` is the fallback).
    pub machine_tag: String,
    /// Tokens, `--public-read` and the names the server answers to (SPEC §9).
    pub access: auth::Access,
    /// What `/states` and `/oee` use: OEE file, shifts, time zone, staleness.
    pub states: StatesConfig,
    /// Connection and body limits, and TLS (SPEC §9).
    pub server: ServerOptions,
}

impl AppState {
    /// State over `service` with the default body limit.
    pub fn new(service: Arc<Service>) -> Self {
        AppState {
            service,
            metrics: crate::metrics::handle(),
            max_body: DEFAULT_MAX_BODY,
            shutdown: CancellationToken::new(),
            machine_tag: "machine_id".into(),
            access: auth::Access::default(),
            states: StatesConfig::default(),
            server: ServerOptions::default(),
        }
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let max_body = state.max_body;
    let router = Router::new()
        .route("/data", get(data::list).fallback(wrong_method))
        .route("/data/latest", get(data::latest).fallback(wrong_method))
        .route(
            "/ingest",
            axum::routing::post(data::ingest).fallback(wrong_method),
        )
        .route(
            "/write",
            axum::routing::post(data::write_v1).fallback(wrong_method),
        )
        .route(
            "/api/v2/write",
            axum::routing::post(data::write_v2).fallback(wrong_method),
        )
        .route(
            "/status",
            get(status::list).post(status::set).fallback(wrong_method),
        )
        .route(
            "/status/history",
            get(status::history).fallback(wrong_method),
        )
        .route(
            "/status/{machine_id}",
            get(status::one).fallback(wrong_method),
        )
        .route(
            "/analytics",
            get(analytics::get)
                .post(analytics::post)
                .fallback(wrong_method),
        )
        .route("/alerts", get(alerts::list).fallback(wrong_method))
        .route(
            "/alerts/history",
            get(alerts::history).fallback(wrong_method),
        )
        .route("/alerts/rules", get(alerts::rules).fallback(wrong_method))
        .route(
            "/alerts/rules/{name}",
            axum::routing::put(alerts::put_rule)
                .delete(alerts::delete_rule)
                .fallback(wrong_method),
        )
        .route("/states", get(states::get_states).fallback(wrong_method))
        .route("/oee", get(states::get_oee).fallback(wrong_method))
        .route("/events", get(events::stream).fallback(wrong_method))
        .route("/", get(meta::dashboard).fallback(wrong_method))
        .route("/assets/{*file}", get(meta::asset).fallback(wrong_method))
        .route("/healthz", get(meta::healthz).fallback(wrong_method))
        .route("/metrics", get(meta::metrics).fallback(wrong_method))
        .route("/openapi.json", get(meta::openapi).fallback(wrong_method))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        // Telegraf and other InfluxDB clients gzip their bodies by default.
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        // Outside decompression, so that the limits apply to the bytes on the wire.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            server::bounded_body,
        ))
        // Inside the guard, which takes the credentials `u` and `p` off the write routes' query.
        .layer(middleware::from_fn(known_query))
        // Inside `track`, so that refused requests are counted under their routes.
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn(track))
        .with_state(state);
    auth::with_security_headers(router)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let options = state.server.clone();
    server::serve(listener, app(state), options, async move {
        shutdown.await;
        // Ends the live event streams, which would otherwise hold the server open.
        token.cancel();
    })
    .await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// Every route, as the label `/metrics` shows (anything else is "unmatched"), with the query
/// parameters it takes: any other is a 400 (SPEC §4), so that a misspelt filter such as
/// `/data?machine=press-01` is never silently ignored. The InfluxDB write routes also take the
/// parameters InfluxDB clients send that millwatch has no use for (`rp`, `consistency`, `org`);
/// `u` and `p` are credentials, taken off by [`auth::guard`] before this check.
const ROUTES: &[(&str, &[&str])] = &[
    (
        "/data",
        &["machine_id", "since", "until", "limit", "format"],
    ),
    ("/data/latest", &[]),
    ("/ingest", &[]),
    ("/write", &["db", "rp", "precision", "consistency"]),
    ("/api/v2/write", &["org", "orgID", "bucket", "precision"]),
    ("/status", &[]),
    ("/status/history", &["machine_id", "limit"]),
    ("/status/{machine_id}", &[]),
    (
        "/analytics",
        &[
            "machine_id",
            "parameter",
            "since",
            "until",
            "threshold",
            "baseline",
            "bucket",
        ],
    ),
    (
        "/states",
        &["machine_id", "since", "until", "parameter", "timeline"],
    ),
    ("/oee", &["machine_id", "since", "until", "by"]),
    ("/alerts", &[]),
    (
        "/alerts/history",
        &["machine_id", "rule", "since", "until", "limit"],
    ),
    ("/alerts/rules", &[]),
    ("/alerts/rules/{name}", &[]),
    ("/events", &[]),
    ("/", &[]),
    ("/assets/{*file}", &[]),
    ("/healthz", &[]),
    ("/metrics", &[]),
    ("/openapi.json", &[]),
];

/// The matched route's entry in [`ROUTES`].
fn route_of(req: &Request) -> Option<&'static (&'static str, &'static [&'static str])> {
    let matched = req.extensions().get::<MatchedPath>()?;
    ROUTES.iter().find(|(path, _)| *path == matched.as_str())
}

/// 400 for a query parameter the route does not take, naming it and the ones it does.
async fn known_query(req: Request, next: Next) -> Response {
    if let (Some((path, known)), Some(query)) = (route_of(&req), req.uri().query()) {
        // Decoding never fails: a malformed escape is kept as it is.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let unknown = pairs
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| !known.contains(&key.as_str()));
        if let Some(key) = unknown {
            let takes = if known.is_empty() {
                "it takes none".to_owned()
            } else {
                format!("it takes {}", known.join(", "))
            };
            return ApiError::BadRequest(format!(
                "unknown query parameter {key:?} on {path}: {takes}"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// Metric handles per (route, status code), made once: building a labelled key and looking
/// it up in the registry on every request cost as much as answering `/data/latest`.
type Handles =
    std::collections::HashMap<(&'static str, u16), (metrics::Counter, metrics::Histogram)>;
static HANDLES: std::sync::OnceLock<std::sync::Mutex<Handles>> = std::sync::OnceLock::new();

fn handles(route: &'static str, code: u16) -> (metrics::Counter, metrics::Histogram) {
    let mut map = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry((route, code))
        .or_insert_with(|| {
            (
                metrics::counter!("millwatch_http_requests_total", "route" => route, "code" => code.to_string()),
                metrics::histogram!("millwatch_http_request_duration_seconds", "route" => route),
            )
        })
        .clone()
}

/// Counts requests by route and code and times them.
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_of(&req).map_or("unmatched", |(r, _)| *r);
    let response = next.run(req).await;
    let (requests, latency) = handles(route, response.status().as_u16());
    requests.increment(1);
    latency.record(start.elapsed().as_secs_f64());
    response
}

/// Parses a query string into `T`; errors name the parameter.
pub(crate) fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))
}

/// The body of a request that must be JSON (or NDJSON): 415 for another content type, 413
/// over the limit.
pub(crate) fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        // Bytes that are not visible ASCII name no content type we take: a 415, not "absent".
        let ct = ct
            .to_str()
            .map_err(|_| {
                ApiError::UnsupportedMediaType(
                    "the content type is not ASCII: send application/json, application/x-ndjson or text/csv".into(),
                )
            })?
            .to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        let ok = matches!(
            essence,
            "application/json"
                | "application/x-ndjson"
                | "application/jsonl"
                | "text/plain"
                | "text/csv"
                | ""
        ) || essence.ends_with("+json");
        if !ok {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {essence:?} is not accepted: send application/json, application/x-ndjson or text/csv"
            )));
        }
    }
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(state.max_body)
        } else {
            ApiError::BadRequest(format!("cannot read the body: {e}"))
        }
    })
}
