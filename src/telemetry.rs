//! Logging: `tracing` to stderr (journald picks it up), filtered by `VAULT_STEWARD_LOG` (or
//! `RUST_LOG`; default `info`, with vaultrs' own request logs off), as text or, with `VAULT_STEWARD_LOG_FORMAT=json`, one JSON object
//! per line. Nothing logs a secret value; secrets are `SecretString`s whose `Debug` is redacted.

use tracing_subscriber::EnvFilter;

/// vaultrs and rustify log every non-2xx answer (even an expected 404) at ERROR; our own
/// messages say what matters, so theirs are off unless asked for.
const DEFAULT_FILTER: &str = "info,vaultrs=off,rustify=off";

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = std::env::var("VAULT_STEWARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
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
