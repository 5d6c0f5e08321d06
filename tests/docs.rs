//! The operator docs cannot drift from the binary: every `vault-steward …` command written in
//! README.md and docs/operations.md names a subcommand that exists, and each `--flag` it uses is
//! one that subcommand accepts (checked against its real `--help`).

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
