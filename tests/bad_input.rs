//! Bad input against the real OpenBao: a path outside any KV v2 mount, a policy that denies the
//! write, an AppRole role that does not exist. Each is a clear error in `check --connect` (proved
//! without writing, through `sys/capabilities-self`) and in the run record (`status --json`), and
//! nothing is written anywhere.

mod common;

use std::time::Duration;

use common::daemon::DaemonConfig;
use common::vault::RootVault;
use common::{unique, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_input_is_a_clear_error_in_check_and_in_the_run_record_and_nothing_is_written() {
    let vault = RootVault::new();
    let prefix = unique("bad");
    // A KV version 1 mount: not where api-key can keep versions.
    let v1 = unique("kvone");
    vault
        .enable_mount(
            &v1,
            serde_json::json!({ "type": "kv", "options": { "version": "1" } }),
        )
        .await;
    let v1_path = format!("{v1}/api-key");
    let ro_path = format!("secret/{prefix}/readonly/api-key");
    let role = unique("nosuchrole");
    let role_path = format!("secret/{prefix}/svc/credentials");
    let policy = unique("bad-input");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"
path "{v1}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/data/{prefix}/readonly/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/readonly/*" {{ capabilities = ["read"] }}
path "secret/data/{prefix}/svc/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/svc/*" {{ capabilities = ["create", "read", "update"] }}
path "auth/approle/role/{role}/*" {{ capabilities = ["create", "read", "update"] }}
"#
            ),
        )
        .await;
    let token = vault.create_token(&[&policy], "1h").await;
    let jobs = format!(
        r#"[[job]]
name = "not-kv2"
kind = "api-key"
path = "{v1_path}"
every = "30d"

[[job]]
name = "denied"
kind = "api-key"
path = "{ro_path}"
every = "30d"

[[job]]
name = "no-role"
kind = "approle-secret-id"
role = "{role}"
path = "{role_path}"
every = "30d"
grace = "1h"
"#
    );
    let cfg = DaemonConfig::new(&token, &jobs);

    let (st, out, err) = cfg.cli(&["check", "--connect"]);
    eprintln!("check --connect:\n{out}");
    assert_eq!(st.code(), Some(1), "check --connect fails: {out}{err}");
    let line = |job: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("job {job}: ")))
            .unwrap_or_else(|| panic!("no line for {job} in\n{out}"))
            .to_string()
    };
    let not_kv2 = line("not-kv2");
    assert!(not_kv2.contains("FAILED"), "{not_kv2}");
    assert!(not_kv2.contains("not inside a KV v2 mount"), "{not_kv2}");
    assert!(not_kv2.contains(&v1_path), "{not_kv2}");
    let denied = line("denied");
    assert!(denied.contains("FAILED"), "{denied}");
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(
        denied.contains(&format!("secret/data/{prefix}/readonly/api-key")),
        "names the API path: {denied}"
    );
    assert!(
        denied.contains("`create`"),
        "names the missing capability: {denied}"
    );
    let no_role = line("no-role");
    assert!(no_role.contains("FAILED"), "{no_role}");
    assert!(
        no_role.contains(&format!("AppRole role `{role}` does not exist")),
        "{no_role}"
    );

    // The daemon: each job fails its run with the same kind of message.
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(
        Duration::from_secs(15),
        "a failed run of each job",
        || async {
            let m = d.metrics().await;
            ["not-kv2", "denied", "no-role"].iter().all(|j| {
                m.lines().any(|l| {
                    l.starts_with(&format!("vault_steward_job_runs_total{{job=\"{j}\""))
                        && l.contains("outcome=\"failure\"")
                        && !l.ends_with(" 0")
                })
            })
        },
    )
    .await;
    let (st, out, err) = cfg.cli(&["status", "--json"]);
    assert!(st.success(), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last_error = |job: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["job"] == job)
            .and_then(|r| r["last_error"].as_str())
            .unwrap_or_else(|| panic!("no last_error for {job}: {out}"))
            .to_string()
    };
    let e = last_error("not-kv2");
    assert!(e.contains("not inside a KV v2 mount"), "{e}");
    let e = last_error("denied");
    assert!(e.contains("permission denied"), "{e}");
    let e = last_error("no-role");
    assert!(
        e.contains(&format!("AppRole role `{role}` does not exist")),
        "{e}"
    );
    d.terminate(Duration::from_secs(15)).await;

    // Nothing written: no KV v1 value, no version, no role.
    let (status, _) = vault
        .call(reqwest::Method::GET, &format!("{v1}/api-key"), None)
        .await;
    assert_eq!(status, 404, "nothing in the KV v1 mount");
    assert_eq!(vault.current_version(&ro_path).await, 0);
    assert_eq!(vault.current_version(&role_path).await, 0);
    let (status, _) = vault
        .call(
            reqwest::Method::GET,
            &format!("auth/approle/role/{role}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "the unknown role was not created");
    vault.disable_mount(&v1).await;
}
