//! `kind = "raft-snapshot"`: on its schedule, a raft snapshot streamed from Vault through the
//! integrity check and age into S3 and/or a local directory ([`crate::backup`] does the work),
//! then retention — only after a run that published everywhere.
//!
//! It keeps the store's snapshot records in step with what the destinations hold (the engine
//! derives `snapshot_size_bytes` and `snapshots_retained` from them) and raises its own alerts:
//! `SnapshotInvalid` at once when Vault's archive fails the check, `SnapshotStale` when a failed
//! run finds a destination's newest snapshot older than twice the schedule's interval, and
//! `SnapshotIndexRegressed` when the raft index went back (a restore, or another cluster).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::backup::pipeline::{self, Destinations, Taken};
use crate::backup::s3::S3Destination;
use crate::backup::{self, BackupError, human_size, local::LocalDestination, source};
use crate::config::{Duration, RaftSnapshotConfig};
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::store::SnapshotRecord;

/// No snapshot succeeded for twice the schedule's interval.
pub const SNAPSHOT_STALE: &str = "SnapshotStale";
/// Vault's snapshot archive failed the integrity check; nothing was published.
pub const SNAPSHOT_INVALID: &str = "SnapshotInvalid";
/// The new snapshot's raft index is lower than the previous one's.
pub const SNAPSHOT_INDEX_REGRESSED: &str = "SnapshotIndexRegressed";

/// An upload of ours that started a day ago belongs to a run that died, unless runs may last
/// that long: then twice the run time limit (see [`RaftSnapshotJob::abandoned_after`]).
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// Snapshot records read per run (enough for every retained snapshot of a job).
const HISTORY: u32 = 100_000;

/// Takes, ships and prunes raft snapshots.
pub struct RaftSnapshotJob {
    job: String,
    config: RaftSnapshotConfig,
    /// The run time limit (the job's `timeout`, else `[engine] job_timeout`).
    timeout: Duration,
    destinations: OnceCell<Destinations>,
}

impl RaftSnapshotJob {
    pub fn new(job: &str, config: RaftSnapshotConfig, timeout: Duration) -> Self {
        RaftSnapshotJob {
            job: job.to_string(),
            config,
            timeout,
            destinations: OnceCell::new(),
        }
    }

    /// How old (by its snapshot name's time) an upload of this job's must be to count as left
    /// by a dead run: a day, or twice the run time limit when that is longer, so that a live
    /// run is never cut.
    fn abandoned_after(&self) -> chrono::Duration {
        let twice = self
            .timeout
            .0
            .checked_mul(2)
            .map(chrono::Duration::from_std);
        ABANDONED_AFTER.max(twice.and_then(Result::ok).unwrap_or(chrono::Duration::MAX))
    }

    /// The job's destinations (the S3 client is built once, on first use).
    pub async fn destinations(&self) -> &Destinations {
        self.destinations
            .get_or_init(|| connect_destinations(&self.config))
            .await
    }

    fn stale_signal(&self, records: &[SnapshotRecord], now: DateTime<Utc>) -> AlertSignal {
        let interval = self
            .config
            .schedule
            .interval_near(now)
            .unwrap_or_else(|| chrono::Duration::hours(1));
        let stale = stale_destinations(records, &self.labels(), interval * 2, now);
        let firing = !stale.is_empty();
        AlertSignal {
            name: SNAPSHOT_STALE,
            firing,
            severity: Severity::Critical,
            summary: if firing {
                format!(
                    "no snapshot reached {} for more than twice the schedule's interval ({})",
                    stale
                        .iter()
                        .map(|(d, _)| *d)
                        .collect::<Vec<_>>()
                        .join(" and "),
                    crate::config::Duration::from_secs((interval * 2).num_seconds().max(0) as u64)
                )
            } else {
                "snapshots are fresh again".into()
            },
            details: serde_json::json!({
                "stale": stale.iter().map(|(d, t)| serde_json::json!({
                    "destination": d, "newest": t.to_rfc3339()
                })).collect::<Vec<_>>(),
            }),
        }
    }

