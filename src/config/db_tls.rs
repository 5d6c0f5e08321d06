//! Database TLS settings (SPEC §6): `tls`, `ca_cert`, `client_cert` and `client_key` on
//! `postgres` and `mysql` jobs and on a PostgreSQL `[state]`, and the rule that picks the mode
//! when `tls` is not written.
//!
//! The rule: an explicit `tls` wins; a `ca_cert` without `tls` means `verify-full` (an operator
//! who names a CA wants it checked); otherwise `verify-full`, except for loopback hosts
//! (`127.0.0.0/8`, `::1`, `localhost`), where traffic never leaves the machine and `prefer`
//! keeps local setups without certificates working. The host is only known at connection time
//! (the admin secret may supply it), so the rule is applied there, by [`DbTls::mode_for`].

use std::path::PathBuf;

/// `tls = "…"`, named as libpq's `sslmode` (MySQL: `verify-full` is `VERIFY_IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS, the certificate chain checked against `ca_cert` (and the system's roots) and the
    /// host name (or IP address) checked against the certificate.
    VerifyFull,
    /// TLS, the chain checked but not the host name.
    VerifyCa,
    /// TLS without any certificate check: safe against listeners, not against an active
    /// attacker.
    Require,
    /// TLS if the server offers it, else plain; no certificate check.
    Prefer,
    /// Never TLS.
    Disable,
}

impl TlsMode {
    /// Every mode, strongest first, as written in the config.
    pub const ALL: [TlsMode; 5] = [
        TlsMode::VerifyFull,
        TlsMode::VerifyCa,
        TlsMode::Require,
        TlsMode::Prefer,
        TlsMode::Disable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::VerifyFull => "verify-full",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::Require => "require",
            TlsMode::Prefer => "prefer",
            TlsMode::Disable => "disable",
        }
    }

    pub fn parse(s: &str) -> Option<TlsMode> {
        TlsMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the server's certificate is checked (so `ca_cert` is used).
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyFull | TlsMode::VerifyCa)
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings of one database connection as configured (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbTls {
    /// `tls`; `None` = the default rule (see the module doc).
    pub mode: Option<TlsMode>,
    /// `ca_cert`: a PEM bundle trusted for the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// `client_cert` and `client_key` (always both, or neither): a client certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl DbTls {
    /// The mode for a connection to `host`.
    pub fn mode_for(&self, host: &str) -> TlsMode {
        match (self.mode, &self.ca_cert) {
            (Some(m), _) => m,
            (None, Some(_)) => TlsMode::VerifyFull,
            (None, None) if is_loopback_host(host) => TlsMode::Prefer,
            (None, None) => TlsMode::VerifyFull,
        }
    }
}

/// `localhost` or an address in `127.0.0.0/8` or `::1` (brackets allowed), or a Unix socket
/// directory (a host starting with `/`, as libpq reads it): traffic that never leaves the
/// machine. A name that merely resolves to a loopback address does not count: what it resolves
/// to can change.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Which database's URL conventions to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlDialect {
    Postgres,
    Mysql,
}

/// The mode a URL's `sslmode` / `ssl-mode` value names; `None` for a value with no equivalent
/// (`allow`, or unknown).
pub(crate) fn url_mode(dialect: UrlDialect, value: &str) -> Option<TlsMode> {
    let v = value.to_ascii_lowercase().replace('_', "-");
    match (dialect, v.as_str()) {
        (UrlDialect::Postgres, v) => TlsMode::parse(v),
        (UrlDialect::Mysql, "disabled") => Some(TlsMode::Disable),
        (UrlDialect::Mysql, "preferred") => Some(TlsMode::Prefer),
        (UrlDialect::Mysql, "required") => Some(TlsMode::Require),
        (UrlDialect::Mysql, "verify-ca") => Some(TlsMode::VerifyCa),
        (UrlDialect::Mysql, "verify-identity") => Some(TlsMode::VerifyFull),
        _ => None,
    }
}

/// What a TLS parameter of a URL sets.
pub(crate) enum UrlTls {
    Mode,
    CaCert,
    ClientCert,
    ClientKey,
}

/// The TLS parameters sqlx reads from a URL's query (both dialects spell them several ways).
pub(crate) fn url_param(dialect: UrlDialect, key: &str) -> Option<UrlTls> {
    match (dialect, key) {
        (_, "sslmode" | "ssl-mode") => Some(UrlTls::Mode),
        (UrlDialect::Postgres, "sslrootcert" | "ssl-root-cert" | "ssl-ca") => Some(UrlTls::CaCert),
        (UrlDialect::Mysql, "sslca" | "ssl-ca") => Some(UrlTls::CaCert),
        (_, "sslcert" | "ssl-cert") => Some(UrlTls::ClientCert),
        (_, "sslkey" | "ssl-key") => Some(UrlTls::ClientKey),
        _ => None,
    }
}

