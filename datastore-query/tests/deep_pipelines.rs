//! Pipelines and events nested far deeper than any limit, built in code (the JSON parser
//! stops at 128 levels, so these never come from text): parsing and binding refuse them with
//! a typed error on a small stack, and nothing recurses into them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use conformance::hostile::{drop_value, nest, on_small_stack};
use datastore_api::{ErrorKind, Value};
use datastore_query::Pipeline;
use serde_json::{json, Map};

/// `{op: [ {op: [ … 1 …, 1] }, 1]}`, `levels` operators deep, built without recursion.
fn deep_operator(op: &str, levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = field(op, Value::Array(vec![v, json!(1)]));
    }
    v
}

/// `{name: value}`.
fn field(name: &str, value: Value) -> Value {
    let mut o = Map::new();
    o.insert(name.into(), value);
    Value::Object(o)
}

/// A one-stage pipeline, `[{name: spec}]`.
fn stage(name: &str, spec: Value) -> Value {
    Value::Array(vec![field(name, spec)])
}

fn assert_invalid<T: std::fmt::Debug>(r: datastore_api::Result<T>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}"),
        Ok(v) => panic!("{what}: accepted: {v:?}"),
    }
}

#[test]
fn pipelines_built_in_code_are_refused_when_deep() {
    on_small_stack(|| {
        // Built by hand: `json!` would copy an interpolated value recursively.
        let cases = [
            stage("$addFields", field("x", deep_operator("$add", 1_000))),
            stage("$match", deep_operator("$and", 1_000)),
            stage(
                "$addFields",
                field("x", field("$literal", nest(json!(1), 10_000))),
            ),
            stage("$match", field("x", nest(json!(1), 10_000))),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            assert_invalid(Pipeline::parse(&case), &format!("case {i}"));
            drop_value(case);
        }
    })
    .unwrap();
}

#[test]
fn binding_a_deep_event_is_refused() {
    on_small_stack(|| {
        let pipeline =
            Pipeline::parse(&json!([{"$match": {"$expr": {"$eq": ["this.a", 1]}}}])).unwrap();
        let mut event = Map::new();
        event.insert("a".into(), nest(json!(1), 10_000));
        assert_invalid(pipeline.bind_this(&event), "bind_this");
        drop_value(Value::Object(event));
    })
    .unwrap();
}
