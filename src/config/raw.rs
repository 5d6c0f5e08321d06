//! The config files as written: serde structs that keep every value's span, with every value
//! optional and typed loosely (durations and crons as strings, integers as `i64`) so that
//! validation, not deserialization, reports missing keys and bad values — all of them, each at
//! its own place.
//!
//! Every struct denies unknown fields. Before deserializing, [`prune_unknown`] reports each
//! unknown key of a table (not only the first, as serde would) and removes it; each struct's
//! [`Schema`] lists its keys for that, and a test checks that the lists match the structs.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) type Sp<T> = Spanned<T>;
/// An optional string value with its span.
pub(crate) type Str = Option<Spanned<String>>;
/// An optional integer value with its span (range-checked by validation).
pub(crate) type Int = Option<Spanned<i64>>;
/// An optional boolean with its span.
pub(crate) type Bool = Option<Spanned<bool>>;
/// An optional list of strings, each with its span.
pub(crate) type StrList = Option<Spanned<Vec<Spanned<String>>>>;

/// The keys a table accepts, and the schemas of its sub-tables (or arrays of tables).
pub(crate) struct Schema {
    /// How messages name the table, e.g. `[vault]`.
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub tables: &'static [(&'static str, &'static Schema)],
}

// ---- steward.toml ----------------------------------------------------------------------------

/// The top-level tables of `steward.toml`.
pub(crate) const STEWARD_SECTIONS: &[&str] =
    &["vault", "state", "http", "jobs", "engine", "alerts"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    pub address: Str,
    pub ca_cert: Str,
    pub namespace: Str,
    pub request_timeout: Str,
    pub auth: Option<Sp<RawVaultAuth>>,
}

