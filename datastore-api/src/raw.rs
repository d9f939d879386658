//! What a provider implements: the narrow, raw interface under the public [`Collection`].
//!
//! As OpenDAL's `Operator` sits over `Access`, the public [`Collection`] is written once, in
//! [`front`](crate::front), for every [`RawCollection`]: it validates and lowers the caller's
//! input, then calls the raw method inside one `datastore.<operation>` span with the
//! collection's metrics. The raw methods take only validated types ([`Lowered`] filters,
//! [`Prepared`] documents, [`ValidFind`], [`ValidPage`], [`ValidUpdate`]), so a provider
//! cannot skip a validation: it has nothing to validate. Optional abilities are handed out,
//! not defaulted: change feeds ([`ChangeFeed`]) and native aggregation
//! ([`NativeAggregation`]).
//!
//! [`Collection`]: crate::Collection

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::change::{
    ChangeStream, ConsumerInfo, Lag, ResumeToken, RetentionPolicy, StartFrom, WatchOptions,
};
use crate::error::Result;
use crate::filter::{Filter, Lowered};
use crate::import::{ImportDocument, Imported};
use crate::metrics::OperationLabels;
use crate::native_aggregation::NativeAggregation;
use crate::path::FieldPath;
use crate::query::{
    Direction, FindOptions, IdempotentOutcome, Inserted, Page, PageRequest, UpdateResult,
};
use crate::stats::{PoolStats, ServerInfo, StoreStats};
use crate::store::{Collection, ProviderKind, Transaction};
use crate::update::ValidUpdate;
use crate::value::{Document, DocumentId};

/// A document ready to insert: its id (given or generated) and its canonical body, without
/// `_id` and `createdAt` ([`prepare_insert`](crate::prepare_insert) made it).
#[derive(Debug, Clone)]
pub struct Prepared {
    id: DocumentId,
    body: Document,
}

impl Prepared {
    pub(crate) fn new((id, body): (DocumentId, Document)) -> Prepared {
        Prepared { id, body }
    }

    /// The document's id.
    pub fn id(&self) -> &DocumentId {
        &self.id
    }

    /// The body to store.
    pub fn body(&self) -> &Document {
        &self.body
    }

    /// Id and body.
    pub fn into_parts(self) -> (DocumentId, Document) {
        (self.id, self.body)
    }
}

/// A [`Prepared`] document with its validated idempotency key.
#[derive(Debug, Clone)]
pub struct KeyedPrepared {
    key: String,
    document: Prepared,
}

impl KeyedPrepared {
    pub(crate) fn new(key: String, document: Prepared) -> KeyedPrepared {
        KeyedPrepared { key, document }
    }

    /// The idempotency key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The document.
    pub fn document(&self) -> &Prepared {
        &self.document
    }

    /// Key and document.
    pub fn into_parts(self) -> (String, Prepared) {
        (self.key, self.document)
    }
}

/// Validated [`FindOptions`]: the sort keys parsed, skip and limit within `i64`.
#[derive(Debug, Clone)]
pub struct ValidFind {
    sort: Vec<(FieldPath, Direction)>,
    skip: u64,
    limit: Option<u64>,
}

impl ValidFind {
    pub(crate) fn new(options: &FindOptions) -> Result<ValidFind> {
        let too_large = |what: &str| crate::Error::invalid_input(format!("{what} is too large"));
        if i64::try_from(options.skip).is_err() {
            return Err(too_large("skip"));
        }
        if options.limit.is_some_and(|l| i64::try_from(l).is_err()) {
            return Err(too_large("limit"));
        }
        Ok(ValidFind {
            sort: options.sort.validate()?,
            skip: options.skip,
            limit: options.limit,
        })
    }

    /// The sort keys, in order.
    pub fn sort(&self) -> &[(FieldPath, Direction)] {
        &self.sort
    }

    /// Matches to skip (at most `i64::MAX`).
    pub fn skip(&self) -> u64 {
        self.skip
    }

    /// At most this many (at most `i64::MAX`); `None`: all.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }
}

/// A validated [`PageRequest`] (its size within bounds).
#[derive(Debug, Clone, Copy)]
pub struct ValidPage<'a>(&'a PageRequest);

impl<'a> ValidPage<'a> {
    pub(crate) fn new(page: &'a PageRequest) -> Result<ValidPage<'a>> {
        page.validate()?;
        Ok(ValidPage(page))
    }

    /// The request.
    pub fn request(&self) -> &'a PageRequest {
        self.0
    }
}

/// A validated change-stream consumer name (1 to 200 bytes, no NUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer<'a>(&'a str);

