//! Raft snapshots end to end against the real OpenBao, moto S3 and the Go `age` CLI: a snapshot
//! lands in S3 and a local directory and restores (with `bao` and with our own `restore`) into a
//! second, fresh OpenBao; a corrupt or cut archive publishes nothing and alerts; retention prunes
//! only its own old snapshots through listings longer than a page and never after a failed run;
//! an unreachable S3 fails the run while the local copy is written; the daemon exposes the
//! snapshot metrics.
//!
//! Two stand-ins sit in front of real servers, never instead of them: a small HTTP "Vault" that
//! forwards everything to the real OpenBao but can serve a chosen snapshot archive (the corrupt
//! source), and a TCP relay in front of moto that can refuse connections (S3 unreachable).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bao::FreshBao;
use common::daemon::{DaemonConfig, record_canaries};
use common::vault::RootVault;
use common::{env, s3, unique, wait_until};
use sha2::{Digest, Sha256};
use vault_steward::backup::Manifest;

// ---- helpers -------------------------------------------------------------------------------

/// An age identity and an SSH ed25519 key pair, made by the real tools.
struct Keys {
    dir: tempfile::TempDir,
    age_recipient: String,
    ssh_recipient: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let age_keygen = Path::new(&env("VS_TEST_AGE_BIN")).with_file_name("age-keygen");
        let out = Command::new(&age_keygen)
            .arg("-o")
            .arg(dir.path().join("age.txt"))
            .output()
            .expect("age-keygen");
        assert!(out.status.success(), "age-keygen: {out:?}");
        let text = std::fs::read_to_string(dir.path().join("age.txt")).expect("age.txt");
        let age_recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("public key line")
            .to_string();
        let secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("secret key line");
        record_canaries([secret]);
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "backup-officer",
                "-f",
            ])
            .arg(dir.path().join("ssh"))
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {out:?}");
        let ssh_recipient = std::fs::read_to_string(dir.path().join("ssh.pub"))
            .expect("ssh.pub")
            .trim()
            .to_string();
        Keys {
            dir,
            age_recipient,
            ssh_recipient,
        }
    }

    fn age_identity(&self) -> PathBuf {
        self.dir.path().join("age.txt")
    }

    fn ssh_identity(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }
}

/// A token that may only read raft snapshots.
async fn snapshot_token(vault: &RootVault) -> String {
    let policy = unique("snapshots");
    vault
        .put_policy(
            &policy,
            r#"path "sys/storage/raft/snapshot" { capabilities = ["read"] }"#,
        )
        .await;
    vault.create_token(&[&policy], "1h").await
}

struct S3Target<'a> {
    endpoint: &'a str,
    bucket: &'a str,
    prefix: &'a str,
}

fn job_toml(
    name: &str,
    keys: &Keys,
    s3: Option<&S3Target>,
    local: Option<&Path>,
    extra: &str,
) -> String {
    let mut t = format!(
        r#"[[job]]
name = "{name}"
kind = "raft-snapshot"
recipients = ["{}", "{}"]
{extra}
"#,
        keys.age_recipient, keys.ssh_recipient
    );
    if let Some(s) = s3 {
        t.push_str(&format!(
            r#"[job.s3]
bucket = "{}"
prefix = "{}"
region = "us-east-1"
endpoint = "{}"
force_path_style = true
part_size_mib = 5
"#,
            s.bucket, s.prefix, s.endpoint
        ));
    }
    if let Some(dir) = local {
        t.push_str(&format!("[job.local]\ndir = \"{}\"\n", dir.display()));
    }
    t
}

