//! The state store suite: every test below is written once and run against both backends (the
//! `store_tests!` list at the bottom instantiates it in `mod sqlite` and `mod postgres`).
//!
//! SQLite tests use a file in a fresh temporary directory. PostgreSQL tests connect to
//! `VS_TEST_PG_URL` (the testbed's scram cluster, password in the URL) or, when it is unset, to
//! the machine's trust-auth cluster at `postgres://postgres@127.0.0.1:5432/test`; each test creates
//! a database of its own and drops it at the end, so tests run in parallel.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;
use vault_steward::store::{
    self, AlertRecord, AlertStatus, DeliveryKind, DeliveryState, JobState, NewAction, NewDelivery,
    NewRotation, NewRun, RotationStatus, RunEnd, RunEnding, RunOutcome, RunTrigger, SnapshotRecord,
    Store, StoreError,
};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fixed moment plus `secs`, with a millisecond part so that precision is exercised.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_750_000_000_123 + secs * 1000).unwrap()
}

// ---- fixtures --------------------------------------------------------------------------------

/// A store on a database of its own, and the means to open a second, independent handle on the
/// same database (as another process would).
struct Fixture {
    store: Arc<dyn Store>,
    db: Db,
}

enum Db {
    Sqlite {
        _dir: TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
        password: Option<SecretString>,
    },
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let store = store::open(&url, None).await.unwrap();
        Fixture {
            store,
            db: Db::Sqlite { _dir: dir, url },
        }
    }

    async fn postgres() -> Fixture {
        let admin_url = std::env::var("VS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into());
        let name = common::unique("vs_store");
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();

        // The store gets the URL without password and the password on the side, as in production.
        let mut url = url::Url::parse(&admin_url).unwrap();
        let password = url
            .password()
            .map(|p| SecretString::from(percent_decode(p)));
        url.set_password(None).unwrap();
        url.set_path(&name);
        let url = url.to_string();
        let store = store::open(&url, password.as_ref()).await.unwrap();
        Fixture {
            store,
            db: Db::Postgres {
                admin_url,
                name,
                url,
                password,
            },
        }
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.db {
            Db::Sqlite { url, .. } => store::open(url, None).await.unwrap(),
            Db::Postgres { url, password, .. } => {
                store::open(url, password.as_ref()).await.unwrap()
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let Db::Postgres {
            admin_url, name, ..
        } = &self.db
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Runs even when the test panicked; FORCE ends the store's own connections.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop test database");
        }
    }
}

/// Decodes the `%XX` escapes of a URL's password.
fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = tail
            .get(..2)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (b, escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                rest = &tail[2..];
            }
            _ => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

// ---- the suite, written once ------------------------------------------------------------------

async fn job_state_round_trip(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.job_state("api").await.unwrap(), None);
    assert!(s.job_states().await.unwrap().is_empty());

    let bare = JobState {
        job: "snap".into(),
        kind: "raft-snapshot".into(),
        ..JobState::default()
    };
    let full = JobState {
        job: "api".into(),
        kind: "api-key".into(),
        last_run_at: Some(t(10)),
        last_success_at: Some(t(11)),
        last_outcome: Some(RunOutcome::Failure),
        consecutive_failures: 3,
        secret_changed_at: Some(t(-86_400)),
        secret_version: Some(7),
        retry_at: Some(t(300)),
        last_error: Some("permission denied on secret/api-key/default".into()),
    };
    s.put_job_state(&bare).await.unwrap();
    s.put_job_state(&full).await.unwrap();
    assert_eq!(s.job_state("api").await.unwrap().as_ref(), Some(&full));
    assert_eq!(s.job_state("snap").await.unwrap().as_ref(), Some(&bare));

    // Replacing clears what the new state leaves out.
    let recovered = JobState {
        last_outcome: Some(RunOutcome::Success),
        consecutive_failures: 0,
        retry_at: None,
        last_error: None,
        ..full.clone()
    };
    s.put_job_state(&recovered).await.unwrap();
    assert_eq!(s.job_states().await.unwrap(), vec![recovered, bare]);
}

