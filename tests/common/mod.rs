//! The one test harness: points at the real local servers that `scripts/testbed.sh up` started
//! (their addresses come from the env file it writes, which `scripts/test.sh` sources), gives each
//! test its own names (KV prefix, DB role, bucket prefix) and waits on readiness instead of
//! sleeping.
//!
//! Environment contract (all set by `scripts/testbed.sh`'s env file):
//! - `VS_TEST_VAULT_ADDR`, `VS_TEST_VAULT_TOKEN_FILE` (root token), `VS_TEST_VAULT_UNSEAL_KEY_FILE`,
//!   `VS_TEST_BAO_BIN`
//! - `VS_TEST_PG_URL` — superuser URL (with password) of the private scram-sha-256 cluster
//! - `VS_TEST_S3_ENDPOINT`, `VS_TEST_SMTP_ADDR`, `VS_TEST_MAILDIR`
//! - `VS_TEST_LOG_DIR` — where daemon logs of the run are collected (for the canary scan)
//! - `VS_TEST_ALERTMANAGER_BIN`, `VS_TEST_PYTHON` (the testbed venv's, with aiosmtpd) — for
//!   tests that start their own Alertmanager or SMTP server

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reads a required testbed variable, failing the test with a clear message when it is missing.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the testbed env file)")
    })
}

/// A name unique to this test process and call, safe for KV paths, SQL identifiers and S3 keys.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// Polls `check` until it returns true or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub mod bao;
pub mod daemon;
pub mod db;
pub mod mariadb;
pub mod proxy;
pub mod s3;
pub mod sinks;
pub mod tls;
pub mod vault;

/// Writes `content` to `dir/name` with mode 0600 (replacing it atomically if it exists).
pub fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .expect("create secret file");
    file.write_all(content.as_bytes())
        .expect("write secret file");
    std::fs::rename(&tmp, &path).expect("rename secret file");
    path
}

/// A new age identity made by the real `age-keygen` at `file` (its secret key recorded as a
/// canary); returns the recipient (`age1…`).
pub fn age_identity(file: &Path) -> String {
    let keygen = Path::new(&env("VS_TEST_AGE_BIN")).with_file_name("age-keygen");
    let out = std::process::Command::new(keygen)
        .arg("-o")
        .arg(file)
        .output()
        .expect("age-keygen");
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = std::fs::read_to_string(file).expect("age identity");
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("secret key line");
    daemon::record_canaries([secret]);
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_string()
}
