//! # datastore
//!
//! The command-line tool of the NVSentinel datastore:
//!
//! * `datastore demo` simulates the NVSentinel flow over change streams (ingest →
//!   fault-quarantine → node-drainer → fault-remediation, each a concurrent consumer that
//!   checkpoints per event), verifies that every event completed every stage exactly once, then
//!   runs every component's queries on a second ingest, timing each one. Without
//!   `DATASTORE_HOST` / `DATASTORE_CONFIG_FILE` it starts a throwaway embedded PostgreSQL
//!   (deleted at exit).
//! * `datastore migrate` applies the schema migrations to the configured server.
//! * `datastore consumers list|delete|reset` administers change-stream consumers.
//! * `datastore watch` tails a collection's changes as JSON lines.
//! * `datastore prune` deletes change history by the retention policy.
//! * `datastore stats` reports rows, sizes, index use and the change history's size and age.
//! * `datastore import` reads `mongoexport` output into the store (`--verify` compares).
//! * `datastore copy --from MONGODB_URI` does the same from a live MongoDB.
//! * `datastore doctor` checks the configured store end to end (✓ / ⚠ / ✗).
//! * `datastore serve-metrics` serves Prometheus metrics of the store, sampled.
//! * `datastore rules check` parses the analyzer's rules and explains their plans.
//!
//! Benchmarks live in the `datastore-bench` crate (`cargo xtask bench`).
//!
//! `--log <filter>` (or `RUST_LOG`) enables tracing output on stderr.

#![warn(missing_docs)]

mod cli;
mod consumers;
mod copy;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod import_cmd;
mod migrate;
mod prune;
mod rules;
mod select;
mod serve_metrics;
mod shutdown;
mod stats;
mod target;
#[cfg(test)]
mod testing;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use datastore_tools::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    datastore_tools::logging::init(cli.log.as_deref());
    let name = match &cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(_) => "demo",
        Command::Migrate => "migrate",
        Command::Consumers(_) => "consumers",
        Command::Watch(_) => "watch",
        Command::Prune(_) => "prune",
        Command::Stats(_) => "stats",
        Command::ServeMetrics(_) => "serve-metrics",
        Command::Doctor(_) => "doctor",
        Command::Import(_) => "import",
        Command::Copy(_) => "copy",
        Command::Rules(_) => "rules",
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            e.exit_code()
        }
    }
}

fn run(command: Command) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&rt, &args),
        Command::Migrate => rt.block_on(migrate::run()),
        Command::Consumers(args) => rt.block_on(consumers::run(&args)),
        Command::Watch(args) => rt.block_on(watch::run(&args)),
        Command::Prune(args) => rt.block_on(prune::run(&args)),
        Command::Stats(args) => rt.block_on(stats::run(&args)),
        Command::ServeMetrics(args) => rt.block_on(serve_metrics::run(&args)),
        Command::Doctor(args) => rt.block_on(doctor::run(&args)),
        Command::Import(args) => rt.block_on(import_cmd::run(&args)),
        Command::Copy(args) => rt.block_on(copy::run(&args)),
        Command::Rules(args) => match &args.action {
            cli::RulesAction::Check(check) => rules::check(check),
        },
    }
}
