//! The records the store keeps. None of them has a field for a secret value.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// What the daemon remembers about one job between runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobState {
    pub job: String,
    pub kind: String,
    /// Start of the newest run (any outcome).
    pub last_run_at: Option<DateTime<Utc>>,
    /// End of the newest successful run.
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<RunOutcome>,
    pub consecutive_failures: u32,
    /// When the secret the job looks after was last changed, as last seen (KV `created_time`).
    pub secret_changed_at: Option<DateTime<Utc>>,
    /// The KV version last seen or written.
    pub secret_version: Option<i64>,
    /// Earliest time of the next attempt after a failure (backoff); `None` = by schedule.
    pub retry_at: Option<DateTime<Utc>>,
    /// Scrubbed text of the newest failure.
    pub last_error: Option<String>,
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTrigger {
    /// It was due by its schedule or interval.
    Schedule,
    /// Retry after a failure.
    Retry,
    /// From the command line (`rotate`, `snapshot`).
    Manual,
    /// At start, to roll forward a rotation a previous process left open.
    Resume,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The job did its work (rotated, snapshot taken, check passed).
    Success,
    /// Nothing to do (for example the secret turned out not to be due).
    Skipped,
    Failure,
    /// The process died during the run.
    Interrupted,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(&self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($ty))),
                }
            }
        }
    };
}

string_enum!(RunTrigger { Schedule => "schedule", Retry => "retry", Manual => "manual", Resume => "resume" });
string_enum!(RunOutcome { Success => "success", Skipped => "skipped", Failure => "failure", Interrupted => "interrupted" });
string_enum!(RotationStatus { Open => "open", Finished => "finished", Abandoned => "abandoned" });
string_enum!(AlertStatus { Firing => "firing", Resolved => "resolved" });
string_enum!(DeliveryKind { Firing => "firing", Repeat => "repeat", Resolved => "resolved" });
string_enum!(DeliveryState { Pending => "pending", Sent => "sent" });

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub job: String,
    pub kind: String,
    pub trigger: RunTrigger,
    pub started_at: DateTime<Utc>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    /// What was done (e.g. "rotated to version 4"); no secret.
    pub detail: Option<String>,
    /// Scrubbed error text.
    pub error: Option<String>,
}

/// The end of one run, as [`Store::end_runs`](super::Store::end_runs) records it: the run's
/// outcome, the job's new state, and the lock `holder` releases.
#[derive(Debug, Clone)]
pub struct RunEnding {
    pub run_id: i64,
    pub end: RunEnd,
    pub state: JobState,
    pub holder: String,
}

/// One row of the run history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub trigger: RunTrigger,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<RunOutcome>,
    pub detail: Option<String>,
    pub error: Option<String>,
}

/// Who holds a job lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub job: String,
    pub holder: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The state of one rotation state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStatus {
    Open,
    Finished,
    Abandoned,
}

#[derive(Debug, Clone)]
pub struct NewRotation {
    pub job: String,
    pub kind: String,
    pub step: String,
    /// Non-secret facts the steps need to resume (e.g. target role, KV version read, pending
    /// path), as JSON text.
    pub detail: Option<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub step: String,
    pub status: RotationStatus,
    pub detail: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One published snapshot in one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub job: String,
    pub destination: String,
    pub key: String,
    pub taken_at: DateTime<Utc>,
    pub size_bytes: i64,
    pub sha256: String,
    pub raft_index: Option<i64>,
    pub raft_term: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewAction {
    pub job: String,
    /// What to do, e.g. `destroy-secret-id`.
    pub action: String,
    /// Non-secret argument (e.g. a secret-id accessor), JSON text.
    pub payload: String,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    pub id: i64,
    pub job: String,
    pub action: String,
    pub payload: String,
    pub due_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One incident: an alert name for a job, firing or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// Stable per incident.
    pub fingerprint: String,
    pub name: String,
    pub job: String,
    pub severity: String,
    pub status: AlertStatus,
    pub summary: String,
    /// JSON object text.
    pub details: String,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// When the newest firing/repeat notification was queued.
    pub last_notified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Firing,
    Repeat,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Sent,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub fingerprint: String,
    pub sink: String,
    pub kind: DeliveryKind,
    pub created_at: DateTime<Utc>,
    /// The alert's summary when this notification was queued (no secret).
    pub summary: String,
    /// The alert's details (JSON object text) when this notification was queued.
    pub details: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub fingerprint: String,
    pub sink: String,
    pub kind: DeliveryKind,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The alert's summary when this was queued; `None` for rows queued by a version without it.
    pub summary: Option<String>,
    /// The alert's details when this was queued (JSON object text); `None` as for `summary`.
    pub details: Option<String>,
}
