//! Job settings: one [`JobConfig`] per `[[job]]`, the kind-specific part in [`JobSpec`].

use std::collections::HashMap;
use std::path::PathBuf;

use super::{ConfigError, DbTls, Duration, Location, Schedule};

/// One `[[job]]`.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    /// `enabled` (default true).
    pub enabled: bool,
    /// `window`: cron of the moments at which a due rotation may start.
    pub window: Option<Schedule>,
    /// `alerts`: which sinks (by name); `None` = all.
    pub alerts: Option<Vec<String>>,
    /// `timeout`: per-run timeout, overriding `[engine] job_timeout`.
    pub timeout: Option<Duration>,
    pub spec: JobSpec,
    /// Where the `[[job]]` was written (for messages).
    pub location: Location,
}

impl JobConfig {
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }
}

/// The kind-specific settings; the variant name's kebab-case is the `kind` string.
#[derive(Debug, Clone)]
pub enum JobSpec {
    ApiKey(ApiKeyConfig),
    Postgres(DatabaseConfig),
    Mysql(DatabaseConfig),
    ApproleSecretId(ApproleSecretIdConfig),
    Reminder(ReminderConfig),
    RaftSnapshot(RaftSnapshotConfig),
    VaultHealth(VaultHealthConfig),
}

impl JobSpec {
    /// Every `kind` string, in the order they are documented.
    pub const KINDS: [&'static str; 7] = [
        "api-key",
        "postgres",
        "mysql",
        "approle-secret-id",
        "reminder",
        "raft-snapshot",
        "vault-health",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::ApiKey(_) => "api-key",
            JobSpec::Postgres(_) => "postgres",
            JobSpec::Mysql(_) => "mysql",
            JobSpec::ApproleSecretId(_) => "approle-secret-id",
            JobSpec::Reminder(_) => "reminder",
            JobSpec::RaftSnapshot(_) => "raft-snapshot",
            JobSpec::VaultHealth(_) => "vault-health",
        }
    }
}

/// `kind = "api-key"`.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// Full KV v2 path including the mount, e.g. `secret/api-key/default`.
    pub path: String,
    /// Field holding the key (default `api_key`).
    pub field: String,
    /// Rotate when the current version is older than this (default 30d).
    pub every: Duration,
    pub format: KeyFormat,
    /// Optional URL POSTed (without the secret) after a rotation so consumers reload.
    pub on_rotate: Option<String>,
}

/// `format = "hex:24"` (+ optional `prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    pub alphabet: KeyAlphabet,
    /// Number of random bytes for `hex`/`base64url`, of characters for `alnum`.
    pub length: usize,
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlphabet {
    Hex,
    Base64Url,
    Alnum,
}

/// `kind = "postgres"` / `"mysql"`.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub path: String,
    pub every: Duration,
    pub admin_path: String,
    pub usernames: Vec<String>,
    pub strategy: DbStrategy,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub password_length: usize,
    /// `password_alphabet`: the characters passwords are drawn from (printable ASCII without
    /// quotes, backslash or backtick, at least 16 different ones).
    pub password_alphabet: String,
    /// `pending_path`: where the new password waits (KV v2) while a rotation is in flight; `None`
    /// = `<first segment of path>/vault-steward/pending/<job>`.
    pub pending_path: Option<String>,
    /// Where `pending_path` was written, for the cross-job check in
    /// [`super::validate::pending_path_clashes`]; `None` when the default is used.
    pub pending_path_location: Option<Location>,
    /// `account_host` (mysql only): the host part of the MySQL account, `'user'@'HOST'`; `None`
    /// = `%`, as MySQL itself reads an account name without a host.
    pub account_host: Option<String>,
    /// `tls`, `ca_cert`, `client_cert`, `client_key`: for the admin connection and the test
    /// login alike.
    pub tls: DbTls,
}

impl DatabaseConfig {
    /// The pending path this job uses: `pending_path`, or the default for `job`.
    pub fn effective_pending_path(&self, job: &str) -> String {
        self.pending_path
            .clone()
            .unwrap_or_else(|| default_pending_path(&self.path, job))
    }
}

/// The pending path of a database job without `pending_path`: beside the consumers' secrets in
/// the same mount, under a prefix of its own (`<mount>/vault-steward/pending/<job>`).
pub fn default_pending_path(path: &str, job: &str) -> String {
    let mount = path.split('/').next().unwrap_or(path);
    format!("{mount}/vault-steward/pending/{job}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStrategy {
    Single,
    Alternating,
}

/// `kind = "approle-secret-id"`.
#[derive(Debug, Clone)]
pub struct ApproleSecretIdConfig {
    pub role: String,
    /// AppRole auth mount (default `approle`).
    pub mount: String,
    pub path: String,
    pub every: Duration,
    pub grace: Duration,
}

/// `kind = "reminder"`.
#[derive(Debug, Clone)]
pub struct ReminderConfig {
    pub path: String,
    pub max_age: Duration,
    /// How often the age is checked (default 1h).
    pub check_every: Duration,
}

/// `kind = "raft-snapshot"`.
#[derive(Debug, Clone)]
pub struct RaftSnapshotConfig {
    pub schedule: Schedule,
    pub retain: Duration,
    pub min_keep: u32,
    pub recipients: Vec<String>,
    pub s3: Option<S3DestinationConfig>,
    pub local: Option<LocalDestinationConfig>,
}

/// `[job.s3]`.
#[derive(Debug, Clone)]
pub struct S3DestinationConfig {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub sse: Option<String>,
    /// `part_size_mib`: size of each multipart-upload part, in bytes. Bounds memory: at most
    /// four parts are held at once (three uploading, one filling).
    pub part_size: usize,
}

/// `[job.local]`.
#[derive(Debug, Clone)]
pub struct LocalDestinationConfig {
    pub dir: PathBuf,
}

/// `kind = "vault-health"`.
#[derive(Debug, Clone)]
pub struct VaultHealthConfig {
    pub schedule: Schedule,
}

/// Two `raft-snapshot` jobs that write to one place would take each other's names and prune
/// each other's snapshots (a job knows its snapshots by their names only). One error for each
/// job that names a place an earlier job (in file order) already writes to.
pub(crate) fn shared_snapshot_destinations(jobs: &[JobConfig]) -> Vec<ConfigError> {
    let mut first: HashMap<String, &JobConfig> = HashMap::new();
    let mut errors = Vec::new();
    for job in jobs {
        let JobSpec::RaftSnapshot(r) = &job.spec else {
            continue;
        };
        let s3 = r.s3.as_ref().map(|s| {
            let at = s
                .endpoint
                .as_deref()
                .map(|e| format!(" (endpoint {})", e.trim_end_matches('/')))
                .unwrap_or_default();
            format!("s3://{}/{}{at}", s.bucket, s.prefix)
        });
        let local = r.local.as_ref().map(|l| {
            let dir: PathBuf = l.dir.components().collect();
            format!("the directory {}", dir.display())
        });
        for place in [s3, local].into_iter().flatten() {
            if let Some(other) = first.get(&place) {
                errors.push(ConfigError {
                    location: job.location.clone(),
                    message: format!(
                        "job `{}` writes its snapshots to {place}, as job `{}` at {} does: \
                         the two would take each other's names and prune each other's \
                         snapshots; give one of them its own `prefix` or `dir`",
                        job.name, other.name, other.location
                    ),
                });
            } else {
                first.insert(place, job);
            }
        }
    }
    errors
}
