//! `postgres` and `mysql` jobs against the real servers: the testbed's private PostgreSQL
//! cluster (scram-sha-256 on 127.0.0.1, so a wrong password is refused) and the machine's
//! MariaDB (real passwords). Each test makes its own roles/users, admin login, KV paths and
//! scoped Vault token, and runs the real binary (`rotate JOB`, `run`).
//!
//! Covered: the new password logs in and the previous one is refused (both engines, both
//! strategies); a client logging in every 100 ms through five back-to-back alternating
//! rotations is never refused; a crash at every protocol step is rolled forward by the
//! restarted daemon (the table is printed); wrong admin credentials, a missing role, a database
//! that is down and a KV path the policy forbids each fail the run with a clear error and an
//! alert while the current credential keeps working; no password reaches `/metrics`, the log or
//! the state file.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::daemon::record_canaries;
use common::db::{Engine, Options, Setup, Strategy, assert_logs_in, assert_refused};
#[cfg(feature = "failpoints")]
use common::mariadb::PrivateMariadb;
use common::proxy::Proxy;
use common::vault::RootVault;
use common::wait_until;
#[cfg(feature = "failpoints")]
use sqlx::Connection;

/// `HOST:PORT` of a server address.
fn host_port((host, port): (String, u16)) -> String {
    format!("{host}:{port}")
}

// ---- Done when 1: new password logs in, the previous one is refused ----------------------

