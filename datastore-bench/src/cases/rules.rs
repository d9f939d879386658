//! `rules`: the health-events-analyzer's load, with NVSentinel's 22 real rules (the chart's
//! values file, unchanged). `--rules-events` stored health events over 1,000 nodes and 30
//! days, generated as histories the rules look for (XID bursts on GPUs, XID 13 with GPC/TPC,
//! XID 74 with NVLink and registers, NIC errors, remediations; see
//! `conformance::histories`); for each of the newest analysed events, every rule is bound
//! and decided as the analyzer decides it, one `aggregate` after the other and all at once
//! with `Analyzer::evaluate`. Reported: the time for all 22 per event, p50 and p99; then the
//! analyzer end to end (its watcher, the processor and the rules per event) in analysed
//! events per second; and the same on the MongoDB lane (the SecantusDB stand-in,
//! `--rules-mongodb-events`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datastore::analyzer::{self, Analyzer};
use datastore::change::watchers;
use datastore::model::fields;
use datastore::processor::{self, ProcessorOptions};
use datastore::value::CREATED_AT_FIELD;
use datastore::Aggregate;
use datastore::{
    ChangeEvent, DataStore, Document, Error, Filter, FindOptions, Sort, StartFrom, WatchOptions,
};

use super::changes::Figure;
use super::{thousands, Bench};
use conformance::histories;
use datastore_tools::error::{CliError, CliResult, SqlContext};
use datastore_workload::embedded;
use datastore_workload::measure::{Latencies, Percentiles};
use datastore_workload::synth::per_second;

/// The chart's values file (see `datastore-analyzer/tests/fixtures/NOTICE.md`).
const VALUES: &str =
    include_str!("../../../datastore-analyzer/tests/fixtures/nvsentinel-analyzer-values.yaml");

/// Nodes the events come from.
const NODES: usize = 1_000;
/// How far back the stored events' generated timestamps reach.
const SPAN_DAYS: i64 = 30;
/// How much each lane measures: PostgreSQL's in full, the stand-in's (a single-threaded
/// Python server that scans for these pipelines) a sample.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// Events whose rules are timed.
    analysed: u64,
    /// Events inserted while the analyzer runs end to end.
    end_to_end: usize,
}

const POSTGRES: Size = Size {
    analysed: 300,
    end_to_end: 4_000,
};
const STAND_IN: Size = Size {
    analysed: 3,
    end_to_end: 10,
};
/// Targets: all 22 rules for one event, p50 and p99, ms; the analyzer end to end, events/s.
const P50_TARGET_MS: f64 = 5.0;
const P99_TARGET_MS: f64 = 50.0;
const END_TO_END_TARGET: f64 = 500.0;
/// The analyzer's concurrency end to end.
const END_TO_END_CONCURRENCY: usize = 16;
/// The end-to-end run fails past this.
const END_TO_END_LIMIT: Duration = Duration::from_secs(300);

/// NVSentinel's rules.
fn rules() -> CliResult<Analyzer> {
    Ok(Analyzer::new(analyzer::rules::from_values_yaml(VALUES)?)?)
}

fn node_names() -> Vec<String> {
    (0..NODES).map(|i| format!("node-{i:04}")).collect()
}

/// What one lane measured.
struct Lane {
    one_by_one: Option<Percentiles>,
    together: Option<Percentiles>,
    results: usize,
    end_to_end: f64,
}

/// Runs the case on a fresh PostgreSQL database, then on the MongoDB lane.
pub(super) async fn rules_case(bench: &Bench<'_>) -> CliResult<Vec<Figure>> {
    let n = bench.args.rules_events;
    println!();
    println!(
        "bench: f. analyzer rules: {n} events from {NODES} nodes over {SPAN_DAYS} days; \
         NVSentinel's 22 rules bound to each of the {} newest analysed events",
        POSTGRES.analysed
    );
    let (store, db) = bench.fresh_store().await?;
    let pool = store.pool().clone();
    let store: Arc<dyn DataStore> = Arc::new(store);
    let out = lane(bench, Arc::clone(&store), n, POSTGRES, Some(&pool)).await;
    store.close().await;
    bench.drop_database(&db).await?;
    let pg = out?;
    let (p50, p99) = pg
        .together
        .map_or((f64::INFINITY, f64::INFINITY), |p| (p.p50, p.p99));
    let mut figures = vec![
        Figure {
            case: format!("f. analyzer, 22 real rules per event, {n} events"),
            figure: format!(
                "evaluate {}; one by one {}",
                Percentiles::describe(pg.together),
                Percentiles::describe(pg.one_by_one)
            ),
            target: format!("p50 <= {P50_TARGET_MS} ms, p99 <= {P99_TARGET_MS} ms"),
            pass: p50 <= P50_TARGET_MS && p99 <= P99_TARGET_MS,
        },
        Figure {
            case: format!("f. analyzer end to end on PostgreSQL, {n} events"),
            figure: format!("{} analysed events/s", thousands(pg.end_to_end)),
            target: format!(">= {END_TO_END_TARGET}/s"),
            pass: pg.end_to_end >= END_TO_END_TARGET,
        },
    ];
    let m = bench.args.rules_mongodb_events;
    if m > 0 {
        figures.extend(mongodb_lane(bench, m).await?);
    }
    Ok(figures)
}

