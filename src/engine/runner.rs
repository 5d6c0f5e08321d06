//! One run of one job: take the job's lock, record the start, run the kind with a timeout and the
//! shutdown token, record the end and the job's new state (retry time after a failure), update
//! the metrics and raise or resolve alerts. The same path serves the daemon's ticks and the CLI's
//! `rotate`, so both leave the same records.

use std::sync::PoisonError;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;

use super::backoff::retry_delay;
use super::lock::JobLock;
use super::{Engine, EngineJob};
use crate::alert;
use crate::job::{AlertSignal, JobContext, JobError, RunReport, RunRequest, Severity, Work};
use crate::metrics::{JobGauge, unix_seconds};
use crate::store::{JobState, NewRun, RunEnd, RunEnding, RunOutcome, RunTrigger, StoreError};

/// A run that holds its job's lock and has its start recorded.
struct Held<'a> {
    lock: &'a JobLock,
    run: &'a NewRun,
    run_id: i64,
}

/// What the runner asks of the kind.
#[derive(Debug, Clone, Copy)]
pub(super) enum Invocation {
    Run(RunRequest),
    /// [`crate::job::Job::resume`]: finish an open rotation left by a previous process.
    Resume,
}

/// How an attempt to run a job ended.
#[derive(Debug)]
pub enum RunResult {
    /// The job ran and succeeded.
    Ran(RunReport),
    /// The job ran and failed; the error text is scrubbed.
    Failed(String),
    /// Someone else (the daemon or another command) holds the job's lock.
    Busy,
}

impl Engine {
    /// Runs `job` once under its lock. Store failures around the run are errors; the job's own
    /// failure is a [`RunResult::Failed`].
    pub async fn run_job(
        &self,
        job: &EngineJob,
        trigger: RunTrigger,
        req: RunRequest,
        cancel: &CancellationToken,
    ) -> Result<RunResult, StoreError> {
        self.run_job_permitted(job, trigger, Invocation::Run(req), cancel, None)
            .await
    }

    /// Rolls forward what a previous process left half done ([`crate::job::Job::resume`]) under
    /// the job's lock, recorded as a run like any other (trigger `resume`).
    pub async fn resume_job(
        &self,
        job: &EngineJob,
        cancel: &CancellationToken,
    ) -> Result<RunResult, StoreError> {
        self.run_job_permitted(job, RunTrigger::Resume, Invocation::Resume, cancel, None)
            .await
    }

