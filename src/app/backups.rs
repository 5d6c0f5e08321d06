//! `snapshot JOB`, `backups list JOB [--json]`, `backups verify JOB (KEY|--latest) --identity FILE`
//! and `restore JOB (KEY|--latest) --identity FILE [--force]`.
//!
//! `snapshot` goes through the engine's runner (the daemon's lock, records, alerts); `restore`
//! takes the same job lock, so no snapshot runs while Vault is being restored. Listing and
//! verifying only read.
//!
//! `backups verify` and `restore` compare each object's ciphertext SHA-256 with the one the
//! state store recorded when the daemon uploaded it: the manifest beside the object comes from
//! whoever can write the bucket, the store does not. An object that is not what was uploaded
//! under its name fails `verify` and is refused by `restore` unless `--skip-record-check`; an
//! object the store has no record of (a new or lost store, a snapshot from elsewhere) passes with
//! a warning, since refusing would block the restore that a lost store calls for.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{EXIT_FAILURE, Failure, connect_vault, jobs, open_store, run_by_hand};
use crate::backup::catalog::Item;
use crate::backup::pipeline::Destinations;
use crate::backup::restore::RecordCheck;
use crate::backup::{LOCAL, human_size, restore as restoring};
use crate::cli::{BackupsCommand, Which};
use crate::config::{Config, JobSpec, RaftSnapshotConfig};
use crate::engine::Engine;
use crate::engine::lock::{JobLock, holder_id};
use crate::job::RunRequest;
use crate::metrics::Metrics;
use crate::rotate::raft_snapshot::connect_destinations;
use crate::store::{SnapshotRecord, Store};

/// Enough for every record a job can have (retention keeps far fewer).
const ALL_RECORDS: u32 = 1_000_000;

/// The store's upload records of `job`.
async fn upload_records(
    store: &Arc<dyn Store>,
    job: &str,
) -> Result<Vec<SnapshotRecord>, crate::store::StoreError> {
    store.snapshots(job, ALL_RECORDS).await
}

/// The settings of raft-snapshot job `name`.
fn snapshot_job<'a>(cfg: &'a Config, name: &str) -> Result<&'a RaftSnapshotConfig, Failure> {
    let Some(job) = cfg.jobs.iter().find(|j| j.name == name) else {
        return Err(Failure::Usage(format!(
            "no job named `{name}` in {}",
            cfg.jobs_dir.display()
        )));
    };
    match &job.spec {
        JobSpec::RaftSnapshot(c) => Ok(c),
        other => Err(Failure::Usage(format!(
            "job `{name}` is of kind `{}`, not `raft-snapshot`",
            other.kind()
        ))),
    }
}

pub(super) async fn snapshot(cfg: Config, name: &str) -> Result<ExitCode, Failure> {
    snapshot_job(&cfg, name)?;
    let jobs = jobs(&cfg)?;
    let Some(job) = jobs.iter().find(|j| j.config.name == name).cloned() else {
        return Err(Failure::Usage(format!("no job named `{name}`")));
    };
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let metrics = Arc::new(Metrics::new().context("building metrics")?);
    let engine = Engine::new(&cfg, jobs.clone(), store, vault, metrics);
    let request = RunRequest {
        force: true,
        dry_run: false,
    };
    run_by_hand(
        &engine,
        &job,
        request,
        "snapshot",
        "the daemon is taking a snapshot",
    )
    .await
}

pub(super) async fn backups(cfg: Config, command: BackupsCommand) -> Result<ExitCode, Failure> {
    match command {
        BackupsCommand::List { job, json } => list(cfg, &job, json).await,
        BackupsCommand::Verify { job, which } => verify(cfg, &job, which).await,
    }
}

