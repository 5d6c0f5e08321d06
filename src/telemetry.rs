//! Logging: `tracing` to stderr (journald picks it up), filtered by `VAULT_STEWARD_LOG` (or
//! `RUST_LOG`; default `info`), as text or, with `VAULT_STEWARD_LOG_FORMAT=json`, one JSON object
//! per line. Nothing logs a secret value; secrets are `SecretString`s whose `Debug` is redacted.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = std::env::var("VAULT_STEWARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = std::env::var("VAULT_STEWARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
