//! The throwaway servers the demo, the bench and the CLI's tests run on: an embedded
//! PostgreSQL started with `datastore-testkit`, or the MongoDB stand-in it starts.

use std::sync::Arc;

use datastore::{DataStore, PoolConfig};
use datastore_testkit::postgres::PgServer;
use datastore_tools::error::{CliError, CliResult, SqlContext};
use provider_postgres::PgDataStore;

/// The database the demo creates on the embedded server.
pub const DEMO_DATABASE: &str = "nvsentinel";

/// The pool of the stores the demo and the bench open on a throwaway server: the default size,
/// and every connection kept open between uses. With fewer idle connections kept than the
/// flow's stages use at once, every burst closes connections and opens new ones, and the
/// server processes forked for them cost more CPU than the flow's own statements (measured:
/// 2.5x slower end to end, half the CPU in the kernel).
pub fn throwaway_pool() -> PoolConfig {
    let d = PoolConfig::default();
    PoolConfig {
        max_idle_connections: d.max_connections,
        ..d
    }
}

/// Starts a throwaway PostgreSQL server (blocking: initdb and start take a second or two).
/// Dropping the returned value stops it and deletes its files.
pub fn start_embedded() -> CliResult<PgServer> {
    PgServer::start().map_err(CliError::embedded)
}

/// Creates the demo database on the embedded server and connects to it (which applies the
/// schema migrations). Returns the store and the server's version string.
pub async fn connect_embedded(server: &PgServer) -> CliResult<(PgDataStore, String)> {
    provider_postgres::create_database(&server.url("postgres"), DEMO_DATABASE).await?;
    let store = PgDataStore::connect_url(&server.url(DEMO_DATABASE), throwaway_pool()).await?;
    let version = server_version(&store).await?;
    Ok((store, version))
}

/// The server's version (`SHOW server_version`, e.g. `15.8 (Debian 15.8-0+deb12u1)`),
/// shortened to the version number.
pub async fn server_version(store: &PgDataStore) -> CliResult<String> {
    let full: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(store.pool())
        .await
        .sql_context(|| "reading the server version".to_owned())?;
    Ok(full
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Starts the MongoDB stand-in (SecantusDB unless `DATASTORE_TEST_MONGODB_STAND_IN` says
/// jongodb; installed by `cargo xtask test`, see `datastore-testkit`).
/// Dropping the returned value stops it.
pub fn start_mongo_stand_in() -> CliResult<datastore_testkit::mongo::StandInServer> {
    datastore_testkit::mongo::StandInServer::start().map_err(CliError::embedded)
}

/// Connects to the stand-in's demo database (creating the indexes).
pub async fn connect_mongo_stand_in(
    server: &datastore_testkit::mongo::StandInServer,
) -> CliResult<Arc<dyn DataStore>> {
    let settings = provider_mongo::MongoSettings::from_uri(server.uri(), DEMO_DATABASE);
    Ok(Arc::new(
        provider_mongo::MongoDataStore::connect_with(&settings).await?,
    ))
}
