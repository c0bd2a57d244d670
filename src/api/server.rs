//! The accept loop under the API (SPEC §9, bounded resources): hyper's HTTP/1 server with a
//! header read timeout, a cap on open connections answered 503 beyond, accept errors (such as
//! running out of file descriptors) logged at most once a second and paused on instead of
//! spun on, optional TLS, and graceful shutdown. `axum::serve` offers none of these limits.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::{ApiError, AppState};

/// How long a client has to send a request's headers (SPEC §9: 10 s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default time a request body has to arrive in full.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a write to a client may wait for the client to read.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Descriptors kept free for the store (its log segments, SQLite's database, WAL and shared
/// memory files, PostgreSQL connections) and for sources, beyond those open when serving
/// starts: the connection cap is lowered until these fit under the open-file limit.
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// Connections being answered 503 at once; beyond, a new connection is closed unanswered, so
/// that a flood cannot use the descriptors the cap is there to save.
const MAX_REFUSING: usize = 256;
/// The pause after a failed accept: with no descriptor left, accept fails at once, and
/// retrying without a pause would spin a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The limits and the TLS setting of the listening socket.
#[derive(Clone)]
pub struct ServerOptions {
    /// Time for a request's headers to arrive; the connection is closed after it.
    pub header_timeout: Duration,
    /// Open connections served at once; beyond, 503 with `Retry-After` and close.
    pub max_connections: usize,
    /// Time for a request body to arrive in full; beyond, 408 and the connection closes.
    pub body_timeout: Duration,
    /// Time a write may wait for the client to read; beyond, the connection is closed. This
    /// is what drops an event-stream client that stops reading: once its socket buffers and
    /// its bounded event buffer are full, writes wait, and after this long it is cut.
    pub write_timeout: Duration,
    /// Connections being answered 503 at once (the refusals also hold descriptors).
    pub max_refusing: usize,
    /// Serve HTTPS with this certificate when set.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_refusing: MAX_REFUSING,
            tls: None,
        }
    }
}

/// A TLS setup that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key file cannot be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file given.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, say).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor over a PEM certificate chain and its PEM private key (ring, no OpenSSL).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Raises the soft limit on open files to the hard limit, so that many clients do not starve
/// the store of descriptors, logs the limit in force and returns it (`None` when unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(
                open_files = limit,
                "open-file limit raised to the hard limit"
            );
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            None
        }
    }
}

/// Descriptors this process has open now (`None` where `/proc/self/fd` cannot be read).
pub fn open_descriptors() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as u64)
}

impl ServerOptions {
    /// Lowers the connection cap, and the number of connections being refused at once, so that
    /// connections can never take the descriptors the store needs: with `open` descriptors in
    /// use and an open-file limit of `limit`, `DESCRIPTOR_RESERVE` stay free. Without this, a
    /// flood of idle connections under a 1,024 limit made the store's writes fail with "Too
    /// many open files". Returns whether the cap was lowered.
    pub fn fit_descriptors(&mut self, limit: u64, open: u64) -> bool {
        let budget = limit.saturating_sub(open + DESCRIPTOR_RESERVE).max(2);
        // An eighth of the budget for refusals (256 at most), the rest for serving; each
        // connection refused beyond those is accepted and closed at once, one descriptor for
        // an instant, which the reserve covers.
        let refusing = (budget / 8).clamp(1, MAX_REFUSING as u64) as usize;
        let serving = (budget as usize - refusing).max(1);
        let lowered = serving < self.max_connections;
        self.max_connections = self.max_connections.min(serving);
        self.max_refusing = self.max_refusing.min(refusing);
        lowered
    }
}

