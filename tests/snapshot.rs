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
        let age_recipient = common::age_identity(&dir.path().join("age.txt"));
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
    /// Answer snapshot requests with a 307 to the real OpenBao, as a standby node may.
    redirect: Arc<AtomicBool>,
}

impl FakeVault {
    async fn start() -> FakeVault {
        #[derive(Clone)]
        struct St {
            real: String,
            serve: Arc<Mutex<Option<bytes::Bytes>>>,
            redirect: Arc<AtomicBool>,
            http: reqwest::Client,
        }
        async fn handle(
            axum::extract::State(st): axum::extract::State<St>,
            req: axum::extract::Request,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            if req.uri().path() == "/v1/sys/storage/raft/snapshot"
                && st.redirect.load(Ordering::SeqCst)
            {
                let to = format!("{}{}", st.real, req.uri().path());
                return (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, to)],
                )
                    .into_response();
            }
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
        let redirect = Arc::new(AtomicBool::new(false));
        let st = St {
            real: env("VS_TEST_VAULT_ADDR"),
            serve: serve.clone(),
            redirect: redirect.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(handle).with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeVault {
            addr,
            serve,
            redirect,
        }
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

    // `check --connect` proves the token may read snapshots and the destinations are writable.
    let (status, stdout, stderr) = cfg.cli(&["check", "--connect"]);
    assert!(status.success(), "check --connect:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("job snap: ok: can read sys/storage/raft/snapshot"),
        "{stdout}"
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
    // A small snapshot is one PutObject; it carried the CRC32 of exactly these bytes.
    {
        use base64::Engine as _;
        let crc = base64::engine::general_purpose::STANDARD
            .encode(crc32fast::hash(&object).to_be_bytes());
        assert_eq!(s3::stored_crc32(&client, &bucket, key).await, Some(crc));
    }
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

/// A `snap` job with its own snapshot-only token, writing under `vault/` in a fresh bucket of the
/// testbed's S3 and, with `local`, into a fresh directory.
struct SnapJob {
    vault: RootVault,
    keys: Keys,
    client: aws_sdk_s3::Client,
    bucket: String,
    local: tempfile::TempDir,
    /// The job file's text (for a second config, e.g. one pointed at another Vault).
    jobs: String,
    cfg: DaemonConfig,
}

async fn snap_job(local: bool) -> SnapJob {
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let endpoint = env("VS_TEST_S3_ENDPOINT");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = S3Target {
        endpoint: &endpoint,
        bucket: &bucket,
        prefix: "vault",
    };
    let jobs = job_toml("snap", &keys, Some(&target), local.then(|| dir.path()), "");
    SnapJob {
        cfg: DaemonConfig::new(&token, &jobs),
        vault,
        keys,
        client,
        bucket,
        local: dir,
        jobs,
    }
}

/// Names have one-second resolution: snapshots taken back to back (a CLI `snapshot` right after
/// a scheduled one) must not replace each other; the later one waits for the next second.
#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_snapshots_keep_distinct_names() {
    let SnapJob {
        client,
        bucket,
        local,
        cfg,
        ..
    } = snap_job(true).await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
        assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");
    }
    let snaps = snapshot_names(&s3::keys(&client, &bucket, "").await);
    assert_eq!(
        snaps.len(),
        3,
        "three runs in {:?}: {snaps:?}",
        started.elapsed()
    );
    assert_eq!(
        files_in(local.path()).len(),
        6,
        "three snapshots, three manifests"
    );
    let records = open_store(&cfg).await.snapshots("snap", 10).await.unwrap();
    assert_eq!(records.len(), 6, "one record per snapshot and destination");
}

/// A name another writer already took (two jobs or deployments on one prefix or directory) is
/// never overwritten: S3 writes are conditional (`If-None-Match: *`) and local files are linked
/// in, not renamed over. The run fails and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_another_writer_took_is_left_alone() {
    use vault_steward::backup::{manifest_name, snapshot_name};
    let SnapJob {
        client,
        bucket,
        local,
        cfg,
        ..
    } = snap_job(true).await;
    // Every name the next minute could give, taken by "someone else".
    let now = chrono::Utc::now();
    let names: Vec<String> = (-2..60)
        .map(|s| snapshot_name(now + chrono::Duration::seconds(s)))
        .collect();