async fn runs_start_finish_recent(f: &Fixture) {
    let s = &f.store;
    let run = |job: &str, at: i64, trigger| NewRun {
        job: job.into(),
        kind: "api-key".into(),
        trigger,
        started_at: t(at),
    };
    let first = s
        .start_run(&run("api", 0, RunTrigger::Schedule))
        .await
        .unwrap();
    let second = s
        .start_run(&run("api", 60, RunTrigger::Retry))
        .await
        .unwrap();
    let third = s
        .start_run(&run("api", 120, RunTrigger::Manual))
        .await
        .unwrap();
    let other = s
        .start_run(&run("other", 500, RunTrigger::Schedule))
        .await
        .unwrap();
    assert_eq!(HashSet::from([first, second, third, other]).len(), 4);

    s.finish_run(
        first,
        &RunEnd {
            finished_at: t(5),
            outcome: RunOutcome::Failure,
            detail: None,
            error: Some("vault answered 503".into()),
        },
    )
    .await
    .unwrap();
    s.finish_run(
        second,
        &RunEnd {
            finished_at: t(65),
            outcome: RunOutcome::Success,
            detail: Some("rotated to version 4".into()),
            error: None,
        },
    )
    .await
    .unwrap();

    let recent = s.recent_runs("api", 10).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![third, second, first]
    );
    let (r3, r2, r1) = (&recent[0], &recent[1], &recent[2]);
    assert_eq!(
        (r3.trigger, r3.finished_at, r3.outcome),
        (RunTrigger::Manual, None, None)
    );
    assert_eq!(r2.trigger, RunTrigger::Retry);
    assert_eq!(r2.started_at, t(60));
    assert_eq!(r2.finished_at, Some(t(65)));
    assert_eq!(r2.outcome, Some(RunOutcome::Success));
    assert_eq!(r2.detail.as_deref(), Some("rotated to version 4"));
    assert_eq!(r2.error, None);
    assert_eq!(r1.outcome, Some(RunOutcome::Failure));
    assert_eq!(r1.error.as_deref(), Some("vault answered 503"));
    assert_eq!((r1.job.as_str(), r1.kind.as_str()), ("api", "api-key"));

    let newest = s.recent_runs("api", 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].id, third);
    assert!(s.recent_runs("nobody", 10).await.unwrap().is_empty());
}

async fn lock_and_start_run_is_all_or_nothing(f: &Fixture) {
    let s = &f.store;
    let run = |at: i64| NewRun {
        job: "api".into(),
        kind: "api-key".into(),
        trigger: RunTrigger::Manual,
        started_at: t(at),
    };
    assert!(s.try_lock("api", "daemon", t(0), t(30)).await.unwrap());
    // Held by someone else: no lock, and no run recorded.
    assert_eq!(
        s.lock_and_start_run("cli", t(40), &run(1)).await.unwrap(),
        None
    );
    assert!(s.recent_runs("api", 10).await.unwrap().is_empty());
    assert_eq!(
        s.lock_info("api").await.unwrap().map(|l| l.holder),
        Some("daemon".to_string())
    );
    // Free (the lease ran out): both at once.
    let id = s
        .lock_and_start_run("cli", t(60), &run(31))
        .await
        .unwrap()
        .expect("taken");
    let lock = s.lock_info("api").await.unwrap().unwrap();
    assert_eq!(
        (lock.holder.as_str(), lock.acquired_at, lock.expires_at),
        ("cli", t(31), t(60))
    );
    let runs = s.recent_runs("api", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].id, runs[0].started_at, runs[0].finished_at),
        (id, t(31), None)
    );
    assert_eq!(runs[0].trigger, RunTrigger::Manual);
}

