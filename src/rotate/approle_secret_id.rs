//! `kind = "approle-secret-id"`: a fresh secret-id for an AppRole role, written to KV v2 (fields
//! `role_id`, `secret_id`, `secret_id_accessor`; other fields are kept) with check-and-set and
//! rotation metadata, for the service that logs in with it. The previous secret-id is destroyed
//! by its accessor `grace` after the rotation, through a deferred action in the state store, so
//! the destruction happens on time even if the daemon restarts in between.
//!
//! The secret-id itself exists only in memory (as a `SecretString`) and in KV: the store keeps
//! accessors, never secret-ids. Each rotation is a persisted state machine — `generate` (recorded
//! before asking Vault for a secret-id) → `write` (new accessor recorded before the KV write) →
//! finished — and a crash at any step is rolled forward at the next run: a new secret-id that
//! reached KV is kept and the old one scheduled for destruction; one that did not is destroyed,
//! since nobody can ever use it. Before deciding, the resume fences KV: it writes the current
//! data again with check-and-set on the current version, so that the interrupted rotation's own
//! write — still in flight from a paused or deposed instance — fails its check-and-set instead of
//! publishing a destroyed secret-id. A run that gave an interrupted rotation up rotates at once.
//! A check-and-set conflict (someone wrote the secret by hand) destroys the unused new secret-id
//! and raises `ConcurrentWrite`; a refusal with nothing newer to read destroys it too and fails
//! the run (retried with backoff). A current version deleted or destroyed by hand is replaced by
//! one fresh version (check-and-set on its number from the metadata); its secret-id cannot be
//! read, so it is left to its own TTL.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::api_key::CONCURRENT_WRITE;
use super::{cas_version, require_capabilities, rotation_metadata};
use crate::config::ApproleSecretIdConfig;
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::store::{ActionRecord, NewAction, NewRotation, RotationRecord, RotationStatus};
use crate::vault::{KvSecret, VaultError};

/// The deferred action that destroys an old secret-id.
pub const DESTROY_ACTION: &str = "destroy-secret-id";
const KIND: &str = "approle-secret-id";

/// KV fields written by this kind.
const ROLE_ID: &str = "role_id";
const SECRET_ID: &str = "secret_id";
const ACCESSOR: &str = "secret_id_accessor";

/// Rotates the secret-id of one AppRole role.
pub struct ApproleSecretIdRotator {
    job: String,
    config: ApproleSecretIdConfig,
}

/// What a rotation record remembers (no secret): enough to resume after a crash.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// The KV version the rotation read (check-and-set).
    cas: u64,
    /// The secret-id to destroy after `grace` once the new one is in KV.
    old_accessor: Option<String>,
    /// The secret-id this rotation issued.
    new_accessor: Option<String>,
}

/// The payload of a [`DESTROY_ACTION`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Destroy {
    mount: String,
    role: String,
    accessor: String,
}

impl ApproleSecretIdRotator {
    pub fn new(job: &str, config: ApproleSecretIdConfig) -> Self {
        ApproleSecretIdRotator {
            job: job.to_string(),
            config,
        }
    }

    fn mount(&self) -> &str {
        self.config.mount.trim_matches('/')
    }

    fn role_path(&self, rest: &str) -> String {
        format!("auth/{}/role/{}/{rest}", self.mount(), self.config.role)
    }

    fn inspection(&self, current: Option<&KvSecret>) -> Inspection {
        match current {
            Some(s) => Inspection {
                secret_changed_at: Some(s.created_time),
                secret_version: Some(s.version as i64),
                summary: format!(
                    "{} version {} (role {}) written {}",
                    self.config.path,
                    s.version,
                    self.config.role,
                    s.created_time.to_rfc3339()
                ),
            },
            None => Inspection {
                secret_changed_at: None,
                secret_version: None,
                summary: format!(
                    "no secret-id for role {} at {} yet",
                    self.config.role, self.config.path
                ),
            },
        }
    }

    fn conflict_signal(&self, firing: bool, detail: &str) -> AlertSignal {
        AlertSignal {
            name: CONCURRENT_WRITE,
            firing,
            severity: Severity::Warning,
            summary: if firing {
                format!(
                    "{} was written by someone else during the secret-id rotation; not overwritten",
                    self.config.path
                )
            } else {
                format!("{} rotated cleanly again", self.config.path)
            },
            details: serde_json::json!({ "path": self.config.path, "role": self.config.role, "detail": detail }),
        }
    }

