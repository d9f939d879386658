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
mod indexes;
mod settings;
mod stats;
mod update;

use std::sync::Arc;

use async_trait::async_trait;
use datastore_api::raw::{ChangeHistory, RawDataStore, RawTransaction};
use datastore_api::{
    Collection, DatastoreConfig, ProviderKind, Result, RetentionPolicy, Transaction,
};
use mongodb::bson::doc;
use mongodb::options::{
    Acknowledgment, ReadConcern, ReadPreference, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Database};
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

/// What to check when a connection that requires TLS gets no answer: a server without TLS
/// does not answer a TLS handshake, it waits.
fn tls_hint(settings: &MongoSettings) -> &'static str {
    if settings.require_tls {
        " With TLS required (DATASTORE_SSLMODE), a server that does not accept TLS never \
         answers: check that the server has TLS enabled, or that it should be used without"
    } else {
        ""
    }
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
        // The first answer is the connection: bounded by the connect timeout, as libpq's
        // `connect_timeout` bounds PostgreSQL's (server selection alone would wait longer).
        let measured =
            tokio::time::timeout(settings.connect_timeout, ServerClock::measure(&database)).await;
        let clock = match measured {
            Ok(Ok(clock)) => Arc::new(clock),
            Ok(Err(e)) if e.is_retryable() => {
                return Err(e.map_message(|m| format!("{m}{}", tls_hint(settings))))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(datastore_api::Error::transient(format!(
                    "MongoDB did not answer within {:?} (DATASTORE_CONNECT_TIMEOUT): is the \
                     address right and the server up?{}",
                    settings.connect_timeout,
                    tls_hint(settings)
                )))
            }
        };
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
        indexes::create(&store, settings).await?;
        indexes::verify(&store).await?;
        changes.prepare(&store.database, settings).await;
        Ok(store)
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
impl RawDataStore for MongoDataStore {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Mongodb
    }

    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    async fn ping(&self) -> Result<()> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn check_ready(&self) -> Result<()> {
        RawDataStore::ping(self).await?;
        indexes::verify(self).await
    }

    async fn close(&self) {
        self.client.clone().shutdown().await;
    }

    fn change_history(&self) -> Option<&dyn ChangeHistory> {
        Some(self)
    }

    async fn server_info(&self) -> Result<datastore_api::ServerInfo> {
        stats::server_info(self).await
    }

    async fn stats(&self) -> Result<datastore_api::StoreStats> {
        stats::stats(self).await
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let session = begin_session(&self.client).await?;
        Ok(Box::new(MongoTransaction {
            health: self.health.in_session(Arc::clone(&session)),
            maintenance: self.maintenance.in_session(Arc::clone(&session)),
            session,
        }))
    }
}

#[async_trait]
impl ChangeHistory for MongoDataStore {
    /// MongoDB's change history is the server's oplog, sized and trimmed by the server
    /// (`replication.oplogSizeMB`, `oplogMinRetentionHours`); there is nothing for the provider
    /// to prune, so this deletes nothing and returns 0. A checkpoint that falls off the oplog is
    /// reported as [`HistoryLost`](datastore_api::ErrorKind::HistoryLost) when watched.
    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64> {
        let _ = policy;
        Ok(0)
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
impl RawTransaction for MongoTransaction {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Mongodb
    }

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