/// Points the config's `[vault] address` somewhere else.
fn set_vault_address(cfg: &DaemonConfig, addr: &str) {
    let text = std::fs::read_to_string(cfg.path()).expect("steward.toml");
    let text = text.replace(
        &format!("address = \"{}\"", env("VS_TEST_VAULT_ADDR")),
        &format!("address = \"{addr}\""),
    );
    std::fs::write(cfg.path(), text).expect("steward.toml");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Decrypts `file` with the Go `age` CLI; returns the plaintext's path.
fn age_decrypt(identity: &Path, file: &Path) -> PathBuf {
    let out_path = file.with_extension("plain");
    let out = Command::new(env("VS_TEST_AGE_BIN"))
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(&out_path)
        .arg(file)
        .output()
        .expect("age -d");
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_path
}

async fn seed_secret(vault: &RootVault) -> (String, String) {
    let path = format!("secret/{}/db", unique("snap"));
    let value = format!("pw-{}", unique("v"));
    vault
        .kv_put(&path, serde_json::json!({ "password": value }))
        .await;
    record_canaries([value.as_str()]);
    (path, value)
}

async fn open_store(cfg: &DaemonConfig) -> Arc<dyn vault_steward::store::Store> {
    vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .expect("open state store")
}

async fn alert_firing(cfg: &DaemonConfig, name: &str, job: &str) -> bool {
    open_store(cfg)
        .await
        .firing_alerts()
        .await
        .expect("alerts")
        .iter()
        .any(|a| a.name == name && a.job == job)
}

/// A Vault-shaped archive (meta.json, state.bin, SHA256SUMS, SHA256SUMS.sealed) around
/// `state`, gzip'd like Vault's.
fn synthetic_archive(state: &[u8], flip_state_byte: Option<usize>) -> Vec<u8> {
    let meta = format!(
        r#"{{"Version":1,"ID":"bolt-snapshot","Index":4242,"Term":7,"Peers":null,"Size":{}}}"#,
        state.len()
    );
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        sha256_hex(meta.as_bytes()),
        sha256_hex(state)
    );
    let mut state = state.to_vec();
    if let Some(i) = flip_state_byte {
        state[i] ^= 0x01;
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in [
        ("meta.json", meta.as_bytes()),
        ("state.bin", state.as_slice()),
        ("SHA256SUMS", sums.as_bytes()),
        ("SHA256SUMS.sealed", b"not-a-real-signature".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, name, data).expect("tar entry");
    }
    let mut gz = tar.into_inner().expect("tar");
    gz.flush().expect("flush");
    gz.finish().expect("gzip")
}

/// A "Vault" in front of the real OpenBao: forwards every request, except that the snapshot
/// endpoint can be made to serve a chosen archive.
struct FakeVault {
    addr: String,
    serve: Arc<Mutex<Option<bytes::Bytes>>>,
}

impl FakeVault {
    async fn start() -> FakeVault {
        #[derive(Clone)]
        struct St {
            real: String,
            serve: Arc<Mutex<Option<bytes::Bytes>>>,
            http: reqwest::Client,
        }
        async fn handle(
            axum::extract::State(st): axum::extract::State<St>,
            req: axum::extract::Request,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let served = st.serve.lock().unwrap().clone();
            if req.uri().path() == "/v1/sys/storage/raft/snapshot"
                && let Some(body) = served
            {
                return (
                    [(axum::http::header::CONTENT_TYPE, "application/gzip")],
                    body,
                )
                    .into_response();
            }
            let url = format!(
                "{}{}",
                st.real,
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
            let mut out = st.http.request(method, url);
            for name in ["x-vault-token", "x-vault-namespace", "content-type"] {
                if let Some(v) = req.headers().get(name) {
                    out = out.header(name, v.as_bytes());
                }
            }
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let resp = out.body(body.to_vec()).send().await.unwrap();
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let bytes = resp.bytes().await.unwrap();
            (status, [(axum::http::header::CONTENT_TYPE, ctype)], bytes).into_response()
        }
        let serve = Arc::new(Mutex::new(None));
        let st = St {
            real: env("VS_TEST_VAULT_ADDR"),
            serve: serve.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(handle).with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeVault { addr, serve }
    }

    fn serve(&self, archive: Option<Vec<u8>>) {
        *self.serve.lock().unwrap() = archive.map(bytes::Bytes::from);
    }
}

/// A TCP relay to moto that can refuse connections ("S3 unreachable").
struct S3Relay {
    endpoint: String,
    up: Arc<AtomicBool>,
}

impl S3Relay {
    async fn start() -> S3Relay {
        let target = env("VS_TEST_S3_ENDPOINT")
            .trim_start_matches("http://")
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    }
                });
            }
        });
        S3Relay { endpoint, up }
    }
}

fn snapshot_names(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| k.ends_with(".snap.age"))
        .cloned()
        .collect()
}

