//! Rule-shaped examples with results worked out by hand from MongoDB's documented semantics.

use serde_json::{json, Value};

use super::Pipeline;
use datastore_api::value::Document;

fn docs(v: Value) -> Vec<Document> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_object().unwrap().clone())
        .collect()
}

fn run(pipeline: Value, input: Value) -> Vec<Value> {
    Pipeline::parse(&pipeline)
        .unwrap()
        .run(docs(input))
        .unwrap()
        .into_iter()
        .map(Value::Object)
        .collect()
}

fn event(node: &str, xid: &str, gpu: &str, secs: i64, fatal: bool) -> Value {
    json!({
        "healthevent": {
            "nodename": node, "isfatal": fatal, "errorcode": [xid],
            "entitiesimpacted": [{"entitytype": "GPU", "entityvalue": gpu}],
            "generatedtimestamp": {"seconds": secs, "nanos": 0},
        },
        "healtheventstatus": {"faultremediated": {"value": fatal}},
    })
}

#[test]
fn repeated_fatal_events_on_one_node_within_a_window() {
    let input = json!([
        event("n1", "79", "GPU-0", 1_000, true),
        event("n1", "79", "GPU-1", 2_000, true),
        event("n1", "48", "GPU-0", 3_000, true),
        event("n2", "79", "GPU-0", 2_500, true),
        event("n1", "79", "GPU-0", 900_000, true),
        event("n1", "13", "GPU-0", 3_500, false),
    ]);
    let rule = Pipeline::parse(&json!([
        {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.isfatal": true,
                    "healthevent.generatedtimestamp.seconds": {"$gte": 0}}},
        {"$match": {"$expr": {"$gte": ["$healthevent.generatedtimestamp.seconds",
            {"$subtract": ["this.healthevent.generatedtimestamp.seconds", 604_800]}]}}},
        {"$count": "count"},
        {"$match": {"count": {"$gte": 3}}},
    ]))
    .unwrap();
    let now = event("n1", "79", "GPU-0", 610_000, true);
    let out = rule
        .bind_this(now.as_object().unwrap())
        .unwrap()
        .run(docs(input))
        .unwrap();
    // Within 7 days before 610,000 s: 900,000 is after, 1,000..3,000 are older than 5,200 s.
    assert!(out.is_empty(), "{out:?}");
    let now = event("n1", "79", "GPU-0", 600_000, true);
    let out = rule
        .bind_this(now.as_object().unwrap())
        .unwrap()
        .run(docs(json!([
            event("n1", "79", "GPU-0", 1_000, true),
            event("n1", "79", "GPU-1", 2_000, true),
            event("n1", "48", "GPU-0", 3_000, true),
        ])))
        .unwrap();
    assert_eq!(Value::Object(out[0].clone()), json!({"count": 3}));
}

#[test]
fn same_xid_on_different_gpus_by_set_intersection() {
    let out = run(
        json!([
            {"$match": {"$expr": {"$gt": [{"$size": {"$setIntersection": [
                "$healthevent.errorcode", ["79"]]}}, 0]}}},
            {"$unwind": "$healthevent.entitiesimpacted"},
            {"$group": {"_id": "$healthevent.nodename",
                        "gpus": {"$addToSet": "$healthevent.entitiesimpacted.entityvalue"},
                        "n": {"$sum": 1}}},
            {"$match": {"$expr": {"$gte": [{"$size": "$gpus"}, 2]}}},
            {"$project": {"_id": 0, "node": "$_id", "n": 1}},
        ]),
        json!([
            event("n1", "79", "GPU-0", 1, true),
            event("n1", "79", "GPU-1", 2, true),
            event("n2", "79", "GPU-0", 3, true),
            event("n2", "79", "GPU-0", 4, true),
            event("n3", "48", "GPU-5", 5, true),
        ]),
    );
    assert_eq!(out, vec![json!({"node": "n1", "n": 2})]);
}