async fn rotate_then_old_password_refused(engine: Engine, strategy: Strategy) {
    let s = Setup::new(engine, strategy, Options::default()).await;
    let (v0, user0, pw0) = s.current().await;
    assert_logs_in(engine, &user0, &pw0, "before").await;

    let (st, out, err) = s.rotate();
    assert!(st.success(), "rotate: {out}{err}");
    let (v1, user1, pw1) = s.current().await;
    assert_eq!(v1, v0 + 1, "one new KV version");
    assert_ne!(pw1, pw0);
    assert_eq!(pw1.len(), 32, "default password_length");
    assert_logs_in(engine, &user1, &pw1, "the KV password after rotation").await;
    let kv = s.vault.kv_get(&s.path).await.unwrap();
    assert_eq!(kv.data["owner"], "team-orders", "other fields are kept");
    assert_eq!(kv.data["database"], engine.database().as_str());
    let url = kv.data["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}://{user1}:", engine.kind()))
            && url.ends_with(&engine.database()),
        "url field"
    );
    let md = s.vault.kv_metadata(&s.path).await.unwrap();
    assert_eq!(md["custom_metadata"]["rotated_by"], "vault-steward");
    assert_eq!(md["custom_metadata"]["rotation_job"], s.job.as_str());
    assert!(!s.pending_exists().await, "the pending password is deleted");
    assert_eq!(s.open_rotations().await, 0);

    match strategy {
        Strategy::Single => {
            assert_eq!(user1, user0);
            assert_refused(engine, &user0, &pw0, "the previous password").await;
        }
        Strategy::Alternating => {
            // The role KV pointed at keeps its password (the overlap consumers rely on); the
            // other role got the new one, and its previous password no longer works.
            assert_eq!(user1, s.users[1]);
            assert_logs_in(engine, &user0, &pw0, "the previous role (overlap)").await;
            assert_refused(
                engine,
                &user1,
                &s.other_password,
                "the rotated role's previous password",
            )
            .await;
            // The next rotation changes the first role: its previous password is refused.
            let (st, out, err) = s.rotate();
            assert!(st.success(), "second rotate: {out}{err}");
            let (v2, user2, pw2) = s.current().await;
            assert_eq!((v2, user2.as_str()), (v1 + 1, user0.as_str()));
            assert_logs_in(
                engine,
                &user2,
                &pw2,
                "the KV password after the second rotation",
            )
            .await;
            assert_refused(engine, &user0, &pw0, "the first role's previous password").await;
            assert_logs_in(engine, &user1, &pw1, "the second role (overlap)").await;
        }
    }
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_single_new_password_works_old_is_refused() {
    rotate_then_old_password_refused(Engine::Postgres, Strategy::Single).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_alternating_new_password_works_old_is_refused() {
    rotate_then_old_password_refused(Engine::Postgres, Strategy::Alternating).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_single_new_password_works_old_is_refused() {
    rotate_then_old_password_refused(Engine::Mysql, Strategy::Single).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_alternating_new_password_works_old_is_refused() {
    rotate_then_old_password_refused(Engine::Mysql, Strategy::Alternating).await;
}

// ---- Done when 2: a client is never refused during alternating rotations -----------------

async fn client_never_refused(engine: Engine) {
    let s = Setup::new(engine, Strategy::Alternating, Options::default()).await;
    let (v0, _, _) = s.current().await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, path) = (stop.clone(), s.path.clone());
        tokio::spawn(async move {
            let vault = RootVault::new();
            let (mut ok, mut refused) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let kv = vault.kv_get(&path).await.expect("consumer secret");
                let user = kv.data["username"].as_str().unwrap().to_string();
                let pw = kv.data["password"].as_str().unwrap().to_string();
                match engine.login(&user, &pw).await {
                    Ok(()) => ok += 1,
                    Err(e) => refused.push(format!("v{} {user}: {e}", kv.version)),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, refused)
        })
    };
    // Let the client log in a few times before the first rotation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    for i in 0..5 {
        let cfg_job = (s.cfg.path(), s.job.clone());
        let (st, out, err) = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_vault-steward"))
                .arg("--config")
                .arg(&cfg_job.0)
                .args(["rotate", &cfg_job.1])
                .env_remove("VAULT_TOKEN")
                .env_remove("VAULT_ADDR")
                .output()
                .expect("run rotate");
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap();
        assert!(st.success(), "rotation {i}: {out}{err}");
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, refused) = client.await.unwrap();
    let (v5, _, _) = s.current().await;
    for v in v0 + 1..=v5 {
        let kv = s.vault.kv_get_version(&s.path, Some(v)).await.unwrap();
        record_canaries([kv.data["password"].as_str().unwrap()]);
    }
    println!(
        "{}: 5 alternating rotations in {:.1}s, {ok} logins with what KV held, {} refused",
        engine.kind(),
        elapsed.as_secs_f64(),
        refused.len()
    );
    assert_eq!(v5, v0 + 5, "five rotations");
    assert!(refused.is_empty(), "refused logins: {refused:#?}");
    assert!(ok >= 5, "only {ok} logins");
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_alternating_client_is_never_refused() {
    client_never_refused(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_alternating_client_is_never_refused() {
    client_never_refused(Engine::Mysql).await;
}

// ---- Done when 3: a crash at every step is rolled forward on restart ---------------------

/// Every failpoint on a rotation's way, in order.
#[cfg(feature = "failpoints")]
const CRASH_POINTS: [&str; 11] = [
    "rotation-pending-recorded",
    "rotation-pending-done",
    "rotation-apply-recorded",
    "rotation-apply-done",
    "rotation-test-recorded",
    "rotation-test-done",
    "rotation-commit-recorded",
    "rotation-commit-written",
    "rotation-commit-done",
    "rotation-cleanup-recorded",
    "rotation-cleanup-done",
];

/// Kills `rotate` at `failpoint`, restarts the daemon and checks the rotation completed.
#[cfg(feature = "failpoints")]
async fn crash_and_resume(engine: Engine, strategy: Strategy, failpoint: &str) -> String {
    let s = Setup::new(engine, strategy, Options::default()).await;
    let (v0, user0, pw0) = s.current().await;
    let (st, _, err) = s.rotate_crashing_at(failpoint);
    assert!(!st.success(), "{failpoint}: rotate should have aborted");
    assert!(
        err.contains(&format!("failpoint {failpoint} hit")),
        "{failpoint}: {err}"
    );
    assert_eq!(
        s.open_rotations().await,
        1,
        "{failpoint}: the rotation is left open"
    );
    let _ = s.pending_password().await;

    let mut d = s.cfg.start(&[]);
    d.ready().await;
    let store = s.store().await;
    let job = s.job.clone();
    wait_until(
        Duration::from_secs(30),
        "the rotation to be rolled forward",
        || {
            let store = store.clone();
            let job = job.clone();
            async move {
                // Closed, and the resumed run recorded (a SIGTERM before that would cancel it).
                let closed = store.open_rotations(Some(&job)).await.unwrap().is_empty();
                let state = store.job_state(&job).await.unwrap();
                closed && state.is_some_and(|s| s.last_success_at.is_some())
            }
        },
    )
    .await;
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "{failpoint}: daemon exit {status}\n{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains("rolling forward a rotation the previous process left open"),
        "{failpoint}: {log}"
    );

    let (v1, user1, pw1) = s.current().await;
    assert_eq!(v1, v0 + 1, "{failpoint}: exactly one new KV version\n{log}");
    let expected_user = match strategy {
        Strategy::Single => &s.users[0],
        Strategy::Alternating => &s.users[1],
    };
    assert_eq!(&user1, expected_user, "{failpoint}");
    assert_logs_in(engine, &user1, &pw1, failpoint).await;
    assert!(
        !s.pending_exists().await,
        "{failpoint}: pending password left behind"
    );
    let md = s.vault.kv_metadata(&s.path).await.unwrap();
    assert_eq!(
        md["custom_metadata"]["rotated_by"], "vault-steward",
        "{failpoint}"
    );
    match strategy {
        Strategy::Single => assert_refused(engine, &user0, &pw0, failpoint).await,
        Strategy::Alternating => assert_logs_in(engine, &user0, &pw0, failpoint).await,
    }
    let row = s.status();
    assert_eq!(row["consecutive_failures"], 0, "{failpoint}: {row}");
    for v in v0 + 1..=v1 {
        let kv = s.vault.kv_get_version(&s.path, Some(v)).await.unwrap();
        record_canaries([kv.data["password"].as_str().unwrap()]);
    }
    s.cleanup().await;
    format!("v{v0}->v{v1} {user1} logs in, rotation closed, pending gone")
}

#[cfg(feature = "failpoints")]
async fn crash_table(engine: Engine) {
    let mut rows = Vec::new();
    for strategy in [Strategy::Single, Strategy::Alternating] {
        for fp in CRASH_POINTS {
            let result = crash_and_resume(engine, strategy, fp).await;
            rows.push((fp, strategy.name(), result));
        }
    }
    println!(
        "\ncrash at step × strategy × engine {} → result after restarting the daemon",
        engine.kind()
    );
    println!(
        "{:<28} {:<12} {:<9} result",
        "step (failpoint)", "strategy", "engine"
    );
    for (fp, strategy, result) in &rows {
        println!("{fp:<28} {strategy:<12} {:<9} OK: {result}", engine.kind());
    }
    assert_eq!(rows.len(), 2 * CRASH_POINTS.len());
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn postgres_crash_at_every_step_is_rolled_forward() {
    crash_table(Engine::Postgres).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn mysql_crash_at_every_step_is_rolled_forward() {
    crash_table(Engine::Mysql).await;
}

/// `rotate` run again (no daemon) rolls an open rotation forward too.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn rotate_again_rolls_a_crashed_rotation_forward() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(engine, Strategy::Single, Options::default()).await;
        let (v0, user0, pw0) = s.current().await;
        let (st, _, _) = s.rotate_crashing_at("rotation-apply-done");
        assert!(!st.success());
        // The database already has the pending password: what KV holds is refused until the
        // rotation is rolled forward (the single strategy's window).
        let pending = s.pending_password().await.expect("pending password");
        assert_logs_in(engine, &user0, &pending, "pending applied").await;
        let (st, out, err) = s.rotate();
        assert!(st.success(), "{out}{err}");
        assert!(out.contains("forward from step apply"), "{out}");
        let (v1, user1, pw1) = s.current().await;
        assert_eq!(v1, v0 + 1);
        assert_eq!(
            pw1, pending,
            "the crashed rotation's password is the one committed"
        );
        assert_logs_in(engine, &user1, &pw1, "after roll-forward").await;
        assert_refused(engine, &user0, &pw0, "the previous password").await;
        s.cleanup().await;
    }
}

// ---- Done when 4: failures are clear, alert, and keep the current credential -----------

/// Asserts the run failed with `fragment` in `status --json`'s last_error, JobFailing fires,
/// the current credential still logs in and no rotation is left open.
async fn assert_failed_cleanly(s: &Setup, out: &str, err: &str, fragment: &str) -> String {
    let row = s.status();
    let last_error = row["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        last_error.contains(fragment),
        "{}: last_error {last_error:?} lacks {fragment:?}\n{out}{err}",
        s.engine.kind()
    );
    assert_eq!(row["state"], "failing", "{row}");
    assert!(s.alert_firing("JobFailing").await, "JobFailing fires");
    let (_, user, pw) = s.current().await;
    assert_logs_in(
        s.engine,
        &user,
        &pw,
        "the current credential after a failure",
    )
    .await;
    assert_eq!(s.open_rotations().await, 0, "no rotation left open");
    last_error
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_admin_credentials_fail_clearly() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(
            engine,
            Strategy::Single,
            Options {
                wrong_admin_password: true,
                ..Options::default()
            },
        )
        .await;
        let (v0, _, _) = s.current().await;
        let (st, out, err) = s.rotate();
        assert!(!st.success());
        let fragment = match engine {
            Engine::Postgres => "password authentication failed",
            Engine::Mysql => "Access denied",
        };
        let e = assert_failed_cleanly(&s, &out, &err, fragment).await;
        assert!(e.contains("admin login as"), "{e}");
        assert!(e.contains(&s.admin_path), "{e}");
        assert_eq!(s.current().await.0, v0, "KV untouched");
        println!("{}: wrong admin credentials → {e}", engine.kind());
        s.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_role_fails_clearly_and_the_next_try_uses_a_fresh_password() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(
            engine,
            Strategy::Alternating,
            Options {
                second_user_missing: true,
                ..Options::default()
            },
        )
        .await;
        let (v0, _, _) = s.current().await;
        let (st, out, err) = s.rotate();
        assert!(!st.success());
        let fragment = match engine {
            Engine::Postgres => "does not exist",
            Engine::Mysql => "Operation ALTER USER failed",
        };
        let e = assert_failed_cleanly(&s, &out, &err, fragment).await;
        assert!(e.contains("refused the new password"), "{e}");
        assert!(e.contains("next try uses a fresh password"), "{e}");
        assert!(
            !s.pending_exists().await,
            "the refused password is thrown away"
        );
        assert_eq!(s.current().await.0, v0, "KV untouched");
        println!("{}: missing role → {e}", engine.kind());

        // Two more tries, each stopped right after its pending password is written: they differ.
        #[cfg(feature = "failpoints")]
        {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (st, _, _) = s.rotate_crashing_at("rotation-pending-done");
                assert!(!st.success());
                seen.push(s.pending_password().await.expect("pending"));
                let (st, _, _) = s.rotate();
                assert!(!st.success(), "still refused");
                assert!(!s.pending_exists().await);
            }
            assert_ne!(seen[0], seen[1], "a refused password is never tried again");
        }
        s.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_fails_clearly_and_recovers() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let proxy = Proxy::start(host_port(engine.server())).await;
        let s = Setup::new(
            engine,
            Strategy::Alternating,
            Options {
                admin_at: Some(("127.0.0.1".into(), proxy.port)),
                ..Options::default()
            },
        )
        .await;
        let (v0, _, _) = s.current().await;
        proxy.cut();
        let (st, out, err) = s.rotate();
        assert!(!st.success());
        let e = assert_failed_cleanly(&s, &out, &err, &format!("127.0.0.1:{}", proxy.port)).await;
        assert!(e.contains("admin login as"), "{e}");
        assert!(e.contains("unreachable"), "{e}");
        assert_eq!(s.current().await.0, v0, "KV untouched");
        println!("{}: database down → {e}", engine.kind());

        // Down in the middle of a rotation (after the new password was set): the rotation
        // stays open, what KV holds keeps working, and it completes once the database is back.
        #[cfg(feature = "failpoints")]
        {
            proxy.heal();
            let (st, _, _) = s.rotate_crashing_at("rotation-apply-done");
            assert!(!st.success());
            let _ = s.pending_password().await;
            proxy.cut();
            let (st, out, err) = s.rotate();
            assert!(!st.success(), "{out}{err}");
            let row = s.status();
            let e = row["last_error"].as_str().unwrap().to_string();
            assert!(
                e.contains("testing the new password")
                    || e.contains("unreachable")
                    || e.contains(&proxy.port.to_string()),
                "{e}"
            );
            assert_eq!(
                s.open_rotations().await,
                1,
                "the rotation waits for the database"
            );
            let (_, user, pw) = s.current().await;
            assert_logs_in(engine, &user, &pw, "KV while the database is down").await;
            proxy.heal();
            let (st, out, err) = s.rotate();
            assert!(st.success(), "{out}{err}");
            let (v1, user1, pw1) = s.current().await;
            assert_eq!(v1, v0 + 1);
            assert_logs_in(engine, &user1, &pw1, "after the database came back").await;
            assert_eq!(s.open_rotations().await, 0);
            assert!(
                !s.alert_firing("JobFailing").await,
                "recovery resolves the alert"
            );
        }
        s.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_path_the_policy_forbids_fails_before_anything_changes() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(
            engine,
            Strategy::Single,
            Options {
                read_only_path: true,
                ..Options::default()
            },
        )
        .await;
        let (v0, user0, pw0) = s.current().await;
        let (st, out, err) = s.rotate();
        assert!(!st.success());
        let e = assert_failed_cleanly(
            &s,
            &out,
            &err,
            "policy does not allow update on the data of",
        )
        .await;
        assert!(e.contains(&s.path), "{e}");
        assert_eq!(s.current().await.0, v0);
        assert_logs_in(engine, &user0, &pw0, "the database password is unchanged").await;
        println!("{}: forbidden KV path → {e}", engine.kind());
        s.cleanup().await;
    }
}

