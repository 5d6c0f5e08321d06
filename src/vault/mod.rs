//! The one Vault session shared by every job: authentication (token or AppRole), keeping the
//! token alive (renew before expiry, log in again when renewal is refused or the token was
//! revoked), KV v2 with check-and-set and `custom_metadata`, TLS with a custom CA.
//!
//! Built on vaultrs for auth and KV; the raw `reqwest::Client` is exposed for endpoints vaultrs
//! lacks (raft snapshots, `sys/health`). Secret values only ever exist here as `SecretString`;
//! no error or log line carries one (errors keep only a status code and Vault's `errors` array,
//! never a response body).
//!
//! Logging note: vaultrs and rustify log every failed request at ERROR through
//! `#[instrument(err)]` (no bodies, but noisy: a read of a missing secret is one). The telemetry
//! filter should silence the `vaultrs` and `rustify` targets; this module logs what matters.

pub mod api;
mod error;
pub mod kv;
mod renewal;
mod session;

pub use api::{AppRoleApi, IssuedSecretId, KvApi};
pub use error::VaultError;
pub use kv::{KvData, KvMetadata, KvSecret, KvVersionMeta, KvWrite};
pub use session::{AuthState, KvCapabilities, VaultSession};

/// Installs rustls's ring provider as the process default (reqwest panics building a client
/// without one). Safe to call any number of times.
pub fn install_crypto_provider() {
    // The only error is "a provider is already installed", which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
