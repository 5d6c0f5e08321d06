//! `reminder` against the real OpenBao: it changes nothing, exports `secret_age_seconds`, raises
//! `KeyTooOld` once the key is older than `max_age`, and resolves it after a hand-written version.
//! The incident is checked in the state store (delivery to email/webhooks is the sinks' business).

mod common;

use std::time::Duration;

use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{unique, wait_until};
use vault_steward::store::AlertStatus;

#[tokio::test(flavor = "multi_thread")]
async fn key_too_old_fires_then_resolves_after_a_hand_written_version() {
    let vault = RootVault::new();
    let prefix = unique("remind");
    let path = format!("secret/{prefix}/openai");
    let first = unique("sk-first");
    vault
        .kv_put(&path, serde_json::json!({ "api_key": first }))
        .await;
    record_canaries([first.as_str()]);
    // Read-only on the metadata: a reminder needs nothing more.
    let policy = unique("remind-ro");
    vault
        .put_policy(
            &policy,
            &format!(r#"path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}"#),
        )
        .await;
    let token = vault.create_token(&[&policy], "1h").await;
    let name = "llm-openai";
    let cfg = DaemonConfig::new(
        &token,
        &format!(
            r#"[[job]]
name = "{name}"
kind = "reminder"
path = "{path}"
max_age = "2s"
check_every = "1s"
"#
        ),
    );
    let mut d = cfg.start(&[]);
    d.ready().await;
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .unwrap();
    let fp = vault_steward::alert::fingerprint("KeyTooOld", name);

    wait_until(Duration::from_secs(15), "KeyTooOld firing", || async {
        store
            .alert(&fp)
            .await
            .unwrap()
            .is_some_and(|a| a.status == AlertStatus::Firing)
    })
    .await;
    let alert = store.alert(&fp).await.unwrap().unwrap();
    assert_eq!(alert.name, "KeyTooOld");
    assert_eq!(alert.job, name);
    assert!(alert.summary.contains(&path), "{}", alert.summary);
    let details: serde_json::Value = serde_json::from_str(&alert.details).unwrap();
    assert_eq!(details["version"], 1);
    assert!(details["age_seconds"].as_i64().unwrap() >= 2);
    assert!(
        store
            .firing_alerts()
            .await
            .unwrap()
            .iter()
            .any(|a| a.fingerprint == fp),
        "listed among firing alerts"
    );
    let metrics = d.metrics().await;
    let age: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                r#"vault_steward_secret_age_seconds{{job="{name}"}} "#
            ))
        })
        .expect("secret_age_seconds")
        .parse()
        .unwrap();
    assert!(age >= 2.0, "age {age}");

    // Someone rotates the key by hand: the next check resolves the incident.
    let second = unique("sk-second");
    vault
        .kv_put(&path, serde_json::json!({ "api_key": second }))
        .await;
    record_canaries([second.as_str()]);
    wait_until(Duration::from_secs(10), "KeyTooOld resolved", || async {
        store
            .alert(&fp)
            .await
            .unwrap()
            .is_some_and(|a| a.status == AlertStatus::Resolved)
    })
    .await;
    let resolved = store.alert(&fp).await.unwrap().unwrap();
    assert!(resolved.resolved_at.is_some());
    assert_eq!(resolved.started_at, alert.started_at, "same incident");
    // A reminder never writes.
    assert_eq!(vault.current_version(&path).await, 2);
    // And it fires again once the new version is too old in turn.
    wait_until(
        Duration::from_secs(10),
        "KeyTooOld firing again",
        || async {
            store
                .alert(&fp)
                .await
                .unwrap()
                .is_some_and(|a| a.status == AlertStatus::Firing)
        },
    )
    .await;
    assert_eq!(vault.current_version(&path).await, 2);
    d.terminate(Duration::from_secs(15)).await;
}