    /// The role's role-id; a clear permanent error when the role does not exist.
    async fn role_id(&self, ctx: &JobContext) -> Result<SecretString, JobError> {
        ctx.approle
            .approle_role_id(self.mount(), &self.config.role)
            .await?
            .ok_or_else(|| {
                JobError::Permanent(format!(
                    "AppRole role `{}` does not exist at auth/{} (or the mount is not AppRole)",
                    self.config.role,
                    self.mount()
                ))
            })
    }

    /// Issues a new secret-id; returns it with its accessor.
    async fn issue(
        &self,
        ctx: &JobContext,
        rotation_id: i64,
    ) -> Result<(SecretString, String), JobError> {
        // Metadata shows in `secret-id-accessor/lookup`: who issued it, for which rotation.
        let metadata = BTreeMap::from([
            ("issued_by".to_string(), "vault-steward".to_string()),
            ("rotation_job".to_string(), self.job.clone()),
            ("rotation_id".to_string(), rotation_id.to_string()),
        ]);
        let issued = ctx
            .approle
            .approle_issue(self.mount(), &self.config.role, &metadata)
            .await?;
        Ok((issued.secret_id, issued.accessor))
    }

    /// The accessor of the secret-id now in KV: its `secret_id_accessor` field, or (for a
    /// secret-id put there by hand) looked up in Vault. `None` if there is none or it is no
    /// longer valid.
    async fn current_accessor(
        &self,
        ctx: &JobContext,
        current: Option<&KvSecret>,
    ) -> Result<Option<String>, JobError> {
        let Some(cur) = current else {
            return Ok(None);
        };
        if let Some(acc) = cur.data.get(ACCESSOR) {
            return Ok(Some(acc.expose_secret().to_string()));
        }
        let Some(secret_id) = cur.data.get(SECRET_ID) else {
            return Ok(None);
        };
        Ok(ctx
            .approle
            .approle_accessor_of(self.mount(), &self.config.role, secret_id)
            .await?)
    }

    /// Destroys a secret-id by accessor; one that is already gone counts as destroyed.
    async fn destroy(
        ctx: &JobContext,
        mount: &str,
        role: &str,
        accessor: &str,
    ) -> Result<(), JobError> {
        Ok(ctx.approle.approle_destroy(mount, role, accessor).await?)
    }

    /// Schedules the destruction of `accessor` at `due_at`, unless it is already scheduled.
    async fn schedule_destroy(
        &self,
        ctx: &JobContext,
        accessor: &str,
        due_at: chrono::DateTime<Utc>,
    ) -> Result<(), JobError> {
        let pending = ctx.store.pending_actions(&self.job).await?;
        let already = pending.iter().any(|a| {
            a.action == DESTROY_ACTION
                && serde_json::from_str::<Destroy>(&a.payload).is_ok_and(|d| d.accessor == accessor)
        });
        if already {
            return Ok(());
        }
        let payload = serde_json::to_string(&Destroy {
            mount: self.mount().to_string(),
            role: self.config.role.clone(),
            accessor: accessor.to_string(),
        })
        .map_err(|e| JobError::Permanent(format!("encoding the destroy action: {e}")))?;
        ctx.store
            .schedule_action(&NewAction {
                job: self.job.clone(),
                action: DESTROY_ACTION.to_string(),
                payload,
                due_at,
            })
            .await?;
        Ok(())
    }

    /// Rolls forward rotations a crash left open. Returns a note for the run's detail, and
    /// whether a rotation was given up (it was wanted, so this run rotates whatever KV's age).
    async fn roll_forward(&self, ctx: &JobContext) -> Result<Option<(String, bool)>, JobError> {
        let open = ctx.store.open_rotations(Some(&self.job)).await?;
        if open.is_empty() {
            return Ok(None);
        }
        // Fenced first, so that what KV holds now is final for the interrupted rotations.
        let in_kv = self.fence(ctx).await?;
        let mut notes = Vec::new();
        let mut abandoned = false;
        for rec in open {
            let (note, gave_up) = self.resume_one(ctx, &rec, in_kv.as_deref()).await?;
            notes.push(note);
            abandoned |= gave_up;
        }
        Ok(Some((notes.join("; "), abandoned)))
    }