impl<'a> Consumer<'a> {
    /// `name`, checked.
    pub fn new(name: &'a str) -> Result<Consumer<'a>> {
        crate::change::validate_consumer(name)?;
        Ok(Consumer(name))
    }

    /// The name.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// One collection as a provider implements it (see the module docs). Every method gets input
/// the front has validated; the front owns spans and metrics.
#[async_trait]
pub trait RawCollection: Send + Sync {
    /// The collection's name.
    fn name(&self) -> &str;

    /// The labels of this collection's operations in metrics and spans.
    fn operation_labels(&self) -> OperationLabels;

    /// Inserts `documents` (at least one) atomically, with one server time for all.
    async fn insert(&self, documents: Vec<Prepared>) -> Result<Vec<Inserted>>;

    /// [`Collection::insert_idempotent`] for at least
    /// one document.
    async fn insert_idempotent(
        &self,
        documents: Vec<KeyedPrepared>,
    ) -> Result<Vec<IdempotentOutcome>>;

    /// [`Collection::import`] for at least one document.
    async fn import(&self, documents: Vec<ImportDocument>) -> Result<Imported>;

    /// Documents matching `filter`, per `options`.
    async fn find(&self, filter: &Lowered, options: &ValidFind) -> Result<Vec<Document>>;

    /// One keyset page.
    async fn find_page(&self, filter: &Lowered, page: ValidPage<'_>) -> Result<Page>;

    /// Number of documents matching `filter`.
    async fn count(&self, filter: &Lowered) -> Result<u64>;

    /// The values at `path` among matching documents, each once or more, in any order: the
    /// front unwinds arrays, removes repeats and sorts them as
    /// [`Collection::distinct`] defines.
    async fn distinct(&self, path: &FieldPath, filter: &Lowered) -> Result<Vec<serde_json::Value>>;

    /// Applies `update` to the first matching document in `(createdAt, _id)` order
    /// (`only_first`), or to every one, atomically.
    async fn update(
        &self,
        filter: &Lowered,
        update: &ValidUpdate,
        only_first: bool,
    ) -> Result<UpdateResult>;

    /// Deletes every matching document; returns how many.
    async fn delete_many(&self, filter: &Lowered) -> Result<u64>;

    /// The database server's current time.
    async fn server_time(&self) -> Result<DateTime<Utc>>;

    /// This collection's change feed, when the provider (and, inside a transaction, the
    /// handle) has one.
    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }

    /// This collection's server-side aggregation, when its server has one.
    fn native_aggregation(&self) -> Option<&dyn NativeAggregation> {
        None
    }
}

/// Change streams, checkpoints and consumer administration: the ability a
/// [`RawCollection`] hands out through [`RawCollection::change_feed`]. Consumer names arrive
/// validated ([`Consumer`]); watch options are validated by the change reader both providers
/// run on.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// See [`Collection::watch`].
    async fn watch(&self, options: WatchOptions) -> Result<ChangeStream>;

    /// See [`Collection::checkpoint`].
    async fn checkpoint(&self, consumer: Consumer<'_>, token: &ResumeToken) -> Result<()>;

    /// See [`Collection::lag`].
    async fn lag(&self, consumer: Consumer<'_>, filter: &Filter) -> Result<Lag>;

    /// See [`Collection::consumers`].
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>>;

    /// See [`Collection::delete_consumer`].
    async fn delete_consumer(&self, consumer: Consumer<'_>) -> Result<bool>;

    /// See [`Collection::reset_consumer`].
    async fn reset_consumer(&self, consumer: Consumer<'_>, to: StartFrom) -> Result<()>;
}

/// An open datastore as a provider implements it; the public
/// [`DataStore`](crate::DataStore) is written once over it (spans, error context, the typed
/// stores).
#[async_trait]
pub trait RawDataStore: Send + Sync {
    /// Which backend this is.
    fn provider(&self) -> ProviderKind;
    /// The health-event collection.
    fn health_event_collection(&self) -> &dyn Collection;
    /// The maintenance-event collection.
    fn maintenance_event_collection(&self) -> &dyn Collection;
    /// See [`DataStore::ping`](crate::DataStore::ping).
    async fn ping(&self) -> Result<()>;
    /// See [`DataStore::check_ready`](crate::DataStore::check_ready).
    async fn check_ready(&self) -> Result<()>;
    /// See [`DataStore::close`](crate::DataStore::close).
    async fn close(&self);
    /// See [`DataStore::server_info`](crate::DataStore::server_info).
    async fn server_info(&self) -> Result<ServerInfo>;
    /// See [`DataStore::pool_stats`](crate::DataStore::pool_stats).
    async fn pool_stats(&self) -> Option<PoolStats> {
        None
    }
    /// See [`DataStore::stats`](crate::DataStore::stats).
    async fn stats(&self) -> Result<StoreStats>;
    /// See [`DataStore::begin`](crate::DataStore::begin).
    async fn begin(&self) -> Result<Box<dyn Transaction>>;
    /// The change history the store keeps, when it keeps one.
    fn change_history(&self) -> Option<&dyn ChangeHistory> {
        None
    }
}

/// Change history a store keeps and prunes itself (PostgreSQL's change log; MongoDB's is the
/// server's oplog).
#[async_trait]
pub trait ChangeHistory: Send + Sync {
    /// See [`DataStore::prune_change_history`](crate::DataStore::prune_change_history).
    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64>;
}

/// A transaction as a provider implements it; the public [`Transaction`] is written once
/// over it (spans, error context, the typed stores).
#[async_trait]
pub trait RawTransaction: Send + Sync {
    /// Which backend this is.
    fn provider(&self) -> ProviderKind;
    /// The health-event collection inside the transaction.
    fn health_event_collection(&self) -> &dyn Collection;
    /// The maintenance-event collection inside the transaction.
    fn maintenance_event_collection(&self) -> &dyn Collection;
    /// See [`Transaction::commit`].
    async fn commit(self: Box<Self>) -> Result<()>;
    /// See [`Transaction::rollback`].
    async fn rollback(self: Box<Self>) -> Result<()>;
}
