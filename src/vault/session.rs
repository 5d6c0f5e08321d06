//! The authenticated session and its keep-alive loop.
//!
//! One `reqwest::Client` (custom CA, timeouts) serves vaultrs and raw requests alike. vaultrs
//! wants the token inside its client; instead of one long-lived vaultrs client per token, every
//! call builds a small [`TokenClient`] around the shared HTTP client with the token of that
//! moment, so a re-login swaps the token for every job at once. Logins, renewals and the
//! "was that 403 a dead token?" check are serialised by one async mutex.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vaultrs::api::EndpointMiddleware;
use vaultrs::api::kv2::requests::{
    DeleteSecretMetadataRequest, ReadSecretMetadataRequest, ReadSecretRequest,
    SetSecretMetadataRequest, SetSecretRequest, SetSecretRequestOptions,
};
use vaultrs::client::VaultClientSettings;
use zeroize::Zeroize;

use super::error::{CallError, error_chain, errors_from_body};
use super::kv::{self, Mount, MountKind};
use super::renewal::{self, Lease, TokenOps};
use super::{KvData, KvMetadata, KvSecret, KvWrite, VaultError};
use crate::config::secret::SecretSource;
use crate::config::{VaultAuth, VaultConfig};

/// vaultrs's HTTP client type (rustify over reqwest).
type RestClient = rustify::clients::reqwest::Client;

const RENEW_SELF: &str = "auth/token/renew-self";
const LOOKUP_SELF: &str = "auth/token/lookup-self";

/// Whether the session currently holds a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    Authenticated,
    Unauthenticated,
}

/// The token and what we know about it.
struct TokenState {
    token: SecretString,
    /// Bumped by every login, so a request that hit a 403 can tell whether someone else already
    /// replaced the token it used.
    generation: u64,
    /// `None` before the first login.
    lease: Option<Lease>,
    /// What a renewal grants when the max TTL is not near: the login's lease duration, or the
    /// looked-up token's `creation_ttl`.
    full_ttl: Duration,
    /// Vault refused this token (403 on renew or lookup); cleared by the next login.
    invalid: bool,
}

/// One Vault client shared by all jobs.
pub struct VaultSession {
    address: String,
    namespace: Option<String>,
    auth: VaultAuth,
    http: reqwest::Client,
    rest: RestClient,
    settings: VaultClientSettings,
    state: RwLock<TokenState>,
    /// Serialises login, renewal and the dead-token check.
    login_lock: Mutex<()>,
    /// `notify_waiters` after each login, for the keep-alive loop.
    changed: Notify,
    /// Mounts found through `sys/internal/ui/mounts`, KV v2 or not.
    mounts: RwLock<Vec<Mount>>,
}

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("auth", &self.auth)
            .field("token", &"[redacted]")
            .field("auth_state", &self.auth_state())
            .finish()
    }
}

/// A vaultrs client for one call, carrying the token of that moment. vaultrs keeps the token in
/// a plain `String` in its middleware; it is wiped when the call is done.
struct TokenClient<'a> {
    rest: &'a RestClient,
    settings: &'a VaultClientSettings,
    middle: EndpointMiddleware,
}

impl vaultrs::client::Client for TokenClient<'_> {
    fn http(&self) -> &RestClient {
        self.rest
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        self.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token.zeroize();
        self.middle.token = token.to_string();
    }
}

impl Drop for TokenClient<'_> {
    fn drop(&mut self) {
        self.middle.token.zeroize();
    }
}

impl VaultSession {
    /// Builds the client (custom CA, namespace, timeouts) and logs in.
    pub async fn connect(config: &VaultConfig) -> Result<Arc<Self>, VaultError> {
        let session = Self::new(config)?;
        session.login().await?;
        Ok(session)
    }

