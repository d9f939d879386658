//! Command-line arguments of `datastore-bench` (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `datastore-bench`: the provider against a bare-SQL baseline on a throwaway PostgreSQL, the
/// index check of the domain queries, the change streams (capture cost, delivery lag, backlog
/// drain, the flow simulation, read-ahead) and the analyzer's rules.
#[derive(Debug, Parser)]
#[command(name = "datastore-bench", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Enables tracing to stderr with this filter (e.g. `info`, `datastore_api=debug`).
    /// `RUST_LOG` is used when this is not given; without either, tracing is off.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// What to measure.
    #[command(flatten)]
    pub bench: BenchArgs,

    /// Internal subcommands.
    #[command(subcommand)]
    pub internal: Option<Internal>,
}

/// Subcommands the benchmarks run as processes of their own.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// The backlog consumer of the `backlog` case, run alone so that its memory is measured
    /// alone. Prints one `drain-worker-result {json}` line.
    #[command(hide = true)]
    DrainWorker(DrainWorkerArgs),
}

/// A group of `datastore-bench` measurements (`--cases`).
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
    /// NVSentinel's 22 analyzer rules per event over `--rules-events` stored events.
    Rules,
    /// `datastore import` of `--import-events` exported events vs `COPY` of the same rows.
    Import,
}

impl BenchCase {
    /// The single cases this one stands for, in run order.
    pub fn expand(self) -> &'static [BenchCase] {
        use BenchCase::*;
        match self {
            All => &[
                Single, Concurrent, Batch, Index, Capture, Lag, Backlog, Flow, ReadAhead, Rules,
                Import,
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
            Import => &[Import],
        }
    }
}

/// Arguments of `datastore-bench`.
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
    #[arg(long, default_value_t = datastore_workload::synth::DEFAULT_SEED)]
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
    #[arg(long, default_value_t = datastore_workload::flow::DEFAULT_STAGE_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub stage_concurrency: u64,
    /// Stored events of the analyzer-rules case (`rules`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub rules_events: u64,
    /// Stored events of the analyzer-rules case's MongoDB lane, on the SecantusDB stand-in
    /// (0 skips the lane; it loads far slower than PostgreSQL).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    pub rules_mongodb_events: u64,
    /// Exported events of the import case (`import`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub import_events: u64,
}

/// Arguments of the hidden `datastore-bench drain-worker`.
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
    fn defaults_and_the_worker() {
        let cli =
            Cli::try_parse_from(["datastore-bench", "--log", "debug", "--events", "100"]).unwrap();
        assert_eq!(cli.log.as_deref(), Some("debug"));
        let a = &cli.bench;
        assert_eq!(
            (a.events, a.batch, a.explain_events, a.runs),
            (100, 10_000, 100_000, 3)
        );
        let cli = Cli::try_parse_from([
            "datastore-bench",
            "drain-worker",
            "--url",
            "postgres://x",
            "--events",
            "5",
        ])
        .unwrap();
        assert!(matches!(cli.internal, Some(Internal::DrainWorker(_))));
    }

    #[test]
    fn bench_cases() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().bench;
        let a = parse(&["datastore-bench"]);
        assert_eq!(a.cases, [BenchCase::All]);
        assert_eq!(
            (a.backlog, a.rate, a.flow_events),
            (1_000_000, 1_000, 20_000)
        );
        assert!(a.selected(BenchCase::Single) && a.selected(BenchCase::Flow));
        let a = parse(&["datastore-bench", "--cases", "changes,index"]);
        assert!(a.selected(BenchCase::Capture) && a.selected(BenchCase::Backlog));
        assert!(a.selected(BenchCase::Index) && !a.selected(BenchCase::Single));
        let a = parse(&["datastore-bench", "--cases", "lag", "--rate", "500"]);
        assert!(a.selected(BenchCase::Lag) && !a.selected(BenchCase::Flow));
        assert_eq!(a.rate, 500);
        assert!(Cli::try_parse_from(["datastore-bench", "--cases", "nope"]).is_err());
    }
}
