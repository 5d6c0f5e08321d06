//! Where a secret setting's value comes from: a file (checked for permissions) or an environment
//! variable. The value is read on demand, straight into a [`SecretString`], and never stored in the
//! config structs.
//!
//! A secret file must be readable by nobody but its owner: owned by this process's user (or
//! root), with no read permission for its group or others, in the mode bits or in a POSIX ACL
//! (a named-user ACL entry for this process's own user is fine: that is how systemd's
//! `LoadCredential=` hands a root-owned credential to the service). The checks are made on the
//! opened file (`fstat`, `fgetxattr`), so the file read is the file checked.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

use super::Location;

/// A place to read one secret from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose whole content (trailing newline trimmed) is the secret. `location` is where
    /// the config named it.
    File {
        path: PathBuf,
        location: Option<Location>,
    },
    /// An environment variable, read when the value is needed.
    Env { var: String },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File { path, .. } => write!(f, "SecretSource::File({})", path.display()),
            SecretSource::Env { var } => write!(f, "SecretSource::Env({var})"),
        }
    }
}

/// Why a secret could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is readable by {who} (mode {mode:o}); chmod 600 it")]
    WorldReadable {
        path: PathBuf,
        mode: u32,
        /// Who else can read it: "other users", "its group", "users named in its ACL".
        who: &'static str,
    },
    #[error(
        "secret file {path} is owned by uid {owner}, neither this process's user (uid {us}) nor \
         root: its owner can read it; chown it to the user vault-steward runs as"
    )]
    ForeignOwner { path: PathBuf, owner: u32, us: u32 },
    #[error("secret file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("secret file {path} is empty")]
    Empty { path: PathBuf },
    #[error("environment variable {var} is not set")]
    EnvMissing { var: String },
}

impl SecretSource {
    /// Checks that the source can be read, without keeping the value.
    pub fn check(&self) -> Result<(), SecretError> {
        self.read().map(drop)
    }

    /// Reads the secret.
    pub fn read(&self) -> Result<SecretString, SecretError> {
        match self {
            SecretSource::File { path, .. } => read_secret_file(path),
            SecretSource::Env { var } => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(SecretError::EnvMissing { var: var.clone() }),
            },
        }
    }
}

/// Reads a secret file, refusing one that anyone but its owner can read (see the module doc).
pub fn read_secret_file(path: &std::path::Path) -> Result<SecretString, SecretError> {
    use std::io::Read;
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    check_secret_file(path, &file)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(io)?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(value.to_string()))
}

