//! What `postgres` and `mysql` jobs share: the rotation of a database login's password through
//! the persisted [`protocol`](super::protocol), the KV layout, password generation and the two
//! strategies. The engine-specific part — how to log in, how to change a password — is a
//! [`DbEngine`] ([`super::postgres`], [`super::mysql`]).
//!
//! KV layout: consumers read `username`, `password`, `host`, `port`, `database` and `url` at the
//! job's `path` (other fields there are carried over). The admin login comes from `admin_path`
//! (`username`, `password`, `host`, `port`, `database`, or a `url`; fields beside a `url` win).
//! While a rotation is in flight its new password waits at `pending_path`, a path consumers do
//! not read (default `<first segment of path>/vault-steward/pending/<job>`), tagged with the
//! rotation's id; it is deleted when the rotation ends. The state store keeps only the steps,
//! the target role, versions and paths — never a password.
//!
//! The steps (each recorded before its side effect, each safe to repeat):
//! 1. `pending` — a fresh password from the OS CSPRNG is written to `pending_path` (a resumed
//!    step reuses the one tagged with this rotation).
//! 2. `apply` — the admin sets it on the target role (`ALTER ROLE` / `ALTER USER`).
//! 3. `test` — a login as the target role with it.
//! 4. `commit` — the consumers' secret is written with check-and-set on the version read when
//!    the rotation began (a resumed step that finds its own write there goes on), plus the
//!    rotation `custom_metadata`.
//! 5. `cleanup` — the pending secret is deleted; the rotation is finished.
//!
//! A database that refuses the new password (missing role, policy, privilege) or a login that
//! fails with it ends the rotation as abandoned (`abandon` step): the pending password is
//! deleted, so the next try starts with a fresh one. If the role's password may already have
//! changed and the consumers' secret points at that role (strategy `single`, or a hand-written
//! secret), the consumers' current password is put back on the role first (unless it still logs
//! in), so what consumers read keeps working; before that, the consumers' secret is rewritten
//! unchanged with check-and-set (a fence), so that a commit of this rotation still in flight
//! cannot land afterwards. Should the role refuse the consumers' password back, the pending
//! password may be the only one it takes: it is kept, the rotation stays open at `abandon` and
//! `RotationStuck` (critical) fires until a retry succeeds. A resumed `apply` first tries a
//! login with the pending password and goes on if it works (the ALTER ran before the crash). A
//! secret written by hand during the rotation is never overwritten (`ConcurrentWrite`); the
//! hand-written value wins. An unreachable database or Vault, or a statement the server gave up
//! on (timeout, lock timeout, deadlock, serialization failure), leaves the rotation open at its
//! step, to be resumed by the next run or the next start.
//!
//! Strategies: `single` changes the one role's password in place (consumers holding the old one
//! fail until they re-read KV — between `apply` and `commit` the KV value is already refused);
//! `alternating` sets the new password on the role that KV does *not* point at, then points KV
//! at it, so the credential consumers hold keeps working until the rotation after next.

use async_trait::async_trait;
use chrono::Utc;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::api_key::CONCURRENT_WRITE;
use super::protocol::{self, Protocol, Rotation};
use super::rotation_metadata;
use crate::alert::ROTATION_STUCK;
use crate::config::{DatabaseConfig, DbStrategy};
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::store::RotationStatus;
use crate::vault::{KvData, KvSecret, VaultError};

const STEP_PENDING: &str = "pending";
const STEP_APPLY: &str = "apply";
const STEP_TEST: &str = "test";
const STEP_COMMIT: &str = "commit";
const STEP_CLEANUP: &str = "cleanup";
const STEP_ABANDON: &str = "abandon";

/// The protocol's steps in order (the last one only when a rotation is given up).
pub const STEPS: [&str; 6] = [
    STEP_PENDING,
    STEP_APPLY,
    STEP_TEST,
    STEP_COMMIT,
    STEP_CLEANUP,
    STEP_ABANDON,
];

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one statement may take.
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why talking to a database failed. Messages name hosts, roles and the server's own error
/// text (with any password scrubbed out), never a secret.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No answer (refused, timeout, TLS, I/O, server shutting down): nothing is known to have
    /// changed; try again later.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The server refused the login (wrong password, no such role, not permitted to log in).
    #[error("login refused: {0}")]
    LoginRefused(String),
    /// The server refused a statement (missing role, privilege, password policy); it had no
    /// effect.
    #[error("{0}")]
    Refused(String),
    /// The admin secret or the settings cannot describe a connection.
    #[error("{0}")]
    Setup(String),
}

/// Where the database is, as consumers and the steward see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The database consumers use (and the test login connects to).
    pub database: Option<String>,
}

/// The admin login from `admin_path`.
pub struct AdminLogin {
    /// The secret's `url`, when it has one (engines take TLS and other options from it).
    pub url: Option<SecretString>,
    pub username: String,
    pub password: Option<SecretString>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
}

impl std::fmt::Debug for AdminLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminLogin")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .finish()
    }
}

/// One database engine: how to log in and how to change a role's password.
#[async_trait]
pub trait DbEngine: Send + Sync + 'static {
    /// The job kind (`postgres`, `mysql`).
    const KIND: &'static str;
    /// The URL scheme of the consumers' `url`.
    const SCHEME: &'static str;
    const DEFAULT_PORT: u16;
    /// The database a login uses when neither the job nor the admin secret names one.
    const DEFAULT_DATABASE: Option<&'static str>;

    /// Logs in as the admin and logs out (for `check --connect` and before a rotation starts).
    async fn check_admin(&self, admin: &AdminLogin, at: &Endpoint) -> Result<(), DbError>;

    /// Logs in as the admin and sets `user`'s password.
    async fn set_password(
        &self,
        admin: &AdminLogin,
        at: &Endpoint,
        user: &str,
        password: &SecretString,
    ) -> Result<(), DbError>;

    /// Logs in as `user` with `password`.
    async fn login(
        &self,
        at: &Endpoint,
        user: &str,
        password: &SecretString,
    ) -> Result<(), DbError>;
}

