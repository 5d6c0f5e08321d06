//! Real receivers for alert tests, each started by the test that needs it on a loopback port of
//! its own and stopped when dropped: an HTTP webhook receiver that records every request (and
//! can answer 500 or hang), aiosmtpd to a Maildir (plain, or STARTTLS with AUTH and a test CA),
//! and Alertmanager (Debian's `prometheus-alertmanager`) with a webhook receiver of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::daemon::{free_port, log_dir};
use super::{env, unique, wait_until};

/// One request a [`HookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Hook {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How a [`HookReceiver`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Status(u16),
    /// Never answers (the connection stays open).
    Hang,
}

type Shared = Arc<Mutex<(Vec<Hook>, Mode)>>;

/// An HTTP server on 127.0.0.1 that records every request.
pub struct HookReceiver {
    pub addr: std::net::SocketAddr,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    pub async fn start(mode: Mode) -> HookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let state: Shared = Arc::new(Mutex::new((Vec::new(), mode)));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HookReceiver { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Hook> {
        self.state.lock().unwrap().0.clone()
    }

    /// The JSON bodies of requests to `path`.
    pub fn bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|h| h.path == path)
            .map(Hook::json)
            .collect()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().1 = mode;
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    axum::extract::State(state): axum::extract::State<Shared>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mode = {
        let mut s = state.lock().unwrap();
        s.0.push(Hook {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        s.1
    };
    match mode {
        Mode::Ok => (axum::http::StatusCode::OK, "{\"status\":\"success\"}").into_response(),
        Mode::Status(code) => (
            axum::http::StatusCode::from_u16(code).unwrap(),
            "receiver says no",
        )
            .into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            axum::http::StatusCode::OK.into_response()
        }
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str) -> Proc {
        let log = log_dir().join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).expect("proc log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child, log }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One mail in a Maildir.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Header names in lower case, folded lines joined.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Mail {
    pub fn subject(&self) -> &str {
        self.headers
            .get("subject")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Every mail in `maildir` (new/ and cur/), oldest file first.
pub fn read_maildir(maildir: &Path) -> Vec<Mail> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(maildir.join(sub)) {
            for e in rd.flatten() {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((modified, e.path()));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
        .map(|text| parse_mail(&text))
        .collect()
}

fn parse_mail(text: &str) -> Mail {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| headers.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            headers.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    Mail {
        headers,
        body: body.to_string(),
    }
}

/// An aiosmtpd of the test's own, writing to a Maildir.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Plain SMTP on `port`.
    pub async fn plain(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let mut cmd = Command::new(env("VS_TEST_PYTHON"));
        cmd.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        Self::started(port, maildir, Proc::spawn(cmd, "aiosmtpd"), dir).await
    }

    /// SMTP on `port` that demands STARTTLS (with `cert`/`key`) and AUTH as `user` with the
    /// password in `password_file`.
    pub async fn starttls_auth(
        port: u16,
        cert: &Path,
        key: &Path,
        user: &str,
        password_file: &Path,
    ) -> SmtpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, STARTTLS_AUTH_SERVER).unwrap();
        let mut cmd = Command::new(env("VS_TEST_PYTHON"));
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(&maildir)
            .arg(cert)
            .arg(key)
            .arg(user)
            .arg(password_file);
        Self::started(port, maildir, Proc::spawn(cmd, "aiosmtpd-tls"), dir).await
    }

    async fn started(
        port: u16,
        maildir: PathBuf,
        mut proc: Proc,
        dir: tempfile::TempDir,
    ) -> SmtpServer {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !smtp_greets(port).await {
            assert!(proc.alive(), "aiosmtpd exited:\n{}", proc.log_text());
            assert!(
                Instant::now() < deadline,
                "aiosmtpd not ready:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpServer {
            port,
            maildir,
            proc,
            _dir: dir,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        read_maildir(&self.maildir)
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// Whether an SMTP server on `port` sends its 220 greeting.
pub async fn smtp_greets(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(n)) if n >= 3 && &buf[..3] == b"220"
    )
}

const STARTTLS_AUTH_SERVER: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, pwfile = sys.argv[1:7]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

def authenticate(server, session, envelope, mechanism, auth_data):
    # Read at each login, so a test can change it.
    password = open(pwfile).read().strip()
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False)

controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=int(port),
                        tls_context=ctx, require_starttls=True,
                        authenticator=authenticate, auth_required=True)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it (openssl CLI).
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=vault-steward test CA",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        std::fs::write(
            p("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        TestCa {
            ca_cert: p("ca.pem"),
            cert: p("leaf.pem"),
            key: p("leaf.key"),
            _dir: dir,
        }
    }
}

/// Alertmanager on loopback, routing every alert to one webhook receiver at once.
pub struct Alertmanager {
    pub url: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    pub async fn start(receiver_url: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"route:
  receiver: hook
  group_by: ['alertname', 'job']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: "{receiver_url}"
        send_resolved: true
"#
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env("VS_TEST_ALERTMANAGER_BIN"));
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Without this it joins a gossip cluster on 0.0.0.0:9094.
            .arg("--cluster.listen-address=");
        let mut proc = Proc::spawn(cmd, "alertmanager");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(http.get(&ready).send().await, Ok(r) if r.status().is_success()) {
                break;
            }
            assert!(proc.alive(), "alertmanager exited:\n{}", proc.log_text());
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Alertmanager {
            url,
            proc,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// Waits until `count()` reaches `n` (and fails the test after `timeout`).
pub async fn wait_count<F: FnMut() -> usize>(
    timeout: Duration,
    what: &str,
    n: usize,
    mut count: F,
) {
    wait_until(timeout, what, || {
        let c = count();
        async move { c >= n }
    })
    .await;
}
