//! Configuration from `DATASTORE_*` environment variables and/or a YAML file shaped like the
//! Helm `global.datastore` block. Environment variables override the file.
//!
//! | Variable | YAML (`global.datastore.…`) | Default | Meaning |
//! |---|---|---|---|
//! | `DATASTORE_PROVIDER` | `provider` | (required) | `postgresql` or `mongodb` |
//! | `DATASTORE_HOST` | `connection.host` | (required; MongoDB: `localhost`) | server host (MongoDB: or `MONGODB_URI`) |
//! | `DATASTORE_PORT` | `connection.port` | 5432 (PostgreSQL) / 27017 (MongoDB) | server port |
//! | `DATASTORE_DATABASE` | `connection.database` | `nvsentinel` | database name |
//! | `DATASTORE_USERNAME` | `connection.username` | (required; MongoDB: none) | user; must match the client certificate's CN |
//! | `DATASTORE_PASSWORD` | `connection.password` | none | password (omit for certificate auth) |
//! | `DATASTORE_SSLMODE` | `connection.sslmode` | `require` | `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full` |
//! | `DATASTORE_SSLCERT` | `connection.sslcert` | none | client certificate (PEM) |
//! | `DATASTORE_SSLKEY` | `connection.sslkey` | none | client key (PEM) |
//! | `DATASTORE_SSLROOTCERT` | `connection.sslrootcert` | none | CA certificate (PEM); with it, `require` verifies like `verify-ca` |
//! | `DATASTORE_CONNECT_TIMEOUT` | `connection.connectTimeout` | `10s` | limit of each connection attempt (TCP, TLS, startup) |
//! | `DATASTORE_STATEMENT_TIMEOUT` | `options.statementTimeout` | `60s` | PostgreSQL: the server cancels any statement running longer (`0`: no limit) |
//! | `DATASTORE_MAX_CONNECTIONS` | `options.maxConnections` | 25 | pool size |
//! | `DATASTORE_MAX_IDLE_CONNECTIONS` | `options.maxIdleConnections` | 10 | idle connections kept |
//! | `DATASTORE_CONNECTION_MAX_LIFETIME` | `options.connectionMaxLifetime` | `1h` | connections are replaced after this |
//! | `DATASTORE_POLL_INTERVAL` | `options.pollInterval` | `5s` | change-stream safety-net poll |
//! | `DATASTORE_CONFIG_FILE` | — | none | path of the YAML file |

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::provider::ProviderKind;

/// A secret string (password). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret value; pass it only to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS mode, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Try plaintext, then TLS.
    Allow,
    /// Try TLS, then plaintext.
    Prefer,
    /// TLS without verifying the server certificate.
    Require,
    /// TLS, server certificate signed by the CA.
    VerifyCa,
    /// TLS, CA-signed and the host name matches.
    VerifyFull,
}

impl SslMode {
    /// libpq's name of the mode (`verify-full`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::configuration(format!(
                    "DATASTORE_SSLMODE: unknown mode {other:?} (expected disable, allow, prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub username: String,
    /// Password (none for certificate auth).
    pub password: Option<Secret>,
    /// TLS mode.
    pub ssl_mode: SslMode,
    /// Client certificate.
    pub ssl_cert: Option<PathBuf>,
    /// Client key.
    pub ssl_key: Option<PathBuf>,
    /// CA certificate.
    pub ssl_root_cert: Option<PathBuf>,
    /// Limit of each connection attempt: TCP connect, TLS handshake and the server's first
    /// answer (libpq's `connect_timeout`).
    pub connect_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for every session: the server cancels a statement that
    /// runs longer, so no runaway query outlives its caller for long (`None`: no limit).
    pub statement_timeout: Option<Duration>,
}

/// Default of [`ConnectionConfig::statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`ConnectionConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest accepted `DATASTORE_MAX_CONNECTIONS` (PostgreSQL's own ceiling for
/// `max_connections` is 262,143; a pool larger than this is a typo).
pub const MAX_POOL_SIZE: u32 = 10_000;

/// Connection-pool settings; every one is applied by the providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most open connections.
    pub max_connections: u32,
    /// Most idle connections kept open.
    pub max_idle_connections: u32,
    /// Connections older than this are closed and replaced.
    pub connection_max_lifetime: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 25,
            max_idle_connections: 10,
            connection_max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// The complete datastore configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DatastoreConfig {
    /// The backend.
    pub provider: ProviderKind,
    /// Connection settings.
    pub connection: ConnectionConfig,
    /// Pool settings.
    pub pool: PoolConfig,
    /// Change-stream safety-net poll interval.
    pub poll_interval: Duration,
}

