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
    let mut warnings = Vec::new();

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
    warnings.extend(sorted(ctx.warnings));

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
                // Files a job names (a database's `ca_cert`, `client_key`).
                for check in std::mem::take(&mut ctx.file_checks) {
                    if let Some(e) = run_file_check(&check) {
                        ctx.errors.push(e);
                    }
                }
                errors.extend(sorted(ctx.errors));
                warnings.extend(sorted(ctx.warnings));
            }
        }
    }

    errors.extend(super::jobs::shared_snapshot_destinations(&jobs));
    errors.extend(validate::pending_path_clashes(&jobs));
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
        warnings,
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
            message: syntax_message(src, e),
        })
        .collect();
    found.dedup();
    errors.extend(sorted(found));
    None
}

fn syntax_message(src: &SourceFile, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    // The parser does not name the duplicated key; its span does.
    let key = e
        .span()
        .and_then(|s| src.text.get(s))
        .filter(|k| !k.is_empty() && message == "duplicate key");
    match key {
        Some(k) => format!("TOML syntax error: duplicate key `{k}`"),
        None => format!("TOML syntax error: {message}"),
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::{JobSpec, VaultAuth, secret::SecretSource};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn messages(e: &ConfigErrors) -> Vec<String> {
        e.0.iter().map(ToString::to_string).collect()
    }

    fn write(path: &Path, text: &str) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    fn secret(path: &Path, mode: u32) {
        write(path, "s3cr3t-value\n");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const STEWARD: &str = "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"approle\"\nrole_id_file = \"role-id\"\nsecret_id_file = \"secret-id\"\n";

    /// A valid steward.toml with its secret files; returns it and the jobs directory's path.
    fn steward_with_secrets() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        write(&path, STEWARD);
        secret(&dir.path().join("role-id"), 0o600);
        secret(&dir.path().join("secret-id"), 0o600);
        let jobs = dir.path().join("jobs");
        (dir, path, jobs)
    }

    #[test]
    fn the_examples_in_the_repo_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let env = |k: &str| match k {
            "VAULT_ROLE_ID" | "VAULT_SECRET_ID" => Some("from-env".to_string()),
            _ => None,
        };
        let cfg = load_with_env(&root.join("config/steward.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.vault.address, "https://vault.example.com:8200");
        assert!(matches!(
            &cfg.vault.auth,
            VaultAuth::AppRole {
                role_id: SecretSource::Env { .. },
                ..
            }
        ));
        assert_eq!(cfg.jobs_dir, root.join("config/../jobs"));
        assert_eq!(cfg.alerts.email.len(), 1);
        assert_eq!(cfg.alerts.webhook.len(), 1);
        // One example file per kind, each kind present.
        for kind in JobSpec::KINDS {
            assert!(
                cfg.jobs.iter().any(|j| j.kind() == kind),
                "no example for {kind}"
            );
            let file = root.join("config/../jobs").join(format!("{kind}.toml"));
            assert!(
                cfg.jobs
                    .iter()
                    .any(|j| j.location.file == file && j.kind() == kind),
                "{} should hold the {kind} examples",
                file.display()
            );
        }
        // Files in name order, jobs in file order.
        let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names[..2], ["api-key-default", "billing-service-key"]);
        assert_eq!(names.last(), Some(&"vault-health"));
    }

    #[test]
    fn secret_files_must_exist_and_not_be_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        write(&path, STEWARD);
        write(
            &dir.path().join("jobs/a.toml"),
            "[[job]]\nname = \"h\"\nkind = \"vault-health\"\n",
        );
        secret(&dir.path().join("role-id"), 0o644);
        let errors = load_with_env(&path, &no_env).unwrap_err();
        let p = path.display();
        assert_eq!(
            messages(&errors),
            [
                format!(
                    "{p}:5:16: `role_id_file`: secret file {}/role-id is readable by other users (mode 644); chmod 600 it",
                    dir.path().display()
                ),
                format!(
                    "{p}:6:18: `secret_id_file`: secret file {}/secret-id: No such file or directory (os error 2)",
                    dir.path().display()
                ),
            ]
        );
        // Group-readable is refused too: the group may hold other users.
        secret(&dir.path().join("role-id"), 0o640);
        secret(&dir.path().join("secret-id"), 0o400);
        let errors = load_with_env(&path, &no_env).unwrap_err();
        assert_eq!(
            messages(&errors),
            [format!(
                "{p}:5:16: `role_id_file`: secret file {}/role-id is readable by its group (mode 640); chmod 600 it",
                dir.path().display()
            )]
        );
        secret(&dir.path().join("role-id"), 0o600);
        let cfg = load_with_env(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.jobs.len(), 1);
        assert_eq!(cfg.path, path);
    }

    #[test]
    fn a_missing_jobs_dir_is_reported_at_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        write(&path, &format!("{STEWARD}[jobs]\ndir = \"nope\"\n"));
        secret(&dir.path().join("role-id"), 0o600);
        secret(&dir.path().join("secret-id"), 0o600);
        let errors = load_with_env(&path, &no_env).unwrap_err();
        let m = messages(&errors);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with(&format!(
                "{}:8:7: cannot read the jobs directory {}/nope: ",
                path.display(),
                dir.path().display()
            )),
            "{m:?}"
        );
    }

    #[test]
    fn job_files_are_read_in_name_order_and_a_broken_one_does_not_hide_the_others() {
        let (_dir, path, jobs) = steward_with_secrets();
        write(
            &jobs.join("b.toml"),
            "[[job]]\nname = \"b\"\nkind = \"vault-health\"\n",
        );
        write(
            &jobs.join("a.toml"),
            "[[job]]\nname = \"a\"\nkind = \"vault-health\"\n",
        );
        write(&jobs.join(".#a.toml"), "garbage = = =");
        write(&jobs.join("notes.txt"), "garbage = = =");
        std::fs::create_dir_all(jobs.join("sub.toml")).unwrap();
        let cfg = load_with_env(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);

        write(
            &jobs.join("a.toml"),
            "[[job]]\nname = \"a\nkind = \"vault-health\"\n",
        );
        write(
            &jobs.join("c.toml"),
            "[[job]]\nname = \"c\"\nkind = \"nope\"\n",
        );
        let errors = load_with_env(&path, &no_env).unwrap_err();
        let m = messages(&errors);
        let a = jobs.join("a.toml");
        let c = jobs.join("c.toml");
        assert!(m[0].starts_with(&format!("{}:2:", a.display())), "{m:?}");
        assert!(m[0].contains("TOML syntax error"), "{m:?}");
        assert_eq!(
            m.last().map(String::as_str),
            Some(format!("{}:3:8: unknown kind `nope`; expected one of: api-key, postgres, mysql, approle-secret-id, reminder, raft-snapshot, vault-health", c.display()).as_str())
        );
    }

    #[test]
    fn two_snapshot_jobs_in_one_place_are_refused() {
        let (_dir, path, jobs) = steward_with_secrets();
        let snap = |name: &str, s3: &str, local: &str| {
            format!(
                "[[job]]\nname = \"{name}\"\nkind = \"raft-snapshot\"\n\
                 recipients = [\"age1mf7cn497d8dja0why0wsn8x3hpjrlw8zqwc75a6nhqnkq2danmvsrn9wws\"]\n\
                 [job.s3]\nbucket = \"b\"\n{s3}\n[job.local]\ndir = \"{local}\"\n"
            )
        };
        write(&jobs.join("a.toml"), &snap("a", "prefix = \"p\"", "snaps"));
        // Other places: a sub-folder, another store, another directory.
        write(
            &jobs.join("b.toml"),
            &[
                snap("b1", "prefix = \"p/q\"", "snaps/q"),
                snap(
                    "b2",
                    "prefix = \"p\"\nendpoint = \"http://127.0.0.1:9000\"",
                    "other",
                ),
            ]
            .concat(),
        );
        let cfg = load_with_env(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.jobs.len(), 3);

        // The same places, written differently.
        write(
            &jobs.join("c.toml"),
            &[
                snap("c1", "prefix = \"p/\"", "./snaps/"),
                snap(
                    "c2",
                    "prefix = \"p\"\nendpoint = \"http://127.0.0.1:9000/\"",
                    "x",
                ),
            ]
            .concat(),
        );
        let errors = load_with_env(&path, &no_env).unwrap_err();
        let (a, b, c) = (
            jobs.join("a.toml"),
            jobs.join("b.toml"),
            jobs.join("c.toml"),
        );
        let end = "the two would take each other's names and prune each other's snapshots; \
                   give one of them its own `prefix` or `dir`";
        assert_eq!(
            messages(&errors),
            [
                format!(
                    "{c}:1:1: job `c1` writes its snapshots to s3://b/p, as job `a` at {a}:1:1 does: {end}",
                    c = c.display(),
                    a = a.display()
                ),
                format!(
                    "{c}:1:1: job `c1` writes its snapshots to the directory {}/snaps, as job `a` at {a}:1:1 does: {end}",
                    jobs.display(),
                    c = c.display(),
                    a = a.display()
                ),
                format!(
                    "{c}:10:1: job `c2` writes its snapshots to s3://b/p (endpoint http://127.0.0.1:9000), as job `b2` at {b}:10:1 does: {end}",
                    c = c.display(),
                    b = b.display()
                ),
            ]
        );
    }

    #[test]
    fn unreadable_and_non_utf8_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let m = messages(&load_with_env(&missing, &no_env).unwrap_err());
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with(&format!("{}:1:1: cannot read ", missing.display())),
            "{m:?}"
        );

        let path = dir.path().join("latin1.toml");
        std::fs::write(&path, b"# ok\n# caf\xe9\n").unwrap();
        let m = messages(&load_with_env(&path, &no_env).unwrap_err());
        assert_eq!(
            m,
            [format!(
                "{}:2:6: the file is not valid UTF-8",
                path.display()
            )]
        );
    }

    #[test]
    fn syntax_errors_are_all_reported_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.toml");
        write(&path, "[vault]\naddress = \"x\nfoo = = 3\n");
        let m = messages(&load_with_env(&path, &no_env).unwrap_err());
        assert!(m.len() >= 2, "{m:?}");
        assert!(m[0].starts_with(&format!("{}:2:", path.display())), "{m:?}");
        assert!(m.iter().all(|e| e.contains("TOML syntax error")), "{m:?}");
        write(&path, "[vault]\naddress = \"x\"\n\n[vault]\n");
        let m = messages(&load_with_env(&path, &no_env).unwrap_err());
        assert_eq!(
            m,
            [format!(
                "{}:4:2: TOML syntax error: duplicate key `vault`",
                path.display()
            )]
        );
    }
}