// ---- Done when 5: no password in /metrics, the log or the state file --------------------

#[tokio::test(flavor = "multi_thread")]
async fn no_password_in_metrics_log_or_state() {
    let pg = Setup::new(
        Engine::Postgres,
        Strategy::Single,
        Options {
            every: "2s",
            ..Options::default()
        },
    )
    .await;
    let my = Setup::new(
        Engine::Mysql,
        Strategy::Alternating,
        Options {
            every: "2s",
            ..Options::default()
        },
    )
    .await;
    // One daemon running both jobs: the MySQL job's file beside the PostgreSQL one's.
    std::fs::copy(
        my.cfg.dir.path().join("jobs/test.toml"),
        pg.cfg.dir.path().join("jobs/mysql.toml"),
    )
    .unwrap();
    // The PostgreSQL job's token must also cover the MySQL job's paths: use the root token.
    std::fs::write(pg.cfg.dir.path().join("token"), pg.vault.root_token()).unwrap();
    let (pv0, _, _) = pg.current().await;
    let (mv0, _, _) = my.current().await;
    let mut d = pg.cfg.start(&[]);
    d.ready().await;
    wait_until(
        Duration::from_secs(40),
        "three rotations of each job",
        || async {
            pg.vault.current_version(&pg.path).await >= pv0 + 3
                && my.vault.current_version(&my.path).await >= mv0 + 3
        },
    )
    .await;
    let metrics = d.metrics().await;
    let status = d.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    let log = d.log();
    let mut state = std::fs::read(pg.cfg.state_db()).unwrap_or_default();
    // SQLite in WAL mode: recent writes may still sit in the -wal file.
    let wal = format!("{}-wal", pg.cfg.state_db().display());
    state.extend(std::fs::read(wal).unwrap_or_default());
    let mut secrets = vec![
        pg.initial_password.clone(),
        my.initial_password.clone(),
        my.other_password.clone(),
    ];
    for s in [&pg, &my] {
        let last = s.vault.current_version(&s.path).await;
        for v in 1..=last {
            let kv = s.vault.kv_get_version(&s.path, Some(v)).await.unwrap();
            secrets.push(kv.data["password"].as_str().unwrap().to_string());
            if let Some(url) = kv.data.get("url").and_then(|u| u.as_str()) {
                secrets.push(url.to_string());
            }
        }
    }
    record_canaries(secrets.iter().map(String::as_str));
    assert!(secrets.len() >= 11, "{} secrets", secrets.len());
    assert!(
        metrics.contains(&format!(
            "vault_steward_job_runs_total{{job=\"{}\",kind=\"postgres\",outcome=\"success\"}}",
            pg.job
        )),
        "{metrics}"
    );
    for secret in &secrets {
        assert!(
            !metrics.contains(secret.as_str()),
            "a password is in /metrics"
        );
        assert!(
            !log.contains(secret.as_str()),
            "a password is in the daemon log"
        );
        assert!(
            !state.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a password is in the state file"
        );
    }
    println!(
        "{} passwords and URLs checked against /metrics ({} bytes), the debug log ({} bytes) and the state file ({} bytes)",
        secrets.len(),
        metrics.len(),
        log.len(),
        state.len()
    );
    pg.cleanup().await;
    my.cleanup().await;
}

