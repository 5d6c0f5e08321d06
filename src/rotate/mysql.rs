//! `kind = "mysql"`: a MySQL / MariaDB account's password (`ALTER USER 'name'@'host'
//! IDENTIFIED BY …`), rotated through the shared database protocol ([`super::database`]). The
//! admin needs the `CREATE USER` privilege. Accounts are `'username'@'account_host'`
//! (`account_host` defaults to `%`, as MySQL reads a name without a host).
//!
//! Names and the password go into the statement as single-quoted literals with quotes doubled;
//! a backslash is refused rather than escaped, because its meaning depends on the server's
//! `NO_BACKSLASH_ESCAPES` mode (the default password alphabet has none). Statement logging by
//! sqlx is off on these connections.
//!
//! The statement carries the new password in clear, so the admin connection must be encrypted
//! unless the host is loopback or the job says `tls = "disable"` ([`crate::db_tls`]); under
//! `prefer` the server is asked whether this session uses TLS. The admin connection and the
//! test login both use the job's TLS settings (`verify-full` is `VERIFY_IDENTITY`).

use std::str::FromStr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError};
use sqlx::{ConnectOptions, Connection};
use zeroize::Zeroizing;

use crate::db_tls::{self, DbTls, TlsMode, UrlDialect};

use super::database::{
    AdminLogin, CONNECT_TIMEOUT, DatabaseRotator, DbEngine, DbError, Endpoint, STATEMENT_TIMEOUT,
    scrub,
};

/// Rotates one MySQL / MariaDB account (or two, alternating).
pub type MysqlRotator = DatabaseRotator<MysqlEngine>;

/// MySQL / MariaDB, through sqlx.
#[derive(Debug)]
pub struct MysqlEngine {
    /// The host part of the rotated accounts.
    pub account_host: String,
    /// The job's TLS settings, for the admin connection and the test login alike.
    pub tls: DbTls,
}

impl MysqlEngine {
    pub fn new(account_host: Option<&str>, tls: DbTls) -> Self {
        MysqlEngine {
            account_host: account_host.unwrap_or("%").to_string(),
            tls,
        }
    }

    /// The admin's connection, refused when it would carry an `ALTER USER … IDENTIFIED BY` in
    /// clear off loopback (see [`db_tls::password_in_clear_allowed`]).
    async fn admin_connection(
        &self,
        admin: &AdminLogin,
        at: &Endpoint,
    ) -> Result<MySqlConnection, DbError> {
        let mut conn = connect(admin_options(admin, at, &self.tls)?, "").await?;
        let encrypted = match self.tls.mode_for(&at.host) {
            // sqlx fails the connection rather than fall back to plain text in these modes.
            TlsMode::VerifyFull | TlsMode::VerifyCa | TlsMode::Require => true,
            TlsMode::Disable => false,
            // `prefer` may have fallen back: ask the server what this session uses.
            TlsMode::Prefer if db_tls::is_loopback_host(&at.host) => false,
            TlsMode::Prefer => match session_cipher(&mut conn).await {
                Ok(cipher) => !cipher.is_empty(),
                Err(e) => {
                    let _ = conn.close().await;
                    return Err(classify(&e, false, ""));
                }
            },
        };
        if let Err(why) = db_tls::password_in_clear_allowed(&self.tls, &at.host, encrypted) {
            let _ = conn.close().await;
            return Err(DbError::Setup(why));
        }
        Ok(conn)
    }
}

/// The TLS cipher of this session as the server sees it (empty without TLS).
async fn session_cipher(conn: &mut MySqlConnection) -> Result<String, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|(_, v)| v).unwrap_or_default())
}

#[async_trait]
impl DbEngine for MysqlEngine {
    const KIND: &'static str = "mysql";
    const SCHEME: &'static str = "mysql";
    const DEFAULT_PORT: u16 = 3306;
    const DEFAULT_DATABASE: Option<&'static str> = None;

