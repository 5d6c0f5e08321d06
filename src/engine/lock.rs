//! Per-job locks in the state store, shared by the daemon and by CLI commands that change
//! something. A lock is a lease: taken for [`LEASE`], renewed while the holder works, so a holder
//! that died loses it soon. A holder that provably died on this very host, boot and pid
//! namespace (its pid is gone; see [`crate::identity`]) loses it at once, so a CLI or daemon
//! restarted after `kill -9` does not wait for the lease to run out.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{NewRun, Store, StoreError};

/// How long a lock lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a held lock is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Who we are, as written into lock rows (see [`crate::identity`]).
pub use crate::identity::holder_id;
use crate::identity::holder_is_dead_here;

/// A held job lock; renewed in the background until [`JobLock::release`].
pub struct JobLock {
    store: Arc<dyn Store>,
    job: String,
    holder: String,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Cancelled if the lock was lost (renewal refused), so the run can stop.
    pub lost: CancellationToken,
}

impl JobLock {
    /// Takes the lock if it is free, expired, or held by a dead process on this host.
    pub async fn try_acquire(
        store: &Arc<dyn Store>,
        job: &str,
        holder: &str,
    ) -> Result<Option<JobLock>, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut got = store.try_lock(job, holder, now, until).await?;
        if !got
            && let Some(info) = store.lock_info(job).await?
            && holder_is_dead_here(&info.holder)
        {
            tracing::warn!(job, stale_holder = %info.holder, "taking over the lock of a process that died");
            store.unlock(job, &info.holder).await?;
            got = store.try_lock(job, holder, now, until).await?;
        }
        if !got {
            return Ok(None);
        }
        Ok(Some(Self::held(store, job, holder)))
    }

    /// Like [`JobLock::try_acquire`], and records the start of `run` in the same transaction
    /// ([`Store::lock_and_start_run`]): the daemon's runs take one durable commit here instead
    /// of two. Returns the lock and the run's id.
    pub async fn try_acquire_for_run(
        store: &Arc<dyn Store>,
        holder: &str,
        run: &NewRun,
    ) -> Result<Option<(JobLock, i64)>, StoreError> {
        let until = run.started_at + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut got = store.lock_and_start_run(holder, until, run).await?;
        if got.is_none()
            && let Some(info) = store.lock_info(&run.job).await?
            && holder_is_dead_here(&info.holder)
        {
            tracing::warn!(job = %run.job, stale_holder = %info.holder, "taking over the lock of a process that died");
            store.unlock(&run.job, &info.holder).await?;
            got = store.lock_and_start_run(holder, until, run).await?;
        }
        Ok(got.map(|id| (Self::held(store, &run.job, holder), id)))
    }

    /// The lock just taken by `holder`, renewed from now on.
    fn held(store: &Arc<dyn Store>, job: &str, holder: &str) -> JobLock {
        let lock = JobLock {
            store: store.clone(),
            job: job.to_string(),
            holder: holder.to_string(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            lost: CancellationToken::new(),
        };
        lock.spawn_renewal();
        lock
    }

    /// Waits up to `wait` for the lock (for CLI commands while the daemon is running a job).
    pub async fn acquire_within(
        store: &Arc<dyn Store>,
        job: &str,
        holder: &str,
        wait: Duration,
    ) -> Result<Option<JobLock>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lock) = Self::try_acquire(store, job, holder).await? {
                return Ok(Some(lock));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn spawn_renewal(&self) {
        let (store, job, holder) = (self.store.clone(), self.job.clone(), self.holder.clone());
        let (stop, lost) = (self.stop.clone(), self.lost.clone());
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                }
                let until = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
                match store.renew_lock(&job, &holder, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(job, "job lock was lost; stopping the run");
                        lost.cancel();
                        return;
                    }
                    // A store hiccup: keep trying until the lease would run out.
                    Err(e) => tracing::warn!(job, error = %e, "renewing the job lock failed"),
                }
            }
        });
        self.tasks.close();
    }

    /// Stops renewal and releases the lock.
    pub async fn release(self) -> Result<(), StoreError> {
        self.stop_renewal().await;
        self.store.unlock(&self.job, &self.holder).await
    }

    /// Stops renewal only, for a holder about to release the lock as part of a larger
    /// transaction ([`Store::end_run`]); [`JobLock::release`] remains safe to call afterwards.
    pub async fn stop_renewal(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}
