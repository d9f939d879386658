//! The properties. Each is generic over the provider: it only sees `dyn DataStore`.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use datastore_api::value::{as_date, equivalent, CREATED_AT_FIELD, ID_FIELD};
use datastore_api::{
    batches, with_transaction, Collection, Direction, Document, DocumentId, ErrorKind, Filter,
    FindOptions, IdempotentOutcome, KeyedDocument, PageRequest, Result, TimeFormat, Update, Value,
};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::json;

use crate::gen;
use crate::model::{same_documents, same_outcome, Model};
use crate::{Capabilities, Capability, Ctx, Property};

mod aggregate;
mod changes;
mod concurrent;
mod consumers;
mod domain;
mod hostile;
mod import;
mod processor;
mod rules;
mod watchers;

/// Every property, in report order.
pub const ALL: &[Property] = &[
    Property {
        name: "crud_sequences_match_model",
        needs: &[],
        narrowed_by: &[
            Capability::PushUpdate,
            Capability::NumericEquality,
            Capability::IndexFieldsInArrays,
            Capability::ExpressionArrayPaths,
        ],
        run: crud_sequences_match_model,
    },
    Property {
        name: "filters_and_sorts_match_model",
        needs: &[],
        narrowed_by: &[
            Capability::NumericEquality,
            Capability::IndexFieldsInArrays,
            Capability::ExpressionArrayPaths,
        ],
        run: filters_and_sorts_match_model,
    },
    Property {
        name: "keyset_pages_stable_under_writes",
        needs: &[],
        narrowed_by: &[],
        run: keyset_pages_stable_under_writes,
    },
    Property {
        name: "current_date_is_server_time",
        needs: &[],
        narrowed_by: &[],
        run: current_date_is_server_time,
    },
    Property {
        name: "transactions_are_atomic",
        needs: &[Capability::Transactions],
        narrowed_by: &[
            Capability::PushUpdate,
            Capability::NumericEquality,
            Capability::IndexFieldsInArrays,
            Capability::ExpressionArrayPaths,
        ],
        run: transactions_are_atomic,
    },
    Property {
        name: "concurrent_increments_are_exact",
        needs: &[],
        narrowed_by: &[Capability::IsolatedTransactions],
        run: concurrent::concurrent_increments_are_exact,
    },
    Property {
        name: "change_streams_match_committed_history",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[
            Capability::PushUpdate,
            Capability::NumericEquality,
            Capability::IndexFieldsInArrays,
            Capability::ExpressionArrayPaths,
        ],
        run: changes::change_streams_match_committed_history,
    },
    Property {
        name: "late_commits_delivered_without_gaps",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: changes::late_commits_delivered_without_gaps,
    },
    Property {
        name: "leases_lag_and_retention",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[Capability::ProviderRetention],
        run: changes::leases_lag_and_retention,
    },
    Property {
        name: "watcher_filters_match_nvsentinel",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: watchers::watcher_filters_match_nvsentinel,
    },
    Property {
        name: "processor_handles_every_change",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: processor::processor_handles_every_change,
    },
    Property {
        name: "processor_failure_policies",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: processor::processor_failure_policies,
    },
    Property {
        name: "consumer_admin",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: consumers::consumer_admin,
    },
    Property {
        name: "hostile_documents_round_trip_or_are_refused",
        needs: &[],
        narrowed_by: &[],
        run: hostile::hostile_documents_round_trip_or_are_refused,
    },
    Property {
        name: "checkpoints_refuse_tokens_not_issued_here",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: consumers::checkpoints_refuse_tokens_not_issued_here,
    },
    Property {
        name: "reopened_stream_delivers_at_once",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: consumers::reopened_stream_delivers_at_once,
    },
    Property {
        name: "lag_metric_rises_while_stopped",
        needs: &[Capability::ChangeStreams],
        narrowed_by: &[],
        run: consumers::lag_metric_rises_while_stopped,
    },
    Property {
        name: "aggregation_matches_evaluator",
        needs: &[Capability::Aggregation],
        narrowed_by: &[Capability::CountOfNothingIsEmpty],
        run: aggregate::aggregation_matches_evaluator,
    },
    Property {
        name: "analyzer_rules_match_model",
        needs: &[Capability::Aggregation],
        narrowed_by: &[],
        run: rules::analyzer_rules_match_model,
    },
    Property {
        name: "health_event_domain_methods",
        needs: &[],
        narrowed_by: &[],
        run: domain::health_event_domain_methods,
    },
    Property {
        name: "maintenance_event_domain_methods",
        needs: &[],
        narrowed_by: &[],
        run: domain::maintenance_event_domain_methods,
    },
    Property {
        name: "imports_keep_ids_and_times_once",
        needs: &[],
        narrowed_by: &[Capability::ChangeStreams],
        run: import::imports_keep_ids_and_times_once,
    },
    Property {
        name: "hostile_input_is_refused_and_changes_nothing",
        needs: &[],
        narrowed_by: &[],
        run: hostile::hostile_input_is_refused_and_changes_nothing,
    },
];

