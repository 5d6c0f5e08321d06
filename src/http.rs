//! The HTTP endpoints on `[http] listen`: `/metrics` (Prometheus text format), `/healthz` (the
//! process and its engine loop are alive) and `/readyz` (the state store answers and the Vault
//! session is authenticated). Nothing here changes state or shows a secret.
//!
//! Anyone who can reach the port can talk to it, so the server bounds what a client can hold:
//! at most [`MAX_CONNECTIONS`] connections are served at once (the next ones wait in the
//! kernel's accept backlog, costing no file descriptor of the daemon, which needs them for Vault,
//! databases and S3); a client gets [`HEADER_READ_TIMEOUT`] to send a request's headers and
//! [`MAX_CONNECTION_LIFETIME`] in all; and on shutdown open connections get
//! [`SHUTDOWN_GRACE`] to finish before they are dropped, so a half-sent request cannot hold
//! SIGTERM up. Only HTTP/1.1 is served (what Prometheus and probes speak).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::vault::{AuthState, VaultSession};

/// The most connections served at once; further ones wait in the kernel's accept backlog and
/// cost the daemon no file descriptor.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send a request's headers (from the connection's start, or
/// the end of the previous answer) before the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any one connection is kept (a scraper simply reconnects).
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long open connections may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    /// Set once the session has logged in for the first time.
    pub vault: Arc<OnceLock<Arc<VaultSession>>>,
}

/// Binds `addr` (port 0 picks a free port) so that a failed bind is reported before start-up
/// continues.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel`, then gives open connections [`SHUTDOWN_GRACE`] to finish; returns
/// within about that much after `cancel`.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        // A free slot first, then the accept: beyond the cap, connections stay in the backlog.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(stream, service, cancel).await;
        });
    }
    // No new connections from here on.
    drop(listener);
    connections.close();
    // Each connection ends itself within the grace; this bound only guards against a bug.
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections did not close within the shutdown grace");
    }
    Ok(())
}

/// One HTTP/1.1 connection, bounded in header time, lifetime and shutdown.
async fn serve_connection<S>(stream: tokio::net::TcpStream, service: S, cancel: CancellationToken)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => Some(r),
        // At the end of its lifetime or at shutdown: let a request in flight finish (and close
        // an idle connection at once); anything slower than the grace is dropped.
        _ = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.ok()
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await.ok()
        }
    };
    if let Some(Err(e)) = result {
        // Timeouts and clients that went away are routine here.
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(Utc::now()),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    if let Err(e) = state.store.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store: {e}\n"),
        );
    }
    match state.vault.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "vault: not logged in yet\n".into(),
        ),
        Some(v) if v.auth_state() != AuthState::Authenticated => (
            StatusCode::SERVICE_UNAVAILABLE,
            "vault: not authenticated\n".into(),
        ),
        Some(_) => (StatusCode::OK, "ready\n".into()),
    }
}

/// The address a listener ended up on.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
