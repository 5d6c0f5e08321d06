//! What a notification says, whatever carries it: the SPEC §5 subject
//! (`[FIRING|RESOLVED] NAME job=JOB`), a plain-text body with what happened and what to do, and
//! the facts every payload format is built from. Only names, times, counts and scrubbed error
//! texts go in — never a secret value.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::store::{AlertRecord, DeliveryKind, DeliveryRecord};

/// One notification of one alert, ready to be rendered by a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The outbox row it comes from; `None` for `alerts test`.
    pub delivery_id: Option<i64>,
    pub kind: DeliveryKind,
    /// The alert name, e.g. `JobFailing`.
    pub name: String,
    /// `critical` or `warning`.
    pub severity: String,
    pub job: String,
    pub summary: String,
    /// A JSON object (facts, no secrets).
    pub details: serde_json::Value,
    pub started_at: DateTime<Utc>,
    /// When it resolved (resolved notifications only).
    pub resolved_at: Option<DateTime<Utc>>,
    pub fingerprint: String,
    /// Sent by `alerts test`, not by an incident.
    pub test: bool,
}

/// The alert name of `alerts test`.
pub const TEST_ALERT: &str = "VaultStewardTest";

impl Notification {
    /// The notification a queued delivery stands for. The delivery's own copy of the summary and
    /// details wins over the alert row's (which may already say "resolved").
    pub fn from_delivery(d: &DeliveryRecord, alert: &AlertRecord) -> Notification {
        let details = d.details.as_deref().unwrap_or(&alert.details);
        Notification {
            delivery_id: Some(d.id),
            kind: d.kind,
            name: alert.name.clone(),
            severity: alert.severity.clone(),
            job: alert.job.clone(),
            summary: d.summary.clone().unwrap_or_else(|| alert.summary.clone()),
            details: serde_json::from_str(details)
                .unwrap_or_else(|_| serde_json::json!({ "text": details })),
            started_at: alert.started_at,
            // The delivery was queued at the moment of resolution.
            resolved_at: (d.kind == DeliveryKind::Resolved).then_some(d.created_at),
            fingerprint: alert.fingerprint.clone(),
            test: false,
        }
    }

    /// A still-firing alert, as re-sent to receivers that expire alerts (Alertmanager).
    pub fn from_firing(alert: &AlertRecord) -> Notification {
        Notification {
            delivery_id: None,
            kind: DeliveryKind::Repeat,
            name: alert.name.clone(),
            severity: alert.severity.clone(),
            job: alert.job.clone(),
            summary: alert.summary.clone(),
            details: serde_json::from_str(&alert.details)
                .unwrap_or_else(|_| serde_json::json!({ "text": alert.details })),
            started_at: alert.started_at,
            resolved_at: None,
            fingerprint: alert.fingerprint.clone(),
            test: false,
        }
    }

    /// The notification `alerts test` sends through every sink.
    pub fn test(now: DateTime<Utc>) -> Notification {
        Notification {
            delivery_id: None,
            kind: DeliveryKind::Firing,
            name: TEST_ALERT.to_string(),
            severity: "warning".to_string(),
            job: "alerts-test".to_string(),
            summary: "test alert from `vault-steward alerts test`; nothing is wrong".to_string(),
            details: serde_json::json!({ "host": hostname() }),
            started_at: now,
            resolved_at: None,
            fingerprint: super::fingerprint(TEST_ALERT, &now.timestamp_millis().to_string()),
            test: true,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.kind != DeliveryKind::Resolved
    }

    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.is_firing() {
            "firing"
        } else {
            "resolved"
        }
    }

    /// `[FIRING] NAME job=JOB` or `[RESOLVED] NAME job=JOB` (SPEC §5).
    pub fn subject(&self) -> String {
        let tag = if self.is_firing() {
            "FIRING"
        } else {
            "RESOLVED"
        };
        format!("[{tag}] {} job={}", self.name, self.job)
    }

