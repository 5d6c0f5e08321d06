//! Database TLS (SPEC §6, issue 13 item 1): `tls`, `ca_cert` on `postgres` and `mysql` jobs,
//! against private servers that serve TLS with a certificate of a CA the test makes (the shared
//! testbed servers keep their settings). Their TCP logins must use TLS (`hostssl` only;
//! `REQUIRE SSL`), so the admin connection and the test login with the new password both
//! demonstrably ran over TLS.
//!
//! Covered, for both engines: a foreign CA fails the run with an error naming certificate
//! verification and changes nothing (the old password still logs in, KV and the pending path
//! untouched); the right CA rotates (`verify-full` on `127.0.0.1` and `verify-ca` on
//! `localhost`: the new password logs in, the old one is refused); `require` rotates without a
//! CA; an admin secret whose `url` sets another TLS mode than the job is refused before anything
//! changes. `check` warns about `tls = "disable"` (at its FILE:LINE:COL) and reports an unknown
//! mode, a missing `ca_cert` and a `client_cert` without `client_key` as errors there.

mod common;

use std::path::Path;

use common::daemon::{DaemonConfig, record_canaries};
use common::db::password;
use common::tls::{PrivateMaria, PrivatePg, TestCa};
use common::unique;
use common::vault::RootVault;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Mysql,
}

enum Server {
    Pg(PrivatePg),
    Maria(PrivateMaria),
}

struct World {
    kind: Kind,
    server: Server,
    /// Whether the server speaks TLS (its users are then created `REQUIRE SSL`).
    tls: bool,
    ca: TestCa,
    foreign: TestCa,
    vault: RootVault,
}

impl World {
    async fn new(kind: Kind) -> World {
        let ca = TestCa::new(&unique("vs test CA"));
        let foreign = TestCa::new(&unique("vs foreign CA"));
        let server = match kind {
            Kind::Postgres => Server::Pg(PrivatePg::start(&ca).await),
            Kind::Mysql => Server::Maria(PrivateMaria::start(&ca).await),
        };
        World {
            kind,
            server,
            tls: true,
            ca,
            foreign,
            vault: RootVault::new(),
        }
    }

    /// A MariaDB without TLS.
    async fn new_plain_mysql() -> World {
        World {
            kind: Kind::Mysql,
            server: Server::Maria(PrivateMaria::start_with(None).await),
            tls: false,
            ca: TestCa::new(&unique("vs unused CA")),
            foreign: TestCa::new(&unique("vs unused CA")),
            vault: RootVault::new(),
        }
    }

    fn port(&self) -> u16 {
        match &self.server {
            Server::Pg(p) => p.port,
            Server::Maria(m) => m.port,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
        }
    }

    async fn exec(&self, sql: &[String]) {
        match &self.server {
            Server::Pg(p) => p.exec(sql).await,
            Server::Maria(m) => m.exec(sql).await,
        }
    }

    /// A TLS login checked against the right CA.
    async fn login(&self, user: &str, pw: &str) -> Result<(), String> {
        match &self.server {
            Server::Pg(p) => p.login("127.0.0.1", &self.ca.cert, user, pw).await,
            Server::Maria(m) => {
                let ca = self.tls.then_some(self.ca.cert.as_path());
                m.login("127.0.0.1", ca, user, pw).await
            }
        }
    }
}

/// One job's world on the private server: a user, an admin allowed to change its password, the
/// KV secrets, a scoped token and a config with the given job lines.
struct TlsJob {
    cfg: DaemonConfig,
    job: String,
    path: String,
    pending_path: String,
    user: String,
    initial: String,
}