    // Round 1: snapshots and manifests are both there.
    for name in &names {
        for file in [name.clone(), manifest_name(name)] {
            s3::put(
                &client,
                &bucket,
                &format!("vault/{file}"),
                b"foreign".to_vec(),
            )
            .await;
            std::fs::write(local.path().join(&file), b"foreign").unwrap();
        }
    }
    // A snapshot run fails saying so, and changes nothing of what is there.
    let refused_and_untouched = |round: &str, expect_manifests: bool| {
        let (client, bucket, local, names, cfg) = (&client, &bucket, local.path(), &names, &cfg);
        let round = round.to_string();
        async move {
            let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
            assert!(
                !status.success(),
                "{round}: published over foreign objects: {stdout}"
            );
            assert!(
                stderr.contains("already exists and was left alone"),
                "{round}: {stderr}"
            );
            let keys = s3::keys(client, bucket, "").await;
            let expected = if expect_manifests {
                names.len() * 2
            } else {
                names.len()
            };
            assert_eq!(
                keys.len(),
                expected,
                "{round}: nothing added or removed: {keys:?}"
            );
            for key in &keys {
                assert_eq!(
                    s3::get(client, bucket, key).await,
                    b"foreign",
                    "{round}: {key}"
                );
            }
            assert!(
                s3::open_uploads(client, bucket, "").await.is_empty(),
                "{round}: the upload was aborted"
            );
            let files = files_in(local);
            assert_eq!(
                files.len(),
                expected,
                "{round}: no temp file left: {files:?}"
            );
            for f in &files {
                assert_eq!(
                    std::fs::read(local.join(f)).unwrap(),
                    b"foreign",
                    "{round}: {f}"
                );
            }
        }
    };
    refused_and_untouched("snapshot and manifest taken", true).await;

    // Round 2: only the snapshots are there; our manifest goes in, then is removed again.
    for name in &names {
        let manifest = manifest_name(name);
        client
            .delete_object()
            .bucket(&bucket)
            .key(format!("vault/{manifest}"))
            .send()
            .await
            .expect("delete");
        std::fs::remove_file(local.path().join(&manifest)).unwrap();
    }
    refused_and_untouched("snapshot taken", false).await;
}

/// A run that died (`kill -9`) leaves its multipart upload open; the next successful run aborts
/// such uploads once their name says they are a day old, and only ours directly under the prefix.
#[tokio::test(flavor = "multi_thread")]
async fn a_good_run_aborts_uploads_that_dead_runs_left() {
    use vault_steward::backup::snapshot_name;
    let SnapJob {
        client,
        bucket,
        cfg,
        ..
    } = snap_job(false).await;
    let now = chrono::Utc::now();
    let old = snapshot_name(now - chrono::Duration::hours(25));
    let recent = snapshot_name(now - chrono::Duration::hours(23));
    let dead = format!("vault/{old}");
    let keep = [
        format!("vault/{recent}"),
        "vault/notes.bin".to_string(),
        format!("other/{old}"),
        format!("vault/sub/{old}"),
    ];
    for key in keep.iter().chain([&dead]) {
        client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("create upload");
    }
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 abandoned upload(s) aborted"), "{stdout}");
    let mut open = s3::open_uploads(&client, &bucket, "").await;
    open.sort();
    let mut expected = keep.to_vec();
    expected.sort();
    assert_eq!(open, expected, "only the day-old upload of ours went");
}

