//! The Vault session against a real OpenBao: token and AppRole login, KV v2 with check-and-set
//! and metadata, error mapping, and keeping short-lived tokens alive (renewal, max TTL, revoked
//! tokens). Each test works under its own KV prefix, policy and role names.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::secret_file;
use common::vault::RootVault;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use vault_steward::config::secret::SecretSource;
use vault_steward::config::{Duration as ConfigDuration, VaultAuth, VaultConfig};
use vault_steward::vault::{AuthState, KvData, VaultError, VaultSession};

// ---- helpers -----------------------------------------------------------------------------------

/// Logs to the test output only when `TEST_LOG` is set (e.g. `TEST_LOG=vault_steward=debug`).
fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn config(address: &str, auth: VaultAuth) -> VaultConfig {
    VaultConfig {
        address: address.to_string(),
        ca_cert: None,
        namespace: None,
        request_timeout: ConfigDuration::from_secs(10),
        auth,
    }
}

fn file_source(path: PathBuf) -> SecretSource {
    SecretSource::File {
        path,
        location: None,
    }
}

fn token_auth(dir: &Path, token: &str) -> VaultAuth {
    VaultAuth::Token {
        token: file_source(secret_file(dir, "token", token)),
    }
}

fn approle_auth(dir: &Path, role_id: &str, secret_id: &str) -> VaultAuth {
    VaultAuth::AppRole {
        mount: "approle".into(),
        role_id: file_source(secret_file(dir, "role-id", role_id)),
        secret_id: file_source(secret_file(dir, "secret-id", secret_id)),
    }
}

fn kv(pairs: &[(&str, &str)]) -> KvData {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
        .collect()
}

fn plain(data: &KvData) -> BTreeMap<String, String> {
    data.iter()
        .map(|(k, v)| match v.as_secret() {
            Some(secret) => (k.clone(), secret.expose_secret().to_string()),
            None => (k.clone(), v.to_json().to_string()),
        })
        .collect()
}

/// A fresh prefix `vs_…` under `secret/` for one test.
fn prefix() -> String {
    common::unique("vs")
}

/// A policy named after `prefix` granting `capabilities` on `secret/{data,metadata}/PREFIX/*`.
async fn kv_policy(admin: &RootVault, prefix: &str, capabilities: &str) -> String {
    let name = format!("{prefix}-kv");
    let hcl = format!(
        r#"
path "secret/data/{prefix}/*" {{ capabilities = [{capabilities}] }}
path "secret/metadata/{prefix}/*" {{ capabilities = [{capabilities}] }}
"#
    );
    admin.put_policy(&name, &hcl).await;
    name
}

/// A session logged in with the root token (from a 0600 file).
async fn root_session(admin: &RootVault, dir: &Path) -> Arc<VaultSession> {
    VaultSession::connect(&config(&admin.addr, token_auth(dir, admin.root_token())))
        .await
        .expect("root session")
}

