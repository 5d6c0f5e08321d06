//! The operator docs cannot drift from the binary: every `vault-steward …` command written in
//! README.md and docs/operations.md names a subcommand that exists, and each `--flag` it uses is
//! one that subcommand accepts (checked against its real `--help`); and every repository file
//! they name (the Vault policy, scripts, example configs) exists.

mod common;

use std::process::Command;

use common::daemon::repo_path;

/// Every `vault-steward` command line in the fenced code blocks of `file`.
fn documented_commands(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_path(file)).unwrap();
    let mut in_code = false;
    let mut commands = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.starts_with("vault-steward ") {
            commands.push(line.to_string());
        }
    }
    commands
}

/// The subcommand words and flags of a documented command line.
fn parse(command: &str) -> (Vec<String>, Vec<String>) {
    let mut words = command.split_whitespace().skip(1).peekable();
    let mut sub = Vec::new();
    let mut flags = Vec::new();
    while let Some(w) = words.next() {
        if w == "--config" {
            words.next();
            continue;
        }
        if let Some(flag) = w.strip_prefix("--") {
            flags.push(format!("--{}", flag.split('=').next().unwrap_or(flag)));
        } else if flags.is_empty()
            && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            && sub.len() < 2
        {
            sub.push(w.to_string());
        }
    }
    (sub, flags)
}

fn help(sub: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vault-steward"))
        .args(sub)
        .arg("--help")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_documented_command_and_flag_exists() {
    let mut checked = 0;
    for file in ["README.md", "docs/operations.md"] {
        for command in documented_commands(file) {
            let (mut sub, flags) = parse(&command);
            // Positional arguments (job names, keys) follow the subcommand words: drop words
            // until `--help` on what is left succeeds as a subcommand path.
            let (ok, text) = loop {
                let (ok, text) = help(&sub);
                if ok
                    && !text.contains("error:")
                    && (sub.len() < 2
                        || text.contains(&format!("Usage: vault-steward {}", sub.join(" "))))
                {
                    break (true, text);
                }
                if sub.pop().is_none() {
                    break (false, text);
                }
            };
            assert!(
                ok && !sub.is_empty(),
                "{file}: `{command}`: no such subcommand"
            );
            for flag in &flags {
                assert!(
                    text.contains(flag.as_str()),
                    "{file}: `{command}`: `{}` has no {flag}:\n{text}",
                    sub.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} documented commands found");
}

/// Repository files the operator docs name (`config/vault/vault-steward-policy.hcl`,
/// `scripts/demo.sh`, …): paths that start at the repository root, not globs.
fn named_files(text: &str) -> Vec<String> {
    const ROOTS: [&str; 9] = [
        "config/",
        "jobs/",
        "scripts/",
        "systemd/",
        "docs/",
        "bench/",
        "tests/",
        "migrations/",
        "src/",
    ];
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (i, _) in text.char_indices() {
        // Part of a longer path (/etc/systemd/…, ../shared/docs/…) or of a word: not ours.
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"/._-".contains(&bytes[i - 1])) {
            continue;
        }
        if !ROOTS.iter().any(|r| text[i..].starts_with(r)) {
            continue;
        }
        let len = text[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-*".contains(c)))
            .unwrap_or(text.len() - i);
        let path = text[i..i + len].trim_end_matches('.');
        let is_file = path
            .rsplit('/')
            .next()
            .is_some_and(|name| name.contains('.') && !name.contains('*'));
        if is_file {
            found.push(path.to_string());
        }
    }
    found
}

#[test]
fn every_file_the_docs_name_exists() {
    let mut checked = 0;
    for file in ["README.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(repo_path(file)).unwrap();
        for path in named_files(&text) {
            assert!(
                repo_path(&path).is_file(),
                "{file} names {path}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(
        named_files("see `config/vault/vault-steward-policy.hcl`, /etc/systemd/system/x.service")
            == ["config/vault/vault-steward-policy.hcl"]
    );
    assert!(checked >= 10, "only {checked} named files found");
}