/// Runs a proptest strategy with `ctx.cases` cases; failures come back as a readable report.
pub(crate) fn check<S: Strategy>(
    ctx: &Ctx<'_>,
    strategy: S,
    test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
) -> std::result::Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    check_cases(ctx.cases, shrink_iters(), strategy, test)
}

/// Shrink iterations: `CONFORMANCE_SHRINK` (default 256).
pub(crate) fn shrink_iters() -> u32 {
    std::env::var("CONFORMANCE_SHRINK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// [`check`] with an explicit case count (for properties whose cases wait on time, which also
/// shrink less: a failing case there can take seconds to run).
pub(crate) fn check_cases<S: Strategy>(
    cases: u32,
    max_shrink_iters: u32,
    strategy: S,
    test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
) -> std::result::Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters,
        ..Config::default()
    });
    match runner.run(&strategy, test) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, input)) => {
            Err(format!("{why}\n  minimal failing input: {input:#?}"))
        }
        Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
    }
}

/// Turns a comparison error into a test failure with context.
pub(crate) fn fail_ctx(what: &str) -> impl Fn(String) -> TestCaseError + '_ {
    move |m| TestCaseError::fail(format!("{what}: {m}"))
}

pub(crate) fn ok<T>(r: Result<T>, what: &str) -> std::result::Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed: {e}")))
}

/// Deletes everything and checks the collection is empty.
pub(crate) async fn reset(coll: &dyn Collection) -> std::result::Result<(), TestCaseError> {
    ok(coll.delete_many(&Filter::All).await, "reset")?;
    let left = ok(coll.count(&Filter::All).await, "count after reset")?;
    prop_assert_eq!(left, 0, "reset left documents behind");
    Ok(())
}

/// Every stored document, by `_id`.
pub(crate) async fn snapshot(coll: &dyn Collection) -> Result<Vec<Document>> {
    coll.find(&Filter::All, &FindOptions::default()).await
}

fn with_reserved(mut body: Document, id: &DocumentId, created_at: DateTime<Utc>) -> Document {
    body.insert(ID_FIELD.into(), Value::String(id.to_string()));
    body.insert(
        CREATED_AT_FIELD.into(),
        datastore_api::value::date_value(created_at).unwrap_or(Value::Null),
    );
    body
}

