//! `approle-secret-id` against the real OpenBao: a rotated secret-id logs in, the previous one is
//! refused once `grace` has passed — also when the daemon was stopped in between (the pending
//! destruction lives in the state store) — and a hand-written version during a rotation is not
//! overwritten (the unused new secret-id is destroyed).

mod common;

use std::time::Duration;

use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{unique, wait_until};
use serde_json::json;

/// A token that may manage `role`'s secret-ids and write `secret/<prefix>/*`.
async fn steward_token(vault: &RootVault, prefix: &str, role: &str) -> String {
    let policy = unique("approle-steward");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"
path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "auth/approle/role/{role}/role-id" {{ capabilities = ["read"] }}
path "auth/approle/role/{role}/secret-id" {{ capabilities = ["update", "list"] }}
path "auth/approle/role/{role}/secret-id/lookup" {{ capabilities = ["update"] }}
path "auth/approle/role/{role}/secret-id-accessor/*" {{ capabilities = ["update"] }}
"#
            ),
        )
        .await;
    vault.create_token(&[&policy], "1h").await
}

fn job(name: &str, role: &str, path: &str, every: &str, grace: &str) -> String {
    format!(
        r#"[[job]]
name = "{name}"
kind = "approle-secret-id"
role = "{role}"
path = "{path}"
every = "{every}"
grace = "{grace}"
"#
    )
}

/// Whether AppRole login with these credentials succeeds.
async fn logs_in(vault: &RootVault, role_id: &str, secret_id: &str) -> bool {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/auth/approle/login", vault.addr))
        .json(&json!({ "role_id": role_id, "secret_id": secret_id }))
        .send()
        .await
        .expect("login request");
    let ok = resp.status().is_success();
    if ok {
        // Do not leave the test's tokens lying around.
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if let Some(acc) = body["auth"]["accessor"].as_str() {
            vault.revoke_accessor(acc).await;
        }
    }
    ok
}

struct Creds {
    role_id: String,
    secret_id: String,
    accessor: String,
}