async fn end_runs_record_state_and_unlock_at_once(f: &Fixture) {
    let s = &f.store;
    assert!(s.try_lock("api", "me", t(0), t(30)).await.unwrap());
    let id = s
        .start_run(&NewRun {
            job: "api".into(),
            kind: "api-key".into(),
            trigger: RunTrigger::Schedule,
            started_at: t(0),
        })
        .await
        .unwrap();
    let state = JobState {
        job: "api".into(),
        kind: "api-key".into(),
        last_run_at: Some(t(0)),
        last_success_at: Some(t(2)),
        last_outcome: Some(RunOutcome::Success),
        secret_changed_at: Some(t(1)),
        secret_version: Some(7),
        ..JobState::default()
    };
    let end = RunEnd {
        finished_at: t(2),
        outcome: RunOutcome::Success,
        detail: Some("rotated to version 7".into()),
        error: None,
    };
    // Someone else's lock is left alone.
    assert!(s.try_lock("other", "you", t(0), t(30)).await.unwrap());
    let ending = |holder: &str| RunEnding {
        run_id: id,
        end: end.clone(),
        state: state.clone(),
        holder: holder.into(),
    };
    s.end_runs(&[ending("me")]).await.unwrap();
    let run = &s.recent_runs("api", 1).await.unwrap()[0];
    assert_eq!(run.finished_at, Some(t(2)));
    assert_eq!(run.outcome, Some(RunOutcome::Success));
    assert_eq!(run.detail.as_deref(), Some("rotated to version 7"));
    assert_eq!(s.job_state("api").await.unwrap(), Some(state.clone()));
    assert!(s.lock_info("api").await.unwrap().is_none(), "released");
    assert_eq!(
        s.lock_info("other").await.unwrap().map(|l| l.holder),
        Some("you".to_string())
    );
    // A holder that lost its lock to another does not release the other's.
    assert!(s.try_lock("api", "thief", t(3), t(33)).await.unwrap());
    s.end_runs(&[ending("me")]).await.unwrap();
    assert_eq!(
        s.lock_info("api").await.unwrap().map(|l| l.holder),
        Some("thief".to_string())
    );

    // Several runs in one transaction (multi-row statements), each row with its own values:
    // new state rows and an existing one ("b3"), a success and a failure.
    s.put_job_state(&JobState {
        job: "b3".into(),
        kind: "api-key".into(),
        consecutive_failures: 9,
        last_error: Some("old".into()),
        ..JobState::default()
    })
    .await
    .unwrap();
    let mut endings = Vec::new();
    for (i, job) in ["b1", "b2", "b3"].into_iter().enumerate() {
        let run_id = s
            .lock_and_start_run(
                "me",
                t(60),
                &NewRun {
                    job: job.into(),
                    kind: "api-key".into(),
                    trigger: RunTrigger::Schedule,
                    started_at: t(10),
                },
            )
            .await
            .unwrap()
            .unwrap();
        let failed = i == 1;
        endings.push(RunEnding {
            run_id,
            end: RunEnd {
                finished_at: t(11 + i as i64),
                outcome: if failed {
                    RunOutcome::Failure
                } else {
                    RunOutcome::Skipped
                },
                detail: (!failed).then(|| format!("detail of {job}")),
                error: failed.then(|| format!("error of {job}")),
            },
            state: JobState {
                job: job.into(),
                kind: "api-key".into(),
                last_outcome: Some(if failed {
                    RunOutcome::Failure
                } else {
                    RunOutcome::Skipped
                }),
                consecutive_failures: u32::from(failed) * 3,
                secret_version: Some(i as i64),
                last_error: failed.then(|| format!("error of {job}")),
                ..JobState::default()
            },
            holder: "me".into(),
        });
    }
    s.end_runs(&endings).await.unwrap();
    for e in &endings {
        let job = e.state.job.as_str();
        assert!(s.lock_info(job).await.unwrap().is_none(), "{job} unlocked");
        let run = &s.recent_runs(job, 1).await.unwrap()[0];
        assert_eq!(run.id, e.run_id);
        assert_eq!(run.finished_at, Some(e.end.finished_at), "{job}");
        assert_eq!(run.outcome, Some(e.end.outcome), "{job}");
        assert_eq!(run.detail, e.end.detail, "{job}");
        assert_eq!(run.error, e.end.error, "{job}");
        assert_eq!(s.job_state(job).await.unwrap().as_ref(), Some(&e.state));
    }
    // One job twice in a batch: recorded in order, the later state wins.
    let mut twice = vec![endings[0].clone(), endings[0].clone()];
    twice[1].state.secret_version = Some(42);
    s.end_runs(&twice).await.unwrap();
    assert_eq!(
        s.job_state("b1").await.unwrap().unwrap().secret_version,
        Some(42)
    );
    s.end_runs(&[]).await.unwrap();
}

async fn close_interrupted_runs(f: &Fixture) {
    let s = &f.store;
    let new = |job: &str, at| NewRun {
        job: job.into(),
        kind: "postgres".into(),
        trigger: RunTrigger::Schedule,
        started_at: t(at),
    };
    let done = s.start_run(&new("a", 0)).await.unwrap();
    s.finish_run(
        done,
        &RunEnd {
            finished_at: t(1),
            outcome: RunOutcome::Success,
            detail: None,
            error: None,
        },
    )
    .await
    .unwrap();
    let died_a = s.start_run(&new("a", 10)).await.unwrap();
    let died_b = s.start_run(&new("b", 5)).await.unwrap();

    let closed = s.close_interrupted_runs(t(100)).await.unwrap();
    assert_eq!(
        closed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![died_b, died_a],
        "oldest first, finished runs untouched"
    );
    for r in &closed {
        assert_eq!(r.outcome, Some(RunOutcome::Interrupted));
        assert_eq!(r.finished_at, Some(t(100)));
    }
    assert!(s.close_interrupted_runs(t(200)).await.unwrap().is_empty());
    let a = s.recent_runs("a", 10).await.unwrap();
    assert_eq!(a[0].outcome, Some(RunOutcome::Interrupted));
    assert_eq!(a[1].outcome, Some(RunOutcome::Success));
    assert_eq!(a[1].finished_at, Some(t(1)));

    // A run that was in fact still going elsewhere records its real end over the mark.
    s.finish_run(
        died_a,
        &RunEnd {
            finished_at: t(150),
            outcome: RunOutcome::Success,
            detail: None,
            error: None,
        },
    )
    .await
    .unwrap();
    let a = s.recent_runs("a", 1).await.unwrap();
    assert_eq!(a[0].outcome, Some(RunOutcome::Success));
    assert_eq!(a[0].finished_at, Some(t(150)));
}

