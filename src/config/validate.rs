//! Pure validation: parsed files (with spans) plus environment overrides in, typed config and
//! `FILE:LINE:COL` errors out. Nothing here touches the disk or the network; the file checks it
//! asks for (secret files, the CA bundle) are carried out by [`super::load::load_with_env`].
//!
//! Validation never stops at the first problem of a file: a missing or bad value is recorded and
//! replaced by a placeholder so that the rest is still checked. A [`Ctx`] with errors never yields
//! a config.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::kv_path::check_kv_path;
use super::raw::{self, Int, Sp, Str, UnknownKey};
use super::secret::SecretSource;
use super::source::SourceFile;
use super::{
    AlertsConfig, ApiKeyConfig, ApproleSecretIdConfig, ConfigError, DatabaseConfig, DbStrategy,
    Duration, EmailSinkConfig, EngineConfig, HttpConfig, JobConfig, JobSpec, KeyFormat,
    LocalDestinationConfig, Location, RaftSnapshotConfig, ReminderConfig, S3DestinationConfig,
    Schedule, SmtpEndpoint, SmtpSecurity, StateConfig, VaultAuth, VaultConfig, VaultHealthConfig,
    WebhookFormat, WebhookSinkConfig, WebhookUrl,
    db_tls::{DbTls, TlsMode, UrlDialect, url_tls},
};

/// Reads an environment variable; empty values count as unset (as with the Vault CLI).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Defaults, in one place (they are also what the example files document).
pub(crate) mod defaults {
    use super::Duration;

    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const APPROLE_MOUNT: &str = "approle";
    pub const STATE_URL: &str = "sqlite:///var/lib/vault-steward/state.db";
    pub const LEASE_TTL: Duration = Duration::from_secs(15);
    pub const LISTEN: &str = "127.0.0.1:9464";
    /// Relative to the config file's directory.
    pub const JOBS_DIR: &str = "jobs";
    pub const JOB_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    pub const RETRY_INITIAL: Duration = Duration::from_secs(10);
    pub const RETRY_MAX: Duration = Duration::from_secs(15 * 60);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_CONCURRENT: i64 = 16;
    pub const REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
    pub const FAILURES_BEFORE_ALERT: i64 = 3;
    pub const ALERT_RETRY_INITIAL: Duration = Duration::from_secs(30);
    pub const ALERT_RETRY_MAX: Duration = Duration::from_secs(15 * 60);
    pub const SINK_TIMEOUT: Duration = Duration::from_secs(30);
    /// PagerDuty's Events API v2 endpoint, for `format = "pagerduty"` without `url`.
    pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
    pub const API_KEY_FIELD: &str = "api_key";
    pub const API_KEY_EVERY: Duration = Duration::from_secs(30 * 86_400);
    pub const API_KEY_FORMAT: &str = "hex:24";
    pub const DB_EVERY: Duration = Duration::from_secs(90 * 86_400);
    pub const DB_PASSWORD_LENGTH: i64 = 32;
    /// Letters, digits and the URL-unreserved `-_.~`: no quoting trouble in SQL, URLs or shells.
    pub const DB_PASSWORD_ALPHABET: &str =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
    pub const SECRET_ID_EVERY: Duration = Duration::from_secs(30 * 86_400);
    pub const SECRET_ID_GRACE: Duration = Duration::from_secs(86_400);
    pub const REMINDER_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
    pub const REMINDER_CHECK_EVERY: Duration = Duration::from_secs(3600);
    pub const SNAPSHOT_SCHEDULE: &str = "0 0 * * * *";
    pub const SNAPSHOT_RETAIN: Duration = Duration::from_secs(48 * 3600);
    pub const SNAPSHOT_MIN_KEEP: i64 = 3;
    pub const S3_PART_SIZE_MIB: i64 = 6;
    pub const HEALTH_SCHEDULE: &str = "0 * * * * *";
}

/// Environment variables read by [`steward`].
pub(crate) mod env_vars {
    pub const VAULT_ADDR: &str = "VAULT_ADDR";
    pub const VAULT_CACERT: &str = "VAULT_CACERT";
    pub const VAULT_NAMESPACE: &str = "VAULT_NAMESPACE";
    pub const VAULT_TOKEN: &str = "VAULT_TOKEN";
    pub const VAULT_ROLE_ID: &str = "VAULT_ROLE_ID";
    pub const VAULT_SECRET_ID: &str = "VAULT_SECRET_ID";
    pub const STATE_PASSWORD: &str = "VAULT_STEWARD_STATE_PASSWORD";
}

/// A check on a file named by the config, done by the loader (it needs the disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileCheck {
    /// A `*_file` secret: must exist, be readable and not be readable by other users.
    Secret {
        key: &'static str,
        path: PathBuf,
        location: Location,
    },
    /// A plain file that must exist and be readable (the CA bundle).
    Readable {
        key: &'static str,
        path: PathBuf,
        location: Location,
    },
}

/// Validation state for one file.
pub(crate) struct Ctx<'a> {
    pub src: &'a SourceFile,
    /// Relative paths in the file are resolved against this (the file's directory).
    pub base: PathBuf,
    pub errors: Vec<ConfigError>,
    /// Valid settings that weaken something (printed by `check`, logged by `run`).
    pub warnings: Vec<ConfigError>,
    pub file_checks: Vec<FileCheck>,
}

impl<'a> Ctx<'a> {
    pub fn new(src: &'a SourceFile) -> Self {
        let base = src.path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ctx {
            src,
            base,
            errors: Vec::new(),
            warnings: Vec::new(),
            file_checks: Vec::new(),
        }
    }

    pub fn loc(&self, span: &Range<usize>) -> Location {
        self.src.span_location(span)
    }

    pub fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let location = self.loc(span);
        self.errors.push(ConfigError {
            location,
            message: message.into(),
        });
    }

    /// A warning at `span`, or at the start of the file when there is no span.
    pub fn warn_at(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        let location = match span {
            Some(span) => self.loc(span),
            None => self.src.start(),
        };
        self.warnings.push(ConfigError {
            location,
            message: message.into(),
        });
    }

    pub fn warn(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.warn_at(Some(span), message);
    }

    /// An error that belongs to the file as a whole (or to the environment).
    pub fn error_at_start(&mut self, message: impl Into<String>) {
        let location = self.src.start();
        self.errors.push(ConfigError {
            location,
            message: message.into(),
        });
    }

    /// Errors at `span`, or at the start of the file when there is no span.
    fn error_at(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        match span {
            Some(span) => self.error(span, message),
            None => self.error_at_start(message),
        }
    }

    pub fn unknown_key(&mut self, u: &UnknownKey, within: &str) {
        let hint = match closest(&u.key, &u.expected) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("expected one of: {}", u.expected.join(", ")),
        };
        self.error(
            &u.span,
            format!("unknown key `{}` in {within}; {hint}", u.key),
        );
    }

    /// Resolves a path from the file against the file's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A required string: reports it missing at `header` (the table's header) when absent.
    fn required<'v>(
        &mut self,
        v: &'v Str,
        key: &str,
        header: &Range<usize>,
        within: &str,
    ) -> Option<&'v Sp<String>> {
        match v {
            Some(s) => Some(s),
            None => {
                self.error(header, format!("missing `{key}` in {within}"));
                None
            }
        }
    }

    /// A string that, when present, must not be blank.
    fn non_empty(&mut self, v: &Str, key: &str) -> Option<String> {
        let s = v.as_ref()?;
        if s.get_ref().trim().is_empty() {
            self.error(&s.span(), format!("`{key}` must not be empty"));
        }
        Some(s.get_ref().clone())
    }

    fn required_non_empty(
        &mut self,
        v: &Str,
        key: &str,
        header: &Range<usize>,
        within: &str,
    ) -> String {
        if self.required(v, key, header, within).is_none() {
            return String::new();
        }
        self.non_empty(v, key).unwrap_or_default()
    }

    fn duration(&mut self, v: &Str, default: Duration) -> Duration {
        self.opt_duration(v).unwrap_or(default)
    }

    fn opt_duration(&mut self, v: &Str) -> Option<Duration> {
        let s = v.as_ref()?;
        match s.get_ref().parse::<Duration>() {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&s.span(), e);
                None
            }
        }
    }

    fn opt_schedule(&mut self, v: &Str) -> Option<Schedule> {
        let s = v.as_ref()?;
        match Schedule::parse(s.get_ref()) {
            Ok(sch) => Some(sch),
            Err(e) => {
                self.error(&s.span(), e);
                None
            }
        }
    }

    /// A schedule with a default; `None` when the value is invalid (reported).
    fn schedule(&mut self, v: &Str, default: &str) -> Option<Schedule> {
        if v.is_some() {
            return self.opt_schedule(v);
        }
        match Schedule::parse(default) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error_at_start(format!("internal error: default schedule: {e}"));
                None
            }
        }
    }

    fn int_in(&mut self, v: &Int, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let Some(n) = v else { return default };
        let value = *n.get_ref();
        if value < min || value > max {
            self.error(
                &n.span(),
                format!("`{key}` must be between {min} and {max}, not {value}"),
            );
            return default;
        }
        value
    }

    fn kv_path(&mut self, v: &Str, key: &str, header: &Range<usize>, within: &str) -> String {
        let Some(s) = self.required(v, key, header, within) else {
            return String::new();
        };
        if let Err(e) = check_kv_path(s.get_ref()) {
            self.error(&s.span(), format!("`{key}`: {e}"));
        }
        s.get_ref().clone()
    }

    fn http_url(&mut self, s: &Sp<String>, key: &str) {
        if let Err(e) = check_http_url(s.get_ref()) {
            self.error(&s.span(), format!("`{key}`: {e}"));
        }
    }

    /// A `*_file` secret setting.
    fn secret_file(&mut self, s: &Sp<String>, key: &'static str) -> SecretSource {
        let path = self.path(s.get_ref());
        let location = self.loc(&s.span());
        if s.get_ref().trim().is_empty() {
            self.error(&s.span(), format!("`{key}` must not be empty"));
        } else {
            self.file_checks.push(FileCheck::Secret {
                key,
                path: path.clone(),
                location: location.clone(),
            });
        }
        SecretSource::File {
            path,
            location: Some(location),
        }
    }

    /// A plain file setting (a CA bundle) that must exist and be readable.
    fn readable_file(&mut self, s: &Sp<String>, key: &'static str) -> PathBuf {
        let path = self.path(s.get_ref());
        let location = self.loc(&s.span());
        if s.get_ref().trim().is_empty() {
            self.error(&s.span(), format!("`{key}` must not be empty"));
        } else {
            self.file_checks.push(FileCheck::Readable {
                key,
                path: path.clone(),
                location,
            });
        }
        path
    }

    /// `key` set where it has no effect.
    fn not_here(&mut self, v: &Str, key: &str, why: &str) {
        if let Some(s) = v {
            self.error(&s.span(), format!("`{key}` {why}"));
        }
    }

    /// Deserializes one table, reporting a failure (naming the key whose value is wrong).
    fn section<'i, T: serde::Deserialize<'i>>(&mut self, value: Sp<DeValue<'i>>) -> Option<T> {
        let entries: Vec<(String, Range<usize>)> = match value.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), v.span()))
                .collect(),
            _ => Vec::new(),
        };
        match raw::from_value(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let key = e.span().and_then(|span| {
                    entries
                        .iter()
                        .find(|(_, v)| v.start <= span.start && span.end <= v.end)
                        .map(|(k, _)| k.clone())
                });
                let message = tidy_toml_message(e.message());
                let message = match key {
                    Some(k) if message.contains("table, expected a sequence") => format!(
                        "`{k}` is a list of tables: write `[[…{k}]]`, with double brackets, for each entry"
                    ),
                    Some(k) => format!("`{k}`: {message}"),
                    None => message,
                };
                self.error_at(e.span().as_ref(), message);
                None
            }
        }
    }

    /// Reports and removes unknown keys, then deserializes.
    fn pruned_section<'i, T: serde::Deserialize<'i>>(
        &mut self,
        mut value: Sp<DeValue<'i>>,
        schema: &'static raw::Schema,
    ) -> Option<T> {
        for u in raw::prune_unknown(&mut value, schema, &[]) {
            self.unknown_key(&u, u.table);
        }
        self.section(value)
    }
}

/// Serde's wording for people who write TOML.
fn tidy_toml_message(message: &str) -> String {
    let m = message.trim();
    let m = m.replacen("unknown field", "unknown key", 1);
    let m = m.replace("missing field", "missing key");
    m.replace("invalid type: map", "wrong type: table")
        .replace("invalid type: ", "wrong type: ")
        .replace("expected i64", "expected an integer")
}

/// The expected key closest to a misspelt one, if any is close enough to be a likely typo.
pub(crate) fn closest<'k>(key: &str, expected: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    expected
        .iter()
        .map(|e| (edit_distance(key, e), *e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An `http(s)://host…` URL.
pub(crate) fn check_http_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("invalid URL `{s}`: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("URL `{s}` must start with https:// or http://"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL `{s}` has no host"));
    }
    if !u.password().unwrap_or("").is_empty() {
        return Err("URL contains a password: secrets never sit in the config in clear".into());
    }
    Ok(u)
}

/// Names of jobs and sinks end up in metric labels, lock keys and alert subjects.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_first || !ok_rest {
        return Err(format!(
            "invalid name `{}`: use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
            name.escape_default()
        ));
    }
    Ok(())
}