    /// Makes any KV write still in flight from an interrupted rotation fail: the current data
    /// is written again unchanged (an empty version where there is none) with check-and-set on
    /// the current version, so a paused or deposed instance's check-and-set on the version it
    /// read no longer matches. Called before deciding what to destroy: without it, a secret-id
    /// destroyed here could still be published by that instance, and nothing would notice
    /// until the next rotation. Returns the accessor KV holds (for good, now).
    async fn fence(&self, ctx: &JobContext) -> Result<Option<String>, JobError> {
        let path = self.config.path.as_str();
        let (data, cas) = match ctx.kv.kv_read(path).await? {
            Some(current) => (current.data, current.version),
            None => (
                Default::default(),
                ctx.kv
                    .kv_metadata(path)
                    .await?
                    .map(|m| m.current_version)
                    .unwrap_or(0),
            ),
        };
        let in_kv = data.get(ACCESSOR).map(|a| a.expose_secret().to_string());
        crate::failpoint::hit("approle-before-fence");
        match ctx.kv.kv_write(path, &data, cas).await {
            Ok(_) => Ok(in_kv),
            // Someone (perhaps that very instance) wrote meanwhile: decide again from the new
            // version at the next try.
            Err(VaultError::CasMismatch { .. }) => Err(JobError::Transient(format!(
                "{path} changed while an interrupted rotation was being fenced; trying again"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn resume_one(
        &self,
        ctx: &JobContext,
        rec: &RotationRecord,
        in_kv: Option<&str>,
    ) -> Result<(String, bool), JobError> {
        let progress: Progress = rec
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let now = Utc::now();
        let (note, gave_up) = match progress.new_accessor.as_deref() {
            Some(new) if in_kv == Some(new) => {
                // The write landed: finish what the crash interrupted.
                if let Some(old) = &progress.old_accessor {
                    self.schedule_destroy(ctx, old, rec.started_at + self.config.grace.as_chrono())
                        .await?;
                }
                ctx.store
                    .finish_rotation(rec.id, RotationStatus::Finished, Some("resumed"), now)
                    .await?;
                let note = format!(
                    "resumed rotation {}: the new secret-id was already in KV",
                    rec.id
                );
                (note, false)
            }
            Some(new) => {
                // Issued but not stored (and, KV being fenced, it never will be): no one can
                // use it, so it goes at once.
                Self::destroy(ctx, self.mount(), &self.config.role, new).await?;
                ctx.store
                    .finish_rotation(
                        rec.id,
                        RotationStatus::Abandoned,
                        Some("the new secret-id never reached KV; destroyed"),
                        now,
                    )
                    .await?;
                let note = format!(
                    "abandoned rotation {}: destroyed its unused secret-id",
                    rec.id
                );
                (note, true)
            }
            None => {
                // Interrupted while asking Vault: a secret-id may exist that nobody knows; it
                // carries this rotation's id in its metadata, so find and destroy it.
                let destroyed = self.destroy_orphans(ctx, rec.id, in_kv).await?;
                ctx.store
                    .finish_rotation(
                        rec.id,
                        RotationStatus::Abandoned,
                        Some("interrupted while issuing the secret-id"),
                        now,
                    )
                    .await?;
                let note = format!(
                    "abandoned rotation {}: destroyed {destroyed} orphaned secret-id(s)",
                    rec.id
                );
                (note, true)
            }
        };
        tracing::warn!(job = %self.job, rotation = rec.id, "{note}");
        Ok((note, gave_up))
    }

    /// Destroys secret-ids of the role issued by rotation `rotation_id` and not in KV.
    async fn destroy_orphans(
        &self,
        ctx: &JobContext,
        rotation_id: i64,
        in_kv: Option<&str>,
    ) -> Result<usize, JobError> {
        let accessors = ctx
            .approle
            .approle_accessors(self.mount(), &self.config.role)
            .await?;
        let mut destroyed = 0;
        for accessor in accessors {
            if Some(accessor.as_str()) == in_kv {
                continue;
            }
            // One that cannot be looked up is left alone: only our own orphans go.
            let Ok(Some(md)) = ctx
                .approle
                .approle_accessor_metadata(self.mount(), &self.config.role, &accessor)
                .await
            else {
                continue;
            };
            let is = |key: &str, value: &str| md.get(key).map(String::as_str) == Some(value);
            if is("issued_by", "vault-steward")
                && is("rotation_job", &self.job)
                && is("rotation_id", &rotation_id.to_string())
            {
                Self::destroy(ctx, self.mount(), &self.config.role, &accessor).await?;
                destroyed += 1;
            }
        }
        Ok(destroyed)
    }
}

#[async_trait]
impl Job for ApproleSecretIdRotator {
    fn cadence(&self) -> Cadence {
        Cadence::Age(self.config.every)
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let current = ctx.kv.kv_read(&self.config.path).await?;
        Ok(self.inspection(current.as_ref()))
    }

    /// Proves the KV path is in a KV v2 mount, the role exists (reading its role-id), and that
    /// the token may issue and destroy secret-ids and write the secret — writing nothing.
    async fn preflight(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let current = ctx.kv.kv_read(&self.config.path).await?;
        let (data, metadata) = ctx.vault.kv_api_paths(&self.config.path).await?;
        drop(self.role_id(ctx).await?);
        // A secret whose current version was deleted still exists: writing is an update.
        let exists = cas_version(ctx, &self.config.path, current.as_ref()).await? > 0;
        let write: &[&str] = if exists {
            &["read", "update"]
        } else {
            &["read", "create"]
        };
        require_capabilities(
            ctx,
            &[
                (self.role_path("secret-id"), &["update"]),
                (self.role_path("secret-id-accessor/destroy"), &["update"]),
                (data, write),
                (metadata, &["read", "update"]),
            ],
        )
        .await?;
        Ok(self.inspection(current.as_ref()))
    }

    /// At start (and on taking over leadership) an interrupted rotation is rolled forward at
    /// once, whatever the schedule: a secret-id issued but never stored must not stay valid
    /// until the job is next due, and one given up was wanted, so the job rotates now.
    async fn resume(&self, ctx: &JobContext) -> Result<Option<RunReport>, JobError> {
        if ctx.store.open_rotations(Some(&self.job)).await?.is_empty() {
            return Ok(None);
        }
        let req = RunRequest {
            force: false,
            dry_run: false,
        };
        self.run(ctx, req).await.map(Some)
    }

    async fn run(&self, ctx: &JobContext, req: RunRequest) -> Result<RunReport, JobError> {
        let path = self.config.path.as_str();
        let (resumed, interrupted) = if req.dry_run {
            (None, false)
        } else {
            match self.roll_forward(ctx).await? {
                Some((note, abandoned)) => (Some(note), abandoned),
                None => (None, false),
            }
        };
        let current = ctx.kv.kv_read(path).await?;
        let now = Utc::now();
        // Not due while the secret is young and holds a secret-id; a rotation that a crash
        // interrupted was due (or forced), and a fence may have left a version without one.
        // The secret-id's age, not the version's: a fence repeats it (see `credential_since`).
        let young = match &current {
            Some(cur)
                if !req.force
                    && !interrupted
                    && cur.data.contains_key(SECRET_ID)
                    && cur.created_time + self.config.every.as_chrono() > now =>
            {
                let since = super::credential_since(ctx, path, cur, &[SECRET_ID]).await?;
                since + self.config.every.as_chrono() > now
            }
            _ => false,
        };
        if let Some(cur) = &current
            && young
        {
            let mut detail = format!(
                "version {} is younger than {}; not due",
                cur.version, self.config.every
            );
            if let Some(note) = resumed {
                detail = format!("{note}; {detail}");
            }
            return Ok(RunReport {
                work: Work::Nothing,
                detail,
                inspection: self.inspection(current.as_ref()),
                alerts: vec![],
            });
        }
        // Nothing live there (never written, or the current version deleted or destroyed by
        // hand): due whatever its age. Check-and-set names the removed version, so exactly one
        // fresh version replaces it. The removed version's secret-id cannot be read, so it is
        // not scheduled for destruction: it lives until its own TTL or an operator destroys it.
        let cas = cas_version(ctx, path, current.as_ref()).await?;
        // Before anything is issued: an unknown role fails here, with nothing changed.
        let role_id = self.role_id(ctx).await?;
        let old_accessor = self.current_accessor(ctx, current.as_ref()).await?;
        if req.dry_run {
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "would issue a new secret-id for role {} and write it to {path} with check-and-set {cas}{}",
                    self.config.role,
                    if old_accessor.is_some() {
                        format!(
                            "; the previous secret-id would be destroyed {} later",
                            self.config.grace
                        )
                    } else {
                        String::new()
                    }
                ),
                inspection: self.inspection(current.as_ref()),
                alerts: vec![],
            });
        }

        let mut progress = Progress {
            cas,
            old_accessor: old_accessor.clone(),
            new_accessor: None,
        };
        let rotation_id = ctx
            .store
            .begin_rotation(&NewRotation {
                job: self.job.clone(),
                kind: KIND.to_string(),
                step: "generate".to_string(),
                detail: Some(progress_json(&progress)),
                started_at: now,
            })
            .await?;
        let (secret_id, accessor) = self.issue(ctx, rotation_id).await?;
        progress.new_accessor = Some(accessor.clone());
        ctx.store
            .set_rotation_step(
                rotation_id,
                "write",
                Some(&progress_json(&progress)),
                Utc::now(),
            )
            .await?;
        crate::failpoint::hit("approle-after-issue");

        // A secret whose current version was removed keeps its custom metadata.
        let existed = cas > 0;
        let mut data = current.map(|c| c.data).unwrap_or_default();
        data.insert(ROLE_ID.to_string(), role_id);
        data.insert(SECRET_ID.to_string(), secret_id);
        data.insert(ACCESSOR.to_string(), SecretString::from(accessor.as_str()));
        crate::failpoint::pause("approle-before-write").await;
        let written = match ctx.kv.kv_write(path, &data, cas).await {
            Ok(w) => w,
            Err(VaultError::CasMismatch { .. }) => {
                Self::destroy(ctx, self.mount(), &self.config.role, &accessor).await?;
                let now_there = ctx.kv.kv_read(path).await?;
                // Refused, yet nothing newer can be read (removed again meanwhile, or a
                // refusal this run cannot explain): not someone else's rotation. A failure
                // retried with backoff, never a success that leaves the job due at once.
                let Some(there) = now_there.as_ref().filter(|there| there.version > cas) else {
                    let why = format!(
                        "check-and-set on version {cas} of {path} was refused but no newer version can be read; the unused new secret-id was destroyed; retrying"
                    );
                    ctx.store
                        .finish_rotation(
                            rotation_id,
                            RotationStatus::Abandoned,
                            Some(&why),
                            Utc::now(),
                        )
                        .await?;
                    return Err(JobError::Transient(why));
                };
                let detail = format!(
                    "check-and-set on version {cas} failed: version {} was written by someone else; it counts as the rotation (the unused new secret-id was destroyed)",
                    there.version
                );
                ctx.store
                    .finish_rotation(
                        rotation_id,
                        RotationStatus::Abandoned,
                        Some(&detail),
                        Utc::now(),
                    )
                    .await?;
                tracing::warn!(job = %self.job, path, "{detail}");
                return Ok(RunReport {
                    work: Work::Nothing,
                    inspection: self.inspection(now_there.as_ref()),
                    alerts: vec![self.conflict_signal(true, &detail)],
                    detail,
                });
            }
            // The write may or may not have landed (e.g. a timeout): the rotation stays open
            // and the next run resumes it from the KV truth.
            Err(e) => return Err(e.into()),
        };
        drop(data);
        crate::failpoint::hit("approle-after-write");
        let existing = if existed {
            ctx.kv
                .kv_metadata(path)
                .await?
                .map(|m| m.custom_metadata)
                .unwrap_or_default()
        } else {
            Default::default()
        };
        ctx.kv
            .kv_set_custom_metadata(path, &rotation_metadata(&existing, &self.job, now))
            .await?;
        let mut detail = format!(
            "issued a new secret-id for role {} (accessor {accessor}) and wrote {path} version {}",
            self.config.role, written.version
        );
        if let Some(old) = &old_accessor {
            let due = now + self.config.grace.as_chrono();
            self.schedule_destroy(ctx, old, due).await?;
            detail = format!(
                "{detail}; the previous secret-id (accessor {old}) is destroyed at {}",
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        ctx.store
            .finish_rotation(rotation_id, RotationStatus::Finished, None, Utc::now())
            .await?;
        if let Some(note) = resumed {
            detail = format!("{note}; {detail}");
        }
        Ok(RunReport {
            work: Work::Done,
            inspection: Inspection {
                secret_changed_at: Some(written.created_time),
                secret_version: Some(written.version as i64),
                summary: detail.clone(),
            },
            alerts: vec![self.conflict_signal(false, &detail)],
            detail,
        })
    }

    /// Destroys a previous secret-id whose grace has passed.
    async fn perform(
        &self,
        ctx: &JobContext,
        action: &ActionRecord,
    ) -> Result<Vec<AlertSignal>, JobError> {
        if action.action != DESTROY_ACTION {
            return Err(JobError::Permanent(format!(
                "approle-secret-id has no deferred action `{}`",
                action.action
            )));
        }
        let d: Destroy = serde_json::from_str(&action.payload)
            .map_err(|e| JobError::Permanent(format!("bad destroy payload: {e}")))?;
        Self::destroy(ctx, &d.mount, &d.role, &d.accessor).await?;
        tracing::info!(job = %self.job, role = %d.role, accessor = %d.accessor, "destroyed the previous secret-id after its grace");
        Ok(vec![])
    }
}

fn progress_json(p: &Progress) -> String {
    serde_json::to_string(p).unwrap_or_default()
}