// ---- a secret written by hand during a rotation wins ---------------------------------------

/// A rotation stopped after its test step; meanwhile someone writes the consumers' secret by
/// hand (and sets that password on the role). The resumed commit must not overwrite it: it
/// raises ConcurrentWrite, puts the hand-written password back on the role (which the
/// rotation had changed), and the hand-written credential logs in.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn secret_written_by_hand_during_a_rotation_wins() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(engine, Strategy::Single, Options::default()).await;
        let (v0, user0, _) = s.current().await;
        let (st, _, _) = s.rotate_crashing_at("rotation-test-done");
        assert!(!st.success());
        let pending = s.pending_password().await.expect("pending");
        let by_hand = common::db::password("byhand");
        record_canaries([by_hand.as_str()]);
        let mut kv = s.vault.kv_get(&s.path).await.unwrap().data;
        kv.insert(
            "password".into(),
            serde_json::Value::String(by_hand.clone()),
        );
        s.vault.kv_put(&s.path, serde_json::Value::Object(kv)).await;

        let (st, out, err) = s.rotate();
        assert!(
            st.success(),
            "a conflict is an alert, not a failure: {out}{err}"
        );
        assert!(out.contains("someone else wrote it"), "{out}");
        let (v, user, pw) = s.current().await;
        assert_eq!(
            (v, user.as_str(), pw.as_str()),
            (v0 + 1, user0.as_str(), by_hand.as_str()),
            "not overwritten"
        );
        assert_logs_in(engine, &user, &by_hand, "the hand-written password").await;
        assert_refused(engine, &user, &pending, "the abandoned rotation's password").await;
        assert!(s.alert_firing("ConcurrentWrite").await);
        assert_eq!(s.open_rotations().await, 0);
        assert!(!s.pending_exists().await);

        // The next rotation works normally and resolves the alert.
        let (st, out, err) = s.rotate();
        assert!(st.success(), "{out}{err}");
        let (_, user, pw) = s.current().await;
        assert_logs_in(engine, &user, &pw, "after the next rotation").await;
        assert!(!s.alert_firing("ConcurrentWrite").await);
        s.cleanup().await;
    }
}

/// `check --connect` proves the admin login and the token's KV access; `--dry-run` changes
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_and_dry_run() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let s = Setup::new(engine, Strategy::Alternating, Options::default()).await;
        let (st, out, err) = s.cfg.cli(&["check", "--connect"]);
        assert!(st.success(), "{out}{err}");
        let (v0, _, _) = s.current().await;
        let (st, out, err) = s.cfg.cli(&["rotate", &s.job, "--dry-run"]);
        assert!(st.success(), "{out}{err}");
        assert!(
            out.contains(&format!("would set a new password on {}", s.users[1])),
            "{out}"
        );
        assert_eq!(s.current().await.0, v0);
        assert_eq!(s.open_rotations().await, 0);

        let bad = Setup::new(
            engine,
            Strategy::Single,
            Options {
                wrong_admin_password: true,
                ..Options::default()
            },
        )
        .await;
        let (st, out, err) = bad.cfg.cli(&["check", "--connect"]);
        assert!(!st.success(), "{out}{err}");
        assert!(
            format!("{out}{err}").contains("login refused"),
            "{out}{err}"
        );
        s.cleanup().await;
        bad.cleanup().await;
    }
}

