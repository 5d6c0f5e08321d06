//! The runbook, run: every command in the code blocks of docs/operations.md is executed, in the
//! order written, against a real setup — a fresh OpenBao of the test's own (raft, KV v2, AppRole;
//! its own so that the restore cannot disturb other tests), moto S3, an SMTP server and a webhook
//! receiver — and each is checked to do what the text around it says. Only site-specific values
//! are swapped: `/etc/vault-steward` for a temp dir, `/root/backup-key.txt` for a fresh age
//! identity, the AppRole's `10.0.0.0/8` for loopback, and the system directories of the install
//! step for a scratch root (`systemd-sysusers --root`, `systemd-tmpfiles --root`). `vault` is the
//! OpenBao CLI (`bao`, same syntax); `systemctl enable --now vault-steward` starts `vault-steward
//! run` on the same config. A command added to the runbook without a check here fails the test.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::bao::FreshBao;
use common::daemon::{Daemon, DaemonConfig, record_canaries, repo_path};
use common::sinks::{HookReceiver, Mode, SmtpServer, wait_count};
use common::{env, s3, unique};
use serde_json::{Value, json};

const RUNBOOK: &str = "docs/operations.md";

/// The commands of the runbook's fenced code blocks, `\`-continued lines joined.
fn fenced_commands(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let command = std::mem::take(&mut pending);
        if !command.is_empty() && !command.starts_with('#') {
            commands.push(command);
        }
    }
    commands
}

/// The inline `vault kv …` commands of the prose (the revocation procedure).
fn inline_kv_commands(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("vault kv ") && !span.contains('…'))
        .map(str::to_string)
        .collect()
}

/// Everything a step needs: where things are, and what they are called.
struct Site {
    /// Stands in for /etc/vault-steward: steward.toml, jobs/, role-id, secret-id, drill.toml.
    cfg: DaemonConfig,
    /// Stands in for `/` in the install step.
    root: tempfile::TempDir,
    /// `vault` (→ bao) and `vault-steward` on PATH.
    bin: tempfile::TempDir,
    identity: PathBuf,
    bao: FreshBao,
    drill: FreshBao,
}

impl Site {
    fn etc(&self) -> String {
        self.cfg.dir.path().display().to_string()
    }

    /// The command with the site's own paths in place of the runbook's.
    fn localise(&self, command: &str) -> String {
        let root = self.root.path().display();
        let mut c = command
            .replace("/etc/vault-steward", &self.etc())
            .replace("/root/backup-key.txt", &self.identity.display().to_string())
            .replace(
                "token_bound_cidrs=10.0.0.0/8",
                "token_bound_cidrs=127.0.0.1/32",
            );
        if c.starts_with("install ") {
            c = c
                .replace(" /usr/lib/", &format!(" {root}/usr/lib/"))
                .replace(" /etc/systemd/", &format!(" {root}/etc/systemd/"));
        }
        if c.starts_with("systemd-sysusers") {
            c = c
                .replace(
                    "systemd-sysusers",
                    &format!("systemd-sysusers --root={root}"),
                )
                .replace(
                    "systemd-tmpfiles --create",
                    &format!("systemd-tmpfiles --root={root} --create"),
                );
        }
        c
    }

