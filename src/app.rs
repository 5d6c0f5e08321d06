//! Wiring for every command: load the config, open the store and the Vault session, start the
//! engine and the HTTP server, and shut all of it down in order (CancellationToken + TaskTracker,
//! sd_notify READY / WATCHDOG / STOPPING). Exit codes: 0 success, 1 a runtime failure, 2 bad
//! config or usage.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::engine::{self, Engine, EngineJob, RunResult};
use crate::http;
use crate::job::{JobContext, RunRequest};
use crate::metrics::Metrics;
use crate::store::{self, RunTrigger, Store};
use crate::vault::VaultSession;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad config or usage.
pub const EXIT_CONFIG: u8 = 2;

/// Why a command failed, which decides its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad config or usage: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    crate::telemetry::init();
    let cfg = match config::load(&cli.config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // One crypto stack (ring) for every TLS client; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vault-steward: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, cfg));
    // Do not wait for stray blocking tasks (e.g. a hung DNS lookup) at exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("vault-steward: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("vault-steward: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn dispatch(command: Command, cfg: Config) -> Result<ExitCode, Failure> {
    match command {
        Command::Run => run(cfg).await,
        Command::Check { connect } => check(cfg, connect).await,
        Command::Plan => plan(cfg).await,
        Command::Status { json } => status(cfg, json).await,
        Command::Rotate { job, dry_run } => rotate(cfg, &job, dry_run).await,
    }
}

fn jobs(cfg: &Config) -> Result<Vec<Arc<EngineJob>>, Failure> {
    engine::build_jobs(cfg).map_err(|e| Failure::Usage(e.to_string()))
}

async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, Failure> {
    open_store_as(cfg, false).await
}

/// Opens the state store; `exclusive` (the daemon) also refuses a SQLite file another daemon uses.
async fn open_store_as(cfg: &Config, exclusive: bool) -> Result<Arc<dyn Store>, Failure> {
    let password = match &cfg.state.password {
        Some(source) => Some(
            source
                .read()
                .map_err(|e| Failure::Usage(format!("[state] password: {e}")))?,
        ),
        None => None,
    };
    let opened = if exclusive {
        store::open_exclusive(&cfg.state.url, password.as_ref()).await
    } else {
        store::open(&cfg.state.url, password.as_ref()).await
    };
    if let Err(e @ store::StoreError::InUse(_)) = &opened {
        return Err(Failure::Usage(e.to_string()));
    }
    opened
        .with_context(|| {
            format!(
                "opening the state store {}",
                store::redact_url(&cfg.state.url)
            )
        })
        .map_err(Failure::Runtime)
}

async fn connect_vault(cfg: &Config) -> Result<Arc<VaultSession>, Failure> {
    VaultSession::connect(&cfg.vault)
        .await
        .with_context(|| format!("connecting to Vault at {}", cfg.vault.address))
        .map_err(Failure::Runtime)
}

// ---- run -------------------------------------------------------------------------------------

async fn run(cfg: Config) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let store = open_store_as(&cfg, true).await?;
    let metrics = Arc::new(Metrics::new().context("building metrics")?);
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

    let Some(vault) = connect_until_ready(&cfg, &cancel).await else {
        return finish(cancel, tasks, http_task).await;
    };
    let _ = vault_cell.set(vault.clone());
    tasks.spawn(vault.clone().keep_alive(cancel.clone()));

    let engine = Arc::new(Engine::new(&cfg, jobs, store, vault, metrics));
    tasks.spawn(watchdog(engine.clone(), cancel.clone()));
    let engine_task = tokio::spawn(engine.clone().run(cancel.clone()));
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

