//! # provider-postgres
//!
//! The PostgreSQL provider of the NVSentinel datastore API. Documents are stored as JSONB in the
//! canonical shape, with `id` and `created_at` as columns (one server clock, keyset pagination).
//! Filters compile to bound `jsonpath` predicates with MongoDB's semantics; updates are applied
//! read-modify-write under row locks by the API's one update implementation. The schema is
//! created by versioned migrations ([`migrate`]) applied at connect under an advisory lock.
//!
//! ```no_run
//! # async fn demo() -> datastore_api::Result<()> {
//! use datastore_api::{DataStore, DatastoreConfig, Filter};
//! let config = DatastoreConfig::from_env()?;
//! let store = provider_postgres::PgDataStore::connect(&config).await?;
//! let latest = store.health_events().find_latest_event_for_node("node-1").await?;
//! println!("{latest:?}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod changes;
mod collection;
mod compile;
mod error;
mod locks;
pub mod migrate;
mod wakeup;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datastore_api::{
    Collection, DataStore, DatastoreConfig, Error, PoolConfig, ProviderKind, Result,
    RetentionPolicy, SslMode, Transaction,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use tokio::sync::Mutex;

use collection::{Exec, SharedTx};
pub use collection::{PgCollection, Table};
pub use migrate::{migrate, MigrationReport};

/// Builds sqlx connect options from the configuration (TLS files are passed through to rustls).
/// Private: the options' `Debug` output would show the password.
fn connect_options(config: &DatastoreConfig) -> Result<PgConnectOptions> {
    if config.provider != ProviderKind::Postgresql {
        return Err(Error::configuration(format!(
            "DATASTORE_PROVIDER is {}, not postgresql",
            config.provider
        )));
    }
    let c = &config.connection;
    let mut o = PgConnectOptions::new()
        .host(&c.host)
        .port(c.port)
        .database(&c.database)
        .username(&c.username)
        .application_name("nvsentinel-datastore")
        .ssl_mode(match c.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    if let Some(p) = &c.password {
        o = o.password(p.expose());
    }
    if let Some(p) = &c.ssl_root_cert {
        o = o.ssl_root_cert(p);
    }
    if let Some(p) = &c.ssl_cert {
        o = o.ssl_client_cert(p);
    }
    if let Some(p) = &c.ssl_key {
        o = o.ssl_client_key(p);
    }
    Ok(o)
}

struct Shared {
    pool: PgPool,
    /// None with pools too small to give a connection to listening.
    wakeups: Option<Arc<wakeup::TickWakeups>>,
}

/// The PostgreSQL [`DataStore`].
#[derive(Clone)]
pub struct PgDataStore {
    shared: Arc<Shared>,
    health: PgCollection,
    maintenance: PgCollection,
    capture: bool,
}

impl std::fmt::Debug for PgDataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDataStore")
            .field("pool_size", &self.shared.pool.size())
            .finish_non_exhaustive()
    }
}

impl PgDataStore {
    /// Connects with the configuration, applies pending migrations and returns the store.
    pub async fn connect(config: &DatastoreConfig) -> Result<Self> {
        Self::connect_with(connect_options(config)?, config.pool).await
    }

    /// Connects with explicit sqlx options and pool settings, then migrates.
    ///
    /// All three pool settings are applied: `max_connections` caps the pool,
    /// `connection_max_lifetime` retires old connections, and a released connection is closed
    /// instead of kept when `max_idle_connections` are already idle.
    #[tracing::instrument(name = "datastore.connect", skip_all)]
    pub async fn connect_with(options: PgConnectOptions, pool: PoolConfig) -> Result<Self> {
        let cell: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let max_idle = pool.max_idle_connections as usize;
        let hook_cell = Arc::clone(&cell);
        let pg_pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(0)
            .max_lifetime(Some(pool.connection_max_lifetime))
            .idle_timeout(Some(Duration::from_secs(600)))
            .acquire_timeout(Duration::from_secs(30))
            .after_release(move |_conn, _meta| {
                let keep = match hook_cell.get().and_then(Weak::upgrade) {
                    Some(shared) => shared.pool.num_idle() < max_idle,
                    None => true,
                };
                Box::pin(async move { Ok(keep) })
            })
            .connect_lazy_with(options.clone());
        // One direct attempt first, so that an unreachable server or a bad credential fails at
        // once with a typed error (callers retry `Transient` ones) instead of after the pool's
        // acquire timeout.
        let probe: sqlx::PgConnection = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(error::map_err)?;
        let _ = sqlx::Connection::close(probe).await;
        let shared = Arc::new(Shared {
            pool: pg_pool.clone(),
            wakeups: (pool.max_connections >= wakeup::MIN_POOL_SIZE)
                .then(|| wakeup::TickWakeups::new(pg_pool.clone())),
        });
        let _ = cell.set(Arc::downgrade(&shared));
        migrate(&pg_pool).await?;
        Ok(PgDataStore::with_capture(shared, true))
    }

