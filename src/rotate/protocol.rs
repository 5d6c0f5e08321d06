//! The persisted rotation protocol: a rotation is a row in the store's `rotations` table that
//! moves through named steps, and each step is recorded *before* its side effect, so that after a
//! crash at any point the next process knows which side effect may have happened and repeats it
//! (every step's side effect is safe to repeat). A rotation ends `finished` or `abandoned`; at
//! most one is open per job.
//!
//! This module owns the bookkeeping only — begin, advance, finish — plus the fault-injection
//! points named after the steps (`rotation-STEP-recorded` right after a step is recorded, and
//! `rotation-STEP-done`, hit by the kind right after the step's side effect). What a step does
//! is the kind's business (see [`super::database`]). The detail kept with a rotation is a small
//! serde type of the kind's choosing: identifiers, versions and paths, never a secret value.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::JobError;
use crate::store::{NewRotation, RotationStatus, Store, StoreError};

/// One open rotation as the kind drives it.
#[derive(Debug, Clone)]
pub struct Rotation<D> {
    pub id: i64,
    /// The step recorded last: its side effect may or may not have happened.
    pub step: String,
    pub detail: D,
}

/// The rotations of one job in the store.
pub struct Protocol {
    store: Arc<dyn Store>,
    job: String,
    kind: &'static str,
}

impl Protocol {
    pub fn new(store: Arc<dyn Store>, job: &str, kind: &'static str) -> Self {
        Protocol {
            store,
            job: job.to_string(),
            kind,
        }
    }

    /// The job's open rotation, if any. Should there be several (only a bug or a hand edit of
    /// the store could do that), the newest is the one to resume and the older ones are closed
    /// as abandoned.
    pub async fn open<D: DeserializeOwned>(&self) -> Result<Option<Rotation<D>>, JobError> {
        let mut open = self.store.open_rotations(Some(&self.job)).await?;
        let Some(newest) = open.pop() else {
            return Ok(None);
        };
        for stale in open {
            tracing::warn!(job = %self.job, rotation = stale.id, step = %stale.step, "closing an older open rotation; only the newest is resumed");
            self.store
                .finish_rotation(stale.id, RotationStatus::Abandoned, None, Utc::now())
                .await?;
        }
        let detail = newest.detail.as_deref().unwrap_or("null");
        let detail: D = serde_json::from_str(detail).map_err(|e| {
            StoreError::Corrupt(format!(
                "rotation {} has an unreadable detail: {e}",
                newest.id
            ))
        })?;
        Ok(Some(Rotation {
            id: newest.id,
            step: newest.step,
            detail,
        }))
    }

    /// Records a new rotation at `step` (before that step's side effect).
    pub async fn begin<D: Serialize>(
        &self,
        step: &str,
        detail: D,
    ) -> Result<Rotation<D>, JobError> {
        let id = self
            .store
            .begin_rotation(&NewRotation {
                job: self.job.clone(),
                kind: self.kind.to_string(),
                step: step.to_string(),
                detail: Some(encode(&detail)?),
                started_at: Utc::now(),
            })
            .await?;
        tracing::info!(job = %self.job, rotation = id, step, "rotation started");
        recorded(step);
        Ok(Rotation {
            id,
            step: step.to_string(),
            detail,
        })
    }

    /// Records that `rotation` moves to `step` (with its detail as it is now), before that
    /// step's side effect.
    pub async fn advance<D: Serialize>(
        &self,
        rotation: &mut Rotation<D>,
        step: &str,
    ) -> Result<(), JobError> {
        self.store
            .set_rotation_step(
                rotation.id,
                step,
                Some(&encode(&rotation.detail)?),
                Utc::now(),
            )
            .await?;
        tracing::debug!(job = %self.job, rotation = rotation.id, step, "rotation step recorded");
        rotation.step = step.to_string();
        recorded(step);
        Ok(())
    }

    /// Closes `rotation` as finished or abandoned.
    pub async fn finish<D: Serialize>(
        &self,
        rotation: &Rotation<D>,
        status: RotationStatus,
    ) -> Result<(), JobError> {
        self.store
            .finish_rotation(
                rotation.id,
                status,
                Some(&encode(&rotation.detail)?),
                Utc::now(),
            )
            .await?;
        tracing::info!(job = %self.job, rotation = rotation.id, status = %status, "rotation closed");
        Ok(())
    }
}

fn encode<D: Serialize>(detail: &D) -> Result<String, JobError> {
    serde_json::to_string(detail)
        .map_err(|e| JobError::Permanent(format!("encoding a rotation's detail: {e}")))
}

/// The failpoint right after `step` was recorded, before its side effect.
fn recorded(step: &str) {
    crate::failpoint::hit(&format!("rotation-{step}-recorded"));
}

/// The failpoint right after `step`'s side effect, before the next step is recorded.
pub fn done(step: &str) {
    crate::failpoint::hit(&format!("rotation-{step}-done"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Detail {
        target: String,
        version: u64,
    }

    #[tokio::test]
    async fn steps_are_recorded_and_the_newest_open_rotation_resumes() {
        let store = crate::store::open("sqlite::memory:", None).await.unwrap();
        let p = Protocol::new(store.clone(), "j1", "postgres");
        assert!(p.open::<Detail>().await.unwrap().is_none());

        let first = p
            .begin(
                "pending",
                Detail {
                    target: "a".into(),
                    version: 1,
                },
            )
            .await
            .unwrap();
        let mut second = p
            .begin(
                "pending",
                Detail {
                    target: "b".into(),
                    version: 2,
                },
            )
            .await
            .unwrap();
        second.detail.version = 3;
        p.advance(&mut second, "apply").await.unwrap();

        let open: Rotation<Detail> = p.open().await.unwrap().unwrap();
        assert_eq!(open.id, second.id);
        assert_eq!(open.step, "apply");
        assert_eq!(open.detail.version, 3);
        // The older one was closed on the way.
        let left = store.open_rotations(Some("j1")).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_ne!(left[0].id, first.id);

        p.finish(&open, RotationStatus::Finished).await.unwrap();
        assert!(p.open::<Detail>().await.unwrap().is_none());
        // Other jobs' rotations are not ours.
        let other = Protocol::new(store.clone(), "j2", "mysql");
        other
            .begin(
                "pending",
                Detail {
                    target: "x".into(),
                    version: 0,
                },
            )
            .await
            .unwrap();
        assert!(p.open::<Detail>().await.unwrap().is_none());
    }
}
