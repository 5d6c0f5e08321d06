//! Checking a stored snapshot and restoring it into Vault, with no plaintext on disk.
//!
//! [`check`] downloads (or reads) the encrypted snapshot, decrypts it as it streams and runs the
//! archive check on the plaintext; with a manifest it also compares sizes, SHA-256 and the raft
//! index. [`restore`] runs after a passed check: it streams the snapshot a second time,
//! decrypting into the body of `POST sys/storage/raft/snapshot[-force]`, and holds back the last
//! chunk until the whole plaintext hashes to what the check saw — so Vault never receives a
//! complete body that differs from the verified one (a mismatch breaks the upload instead).

use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::catalog::Item;
use super::encrypt::{self, BoxedIdentity};
use super::pipeline::Destinations;
use super::verify::{self, ArchiveFacts, ChunkReader};
use super::{BackupError, S3, human_size};
use crate::store::SnapshotRecord;
use crate::vault::{VaultError, VaultSession};

const CHUNK: usize = 256 * 1024;
const RESTORE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a passed check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub facts: ArchiveFacts,
    pub plaintext_size: u64,
    pub plaintext_sha256: String,
    pub ciphertext_size: u64,
    pub ciphertext_sha256: String,
}

/// Sums the decryption thread computes.
struct Sums {
    plaintext_size: u64,
    plaintext_sha256: String,
    ciphertext_size: u64,
    ciphertext_sha256: String,
}

/// Loads the identities for decryption.
pub fn identities(path: &Path) -> Result<Arc<Vec<BoxedIdentity>>, BackupError> {
    encrypt::load_identities(path).map(Arc::new)
}

/// Streams the encrypted object into a channel, counting bytes into `progress`.
fn open_ciphertext(
    dests: &Destinations,
    item: &Item,
    progress: Arc<AtomicU64>,
) -> (
    mpsc::Receiver<Bytes>,
    tokio::task::JoinHandle<Result<(), BackupError>>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let dests = dests.clone();
    let item = item.clone();
    let handle = tokio::spawn(async move {
        if item.destination == S3 {
            let Some(s3) = &dests.s3 else {
                return Err(BackupError::Usage("no s3 destination".into()));
            };
            let mut body = s3.get(&item.name).await?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    BackupError::destination(S3, format!("reading {}: {e}", item.location))
                })?;
                progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        } else {
            let Some(local) = &dests.local else {
                return Err(BackupError::Usage("no local destination".into()));
            };
            let file = local.open(&item.name)?;
            let mut file = tokio::fs::File::from_std(file);
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await.map_err(|e| {
                    BackupError::destination(
                        super::LOCAL,
                        format!("reading {}: {e}", item.location),
                    )
                })?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if tx.send(Bytes::from(buf)).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    });
    (rx, handle)
}

/// A `Read` that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// The decryption thread: ciphertext chunks in, plaintext chunks out.
fn decrypt_stream(
    rx: mpsc::Receiver<Bytes>,
    identities: Arc<Vec<BoxedIdentity>>,
    out: mpsc::Sender<Bytes>,
) -> Result<Sums, String> {
    let mut cipher = Hashing {
        inner: ChunkReader::new(rx),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut plain = Sha256::new();
    let mut plain_size = 0u64;
    {
        let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(CHUNK, &mut cipher))
            .map_err(|e| format!("not a readable age file: {e}"))?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => {
                    "no identity in the identity file matches this snapshot's recipients"
                        .to_string()
                }
                other => format!("decrypting: {other}"),
            })?;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            // Fill whole chunks: fewer, larger sends.
            while filled < CHUNK {
                let n = reader
                    .read(&mut buf[filled..])
                    .map_err(|e| format!("decrypting: {e} (the file is damaged or cut short)"))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            plain.update(&buf);
            plain_size += filled as u64;
            if out.blocking_send(Bytes::from(buf)).is_err() {
                return Err("the reader of the plaintext stopped".into());
            }
        }
    }
    // Anything after the age payload would have failed decryption; read to the end anyway so
    // the ciphertext hash covers the whole object.
    std::io::copy(&mut cipher, &mut std::io::sink())
        .map_err(|e| format!("reading the ciphertext: {e}"))?;
    Ok(Sums {
        plaintext_size: plain_size,
        plaintext_sha256: hex::encode(plain.finalize()),
        ciphertext_size: cipher.size,
        ciphertext_sha256: hex::encode(cipher.hasher.finalize()),
    })
}

