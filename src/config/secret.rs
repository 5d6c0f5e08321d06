//! Where a secret setting's value comes from: a file (checked for permissions) or an environment
//! variable. The value is read on demand, straight into a [`SecretString`], and never stored in the
//! config structs.

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
    #[error("secret file {path} is readable by other users (mode {mode:o}); chmod o-rwx it")]
    WorldReadable { path: PathBuf, mode: u32 },
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

/// Reads a secret file, refusing one that other users can read.
pub fn read_secret_file(path: &std::path::Path) -> Result<SecretString, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(SecretError::WorldReadable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(value.to_string()))
}
