//! TLS for database connections (SPEC §6): turns the configured [`DbTls`] into sqlx connection
//! options for PostgreSQL (jobs and the state store) and MySQL / MariaDB, and holds the rules
//! around them. sqlx's own defaults (`prefer` / `PREFERRED`) check no certificate at all.
//!
//! - The job's settings are the contract. An admin secret's `url` may repeat them, but a TLS
//!   parameter in it that says something else (`sslmode=require` when the job's mode is
//!   `verify-full`, another CA file, …) is refused before anything connects: silently taking
//!   either side would weaken what one of the two authors asked for.
//! - A PostgreSQL state URL may set `sslmode` itself; `[state] tls` and the URL must then agree
//!   (checked with the config). Without either, the host decides (`verify-full` off loopback).
//! - MySQL's `ALTER USER … IDENTIFIED BY` carries the new password in the statement: it is sent
//!   only over TLS, to a loopback host, or when the job says `tls = "disable"` explicitly.
//! - `ca_cert` is trusted in addition to the system's roots (sqlx adds it to them).

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

pub use crate::config::db_tls::{DbTls, TlsMode, UrlDialect, is_loopback_host};
use crate::config::db_tls::{UrlTls, url_mode, url_param};

pub fn pg_ssl_mode(mode: TlsMode) -> PgSslMode {
    match mode {
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Disable => PgSslMode::Disable,
    }
}

pub fn mysql_ssl_mode(mode: TlsMode) -> MySqlSslMode {
    match mode {
        TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        TlsMode::Require => MySqlSslMode::Required,
        TlsMode::Prefer => MySqlSslMode::Preferred,
        TlsMode::Disable => MySqlSslMode::Disabled,
    }
}

/// `options` with the TLS settings for a connection to `host` (the mode always set explicitly,
/// so neither sqlx's default nor `PGSSLMODE` decides).
pub fn apply_pg(mut options: PgConnectOptions, tls: &DbTls, host: &str) -> PgConnectOptions {
    options = options.ssl_mode(pg_ssl_mode(tls.mode_for(host)));
    if let Some(ca) = &tls.ca_cert {
        options = options.ssl_root_cert(ca);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    options
}

/// As [`apply_pg`], for MySQL / MariaDB (`verify-full` is `VERIFY_IDENTITY`).
pub fn apply_mysql(
    mut options: MySqlConnectOptions,
    tls: &DbTls,
    host: &str,
) -> MySqlConnectOptions {
    options = options.ssl_mode(mysql_ssl_mode(tls.mode_for(host)));
    if let Some(ca) = &tls.ca_cert {
        options = options.ssl_ca(ca);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        options = options.ssl_client_cert(cert).ssl_client_key(key);
    }
    options
}

/// Checks that the TLS parameters in `url` (an admin secret's; it is never quoted, it holds a
/// password) agree with the job's settings for `host`. The error names the parameter and both
/// sides.
pub fn check_url_agrees(
    dialect: UrlDialect,
    url: &str,
    tls: &DbTls,
    host: &str,
) -> Result<(), String> {
    let Ok(parsed) = url::Url::parse(url) else {
        // The engines report an unparseable URL themselves.
        return Ok(());
    };
    let mode = tls.mode_for(host);
    let how = if tls.mode.is_some() {
        String::new()
    } else {
        format!(" (the default for host {host})")
    };
    for (key, value) in parsed.query_pairs() {
        let Some(param) = url_param(dialect, &key) else {
            continue;
        };
        let (agrees, job_side) = match param {
            UrlTls::Mode => (
                url_mode(dialect, &value) == Some(mode),
                format!("tls = \"{mode}\"{how}"),
            ),
            UrlTls::CaCert => same_file(&value, tls.ca_cert.as_deref(), "ca_cert"),
            UrlTls::ClientCert => same_file(&value, tls.client_cert.as_deref(), "client_cert"),
            UrlTls::ClientKey => same_file(&value, tls.client_key.as_deref(), "client_key"),
        };
        if !agrees {
            return Err(format!(
                "the admin secret's `url` sets {key}={value}, but the job says {job_side}: the \
                 job's TLS settings are the ones that count; remove {key} from the url or make \
                 the job say the same"
            ));
        }
    }
    Ok(())
}

fn same_file(value: &str, job: Option<&std::path::Path>, key: &str) -> (bool, String) {
    match job {
        Some(p) => (
            std::path::Path::new(value) == p,
            format!("{key} = \"{}\"", p.display()),
        ),
        None => (false, format!("no `{key}`")),
    }
}

/// A readable account of a TLS failure in `e`, or `None` when `e` is not one: certificate
/// problems are named as such ("certificate verification failed"), so an operator can tell a
/// wrong or missing `ca_cert` (or an attacker) from a server that is down.
pub fn tls_failure(e: &sqlx::Error) -> Option<String> {
    let rustls_error = |e: &(dyn std::error::Error + 'static)| -> Option<String> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            // io::Error's `source` skips the error it wraps: look inside it too.
            let inner = err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
            for candidate in [Some(err), inner].into_iter().flatten() {
                if let Some(r) = candidate.downcast_ref::<rustls::Error>() {
                    return Some(match r {
                        rustls::Error::InvalidCertificate(_) => {
                            format!("TLS certificate verification failed: {r}")
                        }
                        _ => format!("TLS handshake failed: {r}"),
                    });
                }
            }
            next = err.source();
        }
        None
    };
    match e {
        sqlx::Error::Tls(inner) => {
            Some(rustls_error(inner.as_ref()).unwrap_or_else(|| format!("TLS: {inner}")))
        }
        sqlx::Error::Io(io) => rustls_error(io),
        _ => None,
    }
}