async fn lock_exclusivity_expiry_renew_unlock(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.lock_info("job").await.unwrap(), None);

    assert!(s.try_lock("job", "a", t(0), t(60)).await.unwrap());
    assert!(
        !s.try_lock("job", "b", t(30), t(90)).await.unwrap(),
        "held by a"
    );
    assert!(
        s.try_lock("other", "b", t(30), t(90)).await.unwrap(),
        "locks are per job"
    );

    // Re-taking one's own lock extends it and keeps the acquisition time.
    assert!(s.try_lock("job", "a", t(40), t(100)).await.unwrap());
    let info = s.lock_info("job").await.unwrap().unwrap();
    assert_eq!(
        (
            info.job.as_str(),
            info.holder.as_str(),
            info.acquired_at,
            info.expires_at
        ),
        ("job", "a", t(0), t(100))
    );

    assert!(!s.renew_lock("job", "b", t(500)).await.unwrap());
    assert!(s.renew_lock("job", "a", t(120)).await.unwrap());
    assert!(!s.try_lock("job", "b", t(119), t(200)).await.unwrap());

    // Expired: anyone may take it, and the previous holder has lost it.
    assert!(s.try_lock("job", "b", t(120), t(200)).await.unwrap());
    let info = s.lock_info("job").await.unwrap().unwrap();
    assert_eq!((info.holder.as_str(), info.acquired_at), ("b", t(120)));
    assert!(!s.renew_lock("job", "a", t(300)).await.unwrap());

    s.unlock("job", "a").await.unwrap();
    assert_eq!(
        s.lock_info("job").await.unwrap().unwrap().holder,
        "b",
        "not a's to release"
    );
    s.unlock("job", "b").await.unwrap();
    assert_eq!(s.lock_info("job").await.unwrap(), None);
    assert!(
        s.try_lock("job", "a", t(130), t(140)).await.unwrap(),
        "free again"
    );
    assert!(!s.renew_lock("nothing", "a", t(140)).await.unwrap());
}

