//! Alerts that come from the passing of time rather than from a run: the engine watches the
//! persisted job states and raises or resolves
//!
//! - `RotationOverdue`, for every rotation job ([`ROTATION_KINDS`], cadence `every`): when its
//!   secret is older than `every`, pushed to the job's next `window` opening if it has one, plus
//!   a margin of a tenth of `every`, at most one day. A rotation normally happens the second it is due;
//!   the margin leaves room for retries, so the alert means "rotation is failing or blocked",
//!   not "rotation is due". A job whose secret age is unknown (never ran) is not overdue;
//!   a disabled job is never overdue.
//! - `SnapshotStale`, for `raft-snapshot` jobs: when no run succeeded since two scheduled fire
//!   times ago (plus the job's timeout). Before its first success, the count starts when the
//!   daemon started.
//!
//! It also repeats still-firing alerts every `repeat_interval`, even for jobs that run more
//! rarely than that, and at start closes alerts of jobs no longer in the config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineJob};
use crate::alert::{self, fingerprint};
use crate::config::{Duration, Schedule};
use crate::job::{AlertSignal, Cadence, Severity};
use crate::store::{JobState, StoreError};

/// The kinds that rotate a secret on an age (`every`); a reminder has its own `KeyTooOld`.
pub const ROTATION_KINDS: [&str; 4] = ["api-key", "postgres", "mysql", "approle-secret-id"];

/// The most a rotation may lag behind its due time before `RotationOverdue` fires.
const MAX_OVERDUE_MARGIN: chrono::Duration = chrono::Duration::days(1);

