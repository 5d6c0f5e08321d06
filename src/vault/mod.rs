//! The one Vault session shared by every job: authentication (token or AppRole), keeping the
//! token alive (renew before expiry, log in again when renewal is refused or the token was
//! revoked), KV v2 with check-and-set and `custom_metadata`, TLS with a custom CA.
//!
//! Built on vaultrs for auth and KV; the raw `reqwest::Client` is exposed for endpoints vaultrs
//! lacks (raft snapshots, `sys/health`). Secret values only ever exist here as `SecretString`;
//! no error or log line carries one.

mod error;
pub mod kv;
mod session;

pub use error::VaultError;
pub use kv::{KvData, KvMetadata, KvSecret, KvVersionMeta, KvWrite};
pub use session::{AuthState, VaultSession};