// ---- a new password that does not log in: the rotation is given up, the current one restored

/// The test login fails (the job names a database that does not exist, so a login as the role
/// is refused while the admin, connecting to its own database, can change passwords). Strategy
/// single: the role's password was already changed, so abandoning must put the consumers'
/// password back. Also with a crash inside the abandon step, rolled forward by the daemon.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn failed_test_login_puts_the_current_password_back() {
    let mut rows = Vec::new();
    for engine in [Engine::Postgres, Engine::Mysql] {
        for crash in [
            None,
            Some("rotation-abandon-recorded"),
            Some("rotation-abandon-done"),
        ] {
            let s = Setup::new(
                engine,
                Strategy::Single,
                Options {
                    job_database: Some(common::unique("nodb")),
                    admin_database: (engine == Engine::Postgres).then(|| engine.database()),
                    ..Options::default()
                },
            )
            .await;
            let (v0, user0, pw0) = s.current().await;
            let error = match crash {
                None => {
                    let (st, out, err) = s.rotate();
                    assert!(!st.success(), "{out}{err}");
                    assert!(s.alert_firing("JobFailing").await);
                    s.status()["last_error"].as_str().unwrap().to_string()
                }
                Some(fp) => {
                    let (st, _, err) = s.rotate_crashing_at(fp);
                    assert!(!st.success());
                    assert!(err.contains(&format!("failpoint {fp} hit")), "{err}");
                    assert_eq!(s.open_rotations().await, 1);
                    let mut d = s.cfg.start(&[]);
                    d.ready().await;
                    let store = s.store().await;
                    let job = s.job.clone();
                    wait_until(Duration::from_secs(30), "the resumed abandon", || {
                        let (store, job) = (store.clone(), job.clone());
                        async move {
                            let runs = store.recent_runs(&job, 10).await.unwrap();
                            store.open_rotations(Some(&job)).await.unwrap().is_empty()
                                && runs.iter().any(|r| {
                                    r.trigger == vault_steward::store::RunTrigger::Resume
                                        && r.finished_at.is_some()
                                })
                        }
                    })
                    .await;
                    d.terminate(Duration::from_secs(15)).await;
                    let runs = store.recent_runs(&s.job, 10).await.unwrap();
                    let resumed = runs
                        .iter()
                        .find(|r| r.trigger == vault_steward::store::RunTrigger::Resume)
                        .unwrap();
                    resumed.error.clone().unwrap_or_default()
                }
            };
            assert!(
                error.contains("with the new password failed"),
                "{engine:?} {crash:?}: {error}"
            );
            assert!(error.contains(&format!("put back on {user0}")), "{error}");
            assert!(error.contains("abandoned"), "{error}");
            let (v, user, pw) = s.current().await;
            assert_eq!((&user, &pw), (&user0, &pw0), "KV's credential untouched");
            // Before putting the password back, KV is rewritten unchanged with check-and-set (a
            // fence), so that a commit of the abandoned rotation still in flight cannot land.
            assert_eq!(v, v0 + 1, "one fence version");
            assert_logs_in(engine, &user0, &pw0, "the consumers' password, put back").await;
            assert!(!s.pending_exists().await);
            assert_eq!(s.open_rotations().await, 0);
            rows.push((crash.unwrap_or("(no crash)"), engine.kind(), error));
            s.cleanup().await;
        }
    }
    println!("\nnew password refused at login, strategy single → what the run record says");
    for (crash, engine, error) in &rows {
        println!("{crash:<28} single       {engine:<9} OK: current password restored; {error}");
    }
}

/// The daemon itself killed in the middle of a rotation it started on schedule: the restarted
/// daemon rolls it forward (the table above does the same for a killed `rotate`).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_mid_rotation_rolls_forward_on_restart() {
    let mut rows = Vec::new();
    for engine in [Engine::Postgres, Engine::Mysql] {
        for fp in [
            "rotation-apply-done",
            "rotation-test-done",
            "rotation-commit-written",
        ] {
            let s = Setup::new(
                engine,
                Strategy::Single,
                Options {
                    every: "1s",
                    ..Options::default()
                },
            )
            .await;
            let (v0, user0, pw0) = s.current().await;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let mut d = s.cfg.start(&[("VAULT_STEWARD_FAILPOINT", fp)]);
            let status = d.wait_exit(Duration::from_secs(30)).await;
            assert!(!status.success(), "{fp}: the failpoint aborts the daemon");
            assert!(d.log().contains(&format!("failpoint {fp} hit")), "{fp}");
            assert_eq!(s.open_rotations().await, 1);
            let _ = s.pending_password().await;
            // Restarted with the production interval: only the resume may change anything.
            s.set_every_line("every = \"90d\"");
            let mut d = s.cfg.start(&[]);
            d.ready().await;
            s.wait_rolled_forward("the roll-forward").await;
            d.terminate(Duration::from_secs(15)).await;
            let (v1, user1, pw1) = s.current().await;
            assert_eq!((v1, &user1), (v0 + 1, &user0), "{fp}: exactly one rotation");
            assert_logs_in(engine, &user1, &pw1, fp).await;
            assert_refused(engine, &user0, &pw0, fp).await;
            assert!(!s.pending_exists().await);
            rows.push((fp, engine.kind()));
            s.cleanup().await;
        }
    }
    println!("\ndaemon killed at step, restarted → rolled forward");
    for (fp, engine) in rows {
        println!("{fp:<28} single       {engine:<9} OK: v+1, KV logs in, old refused");
    }
}