// ---- Done when 2 -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn restore_command_restores_and_verify_catches_corruption() {
    let SnapJob {
        vault,
        keys,
        client,
        bucket,
        local,
        jobs,
        cfg,
    } = snap_job(true).await;
    let (path, value) = seed_secret(&vault).await;
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");

    let (status, stdout, stderr) = cfg.cli(&["backups", "list", "snap", "--json"]);
    assert!(status.success(), "list: {stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 2, "{stdout}");
    let name = listed[0]["key"].as_str().unwrap().to_string();
    assert_eq!(listed[1]["key"], name.as_str());
    let mut dests: Vec<&str> = listed
        .iter()
        .map(|i| i["destination"].as_str().unwrap())
        .collect();
    dests.sort();
    assert_eq!(dests, ["local", "s3"]);
    assert!(listed[0]["manifest"]["raft_index"].as_u64().unwrap() > 0);
    let (status, table, _) = cfg.cli(&["backups", "list", "snap"]);
    assert!(status.success());
    assert!(
        table.contains(&name) && table.contains("RAFT INDEX"),
        "{table}"
    );

    let identity = keys.age_identity();
    let identity = identity.to_str().unwrap();
    let (status, stdout, stderr) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        "--latest",
        "--identity",
        identity,
    ]);
    assert!(status.success(), "verify: {stdout}\n{stderr}");
    assert_eq!(stdout.matches("OK ").count(), 2, "{stdout}");
    assert!(stdout.contains("matches its manifest"), "{stdout}");

    // `restore --force` into a second, fresh OpenBao, on its own (our binary, the SSH identity).
    let fresh = FreshBao::start().await;
    let restore_cfg = DaemonConfig::new(&fresh.root_token, &jobs);
    set_vault_address(&restore_cfg, &fresh.addr);
    let ssh = keys.ssh_identity();
    let (status, stdout, stderr) = restore_cfg.cli(&[
        "restore",
        "snap",
        "--latest",
        "--identity",
        ssh.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        status.success(),
        "restore: {stdout}\n{stderr}\n{}",
        fresh.log()
    );
    assert!(stdout.contains("restored"), "{stdout}");
    // That config's own state store never saw the upload: a warning, not a refusal.
    assert!(
        stderr.contains("has no record of this snapshot"),
        "no warning about the missing upload record:\n{stderr}"
    );
    let first_key = std::fs::read_to_string(env("VS_TEST_VAULT_UNSEAL_KEY_FILE")).unwrap();
    fresh.reseal_and_unseal_with(first_key.trim()).await;
    let (status, data) = fresh.kv_get(&path, vault.root_token()).await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["password"], value.as_str());

    // A byte flipped in the local copy, or in the S3 object: verify fails there.
    let file = local.path().join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    let good = bytes.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        &name,
        "--identity",
        identity,
        "--from",
        "local",
    ]);
    assert!(
        !status.success(),
        "a corrupted local copy verified: {stdout}"
    );
    assert!(stdout.contains("FAILED"), "{stdout}");
    // Cut short.
    std::fs::write(&file, &good[..good.len() - 100]).unwrap();
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        &name,
        "--identity",
        identity,
        "--from",
        "local",
    ]);
    assert!(!status.success(), "a cut local copy verified: {stdout}");
    // The S3 copy is still good; then it too is damaged.
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        &name,
        "--identity",
        identity,
        "--from",
        "s3",
    ]);
    assert!(status.success(), "{stdout}");
    let key = format!("vault/{name}");
    let mut object = s3::get(&client, &bucket, &key).await;
    let at = object.len() / 3;
    object[at] ^= 0x80;
    s3::put(&client, &bucket, &key, object).await;
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        "--latest",
        "--identity",
        identity,
    ]);
    assert!(!status.success(), "{stdout}");
    assert_eq!(stdout.matches("FAILED").count(), 2, "{stdout}");
    // A wrong identity is refused with a clear message.
    let other = Keys::new();
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        &name,
        "--identity",
        other.age_identity().to_str().unwrap(),
        "--from",
        "s3",
    ]);
    assert!(!status.success());
    assert!(stdout.contains("no identity"), "{stdout}");
}

