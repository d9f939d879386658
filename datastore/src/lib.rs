//! # datastore
//!
//! What NVSentinel components depend on: the whole [`datastore_api`] (re-exported),
//! aggregation pipelines ([`aggregate`], the `datastore-query` crate, with its [`Aggregate`]
//! trait in scope here), the health-events [`analyzer`] (the `datastore-analyzer` crate), and
//! [`open`], which connects to the provider named by the configuration (`DATASTORE_PROVIDER`).
//! Each provider is a cargo feature (`postgresql` and `mongodb`, both on by default). Asking
//! for a provider that is not compiled in is a [`Configuration`](ErrorKind::Configuration)
//! error, never a panic.
//!
//! ```no_run
//! # async fn demo() -> datastore::Result<()> {
//! use datastore::{DataStore, Filter};
//! let store = datastore::open_from_env().await?;
//! let events = store.health_events().find_by_node("node-1").await?;
//! let quarantined = store
//!     .health_events()
//!     .find(&Filter::eq("healtheventstatus.nodequarantined", "Quarantined"))
//!     .await?;
//! println!("{} events, {} quarantined", events.len(), quarantined.len());
//! store.close().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// The README's examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::sync::Arc;

#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use datastore_analyzer as analyzer;
pub use datastore_api::*;
pub use datastore_query as aggregate;
pub use datastore_query::Aggregate;

/// Opens the configured provider (connecting, and applying schema migrations where the
/// provider has them). With the cargo feature `prometheus` and `DATASTORE_METRICS_ADDR` set,
/// it also serves the process's metrics there and samples the store's pool while it lives.
pub async fn open(config: &DatastoreConfig) -> Result<Arc<dyn DataStore>> {
    #[cfg(feature = "prometheus")]
    let exporting = prometheus::install_from_env()?.is_some();
    let store = connect(config).await?;
    #[cfg(feature = "prometheus")]
    if exporting {
        metrics::sample::spawn(
            &store,
            metrics::sample::Sampled::Pool,
            prometheus::POOL_SAMPLE_INTERVAL,
        );
    }
    Ok(store)
}

/// [`open`] without the metrics exporter: for short-lived tools (the `datastore` command's)
/// that must not take the address a component serves its metrics on.
pub async fn connect(config: &DatastoreConfig) -> Result<Arc<dyn DataStore>> {
    match config.provider {
        #[cfg(feature = "postgresql")]
        ProviderKind::Postgresql => Ok(Arc::new(provider_postgres::PgDataStore::connect(config).await?)),
        #[cfg(feature = "mongodb")]
        ProviderKind::Mongodb => Ok(Arc::new(provider_mongo::MongoDataStore::connect(config).await?)),
        other => Err(Error::configuration(format!(
            "DATASTORE_PROVIDER={other}: this build does not include the {other} provider (enable the cargo feature `{other}`)"
        ))),
    }
}

/// [`connect`] with [`DatastoreConfig::from_env`].
pub async fn connect_from_env() -> Result<Arc<dyn DataStore>> {
    connect(&DatastoreConfig::from_env()?).await
}

/// [`open`] with [`DatastoreConfig::from_env`].
pub async fn open_from_env() -> Result<Arc<dyn DataStore>> {
    open(&DatastoreConfig::from_env()?).await
}

/// Outcome of [`migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Versions applied now.
    pub applied: Vec<i64>,
    /// Schema version after the call.
    pub version: i64,
    /// Newest version this build knows.
    pub latest: i64,
}

/// Applies pending schema migrations for the configured provider without opening the stores
/// (PostgreSQL). MongoDB has no versioned schema: this creates its indexes and reports version 0.
pub async fn migrate(config: &DatastoreConfig) -> Result<SchemaStatus> {
    match config.provider {
        #[cfg(feature = "postgresql")]
        ProviderKind::Postgresql => {
            let report = provider_postgres::migrate_database(config).await?;
            Ok(SchemaStatus {
                applied: report.applied,
                version: report.version,
                latest: provider_postgres::migrate::latest_version(),
            })
        }
        #[cfg(feature = "mongodb")]
        ProviderKind::Mongodb => {
            // MongoDB has no versioned schema: connecting creates the indexes (idempotently).
            let store = provider_mongo::MongoDataStore::connect(config).await?;
            store.close().await;
            Ok(SchemaStatus {
                applied: Vec::new(),
                version: 0,
                latest: 0,
            })
        }
        other => Err(Error::configuration(format!(
            "DATASTORE_PROVIDER={other}: this build does not include the {other} provider"
        ))),
    }
}

/// Runs in builds without the MongoDB provider (`--no-default-features --features postgresql`).
#[cfg(all(test, not(feature = "mongodb")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provider_not_compiled_in_is_a_configuration_error() {
        let vars = [
            ("DATASTORE_PROVIDER", "mongodb"),
            ("DATASTORE_HOST", "localhost"),
            ("DATASTORE_USERNAME", "u"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = DatastoreConfig::from_vars(&vars).unwrap();
        let err = open(&config)
            .await
            .err()
            .expect("mongodb is not compiled in");
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }
}