    /// Builds the client without logging in: [`auth_state`](Self::auth_state) is
    /// `Unauthenticated` until [`login`](Self::login) or [`keep_alive`](Self::keep_alive)
    /// succeeds. For a daemon that should start even while Vault is down.
    pub fn new(config: &VaultConfig) -> Result<Arc<Self>, VaultError> {
        super::install_crypto_provider();
        let url = url::Url::parse(config.address.trim())
            .map_err(|e| VaultError::Setup(format!("address {:?}: {e}", config.address)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(VaultError::Setup(format!(
                "address {:?} must look like https://HOST:PORT",
                config.address
            )));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(VaultError::Setup(format!(
                "address {:?} must not have a path or query",
                config.address
            )));
        }
        let address = url.as_str().trim_end_matches('/').to_string();

        let namespace = config
            .namespace
            .as_deref()
            .map(|ns| ns.trim_matches('/'))
            .filter(|ns| !ns.is_empty())
            .map(str::to_string);
        if let Some(ns) = &namespace {
            reqwest::header::HeaderValue::from_str(ns).map_err(|_| {
                VaultError::Setup(format!("namespace {ns:?} is not a valid header value"))
            })?;
        }

        let timeout = config.request_timeout.as_std();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vault-steward/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // `previous` holds the original URL first and the one just answered last.
                let previous = attempt.previous();
                let safe = previous.len() <= MAX_REDIRECTS
                    && !previous.is_empty()
                    && previous
                        .iter()
                        .all(|from| redirect_keeps_the_token_safe(from, attempt.url()));
                if safe {
                    attempt.follow()
                } else {
                    attempt.error(UnsafeRedirect)
                }
            }))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                VaultError::Setup(format!("reading CA certificate {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                VaultError::Setup(format!(
                    "CA certificate {}: {}",
                    ca.display(),
                    error_chain(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(VaultError::Setup(format!(
                    "CA certificate {} holds no PEM certificate",
                    ca.display()
                )));
            }
            // Like VAULT_CACERT for the vault CLI: this CA, not the system store.
            builder = builder.tls_certs_only(certs);
        } else if url.scheme() == "http" {
            // Plain HTTP needs no roots; not loading the platform verifier keeps hosts without a
            // system CA store working (vaultrs does the same).
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = builder.build().map_err(|e| {
            VaultError::Setup(format!("building the HTTP client: {}", error_chain(&e)))
        })?;

        let settings = VaultClientSettings {
            address: url,
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(timeout),
            token: String::new(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace: namespace.clone(),
            proxy: None,
        };
        Ok(Arc::new(VaultSession {
            rest: RestClient::new(&address, http.clone()),
            address,
            namespace,
            auth: config.auth.clone(),
            http,
            settings,
            state: RwLock::new(TokenState {
                token: SecretString::from(""),
                generation: 0,
                lease: None,
                full_ttl: Duration::ZERO,
                invalid: false,
            }),
            login_lock: Mutex::new(()),
            changed: Notify::new(),
            mounts: RwLock::new(Vec::new()),
        }))
    }

    /// Logs in now: AppRole login, or (token method) reads the token source and looks the token
    /// up to learn its TTL. On failure the current token, if any, is kept.
    pub async fn login(&self) -> Result<(), VaultError> {
        let _guard = self.login_lock.lock().await;
        self.login_locked().await
    }

    /// Keeps the token alive until `cancel`: renews at about two thirds of its TTL, logs in
    /// again (AppRole, or re-reads the token source) when renewal is refused or the token was
    /// revoked, backing off while Vault is unreachable.
    pub async fn keep_alive(self: Arc<Self>, cancel: CancellationToken) {
        renewal::drive(&*self, &cancel).await;
    }

    pub fn auth_state(&self) -> AuthState {
        let state = self.read_state();
        match state.lease {
            Some(lease) if !state.invalid && !lease.is_expired(Instant::now()) => {
                AuthState::Authenticated
            }
            _ => AuthState::Unauthenticated,
        }
    }

    /// `https://host:port` without a trailing slash.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The namespace sent as `X-Vault-Namespace`, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The HTTP client (with the custom CA) for endpoints vaultrs lacks. Its total timeout is
    /// the configured `request_timeout`: a long stream (raft snapshot) must set its own with
    /// `RequestBuilder::timeout`, which overrides it.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The current token, for raw requests.
    pub fn token(&self) -> SecretString {
        self.read_state().token.clone()
    }

    /// A request to `ADDRESS/v1/{api_path}` carrying the current token (marked sensitive) and
    /// the namespace. Prefer [`send`](Self::send), which also handles a revoked token.
    pub fn request(&self, method: reqwest::Method, api_path: &str) -> reqwest::RequestBuilder {
        let token = self.token();
        self.raw(method, api_path, token.expose_secret())
    }

    /// As [`request`](Self::request), but always in the root namespace (no
    /// `X-Vault-Namespace`): for root-only endpoints such as `sys/storage/raft/*`, which Vault
    /// refuses inside a namespace ("operation unavailable in namespaces").
    pub fn request_root(&self, method: reqwest::Method, api_path: &str) -> reqwest::RequestBuilder {
        let token = self.token();
        self.raw_in(method, api_path, token.expose_secret(), None)
    }

    /// Sends a raw request to `ADDRESS/v1/{api_path}` (token and namespace added; `customize`
    /// adds the rest, and is called again for the retry) and returns the response of any 2xx
    /// answer with its body unread, so it can be streamed. A 403 caused by a revoked or expired
    /// token leads to one login and one retry, as for every other call; other answers become
    /// scrubbed errors.
    pub async fn send<F>(
        &self,
        method: reqwest::Method,
        api_path: &str,
        customize: F,
    ) -> Result<reqwest::Response, VaultError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        self.send_in(method, api_path, self.namespace.as_deref(), customize)
            .await
    }

    /// As [`send`](Self::send), but in the root namespace whatever `namespace` is configured
    /// (see [`request_root`](Self::request_root)).
    pub async fn send_root<F>(
        &self,
        method: reqwest::Method,
        api_path: &str,
        customize: F,
    ) -> Result<reqwest::Response, VaultError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        self.send_in(method, api_path, None, customize).await
    }

    async fn send_in<F>(
        &self,
        method: reqwest::Method,
        api_path: &str,
        namespace: Option<&str>,
        customize: F,
    ) -> Result<reqwest::Response, VaultError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let attempt = |token: SecretString| {
            customize(self.raw_in(method.clone(), api_path, token.expose_secret(), namespace))
                .send()
        };
        let (token, generation) = self.current_token();
        let mut response = attempt(token)
            .await
            .map_err(|e| VaultError::from_reqwest(api_path, &e))?;
        if response.status() == reqwest::StatusCode::FORBIDDEN {
            match self.recover(generation).await {
                Ok(true) => {
                    let (token, _) = self.current_token();
                    response = attempt(token)
                        .await
                        .map_err(|e| VaultError::from_reqwest(api_path, &e))?;
                }
                Ok(false) => {}
                Err(err) => return Err(err.into_vault_error(api_path)),
            }
        }
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(VaultError::from_response(api_path, response).await)
        }
    }

    /// Reads the current version of `path` (`MOUNT/REST`, e.g. `secret/api-key/default`);
    /// `None` if it does not exist or its current version is deleted.
    pub async fn kv_read(&self, path: &str) -> Result<Option<KvSecret>, VaultError> {
        self.kv_read_inner(path, None).await
    }

    /// Reads one version of `path`.
    pub async fn kv_read_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<KvSecret>, VaultError> {
        self.kv_read_inner(path, Some(version)).await
    }

    /// Reads the metadata of `path`; `None` if no secret exists there.
    pub async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        let result = self
            .call(|client| {
                let endpoint = ReadSecretMetadataRequest {
                    mount: mount.clone(),
                    path: rest.clone(),
                };
                async move {
                    vaultrs::api::exec_with_result(&client, endpoint)
                        .await
                        .map_err(CallError::from)
                }
            })
            .await;
        match result {
            Ok(response) => kv::metadata_from_response(response)
                .map(Some)
                .map_err(|message| unexpected(path, message)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(self.kv_error(err, path, &mount)),
        }
    }

    /// Writes a new version with check-and-set: `cas = 0` means "only if it does not exist",
    /// `cas = n` "only if the current version is n". A mismatch is [`VaultError::CasMismatch`].
    pub async fn kv_write(
        &self,
        path: &str,
        data: &KvData,
        cas: u64,
    ) -> Result<KvWrite, VaultError> {
        // vaultrs sends cas as u32; four billion versions is beyond any real secret.
        let cas32 = u32::try_from(cas).map_err(|_| {
            VaultError::Setup(format!("check-and-set version {cas} is out of range"))
        })?;
        let (mount, rest) = self.kv_location(path).await?;
        let result = self
            .call(|client| {
                // Every field with its own JSON type: foreign numbers, booleans, arrays,
                // objects and nulls go back exactly as they were read.
                let endpoint = SetSecretRequest {
                    mount: mount.clone(),
                    path: rest.clone(),
                    data: data.to_json(),
                    options: Some(SetSecretRequestOptions { cas: cas32 }),
                };
                async move {
                    vaultrs::api::exec_with_result(&client, endpoint)
                        .await
                        .map_err(CallError::from)
                }
            })
            .await;
        match result {
            Ok(meta) => Ok(KvWrite {
                version: meta.version,
                created_time: kv::parse_time("created_time", &meta.created_time)
                    .map_err(|message| unexpected(path, message))?,
            }),
            Err(err) if err.is_cas_mismatch() => Err(VaultError::CasMismatch {
                path: path.to_string(),
                expected: cas,
            }),
            Err(err) => Err(self.kv_error(err, path, &mount)),
        }
    }

    /// Replaces the secret's `custom_metadata` (other metadata such as `max_versions` is left
    /// as it is).
    pub async fn kv_set_custom_metadata(
        &self,
        path: &str,
        custom: &BTreeMap<String, String>,
    ) -> Result<(), VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        self.call(|client| {
            let endpoint = SetSecretMetadataRequest {
                mount: mount.clone(),
                path: rest.clone(),
                custom_metadata: Some(custom.clone().into_iter().collect()),
                ..Default::default()
            };
            async move {
                vaultrs::api::exec_with_empty(&client, endpoint)
                    .await
                    .map_err(CallError::from)
            }
        })
        .await
        .map_err(|err| self.kv_error(err, path, &mount))
    }

    /// Deletes every version of `path` and its metadata for good (`DELETE MOUNT/metadata/REST`);
    /// nothing there is fine.
    pub async fn kv_delete_all(&self, path: &str) -> Result<(), VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        let result = self
            .call(|client| {
                let endpoint = DeleteSecretMetadataRequest {
                    mount: mount.clone(),
                    path: rest.clone(),
                };
                async move {
                    vaultrs::api::exec_with_empty(&client, endpoint)
                        .await
                        .map_err(CallError::from)
                }
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(self.kv_error(err, path, &mount)),
        }
    }

    /// What this token's policies allow on `path`'s data (`MOUNT/data/REST`) and metadata
    /// (`MOUNT/metadata/REST`) endpoints, from `sys/capabilities-self` (e.g. `["read",
    /// "update"]`, `["root"]`, `["deny"]`).
    pub async fn kv_capabilities(&self, path: &str) -> Result<KvCapabilities, VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        let data_path = format!("{mount}/data/{rest}");
        let metadata_path = format!("{mount}/metadata/{rest}");
        let body = serde_json::json!({ "paths": [data_path, metadata_path] });
        let response = self
            .send(reqwest::Method::POST, "sys/capabilities-self", |r| {
                r.json(&body)
            })
            .await?;
        let answer: serde_json::Value = crate::body::json_limited(response, crate::body::MAX_BODY)
            .await
            .map_err(|e| VaultError::from_body("sys/capabilities-self", e))?;
        let list = |p: &str| -> Vec<String> {
            answer
                .get(p)
                .or_else(|| answer.get("data").and_then(|d| d.get(p)))
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(KvCapabilities {
            data: list(&data_path),
            metadata: list(&metadata_path),
        })
    }
}

