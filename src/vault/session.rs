//! The authenticated session and its keep-alive loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::{KvData, KvMetadata, KvSecret, KvWrite, VaultError};
use crate::config::VaultConfig;

/// Whether the session currently holds a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    Authenticated,
    Unauthenticated,
}

/// One Vault client shared by all jobs.
pub struct VaultSession {}

impl VaultSession {
    /// Builds the client (custom CA, namespace, timeouts) and logs in.
    pub async fn connect(config: &VaultConfig) -> Result<Arc<Self>, VaultError> {
        let _ = config;
        todo!("vault helper")
    }

    /// Keeps the token alive until `cancel`: renews at about two thirds of its TTL, logs in
    /// again (AppRole, or re-reads the token source) when renewal is refused or the token was
    /// revoked, backing off while Vault is unreachable.
    pub async fn keep_alive(self: Arc<Self>, cancel: CancellationToken) {
        let _ = cancel;
        todo!("vault helper")
    }

    pub fn auth_state(&self) -> AuthState {
        todo!("vault helper")
    }

    /// `https://host:port` without a trailing slash.
    pub fn address(&self) -> &str {
        todo!("vault helper")
    }

    /// The HTTP client (with the custom CA) for endpoints vaultrs lacks.
    pub fn http(&self) -> &reqwest::Client {
        todo!("vault helper")
    }

    /// The current token, for raw requests.
    pub fn token(&self) -> SecretString {
        todo!("vault helper")
    }

    /// Reads the current version of `path` (`MOUNT/REST`, e.g. `secret/api-key/default`);
    /// `None` if it does not exist or its current version is deleted.
    pub async fn kv_read(&self, path: &str) -> Result<Option<KvSecret>, VaultError> {
        let _ = path;
        todo!("vault helper")
    }

    /// Reads one version of `path`.
    pub async fn kv_read_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<KvSecret>, VaultError> {
        let _ = (path, version);
        todo!("vault helper")
    }

    /// Reads the metadata of `path`; `None` if no secret exists there.
    pub async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError> {
        let _ = path;
        todo!("vault helper")
    }

    /// Writes a new version with check-and-set: `cas = 0` means "only if it does not exist",
    /// `cas = n` "only if the current version is n". A mismatch is [`VaultError::CasMismatch`].
    pub async fn kv_write(
        &self,
        path: &str,
        data: &KvData,
        cas: u64,
    ) -> Result<KvWrite, VaultError> {
        let _ = (path, data, cas);
        todo!("vault helper")
    }

    /// Replaces the secret's `custom_metadata`.
    pub async fn kv_set_custom_metadata(
        &self,
        path: &str,
        custom: &BTreeMap<String, String>,
    ) -> Result<(), VaultError> {
        let _ = (path, custom);
        todo!("vault helper")
    }
}