// ---- Done when 1 -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_lands_in_s3_and_local_and_the_go_tools_restore_it() {
    let vault = RootVault::new();
    let (path, value) = seed_secret(&vault).await;
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let endpoint = env("VS_TEST_S3_ENDPOINT");
    let local = tempfile::tempdir().expect("tempdir");
    let cfg = DaemonConfig::new(
        &token,
        &job_toml(
            "snap",
            &keys,
            Some(&S3Target {
                endpoint: &endpoint,
                bucket: &bucket,
                prefix: "vault/prod",
            }),
            Some(local.path()),
            "",
        ),
    );

    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");

    let objects = s3::keys(&client, &bucket, "").await;
    let snaps = snapshot_names(&objects);
    assert_eq!(snaps.len(), 1, "{objects:?}");
    let key = &snaps[0];
    let name = key.strip_prefix("vault/prod/").expect("under the prefix");
    assert!(
        vault_steward::backup::parse_snapshot_name(name).is_some(),
        "{name}"
    );
    assert_eq!(objects, vec![key.clone(), format!("{key}.json")]);
    assert_eq!(
        files_in(local.path()),
        vec![name.to_string(), format!("{name}.json")],
        "exactly the snapshot and its manifest, no temp file"
    );
    assert!(
        s3::open_uploads(&client, &bucket, "").await.is_empty(),
        "no open multipart upload"
    );

    let object = s3::get(&client, &bucket, key).await;
    let local_copy = std::fs::read(local.path().join(name)).expect("local copy");
    assert_eq!(object, local_copy, "both destinations got the same bytes");
    let manifest = Manifest::parse(&s3::get(&client, &bucket, &format!("{key}.json")).await)
        .expect("manifest parses");
    assert_eq!(manifest.job, "snap");
    assert_eq!(manifest.snapshot, name);
    assert!(manifest.raft_index > 0 && manifest.raft_term > 0);
    assert_eq!(manifest.ciphertext_size, object.len() as u64);
    assert_eq!(manifest.ciphertext_sha256, sha256_hex(&object));
    assert!(manifest.vault_version.is_some());
    assert_eq!(manifest.recipients[0], keys.age_recipient);
    assert!(
        manifest.recipients[1].starts_with("ssh-ed25519 SHA256:"),
        "{:?}",
        manifest.recipients
    );
    let local_manifest =
        Manifest::parse(&std::fs::read(local.path().join(format!("{name}.json"))).unwrap())
            .expect("local manifest");
    assert_eq!(local_manifest, manifest);

    // The Go age CLI decrypts it, with either identity.
    let work = tempfile::tempdir().expect("tempdir");
    let encrypted = work.path().join("snap.age");
    std::fs::write(&encrypted, &object).unwrap();
    let plain = age_decrypt(&keys.age_identity(), &encrypted);
    let plaintext = std::fs::read(&plain).unwrap();
    assert_eq!(plaintext.len() as u64, manifest.plaintext_size);
    assert_eq!(sha256_hex(&plaintext), manifest.plaintext_sha256);
    std::fs::write(work.path().join("snap2.age"), &object).unwrap();
    let plain2 = age_decrypt(&keys.ssh_identity(), &work.path().join("snap2.age"));
    assert_eq!(std::fs::read(plain2).unwrap(), plaintext);

    // `bao operator raft snapshot restore -force` loads it into a second, fresh OpenBao,
    // which, unsealed with the first server's key, serves the secret written before.
    let fresh = FreshBao::start().await;
    let out = Command::new(env("VS_TEST_BAO_BIN"))
        .args(["operator", "raft", "snapshot", "restore", "-force"])
        .arg(&plain)
        .env("BAO_ADDR", &fresh.addr)
        .env("BAO_TOKEN", &fresh.root_token)
        .output()
        .expect("bao restore");
    assert!(
        out.status.success(),
        "bao restore: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fresh.log()
    );
    let first_key = std::fs::read_to_string(env("VS_TEST_VAULT_UNSEAL_KEY_FILE")).unwrap();
    fresh.reseal_and_unseal_with(first_key.trim()).await;
    let (status, data) = fresh.kv_get(&path, vault.root_token()).await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["password"], value.as_str());
}
