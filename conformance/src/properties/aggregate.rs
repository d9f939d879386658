//! Aggregation: a provider's `aggregate` gives what the shared evaluator gives over the same
//! documents. On PostgreSQL this checks the pushdown of the leading `$match` (the rest is the
//! evaluator); on MongoDB the pipeline runs natively on the server, so the server is the
//! independent check of the evaluator's semantics.

use datastore_api::{Filter, FindOptions};
use datastore_query::{Aggregate, Pipeline};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use super::changes::unique;
use super::{check_cases, shrink_iters};
use crate::Ctx;

/// A document value that may be missing (`None`), null, or of a wrong type.
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => (-2i64..6).prop_map(|i| Some(json!(i))),
        1 => (-2i64..6).prop_map(|i| Some(json!(i as f64 + 0.5))),
        1 => "[ab]{1,2}".prop_map(|s| Some(json!(s))),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    (
        0u8..3,
        field(),
        field(),
        prop::collection::vec("[xyz]", 0..3),
        0i64..8,
    )
        .prop_map(|(node, v, w, tags, t)| {
            // `t`: always a number, the key of range windows.
            let mut d = json!({"node": format!("n{node}"), "tags": tags, "t": t});
            if let Some(v) = v {
                d["v"] = v;
            }
            if let Some(w) = w {
                d["w"] = w;
            }
            d
        })
}

/// A numeric-ish expression over the document's fields.
fn expression() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!("$v")),
        Just(json!("$w")),
        (0i64..5).prop_map(|i| json!(i)),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| json!({"$add": [{"$ifNull": [a, 0]}, {"$ifNull": [b, 0]}]})),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| json!({"$cond": [{"$gt": [a, 3]}, b, "big"]})),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| json!({"$max": [a, b]})),
            inner.clone().prop_map(|a| json!({"$ifNull": [a, "none"]})),
            inner
                .clone()
                .prop_map(|a| json!({"$cond": [a, "yes", "no"]})),
            inner.clone().prop_map(|a| json!({"$toString": a})),
            inner.clone().prop_map(|a| json!({"$toLong": a})),
            inner
                .clone()
                .prop_map(|a| json!({"$subtract": [{"$ifNull": [a, 0]}, 2]})),
            (inner.clone(), inner).prop_map(|(a, b)| json!({"$eq": [a, b]})),
        ]
    })
}

/// String and document expressions over the same fields (numbers where strings belong are
/// coerced or refused, as MongoDB does).
fn texts_and_documents() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..3, -1i64..3).prop_map(|(a, n)| json!({"$substrBytes": ["$v", a, n]})),
        (0i64..3, 0i64..3)
            .prop_map(|(a, n)| json!({"$substrCP": [{"$ifNull": ["$w", "ba"]}, a, n]})),
        prop_oneof![Just("^a"), Just("b$"), Just("A")].prop_flat_map(|re| {
            prop_oneof![Just(None), Just(Some("i"))].prop_map(move |o| match o {
                Some(o) => json!({"$regexMatch": {"input": "$v", "regex": re, "options": o}}),
                None => json!({"$regexMatch": {"input": "$w", "regex": re}}),
            })
        }),
        Just(json!({"$objectToArray": {"v": "$v", "w": "$w", "n": "$node"}})),
        Just(json!({"$objectToArray": "$v"})),
        Just(json!({"$arrayToObject": [[["a", "$v"], ["b", "$w"], ["a", "$t"]]]})),
        Just(json!({"$arrayToObject": "$tags"})),
        Just(json!({"$getField": "v"})),
        Just(json!({"$getField": {"field": "w", "input": {"w": "$t"}}})),
    ]
}

