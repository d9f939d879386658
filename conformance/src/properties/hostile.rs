//! Hostile and careless input: each case is refused as `InvalidInput` (or, for large `In`
//! lists, answered correctly) and changes nothing, on every provider. Written from the API's
//! documented limits, not from the code that enforces them.

use datastore_api::{
    Collection, Document, ErrorKind, Filter, FindOptions, IdempotentOutcome, KeyedDocument, Result,
    Update, Value,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

use super::{check_cases, ok, reset};
use crate::Ctx;

type CaseResult = std::result::Result<(), TestCaseError>;

fn doc(v: Value) -> Document {
    match v {
        Value::Object(m) => m,
        _ => Document::new(),
    }
}

/// `r` must be an `InvalidInput` error.
fn refused<T: std::fmt::Debug>(r: Result<T>, what: &str) -> CaseResult {
    match r {
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!(
            "{what}: expected InvalidInput, got {:?}: {e}",
            e.kind()
        ))),
        Ok(v) => Err(TestCaseError::fail(format!(
            "{what}: expected InvalidInput, got Ok({v:?})"
        ))),
    }
}

/// A document whose field `deep` nests `levels` objects, built without recursion (`json!`
/// would serialize the inner value recursively).
fn deep_document(levels: usize) -> Document {
    let mut v = Value::from(1);
    for _ in 0..levels {
        let mut m = Document::new();
        m.insert("a".into(), v);
        v = Value::Object(m);
    }
    let mut d = Document::new();
    d.insert("deep".into(), v);
    d
}

pub(super) fn hostile_input_is_refused_and_changes_nothing(
    ctx: &Ctx<'_>,
) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    check_cases(1, 0, Just(()), |()| {
        ctx.rt.block_on(async {
            reset(coll).await?;
            reserved_names(coll).await?;
            bad_values(coll).await?;
            one_semantics(ctx).await?;
            errors_name_their_call(coll).await?;
            large_in_lists(coll).await
        })
    })
}

/// An error says, as context a caller can read, which operation on which collection of
/// which provider failed, and for a consumer call, which consumer.
async fn errors_name_their_call(coll: &dyn Collection) -> CaseResult {
    let bad = Filter::eq("_other", 1);
    let e = match coll.count(&bad).await {
        Err(e) => e,
        Ok(n) => return Err(TestCaseError::fail(format!("count on _other gave {n}"))),
    };
    let want = [
        ("operation", "count"),
        ("collection", coll.name()),
        ("provider", coll.operation_labels().provider),
    ];
    for (key, value) in want {
        prop_assert_eq!(e.context_value(key), Some(value), "{:?}", e);
    }
    if coll.change_feed().is_some() {
        let e = match coll.delete_consumer("").await {
            Err(e) => e,
            Ok(_) => return Err(TestCaseError::fail("an empty consumer name was accepted")),
        };
        prop_assert_eq!(e.context_value("operation"), Some("delete_consumer"));
    }
    Ok(())
}

/// Top-level names starting with `_` (other than `_id`) belong to the datastore (MongoDB keeps
/// idempotency keys there): no document, update or filter may use them, so no caller can
/// forge or hide another document's key.
async fn reserved_names(coll: &dyn Collection) -> CaseResult {
    let forged = doc(json!({ "_idempotencyKey": "k", "a": 1 }));
    refused(
        coll.insert_one(forged.clone()).await,
        "insert _idempotencyKey",
    )?;
    refused(
        coll.insert_one(doc(json!({ "_other": 1 }))).await,
        "insert _other",
    )?;
    let keyed = vec![KeyedDocument {
        key: "evil".into(),
        document: forged,
    }];
    refused(
        coll.insert_idempotent(keyed).await,
        "insert_idempotent _idempotencyKey",
    )?;
    refused(
        coll.update_many(&Filter::All, &Update::new().set("_idempotencyKey", "k"))
            .await,
        "update _idempotencyKey",
    )?;
    refused(
        coll.find(
            &Filter::exists("_idempotencyKey", true),
            &FindOptions::default(),
        )
        .await,
        "filter on _idempotencyKey",
    )?;
    prop_assert_eq!(ok(coll.count(&Filter::All).await, "count")?, 0);
    // The real owner of key "k" is stored, not reported as a duplicate of a forgery.
    let real = vec![KeyedDocument {
        key: "k".into(),
        document: doc(json!({ "a": 1 })),
    }];
    let outcome = ok(coll.insert_idempotent(real).await, "insert_idempotent")?;
    prop_assert!(
        matches!(outcome.as_slice(), [IdempotentOutcome::Inserted(_)]),
        "{:?}",
        outcome
    );
    Ok(())
}

