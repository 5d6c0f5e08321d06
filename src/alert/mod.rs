//! Alerts as incidents, and their delivery to on-call.
//!
//! The engine raises and resolves alerts from job outcomes ([`Incidents`]); this module keeps
//! them in the store's outbox — one incident per (alert name, job), one queued notification per
//! routed sink when it starts, a repeat at most every `repeat_interval` while it fires, and one
//! "resolved" at the end. Every notification is stored before anything is sent, so it survives
//! restarts and outages of its sink; [`outbox`] delivers them, one loop per sink, with retries
//! and backoff. The sinks are [`email`] (SMTP through lettre) and [`webhook`] (generic with an
//! HMAC signature, Slack, PagerDuty Events API v2, Alertmanager); [`message`] writes what they
//! say.
//!
//! Components never send alerts themselves: they return [`AlertSignal`]s, and nothing in an
//! alert — summary, details, subject, body — ever holds a secret value.

pub mod email;
pub mod message;
pub mod outbox;
pub mod sink;
pub mod webhook;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Duration;
use crate::job::AlertSignal;
use crate::store::{
    AlertRecord, AlertStatus, DeliveryKind, DeliveryState, NewDelivery, Store, StoreError,
};

pub use message::Notification;

/// Well-known alert names (SPEC §5).
pub const JOB_FAILING: &str = "JobFailing";
/// A rotation kind's secret is older than its `every` by more than a margin.
pub const ROTATION_OVERDUE: &str = "RotationOverdue";
/// A snapshot job has not succeeded for two of its scheduled times.
pub const SNAPSHOT_STALE: &str = "SnapshotStale";
/// A key rotated by hand is older than its `max_age` (reminder jobs).
pub const KEY_TOO_OLD: &str = "KeyTooOld";
/// A check-and-set write found a version written by someone else.
pub const CONCURRENT_WRITE: &str = "ConcurrentWrite";
/// An open rotation that cannot go forward or back without a human (SPEC §6): the target
/// refused the consumers' password back and may hold only the pending one.
pub const ROTATION_STUCK: &str = "RotationStuck";
/// Vault answers that it is sealed.
pub const VAULT_SEALED: &str = "VaultSealed";
/// Vault does not answer its health endpoint.
pub const VAULT_UNREACHABLE: &str = "VaultUnreachable";
/// Vault answers but cannot serve: not initialised, or a standby that knows no active node.
pub const VAULT_UNHEALTHY: &str = "VaultUnhealthy";

/// The stable id of the incident `name` for `job`.
pub fn fingerprint(name: &str, job: &str) -> String {
    let digest = Sha256::digest(format!("{name}\u{0}{job}").as_bytes());
    hex::encode(&digest[..8])
}

/// An alert condition as seen now, whoever saw it.
struct Observed<'a> {
    name: &'a str,
    firing: bool,
    severity: &'a str,
    summary: &'a str,
    /// JSON object text.
    details: String,
}

/// Where a job's alerts go: sink names, or `None` for every sink.
pub type Routes<'a> = Option<&'a [String]>;

/// Raises and resolves incidents in the outbox.
pub struct Incidents {
    store: Arc<dyn Store>,
    repeat_interval: Duration,
    /// Every configured sink's name.
    sinks: Vec<String>,
    /// Which alerts fire, as far as this process knows: see [`Incidents::load_firing`].
    known: Mutex<KnownFiring>,
}

/// The fingerprints of the firing alerts, kept so that resolving an alert that does not fire —
/// every successful run resolves its `JobFailing`, every clean rotation its `ConcurrentWrite` —
/// costs no store lookup. `None` until loaded: every signal is then looked up, as is every
/// signal not applied with `known`.
#[derive(Debug, Default)]
struct KnownFiring {
    firing: Option<HashSet<String>>,
    /// Bumped at every change this process makes, so that a reload that read the store before
    /// a change does not overwrite it.
    changes: u64,
}

impl Incidents {
    pub fn new(store: Arc<dyn Store>, repeat_interval: Duration, sinks: Vec<String>) -> Self {
        Incidents {
            store,
            repeat_interval,
            sinks,
            known: Mutex::new(KnownFiring::default()),
        }
    }

    fn known(&self) -> MutexGuard<'_, KnownFiring> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads which alerts fire from the store, for [`Incidents::apply_known`]. This process's
    /// own changes are tracked as they happen; alerts raised by another process (a CLI `rotate`,
    /// another instance) are seen at the next load, so callers pass `known` only when no other
    /// process can have touched the job's alerts since (the engine checks the job's state).
    pub async fn load_firing(&self) -> Result<(), StoreError> {
        self.known_before(self.store.firing_alerts())
            .await
            .map(drop)
    }

