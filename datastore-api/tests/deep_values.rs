//! Values nested far deeper than any limit, built in code (the JSON parser stops at 128
//! levels, so these never come from text): every entry point refuses them with a typed error,
//! and nothing recurses into them, whatever their keys. Each case runs on a 256 KiB stack, so
//! recursion that would only overflow a larger stack at a larger depth shows here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use datastore_api::prepare::prepare_keyed;
use datastore_api::{prepare_insert, ErrorKind, Filter, KeyedDocument, Update, UpdateOp, Value};
use serde_json::{json, Map};

const STACK: usize = 256 * 1024;

/// Runs `f` on a thread with a 256 KiB stack (an overflow aborts the test binary).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the case panicked");
}

/// `{"a": {"a": … 1 …}}`, `levels` objects deep, built without recursion.
fn deep_object(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        let mut o = Map::new();
        o.insert("a".into(), v);
        v = Value::Object(o);
    }
    v
}

/// A date wrapper with a deep sibling: `{"$date": "2020-…", "a": <deep>}`.
fn date_wrapped(levels: usize) -> Value {
    let mut o = Map::new();
    o.insert("$date".into(), json!("2020-01-01T00:00:00Z"));
    o.insert("a".into(), deep_object(levels));
    Value::Object(o)
}

/// `{name: value}`.
fn field(name: &str, value: Value) -> Value {
    let mut o = Map::new();
    o.insert(name.into(), value);
    Value::Object(o)
}

fn assert_invalid<T: std::fmt::Debug>(r: datastore_api::Result<T>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}"),
        Ok(v) => panic!("{what}: accepted: {v:?}"),
    }
}

#[test]
fn a_date_wrapper_does_not_hide_a_deep_value_from_inserts() {
    on_small_stack(|| {
        let mut doc = Map::new();
        doc.insert("x".into(), date_wrapped(100_000));
        assert_invalid(prepare_insert(doc), "prepare_insert");
    });
}

#[test]
fn a_date_wrapper_does_not_hide_a_deep_value_from_updates() {
    on_small_stack(|| {
        let update = Update::new().op(UpdateOp::Set("x".into(), date_wrapped(100_000)));
        assert_invalid(update.validate().map(|_| ()), "Update::op(Set)");
    });
}

#[test]
fn a_date_wrapper_at_the_depth_limit_is_still_a_date() {
    // 63 objects, then the wrapper at level 64: its string is at 65 and does not count.
    on_small_stack(|| {
        let mut v = json!({"$date": "2020-01-01T00:00:00Z"});
        for _ in 0..63 {
            v = field("a", v);
        }
        let doc = match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        };
        assert!(prepare_insert(doc).is_ok());
    });
}

#[test]
fn a_deep_not_chain_drops_and_is_refused() {
    on_small_stack(|| {
        let mut f = Filter::eq("a", 1);
        for _ in 0..100_000 {
            f = Filter::not(f);
        }
        assert_invalid(f.lower(), "lower");
        drop(f);
    });
}

#[test]
fn keyed_batches_with_deep_documents_fail_cleanly() {
    // A refused key or document, and deep documents after it (or under the refused key):
    // nothing left in the batch may be dropped recursively.
    on_small_stack(|| {
        let keyed = |key: &str, levels: usize| KeyedDocument {
            key: key.into(),
            document: match field("a", deep_object(levels)) {
                Value::Object(o) => o,
                _ => unreachable!(),
            },
        };
        for batch in [
            vec![keyed("", 1), keyed("k", 100_000)],
            vec![keyed("k", 100_000), keyed("j", 100_000)],
            vec![keyed("", 100_000)],
        ] {
            assert_invalid(prepare_keyed(batch), "prepare_keyed");
        }
        assert!(prepare_keyed(vec![keyed("k", 3), keyed("j", 3)]).is_ok());
    });
}