/// Someone with write access to the bucket replaces the newest snapshot with an older genuine
/// one and forges its manifest to match (the manifest comes from the same writer, so it proves
/// nothing). The SHA-256 the state store recorded at upload does: `backups verify` fails the
/// object and `restore --latest` refuses it, saying why; `--skip-record-check` overrides.
#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_an_object_whose_sha256_is_not_the_recorded_one() {
    let SnapJob {
        vault,
        keys,
        client,
        bucket,
        jobs,
        cfg,
        ..
    } = snap_job(false).await;
    let (path, value) = seed_secret(&vault).await;
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");
    // The secret changes, then the newer snapshot is taken.
    let newer_value = format!("pw-{}", unique("v2"));
    record_canaries([newer_value.as_str()]);
    vault
        .kv_put(&path, serde_json::json!({ "password": newer_value }))
        .await;
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "snapshot failed:\n{stdout}\n{stderr}");
    let mut names: Vec<String> = snapshot_names(&s3::keys(&client, &bucket, "").await)
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let (older, newer) = (names[0].clone(), names[1].clone());
    assert!(older < newer);

    // The swap: the older object under the newer name, with a manifest forged to fit.
    let old_object = s3::get(&client, &bucket, &format!("vault/{older}")).await;
    let mut manifest: Manifest =
        Manifest::parse(&s3::get(&client, &bucket, &format!("vault/{older}.json")).await)
            .expect("manifest");
    let genuine_newer: Manifest =
        Manifest::parse(&s3::get(&client, &bucket, &format!("vault/{newer}.json")).await)
            .expect("manifest");
    manifest.snapshot = newer.clone();
    manifest.taken_at = genuine_newer.taken_at;
    s3::put(&client, &bucket, &format!("vault/{newer}"), old_object).await;
    s3::put(
        &client,
        &bucket,
        &format!("vault/{newer}.json"),
        manifest.to_json(),
    )
    .await;

    let identity = keys.age_identity();
    let identity = identity.to_str().unwrap();
    let (status, stdout, stderr) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        "--latest",
        "--identity",
        identity,
    ]);
    assert!(
        !status.success(),
        "a swapped object verified:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("FAILED") && stdout.contains("not the SHA-256 recorded"),
        "{stdout}\n{stderr}"
    );
    // The older snapshot, under its own name, still verifies against its record.
    let (status, stdout, stderr) =
        cfg.cli(&["backups", "verify", "snap", &older, "--identity", identity]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("OK ") && stdout.contains("matches its manifest and the upload record"),
        "{stdout}"
    );

    // Restore into a fresh OpenBao (never the shared one), with this job's state store.
    let fresh = FreshBao::start().await;
    let restore_cfg = DaemonConfig::new(&fresh.root_token, &jobs);
    set_vault_address(&restore_cfg, &fresh.addr);
    let text = std::fs::read_to_string(restore_cfg.path()).unwrap();
    let text = text.replace(
        &restore_cfg.state_db().display().to_string(),
        &cfg.state_db().display().to_string(),
    );
    std::fs::write(restore_cfg.path(), text).unwrap();
    let (status, stdout, stderr) = restore_cfg.cli(&[
        "restore",
        "snap",
        "--latest",
        "--identity",
        identity,
        "--force",
    ]);
    assert!(
        !status.success(),
        "a swapped object was restored:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("not the SHA-256 recorded") && stderr.contains("--skip-record-check"),
        "{stdout}\n{stderr}"
    );
    assert!(!fresh.sealed().await, "the fresh OpenBao was restored into");

    // Overridden: it restores (the older data, as the object is the older snapshot).
    let (status, stdout, stderr) = restore_cfg.cli(&[
        "restore",
        "snap",
        "--latest",
        "--identity",
        identity,
        "--force",
        "--skip-record-check",
    ]);
    assert!(
        status.success(),
        "restore: {stdout}\n{stderr}\n{}",
        fresh.log()
    );
    assert!(stderr.contains("not the SHA-256 recorded"), "{stderr}");
    let first_key = std::fs::read_to_string(env("VS_TEST_VAULT_UNSEAL_KEY_FILE")).unwrap();
    fresh.reseal_and_unseal_with(first_key.trim()).await;
    let (status, data) = fresh.kv_get(&path, vault.root_token()).await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["password"], value.as_str());
}

/// Manifests are read up to 64 KiB only: a manifest padded far past that (still valid JSON) in
/// the bucket is not read whole and counts as missing; the same manifest unpadded is read.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_manifest_in_the_bucket_counts_as_missing() {
    let SnapJob {
        client,
        bucket,
        cfg,
        ..
    } = snap_job(false).await;
    let name = "vault-20260101-000000.snap.age";
    s3::put(
        &client,
        &bucket,
        &format!("vault/{name}"),
        b"ciphertext".to_vec(),
    )
    .await;
    let manifest = Manifest {
        format: 1,
        job: "snap".into(),
        snapshot: name.into(),
        taken_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        vault_version: None,
        raft_index: 7,
        raft_term: 1,
        state_size: 1,
        plaintext_size: 1,
        plaintext_sha256: "ab".repeat(32),
        ciphertext_size: 10,
        ciphertext_sha256: "cd".repeat(32),
        recipients: Vec::new(),
        producer: "test".into(),
    };
    let listed = |cfg: &DaemonConfig| {
        let (status, stdout, stderr) = cfg.cli(&["backups", "list", "snap", "--json"]);
        assert!(status.success(), "{stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        v.as_array().expect("array").clone()
    };
    let key = format!("vault/{name}.json");
    s3::put(&client, &bucket, &key, manifest.to_json()).await;
    let rows = listed(&cfg);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["manifest"]["raft_index"], 7);
    let mut padded = manifest.to_json();
    padded.resize(32 << 20, b' ');
    s3::put(&client, &bucket, &key, padded).await;
    let rows = listed(&cfg);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["manifest"].is_null(), "{rows:?}");
}

