//! Taking one snapshot: Vault → (integrity check ∥ age) → destinations, in bounded memory and
//! with no plaintext on disk.
//!
//! The async side pumps the stream from Vault and hands every chunk (reference-counted, not
//! copied) to two blocking threads through small bounded channels: the verifier
//! ([`super::verify::check_stream`], which also hashes the plaintext) and the encryptor, which
//! writes age ciphertext into the local temp file and the S3 part buffers as it goes and hashes
//! the ciphertext. Each thread does about half of the hashing, so neither alone paces the run.
//! When the stream ends, the verifier's verdict decides: only a passed archive is published
//! (manifest first, then the snapshot); anything else aborts the multipart upload and removes
//! the temp file. A destination that fails does not stop the others: the snapshot is published
//! where it can be, and the failure is reported.
//!
//! If the future is dropped halfway (the run timed out, the daemon stops), the channels close,
//! the temp file is removed by its guard and the upload task, seeing no decision, aborts.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::encrypt;
use super::local::{LocalDestination, LocalSink};
use super::manifest::{self, Manifest};
use super::s3::{PartSender, S3Destination, S3Upload};
use super::source;
use super::verify::{self, CheckedStream};
use super::{BackupError, LOCAL, S3, snapshot_name};
use crate::vault::VaultSession;

/// Chunks in flight to each blocking thread (a chunk is at most a few hundred KiB): enough to
/// smooth the flow, few enough to count for little memory.
const CHANNEL_CHUNKS: usize = 4;

/// Where a job's snapshots go.
#[derive(Clone, Default)]
pub struct Destinations {
    pub s3: Option<S3Destination>,
    pub local: Option<LocalDestination>,
}

/// A snapshot published in one destination.
#[derive(Debug, Clone)]
pub struct Published {
    /// [`S3`] or [`LOCAL`].
    pub destination: &'static str,
    /// The object key (S3) or file path (local), as the store records it.
    pub key: String,
    /// `s3://…` or the path, for messages.
    pub location: String,
    pub size: u64,
}

/// The outcome of a snapshot that passed its check.
#[derive(Debug)]
pub struct Taken {
    pub name: String,
    pub manifest: Manifest,
    pub published: Vec<Published>,
    /// Destinations that failed while others got the snapshot.
    pub failed: Vec<BackupError>,
}

/// What the encryption thread hands back.
struct Encrypted {
    local: Option<LocalSink>,
    s3_parts_sent: bool,
    ciphertext_sha256: String,
    ciphertext_size: u64,
}