/// Runs `keep_alive` until dropped or stopped; the task's result is checked on stop.
struct KeepAlive {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KeepAlive {
    fn start(session: &Arc<VaultSession>) -> KeepAlive {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(session.clone().keep_alive(cancel.clone()));
        KeepAlive {
            cancel,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("keep_alive stops promptly on cancel")
                .expect("keep_alive task did not panic");
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ---- authentication ----------------------------------------------------------------------------

#[tokio::test]
async fn token_login_looks_the_token_up() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""read""#).await;
    let (token, _) = admin
        .token(json!({ "policies": [policy], "ttl": "1h" }))
        .await;

    let session = VaultSession::connect(&config(&admin.addr, token_auth(dir.path(), &token)))
        .await
        .expect("token login");
    assert_eq!(session.auth_state(), AuthState::Authenticated);
    assert_eq!(session.token().expose_secret(), token);
    let shown = format!("{session:?}");
    assert!(
        shown.contains("[redacted]") && !shown.contains(&token),
        "{shown}"
    );

    // The root token never expires and is fine too.
    let root = root_session(&admin, dir.path()).await;
    assert_eq!(root.auth_state(), AuthState::Authenticated);

    // An invalid token is an authentication error, not a crash or a hang.
    let bad = tempfile::tempdir().unwrap();
    let err = VaultSession::connect(&config(
        &admin.addr,
        token_auth(bad.path(), "s.not-a-real-token"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::Auth(_)), "{err}");
    assert!(!err.to_string().contains("s.not-a-real-token"), "{err}");
}

#[tokio::test]
async fn approle_login_reads_role_and_secret_id_from_files() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""create", "read", "update""#).await;
    let (role_id, secret_id) = admin
        .approle(
            &prefix,
            json!({ "token_policies": [policy], "token_ttl": "1h" }),
        )
        .await;

    let session = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(dir.path(), &role_id, &secret_id),
    ))
    .await
    .expect("approle login");
    assert_eq!(session.auth_state(), AuthState::Authenticated);
    let token = session.token();
    let info = admin
        .lookup(token.expose_secret())
        .await
        .expect("a valid token");
    assert!(
        info["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == policy.as_str()),
        "{info}"
    );

    let path = format!("secret/{prefix}/api-key");
    session
        .kv_write(&path, &kv(&[("api_key", "v1")]), 0)
        .await
        .unwrap();
    let read = session.kv_read(&path).await.unwrap().unwrap();
    assert_eq!(plain(&read.data)["api_key"], "v1");

    // A wrong secret-id is refused as an authentication error that names no secret.
    let wrong = tempfile::tempdir().unwrap();
    let err = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(wrong.path(), &role_id, "wrong-secret-id"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::Auth(_)), "{err}");
    assert!(!err.to_string().contains(&role_id), "{err}");

    // A secret-id file other users can read is refused before anything is sent.
    let loose = tempfile::tempdir().unwrap();
    let auth = approle_auth(loose.path(), &role_id, &secret_id);
    {
        use std::os::unix::fs::PermissionsExt;
        let file = loose.path().join("secret-id");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let err = VaultSession::connect(&config(&admin.addr, auth))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Auth(m) if m.contains("readable by other users")),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_vault_fails_fast() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = common::daemon::free_port();
    let address = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = VaultSession::connect(&config(
        &address,
        token_auth(dir.path(), admin.root_token()),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::Unreachable(_)), "{err}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // A session built without logging in reports KV calls as unreachable too.
    let session = VaultSession::new(&config(
        &address,
        token_auth(dir.path(), admin.root_token()),
    ))
    .unwrap();
    assert_eq!(session.auth_state(), AuthState::Unauthenticated);
    let err = session.kv_read("secret/anything").await.unwrap_err();
    assert!(matches!(err, VaultError::Unreachable(_)), "{err}");
}

/// Answers every request on `listener` with `response`, keeping the text of each request.
fn serve_raw(
    listener: tokio::net::TcpListener,
    response: String,
) -> Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    seen
}

/// reqwest strips only `Authorization`-style headers when a redirect leaves the host, so
/// `X-Vault-Token` would follow a redirect anywhere. A plain-HTTP "Vault" that redirects to
/// another host (127.0.0.2) gets the session refused, and the other host never sees the token.
#[tokio::test]
async fn a_redirect_to_another_plain_http_host_never_carries_the_token() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let token = format!("hvs.redirect-canary-{}", prefix());
    common::daemon::record_canaries([token.as_str()]);
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let elsewhere_seen = serve_raw(
        elsewhere,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into(),
    );
    let vault = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vault_addr = vault.local_addr().unwrap();
    let vault_seen = serve_raw(
        vault,
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere_addr}/v1/auth/token/lookup-self\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
    );
    let result = VaultSession::connect(&config(
        &format!("http://{vault_addr}"),
        token_auth(dir.path(), &token),
    ))
    .await;
    assert!(result.is_err(), "a session through a redirect to nowhere");
    assert!(
        !vault_seen.lock().unwrap().is_empty(),
        "the session asked the first host"
    );
    let leaked: Vec<String> = elsewhere_seen.lock().unwrap().clone();
    assert!(
        leaked.iter().all(|r| !r.contains(&token)),
        "the token went to the other host:\n{leaked:?}"
    );
}

