//! Wiring for every command: load the config, open the store and the Vault session, start the
//! engine and the HTTP server, and shut all of it down in order. Exit codes: 0 success, 1 a
//! runtime failure, 2 bad config or usage.
//!
//! One file per group of commands: [`run`] (the daemon: tasks, shutdown, sd_notify),
//! [`inspect`] (`check`, `plan`, `status`), [`rotate`], [`alerts`], [`backups`] (`snapshot`,
//! `backups …`, `restore`). Shared plumbing (opening the store, connecting to Vault, exit codes)
//! lives here.

mod alerts;
mod backups;
mod inspect;
mod rotate;
mod run;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::engine::{self, Engine, EngineJob, RunResult};
use crate::job::{JobContext, RunRequest};
use crate::store::{self, RunTrigger, Store};
use crate::vault::VaultSession;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad config or usage.
pub const EXIT_CONFIG: u8 = 2;

/// Why a command failed, which decides its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
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
    // First of all: no core dump may carry the token or a password, and no other process of the
    // same user may read /proc/self/environ or /proc/self/mem (VAULT_TOKEN may sit in the
    // environment). Non-dumpable also makes /proc/self/* owned by root.
    let dumpable =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    crate::telemetry::init();
    if let Err(e) = dumpable {
        tracing::warn!(error = %e, "could not mark the process non-dumpable: a crash may dump secrets to disk");
    }
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
        Command::Run => run::run(cfg).await,
        Command::Check { connect } => inspect::check(cfg, connect).await,
        Command::Plan => inspect::plan(cfg).await,
        Command::Status { json } => inspect::status(cfg, json).await,
        Command::Rotate { job, dry_run } => rotate::rotate(cfg, &job, dry_run).await,
        Command::Alerts { command } => alerts::alerts(cfg, command).await,
        Command::Snapshot { job } => backups::snapshot(cfg, &job).await,
        Command::Backups { command } => backups::backups(cfg, command).await,
        Command::Restore {
            job,
            which,
            force,
            skip_record_check,
        } => backups::restore(cfg, &job, which, force, skip_record_check).await,
    }
}

/// Runs `job` once now through the engine's runner (the daemon's job lock and run records),
/// waiting up to a minute while another process holds the lock. `what` names the work in the
/// failure message ("rotation"), `holder` what most likely holds the lock.
pub(crate) async fn run_by_hand(
    engine: &Engine,
    job: &Arc<EngineJob>,
    request: RunRequest,
    what: &str,
    holder: &str,
) -> Result<ExitCode, Failure> {
    let name = &job.config.name;
    let cancel = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match engine
            .run_job(job, RunTrigger::Manual, request, &cancel)
            .await
            .context("recording the run")?
        {
            RunResult::Ran(report) => {
                println!("{name}: {}", report.detail);
                return Ok(ExitCode::SUCCESS);
            }
            RunResult::Failed(error) => {
                eprintln!("{name}: {what} failed: {error}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
            RunResult::Busy if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            RunResult::Busy => {
                eprintln!("{name}: the job is locked by another process ({holder}?); try again");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        }
    }
}

pub(crate) fn jobs(cfg: &Config) -> Result<Vec<Arc<EngineJob>>, Failure> {
    engine::build_jobs(cfg).map_err(|e| Failure::Usage(e.to_string()))
}

pub(crate) async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, Failure> {
    open_store_as(cfg, false).await
}

/// Opens the state store; `exclusive` (the daemon) also refuses a SQLite file another daemon uses.
pub(crate) async fn open_store_as(
    cfg: &Config,
    exclusive: bool,
) -> Result<Arc<dyn Store>, Failure> {
    let password = match &cfg.state.password {
        Some(source) => Some(
            source
                .read()
                .map_err(|e| Failure::Usage(format!("[state] password: {e}")))?,
        ),
        None => None,
    };
    let opened = if exclusive {
        store::open_exclusive(&cfg.state.url, password.as_ref(), &cfg.state.tls).await
    } else {
        store::open_with_tls(&cfg.state.url, password.as_ref(), &cfg.state.tls).await
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

pub(crate) async fn connect_vault(cfg: &Config) -> Result<Arc<VaultSession>, Failure> {
    VaultSession::connect(&cfg.vault)
        .await
        .with_context(|| format!("connecting to Vault at {}", cfg.vault.address))
        .map_err(Failure::Runtime)
}

pub(crate) fn e_text(f: &Failure) -> String {
    match f {
        Failure::Usage(m) => m.clone(),
        Failure::Runtime(e) => format!("{e:#}"),
    }
}

pub(crate) fn context(
    job: &EngineJob,
    vault: &Arc<VaultSession>,
    store: &Arc<dyn Store>,
    cancel: CancellationToken,
) -> JobContext {
    JobContext {
        job: job.config.name.clone(),
        vault: vault.clone(),
        kv: vault.clone(),
        approle: vault.clone(),
        store: store.clone(),
        cancel,
        secret_recorded: true,
    }
}