/// The TLS settings a URL's query carries (`sslmode`, `sslrootcert`, … in any of the
/// spellings sqlx reads). A mode with no equivalent here (`allow`) is an error.
pub fn url_tls(dialect: UrlDialect, url: &str) -> Result<DbTls, String> {
    let mut tls = DbTls::default();
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(tls);
    };
    for (key, value) in parsed.query_pairs() {
        match url_param(dialect, &key) {
            Some(UrlTls::Mode) => {
                tls.mode = Some(url_mode(dialect, &value).ok_or_else(|| {
                    format!("the URL's {key}={value} is not one of the supported TLS modes")
                })?)
            }
            Some(UrlTls::CaCert) => tls.ca_cert = Some(value.as_ref().into()),
            Some(UrlTls::ClientCert) => tls.client_cert = Some(value.as_ref().into()),
            Some(UrlTls::ClientKey) => tls.client_key = Some(value.as_ref().into()),
            None => {}
        }
    }
    Ok(tls)
}

impl DbTls {
    /// These settings completed by those of a URL (`from_url`); an error names a setting the
    /// two give differently.
    pub fn completed_by(&self, from_url: &DbTls) -> Result<DbTls, String> {
        fn pick<T: PartialEq + Clone>(
            ours: &Option<T>,
            url: &Option<T>,
            [key, url_key]: [&str; 2],
            show: impl Fn(&T) -> String,
        ) -> Result<Option<T>, String> {
            match (ours, url) {
                (Some(a), Some(b)) if a != b => Err(format!(
                    "`{key}` says \"{}\" but the URL's {url_key} says \"{}\"; set it in one place",
                    show(a),
                    show(b)
                )),
                (Some(a), _) => Ok(Some(a.clone())),
                (None, b) => Ok(b.clone()),
            }
        }
        let path = |p: &PathBuf| p.display().to_string();
        Ok(DbTls {
            mode: pick(&self.mode, &from_url.mode, ["tls", "sslmode"], |m| {
                m.to_string()
            })?,
            ca_cert: pick(
                &self.ca_cert,
                &from_url.ca_cert,
                ["ca_cert", "sslrootcert"],
                path,
            )?,
            client_cert: pick(
                &self.client_cert,
                &from_url.client_cert,
                ["client_cert", "sslcert"],
                path,
            )?,
            client_key: pick(
                &self.client_key,
                &from_url.client_key,
                ["client_key", "sslkey"],
                path,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.8.7",
            "::1",
            "[::1]",
            "/var/run/postgresql",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "db.example.com",
            "10.0.0.5",
            "128.0.0.1",
            "::2",
            "localhost.example.com",
            "vm",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn default_mode_is_verify_full_except_on_loopback() {
        let none = DbTls::default();
        assert_eq!(none.mode_for("db.example.com"), TlsMode::VerifyFull);
        assert_eq!(none.mode_for("10.1.2.3"), TlsMode::VerifyFull);
        assert_eq!(none.mode_for("localhost"), TlsMode::Prefer);
        assert_eq!(none.mode_for("127.0.0.1"), TlsMode::Prefer);
        assert_eq!(none.mode_for("::1"), TlsMode::Prefer);
        let with_ca = DbTls {
            ca_cert: Some("/ca.pem".into()),
            ..DbTls::default()
        };
        assert_eq!(with_ca.mode_for("localhost"), TlsMode::VerifyFull);
        for mode in TlsMode::ALL {
            let explicit = DbTls {
                mode: Some(mode),
                ..DbTls::default()
            };
            assert_eq!(explicit.mode_for("db.example.com"), mode);
            assert_eq!(explicit.mode_for("localhost"), mode);
            assert_eq!(TlsMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(TlsMode::parse("verify_full"), None);
    }

    /// The state store (M7): without `tls`, a URL's `sslmode` decides; without either, the
    /// host (verify-full off loopback).
    #[test]
    fn state_url_sslmode_and_the_default() {
        let pg = UrlDialect::Postgres;
        let from = |url: &str| {
            DbTls::default()
                .completed_by(&url_tls(pg, url).unwrap())
                .unwrap()
        };
        let t = from("postgres://steward@db.example.com/steward");
        assert_eq!(t.mode_for("db.example.com"), TlsMode::VerifyFull);
        let t = from("postgres://steward@127.0.0.1/steward");
        assert_eq!(t.mode_for("127.0.0.1"), TlsMode::Prefer);
        let t = from("postgres://steward@db.example.com/steward?sslmode=require");
        assert_eq!(t.mode_for("db.example.com"), TlsMode::Require);
        let t = from("postgres://steward@db.example.com/s?sslrootcert=/etc/ca.pem");
        assert_eq!(
            t.ca_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(t.mode_for("db.example.com"), TlsMode::VerifyFull);
        assert!(url_tls(pg, "postgres://db/s?sslmode=allow").is_err());

        let explicit = DbTls {
            mode: Some(TlsMode::VerifyCa),
            ..DbTls::default()
        };
        let same = url_tls(pg, "postgres://db/s?sslmode=verify-ca").unwrap();
        assert_eq!(
            explicit.completed_by(&same).unwrap().mode,
            Some(TlsMode::VerifyCa)
        );
        let other = url_tls(pg, "postgres://db/s?ssl-mode=disable").unwrap();
        let e = explicit.completed_by(&other).unwrap_err();
        assert_eq!(
            e,
            "`tls` says \"verify-ca\" but the URL's sslmode says \"disable\"; set it in one place"
        );
    }
}
