//! Deferred actions: work a run leaves for later in the store (`schedule_action`), such as
//! destroying the previous AppRole secret-id once its grace has passed. Because they live in the
//! store, a restart (or another instance on the same PostgreSQL store) carries them out on time.
//!
//! Once a second the engine looks for due actions and hands each to its job's kind
//! ([`Job::perform`](crate::job::Job::perform)) under the job's lock, so an action never runs
//! alongside its job's rotation. Done actions are marked done; failed ones are retried with the
//! engine's backoff, and after `failures_before_alert` failed attempts `DeferredActionFailing`
//! fires (resolved by the next success). Actions of a job that is no longer configured wait:
//! their payload may matter once the job comes back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Engine;
use super::backoff::retry_delay;
use super::lock::JobLock;
use crate::job::{AlertSignal, JobContext, JobError, Severity};
use crate::store::{ActionRecord, StoreError};

/// Alert raised when a job's deferred action keeps failing.
pub const DEFERRED_ACTION_FAILING: &str = "DeferredActionFailing";

impl Engine {
    /// Starts a sweep of due actions unless one is still under way.
    pub(super) fn on_actions_tick(
        self: Arc<Self>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        if self.actions_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = self.run_due_actions(&cancel).await {
                tracing::warn!(error = %e, "state store unavailable; deferred actions wait");
            }
            self.actions_busy.store(false, Ordering::Release);
        });
    }

    async fn run_due_actions(&self, cancel: &CancellationToken) -> Result<(), StoreError> {
        let due = self.store.due_actions(Utc::now()).await?;
        for action in due {
            if cancel.is_cancelled() {
                break;
            }
            let Some(job) = self.job(&action.job).cloned() else {
                tracing::debug!(job = %action.job, action = %action.action, id = action.id, "deferred action of a job that is not configured; waiting");
                continue;
            };
            // The job is queued or running here: its action waits for the next sweep.
            if !self.try_claim(&action.job) {
                continue;
            }
            let result = self.run_action_locked(&job, &action, cancel).await;
            self.set_running(&action.job, false);
            result?;
        }
        Ok(())
    }

    async fn run_action_locked(
        &self,
        job: &super::EngineJob,
        action: &ActionRecord,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let name = job.config.name.as_str();
        let Some(lock) = JobLock::try_acquire(&self.store, name, &self.holder).await? else {
            return Ok(());
        };
        let ctx = JobContext {
            job: name.to_string(),
            vault: self.vault.clone(),
            kv: self.vault.clone(),
            approle: self.vault.clone(),
            store: self.store.clone(),
            cancel: cancel.child_token(),
            secret_recorded: true,
        };
        let timeout = job
            .config
            .timeout
            .unwrap_or(self.settings.job_timeout)
            .as_std();
        let outcome = tokio::select! {
            r = job.job.perform(&ctx, action) => r,
            _ = tokio::time::sleep(timeout) => {
                ctx.cancel.cancel();
                Err(JobError::Transient(format!("timed out after {}", crate::config::Duration(timeout))))
            }
            _ = cancel.cancelled() => Err(JobError::Cancelled),
            _ = lock.lost.cancelled() => Err(JobError::Transient("lost the job lock".into())),
        };
        let now = Utc::now();
        let mut signals: Vec<AlertSignal> = Vec::new();
        let recorded = match outcome {
            Ok(mut s) => {
                tracing::info!(job = name, action = %action.action, id = action.id, "deferred action done");
                signals.append(&mut s);
                signals.push(failing_signal(false, action, None));
                self.store.complete_action(action.id, now).await
            }
            Err(JobError::Cancelled) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                let attempts = action.attempts.saturating_add(1);
                let delay = retry_delay(
                    attempts,
                    self.settings.retry_initial.as_std(),
                    self.settings.retry_max.as_std(),
                    &mut rand::rng(),
                );
                tracing::warn!(job = name, action = %action.action, id = action.id, attempts, error = %text, retry_in_s = delay.as_secs_f64(), "deferred action failed");
                if attempts >= self.failures_before_alert {
                    signals.push(failing_signal(true, action, Some(&text)));
                }
                let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                self.store.retry_action(action.id, &text, next).await
            }
        };
        let mut result = recorded;
        if result.is_ok() {
            for signal in &signals {
                if let Err(e) = self
                    .incidents
                    .apply(name, signal, job.config.alerts.as_deref(), now)
                    .await
                {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = lock.release().await {
            tracing::warn!(job = name, error = %e, "releasing the job lock failed; it expires by itself");
        }
        result
    }
}

fn failing_signal(firing: bool, action: &ActionRecord, error: Option<&str>) -> AlertSignal {
    AlertSignal {
        name: DEFERRED_ACTION_FAILING,
        firing,
        severity: Severity::Warning,
        summary: if firing {
            format!(
                "deferred action {} of job {} failed {} times",
                action.action,
                action.job,
                action.attempts.saturating_add(1)
            )
        } else {
            format!("deferred actions of job {} succeed again", action.job)
        },
        details: serde_json::json!({
            "action": action.action,
            "action_id": action.id,
            "due_at": action.due_at.to_rfc3339(),
            "last_error": error,
        }),
    }
}
