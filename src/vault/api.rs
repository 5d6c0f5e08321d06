//! The narrow seams between the rotation protocols and Vault: [`KvApi`] (the KV v2 calls a
//! rotation makes) and [`AppRoleApi`] (issuing, finding and destroying secret-ids).
//! [`VaultSession`] implements both against a real server; the deterministic simulation
//! (`crate::sim`, tests only) implements them with in-process models so that the very same
//! protocol code runs under injected faults. Nothing here holds state or logs: the session keeps
//! doing the work, and every secret stays a `SecretString`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

use super::{KvCapabilities, KvData, KvMetadata, KvSecret, KvWrite, VaultError, VaultSession};

/// The KV v2 calls of the rotation protocols (see the same-named methods of [`VaultSession`]).
#[async_trait]
pub trait KvApi: Send + Sync {
    /// The current version; `None` if absent, soft-deleted or destroyed.
    async fn kv_read(&self, path: &str) -> Result<Option<KvSecret>, VaultError>;
    /// Version `version`; `None` if absent, soft-deleted or destroyed.
    async fn kv_read_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<KvSecret>, VaultError>;
    /// The metadata; `None` if no secret exists there.
    async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError>;
    /// A new version with check-and-set (`cas = 0`: only if nothing exists).
    async fn kv_write(&self, path: &str, data: &KvData, cas: u64) -> Result<KvWrite, VaultError>;
    /// Replaces the `custom_metadata`.
    async fn kv_set_custom_metadata(
        &self,
        path: &str,
        custom: &BTreeMap<String, String>,
    ) -> Result<(), VaultError>;
    /// Deletes every version and the metadata; nothing there is fine.
    async fn kv_delete_all(&self, path: &str) -> Result<(), VaultError>;
    /// What the token may do on the data and metadata of `path`.
    async fn kv_capabilities(&self, path: &str) -> Result<KvCapabilities, VaultError>;
}

/// A secret-id just issued, with its accessor (the accessor is not secret).
pub struct IssuedSecretId {
    pub secret_id: SecretString,
    pub accessor: String,
}