    /// Forgets what fires: every signal is looked up until the next load.
    pub fn forget_firing(&self) {
        self.known().firing = None;
    }

    /// Runs `read` (a read of the firing alerts) and takes its answer as what fires; if this
    /// process changed an alert meanwhile, the answer may be stale and nothing is trusted until
    /// the next load. Returns the answer.
    async fn known_before(
        &self,
        read: impl Future<Output = Result<Vec<AlertRecord>, StoreError>>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let before = self.known().changes;
        let alerts = read.await?;
        let mut known = self.known();
        known.firing = (known.changes == before)
            .then(|| alerts.iter().map(|a| a.fingerprint.clone()).collect());
        Ok(alerts)
    }

    /// Whether the alert `fp` is surely not firing (known, and not in the firing set).
    fn surely_resolved(&self, fp: &str) -> bool {
        self.known()
            .firing
            .as_ref()
            .is_some_and(|set| !set.contains(fp))
    }

    /// Notes a change this process wrote to the store.
    fn note(&self, fp: &str, firing: bool) {
        let mut known = self.known();
        known.changes += 1;
        if let Some(set) = known.firing.as_mut() {
            if firing {
                set.insert(fp.to_string());
            } else {
                set.remove(fp);
            }
        }
    }

    /// Applies a signal for `job`, routed to `routes` (sink names; `None` = every sink).
    /// Returns whether a notification was queued.
    pub async fn apply(
        &self,
        job: &str,
        signal: &AlertSignal,
        routes: Routes<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.apply_known(job, signal, routes, now, false).await
    }

    /// [`Incidents::apply`]; with `known`, the caller vouches that no other process changed
    /// this job's alerts since what fires was last loaded (see [`Incidents::load_firing`]), so a
    /// signal resolving an alert not known to fire is dropped without a store lookup.
    pub async fn apply_known(
        &self,
        job: &str,
        signal: &AlertSignal,
        routes: Routes<'_>,
        now: DateTime<Utc>,
        known: bool,
    ) -> Result<bool, StoreError> {
        let seen = Observed {
            name: signal.name,
            firing: signal.firing,
            severity: signal.severity.as_str(),
            summary: &signal.summary,
            details: signal.details.to_string(),
        };
        self.observe(job, &seen, routes, now, known).await
    }

