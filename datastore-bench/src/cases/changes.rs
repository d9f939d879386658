//! The change-stream cases of `datastore-bench`, each on a fresh database of the throwaway
//! server:
//!
//! * `capture`: 8 writers inserting one event at a time, change capture on vs off;
//! * `lag`: delivery lag of 4 consumers while a paced writer inserts `--rate` events/s;
//! * `backlog`: one consumer draining `--backlog` captured changes, and its memory (in a
//!   process of its own, `datastore-bench drain-worker`, so that nothing else is in its RSS);
//! * `flow`: end-to-end events/s of the flow simulation ([`datastore_workload::flow`]) on the processor;
//! * `read-ahead`: the processor at concurrency 16 vs 1 ([`super::read_ahead`]);
//! * `rules`: 20 analyzer-rule pipelines per event ([`super::rules`]).
//!
//! Figures are compared with their targets and marked PASS or MISS; a missed target is not an
//! error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datastore::{DataStore, DocumentId, StartFrom, WatchOptions};
use futures::StreamExt;
use provider_postgres::PgDataStore;
use tokio::sync::watch;

use super::{join_error, load_events, median, thousands, Bench, Events, BENCH_NODES, WRITERS};
use crate::cli::{BenchCase, DrainWorkerArgs};
use datastore_tools::error::{CliError, CliResult};
use datastore_workload::flow::{self, FlowOptions};
use datastore_workload::measure::{mib, proc_status_bytes, Latencies, Percentiles};
use datastore_workload::synth::{per_second, Synth};

/// Consumers of the delivery-lag case.
const LAG_CONSUMERS: usize = 4;
/// Writer tasks that share the paced schedule of the delivery-lag case.
const LAG_WRITERS: usize = 4;
/// Events per `insert_many` while loading the backlog.
const BACKLOG_BATCH: usize = 5_000;
/// Batch size of the backlog consumer's stream.
const DRAIN_BATCH: u32 = 5_000;
/// The backlog consumer checkpoints after this many events.
const DRAIN_CHECKPOINT_EVERY: u64 = 5_000;
/// How often the memory sampler reads `VmRSS`.
const RSS_SAMPLE: Duration = Duration::from_millis(50);
/// Events per `insert_many` of the flow case (one platform-connectors batch).
const FLOW_BATCH: u64 = 100;
/// A consumer that receives nothing for this long fails its case.
const STALL: Duration = Duration::from_secs(30);
/// The backlog consumer's limit: one batch read of a large backlog may legitimately take long.
const DRAIN_STALL: Duration = Duration::from_secs(300);

/// Target: write throughput with capture on, as a share of capture off.
const CAPTURE_RATIO_TARGET: f64 = 0.90;
/// Target: p99 delivery lag, ms.
const LAG_P99_TARGET_MS: f64 = 20.0;
/// Target: backlog drain rate, changes/s.
const DRAIN_RATE_TARGET: f64 = 50_000.0;
/// Target: RSS growth while draining, MiB.
const DRAIN_RSS_TARGET_MIB: f64 = 64.0;
/// Target: flow simulation end to end, events/s.
const FLOW_RATE_TARGET: f64 = 4_200.0;

/// One line of the change-stream results table.
pub(super) struct Figure {
    pub(super) case: String,
    pub(super) figure: String,
    pub(super) target: String,
    pub(super) pass: bool,
}