/// What the store keeps about a database rotation (no secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Detail {
    /// The role whose password changes.
    target: String,
    strategy: String,
    /// The consumers' KV version when the rotation began: the commit's check-and-set.
    consumer_version: u64,
    pending_path: String,
    /// Set once the target's password may have changed and abandoning must put the consumers'
    /// password back on it (when KV points consumers at the target).
    #[serde(default)]
    restore: bool,
    /// Why the rotation is being abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Rotates one database login's password; `E` says which database.
pub struct DatabaseRotator<E: DbEngine> {
    job: String,
    config: DatabaseConfig,
    pending_path: String,
    engine: E,
}

/// The outcome of putting the consumers' password back on the target.
enum Restore {
    /// Nothing (more) to do; what was done, for the run record.
    Done(Option<String>),
    /// The target refused it: it may hold the pending password only.
    Refused(String),
}

/// The outcome of the commit step.
enum Commit {
    Done,
    /// The consumers' secret was written by someone else meanwhile.
    Conflict(String),
    /// Vault refused the write for good (policy, not a KV v2 path).
    Refused(String),
}

impl<E: DbEngine> DatabaseRotator<E> {
    pub fn new(job: &str, config: DatabaseConfig, engine: E) -> Self {
        let pending_path = config
            .pending_path
            .clone()
            .unwrap_or_else(|| default_pending_path(&config.path, job));
        DatabaseRotator {
            job: job.to_string(),
            config,
            pending_path,
            engine,
        }
    }

    fn protocol(&self, ctx: &JobContext) -> Protocol {
        Protocol::new(ctx.store.clone(), &self.job, E::KIND)
    }