async fn tls_job(w: &World, host: &str, job_lines: &str, admin_url: Option<&str>) -> TlsJob {
    let tag = unique("t");
    let user = format!("{tag}_app");
    let admin = format!("{tag}_adm");
    let initial = password("tlsinit");
    let admin_pw = password("tlsadmin");
    record_canaries([initial.as_str(), admin_pw.as_str()]);
    let sql = match w.kind {
        Kind::Postgres => vec![
            format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{initial}'"),
            format!("CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD '{admin_pw}'"),
            format!("GRANT \"{user}\" TO \"{admin}\" WITH ADMIN OPTION"),
        ],
        Kind::Mysql => {
            let require = if w.tls { " REQUIRE SSL" } else { "" };
            vec![
                format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{initial}'{require}"),
                format!("CREATE USER '{admin}'@'%' IDENTIFIED BY '{admin_pw}'{require}"),
                format!("GRANT CREATE USER ON *.* TO '{admin}'@'%'"),
            ]
        }
    };
    w.exec(&sql).await;

    let job = unique(&format!("{}-tls", w.kind_name()));
    let prefix = unique("dbtls");
    let path = format!("secret/{prefix}/db");
    let admin_path = format!("secret/{prefix}/admin");
    let pending_path = format!("secret/vault-steward/pending/{job}");
    let mut admin_secret = serde_json::json!({ "username": admin, "password": admin_pw });
    if let Some(url) = admin_url {
        admin_secret["url"] = serde_json::Value::String(url.to_string());
    }
    w.vault.kv_put(&admin_path, admin_secret).await;
    w.vault
        .kv_put(
            &path,
            serde_json::json!({ "username": user, "password": initial }),
        )
        .await;
    let policy = unique("dbtls");
    w.vault
        .put_policy(
            &policy,
            &format!(
                r#"
path "secret/data/{prefix}/db" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/{prefix}/db" {{ capabilities = ["create", "read", "update"] }}
path "secret/data/{prefix}/admin" {{ capabilities = ["read"] }}
path "secret/data/vault-steward/pending/{job}" {{ capabilities = ["create", "read", "update"] }}
path "secret/metadata/vault-steward/pending/{job}" {{ capabilities = ["read", "delete"] }}
"#
            ),
        )
        .await;
    let token = w.vault.create_token(&[&policy], "1h").await;
    let database = match w.kind {
        Kind::Postgres => "database = \"postgres\"\n",
        Kind::Mysql => "",
    };
    let job_toml = format!(
        "[[job]]\nname = \"{job}\"\nkind = \"{kind}\"\npath = \"{path}\"\n\
         admin_path = \"{admin_path}\"\nusername = \"{user}\"\nhost = \"{host}\"\n\
         port = {port}\n{database}{job_lines}\n",
        kind = w.kind_name(),
        port = w.port(),
    );
    TlsJob {
        cfg: DaemonConfig::new(&token, &job_toml),
        job,
        path,
        pending_path,
        user,
        initial,
    }
}

fn ca_line(ca: &Path) -> String {
    format!("ca_cert = \"{}\"", ca.display())
}

/// The run failed, and nothing changed: KV at version 1, no pending secret, the old password
/// still logs in.
async fn assert_unchanged(w: &World, j: &TlsJob, what: &str) {
    let kv = w.vault.kv_get(&j.path).await.expect("consumer secret");
    assert_eq!(kv.version, 1, "{what}: KV unchanged");
    assert_eq!(
        kv.data["password"],
        j.initial.as_str(),
        "{what}: KV unchanged"
    );
    assert!(
        w.vault.kv_metadata(&j.pending_path).await.is_none(),
        "{what}: no pending password was written"
    );
    if let Err(e) = w.login(&j.user, &j.initial).await {
        panic!("{what}: the old password no longer logs in: {e}");
    }
}

/// The run rotated: the new password (KV version 2) logs in, the old one is refused.
async fn assert_rotated(w: &World, j: &TlsJob, what: &str) {
    let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
    assert!(st.success(), "{what}: rotate failed: {out}{err}");
    let kv = w.vault.kv_get(&j.path).await.expect("consumer secret");
    let new = kv.data["password"].as_str().expect("password").to_string();
    record_canaries([new.as_str(), kv.data["url"].as_str().unwrap_or("")]);
    assert_eq!(kv.version, 2, "{what}: one new KV version");
    if let Err(e) = w.login(&j.user, &new).await {
        panic!("{what}: the new password does not log in: {e}");
    }
    assert!(
        w.login(&j.user, &j.initial).await.is_err(),
        "{what}: the old password still logs in"
    );
}

/// This machine's host name if it resolves to 127.0.0.1 (where the private servers listen):
/// a name that is not loopback by its spelling, so the job's default is `verify-full`.
/// [`host_name_on_loopback`], or a failure: these checks need a name that is not loopback by its
/// spelling yet reaches the test's servers, and a suite that skips them would prove nothing.
fn remote_looking_name() -> String {
    host_name_on_loopback().unwrap_or_else(|| {
        panic!(
            "this machine's host name does not resolve to 127.0.0.1; the TLS default off \
             loopback cannot be checked end to end (add the host name to /etc/hosts)"
        )
    })
}

fn host_name_on_loopback() -> Option<String> {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    let local = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST);
    (local && !name.eq_ignore_ascii_case("localhost")).then_some(name)
}

