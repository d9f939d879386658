//! The store traits every provider implements.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};

use crate::change::{
    ChangeStream, ConsumerInfo, Lag, ResumeToken, RetentionPolicy, StartFrom, WatchOptions,
};
use crate::domain::{HealthEventStore, MaintenanceEventStore};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::metrics::OperationLabels;
use crate::native_aggregation::NativeAggregation;
use crate::query::{
    Direction, FindOptions, IdempotentOutcome, Inserted, KeyedDocument, Page, PageRequest,
    UpdateResult,
};
use crate::update::Update;
use crate::value::{
    drop_iteratively, exceeds_max_depth, too_deep, Document, DocumentId, Value, CREATED_AT_FIELD,
    ID_FIELD,
};

/// The backends this API can run on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// PostgreSQL (JSONB documents).
    Postgresql,
    /// MongoDB.
    Mongodb,
}

impl ProviderKind {
    /// The name used in `DATASTORE_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Postgresql => "postgresql",
            ProviderKind::Mongodb => "mongodb",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgresql" | "postgres" => Ok(ProviderKind::Postgresql),
            "mongodb" | "mongo" => Ok(ProviderKind::Mongodb),
            other => Err(Error::configuration(format!(
                "DATASTORE_PROVIDER: unknown provider {other:?} (expected \"postgresql\" or \"mongodb\")"
            ))),
        }
    }
}

/// Generic document operations on one collection (a table on PostgreSQL).
///
/// Implemented once, in [`front`](crate::front), for every provider's
/// [`RawCollection`](crate::raw::RawCollection): providers implement that narrow interface,
/// and this one validates, traces and measures every call the same way on every backend.
///
/// Every stored document has `_id` (a [`DocumentId`] string) and `createdAt` (a date assigned by
/// the database server at insert) at the top level; see the crate docs for the shape.
#[async_trait]
pub trait Collection: Send + Sync {
    /// The collection's name.
    fn name(&self) -> &str;

    /// The labels this collection's operations carry in metrics and spans.
    fn operation_labels(&self) -> OperationLabels;

    /// Inserts one document. A string `_id` in the document is used as the id (it must be a
    /// valid [`DocumentId`]); otherwise one is generated. `createdAt` must not be supplied.
    /// An existing `_id` is a [`Duplicate`](crate::ErrorKind::Duplicate) error.
    async fn insert_one(&self, document: Document) -> Result<Inserted>;

    /// Inserts documents atomically: all are inserted or, on any error, none.
    async fn insert_many(&self, documents: Vec<Document>) -> Result<Vec<Inserted>>;

    /// Inserts documents that carry an idempotency key. A key that is already stored (or that
    /// repeats earlier in the batch) is reported as a duplicate and nothing is written for it;
    /// the others are inserted atomically. Outcomes are in input order. A conflict on another
    /// unique key (an existing `_id`, a maintenance event's `eventId`) fails the whole batch with
    /// [`Duplicate`](crate::ErrorKind::Duplicate).
    async fn insert_idempotent(
        &self,
        documents: Vec<KeyedDocument>,
    ) -> Result<Vec<IdempotentOutcome>>;

    /// Writes documents that keep their own `_id` and `createdAt` (a migration from another
    /// store; see [`import`](crate::import)): idempotent by `_id`; each document written is an
    /// insert to change streams.
    async fn import(
        &self,
        documents: Vec<crate::import::ImportDocument>,
    ) -> Result<crate::import::Imported>;
    /// Documents matching `filter`, ordered, skipped and limited per `options`.
    async fn find(&self, filter: &Filter, options: &FindOptions) -> Result<Vec<Document>>;

    /// One keyset page over `(createdAt, _id)`; see [`PageRequest`].
    async fn find_page(&self, filter: &Filter, page: &PageRequest) -> Result<Page>;

    /// Number of documents matching `filter`.
    async fn count(&self, filter: &Filter) -> Result<u64>;

    /// The distinct values at `path` among matching documents: array values contribute their
    /// elements, missing fields contribute nothing, numbers equal numerically count once. Sorted
    /// by [`sort_compare`](crate::value::sort_compare).
    async fn distinct(&self, path: &str, filter: &Filter) -> Result<Vec<Value>>;