/// The capabilities of a token on one KV v2 secret (see [`VaultSession::kv_capabilities`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvCapabilities {
    pub data: Vec<String>,
    pub metadata: Vec<String>,
}

impl KvCapabilities {
    /// Whether `capability` is granted on the data endpoint (`root` grants everything).
    pub fn data_allows(&self, capability: &str) -> bool {
        allows(&self.data, capability)
    }

    /// Whether `capability` is granted on the metadata endpoint.
    pub fn metadata_allows(&self, capability: &str) -> bool {
        allows(&self.metadata, capability)
    }
}

fn allows(granted: &[String], capability: &str) -> bool {
    !granted.iter().any(|c| c == "deny") && granted.iter().any(|c| c == "root" || c == capability)
}

// ---- Policy checks -----------------------------------------------------------------------------

impl VaultSession {
    /// What this session's token may do on each API path (`sys/capabilities-self`), e.g.
    /// `["create", "read", "update"]`, `["deny"]` or `["root"]`. Proves write access without
    /// writing (for `check --connect`).
    pub async fn capabilities_self(
        &self,
        api_paths: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, VaultError> {
        const PATH: &str = "sys/capabilities-self";
        let body = serde_json::json!({ "paths": api_paths });
        let response = self
            .send(reqwest::Method::POST, PATH, |r| r.json(&body))
            .await?;
        let answer: serde_json::Value = crate::body::json_limited(response, crate::body::MAX_BODY)
            .await
            .map_err(|e| VaultError::from_body(PATH, e))?;
        let data = answer.get("data").unwrap_or(&answer);
        api_paths
            .iter()
            .map(|p| {
                let caps = data
                    .get(p)
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| unexpected(PATH, format!("no capabilities listed for {p}")))?
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect();
                Ok((p.clone(), caps))
            })
            .collect()
    }

