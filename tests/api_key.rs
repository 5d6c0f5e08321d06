//! `api-key` against the real OpenBao, beyond the daemon basics in tests/daemon.rs: a version
//! written by hand between the rotation's read and write is never overwritten (`ConcurrentWrite`),
//! a restart mid-interval does not rotate early while `rotate JOB` rotates at once, a `window`
//! holds a due rotation back, and the `on_rotate` hook (a real local HTTP receiver) is told
//! without the secret — and re-told after failures without undoing the rotation.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Timelike;
use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{unique, wait_until};
use vault_steward::store::{AlertStatus, Store};

fn api_key_job(name: &str, path: &str, every: &str, extra: &str) -> String {
    format!(
        r#"[[job]]
name = "{name}"
kind = "api-key"
path = "{path}"
every = "{every}"
format = "alnum:32"
{extra}
"#
    )
}

async fn open_store(cfg: &DaemonConfig) -> Arc<dyn Store> {
    vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .expect("state store")
}

async fn alert_status(store: &Arc<dyn Store>, name: &str, job: &str) -> Option<AlertStatus> {
    let fp = vault_steward::alert::fingerprint(name, job);
    store.alert(&fp).await.unwrap().map(|a| a.status)
}

async fn record_all_versions(vault: &RootVault, path: &str) {
    for v in 1..=vault.current_version(path).await {
        if let Some(kv) = vault.kv_get_version(path, Some(v)).await
            && let Some(k) = kv.data.get("api_key").and_then(|k| k.as_str())
        {
            record_canaries([k]);
        }
    }
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_version_written_by_hand_between_read_and_write_is_not_overwritten() {
    let vault = RootVault::new();
    let prefix = unique("cas");
    let path = format!("secret/{prefix}/api-key");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "cas-old-value-0001" }),
        )
        .await;
    record_canaries(["cas-old-value-0001"]);
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("cas", &path, "1h", ""));
    let fp_dir = tempfile::tempdir().unwrap();
    let fp_dir_s = fp_dir.path().to_str().unwrap().to_string();

    // `rotate` reads version 1, then pauses before its check-and-set write.
    let cfg_path = cfg.path();
    let rotate = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
            .arg("--config")
            .arg(cfg_path)
            .args(["rotate", "cas"])
            .env("VAULT_STEWARD_FAILPOINT", "api-key-before-write:pause")
            .env("VAULT_STEWARD_FAILPOINT_DIR", &fp_dir_s)
            .env_remove("VAULT_TOKEN")
            .output()
            .expect("rotate")
    });
    let reached = fp_dir.path().join("api-key-before-write.reached");
    wait_until(Duration::from_secs(20), "the rotation to pause", || async {
        reached.exists()
    })
    .await;
    let hand = vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "cas-hand-written-0002" }),
        )
        .await;
    record_canaries(["cas-hand-written-0002"]);
    assert_eq!(hand, 2);
    std::fs::write(fp_dir.path().join("api-key-before-write.resume"), b"").unwrap();
    let out = rotate.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("written by someone else"), "{stdout}");

    // The hand-written version stands, nothing newer was written.
    let kv = vault.kv_get(&path).await.unwrap();
    assert_eq!(kv.version, 2);
    assert_eq!(kv.data["api_key"], "cas-hand-written-0002");
    let store = open_store(&cfg).await;
    assert_eq!(
        alert_status(&store, "ConcurrentWrite", "cas").await,
        Some(AlertStatus::Firing)
    );
    // It counts as the rotation: the job's state holds the hand-written version's age.
    let state = store.job_state("cas").await.unwrap().unwrap();
    assert_eq!(state.secret_version, Some(2));
    assert_eq!(
        state.secret_changed_at.map(|t| t.timestamp()),
        Some(kv.created_time.timestamp())
    );
    // The next clean rotation resolves the alert.
    let (st, out, err) = cfg.cli(&["rotate", "cas"]);
    assert!(st.success(), "{out}{err}");
    assert_eq!(vault.current_version(&path).await, 3);
    assert_eq!(
        alert_status(&store, "ConcurrentWrite", "cas").await,
        Some(AlertStatus::Resolved)
    );
    record_all_versions(&vault, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_interval_does_not_rotate_early_but_rotate_does_at_once() {
    let vault = RootVault::new();
    let prefix = unique("midway");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("mid", &path, "12s", ""));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the first version", || async {
        vault.current_version(&path).await == 1
    })
    .await;
    let created = vault.kv_get(&path).await.unwrap().created_time;
    d.terminate(Duration::from_secs(15)).await;

    // Restarted about a third into the interval.
    let mut d = cfg.start(&[]);
    d.ready().await;
    let due = created + chrono::Duration::seconds(12);
    // Until shortly before it is due again, nothing is rotated.
    while chrono::Utc::now() < due - chrono::Duration::milliseconds(1500) {
        assert_eq!(
            vault.current_version(&path).await,
            1,
            "rotated early after the restart\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then it rotates on time.
    wait_until(Duration::from_secs(6), "the rotation when due", || async {
        vault.current_version(&path).await == 2
    })
    .await;
    let v2 = vault.kv_get(&path).await.unwrap().created_time;
    assert!(
        v2 >= due - chrono::Duration::milliseconds(1000),
        "{v2} vs {due}"
    );

    // `rotate JOB` does not wait for the schedule.
    let (st, out, err) = cfg.cli(&["rotate", "mid"]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("rotated"), "{out}");
    assert_eq!(vault.current_version(&path).await, 3);
    d.terminate(Duration::from_secs(15)).await;
    record_all_versions(&vault, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_rotation_outside_its_window_waits_for_it() {
    let vault = RootVault::new();
    let prefix = unique("window");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    // The window opens at one second of each minute, about 8 s from now.
    let opens = chrono::Utc::now() + chrono::Duration::seconds(8);
    let second = opens.second();
    let cfg = DaemonConfig::new(
        &token,
        &api_key_job(
            "win",
            &path,
            "1h",
            &format!("window = \"{second} * * * * *\""),
        ),
    );
    let mut d = cfg.start(&[]);
    d.ready().await;
    // Due at once (no secret yet) but held back: status shows the window's moment.
    let (st, out, err) = cfg.cli(&["status", "--json"]);
    assert!(st.success(), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(rows[0]["next_due"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(next.second(), second, "{out}");
    assert!(next > chrono::Utc::now(), "{out}");
    while chrono::Utc::now() < next - chrono::Duration::milliseconds(500) {
        assert_eq!(
            vault.current_version(&path).await,
            0,
            "rotated outside the window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(
        Duration::from_secs(5),
        "the rotation in the window",
        || async { vault.current_version(&path).await == 1 },
    )
    .await;
    let created = vault.kv_get(&path).await.unwrap().created_time;
    assert_eq!(created.second(), second, "started in the window's second");
    d.terminate(Duration::from_secs(15)).await;
    record_all_versions(&vault, &path).await;
}

/// A local HTTP receiver for `on_rotate`: answers 500 while `failing`, records accepted bodies.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
    attempts: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

async fn receiver() -> Receiver {
    use axum::routing::post;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (b, a, f) = (bodies.clone(), attempts.clone(), failing.clone());
    let app = axum::Router::new().route(
        "/reload",
        post(move |body: String| {
            let (b, a, f) = (b.clone(), a.clone(), f.clone());
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                b.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
            .unwrap();
    });
    Receiver {
        url: format!("http://{addr}/reload?token=hook-query-token"),
        bodies,
        attempts,
        failing,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_rotate_hook_is_told_without_the_secret_and_retried_after_failures() {
    let vault = RootVault::new();
    let prefix = unique("hook");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let rx = receiver().await;
    let cfg = DaemonConfig::new(
        &token,
        &api_key_job(
            "hooked",
            &path,
            "1h",
            &format!("on_rotate = \"{}\"", rx.url),
        ),
    );
    let mut d = cfg.start(&[]);
    d.ready().await;

    // The first run creates the key and tells the receiver.
    wait_until(Duration::from_secs(10), "the hook", || async {
        !rx.bodies.lock().unwrap().is_empty()
    })
    .await;
    let kv = vault.kv_get(&path).await.unwrap();
    let key = kv.data["api_key"].as_str().unwrap().to_string();
    record_canaries([key.as_str()]);
    let body: serde_json::Value =
        serde_json::from_str(&rx.bodies.lock().unwrap()[0]).expect("JSON body");
    assert_eq!(body["event"], "rotated");
    assert_eq!(body["job"], "hooked");
    assert_eq!(body["path"], path.as_str());
    assert_eq!(body["version"], 1);
    assert!(
        !rx.bodies.lock().unwrap()[0].contains(&key),
        "the hook never carries the key"
    );

    // The receiver breaks; an emergency rotation still rotates, and the failure is an alert.
    rx.failing.store(true, Ordering::SeqCst);
    let (st, out, err) = cfg.cli(&["rotate", "hooked"]);
    assert!(
        st.success(),
        "a failing hook does not fail the rotation: {out}{err}"
    );
    assert!(out.contains("will retry"), "{out}");
    assert!(
        !out.contains("hook-query-token"),
        "the hook URL's query is never shown: {out}"
    );
    assert_eq!(vault.current_version(&path).await, 2, "the rotation stands");
    let key2 = vault.kv_get(&path).await.unwrap().data["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    record_canaries([key2.as_str()]);
    let store = open_store(&cfg).await;
    assert_eq!(
        alert_status(&store, "OnRotateHookFailed", "hooked").await,
        Some(AlertStatus::Firing)
    );
    assert!(
        rx.attempts.load(Ordering::SeqCst) >= 4,
        "tried a few times within the run"
    );
    let pending = store.pending_actions("hooked").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(!pending[0].payload.contains(&key2));

    // The daemon keeps retrying (with backoff) until the receiver is back, then resolves it.
    wait_until(Duration::from_secs(20), "a deferred retry", || {
        let before = rx.attempts.load(Ordering::SeqCst);
        async move { before >= 5 }
    })
    .await;
    rx.failing.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(20), "the hook delivered", || async {
        rx.bodies.lock().unwrap().len() >= 2
    })
    .await;
    let body: serde_json::Value =
        serde_json::from_str(rx.bodies.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(body["version"], 2);
    wait_until(Duration::from_secs(5), "the alert resolved", || async {
        alert_status(&store, "OnRotateHookFailed", "hooked").await == Some(AlertStatus::Resolved)
    })
    .await;
    assert!(store.pending_actions("hooked").await.unwrap().is_empty());
    assert_eq!(vault.current_version(&path).await, 2);
    d.terminate(Duration::from_secs(15)).await;
    assert!(!d.log().contains("hook-query-token"));
    rx.stop.cancel();
}

// ---- Issue 13 item 2: a deleted or destroyed current version ------------------------------

/// How the test takes the current version away.
#[derive(Clone, Copy, Debug)]
enum Removal {
    /// `bao kv delete`: soft delete of the newest version.
    Delete,
    /// `bao kv destroy -versions=N`: its data is gone for good.
    Destroy,
}

/// Takes version `version` of `path` away, as an operator would.
async fn remove_version(vault: &RootVault, path: &str, version: u64, how: Removal) {
    let (mount, rest) = path.split_once('/').unwrap();
    match how {
        Removal::Delete => {
            vault
                .ok(
                    reqwest::Method::POST,
                    &format!("{mount}/delete/{rest}"),
                    Some(serde_json::json!({ "versions": [version] })),
                )
                .await;
        }
        Removal::Destroy => {
            vault
                .ok(
                    reqwest::Method::POST,
                    &format!("{mount}/destroy/{rest}"),
                    Some(serde_json::json!({ "versions": [version] })),
                )
                .await;
        }
    }
    assert!(
        vault.kv_get(path).await.is_none(),
        "version {version} of {path} still reads after {how:?}"
    );
}

/// The daemon rotates every 6 s. The test takes its first version away; when the job is next
/// due the daemon writes exactly one fresh version (check-and-set from the metadata, not 0),
/// raises no `ConcurrentWrite`, and does not run the job again until that version is due.
async fn a_removed_current_version_is_replaced_once(how: Removal) {
    let vault = RootVault::new();
    let prefix = unique("removed");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("gone", &path, "6s", ""));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the first version", || async {
        vault.current_version(&path).await == 1
    })
    .await;
    record_all_versions(&vault, &path).await;
    remove_version(&vault, &path, 1, how).await;

    wait_until(Duration::from_secs(20), "one fresh version", || async {
        vault.current_version(&path).await >= 2
    })
    .await;
    let fresh = vault
        .kv_get(&path)
        .await
        .unwrap_or_else(|| panic!("the fresh version is live\n{}", d.log()));
    assert_eq!(fresh.version, 2, "exactly one new version\n{}", d.log());
    let key = fresh.data["api_key"].as_str().expect("api_key").to_string();
    record_canaries([key.as_str()]);
    assert_eq!(key.len(), 32);

    let store = open_store(&cfg).await;
    // Until shortly before the fresh version is due, the job does not run again.
    let due = fresh.created_time + chrono::Duration::seconds(6);
    let runs_after_write = store.recent_runs("gone", 100).await.unwrap().len();
    while chrono::Utc::now() < due - chrono::Duration::milliseconds(1000) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let runs = store.recent_runs("gone", 100).await.unwrap();
    assert_eq!(
        runs.len(),
        runs_after_write,
        "the job ran again before it was due: {runs:?}\n{}",
        d.log()
    );
    // One run made version 1, one made version 2: no refused write in between.
    assert_eq!(runs.len(), 2, "{runs:?}\n{}", d.log());
    assert_eq!(vault.current_version(&path).await, 2);
    assert_eq!(alert_status(&store, "ConcurrentWrite", "gone").await, None);
    let state = store.job_state("gone").await.unwrap().unwrap();
    assert_eq!(state.secret_version, Some(2));
    assert_eq!(state.retry_at, None, "a clean run, not a retry");

    // When it is due, the job rotates as usual.
    wait_until(Duration::from_secs(10), "the next rotation", || async {
        vault.current_version(&path).await == 3
    })
    .await;
    d.terminate(Duration::from_secs(15)).await;
    record_all_versions(&vault, &path).await;
    assert_eq!(alert_status(&store, "ConcurrentWrite", "gone").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_current_version_is_replaced_by_one_fresh_version() {
    a_removed_current_version_is_replaced_once(Removal::Delete).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_current_version_is_replaced_by_one_fresh_version() {
    a_removed_current_version_is_replaced_once(Removal::Destroy).await;
}

/// `rotate JOB` on a secret whose current version was deleted writes one fresh version and
/// says so; nothing about someone else's write.
#[tokio::test(flavor = "multi_thread")]
async fn rotate_replaces_a_deleted_current_version() {
    let vault = RootVault::new();
    let prefix = unique("removed-cli");
    let path = format!("secret/{prefix}/api-key");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "deleted-by-hand-0001" }),
        )
        .await;
    record_canaries(["deleted-by-hand-0001"]);
    remove_version(&vault, &path, 1, Removal::Delete).await;
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("gone-cli", &path, "1h", ""));
    let (st, out, err) = cfg.cli(&["rotate", "gone-cli"]);
    assert!(st.success(), "{out}{err}");
    assert!(!out.contains("someone else"), "{out}");
    assert!(out.contains("version 2"), "{out}");
    let kv = vault.kv_get(&path).await.expect("a live version");
    assert_eq!(kv.version, 2);
    record_all_versions(&vault, &path).await;
    let store = open_store(&cfg).await;
    assert_eq!(
        alert_status(&store, "ConcurrentWrite", "gone-cli").await,
        None
    );
}

// ---- Issue 13 item 5: other fields keep their JSON types ----------------------------------

/// Fields of every JSON type but string, and a string, as a consumer may keep beside the key.
fn typed_fields() -> serde_json::Value {
    serde_json::json!({
        "port": 5432,
        "negative": -7,
        "ratio": 0.25,
        "big": 4_294_967_296u64,
        "enabled": true,
        "disabled": false,
        "tags": ["a", 1, null, {"b": [true]}],
        "opts": {"pool": {"size": 5, "name": "x"}, "ssl": false},
        "empty_obj": {},
        "empty_list": [],
        "none": null,
        "owner": "team-a",
        "numeric_text": "5432"
    })
}

/// Each of `expected`'s fields is in `got` with the same JSON value (and so the same type).
fn assert_same_fields(
    got: &serde_json::Map<String, serde_json::Value>,
    expected: &serde_json::Value,
) {
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(
            got.get(key),
            Some(value),
            "field `{key}` changed: {:?}",
            got.get(key)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_fields_keep_their_json_types() {
    let vault = RootVault::new();
    let prefix = unique("typed");
    let path = format!("secret/{prefix}/api-key");
    let mut seed = typed_fields();
    seed["api_key"] = serde_json::json!("typed-old-value-0001");
    record_canaries(["typed-old-value-0001"]);
    vault.kv_put(&path, seed).await;
    // OpenBao keeps these exactly as sent (numbers are float64 there, so all fit).
    assert_same_fields(&vault.kv_get(&path).await.unwrap().data, &typed_fields());
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("typed", &path, "1h", ""));
    for round in 0..2 {
        let (st, out, err) = cfg.cli(&["rotate", "typed"]);
        assert!(st.success(), "{out}{err}");
        let kv = vault.kv_get(&path).await.unwrap();
        assert_eq!(kv.version, 2 + round);
        record_all_versions(&vault, &path).await;
        assert_same_fields(&kv.data, &typed_fields());
        assert_ne!(kv.data["api_key"], "typed-old-value-0001");
        assert_eq!(kv.data.len(), typed_fields().as_object().unwrap().len() + 1);
    }
}

/// The write is refused, yet nothing newer can be read (a version written and deleted again
/// between the read and the write): not someone else's rotation. The run fails and is retried
/// with backoff (the job's state says when); the next run writes one fresh version.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_with_nothing_newer_to_read_fails_and_is_retried() {
    let vault = RootVault::new();
    let prefix = unique("unexplained");
    let path = format!("secret/{prefix}/api-key");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "unexplained-old-0001" }),
        )
        .await;
    record_canaries(["unexplained-old-0001"]);
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("unexplained", &path, "1h", ""));
    let fp_dir = tempfile::tempdir().unwrap();
    let fp_dir_s = fp_dir.path().to_str().unwrap().to_string();
    let cfg_path = cfg.path();
    let rotate = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
            .arg("--config")
            .arg(cfg_path)
            .args(["rotate", "unexplained"])
            .env("VAULT_STEWARD_FAILPOINT", "api-key-before-write:pause")
            .env("VAULT_STEWARD_FAILPOINT_DIR", &fp_dir_s)
            .env_remove("VAULT_TOKEN")
            .output()
            .expect("rotate")
    });
    let reached = fp_dir.path().join("api-key-before-write.reached");
    wait_until(Duration::from_secs(20), "the rotation to pause", || async {
        reached.exists()
    })
    .await;
    let v2 = vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "unexplained-gone-0002" }),
        )
        .await;
    record_canaries(["unexplained-gone-0002"]);
    remove_version(&vault, &path, v2, Removal::Delete).await;
    std::fs::write(fp_dir.path().join("api-key-before-write.resume"), b"").unwrap();
    let out = rotate.join().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("no newer version can be read"),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("someone else"), "{stdout}");
    assert_eq!(vault.current_version(&path).await, 2, "nothing written");

    let store = open_store(&cfg).await;
    assert_eq!(
        alert_status(&store, "ConcurrentWrite", "unexplained").await,
        None
    );
    let state = store.job_state("unexplained").await.unwrap().unwrap();
    assert_eq!(state.consecutive_failures, 1);
    assert!(state.retry_at.is_some(), "retried with backoff: {state:?}");

    // The retry finds the deleted version 2 and writes one fresh version over it.
    let (st, out, err) = cfg.cli(&["rotate", "unexplained"]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("deleted or destroyed"), "{out}");
    assert_eq!(vault.kv_get(&path).await.expect("live").version, 3);
    record_all_versions(&vault, &path).await;
}
