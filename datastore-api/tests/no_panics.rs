//! Arbitrary input to every parser and validator of the API: each answers `Ok` or a typed
//! error, never a panic. Bounded (`NO_PANIC_CASES`, default 512 per target) so that
//! `cargo xtask test` stays fast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use datastore_api::config::parse_duration;
use datastore_api::{
    prepare_insert, DatastoreConfig, Document, DocumentId, FieldPath, Filter, Scalar, Update,
    UpdateOp, Value,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("NO_PANIC_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

/// Strings that look like paths, ids, durations and YAML as well as anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_$.0-9]{0,12}",
        "[0-9a-f]{20,28}",
        "[0-9]{0,4}(ms|s|m|h)?[0-9]{0,3}",
        "(provider|connection|options|global|datastore|: |\n  |- |\"|[a-z])*",
    ]
}

/// JSON values up to a few levels deep, with odd keys and numbers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        Just(Scalar::Null),
        any::<bool>().prop_map(Scalar::Bool),
        any::<i64>().prop_map(Scalar::Int),
        any::<f64>().prop_map(Scalar::Float),
        text().prop_map(Scalar::String),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn text_parsers_never_panic(s in text()) {
        let _ = FieldPath::parse(&s);
        let _ = DocumentId::parse(&s);
        let _ = parse_duration(&s);
        let _ = DatastoreConfig::from_yaml(&s);
    }

    #[test]
    fn filters_never_panic(
        path in text(),
        value in scalar(),
        values in prop::collection::vec(scalar(), 0..8),
    ) {
        let f = Filter::eq(path.clone(), value.clone())
            .and(Filter::gt(path.clone(), value))
            .or(Filter::is_in(path.clone(), values.clone()))
            .and(Filter::not_in(path.clone(), values).not())
            .or(Filter::exists(path, true));
        let _ = f.lower();
    }

    #[test]
    fn updates_never_panic(path in text(), value in json(), by in json()) {
        let u = Update::new()
            .set(path.clone(), &value)
            .push(format!("{path}.p"), &value)
            .op(UpdateOp::Inc(format!("{path}.n"), by))
            .unset(format!("{path}.u"));
        if let Ok(valid) = u.validate() {
            let mut doc = Document::new();
            doc.insert("x".into(), value);
            let _ = valid.apply(&mut doc, chrono::Utc::now());
        }
    }

    #[test]
    fn documents_never_panic(value in json()) {
        if let Value::Object(doc) = value {
            let _ = prepare_insert(doc);
        }
    }
}