/// An age X25519 recipient (`age1…`) or an SSH public key (`ssh-ed25519 …`, `ssh-rsa …`).
pub(crate) fn check_recipient(r: &str) -> Result<(), String> {
    let r = r.trim();
    let shown: String = if r.chars().count() > 20 {
        format!("{}…", r.chars().take(20).collect::<String>())
    } else {
        r.to_string()
    };
    if r.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || r.contains("PRIVATE KEY") {
        // Never echo it: it is a secret.
        return Err("this is a private key (identity), not a recipient: put the public key here (`age-keygen -y` prints it) and keep the identity offline".into());
    }
    if r.starts_with("age1") {
        return r
            .parse::<age::x25519::Recipient>()
            .map(drop)
            .map_err(|e| format!("invalid age recipient `{shown}`: {e}"));
    }
    if r.starts_with("ssh-") {
        use age::ssh::ParseRecipientKeyError as E;
        return r.parse::<age::ssh::Recipient>().map(drop).map_err(|e| {
            let why = match e {
                E::Ignore | E::Unsupported(_) => {
                    "unsupported SSH key type (use ssh-ed25519 or ssh-rsa)".to_string()
                }
                E::Invalid(why) => why.to_string(),
                E::RsaModulusTooLarge => "RSA key too large".to_string(),
                E::RsaModulusTooSmall => "RSA key too small (at least 2048 bits)".to_string(),
                _ => "not a usable SSH public key".to_string(),
            };
            format!("invalid SSH recipient `{shown}`: {why}")
        });
    }
    Err(format!(
        "invalid recipient `{shown}`: expected an age public key (`age1…`) or an SSH public key (`ssh-ed25519 …` or `ssh-rsa …`)"
    ))
}

// ---- steward.toml ----------------------------------------------------------------------------

/// Everything `steward.toml` yields.
pub(crate) struct Steward {
    pub vault: VaultConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub jobs_dir: PathBuf,
    /// Where `[jobs] dir` was written, if it was.
    pub jobs_dir_span: Option<Range<usize>>,
    pub engine: EngineConfig,
    pub alerts: AlertsConfig,
    /// The sink names jobs may refer to; `None` when `[alerts]` itself is broken, so that jobs
    /// are not blamed for it.
    pub sink_names: Option<HashSet<String>>,
}

/// Validates a parsed `steward.toml`.
pub(crate) fn steward(ctx: &mut Ctx<'_>, doc: Spanned<DeTable<'_>>, env: Env<'_>) -> Steward {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut sections: HashMap<&str, Sp<DeValue<'_>>> = HashMap::new();
    for (key, value) in doc.into_inner() {
        match raw::STEWARD_SECTIONS
            .iter()
            .find(|s| **s == key.get_ref().as_ref())
        {
            Some(name) => {
                sections.insert(name, value);
            }
            None => {
                let u = UnknownKey {
                    key: key.get_ref().to_string(),
                    span: key.span(),
                    table: "steward.toml",
                    expected: raw::STEWARD_SECTIONS.to_vec(),
                };
                ctx.unknown_key(&u, "the top level of steward.toml");
            }
        }
    }

    let vault = vault(ctx, sections.remove("vault"), &env);

    let state_raw: Option<(Range<usize>, raw::RawState)> = sections.remove("state").and_then(|v| {
        let span = v.span();
        ctx.pruned_section(v, &raw::STATE).map(|r| (span, r))
    });
    let state = state(ctx, state_raw.as_ref().map(|(_, r)| r), &env);

    let listen = match sections.remove("http") {
        Some(v) => ctx
            .pruned_section::<raw::RawHttp>(v, &raw::HTTP)
            .and_then(|h| h.listen),
        None => None,
    };
    let http = http(ctx, listen.as_ref());

    let (jobs_dir, jobs_dir_span) = match sections
        .remove("jobs")
        .and_then(|v| ctx.pruned_section::<raw::RawJobs>(v, &raw::JOBS))
        .and_then(|j| j.dir)
    {
        Some(dir) => {
            if dir.get_ref().trim().is_empty() {
                ctx.error(&dir.span(), "`dir` must not be empty");
            }
            (ctx.path(dir.get_ref()), Some(dir.span()))
        }
        None => (ctx.path(defaults::JOBS_DIR), None),
    };

    let engine_raw = sections
        .remove("engine")
        .and_then(|v| ctx.pruned_section::<raw::RawEngine>(v, &raw::ENGINE));
    let engine = engine(ctx, engine_raw.as_ref());

    let (alerts, sink_names) = match sections.remove("alerts") {
        None => (alerts(ctx, None), Some(HashSet::new())),
        Some(v) => match ctx.pruned_section::<raw::RawAlerts>(v, &raw::ALERTS) {
            Some(r) => {
                let a = alerts(ctx, Some(&r));
                let names = a
                    .email
                    .iter()
                    .map(|e| e.name.clone())
                    .chain(a.webhook.iter().map(|w| w.name.clone()))
                    .collect();
                (a, Some(names))
            }
            None => (alerts(ctx, None), None),
        },
    };

    Steward {
        vault,
        state,
        http,
        jobs_dir,
        jobs_dir_span,
        engine,
        alerts,
        sink_names,
    }
}

fn vault(
    ctx: &mut Ctx<'_>,
    value: Option<Sp<DeValue<'_>>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> VaultConfig {
    use env_vars::*;
    let header = value.as_ref().map(|v| v.span());
    let raw: Option<raw::RawVault> = value.and_then(|v| ctx.pruned_section(v, &raw::VAULT));
    // A broken [vault] was reported; don't pile "missing" errors on top of it.
    let broken = header.is_some() && raw.is_none();

    let address = match (
        env(VAULT_ADDR),
        raw.as_ref().and_then(|r| r.address.as_ref()),
    ) {
        (Some(addr), _) => {
            if let Err(e) = check_vault_addr(&addr) {
                ctx.error_at(header.as_ref(), format!("{VAULT_ADDR}: {e}"));
            } else if let Some(w) = vault_addr_warning(&addr) {
                ctx.warn_at(header.as_ref(), format!("{VAULT_ADDR}: {w}"));
            }
            addr
        }
        (None, Some(a)) => {
            if let Err(e) = check_vault_addr(a.get_ref()) {
                ctx.error(&a.span(), format!("`address`: {e}"));
            } else if let Some(w) = vault_addr_warning(a.get_ref()) {
                ctx.warn_at(Some(&a.span()), format!("`address`: {w}"));
            }
            a.get_ref().clone()
        }
        (None, None) => {
            if !broken {
                ctx.error_at(
                    header.as_ref(),
                    "missing `address` in [vault] (or set VAULT_ADDR), e.g. address = \"https://vault.example.com:8200\"",
                );
            }
            String::new()
        }
    };

    let ca_cert = match (
        env(VAULT_CACERT),
        raw.as_ref().and_then(|r| r.ca_cert.as_ref()),
    ) {
        (Some(p), _) => {
            // Relative to the working directory, as the Vault CLI reads it.
            let path = PathBuf::from(p);
            let location = header
                .as_ref()
                .map(|h| ctx.loc(h))
                .unwrap_or_else(|| ctx.src.start());
            ctx.file_checks.push(FileCheck::Readable {
                key: VAULT_CACERT,
                path: path.clone(),
                location,
            });
            Some(path)
        }
        (None, Some(c)) => {
            let path = ctx.path(c.get_ref());
            let location = ctx.loc(&c.span());
            ctx.file_checks.push(FileCheck::Readable {
                key: "ca_cert",
                path: path.clone(),
                location,
            });
            Some(path)
        }
        (None, None) => None,
    };

    let namespace = match env(VAULT_NAMESPACE) {
        Some(ns) => Some(ns),
        None => raw
            .as_ref()
            .and_then(|r| ctx.non_empty(&r.namespace, "namespace")),
    };

    let request_timeout = match &raw {
        Some(r) => ctx.duration(&r.request_timeout, defaults::REQUEST_TIMEOUT),
        None => defaults::REQUEST_TIMEOUT,
    };

    let auth = match raw.as_ref().and_then(|r| r.auth.as_ref()) {
        Some(a) => vault_auth(ctx, a, env),
        None => match env(VAULT_TOKEN) {
            // No [vault.auth]: a token from the environment is enough (development, one-off runs).
            Some(_) => VaultAuth::Token {
                token: SecretSource::Env {
                    var: VAULT_TOKEN.into(),
                },
            },
            None => {
                if !broken {
                    ctx.error_at(
                        header.as_ref(),
                        "missing [vault.auth] (method = \"approle\" or \"token\"), or set VAULT_TOKEN",
                    );
                }
                VaultAuth::Token {
                    token: SecretSource::Env {
                        var: VAULT_TOKEN.into(),
                    },
                }
            }
        },
    };

    VaultConfig {
        address,
        ca_cert,
        namespace,
        request_timeout,
        auth,
    }
}

fn check_vault_addr(addr: &str) -> Result<(), String> {
    let u = check_http_url(addr)?;
    if u.path() != "/" && !u.path().is_empty() {
        return Err(format!(
            "`{addr}` has a path: give only the server, e.g. https://vault.example.com:8200"
        ));
    }
    Ok(())
}

/// Plain HTTP to anything but this machine sends the token, the secret-id and every new secret
/// in clear. Allowed (a lab, a sidecar proxy on another address), but `check` says so.
fn vault_addr_warning(addr: &str) -> Option<String> {
    let u = url::Url::parse(addr).ok()?;
    let host = u.host_str()?;
    (u.scheme() == "http" && !is_loopback_host(host)).then(|| {
        format!(
            "`{addr}` is plain HTTP to a host that is not this machine: the Vault token and every \
             secret would cross the network in clear; use https://"
        )
    })
}

fn vault_auth(
    ctx: &mut Ctx<'_>,
    a: &Sp<raw::RawVaultAuth>,
    env: &dyn Fn(&str) -> Option<String>,
) -> VaultAuth {
    use env_vars::*;
    let header = a.span();
    let a = a.get_ref();
    let within = "[vault.auth]";
    let method = ctx.required(&a.method, "method", &header, within).cloned();
    let placeholder = VaultAuth::Token {
        token: SecretSource::Env {
            var: VAULT_TOKEN.into(),
        },
    };
    let Some(method) = method else {
        return placeholder;
    };
    match method.get_ref().as_str() {
        "token" => {
            for (v, key) in [
                (&a.role_id_file, "role_id_file"),
                (&a.secret_id_file, "secret_id_file"),
                (&a.mount, "mount"),
            ] {
                ctx.not_here(v, key, "is only used with method = \"approle\"");
            }
            let token = match (env(VAULT_TOKEN), &a.token_file) {
                (Some(_), _) => SecretSource::Env {
                    var: VAULT_TOKEN.into(),
                },
                (None, Some(f)) => ctx.secret_file(f, "token_file"),
                (None, None) => {
                    ctx.error(
                        &header,
                        "method = \"token\" needs `token_file` (or the VAULT_TOKEN environment variable)",
                    );
                    SecretSource::Env {
                        var: VAULT_TOKEN.into(),
                    }
                }
            };
            VaultAuth::Token { token }
        }
        "approle" => {
            ctx.not_here(
                &a.token_file,
                "token_file",
                "is only used with method = \"token\"",
            );
            let role_id = approle_source(
                ctx,
                env,
                VAULT_ROLE_ID,
                &a.role_id_file,
                "role_id_file",
                &header,
            );
            let secret_id = approle_source(
                ctx,
                env,
                VAULT_SECRET_ID,
                &a.secret_id_file,
                "secret_id_file",
                &header,
            );
            let mount = match &a.mount {
                Some(m) => {
                    let name = m.get_ref();
                    if name.is_empty() || name.starts_with('/') || name.ends_with('/') {
                        ctx.error(
                            &m.span(),
                            format!("`mount` must be the auth mount's path without slashes around it, e.g. \"{}\"", defaults::APPROLE_MOUNT),
                        );
                    }
                    name.clone()
                }
                None => defaults::APPROLE_MOUNT.to_string(),
            };
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            }
        }
        other => {
            ctx.error(
                &method.span(),
                format!("unknown auth method `{other}`; expected \"approle\" or \"token\""),
            );
            placeholder
        }
    }
}

/// An AppRole credential: the environment variable wins over the file.
fn approle_source(
    ctx: &mut Ctx<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    file: &Str,
    key: &'static str,
    header: &Range<usize>,
) -> SecretSource {
    match (env(var), file) {
        (Some(_), _) => SecretSource::Env { var: var.into() },
        (None, Some(f)) => ctx.secret_file(f, key),
        (None, None) => {
            ctx.error(
                header,
                format!("method = \"approle\" needs `{key}` (or the {var} environment variable)"),
            );
            SecretSource::Env { var: var.into() }
        }
    }
}

