//! The event-processing loop every NVSentinel component wraps around its change stream: a
//! handler per event, run concurrently (events of one partition key one at a time, in order),
//! reading ahead at most `max_in_flight` events, retrying failures, and checkpointing at the
//! low-water mark (every event before it is done), so a restart neither skips an event nor
//! repeats more than the events that were in flight.
//!
//! ```no_run
//! use std::time::Duration;
//! use datastore_api::processor::{self, ProcessorOptions};
//! use datastore_api::{change::watchers, DataStore, WatchOptions};
//!
//! # async fn run(store: &dyn DataStore) -> datastore_api::Result<()> {
//! let options = ProcessorOptions {
//!     concurrency: 16,
//!     partition_key: Some(processor::by_path("fullDocument.healthevent.nodename")),
//!     ..ProcessorOptions::default()
//! };
//! let summary = processor::run(
//!     store.health_event_collection(),
//!     WatchOptions::new("health-events-analyzer").filter(watchers::non_fatal_unhealthy_inserts()),
//!     options,
//!     |event| async move {
//!         // … analyse event.full_document …
//!         let _ = event;
//!         Ok(())
//!     },
//!     tokio::time::sleep(Duration::from_secs(3600)), // or a shutdown signal
//! )
//! .await?;
//! println!("handled {}", summary.handled);
//! # Ok(()) }
//! ```
//!
//! - **Partitions.** With a [`ProcessorOptions::partition_key`], events with the same key are
//!   handled one at a time in delivery order; events of different keys (or without a key) run
//!   in parallel, up to [`ProcessorOptions::concurrency`].
//! - **Read-ahead.** At most [`ProcessorOptions::max_in_flight`] events are read and not yet
//!   covered by a written checkpoint; the stream is not read further until the oldest ones
//!   finish and are checkpointed (backpressure). A handler that panics counts as failed.
//! - **Checkpoints** are written at the low-water mark only, one at a time, never past an
//!   unfinished or failed event: every [`ProcessorOptions::checkpoint_interval`], and sooner
//!   once half of `max_in_flight` is done but unwritten (so the read-ahead keeps reading);
//!   after a crash at most `max_in_flight` events are delivered again.
//! - **Failures.** Each attempt has a [`ProcessorOptions::timeout`]; a failed or timed-out
//!   attempt is retried up to [`ProcessorOptions::retries`] times with a doubling backoff; then
//!   [`FailurePolicy::Stop`] (the default) ends the run with the event's id in the error, after
//!   checkpointing what is done before it, and [`FailurePolicy::Skip`] counts and logs the event
//!   and goes on.
//! - **Shutdown.** When `shutdown` completes, reading stops and nothing new starts; running
//!   handlers get [`ProcessorOptions::drain_timeout`] to finish (the rest are aborted), and the
//!   final low-water mark is checkpointed. The lease is renewed when the stream is read: a
//!   handler that holds up a full read-ahead for longer than the lease lifetime lets a standby
//!   take over (this run then ends with `Conflict` and the new holder handles the events in
//!   flight again).
//! - **Leases** are the stream's: one active processor per consumer, others wait as standbys.
//!
//! # Metrics
//!
//! Besides the stream's [lag gauges](crate::metrics::lag), per consumer (label `client`):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `datastore_processor_events_total` | counter | `client`, `outcome`: `handled`, `retried` (a failed attempt that was retried), `skipped`, `failed` (every attempt failed) |
//! | `datastore_processor_in_flight` | gauge | `client`: events read and not yet covered by a written checkpoint |
//! | `datastore_processor_events_behind` | gauge | `client`: matching changes after the checkpoint, sampled every [`ProcessorOptions::events_behind_interval`] |

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use futures::FutureExt;
use tokio::task::JoinSet;

use crate::change::{ChangeEvent, ChangeStream, ResumeToken, WatchOptions};
use crate::collection::Collection;
use crate::{Error, Result, Value};

/// How an event's partition key is found (`None`: the event has no key and runs freely).
pub type PartitionKey = Arc<dyn Fn(&ChangeEvent) -> Option<String> + Send + Sync>;

