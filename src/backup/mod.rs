//! Raft snapshots: take them, check them, encrypt them and ship them; list, prune, verify and
//! restore them.
//!
//! Taking one ([`pipeline`]): [`source`] streams `GET sys/storage/raft/snapshot` from Vault
//! (following a standby's redirect); every chunk goes both to [`verify`] (gzip + tar +
//! `SHA256SUMS` checks, on a blocking thread) and to [`encrypt`] (age to every recipient, on
//! another), whose ciphertext feeds the destinations: [`s3`] (multipart upload of unknown length)
//! and [`local`] (temp file, fsync, rename). [`manifest`] is the JSON written beside each
//! snapshot; [`retention`] decides (purely) what to prune; [`restore`] downloads, decrypts,
//! verifies and restores.
//!
//! What this module must never do: publish a snapshot (complete the multipart upload, rename the
//! temp file) before the verifier has seen the whole stream and passed it; write a plaintext byte
//! to disk; hold a snapshot in memory (at most two upload parts and a few stream chunks are held
//! at once); delete an object whose manifest does not name its job; put snapshot bytes in a log,
//! an error or the store.

pub mod catalog;
pub mod encrypt;
pub mod local;
pub mod manifest;
pub mod pipeline;
pub mod restore;
pub mod retention;
pub mod s3;
pub mod source;
pub mod verify;

use chrono::{DateTime, NaiveDateTime, Utc};

pub use manifest::Manifest;

use crate::vault::VaultError;

/// Label of the S3 destination (metrics, store, messages).
pub const S3: &str = "s3";
/// Label of the local-directory destination.
pub const LOCAL: &str = "local";

/// File-name suffix of an encrypted snapshot.
pub const SNAPSHOT_SUFFIX: &str = ".snap.age";
/// File-name suffix of the manifest beside a snapshot (`NAME.snap.age.json`).
pub const MANIFEST_SUFFIX: &str = ".snap.age.json";
const NAME_PREFIX: &str = "vault-";
const NAME_TIME: &str = "%Y%m%d-%H%M%S";

/// What went wrong with a snapshot. Messages name destinations, keys and sizes, never content.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The archive failed its integrity check: nothing was published.
    #[error("snapshot archive failed its check: {0}")]
    Invalid(String),
    /// The snapshot stream from Vault broke or stalled.
    #[error("{0}")]
    Source(String),
    /// A destination failed (its label first).
    #[error("destination {destination}: {message}")]
    Destination {
        destination: &'static str,
        message: String,
    },
    /// The recipients or the identity could not be used.
    #[error("age: {0}")]
    Age(String),
    /// Bad input from the operator (unknown key, missing destination).
    #[error("{0}")]
    Usage(String),
    #[error("cancelled")]
    Cancelled,
}

impl BackupError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupError::Vault(e) => e.is_retryable(),
            BackupError::Source(_)
            | BackupError::Destination { .. }
            | BackupError::Cancelled
            // A bad archive from Vault is not expected to repeat; the next run takes a new one.
            | BackupError::Invalid(_) => true,
            BackupError::Age(_) | BackupError::Usage(_) => false,
        }
    }

    pub(crate) fn destination(destination: &'static str, message: impl Into<String>) -> Self {
        BackupError::Destination {
            destination,
            message: message.into(),
        }
    }
}

/// `vault-YYYYMMDD-HHMMSS.snap.age` for a snapshot taken at `t` (UTC).
pub fn snapshot_name(t: DateTime<Utc>) -> String {
    format!("{NAME_PREFIX}{}{SNAPSHOT_SUFFIX}", t.format(NAME_TIME))
}

/// How long to wait before taking a snapshot at `now` so that its name differs from that of the
/// newest snapshot, taken at `last`. Names have one-second resolution: a second snapshot in the
/// same second (a CLI `snapshot` right after a scheduled one) would replace the first. `None`
/// when the names already differ.
pub fn name_clash_wait(
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    let last = last?;
    if snapshot_name(last) != snapshot_name(now) {
        return None;
    }
    let into_second = now.timestamp_subsec_nanos() % 1_000_000_000;
    // A millisecond past the next second, so that the clock has surely turned.
    Some(std::time::Duration::from_nanos(
        u64::from(1_000_000_000 - into_second) + 1_000_000,
    ))
}

/// The time in a snapshot's name, if `name` is exactly one of ours.
pub fn parse_snapshot_name(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name
        .strip_prefix(NAME_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    // The exact shape, so that e.g. `vault-20260101-000000.snap.age.bak` is not ours.
    if stamp.len() != 15
        || !stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| (i == 8 && b == b'-') || (i != 8 && b.is_ascii_digit()))
    {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, NAME_TIME)
        .ok()
        .map(|t| t.and_utc())
}

/// The manifest's name beside snapshot `name`.
pub fn manifest_name(snapshot: &str) -> String {
    format!("{snapshot}.json")
}

/// The snapshot a manifest name belongs to, if `name` is one of our manifests.
pub fn manifest_snapshot(name: &str) -> Option<&str> {
    let snapshot = name.strip_suffix(".json")?;
    parse_snapshot_name(snapshot).map(|_| snapshot)
}

/// Human-readable size.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_snapshot_in_the_same_second_waits_for_the_next() {
        let last = Utc.with_ymd_and_hms(2026, 11, 28, 7, 5, 9).unwrap();
        let now = last + chrono::Duration::milliseconds(700);
        let wait = name_clash_wait(Some(last), now).expect("same second: must wait");
        assert_eq!(wait, std::time::Duration::from_millis(301));
        let later = now + chrono::Duration::from_std(wait).unwrap();
        assert_ne!(snapshot_name(later), snapshot_name(last));
        assert_eq!(name_clash_wait(Some(last), later), None);
        assert_eq!(name_clash_wait(None, now), None);
        // A different second (also an earlier one, after a clock step) names differently.
        for other in [
            last + chrono::Duration::seconds(1),
            last - chrono::Duration::seconds(1),
        ] {
            assert_eq!(name_clash_wait(Some(last), other), None);
        }
    }

    #[test]
    fn names_round_trip_and_reject_look_alikes() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 7, 5, 9).unwrap();
        let name = snapshot_name(t);
        assert_eq!(name, "vault-20261128-070509.snap.age");
        assert_eq!(parse_snapshot_name(&name), Some(t));
        assert_eq!(manifest_name(&name), "vault-20261128-070509.snap.age.json");
        assert_eq!(
            manifest_snapshot("vault-20261128-070509.snap.age.json"),
            Some("vault-20261128-070509.snap.age")
        );
        for other in [
            "vault-20261128-070509.snap.age.bak",
            "vault-20261128-070509.snap",
            "vault-2026112-0705099.snap.age",
            "vault-20261328-070509.snap.age",
            "xvault-20261128-070509.snap.age",
            "vault-20261128_070509.snap.age",
            "notes.txt",
            "vault-20261128-070509.snap.age.json",
        ] {
            assert_eq!(parse_snapshot_name(other), None, "{other}");
        }
        assert_eq!(manifest_snapshot("vault-20261128-070509.snap.age"), None);
        assert_eq!(manifest_snapshot("vault-x.snap.age.json"), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