fn state(
    ctx: &mut Ctx<'_>,
    raw: Option<&raw::RawState>,
    env: &dyn Fn(&str) -> Option<String>,
) -> StateConfig {
    let url_value = raw.and_then(|r| r.url.as_ref());
    let url = url_value
        .map(|u| u.get_ref().clone())
        .unwrap_or_else(|| defaults::STATE_URL.to_string());
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    let span = url_value.map(|u| u.span());
    let mut tls = DbTls::default();
    match scheme {
        "sqlite" => {
            if let Some(f) = raw.and_then(|r| r.password_file.as_ref()) {
                ctx.error(&f.span(), "`password_file` is only used with a postgres:// state URL");
            }
            for (value, key) in raw
                .map(|r| {
                    vec![
                        (&r.tls, "tls"),
                        (&r.ca_cert, "ca_cert"),
                        (&r.client_cert, "client_cert"),
                        (&r.client_key, "client_key"),
                    ]
                })
                .unwrap_or_default()
            {
                ctx.not_here(value, key, "is only used with a postgres:// state URL");
            }
        }
        "postgres" | "postgresql" => match url::Url::parse(&url) {
            Ok(u) if u.password().is_some() => ctx.error_at(
                span.as_ref(),
                "the state URL contains a password: put it in `password_file` (or VAULT_STEWARD_STATE_PASSWORD) instead",
            ),
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                ctx.error_at(span.as_ref(), format!("state URL `{url}` has no host"))
            }
            Ok(_) => tls = state_tls(ctx, raw, &url, span.as_ref()),
            Err(e) => ctx.error_at(span.as_ref(), format!("invalid state URL `{url}`: {e}")),
        },
        _ => ctx.error_at(
            span.as_ref(),
            format!(
                "unsupported state URL `{}`: use sqlite:///PATH or postgres://USER@HOST/DB",
                hide_userinfo(&url)
            ),
        ),
    }
    let password = match (
        env(env_vars::STATE_PASSWORD),
        raw.and_then(|r| r.password_file.as_ref()),
    ) {
        (Some(_), _) => Some(SecretSource::Env {
            var: env_vars::STATE_PASSWORD.into(),
        }),
        (None, Some(f)) if scheme != "sqlite" => Some(ctx.secret_file(f, "password_file")),
        _ => None,
    };
    let url = if scheme == "sqlite" {
        sqlite_url_against(&ctx.base, &url)
    } else {
        url
    };
    let lease_value = raw.and_then(|r| r.lease_ttl.as_ref());
    let lease_ttl = match raw {
        Some(r) => ctx.duration(&r.lease_ttl, defaults::LEASE_TTL),
        None => defaults::LEASE_TTL,
    };
    // Renewal runs every third of the TTL; below 3s a busy database would depose a healthy leader.
    if let Some(v) = lease_value
        && lease_ttl < Duration::from_secs(3)
    {
        ctx.error(
            &v.span(),
            format!("`lease_ttl` ({lease_ttl}) must be at least 3s"),
        );
    }
    StateConfig {
        url,
        password,
        lease_ttl,
        tls,
    }
}

/// The TLS settings of a PostgreSQL state store: `[state]`'s keys completed by the URL's
/// `sslmode`, `sslrootcert`, … (the two must not disagree).
fn state_tls(
    ctx: &mut Ctx<'_>,
    raw: Option<&raw::RawState>,
    url: &str,
    url_span: Option<&Range<usize>>,
) -> DbTls {
    let explicit = match raw {
        Some(r) => db_tls(
            ctx,
            [&r.tls, &r.ca_cert, &r.client_cert, &r.client_key],
            "the state store's password and every state change cross the network in clear",
        ),
        None => DbTls::default(),
    };
    let from_url = match url_tls(UrlDialect::Postgres, url) {
        Ok(t) => t,
        Err(e) => {
            ctx.error_at(url_span, format!("state URL: {e}"));
            return explicit;
        }
    };
    match explicit.completed_by(&from_url) {
        Ok(tls) => {
            if explicit.mode.is_none() && tls.mode == Some(TlsMode::Disable) {
                ctx.warn_at(
                    url_span,
                    "sslmode=disable: the state store is never reached over TLS; its password \
                     and every state change cross the network in clear",
                );
            }
            tls
        }
        Err(e) => {
            let span = raw.and_then(|r| r.tls.as_ref().or(r.ca_cert.as_ref()).map(|v| v.span()));
            ctx.error_at(span.as_ref().or(url_span), format!("[state]: {e}"));
            explicit
        }
    }
}

/// A SQLite URL with a relative path (`sqlite://state.db`, `sqlite:state.db`) resolved against
/// `base` (the config's directory), so that the working directory never matters.
pub(crate) fn sqlite_url_against(base: &Path, url: &str) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or("");
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    if file.is_empty() || file.starts_with('/') || file.starts_with(":memory:") {
        return url.to_string();
    }
    let resolved = base.join(file);
    match query {
        Some(q) => format!("sqlite://{}?{q}", resolved.display()),
        None => format!("sqlite://{}", resolved.display()),
    }
}

/// A URL fit for messages: whatever sits before `@` (user, password) is left out.
fn hide_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_string(),
    }
}

fn http(ctx: &mut Ctx<'_>, listen: Option<&Sp<String>>) -> HttpConfig {
    let default = || SocketAddr::from(([127, 0, 0, 1], 9464));
    let listen = match listen {
        None => defaults::LISTEN.parse().unwrap_or_else(|_| default()),
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                ctx.error(
                    &l.span(),
                    format!(
                        "invalid listen address `{}`: expected IP:PORT, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"",
                        l.get_ref()
                    ),
                );
                default()
            }
        },
    };
    HttpConfig { listen }
}

fn engine(ctx: &mut Ctx<'_>, raw: Option<&raw::RawEngine>) -> EngineConfig {
    let Some(r) = raw else {
        return EngineConfig {
            job_timeout: defaults::JOB_TIMEOUT,
            retry_initial: defaults::RETRY_INITIAL,
            retry_max: defaults::RETRY_MAX,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            max_concurrent: defaults::MAX_CONCURRENT as usize,
        };
    };
    let job_timeout = ctx.duration(&r.job_timeout, defaults::JOB_TIMEOUT);
    let retry_initial = ctx.duration(&r.retry_initial, defaults::RETRY_INITIAL);
    let retry_max = ctx.duration(&r.retry_max, defaults::RETRY_MAX);
    if retry_max < retry_initial
        && let Some(span) = r
            .retry_max
            .as_ref()
            .or(r.retry_initial.as_ref())
            .map(|s| s.span())
    {
        ctx.error(
            &span,
            format!("`retry_max` ({retry_max}) is shorter than `retry_initial` ({retry_initial})"),
        );
    }
    let shutdown_timeout = ctx.duration(&r.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT);
    let max_concurrent = ctx.int_in(
        &r.max_concurrent,
        "max_concurrent",
        1,
        1024,
        defaults::MAX_CONCURRENT,
    ) as usize;
    EngineConfig {
        job_timeout,
        retry_initial,
        retry_max,
        shutdown_timeout,
        max_concurrent,
    }
}

fn alerts(ctx: &mut Ctx<'_>, raw: Option<&raw::RawAlerts>) -> AlertsConfig {
    let Some(r) = raw else {
        return AlertsConfig {
            repeat_interval: defaults::REPEAT_INTERVAL,
            failures_before_alert: defaults::FAILURES_BEFORE_ALERT as u32,
            retry_initial: defaults::ALERT_RETRY_INITIAL,
            retry_max: defaults::ALERT_RETRY_MAX,
            email: Vec::new(),
            webhook: Vec::new(),
        };
    };
    let repeat_interval = ctx.duration(&r.repeat_interval, defaults::REPEAT_INTERVAL);
    let failures_before_alert = ctx.int_in(
        &r.failures_before_alert,
        "failures_before_alert",
        1,
        1000,
        defaults::FAILURES_BEFORE_ALERT,
    ) as u32;
    let retry_initial = ctx.duration(&r.retry_initial, defaults::ALERT_RETRY_INITIAL);
    let retry_max = ctx.duration(&r.retry_max, defaults::ALERT_RETRY_MAX);
    if let Some(m) = &r.retry_max
        && retry_max < retry_initial
    {
        ctx.error(
            &m.span(),
            format!("`retry_max` ({retry_max}) must not be shorter than `retry_initial` ({retry_initial})"),
        );
    }

    let mut names: HashMap<String, Location> = HashMap::new();
    let mut sink_name =
        |ctx: &mut Ctx<'_>, v: &Str, header: &Range<usize>, within: &str| -> String {
            let Some(n) = ctx.required(v, "name", header, within) else {
                return String::new();
            };
            let name = n.get_ref().clone();
            if let Err(e) = check_name(&name) {
                ctx.error(&n.span(), format!("`name`: {e}"));
            } else if let Some(first) = names.get(&name) {
                ctx.error(
                    &n.span(),
                    format!("duplicate alert sink name `{name}`: already used at {first}"),
                );
            } else {
                names.insert(name.clone(), ctx.loc(&n.span()));
            }
            name
        };

    let mut email = Vec::new();
    for item in r.email.iter().flatten() {
        let header = item.span();
        let e = item.get_ref();
        let within = "[[alerts.email]]";
        let name = sink_name(ctx, &e.name, &header, within);
        let (smtp_url, smtp) = match ctx.required(&e.smtp_url, "smtp_url", &header, within) {
            Some(u) => {
                let smtp = match parse_smtp_url(u.get_ref()) {
                    Ok(smtp) => smtp,
                    Err(err) => {
                        ctx.error(&u.span(), format!("`smtp_url`: {err}"));
                        placeholder_smtp()
                    }
                };
                (u.get_ref().clone(), smtp)
            }
            None => (String::new(), placeholder_smtp()),
        };
        let from = match ctx.required(&e.from, "from", &header, within) {
            Some(f) => {
                if let Err(err) = check_mailbox(f.get_ref()) {
                    ctx.error(&f.span(), format!("`from`: {err}"));
                }
                f.get_ref().clone()
            }
            None => String::new(),
        };
        let to = match &e.to {
            None => {
                ctx.error(&header, format!("missing `to` in {within}"));
                Vec::new()
            }
            Some(list) => {
                if list.get_ref().is_empty() {
                    ctx.error(&list.span(), "`to` must name at least one address");
                }
                for addr in list.get_ref() {
                    if let Err(err) = check_mailbox(addr.get_ref()) {
                        ctx.error(&addr.span(), format!("`to`: {err}"));
                    }
                }
                list.get_ref().iter().map(|a| a.get_ref().clone()).collect()
            }
        };
        let username = ctx.non_empty(&e.username, "username");
        let password = e
            .password_file
            .as_ref()
            .map(|f| ctx.secret_file(f, "password_file"));
        match (&e.username, &e.password_file) {
            (Some(u), None) => {
                ctx.error(&u.span(), "`username` needs `password_file` for SMTP AUTH")
            }
            (None, Some(p)) => {
                ctx.error(&p.span(), "`password_file` needs `username` for SMTP AUTH")
            }
            (Some(_), Some(p))
                if matches!(smtp.security, SmtpSecurity::Plain | SmtpSecurity::Opportunistic)
                    && !is_loopback_host(&smtp.host) =>
            {
                ctx.error(
                    &p.span(),
                    format!(
                        "SMTP AUTH to {} without required TLS would send the password in clear: use `?tls=required` or smtps://",
                        smtp.host
                    ),
                )
            }
            _ => {}
        }
        let ca_cert = e.ca_cert.as_ref().map(|c| ctx.readable_file(c, "ca_cert"));
        if let Some(c) = &e.ca_cert
            && smtp.security == SmtpSecurity::Plain
        {
            ctx.error(
                &c.span(),
                "`ca_cert` has no effect without TLS: use `?tls=required` or smtps://",
            );
        }
        let timeout = ctx.duration(&e.timeout, defaults::SINK_TIMEOUT);
        email.push(EmailSinkConfig {
            name,
            smtp_url,
            smtp,
            from,
            to,
            username,
            password,
            ca_cert,
            timeout,
        });
    }

    let mut webhook = Vec::new();
    for item in r.webhook.iter().flatten() {
        let header = item.span();
        let w = item.get_ref();
        let within = "[[alerts.webhook]]";
        let name = sink_name(ctx, &w.name, &header, within);
        let format = match &w.format {
            None => WebhookFormat::Generic,
            Some(f) => match f.get_ref().as_str() {
                "generic" => WebhookFormat::Generic,
                "slack" => WebhookFormat::Slack,
                "pagerduty" => WebhookFormat::Pagerduty,
                "alertmanager" => WebhookFormat::Alertmanager,
                other => {
                    ctx.error(
                        &f.span(),
                        format!("unknown webhook format `{other}`; expected one of: generic, slack, pagerduty, alertmanager"),
                    );
                    WebhookFormat::Generic
                }
            },
        };
        let url = match (&w.url, &w.url_file) {
            (Some(u), None) => {
                ctx.http_url(u, "url");
                WebhookUrl::Inline(u.get_ref().clone())
            }
            (None, Some(f)) => WebhookUrl::Secret(ctx.secret_file(f, "url_file")),
            (Some(_), Some(f)) => {
                ctx.error(&f.span(), "give either `url` or `url_file`, not both");
                WebhookUrl::Inline(String::new())
            }
            (None, None) if format == WebhookFormat::Pagerduty => {
                WebhookUrl::Inline(defaults::PAGERDUTY_URL.to_string())
            }
            (None, None) => {
                ctx.error(
                    &header,
                    format!("missing `url` (or `url_file`, for a URL that is itself a secret) in {within}"),
                );
                WebhookUrl::Inline(String::new())
            }
        };
        let hmac_secret = match &w.hmac_secret_file {
            Some(f) if format != WebhookFormat::Generic => {
                ctx.error(
                    &f.span(),
                    "`hmac_secret_file` is only used with format = \"generic\" (the other formats have their own authentication in the URL)",
                );
                None
            }
            Some(f) => Some(ctx.secret_file(f, "hmac_secret_file")),
            None => None,
        };
        let routing_key = match &w.routing_key_file {
            Some(f) if format != WebhookFormat::Pagerduty => {
                ctx.error(
                    &f.span(),
                    "`routing_key_file` is only used with format = \"pagerduty\"",
                );
                None
            }
            Some(f) => Some(ctx.secret_file(f, "routing_key_file")),
            None if format == WebhookFormat::Pagerduty => {
                ctx.error(
                    &header,
                    format!("missing `routing_key_file` (the PagerDuty integration key) in {within} with format = \"pagerduty\""),
                );
                None
            }
            None => None,
        };
        let ca_cert = w.ca_cert.as_ref().map(|c| ctx.readable_file(c, "ca_cert"));
        let timeout = ctx.duration(&w.timeout, defaults::SINK_TIMEOUT);
        webhook.push(WebhookSinkConfig {
            name,
            url,
            format,
            hmac_secret,
            routing_key,
            ca_cert,
            timeout,
        });
    }

    AlertsConfig {
        repeat_interval,
        failures_before_alert,
        retry_initial,
        retry_max,
        email,
        webhook,
    }
}

