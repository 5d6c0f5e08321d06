//! `check [--connect]`, `plan` and `status [--json]`: read-only looks at the configuration, the
//! targets and the state store.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILURE, Failure, connect_vault, context, e_text, jobs, open_store};
use crate::config::Config;
use crate::engine;
use crate::store;
use crate::vault::VaultSession;

pub(super) async fn check(cfg: Config, connect: bool) -> Result<ExitCode, Failure> {
    // The configuration is valid whatever this build can run; kinds it lacks are reported, and
    // `run` refuses them.
    let mut jobs = Vec::new();
    for jc in &cfg.jobs {
        match engine::build_jobs_one(jc, cfg.engine.job_timeout) {
            Ok(j) => jobs.push(j),
            Err(e) => eprintln!("{}: warning: {e}", jc.location),
        }
    }
    for w in &cfg.warnings {
        eprintln!("{}: warning: {}", w.location, w.message);
    }
    println!(
        "{}: configuration ok ({} jobs from {})",
        cfg.path.display(),
        cfg.jobs.len(),
        cfg.jobs_dir.display()
    );
    if !connect {
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    match crate::alert::sink::build_sinks(&cfg.alerts) {
        Ok(sinks) => {
            for sink in sinks {
                let probe = tokio::time::timeout(sink.timeout(), sink.probe()).await;
                match probe {
                    Ok(Ok(seen)) => println!("alert sink {}: ok: {seen}", sink.name()),
                    Ok(Err(e)) => {
                        failed += 1;
                        println!("alert sink {}: FAILED: {e}", sink.name());
                    }
                    Err(_) => {
                        failed += 1;
                        println!("alert sink {}: FAILED: no answer in time", sink.name());
                    }
                }
            }
        }
        Err(e) => {
            failed += 1;
            println!("{e}: FAILED");
        }
    }
    let store = match open_store(&cfg).await {
        Ok(s) => match s.ping().await {
            Ok(()) => {
                println!("state store {}: ok", store::redact_url(&cfg.state.url));
                s
            }
            Err(e) => {
                println!("state store: FAILED: {e}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        },
        Err(f) => {
            println!("state store: FAILED: {}", e_text(&f));
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let vault = match VaultSession::connect(&cfg.vault).await {
        Ok(v) => {
            println!("vault {}: authenticated", cfg.vault.address);
            v
        }
        Err(e) => {
            println!("vault {}: FAILED: {e}", cfg.vault.address);
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    for job in &jobs {
        let ctx = context(job, &vault, &store, CancellationToken::new());
        match job.job.preflight(&ctx).await {
            Ok(i) => println!("job {}: ok: {}", job.config.name, i.summary),
            Err(e) => {
                failed += 1;
                println!("job {}: FAILED: {e}", job.config.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

pub(super) async fn status(cfg: Config, json: bool) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let store = open_store(&cfg).await?;
    let states = store.job_states().await.context("reading job state")?;
    let open = engine::view::open_rotation_jobs(&store).await;
    let rows = engine::view::status_rows(
        &jobs,
        &states,
        &open,
        cfg.alerts.failures_before_alert,
        Utc::now(),
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("encoding status")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.kind.clone(),
                r.state.clone(),
                r.last_success.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.next_due.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.secret_age_seconds
                    .map(engine::view::short_age)
                    .unwrap_or_else(|| "-".into()),
                r.consecutive_failures.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "JOB",
            "KIND",
            "STATE",
            "LAST SUCCESS",
            "NEXT DUE",
            "SECRET AGE",
            "FAILURES",
        ],
        &table,
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn plan(cfg: Config) -> Result<ExitCode, Failure> {
    let jobs = jobs(&cfg)?;
    let store = open_store(&cfg).await?;
    let vault = connect_vault(&cfg).await?;
    let rows = engine::view::plan_rows(&jobs, &store, &vault, Utc::now()).await;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.job.clone(),
                r.kind.clone(),
                r.now.clone(),
                r.next_due.map(fmt_time).unwrap_or_else(|| "-".into()),
                r.target.clone(),
            ]
        })
        .collect();
    print_table(&["JOB", "KIND", "NOW", "NEXT DUE", "TARGET"], &table);
    Ok(ExitCode::SUCCESS)
}

fn fmt_time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
