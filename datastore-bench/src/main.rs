//! # datastore-bench
//!
//! The benchmarks of the NVSentinel datastore (`cargo xtask bench` runs them): the provider's
//! write throughput against a bare-SQL baseline on the same throwaway server, the index check
//! of the domain queries, the change streams and the analyzer's rules, each reported as a ratio
//! against a baseline measured in the same run. Not shipped: the `datastore` command has the
//! tools for users.

#![warn(missing_docs)]

mod cases;
mod cli;

use std::process::ExitCode;

use clap::Parser;
use datastore_tools::error::CliError;

use crate::cli::{Cli, Internal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    datastore_tools::logging::init(cli.log.as_deref());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("datastore-bench: error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.internal {
        Some(Internal::DrainWorker(args)) => rt.block_on(cases::drain_worker(&args)),
        None => cases::run(&rt, &cli.bench),
    }
}
