//! The state store as one simulated instance sees it: the rotation and deferred-action tables,
//! either of the real store (SQLite in memory) or of a model of them kept in the world (the real
//! store costs about 60% of a schedule's time in a debug build, so most seeds use the model and
//! every tenth the real store), with each rotation call made an await point of the scheduler (so a crash can fall between two store
//! writes, or a write can commit and lose its answer), and with fencing — once another instance
//! has taken over, this instance's writes are refused, as the PostgreSQL store's lease fence
//! refuses a deposed leader's. It also tells the world which rotations are open and whether one
//! is closed twice (I4).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Fault, OpKind, Port};
use crate::store::*;

pub(super) struct SimStore {
    /// The real store; also holds every table the protocols do not use.
    pub(super) inner: Arc<dyn Store>,
    /// Whether the rotation and action tables are the real store's (else the world's model).
    pub(super) real: bool,
    pub(super) port: Port,
}

/// The rotation and deferred-action tables, as the store keeps them.
#[derive(Default)]
pub(super) struct Tables {
    rotations: std::collections::BTreeMap<i64, RotationRecord>,
    actions: Vec<ActionRecord>,
    next_id: i64,
}

impl Tables {
    fn begin(&mut self, r: &NewRotation) -> i64 {
        self.next_id += 1;
        let record = RotationRecord {
            id: self.next_id,
            job: r.job.clone(),
            kind: r.kind.clone(),
            step: r.step.clone(),
            status: RotationStatus::Open,
            detail: r.detail.clone(),
            started_at: r.started_at,
            updated_at: r.started_at,
        };
        self.rotations.insert(self.next_id, record);
        self.next_id
    }

    /// Like the SQL: `UPDATE … WHERE id = $1`, whatever the status; `None` keeps the detail.
    fn update(
        &mut self,
        id: i64,
        step: Option<&str>,
        status: Option<RotationStatus>,
        detail: Option<&str>,
    ) {
        if let Some(r) = self.rotations.get_mut(&id) {
            if let Some(step) = step {
                r.step = step.to_string();
            }
            if let Some(status) = status {
                r.status = status;
            }
            if let Some(detail) = detail {
                r.detail = Some(detail.to_string());
            }
        }
    }

    fn open(&self, job: Option<&str>) -> Vec<RotationRecord> {
        self.rotations
            .values()
            .filter(|r| r.status == RotationStatus::Open && job.is_none_or(|j| r.job == j))
            .cloned()
            .collect()
    }

    fn schedule(&mut self, a: &NewAction) -> i64 {
        self.next_id += 1;
        self.actions.push(ActionRecord {
            id: self.next_id,
            job: a.job.clone(),
            action: a.action.clone(),
            payload: a.payload.clone(),
            due_at: a.due_at,
            attempts: 0,
            last_error: None,
        });
        self.next_id
    }

    fn pending(&self, job: &str) -> Vec<ActionRecord> {
        self.actions
            .iter()
            .filter(|a| a.job == job)
            .cloned()
            .collect()
    }
}

impl SimStore {
    /// The gate before a store call: `Err` for an injected failure before it.
    async fn enter(&self, kind: OpKind, what: &str) -> Result<Fault, StoreError> {
        let fault = self.port.gate(kind, || what.to_string()).await;
        if fault == Fault::Fail {
            return Err(StoreError::Database(sqlx::Error::PoolTimedOut));
        }
        if kind == OpKind::StoreWrite && self.port.fenced() {
            return Err(StoreError::InUse(
                "fenced: another instance has taken over".into(),
            ));
        }
        Ok(fault)
    }

    /// After the call's effect: a lost answer or a crash.
    async fn leave<T>(&self, fault: Fault, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match fault {
            Fault::LoseAnswer if result.is_ok() => {
                Err(StoreError::Database(sqlx::Error::PoolTimedOut))
            }
            Fault::CrashAfter => self.port.die().await,
            _ => result,
        }
    }
}

