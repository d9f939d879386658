//! The store the operator commands work on: the server the `DATASTORE_*` configuration
//! names, described without its credentials.

use datastore::{DataStore, DatastoreConfig};
use datastore_tools::error::CliResult;

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
    datastore_tools::output::print(&out?)?;
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