/// The permission checks of [`read_secret_file`], on the opened file.
fn check_secret_file(path: &std::path::Path, file: &std::fs::File) -> Result<(), SecretError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us && meta.uid() != 0 {
        return Err(SecretError::ForeignOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.mode() & 0o777;
    let acl = match read_acl(file) {
        Ok(acl) => acl,
        Err(source) => {
            return Err(SecretError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let refused = |who| {
        Err(SecretError::WorldReadable {
            path: path.to_path_buf(),
            mode,
            who,
        })
    };
    match acl {
        None => {
            if mode & 0o004 != 0 {
                return refused("other users");
            }
            if mode & 0o040 != 0 {
                return refused("its group");
            }
        }
        Some(acl) => {
            if let Some(who) = acl_other_readers(&acl, us) {
                return refused(who);
            }
        }
    }
    Ok(())
}

/// The file's access ACL in the kernel's `system.posix_acl_access` format, or `None` when it
/// has none (or the file system has no ACLs): then the mode bits say everything.
fn read_acl(file: &std::fs::File) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 4096];
    match rustix::fs::fgetxattr(file, "system.posix_acl_access", &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::OPNOTSUPP => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Who besides the owner (and a named entry for `us`) can read a file with this ACL, if anyone.
/// Format: a u32 version (2), then 8-byte entries `{ tag: u16, perm: u16, id: u32 }`, little
/// endian. Group-class entries count only through the mask. An ACL that cannot be parsed counts
/// as readable by others: better to refuse than to guess.
pub(crate) fn acl_other_readers(acl: &[u8], us: u32) -> Option<&'static str> {
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const READ: u16 = 0x04;
    let unreadable = Some("an ACL that vault-steward cannot read");
    let (Some(version), Some(rest)) = (acl.get(..4), acl.get(4..)) else {
        return unreadable;
    };
    if version != 2u32.to_le_bytes() || rest.len() % 8 != 0 {
        return unreadable;
    }
    let entries: Vec<(u16, u16, u32)> = rest
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect();
    let mask = entries
        .iter()
        .find(|(tag, _, _)| *tag == MASK)
        .map_or(READ, |(_, perm, _)| *perm);
    for (tag, perm, id) in entries {
        let readable = perm & READ != 0;
        match tag {
            OTHER if readable => return Some("other users"),
            USER if readable && mask & READ != 0 && id != us && id != 0 => {
                return Some("users named in its ACL");
            }
            GROUP_OBJ | GROUP if readable && mask & READ != 0 => return Some("its group"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            out.extend(tag.to_le_bytes());
            out.extend(perm.to_le_bytes());
            out.extend(id.to_le_bytes());
        }
        out
    }

    const UNDEFINED: u32 = u32::MAX;

    #[test]
    fn acls_readable_by_others_are_refused() {
        // What systemd's LoadCredential= writes: root-owned 0400 plus `user:<service>:r`.
        let credential = acl(&[
            (0x01, 4, UNDEFINED),
            (0x02, 4, 990),
            (0x04, 0, UNDEFINED),
            (0x10, 4, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        assert_eq!(acl_other_readers(&credential, 990), None);
        // The same file seen by another user of the machine.
        assert_eq!(
            acl_other_readers(&credential, 991),
            Some("users named in its ACL")
        );
        // A named group that may read.
        let group = acl(&[
            (0x01, 6, UNDEFINED),
            (0x04, 0, UNDEFINED),
            (0x08, 4, 100),
            (0x10, 4, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        assert_eq!(acl_other_readers(&group, 990), Some("its group"));
        // ... unless the mask takes the read permission away.
        let masked = acl(&[
            (0x01, 6, UNDEFINED),
            (0x04, 4, UNDEFINED),
            (0x08, 4, 100),
            (0x10, 0, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        assert_eq!(acl_other_readers(&masked, 990), None);
        let other = acl(&[(0x01, 6, UNDEFINED), (0x20, 4, UNDEFINED)]);
        assert_eq!(acl_other_readers(&other, 990), Some("other users"));
        // Truncated or unknown formats are refused.
        assert!(acl_other_readers(&[2, 0, 0, 0, 1], 990).is_some());
        assert!(acl_other_readers(&[3, 0, 0, 0], 990).is_some());
    }

    fn file_with_mode(dir: &std::path::Path, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn group_or_other_readable_files_are_refused() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o620] {
            let got = read_secret_file(&file_with_mode(dir.path(), mode));
            assert_eq!(got.unwrap().expose_secret(), "s3cr3t", "{mode:o}");
        }
        for (mode, who) in [
            (0o640, "its group"),
            (0o604, "other users"),
            (0o644, "other users"),
        ] {
            let err = read_secret_file(&file_with_mode(dir.path(), mode)).unwrap_err();
            assert!(
                matches!(err, SecretError::WorldReadable { who: w, .. } if w == who),
                "{mode:o}: {err}"
            );
        }
        let err = read_secret_file(dir.path()).unwrap_err();
        assert!(matches!(err, SecretError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn files_owned_by_another_user_are_refused() {
        let us = rustix::process::geteuid().as_raw();
        if us != 0 {
            // Only root can give a file away; the check itself is the same for every user.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_mode(dir.path(), 0o600);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = read_secret_file(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::ForeignOwner { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}