    /// The API paths (`MOUNT/data/REST`, `MOUNT/metadata/REST`) of a KV v2 `path` as operators
    /// write it; [`VaultError::NotKvV2`] if it is not inside a KV v2 mount.
    pub async fn kv_api_paths(&self, path: &str) -> Result<(String, String), VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        Ok((
            format!("{mount}/data/{rest}"),
            format!("{mount}/metadata/{rest}"),
        ))
    }
}

// ---- KV plumbing -------------------------------------------------------------------------------

impl VaultSession {
    async fn kv_read_inner(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<KvSecret>, VaultError> {
        let (mount, rest) = self.kv_location(path).await?;
        let result = self
            .call(|client| {
                let endpoint = ReadSecretRequest {
                    mount: mount.clone(),
                    path: rest.clone(),
                    version,
                };
                async move {
                    vaultrs::api::exec_with_result(&client, endpoint)
                        .await
                        .map_err(CallError::from)
                }
            })
            .await;
        let response = match result {
            Ok(response) => response,
            // Missing, or (the body says so, but we do not keep bodies) deleted or destroyed.
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(self.kv_error(err, path, &mount)),
        };
        let meta = &response.metadata;
        if meta.destroyed || !meta.deletion_time.is_empty() || response.data.is_null() {
            return Ok(None);
        }
        let version = meta.version;
        let custom_metadata = meta
            .custom_metadata
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let created_time = kv::parse_time("created_time", &meta.created_time)
            .map_err(|message| unexpected(path, message))?;
        let data =
            kv::data_from_json(response.data).map_err(|message| unexpected(path, message))?;
        Ok(Some(KvSecret {
            data,
            version,
            created_time,
            custom_metadata,
        }))
    }

    /// The KV v2 mount (without slash) and the path inside it for an operator's `path`.
    async fn kv_location(&self, path: &str) -> Result<(String, String), VaultError> {
        let not_kv2 = |reason: String| VaultError::NotKvV2 {
            path: path.to_string(),
            reason,
        };
        let normalized = kv::normalize_path(path).map_err(not_kv2)?;
        let cached = kv::find_mount(&self.read_mounts(), normalized).cloned();
        let mount = match cached {
            Some(mount) => mount,
            None => {
                let mount = self.lookup_mount(path, normalized).await?;
                let mut mounts = self.write_mounts();
                if !mounts.iter().any(|m| m.path == mount.path) {
                    mounts.push(mount.clone());
                }
                mount
            }
        };
        match &mount.kind {
            MountKind::KvV2 => mount
                .split(normalized)
                .map(|(mount, rest)| (mount, rest.to_string()))
                .map_err(not_kv2),
            MountKind::Other(what) => {
                Err(not_kv2(format!("it is in mount {} ({what})", mount.path)))
            }
        }
    }

    /// Asks Vault which mount holds `normalized`, as the vault CLI does.
    async fn lookup_mount(&self, path: &str, normalized: &str) -> Result<Mount, VaultError> {
        let api_path = format!("sys/internal/ui/mounts/{normalized}");
        let result = self
            .call(|client| {
                let api_path = api_path.clone();
                async move { self.get_json(&client, &api_path).await }
            })
            .await;
        match result {
            Ok(body) => body
                .get("data")
                .ok_or_else(|| "the mount lookup answered without data".to_string())
                .and_then(Mount::from_ui_mounts)
                .map_err(|message| unexpected(path, message)),
            // Vault answers 403 both for "no mount there" and "no grant anywhere in that mount"
            // (so the endpoint cannot be used to list mounts).
            Err(err) if err.status() == Some(403) => Err(VaultError::NotKvV2 {
                path: path.to_string(),
                reason: "Vault knows no mount there that this token may use".into(),
            }),
            Err(err) => Err(err.into_vault_error(path)),
        }
    }

    /// Maps a failed KV call; a "no handler for route" answer means the mount went away, so it
    /// is dropped from the cache.
    fn kv_error(&self, err: CallError, path: &str, mount: &str) -> VaultError {
        if err.is_no_route() {
            let gone = format!("{mount}/");
            self.write_mounts().retain(|m| m.path != gone);
            return VaultError::NotKvV2 {
                path: path.to_string(),
                reason: format!("Vault has no mount at {gone} any more"),
            };
        }
        err.into_vault_error(path)
    }
}

fn unexpected(path: &str, message: String) -> VaultError {
    VaultError::Api {
        path: path.to_string(),
        status: 200,
        message,
    }
}

// ---- Requests and the token --------------------------------------------------------------------

impl VaultSession {
    fn read_state(&self) -> RwLockReadGuard<'_, TokenState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, TokenState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_mounts(&self) -> RwLockReadGuard<'_, Vec<Mount>> {
        self.mounts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_mounts(&self) -> RwLockWriteGuard<'_, Vec<Mount>> {
        self.mounts.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn current_token(&self) -> (SecretString, u64) {
        let state = self.read_state();
        (state.token.clone(), state.generation)
    }

    fn client(&self) -> (TokenClient<'_>, u64) {
        let (token, generation) = self.current_token();
        (self.client_with(token.expose_secret()), generation)
    }

    fn client_with(&self, token: &str) -> TokenClient<'_> {
        TokenClient {
            rest: &self.rest,
            settings: &self.settings,
            middle: EndpointMiddleware {
                token: token.to_string(),
                version: "v1".to_string(),
                wrap: None,
                namespace: self.namespace.clone(),
            },
        }
    }

