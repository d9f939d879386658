//! Command-line arguments (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `datastore`: the NVSentinel datastore's demo, schema migrations and operator tools.
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
    /// Simulates the NVSentinel flow (ingest → fault-quarantine → node-drainer →
    /// fault-remediation over change streams), verifies that every event went through every
    /// stage exactly once, then runs every component's queries. Uses the server named by
    /// `DATASTORE_HOST` / `DATASTORE_CONFIG_FILE`, or a throwaway embedded PostgreSQL when
    /// neither is set. (Built with the cargo feature `demo`, on by default.)
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Applies pending schema migrations to the server configured by the `DATASTORE_*`
    /// environment variables and prints the schema version.
    Migrate,
    /// Lists, deletes or resets the change-stream consumers of a collection on the server
    /// configured by the `DATASTORE_*` environment variables (or `DATASTORE_CONFIG_FILE`).
    Consumers(ConsumersArgs),
    /// Tails a collection's changes as JSON lines until Ctrl-C, on the server configured by
    /// the `DATASTORE_*` environment variables (or `DATASTORE_CONFIG_FILE`).
    Watch(WatchArgs),
    /// Deletes change history (PostgreSQL's change log) by the retention policy, on the
    /// configured server.
    Prune(PruneArgs),
    /// Sizes and usage of the configured store: rows, table and index sizes, index use, and
    /// the change history's size and oldest change.
    Stats(StatsArgs),
    /// Imports `mongoexport` output (JSON lines or `--jsonArray`, canonical or relaxed
    /// Extended JSON) into the configured store, keeping `_id` and `createdAt`; idempotent and
    /// resumable. `--verify` compares the file with the store instead.
    Import(ImportArgs),
    /// Copies a live MongoDB's health and maintenance events into the configured store with
    /// the import's guarantees (kept `_id` and `createdAt`, idempotent, resumable);
    /// `--verify` compares them instead.
    Copy(CopyArgs),
    /// Checks the configured store end to end (settings, certificates, connection, TLS,
    /// schema, indexes, consumers, change history, pool): one ✓ / ⚠ / ✗ line each, exit code
    /// 1 on any ✗.
    Doctor(DoctorArgs),
    /// Serves Prometheus metrics for the configured store (operations, pool, table sizes,
    /// change history, every consumer's backlog), sampling every `--interval`, until Ctrl-C.
    ServeMetrics(ServeMetricsArgs),
    /// The health-events-analyzer's rules: `datastore rules check --values FILE` parses every
    /// rule as the analyzer reads it and shows each one's plan (`--explain`).
    Rules(RulesArgs),
}

/// Arguments of `datastore rules`.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: RulesAction,
}

/// `datastore rules` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RulesAction {
    /// Parses every rule, binds it for an event and plans it; warns on a rule that scans
    /// without an index bound. Exit code 1 when a rule does not parse.
    Check(RulesCheckArgs),
}

/// Arguments of `datastore rules check`.
#[derive(Debug, Clone, Args)]
pub struct RulesCheckArgs {
    /// The health-events-analyzer chart's values file (its `config` block).
    #[arg(long, value_name = "FILE")]
    pub values: Option<std::path::PathBuf>,
    /// The analyzer's `config.toml` instead.
    #[arg(long, value_name = "FILE", conflicts_with = "values")]
    pub toml: Option<std::path::PathBuf>,
    /// A stored health-event document (JSON) to bind the rules with (default: an unhealthy
    /// XID 79 on one GPU, now). Plans keep their constant gates, so that each shows what it
    /// reads once they pass.
    #[arg(long, value_name = "FILE")]
    pub event: Option<std::path::PathBuf>,
    /// Prints each rule's plan: what it folds, what it scans, the stages left.
    #[arg(long)]
    pub explain: bool,
}

/// Arguments of `datastore consumers`.
#[derive(Debug, Clone, Args)]
pub struct ConsumersArgs {
    /// The collection whose consumers these are.
    #[arg(long, value_enum, default_value_t = Target::HealthEvents)]
    pub collection: Target,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: ConsumerAction,
}