// ---- KV v2 -------------------------------------------------------------------------------------

#[tokio::test]
async fn kv_write_uses_check_and_set() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let session = root_session(&admin, dir.path()).await;
    let prefix = prefix();
    let path = format!("secret/{prefix}/api-key");
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);

    let first = session
        .kv_write(&path, &kv(&[("api_key", "one")]), 0)
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert!(
        first.created_time >= before
            && first.created_time <= chrono::Utc::now() + chrono::Duration::seconds(5)
    );

    // cas=0 only creates.
    let err = session
        .kv_write(&path, &kv(&[("api_key", "clobber")]), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::CasMismatch { path: p, expected: 0 } if *p == path),
        "{err}"
    );

    let second = session
        .kv_write(&path, &kv(&[("api_key", "two")]), 1)
        .await
        .unwrap();
    assert_eq!(second.version, 2);

    // A stale version is refused and nothing is written.
    let err = session
        .kv_write(&path, &kv(&[("api_key", "stale")]), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::CasMismatch { expected: 1, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("stale"), "{err}");
    let meta = admin
        .kv_metadata(&format!("secret/{prefix}/api-key"))
        .await
        .unwrap();
    assert_eq!(meta["current_version"], 2);
    let current = session.kv_read(&path).await.unwrap().unwrap();
    assert_eq!(
        (current.version, plain(&current.data)["api_key"].as_str()),
        (2, "two")
    );
}

#[tokio::test]
async fn kv_read_returns_version_and_created_time() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let session = root_session(&admin, dir.path()).await;
    let prefix = prefix();
    let path = format!("secret/{prefix}/database");

    assert!(
        session.kv_read(&path).await.unwrap().is_none(),
        "missing path reads as None"
    );
    assert!(session.kv_read_version(&path, 1).await.unwrap().is_none());

    let written = session
        .kv_write(&path, &kv(&[("username", "app"), ("password", "pw-1")]), 0)
        .await
        .unwrap();
    let read = session.kv_read(&path).await.unwrap().unwrap();
    assert_eq!(read.version, written.version);
    assert_eq!(read.created_time, written.created_time);
    assert_eq!(
        plain(&read.data),
        BTreeMap::from([
            ("password".into(), "pw-1".into()),
            ("username".into(), "app".into())
        ])
    );
    // Debug of a secret never shows values.
    assert!(!format!("{read:?}").contains("pw-1"));

    // Values written by hand that are not strings come back as JSON text.
    let rest = format!("{prefix}/database");
    let v2 = admin
        .kv_put(
            &format!("secret/{}", rest),
            json!({ "port": 5432, "tls": true, "hosts": ["a", "b"], "password": "pw-2" }),
        )
        .await;
    let read = session.kv_read(&path).await.unwrap().unwrap();
    assert_eq!(read.version, v2);
    let fields = plain(&read.data);
    assert_eq!(fields["port"], "5432");
    assert_eq!(fields["tls"], "true");
    assert_eq!(fields["hosts"], r#"["a","b"]"#);

    // Older versions stay readable.
    let old = session
        .kv_read_version(&path, written.version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain(&old.data)["password"], "pw-1");

    // A deleted current version reads as None, and so does a destroyed one.
    admin
        .ok(
            reqwest::Method::DELETE,
            &format!("secret/data/{rest}"),
            None,
        )
        .await;
    assert!(session.kv_read(&path).await.unwrap().is_none());
    admin
        .ok(
            reqwest::Method::POST,
            &format!("secret/destroy/{rest}"),
            Some(json!({ "versions": [written.version] })),
        )
        .await;
    assert!(
        session
            .kv_read_version(&path, written.version)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn custom_metadata_is_set_and_read_back() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let session = root_session(&admin, dir.path()).await;
    let prefix = prefix();
    let rest = format!("{prefix}/api-key");
    let path = format!("secret/{rest}");

    assert!(session.kv_metadata(&path).await.unwrap().is_none());
    let v1 = session
        .kv_write(&path, &kv(&[("api_key", "a")]), 0)
        .await
        .unwrap();
    let v2 = session
        .kv_write(&path, &kv(&[("api_key", "b")]), 1)
        .await
        .unwrap();
    admin
        .ok(
            reqwest::Method::POST,
            &format!("secret/metadata/{rest}"),
            Some(json!({ "max_versions": 7 })),
        )
        .await;

    let custom = BTreeMap::from([
        ("rotated_by".to_string(), "vault-steward".to_string()),
        ("rotation_job".to_string(), "api-key-default".to_string()),
        ("rotated_at".to_string(), "2026-01-02T03:04:05Z".to_string()),
    ]);
    session
        .kv_set_custom_metadata(&path, &custom)
        .await
        .unwrap();
    let meta = session.kv_metadata(&path).await.unwrap().unwrap();
    assert_eq!(meta.custom_metadata, custom);
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.versions.len(), 2);
    assert_eq!(meta.versions[&1].created_time, v1.created_time);
    assert_eq!(meta.versions[&2].created_time, v2.created_time);
    assert!(
        meta.versions
            .values()
            .all(|v| v.deletion_time.is_none() && !v.destroyed)
    );
    // Other metadata is left alone.
    let raw = admin
        .kv_metadata(&format!("secret/{}", rest))
        .await
        .unwrap();
    assert_eq!(raw["max_versions"], 7, "{raw}");

    // Setting replaces the whole map.
    let replaced = BTreeMap::from([("rotated_by".to_string(), "someone-else".to_string())]);
    session
        .kv_set_custom_metadata(&path, &replaced)
        .await
        .unwrap();
    assert_eq!(
        session
            .kv_metadata(&path)
            .await
            .unwrap()
            .unwrap()
            .custom_metadata,
        replaced
    );

    // Deleted and destroyed versions show in the versions map.
    admin
        .ok(
            reqwest::Method::POST,
            &format!("secret/delete/{rest}"),
            Some(json!({ "versions": [1] })),
        )
        .await;
    admin
        .ok(
            reqwest::Method::POST,
            &format!("secret/destroy/{rest}"),
            Some(json!({ "versions": [2] })),
        )
        .await;
    let meta = session.kv_metadata(&path).await.unwrap().unwrap();
    assert!(meta.versions[&1].deletion_time.is_some() && !meta.versions[&1].destroyed);
    assert!(meta.versions[&2].destroyed);
}

