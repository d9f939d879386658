//! `read-ahead`: the health-events-analyzer's shape on the library's processor. One consumer
//! whose handler sleeps 5 ms (a rule query), partitioned by node over 200 nodes, drains the same
//! pre-loaded events with concurrency 16 and with concurrency 1. NVSentinel's reader does not
//! read ahead, so its 16 workers run at 1.0x of one; the processor should approach 16x.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datastore::processor::{self, ProcessorOptions};
use datastore::{DataStore, StartFrom, WatchOptions};

use super::changes::Figure;
use super::{load_events, median, thousands, Bench};
use datastore_tools::error::{CliError, CliResult};
use datastore_workload::synth::{per_second, Synth};

/// Events each run drains.
const EVENTS: u64 = 1_000;
/// Nodes the events come from (the partition keys).
const NODES: usize = 200;
/// What one handler call costs.
const HANDLER_SLEEP: Duration = Duration::from_millis(5);
/// The concurrency compared with 1.
const CONCURRENCY: usize = 16;
/// A run that has not drained every event by then fails the case (at concurrency 1 the
/// handler alone takes 5 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Target: throughput at [`CONCURRENCY`] over throughput at 1.
const RATIO_TARGET: f64 = 12.0;

/// Runs the case (both concurrencies, alternating, median of `--runs`).
pub(super) async fn read_ahead(bench: &Bench<'_>) -> CliResult<Figure> {
    println!();
    println!(
        "bench: e. read-ahead: {EVENTS} events from {NODES} nodes, one consumer on the processor, \
         partition key healthevent.nodename, handler sleeps {} ms; concurrency {CONCURRENCY} vs 1",
        HANDLER_SLEEP.as_millis()
    );
    let (store, db) = bench.fresh_store().await?;
    let mut synth = Synth::new(bench.args.seed, NODES, Utc::now());
    let out = match load_events(&store, &mut synth, EVENTS, 1_000, "").await {
        Ok(()) => compare(bench, &store).await,
        Err(e) => Err(e),
    };
    store.close().await;
    bench.drop_database(&db).await?;
    let (wide, one) = out?;
    let (r16, r1) = (per_second(EVENTS, wide), per_second(EVENTS, one));
    let ratio = r16 / r1;
    Ok(Figure {
        case: format!("e. read-ahead, concurrency {CONCURRENCY} vs 1"),
        figure: format!("{ratio:.1}x ({}/s vs {}/s)", thousands(r16), thousands(r1)),
        target: format!(">= {RATIO_TARGET:.0}x"),
        pass: ratio >= RATIO_TARGET,
    })
}

/// The median drain time at [`CONCURRENCY`] and at 1.
async fn compare(bench: &Bench<'_>, store: &dyn DataStore) -> CliResult<(Duration, Duration)> {
    let (mut wide, mut one) = (Vec::new(), Vec::new());
    for run in 1..=bench.args.runs {
        let order = if run % 2 == 1 {
            [CONCURRENCY, 1]
        } else {
            [1, CONCURRENCY]
        };
        for concurrency in order {
            let took = drain(bench, store, concurrency, run).await?;
            println!(
                "  run {run}/{}: concurrency {concurrency:>2}: {:.3} s ({}/s)",
                bench.args.runs,
                took.as_secs_f64(),
                thousands(per_second(EVENTS, took))
            );
            if concurrency == 1 {
                &mut one
            } else {
                &mut wide
            }
            .push(took);
        }
    }
    Ok((median(wide), median(one)))
}

/// One consumer of its own draining every event from the beginning.
async fn drain(
    bench: &Bench<'_>,
    store: &dyn DataStore,
    concurrency: usize,
    run: u64,
) -> CliResult<Duration> {
    let handled = Arc::new(AtomicU64::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let watch = WatchOptions::new(format!("read-ahead-{concurrency}-{run}"))
        .start(StartFrom::Beginning)
        .poll_interval(Duration::from_millis(bench.args.poll_ms));
    let options = ProcessorOptions {
        concurrency,
        max_in_flight: 4 * concurrency,
        partition_key: Some(processor::by_path("fullDocument.healthevent.nodename")),
        ..ProcessorOptions::default()
    };
    let handler = {
        let (handled, all) = (Arc::clone(&handled), Arc::clone(&all));
        move |_event| {
            let (handled, all) = (Arc::clone(&handled), Arc::clone(&all));
            async move {
                tokio::time::sleep(HANDLER_SLEEP).await;
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == EVENTS {
                    all.notify_one();
                }
                Ok(())
            }
        }
    };
    let started = Instant::now();
    let notified = all.notified();
    let run = processor::run(
        store.health_event_collection(),
        watch,
        options,
        handler,
        notified,
    );
    match tokio::time::timeout(DRAIN_LIMIT, run).await {
        Ok(summary) => summary?,
        Err(_) => {
            return Err(CliError::check(format!(
                "read-ahead: concurrency {concurrency} handled {} of {EVENTS} events in {} s",
                handled.load(Ordering::Relaxed),
                DRAIN_LIMIT.as_secs()
            )))
        }
    };
    Ok(started.elapsed())
}