/// Runs the selected change-stream cases and prints their table.
pub(super) async fn run(bench: &Bench<'_>) -> CliResult<()> {
    let mut figures = Vec::new();
    if bench.args.selected(BenchCase::Capture) {
        figures.push(capture(bench).await?);
    }
    if bench.args.selected(BenchCase::Lag) {
        figures.push(delivery_lag(bench).await?);
    }
    if bench.args.selected(BenchCase::Backlog) {
        figures.extend(backlog(bench).await?);
    }
    if bench.args.selected(BenchCase::Flow) {
        figures.push(flow_case(bench).await?);
    }
    if bench.args.selected(BenchCase::ReadAhead) {
        figures.push(super::read_ahead::read_ahead(bench).await?);
    }
    if bench.args.selected(BenchCase::Rules) {
        figures.extend(super::rules::rules_case(bench).await?);
    }
    println!();
    println!(
        "{:<48} {:<44} {:<20} result",
        "change streams", "figure", "target"
    );
    for f in &figures {
        println!(
            "{:<48} {:<44} {:<20} {}",
            f.case,
            f.figure,
            f.target,
            if f.pass { "PASS" } else { "MISS" }
        );
    }
    let missed = figures.iter().filter(|f| !f.pass).count();
    println!(
        "note: {} of {} change-stream figures meet their target; a MISS is reported, not an error.",
        figures.len() - missed,
        figures.len()
    );
    Ok(())
}

/// a. 8 writers, one event per `insert`, capture on vs off (alternating order, median of runs).
async fn capture(bench: &Bench<'_>) -> CliResult<Figure> {
    let n = bench.args.events;
    println!();
    println!("bench: a. capture on vs off: {WRITERS} writers inserting {n} events one at a time");
    let events: Arc<Events> =
        Arc::new(Synth::new(bench.args.seed, BENCH_NODES, Utc::now()).health_events(n as usize));
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for run in 1..=bench.args.runs {
        // Alternate which side goes first, so that neither always runs on a warmer server.
        let (t_on, t_off) = if run % 2 == 1 {
            let a = bench.provider_concurrent(Arc::clone(&events), true).await?;
            (
                a,
                bench
                    .provider_concurrent(Arc::clone(&events), false)
                    .await?,
            )
        } else {
            let b = bench
                .provider_concurrent(Arc::clone(&events), false)
                .await?;
            (
                bench.provider_concurrent(Arc::clone(&events), true).await?,
                b,
            )
        };
        println!(
            "  run {run}/{}: capture on {:>7.3} s ({:>7}/s), off {:>7.3} s ({:>7}/s), ratio {:.2}",
            bench.args.runs,
            t_on.as_secs_f64(),
            thousands(per_second(n, t_on)),
            t_off.as_secs_f64(),
            thousands(per_second(n, t_off)),
            t_off.as_secs_f64() / t_on.as_secs_f64()
        );
        on.push(t_on);
        off.push(t_off);
    }
    let (r_on, r_off) = (per_second(n, median(on)), per_second(n, median(off)));
    let ratio = if r_off > 0.0 { r_on / r_off } else { 0.0 };
    Ok(Figure {
        case: format!("a. capture on/off, {WRITERS} writers x{n}"),
        figure: format!(
            "on {}/s, off {}/s: {:.0}%",
            thousands(r_on),
            thousands(r_off),
            ratio * 100.0
        ),
        target: format!(">= {:.0}%", CAPTURE_RATIO_TARGET * 100.0),
        pass: ratio >= CAPTURE_RATIO_TARGET,
    })
}

/// b. Delivery lag: a paced writer, four consumers; lag = receipt − insert completion.
async fn delivery_lag(bench: &Bench<'_>) -> CliResult<Figure> {
    let (rate, secs) = (bench.args.rate, bench.args.lag_secs);
    let total = (rate * secs) as usize;
    println!();
    println!(
        "bench: b. delivery lag: {total} inserts paced at {rate}/s by {LAG_WRITERS} writer tasks, \
         {LAG_CONSUMERS} consumers (filter All, poll every {} ms)",
        bench.args.poll_ms
    );
    let (store, db) = bench.fresh_store().await?;
    let out = delivery_lag_on(bench, &store, total).await;
    store.close().await;
    bench.drop_database(&db).await?;
    let lags = out?;
    let p = lags.percentiles();
    Ok(Figure {
        case: format!("b. delivery lag at {rate}/s, {LAG_CONSUMERS} consumers"),
        figure: Percentiles::describe(p),
        target: format!("p99 <= {LAG_P99_TARGET_MS:.0} ms"),
        pass: p.is_some_and(|p| p.p99 <= LAG_P99_TARGET_MS),
    })
}