    fn labels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.config.s3.is_some() {
            out.push(crate::backup::S3);
        }
        if self.config.local.is_some() {
            out.push(crate::backup::LOCAL);
        }
        out
    }

    /// Records what was published and keeps the store's records in step with the destination
    /// after pruning.
    async fn record(&self, ctx: &JobContext, taken: &Taken) -> Result<(), JobError> {
        for p in &taken.published {
            ctx.store
                .record_snapshot(&SnapshotRecord {
                    job: self.job.clone(),
                    destination: p.destination.to_string(),
                    key: p.key.clone(),
                    taken_at: taken.manifest.taken_at,
                    size_bytes: p.size as i64,
                    sha256: taken.manifest.ciphertext_sha256.clone(),
                    raft_index: Some(taken.manifest.raft_index as i64),
                    raft_term: Some(taken.manifest.raft_term as i64),
                })
                .await?;
        }
        Ok(())
    }

    /// Retention in every destination; returns "N (dest)" parts for the run's detail.
    async fn prune(&self, ctx: &JobContext, now: DateTime<Utc>) -> Result<Vec<String>, JobError> {
        let dests = self.destinations().await;
        let mut summary = Vec::new();
        for label in dests.labels() {
            let (deleted, kept) = dests
                .prune(
                    label,
                    &self.job,
                    now,
                    self.config.retain.as_chrono(),
                    self.config.min_keep as usize,
                )
                .await
                .map_err(|e| JobError::Transient(format!("retention: {e}")))?;
            let records = ctx.store.snapshots(&self.job, HISTORY).await?;
            let kept_keys: std::collections::HashSet<&str> =
                kept.iter().map(|i| i.key.as_str()).collect();
            for r in records.iter().filter(|r| r.destination == label) {
                if !kept_keys.contains(r.key.as_str()) {
                    ctx.store.delete_snapshot(&self.job, label, &r.key).await?;
                }
            }
            for item in &kept {
                let Some(m) = &item.manifest else { continue };
                ctx.store
                    .record_snapshot(&SnapshotRecord {
                        job: self.job.clone(),
                        destination: label.to_string(),
                        key: item.key.clone(),
                        taken_at: m.taken_at,
                        size_bytes: item.size as i64,
                        sha256: m.ciphertext_sha256.clone(),
                        raft_index: Some(m.raft_index as i64),
                        raft_term: Some(m.raft_term as i64),
                    })
                    .await?;
            }
            summary.push(format!(
                "{deleted} pruned from {label} ({} kept)",
                kept.len()
            ));
        }
        Ok(summary)
    }
}

/// Builds the destinations of a job's settings.
pub async fn connect_destinations(config: &RaftSnapshotConfig) -> Destinations {
    let s3 = match &config.s3 {
        Some(c) => Some(S3Destination::connect(c).await),
        None => None,
    };
    Destinations {
        s3,
        local: config.local.as_ref().map(|l| LocalDestination::new(&l.dir)),
    }
}

