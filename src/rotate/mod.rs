//! The job kinds. Each kind is one file; [`build`] is the one place where kinds are listed.
//! Shared helpers for rotations (random values, rotation metadata, policy checks for
//! `check --connect`) live here; [`protocol`] is the persisted rotation state machine (steps
//! recorded before their side effects, rolled forward after a crash), [`database`] what the
//! `postgres` and `mysql` kinds share, and [`hook`] the `on_rotate` hook.

pub mod api_key;
pub mod approle_secret_id;
pub mod database;
pub mod hook;
pub mod mysql;
pub mod postgres;
pub mod protocol;
pub mod raft_snapshot;
pub mod reminder;
pub mod vault_health;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::{Duration, JobConfig, JobSpec};
use crate::job::{Job, JobContext, JobError};
use crate::vault::KvSecret;

/// Builds a job kind's behaviour from its settings; `job_timeout` is `[engine] job_timeout`, the
/// run time limit of jobs that set no `timeout`. Errors name a kind this build lacks.
pub fn build(config: &JobConfig, job_timeout: Duration) -> Result<Arc<dyn Job>, String> {
    match &config.spec {
        JobSpec::ApiKey(c) => Ok(Arc::new(api_key::ApiKeyRotator::new(
            &config.name,
            c.clone(),
        ))),
        JobSpec::VaultHealth(c) => Ok(Arc::new(vault_health::VaultHealthCheck::new(
            &config.name,
            c.clone(),
        ))),
        JobSpec::Postgres(c) => Ok(Arc::new(postgres::PostgresRotator::new(
            &config.name,
            c.clone(),
            postgres::PostgresEngine::new(c.tls.clone()),
        ))),
        JobSpec::Mysql(c) => Ok(Arc::new(mysql::MysqlRotator::new(
            &config.name,
            c.clone(),
            mysql::MysqlEngine::new(c.account_host.as_deref(), c.tls.clone()),
        ))),
        JobSpec::ApproleSecretId(c) => Ok(Arc::new(
            approle_secret_id::ApproleSecretIdRotator::new(&config.name, c.clone()),
        )),
        JobSpec::Reminder(c) => Ok(Arc::new(reminder::KeyReminder::new(
            &config.name,
            c.clone(),
        ))),
        JobSpec::RaftSnapshot(c) => Ok(Arc::new(raft_snapshot::RaftSnapshotJob::new(
            &config.name,
            c.clone(),
            config.timeout.unwrap_or(job_timeout),
        ))),
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

/// The version a check-and-set write must name to replace `current` (what `kv_read` returned
/// for `path`). A current version that was deleted or destroyed reads as absent, yet Vault
/// refuses check-and-set 0 while the secret's metadata exists: the metadata's
/// `current_version` is the one to replace. 0 only when there is no secret at all.
pub async fn cas_version(
    ctx: &JobContext,
    path: &str,
    current: Option<&KvSecret>,
) -> Result<u64, JobError> {
    Ok(match current {
        Some(c) => c.version,
        None => ctx
            .kv
            .kv_metadata(path)
            .await?
            .map(|m| m.current_version)
            .unwrap_or(0),
    })
}

/// How many versions back [`credential_since`] looks.
const CREDENTIAL_LOOKBACK: u64 = 10;

/// When the credential in `current` (its `fields`) was first written: the `created_time` of the
/// oldest version in the unbroken run of versions, ending at `current`, that hold the same
/// values in `fields`. A version that repeats the credential — the fence written before a
/// destructive recovery step, or a hand edit of other fields — does not make it younger, so a
/// rotation that was given up after fencing stays due and is retried, instead of waiting a whole
/// `every`. Looks at most [`CREDENTIAL_LOOKBACK`] versions back; a version that cannot be read
/// (deleted, destroyed, trimmed by `max_versions`) ends the run.
pub async fn credential_since(
    ctx: &JobContext,
    path: &str,
    current: &KvSecret,
    fields: &[&str],
) -> Result<chrono::DateTime<chrono::Utc>, JobError> {
    use secrecy::ExposeSecret;
    let same = |a: &KvSecret, b: &KvSecret| {
        fields.iter().all(|f| match (a.data.get(f), b.data.get(f)) {
            (Some(x), Some(y)) => x.expose_secret() == y.expose_secret(),
            (None, None) => true,
            _ => false,
        })
    };
    let mut since = current.created_time;
    let mut version = current.version;
    while version > 1 && current.version - version < CREDENTIAL_LOOKBACK {
        match ctx.kv.kv_read_version(path, version - 1).await? {
            Some(previous) if same(&previous, current) => {
                since = previous.created_time;
                version -= 1;
            }
            _ => break,
        }
    }
    Ok(since)
}

/// Proves with `sys/capabilities-self`, writing nothing, that the session's token may do
/// `needs` (API path → capabilities such as `update`): a permanent error naming the first path
/// and capability the policy denies.
pub async fn require_capabilities(
    ctx: &JobContext,
    needs: &[(String, &[&str])],
) -> Result<(), JobError> {
    let paths: Vec<String> = needs.iter().map(|(p, _)| p.clone()).collect();
    let granted = ctx.vault.capabilities_self(&paths).await?;
    for (path, wanted) in needs {
        let have = granted.get(path).cloned().unwrap_or_default();
        if let Some(missing) = missing_capability(&have, wanted) {
            return Err(JobError::Permanent(format!(
                "permission denied: the token's policy does not allow `{missing}` on {path} (it allows: {})",
                if have.is_empty() {
                    "nothing".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// The first capability of `wanted` that `have` lacks (`root` grants all, `deny` none).
fn missing_capability<'w>(have: &[String], wanted: &[&'w str]) -> Option<&'w str> {
    if have.iter().any(|c| c == "root") {
        return None;
    }
    let denied = have.iter().any(|c| c == "deny");
    wanted
        .iter()
        .find(|w| denied || !have.iter().any(|c| c == *w))
        .copied()
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

    #[test]
    fn capability_checks() {
        let caps = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(missing_capability(&caps(&["root"]), &["update"]), None);
        assert_eq!(
            missing_capability(&caps(&["read", "update"]), &["read", "update"]),
            None
        );
        assert_eq!(
            missing_capability(&caps(&["read"]), &["read", "update"]),
            Some("update")
        );
        assert_eq!(
            missing_capability(&caps(&["deny"]), &["read"]),
            Some("read")
        );
        assert_eq!(missing_capability(&[], &["create"]), Some("create"));
    }
}