#[tokio::test]
async fn paths_outside_kv_v2_are_rejected() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let session = root_session(&admin, dir.path()).await;
    let kv1 = common::unique("kv1");
    admin
        .enable_mount(&kv1, json!({ "type": "kv", "options": { "version": "1" } }))
        .await;

    let not_kv2 = |result: Result<(), VaultError>, what: &str| match result {
        Err(VaultError::NotKvV2 { .. }) => {}
        other => panic!("{what}: expected NotKvV2, got {other:?}"),
    };
    let kv1_path = format!("{kv1}/api-key");
    not_kv2(session.kv_read(&kv1_path).await.map(drop), "kv1 read");
    not_kv2(
        session
            .kv_write(&kv1_path, &kv(&[("a", "b")]), 0)
            .await
            .map(drop),
        "kv1 write",
    );
    not_kv2(
        session.kv_read("sys/policies/acl/default").await.map(drop),
        "sys",
    );
    not_kv2(session.kv_read("cubbyhole/x").await.map(drop), "cubbyhole");
    not_kv2(
        session
            .kv_read(&format!("{}/x", common::unique("nomount")))
            .await
            .map(drop),
        "no mount",
    );
    not_kv2(
        session.kv_read("secret").await.map(drop),
        "the mount itself",
    );
    not_kv2(
        session.kv_read("secret/../sys/x").await.map(drop),
        "dot-dot",
    );

    // A mount that disappears is noticed (its cached lookup is dropped).
    let kv2 = common::unique("kv2");
    admin
        .enable_mount(&kv2, json!({ "type": "kv", "options": { "version": "2" } }))
        .await;
    let kv2_path = format!("{kv2}/x");
    let (s, p) = (&session, &kv2_path);
    common::wait_until(
        Duration::from_secs(10),
        "the new kv-v2 mount to accept writes",
        || async move { s.kv_write(p, &kv(&[("a", "b")]), 0).await.is_ok() },
    )
    .await;
    admin.disable_mount(&kv2).await;
    not_kv2(session.kv_read(&kv2_path).await.map(drop), "disabled mount");
    admin.disable_mount(&kv1).await;
}