async fn tls_cases(kind: Kind) {
    let w = World::new(kind).await;

    // No TLS setting at all, a host name that is not loopback by its spelling: the default is
    // verify-full, and the test CA is not among the system's roots. (Old behaviour: `prefer`,
    // the certificate unchecked, the rotation went through.)
    {
        let host = remote_looking_name();
        let j = tls_job(&w, &host, "", None).await;
        let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
        assert!(
            !st.success(),
            "{host}: rotated without checking the certificate: {out}{err}"
        );
        assert!(err.contains("certificate verification failed"), "{err}");
        assert_unchanged(&w, &j, "default for a host name").await;
        // `prefer` written in the job: TLS without a certificate check, and (MySQL) the
        // server confirms the session is encrypted, so ALTER USER may go.
        let j = tls_job(&w, &host, "tls = \"prefer\"", None).await;
        assert_rotated(&w, &j, "prefer off loopback, server with TLS").await;
    }

    // A certificate from a CA the job does not trust: refused before anything changes.
    let j = tls_job(
        &w,
        "localhost",
        &format!("tls = \"verify-full\"\n{}", ca_line(&w.foreign.cert)),
        None,
    )
    .await;
    let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
    assert!(!st.success(), "a foreign CA was accepted: {out}{err}");
    assert!(
        err.contains("certificate verification failed"),
        "the error names certificate verification: {err}"
    );
    assert_unchanged(&w, &j, "foreign CA").await;

    // `verify-full` with the right CA, by IP address (the certificate's IP SAN).
    let j = tls_job(
        &w,
        "127.0.0.1",
        &format!("tls = \"verify-full\"\n{}", ca_line(&w.ca.cert)),
        None,
    )
    .await;
    assert_rotated(&w, &j, "verify-full, right CA").await;

    // A `ca_cert` alone means verify-full, also on loopback.
    let j = tls_job(&w, "localhost", &ca_line(&w.foreign.cert), None).await;
    let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
    assert!(!st.success(), "ca_cert without tls: {out}{err}");
    assert!(err.contains("certificate verification failed"), "{err}");
    assert_unchanged(&w, &j, "ca_cert without tls").await;

    // `verify-ca` by name.
    let j = tls_job(
        &w,
        "localhost",
        &format!("tls = \"verify-ca\"\n{}", ca_line(&w.ca.cert)),
        None,
    )
    .await;
    assert_rotated(&w, &j, "verify-ca, right CA").await;

    // `require`: encrypted, no certificate check, no CA needed.
    let j = tls_job(&w, "localhost", "tls = \"require\"", None).await;
    assert_rotated(&w, &j, "require without a CA").await;

    // An admin `url` asking for another TLS mode than the job: refused, nothing changed.
    let url = match kind {
        Kind::Postgres => format!("postgres://localhost:{}/postgres?sslmode=require", w.port()),
        Kind::Mysql => format!("mysql://localhost:{}?ssl-mode=REQUIRED", w.port()),
    };
    let j = tls_job(
        &w,
        "localhost",
        &format!("tls = \"verify-full\"\n{}", ca_line(&w.ca.cert)),
        Some(&url),
    )
    .await;
    let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
    assert!(
        !st.success(),
        "a conflicting admin url was accepted: {out}{err}"
    );
    assert!(
        err.contains("the admin secret's `url`") && err.contains("tls = \"verify-full\""),
        "the error names both settings: {err}"
    );
    assert_unchanged(&w, &j, "conflicting admin url").await;
}

#[tokio::test]
async fn postgres_tls() {
    tls_cases(Kind::Postgres).await;
}

