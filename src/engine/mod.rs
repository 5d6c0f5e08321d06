//! The job engine: tokio-cron-scheduler only wakes it once a second; due-ness, catch-up, locks
//! and retries come from the state store, so a restart never runs a job twice and a daemon that
//! was down catches up once.
//!
//! [`due`] computes when a job is next due (pure), [`backoff`] the retry delays, [`lock`] the
//! per-job locks shared with CLI commands, [`runner`] one run from lock to record, `actions` the
//! deferred actions jobs leave in the store (e.g. destroy an old secret-id after its grace),
//! `recorder` the group commit of run endings (many runs share one durable commit), and `states`
//! the engine's copy of the job states that the ticks read.

mod actions;
pub mod backoff;
pub mod due;
pub mod lock;
mod recorder;
pub mod runner;
mod states;
pub mod view;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Incidents;
use crate::config::{Config, EngineConfig, JobConfig};
use crate::job::{Cadence, Job, RunRequest};
use crate::metrics::Metrics;
use crate::store::{JobState, RunTrigger, Store, StoreError};
use crate::vault::VaultSession;

pub use runner::RunResult;
pub use view::{PlanRow, StatusRow};

/// A configured job with its kind's behaviour.
pub struct EngineJob {
    pub config: JobConfig,
    pub cadence: Cadence,
    pub job: Arc<dyn Job>,
}

/// A due job waiting for a permit.
struct Queued {
    job: Arc<EngineJob>,
    trigger: RunTrigger,
}

/// Job states by job name: the tick looks each of thousands of jobs up once.
fn by_job(states: &[JobState]) -> HashMap<&str, &JobState> {
    states.iter().map(|s| (s.job.as_str(), s)).collect()
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
    config
        .jobs
        .iter()
        .map(|jc| build_jobs_one(jc, config.engine.job_timeout))
        .collect()
}