fn placeholder_smtp() -> SmtpEndpoint {
    SmtpEndpoint {
        host: String::new(),
        port: 0,
        security: SmtpSecurity::Plain,
    }
}

/// `localhost` or a loopback IP: traffic that never leaves the host.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `smtp://HOST[:PORT][?tls=required|opportunistic]` or `smtps://HOST[:PORT]`, as lettre reads
/// them (default ports 587 and 465).
pub(crate) fn parse_smtp_url(s: &str) -> Result<SmtpEndpoint, String> {
    let u = url::Url::parse(s).map_err(|e| format!("invalid URL `{s}`: {e}"))?;
    if !matches!(u.scheme(), "smtp" | "smtps") {
        return Err(format!(
            "`{s}` must start with smtp:// (plain, or STARTTLS with ?tls=required) or smtps:// (implicit TLS)"
        ));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{s}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if u.password().is_some() {
        return Err("the SMTP URL contains a password: use `username` and `password_file`".into());
    }
    if !u.username().is_empty() {
        return Err("put the SMTP user in `username`, not in the URL".into());
    }
    if !matches!(u.path(), "" | "/") {
        return Err(format!("`{s}` must not have a path"));
    }
    let mut tls = None;
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "tls" if tls.is_none() => tls = Some(v.into_owned()),
            "tls" => return Err("`tls` is given twice".into()),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (the only one is `tls=required|opportunistic`)"
                ));
            }
        }
    }
    let security = match (u.scheme(), tls.as_deref()) {
        ("smtps", None) => SmtpSecurity::Implicit,
        ("smtps", Some(_)) => {
            return Err("smtps:// is always TLS: drop the `tls` parameter".into());
        }
        (_, None) => SmtpSecurity::Plain,
        (_, Some("required")) => SmtpSecurity::StartTls,
        (_, Some("opportunistic")) => SmtpSecurity::Opportunistic,
        (_, Some(other)) => {
            return Err(format!(
                "unknown `tls={other}`; expected `tls=required` (STARTTLS) or `tls=opportunistic`"
            ));
        }
    };
    let port = u.port().unwrap_or(match security {
        SmtpSecurity::Implicit => 465,
        _ => 587,
    });
    Ok(SmtpEndpoint {
        host,
        port,
        security,
    })
}

fn check_mailbox(s: &str) -> Result<(), String> {
    s.parse::<lettre::message::Mailbox>()
        .map(drop)
        .map_err(|e| format!("invalid email address `{s}`: {e}"))
}

// ---- job files -------------------------------------------------------------------------------

/// What job validation needs from `steward.toml` and from the files before.
pub(crate) struct JobScope<'s> {
    /// Known sink names, or `None` to skip the check (when `[alerts]` is broken).
    pub sink_names: Option<&'s HashSet<String>>,
    /// First location of every job name seen so far, across files.
    pub seen: &'s mut HashMap<String, Location>,
}

/// Validates a parsed job file.
pub(crate) fn job_file(
    ctx: &mut Ctx<'_>,
    doc: Spanned<DeTable<'_>>,
    scope: &mut JobScope<'_>,
) -> Vec<JobConfig> {
    let mut jobs = Vec::new();
    let mut found_jobs = false;
    for (key, value) in doc.into_inner() {
        if key.get_ref() != "job" {
            let u = UnknownKey {
                key: key.get_ref().to_string(),
                span: key.span(),
                table: "job file",
                expected: vec!["job"],
            };
            ctx.unknown_key(&u, "a job file (jobs are written as [[job]] tables)");
            continue;
        }
        found_jobs = true;
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                for item in items.into_iter() {
                    if let Some(job) = job(ctx, item, scope) {
                        jobs.push(job);
                    }
                }
            }
            DeValue::Table(_) => ctx.error(
                &key.span(),
                "`job` must be an array of tables: write [[job]], not [job]",
            ),
            other => ctx.error(
                &span,
                format!(
                    "`job` must be an array of tables ([[job]]), not a {}",
                    other.type_str()
                ),
            ),
        }
    }
    if !found_jobs {
        ctx.error_at_start("no [[job]] in this file");
    }
    jobs
}

fn peek_str<'t>(table: &'t DeTable<'_>, key: &str) -> Option<&'t str> {
    table.get(key).and_then(|v| v.get_ref().as_str())
}

fn job(
    ctx: &mut Ctx<'_>,
    mut item: Sp<DeValue<'_>>,
    scope: &mut JobScope<'_>,
) -> Option<JobConfig> {
    let header = item.span();
    let DeValue::Table(table) = item.get_ref() else {
        ctx.error(
            &header,
            format!(
                "a [[job]] must be a table, not a {}",
                item.get_ref().type_str()
            ),
        );
        return None;
    };
    let peek_name = peek_str(table, "name").map(str::to_string);
    let peek_kind = peek_str(table, "kind").map(str::to_string);
    let kind_schema = peek_kind.as_deref().and_then(raw::kind_schema);
    let within = match (&peek_name, peek_str(table, "kind")) {
        (Some(n), Some(k)) => format!("job `{n}` (kind = \"{k}\")"),
        (Some(n), None) => format!("job `{n}`"),
        (None, _) => "[[job]]".to_string(),
    };

    if let Some(schema) = kind_schema {
        for u in raw::prune_unknown(&mut item, schema, raw::JOB_COMMON_KEYS) {
            let place = if u.table == schema.name {
                within.clone()
            } else {
                format!("{} of {within}", u.table)
            };
            ctx.unknown_key(&u, &place);
        }
    }
    let DeValue::Table(table) = item.get_mut() else {
        return None;
    };
    let common_table = raw::split_off(table, raw::JOB_COMMON_KEYS);
    let kind_table = std::mem::take(table);
    let common: Option<raw::RawJobCommon> =
        ctx.section(Spanned::new(header.clone(), DeValue::Table(common_table)));
    // The kind's own keys are checked even when the common ones are broken.
    let spec = match (&peek_kind, kind_schema) {
        (Some(kind), Some(_)) => kind_spec(ctx, kind, kind_table, &header, &within),
        _ => None,
    };
    let common = common?;

    let name = match ctx.required(&common.name, "name", &header, "[[job]]") {
        Some(n) => {
            let name = n.get_ref().clone();
            if let Err(e) = check_name(&name) {
                ctx.error(&n.span(), format!("`name`: {e}"));
            } else if let Some(first) = scope.seen.get(&name) {
                ctx.error(
                    &n.span(),
                    format!("duplicate job name `{name}`: already defined at {first}"),
                );
            } else {
                scope.seen.insert(name.clone(), ctx.loc(&n.span()));
            }
            name
        }
        None => String::new(),
    };

    let enabled = common.enabled.as_ref().is_none_or(|e| *e.get_ref());
    let window = ctx.opt_schedule(&common.window);
    let timeout = ctx.opt_duration(&common.timeout);
    let alerts = common.alerts.as_ref().map(|list| {
        for sink in list.get_ref() {
            if let Some(known) = scope.sink_names
                && !known.contains(sink.get_ref())
            {
                let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
                names.sort_unstable();
                let hint = if names.is_empty() {
                    "no sinks are defined in [alerts]".to_string()
                } else {
                    format!("defined sinks: {}", names.join(", "))
                };
                ctx.error(
                    &sink.span(),
                    format!(
                        "unknown alert sink `{}` in `alerts`; {hint}",
                        sink.get_ref()
                    ),
                );
            }
        }
        list.get_ref()
            .iter()
            .map(|s| s.get_ref().clone())
            .collect::<Vec<_>>()
    });

    let kind = match &common.kind {
        None => {
            ctx.error(
                &header,
                format!(
                    "missing `kind` in {within}; expected one of: {}",
                    JobSpec::KINDS.join(", ")
                ),
            );
            return None;
        }
        Some(k) => k,
    };
    if kind_schema.is_none() {
        let hint = match closest(kind.get_ref(), &JobSpec::KINDS) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("expected one of: {}", JobSpec::KINDS.join(", ")),
        };
        ctx.error(
            &kind.span(),
            format!("unknown kind `{}`; {hint}", kind.get_ref()),
        );
        return None;
    }
    Some(JobConfig {
        name,
        enabled,
        window,
        alerts,
        timeout,
        spec: spec?,
        location: ctx.loc(&header),
    })
}

/// Validates the kind-specific part of a job.
fn kind_spec(
    ctx: &mut Ctx<'_>,
    kind: &str,
    table: DeTable<'_>,
    header: &Range<usize>,
    within: &str,
) -> Option<JobSpec> {
    let v = Spanned::new(header.clone(), DeValue::Table(table));
    let (h, w) = (header, within);
    let spec = match kind {
        "api-key" => {
            let r = ctx.section(v)?;
            JobSpec::ApiKey(api_key(ctx, &r, h, w))
        }
        "postgres" => {
            let r = ctx.section(v)?;
            JobSpec::Postgres(database(ctx, &r, false, h, w))
        }
        "mysql" => {
            let r = ctx.section(v)?;
            JobSpec::Mysql(database(ctx, &r, true, h, w))
        }
        "approle-secret-id" => {
            let r = ctx.section(v)?;
            JobSpec::ApproleSecretId(approle_secret_id(ctx, &r, h, w))
        }
        "reminder" => {
            let r = ctx.section(v)?;
            JobSpec::Reminder(reminder(ctx, &r, h, w))
        }
        "raft-snapshot" => {
            let r = ctx.section(v)?;
            JobSpec::RaftSnapshot(raft_snapshot(ctx, &r, h, w)?)
        }
        "vault-health" => {
            let r: raw::RawVaultHealth = ctx.section(v)?;
            JobSpec::VaultHealth(VaultHealthConfig {
                schedule: ctx.schedule(&r.schedule, defaults::HEALTH_SCHEDULE)?,
            })
        }
        _ => return None,
    };
    Some(spec)
}

fn api_key(
    ctx: &mut Ctx<'_>,
    r: &raw::RawApiKey,
    header: &Range<usize>,
    within: &str,
) -> ApiKeyConfig {
    let path = ctx.kv_path(&r.path, "path", header, within);
    let field = ctx
        .non_empty(&r.field, "field")
        .unwrap_or_else(|| defaults::API_KEY_FIELD.to_string());
    let every = ctx.duration(&r.every, defaults::API_KEY_EVERY);
    let prefix = r
        .prefix
        .as_ref()
        .map(|p| p.get_ref().as_str())
        .unwrap_or("");
    let format_text = r
        .format
        .as_ref()
        .map(|f| f.get_ref().as_str())
        .unwrap_or(defaults::API_KEY_FORMAT);
    let format = match KeyFormat::parse(format_text, prefix) {
        Ok(f) => f,
        Err(e) => {
            // Blame the prefix when the format itself is fine.
            let blame_prefix = KeyFormat::parse(format_text, "").is_ok();
            let span = if blame_prefix {
                r.prefix.as_ref().map(|p| p.span())
            } else {
                r.format.as_ref().map(|f| f.span())
            };
            ctx.error_at(span.as_ref().or(Some(header)), e);
            KeyFormat {
                alphabet: super::KeyAlphabet::Hex,
                length: 24,
                prefix: String::new(),
            }
        }
    };
    let on_rotate = r.on_rotate.as_ref().map(|u| {
        ctx.http_url(u, "on_rotate");
        u.get_ref().clone()
    });
    ApiKeyConfig {
        path,
        field,
        every,
        format,
        on_rotate,
    }
}

