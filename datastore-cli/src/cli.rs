//! Command-line arguments (clap derive).

use clap::{Args, Parser, Subcommand};

/// The default RNG seed, so that runs are repeatable unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// `datastore`: demo, schema migrations and benchmarks of the NVSentinel datastore.
#[derive(Debug, Parser)]
#[command(name = "datastore", version, about, long_about = None)]
pub struct Cli {
    /// Enables tracing to stderr with this filter (e.g. `info`, `datastore_api=debug`).
    /// `RUST_LOG` is used when this is not given; without either, tracing is off.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingests synthetic NVSentinel health events and runs every component's queries against
    /// them. Uses the server named by `DATASTORE_HOST` / `DATASTORE_CONFIG_FILE`, or a
    /// throwaway embedded PostgreSQL when neither is set.
    Demo(DemoArgs),
    /// Applies pending schema migrations to the server configured by the `DATASTORE_*`
    /// environment variables and prints the schema version.
    Migrate,
    /// Benchmarks the provider against a bare-SQL baseline on a throwaway PostgreSQL, and
    /// checks that the domain queries use indexes.
    Bench(BenchArgs),
}

/// Arguments of `datastore demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of health events to ingest (at least 100, so that the fleet has fatal events to
    /// quarantine).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub events: u64,
    /// Number of nodes in the synthetic fleet.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub nodes: u64,
    /// Events per `insert_many` call (one platform-connectors gRPC batch).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// Seed of the synthetic-data generator.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

/// Arguments of `datastore bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Events written by the single-writer and the 8-writer cases.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(8..=10_000_000))]
    pub events: u64,
    /// Events in the one `insert_many` call of the batch case (at most 10000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// Events inserted before the index check (`EXPLAIN`); 0 skips the check.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub explain_events: u64,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub runs: u64,
    /// Seed of the synthetic-data generator.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["datastore", "demo"]).unwrap();
        match cli.command {
            Command::Demo(a) => {
                assert_eq!(
                    (a.events, a.nodes, a.batch, a.seed),
                    (20_000, 200, 100, DEFAULT_SEED)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["datastore", "--log", "debug", "bench", "--events", "100"])
            .unwrap();
        assert_eq!(cli.log.as_deref(), Some("debug"));
        match cli.command {
            Command::Bench(a) => assert_eq!(
                (a.events, a.batch, a.explain_events, a.runs),
                (100, 10_000, 100_000, 3)
            ),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["datastore", "demo", "--batch", "0"]).is_err());
    }
}
