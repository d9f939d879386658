//! The public [`Collection`], written once for every provider's [`RawCollection`]: each call
//! validates and lowers its input, then runs the raw method in a `datastore.<operation>` span
//! with the collection's metrics ([`OperationLabels::observe`]). A provider therefore cannot
//! forget a validation, a span or a metric, and every backend refuses bad input with the same
//! error before it reaches a server.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::change::{
    ChangeStream, ConsumerInfo, Lag, ResumeToken, RetentionPolicy, StartFrom, WatchOptions,
};
use crate::domain::{HealthEventStore, MaintenanceEventStore};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::Filter;
use crate::import::{ImportDocument, Imported};
use crate::metrics::OperationLabels;
use crate::native_aggregation::NativeAggregation;
use crate::path::FieldPath;
use crate::prepare::prepare_keyed;
use crate::query::{
    FindOptions, IdempotentOutcome, Inserted, KeyedDocument, Page, PageRequest, UpdateResult,
};
use crate::raw::{
    ChangeFeed, ChangeHistory, Consumer, KeyedPrepared, Prepared, RawCollection, RawDataStore,
    RawTransaction, ValidFind, ValidPage,
};
use crate::stats::{PoolStats, ServerInfo, StoreStats};
use crate::store::{
    prepare_insert, prepare_inserts, Collection, DataStore, ProviderKind, Transaction,
};
use crate::update::Update;
use crate::value::{distinct_values, unwrap_arrays, Document, Value};

/// Runs `fut` as `operation` of `raw`: in `span`, with the collection's metrics; its error
/// carries the operation, collection and provider as context.
async fn run<R: RawCollection + ?Sized, T>(
    raw: &R,
    operation: &'static str,
    span: tracing::Span,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let labels = raw.operation_labels();
    labels
        .observe(operation, fut)
        .instrument(span)
        .await
        .map_err(|e| {
            e.with_context("operation", operation)
                .with_context("collection", RawCollection::name(raw))
                .with_context("provider", labels.provider)
        })
}

/// The change feed of `raw`, or the error a collection without one gives.
fn feed<R: RawCollection + ?Sized>(raw: &R) -> Result<&dyn ChangeFeed> {
    raw.change_feed().ok_or_else(|| {
        Error::new(
            ErrorKind::Unsupported,
            format!("collection {} does not support change streams", raw.name()),
        )
    })
}

#[async_trait]
impl<R: RawCollection + ?Sized> Collection for R {
    fn name(&self) -> &str {
        RawCollection::name(self)
    }

    fn operation_labels(&self) -> OperationLabels {
        RawCollection::operation_labels(self)
    }

    async fn insert_one(&self, document: Document) -> Result<Inserted> {
        let span = tracing::info_span!("datastore.insert_one", collection = Collection::name(self));
        run(self, "insert_one", span, async {
            let row = Prepared::new(prepare_insert(document)?);
            self.insert(vec![row])
                .await?
                .pop()
                .ok_or_else(|| Error::permanent("insert did not return its document"))
        })
        .await
    }

    async fn insert_many(&self, documents: Vec<Document>) -> Result<Vec<Inserted>> {
        let span = tracing::info_span!(
            "datastore.insert_many",
            collection = Collection::name(self),
            count = documents.len()
        );
        run(self, "insert_many", span, async {
            let rows: Vec<Prepared> = prepare_inserts(documents)?
                .into_iter()
                .map(Prepared::new)
                .collect();
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            self.insert(rows).await
        })
        .await
    }

    async fn insert_idempotent(
        &self,
        documents: Vec<KeyedDocument>,
    ) -> Result<Vec<IdempotentOutcome>> {
        let span = tracing::info_span!(
            "datastore.insert_idempotent",
            collection = Collection::name(self),
            count = documents.len()
        );
        run(self, "insert_idempotent", span, async {
            let rows: Vec<KeyedPrepared> = prepare_keyed(documents)?
                .into_iter()
                .map(|(key, id, body)| KeyedPrepared::new(key, Prepared::new((id, body))))
                .collect();
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            RawCollection::insert_idempotent(self, rows).await
        })
        .await
    }

    async fn import(&self, documents: Vec<ImportDocument>) -> Result<Imported> {
        let span = tracing::info_span!(
            "datastore.import",
            collection = Collection::name(self),
            count = documents.len()
        );
        run(self, "import", span, async {
            if documents.is_empty() {
                return Ok(Imported::default());
            }
            RawCollection::import(self, documents).await
        })
        .await
    }

