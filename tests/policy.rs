//! The shipped least-privilege policy is enough, and is all that is used: every example job of
//! `jobs/*.toml` (all seven kinds, eleven jobs) runs in the real daemon with a token that carries
//! only `config/vault/vault-steward-policy.hcl` — not even Vault's `default` policy.
//!
//! The example files are copied as they are, with their KV paths, AppRole role and mounts (the
//! policy is written for those), and rewritten only where they point at things that do not exist
//! here: database hosts (the testbed's PostgreSQL, the machine's MariaDB), the S3 bucket (moto),
//! the local backup directory, the `on_rotate` hook and alert sinks (local receivers), and the
//! intervals, so that every job is due at once. The test proves each job did its work in Vault,
//! the databases and S3, that no run failed, and that the token really is limited to the policy.
//!
//! The examples' paths are fixed, so no other test may use them (`secret/api-key/default`,
//! `secret/service/billing/…`, `secret/database/{orders,billing,shop}…`, `secret/llm-api-key/…`,
//! `secret/vault-steward/pending/{orders,billing,shop}-db`, AppRole role `billing`, policy
//! `vault-steward`). Everything is (re)seeded at the start, so the test can run again on the same
//! testbed.

mod common;

use std::time::Duration;

use common::daemon::{DaemonConfig, record_canaries, repo_path};
use common::sinks::{HookReceiver, Mode};
use common::vault::RootVault;
use common::{env, s3, unique, wait_until};
use serde_json::json;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use vault_steward::store::RunOutcome;

/// The job files under `jobs/`, one per kind.
const EXAMPLES: [&str; 7] = [
    "api-key",
    "approle-secret-id",
    "reminder",
    "postgres",
    "mysql",
    "raft-snapshot",
    "vault-health",
];

/// `text` with every `from` replaced; fails the test if the example no longer contains `from`,
/// so a changed example cannot silently turn into a test of something else.
fn rewrite(text: String, file: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "jobs/{file}.toml no longer contains {from:?}: update tests/policy.rs"
    );
    text.replace(from, to)
}

/// A password for a database role, recorded as a canary.
fn password() -> String {
    let p = unique("pw").replace('_', "-");
    record_canaries([p.as_str()]);
    p
}

/// Where the databases are: (host, port, database) of the testbed's PostgreSQL and of MariaDB.
fn server(var: &str) -> (url::Url, String, u16, String) {
    let u = url::Url::parse(&env(var)).expect("database URL");
    let host = u.host_str().expect("host").to_string();
    let port = u.port().expect("port");
    let db = u.path().trim_start_matches('/').to_string();
    (u, host, port, db)
}

/// Runs `statements` on the server of `url` (postgres:// or mysql://) as that URL's user.
async fn sql(url: &url::Url, statements: &[String]) {
    macro_rules! run {
        ($conn:ty) => {{
            let mut c = <$conn>::connect(url.as_str())
                .await
                .expect("admin connection");
            for s in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s.as_str()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            let _ = c.close().await;
        }};
    }
    if url.scheme() == "mysql" {
        run!(MySqlConnection)
    } else {
        run!(PgConnection)
    }
}