fn canonical(doc: &Document) -> Document {
    let mut v = Value::Object(doc.clone());
    let _ = datastore_api::value::canonicalize(&mut v);
    match v {
        Value::Object(m) => m,
        _ => doc.clone(),
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Corruption {
    None,
    BadKey,
    DuplicateId,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    InsertMany(Vec<Document>, Corruption),
    InsertIdempotent(Vec<(u8, Document)>),
    Find(Filter, FindOptions),
    Count(Filter),
    Distinct(String, Filter),
    UpdateOne(Filter, Update),
    UpdateMany(Filter, Update),
    Delete(Filter),
    InvalidFilter(Filter),
    Walk(Filter, u32, bool),
    CreatedAtRange(prop::sample::Index, u8),
}

pub(crate) fn op(caps: Capabilities) -> impl Strategy<Value = Op> {
    let vocab = gen::Vocabulary::from(caps);
    let corruption = prop_oneof![8 => Just(Corruption::None), 1 => Just(Corruption::BadKey), 1 => Just(Corruption::DuplicateId)];
    prop_oneof![
        4 => (prop::collection::vec(gen::document(vocab), 1..4), corruption).prop_map(|(d, c)| Op::InsertMany(d, c)),
        2 => prop::collection::vec((0u8..4, gen::document(vocab)), 1..4).prop_map(Op::InsertIdempotent),
        4 => (gen::filter(vocab), gen::find_options()).prop_map(|(f, o)| Op::Find(f, o)),
        1 => gen::filter(vocab).prop_map(Op::Count),
        1 => (prop::sample::select(gen::PATHS), gen::filter(vocab)).prop_map(|(p, f)| Op::Distinct(p.to_owned(), f)),
        2 => (gen::filter(vocab), gen::update(vocab)).prop_map(|(f, u)| Op::UpdateOne(f, u)),
        2 => (gen::filter(vocab), gen::update(vocab)).prop_map(|(f, u)| Op::UpdateMany(f, u)),
        1 => gen::filter(vocab).prop_map(Op::Delete),
        1 => gen::invalid_filter().prop_map(Op::InvalidFilter),
        1 => (gen::filter(vocab), 1u32..4, any::<bool>()).prop_map(|(f, s, a)| Op::Walk(f, s, a)),
        1 => (any::<prop::sample::Index>(), 0u8..4).prop_map(|(i, k)| Op::CreatedAtRange(i, k)),
    ]
}

/// Random sequences of every generic operation give the model's results, errors included, and
/// leave the same state; failed operations change nothing.
fn crud_sequences_match_model(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    check(
        ctx,
        prop::collection::vec(op(ctx.capabilities), 1..16),
        |ops| {
            ctx.rt.block_on(async {
                reset(coll).await?;
                let mut model = Model::default();
                let mut keys: HashMap<String, DocumentId> = HashMap::new();
                for (step, op) in ops.into_iter().enumerate() {
                    let at = format!("step {step} ({op:?})");
                    run_op(coll, &mut model, &mut keys, op)
                        .await
                        .map_err(fail_ctx(&at))?;
                }
                let got = snapshot(coll).await;
                same_documents(&got, &Ok(model.snapshot())).map_err(fail_ctx("final state"))
            })
        },
    )
}

pub(crate) async fn run_op(
    coll: &dyn Collection,
    model: &mut Model,
    keys: &mut HashMap<String, DocumentId>,
    op: Op,
) -> std::result::Result<(), String> {
    let mutating = matches!(
        op,
        Op::InsertMany(..)
            | Op::InsertIdempotent(_)
            | Op::UpdateOne(..)
            | Op::UpdateMany(..)
            | Op::Delete(_)
    );
    let mut failed = false;
    match op {
        Op::InsertMany(mut docs, corruption) => {
            let expect_err = match corruption {
                Corruption::None => None,
                Corruption::BadKey => {
                    docs.push(serde_json::from_value(json!({"$bad": 1})).unwrap_or_default());
                    Some(ErrorKind::InvalidInput)
                }
                Corruption::DuplicateId => match model.docs.first() {
                    Some(existing) => {
                        let id = existing.get(ID_FIELD).cloned().unwrap_or(Value::Null);
                        docs.last_mut().map(|d| d.insert(ID_FIELD.into(), id));
                        Some(ErrorKind::Duplicate)
                    }
                    None => None,
                },
            };
            let r = coll.insert_many(docs.clone()).await;
            match (r, expect_err) {
                (Ok(ins), None) => {
                    if ins.len() != docs.len() {
                        return Err(format!(
                            "inserted {} of {} documents",
                            ins.len(),
                            docs.len()
                        ));
                    }
                    model.insert_batch(
                        docs.iter()
                            .zip(&ins)
                            .map(|(d, i)| with_reserved(canonical(d), &i.id, i.created_at))
                            .collect(),
                    );
                }
                (Err(e), Some(kind)) if e.kind() == kind => failed = true,
                (r, expect) => {
                    return Err(format!(
                        "insert_many returned {r:?}, expected error {expect:?}"
                    ))
                }
            }
        }
        Op::InsertIdempotent(items) => {
            let keyed: Vec<KeyedDocument> = items
                .iter()
                .map(|(k, d)| KeyedDocument {
                    key: format!("key-{k}"),
                    document: d.clone(),
                })
                .collect();
            let out = coll
                .insert_idempotent(keyed.clone())
                .await
                .map_err(|e| format!("insert_idempotent: {e}"))?;
            if out.len() != keyed.len() {
                return Err("insert_idempotent returned the wrong number of outcomes".into());
            }
            let mut batch = Vec::new();
            for (kd, o) in keyed.iter().zip(&out) {
                match (keys.get(&kd.key), o) {
                    (None, IdempotentOutcome::Inserted(ins)) => {
                        keys.insert(kd.key.clone(), ins.id.clone());
                        batch.push(with_reserved(
                            canonical(&kd.document),
                            &ins.id,
                            ins.created_at,
                        ));
                    }
                    (Some(owner), IdempotentOutcome::Duplicate(id)) if owner == id => {}
                    (expected, got) => {
                        return Err(format!(
                            "key {}: owner {expected:?}, provider says {got:?}",
                            kd.key
                        ))
                    }
                }
            }
            model.insert_batch(batch);
        }
        Op::Find(f, o) => same_documents(&coll.find(&f, &o).await, &model.find(&f, &o))?,
        Op::Count(f) => same_outcome(&coll.count(&f).await, &model.count(&f))?,
        Op::Distinct(p, f) => {
            let got = coll.distinct(&p, &f).await;
            let want = model.distinct(&p, &f);
            let same = match (&got, &want) {
                (Ok(a), Ok(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equivalent(x, y))
                }
                (Err(a), Err(b)) => a.kind() == b.kind(),
                _ => false,
            };
            if !same {
                return Err(format!("distinct: provider {got:?}, model {want:?}"));
            }
        }
        Op::UpdateOne(f, u) => {
            let got = coll.update_one(&f, &u).await;
            let want = model.update(&f, &u, true, Utc::now());
            failed = want.is_err();
            same_outcome(&got, &want)?;
        }
        Op::UpdateMany(f, u) => {
            let got = coll.update_many(&f, &u).await;
            let want = model.update(&f, &u, false, Utc::now());
            failed = want.is_err();
            same_outcome(&got, &want)?;
        }
        Op::Delete(f) => {
            same_outcome(&coll.delete_many(&f).await, &model.delete(&f))?;
            let alive: Vec<String> = model
                .docs
                .iter()
                .filter_map(|d| d.get(ID_FIELD).and_then(Value::as_str).map(str::to_owned))
                .collect();
            keys.retain(|_, id| alive.iter().any(|a| a == id.as_str()));
        }
        Op::InvalidFilter(f) => {
            let r = coll.find(&f, &FindOptions::default()).await;
            if !matches!(&r, Err(e) if e.kind() == ErrorKind::InvalidInput) {
                return Err(format!("invalid filter gave {r:?}, expected InvalidInput"));
            }
            let r = coll.delete_many(&f).await;
            if !matches!(&r, Err(e) if e.kind() == ErrorKind::InvalidInput) {
                return Err(format!(
                    "delete with invalid filter gave {r:?}, expected InvalidInput"
                ));
            }
        }
        Op::CreatedAtRange(pick, kind) => {
            if let Some(doc) = model.docs.get(pick.index(model.docs.len().max(1))) {
                let t = doc
                    .get(CREATED_AT_FIELD)
                    .and_then(as_date)
                    .ok_or("document without createdAt")?;
                let f = match kind {
                    0 => Filter::gt(CREATED_AT_FIELD, t),
                    1 => Filter::gte(CREATED_AT_FIELD, t),
                    2 => Filter::lt(CREATED_AT_FIELD, t),
                    _ => Filter::lte(CREATED_AT_FIELD, t),
                };
                let o = FindOptions::sorted(datastore_api::Sort::newest_first());
                same_documents(&coll.find(&f, &o).await, &model.find(&f, &o))?;
            }
        }
        Op::Walk(f, size, ascending) => {
            let mut req = first_page(ascending, size);
            let want = model.keyset_order(&f, &req).map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut pages = 0;
            loop {
                let page = coll
                    .find_page(&f, &req)
                    .await
                    .map_err(|e| format!("find_page: {e}"))?;
                pages += 1;
                if page.documents.len() > size as usize {
                    return Err("a page exceeded its size".into());
                }
                got.extend(page.documents);
                match page.next {
                    Some(t) => req.after = Some(t),
                    None => break,
                }
                if pages > 1000 {
                    return Err("keyset walk does not end".into());
                }
            }
            let expected_pages = want.len().div_ceil(size as usize).max(1);
            if pages != expected_pages {
                return Err(format!(
                    "walk took {pages} pages, expected {expected_pages}"
                ));
            }
            same_documents(&Ok(got), &Ok(want))?;
        }
    }
    if mutating && failed {
        same_documents(&snapshot(coll).await, &Ok(model.snapshot()))
            .map_err(|m| format!("a failed write changed data: {m}"))?;
    }
    Ok(())
}

/// Many random filters and sorts over one random document set.
fn filters_and_sorts_match_model(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    let vocab = gen::Vocabulary::from(ctx.capabilities);
    let strategy = (
        prop::collection::vec(gen::document(vocab), 0..14),
        prop::collection::vec((gen::filter(vocab), gen::find_options()), 1..12),
    );
    check(ctx, strategy, |(docs, queries)| {
        ctx.rt.block_on(async {
            reset(coll).await?;
            let mut model = Model::default();
            let ins = ok(coll.insert_many(docs.clone()).await, "insert_many")?;
            for (d, i) in docs.iter().zip(&ins) {
                model.insert(with_reserved(canonical(d), &i.id, i.created_at));
            }
            for (f, o) in &queries {
                same_documents(&coll.find(f, o).await, &model.find(f, o))
                    .map_err(fail_ctx(&format!("find {f:?} {o:?}")))?;
                same_outcome(&coll.count(f).await, &model.count(f))
                    .map_err(fail_ctx(&format!("count {f:?}")))?;
            }
            Ok(())
        })
    })
}

/// A keyset walk returns every document that matched throughout and existed at the start
/// exactly once, and no document twice, while documents are inserted, updated (including the
/// filtered field) and deleted between pages.
fn keyset_pages_stable_under_writes(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    #[derive(Debug, Clone)]
    enum Write {
        Insert(i64),
        Touch(usize),
        Flip(usize),
        Delete(usize),
    }
    let write = prop_oneof![
        (0i64..2).prop_map(Write::Insert),
        (0usize..64).prop_map(Write::Touch),
        (0usize..64).prop_map(Write::Flip),
        (0usize..64).prop_map(Write::Delete),
    ];
    let strategy = (
        prop::collection::vec(0i64..2, 1..30),
        1u32..5,
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(write, 0..4), 0..30),
    );
    check(ctx, strategy, |(initial, size, ascending, writes)| {
        ctx.rt.block_on(async {
            reset(coll).await?;
            let docs: Vec<Document> = initial
                .iter()
                .map(|k| serde_json::from_value(json!({"k": k, "u": 0})).unwrap_or_default())
                .collect();
            let ins = ok(coll.insert_many(docs).await, "insert")?;
            let mut ids: Vec<DocumentId> = ins.iter().map(|i| i.id.clone()).collect();
            let mut unstable: Vec<DocumentId> = Vec::new();
            let filter = Filter::eq("k", 1);
            let mut req = first_page(ascending, size);
            let mut seen: Vec<DocumentId> = Vec::new();
            let mut writes = writes.into_iter();
            loop {
                let page = ok(coll.find_page(&filter, &req).await, "find_page")?;
                for d in &page.documents {
                    let id = d.get(ID_FIELD).and_then(Value::as_str).unwrap_or_default();
                    seen.push(ok(DocumentId::parse(id), "id")?);
                }
                let Some(next) = page.next else { break };
                req.after = Some(next);
                for w in writes.next().unwrap_or_default() {
                    let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
                    match w {
                        Write::Insert(k) => {
                            let d: Document =
                                serde_json::from_value(json!({"k": k, "u": 0})).unwrap_or_default();
                            ids.push(ok(coll.insert_one(d).await, "insert_one")?.id);
                        }
                        Write::Touch(i) => {
                            if let Some(id) = pick(i) {
                                let f = Filter::eq(ID_FIELD, id.as_str());
                                ok(
                                    coll.update_one(&f, &Update::new().inc("u", 1)).await,
                                    "touch",
                                )?;
                            }
                        }
                        Write::Flip(i) | Write::Delete(i) if ids.is_empty() => {
                            let _ = i;
                        }
                        Write::Flip(i) => {
                            if let Some(id) = pick(i) {
                                let f = Filter::eq(ID_FIELD, id.as_str());
                                ok(
                                    coll.update_one(&f, &Update::new().inc("k", 1)).await,
                                    "flip",
                                )?;
                                unstable.push(id);
                            }
                        }
                        Write::Delete(i) => {
                            if let Some(id) = pick(i) {
                                ok(
                                    coll.delete_many(&Filter::eq(ID_FIELD, id.as_str())).await,
                                    "delete",
                                )?;
                                unstable.push(id);
                            }
                        }
                    }
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), seen.len(), "a document was returned twice");
            for (i, k) in ins.iter().zip(&initial) {
                if *k == 1 && !unstable.contains(&i.id) {
                    prop_assert!(seen.contains(&i.id), "document {} was skipped", i.id);
                }
            }
            Ok(())
        })
    })
}

/// `CurrentDate` writes the database server's time in both formats, and `createdAt` comes from
/// the same clock.
fn current_date_is_server_time(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    check(ctx, Just(()), |()| {
        ctx.rt.block_on(async {
            let before = ok(coll.server_time().await, "server_time")?;
            let ins = ok(coll.insert_one(Document::new()).await, "insert")?;
            let u = Update::new()
                .current_date("d", TimeFormat::Date)
                .current_date("p.t", TimeFormat::ProtoTimestamp);
            let r = ok(
                coll.update_one(&Filter::eq(ID_FIELD, ins.id.as_str()), &u)
                    .await,
                "update",
            )?;
            prop_assert_eq!((r.matched, r.modified), (1, 1));
            let after = ok(coll.server_time().await, "server_time")?;
            let docs = ok(
                coll.find(
                    &Filter::eq(ID_FIELD, ins.id.as_str()),
                    &FindOptions::default(),
                )
                .await,
                "find",
            )?;
            let doc = docs
                .first()
                .ok_or_else(|| TestCaseError::fail("document vanished"))?;
            let lo = datastore_api::value::truncate_to_millis(before);
            let d = doc
                .get("d")
                .and_then(as_date)
                .ok_or_else(|| TestCaseError::fail("d is not a date"))?;
            prop_assert!(
                lo <= d && d <= after,
                "CurrentDate {} outside [{}, {}]",
                d,
                lo,
                after
            );
            prop_assert!(
                lo <= ins.created_at && ins.created_at <= after,
                "createdAt {} outside server window",
                ins.created_at
            );
            let created = doc.get(CREATED_AT_FIELD).and_then(as_date);
            prop_assert_eq!(created, Some(ins.created_at));
            let p = &doc["p"]["t"];
            let secs = p["seconds"].as_i64().unwrap_or(-1);
            let nanos = p["nanos"].as_i64().unwrap_or(-1);
            let t = DateTime::from_timestamp(secs, nanos as u32)
                .ok_or_else(|| TestCaseError::fail("bad proto timestamp"))?;
            prop_assert!(
                lo <= t && t <= after,
                "proto timestamp {} outside window",
                t
            );
            prop_assert_eq!(
                nanos % 1_000_000,
                0,
                "timestamps have millisecond precision"
            );
            Ok(())
        })
    })
}

/// Writes to both collections inside a transaction are invisible outside until commit, visible
/// inside, and all discarded on rollback (also when the body of `with_transaction` fails).
fn transactions_are_atomic(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let store = &ctx.store;
    let vocab = gen::Vocabulary::from(ctx.capabilities);
    let strategy = (
        prop::collection::vec(gen::document(vocab), 1..4),
        prop::collection::vec(gen::document(vocab), 1..3),
        gen::update(vocab),
        0u8..3,
    );
    check(
        ctx,
        strategy,
        |(health_docs, maint_docs, update, ending)| {
            ctx.rt.block_on(async {
                let hc = store.health_event_collection();
                let mc = store.maintenance_event_collection();
                reset(hc).await?;
                reset(mc).await?;
                let seed = ok(
                    hc.insert_one(
                        serde_json::from_value(json!({"seed": true})).unwrap_or_default(),
                    )
                    .await,
                    "seed",
                )?;
                let before_h = ok(snapshot(hc).await, "snapshot")?;
                let tx = ok(store.begin().await, "begin")?;
                let n_h = health_docs.len() as u64;
                ok(
                    tx.health_event_collection().insert_many(health_docs).await,
                    "tx insert health",
                )?;
                ok(
                    tx.maintenance_event_collection()
                        .insert_many(maint_docs.clone())
                        .await,
                    "tx insert maintenance",
                )?;
                let upd = tx
                    .health_event_collection()
                    .update_many(&Filter::eq(ID_FIELD, seed.id.as_str()), &update)
                    .await;
                prop_assert_eq!(
                    ok(
                        tx.health_event_collection().count(&Filter::All).await,
                        "tx count"
                    )?,
                    n_h + 1
                );
                prop_assert_eq!(
                    ok(hc.count(&Filter::All).await, "outside count")?,
                    1,
                    "uncommitted rows visible outside"
                );
                match ending {
                    0 => {
                        ok(tx.commit().await, "commit")?;
                        prop_assert_eq!(ok(hc.count(&Filter::All).await, "count")?, n_h + 1);
                        prop_assert_eq!(
                            ok(mc.count(&Filter::All).await, "count")?,
                            maint_docs.len() as u64
                        );
                        if upd.is_ok() {
                            let mut model = Model {
                                docs: before_h,
                                ..Model::default()
                            };
                            let _ = model.update(
                                &Filter::eq(ID_FIELD, seed.id.as_str()),
                                &update,
                                false,
                                Utc::now(),
                            );
                            let got = ok(
                                hc.find(
                                    &Filter::eq(ID_FIELD, seed.id.as_str()),
                                    &FindOptions::default(),
                                )
                                .await,
                                "find",
                            )?;
                            same_documents(&Ok(got), &Ok(model.snapshot()))
                                .map_err(fail_ctx("committed update"))?;
                        }
                    }
                    1 => {
                        ok(tx.rollback().await, "rollback")?;
                        same_documents(&snapshot(hc).await, &Ok(before_h))
                            .map_err(fail_ctx("after rollback"))?;
                        prop_assert_eq!(ok(mc.count(&Filter::All).await, "count")?, 0);
                    }
                    _ => {
                        drop(tx);
                        let r: Result<()> = with_transaction(store.as_ref(), |tx| {
                            Box::pin(async move {
                                tx.maintenance_event_collection()
                                    .insert_one(Document::new())
                                    .await?;
                                tx.health_event_collection()
                                    .find(&Filter::eq("a..b", 1), &FindOptions::default())
                                    .await?;
                                Ok(())
                            })
                        })
                        .await;
                        prop_assert!(
                            matches!(&r, Err(e) if e.kind() == ErrorKind::InvalidInput),
                            "body error not returned: {:?}",
                            r
                        );
                        same_documents(&snapshot(hc).await, &Ok(before_h))
                            .map_err(fail_ctx("after dropped tx"))?;
                        prop_assert_eq!(
                            ok(mc.count(&Filter::All).await, "count")?,
                            0,
                            "failed with_transaction body was committed"
                        );
                    }
                }
                Ok(())
            })
        },
    )
}

/// The first page of a walk in the given order.
fn first_page(ascending: bool, size: u32) -> PageRequest {
    let direction = if ascending {
        Direction::Ascending
    } else {
        Direction::Descending
    };
    PageRequest {
        direction,
        size,
        after: None,
    }
}

/// Collects a batched stream into one list.
pub(crate) async fn collect_batches(
    coll: &dyn Collection,
    filter: Filter,
    size: u32,
) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    let mut s = batches(coll, filter, size);
    while let Some(b) = s.next().await {
        let b = b?;
        if b.is_empty() || b.len() > size as usize {
            return Err(datastore_api::Error::permanent("batch size out of bounds"));
        }
        out.extend(b);
    }
    Ok(out)
}

pub(crate) fn chrono_minutes(m: i64) -> ChronoDuration {
    ChronoDuration::minutes(m)
}
