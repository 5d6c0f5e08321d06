//! Alerts as incidents: the engine raises and resolves them from job outcomes; this module keeps
//! them in the store's outbox — one incident per (alert name, job), one queued notification per
//! sink when it starts, a repeat at most every `repeat_interval` while it fires, and one
//! "resolved" at the end. Queued notifications survive restarts; delivering them to email and
//! webhook sinks is the sinks' business, not this module's.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Duration;
use crate::job::AlertSignal;
use crate::store::{AlertRecord, AlertStatus, DeliveryKind, NewDelivery, Store, StoreError};

/// Well-known alert names (SPEC §5).
pub const JOB_FAILING: &str = "JobFailing";

/// The stable id of the incident `name` for `job`.
pub fn fingerprint(name: &str, job: &str) -> String {
    let digest = Sha256::digest(format!("{name}\u{0}{job}").as_bytes());
    hex::encode(&digest[..8])
}

/// Raises and resolves incidents in the outbox.
pub struct Incidents {
    store: Arc<dyn Store>,
    repeat_interval: Duration,
    /// Every configured sink's name.
    sinks: Vec<String>,
}

impl Incidents {
    pub fn new(store: Arc<dyn Store>, repeat_interval: Duration, sinks: Vec<String>) -> Self {
        Incidents {
            store,
            repeat_interval,
            sinks,
        }
    }

    /// Applies a signal for `job`, routed to `routes` (sink names; `None` = every sink).
    /// Returns whether a notification was queued.
    pub async fn apply(
        &self,
        job: &str,
        signal: &AlertSignal,
        routes: Option<&[String]>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let fp = fingerprint(signal.name, job);
        let existing = self.store.alert(&fp).await?;
        let firing_now = existing
            .as_ref()
            .is_some_and(|a| a.status == AlertStatus::Firing);
        let kind = match (signal.firing, firing_now) {
            (true, false) => Some(DeliveryKind::Firing),
            (true, true) => {
                let last = existing.as_ref().and_then(|a| a.last_notified_at);
                let repeat_due = last.is_none_or(|t| now - t >= self.repeat_interval.as_chrono());
                repeat_due.then_some(DeliveryKind::Repeat)
            }
            (false, true) => Some(DeliveryKind::Resolved),
            (false, false) => None,
        };
        let started_at = match (&existing, signal.firing && firing_now) {
            (Some(a), true) => a.started_at,
            _ => now,
        };
        if kind.is_none() && !signal.firing {
            return Ok(false);
        }
        let record = AlertRecord {
            fingerprint: fp.clone(),
            name: signal.name.to_string(),
            job: job.to_string(),
            severity: signal.severity.as_str().to_string(),
            status: if signal.firing {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            summary: signal.summary.clone(),
            details: signal.details.to_string(),
            started_at: if signal.firing {
                started_at
            } else {
                existing.as_ref().map(|a| a.started_at).unwrap_or(now)
            },
            resolved_at: (!signal.firing).then_some(now),
            last_notified_at: match kind {
                Some(DeliveryKind::Firing | DeliveryKind::Repeat) => Some(now),
                _ => existing.as_ref().and_then(|a| a.last_notified_at),
            },
        };
        self.store.upsert_alert(&record).await?;
        let Some(kind) = kind else {
            return Ok(false);
        };
        match kind {
            DeliveryKind::Resolved => {
                tracing::info!(alert = signal.name, job, fingerprint = %fp, "alert resolved")
            }
            _ => tracing::warn!(
                alert = signal.name,
                job,
                fingerprint = %fp,
                severity = signal.severity.as_str(),
                summary = %signal.summary,
                "alert firing"
            ),
        }
        for sink in self
            .sinks
            .iter()
            .filter(|s| routes.is_none_or(|r| r.contains(s)))
        {
            self.store
                .enqueue_delivery(&NewDelivery {
                    fingerprint: fp.clone(),
                    sink: sink.clone(),
                    kind,
                    created_at: now,
                })
                .await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(
            fingerprint("JobFailing", "a"),
            fingerprint("JobFailing", "a")
        );
        assert_ne!(
            fingerprint("JobFailing", "a"),
            fingerprint("JobFailing", "b")
        );
        assert_ne!(
            fingerprint("JobFailing", "a"),
            fingerprint("KeyTooOld", "a")
        );
        assert_eq!(fingerprint("x", "y").len(), 16);
    }
}
