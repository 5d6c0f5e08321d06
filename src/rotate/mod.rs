//! The job kinds. Each kind is one file; [`build`] is the one place where kinds are listed.
//! Shared helpers for rotations (random values, rotation metadata) live here.

pub mod api_key;
pub mod raft_snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::{JobConfig, JobSpec};
use crate::job::Job;

/// Builds a job kind's behaviour from its settings. Errors name a kind this build lacks.
pub fn build(config: &JobConfig) -> Result<Arc<dyn Job>, String> {
    match &config.spec {
        JobSpec::ApiKey(c) => Ok(Arc::new(api_key::ApiKeyRotator::new(
            &config.name,
            c.clone(),
        ))),
        JobSpec::RaftSnapshot(c) => Ok(Arc::new(raft_snapshot::RaftSnapshotJob::new(
            &config.name,
            c.clone(),
        ))),
        other => Err(format!(
            "kind `{}` is not implemented in this version of vault-steward",
            other.kind()
        )),
    }
}

/// The `custom_metadata` every rotated secret carries (SPEC §3), merged into what is there.
pub fn rotation_metadata(
    existing: &BTreeMap<String, String>,
    job: &str,
    at: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let mut md = existing.clone();
    md.insert("rotated_by".into(), "vault-steward".into());
    md.insert("rotation_job".into(), job.into());
    md.insert(
        "rotated_at".into(),
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keeps_foreign_keys_and_sets_ours() {
        let mut existing = BTreeMap::new();
        existing.insert("owner".to_string(), "team-a".to_string());
        existing.insert("rotated_by".to_string(), "someone".to_string());
        let at = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let md = rotation_metadata(&existing, "k1", at);
        assert_eq!(md["owner"], "team-a");
        assert_eq!(md["rotated_by"], "vault-steward");
        assert_eq!(md["rotation_job"], "k1");
        assert_eq!(md["rotated_at"], "2026-11-28T12:00:00Z");
    }
}
