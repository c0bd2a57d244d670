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
    /// The flags do not make a safe or valid setup (protected mode, the auth file): exit 2.
    #[error("{0}")]
    Usage(String),
}

/// Protected mode (SPEC §9) and the auth file, checked before anything is opened or created.
fn access(args: &ServeArgs) -> Result<api::auth::Access, ServeError> {
    let a = &args.access;
    let tokens = match &a.auth {
        Some(path) => Some(Arc::new(
            api::auth::Tokens::load(path).map_err(|e| ServeError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    if tokens.is_none() && a.allowed_hosts.iter().any(|h| h == "*") && !a.insecure_no_auth {
        return Err(ServeError::Usage(
            "refusing --allowed-host '*' without --auth: with the Host check off, a DNS-rebinding web page could read and change everything; give --auth FILE, name the hosts, or add --insecure-no-auth to accept that".into(),
        ));
    }
    if tokens.is_none() && !is_loopback(args.listen.ip()) {
        if !a.insecure_no_auth {
            return Err(ServeError::Usage(format!(
                "refusing to listen on {} without --auth: anyone on the network could write readings and change statuses; give --auth FILE (tokens from `millwatch token new`), or --insecure-no-auth to accept that",
                args.listen
            )));
        }
        tracing::warn!(
            listen = %args.listen,
            "--insecure-no-auth: listening beyond loopback WITHOUT AUTHENTICATION; anyone who can reach this port can write readings and change job statuses"
        );
    }
    Ok(api::auth::Access {
        tokens,
        public_read: a.public_read,
        allowed_hosts: a.allowed_hosts.clone(),
    })
}

/// Whether `ip` reaches this host only, IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) included.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// Runs the service until a shutdown signal.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let access = access(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            api::server::tls_acceptor(cert, key).map_err(|e| ServeError::Usage(e.to_string()))?,
        ),
        _ => None,
    };
    let open_file_limit = api::server::raise_open_file_limit();
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
    crate::timestamp::set_local_zone(args.pipeline.timezone);
    // Bound before the store is opened: a port that is taken must leave nothing on disk.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ServeError::Io(listen_failed(args.listen, &e)))?;
    let store = args
        .store
        .open_on_damage(args.storage.durability, args.storage.on_damage())
        .await?;
    let pipeline = Pipeline::new(args.pipeline.window as usize, args.pipeline.machine.clone());
    let service = Service::start(pipeline, store).await?;
    let alerting = start_alerts(&args, &service).await?;
    if let Some(param) = args.status_from.clone() {
        tracing::info!(parameter = %param, "job statuses follow the readings' state parameter");
        service.follow_status_from(param);
    }
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
        // The simulator's MES moves the service's job statuses, as a plant's would.
        mes: Some(crate::sources::simulate::Mes::new(service.clone())),
    };
    for spec in specs {
        if let Some(source) = spec.build(&source_options) {
            let service = service.clone();
            let name = spec.to_string();
            tracing::info!(source = %name, "source started");
            sources.spawn(feed(name, source, service));
        }
    }
    if let Some(keep) = args.retention {
        sources.spawn(retention(service.clone(), keep));
    }
    let mut state = AppState::new(service.clone());
    state.metrics = metrics;
    state.max_body = args.max_body;
    state.server.max_connections = args.max_connections as usize;
    state.server.body_timeout = args.body_timeout;
    state.server.write_timeout = args.write_timeout;
    // After the store and the sources are open, so that what they hold is counted.
    if let (Some(limit), Some(open)) = (open_file_limit, api::server::open_descriptors())
        && state.server.fit_descriptors(limit, open)
    {
        tracing::warn!(
            max_connections = state.server.max_connections,
            open_files = limit,
            "connection cap lowered to keep descriptors for the store: raise the open-file limit (ulimit -n) to serve more"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    state.server.tls = tls;
    state.machine_tag = args.pipeline.machine_tag.clone();
    state.access = access;
    state.states = api::StatesConfig {
        oee: Arc::new(args.oee.clone().unwrap_or_default()),
        shifts: args.shifts.clone(),
        timezone: args.pipeline.timezone,
        stale: args.stale,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!(store = %args.store, "listening on {scheme}://{addr}");
    api::run(listener, state, shutdown_signal())
        .await
        .map_err(|e| ServeError::Io(e.to_string()))?;
    tracing::info!("shutting down: stopping sources, flushing the store");
    sources.shutdown().await;
    alerting.flush().await;
    service.store().close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the alert engine (always: rules may come through the API later), its clock and
/// the notifiers of `--notify`.
async fn start_alerts(
    args: &ServeArgs,
    service: &Arc<Service>,
) -> Result<Arc<crate::alerting::Alerting>, ServeError> {
    let rules = args.rules.clone().map(|r| r.0).unwrap_or_default();
    let targets: Vec<String> = args.notify.iter().map(|t| t.outbox_name()).collect();
    let alerting = crate::alerting::Alerting::start(
        rules,
        service.store().clone(),
        targets,
        service.event_sender(),
    )
    .await?;
    service.enable_alerts(alerting.clone());
    tokio::spawn(alerting.clone().run_ticks());
    crate::notify::spawn(
        service.store().clone(),
        &args.notify,
        alerting.outbox_changes(),
    )
    .map_err(|e| ServeError::Usage(format!("--notify: {e}")))?;
    for t in &args.notify {
        tracing::info!(target = %t.label(), "notifications go to this target");
    }
    Ok(alerting)
}

/// Feeds one source into the service: valid readings are stored, invalid ones logged.
async fn feed(name: String, source: Box<dyn crate::sources::Source>, service: Arc<Service>) {
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

/// Why the address could not be bound, and what to do about it.
fn listen_failed(addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another program (perhaps another millwatch) listens there: stop it or give another port with --listen"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: give a higher one with --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; this machine has no such address: use 127.0.0.1 or 0.0.0.0"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {e}{hint}")
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