/// A partition key read from the event's filter document (see
/// [`ChangeEvent::to_filter_document`]), e.g. `fullDocument.healthevent.nodename`. A value that
/// is not a string is keyed by its JSON text; an event without the path has no key.
pub fn by_path(path: &str) -> PartitionKey {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    Arc::new(move |event: &ChangeEvent| {
        let key = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match segments.split_first() {
            // The common case reads the document in place instead of building the whole
            // filter document for every event.
            Some((first, rest)) if first == "fullDocument" => {
                let (head, tail) = rest.split_first()?;
                let start = event.full_document.as_ref()?.get(head)?;
                tail.iter().try_fold(start, |cur, s| cur.get(s)).map(key)
            }
            _ => {
                let doc = Value::Object(event.to_filter_document());
                segments.iter().try_fold(&doc, |cur, s| cur.get(s)).map(key)
            }
        }
    })
}

/// What to do with an event whose handler failed every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// End the run with an error naming the event (the checkpoint stays before it).
    #[default]
    Stop,
    /// Count it, log it with its id, and go on (the checkpoint moves past it).
    Skip,
}

/// Options of [`run`].
#[derive(Clone)]
pub struct ProcessorOptions {
    /// Handlers running at once (at least 1).
    pub concurrency: usize,
    /// Events read and not yet checkpointed, at most (at least `concurrency`).
    pub max_in_flight: usize,
    /// Events of one key are handled one at a time, in order.
    pub partition_key: Option<PartitionKey>,
    /// Time limit of one handler attempt.
    pub timeout: Duration,
    /// Attempts after the first failed one.
    pub retries: u32,
    /// Wait before the first retry (doubling, up to 30 s).
    pub backoff: Duration,
    /// After the last failed attempt.
    pub on_failure: FailurePolicy,
    /// Checkpoints are written this often (sooner when half the read-ahead waits for one).
    pub checkpoint_interval: Duration,
    /// How long in-flight handlers may finish after shutdown.
    pub drain_timeout: Duration,
    /// How often `datastore_processor_events_behind` is sampled (a count of the changes after
    /// the checkpoint: one query); `None` never.
    pub events_behind_interval: Option<Duration>,
}

impl Default for ProcessorOptions {
    /// 16 handlers, 64 in flight, no partitions, 30 s per attempt, 3 retries from 100 ms,
    /// stop on failure, checkpoints every 200 ms, 10 s to drain, events behind sampled every
    /// 15 s.
    fn default() -> Self {
        ProcessorOptions {
            concurrency: 16,
            max_in_flight: 64,
            partition_key: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(100),
            on_failure: FailurePolicy::Stop,
            checkpoint_interval: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(10),
            events_behind_interval: Some(Duration::from_secs(15)),
        }
    }
}

impl std::fmt::Debug for ProcessorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorOptions")
            .field("concurrency", &self.concurrency)
            .field("max_in_flight", &self.max_in_flight)
            .field("partitioned", &self.partition_key.is_some())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