    async fn find(&self, filter: &Filter, options: &FindOptions) -> Result<Vec<Document>> {
        let span = tracing::info_span!("datastore.find", collection = Collection::name(self));
        run(self, "find", span, async {
            let lowered = filter.lower()?;
            let options = ValidFind::new(options)?;
            RawCollection::find(self, &lowered, &options).await
        })
        .await
    }

    async fn find_page(&self, filter: &Filter, page: &PageRequest) -> Result<Page> {
        let span = tracing::info_span!(
            "datastore.find_page",
            collection = Collection::name(self),
            size = page.size
        );
        run(self, "find_page", span, async {
            let page = ValidPage::new(page)?;
            let lowered = filter.lower()?;
            RawCollection::find_page(self, &lowered, page).await
        })
        .await
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        let span = tracing::info_span!("datastore.count", collection = Collection::name(self));
        run(self, "count", span, async {
            RawCollection::count(self, &filter.lower()?).await
        })
        .await
    }

    async fn distinct(&self, path: &str, filter: &Filter) -> Result<Vec<Value>> {
        let span = tracing::info_span!(
            "datastore.distinct",
            collection = Collection::name(self),
            path
        );
        run(self, "distinct", span, async {
            let path = FieldPath::parse(path)?;
            let values = RawCollection::distinct(self, &path, &filter.lower()?).await?;
            // One rule on every backend: arrays unwound one level, numbers equal across int
            // and float counted once, one order.
            Ok(distinct_values(unwrap_arrays(values)))
        })
        .await
    }

    async fn update_one(&self, filter: &Filter, update: &Update) -> Result<UpdateResult> {
        let span = tracing::info_span!("datastore.update_one", collection = Collection::name(self));
        run(self, "update_one", span, async {
            let valid = update.validate()?;
            self.update(&filter.lower()?, &valid, true).await
        })
        .await
    }

    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateResult> {
        let span =
            tracing::info_span!("datastore.update_many", collection = Collection::name(self));
        run(self, "update_many", span, async {
            let valid = update.validate()?;
            self.update(&filter.lower()?, &valid, false).await
        })
        .await
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        let span =
            tracing::info_span!("datastore.delete_many", collection = Collection::name(self));
        run(self, "delete_many", span, async {
            RawCollection::delete_many(self, &filter.lower()?).await
        })
        .await
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        let span =
            tracing::info_span!("datastore.server_time", collection = Collection::name(self));
        run(self, "server_time", span, RawCollection::server_time(self)).await
    }

    async fn watch(&self, options: WatchOptions) -> Result<ChangeStream> {
        let span = tracing::info_span!(
            "datastore.watch",
            collection = Collection::name(self),
            consumer = %options.consumer
        );
        // The options are validated by the change reader every provider's feed runs on.
        run(self, "watch", span, async {
            feed(self)?.watch(options).await
        })
        .await
    }

    async fn checkpoint(&self, consumer: &str, token: &ResumeToken) -> Result<()> {
        let span = tracing::info_span!(
            "datastore.checkpoint",
            collection = Collection::name(self),
            consumer
        );
        run(self, "checkpoint", span, async {
            let consumer = Consumer::new(consumer)?;
            feed(self)?
                .checkpoint(consumer, token)
                .await
                .map_err(|e| e.with_context("consumer", consumer.as_str()))
        })
        .await
    }

    async fn lag(&self, consumer: &str, filter: &Filter) -> Result<Lag> {
        let span = tracing::info_span!(
            "datastore.lag",
            collection = Collection::name(self),
            consumer
        );
        run(self, "lag", span, async {
            let consumer = Consumer::new(consumer)?;
            feed(self)?
                .lag(consumer, filter)
                .await
                .map_err(|e| e.with_context("consumer", consumer.as_str()))
        })
        .await
    }

    fn native_aggregation(&self) -> Option<&dyn NativeAggregation> {
        RawCollection::native_aggregation(self)
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        RawCollection::change_feed(self)
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let span = tracing::info_span!("datastore.consumers", collection = Collection::name(self));
        run(self, "consumers", span, async {
            feed(self)?.consumers().await
        })
        .await
    }

