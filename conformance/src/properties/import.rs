//! `Collection::import`: documents keep their own `_id` and `createdAt`, a repeated import
//! writes nothing twice, and each document written is one insert to change streams.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore_api::value::{as_date, equivalent, CREATED_AT_FIELD, ID_FIELD};
use datastore_api::{
    Document, DocumentId, Filter, FindOptions, ImportDocument, StartFrom, Value, WatchOptions,
};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{check, ok};
use crate::{gen, Ctx};

/// Imported documents, split into batches, imported twice; then read back by id.
pub(super) fn imports_keep_ids_and_times_once(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let vocab = gen::Vocabulary::from(ctx.capabilities);
    let bodies = prop::collection::vec((gen::document(vocab), 0_i64..4_000_000_000_000), 1..12);
    let split = 1_usize..12;
    let coll = ctx.store.health_event_collection();
    let streams = ctx.capabilities.change_streams;
    check(ctx, (bodies, split), |(bodies, split)| {
        ctx.rt.block_on(async {
            // The model: what each document must read back as.
            let docs: Vec<(DocumentId, DateTime<Utc>, Document)> = bodies
                .into_iter()
                .map(|(body, ms)| {
                    let t = DateTime::from_timestamp_millis(ms).unwrap_or_default();
                    (DocumentId::generate(), t, body)
                })
                .collect();
            let prepared = |docs: &[(DocumentId, DateTime<Utc>, Document)]| {
                docs.iter()
                    .map(|(id, t, body)| {
                        let mut d = body.clone();
                        d.insert(ID_FIELD.into(), Value::String(id.to_string()));
                        d.insert(
                            CREATED_AT_FIELD.into(),
                            datastore_api::value::date_value(*t).unwrap_or_default(),
                        );
                        ImportDocument::prepare(d)
                    })
                    .collect::<datastore_api::Result<Vec<_>>>()
            };
            let mut stream = if streams {
                let options = WatchOptions::new(super::changes::unique("import"))
                    .start(StartFrom::Now)
                    .poll_interval(Duration::from_millis(5));
                Some(ok(coll.watch(options).await, "watch")?)
            } else {
                None
            };
            // The stream is opened before the reset, so the property does not lean on where
            // "now" falls among the reset's deletes: they are read first, then the imports.
            let deleted = ok(coll.delete_many(&Filter::All).await, "reset")?;
            prop_assert_eq!(ok(coll.count(&Filter::All).await, "count")?, 0, "reset");
            let split = split.min(docs.len());
            let (first, second) = docs.split_at(split);
            let mut inserted = 0;
            for part in [first, second] {
                let batch = ok(prepared(part), "prepare")?;
                inserted += ok(coll.import(batch).await, "import")?.inserted;
            }
            prop_assert_eq!(inserted, docs.len() as u64, "first import");
            let again = ok(
                coll.import(ok(prepared(&docs), "prepare")?).await,
                "import again",
            )?;
            prop_assert_eq!(
                (again.inserted, again.present),
                (0, docs.len() as u64),
                "second import"
            );
            for (id, t, body) in &docs {
                let found = ok(
                    coll.find(&Filter::eq(ID_FIELD, id.as_str()), &FindOptions::default())
                        .await,
                    "find",
                )?;
                prop_assert_eq!(found.len(), 1, "{} read back {} times", id, found.len());
                let mut stored = found.into_iter().next().unwrap_or_default();
                let created = stored.remove(CREATED_AT_FIELD).as_ref().and_then(as_date);
                prop_assert_eq!(created, Some(*t), "createdAt of {}", id);
                stored.remove(ID_FIELD);
                prop_assert!(
                    equivalent(&Value::Object(stored.clone()), &Value::Object(body.clone())),
                    "{} stored as {:?}, imported as {:?}",
                    id,
                    stored,
                    body
                );
            }
            prop_assert_eq!(
                ok(coll.count(&Filter::All).await, "count")?,
                docs.len() as u64
            );
            if let Some(stream) = stream.as_mut() {
                for _ in 0..deleted {
                    let change = next_change(stream, "a reset's delete was no change").await?;
                    prop_assert_eq!(change.operation.as_str(), "delete");
                }
                for (id, _, _) in &docs {
                    let change = next_change(stream, "an imported document was no change").await?;
                    prop_assert_eq!(change.operation.as_str(), "insert");
                    prop_assert!(
                        docs.iter().any(|(i, _, _)| *i == change.document_id),
                        "a change of {} was not imported",
                        id
                    );
                }
                let extra = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                prop_assert!(
                    extra.is_err(),
                    "a repeated import made a change: {:?}",
                    extra
                );
            }
            Ok(())
        })
    })
}

/// The stream's next change, or a failure saying `missing` when none comes within 30 s.
async fn next_change(
    stream: &mut datastore_api::ChangeStream,
    missing: &'static str,
) -> std::result::Result<datastore_api::ChangeEvent, TestCaseError> {
    let change = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .map_err(|_| TestCaseError::fail(missing))?
        .ok_or_else(|| TestCaseError::fail("the stream ended"))?;
    ok(change, "change")
}