/// The MongoDB lane on the SecantusDB stand-in; reported, with no target (a stand-in's speed
/// says nothing of MongoDB's). Skipped when the stand-in is not installed.
async fn mongodb_lane(bench: &Bench<'_>, n: u64) -> CliResult<Vec<Figure>> {
    let stand_in = match embedded::start_mongo_stand_in() {
        Ok(s) => s,
        Err(e) => {
            println!("  MongoDB lane skipped: {e}");
            return Ok(Vec::new());
        }
    };
    println!(
        "  MongoDB lane: {n} events on the {} stand-in (--rules-mongodb-events), {} events \
         analysed, {} end to end",
        stand_in.kind(),
        STAND_IN.analysed,
        STAND_IN.end_to_end
    );
    let store = embedded::connect_mongo_stand_in(&stand_in).await?;
    let out = lane(bench, Arc::clone(&store), n, STAND_IN, None).await;
    store.close().await;
    let lane = out?;
    Ok(vec![
        Figure {
            case: format!(
                "f. analyzer rules on MongoDB ({}), {n} events",
                stand_in.kind()
            ),
            figure: format!(
                "evaluate {}; one by one {} ({} rules matched)",
                Percentiles::describe(lane.together),
                Percentiles::describe(lane.one_by_one),
                lane.results
            ),
            target: "reported".to_owned(),
            pass: true,
        },
        end_to_end_figure(
            &format!("MongoDB ({})", stand_in.kind()),
            n,
            lane.end_to_end,
        ),
    ])
}

fn end_to_end_figure(lane: &str, n: u64, per_second: f64) -> Figure {
    Figure {
        case: format!("f. analyzer end to end on {lane}, {n} events"),
        figure: format!("{} analysed events/s", thousands(per_second)),
        target: "reported (NVSentinel on MongoDB: about 57/s)".to_owned(),
        pass: true,
    }
}

/// Loads `n` events into `store` (on PostgreSQL, `pool`'s database, then `VACUUM ANALYZE` as
/// autovacuum would after a load), measures the rules per event both ways, then end to end.
async fn lane(
    bench: &Bench<'_>,
    store: Arc<dyn DataStore>,
    n: u64,
    size: Size,
    pool: Option<&sqlx::PgPool>,
) -> CliResult<Lane> {
    let span = SPAN_DAYS * 86_400;
    let base = Utc::now().timestamp() - span;
    load(store.as_ref(), bench.args.seed, base, span, n).await?;
    if let Some(pool) = pool {
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(pool)
            .await
            .sql_context(|| "VACUUM ANALYZE".to_owned())?;
    }
    let analyzer = Arc::new(rules()?);
    let (one_by_one, together, matched) = measure(store.as_ref(), &analyzer, size.analysed).await?;
    println!(
        "  22 rules per event: evaluate {}; one aggregate after the other {} ({matched} rules \
         matched over all events, the same both ways)",
        Percentiles::describe(together.percentiles()),
        Percentiles::describe(one_by_one.percentiles())
    );
    let seed = bench.args.seed.wrapping_add(n);
    let end_to_end = end_to_end(store, seed, analyzer, size.end_to_end).await?;
    Ok(Lane {
        one_by_one: one_by_one.percentiles(),
        together: together.percentiles(),
        results: matched,
        end_to_end,
    })
}

/// `n` generated events with timestamps in `[base, base + span)`, in batches.
async fn load(store: &dyn DataStore, seed: u64, base: i64, span: i64, n: u64) -> CliResult<()> {
    let nodes = node_names();
    let collection = store.health_event_collection();
    let started = Instant::now();
    let (mut done, mut batch) = (0u64, 0u64);
    while done < n {
        let k = (n - done).min(5_000);
        let docs =
            histories::analyzer_events(seed.wrapping_add(batch), &nodes, base, span, k as usize);
        collection.insert_many(docs).await?;
        done += k;
        batch += 1;
    }
    println!(
        "  loaded {n} events in {:.1} s ({}/s)",
        started.elapsed().as_secs_f64(),
        thousands(per_second(n, started.elapsed()))
    );
    Ok(())
}