impl Engine {
    /// Watches until `cancel`, looking every quarter of `repeat_interval` (between 1 s and
    /// 30 s).
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let started = Utc::now();
        let known_jobs: Vec<String> = self.jobs.iter().map(|j| j.config.name.clone()).collect();
        match self
            .incidents
            .resolve_orphans(&|job| known_jobs.iter().any(|k| k == job), started)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "closed alerts of jobs no longer configured"),
            Err(e) => tracing::warn!(error = %e, "could not close alerts of removed jobs"),
        }
        let period = (self.repeat_interval.as_std() / 4)
            .clamp(StdDuration::from_secs(1), StdDuration::from_secs(30));
        let mut applied: HashMap<String, bool> = HashMap::new();
        loop {
            if let Err(e) = self.watch_once(started, Utc::now(), &mut applied).await {
                tracing::warn!(error = %e, "state store unavailable; alert watch skipped this round");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// One look: time-based alerts of every job, then the repeats. `applied` remembers the
    /// last state applied per fingerprint, so an unchanged condition costs no write.
    async fn watch_once(
        &self,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
        applied: &mut HashMap<String, bool>,
    ) -> Result<(), StoreError> {
        let states = self.store.job_states().await?;
        let states = super::by_job(&states);
        for job in &self.jobs {
            let state = states.get(job.config.name.as_str()).copied();
            let Some(signal) = self.time_signal(job, state, started, now) else {
                continue;
            };
            let fp = fingerprint(signal.name, &job.config.name);
            if applied.get(&fp) == Some(&signal.firing) {
                continue;
            }
            // Only the acting daemon raises time-based alerts: what it knows is the truth.
            self.incidents
                .apply_known(
                    &job.config.name,
                    &signal,
                    job.config.alerts.as_deref(),
                    now,
                    true,
                )
                .await?;
            applied.insert(fp, signal.firing);
        }
        let routes = |job: &str| {
            self.jobs
                .iter()
                .find(|j| j.config.name == job)
                .and_then(|j| j.config.alerts.clone())
        };
        self.incidents.repeat_firing(&routes, now).await?;
        Ok(())
    }

    fn time_signal(
        &self,
        job: &EngineJob,
        state: Option<&JobState>,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<AlertSignal> {
        let name = &job.config.name;
        match &job.cadence {
            Cadence::Age(every) if ROTATION_KINDS.contains(&job.config.kind()) => {
                let changed = state.and_then(|s| s.secret_changed_at)?;
                let at = overdue_at(changed, *every, job.config.window.as_ref())?;
                let firing = job.config.enabled && now >= at;
                Some(AlertSignal {
                    name: alert::ROTATION_OVERDUE,
                    firing,
                    severity: Severity::Warning,
                    summary: if firing {
                        format!(
                            "the secret of job {name} was written {} and is overdue for rotation (every {every})",
                            changed.to_rfc3339()
                        )
                    } else {
                        format!("the secret of job {name} is within its rotation interval again")
                    },
                    details: serde_json::json!({
                        "secret_changed_at": changed.to_rfc3339(),
                        "every": every.to_string(),
                        "overdue_at": at.to_rfc3339(),
                        "last_error": state.and_then(|s| s.last_error.clone()),
                    }),
                })
            }
            Cadence::Schedule(schedule) if job.config.kind() == "raft-snapshot" => {
                let since = state.and_then(|s| s.last_success_at).unwrap_or(started);
                let grace = job
                    .config
                    .timeout
                    .unwrap_or(self.settings.job_timeout)
                    .as_chrono();
                let at = stale_at(schedule, since)? + grace;
                let firing = job.config.enabled && now >= at;
                Some(AlertSignal {
                    name: alert::SNAPSHOT_STALE,
                    firing,
                    severity: Severity::Critical,
                    summary: if firing {
                        match state.and_then(|s| s.last_success_at) {
                            Some(t) => format!(
                                "no snapshot of job {name} has succeeded since {}",
                                t.to_rfc3339()
                            ),
                            None => format!("no snapshot of job {name} has succeeded yet"),
                        }
                    } else {
                        format!("job {name} took a snapshot again")
                    },
                    details: serde_json::json!({
                        "last_success_at": state.and_then(|s| s.last_success_at).map(|t| t.to_rfc3339()),
                        "schedule": schedule.expr(),
                        "last_error": state.and_then(|s| s.last_error.clone()),
                    }),
                })
            }
            _ => None,
        }
    }
}

/// When a secret written at `changed`, rotated `every`, becomes overdue (see the module doc).
pub fn overdue_at(
    changed: DateTime<Utc>,
    every: Duration,
    window: Option<&Schedule>,
) -> Option<DateTime<Utc>> {
    let due = changed + every.as_chrono();
    let start = match window {
        Some(w) => w.next_at_or_after(due)?,
        None => due,
    };
    let margin = (every.as_chrono() / 10).min(MAX_OVERDUE_MARGIN);
    Some(start + margin)
}

/// When a snapshot job whose last success was at `since` has missed two fire times.
pub fn stale_at(schedule: &Schedule, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_after(schedule.next_after(since)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    #[test]
    fn overdue_after_a_tenth_of_the_interval_at_most_a_day() {
        let every = Duration::from_secs(30 * 86_400);
        assert_eq!(
            overdue_at(t(1, 10, 0), every, None),
            Some(t(1, 10, 0) + chrono::Duration::days(31))
        );
        let every = Duration::from_secs(10 * 3600);
        assert_eq!(overdue_at(t(1, 10, 0), every, None), Some(t(1, 21, 0)));
        let every = Duration::from_secs(2);
        assert_eq!(
            overdue_at(t(1, 10, 0), every, None),
            Some(t(1, 10, 0) + chrono::Duration::milliseconds(2200))
        );
    }

    #[test]
    fn a_window_pushes_the_deadline_to_its_next_opening() {
        let every = Duration::from_secs(10 * 3600);
        let nightly = Schedule::parse("* * 2-3 * * *").unwrap();
        // Due at 20:00; the window opens at 02:00 next day; one hour of margin.
        assert_eq!(
            overdue_at(t(1, 10, 0), every, Some(&nightly)),
            Some(t(2, 3, 0))
        );
    }

    #[test]
    fn a_snapshot_is_stale_after_two_missed_fire_times() {
        let hourly = Schedule::parse("0 0 * * * *").unwrap();
        assert_eq!(stale_at(&hourly, t(1, 10, 5)), Some(t(1, 12, 0)));
        assert_eq!(stale_at(&hourly, t(1, 10, 0)), Some(t(1, 12, 0)));
    }
}
