//! Read-only views of the jobs for `status` and `plan`: computed from the configuration, the
//! state store and (for `plan`) a look at each target, never changing anything.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::EngineJob;
use super::due::{gating_window, is_due, next_due};
use crate::job::JobContext;
use crate::store::{JobState, Store};
use crate::vault::VaultSession;

/// One row of `status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusRow {
    pub job: String,
    pub kind: String,
    /// `disabled`, `never-run`, `ok`, `due`, `retrying` or `failing`.
    pub state: String,
    pub last_success: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    pub secret_version: Option<i64>,
    pub secret_age_seconds: Option<i64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// The status of every job, from persisted state alone; `open` names the jobs with a rotation
/// open (see [`open_rotation_jobs`]).
pub fn status_rows(
    jobs: &[Arc<EngineJob>],
    states: &[JobState],
    open: &HashSet<String>,
    failures_before_alert: u32,
    now: DateTime<Utc>,
) -> Vec<StatusRow> {
    let states = super::by_job(states);
    jobs.iter()
        .map(|job| {
            let state = states.get(job.config.name.as_str()).copied();
            let window = gating_window(job.config.window.as_ref(), open.contains(&job.config.name));
            let next = next_due(&job.cadence, window, state, now);
            let failures = state.map(|s| s.consecutive_failures).unwrap_or(0);
            let label = match state {
                _ if !job.config.enabled => "disabled",
                None => "never-run",
                Some(_) if failures >= failures_before_alert.max(1) => "failing",
                Some(_) if failures > 0 => "retrying",
                Some(_) if is_due(next, now) => "due",
                Some(_) => "ok",
            };
            StatusRow {
                job: job.config.name.clone(),
                kind: job.config.kind().to_string(),
                state: label.to_string(),
                last_success: state.and_then(|s| s.last_success_at),
                next_due: next,
                secret_version: state.and_then(|s| s.secret_version),
                secret_age_seconds: state
                    .and_then(|s| s.secret_changed_at)
                    .map(|t| (now - t).num_seconds().max(0)),
                consecutive_failures: failures,
                last_error: state.and_then(|s| s.last_error.clone()),
            }
        })
        .collect()
}

/// One row of `plan`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanRow {
    pub job: String,
    pub kind: String,
    /// What the daemon would do now.
    pub now: String,
    pub next_due: Option<DateTime<Utc>>,
    /// What the target looks like (or why it could not be looked at).
    pub target: String,
}

/// The jobs that have a rotation open (none when the store cannot say).
pub async fn open_rotation_jobs(store: &Arc<dyn Store>) -> HashSet<String> {
    match store.open_rotations(None).await {
        Ok(open) => open.into_iter().map(|r| r.job).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open rotations");
            HashSet::new()
        }
    }
}

/// What would happen now and when next, for every job; looks at each target read-only.
pub async fn plan_rows(
    jobs: &[Arc<EngineJob>],
    store: &Arc<dyn Store>,
    vault: &Arc<VaultSession>,
    now: DateTime<Utc>,
) -> Vec<PlanRow> {
    let open = open_rotation_jobs(store).await;
    let all_states = store.job_states().await.unwrap_or_default();
    let states = super::by_job(&all_states);
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let ctx = JobContext {
            job: job.config.name.clone(),
            vault: vault.clone(),
            kv: vault.clone(),
            approle: vault.clone(),
            store: store.clone(),
            cancel: CancellationToken::new(),
            secret_recorded: true,
        };
        let mut state = states.get(job.config.name.as_str()).map(|s| (*s).clone());
        let target = match job.job.inspect(&ctx).await {
            Ok(inspection) => {
                // The target's truth wins over what the store last saw.
                if inspection.secret_changed_at.is_some() {
                    let s = state.get_or_insert_with(JobState::default);
                    s.secret_changed_at = inspection.secret_changed_at;
                    s.secret_version = inspection.secret_version;
                }
                inspection.summary
            }
            Err(e) => format!("cannot inspect: {e}"),
        };
        let window = gating_window(job.config.window.as_ref(), open.contains(&job.config.name));
        let next = next_due(&job.cadence, window, state.as_ref(), now);
        let action = if !job.config.enabled {
            "nothing (disabled)".to_string()
        } else if is_due(next, now) {
            match job.config.kind() {
                "reminder" | "vault-health" => "check now".to_string(),
                "raft-snapshot" => "snapshot now".to_string(),
                _ => "rotate now".to_string(),
            }
        } else {
            "nothing now".to_string()
        };
        rows.push(PlanRow {
            job: job.config.name.clone(),
            kind: job.config.kind().to_string(),
            now: action,
            next_due: next,
            target,
        });
    }
    rows
}

/// Formats seconds as a short age (`3d4h`, `15m`, `42s`).
pub fn short_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ages() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(125), "2m5s");
        assert_eq!(short_age(7260), "2h1m");
        assert_eq!(short_age(90_000), "1d1h");
        assert_eq!(short_age(-3), "0s");
    }
}