/// Whether `user`/`password` log in to the server of `url` (the error text if not).
async fn login(url: &url::Url, user: &str, password: &str) -> Result<(), String> {
    let mut u = url.clone();
    u.set_username(user).expect("user");
    u.set_password(Some(password)).expect("password");
    if u.scheme() == "mysql" {
        let c = MySqlConnection::connect(u.as_str()).await;
        c.map_err(|e| e.to_string())?.close().await.ok();
    } else {
        let c = PgConnection::connect(u.as_str()).await;
        c.map_err(|e| e.to_string())?.close().await.ok();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_job_runs_with_only_the_shipped_policy() {
    let vault = RootVault::new();
    let hooks = HookReceiver::start(Mode::Ok).await;
    let s3c = s3::client().await;
    let bucket = s3::bucket(&s3c).await;
    let backups = tempfile::tempdir().expect("tempdir");
    let (pg_url, pg_host, pg_port, pg_db) = server("VS_TEST_PG_URL");
    let (my_url, my_host, my_port, my_db) = server("VS_TEST_MYSQL_URL");
    record_canaries(pg_url.password().into_iter());

    // ---- the examples, pointed at what exists here ----------------------------------------
    // MariaDB is the machine's, shared by every testbed: its accounts get names of their own.
    let (shop_a, shop_b, shop_admin) = (unique("shop_a"), unique("shop_b"), unique("shopadm"));
    let mut files = Vec::new();
    for name in EXAMPLES {
        let mut t = std::fs::read_to_string(repo_path(&format!("jobs/{name}.toml")))
            .unwrap_or_else(|e| panic!("jobs/{name}.toml: {e}"));
        let r = |t: String, from: &str, to: &str| rewrite(t, name, from, to);
        match name {
            "api-key" => {
                t = r(t, "every = \"30d\"", "every = \"2s\"");
                t = r(t, "window = \"0 * 9-16 * * 1-5\"\n", "");
                t = r(
                    t,
                    "https://billing.internal.example.com/hooks/reload-credentials",
                    &hooks.url("/hooks/reload-credentials"),
                );
            }
            "approle-secret-id" => {
                t = r(t, "every = \"30d\"", "every = \"2s\"");
                t = r(t, "grace = \"24h\"", "grace = \"1s\"");
            }
            "reminder" => {
                t = r(t, "check_every = \"1h\"", "check_every = \"1s\"");
            }
            "postgres" => {
                t = r(t, "every = \"90d\"", "every = \"2s\"");
                t = r(t, "window = \"0 * 9-16 * * 1-5\"\n", "");
                t = r(
                    t,
                    "host = \"db.example.com\"",
                    &format!("host = \"{pg_host}\""),
                );
                t = r(t, "port = 5432", &format!("port = {pg_port}"));
                t = r(
                    t,
                    "database = \"orders\"",
                    &format!("database = \"{pg_db}\""),
                );
            }
            "mysql" => {
                t = r(t, "every = \"90d\"", "every = \"2s\"");
                t = r(
                    t,
                    "usernames = [\"shop_a\", \"shop_b\"]",
                    &format!("usernames = [\"{shop_a}\", \"{shop_b}\"]"),
                );
                t = r(
                    t,
                    "host = \"mysql.example.com\"",
                    &format!("host = \"{my_host}\""),
                );
                t = r(t, "port = 3306", &format!("port = {my_port}"));
                t = r(t, "database = \"shop\"", &format!("database = \"{my_db}\""));
            }
            "raft-snapshot" => {
                t = r(
                    t,
                    "schedule = \"0 0 * * * *\"",
                    "schedule = \"*/2 * * * * *\"",
                );
                t = r(
                    t,
                    "bucket = \"example-vault-backups\"",
                    &format!("bucket = \"{bucket}\""),
                );
                t = r(t, "region = \"eu-central-1\"", "region = \"us-east-1\"");
                t = r(
                    t,
                    "# endpoint = \"https://minio.example.com:9000\"",
                    &format!("endpoint = \"{}\"", env("VS_TEST_S3_ENDPOINT")),
                );
                t = r(t, "force_path_style = false", "force_path_style = true");
                t = r(
                    t,
                    "dir = \"/var/backups/vault-steward\"",
                    &format!("dir = \"{}\"", backups.path().display()),
                );
            }
            "vault-health" => {
                t = r(
                    t,
                    "schedule = \"*/30 * * * * *\"",
                    "schedule = \"* * * * * *\"",
                );
            }
            _ => unreachable!(),
        }
        files.push((name, t));
    }
    // The sinks the examples' `alerts = [...]` name, as in config/steward.toml, but local.
    let alerts = format!(
        r#"
[alerts]
retry_initial = "1s"
retry_max = "5s"

[[alerts.email]]
name = "oncall-mail"
smtp_url = "smtp://{smtp}"
from = "vault-steward <vault-steward@example.com>"
to = ["oncall@example.com"]

[[alerts.webhook]]
name = "oncall-hook"
url = "{hook}"
"#,
        smtp = env("VS_TEST_SMTP_ADDR"),
        hook = hooks.url("/alerts"),
    );

    // ---- seed what the jobs expect to find, as root -----------------------------------------
    let seeded = |v: &str| {
        record_canaries([v]);
        v.to_string()
    };
    for path in [
        "secret/api-key/default",
        "secret/service/billing/credentials",
    ] {
        vault
            .kv_put(
                path,
                json!({ "api_key": seeded(&unique("key")), "owner": "billing" }),
            )
            .await;
    }
    for p in ["openai", "anthropic", "openrouter"] {
        vault
            .kv_put(
                &format!("secret/llm-api-key/{p}"),
                json!({ "api_key": seeded(&unique("sk")) }),
            )
            .await;
    }
    // The AppRole role of the approle-secret-id example, with a secret-id put in KV by hand: the
    // first rotation looks it up and destroys it after `grace`.
    let (role_id, hand_secret_id) = vault.approle("billing", json!({ "token_ttl": "5m" })).await;
    record_canaries([hand_secret_id.as_str()]);
    vault
        .kv_put(
            "secret/service/billing/credentials-approle",
            json!({ "role_id": role_id, "secret_id": hand_secret_id }),
        )
        .await;

    // PostgreSQL (the testbed's private cluster): the examples' roles; the superuser is the admin.
    let pg_roles = ["orders_app", "billing_a", "billing_b"];
    let pg_passwords: Vec<String> = pg_roles.iter().map(|_| password()).collect();
    let mut stmts = Vec::new();
    for (role, pw) in pg_roles.iter().zip(&pg_passwords) {
        stmts.push(format!("DROP ROLE IF EXISTS \"{role}\""));
        stmts.push(format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{pw}'"));
    }
    sql(&pg_url, &stmts).await;
    let pg_admin = json!({ "url": pg_url.as_str() });
    vault
        .kv_put("secret/database/orders-admin", pg_admin.clone())
        .await;
    vault
        .kv_put("secret/database/billing-admin", pg_admin)
        .await;
    vault
        .kv_put(
            "secret/database/orders",
            json!({ "username": "orders_app", "password": pg_passwords[0] }),
        )
        .await;
    vault
        .kv_put(
            "secret/database/billing",
            json!({ "username": "billing_a", "password": pg_passwords[1] }),
        )
        .await;

    // MariaDB: two accounts taking turns and an admin that may only manage accounts.
    let (shop_pw, admin_pw) = (password(), password());
    sql(
        &my_url,
        &[
            format!("CREATE USER '{shop_a}'@'%' IDENTIFIED BY '{shop_pw}'"),
            format!("CREATE USER '{shop_b}'@'%' IDENTIFIED BY '{shop_pw}'"),
            format!("GRANT SELECT ON `{my_db}`.* TO '{shop_a}'@'%', '{shop_b}'@'%'"),
            format!("CREATE USER '{shop_admin}'@'%' IDENTIFIED BY '{admin_pw}'"),
            format!("GRANT CREATE USER ON *.* TO '{shop_admin}'@'%'"),
        ],
    )
    .await;
    vault
        .kv_put(
            "secret/database/shop-admin",
            json!({ "username": shop_admin, "password": admin_pw }),
        )
        .await;
    vault
        .kv_put(
            "secret/database/shop",
            json!({ "username": shop_a, "password": shop_pw }),
        )
        .await;
    let before: Vec<(&str, u64)> = {
        let mut v = Vec::new();
        for p in [
            "secret/api-key/default",
            "secret/service/billing/credentials",
            "secret/service/billing/credentials-approle",
            "secret/database/orders",
            "secret/database/billing",
            "secret/database/shop",
        ] {
            v.push((p, vault.current_version(p).await));
        }
        v
    };

    // ---- a token with exactly the shipped policy, and nothing else ---------------------------
    let hcl = std::fs::read_to_string(repo_path("config/vault/vault-steward-policy.hcl"))
        .expect("config/vault/vault-steward-policy.hcl");
    vault.put_policy("vault-steward", &hcl).await;
    let (token, _) = vault
        .token(json!({ "policies": ["vault-steward"], "no_default_policy": true, "ttl": "1h" }))
        .await;
    record_canaries([token.as_str()]);
    check_token_is_limited(&vault.addr, &token).await;

    let cfg = DaemonConfig::with_extra(&token, "", &alerts);
    let jobs_dir = cfg.dir.path().join("jobs");
    std::fs::remove_file(jobs_dir.join("test.toml")).expect("the harness's job file");
    for (name, text) in &files {
        std::fs::write(jobs_dir.join(format!("{name}.toml")), text).expect("job file");
    }
    let mut daemon = cfg.start(&[]);
    daemon.ready().await;
    let store = vault_steward::store::open(&format!("sqlite://{}", cfg.state_db().display()), None)
        .await
        .expect("state store");
    let names: Vec<String> = files
        .iter()
        .flat_map(|(_, t)| {
            t.lines()
                .filter_map(|l| l.strip_prefix("name = \""))
                .map(|n| n.trim_end_matches('"').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names.len(), 11, "the examples' jobs: {names:?}");

    // ---- every job did its work ---------------------------------------------------------------
    let rotated = |path: &'static str, job: &'static str, was: u64| {
        let vault = &vault;
        async move {
            let md = vault.kv_metadata(path).await.unwrap_or_default();
            md["current_version"].as_u64().unwrap_or(0) > was
                && md["custom_metadata"]["rotation_job"] == job
                && md["custom_metadata"]["rotated_by"] == "vault-steward"
        }
    };
    let jobs_of_paths = [
        "api-key-default",
        "billing-service-key",
        "billing-approle",
        "orders-db",
        "billing-db",
        "shop-db",
    ];
    wait_until(
        Duration::from_secs(60),
        "every example job to succeed",
        || async {
            let mut all_succeeded = true;
            for name in &names {
                let runs = store.recent_runs(name, 200).await.expect("runs");
                // A policy gap is a permission-denied failure: say which, at once.
                if let Some(failed) = runs.iter().find(|r| r.outcome == Some(RunOutcome::Failure)) {
                    panic!("job {name} failed: {:?}", failed.error);
                }
                all_succeeded &= runs.iter().any(|r| r.outcome == Some(RunOutcome::Success));
            }
            if !all_succeeded {
                return false;
            }
            for ((path, was), job) in before.iter().zip(jobs_of_paths) {
                if !rotated(path, job, *was).await {
                    return false;
                }
            }
            !s3::keys(&s3c, &bucket, "vault/prod/").await.is_empty()
                && !hooks.bodies("/hooks/reload-credentials").is_empty()
                && approle_lookup(&vault, &hand_secret_id).await.is_none()
        },
    )
    .await;
    // No run of any job failed meanwhile (checked once more after the wait).
    for name in &names {
        let runs = store.recent_runs(name, 200).await.expect("runs");
        let failed = runs.iter().find(|r| r.outcome == Some(RunOutcome::Failure));
        assert!(failed.is_none(), "job {name} failed: {failed:?}");
    }
    // No alert but RotationOverdue, which a 2 s `every` may raise for a moment between two
    // rotations (it fires a tenth of `every` after the secret is due).
    let firing: Vec<_> = store
        .firing_alerts()
        .await
        .expect("alerts")
        .into_iter()
        .filter(|a| a.name != "RotationOverdue")
        .collect();
    assert!(firing.is_empty(), "alerts fired: {firing:?}");

    // The new database passwords log in (and the rotations went where the examples say).
    for (path, url) in [
        ("secret/database/orders", &pg_url),
        ("secret/database/billing", &pg_url),
        ("secret/database/shop", &my_url),
    ] {
        let s = vault.kv_get(path).await.expect("consumer secret");
        let (user, pw) = (
            s.data["username"].as_str().expect("username"),
            s.data["password"].as_str().expect("password"),
        );
        record_canaries([pw]);
        assert!(
            !pg_passwords.contains(&pw.to_string()) && pw != shop_pw,
            "{path} not rotated"
        );
        login(url, user, pw)
            .await
            .unwrap_or_else(|e| panic!("{path}: the rotated password of {user} is refused: {e}"));
    }
    let approle = vault
        .kv_get("secret/service/billing/credentials-approle")
        .await
        .expect("approle secret");
    let new_secret_id = approle.data["secret_id"].as_str().expect("secret_id");
    record_canaries([new_secret_id]);
    assert!(
        approle_lookup(&vault, new_secret_id).await.is_some(),
        "the secret-id in KV is not valid"
    );
    let local: Vec<_> = std::fs::read_dir(backups.path().join("."))
        .expect("backup dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap.age"))
        .collect();
    assert!(!local.is_empty(), "no snapshot in the local directory");
    let hook = &hooks.bodies("/hooks/reload-credentials")[0];
    assert_eq!(hook["job"], "billing-service-key", "{hook}");

    let exit = daemon.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "daemon exit: {exit:?}");
    sql(
        &my_url,
        &[shop_a, shop_b, shop_admin].map(|u| format!("DROP USER IF EXISTS '{u}'@'%'")),
    )
    .await;
}

/// The token has exactly the shipped policy (no `default`), and it is refused outside it: the
/// reminder's keys themselves, a sibling of an api-key path, another AppRole role.
async fn check_token_is_limited(addr: &str, token: &str) {
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{addr}/v1/{path}"))
            .header("X-Vault-Token", token)
            .send()
    };
    let me: serde_json::Value = call(reqwest::Method::GET, "auth/token/lookup-self")
        .await
        .expect("lookup-self")
        .json()
        .await
        .expect("lookup-self body");
    assert_eq!(me["data"]["policies"], json!(["vault-steward"]), "{me}");
    for path in [
        "secret/data/llm-api-key/openai",
        "secret/data/api-key/other",
        "secret/metadata/service/billing",
        "auth/approle/role/vault-steward/role-id",
        "sys/policies/acl/vault-steward",
    ] {
        let status = call(reqwest::Method::GET, path)
            .await
            .expect("request")
            .status();
        assert_eq!(status.as_u16(), 403, "the token may read {path}");
    }
}

/// The secret-id's lookup through the root token; `None` once it is destroyed.
async fn approle_lookup(vault: &RootVault, secret_id: &str) -> Option<serde_json::Value> {
    let (status, body) = vault
        .call(
            reqwest::Method::POST,
            "auth/approle/role/billing/secret-id/lookup",
            Some(json!({ "secret_id": secret_id })),
        )
        .await;
    (status == 200).then_some(body)
}
