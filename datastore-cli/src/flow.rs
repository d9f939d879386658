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

use crate::error::{CliError, CliResult};
use crate::measure::{Latencies, Percentiles};
use crate::synth::{per_second, Synth};

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

/// What one stage did.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Its consumer name.
    pub consumer: String,
    /// Distinct changes delivered.
    pub received: u64,
    /// Events the stage wrote (quarantined, drained, remediated).
    pub handled: u64,
    /// Changes delivered more than once.
    pub duplicates: u64,
    /// Time from each handled event's insert (`createdAt`) to the stage finishing it (its
    /// write done); cumulative over the earlier stages.
    pub lag: Option<Percentiles>,
    /// Changes received per second, from the first receipt to the last one finished.
    pub rate: f64,
}

/// What a flow run measured.
#[derive(Debug, Clone)]
pub struct FlowReport {
    /// Health events inserted.
    pub ingested: u64,
    /// `insert_many` calls.
    pub batches: u64,
    /// Time spent inside `insert_many`.
    pub ingest_time: Duration,
    /// Inserted events the quarantine filter delivers (processing strategy 1).
    pub processable: u64,
    /// Fatal processable events, the ones that go through every stage.
    pub flowing: u64,
    /// From the first insert to the last remediation.
    pub elapsed: Duration,
    /// Per consumer stage, in flow order.
    pub stages: Vec<StageReport>,
    /// What the final verification checked (every line passed).
    pub verified: Vec<String>,
}

impl FlowReport {
    /// Ingested events per second, first insert to last remediation.
    pub fn events_per_second(&self) -> f64 {
        per_second(self.ingested, self.elapsed)
    }

    /// Fully remediated events per second, first insert to last remediation.
    pub fn remediated_per_second(&self) -> f64 {
        per_second(self.flowing, self.elapsed)
    }

