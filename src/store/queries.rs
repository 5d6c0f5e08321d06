//! The SQL of the state store, written once for both backends.
//!
//! SQLite and PostgreSQL accept the same statements here (`$N` placeholders, `INSERT … ON
//! CONFLICT … DO UPDATE … WHERE`, `UPDATE … RETURNING`, BIGINT/INTEGER millisecond times), and
//! sqlx's query builders are generic over the database. So [`impl_store!`] expands one body of
//! [`Store`](super::Store) methods for each backend's pool type; the only text that differs is
//! the row-locking clause of `claim_deliveries`, which SQLite does not need (one `UPDATE` holds
//! its write lock for the whole statement) and PostgreSQL needs (`FOR UPDATE SKIP LOCKED`), and
//! the statements that make one write wait for the disk (`power_safe`): SQLite commits with
//! `synchronous = NORMAL`, and a database rotation's steps switch that connection to `FULL`
//! for their commit, which also flushes every commit before it. Rows decode through the
//! backend-neutral structs of `rows`.

/// The columns of each table that its row struct in `rows` decodes, for `SELECT`/`RETURNING`
/// lists and `INSERT` column lists.
macro_rules! columns {
    (job_states) => {
        "job, kind, last_run_at, last_success_at, last_outcome, consecutive_failures, \
         secret_changed_at, secret_version, retry_at, last_error"
    };
    (runs) => {
        "id, job, kind, triggered_by, started_at, finished_at, outcome, detail, error"
    };
    (rotations) => {
        "id, job, kind, step, status, detail, started_at, updated_at"
    };
    (snapshots) => {
        "job, destination, object_key, taken_at, size_bytes, sha256, raft_index, raft_term"
    };
    (actions) => {
        "id, job, action, payload, due_at, attempts, last_error"
    };
    (alerts) => {
        "fingerprint, name, job, severity, status, summary, details, started_at, resolved_at, \
         last_notified_at"
    };
    (deliveries) => {
        "id, fingerprint, sink, kind, state, attempts, next_attempt_at, last_error, created_at, \
         sent_at, summary, details"
    };
}

/// Statements used both on their own and inside a transaction.
macro_rules! sql {
    (try_lock) => {
        "INSERT INTO job_locks (job, holder, acquired_at, expires_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
         acquired_at = CASE WHEN job_locks.holder = excluded.holder \
             AND job_locks.expires_at > excluded.acquired_at \
             THEN job_locks.acquired_at ELSE excluded.acquired_at END, \
         expires_at = excluded.expires_at \
         WHERE job_locks.expires_at <= excluded.acquired_at \
             OR job_locks.holder = excluded.holder"
    };
    (start_run) => {
        "INSERT INTO runs (job, kind, triggered_by, started_at) VALUES ($1, $2, $3, $4) RETURNING id"
    };
    (finish_run) => {
        "UPDATE runs SET finished_at = $2, outcome = $3, detail = $4, error = $5 WHERE id = $1"
    };
    (put_job_state) => {
        concat!(
            "INSERT INTO job_states (",
            $crate::store::queries::columns!(job_states),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            $crate::store::queries::sql!(put_job_state_conflict)
        )
    };
    (put_job_state_conflict) => {
        " ON CONFLICT (job) DO UPDATE SET kind = excluded.kind, \
         last_run_at = excluded.last_run_at, \
         last_success_at = excluded.last_success_at, \
         last_outcome = excluded.last_outcome, \
         consecutive_failures = excluded.consecutive_failures, \
         secret_changed_at = excluded.secret_changed_at, \
         secret_version = excluded.secret_version, \
         retry_at = excluded.retry_at, \
         last_error = excluded.last_error"
    };
}

/// Switches a pooled connection to waiting for the disk at commit (`$sql`; empty: the backend
/// always does).
macro_rules! power_safe_on {
    ($conn:ident, $sql:literal) => {
        if !$sql.is_empty() {
            sqlx::query($sql).execute(&mut *$conn).await?;
        }
    };
}

