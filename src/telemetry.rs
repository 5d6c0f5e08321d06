//! Logging: `tracing` to stderr (journald picks it up), filtered by `VAULT_STEWARD_LOG` (or
//! `RUST_LOG`; default `info`; vaultrs' own request logs stay off unless the filter names
//! vaultrs), as text or, with `VAULT_STEWARD_LOG_FORMAT=json`, one JSON object per line.
//! Nothing logs a secret value; secrets are `SecretString`s whose `Debug` is redacted.

use tracing_subscriber::EnvFilter;

/// vaultrs and rustify log every non-2xx answer (even an expected 404) at ERROR, and
/// tokio-cron-scheduler logs its own start at INFO; our own messages say what matters, so theirs
/// are off (or quiet) unless a filter names them.
const QUIET: [(&str, &str); 3] = [
    ("vaultrs", "off"),
    ("rustify", "off"),
    ("tokio_cron_scheduler", "warn"),
];

/// The filter: `VAULT_STEWARD_LOG`, else `RUST_LOG`, else `info`; plus [`QUIET`] for each of
/// those crates the filter does not name (`VAULT_STEWARD_LOG=debug` alone would otherwise bring
/// their ERROR lines back).
fn directives(configured: Option<String>) -> String {
    let mut filter = configured
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    for (target, level) in QUIET {
        if !filter.contains(target) {
            filter.push_str(&format!(",{target}={level}"));
        }
    }
    filter
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let configured = std::env::var("VAULT_STEWARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok());
    let filter = EnvFilter::try_new(directives(configured))
        .unwrap_or_else(|_| EnvFilter::new(directives(None)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_crates_stay_quiet_unless_named() {
        assert_eq!(
            directives(None),
            "info,vaultrs=off,rustify=off,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            directives(Some("debug".into())),
            "debug,vaultrs=off,rustify=off,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            directives(Some("warn,vaultrs=debug".into())),
            "warn,vaultrs=debug,rustify=off,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            directives(Some(" ".into())),
            "info,vaultrs=off,rustify=off,tokio_cron_scheduler=warn"
        );
        for f in [
            None,
            Some("debug".into()),
            Some("warn,vaultrs=debug".into()),
        ] {
            assert!(EnvFilter::try_new(directives(f)).is_ok());
        }
    }
}
