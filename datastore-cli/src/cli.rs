//! Command-line arguments (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default RNG seed, so that runs are repeatable unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// Events a flow stage handles at once by default: enough to keep a stage busy while its
/// writes and checkpoints wait on round trips, like node-drainer's worker queue.
pub const DEFAULT_STAGE_CONCURRENCY: u64 = 16;

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
    /// Simulates the NVSentinel flow (ingest → fault-quarantine → node-drainer →
    /// fault-remediation over change streams), verifies that every event went through every
    /// stage exactly once, then runs every component's queries. Uses the server named by
    /// `DATASTORE_HOST` / `DATASTORE_CONFIG_FILE`, or a throwaway embedded PostgreSQL when
    /// neither is set.
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
    /// Serves Prometheus metrics for the configured store (operations, pool, table sizes,
    /// change history, every consumer's backlog), sampling every `--interval`, until Ctrl-C.
    ServeMetrics(ServeMetricsArgs),
    /// Benchmarks the provider against a bare-SQL baseline on a throwaway PostgreSQL, checks
    /// that the domain queries use indexes, and measures the change streams (capture cost,
    /// delivery lag, backlog drain, the flow simulation).
    Bench(BenchArgs),
    /// Internal: the backlog consumer of `datastore bench`, run as a process of its own so that
    /// its memory is measured alone. Prints one `drain-worker-result {json}` line.
    #[command(hide = true)]
    DrainWorker(DrainWorkerArgs),
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

/// Arguments of the hidden `datastore drain-worker`.
#[derive(Debug, Clone, Args)]
pub struct DrainWorkerArgs {
    /// `postgres://` URL of the database holding the backlog.
    #[arg(long)]
    pub url: String,
    /// Changes to drain.
    #[arg(long)]
    pub events: u64,
    /// Batch size of the stream.
    #[arg(long, default_value_t = 5_000)]
    pub batch: u32,
    /// Poll interval, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// Checkpoint after this many changes.
    #[arg(long, default_value_t = 5_000)]
    pub checkpoint_every: u64,
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
    /// Change-stream poll interval of the flow's stages, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub poll_ms: u64,
    /// Events each flow stage handles at once (1 = strictly one after the other).
    #[arg(long, default_value_t = DEFAULT_STAGE_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub stage_concurrency: u64,
    /// Run only the flow simulation, not the component queries after it.
    #[arg(long)]
    pub skip_queries: bool,
}

/// A group of `datastore bench` measurements (`--cases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum BenchCase {
    /// Every case.
    All,
    /// The three write cases: `single`, `concurrent`, `batch`.
    Writes,
    /// Provider vs baseline, one writer inserting one event at a time.
    Single,
    /// Provider vs baseline, 8 concurrent writers.
    Concurrent,
    /// One `insert_many` vs one `COPY`.
    Batch,
    /// The index check (`EXPLAIN ANALYZE` of the domain queries).
    Index,
    /// The five change-stream cases: `capture`, `lag`, `backlog`, `flow`, `read-ahead`.
    Changes,
    /// Write throughput with change capture on vs off, 8 writers.
    Capture,
    /// Delivery lag at `--rate` events/s with 4 consumers.
    Lag,
    /// Drain rate and memory of one consumer reading a `--backlog` of changes.
    Backlog,
    /// End-to-end events/s of the flow simulation with `--flow-events` events.
    Flow,
    /// The processor's read-ahead: concurrency 16 vs 1 with a 5 ms handler.
    ReadAhead,
    /// 20 analyzer-rule pipelines per event over `--rules-events` stored events.
    Rules,
}

impl BenchCase {
    /// The single cases this one stands for, in run order.
    pub fn expand(self) -> &'static [BenchCase] {
        use BenchCase::*;
        match self {
            All => &[
                Single, Concurrent, Batch, Index, Capture, Lag, Backlog, Flow, ReadAhead, Rules,
            ],
            Writes => &[Single, Concurrent, Batch],
            Changes => &[Capture, Lag, Backlog, Flow, ReadAhead, Rules],
            Single => &[Single],
            Concurrent => &[Concurrent],
            Batch => &[Batch],
            Index => &[Index],
            Capture => &[Capture],
            Lag => &[Lag],
            Backlog => &[Backlog],
            Flow => &[Flow],
            ReadAhead => &[ReadAhead],
            Rules => &[Rules],
        }
    }
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
    /// Which measurements to run, comma-separated (groups: `all`, `writes`, `changes`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub cases: Vec<BenchCase>,
    /// Changes in the backlog that one consumer drains (case `backlog`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub backlog: u64,
    /// Inserts per second of the delivery-lag case (`lag`).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Seconds the delivery-lag case writes for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub lag_secs: u64,
    /// Events the flow-simulation case (`flow`) ingests.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    pub flow_events: u64,
    /// Change-stream poll interval of the consumers, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub poll_ms: u64,
    /// Events each stage of the flow case handles at once (1 = strictly one after the other).
    #[arg(long, default_value_t = DEFAULT_STAGE_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub stage_concurrency: u64,
    /// Stored events of the analyzer-rules case (`rules`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub rules_events: u64,
    /// Stored events of the analyzer-rules case's MongoDB lane, on the SecantusDB stand-in
    /// (0 skips the lane; it loads far slower than PostgreSQL).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub rules_mongodb_events: u64,
}

impl BenchArgs {
    /// Whether `case` was selected by `--cases`.
    pub fn selected(&self, case: BenchCase) -> bool {
        self.cases.iter().any(|c| c.expand().contains(&case))
    }
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

    #[test]
    fn bench_cases() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Bench(a) => a,
            other => panic!("unexpected {other:?}"),
        };
        let a = parse(&["datastore", "bench"]);
        assert_eq!(a.cases, [BenchCase::All]);
        assert_eq!(
            (a.backlog, a.rate, a.flow_events),
            (1_000_000, 1_000, 20_000)
        );
        assert!(a.selected(BenchCase::Single) && a.selected(BenchCase::Flow));
        let a = parse(&["datastore", "bench", "--cases", "changes,index"]);
        assert!(a.selected(BenchCase::Capture) && a.selected(BenchCase::Backlog));
        assert!(a.selected(BenchCase::Index) && !a.selected(BenchCase::Single));
        let a = parse(&["datastore", "bench", "--cases", "lag", "--rate", "500"]);
        assert!(a.selected(BenchCase::Lag) && !a.selected(BenchCase::Flow));
        assert_eq!(a.rate, 500);
        assert!(Cli::try_parse_from(["datastore", "bench", "--cases", "nope"]).is_err());
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