/// Downloads, decrypts and checks one stored snapshot; restores nothing.
pub async fn check(
    dests: &Destinations,
    item: &Item,
    identities: Arc<Vec<BoxedIdentity>>,
) -> Result<Checked, BackupError> {
    let progress = Progress::start(&format!("verifying {}", item.location), item.size);
    let (cipher_rx, source) = open_ciphertext(dests, item, progress.counter());
    let (plain_tx, plain_rx) = mpsc::channel::<Bytes>(8);
    let decrypt =
        tokio::task::spawn_blocking(move || decrypt_stream(cipher_rx, identities, plain_tx));
    let verify =
        tokio::task::spawn_blocking(move || verify::check_archive(ChunkReader::new(plain_rx)));
    let sums = decrypt.await;
    let verdict = verify.await;
    let source = source.await;
    progress.finish().await;
    match source {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(BackupError::Source(format!("download task failed: {e}"))),
    }
    let sums = match sums {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(BackupError::Invalid(e)),
        Err(e) => return Err(BackupError::Invalid(format!("decryption task failed: {e}"))),
    };
    let facts = match verdict {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(BackupError::Invalid(e)),
        Err(e) => return Err(BackupError::Invalid(format!("verifier failed: {e}"))),
    };
    let checked = Checked {
        facts,
        plaintext_size: sums.plaintext_size,
        plaintext_sha256: sums.plaintext_sha256,
        ciphertext_size: sums.ciphertext_size,
        ciphertext_sha256: sums.ciphertext_sha256,
    };
    if let Some(m) = &item.manifest {
        let mut differs = Vec::new();
        if m.ciphertext_size != checked.ciphertext_size
            || m.ciphertext_sha256 != checked.ciphertext_sha256
        {
            differs.push("ciphertext SHA-256/size");
        }
        if m.plaintext_size != checked.plaintext_size
            || m.plaintext_sha256 != checked.plaintext_sha256
        {
            differs.push("plaintext SHA-256/size");
        }
        if m.raft_index != checked.facts.raft_index
            || m.raft_term != checked.facts.raft_term
            || m.state_size != checked.facts.state_size
        {
            differs.push("raft index/term/state size");
        }
        if !differs.is_empty() {
            return Err(BackupError::Invalid(format!(
                "{} differs from its manifest: {}",
                item.location,
                differs.join(", ")
            )));
        }
    }
    Ok(checked)
}

/// How a checked object compares with the state store's records of what was uploaded (the
/// store is written by the daemon only, so a writer of the bucket or directory cannot forge it,
/// unlike the manifest beside the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCheck {
    /// The object's ciphertext SHA-256 is the one recorded at its upload.
    Matches,
    /// The store has no record of this object (the store was replaced or lost, retention forgot
    /// it, or the snapshot was made elsewhere): nothing to compare with.
    Unrecorded,
    /// The object is not what was uploaded under its name: its SHA-256 differs from the record,
    /// or it is the recorded content of another snapshot (an older one renamed).
    Differs { recorded: String, found: String },
}

impl RecordCheck {
    /// Compares `item`, whose ciphertext hashed to `sha256`, with the job's `records`.
    pub fn of(records: &[SnapshotRecord], item: &Item, sha256: &str) -> RecordCheck {
        let same_name =
            |r: &&SnapshotRecord| r.key.rsplit('/').next().unwrap_or(&r.key) == item.name;
        let own = records
            .iter()
            .find(|r| r.destination == item.destination && r.key == item.key)
            // The same snapshot in the other destination has the same ciphertext.
            .or_else(|| records.iter().find(same_name));
        match own {
            Some(r) if r.sha256.eq_ignore_ascii_case(sha256) => RecordCheck::Matches,
            Some(r) => RecordCheck::Differs {
                recorded: r.sha256.clone(),
                found: sha256.to_string(),
            },
            None => match records
                .iter()
                .find(|r| r.sha256.eq_ignore_ascii_case(sha256))
            {
                Some(other) => RecordCheck::Differs {
                    recorded: format!("none; these bytes were uploaded as {}", other.key),
                    found: sha256.to_string(),
                },
                None => RecordCheck::Unrecorded,
            },
        }
    }