// ---- Done when 3 -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_cut_snapshot_publishes_nothing_and_alerts() {
    use rand::RngCore;
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let endpoint = env("VS_TEST_S3_ENDPOINT");
    let local = tempfile::tempdir().expect("tempdir");
    let fake = FakeVault::start().await;
    let target = S3Target {
        endpoint: &endpoint,
        bucket: &bucket,
        prefix: "vault",
    };
    let cfg = DaemonConfig::new(
        &token,
        &job_toml("snap", &keys, Some(&target), Some(local.path()), ""),
    );
    set_vault_address(&cfg, &fake.addr);

    // 12 MiB of state: more than two 5 MiB parts, so the multipart upload is under way when the
    // check fails at the end of the stream.
    let mut state = vec![0u8; 12 * 1024 * 1024];
    rand::rng().fill_bytes(&mut state);
    let good = synthetic_archive(&state, None);
    let flipped = synthetic_archive(&state, Some(7 * 1024 * 1024));
    let cut = good[..good.len() * 3 / 4].to_vec();
    let nothing_published = |what: &'static str| {
        let client = client.clone();
        let bucket = bucket.clone();
        let dir = local.path().to_path_buf();
        async move {
            assert_eq!(
                s3::keys(&client, &bucket, "").await,
                Vec::<String>::new(),
                "{what}: no object, no manifest"
            );
            assert!(
                s3::open_uploads(&client, &bucket, "").await.is_empty(),
                "{what}: the multipart upload was aborted"
            );
            assert_eq!(
                files_in(&dir),
                Vec::<String>::new(),
                "{what}: no local file"
            );
        }
    };

    fake.serve(Some(flipped));
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success(), "a flipped byte was published: {stdout}");
    assert!(
        stderr.contains("`state.bin` does not match its SHA-256"),
        "{stderr}"
    );
    assert!(
        stderr.contains("multipart upload aborted"),
        "the upload had started and was aborted: {stderr}"
    );
    nothing_published("flipped byte").await;
    assert!(alert_firing(&cfg, "SnapshotInvalid", "snap").await);

    fake.serve(Some(cut));
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success(), "a cut archive was published: {stdout}");
    assert!(stderr.contains("ends early"), "{stderr}");
    nothing_published("cut short").await;
    assert!(alert_firing(&cfg, "SnapshotInvalid", "snap").await);

    // The same setup publishes a sound archive, and the alert resolves.
    fake.serve(Some(good.clone()));
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let snaps = snapshot_names(&s3::keys(&client, &bucket, "").await);
    assert_eq!(snaps.len(), 1);
    assert_eq!(files_in(local.path()).len(), 2);
    // Uploaded in several parts (in parallel), declared as CRC32 (S3 then checks every part and
    // keeps a checksum of them; without the declaration moto keeps a CRC64NVME instead), it
    // decrypts to exactly the archive served.
    let crc = s3::stored_crc32(&client, &bucket, &snaps[0]).await;
    assert!(crc.is_some(), "the upload declared CRC32");
    let work = tempfile::tempdir().expect("tempdir");
    let encrypted = work.path().join("multi.age");
    std::fs::write(&encrypted, s3::get(&client, &bucket, &snaps[0]).await).unwrap();
    let plain = age_decrypt(&keys.age_identity(), &encrypted);
    assert_eq!(
        sha256_hex(&std::fs::read(plain).unwrap()),
        sha256_hex(&good)
    );
    assert!(!alert_firing(&cfg, "SnapshotInvalid", "snap").await);
    let records = open_store(&cfg).await.snapshots("snap", 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].raft_index, Some(4242));
}

// ---- Done when 4 -----------------------------------------------------------------------------

fn old_manifest(job: &str, name: &str) -> Vec<u8> {
    let taken_at = vault_steward::backup::parse_snapshot_name(name).expect("our name");
    Manifest {
        format: 1,
        job: job.into(),
        snapshot: name.into(),
        taken_at,
        vault_version: None,
        raft_index: 1,
        raft_term: 1,
        state_size: 1,
        plaintext_size: 1,
        plaintext_sha256: String::new(),
        ciphertext_size: 1,
        ciphertext_sha256: String::new(),
        recipients: vec![],
        producer: "test".into(),
    }
    .to_json()
}

