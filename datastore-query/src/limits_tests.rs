//! Pipelines that would run for minutes or take gigabytes: each stops, with a typed error
//! or because its caller stopped waiting, and the evaluation that does finish is not
//! quadratic in the number of distinct keys.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::plan::InMemory;
use super::Pipeline;
use datastore_api::error::ErrorKind;
use datastore_api::value::Document;

/// The error of `r`; an `Ok` fails the test naming only how many documents it held.
fn refused(r: datastore_api::Result<Vec<Document>>) -> datastore_api::Error {
    match r {
        Ok(docs) => panic!("the run returned {} documents", docs.len()),
        Err(e) => e,
    }
}

fn numbered(n: usize) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let mut d = Document::new();
            d.insert("_id".into(), json!(format!("{i:08}")));
            d.insert("i".into(), json!(i));
            d
        })
        .collect()
}

/// `$match` on `$in` over a long list: 20,000 × 100,000 comparisons, minutes of work.
fn endless() -> Pipeline {
    let list: Vec<Value> = (0..100_000).map(|i| json!(format!("x{i}"))).collect();
    Pipeline::parse(&json!([{"$match": {"$expr": {"$in": ["$i", list]}}}])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_waiting_is_not_kept_waiting() {
    let plan = endless().plan().unwrap();
    let source = InMemory::new(numbered(20_000));
    let started = Instant::now();
    let waited = tokio::time::timeout(Duration::from_millis(200), plan.execute(&source)).await;
    assert!(waited.is_err(), "the run finished");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout fired after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_run_stops_at_max_time_with_a_transient_error() {
    let started = Instant::now();
    let e = refused(
        endless()
            .with_max_time(Duration::from_millis(100))
            .run(numbered(20_000)),
    );
    assert!(e.is_retryable(), "{e}");
    assert!(e.message().contains("max_time"), "{e}");
    assert!(e.message().contains("stage 0 ($match)"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_window_holding_too_much_is_refused_by_its_bytes() {
    // Every document gets the whole partition: 5,000 × 5,000 values.
    let p = Pipeline::parse(&json!([
        {"$setWindowFields": {"sortBy": {"i": 1}, "output": {"all": {"$push": "$i"}}}}
    ]))
    .unwrap();
    let e = refused(p.run(numbered(5_000)));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("max_bytes"), "{e}");
}

#[test]
fn a_group_holding_too_much_is_refused_by_its_bytes() {
    let p = Pipeline::parse(&json!([
        {"$group": {"_id": null, "all": {"$push": "$$ROOT"}}}
    ]))
    .unwrap()
    .with_max_bytes(100_000);
    let e = refused(p.run(numbered(5_000)));
    assert!(e.message().contains("max_bytes"), "{e}");
}

#[test]
fn many_distinct_keys_group_and_partition_exactly() {
    let n = 20_000;
    let grouped = Pipeline::parse(&json!([
        {"$group": {"_id": {"$mod": ["$i", 10_000]}, "n": {"$sum": 1}, "s": {"$addToSet": "$i"}}},
        {"$match": {"n": 2}},
        {"$count": "groups"}
    ]))
    .unwrap()
    .run(numbered(n))
    .unwrap();
    assert_eq!(Value::Object(grouped[0].clone()), json!({"groups": 10_000}));
    let partitioned = Pipeline::parse(&json!([
        {"$setWindowFields": {
            "partitionBy": "$i", "sortBy": {"i": 1},
            "output": {"n": {"$count": {}}, "before": {"$sum": "$i", "window": {"documents": ["unbounded", 0]}}}
        }},
        {"$match": {"n": 1}},
        {"$count": "partitions"}
    ]))
    .unwrap()
    .run(numbered(n))
    .unwrap();
    assert_eq!(
        Value::Object(partitioned[0].clone()),
        json!({"partitions": n})
    );
}

#[test]
fn growing_and_sliding_windows_keep_their_values() {
    let p = Pipeline::parse(&json!([
        {"$setWindowFields": {"sortBy": {"i": 1}, "output": {
            "prefix": {"$sum": "$i", "window": {"documents": ["unbounded", "current"]}},
            "slide": {"$push": "$i", "window": {"documents": [-1, 1]}},
            "range": {"$sum": 1, "window": {"range": [-2, 0]}},
            "whole": {"$max": "$i"}
        }}},
        {"$project": {"_id": 0, "i": 1, "prefix": 1, "slide": 1, "range": 1, "whole": 1}}
    ]))
    .unwrap();
    let out: Vec<Value> = p
        .run(numbered(4))
        .unwrap()
        .into_iter()
        .map(Value::Object)
        .collect();
    assert_eq!(
        out,
        vec![
            json!({"i": 0, "prefix": 0, "slide": [0, 1], "range": 1, "whole": 3}),
            json!({"i": 1, "prefix": 1, "slide": [0, 1, 2], "range": 2, "whole": 3}),
            json!({"i": 2, "prefix": 3, "slide": [1, 2, 3], "range": 3, "whole": 3}),
            json!({"i": 3, "prefix": 6, "slide": [2, 3], "range": 3, "whole": 3}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_run_inside_a_runtime_runs_in_place() {
    // Enough documents for a stage to go to the blocking pool, which `run` cannot wait for.
    let p = Pipeline::parse(&json!([{"$match": {"$expr": {"$gte": ["$i", 0]}}}])).unwrap();
    assert_eq!(p.run(numbered(1_000)).unwrap().len(), 1_000);
}

#[test]
fn a_lookup_embedding_too_much_is_refused_by_its_bytes() {
    // Every document embeds the whole collection: 300 × 300 documents.
    let p = Pipeline::parse(&json!([
        {"$lookup": {"from": "HealthEvents", "pipeline": [{"$match": {"i": {"$gte": 0}}}], "as": "all"}}
    ]))
    .unwrap()
    .with_max_bytes(1_000_000);
    let e = refused(p.run(numbered(300)));
    assert!(e.message().contains("max_bytes"), "{e}");
}
