//! The testbed contract: every variable `scripts/testbed.sh up` promises is set and points at a
//! server that answers as the other integration tests expect. A failure here means the testbed,
//! not the daemon, is broken; it is checked with the plainest clients (raw TCP, raw HTTP/1.0) so
//! that it does not depend on the crate under test.
//!
//! Never asserts anything about the daemon itself.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use common::env;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// `GET path` over HTTP/1.0; returns (status, body).
fn http_get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let hostport = base.strip_prefix("http://").expect("plain http:// address");
    let mut stream = connect(hostport);
    let auth = token
        .map(|t| format!("X-Vault-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from {base}{path}: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn assert_owner_only(path: &str) {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "{path} is readable by others (mode {mode:o})"
    );
}

fn read_secret_file(var: &str) -> String {
    let path = env(var);
    assert_owner_only(&path);
    let value = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{var}={path}: {e}"));
    let value = value.trim().to_owned();
    assert!(!value.is_empty(), "{var}={path} is empty");
    value
}

#[test]
fn openbao_is_unsealed_active_with_kv2_and_approle() {
    let addr = env("VS_TEST_VAULT_ADDR");
    let token = read_secret_file("VS_TEST_VAULT_TOKEN_FILE");
    read_secret_file("VS_TEST_VAULT_UNSEAL_KEY_FILE");
    assert!(
        Path::new(&env("VS_TEST_BAO_BIN")).is_file(),
        "VS_TEST_BAO_BIN is not a file"
    );

    let (status, body) = http_get(&addr, "/v1/sys/health", None);
    assert_eq!(
        status, 200,
        "health: not initialised, sealed or standby: {body}"
    );
    let (status, body) = http_get(&addr, "/v1/sys/mounts/secret", Some(&token));
    assert_eq!(status, 200, "secret/ mount: {body}");
    assert!(
        body.contains(r#""type":"kv""#) && body.contains(r#""version":"2""#),
        "secret/ is not kv-v2: {body}"
    );
    let (status, body) = http_get(&addr, "/v1/sys/auth", Some(&token));
    assert_eq!(status, 200, "sys/auth: {body}");
    assert!(
        body.contains(r#""approle/""#),
        "approle is not enabled: {body}"
    );
}

#[tokio::test]
async fn postgres_demands_the_password() {
    let url = env("VS_TEST_PG_URL");
    assert!(
        url.contains(&format!(":{}/", env("VS_TEST_PG_PORT"))),
        "VS_TEST_PG_URL and VS_TEST_PG_PORT disagree"
    );
    let options = PgConnectOptions::from_str(&url).expect("VS_TEST_PG_URL parses");

    let mut conn = PgConnection::connect_with(&options)
        .await
        .expect("the right password logs in");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();

    let err = PgConnection::connect_with(&options.password("not-the-password"))
        .await
        .expect_err("a wrong password must be refused: the cluster has to enforce scram-sha-256");
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(
        code.as_deref(),
        Some("28P01"),
        "expected invalid_password, got {err}"
    );
}

#[test]
fn mariadb_answers() {
    let url = env("VS_TEST_MYSQL_URL");
    let hostport = url
        .strip_prefix("mysql://root@")
        .and_then(|rest| rest.split('/').next())
        .expect("mysql://root@HOST:PORT/DB");
    // The server speaks first: a handshake packet whose 5th byte is protocol version 10.
    let mut header = [0u8; 5];
    connect(hostport)
        .read_exact(&mut header)
        .expect("MariaDB sends its handshake");
    assert_eq!(header[4], 10, "not a MySQL protocol v10 handshake");
}

#[test]
fn s3_answers_with_test_credentials() {
    let (status, body) = http_get(&env("VS_TEST_S3_ENDPOINT"), "/", None);
    assert_eq!(status, 200, "moto: {body}");
    assert_eq!(env("AWS_ACCESS_KEY_ID"), "testing");
    assert_eq!(env("AWS_SECRET_ACCESS_KEY"), "testing");
    assert!(!env("AWS_REGION").is_empty());
}

#[test]
fn smtp_greets_and_maildir_exists() {
    let mut stream = BufReader::new(connect(&env("VS_TEST_SMTP_ADDR")));
    let mut banner = String::new();
    stream.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("220"), "SMTP banner: {banner:?}");
    stream.get_mut().write_all(b"QUIT\r\n").unwrap();
    assert!(
        Path::new(&env("VS_TEST_MAILDIR")).join("new").is_dir(),
        "VS_TEST_MAILDIR has no new/"
    );
}

#[test]
fn log_dir_is_writable() {
    let probe = Path::new(&env("VS_TEST_LOG_DIR")).join(common::unique("probe"));
    std::fs::write(&probe, b"ok").expect("VS_TEST_LOG_DIR is writable");
    std::fs::remove_file(&probe).unwrap();
}

#[test]
fn interop_tools_run() {
    for var in [
        "VS_TEST_AGE_BIN",
        "VS_TEST_PROMTOOL_BIN",
        "VS_TEST_BAO_BIN",
        "VS_TEST_ALERTMANAGER_BIN",
    ] {
        let bin = env(var);
        let out = std::process::Command::new(&bin)
            .arg(if var == "VS_TEST_BAO_BIN" {
                "version"
            } else {
                "--version"
            })
            .output()
            .unwrap_or_else(|e| panic!("{var}={bin}: {e}"));
        assert!(
            out.status.success(),
            "{var}={bin} --version failed: {out:?}"
        );
    }
    // The venv's python, with aiosmtpd, for tests that run an SMTP server of their own.
    let python = env("VS_TEST_PYTHON");
    let out = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd.controller, aiosmtpd.handlers"])
        .output()
        .unwrap_or_else(|e| panic!("VS_TEST_PYTHON={python}: {e}"));
    assert!(out.status.success(), "VS_TEST_PYTHON={python}: {out:?}");
}
