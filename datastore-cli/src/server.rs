//! Where the demo's store lives: the server the `DATASTORE_*` configuration names, or a
//! throwaway embedded PostgreSQL started with `datastore-testkit` (or, with `DATASTORE_PROVIDER=mongodb`,
//! the MongoDB stand-in started with `datastore-testkit`).

use std::sync::Arc;

use datastore::{DataStore, DatastoreConfig, PoolConfig};
use datastore_testkit::postgres::PgServer;
use provider_postgres::PgDataStore;

use crate::error::{CliResult, SqlContext};

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
    Ok(PgServer::start()?)
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

/// Opens the store named by the configuration (migrating it) and describes the target
/// without the password.
pub async fn connect_configured(
    config: &DatastoreConfig,
) -> CliResult<(Arc<dyn DataStore>, String)> {
    let store = datastore::connect(config).await?;
    Ok((store, describe(config)))
}

/// The server `config` names, without the password: MONGODB_URI when the MongoDB provider
/// connects to it, else the host, port, database, user and sslmode.
pub fn describe(config: &DatastoreConfig) -> String {
    let c = &config.connection;
    let mongo_uri = std::env::var("MONGODB_URI")
        .ok()
        .filter(|u| !u.trim().is_empty());
    match mongo_uri {
        // The MongoDB provider connects to MONGODB_URI when it is set, not to the host and port.
        Some(uri) if config.provider == datastore::ProviderKind::Mongodb => {
            format!("{} at {}", config.provider, without_credentials(&uri))
        }
        _ => format!(
            "{} at {}:{}, database {:?}, user {:?}, sslmode {}",
            config.provider,
            host_without_credentials(&c.host),
            c.port,
            c.database,
            c.username,
            c.ssl_mode.as_str()
        ),
    }
}

/// Opens the configured store without serving metrics, runs `command` on it, closes it, and
/// prints what `command` returned: the shape of the operator commands.
pub async fn print_on_configured(
    command: impl for<'a> AsyncFnOnce(&'a dyn DataStore) -> CliResult<String>,
) -> CliResult<()> {
    let store = datastore::connect_from_env().await?;
    let out = command(store.as_ref()).await;
    store.close().await;
    crate::output::print(&out?)?;
    Ok(())
}

/// `uri` with any `user:password@` replaced by `***@`.
fn without_credentials(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "(a MONGODB_URI that is not a URI)".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_owned(),
    }
}

/// `host` with any `user:password@` an operator put in front replaced by `***@`.
fn host_without_credentials(host: &str) -> String {
    match host.rfind('@') {
        Some(at) => format!("***@{}", &host[at + 1..]),
        None => host.to_owned(),
    }
}

/// True when `DATASTORE_PROVIDER` asks for MongoDB.
pub fn wants_mongodb() -> bool {
    std::env::var("DATASTORE_PROVIDER")
        .ok()
        .and_then(|p| p.parse::<datastore::ProviderKind>().ok())
        == Some(datastore::ProviderKind::Mongodb)
}

/// Starts the MongoDB stand-in (SecantusDB unless `DATASTORE_TEST_MONGODB_STAND_IN` says
/// jongodb; installed by `cargo xtask test`, see `datastore-testkit`).
/// Dropping the returned value stops it.
pub fn start_mongo_stand_in() -> CliResult<datastore_testkit::mongo::StandInServer> {
    Ok(datastore_testkit::mongo::StandInServer::start()?)
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

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_never_shown() {
        assert_eq!(
            super::without_credentials("mongodb://u:p%40ss@db:27017/x?replicaSet=rs0"),
            "mongodb://***@db:27017/x?replicaSet=rs0"
        );
        assert_eq!(
            super::without_credentials("mongodb://db:1/"),
            "mongodb://db:1/"
        );
        assert!(!super::without_credentials("nonsense").contains("nonsense"));
    }

    #[test]
    fn credentials_in_the_host_are_never_shown() {
        let vars = [
            ("DATASTORE_PROVIDER", "postgresql"),
            ("DATASTORE_HOST", "admin:hunter2@db.example"),
            ("DATASTORE_USERNAME", "app"),
        ];
        let vars = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = datastore::DatastoreConfig::from_vars(&vars).expect("config");
        let shown = super::describe(&config);
        assert!(
            !shown.contains("hunter2") && !shown.contains("admin:"),
            "{shown}"
        );
        assert!(shown.contains("***@db.example"), "{shown}");
    }
}
