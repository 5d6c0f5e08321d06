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
    /// Take, encrypt, verify and ship a raft snapshot now.
    Snapshot {
        /// The raft-snapshot job's name.
        job: String,
    },
    /// The snapshots of a job: list and verify them.
    Backups {
        #[command(subcommand)]
        command: BackupsCommand,
    },
    /// Download, decrypt and verify a snapshot, then restore it into the configured Vault.
    Restore {
        /// The raft-snapshot job's name.
        job: String,
        #[command(flatten)]
        which: Which,
        /// Use snapshot-force: restore a snapshot of another cluster (Vault then seals itself;
        /// unseal it with that cluster's keys).
        #[arg(long)]
        force: bool,
        /// Restore even when the object's SHA-256 is not the one the state store recorded when
        /// the snapshot was uploaded (the object was replaced in its destination since).
        #[arg(long)]
        skip_record_check: bool,
    },
}

/// `backups …` commands.
#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// The job's snapshots in every destination, newest first.
    List {
        /// The raft-snapshot job's name.
        job: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download, decrypt and check a snapshot's archive (SHA256SUMS, sizes, manifest);
    /// restores nothing.
    Verify {
        /// The raft-snapshot job's name.
        job: String,
        #[command(flatten)]
        which: Which,
    },
}

/// Which snapshot, and how to read it.
#[derive(Debug, clap::Args)]
pub struct Which {
    /// The snapshot's name (`vault-YYYYMMDD-HHMMSS.snap.age`; a prefix or path before it is
    /// ignored).
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub key: Option<String>,
    /// The newest snapshot (in each destination, for `verify`).
    #[arg(long)]
    pub latest: bool,
    /// The age identity file (AGE-SECRET-KEY-1…) or unencrypted SSH private key to decrypt with.
    #[arg(long, value_name = "FILE")]
    pub identity: PathBuf,
    /// Read from this destination only (`s3` or `local`). Default: `verify` checks every
    /// destination holding the snapshot; `restore` prefers the local copy.
    #[arg(long, value_name = "DESTINATION", value_parser = ["s3", "local"])]
    pub from: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every configured sink and report each result (exit 1 if any
    /// failed).
    Test,
}