#[tokio::test]
async fn a_policy_that_denies_writes_gives_permission_denied() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""read""#).await;
    let rest = format!("{prefix}/api-key");
    admin
        .kv_put(
            &format!("secret/{}", rest),
            json!({ "api_key": "hand-written-secret" }),
        )
        .await;
    let (role_id, secret_id) = admin
        .approle(
            &prefix,
            json!({ "token_policies": [policy], "token_ttl": "1h" }),
        )
        .await;
    let session = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(dir.path(), &role_id, &secret_id),
    ))
    .await
    .unwrap();
    let token = session.token();

    let path = format!("secret/{rest}");
    let read = session.kv_read(&path).await.unwrap().unwrap();
    assert_eq!(plain(&read.data)["api_key"], "hand-written-secret");

    let err = session
        .kv_write(&path, &kv(&[("api_key", "new-secret")]), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::PermissionDenied { path: p } if *p == path),
        "{err}"
    );
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("new-secret") && !shown.contains(token.expose_secret()),
        "{shown}"
    );
    let err = session
        .kv_set_custom_metadata(&path, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::PermissionDenied { .. }), "{err}");

    // A policy refusal is not mistaken for a dead token: no new login.
    assert_eq!(session.token().expose_secret(), token.expose_secret());
    assert_eq!(session.auth_state(), AuthState::Authenticated);
    assert_eq!(
        admin
            .kv_metadata(&format!("secret/{}", rest))
            .await
            .unwrap()["current_version"],
        1
    );
}

// ---- keeping the token alive -------------------------------------------------------------------

/// Revokes `token` through its accessor, as an operator would.
async fn revoke(admin: &RootVault, token: &SecretString) {
    let info = admin
        .lookup(token.expose_secret())
        .await
        .expect("valid before revoking");
    admin
        .revoke_accessor(info["accessor"].as_str().unwrap())
        .await;
    assert!(admin.lookup(token.expose_secret()).await.is_none());
}

#[tokio::test]
async fn short_lived_approle_tokens_stay_valid_with_keep_alive() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""create", "read", "update""#).await;
    let (role_id, secret_id) = admin
        .approle(
            &prefix,
            json!({ "token_policies": [policy], "token_ttl": "3s", "token_max_ttl": "8s" }),
        )
        .await;
    let session = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(dir.path(), &role_id, &secret_id),
    ))
    .await
    .unwrap();
    let path = format!("secret/{prefix}/api-key");
    session
        .kv_write(&path, &kv(&[("api_key", "x")]), 0)
        .await
        .unwrap();
    let keep_alive = KeepAlive::start(&session);

    // 20 s = several TTLs and more than two max TTLs.
    let mut tokens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        assert_eq!(session.auth_state(), AuthState::Authenticated);
        // The token in use is valid on its own, not only thanks to the retry on 403.
        let token = session.token().expose_secret().to_string();
        let info = admin.lookup(&token).await;
        assert!(info.is_some(), "the session holds a dead token");
        session
            .kv_read(&path)
            .await
            .expect("read while keep_alive runs");
        if tokens.last() != Some(&token) {
            tokens.push(token);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        tokens.len() >= 3,
        "max TTL 8s over 20s needs new logins; saw {} tokens",
        tokens.len()
    );
    keep_alive.stop().await;
}