/// A rotation left open (the new password set, the rest not done) whose roll-forward fails
/// (the database went down) is retried with the usual backoff, not at the job's next `window`
/// opening: until it completes, consumers may hold a credential the database refuses.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_roll_forward_is_retried_without_waiting_for_the_window() {
    let engine = Engine::Postgres;
    let proxy = Proxy::start(host_port(engine.server())).await;
    let s = Setup::new(
        engine,
        Strategy::Single,
        Options {
            admin_at: Some(("127.0.0.1".into(), proxy.port)),
            ..Options::default()
        },
    )
    .await;
    let (v0, user0, pw0) = s.current().await;
    let (st, _, _) = s.rotate_crashing_at("rotation-apply-done");
    assert!(!st.success());
    assert_eq!(s.open_rotations().await, 1);
    let _ = s.pending_password().await;

    // The window next opens on 1 January; the database is down when the daemon starts.
    s.set_every_line("every = \"90d\"\nwindow = \"0 0 0 1 1 *\"");
    proxy.cut();
    let mut d = s.cfg.start(&[]);
    d.ready().await;
    let store = s.store().await;
    let job = s.job.clone();
    wait_until(Duration::from_secs(20), "the roll-forward to fail", || {
        let (store, job) = (store.clone(), job.clone());
        async move {
            store
                .job_state(&job)
                .await
                .unwrap()
                .is_some_and(|st| st.consecutive_failures >= 1)
        }
    })
    .await;
    assert_eq!(
        s.open_rotations().await,
        1,
        "the rotation waits for the database"
    );
    proxy.heal();
    s.wait_rolled_forward("the retried roll-forward").await;
    d.terminate(Duration::from_secs(15)).await;
    assert!(
        d.log()
            .contains("retrying it without waiting for the window"),
        "{}",
        d.log()
    );
    let (v1, user1, pw1) = s.current().await;
    assert_eq!((v1, &user1), (v0 + 1, &user0), "exactly one rotation");
    assert_logs_in(engine, &user1, &pw1, "after the roll-forward").await;
    assert_refused(engine, &user0, &pw0, "after the roll-forward").await;
    // Done: the window gates the next rotation again.
    let next = s.status()["next_due"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(next.contains("-01-01T00:00:00"), "next due {next}");
    s.cleanup().await;
}

// ---- issue 13 item 3: a resumed `apply` must not lose the role's password ------------------

/// The run recorded for the roll-forward of `job` (trigger `resume`), once finished.
#[cfg(feature = "failpoints")]
async fn finished_resume_run(s: &Setup) -> vault_steward::store::RunRecord {
    let store = s.store().await;
    let job = s.job.clone();
    wait_until(Duration::from_secs(30), "the resumed run to finish", || {
        let (store, job) = (store.clone(), job.clone());
        async move {
            store.recent_runs(&job, 10).await.unwrap().iter().any(|r| {
                r.trigger == vault_steward::store::RunTrigger::Resume && r.finished_at.is_some()
            })
        }
    })
    .await;
    store
        .recent_runs(&s.job, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.trigger == vault_steward::store::RunTrigger::Resume)
        .unwrap()
}

/// MariaDB with a password-reuse policy (`password_reuse_check`, history kept forever:
/// `password_reuse_check_interval = 0`) on a private server of the test's own, so the policy
/// reaches no other test. `rotate` dies right after the ALTER (`rotation-apply-done`): the role
/// has the pending password, KV the old one. The restarted daemon's resumed `apply` must not
/// take the server's refusal to set the same password again as "the new password was refused"
/// and delete the pending password (review M2: then the role's password exists nowhere): the
/// rotation completes and KV's password logs in.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn mysql_password_reuse_policy_crash_after_alter_rotation_completes_on_restart() {
    let engine = Engine::Mysql;
    let server = PrivateMariadb::start(&[]).await;
    engine
        .root_exec_on(
            &server.url(),
            &[
                "INSTALL SONAME 'password_reuse_check'".to_string(),
                "SET GLOBAL password_reuse_check_interval = 0".to_string(),
            ],
        )
        .await;
    let s = Setup::new(
        engine,
        Strategy::Single,
        Options {
            server: Some(server.url()),
            ..Options::default()
        },
    )
    .await;
    let (v0, user0, pw0) = s.current().await;
    s.assert_logs_in(&user0, &pw0, "before").await;
    // The policy is in force: setting a password the role had before is refused.
    let mut root = sqlx::mysql::MySqlConnection::connect(server.url().as_str())
        .await
        .unwrap();
    let again = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER USER '{user0}'@'%' IDENTIFIED BY '{pw0}'"
    )))
    .execute(&mut root)
    .await;
    let _ = root.close().await;
    assert!(
        again.is_err(),
        "password_reuse_check should refuse a password the role had"
    );

    let (st, _, err) = s.rotate_crashing_at("rotation-apply-done");
    assert!(!st.success());
    assert!(err.contains("failpoint rotation-apply-done hit"), "{err}");
    assert_eq!(s.open_rotations().await, 1);
    let pending = s.pending_password().await.expect("pending password");
    s.assert_logs_in(&user0, &pending, "the ALTER ran before the crash")
        .await;
    s.assert_refused(&user0, &pw0, "KV's password once the ALTER ran")
        .await;

    let mut d = s.cfg.start(&[]);
    d.ready().await;
    let run = finished_resume_run(&s).await;
    d.terminate(Duration::from_secs(15)).await;
    let (v1, user1, pw1) = s.current().await;
    let kv_login = s.login(&user1, &pw1).await;
    let pending_login = match s.pending_password().await {
        Some(p) => format!("{:?}", s.login(&user0, &p).await.map_err(|e| e.to_string())),
        None => "no pending password left".into(),
    };
    assert!(
        kv_login.is_ok(),
        "KV's password (version {v1}) is refused after the restart: {}; the resumed run: \
         outcome {:?}, error {:?}; open rotations {}; pending: {pending_login}",
        kv_login.unwrap_err(),
        run.outcome,
        run.error,
        s.open_rotations().await,
    );
    assert_eq!(run.error, None, "the resumed run succeeds");
    assert_eq!((v1, &user1), (v0 + 1, &user0), "exactly one rotation");
    assert_eq!(
        pw1, pending,
        "the password the ALTER set is the one committed"
    );
    s.assert_refused(&user0, &pw0, "the previous password")
        .await;
    assert!(
        !s.pending_exists().await,
        "the pending password is cleaned up"
    );
    assert_eq!(s.open_rotations().await, 0);
    s.cleanup().await;
    server.stop().await;
}

