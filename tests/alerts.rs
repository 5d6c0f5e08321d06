//! Alerts end to end, through the real daemon, to real receivers: the testbed's aiosmtpd, mail
//! servers and webhook receivers of each test's own, a real Alertmanager, and an OpenBao of the
//! test's own to seal (never the shared one). Covers the outbox (store first, retry with
//! backoff, survive restarts and sink outages, exactly one firing and one resolved message per
//! incident and sink, repeats only at `repeat_interval`), every sink format, `vault-health`, and
//! `alerts test`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonConfig, free_port, record_canaries};
use common::sinks::{
    Alertmanager, HookReceiver, Mode, SmtpServer, TestCa, read_maildir, wait_count,
};
use common::vault::RootVault;
use common::{env, secret_file, unique, wait_until};
use serde_json::Value;
use vault_steward::alert::{JOB_FAILING, fingerprint};
use vault_steward::store::{DeliveryRecord, DeliveryState};

// ---- helpers ----------------------------------------------------------------------------------

/// A token that may read `secret/<prefix>/*` but not write it (so an api-key job fails with
/// "permission denied"), and the name of its policy, for [`allow_writes`].
async fn read_only_token(vault: &RootVault, prefix: &str) -> (String, String) {
    let policy = unique("alerting");
    vault
        .put_policy(
            &policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}"#
            ),
        )
        .await;
    (vault.create_token(&[&policy], "1h").await, policy)
}

/// Lets the token of [`read_only_token`] write: the failing job recovers on its next try.
async fn allow_writes(vault: &RootVault, policy: &str, prefix: &str) {
    vault
        .put_policy(
            policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["create", "read", "update"] }}"#
            ),
        )
        .await;
}

fn api_key_job(name: &str, path: &str, every: &str, extra: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nkind = \"api-key\"\npath = \"{path}\"\nevery = \"{every}\"\n{extra}"
    )
}

