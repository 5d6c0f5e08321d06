//! The delivery worker: takes the notifications queued in the store's outbox to their sinks.
//!
//! One loop per sink, so a slow or hanging sink delays only its own notifications: each loop
//! claims its sink's due deliveries (leased in the store, so two workers — or a worker and its
//! own restart — never send one twice at once), sends them in order with a timeout, and marks
//! each sent, or failed with the error text and the time of the next attempt (exponential
//! backoff with jitter, from `[alerts] retry_initial` up to `retry_max`, for ever: a sink that
//! comes back after a long outage still gets what was queued). A sink receives each alert's
//! notifications in the order they were queued. Delivery is at least once: a crash between a
//! sink's "ok" and its record means one more send after restart (webhooks carry the delivery
//! id in [`DELIVERY_HEADER`](super::webhook::DELIVERY_HEADER) for receivers that deduplicate).
//!
//! The worker also keeps `alerts_queued` current, re-posts firing alerts to sinks that expire
//! them (Alertmanager), and forgets sent deliveries after [`HISTORY`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Notification;
use super::sink::{SendError, Sink, SinkError, build_sinks};
use crate::config::Config;
use crate::engine::backoff::retry_delay;
use crate::metrics::Metrics;
use crate::store::{AlertStatus, DeliveryRecord, Store, StoreError};

/// Deliveries claimed at once by one sink's loop: one, so that a claim lasts only as long as its
/// own send may take, and a crash mid-send delays that one notification by one lease at most.
const BATCH: u32 = 1;
/// How often an idle sink loop looks for new deliveries.
const POLL: Duration = Duration::from_secs(1);
/// Sent deliveries are kept this long (for `deliveries()` and post-mortems), then pruned.
pub const HISTORY: chrono::Duration = chrono::Duration::days(7);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Sends the outbox's notifications.
pub struct Outbox {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    sinks: Vec<Arc<dyn Sink>>,
    /// job → the sinks its alerts go to (`None` = all).
    routes: HashMap<String, Option<Vec<String>>>,
    retry_initial: Duration,
    retry_max: Duration,
    /// This process, in the deliveries' claims.
    claimer: String,
}