async fn creds(vault: &RootVault, path: &str, version: u64) -> Creds {
    let kv = vault
        .kv_get_version(path, Some(version))
        .await
        .expect("version");
    let get = |k: &str| {
        kv.data[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}"))
            .to_string()
    };
    let c = Creds {
        role_id: get("role_id"),
        secret_id: get("secret_id"),
        accessor: get("secret_id_accessor"),
    };
    record_canaries([c.secret_id.as_str()]);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn old_secret_id_is_destroyed_after_grace_even_across_a_restart() {
    let vault = RootVault::new();
    let prefix = unique("approle");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-secret-id";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "1h", "6s"));

    // First run: nothing in KV yet, so a secret-id is issued and stored with the role-id.
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(15), "the first secret-id", || async {
        vault.current_version(&path).await == 1
    })
    .await;
    let first = creds(&vault, &path, 1).await;
    assert!(logs_in(&vault, &first.role_id, &first.secret_id).await);
    let md = vault.kv_metadata(&path).await.expect("metadata");
    assert_eq!(md["custom_metadata"]["rotated_by"], "vault-steward");
    assert_eq!(md["custom_metadata"]["rotation_job"], name);

    // An emergency rotation from the CLI while the daemon runs.
    let (st, out, err) = cfg.cli(&["rotate", name]);
    assert!(st.success(), "rotate: {out}{err}");
    let rotated_at = std::time::Instant::now();
    assert!(out.contains("destroyed at"), "{out}");
    let second = creds(&vault, &path, 2).await;
    assert_eq!(second.role_id, first.role_id);
    assert_ne!(second.accessor, first.accessor);
    assert!(logs_in(&vault, &second.role_id, &second.secret_id).await);
    // Within grace the old one still works: consumers have time to pick up the new one.
    assert!(
        logs_in(&vault, &first.role_id, &first.secret_id).await,
        "the old secret-id must work during grace"
    );

    // Stop the daemon before grace ends and keep it down past the end of grace.
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{}", d.log());
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .expect("state store");
    let pending = store.pending_actions(name).await.expect("pending actions");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].action, "destroy-secret-id");
    assert!(pending[0].payload.contains(&first.accessor));
    assert!(
        !pending[0].payload.contains(&first.secret_id),
        "the store never holds a secret-id"
    );
    while rotated_at.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        logs_in(&vault, &first.role_id, &first.secret_id).await,
        "nobody destroyed it while the daemon was down"
    );

    // The restarted daemon finds the overdue destruction in the store and carries it out.
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(
        Duration::from_secs(15),
        "the old secret-id refused",
        || async { !logs_in(&vault, &first.role_id, &first.secret_id).await },
    )
    .await;
    assert!(logs_in(&vault, &second.role_id, &second.secret_id).await);
    wait_until(Duration::from_secs(5), "the action marked done", || async {
        store.pending_actions(name).await.unwrap().is_empty()
    })
    .await;
    // Not rotated again by the restart (age 2 versions old < every).
    assert_eq!(vault.current_version(&path).await, 2);
    d.terminate(Duration::from_secs(15)).await;
    assert!(!d.log().contains(&second.secret_id));
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_hand_written_version_during_rotation_wins_and_the_unused_secret_id_is_destroyed() {
    let vault = RootVault::new();
    let prefix = unique("approle-cas");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    let (role_id, hand_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([hand_secret_id.as_str()]);
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-cas";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "1h", "5s"));
    let fp_dir = tempfile::tempdir().unwrap();
    let fp_dir_s = fp_dir.path().to_str().unwrap().to_string();
    let mut d = cfg.start(&[
        ("VAULT_STEWARD_FAILPOINT", "approle-before-write:pause"),
        ("VAULT_STEWARD_FAILPOINT_DIR", &fp_dir_s),
    ]);
    d.ready().await;
    let reached = fp_dir.path().join("approle-before-write.reached");
    wait_until(Duration::from_secs(15), "the rotation to pause", || async {
        reached.exists()
    })
    .await;
    // The secret-id the daemon just issued, before the daemon writes it.
    let (_, list) = vault
        .call(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )
        .await;
    let accessors: Vec<String> = list["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(accessors.len(), 2, "the hand-made one and the daemon's");
    vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": hand_secret_id }),
        )
        .await;
    std::fs::write(fp_dir.path().join("approle-before-write.resume"), b"").unwrap();
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .unwrap();
    let fp = vault_steward::alert::fingerprint("ConcurrentWrite", name);
    wait_until(Duration::from_secs(15), "ConcurrentWrite", || async {
        store
            .alert(&fp)
            .await
            .unwrap()
            .is_some_and(|a| a.status == vault_steward::store::AlertStatus::Firing)
    })
    .await;
    // The hand-written version stays; the daemon's unused secret-id is gone.
    let kv = vault.kv_get(&path).await.unwrap();
    assert_eq!(kv.version, 1);
    assert_eq!(kv.data["secret_id"], hand_secret_id.as_str());
    assert!(logs_in(&vault, &role_id, &hand_secret_id).await);
    let (_, list) = vault
        .call(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )
        .await;
    assert_eq!(
        list["data"]["keys"].as_array().map(Vec::len),
        Some(1),
        "only the hand-made secret-id is left: {list}"
    );
    d.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_id_put_in_kv_by_hand_is_adopted_and_destroyed_after_the_first_rotation() {
    let vault = RootVault::new();
    let prefix = unique("approle-adopt");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    // Set up by hand the way the deployment guide does it: no accessor stored.
    let (role_id, hand_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([hand_secret_id.as_str()]);
    vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": hand_secret_id, "owner": "team-b" }),
        )
        .await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-adopt";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "1h", "2s"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    // Fresh, so not rotated on start; an emergency rotation replaces it.
    let (st, out, err) = cfg.cli(&["rotate", name]);
    assert!(st.success(), "{out}{err}");
    let new = creds(&vault, &path, 2).await;
    let kv = vault.kv_get(&path).await.unwrap();
    assert_eq!(kv.data["owner"], "team-b", "other fields are kept");
    assert!(logs_in(&vault, &new.role_id, &new.secret_id).await);
    wait_until(
        Duration::from_secs(15),
        "the hand-made secret-id refused",
        || async { !logs_in(&vault, &role_id, &hand_secret_id).await },
    )
    .await;
    assert!(logs_in(&vault, &new.role_id, &new.secret_id).await);
    d.terminate(Duration::from_secs(15)).await;
}

/// The accessors of `role`'s live secret-ids.
async fn accessors(vault: &RootVault, role: &str) -> Vec<String> {
    let (_, list) = vault
        .call(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            &format!("auth/approle/role/{role}/secret-id"),
            None,
        )
        .await;
    list["data"]["keys"]
        .as_array()
        .map(|a| a.iter().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn killed_after_issuing_the_restart_destroys_the_orphan_and_rotates() {
    let vault = RootVault::new();
    let prefix = unique("approle-crash");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    vault
        .ok(
            reqwest::Method::POST,
            &format!("auth/approle/role/{role}"),
            Some(json!({ "token_ttl": "5m" })),
        )
        .await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-crash";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "1h", "1m"));
    // Dies after Vault issued the secret-id, before it reached KV.
    let mut d = cfg.start(&[("VAULT_STEWARD_FAILPOINT", "approle-after-issue")]);
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success());
    assert_eq!(vault.current_version(&path).await, 0);
    let orphan = accessors(&vault, &role).await;
    assert_eq!(orphan.len(), 1, "one secret-id nobody knows");

    let mut d = cfg.start(&[]);
    d.ready().await;
    // Version 1 is the fence (an empty version: nothing was there), written before the orphan
    // is destroyed so that the crashed rotation's write could no longer land; 2 is the rotation.
    wait_until(Duration::from_secs(15), "the resumed rotation", || async {
        vault.current_version(&path).await == 2
    })
    .await;
    let stored = creds(&vault, &path, 2).await;
    assert_ne!(stored.accessor, orphan[0]);
    assert_eq!(
        accessors(&vault, &role).await,
        vec![stored.accessor.clone()],
        "the orphan is destroyed, only the stored secret-id is left"
    );
    assert!(logs_in(&vault, &stored.role_id, &stored.secret_id).await);
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .unwrap();
    assert!(store.open_rotations(Some(name)).await.unwrap().is_empty());
    d.terminate(Duration::from_secs(15)).await;
}

/// Sends a signal to `pid` with `kill`.
#[cfg(feature = "failpoints")]
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Issue 13 item 4 (review M3), a stale writer, with two processes on one state store.
///
/// A (`rotate`, an emergency rotation) issues a new secret-id, records step `write` and sends
/// its KV write with check-and-set on the version it read — and the write stays in flight:
/// A talks to Vault through a proxy that holds it, and A is frozen (SIGSTOP, as a paused VM).
/// Its job lock runs out. B (`rotate` too) takes the lock, resumes the half-finished rotation —
/// A's secret-id never reached KV, so B destroys it — and then dies before its own KV write
/// (the failpoint `approle-after-issue`): B does not overwrite KV, which would hide the race.
/// Then A's write arrives. Before the fix B's recovery left the KV version as A read it, A's
/// check-and-set matched, and KV held a destroyed secret-id: every consumer locked out, no
/// alert, until `every` passes. The fix: before any destructive recovery step, write KV with
/// check-and-set, so that the stale write must fail. At the end KV's secret-id logs in.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_kv_write_landing_after_another_process_resumed_cannot_publish_a_destroyed_secret_id()
 {
    use common::proxy::Proxy;

    let vault = RootVault::new();
    let prefix = unique("approle-stale");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    let (role_id, first_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([first_secret_id.as_str()]);
    vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": first_secret_id }),
        )
        .await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-stale";
    // Young KV and a long grace: nothing but the two `rotate`s acts during the test.
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "2h", "1h"));
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .unwrap();

    // A: the same config and store, but Vault through the proxy.
    let vault_url = url::Url::parse(&vault.addr).unwrap();
    let proxy = Proxy::start(format!(
        "{}:{}",
        vault_url.host_str().unwrap(),
        vault_url.port().unwrap()
    ))
    .await;
    let a_config = cfg.dir.path().join("steward-a.toml");
    let text = std::fs::read_to_string(cfg.path()).unwrap();
    let address = format!("address = \"{}\"", vault.addr);
    assert!(text.contains(&address));
    std::fs::write(
        &a_config,
        text.replace(
            &address,
            &format!("address = \"http://127.0.0.1:{}\"", proxy.port),
        ),
    )
    .unwrap();
    let fp_dir = tempfile::tempdir().unwrap();
    let a_log = common::daemon::log_dir().join(format!("{}.log", unique("stale-writer-a")));
    let mut a = std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
        .arg("--config")
        .arg(&a_config)
        .args(["rotate", name])
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env("VAULT_STEWARD_LOG", "info")
        .env("VAULT_STEWARD_FAILPOINT", "approle-before-write:pause")
        .env("VAULT_STEWARD_FAILPOINT_DIR", fp_dir.path())
        .stdout(std::fs::File::create(&a_log).unwrap())
        .stderr(std::fs::File::create(a_log.with_extension("err.log")).unwrap())
        .spawn()
        .expect("spawn rotate");
    let reached = fp_dir.path().join("approle-before-write.reached");
    wait_until(
        Duration::from_secs(30),
        "A to reach its KV write",
        || async { reached.exists() },
    )
    .await;
    let issued_by_a: Vec<String> = accessors(&vault, &role).await;
    assert_eq!(issued_by_a.len(), 2, "the first secret-id and A's");

    // A sends its write; the proxy holds it; A freezes.
    proxy.hold();
    std::fs::write(fp_dir.path().join("approle-before-write.resume"), b"").unwrap();
    wait_until(
        Duration::from_secs(15),
        "A's KV write in flight",
        || async { proxy.held_bytes() > 0 },
    )
    .await;
    signal(a.id(), "-STOP");
    assert_eq!(vault.current_version(&path).await, 1, "A's write is held");

    // A's job lock runs out (30 s without renewal).
    wait_until(
        Duration::from_secs(45),
        "A's job lock to expire",
        || async {
            store
                .lock_info(name)
                .await
                .unwrap()
                .is_none_or(|l| l.expires_at <= chrono::Utc::now())
        },
    )
    .await;

    // B resumes A's rotation, then dies after issuing its own secret-id.
    let (st, out, err) = cfg.cli_env(
        &["rotate", name],
        &[("VAULT_STEWARD_FAILPOINT", "approle-after-issue")],
    );
    assert!(!st.success(), "B dies at its failpoint: {out}{err}");
    assert!(err.contains("failpoint approle-after-issue hit"), "{err}");
    let live = accessors(&vault, &role).await;
    let a_accessor = issued_by_a.iter().find(|acc| !live.contains(acc)).cloned();
    assert!(
        a_accessor.is_some(),
        "B's resume destroyed A's unstored secret-id: before {issued_by_a:?}, now {live:?}"
    );

    // A's write lands, late.
    let replied = proxy.replied_bytes();
    proxy.release();
    wait_until(
        Duration::from_secs(15),
        "Vault's answer to A's write",
        || async { proxy.replied_bytes() > replied },
    )
    .await;
    signal(a.id(), "-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let a_status = loop {
        if let Some(status) = a.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "A did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let a_err = std::fs::read_to_string(a_log.with_extension("err.log")).unwrap_or_default();
    common::daemon::append_log("stale-writer-a", &a_err);

    let kv = vault.kv_get(&path).await.expect("KV secret");
    let secret_id = kv.data["secret_id"].as_str().unwrap().to_string();
    record_canaries([secret_id.as_str()]);
    assert!(
        logs_in(&vault, kv.data["role_id"].as_str().unwrap(), &secret_id).await,
        "KV's secret-id (version {}, accessor {:?}) does not log in: A's stale write (exit \
         {a_status}) published the secret-id B destroyed ({a_accessor:?})\nA: {a_err}\nB: {err}",
        kv.version,
        kv.data["secret_id_accessor"]
    );
}

/// A rotation interrupted after Vault issued its secret-id (the process died before the KV
/// write) while the secret is not due: the daemon started next rolls it forward at once, as
/// the engine does for every kind that records rotations (`Job::resume`) — the unused
/// secret-id is destroyed and no rotation stays open — instead of waiting until the job is next
/// due (up to `every`) with a live secret-id nobody holds.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_rotation_is_rolled_forward_when_the_daemon_starts_even_if_not_due() {
    let vault = RootVault::new();
    let prefix = unique("approle-startresume");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    let (role_id, first_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([first_secret_id.as_str()]);
    vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": first_secret_id }),
        )
        .await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-startresume";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "2h", "1h"));
    // A rotation recorded, so the job is known and not due for two hours.
    let (st, out, err) = cfg.cli(&["rotate", name]);
    assert!(st.success(), "{out}{err}");
    let rotated = accessors(&vault, &role).await;
    let (st, out, err) = cfg.cli_env(
        &["rotate", name],
        &[("VAULT_STEWARD_FAILPOINT", "approle-after-issue")],
    );
    assert!(!st.success(), "{out}{err}");
    assert!(err.contains("failpoint approle-after-issue hit"), "{err}");
    let issued = accessors(&vault, &role).await;
    assert_eq!(
        issued.len(),
        3,
        "the first secret-id (destroyed after grace), the rotated one and the unused one"
    );
    let unused: Vec<String> = issued
        .iter()
        .filter(|a| !rotated.contains(a))
        .cloned()
        .collect();
    assert_eq!(
        unused.len(),
        1,
        "one unused secret-id: {issued:?} after {rotated:?}"
    );
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .unwrap();
    assert_eq!(store.open_rotations(Some(name)).await.unwrap().len(), 1);

    let mut d = cfg.start(&[]);
    d.ready().await;
    let closed = async {
        for _ in 0..100 {
            if store.open_rotations(Some(name)).await.unwrap().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    .await;
    d.terminate(Duration::from_secs(15)).await;
    let live = accessors(&vault, &role).await;
    // The rotation that was given up was wanted, so the daemon rotates at once after
    // destroying its unused secret-id: the older ones wait for their grace.
    assert!(
        closed && !live.contains(&unused[0]),
        "10 s after the daemon started: rotation closed {closed}, live secret-ids {live:?} (the \
         unused one {} should be destroyed)\n{}",
        unused[0],
        d.log()
            .lines()
            .filter(|l| l.contains("rolling forward") || l.contains("resume"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let kv = vault.kv_get(&path).await.unwrap();
    assert!(
        logs_in(
            &vault,
            kv.data["role_id"].as_str().unwrap(),
            kv.data["secret_id"].as_str().unwrap()
        )
        .await
    );
}

// ---- Issue 13 item 2: a deleted or destroyed current version ------------------------------

/// Takes version `version` of `path` away, as `bao kv delete` (`destroy = false`) or
/// `bao kv destroy -versions=N` would.
async fn remove_version(vault: &RootVault, path: &str, version: u64, destroy: bool) {
    let (mount, rest) = path.split_once('/').unwrap();
    let verb = if destroy { "destroy" } else { "delete" };
    vault
        .ok(
            reqwest::Method::POST,
            &format!("{mount}/{verb}/{rest}"),
            Some(json!({ "versions": [version] })),
        )
        .await;
    assert!(
        vault.kv_get(path).await.is_none(),
        "{verb} left it readable"
    );
}

async fn open_store(cfg: &DaemonConfig) -> std::sync::Arc<dyn vault_steward::store::Store> {
    vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .expect("state store")
}

/// The daemon rotates every 6 s. The test takes its first version away; when the job is next
/// due the daemon issues exactly one secret-id and writes it as one fresh version, raises no
/// `ConcurrentWrite`, and does not run the job again until that version is due.
async fn a_removed_current_version_is_replaced_once(destroy: bool) {
    let vault = RootVault::new();
    let prefix = unique("approle-removed");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    // The secret-id the helper made for itself is not the daemon's business.
    for accessor in accessors(&vault, &role).await {
        vault
            .ok(
                reqwest::Method::POST,
                &format!("auth/approle/role/{role}/secret-id-accessor/destroy"),
                Some(json!({ "secret_id_accessor": accessor })),
            )
            .await;
    }
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-removed";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "6s", "5s"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(15), "the first secret-id", || async {
        vault.current_version(&path).await == 1
    })
    .await;
    let first = creds(&vault, &path, 1).await;
    assert_eq!(accessors(&vault, &role).await, vec![first.accessor.clone()]);
    remove_version(&vault, &path, 1, destroy).await;

    wait_until(Duration::from_secs(20), "one fresh version", || async {
        vault.current_version(&path).await >= 2
    })
    .await;
    let fresh = vault
        .kv_get(&path)
        .await
        .unwrap_or_else(|| panic!("the fresh version is live\n{}", d.log()));
    assert_eq!(fresh.version, 2, "exactly one new version\n{}", d.log());
    let second = creds(&vault, &path, 2).await;
    assert_ne!(second.accessor, first.accessor);
    assert!(logs_in(&vault, &second.role_id, &second.secret_id).await);

    let store = open_store(&cfg).await;
    let runs_after_write = store.recent_runs(name, 100).await.unwrap().len();
    let due = fresh.created_time + chrono::Duration::seconds(6);
    while chrono::Utc::now() < due - chrono::Duration::milliseconds(1000) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let runs = store.recent_runs(name, 100).await.unwrap();
    assert_eq!(
        runs.len(),
        runs_after_write,
        "the job ran again before it was due: {runs:?}\n{}",
        d.log()
    );
    assert_eq!(runs.len(), 2, "{runs:?}\n{}", d.log());
    assert_eq!(vault.current_version(&path).await, 2);
    // Exactly one secret-id was issued for the fresh version: the one in the deleted version
    // (the daemon cannot read it any more) and the fresh one are all there is.
    let mut live = accessors(&vault, &role).await;
    live.sort();
    let mut expected = vec![first.accessor.clone(), second.accessor.clone()];
    expected.sort();
    assert_eq!(live, expected, "{}", d.log());
    let fp = vault_steward::alert::fingerprint("ConcurrentWrite", name);
    assert!(store.alert(&fp).await.unwrap().is_none(), "{}", d.log());
    assert!(store.open_rotations(Some(name)).await.unwrap().is_empty());
    d.terminate(Duration::from_secs(15)).await;
    assert!(logs_in(&vault, &second.role_id, &second.secret_id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_current_version_gets_one_fresh_secret_id() {
    a_removed_current_version_is_replaced_once(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_current_version_gets_one_fresh_secret_id() {
    a_removed_current_version_is_replaced_once(true).await;
}

// ---- Issue 13 item 5: other fields keep their JSON types ----------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn other_fields_keep_their_json_types() {
    let vault = RootVault::new();
    let prefix = unique("approle-typed");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    let (role_id, hand_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([hand_secret_id.as_str()]);
    let typed = json!({
        "port": 8200,
        "ratio": 1.5,
        "negative": -1,
        "enabled": true,
        "disabled": false,
        "tags": ["a", 2, null],
        "opts": {"retry": {"max": 3}, "tls": true},
        "none": null,
        "owner": "team-b"
    });
    let mut seed = typed.clone();
    seed["role_id"] = json!(role_id);
    seed["secret_id"] = json!(hand_secret_id);
    vault.kv_put(&path, seed).await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-typed";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "2h", "1h"));
    let (st, out, err) = cfg.cli(&["rotate", name]);
    assert!(st.success(), "{out}{err}");
    let new = creds(&vault, &path, 2).await;
    assert!(logs_in(&vault, &new.role_id, &new.secret_id).await);
    let kv = vault.kv_get(&path).await.unwrap();
    for (key, value) in typed.as_object().unwrap() {
        assert_eq!(kv.data.get(key), Some(value), "field `{key}` changed");
    }
    assert_eq!(kv.data.len(), typed.as_object().unwrap().len() + 3);
}

/// The write is refused, yet nothing newer can be read (a version written and deleted again
/// between the read and the write): the unused secret-id is destroyed and the run fails, to be
/// retried with backoff; no `ConcurrentWrite`. The next run writes one fresh version.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_with_nothing_newer_to_read_fails_and_is_retried() {
    let vault = RootVault::new();
    let prefix = unique("approle-unexplained");
    let role = unique("svc");
    let path = format!("secret/{prefix}/credentials");
    let (role_id, hand_secret_id) = vault.approle(&role, json!({ "token_ttl": "5m" })).await;
    record_canaries([hand_secret_id.as_str()]);
    vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": hand_secret_id }),
        )
        .await;
    let token = steward_token(&vault, &prefix, &role).await;
    let name = "svc-unexplained";
    let cfg = DaemonConfig::new(&token, &job(name, &role, &path, "2h", "1h"));
    let fp_dir = tempfile::tempdir().unwrap();
    let fp_dir_s = fp_dir.path().to_str().unwrap().to_string();
    let cfg_path = cfg.path();
    let rotate = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
            .arg("--config")
            .arg(cfg_path)
            .args(["rotate", "svc-unexplained"])
            .env("VAULT_STEWARD_FAILPOINT", "approle-before-write:pause")
            .env("VAULT_STEWARD_FAILPOINT_DIR", &fp_dir_s)
            .env_remove("VAULT_TOKEN")
            .output()
            .expect("rotate")
    });
    let reached = fp_dir.path().join("approle-before-write.reached");
    wait_until(Duration::from_secs(20), "the rotation to pause", || async {
        reached.exists()
    })
    .await;
    assert_eq!(accessors(&vault, &role).await.len(), 2);
    let v2 = vault
        .kv_put(
            &path,
            json!({ "role_id": role_id, "secret_id": hand_secret_id }),
        )
        .await;
    remove_version(&vault, &path, v2, false).await;
    std::fs::write(fp_dir.path().join("approle-before-write.resume"), b"").unwrap();
    let out = rotate.join().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("no newer version can be read"), "{all}");
    assert!(!all.contains("someone else"), "{all}");
    assert_eq!(vault.current_version(&path).await, 2, "nothing written");
    assert_eq!(
        accessors(&vault, &role).await.len(),
        1,
        "the unused secret-id is destroyed"
    );
    let store = open_store(&cfg).await;
    let fp = vault_steward::alert::fingerprint("ConcurrentWrite", name);
    assert!(store.alert(&fp).await.unwrap().is_none());
    assert!(store.open_rotations(Some(name)).await.unwrap().is_empty());
    let state = store.job_state(name).await.unwrap().unwrap();
    assert!(state.retry_at.is_some(), "retried with backoff: {state:?}");

    let (st, out, err) = cfg.cli(&["rotate", name]);
    assert!(st.success(), "{out}{err}");
    let new = creds(&vault, &path, 3).await;
    assert!(logs_in(&vault, &new.role_id, &new.secret_id).await);
}