fn database(
    ctx: &mut Ctx<'_>,
    r: &raw::RawDatabase,
    mysql: bool,
    header: &Range<usize>,
    within: &str,
) -> DatabaseConfig {
    let path = ctx.kv_path(&r.path, "path", header, within);
    let every = ctx.duration(&r.every, defaults::DB_EVERY);
    let admin_path = ctx.kv_path(&r.admin_path, "admin_path", header, within);
    if !path.is_empty()
        && path == admin_path
        && let Some(a) = &r.admin_path
    {
        ctx.error(
            &a.span(),
            "`admin_path` must not be the job's own `path`: the admin login is a different secret",
        );
    }
    let strategy = match &r.strategy {
        None => DbStrategy::Single,
        Some(s) => match s.get_ref().as_str() {
            "single" => DbStrategy::Single,
            "alternating" => DbStrategy::Alternating,
            other => {
                ctx.error(
                    &s.span(),
                    format!("unknown strategy `{other}`; expected \"single\" or \"alternating\""),
                );
                DbStrategy::Single
            }
        },
    };
    let usernames = db_usernames(ctx, r, strategy, header, within);
    let host = ctx.non_empty(&r.host, "host");
    let port = r
        .port
        .as_ref()
        .map(|_| ctx.int_in(&r.port, "port", 1, 65_535, 1) as u16);
    let database = ctx.non_empty(&r.database, "database");
    let password_length = ctx.int_in(
        &r.password_length,
        "password_length",
        16,
        128,
        defaults::DB_PASSWORD_LENGTH,
    ) as usize;
    let password_alphabet = match &r.password_alphabet {
        None => defaults::DB_PASSWORD_ALPHABET.to_string(),
        Some(a) => {
            if let Err(e) = check_password_alphabet(a.get_ref()) {
                ctx.error(&a.span(), format!("`password_alphabet`: {e}"));
            }
            a.get_ref().clone()
        }
    };
    let pending_path = r.pending_path.as_ref().map(|p| {
        if let Err(e) = check_kv_path(p.get_ref()) {
            ctx.error(&p.span(), format!("`pending_path`: {e}"));
        } else if *p.get_ref() == path || *p.get_ref() == admin_path {
            ctx.error(
                &p.span(),
                "`pending_path` must be a path of its own, not the job's `path` or `admin_path`",
            );
        }
        p.get_ref().clone()
    });
    let pending_path_location = r.pending_path.as_ref().map(|p| ctx.loc(&p.span()));
    let account_host = r.account_host.as_ref().map(|h| {
        let host = h.get_ref();
        if !mysql {
            ctx.error(
                &h.span(),
                "`account_host` is only for kind = \"mysql\" (PostgreSQL roles have no host part)",
            );
        } else if host.is_empty()
            || host.len() > 255
            || host
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\'' | '\\' | '`' | '"'))
        {
            ctx.error(
                &h.span(),
                format!("invalid `account_host` `{}`: write a MySQL host pattern such as `%` or `10.0.%`", host.escape_default()),
            );
        }
        host.clone()
    });
    let tls = db_tls(
        ctx,
        [&r.tls, &r.ca_cert, &r.client_cert, &r.client_key],
        "the admin password and the new password cross the network in clear \
         (MySQL's ALTER USER even carries it inside the statement)",
    );
    DatabaseConfig {
        path,
        every,
        admin_path,
        usernames,
        strategy,
        host,
        port,
        database,
        password_length,
        password_alphabet,
        pending_path,
        pending_path_location,
        account_host,
        tls,
    }
}

/// `tls`, `ca_cert`, `client_cert`, `client_key` of a database connection (a job's or the
/// state store's); `in_clear` says what `tls = "disable"` exposes, for its warning.
fn db_tls(
    ctx: &mut Ctx<'_>,
    [tls, ca_cert, client_cert, client_key]: [&Str; 4],
    in_clear: &str,
) -> DbTls {
    let mode = tls.as_ref().and_then(|t| {
        let mode = TlsMode::parse(t.get_ref());
        match mode {
            None => ctx.error(
                &t.span(),
                format!(
                    "unknown `tls` mode `{}`; expected one of: {}",
                    t.get_ref().escape_default(),
                    TlsMode::ALL.map(TlsMode::as_str).join(", ")
                ),
            ),
            Some(TlsMode::Disable) => ctx.warn(
                &t.span(),
                format!("tls = \"disable\": this connection is never encrypted; {in_clear}"),
            ),
            Some(_) => {}
        }
        mode
    });
    let ca = ca_cert.as_ref().map(|c| {
        if let Some(m) = mode.filter(|m| !m.verifies()) {
            ctx.error(
                &c.span(),
                format!(
                    "`ca_cert` is only used with tls = \"verify-full\" or \"verify-ca\"; \
                     tls = \"{m}\" checks no certificate"
                ),
            );
        }
        ctx.readable_file(c, "ca_cert")
    });
    let cert = client_cert
        .as_ref()
        .map(|c| (c.span(), ctx.readable_file(c, "client_cert")));
    let key = client_key.as_ref().map(|k| {
        // A private key: checked as a secret file (exists, readable, not readable by others).
        let path = match ctx.secret_file(k, "client_key") {
            SecretSource::File { path, .. } => path,
            SecretSource::Env { .. } => ctx.path(k.get_ref()),
        };
        (k.span(), path)
    });
    match (&cert, &key) {
        (Some((span, _)), None) => ctx.error(span, "`client_cert` needs `client_key`"),
        (None, Some((span, _))) => ctx.error(span, "`client_key` needs `client_cert`"),
        (Some((span, _)), Some(_)) if mode == Some(TlsMode::Disable) => {
            ctx.error(span, "`client_cert` has no effect with tls = \"disable\"")
        }
        _ => {}
    }
    DbTls {
        mode,
        ca_cert: ca,
        client_cert: cert.map(|(_, p)| p),
        client_key: key.map(|(_, p)| p),
    }
}

/// Characters a database password may be drawn from: printable ASCII that needs no escaping in a
/// single-quoted SQL literal on either database (so no `'`, `"`, `\` or backtick), and enough of
/// them for a strong password.
pub(crate) fn check_password_alphabet(alphabet: &str) -> Result<(), String> {
    if let Some(c) = alphabet
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '\\' | '`'))
    {
        return Err(format!(
            "{:?} is not allowed: use printable ASCII without spaces, quotes, backslash or backtick",
            c
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(c) = alphabet.chars().find(|c| !seen.insert(*c)) {
        return Err(format!(
            "{c:?} appears twice (it would be drawn more often)"
        ));
    }
    if seen.len() < 16 {
        return Err(format!(
            "only {} different characters; use at least 16",
            seen.len()
        ));
    }
    Ok(())
}

/// PostgreSQL truncates identifiers and startup user names at 63 *bytes* (NAMEDATALEN - 1), so
/// two longer names that share their first 63 bytes are one role. MySQL's limits (32 or 80
/// characters) are lower still for ASCII names; it reports those itself.
const MAX_USERNAME_BYTES: usize = 63;

fn username_too_long(name: &str) -> String {
    format!(
        "database username `{}` is {} bytes long; at most {MAX_USERNAME_BYTES} bytes (UTF-8) are allowed, as PostgreSQL cuts names there",
        name.escape_default(),
        name.len()
    )
}

fn db_usernames(
    ctx: &mut Ctx<'_>,
    r: &raw::RawDatabase,
    strategy: DbStrategy,
    header: &Range<usize>,
    within: &str,
) -> Vec<String> {
    let check = |ctx: &mut Ctx<'_>, u: &Sp<String>| {
        let name = u.get_ref();
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            ctx.error(
                &u.span(),
                format!("invalid database username `{}`", name.escape_default()),
            );
        } else if name.len() > MAX_USERNAME_BYTES {
            ctx.error(&u.span(), username_too_long(name));
        }
    };
    match (&r.username, &r.usernames) {
        (Some(u), Some(list)) => {
            ctx.error(
                &list.span(),
                "set either `username` or `usernames`, not both",
            );
            check(ctx, u);
            vec![u.get_ref().clone()]
        }
        (None, None) => {
            ctx.error(header, format!("missing `username` (or `usernames` with strategy = \"alternating\") in {within}"));
            Vec::new()
        }
        (Some(u), None) => {
            check(ctx, u);
            if strategy == DbStrategy::Alternating {
                ctx.error(
                    &u.span(),
                    "strategy = \"alternating\" needs two users: write `usernames = [\"app_a\", \"app_b\"]`",
                );
            }
            vec![u.get_ref().clone()]
        }
        (None, Some(list)) => {
            for u in list.get_ref() {
                check(ctx, u);
            }
            let names: Vec<String> = list.get_ref().iter().map(|u| u.get_ref().clone()).collect();
            match strategy {
                DbStrategy::Alternating => {
                    if names.len() != 2 || names[0] == names[1] {
                        ctx.error(
                            &list.span(),
                            "strategy = \"alternating\" needs exactly two different usernames",
                        );
                    }
                }
                DbStrategy::Single => {
                    if names.len() == 2 && r.strategy.is_none() {
                        ctx.error(
                            &list.span(),
                            "two `usernames` need strategy = \"alternating\"",
                        );
                    } else if names.len() != 1 {
                        ctx.error(&list.span(), "strategy = \"single\" rotates exactly one user: write `username = \"…\"`");
                    }
                }
            }
            names
        }
    }
}

fn approle_secret_id(
    ctx: &mut Ctx<'_>,
    r: &raw::RawApproleSecretId,
    header: &Range<usize>,
    within: &str,
) -> ApproleSecretIdConfig {
    let role = ctx.required_non_empty(&r.role, "role", header, within);
    if let Some(v) = &r.role
        && role.contains('/')
    {
        ctx.error(
            &v.span(),
            "`role` is the AppRole role's name, without slashes",
        );
    }
    let mount = match &r.mount {
        Some(m) => {
            if m.get_ref().is_empty() || m.get_ref().starts_with('/') || m.get_ref().ends_with('/')
            {
                ctx.error(&m.span(), "`mount` must be the auth mount's path without slashes around it, e.g. \"approle\"");
            }
            m.get_ref().clone()
        }
        None => defaults::APPROLE_MOUNT.to_string(),
    };
    let path = ctx.kv_path(&r.path, "path", header, within);
    let every = ctx.duration(&r.every, defaults::SECRET_ID_EVERY);
    let grace = ctx.duration(&r.grace, defaults::SECRET_ID_GRACE);
    if grace >= every {
        let span = r.grace.as_ref().or(r.every.as_ref()).map(|s| s.span());
        ctx.error_at(
            span.as_ref().or(Some(header)),
            format!("`grace` ({grace}) must be shorter than `every` ({every}): the old secret-id is destroyed `grace` after each rotation"),
        );
    }
    ApproleSecretIdConfig {
        role,
        mount,
        path,
        every,
        grace,
    }
}

fn reminder(
    ctx: &mut Ctx<'_>,
    r: &raw::RawReminder,
    header: &Range<usize>,
    within: &str,
) -> ReminderConfig {
    ReminderConfig {
        path: ctx.kv_path(&r.path, "path", header, within),
        max_age: ctx.duration(&r.max_age, defaults::REMINDER_MAX_AGE),
        check_every: ctx.duration(&r.check_every, defaults::REMINDER_CHECK_EVERY),
    }
}

fn raft_snapshot(
    ctx: &mut Ctx<'_>,
    r: &raw::RawRaftSnapshot,
    header: &Range<usize>,
    within: &str,
) -> Option<RaftSnapshotConfig> {
    let schedule = ctx.schedule(&r.schedule, defaults::SNAPSHOT_SCHEDULE);
    let retain = ctx.duration(&r.retain, defaults::SNAPSHOT_RETAIN);
    let min_keep = ctx.int_in(
        &r.min_keep,
        "min_keep",
        1,
        100_000,
        defaults::SNAPSHOT_MIN_KEEP,
    ) as u32;
    let recipients = match &r.recipients {
        None => {
            ctx.error(
                header,
                format!("missing `recipients` in {within}: snapshots are always encrypted (age1… or ssh-ed25519 … public keys)"),
            );
            Vec::new()
        }
        Some(list) => {
            if list.get_ref().is_empty() {
                ctx.error(
                    &list.span(),
                    "`recipients` must name at least one public key",
                );
            }
            for rcp in list.get_ref() {
                if let Err(e) = check_recipient(rcp.get_ref()) {
                    ctx.error(&rcp.span(), e);
                }
            }
            list.get_ref()
                .iter()
                .map(|s| s.get_ref().trim().to_string())
                .collect()
        }
    };
    let s3 = r.s3.as_ref().map(|s| s3_destination(ctx, s));
    let local = r.local.as_ref().map(|l| {
        let dir = ctx.required_non_empty(&l.get_ref().dir, "dir", &l.span(), "[job.local]");
        LocalDestinationConfig {
            dir: ctx.path(&dir),
        }
    });
    if s3.is_none() && local.is_none() {
        ctx.error(
            header,
            format!("{within} has no destination: add [job.s3] and/or [job.local]"),
        );
    }
    Some(RaftSnapshotConfig {
        schedule: schedule?,
        retain,
        min_keep,
        recipients,
        s3,
        local,
    })
}

