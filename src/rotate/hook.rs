//! The `on_rotate` hook: after a rotation, an HTTP POST tells the consumer to reload now instead
//! of at its next poll. The body names the job, the path and the new version — never the secret:
//! the consumer reads the value from Vault with its own token.
//!
//! A hook that fails never undoes the rotation (the new version is already in Vault and older
//! versions stay readable, so consumers that miss the hook pick the key up at their next poll).
//! The kind tries a few times within the run; if the receiver still fails it raises
//! `OnRotateHookFailed` and leaves a deferred action that the engine retries with backoff, across
//! restarts, until the receiver accepts it (which resolves the alert).

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Alert raised while a rotation's `on_rotate` hook has not been delivered.
pub const ON_ROTATE_HOOK_FAILED: &str = "OnRotateHookFailed";
/// The deferred action that re-sends a hook.
pub const ACTION: &str = "on-rotate";

/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Delays before the second and third try within a run.
const IN_RUN_RETRIES: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// One client for every hook of the process (thousands of jobs share its connection pool).
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let built = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("vault-steward/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the hook's HTTP client: {e}"))?;
    Ok(CLIENT.get_or_init(|| built))
}

/// The URL as messages show it: scheme, host, port and path, no query (it may hold a token).
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "[invalid url]".to_string(),
    }
}

/// POSTs `body` (JSON) to `url` once; `Err` is a scrubbed reason.
pub async fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let shown = display_url(url);
    let response = client()?.post(url).json(body).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "could not connect".to_string()
        } else {
            "request failed".to_string()
        };
        format!("on_rotate hook {shown}: {why}")
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "on_rotate hook {shown} answered {}",
            status.as_u16()
        ))
    }
}

/// POSTs with a few quick retries; gives up early on `cancel`.
pub async fn post_with_retries(
    url: &str,
    body: &serde_json::Value,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut last = post(url, body).await;
    for delay in IN_RUN_RETRIES {
        if last.is_ok() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        last = post(url, body).await;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_query() {
        assert_eq!(
            display_url("https://h.example:8443/reload?token=abc"),
            "https://h.example:8443/reload"
        );
        assert_eq!(display_url("http://h/x"), "http://h/x");
    }
}
