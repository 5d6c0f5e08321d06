//! `kind = "api-key"`: a self-issued key in KV v2. A new random value (OS CSPRNG, in the job's
//! `format`) is written as a new version with check-and-set on the version that was read, so a
//! value someone wrote by hand in the meantime is never overwritten (that raises
//! `ConcurrentWrite`, and the hand-written version counts as the rotation). Other fields of the
//! secret are carried over unchanged, with their JSON types; older versions stay readable for
//! consumers. A current version deleted or destroyed by hand leaves nothing live: the job is
//! due, and one fresh version replaces it (check-and-set on the removed version's number from
//! the metadata, since Vault refuses 0 while the metadata exists). A refusal with nothing newer
//! to read is a failure retried with backoff, never a conflict that leaves the job due at
//! once. A job whose
//! state store never recorded a secret first tries to create version 1 directly (check-and-set
//! 0, so an existing secret is never overwritten) and reads only if that is refused; the
//! `custom_metadata` to keep comes with the read, so a rotation makes the same two writes as
//! a plain KV client plus at most one read.
//!
//! With `on_rotate`, each rotation is followed by a POST without the secret (see [`super::hook`]);
//! a failing hook never undoes the rotation: it raises `OnRotateHookFailed` and is re-sent as a
//! deferred action until the receiver accepts it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::{Rng, TryRngCore};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{cas_version, hook, require_capabilities, rotation_metadata};
use crate::config::{ApiKeyConfig, KeyAlphabet, KeyFormat};
use crate::job::{
    AlertSignal, Cadence, Inspection, Job, JobContext, JobError, RunReport, RunRequest, Severity,
    Work,
};
use crate::store::{ActionRecord, NewAction};
use crate::vault::{KvData, KvSecret, KvWrite, VaultError};

/// Alert raised when a check-and-set write found a version written by someone else.
pub const CONCURRENT_WRITE: &str = "ConcurrentWrite";

/// Rotates one API key.
pub struct ApiKeyRotator {
    job: String,
    config: ApiKeyConfig,
}

impl ApiKeyRotator {
    pub fn new(job: &str, config: ApiKeyConfig) -> Self {
        ApiKeyRotator {
            job: job.to_string(),
            config,
        }
    }

    fn inspection(&self, current: Option<&KvSecret>) -> Inspection {
        match current {
            Some(s) => Inspection {
                secret_changed_at: Some(s.created_time),
                secret_version: Some(s.version as i64),
                summary: format!(
                    "{} version {} written {}",
                    self.config.path,
                    s.version,
                    s.created_time.to_rfc3339()
                ),
            },
            None => Inspection {
                secret_changed_at: None,
                secret_version: None,
                summary: format!("no secret at {} yet", self.config.path),
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
                    "{} was written by someone else during rotation; not overwritten",
                    self.config.path
                )
            } else {
                format!("{} rotated cleanly again", self.config.path)
            },
            details: serde_json::json!({ "path": self.config.path, "detail": detail }),
        }
    }

    fn hook_signal(&self, firing: bool, detail: &str) -> AlertSignal {
        AlertSignal {
            name: hook::ON_ROTATE_HOOK_FAILED,
            firing,
            severity: Severity::Warning,
            summary: if firing {
                format!(
                    "{} was rotated but its on_rotate hook failed; consumers reload at their next poll",
                    self.config.path
                )
            } else {
                format!("the on_rotate hook of {} was delivered", self.config.path)
            },
            details: serde_json::json!({ "path": self.config.path, "detail": detail }),
        }
    }

    fn hook_body(&self, version: u64, at: chrono::DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "event": "rotated",
            "job": self.job,
            "kind": "api-key",
            "path": self.config.path,
            "field": self.config.field,
            "version": version,
            "rotated_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }

    /// Tells the consumer about a rotation; on failure leaves a deferred retry. Returns the
    /// signal to raise and a note for the run's detail.
    async fn notify(
        &self,
        ctx: &JobContext,
        url: &str,
        written: &KvWrite,
    ) -> (AlertSignal, String) {
        let body = self.hook_body(written.version, written.created_time);
        match hook::post_with_retries(url, &body, &ctx.cancel).await {
            Ok(()) => {
                let note = format!("on_rotate hook {} notified", hook::display_url(url));
                (self.hook_signal(false, &note), note)
            }
            Err(why) => {
                tracing::warn!(job = %self.job, error = %why, "on_rotate hook failed; the rotation stands, retrying later");
                let scheduled = ctx
                    .store
                    .schedule_action(&NewAction {
                        job: self.job.clone(),
                        action: hook::ACTION.to_string(),
                        payload: body.to_string(),
                        due_at: Utc::now() + chrono::Duration::seconds(5),
                    })
                    .await;
                let note = match scheduled {
                    Ok(_) => format!("{why}; will retry"),
                    Err(e) => format!("{why}; could not schedule a retry: {e}"),
                };
                (self.hook_signal(true, &note), note)
            }
        }
    }
}

#[async_trait]
impl Job for ApiKeyRotator {
    fn cadence(&self) -> Cadence {
        Cadence::Age(self.config.every)
    }