async fn concurrent_try_lock_has_one_winner(f: &Fixture) {
    // Two handles on one database stand for two processes; several holders race on each.
    let stores = [f.store.clone(), f.reopen().await];
    for round in 0..10 {
        let job = format!("race-{round}");
        // A fresh lock in even rounds, an expired one in odd rounds.
        if round % 2 == 1 {
            assert!(stores[0].try_lock(&job, "old", t(0), t(1)).await.unwrap());
        }
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = stores[i % 2].clone();
                let job = job.clone();
                tokio::spawn(async move {
                    let holder = format!("holder-{i}");
                    let won = store.try_lock(&job, &holder, t(10), t(70)).await.unwrap();
                    (holder, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (holder, won) = task.await.unwrap();
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let info = stores[1].lock_info(&job).await.unwrap().unwrap();
        assert_eq!(info.holder, winners[0]);
    }
}

async fn rotations_state_machine(f: &Fixture) {
    let s = &f.store;
    let begin = |job: &str, at| NewRotation {
        job: job.into(),
        kind: "postgres".into(),
        step: "pending".into(),
        detail: Some(r#"{"role":"app"}"#.into()),
        started_at: t(at),
    };
    let a = s.begin_rotation(&begin("a", 0)).await.unwrap();
    let b = s.begin_rotation(&begin("b", 10)).await.unwrap();
    let a2 = s.begin_rotation(&begin("a", 20)).await.unwrap();

    s.set_rotation_step(a, "applied", Some(r#"{"role":"app","kv_version":3}"#), t(5))
        .await
        .unwrap();
    s.set_rotation_step(a, "tested", None, t(6)).await.unwrap();
    s.finish_rotation(
        a2,
        RotationStatus::Abandoned,
        Some(r#"{"why":"cas"}"#),
        t(25),
    )
    .await
    .unwrap();

    let open = s.open_rotations(None).await.unwrap();
    assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, b]);
    let ra = &open[0];
    assert_eq!(ra.step, "tested");
    assert_eq!(ra.status, RotationStatus::Open);
    assert_eq!(
        ra.detail.as_deref(),
        Some(r#"{"role":"app","kv_version":3}"#),
        "a step without detail keeps the recorded facts"
    );
    assert_eq!((ra.started_at, ra.updated_at), (t(0), t(6)));
    assert_eq!((ra.job.as_str(), ra.kind.as_str()), ("a", "postgres"));
    assert_eq!(open[1].updated_at, t(10));

    let only_a = s.open_rotations(Some("a")).await.unwrap();
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0].id, a);

    s.finish_rotation(a, RotationStatus::Finished, None, t(30))
        .await
        .unwrap();
    assert!(s.open_rotations(Some("a")).await.unwrap().is_empty());
    assert_eq!(s.open_rotations(None).await.unwrap().len(), 1);
}

async fn snapshots_newest_first(f: &Fixture) {
    let s = &f.store;
    let snap = |dest: &str, at: i64| SnapshotRecord {
        job: "raft".into(),
        destination: dest.into(),
        key: format!("vault/vault-{at}.snap.age"),
        taken_at: t(at),
        size_bytes: 3_100_000 + at,
        sha256: format!("{at:064x}"),
        raft_index: Some(1000 + at),
        raft_term: if at > 0 { Some(2) } else { None },
    };
    s.record_snapshot(&snap("s3", 0)).await.unwrap();
    s.record_snapshot(&snap("s3", 3600)).await.unwrap();
    s.record_snapshot(&snap("local", 7200)).await.unwrap();
    // Recording the same object again updates it instead of duplicating it.
    let mut again = snap("s3", 3600);
    again.size_bytes = 42;
    s.record_snapshot(&again).await.unwrap();
    s.record_snapshot(&SnapshotRecord {
        job: "other".into(),
        ..snap("s3", 9000)
    })
    .await
    .unwrap();

    let all = s.snapshots("raft", 10).await.unwrap();
    assert_eq!(all, vec![snap("local", 7200), again.clone(), snap("s3", 0)]);
    assert_eq!(
        s.snapshots("raft", 1).await.unwrap(),
        vec![snap("local", 7200)]
    );
    assert!(s.snapshots("nobody", 10).await.unwrap().is_empty());

    // Forgetting one object leaves the others (and other jobs' rows) alone.
    s.delete_snapshot("raft", "s3", &snap("s3", 0).key)
        .await
        .unwrap();
    s.delete_snapshot("raft", "local", "vault/not-there.snap.age")
        .await
        .unwrap();
    assert_eq!(
        s.snapshots("raft", 10).await.unwrap(),
        vec![snap("local", 7200), again]
    );
    assert_eq!(s.snapshots("other", 10).await.unwrap().len(), 1);
}

async fn actions_due_pending_complete_retry(f: &Fixture) {
    let s = &f.store;
    let action = |job: &str, due| NewAction {
        job: job.into(),
        action: "destroy-secret-id".into(),
        payload: r#"{"accessor":"abc"}"#.into(),
        due_at: t(due),
    };
    let late = s.schedule_action(&action("a", 100)).await.unwrap();
    let early = s.schedule_action(&action("a", 10)).await.unwrap();
    let other = s.schedule_action(&action("b", 50)).await.unwrap();

    let due = s.due_actions(t(60)).await.unwrap();
    assert_eq!(
        due.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![early, other]
    );
    assert_eq!(due[0].job, "a");
    assert_eq!(due[0].action, "destroy-secret-id");
    assert_eq!(due[0].payload, r#"{"accessor":"abc"}"#);
    assert_eq!(
        (due[0].due_at, due[0].attempts, due[0].last_error.clone()),
        (t(10), 0, None)
    );
    assert_eq!(
        s.pending_actions("a")
            .await
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        vec![early, late],
        "pending whatever the due time"
    );

    s.retry_action(early, "vault answered 500", t(200))
        .await
        .unwrap();
    s.complete_action(other, t(61)).await.unwrap();
    assert!(s.due_actions(t(60)).await.unwrap().is_empty());
    assert!(s.pending_actions("b").await.unwrap().is_empty());

    let due = s.due_actions(t(200)).await.unwrap();
    assert_eq!(
        due.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![late, early]
    );
    let retried = &due[1];
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.due_at, t(200));
    assert_eq!(retried.last_error.as_deref(), Some("vault answered 500"));
    s.retry_action(early, "again", t(300)).await.unwrap();
    assert_eq!(s.pending_actions("a").await.unwrap()[1].attempts, 2);
}

fn alert(fingerprint: &str, status: AlertStatus) -> AlertRecord {
    AlertRecord {
        fingerprint: fingerprint.into(),
        name: "JobFailing".into(),
        job: "api".into(),
        severity: "critical".into(),
        status,
        summary: "job api failed 3 times in a row".into(),
        details: r#"{"failures":3}"#.into(),
        started_at: t(0),
        resolved_at: None,
        last_notified_at: Some(t(1)),
    }
}

async fn alerts_upsert_and_firing(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.alert("fp-1").await.unwrap(), None);
    let one = alert("fp-1", AlertStatus::Firing);
    let two = AlertRecord {
        started_at: t(50),
        severity: "warning".into(),
        ..alert("fp-2", AlertStatus::Firing)
    };
    s.upsert_alert(&two).await.unwrap();
    s.upsert_alert(&one).await.unwrap();
    assert_eq!(s.alert("fp-1").await.unwrap().as_ref(), Some(&one));
    assert_eq!(
        s.firing_alerts().await.unwrap(),
        vec![one.clone(), two.clone()]
    );

    let repeated = AlertRecord {
        last_notified_at: Some(t(4 * 3600)),
        ..one.clone()
    };
    s.upsert_alert(&repeated).await.unwrap();
    assert_eq!(s.alert("fp-1").await.unwrap().as_ref(), Some(&repeated));

    let resolved = AlertRecord {
        status: AlertStatus::Resolved,
        resolved_at: Some(t(5 * 3600)),
        ..repeated
    };
    s.upsert_alert(&resolved).await.unwrap();
    assert_eq!(s.alert("fp-1").await.unwrap(), Some(resolved));
    assert_eq!(s.firing_alerts().await.unwrap(), vec![two]);
}

async fn deliveries_enqueue_claim_mark(f: &Fixture) {
    let s = &f.store;
    s.upsert_alert(&alert("fp", AlertStatus::Firing))
        .await
        .unwrap();
    let enqueue = |sink: &str, kind, at| NewDelivery {
        fingerprint: "fp".into(),
        sink: sink.into(),
        kind,
        created_at: t(at),
        summary: format!("queued at {at}"),
        details: "{}".into(),
    };
    let mail = s
        .enqueue_delivery(&enqueue("mail", DeliveryKind::Firing, 0))
        .await
        .unwrap();
    let hook = s
        .enqueue_delivery(&enqueue("hook", DeliveryKind::Firing, 1))
        .await
        .unwrap();
    let later = s
        .enqueue_delivery(&enqueue("mail", DeliveryKind::Repeat, 100))
        .await
        .unwrap();
    assert_eq!(s.queued_deliveries().await.unwrap(), 3);

    // Only due ones, oldest first, each claim counted as an attempt.
    let claimed = s.claim_deliveries("w1", t(10), t(40), 5).await.unwrap();
    assert_eq!(
        claimed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![mail, hook]
    );
    let d = &claimed[0];
    assert_eq!(
        (d.fingerprint.as_str(), d.sink.as_str(), d.kind, d.state),
        ("fp", "mail", DeliveryKind::Firing, DeliveryState::Pending)
    );
    assert_eq!(
        (d.attempts, d.next_attempt_at, d.created_at),
        (1, t(0), t(0))
    );
    assert_eq!((d.last_error.clone(), d.sent_at), (None, None));

    // Claimed ones are leased: nobody else gets them before the lease ends.
    assert!(
        s.claim_deliveries("w2", t(20), t(50), 5)
            .await
            .unwrap()
            .is_empty()
    );

    s.mark_delivered(mail, t(21)).await.unwrap();
    s.mark_delivery_failed(hook, "webhook answered 502", t(60))
        .await
        .unwrap();
    assert_eq!(s.queued_deliveries().await.unwrap(), 2);
    assert!(
        s.claim_deliveries("w2", t(50), t(80), 5)
            .await
            .unwrap()
            .is_empty(),
        "hook waits"
    );

    let retry = s.claim_deliveries("w2", t(60), t(90), 1).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].id, hook);
    assert_eq!(retry[0].attempts, 2);
    assert_eq!(retry[0].next_attempt_at, t(60));
    assert_eq!(retry[0].last_error.as_deref(), Some("webhook answered 502"));

    // w2 "crashes" holding hook: after its lease, hook comes back (with `later`, now due).
    let again = s.claim_deliveries("w3", t(100), t(130), 5).await.unwrap();
    assert_eq!(
        again.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![hook, later]
    );
    s.mark_delivered(hook, t(101)).await.unwrap();
    s.mark_delivered(later, t(102)).await.unwrap();
    assert_eq!(s.queued_deliveries().await.unwrap(), 0);
    assert!(
        s.claim_deliveries("w3", t(1000), t(1030), 5)
            .await
            .unwrap()
            .is_empty()
    );

    let all = s.deliveries("fp").await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![mail, hook, later]
    );
    assert!(all.iter().all(|d| d.state == DeliveryState::Sent));
    assert_eq!(all[0].sent_at, Some(t(21)));
    assert_eq!(all[2].summary.as_deref(), Some("queued at 100"));
    assert_eq!(all[2].details.as_deref(), Some("{}"));
    assert_eq!((all[1].attempts, all[1].sent_at), (3, Some(t(101))));
    assert_eq!(all[2].kind, DeliveryKind::Repeat);
    assert!(s.deliveries("nothing").await.unwrap().is_empty());

    // A delivery must belong to a known alert.
    let orphan = NewDelivery {
        fingerprint: "unknown".into(),
        ..enqueue("mail", DeliveryKind::Resolved, 0)
    };
    assert!(matches!(
        s.enqueue_delivery(&orphan).await,
        Err(StoreError::Database(_))
    ));
}