impl Outbox {
    /// Builds every sink of the config (reading CA files; connecting to nothing).
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let sinks = build_sinks(&config.alerts)?;
        for sink in &sinks {
            metrics.register_sink(sink.name());
        }
        Ok(Outbox {
            store,
            metrics,
            sinks,
            routes: config
                .jobs
                .iter()
                .map(|j| (j.name.clone(), j.alerts.clone()))
                .collect(),
            retry_initial: config.alerts.retry_initial.as_std(),
            retry_max: config.alerts.retry_max.as_std(),
            claimer: crate::engine::lock::holder_id(),
        })
    }

    /// Runs one loop per sink plus the housekeeping until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        for sink in &self.sinks {
            tasks.spawn(self.clone().sink_loop(sink.clone(), cancel.clone()));
        }
        tasks.spawn(self.clone().housekeeping(cancel.clone()));
        tasks.close();
        tasks.wait().await;
    }

    async fn sink_loop(self: Arc<Self>, sink: Arc<dyn Sink>, cancel: CancellationToken) {
        let mut next_refresh = Instant::now();
        loop {
            if let Some(every) = sink.refresh_interval()
                && Instant::now() >= next_refresh
            {
                next_refresh = Instant::now() + every;
                self.refresh(&*sink, &cancel).await;
            }
            let handled = match self.deliver_batch(&*sink, &cancel).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(sink = sink.name(), error = %e, "outbox: state store unavailable; trying again shortly");
                    0
                }
            };
            if handled == 0 || cancel.is_cancelled() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Claims and sends one batch of `sink`'s due deliveries; returns how many it handled.
    pub async fn deliver_batch(
        &self,
        sink: &dyn Sink,
        cancel: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let now = Utc::now();
        // Long enough for the whole batch to time out: a claim must not lapse while this loop
        // still works on it.
        let lease = now
            + chrono::Duration::from_std(sink.timeout() * BATCH + Duration::from_secs(30))
                .unwrap_or(chrono::Duration::hours(1));
        let batch = self
            .store
            .claim_sink_deliveries(sink.name(), &self.claimer, now, lease, BATCH)
            .await?;
        let mut rest = batch.iter();
        while let Some(d) = rest.next() {
            if cancel.is_cancelled() {
                self.release(std::iter::once(d).chain(rest.by_ref())).await;
                break;
            }
            let Some(alert) = self.store.alert(&d.fingerprint).await? else {
                // Deliveries belong to alerts (foreign key); nothing to say without one.
                self.store.mark_delivered(d.id, Utc::now()).await?;
                continue;
            };
            let n = Notification::from_delivery(d, &alert);
            let outcome = tokio::select! {
                r = tokio::time::timeout(sink.timeout(), sink.send(&n)) => r.unwrap_or_else(|_| {
                    Err(SendError::Retryable(format!(
                        "{} sink {}: no answer within {}",
                        sink.kind(),
                        sink.name(),
                        crate::config::Duration(sink.timeout())
                    )))
                }),
                _ = cancel.cancelled() => {
                    self.release(std::iter::once(d).chain(rest.by_ref())).await;
                    break;
                }
            };
            self.record(sink, d, &n, outcome).await?;
        }
        Ok(batch.len())
    }

    async fn record(
        &self,
        sink: &dyn Sink,
        d: &DeliveryRecord,
        n: &Notification,
        outcome: Result<(), SendError>,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        match outcome {
            Ok(()) => {
                self.store.mark_delivered(d.id, now).await?;
                self.metrics
                    .alerts_sent
                    .with_label_values(&[sink.name(), "success"])
                    .inc();
                tracing::info!(
                    sink = sink.name(),
                    alert = %n.name,
                    job = %n.job,
                    kind = d.kind.as_str(),
                    delivery = d.id,
                    attempt = d.attempts,
                    "notification sent"
                );
            }
            Err(e) => {
                let delay = retry_delay(
                    d.attempts,
                    self.retry_initial,
                    self.retry_max,
                    &mut rand::rng(),
                );
                let text = e.to_string();
                let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                self.store.mark_delivery_failed(d.id, &text, next).await?;
                self.metrics
                    .alerts_sent
                    .with_label_values(&[sink.name(), "failure"])
                    .inc();
                if e.is_retryable() {
                    tracing::warn!(sink = sink.name(), alert = %n.name, job = %n.job, delivery = d.id, attempt = d.attempts, retry_in_s = delay.as_secs_f64(), error = %text, "notification not sent; will retry");
                } else {
                    tracing::error!(sink = sink.name(), alert = %n.name, job = %n.job, delivery = d.id, attempt = d.attempts, retry_in_s = delay.as_secs_f64(), error = %text, "notification refused by its sink; fix the sink's settings (it is retried)");
                }
            }
        }
        Ok(())
    }

    /// Gives claimed deliveries back at once (shutdown): the next process sends them without
    /// waiting for the lease to run out.
    async fn release<'a>(&self, deliveries: impl Iterator<Item = &'a DeliveryRecord>) {
        let now = Utc::now();
        for d in deliveries {
            if let Err(e) = self
                .store
                .mark_delivery_failed(d.id, "interrupted by shutdown", now)
                .await
            {
                tracing::warn!(delivery = d.id, error = %e, "could not release a claimed delivery; it is retried when its lease ends");
            }
        }
    }

    /// Re-posts every firing alert routed to `sink` (best effort: the next refresh retries).
    async fn refresh(&self, sink: &dyn Sink, cancel: &CancellationToken) {
        let firing = match self.store.firing_alerts().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(sink = sink.name(), error = %e, "outbox: cannot list firing alerts to refresh");
                return;
            }
        };
        let routed: Vec<Notification> = firing
            .iter()
            .filter(|a| a.status == AlertStatus::Firing && self.routed(&a.job, sink.name()))
            .map(Notification::from_firing)
            .collect();
        if routed.is_empty() {
            return;
        }
        let outcome = tokio::select! {
            r = tokio::time::timeout(sink.timeout(), sink.refresh(&routed)) => r,
            _ = cancel.cancelled() => return,
        };
        match outcome {
            Ok(Ok(())) => {
                tracing::debug!(
                    sink = sink.name(),
                    alerts = routed.len(),
                    "firing alerts refreshed"
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(sink = sink.name(), error = %e, "refreshing firing alerts failed")
            }
            Err(_) => tracing::warn!(sink = sink.name(), "refreshing firing alerts timed out"),
        }
    }

    fn routed(&self, job: &str, sink: &str) -> bool {
        match self.routes.get(job) {
            Some(Some(list)) => list.iter().any(|s| s == sink),
            _ => true,
        }
    }

    async fn housekeeping(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_prune: Option<Instant> = None;
        loop {
            match self.store.queued_deliveries().await {
                Ok(n) => self
                    .metrics
                    .alerts_queued
                    .set(i64::try_from(n).unwrap_or(i64::MAX)),
                Err(e) => tracing::debug!(error = %e, "outbox: cannot count queued deliveries"),
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                match self.store.prune_sent_deliveries(Utc::now() - HISTORY).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "outbox: forgot old sent notifications"),
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: pruning sent notifications failed")
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
