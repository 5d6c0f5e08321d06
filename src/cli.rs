//! The command line (SPEC §1): `vault-steward [--config PATH] COMMAND`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Keeps a Vault / OpenBao deployment's secrets fresh and its data recoverable.
#[derive(Debug, Parser)]
#[command(name = "vault-steward", version, about)]
pub struct Cli {
    /// The daemon's config file.
    #[arg(long, global = true, env = "VAULT_STEWARD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify; graceful on SIGTERM).
    Run,
    /// Validate the config and every job file; print each problem as FILE:LINE:COL: message.
    Check {
        /// Also prove Vault auth and each job's access (KV paths, roles, stores).
        #[arg(long)]
        connect: bool,
    },
    /// Dry run: for every job, what would happen now and when next, changing nothing.
    Plan,
    /// One row per job: name, kind, state, last success, next due, secret age, failures.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rotate a job's secret now, whatever its schedule (emergency rotation).
    Rotate {
        /// The job's name.
        job: String,
        /// Say what would be done without doing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Alert sinks.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every configured sink and report each result (exit 1 if any
    /// failed).
    Test,
}
