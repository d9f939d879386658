//! `datastore migrate`: applies pending schema migrations to the configured server.

use datastore::DatastoreConfig;

use datastore_tools::error::CliResult;

/// Loads the configuration from the environment, migrates, and prints what was applied and
/// the schema version. A missing or malformed configuration is returned as the datastore's
/// configuration error (which names the variable; exit code 2).
pub async fn run() -> CliResult<()> {
    let config = DatastoreConfig::from_env()?;
    let c = &config.connection;
    println!(
        "migrate: {} at {}:{}, database {:?}, user {:?}",
        config.provider, c.host, c.port, c.database, c.username
    );
    let status = datastore::migrate(&config).await?;
    if status.applied.is_empty() {
        println!("migrate: nothing to apply");
    } else {
        let versions: Vec<String> = status.applied.iter().map(i64::to_string).collect();
        println!("migrate: applied version(s) {}", versions.join(", "));
    }
    println!(
        "migrate: schema version {} (latest known to this build: {})",
        status.version, status.latest
    );
    Ok(())
}
