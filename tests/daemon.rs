//! The daemon end to end against the real OpenBao: rotations on schedule, crash safety (SIGKILL
//! between the KV write and its record), one catch-up after downtime, graceful SIGTERM, the CLI
//! sharing the job lock, `status --json`, and `/metrics` accepted by `promtool check metrics`.

mod common;

use std::time::Duration;

use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{unique, wait_until};

fn api_key_job(name: &str, path: &str, every: &str) -> String {
    format!(
        r#"[[job]]
name = "{name}"
kind = "api-key"
path = "{path}"
every = "{every}"
format = "hex:24"
"#
    )
}

async fn version_stays(vault: &RootVault, path: &str, version: u64, for_: Duration) {
    let deadline = std::time::Instant::now() + for_;
    while std::time::Instant::now() < deadline {
        assert_eq!(
            vault.current_version(path).await,
            version,
            "{path} changed unexpectedly"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_every_interval_with_metadata_and_readable_history() {
    let vault = RootVault::new();
    let prefix = unique("rot");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("k1", &path, "3s"));
    let mut d = cfg.start(&[]);
    d.ready().await;

    wait_until(Duration::from_secs(12), "three versions", || async {
        vault.current_version(&path).await >= 3
    })
    .await;
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", d.log());

    let last = vault.current_version(&path).await;
    let mut values = Vec::new();
    for v in 1..=last {
        let kv = vault
            .kv_get_version(&path, Some(v))
            .await
            .expect("version readable");
        assert_eq!(kv.version, v);
        let key = kv.data["api_key"].as_str().expect("api_key").to_string();
        assert_eq!(key.len(), 48, "hex:24 is 48 hex digits");
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        values.push(key);
    }
    record_canaries(values.iter().map(String::as_str));
    let mut distinct = values.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        values.len(),
        "every rotation writes a new value"
    );

    let md = vault.kv_metadata(&path).await.expect("metadata");
    assert_eq!(md["custom_metadata"]["rotated_by"], "vault-steward");
    assert_eq!(md["custom_metadata"]["rotation_job"], "k1");
    let at = md["custom_metadata"]["rotated_at"]
        .as_str()
        .expect("rotated_at");
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");

    for v in &values {
        assert!(!d.log().contains(v.as_str()), "a key leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_secret_is_adopted_not_rotated_and_status_shows_next_due() {
    let vault = RootVault::new();
    let prefix = unique("fresh");
    let path = format!("secret/{prefix}/api-key");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "hand-written-fresh-value-1", "owner": "team-a" }),
        )
        .await;
    record_canaries(["hand-written-fresh-value-1"]);
    let created = vault.kv_get(&path).await.expect("seeded").created_time;
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("fresh", &path, "30d"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the first run", || async {
        d.metrics().await.contains(
            r#"vault_steward_job_runs_total{job="fresh",kind="api-key",outcome="success"} 1"#,
        )
    })
    .await;
    assert_eq!(
        vault.current_version(&path).await,
        1,
        "a fresh secret is not rotated"
    );

    let metrics = d.metrics().await;
    let next = metric_value(
        &metrics,
        r#"vault_steward_job_next_run_timestamp_seconds{job="fresh",kind="api-key"}"#,
    );
    let expected = (created + chrono::Duration::days(30)).timestamp() as f64;
    assert!(
        (next - expected).abs() < 2.0,
        "next run {next} vs {expected}"
    );
    let age = metric_value(&metrics, r#"vault_steward_secret_age_seconds{job="fresh"}"#);
    assert!((0.0..120.0).contains(&age), "age {age}");

    let (st, out, err) = cfg.cli(&["status", "--json"]);
    assert!(st.success(), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let row = &rows[0];
    assert_eq!(row["job"], "fresh");
    assert_eq!(row["state"], "ok");
    assert_eq!(row["secret_version"], 1);
    let next_due = chrono::DateTime::parse_from_rfc3339(row["next_due"].as_str().unwrap()).unwrap();
    assert!((next_due.timestamp() - expected as i64).abs() <= 2);

    // `rotate` while the daemon runs: shares the lock, rotates at once, keeps other fields.
    let (st, out, err) = cfg.cli(&["rotate", "fresh"]);
    assert!(st.success(), "rotate: {out}{err}");
    let kv = vault.kv_get(&path).await.unwrap();
    assert_eq!(kv.version, 2);
    assert_eq!(kv.data["owner"], "team-a");
    record_canaries([kv.data["api_key"].as_str().unwrap()]);
    // A dry run changes nothing.
    let (st, out, _) = cfg.cli(&["rotate", "fresh", "--dry-run"]);
    assert!(st.success());
    assert!(out.contains("would write"), "{out}");
    assert_eq!(vault.current_version(&path).await, 2);
    d.terminate(Duration::from_secs(15)).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_write_and_record_the_restart_does_not_rotate_again() {
    let vault = RootVault::new();
    let prefix = unique("crash");
    let path = format!("secret/{prefix}/api-key");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "old-value-before-crash" }),
        )
        .await;
    record_canaries(["old-value-before-crash"]);
    let token = vault.scoped_token(&prefix).await;
    // Due at once (`every` is shorter than the secret's age by the time the daemon starts).
    let cfg = DaemonConfig::new(&token, &api_key_job("crash", &path, "1s"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut d = cfg.start(&[("VAULT_STEWARD_FAILPOINT", "api-key-after-write")]);
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "the failpoint aborts the process");
    assert_eq!(
        vault.current_version(&path).await,
        2,
        "the write happened before the crash"
    );

    // Restart with a long interval: the fresh version 2 (KV truth) is adopted, not rotated again.
    std::fs::write(
        cfg.dir.path().join("jobs/test.toml"),
        api_key_job("crash", &path, "1h"),
    )
    .unwrap();
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the resumed run", || async {
        d.metrics().await.contains(
            r#"vault_steward_job_runs_total{job="crash",kind="api-key",outcome="success"} 1"#,
        )
    })
    .await;
    version_stays(&vault, &path, 2, Duration::from_secs(2)).await;
    assert!(
        d.log().contains("interrupted"),
        "the crashed run is recorded as interrupted"
    );
    let kv = vault.kv_get(&path).await.unwrap();
    record_canaries([kv.data["api_key"].as_str().unwrap()]);
    d.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_while_due_then_restart_rotates_exactly_once() {
    let vault = RootVault::new();
    let prefix = unique("kill");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("kill", &path, "3s"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the first version", || async {
        vault.current_version(&path).await == 1
    })
    .await;
    d.kill9();
    // Down for more than three intervals: the job is due (many times over) while down.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(vault.current_version(&path).await, 1);
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "the catch-up rotation", || async {
        vault.current_version(&path).await >= 2
    })
    .await;
    // Exactly one catch-up: nothing more until a full interval has passed.
    version_stays(&vault, &path, 2, Duration::from_millis(2200)).await;
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    for v in 1..=vault.current_version(&path).await {
        let kv = vault.kv_get_version(&path, Some(v)).await.unwrap();
        record_canaries([kv.data["api_key"].as_str().unwrap()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_health_endpoints_answer() {
    let vault = RootVault::new();
    let prefix = unique("metrics");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("m1", &path, "30d"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(10), "a run", || async {
        d.metrics().await.contains(r#"outcome="success"} 1"#)
    })
    .await;
    let text = d.metrics().await;
    for name in [
        "vault_steward_job_last_success_timestamp_seconds{",
        "vault_steward_job_last_run_timestamp_seconds{",
        "vault_steward_job_next_run_timestamp_seconds{",
        r#"vault_steward_job_runs_total{job="m1",kind="api-key",outcome="failure"} 0"#,
        "vault_steward_job_duration_seconds_bucket{",
        "vault_steward_job_consecutive_failures{",
        "vault_steward_secret_age_seconds{",
        "vault_steward_build_info{",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let promtool = common::env("VS_TEST_PROMTOOL_BIN");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rc={:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let health = reqwest::get(d.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let kv = vault.kv_get(&path).await.unwrap();
    record_canaries([kv.data["api_key"].as_str().unwrap()]);
    d.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_write_fails_the_run_with_a_clear_error_and_retries() {
    let vault = RootVault::new();
    let prefix = unique("denied");
    let path = format!("secret/{prefix}/api-key");
    let policy = unique("readonly");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}"#
            ),
        )
        .await;
    let token = vault.create_token(&[&policy], "1h").await;
    let cfg = DaemonConfig::new(&token, &api_key_job("denied", &path, "30d"));
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(15), "two failed runs", || async {
        d.metrics().await.contains(
            r#"vault_steward_job_runs_total{job="denied",kind="api-key",outcome="failure"} 2"#,
        )
    })
    .await;
    assert_eq!(vault.current_version(&path).await, 0, "nothing written");
    let (st, out, _) = cfg.cli(&["status", "--json"]);
    assert!(st.success());
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let err = rows[0]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("permission denied"), "last_error: {err}");
    assert!(rows[0]["consecutive_failures"].as_u64().unwrap() >= 2);
    d.terminate(Duration::from_secs(15)).await;
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn tells_systemd_ready_watchdog_and_stopping() {
    let vault = RootVault::new();
    let prefix = unique("notify");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(
        &token,
        &api_key_job("n1", &format!("secret/{prefix}/api-key"), "30d"),
    );
    let sock_path = cfg.dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    let sock_str = sock_path.to_str().unwrap().to_string();
    let mut d = cfg.start(&[
        ("NOTIFY_SOCKET", sock_str.as_str()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", &mut seen).await;
    recv_until(&sock, "WATCHDOG=1", &mut seen).await;
    let pid = d.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    recv_until(&sock, "STOPPING=1", &mut seen).await;
    let status = d.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    let kv = vault
        .kv_get(&format!("secret/{prefix}/api-key"))
        .await
        .unwrap();
    record_canaries([kv.data["api_key"].as_str().unwrap()]);
}

/// Reads sd_notify datagrams until one has the line `want`.
async fn recv_until(sock: &tokio::net::UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = vec![0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = sock.recv(&mut buf).await.expect("recv");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {want} from the daemon; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_sqlite_file_exits_2_naming_it() {
    let vault = RootVault::new();
    let prefix = unique("twice");
    let token = vault.scoped_token(&prefix).await;
    let job = api_key_job("t1", &format!("secret/{prefix}/api-key"), "30d");
    let first = DaemonConfig::new(&token, &job);
    let mut d1 = first.start(&[]);
    d1.ready().await;
    let second = DaemonConfig::new(&token, &job);
    let text = std::fs::read_to_string(second.path()).unwrap().replace(
        second.state_db().to_str().unwrap(),
        first.state_db().to_str().unwrap(),
    );
    std::fs::write(second.path(), text).unwrap();
    let mut d2 = second.start(&[]);
    let status = d2.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(2), "{}", d2.log());
    assert!(
        d2.log().contains(first.state_db().to_str().unwrap()),
        "the message names the file: {}",
        d2.log()
    );
    // The first one is unharmed.
    assert_eq!(reqwest::get(d1.url("/readyz")).await.unwrap().status(), 200);
    d1.terminate(Duration::from_secs(15)).await;
    if let Some(kv) = vault.kv_get(&format!("secret/{prefix}/api-key")).await {
        record_canaries([kv.data["api_key"].as_str().unwrap()]);
    }
}

/// The lock row of a `rotate` killed mid-run names the real host, also where `/proc/sys` is
/// hidden as under the shipped unit's `ProcSubset=pid` (a private procfs mounted with
/// `subset=pid` in a mount namespace of its own, when this test may create one).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn lock_holder_names_the_real_host_where_proc_sys_is_hidden() {
    let vault = RootVault::new();
    let prefix = unique("ident");
    let path = format!("secret/{prefix}/api-key");
    let token = vault.scoped_token(&prefix).await;
    let cfg = DaemonConfig::new(&token, &api_key_job("ident", &path, "1h"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let hidden_proc_sys = std::process::Command::new("unshare")
        .args(["--mount", "--fork", "sh", "-c"])
        .arg("mount -t proc -o subset=pid proc /proc && ! test -e /proc/sys/kernel/hostname")
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if hidden_proc_sys {
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--fork", "sh", "-c"])
            .arg(r#"mount -t proc -o subset=pid proc /proc && exec "$@""#)
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_vault-steward"));
        c
    } else {
        eprintln!("cannot mount a subset=pid procfs here: checking with /proc/sys visible");
        std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
    };
    let out = cmd
        .arg("--config")
        .arg(cfg.path())
        .args(["rotate", "ident"])
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env("VAULT_STEWARD_FAILPOINT", "api-key-after-write")
        .output()
        .expect("run vault-steward");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the failpoint aborts the run: {stderr}"
    );
    let kv = vault.kv_get(&path).await.unwrap();
    record_canaries([kv.data["api_key"].as_str().unwrap()]);

    let url = format!("sqlite://{}", cfg.state_db().display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let (holder,): (String,) = sqlx::query_as("SELECT holder FROM job_locks WHERE job = 'ident'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        holder.starts_with(&format!("{host}:")),
        "the holder {holder:?} does not name the host {host:?}"
    );
    // host, boot id, pid namespace, pid, start time, nonce.
    assert_eq!(holder.split(':').count(), 6, "{holder}");
    let nonce = holder.rsplit(':').next().unwrap();
    assert!(
        nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{holder}"
    );
}