async fn delivery_lag_on(
    bench: &Bench<'_>,
    store: &PgDataStore,
    total: usize,
) -> CliResult<Latencies> {
    Bench::warm_up(store.pool(), LAG_WRITERS + LAG_CONSUMERS * 2).await?;
    let events: Arc<Events> =
        Arc::new(Synth::new(bench.args.seed, BENCH_NODES, Utc::now()).health_events(total));
    let poll = Duration::from_millis(bench.args.poll_ms);
    let collection = store.health_event_collection();
    let abort = Arc::new(watch::channel(false).0);

    let mut consumers = Vec::with_capacity(LAG_CONSUMERS);
    for i in 0..LAG_CONSUMERS {
        let consumer = format!("bench-lag-{i}");
        let stream = collection
            .watch(
                WatchOptions::new(consumer.clone())
                    .start(StartFrom::Now)
                    .poll_interval(poll),
            )
            .await?;
        let (store, mut stop) = (store.clone(), abort.subscribe());
        consumers.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut got: Vec<(DocumentId, Instant)> = Vec::with_capacity(total);
            let mut last = None;
            let mut deadline = tokio::time::Instant::now() + STALL;
            while got.len() < total {
                tokio::select! {
                    item = stream.next() => match item {
                        Some(Ok(e)) => {
                            got.push((e.document_id, Instant::now()));
                            last = Some(e.token);
                            deadline = tokio::time::Instant::now() + STALL;
                        }
                        Some(Err(e)) => return Err(CliError::from(e)),
                        None => return Err(CliError::check(format!("{consumer}: the stream ended"))),
                    },
                    _ = stop.changed() => return Err(CliError::check(format!("{consumer}: stopped"))),
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(CliError::check(format!(
                            "{consumer}: nothing delivered for {} s ({} of {total})",
                            STALL.as_secs(),
                            got.len()
                        )));
                    }
                }
            }
            // Checkpoint while the stream (and so the consumer's lease) is still held.
            if let Some(token) = last {
                store
                    .health_event_collection()
                    .checkpoint(&consumer, &token)
                    .await?;
            }
            drop(stream);
            Ok(got)
        }));
    }

    // The writers share one schedule: event i is due at start + i / rate.
    let interval = Duration::from_secs_f64(1.0 / bench.args.rate as f64);
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let writers: Vec<_> = (0..LAG_WRITERS)
        .map(|_| {
            let (store, events, next) = (store.clone(), Arc::clone(&events), Arc::clone(&next));
            tokio::spawn(async move {
                let health = store.health_events();
                let mut done = Vec::new();
                let mut late = Duration::ZERO;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((event, status)) = events.get(i) else {
                        return Ok::<_, datastore::Error>((done, late));
                    };
                    let due = start + interval * i as u32;
                    late = late.max(tokio::time::Instant::now().saturating_duration_since(due));
                    tokio::time::sleep_until(due).await;
                    let inserted = health.insert(event, status).await?;
                    done.push((inserted.id, Instant::now()));
                }
            })
        })
        .collect();
    let mut completed: HashMap<DocumentId, Instant> = HashMap::with_capacity(total);
    let mut behind = Duration::ZERO;
    let mut failure = None;
    for w in writers {
        match w.await {
            Ok(Ok((done, late))) => {
                behind = behind.max(late);
                completed.extend(done);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(CliError::from(e));
            }
            Err(e) => {
                failure.get_or_insert(join_error(e));
            }
        }
    }
    let wrote = start.elapsed();
    if failure.is_some() {
        abort.send_replace(true);
    }
    let mut received = Vec::with_capacity(LAG_CONSUMERS);
    for c in consumers {
        match c.await {
            Ok(Ok(got)) => received.push(got),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(join_error(e));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    println!(
        "  wrote {total} events in {:.2} s ({}/s; the schedule was at most {:.1} ms behind)",
        wrote.as_secs_f64(),
        thousands(per_second(total as u64, wrote)),
        behind.as_secs_f64() * 1000.0
    );
    let mut all = Latencies::default();
    for (i, got) in received.iter().enumerate() {
        let mut lags = Latencies::default();
        let mut early = 0;
        for (id, at) in got {
            let Some(done) = completed.get(id) else {
                return Err(CliError::check(format!(
                    "bench-lag-{i} received {id}, which no writer inserted"
                )));
            };
            if at < done {
                early += 1;
            }
            lags.push(at.saturating_duration_since(*done));
        }
        let p = lags.percentiles();
        println!(
            "  bench-lag-{i}: {} events, {}, max {:.1} ms ({early} seen before insert() returned, counted as 0)",
            got.len(),
            Percentiles::describe(p),
            p.map_or(0.0, |p| p.max)
        );
        all.extend(&lags);
    }
    let p = all.percentiles();
    println!(
        "  all consumers: {}, max {:.1} ms",
        Percentiles::describe(p),
        p.map_or(0.0, |p| p.max)
    );
    Ok(all)
}

/// c. Backlog drain: `--backlog` captured inserts, then one consumer from the beginning, in a
/// process of its own (`datastore-bench drain-worker`) so that its memory is measured alone.
async fn backlog(bench: &Bench<'_>) -> CliResult<Vec<Figure>> {
    let n = bench.args.backlog;
    println!();
    println!(
        "bench: c. backlog drain: {n} captured inserts (insert_many batches of {BACKLOG_BATCH}), \
         then one consumer process from StartFrom::Beginning, batch size {DRAIN_BATCH}, checkpoint \
         every {DRAIN_CHECKPOINT_EVERY}"
    );
    let (store, db) = bench.fresh_store().await?;
    let mut synth = Synth::new(bench.args.seed, 1_000, Utc::now());
    let loaded = load_events(&store, &mut synth, n, BACKLOG_BATCH, " with capture on").await;
    let out = match loaded {
        Ok(()) => run_drain_worker(bench.pg.url(&db), n, bench.args.poll_ms).await,
        Err(e) => Err(e),
    };
    store.close().await;
    bench.drop_database(&db).await?;
    let d = out?;
    let took = Duration::from_secs_f64(d.seconds);
    let rate = per_second(n, took);
    println!(
        "  drained {n} changes in {:.2} s ({}/s): watch() {:.1} ms, first change after {:.1} ms; \
         {:.2} s of it inside the stream waiting for batches (longest {:.0} ms), the rest handing \
         out buffered changes and checkpointing",
        d.seconds,
        thousands(rate),
        d.watch_ms,
        d.first_ms,
        d.waits_seconds,
        d.longest_wait_ms
    );
    println!(
        "  consumer process RSS: {:.1} MiB before the drain, peak {:.1} MiB (+{:.1} MiB), VmHWM {:.1} MiB; \
         peak by quarter of the drain: {}",
        mib(d.rss_before),
        mib(d.rss_peak),
        mib(d.rss_peak.saturating_sub(d.rss_before)),
        mib(d.hwm),
        d.quarter_peaks
            .iter()
            .map(|b| format!("{:.1}", mib(*b)))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    // "Flat": the peak does not keep growing with the amount drained (the last quarter's peak
    // within 8 MiB of the first quarter's).
    let flat = d.quarter_peaks[3].saturating_sub(d.quarter_peaks[0]) <= 8 * 1024 * 1024;
    let peak = d.hwm.max(d.rss_peak);
    Ok(vec![
        Figure {
            case: format!(
                "c. backlog drain, 1 consumer, {} changes",
                thousands(n as f64)
            ),
            figure: format!("{} changes/s", thousands(rate)),
            target: format!(">= {}/s", thousands(DRAIN_RATE_TARGET)),
            pass: rate >= DRAIN_RATE_TARGET,
        },
        Figure {
            case: "c. consumer process peak RSS while draining".to_owned(),
            figure: format!(
                "{:.1} MiB (+{:.1} over its start), {}",
                mib(peak),
                mib(d.rss_peak.saturating_sub(d.rss_before)),
                if flat { "flat" } else { "growing" }
            ),
            target: format!("<= {DRAIN_RSS_TARGET_MIB:.0} MiB, flat"),
            pass: mib(peak) <= DRAIN_RSS_TARGET_MIB && flat,
        },
    ])
}

/// The marker of the drain worker's result line.
const RESULT_PREFIX: &str = "drain-worker-result ";

/// What the drain worker measured.
#[derive(Debug, Clone, PartialEq)]
struct DrainResult {
    seconds: f64,
    watch_ms: f64,
    first_ms: f64,
    waits_seconds: f64,
    longest_wait_ms: f64,
    rss_before: u64,
    rss_peak: u64,
    hwm: u64,
    quarter_peaks: [u64; 4],
}

/// Runs `datastore-bench drain-worker` on the backlog database and reads its result line.
async fn run_drain_worker(url: String, n: u64, poll_ms: u64) -> CliResult<DrainResult> {
    let exe = std::env::current_exe()?;
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["drain-worker", "--url", &url])
            .args(["--events", &n.to_string()])
            .args(["--batch", &DRAIN_BATCH.to_string()])
            .args(["--poll-ms", &poll_ms.to_string()])
            .args(["--checkpoint-every", &DRAIN_CHECKPOINT_EVERY.to_string()])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await
    .map_err(join_error)??;
    if !output.status.success() {
        return Err(CliError::check(format!(
            "the drain worker failed ({})",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or_else(|| CliError::check("the drain worker printed no result"))?;
    DrainResult::from_json(line)
        .ok_or_else(|| CliError::check(format!("unreadable drain-worker result: {line}")))
}

impl DrainResult {
    fn to_json(&self) -> String {
        serde_json::json!({
            "seconds": self.seconds,
            "watch_ms": self.watch_ms,
            "first_ms": self.first_ms,
            "waits_seconds": self.waits_seconds,
            "longest_wait_ms": self.longest_wait_ms,
            "rss_before": self.rss_before,
            "rss_peak": self.rss_peak,
            "hwm": self.hwm,
            "quarter_peaks": self.quarter_peaks,
        })
        .to_string()
    }

    fn from_json(line: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let q = v.get("quarter_peaks")?.as_array()?;
        let qp = |i: usize| q.get(i).and_then(serde_json::Value::as_u64);
        Some(DrainResult {
            seconds: f("seconds")?,
            watch_ms: f("watch_ms")?,
            first_ms: f("first_ms")?,
            waits_seconds: f("waits_seconds")?,
            longest_wait_ms: f("longest_wait_ms")?,
            rss_before: u("rss_before")?,
            rss_peak: u("rss_peak")?,
            hwm: u("hwm")?,
            quarter_peaks: [qp(0)?, qp(1)?, qp(2)?, qp(3)?],
        })
    }
}

/// `datastore-bench drain-worker`: drains `--events` changes from the beginning with one consumer,
/// sampling this process's memory, and prints the result line.
pub async fn drain_worker(args: &DrainWorkerArgs) -> CliResult<()> {
    let store =
        PgDataStore::connect_url(&args.url, datastore_workload::embedded::throwaway_pool()).await?;
    let out = drain(&store, args).await;
    store.close().await;
    println!("{RESULT_PREFIX}{}", out?.to_json());
    Ok(())
}

async fn drain(store: &PgDataStore, args: &DrainWorkerArgs) -> CliResult<DrainResult> {
    let n = args.events;
    let rss_before = proc_status_bytes("VmRSS").unwrap_or(0);
    let sampler = RssSampler::start();
    let collection = store.health_event_collection();
    let consumer = "bench-backlog";
    let t = Instant::now();
    let mut options = WatchOptions::new(consumer)
        .start(StartFrom::Beginning)
        .poll_interval(Duration::from_millis(args.poll_ms));
    options.batch_size = args.batch;
    let mut stream = collection.watch(options).await?;
    let opened = t.elapsed();
    let (mut got, mut first, mut waits, mut longest) = (0u64, None, Duration::ZERO, Duration::ZERO);
    let mut quarter_peaks = [0u64; 4];
    while got < n {
        let w = Instant::now();
        let item = tokio::time::timeout(DRAIN_STALL, stream.next()).await;
        let waited = w.elapsed();
        let event = match item {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Err(CliError::check("the backlog stream ended")),
            Err(_) => {
                return Err(CliError::check(format!(
                    "{consumer}: nothing delivered for {} s after {got} of {n} changes",
                    DRAIN_STALL.as_secs()
                )))
            }
        };
        if waited > Duration::from_millis(1) {
            waits += waited;
        }
        longest = longest.max(waited);
        first.get_or_insert_with(|| t.elapsed());
        got += 1;
        if got % args.checkpoint_every.max(1) == 0 || got == n {
            collection.checkpoint(consumer, &event.token).await?;
            let q = (((got - 1) * 4) / n).min(3) as usize;
            quarter_peaks[q] = quarter_peaks[q].max(sampler.peak());
        }
    }
    let took = t.elapsed();
    drop(stream);
    let rss_peak = sampler
        .stop()
        .await
        .max(proc_status_bytes("VmRSS").unwrap_or(0));
    // Peaks are cumulative: a quarter without a sample keeps the previous one's.
    for q in 1..4 {
        quarter_peaks[q] = quarter_peaks[q].max(quarter_peaks[q - 1]);
    }
    Ok(DrainResult {
        seconds: took.as_secs_f64(),
        watch_ms: opened.as_secs_f64() * 1000.0,
        first_ms: first.unwrap_or_default().as_secs_f64() * 1000.0,
        waits_seconds: waits.as_secs_f64(),
        longest_wait_ms: longest.as_secs_f64() * 1000.0,
        rss_before,
        rss_peak,
        hwm: proc_status_bytes("VmHWM").unwrap_or(0),
        quarter_peaks,
    })
}

/// Samples the process's `VmRSS` in the background and keeps the largest value.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(proc_status_bytes("VmRSS").unwrap_or(0)));
        let task = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_status_bytes("VmRSS") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(RSS_SAMPLE).await;
                }
            })
        };
        RssSampler { stop, peak, task }
    }

    /// The largest sample so far.
    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the largest sample.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// d. The flow simulation on a fresh database.
