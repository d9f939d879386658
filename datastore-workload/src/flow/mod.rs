//! The NVSentinel flow simulation, shared by `datastore demo` and `datastore-bench`.
//!
//! Four stages run concurrently, each in its own tokio task:
//!
//! * ingest (platform-connectors) inserts synthetic health events with `insert_many`;
//! * fault-quarantine watches processable inserts and quarantines the fatal events;
//! * node-drainer watches quarantine-status changes and records a successful drain;
//! * fault-remediation watches quarantined-and-drained events and marks them remediated.
//!
//! The three consumers open their streams from [`StartFrom::Now`] before the first insert and
//! run on the library's [`processor`]: up to [`FlowOptions::concurrency`] events at once, one
//! at a time per node, checkpointed at the low-water mark. This module keeps only the scenario:
//! what each component does with a change, and when it is done. At the end the run is verified: every fatal
//! processable event went through every stage exactly once, the stored documents say so, and no
//! consumer has a matching change left after its checkpoint.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datastore::change::watchers;
use datastore::model::{
    fields, EvictionStatus, OperationStatus, ProcessingStrategy, QuarantineStatus,
};
use datastore::processor::{self, ProcessorOptions};
use datastore::value::{as_date, CREATED_AT_FIELD};
use datastore::{
    ChangeEvent, ChangeStream, Collection, DataStore, DocumentId, Filter, StartFrom, Value,
    WatchOptions,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::measure::{Latencies, Percentiles};
use crate::synth::{per_second, Synth};
use datastore_tools::error::{CliError, CliResult};

mod clock;
mod ingest;
mod progress;
mod report;
mod verify;
mod worker;

use clock::ServerClock;
use ingest::{ingest, Ingested};
use progress::Bars;
pub use report::{FlowReport, StageReport};
use verify::verify;
use worker::{StageRun, StageWorker};

/// Events a flow stage handles at once by default: enough to keep a stage busy while its
/// writes and checkpoints wait on round trips, like node-drainer's worker queue.
pub const DEFAULT_STAGE_CONCURRENCY: u64 = 16;

/// A stage that sees no change for this long fails the run.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How many rounds of `concurrency` changes a stage reads past its oldest unfinished one
/// (the processor's `max_in_flight`).
const READ_AHEAD_ROUNDS: usize = 4;

/// Metadata key (`healthevent.metadata.demoRun`) that marks the events of one run on a shared
/// database, so that the stages only touch their own events.
const RUN_MARKER: &str = "demoRun";

/// How a flow run is set up.
#[derive(Debug, Clone)]
pub struct FlowOptions {
    /// Health events to ingest.
    pub events: u64,
    /// Nodes of the synthetic fleet.
    pub nodes: usize,
    /// Events per `insert_many` call.
    pub batch: u64,
    /// Seed of the synthetic-data generator.
    pub seed: u64,
    /// Poll interval of the three change streams.
    pub poll_interval: Duration,
    /// Changes each stage handles at once (at least 1).
    pub concurrency: usize,
    /// A stage that receives nothing for this long fails the run.
    pub stall_timeout: Duration,
    /// On a shared database: a run id that marks this run's events (the stages' filters then
    /// also require it) and suffixes the consumer names, so that real NVSentinel consumers'
    /// checkpoints and events are left alone. `None` on a database of its own.
    pub run_id: Option<String>,
}

impl FlowOptions {
    /// The consumer name of `stage` in this run.
    pub fn consumer(&self, stage: Stage) -> String {
        match &self.run_id {
            Some(run) => format!("{}.{run}", stage.consumer()),
            None => stage.consumer().to_owned(),
        }
    }

    /// The documents of this run (every document on a database of its own).
    fn scope(&self) -> Filter {
        match &self.run_id {
            Some(run) => Filter::eq(marker_path(), run.as_str()),
            None => Filter::All,
        }
    }

    /// The change-stream filter of `stage`: the ready-made NVSentinel watcher filter, limited to
    /// this run's events on a shared database.
    fn stage_filter(&self, stage: Stage) -> Filter {
        match &self.run_id {
            Some(run) => stage.filter().and(Filter::eq(
                format!("fullDocument.{}", marker_path()),
                run.as_str(),
            )),
            None => stage.filter(),
        }
    }
}

fn marker_path() -> String {
    format!("healthevent.metadata.{RUN_MARKER}")
}

/// A consumer stage of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// fault-quarantine.
    Quarantine,
    /// node-drainer.
    Drain,
    /// fault-remediation.
    Remediation,
}

/// The consumer stages in flow order.
pub const STAGES: [Stage; 3] = [Stage::Quarantine, Stage::Drain, Stage::Remediation];