    async fn observe(
        &self,
        job: &str,
        seen: &Observed<'_>,
        routes: Routes<'_>,
        now: DateTime<Utc>,
        known: bool,
    ) -> Result<bool, StoreError> {
        let fp = fingerprint(seen.name, job);
        if known && !seen.firing && self.surely_resolved(&fp) {
            // Nothing to resolve; the lookup below would come to the same.
            return Ok(false);
        }
        let existing = self.store.alert(&fp).await?;
        let firing_now = existing
            .as_ref()
            .is_some_and(|a| a.status == AlertStatus::Firing);
        let kind = match (seen.firing, firing_now) {
            (true, false) => Some(DeliveryKind::Firing),
            (true, true) => {
                let last = existing.as_ref().and_then(|a| a.last_notified_at);
                self.repeat_due(last, now).then_some(DeliveryKind::Repeat)
            }
            (false, true) => Some(DeliveryKind::Resolved),
            (false, false) => None,
        };
        if kind.is_none() && !seen.firing {
            return Ok(false);
        }
        let started_at = match (&existing, seen.firing && firing_now) {
            (Some(a), true) => a.started_at,
            _ => now,
        };
        let record = AlertRecord {
            fingerprint: fp.clone(),
            name: seen.name.to_string(),
            job: job.to_string(),
            severity: seen.severity.to_string(),
            status: if seen.firing {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            summary: seen.summary.to_string(),
            details: seen.details.clone(),
            started_at: if seen.firing {
                started_at
            } else {
                existing.as_ref().map(|a| a.started_at).unwrap_or(now)
            },
            resolved_at: (!seen.firing).then_some(now),
            last_notified_at: match kind {
                Some(DeliveryKind::Firing | DeliveryKind::Repeat) => Some(now),
                _ => existing.as_ref().and_then(|a| a.last_notified_at),
            },
        };
        self.store.upsert_alert(&record).await?;
        self.note(&fp, seen.firing);
        let Some(kind) = kind else {
            return Ok(false);
        };
        match kind {
            DeliveryKind::Resolved => {
                tracing::info!(alert = seen.name, job, fingerprint = %fp, "alert resolved")
            }
            _ => tracing::warn!(
                alert = seen.name,
                job,
                fingerprint = %fp,
                severity = seen.severity,
                summary = %seen.summary,
                repeat = kind == DeliveryKind::Repeat,
                "alert firing"
            ),
        }
        self.queue(&record, kind, routes, now).await?;
        Ok(true)
    }

    /// Queues a repeat of every firing alert whose newest notification is `repeat_interval`
    /// old: a job whose runs are rarer than that (a daily reminder, a sealed Vault checked
    /// hourly) still reminds on-call on time. `routes_of` gives each job's routes. Returns how
    /// many alerts were repeated.
    pub async fn repeat_firing(
        &self,
        routes_of: &(dyn Fn(&str) -> Option<Vec<String>> + Send + Sync),
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut repeated = 0;
        // The same read refreshes what this process knows to fire.
        for mut alert in self.known_before(self.store.firing_alerts()).await? {
            if !self.repeat_due(alert.last_notified_at, now) {
                continue;
            }
            alert.last_notified_at = Some(now);
            self.store.upsert_alert(&alert).await?;
            tracing::warn!(alert = %alert.name, job = %alert.job, fingerprint = %alert.fingerprint, "alert still firing; repeating");
            let routes = routes_of(&alert.job);
            self.queue(&alert, DeliveryKind::Repeat, routes.as_deref(), now)
                .await?;
            repeated += 1;
        }
        Ok(repeated)
    }

    /// Resolves every firing alert of a job that `is_known` does not know (removed from the
    /// config): nothing would ever resolve it otherwise.
    pub async fn resolve_orphans(
        &self,
        is_known: &(dyn Fn(&str) -> bool + Send + Sync),
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut resolved = 0;
        for alert in self.store.firing_alerts().await? {
            if is_known(&alert.job) {
                continue;
            }
            let summary = format!(
                "job {} is no longer configured; its alert is closed",
                alert.job
            );
            let seen = Observed {
                name: &alert.name,
                firing: false,
                severity: &alert.severity,
                summary: &summary,
                details: serde_json::json!({ "reason": "job removed from the configuration" })
                    .to_string(),
            };
            self.observe(&alert.job, &seen, None, now, false).await?;
            resolved += 1;
        }
        Ok(resolved)
    }

    fn repeat_due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last.is_none_or(|t| now - t >= self.repeat_interval.as_chrono())
    }