const VARS: &[(&str, &str)] = &[
    ("DATASTORE_PROVIDER", "provider"),
    ("DATASTORE_HOST", "connection.host"),
    ("DATASTORE_PORT", "connection.port"),
    ("DATASTORE_DATABASE", "connection.database"),
    ("DATASTORE_USERNAME", "connection.username"),
    ("DATASTORE_PASSWORD", "connection.password"),
    ("DATASTORE_SSLMODE", "connection.sslmode"),
    ("DATASTORE_SSLCERT", "connection.sslcert"),
    ("DATASTORE_SSLKEY", "connection.sslkey"),
    ("DATASTORE_SSLROOTCERT", "connection.sslrootcert"),
    ("DATASTORE_CONNECT_TIMEOUT", "connection.connectTimeout"),
    ("DATASTORE_STATEMENT_TIMEOUT", "options.statementTimeout"),
    ("DATASTORE_MAX_CONNECTIONS", "options.maxConnections"),
    (
        "DATASTORE_MAX_IDLE_CONNECTIONS",
        "options.maxIdleConnections",
    ),
    (
        "DATASTORE_CONNECTION_MAX_LIFETIME",
        "options.connectionMaxLifetime",
    ),
    ("DATASTORE_POLL_INTERVAL", "options.pollInterval"),
];

/// The environment variable naming the YAML configuration file.
pub const CONFIG_FILE_VAR: &str = "DATASTORE_CONFIG_FILE";

