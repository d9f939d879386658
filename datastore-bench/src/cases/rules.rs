//! `rules`: the health-events-analyzer's load. `--rules-events` stored health events over
//! 1,000 nodes and 30 days; for each of the 50 newest unhealthy events, 20 rule-shaped
//! pipelines (four shapes, five thresholds each, every one bounded by node and a time window:
//! repeated checks, distinct entities, a `$lookup` of earlier fatal events, bursts by
//! `$setWindowFields`) are bound to the event and run, one `aggregate` after the other and all
//! at once with `aggregate_each`. Reported: the time for all 20 per event, p50 and p99; then
//! the analyzer end to end (its watcher, the processor and `aggregate_each` per event) in
//! analysed events per second; and the same on the MongoDB lane (the SecantusDB stand-in,
//! `--rules-mongodb-events`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datastore::aggregate::Pipeline;
use datastore::change::watchers;
use datastore::model::{fields, health_event_document};
use datastore::processor::{self, ProcessorOptions};
use datastore::value::CREATED_AT_FIELD;
use datastore::{
    ChangeEvent, DataStore, Document, Error, Filter, FindOptions, Sort, StartFrom, WatchOptions,
};
use serde_json::json;

use super::changes::Figure;
use super::{load_events, thousands, Bench};
use datastore_cli::error::{CliError, CliResult, SqlContext};
use datastore_cli::measure::{Latencies, Percentiles};
use datastore_cli::server;
use datastore_cli::synth::{per_second, Synth};

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
    analysed: 50,
    end_to_end: 2_000,
};
const STAND_IN: Size = Size {
    analysed: 3,
    end_to_end: 10,
};
/// Target: all 20 rules for one event, p50, ms (NVSentinel on MongoDB: 17.67 ms).
const P50_TARGET_MS: f64 = 1.8;
/// The analyzer's concurrency end to end.
const END_TO_END_CONCURRENCY: usize = 16;
/// The end-to-end run fails past this.
const END_TO_END_LIMIT: Duration = Duration::from_secs(300);

