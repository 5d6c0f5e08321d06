//! A root-token Vault client for tests: seed and inspect KV v2, create policies and tokens.
//! It talks plain HTTP to the testbed's OpenBao; the code under test never uses it.

use serde_json::{Value, json};

/// A client holding the testbed's root token.
pub struct RootVault {
    pub addr: String,
    token: String,
    http: reqwest::Client,
}

/// One KV v2 version as the tests see it.
#[derive(Debug, Clone)]
pub struct KvVersion {
    pub version: u64,
    pub created_time: chrono::DateTime<chrono::Utc>,
    pub data: serde_json::Map<String, Value>,
}

fn data_path(path: &str) -> String {
    let (mount, rest) = path.split_once('/').expect("MOUNT/path");
    format!("{mount}/data/{rest}")
}

fn metadata_path(path: &str) -> String {
    let (mount, rest) = path.split_once('/').expect("MOUNT/path");
    format!("{mount}/metadata/{rest}")
}

impl RootVault {
    pub fn new() -> RootVault {
        vault_steward::vault::install_crypto_provider();
        let token_file = super::env("VS_TEST_VAULT_TOKEN_FILE");
        let token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("reading {token_file}: {e}"))
            .trim()
            .to_string();
        RootVault {
            addr: super::env("VS_TEST_VAULT_ADDR"),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn root_token(&self) -> &str {
        &self.token
    }

    /// A raw request; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("vault request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Writes a KV v2 version (no check-and-set); returns the new version.
    pub async fn kv_put(&self, path: &str, data: Value) -> u64 {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &data_path(path),
                Some(json!({ "data": data })),
            )
            .await;
        assert!(
            status == 200 || status == 204,
            "kv put {path}: {status} {body}"
        );
        body["data"]["version"].as_u64().expect("version")
    }

    /// Reads the current version (None if missing).
    pub async fn kv_get(&self, path: &str) -> Option<KvVersion> {
        self.kv_get_version(path, None).await
    }

    pub async fn kv_get_version(&self, path: &str, version: Option<u64>) -> Option<KvVersion> {
        let mut p = data_path(path);
        if let Some(v) = version {
            p = format!("{p}?version={v}");
        }
        let (status, body) = self.call(reqwest::Method::GET, &p, None).await;
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "kv get {path}: {body}");
        let md = &body["data"]["metadata"];
        Some(KvVersion {
            version: md["version"].as_u64().expect("version"),
            created_time: md["created_time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .expect("created_time")
                .with_timezone(&chrono::Utc),
            data: body["data"]["data"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The secret's metadata (`custom_metadata`, `current_version`, …); `None` if missing.
    pub async fn kv_metadata(&self, path: &str) -> Option<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, &metadata_path(path), None)
            .await;
        (status == 200).then(|| body["data"].clone())
    }

    /// The current version number, 0 if the secret does not exist.
    pub async fn current_version(&self, path: &str) -> u64 {
        let (status, body) = self
            .call(reqwest::Method::GET, &metadata_path(path), None)
            .await;
        if status == 404 {
            return 0;
        }
        body["data"]["current_version"].as_u64().unwrap_or(0)
    }

    /// Writes a policy.
    pub async fn put_policy(&self, name: &str, hcl: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("sys/policies/acl/{name}"),
                Some(json!({ "policy": hcl })),
            )
            .await;
        assert!(
            status == 200 || status == 204,
            "policy {name}: {status} {body}"
        );
    }

    /// A token (1h) whose fresh policy allows create/read/update on `secret/<prefix>/*` only.
    pub async fn scoped_token(&self, prefix: &str) -> String {
        self.scoped_token_with(prefix, "").await
    }

    /// As [`scoped_token`](Self::scoped_token), with `extra_hcl` added to the policy (e.g.
    /// `read` on `sys/storage/raft/snapshot`).
    pub async fn scoped_token_with(&self, prefix: &str, extra_hcl: &str) -> String {
        let policy = super::unique("steward");
        self.put_policy(
            &policy,
            &format!(
                r#"
path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
{extra_hcl}
"#
            ),
        )
        .await;
        self.create_token(&[&policy], "1h").await
    }

    /// Creates a token with these policies and TTL (e.g. "1h"); returns it.
    pub async fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        self.token(json!({ "policies": policies, "ttl": ttl }))
            .await
            .0
    }

    /// Like [`call`](Self::call), panicking unless Vault answers 2xx.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let shown = format!("{method} {path}");
        let (status, answer) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{shown}: {status} {answer}");
        answer
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

impl Default for RootVault {
    fn default() -> Self {
        Self::new()
    }
}
