//! `scripts/demo.sh` does what the README promises: on servers of its own (its own testbed dir and
//! ports, beside this run's testbed), with the binary under test, it shows within two minutes an
//! API-key rotation, a PostgreSQL password rotation, a raft snapshot landing in S3 and an alert
//! email; and SIGINT to the script stops the daemon and every server it started.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{free_port, log_dir, record_canaries, repo_path};
use common::sinks::read_maildir;
use common::{s3, unique};

/// What the demo must show in its output, each a fragment of one daemon log line.
const SHOWN: [(&str, &str); 4] = [
    (
        "an API-key rotation",
        r#"run finished job="default-api-key" kind="api-key" outcome=success detail=rotated secret/api-key/default"#,
    ),
    (
        "a database rotation",
        r#"run finished job="orders-db" kind="postgres" outcome=success detail=rotated orders_app"#,
    ),
    (
        "a snapshot in S3",
        r#"run finished job="vault-snapshots" kind="raft-snapshot" outcome=success detail=published snapshot"#,
    ),
    (
        "an alert email",
        r#"notification sent sink="demo-mail" alert=KeyTooOld job=llm-openai"#,
    ),
];

/// The demo script, running; on drop (a failed test) it is stopped and its testbed taken down.
struct Demo {
    child: Child,
    out: PathBuf,
    testbed: PathBuf,
    ports: Vec<(&'static str, u16)>,
    /// Set once the test saw the script stop everything itself.
    stopped: bool,
}

impl Demo {
    fn start(config_dir: &Path) -> Demo {
        let testbed = std::env::temp_dir().join(unique("vs-demo-testbed"));
        let ports = vec![
            ("VS_TESTBED_BAO_PORT", free_port()),
            ("VS_TESTBED_BAO_CLUSTER_PORT", free_port()),
            ("VS_TESTBED_S3_PORT", free_port()),
            ("VS_TESTBED_SMTP_PORT", free_port()),
            ("VS_TESTBED_PG_PORT", free_port()),
            ("VS_DEMO_HTTP_PORT", free_port()),
        ];
        let out = log_dir().join(format!("{}.log", unique("demo")));
        let file = std::fs::File::create(&out).expect("demo output file");
        let mut cmd = Command::new(repo_path("scripts/demo.sh"));
        cmd.env("VS_DEMO_BIN", env!("CARGO_BIN_EXE_vault-steward"))
            .env("VS_DEMO_DIR", config_dir)
            .env("VS_TESTBED_DIR", &testbed)
            .envs(ports.iter().map(|(k, v)| (k, v.to_string())))
            // The run's own testbed and Vault must not leak into the demo.
            .env_remove("VS_TESTBED_LOCK_FD")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_STEWARD_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("output fd"))
            .stderr(file);
        let child = cmd.spawn().expect("start scripts/demo.sh");
        Demo {
            child,
            out,
            testbed,
            ports,
            stopped: false,
        }
    }

    /// The output so far, without colours.
    fn output(&self) -> String {
        let mut raw = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut raw);
        }
        strip_ansi(&raw)
    }

    fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, p)| *p)
            .expect("port")
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} demo.sh");
    }

    /// Waits up to `within` for the script to exit.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.stopped {
            let _ = std::fs::remove_dir_all(&self.testbed);
            return;
        }
        if let Ok(None) = self.child.try_wait() {
            self.signal("TERM");
            if self.wait_exit(Duration::from_secs(60)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Whatever happened to the script, its servers go (by their recorded PIDs); their logs
        // stay in the testbed dir for a post-mortem.
        let _ = Command::new(repo_path("scripts/testbed.sh"))
            .arg("down")
            .env("VS_TESTBED_DIR", &self.testbed)
            .env_remove("VS_TESTBED_LOCK_FD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// PIDs of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_rotations_a_snapshot_and_an_email_and_stops_cleanly() {
    vault_steward::vault::install_crypto_provider();
    let config = tempfile::tempdir().expect("tempdir");
    let config_dir = config.path().join("config");
    let mut demo = Demo::start(&config_dir);

    let started = Instant::now();
    let missing = |out: &str| -> Vec<&str> {
        SHOWN
            .iter()
            .filter(|(_, line)| !out.contains(line))
            .map(|(what, _)| *what)
            .collect()
    };
    loop {
        let out = demo.output();
        if missing(&out).is_empty() {
            break;
        }
        if let Some(status) = demo.child.try_wait().expect("try_wait") {
            panic!("demo.sh exited early with {status}:\n{out}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "after 120s the demo has not shown {:?}:\n{out}",
            missing(&out)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("the demo showed everything in {:?}", started.elapsed());
    let out = demo.output();

    // Secrets the demo made: the canary scan looks for them in this output and in every log.
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let secret_id = read(config_dir.join("secret-id"));
    let root_token = read(demo.testbed.join("bao/root-token"));
    let identity = read(config_dir.join("age-identity.txt"));
    let age_key = identity
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("the demo's age identity");
    record_canaries([secret_id.trim(), root_token.trim(), age_key]);
    let bao = format!("http://127.0.0.1:{}", demo.port("VS_TESTBED_BAO_PORT"));
    for path in ["api-key/default", "service/billing/credentials"] {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{bao}/v1/secret/data/{path}"))
            .header("X-Vault-Token", root_token.trim())
            .send()
            .await
            .expect("read the demo's key")
            .json()
            .await
            .expect("KV answer");
        let key = body["data"]["data"]["api_key"].as_str().expect("api_key");
        record_canaries([key]);
    }

    // The state behind the log lines: the snapshot object in the demo's S3 and the mail in its
    // SMTP server's Maildir; and the demo told the newcomer where to look for them.
    let endpoint = format!("http://127.0.0.1:{}", demo.port("VS_TESTBED_S3_PORT"));
    let client = s3::client_for(&endpoint).await;
    let keys = s3::keys(&client, "vault-steward-demo", "vault/demo/").await;
    assert!(
        keys.iter().any(|k| k.ends_with(".snap.age")),
        "no snapshot in the demo's bucket: {keys:?}"
    );
    let mails = read_maildir(&demo.testbed.join("maildir"));
    assert!(
        mails
            .iter()
            .any(|m| m.subject() == "[FIRING] KeyTooOld job=llm-openai"),
        "no KeyTooOld mail: {:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    for hint in [
        "vault-steward status",
        "backups list vault-snapshots",
        "s3 ls --recursive s3://vault-steward-demo/",
        "maildir/new",
    ] {
        assert!(out.contains(hint), "the demo does not point at `{hint}`");
    }

    // Ctrl-C, as the script's only signal: the daemon, then every server, stops.
    demo.signal("INT");
    let status = demo
        .wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("demo.sh still runs 90s after SIGINT:\n{}", demo.output()));
    assert_eq!(status.code(), Some(130), "{}", demo.output());
    let out = demo.output();
    assert!(
        out.contains("SIGTERM: shutting down") && out.contains("vault-steward stopped"),
        "the daemon was not stopped cleanly:\n{out}"
    );
    for (name, port) in &demo.ports {
        assert!(
            !port_open(*port),
            "{name} {port} is still open after SIGINT"
        );
    }
    for needle in [config_dir.to_string_lossy(), demo.testbed.to_string_lossy()] {
        let left = processes_mentioning(&needle);
        assert!(left.is_empty(), "still running after SIGINT: {left:?}");
    }
    demo.stopped = true;
}