/// The 20 rules: four shapes with five thresholds each.
fn rules() -> CliResult<Vec<Pipeline>> {
    let since = |window: i64| {
        json!({"$match": {"$expr": {"$gte": ["$healthevent.generatedtimestamp.seconds",
            {"$subtract": ["this.healthevent.generatedtimestamp.seconds", window]}]}}})
    };
    let mut out = Vec::with_capacity(20);
    for k in 1..=5i64 {
        let window = 3_600 * 6 * k;
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.ishealthy": false}},
            since(window),
            {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gte": k + 1}}},
        ]))?);
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.isfatal": false}},
            since(window * 4),
            {"$unwind": "$healthevent.entitiesimpacted"},
            {"$group": {"_id": "$healthevent.nodename",
                        "entities": {"$addToSet": "$healthevent.entitiesimpacted.entityvalue"}}},
            {"$match": {"$expr": {"$gte": [{"$size": "$entities"}, k + 1]}}},
        ]))?);
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                        "healthevent.generatedtimestamp.seconds": "this.healthevent.generatedtimestamp.seconds"}},
            {"$lookup": {"from": "HealthEvents", "as": "earlier",
                "let": {"t": "$healthevent.generatedtimestamp.seconds"},
                "pipeline": [
                    {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.isfatal": true}},
                    since(window),
                    {"$match": {"$expr": {"$and": [
                        {"$lt": ["$healthevent.generatedtimestamp.seconds", "$$t"]},
                        {"$gte": ["$healthevent.generatedtimestamp.seconds", {"$subtract": ["$$t", window]}]}]}}},
                    {"$project": {"_id": 1}},
                ]}},
            {"$match": {"$expr": {"$gte": [{"$size": "$earlier"}, k]}}},
        ]))?);
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.ishealthy": false}},
            since(window),
            {"$setWindowFields": {"sortBy": {"healthevent.generatedtimestamp.seconds": 1}, "output": {
                "prev": {"$shift": {"output": "$healthevent.generatedtimestamp.seconds", "by": -1}}}}},
            {"$match": {"$expr": {"$or": [{"$eq": ["$prev", null]},
                {"$gt": [{"$subtract": ["$healthevent.generatedtimestamp.seconds", "$prev"]}, 180 * k]}]}}},
            {"$count": "bursts"},
            {"$match": {"bursts": {"$gte": k + 2}}},
        ]))?);
    }
    Ok(out)
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
        "bench: f. analyzer rules: {n} events from {NODES} nodes over {SPAN_DAYS} days; 20 \
         rule-shaped pipelines bound to each of the {} newest unhealthy events",
        POSTGRES.analysed
    );
    let (store, db) = bench.fresh_store().await?;
    let pool = store.pool().clone();
    let store: Arc<dyn DataStore> = Arc::new(store);
    let out = lane(bench, Arc::clone(&store), n, POSTGRES, Some(&pool)).await;
    store.close().await;
    bench.drop_database(&db).await?;
    let pg = out?;
    let p50 = pg.together.map_or(f64::INFINITY, |p| p.p50);
    let mut figures = vec![
        Figure {
            case: format!("f. analyzer rules, 20 per event, {n} events"),
            figure: format!(
                "aggregate_each {}; one by one {}",
                Percentiles::describe(pg.together),
                Percentiles::describe(pg.one_by_one)
            ),
            target: format!("p50 <= {P50_TARGET_MS} ms"),
            pass: p50 <= P50_TARGET_MS,
        },
        end_to_end_figure("PostgreSQL", n, pg.end_to_end),
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
    let stand_in = match server::start_mongo_stand_in() {
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
    let store = server::connect_mongo_stand_in(&stand_in).await?;
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
                "one by one {} ({} result documents)",
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
    let span = chrono::Duration::days(SPAN_DAYS);
    let mut synth = Synth::new(bench.args.seed, NODES, Utc::now() - span).spread(n, span);
    load_events(store.as_ref(), &mut synth, n, 5_000, "").await?;
    if let Some(pool) = pool {
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(pool)
            .await
            .sql_context(|| "VACUUM ANALYZE".to_owned())?;
    }
    let rules = Arc::new(rules()?);
    let (one_by_one, together, results) = measure(store.as_ref(), &rules, size.analysed).await?;
    println!(
        "  20 rules per event: aggregate_each {}; one aggregate after the other {} ({results} \
         result documents over all events, the same both ways)",
        Percentiles::describe(together.percentiles()),
        Percentiles::describe(one_by_one.percentiles())
    );
    let end_to_end = end_to_end(store, &mut synth, rules, size.end_to_end).await?;
    Ok(Lane {
        one_by_one: one_by_one.percentiles(),
        together: together.percentiles(),
        results,
        end_to_end,
    })
}

/// The rules for each analysed event, one `aggregate` after the other and with one
/// `aggregate_each`; fails unless both give the same documents.
async fn measure(
    store: &dyn DataStore,
    rules: &[Pipeline],
    analysed: u64,
) -> CliResult<(Latencies, Latencies, usize)> {
    let collection = store.health_event_collection();
    let newest = FindOptions {
        sort: Sort::default().then_desc(CREATED_AT_FIELD),
        ..FindOptions::default()
    }
    .limit(analysed);
    let events = collection
        .find(&Filter::eq(fields::IS_HEALTHY, false), &newest)
        .await?;
    let (mut one_by_one, mut together, mut results) =
        (Latencies::default(), Latencies::default(), 0);
    for event in &events {
        let bound = bind(rules, event)?;
        let started = Instant::now();
        let mut each = Vec::with_capacity(bound.len());
        for rule in &bound {
            each.push(collection.aggregate(rule).await?);
        }
        one_by_one.push(started.elapsed());
        let started = Instant::now();
        let all = collection.aggregate_each(&bound).await?;
        together.push(started.elapsed());
        let all = all.into_iter().collect::<datastore::Result<Vec<_>>>()?;
        if all != each {
            return Err(CliError::check(
                "rules: aggregate_each and aggregate gave different documents for one event",
            ));
        }
        results += all.iter().map(Vec::len).sum::<usize>();
    }
    Ok((one_by_one, together, results))
}

fn bind(rules: &[Pipeline], event: &Document) -> datastore::Result<Vec<Pipeline>> {
    rules.iter().map(|r| r.bind_this(event)).collect()
}

/// The analyzer: its watcher filter, the processor (partitioned by node), and per event the
/// 20 rules with `aggregate_each`, while `inserted` new events are inserted.
/// Returns analysed events per second, from the first insert to the last event analysed.
async fn end_to_end(
    store: Arc<dyn DataStore>,
    synth: &mut Synth,
    rules: Arc<Vec<Pipeline>>,
    inserted: usize,
) -> CliResult<f64> {
    let watch = WatchOptions::new("bench-analyzer")
        .filter(watchers::non_fatal_unhealthy_inserts())
        .start(StartFrom::Now)
        .poll_interval(Duration::from_millis(5));
    let collection = store.health_event_collection();
    let stream = collection.watch(watch.clone()).await?;
    let events = synth.health_events(inserted);
    // The events the watcher's filter admits, by the filter itself over their insert events.
    let admits = watchers::non_fatal_unhealthy_inserts().lower()?;
    let expected = events
        .iter()
        .filter(|(e, s)| {
            let change =
                json!({"operationType": "insert", "fullDocument": health_event_document(e, s)});
            change.as_object().is_some_and(|c| admits.matches(c))
        })
        .count();
    if expected == 0 {
        println!("  end to end: none of the {inserted} new events is one the analyzer watches");
        return Ok(0.0);
    }
    let analysed = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (store, analysed, all) = (Arc::clone(&store), Arc::clone(&analysed), Arc::clone(&all));
        move |event: ChangeEvent| {
            let (store, rules) = (Arc::clone(&store), Arc::clone(&rules));
            let (analysed, all) = (Arc::clone(&analysed), Arc::clone(&all));
            async move {
                let doc = event
                    .full_document
                    .ok_or_else(|| Error::permanent("an insert without its document"))?;
                let bound = bind(&rules, &doc)?;
                for outcome in store
                    .health_event_collection()
                    .aggregate_each(&bound)
                    .await?
                {
                    outcome?;
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
    let analyzer =
        processor::run_stream(collection, &watch, stream, options, handler, all.notified());
    let writer = async {
        for chunk in events.chunks(100) {
            store.health_events().insert_many(chunk).await?;
        }
        Ok::<_, Error>(())
    };
    let run = async { tokio::try_join!(analyzer, writer) };
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
         (concurrency {END_TO_END_CONCURRENCY}, 20 rules each)",
        thousands(rate)
    );
    Ok(rate)
}
