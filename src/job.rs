//! The contract between the engine and the job kinds.
//!
//! A kind (one file under [`crate::rotate`]) says how it becomes due ([`Cadence`]), can look at its
//! target without changing anything ([`Job::inspect`]) and does its work ([`Job::run`]). The
//! engine — never the kind — takes locks, records runs, retries, updates metrics and raises
//! alerts; a kind reports what it saw through [`RunReport`] and [`AlertSignal`]s.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Duration, Schedule};
use crate::store::{ActionRecord, Store, StoreError};
use crate::vault::{AppRoleApi, KvApi, VaultError, VaultSession};

/// What a job may use while it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job: String,
    pub vault: Arc<VaultSession>,
    /// The KV calls of the rotation protocols: the session itself, or a model of KV in the
    /// deterministic simulation (`crate::sim`).
    pub kv: Arc<dyn KvApi>,
    /// The AppRole calls of `approle-secret-id`: the session itself, or a model.
    pub approle: Arc<dyn AppRoleApi>,
    pub store: Arc<dyn Store>,
    /// Cancelled on shutdown or when the run's timeout passes.
    pub cancel: CancellationToken,
    /// Whether the state store has ever recorded a secret for this job (a version or a change
    /// time); `true` when unknown. A kind may then skip looking for a secret that was never
    /// there, provided a stale answer stays safe (a check-and-set write, never a blind one).
    pub secret_recorded: bool,
}

/// How a job becomes due.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// When the secret it looks after is older than this (age from the state store, else from
    /// the KV version's `created_time`).
    Age(Duration),
    /// This long after its previous run.
    Interval(Duration),
    /// At each fire time of a cron schedule (a missed fire time is caught up once).
    Schedule(Schedule),
}

/// What the target looks like now; no secret values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// When the secret was last changed (the current KV version's `created_time`).
    pub secret_changed_at: Option<DateTime<Utc>>,
    pub secret_version: Option<i64>,
    /// One line for `plan` and `status`.
    pub summary: String,
}

/// What was asked of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunRequest {
    /// Do it even when not due (`rotate JOB`).
    pub force: bool,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Changed the target (rotated, snapshot published).
    Done,
    /// Found nothing to do (e.g. the secret was already fresh).
    Nothing,
}

/// An alert condition a job observed: firing or resolved. The engine turns it into an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSignal {
    pub name: &'static str,
    pub firing: bool,
    pub severity: Severity,
    pub summary: String,
    /// Extra facts (JSON object), no secrets.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// The result of a successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub work: Work,
    /// What happened, for the run record and logs; no secret.
    pub detail: String,
    /// The target after the run.
    pub inspection: Inspection,
    pub alerts: Vec<AlertSignal>,
}

/// Why a run failed. Messages carry paths, names and status codes, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Will not get better by retrying soon (bad input, denied by policy).
    #[error("{0}")]
    Permanent(String),
    /// May succeed on a later try.
    #[error("{0}")]
    Transient(String),
    #[error("cancelled")]
    Cancelled,
    /// A failure that also raises (or resolves) alerts of the kind's own, such as an integrity
    /// failure that must page at once rather than after `failures_before_alert` runs.
    #[error("{error}")]
    WithAlerts {
        error: Box<JobError>,
        alerts: Vec<AlertSignal>,
    },
}

impl JobError {
    pub fn is_retryable(&self) -> bool {
        match self {
            JobError::Vault(e) => e.is_retryable(),
            JobError::Store(e) => e.is_retryable(),
            JobError::Permanent(_) => false,
            JobError::Transient(_) | JobError::Cancelled => true,
            JobError::WithAlerts { error, .. } => error.is_retryable(),
        }
    }

    /// The alert signals this failure carries, for the engine to apply.
    pub fn alerts(&self) -> &[AlertSignal] {
        match self {
            JobError::WithAlerts { alerts, .. } => alerts,
            _ => &[],
        }
    }
}

/// One job kind's behaviour. Implementations must be safe to run again after a crash at any
/// point: `run` re-reads the target's truth before changing it.
#[async_trait]
pub trait Job: Send + Sync + 'static {
    fn cadence(&self) -> Cadence;

    /// Whether a run needs a valid Vault token. While the session has none (Vault down or
    /// sealed at start, a revoked token), the engine does not start such jobs; a health check
    /// that uses only unauthenticated endpoints still runs and reports.
    fn needs_token(&self) -> bool {
        true
    }

    /// Looks at the target without changing anything.
    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError>;

    /// Proves, changing nothing, that the job could do its work now: its paths exist and the
    /// token's policy allows what the job needs (for `check --connect`). Defaults to
    /// [`Job::inspect`]; kinds that write should also check their write access (e.g. with
    /// `sys/capabilities-self`).
    async fn preflight(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        self.inspect(ctx).await
    }

    /// Does the work. Unless `req.force`, re-checks due-ness against the target and returns
    /// [`Work::Nothing`] when it is not due after all (e.g. a restart after a crash that happened
    /// between the write and its record).
    async fn run(&self, ctx: &JobContext, req: RunRequest) -> Result<RunReport, JobError>;

    /// Finishes what a previous process left half done (an open rotation in the store's
    /// `rotations` table) without starting anything new. The engine calls it once at start,
    /// under the job's lock and before the first tick, for every enabled job with an open
    /// rotation — whatever its schedule, window or backoff, because a half-done rotation may
    /// leave consumers with a credential the target refuses. `Ok(None)`: nothing to resume.
    /// The default does nothing; kinds that record rotations override it.
    async fn resume(&self, _ctx: &JobContext) -> Result<Option<RunReport>, JobError> {
        Ok(None)
    }

    /// Carries out one of this job's deferred actions (scheduled by an earlier run with
    /// [`Store::schedule_action`], e.g. "destroy the old secret-id after its grace"). The engine
    /// calls it once the action is due, under the job's lock, marks it done on `Ok` and retries
    /// it with backoff on `Err`, across restarts. Must be safe to repeat: a crash between the
    /// side effect and its record runs it again. Returns alert signals like [`Job::run`].
    async fn perform(
        &self,
        ctx: &JobContext,
        action: &ActionRecord,
    ) -> Result<Vec<AlertSignal>, JobError> {
        let _ = ctx;
        Err(JobError::Permanent(format!(
            "this kind has no deferred action `{}`",
            action.action
        )))
    }
}
