//! The store: [`DataStore`] and [`Transaction`], over both collections (the generic
//! [`Collection`] is its own module, re-exported here).

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::change::RetentionPolicy;
use crate::domain::{HealthEventStore, MaintenanceEventStore};
use crate::error::Result;

pub use crate::collection::{batches, Collection, CollectionExt};
pub use crate::prepare::{prepare_insert, prepare_inserts};
pub use crate::provider::ProviderKind;

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