    async fn delete_consumer(&self, consumer: &str) -> Result<bool> {
        let span = tracing::info_span!(
            "datastore.delete_consumer",
            collection = Collection::name(self),
            consumer
        );
        run(self, "delete_consumer", span, async {
            let consumer = Consumer::new(consumer)?;
            feed(self)?
                .delete_consumer(consumer)
                .await
                .map_err(|e| e.with_context("consumer", consumer.as_str()))
        })
        .await
    }

    async fn reset_consumer(&self, consumer: &str, to: StartFrom) -> Result<()> {
        let span = tracing::info_span!(
            "datastore.reset_consumer",
            collection = Collection::name(self),
            consumer
        );
        run(self, "reset_consumer", span, async {
            let consumer = Consumer::new(consumer)?;
            feed(self)?
                .reset_consumer(consumer, to)
                .await
                .map_err(|e| e.with_context("consumer", consumer.as_str()))
        })
        .await
    }
}

/// Runs `fut` as store-level `operation` in its span; its error names the operation and the
/// provider.
async fn run_store<T>(
    provider: ProviderKind,
    operation: &'static str,
    span: tracing::Span,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    fut.instrument(span).await.map_err(|e| {
        e.with_context("operation", operation)
            .with_context("provider", provider.as_str())
    })
}

#[async_trait]
impl<R: RawDataStore + ?Sized> DataStore for R {
    fn provider(&self) -> ProviderKind {
        RawDataStore::provider(self)
    }

    fn health_event_collection(&self) -> &dyn Collection {
        RawDataStore::health_event_collection(self)
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        RawDataStore::maintenance_event_collection(self)
    }

    async fn ping(&self) -> Result<()> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.ping", provider = p.as_str());
        run_store(p, "ping", span, RawDataStore::ping(self)).await
    }

    async fn check_ready(&self) -> Result<()> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.check_ready", provider = p.as_str());
        run_store(p, "check_ready", span, RawDataStore::check_ready(self)).await
    }

    async fn close(&self) {
        RawDataStore::close(self).await
    }

    async fn prune_change_history(&self, policy: &RetentionPolicy) -> Result<u64> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.prune_change_history", provider = p.as_str());
        run_store(p, "prune_change_history", span, async {
            match RawDataStore::change_history(self) {
                Some(history) => history.prune(policy).await,
                None => Err(Error::new(
                    ErrorKind::Unsupported,
                    "this provider does not keep change history",
                )),
            }
        })
        .await
    }

    fn change_history(&self) -> Option<&dyn ChangeHistory> {
        RawDataStore::change_history(self)
    }

    async fn server_info(&self) -> Result<ServerInfo> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.server_info", provider = p.as_str());
        run_store(p, "server_info", span, RawDataStore::server_info(self)).await
    }

    async fn pool_stats(&self) -> Option<PoolStats> {
        RawDataStore::pool_stats(self).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.stats", provider = p.as_str());
        run_store(p, "stats", span, RawDataStore::stats(self)).await
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let p = RawDataStore::provider(self);
        let span = tracing::info_span!("datastore.begin", provider = p.as_str());
        run_store(p, "begin", span, RawDataStore::begin(self)).await
    }

    fn health_events(&self) -> HealthEventStore<'_> {
        HealthEventStore::new(RawDataStore::health_event_collection(self))
    }

    fn maintenance_events(&self) -> MaintenanceEventStore<'_> {
        MaintenanceEventStore::new(RawDataStore::maintenance_event_collection(self))
    }
}

#[async_trait]
impl<R: RawTransaction> Transaction for R {
    fn health_event_collection(&self) -> &dyn Collection {
        RawTransaction::health_event_collection(self)
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        RawTransaction::maintenance_event_collection(self)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let p = RawTransaction::provider(self.as_ref());
        let span = tracing::info_span!("datastore.commit", provider = p.as_str());
        run_store(p, "commit", span, RawTransaction::commit(self)).await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let p = RawTransaction::provider(self.as_ref());
        let span = tracing::info_span!("datastore.rollback", provider = p.as_str());
        run_store(p, "rollback", span, RawTransaction::rollback(self)).await
    }

    fn health_events(&self) -> HealthEventStore<'_> {
        HealthEventStore::new(RawTransaction::health_event_collection(self))
    }

    fn maintenance_events(&self) -> MaintenanceEventStore<'_> {
        MaintenanceEventStore::new(RawTransaction::maintenance_event_collection(self))
    }
}