/// Sets the engine's retry delays in the harness's steward.toml.
fn engine_retries(cfg: &DaemonConfig, initial: &str, max: &str) {
    let text = std::fs::read_to_string(cfg.path()).unwrap();
    let text = text
        .replace(
            "retry_initial = \"1s\"",
            &format!("retry_initial = \"{initial}\""),
        )
        .replace("retry_max = \"5s\"", &format!("retry_max = \"{max}\""));
    std::fs::write(cfg.path(), text).unwrap();
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

async fn metric_now(d: &Daemon, series: &str) -> f64 {
    metric(&d.metrics().await, series).unwrap_or(0.0)
}

/// The outbox records of `alert` for `job`, read from the daemon's state file (a second,
/// non-exclusive handle, as CLI commands use).
async fn outbox(cfg: &DaemonConfig, alert: &str, job: &str) -> Vec<DeliveryRecord> {
    let url = format!("sqlite://{}", cfg.state_db().display());
    let store = vault_steward::store::open(&url, None)
        .await
        .expect("open state");
    store
        .deliveries(&fingerprint(alert, job))
        .await
        .expect("deliveries")
}

/// Mails in the testbed's shared maildir whose subject names `job`.
fn testbed_mails(job: &str) -> Vec<common::sinks::Mail> {
    read_maildir(Path::new(&env("VS_TEST_MAILDIR")))
        .into_iter()
        .filter(|m| m.subject().ends_with(&format!(" job={job}")))
        .collect()
}

fn statuses(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| b["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// What a receiver computes, written from the documented format rather than the daemon's code:
/// `sha256=` and the hex HMAC-SHA256, under the shared key, of
/// `TIMESTAMP "." DELIVERY "." BODY` (the `X-Vault-Steward-Timestamp` and
/// `X-Vault-Steward-Delivery` header values, the latter empty when the header is absent).
fn receiver_signature(key: &str, hook: &common::sinks::Hook) -> String {
    use hmac::Mac;
    let timestamp = hook
        .headers
        .get("x-vault-steward-timestamp")
        .map(String::as_str)
        .unwrap_or_default();
    let delivery = hook
        .headers
        .get("x-vault-steward-delivery")
        .map(String::as_str)
        .unwrap_or_default();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(&hook.body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A receiver's whole check: the signature matches and the timestamp is within five minutes.
fn receiver_accepts(key: &str, hook: &common::sinks::Hook) -> bool {
    let Some(Ok(ts)) = hook
        .headers
        .get("x-vault-steward-timestamp")
        .map(|t| t.parse::<i64>())
    else {
        return false;
    };
    (chrono::Utc::now().timestamp() - ts).abs() <= 300
        && hook.headers.get("x-vault-steward-signature") == Some(&receiver_signature(key, hook))
}

/// Generic webhook requests for `alert` on `job`.
fn generic_for(r: &HookReceiver, alert: &str, job: &str) -> Vec<common::sinks::Hook> {
    r.requests()
        .into_iter()
        .filter(|h| {
            let v: Value = serde_json::from_slice(&h.body).unwrap_or(Value::Null);
            v["alert"] == alert && v["job"] == job
        })
        .collect()
}

/// The notifications Alertmanager's own webhook delivered for `job`: (status, alertname).
fn alertmanager_notifications(r: &HookReceiver, job: &str) -> Vec<(String, String)> {
    r.bodies("/am")
        .iter()
        .flat_map(|n| {
            n["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["labels"]["job"] == job)
                .map(|a| {
                    (
                        a["status"].as_str().unwrap_or("?").to_string(),
                        a["labels"]["alertname"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn delivered(records: &[DeliveryRecord], sink: &str) -> usize {
    records
        .iter()
        .filter(|d| d.sink == sink && d.state == DeliveryState::Sent)
        .count()
}

// ---- Done when 1 ------------------------------------------------------------------------------

/// A job made to fail pages once by mail (SPEC subject), once by a signed generic webhook and
/// once through a real Alertmanager (whose own webhook receiver then delivers it); when the job
/// recovers, exactly one resolved message each.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_pages_once_per_sink_and_resolves_once() {
    let vault = RootVault::new();
    let prefix = unique("page");
    let path = format!("secret/{prefix}/api-key");
    let job = unique("failing");
    let (token, policy) = read_only_token(&vault, &prefix).await;

    let hook = HookReceiver::start(Mode::Ok).await;
    let am_hook = HookReceiver::start(Mode::Ok).await;
    let am = Alertmanager::start(&am_hook.url("/am")).await;
    let dir = tempfile::tempdir().unwrap();
    let hmac_key = format!("hmac-canary-{}", unique("k"));
    record_canaries([hmac_key.as_str()]);
    let hmac_file = secret_file(dir.path(), "hmac", &hmac_key);
    let extra = format!(
        r#"[alerts]
repeat_interval = "1h"
failures_before_alert = 2
retry_initial = "1s"
retry_max = "2s"
[[alerts.email]]
name = "mail"
smtp_url = "smtp://{smtp}"
from = "vault-steward@example.com"
to = ["oncall@example.com"]
[[alerts.webhook]]
name = "hook"
url = "{hook}"
format = "generic"
hmac_secret_file = "{hmac}"
[[alerts.webhook]]
name = "am"
url = "{am}"
format = "alertmanager"
"#,
        smtp = env("VS_TEST_SMTP_ADDR"),
        hook = hook.url("/hook"),
        hmac = hmac_file.display(),
        am = am.url,
    );
    let cfg = DaemonConfig::with_extra(&token, &api_key_job(&job, &path, "30d", ""), &extra);
    let mut d = cfg.start(&[]);
    d.ready().await;

    let firing = format!("[FIRING] JobFailing job={job}");
    wait_until(Duration::from_secs(30), "the firing mail", || async {
        testbed_mails(&job).iter().any(|m| m.subject() == firing)
    })
    .await;
    wait_count(Duration::from_secs(15), "the firing POST", 1, || {
        generic_for(&hook, JOB_FAILING, &job).len()
    })
    .await;
    wait_count(
        Duration::from_secs(20),
        "Alertmanager's firing notification",
        1,
        || alertmanager_notifications(&am_hook, &job).len(),
    )
    .await;

    // The generic POST: SPEC fields, and a signature that checks out.
    let posts = generic_for(&hook, JOB_FAILING, &job);
    let v = posts[0].json();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["fingerprint"], fingerprint(JOB_FAILING, &job));
    assert!(
        v["details"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("permission denied"),
        "{v}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(v["started_at"].as_str().unwrap()).is_ok());
    assert!(
        receiver_accepts(&hmac_key, &posts[0]),
        "{:?}",
        posts[0].headers
    );
    assert!(posts[0].headers.contains_key("x-vault-steward-delivery"));
    // The mail: what happened and what to do.
    let mails = testbed_mails(&job);
    let mail = &mails[0];
    assert!(
        mail.body
            .contains(&format!("JobFailing is firing for job {job}")),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("What to do:"), "{}", mail.body);
    assert!(mail.body.contains("permission denied"), "{}", mail.body);
    assert!(
        mail.headers["content-type"].starts_with("text/plain"),
        "{:?}",
        mail.headers
    );
    // Alertmanager got the labels and sent it on.
    assert_eq!(
        alertmanager_notifications(&am_hook, &job),
        [("firing".to_string(), "JobFailing".to_string())]
    );
    let am_alert = &am_hook.bodies("/am")[0]["alerts"][0];
    assert_eq!(am_alert["labels"]["severity"], "critical");

    // Recovery.
    allow_writes(&vault, &policy, &prefix).await;
    let resolved = format!("[RESOLVED] JobFailing job={job}");
    wait_until(Duration::from_secs(30), "the resolved mail", || async {
        testbed_mails(&job).iter().any(|m| m.subject() == resolved)
    })
    .await;
    wait_count(Duration::from_secs(15), "the resolved POST", 2, || {
        generic_for(&hook, JOB_FAILING, &job).len()
    })
    .await;
    wait_count(
        Duration::from_secs(20),
        "Alertmanager's resolved notification",
        2,
        || alertmanager_notifications(&am_hook, &job).len(),
    )
    .await;
    // Nothing more comes: exactly one firing and one resolved message per sink.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let subjects: Vec<String> = testbed_mails(&job)
        .iter()
        .map(|m| m.subject().to_string())
        .collect();
    assert_eq!(subjects, [firing, resolved]);
    let posts = generic_for(&hook, JOB_FAILING, &job);
    assert_eq!(
        statuses(&posts.iter().map(|p| p.json()).collect::<Vec<_>>()),
        ["firing", "resolved"]
    );
    for p in &posts {
        assert!(receiver_accepts(&hmac_key, p), "{:?}", p.headers);
    }
    assert_eq!(
        alertmanager_notifications(&am_hook, &job),
        [
            ("firing".to_string(), "JobFailing".to_string()),
            ("resolved".to_string(), "JobFailing".to_string())
        ],
        "alertmanager log:\n{}",
        am.log_text()
    );
    let m = d.metrics().await;
    for sink in ["mail", "hook", "am"] {
        assert_eq!(
            metric(
                &m,
                &format!(r#"vault_steward_alerts_sent_total{{outcome="success",sink="{sink}"}}"#)
            ),
            Some(2.0),
            "{sink}\n{m}"
        );
        assert_eq!(
            metric(
                &m,
                &format!(r#"vault_steward_alerts_sent_total{{outcome="failure",sink="{sink}"}}"#)
            ),
            Some(0.0),
            "{sink}"
        );
    }
    assert_eq!(metric(&m, "vault_steward_alerts_queued"), Some(0.0));
    d.terminate(Duration::from_secs(15)).await;
    if let Some(kv) = vault.kv_get(&path).await {
        record_canaries([kv.data["api_key"].as_str().unwrap()]);
    }
}

// ---- Done when 2 ------------------------------------------------------------------------------

/// SMTP is down for the whole incident and the daemon restarts during it: the mail arrives once
/// SMTP is back, exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn the_mail_survives_an_smtp_outage_and_a_restart_and_arrives_once() {
    let vault = RootVault::new();
    let prefix = unique("outage");
    let path = format!("secret/{prefix}/api-key");
    let job = unique("outage");
    let (token, _) = read_only_token(&vault, &prefix).await;
    let smtp_port = free_port();
    let extra = format!(
        r#"[alerts]
failures_before_alert = 1
retry_initial = "1s"
retry_max = "2s"
[[alerts.email]]
name = "mail"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "vault-steward@example.com"
to = ["oncall@example.com"]
"#
    );
    let cfg = DaemonConfig::with_extra(&token, &api_key_job(&job, &path, "30d", ""), &extra);
    let mut d = cfg.start(&[]);
    d.ready().await;
    let failures = r#"vault_steward_alerts_sent_total{outcome="failure",sink="mail"}"#;
    wait_until(Duration::from_secs(30), "two failed sends", || async {
        metric_now(&d, failures).await >= 2.0
    })
    .await;
    let queued = outbox(&cfg, JOB_FAILING, &job).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].state, DeliveryState::Pending);
    assert!(
        queued[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("SMTP 127.0.0.1:{smtp_port}")),
        "{:?}",
        queued[0].last_error
    );
    assert_eq!(metric_now(&d, "vault_steward_alerts_queued").await, 1.0);

    // Restart while SMTP is still down.
    assert!(d.terminate(Duration::from_secs(15)).await.success());
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(
        Duration::from_secs(30),
        "a failed send after the restart",
        || async { metric_now(&d, failures).await >= 1.0 },
    )
    .await;

    let smtp = SmtpServer::plain(smtp_port).await;
    wait_until(Duration::from_secs(30), "the mail", || async {
        !smtp.mails().is_empty()
    })
    .await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].subject(), format!("[FIRING] JobFailing job={job}"));
    let records = outbox(&cfg, JOB_FAILING, &job).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, DeliveryState::Sent);
    assert!(records[0].attempts >= 3, "{:?}", records[0]);
    assert_eq!(
        metric_now(
            &d,
            r#"vault_steward_alerts_sent_total{outcome="success",sink="mail"}"#
        )
        .await,
        1.0
    );
    d.terminate(Duration::from_secs(15)).await;
}

// ---- Done when 3 ------------------------------------------------------------------------------

/// A job failing 100 times in a row: one firing message, then repeats only every
/// `repeat_interval`.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_failures_send_one_firing_and_repeats_at_the_interval() {
    const REPEAT: Duration = Duration::from_secs(25);
    let vault = RootVault::new();
    let prefix = unique("hundred");
    let path = format!("secret/{prefix}/api-key");
    let job = unique("hundred");
    let (token, _) = read_only_token(&vault, &prefix).await;
    let hook = HookReceiver::start(Mode::Ok).await;
    let extra = format!(
        r#"[alerts]
repeat_interval = "25s"
failures_before_alert = 1
[[alerts.webhook]]
name = "hook"
url = "{}"
"#,
        hook.url("/hook")
    );
    let cfg = DaemonConfig::with_extra(&token, &api_key_job(&job, &path, "30d", ""), &extra);
    // A retry at every engine tick (once a second).
    engine_retries(&cfg, "100ms", "200ms");
    let mut d = cfg.start(&[]);
    d.ready().await;
    let runs =
        format!(r#"vault_steward_job_runs_total{{job="{job}",kind="api-key",outcome="failure"}}"#);
    let started = Instant::now();
    wait_until(Duration::from_secs(200), "100 failed runs", || async {
        metric_now(&d, &runs).await >= 100.0
    })
    .await;
    let elapsed = started.elapsed();
    let posts = generic_for(&hook, JOB_FAILING, &job);
    let bodies: Vec<Value> = posts.iter().map(|p| p.json()).collect();
    let repeats: Vec<bool> = bodies.iter().map(|b| b["repeat"] == true).collect();
    assert!(!repeats[0], "the first is the firing one");
    assert!(repeats[1..].iter().all(|r| *r), "{bodies:?}");
    assert!(statuses(&bodies).iter().all(|s| s == "firing"));
    // One per started interval of the incident, give or take the one in flight.
    let expected = 1 + (elapsed.as_secs_f64() / REPEAT.as_secs_f64()) as usize;
    assert!(
        posts.len().abs_diff(expected) <= 1,
        "{} messages in {elapsed:?} with a {REPEAT:?} repeat interval",
        posts.len()
    );
    for pair in posts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= REPEAT - Duration::from_millis(1500) && gap <= REPEAT + Duration::from_secs(5),
            "repeat after {gap:?}"
        );
    }
    println!(
        "100 failures in {elapsed:?}: {} messages ({} repeats)",
        posts.len(),
        posts.len() - 1
    );
    d.terminate(Duration::from_secs(15)).await;
}

// ---- Done when 4 ------------------------------------------------------------------------------

/// An OpenBao of the test's own (in-memory storage), initialised with one key share: it can be
/// sealed without disturbing the shared testbed.
struct OwnBao {
    addr: String,
    root_token: String,
    unseal_key: String,
    proc: common::sinks::Proc,
    _dir: tempfile::TempDir,
}

impl OwnBao {
    async fn start() -> OwnBao {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\ndisable_mlock = true\napi_addr = \"{addr}\"\n"
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(env("VS_TEST_BAO_BIN"));
        cmd.arg("server")
            .arg(format!("-config={}", config.display()));
        let proc = common::sinks::Proc::spawn(cmd, "own-bao");
        let http = reqwest::Client::new();
        wait_until(Duration::from_secs(30), "own OpenBao to listen", || {
            let r = http.get(format!("{addr}/v1/sys/health")).send();
            async move { r.await.is_ok() }
        })
        .await;
        let init: Value = http
            .put(format!("{addr}/v1/sys/init"))
            .json(&serde_json::json!({ "secret_shares": 1, "secret_threshold": 1 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bao = OwnBao {
            root_token: init["root_token"].as_str().unwrap().to_string(),
            unseal_key: init["keys_base64"][0].as_str().unwrap().to_string(),
            addr,
            proc,
            _dir: dir,
        };
        record_canaries([bao.root_token.as_str(), bao.unseal_key.as_str()]);
        bao.unseal().await;
        bao
    }

    async fn sealed(&self) -> bool {
        let v: Value = reqwest::get(format!("{}/v1/sys/seal-status", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["sealed"] == true
    }

    async fn unseal(&self) {
        let r = reqwest::Client::new()
            .put(format!("{}/v1/sys/unseal", self.addr))
            .json(&serde_json::json!({ "key": self.unseal_key }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "unseal: {}", r.status());
        wait_until(Duration::from_secs(30), "own OpenBao to be active", || {
            let r = reqwest::get(format!("{}/v1/sys/health", self.addr));
            async move { matches!(r.await, Ok(r) if r.status() == 200) }
        })
        .await;
    }

    async fn seal(&self) {
        let r = reqwest::Client::new()
            .put(format!("{}/v1/sys/seal", self.addr))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "seal: {}", r.status());
        assert!(self.sealed().await);
    }
}

/// Sealing OpenBao raises `VaultSealed` within two schedule ticks, unsealing resolves it, and a
/// Vault that stops answering raises `VaultUnreachable`; `vault_up` and `vault_sealed` follow.
#[tokio::test(flavor = "multi_thread")]
async fn sealing_raises_vault_sealed_within_two_ticks_and_unsealing_resolves_it() {
    let mut bao = OwnBao::start().await;
    let hook = HookReceiver::start(Mode::Ok).await;
    let job = unique("health");
    let jobs = format!(
        "[[job]]\nname = \"{job}\"\nkind = \"vault-health\"\nschedule = \"*/2 * * * * *\"\n"
    );
    let extra = format!(
        "[alerts]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    let cfg = DaemonConfig::with_extra(&bao.root_token, &jobs, &extra);
    let mut d = cfg.start(&[("VAULT_ADDR", bao.addr.as_str())]);
    d.ready().await;
    wait_until(Duration::from_secs(15), "a healthy check", || async {
        let m = d.metrics().await;
        metric(&m, "vault_steward_vault_up") == Some(1.0)
            && metric(&m, "vault_steward_vault_sealed") == Some(0.0)
    })
    .await;

    let sealed_at = Instant::now();
    bao.seal().await;
    wait_count(Duration::from_secs(20), "VaultSealed", 1, || {
        generic_for(&hook, "VaultSealed", &job).len()
    })
    .await;
    let latency = generic_for(&hook, "VaultSealed", &job)[0].at - sealed_at;
    // Two ticks of a 2 s schedule, plus the outbox's 1 s poll and a little slack.
    assert!(
        latency <= Duration::from_secs(6),
        "VaultSealed after {latency:?}"
    );
    println!("VaultSealed delivered {latency:?} after sealing (schedule every 2s)");
    let v = generic_for(&hook, "VaultSealed", &job)[0].json();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["details"]["sealed"], true);
    let m = d.metrics().await;
    assert_eq!(metric(&m, "vault_steward_vault_sealed"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vault_steward_vault_up"), Some(1.0));

    bao.unseal().await;
    wait_count(Duration::from_secs(20), "VaultSealed resolved", 2, || {
        generic_for(&hook, "VaultSealed", &job).len()
    })
    .await;
    let bodies: Vec<Value> = generic_for(&hook, "VaultSealed", &job)
        .iter()
        .map(|h| h.json())
        .collect();
    assert_eq!(statuses(&bodies), ["firing", "resolved"]);
    wait_until(Duration::from_secs(10), "vault_sealed 0", || async {
        metric_now(&d, "vault_steward_vault_sealed").await == 0.0
    })
    .await;

    // Gone altogether.
    bao.proc.stop();
    wait_count(Duration::from_secs(20), "VaultUnreachable", 1, || {
        generic_for(&hook, "VaultUnreachable", &job).len()
    })
    .await;
    wait_until(Duration::from_secs(10), "vault_up 0", || async {
        metric_now(&d, "vault_steward_vault_up").await == 0.0
    })
    .await;
    let runs = format!(
        r#"vault_steward_job_runs_total{{job="{job}",kind="vault-health",outcome="failure"}}"#
    );
    assert_eq!(
        metric_now(&d, &runs).await,
        0.0,
        "a sealed or absent Vault is news, not a failed check"
    );
    d.terminate(Duration::from_secs(15)).await;
}

// ---- Done when 5 ------------------------------------------------------------------------------

/// STARTTLS with AUTH against aiosmtpd with a test certificate works; a wrong password gives a
/// clear error in the outbox record and `alerts_sent_total{outcome="failure"}`, and the alert is
/// retried — and delivered once the password file is fixed.
#[tokio::test(flavor = "multi_thread")]
async fn starttls_with_auth_works_and_a_wrong_password_is_a_clear_retried_error() {
    let vault = RootVault::new();
    let prefix = unique("tls");
    let path = format!("secret/{prefix}/api-key");
    let job = unique("tlsmail");
    let (token, _) = read_only_token(&vault, &prefix).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let right = format!("smtp-right-{}", unique("pw"));
    let wrong = format!("smtp-wrong-{}", unique("pw"));
    record_canaries([right.as_str(), wrong.as_str()]);
    let server_pw = secret_file(dir.path(), "server-pw", &right);
    let good_pw = secret_file(dir.path(), "good-pw", &right);
    let bad_pw = secret_file(dir.path(), "bad-pw", &wrong);
    let port = free_port();
    let smtp = SmtpServer::starttls_auth(port, &ca.cert, &ca.key, "steward", &server_pw).await;
    let sink = |name: &str, pw: &Path| {
        format!(
            r#"[[alerts.email]]
name = "{name}"
smtp_url = "smtp://127.0.0.1:{port}?tls=required"
from = "vault-steward@example.com"
to = ["{name}@example.com"]
username = "steward"
password_file = "{pw}"
ca_cert = "{ca}"
timeout = "5s"
"#,
            pw = pw.display(),
            ca = ca.ca_cert.display()
        )
    };
    let extra = format!(
        "[alerts]\nfailures_before_alert = 1\nretry_initial = \"1s\"\nretry_max = \"2s\"\n{}{}",
        sink("good-mail", &good_pw),
        sink("bad-mail", &bad_pw)
    );
    let cfg = DaemonConfig::with_extra(&token, &api_key_job(&job, &path, "30d", ""), &extra);
    let mut d = cfg.start(&[]);
    d.ready().await;

    wait_until(
        Duration::from_secs(30),
        "the mail over STARTTLS",
        || async { !smtp.mails().is_empty() },
    )
    .await;
    let mails = smtp.mails();
    assert_eq!(mails[0].subject(), format!("[FIRING] JobFailing job={job}"));
    assert_eq!(mails[0].headers["to"], "good-mail@example.com");

    let bad_failures = r#"vault_steward_alerts_sent_total{outcome="failure",sink="bad-mail"}"#;
    wait_until(
        Duration::from_secs(30),
        "the wrong password retried",
        || async { metric_now(&d, bad_failures).await >= 3.0 },
    )
    .await;
    let records = outbox(&cfg, JOB_FAILING, &job).await;
    let bad = records.iter().find(|r| r.sink == "bad-mail").unwrap();
    assert_eq!(bad.state, DeliveryState::Pending);
    assert!(bad.attempts >= 3, "{bad:?}");
    let error = bad.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "SMTP 127.0.0.1:{port} refused the login of user `steward` (wrong username or password?)"
        )) && error.contains("535"),
        "{error}"
    );
    assert!(!error.contains(&wrong));
    assert_eq!(delivered(&records, "good-mail"), 1);
    assert_eq!(
        metric_now(
            &d,
            r#"vault_steward_alerts_sent_total{outcome="success",sink="good-mail"}"#
        )
        .await,
        1.0
    );
    assert!(d.log().contains("refused the login of user `steward`"));

    // The operator fixes the password file: the queued alert goes out, no restart needed.
    secret_file(dir.path(), "bad-pw", &right);
    wait_until(Duration::from_secs(30), "the retried mail", || async {
        smtp.mails().len() >= 2
    })
    .await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].headers["to"], "bad-mail@example.com");
    d.terminate(Duration::from_secs(15)).await;
}

// ---- Done when 6 ------------------------------------------------------------------------------

/// A webhook that answers 500 and one that hangs are retried with backoff, and neither holds up
/// the other sinks nor the jobs.
#[tokio::test(flavor = "multi_thread")]
async fn failing_and_hanging_webhooks_are_retried_with_backoff_and_block_nobody() {
    let vault = RootVault::new();
    let prefix = unique("hooks");
    let path = format!("secret/{prefix}/api-key");
    let steady_path = format!("secret/{prefix}/steady");
    let job = unique("hooked");
    let (token, policy) = read_only_token(&vault, &prefix).await;
    // The steady job writes elsewhere, with its own grant on the same token.
    vault
        .put_policy(
            &policy,
            &format!(
                r#"path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}
path "secret/data/{prefix}/steady" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/steady" {{ capabilities = ["create", "read", "update"] }}"#
            ),
        )
        .await;
    let ok = HookReceiver::start(Mode::Ok).await;
    let err = HookReceiver::start(Mode::Status(500)).await;
    let hang = HookReceiver::start(Mode::Hang).await;
    let hook = |name: &str, r: &HookReceiver| {
        format!(
            "[[alerts.webhook]]\nname = \"{name}\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            r.url("/hook")
        )
    };
    let extra = format!(
        "[alerts]\nfailures_before_alert = 1\nretry_initial = \"1s\"\nretry_max = \"16s\"\n{}{}{}",
        hook("hang", &hang),
        hook("err", &err),
        hook("ok", &ok)
    );
    let jobs = format!(
        "{}{}",
        api_key_job(&job, &path, "30d", ""),
        api_key_job("steady", &steady_path, "2s", "alerts = [\"ok\"]\n")
    );
    let cfg = DaemonConfig::with_extra(&token, &jobs, &extra);
    let mut d = cfg.start(&[]);
    d.ready().await;
    let t0 = Instant::now();
    wait_count(
        Duration::from_secs(20),
        "the healthy sink's POST",
        1,
        || generic_for(&ok, JOB_FAILING, &job).len(),
    )
    .await;
    let ok_latency = t0.elapsed();
    assert!(
        ok_latency < Duration::from_secs(10),
        "the healthy sink waited {ok_latency:?}"
    );

    // Watch the failing ones for a while.
    wait_count(
        Duration::from_secs(40),
        "five attempts on the 500 hook",
        5,
        || err.requests().len(),
    )
    .await;
    wait_count(
        Duration::from_secs(40),
        "three attempts on the hanging hook",
        3,
        || hang.requests().len(),
    )
    .await;
    let gaps = |r: &HookReceiver| -> Vec<Duration> {
        r.requests().windows(2).map(|w| w[1].at - w[0].at).collect()
    };
    let err_gaps = gaps(&err);
    println!("500 hook: gaps between attempts {err_gaps:?}");
    println!("hanging hook: gaps between attempts {:?}", gaps(&hang));
    // Equal-jitter doubling from 1 s: attempt n+1 comes after between 2^(n-1)/2 and 2^(n-1)
    // seconds (plus up to a second of polling). The fourth gap is at least 4 s.
    assert!(err_gaps[3] >= Duration::from_secs(4), "{err_gaps:?}");
    assert!(err_gaps[3] > err_gaps[0], "{err_gaps:?}");
    let hang_gaps = gaps(&hang);
    // Each hanging attempt is given up after the 2 s timeout, then backs off too.
    assert!(hang_gaps[1] >= Duration::from_secs(3), "{hang_gaps:?}");
    // The steady job kept rotating meanwhile.
    assert!(
        vault.current_version(&steady_path).await >= 3,
        "jobs must not wait for sinks"
    );

    let records = outbox(&cfg, JOB_FAILING, &job).await;
    let by = |s: &str| records.iter().find(|r| r.sink == s).unwrap().clone();
    assert_eq!(by("ok").state, DeliveryState::Sent);
    let e = by("err");
    assert_eq!(e.state, DeliveryState::Pending);
    assert!(
        e.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("answered 500 Internal Server Error"),
        "{e:?}"
    );
    let h = by("hang");
    assert_eq!(h.state, DeliveryState::Pending);
    let herr = h.last_error.as_deref().unwrap_or_default();
    assert!(
        herr.contains("webhook hang") && herr.contains("timed out"),
        "{herr}"
    );
    let m = d.metrics().await;
    assert!(
        metric(
            &m,
            r#"vault_steward_alerts_sent_total{outcome="failure",sink="err"}"#
        )
        .unwrap()
            >= 5.0
    );
    assert!(
        metric(
            &m,
            r#"vault_steward_alerts_sent_total{outcome="failure",sink="hang"}"#
        )
        .unwrap()
            >= 3.0
    );
    assert!(metric(&m, "vault_steward_alerts_queued").unwrap() >= 2.0);

    // The 500 hook recovers: its notification goes out on the next attempt.
    err.set_mode(Mode::Ok);
    wait_until(
        Duration::from_secs(30),
        "the recovered hook's delivery",
        || async { delivered(&outbox(&cfg, JOB_FAILING, &job).await, "err") == 1 },
    )
    .await;
    d.terminate(Duration::from_secs(15)).await;
    // KV keeps only the mount's `max_versions` (10 by default) newest versions: older ones
    // read as missing.
    for v in 1..=vault.current_version(&steady_path).await {
        if let Some(kv) = vault.kv_get_version(&steady_path, Some(v)).await {
            record_canaries([kv.data["api_key"].as_str().unwrap()]);
        }
    }
}

// ---- more ---------------------------------------------------------------------------------------

/// `RotationOverdue` fires when a secret outlives its `every` (plus a tenth) because rotation
/// fails, and resolves once it is rotated.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_that_keeps_failing_becomes_overdue_then_resolves() {
    let vault = RootVault::new();
    let prefix = unique("overdue");
    let path = format!("secret/{prefix}/api-key");
    let job = unique("overdue");
    vault
        .kv_put(
            &path,
            serde_json::json!({ "api_key": "overdue-old-value-1" }),
        )
        .await;
    record_canaries(["overdue-old-value-1"]);
    let (token, policy) = read_only_token(&vault, &prefix).await;
    let hook = HookReceiver::start(Mode::Ok).await;
    let extra = format!(
        "[alerts]\nrepeat_interval = \"4s\"\nfailures_before_alert = 100\n[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    // `every` of 2 s: overdue 2.2 s after the secret was written.
    let cfg = DaemonConfig::with_extra(&token, &api_key_job(&job, &path, "2s", ""), &extra);
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_count(Duration::from_secs(20), "RotationOverdue", 1, || {
        generic_for(&hook, "RotationOverdue", &job).len()
    })
    .await;
    let v = generic_for(&hook, "RotationOverdue", &job)[0].json();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["severity"], "warning");
    assert_eq!(v["details"]["every"], "2s", "{v}");
    assert!(v["details"]["secret_changed_at"].is_string(), "{v}");
    assert!(
        generic_for(&hook, JOB_FAILING, &job).is_empty(),
        "below failures_before_alert"
    );
    allow_writes(&vault, &policy, &prefix).await;
    wait_until(
        Duration::from_secs(30),
        "RotationOverdue resolved",
        || async {
            generic_for(&hook, "RotationOverdue", &job)
                .iter()
                .any(|h| h.json()["status"] == "resolved")
        },
    )
    .await;
    d.terminate(Duration::from_secs(15)).await;
    for v in 1..=vault.current_version(&path).await {
        let kv = vault.kv_get_version(&path, Some(v)).await.unwrap();
        record_canaries([kv.data["api_key"].as_str().unwrap()]);
    }
}

/// `alerts test` sends through every sink, each in its format (Slack URL and PagerDuty routing
/// key from their files), prints one line per sink and exits 1 when one failed.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_test_reports_every_sink_in_its_format() {
    let good = HookReceiver::start(Mode::Ok).await;
    let bad = HookReceiver::start(Mode::Status(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let slack_secret = unique("slacktoken");
    let slack_url = good.url(&format!("/slack/T000/B000/{slack_secret}"));
    let routing_key = format!("pd-routing-{}", unique("key"));
    record_canaries([
        slack_url.as_str(),
        slack_secret.as_str(),
        routing_key.as_str(),
    ]);
    let slack_file = secret_file(dir.path(), "slack-url", &slack_url);
    let rk_file = secret_file(dir.path(), "routing-key", &routing_key);
    let to = format!("{}@example.com", unique("alerts-test"));
    let extra = format!(
        r#"[[alerts.email]]
name = "mail"
smtp_url = "smtp://{smtp}"
from = "vault-steward@example.com"
to = ["{to}"]
[[alerts.webhook]]
name = "chat"
format = "slack"
url_file = "{slack}"
[[alerts.webhook]]
name = "pager"
format = "pagerduty"
url = "{pd}"
routing_key_file = "{rk}"
[[alerts.webhook]]
name = "broken"
url = "{bad}"
"#,
        smtp = env("VS_TEST_SMTP_ADDR"),
        slack = slack_file.display(),
        pd = good.url("/v2/enqueue"),
        rk = rk_file.display(),
        bad = bad.url("/hook"),
    );
    let vault = RootVault::new();
    let jobs = "[[job]]\nname = \"health\"\nkind = \"vault-health\"\n";
    let cfg = DaemonConfig::with_extra(vault.root_token(), jobs, &extra);
    let (status, out, err) = cfg.cli(&["alerts", "test"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "mail (email): ok", "{out}");
    assert_eq!(lines[1], "chat (slack): ok", "{out}");
    assert_eq!(lines[2], "pager (pagerduty): ok", "{out}");
    assert!(
        lines[3].starts_with("broken (generic): FAILED: webhook broken (http://127.0.0.1:")
            && lines[3].contains("answered 500 Internal Server Error"),
        "{out}"
    );
    assert!(!out.contains(&slack_secret) && !err.contains(&slack_secret));

    let slack: Vec<Value> = good
        .requests()
        .iter()
        .filter(|h| h.path.starts_with("/slack/"))
        .map(|h| h.json())
        .collect();
    assert_eq!(slack.len(), 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(
        text.contains("*[FIRING] VaultStewardTest job=alerts-test*"),
        "{text}"
    );
    let pd = good.bodies("/v2/enqueue");
    assert_eq!(pd.len(), 2, "trigger, then resolve");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], routing_key.as_str());
    assert_eq!(pd[0]["payload"]["severity"], "warning");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    let mails: Vec<_> = read_maildir(Path::new(&env("VS_TEST_MAILDIR")))
        .into_iter()
        .filter(|m| m.headers.get("to") == Some(&to))
        .collect();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].subject(),
        "[FIRING] VaultStewardTest job=alerts-test"
    );
}

/// The generic webhook's signature covers a timestamp sent in `X-Vault-Steward-Timestamp` (and
/// the delivery id), as Stripe and Slack sign: a receiver verifies the HMAC over
/// `TIMESTAMP.DELIVERY.BODY` and rejects old timestamps, so a captured request cannot be replayed
/// later; the old body-only HMAC no longer verifies, and a replay with a fresh timestamp fails.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_signature_covers_a_timestamp() {
    use hmac::Mac;
    let receiver = HookReceiver::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let key = format!("hmac-ts-{}", unique("k"));
    record_canaries([key.as_str()]);
    let key_file = secret_file(dir.path(), "hmac", &key);
    let extra = format!(
        "[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}\"\nformat = \"generic\"\nhmac_secret_file = \"{}\"\n",
        receiver.url("/hook"),
        key_file.display()
    );
    let vault = RootVault::new();
    let jobs = "[[job]]\nname = \"health\"\nkind = \"vault-health\"\n";
    let cfg = DaemonConfig::with_extra(vault.root_token(), jobs, &extra);
    let before = chrono::Utc::now().timestamp();
    let (status, out, err) = cfg.cli(&["alerts", "test"]);
    assert!(status.success(), "{out}{err}");
    let after = chrono::Utc::now().timestamp();
    let hooks = receiver.requests();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    let ts: i64 = hook
        .headers
        .get("x-vault-steward-timestamp")
        .unwrap_or_else(|| panic!("no timestamp header: {:?}", hook.headers))
        .parse()
        .expect("the timestamp is Unix seconds");
    assert!(
        (before..=after).contains(&ts),
        "{ts} not in {before}..={after}"
    );
    assert!(receiver_accepts(&key, hook), "{:?}", hook.headers);

    // The body-only HMAC of before does not verify any more.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&hook.body);
    let body_only = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_ne!(hook.headers["x-vault-steward-signature"], body_only);
    // A replay with a fresh timestamp (or a changed body) fails the check.
    let mut replay = hook.clone();
    replay.headers.insert(
        "x-vault-steward-timestamp".into(),
        chrono::Utc::now().timestamp().saturating_add(7).to_string(),
    );
    assert!(!receiver_accepts(&key, &replay));
    let mut altered = hook.clone();
    altered.body = hook.body.replace_first(b"firing", b"resolved");
    assert!(!receiver_accepts(&key, &altered));
    // An old capture replayed as it is: the timestamp is out of the window.
    let mut old = hook.clone();
    let stale = ts - 3600;
    old.headers
        .insert("x-vault-steward-timestamp".into(), stale.to_string());
    assert!(!receiver_accepts(&key, &old));
}

trait ReplaceFirst {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => panic!("{} not in the body", String::from_utf8_lossy(from)),
        }
    }
}

/// `check --connect` proves every sink without sending a notification: an SMTP session (with
/// STARTTLS and AUTH) and an HTTP answer from each webhook; a sink it cannot reach fails it.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_proves_each_sink_without_sending() {
    let receiver = HookReceiver::start(Mode::Ok).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let right = format!("probe-right-{}", unique("pw"));
    let wrong = format!("probe-wrong-{}", unique("pw"));
    record_canaries([right.as_str(), wrong.as_str()]);
    let server_pw = secret_file(dir.path(), "server-pw", &right);
    let good_pw = secret_file(dir.path(), "good-pw", &right);
    let bad_pw = secret_file(dir.path(), "bad-pw", &wrong);
    let tls_port = free_port();
    let _smtp = SmtpServer::starttls_auth(tls_port, &ca.cert, &ca.key, "steward", &server_pw).await;
    let down_port = free_port();
    let tls_sink = |name: &str, pw: &Path| {
        format!(
            "[[alerts.email]]\nname = \"{name}\"\nsmtp_url = \"smtp://127.0.0.1:{tls_port}?tls=required\"\nfrom = \"vs@example.com\"\nto = [\"o@example.com\"]\nusername = \"steward\"\npassword_file = \"{}\"\nca_cert = \"{}\"\n",
            pw.display(),
            ca.ca_cert.display()
        )
    };
    let extra = format!(
        r#"[[alerts.email]]
name = "plain"
smtp_url = "smtp://{smtp}"
from = "vs@example.com"
to = ["o@example.com"]
[[alerts.email]]
name = "down"
smtp_url = "smtp://127.0.0.1:{down_port}"
from = "vs@example.com"
to = ["o@example.com"]
timeout = "2s"
{tls_good}{tls_bad}[[alerts.webhook]]
name = "hook"
url = "{hook}"
"#,
        smtp = env("VS_TEST_SMTP_ADDR"),
        tls_good = tls_sink("tls-good", &good_pw),
        tls_bad = tls_sink("tls-bad", &bad_pw),
        hook = receiver.url("/hook"),
    );
    let vault = RootVault::new();
    let jobs = "[[job]]\nname = \"health\"\nkind = \"vault-health\"\n";
    let cfg = DaemonConfig::with_extra(vault.root_token(), jobs, &extra);
    let (status, out, err) = cfg.cli(&["check", "--connect"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let line = |sink: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("alert sink {sink}: ")))
            .unwrap_or_else(|| panic!("no line for {sink}:\n{out}"))
            .to_string()
    };
    assert!(line("plain").contains(": ok: SMTP 127.0.0.1:"), "{out}");
    assert!(
        line("tls-good").contains("ok: ")
            && line("tls-good").contains("StartTls, logged in as steward"),
        "{out}"
    );
    assert!(
        line("tls-bad").contains("FAILED: ")
            && line("tls-bad").contains("refused the login of user `steward`"),
        "{out}"
    );
    assert!(
        line("down").contains(&format!("FAILED: SMTP 127.0.0.1:{down_port}")),
        "{out}"
    );
    assert!(
        line("hook").contains("ok: webhook hook (http://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("job health: ok: Vault at "), "{out}");
    // Nothing was posted.
    assert!(receiver.requests().iter().all(|h| h.body.is_empty()));
    assert!(!out.contains(&wrong) && !err.contains(&wrong));
}

/// A daemon started while Vault is down cannot log in, yet still reports it: `vault-health`
/// needs no token, and the outbox does not wait for Vault.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_while_vault_is_down_reports_vault_unreachable() {
    vault_steward::vault::install_crypto_provider();
    let hook = HookReceiver::start(Mode::Ok).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let job = unique("blind");
    let jobs = format!(
        "[[job]]\nname = \"{job}\"\nkind = \"vault-health\"\nschedule = \"*/2 * * * * *\"\n"
    );
    let extra = format!(
        "[alerts]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n[[alerts.webhook]]\nname = \"hook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    let cfg = DaemonConfig::with_extra("not-a-token-anywhere", &jobs, &extra);
    let mut d = cfg.start(&[("VAULT_ADDR", nowhere.as_str())]);
    wait_count(Duration::from_secs(20), "VaultUnreachable", 1, || {
        generic_for(&hook, "VaultUnreachable", &job).len()
    })
    .await;
    let v = generic_for(&hook, "VaultUnreachable", &job)[0].json();
    assert_eq!(v["status"], "firing");
    assert_eq!(v["details"]["address"], nowhere.as_str());
    let ready = reqwest::get(d.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without a Vault login");
    assert_eq!(metric_now(&d, "vault_steward_vault_up").await, 0.0);
    assert!(
        d.log().contains("cannot log in to Vault yet"),
        "{}",
        d.log()
    );
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}\n{}", d.log());
}