#[tokio::test]
async fn periodic_tokens_are_renewed_past_their_period() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""create", "read", "update""#).await;
    let (token, _) = admin
        .token(json!({ "policies": [policy], "period": "3s" }))
        .await;
    let session = VaultSession::connect(&config(&admin.addr, token_auth(dir.path(), &token)))
        .await
        .unwrap();
    let path = format!("secret/{prefix}/api-key");
    session
        .kv_write(&path, &kv(&[("api_key", "x")]), 0)
        .await
        .unwrap();
    let keep_alive = KeepAlive::start(&session);

    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        session
            .kv_read(&path)
            .await
            .expect("read while keep_alive runs");
        assert_eq!(session.auth_state(), AuthState::Authenticated);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The same token, three periods later, kept alive by renewal alone.
    assert_eq!(session.token().expose_secret(), token);
    assert!(
        admin.lookup(&token).await.is_some(),
        "periodic token expired"
    );
    keep_alive.stop().await;
}

#[tokio::test]
async fn a_revoked_token_leads_to_a_new_login() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""create", "read", "update""#).await;
    let (role_id, secret_id) = admin
        .approle(
            &prefix,
            json!({ "token_policies": [policy], "token_ttl": "1h" }),
        )
        .await;
    let session = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(dir.path(), &role_id, &secret_id),
    ))
    .await
    .unwrap();
    let path = format!("secret/{prefix}/api-key");
    session
        .kv_write(&path, &kv(&[("api_key", "x")]), 0)
        .await
        .unwrap();

    // Revoked between renewals: the next request logs in again and succeeds.
    let old = session.token();
    revoke(&admin, &old).await;
    let read = session.kv_read(&path).await.expect("read after revocation");
    assert!(read.is_some());
    assert_ne!(session.token().expose_secret(), old.expose_secret());
    assert_eq!(session.auth_state(), AuthState::Authenticated);

    // The same for raw requests through `send`.
    let old = session.token();
    revoke(&admin, &old).await;
    let response = session
        .send(reqwest::Method::GET, "auth/token/lookup-self", |r| r)
        .await
        .expect("raw request after revocation");
    assert_eq!(response.status(), 200);
    assert_ne!(session.token().expose_secret(), old.expose_secret());

    // Concurrent requests that all hit the revoked token share one new login.
    let old = session.token();
    revoke(&admin, &old).await;
    let reads = futures::future::join_all((0..8).map(|_| session.kv_read(&path))).await;
    assert!(reads.iter().all(|r| matches!(r, Ok(Some(_)))), "{reads:?}");
    assert_ne!(session.token().expose_secret(), old.expose_secret());
}

#[tokio::test]
async fn keep_alive_notices_a_revoked_token_on_renewal() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""read""#).await;
    let (role_id, secret_id) = admin
        .approle(
            &prefix,
            json!({ "token_policies": [policy], "token_ttl": "3s", "token_max_ttl": "1h" }),
        )
        .await;
    let session = VaultSession::connect(&config(
        &admin.addr,
        approle_auth(dir.path(), &role_id, &secret_id),
    ))
    .await
    .unwrap();
    let keep_alive = KeepAlive::start(&session);
    let old = session.token();
    let info = admin.lookup(old.expose_secret()).await.unwrap();
    admin
        .revoke_accessor(info["accessor"].as_str().unwrap())
        .await;

    // No request is made: the refused renewal alone leads to a new login.
    let (s, old_token) = (&session, &old);
    common::wait_until(
        Duration::from_secs(10),
        "keep_alive to log in again",
        || async move { s.token().expose_secret() != old_token.expose_secret() },
    )
    .await;
    assert!(
        admin
            .lookup(session.token().expose_secret())
            .await
            .is_some()
    );
    assert_eq!(session.auth_state(), AuthState::Authenticated);
    keep_alive.stop().await;
}