async fn flow_case(bench: &Bench<'_>) -> CliResult<Figure> {
    let n = bench.args.flow_events;
    println!();
    println!(
        "bench: d. flow simulation: {n} events in insert_many batches of {FLOW_BATCH}, three \
         consumer stages on the processor (poll every {} ms, {} handlers per stage, one at a time \
         per node, low-water-mark checkpoints)",
        bench.args.poll_ms, bench.args.stage_concurrency
    );
    let (store, db) = bench.fresh_store().await?;
    let store: Arc<dyn DataStore> = Arc::new(store);
    let options = FlowOptions {
        events: n,
        nodes: BENCH_NODES,
        batch: FLOW_BATCH,
        seed: bench.args.seed,
        poll_interval: Duration::from_millis(bench.args.poll_ms),
        concurrency: bench.args.stage_concurrency as usize,
        stall_timeout: flow::STALL_TIMEOUT,
        run_id: None,
    };
    let out = flow::run(Arc::clone(&store), &options).await;
    store.close().await;
    bench.drop_database(&db).await?;
    let report = out?;
    report.print();
    let rate = report.events_per_second();
    Ok(Figure {
        case: format!("d. flow simulation, {n} events"),
        figure: format!(
            "{} events/s ({} remediated/s)",
            thousands(rate),
            thousands(report.remediated_per_second())
        ),
        target: format!(">= {}/s", thousands(FLOW_RATE_TARGET)),
        pass: rate >= FLOW_RATE_TARGET,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_result_round_trips() {
        let r = DrainResult {
            seconds: 1.5,
            watch_ms: 2.0,
            first_ms: 30.25,
            waits_seconds: 0.75,
            longest_wait_ms: 40.0,
            rss_before: 10 << 20,
            rss_peak: 42 << 20,
            hwm: 43 << 20,
            quarter_peaks: [1, 2, 3, 4],
        };
        assert_eq!(DrainResult::from_json(&r.to_json()), Some(r));
        assert_eq!(DrainResult::from_json("{}"), None);
    }
}
