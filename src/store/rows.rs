//! Rows as the database returns them (plain integers and text, the same on both backends) and
//! their checked conversion into the public records. Nothing here knows which backend it runs on.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{
    ActionRecord, AlertRecord, DeliveryRecord, JobState, LockInfo, RotationRecord, RunRecord,
    SnapshotRecord, StoreError,
};

/// A time as stored: Unix milliseconds.
pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn time(column: &str, ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {ms} is not a time")))
}

fn opt_time(column: &str, ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(|ms| time(column, ms)).transpose()
}

fn parse<T: FromStr<Err = String>>(column: &str, text: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn opt_parse<T: FromStr<Err = String>>(
    column: &str,
    text: Option<&str>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| parse(column, t)).transpose()
}

fn count(column: &str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{column}: {n} is not a count")))
}

/// Converts every row, failing on the first that does not decode.
pub(super) fn records<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct JobStateRow {
    job: String,
    kind: String,
    last_run_at: Option<i64>,
    last_success_at: Option<i64>,
    last_outcome: Option<String>,
    consecutive_failures: i64,
    secret_changed_at: Option<i64>,
    secret_version: Option<i64>,
    retry_at: Option<i64>,
    last_error: Option<String>,
}

impl TryFrom<JobStateRow> for JobState {
    type Error = StoreError;
    fn try_from(r: JobStateRow) -> Result<Self, StoreError> {
        Ok(JobState {
            last_run_at: opt_time("job_states.last_run_at", r.last_run_at)?,
            last_success_at: opt_time("job_states.last_success_at", r.last_success_at)?,
            last_outcome: opt_parse("job_states.last_outcome", r.last_outcome.as_deref())?,
            consecutive_failures: count("job_states.consecutive_failures", r.consecutive_failures)?,
            secret_changed_at: opt_time("job_states.secret_changed_at", r.secret_changed_at)?,
            secret_version: r.secret_version,
            retry_at: opt_time("job_states.retry_at", r.retry_at)?,
            last_error: r.last_error,
            job: r.job,
            kind: r.kind,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    id: i64,
    job: String,
    kind: String,
    triggered_by: String,
    started_at: i64,
    finished_at: Option<i64>,
    outcome: Option<String>,
    detail: Option<String>,
    error: Option<String>,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        Ok(RunRecord {
            id: r.id,
            trigger: parse("runs.triggered_by", &r.triggered_by)?,
            started_at: time("runs.started_at", r.started_at)?,
            finished_at: opt_time("runs.finished_at", r.finished_at)?,
            outcome: opt_parse("runs.outcome", r.outcome.as_deref())?,
            job: r.job,
            kind: r.kind,
            detail: r.detail,
            error: r.error,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct LockRow {
    job: String,
    holder: String,
    acquired_at: i64,
    expires_at: i64,
}

impl TryFrom<LockRow> for LockInfo {
    type Error = StoreError;
    fn try_from(r: LockRow) -> Result<Self, StoreError> {
        Ok(LockInfo {
            acquired_at: time("job_locks.acquired_at", r.acquired_at)?,
            expires_at: time("job_locks.expires_at", r.expires_at)?,
            job: r.job,
            holder: r.holder,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RotationRow {
    id: i64,
    job: String,
    kind: String,
    step: String,
    status: String,
    detail: Option<String>,
    started_at: i64,
    updated_at: i64,
}

impl TryFrom<RotationRow> for RotationRecord {
    type Error = StoreError;
    fn try_from(r: RotationRow) -> Result<Self, StoreError> {
        Ok(RotationRecord {
            id: r.id,
            status: parse("rotations.status", &r.status)?,
            started_at: time("rotations.started_at", r.started_at)?,
            updated_at: time("rotations.updated_at", r.updated_at)?,
            job: r.job,
            kind: r.kind,
            step: r.step,
            detail: r.detail,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SnapshotRow {
    job: String,
    destination: String,
    object_key: String,
    taken_at: i64,
    size_bytes: i64,
    sha256: String,
    raft_index: Option<i64>,
    raft_term: Option<i64>,
}

impl TryFrom<SnapshotRow> for SnapshotRecord {
    type Error = StoreError;
    fn try_from(r: SnapshotRow) -> Result<Self, StoreError> {
        Ok(SnapshotRecord {
            taken_at: time("snapshots.taken_at", r.taken_at)?,
            job: r.job,
            destination: r.destination,
            key: r.object_key,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            raft_index: r.raft_index,
            raft_term: r.raft_term,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ActionRow {
    id: i64,
    job: String,
    action: String,
    payload: String,
    due_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl TryFrom<ActionRow> for ActionRecord {
    type Error = StoreError;
    fn try_from(r: ActionRow) -> Result<Self, StoreError> {
        Ok(ActionRecord {
            id: r.id,
            due_at: time("actions.due_at", r.due_at)?,
            attempts: count("actions.attempts", r.attempts)?,
            job: r.job,
            action: r.action,
            payload: r.payload,
            last_error: r.last_error,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AlertRow {
    fingerprint: String,
    name: String,
    job: String,
    severity: String,
    status: String,
    summary: String,
    details: String,
    started_at: i64,
    resolved_at: Option<i64>,
    last_notified_at: Option<i64>,
}

impl TryFrom<AlertRow> for AlertRecord {
    type Error = StoreError;
    fn try_from(r: AlertRow) -> Result<Self, StoreError> {
        Ok(AlertRecord {
            status: parse("alerts.status", &r.status)?,
            started_at: time("alerts.started_at", r.started_at)?,
            resolved_at: opt_time("alerts.resolved_at", r.resolved_at)?,
            last_notified_at: opt_time("alerts.last_notified_at", r.last_notified_at)?,
            fingerprint: r.fingerprint,
            name: r.name,
            job: r.job,
            severity: r.severity,
            summary: r.summary,
            details: r.details,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: i64,
    fingerprint: String,
    sink: String,
    kind: String,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
    summary: Option<String>,
    details: Option<String>,
}

impl TryFrom<DeliveryRow> for DeliveryRecord {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(DeliveryRecord {
            id: r.id,
            kind: parse("deliveries.kind", &r.kind)?,
            state: parse("deliveries.state", &r.state)?,
            attempts: count("deliveries.attempts", r.attempts)?,
            next_attempt_at: time("deliveries.next_attempt_at", r.next_attempt_at)?,
            created_at: time("deliveries.created_at", r.created_at)?,
            sent_at: opt_time("deliveries.sent_at", r.sent_at)?,
            fingerprint: r.fingerprint,
            sink: r.sink,
            last_error: r.last_error,
            summary: r.summary,
            details: r.details,
        })
    }
}
