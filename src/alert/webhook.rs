//! `[[alerts.webhook]]`: notifications as HTTP POSTs, in one of four formats —
//! `generic` (SPEC §5 JSON, signed with HMAC-SHA256 when `hmac_secret_file` is set), `slack`
//! (`{"text": …}` to an incoming-webhook URL, which is a secret and so usually in `url_file`),
//! `pagerduty` (Events API v2: `trigger` with `dedup_key` = fingerprint, `resolve` on recovery)
//! and `alertmanager` (`POST /api/v2/alerts`, labels `alertname`/`job`/`severity`, `endsAt` on
//! resolve; firing alerts are re-posted every minute, as Prometheus does, or Alertmanager would
//! expire them).
//!
//! Redirects are not followed (a POST must not turn into a GET somewhere else). Error texts name
//! the sink, the URL's origin (never its path, which may be a token) and the HTTP status.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Notification;
use super::message::{hostname, rfc3339};
use super::sink::{SendError, Sink, SinkError, error_chain};
use crate::config::{WebhookFormat, WebhookSinkConfig, WebhookUrl};
use crate::store::DeliveryKind;

/// Header carrying `sha256=HEX`: the HMAC-SHA256 (format `generic`, with `hmac_secret_file`)
/// of `TIMESTAMP.DELIVERY.BODY` — the [`TIMESTAMP_HEADER`] value, a dot, the
/// [`DELIVERY_HEADER`] value (empty when that header is absent, as for `alerts test`), a dot and
/// the body's bytes. Signing the time lets a receiver refuse a captured request replayed later
/// (as Stripe and Slack sign theirs); signing the delivery id keeps its de-duplication honest.
pub const SIGNATURE_HEADER: &str = "X-Vault-Steward-Signature";
/// Header carrying the time of sending, in Unix seconds (set anew on each retry). Receivers
/// should refuse requests whose timestamp is more than a few minutes from their clock.
pub const TIMESTAMP_HEADER: &str = "X-Vault-Steward-Timestamp";
/// The most of an error answer read, for the snippet kept in messages (the rest is not read).
const ERROR_PREFIX: usize = 16 * 1024;
/// Header carrying the outbox delivery id: the same on every retry of one notification, so a
/// receiver can drop a duplicate (a retry after a timeout whose request did arrive).
pub const DELIVERY_HEADER: &str = "X-Vault-Steward-Delivery";
/// How long Alertmanager keeps a firing alert without hearing of it again.
const ALERTMANAGER_TTL: chrono::Duration = chrono::Duration::minutes(5);
/// How often firing alerts are re-posted to Alertmanager (well within [`ALERTMANAGER_TTL`]).
const ALERTMANAGER_REFRESH: Duration = Duration::from_secs(60);

/// Sends notifications to one webhook.
pub struct WebhookSink {
    config: WebhookSinkConfig,
    http: reqwest::Client,
}