    /// Prints the stage table, the end-to-end figures and the verification.
    pub fn print(&self) {
        println!(
            "flow: {} events ingested by {} insert_many calls ({:.2} s inside insert_many, {:.0}/s); \
             {} processable (strategy 1), {} of them fatal: these go through every stage",
            self.ingested,
            self.batches,
            self.ingest_time.as_secs_f64(),
            per_second(self.ingested, self.ingest_time),
            self.processable,
            self.flowing
        );
        println!(
            "  {:<12} {:<18} {:>9} {:>8} {:>5} {:>10} {:>10} {:>10} {:>12}",
            "stage",
            "consumer",
            "received",
            "handled",
            "dups",
            "lag p50",
            "lag p99",
            "lag max",
            "received/s"
        );
        for s in &self.stages {
            let (p50, p99, max) = match s.lag {
                Some(p) => (
                    format!("{:.1} ms", p.p50),
                    format!("{:.1} ms", p.p99),
                    format!("{:.1} ms", p.max),
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            println!(
                "  {:<12} {:<18} {:>9} {:>8} {:>5} {:>10} {:>10} {:>10} {:>12.0}",
                s.stage.label(),
                s.consumer,
                s.received,
                s.handled,
                s.duplicates,
                p50,
                p99,
                max,
                s.rate
            );
        }
        println!(
            "  lag = insert (createdAt, server clock) -> the stage has written the event; \
             cumulative over the stages"
        );
        println!(
            "  end to end: {} events in {:.2} s from the first insert to the last remediation: \
             {:.0} events/s ({:.0} remediated events/s)",
            self.ingested,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.remediated_per_second()
        );
        for line in &self.verified {
            println!("  verified: {line}");
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

/// The server's clock as seen from here: `createdAt` is server time.
#[derive(Debug, Clone, Copy)]
struct ServerClock {
    offset: chrono::Duration,
}

impl ServerClock {
    /// Estimates the offset from the fastest of three `server_time` round trips.
    async fn measure(collection: &dyn Collection) -> CliResult<Self> {
        let mut best: Option<(Duration, chrono::Duration)> = None;
        for _ in 0..3 {
            let before = Utc::now();
            let t = Instant::now();
            let server = collection.server_time().await?;
            let rtt = t.elapsed();
            let mid = before + chrono::Duration::from_std(rtt / 2).unwrap_or_default();
            let faster = match best {
                None => true,
                Some((fastest, _)) => rtt < fastest,
            };
            if faster {
                best = Some((rtt, server - mid));
            }
        }
        Ok(ServerClock {
            offset: best.map_or_else(chrono::Duration::zero, |(_, o)| o),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Time since `t` (server clock); zero when `t` looks later than now.
    fn since(&self, t: DateTime<Utc>) -> Duration {
        (self.now() - t).to_std().unwrap_or_default()
    }
}

/// The live progress display: one line for ingest and one per stage, drawn only on a terminal.
struct Bars {
    multi: MultiProgress,
    ingest: ProgressBar,
    stages: Vec<ProgressBar>,
}

impl Bars {
    fn new(events: u64) -> Self {
        let target = if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template(
            "  {prefix:<12} [{bar:30}] {pos:>8}/{len:<8} {per_sec:>14} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = |prefix: &str, len: Option<u64>| {
            let b = multi.add(len.map_or_else(ProgressBar::no_length, ProgressBar::new));
            b.set_style(style.clone());
            b.set_prefix(prefix.to_owned());
            b
        };
        let ingest = bar("ingest", Some(events));
        // The stages' totals are known as ingest goes.
        let stages = STAGES.iter().map(|s| bar(s.label(), None)).collect();
        Bars {
            multi,
            ingest,
            stages,
        }
    }

    fn finish(&self) {
        self.ingest.finish_and_clear();
        for b in &self.stages {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// What ingest inserted.
struct Ingested {
    inserted: u64,
    batches: u64,
    took: Duration,
    processable: u64,
    /// Ids of the fatal processable events.
    flowing: HashSet<DocumentId>,
}

/// Inserts the synthetic events in batches, like platform-connectors does per gRPC call.
async fn ingest(
    store: &dyn DataStore,
    opts: &FlowOptions,
    bars: &Bars,
    signal: &watch::Sender<Signal>,
) -> Result<Ingested, Failure> {
    let first_generated = Utc::now() - chrono::Duration::milliseconds(100 * opts.events as i64);
    let mut synth = Synth::new(opts.seed, opts.nodes, first_generated);
    let health = store.health_events();
    let mut out = Ingested {
        inserted: 0,
        batches: 0,
        took: Duration::ZERO,
        processable: 0,
        flowing: HashSet::new(),
    };
    let mut remaining = opts.events;
    while remaining > 0 {
        if signal.borrow().abort {
            return Err(Failure::Aborted);
        }
        let n = remaining.min(opts.batch);
        let mut batch = synth.health_events(n as usize);
        if let Some(run) = &opts.run_id {
            for (event, _) in &mut batch {
                event.metadata.insert(RUN_MARKER.to_owned(), run.clone());
            }
        }
        let t = Instant::now();
        let inserted = match health.insert_many(&batch).await {
            Ok(v) => v,
            Err(e) => {
                signal.send_modify(|s| s.abort = true);
                return Err(e.into());
            }
        };
        out.took += t.elapsed();
        if inserted.len() != batch.len() {
            signal.send_modify(|s| s.abort = true);
            return Err(Failure::Error(CliError::check(format!(
                "insert_many returned {} ids for {} events",
                inserted.len(),
                batch.len()
            ))));
        }
        for ((event, _), ins) in batch.iter().zip(inserted) {
            // The canonical document always carries `processingstrategy`, so "processable"
            // (strategy 1 or missing) is strategy 1 here.
            if event.processing_strategy == ProcessingStrategy::ExecuteRemediation {
                out.processable += 1;
                if event.is_fatal {
                    out.flowing.insert(ins.id);
                }
            }
        }
        out.inserted += n;
        out.batches += 1;
        remaining -= n;
        bars.ingest.inc(n);
        bars.stages[0].set_length(out.processable);
        for b in &bars.stages[1..] {
            b.set_length(out.flowing.len() as u64);
        }
    }
    Ok(out)
}

/// One consumer stage, shared by its handlers: a component written with the processor.
struct StageWorker {
    stage: Stage,
    consumer: String,
    store: Arc<dyn DataStore>,
    signal: Arc<watch::Sender<Signal>>,
    bar: ProgressBar,
    clock: ServerClock,
    stall: Duration,
    concurrency: usize,
    /// What the handlers did so far.
    book: Mutex<StageRun>,
    /// When a handler last finished (for the stall check).
    last_activity: Mutex<Instant>,
}

/// What one consumer stage saw and did.
struct StageRun {
    stage: Stage,
    consumer: String,
    /// Distinct changes handled (acted on or not).
    received: HashSet<DocumentId>,
    duplicates: Vec<DocumentId>,
    /// Events the stage wrote.
    handled: HashSet<DocumentId>,
    lags: Latencies,
    first_received: Option<Instant>,
    last_finished: Option<Instant>,
    /// Numbers the quarantine spans.
    spans: u64,
}

impl StageRun {
    /// The count the stage's target refers to.
    fn progress(&self) -> u64 {
        match self.stage {
            Stage::Quarantine => self.received.len() as u64,
            Stage::Drain | Stage::Remediation => self.handled.len() as u64,
        }
    }

    fn report(&self) -> StageReport {
        let span = match (self.first_received, self.last_finished) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        StageReport {
            stage: self.stage,
            consumer: self.consumer.clone(),
            received: self.received.len() as u64,
            handled: self.handled.len() as u64,
            duplicates: self.duplicates.len() as u64,
            lag: self.lags.percentiles(),
            rate: per_second(self.received.len() as u64, span),
        }
    }
}

/// Why a stage's processor was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every event of its target is handled.
    Done,
    /// Another task failed.
    Aborted,
    /// Nothing was handled for the stall time.
    Stalled,
}

impl StageWorker {
    /// Runs the stage on the processor until it has handled its target. On failure it tells
    /// the other tasks to stop.
    async fn run(
        self: Arc<Self>,
        watch: WatchOptions,
        stream: ChangeStream,
    ) -> Result<StageRun, Failure> {
        let out = self.process(watch, stream).await;
        if out.is_err() {
            self.signal.send_modify(|s| s.abort = true);
        }
        out
    }

    /// The processor does the concurrency, the per-node order and the checkpoints; the stage
    /// only acts on each change and says when it is done.
    async fn process(
        self: &Arc<Self>,
        watch: WatchOptions,
        stream: ChangeStream,
    ) -> Result<StageRun, Failure> {
        let options = ProcessorOptions {
            concurrency: self.concurrency,
            max_in_flight: self.concurrency * READ_AHEAD_ROUNDS,
            partition_key: Some(processor::by_path("fullDocument.healthevent.nodename")),
            retries: 2,
            backoff: Duration::from_millis(50),
            checkpoint_interval: Duration::from_millis(20),
            ..ProcessorOptions::default()
        };
        let stop = Arc::new(Mutex::new(None));
        let shutdown = {
            let (worker, stop) = (Arc::clone(self), Arc::clone(&stop));
            async move {
                let why = worker.until_stop().await;
                *lock(&stop) = Some(why);
            }
        };
        let handler = {
            let worker = Arc::clone(self);
            move |event: ChangeEvent| {
                let worker = Arc::clone(&worker);
                async move { worker.act(event).await }
            }
        };
        let collection = self.store.health_event_collection();
        let ran =
            processor::run_stream(collection, &watch, stream, options, handler, shutdown).await;
        let stopped = *lock(&stop);
        ran?;
        let run = std::mem::replace(
            &mut *lock(&self.book),
            StageRun::new(self.stage, &self.consumer),
        );
        match stopped {
            Some(Stop::Done) => Ok(run),
            Some(Stop::Aborted) => Err(Failure::Aborted),
            Some(Stop::Stalled) => Err(Failure::Error(CliError::check(format!(
                "{}: no change handled for {} s ({} of its events done)",
                self.consumer,
                self.stall.as_secs(),
                run.progress()
            )))),
            None => Err(Failure::Error(CliError::check(format!(
                "{}: the change stream ended",
                self.consumer
            )))),
        }
    }

    /// Completes when the stage is done, another task failed, or nothing happened for the
    /// stall time.
    async fn until_stop(&self) -> Stop {
        let mut updates = self.signal.subscribe();
        loop {
            let signal = *updates.borrow_and_update();
            if signal.abort {
                return Stop::Aborted;
            }
            if let Some(t) = signal.targets {
                let target = match self.stage {
                    Stage::Quarantine => t.processable,
                    Stage::Drain | Stage::Remediation => t.flowing,
                };
                if lock(&self.book).progress() >= target {
                    return Stop::Done;
                }
            }
            if lock(&self.last_activity).elapsed() >= self.stall {
                return Stop::Stalled;
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return Stop::Aborted },
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// Acts on one change; a redelivered change is counted and left alone.
    async fn act(&self, event: ChangeEvent) -> datastore::Result<()> {
        let id = event.document_id;
        let span = {
            let mut book = lock(&self.book);
            book.first_received.get_or_insert_with(Instant::now);
            if book.received.contains(&id) {
                book.duplicates.push(id);
                return Ok(());
            }
            book.spans += 1;
            book.spans
        };
        let health = self.store.health_events();
        let doc = event.full_document.as_ref().ok_or_else(|| {
            datastore::Error::permanent(format!(
                "{}: the change of {id} has no full document",
                self.consumer
            ))
        })?;
        let created = doc.get(CREATED_AT_FIELD).and_then(as_date).ok_or_else(|| {
            datastore::Error::permanent(format!(
                "{}: the change of {id} has no createdAt",
                self.consumer
            ))
        })?;
        let acted = match self.stage {
            Stage::Quarantine => {
                let fatal = doc
                    .get("healthevent")
                    .and_then(|e| e.get("isfatal"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if fatal {
                    let span = format!("{:016x}", 0xfa_0000_0000_u64 + span);
                    health
                        .update_node_quarantine_status(&id, QuarantineStatus::Quarantined, &span)
                        .await?;
                }
                fatal
            }
            Stage::Drain => {
                let succeeded = OperationStatus {
                    status: Some(EvictionStatus::Succeeded),
                    message: "all user pods evicted".to_owned(),
                    metadata: BTreeMap::new(),
                };
                health.update_pod_eviction_status(&id, &succeeded).await?;
                true
            }
            Stage::Remediation => {
                health.update_remediation_status(&id, true).await?;
                true
            }
        };
        self.record(id, acted, created);
        Ok(())
    }

    /// Books a handled change.
    fn record(&self, id: DocumentId, acted: bool, created: DateTime<Utc>) {
        *lock(&self.last_activity) = Instant::now();
        let mut run = lock(&self.book);
        run.last_finished = Some(Instant::now());
        run.received.insert(id.clone());
        if acted {
            let lag = self.clock.since(created);
            run.lags.push(lag);
            run.handled.insert(id);
            self.bar
                .set_message(format!("lag {:>6.1} ms", lag.as_secs_f64() * 1000.0));
        }
        if acted || self.stage == Stage::Quarantine {
            self.bar.inc(1);
        }
    }
}

impl StageRun {
    fn new(stage: Stage, consumer: &str) -> StageRun {
        StageRun {
            stage,
            consumer: consumer.to_owned(),
            received: HashSet::new(),
            duplicates: Vec::new(),
            handled: HashSet::new(),
            lags: Latencies::default(),
            first_received: None,
            last_finished: None,
            spans: 0,
        }
    }
}

/// The stage's book stays usable after a panicking handler (the processor counts the panic).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that every fatal processable event completed every stage exactly once, in the
/// stages' own records and in the database. Returns what was checked.
async fn verify(
    store: &dyn DataStore,
    opts: &FlowOptions,
    ingested: &Ingested,
    runs: &[StageRun],
) -> CliResult<Vec<String>> {
    let expected = ingested.flowing.len() as u64;
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for run in runs {
        if !run.duplicates.is_empty() {
            problems.push(format!(
                "{} received {} change(s) twice (first: {})",
                run.consumer,
                run.duplicates.len(),
                run.duplicates[0]
            ));
        }
        if run.handled != ingested.flowing {
            let missing = ingested.flowing.difference(&run.handled).count();
            let extra = run.handled.difference(&ingested.flowing).count();
            problems.push(format!(
                "{} handled {} events: {missing} of the {expected} expected missing, {extra} unexpected",
                run.consumer,
                run.handled.len()
            ));
        }
        if run.stage == Stage::Quarantine && run.received.len() as u64 != ingested.processable {
            problems.push(format!(
                "{} received {} processable inserts, {} were inserted",
                run.consumer,
                run.received.len(),
                ingested.processable
            ));
        }
    }
    checked.push(format!(
        "each stage handled exactly the {expected} fatal processable events, none twice"
    ));

    // The stored documents.
    let collection = store.health_event_collection();
    let scope = opts.scope();
    let complete = scope
        .clone()
        .and(Filter::eq(fields::IS_FATAL, true))
        .and(Filter::eq(fields::PROCESSING_STRATEGY, 1))
        .and(Filter::eq(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Quarantined.as_str(),
        ))
        .and(Filter::eq(
            fields::EVICTION_STATUS,
            EvictionStatus::Succeeded.as_str(),
        ))
        .and(Filter::eq(
            format!("{}.value", fields::FAULT_REMEDIATED),
            true,
        ));
    let counts = [
        ("quarantined, drained and remediated", complete),
        (
            "with any quarantine status",
            scope.clone().and(Filter::is_in(
                fields::NODE_QUARANTINED,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                    QuarantineStatus::UnQuarantined.as_str(),
                    QuarantineStatus::Cancelled.as_str(),
                ],
            )),
        ),
        (
            "with eviction Succeeded",
            scope.clone().and(Filter::eq(
                fields::EVICTION_STATUS,
                EvictionStatus::Succeeded.as_str(),
            )),
        ),
        (
            "with faultremediated {value: true}",
            scope.and(Filter::eq(
                format!("{}.value", fields::FAULT_REMEDIATED),
                true,
            )),
        ),
    ];
    for (what, filter) in counts {
        let n = collection.count(&filter).await?;
        if n != expected {
            problems.push(format!("{n} stored events are {what}, expected {expected}"));
        }
    }
    checked.push(format!(
        "the database holds exactly {expected} events quarantined, {expected} drained \
         (Succeeded), {expected} remediated, and they are the same fatal processable events"
    ));

    // Nothing is left after any consumer's checkpoint.
    let mut behind = Vec::new();
    for stage in STAGES {
        let consumer = opts.consumer(stage);
        let lag = collection.lag(&consumer, &opts.stage_filter(stage)).await?;
        behind.push(format!("{consumer} {}", lag.events_behind));
        if lag.events_behind != 0 {
            problems.push(format!(
                "{consumer} has {} matching change(s) after its checkpoint",
                lag.events_behind
            ));
        }
    }
    checked.push(format!(
        "changes left after each checkpoint: {}",
        behind.join(", ")
    ));

    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(CliError::check(format!(
            "the flow did not complete exactly once: {}",
            problems.join("; ")
        )))
    }
}
