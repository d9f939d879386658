//! The event processor ([`datastore_api::processor`]) over a real change stream, with random
//! handler outcomes and a stop at a random point followed by a restart from the checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datastore_api::processor::{self, FailurePolicy, ProcessorOptions};
use datastore_api::{Error, Filter, StartFrom, WatchOptions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

use super::changes::unique;
use super::check_cases;
use crate::Ctx;

/// What the handler does with an event, on its first attempts.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    /// Fails this many times, then succeeds.
    FailThenOk(u32),
    /// Takes this many milliseconds.
    Slow(u64),
    /// The first attempt outlives the timeout.
    TimeoutOnce,
}

/// What the handlers saw, across both runs.
#[derive(Default)]
struct Log {
    /// Attempts per event.
    attempts: HashMap<usize, u32>,
    /// Events handled to success, per run.
    succeeded: [HashSet<usize>; 2],
    /// Per run and key, the events in the order their attempts started.
    starts: [HashMap<String, Vec<usize>>; 2],
    /// Keys with a running handler.
    running: HashSet<String>,
    /// A second handler of a key started while one ran.
    overlap: Option<String>,
    /// The most handlers that ran at once.
    most_running: usize,
}

const TIMEOUT: Duration = Duration::from_millis(150);

/// Every matching change is handled to success at least once, never skipped, across a stop at a
/// random point (abandoning what runs) and a restart from the checkpoint; the restart re-handles
/// at most `max_in_flight` events; at most `concurrency` handlers run at once; events of one key
/// start in delivery order, never two at once.
pub(super) fn processor_handles_every_change(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    let outcome = prop_oneof![
        4 => Just(Outcome::Ok),
        2 => (1u32..3).prop_map(Outcome::FailThenOk),
        2 => (1u64..20).prop_map(Outcome::Slow),
        1 => Just(Outcome::TimeoutOnce),
    ];
    let strategy = (
        prop::collection::vec((0u8..4, outcome), 1..24),
        1usize..5,
        0usize..5,
        any::<prop::sample::Index>(),
    );
    check_cases(
        (ctx.cases / 8).max(6),
        shrink_iters_small(),
        strategy,
        |(events, concurrency, extra, stop)| {
            ctx.rt.block_on(async {
                let run_id = unique("proc");
                let consumer = unique("processor");
                let since = coll.server_time().await.map_err(fail)?;
                for (i, (key, _)) in events.iter().enumerate() {
                    let doc = json!({"run": run_id, "i": i, "node": format!("node-{key}")});
                    coll.insert_one(serde_json::from_value(doc).unwrap_or_default())
                        .await
                        .map_err(fail)?;
                }
                let outcomes: Arc<Vec<Outcome>> =
                    Arc::new(events.iter().map(|(_, o)| *o).collect());
                let log = Arc::new(Mutex::new(Log::default()));
                let options = ProcessorOptions {
                    concurrency,
                    max_in_flight: concurrency + extra,
                    partition_key: Some(processor::by_path("fullDocument.node")),
                    timeout: TIMEOUT,
                    retries: 3,
                    backoff: Duration::from_millis(1),
                    checkpoint_interval: Duration::from_millis(5),
                    drain_timeout: Duration::from_secs(5),
                    ..ProcessorOptions::default()
                };
                let stop_after = stop.index(events.len() + 1);
                let mut checkpointed = false;
                for run in 0..2usize {
                    // The restart resumes from the checkpoint; a first run that wrote none left
                    // the consumer to start over (from the same time).
                    let start = if checkpointed {
                        StartFrom::Checkpoint
                    } else {
                        StartFrom::Time(since)
                    };
                    let target = if run == 0 { stop_after } else { events.len() };
                    let done = Arc::new(tokio::sync::Notify::new());
                    let handler = handler(
                        run,
                        Arc::clone(&log),
                        Arc::clone(&outcomes),
                        Arc::clone(&done),
                        target,
                    );
                    let watch = WatchOptions::new(consumer.clone())
                        .filter(
                            Filter::eq("operationType", "insert")
                                .and(Filter::eq("fullDocument.run", run_id.as_str())),
                        )
                        .start(start)
                        .poll_interval(Duration::from_millis(10));
                    let shutdown = {
                        let done = Arc::clone(&done);
                        let log = Arc::clone(&log);
                        async move {
                            if log
                                .lock()
                                .map(|l| !reached(&l, run, target))
                                .unwrap_or(true)
                            {
                                let _ =
                                    tokio::time::timeout(Duration::from_secs(20), done.notified())
                                        .await;
                            }
                        }
                    };
                    // The first run stops with almost no time to drain: what it abandons must
                    // come again after the restart.
                    let mut run_options = options.clone();
                    if run == 0 {
                        run_options.drain_timeout = Duration::from_millis(1);
                    }
                    let summary = processor::run(coll, watch, run_options, handler, shutdown)
                        .await
                        .map_err(fail)?;
                    checkpointed |= summary.checkpoints > 0;
                }
                let log = log
                    .lock()
                    .map_err(|_| TestCaseError::fail("poisoned log"))?;
                if let Some(key) = &log.overlap {
                    return Err(TestCaseError::fail(format!(
                        "two handlers of {key} ran at once"
                    )));
                }
                prop_assert!(
                    log.most_running <= concurrency,
                    "{} handlers ran at once, concurrency {}",
                    log.most_running,
                    concurrency
                );
                let all: HashSet<usize> =
                    log.succeeded[0].union(&log.succeeded[1]).copied().collect();
                prop_assert_eq!(all.len(), events.len(), "events never handled to success");
                let again = log.succeeded[1].intersection(&log.succeeded[0]).count();
                prop_assert!(
                    again <= options.max_in_flight,
                    "the restart re-handled {} events, more than max_in_flight {}",
                    again,
                    options.max_in_flight
                );
                for run in &log.starts {
                    for (key, order) in run {
                        prop_assert!(
                            order.windows(2).all(|w| w[0] <= w[1]),
                            "events of {} started out of order: {:?}",
                            key,
                            order
                        );
                    }
                }
                Ok(())
            })
        },
    )
}