impl WebhookSink {
    /// Builds the HTTP client (with the private CA, if any). Nothing is sent yet.
    pub fn new(config: WebhookSinkConfig) -> Result<Self, SinkError> {
        let err = |message: String| SinkError {
            sink: config.name.clone(),
            message,
        };
        crate::vault::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vault-steward/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout.as_std())
            .connect_timeout(config.timeout.as_std().min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_cert {
            let pem =
                std::fs::read(path).map_err(|e| err(format!("ca_cert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err(format!("ca_cert {}: {}", path.display(), error_chain(&e))))?;
            if certs.is_empty() {
                return Err(err(format!(
                    "ca_cert {} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        } else if matches!(&config.url, WebhookUrl::Inline(u) if u.starts_with("http://")) {
            // Plain HTTP needs no roots (and hosts without a system CA store still work).
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = builder
            .build()
            .map_err(|e| err(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(WebhookSink { config, http })
    }

    /// The URL to POST to (read from `url_file` each time, so a rotated Slack URL needs no
    /// restart) and how to name it in messages.
    fn target(&self) -> Result<(SecretString, String), SendError> {
        let (url, shown) = match &self.config.url {
            WebhookUrl::Inline(u) => (SecretString::from(u.clone()), None),
            WebhookUrl::Secret(source) => {
                let url = source.read().map_err(|e| {
                    SendError::Permanent(format!("webhook {}: url_file: {e}", self.config.name))
                })?;
                (url, Some("URL from url_file".to_string()))
            }
        };
        let parsed = url::Url::parse(url.expose_secret().trim()).map_err(|e| {
            SendError::Permanent(format!(
                "webhook {}: the URL does not parse: {e}",
                self.config.name
            ))
        })?;
        let origin = parsed.origin().ascii_serialization();
        let shown = match shown {
            Some(s) => format!("webhook {} ({s}, {origin})", self.config.name),
            None => format!("webhook {} ({origin})", self.config.name),
        };
        let mut full = parsed;
        if self.config.format == WebhookFormat::Alertmanager
            && !full
                .path()
                .trim_end_matches('/')
                .ends_with("/api/v2/alerts")
        {
            let path = format!("{}/api/v2/alerts", full.path().trim_end_matches('/'));
            full.set_path(&path);
        }
        Ok((SecretString::from(full.to_string()), shown))
    }

    fn routing_key(&self) -> Result<SecretString, SendError> {
        match &self.config.routing_key {
            Some(source) => source.read().map_err(|e| {
                SendError::Permanent(format!(
                    "webhook {}: routing_key_file: {e}",
                    self.config.name
                ))
            }),
            None => Err(SendError::Permanent(format!(
                "webhook {}: no routing_key_file",
                self.config.name
            ))),
        }
    }

    /// POSTs `body` (JSON) and checks the answer. `scrub` is a secret the body carries (the
    /// PagerDuty routing key), kept out of error snippets should the answer echo it.
    async fn post(
        &self,
        body: Vec<u8>,
        n: Option<&Notification>,
        scrub: Option<&SecretString>,
    ) -> Result<(), SendError> {
        let (url, shown) = self.target()?;
        let mut req = self
            .http
            .post(url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let delivery = n
            .and_then(|n| n.delivery_id)
            .map(|id| id.to_string())
            .unwrap_or_default();
        if !delivery.is_empty() {
            req = req.header(DELIVERY_HEADER, &delivery);
        }
        if let Some(source) = &self.config.hmac_secret {
            let key = source
                .read()
                .map_err(|e| SendError::Permanent(format!("{shown}: hmac_secret_file: {e}")))?;
            let timestamp = Utc::now().timestamp();
            req = req.header(TIMESTAMP_HEADER, timestamp.to_string()).header(
                SIGNATURE_HEADER,
                format!(
                    "sha256={}",
                    sign(key.expose_secret().as_bytes(), timestamp, &delivery, &body)
                ),
            );
        }
        let response = req.body(body).send().await.map_err(|e| {
            let e = e.without_url();
            SendError::Retryable(format!("{shown}: {}", error_chain(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = crate::body::read_prefix(response, ERROR_PREFIX).await;
        let mut text = String::from_utf8_lossy(&text).into_owned();
        if let Some(secret) = scrub {
            text = scrubbed(&text, secret.expose_secret());
        }
        let snippet: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        let message = format!("{shown} answered {status}: {}", snippet.trim());
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Err(SendError::Retryable(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn kind(&self) -> &'static str {
        match self.config.format {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Pagerduty => "pagerduty",
            WebhookFormat::Alertmanager => "alertmanager",
        }
    }

    fn timeout(&self) -> Duration {
        // PagerDuty's test is two requests.
        self.config.timeout.as_std() * 2
    }

    async fn send(&self, n: &Notification) -> Result<(), SendError> {
        match self.config.format {
            WebhookFormat::Generic => self.post(to_bytes(&generic(n)), Some(n), None).await,
            WebhookFormat::Slack => self.post(to_bytes(&slack(n)), Some(n), None).await,
            WebhookFormat::Pagerduty => {
                let key = self.routing_key()?;
                self.post(
                    to_bytes(&pagerduty(n, &key, n.is_firing())),
                    Some(n),
                    Some(&key),
                )
                .await?;
                if n.test {
                    // Close the test incident at once: it proved the path, nobody should work it.
                    self.post(to_bytes(&pagerduty(n, &key, false)), Some(n), Some(&key))
                        .await?;
                }
                Ok(())
            }
            WebhookFormat::Alertmanager => {
                let body = Value::Array(vec![alertmanager(n, Utc::now())]);
                self.post(to_bytes(&body), Some(n), None).await
            }
        }
    }

    async fn probe(&self) -> Result<String, SendError> {
        // A HEAD posts nothing; any HTTP answer (often 404 or 405) proves the way there.
        let (url, shown) = self.target()?;
        let response = self
            .http
            .head(url.expose_secret())
            .send()
            .await
            .map_err(|e| {
                SendError::Retryable(format!("{shown}: {}", error_chain(&e.without_url())))
            })?;
        Ok(format!("{shown} answers (HEAD: {})", response.status()))
    }

    fn refresh_interval(&self) -> Option<Duration> {
        (self.config.format == WebhookFormat::Alertmanager).then_some(ALERTMANAGER_REFRESH)
    }

    async fn refresh(&self, firing: &[Notification]) -> Result<(), SendError> {
        if self.config.format != WebhookFormat::Alertmanager || firing.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let body = Value::Array(firing.iter().map(|n| alertmanager(n, now)).collect());
        self.post(to_bytes(&body), None, None).await
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The hex HMAC-SHA256 under `key` of `TIMESTAMP.DELIVERY.BODY` (sent as `sha256=HEX`; see
/// [`SIGNATURE_HEADER`]).
pub fn sign(key: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> String {
    hmac_hex(
        key,
        &[
            timestamp.to_string().as_bytes(),
            b".",
            delivery.as_bytes(),
            b".",
            body,
        ],
    )
}

/// The hex HMAC-SHA256 under `key` of the concatenation of `parts`.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// `text` with every occurrence of `secret` replaced by `[redacted]` (a receiver or a proxy
/// before it may echo the request, which holds the PagerDuty routing key).
fn scrubbed(text: &str, secret: &str) -> String {
    let secret = secret.trim();
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, "[redacted]")
}

/// The SPEC §5 generic payload (plus `resolved_at`, `repeat` and `test`).
pub fn generic(n: &Notification) -> Value {
    json!({
        "status": n.status(),
        "alert": n.name,
        "severity": n.severity,
        "job": n.job,
        "summary": n.summary,
        "details": n.details,
        "started_at": rfc3339(n.started_at),
        "resolved_at": n.resolved_at.map(rfc3339),
        "fingerprint": n.fingerprint,
        "repeat": n.kind == DeliveryKind::Repeat,
        "test": n.test,
    })
}

/// A Slack incoming-webhook message.
pub fn slack(n: &Notification) -> Value {
    let icon = match (n.is_firing(), n.severity.as_str()) {
        (false, _) => ":large_green_circle:",
        (true, "critical") => ":red_circle:",
        (true, _) => ":large_yellow_circle:",
    };
    let mut text = format!("{icon} *{}*\n{}", n.subject(), n.summary);
    if n.is_firing() {
        let advice = super::message::advice(&n.name, &n.job);
        if let Some(first) = advice.first() {
            text.push_str(&format!("\n_{first}_"));
        }
    }
    json!({ "text": text })
}

/// A PagerDuty Events API v2 event: `trigger` (firing) or `resolve`, keyed by the fingerprint.
fn pagerduty(n: &Notification, routing_key: &SecretString, trigger: bool) -> Value {
    if !trigger {
        return json!({
            "routing_key": routing_key.expose_secret(),
            "event_action": "resolve",
            "dedup_key": n.fingerprint,
        });
    }
    let summary: String = n.one_line().chars().take(1024).collect();
    json!({
        "routing_key": routing_key.expose_secret(),
        "event_action": "trigger",
        "dedup_key": n.fingerprint,
        "client": "vault-steward",
        "payload": {
            "summary": summary,
            "source": hostname(),
            "severity": if n.severity == "critical" { "critical" } else { "warning" },
            "timestamp": rfc3339(n.started_at),
            "component": n.job,
            "group": "vault-steward",
            "class": n.name,
            "custom_details": n.details,
        },
    })
}

/// One alert of Alertmanager's `POST /api/v2/alerts`. Firing alerts end in
/// [`ALERTMANAGER_TTL`] unless posted again; resolved ones end when they resolved.
fn alertmanager(n: &Notification, now: chrono::DateTime<Utc>) -> Value {
    let ends_at = match n.resolved_at {
        Some(t) if !n.is_firing() => t,
        _ => now + ALERTMANAGER_TTL,
    };
    let description = super::message::advice(&n.name, &n.job).join("; ");
    json!({
        "labels": {
            "alertname": n.name,
            "job": n.job,
            "severity": n.severity,
            "service": "vault-steward",
        },
        "annotations": {
            "summary": n.summary,
            "description": description,
            "fingerprint": n.fingerprint,
        },
        "startsAt": rfc3339(n.started_at),
        "endsAt": rfc3339(ends_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn n(kind: DeliveryKind) -> Notification {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Notification {
            delivery_id: Some(3),
            kind,
            name: "VaultSealed".into(),
            severity: "critical".into(),
            job: "vault-health".into(),
            summary: "Vault at http://v:8200 is sealed".into(),
            details: json!({ "address": "http://v:8200" }),
            started_at: t,
            resolved_at: (kind == DeliveryKind::Resolved).then(|| t + chrono::Duration::minutes(3)),
            fingerprint: "abc".into(),
            test: false,
        }
    }

    #[test]
    fn the_hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", &[b"what do ya ", b"want for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_timestamp_delivery_and_body() {
        let key = b"k";
        let signed = sign(key, 1_800_000_000, "42", b"{}");
        assert_eq!(signed, hmac_hex(key, &[b"1800000000.42.{}"]));
        assert_ne!(signed, sign(key, 1_800_000_001, "42", b"{}"));
        assert_ne!(signed, sign(key, 1_800_000_000, "43", b"{}"));
        assert_ne!(signed, hmac_hex(key, &[b"{}"]));
        // No delivery id (alerts test): the field is empty, the dots stay.
        assert_eq!(
            sign(key, 1_800_000_000, "", b"{}"),
            hmac_hex(key, &[b"1800000000..{}"])
        );
    }

    #[test]
    fn snippets_lose_the_routing_key() {
        let echoed =
            r#"{"errors":["routing_key R0UTE is not valid"],"sent":{"routing_key":"R0UTE"}}"#;
        let out = scrubbed(echoed, "R0UTE\n");
        assert!(!out.contains("R0UTE"), "{out}");
        assert_eq!(out.matches("[redacted]").count(), 2);
        assert_eq!(scrubbed("abc", ""), "abc");
    }

    #[test]
    fn generic_payload_has_the_spec_fields() {
        let v = generic(&n(DeliveryKind::Firing));
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alert"], "VaultSealed");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["job"], "vault-health");
        assert_eq!(v["details"]["address"], "http://v:8200");
        assert_eq!(v["started_at"], "2027-01-15T08:00:00Z");
        assert_eq!(v["fingerprint"], "abc");
        assert_eq!(generic(&n(DeliveryKind::Resolved))["status"], "resolved");
        assert_eq!(generic(&n(DeliveryKind::Repeat))["repeat"], true);
    }

    #[test]
    fn pagerduty_triggers_and_resolves_by_fingerprint() {
        let key = SecretString::from("rk".to_string());
        let t = pagerduty(&n(DeliveryKind::Firing), &key, true);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"], "abc");
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(
            t["payload"]["summary"],
            "[FIRING] VaultSealed job=vault-health: Vault at http://v:8200 is sealed"
        );
        let r = pagerduty(&n(DeliveryKind::Resolved), &key, false);
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], "abc");
    }

    #[test]
    fn alertmanager_alerts_end_when_resolved_or_expire_unless_refreshed() {
        let now = DateTime::from_timestamp(1_800_000_600, 0).unwrap();
        let f = alertmanager(&n(DeliveryKind::Firing), now);
        assert_eq!(f["labels"]["alertname"], "VaultSealed");
        assert_eq!(f["labels"]["job"], "vault-health");
        assert_eq!(f["labels"]["severity"], "critical");
        assert_eq!(f["endsAt"], "2027-01-15T08:15:00Z");
        let r = alertmanager(&n(DeliveryKind::Resolved), now);
        assert_eq!(r["endsAt"], "2027-01-15T08:03:00Z");
        assert_eq!(r["startsAt"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn slack_text_leads_with_the_subject() {
        let v = slack(&n(DeliveryKind::Firing));
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(":red_circle: *[FIRING] VaultSealed job=vault-health*\nVault at"),
            "{text}"
        );
    }
}
