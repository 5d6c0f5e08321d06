//! Fault injection for crash-safety tests: with the `failpoints` cargo feature, the process
//! aborts at the step named by `VAULT_STEWARD_FAILPOINT`. Without the feature (normal builds)
//! [`hit`] compiles to nothing.

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
