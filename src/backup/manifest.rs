//! The small JSON manifest written beside each snapshot (`NAME.snap.age.json`): which job took
//! it and when, the raft index and term from its `meta.json`, plaintext and ciphertext sizes and
//! SHA-256, the recipients' fingerprints and the Vault version. It is written *before* the
//! snapshot is published, so every published snapshot has one; retention deletes only snapshots
//! whose manifest names the job. Public facts only: no key, no content.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest manifest we read (they are about 1 KiB).
pub const MAX_SIZE: usize = 64 * 1024;

/// Current manifest format.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this file.
    pub format: u32,
    /// The job that took the snapshot.
    pub job: String,
    /// The snapshot's file name (`vault-YYYYMMDD-HHMMSS.snap.age`).
    pub snapshot: String,
    /// When the snapshot was requested from Vault (UTC).
    pub taken_at: DateTime<Utc>,
    /// The version the Vault server reported (`sys/seal-status`), if it answered.
    pub vault_version: Option<String>,
    /// From the archive's `meta.json`.
    pub raft_index: u64,
    pub raft_term: u64,
    /// Size of `state.bin` (the raft data) inside the archive.
    pub state_size: u64,
    /// The snapshot archive as Vault sent it (gzip'd tar).
    pub plaintext_size: u64,
    pub plaintext_sha256: String,
    /// The `.snap.age` object.
    pub ciphertext_size: u64,
    pub ciphertext_sha256: String,
    /// Who can decrypt it: age recipients as written, SSH keys as `SHA256:…` fingerprints.
    pub recipients: Vec<String>,
    /// `vault-steward VERSION`.
    pub producer: String,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a manifest; `None` when it is not one (wrong shape, too large).
    pub fn parse(bytes: &[u8]) -> Option<Manifest> {
        if bytes.len() > MAX_SIZE {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    /// Whether this manifest says `job` took snapshot `name`.
    pub fn names(&self, job: &str, name: &str) -> bool {
        self.job == job && self.snapshot == name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let m = Manifest {
            format: FORMAT,
            job: "snap".into(),
            snapshot: "vault-20261128-070509.snap.age".into(),
            taken_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            vault_version: Some("2.7.2".into()),
            raft_index: 38,
            raft_term: 3,
            state_size: 14848,
            plaintext_size: 19481,
            plaintext_sha256: "ab".repeat(32),
            ciphertext_size: 19700,
            ciphertext_sha256: "cd".repeat(32),
            recipients: vec!["age1xyz".into(), "SHA256:abc".into()],
            producer: "vault-steward 0.1.0".into(),
        };
        assert_eq!(Manifest::parse(&m.to_json()), Some(m.clone()));
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        v["added_later"] = serde_json::json!(1);
        assert_eq!(Manifest::parse(v.to_string().as_bytes()), Some(m.clone()));
        assert!(m.names("snap", "vault-20261128-070509.snap.age"));
        assert!(!m.names("other", "vault-20261128-070509.snap.age"));
        assert_eq!(Manifest::parse(b"{}"), None);
        assert_eq!(Manifest::parse(&vec![b' '; MAX_SIZE + 1]), None);
    }
}
