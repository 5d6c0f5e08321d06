//! KV version 2: reads with their version and `created_time`, check-and-set writes, metadata.
//!
//! This file holds the public types and the pure parts: checking and splitting the paths operators
//! write (`secret/api-key/default` = mount `secret/` + `api-key/default`), recognising a KV v2
//! mount from `sys/internal/ui/mounts`, and turning Vault's JSON into these types. The requests
//! themselves are made by the session.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use zeroize::Zeroize;

/// The fields of one KV secret version. Non-string JSON values are kept as their JSON text.
pub type KvData = BTreeMap<String, SecretString>;

/// One version of a KV v2 secret.
#[derive(Debug)]
pub struct KvSecret {
    pub data: KvData,
    pub version: u64,
    pub created_time: DateTime<Utc>,
    /// The secret's `custom_metadata` as the read returned it (`None` if the server's answer
    /// had none: read the metadata instead).
    pub custom_metadata: Option<BTreeMap<String, String>>,
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

/// Checks a path as an operator wrote it and returns it without leading/trailing slashes.
///
/// Paths go into URLs unencoded (as vaultrs sends them), so characters that would change the
/// URL's meaning are refused rather than silently escaped.
pub(crate) fn normalize_path(path: &str) -> Result<&str, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err("the path is empty".into());
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(format!("the path contains {c:?}, which is not allowed"));
    }
    if trimmed
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err("the path has an empty, `.` or `..` segment".into());
    }
    Ok(trimmed)
}

/// What `sys/internal/ui/mounts/<path>` says about the mount holding a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// With a trailing slash, as Vault writes it: `secret/`.
    pub path: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountKind {
    KvV2,
    /// Anything else, described for the error message (`KV version 1`, `type system`).
    Other(String),
}

impl Mount {
    /// Parses the `data` of a `sys/internal/ui/mounts/<path>` answer.
    pub(crate) fn from_ui_mounts(data: &serde_json::Value) -> Result<Mount, String> {
        let path = data
            .get("path")
            .and_then(|p| p.as_str())
            .filter(|p| !p.trim_matches('/').is_empty())
            .ok_or("the mount lookup answered without a mount path")?;
        let mut path = path.trim_start_matches('/').to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        let kind_name = data.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let version = data
            .get("options")
            .and_then(|o| o.get("version"))
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            });
        let kind = match (kind_name, version.as_deref()) {
            ("kv" | "generic", Some("2")) => MountKind::KvV2,
            ("kv" | "generic", _) => MountKind::Other("KV version 1".into()),
            (other, _) => MountKind::Other(format!("type {other}")),
        };
        Ok(Mount { path, kind })
    }

    /// Whether this mount holds the normalized `path`.
    pub(crate) fn holds(&self, path: &str) -> bool {
        format!("{path}/").starts_with(&self.path)
    }

    /// `secret/api-key/default` → (`secret`, `api-key/default`); the mount path is the one this
    /// mount was found for. Errors when `path` names the mount itself.
    pub(crate) fn split<'p>(&self, path: &'p str) -> Result<(String, &'p str), String> {
        let mount = self.path.trim_end_matches('/');
        let rest = path
            .strip_prefix(mount)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or("");
        if rest.is_empty() {
            return Err(format!(
                "the path names the mount {} itself, not a secret in it",
                self.path
            ));
        }
        Ok((mount.to_string(), rest))
    }
}

/// The mount from `cache` that holds `path` (Vault refuses nested mounts, so there is at most one
/// real match; the longest wins in case of stale entries).
pub(crate) fn find_mount<'c>(cache: &'c [Mount], path: &str) -> Option<&'c Mount> {
    cache
        .iter()
        .filter(|m| m.holds(path))
        .max_by_key(|m| m.path.len())
}

/// A version's `data` object as [`KvData`]; the JSON strings are wiped once copied.
pub(crate) fn data_from_json(value: serde_json::Value) -> Result<KvData, String> {
    let serde_json::Value::Object(map) = value else {
        return Err("the secret's data is not a JSON object".into());
    };
    let mut data = KvData::new();
    for (key, value) in map {
        let secret = match value {
            serde_json::Value::String(mut text) => {
                let secret = SecretString::from(text.as_str());
                text.zeroize();
                secret
            }
            other => {
                let mut text = other.to_string();
                let secret = SecretString::from(text.as_str());
                text.zeroize();
                secret
            }
        };
        data.insert(key, secret);
    }
    Ok(data)
}

/// Parses one of Vault's RFC 3339 timestamps; `field` names it in the error.
pub(crate) fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{field} {text:?} is not an RFC 3339 time"))
}

/// Like [`parse_time`], with Vault's empty string for "not set".
pub(crate) fn parse_optional_time(
    field: &str,
    text: &str,
) -> Result<Option<DateTime<Utc>>, String> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_time(field, text).map(Some)
    }
}

