//! `kind = "postgres"`: a PostgreSQL role's password, rotated through the shared database
//! protocol ([`super::database`]).
//!
//! The new password never travels in clear: `ALTER ROLE … PASSWORD` receives a SCRAM-SHA-256
//! verifier computed here (random salt, 4096 iterations, as libpq's `PQencryptPasswordConn`
//! does), which the server stores as it is — so neither its statement log nor
//! `pg_stat_statements` can show the password. PostgreSQL 10 or newer. Statement logging by sqlx
//! is off on these connections; the role name is quoted as an identifier. The admin connection
//! and the test login both use the job's TLS settings ([`crate::db_tls`]), so the admin
//! password and the new one (sent at login when the server asks for it in clear) go only to a
//! server whose certificate checked out (by default off loopback).

use std::str::FromStr;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use zeroize::Zeroizing;

use crate::db_tls::{self, DbTls, UrlDialect};

use super::database::{
    AdminLogin, CONNECT_TIMEOUT, DatabaseRotator, DbEngine, DbError, Endpoint, STATEMENT_TIMEOUT,
    scrub,
};

/// Rotates one PostgreSQL role (or two, alternating).
pub type PostgresRotator = DatabaseRotator<PostgresEngine>;

/// Iterations of the SCRAM verifier (PostgreSQL's default `scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

/// PostgreSQL, through sqlx.
#[derive(Debug, Default)]
pub struct PostgresEngine {
    /// The job's TLS settings, for the admin connection and the test login alike.
    pub tls: DbTls,
}

impl PostgresEngine {
    pub fn new(tls: DbTls) -> Self {
        PostgresEngine { tls }
    }
}

#[async_trait]
impl DbEngine for PostgresEngine {
    const KIND: &'static str = "postgres";
    const SCHEME: &'static str = "postgres";
    const DEFAULT_PORT: u16 = 5432;
    const DEFAULT_DATABASE: Option<&'static str> = Some("postgres");

    async fn check_admin(&self, admin: &AdminLogin, at: &Endpoint) -> Result<(), DbError> {
        let conn = connect(admin_options(admin, at, &self.tls)?, "").await?;
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
        let verifier = scram_verifier(password.expose_secret())?;
        let statement = Zeroizing::new(format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(user)?,
            quote_literal(&verifier)
        ));
        let mut conn = connect(admin_options(admin, at, &self.tls)?, "").await?;
        let result = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut conn),
        )
        .await;
        let _ = conn.close().await;
        match result {
            Err(_) => Err(DbError::Unreachable(format!(
                "ALTER ROLE got no answer within {}s",
                STATEMENT_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => Err(classify(&e, false, &verifier)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn login(
        &self,
        at: &Endpoint,
        user: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&at.host)
            .port(at.port)
            .username(user)
            .password(password.expose_secret())
            .application_name("vault-steward");
        if let Some(db) = &at.database {
            options = options.database(db);
        }
        let options = db_tls::apply_pg(options, &self.tls, &at.host);
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
) -> Result<PgConnectOptions, DbError> {
    let base = match &admin.url {
        Some(url) => {
            db_tls::check_url_agrees(UrlDialect::Postgres, url.expose_secret(), tls, &at.host)
                .map_err(DbError::Setup)?;
            PgConnectOptions::from_str(url.expose_secret()).map_err(|_| {
                DbError::Setup("the admin secret's `url` is not a PostgreSQL URL".into())
            })?
        }
        None => PgConnectOptions::new_without_pgpass(),
    };
    let mut options = base
        .host(&at.host)
        .port(at.port)
        .username(&admin.username)
        .application_name("vault-steward");
    if let Some(p) = &admin.password {
        options = options.password(p.expose_secret());
    }
    if let Some(db) = admin.database.as_deref().or(at.database.as_deref()) {
        options = options.database(db);
    }
    Ok(db_tls::apply_pg(options, tls, &at.host))
}

async fn connect(options: PgConnectOptions, secret: &str) -> Result<PgConnection, DbError> {
    // sqlx would log statements at debug level; ours carry a password verifier.
    let options = options.disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Err(_) => Err(DbError::Unreachable(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(classify(&e, true, secret)),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// Sorts a sqlx error by SQLSTATE (see [`transient_sqlstate`]); other errors at login (class 28,
/// authorization) mean "refused".
fn classify(e: &sqlx::Error, at_login: bool, secret: &str) -> DbError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let text = scrub(&format!("{} (SQLSTATE {code})", db.message()), secret);
            if transient_sqlstate(&code) {
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

/// SQLSTATEs that mean "not now" rather than "no": class 08 (connection), 53 (resources), 57P
/// (shutdown, starting up), and a statement the server gave up on — 57014 (statement timeout or
/// cancel), 55P03 (lock timeout), 40P01 (deadlock), 40001 (serialization failure). Taking those
/// for refusals would abandon a rotation whose ALTER may have run before.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "57014" | "55P03" | "40P01" | "40001")
}

/// `"name"` with inner quotes doubled; NUL cannot be quoted.
pub fn quote_ident(name: &str) -> Result<String, DbError> {
    if name.contains('\0') {
        return Err(DbError::Setup("a role name cannot contain NUL".into()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on since 9.1, so a
/// backslash is an ordinary character).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier of `password`, with
/// a fresh random salt.
fn scram_verifier(password: &str) -> Result<Zeroizing<String>, DbError> {
    let mut salt = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| DbError::Setup(format!("OS random number generator: {e}")))?;
    let (stored_key, server_key) = scram_keys(password, &salt, SCRAM_ITERATIONS);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Zeroizing::new(format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )))
}

/// RFC 5802 / 7677: SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i); StoredKey =
/// SHA-256(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
/// SASLprep leaves our passwords (printable ASCII) unchanged.
fn scram_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut *salted);
    let client_key = Zeroizing::new(hmac_sha256(&*salted, b"Client Key"));
    let stored_key: [u8; 32] = Sha256::digest(*client_key).into();
    let server_key = hmac_sha256(&*salted, b"Server Key");
    (stored_key, server_key)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange of RFC 7677 §3 (user "user", password "pencil"): the server signature
    /// computed from our ServerKey, and the client proof checked against our StoredKey.
    #[test]
    fn scram_keys_match_rfc_7677() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (stored_key, server_key) = scram_keys("pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(
            b64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let proof = b64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(Sha256::digest(&client_key).as_slice(), stored_key);
    }

    #[test]
    fn verifier_format() {
        let v = scram_verifier("pencil").unwrap();
        let rest = v.strip_prefix("SCRAM-SHA-256$4096:").unwrap();
        let (salt, keys) = rest.split_once('$').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(salt).unwrap().len(), 16);
        assert_eq!(b64.decode(stored).unwrap().len(), 32);
        assert_eq!(b64.decode(server).unwrap().len(), 32);
        assert!(!v.contains("pencil"));
        assert_ne!(*v, *scram_verifier("pencil").unwrap(), "salted afresh");
    }

    #[test]
    fn timeouts_deadlocks_and_lost_connections_are_transient() {
        for code in [
            "08006", "53300", "57P01", "57P03", "57014", "55P03", "40P01", "40001",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        // Refusals: privilege, missing role, authentication, a check violation.
        for code in ["42501", "42704", "28P01", "23514", ""] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("orders_app").unwrap(), "\"orders_app\"");
        assert_eq!(quote_ident("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert!(quote_ident("a\0b").is_err());
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