    /// Updates the first matching document in `(createdAt, _id)` order.
    async fn update_one(&self, filter: &Filter, update: &Update) -> Result<UpdateResult>;

    /// Updates every matching document, atomically (all or none on error).
    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateResult>;

    /// Deletes every matching document; returns how many.
    async fn delete_many(&self, filter: &Filter) -> Result<u64>;

    /// The database server's current time (the clock `createdAt` and `CurrentDate` use).
    async fn server_time(&self) -> Result<DateTime<Utc>>;

    /// Watches the committed changes of this collection; see [`crate::change`] for the contract.
    async fn watch(&self, options: WatchOptions) -> Result<ChangeStream>;

    /// Persists `consumer`'s position: after a restart from [`StartFrom::Checkpoint`](crate::StartFrom)
    /// delivery resumes right after `token`. Fails with [`Conflict`](crate::ErrorKind::Conflict)
    /// when another process holds the consumer's lease.
    async fn checkpoint(&self, consumer: &str, token: &ResumeToken) -> Result<()>;

    /// How far `consumer` (whose stream uses `filter`) is behind its checkpoint.
    async fn lag(&self, consumer: &str, filter: &Filter) -> Result<Lag>;

    /// This collection's server-side aggregation, when its server has one (MongoDB). `None`
    /// means the `datastore-query` crate plans pipelines over [`find`](Collection::find)
    /// (PostgreSQL).
    fn native_aggregation(&self) -> Option<&dyn NativeAggregation>;

    /// This collection's change feed, when it has one; without it, [`watch`](Collection::watch)
    /// and the consumer methods are [`Unsupported`](crate::ErrorKind::Unsupported).
    fn change_feed(&self) -> Option<&dyn crate::raw::ChangeFeed>;

    /// The change-stream consumers of this collection (every one with a checkpoint or a lease),
    /// by name.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>>;

    /// Forgets `consumer`: its checkpoint and lease (a deleted checkpoint no longer holds back
    /// the change history's retention). False when it did not exist;
    /// [`Conflict`](crate::ErrorKind::Conflict) while a stream holds its lease (stop it first).
    async fn delete_consumer(&self, consumer: &str) -> Result<bool>;

    /// Moves `consumer`'s checkpoint to `to` ([`StartFrom::Now`],
    /// [`Beginning`](StartFrom::Beginning) or [`Time`](StartFrom::Time), resolved
    /// as a watch resolves them): its next watch from its checkpoint starts there. Creates the
    /// consumer if needed. [`Conflict`](crate::ErrorKind::Conflict) while a stream holds its
    /// lease; `InvalidInput` for `Checkpoint`.
    async fn reset_consumer(&self, consumer: &str, to: StartFrom) -> Result<()>;
}

/// Conveniences built on [`Collection`].
pub trait CollectionExt: Collection {
    /// Streams matching documents in batches of `batch_size`, oldest first, using keyset pages
    /// (see [`PageRequest`] for the guarantee under concurrent writes). The stream ends after the
    /// last batch or after the first error.
    fn stream_batches<'a>(
        &'a self,
        filter: Filter,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Vec<Document>>>
    where
        Self: Sized,
    {
        batches(self, filter, batch_size)
    }
}

impl<C: Collection + ?Sized> CollectionExt for C {}

/// [`CollectionExt::stream_batches`] for trait objects.
pub fn batches<'a, C: Collection + ?Sized>(
    collection: &'a C,
    filter: Filter,
    batch_size: u32,
) -> BoxStream<'a, Result<Vec<Document>>> {
    let start = Some(PageRequest {
        direction: Direction::Ascending,
        size: batch_size,
        after: None,
    });
    stream::unfold((start, filter), move |(req, filter)| async move {
        let req = req?;
        match collection.find_page(&filter, &req).await {
            Ok(page) => {
                let next = page.next.map(|after| PageRequest {
                    after: Some(after),
                    ..req
                });
                if page.documents.is_empty() {
                    None
                } else {
                    Some((Ok(page.documents), (next, filter)))
                }
            }
            Err(e) => Some((Err(e), (None, filter))),
        }
    })
    .boxed()
}

