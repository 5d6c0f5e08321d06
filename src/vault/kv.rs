//! KV version 2: reads with their version and `created_time`, check-and-set writes, metadata.
//!
//! This file holds the public types and the pure parts: checking and splitting the paths operators
//! write (`secret/api-key/default` = mount `secret/` + `api-key/default`), recognising a KV v2
//! mount from `sys/internal/ui/mounts`, and turning Vault's JSON into these types. The requests
//! themselves are made by the session.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

/// One field of a KV secret version.
#[derive(Clone)]
pub enum KvValue {
    /// A JSON string. Any string field may be a secret, so every one is kept as one.
    Secret(SecretString),
    /// Any other JSON value (number, boolean, array, object, null), kept as it was read so that
    /// a rotation writes it back with its type: a consumer that decodes `"port": 5432` must not
    /// find `"5432"` after the next rotation.
    Json(ForeignJson),
}

impl KvValue {
    /// A field as Vault's JSON holds it: strings become secrets (the JSON copy is wiped),
    /// anything else stays JSON.
    pub fn from_json(value: serde_json::Value) -> KvValue {
        match value {
            serde_json::Value::String(mut text) => {
                let secret = SecretString::from(text.as_str());
                text.zeroize();
                KvValue::Secret(secret)
            }
            other => KvValue::Json(ForeignJson(other)),
        }
    }

    /// The value of a string field.
    pub fn as_secret(&self) -> Option<&SecretString> {
        match self {
            KvValue::Secret(secret) => Some(secret),
            KvValue::Json(_) => None,
        }
    }

    /// The value as the JSON to send to Vault: strings exposed (for the request body only),
    /// everything else exactly as read.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            KvValue::Secret(secret) => {
                serde_json::Value::String(secret.expose_secret().to_string())
            }
            KvValue::Json(json) => json.0.clone(),
        }
    }
}

impl From<SecretString> for KvValue {
    fn from(secret: SecretString) -> Self {
        KvValue::Secret(secret)
    }
}

impl fmt::Debug for KvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvValue::Secret(_) => f.write_str("Secret([redacted])"),
            KvValue::Json(json) => json.fmt(f),
        }
    }
}

/// A non-string JSON field. Arrays and objects may hold secrets too, so `Debug` shows only the
/// type and the strings inside are wiped on drop.
#[derive(Clone, PartialEq)]
pub struct ForeignJson(serde_json::Value);

impl ForeignJson {
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl fmt::Debug for ForeignJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "bool",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
        };
        write!(f, "Json({kind}, [redacted])")
    }
}

impl Drop for ForeignJson {
    fn drop(&mut self) {
        wipe_strings(&mut self.0);
    }
}

/// Zeroizes every string inside `value` (object keys are names, not values, and stay).
fn wipe_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => text.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(wipe_strings),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// The fields of one KV secret version: the ones the steward writes are strings (secrets); the
/// others are carried over with their JSON types.
#[derive(Clone, Debug, Default)]
pub struct KvData(BTreeMap<String, KvValue>);

impl KvData {
    pub fn new() -> Self {
        KvData::default()
    }

    /// A string field; `None` when absent or not a string.
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key).and_then(KvValue::as_secret)
    }

    /// Any field, whatever its type.
    pub fn get_value(&self, key: &str) -> Option<&KvValue> {
        self.0.get(key)
    }

    /// A field read as text: a string as it is, a number or boolean as its JSON text (an
    /// operator may well write `"port": 5432`); `None` for absent, null, arrays and objects.
    pub fn text(&self, key: &str) -> Option<SecretString> {
        match self.0.get(key)? {
            KvValue::Secret(secret) => Some(secret.clone()),
            KvValue::Json(json) => match &json.0 {
                serde_json::Value::Number(n) => Some(SecretString::from(n.to_string())),
                serde_json::Value::Bool(b) => Some(SecretString::from(b.to_string())),
                _ => None,
            },
        }
    }

    /// Sets a string field (replacing a field of any type).
    pub fn insert(&mut self, key: String, value: SecretString) -> Option<KvValue> {
        self.0.insert(key, KvValue::Secret(value))
    }

    /// Sets a field of any type.
    pub fn insert_value(&mut self, key: String, value: KvValue) -> Option<KvValue> {
        self.0.insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<KvValue> {
        self.0.remove(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &KvValue)> {
        self.0.iter()
    }

    /// The `data` object of a write: every field with its own JSON type.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(key, value)| (key.clone(), value.to_json()))
                .collect(),
        )
    }
}