/// Connects as the job's admin (from its admin secret) and runs `sql`; the SQLSTATE if it fails.
#[cfg(feature = "failpoints")]
async fn as_pg_admin(s: &Setup, sql: &str) -> Result<(), String> {
    let admin = s.vault.kv_get(&s.admin_path).await.expect("admin secret");
    let (host, port) = s.server();
    let o = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .host(&host)
        .port(port)
        .username(admin.data["username"].as_str().unwrap())
        .password(admin.data["password"].as_str().unwrap())
        .database(&Engine::Postgres.database());
    let mut c = sqlx::postgres::PgConnection::connect_with(&o)
        .await
        .expect("admin login");
    let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await;
    let _ = c.close().await;
    r.map(|_| ()).map_err(|e| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.to_string()).unwrap_or_default(),
        other => other.to_string(),
    })
}

/// A superuser transaction holding the role's `pg_authid` row (an uncommitted update of it):
/// any other ALTER ROLE of that role waits for it, so a statement timeout on the admin bites
/// every time, not by luck of timing.
#[cfg(feature = "failpoints")]
async fn lock_role_row(role: &str) -> sqlx::postgres::PgConnection {
    let mut c = sqlx::postgres::PgConnection::connect(Engine::Postgres.root_url().as_str())
        .await
        .expect("superuser connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET idle_in_transaction_session_timeout = '300s'; BEGIN; \
         ALTER ROLE \"{role}\" CONNECTION LIMIT -1"
    )))
    .execute(&mut c)
    .await
    .expect("lock the role's row");
    c
}

/// PostgreSQL with a tiny `statement_timeout` on the job's own admin role (a per-role setting,
/// harmless to the shared cluster), and the rotated role's row held by another transaction so
/// that every ALTER ROLE by the admin is cancelled (SQLSTATE 57014, which the old code took for
/// "refused").
///
/// 1. `rotate` dies right after the ALTER; the roll-forward (`rotate` again) meets the timeout.
///    No credential may be lost: KV's password logs in, or the pending one does while the
///    rotation stays open (before the fix the rotation was abandoned and the pending password
///    deleted while the role held it).
/// 2. A fresh rotation meets the timeout: a transient failure, the rotation stays open, KV's
///    password keeps working.
/// 3. With the timeout lifted, the daemon retries the open rotation on its own and completes it.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn postgres_statement_timeout_on_the_admin_loses_no_credential_and_is_retried() {
    let engine = Engine::Postgres;
    let s = Setup::new(engine, Strategy::Single, Options::default()).await;
    let admin = s.vault.kv_get(&s.admin_path).await.unwrap().data["username"]
        .as_str()
        .unwrap()
        .to_string();
    let (v0, user0, pw0) = s.current().await;

    // 1. A crash after the ALTER, then the roll-forward under the timeout.
    let (st, _, err) = s.rotate_crashing_at("rotation-apply-done");
    assert!(!st.success());
    assert!(err.contains("failpoint rotation-apply-done hit"), "{err}");
    let pending = s.pending_password().await.expect("pending password");
    assert_logs_in(engine, &user0, &pending, "the ALTER ran before the crash").await;
    engine
        .root_exec(&[format!(
            "ALTER ROLE \"{admin}\" SET statement_timeout = '1ms'"
        )])
        .await;
    let blocker = lock_role_row(&user0).await;
    assert_eq!(
        as_pg_admin(&s, &format!("ALTER ROLE \"{user0}\" CONNECTION LIMIT -1")).await,
        Err("57014".to_string()),
        "the admin's ALTER ROLE is cancelled by statement_timeout"
    );
    let (st, out, err) = s.rotate();
    let (v1, user1, pw1) = s.current().await;
    let open = s.open_rotations().await;
    let pending_now = s.pending_password().await;
    let kv_login = engine.login(&user1, &pw1).await;
    let pending_login = match &pending_now {
        Some(p) => engine.login(&user0, p).await,
        None => Err(common::db::LoginError {
            code: None,
            text: "no pending password left".into(),
        }),
    };
    assert!(
        kv_login.is_ok() || (open == 1 && pending_login.is_ok()),
        "a credential was lost: KV's password (version {v1}) is refused ({}), the pending one \
         {} and {open} rotation(s) open; the roll-forward said: {out}{}",
        kv_login.as_ref().unwrap_err(),
        match &pending_login {
            Ok(()) => "logs in".to_string(),
            Err(e) => format!("does not: {e}"),
        },
        err.lines().last().unwrap_or_default(),
    );
    // The pending password logs in, so the roll-forward needs no second ALTER: it completes.
    assert_eq!(open, 0, "the roll-forward completes: {out}{err}");
    assert!(st.success(), "{out}{err}");
    assert_eq!((v1, &user1, &pw1), (v0 + 1, &user0, &pending));
    assert_refused(engine, &user0, &pw0, "the previous password").await;

    // 2. A fresh rotation under the timeout: a transient failure, nothing lost meanwhile.
    let (st, out, err) = s.rotate();
    assert!(!st.success(), "the ALTER cannot succeed: {out}{err}");
    assert!(
        !err.contains("abandoned") && !out.contains("abandoned"),
        "a statement timeout is not a refusal; the rotation must stay open: {out}{err}"
    );
    assert_eq!(s.open_rotations().await, 1, "{out}{err}");
    assert_eq!(s.current().await.0, v1, "KV untouched");
    assert_logs_in(
        engine,
        &user0,
        &pw1,
        "KV's password while the rotation waits",
    )
    .await;
    assert!(
        s.pending_password().await.is_some(),
        "the pending password is kept"
    );
    let row = s.status();
    assert!(row["consecutive_failures"].as_u64() >= Some(1), "{row}");

    // 3. The timeout lifted: the daemon retries the open rotation and completes it.
    let _ = blocker.close().await;
    engine
        .root_exec(&[format!("ALTER ROLE \"{admin}\" RESET statement_timeout")])
        .await;
    let mut d = s.cfg.start(&[]);
    d.ready().await;
    s.wait_rolled_forward("the retried rotation").await;
    d.terminate(Duration::from_secs(15)).await;
    let (v2, user2, pw2) = s.current().await;
    assert_eq!((v2, &user2), (v1 + 1, &user0), "exactly one more rotation");
    assert_logs_in(engine, &user2, &pw2, "KV's password after the retry").await;
    assert_refused(engine, &user0, &pw1, "the previous password").await;
    assert!(!s.pending_exists().await);
    s.cleanup().await;
}

