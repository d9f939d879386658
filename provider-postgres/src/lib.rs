//! # provider-postgres
//!
//! The PostgreSQL provider of the NVSentinel datastore API. Documents are stored as JSONB in the
//! canonical shape, with `id` and `created_at` as columns (one server clock, keyset pagination).
//! Filters compile to bound `jsonpath` predicates with MongoDB's semantics; updates are applied
//! read-modify-write under row locks by the API's one update implementation. The schema is
//! created by versioned migrations ([`mod@migrate`]) applied at connect under an advisory lock.
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

mod bridge;
mod changes;
mod checkout;
mod collection;
mod compile;
mod connect;
mod error;
mod indexes;
mod locks;
pub mod migrate;
mod pool_limits;
mod stats;
mod tls;
mod wakeup;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datastore_api::raw::{ChangeHistory, RawDataStore, RawTransaction};
use datastore_api::{
    Collection, DatastoreConfig, Error, PoolConfig, ProviderKind, Result, RetentionPolicy, SslMode,
    Transaction,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;
use tokio::sync::Mutex;

use collection::{Exec, SharedTx};
pub use collection::{PgCollection, Table};
pub use migrate::{migrate, MigrationReport};

/// How to reach the configured server: sqlx's options and, unless TLS is off, the bridge
/// through which the pool connects (libpq's sslmodes on our rustls configuration).
struct Plan {
    options: PgConnectOptions,
    bridge: Option<bridge::Bridge>,
    target: String,
    /// How long opening one connection may take: the connect timeout, or through the bridge
    /// what its connector may take at most (`allow` and `prefer` may make two attempts).
    connect_limit: Duration,
}

/// Plans the connection. Private: the options' `Debug` output would show the password.
fn plan(config: &DatastoreConfig) -> Result<Plan> {
    if config.provider != ProviderKind::Postgresql {
        return Err(Error::configuration(format!(
            "DATASTORE_PROVIDER is {}, not postgresql",
            config.provider
        )));
    }
    let c = &config.connection;
    let mut options = PgConnectOptions::new()
        .host(&c.host)
        .port(c.port)
        .database(&c.database)
        .username(&c.username)
        .application_name("nvsentinel-datastore")
        .ssl_mode(PgSslMode::Disable);
    if let Some(p) = &c.password {
        options = options.password(p.expose());
    }
    if let Some(t) = c.statement_timeout {
        options = options.options([("statement_timeout", t.as_millis().to_string())]);
    }
    let connector = connect::Connector::new(c)?;
    let bridge = match c.ssl_mode {
        SslMode::Disable => None,
        _ => Some(bridge::Bridge::bind(Arc::clone(&connector))?),
    };
    if let Some(b) = &bridge {
        options = b.apply(options);
    }
    let connect_limit = match bridge {
        Some(_) => connector.open_limit(),
        None => connector.timeout(),
    };
    Ok(Plan {
        options,
        bridge,
        target: connector.target(),
        connect_limit,
    })
}

impl Plan {
    /// Starts serving the bridge for `pool` (until it closes).
    fn serve(&mut self, pool: &PgPool) {
        if let Some(b) = self.bridge.as_mut() {
            b.serve_until_closed(pool.close_event());
        }
    }

    /// One direct connection, so that an unreachable server, a TLS problem or a bad credential
    /// fails at once with a typed error that says why, instead of after the pool's acquire
    /// timeout. Bounded by [`Plan::connect_limit`].
    async fn probe(&self) -> Result<()> {
        let attempt = sqlx::ConnectOptions::connect(&self.options);
        let outcome = tokio::time::timeout(self.connect_limit, attempt).await;
        let failure = self.bridge.as_ref().and_then(bridge::Bridge::take_failure);
        match (outcome, failure) {
            (Ok(Ok(conn)), _) => {
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            }
            (_, Some(cause)) => Err(cause),
            (Err(_), None) => Err(connect::no_answer(&self.target, self.connect_limit)),
            (Ok(Err(e)), None) => Err(error::map_connect_err(&self.target, e)),
        }
    }
}

struct Shared {
    pool: PgPool,
    /// None with pools too small to give a connection to listening.
    wakeups: Option<Arc<wakeup::TickWakeups>>,
    /// Runs while the store lives.
    _idle_trimmer: pool_limits::IdleTrimmer,
}

/// The PostgreSQL [`DataStore`](datastore_api::DataStore).
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
    ///
    /// TLS follows libpq's `sslmode` exactly (see the README's "Certificate authentication");
    /// every connection attempt is bounded by `connect_timeout`, and a failure says which
    /// server, which step and which file.
    pub async fn connect(config: &DatastoreConfig) -> Result<Self> {
        Self::connect_planned(plan(config)?, config.pool).await
    }

    /// Connects with explicit sqlx options (plaintext: sqlx is built without TLS here; use
    /// [`PgDataStore::connect`] for TLS) and pool settings, then migrates.
    ///
    /// All three pool settings are applied: `max_connections` caps the pool,
    /// `connection_max_lifetime` retires old connections (an expired one is never handed out),
    /// and a released connection is closed instead of kept when `max_idle_connections` are
    /// already idle (what releases racing each other kept beyond that is closed within half a
    /// second).
    pub async fn connect_with(options: PgConnectOptions, pool: PoolConfig) -> Result<Self> {
        if matches!(
            options.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) {
            return Err(Error::configuration(
                "sqlx options that require TLS cannot be used here (this build's sqlx has no TLS): connect with PgDataStore::connect and DATASTORE_SSLMODE, where libpq's sslmodes apply",
            ));
        }
        let options = options.ssl_mode(PgSslMode::Disable);
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let plan = Plan {
            options,
            bridge: None,
            target,
            connect_limit: datastore_api::config::DEFAULT_CONNECT_TIMEOUT,
        };
        Self::connect_planned(plan, pool).await
    }

    #[tracing::instrument(name = "datastore.connect", skip_all, fields(server = %plan.target))]
    async fn connect_planned(mut plan: Plan, pool: PoolConfig) -> Result<Self> {
        let cell: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let max_idle = pool.max_idle_connections as usize;
        let max_lifetime = pool.connection_max_lifetime;
        let hook_cell = Arc::clone(&cell);
        let pg_pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(0)
            .max_lifetime(Some(pool.connection_max_lifetime))
            .idle_timeout(Some(Duration::from_secs(600)))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| Box::pin(checkout::prepare_session(conn)))
            .before_acquire(move |_conn, meta| {
                Box::pin(async move { Ok(pool_limits::usable_idle(&meta, max_lifetime)) })
            })
            .after_release(move |_conn, _meta| {
                let shared = hook_cell.get().and_then(Weak::upgrade);
                let keep = pool_limits::keep_released(shared.as_ref().map(|s| &s.pool), max_idle);
                Box::pin(async move { Ok(keep) })
            })
            .connect_lazy_with(plan.options.clone());
        plan.serve(&pg_pool);
        plan.probe().await?;
        let shared = Arc::new(Shared {
            pool: pg_pool.clone(),
            _idle_trimmer: pool_limits::IdleTrimmer::start(pg_pool.clone(), max_idle),
            wakeups: (pool.max_connections >= wakeup::MIN_POOL_SIZE)
                .then(|| wakeup::TickWakeups::new(pg_pool.clone(), pool.connection_max_lifetime)),
        });
        let _ = cell.set(Arc::downgrade(&shared));
        migrate(&pg_pool).await?;
        indexes::verify(&pg_pool).await?;
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
impl RawDataStore for PgDataStore {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Postgresql
    }

    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.shared.pool)
            .await
            .map_err(error::map_err)?;
        Ok(())
    }

    async fn check_ready(&self) -> Result<()> {
        RawDataStore::ping(self).await?;
        indexes::verify(&self.shared.pool).await
    }

    async fn close(&self) {
        self.shared.pool.close().await;
    }

    fn change_history(&self) -> Option<&dyn ChangeHistory> {
        Some(self)
    }

    async fn pool_stats(&self) -> Option<datastore_api::PoolStats> {
        let pool = &self.shared.pool;
        let (size, idle) = (pool.size(), pool.num_idle());
        let started = std::time::Instant::now();
        let probe = tokio::time::timeout(Duration::from_secs(5), pool.acquire()).await;
        Some(datastore_api::PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
            // A probe that waited out its limit (or failed) still waited that long.
            acquire_seconds: Some(started.elapsed().as_secs_f64())
                .filter(|_| !matches!(probe, Ok(Err(_)))),
        })
    }

    async fn server_info(&self) -> Result<datastore_api::ServerInfo> {
        stats::server_info(&self.shared.pool).await
    }

    async fn stats(&self) -> Result<datastore_api::StoreStats> {
        stats::stats(&self.shared.pool).await
    }

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

#[async_trait]
impl ChangeHistory for PgDataStore {
    async fn prune(&self, policy: &RetentionPolicy) -> Result<u64> {
        changes::prune(&self.shared.pool, policy).await
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
impl RawTransaction for PgTransaction {
    fn provider(&self) -> ProviderKind {
        ProviderKind::Postgresql
    }

    fn health_event_collection(&self) -> &dyn Collection {
        &self.health
    }

    fn maintenance_event_collection(&self) -> &dyn Collection {
        &self.maintenance
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.take().await?.commit().await.map_err(error::map_err)
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.take().await?.rollback().await.map_err(error::map_err)
    }
}

impl PgDataStore {
    /// Connects to a `postgres://` URL in plaintext (for test harnesses and tools on trusted
    /// networks), then migrates. A URL asking for TLS (`sslmode=require`, `verify-ca`,
    /// `verify-full`) is refused: TLS is configured through [`PgDataStore::connect`] and a
    /// [`DatastoreConfig`], where libpq's sslmodes apply.
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
    let mut plan = plan(config)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(plan.connect_limit)
        .connect_lazy_with(plan.options.clone());
    plan.serve(&pool);
    plan.probe().await?;
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
/// throwaway server started by `datastore-testkit`), for tests: returns its name.
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