    /// A sentence about `location` for messages (`None` when it matches).
    pub fn problem(&self, location: &str) -> Option<String> {
        match self {
            RecordCheck::Matches => None,
            RecordCheck::Unrecorded => Some(format!(
                "the state store has no record of this snapshot's upload, so {location} cannot be compared with what was uploaded (the store is new or was lost, or the snapshot comes from elsewhere)"
            )),
            RecordCheck::Differs { recorded, found } => Some(format!(
                "{location} has SHA-256 {found}, not the SHA-256 recorded at its upload ({recorded}): the object was replaced after upload"
            )),
        }
    }
}

/// Restores a snapshot that [`check`] passed into the configured Vault; `force` uses
/// `snapshot-force` (needed when the snapshot comes from another cluster, whose keys differ).
pub async fn restore(
    vault: &VaultSession,
    dests: &Destinations,
    item: &Item,
    identities: Arc<Vec<BoxedIdentity>>,
    checked: &Checked,
    force: bool,
) -> Result<(), BackupError> {
    let path = if force {
        "sys/storage/raft/snapshot-force"
    } else {
        "sys/storage/raft/snapshot"
    };
    let progress = Progress::start(&format!("restoring {}", item.location), item.size);
    let (cipher_rx, source) = open_ciphertext(dests, item, progress.counter());
    let (plain_tx, plain_rx) = mpsc::channel::<Bytes>(8);
    let decrypt =
        tokio::task::spawn_blocking(move || decrypt_stream(cipher_rx, identities, plain_tx));
    let body = held_back(plain_rx, checked.plaintext_sha256.clone());
    // Root namespace only, like the snapshot itself (see `source`).
    let sent = vault
        .request_root(reqwest::Method::POST, path)
        .timeout(RESTORE_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let decrypted = decrypt.await;
    let _ = source.await;
    progress.finish().await;
    let response = sent.map_err(|e| {
        // A body that failed on purpose (mismatch) surfaces here as a transport error.
        match &decrypted {
            Ok(Err(why)) => BackupError::Invalid(why.clone()),
            _ => BackupError::Vault(VaultError::from_reqwest(path, &e)),
        }
    })?;
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        return Err(BackupError::Usage(format!(
            "{} is a standby node (it redirects to {to}); restore into the active node: set [vault] address to it",
            vault.address()
        )));
    }
    if !status.is_success() {
        return Err(BackupError::Vault(
            VaultError::from_response(path, response).await,
        ));
    }
    match decrypted {
        Ok(Ok(sums)) if sums.plaintext_sha256 == checked.plaintext_sha256 => Ok(()),
        // Unreachable in practice: the body withholds its end unless the hashes match.
        _ => Err(BackupError::Invalid(
            "the second read of the snapshot differed from the verified one".into(),
        )),
    }
}

/// The plaintext as a request body that withholds its last chunk until everything before it
/// plus that chunk hashes to `expected`; otherwise the body fails and the upload breaks.
fn held_back(
    rx: mpsc::Receiver<Bytes>,
    expected: String,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct State {
        rx: mpsc::Receiver<Bytes>,
        held: Option<Bytes>,
        hasher: Sha256,
        expected: String,
        done: bool,
    }
    let state = State {
        rx,
        held: None,
        hasher: Sha256::new(),
        expected,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.rx.recv().await {
                Some(chunk) => {
                    st.hasher.update(&chunk);
                    if let Some(previous) = st.held.replace(chunk) {
                        return Some((Ok(previous), st));
                    }
                }
                None => {
                    st.done = true;
                    let got = hex::encode(std::mem::take(&mut st.hasher).finalize());
                    if got == st.expected {
                        let last = st.held.take()?;
                        return Some((Ok(last), st));
                    }
                    return Some((
                        Err(std::io::Error::other(
                            "the snapshot differs from the verified one; upload broken off",
                        )),
                        st,
                    ));
                }
            }
        }
    })
}

