//! The snapshot stream from Vault: `GET sys/storage/raft/snapshot` through the shared session
//! (token, CA, one re-login on a revoked token; always in the root namespace, the only one
//! where raft endpoints exist), with a timeout fit for large
//! snapshots: no limit on the whole transfer (the job's own timeout bounds it), but a limit on
//! silence, so a stalled stream fails instead of hanging. A standby node either forwards the
//! request to the active node itself (OpenBao does) or answers with a redirect to it, which the
//! HTTP client follows (the token header goes along; it is logged when it happens).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::BackupError;
use crate::vault::VaultSession;

pub const SNAPSHOT_PATH: &str = "sys/storage/raft/snapshot";

/// Longest wait for the next bytes of the stream (Vault may think a while before the first).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Overrides the session's short per-request timeout; the transfer as a whole is bounded by the
/// job's timeout and the idle limit.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A snapshot stream being read.
pub struct SnapshotStream {
    inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    /// Where the bytes come from (after redirects), for messages.
    pub url: String,
}

/// Starts the snapshot download.
pub async fn open(vault: &VaultSession) -> Result<SnapshotStream, BackupError> {
    // `sys/storage/raft/*` exists only in the root namespace: never sent with the configured one.
    let response = vault
        .send_root(reqwest::Method::GET, SNAPSHOT_PATH, |r| {
            r.timeout(TRANSFER_TIMEOUT)
        })
        .await?;
    let url = response.url().clone();
    let requested = format!("{}/v1/{SNAPSHOT_PATH}", vault.address());
    let mut shown = url.clone();
    shown.set_query(None);
    let shown = shown.to_string();
    if shown != requested {
        tracing::info!(from = %requested, to = %shown, "followed a redirect to the active node for the snapshot");
    }
    Ok(SnapshotStream {
        inner: response.bytes_stream().boxed(),
        url: shown,
    })
}

impl SnapshotStream {
    /// The next chunk; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Bytes>, BackupError> {
        match tokio::time::timeout(IDLE_TIMEOUT, self.inner.next()).await {
            Err(_) => Err(BackupError::Source(format!(
                "the snapshot stream from {} stalled: no data for {}s",
                self.url,
                IDLE_TIMEOUT.as_secs()
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            Ok(Some(Err(e))) => Err(BackupError::Source(format!(
                "the snapshot stream from {} broke: {}",
                self.url,
                chain(&e)
            ))),
        }
    }
}

/// The version the server reports (`sys/seal-status` needs no policy); `None` if it does not say.
pub async fn vault_version(vault: &VaultSession) -> Option<String> {
    let response = vault
        .send_root(reqwest::Method::GET, "sys/seal-status", |r| r)
        .await
        .ok()?;
    let body: serde_json::Value = crate::body::json_limited(response, crate::body::MAX_BODY)
        .await
        .ok()?;
    body.get("version")?.as_str().map(str::to_string)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