#[test]
fn expressions_follow_mongodb_rules() {
    let out = run(
        json!([
            {"$addFields": {
                "missingIsNotNull": {"$eq": ["$nope", null]},
                "nullIfMissing": {"$ifNull": ["$nope", "dflt"]},
                "typeOrder": {"$lt": [5, "a"]},
                "mixed": {"$add": [1, 2.5]},
                "ints": {"$multiply": [3, 4]},
                "ms": {"$subtract": [{"$date": "2024-01-01T00:00:01Z"}, {"$date": "2024-01-01T00:00:00Z"}]},
                "later": {"$add": [{"$date": "2024-01-01T00:00:00Z"}, 1000]},
                "sum": {"$reduce": {"input": [1, 2, 3], "initialValue": 0, "in": {"$add": ["$$value", "$$this"]}}},
                "big": {"$filter": {"input": [1, 5, 9], "as": "x", "cond": {"$gt": ["$$x", 4]}}},
                "paths": "$list.k",
                "sw": {"$switch": {"branches": [{"case": {"$eq": ["$a", 2]}, "then": "two"}], "default": "other"}},
                "letv": {"$let": {"vars": {"y": {"$add": ["$a", 1]}}, "in": {"$multiply": ["$$y", 2]}}},
            }},
            {"$project": {"_id": 0, "list": 0, "a": 0}},
        ]),
        json!([{"_id": "x", "a": 2, "list": [{"k": 1}, {"k": 2}, {"j": 3}]}]),
    );
    assert_eq!(
        out,
        vec![json!({
            "missingIsNotNull": false, "nullIfMissing": "dflt", "typeOrder": true, "mixed": 3.5,
            "ints": 12, "ms": 1000, "later": {"$date": "2024-01-01T00:00:01.000Z"}, "sum": 6,
            "big": [5, 9], "paths": [1, 2], "sw": "two", "letv": 6,
        })]
    );
}

#[test]
fn size_of_null_is_an_error_and_unsupported_things_are_refused_by_position() {
    let e = Pipeline::parse(&json!([{"$project": {"n": {"$size": "$x"}}}]))
        .unwrap()
        .run(docs(json!([{"x": null}])))
        .unwrap_err();
    assert!(e.message().contains("$size requires an array"), "{e}");
    for (p, names) in [
        (
            json!([{"$match": {}}, {"$lookup": {}}]),
            "stage 1 ($lookup)",
        ),
        (
            json!([{"$project": {"a": {"$regexMatch": {}}}}]),
            "$regexMatch",
        ),
        (json!([{"$match": {"a": {"$regex": "x"}}}]), "$regex"),
        (
            json!([{"$group": {"_id": null, "a": {"$stdDevPop": 1}}}]),
            "$stdDevPop",
        ),
        (json!({"$match": {}}), "array"),
    ] {
        let e = Pipeline::parse(&p).unwrap_err();
        assert_eq!(e.kind(), datastore_api::ErrorKind::InvalidInput);
        assert!(e.message().contains(names), "{e}");
    }
}

#[test]
fn a_stage_holding_too_many_documents_fails_clearly() {
    let input = json!([{"a": [1, 2, 3]}, {"a": [4, 5, 6]}]);
    let e = Pipeline::parse(&json!([{"$unwind": "$a"}]))
        .unwrap()
        .with_max_documents(4)
        .run(docs(input))
        .unwrap_err();
    assert!(e.message().contains("more than 4"), "{e}");
}

#[test]
fn groups_sorts_and_pages() {
    let out = run(
        json!([
            {"$group": {"_id": {"n": "$n"}, "first": {"$first": "$v"}, "last": {"$last": "$v"},
                        "min": {"$min": "$v"}, "max": {"$max": "$v"}, "all": {"$push": "$v"},
                        "c": {"$count": {}}, "avg": {"$avg": "$v"}}},
            {"$sort": {"_id.n": -1}},
            {"$skip": 1},
            {"$limit": 1},
        ]),
        json!([{"n": 1, "v": 3}, {"n": 2, "v": 1}, {"n": 1, "v": null}, {"n": 1, "v": 5}]),
    );
    assert_eq!(
        out,
        vec![
            json!({"_id": {"n": 1}, "first": 3, "last": 5, "min": 3, "max": 5,
                     "all": [3, null, 5], "c": 3, "avg": 4.0})
        ]
    );
}

#[test]
fn lookup_of_earlier_events_of_the_same_node_with_a_let_binding() {
    let rule = Pipeline::parse(&json!([
        {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                    "healthevent.generatedtimestamp.seconds": "this.healthevent.generatedtimestamp.seconds"}},
        {"$lookup": {"from": "HealthEvents", "as": "earlier",
            "let": {"node": "$healthevent.nodename", "t": "$healthevent.generatedtimestamp.seconds"},
            "pipeline": [
                {"$match": {"healthevent.isfatal": true}},
                {"$match": {"$expr": {"$and": [
                    {"$eq": ["$healthevent.nodename", "$$node"]},
                    {"$lt": ["$healthevent.generatedtimestamp.seconds", "$$t"]}]}}},
                {"$project": {"_id": 0, "t": "$healthevent.generatedtimestamp.seconds"}},
                {"$sort": {"t": 1}},
            ]}},
        {"$project": {"_id": 0, "n": {"$size": "$earlier"}, "first": {"$first": "$earlier.t"}}},
    ]))
    .unwrap();
    let now = event("n1", "79", "GPU-0", 50, true);
    let out = rule
        .bind_this(now.as_object().unwrap())
        .unwrap()
        .run(docs(json!([
            event("n1", "79", "GPU-0", 10, true),
            event("n1", "79", "GPU-0", 20, false),
            event("n1", "79", "GPU-0", 30, true),
            event("n2", "79", "GPU-0", 5, true),
            now,
            event("n1", "79", "GPU-0", 60, true),
        ])))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(Value::Object(out[0].clone()), json!({"n": 2, "first": 10}));
}

