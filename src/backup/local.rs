//! The local-directory destination: `DIR/vault-….snap.age` and its manifest, mode 0600.
//!
//! A snapshot is written to a hidden temp file while it streams; publishing fsyncs it, writes the
//! manifest the same way (temp, fsync, rename), renames the snapshot into place and fsyncs the
//! directory, so a crash leaves either nothing or a complete pair. A [`LocalSink`] that is dropped
//! unpublished removes its temp file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::manifest::{self, Manifest};
use super::{BackupError, LOCAL, manifest_name, manifest_snapshot, parse_snapshot_name};

/// Temp files older than this are leftovers of a crashed run and get removed.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `[job.local]`.
#[derive(Debug, Clone)]
pub struct LocalDestination {
    dir: PathBuf,
}

/// One file of ours found in the directory.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub size: u64,
}

/// What the directory holds: our snapshots and our manifests (by name).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub snapshots: Vec<Found>,
    pub manifests: Vec<Found>,
}

fn err(message: String) -> BackupError {
    BackupError::destination(LOCAL, message)
}

impl LocalDestination {
    pub fn new(dir: &Path) -> Self {
        LocalDestination {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name` lives.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opens a temp file for snapshot `name` (creating the directory, mode 0700, if needed).
    pub fn create_sink(&self, name: &str) -> Result<LocalSink, BackupError> {
        if !self.dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| err(format!("creating {}: {e}", self.dir.display())))?;
        }
        self.remove_stale_temps();
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(format!("creating {}: {e}", tmp.display())))?;
        Ok(LocalSink {
            dir: self.dir.clone(),
            tmp: Some(tmp),
            target: self.dir.join(name),
            name: name.to_string(),
            file: Some(file),
        })
    }

    /// Removes temp files of ours left by a crashed run a day ago or more.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix('.') else {
                continue;
            };
            let Some((base, _)) = rest.split_once(".tmp-") else {
                continue;
            };
            let ours = parse_snapshot_name(base).is_some() || manifest_snapshot(base).is_some();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMP);
            if ours && old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Our snapshots and manifests in the directory (not in sub-directories).
    pub fn list(&self) -> Result<Listing, BackupError> {
        let mut out = Listing::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(err(format!("listing {}: {e}", self.dir.display()))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| err(format!("listing {}: {e}", self.dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let found = Found {
                name: name.clone(),
                size: meta.len(),
            };
            if parse_snapshot_name(&name).is_some() {
                out.snapshots.push(found);
            } else if manifest_snapshot(&name).is_some() {
                out.manifests.push(found);
            }
        }
        Ok(out)
    }

    /// Reads a manifest; `Ok(None)` if it is missing or not a manifest.
    pub fn read_manifest(&self, name: &str) -> Result<Option<Manifest>, BackupError> {
        let path = self.path(name);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(f) => f
                .take(manifest::MAX_SIZE as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| err(format!("reading {}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(format!("reading {}: {e}", path.display()))),
        };
        Ok(Manifest::parse(&bytes))
    }

    /// Opens a snapshot for reading.
    pub fn open(&self, name: &str) -> Result<File, BackupError> {
        let path = self.path(name);
        File::open(&path).map_err(|e| err(format!("opening {}: {e}", path.display())))
    }

    /// Deletes one of our files; a file already gone is fine.
    pub fn delete(&self, name: &str) -> Result<(), BackupError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(format!("deleting {}: {e}", path.display()))),
        }
    }

    /// Fsyncs the directory, so renames and deletions survive a crash.
    pub fn sync_dir(&self) -> Result<(), BackupError> {
        sync_dir(&self.dir)
    }

    /// Proves the directory is writable (creates and removes a temp file).
    pub fn probe(&self) -> Result<(), BackupError> {
        let probe =
            LocalDestination::new(&self.dir).create_sink("vault-00000000-000000.snap.age")?;
        drop(probe);
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(format!("syncing {}: {e}", dir.display())))
}

/// A snapshot being written to a temp file. Removed on drop unless published.
pub struct LocalSink {
    dir: PathBuf,
    tmp: Option<PathBuf>,
    target: PathBuf,
    name: String,
    file: Option<File>,
}

impl LocalSink {
    /// Appends ciphertext.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("temp file already closed")),
        }
    }

    /// Flushes the snapshot to disk (before the decision to publish).
    pub fn sync(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }

    /// Publishes: writes the manifest (temp, fsync, rename), then renames the synced snapshot
    /// into place and fsyncs the directory. Returns the snapshot's path.
    pub fn publish(mut self, manifest: &[u8]) -> Result<PathBuf, BackupError> {
        if let Some(f) = self.file.take() {
            f.sync_all()
                .map_err(|e| err(format!("syncing {}: {e}", self.target.display())))?;
        }
        let manifest_path = self.dir.join(manifest_name(&self.name));
        let manifest_tmp = self.dir.join(format!(
            ".{}.tmp-{}",
            manifest_name(&self.name),
            std::process::id()
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&manifest_tmp)?;
            f.write_all(manifest)?;
            f.sync_all()?;
            move_no_replace(&manifest_tmp, &manifest_path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&manifest_tmp);
            return Err(err(publish_error(&manifest_path, &e)));
        }
        let Some(tmp) = self.tmp.take() else {
            return Err(err("snapshot temp file vanished".into()));
        };
        if let Err(e) = move_no_replace(&tmp, &self.target) {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&manifest_path);
            return Err(err(publish_error(&self.target, &e)));
        }
        sync_dir(&self.dir)?;
        Ok(self.target.clone())
    }
}

/// Moves `from` to `to` unless `to` exists: a snapshot or manifest already there is never
/// replaced. A hard link does it atomically; on a filesystem without hard links, a check and a
/// rename (racy only against another writer that the check just missed).
fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            // Published; the temp name is only a leftover now.
            if let Err(e) = fs::remove_file(from) {
                tracing::warn!(file = %from.display(), error = %e, "removing a temp name after publishing");
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if to.exists() => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Err(_) => fs::rename(from, to),
    }
}

fn publish_error(path: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::AlreadyExists {
        format!(
            "{} already exists and was left alone: another job or deployment writes snapshots into this directory; give each its own",
            path.display()
        )
    } else {
        format!("publishing {}: {e}", path.display())
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            self.file.take();
            let _ = fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpublished_sinks_leave_nothing_and_published_ones_leave_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDestination::new(&dir.path().join("backups"));
        let name = "vault-20261128-070509.snap.age";
        let mut sink = dest.create_sink(name).unwrap();
        sink.write_all(b"ciphertext").unwrap();
        drop(sink);
        assert_eq!(fs::read_dir(dest.dir()).unwrap().count(), 0);

        let mut sink = dest.create_sink(name).unwrap();
        sink.write_all(b"ciphertext").unwrap();
        let path = sink.publish(b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ciphertext");
        let listing = dest.list().unwrap();
        assert_eq!(listing.snapshots.len(), 1);
        assert_eq!(listing.manifests.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        dest.delete(name).unwrap();
        dest.delete(name).unwrap();
        assert!(dest.list().unwrap().snapshots.is_empty());
    }

    #[test]
    fn a_manifest_over_the_size_limit_is_not_read_and_counts_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDestination::new(dir.path());
        let name = "vault-20261128-070509.snap.age";
        let manifest = Manifest {
            format: manifest::FORMAT,
            job: "snap".into(),
            snapshot: name.into(),
            taken_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            vault_version: None,
            raft_index: 1,
            raft_term: 1,
            state_size: 1,
            plaintext_size: 1,
            plaintext_sha256: "ab".repeat(32),
            ciphertext_size: 1,
            ciphertext_sha256: "cd".repeat(32),
            recipients: Vec::new(),
            producer: "test".into(),
        };
        let path = dir.path().join(manifest_name(name));
        fs::write(&path, manifest.to_json()).unwrap();
        assert_eq!(
            dest.read_manifest(&manifest_name(name)).unwrap(),
            Some(manifest.clone())
        );
        // The same manifest padded to 8 MiB with whitespace (still valid JSON): refused by size.
        let mut padded = manifest.to_json();
        padded.resize(8 << 20, b' ');
        fs::write(&path, padded).unwrap();
        assert_eq!(dest.read_manifest(&manifest_name(name)).unwrap(), None);
    }
}