#[tokio::test]
async fn token_method_rereads_the_source_when_the_token_dies() {
    init_logging();
    let admin = RootVault::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let policy = kv_policy(&admin, &prefix, r#""create", "read", "update""#).await;
    let path = format!("secret/{prefix}/api-key");
    admin
        .kv_put(
            &format!("secret/{prefix}/api-key"),
            json!({ "api_key": "x" }),
        )
        .await;
    let (short, _) = admin
        .token(json!({ "policies": [policy], "ttl": "2s", "explicit_max_ttl": "4s" }))
        .await;
    let auth = token_auth(dir.path(), &short);
    let session = VaultSession::connect(&config(&admin.addr, auth))
        .await
        .unwrap();
    let keep_alive = KeepAlive::start(&session);

    // Renewal cannot take it past its max TTL: it dies, and the session says so.
    let (s, a, t) = (&session, &admin, short.as_str());
    common::wait_until(Duration::from_secs(15), "the token to die", || async move {
        a.lookup(t).await.is_none()
    })
    .await;
    common::wait_until(
        Duration::from_secs(5),
        "the session to report the dead token",
        || async move { s.auth_state() == AuthState::Unauthenticated },
    )
    .await;
    let err = session.kv_read(&path).await.unwrap_err();
    assert!(matches!(err, VaultError::Auth(_)), "{err}");
    assert!(!err.to_string().contains(&short), "{err}");

    // The operator drops a new token into the file: the next request picks it up.
    let (fresh, _) = admin
        .token(json!({ "policies": [policy], "ttl": "1h" }))
        .await;
    secret_file(dir.path(), "token", &fresh);
    assert!(
        session
            .kv_read(&path)
            .await
            .expect("read with the new token")
            .is_some()
    );
    assert_eq!(session.token().expose_secret(), fresh);
    common::wait_until(
        Duration::from_secs(5),
        "the session to be authenticated again",
        || async move { s.auth_state() == AuthState::Authenticated },
    )
    .await;
    keep_alive.stop().await;
}

// ---- TLS with a custom CA ----------------------------------------------------------------------

/// A throwaway in-memory OpenBao in `-dev-tls` mode: it generates its own CA and serves HTTPS
/// with a certificate from it. Killed (by its PID, through the child handle) when dropped.
struct DevTlsBao {
    child: std::process::Child,
    dir: tempfile::TempDir,
    address: String,
}

impl DevTlsBao {
    const ROOT_TOKEN: &str = "vs-dev-tls-root";

    async fn start() -> DevTlsBao {
        let dir = tempfile::tempdir().unwrap();
        let port = common::daemon::free_port();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let child = std::process::Command::new(common::env("VS_TEST_BAO_BIN"))
            .arg("server")
            .arg("-dev")
            .arg("-dev-tls")
            .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-root-token-id={}", Self::ROOT_TOKEN))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao -dev-tls");
        let bao = DevTlsBao {
            child,
            address: format!("https://127.0.0.1:{port}"),
            dir,
        };
        let ca = bao.ca();
        common::wait_until(Duration::from_secs(30), "bao -dev-tls to listen", || {
            let ca = ca.clone();
            async move {
                ca.exists()
                    && tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
            }
        })
        .await;
        bao
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("vault-ca.pem")
    }
}

impl Drop for DevTlsBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    init_logging();
    vault_steward::vault::install_crypto_provider();
    let bao = DevTlsBao::start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = token_auth(dir.path(), DevTlsBao::ROOT_TOKEN);

    // Without the CA the server's certificate is not trusted.
    let err = VaultSession::connect(&config(&bao.address, auth.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Unreachable(m) if m.contains("certificate")),
        "{err}"
    );

    let mut cfg = config(&bao.address, auth);
    cfg.ca_cert = Some(bao.ca());
    let session = VaultSession::connect(&cfg)
        .await
        .expect("https with the custom CA");
    assert_eq!(session.address(), bao.address);
    // The dev server's kv-v2 mount upgrades asynchronously: the first write may be refused.
    let s = &session;
    common::wait_until(
        Duration::from_secs(10),
        "a KV write over https",
        || async move {
            s.kv_write("secret/tls/check", &kv(&[("ok", "yes")]), 0)
                .await
                .is_ok()
        },
    )
    .await;
    let read = session.kv_read("secret/tls/check").await.unwrap().unwrap();
    assert_eq!(plain(&read.data)["ok"], "yes");
    // Raw requests share the client and its CA.
    let health = session
        .send(reqwest::Method::GET, "sys/health", |r| r)
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
