//! Reading `steward.toml` and the job directory into a validated [`Config`].

use std::path::Path;

use super::{Config, ConfigErrors};

/// Loads and validates the config at `path`, with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// Loads and validates the config at `path`, reading environment overrides through `env`.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let _ = (path, env);
    todo!("config helper implements this")
}
