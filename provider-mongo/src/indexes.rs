//! NVSentinel's indexes: created at connect, and verified (upstream #1814) where correctness
//! depends on them, the unique indexes behind idempotent inserts and the maintenance events'
//! business key. An index a deployment made itself on the same keys is kept; if it is not
//! what correctness needs (not unique, not partial), or still being built, connecting and
//! [`check_ready`](datastore_api::DataStore::check_ready) fail with an
//! [`IndexProblem`](datastore_api::IndexProblem).

use datastore_api::{IndexProblem, Result};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use crate::collection::MongoCollection;
use crate::convert::IDEMPOTENCY_FIELD;
use crate::error::{self, map_err};
use crate::{MongoDataStore, MongoSettings};

/// Creates NVSentinel's indexes (idempotent: `createIndexes` with unchanged definitions is
/// a no-op).
pub(crate) async fn create(store: &MongoDataStore, settings: &MongoSettings) -> Result<()> {
    let named = |keys, name: &str| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build()
    };
    let mut created_at = IndexOptions::builder()
        .name("createdAt_ttl".to_owned())
        .build();
    created_at.expire_after = settings.expiry;
    if settings.expiry.is_none() {
        created_at.name = Some("createdAt".to_owned());
    }
    let idempotency = || {
        IndexModel::builder()
            .keys(doc! { IDEMPOTENCY_FIELD: 1 })
            .options(
                IndexOptions::builder()
                    .name("idempotency_key_unique".to_owned())
                    .unique(true)
                    .partial_filter_expression(doc! { IDEMPOTENCY_FIELD: { "$exists": true } })
                    .build(),
            )
            .build()
    };
    let health = vec![
        IndexModel::builder()
            .keys(doc! { "createdAt": 1 })
            .options(created_at)
            .build(),
        named(doc! { "createdAt": 1, "_id": 1 }, "createdAt_id"),
        idempotency(),
        named(
            doc! {
                "healthevent.nodename": 1,
                "healthevent.entitiesimpacted.entitytype": 1,
                "healthevent.entitiesimpacted.entityvalue": 1,
                "healthevent.generatedtimestamp.seconds": 1,
            },
            "node_entities_generated",
        ),
        named(
            doc! { "healtheventstatus.nodequarantined": 1, "createdAt": 1 },
            "quarantine_status_createdAt",
        ),
        // The analyzer's rules: one node's events in a time window (as PostgreSQL's
        // migration 0005 indexes the window).
        named(
            doc! { "healthevent.nodename": 1, "healthevent.generatedtimestamp.seconds": 1 },
            "node_generated",
        ),
    ];
    ensure_indexes(&store.health, health).await?;
    let maintenance = vec![
        idempotency(),
        IndexModel::builder()
            .keys(doc! { "eventId": 1 })
            .options(
                IndexOptions::builder()
                    .name("eventId_unique".to_owned())
                    .unique(true)
                    .partial_filter_expression(doc! { "eventId": { "$exists": true } })
                    .build(),
            )
            .build(),
        named(doc! { "createdAt": 1, "_id": 1 }, "createdAt_id"),
        named(doc! { "scheduledStartTime": 1 }, "scheduledStartTime"),
        named(doc! { "cspStatus": 1 }, "cspStatus"),
    ];
    ensure_indexes(&store.maintenance, maintenance).await
}

/// Creates each index unless an equivalent one exists. An index on the same keys under
/// another name or with other options (one a deployment created itself, or a TTL changed since)
/// is left alone with a warning: creating indexes must not fail over it. [`verify`] then
/// refuses it only where correctness depends on it (the unique keys).
async fn ensure_indexes(collection: &MongoCollection, indexes: Vec<IndexModel>) -> Result<()> {
    for index in indexes {
        let name = index
            .options
            .as_ref()
            .and_then(|o| o.name.clone())
            .unwrap_or_default();
        match collection.inner.create_index(index).await {
            Ok(_) => {}
            // IndexOptionsConflict, IndexKeySpecsConflict.
            Err(e) if matches!(error::code_of(&e), Some(85 | 86)) => {
                tracing::warn!(collection = %collection.name, index = %name, error = %e,
                    "an index on the same keys with other options exists; keeping it");
            }
            Err(e) => return Err(map_err(e)),
        }
    }
    Ok(())
}