    fn with_capture(shared: Arc<Shared>, capture: bool) -> Self {
        let collection = |table| {
            let c = PgCollection::new(table, Exec::Pool(shared.pool.clone()), capture);
            match &shared.wakeups {
                Some(w) => c.with_wakeups(Arc::clone(w)),
                None => c,
            }
        };
        PgDataStore {
            health: collection(Table::HealthEvents),
            maintenance: collection(Table::MaintenanceEvents),
            capture,
            shared,
        }
    }

    /// The same store with change capture off: writes are not logged, so change streams do not
    /// see them. Only for measuring the cost of capture and for bulk loads nobody watches.
    pub fn without_change_capture(self) -> Self {
        PgDataStore::with_capture(self.shared, false)
    }

    /// The underlying sqlx pool (for diagnostics and tests).
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }
}

#[async_trait]
impl DataStore for PgDataStore {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Postgresql
    }

    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    #[tracing::instrument(name = "datastore.ping", skip_all)]
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.shared.pool)
            .await
            .map_err(error::map_err)?;
        Ok(())
    }

    async fn close(&self) {
        self.shared.pool.close().await;
    }

    #[tracing::instrument(name = "datastore.prune_change_history", skip_all)]
    async fn prune_change_history(&self, policy: &RetentionPolicy) -> Result<u64> {
        changes::prune(&self.shared.pool, policy).await
    }

    #[tracing::instrument(name = "datastore.begin", skip_all)]
    async fn begin(&self) -> Result<Box<dyn Transaction>> {
        let tx = self.shared.pool.begin().await.map_err(error::map_err)?;
        let shared: SharedTx = Arc::new(Mutex::new(Some(tx)));
        Ok(Box::new(PgTransaction {
            health: PgCollection::new(
                Table::HealthEvents,
                Exec::Tx(Arc::clone(&shared)),
                self.capture,
            ),
            maintenance: PgCollection::new(
                Table::MaintenanceEvents,
                Exec::Tx(Arc::clone(&shared)),
                self.capture,
            ),
            tx: shared,
        }))
    }
}

/// A PostgreSQL transaction over both collections.
struct PgTransaction {
    tx: SharedTx,
    health: PgCollection,
    maintenance: PgCollection,
}

impl PgTransaction {
    async fn take(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.tx
            .lock()
            .await
            .take()
            .ok_or_else(|| Error::permanent("the transaction has already ended"))
    }
}

#[async_trait]
impl Transaction for PgTransaction {
    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    #[tracing::instrument(name = "datastore.commit", skip_all)]
    async fn commit(self: Box<Self>) -> Result<()> {
        self.take().await?.commit().await.map_err(error::map_err)
    }

    #[tracing::instrument(name = "datastore.rollback", skip_all)]
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.take().await?.rollback().await.map_err(error::map_err)
    }
}

impl PgDataStore {
    /// Connects to a `postgres://` URL (TLS and other settings as URL parameters), then migrates.
    pub async fn connect_url(url: &str, pool: PoolConfig) -> Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| Error::configuration("invalid PostgreSQL URL"))?;
        Self::connect_with(options, pool).await
    }
}

/// Applies pending migrations to the configured database and reports what was applied, without
/// opening the stores (what `datastore migrate` runs).
pub async fn migrate_database(config: &DatastoreConfig) -> Result<MigrationReport> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(config)?)
        .await
        .map_err(error::map_err)?;
    let report = migrate(&pool).await;
    pool.close().await;
    report
}

/// Creates database `name` through the maintenance database at `admin_url` (for test harnesses
/// and the demo). `name` must be a plain identifier.
pub async fn create_database(admin_url: &str, name: &str) -> Result<()> {
    use sqlx::Connection;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid_input(format!(
            "database name {name:?} must be lowercase letters, digits and underscores"
        )));
    }
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(error::map_err)?;
    // Identifiers cannot be bound; the name was checked above.
    let sql = format!("CREATE DATABASE {name}");
    sqlx::query(&sql)
        .execute(&mut conn)
        .await
        .map_err(error::map_err)?;
    conn.close().await.map_err(error::map_err)?;
    Ok(())
}

/// A fresh, uniquely named database on the test server (`DATASTORE_TEST_POSTGRES_URL`, or a
/// throwaway server started by `pg-harness`), for tests: returns its name.
pub async fn fresh_test_database(admin_url: &str) -> Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    create_database(admin_url, &name).await?;
    Ok(name)
}