/// Every snapshot of `job` (its manifest names the job, or it has none) per destination, newest
/// first; the errors of destinations that could not be listed.
async fn inventory(
    dests: &Destinations,
    job: &str,
    only: Option<&str>,
) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for label in dests.labels() {
        if only.is_some_and(|o| o != label) {
            continue;
        }
        match dests.catalog(label).await {
            Ok(c) => items.extend(
                c.items
                    .into_iter()
                    .filter(|i| i.is_of(job) || i.manifest.is_none()),
            ),
            Err(e) => errors.push(e.to_string()),
        }
    }
    items.sort_by(|a, b| {
        b.taken_at()
            .cmp(&a.taken_at())
            .then_with(|| a.destination.cmp(b.destination))
    });
    (items, errors)
}

async fn list(cfg: Config, name: &str, json: bool) -> Result<ExitCode, Failure> {
    let config = snapshot_job(&cfg, name)?;
    let dests = connect_destinations(config).await;
    let (items, errors) = inventory(&dests, name, None).await;
    if json {
        let rows: Vec<serde_json::Value> = items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "destination": i.destination,
                    "key": i.name,
                    "location": i.location,
                    "taken_at": i.taken_at().to_rfc3339(),
                    "size_bytes": i.size,
                    "manifest": i.manifest,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("encoding the list")?
        );
    } else {
        let mut table = vec![vec![
            "TAKEN (UTC)".to_string(),
            "DESTINATION".into(),
            "KEY".into(),
            "SIZE".into(),
            "RAFT INDEX".into(),
            "VAULT".into(),
        ]];
        for i in &items {
            table.push(vec![
                i.taken_at().format("%Y-%m-%d %H:%M:%S").to_string(),
                i.destination.to_string(),
                i.name.clone(),
                human_size(i.size),
                i.manifest
                    .as_ref()
                    .map(|m| m.raft_index.to_string())
                    .unwrap_or_else(|| "(no manifest)".into()),
                i.manifest
                    .as_ref()
                    .and_then(|m| m.vault_version.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        print_table(&table);
    }
    for e in &errors {
        eprintln!("{name}: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// The file name in `key` (a prefix or directory before it is ignored).
fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The snapshots `which` names: with `--latest`, the newest of the job in each destination;
/// with a key, that snapshot wherever it is.
fn select<'a>(items: &'a [Item], which: &Which, job: &str) -> Vec<&'a Item> {
    let mut out: Vec<&Item> = Vec::new();
    match &which.key {
        Some(key) => {
            let name = key_name(key);
            out.extend(items.iter().filter(|i| i.name == name));
        }
        None => {
            for item in items.iter().filter(|i| i.is_of(job)) {
                if !out.iter().any(|o| o.destination == item.destination) {
                    out.push(item);
                }
            }
        }
    }
    out
}

async fn verify(cfg: Config, name: &str, which: Which) -> Result<ExitCode, Failure> {
    let config = snapshot_job(&cfg, name)?;
    let identities =
        restoring::identities(&which.identity).map_err(|e| Failure::Usage(e.to_string()))?;
    let dests = connect_destinations(config).await;
    let (items, errors) = inventory(&dests, name, which.from.as_deref()).await;
    for e in &errors {
        eprintln!("{name}: {e}");
    }
    let chosen = select(&items, &which, name);
    if chosen.is_empty() {
        eprintln!("{name}: {}", not_found(&which));
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let mut failed = !errors.is_empty();
    // Without the store, the objects are still checked (a warning says what was not).
    let records = match open_store(&cfg).await {
        Ok(store) => upload_records(&store, name)
            .await
            .map_err(|e| e.to_string()),
        Err(Failure::Usage(e)) => Err(e),
        Err(Failure::Runtime(e)) => Err(format!("{e:#}")),
    };
    let records = match records {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!(
                "WARNING: {name}: cannot read the state store's upload records ({e}); SHA-256s are not compared with them"
            );
            None
        }
    };
    for item in chosen {
        match restoring::check(&dests, item, identities.clone()).await {
            Ok(c) => {
                let record = records
                    .as_deref()
                    .map(|r| RecordCheck::of(r, item, &c.ciphertext_sha256));
                if let Some(RecordCheck::Differs { .. }) = &record {
                    failed = true;
                    let problem = record
                        .as_ref()
                        .and_then(|r| r.problem(&item.location))
                        .unwrap_or_default();
                    println!("FAILED {}: {problem}", item.location);
                    continue;
                }
                if let Some(problem) = record.as_ref().and_then(|r| r.problem(&item.location)) {
                    eprintln!("WARNING: {problem}");
                }
                println!(
                    "OK {}: raft index {} term {}, state.bin {} bytes, archive {} (sha256 {}){}{}",
                    item.location,
                    c.facts.raft_index,
                    c.facts.raft_term,
                    c.facts.state_size,
                    human_size(c.plaintext_size),
                    c.plaintext_sha256,
                    if item.manifest.is_some() {
                        ", matches its manifest"
                    } else {
                        " (no manifest to compare)"
                    },
                    match record {
                        Some(RecordCheck::Matches) => " and the upload record",
                        Some(_) => "; no upload record in the state store",
                        None => "",
                    }
                );
            }
            Err(e) => {
                failed = true;
                println!("FAILED {}: {e}", item.location);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

fn not_found(which: &Which) -> String {
    match &which.key {
        Some(k) => format!("no snapshot `{}` in the job's destinations", key_name(k)),
        None => "the job has no snapshot yet".into(),
    }
}

pub(super) async fn restore(
    cfg: Config,
    name: &str,
    which: Which,
    force: bool,
    skip_record_check: bool,
) -> Result<ExitCode, Failure> {
    let config = snapshot_job(&cfg, name)?;
    let identities =
        restoring::identities(&which.identity).map_err(|e| Failure::Usage(e.to_string()))?;
    let dests = connect_destinations(config).await;
    let (items, errors) = inventory(&dests, name, which.from.as_deref()).await;
    for e in &errors {
        eprintln!("{name}: {e}");
    }
    let chosen = select(&items, &which, name);
    // One copy: the newest; on a tie (the same snapshot in both places) the local one.
    let Some(item) = chosen.iter().copied().max_by(|a, b| {
        a.taken_at()
            .cmp(&b.taken_at())
            .then_with(|| (a.destination == LOCAL).cmp(&(b.destination == LOCAL)))
    }) else {
        eprintln!("{name}: {}", not_found(&which));
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let holder = holder_id();
    let Some(lock) = JobLock::try_acquire(&store, name, &holder)
        .await
        .context("taking the job lock")?
    else {
        eprintln!(
            "{name}: the job is locked by another process (a snapshot is running?); try again"
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let result = async {
        let checked = restoring::check(&dests, item, identities.clone()).await?;
        let records = upload_records(&store, name)
            .await
            .map_err(|e| crate::backup::BackupError::Usage(format!("reading the upload records: {e}")))?;
        let record = RecordCheck::of(&records, item, &checked.ciphertext_sha256);
        if let Some(problem) = record.problem(&item.location) {
            match record {
                RecordCheck::Differs { .. } if !skip_record_check => {
                    return Err(crate::backup::BackupError::Invalid(format!(
                        "{problem}. Nothing was restored; if you trust this object anyway, run again with --skip-record-check"
                    )));
                }
                _ => eprintln!("WARNING: {problem}"),
            }
        }
        eprintln!(
            "verified {} (raft index {} term {}); restoring into {}{}",
            item.location,
            checked.facts.raft_index,
            checked.facts.raft_term,
            vault.address(),
            if force { " with snapshot-force" } else { "" }
        );
        restoring::restore(&vault, &dests, item, identities, &checked, force).await?;
        Ok::<_, crate::backup::BackupError>(checked)
    }
    .await;
    if let Err(e) = lock.release().await {
        tracing::warn!(job = name, error = %e, "releasing the job lock failed; it expires by itself");
    }
    match result {
        Ok(c) => {
            println!(
                "restored {} (raft index {}) into {}. Vault now runs on the snapshot's data; if it came from another cluster, Vault seals itself: unseal it with that cluster's unseal keys.",
                item.location,
                c.facts.raft_index,
                vault.address()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{name}: restore failed: {e}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

fn print_table(rows: &[Vec<String>]) {
    let mut widths = vec![0usize; rows.first().map(Vec::len).unwrap_or(0)];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}