/// An open datastore: handles to both stores, health, transactions. Implemented once, in
/// [`front`](crate::front), for every provider's [`RawDataStore`](crate::raw::RawDataStore).
#[async_trait]
pub trait DataStore: Send + Sync {
    /// Which backend this is.
    fn provider(&self) -> ProviderKind;
    /// The health-event collection (generic operations).
    fn health_event_collection(&self) -> &dyn Collection;
    /// The maintenance-event collection (generic operations).
    fn maintenance_event_collection(&self) -> &dyn Collection;
    /// Checks the backend answers.
    async fn ping(&self) -> Result<()>;
    /// A readiness check a deployment can gate on: the backend answers and every index the
    /// provider relies on for correctness (the idempotency keys' unique indexes) is present,
    /// right and built. Its error carries an [`IndexProblem`](crate::IndexProblem) when an index
    /// is at fault. Connecting runs the same check.
    async fn check_ready(&self) -> Result<()>;
    /// Closes connections; later calls fail with a [`Backend`](crate::ErrorKind::Backend)
    /// error.
    async fn close(&self);
    /// Deletes change history: every change older than `policy.max_age`, and older changes that
    /// every consumer has checkpointed past (keeping at least `policy.min_age`). A consumer whose
    /// checkpoint falls in pruned history gets [`HistoryLost`](crate::ErrorKind::HistoryLost).
    /// [`Unsupported`](crate::ErrorKind::Unsupported) without a
    /// [`change_history`](DataStore::change_history).
    async fn prune_change_history(&self, policy: &RetentionPolicy) -> Result<u64>;

    /// The change history this store keeps and prunes, when it keeps one.
    fn change_history(&self) -> Option<&dyn crate::raw::ChangeHistory>;

    /// The server's version, this session's encryption, the server's connection limit and the
    /// schema version, for diagnostics.
    async fn server_info(&self) -> Result<crate::stats::ServerInfo>;

    /// The connection pool's state, with one probe checkout timed (`None` where the driver
    /// keeps its pool to itself, as MongoDB's does).
    async fn pool_stats(&self) -> Option<crate::stats::PoolStats>;

    /// Sizes and usage of both collections and of the change history, as the server reports
    /// them (one round of catalog queries: for operators and sampled metrics, not hot paths).
    async fn stats(&self) -> Result<crate::stats::StoreStats>;

    /// Starts a transaction spanning both stores. Dropping it without
    /// [`commit`](Transaction::commit) rolls it back.
    async fn begin(&self) -> Result<Box<dyn Transaction>>;

    /// The typed health-event store.
    fn health_events(&self) -> HealthEventStore<'_>;
    /// The typed maintenance-event store.
    fn maintenance_events(&self) -> MaintenanceEventStore<'_>;
}

/// A transaction over both stores. Operations through it see its own writes and become visible
/// to others only at [`commit`](Transaction::commit). Implemented once, in
/// [`front`](crate::front), for every provider's [`RawTransaction`](crate::raw::RawTransaction).
#[async_trait]
pub trait Transaction: Send + Sync {
    /// The health-event collection inside the transaction.
    fn health_event_collection(&self) -> &dyn Collection;
    /// The maintenance-event collection inside the transaction.
    fn maintenance_event_collection(&self) -> &dyn Collection;
    /// Makes every write of the transaction durable and visible, atomically.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Discards every write of the transaction.
    async fn rollback(self: Box<Self>) -> Result<()>;

    /// The typed health-event store inside the transaction.
    fn health_events(&self) -> HealthEventStore<'_>;
    /// The typed maintenance-event store inside the transaction.
    fn maintenance_events(&self) -> MaintenanceEventStore<'_>;
}