/// The rules for each analysed event, one `aggregate` after the other and with
/// `Analyzer::evaluate`; fails unless both give the same verdicts. Returns the matches.
async fn measure(
    store: &dyn DataStore,
    analyzer: &Analyzer,
    analysed: u64,
) -> CliResult<(Latencies, Latencies, usize)> {
    let collection = store.health_event_collection();
    let newest = FindOptions {
        sort: Sort::default().then_desc(CREATED_AT_FIELD),
        ..FindOptions::default()
    }
    .limit(analysed);
    let watched =
        Filter::eq(fields::IS_HEALTHY, false).and(Filter::ne(fields::AGENT, analyzer::AGENT));
    let events = collection.find(&watched, &newest).await?;
    let (mut one_by_one, mut together, mut matched) =
        (Latencies::default(), Latencies::default(), 0);
    // The slowest single rules, to say where the time goes.
    let mut slowest: Vec<(Duration, String)> = Vec::new();
    for event in &events {
        let started = Instant::now();
        let mut each = Vec::new();
        for rule in analyzer.enabled() {
            let t = Instant::now();
            let pipeline = analyzer.deciding_pipeline(rule, event)?;
            each.push(analyzer::verdict(&collection.aggregate(&pipeline).await?));
            let code = &event["healthevent"]["errorcode"];
            slowest.push((t.elapsed(), format!("{} (error code {code})", rule.name)));
            slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
            slowest.truncate(5);
        }
        one_by_one.push(started.elapsed());
        let started = Instant::now();
        let all = analyzer.evaluate(collection, event).await?;
        together.push(started.elapsed());
        let all = all
            .into_iter()
            .map(|o| o.matched)
            .collect::<datastore::Result<Vec<bool>>>()?;
        if all != each {
            return Err(CliError::check(
                "rules: evaluate and one aggregate after the other decided differently",
            ));
        }
        matched += all.iter().filter(|m| **m).count();
    }
    for (took, rule) in &slowest {
        println!("    slowest: {rule} {:.1} ms", took.as_secs_f64() * 1e3);
    }
    Ok((one_by_one, together, matched))
}

/// The analyzer: its watcher filter, the processor (partitioned by node), and per event
/// every rule with `Analyzer::evaluate`, while `inserted` new events are inserted.
/// Returns analysed events per second, from the first insert to the last event analysed.
async fn end_to_end(
    store: Arc<dyn DataStore>,
    seed: u64,
    analyzer: Arc<Analyzer>,
    inserted: usize,
) -> CliResult<f64> {
    let watch = WatchOptions::new("bench-analyzer")
        .filter(watchers::non_fatal_unhealthy_inserts())
        .start(StartFrom::Now)
        .poll_interval(Duration::from_millis(5));
    let collection = store.health_event_collection();
    let stream = collection.watch(watch.clone()).await?;
    let now = Utc::now().timestamp();
    let events = histories::analyzer_events(seed, &node_names(), now - 3_600, 3_600, inserted);
    let expected = events.iter().filter(|d| histories::analyzed(d)).count();
    if expected == 0 {
        println!("  end to end: none of the {inserted} new events is one the analyzer watches");
        return Ok(0.0);
    }
    let analysed = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (store, analysed, all) = (Arc::clone(&store), Arc::clone(&analysed), Arc::clone(&all));
        move |event: ChangeEvent| {
            let (store, analyzer) = (Arc::clone(&store), Arc::clone(&analyzer));
            let (analysed, all) = (Arc::clone(&analysed), Arc::clone(&all));
            async move {
                let doc: Document = event
                    .full_document
                    .ok_or_else(|| Error::permanent("an insert without its document"))?;
                for outcome in analyzer
                    .evaluate(store.health_event_collection(), &doc)
                    .await?
                {
                    outcome.matched?;
                }
                if analysed.fetch_add(1, Ordering::Relaxed) + 1 == expected {
                    all.notify_one();
                }
                Ok(())
            }
        }
    };
    let options = ProcessorOptions {
        concurrency: END_TO_END_CONCURRENCY,
        max_in_flight: 4 * END_TO_END_CONCURRENCY,
        partition_key: Some(processor::by_path("fullDocument.healthevent.nodename")),
        ..ProcessorOptions::default()
    };
    let started = Instant::now();
    let run_analyzer =
        processor::run_stream(collection, &watch, stream, options, handler, all.notified());
    let writer = async {
        for chunk in events.chunks(100) {
            collection.insert_many(chunk.to_vec()).await?;
        }
        Ok::<_, Error>(())
    };
    let run = async { tokio::try_join!(run_analyzer, writer) };
    match tokio::time::timeout(END_TO_END_LIMIT, run).await {
        Ok(done) => {
            done?;
        }
        Err(_) => {
            return Err(CliError::check(format!(
                "rules end to end: {} of {expected} events analysed in {} s",
                analysed.load(Ordering::Relaxed),
                END_TO_END_LIMIT.as_secs()
            )))
        }
    }
    let rate = per_second(expected as u64, started.elapsed());
    println!(
        "  end to end: {expected} of {inserted} new events analysed at {}/s \
         (concurrency {END_TO_END_CONCURRENCY}, 22 rules each)",
        thousands(rate)
    );
    Ok(rate)
}