fn s3_destination(ctx: &mut Ctx<'_>, s: &Sp<raw::RawS3>) -> S3DestinationConfig {
    let header = s.span();
    let r = s.get_ref();
    let within = "[job.s3]";
    let bucket = ctx.required_non_empty(&r.bucket, "bucket", &header, within);
    if let Some(b) = &r.bucket
        && (bucket.contains('/') || bucket.chars().any(char::is_whitespace))
    {
        ctx.error(
            &b.span(),
            format!("invalid bucket name `{bucket}`: put folders in `prefix`"),
        );
    }
    let prefix = match &r.prefix {
        Some(p) => {
            if p.get_ref().starts_with('/') {
                ctx.error(&p.span(), "`prefix` must not start with `/`");
            }
            p.get_ref().trim_end_matches('/').to_string()
        }
        None => String::new(),
    };
    let region = ctx.non_empty(&r.region, "region");
    let endpoint = r.endpoint.as_ref().map(|e| {
        ctx.http_url(e, "endpoint");
        e.get_ref().clone()
    });
    let sse = r.sse.as_ref().map(|v| {
        if !matches!(v.get_ref().as_str(), "AES256" | "aws:kms" | "aws:kms:dsse") {
            ctx.error(
                &v.span(),
                format!(
                    "unknown `sse` `{}`; expected \"AES256\", \"aws:kms\" or \"aws:kms:dsse\"",
                    v.get_ref()
                ),
            );
        }
        v.get_ref().clone()
    });
    // S3 wants parts of at least 5 MiB (but the last); at most 10,000 parts per upload, so the
    // part size also caps the snapshot size (6 MiB: 58 GiB). Memory is four parts.
    let part_size_mib = ctx.int_in(
        &r.part_size_mib,
        "part_size_mib",
        5,
        512,
        defaults::S3_PART_SIZE_MIB,
    );
    S3DestinationConfig {
        bucket,
        prefix,
        region,
        endpoint,
        force_path_style: r.force_path_style.as_ref().is_some_and(|f| *f.get_ref()),
        sse,
        part_size: part_size_mib as usize * 1024 * 1024,
    }
}

