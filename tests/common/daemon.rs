//! Running the real `vault-steward` binary in tests: a config in a temp dir (token auth with a
//! token the test made, SQLite state, HTTP on a free loopback port), its log collected under
//! `VS_TEST_LOG_DIR` for the canary scan, readiness awaited on `/readyz`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{unique, wait_until};

/// A loopback port that is free now, for a server a test starts next. It comes from 20000–31999,
/// below the kernel's ephemeral range (32768–60999 here): a port picked by binding port 0 lies
/// in that range, where any outgoing connection of a parallel test may take it as its source
/// port before the server binds it ("Address already in use"). Each test process starts at its
/// own place in the range and hands out each port once; ports in use are skipped.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        // RabbitMQ's distribution port, on this kind of machine.
        if port != 25_672 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// Where this run's logs and state files are collected for the canary scan.
pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(super::env("VS_TEST_LOG_DIR"));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// Records secret values the tests saw, so that the canary scan can look for them in every log.
pub fn record_canaries<'a>(values: impl IntoIterator<Item = &'a str>) {
    use std::io::Write;
    let path = log_dir().join("canaries.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("canary file");
    for v in values {
        assert!(!v.contains('\n'));
        writeln!(f, "{v}").expect("write canary");
    }
}

/// A config directory for one daemon: `steward.toml`, `jobs/`, the state file and the token.
pub struct DaemonConfig {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub http_port: u16,
}

impl DaemonConfig {
    /// Writes `steward.toml` (token auth reading `token`, SQLite state in the log dir so the canary
    /// scan sees it) and one job file with `jobs_toml`.
    pub fn new(token: &str, jobs_toml: &str) -> DaemonConfig {
        Self::with_extra(token, jobs_toml, "")
    }

    /// As [`DaemonConfig::new`], with extra `steward.toml` text appended (e.g. an `[engine]`).
    pub fn with_extra(token: &str, jobs_toml: &str, extra: &str) -> DaemonConfig {
        Self::build(Auth::Token(token), jobs_toml, extra)
    }

    /// A daemon that logs in with AppRole (`role_id`, `secret_id` written to 0600 files).
    pub fn approle(role_id: &str, secret_id: &str, jobs_toml: &str) -> DaemonConfig {
        Self::build(Auth::AppRole(role_id, secret_id), jobs_toml, "")
    }

    fn build(auth: Auth<'_>, jobs_toml: &str, extra: &str) -> DaemonConfig {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let name = unique("daemon");
        let http_port = free_port();
        let write_secret = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, value).expect("secret file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod secret file");
            path
        };
        let auth_toml = match auth {
            Auth::Token(token) => format!(
                "method = \"token\"\ntoken_file = \"{}\"",
                write_secret("token", token).display()
            ),
            Auth::AppRole(role_id, secret_id) => format!(
                "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"",
                write_secret("role-id", role_id).display(),
                write_secret("secret-id", secret_id).display()
            ),
        };
        let state = log_dir().join(format!("{name}.db"));
        std::fs::create_dir_all(dir.path().join("jobs")).expect("jobs dir");
        std::fs::write(dir.path().join("jobs/test.toml"), jobs_toml).expect("job file");
        let steward = format!(
            r#"[vault]
address = "{addr}"
[vault.auth]
{auth_toml}

[state]
url = "sqlite://{state}"

[http]
listen = "127.0.0.1:{http_port}"

[jobs]
dir = "jobs"

[engine]
retry_initial = "1s"
retry_max = "5s"
{extra}
"#,
            addr = super::env("VS_TEST_VAULT_ADDR"),
            state = state.display(),
        );
        std::fs::write(dir.path().join("steward.toml"), steward).expect("steward.toml");
        DaemonConfig {
            dir,
            name,
            http_port,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("steward.toml")
    }

    pub fn state_db(&self) -> PathBuf {
        log_dir().join(format!("{}.db", self.name))
    }

    /// Runs a CLI command against this config; returns (status, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        self.cli_env(args, &[])
    }

    /// As [`DaemonConfig::cli`], with extra environment variables (e.g. a failpoint).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_vault-steward"))
            .arg("--config")
            .arg(self.path())
            .args(args)
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_ADDR")
            .env("VAULT_STEWARD_LOG", "info")
            .envs(env.iter().copied())
            .output()
            .expect("run vault-steward");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        append_log(&format!("{}-cli", self.name), &stderr);
        (out.status, stdout, stderr)
    }

    /// Starts `vault-steward run`; `env` adds variables (e.g. a failpoint).
    pub fn start(&self, env: &[(&str, &str)]) -> Daemon {
        let log_path = log_dir().join(format!("{}-{}.log", self.name, unique("run")));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vault-steward"));
        cmd.arg("--config")
            .arg(self.path())
            .arg("run")
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_ADDR")
            .env("VAULT_STEWARD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vault-steward run");
        Daemon {
            child,
            log_path,
            http_port: self.http_port,
        }
    }
}

/// Appends `text` to the run's log `name.log` (read by the canary scan).
pub fn append_log(name: &str, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir().join(format!("{name}.log")))
    {
        let _ = f.write_all(text.as_bytes());
    }
}

enum Auth<'a> {
    Token(&'a str),
    AppRole(&'a str, &'a str),
}

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log_path: PathBuf,
    pub http_port: u16,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Waits until `/readyz` answers 200 (the store answers and Vault is authenticated).
    pub async fn ready(&mut self) {
        let url = self.url("/readyz");
        let http = reqwest::Client::new();
        let log = self.log_path.clone();
        let child = &mut self.child;
        wait_until(Duration::from_secs(30), "the daemon to be ready", || {
            let exited = child.try_wait().ok().flatten();
            if let Some(status) = exited {
                panic!(
                    "daemon exited early with {status}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let req = http.get(&url).send();
            async move { matches!(req.await, Ok(r) if r.status().is_success()) }
        })
        .await;
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `within` for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.wait_exit(within).await
    }

    /// Waits up to `within` for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path of a file relative to the crate root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