impl FromIterator<(String, SecretString)> for KvData {
    fn from_iter<I: IntoIterator<Item = (String, SecretString)>>(iter: I) -> Self {
        KvData(
            iter.into_iter()
                .map(|(key, value)| (key, KvValue::Secret(value)))
                .collect(),
        )
    }
}

impl FromIterator<(String, KvValue)> for KvData {
    fn from_iter<I: IntoIterator<Item = (String, KvValue)>>(iter: I) -> Self {
        KvData(iter.into_iter().collect())
    }
}

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
    Ok(map
        .into_iter()
        .map(|(key, value)| (key, KvValue::from_json(value)))
        .collect())
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

    fn typed() -> serde_json::Value {
        json!({
            "api_key": "abc",
            "port": 5432,
            "negative": -7,
            "ratio": 0.25,
            "tls": true,
            "off": false,
            "list": ["x", 1, null],
            "obj": {"a": [1], "inner": "hidden-in-object"},
            "empty": {},
            "none": null
        })
    }

    #[test]
    fn strings_are_secrets_and_other_values_keep_their_type() {
        let data = data_from_json(typed()).unwrap();
        assert_eq!(data.len(), 10);
        assert_eq!(data.get("api_key").unwrap().expose_secret(), "abc");
        // Only strings read as secrets; the others are there with their type.
        assert!(data.get("port").is_none());
        assert!(matches!(
            data.get_value("port"),
            Some(KvValue::Json(j)) if j.value() == &json!(5432)
        ));
        assert!(matches!(
            data.get_value("none"),
            Some(KvValue::Json(j)) if j.value().is_null()
        ));
        assert!(data.contains_key("none"));
        assert!(data_from_json(json!(null)).is_err());
        assert!(data_from_json(json!(["a"])).is_err());
    }

    #[test]
    fn written_back_unchanged() {
        let data = data_from_json(typed()).unwrap();
        assert_eq!(data.to_json(), typed());
        // A rotation's change touches only its own field.
        let mut data = data;
        data.insert("api_key".into(), SecretString::from("new"));
        let mut expected = typed();
        expected["api_key"] = json!("new");
        assert_eq!(data.to_json(), expected);
        // A steward field replaces a foreign value of another type.
        data.insert("port".into(), SecretString::from("6432"));
        assert_eq!(data.to_json()["port"], json!("6432"));
    }

    #[test]
    fn text_reads_scalars_but_not_structures() {
        let data = data_from_json(typed()).unwrap();
        let text = |k: &str| data.text(k).map(|s| s.expose_secret().to_string());
        assert_eq!(text("api_key").as_deref(), Some("abc"));
        assert_eq!(text("port").as_deref(), Some("5432"));
        assert_eq!(text("tls").as_deref(), Some("true"));
        assert_eq!(text("ratio").as_deref(), Some("0.25"));
        assert_eq!(text("obj"), None);
        assert_eq!(text("list"), None);
        assert_eq!(text("none"), None);
        assert_eq!(text("missing"), None);
    }

    #[test]
    fn debug_never_shows_values() {
        let data = data_from_json(typed()).unwrap();
        let shown = format!("{data:?}");
        for value in ["abc", "5432", "hidden-in-object", "0.25"] {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        assert!(shown.contains("port"), "keys are shown: {shown}");
        assert!(shown.contains("object"), "types are shown: {shown}");
    }

    #[test]
    fn strings_inside_json_are_wiped() {
        let mut value = json!({"a": ["secret-1", {"b": "secret-2"}], "n": 1});
        wipe_strings(&mut value);
        let serde_json::Value::Object(map) = &value else {
            panic!("object")
        };
        let text = map["a"].to_string();
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(map["n"], json!(1));
    }

    #[test]
    fn collects_from_secrets() {
        let data: KvData = [("k".to_string(), SecretString::from("v"))]
            .into_iter()
            .collect();
        assert_eq!(data.to_json(), json!({"k": "v"}));
        assert!(KvData::new().is_empty());
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