    async fn check_admin(&self, admin: &AdminLogin, at: &Endpoint) -> Result<(), DbError> {
        // The same refusal as before an ALTER, so that a run fails before a rotation begins.
        let conn = self.admin_connection(admin, at).await?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn set_password(
        &self,
        admin: &AdminLogin,
        at: &Endpoint,
        user: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        let secret = password.expose_secret();
        let statement = Zeroizing::new(format!(
            "ALTER USER {}@{} IDENTIFIED BY {}",
            quote_string(user, "user name")?,
            quote_string(&self.account_host, "account_host")?,
            quote_string(secret, "password")?
        ));
        let mut conn = self.admin_connection(admin, at).await?;
        let result = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut conn),
        )
        .await;
        let _ = conn.close().await;
        match result {
            Err(_) => Err(DbError::Unreachable(format!(
                "ALTER USER got no answer within {}s",
                STATEMENT_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => Err(classify(&e, false, secret)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn login(
        &self,
        at: &Endpoint,
        user: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        let mut options = MySqlConnectOptions::new()
            .host(&at.host)
            .port(at.port)
            .username(user)
            .password(password.expose_secret());
        if let Some(db) = at.database.as_deref().filter(|d| !d.is_empty()) {
            options = options.database(db);
        }
        let options = db_tls::apply_mysql(options, &self.tls, &at.host);
        let conn = connect(options, password.expose_secret()).await?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// The admin's connection: its `url`'s options if it has one (TLS parameters in it must agree
/// with the job's, see [`db_tls`]), then host, port, user, password and database as resolved,
/// then the job's TLS settings.
fn admin_options(
    admin: &AdminLogin,
    at: &Endpoint,
    tls: &DbTls,
) -> Result<MySqlConnectOptions, DbError> {
    let base = match &admin.url {
        Some(url) => {
            db_tls::check_url_agrees(UrlDialect::Mysql, url.expose_secret(), tls, &at.host)
                .map_err(DbError::Setup)?;
            MySqlConnectOptions::from_str(url.expose_secret())
                .map_err(|_| DbError::Setup("the admin secret's `url` is not a MySQL URL".into()))?
        }
        None => MySqlConnectOptions::new(),
    };
    let mut options = base.host(&at.host).port(at.port).username(&admin.username);
    if let Some(p) = &admin.password {
        options = options.password(p.expose_secret());
    }
    if let Some(db) = admin.database.as_deref().filter(|d| !d.is_empty()) {
        options = options.database(db);
    }
    Ok(db_tls::apply_mysql(options, tls, &at.host))
}

async fn connect(options: MySqlConnectOptions, secret: &str) -> Result<MySqlConnection, DbError> {
    // sqlx would log statements at debug level; ours carry a password.
    let options = options.disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options)).await {
        Err(_) => Err(DbError::Unreachable(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(classify(&e, true, secret)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// Server errors that mean "busy or going away", not "no": too many connections (1040), per-user
/// connection limits (1203, 1226), shutdown in progress (1053), connection killed (1927), and a
/// statement the server gave up on — lock wait timeout (1205), deadlock (1213). Taking those for
/// refusals would abandon a rotation whose ALTER may have run before.
const UNREACHABLE_ERRORS: [u16; 7] = [1040, 1053, 1203, 1205, 1213, 1226, 1927];

fn classify(e: &sqlx::Error, at_login: bool, secret: &str) -> DbError {
    match e {
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number)
                .unwrap_or(0);
            let text = scrub(&format!("{} (error {number})", db.message()), secret);
            if UNREACHABLE_ERRORS.contains(&number) {
                DbError::Unreachable(text)
            } else if at_login {
                DbError::LoginRefused(text)
            } else {
                DbError::Refused(text)
            }
        }
        sqlx::Error::Configuration(_) => DbError::Setup(scrub(&e.to_string(), secret)),
        _ => DbError::Unreachable(scrub(
            &db_tls::tls_failure(e).unwrap_or_else(|| e.to_string()),
            secret,
        )),
    }
}

/// `'text'` with quotes doubled. Backslashes and control characters are refused: how a server
/// reads them depends on its SQL mode.
pub fn quote_string(text: &str, what: &str) -> Result<String, DbError> {
    if text.chars().any(|c| c == '\\' || c.is_control()) {
        return Err(DbError::Setup(format!(
            "the {what} contains a backslash or a control character, which cannot be quoted for MySQL reliably"
        )));
    }
    Ok(format!("'{}'", text.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeouts_and_deadlocks_are_transient() {
        for number in [1205, 1213, 1040, 1927] {
            assert!(UNREACHABLE_ERRORS.contains(&number), "{number}");
        }
        // Refusals: access denied, unknown user, password-history / reuse policy.
        for number in [1044, 1045, 1227, 1396, 3638, 1819] {
            assert!(!UNREACHABLE_ERRORS.contains(&number), "{number}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_string("shop_a", "u").unwrap(), "'shop_a'");
        assert_eq!(quote_string("o'brien", "u").unwrap(), "'o''brien'");
        assert_eq!(quote_string("%", "h").unwrap(), "'%'");
        assert!(quote_string("a\\b", "u").is_err());
        assert!(quote_string("a\nb", "u").is_err());
        let e = quote_string("pa\\ss", "password").unwrap_err().to_string();
        assert!(!e.contains("pa\\ss"), "{e}");
    }
}