    fn strategy_name(&self) -> &'static str {
        match self.config.strategy {
            DbStrategy::Single => "single",
            DbStrategy::Alternating => "alternating",
        }
    }

    /// The role the next rotation changes: the one user (`single`), or the one KV does not
    /// point at (`alternating`).
    fn next_target(&self, current: Option<&KvSecret>) -> String {
        let names = &self.config.usernames;
        match (self.config.strategy, names.as_slice()) {
            (DbStrategy::Alternating, [a, b, ..]) => {
                let now = current.and_then(|c| field(&c.data, "username"));
                if now.as_deref() == Some(a.as_str()) {
                    b.clone()
                } else {
                    a.clone()
                }
            }
            (_, [only, ..]) => only.clone(),
            (_, []) => String::new(),
        }
    }

    fn inspection(
        &self,
        current: Option<&KvSecret>,
        open: Option<&Rotation<Detail>>,
    ) -> Inspection {
        let mut summary = match current {
            Some(s) => format!(
                "{} version {} (user {}) written {}",
                self.config.path,
                s.version,
                field(&s.data, "username").unwrap_or_else(|| "?".into()),
                s.created_time.to_rfc3339()
            ),
            None => format!("no secret at {} yet", self.config.path),
        };
        if let Some(r) = open {
            summary.push_str(&format!(
                "; rotation {} of {} open at step {}",
                r.id, r.detail.target, r.step
            ));
        }
        Inspection {
            secret_changed_at: current.map(|s| s.created_time),
            secret_version: current.map(|s| s.version as i64),
            summary,
        }
    }

    /// Reads and parses the admin login.
    async fn admin(&self, ctx: &JobContext) -> Result<(AdminLogin, Endpoint), JobError> {
        let path = self.config.admin_path.as_str();
        let secret =
            ctx.kv.kv_read(path).await?.ok_or_else(|| {
                JobError::Permanent(format!("no admin login at {path} (admin_path)"))
            })?;
        let admin = AdminLogin::from_kv(&secret.data)
            .map_err(|e| JobError::Permanent(format!("admin login at {path}: {e}")))?;
        let endpoint = self
            .endpoint(&admin)
            .map_err(|e| JobError::Permanent(format!("{e} (job {})", self.job)))?;
        Ok((admin, endpoint))
    }

    /// The job's `host`/`port`/`database` win; the admin secret fills in what they leave out.
    fn endpoint(&self, admin: &AdminLogin) -> Result<Endpoint, String> {
        let host = self
            .config
            .host
            .clone()
            .or_else(|| admin.host.clone())
            .ok_or_else(|| {
                format!(
                    "no database host: set `host` in the job or in the admin secret at {}",
                    self.config.admin_path
                )
            })?;
        Ok(Endpoint {
            host,
            port: self.config.port.or(admin.port).unwrap_or(E::DEFAULT_PORT),
            database: self
                .config
                .database
                .clone()
                .or_else(|| admin.database.clone())
                .or_else(|| E::DEFAULT_DATABASE.map(str::to_string)),
        })
    }

    fn db_failure(&self, what: &str, at: &Endpoint, e: DbError) -> JobError {
        let text = format!("{what} ({} at {}:{}): {e}", E::KIND, at.host, at.port);
        match e {
            DbError::Unreachable(_) => JobError::Transient(text),
            _ => JobError::Permanent(text),
        }
    }

    /// Proves, before anything changes, that the token may do every KV operation a rotation
    /// needs, so that a policy gap fails the run up front instead of halfway.
    async fn check_access(&self, ctx: &JobContext, consumer_exists: bool) -> Result<(), JobError> {
        let mut missing = Vec::new();
        let write = if consumer_exists { "update" } else { "create" };
        // The rotation metadata is set after the write, when the metadata exists: `update`.
        for (path, data_needs, metadata_needs) in [
            (
                self.config.path.as_str(),
                vec!["read", write],
                vec!["read", "update"],
            ),
            (
                self.pending_path.as_str(),
                vec!["read", "create", "update"],
                vec!["read", "delete"],
            ),
        ] {
            let caps = match ctx.kv.kv_capabilities(path).await {
                Ok(c) => c,
                // Without sys/capabilities-self (a token without the default policy) the steps
                // themselves find out; a refused commit is rolled back.
                Err(e @ (VaultError::PermissionDenied { .. } | VaultError::Api { .. })) => {
                    tracing::debug!(job = %self.job, error = %e, "cannot ask Vault for the token's capabilities; skipping the check");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            for need in data_needs {
                if !caps.data_allows(need) {
                    missing.push(format!("{need} on the data of {path}"));
                }
            }
            for need in metadata_needs {
                if !caps.metadata_allows(need) {
                    missing.push(format!("{need} on the metadata of {path}"));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(JobError::Permanent(format!(
                "the Vault token's policy does not allow {}; nothing was changed",
                missing.join(", ")
            )))
        }
    }

    /// The pending password of `rotation`, if the pending secret is still the one it wrote.
    async fn read_pending(
        &self,
        ctx: &JobContext,
        rotation: &Rotation<Detail>,
    ) -> Result<Option<SecretString>, JobError> {
        let Some(secret) = ctx.kv.kv_read(&rotation.detail.pending_path).await? else {
            return Ok(None);
        };
        let ours = field(&secret.data, "rotation").as_deref() == Some(&rotation.id.to_string())
            && field(&secret.data, "job").as_deref() == Some(self.job.as_str())
            && field(&secret.data, "username").as_deref() == Some(rotation.detail.target.as_str());
        Ok(if ours {
            secret.data.get("password").cloned()
        } else {
            None
        })
    }

    /// Step `pending`: a fresh password at the pending path, unless this rotation's is there.
    async fn ensure_pending(
        &self,
        ctx: &JobContext,
        rotation: &Rotation<Detail>,
    ) -> Result<(), JobError> {
        let path = rotation.detail.pending_path.as_str();
        // The version is read before looking for this rotation's password, so that the write
        // below cannot replace one that another instance (a deposed leader, or one whose answer
        // was lost) wrote meanwhile and may already have set on the role.
        let cas = ctx
            .kv
            .kv_metadata(path)
            .await?
            .map(|m| m.current_version)
            .unwrap_or(0);
        if self.read_pending(ctx, rotation).await?.is_some() {
            return Ok(());
        }
        let password =
            generate_password(self.config.password_length, &self.config.password_alphabet)
                .map_err(JobError::Transient)?;
        let mut data = KvData::new();
        data.insert("password".into(), password);
        data.insert("username".into(), rotation.detail.target.clone().into());
        data.insert("rotation".into(), rotation.id.to_string().into());
        data.insert("job".into(), self.job.clone().into());
        match ctx.kv.kv_write(path, &data, cas).await {
            Ok(_) => Ok(()),
            Err(VaultError::CasMismatch { .. }) => Err(JobError::Transient(format!(
                "{path} was written meanwhile (by another instance?); trying again"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Step `commit`: the consumers' secret, with check-and-set on the version read when the
    /// rotation began.
    async fn commit(
        &self,
        ctx: &JobContext,
        rotation: &Rotation<Detail>,
        password: &SecretString,
        at: &Endpoint,
    ) -> Result<Commit, JobError> {
        let path = self.config.path.as_str();
        let target = rotation.detail.target.as_str();
        let expected = rotation.detail.consumer_version;
        let current = ctx.kv.kv_read(path).await?;
        let version = match &current {
            Some(c) => c.version,
            None => ctx
                .kv
                .kv_metadata(path)
                .await?
                .map(|m| m.current_version)
                .unwrap_or(0),
        };
        let ours = current.as_ref().is_some_and(|c| {
            c.version > expected
                && field(&c.data, "username").as_deref() == Some(target)
                && c.data
                    .get("password")
                    .is_some_and(|p| p.expose_secret() == password.expose_secret())
        });
        if !ours {
            if version != expected {
                return Ok(Commit::Conflict(format!(
                    "{path} is at version {version}, not {expected} as when the rotation began: someone else wrote it"
                )));
            }
            let data = consumer_data(
                current.map(|c| c.data).unwrap_or_default(),
                E::SCHEME,
                target,
                password,
                at,
            )
            .map_err(JobError::Permanent)?;
            match ctx.kv.kv_write(path, &data, expected).await {
                Ok(_) => {}
                Err(VaultError::CasMismatch { .. }) => {
                    return Ok(Commit::Conflict(format!(
                        "check-and-set on version {expected} of {path} failed: someone else wrote it"
                    )));
                }
                Err(e @ (VaultError::PermissionDenied { .. } | VaultError::NotKvV2 { .. })) => {
                    return Ok(Commit::Refused(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
            crate::failpoint::hit("rotation-commit-written");
        }
        let existing = ctx
            .kv
            .kv_metadata(path)
            .await?
            .map(|m| m.custom_metadata)
            .unwrap_or_default();
        ctx.kv
            .kv_set_custom_metadata(path, &rotation_metadata(&existing, &self.job, Utc::now()))
            .await?;
        Ok(Commit::Done)
    }

    /// Drives an open rotation from its recorded step to its end; `fresh` when this run began
    /// it (otherwise it is rolled forward after a crash or a failed run).
    async fn drive(
        &self,
        ctx: &JobContext,
        proto: &Protocol,
        mut rotation: Rotation<Detail>,
        fresh: bool,
    ) -> Result<RunReport, JobError> {
        let resumed_from = rotation.step.clone();
        // Whether the step at hand was recorded by an earlier run: its side effect may have
        // happened already (only the first step a resumed run looks at).
        let mut resumed = !fresh;
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let target = rotation.detail.target.clone();
            match rotation.step.as_str() {
                STEP_PENDING => {
                    if !self.config.usernames.contains(&target) {
                        let reason = format!(
                            "{target} is no longer one of the job's usernames; nothing was changed"
                        );
                        return self.abandon(ctx, proto, rotation, reason, false).await;
                    }
                    self.ensure_pending(ctx, &rotation).await?;
                    protocol::done(STEP_PENDING);
                    proto.advance(&mut rotation, STEP_APPLY).await?;
                }
                STEP_APPLY => {
                    let Some(password) = self.read_pending(ctx, &rotation).await? else {
                        let reason = format!(
                            "the pending password at {} is gone",
                            rotation.detail.pending_path
                        );
                        return self.abandon(ctx, proto, rotation, reason, true).await;
                    };
                    let (admin, at) = self.admin(ctx).await?;
                    // A resumed step may find its ALTER done (a crash after it, or an answer
                    // lost after the commit): then the role already takes the pending password,
                    // and setting it again could be refused (a password-reuse policy).
                    let applied = resumed
                        && match self.engine.login(&at, &target, &password).await {
                            Ok(()) => true,
                            Err(e @ DbError::Unreachable(_)) => {
                                return Err(self.db_failure(
                                    &format!("testing the pending password of {target}"),
                                    &at,
                                    e,
                                ));
                            }
                            Err(_) => false,
                        };
                    match if applied {
                        Ok(())
                    } else {
                        self.engine
                            .set_password(&admin, &at, &target, &password)
                            .await
                    } {
                        Ok(()) => {}
                        Err(DbError::Refused(e)) => {
                            let reason =
                                format!("{} refused the new password for {target}: {e}", E::KIND);
                            // After a resume the role's password may be anything an earlier
                            // try left: put the consumers' one back.
                            return self.abandon(ctx, proto, rotation, reason, resumed).await;
                        }
                        Err(e) => {
                            return Err(self.db_failure(
                                &format!(
                                    "setting the new password of {target} as admin {} from {}",
                                    admin.username, self.config.admin_path
                                ),
                                &at,
                                e,
                            ));
                        }
                    }
                    protocol::done(STEP_APPLY);
                    // The riskiest moment (with `single`, KV's password is already refused):
                    // tests/ha.rs holds a leader here and SIGKILLs it.
                    crate::failpoint::pause("rotation-apply-done").await;
                    rotation.detail.restore = true;
                    proto.advance(&mut rotation, STEP_TEST).await?;
                }
                STEP_TEST => {
                    let Some(password) = self.read_pending(ctx, &rotation).await? else {
                        let reason = format!(
                            "the pending password at {} is gone",
                            rotation.detail.pending_path
                        );
                        return self.abandon(ctx, proto, rotation, reason, true).await;
                    };
                    let (_, at) = self.admin(ctx).await?;
                    match self.engine.login(&at, &target, &password).await {
                        Ok(()) => {}
                        Err(e @ DbError::Unreachable(_)) => {
                            return Err(self.db_failure(
                                &format!("testing the new password of {target}"),
                                &at,
                                e,
                            ));
                        }
                        Err(e) => {
                            let reason =
                                format!("a login as {target} with the new password failed: {e}");
                            return self.abandon(ctx, proto, rotation, reason, true).await;
                        }
                    }
                    protocol::done(STEP_TEST);
                    proto.advance(&mut rotation, STEP_COMMIT).await?;
                }
                STEP_COMMIT => {
                    let Some(password) = self.read_pending(ctx, &rotation).await? else {
                        let reason = format!(
                            "the pending password at {} is gone",
                            rotation.detail.pending_path
                        );
                        return self.abandon(ctx, proto, rotation, reason, true).await;
                    };
                    let (_, at) = self.admin(ctx).await?;
                    match self.commit(ctx, &rotation, &password, &at).await? {
                        Commit::Done => {}
                        Commit::Refused(e) => {
                            let reason = format!("writing {}: {e}", self.config.path);
                            return self.abandon(ctx, proto, rotation, reason, true).await;
                        }
                        Commit::Conflict(detail) => {
                            return self.conflict(ctx, proto, rotation, detail).await;
                        }
                    }
                    protocol::done(STEP_COMMIT);
                    proto.advance(&mut rotation, STEP_CLEANUP).await?;
                }
                STEP_CLEANUP => {
                    self.delete_pending(ctx, &rotation).await?;
                    protocol::done(STEP_CLEANUP);
                    proto.finish(&rotation, RotationStatus::Finished).await?;
                    let current = ctx.kv.kv_read(&self.config.path).await?;
                    let version = current.as_ref().map(|c| c.version).unwrap_or(0);
                    let detail = if fresh {
                        format!(
                            "rotated {target}: {} version {version} (rotation {})",
                            self.config.path, rotation.id
                        )
                    } else {
                        format!(
                            "rolled rotation {} of {target} forward from step {resumed_from}: {} version {version}",
                            rotation.id, self.config.path
                        )
                    };
                    let mut inspection = self.inspection(current.as_ref(), None);
                    inspection.summary = detail.clone();
                    return Ok(RunReport {
                        work: Work::Done,
                        inspection,
                        alerts: vec![
                            self.conflict_signal(false, &detail),
                            self.stuck_signal(false, &detail),
                        ],
                        detail,
                    });
                }
                STEP_ABANDON => return self.finish_abandon(ctx, proto, rotation).await,
                other => {
                    let reason = format!("unknown step `{other}` recorded");
                    return self.abandon(ctx, proto, rotation, reason, true).await;
                }
            }
            resumed = false;
        }
    }

    /// Gives a rotation up: records why, then [`Self::finish_abandon`].
    async fn abandon(
        &self,
        ctx: &JobContext,
        proto: &Protocol,
        mut rotation: Rotation<Detail>,
        reason: String,
        restore: bool,
    ) -> Result<RunReport, JobError> {
        tracing::warn!(job = %self.job, rotation = rotation.id, step = %rotation.step, reason = %reason, "abandoning the rotation");
        rotation.detail.restore |= restore;
        rotation.detail.reason = Some(reason);
        proto.advance(&mut rotation, STEP_ABANDON).await?;
        self.finish_abandon(ctx, proto, rotation).await
    }

    /// Step `abandon`: put the consumers' password back on the target if needed, delete the
    /// pending password (so the next try starts afresh) and close the rotation. Fails the run
    /// with the reason. When the target refuses the consumers' password back, the pending
    /// password may be the only one it takes: it is kept, the rotation stays open and
    /// `RotationStuck` fires.
    async fn finish_abandon(
        &self,
        ctx: &JobContext,
        proto: &Protocol,
        rotation: Rotation<Detail>,
    ) -> Result<RunReport, JobError> {
        let reason = rotation
            .detail
            .reason
            .clone()
            .unwrap_or_else(|| "abandoned".into());
        let restored = if rotation.detail.restore {
            match self.restore_current(ctx, &rotation).await? {
                Restore::Refused(why) => return Err(self.stuck(&rotation, &reason, &why, vec![])),
                Restore::Done(done) => done,
            }
        } else {
            None
        };
        self.delete_pending(ctx, &rotation).await?;
        protocol::done(STEP_ABANDON);
        proto.finish(&rotation, RotationStatus::Abandoned).await?;
        let text = format!(
            "{reason}; rotation {} abandoned{}, the next try uses a fresh password",
            rotation.id,
            restored.map(|r| format!(", {r}")).unwrap_or_default()
        );
        let resolved = self.stuck_signal(false, &text);
        Err(JobError::WithAlerts {
            error: Box::new(JobError::Permanent(text)),
            alerts: vec![resolved],
        })
    }

    /// A hand-written consumer secret won the race: it stays, and the target gets its password
    /// back if KV points at it.
    async fn conflict(
        &self,
        ctx: &JobContext,
        proto: &Protocol,
        mut rotation: Rotation<Detail>,
        detail: String,
    ) -> Result<RunReport, JobError> {
        tracing::warn!(job = %self.job, rotation = rotation.id, "{detail}");
        rotation.detail.restore = true;
        rotation.detail.reason = Some(detail.clone());
        proto.advance(&mut rotation, STEP_ABANDON).await?;
        let restored = match self.restore_current(ctx, &rotation).await? {
            Restore::Refused(why) => {
                let conflict = self.conflict_signal(true, &detail);
                return Err(self.stuck(&rotation, &detail, &why, vec![conflict]));
            }
            Restore::Done(done) => done,
        };
        self.delete_pending(ctx, &rotation).await?;
        protocol::done(STEP_ABANDON);
        proto.finish(&rotation, RotationStatus::Abandoned).await?;
        let detail = format!(
            "{detail}; the hand-written version counts as the rotation{}",
            restored.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        let current = ctx.kv.kv_read(&self.config.path).await?;
        Ok(RunReport {
            work: Work::Nothing,
            inspection: self.inspection(current.as_ref(), None),
            alerts: vec![
                self.conflict_signal(true, &detail),
                self.stuck_signal(false, &detail),
            ],
            detail,
        })
    }

    /// The failure of a rotation that can go neither forward nor back: the pending password
    /// stays where it is (the target may hold it and nothing else), the rotation stays open at
    /// `abandon` and is retried, and `RotationStuck` pages.
    fn stuck(
        &self,
        rotation: &Rotation<Detail>,
        reason: &str,
        why: &str,
        mut alerts: Vec<AlertSignal>,
    ) -> JobError {
        let text = format!(
            "{reason}; rotation {} cannot be abandoned: {why}. The pending password stays at {} (the role may hold it) and the rotation stays open until a human fixes the role",
            rotation.id, rotation.detail.pending_path
        );
        tracing::error!(job = %self.job, rotation = rotation.id, "{text}");
        alerts.push(self.stuck_signal(true, &text));
        JobError::WithAlerts {
            error: Box::new(JobError::Permanent(text)),
            alerts,
        }
    }

    /// If the consumers' secret points at the rotation's target, makes sure the password it
    /// holds logs in again (setting it on the target when it does not). Returns what was done,
    /// for the run record, or why the target refused it.
    ///
    /// First the consumers' secret is fenced: while it is still at the version the rotation
    /// began from, it is written again unchanged with check-and-set on that version, so that a
    /// commit of this rotation still in flight (a paused or deposed instance, a write whose
    /// answer was lost) can no longer land after the role got the old password back.
    async fn restore_current(
        &self,
        ctx: &JobContext,
        rotation: &Rotation<Detail>,
    ) -> Result<Restore, JobError> {
        let target = rotation.detail.target.as_str();
        let path = self.config.path.as_str();
        let Some(current) = ctx.kv.kv_read(path).await? else {
            return Ok(Restore::Done(None));
        };
        if current.version == rotation.detail.consumer_version {
            crate::failpoint::hit("rotation-before-fence");
            match ctx.kv.kv_write(path, &current.data, current.version).await {
                Ok(_) => {}
                Err(VaultError::CasMismatch { .. }) => {
                    return Err(JobError::Transient(format!(
                        "{path} changed while the abandoned rotation fenced it; trying again"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if field(&current.data, "username").as_deref() != Some(target) {
            return Ok(Restore::Done(None));
        }
        let Some(password) = current.data.get("password") else {
            return Ok(Restore::Done(None));
        };
        let (admin, at) = self.admin(ctx).await?;
        // Setting a password the role already has can be refused (a reuse policy): look first.
        match self.engine.login(&at, target, password).await {
            Ok(()) => {
                return Ok(Restore::Done(Some(format!(
                    "the password of {path} version {} still logs in as {target}",
                    current.version
                ))));
            }
            Err(e @ DbError::Unreachable(_)) => {
                return Err(self.db_failure(
                    &format!(
                        "testing the password of {path} as {target} (the rotation stays open)"
                    ),
                    &at,
                    e,
                ));
            }
            Err(_) => {}
        }
        match self
            .engine
            .set_password(&admin, &at, target, password)
            .await
        {
            Ok(()) => {}
            Err(DbError::Refused(e)) => {
                tracing::error!(job = %self.job, target, error = %e, "cannot put the consumers' password back on the role");
                return Ok(Restore::Refused(format!(
                    "putting the password of {path} version {} back on {target} was refused: {e}",
                    current.version
                )));
            }
            Err(e) => {
                return Err(self.db_failure(
                    &format!(
                        "putting the password of {path} version {} back on {target} (the rotation stays open until it succeeds)",
                        current.version
                    ),
                    &at,
                    e,
                ));
            }
        }
        let check = match self.engine.login(&at, target, password).await {
            Ok(()) => "and it logs in".to_string(),
            Err(e) => {
                tracing::error!(job = %self.job, target, error = %e, "the consumers' password does not log in after putting it back");
                format!("but a login with it failed: {e}")
            }
        };
        Ok(Restore::Done(Some(format!(
            "the password of {path} version {} was put back on {target} {check}",
            current.version
        ))))
    }

    async fn delete_pending(
        &self,
        ctx: &JobContext,
        rotation: &Rotation<Detail>,
    ) -> Result<(), JobError> {
        match ctx.kv.kv_delete_all(&rotation.detail.pending_path).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_retryable() => Err(e.into()),
            // A policy without delete leaves a copy behind at a path only the steward reads;
            // not worth keeping the rotation open forever.
            Err(e) => {
                tracing::warn!(job = %self.job, path = %rotation.detail.pending_path, error = %e, "could not delete the pending password");
                Ok(())
            }
        }
    }

    fn stuck_signal(&self, firing: bool, detail: &str) -> AlertSignal {
        AlertSignal {
            name: ROTATION_STUCK,
            firing,
            severity: Severity::Critical,
            summary: if firing {
                format!(
                    "the rotation of {} can go neither forward nor back without a human",
                    self.config.path
                )
            } else {
                format!("no rotation of {} is stuck", self.config.path)
            },
            details: serde_json::json!({
                "path": self.config.path,
                "pending_path": self.pending_path,
                "detail": detail,
            }),
        }
    }

    fn conflict_signal(&self, firing: bool, detail: &str) -> AlertSignal {
        AlertSignal {
            name: CONCURRENT_WRITE,
            firing,
            severity: Severity::Warning,
            summary: if firing {
                format!(
                    "{} was written by someone else during rotation; not overwritten",
                    self.config.path
                )
            } else {
                format!("{} rotated cleanly again", self.config.path)
            },
            details: serde_json::json!({ "path": self.config.path, "detail": detail }),
        }
    }
}

#[async_trait]
impl<E: DbEngine> Job for DatabaseRotator<E> {
    fn cadence(&self) -> Cadence {
        Cadence::Age(self.config.every)
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let current = ctx.kv.kv_read(&self.config.path).await?;
        let open = self.protocol(ctx).open::<Detail>().await?;
        Ok(self.inspection(current.as_ref(), open.as_ref()))
    }

    async fn preflight(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let inspection = self.inspect(ctx).await?;
        self.check_access(ctx, inspection.secret_version.is_some())
            .await?;
        let (admin, at) = self.admin(ctx).await?;
        self.engine.check_admin(&admin, &at).await.map_err(|e| {
            self.db_failure(
                &format!(
                    "admin login as {} from {}",
                    admin.username, self.config.admin_path
                ),
                &at,
                e,
            )
        })?;
        Ok(inspection)
    }

    async fn run(&self, ctx: &JobContext, req: RunRequest) -> Result<RunReport, JobError> {
        let proto = self.protocol(ctx);
        if let Some(open) = proto.open::<Detail>().await? {
            if req.dry_run {
                let current = ctx.kv.kv_read(&self.config.path).await?;
                return Ok(RunReport {
                    work: Work::Nothing,
                    detail: format!(
                        "would roll rotation {} of {} forward from step {}",
                        open.id, open.detail.target, open.step
                    ),
                    inspection: self.inspection(current.as_ref(), Some(&open)),
                    alerts: vec![],
                });
            }
            tracing::info!(job = %self.job, rotation = open.id, step = %open.step, "rolling an open rotation forward");
            return self.drive(ctx, &proto, open, false).await;
        }
        let path = self.config.path.as_str();
        let current = ctx.kv.kv_read(path).await?;
        // The credential's age, not the version's: a fence (written before an abandoned
        // rotation put the old password back) repeats the credential and must not postpone the
        // retry by a whole `every`.
        let young = match &current {
            Some(cur)
                if !req.force && cur.created_time + self.config.every.as_chrono() > Utc::now() =>
            {
                let since =
                    super::credential_since(ctx, &self.config.path, cur, &["username", "password"])
                        .await?;
                since + self.config.every.as_chrono() > Utc::now()
            }
            _ => false,
        };
        if let Some(cur) = &current
            && young
        {
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "the credential in version {} is younger than {}; not due",
                    cur.version, self.config.every
                ),
                inspection: self.inspection(current.as_ref(), None),
                alerts: vec![],
            });
        }
        let consumer_version = match &current {
            Some(c) => c.version,
            None => ctx
                .kv
                .kv_metadata(path)
                .await?
                .map(|m| m.current_version)
                .unwrap_or(0),
        };
        let target = self.next_target(current.as_ref());
        if req.dry_run {
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "would set a new password on {target} ({} strategy), test it and write it to {path} with check-and-set {consumer_version}",
                    self.strategy_name()
                ),
                inspection: self.inspection(current.as_ref(), None),
                alerts: vec![],
            });
        }
        self.check_access(ctx, current.is_some()).await?;
        let (admin, at) = self.admin(ctx).await?;
        self.engine.check_admin(&admin, &at).await.map_err(|e| {
            self.db_failure(
                &format!(
                    "admin login as {} from {}",
                    admin.username, self.config.admin_path
                ),
                &at,
                e,
            )
        })?;
        let rotation = proto
            .begin(
                STEP_PENDING,
                Detail {
                    target,
                    strategy: self.strategy_name().into(),
                    consumer_version,
                    pending_path: self.pending_path.clone(),
                    restore: false,
                    reason: None,
                },
            )
            .await?;
        self.drive(ctx, &proto, rotation, true).await
    }

    async fn resume(&self, ctx: &JobContext) -> Result<Option<RunReport>, JobError> {
        let proto = self.protocol(ctx);
        match proto.open::<Detail>().await? {
            Some(open) => self.drive(ctx, &proto, open, false).await.map(Some),
            None => Ok(None),
        }
    }
}

impl AdminLogin {
    /// Parses the admin secret: `url`, or `username`/`password`/`host`/`port`/`database`
    /// (fields beside a `url` win). Errors name fields, never values.
    pub fn from_kv(data: &KvData) -> Result<AdminLogin, String> {
        let mut login = AdminLogin {
            url: None,
            username: String::new(),
            password: None,
            host: None,
            port: None,
            database: None,
        };
        if let Some(url) = data.get("url") {
            let parsed = url::Url::parse(url.expose_secret())
                .map_err(|_| "`url` is not a valid URL".to_string())?;
            let decode = |s: &str| {
                percent_decode(s)
                    .map_err(|_| "`url` has badly encoded user information".to_string())
            };
            if !parsed.username().is_empty() {
                login.username = decode(parsed.username())?.to_string();
            }
            if let Some(p) = parsed.password() {
                login.password = Some(SecretString::from(decode(p)?.to_string()));
            }
            login.host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
            login.port = parsed.port();
            let db = parsed.path().trim_start_matches('/');
            if !db.is_empty() {
                login.database = Some(decode(db)?.to_string());
            }
            login.url = Some(url.clone());
        }
        if let Some(u) = field(data, "username") {
            login.username = u;
        }
        if let Some(p) = data.text("password") {
            login.password = Some(p);
        }
        if let Some(h) = field(data, "host") {
            login.host = Some(h);
        }
        if let Some(p) = field(data, "port") {
            login.port = Some(
                p.trim()
                    .parse()
                    .map_err(|_| "`port` is not a port number".to_string())?,
            );
        }
        if let Some(d) = field(data, "database") {
            login.database = Some(d);
        }
        if login.username.is_empty() {
            return Err("no `username` (or user in `url`)".into());
        }
        Ok(login)
    }
}

fn percent_decode(s: &str) -> Result<Zeroizing<String>, std::str::Utf8Error> {
    let bytes: Zeroizing<Vec<u8>> =
        Zeroizing::new(percent_encoding::percent_decode_str(s).collect());
    std::str::from_utf8(&bytes).map(|v| Zeroizing::new(v.to_string()))
}

/// A non-secret field of a KV secret (usernames, hosts), trimmed; `None` when absent or empty.
fn field(data: &KvData, name: &str) -> Option<String> {
    // `text`: an admin secret written as JSON may hold `"port": 5432`.
    data.text(name)
        .map(|v| v.expose_secret().trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `<first segment of path>/vault-steward/pending/<job>`.
pub fn default_pending_path(path: &str, job: &str) -> String {
    // One definition, shared with the config check that keeps pending paths apart.
    crate::config::jobs::default_pending_path(path, job)
}

/// The consumers' secret: what was there, with the login's fields set.
pub fn consumer_data(
    mut data: KvData,
    scheme: &str,
    user: &str,
    password: &SecretString,
    at: &Endpoint,
) -> Result<KvData, String> {
    data.insert("username".into(), user.to_string().into());
    data.insert("password".into(), password.clone());
    data.insert("host".into(), at.host.clone().into());
    data.insert("port".into(), at.port.to_string().into());
    data.insert(
        "database".into(),
        at.database.clone().unwrap_or_default().into(),
    );
    data.insert("url".into(), connection_url(scheme, user, password, at)?);
    Ok(data)
}

/// `scheme://user:password@host:port/database`, user and password percent-encoded.
pub fn connection_url(
    scheme: &str,
    user: &str,
    password: &SecretString,
    at: &Endpoint,
) -> Result<SecretString, String> {
    let host = if at.host.contains(':') && !at.host.starts_with('[') {
        format!("[{}]", at.host)
    } else {
        at.host.clone()
    };
    let mut url = url::Url::parse(&format!("{scheme}://{host}:{}", at.port))
        .map_err(|e| format!("cannot build a URL for host {}: {e}", at.host))?;
    // `url` leaves `%` alone in user information (it takes it for an escape), so everything but
    // the unreserved characters is encoded here.
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encode = |s: &str| -> Zeroizing<String> {
        Zeroizing::new(percent_encoding::utf8_percent_encode(s, USERINFO).to_string())
    };
    url.set_username(&encode(user))
        .map_err(|()| format!("cannot put user {user} into a URL"))?;
    url.set_password(Some(&encode(password.expose_secret())))
        .map_err(|()| "cannot put the password into a URL".to_string())?;
    match &at.database {
        Some(db) if !db.is_empty() => {
            url.path_segments_mut()
                .map_err(|()| "cannot put the database into a URL".to_string())?
                .clear()
                .push(db);
        }
        _ => url.set_path(""),
    }
    let text: Zeroizing<String> = Zeroizing::new(url.into());
    Ok(SecretString::from(text.as_str()))
}

/// A password of `length` characters drawn uniformly from `alphabet` with the OS CSPRNG. When
/// the alphabet has lower-case letters, upper-case letters, digits and other characters, the
/// password has at least one of each (password policies such as MySQL's `validate_password`
/// ask for that).
pub fn generate_password(length: usize, alphabet: &str) -> Result<SecretString, String> {
    let symbols: Vec<u8> = {
        let mut seen = std::collections::BTreeSet::new();
        alphabet.bytes().filter(|b| seen.insert(*b)).collect()
    };
    if symbols.len() < 2 || !alphabet.is_ascii() {
        return Err("the password alphabet needs at least two ASCII characters".into());
    }
    let classes: Vec<fn(&u8) -> bool> = [
        u8::is_ascii_lowercase as fn(&u8) -> bool,
        u8::is_ascii_uppercase,
        u8::is_ascii_digit,
        |b: &u8| !b.is_ascii_alphanumeric(),
    ]
    .into_iter()
    .filter(|class| symbols.iter().any(class))
    .collect();
    // Bytes at or above `limit` are dropped so that every symbol is equally likely.
    let limit = 256 - (256 % symbols.len());
    for _ in 0..1000 {
        let mut out = Zeroizing::new(String::with_capacity(length));
        let mut buf = Zeroizing::new([0u8; 64]);
        while out.len() < length {
            OsRng
                .try_fill_bytes(&mut *buf)
                .map_err(|e| format!("OS random number generator: {e}"))?;
            for &b in buf.iter() {
                if out.len() == length {
                    break;
                }
                if usize::from(b) < limit {
                    out.push(char::from(symbols[usize::from(b) % symbols.len()]));
                }
            }
        }
        if length < classes.len() || classes.iter().all(|class| out.bytes().any(|b| class(&b))) {
            return Ok(SecretString::from(out.as_str()));
        }
    }
    Err("could not draw a password with every character class".into())
}

/// Removes every occurrence of `secret` from a server's error text.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn passwords_use_the_alphabet_every_class_and_differ() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
        for _ in 0..200 {
            let p = generate_password(16, alphabet).unwrap();
            let p = p.expose_secret();
            assert_eq!(p.len(), 16);
            assert!(p.chars().all(|c| alphabet.contains(c)), "{p}");
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| !c.is_ascii_alphanumeric()));
        }
        let a = generate_password(32, alphabet).unwrap();
        let b = generate_password(32, alphabet).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let digits = generate_password(40, "0123456789").unwrap();
        assert!(digits.expose_secret().chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn symbols_are_drawn_evenly() {
        let mut counts = BTreeMap::new();
        for _ in 0..400 {
            for c in generate_password(128, "abc")
                .unwrap()
                .expose_secret()
                .chars()
            {
                *counts.entry(c).or_insert(0u32) += 1;
            }
        }
        // 51,200 draws, 1/3 each: a biased draw (256 % 3 != 0) would still pass, so this only
        // guards against gross mistakes; the rejection above is what removes the bias.
        for (c, n) in counts {
            assert!((16_000..18_200).contains(&n), "{c}: {n}");
        }
    }

    fn endpoint(host: &str, db: Option<&str>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: 5432,
            database: db.map(str::to_string),
        }
    }

    #[test]
    fn urls_encode_user_and_password() {
        let pw = SecretString::from("a@b:c/d%e");
        let url = connection_url(
            "postgres",
            "app user",
            &pw,
            &endpoint("db.example.com", Some("orders")),
        )
        .unwrap();
        assert_eq!(
            url.expose_secret(),
            "postgres://app%20user:a%40b%3Ac%2Fd%25e@db.example.com:5432/orders"
        );
        let url = connection_url(
            "mysql",
            "app",
            &SecretString::from("pw"),
            &endpoint("::1", None),
        )
        .unwrap();
        assert_eq!(url.expose_secret(), "mysql://app:pw@[::1]:5432");
    }

    #[test]
    fn consumer_data_keeps_foreign_fields() {
        let mut data = KvData::new();
        data.insert("owner".into(), "team-a".to_string().into());
        data.insert("password".into(), "old".to_string().into());
        let out = consumer_data(
            data,
            "postgres",
            "app_b",
            &SecretString::from("new-pass"),
            &endpoint("h", Some("d")),
        )
        .unwrap();
        let get = |k: &str| out.get(k).unwrap().expose_secret().to_string();
        assert_eq!(get("owner"), "team-a");
        assert_eq!(get("username"), "app_b");
        assert_eq!(get("password"), "new-pass");
        assert_eq!(get("host"), "h");
        assert_eq!(get("port"), "5432");
        assert_eq!(get("database"), "d");
        assert_eq!(get("url"), "postgres://app_b:new-pass@h:5432/d");
    }

    fn kv(pairs: &[(&str, &str)]) -> KvData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect()
    }

    #[test]
    fn admin_login_from_url_or_fields() {
        let a = AdminLogin::from_kv(&kv(&[(
            "url",
            "postgres://ad%40min:p%3Ass@db.internal:6432/postgres?sslmode=require",
        )]))
        .unwrap();
        assert_eq!(a.username, "ad@min");
        assert_eq!(a.password.as_ref().unwrap().expose_secret(), "p:ss");
        assert_eq!(a.host.as_deref(), Some("db.internal"));
        assert_eq!(a.port, Some(6432));
        assert_eq!(a.database.as_deref(), Some("postgres"));
        assert!(a.url.is_some());

        let a = AdminLogin::from_kv(&kv(&[
            ("url", "mysql://root:x@h1/db1"),
            ("host", "h2"),
            ("port", "3307"),
        ]))
        .unwrap();
        assert_eq!((a.host.as_deref(), a.port), (Some("h2"), Some(3307)));

        let e = AdminLogin::from_kv(&kv(&[("url", "not a url with s3cret")])).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = AdminLogin::from_kv(&kv(&[("password", "x")])).unwrap_err();
        assert!(e.contains("username"), "{e}");
        assert!(
            format!(
                "{:?}",
                AdminLogin::from_kv(&kv(&[("username", "u"), ("password", "s3cret")])).unwrap()
            )
            .contains("[redacted]")
        );
    }

    #[test]
    fn consumer_data_keeps_foreign_json_types() {
        let foreign = serde_json::json!({
            "pool": 20, "tls": true, "replicas": ["a", 2], "opts": {"x": null}, "gone": null
        });
        let mut data: KvData = match foreign.clone() {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (k, crate::vault::KvValue::from_json(v)))
                .collect(),
            _ => unreachable!(),
        };
        data.insert("password".into(), "old".to_string().into());
        let out = consumer_data(
            data,
            "postgres",
            "app",
            &SecretString::from("new-pass"),
            &endpoint("h", None),
        )
        .unwrap()
        .to_json();
        for (key, value) in foreign.as_object().unwrap() {
            assert_eq!(&out[key], value, "{key}");
        }
        // The fields the steward owns are strings, as before.
        assert_eq!(out["port"], serde_json::json!("5432"));
        assert_eq!(out["password"], serde_json::json!("new-pass"));
    }

    #[test]
    fn admin_login_reads_numbers_written_as_json() {
        let data: KvData = [
            ("username", serde_json::json!("admin")),
            ("password", serde_json::json!(12345678)),
            ("host", serde_json::json!("db")),
            ("port", serde_json::json!(6432)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), crate::vault::KvValue::from_json(v)))
        .collect();
        let a = AdminLogin::from_kv(&data).unwrap();
        assert_eq!(a.port, Some(6432));
        assert_eq!(a.password.as_ref().unwrap().expose_secret(), "12345678");
    }

    #[test]
    fn default_pending_path_sits_outside_the_consumers_path() {
        assert_eq!(
            default_pending_path("secret/database/orders", "orders-db"),
            "secret/vault-steward/pending/orders-db"
        );
    }

    #[test]
    fn scrub_removes_the_secret() {
        assert_eq!(
            scrub("bad x1y2 here x1y2", "x1y2"),
            "bad [redacted] here [redacted]"
        );
        assert_eq!(scrub("text", ""), "text");
    }
}
