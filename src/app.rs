//! Wiring for every command: load the config, open the store and the Vault session, start the
//! engine and the HTTP server, and shut all of it down in order. Exit codes: 0 success, 1 a
//! runtime failure, 2 bad config or usage.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config;

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad config or usage.
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let cfg = match config::load(&cli.config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Check { connect: false } => {
            println!(
                "{}: ok ({} jobs)",
                cfg.path.display(),
                cfg.jobs.len()
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("not wired yet");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
