//! The NVSentinel flow simulation, shared by `datastore demo` and `datastore bench`.
//!
//! Four stages run concurrently, each in its own tokio task:
//!
//! * ingest (platform-connectors) inserts synthetic health events with `insert_many`;
//! * fault-quarantine watches processable inserts and quarantines the fatal events;
//! * node-drainer watches quarantine-status changes and records a successful drain;
//! * fault-remediation watches quarantined-and-drained events and marks them remediated.
//!
//! The three consumers open their streams from [`StartFrom::Now`] before the first insert,
//! handle up to [`FlowOptions::concurrency`] events at once and checkpoint as soon as an event
//! and every event delivered before it are done. At the end the run is verified: every fatal
//! processable event went through every stage exactly once, the stored documents say so, and no
//! consumer has a matching change left after its checkpoint.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datastore::change::watchers;
use datastore::model::{
    fields, EvictionStatus, OperationStatus, ProcessingStrategy, QuarantineStatus,
};
use datastore::value::{as_date, CREATED_AT_FIELD};
use datastore::{
    ChangeEvent, ChangeStream, Collection, DataStore, DocumentId, Filter, ResumeToken, StartFrom,
    Value, WatchOptions,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::error::{CliError, CliResult};
use crate::stats::{Latencies, Percentiles};
use crate::synth::{per_second, Synth};

/// A stage that sees no change for this long fails the run.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How many rounds of `concurrency` changes a stage receives past its oldest unfinished one.
const UNCHECKPOINTED_ROUNDS: usize = 4;

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
    /// Time from each handled event's insert (`createdAt`) to the stage finishing it
    /// (write and checkpoint done); cumulative over the earlier stages.
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
            "  lag = insert (createdAt, server clock) -> the stage has written and checkpointed the event; \
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
        streams.push(collection.watch(options).await?);
    }

    let bars = Bars::new(opts.events);
    let signal = Arc::new(watch::channel(Signal::default()).0);
    let tasks: Vec<_> = STAGES
        .into_iter()
        .zip(streams)
        .enumerate()
        .map(|(i, (stage, stream))| {
            let worker = StageWorker {
                stage,
                consumer: opts.consumer(stage),
                store: Arc::clone(&store),
                signal: Arc::clone(&signal),
                bar: bars.stages[i].clone(),
                clock,
                stall: opts.stall_timeout,
                concurrency: opts.concurrency.max(1),
            };
            tokio::spawn(worker.run(stream))
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

/// One consumer stage, before it runs.
struct StageWorker {
    stage: Stage,
    consumer: String,
    store: Arc<dyn DataStore>,
    signal: Arc<watch::Sender<Signal>>,
    bar: ProgressBar,
    clock: ServerClock,
    stall: Duration,
    concurrency: usize,
}

/// What one consumer stage saw and did.
struct StageRun {
    stage: Stage,
    consumer: String,
    received: HashSet<DocumentId>,
    duplicates: Vec<DocumentId>,
    handled: HashSet<DocumentId>,
    /// Distinct received changes covered by a stored checkpoint.
    checkpointed: u64,
    lags: Latencies,
    first_received: Option<Instant>,
    last_finished: Option<Instant>,
}

impl StageRun {
    /// The count the stage's target refers to.
    fn progress(&self) -> u64 {
        match self.stage {
            Stage::Quarantine => self.checkpointed,
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

/// A received change on its way through the stage, in delivery order.
struct Slot {
    token: ResumeToken,
    /// Set once the stage's handler is done with the change.
    done: Option<Handled>,
}

/// What the handler did with one change.
struct Handled {
    id: DocumentId,
    /// Whether the stage wrote the event (quarantined, drained, remediated).
    acted: bool,
    /// A redelivery the stage ignored.
    duplicate: bool,
    created: DateTime<Utc>,
}

impl StageWorker {
    /// Runs the stage until it has handled its target, then drops its stream. On failure it
    /// tells the other tasks to stop.
    async fn run(self, stream: ChangeStream) -> Result<StageRun, Failure> {
        let out = self.consume(stream).await;
        if out.is_err() {
            self.signal.send_modify(|s| s.abort = true);
        }
        out
    }

    /// Receives changes in order and hands up to `concurrency` of them to handlers at once.
    /// The checkpoint only ever covers a prefix of the delivery order whose handlers are all
    /// done, so a crash never skips a change and redelivers at most the changes received after
    /// the first unfinished one (bounded: `concurrency * UNCHECKPOINTED_ROUNDS`); one checkpoint
    /// is stored at a time, covering every change finished meanwhile.
    async fn consume(&self, mut stream: ChangeStream) -> Result<StageRun, Failure> {
        let mut updates = self.signal.subscribe();
        let mut run = StageRun {
            stage: self.stage,
            consumer: self.consumer.clone(),
            received: HashSet::new(),
            duplicates: Vec::new(),
            handled: HashSet::new(),
            checkpointed: 0,
            lags: Latencies::default(),
            first_received: None,
            last_finished: None,
        };
        // `order[0]` is delivery number `base`.
        let mut order: VecDeque<Slot> = VecDeque::new();
        let mut base = 0u64;
        let mut handlers = FuturesUnordered::new();
        // At most one: (the checkpoint write, the changes it covers).
        let mut checkpoints = FuturesUnordered::new();
        let mut deadline = tokio::time::Instant::now() + self.stall;
        loop {
            let signal = *updates.borrow_and_update();
            if signal.abort {
                return Err(Failure::Aborted);
            }
            if let Some(t) = signal.targets {
                let target = match self.stage {
                    Stage::Quarantine => t.processable,
                    Stage::Drain | Stage::Remediation => t.flowing,
                };
                if run.progress() >= target && order.is_empty() && checkpoints.is_empty() {
                    break;
                }
            }
            if checkpoints.is_empty() {
                // Checkpoint the finished prefix of the delivery order.
                let mut covered = Vec::new();
                let mut last = None;
                while order.front().is_some_and(|slot| slot.done.is_some()) {
                    let Some(slot) = order.pop_front() else { break };
                    base += 1;
                    last = Some(slot.token);
                    covered.extend(slot.done);
                }
                if let Some(token) = last {
                    let collection = self.store.health_event_collection();
                    let consumer = self.consumer.as_str();
                    checkpoints.push(async move {
                        let stored = collection.checkpoint(consumer, &token).await;
                        (covered, stored)
                    });
                }
            }
            // A slow event at the head holds the checkpoint back; receive no further than a few
            // rounds past it, so that what a crash redelivers (and memory) stays bounded.
            let receiving = handlers.len() < self.concurrency
                && order.len() < self.concurrency * UNCHECKPOINTED_ROUNDS;
            tokio::select! {
                Some((index, outcome)) = handlers.next() => {
                    let outcome: Result<Handled, Failure> = outcome;
                    order[(index - base) as usize].done = Some(outcome?);
                }
                Some((covered, stored)) = checkpoints.next() => {
                    let stored: datastore::Result<()> = stored;
                    stored?;
                    self.record(&mut run, covered);
                }
                item = stream.next(), if receiving => {
                    let event = match item {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            return Err(Failure::Error(CliError::check(format!(
                                "{}: the change stream ended",
                                self.consumer
                            ))))
                        }
                    };
                    run.first_received.get_or_insert_with(Instant::now);
                    let index = base + order.len() as u64;
                    let id = event.document_id.clone();
                    if run.received.insert(id.clone()) {
                        order.push_back(Slot { token: event.token.clone(), done: None });
                        handlers.push(self.handle(index, event));
                    } else {
                        // Delivered again: count it, do not act twice.
                        run.duplicates.push(id.clone());
                        order.push_back(Slot {
                            token: event.token,
                            done: Some(Handled {
                                id,
                                acted: false,
                                duplicate: true,
                                created: Utc::now(),
                            }),
                        });
                    }
                }
                changed = updates.changed() => {
                    if changed.is_err() {
                        return Err(Failure::Aborted);
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Failure::Error(CliError::check(format!(
                        "{}: no change delivered for {} s ({} of its events done)",
                        self.consumer,
                        self.stall.as_secs(),
                        run.progress()
                    ))));
                }
            }
            deadline = tokio::time::Instant::now() + self.stall;
        }
        // Stop watching before reporting.
        drop(stream);
        Ok(run)
    }

    /// Acts on one change (the `index`th delivered); the checkpoint comes later.
    async fn handle(&self, index: u64, event: ChangeEvent) -> (u64, Result<Handled, Failure>) {
        (index, self.act(index, event).await)
    }

    async fn act(&self, index: u64, event: ChangeEvent) -> Result<Handled, Failure> {
        let health = self.store.health_events();
        let id = event.document_id;
        let doc = event.full_document.as_ref().ok_or_else(|| {
            CliError::check(format!(
                "{}: the change of {id} has no full document",
                self.consumer
            ))
        })?;
        let created = doc.get(CREATED_AT_FIELD).and_then(as_date).ok_or_else(|| {
            CliError::check(format!(
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
                    let span = format!("{:016x}", 0xfa_0000_0000_u64 + index);
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
        Ok(Handled {
            id,
            acted,
            duplicate: false,
            created,
        })
    }

    /// Books the changes a stored checkpoint covers.
    fn record(&self, run: &mut StageRun, covered: Vec<Handled>) {
        run.last_finished = Some(Instant::now());
        for h in covered {
            run.checkpointed += u64::from(!h.duplicate);
            if h.acted {
                let lag = self.clock.since(h.created);
                run.lags.push(lag);
                run.handled.insert(h.id);
                self.bar
                    .set_message(format!("lag {:>6.1} ms", lag.as_secs_f64() * 1000.0));
            }
            if h.acted || self.stage == Stage::Quarantine {
                self.bar.inc(1);
            }
        }
    }
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
