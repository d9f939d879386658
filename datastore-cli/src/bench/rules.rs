//! `rules`: the health-events-analyzer's load. `--rules-events` stored health events over
//! 1,000 nodes; for each of 50 unhealthy events, 20 rule-shaped pipelines (four shapes, five
//! thresholds each: repeated checks in a time window, distinct entities, a `$lookup` of
//! earlier fatal events, bursts by `$setWindowFields`) are bound to the event and run through
//! `aggregate`, one after the other. Reported: the time for all 20 per event, p50 and p99.

use std::time::Instant;

use chrono::Utc;
use datastore::aggregate::Pipeline;
use datastore::model::fields;
use datastore::{DataStore, Filter, FindOptions};
use serde_json::json;

use super::changes::Figure;
use super::{load_events, Bench};
use crate::error::CliResult;
use crate::stats::{Latencies, Percentiles};
use crate::synth::Synth;

/// Nodes the events come from.
const NODES: usize = 1_000;
/// Events analysed.
const ANALYSED: u64 = 50;
/// Target: all 20 rules for one event, p50, ms (NVSentinel on MongoDB: 17.67 ms).
const P50_TARGET_MS: f64 = 1.8;

/// The 20 rules: four shapes with five thresholds each.
fn rules() -> CliResult<Vec<Pipeline>> {
    let mut out = Vec::with_capacity(20);
    for k in 1..=5i64 {
        let window = 3_600 * 6 * k;
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.ishealthy": false}},
            {"$match": {"$expr": {"$gte": ["$healthevent.generatedtimestamp.seconds",
                {"$subtract": ["this.healthevent.generatedtimestamp.seconds", window]}]}}},
            {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gte": k + 1}}},
        ]))?);
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.isfatal": false}},
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
                    {"$match": {"$expr": {"$and": [
                        {"$lt": ["$healthevent.generatedtimestamp.seconds", "$$t"]},
                        {"$gte": ["$healthevent.generatedtimestamp.seconds", {"$subtract": ["$$t", window]}]}]}}},
                    {"$project": {"_id": 1}},
                ]}},
            {"$match": {"$expr": {"$gte": [{"$size": "$earlier"}, k]}}},
        ]))?);
        out.push(Pipeline::parse(&json!([
            {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.ishealthy": false}},
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

/// Runs the case on a fresh PostgreSQL database.
pub(super) async fn rules_case(bench: &Bench<'_>) -> CliResult<Figure> {
    let n = bench.args.rules_events;
    println!();
    println!(
        "bench: f. analyzer rules: {n} events from {NODES} nodes; 20 rule-shaped pipelines \
         bound to each of {ANALYSED} unhealthy events and run through aggregate"
    );
    let (store, db) = bench.fresh_store().await?;
    let mut synth = Synth::new(bench.args.seed, NODES, Utc::now());
    let out = match load_events(&store, &mut synth, n, 5_000, "").await {
        Ok(()) => measure(&store).await,
        Err(e) => Err(e),
    };
    store.close().await;
    bench.drop_database(&db).await?;
    let (latencies, results) = out?;
    let p = latencies.percentiles();
    println!(
        "  20 rules per event: {} ({results} result documents over all events)",
        Percentiles::describe(p)
    );
    let p50 = p.map_or(f64::INFINITY, |p| p.p50);
    Ok(Figure {
        case: format!("f. analyzer rules, 20 per event, {n} events"),
        figure: format!(
            "p50 {p50:.1} ms, p99 {:.1} ms",
            p.map_or(f64::INFINITY, |p| p.p99)
        ),
        target: format!("p50 <= {P50_TARGET_MS} ms"),
        pass: p50 <= P50_TARGET_MS,
    })
}

async fn measure(store: &dyn DataStore) -> CliResult<(Latencies, usize)> {
    let collection = store.health_event_collection();
    let rules = rules()?;
    let events = collection
        .find(
            &Filter::eq(fields::IS_HEALTHY, false),
            &FindOptions::default().limit(ANALYSED),
        )
        .await?;
    let mut latencies = Latencies::default();
    let mut results = 0;
    for event in &events {
        let started = Instant::now();
        for rule in &rules {
            results += collection.aggregate(&rule.bind_this(event)?).await?.len();
        }
        latencies.push(started.elapsed());
    }
    Ok((latencies, results))
}
