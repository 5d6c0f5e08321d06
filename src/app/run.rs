//! `run`: the daemon in the foreground. Binds HTTP first (so `/healthz` answers while Vault is
//! still unreachable), starts the alert outbox (queued notifications go out whatever Vault's
//! state), tries to log in once and leaves further attempts to the token keep-alive, starts the
//! engine at once — so a Vault that is sealed or down when the daemon starts is reported by the
//! `vault-health` job, while the jobs that need a token wait for a login — tells systemd
//! READY / WATCHDOG / STOPPING, and on SIGTERM/SIGINT stops everything within bounds.

use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Failure, jobs, open_store_as};
use crate::alert::outbox::Outbox;
use crate::config::Config;
use crate::engine::Engine;
use crate::engine::lock::holder_id;
use crate::http;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::store::postgres::PostgresStore;
use crate::store::{self, Store};
use crate::vault::VaultSession;

pub(super) async fn run(cfg: Config) -> Result<ExitCode, Failure> {
    for w in &cfg.warnings {
        tracing::warn!(at = %w.location, "config: {}", w.message);
    }
    let jobs = jobs(&cfg)?;
    let metrics = Arc::new(Metrics::new().context("building metrics")?);
    let (store, leadership) = open_daemon_store(&cfg, &metrics).await?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(watch_signals(cancel.clone()));

    let listener = http::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding [http] listen = {}", cfg.http.listen))?;
    if let Some(addr) = http::local_addr(&listener) {
        tracing::info!(%addr, "serving /metrics /healthz /readyz");
    }
    let vault_cell = Arc::new(OnceLock::new());
    let http_task = tokio::spawn(http::serve(
        listener,
        http::HttpState {
            metrics: metrics.clone(),
            store: store.clone(),
            vault: vault_cell.clone(),
        },
        cancel.clone(),
    ));

    let outbox = match Outbox::new(&cfg, store.clone(), metrics.clone()) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            cancel.cancel();
            let _ = finish(cancel, tasks, http_task).await;
            return Err(Failure::Runtime(anyhow::Error::new(e)));
        }
    };

    let vault = match VaultSession::new(&cfg.vault) {
        Ok(v) => v,
        Err(e) => {
            cancel.cancel();
            let _ = finish(cancel, tasks, http_task).await;
            return Err(Failure::Runtime(
                anyhow::Error::new(e).context(format!("Vault client for {}", cfg.vault.address)),
            ));
        }
    };
    if let Err(e) = vault.login().await {
        tracing::error!(error = %e, "cannot log in to Vault yet; retrying in the background (jobs that need a token wait, vault-health keeps watching)");
    }
    let _ = vault_cell.set(vault.clone());
    tasks.spawn(vault.clone().keep_alive(cancel.clone()));

    let engine = Arc::new(Engine::new(&cfg, jobs, store, vault, metrics));
    tasks.spawn(watchdog(engine.clone(), leadership.clone(), cancel.clone()));
    // A term: everything that acts (the engine, its watch, the alert outbox) until `term` is
    // cancelled — by shutdown, or by the loss of the leader lease on a shared PostgreSQL store.
    let term = {
        let engine = engine.clone();
        move |term: CancellationToken| {
            let (engine, outbox) = (engine.clone(), outbox.clone());
            async move {
                let side = TaskTracker::new();
                side.spawn(outbox.run(term.clone()));
                side.spawn(engine.clone().watch(term.clone()));
                let result = engine.run(term.clone()).await;
                term.cancel();
                side.close();
                side.wait().await;
                result
            }
        }
    };
    let engine_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            match leadership {
                Some(leadership) => {
                    leadership.run(cancel, term).await;
                    Ok(())
                }
                None => term(cancel).await,
            }
        })
    };
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(jobs = engine.jobs.len(), "vault-steward started");

    let engine_result = engine_task.await;
    cancel.cancel();
    let code = finish(cancel, tasks, http_task).await?;
    match engine_result {
        Ok(Ok(())) => Ok(code),
        Ok(Err(e)) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("engine stopped"),
        )),
        Err(e) => Err(Failure::Runtime(anyhow::anyhow!("engine task failed: {e}"))),
    }
}

async fn finish(
    cancel: CancellationToken,
    tasks: TaskTracker,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<ExitCode, Failure> {
    notify(&[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10s");
    }
    // The server ends its connections within its grace (a half-sent request must not hold up
    // SIGTERM until systemd's kill); this bound only guards against a bug in that.
    let mut http_task = http_task;
    let http_result = match tokio::time::timeout(
        http::SHUTDOWN_GRACE + Duration::from_secs(3),
        &mut http_task,
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("the HTTP server did not stop in time; dropping it");
            http_task.abort();
            Ok(Ok(()))
        }
    };
    match http_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Failure::Runtime(
                anyhow::Error::new(e).context("http server"),
            ));
        }
        Err(e) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "http server task failed: {e}"
            )));
        }
    }
    tracing::info!("vault-steward stopped");
    Ok(ExitCode::SUCCESS)
}

async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    cancel.cancel();
}

/// Opens the state store for the daemon. SQLite: exclusively (a second daemon on the file exits 2),
/// and this instance always leads. PostgreSQL: shared, with fenced connections and the leader
/// lease (see [`crate::leader`]).
async fn open_daemon_store(
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<dyn Store>, Option<Arc<Leadership>>), Failure> {
    if !(cfg.state.url.starts_with("postgres://") || cfg.state.url.starts_with("postgresql://")) {
        metrics.leader.set(1);
        return Ok((open_store_as(cfg, true).await?, None));
    }
    let password = match &cfg.state.password {
        Some(source) => Some(
            source
                .read()
                .map_err(|e| Failure::Usage(format!("[state] password: {e}")))?,
        ),
        None => None,
    };
    let fence = Arc::new(AtomicI64::new(0));
    let ttl = cfg.state.lease_ttl.as_std();
    let (store, lease) = PostgresStore::open_fenced(
        &cfg.state.url,
        password.as_ref(),
        &cfg.state.tls,
        fence.clone(),
        ttl,
    )
    .await
    .with_context(|| {
        format!(
            "opening the state store {}",
            store::redact_url(&cfg.state.url)
        )
    })
    .map_err(Failure::Runtime)?;
    let leadership = Leadership::new(lease, holder_id(), ttl, fence, metrics.clone());
    Ok((Arc::new(store), Some(Arc::new(leadership))))
}

/// Pings the systemd watchdog while the engine loop keeps ticking (or while standing by, when
/// the engine does not run).
async fn watchdog(
    engine: Arc<Engine>,
    leadership: Option<Arc<Leadership>>,
    cancel: CancellationToken,
) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    let stale_ms = (interval.as_millis() as i64).max(10_000);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let standby = leadership.as_ref().is_some_and(|l| !l.is_leader());
        if standby || Utc::now().timestamp_millis() - engine.last_tick_ms() < stale_ms {
            notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!("engine loop stalled; withholding the watchdog ping");
        }
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}