    /// Runs a (localised) command line with bash in the source tree, as an operator would.
    fn sh(&self, line: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", line])
            .current_dir(repo_path("."))
            .env("PATH", path)
            .env("BAO_ADDR", &self.bao.addr)
            .env("BAO_TOKEN", &self.bao.root_token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env("VAULT_STEWARD_LOG", "info")
            .output()
            .expect("bash");
        let text = format!(
            "$ {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        common::daemon::append_log(&format!("{}-runbook", self.cfg.name), &text);
        out
    }

    async fn kv_version(&self, path: &str) -> u64 {
        let (status, body) = self
            .bao
            .call(
                reqwest::Method::GET,
                &format!("secret/metadata/{path}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["current_version"].as_u64().expect("version")
    }

    async fn kv_value(&self, bao: &FreshBao, path: &str) -> String {
        let (status, body) = bao
            .kv_get(&format!("secret/{path}"), &self.bao.root_token)
            .await;
        assert_eq!(status, 200, "{body}");
        body["api_key"].as_str().expect("api_key").to_string()
    }
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runbook_command_does_what_the_runbook_says() {
    let text = std::fs::read_to_string(repo_path(RUNBOOK)).expect("runbook");
    let commands = fenced_commands(&text);
    assert!(commands.len() >= 20, "only {} commands", commands.len());

    // ---- the site ---------------------------------------------------------------------------
    let bao = FreshBao::start().await;
    for (path, body) in [
        (
            "sys/mounts/secret",
            json!({ "type": "kv", "options": { "version": "2" } }),
        ),
        ("sys/auth/approle", json!({ "type": "approle" })),
    ] {
        let (status, answer) = bao
            .call(reqwest::Method::POST, path, Some(body), None)
            .await;
        assert!(status == 204 || status == 200, "{path}: {status} {answer}");
    }
    let seed = format!("runbook-seed-{}", unique("key"));
    record_canaries([seed.as_str()]);
    let (status, answer) = bao
        .call(
            reqwest::Method::POST,
            "secret/data/api-key/default",
            Some(json!({ "data": { "api_key": seed } })),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    let keys_dir = tempfile::tempdir().expect("tempdir");
    let identity = keys_dir.path().join("backup-key.txt");
    let recipient = common::age_identity(&identity);
    let s3c = s3::client().await;
    let bucket = s3::bucket(&s3c).await;
    let prefix = unique("runbook");
    let local = tempfile::tempdir().expect("tempdir");
    let smtp_port = common::daemon::free_port();
    let smtp = SmtpServer::plain(smtp_port).await;
    let hook = HookReceiver::start(Mode::Status(200)).await;

    // The runbook's example jobs by name (jobs/api-key.toml, jobs/raft-snapshot.toml), pointed at
    // this site's S3 and directory.
    let jobs = format!(
        r#"[[job]]
name = "api-key-default"
kind = "api-key"
path = "secret/api-key/default"
every = "30d"
format = "hex:24"
window = "0 * 9-16 * * 1-5"

[[job]]
name = "vault-snapshots"
kind = "raft-snapshot"
schedule = "0 0 * * * *"
retain = "48h"
min_keep = 3
recipients = ["{recipient}"]
[job.s3]
bucket = "{bucket}"
prefix = "{prefix}"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
[job.local]
dir = "{local}"
"#,
        endpoint = env("VS_TEST_S3_ENDPOINT"),
        local = local.path().display(),
    );
    // The AppRole files are placeholders until the runbook's own commands write them.
    let cfg = DaemonConfig::approle("placeholder", "placeholder", &jobs);
    let steward = std::fs::read_to_string(cfg.path())
        .expect("steward.toml")
        .replace(
            &format!("address = \"{}\"", env("VS_TEST_VAULT_ADDR")),
            &format!("address = \"{}\"", bao.addr),
        );
    let alerts = format!(
        r#"
[[alerts.email]]
name = "oncall-mail"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "vault-steward <vault-steward@example.com>"
to = ["oncall@example.com"]

[[alerts.webhook]]
name = "oncall-hook"
url = "{hook}"
"#,
        hook = hook.url("/oncall"),
    );
    std::fs::write(cfg.path(), format!("{steward}{alerts}")).expect("steward.toml");

    // The drill config: a copy of steward.toml pointed at a throwaway cluster, logging in with
    // that cluster's root token (the daemon's own policy may not restore).
    let drill = FreshBao::start().await;
    let drill_token = common::secret_file(cfg.dir.path(), "drill-token", &drill.root_token);
    let drill_toml = std::fs::read_to_string(cfg.path())
        .expect("steward.toml")
        .replace(&bao.addr, &drill.addr);
    let drill_toml = replace_auth(
        &drill_toml,
        &format!(
            "method = \"token\"\ntoken_file = \"{}\"\n",
            drill_token.display()
        ),
    );
    std::fs::write(cfg.dir.path().join("drill.toml"), drill_toml).expect("drill.toml");

    let bin = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(env("VS_TEST_BAO_BIN"), bin.path().join("vault")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_vault-steward"),
        bin.path().join("vault-steward"),
    )
    .unwrap();
    let root = tempfile::tempdir().expect("tempdir");
    for d in [
        "usr/lib/sysusers.d",
        "usr/lib/tmpfiles.d",
        "etc/systemd/system",
    ] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    let site = Site {
        cfg,
        root,
        bin,
        identity,
        bao,
        drill,
    };

    // ---- the runbook, in order --------------------------------------------------------------
    let mut daemon: Option<Daemon> = None;
    let mut checked = BTreeSet::new();
    let mut rotated_value = String::new();
    for command in &commands {
        let line = site.localise(command);
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["install", ..] => {
                ok(&site.sh(&line), command);
                let target = words.last().unwrap().replacen('/', "", 1);
                let installed = site.root.path().join(target);
                assert!(installed.is_file(), "{command}: nothing at {installed:?}");
            }
            ["systemd-sysusers", ..] => {
                ok(&site.sh(&line), command);
                let passwd = std::fs::read_to_string(site.root.path().join("etc/passwd"))
                    .expect("passwd under the root");
                assert!(
                    passwd
                        .lines()
                        .any(|l| l.starts_with("vault-steward:")
                            && l.contains("/var/lib/vault-steward")),
                    "{command}: no vault-steward user:\n{passwd}"
                );
                let etc = site.root.path().join("etc/vault-steward");
                let mode = std::fs::metadata(&etc)
                    .expect("etc dir")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o750, "{command}: {etc:?}");
                assert!(site.root.path().join("etc/vault-steward/jobs").is_dir());
            }
            ["vault", "policy", "write", name, file] => {
                ok(&site.sh(&line), command);
                let (status, body) = site
                    .bao
                    .call(
                        reqwest::Method::GET,
                        &format!("sys/policies/acl/{name}"),
                        None,
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                let shipped = std::fs::read_to_string(repo_path(file)).unwrap();
                assert_eq!(body["data"]["policy"].as_str(), Some(shipped.as_str()));
            }
            ["vault", "write", "auth/approle/role/vault-steward", ..] => {
                ok(&site.sh(&line), command);
                let (status, body) = site
                    .bao
                    .call(
                        reqwest::Method::GET,
                        "auth/approle/role/vault-steward",
                        None,
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["data"]["token_policies"], json!(["vault-steward"]));
                assert_eq!(body["data"]["token_ttl"], json!(3600));
            }
            ["vault", "read", ..] | ["vault", "write", "-f", ..] => {
                ok(&site.sh(&line), command);
                let file = line.rsplit("> ").next().unwrap().trim();
                let value = std::fs::read_to_string(file).expect(file);
                assert!(
                    value.trim().len() >= 36 && !value.contains("placeholder"),
                    "{command}: {file} holds no id"
                );
                record_canaries([value.trim()]);
            }
            ["chmod", "0600", ..] => {
                ok(&site.sh(&line), command);
                for f in ["role-id", "secret-id"] {
                    let mode = std::fs::metadata(site.cfg.dir.path().join(f))
                        .unwrap()
                        .permissions()
                        .mode();
                    assert_eq!(mode & 0o777, 0o600, "{f}");
                }
            }
            ["systemctl", "enable", "--now", "vault-steward"] => {
                let mut d = site.cfg.start(&[]);
                d.ready().await;
                daemon = Some(d);
            }
            ["vault-steward", "--config", _, rest @ ..] => {
                let out = site.sh(&line);
                let stdout = ok(&out, command);
                match rest {
                    ["check"] => {}
                    ["check", "--connect"] | ["plan"] | ["status"] => {
                        for job in ["api-key-default", "vault-snapshots"] {
                            assert!(stdout.contains(job), "{command}: no {job}:\n{stdout}");
                        }
                        if rest == ["status"] {
                            assert!(daemon.is_some(), "status comes after the start");
                        }
                    }
                    ["rotate", "api-key-default", "--dry-run"] => {
                        assert_eq!(site.kv_version("api-key/default").await, 1, "dry run");
                        assert_eq!(site.kv_value(&site.bao, "api-key/default").await, seed);
                    }
                    ["rotate", "api-key-default"] => {
                        assert_eq!(site.kv_version("api-key/default").await, 2);
                        rotated_value = site.kv_value(&site.bao, "api-key/default").await;
                        record_canaries([rotated_value.as_str()]);
                        assert_ne!(rotated_value, seed);
                        assert_eq!(rotated_value.len(), 48, "hex:24");
                    }
                    ["snapshot", "vault-snapshots"] => {
                        let keys = s3::keys(&s3c, &bucket, &prefix).await;
                        let snaps = keys.iter().filter(|k| k.ends_with(".snap.age")).count();
                        assert_eq!(snaps, 1, "{keys:?}");
                        assert_eq!(keys.len(), 2, "a snapshot and its manifest: {keys:?}");
                        assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 2);
                    }
                    ["backups", "list", "vault-snapshots"] => {
                        let keys = s3::keys(&s3c, &bucket, &prefix).await;
                        let snap = keys.iter().find(|k| k.ends_with(".snap.age")).unwrap();
                        let name = snap.rsplit('/').next().unwrap();
                        assert!(stdout.contains(name), "{command}: no {name}:\n{stdout}");
                    }
                    ["backups", "list", "vault-snapshots", "--json"] => {
                        let v: Value = serde_json::from_str(&stdout)
                            .unwrap_or_else(|e| panic!("{command}: {e}:\n{stdout}"));
                        let text = v.to_string();
                        assert!(text.contains(".snap.age"), "{text}");
                    }
                    [
                        "backups",
                        "verify",
                        "vault-snapshots",
                        "--latest",
                        "--identity",
                        _,
                    ] => {}
                    [
                        "restore",
                        "vault-snapshots",
                        "--latest",
                        "--identity",
                        _,
                        "--force",
                    ] => {
                        assert!(command.contains("drill.toml"), "{command}");
                        // The restored cluster seals itself; the original cluster's key opens
                        // it, and the original's secrets (and root token) are there.
                        let key = site.bao.unseal_key.clone();
                        site.drill.reseal_and_unseal_with(&key).await;
                        assert_eq!(
                            site.kv_value(&site.drill, "api-key/default").await,
                            rotated_value,
                            "the drill cluster holds the snapshot's secrets"
                        );
                    }
                    ["alerts", "test"] => {
                        wait_count(Duration::from_secs(15), "the test mail", 1, || {
                            smtp.mails().len()
                        })
                        .await;
                        assert!(
                            hook.requests().iter().any(|r| r.path == "/oncall"),
                            "the test webhook"
                        );
                    }
                    other => panic!("{RUNBOOK}: no check for `vault-steward {other:?}`"),
                }
            }
            _ => panic!("{RUNBOOK}: no step for `{command}`: add a check to tests/runbook.rs"),
        }
        checked.insert(words.iter().take(4).copied().collect::<Vec<_>>().join(" "));
    }

    // ---- the revocation procedure's inline commands --------------------------------------------
    let inline = inline_kv_commands(&text);
    assert!(
        inline.iter().any(|c| c.contains("kv destroy")),
        "{inline:?}"
    );
    for command in &inline {
        let line = site.localise(&command.replace("-versions=N", "-versions=1"));
        let stdout = ok(&site.sh(&line), command);
        if command.contains("kv metadata get") {
            assert!(stdout.contains("current_version"), "{stdout}");
        }
    }
    let (_, meta) = site
        .bao
        .call(
            reqwest::Method::GET,
            "secret/metadata/api-key/default",
            None,
            None,
        )
        .await;
    assert_eq!(
        meta["data"]["versions"]["1"]["destroyed"], true,
        "the leaked version is destroyed: {meta}"
    );
    assert_eq!(
        site.kv_value(&site.bao, "api-key/default").await,
        rotated_value
    );

    // The daemon ran through it all (rotate and snapshot took its job locks) and still runs.
    let mut d = daemon.expect("the runbook starts the service");
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
    assert!(d.metrics().await.contains("vault_steward_build_info"));
    let status = d.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(checked.len() >= 15, "{checked:?}");
}

/// `text` with its `[vault.auth]` table's body replaced by `auth`.
fn replace_auth(text: &str, auth: &str) -> String {
    let start = text.find("[vault.auth]\n").expect("[vault.auth]") + "[vault.auth]\n".len();
    let end = start + text[start..].find("\n[").expect("next table") + 1;
    format!("{}{auth}{}", &text[..start], &text[end..])
}
