//! Sampled gauges of a store, through the [`metrics`](https://docs.rs/metrics) facade:
//! its connection pool ([`Sampled::Pool`], cheap and local: what every process that exports
//! metrics samples), and, for an operator's exporter (`datastore serve-metrics`), its sizes,
//! change history and every consumer's backlog ([`Sampled::Everything`], one round of catalog
//! queries per sample).
//!
//! | name | labels | value |
//! |---|---|---|
//! | `datastore_pool_connections` | `provider`, `state` (`idle`, `in_use`) | the pool's open connections |
//! | `datastore_pool_max_connections` | `provider` | the pool's cap |
//! | `datastore_pool_acquire_seconds` | `provider` | how long the sampler waited for a connection: a probe of pool saturation |
//! | `datastore_collection_documents` | `provider`, `collection` | documents stored |
//! | `datastore_collection_bytes` | `provider`, `collection`, `kind` (`data`, `indexes`) | bytes on disk |
//! | `datastore_change_history_changes` | `provider` | changes retained |
//! | `datastore_change_history_bytes` | `provider` | their bytes on disk |
//! | `datastore_change_history_oldest_age_seconds` | `provider` | age of the oldest retained change |
//! | `datastore_consumer_events_behind` | `provider`, `collection`, `client` | changes after the consumer's checkpoint |
//! | `datastore_consumer_oldest_undelivered_seconds` | `provider`, `collection`, `client` | age of the oldest of them (0 when none) |
//! | `datastore_consumer_checkpoint_age_seconds` | `provider`, `collection`, `client` | time since its checkpoint was written |
//! | `datastore_sample_errors_total` | `provider`, `sample` (`stats`, `consumers`, `timeout`) | samples the server refused or that did not finish in time |
//!
//! `collection` is `health_events` or `maintenance_events` on every provider, whatever the
//! collections are named. Where a server does not report a figure (see [`StoreStats`]), its
//! gauge is not set. The consumer gauges use `client`, NVSentinel's label for a consumer, like
//! [`lag`](super::lag).

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;

use crate::change::ConsumerInfo;
use crate::filter::Filter;
use crate::stats::{PoolStats, StoreStats};
use crate::store::DataStore;

/// Gauge: open connections by state.
pub const POOL_CONNECTIONS: &str = "datastore_pool_connections";
/// Gauge: the pool's cap.
pub const POOL_MAX_CONNECTIONS: &str = "datastore_pool_max_connections";
/// Gauge: the sampler's wait for a connection.
pub const POOL_ACQUIRE_SECONDS: &str = "datastore_pool_acquire_seconds";
/// Gauge: documents per collection.
pub const COLLECTION_DOCUMENTS: &str = "datastore_collection_documents";
/// Gauge: bytes per collection and kind.
pub const COLLECTION_BYTES: &str = "datastore_collection_bytes";
/// Gauge: retained changes.
pub const CHANGE_HISTORY_CHANGES: &str = "datastore_change_history_changes";
/// Gauge: bytes of retained changes.
pub const CHANGE_HISTORY_BYTES: &str = "datastore_change_history_bytes";
/// Gauge: age of the oldest retained change.
pub const CHANGE_HISTORY_OLDEST_AGE: &str = "datastore_change_history_oldest_age_seconds";
/// Gauge: changes after a consumer's checkpoint.
pub const CONSUMER_EVENTS_BEHIND: &str = "datastore_consumer_events_behind";
/// Gauge: age of the oldest change a consumer has not checkpointed.
pub const CONSUMER_OLDEST_UNDELIVERED: &str = "datastore_consumer_oldest_undelivered_seconds";
/// Gauge: time since a consumer's checkpoint was written.
pub const CONSUMER_CHECKPOINT_AGE: &str = "datastore_consumer_checkpoint_age_seconds";
/// Counter: samples that failed.
pub const SAMPLE_ERRORS: &str = "datastore_sample_errors_total";

/// The `collection` label of each collection, the same on every provider (as in
/// `datastore_operations_total`), in the order [`StoreStats::collections`] lists them.
const ROLES: [&str; 2] = ["health_events", "maintenance_events"];

/// What a sample covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// The connection pool only (local; no query beyond one probe checkout).
    Pool,
    /// The pool, [`DataStore::stats`] and every consumer's backlog.
    Everything,
}