fn old_name(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(1_600_000_000 + i as i64 * 3600, 0).unwrap();
    vault_steward::backup::snapshot_name(t)
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_only_its_own_old_snapshots_and_never_after_a_failed_run() {
    use futures::StreamExt;
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let endpoint = env("VS_TEST_S3_ENDPOINT");
    let local = tempfile::tempdir().expect("tempdir");
    let fake = FakeVault::start().await;
    let prefix = "vault";

    // 545 old snapshots of ours with manifests (1,090 objects), plus what is not ours to touch.
    const OURS: usize = 545;
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..OURS {
        let name = old_name(i);
        objects.push((format!("{prefix}/{name}"), b"old".to_vec()));
        objects.push((format!("{prefix}/{name}.json"), old_manifest("snap", &name)));
    }
    let foreign_snap = old_name(10_000);
    let other_job = old_name(10_001);
    let in_sub = old_name(10_002);
    let sibling = old_name(10_003);
    let orphan = old_name(10_004);
    let mut foreign: Vec<(String, Vec<u8>)> = vec![
        (format!("{prefix}/notes.txt"), b"keep".to_vec()),
        // Named like ours, but no manifest says this job took it.
        (format!("{prefix}/{foreign_snap}"), b"x".to_vec()),
        (format!("{prefix}/{other_job}"), b"x".to_vec()),
        (
            format!("{prefix}/{other_job}.json"),
            old_manifest("another-job", &other_job),
        ),
        (format!("{prefix}/{foreign_snap}.bak"), b"x".to_vec()),
        (format!("{prefix}/sub/{in_sub}"), b"x".to_vec()),
        (
            format!("{prefix}/sub/{in_sub}.json"),
            old_manifest("snap", &in_sub),
        ),
        (format!("{prefix}-sibling/{sibling}"), b"x".to_vec()),
        (
            format!("{prefix}-sibling/{sibling}.json"),
            old_manifest("snap", &sibling),
        ),
    ];
    for i in 0..10 {
        foreign.push((format!("{prefix}/other-{i}.txt"), b"keep".to_vec()));
    }
    objects.extend(foreign.iter().cloned());
    // A manifest of ours whose snapshot is gone: it goes.
    objects.push((
        format!("{prefix}/{orphan}.json"),
        old_manifest("snap", &orphan),
    ));
    futures::stream::iter(objects)
        .map(|(k, v)| {
            let (client, bucket) = (client.clone(), bucket.clone());
            async move { s3::put(&client, &bucket, &k, v).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let before = s3::keys(&client, &bucket, &format!("{prefix}/")).await;
    assert!(
        before.len() >= 1_100,
        "{} objects under the prefix",
        before.len()
    );
    // The local directory: a few old ones of ours, and two files that are not.
    for i in 0..5 {
        let name = old_name(i);
        std::fs::write(local.path().join(&name), b"old").unwrap();
        std::fs::write(
            local.path().join(format!("{name}.json")),
            old_manifest("snap", &name),
        )
        .unwrap();
    }
    std::fs::write(local.path().join("keep.txt"), b"keep").unwrap();
    std::fs::write(local.path().join(&foreign_snap), b"no manifest").unwrap();

    let target = S3Target {
        endpoint: &endpoint,
        bucket: &bucket,
        prefix,
    };
    let cfg = DaemonConfig::new(
        &token,
        &job_toml(
            "snap",
            &keys,
            Some(&target),
            Some(local.path()),
            "retain = \"10s\"\nmin_keep = 2",
        ),
    );
    set_vault_address(&cfg, &fake.addr);

    let expected_foreign: Vec<String> = foreign.iter().map(|(k, _)| k.clone()).collect();
    let ours_in = |keys: &[String]| -> Vec<String> {
        keys.iter()
            .filter(|k| !expected_foreign.contains(k))
            .cloned()
            .collect()
    };
    let check_foreign = |keys: &[String]| {
        for f in &expected_foreign {
            assert!(keys.contains(f), "{f} was deleted");
        }
    };

    // Run 1 succeeds: every old one of ours goes but the newest (min_keep = 2 with the new one).
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let after1 = s3::keys(&client, &bucket, "").await;
    check_foreign(&after1);
    let mut ours1 = ours_in(&after1);
    let newest_old = format!("{prefix}/{}", old_name(OURS - 1));
    assert_eq!(ours1.len(), 4, "{ours1:?}");
    assert!(ours1.contains(&newest_old) && ours1.contains(&format!("{newest_old}.json")));
    ours1.retain(|k| *k != newest_old && *k != format!("{newest_old}.json"));
    let run1 = ours1
        .iter()
        .find(|k| k.ends_with(".snap.age"))
        .expect("run 1's snapshot")
        .clone();
    assert!(
        !after1.contains(&format!("{prefix}/{orphan}.json")),
        "orphan manifest pruned"
    );
    let local1 = files_in(local.path());
    assert_eq!(local1.len(), 6, "{local1:?}");
    assert!(local1.contains(&"keep.txt".to_string()) && local1.contains(&foreign_snap));
    assert!(local1.contains(&old_name(4)));
    let store = open_store(&cfg).await;
    let records = store.snapshots("snap", 100).await.unwrap();
    assert_eq!(records.iter().filter(|r| r.destination == "s3").count(), 2);
    assert_eq!(
        records.iter().filter(|r| r.destination == "local").count(),
        2
    );

    // Wait until run 1's snapshot is older than `retain`; a failed run then prunes nothing.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut state = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut state);
    fake.serve(Some(synthetic_archive(&state, Some(100))));
    let (status, _, _) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success());
    assert_eq!(
        s3::keys(&client, &bucket, "").await,
        after1,
        "nothing pruned after a failed run"
    );
    assert_eq!(files_in(local.path()), local1);

    // Run 3 succeeds: min_keep keeps it and run 1's; the newest old one goes now.
    fake.serve(None);
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let after3 = s3::keys(&client, &bucket, "").await;
    check_foreign(&after3);
    let ours3 = ours_in(&after3);
    assert_eq!(ours3.len(), 4, "{ours3:?}");
    assert!(ours3.contains(&run1), "{ours3:?}");
    assert!(!ours3.contains(&newest_old));
    let local3 = files_in(local.path());
    assert_eq!(local3.len(), 6, "{local3:?}");
    assert!(!local3.contains(&old_name(4)));
}

// ---- Done when 5 -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn s3_unreachable_fails_the_run_keeps_the_local_copy_and_recovers() {
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let relay = S3Relay::start().await;
    let local = tempfile::tempdir().expect("tempdir");
    let target = S3Target {
        endpoint: &relay.endpoint,
        bucket: &bucket,
        prefix: "vault",
    };
    let cfg = DaemonConfig::with_extra(
        &token,
        &job_toml("snap", &keys, Some(&target), Some(local.path()), ""),
        "[alerts]\nfailures_before_alert = 1\n",
    );

    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success(), "{stdout}");
    assert!(
        stderr.contains("destination s3") && stderr.contains(&bucket),
        "a clear error naming S3 and the bucket: {stderr}"
    );
    let files = files_in(local.path());
    assert_eq!(files.len(), 2, "the local copy and its manifest: {files:?}");
    let identity = keys.age_identity();
    let (status, stdout, _) = cfg.cli(&[
        "backups",
        "verify",
        "snap",
        "--latest",
        "--identity",
        identity.to_str().unwrap(),
        "--from",
        "local",
    ]);
    assert!(status.success(), "the local copy is sound: {stdout}");
    assert!(alert_firing(&cfg, "JobFailing", "snap").await);
    assert!(s3::keys(&client, &bucket, "").await.is_empty());

    relay.up.store(true, Ordering::SeqCst);
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "S3 is back: {stdout}\n{stderr}");
    assert_eq!(
        snapshot_names(&s3::keys(&client, &bucket, "").await).len(),
        1
    );
    assert!(!alert_firing(&cfg, "JobFailing", "snap").await);
}

