//! `kind = "reminder"`: a key vault-steward cannot rotate itself (a third-party LLM provider key,
//! rotated by hand in the provider's console and then with `vault kv put`). It never writes:
//! every `check_every` it reads the current KV version's `created_time`, which feeds
//! `secret_age_seconds`, and raises `KeyTooOld` while that version is older than `max_age`. The
//! alert resolves at the first check after someone writes a new version.
//!
//! It reads the secret's metadata only (`created_time` of the current version), never its value.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::ReminderConfig;
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::vault::KvMetadata;

/// Alert raised while the watched key is older than `max_age`.
pub const KEY_TOO_OLD: &str = "KeyTooOld";

/// Watches one hand-rotated key.
pub struct KeyReminder {
    job: String,
    config: ReminderConfig,
}

/// The current version of a secret, from its metadata.
struct Current {
    version: u64,
    created_time: DateTime<Utc>,
}

impl KeyReminder {
    pub fn new(job: &str, config: ReminderConfig) -> Self {
        KeyReminder {
            job: job.to_string(),
            config,
        }
    }

    /// The live current version: `None` when there is no secret or its current version is
    /// deleted or destroyed (nothing a consumer could read).
    async fn current(&self, ctx: &JobContext) -> Result<Option<Current>, JobError> {
        let Some(md) = ctx.vault.kv_metadata(&self.config.path).await? else {
            return Ok(None);
        };
        Ok(current_of(&md))
    }

    fn missing(&self) -> JobError {
        JobError::Permanent(format!(
            "no readable secret at {}: write the key with `vault kv put` first",
            self.config.path
        ))
    }

    fn inspection(&self, cur: &Current, now: DateTime<Utc>) -> Inspection {
        Inspection {
            secret_changed_at: Some(cur.created_time),
            secret_version: Some(cur.version as i64),
            summary: format!(
                "{} version {} is {} old (max_age {})",
                self.config.path,
                cur.version,
                crate::engine::view::short_age((now - cur.created_time).num_seconds()),
                self.config.max_age
            ),
        }
    }

    fn signal(&self, cur: &Current, now: DateTime<Utc>) -> AlertSignal {
        let age = (now - cur.created_time).num_seconds().max(0);
        let firing = now - cur.created_time > self.config.max_age.as_chrono();
        AlertSignal {
            name: KEY_TOO_OLD,
            firing,
            severity: Severity::Warning,
            summary: if firing {
                format!(
                    "{} is {} old (older than max_age {}): rotate it with the provider, then `vault kv put` the new key",
                    self.config.path,
                    crate::engine::view::short_age(age),
                    self.config.max_age
                )
            } else {
                format!(
                    "{} was rotated (version {} is {} old)",
                    self.config.path,
                    cur.version,
                    crate::engine::view::short_age(age)
                )
            },
            details: serde_json::json!({
                "job": self.job,
                "path": self.config.path,
                "version": cur.version,
                "created_time": cur.created_time.to_rfc3339(),
                "age_seconds": age,
                "max_age_seconds": self.config.max_age.as_std().as_secs(),
            }),
        }
    }
}

fn current_of(md: &KvMetadata) -> Option<Current> {
    let v = md.versions.get(&md.current_version)?;
    (!v.destroyed && v.deletion_time.is_none()).then_some(Current {
        version: md.current_version,
        created_time: v.created_time,
    })
}

#[async_trait]
impl Job for KeyReminder {
    fn cadence(&self) -> Cadence {
        Cadence::Interval(self.config.check_every)
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let cur = self.current(ctx).await?.ok_or_else(|| self.missing())?;
        Ok(self.inspection(&cur, Utc::now()))
    }

    async fn run(&self, ctx: &JobContext, _req: RunRequest) -> Result<RunReport, JobError> {
        let cur = self.current(ctx).await?.ok_or_else(|| self.missing())?;
        let now = Utc::now();
        let signal = self.signal(&cur, now);
        let inspection = self.inspection(&cur, now);
        Ok(RunReport {
            work: Work::Done,
            detail: if signal.firing {
                format!("{}: too old", inspection.summary)
            } else {
                inspection.summary.clone()
            },
            inspection,
            alerts: vec![signal],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;
    use std::collections::BTreeMap;

    fn reminder(max_age_secs: u64) -> KeyReminder {
        KeyReminder::new(
            "r",
            ReminderConfig {
                path: "secret/llm-api-key/openai".into(),
                max_age: Duration::from_secs(max_age_secs),
                check_every: Duration::from_secs(3600),
            },
        )
    }

    #[test]
    fn fires_only_past_max_age() {
        let now = Utc::now();
        let r = reminder(30 * 86_400);
        let young = Current {
            version: 3,
            created_time: now - chrono::Duration::days(29),
        };
        let old = Current {
            version: 3,
            created_time: now - chrono::Duration::days(31),
        };
        assert!(!r.signal(&young, now).firing);
        let s = r.signal(&old, now);
        assert!(s.firing);
        assert_eq!(s.name, KEY_TOO_OLD);
        assert_eq!(s.details["age_seconds"], 31 * 86_400);
    }

    #[test]
    fn a_deleted_current_version_is_not_current() {
        let t = Utc::now();
        let mut versions = BTreeMap::new();
        versions.insert(
            2,
            crate::vault::KvVersionMeta {
                created_time: t,
                deletion_time: Some(t),
                destroyed: false,
            },
        );
        let md = KvMetadata {
            current_version: 2,
            oldest_version: 1,
            created_time: t,
            updated_time: t,
            custom_metadata: BTreeMap::new(),
            versions,
        };
        assert!(current_of(&md).is_none());
    }
}