    fn raw(&self, method: reqwest::Method, api_path: &str, token: &str) -> reqwest::RequestBuilder {
        self.raw_in(method, api_path, token, self.namespace.as_deref())
    }

    fn raw_in(
        &self,
        method: reqwest::Method,
        api_path: &str,
        token: &str,
        namespace: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/{}", self.address, api_path.trim_start_matches('/'));
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Request", "true");
        if !token.is_empty()
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(token)
        {
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(ns) = namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        request
    }

    /// GET of a JSON answer through the raw client.
    async fn get_json(
        &self,
        client: &TokenClient<'_>,
        api_path: &str,
    ) -> Result<serde_json::Value, CallError> {
        let response = self
            .raw(reqwest::Method::GET, api_path, &client.middle.token)
            .send()
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        let status = response.status();
        let body = crate::body::read_limited(response, crate::body::MAX_BODY)
            .await
            .map_err(|e| match e {
                crate::body::BodyError::Transport(message) => CallError::Transport(message),
                too_large => CallError::Unexpected(too_large.to_string()),
            })?;
        if !status.is_success() {
            return Err(CallError::Status {
                code: status.as_u16(),
                errors: errors_from_body(&body),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|_| CallError::Unexpected("the answer is not JSON".into()))
    }

    /// Runs `op` with the current token; if Vault answers 403 because the token died (revoked
    /// between renewals, expired during an outage), logs in again and runs it once more.
    async fn call<'s, T, F, Fut>(&'s self, op: F) -> Result<T, CallError>
    where
        F: Fn(TokenClient<'s>) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (client, generation) = self.client();
        match op(client).await {
            Err(err) if err.status() == Some(403) => {
                if self.recover(generation).await? {
                    let (client, _) = self.client();
                    op(client).await
                } else {
                    Err(err)
                }
            }
            other => other,
        }
    }

    /// After a 403 with the token of `generation`: `Ok(true)` if a fresh token is now in place
    /// (someone else logged in meanwhile, or we did), `Ok(false)` if the token is fine and the
    /// 403 was the policy's answer, `Err` if the token is dead and logging in failed.
    async fn recover(&self, generation: u64) -> Result<bool, CallError> {
        let _guard = self.login_lock.lock().await;
        if self.read_state().generation != generation {
            return Ok(true);
        }
        let looked_up = {
            let (client, _) = self.client();
            vaultrs::token::lookup_self(&client)
                .await
                .map(|mut info| info.id.zeroize())
                .map_err(CallError::from)
        };
        match looked_up {
            Ok(()) => Ok(false),
            Err(err) if err.status() == Some(403) => {
                tracing::info!("the vault token was revoked or has expired; logging in again");
                self.write_state().invalid = true;
                self.login_locked()
                    .await
                    .map(|()| true)
                    .map_err(CallError::Login)
            }
            // Cannot tell (Vault went away): report the original 403.
            Err(_) => Ok(false),
        }
    }

    /// Logs in; the caller holds `login_lock`.
    async fn login_locked(&self) -> Result<(), VaultError> {
        let (method, login) = match &self.auth {
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => (
                "approle",
                self.approle_login(mount, role_id, secret_id).await,
            ),
            VaultAuth::Token { token } => ("token", self.token_login(token).await),
        };
        let (token, lease, full_ttl) = login.inspect_err(|err| {
            tracing::warn!(method, error = %err, "vault login failed");
        })?;
        let same_token = {
            let mut state = self.write_state();
            let same = state.token.expose_secret() == token.expose_secret();
            state.token = token;
            state.generation += 1;
            state.lease = Some(lease);
            state.full_ttl = full_ttl;
            state.invalid = false;
            same
        };
        let ttl_secs = lease
            .expires
            .map(|at| at.saturating_duration_since(lease.obtained).as_secs());
        if same_token {
            // Token method: the source still holds the token we had.
            tracing::debug!(method, ttl_secs, "looked the vault token up again");
        } else {
            tracing::info!(
                method,
                ttl_secs,
                renewable = lease.renewable,
                "logged in to vault"
            );
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn approle_login(
        &self,
        mount: &str,
        role_id: &SecretSource,
        secret_id: &SecretSource,
    ) -> Result<(SecretString, Lease, Duration), VaultError> {
        let role_id = role_id
            .read()
            .map_err(|e| VaultError::Auth(format!("reading the AppRole role_id: {e}")))?;
        let secret_id = secret_id
            .read()
            .map_err(|e| VaultError::Auth(format!("reading the AppRole secret_id: {e}")))?;
        let mount = mount.trim_matches('/');
        let path = format!("auth/{mount}/login");
        let result = {
            let client = self.client_with("");
            vaultrs::auth::approle::login(
                &client,
                mount,
                role_id.expose_secret(),
                secret_id.expose_secret(),
            )
            .await
            .map_err(CallError::from)
        };
        let mut auth = result.map_err(|err| login_error(err, &path))?;
        let token = SecretString::from(auth.client_token.as_str());
        auth.client_token.zeroize();
        check_header_safe(&token)?;
        let now = Instant::now();
        let ttl = Duration::from_secs(auth.lease_duration);
        let lease = Lease {
            obtained: now,
            expires: (!ttl.is_zero()).then(|| now + ttl),
            renewable: auth.renewable,
            capped: false,
        };
        Ok((token, lease, ttl))
    }

    async fn token_login(
        &self,
        source: &SecretSource,
    ) -> Result<(SecretString, Lease, Duration), VaultError> {
        let token = source
            .read()
            .map_err(|e| VaultError::Auth(format!("reading the token: {e}")))?;
        check_header_safe(&token)?;
        let result = {
            let client = self.client_with(token.expose_secret());
            vaultrs::token::lookup_self(&client)
                .await
                .map_err(CallError::from)
        };
        let mut info = result.map_err(|err| match err.status() {
            Some(403) => VaultError::Auth(format!(
                "the token from {source:?} is invalid or has expired"
            )),
            _ => login_error(err, LOOKUP_SELF),
        })?;
        info.id.zeroize();
        let now = Instant::now();
        let ttl = Duration::from_secs(info.ttl);
        // Root and other non-expiring tokens have no expire_time.
        let expires = (info.expire_time.is_some() || !ttl.is_zero()).then(|| now + ttl);
        let full_ttl = if info.creation_ttl > 0 {
            Duration::from_secs(info.creation_ttl)
        } else {
            ttl
        };
        let lease = Lease {
            obtained: now,
            expires,
            renewable: info.renewable.unwrap_or(false),
            capped: false,
        };
        Ok((token, lease, full_ttl))
    }

    /// Renews the current token; the grant tells whether the max TTL is near.
    async fn renew_locked(&self) -> Result<(), VaultError> {
        let result = {
            let (client, _) = self.client();
            vaultrs::token::renew_self(&client, None)
                .await
                .map(|mut auth| {
                    auth.client_token.zeroize();
                    (auth.lease_duration, auth.renewable)
                })
                .map_err(CallError::from)
        };
        match result {
            Ok((granted, renewable)) => {
                let now = Instant::now();
                let granted = Duration::from_secs(granted);
                let mut state = self.write_state();
                // A grant below the full TTL means the max TTL cut it short.
                let capped = granted.is_zero() || granted < state.full_ttl;
                state.full_ttl = state.full_ttl.max(granted);
                state.lease = Some(Lease {
                    obtained: now,
                    expires: Some(now + granted),
                    renewable,
                    capped,
                });
                tracing::debug!(
                    ttl_secs = granted.as_secs(),
                    capped,
                    "renewed the vault token"
                );
                Ok(())
            }
            Err(err) => {
                if err.status() == Some(403) {
                    self.write_state().invalid = true;
                }
                Err(err.into_vault_error(RENEW_SELF))
            }
        }
    }
}

impl TokenOps for VaultSession {
    fn lease(&self) -> Option<Lease> {
        let state = self.read_state();
        if state.invalid { None } else { state.lease }
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }

    async fn renew_token(&self) -> Result<(), VaultError> {
        let _guard = self.login_lock.lock().await;
        self.renew_locked().await
    }

    async fn relogin(&self) -> Result<(), VaultError> {
        self.login().await
    }
}

/// A refused login is [`VaultError::Auth`]; an unreachable Vault stays `Unreachable`.
fn login_error(err: CallError, path: &str) -> VaultError {
    match err {
        CallError::Status { code, errors } if (400..500).contains(&code) && code != 429 => {
            let detail = if errors.is_empty() {
                format!("HTTP {code}")
            } else {
                errors.join("; ")
            };
            VaultError::Auth(format!("{path}: {detail}"))
        }
        other => other.into_vault_error(path),
    }
}

/// vaultrs puts the token into a header and panics on bytes a header cannot hold.
fn check_header_safe(token: &SecretString) -> Result<(), VaultError> {
    if token.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(VaultError::Auth(
            "the token contains characters that cannot be sent in an HTTP header".into(),
        ))
    }
}

/// Redirects followed per request: a standby points at the active node once.
const MAX_REDIRECTS: usize = 3;

/// A redirect refused because the `X-Vault-Token` header would go along (reqwest strips only
/// `Authorization`-style headers across hosts).
#[derive(Debug, thiserror::Error)]
#[error(
    "refused a redirect that would send the Vault token over plain HTTP or to another host without TLS"
)]
struct UnsafeRedirect;

/// Whether a request first sent to `from` may follow a redirect to `to`, token and all. A
/// redirect from https to anything but https is refused (it would send the token in clear). A
/// change of host is allowed over https only: a Vault standby redirects to the active node's
/// `api_addr`, and that host must show a certificate the configured CA trusts; over plain HTTP
/// nothing vouches for the new host, so only the same host (any port) is followed.
fn redirect_keeps_the_token_safe(from: &url::Url, to: &url::Url) -> bool {
    match (from.scheme(), to.scheme()) {
        ("https", "https") => true,
        ("http", "http") | ("http", "https") => {
            from.host_str().map(str::to_ascii_lowercase)
                == to.host_str().map(str::to_ascii_lowercase)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redirects_never_downgrade_or_leave_an_unauthenticated_host() {
        use super::redirect_keeps_the_token_safe as safe;
        let u = |s: &str| url::Url::parse(s).unwrap();
        // A standby's redirect to the active node over TLS.
        assert!(safe(
            &u("https://vault-1:8200/v1/x"),
            &u("https://vault-2:8200/v1/x")
        ));
        // Downgrades are refused, whatever the host.
        assert!(!safe(
            &u("https://vault:8200/v1/x"),
            &u("http://vault:8200/v1/x")
        ));
        assert!(!safe(
            &u("https://vault:8200/v1/x"),
            &u("http://evil:80/v1/x")
        ));
        // Plain HTTP: the same host (another port) only; an upgrade to https is fine.
        assert!(safe(
            &u("http://127.0.0.1:8200/v1/x"),
            &u("http://127.0.0.1:8201/v1/x")
        ));
        assert!(safe(
            &u("http://vault:8200/v1/x"),
            &u("https://vault:8200/v1/x")
        ));
        assert!(!safe(
            &u("http://vault:8200/v1/x"),
            &u("http://other:8200/v1/x")
        ));
        assert!(!safe(
            &u("http://vault:8200/v1/x"),
            &u("https://other:8200/v1/x")
        ));
        // Other schemes never.
        assert!(!safe(
            &u("https://vault:8200/v1/x"),
            &u("file:///etc/passwd")
        ));
    }

    use super::*;
    use crate::config::Duration as ConfigDuration;

    fn config(address: &str) -> VaultConfig {
        VaultConfig {
            address: address.to_string(),
            ca_cert: None,
            namespace: None,
            request_timeout: ConfigDuration::from_secs(5),
            auth: VaultAuth::Token {
                token: SecretSource::Env {
                    var: "VS_UNIT_TEST_NO_SUCH_TOKEN".into(),
                },
            },
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(VaultSession::new(&config("http://127.0.0.1:8200")).is_ok());
        let session = VaultSession::new(&config("https://vault.example.com:8200/")).unwrap();
        assert_eq!(session.address(), "https://vault.example.com:8200");
        for bad in [
            "vault.example.com:8200",
            "ftp://vault:21",
            "https://vault:8200/ui",
            "not a url",
        ] {
            assert!(
                matches!(VaultSession::new(&config(bad)), Err(VaultError::Setup(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_setup_error() {
        let mut cfg = config("https://vault.example.com:8200");
        cfg.ca_cert = Some("/nonexistent/ca.pem".into());
        assert!(matches!(VaultSession::new(&cfg), Err(VaultError::Setup(_))));

        let dir = std::env::temp_dir().join(format!("vs-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        cfg.ca_cert = Some(empty);
        assert!(matches!(VaultSession::new(&cfg), Err(VaultError::Setup(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn starts_unauthenticated_and_hides_the_token() {
        let session = VaultSession::new(&config("http://127.0.0.1:8200")).unwrap();
        assert_eq!(session.auth_state(), AuthState::Unauthenticated);
        session.write_state().token = SecretString::from("s.topsecret");
        let shown = format!("{session:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains("topsecret"),
            "{shown}"
        );
    }

    #[test]
    fn raw_requests_carry_token_and_namespace() {
        let mut cfg = config("http://127.0.0.1:8200");
        cfg.namespace = Some("team-a/".into());
        let session = VaultSession::new(&cfg).unwrap();
        session.write_state().token = SecretString::from("s.abc");
        let request = session
            .request(reqwest::Method::GET, "/sys/storage/raft/snapshot")
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8200/v1/sys/storage/raft/snapshot"
        );
        let token = request.headers().get("X-Vault-Token").unwrap();
        assert!(token.is_sensitive());
        assert_eq!(token, "s.abc");
        assert_eq!(
            request.headers().get("X-Vault-Namespace").unwrap(),
            "team-a"
        );
    }

    #[test]
    fn root_requests_carry_the_token_but_no_namespace() {
        let mut cfg = config("http://127.0.0.1:8200");
        cfg.namespace = Some("team-a".into());
        let session = VaultSession::new(&cfg).unwrap();
        session.write_state().token = SecretString::from("s.abc");
        let request = session
            .request_root(reqwest::Method::POST, "sys/storage/raft/snapshot")
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8200/v1/sys/storage/raft/snapshot"
        );
        assert_eq!(request.headers().get("X-Vault-Token").unwrap(), "s.abc");
        assert!(request.headers().get("X-Vault-Namespace").is_none());
    }

    #[test]
    fn login_refusals_are_auth_errors() {
        let refused = CallError::Status {
            code: 400,
            errors: vec!["invalid role or secret ID".into()],
        };
        assert!(
            matches!(login_error(refused, "auth/approle/login"), VaultError::Auth(m) if m.contains("invalid role"))
        );
        let sealed = CallError::Status {
            code: 503,
            errors: vec!["Vault is sealed".into()],
        };
        assert!(matches!(
            login_error(sealed, "auth/approle/login"),
            VaultError::Unreachable(_)
        ));
        let down = CallError::Transport("connection refused".into());
        assert!(matches!(
            login_error(down, "auth/approle/login"),
            VaultError::Unreachable(_)
        ));
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        assert!(check_header_safe(&SecretString::from("s.AbC-123_x")).is_ok());
        assert!(check_header_safe(&SecretString::from("s.abc\n")).is_err());
        assert!(check_header_safe(&SecretString::from("s.a b")).is_err());
    }

    #[test]
    fn keep_alive_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let session = VaultSession::new(&config("http://127.0.0.1:8200")).unwrap();
        let future = session.keep_alive(CancellationToken::new());
        assert_send(&future);
        let session = VaultSession::new(&config("http://127.0.0.1:8200")).unwrap();
        let path = String::from("secret/x");
        assert_send(&session.kv_read(&path));
        assert_send(&session.kv_write(&path, &KvData::new(), 0));
        assert_send(&session.send(reqwest::Method::GET, "sys/health", |r| r));
    }
}