    /// Queues one notification of `alert` per routed sink. A repeat is not queued for a sink
    /// that still has an unsent firing or repeat of this alert (its sink is down): that one
    /// brings the news when the sink is back, and a night-long outage does not end in a burst.
    async fn queue(
        &self,
        alert: &AlertRecord,
        kind: DeliveryKind,
        routes: Routes<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let unsent_news: Vec<String> = if kind == DeliveryKind::Repeat {
            self.store
                .deliveries(&alert.fingerprint)
                .await?
                .into_iter()
                .filter(|d| d.state == DeliveryState::Pending && d.kind != DeliveryKind::Resolved)
                .map(|d| d.sink)
                .collect()
        } else {
            Vec::new()
        };
        for sink in self
            .sinks
            .iter()
            .filter(|s| routes.is_none_or(|r| r.contains(s)))
        {
            if unsent_news.contains(sink) {
                tracing::debug!(sink, fingerprint = %alert.fingerprint, "an earlier notification is still queued for this sink; no repeat");
                continue;
            }
            self.store
                .enqueue_delivery(&NewDelivery {
                    fingerprint: alert.fingerprint.clone(),
                    sink: sink.clone(),
                    kind,
                    created_at: now,
                    summary: alert.summary.clone(),
                    details: alert.details.clone(),
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Severity;
    use crate::store::sqlite::SqliteStore;

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

    fn failing(firing: bool, n: u32) -> AlertSignal {
        AlertSignal {
            name: JOB_FAILING,
            firing,
            severity: Severity::Critical,
            summary: format!("failed {n} times"),
            details: serde_json::json!({ "n": n }),
        }
    }

    async fn store() -> Arc<dyn Store> {
        Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap())
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    /// A job failing once a minute for 100 minutes with a 30-minute repeat interval: one firing
    /// notification per sink, then a repeat at 30, 60 and 90 minutes, then one resolved.
    #[tokio::test]
    async fn a_hundred_failures_queue_one_firing_and_repeats_at_the_interval() {
        let s = store().await;
        let sinks = vec!["mail".to_string(), "hook".to_string()];
        let inc = Incidents::new(s.clone(), Duration::from_secs(30 * 60), sinks);
        let mut queued_at = Vec::new();
        for minute in 0..100 {
            if inc
                .apply("j", &failing(true, minute as u32 + 1), None, at(minute))
                .await
                .unwrap()
            {
                queued_at.push(minute);
            }
            // The sinks are up: everything queued is sent at once.
            for d in s.deliveries(&fingerprint(JOB_FAILING, "j")).await.unwrap() {
                if d.state == DeliveryState::Pending {
                    s.mark_delivered(d.id, at(minute)).await.unwrap();
                }
            }
        }
        assert_eq!(queued_at, [0, 30, 60, 90]);
        assert!(
            inc.apply("j", &failing(false, 0), None, at(100))
                .await
                .unwrap()
        );
        assert!(
            !inc.apply("j", &failing(false, 0), None, at(101))
                .await
                .unwrap()
        );
        let all = s.deliveries(&fingerprint(JOB_FAILING, "j")).await.unwrap();
        let kinds: Vec<_> = all
            .iter()
            .filter(|d| d.sink == "mail")
            .map(|d| d.kind)
            .collect();
        use DeliveryKind::*;
        assert_eq!(kinds, [Firing, Repeat, Repeat, Repeat, Resolved]);
        assert_eq!(all.len(), 10);
        // Each notification carries the text of its moment.
        assert_eq!(all[0].summary.as_deref(), Some("failed 1 times"));
        assert_eq!(all[8].summary.as_deref(), Some("failed 0 times"));
    }

    #[tokio::test]
    async fn no_repeat_piles_up_behind_an_unsent_notification_and_routes_are_honoured() {
        let s = store().await;
        let sinks = vec!["mail".to_string(), "hook".to_string()];
        let inc = Incidents::new(s.clone(), Duration::from_secs(60), sinks);
        let routes = ["mail".to_string()];
        inc.apply("j", &failing(true, 1), Some(&routes), at(0))
            .await
            .unwrap();
        // `mail` is down all along: the repeats due at 1, 2, 3 minutes are not queued behind
        // the unsent firing one; the resolved one is.
        for m in 1..4 {
            inc.apply("j", &failing(true, 1), Some(&routes), at(m))
                .await
                .unwrap();
            inc.repeat_firing(&|_| Some(routes.to_vec()), at(m))
                .await
                .unwrap();
        }
        inc.apply("j", &failing(false, 0), Some(&routes), at(5))
            .await
            .unwrap();
        let all = s.deliveries(&fingerprint(JOB_FAILING, "j")).await.unwrap();
        let got: Vec<_> = all.iter().map(|d| (d.sink.as_str(), d.kind)).collect();
        assert_eq!(
            got,
            [
                ("mail", DeliveryKind::Firing),
                ("mail", DeliveryKind::Resolved)
            ]
        );
    }

    #[tokio::test]
    async fn firing_alerts_repeat_without_new_signals_and_orphans_resolve() {
        let s = store().await;
        let inc = Incidents::new(s.clone(), Duration::from_secs(3600), vec!["hook".into()]);
        inc.apply("gone", &failing(true, 1), None, at(0))
            .await
            .unwrap();
        inc.apply("kept", &failing(true, 1), None, at(0))
            .await
            .unwrap();
        let routes = |_: &str| None;
        assert_eq!(inc.repeat_firing(&routes, at(59)).await.unwrap(), 0);
        for fp in [
            fingerprint(JOB_FAILING, "gone"),
            fingerprint(JOB_FAILING, "kept"),
        ] {
            for d in s.deliveries(&fp).await.unwrap() {
                s.mark_delivered(d.id, at(1)).await.unwrap();
            }
        }
        assert_eq!(inc.repeat_firing(&routes, at(60)).await.unwrap(), 2);
        assert_eq!(inc.repeat_firing(&routes, at(61)).await.unwrap(), 0);
        let kept = s
            .deliveries(&fingerprint(JOB_FAILING, "kept"))
            .await
            .unwrap();
        assert_eq!(kept.last().map(|d| d.kind), Some(DeliveryKind::Repeat));

        let n = inc
            .resolve_orphans(&|job| job == "kept", at(62))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let gone = s
            .alert(&fingerprint(JOB_FAILING, "gone"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.status, AlertStatus::Resolved);
        let firing = s.firing_alerts().await.unwrap();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0].job, "kept");
    }
}
