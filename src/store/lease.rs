//! The leader lease of several instances sharing one PostgreSQL store (SQLite serves one daemon
//! only and has no lease).
//!
//! One row (`leader_lease`, name `leader`) says who leads until when and under which fencing
//! token. [`PgLease::acquire`] takes or renews it in one short transaction that locks the row;
//! times come from the database's clock so that the hosts' clocks never matter. The token grows
//! whenever the lease changes hands or is taken again after it expired, and the daemon's store
//! connections carry it (see [`PostgresStore::open_fenced`](super::postgres::PostgresStore::open_fenced)):
//! the trigger of migration 0008 refuses any write with a token that is not the current one.
//!
//! The lease has its own one-connection pool so that a leader whose jobs keep the store's pool
//! busy still renews on time.

use std::time::Duration;

use sqlx::postgres::PgPool;

use super::StoreError;

/// The lease row's name.
const LEASE: &str = "leader";
/// The database's clock in Unix milliseconds.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::BIGINT"
    };
}

/// A lease this instance holds after [`PgLease::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The fencing token of this term.
    pub fence: i64,
    /// Who held the lease before, when it just changed hands (not on a renewal).
    pub previous: Option<String>,
}

/// Access to the lease row.
#[derive(Clone)]
pub struct PgLease {
    pool: PgPool,
}

impl PgLease {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgLease { pool }
    }

    /// Takes the lease for `holder` for `ttl` if it is free, expired or already `holder`'s, and
    /// returns it; `None` when another instance holds it. A renewal keeps the token; anything
    /// else (first lease, takeover, our own lease taken again after it expired) increments it and
    /// releases the job locks the previous holder left (it is deposed: its writes are fenced off,
    /// so the new leader need not wait for those locks to expire).
    pub async fn acquire(&self, holder: &str, ttl: Duration) -> Result<Option<Held>, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, i64, bool)> = sqlx::query_as(concat!(
            "SELECT holder, fence, expires_at > ",
            now_ms!(),
            " FROM leader_lease WHERE name = $1 FOR UPDATE"
        ))
        .bind(LEASE)
        .fetch_optional(&mut *tx)
        .await?;
        let held = match row {
            None => {
                let fence: Option<i64> = sqlx::query_scalar(concat!(
                    "INSERT INTO leader_lease (name, holder, fence, expires_at) VALUES ($1, $2, 1, ",
                    now_ms!(),
                    " + $3) ON CONFLICT (name) DO NOTHING RETURNING fence"
                ))
                .bind(LEASE)
                .bind(holder)
                .bind(ttl_ms)
                .fetch_optional(&mut *tx)
                .await?;
                // Another instance inserted the row first: it leads.
                fence.map(|fence| Held {
                    fence,
                    previous: None,
                })
            }
            Some((current, fence, true)) if current == holder => {
                sqlx::query(concat!(
                    "UPDATE leader_lease SET expires_at = ",
                    now_ms!(),
                    " + $2 WHERE name = $1"
                ))
                .bind(LEASE)
                .bind(ttl_ms)
                .execute(&mut *tx)
                .await?;
                Some(Held {
                    fence,
                    previous: None,
                })
            }
            Some((_, _, true)) => None,
            Some((previous, fence, false)) => {
                let fence = fence + 1;
                sqlx::query(concat!(
                    "UPDATE leader_lease SET holder = $2, fence = $3, expires_at = ",
                    now_ms!(),
                    " + $4 WHERE name = $1"
                ))
                .bind(LEASE)
                .bind(holder)
                .bind(fence)
                .bind(ttl_ms)
                .execute(&mut *tx)
                .await?;
                if previous != holder {
                    sqlx::query("DELETE FROM job_locks WHERE holder = $1")
                        .bind(&previous)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(Held {
                    fence,
                    previous: Some(previous),
                })
            }
        };
        tx.commit().await?;
        Ok(held)
    }

    /// Gives the lease up at once (on shutdown), so that a standby need not wait for it to
    /// expire.
    pub async fn release(&self, holder: &str, fence: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leader_lease SET expires_at = 0 WHERE name = $1 AND holder = $2 AND fence = $3",
        )
        .bind(LEASE)
        .bind(holder)
        .bind(fence)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