/// Values no backend can store faithfully, and updates past the documented limits.
async fn bad_values(coll: &dyn Collection) -> CaseResult {
    let before = ok(coll.count(&Filter::All).await, "count")?;
    refused(
        coll.insert_one(deep_document(100_000)).await,
        "insert nested 100,000 levels",
    )?;
    refused(
        coll.update_many(&Filter::All, &Update::new().set("x", f64::NAN))
            .await,
        "set NaN",
    )?;
    refused(
        coll.update_many(&Filter::All, &Update::new().set("x", f64::INFINITY))
            .await,
        "set infinity",
    )?;
    let ops = (0..=datastore_api::update::MAX_UPDATE_OPS)
        .fold(Update::new(), |u, i| u.set(format!("f{i}"), i as i64));
    refused(
        coll.update_many(&Filter::All, &ops).await,
        "update over the operation cap",
    )?;
    let big = ok(
        coll.insert_one(doc(json!({ "n": i64::MAX }))).await,
        "insert",
    )?;
    let this = Filter::eq("_id", big.id.as_str());
    refused(
        coll.update_one(&this, &Update::new().inc("n", 1)).await,
        "inc past i64::MAX",
    )?;
    let stored = ok(coll.find(&this, &FindOptions::default()).await, "find")?;
    prop_assert_eq!(
        stored.first().and_then(|d| d.get("n")),
        Some(&json!(i64::MAX)),
        "a refused update changed the document"
    );
    prop_assert_eq!(ok(coll.count(&Filter::All).await, "count")?, before + 1);
    Ok(())
}

/// `In` lists: up to `MAX_IN_VALUES` answer exactly (more than PostgreSQL's 32-value threshold
/// for binding one array); a longer list is refused, never a driver failure.
async fn large_in_lists(coll: &dyn Collection) -> CaseResult {
    let max = datastore_api::filter::MAX_IN_VALUES as i64;
    ok(
        coll.insert_one(doc(json!({ "a": max - 1 }))).await,
        "insert",
    )?;
    ok(coll.insert_one(doc(json!({ "a": max }))).await, "insert")?;
    let values: Vec<i64> = (0..max).collect();
    let n = ok(
        coll.count(&Filter::is_in("a", values.clone())).await,
        "count of a large In",
    )?;
    // `a = 1` (the idempotent insert) and `a = max - 1`; not `max`.
    prop_assert_eq!(n, 2);
    let too_many: Vec<i64> = (0..70_000).collect();
    refused(
        coll.count(&Filter::is_in("a", too_many.clone())).await,
        "In with 70,000 values",
    )?;
    refused(
        coll.count(&Filter::not_in("a", too_many)).await,
        "Nin with 70,000 values",
    )?;
    Ok(())
}