    /// [`Engine::run_job`] holding one of the daemon's `max_concurrent` permits, which is
    /// released as soon as the kind's work is done (before the run's end is recorded).
    pub(super) async fn run_job_permitted(
        &self,
        job: &EngineJob,
        trigger: RunTrigger,
        invocation: Invocation,
        cancel: &CancellationToken,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<RunResult, StoreError> {
        let name = job.config.name.as_str();
        let run = NewRun {
            job: name.to_string(),
            kind: job.config.kind().to_string(),
            trigger,
            started_at: Utc::now(),
        };
        let Some((lock, run_id)) =
            JobLock::try_acquire_for_run(&self.store, &self.holder, &run).await?
        else {
            tracing::debug!(
                job = name,
                "job is locked by another process; not running it now"
            );
            return Ok(RunResult::Busy);
        };
        let held = Held {
            lock: &lock,
            run: &run,
            run_id,
        };
        let result = self
            .run_locked(job, &held, invocation, cancel, permit)
            .await;
        // On success `run_locked` released the lock together with the run's record.
        if result.is_err()
            && let Err(e) = lock.release().await
        {
            tracing::warn!(job = name, error = %e, "releasing the job lock failed; it expires by itself");
        }
        result
    }

    async fn run_locked(
        &self,
        job: &EngineJob,
        held: &Held<'_>,
        invocation: Invocation,
        cancel: &CancellationToken,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<RunResult, StoreError> {
        let (lock, run, run_id) = (held.lock, held.run, held.run_id);
        let name = job.config.name.as_str();
        let kind = job.config.kind();
        let (started_at, trigger) = (run.started_at, run.trigger);
        let stored = self.store.job_state(name).await?;
        // The same state as this engine last recorded or read: no other process ran the job
        // since (every run records its state, after its alerts), so what this process knows
        // of the job's alerts is still true.
        let alerts_known = self.states().get(name) == stored.as_ref();
        let mut state = stored.unwrap_or_else(|| JobState {
            job: name.to_string(),
            kind: kind.to_string(),
            ..JobState::default()
        });
        state.last_run_at = Some(started_at);
        self.metrics
            .set_job_gauge(JobGauge::LastRun, name, kind, unix_seconds(started_at));
        tracing::info!(job = name, kind, trigger = %trigger, "run started");

        let run_cancel = cancel.child_token();
        let ctx = JobContext {
            job: name.to_string(),
            vault: self.vault.clone(),
            kv: self.vault.clone(),
            approle: self.vault.clone(),
            store: self.store.clone(),
            cancel: run_cancel.clone(),
            secret_recorded: state.secret_version.is_some() || state.secret_changed_at.is_some(),
        };
        let timeout = job
            .config
            .timeout
            .unwrap_or(self.settings.job_timeout)
            .as_std();
        let clock = Instant::now();
        let work = async {
            match invocation {
                Invocation::Run(req) => job.job.run(&ctx, req).await,
                Invocation::Resume => job.job.resume(&ctx).await.map(|r| {
                    r.unwrap_or_else(|| RunReport {
                        work: Work::Nothing,
                        detail: "nothing to resume".into(),
                        inspection: Default::default(),
                        alerts: vec![],
                    })
                }),
            }
        };
        let outcome: Result<RunReport, JobError> = tokio::select! {
            r = work => r,
            _ = tokio::time::sleep(timeout) => {
                run_cancel.cancel();
                Err(JobError::Transient(format!("timed out after {}", crate::config::Duration(timeout))))
            }
            _ = cancel.cancelled() => Err(JobError::Cancelled),
            _ = lock.lost.cancelled() => Err(JobError::Transient("lost the job lock".into())),
        };
        drop(permit);
        let elapsed = clock.elapsed().as_secs_f64();
        let finished_at = Utc::now();
        self.metrics.observe_job_duration(name, kind, elapsed);

        let mut signals: Vec<AlertSignal> = Vec::new();
        let (end, result) = match outcome {
            Ok(report) => {
                state.last_success_at = Some(finished_at);
                state.consecutive_failures = 0;
                state.retry_at = None;
                state.last_error = None;
                if report.inspection.secret_changed_at.is_some() {
                    state.secret_changed_at = report.inspection.secret_changed_at;
                    state.secret_version = report.inspection.secret_version;
                }
                let outcome = match report.work {
                    Work::Done => RunOutcome::Success,
                    Work::Nothing => RunOutcome::Skipped,
                };
                state.last_outcome = Some(outcome);
                self.metrics.count_job_run(name, kind, true);
                self.metrics.set_job_gauge(
                    JobGauge::LastSuccess,
                    name,
                    kind,
                    unix_seconds(finished_at),
                );
                tracing::info!(job = name, kind, outcome = %outcome, detail = %report.detail, elapsed_s = elapsed, "run finished");
                signals.push(job_failing(false, name, 0, None));
                signals.extend(report.alerts.iter().cloned());
                (
                    RunEnd {
                        finished_at,
                        outcome,
                        detail: Some(report.detail.clone()),
                        error: None,
                    },
                    RunResult::Ran(report),
                )
            }
            Err(e) => {
                let text = e.to_string();
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_outcome = Some(RunOutcome::Failure);
                state.last_error = Some(text.clone());
                let delay = retry_delay(
                    state.consecutive_failures,
                    self.settings.retry_initial.as_std(),
                    self.settings.retry_max.as_std(),
                    &mut rand::rng(),
                );
                state.retry_at =
                    Some(finished_at + chrono::Duration::from_std(delay).unwrap_or_default());
                self.metrics.count_job_run(name, kind, false);
                tracing::warn!(
                    job = name,
                    kind,
                    error = %text,
                    retryable = e.is_retryable(),
                    consecutive_failures = state.consecutive_failures,
                    retry_in_s = delay.as_secs_f64(),
                    "run failed"
                );
                signals.extend(e.alerts().iter().cloned());
                if state.consecutive_failures >= self.failures_before_alert {
                    signals.push(job_failing(
                        true,
                        name,
                        state.consecutive_failures,
                        Some(&text),
                    ));
                }
                (
                    RunEnd {
                        finished_at,
                        outcome: RunOutcome::Failure,
                        detail: None,
                        error: Some(text.clone()),
                    },
                    RunResult::Failed(text),
                )
            }
        };
        self.record_vault_health(&signals);
        // Alerts first, still under the lock, so that a command running the job next sees them.
        for signal in &signals {
            self.incidents
                .apply_known(
                    name,
                    signal,
                    job.config.alerts.as_deref(),
                    finished_at,
                    alerts_known,
                )
                .await?;
        }
        lock.stop_renewal().await;
        self.record_end(RunEnding {
            run_id,
            end,
            state: state.clone(),
            holder: self.holder.clone(),
        })
        .await?;
        self.state_recorded(state.clone());
        self.metrics
            .set_job_consecutive_failures(name, kind, state.consecutive_failures);
        self.metrics
            .set_secret_changed(name, state.secret_changed_at);
        self.publish_snapshot_metrics(job).await;
        self.note_rolling_forward(name, matches!(result, RunResult::Failed(_)))
            .await;
        self.publish_next_due(job, Some(&state), finished_at);
        Ok(result)
    }

    /// Keeps `rolling_forward` in step with a run's end: a failed run that left its job's
    /// rotation open puts the job in; any other end takes it out.
    async fn note_rolling_forward(&self, name: &str, failed: bool) {
        let open = if failed {
            match self.store.open_rotations(Some(name)).await {
                Ok(open) => !open.is_empty(),
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "could not look for an open rotation; the retry keeps to the window");
                    false
                }
            }
        } else {
            false
        };
        let mut rolling = self
            .rolling_forward
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if open {
            if rolling.insert(name.to_string()) {
                tracing::warn!(
                    job = name,
                    "the failed run left its rotation open; retrying it without waiting for the window"
                );
            }
        } else {
            rolling.remove(name);
        }
    }