pub(crate) fn metadata_from_response(
    response: vaultrs::api::kv2::responses::ReadSecretMetadataResponse,
) -> Result<KvMetadata, String> {
    let mut versions = BTreeMap::new();
    for (number, meta) in response.versions {
        let number: u64 = number
            .parse()
            .map_err(|_| format!("version {number:?} is not a number"))?;
        versions.insert(
            number,
            KvVersionMeta {
                created_time: parse_time("created_time", &meta.created_time)?,
                deletion_time: parse_optional_time("deletion_time", &meta.deletion_time)?,
                destroyed: meta.destroyed,
            },
        );
    }
    Ok(KvMetadata {
        current_version: response.current_version,
        oldest_version: response.oldest_version,
        created_time: parse_time("created_time", &response.created_time)?,
        updated_time: parse_time("updated_time", &response.updated_time)?,
        custom_metadata: response
            .custom_metadata
            .unwrap_or_default()
            .into_iter()
            .collect(),
        versions,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_are_normalized_and_checked() {
        assert_eq!(
            normalize_path("secret/api-key/default"),
            Ok("secret/api-key/default")
        );
        assert_eq!(
            normalize_path("/secret/api-key/default/"),
            Ok("secret/api-key/default")
        );
        for bad in [
            "",
            "/",
            "secret//x",
            "secret/../sys",
            "secret/a b",
            "secret/x?version=1",
            "secret/%2e",
            "secret/./x",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kv2_mount_is_recognised() {
        let kv2 = json!({"path": "secret/", "type": "kv", "options": {"version": "2"}});
        let mount = Mount::from_ui_mounts(&kv2).unwrap();
        assert_eq!(
            mount,
            Mount {
                path: "secret/".into(),
                kind: MountKind::KvV2
            }
        );

        let kv1 = json!({"path": "old/", "type": "kv", "options": {"version": "1"}});
        assert_eq!(
            Mount::from_ui_mounts(&kv1).unwrap().kind,
            MountKind::Other("KV version 1".into())
        );
        let kv1_no_options = json!({"path": "old/", "type": "kv", "options": null});
        assert_eq!(
            Mount::from_ui_mounts(&kv1_no_options).unwrap().kind,
            MountKind::Other("KV version 1".into())
        );
        let sys = json!({"path": "sys/", "type": "system", "options": null});
        assert_eq!(
            Mount::from_ui_mounts(&sys).unwrap().kind,
            MountKind::Other("type system".into())
        );
        assert!(Mount::from_ui_mounts(&json!({"type": "kv"})).is_err());
    }

    #[test]
    fn mount_splits_paths() {
        let mount = Mount {
            path: "secret/".into(),
            kind: MountKind::KvV2,
        };
        assert_eq!(
            mount.split("secret/api-key/default").unwrap(),
            ("secret".into(), "api-key/default")
        );
        assert!(mount.split("secret").is_err());

        let nested = Mount {
            path: "team/kv/".into(),
            kind: MountKind::KvV2,
        };
        assert_eq!(
            nested.split("team/kv/db/orders").unwrap(),
            ("team/kv".into(), "db/orders")
        );
    }

    #[test]
    fn cache_matches_whole_segments_only() {
        let cache = vec![
            Mount {
                path: "secret/".into(),
                kind: MountKind::KvV2,
            },
            Mount {
                path: "kv1/".into(),
                kind: MountKind::Other("KV version 1".into()),
            },
        ];
        assert_eq!(
            find_mount(&cache, "secret/api-key/default").map(|m| m.path.as_str()),
            Some("secret/")
        );
        assert_eq!(
            find_mount(&cache, "secret").map(|m| m.path.as_str()),
            Some("secret/")
        );
        assert!(find_mount(&cache, "secrets/api-key").is_none());
        assert!(find_mount(&cache, "sec").is_none());
        assert_eq!(
            find_mount(&cache, "kv1/x").map(|m| m.path.as_str()),
            Some("kv1/")
        );
    }

    #[test]
    fn data_keeps_non_strings_as_json_text() {
        let data = data_from_json(
            json!({"api_key": "abc", "port": 5432, "tls": true, "obj": {"a": [1]}, "none": null}),
        )
        .unwrap();
        let shown: BTreeMap<&str, &str> = data
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            shown,
            BTreeMap::from([
                ("api_key", "abc"),
                ("port", "5432"),
                ("tls", "true"),
                ("obj", r#"{"a":[1]}"#),
                ("none", "null"),
            ])
        );
        assert!(data_from_json(json!(null)).is_err());
        // Debug never shows values.
        assert!(!format!("{data:?}").contains("abc"));
    }

    #[test]
    fn metadata_is_parsed() {
        let response: vaultrs::api::kv2::responses::ReadSecretMetadataResponse = serde_json::from_value(json!({
            "cas_required": false,
            "created_time": "2026-01-02T03:04:05.123456789Z",
            "current_metadata_version": 0,
            "current_version": 2,
            "custom_metadata": {"rotated_by": "vault-steward"},
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": 0,
            "updated_time": "2026-01-03T03:04:05Z",
            "versions": {
                "1": {"created_time": "2026-01-02T03:04:05.123456789Z", "deletion_time": "2026-01-02T04:00:00Z", "destroyed": false},
                "2": {"created_time": "2026-01-03T03:04:05Z", "deletion_time": "", "destroyed": true}
            }
        }))
        .unwrap();
        let meta = metadata_from_response(response).unwrap();
        assert_eq!(meta.current_version, 2);
        assert_eq!(
            meta.custom_metadata.get("rotated_by").map(String::as_str),
            Some("vault-steward")
        );
        assert_eq!(meta.versions.len(), 2);
        assert!(meta.versions[&1].deletion_time.is_some());
        assert!(!meta.versions[&1].destroyed);
        assert_eq!(meta.versions[&2].deletion_time, None);
        assert!(meta.versions[&2].destroyed);
        assert_eq!(meta.created_time.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn times_are_parsed() {
        assert!(parse_time("created_time", "2026-11-28T20:15:25.416699666Z").is_ok());
        assert!(parse_time("created_time", "yesterday").is_err());
        assert_eq!(parse_optional_time("deletion_time", ""), Ok(None));
    }
}