impl DatastoreConfig {
    /// Loads from the process environment, reading the YAML file named by
    /// `DATASTORE_CONFIG_FILE` first when it is set.
    pub fn from_env() -> Result<Self> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("DATASTORE_"))
            .collect();
        Self::from_vars(&env)
    }

    /// True when the environment names a server (`DATASTORE_HOST`, a config file or
    /// `MONGODB_URI` is set).
    pub fn env_names_a_server() -> bool {
        ["DATASTORE_HOST", CONFIG_FILE_VAR, "MONGODB_URI"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    }

    /// Loads from an explicit variable map (`DATASTORE_*` names), for tests and embedding.
    pub fn from_vars(env: &HashMap<String, String>) -> Result<Self> {
        let mut values: HashMap<&'static str, String> = HashMap::new();
        if let Some(path) = env.get(CONFIG_FILE_VAR).filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::configuration(format!("{CONFIG_FILE_VAR}: cannot read {path:?}"))
                    .with_source(e)
            })?;
            values = yaml_values(&text)?;
        }
        for (var, key) in VARS {
            if let Some(v) = env.get(*var) {
                values.insert(key, v.clone());
            }
        }
        Self::from_values(&values)
    }

    /// Parses a YAML document shaped like the Helm values (`global.datastore` block, or the
    /// block itself).
    ///
    /// ```
    /// let cfg = datastore_api::DatastoreConfig::from_yaml(r#"
    /// global:
    ///   datastore:
    ///     provider: "postgresql"
    ///     connection:
    ///       host: "db.example"
    ///       port: 5432
    ///       database: "nvsentinel"
    ///       username: "postgresql"
    ///       sslmode: "disable"
    ///     options:
    ///       maxConnections: "50"
    ///       connectionMaxLifetime: "30m"
    /// "#).unwrap();
    /// assert_eq!(cfg.pool.max_connections, 50);
    /// assert_eq!(cfg.pool.connection_max_lifetime.as_secs(), 1800);
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::from_values(&yaml_values(text)?)
    }

    fn from_values(v: &HashMap<&'static str, String>) -> Result<Self> {
        let get = |key: &str| v.get(key).map(|s| s.trim()).filter(|s| !s.is_empty());
        let var = |key: &str| -> String {
            VARS.iter()
                .find(|(_, k)| *k == key)
                .map_or(key, |(n, _)| *n)
                .to_owned()
        };
        let required = |key: &str| {
            get(key).map(str::to_owned).ok_or_else(|| {
                Error::configuration(format!(
                    "{} (or {key} in the config file) is required",
                    var(key)
                ))
            })
        };
        let provider: ProviderKind = required("provider")?.parse()?;
        let default_port = match provider {
            ProviderKind::Postgresql => 5432,
            ProviderKind::Mongodb => 27017,
        };
        let port = match get("connection.port") {
            None => default_port,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::configuration(format!(
                    "DATASTORE_PORT: {p:?} is not a port number (1-65535)"
                ))
            })?,
        };
        let path = |key: &str| -> Result<Option<PathBuf>> {
            get(key)
                .map(|p| existing_file(&var(key), PathBuf::from(p)))
                .transpose()
        };
        // MongoDB deployments usually give MONGODB_URI instead (read by the MongoDB provider),
        // and X.509 authentication takes the user from the certificate.
        let mongodb = provider == ProviderKind::Mongodb;
        let optional_for_mongodb = |key: &str, default: &str| -> Result<String> {
            if mongodb {
                Ok(get(key).unwrap_or(default).to_owned())
            } else {
                required(key)
            }
        };
        let connection = ConnectionConfig {
            host: optional_for_mongodb("connection.host", "localhost")?,
            port,
            database: get("connection.database")
                .unwrap_or("nvsentinel")
                .to_owned(),
            username: optional_for_mongodb("connection.username", "")?,
            password: v
                .get("connection.password")
                .filter(|p| !p.is_empty())
                .map(|p| Secret::new(p.clone())),
            ssl_mode: get("connection.sslmode").map_or(Ok(SslMode::Require), SslMode::parse)?,
            ssl_cert: path("connection.sslcert")?,
            ssl_key: path("connection.sslkey")?,
            ssl_root_cert: path("connection.sslrootcert")?,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
        };
        if connection.ssl_cert.is_some() != connection.ssl_key.is_some() {
            return Err(Error::configuration(
                "DATASTORE_SSLCERT and DATASTORE_SSLKEY must be set together (client certificate authentication needs both)",
            ));
        }
        let number = |key: &str, default: u32| -> Result<u32> {
            get(key).map_or(Ok(default), |s| {
                s.parse::<u32>().map_err(|_| {
                    Error::configuration(format!("{}: {s:?} is not a whole number", var(key)))
                })
            })
        };
        let duration = |key: &str, default: Duration| -> Result<Duration> {
            get(key).map_or(Ok(default), |s| {
                parse_duration(s).ok_or_else(|| {
                    Error::configuration(format!(
                        "{}: {s:?} is not a duration (e.g. 500ms, 5s, 30m, 1h)",
                        var(key)
                    ))
                })
            })
        };
        let defaults = PoolConfig::default();
        let pool = PoolConfig {
            max_connections: number("options.maxConnections", defaults.max_connections)?,
            max_idle_connections: number(
                "options.maxIdleConnections",
                defaults.max_idle_connections,
            )?,
            connection_max_lifetime: duration(
                "options.connectionMaxLifetime",
                defaults.connection_max_lifetime,
            )?,
        };
        if pool.max_connections == 0 || pool.max_connections > MAX_POOL_SIZE {
            return Err(Error::configuration(format!(
                "DATASTORE_MAX_CONNECTIONS must be between 1 and {MAX_POOL_SIZE} (got {})",
                pool.max_connections
            )));
        }
        if pool.connection_max_lifetime.is_zero() {
            return Err(Error::configuration(
                "DATASTORE_CONNECTION_MAX_LIFETIME must be greater than zero (e.g. 1h)",
            ));
        }
        let connect_timeout = duration("connection.connectTimeout", DEFAULT_CONNECT_TIMEOUT)?;
        if connect_timeout.is_zero() {
            return Err(Error::configuration(
                "DATASTORE_CONNECT_TIMEOUT must be greater than zero (e.g. 10s)",
            ));
        }
        for (var, value, max) in [
            ("DATASTORE_CONNECT_TIMEOUT", connect_timeout, HOUR),
            (
                "DATASTORE_CONNECTION_MAX_LIFETIME",
                pool.connection_max_lifetime,
                365 * DAY,
            ),
        ] {
            at_most(var, value, max)?;
        }
        let statement_timeout = duration("options.statementTimeout", DEFAULT_STATEMENT_TIMEOUT)?;
        // PostgreSQL takes at most 2^31 - 1 ms (about 24 days).
        at_most("DATASTORE_STATEMENT_TIMEOUT", statement_timeout, DAY)?;
        let connection = ConnectionConfig {
            connect_timeout,
            statement_timeout: (!statement_timeout.is_zero()).then_some(statement_timeout),
            ..connection
        };
        if pool.max_idle_connections > pool.max_connections {
            return Err(Error::configuration(format!(
                "DATASTORE_MAX_IDLE_CONNECTIONS ({}) exceeds DATASTORE_MAX_CONNECTIONS ({})",
                pool.max_idle_connections, pool.max_connections
            )));
        }
        let poll_interval = duration("options.pollInterval", Duration::from_secs(5))?;
        at_most("DATASTORE_POLL_INTERVAL", poll_interval, HOUR)?;
        if poll_interval.is_zero() {
            return Err(Error::configuration(
                "DATASTORE_POLL_INTERVAL must be greater than zero",
            ));
        }
        Ok(DatastoreConfig {
            provider,
            connection,
            pool,
            poll_interval,
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Refuses a duration above `max` (a typo, and too large for the arithmetic and servers that
/// take it).
fn at_most(var: &str, value: Duration, max: Duration) -> Result<()> {
    if value > max {
        return Err(Error::configuration(format!(
            "{var}: {value:?} is longer than the most accepted, {max:?}"
        )));
    }
    Ok(())
}

/// Checks that the file named by `var` exists and is a readable file; the error names the
/// variable and the path and says what is wrong (missing, not a file, or no permission).
fn existing_file(var: &str, path: PathBuf) -> Result<PathBuf> {
    let shown = path.display().to_string();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(Error::configuration(format!(
            "{var}: {shown:?} is not a regular file"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::configuration(format!(
                "{var}: {shown:?} cannot be reached: permission denied on the file or one of its directories (this process needs search permission on every directory and read permission on the file)"
            ))
            .with_source(e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::configuration(
            format!("{var}: file {shown:?} does not exist"),
        )),
        Err(e) => Err(
            Error::configuration(format!("{var}: cannot read {shown:?}")).with_source(e),
        ),
    }
}

/// Parses `250ms`, `5s`, `30m`, `1h`, `1h30m`, `7d` or a bare number of seconds (Go's
/// `time.ParseDuration` units for whole amounts, plus days).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The deepest a datastore config file may nest (Helm values files nest a handful of levels).
const MAX_YAML_DEPTH: usize = 16;

fn yaml_values(text: &str) -> Result<HashMap<&'static str, String>> {
    // The file is read as JSON's data model: a Helm values file is plain mappings, lists and
    // scalars, and serde-saphyr's budgets bound what a hostile file can cost.
    let doc: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        // A values file nests a few levels; serde-saphyr's default allowance (64 levels, 255
        // of flow nesting) is more than a small stack holds in its recursive deserializer.
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = MAX_YAML_DEPTH;
        budget.flow_nesting_limit = MAX_YAML_DEPTH;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            Error::configuration("the datastore config file is not valid YAML").with_source(e)
        })?
    };
    if !doc.is_object() && !doc.is_null() {
        return Err(Error::configuration(
            "the datastore config file must be a YAML mapping (global.datastore.…), not a list or a scalar",
        ));
    }
    let root = doc
        .get("global")
        .and_then(|g| g.get("datastore"))
        .or_else(|| doc.get("datastore"))
        .unwrap_or(&doc);
    let mut out = HashMap::new();
    for (_, key) in VARS {
        let mut node = Some(root);
        for part in key.split('.') {
            node = node.and_then(|n| n.get(part));
        }
        let text = match node {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            Some(serde_json::Value::Null) | None => continue,
            Some(_) => {
                return Err(Error::configuration(format!(
                    "config file: {key} must be a scalar value"
                )))
            }
        };
        out.insert(*key, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_minimal_and_defaults() {
        let c = DatastoreConfig::from_vars(&vars(&[
            ("DATASTORE_PROVIDER", "postgresql"),
            ("DATASTORE_HOST", "h"),
            ("DATASTORE_USERNAME", "u"),
            ("DATASTORE_PASSWORD", "hunter2"),
        ]))
        .unwrap();
        assert_eq!(c.connection.port, 5432);
        assert_eq!(c.connection.ssl_mode, SslMode::Require);
        assert_eq!(c.pool, PoolConfig::default());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_the_variable() {
        let cases = [
            (vec![("DATASTORE_HOST", "h")], "DATASTORE_PROVIDER"),
            (vec![("DATASTORE_PROVIDER", "oracle")], "DATASTORE_PROVIDER"),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_USERNAME", "u"),
                ],
                "DATASTORE_HOST",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_PORT", "99999"),
                ],
                "DATASTORE_PORT",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_SSLMODE", "maybe"),
                ],
                "DATASTORE_SSLMODE",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_SSLCERT", "/nonexistent"),
                ],
                "DATASTORE_SSLCERT",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_MAX_IDLE_CONNECTIONS", "50"),
                ],
                "DATASTORE_MAX_IDLE_CONNECTIONS",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_CONNECTION_MAX_LIFETIME", "soon"),
                ],
                "DATASTORE_CONNECTION_MAX_LIFETIME",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_CONNECTION_MAX_LIFETIME", "0"),
                ],
                "DATASTORE_CONNECTION_MAX_LIFETIME",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_MAX_CONNECTIONS", "4294967295"),
                ],
                "DATASTORE_MAX_CONNECTIONS",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_CONNECT_TIMEOUT", "0s"),
                ],
                "DATASTORE_CONNECT_TIMEOUT",
            ),
            (
                vec![
                    ("DATASTORE_PROVIDER", "postgresql"),
                    ("DATASTORE_HOST", "h"),
                    ("DATASTORE_USERNAME", "u"),
                    ("DATASTORE_CONNECT_TIMEOUT", "later"),
                ],
                "DATASTORE_CONNECT_TIMEOUT",
            ),
        ];
        for (pairs, name) in cases {
            let e = DatastoreConfig::from_vars(&vars(&pairs)).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Configuration);
            assert!(e.to_string().contains(name), "{e} should name {name}");
        }
    }

    #[test]
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("dscfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("values.yaml");
        std::fs::write(
            &file,
            "global:\n  datastore:\n    provider: postgresql\n    connection:\n      host: filehost\n      username: fileuser\n      port: 6543\n    options:\n      maxIdleConnections: \"3\"\n",
        )
        .unwrap();
        let c = DatastoreConfig::from_vars(&vars(&[
            ("DATASTORE_CONFIG_FILE", file.to_str().unwrap()),
            ("DATASTORE_HOST", "envhost"),
        ]))
        .unwrap();
        assert_eq!(c.connection.host, "envhost");
        assert_eq!(c.connection.username, "fileuser");
        assert_eq!(c.connection.port, 6543);
        assert_eq!(c.pool.max_idle_connections, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn connect_timeout_default_and_yaml() {
        let c = DatastoreConfig::from_vars(&vars(&[
            ("DATASTORE_PROVIDER", "postgresql"),
            ("DATASTORE_HOST", "h"),
            ("DATASTORE_USERNAME", "u"),
        ]))
        .unwrap();
        assert_eq!(c.connection.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(
            c.connection.statement_timeout,
            Some(DEFAULT_STATEMENT_TIMEOUT)
        );
        let c = DatastoreConfig::from_yaml(
            "provider: postgresql\nconnection:\n  host: h\n  username: u\n  connectTimeout: 3s\n",
        )
        .unwrap();
        assert_eq!(c.connection.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn huge_durations_are_refused() {
        for (var, value) in [
            ("DATASTORE_CONNECT_TIMEOUT", "18446744073709551615"),
            ("DATASTORE_STATEMENT_TIMEOUT", "100000h"),
            ("DATASTORE_CONNECTION_MAX_LIFETIME", "18446744073709551615"),
            ("DATASTORE_POLL_INTERVAL", "2h"),
        ] {
            let e = DatastoreConfig::from_vars(&vars(&[
                ("DATASTORE_PROVIDER", "postgresql"),
                ("DATASTORE_HOST", "h"),
                ("DATASTORE_USERNAME", "u"),
                (var, value),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn whole_helm_values_files_are_read() {
        // Other charts' sections, anchors, integer keys, comments and an empty file.
        let c = DatastoreConfig::from_yaml(
            "defaults: &pool\n  maxConnections: \"7\"\n  maxIdleConnections: 2\nports:\n  8080: http\nglobal:\n  image: {tag: v1}\n  datastore:\n    provider: postgresql # the new one\n    connection:\n      host: db\n      port: 6543\n      username: u\n    options: *pool\n",
        )
        .unwrap();
        assert_eq!(
            (c.connection.host.as_str(), c.connection.port),
            ("db", 6543)
        );
        assert_eq!(c.pool.max_connections, 7);
        let e = DatastoreConfig::from_yaml("").unwrap_err();
        assert!(e.to_string().contains("DATASTORE_PROVIDER"), "{e}");
        let e = DatastoreConfig::from_yaml("global: [unclosed\n").unwrap_err();
        assert!(e.to_string().contains("not valid YAML"), "{e}");
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_refused() {
        for text in ["- provider: postgresql\n", "just a string\n"] {
            let e = DatastoreConfig::from_yaml(text).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Configuration);
            assert!(e.to_string().contains("mapping"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2d12h"), Some(Duration::from_secs(216_000)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