fn stage(count: bool) -> BoxedStrategy<Value> {
    let base = prop_oneof![
        (0u8..3).prop_map(|n| json!({"$match": {"node": format!("n{n}")}})),
        (0i64..6).prop_map(|n| json!({"$match": {"v": {"$gte": n}}})),
        expression().prop_map(|e| json!({"$match": {"$expr": {"$lt": [e, 6]}}})),
        // The value itself as the condition: MongoDB's truthiness of 0, null, missing, strings.
        expression().prop_map(|e| json!({"$match": {"$expr": e}})),
        expression().prop_map(|e| json!({"$addFields": {"e": e}})),
        any::<bool>()
            .prop_map(|p| json!({"$unwind": {"path": "$tags", "preserveNullAndEmptyArrays": p}})),
        expression().prop_map(|e| json!({"$group": {
            "_id": "$node", "n": {"$sum": 1}, "s": {"$sum": "$v"}, "hi": {"$max": e},
            "lo": {"$min": "$w"}, "set": {"$addToSet": "$tags"},
        }})),
        Just(
            json!({"$project": {"node": 1, "v": 1, "total": {"$add": [{"$ifNull": ["$v", 0]}, 1]}}})
        ),
        Just(json!({"$project": {"tags": 0}})),
        // A nested specification: dotted paths, merged into what is there. (SecantusDB reads
        // a nested `$project` document as an expression, not as MongoDB's dotted inclusion.)
        Just(json!({"$addFields": {"o": {"p": "$v", "q": {"r": "$w"}}}})),
        // Windows: `_id` orders uniquely (positions and shifts are then defined), `t` has ties.
        Just(
            json!({"$setWindowFields": {"partitionBy": "$node", "sortBy": {"_id": 1}, "output": {
                "prev": {"$shift": {"output": "$v", "by": -1, "default": "none"}},
                "near": {"$sum": "$v", "window": {"documents": [-1, 1]}},
                "upto": {"$max": "$w", "window": {"documents": ["unbounded", "current"]}},
            }}})
        ),
        Just(
            json!({"$setWindowFields": {"partitionBy": "$node", "sortBy": {"t": 1}, "output": {
                "recent": {"$sum": 1, "window": {"range": [-2, 0]}},
                "vals": {"$addToSet": "$v", "window": {"range": ["unbounded", 1]}},
            }}})
        ),
        // The other documents of the same node (of this run: `this.run` is bound below).
        Just(
            json!({"$lookup": {"from": "HealthEvents", "let": {"n": "$node"}, "as": "same",
            "pipeline": [
                {"$match": {"run": "this.run"}},
                {"$match": {"$expr": {"$eq": ["$node", "$$n"]}}},
                {"$project": {"_id": 0, "v": 1, "tags": 1}},
            ]}})
        ),
    ]
    .boxed();
    if count {
        prop_oneof![8 => base, 1 => Just(json!({"$count": "c"}))].boxed()
    } else {
        base
    }
}

/// Numbers as floats, arrays and fields sorted: what the comparison must not depend on (integer widths
/// differ between servers; `$addToSet` and `$group` order is unspecified).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => {
            let mut out: Vec<Value> = items.iter().map(normalize).collect();
            out.sort_by_key(|x| x.to_string());
            Value::Array(out)
        }
        Value::Object(o) => {
            // Field order is not compared (the servers' and the evaluator's may differ).
            let sorted: std::collections::BTreeMap<&String, Value> =
                o.iter().map(|(k, x)| (k, normalize(x))).collect();
            Value::Object(sorted.into_iter().map(|(k, x)| (k.clone(), x)).collect())
        }
        other => other.clone(),
    }
}

fn sorted(docs: Vec<datastore_api::Document>) -> Vec<String> {
    let mut out: Vec<String> = docs
        .into_iter()
        .map(|d| normalize(&Value::Object(d)).to_string())
        .collect();
    out.sort();
    out
}

/// The provider's outcome equals the evaluator's: the same documents (as a multiset, numbers
/// by value), or an error on both sides (an evaluation error, a type error).
pub(super) fn same_outcome(
    want: &datastore_api::Result<Vec<datastore_api::Document>>,
    got: datastore_api::Result<Vec<datastore_api::Document>>,
    call: &str,
) -> std::result::Result<(), TestCaseError> {
    match (want, got) {
        (Ok(want), Ok(got)) => {
            let (want, got) = (sorted(want.clone()), sorted(got));
            prop_assert_eq!(got, want, "{}", call);
        }
        (Err(_), Err(_)) => {}
        (want, got) => {
            return Err(TestCaseError::fail(format!(
                "{call}: the evaluator gave {want:?}, the provider {got:?}"
            )))
        }
    }
    Ok(())
}

/// `stages` without a `$match` after an `$addFields` or `$project`: for a server that runs
/// stages in order (see [`Capabilities::match_moves_before_projection`](crate::Capabilities)).
fn in_order_safe(stages: Vec<Value>) -> Vec<Value> {
    let mut projected = false;
    stages
        .into_iter()
        .filter(|s| {
            let keep = !(projected && s.get("$match").is_some());
            projected |= s.get("$addFields").is_some() || s.get("$project").is_some();
            keep
        })
        .collect()
}