impl ProcessorOptions {
    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.max_in_flight < self.concurrency {
            return Err(Error::invalid_input(format!(
                "processor: concurrency must be at least 1 and max_in_flight at least concurrency (got {} and {})",
                self.concurrency, self.max_in_flight
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid_input(
                "processor: timeout must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events handled successfully.
    pub handled: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Events skipped after their last attempt ([`FailurePolicy::Skip`]).
    pub skipped: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

type Attempt = Pin<Box<dyn Future<Output = (u64, Result<u32>)> + Send>>;

/// A finished attempt task: its event's number and outcome.
type Joined = std::result::Result<(u64, Result<u32>), tokio::task::JoinError>;

/// An event between being read and being checkpointed.
struct Slot {
    token: ResumeToken,
    /// The changed document's id (for failure messages).
    document_id: String,
    done: bool,
}

/// Runs `handler` on every change of `collection`'s stream for `watch` until `shutdown`
/// completes or an event fails for good under [`FailurePolicy::Stop`] (see the module docs).
pub async fn run<H, F>(
    collection: &dyn Collection,
    watch: WatchOptions,
    options: ProcessorOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary>
where
    H: Fn(ChangeEvent) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    options.validate()?;
    let stream = collection.watch(watch.clone()).await?;
    run_stream(collection, &watch, stream, options, handler, shutdown).await
}

/// [`run`] on a stream already opened with `collection.watch(watch)`: for a caller that must
/// hold its position before something else happens (for example before the first write it
/// wants to see, with [`StartFrom::Now`](crate::StartFrom::Now)).
pub async fn run_stream<H, F>(
    collection: &dyn Collection,
    watch: &WatchOptions,
    mut stream: ChangeStream,
    options: ProcessorOptions,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary>
where
    H: Fn(ChangeEvent) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    options.validate()?;
    let consumer = watch.consumer.clone();
    let meters = Meters::new(&consumer);
    let handler = Arc::new(handler);
    let mut state = State::new(options.clone(), meters.clone());
    // Handlers run as tasks of their own: they keep going (and give back their connections)
    // while this loop awaits a checkpoint write. Dropping the set aborts what is left.
    let mut running: JoinSet<(u64, Result<u32>)> = JoinSet::new();
    let mut last_checkpoint = Instant::now();
    let sampler = sample_events_behind(
        collection,
        watch,
        meters.behind.clone(),
        options.events_behind_interval,
    );
    tokio::pin!(sampler);
    let mut reading = true;
    let mut stopping = false;
    let mut failure: Option<Error> = None;
    tokio::pin!(shutdown);
    loop {
        // After a shutdown or a failure nothing new starts: what runs drains below.
        if stopping || failure.is_some() {
            break;
        }
        while running.len() < options.concurrency {
            let Some((seq, event)) = state.next_ready() else {
                break;
            };
            running.spawn(attempt(seq, event, Arc::clone(&handler), &options));
        }
        if !reading && running.is_empty() {
            break;
        }
        let can_read = reading && state.in_flight() < options.max_in_flight;
        let tick = tokio::time::sleep(options.checkpoint_interval);
        tokio::select! {
            () = &mut shutdown => stopping = true,
            item = stream.next(), if can_read => match item {
                Some(Ok(event)) => state.push(event),
                Some(Err(e)) => failure = Some(e),
                None => reading = false,
            },
            Some(joined) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = settle_joined(&mut state, joined, &consumer) {
                    failure = Some(e);
                }
            },
            () = &mut sampler => {}
            () = tick => {}
        }
        if last_checkpoint.elapsed() >= options.checkpoint_interval || state.read_ahead_spent() {
            if let Err(e) = state.checkpoint(collection, &consumer).await {
                failure = Some(e);
            }
            last_checkpoint = Instant::now();
        }
        meters.in_flight.set(state.in_flight() as f64);
    }
    // Let in-flight handlers finish within the drain time, then checkpoint what is done.
    let deadline = tokio::time::Instant::now()
        .checked_add(options.drain_timeout)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, running.join_next()).await {
        if let Err(e) = settle_joined(&mut state, joined, &consumer) {
            failure.get_or_insert(e);
        }
    }
    abandon(&mut running, &mut state, &mut failure, &consumer).await;
    let last = state.checkpoint(collection, &consumer).await;
    meters.in_flight.set(state.in_flight() as f64);
    match (failure, last) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => Ok(state.summary),
    }
}

/// Aborts the attempts still running after the drain time and waits until they are gone, so
/// nothing of this run still runs when the caller starts the next one; an attempt that
/// finished meanwhile is booked. A handler stuck in blocking code cannot be aborted: after
/// [`ABANDON_WAIT`] it is detached, with a warning.
async fn abandon(
    running: &mut JoinSet<(u64, Result<u32>)>,
    state: &mut State,
    failure: &mut Option<Error>,
    consumer: &str,
) {
    running.abort_all();
    let gone = tokio::time::Instant::now() + ABANDON_WAIT;
    while let Ok(Some(joined)) = tokio::time::timeout_at(gone, running.join_next()).await {
        // An aborted attempt is simply gone; its event stays unfinished.
        if let Ok((seq, outcome)) = joined {
            if let Err(e) = state.settle(seq, outcome, consumer) {
                failure.get_or_insert(e);
            }
        }
    }
    if !running.is_empty() {
        tracing::warn!(consumer = %consumer, handlers = running.len(), "processor: handlers did not stop within {ABANDON_WAIT:?} of being abandoned (blocking code?); detaching them");
        running.detach_all();
    }
}

/// How long abandoned attempts get to stop.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

/// Samples `datastore_processor_events_behind` every `every` (each count bounded by the
/// interval, at most 10 s); never completes. Polled beside the loop, so a slow count (on
/// MongoDB it reads the backlog) never stalls reading, handling or checkpointing.
async fn sample_events_behind(
    collection: &dyn Collection,
    watch: &WatchOptions,
    gauge: metrics::Gauge,
    every: Option<Duration>,
) {
    let Some(every) = every else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        let limit = every.min(Duration::from_secs(10));
        match tokio::time::timeout(limit, collection.lag(&watch.consumer, &watch.filter)).await {
            Ok(Ok(lag)) => gauge.set(lag.events_behind as f64),
            Ok(Err(e)) => {
                tracing::debug!(consumer = %watch.consumer, error = %e, "processor: could not sample the events behind")
            }
            Err(_) => {
                tracing::debug!(consumer = %watch.consumer, "processor: sampling the events behind took longer than {limit:?}")
            }
        }
    }
}

/// Books a finished attempt task. Attempts catch their handler's panics, so a task fails only
/// if it was cancelled (the runtime is shutting down): the run stops without a checkpoint
/// past its event.
fn settle_joined(state: &mut State, joined: Joined, consumer: &str) -> Result<()> {
    match joined {
        Ok((seq, outcome)) => state.settle(seq, outcome, consumer),
        Err(e) => Err(Error::transient(format!(
            "processor {consumer:?}: a handler task ended abnormally: {e}"
        ))),
    }
}

/// One event's attempts: the handler under the timeout, retried with a doubling backoff.
/// Gives the number of retries, or the last error.
fn attempt<H, F>(
    seq: u64,
    event: ChangeEvent,
    handler: Arc<H>,
    options: &ProcessorOptions,
) -> Attempt
where
    H: Fn(ChangeEvent) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (timeout, retries, mut backoff) = (options.timeout, options.retries, options.backoff);
    Box::pin(async move {
        let mut tries = 0;
        loop {
            // The call itself inside the guarded future: a handler that panics before it
            // returns its future counts as failed too.
            let call =
                std::panic::AssertUnwindSafe(async { handler(event.clone()).await }).catch_unwind();
            let outcome = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Error::permanent("the handler panicked")),
                Err(_) => Err(Error::transient(format!(
                    "the handler did not finish within {timeout:?}"
                ))),
            };
            match outcome {
                Ok(()) => return (seq, Ok(tries)),
                Err(e) if tries >= retries => return (seq, Err(e)),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(30));
                }
            }
        }
    })
}