/// Whether `run` may stop: the first after `target` successes, the restart once every event
/// has succeeded in either run.
fn reached(log: &Log, run: usize, target: usize) -> bool {
    if run == 0 {
        log.succeeded[0].len() >= target
    } else {
        log.succeeded[0].union(&log.succeeded[1]).count() >= target
    }
}

fn shrink_iters_small() -> u32 {
    super::shrink_iters().min(16)
}

fn fail(e: Error) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The handler of `run`: records its attempt, checks its key runs alone, acts out the event's
/// outcome, and wakes `done` once `target` events have succeeded in this run.
fn handler(
    run: usize,
    log: Arc<Mutex<Log>>,
    outcomes: Arc<Vec<Outcome>>,
    done: Arc<tokio::sync::Notify>,
    target: usize,
) -> impl Fn(
    datastore_api::ChangeEvent,
) -> futures::future::BoxFuture<'static, datastore_api::Result<()>>
       + Send
       + Sync
       + 'static {
    move |event| {
        let (log, outcomes, done) = (Arc::clone(&log), Arc::clone(&outcomes), Arc::clone(&done));
        Box::pin(async move {
            let doc = event.full_document.clone().unwrap_or_default();
            let i = doc.get("i").and_then(|v| v.as_u64()).unwrap_or(u64::MAX) as usize;
            let key = doc
                .get("node")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            let attempt = {
                let mut l = log.lock().map_err(|_| Error::permanent("poisoned log"))?;
                if !l.running.insert(key.clone()) {
                    l.overlap = Some(key.clone());
                }
                l.most_running = l.most_running.max(l.running.len());
                l.starts[run].entry(key.clone()).or_default().push(i);
                let a = l.attempts.entry(i).or_default();
                *a += 1;
                *a
            };
            // Frees the key however the attempt ends (dropped at a timeout or a stop included).
            let _running = RunningGuard {
                log: Arc::clone(&log),
                key: key.clone(),
            };
            let result = match outcomes.get(i).copied().unwrap_or(Outcome::Ok) {
                Outcome::Ok => Ok(()),
                Outcome::FailThenOk(n) if attempt <= n => Err(Error::transient("planned failure")),
                Outcome::FailThenOk(_) => Ok(()),
                Outcome::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(())
                }
                // Outlives the timeout: the processor drops this attempt.
                Outcome::TimeoutOnce if attempt == 1 => {
                    tokio::time::sleep(TIMEOUT * 4).await;
                    Ok(())
                }
                Outcome::TimeoutOnce => Ok(()),
            };
            if result.is_ok() {
                let mut l = log.lock().map_err(|_| Error::permanent("poisoned log"))?;
                l.succeeded[run].insert(i);
                if reached(&l, run, target) {
                    done.notify_one();
                }
            }
            result
        })
    }
}