/// A pipeline whose gate (a `$match` on a constant) is false returns nothing on every
/// provider, without running the stages before it: MongoDB, which would run them (and fail
/// on a string in `$add`), is not asked.
async fn gated_pipelines_touch_nothing(
    coll: &dyn datastore_api::Collection,
) -> std::result::Result<(), TestCaseError> {
    let run = unique("gate");
    coll.insert_one(serde_json::from_value(json!({"run": run, "v": "text"})).unwrap_or_default())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let gated = Pipeline::parse(&json!([
        {"$match": {"run": run}},
        {"$group": {"_id": null, "s": {"$max": {"$add": ["$v", 1]}}}},
        {"$match": {"$expr": {"$lt": [{"$cond": [0, "yes", "no"]}, 6]}}},
    ]))
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = coll.aggregate(&gated).await;
    prop_assert!(
        matches!(&got, Ok(d) if d.is_empty()),
        "a pipeline gated false gave {:?}",
        got
    );
    Ok(())
}

/// Random pipelines over random documents with missing, null and wrong-type values: the
/// provider's result equals the evaluator's over the same documents (as a multiset, numbers
/// compared by value).
pub(super) fn aggregation_matches_evaluator(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    let strategy = (
        prop::collection::vec(document(), 0..12),
        prop::collection::vec(stage(ctx.capabilities.count_of_nothing_is_empty), 1..5),
        // Often one more: nine kinds of string and document expression share that stage.
        prop::option::of((texts_and_documents(), texts_and_documents())),
        // A second pipeline, run with the first by `aggregate_each`.
        prop::collection::vec(stage(ctx.capabilities.count_of_nothing_is_empty), 1..3),
        // Time windows on `t` leading each (as the analyzer's rules have).
        (prop::option::of(0i64..8), prop::option::of(0i64..8)),
    );
    ctx.rt
        .block_on(gated_pipelines_touch_nothing(coll))
        .map_err(|e| e.to_string())?;
    // Pipelines the parser refuses are discarded; most must be compared.
    let compared = std::sync::atomic::AtomicU32::new(0);
    let cases = ctx.cases / 2;
    let outcome = check_cases(
        cases,
        shrink_iters(),
        strategy,
        |(documents, stages, texts, others, windows)| {
            let (stages, others) = if ctx.capabilities.match_moves_before_projection {
                (stages, others)
            } else {
                (in_order_safe(stages), in_order_safe(others))
            };
            ctx.rt.block_on(async {
                let run = unique("agg");
                for mut d in documents {
                    d["run"] = json!(run);
                    coll.insert_one(serde_json::from_value(d).unwrap_or_default())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                let window = |since: Option<i64>| {
                    since.map(|k| json!({"$match": {"$expr": {"$gte": ["$t", {"$add": [k, 0]}]}}}))
                };
                let mut all = vec![json!({"$match": {"run": run}})];
                all.extend(window(windows.0));
                all.extend(stages);
                if let Some((x, y)) = texts {
                    all.push(json!({"$addFields": {"x": x, "y": y}}));
                }
                let mut second = vec![json!({"$match": {"run": run}})];
                second.extend(window(windows.1));
                second.extend(others);
                let scope = json!({ "run": run });
                let parse = |stages: Vec<Value>| {
                    Pipeline::parse(&Value::Array(stages))
                        .and_then(|p| p.bind_this(scope.as_object().unwrap_or(&Default::default())))
                };
                let pipelines = match (parse(all), parse(second)) {
                    (Ok(p), Ok(q)) => [p, q],
                    // A constant sub-expression that cannot be evaluated (`{$add: [1, "x"]}`):
                    // MongoDB refuses such a pipeline when it optimizes it, so does the parser.
                    (Err(e), _) | (_, Err(e))
                        if e.kind() == datastore_api::ErrorKind::InvalidInput =>
                    {
                        return Ok(())
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(TestCaseError::fail(format!(
                            "the generator made a bad pipeline: {e}"
                        )))
                    }
                };
                compared.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let stored = coll
                    .find(&Filter::eq("run", run.as_str()), &FindOptions::default())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected: Vec<_> = pipelines.iter().map(|p| p.run(stored.clone())).collect();
                same_outcome(
                    &expected[0],
                    coll.aggregate(&pipelines[0]).await,
                    "aggregate",
                )?;
                // Both at once (on PostgreSQL, one fetch for the two).
                let each = coll
                    .aggregate_each(&pipelines)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("aggregate_each failed: {e}")))?;
                prop_assert_eq!(each.len(), 2);
                for (want, got) in expected.iter().zip(each) {
                    same_outcome(want, got, "aggregate_each")?;
                }
                Ok(())
            })
        },
    );
    outcome?;
    let compared = compared.load(std::sync::atomic::Ordering::Relaxed);
    if compared * 2 < cases {
        return Err(format!(
            "only {compared} of {cases} random pipelines were compared (the rest were refused at parse time)"
        ));
    }
    Ok(())
}
