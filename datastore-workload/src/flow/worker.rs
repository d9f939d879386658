//! One consumer stage of the flow, written with the event processor as a component is.

use super::*;

/// One consumer stage, shared by its handlers: a component written with the processor.
pub(super) struct StageWorker {
    pub(super) stage: Stage,
    pub(super) consumer: String,
    pub(super) store: Arc<dyn DataStore>,
    pub(super) signal: Arc<watch::Sender<Signal>>,
    pub(super) bar: ProgressBar,
    pub(super) clock: ServerClock,
    pub(super) stall: Duration,
    pub(super) concurrency: usize,
    /// What the handlers did so far.
    pub(super) book: Mutex<StageRun>,
    /// When a handler last finished (for the stall check).
    pub(super) last_activity: Mutex<Instant>,
}

/// What one consumer stage saw and did.
pub(super) struct StageRun {
    pub(super) stage: Stage,
    pub(super) consumer: String,
    /// Distinct changes handled (acted on or not).
    pub(super) received: HashSet<DocumentId>,
    pub(super) duplicates: Vec<DocumentId>,
    /// Events the stage wrote.
    pub(super) handled: HashSet<DocumentId>,
    pub(super) lags: Latencies,
    pub(super) first_received: Option<Instant>,
    pub(super) last_finished: Option<Instant>,
    /// Numbers the quarantine spans.
    pub(super) spans: u64,
}

impl StageRun {
    /// The count the stage's target refers to.
    pub(super) fn progress(&self) -> u64 {
        match self.stage {
            Stage::Quarantine => self.received.len() as u64,
            Stage::Drain | Stage::Remediation => self.handled.len() as u64,
        }
    }

    pub(super) fn report(&self) -> StageReport {
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
pub(super) enum Stop {
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
    pub(super) async fn run(
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
    pub(super) fn new(stage: Stage, consumer: &str) -> StageRun {
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
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