async fn concurrent_claimers_never_share(f: &Fixture) {
    const N: usize = 60;
    let s = &f.store;
    s.upsert_alert(&alert("fp", AlertStatus::Firing))
        .await
        .unwrap();
    for i in 0..N {
        s.enqueue_delivery(&NewDelivery {
            fingerprint: "fp".into(),
            sink: format!("sink-{i}"),
            kind: DeliveryKind::Firing,
            created_at: t(i as i64 % 7),
            summary: "s".into(),
            details: "{}".into(),
        })
        .await
        .unwrap();
    }
    // Two handles stand for two processes, two workers each.
    let stores = [f.store.clone(), f.reopen().await];
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = stores[w % 2].clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store
                        .claim_deliveries(&format!("w{w}"), t(10), t(600), 4)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut total = 0;
    for worker in workers {
        for id in worker.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "delivery {id} claimed twice");
        }
    }
    assert_eq!((total, seen.len()), (N, N));
    assert_eq!(
        s.queued_deliveries().await.unwrap(),
        N as u64,
        "claimed, not sent"
    );
}

/// One sink's claims: only its own deliveries, and an alert's notifications strictly in the
/// order they were queued, whatever their retry times; sent ones are pruned by age.
async fn sink_claims_keep_order_and_prune(f: &Fixture) {
    let s = &f.store;
    for fp in ["fa", "fb"] {
        s.upsert_alert(&alert(fp, AlertStatus::Firing))
            .await
            .unwrap();
    }
    let q = |fp: &str, sink: &str, kind, at| NewDelivery {
        fingerprint: fp.into(),
        sink: sink.into(),
        kind,
        created_at: t(at),
        summary: String::new(),
        details: "{}".into(),
    };
    let a_firing = s
        .enqueue_delivery(&q("fa", "mail", DeliveryKind::Firing, 0))
        .await
        .unwrap();
    let a_resolved = s
        .enqueue_delivery(&q("fa", "mail", DeliveryKind::Resolved, 5))
        .await
        .unwrap();
    let b_firing = s
        .enqueue_delivery(&q("fb", "mail", DeliveryKind::Firing, 6))
        .await
        .unwrap();
    let hook = s
        .enqueue_delivery(&q("fa", "hook", DeliveryKind::Firing, 0))
        .await
        .unwrap();

    // Only the oldest pending notification of each alert, only this sink's.
    let got = s
        .claim_sink_deliveries("mail", "w", t(10), t(20), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![a_firing, b_firing]
    );
    // The firing one fails and waits; the resolved one, though due, must not overtake it.
    s.mark_delivery_failed(a_firing, "smtp down", t(100))
        .await
        .unwrap();
    s.mark_delivered(b_firing, t(11)).await.unwrap();
    assert!(
        s.claim_sink_deliveries("mail", "w", t(50), t(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let got = s
        .claim_sink_deliveries("mail", "w", t(100), t(110), 10)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a_firing]);
    assert_eq!(got[0].attempts, 2);
    s.mark_delivered(a_firing, t(101)).await.unwrap();
    let got = s
        .claim_sink_deliveries("mail", "w", t(102), t(110), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![a_resolved]
    );
    s.mark_delivered(a_resolved, t(103)).await.unwrap();
    let got = s
        .claim_sink_deliveries("hook", "w", t(102), t(110), 10)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![hook]);

    // Pruning forgets sent deliveries older than the cut, never pending ones.
    assert_eq!(s.prune_sent_deliveries(t(101)).await.unwrap(), 1);
    assert_eq!(s.prune_sent_deliveries(t(1000)).await.unwrap(), 2);
    let left: Vec<i64> = s
        .deliveries("fa")
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![hook], "the claimed, unsent one stays");
}