/// The destinations whose newest snapshot is older than `limit` (with that snapshot's time).
/// A destination without any record is left to `JobFailing`: there is nothing to be stale.
pub fn stale_destinations(
    records: &[SnapshotRecord],
    labels: &[&'static str],
    limit: chrono::Duration,
    now: DateTime<Utc>,
) -> Vec<(&'static str, DateTime<Utc>)> {
    labels
        .iter()
        .filter_map(|label| {
            let newest = records
                .iter()
                .filter(|r| r.destination == *label)
                .map(|r| r.taken_at)
                .max()?;
            (now - newest > limit).then_some((*label, newest))
        })
        .collect()
}

fn job_error(e: BackupError) -> JobError {
    match e {
        BackupError::Vault(v) => JobError::Vault(v),
        BackupError::Cancelled => JobError::Cancelled,
        other if other.is_retryable() => JobError::Transient(other.to_string()),
        other => JobError::Permanent(other.to_string()),
    }
}

fn invalid_signal(firing: bool, why: &str) -> AlertSignal {
    AlertSignal {
        name: SNAPSHOT_INVALID,
        firing,
        severity: Severity::Critical,
        summary: if firing {
            format!(
                "Vault's raft snapshot failed its integrity check; nothing was published: {why}"
            )
        } else {
            "snapshots pass their integrity check again".into()
        },
        details: serde_json::json!({ "reason": why }),
    }
}

#[async_trait]
impl Job for RaftSnapshotJob {
    fn cadence(&self) -> Cadence {
        Cadence::Schedule(self.config.schedule.clone())
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let records = ctx.store.snapshots(&self.job, 1).await?;
        Ok(Inspection {
            secret_changed_at: None,
            secret_version: None,
            summary: match records.first() {
                Some(r) => format!(
                    "newest snapshot {} taken {} (raft index {})",
                    r.key,
                    r.taken_at.to_rfc3339(),
                    r.raft_index
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "?".into())
                ),
                None => "no snapshot taken yet".into(),
            },
        })
    }

    async fn preflight(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        // Asked in the root namespace, where the snapshot request goes.
        let answer = ctx
            .vault
            .send_root(reqwest::Method::POST, "sys/capabilities-self", |r| {
                r.json(&serde_json::json!({ "paths": [source::SNAPSHOT_PATH] }))
            })
            .await?;
        let body: serde_json::Value = crate::body::json_limited(answer, crate::body::MAX_BODY)
            .await
            .map_err(|e| JobError::Transient(format!("sys/capabilities-self: {e}")))?;
        let caps: Vec<String> = body
            .get(source::SNAPSHOT_PATH)
            .or_else(|| body.get("capabilities"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        if !caps.iter().any(|c| c == "read" || c == "root") {
            return Err(JobError::Permanent(format!(
                "the token lacks `read` on {} (has: {})",
                source::SNAPSHOT_PATH,
                caps.join(", ")
            )));
        }
        let dests = self.destinations().await;
        let mut checked = Vec::new();
        if let Some(s3) = &dests.s3 {
            s3.probe().await.map_err(job_error)?;
            checked.push(s3.location(""));
        }
        if let Some(local) = &dests.local {
            let local = local.clone();
            tokio::task::spawn_blocking(move || local.probe())
                .await
                .map_err(|e| JobError::Transient(e.to_string()))?
                .map_err(job_error)?;
            checked.push(
                self.config
                    .local
                    .as_ref()
                    .map(|l| l.dir.display().to_string())
                    .unwrap_or_default(),
            );
        }
        let mut inspection = self.inspect(ctx).await?;
        inspection.summary = format!(
            "can read {}; can write {}; {}",
            source::SNAPSHOT_PATH,
            checked.join(" and "),
            inspection.summary
        );
        Ok(inspection)
    }

    async fn run(&self, ctx: &JobContext, req: RunRequest) -> Result<RunReport, JobError> {
        let dests = self.destinations().await;
        if req.dry_run {
            let targets: Vec<String> = dests
                .labels()
                .iter()
                .map(|l| dests.address(l, "vault-….snap.age").1)
                .collect();
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "would take a raft snapshot, encrypt it to {} recipient(s) and write {}",
                    self.config.recipients.len(),
                    targets.join(" and ")
                ),
                inspection: self.inspect(ctx).await?,
                alerts: vec![],
            });
        }
        let mut history = ctx.store.snapshots(&self.job, HISTORY).await?;
        let mut now = Utc::now();
        if let Some(wait) = backup::name_clash_wait(history.first().map(|r| r.taken_at), now) {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
            now = Utc::now();
        }
        let taken = pipeline::take(
            &ctx.vault,
            dests,
            &self.job,
            &self.config.recipients,
            now,
            &ctx.cancel,
        )
        .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                let mut alerts = Vec::new();
                if let BackupError::Invalid(why) = &e {
                    alerts.push(invalid_signal(true, why));
                }
                let stale = self.stale_signal(&history, Utc::now());
                if stale.firing {
                    alerts.push(stale);
                }
                return Err(JobError::WithAlerts {
                    error: Box::new(job_error(e)),
                    alerts,
                });
            }
        };
        self.record(ctx, &taken).await?;

        let mut alerts = vec![invalid_signal(false, "")];
        let previous_index = history.first().and_then(|r| r.raft_index);
        let index = taken.manifest.raft_index as i64;
        let regressed = previous_index.is_some_and(|p| p > index);
        alerts.push(AlertSignal {
            name: SNAPSHOT_INDEX_REGRESSED,
            firing: regressed,
            severity: Severity::Warning,
            summary: if regressed {
                format!(
                    "the raft index went back from {} to {index}: Vault was restored from an older snapshot, or this is another cluster",
                    previous_index.unwrap_or_default()
                )
            } else {
                "the raft index moves forward again".into()
            },
            details: serde_json::json!({ "previous": previous_index, "now": index }),
        });
        history.extend(taken.published.iter().map(|p| SnapshotRecord {
            job: self.job.clone(),
            destination: p.destination.to_string(),
            key: p.key.clone(),
            taken_at: taken.manifest.taken_at,
            size_bytes: p.size as i64,
            sha256: String::new(),
            raft_index: Some(index),
            raft_term: None,
        }));
        let stale = self.stale_signal(&history, Utc::now());
        let published = taken
            .published
            .iter()
            .map(|p| p.location.clone())
            .collect::<Vec<_>>()
            .join(" and ");
        let what = format!(
            "snapshot {} (raft index {}, {}) to {published}",
            taken.name,
            taken.manifest.raft_index,
            human_size(taken.manifest.ciphertext_size)
        );
        if !taken.failed.is_empty() {
            if stale.firing {
                alerts.push(stale);
            }
            let failures = taken
                .failed
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(JobError::WithAlerts {
                error: Box::new(JobError::Transient(format!(
                    "{failures} (published {what}; retention skipped)"
                ))),
                alerts,
            });
        }
        alerts.push(stale);
        let pruned = match self.prune(ctx, now).await {
            Ok(p) => p,
            Err(e) => {
                return Err(JobError::WithAlerts {
                    error: Box::new(JobError::Transient(format!("published {what}, but {e}"))),
                    alerts,
                });
            }
        };
        let mut detail = format!("published {what}; {}", pruned.join(", "));
        if let Some(s3) = &self.destinations().await.s3
            && let Some(cutoff) = now.checked_sub_signed(self.abandoned_after())
        {
            // Cleaning up after dead runs must not fail a good one (nor need more than a warning
            // when the credentials may not list uploads).
            match s3.abort_abandoned(cutoff).await {
                Ok(0) => {}
                Ok(n) => detail.push_str(&format!("; {n} abandoned upload(s) aborted")),
                Err(e) => {
                    tracing::warn!(job = %self.job, error = %e, "could not clean up abandoned uploads")
                }
            }
        }
        Ok(RunReport {
            work: Work::Done,
            inspection: Inspection {
                secret_changed_at: None,
                secret_version: None,
                summary: detail.clone(),
            },
            detail,
            alerts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(dest: &str, secs: i64) -> SnapshotRecord {
        SnapshotRecord {
            job: "snap".into(),
            destination: dest.into(),
            key: format!("k{secs}"),
            taken_at: DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            size_bytes: 1,
            sha256: String::new(),
            raft_index: None,
            raft_term: None,
        }
    }

    #[test]
    fn staleness_is_per_destination() {
        let now = DateTime::from_timestamp(1_800_000_000 + 10_000, 0).unwrap();
        let limit = chrono::Duration::seconds(7200);
        let records = vec![rec("s3", 100), rec("s3", 2000), rec("local", 9000)];
        let stale = stale_destinations(&records, &["s3", "local"], limit, now);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, "s3");
        assert!(stale_destinations(&records, &["local"], limit, now).is_empty());
        assert!(stale_destinations(&[], &["s3", "local"], limit, now).is_empty());
    }

    #[test]
    fn uploads_count_as_abandoned_only_after_a_day_or_twice_the_time_limit() {
        let job = |timeout: std::time::Duration| {
            let config = RaftSnapshotConfig {
                schedule: crate::config::Schedule::parse("0 0 * * * *").unwrap(),
                retain: Duration::from_secs(3600),
                min_keep: 1,
                recipients: Vec::new(),
                s3: None,
                local: None,
            };
            RaftSnapshotJob::new("snap", config, Duration(timeout))
        };
        let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
        assert_eq!(
            job(std::time::Duration::from_secs(300)).abandoned_after(),
            chrono::Duration::hours(24)
        );
        assert_eq!(
            job(hours(12)).abandoned_after(),
            chrono::Duration::hours(24)
        );
        assert_eq!(
            job(hours(30)).abandoned_after(),
            chrono::Duration::hours(60)
        );
        // A limit too long to double leaves no cutoff (no upload is ever abandoned), not a panic.
        let forever = job(std::time::Duration::MAX).abandoned_after();
        assert_eq!(forever, chrono::Duration::MAX);
        assert!(Utc::now().checked_sub_signed(forever).is_none());
    }
}
