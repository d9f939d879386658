//! # provider-mongo
//!
//! The MongoDB provider of the NVSentinel datastore API, on the official `mongodb` driver
//! (3.x, rustls). It stores the same canonical documents as the PostgreSQL provider, in the
//! collections NVSentinel uses today (`HealthEvents`, `MaintenanceEvents`, `ResumeTokens`;
//! names configurable), and passes the same conformance suite.
//!
//! - Documents: `_id` is an ObjectId, `createdAt` a BSON date, numbers Int64/Double
//!   (the private `convert` module has the table).
//! - Filters compile to MongoDB query documents with the API's semantics; sorts on user paths
//!   and `distinct` are evaluated in the provider where MongoDB's own rules differ.
//! - Updates use `$set`/`$unset`/`$inc`/`$push`; `update_many`, `insert_many` and
//!   `insert_idempotent` run in a transaction so they are all-or-nothing, as the API promises.
//! - Indexes NVSentinel creates (30-day TTL on `createdAt`, configurable) are created at
//!   connect, idempotently.
//! - Majority write and read concerns for data and checkpoints.
//!
//! Needs a replica set (transactions and change streams do): MongoDB 6.0+ for post-images.
//!
//! ```no_run
//! # async fn demo() -> datastore_api::Result<()> {
//! use datastore_api::DataStore;
//! let settings = provider_mongo::MongoSettings::from_uri("mongodb://127.0.0.1:27017/?replicaSet=rs0", "nvsentinel");
//! let store = provider_mongo::MongoDataStore::connect_with(&settings).await?;
//! store.ping().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod changes;
mod clock;
mod collection;
mod convert;
mod error;
mod filter;
mod settings;
mod update;

use std::sync::Arc;

use async_trait::async_trait;
use datastore_api::{
    Collection, DataStore, DatastoreConfig, ProviderKind, Result, RetentionPolicy, Transaction,
};
use mongodb::bson::doc;
use mongodb::options::{
    Acknowledgment, IndexOptions, ReadConcern, ReadPreference, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Database, IndexModel};
use tokio::sync::Mutex;

pub use collection::MongoCollection;
pub use settings::MongoSettings;

use changes::ChangeSupport;
use clock::ServerClock;
use collection::SharedSession;
use error::map_err;

/// A connected MongoDB datastore.
pub struct MongoDataStore {
    /// The combined client certificate file the driver reads, deleted with the store.
    _client_pem: Option<settings::CombinedPem>,
    client: Client,
    database: Database,
    health: MongoCollection,
    maintenance: MongoCollection,
}

impl MongoDataStore {
    /// Connects with the settings of `config` plus the `MONGODB_*` environment variables
    /// (see [`MongoSettings::from_config`]).
    pub async fn connect(config: &DatastoreConfig) -> Result<MongoDataStore> {
        Self::connect_with(&MongoSettings::from_config(config)?).await
    }

    /// Connects with explicit settings, checks the server answers, and creates the indexes.
    #[tracing::instrument(name = "datastore.connect", skip_all, fields(provider = "mongodb", database = %settings.database))]
    pub async fn connect_with(settings: &MongoSettings) -> Result<MongoDataStore> {
        let (options, client_pem) = settings.client_options().await?;
        let client = Client::with_options(options).map_err(map_err)?;
        let database = client.database_with_options(
            &settings.database,
            mongodb::options::DatabaseOptions::builder()
                .write_concern(majority())
                .read_concern(ReadConcern::majority())
                // Transactions need the primary, and update_one reads its target there too.
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .build(),
        );
        let clock = Arc::new(ServerClock::measure(&database).await?);
        let tokens = database.collection::<mongodb::bson::Document>(&settings.token_collection);
        let changes = Arc::new(ChangeSupport::new(tokens.clone()));
        let collection = |name: &str, role| MongoCollection {
            name: name.to_owned(),
            role,
            client: client.clone(),
            inner: database.collection(name),
            clock: Arc::clone(&clock),
            session: None,
            changes: Arc::clone(&changes),
        };
        let store = MongoDataStore {
            _client_pem: client_pem,
            health: collection(&settings.health_event_collection, "health_events"),
            maintenance: collection(&settings.maintenance_event_collection, "maintenance_events"),
            client,
            database,
        };
        store.create_indexes(settings).await?;
        changes.prepare(&store.database, settings).await;
        Ok(store)
    }

    /// Creates NVSentinel's indexes (idempotent: `createIndexes` with unchanged definitions is
    /// a no-op).
    async fn create_indexes(&self, settings: &MongoSettings) -> Result<()> {
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
                .keys(doc! { convert::IDEMPOTENCY_FIELD: 1 })
                .options(
                    IndexOptions::builder()
                        .name("idempotency_key_unique".to_owned())
                        .unique(true)
                        .partial_filter_expression(
                            doc! { convert::IDEMPOTENCY_FIELD: { "$exists": true } },
                        )
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
        ];
        ensure_indexes(&self.health, health).await?;
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
        ensure_indexes(&self.maintenance, maintenance).await
    }

    /// The driver's client (for administration and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database the collections live in.
    pub fn database(&self) -> &Database {
        &self.database
    }
}

/// Creates each index unless an equivalent one exists. An index on the same keys under
/// another name or with other options (one a deployment created itself, or a TTL changed since)
/// is left alone with a warning: connecting must not fail over it.
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

fn majority() -> WriteConcern {
    WriteConcern::builder().w(Acknowledgment::Majority).build()
}

/// Starts a session with a transaction (snapshot reads, majority writes).
pub(crate) async fn begin_session(client: &Client) -> Result<SharedSession> {
    let mut session = client.start_session().await.map_err(map_err)?;
    session
        .start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(majority())
        .await
        .map_err(map_err)?;
    Ok(Arc::new(Mutex::new(session)))
}

#[async_trait]
impl DataStore for MongoDataStore {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Mongodb
    }

    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    #[tracing::instrument(name = "datastore.ping", skip_all, fields(provider = "mongodb"))]
    async fn ping(&self) -> Result<()> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.client.clone().shutdown().await;
    }

    /// MongoDB's change history is the server's oplog, sized and trimmed by the server
    /// (`replication.oplogSizeMB`, `oplogMinRetentionHours`); there is nothing for the provider
    /// to prune, so this deletes nothing and returns 0. A checkpoint that falls off the oplog is
    /// reported as [`HistoryLost`](datastore_api::ErrorKind::HistoryLost) when watched.
    async fn prune_change_history(&self, policy: &RetentionPolicy) -> Result<u64> {
        let _ = policy;
        Ok(0)
    }

    #[tracing::instrument(name = "datastore.begin", skip_all, fields(provider = "mongodb"))]
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let session = begin_session(&self.client).await?;
        Ok(Box::new(MongoTransaction {
            health: self.health.in_session(Arc::clone(&session)),
            maintenance: self.maintenance.in_session(Arc::clone(&session)),
            session,
        }))
    }
}

/// A multi-document transaction: the collections share one session.
///
/// MongoDB aborts a transaction at its first failed write; later calls then fail too, and
/// [`Transaction::commit`] reports the abort.
pub struct MongoTransaction {
    session: SharedSession,
    health: MongoCollection,
    maintenance: MongoCollection,
}

#[async_trait]
impl Transaction for MongoTransaction {
    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let mut s = self.session.lock().await;
        s.commit_transaction().await.map_err(map_err)
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let mut s = self.session.lock().await;
        s.abort_transaction().await.map_err(map_err)
    }
}