#[test]
fn bursts_merged_with_shift_and_range_windows() {
    let at = |secs: i64| event("n1", "79", "GPU-0", secs, false);
    let input = json!([
        at(1000),
        at(0),
        at(100),
        at(60),
        at(5000),
        at(1100),
        event("n2", "79", "GPU-0", 10, false)
    ]);
    let windows = json!({"$setWindowFields": {
    "partitionBy": "$healthevent.nodename",
    "sortBy": {"healthevent.generatedtimestamp.seconds": 1},
    "output": {
        "prev": {"$shift": {"output": "$healthevent.generatedtimestamp.seconds", "by": -1}},
        "recent": {"$sum": 1, "window": {"range": [-180, 0]}},
        "seen": {"$push": "$healthevent.generatedtimestamp.seconds",
                 "window": {"documents": ["unbounded", "current"]}},
    }}});
    let out = run(
        json!([
            {"$match": {"healthevent.nodename": "n1"}},
            windows.clone(),
            {"$addFields": {"start": {"$or": [{"$eq": ["$prev", null]},
                {"$gt": [{"$subtract": ["$healthevent.generatedtimestamp.seconds", "$prev"]}, 180]}]}}},
            {"$match": {"start": true}},
            {"$count": "bursts"},
        ]),
        input.clone(),
    );
    assert_eq!(out, vec![json!({"bursts": 3})]);
    let out = run(
        json!([
            windows,
            {"$match": {"healthevent.generatedtimestamp.seconds": 100}},
            {"$project": {"_id": 0, "recent": 1, "seen": 1}},
        ]),
        input,
    );
    assert_eq!(out, vec![json!({"recent": 3, "seen": [0, 60, 100]})]);
}

#[test]
fn bound_values_are_data_and_missing_sorts_before_null() {
    // An event whose node name looks like a field path must not become one.
    let rule = Pipeline::parse(&json!([
        {"$match": {"$expr": {"$eq": ["$healthevent.nodename", "this.healthevent.nodename"]}}},
    ]))
    .unwrap();
    let sneaky = json!({"healthevent": {"nodename": "$healthevent.nodename"}});
    let out = rule
        .bind_this(sneaky.as_object().unwrap())
        .unwrap()
        .run(docs(json!([{"healthevent": {"nodename": "n1"}}])))
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    let out = run(
        json!([{"$project": {"_id": 0, "c": {"$cmp": ["$nope", null]}, "g": {"$gte": ["$nope", null]}}}]),
        json!([{"a": 1}]),
    );
    assert_eq!(out, vec![json!({"c": -1, "g": false})]);
    // Runtime errors name their stage.
    let e = Pipeline::parse(&json!([{"$match": {}}, {"$project": {"n": {"$size": "$x"}}}]))
        .unwrap()
        .run(docs(json!([{"x": 1}])))
        .unwrap_err();
    assert!(e.message().contains("stage 1 ($project)"), "{e}");
}

#[test]
fn conversions_follow_convert_rules() {
    let out = run(
        json!([{"$project": {"_id": 0,
            "l": {"$toLong": "42"}, "d": {"$toDouble": "1.5"}, "t": {"$toLong": 2.9},
            "s": {"$toString": 1.0}, "ms": {"$toLong": {"$date": "1970-01-01T00:00:01Z"}}}}]),
        json!([{"a": 1}]),
    );
    assert_eq!(
        out,
        vec![json!({"l": 42, "d": 1.5, "t": 2, "s": "1", "ms": 1000})]
    );
    for bad in [
        json!({"$toLong": "1.5"}),
        json!({"$toInt": 3_000_000_000i64}),
        json!({"$toInt": {"$date": "1970-01-01T00:00:01Z"}}),
        json!({"$toLong": 1e300}),
    ] {
        let e = Pipeline::parse(&json!([{"$project": {"x": bad}}])).unwrap_err();
        assert_eq!(e.kind(), datastore_api::ErrorKind::InvalidInput, "{bad}");
    }
}