/// Logs in, retrying with backoff while Vault is unreachable or refuses us; `None` if cancelled.
async fn connect_until_ready(
    cfg: &Config,
    cancel: &CancellationToken,
) -> Option<Arc<VaultSession>> {
    let mut failures = 0u32;
    loop {
        match VaultSession::connect(&cfg.vault).await {
            Ok(v) => return Some(v),
            Err(e) => {
                failures += 1;
                let delay = engine::backoff::retry_delay(
                    failures,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                    &mut rand::rng(),
                );
                tracing::error!(error = %e, retry_in_s = delay.as_secs_f64(), "cannot log in to Vault yet");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
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
    match http_task.await {
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

/// Pings the systemd watchdog while the engine loop keeps ticking.
async fn watchdog(engine: Arc<Engine>, cancel: CancellationToken) {
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
        if Utc::now().timestamp_millis() - engine.last_tick_ms() < stale_ms {
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

// ---- check -----------------------------------------------------------------------------------

async fn check(cfg: Config, connect: bool) -> Result<ExitCode, Failure> {
    // The configuration is valid whatever this build can run; kinds it lacks are reported, and
    // `run` refuses them.
    let mut jobs = Vec::new();
    for jc in &cfg.jobs {
        match engine::build_jobs_one(jc) {
            Ok(j) => jobs.push(j),
            Err(e) => eprintln!("{}: warning: {e}", jc.location),
        }
    }
    println!(
        "{}: configuration ok ({} jobs from {})",
        cfg.path.display(),
        cfg.jobs.len(),
        cfg.jobs_dir.display()
    );
    if !connect {
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    let store = match open_store(&cfg).await {
        Ok(s) => match s.ping().await {
            Ok(()) => {
                println!("state store {}: ok", store::redact_url(&cfg.state.url));
                s
            }
            Err(e) => {
                println!("state store: FAILED: {e}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        },
        Err(f) => {
            println!("state store: FAILED: {}", e_text(&f));
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let vault = match VaultSession::connect(&cfg.vault).await {
        Ok(v) => {
            println!("vault {}: authenticated", cfg.vault.address);
            v
        }
        Err(e) => {
            println!("vault {}: FAILED: {e}", cfg.vault.address);
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    for job in &jobs {
        let ctx = context(job, &vault, &store, CancellationToken::new());
        match job.job.inspect(&ctx).await {
            Ok(i) => println!("job {}: ok: {}", job.config.name, i.summary),
            Err(e) => {
                failed += 1;
                println!("job {}: FAILED: {e}", job.config.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn e_text(f: &Failure) -> String {
    match f {
        Failure::Usage(m) => m.clone(),
        Failure::Runtime(e) => format!("{e:#}"),
    }
}

fn context(
    job: &EngineJob,
    vault: &Arc<VaultSession>,
    store: &Arc<dyn Store>,
    cancel: CancellationToken,
) -> JobContext {
    JobContext {
        job: job.config.name.clone(),
        vault: vault.clone(),
        store: store.clone(),
        cancel,
    }
}

// ---- status / plan ---------------------------------------------------------------------------

async fn status(cfg: Config, json: bool) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let store = open_store(&cfg).await?;
    let states = store.job_states().await.context("reading job state")?;
    let rows =
        engine::view::status_rows(&jobs, &states, cfg.alerts.failures_before_alert, Utc::now());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("encoding status")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.kind.clone(),
                r.state.clone(),
                r.last_success.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.next_due.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.secret_age_seconds
                    .map(engine::view::short_age)
                    .unwrap_or_else(|| "-".into()),
                r.consecutive_failures.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "JOB",
            "KIND",
            "STATE",
            "LAST SUCCESS",
            "NEXT DUE",
            "SECRET AGE",
            "FAILURES",
        ],
        &table,
    );
    Ok(ExitCode::SUCCESS)
}

async fn plan(cfg: Config) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let rows = engine::view::plan_rows(&jobs, &store, &vault, Utc::now()).await;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.kind.clone(),
                r.now.clone(),
                r.next_due.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.target.clone(),
            ]
        })
        .collect();
    print_table(&["JOB", "KIND", "NOW", "NEXT DUE", "TARGET"], &table);
    Ok(ExitCode::SUCCESS)
}

fn fmt_time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

// ---- rotate ----------------------------------------------------------------------------------

async fn rotate(cfg: Config, name: &str, dry_run: bool) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let Some(job) = jobs.iter().find(|j| j.config.name == name).cloned() else {
        return Err(Failure::Usage(format!(
            "no job named `{name}` in {}",
            cfg.jobs_dir.display()
        )));
    };
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let request = RunRequest {
        force: true,
        dry_run,
    };
    if dry_run {
        let ctx = context(&job, &vault, &store, CancellationToken::new());
        let report = job
            .job
            .run(&ctx, request)
            .await
            .with_context(|| format!("job {name}"))?;
        println!("{name}: {}", report.detail);
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = Arc::new(Metrics::new().context("building metrics")?);
    let engine = Engine::new(&cfg, jobs.clone(), store, vault, metrics);
    let cancel = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match engine
            .run_job(&job, RunTrigger::Manual, request, &cancel)
            .await
            .context("recording the run")?
        {
            RunResult::Ran(report) => {
                println!("{name}: {}", report.detail);
                return Ok(ExitCode::SUCCESS);
            }
            RunResult::Failed(error) => {
                eprintln!("{name}: rotation failed: {error}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
            RunResult::Busy if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            RunResult::Busy => {
                eprintln!(
                    "{name}: the job is locked by another process (the daemon is running it?); try again"
                );
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        }
    }
}
