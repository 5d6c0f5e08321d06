//! The daemon's Vault login over time, end to end: with AppRole tokens that live only a few
//! seconds it stays authenticated across many TTLs and max TTLs (renewing, then logging in again),
//! and when its token is revoked under it, it logs in again and carries on — no run fails.

mod common;

use std::time::Duration;

use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{unique, wait_until};
use serde_json::json;

/// Revokes every token the AppRole `role` has issued (root looks them up by accessor).
async fn revoke_role_tokens(vault: &RootVault, role: &str) -> usize {
    let (status, body) = vault
        .call(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            "auth/token/accessors",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut revoked = 0;
    for accessor in body["data"]["keys"].as_array().unwrap() {
        let accessor = accessor.as_str().unwrap();
        let (status, info) = vault
            .call(
                reqwest::Method::POST,
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await;
        if status == 200 && info["data"]["meta"]["role_name"] == role {
            vault.revoke_accessor(accessor).await;
            revoked += 1;
        }
    }
    revoked
}

fn failures(metrics: &str, job: &str) -> u64 {
    let series =
        format!(r#"vault_steward_job_runs_total{{job="{job}",kind="api-key",outcome="failure"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_approle_tokens_and_revocation_do_not_interrupt_rotations() {
    let vault = RootVault::new();
    let prefix = unique("auth");
    let path = format!("secret/{prefix}/api-key");
    let policy = unique("steward");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}"#
            ),
        )
        .await;
    let role = unique("role");
    let (role_id, secret_id) = vault
        .approle(
            &role,
            json!({ "token_policies": [policy], "token_ttl": "3s", "token_max_ttl": "6s" }),
        )
        .await;
    let job = format!(
        "[[job]]\nname = \"auth\"\nkind = \"api-key\"\npath = \"{path}\"\nevery = \"2s\"\nformat = \"hex:16\"\n"
    );
    let cfg = DaemonConfig::approle(&role_id, &secret_id, &job);
    let mut d = cfg.start(&[]);
    d.ready().await;

    // Three max TTLs (each token dies after 6 s at the latest): rotations continue all along.
    // A version is due 2 s after the last one and the engine ticks on whole seconds, so one
    // rotation comes every 2-3 s: at least 5 in 18 s whatever the phase.
    let start = vault.current_version(&path).await;
    tokio::time::sleep(Duration::from_secs(18)).await;
    let after_ttls = vault.current_version(&path).await;
    assert!(
        after_ttls >= start + 5,
        "only {start} -> {after_ttls} versions in 18 s"
    );
    assert_eq!(failures(&d.metrics().await, "auth"), 0, "{}", d.log());
    assert_eq!(reqwest::get(d.url("/readyz")).await.unwrap().status(), 200);

    // Revoke the daemon's token(s) under it: it logs in again and carries on.
    let revoked = revoke_role_tokens(&vault, &role).await;
    assert!(revoked >= 1, "the daemon had a live token");
    let before = vault.current_version(&path).await;
    wait_until(
        Duration::from_secs(15),
        "rotations after the revocation",
        || async { vault.current_version(&path).await >= before + 2 },
    )
    .await;
    assert_eq!(failures(&d.metrics().await, "auth"), 0, "{}", d.log());
    d.terminate(Duration::from_secs(15)).await;

    let last = vault.current_version(&path).await;
    for v in 1..=last {
        if let Some(kv) = vault.kv_get_version(&path, Some(v)).await {
            record_canaries([kv.data["api_key"].as_str().unwrap()]);
        }
    }
    record_canaries([secret_id.as_str()]);
}
