//! KV version 2: reads with their version and `created_time`, check-and-set writes, metadata.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

/// The fields of one KV secret version. Non-string JSON values are kept as their JSON text.
pub type KvData = BTreeMap<String, SecretString>;

/// One version of a KV v2 secret.
#[derive(Debug)]
pub struct KvSecret {
    pub data: KvData,
    pub version: u64,
    pub created_time: DateTime<Utc>,
}

/// A KV v2 secret's metadata.
#[derive(Debug, Clone)]
pub struct KvMetadata {
    pub current_version: u64,
    pub oldest_version: u64,
    pub created_time: DateTime<Utc>,
    pub updated_time: DateTime<Utc>,
    pub custom_metadata: BTreeMap<String, String>,
    pub versions: BTreeMap<u64, KvVersionMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvVersionMeta {
    pub created_time: DateTime<Utc>,
    pub deletion_time: Option<DateTime<Utc>>,
    pub destroyed: bool,
}

/// The result of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    pub version: u64,
    pub created_time: DateTime<Utc>,
}
