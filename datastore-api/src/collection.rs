//! [`Collection`]: the generic document operations on one collection, as callers see them
//! (implemented once, in [`front`](crate::front)), with its conveniences.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use crate::change::{ChangeStream, ConsumerInfo, Lag, ResumeToken, StartFrom, WatchOptions};
use crate::error::Result;
use crate::filter::Filter;
use crate::metrics::OperationLabels;
use crate::native_aggregation::NativeAggregation;
use crate::query::{
    Direction, FindOptions, IdempotentOutcome, Inserted, KeyedDocument, Page, PageRequest,
    UpdateResult,
};
use crate::update::Update;
use crate::value::{Document, Value};

/// Generic document operations on one collection (a table on PostgreSQL).
///
/// Implemented once, in [`front`](crate::front), for every provider's
/// [`RawCollection`](crate::raw::RawCollection): providers implement that narrow interface,
/// and this one validates, traces and measures every call the same way on every backend.
///
/// Every stored document has `_id` (a [`DocumentId`](crate::DocumentId) string) and `createdAt` (a date assigned by
/// the database server at insert) at the top level; see the crate docs for the shape.
#[async_trait]
pub trait Collection: Send + Sync {
    /// The collection's name.
    fn name(&self) -> &str;

    /// The labels this collection's operations carry in metrics and spans.
    fn operation_labels(&self) -> OperationLabels;

    /// Inserts one document. A string `_id` in the document is used as the id (it must be a
    /// valid [`DocumentId`](crate::DocumentId)); otherwise one is generated. `createdAt` must not be supplied.
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