/// Records one sample of `store`. Failures of the server-side parts are counted in
/// [`SAMPLE_ERRORS`] and logged, never returned: a sampler keeps sampling.
pub async fn sample_once(store: &dyn DataStore, what: Sampled) {
    let provider = store.provider().as_str();
    if let Some(pool) = store.pool_stats().await {
        record_pool(provider, &pool);
    }
    if what == Sampled::Pool {
        return;
    }
    match store.stats().await {
        Ok(stats) => record_stats(provider, &stats),
        Err(e) => failed(provider, "stats", &e),
    }
    for (role, collection) in ROLES.into_iter().zip([
        store.health_event_collection(),
        store.maintenance_event_collection(),
    ]) {
        let consumers = match collection.consumers().await {
            Ok(consumers) => consumers,
            Err(e) => {
                failed(provider, "consumers", &e);
                continue;
            }
        };
        for consumer in consumers {
            match collection.lag(&consumer.consumer, &Filter::All).await {
                Ok(lag) => record_consumer(provider, role, &consumer, &lag),
                Err(e) => failed(provider, "consumers", &e),
            }
        }
    }
}

/// Samples `store` every `every` until it is dropped (the task holds it weakly); a sample that
/// takes longer than `every` (at least 30 s) is abandoned and counted as `sample="timeout"`.
pub fn spawn(
    store: &Arc<dyn DataStore>,
    what: Sampled,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let store: Weak<dyn DataStore> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut period = tokio::time::interval(every);
        loop {
            period.tick().await;
            let Some(store) = store.upgrade() else {
                return;
            };
            // A sample stuck behind a lock must not stop the next ones.
            let limit = every.max(Duration::from_secs(30));
            if tokio::time::timeout(limit, sample_once(store.as_ref(), what))
                .await
                .is_err()
            {
                let provider = store.provider().as_str();
                metrics::counter!(SAMPLE_ERRORS, "provider" => provider, "sample" => "timeout")
                    .increment(1);
                tracing::warn!(?limit, "a metrics sample did not finish in time");
            }
        }
    })
}

fn record_pool(provider: &'static str, pool: &PoolStats) {
    let in_use = pool.size.saturating_sub(pool.idle);
    metrics::gauge!(POOL_CONNECTIONS, "provider" => provider, "state" => "idle")
        .set(f64::from(pool.idle));
    metrics::gauge!(POOL_CONNECTIONS, "provider" => provider, "state" => "in_use")
        .set(f64::from(in_use));
    metrics::gauge!(POOL_MAX_CONNECTIONS, "provider" => provider).set(f64::from(pool.max));
    if let Some(wait) = pool.acquire_seconds {
        metrics::gauge!(POOL_ACQUIRE_SECONDS, "provider" => provider).set(wait);
    }
}

fn record_stats(provider: &'static str, stats: &StoreStats) {
    for (role, c) in ROLES.into_iter().zip(&stats.collections) {
        metrics::gauge!(COLLECTION_DOCUMENTS, "provider" => provider, "collection" => role)
            .set(c.documents as f64);
        for (kind, bytes) in [("data", c.data_bytes), ("indexes", c.index_bytes)] {
            if let Some(bytes) = bytes {
                metrics::gauge!(COLLECTION_BYTES, "provider" => provider, "collection" => role, "kind" => kind)
                    .set(bytes as f64);
            }
        }
    }
    if let Some(h) = &stats.change_history {
        metrics::gauge!(CHANGE_HISTORY_CHANGES, "provider" => provider).set(h.changes as f64);
        if let Some(bytes) = h.bytes {
            metrics::gauge!(CHANGE_HISTORY_BYTES, "provider" => provider).set(bytes as f64);
        }
        if let Some(oldest) = h.oldest {
            metrics::gauge!(CHANGE_HISTORY_OLDEST_AGE, "provider" => provider)
                .set(seconds_since(oldest));
        }
    }
}

fn record_consumer(
    provider: &'static str,
    collection: &'static str,
    consumer: &ConsumerInfo,
    lag: &crate::change::Lag,
) {
    let labels = [
        ("provider", provider.to_owned()),
        ("collection", collection.to_owned()),
        ("client", consumer.consumer.clone()),
    ];
    metrics::gauge!(CONSUMER_EVENTS_BEHIND, &labels).set(lag.events_behind as f64);
    let oldest = lag.oldest_undelivered_age.unwrap_or_default();
    metrics::gauge!(CONSUMER_OLDEST_UNDELIVERED, &labels).set(oldest.as_secs_f64());
    if let Some(at) = consumer.checkpointed_at {
        metrics::gauge!(CONSUMER_CHECKPOINT_AGE, &labels).set(seconds_since(at));
    }
}

/// Seconds from `t` to now, never negative (a server clock ahead of ours reads as 0).
fn seconds_since(t: chrono::DateTime<Utc>) -> f64 {
    (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
}

fn failed(provider: &'static str, sample: &'static str, error: &crate::Error) {
    metrics::counter!(SAMPLE_ERRORS, "provider" => provider, "sample" => sample).increment(1);
    tracing::warn!(%error, sample, "a metrics sample failed");
}