impl Stage {
    /// The NVSentinel component (and consumer name) of the stage.
    pub fn consumer(self) -> &'static str {
        match self {
            Stage::Quarantine => "fault-quarantine",
            Stage::Drain => "node-drainer",
            Stage::Remediation => "fault-remediation",
        }
    }

    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Quarantine => "quarantine",
            Stage::Drain => "drain",
            Stage::Remediation => "remediation",
        }
    }

    /// The stage's ready-made watcher filter.
    pub fn filter(self) -> Filter {
        match self {
            Stage::Quarantine => watchers::processable_inserts(),
            Stage::Drain => watchers::node_quarantine_status_changes(),
            Stage::Remediation => watchers::quarantined_and_drained(),
        }
    }
}

/// Runs the flow on `store` and verifies it. Fails when a stage fails or stalls, or when any
/// event did not complete every stage exactly once.
pub async fn run(store: Arc<dyn DataStore>, opts: &FlowOptions) -> CliResult<FlowReport> {
    let collection = store.health_event_collection();
    let clock = ServerClock::measure(collection).await?;

    // The positions are taken now, before the first insert.
    let mut streams = Vec::with_capacity(STAGES.len());
    for stage in STAGES {
        let options = WatchOptions::new(opts.consumer(stage))
            .filter(opts.stage_filter(stage))
            .start(StartFrom::Now)
            .poll_interval(opts.poll_interval);
        let stream = collection.watch(options.clone()).await?;
        streams.push((options, stream));
    }

    let bars = Bars::new(opts.events);
    let signal = Arc::new(watch::channel(Signal::default()).0);
    let tasks: Vec<_> = STAGES
        .into_iter()
        .zip(streams)
        .enumerate()
        .map(|(i, (stage, (options, stream)))| {
            let worker = Arc::new(StageWorker {
                stage,
                consumer: opts.consumer(stage),
                store: Arc::clone(&store),
                signal: Arc::clone(&signal),
                bar: bars.stages[i].clone(),
                clock,
                stall: opts.stall_timeout,
                concurrency: opts.concurrency.max(1),
                book: Mutex::new(StageRun::new(stage, &opts.consumer(stage))),
                last_activity: Mutex::new(Instant::now()),
            });
            tokio::spawn(worker.run(options, stream))
        })
        .collect();

    let started = Instant::now();
    let ingested = ingest(store.as_ref(), opts, &bars, &signal).await;
    match &ingested {
        Ok(i) => signal.send_modify(|s| {
            s.targets = Some(Targets {
                processable: i.processable,
                flowing: i.flowing.len() as u64,
            });
        }),
        Err(_) => signal.send_modify(|s| s.abort = true),
    }
    let mut runs = Vec::with_capacity(tasks.len());
    let (ingested, mut failure) = match ingested {
        Ok(i) => (Some(i), None),
        Err(Failure::Error(e)) => (None, Some(e)),
        Err(Failure::Aborted) => (None, None),
    };
    for task in tasks {
        match task.await {
            Ok(Ok(run)) => runs.push(run),
            Ok(Err(Failure::Aborted)) => {}
            Ok(Err(Failure::Error(e))) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(CliError::check(format!("a flow stage panicked: {e}")));
            }
        }
    }
    bars.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let ingested =
        ingested.ok_or_else(|| CliError::check("the flow was aborted without a reported cause"))?;
    // The end of the flow is the last remediation (falling back to the last event any stage
    // finished, should remediation have had nothing to do).
    let last = runs
        .iter()
        .find(|r| r.stage == Stage::Remediation)
        .and_then(|r| r.last_finished)
        .or_else(|| runs.iter().filter_map(|r| r.last_finished).max())
        .unwrap_or(started);
    let stages: Vec<StageReport> = runs.iter().map(StageRun::report).collect();
    let verified = verify(store.as_ref(), opts, &ingested, &runs).await?;
    Ok(FlowReport {
        ingested: ingested.inserted,
        batches: ingested.batches,
        ingest_time: ingested.took,
        processable: ingested.processable,
        flowing: ingested.flowing.len() as u64,
        elapsed: last.saturating_duration_since(started),
        stages,
        verified,
    })
}

/// Why a task stopped early.
enum Failure {
    /// Another task failed; this one stopped because of it.
    Aborted,
    /// This task's own error.
    Error(CliError),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Self {
        Failure::Error(e)
    }
}

impl From<datastore::Error> for Failure {
    fn from(e: datastore::Error) -> Self {
        Failure::Error(e.into())
    }
}

/// What the coordinator tells the stages.
#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    /// Known once ingest has finished.
    targets: Option<Targets>,
    /// Set when any task failed: the others stop.
    abort: bool,
}

/// How many events each stage has to get through.
#[derive(Debug, Clone, Copy)]
struct Targets {
    /// Changes the quarantine stage receives.
    processable: u64,
    /// Events the drain and remediation stages handle.
    flowing: u64,
}
