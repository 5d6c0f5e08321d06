//! Issue 13 item 9, limits against hostile peers, with the real binary and the real OpenBao:
//! - the `/metrics` server under a flood of half-sent requests: a scrape still answers, the
//!   daemon holds no more than its connection cap, idle half-sent connections are closed after
//!   the header-read timeout, and SIGTERM exits within seconds while they are open;
//! - bodies from a hostile "Vault" and hostile webhook receivers that stream far more than any
//!   honest answer: the CLI fails with a clear error after reading at most about the limit;
//! - a PagerDuty error that echoes the routing key does not carry it into messages;
//! - raft snapshots go to the root namespace while `VAULT_NAMESPACE` is set.
//!
//! The hostile server is a small axum server in front of the real OpenBao: it forwards every
//! request, except those a test tells it to answer itself (with a huge streamed body), and
//! remembers which requests carried `X-Vault-Namespace`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{env, secret_file, unique, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the hostile server streams instead of an honest answer: far beyond any limit.
const HUGE: u64 = 256 * 1024 * 1024;
/// The most the client may have pulled before giving up: the 1 MiB limit plus socket buffers.
const PULLED_AT_MOST: u64 = 24 * 1024 * 1024;

const HEALTH_JOB: &str = "[[job]]\nname = \"health\"\nkind = \"vault-health\"\n";

// ---- a hostile HTTP server ---------------------------------------------------------------