/// The AppRole calls of the `approle-secret-id` kind, on the role `role` of the AppRole mount
/// `mount` (without slashes).
#[async_trait]
pub trait AppRoleApi: Send + Sync {
    /// The role's role-id; `None` if the role (or the mount) does not exist.
    async fn approle_role_id(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<Option<SecretString>, VaultError>;
    /// Issues a secret-id carrying `metadata` (visible in accessor lookups).
    async fn approle_issue(
        &self,
        mount: &str,
        role: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<IssuedSecretId, VaultError>;
    /// The accessor of `secret_id`; `None` if Vault does not know it (expired, destroyed).
    async fn approle_accessor_of(
        &self,
        mount: &str,
        role: &str,
        secret_id: &SecretString,
    ) -> Result<Option<String>, VaultError>;
    /// The accessors of the role's live secret-ids.
    async fn approle_accessors(&self, mount: &str, role: &str) -> Result<Vec<String>, VaultError>;
    /// The metadata of the secret-id behind `accessor`; `None` if it is gone.
    async fn approle_accessor_metadata(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<Option<BTreeMap<String, String>>, VaultError>;
    /// Destroys the secret-id behind `accessor`; one that is already gone counts as destroyed.
    async fn approle_destroy(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<(), VaultError>;
}

#[async_trait]
impl KvApi for VaultSession {
    async fn kv_read(&self, path: &str) -> Result<Option<KvSecret>, VaultError> {
        VaultSession::kv_read(self, path).await
    }

    async fn kv_read_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<KvSecret>, VaultError> {
        VaultSession::kv_read_version(self, path, version).await
    }

    async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError> {
        VaultSession::kv_metadata(self, path).await
    }

    async fn kv_write(&self, path: &str, data: &KvData, cas: u64) -> Result<KvWrite, VaultError> {
        VaultSession::kv_write(self, path, data, cas).await
    }

    async fn kv_set_custom_metadata(
        &self,
        path: &str,
        custom: &BTreeMap<String, String>,
    ) -> Result<(), VaultError> {
        VaultSession::kv_set_custom_metadata(self, path, custom).await
    }

    async fn kv_delete_all(&self, path: &str) -> Result<(), VaultError> {
        VaultSession::kv_delete_all(self, path).await
    }

    async fn kv_capabilities(&self, path: &str) -> Result<KvCapabilities, VaultError> {
        VaultSession::kv_capabilities(self, path).await
    }
}

const SECRET_ID: &str = "secret_id";
const ACCESSOR: &str = "secret_id_accessor";

fn role_path(mount: &str, role: &str, rest: &str) -> String {
    format!("auth/{mount}/role/{role}/{rest}")
}

#[async_trait]
impl AppRoleApi for VaultSession {
    async fn approle_role_id(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<Option<SecretString>, VaultError> {
        let path = role_path(mount, role, "role-id");
        let response = match self.send(reqwest::Method::GET, &path, |r| r).await {
            Ok(r) => r,
            Err(VaultError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut fields = read_data(&path, response).await?;
        take_secret(&mut fields, "role_id")
            .map(Some)
            .ok_or_else(|| unexpected(&path, "the answer has no role_id"))
    }

    async fn approle_issue(
        &self,
        mount: &str,
        role: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<IssuedSecretId, VaultError> {
        let path = role_path(mount, role, "secret-id");
        // Vault takes the metadata as a JSON object encoded in a string.
        let metadata = serde_json::to_string(metadata)
            .map_err(|e| VaultError::Setup(format!("encoding secret-id metadata: {e}")))?;
        let body = serde_json::json!({ "metadata": metadata });
        let response = self
            .send(reqwest::Method::POST, &path, |r| r.json(&body))
            .await?;
        let mut fields = read_data(&path, response).await?;
        let secret_id = take_secret(&mut fields, SECRET_ID)
            .ok_or_else(|| unexpected(&path, "the answer has no secret_id"))?;
        let accessor = fields
            .get(ACCESSOR)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| unexpected(&path, "the answer has no secret_id_accessor"))?;
        Ok(IssuedSecretId {
            secret_id,
            accessor,
        })
    }

    async fn approle_accessor_of(
        &self,
        mount: &str,
        role: &str,
        secret_id: &SecretString,
    ) -> Result<Option<String>, VaultError> {
        let path = role_path(mount, role, "secret-id/lookup");
        let body =
            Zeroizing::new(serde_json::json!({ SECRET_ID: secret_id.expose_secret() }).to_string());
        let response = self
            .send(reqwest::Method::POST, &path, |r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.as_str().to_string())
            })
            .await?;
        // 204: Vault does not know this secret-id (expired or destroyed).
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let fields = read_data(&path, response).await?;
        Ok(fields
            .get(ACCESSOR)
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }

    async fn approle_accessors(&self, mount: &str, role: &str) -> Result<Vec<String>, VaultError> {
        let path = role_path(mount, role, "secret-id");
        let list = reqwest::Method::from_bytes(b"LIST").unwrap_or(reqwest::Method::GET);
        let response = match self.send(list, &path, |r| r).await {
            Ok(r) => r,
            // No secret-id at all.
            Err(VaultError::Api { status: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // Bounded: a hostile answer must not exhaust memory.
        let body: serde_json::Value = crate::body::json_limited(response, crate::body::MAX_BODY)
            .await
            .map_err(|e| VaultError::from_body(&path, e))?;
        Ok(body["data"]["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn approle_accessor_metadata(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<Option<BTreeMap<String, String>>, VaultError> {
        let path = role_path(mount, role, "secret-id-accessor/lookup");
        let body = serde_json::json!({ ACCESSOR: accessor });
        let response = match self
            .send(reqwest::Method::POST, &path, |r| r.json(&body))
            .await
        {
            Ok(r) => r,
            Err(VaultError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let info: serde_json::Value = crate::body::json_limited(response, crate::body::MAX_BODY)
            .await
            .map_err(|e| VaultError::from_body(&path, e))?;
        Ok(Some(
            info["data"]["metadata"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    async fn approle_destroy(
        &self,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<(), VaultError> {
        let path = role_path(mount, role, "secret-id-accessor/destroy");
        let body = serde_json::json!({ ACCESSOR: accessor });
        match self
            .send(reqwest::Method::POST, &path, |r| r.json(&body))
            .await
        {
            Ok(_) => Ok(()),
            // Vault answers 500 with this message for an accessor it does not know.
            Err(VaultError::Unreachable(m)) if m.contains("failed to find accessor entry") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn unexpected(path: &str, message: &str) -> VaultError {
    VaultError::Api {
        path: path.to_string(),
        status: 200,
        message: message.to_string(),
    }
}

/// The `data` object of an answer that may hold secrets; the raw body is wiped after parsing.
async fn read_data(
    path: &str,
    response: reqwest::Response,
) -> Result<serde_json::Map<String, serde_json::Value>, VaultError> {
    // Bounded (a hostile answer must not exhaust memory) and wiped after parsing.
    let body = crate::body::read_limited(response, crate::body::MAX_BODY)
        .await
        .map_err(|e| VaultError::from_body(path, e.into()))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| unexpected(path, "the answer is not JSON"))?;
    match value.get_mut("data").map(serde_json::Value::take) {
        Some(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(unexpected(path, "the answer has no data")),
    }
}

/// Moves a string field out of `fields` into a `SecretString`, wiping the original.
fn take_secret(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<SecretString> {
    match fields.remove(key) {
        Some(serde_json::Value::String(mut s)) => {
            let secret = SecretString::from(s.as_str());
            s.zeroize();
            Some(secret)
        }
        _ => None,
    }
}