/// Frees a key when an attempt ends or is dropped.
struct RunningGuard {
    log: Arc<Mutex<Log>>,
    key: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut l) = self.log.lock() {
            l.running.remove(&self.key);
        }
    }
}

/// An event whose handler always fails: under [`FailurePolicy::Stop`] the run ends with an
/// error naming its document and the checkpoint stays before it (it and what follows are still
/// behind, and come first on a restart); under [`FailurePolicy::Skip`] it is counted and the
/// checkpoint moves past it.
pub(super) fn processor_failure_policies(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    ctx.rt.block_on(async {
        let run_id = unique("poison");
        let consumer = unique("poisoned");
        let since = coll.server_time().await.map_err(|e| e.to_string())?;
        let mut ids = Vec::new();
        for i in 0..5 {
            let doc = json!({"run": run_id, "i": i});
            let inserted = coll
                .insert_one(serde_json::from_value(doc).unwrap_or_default())
                .await
                .map_err(|e| e.to_string())?;
            ids.push(inserted.id.to_string());
        }
        let filter = Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.run", run_id.as_str()));
        let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
        let handler = |seen: Arc<Mutex<Vec<u64>>>, done: Arc<tokio::sync::Notify>| {
            move |event: datastore_api::ChangeEvent| {
                let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
                async move {
                    let i = event.full_document.as_ref().and_then(|d| d.get("i")).and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                    if let Ok(mut s) = seen.lock() {
                        s.push(i);
                    }
                    if i == 2 {
                        return Err(Error::permanent("a poison event"));
                    }
                    if i == 4 {
                        done.notify_one();
                    }
                    Ok(())
                }
            }
        };
        let options = ProcessorOptions {
            concurrency: 2,
            max_in_flight: 4,
            retries: 1,
            backoff: Duration::from_millis(1),
            checkpoint_interval: Duration::from_millis(5),
            ..ProcessorOptions::default()
        };
        let watch = |start| {
            WatchOptions::new(consumer.clone())
                .filter(filter.clone())
                .start(start)
                .poll_interval(Duration::from_millis(10))
        };
        let never = Arc::new(tokio::sync::Notify::new());
        let stopped = tokio::time::timeout(
            Duration::from_secs(30),
            processor::run(coll, watch(StartFrom::Time(since)), options.clone(), handler(Arc::clone(&seen), Arc::clone(&never)), std::future::pending()),
        )
        .await
        .map_err(|_| "under Stop, a poison event did not end the run within 30 s".to_owned())?;
        match stopped {
            Err(e) if e.is_permanent_backend() && e.message().contains(&ids[2]) => {}
            other => return Err(format!("under Stop, a poison event ended the run with {other:?}, not a Permanent error naming document {}", ids[2])),
        }
        let behind = coll.lag(&consumer, &filter).await.map_err(|e| e.to_string())?;
        if behind.events_behind != 3 {
            return Err(format!("under Stop, {} events are behind the checkpoint, not the poison event and the 2 after it", behind.events_behind));
        }

        if let Ok(mut s) = seen.lock() {
            s.clear();
        }
        let done = Arc::new(tokio::sync::Notify::new());
        let finished = done.clone();
        let summary = tokio::time::timeout(
            Duration::from_secs(30),
            processor::run(
                coll,
                watch(StartFrom::Checkpoint),
                ProcessorOptions { on_failure: FailurePolicy::Skip, ..options },
                handler(Arc::clone(&seen), done),
                async move { finished.notified().await },
            ),
        )
        .await
        .map_err(|_| "under Skip, the run did not reach the last event within 30 s".to_owned())?
        .map_err(|e| format!("under Skip, the run failed: {e}"))?;
        // Handlers run concurrently: the restart's first event is the lowest one it saw.
        let first = seen.lock().ok().and_then(|s| s.iter().min().copied());
        if first != Some(2) {
            return Err(format!(
                "the restart after a Stop began with event {first:?}, not the poison event 2"
            ));
        }
        if summary.skipped != 1 || summary.handled != 2 {
            return Err(format!("under Skip: {summary:?}, expected 1 skipped and 2 handled"));
        }
        let behind = coll.lag(&consumer, &filter).await.map_err(|e| e.to_string())?;
        if behind.events_behind != 0 {
            return Err(format!("under Skip, {} events are still behind the checkpoint", behind.events_behind));
        }
        Ok(())
    })
}
