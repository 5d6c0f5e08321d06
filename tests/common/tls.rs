//! Private database servers that speak TLS, for the database TLS tests: a CA the test makes
//! (with the `openssl` CLI), a PostgreSQL cluster (initdb with scram-sha-256 on TCP, `ssl = on`,
//! TLS-only `hostssl` lines) and a MariaDB instance ([`PrivateMariadb`] with `--ssl-*`), each
//! in a temp directory of its own on a free loopback port and stopped when dropped. The shared testbed servers are never touched: their TLS settings are global.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};

use super::daemon::free_port;
use super::db::Engine;
use super::mariadb::PrivateMariadb;

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority made for one test: `cert` is its PEM certificate.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// A fresh CA (P-256, valid two days) named `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("vs-ca-")
            .tempdir()
            .expect("tempdir");
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca.key");
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .arg("ec_paramgen_curve:prime256v1")
                .args(["-nodes", "-days", "2", "-subj"])
                .arg(format!("/CN={name}"))
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req (CA)",
        );
        TestCa { dir, cert, key }
    }

    /// A server certificate for `localhost` and `127.0.0.1`, signed by this CA, written as
    /// `dir/server.crt` and `dir/server.key` (mode 0600).
    pub fn issue_server(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        let csr = self.dir.path().join("server.csr");
        let ext = self.dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        run(
            Command::new("openssl")
                .args(["req", "-newkey", "ec", "-pkeyopt"])
                .arg("ec_paramgen_curve:prime256v1")
                .args(["-nodes", "-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&csr),
            "openssl req (server)",
        );
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
            "openssl x509 (sign)",
        );
        chmod(&key, 0o600);
        (cert, key)
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn ids_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no OS user {user}"))
    };
    (id("-u"), id("-g"))
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), (uid, gid));
        }
    }
}

/// The directory of PostgreSQL's server binaries (the newest installed), as scripts/testbed.sh
/// finds it.
fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin"))
}

/// A private PostgreSQL cluster serving TLS with a certificate of `ca`; TCP logins must use TLS
/// and SCRAM (`hostssl … scram-sha-256`, no plain `host` line), the superuser `postgres` logs in
/// over the socket in the temp directory.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl PrivatePg {
    pub async fn start(ca: &TestCa) -> PrivatePg {
        let dir = tempfile::Builder::new()
            .prefix("vs-pgtls-")
            .tempdir()
            .expect("tempdir");
        let postgres = ids_of("postgres");
        chown_tree(dir.path(), postgres);
        let bin = pg_bindir();
        let data = dir.path().join("data");
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"]),
            "initdb",
        );
        ca.issue_server(&data);
        chown_tree(&data, postgres);
        let port = free_port();
        let conf = format!(
            "\n# tests/common/tls.rs\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\npassword_encryption = scram-sha-256\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            dir.path().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // TLS or nothing over TCP: a login that did not use TLS is refused by the server itself.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        chown_tree(&data, postgres);
        let pg = PrivatePg { dir, port, bin };
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.path().join("postgres.log"))
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null()),
            "pg_ctl start",
        );
        pg
    }

    /// The superuser over the socket.
    pub async fn root(&self) -> PgConnection {
        let o = PgConnectOptions::new_without_pgpass()
            .socket(self.dir.path())
            .port(self.port)
            .username("postgres")
            .database("postgres");
        PgConnection::connect_with(&o)
            .await
            .expect("superuser connection")
    }

    pub async fn exec(&self, statements: &[String]) {
        let mut c = self.root().await;
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.as_str()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let _ = c.close().await;
    }

    /// A TLS login (certificate checked against `ca`) as `user` over TCP to `host`.
    pub async fn login(&self, host: &str, ca: &Path, user: &str, pw: &str) -> Result<(), String> {
        let o = PgConnectOptions::new_without_pgpass()
            .host(host)
            .port(self.port)
            .username(user)
            .password(pw)
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(ca);
        match PgConnection::connect_with(&o).await {
            Ok(c) => {
                let _ = c.close().await;
                Ok(())
            }
            Err(e) => Err(e.to_string().replace(pw, "[pw]")),
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private MariaDB instance serving TLS with a certificate of `ca` (or no TLS at all); `root`
/// (no password) logs in over the socket in the temp directory.
/// A [`PrivateMariadb`] serving TLS with a certificate the test CA signs, or no TLS at all.
pub struct PrivateMaria {
    /// The server's certificate and key (they outlive the server's start).
    _certs: tempfile::TempDir,
    server: PrivateMariadb,
    pub port: u16,
}

impl PrivateMaria {
    pub async fn start(ca: &TestCa) -> PrivateMaria {
        Self::start_with(Some(ca)).await
    }

    /// `ca`: serve TLS with a certificate it signs; `None`: no TLS (MariaDB 10.11 makes no
    /// certificate of its own).
    pub async fn start_with(ca: Option<&TestCa>) -> PrivateMaria {
        let certs = tempfile::Builder::new()
            .prefix("vs-mytls-")
            .tempdir()
            .expect("tempdir");
        let mut extra = vec!["--skip-log-bin".to_string()];
        match ca {
            Some(ca) => {
                let (cert, key) = ca.issue_server(certs.path());
                extra.push(format!("--ssl-cert={}", cert.display()));
                extra.push(format!("--ssl-key={}", key.display()));
                extra.push(format!("--ssl-ca={}", ca.cert.display()));
            }
            None => extra.push("--skip-ssl".to_string()),
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = PrivateMariadb::start(&extra).await;
        let port = server.port;
        PrivateMaria {
            _certs: certs,
            server,
            port,
        }
    }

    /// Runs `statements` as root (over TCP: TLS when the server offers it, unverified).
    pub async fn exec(&self, statements: &[String]) {
        Engine::Mysql
            .root_exec_on(&self.server.url(), statements)
            .await;
    }

    /// A TLS login (VerifyIdentity against `ca`) as `user` over TCP to `host`; a plain one
    /// when `ca` is `None`.
    pub async fn login(
        &self,
        host: &str,
        ca: Option<&Path>,
        user: &str,
        pw: &str,
    ) -> Result<(), String> {
        let mut o = MySqlConnectOptions::new()
            .host(host)
            .port(self.port)
            .username(user)
            .password(pw);
        o = match ca {
            Some(ca) => o.ssl_mode(MySqlSslMode::VerifyIdentity).ssl_ca(ca),
            None => o.ssl_mode(MySqlSslMode::Disabled),
        };
        match MySqlConnection::connect_with(&o).await {
            Ok(c) => {
                let _ = c.close().await;
                Ok(())
            }
            Err(e) => Err(e.to_string().replace(pw, "[pw]")),
        }
    }
}
