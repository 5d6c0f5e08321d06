//! Configuration: `steward.toml` plus a directory of job files (`jobs/*.toml`, each with one or
//! more `[[job]]`).
//!
//! This module owns parsing (keeping source spans so every problem is reported as
//! `FILE:LINE:COL: message`), environment overrides (Vault's own variable names) and pure
//! validation. It never connects to anything; `check --connect` lives in the app. Secret values are
//! never part of the config: settings name a `*_file` or an environment variable, read on demand by
//! [`secret`].
//!
//! Inside: `source` turns the parser's byte offsets into `LINE:COL`; `raw` holds the serde structs
//! as written (every value spanned, unknown keys denied); `validate` turns them into the types
//! below without any I/O; [`load()`] reads the files, applies the environment and checks the files
//! the config names (secret files exist and are not readable by others). Relative paths resolve
//! against the directory of the file that names them, never the working directory.

pub mod db_tls;
pub mod duration;
pub mod error;
pub mod jobs;
mod key_format;
pub mod kv_path;
pub mod load;
mod raw;
pub mod schedule;
pub mod secret;
mod source;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use db_tls::{DbTls, TlsMode};
pub use duration::Duration;
pub use error::{ConfigError, ConfigErrors, Location};
pub use jobs::*;
pub use load::{load, load_with_env};
pub use schedule::Schedule;

/// Default path of the daemon's config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vault-steward/steward.toml";

/// The whole, validated configuration: daemon settings plus every job.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    pub vault: VaultConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub jobs_dir: PathBuf,
    pub engine: EngineConfig,
    pub alerts: AlertsConfig,
    /// Every job of every file in `jobs_dir`, in file-name then file order.
    pub jobs: Vec<JobConfig>,
    /// Settings that are valid but weaken something (`tls = "disable"`), each at its place:
    /// `check` prints them, `run` logs them.
    pub warnings: Vec<ConfigError>,
}

/// `[vault]`.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// `address`, overridden by `VAULT_ADDR`.
    pub address: String,
    /// `ca_cert`, overridden by `VAULT_CACERT`.
    pub ca_cert: Option<PathBuf>,
    /// `namespace`, overridden by `VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// `request_timeout` (default 30s).
    pub request_timeout: Duration,
    pub auth: VaultAuth,
}

/// `[vault.auth]`.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// `method = "token"`: `token_file`, or env `VAULT_TOKEN`.
    Token { token: secret::SecretSource },
    /// `method = "approle"`: `role_id_file` / `VAULT_ROLE_ID`, `secret_id_file` / `VAULT_SECRET_ID`,
    /// `mount` (default `approle`).
    AppRole {
        mount: String,
        role_id: secret::SecretSource,
        secret_id: secret::SecretSource,
    },
}

/// `[state]`.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `sqlite://PATH` or `postgres://…` (a password in it is taken from `password_file` or the
    /// env `VAULT_STEWARD_STATE_PASSWORD` instead of the URL).
    pub url: String,
    pub password: Option<secret::SecretSource>,
    /// `lease_ttl`: how long the leader's lease lasts without renewal (PostgreSQL stores, where
    /// several instances elect one leader); a standby takes over within it.
    pub lease_ttl: Duration,
    /// `tls`, `ca_cert`, `client_cert`, `client_key` (PostgreSQL). Without `tls`, an `sslmode`
    /// in `url` decides, else the host (see [`db_tls`]).
    pub tls: DbTls,
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// `[engine]` (all optional): how jobs are driven.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Default per-run timeout (`timeout` on a job overrides it). Default 5m.
    pub job_timeout: Duration,
    /// First retry delay after a failure (doubled per consecutive failure, with jitter). Default 10s.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 15m.
    pub retry_max: Duration,
    /// How long `run` waits for running jobs on SIGTERM before giving up. Default 30s.
    pub shutdown_timeout: Duration,
    /// Most jobs running at once. Default 16.
    pub max_concurrent: usize,
}

/// `[alerts]`.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub repeat_interval: Duration,
    pub failures_before_alert: u32,
    /// First retry delay of a failed notification (doubled per attempt, with jitter). Default 30s.
    pub retry_initial: Duration,
    /// Longest retry delay of a failed notification. Default 15m.
    pub retry_max: Duration,
    pub email: Vec<EmailSinkConfig>,
    pub webhook: Vec<WebhookSinkConfig>,
}

impl AlertsConfig {
    /// Every sink's name, email sinks first, in config order.
    pub fn sink_names(&self) -> Vec<String> {
        self.email
            .iter()
            .map(|s| s.name.clone())
            .chain(self.webhook.iter().map(|s| s.name.clone()))
            .collect()
    }
}

/// `[[alerts.email]]`.
#[derive(Debug, Clone)]
pub struct EmailSinkConfig {
    pub name: String,
    pub smtp_url: String,
    /// Host, port and transport security, from `smtp_url`.
    pub smtp: SmtpEndpoint,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<secret::SecretSource>,
    /// `ca_cert`: trust this CA (PEM) instead of the system's for the SMTP server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// `timeout`: for connecting and for each SMTP command. Default 30s.
    pub timeout: Duration,
}

/// Where and how to reach an SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
}

/// Transport security of an SMTP connection (lettre's URL conventions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://…` without `tls`: no encryption (for a relay on loopback).
    Plain,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://…?tls=required`: STARTTLS, or no mail at all.
    StartTls,
    /// `smtps://…`: TLS from the first byte.
    Implicit,
}

/// `[[alerts.webhook]]`.
#[derive(Debug, Clone)]
pub struct WebhookSinkConfig {
    pub name: String,
    /// Where to POST: `url`, or `url_file` for URLs that are themselves secrets (Slack).
    pub url: WebhookUrl,
    pub format: WebhookFormat,
    /// HMAC-SHA256 key for the `generic` format's signature header.
    pub hmac_secret: Option<secret::SecretSource>,
    /// `routing_key_file`: the PagerDuty integration's routing key (format `pagerduty` only).
    pub routing_key: Option<secret::SecretSource>,
    /// `ca_cert`: trust this CA (PEM) instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// `timeout`: for the whole request. Default 30s.
    pub timeout: Duration,
}

/// A webhook's URL, in the config or (when it carries a credential) in a secret file.
#[derive(Debug, Clone)]
pub enum WebhookUrl {
    Inline(String),
    Secret(secret::SecretSource),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Generic,
    Slack,
    Pagerduty,
    Alertmanager,
}