    /// Records a run's end: through the group-commit recorder in the daemon, directly otherwise.
    async fn record_end(&self, ending: RunEnding) -> Result<(), StoreError> {
        let queue = self.recorder.lock().ok().and_then(|q| q.clone());
        if let Some(queue) = queue {
            let (done, recorded) = oneshot::channel();
            let fallback = ending.clone();
            if queue.send(super::recorder::Ending { ending, done }).is_ok()
                && let Ok(result) = recorded.await
            {
                return result;
            }
            // The recorder is gone (shutting down): write it ourselves.
            return self.store.end_runs(std::slice::from_ref(&fallback)).await;
        }
        self.store.end_runs(std::slice::from_ref(&ending)).await
    }

    /// `vault_up` and `vault_sealed` follow the health check's signals (a `vault-health` job
    /// reports both on every run; `VaultSealed` is left out when Vault did not answer).
    fn record_vault_health(&self, signals: &[AlertSignal]) {
        let unreachable = signals.iter().find(|s| s.name == alert::VAULT_UNREACHABLE);
        let sealed = signals.iter().find(|s| s.name == alert::VAULT_SEALED);
        if let Some(u) = unreachable {
            self.metrics
                .set_vault_health(!u.firing, sealed.map(|s| s.firing));
        }
    }

    /// For snapshot jobs: `snapshot_size_bytes` and `snapshots_retained{destination}` from the
    /// snapshot records in the store (which the job keeps in step with its destinations).
    pub(super) async fn publish_snapshot_metrics(&self, job: &EngineJob) {
        let crate::config::JobSpec::RaftSnapshot(c) = &job.config.spec else {
            return;
        };
        let name = job.config.name.as_str();
        match self.store.snapshots(name, 1_000_000).await {
            Ok(records) => {
                let destinations =
                    c.s3.as_ref()
                        .map(|_| "s3")
                        .into_iter()
                        .chain(c.local.as_ref().map(|_| "local"));
                self.metrics.set_snapshots(name, destinations, &records);
            }
            Err(e) => {
                tracing::warn!(job = name, error = %e, "reading snapshot records for metrics")
            }
        }
    }

    /// Updates `job_next_run_timestamp_seconds` and returns the next due time.
    pub(super) fn publish_next_due(
        &self,
        job: &EngineJob,
        state: Option<&JobState>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // Only a job with a window needs the set (this runs for every job on every tick).
        let open = job.config.window.is_some()
            && self
                .rolling_forward
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(job.config.name.as_str());
        let window = super::due::gating_window(job.config.window.as_ref(), open);
        let next = super::due::next_due(&job.cadence, window, state, now);
        self.metrics.set_job_gauge(
            JobGauge::NextRun,
            &job.config.name,
            job.config.kind(),
            next.map(unix_seconds).unwrap_or(0.0),
        );
        next
    }
}

fn job_failing(firing: bool, job: &str, failures: u32, error: Option<&str>) -> AlertSignal {
    AlertSignal {
        name: alert::JOB_FAILING,
        firing,
        severity: Severity::Critical,
        summary: if firing {
            format!("job {job} failed {failures} times in a row")
        } else {
            format!("job {job} succeeded again")
        },
        details: serde_json::json!({
            "consecutive_failures": failures,
            "last_error": error,
        }),
    }
}
