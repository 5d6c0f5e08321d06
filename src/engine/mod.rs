//! The job engine: tokio-cron-scheduler only wakes it once a second; due-ness, catch-up, locks
//! and retries come from the state store, so a restart never runs a job twice and a daemon that
//! was down catches up once.
//!
//! [`due`] computes when a job is next due (pure), [`backoff`] the retry delays, [`lock`] the
//! per-job locks shared with CLI commands, [`runner`] one run from lock to record.

pub mod backoff;
pub mod due;
pub mod lock;
pub mod runner;
pub mod view;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Incidents;
use crate::config::{Config, EngineConfig, JobConfig};
use crate::job::{Cadence, Job, RunRequest};
use crate::metrics::Metrics;
use crate::store::{RunTrigger, Store, StoreError};
use crate::vault::VaultSession;

pub use runner::RunResult;
pub use view::{PlanRow, StatusRow};

/// A configured job with its kind's behaviour.
pub struct EngineJob {
    pub config: JobConfig,
    pub cadence: Cadence,
    pub job: Arc<dyn Job>,
}

/// Errors that stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job {job}: {message}")]
    Build { job: String, message: String },
}

/// Builds the behaviour of every configured job.
pub fn build_jobs(config: &Config) -> Result<Vec<Arc<EngineJob>>, EngineError> {
    config.jobs.iter().map(build_jobs_one).collect()
}

/// Builds the behaviour of one configured job.
pub fn build_jobs_one(jc: &JobConfig) -> Result<Arc<EngineJob>, EngineError> {
    let job = crate::rotate::build(jc).map_err(|message| EngineError::Build {
        job: jc.name.clone(),
        message,
    })?;
    Ok(Arc::new(EngineJob {
        cadence: job.cadence(),
        config: jc.clone(),
        job,
    }))
}

/// Drives every enabled job.
pub struct Engine {
    pub jobs: Vec<Arc<EngineJob>>,
    pub store: Arc<dyn Store>,
    pub vault: Arc<VaultSession>,
    pub metrics: Arc<Metrics>,
    incidents: Incidents,
    settings: EngineConfig,
    failures_before_alert: u32,
    /// This process's identity in lock rows.
    pub holder: String,
    running: Mutex<HashSet<String>>,
    /// Unix ms of the newest tick handled, for the systemd watchdog.
    last_tick_ms: AtomicI64,
}

impl Engine {
    pub fn new(
        config: &Config,
        jobs: Vec<Arc<EngineJob>>,
        store: Arc<dyn Store>,
        vault: Arc<VaultSession>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sinks = config
            .alerts
            .email
            .iter()
            .map(|s| s.name.clone())
            .chain(config.alerts.webhook.iter().map(|s| s.name.clone()))
            .collect();
        for job in &jobs {
            metrics.register_job(&job.config.name, job.config.kind());
        }
        Engine {
            incidents: Incidents::new(store.clone(), config.alerts.repeat_interval, sinks),
            jobs,
            store,
            vault,
            metrics,
            settings: config.engine.clone(),
            failures_before_alert: config.alerts.failures_before_alert.max(1),
            holder: lock::holder_id(),
            running: Mutex::new(HashSet::new()),
            last_tick_ms: AtomicI64::new(Utc::now().timestamp_millis()),
        }
    }

    pub fn job(&self, name: &str) -> Option<&Arc<EngineJob>> {
        self.jobs.iter().find(|j| j.config.name == name)
    }

    /// Unix ms of the newest tick the engine handled.
    pub fn last_tick_ms(&self) -> i64 {
        self.last_tick_ms.load(Ordering::Relaxed)
    }

