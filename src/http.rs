//! The HTTP endpoints on `[http] listen`: `/metrics` (Prometheus text format), `/healthz` (the
//! process and its engine loop are alive) and `/readyz` (the state store answers and the Vault
//! session is authenticated). Nothing here changes state or shows a secret.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::vault::{AuthState, VaultSession};

/// The most connections served at once; further ones wait in the kernel's accept backlog and
/// cost the daemon no file descriptor.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send a request's headers (from the connection's start, or
/// the end of the previous answer) before the connection is closed.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Serves until `cancel`.
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
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
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