pub(crate) const VAULT: Schema = Schema {
    name: "[vault]",
    keys: &["address", "ca_cert", "namespace", "request_timeout", "auth"],
    tables: &[("auth", &VAULT_AUTH)],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultAuth {
    pub method: Str,
    pub role_id_file: Str,
    pub secret_id_file: Str,
    pub token_file: Str,
    pub mount: Str,
}

pub(crate) const VAULT_AUTH: Schema = Schema {
    name: "[vault.auth]",
    keys: &[
        "method",
        "role_id_file",
        "secret_id_file",
        "token_file",
        "mount",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub url: Str,
    pub password_file: Str,
    pub lease_ttl: Str,
    pub tls: Str,
    pub ca_cert: Str,
    pub client_cert: Str,
    pub client_key: Str,
}

pub(crate) const STATE: Schema = Schema {
    name: "[state]",
    keys: &[
        "url",
        "password_file",
        "lease_ttl",
        "tls",
        "ca_cert",
        "client_cert",
        "client_key",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: Str,
}

pub(crate) const HTTP: Schema = Schema {
    name: "[http]",
    keys: &["listen"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJobs {
    pub dir: Str,
}

pub(crate) const JOBS: Schema = Schema {
    name: "[jobs]",
    keys: &["dir"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngine {
    pub job_timeout: Str,
    pub retry_initial: Str,
    pub retry_max: Str,
    pub shutdown_timeout: Str,
    pub max_concurrent: Int,
}

pub(crate) const ENGINE: Schema = Schema {
    name: "[engine]",
    keys: &[
        "job_timeout",
        "retry_initial",
        "retry_max",
        "shutdown_timeout",
        "max_concurrent",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub repeat_interval: Str,
    pub failures_before_alert: Int,
    pub retry_initial: Str,
    pub retry_max: Str,
    pub email: Option<Vec<Sp<RawEmail>>>,
    pub webhook: Option<Vec<Sp<RawWebhook>>>,
}

pub(crate) const ALERTS: Schema = Schema {
    name: "[alerts]",
    keys: &[
        "repeat_interval",
        "failures_before_alert",
        "retry_initial",
        "retry_max",
        "email",
        "webhook",
    ],
    tables: &[("email", &EMAIL), ("webhook", &WEBHOOK)],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    pub name: Str,
    pub smtp_url: Str,
    pub from: Str,
    pub to: StrList,
    pub username: Str,
    pub password_file: Str,
    pub ca_cert: Str,
    pub timeout: Str,
}

pub(crate) const EMAIL: Schema = Schema {
    name: "[[alerts.email]]",
    keys: &[
        "name",
        "smtp_url",
        "from",
        "to",
        "username",
        "password_file",
        "ca_cert",
        "timeout",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub name: Str,
    pub url: Str,
    pub url_file: Str,
    pub format: Str,
    pub hmac_secret_file: Str,
    pub routing_key_file: Str,
    pub ca_cert: Str,
    pub timeout: Str,
}

pub(crate) const WEBHOOK: Schema = Schema {
    name: "[[alerts.webhook]]",
    keys: &[
        "name",
        "url",
        "url_file",
        "format",
        "hmac_secret_file",
        "routing_key_file",
        "ca_cert",
        "timeout",
    ],
    tables: &[],
};

// ---- job files -------------------------------------------------------------------------------

/// The keys every `[[job]]` accepts, whatever its kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJobCommon {
    pub name: Str,
    pub kind: Str,
    pub enabled: Bool,
    pub window: Str,
    pub alerts: StrList,
    pub timeout: Str,
}

pub(crate) const JOB_COMMON_KEYS: &[&str] =
    &["name", "kind", "enabled", "window", "alerts", "timeout"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub path: Str,
    pub field: Str,
    pub every: Str,
    pub format: Str,
    pub prefix: Str,
    pub on_rotate: Str,
}

pub(crate) const API_KEY: Schema = Schema {
    name: "api-key",
    keys: &["path", "field", "every", "format", "prefix", "on_rotate"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub path: Str,
    pub every: Str,
    pub admin_path: Str,
    pub username: Str,
    pub usernames: StrList,
    pub strategy: Str,
    pub host: Str,
    pub port: Int,
    pub database: Str,
    pub password_length: Int,
    pub password_alphabet: Str,
    pub pending_path: Str,
    pub account_host: Str,
    pub tls: Str,
    pub ca_cert: Str,
    pub client_cert: Str,
    pub client_key: Str,
}

pub(crate) const DATABASE: Schema = Schema {
    name: "postgres/mysql",
    keys: &[
        "path",
        "every",
        "admin_path",
        "username",
        "usernames",
        "strategy",
        "host",
        "port",
        "database",
        "password_length",
        "password_alphabet",
        "pending_path",
        "account_host",
        "tls",
        "ca_cert",
        "client_cert",
        "client_key",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproleSecretId {
    pub role: Str,
    pub mount: Str,
    pub path: Str,
    pub every: Str,
    pub grace: Str,
}

pub(crate) const APPROLE_SECRET_ID: Schema = Schema {
    name: "approle-secret-id",
    keys: &["role", "mount", "path", "every", "grace"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReminder {
    pub path: Str,
    pub max_age: Str,
    pub check_every: Str,
}

pub(crate) const REMINDER: Schema = Schema {
    name: "reminder",
    keys: &["path", "max_age", "check_every"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRaftSnapshot {
    pub schedule: Str,
    pub retain: Str,
    pub min_keep: Int,
    pub recipients: StrList,
    pub s3: Option<Sp<RawS3>>,
    pub local: Option<Sp<RawLocal>>,
}

pub(crate) const RAFT_SNAPSHOT: Schema = Schema {
    name: "raft-snapshot",
    keys: &[
        "schedule",
        "retain",
        "min_keep",
        "recipients",
        "s3",
        "local",
    ],
    tables: &[("s3", &S3), ("local", &LOCAL)],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawS3 {
    pub bucket: Str,
    pub prefix: Str,
    pub region: Str,
    pub endpoint: Str,
    pub force_path_style: Bool,
    pub sse: Str,
    pub part_size_mib: Int,
}

pub(crate) const S3: Schema = Schema {
    name: "[job.s3]",
    keys: &[
        "bucket",
        "prefix",
        "region",
        "endpoint",
        "force_path_style",
        "sse",
        "part_size_mib",
    ],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocal {
    pub dir: Str,
}

pub(crate) const LOCAL: Schema = Schema {
    name: "[job.local]",
    keys: &["dir"],
    tables: &[],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultHealth {
    pub schedule: Str,
}

pub(crate) const VAULT_HEALTH: Schema = Schema {
    name: "vault-health",
    keys: &["schedule"],
    tables: &[],
};

/// The schema of a job kind's own keys.
pub(crate) fn kind_schema(kind: &str) -> Option<&'static Schema> {
    match kind {
        "api-key" => Some(&API_KEY),
        "postgres" | "mysql" => Some(&DATABASE),
        "approle-secret-id" => Some(&APPROLE_SECRET_ID),
        "reminder" => Some(&REMINDER),
        "raft-snapshot" => Some(&RAFT_SNAPSHOT),
        "vault-health" => Some(&VAULT_HEALTH),
        _ => None,
    }
}

// ---- helpers ---------------------------------------------------------------------------------

/// An unknown key found by [`prune_unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub key: String,
    pub span: Range<usize>,
    /// The table it was found in, e.g. `[vault]`.
    pub table: &'static str,
    /// Every key that table accepts.
    pub expected: Vec<&'static str>,
}

/// Removes (and returns) every key of `value` — when it is a table — that is neither in
/// `schema.keys` nor in `extra_keys`, then does the same in the sub-tables `schema.tables` names
/// (each element of an array of tables too).
pub(crate) fn prune_unknown(
    value: &mut Sp<DeValue<'_>>,
    schema: &'static Schema,
    extra_keys: &'static [&'static str],
) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    let DeValue::Table(table) = value.get_mut() else {
        return found;
    };
    let known = |k: &str| schema.keys.contains(&k) || extra_keys.contains(&k);
    let unknown: Vec<_> = table
        .keys()
        .filter(|key| !known(key.get_ref()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        found.push(UnknownKey {
            key: key.get_ref().to_string(),
            span: key.span(),
            table: schema.name,
            expected: extra_keys.iter().chain(schema.keys).copied().collect(),
        });
    }
    for (name, sub) in schema.tables {
        for (key, v) in table.iter_mut() {
            if key.get_ref() != name {
                continue;
            }
            match v.get_mut() {
                DeValue::Array(items) => {
                    for item in items.iter_mut() {
                        found.extend(prune_unknown(item, sub, &[]));
                    }
                }
                DeValue::Table(_) => found.extend(prune_unknown(v, sub, &[])),
                _ => {}
            }
        }
    }
    found
}

/// Moves the entries of `table` whose key is in `keys` into a new table.
pub(crate) fn split_off<'i>(table: &mut DeTable<'i>, keys: &[&str]) -> DeTable<'i> {
    let mut taken = DeTable::new();
    let names: Vec<_> = table
        .keys()
        .filter(|k| keys.contains(&k.get_ref().as_ref()))
        .cloned()
        .collect();
    for name in names {
        if let Some((k, v)) = table.remove_entry(&name) {
            taken.insert(k, v);
        }
    }
    taken
}

/// Deserializes `T` from one table of a parsed file, keeping absolute spans.
pub(crate) fn from_value<'i, T: Deserialize<'i>>(
    value: Sp<DeValue<'i>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(toml::de::ValueDeserializer::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde accepts for `T`, read from its unknown-field error.
    fn serde_keys<T: for<'i> Deserialize<'i> + std::fmt::Debug>() -> Vec<String> {
        let text = "__not_a_key__ = 1";
        let doc = DeTable::parse(text).unwrap();
        let value = Spanned::new(doc.span(), DeValue::Table(doc.into_inner()));
        let err = from_value::<T>(value).unwrap_err();
        let msg = err.message().to_string();
        let list = msg
            .split_once("expected one of ")
            .or_else(|| msg.split_once("expected "))
            .map(|(_, l)| l.to_string())
            .unwrap_or_default();
        let mut keys: Vec<String> = list
            .split(", ")
            .flat_map(|k| k.split(" or "))
            .map(|k| k.trim_matches('`').to_string())
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }

    fn schema_keys(keys: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn schemas_list_exactly_the_fields_of_their_structs() {
        assert_eq!(serde_keys::<RawVault>(), schema_keys(VAULT.keys));
        assert_eq!(serde_keys::<RawVaultAuth>(), schema_keys(VAULT_AUTH.keys));
        assert_eq!(serde_keys::<RawState>(), schema_keys(STATE.keys));
        assert_eq!(serde_keys::<RawHttp>(), schema_keys(HTTP.keys));
        assert_eq!(serde_keys::<RawJobs>(), schema_keys(JOBS.keys));
        assert_eq!(serde_keys::<RawEngine>(), schema_keys(ENGINE.keys));
        assert_eq!(serde_keys::<RawAlerts>(), schema_keys(ALERTS.keys));
        assert_eq!(serde_keys::<RawEmail>(), schema_keys(EMAIL.keys));
        assert_eq!(serde_keys::<RawWebhook>(), schema_keys(WEBHOOK.keys));
        assert_eq!(serde_keys::<RawJobCommon>(), schema_keys(JOB_COMMON_KEYS));
        assert_eq!(serde_keys::<RawApiKey>(), schema_keys(API_KEY.keys));
        assert_eq!(serde_keys::<RawDatabase>(), schema_keys(DATABASE.keys));
        assert_eq!(
            serde_keys::<RawApproleSecretId>(),
            schema_keys(APPROLE_SECRET_ID.keys)
        );
        assert_eq!(serde_keys::<RawReminder>(), schema_keys(REMINDER.keys));
        assert_eq!(
            serde_keys::<RawRaftSnapshot>(),
            schema_keys(RAFT_SNAPSHOT.keys)
        );
        assert_eq!(serde_keys::<RawS3>(), schema_keys(S3.keys));
        assert_eq!(serde_keys::<RawLocal>(), schema_keys(LOCAL.keys));
        assert_eq!(
            serde_keys::<RawVaultHealth>(),
            schema_keys(VAULT_HEALTH.keys)
        );
    }

    #[test]
    fn every_kind_has_a_schema() {
        for kind in crate::config::JobSpec::KINDS {
            assert!(kind_schema(kind).is_some(), "{kind}");
        }
        assert!(kind_schema("nope").is_none());
    }

    #[test]
    fn prune_reports_every_unknown_key_with_its_span_including_nested_tables() {
        let text = "address = \"x\"\nbogus = 1\nalso = 2\n[auth]\nmethod = \"token\"\nnope = 3\n";
        let doc = DeTable::parse(text).unwrap();
        let mut value = Spanned::new(doc.span(), DeValue::Table(doc.into_inner()));
        let mut unknown = prune_unknown(&mut value, &VAULT, &[]);
        unknown.sort_by_key(|u| u.span.start);
        let names: Vec<_> = unknown.iter().map(|u| (u.key.as_str(), u.table)).collect();
        assert_eq!(
            names,
            [
                ("bogus", "[vault]"),
                ("also", "[vault]"),
                ("nope", "[vault.auth]")
            ]
        );
        assert_eq!(&text[unknown[0].span.clone()], "bogus");
        // What is left deserializes cleanly.
        let vault: RawVault = from_value(value).unwrap();
        assert!(vault.auth.is_some());
    }

    #[test]
    fn split_off_moves_only_the_named_keys() {
        let text = "name = \"a\"\nkind = \"reminder\"\npath = \"secret/x\"\n";
        let doc = DeTable::parse(text).unwrap();
        let mut table = doc.into_inner();
        let common = split_off(&mut table, JOB_COMMON_KEYS);
        assert_eq!(common.len(), 2);
        assert_eq!(table.len(), 1);
    }
}