/// The unique, partial index on `field` (documents without it are not indexed) that
/// correctness needs.
fn required(store: &MongoDataStore) -> [(&MongoCollection, &'static str); 3] {
    [
        (&store.health, IDEMPOTENCY_FIELD),
        (&store.maintenance, IDEMPOTENCY_FIELD),
        (&store.maintenance, "eventId"),
    ]
}

/// The first problem with an index correctness needs, if any.
pub(crate) async fn verify(store: &MongoDataStore) -> Result<()> {
    for (collection, field) in required(store) {
        let specs = list(store, &collection.name).await?;
        let expected = format!("unique {{{field}: 1}}, partial on {{{field}: {{$exists: true}}}}");
        let same_key: Vec<&Document> = specs
            .iter()
            .filter(|s| {
                spec(s)
                    .get_document("key")
                    .is_ok_and(|k| ascending_on(k, field))
            })
            .collect();
        if same_key
            .iter()
            .any(|s| !s.contains_key("buildUUID") && usable(spec(s), field))
        {
            continue;
        }
        let name = |s: &Document| spec(s).get_str("name").unwrap_or_default().to_owned();
        let problem = match (
            same_key.iter().find(|s| s.contains_key("buildUUID")),
            same_key.first(),
        ) {
            (Some(b), _) => IndexProblem::Building {
                collection: collection.name.clone(),
                index: name(b),
            },
            (None, Some(found)) => IndexProblem::Mismatch {
                collection: collection.name.clone(),
                expected,
                found: format!("{} {}", name(found), describe(spec(found))),
            },
            (None, None) => IndexProblem::Missing {
                collection: collection.name.clone(),
                expected,
            },
        };
        return Err(problem.into_error());
    }
    Ok(())
}

/// Whether `key` is `{field: 1}`, whatever numeric type the 1 was written with.
fn ascending_on(key: &Document, field: &str) -> bool {
    let one = match key.get(field) {
        Some(Bson::Int32(n)) => i64::from(*n) == 1,
        Some(Bson::Int64(n)) => *n == 1,
        Some(Bson::Double(n)) => *n == 1.0,
        _ => false,
    };
    key.len() == 1 && one
}

/// An index entry's specification (an in-progress build lists it under `spec`).
fn spec(entry: &Document) -> &Document {
    entry.get_document("spec").unwrap_or(entry)
}

fn usable(spec: &Document, field: &str) -> bool {
    let unique = spec.get_bool("unique").unwrap_or(false);
    let partial = spec.get_document("partialFilterExpression").ok()
        == Some(&doc! { field: { "$exists": true } });
    unique && (partial || spec.get_bool("sparse").unwrap_or(false))
}

fn describe(spec: &Document) -> String {
    let unique = if spec.get_bool("unique").unwrap_or(false) {
        "unique"
    } else {
        "not unique"
    };
    match spec.get_document("partialFilterExpression") {
        Ok(p) => format!("({unique}, partial on {p})"),
        Err(_) => {
            format!("({unique}, not partial: every document without the field would collide)")
        }
    }
}

/// The collection's indexes, in-progress builds included where the server can say
/// (`includeBuildUUIDs`, MongoDB 4.4+); a collection that does not exist has none.
async fn list(store: &MongoDataStore, collection: &str) -> Result<Vec<Document>> {
    let with_builds = doc! { "listIndexes": collection, "includeBuildUUIDs": true };
    let reply = match store.database.run_command(with_builds).await {
        Ok(r) => r,
        Err(e) if error::code_of(&e) == Some(26) => return Ok(Vec::new()), // NamespaceNotFound
        Err(_) => store
            .database
            .run_command(doc! { "listIndexes": collection })
            .await
            .map_err(map_err)?,
    };
    let batch = reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .map(|b| b.iter().filter_map(Bson::as_document).cloned().collect())
        .unwrap_or_default();
    Ok(batch)
}
