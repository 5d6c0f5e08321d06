//! `rotate JOB [--dry-run]`: an emergency rotation now, whatever the schedule. It goes through the
//! engine's runner, so it takes the same job lock as the daemon and leaves the same records.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Failure, connect_vault, context, jobs, open_store, run_by_hand};
use crate::config::Config;
use crate::engine::Engine;
use crate::job::RunRequest;
use crate::metrics::Metrics;

pub(super) async fn rotate(cfg: Config, name: &str, dry_run: bool) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let Some(job) = jobs.iter().find(|j| j.config.name == name).cloned() else {
        return Err(Failure::Usage(format!(
            "no job named `{name}` in {}",
            cfg.jobs_dir.display()
        )));
    };
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let request = RunRequest {
        force: true,
        dry_run,
    };
    if dry_run {
        let ctx = context(&job, &vault, &store, CancellationToken::new());
        let report = job
            .job
            .run(&ctx, request)
            .await
            .with_context(|| format!("job {name}"))?;
        println!("{name}: {}", report.detail);
        return Ok(ExitCode::SUCCESS);
    }
    let metrics = Arc::new(Metrics::new().context("building metrics")?);
    let engine = Engine::new(&cfg, jobs.clone(), store, vault, metrics);
    run_by_hand(
        &engine,
        &job,
        request,
        "rotation",
        "the daemon is running it",
    )
    .await
}
