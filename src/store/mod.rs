//! The state store: everything vault-steward must remember across restarts — job state, the record
//! of every run, rotation state machines, snapshot records, deferred actions, the alert outbox and
//! per-job locks.
//!
//! One [`Store`] trait, one implementation per backend ([`sqlite`], [`postgres`]), chosen once by
//! URL scheme in [`open`]. Migrations live in `migrations/sqlite` and `migrations/postgres` with
//! matching file names and are applied on open. Times are kept as Unix milliseconds.
//!
//! The store must never hold a secret value: callers pass identifiers, versions, times and
//! error texts that have already been scrubbed.

pub mod postgres;
pub mod sqlite;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use types::*;

/// Errors from the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's scheme names no backend, or the URL is malformed.
    #[error("state store url: {0}")]
    Url(String),
    /// The database could not be reached or answered with an error; usually worth retrying.
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another process already uses this store in a way that excludes us (e.g. a second daemon on
    /// one SQLite file).
    #[error("state store {0}")]
    InUse(String),
    /// Filesystem trouble creating or securing the SQLite file.
    #[error("state store file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(_))
    }
}

/// Opens the store named by `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://…`,
/// `postgresql://…`) and applies migrations.
pub async fn open(
    url: &str,
    password: Option<&secrecy::SecretString>,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::open(url, password).await?,
        ))
    } else {
        Err(StoreError::Url(format!(
            "unsupported scheme in `{}` (use sqlite:// or postgres://)",
            redact_url(url)
        )))
    }
}

/// A URL with any password replaced, fit for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("[redacted]"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Everything the daemon and the CLI persist.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Proves the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    // ---- job state -------------------------------------------------------------------------

    /// The persisted state of one job, if it ever ran.
    async fn job_state(&self, job: &str) -> Result<Option<JobState>, StoreError>;
    /// The state of every job that ever ran.
    async fn job_states(&self) -> Result<Vec<JobState>, StoreError>;
    /// Inserts or replaces a job's state.
    async fn put_job_state(&self, state: &JobState) -> Result<(), StoreError>;

    // ---- runs ------------------------------------------------------------------------------

    /// Records the start of a run; returns its id.
    async fn start_run(&self, run: &NewRun) -> Result<i64, StoreError>;
    /// Records the end of a run.
    async fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), StoreError>;
    /// The newest runs of a job, newest first.
    async fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// Marks every run that started and never finished (the process died) as
    /// `RunOutcome::Interrupted` at `now`; returns them.
    async fn close_interrupted_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, StoreError>;

    // ---- locks -----------------------------------------------------------------------------

    /// Takes the job's lock for `holder` until `expires_at`, if it is free, expired, or already
    /// `holder`'s. Returns whether `holder` now holds it.
    async fn try_lock(
        &self,
        job: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Extends a lock `holder` holds; false if it lost it.
    async fn renew_lock(
        &self,
        job: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Releases the lock if `holder` holds it.
    async fn unlock(&self, job: &str, holder: &str) -> Result<(), StoreError>;
    /// Who holds the job's lock, if anyone (expired or not).
    async fn lock_info(&self, job: &str) -> Result<Option<LockInfo>, StoreError>;

    // ---- rotation state machines -----------------------------------------------------------

    /// Starts a rotation record at step `step`; returns its id.
    async fn begin_rotation(&self, rotation: &NewRotation) -> Result<i64, StoreError>;
    /// Moves a rotation to `step` (recorded before the step's side effect).
    async fn set_rotation_step(
        &self,
        id: i64,
        step: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Closes a rotation as finished or abandoned.
    async fn finish_rotation(
        &self,
        id: i64,
        status: RotationStatus,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Rotations not yet finished, oldest first (all jobs when `job` is `None`).
    async fn open_rotations(&self, job: Option<&str>) -> Result<Vec<RotationRecord>, StoreError>;

    // ---- snapshots -------------------------------------------------------------------------

    async fn record_snapshot(&self, snapshot: &SnapshotRecord) -> Result<(), StoreError>;
    /// Snapshots of a job, newest first.
    async fn snapshots(&self, job: &str, limit: u32) -> Result<Vec<SnapshotRecord>, StoreError>;

    // ---- deferred actions (e.g. destroy an old secret-id after its grace) ------------------

    async fn schedule_action(&self, action: &NewAction) -> Result<i64, StoreError>;
    /// Undone actions due at or before `now`, oldest first.
    async fn due_actions(&self, now: DateTime<Utc>) -> Result<Vec<ActionRecord>, StoreError>;
    /// Undone actions of a job, whatever their due time.
    async fn pending_actions(&self, job: &str) -> Result<Vec<ActionRecord>, StoreError>;
    async fn complete_action(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records a failed attempt and when to try again.
    async fn retry_action(
        &self,
        id: i64,
        error: &str,
        next_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    // ---- alert outbox ----------------------------------------------------------------------

    /// Inserts or updates the alert with this fingerprint (firing or resolved).
    async fn upsert_alert(&self, alert: &AlertRecord) -> Result<(), StoreError>;
    async fn alert(&self, fingerprint: &str) -> Result<Option<AlertRecord>, StoreError>;
    /// Alerts currently firing.
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;
    /// Queues one notification of an alert for one sink.
    async fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<i64, StoreError>;
    /// Claims up to `limit` deliveries that are due (pending, `next_attempt_at <= now`) for
    /// `claimer` until `lease_until`, so that two workers never send the same one.
    async fn claim_deliveries(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    async fn mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn mark_delivery_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Deliveries not yet sent.
    async fn queued_deliveries(&self) -> Result<u64, StoreError>;
    /// Every delivery of an alert, oldest first.
    async fn deliveries(&self, fingerprint: &str) -> Result<Vec<DeliveryRecord>, StoreError>;
}