/// Serves `app` on `listener` within `options` until `shutdown` resolves; then stops
/// accepting and waits for open connections to finish their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let serving = Arc::new(Semaphore::new(options.max_connections));
    let refusing = Arc::new(Semaphore::new(options.max_refusing));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let mut errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    errors.note(&e);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A write that waits this long for the client to read fails, and the connection
        // closes: hyper has no write timeout of its own.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(options.write_timeout));
        let stream = Box::pin(stream);
        let tls = options.tls.clone();
        let timeout = options.header_timeout;
        if let Ok(permit) = serving.clone().try_acquire_owned() {
            let watcher = graceful.watcher();
            let http = http.clone();
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _permit = permit;
                with_tls(stream, tls, timeout, |io| async move {
                    let conn = http.serve_connection(TokioIo::new(io), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                })
                .await;
            });
        } else if let Ok(permit) = refusing.clone().try_acquire_owned() {
            metrics::counter!("millwatch_http_connections_refused_total").increment(1);
            tokio::spawn(async move {
                let _permit = permit;
                with_tls(stream, tls, timeout, |io| refuse(io, timeout)).await;
            });
        } else {
            metrics::counter!("millwatch_http_connections_refused_total").increment(1);
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Runs `serve` on the connection, after a TLS handshake (bounded by `timeout`) if configured.
async fn with_tls<F, Fut>(
    stream: Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
    serve: F,
) where
    F: FnOnce(Box<dyn Io>) -> Fut,
    Fut: Future<Output = ()>,
{
    match tls {
        None => serve(Box::new(stream)).await,
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve(Box::new(tls)).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        },
    }
}

/// A plain or TLS connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Answers the connection's first request 503 with `Retry-After`, then closes it.
async fn refuse(io: Box<dyn Io>, timeout: Duration) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false);
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, Infallible>(
            ApiError::Unavailable(
                "too many open connections: retry later, or reuse a connection".into(),
            )
            .into_response(),
        )
    });
    let _ = http.serve_connection(TokioIo::new(io), service).await;
}

/// Failed accepts, logged at most once a second with the count of those not logged.
#[derive(Default)]
struct AcceptErrors {
    last: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, e: &std::io::Error) {
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %e, also = self.unlogged, "cannot accept a connection");
            self.last = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// A declared `Content-Length` over `--max-body` is answered 413 before any of the body is
/// read; a body that has not arrived in full within `--body-timeout` is answered 408.
pub(crate) async fn bounded_body(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return ApiError::TooLarge(state.max_body).into_response();
    }
    let has_body = declared.is_some_and(|n| n > 0)
        || (declared.is_none() && req.headers().contains_key(header::TRANSFER_ENCODING));
    if !has_body {
        return next.run(req).await;
    }
    let timeout = state.server.body_timeout;
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = deadline_body(body, timeout, expired.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    if expired.load(Ordering::Relaxed) {
        // Whatever the handler made of the cut body, the cause is the client's slowness.
        return ApiError::Timeout(format!(
            "the body did not arrive within {} s",
            timeout.as_secs_f64()
        ))
        .into_response();
    }
    response
}

/// `body` ending with an error, and `expired` set, once `timeout` has passed since now.
/// tower-http's `RequestBodyTimeout` restarts its timer at every frame, so a client that
/// drips a byte at a time would never be cut: this deadline is for the whole body.
fn deadline_body(body: Body, timeout: Duration, expired: Arc<AtomicBool>) -> Body {
    let deadline = tokio::time::Instant::now() + timeout;
    let frames = body.into_data_stream();
    // Fused: the layers above may poll once more after the end.
    let frames = futures::stream::unfold(Some(frames), move |frames| {
        let expired = expired.clone();
        async move {
            let mut frames = frames?;
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Some(frame)) => Some((frame, Some(frames))),
                Ok(None) => None,
                Err(_) => {
                    expired.store(true, Ordering::Relaxed);
                    Some((Err(axum::Error::new(BodyTimedOut)), None))
                }
            }
        }
    });
    Body::from_stream(frames.fuse())
}

/// The error a body yields when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive in time")]
struct BodyTimedOut;