/// A PostgreSQL state store (M7) over TLS: a foreign CA is refused, the right one connects, and
/// without any setting a host name that is not loopback by its spelling gets verify-full.
#[tokio::test]
async fn postgres_state_store_tls() {
    use vault_steward::config::{DbTls, TlsMode};
    use vault_steward::store;
    let ca = TestCa::new(&unique("vs state CA"));
    let foreign = TestCa::new(&unique("vs foreign CA"));
    let pg = PrivatePg::start(&ca).await;
    let pw = password("tlsstate");
    record_canaries([pw.as_str()]);
    pg.exec(&[
        format!("CREATE ROLE steward LOGIN PASSWORD '{pw}'"),
        "CREATE DATABASE steward OWNER steward".to_string(),
    ])
    .await;
    let secret = secrecy::SecretString::from(pw.clone());
    let url =
        |host: &str, query: &str| format!("postgres://steward@{host}:{}/steward{query}", pg.port);
    let verify = |ca: &Path| DbTls {
        mode: Some(TlsMode::VerifyFull),
        ca_cert: Some(ca.to_path_buf()),
        ..DbTls::default()
    };

    let e = store::open_with_tls(&url("localhost", ""), Some(&secret), &verify(&foreign.cert))
        .await
        .err()
        .expect("a foreign CA was accepted")
        .to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(!e.contains(&pw), "{e}");

    let s = store::open_with_tls(&url("127.0.0.1", ""), Some(&secret), &verify(&ca.cert))
        .await
        .expect("the right CA");
    s.ping().await.expect("ping");

    // The URL's own sslmode counts when `[state]` says nothing.
    let s = store::open_with_tls(
        &url("localhost", "?sslmode=require"),
        Some(&secret),
        &DbTls::default(),
    )
    .await
    .expect("sslmode=require in the URL");
    s.ping().await.expect("ping");

    if let Some(host) = host_name_on_loopback() {
        let e = store::open(&url(&host, ""), Some(&secret))
            .await
            .err()
            .expect("verify-full by default off loopback")
            .to_string();
        assert!(e.contains("invalid peer certificate"), "{e}");
    }
}

#[tokio::test]
async fn mysql_tls() {
    tls_cases(Kind::Mysql).await;
}

/// MySQL's `ALTER USER … IDENTIFIED BY` carries the new password in clear: against a MariaDB
/// without TLS, under `prefer` (which falls back to plain text), it is not sent to a host that is
/// not loopback by its spelling; `tls = "disable"` written in the job lets it through, and
/// loopback needs nothing. (The decision itself is unit-tested in `db_tls`; here the server is
/// asked whether the session is encrypted.)
#[tokio::test]
async fn mysql_alter_user_not_sent_in_clear() {
    let w = World::new_plain_mysql().await;
    let host = remote_looking_name();
    let j = tls_job(&w, &host, "tls = \"prefer\"", None).await;
    let (st, out, err) = j.cfg.cli(&["rotate", &j.job]);
    assert!(!st.success(), "ALTER USER went out in clear: {out}{err}");
    assert!(err.contains("is not encrypted"), "{err}");
    assert_unchanged(&w, &j, "prefer without TLS").await;

    let j = tls_job(&w, &host, "tls = \"disable\"", None).await;
    assert_rotated(&w, &j, "explicit disable").await;
    let j = tls_job(&w, "127.0.0.1", "", None).await;
    assert_rotated(&w, &j, "loopback").await;
}

/// `check` warns about every `tls = "disable"` at its place and reports bad TLS settings as
/// errors at theirs. No server is needed: nothing connects.
#[test]
fn check_warns_about_disable_and_reports_bad_tls_settings() {
    let job = |kind: &str, lines: &str| {
        format!(
            "[[job]]\nname = \"{}\"\nkind = \"{kind}\"\npath = \"secret/x/db\"\n\
             admin_path = \"secret/x/admin\"\nusername = \"app\"\nhost = \"db.example.com\"\n{lines}\n",
            unique("j")
        )
    };
    for kind in ["postgres", "mysql"] {
        let cfg = DaemonConfig::new("unused-token", &job(kind, "tls = \"disable\""));
        let (st, out, err) = cfg.cli(&["check"]);
        assert!(st.success(), "{kind}: disable is allowed: {out}{err}");
        let file = cfg.dir.path().join("jobs/test.toml");
        let expected = format!("{}:8:7: warning:", file.display());
        assert!(
            err.contains(&expected) && err.contains("in clear"),
            "{kind}: the warning at {expected}: {err}"
        );
    }

    let cases = [
        ("tls = \"verify\"", "8:7", "unknown `tls` mode"),
        (
            "ca_cert = \"/nonexistent/ca.pem\"",
            "8:11",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "client_cert = \"/etc/hostname\"",
            "8:15",
            "`client_cert` needs `client_key`",
        ),
        (
            "tls = \"require\"\nca_cert = \"/etc/hostname\"",
            "9:11",
            "`ca_cert` is only used",
        ),
    ];
    for (lines, at, message) in cases {
        let cfg = DaemonConfig::new("unused-token", &job("postgres", lines));
        let (st, out, err) = cfg.cli(&["check"]);
        assert!(!st.success(), "{lines}: accepted: {out}{err}");
        let file = cfg.dir.path().join("jobs/test.toml");
        let expected = format!("{}:{at}:", file.display());
        assert!(
            err.lines()
                .any(|l| l.starts_with(&expected) && l.contains(message)),
            "{lines}: expected `{message}` at {expected}: {err}"
        );
    }
}