/// The events in flight: in delivery order for the low-water mark, and per partition for order.
struct State {
    options: ProcessorOptions,
    /// Events read and not yet checkpointed, oldest first; `base` is the first one's number.
    slots: VecDeque<Slot>,
    base: u64,
    /// Events waiting to start, with their key, in delivery order.
    waiting: VecDeque<(u64, Option<String>, ChangeEvent)>,
    /// Keys with a running handler.
    busy: HashSet<String>,
    /// The key of each running event.
    running_keys: HashMap<u64, Option<String>>,
    /// The newest token the checkpoint may move to, and how many events it moved over since
    /// the last write (they count as in flight: a crash would deliver them again).
    mark: Option<ResumeToken>,
    unwritten: usize,
    summary: Summary,
    meters: Meters,
}

impl State {
    fn new(options: ProcessorOptions, meters: Meters) -> State {
        State {
            options,
            meters,
            slots: VecDeque::new(),
            base: 0,
            waiting: VecDeque::new(),
            busy: HashSet::new(),
            running_keys: HashMap::new(),
            mark: None,
            unwritten: 0,
            summary: Summary::default(),
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.len() + self.unwritten
    }

    /// Half the read-ahead is done but not yet checkpointed: write now rather than at the
    /// interval, or the bound would cap throughput at `max_in_flight` per interval.
    fn read_ahead_spent(&self) -> bool {
        self.unwritten > 0 && self.unwritten * 2 >= self.options.max_in_flight
    }

    /// Records how `seq`'s attempts ended; an error when the run must stop
    /// ([`FailurePolicy::Stop`]).
    fn settle(&mut self, seq: u64, outcome: Result<u32>, consumer: &str) -> Result<()> {
        match outcome {
            Ok(retries) => {
                self.summary.retried += u64::from(retries);
                self.summary.handled += 1;
                self.meters.retried.increment(u64::from(retries));
                self.meters.handled.increment(1);
                self.finish(seq);
                Ok(())
            }
            Err(e) => {
                self.summary.retried += u64::from(self.options.retries);
                self.meters
                    .retried
                    .increment(u64::from(self.options.retries));
                self.meters.failed.increment(1);
                let id = self
                    .slot(seq)
                    .map(|s| s.document_id.clone())
                    .unwrap_or_default();
                match self.options.on_failure {
                    FailurePolicy::Skip => {
                        tracing::warn!(consumer = %consumer, document = %id, error = %e, "processor: skipping an event that failed every attempt");
                        self.summary.skipped += 1;
                        self.meters.skipped.increment(1);
                        self.finish(seq);
                        Ok(())
                    }
                    FailurePolicy::Stop => Err(e.map_message(|m| {
                        format!(
                            "processor {consumer:?}: the event of document {id} failed every attempt; the checkpoint stays before it: {m}"
                        )
                    })),
                }
            }
        }
    }

    fn push(&mut self, event: ChangeEvent) {
        let seq = self.base + self.slots.len() as u64;
        let key = self.options.partition_key.as_ref().and_then(|k| k(&event));
        self.slots.push_back(Slot {
            token: event.token.clone(),
            document_id: event.document_id.to_string(),
            done: false,
        });
        self.waiting.push_back((seq, key, event));
    }

    /// The oldest waiting event whose key has no running handler and no older waiting event.
    fn next_ready(&mut self) -> Option<(u64, ChangeEvent)> {
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut pick = None;
        for (i, (_, key, _)) in self.waiting.iter().enumerate() {
            match key {
                None => {
                    pick = Some(i);
                    break;
                }
                Some(k) if !self.busy.contains(k) && !blocked.contains(k.as_str()) => {
                    pick = Some(i);
                    break;
                }
                Some(k) => {
                    blocked.insert(k.as_str());
                }
            }
        }
        let (seq, key, event) = self.waiting.remove(pick?)?;
        if let Some(k) = &key {
            self.busy.insert(k.clone());
        }
        self.running_keys.insert(seq, key);
        Some((seq, event))
    }

    /// The slot of `seq`, while it is in flight.
    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Marks `seq` done, frees its key and moves the low-water mark over every done event.
    fn finish(&mut self, seq: u64) {
        if let Some(Some(k)) = self.running_keys.remove(&seq) {
            self.busy.remove(&k);
        }
        if let Some(slot) = self.slot(seq) {
            slot.done = true;
        }
        while self.slots.front().is_some_and(|s| s.done) {
            if let Some(slot) = self.slots.pop_front() {
                self.base += 1;
                self.mark = Some(slot.token);
                self.unwritten += 1;
            }
        }
    }

    /// Writes the low-water mark if it moved.
    async fn checkpoint(&mut self, collection: &dyn Collection, consumer: &str) -> Result<()> {
        if let (true, Some(token)) = (self.unwritten > 0, &self.mark) {
            collection.checkpoint(consumer, token).await?;
            self.unwritten = 0;
            self.summary.checkpoints += 1;
        }
        Ok(())
    }
}

/// Metric name: events by outcome, per consumer.
pub const EVENTS_TOTAL: &str = "datastore_processor_events_total";
/// Metric name: events read and not yet checkpointed, per consumer.
pub const IN_FLIGHT: &str = "datastore_processor_in_flight";
/// Metric name: matching changes after the checkpoint, per consumer (sampled).
pub const EVENTS_BEHIND: &str = "datastore_processor_events_behind";

/// One run's metric handles (see the module docs' table).
#[derive(Clone)]
struct Meters {
    handled: metrics::Counter,
    retried: metrics::Counter,
    skipped: metrics::Counter,
    failed: metrics::Counter,
    in_flight: metrics::Gauge,
    behind: metrics::Gauge,
}

impl Meters {
    fn new(consumer: &str) -> Meters {
        let counter = |outcome: &'static str| metrics::counter!(EVENTS_TOTAL, "client" => consumer.to_owned(), "outcome" => outcome);
        Meters {
            handled: counter("handled"),
            retried: counter("retried"),
            skipped: counter("skipped"),
            failed: counter("failed"),
            in_flight: metrics::gauge!(IN_FLIGHT, "client" => consumer.to_owned()),
            behind: metrics::gauge!(EVENTS_BEHIND, "client" => consumer.to_owned()),
        }
    }
}
