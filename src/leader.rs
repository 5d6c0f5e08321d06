//! Leadership among several instances sharing one PostgreSQL store: exactly one acts, the others
//! stand by (serving `/metrics`, `/healthz`, `/readyz`) and take over when the leader dies or
//! loses the database.
//!
//! [`Leadership::run`] campaigns for the lease every third of `lease_ttl`; once elected it runs a
//! *term* — the engine, its watch and the alert outbox, given a cancellation token — while a
//! renewal task keeps the lease. The term ends when the lease is lost: another instance holds it,
//! or it could not be renewed before it would expire. The deadline is counted on this host's
//! monotonic clock from the moment the last successful renewal was *sent*, so it always falls
//! before the expiry the database computed: a leader cut off from the database stops acting
//! before anyone else may start. On loss the fencing token of the store's connections drops to 0
//! at once (the database then refuses every write, see migration 0008), and the term is cancelled,
//! which stops running jobs. Each new term starts the engine afresh, so a new leader rolls
//! forward what the previous one left unfinished, exactly as a restarted daemon does.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::lease::PgLease;

/// The lease and this instance's part in it.
pub struct Leadership {
    lease: PgLease,
    holder: String,
    ttl: Duration,
    /// The fencing token the store's connections carry; 0 when not leading.
    fence: Arc<AtomicI64>,
    leader: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Leadership {
    /// `fence` is the token cell the store's pool reads (see
    /// [`PostgresStore::open_fenced`](crate::store::postgres::PostgresStore::open_fenced)).
    pub fn new(
        lease: PgLease,
        holder: String,
        ttl: Duration,
        fence: Arc<AtomicI64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        fence.store(0, Ordering::SeqCst);
        metrics.leader.set(0);
        Leadership {
            lease,
            holder,
            ttl,
            fence,
            leader: AtomicBool::new(false),
            metrics,
        }
    }

    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Campaigns and runs `term` whenever elected, until `cancel`. A term that ends by itself
    /// (its error is logged) gives the lease up so another instance may try.
    pub async fn run<F, Fut, E>(self: Arc<Self>, cancel: CancellationToken, mut term: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        tracing::info!(holder = %self.holder, lease_ttl = ?self.ttl, "standing by for the leader lease");
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let sent = Instant::now();
            match self.lease.acquire(&self.holder, self.ttl).await {
                Ok(Some(held)) => {
                    self.serve_term(&cancel, held.fence, sent, held.previous, &mut term)
                        .await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reach the leader lease"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.renew_every()) => {}
            }
        }
    }

    async fn serve_term<F, Fut, E>(
        self: &Arc<Self>,
        cancel: &CancellationToken,
        fence: i64,
        sent: Instant,
        previous: Option<String>,
        term: &mut F,
    ) where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        self.fence.store(fence, Ordering::SeqCst);
        self.leader.store(true, Ordering::SeqCst);
        self.metrics.leader.set(1);
        tracing::info!(
            fence,
            previous = previous.as_deref().unwrap_or("-"),
            "became the leader"
        );
        let term_cancel = cancel.child_token();
        let renewal = tokio::spawn(self.clone().keep_lease(
            fence,
            sent + self.ttl,
            term_cancel.clone(),
        ));
        if let Err(e) = term(term_cancel.clone()).await {
            tracing::error!(error = %e, "the engine stopped; giving the leader lease up");
        }
        // Whatever ended the term, nothing may be written under its token any more.
        self.step_down();
        term_cancel.cancel();
        let _ = renewal.await;
        if let Err(e) = self.lease.release(&self.holder, fence).await {
            tracing::debug!(error = %e, "releasing the leader lease failed; it expires by itself");
        }
        tracing::info!(fence, "no longer the leader");
    }

    fn step_down(&self) {
        self.fence.store(0, Ordering::SeqCst);
        self.leader.store(false, Ordering::SeqCst);
        self.metrics.leader.set(0);
    }

    /// Renews the lease every third of the TTL until `term` ends; on loss steps down and cancels
    /// the term.
    async fn keep_lease(
        self: Arc<Self>,
        fence: i64,
        mut deadline: Instant,
        term: CancellationToken,
    ) {
        let mut next = Instant::now() + self.renew_every();
        loop {
            tokio::select! {
                _ = term.cancelled() => return,
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
            }
            if Instant::now() >= deadline {
                self.lose(
                    fence,
                    "the lease could not be renewed before it expired",
                    &term,
                );
                return;
            }
            let sent = Instant::now();
            let renewed = tokio::select! {
                _ = term.cancelled() => return,
                r = tokio::time::timeout_at(deadline, self.lease.acquire(&self.holder, self.ttl)) => r,
            };
            match renewed {
                Ok(Ok(Some(held))) if held.fence == fence => deadline = sent + self.ttl,
                Ok(Ok(_)) => {
                    self.lose(fence, "another instance holds the lease", &term);
                    return;
                }
                // Keep trying until the deadline: a short hiccup must not depose a leader.
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader lease failed"),
                Err(_) => {
                    self.lose(
                        fence,
                        "the lease could not be renewed before it expired",
                        &term,
                    );
                    return;
                }
            }
            next = Instant::now() + self.renew_every();
        }
    }

    fn lose(&self, fence: i64, why: &str, term: &CancellationToken) {
        self.step_down();
        tracing::error!(
            fence,
            reason = why,
            "lost the leader lease; stopping all work"
        );
        term.cancel();
    }
}