/// Switches it back, whatever the write did; a connection left switched is only slower.
macro_rules! power_safe_off {
    ($conn:ident, $sql:literal) => {
        if !$sql.is_empty()
            && let Err(e) = sqlx::query($sql).execute(&mut *$conn).await
        {
            tracing::warn!(error = %e, "could not switch a state store connection back to NORMAL sync");
        }
    };
}

/// Implements [`Store`](super::Store) for `$store`, a struct with a field `pool` holding an
/// `sqlx::Pool` of its backend. `$claim_lock` is appended to the subquery that picks the
/// deliveries to claim.
macro_rules! impl_store {
    (
        $store:ty,
        backend = $backend:literal,
        claim_lock = $claim_lock:literal,
        power_safe = ($sync_on:literal, $sync_off:literal)
    ) => {
        const _: () = {
            use chrono::{DateTime, Utc};
            use $crate::store::rows::{
                ActionRow, AlertRow, DeliveryRow, JobStateRow, LockRow, RotationRow, RunRow,
                SnapshotRow, ms, opt_ms, records,
            };
            use $crate::store::{
                ActionRecord, AlertRecord, DeliveryRecord, JobState, LockInfo, NewAction,
                NewDelivery, NewRotation, NewRun, RotationRecord, RotationStatus, RunEnd,
                RunEnding, RunRecord, SnapshotRecord, StoreError,
            };

            #[async_trait::async_trait]
            impl $crate::store::Store for $store {
                fn backend(&self) -> &'static str {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                }

                // ---- job state ---------------------------------------------------------------

                async fn job_state(&self, job: &str) -> Result<Option<JobState>, StoreError> {
                    let row: Option<JobStateRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(job_states),
                        " FROM job_states WHERE job = $1"
                    ))
                    .bind(job)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(JobState::try_from).transpose()
                }

                async fn job_states(&self) -> Result<Vec<JobState>, StoreError> {
                    let rows: Vec<JobStateRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(job_states),
                        " FROM job_states ORDER BY job"
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn put_job_state(&self, state: &JobState) -> Result<(), StoreError> {
                    sqlx::query($crate::store::queries::sql!(put_job_state))
                    .bind(&state.job)
                    .bind(&state.kind)
                    .bind(opt_ms(state.last_run_at))
                    .bind(opt_ms(state.last_success_at))
                    .bind(state.last_outcome.as_ref().map(|o| o.as_str()))
                    .bind(i64::from(state.consecutive_failures))
                    .bind(opt_ms(state.secret_changed_at))
                    .bind(state.secret_version)
                    .bind(opt_ms(state.retry_at))
                    .bind(state.last_error.as_deref())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                // ---- runs --------------------------------------------------------------------

                async fn start_run(&self, run: &NewRun) -> Result<i64, StoreError> {
                    let id: i64 = sqlx::query_scalar($crate::store::queries::sql!(start_run))
                    .bind(&run.job)
                    .bind(&run.kind)
                    .bind(run.trigger.as_str())
                    .bind(ms(run.started_at))
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(id)
                }

                async fn finish_run(&self, id: i64, end: &RunEnd) -> Result<(), StoreError> {
                    sqlx::query($crate::store::queries::sql!(finish_run))
                    .bind(id)
                    .bind(ms(end.finished_at))
                    .bind(end.outcome.as_str())
                    .bind(end.detail.as_deref())
                    .bind(end.error.as_deref())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn lock_and_start_run(
                    &self,
                    holder: &str,
                    expires_at: DateTime<Utc>,
                    run: &NewRun,
                ) -> Result<Option<i64>, StoreError> {
                    let mut tx = self.pool.begin().await?;
                    let locked = sqlx::query($crate::store::queries::sql!(try_lock))
                        .bind(&run.job)
                        .bind(holder)
                        .bind(ms(run.started_at))
                        .bind(ms(expires_at))
                        .execute(&mut *tx)
                        .await?;
                    if locked.rows_affected() != 1 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let id: i64 = sqlx::query_scalar($crate::store::queries::sql!(start_run))
                        .bind(&run.job)
                        .bind(&run.kind)
                        .bind(run.trigger.as_str())
                        .bind(ms(run.started_at))
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(Some(id))
                }

                async fn end_runs(&self, ends: &[RunEnding]) -> Result<(), StoreError> {
                    if ends.is_empty() {
                        return Ok(());
                    }
                    // Three statements for the whole batch, each row once, not kept prepared (each
                    // batch size is a statement of its own: a cache of them costs MiBs and saves
                    // little next to the round trips the batch saves). One job's endings
                    // never share a batch (its next run starts after this one is recorded), but
                    // should they, they are recorded one at a time, in order.
                    let mut jobs = std::collections::HashSet::new();
                    if !ends.iter().all(|e| jobs.insert(e.state.job.as_str())) {
                        for e in ends {
                            self.end_runs(std::slice::from_ref(e)).await?;
                        }
                        return Ok(());
                    }
                    let mut tx = self.pool.begin().await?;
                    let mut runs = sqlx::QueryBuilder::new(
                        "UPDATE runs SET finished_at = v.column2, outcome = v.column3, \
                         detail = v.column4, error = v.column5 FROM (",
                    );
                    runs.push_values(ends, |mut row, e| {
                        row.push_bind(e.run_id)
                            .push_bind(ms(e.end.finished_at))
                            .push_bind(e.end.outcome.as_str())
                            .push_bind(e.end.detail.as_deref())
                            .push_bind(e.end.error.as_deref());
                    });
                    runs.push(") AS v WHERE runs.id = v.column1");
                    runs.build().persistent(false).execute(&mut *tx).await?;
                    let mut states = sqlx::QueryBuilder::new(concat!(
                        "INSERT INTO job_states (",
                        $crate::store::queries::columns!(job_states),
                        ") "
                    ));
                    states.push_values(ends, |mut row, e| {
                        let state = &e.state;
                        row.push_bind(&state.job)
                            .push_bind(&state.kind)
                            .push_bind(opt_ms(state.last_run_at))
                            .push_bind(opt_ms(state.last_success_at))
                            .push_bind(state.last_outcome.as_ref().map(|o| o.as_str()))
                            .push_bind(i64::from(state.consecutive_failures))
                            .push_bind(opt_ms(state.secret_changed_at))
                            .push_bind(state.secret_version)
                            .push_bind(opt_ms(state.retry_at))
                            .push_bind(state.last_error.as_deref());
                    });
                    states.push($crate::store::queries::sql!(put_job_state_conflict));
                    states.build().persistent(false).execute(&mut *tx).await?;
                    let mut unlock = sqlx::QueryBuilder::new(
                        "DELETE FROM job_locks WHERE (job, holder) IN (",
                    );
                    unlock.push_values(ends, |mut row, e| {
                        row.push_bind(&e.state.job).push_bind(&e.holder);
                    });
                    unlock.push(")");
                    unlock.build().persistent(false).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn recent_runs(
                    &self,
                    job: &str,
                    limit: u32,
                ) -> Result<Vec<RunRecord>, StoreError> {
                    let rows: Vec<RunRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(runs),
                        " FROM runs WHERE job = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
                    ))
                    .bind(job)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn close_interrupted_runs(
                    &self,
                    now: DateTime<Utc>,
                ) -> Result<Vec<RunRecord>, StoreError> {
                    let rows: Vec<RunRow> = sqlx::query_as(concat!(
                        "UPDATE runs SET finished_at = $1, outcome = 'interrupted' \
                         WHERE finished_at IS NULL RETURNING ",
                        $crate::store::queries::columns!(runs)
                    ))
                    .bind(ms(now))
                    .fetch_all(&self.pool)
                    .await?;
                    let mut runs: Vec<RunRecord> = records(rows)?;
                    runs.sort_by_key(|r| (r.started_at, r.id));
                    Ok(runs)
                }

                // ---- locks -------------------------------------------------------------------

                async fn try_lock(
                    &self,
                    job: &str,
                    holder: &str,
                    now: DateTime<Utc>,
                    expires_at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    // One statement, so the database's own row locking makes it race-free: a
                    // concurrent inserter waits for the first and then sees its (unexpired) row.
                    let done = sqlx::query($crate::store::queries::sql!(try_lock))
                    .bind(job)
                    .bind(holder)
                    .bind(ms(now))
                    .bind(ms(expires_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn renew_lock(
                    &self,
                    job: &str,
                    holder: &str,
                    expires_at: DateTime<Utc>,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE job_locks SET expires_at = $3 WHERE job = $1 AND holder = $2",
                    )
                    .bind(job)
                    .bind(holder)
                    .bind(ms(expires_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn unlock(&self, job: &str, holder: &str) -> Result<(), StoreError> {
                    sqlx::query("DELETE FROM job_locks WHERE job = $1 AND holder = $2")
                        .bind(job)
                        .bind(holder)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn lock_info(&self, job: &str) -> Result<Option<LockInfo>, StoreError> {
                    let row: Option<LockRow> = sqlx::query_as(
                        "SELECT job, holder, acquired_at, expires_at FROM job_locks WHERE job = $1",
                    )
                    .bind(job)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(LockInfo::try_from).transpose()
                }

                // ---- rotation state machines ---------------------------------------------------

                async fn begin_rotation(&self, rotation: &NewRotation) -> Result<i64, StoreError> {
                    let mut conn = self.pool.acquire().await?;
                    $crate::store::queries::power_safe_on!(conn, $sync_on);
                    let id: Result<i64, sqlx::Error> = sqlx::query_scalar(
                        "INSERT INTO rotations \
                         (job, kind, step, status, detail, started_at, updated_at) \
                         VALUES ($1, $2, $3, 'open', $4, $5, $5) RETURNING id",
                    )
                    .bind(&rotation.job)
                    .bind(&rotation.kind)
                    .bind(&rotation.step)
                    .bind(rotation.detail.as_deref())
                    .bind(ms(rotation.started_at))
                    .fetch_one(&mut *conn)
                    .await;
                    $crate::store::queries::power_safe_off!(conn, $sync_off);
                    Ok(id?)
                }

                async fn set_rotation_step(
                    &self,
                    id: i64,
                    step: &str,
                    detail: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    // A `None` detail keeps the facts recorded by earlier steps.
                    let mut conn = self.pool.acquire().await?;
                    $crate::store::queries::power_safe_on!(conn, $sync_on);
                    let done = sqlx::query(
                        "UPDATE rotations SET step = $2, detail = COALESCE($3, detail), \
                         updated_at = $4 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(step)
                    .bind(detail)
                    .bind(ms(now))
                    .execute(&mut *conn)
                    .await;
                    $crate::store::queries::power_safe_off!(conn, $sync_off);
                    done?;
                    Ok(())
                }

                async fn finish_rotation(
                    &self,
                    id: i64,
                    status: RotationStatus,
                    detail: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    let mut conn = self.pool.acquire().await?;
                    $crate::store::queries::power_safe_on!(conn, $sync_on);
                    let done = sqlx::query(
                        "UPDATE rotations SET status = $2, detail = COALESCE($3, detail), \
                         updated_at = $4 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(status.as_str())
                    .bind(detail)
                    .bind(ms(now))
                    .execute(&mut *conn)
                    .await;
                    $crate::store::queries::power_safe_off!(conn, $sync_off);
                    done?;
                    Ok(())
                }

                async fn open_rotations(
                    &self,
                    job: Option<&str>,
                ) -> Result<Vec<RotationRecord>, StoreError> {
                    let rows: Vec<RotationRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(rotations),
                        " FROM rotations WHERE status = 'open' AND ($1 IS NULL OR job = $1) \
                         ORDER BY started_at, id"
                    ))
                    .bind(job)
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                // ---- snapshots ---------------------------------------------------------------

                async fn record_snapshot(
                    &self,
                    snapshot: &SnapshotRecord,
                ) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "INSERT INTO snapshots (",
                        $crate::store::queries::columns!(snapshots),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (job, destination, object_key) DO UPDATE SET \
                         taken_at = excluded.taken_at, size_bytes = excluded.size_bytes, \
                         sha256 = excluded.sha256, raft_index = excluded.raft_index, \
                         raft_term = excluded.raft_term"
                    ))
                    .bind(&snapshot.job)
                    .bind(&snapshot.destination)
                    .bind(&snapshot.key)
                    .bind(ms(snapshot.taken_at))
                    .bind(snapshot.size_bytes)
                    .bind(&snapshot.sha256)
                    .bind(snapshot.raft_index)
                    .bind(snapshot.raft_term)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn snapshots(
                    &self,
                    job: &str,
                    limit: u32,
                ) -> Result<Vec<SnapshotRecord>, StoreError> {
                    let rows: Vec<SnapshotRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(snapshots),
                        " FROM snapshots WHERE job = $1 \
                         ORDER BY taken_at DESC, destination, object_key LIMIT $2"
                    ))
                    .bind(job)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn delete_snapshot(
                    &self,
                    job: &str,
                    destination: &str,
                    key: &str,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "DELETE FROM snapshots \
                         WHERE job = $1 AND destination = $2 AND object_key = $3",
                    )
                    .bind(job)
                    .bind(destination)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                // ---- deferred actions ----------------------------------------------------------

                async fn schedule_action(&self, action: &NewAction) -> Result<i64, StoreError> {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO actions (job, action, payload, due_at) \
                         VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(&action.job)
                    .bind(&action.action)
                    .bind(&action.payload)
                    .bind(ms(action.due_at))
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(id)
                }

                async fn due_actions(
                    &self,
                    now: DateTime<Utc>,
                ) -> Result<Vec<ActionRecord>, StoreError> {
                    let rows: Vec<ActionRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(actions),
                        " FROM actions WHERE done_at IS NULL AND due_at <= $1 ORDER BY due_at, id"
                    ))
                    .bind(ms(now))
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn pending_actions(
                    &self,
                    job: &str,
                ) -> Result<Vec<ActionRecord>, StoreError> {
                    let rows: Vec<ActionRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(actions),
                        " FROM actions WHERE done_at IS NULL AND job = $1 ORDER BY due_at, id"
                    ))
                    .bind(job)
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn complete_action(
                    &self,
                    id: i64,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query("UPDATE actions SET done_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(ms(now))
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn retry_action(
                    &self,
                    id: i64,
                    error: &str,
                    next_at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE actions SET attempts = attempts + 1, last_error = $2, due_at = $3 \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(ms(next_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                // ---- alert outbox --------------------------------------------------------------

                async fn upsert_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
                    sqlx::query(concat!(
                        "INSERT INTO alerts (",
                        $crate::store::queries::columns!(alerts),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (fingerprint) DO UPDATE SET name = excluded.name, \
                         job = excluded.job, severity = excluded.severity, \
                         status = excluded.status, \
                         summary = excluded.summary, details = excluded.details, \
                         started_at = excluded.started_at, resolved_at = excluded.resolved_at, \
                         last_notified_at = excluded.last_notified_at"
                    ))
                    .bind(&alert.fingerprint)
                    .bind(&alert.name)
                    .bind(&alert.job)
                    .bind(&alert.severity)
                    .bind(alert.status.as_str())
                    .bind(&alert.summary)
                    .bind(&alert.details)
                    .bind(ms(alert.started_at))
                    .bind(opt_ms(alert.resolved_at))
                    .bind(opt_ms(alert.last_notified_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn alert(
                    &self,
                    fingerprint: &str,
                ) -> Result<Option<AlertRecord>, StoreError> {
                    let row: Option<AlertRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(alerts),
                        " FROM alerts WHERE fingerprint = $1"
                    ))
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(AlertRecord::try_from).transpose()
                }

                async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
                    let rows: Vec<AlertRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(alerts),
                        " FROM alerts WHERE status = 'firing' ORDER BY started_at, fingerprint"
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }

                async fn enqueue_delivery(
                    &self,
                    delivery: &NewDelivery,
                ) -> Result<i64, StoreError> {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO deliveries \
                         (fingerprint, sink, kind, state, attempts, next_attempt_at, created_at, \
                          summary, details) \
                         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $5, $6) RETURNING id",
                    )
                    .bind(&delivery.fingerprint)
                    .bind(&delivery.sink)
                    .bind(delivery.kind.as_str())
                    .bind(ms(delivery.created_at))
                    .bind(&delivery.summary)
                    .bind(&delivery.details)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(id)
                }

                async fn claim_deliveries(
                    &self,
                    claimer: &str,
                    now: DateTime<Utc>,
                    lease_until: DateTime<Utc>,
                    limit: u32,
                ) -> Result<Vec<DeliveryRecord>, StoreError> {
                    // The outer condition repeats the inner one so that a row claimed by a
                    // concurrent statement after our snapshot is re-checked, not re-claimed.
                    let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                        "UPDATE deliveries SET claimed_by = $1, lease_until = $3, \
                         attempts = attempts + 1 \
                         WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' \
                             AND next_attempt_at <= $2 \
                             AND (lease_until IS NULL OR lease_until <= $2) \
                             ORDER BY next_attempt_at, id LIMIT $4 ",
                        $claim_lock,
                        ") AND state = 'pending' AND (lease_until IS NULL OR lease_until <= $2) \
                         RETURNING ",
                        $crate::store::queries::columns!(deliveries)
                    ))
                    .bind(claimer)
                    .bind(ms(now))
                    .bind(ms(lease_until))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    let mut claimed: Vec<DeliveryRecord> = records(rows)?;
                    claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
                    Ok(claimed)
                }

                async fn claim_sink_deliveries(
                    &self,
                    sink: &str,
                    claimer: &str,
                    now: DateTime<Utc>,
                    lease_until: DateTime<Utc>,
                    limit: u32,
                ) -> Result<Vec<DeliveryRecord>, StoreError> {
                    // As `claim_deliveries`, for one sink, and only the oldest pending delivery
                    // of each alert: a later one waits until the earlier one is sent.
                    let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                        "UPDATE deliveries SET claimed_by = $1, lease_until = $3, \
                         attempts = attempts + 1 \
                         WHERE id IN (SELECT d.id FROM deliveries d WHERE d.sink = $5 \
                             AND d.state = 'pending' AND d.next_attempt_at <= $2 \
                             AND (d.lease_until IS NULL OR d.lease_until <= $2) \
                             AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.sink = d.sink \
                                 AND o.fingerprint = d.fingerprint AND o.state = 'pending' \
                                 AND o.id < d.id) \
                             ORDER BY d.next_attempt_at, d.id LIMIT $4 ",
                        $claim_lock,
                        ") AND state = 'pending' AND (lease_until IS NULL OR lease_until <= $2) \
                         RETURNING ",
                        $crate::store::queries::columns!(deliveries)
                    ))
                    .bind(claimer)
                    .bind(ms(now))
                    .bind(ms(lease_until))
                    .bind(i64::from(limit))
                    .bind(sink)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut claimed: Vec<DeliveryRecord> = records(rows)?;
                    claimed.sort_by_key(|d| (d.next_attempt_at, d.id));
                    Ok(claimed)
                }

                async fn prune_sent_deliveries(
                    &self,
                    before: DateTime<Utc>,
                ) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "DELETE FROM deliveries WHERE state = 'sent' AND sent_at < $1",
                    )
                    .bind(ms(before))
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn mark_delivered(
                    &self,
                    id: i64,
                    now: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE deliveries SET state = 'sent', sent_at = $2, last_error = NULL, \
                         claimed_by = NULL, lease_until = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(ms(now))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn mark_delivery_failed(
                    &self,
                    id: i64,
                    error: &str,
                    next_attempt_at: DateTime<Utc>,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE deliveries SET last_error = $2, next_attempt_at = $3, \
                         claimed_by = NULL, lease_until = NULL WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(error)
                    .bind(ms(next_attempt_at))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn queued_deliveries(&self) -> Result<u64, StoreError> {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))
                }

                async fn deliveries(
                    &self,
                    fingerprint: &str,
                ) -> Result<Vec<DeliveryRecord>, StoreError> {
                    let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        $crate::store::queries::columns!(deliveries),
                        " FROM deliveries WHERE fingerprint = $1 ORDER BY created_at, id"
                    ))
                    .bind(fingerprint)
                    .fetch_all(&self.pool)
                    .await?;
                    records(rows)
                }
            }
        };
    };
}

pub(super) use columns;
pub(super) use impl_store;
pub(super) use power_safe_off;
pub(super) use power_safe_on;
pub(super) use sql;
