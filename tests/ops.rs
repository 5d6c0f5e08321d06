//! What operators run beside the binary, checked with the real tools: the systemd unit
//! (`systemd-analyze verify` and `security`), the Prometheus alert rules (`promtool check rules`
//! and `promtool test rules`), and a real Prometheus server scraping a running daemon.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{DaemonConfig, free_port, record_canaries, repo_path};
use common::vault::RootVault;
use common::{unique, wait_until};

/// The unit as installed: ExecStart pointing at a real binary (the one this test run built).
fn installed_unit(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(repo_path("systemd/vault-steward.service")).unwrap();
    let unit = unit.replace(
        "/usr/bin/vault-steward",
        env!("CARGO_BIN_EXE_vault-steward"),
    );
    let path = dir.join("vault-steward.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installed_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "verify printed warnings:\n{stderr}"
    );
}

/// The values of every `KEY=` line of the unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn systemd_unit_forbids_core_dumps() {
    let unit = std::fs::read_to_string(repo_path("systemd/vault-steward.service")).unwrap();
    assert_eq!(unit_values(&unit, "LimitCORE"), ["0"], "{unit}");
}

/// Under `ProtectSystem=strict` every directory a job writes must be in `ReadWritePaths=`: the
/// example jobs' `[job.local] dir` must be writable under the shipped unit.
#[test]
fn systemd_unit_lets_the_example_jobs_write_their_local_snapshots() {
    let unit = std::fs::read_to_string(repo_path("systemd/vault-steward.service")).unwrap();
    assert!(unit.lines().any(|l| l.trim() == "ProtectSystem=strict"));
    let writable: Vec<String> = unit_values(&unit, "ReadWritePaths")
        .into_iter()
        .map(|p| p.trim_start_matches('-').trim_end_matches('/').to_string())
        .collect();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(repo_path("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let doc: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        for job in doc
            .get("job")
            .and_then(|j| j.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(dir) = job
                .get("local")
                .and_then(|l| l.get("dir"))
                .and_then(|d| d.as_str())
            {
                dirs.push(dir.to_string());
            }
        }
    }
    assert!(!dirs.is_empty(), "no example job writes local snapshots");
    for dir in dirs {
        assert!(
            writable
                .iter()
                .any(|w| dir == *w || dir.starts_with(&format!("{w}/"))),
            "{dir} is not in ReadWritePaths= {writable:?}"
        );
    }
}

#[test]
fn systemd_unit_is_hardened_to_2_or_lower() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installed_unit(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in\n{stdout}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::env("VS_TEST_PROMTOOL_BIN"))
        .args(args)
        .current_dir(repo_path("config/prometheus"))
        .output()
        .expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_rules_check_and_their_unit_tests_pass() {
    let (ok, out) = promtool(&["check", "rules", "vault-steward.rules.yml"]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "vault-steward.rules.test.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_daemon() {
    let vault = RootVault::new();
    let prefix = unique("prom");
    let path = format!("secret/{prefix}/api-key");
    let policy = unique("steward");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}"#
            ),
        )
        .await;
    let token = vault.create_token(&[&policy], "1h").await;
    let cfg = DaemonConfig::new(
        &token,
        &format!(
            "[[job]]\nname = \"prom\"\nkind = \"api-key\"\npath = \"{path}\"\nevery = \"30d\"\n"
        ),
    );
    let mut d = cfg.start(&[]);
    d.ready().await;

    // The shipped scrape config, pointed at this daemon and scraping every second.
    let dir = tempfile::tempdir().unwrap();
    let scrape = std::fs::read_to_string(repo_path("config/prometheus/scrape.yml"))
        .unwrap()
        .replace(
            "vault-steward.example.com:9464",
            &format!("127.0.0.1:{}", d.http_port),
        )
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace(
            "  - vault-steward.rules.yml",
            &format!(
                "  - {}",
                repo_path("config/prometheus/vault-steward.rules.yml").display()
            ),
        );
    std::fs::write(dir.path().join("prometheus.yml"), scrape).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let query = |q: &'static str| {
        let api = api.clone();
        async move {
            let url = url::Url::parse_with_params(&api, &[("query", q)]).ok()?;
            let resp = reqwest::get(url).await.ok()?;
            let body: serde_json::Value = resp.json().await.ok()?;
            body["data"]["result"].as_array().cloned()
        }
    };
    let result = async {
        wait_until(
            Duration::from_secs(60),
            "Prometheus to see up == 1",
            || async {
                query(r#"up{job="vault-steward"} == 1"#)
                    .await
                    .is_some_and(|r| r.len() == 1)
            },
        )
        .await;
        wait_until(Duration::from_secs(60), "the job's last success in Prometheus", || async {
            query(r#"vault_steward_job_last_success_timestamp_seconds{job="prom",kind="api-key"} > 0"#)
                .await
                .is_some_and(|r| r.len() == 1)
        })
        .await;
    };
    tokio::time::timeout(Duration::from_secs(150), result)
        .await
        .ok();
    let up = query(r#"up{job="vault-steward"}"#)
        .await
        .unwrap_or_default();
    let last = query(r#"vault_steward_job_last_success_timestamp_seconds{job="prom"}"#)
        .await
        .unwrap_or_default();
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(
        up.len(),
        1,
        "up: {up:?}\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    assert_eq!(up[0]["value"][1], "1");
    assert_eq!(last.len(), 1, "last success: {last:?}");
    let ts: f64 = last[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(ts > 1.7e9, "{ts}");
    d.terminate(Duration::from_secs(15)).await;
    if let Some(kv) = vault.kv_get(&path).await {
        record_canaries([kv.data["api_key"].as_str().unwrap()]);
    }
}
