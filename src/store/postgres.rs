//! The PostgreSQL backend of the [`Store`](super::Store), for several vault-steward instances
//! sharing one state.
//!
//! Owns connecting: the URL (`postgres://user@host:port/db`) carries no secret; the password, if
//! any, is handed over separately as a [`SecretString`] and goes only into the connection
//! options, which are never logged or printed (this type's `Debug` shows the URL without
//! password). Migrations run under sqlx's advisory lock, so instances starting together are
//! safe. The queries are shared with SQLite (see `queries`); delivery claims add `FOR UPDATE SKIP
//! LOCKED` so concurrent instances never claim the same row.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::lease::PgLease;
use super::queries::impl_store;
use super::{StoreError, redact_url};
use crate::config::db_tls::{DbTls, UrlDialect, url_tls};

const MAX_CONNECTIONS: u32 = 5;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// State store on PostgreSQL.
pub struct PostgresStore {
    pool: PgPool,
    /// The URL as given, any password in it replaced: for `Debug` and messages.
    url: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`), with `password` if given (it wins
    /// over one in the URL) and the `[state]` TLS settings `tls`, and applies migrations.
    pub async fn open(
        url: &str,
        password: Option<&SecretString>,
        tls: &DbTls,
    ) -> Result<Self, StoreError> {
        let redacted = redact_url(url);
        let options = connect_options(url, password, tls)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PostgresStore {
            pool,
            url: redacted,
        })
    }

    /// Like [`open`](Self::open), for a daemon that may lead: every connection the pool hands
    /// out carries the fencing token currently in `fence` (0: not the leader, so every write is
    /// refused by the trigger of migration 0008), and the returned [`PgLease`] (on a pool of its
    /// own) takes and renews the leader lease. A transaction left idle by a leader cut off from
    /// the database is ended by the server after `idle_timeout`, so that its row locks never hold
    /// a takeover up for long.
    pub async fn open_fenced(
        url: &str,
        password: Option<&SecretString>,
        tls: &DbTls,
        fence: Arc<AtomicI64>,
        idle_timeout: Duration,
    ) -> Result<(Self, PgLease), StoreError> {
        let redacted = redact_url(url);
        let mut options = connect_options(url, password, tls)?;
        let idle = format!("{}ms", idle_timeout.as_millis().max(1000));
        options = options.options([("idle_in_transaction_session_timeout", idle.as_str())]);
        let (on_connect, on_acquire) = (fence.clone(), fence);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let token = on_connect.load(Ordering::SeqCst);
                Box::pin(async move { set_fence(conn, token).await })
            })
            .before_acquire(move |conn, _meta| {
                let token = on_acquire.load(Ordering::SeqCst);
                Box::pin(async move { set_fence(conn, token).await.map(|()| true) })
            })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let lease_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok((
            PostgresStore {
                pool,
                url: redacted,
            },
            PgLease::new(lease_pool),
        ))
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The connection options of `url` with `password` and the TLS settings: `tls` (from `[state]`)
/// completed by the URL's own `sslmode`, `sslrootcert`, …; with neither, `verify-full` unless the
/// host is loopback or a Unix socket (M7 of the December 2026 review: sqlx's default, `prefer`,
/// checks no certificate and hands the password to whoever answers).
fn connect_options(
    url: &str,
    password: Option<&SecretString>,
    tls: &DbTls,
) -> Result<PgConnectOptions, StoreError> {
    let redacted = redact_url(url);
    // Parse errors from sqlx never quote the URL, but say which one it was ourselves.
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Url(format!("`{redacted}`: {e}")))?
        .application_name("vault-steward");
    let tls = url_tls(UrlDialect::Postgres, url)
        .and_then(|from_url| tls.completed_by(&from_url))
        .map_err(|e| StoreError::Url(format!("`{redacted}`: {e}")))?;
    let host = if options.get_socket().is_some() {
        "localhost".to_string()
    } else {
        options.get_host().to_string()
    };
    options = crate::db_tls::apply_pg(options, &tls, &host);
    if let Some(password) = password {
        options = options.password(password.expose_secret());
    }
    Ok(options)
}

/// Puts the fencing token on a connection for the trigger of migration 0008 to check.
async fn set_fence(conn: &mut sqlx::PgConnection, token: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('vault_steward.fence', $1, false)")
        .bind(token.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

impl_store!(
    PostgresStore,
    backend = "postgres",
    claim_lock = "FOR UPDATE SKIP LOCKED",
    power_safe = ("", "")
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsMode;
    use sqlx::postgres::PgSslMode;

    fn mode(url: &str, tls: &DbTls) -> PgSslMode {
        connect_options(url, None, tls).unwrap().get_ssl_mode()
    }

    /// M7: without `[state] tls`, the URL's `sslmode` decides, else verify-full off loopback.
    #[test]
    fn the_state_store_verifies_off_loopback_unless_told_otherwise() {
        let none = DbTls::default();
        assert!(matches!(
            mode("postgres://steward@db.example.com/steward", &none),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://steward@10.0.0.7:5433/steward", &none),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://steward@127.0.0.1/steward", &none),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres://steward@localhost/steward", &none),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode("postgres:///steward?host=/var/run/postgresql", &none),
            PgSslMode::Prefer
        ));
        assert!(matches!(
            mode(
                "postgres://steward@db.example.com/steward?sslmode=require",
                &none
            ),
            PgSslMode::Require
        ));
        let explicit = DbTls {
            mode: Some(TlsMode::VerifyCa),
            ..DbTls::default()
        };
        assert!(matches!(
            mode("postgres://steward@localhost/steward", &explicit),
            PgSslMode::VerifyCa
        ));
        let e = connect_options(
            "postgres://steward@db.example.com/steward?sslmode=prefer",
            None,
            &explicit,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslmode"), "{e}");
    }
}
