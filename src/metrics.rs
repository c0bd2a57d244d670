//! The Prometheus recorder behind `GET /metrics`, installed once per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's metrics handle; the first call installs the recorder.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only when another recorder is installed (a test harness): then this one
            // still renders, it just sees nothing recorded through the global macros.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts readings by source and outcome (accepted, duplicate, rejected).
pub fn readings(source: &str, outcome: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("millwatch_readings_total", "source" => source.to_owned(), "outcome" => outcome)
            .increment(n as u64);
    }
}