async fn ping_and_backend(f: &Fixture) {
    f.store.ping().await.unwrap();
    let expected = match f.db {
        Db::Sqlite { .. } => "sqlite",
        Db::Postgres { .. } => "postgres",
    };
    assert_eq!(f.store.backend(), expected);
}

/// Instantiates each suite function once per backend.
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Fixture::sqlite().await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Fixture::postgres().await).await;
                }
            )+
        }
    };
}

store_tests!(
    ping_and_backend,
    job_state_round_trip,
    runs_start_finish_recent,
    end_runs_record_state_and_unlock_at_once,
    lock_and_start_run_is_all_or_nothing,
    close_interrupted_runs,
    lock_exclusivity_expiry_renew_unlock,
    concurrent_try_lock_has_one_winner,
    rotations_state_machine,
    snapshots_newest_first,
    actions_due_pending_complete_retry,
    alerts_upsert_and_firing,
    deliveries_enqueue_claim_mark,
    concurrent_claimers_never_share,
    sink_claims_keep_order_and_prune,
);

// ---- what only one backend has -----------------------------------------------------------------

mod sqlite_file {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use sqlx::Connection;
    use vault_steward::store::sqlite::SqliteStore;
    use vault_steward::store::{self, Store, StoreError};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn file_is_private_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/state.db");
        let url = format!("sqlite://{}", path.display());
        let store = store::open(&url, None).await.unwrap();
        store.ping().await.unwrap();

        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            mode(path.parent().unwrap()),
            0o700,
            "created parent is private"
        );
        let wal = dir.path().join("nested/dir/state.db-wal");
        assert!(wal.exists(), "WAL file present while open");
        assert_eq!(mode(&wal), 0o600);

        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[tokio::test]
    async fn loose_existing_file_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[tokio::test]
    async fn second_daemon_on_one_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let url = format!("sqlite://{}", path.display());

        let daemon = store::open_exclusive(&url, None, &Default::default())
            .await
            .unwrap();
        let second = SqliteStore::open_exclusive(&url).await.unwrap_err();
        let message = second.to_string();
        assert!(matches!(second, StoreError::InUse(_)), "{second:?}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!(
                "another vault-steward process (pid {})",
                std::process::id()
            )),
            "{message}"
        );
        assert_eq!(mode(&dir.path().join("state.db.lock")), 0o600);

        // Short CLI commands still open the file and share its per-job locks with the daemon.
        let cli = SqliteStore::open(&url).await.unwrap();
        let now = chrono::Utc::now();
        let later = now + chrono::Duration::minutes(5);
        assert!(daemon.try_lock("api", "daemon", now, later).await.unwrap());
        assert!(!cli.try_lock("api", "cli", now, later).await.unwrap());

        // The lock goes with the store.
        drop(daemon);
        SqliteStore::open_exclusive(&url).await.unwrap();
    }

    #[tokio::test]
    async fn memory_and_bad_urls() {
        let memory = store::open("sqlite::memory:", None).await.unwrap();
        memory.ping().await.unwrap();
        assert!(matches!(
            store::open("mysql://root@localhost/x", None).await,
            Err(StoreError::Url(_))
        ));
    }
}

mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn password_is_never_shown() {
        let f = Fixture::postgres().await;
        let Db::Postgres { url, password, .. } = &f.db else {
            unreachable!()
        };
        let store =
            store::postgres::PostgresStore::open(url, password.as_ref(), &Default::default())
                .await
                .unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("PostgresStore"), "{debug}");
        if let Some(password) = password {
            assert!(!debug.contains(password.expose_secret()), "{debug}");

            // A wrong password is refused (on the scram cluster), and not echoed.
            let wrong = SecretString::from("wrong-canary-password");
            let err = store::postgres::PostgresStore::open(url, Some(&wrong), &Default::default())
                .await
                .unwrap_err();
            assert!(!format!("{err} {err:?}").contains("wrong-canary-password"));
        }

        // A password inside the URL is redacted from Debug too.
        let in_url = password
            .as_ref()
            .map(|p| p.expose_secret().to_string())
            .unwrap_or_else(|| "in-url-canary".into());
        let mut with_password = url::Url::parse(url).unwrap();
        with_password.set_password(Some(&in_url)).unwrap();
        let store =
            store::postgres::PostgresStore::open(with_password.as_str(), None, &Default::default())
                .await
                .unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains(&in_url), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }
}