/// Runs `body` in a transaction: commits when it returns `Ok`, rolls back on `Err`.
///
/// ```no_run
/// # async fn demo(store: &dyn datastore_api::DataStore) -> datastore_api::Result<()> {
/// use datastore_api::{with_transaction, Filter, Update};
/// with_transaction(store, |tx| Box::pin(async move {
///     tx.health_event_collection()
///         .update_many(&Filter::eq("healthevent.nodename", "n1"), &Update::new().set("x", 1))
///         .await?;
///     tx.maintenance_event_collection().delete_many(&Filter::eq("nodeName", "n1")).await?;
///     Ok(())
/// })).await
/// # }
/// ```
pub async fn with_transaction<T, F>(store: &(impl DataStore + ?Sized), body: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t dyn Transaction) -> BoxFuture<'t, Result<T>>,
{
    let tx = store.begin().await?;
    let out = body(tx.as_ref()).await;
    match out {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            // The body's error is the one worth reporting; a failed rollback ends the transaction anyway.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Splits a document to insert into its id and its canonical body (without `_id`).
/// Shared by providers so that every backend accepts and rejects the same documents.
///
/// A document nested deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH) is rejected first,
/// without recursion, and dropped without recursion ([`drop_iteratively`]), so that no depth of
/// nesting can overflow the stack. For a batch, use [`prepare_inserts`].
pub fn prepare_insert(document: Document) -> Result<(DocumentId, Document)> {
    let document = Value::Object(document);
    if exceeds_max_depth(&document) {
        drop_iteratively(document);
        return Err(too_deep("document"));
    }
    let Value::Object(mut document) = document else {
        unreachable!("built as an object above")
    };
    if document.contains_key(CREATED_AT_FIELD) {
        return Err(Error::invalid_input(
            "documents may not set createdAt: the database server assigns it at insert",
        ));
    }
    let id = match document.remove(ID_FIELD) {
        None => DocumentId::generate(),
        Some(Value::String(s)) => DocumentId::parse(&s)?,
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "_id must be a 24-hex-digit string, got {other}"
            )))
        }
    };
    if let Some(name) = document.keys().find(|k| crate::path::is_reserved_name(k)) {
        return Err(Error::invalid_input(format!(
            "document field {name:?}: {}",
            crate::path::RESERVED_WHY
        )));
    }
    crate::value::check_document_size(&document)?;
    crate::value::canonicalize_document(&mut document)?;
    Ok((id, document))
}

/// [`prepare_insert`] for a batch: every document's id and canonical body, in order, or the
/// first error. After an error the documents not yet prepared are dropped without recursion
/// ([`drop_iteratively`]), so a batch holding several documents nested too deep fails cleanly
/// instead of overflowing the stack while the rest of the batch is dropped.
pub fn prepare_inserts(documents: Vec<Document>) -> Result<Vec<(DocumentId, Document)>> {
    let mut prepared = Vec::with_capacity(documents.len());
    let mut rest = documents.into_iter();
    for document in rest.by_ref() {
        match prepare_insert(document) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                rest.for_each(|d| drop_iteratively(Value::Object(d)));
                return Err(e);
            }
        }
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_document_that_looks_like_a_date_is_refused() {
        let doc = serde_json::json!({"$date": "1970-01-01T00:00:00Z"});
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        let e = prepare_insert(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("'$'"), "{e}");
    }

    #[test]
    fn a_document_over_16_mib_is_refused_as_mongodb_refuses_it() {
        let mut doc = Document::new();
        doc.insert("big".into(), Value::String("x".repeat(17 * 1024 * 1024)));
        let e = prepare_insert(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("16 MiB"), "{e}");
        let mut doc = Document::new();
        doc.insert(
            "fits".into(),
            Value::String("x".repeat(16 * 1024 * 1024 - 100)),
        );
        assert!(prepare_insert(doc).is_ok());
    }

    /// A document whose field `a` nests `levels` objects deep, built without recursion.
    fn deep_document(levels: usize) -> Document {
        let mut v = Value::Null;
        for _ in 0..levels {
            let mut m = Document::new();
            m.insert("k".to_owned(), v);
            v = Value::Object(m);
        }
        let mut doc = Document::new();
        doc.insert("a".to_owned(), v);
        doc
    }

    #[test]
    fn batches_with_several_deep_documents_fail_cleanly() {
        let mut bad_id = Document::new();
        bad_id.insert(ID_FIELD.to_owned(), Value::from("not an id"));
        for batch in [
            vec![deep_document(100_000), deep_document(100_000)],
            vec![bad_id, deep_document(100_000)],
        ] {
            let e = prepare_inserts(batch).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let ok = prepare_inserts(vec![deep_document(3), Document::new()]).unwrap();
        assert_eq!(ok.len(), 2);
    }
}