/// Whether a statement that carries a password in clear (MySQL's `ALTER USER … IDENTIFIED BY`)
/// may be sent over a connection to `host` that is (`encrypted`) or is not under TLS: yes under
/// TLS, to a loopback host, or when the job says `tls = "disable"` explicitly.
pub fn password_in_clear_allowed(tls: &DbTls, host: &str, encrypted: bool) -> Result<(), String> {
    if encrypted || is_loopback_host(host) || tls.mode == Some(TlsMode::Disable) {
        return Ok(());
    }
    Err(format!(
        "the connection to {host} is not encrypted (tls = \"{}\" and the server did not use \
         TLS): ALTER USER … IDENTIFIED BY would carry the new password in clear, so it was not \
         sent; give the server TLS, or set tls = \"disable\" in the job to accept this",
        tls.mode_for(host)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: Option<TlsMode>, ca: Option<&str>) -> DbTls {
        DbTls {
            mode,
            ca_cert: ca.map(Into::into),
            ..DbTls::default()
        }
    }

    #[test]
    fn mysql_verify_full_is_verify_identity() {
        assert!(matches!(
            mysql_ssl_mode(TlsMode::VerifyFull),
            MySqlSslMode::VerifyIdentity
        ));
        let o = apply_mysql(
            MySqlConnectOptions::new(),
            &DbTls::default(),
            "db.example.com",
        );
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::VerifyIdentity));
        let o = apply_mysql(MySqlConnectOptions::new(), &DbTls::default(), "127.0.0.1");
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Preferred));
    }

    #[test]
    fn postgres_options_follow_the_default_rule() {
        let o = apply_pg(
            PgConnectOptions::new_without_pgpass(),
            &DbTls::default(),
            "db.example.com",
        );
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        let o = apply_pg(
            PgConnectOptions::new_without_pgpass(),
            &DbTls::default(),
            "::1",
        );
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Prefer));
        let o = apply_pg(
            PgConnectOptions::new_without_pgpass(),
            &tls(Some(TlsMode::Disable), None),
            "db.example.com",
        );
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn admin_url_must_agree_with_the_job() {
        let pg = UrlDialect::Postgres;
        let full = tls(Some(TlsMode::VerifyFull), Some("/etc/ca.pem"));
        let host = "db.example.com";
        assert!(check_url_agrees(pg, "postgres://a:pw@db/x", &full, host).is_ok());
        assert!(
            check_url_agrees(
                pg,
                "postgres://a:pw@db/x?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
                &full,
                host
            )
            .is_ok()
        );
        let e = check_url_agrees(
            pg,
            "postgres://a:secretpw@db/x?sslmode=require",
            &full,
            host,
        )
        .unwrap_err();
        assert!(
            e.contains("sslmode=require") && e.contains("tls = \"verify-full\""),
            "{e}"
        );
        assert!(!e.contains("secretpw"), "{e}");
        let e = check_url_agrees(pg, "postgres://db/x?sslrootcert=/other.pem", &full, host)
            .unwrap_err();
        assert!(e.contains("ca_cert = \"/etc/ca.pem\""), "{e}");
        // The default counts as the job's word: a url asking for less off loopback is refused.
        let e = check_url_agrees(
            pg,
            "postgres://db/x?sslmode=prefer",
            &DbTls::default(),
            host,
        )
        .unwrap_err();
        assert!(e.contains("(the default for host db.example.com)"), "{e}");
        assert!(
            check_url_agrees(
                pg,
                "postgres://db/x?sslmode=prefer",
                &DbTls::default(),
                "localhost"
            )
            .is_ok()
        );
        let e = check_url_agrees(pg, "postgres://db/x?sslkey=/k.pem", &full, host).unwrap_err();
        assert!(e.contains("no `client_key`"), "{e}");

        let my = UrlDialect::Mysql;
        assert!(
            check_url_agrees(
                my,
                "mysql://db?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem",
                &full,
                host
            )
            .is_ok()
        );
        let e = check_url_agrees(my, "mysql://db?ssl-mode=PREFERRED", &full, host).unwrap_err();
        assert!(e.contains("ssl-mode=PREFERRED"), "{e}");
    }

    #[test]
    fn alter_user_in_clear_only_over_tls_loopback_or_explicit_disable() {
        let remote = "db.example.com";
        for mode in [None, Some(TlsMode::Prefer), Some(TlsMode::Require)] {
            let e = password_in_clear_allowed(&tls(mode, None), remote, false).unwrap_err();
            assert!(e.contains("not encrypted") && e.contains(remote), "{e}");
            assert!(password_in_clear_allowed(&tls(mode, None), remote, true).is_ok());
            assert!(password_in_clear_allowed(&tls(mode, None), "127.0.0.1", false).is_ok());
            assert!(password_in_clear_allowed(&tls(mode, None), "localhost", false).is_ok());
        }
        assert!(
            password_in_clear_allowed(&tls(Some(TlsMode::Disable), None), remote, false).is_ok()
        );
    }
}