    /// The plain-text body: what happened, the facts, what to do.
    pub fn body(&self) -> String {
        let mut out = String::new();
        let what = match (self.kind, self.test) {
            (_, true) => "This is a test notification.".to_string(),
            (DeliveryKind::Firing, _) => format!(
                "{} is firing for job {} ({}).",
                self.name, self.job, self.severity
            ),
            (DeliveryKind::Repeat, _) => format!(
                "{} is still firing for job {} ({}), since {} ({} ago).",
                self.name,
                self.job,
                self.severity,
                rfc3339(self.started_at),
                ago(self.started_at, Utc::now())
            ),
            (DeliveryKind::Resolved, _) => format!(
                "{} for job {} is resolved{}.",
                self.name,
                self.job,
                self.resolved_at
                    .map(|t| format!(" after {}", ago(self.started_at, t)))
                    .unwrap_or_default()
            ),
        };
        out.push_str(&what);
        out.push_str("\n\n");
        out.push_str(&self.summary);
        out.push_str("\n\n");
        if let Some(map) = self.details.as_object()
            && !map.is_empty()
        {
            out.push_str("Details:\n");
            for (k, v) in map {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_string(),
                    other => other.to_string(),
                };
                out.push_str(&format!("  {k}: {v}\n"));
            }
            out.push('\n');
        }
        if self.is_firing() {
            out.push_str("What to do:\n");
            for line in advice(&self.name, &self.job) {
                out.push_str("  - ");
                out.push_str(&line);
                out.push('\n');
            }
            out.push('\n');
        } else {
            out.push_str("Nothing to do; this closes the incident.\n\n");
        }
        out.push_str(&format!("Started: {}\n", rfc3339(self.started_at)));
        if let Some(t) = self.resolved_at {
            out.push_str(&format!("Resolved: {}\n", rfc3339(t)));
        }
        out.push_str(&format!("Fingerprint: {}\n", self.fingerprint));
        out.push_str(&format!("Sent by vault-steward on {}\n", hostname()));
        out
    }

    /// One line for chat: subject and summary.
    pub fn one_line(&self) -> String {
        format!("{}: {}", self.subject(), self.summary)
    }
}