/// Progress on a terminal (stderr); silent otherwise.
struct Progress {
    counter: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &str, total: u64) -> Progress {
        let counter = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let task = std::io::stderr().is_terminal().then(|| {
            let (counter, done, label) = (counter.clone(), done.clone(), label.to_string());
            tokio::spawn(async move {
                loop {
                    let n = counter.load(Ordering::Relaxed);
                    let pct = (n * 100).checked_div(total).unwrap_or(100);
                    let finished = done.load(Ordering::Relaxed);
                    eprint!(
                        "\r{label}: {} / {} ({pct}%)\x1b[K",
                        human_size(n),
                        human_size(total)
                    );
                    let _ = std::io::stderr().flush();
                    if finished {
                        eprintln!();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        Progress {
            counter,
            done,
            task,
        }
    }

    fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Prints the last line (on a terminal) and stops the ticker.
    async fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::debug!(error = %e, "progress ticker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(destination: &str, key: &str, sha256: &str) -> SnapshotRecord {
        SnapshotRecord {
            job: "snap".into(),
            destination: destination.into(),
            key: key.into(),
            taken_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            size_bytes: 1,
            sha256: sha256.into(),
            raft_index: None,
            raft_term: None,
        }
    }

    fn item(destination: &'static str, name: &str, key: &str) -> Item {
        Item {
            destination,
            name: name.into(),
            key: key.into(),
            location: format!("{destination}:{key}"),
            size: 1,
            manifest: None,
        }
    }

    const A: &str = "vault-20270101-000000.snap.age";
    const B: &str = "vault-20270102-000000.snap.age";

    #[test]
    fn objects_are_compared_with_their_upload_records() {
        let records = [
            record("s3", &format!("p/{A}"), "aa"),
            record("s3", &format!("p/{B}"), "bb"),
            record("local", &format!("/d/{B}"), "bb"),
        ];
        let b = item("s3", B, &format!("p/{B}"));
        assert_eq!(RecordCheck::of(&records, &b, "BB"), RecordCheck::Matches);
        assert!(RecordCheck::Matches.problem("x").is_none());
        // Replaced by other bytes.
        let differs = RecordCheck::of(&records, &b, "cc");
        assert!(matches!(&differs, RecordCheck::Differs { recorded, .. } if recorded == "bb"));
        assert!(
            differs
                .problem("s3://b/p/x")
                .unwrap()
                .contains("not the SHA-256 recorded at its upload (bb)")
        );
        // The older snapshot's bytes under a name the store does not know.
        let c = item(
            "s3",
            "vault-20270103-000000.snap.age",
            "p/vault-20270103-000000.snap.age",
        );
        assert!(matches!(
            RecordCheck::of(&records, &c, "aa"),
            RecordCheck::Differs { .. }
        ));
        assert_eq!(RecordCheck::of(&records, &c, "dd"), RecordCheck::Unrecorded);
        // A record kept for the other destination only still vouches for the same snapshot.
        let a_local = item("local", A, &format!("/d/{A}"));
        assert_eq!(
            RecordCheck::of(&records, &a_local, "aa"),
            RecordCheck::Matches
        );
        assert!(matches!(
            RecordCheck::of(&records, &a_local, "bb"),
            RecordCheck::Differs { .. }
        ));
        // No records at all (a new store): nothing to compare with.
        assert_eq!(RecordCheck::of(&[], &b, "bb"), RecordCheck::Unrecorded);
        assert!(
            RecordCheck::Unrecorded
                .problem("x")
                .unwrap()
                .contains("has no record of this snapshot")
        );
    }
}
