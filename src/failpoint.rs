//! Fault injection for crash-safety tests: with the `failpoints` cargo feature, the process
//! aborts at the step named by `VAULT_STEWARD_FAILPOINT`. Without the feature (normal builds)
//! [`hit`] compiles to nothing.
//!
//! [`pause`] lets a test act at an exact step instead (e.g. write a secret by hand between the
//! rotation's read and its write): with `VAULT_STEWARD_FAILPOINT=NAME:pause` the run creates
//! `$VAULT_STEWARD_FAILPOINT_DIR/NAME.reached` and waits until the test creates
//! `NAME.resume` there. With `NAME:sleep=SECS` it sleeps that long instead (no files): the rest
//! of the process — its leader lease renewal too — keeps running meanwhile, so an HA test that
//! needs another instance to take over should pause and SIGSTOP the process instead.

/// Aborts the process if the failpoint `name` is armed.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("VAULT_STEWARD_FAILPOINT").as_deref() == Ok(name) {
        eprintln!("vault-steward: failpoint {name} hit; aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Waits at the step `name` while a test acts, if `NAME:pause` (or `NAME:sleep=SECS`) is armed
/// (see the module docs).
#[inline]
pub async fn pause(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Ok(armed) = std::env::var("VAULT_STEWARD_FAILPOINT")
        && let Some(secs) = armed
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(":sleep="))
            .and_then(|secs| secs.parse::<u64>().ok())
    {
        eprintln!("vault-steward: failpoint {name} reached; sleeping {secs}s");
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
        return;
    }
    #[cfg(feature = "failpoints")]
    if std::env::var("VAULT_STEWARD_FAILPOINT").as_deref() == Ok(&format!("{name}:pause"))
        && let Ok(dir) = std::env::var("VAULT_STEWARD_FAILPOINT_DIR")
    {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
        eprintln!("vault-steward: failpoint {name} reached; pausing");
        while !dir.join(format!("{name}.resume")).exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