#[test]
fn expr_time_windows_push_down_and_are_checked_first() {
    use datastore_api::filter::{CmpOp, Filter};
    let rule = Pipeline::parse(&json!([
        {"$match": {"n": "x"}},
        {"$match": {"$expr": {"$and": [
            {"$gte": ["$t", {"$subtract": [100, 30]}]},
            {"$lt": [5, "$u"]},
            {"$gt": [{"$toLong": "$s"}, 0]},
        ]}}},
        {"$group": {"_id": null, "c": {"$sum": 1}}},
    ]))
    .unwrap();
    let plan = rule.plan().unwrap();
    assert_eq!(plan.stages_left(), [1, 2], "the $expr stage still runs");
    assert_eq!(
        plan.scan().cloned().unwrap(),
        Filter::And(vec![
            Filter::eq("n", "x"),
            Filter::And(vec![
                Filter::expr_cmp("t", CmpOp::Gte, 70),
                Filter::expr_cmp("u", CmpOp::Gt, 5),
            ]),
        ])
    );
    // "zz" does not convert, but its document is outside the window: never evaluated, as
    // MongoDB's rewrite of `$expr` checks the comparison first.
    let out = run(
        rule.stages_json().to_vec().into(),
        json!([
            {"n": "x", "t": 80, "u": 6, "s": "1"},
            {"n": "x", "t": 10, "u": 6, "s": "zz"},
        ]),
    );
    assert_eq!(out, [json!({"_id": null, "c": 1})]);
}

#[test]
fn expr_comparisons_order_by_bson_type() {
    use datastore_api::filter::{CmpOp, Filter};
    let docs = docs(json!([
        {"t": 5}, {"t": 50}, {"t": "late"}, {"t": [1]}, {"t": null}, {}, {"a": [{"t": 1}]},
        {"t": {"$date": "2026-01-01T00:00:00.000Z"}},
    ]));
    let hits = |f: Filter| {
        let l = f.lower().unwrap();
        docs.iter().filter(|d| l.matches(d)).count()
    };
    // Above 10: 50, the string, the array, the date (missing and null sort below numbers).
    assert_eq!(hits(Filter::expr_cmp("t", CmpOp::Gt, 10)), 4);
    assert_eq!(hits(Filter::expr_cmp("t", CmpOp::Lt, 10)), 4);
    // "$a.t" over an array is an array: above every number.
    assert_eq!(hits(Filter::expr_cmp("a.t", CmpOp::Gt, 1_000)), 1);
    assert!(Filter::expr_cmp("t", CmpOp::Gt, "x").lower().is_err());
}

#[test]
fn nested_specifications_are_dotted_paths() {
    let out = run(
        json!([
            {"$addFields": {"a": {"b": 5, "d": {"e": "$x"}}}},
            {"$project": {"_id": 0, "a": {"b": 1, "c": 1, "d": {"e": 1}}}},
        ]),
        json!([{"_id": "1", "x": 7, "a": {"c": 2, "z": 3}}]),
    );
    assert_eq!(out, [json!({"a": {"b": 5, "c": 2, "d": {"e": 7}}})]);
    assert!(Pipeline::parse(&json!([{"$project": {"a": {}}}])).is_err());
}

#[test]
fn inclusion_keeps_documents_on_the_way_and_projects_arrays_element_by_element() {
    let out = run(
        json!([
            {"$project": {"_id": 0, "a.b": 1, "a.c": 1, "m.n": 1, "s.t": 1}},
            {"$addFields": {"x.y": "$nope"}},
        ]),
        json!([{"_id": "1", "a": [{"b": 1, "z": 0}, 5, {"z": 0}, [{"c": 2}]], "m": {"k": 1}, "s": 3}]),
    );
    assert_eq!(
        out,
        [json!({"a": [{"b": 1}, {}, [{"c": 2}]], "m": {}, "x": {}})]
    );
}

#[test]
fn missing_values_leave_arrays_alone_and_dates_are_not_documents() {
    let out = run(
        json!([
            {"$set": {"a.b": "$nope"}},
            {"$project": {"_id": 0, "a.c": 1, "d.e": 1, "d.f": 1}},
        ]),
        json!([{"_id": "1", "a": [{"c": 1}],
                "d": [{"$date": "2026-01-01T00:00:00.000Z"}, {"e": 1, "f": 2}]}]),
    );
    assert_eq!(out, [json!({"a": [{"c": 1}], "d": [{"e": 1, "f": 2}]})]);
}
