//! The planner's decisions, asserted on the plan itself and on what it fetches.

use std::sync::Mutex;

use async_trait::async_trait;
use futures::FutureExt;
use serde_json::json;

use super::plan::Fetch;
use super::Pipeline;
use datastore_api::error::Result;
use datastore_api::filter::{CmpOp, Filter};
use datastore_api::value::{Document, Value};

/// Documents in memory that record every fetch.
struct Recording {
    docs: Vec<Document>,
    fetches: Mutex<Vec<(Filter, u64, u64)>>,
}

impl Recording {
    fn new(docs: Value) -> Recording {
        let docs = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_object().unwrap().clone())
            .collect();
        Recording {
            docs,
            fetches: Mutex::new(Vec::new()),
        }
    }

    fn fetches(&self) -> Vec<(Filter, u64, u64)> {
        self.fetches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Fetch for Recording {
    fn name(&self) -> &str {
        "health_events"
    }

    async fn fetch(&self, filter: &Filter, skip: u64, limit: u64) -> Result<Vec<Document>> {
        self.fetches
            .lock()
            .unwrap()
            .push((filter.clone(), skip, limit));
        let lowered = filter.lower()?;
        Ok(self
            .docs
            .iter()
            .filter(|d| lowered.matches(d))
            .skip(skip as usize)
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

fn pipeline(stages: Value) -> Pipeline {
    Pipeline::parse(&stages).unwrap()
}

fn execute(p: &Pipeline, source: &Recording) -> Vec<Document> {
    p.plan()
        .unwrap()
        .execute(source)
        .now_or_never()
        .unwrap()
        .unwrap()
}

#[test]
fn a_gate_that_folds_to_false_reads_nothing() {
    // A rule gated on the event's own error code, bound for an event with another code.
    let p = pipeline(json!([
        {"$match": {"$expr": {"$gte": ["$t", {"$subtract": [1000, 60]}]}}},
        {"$match": {"$expr": {"$in": ["31", ["74"]]}}},
        {"$count": "n"},
    ]));
    let plan = p.plan().unwrap();
    assert!(plan.returns_nothing(), "{plan}");
    assert_eq!(plan.scan(), None);
    let source = Recording::new(json!([{"t": 990}]));
    assert!(execute(&p, &source).is_empty());
    assert!(source.fetches().is_empty(), "the store was read");
}

#[test]
fn a_gate_that_folds_to_true_is_dropped() {
    let p = pipeline(json!([
        {"$match": {"$expr": {"$and": [{"$eq": ["74", "74"]}, {"$ne": ["74", "31"]}]}}},
        {"$match": {"n": "a"}},
        {"$count": "n"},
    ]));
    let plan = p.plan().unwrap();
    assert!(!plan.returns_nothing());
    assert_eq!(plan.stages_left(), [2], "{plan}");
    assert_eq!(plan.scan(), Some(&Filter::And(vec![Filter::eq("n", "a")])));
    assert!(
        plan.notes()[0].contains("always true"),
        "{:?}",
        plan.notes()
    );
}

#[test]
fn every_leading_match_pushes_down_in_any_order() {
    // The time window first, then a gate, then the node with a non-pushable $expr: the node
    // and the window both reach the scan.
    let p = pipeline(json!([
        {"$match": {"$expr": {"$and": [
            {"$gte": ["$t", {"$subtract": [1000, 60]}]},
            {"$lte": ["$t", 1000]}]}}},
        {"$match": {"$expr": {"$eq": ["SysLogsXIDError", "SysLogsXIDError"]}}},
        {"$match": {"n": "a", "$expr": {"$gt": [{"$size": "$e"}, 0]}}},
        {"$count": "n"},
    ]));
    let plan = p.plan().unwrap();
    assert_eq!(
        plan.scan(),
        Some(&Filter::And(vec![
            Filter::And(vec![
                Filter::expr_cmp("t", CmpOp::Gte, 940),
                Filter::expr_cmp("t", CmpOp::Lte, 1000),
            ]),
            Filter::eq("n", "a"),
        ])),
        "{plan}"
    );
    assert_eq!(plan.stages_left(), [2, 3], "{plan}");
    assert!(plan.bounded());
}

#[test]
fn expr_equalities_with_constants_push_down() {
    let p = pipeline(json!([
        {"$match": {"$expr": {"$and": [
            {"$eq": ["$n", "a"]}, {"$eq": [true, "$f"]}, {"$ne": ["$x", "b"]}]}}},
    ]));
    let plan = p.plan().unwrap();
    assert_eq!(
        plan.scan(),
        Some(&Filter::And(vec![Filter::And(vec![
            Filter::eq("n", "a"),
            Filter::eq("f", true)
        ])])),
        "{plan}"
    );
}

#[test]
fn a_constant_field_is_known_to_later_stages() {
    // The analyzer's XID74Reg2Bit13Set shape: registers built from the event itself.
    let p = pipeline(json!([
        {"$match": {"n": "a"}},
        {"$addFields": {"registers": {"$arrayToObject": [[{"k": "REG2", "v": "1"}]]}}},
        {"$match": {"$expr": {"$eq": ["$registers.REG2", "0"]}}},
        {"$count": "n"},
    ]));
    let plan = p.plan().unwrap();
    assert!(plan.returns_nothing(), "{plan}");
}

#[test]
fn a_limited_per_document_tail_stops_at_the_first_result() {
    // No index bound: candidates come in growing batches.
    let p = pipeline(json!([
        {"$match": {"n": {"$ne": "b"}}},
        {"$addFields": {"k": {"$add": ["$i", 1]}}},
        {"$match": {"k": {"$gte": 3}}},
        {"$limit": 1},
    ]));
    let plan = p.plan().unwrap();
    assert!(plan.stops_early() && !plan.bounded(), "{plan}");
    let docs: Vec<Value> = (0..1000)
        .map(|i| json!({"_id": format!("{i:04}"), "n": "a", "i": i}))
        .collect();
    let source = Recording::new(Value::Array(docs));
    let out = execute(&p, &source);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["i"], json!(2));
    let fetched: u64 = source.fetches().iter().map(|f| f.2).sum();
    assert!(fetched <= 64, "fetched {fetched} for one result");
}

#[test]
fn a_lookup_fetches_per_document_with_its_variables_bound() {
    let p = pipeline(json!([
        {"$match": {"kind": "outer"}},
        {"$match": {"$expr": {"$eq": ["$skip", false]}}},
        {"$lookup": {"from": "HealthEvents", "as": "others",
            "let": {"node": "$n", "me": "$_id"},
            "pipeline": [
                {"$match": {"$expr": {"$and": [
                    {"$gte": ["$t", {"$subtract": [{"$divide": [{"$toLong": "$$NOW"}, 1000]}, 86400]}]},
                    {"$eq": ["$n", "$$node"]},
                    {"$ne": ["$_id", "$$me"]}]}}},
                {"$project": {"_id": 1}},
            ]}},
        {"$match": {"$expr": {"$eq": [{"$size": "$others"}, 0]}}},
    ]));
    let now = chrono::Utc::now().timestamp();
    let source = Recording::new(json!([
        {"_id": "1", "kind": "outer", "n": "a", "skip": false, "t": now},
        {"_id": "2", "kind": "outer", "n": "b", "skip": false, "t": now},
        {"_id": "3", "kind": "outer", "n": "c", "skip": true, "t": now},
        {"_id": "4", "kind": "inner", "n": "b", "t": now - 10},
        {"_id": "5", "kind": "inner", "n": "b", "t": now - 100_000},
    ]));
    let out = execute(&p, &source);
    let ids: Vec<&Value> = out.iter().map(|d| &d["_id"]).collect();
    assert_eq!(ids, [&json!("1")]);
    let fetches = source.fetches();
    // The outer scan, then one fetch for the two documents that reached the lookup: the
    // union of their scans, each its node's last day.
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    let Filter::Or(scans) = &fetches[1].0 else {
        panic!("not a union: {fetches:?}");
    };
    assert_eq!(scans.len(), 2);
    for scan in scans {
        let text = format!("{scan:?}");
        assert!(text.contains("ExprCmp(\"t\", Gte"), "{text}");
        assert!(text.contains("Eq(\"n\", String("), "{text}");
    }
    let explained = p.plan().unwrap().to_string();
    assert!(explained.contains("per document: fetch"), "{explained}");
    assert!(explained.contains("n == \"$$node\""), "{explained}");
}

#[test]
fn conditions_on_a_field_made_from_a_list_narrow_the_scan_by_the_list() {
    // NVSentinel's XID 74 rules: registers made key by key from the impacted entities.
    let p = pipeline(json!([
        {"$match": {"$expr": {"$gte": ["$t", 100]}}},
        {"$addFields": {"registers": {"$arrayToObject": {"$map": {
            "input": {"$filter": {"input": "$e", "cond": {"$in": ["$$this.entitytype", ["REG0", "REG1"]]}}},
            "as": "reg", "in": {"k": "$$reg.entitytype", "v": "$$reg.entityvalue"}}}}}},
        {"$match": {"$expr": {"$and": [
            {"$or": [{"$eq": ["$registers.REG0", "10"]}, {"$eq": ["$registers.REG0", "01"]}]},
            {"$eq": ["$registers.REG1", "00"]}]}}},
        {"$count": "n"},
    ]));
    let plan = p.plan().unwrap();
    let scan = format!("{:?}", plan.scan().unwrap());
    assert!(
        scan.contains(r#"Eq("e.entityvalue", String("10"))"#),
        "{plan}"
    );
    assert!(
        scan.contains(r#"Eq("e.entityvalue", String("00"))"#),
        "{plan}"
    );
    // The stages still run: the scan only admits fewer documents.
    assert_eq!(plan.stages_left(), [1, 2, 3], "{plan}");
    let source = Recording::new(json!([
        {"_id": "1", "t": 200, "e": [{"entitytype": "REG0", "entityvalue": "10"}, {"entitytype": "REG1", "entityvalue": "00"}]},
        {"_id": "2", "t": 200, "e": [{"entitytype": "REG0", "entityvalue": "11"}, {"entitytype": "REG1", "entityvalue": "00"}]},
        {"_id": "3", "t": 200, "e": [{"entitytype": "REG0", "entityvalue": "00"}, {"entitytype": "REG1", "entityvalue": "10"}]},
    ]));
    assert_eq!(
        execute(&p, &source),
        [json!({"n": 1}).as_object().unwrap().clone()]
    );
}

#[test]
fn binding_ends_the_pipeline_at_a_gate_that_is_false() {
    let rule = pipeline(json!([
        {"$match": {"n": "this.n"}},
        {"$match": {"$expr": {"$eq": ["this.code", "74"]}}},
        {"$group": {"_id": "this.n", "c": {"$sum": 1}}},
    ]));
    let values = |code: &'static str| {
        move |path: &str| -> Result<Value> {
            match path {
                "n" => Ok(json!("a")),
                "code" => Ok(json!(code)),
                other => Err(datastore_api::Error::invalid_input(format!("no {other}"))),
            }
        }
    };
    assert_eq!(
        rule.bind_with(&values("31")).unwrap().stages_json().len(),
        2
    );
    assert_eq!(
        rule.bind_with(&values("74")).unwrap().stages_json().len(),
        3
    );
    // Every placeholder is still resolved: one that cannot be fails the rule.
    let later = pipeline(json!([
        {"$match": {"$expr": {"$eq": ["31", "74"]}}},
        {"$match": {"x": "this.missing"}},
    ]));
    assert!(later.bind_with(&values("31")).is_err());
}

#[test]
fn a_match_after_one_that_may_fail_is_not_pushed_ahead_of_it() {
    // MongoDB's stand-in evaluates stages in order: the `$subtract` fails on a string, even
    // though the next stage would exclude the document.
    let p = pipeline(json!([
        {"$match": {"$expr": {"$lt": [{"$subtract": [{"$ifNull": ["$w", "none"]}, 2]}, 6]}}},
        {"$match": {"v": {"$gte": 4}}},
    ]));
    let plan = p.plan().unwrap();
    assert_eq!(plan.scan(), Some(&Filter::And(Vec::new())), "{plan}");
    let source = Recording::new(json!([{"_id": "1", "t": 0}]));
    let out = p.plan().unwrap().execute(&source).now_or_never().unwrap();
    assert!(out.is_err(), "{out:?}");
}