/// A token Vault refuses the snapshot to fails the run at once with a clear error, also with an
/// S3 destination (whose upload task must be let go before it is aborted), and leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_snapshot_fails_at_once_and_leaves_nothing() {
    let vault = RootVault::new();
    let keys = Keys::new();
    let policy = unique("nosnap");
    vault
        .put_policy(
            &policy,
            r#"path "sys/storage/raft/snapshot" { capabilities = ["list"] }"#,
        )
        .await;
    let token = vault.create_token(&[&policy], "1h").await;
    let client = s3::client().await;
    let bucket = s3::bucket(&client).await;
    let local = tempfile::tempdir().expect("tempdir");
    let target = S3Target {
        endpoint: &env("VS_TEST_S3_ENDPOINT"),
        bucket: &bucket,
        prefix: "vault",
    };
    let cfg = DaemonConfig::new(
        &token,
        &job_toml(
            "snap",
            &keys,
            Some(&target),
            Some(local.path()),
            "timeout = \"2m\"",
        ),
    );
    let started = std::time::Instant::now();
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(!status.success(), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}: {stderr}",
        started.elapsed()
    );
    assert!(
        stderr.contains("permission denied on sys/storage/raft/snapshot"),
        "{stderr}"
    );
    assert!(s3::keys(&client, &bucket, "").await.is_empty());
    assert!(s3::open_uploads(&client, &bucket, "").await.is_empty());
    assert!(
        files_in(local.path()).is_empty(),
        "{:?}",
        files_in(local.path())
    );
}