/// Builds the behaviour of one configured job; `job_timeout` is `[engine] job_timeout`.
pub fn build_jobs_one(
    jc: &JobConfig,
    job_timeout: crate::config::Duration,
) -> Result<Arc<EngineJob>, EngineError> {
    let job = crate::rotate::build(jc, job_timeout).map_err(|message| EngineError::Build {
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
    repeat_interval: crate::config::Duration,
    settings: EngineConfig,
    failures_before_alert: u32,
    /// This process's identity in lock rows.
    pub holder: String,
    /// Jobs queued or running (and jobs whose deferred actions are running), so that none
    /// runs twice at once in this process.
    running: Mutex<HashSet<String>>,
    /// A deferred-action sweep is under way.
    actions_busy: AtomicBool,
    /// Where the daemon's runs send their endings for group commit (`None` outside
    /// [`Engine::run`], e.g. in CLI commands: they write directly).
    recorder: Mutex<Option<mpsc::UnboundedSender<recorder::Ending>>>,
    /// Unix ms of the newest tick handled, for the systemd watchdog.
    last_tick_ms: AtomicI64,
    /// The job states the ticks judge due-ness by.
    states: Mutex<states::StateCache>,
    /// Jobs whose last run in this term failed with a rotation still open: their retries wait
    /// for no `window` (see [`due::gating_window`]).
    rolling_forward: Mutex<HashSet<String>>,
}

impl Engine {
    pub fn new(
        config: &Config,
        jobs: Vec<Arc<EngineJob>>,
        store: Arc<dyn Store>,
        vault: Arc<VaultSession>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let sinks = config.alerts.sink_names();
        for job in &jobs {
            metrics.register_job(&job.config.name, job.config.kind());
        }
        Engine {
            incidents: Incidents::new(store.clone(), config.alerts.repeat_interval, sinks),
            repeat_interval: config.alerts.repeat_interval,
            jobs,
            store,
            vault,
            metrics,
            settings: config.engine.clone(),
            failures_before_alert: config.alerts.failures_before_alert.max(1),
            holder: lock::holder_id(),
            running: Mutex::new(HashSet::new()),
            actions_busy: AtomicBool::new(false),
            recorder: Mutex::new(None),
            last_tick_ms: AtomicI64::new(Utc::now().timestamp_millis()),
            states: Mutex::new(states::StateCache::default()),
            rolling_forward: Mutex::new(HashSet::new()),
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
    ///
    /// Each tick only *finds* due jobs and queues them; a dispatcher starts queued jobs as soon
    /// as one of the `max_concurrent` permits frees up. So a sweep of many due jobs (thousands
    /// of keys created on the same day) runs back to back instead of `max_concurrent` per tick,
    /// and the tick itself never waits on a job.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), EngineError> {
        // What an earlier term knew may be stale: another instance may have led meanwhile. The
        // open rotations are resumed below, and their failures noted again.
        self.rolling_forward
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let closed = self.store.close_interrupted_runs(Utc::now()).await?;
        for run in &closed {
            tracing::warn!(job = %run.job, run_id = run.id, started_at = %run.started_at, "a run was interrupted by the previous process's death; rolling forward");
        }
        let mark = self.states().mark();
        let all_states = self.store.job_states().await?;
        // After the states, as in `refresh_states`.
        self.incidents.load_firing().await?;
        let states = by_job(&all_states);
        let now = Utc::now();
        for job in &self.jobs {
            let state = states.get(job.config.name.as_str()).copied();
            if let Some(s) = state {
                self.metrics
                    .set_secret_changed(&job.config.name, s.secret_changed_at);
                self.metrics.set_job_consecutive_failures(
                    &job.config.name,
                    job.config.kind(),
                    s.consecutive_failures,
                );
            }
            self.publish_next_due(job, state, now);
            self.publish_snapshot_metrics(job).await;
        }
        drop(states);
        self.states()
            .load(all_states, mark, std::time::Instant::now());

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
        let (ending_tx, ending_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(recorder::record(self.store.clone(), ending_rx));
        if let Ok(mut slot) = self.recorder.lock() {
            *slot = Some(ending_tx);
        }
        let (queue_tx, queue_rx) = mpsc::unbounded_channel::<Queued>();
        let dispatcher = tokio::spawn(self.clone().dispatch(
            queue_rx,
            tasks.clone(),
            cancel.clone(),
        ));
        self.clone().resume_open_rotations(&tasks, &cancel).await?;
        // Evaluate once at start so that catch-up does not wait for the first tick.
        self.on_tick(&queue_tx).await;
        self.clone().on_actions_tick(&tasks, &cancel);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                got = tick_rx.recv() => {
                    if got.is_none() { break; }
                    self.on_tick(&queue_tx).await;
                    self.clone().on_actions_tick(&tasks, &cancel);
                }
            }
        }
        let _ = scheduler.shutdown().await;
        drop(queue_tx);
        if let Err(e) = dispatcher.await {
            tracing::error!(error = %e, "the job dispatcher failed");
        }
        tasks.close();
        let grace = self.settings.shutdown_timeout.as_std();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::error!(
                timeout = %self.settings.shutdown_timeout,
                "jobs still running at shutdown timeout; leaving them (their state machines resume on next start)"
            );
        }
        // The recorder stops once the last ending queued so far is committed; runs still going
        // after the timeout write theirs directly.
        if let Ok(mut slot) = self.recorder.lock() {
            slot.take();
        }
        if let Err(e) = recorder.await {
            tracing::error!(error = %e, "the run recorder failed");
        }
        Ok(())
    }

    /// Finds the jobs that are due now and queues those not already queued or running.
    async fn on_tick(&self, queue: &mpsc::UnboundedSender<Queued>) {
        let now = Utc::now();
        self.last_tick_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
        let authenticated = self.vault.auth_state() == crate::vault::AuthState::Authenticated;
        self.metrics
            .vault_authenticated
            .set(if authenticated { 1.0 } else { 0.0 });
        self.refresh_states().await;
        let mut due_now = Vec::new();
        {
            // Both locks at once: a job that finishes meanwhile has put its new state before it
            // leaves `running`, so a job seen idle here is never judged on its old state.
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let states = self.states();
            for job in self.jobs.iter().filter(|j| j.config.enabled) {
                let name = job.config.name.as_str();
                if running.contains(name) {
                    continue;
                }
                let state = states.get(name);
                let next = self.publish_next_due(job, state, now);
                if !due::is_due(next, now) {
                    continue;
                }
                if !authenticated && job.job.needs_token() {
                    // Not a failure of the job: it starts once the keep-alive has logged in.
                    continue;
                }
                running.insert(name.to_string());
                let trigger = if state.is_some_and(|s| s.retry_at.is_some()) {
                    RunTrigger::Retry
                } else {
                    RunTrigger::Schedule
                };
                due_now.push(Queued {
                    job: job.clone(),
                    trigger,
                });
            }
        }
        let mut due_now = due_now.into_iter();
        for queued in due_now.by_ref() {
            let name = queued.job.config.name.clone();
            if queue.send(queued).is_err() {
                // The dispatcher is gone (shutting down).
                self.set_running(&name, false);
                break;
            }
        }
        for left in due_now {
            self.set_running(&left.job.config.name, false);
        }
    }

    /// Re-reads every job state from the store when the engine's copy is [`states::REFRESH`]
    /// old, so that states recorded by other processes are seen.
    async fn refresh_states(&self) {
        let at = std::time::Instant::now();
        let mark = {
            let states = self.states();
            if !states.stale(at) {
                return;
            }
            states.mark()
        };
        match self.store.job_states().await {
            Ok(read) => {
                // After the states: an alert another process raised is committed before the
                // state of its run, so a state read here comes with its alerts.
                if let Err(e) = self.incidents.load_firing().await {
                    tracing::warn!(error = %e, "state store unavailable; alerts looked up one by one");
                    self.incidents.forget_firing();
                }
                self.states().load(read, mark, at)
            }
            Err(e) => {
                tracing::warn!(error = %e, "state store unavailable; judging due jobs on the states last read")
            }
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, states::StateCache> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the state a run of this process just recorded.
    pub(super) fn state_recorded(&self, state: JobState) {
        self.states().put(state);
    }

    /// Starts queued jobs, each as soon as a permit is free, until the queue closes or `cancel`.
    async fn dispatch(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<Queued>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(self.settings.max_concurrent.max(1)));
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = queue.recv() => next,
            };
            let Some(Queued { job, trigger }) = next else {
                return;
            };
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                return;
            };
            let (engine, cancel) = (self.clone(), cancel.clone());
            tasks.spawn(async move {
                // The permit goes back as soon as the job is done with its target; recording
                // the run's end does not hold a slot.
                let result = engine
                    .run_job_permitted(
                        &job,
                        trigger,
                        runner::Invocation::Run(RunRequest::default()),
                        &cancel,
                        Some(permit),
                    )
                    .await;
                if let Err(e) = result {
                    tracing::error!(job = %job.config.name, error = %e, "could not record the run in the state store");
                }
                engine.set_running(&job.config.name, false);
            });
        }
    }

    /// Rolls forward, before the first tick, every rotation a previous process left open: each
    /// such job runs [`Job::resume`] at once, whatever its schedule, window or backoff (a
    /// half-done rotation may have left consumers a credential the target refuses). The ticks
    /// skip those jobs until their resume is over.
    async fn resume_open_rotations(
        self: Arc<Self>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let open = self.store.open_rotations(None).await?;
        let mut seen = HashSet::new();
        for rotation in &open {
            if !seen.insert(rotation.job.clone()) {
                continue;
            }
            let Some(job) = self.job(&rotation.job).cloned() else {
                tracing::warn!(job = %rotation.job, rotation = rotation.id, step = %rotation.step, "an open rotation belongs to a job that is no longer configured; leaving it");
                continue;
            };
            if !job.config.enabled {
                tracing::warn!(job = %rotation.job, rotation = rotation.id, step = %rotation.step, "an open rotation belongs to a disabled job; enable the job (or run `rotate`) to finish it");
                continue;
            }
            tracing::info!(job = %rotation.job, rotation = rotation.id, step = %rotation.step, "rolling forward a rotation the previous process left open");
            self.set_running(&job.config.name, true);
            let (engine, cancel) = (self.clone(), cancel.clone());
            tasks.spawn(async move {
                if let Err(e) = engine.resume_job(&job, &cancel).await {
                    tracing::error!(job = %job.config.name, error = %e, "could not record the run in the state store");
                }
                engine.set_running(&job.config.name, false);
            });
        }
        Ok(())
    }

    /// Marks `job` as queued or running unless it already is; true if this call marked it.
    fn try_claim(&self, job: &str) -> bool {
        self.running
            .lock()
            .map(|mut s| s.insert(job.to_string()))
            .unwrap_or(false)
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