    async fn inspect(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let current = ctx.vault.kv_read(&self.config.path).await?;
        Ok(self.inspection(current.as_ref()))
    }

    /// Reads the secret (proving the path is in a KV v2 mount), then asks Vault whether the
    /// token may write the new version and its metadata, without writing.
    async fn preflight(&self, ctx: &JobContext) -> Result<Inspection, JobError> {
        let current = ctx.vault.kv_read(&self.config.path).await?;
        let (data, metadata) = ctx.vault.kv_api_paths(&self.config.path).await?;
        // A secret whose current version was deleted still exists: writing is an update.
        let exists = cas_version(ctx, &self.config.path, current.as_ref()).await? > 0;
        let write: &[&str] = if exists {
            &["read", "update"]
        } else {
            &["read", "create"]
        };
        require_capabilities(ctx, &[(data, write), (metadata, &["read", "update"])]).await?;
        let mut inspection = self.inspection(current.as_ref());
        if let Some(url) = &self.config.on_rotate {
            inspection.summary = format!(
                "{}; on_rotate {}",
                inspection.summary,
                hook::display_url(url)
            );
        }
        Ok(inspection)
    }

    /// Re-sends an `on_rotate` hook that failed after a rotation.
    async fn perform(
        &self,
        _ctx: &JobContext,
        action: &ActionRecord,
    ) -> Result<Vec<AlertSignal>, JobError> {
        if action.action != hook::ACTION {
            return Err(JobError::Permanent(format!(
                "api-key has no deferred action `{}`",
                action.action
            )));
        }
        // The hook was removed from the config since: nothing left to tell.
        let Some(url) = &self.config.on_rotate else {
            return Ok(vec![
                self.hook_signal(false, "on_rotate is no longer configured"),
            ]);
        };
        let body: serde_json::Value = serde_json::from_str(&action.payload)
            .map_err(|e| JobError::Permanent(format!("bad on-rotate payload: {e}")))?;
        hook::post(url, &body).await.map_err(JobError::Transient)?;
        Ok(vec![self.hook_signal(
            false,
            &format!("on_rotate hook {} notified", hook::display_url(url)),
        )])
    }