// ---- the daemon ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_takes_snapshots_on_schedule_and_exposes_their_metrics() {
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let local = tempfile::tempdir().expect("tempdir");
    let cfg = DaemonConfig::new(
        &token,
        &job_toml(
            "snap",
            &keys,
            None,
            Some(local.path()),
            "schedule = \"*/2 * * * * *\"",
        ),
    );
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(20), "two snapshots", || async {
        d.metrics().await.lines().any(|l| {
            l.starts_with(r#"vault_steward_snapshots_retained{destination="local",job="snap"}"#)
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    >= 2.0
        })
    })
    .await;
    let metrics = d.metrics().await;
    let size = metrics
        .lines()
        .find(|l| l.starts_with(r#"vault_steward_snapshot_size_bytes{job="snap"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("snapshot_size_bytes");
    assert!(size > 1000.0, "{size}");
    let mut promtool = Command::new(env("VS_TEST_PROMTOOL_BIN"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{}", d.log());
    assert!(files_in(local.path()).iter().all(|f| !f.starts_with('.')));
}

// ---- standby redirect, staleness -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_serves_the_snapshot_and_a_redirect_is_followed() {
    // A real standby of a two-node raft cluster: OpenBao 2.7 forwards the request to the
    // active node and answers 200 itself.
    let active = FreshBao::start().await;
    let standby = FreshBao::join(&active).await;
    let keys = Keys::new();
    let local = tempfile::tempdir().expect("tempdir");
    let cfg = DaemonConfig::new(
        &active.root_token,
        &job_toml("snap", &keys, None, Some(local.path()), ""),
    );
    set_vault_address(&cfg, &standby.addr);
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(
        status.success(),
        "{stdout}\n{stderr}\nstandby log:\n{}",
        standby.log()
    );
    assert_eq!(files_in(local.path()).len(), 2);

    // A node that answers with a 307 to the active node (as Vault standbys do where requests
    // are not forwarded): the redirect is followed, token and all.
    let vault = RootVault::new();
    let token = snapshot_token(&vault).await;
    let fake = FakeVault::start().await;
    fake.redirect.store(true, Ordering::SeqCst);
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/v1/sys/storage/raft/snapshot", fake.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 307);
    let local = tempfile::tempdir().expect("tempdir");
    let cfg = DaemonConfig::new(
        &token,
        &job_toml("snap", &keys, None, Some(local.path()), ""),
    );
    set_vault_address(&cfg, &fake.addr);
    let (status, stdout, stderr) = cfg.cli(&["snapshot", "snap"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("followed a redirect to the active node"),
        "{stderr}"
    );
    assert_eq!(files_in(local.path()).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_stale_fires_when_runs_keep_failing_and_resolves() {
    let vault = RootVault::new();
    let keys = Keys::new();
    let token = snapshot_token(&vault).await;
    let local = tempfile::tempdir().expect("tempdir");
    let fake = FakeVault::start().await;
    let cfg = DaemonConfig::new(
        &token,
        &job_toml(
            "snap",
            &keys,
            None,
            Some(local.path()),
            "schedule = \"*/2 * * * * *\"",
        ),
    );
    set_vault_address(&cfg, &fake.addr);
    let mut d = cfg.start(&[]);
    d.ready().await;
    wait_until(Duration::from_secs(20), "a first snapshot", || async {
        !open_store(&cfg)
            .await
            .snapshots("snap", 1)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let mut state = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut state);
    fake.serve(Some(synthetic_archive(&state, Some(1))));
    // Twice the 2 s interval without a snapshot, seen by a failed run.
    wait_until(Duration::from_secs(30), "SnapshotStale to fire", || {
        alert_firing(&cfg, "SnapshotStale", "snap")
    })
    .await;
    fake.serve(None);
    wait_until(
        Duration::from_secs(30),
        "SnapshotStale to resolve",
        || async { !alert_firing(&cfg, "SnapshotStale", "snap").await },
    )
    .await;
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{}", d.log());
}