/// Takes, checks, encrypts and publishes one snapshot named after `taken_at`.
pub async fn take(
    vault: &VaultSession,
    dests: &Destinations,
    job: &str,
    recipients: &[String],
    taken_at: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Taken, BackupError> {
    let name = snapshot_name(taken_at);
    let parsed = encrypt::parse_recipients(recipients)?;
    let encryptor = encrypt::encryptor(&parsed)?;

    let mut failed: Vec<BackupError> = Vec::new();
    let local_sink = match &dests.local {
        Some(l) => match l.create_sink(&name) {
            Ok(s) => Some(s),
            Err(e) => {
                failed.push(e);
                None
            }
        },
        None => None,
    };
    let (parts, mut upload) = match &dests.s3 {
        Some(s) => {
            let (p, u) = s.start_upload(&name);
            (Some(p), Some(u))
        }
        None => (None, None),
    };
    if local_sink.is_none() && parts.is_none() {
        return Err(combine(failed));
    }

    // Two independent requests: the version for the manifest does not hold up the stream.
    let (vault_version, opened) = tokio::join!(source::vault_version(vault), source::open(vault));
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => {
            // The upload task reads parts until their sender is gone: drop it first, or the
            // abort waits forever (a refused snapshot request hung the run until its timeout).
            drop(parts);
            drop(local_sink);
            abort(upload.take()).await;
            return Err(e);
        }
    };

    let (verify_tx, verify_rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let (encrypt_tx, encrypt_rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let verifier = tokio::task::spawn_blocking(move || verify::check_stream(verify_rx));
    let local_error = Arc::new(Mutex::new(None::<String>));
    let sink = CipherSink {
        hasher: Sha256::new(),
        size: 0,
        local: local_sink,
        local_error: local_error.clone(),
        s3: parts,
    };
    let encryptor =
        tokio::task::spawn_blocking(move || encrypt_stream(encryptor, encrypt_rx, sink));

    // Pump the stream into both threads. Either thread closing its channel means it stopped
    // early (the verifier on a bad archive, the encryptor when every destination failed).
    enum Pumped {
        Complete,
        VerifierStopped,
        EncryptorStopped,
    }
    let pumped: Result<Pumped, BackupError> = async {
        loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return Err(BackupError::Cancelled),
                c = stream.next() => c?,
            };
            let Some(chunk) = chunk else {
                return Ok(Pumped::Complete);
            };
            if verify_tx.send(chunk.clone()).await.is_err() {
                return Ok(Pumped::VerifierStopped);
            }
            if encrypt_tx.send(chunk).await.is_err() {
                return Ok(Pumped::EncryptorStopped);
            }
        }
    }
    .await;
    drop(verify_tx);
    drop(encrypt_tx);
    drop(stream);

    let verdict: Result<CheckedStream, String> = match verifier.await {
        Ok(v) => v,
        Err(e) => Err(format!("the verifier failed: {e}")),
    };
    let encrypted: Result<Encrypted, String> = match encryptor.await {
        Ok(r) => r,
        Err(e) => Err(format!("the encryptor failed: {e}")),
    };
    let local_failure = || {
        local_error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
            .map(|m| BackupError::destination(LOCAL, m))
    };

    let checked = match pumped {
        Err(e) => {
            drop(encrypted);
            abort(upload.take()).await;
            return Err(e);
        }
        Ok(Pumped::EncryptorStopped) => {
            // Every destination failed (or encryption itself did): report why.
            drop(encrypted);
            failed.extend(local_failure());
            if let Some(e) = abort(upload.take()).await {
                failed.push(BackupError::destination(S3, e));
            }
            if failed.is_empty() {
                failed.push(BackupError::Age("encryption stopped".into()));
            }
            return Err(combine(failed));
        }
        Ok(Pumped::Complete | Pumped::VerifierStopped) => match verdict {
            Ok(checked) => checked,
            Err(why) => {
                drop(encrypted);
                abort(upload.take()).await;
                tracing::error!(job, snapshot = %name, error = %why, "snapshot archive failed its check; nothing published");
                return Err(BackupError::Invalid(why));
            }
        },
    };
    let encrypted = match encrypted {
        Ok(e) => e,
        Err(why) => {
            failed.extend(local_failure());
            if let Some(e) = abort(upload.take()).await {
                failed.push(BackupError::destination(S3, e));
            }
            if failed.is_empty() {
                failed.push(BackupError::Age(why));
            }
            return Err(combine(failed));
        }
    };
    failed.extend(local_failure());

    let manifest = Manifest {
        format: manifest::FORMAT,
        job: job.to_string(),
        snapshot: name.clone(),
        taken_at,
        vault_version,
        raft_index: checked.facts.raft_index,
        raft_term: checked.facts.raft_term,
        state_size: checked.facts.state_size,
        plaintext_size: checked.size,
        plaintext_sha256: checked.sha256,
        ciphertext_size: encrypted.ciphertext_size,
        ciphertext_sha256: encrypted.ciphertext_sha256,
        recipients: recipients.iter().map(|r| encrypt::fingerprint(r)).collect(),
        producer: concat!("vault-steward ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let json = manifest.to_json();
    let mut published = Vec::new();

    if let (Some(sink), Some(dest)) = (encrypted.local, &dests.local) {
        let bytes = json.clone();
        match tokio::task::spawn_blocking(move || sink.publish(&bytes)).await {
            Ok(Ok(path)) => published.push(Published {
                destination: LOCAL,
                key: path.display().to_string(),
                location: path.display().to_string(),
                size: manifest.ciphertext_size,
            }),
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(BackupError::destination(
                LOCAL,
                format!("publishing into {} failed: {e}", dest.dir().display()),
            )),
        }
    }
    if let (Some(u), Some(dest)) = (upload.take(), &dests.s3) {
        let outcome = if encrypted.s3_parts_sent {
            u.publish(json).await
        } else {
            Err(BackupError::destination(
                S3,
                u.abort().await.unwrap_or_else(|| "upload stopped".into()),
            ))
        };
        match outcome {
            Ok(size) => published.push(Published {
                destination: S3,
                key: dest.key(&name),
                location: dest.location(&name),
                size,
            }),
            Err(e) => failed.push(e),
        }
    }
    if published.is_empty() {
        return Err(combine(failed));
    }
    Ok(Taken {
        name,
        manifest,
        published,
        failed,
    })
}

async fn abort(upload: Option<S3Upload>) -> Option<String> {
    match upload {
        Some(u) => u.abort().await,
        None => None,
    }
}

/// One error for several failed destinations.
fn combine(mut errors: Vec<BackupError>) -> BackupError {
    match errors.len() {
        0 => BackupError::Usage("no destination".into()),
        1 => errors.remove(0),
        _ => BackupError::Usage(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Where the ciphertext goes: hashed, then to the local temp file and the S3 parts. A failing
/// destination is dropped (its temp file removed); the write fails only when none is left.
struct CipherSink {
    hasher: Sha256,
    size: u64,
    local: Option<LocalSink>,
    local_error: Arc<Mutex<Option<String>>>,
    s3: Option<PartSender>,
}

impl CipherSink {
    fn fail_local(&mut self, e: io::Error) {
        if let Some(sink) = self.local.take() {
            drop(sink);
            if let Ok(mut slot) = self.local_error.lock() {
                *slot = Some(format!("writing the snapshot: {e}"));
            }
        }
    }
}

impl Write for CipherSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        if let Some(sink) = &mut self.local
            && let Err(e) = sink.write_all(buf)
        {
            self.fail_local(e);
        }
        if let Some(parts) = &mut self.s3
            && parts.write(buf).is_err()
        {
            self.s3 = None;
        }
        if self.local.is_none() && self.s3.is_none() {
            return Err(io::Error::other("every destination failed"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The encryption thread: age over every chunk until the channel closes.
fn encrypt_stream(
    encryptor: age::Encryptor,
    mut rx: mpsc::Receiver<Bytes>,
    sink: CipherSink,
) -> Result<Encrypted, String> {
    let mut writer = encryptor
        .wrap_output(sink)
        .map_err(|e| format!("starting encryption: {e}"))?;
    while let Some(chunk) = rx.blocking_recv() {
        writer
            .write_all(&chunk)
            .map_err(|e| format!("encrypting: {e}"))?;
    }
    let mut sink = writer
        .finish()
        .map_err(|e| format!("finishing encryption: {e}"))?;
    if let Some(local) = &mut sink.local
        && let Err(e) = local.sync()
    {
        sink.fail_local(e);
    }
    let s3_parts_sent = match sink.s3.take() {
        Some(parts) => parts.finish().is_ok(),
        None => false,
    };
    Ok(Encrypted {
        local: sink.local.take(),
        s3_parts_sent,
        ciphertext_sha256: hex::encode(sink.hasher.finalize_reset()),
        ciphertext_size: sink.size,
    })
}