    /// Runs until `cancel`, then waits for running jobs (they see the cancellation) up to the
    /// configured shutdown timeout.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), EngineError> {
        let closed = self.store.close_interrupted_runs(Utc::now()).await?;
        for run in &closed {
            tracing::warn!(job = %run.job, run_id = run.id, started_at = %run.started_at, "a run was interrupted by the previous process's death; rolling forward");
        }
        let states = self.store.job_states().await?;
        let now = Utc::now();
        for job in &self.jobs {
            let state = states.iter().find(|s| s.job == job.config.name);
            if let Some(s) = state {
                self.metrics
                    .set_secret_changed(&job.config.name, s.secret_changed_at);
                self.metrics
                    .job_consecutive_failures
                    .with_label_values(&[job.config.name.as_str(), job.config.kind()])
                    .set(i64::from(s.consecutive_failures));
            }
            self.publish_next_due(job, state, now);
            self.publish_snapshot_metrics(job).await;
        }

        let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
        let mut scheduler = JobScheduler::new()
            .await
            .map_err(|e| EngineError::Scheduler(e.to_string()))?;
        let tick = CronJob::new_async("* * * * * *", move |_id, _sched| {
            let tx = tick_tx.clone();
            Box::pin(async move {
                // A full channel means a tick is already pending: ticks coalesce.
                let _ = tx.try_send(());
            })
        })
        .map_err(|e| EngineError::Scheduler(e.to_string()))?;
        scheduler
            .add(tick)
            .await
            .map_err(|e| EngineError::Scheduler(e.to_string()))?;
        scheduler
            .start()
            .await
            .map_err(|e| EngineError::Scheduler(e.to_string()))?;

        let tasks = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.settings.max_concurrent.max(1)));
        // Evaluate once at start so that catch-up does not wait for the first tick.
        self.clone().on_tick(&tasks, &permits, &cancel).await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                got = tick_rx.recv() => {
                    if got.is_none() { break; }
                    self.clone().on_tick(&tasks, &permits, &cancel).await;
                }
            }
        }
        let _ = scheduler.shutdown().await;
        tasks.close();
        let grace = self.settings.shutdown_timeout.as_std();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::error!(
                timeout = %self.settings.shutdown_timeout,
                "jobs still running at shutdown timeout; leaving them (their state machines resume on next start)"
            );
        }
        Ok(())
    }

    async fn on_tick(
        self: Arc<Self>,
        tasks: &TaskTracker,
        permits: &Arc<Semaphore>,
        cancel: &CancellationToken,
    ) {
        let now = Utc::now();
        self.last_tick_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
        self.metrics.vault_authenticated.set(
            if self.vault.auth_state() == crate::vault::AuthState::Authenticated {
                1.0
            } else {
                0.0
            },
        );
        let states = match self.store.job_states().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "state store unavailable; no job starts this tick");
                return;
            }
        };
        for job in self.jobs.iter().filter(|j| j.config.enabled) {
            let name = job.config.name.clone();
            if self.is_running(&name) {
                continue;
            }
            let state = states.iter().find(|s| s.job == name);
            let next = self.publish_next_due(job, state, now);
            if !due::is_due(next, now) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let trigger = if state.is_some_and(|s| s.retry_at.is_some()) {
                RunTrigger::Retry
            } else {
                RunTrigger::Schedule
            };
            self.set_running(&name, true);
            let (engine, job, cancel) = (self.clone(), job.clone(), cancel.clone());
            tasks.spawn(async move {
                let result = engine
                    .run_job(&job, trigger, RunRequest::default(), &cancel)
                    .await;
                if let Err(e) = result {
                    tracing::error!(job = %job.config.name, error = %e, "could not record the run in the state store");
                }
                engine.set_running(&job.config.name, false);
                drop(permit);
            });
        }
    }

    fn is_running(&self, job: &str) -> bool {
        self.running.lock().map(|s| s.contains(job)).unwrap_or(true)
    }

    fn set_running(&self, job: &str, running: bool) {
        if let Ok(mut set) = self.running.lock() {
            if running {
                set.insert(job.to_string());
            } else {
                set.remove(job);
            }
        }
    }
}
