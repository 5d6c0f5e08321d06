//! Errors from talking to Vault. Messages name paths and status codes, never secret values.

/// What went wrong talking to Vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Connection refused, timeout, TLS handshake failure, 5xx, sealed/standby (503).
    #[error("vault unreachable: {0}")]
    Unreachable(String),
    /// Login failed or the token is not valid (and re-login did not help).
    #[error("vault authentication failed: {0}")]
    Auth(String),
    /// 403 on a path.
    #[error("permission denied on {path}")]
    PermissionDenied { path: String },
    /// The path is not inside a KV version 2 mount.
    #[error("{path} is not inside a KV v2 mount: {reason}")]
    NotKvV2 { path: String, reason: String },
    /// Check-and-set failed: someone else wrote a version in the meantime.
    #[error("check-and-set conflict on {path}: expected version {expected}")]
    CasMismatch { path: String, expected: u64 },
    /// Any other error answer from Vault.
    #[error("vault answered {status} on {path}: {message}")]
    Api {
        path: String,
        status: u16,
        message: String,
    },
    /// The local setup is wrong (bad CA file, bad address).
    #[error("vault client setup: {0}")]
    Setup(String),
}

impl VaultError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Unreachable(_) | VaultError::Auth(_) => true,
            VaultError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