#[async_trait]
impl Store for SimStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn job_state(&self, job: &str) -> Result<Option<JobState>, StoreError> {
        self.inner.job_state(job).await
    }

    async fn job_states(&self) -> Result<Vec<JobState>, StoreError> {
        self.inner.job_states().await
    }

    async fn put_job_state(&self, state: &JobState) -> Result<(), StoreError> {
        self.inner.put_job_state(state).await
    }

    async fn start_run(&self, run: &NewRun) -> Result<i64, StoreError> {
        self.inner.start_run(run).await
    }

    async fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), StoreError> {
        self.inner.finish_run(id, end).await
    }

    async fn lock_and_start_run(
        &self,
        holder: &str,
        expires_at: DateTime<Utc>,
        run: &NewRun,
    ) -> Result<Option<i64>, StoreError> {
        self.inner.lock_and_start_run(holder, expires_at, run).await
    }

    async fn end_runs(&self, ends: &[RunEnding]) -> Result<(), StoreError> {
        self.inner.end_runs(ends).await
    }

    async fn recent_runs(&self, job: &str, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.recent_runs(job, limit).await
    }

    async fn close_interrupted_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.close_interrupted_runs(now).await
    }

    async fn try_lock(
        &self,
        job: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.try_lock(job, holder, now, expires_at).await
    }

    async fn renew_lock(
        &self,
        job: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lock(job, holder, expires_at).await
    }

    async fn unlock(&self, job: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.unlock(job, holder).await
    }

    async fn lock_info(&self, job: &str) -> Result<Option<LockInfo>, StoreError> {
        self.inner.lock_info(job).await
    }

    async fn begin_rotation(&self, rotation: &NewRotation) -> Result<i64, StoreError> {
        let fault = self
            .enter(OpKind::StoreWrite, "store begin_rotation")
            .await?;
        let result = if self.real {
            self.inner.begin_rotation(rotation).await
        } else {
            Ok(self.port.world(|w| w.tables.begin(rotation)))
        };
        if let Ok(id) = &result {
            let id = *id;
            self.port.world(|w| {
                w.note(|| format!("  rotation {id} begun"));
                w.open.insert(id);
            });
        }
        self.leave(fault, result).await
    }

    async fn set_rotation_step(
        &self,
        id: i64,
        step: &str,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fault = self
            .enter(
                OpKind::StoreWrite,
                &format!("store rotation {id} -> {step}"),
            )
            .await?;
        let result = if self.real {
            self.inner.set_rotation_step(id, step, detail, now).await
        } else {
            self.port
                .world(|w| w.tables.update(id, Some(step), None, detail));
            Ok(())
        };
        self.leave(fault, result).await
    }

    async fn finish_rotation(
        &self,
        id: i64,
        status: RotationStatus,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fault = self
            .enter(
                OpKind::StoreWrite,
                &format!("store finish rotation {id} {status}"),
            )
            .await?;
        let result = if self.real {
            self.inner.finish_rotation(id, status, detail, now).await
        } else {
            self.port
                .world(|w| w.tables.update(id, None, Some(status), detail));
            Ok(())
        };
        if result.is_ok() {
            self.port.world(|w| {
                if let Some(before) = w.closed.get(&id) {
                    let before = *before;
                    w.violation(format!(
                        "I4: rotation {id} was closed twice ({before}, then {status})"
                    ));
                }
                w.open.remove(&id);
                w.closed.insert(id, status);
                if status == RotationStatus::Finished {
                    w.finished += 1;
                }
            });
        }
        self.leave(fault, result).await
    }

    async fn open_rotations(&self, job: Option<&str>) -> Result<Vec<RotationRecord>, StoreError> {
        let fault = self
            .enter(OpKind::StoreRead, "store open_rotations")
            .await?;
        let result = if self.real {
            self.inner.open_rotations(job).await
        } else {
            Ok(self.port.world(|w| w.tables.open(job)))
        };
        self.leave(fault, result).await
    }

    async fn record_snapshot(&self, snapshot: &SnapshotRecord) -> Result<(), StoreError> {
        self.inner.record_snapshot(snapshot).await
    }

    async fn snapshots(&self, job: &str, limit: u32) -> Result<Vec<SnapshotRecord>, StoreError> {
        self.inner.snapshots(job, limit).await
    }

    async fn delete_snapshot(
        &self,
        job: &str,
        destination: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        self.inner.delete_snapshot(job, destination, key).await
    }

    async fn schedule_action(&self, action: &NewAction) -> Result<i64, StoreError> {
        let fault = self
            .enter(OpKind::StoreWrite, "store schedule_action")
            .await?;
        let result = if self.real {
            self.inner.schedule_action(action).await
        } else {
            Ok(self.port.world(|w| w.tables.schedule(action)))
        };
        self.leave(fault, result).await
    }

    async fn due_actions(&self, now: DateTime<Utc>) -> Result<Vec<ActionRecord>, StoreError> {
        self.inner.due_actions(now).await
    }

    async fn pending_actions(&self, job: &str) -> Result<Vec<ActionRecord>, StoreError> {
        let fault = self
            .enter(OpKind::StoreRead, "store pending_actions")
            .await?;
        let result = if self.real {
            self.inner.pending_actions(job).await
        } else {
            Ok(self.port.world(|w| w.tables.pending(job)))
        };
        self.leave(fault, result).await
    }

    async fn complete_action(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.complete_action(id, now).await
    }

    async fn retry_action(
        &self,
        id: i64,
        error: &str,
        next_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.retry_action(id, error, next_at).await
    }

    async fn upsert_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        self.inner.upsert_alert(alert).await
    }

    async fn alert(&self, fingerprint: &str) -> Result<Option<AlertRecord>, StoreError> {
        self.inner.alert(fingerprint).await
    }

    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.firing_alerts().await
    }

    async fn enqueue_delivery(&self, delivery: &NewDelivery) -> Result<i64, StoreError> {
        self.inner.enqueue_delivery(delivery).await
    }

    async fn claim_deliveries(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.inner
            .claim_deliveries(claimer, now, lease_until, limit)
            .await
    }

    async fn claim_sink_deliveries(
        &self,
        sink: &str,
        claimer: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.inner
            .claim_sink_deliveries(sink, claimer, now, lease_until, limit)
            .await
    }

    async fn mark_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.mark_delivered(id, now).await
    }

    async fn mark_delivery_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .mark_delivery_failed(id, error, next_attempt_at)
            .await
    }

    async fn queued_deliveries(&self) -> Result<u64, StoreError> {
        self.inner.queued_deliveries().await
    }

    async fn prune_sent_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.prune_sent_deliveries(before).await
    }

    async fn deliveries(&self, fingerprint: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.inner.deliveries(fingerprint).await
    }
}
