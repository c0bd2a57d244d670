//! `millwatch serve`: sources, pipeline, store and HTTP API in one process, until SIGINT or
//! SIGTERM; then sources stop, in-flight requests finish and the store is flushed.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::api::{self, AppState};
use crate::cli::ServeArgs;
use crate::pipeline::Pipeline;
use crate::service::Service;
use crate::sources::{Batch, SourceSpec};

/// What stops `serve` from running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or recovered.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The address could not be bound, or serving failed.
    #[error("{0}")]
    Io(String),
}

/// Runs the service until a shutdown signal.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    // Installed first, so that sources started below record into it.
    let metrics = crate::metrics::handle();
    // Histograms keep raw samples until drained: drain them even if nobody scrapes /metrics,
    // or a long-running service would grow with every request.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let store = args.store.open(args.storage.durability).await?;
    let pipeline = Pipeline::new(args.pipeline.window as usize, args.pipeline.machine.clone());
    let service = Service::start(pipeline, store).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ServeError::Io(format!("cannot listen on {}: {e}", args.listen)))?;
    let specs = if args.sources.is_empty() {
        vec![SourceSpec::Simulate(3)]
    } else {
        args.sources
    };
    let mut sources = JoinSet::new();
    let source_options = crate::sources::SourceOptions {
        interval: args.interval,
        machine_tag: args.pipeline.machine_tag.clone(),
        mqtt_client_id: args.pipeline.mqtt_client_id.clone(),
    };
    for spec in specs {
        if let Some(source) = spec.build(&source_options) {
            let service = service.clone();
            let name = spec.to_string();
            tracing::info!(source = %name, "source started");
            // The simulator's machines also run through the job lifecycle, so the dashboard's
            // status badges move like a plant's would.
            let follow_status = matches!(spec, SourceSpec::Simulate(_));
            sources.spawn(feed(name, source, service, follow_status));
        }
    }
    if let Some(keep) = args.retention {
        sources.spawn(retention(service.clone(), keep));
    }
    let mut state = AppState::new(service.clone());
    state.metrics = metrics;
    state.max_body = args.max_body;
    state.machine_tag = args.pipeline.machine_tag.clone();
    state.states = api::StatesConfig {
        oee: Arc::new(args.oee.clone().unwrap_or_default()),
        shifts: args.shifts.clone(),
        timezone: args.pipeline.timezone,
        stale: args.stale,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!(store = ?args.store, "listening on http://{addr}");
    api::run(listener, state, shutdown_signal())
        .await
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!("shutting down: stopping sources, flushing the store");
    sources.shutdown().await;
    service.store().close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Feeds one source into the service: valid readings are stored, invalid ones logged.
async fn feed(
    name: String,
    source: Box<dyn crate::sources::Source>,
    service: Arc<Service>,
    follow_status: bool,
) {
    let (tx, mut rx) = mpsc::channel::<Batch>(16);
    let producer = tokio::spawn(source.run(tx));
    while let Some(batch) = rx.recv().await {
        let (readings, rejected, ack) = batch.split(&name);
        crate::metrics::readings(&name, "rejected", rejected);
        match service.ingest_records(readings).await {
            Ok((records, duplicates)) => {
                crate::metrics::readings(&name, "accepted", records.len());
                crate::metrics::readings(&name, "duplicate", duplicates);
                Batch::finish(ack);
                if follow_status {
                    follow(&service, &records).await;
                }
            }
            // Not acknowledged: a source that can (MQTT) will get the batch again.
            Err(e) => tracing::error!(source = %name, error = %e, "readings could not be stored"),
        }
    }
    match producer.await {
        Ok(Ok(())) => tracing::info!(source = %name, "source ended"),
        Ok(Err(e)) => tracing::error!(source = %name, error = %e, "source failed"),
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!(source = %name, error = %e, "source task failed"),
    }
}

/// Sets each machine's job status to the `status` of its latest reading, when the lifecycle
/// allows the change (the simulator's statuses always follow it).
async fn follow(service: &Service, records: &[Arc<crate::pipeline::ProcessedRecord>]) {
    for r in records {
        let Some(crate::reading::Value::State(s)) = r.get("status") else {
            continue;
        };
        let Ok(status) = crate::status::JobStatus::parse(s) else {
            continue;
        };
        if service.status_of(&r.machine_id).0 != status
            && let Err(e) = service.set_status(r.machine_id.clone(), status).await
        {
            tracing::debug!(machine = %r.machine_id, error = %e, "simulated status not applied");
        }
    }
}

/// Deletes old records every minute (and once at start), in small steps.
async fn retention(service: Arc<Service>, keep: std::time::Duration) {
    let keep_nanos = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let cutoff = crate::timestamp::Timestamp::from_nanos(
            crate::timestamp::Timestamp::now()
                .as_nanos()
                .saturating_sub(keep_nanos),
        );
        match service.store().retain(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, before = %cutoff, "retention deleted old records"),
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
