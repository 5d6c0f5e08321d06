//! Reading `steward.toml` and the job directory into a validated [`Config`].
//!
//! This is the part of the config module that does I/O: it reads the files, lists the jobs
//! directory, and checks the files the config names (secret files must exist, be readable and not
//! be readable by other users; the CA bundle must be readable). Everything else is the pure
//! validation in `validate`. Relative paths resolve against the directory of the file that
//! names them, never against the working directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::source::{SourceFile, file_start};
use super::validate::{self, Ctx, FileCheck, JobScope};
use super::{Config, ConfigError, ConfigErrors, secret};

/// Loads and validates the config at `path`, with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// Loads and validates the config at `path`, reading environment overrides through `env`.
///
/// Every problem found is returned, each with its `FILE:LINE:COL`: all of `steward.toml`'s, then
/// those of every job file in name order (a job file with a syntax error is reported and skipped,
/// the others are still checked).
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();

    let src = read_source(path).map_err(|e| ConfigErrors(vec![e]))?;
    let Some(doc) = parse(&src, &mut errors) else {
        return Err(ConfigErrors(errors));
    };
    let mut ctx = Ctx::new(&src);
    let steward = validate::steward(&mut ctx, doc, env);
    let file_checks = std::mem::take(&mut ctx.file_checks);
    for check in &file_checks {
        if let Some(e) = run_file_check(check) {
            ctx.errors.push(e);
        }
    }
    errors.extend(sorted(ctx.errors));

    let jobs_dir_location = match &steward.jobs_dir_span {
        Some(span) => src.span_location(span),
        None => src.start(),
    };
    let mut jobs = Vec::new();
    match job_files(&steward.jobs_dir) {
        Err(e) => errors.push(ConfigError {
            location: jobs_dir_location,
            message: format!(
                "cannot read the jobs directory {}: {e}",
                steward.jobs_dir.display()
            ),
        }),
        Ok(files) => {
            let mut seen = HashMap::new();
            for file in files {
                let src = match read_source(&file) {
                    Ok(src) => src,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let Some(doc) = parse(&src, &mut errors) else {
                    continue;
                };
                let mut ctx = Ctx::new(&src);
                let mut scope = JobScope {
                    sink_names: steward.sink_names.as_ref(),
                    seen: &mut seen,
                };
                jobs.extend(validate::job_file(&mut ctx, doc, &mut scope));
                errors.extend(sorted(ctx.errors));
            }
        }
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        path: path.to_path_buf(),
        vault: steward.vault,
        state: steward.state,
        http: steward.http,
        jobs_dir: steward.jobs_dir,
        engine: steward.engine,
        alerts: steward.alerts,
        jobs,
    })
}

/// Reads a config file as UTF-8.
fn read_source(path: &Path) -> Result<SourceFile, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        location: file_start(path),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
        ConfigError {
            location: SourceFile::new(path, valid).location(offset),
            message: "the file is not valid UTF-8".into(),
        }
    })?;
    Ok(SourceFile::new(path, text))
}

/// Parses TOML, reporting every syntax error found; `None` when there was any.
fn parse<'s>(
    src: &'s SourceFile,
    errors: &mut Vec<ConfigError>,
) -> Option<toml::Spanned<DeTable<'s>>> {
    let (doc, syntax) = DeTable::parse_recoverable(&src.text);
    if syntax.is_empty() {
        return Some(doc);
    }
    let mut found: Vec<ConfigError> = syntax
        .iter()
        .map(|e| ConfigError {
            location: e
                .span()
                .map(|s| src.span_location(&s))
                .unwrap_or_else(|| src.start()),
            message: format!("TOML syntax error: {}", e.message().trim()),
        })
        .collect();
    found.dedup();
    errors.extend(sorted(found));
    None
}

/// Every `*.toml` file of the jobs directory, by name (hidden files are skipped: editors leave
/// them behind).
fn job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Follows symlinks, as configuration management tools like to use them.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn run_file_check(check: &FileCheck) -> Option<ConfigError> {
    let (location, message) = match check {
        FileCheck::Secret {
            key,
            path,
            location,
        } => {
            // Reads (and at once drops) the value: proves the daemon will be able to.
            let e = secret::read_secret_file(path).err()?;
            (location, format!("`{key}`: {e}"))
        }
        FileCheck::Readable {
            key,
            path,
            location,
        } => {
            let e = match std::fs::metadata(path) {
                Ok(m) if m.is_file() => std::fs::File::open(path).err()?.to_string(),
                Ok(_) => "not a regular file".to_string(),
                Err(e) => e.to_string(),
            };
            (
                location,
                format!("`{key}`: cannot read {}: {e}", path.display()),
            )
        }
    };
    Some(ConfigError {
        location: location.clone(),
        message,
    })
}

/// In file order.
fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|e| (e.location.line, e.location.col));
    errors
}