    async fn run(&self, ctx: &JobContext, req: RunRequest) -> Result<RunReport, JobError> {
        let path = self.config.path.as_str();
        if !ctx.secret_recorded && !req.dry_run {
            // The store never saw a secret here: create it straight away, as its first version.
            // Check-and-set 0 refuses if one exists after all (made by hand, or the store was
            // lost); the path below then reads it and decides as usual. A write that failed in
            // transit but reached Vault leaves version 1, which the read below adopts.
            let mut data = KvData::new();
            data.insert(
                self.config.field.clone(),
                generate(&self.config.format).map_err(JobError::Transient)?,
            );
            match ctx.vault.kv_write(path, &data, 0).await {
                Ok(written) => return self.written(ctx, written, None, Utc::now()).await,
                // A secret is there after all, or the write failed for another reason (e.g. a
                // token that may read but not write): the path below reads first, so the job
                // still learns the secret's age (and an existing one is adopted).
                Err(e) => {
                    tracing::debug!(job = %self.job, path, error = %e, "creating the first version directly failed; reading first")
                }
            }
        }
        let current = ctx.vault.kv_read(path).await?;
        let now = Utc::now();
        if let Some(cur) = &current
            && !req.force
            && cur.created_time + self.config.every.as_chrono() > now
        {
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "version {} is younger than {}; not due",
                    cur.version, self.config.every
                ),
                inspection: self.inspection(current.as_ref()),
                alerts: vec![],
            });
        }
        // Nothing live there (never written, or the current version deleted or destroyed by
        // hand): due whatever its age, and replaced by one fresh version.
        let cas = cas_version(ctx, path, current.as_ref()).await?;
        let removed = current.is_none() && cas > 0;
        if req.dry_run {
            return Ok(RunReport {
                work: Work::Nothing,
                detail: format!(
                    "would write a new {} value to {path} field {} with check-and-set {cas}",
                    format_name(&self.config.format),
                    self.config.field
                ),
                inspection: self.inspection(current.as_ref()),
                alerts: vec![],
            });
        }
        // A secret we create has no custom metadata of someone else's to keep; one whose
        // current version was removed keeps its metadata (read after the write). The removed
        // version's other fields are not readable: the fresh version holds only the key.
        let (mut data, existing) = match current {
            Some(c) => (c.data, Some(c.custom_metadata)),
            None if removed => (KvData::new(), Some(None)),
            None => (KvData::new(), None),
        };
        data.insert(
            self.config.field.clone(),
            generate(&self.config.format).map_err(JobError::Transient)?,
        );
        crate::failpoint::pause("api-key-before-write").await;
        match ctx.vault.kv_write(path, &data, cas).await {
            Ok(written) => {
                let mut report = self.written(ctx, written, existing, now).await?;
                if removed {
                    report.detail = format!(
                        "version {cas} of {path} was deleted or destroyed; {}",
                        report.detail
                    );
                }
                Ok(report)
            }
            Err(VaultError::CasMismatch { .. }) => match ctx.vault.kv_read(path).await? {
                // A newer live version: someone else wrote it, and it counts as the rotation.
                Some(there) if there.version > cas => {
                    let detail = format!(
                        "check-and-set on version {cas} failed: version {} was written by someone else; it counts as the rotation",
                        there.version
                    );
                    tracing::warn!(job = %self.job, path, "{detail}");
                    Ok(RunReport {
                        work: Work::Nothing,
                        inspection: self.inspection(Some(&there)),
                        alerts: vec![self.conflict_signal(true, &detail)],
                        detail,
                    })
                }
                // Refused, yet nothing newer can be read (removed again meanwhile, or a
                // refusal this run cannot explain): not someone else's rotation. A failure
                // retried with backoff, never a success that leaves the job due at once.
                _ => Err(JobError::Transient(format!(
                    "check-and-set on version {cas} of {path} was refused but no newer version can be read; retrying"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }
}

impl ApiKeyRotator {
    /// After the new version is written: its `custom_metadata` (keeping `existing`'s other
    /// keys: `None` for a secret we created, `Some(None)` when the read did not include them),
    /// the `on_rotate` hook, and the report.
    async fn written(
        &self,
        ctx: &JobContext,
        written: KvWrite,
        existing: Option<Option<BTreeMap<String, String>>>,
        now: DateTime<Utc>,
    ) -> Result<RunReport, JobError> {
        crate::failpoint::hit("api-key-after-write");
        let path = self.config.path.as_str();
        let existing = match existing {
            None => BTreeMap::new(),
            Some(Some(custom)) => custom,
            Some(None) => ctx
                .vault
                .kv_metadata(path)
                .await?
                .map(|m| m.custom_metadata)
                .unwrap_or_default(),
        };
        ctx.vault
            .kv_set_custom_metadata(path, &rotation_metadata(&existing, &self.job, now))
            .await?;
        let mut detail = format!("rotated {path} to version {}", written.version);
        let mut alerts = vec![self.conflict_signal(false, &detail)];
        if let Some(url) = &self.config.on_rotate {
            let (signal, note) = self.notify(ctx, url, &written).await;
            detail = format!("{detail}; {note}");
            alerts.push(signal);
        }
        Ok(RunReport {
            work: Work::Done,
            inspection: Inspection {
                secret_changed_at: Some(written.created_time),
                secret_version: Some(written.version as i64),
                summary: detail.clone(),
            },
            alerts,
            detail,
        })
    }
}

fn format_name(f: &KeyFormat) -> String {
    let a = match f.alphabet {
        KeyAlphabet::Hex => "hex",
        KeyAlphabet::Base64Url => "base64url",
        KeyAlphabet::Alnum => "alnum",
    };
    format!("{a}:{}", f.length)
}

/// A new random key in `format`, from the OS CSPRNG.
pub fn generate(format: &KeyFormat) -> Result<SecretString, String> {
    let mut rng = OsRng;
    let body = match format.alphabet {
        KeyAlphabet::Hex | KeyAlphabet::Base64Url => {
            let mut bytes = Zeroizing::new(vec![0u8; format.length]);
            rng.try_fill_bytes(&mut bytes)
                .map_err(|e| format!("OS random number generator: {e}"))?;
            Zeroizing::new(match format.alphabet {
                KeyAlphabet::Hex => hex::encode(&*bytes),
                _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*bytes),
            })
        }
        KeyAlphabet::Alnum => {
            const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rng.unwrap_err();
            let mut s = Zeroizing::new(String::with_capacity(format.length));
            for _ in 0..format.length {
                s.push(ALNUM[rng.random_range(0..ALNUM.len())] as char);
            }
            s
        }
    };
    // Built in a wiped buffer and copied once into the secret: `SecretString::from(String)`
    // would shrink the string's allocation, and the old one would be freed unwiped.
    let mut key = Zeroizing::new(String::with_capacity(format.prefix.len() + body.len()));
    key.push_str(&format.prefix);
    key.push_str(&body);
    Ok(SecretString::from(key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn fmt(alphabet: KeyAlphabet, length: usize, prefix: &str) -> KeyFormat {
        KeyFormat {
            alphabet,
            length,
            prefix: prefix.into(),
        }
    }

    #[test]
    fn values_match_their_format() {
        let v = generate(&fmt(KeyAlphabet::Hex, 24, "")).unwrap();
        assert_eq!(v.expose_secret().len(), 48);
        assert!(v.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));

        let v = generate(&fmt(KeyAlphabet::Base64Url, 32, "sk_")).unwrap();
        let body = v.expose_secret().strip_prefix("sk_").unwrap();
        assert_eq!(body.len(), 43);
        assert!(
            body.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );

        let v = generate(&fmt(KeyAlphabet::Alnum, 40, "")).unwrap();
        assert_eq!(v.expose_secret().len(), 40);
        assert!(v.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn values_differ() {
        let f = fmt(KeyAlphabet::Hex, 16, "");
        let a = generate(&f).unwrap();
        let b = generate(&f).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