/// Refuses a database job's pending path (written or the default) that is, or lies under, any
/// job's `path` or `admin_path` or another job's pending path. A rotation overwrites its pending
/// path with check-and-set on whatever version is there and deletes it with all its versions at
/// the end, so a clash would first replace and then destroy another secret (or the admin login).
/// Two equal pending paths are reported once, at the later job.
pub(crate) fn pending_path_clashes(jobs: &[JobConfig]) -> Vec<ConfigError> {
    // (job index, is a pending path, how to name it, the path)
    let mut claims: Vec<(usize, bool, &'static str, String)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match &job.spec {
            JobSpec::ApiKey(c) => claims.push((i, false, "`path`", c.path.clone())),
            JobSpec::ApproleSecretId(c) => claims.push((i, false, "`path`", c.path.clone())),
            JobSpec::Reminder(c) => claims.push((i, false, "`path`", c.path.clone())),
            JobSpec::Postgres(d) | JobSpec::Mysql(d) => {
                claims.push((i, false, "`path`", d.path.clone()));
                claims.push((i, false, "`admin_path`", d.admin_path.clone()));
                let name = match d.pending_path {
                    Some(_) => "`pending_path`",
                    None => "default pending path",
                };
                claims.push((i, true, name, d.effective_pending_path(&job.name)));
            }
            JobSpec::RaftSnapshot(_) | JobSpec::VaultHealth(_) => {}
        }
    }
    let mut errors = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let (JobSpec::Postgres(d) | JobSpec::Mysql(d)) = &job.spec else {
            continue;
        };
        let pending = d.effective_pending_path(&job.name);
        for (j, other_is_pending, other_name, other) in &claims {
            let j = *j;
            let equal = pending == *other;
            let under = pending
                .strip_prefix(other.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
            if other.is_empty() || !(equal || under) {
                continue;
            }
            let skip = if j == i {
                // Its own pending path is no clash, and equality with its own `path` or
                // `admin_path` is reported where `pending_path` itself is checked.
                *other_is_pending || equal
            } else {
                *other_is_pending && equal && j > i
            };
            if skip {
                continue;
            }
            let whose = if j == i {
                "this job's".to_string()
            } else {
                format!("job `{}`'s (at {})", jobs[j].name, jobs[j].location)
            };
            let relation = if equal { "is" } else { "lies under" };
            let (location, subject) = match &d.pending_path_location {
                Some(at) => (at.clone(), format!("`pending_path` `{pending}`")),
                None => (
                    job.location.clone(),
                    format!(
                        "the default pending path of job `{}`, `{pending}`,",
                        job.name
                    ),
                ),
            };
            errors.push(ConfigError {
                location,
                message: format!(
                    "{subject} {relation} {whose} {other_name} `{other}`: a rotation would \
                     overwrite that secret and then delete it with all its versions; set \
                     `pending_path` to a path of its own"
                ),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_steward(
        text: &str,
        env: &[(&str, &str)],
    ) -> (Steward, Vec<ConfigError>, Vec<FileCheck>) {
        let src = SourceFile::new(Path::new("/etc/vs/steward.toml"), text.to_string());
        let doc = DeTable::parse(&src.text).unwrap();
        let mut ctx = Ctx::new(&src);
        let env_map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env_map.get(k).cloned();
        let s = steward(&mut ctx, doc, &lookup);
        let mut errors = ctx.errors;
        errors.sort_by_key(|e| (e.location.line, e.location.col));
        (s, errors, ctx.file_checks)
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    const MINIMAL: &str = "[vault]\naddress = \"https://vault.example.com:8200\"\n[vault.auth]\nmethod = \"approle\"\nrole_id_file = \"role-id\"\nsecret_id_file = \"/etc/vs/secret-id\"\n";

    #[test]
    fn defaults_are_valid() {
        for expr in [
            defaults::SNAPSHOT_SCHEDULE,
            defaults::HEALTH_SCHEDULE,
            "0 0 * * * *",
        ] {
            assert!(Schedule::parse(expr).is_ok(), "{expr}");
        }
        assert!(KeyFormat::parse(defaults::API_KEY_FORMAT, "").is_ok());
        assert!(defaults::LISTEN.parse::<SocketAddr>().is_ok());
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let (s, errors, checks) = parse_steward(MINIMAL, &[]);
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(s.http.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(s.jobs_dir, PathBuf::from("/etc/vs/jobs"));
        assert_eq!(s.engine.job_timeout, Duration::from_secs(300));
        assert_eq!(s.engine.retry_initial, Duration::from_secs(10));
        assert_eq!(s.engine.retry_max, Duration::from_secs(900));
        assert_eq!(s.engine.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.engine.max_concurrent, 16);
        assert_eq!(s.alerts.repeat_interval, Duration::from_secs(4 * 3600));
        assert_eq!(s.alerts.failures_before_alert, 3);
        assert_eq!(s.vault.request_timeout, Duration::from_secs(30));
        assert_eq!(s.state.url, defaults::STATE_URL);
        match &s.vault.auth {
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                assert_eq!(mount, "approle");
                // Relative secret files resolve against the config's directory.
                assert!(
                    matches!(role_id, SecretSource::File { path, .. } if path == Path::new("/etc/vs/role-id"))
                );
                assert!(
                    matches!(secret_id, SecretSource::File { path, .. } if path == Path::new("/etc/vs/secret-id"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(checks.len(), 2);
    }

    #[test]
    fn env_overrides_follow_vaults_names() {
        let env = [
            ("VAULT_ADDR", "https://other:8200"),
            ("VAULT_NAMESPACE", "team-a"),
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_SECRET_ID", "s"),
            ("VAULT_CACERT", "/ca.pem"),
        ];
        let (s, errors, checks) = parse_steward(MINIMAL, &env);
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(s.vault.address, "https://other:8200");
        assert_eq!(s.vault.namespace.as_deref(), Some("team-a"));
        assert_eq!(s.vault.ca_cert, Some(PathBuf::from("/ca.pem")));
        match &s.vault.auth {
            VaultAuth::AppRole {
                role_id, secret_id, ..
            } => {
                assert_eq!(
                    role_id,
                    &SecretSource::Env {
                        var: "VAULT_ROLE_ID".into()
                    }
                );
                assert_eq!(
                    secret_id,
                    &SecretSource::Env {
                        var: "VAULT_SECRET_ID".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        // Env-provided secrets need no file check; the CA file still does.
        assert!(matches!(checks.as_slice(), [FileCheck::Readable { .. }]));
    }

    #[test]
    fn vault_token_env_wins_over_token_file_and_empty_env_is_unset() {
        let text = "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"token\"\ntoken_file = \"/t\"\n";
        let (s, errors, _) = parse_steward(text, &[("VAULT_TOKEN", "x")]);
        assert!(errors.is_empty());
        assert!(matches!(
            s.vault.auth,
            VaultAuth::Token {
                token: SecretSource::Env { .. }
            }
        ));
        let (s, errors, checks) = parse_steward(text, &[("VAULT_TOKEN", "")]);
        assert!(errors.is_empty());
        assert!(matches!(
            s.vault.auth,
            VaultAuth::Token {
                token: SecretSource::File { .. }
            }
        ));
        assert_eq!(checks.len(), 1);
    }

    #[test]
    fn no_auth_section_falls_back_to_vault_token() {
        let text = "[vault]\naddress = \"http://127.0.0.1:8200\"\n";
        let (s, errors, _) = parse_steward(text, &[("VAULT_TOKEN", "x")]);
        assert!(errors.is_empty());
        assert!(matches!(s.vault.auth, VaultAuth::Token { .. }));
        let (_, errors, _) = parse_steward(text, &[]);
        assert_eq!(
            messages(&errors),
            [
                "/etc/vs/steward.toml:1:1: missing [vault.auth] (method = \"approle\" or \"token\"), or set VAULT_TOKEN"
            ]
        );
    }

    #[test]
    fn missing_address_points_at_the_section_or_the_file() {
        let (_, errors, _) = parse_steward(
            "\n[vault]\n[vault.auth]\nmethod = \"token\"\n",
            &[("VAULT_TOKEN", "t")],
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].location.line, 2);
        assert!(errors[0].message.contains("VAULT_ADDR"));
        let (_, errors, _) = parse_steward("", &[("VAULT_TOKEN", "t")]);
        assert_eq!((errors[0].location.line, errors[0].location.col), (1, 1));
        let (s, errors, _) =
            parse_steward("", &[("VAULT_TOKEN", "t"), ("VAULT_ADDR", "http://v:8200")]);
        assert!(errors.is_empty());
        assert_eq!(s.vault.address, "http://v:8200");
    }

    #[test]
    fn collects_every_error_of_the_file() {
        let text = "bogus = 1\n[vault]\naddress = \"ftp://x\"\nadress = 2\n[vault.auth]\nmethod = \"kerberos\"\n[http]\nlisten = \"localhost\"\n[state]\nurl = \"mysql://db/x\"\n[engine]\njob_timeout = \"0s\"\nretry_initial = \"5 minutes\"\nmax_concurrent = 0\n";
        let (_, errors, _) = parse_steward(text, &[]);
        let mut lines: Vec<usize> = errors.iter().map(|e| e.location.line).collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [1, 3, 4, 6, 8, 10, 12, 13, 14],
            "{:?}",
            messages(&errors)
        );
        let all = messages(&errors).join("\n");
        assert!(all.contains("did you mean `address`?"), "{all}");
    }

    #[test]
    fn state_url_rules() {
        let base = "[vault]\naddress = \"http://v:8200\"\n[state]\n";
        for (url, fragment) in [
            ("mysql://x/y", "unsupported state URL"),
            ("postgres://u:pw@db/x", "contains a password"),
            ("file:///x", "unsupported"),
        ] {
            let (_, errors, _) =
                parse_steward(&format!("{base}url = \"{url}\"\n"), &[("VAULT_TOKEN", "t")]);
            assert!(
                errors
                    .iter()
                    .any(|e| e.message.contains(fragment) && !e.message.contains("pw")),
                "{url}: {:?}",
                messages(&errors)
            );
        }
        let (s, errors, checks) = parse_steward(
            &format!(
                "{base}url = \"postgres://steward@db/steward\"\npassword_file = \"pg-pass\"\n"
            ),
            &[("VAULT_TOKEN", "t")],
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert!(s.state.password.is_some());
        assert_eq!(checks.len(), 1);
    }

    /// `[state]` TLS: only for PostgreSQL, modes by name, a URL that agrees, a warning for
    /// `disable` (from the key or the URL), each at its place.
    #[test]
    fn state_tls_rules() {
        // https: a plain-HTTP Vault off loopback has a warning of its own.
        let base = "[vault]\naddress = \"https://v:8200\"\n[state]\n";
        let env = [("VAULT_TOKEN", "t")];
        let parse = |rest: &str| {
            let text = format!("{base}{rest}");
            let src = SourceFile::new(Path::new("/etc/vs/steward.toml"), text.clone());
            let doc = DeTable::parse(&src.text).unwrap();
            let mut ctx = Ctx::new(&src);
            let s = steward(&mut ctx, doc, &|k: &str| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            });
            (s, messages(&ctx.errors), messages(&ctx.warnings))
        };
        let (s, errors, warnings) =
            parse("url = \"postgres://steward@db/s\"\ntls = \"verify-ca\"\n");
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{errors:?} {warnings:?}"
        );
        assert_eq!(s.state.tls.mode, Some(TlsMode::VerifyCa));

        let (s, errors, _) = parse("url = \"postgres://steward@db/s?sslmode=require\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.state.tls.mode, Some(TlsMode::Require));

        let (_, errors, _) = parse("url = \"sqlite:///x.db\"\ntls = \"require\"\n");
        assert_eq!(
            errors,
            ["/etc/vs/steward.toml:5:7: `tls` is only used with a postgres:// state URL"]
        );
        let (_, errors, _) = parse("url = \"postgres://steward@db/s\"\ntls = \"strict\"\n");
        assert!(
            errors[0].starts_with("/etc/vs/steward.toml:5:7: unknown `tls` mode `strict`"),
            "{errors:?}"
        );
        let (_, errors, _) =
            parse("url = \"postgres://steward@db/s?sslmode=require\"\ntls = \"verify-full\"\n");
        assert!(
            errors.len() == 1 && errors[0].starts_with("/etc/vs/steward.toml:5:7: [state]: `tls`"),
            "{errors:?}"
        );
        let (_, errors, _) = parse("url = \"postgres://steward@db/s\"\nclient_key = \"k.pem\"\n");
        assert!(
            errors
                .iter()
                .any(|e| e == "/etc/vs/steward.toml:5:14: `client_key` needs `client_cert`"),
            "{errors:?}"
        );

        let (_, errors, warnings) = parse("url = \"postgres://steward@db/s\"\ntls = \"disable\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("/etc/vs/steward.toml:5:7: tls = \"disable\""),
            "{warnings:?}"
        );
        let (_, errors, warnings) = parse("url = \"postgres://steward@db/s?sslmode=disable\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("/etc/vs/steward.toml:4:7: sslmode=disable"),
            "{warnings:?}"
        );
    }

    #[test]
    fn relative_sqlite_paths_resolve_against_the_config_dir() {
        let base = Path::new("/etc/vs");
        for (url, want) in [
            ("sqlite:///var/lib/x.db", "sqlite:///var/lib/x.db"),
            ("sqlite://state.db", "sqlite:///etc/vs/state.db"),
            (
                "sqlite:state.db?mode=rwc",
                "sqlite:///etc/vs/state.db?mode=rwc",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(sqlite_url_against(base, url), want, "{url}");
        }
        let (s, errors, _) = parse_steward(
            "[vault]\naddress = \"http://v:8200\"\n[state]\nurl = \"sqlite://../state/s.db\"\n",
            &[("VAULT_TOKEN", "t")],
        );
        assert!(errors.is_empty());
        assert_eq!(s.state.url, "sqlite:///etc/vs/../state/s.db");
    }

    #[test]
    fn alert_sinks_are_checked_and_named_uniquely() {
        let text = "[vault]\naddress = \"http://v:8200\"\n[alerts]\n[[alerts.email]]\nname = \"ops\"\nsmtp_url = \"http://x\"\nfrom = \"not an address\"\nto = []\n[[alerts.webhook]]\nname = \"ops\"\nurl = \"https://h/x\"\nformat = \"teams\"\n[[alerts.webhook]]\nname = \"chat\"\nurl = \"https://h/x\"\nformat = \"slack\"\nhmac_secret_file = \"h\"\n";
        let (_, errors, _) = parse_steward(text, &[("VAULT_TOKEN", "t")]);
        let all = messages(&errors).join("\n");
        for fragment in [
            ":6:12: `smtp_url`",
            ":7:8: `from`: invalid email address",
            ":8:6: `to` must name at least one",
            ":10:8: duplicate alert sink name `ops`: already used at /etc/vs/steward.toml:5:8",
            ":12:10: unknown webhook format `teams`",
            ":17:20: `hmac_secret_file` is only used",
        ] {
            assert!(all.contains(fragment), "{fragment} not in:\n{all}");
        }
    }

    #[test]
    fn names_and_recipients() {
        assert!(check_name("orders-db_1.x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(
            check_recipient("age1mf7cn497d8dja0why0wsn8x3hpjrlw8zqwc75a6nhqnkq2danmvsrn9wws")
                .is_ok()
        );
        assert!(check_recipient("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID+MaYBVDlVZBlqH41s25Demy8qJeYmzJ08G4kW7n2q9 x@y").is_ok());
        assert!(check_recipient("age1notvalid").is_err());
        assert!(check_recipient("ssh-ed25519 AAAA").is_err());
        assert!(check_recipient("ssh-dss AAAAB3NzaC1kc3MAAACBAP").is_err());
        let err =
            check_recipient("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ").unwrap_err();
        assert!(
            err.contains("private key") && !err.contains("QQQQ"),
            "{err}"
        );
        assert!(check_recipient("gpg:1234").is_err());
    }

    #[test]
    fn messages_never_show_url_credentials_and_speak_toml() {
        assert_eq!(hide_userinfo("mysql://u:pw@db/x"), "mysql://…@db/x");
        assert_eq!(hide_userinfo("mysql://db/x"), "mysql://db/x");
        let (_, errors, _) = parse_steward(
            "[vault]\naddress = \"http://v:8200\"\n[alerts.email]\nname = \"x\"\n[engine]\nmax_concurrent = \"many\"\n",
            &[("VAULT_TOKEN", "t")],
        );
        assert_eq!(
            messages(&errors),
            [
                "/etc/vs/steward.toml:3:1: `email` is a list of tables: write `[[…email]]`, with double brackets, for each entry",
                "/etc/vs/steward.toml:6:18: `max_concurrent`: wrong type: string \"many\", expected an integer",
            ]
        );
    }

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(
            closest("adress", &["address", "namespace"]),
            Some("address")
        );
        assert_eq!(closest("evry", &["every", "path"]), Some("every"));
        assert_eq!(closest("zzzzzz", &["every", "path"]), None);
        assert_eq!(closest("api_key", &JobSpec::KINDS), Some("api-key"));
    }

    // ---- job files ---------------------------------------------------------------------------

    fn parse_jobs_with(
        text: &str,
        sinks: Option<&[&str]>,
        seen: &mut HashMap<String, Location>,
    ) -> (Vec<JobConfig>, Vec<String>) {
        let src = SourceFile::new(Path::new("/etc/vs/jobs/j.toml"), text.to_string());
        let doc = DeTable::parse(&src.text).unwrap();
        let mut ctx = Ctx::new(&src);
        let names: Option<HashSet<String>> =
            sinks.map(|s| s.iter().map(|n| n.to_string()).collect());
        let mut scope = JobScope {
            sink_names: names.as_ref(),
            seen,
        };
        let jobs = job_file(&mut ctx, doc, &mut scope);
        let mut errors = ctx.errors;
        errors.sort_by_key(|e| (e.location.line, e.location.col));
        (jobs, messages(&errors))
    }

    fn parse_jobs(text: &str) -> (Vec<JobConfig>, Vec<String>) {
        parse_jobs_with(text, Some(&["ops-mail", "ops-hook"]), &mut HashMap::new())
    }

    const AGE: &str = "age1mf7cn497d8dja0why0wsn8x3hpjrlw8zqwc75a6nhqnkq2danmvsrn9wws";

    #[test]
    fn every_kind_parses_with_its_defaults() {
        let text = format!(
            r#"
[[job]]
name = "gateway"
kind = "api-key"
path = "secret/api-key/gateway"

[[job]]
name = "orders"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
username = "orders_app"

[[job]]
name = "shop"
kind = "mysql"
path = "secret/database/shop"
admin_path = "secret/database/shop-admin"
usernames = ["shop_a", "shop_b"]
strategy = "alternating"
port = 3306

[[job]]
name = "ci-secret-id"
kind = "approle-secret-id"
role = "ci"
path = "secret/service/ci/credentials"

[[job]]
name = "openai"
kind = "reminder"
path = "secret/llm-api-key/openai"

[[job]]
name = "snapshots"
kind = "raft-snapshot"
recipients = ["{AGE}"]
[job.local]
dir = "../backups"

[[job]]
name = "health"
kind = "vault-health"
enabled = false
alerts = ["ops-hook"]
"#
        );
        let (jobs, errors) = parse_jobs(&text);
        assert!(errors.is_empty(), "{errors:?}");
        let kinds: Vec<&str> = jobs.iter().map(JobConfig::kind).collect();
        assert_eq!(kinds, JobSpec::KINDS);
        assert_eq!(jobs[0].location.line, 2);
        match &jobs[0].spec {
            JobSpec::ApiKey(a) => {
                assert_eq!(a.field, "api_key");
                assert_eq!(a.every, Duration::from_secs(30 * 86_400));
                assert_eq!(a.format.spec(), "hex:24");
                assert_eq!(a.format.prefix, "");
            }
            other => panic!("{other:?}"),
        }
        match &jobs[1].spec {
            JobSpec::Postgres(d) => {
                assert_eq!(d.every, Duration::from_secs(90 * 86_400));
                assert_eq!(d.usernames, ["orders_app"]);
                assert_eq!(d.strategy, DbStrategy::Single);
                assert_eq!(d.password_length, 32);
                assert_eq!(d.password_alphabet, defaults::DB_PASSWORD_ALPHABET);
                assert_eq!(d.pending_path, None);
                assert_eq!(d.account_host, None);
                assert_eq!(d.port, None);
            }
            other => panic!("{other:?}"),
        }
        match &jobs[2].spec {
            JobSpec::Mysql(d) => {
                assert_eq!(d.strategy, DbStrategy::Alternating);
                assert_eq!(d.usernames, ["shop_a", "shop_b"]);
                assert_eq!(d.port, Some(3306));
            }
            other => panic!("{other:?}"),
        }
        match &jobs[3].spec {
            JobSpec::ApproleSecretId(a) => {
                assert_eq!(a.mount, "approle");
                assert_eq!(a.grace, Duration::from_secs(86_400));
            }
            other => panic!("{other:?}"),
        }
        match &jobs[4].spec {
            JobSpec::Reminder(r) => {
                assert_eq!(r.max_age, Duration::from_secs(30 * 86_400));
                assert_eq!(r.check_every, Duration::from_secs(3600));
            }
            other => panic!("{other:?}"),
        }
        match &jobs[5].spec {
            JobSpec::RaftSnapshot(r) => {
                assert_eq!(r.schedule.expr(), "0 0 * * * *");
                assert_eq!(r.retain, Duration::from_secs(48 * 3600));
                assert_eq!(r.min_keep, 3);
                assert!(r.s3.is_none());
                // Relative to the job file's directory.
                let dir = r.local.as_ref().map(|l| l.dir.clone());
                assert_eq!(dir, Some(PathBuf::from("/etc/vs/jobs/../backups")));
            }
            other => panic!("{other:?}"),
        }
        assert!(!jobs[6].enabled);
        assert_eq!(
            jobs[6].alerts.as_deref(),
            Some(&["ops-hook".to_string()][..])
        );
        assert!(jobs[0].enabled && jobs[0].alerts.is_none());
    }

    #[test]
    fn unknown_keys_are_all_reported_at_the_key_including_other_kinds_keys() {
        let text = r#"[[job]]
name = "gw"
kind = "api-key"
path = "secret/api-key/gw"
evry = "30d"
max_age = "30d"
"#;
        let (_, errors) = parse_jobs(text);
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:5:1: unknown key `evry` in job `gw` (kind = \"api-key\"); did you mean `every`?",
                "/etc/vs/jobs/j.toml:6:1: unknown key `max_age` in job `gw` (kind = \"api-key\"); expected one of: name, kind, enabled, window, alerts, timeout, path, field, every, format, prefix, on_rotate",
            ]
        );
    }

    #[test]
    fn unknown_keys_in_sub_tables() {
        let text = format!(
            "[[job]]\nname = \"s\"\nkind = \"raft-snapshot\"\nrecipients = [\"{AGE}\"]\n[job.s3]\nbucket = \"b\"\nbukket = \"c\"\n"
        );
        let (_, errors) = parse_jobs(&text);
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:7:1: unknown key `bukket` in [job.s3] of job `s` (kind = \"raft-snapshot\"); did you mean `bucket`?"
            ]
        );
    }

    #[test]
    fn missing_name_and_kind_point_at_the_header() {
        let (_, errors) = parse_jobs(
            "\n[[job]]\nkind = \"reminder\"\npath = \"secret/x/y\"\n\n[[job]]\nname = \"x\"\n",
        );
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:2:1: missing `name` in [[job]]",
                "/etc/vs/jobs/j.toml:6:1: missing `kind` in job `x`; expected one of: api-key, postgres, mysql, approle-secret-id, reminder, raft-snapshot, vault-health",
            ]
        );
    }

    #[test]
    fn unknown_kind_suggests_the_closest() {
        let (_, errors) = parse_jobs("[[job]]\nname = \"x\"\nkind = \"api_key\"\n");
        assert_eq!(
            errors,
            ["/etc/vs/jobs/j.toml:3:8: unknown kind `api_key`; did you mean `api-key`?"]
        );
    }

    #[test]
    fn duplicate_names_across_files_point_at_the_second() {
        let mut seen = HashMap::new();
        let first = "[[job]]\nname = \"x\"\nkind = \"vault-health\"\n";
        let (_, errors) = parse_jobs_with(first, None, &mut seen);
        assert!(errors.is_empty());
        let (_, errors) = parse_jobs_with(&format!("\n{first}"), None, &mut seen);
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:3:8: duplicate job name `x`: already defined at /etc/vs/jobs/j.toml:2:8"
            ]
        );
    }

    #[test]
    fn unknown_alert_sinks_are_reported_unless_alerts_is_broken() {
        let text =
            "[[job]]\nname = \"x\"\nkind = \"vault-health\"\nalerts = [\"ops-mail\", \"pager\"]\n";
        let (_, errors) = parse_jobs(text);
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:4:23: unknown alert sink `pager` in `alerts`; defined sinks: ops-hook, ops-mail"
            ]
        );
        let (_, errors) = parse_jobs_with(text, None, &mut HashMap::new());
        assert!(errors.is_empty());
    }

    #[test]
    fn wrong_types_name_the_key() {
        // Both the common part and the kind's part are checked.
        let (_, errors) = parse_jobs(
            "[[job]]\nname = \"x\"\nkind = \"vault-health\"\nenabled = \"yes\"\nschedule = 5\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("/etc/vs/jobs/j.toml:4:11: `enabled`: wrong type"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("/etc/vs/jobs/j.toml:5:12: `schedule`: wrong type"),
            "{errors:?}"
        );
    }

    #[test]
    fn job_must_be_an_array_of_tables() {
        let (_, errors) = parse_jobs("[job]\nname = \"x\"\n");
        assert_eq!(
            errors,
            ["/etc/vs/jobs/j.toml:1:2: `job` must be an array of tables: write [[job]], not [job]"]
        );
        let (_, errors) = parse_jobs("# nothing\n");
        assert_eq!(errors, ["/etc/vs/jobs/j.toml:1:1: no [[job]] in this file"]);
        let (_, errors) =
            parse_jobs("name = \"x\"\n[[job]]\nname = \"y\"\nkind = \"vault-health\"\n");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("/etc/vs/jobs/j.toml:1:1: unknown key `name` in a job file"),
            "{errors:?}"
        );
    }

    #[test]
    fn database_user_rules() {
        let base = "[[job]]\nname = \"db\"\nkind = \"postgres\"\npath = \"secret/database/db\"\nadmin_path = \"secret/database/admin\"\n";
        for (extra, fragment) in [
            (
                "usernames = [\"a\", \"b\"]\n",
                "two `usernames` need strategy = \"alternating\"",
            ),
            (
                "usernames = [\"a\", \"a\"]\nstrategy = \"alternating\"\n",
                "exactly two different usernames",
            ),
            (
                "username = \"a\"\nstrategy = \"alternating\"\n",
                "needs two users",
            ),
            (
                "username = \"a\"\nusernames = [\"a\", \"b\"]\n",
                "either `username` or `usernames`",
            ),
            ("", "missing `username`"),
            (
                "username = \"a\"\nstrategy = \"round-robin\"\n",
                "unknown strategy",
            ),
            (
                "username = \"a\"\nport = 70000\n",
                "`port` must be between 1 and 65535",
            ),
            (
                "username = \"a\"\npassword_length = 8\n",
                "`password_length` must be between 16 and 128",
            ),
            (
                "username = \"a\"\npassword_alphabet = \"abc'defghijklmnopq\"\n",
                "`password_alphabet`: '\\'' is not allowed",
            ),
            (
                "username = \"a\"\npassword_alphabet = \"abcdef\"\n",
                "only 6 different characters",
            ),
            (
                "username = \"a\"\npassword_alphabet = \"abcdefghijklmnopa\"\n",
                "'a' appears twice",
            ),
            (
                "username = \"a\"\npending_path = \"secret/database/db\"\n",
                "`pending_path` must be a path of its own",
            ),
            (
                "username = \"a\"\npending_path = \"/secret/p\"\n",
                "`pending_path`: KV path `/secret/p` must not start with `/`",
            ),
            (
                "username = \"a\"\naccount_host = \"%\"\n",
                "`account_host` is only for kind = \"mysql\"",
            ),
        ] {
            let (_, errors) = parse_jobs(&format!("{base}{extra}"));
            assert!(
                errors.iter().any(|e| e.contains(fragment)),
                "{extra}: {errors:?}"
            );
        }
        let (_, errors) = parse_jobs(&format!("{base}usernames = [\"a\"]\n"));
        assert!(errors.is_empty(), "{errors:?}");
        // 63 bytes pass; 32 two-byte characters (64 bytes) do not, though they are 32 characters.
        let (_, errors) = parse_jobs(&format!("{base}username = \"{}\"\n", "a".repeat(63)));
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = parse_jobs(&format!("{base}username = \"{}\"\n", "é".repeat(32)));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("is 64 bytes long; at most 63 bytes")),
            "{errors:?}"
        );
        let mysql = base.replace("\"postgres\"", "\"mysql\"");
        let (jobs, errors) = parse_jobs(&format!(
            "{mysql}username = \"a\"\naccount_host = \"10.0.%\"\npending_path = \"kv/steward/db\"\npassword_alphabet = \"0123456789abcdef!#\"\n"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        match &jobs[0].spec {
            JobSpec::Mysql(d) => {
                assert_eq!(d.account_host.as_deref(), Some("10.0.%"));
                assert_eq!(d.pending_path.as_deref(), Some("kv/steward/db"));
                assert_eq!(d.password_alphabet, "0123456789abcdef!#");
            }
            other => panic!("{other:?}"),
        }
        let (_, errors) = parse_jobs(&format!(
            "{mysql}username = \"a\"\naccount_host = \"it's\"\n"
        ));
        assert!(
            errors.iter().any(|e| e.contains("invalid `account_host`")),
            "{errors:?}"
        );
    }

    #[test]
    fn pending_paths_keep_clear_of_every_jobs_paths() {
        let db = |name: &str, path: &str, admin: &str, pending: Option<&str>| {
            let pending = pending
                .map(|p| format!("pending_path = \"{p}\"\n"))
                .unwrap_or_default();
            format!(
                "[[job]]\nname = \"{name}\"\nkind = \"postgres\"\npath = \"{path}\"\nadmin_path = \"{admin}\"\nusername = \"u\"\n{pending}"
            )
        };
        let api = "[[job]]\nname = \"key\"\nkind = \"api-key\"\npath = \"secret/api/key\"\n";
        let clashes = |text: &str| {
            let (jobs, errors) = parse_jobs(text);
            assert!(errors.is_empty(), "{errors:?}");
            messages(&pending_path_clashes(&jobs))
        };
        // Distinct paths, default pending paths included: no clash.
        let fine = format!(
            "{}{}{api}",
            db("a", "secret/db/a", "secret/db/admin", None),
            db(
                "b",
                "secret/db/b",
                "secret/db/admin",
                Some("secret/steward/b")
            )
        );
        assert_eq!(clashes(&fine), Vec::<String>::new());
        // Another job's `path`, `admin_path`, a path under one, an api-key's path.
        for (pending, fragment) in [
            (
                "secret/db/b",
                "is job `b`'s (at /etc/vs/jobs/j.toml:8:1) `path` `secret/db/b`",
            ),
            (
                "secret/db/admin-b",
                "is job `b`'s (at /etc/vs/jobs/j.toml:8:1) `admin_path`",
            ),
            (
                "secret/db/b/x",
                "lies under job `b`'s (at /etc/vs/jobs/j.toml:8:1) `path`",
            ),
            (
                "secret/api/key",
                "is job `key`'s (at /etc/vs/jobs/j.toml:14:1) `path`",
            ),
        ] {
            let text = format!(
                "{}{}{api}",
                db("a", "secret/db/a", "secret/db/admin-a", Some(pending)),
                db("b", "secret/db/b", "secret/db/admin-b", None)
            );
            let got = clashes(&text);
            assert_eq!(got.len(), 1, "{pending}: {got:?}");
            assert!(
                got[0].starts_with("/etc/vs/jobs/j.toml:7:16: `pending_path`"),
                "{got:?}"
            );
            assert!(got[0].contains(fragment), "{got:?}");
        }
        // Under the job's own path (equality is reported by the job's own check).
        let own = db(
            "a",
            "secret/db/a",
            "secret/db/admin",
            Some("secret/db/a/pending"),
        );
        let got = clashes(&own);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("lies under this job's `path` `secret/db/a`"),
            "{got:?}"
        );
        // Another job's default pending path, written out: one error, at the later job.
        let text = format!(
            "{}{}",
            db("a", "secret/db/a", "secret/db/admin", None),
            db(
                "b",
                "secret/db/b",
                "secret/db/admin",
                Some("secret/vault-steward/pending/a")
            )
        );
        let got = clashes(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("/etc/vs/jobs/j.toml:13:16: `pending_path` `secret/vault-steward/pending/a` is job `a`'s (at /etc/vs/jobs/j.toml:1:1) default pending path"),
            "{got:?}"
        );
        // A default pending path that is another job's `path`: reported at the job's header.
        let text = format!(
            "{}{}",
            db("a", "secret/db/a", "secret/db/admin", None),
            "[[job]]\nname = \"r\"\nkind = \"reminder\"\npath = \"secret/vault-steward/pending/a\"\nmax_age = \"30d\"\n"
        );
        let got = clashes(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("/etc/vs/jobs/j.toml:1:1: the default pending path of job `a`, `secret/vault-steward/pending/a`, is job `r`'s"),
            "{got:?}"
        );
        // Two jobs with one pending path: reported once.
        let text = format!(
            "{}{}",
            db("a", "secret/db/a", "secret/db/admin", Some("secret/p")),
            db("b", "secret/db/b", "secret/db/admin", Some("secret/p"))
        );
        assert_eq!(clashes(&text).len(), 1);
    }

    #[test]
    fn raft_snapshot_rules() {
        let base = "[[job]]\nname = \"s\"\nkind = \"raft-snapshot\"\n";
        let (_, errors) = parse_jobs(&format!("{base}recipients = [\"{AGE}\"]\n"));
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:1:1: job `s` (kind = \"raft-snapshot\") has no destination: add [job.s3] and/or [job.local]"
            ]
        );
        let (_, errors) = parse_jobs(&format!(
            "{base}recipients = []\n[job.local]\ndir = \"/b\"\n"
        ));
        assert_eq!(
            errors,
            ["/etc/vs/jobs/j.toml:4:14: `recipients` must name at least one public key"]
        );
        let (_, errors) = parse_jobs(&format!("{base}[job.local]\ndir = \"/b\"\n"));
        assert!(errors[0].contains("missing `recipients`"), "{errors:?}");
        let (_, errors) = parse_jobs(&format!(
            "{base}schedule = \"0 * * * *\"\nrecipients = [\"{AGE}\", \"age1xyz\"]\n[job.s3]\nbucket = \"b\"\nendpoint = \"s3.local\"\nsse = \"KMS\"\n"
        ));
        let expected_fragments = [
            ":4:12: invalid cron `0 * * * *`: expected 6 fields",
            ":5:81: invalid age recipient `age1xyz`",
            ":8:12: `endpoint`: invalid URL",
            ":9:7: unknown `sse`",
        ];
        assert_eq!(errors.len(), expected_fragments.len(), "{errors:?}");
        for (e, f) in errors.iter().zip(expected_fragments) {
            assert!(e.contains(f), "{f} not in {e}");
        }
    }

    #[test]
    fn api_key_format_and_paths() {
        let base = "[[job]]\nname = \"k\"\nkind = \"api-key\"\n";
        let (_, errors) = parse_jobs(&format!(
            "{base}path = \"secret/data/api-key/k\"\nformat = \"hex:8\"\nprefix = \"a b\"\non_rotate = \"ftp://x\"\nevery = \"0d\"\n"
        ));
        let expected_fragments = [
            ":4:8: `path`: KV path `secret/data/api-key/k` includes the KV v2 API segment `data/`",
            ":5:10: invalid key format `hex:8`: hex keys take 16 to 256 bytes",
            ":7:13: `on_rotate`: URL `ftp://x` must start with https://",
            ":8:9: duration `0d` must be greater than zero",
        ];
        assert_eq!(errors.len(), expected_fragments.len(), "{errors:?}");
        for (e, f) in errors.iter().zip(expected_fragments) {
            assert!(e.contains(f), "{f} not in {e}");
        }
        let (_, errors) = parse_jobs(&format!(
            "{base}path = \"secret/api-key/k\"\nprefix = \"a b\"\n"
        ));
        assert_eq!(
            errors,
            [
                "/etc/vs/jobs/j.toml:5:10: prefix `a b` contains ` `: use only letters, digits, `_`, `-` and `.`"
            ]
        );
    }
}