/// Arguments of `datastore watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The collection to watch.
    #[arg(long, value_enum, default_value_t = Target::HealthEvents)]
    pub collection: Target,
    /// Read as this consumer: from its checkpoint, checkpointing each change printed (waits
    /// while another process holds its lease). Without it the tail reads under a name of its
    /// own and moves no component's position.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Where to start: `now` (the default without `--consumer`), `beginning` (the oldest
    /// retained change) or an RFC 3339 time.
    #[arg(long, value_name = "now|beginning|TIME")]
    pub from: Option<String>,
    /// Only changes matching this MongoDB query over change documents, e.g.
    /// `{"operationType": "insert", "fullDocument.healthevent.isfatal": true}`.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// Arguments of `datastore prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Changes older than this are deleted, even if a consumer still needs them (that consumer
    /// then fails with a history-lost error instead of skipping them): e.g. `7d`, `36h`.
    #[arg(long, value_name = "DURATION")]
    pub max_age: String,
    /// Changes younger than this are kept even when every consumer is past them.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub min_age: String,
    /// JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `datastore stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `datastore import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The `mongoexport` file.
    pub file: std::path::PathBuf,
    /// The collection the file was exported from.
    #[arg(long, value_enum, default_value_t = ImportTarget::HealthEvents)]
    pub collection: ImportTarget,
    /// Documents per write.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Compare the file with the store (counts and each document's checksum) instead of
    /// importing; prints the differences.
    #[arg(long)]
    pub verify: bool,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `datastore copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The source: a MongoDB connection string (its credentials are never printed).
    #[arg(long, value_name = "MONGODB_URI")]
    pub from: String,
    /// The source database.
    #[arg(long, default_value = "nvsentinel")]
    pub from_database: String,
    /// One collection only (default: health and maintenance events).
    #[arg(long, value_enum)]
    pub collection: Option<Target>,
    /// Documents per page and per write.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Compare the source with the store instead of copying.
    #[arg(long)]
    pub verify: bool,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `datastore import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportTarget {
    /// `HealthEvents`.
    HealthEvents,
    /// `MaintenanceEvents`.
    MaintenanceEvents,
    /// `ResumeTokens`: reported as not portable.
    ResumeTokens,
}

/// Arguments of `datastore doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A consumer whose oldest unprocessed change waits longer than this is reported as
    /// lagging.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub max_lag: String,
    /// JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `datastore serve-metrics`.
#[derive(Debug, Clone, Args)]
pub struct ServeMetricsArgs {
    /// Where to serve `/metrics` (default: `DATASTORE_METRICS_ADDR`, else 127.0.0.1:9464;
    /// `0.0.0.0:9464` to be scraped from other hosts).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// How often to sample sizes and backlogs (each sample is one round of catalog queries).
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub interval: String,
}

/// A collection named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Health events (NVSentinel's `HealthEvents`).
    HealthEvents,
    /// Maintenance events (NVSentinel's `MaintenanceEvents`).
    MaintenanceEvents,
}

/// What `datastore consumers` does.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsumerAction {
    /// Every consumer with a checkpoint or a lease: checkpoint age, lease holder and expiry.
    List,
    /// Forgets a consumer (its checkpoint and lease; the change history it held back may then
    /// be pruned). Refused while a stream holds its lease: stop that component first.
    Delete {
        /// The consumer's name (NVSentinel's component name, e.g. `fault-quarantine`).
        consumer: String,
    },
    /// Moves a consumer's checkpoint: its next watch from its checkpoint starts there.
    /// Refused while a stream holds its lease.
    Reset {
        /// The consumer's name.
        consumer: String,
        /// `now`, `beginning` (the oldest retained change) or an RFC 3339 time.
        #[arg(long)]
        to: String,
    },
}

/// Arguments of `datastore demo`.
#[cfg(feature = "demo")]
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
    #[arg(long, default_value_t = datastore_workload::synth::DEFAULT_SEED)]
    pub seed: u64,
    /// Change-stream poll interval of the flow's stages, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub poll_ms: u64,
    /// Events each flow stage handles at once (1 = strictly one after the other).
    #[arg(long, default_value_t = datastore_workload::flow::DEFAULT_STAGE_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub stage_concurrency: u64,
    /// Run only the flow simulation, not the component queries after it.
    #[arg(long)]
    pub skip_queries: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[cfg(feature = "demo")]
    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["datastore", "demo"]).unwrap();
        match cli.command {
            Command::Demo(a) => {
                assert_eq!(
                    (a.events, a.nodes, a.batch, a.seed),
                    (20_000, 200, 100, datastore_workload::synth::DEFAULT_SEED)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["datastore", "--log", "debug", "stats", "--json"]).unwrap();
        assert_eq!(cli.log.as_deref(), Some("debug"));
        assert!(matches!(
            cli.command,
            Command::Stats(StatsArgs { json: true })
        ));
        assert!(Cli::try_parse_from(["datastore", "demo", "--batch", "0"]).is_err());
    }

    #[cfg(feature = "demo")]
    #[test]
    fn demo_flags() {
        let d = match Cli::try_parse_from(["datastore", "demo", "--skip-queries"])
            .unwrap()
            .command
        {
            Command::Demo(d) => d,
            other => panic!("unexpected {other:?}"),
        };
        assert!(d.skip_queries && d.poll_ms == 5);
    }
}
