//! Fuzz properties: hostile input (`conformance::hostile`) to every entry point of the API
//! that takes outside data, each case on a 256 KiB stack with a time limit. Each must answer
//! `Ok` or a typed error: no panic, no overflow, no hang. `FUZZ_CASES` sets the cases per
//! property (64 by default, what `cargo xtask test` runs); `cargo xtask fuzz --minutes N`
//! runs them for longer. The providers' side (documents stored exactly or refused, with
//! nothing changed) is the conformance property `hostile_documents_round_trip_or_are_refused`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use std::collections::HashMap;
use std::time::Duration;

use conformance::hostile::{self, drop_value, on_small_stack};
use datastore_api::{prepare_insert, DatastoreConfig, Document, Filter, Update, UpdateOp, Value};
use datastore_query::Pipeline;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn fail(why: String) -> TestCaseError {
    TestCaseError::fail(why)
}

/// A few documents for pipelines and filters to run over.
fn sample() -> Vec<Document> {
    (0..20)
        .map(|i| {
            let v = json!({
                "_id": format!("{i:024x}"), "a": i, "b": {"c": [i, "x", null]},
                "createdAt": {"$date": "2026-01-01T00:00:00.000Z"},
            });
            match v {
                Value::Object(m) => m,
                _ => Document::new(),
            }
        })
        .collect()
}

/// `[{stage: spec}]`, built without copying `spec`.
fn one_stage(stage: &str, spec: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(stage.to_owned(), spec);
    Value::Array(vec![Value::Object(m)])
}

fn stage_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "$match",
        "$addFields",
        "$set",
        "$project",
        "$unset",
        "$group",
        "$sort",
        "$limit",
        "$skip",
        "$count",
        "$unwind",
        "$lookup",
        "$setWindowFields",
        "$bogus",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pipelines_from_text(text in hostile::text()) {
        on_small_stack(move || {
            if let Ok(p) = Pipeline::from_json_str(&text) {
                let _ = p.with_max_time(Duration::from_secs(2)).run(sample());
            }
        })
        .map_err(fail)?;
    }

    #[test]
    fn pipelines_from_values(stage in stage_name(), spec in hostile::value()) {
        on_small_stack(move || {
            let pipeline = one_stage(stage, spec);
            if let Ok(p) = Pipeline::parse(&pipeline) {
                let _ = p.with_max_time(Duration::from_secs(2)).run(sample());
            }
            drop_value(pipeline);
        })
        .map_err(fail)?;
    }

    #[test]
    fn events_bound_into_rules(event in hostile::document()) {
        let event = event.0;
        on_small_stack(move || {
            let rule = json!([
                {"$match": {"$expr": {"$eq": ["this.v", "$a"]}}},
                {"$match": {"b.c": "this.k1"}},
                {"$addFields": {"x": "this.a.a"}}
            ]);
            let p = Pipeline::parse(&rule).expect("the rule parses");
            if let Ok(bound) = p.bind_this(&event) {
                let _ = bound.with_max_time(Duration::from_secs(2)).run(sample());
            }
            drop_value(Value::Object(event));
        })
        .map_err(fail)?;
    }

    #[test]
    fn queries(query in hostile::value()) {
        on_small_stack(move || {
            if let Ok(f) = Filter::from_query_json(&query) {
                if let Ok(lowered) = f.lower() {
                    sample().iter().for_each(|d| { let _ = lowered.matches(d); });
                }
            }
            drop_value(query);
        })
        .map_err(fail)?;
    }

    #[test]
    fn updates(path in hostile::key(), value in hostile::value(), by in hostile::number()) {
        on_small_stack(move || {
            let set = Update::new()
                .set(path.clone(), &value)
                .op(UpdateOp::Inc(format!("{path}.n"), by));
            let pushed = Update::new().op(UpdateOp::Push(path, value));
            for update in [set, pushed] {
                if let Ok(valid) = update.validate() {
                    let mut doc = sample().remove(0);
                    let _ = valid.apply(&mut doc, chrono::Utc::now());
                }
            }
        })
        .map_err(fail)?;
    }

    #[test]
    fn documents(doc in hostile::document()) {
        let doc = doc.0;
        on_small_stack(move || {
            let _ = prepare_insert(doc);
        })
        .map_err(fail)?;
    }

    #[test]
    fn configuration(
        vars in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "DATASTORE_PROVIDER", "DATASTORE_HOST", "DATASTORE_PORT", "DATASTORE_USERNAME",
                    "DATASTORE_SSLMODE", "DATASTORE_CONNECT_TIMEOUT", "DATASTORE_MAX_CONNECTIONS",
                    "DATASTORE_STATEMENT_TIMEOUT", "MONGODB_URI", "DATASTORE_HOSTS",
                ]),
                hostile::string(),
            ),
            0..8,
        ),
        yaml in hostile::text(),
    ) {
        on_small_stack(move || {
            let vars: HashMap<String, String> =
                vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let _ = DatastoreConfig::from_vars(&vars);
            let _ = DatastoreConfig::from_yaml(&yaml);
        })
        .map_err(fail)?;
    }
}