/// What on-call should do about an alert, by name.
pub fn advice(name: &str, job: &str) -> Vec<String> {
    let status = format!("`vault-steward status` shows job {job}'s last error");
    match name {
        super::JOB_FAILING => vec![
            status,
            "the daemon's log (journalctl -u vault-steward) has every attempt".into(),
            format!(
                "after fixing the cause, `vault-steward rotate {job}` (or `snapshot`) runs it now"
            ),
        ],
        super::ROTATION_OVERDUE => vec![
            format!("the secret of job {job} is older than its rotation interval allows"),
            status,
            format!("`vault-steward rotate {job}` rotates it now"),
        ],
        super::SNAPSHOT_STALE => vec![
            format!(
                "no snapshot of job {job} succeeded for two scheduled times: recovery depends on it"
            ),
            status,
            format!(
                "`vault-steward snapshot {job}` takes one now; `backups list {job}` shows what exists"
            ),
        ],
        super::KEY_TOO_OLD => vec![
            "this key is rotated by hand: issue a new one at its provider".into(),
            format!("write it to the path of job {job}; the reminder resolves on its next check"),
        ],
        super::CONCURRENT_WRITE => vec![
            format!("someone wrote the secret of job {job} while vault-steward rotated it"),
            "check who did (Vault audit log) and that consumers use the newest version".into(),
            "it resolves on the next clean rotation".into(),
        ],
        super::ROTATION_STUCK => vec![
            format!(
                "a rotation of job {job} cannot finish or be undone: the database refused the consumers' password back"
            ),
            "the role's password is in the job's pending path (`pending_path`) and nowhere else: do not delete it".into(),
            "fix the cause named in `vault-steward status` (admin privilege, password-reuse policy), then `vault-steward rotate` the job; it resolves when the rotation ends".into(),
        ],
        super::VAULT_SEALED => vec![
            "Vault is sealed: every secret read fails until it is unsealed".into(),
            "unseal it (`vault operator unseal`, with the key holders) or check auto-unseal".into(),
            "find out why it sealed (restart, an operator, a storage failure) in Vault's log"
                .into(),
        ],
        super::VAULT_UNREACHABLE => vec![
            "Vault does not answer: check the service, its host and the network path".into(),
            "`curl -s $VAULT_ADDR/v1/sys/health` from vault-steward's host".into(),
        ],
        super::VAULT_UNHEALTHY => vec![
            "Vault answers but cannot serve (not initialised, or a standby without an active node)"
                .into(),
            "check `vault status` and the raft peers (`vault operator raft list-peers`)".into(),
        ],
        super::message::TEST_ALERT => {
            vec!["nothing: this proves the path to on-call works".into()]
        }
        _ => vec![status],
    }
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `3h 5m`, `42s`.
fn ago(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let secs = (to - from).num_seconds().max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// This host's name, for the message footer and PagerDuty's `source`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AlertStatus, DeliveryState};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn alert() -> AlertRecord {
        AlertRecord {
            fingerprint: "fp1".into(),
            name: "JobFailing".into(),
            job: "billing-key".into(),
            severity: "critical".into(),
            status: AlertStatus::Resolved,
            summary: "job billing-key succeeded again".into(),
            details: r#"{"consecutive_failures":0}"#.into(),
            started_at: t(0),
            resolved_at: Some(t(4000)),
            last_notified_at: Some(t(0)),
        }
    }

    fn delivery(kind: DeliveryKind, summary: Option<&str>) -> DeliveryRecord {
        DeliveryRecord {
            id: 7,
            fingerprint: "fp1".into(),
            sink: "mail".into(),
            kind,
            state: DeliveryState::Pending,
            attempts: 1,
            next_attempt_at: t(0),
            last_error: None,
            created_at: t(3725),
            sent_at: None,
            summary: summary.map(str::to_string),
            details: summary.map(|_| {
                r#"{"consecutive_failures":3,"last_error":"permission denied on secret/x"}"#
                    .to_string()
            }),
        }
    }

    #[test]
    fn a_late_firing_notification_keeps_its_own_text() {
        let n = Notification::from_delivery(
            &delivery(
                DeliveryKind::Firing,
                Some("job billing-key failed 3 times in a row"),
            ),
            &alert(),
        );
        assert_eq!(n.subject(), "[FIRING] JobFailing job=billing-key");
        let body = n.body();
        assert!(body.starts_with("JobFailing is firing for job billing-key (critical).\n\njob billing-key failed 3 times in a row\n"), "{body}");
        assert!(
            body.contains("  last_error: permission denied on secret/x\n"),
            "{body}"
        );
        assert!(
            body.contains(
                "What to do:\n  - `vault-steward status` shows job billing-key's last error\n"
            ),
            "{body}"
        );
        assert!(body.contains("Started: 2027-01-15T08:00:00Z\n"), "{body}");
        assert!(body.contains("Fingerprint: fp1\n"), "{body}");
    }

    #[test]
    fn resolved_notifications_say_so_and_how_long_it_lasted() {
        let n = Notification::from_delivery(&delivery(DeliveryKind::Resolved, None), &alert());
        assert_eq!(n.subject(), "[RESOLVED] JobFailing job=billing-key");
        assert_eq!(n.status(), "resolved");
        assert_eq!(n.resolved_at, Some(t(3725)));
        let body = n.body();
        assert!(
            body.starts_with("JobFailing for job billing-key is resolved after 1h 2m.\n\njob billing-key succeeded again\n"),
            "{body}"
        );
        assert!(body.contains("Nothing to do"), "{body}");
        assert!(!body.contains("What to do"), "{body}");
    }

    #[test]
    fn every_known_alert_has_advice() {
        for name in [
            crate::alert::JOB_FAILING,
            crate::alert::ROTATION_OVERDUE,
            crate::alert::SNAPSHOT_STALE,
            crate::alert::KEY_TOO_OLD,
            crate::alert::CONCURRENT_WRITE,
            crate::alert::ROTATION_STUCK,
            crate::alert::VAULT_SEALED,
            crate::alert::VAULT_UNREACHABLE,
            crate::alert::VAULT_UNHEALTHY,
        ] {
            let a = advice(name, "j");
            assert!(!a.is_empty() && a != advice("Other", "j"), "{name}");
        }
        assert_eq!(ago(t(0), t(3 * 86_400 + 7200)), "3d 2h");
        assert_eq!(ago(t(0), t(42)), "42s");
    }
}
