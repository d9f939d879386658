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
//! * `datastore serve-metrics` serves Prometheus metrics of the store, sampled.
//! * `datastore bench` compares the provider's write throughput with a bare-SQL baseline on a
//!   throwaway server, checks that the domain queries are served by indexes, and measures the
//!   change streams: capture cost, delivery lag, backlog drain, the flow simulation.
//!
//! `--log <filter>` (or `RUST_LOG`) enables tracing output on stderr.

#![warn(missing_docs)]

mod bench;
mod cli;
mod consumers;
mod demo;
mod error;
mod flow;
mod measure;
mod migrate;
mod prune;
mod select;
mod serve_metrics;
mod server;
mod shutdown;
mod stats;
mod synth;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log.as_deref());
    let name = match &cli.command {
        Command::Demo(_) => "demo",
        Command::Migrate => "migrate",
        Command::Consumers(_) => "consumers",
        Command::Watch(_) => "watch",
        Command::Prune(_) => "prune",
        Command::Stats(_) => "stats",
        Command::ServeMetrics(_) => "serve-metrics",
        Command::Bench(_) => "bench",
        Command::DrainWorker(_) => "drain-worker",
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
        Command::Demo(args) => demo::run(&rt, &args),
        Command::Migrate => rt.block_on(migrate::run()),
        Command::Consumers(args) => rt.block_on(consumers::run(&args)),
        Command::Watch(args) => rt.block_on(watch::run(&args)),
        Command::Prune(args) => rt.block_on(prune::run(&args)),
        Command::Stats(args) => rt.block_on(stats::run(&args)),
        Command::ServeMetrics(args) => rt.block_on(serve_metrics::run(&args)),
        Command::Bench(args) => bench::run(&rt, &args),
        Command::DrainWorker(args) => rt.block_on(bench::drain_worker(&args)),
    }
}

/// Installs a stderr fmt subscriber when `--log` or `RUST_LOG` asks for one.
fn init_tracing(flag: Option<&str>) {
    let filter = match flag {
        Some(f) => EnvFilter::try_new(f),
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => EnvFilter::try_new(f),
            _ => return,
        },
    };
    match filter {
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        Err(e) => eprintln!("warning: ignoring the log filter: {e}"),
    }
}