/// Requests the providers once answered differently, answered as MongoDB does: conflicting
/// `$addFields` paths and a `$skip` past 64 bits refused, a document over 16 MiB refused, a
/// retention of forever and a watch from before all history accepted.
async fn one_semantics(ctx: &Ctx<'_>) -> CaseResult {
    use datastore_api::{RetentionPolicy, StartFrom, WatchOptions};
    use datastore_query::Pipeline;
    let coll = ctx.store.health_event_collection();
    let before = ok(coll.count(&Filter::All).await, "count")?;
    let parsed = |p: Value| Pipeline::parse(&p);
    refused(
        parsed(json!([{"$addFields": {"a": 1, "a.b": 2}}])),
        "$addFields of a and a.b",
    )?;
    refused(parsed(json!([{"$skip": u64::MAX}])), "$skip of u64::MAX")?;
    let mut big = Document::new();
    big.insert("big".into(), Value::String("x".repeat(17 * 1024 * 1024)));
    refused(coll.insert_one(big).await, "a 17 MiB document")?;
    let forever = RetentionPolicy {
        max_age: std::time::Duration::MAX,
        ..RetentionPolicy::default()
    };
    ok(
        ctx.store.prune_change_history(&forever).await,
        "prune with a max_age of Duration::MAX",
    )?;
    if ctx.capabilities.change_streams {
        let options = WatchOptions::new(super::changes::unique("from-the-start"))
            .start(StartFrom::Time(chrono::DateTime::<chrono::Utc>::MIN_UTC));
        let _stream = ok(coll.watch(options).await, "watch from DateTime::MIN_UTC")?;
    }
    prop_assert_eq!(ok(coll.count(&Filter::All).await, "count")?, before);
    Ok(())
}

/// Cases of [`hostile_documents_round_trip_or_are_refused`] (`FUZZ_CASES`, 32 by default;
/// `cargo xtask fuzz` raises it).
fn fuzz_cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(32, |n: u32| n / 2)
}

/// Hostile documents (`crate::hostile`): each `insert_one` either stores the document so that
/// it reads back equal to what was given (dates in their canonical form), or is refused as
/// `InvalidInput` with nothing stored.
pub(super) fn hostile_documents_round_trip_or_are_refused(
    ctx: &Ctx<'_>,
) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    check_cases(
        fuzz_cases().max(1),
        0,
        crate::hostile::document(),
        |shown| {
            let doc = shown.0;
            ctx.rt.block_on(async {
                let before = ok(coll.count(&Filter::All).await, "count")?;
                // The model: what the document reads back as, or None when it must be refused.
                let expected = datastore_api::prepare_insert(doc.clone())
                    .ok()
                    .map(|(_, body)| body);
                let shown = expected.as_ref().map(|b| {
                    let text = Value::Object(b.clone()).to_string();
                    text.chars().take(600).collect::<String>()
                });
                match (coll.insert_one(doc).await, expected) {
                    (Ok(inserted), Some(body)) => {
                        let found = ok_or_show(
                            coll.find(
                                &Filter::eq(datastore_api::value::ID_FIELD, inserted.id.as_str()),
                                &FindOptions::default(),
                            )
                            .await,
                            &shown,
                        )?;
                        let mut stored = found.into_iter().next().unwrap_or_default();
                        stored.remove(datastore_api::value::ID_FIELD);
                        stored.remove(datastore_api::value::CREATED_AT_FIELD);
                        prop_assert!(
                            datastore_api::value::equivalent(
                                &Value::Object(stored.clone()),
                                &Value::Object(body.clone())
                            ),
                            "stored as {:?}, given {:?}",
                            stored,
                            body
                        );
                        ok(coll.delete_many(&Filter::All).await, "clean up")?;
                    }
                    (Err(e), None) => {
                        prop_assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e);
                        prop_assert_eq!(ok(coll.count(&Filter::All).await, "count")?, before);
                    }
                    (Ok(_), None) => {
                        return Err(TestCaseError::fail("stored a document the API refuses"))
                    }
                    (Err(e), Some(_)) => {
                        return Err(TestCaseError::fail(format!(
                            "refused a document the API accepts: {e}; the document: {shown:?}"
                        )))
                    }
                }
                Ok(())
            })
        },
    )
}

/// `r`'s value, or a failure showing `shown` (the document concerned).
fn ok_or_show<T>(r: Result<T>, shown: &Option<String>) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("find failed: {e}; the document: {shown:?}")))
}