/// A rotation abandoned because the new password did not log in (the job names a database that
/// does not exist) is retried with the usual backoff — it failed, it did not happen — and
/// JobFailing stays firing. The consumers' secret is at most fenced (rewritten unchanged) by the
/// abandon; that must not make it look freshly rotated, or the retry finds the job "not due",
/// the failure is counted as resolved, and the next try waits a whole `every` (90 days in
/// production) with no alert.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_rotation_is_retried_not_postponed_by_every() {
    let engine = Engine::Postgres;
    let s = Setup::new(
        engine,
        Strategy::Single,
        Options {
            job_database: Some(common::unique("nodb")),
            admin_database: Some(engine.database()),
            every: "20s",
            ..Options::default()
        },
    )
    .await;
    let (v0, user0, pw0) = s.current().await;
    let store = s.store().await;
    // Due 20 s after the seed.
    let mut d = s.cfg.start(&[]);
    d.ready().await;
    let job = s.job.clone();
    wait_until(Duration::from_secs(45), "the first failed rotation", || {
        let (store, job) = (store.clone(), job.clone());
        async move {
            store
                .job_state(&job)
                .await
                .unwrap()
                .is_some_and(|st| st.consecutive_failures >= 1)
        }
    })
    .await;
    let failed_at = chrono::Utc::now();
    // The retry comes within a few seconds (retry_initial = 1s): it fails again, or it was
    // skipped as not due.
    wait_until(Duration::from_secs(15), "the retry", || {
        let (store, job) = (store.clone(), job.clone());
        async move {
            store
                .job_state(&job)
                .await
                .unwrap()
                .is_some_and(|st| st.consecutive_failures != 1)
        }
    })
    .await;
    d.terminate(Duration::from_secs(15)).await;
    let runs = store.recent_runs(&s.job, 10).await.unwrap();
    let (v, user, pw) = s.current().await;
    let state = store.job_state(&s.job).await.unwrap().unwrap();
    assert!(
        state.consecutive_failures >= 2,
        "the abandoned rotation was not retried: after its failure at {failed_at} the next run \
         ended {:?} ({:?}); KV is at version {v} (was {v0}), created {}; consecutive failures \
         {}",
        runs.first().map(|r| r.outcome),
        runs.first()
            .and_then(|r| r.detail.clone().or(r.error.clone())),
        s.vault.kv_get(&s.path).await.unwrap().created_time,
        state.consecutive_failures,
    );
    assert!(s.alert_firing("JobFailing").await);
    assert_eq!((&user, &pw), (&user0, &pw0), "KV's credential untouched");
    assert_logs_in(engine, &user0, &pw0, "the consumers' password").await;
    s.cleanup().await;
}

/// MariaDB with a password-reuse policy, and a new password that does not log in (the job
/// names a database that does not exist): the rotation is abandoned and the consumers'
/// password must go back on the role — which the policy refuses, since the role had it before.
/// Before the fix the pending password was deleted anyway, so the role's password existed
/// nowhere. Now the rotation stays open with the pending password kept (it logs in), and
/// RotationStuck fires.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn mysql_password_reuse_policy_refused_restore_keeps_the_pending_password() {
    let engine = Engine::Mysql;
    let server = PrivateMariadb::start(&[]).await;
    engine
        .root_exec_on(
            &server.url(),
            &[
                "INSTALL SONAME 'password_reuse_check'".to_string(),
                "SET GLOBAL password_reuse_check_interval = 0".to_string(),
            ],
        )
        .await;
    let s = Setup::new(
        engine,
        Strategy::Single,
        Options {
            server: Some(server.url()),
            job_database: Some(common::unique("nodb")),
            ..Options::default()
        },
    )
    .await;
    let (v0, user0, pw0) = s.current().await;
    let (st, out, err) = s.rotate();
    assert!(!st.success(), "the new password cannot log in: {out}{err}");
    let (v1, user1, pw1) = s.current().await;
    assert_eq!((&user1, &pw1), (&user0, &pw0), "KV's credential unchanged");
    assert!(v1 <= v0 + 1, "at most a fence: version {v1}, was {v0}");
    let open = s.open_rotations().await;
    let pending = s.pending_password().await;
    let kv_login = s.login(&user0, &pw0).await;
    let pending_login = match &pending {
        Some(p) => s.login(&user0, p).await.map_err(|e| e.to_string()),
        None => Err("no pending password left".to_string()),
    };
    assert!(
        kv_login.is_ok() || (open == 1 && pending_login.is_ok()),
        "a credential was lost: KV's password is refused ({}), the pending one: {pending_login:?}, \
         {open} rotation(s) open; the run said: {out}{}",
        kv_login.as_ref().unwrap_err(),
        err.lines().last().unwrap_or_default(),
    );
    // The policy refused the old password: the role holds the pending one, the rotation waits.
    s.assert_refused(
        &user0,
        &pw0,
        "KV's password, whose restore the policy refused",
    )
    .await;
    assert_eq!(open, 1, "the rotation stays open");
    assert!(
        s.alert_firing("RotationStuck").await,
        "RotationStuck pages while the role holds only the pending password"
    );
    assert!(
        out.contains("refused") || err.contains("refused"),
        "the run says the restore was refused: {out}"
    );
    s.cleanup().await;
    server.stop().await;
}
