//! A private MariaDB server for one test: `mariadb-install-db` into a temp dir, then `mariadbd`
//! on a free loopback port (its socket and pid file in the same dir), stopped and removed when
//! dropped. For server-wide settings (plugins, globals, TLS) that must not reach the machine's
//! shared MariaDB, which every other test uses.
//!
//! Its root (no password, `root@127.0.0.1` as `mariadb-install-db
//! --auth-root-authentication-method=normal` makes it) is the superuser of [`PrivateMariadb::url`];
//! the database of `VS_TEST_MYSQL_URL` (`test`) is created so that [`super::db::Setup`] and
//! [`super::db::Engine::login_at`] work on it unchanged.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use super::daemon::{free_port, log_dir};
use super::db::Engine;
use super::{unique, wait_until};

const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const MARIADBD: &str = "/usr/sbin/mariadbd";

pub struct PrivateMariadb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
}

impl PrivateMariadb {
    /// Initialises a data directory and starts the server with `extra` options (e.g.
    /// `--plugin-load-add=…`); returns once root can log in over TCP and the test database
    /// exists.
    pub async fn start(extra: &[&str]) -> PrivateMariadb {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        // Its own tmpdir, as in `tls.rs`: bootstraps side by side in /tmp can collide.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("tmpdir");
        let install = Command::new(INSTALL_DB)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            install.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        let port = free_port();
        // The error log goes where the canary scan looks.
        let log = log_dir().join(format!("{}.log", unique("mariadbd")));
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        let mut server = PrivateMariadb {
            port,
            dir,
            child,
            log,
        };
        let url = server.url();
        let child = &mut server.child;
        let log = server.log.clone();
        wait_until(Duration::from_secs(60), "the private mariadbd", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mariadbd exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let mut admin = url.clone();
            admin.set_path("/mysql");
            async move {
                match MySqlConnection::connect(admin.as_str()).await {
                    Ok(c) => {
                        let _ = c.close().await;
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        let mut admin = url.clone();
        admin.set_path("/mysql");
        Engine::Mysql
            .root_exec_on(
                &admin,
                &[format!(
                    "CREATE DATABASE IF NOT EXISTS `{}`",
                    Engine::Mysql.database()
                )],
            )
            .await;
        server
    }

    /// The superuser URL (root, no password) on the test database.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!(
            "mysql://root@127.0.0.1:{}/{}",
            self.port,
            Engine::Mysql.database()
        ))
        .expect("url")
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, waiting up to 30 s, then SIGKILL) and removes its files.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = &self.dir;
    }
}

impl Drop for PrivateMariadb {
    /// A test that panicked still stops its server (SIGKILL: the data dir goes with it).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
