//! Thin entry point: parse the command line, then hand over to [`vault_steward::app`].

use std::process::ExitCode;

fn main() -> ExitCode {
    vault_steward::app::main()
}
