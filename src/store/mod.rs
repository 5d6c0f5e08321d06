//! The state store: everything vault-steward must remember across restarts — job state, the record
//! of every run, rotation state machines, snapshot records, deferred actions, the alert outbox and
//! per-job locks.
//!
//! One [`Store`] trait, one implementation per backend ([`sqlite`], [`postgres`]), chosen once by
//! URL scheme in [`open`]. Migrations live in `migrations/sqlite` and `migrations/postgres` with
//! matching file names and are applied on open. Times are kept as Unix milliseconds.
//!
//! The store never stores a secret value — no table has a column meant for one: callers pass
//! identifiers, versions, times and error texts that have already been scrubbed. The PostgreSQL
//! password is handed over separately as a `SecretString` and never reaches a log, an error or a
//! `Debug` output.
//!
//! Both backends run the very same SQL (`$N` placeholders, `INSERT … ON CONFLICT`, `RETURNING`),
//! written once in the private `queries` module; only the open/connect code and the schema
//! files differ. Enums are stored as their `as_str` text; times are truncated to the millisecond.

pub mod lease;
pub mod postgres;
mod queries;
mod rows;
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
    /// A stored row does not decode into a record (unknown enum text, out-of-range number): the
    /// database was changed by something other than vault-steward.
    #[error("state store holds an invalid value: {0}")]
    Corrupt(String),
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
/// `postgresql://…`) and applies migrations. PostgreSQL's TLS comes from the URL's `sslmode`
/// and the host alone (see [`open_with_tls`]).
pub async fn open(
    url: &str,
    password: Option<&secrecy::SecretString>,
) -> Result<Arc<dyn Store>, StoreError> {
    open_with_tls(url, password, &crate::config::DbTls::default()).await
}

/// As [`open`], with the `[state]` TLS settings for PostgreSQL.
pub async fn open_with_tls(
    url: &str,
    password: Option<&secrecy::SecretString>,
    tls: &crate::config::DbTls,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::open(url, password, tls).await?,
        ))
    } else {
        Err(StoreError::Url(format!(
            "unsupported scheme in `{}` (use sqlite:// or postgres://)",
            redact_url(url)
        )))
    }
}

/// Like [`open`], for the daemon: a SQLite store is opened with
/// [`SqliteStore::open_exclusive`](sqlite::SqliteStore::open_exclusive), so a second daemon on the
/// same file fails with [`StoreError::InUse`] (short CLI commands keep using [`open`]). PostgreSQL
/// is meant to be shared by several instances and is opened as usual.
pub async fn open_exclusive(
    url: &str,
    password: Option<&secrecy::SecretString>,
    tls: &crate::config::DbTls,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open_exclusive(url).await?))
    } else {
        open_with_tls(url, password, tls).await
    }
}

/// A URL with any password replaced, fit for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => match u.set_password(Some("REDACTED")) {
            // The URL encoder would escape the brackets of the usual marker.
            Ok(()) => u.to_string().replacen(":REDACTED@", ":[redacted]@", 1),
            Err(()) => "[url with password]".to_string(),
        },
        Ok(_) => url.to_string(),
        // Unparsable: hide all user information rather than guess where a password ends.
        Err(_) => match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://[redacted]{}", &url[at..]),
            _ => url.to_string(),
        },
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
    /// Takes the job's lock for `holder` until `expires_at` (as [`try_lock`](Store::try_lock),
    /// at `run.started_at`) and, if it was taken, records the start of the run — in one
    /// transaction. Returns the run's id, or `None` if someone else holds the lock.
    async fn lock_and_start_run(
        &self,
        holder: &str,
        expires_at: DateTime<Utc>,
        run: &NewRun,
    ) -> Result<Option<i64>, StoreError>;
    /// Records the end of each run and its job's new state, and releases each holder's lock on
    /// the job, all in one transaction: one durable commit for many runs instead of three per
    /// run, which is what bounds a sweep of thousands of due jobs.
    async fn end_runs(&self, ends: &[RunEnding]) -> Result<(), StoreError>;
    /// The newest runs of a job, newest first.
    async fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// Marks every run that started and never finished (the process died) as
    /// `RunOutcome::Interrupted` at `now`; returns them. Meant for start-up; should the run in fact
    /// still be going in another process (a CLI command, another instance), its own
    /// [`finish_run`](Store::finish_run) later overwrites the mark with the real outcome.
    async fn close_interrupted_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, StoreError>;

    // ---- locks -----------------------------------------------------------------------------

    /// Takes the job's lock for `holder` until `expires_at`, if it is free, expired, or already
    /// `holder`'s. Returns whether `holder` now holds it. Atomic in the database, so safe between
    /// processes; `acquired_at` is kept when `holder` re-takes a lock it still holds.
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
    /// Forgets a snapshot (retention deleted it, or it is gone from its destination).
    async fn delete_snapshot(
        &self,
        job: &str,
        destination: &str,
        key: &str,
    ) -> Result<(), StoreError>;

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
    /// `claimer` until `lease_until`, so that two workers never send the same one. A claimed
    /// delivery is not due again before its lease ends (so a crashed worker's claims come back),
    /// and each claim counts as an attempt: the returned records already carry the incremented
    /// `attempts`. Oldest due first.
    async fn claim_deliveries(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Like [`claim_deliveries`](Store::claim_deliveries), for the deliveries of one sink, and
    /// never one that has an older pending delivery of the same alert for the same sink: each
    /// sink gets an alert's notifications in the order they were queued (a "resolved" never
    /// overtakes its "firing", whatever their retry times).
    async fn claim_sink_deliveries(
        &self,
        sink: &str,
        claimer: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    async fn mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records a failed attempt (error text scrubbed) and releases the claim until
    /// `next_attempt_at`.
    async fn mark_delivery_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Deliveries not yet sent.
    async fn queued_deliveries(&self) -> Result<u64, StoreError>;
    /// Deletes the deliveries sent before `before` (the outbox's history is kept for a while
    /// only); returns how many.
    async fn prune_sent_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Every delivery of an alert, oldest first.
    async fn deliveries(&self, fingerprint: &str) -> Result<Vec<DeliveryRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://steward:s3cr%40t@db:5432/state"),
            "postgres://steward:[redacted]@db:5432/state"
        );
        assert_eq!(
            redact_url("postgres://steward@db:5432/state"),
            "postgres://steward@db:5432/state"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
        assert_eq!(
            redact_url("postgres://steward:pw@[bad-host/state"),
            "postgres://[redacted]@[bad-host/state"
        );
    }
}
