//! The one test harness: points at the real local servers that `scripts/testbed.sh up` started
//! (their addresses come from the env file it writes, which `scripts/test.sh` sources), gives each
//! test its own names (KV prefix, DB role, bucket prefix) and waits on readiness instead of
//! sleeping.
//!
//! Environment contract (all set by `scripts/testbed.sh`'s env file):
//! - `VS_TEST_VAULT_ADDR`, `VS_TEST_VAULT_TOKEN_FILE` (root token), `VS_TEST_VAULT_UNSEAL_KEY_FILE`,
//!   `VS_TEST_BAO_BIN`
//! - `VS_TEST_PG_URL` — superuser URL (with password) of the private scram-sha-256 cluster
//! - `VS_TEST_S3_ENDPOINT`, `VS_TEST_SMTP_ADDR`, `VS_TEST_MAILDIR`
//! - `VS_TEST_LOG_DIR` — where daemon logs of the run are collected (for the canary scan)

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reads a required testbed variable, failing the test with a clear message when it is missing.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the testbed env file)")
    })
}

/// A name unique to this test process and call, safe for KV paths, SQL identifiers and S3 keys.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// Polls `check` until it returns true or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ==== Vault session helpers (vault branch: tests/vault_session.rs) =============================
// A root-token admin client to set up policies, AppRoles, tokens and mounts, plus secret files.
// Kept in its own module so it cannot clash with other helpers appended to this file.

pub mod vault_admin {
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};

    /// Talks to the testbed's OpenBao with the root token; the code under test never uses it.
    pub struct VaultAdmin {
        pub addr: String,
        root_token: String,
        http: reqwest::Client,
    }

    impl VaultAdmin {
        pub fn new() -> VaultAdmin {
            vault_steward::vault::install_crypto_provider();
            let token_file = super::env("VS_TEST_VAULT_TOKEN_FILE");
            let root_token = std::fs::read_to_string(&token_file)
                .unwrap_or_else(|e| panic!("reading {token_file}: {e}"))
                .trim()
                .to_string();
            VaultAdmin {
                addr: super::env("VS_TEST_VAULT_ADDR"),
                root_token,
                http: reqwest::Client::new(),
            }
        }

        pub fn root_token(&self) -> &str {
            &self.root_token
        }

        /// A raw request with the root token; returns (status, JSON body or Null).
        pub async fn call(
            &self,
            method: reqwest::Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, Value) {
            let mut request = self
                .http
                .request(method, format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Token", &self.root_token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("vault admin request");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }

        /// Like [`call`](Self::call), panicking unless Vault answers 2xx.
        pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
            let shown = format!("{method} {path}");
            let (status, answer) = self.call(method, path, body).await;
            assert!((200..300).contains(&status), "{shown}: {status} {answer}");
            answer
        }

        pub async fn put_policy(&self, name: &str, hcl: &str) {
            self.ok(
                reqwest::Method::PUT,
                &format!("sys/policies/acl/{name}"),
                Some(json!({ "policy": hcl })),
            )
            .await;
        }

        /// Creates (or updates) AppRole `role` at `auth/approle` with `params` (token_ttl, …) and
        /// returns a fresh (role_id, secret_id).
        pub async fn approle(&self, role: &str, params: Value) -> (String, String) {
            self.ok(
                reqwest::Method::POST,
                &format!("auth/approle/role/{role}"),
                Some(params),
            )
            .await;
            let role_id = self
                .ok(
                    reqwest::Method::GET,
                    &format!("auth/approle/role/{role}/role-id"),
                    None,
                )
                .await["data"]["role_id"]
                .as_str()
                .expect("role_id")
                .to_string();
            let secret_id = self
                .ok(
                    reqwest::Method::POST,
                    &format!("auth/approle/role/{role}/secret-id"),
                    None,
                )
                .await["data"]["secret_id"]
                .as_str()
                .expect("secret_id")
                .to_string();
            (role_id, secret_id)
        }

        /// Creates a token (`auth/token/create` with `params`); returns (token, accessor).
        pub async fn token(&self, params: Value) -> (String, String) {
            let answer = self
                .ok(reqwest::Method::POST, "auth/token/create", Some(params))
                .await;
            let auth = &answer["auth"];
            (
                auth["client_token"]
                    .as_str()
                    .expect("client_token")
                    .to_string(),
                auth["accessor"].as_str().expect("accessor").to_string(),
            )
        }

        /// Looks a token up; `None` if Vault says it is not valid.
        pub async fn lookup(&self, token: &str) -> Option<Value> {
            let (status, answer) = self
                .call(
                    reqwest::Method::POST,
                    "auth/token/lookup",
                    Some(json!({ "token": token })),
                )
                .await;
            (status == 200).then(|| answer["data"].clone())
        }

        pub async fn revoke_accessor(&self, accessor: &str) {
            self.ok(
                reqwest::Method::POST,
                "auth/token/revoke-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await;
        }

        /// Writes a KV v2 version without check-and-set; returns the version.
        pub async fn kv_put(&self, mount: &str, path: &str, data: Value) -> u64 {
            self.ok(
                reqwest::Method::POST,
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await["data"]["version"]
                .as_u64()
                .expect("version")
        }

        /// The secret's metadata as Vault returns it (`None` if missing).
        pub async fn kv_metadata(&self, mount: &str, path: &str) -> Option<Value> {
            let (status, answer) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{mount}/metadata/{path}"),
                    None,
                )
                .await;
            (status == 200).then(|| answer["data"].clone())
        }

        pub async fn enable_mount(&self, path: &str, body: Value) {
            self.ok(
                reqwest::Method::POST,
                &format!("sys/mounts/{path}"),
                Some(body),
            )
            .await;
        }

        pub async fn disable_mount(&self, path: &str) {
            self.ok(reqwest::Method::DELETE, &format!("sys/mounts/{path}"), None)
                .await;
        }
    }

    impl Default for VaultAdmin {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Writes `content` to `dir/name` with mode 0600 (replacing it atomically if it exists).
    pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .expect("create secret file");
        file.write_all(content.as_bytes())
            .expect("write secret file");
        std::fs::rename(&tmp, &path).expect("rename secret file");
        path
    }
}