#[derive(Clone)]
enum Answer {
    /// This status with a body of [`HUGE`] bytes starting with `prefix`, streamed.
    Huge { status: u16, prefix: &'static str },
    /// A PagerDuty-like 400 that quotes the routing key it was sent.
    EchoRoutingKey,
}

/// Requests seen: (path, `X-Vault-Namespace` header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone)]
struct HostileState {
    /// Real server to forward to (`None`: answer 404 to anything not in `answers`).
    real: Option<String>,
    /// Path prefix → answer.
    answers: Arc<Mutex<Vec<(String, Answer)>>>,
    /// Body bytes handed to the connection by the huge answers.
    streamed: Arc<AtomicU64>,
    /// Every request: (path, X-Vault-Namespace header).
    seen: Seen,
    http: reqwest::Client,
}

struct Hostile {
    url: String,
    state: HostileState,
}

impl Hostile {
    async fn start(real: Option<String>) -> Hostile {
        let state = HostileState {
            real,
            answers: Arc::new(Mutex::new(Vec::new())),
            streamed: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .fallback(hostile_handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hostile { url, state }
    }

    fn answer(&self, path_prefix: &str, answer: Answer) {
        self.state
            .answers
            .lock()
            .unwrap()
            .push((path_prefix.to_string(), answer));
    }

    fn streamed(&self) -> u64 {
        self.state.streamed.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn hostile_handle(
    axum::extract::State(st): axum::extract::State<HostileState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path().to_string();
    let namespace = req
        .headers()
        .get("x-vault-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    st.seen.lock().unwrap().push((path.clone(), namespace));
    let answer = st
        .answers
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .map(|(_, a)| a.clone());
    match answer {
        Some(Answer::Huge { status, prefix }) => {
            let streamed = st.streamed.clone();
            let chunk = bytes::Bytes::from(vec![b'a'; 64 * 1024]);
            let first = bytes::Bytes::from_static(prefix.as_bytes());
            let chunks = (HUGE as usize) / chunk.len();
            let stream = futures::stream::iter(
                std::iter::once(first).chain(std::iter::repeat_n(chunk, chunks)),
            )
            .map(move |c| {
                streamed.fetch_add(c.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(c)
            });
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Some(Answer::EchoRoutingKey) => {
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let key = sent["routing_key"].as_str().unwrap_or_default();
            (
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    r#"{{"status":"invalid event","message":"Event object is invalid","errors":["routing_key {key} is not a known integration"]}}"#
                ),
            )
                .into_response()
        }
        None => {
            let Some(real) = &st.real else {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            };
            let url = format!(
                "{real}{}",
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
            let mut out = st.http.request(method, url);
            for name in ["x-vault-token", "x-vault-namespace", "content-type"] {
                if let Some(v) = req.headers().get(name) {
                    out = out.header(name, v.as_bytes());
                }
            }
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let resp = out.body(body.to_vec()).send().await.unwrap();
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let stream = resp.bytes_stream();
            (
                status,
                [(axum::http::header::CONTENT_TYPE, ctype)],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

use futures::StreamExt;

/// Points the config's `[vault] address` somewhere else.
fn set_vault_address(cfg: &DaemonConfig, addr: &str) {
    let text = std::fs::read_to_string(cfg.path()).expect("steward.toml");
    let text = text.replace(
        &format!("address = \"{}\"", env("VS_TEST_VAULT_ADDR")),
        &format!("address = \"{addr}\""),
    );
    std::fs::write(cfg.path(), text).expect("steward.toml");
}

/// A raft-snapshot job writing to a local directory only.
fn snapshot_job(name: &str, recipient: &str, dir: &std::path::Path) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nkind = \"raft-snapshot\"\nrecipients = [\"{recipient}\"]\n[job.local]\ndir = \"{}\"\n",
        dir.display()
    )
}

/// A token that may only read raft snapshots.
async fn snapshot_token(vault: &RootVault) -> String {
    let policy = unique("snapshots");
    vault
        .put_policy(
            &policy,
            r#"path "sys/storage/raft/snapshot" { capabilities = ["read"] }"#,
        )
        .await;
    vault.create_token(&[&policy], "1h").await
}

// ---- the /metrics server -------------------------------------------------------------------

/// Opens `n` connections to the daemon's HTTP port, each sending the start of a request that
/// never ends (no blank line after the headers).
async fn half_sent(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .expect("half a request");
        out.push(s);
    }
    out
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close: keep reading to the end.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn scrape(port: u16) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((started.elapsed(), text))
}

/// A flood of half-sent requests: a scrape still answers at once, the daemon never holds more
/// connections than its cap (the rest wait in the kernel's backlog, costing it no descriptor),
/// and the half-sent ones are closed once the header-read timeout passes.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_are_capped_and_timed_out_and_scrapes_still_answer() {
    let vault = RootVault::new();
    let cfg = DaemonConfig::new(vault.root_token(), HEALTH_JOB);
    let mut d = cfg.start(&[]);
    d.ready().await;
    let pid = d.child.id();
    let baseline = open_fds(pid);

    let mut first = half_sent(d.http_port, 50).await;
    let (took, text) = scrape(d.http_port)
        .await
        .expect("a scrape beside 50 half-sent requests");
    assert!(took < Duration::from_secs(2), "the scrape took {took:?}");
    assert!(text.contains("vault_steward_"), "{text}");

    let _more = half_sent(d.http_port, 550).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_fds(pid).saturating_sub(baseline);
    assert!(
        held <= vault_steward::http::MAX_CONNECTIONS + 8,
        "the daemon holds {held} more descriptors with 600 half-sent requests open"
    );

    // The first ones were accepted at once; the header-read timeout closes them.
    let timeout = vault_steward::http::HEADER_READ_TIMEOUT;
    let started = Instant::now();
    for (i, s) in first.iter_mut().enumerate() {
        let left = (timeout + Duration::from_secs(5)).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left).await,
            "half-sent connection {i} still open {:?} after the header-read timeout of {timeout:?}",
            started.elapsed()
        );
    }
    // And the daemon is still there, answering once the flood has drained.
    wait_until(
        Duration::from_secs(60),
        "a scrape after the flood",
        || async { scrape(d.http_port).await.is_ok() },
    )
    .await;
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
}

/// SIGTERM while half-sent requests hold connections open: the daemon exits within seconds
/// (the HTTP shutdown is bounded), with status 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_promptly_while_half_sent_requests_are_open() {
    let vault = RootVault::new();
    let cfg = DaemonConfig::new(vault.root_token(), HEALTH_JOB);
    let mut d = cfg.start(&[]);
    d.ready().await;
    let _open = half_sent(d.http_port, 40).await;
    // A request whose headers are complete but whose body never comes.
    let mut body_pending = tokio::net::TcpStream::connect(("127.0.0.1", d.http_port))
        .await
        .unwrap();
    body_pending
        .write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = d.terminate(Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status}; log:\n{}", d.log());
    assert!(took < Duration::from_secs(6), "SIGTERM took {took:?}");
}

// ---- bodies from Vault ---------------------------------------------------------------------

/// A hostile Vault answers the snapshot request with an error whose body never ends: the
/// `snapshot` command fails, says the answer was too large, and read about the limit only.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_body_from_vault_is_not_read_whole() {
    let vault = RootVault::new();
    let hostile = Hostile::start(Some(env("VS_TEST_VAULT_ADDR"))).await;
    hostile.answer(
        "/v1/sys/storage/raft/snapshot",
        Answer::Huge {
            status: 500,
            prefix: r#"{"errors":[""#,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let recipient = common::age_identity(&dir.path().join("age.txt"));
    let out = tempfile::tempdir().unwrap();
    let token = snapshot_token(&vault).await;
    let cfg = DaemonConfig::new(&token, &snapshot_job("snap", &recipient, out.path()));
    set_vault_address(&cfg, &hostile.url);
    let started = Instant::now();
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("larger than 1024 KiB") || stdout.contains("larger than 1024 KiB"),
        "no clear error:\n{stdout}\n{stderr}"
    );
    let pulled = hostile.streamed();
    assert!(
        pulled < PULLED_AT_MOST,
        "the CLI pulled {pulled} bytes of a hostile error body"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A hostile Vault answers the mount lookup (a JSON read) with a body that never ends: the
/// rotation fails cleanly with a clear error, having read about the limit only.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_json_answer_from_vault_is_not_read_whole() {
    let vault = RootVault::new();
    let hostile = Hostile::start(Some(env("VS_TEST_VAULT_ADDR"))).await;
    hostile.answer(
        "/v1/sys/internal/ui/mounts/",
        Answer::Huge {
            status: 200,
            prefix: r#"{"data":{"path":""#,
        },
    );
    let prefix = unique("huge");
    let token = vault.scoped_token(&prefix).await;
    let jobs = format!(
        "[[job]]\nname = \"key\"\nkind = \"api-key\"\npath = \"secret/{prefix}/api-key\"\nevery = \"30d\"\n"
    );
    let cfg = DaemonConfig::new(&token, &jobs);
    set_vault_address(&cfg, &hostile.url);
    let (status, stdout, stderr) = cfg.cli(&["rotate", "key"]);
    assert!(!status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("larger than 1024 KiB") || stdout.contains("larger than 1024 KiB"),
        "no clear error:\n{stdout}\n{stderr}"
    );
    let pulled = hostile.streamed();
    assert!(
        pulled < PULLED_AT_MOST,
        "the CLI pulled {pulled} bytes of a hostile JSON answer"
    );
}

// ---- bodies from webhook receivers -----------------------------------------------------------

/// A webhook receiver that answers 500 with a body that never ends: `alerts test` reports the
/// failure (status and a short snippet) after reading only the start of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_webhook_error_body_is_not_read_whole() {
    let receiver = Hostile::start(None).await;
    receiver.answer(
        "/hook",
        Answer::Huge {
            status: 500,
            prefix: "upstream exploded: ",
        },
    );
    let vault = RootVault::new();
    let extra = format!(
        "[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}/hook\"\nformat = \"generic\"\n",
        receiver.url
    );
    let cfg = DaemonConfig::with_extra(vault.root_token(), HEALTH_JOB, &extra);
    let (status, stdout, stderr) = cfg.cli(&["alerts", "test"]);
    assert!(!status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(
        all.contains("500") && all.contains("upstream exploded"),
        "{all}"
    );
    let pulled = receiver.streamed();
    assert!(
        pulled < PULLED_AT_MOST,
        "alerts test pulled {pulled} bytes of a hostile error body"
    );
}

/// A PagerDuty endpoint (or a proxy before it) that quotes the routing key in its error: the
/// key appears nowhere in what the CLI prints or the state store keeps.
#[tokio::test(flavor = "multi_thread")]
async fn a_pagerduty_error_that_echoes_the_routing_key_is_scrubbed() {
    let receiver = Hostile::start(None).await;
    receiver.answer("/v2/enqueue", Answer::EchoRoutingKey);
    let dir = tempfile::tempdir().unwrap();
    let routing_key = format!("R0UT1NG{}", unique("k").replace('_', ""));
    record_canaries([routing_key.as_str()]);
    let rk_file = secret_file(dir.path(), "routing-key", &routing_key);
    let extra = format!(
        "[[alerts.webhook]]\nname = \"pager\"\nformat = \"pagerduty\"\nurl = \"{}/v2/enqueue\"\nrouting_key_file = \"{}\"\n",
        receiver.url,
        rk_file.display()
    );
    let vault = RootVault::new();
    let cfg = DaemonConfig::with_extra(vault.root_token(), HEALTH_JOB, &extra);
    let (status, stdout, stderr) = cfg.cli(&["alerts", "test"]);
    assert!(!status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(all.contains("400"), "{all}");
    assert!(
        all.contains("is not a known integration"),
        "the snippet should stay useful: {all}"
    );
    assert!(
        !all.contains(&routing_key),
        "the routing key leaked into the output:\n{all}"
    );
    let db = std::fs::read(cfg.state_db()).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&db).contains(&routing_key),
        "the routing key is in the state store"
    );
}

// ---- namespaces ------------------------------------------------------------------------------

/// With `VAULT_NAMESPACE` set, `snapshot` still works: `sys/storage/raft/*` is root-only, so
/// those requests go without `X-Vault-Namespace` (OpenBao answers "operation unavailable in
/// namespaces" otherwise), while other requests keep the namespace.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_go_to_the_root_namespace_when_a_namespace_is_set() {
    let vault = RootVault::new();
    let ns = unique("ns").replace('_', "-");
    vault
        .ok(reqwest::Method::POST, &format!("sys/namespaces/{ns}"), None)
        .await;
    let hostile = Hostile::start(Some(env("VS_TEST_VAULT_ADDR"))).await;
    let dir = tempfile::tempdir().unwrap();
    let recipient = common::age_identity(&dir.path().join("age.txt"));
    let out = tempfile::tempdir().unwrap();
    let token = snapshot_token(&vault).await;
    let cfg = DaemonConfig::new(&token, &snapshot_job("snap", &recipient, out.path()));
    set_vault_address(&cfg, &hostile.url);
    let (status, stdout, stderr) = cfg.cli_env(&["snapshot", "snap"], &[("VAULT_NAMESPACE", &ns)]);
    let seen = hostile.seen();
    vault
        .call(
            reqwest::Method::DELETE,
            &format!("sys/namespaces/{ns}"),
            None,
        )
        .await;
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");
    let snaps: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap.age"))
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let by_path: HashMap<&str, Vec<Option<&str>>> =
        seen.iter().fold(HashMap::new(), |mut m, (p, n)| {
            m.entry(p.as_str()).or_default().push(n.as_deref());
            m
        });
    let raft = &by_path["/v1/sys/storage/raft/snapshot"];
    assert!(raft.iter().all(Option::is_none), "{seen:?}");
    // The rest of the session still speaks in the namespace (the token lookup).
    assert!(
        seen.iter()
            .any(|(p, n)| p.starts_with("/v1/auth/token/lookup-self")
                && n.as_deref() == Some(ns.as_str())),
        "{seen:?}"
    );
}
