//! Connection settings: the shared `DATASTORE_*` configuration plus NVSentinel's `MONGODB_*`
//! variables.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `MONGODB_URI` | built from `DATASTORE_HOST`/`DATASTORE_PORT` | connection string (may hold SCRAM credentials; never logged) |
//! | `MONGODB_DATABASE_NAME` | `DATASTORE_DATABASE` | database |
//! | `MONGODB_COLLECTION_NAME` | `HealthEvents` | health-event collection |
//! | `MONGODB_MAINTENANCE_EVENT_COLLECTION_NAME` | `MaintenanceEvents` | maintenance-event collection |
//! | `MONGODB_TOKEN_COLLECTION_NAME` | `ResumeTokens` | change-stream checkpoints |
//! | `MONGODB_COLLECTION_EXPIRY_SECONDS` | 2592000 (30 days) | TTL of health events by `createdAt`; `0` disables |
//! | `MONGODB_CA_CERT_PATH` | `DATASTORE_SSLROOTCERT` | CA certificate (PEM): turns TLS on |
//! | `MONGODB_CLIENT_CERT_PATH` / `MONGODB_CLIENT_KEY_PATH` | `DATASTORE_SSLCERT` / `DATASTORE_SSLKEY` | client certificate and key: TLS with MONGODB-X509 authentication |
//!
//! `DATASTORE_MAX_CONNECTIONS` is the driver's pool size and `DATASTORE_CONNECTION_MAX_LIFETIME`
//! its idle-connection limit (the driver has no lifetime limit). With no `MONGODB_URI`,
//! `DATASTORE_SSLMODE=disable` turns TLS off; any other mode requires it.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datastore_api::{DatastoreConfig, Error, PoolConfig, Result, Secret, SslMode};
use mongodb::options::{AuthMechanism, ClientOptions, Credential, Tls, TlsOptions};

/// Everything the provider needs to connect.
#[derive(Clone)]
pub struct MongoSettings {
    /// The connection string.
    pub uri: Secret,
    /// The database holding the collections.
    pub database: String,
    /// The health-event collection.
    pub health_event_collection: String,
    /// The maintenance-event collection.
    pub maintenance_event_collection: String,
    /// The collection of change-stream checkpoints.
    pub token_collection: String,
    /// TTL of health events by `createdAt` (`None`: keep forever).
    pub expiry: Option<Duration>,
    /// CA certificate (PEM). Setting it turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM); with `key_file`, authenticates with MONGODB-X509.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
    /// Require TLS even without a CA file (system roots).
    pub require_tls: bool,
    /// Verify the server certificate (false for libpq's `allow`, `prefer` and `require`
    /// without a CA file, which do not verify it). The driver on rustls cannot skip only the
    /// host-name check, so `verify-ca` verifies the name too (stricter than libpq).
    pub verify_server: bool,
    /// SCRAM credentials from `DATASTORE_USERNAME` / `DATASTORE_PASSWORD`, used when the URI
    /// carries none and no client certificate is set.
    pub password_credential: Option<(String, Secret)>,
    /// Limit of each connection attempt (`DATASTORE_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Pool sizing.
    pub pool: PoolConfig,
    /// How long to wait for a usable server before an operation fails (transient error).
    pub server_selection_timeout: Duration,
}

impl fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &self.uri)
            .field("database", &self.database)
            .field("health_event_collection", &self.health_event_collection)
            .field(
                "maintenance_event_collection",
                &self.maintenance_event_collection,
            )
            .field("token_collection", &self.token_collection)
            .field("expiry", &self.expiry)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("require_tls", &self.require_tls)
            .field("verify_server", &self.verify_server)
            .field(
                "password_credential",
                &self.password_credential.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("pool", &self.pool)
            .finish()
    }
}

/// NVSentinel's default health-event TTL: 30 days.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(2_592_000);

impl MongoSettings {
    /// Settings for a connection string and database, with every other setting at its default
    /// (TLS as the URI says).
    pub fn from_uri(uri: &str, database: &str) -> MongoSettings {
        MongoSettings {
            uri: Secret::new(uri),
            database: database.to_owned(),
            health_event_collection: "HealthEvents".into(),
            maintenance_event_collection: "MaintenanceEvents".into(),
            token_collection: "ResumeTokens".into(),
            expiry: Some(DEFAULT_EXPIRY),
            ca_file: None,
            cert_file: None,
            key_file: None,
            require_tls: false,
            verify_server: true,
            password_credential: None,
            connect_timeout: datastore_api::config::DEFAULT_CONNECT_TIMEOUT,
            pool: PoolConfig::default(),
            server_selection_timeout: Duration::from_secs(10),
        }
    }

    /// Settings from the shared configuration and the process environment's `MONGODB_*`
    /// variables.
    pub fn from_config(config: &DatastoreConfig) -> Result<MongoSettings> {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("MONGODB_"))
            .collect();
        Self::from_config_and_vars(config, &vars)
    }

    /// Settings from the shared configuration and the given `MONGODB_*` variables.
    pub fn from_config_and_vars(
        config: &DatastoreConfig,
        vars: &HashMap<String, String>,
    ) -> Result<MongoSettings> {
        let get = |k: &str| vars.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let c = &config.connection;
        let uri = match get("MONGODB_URI") {
            Some(u) => u.to_owned(),
            None => format!("mongodb://{}:{}/", c.host, c.port),
        };
        let mut s =
            MongoSettings::from_uri(&uri, get("MONGODB_DATABASE_NAME").unwrap_or(&c.database));
        if let Some(n) = get("MONGODB_COLLECTION_NAME") {
            s.health_event_collection = n.to_owned();
        }
        if let Some(n) = get("MONGODB_MAINTENANCE_EVENT_COLLECTION_NAME") {
            s.maintenance_event_collection = n.to_owned();
        }
        if let Some(n) = get("MONGODB_TOKEN_COLLECTION_NAME") {
            s.token_collection = n.to_owned();
        }
        if let Some(e) = get("MONGODB_COLLECTION_EXPIRY_SECONDS") {
            let secs: u64 = e.parse().map_err(|_| {
                Error::configuration(format!(
                    "MONGODB_COLLECTION_EXPIRY_SECONDS: {e:?} is not a whole number of seconds"
                ))
            })?;
            s.expiry = (secs > 0).then(|| Duration::from_secs(secs));
        }
        let file = |var: &str, fallback: &Option<PathBuf>| -> Result<Option<PathBuf>> {
            match get(var) {
                None => Ok(fallback.clone()),
                Some(p) => {
                    let pb = PathBuf::from(p);
                    if !pb.is_absolute() || !pb.is_file() {
                        return Err(Error::configuration(format!(
                            "{var}: {p:?} is not an absolute path to an existing file"
                        )));
                    }
                    Ok(Some(pb))
                }
            }
        };
        s.ca_file = file("MONGODB_CA_CERT_PATH", &c.ssl_root_cert)?;
        s.cert_file = file("MONGODB_CLIENT_CERT_PATH", &c.ssl_cert)?;
        s.key_file = file("MONGODB_CLIENT_KEY_PATH", &c.ssl_key)?;
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(Error::configuration(
                "the client certificate and key must be set together (MONGODB_CLIENT_CERT_PATH and MONGODB_CLIENT_KEY_PATH, or DATASTORE_SSLCERT and DATASTORE_SSLKEY)",
            ));
        }
        s.require_tls = get("MONGODB_URI").is_none() && c.ssl_mode != SslMode::Disable;
        // libpq's meaning of the sslmode applies to the connection the provider builds; a
        // MONGODB_URI brings its own TLS settings, and verification stays on there.
        s.verify_server = get("MONGODB_URI").is_some()
            || s.ca_file.is_some()
            || matches!(
                c.ssl_mode,
                SslMode::VerifyCa | SslMode::VerifyFull | SslMode::Disable
            );
        if let Some(password) = &c.password {
            if c.username.is_empty() {
                return Err(Error::configuration(
                    "DATASTORE_PASSWORD is set but DATASTORE_USERNAME is not: set both, or put the credentials in MONGODB_URI",
                ));
            }
            s.password_credential = Some((c.username.clone(), password.clone()));
        }
        s.connect_timeout = c.connect_timeout;
        s.pool = config.pool;
        Ok(s)
    }

    /// The driver options: the URI, then TLS, X.509 authentication and pool sizes on top; and
    /// the combined certificate file they name, which must live as long as the client.
    pub(crate) async fn client_options(&self) -> Result<(ClientOptions, Option<CombinedPem>)> {
        let mut o = ClientOptions::parse(self.uri.expose()).await.map_err(|e| {
            // The driver's parse error can quote the URI; report the kind only.
            Error::configuration(format!(
                "MONGODB_URI is not a valid MongoDB connection string ({})",
                e.kind
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or("parse error")
            ))
        })?;
        let mut pem = None;
        if self.ca_file.is_some() || self.cert_file.is_some() || self.require_tls {
            let mut tls = TlsOptions::default();
            tls.ca_file_path = self.ca_file.clone();
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                let combined = CombinedPem::write(cert, key)?;
                tls.cert_key_file_path = Some(combined.file.clone());
                pem = Some(combined);
                if o.credential.is_none() {
                    let mut cred = Credential::default();
                    cred.mechanism = Some(AuthMechanism::MongoDbX509);
                    cred.source = Some("$external".to_owned());
                    o.credential = Some(cred);
                }
            }
            if !self.verify_server {
                tls.allow_invalid_certificates = Some(true);
            }
            o.tls = Some(Tls::Enabled(tls));
        }
        if let (None, Some((user, password))) = (&o.credential, &self.password_credential) {
            let mut cred = Credential::default();
            cred.username = Some(user.clone());
            cred.password = Some(password.expose().to_owned());
            o.credential = Some(cred);
        }
        o.max_pool_size = Some(self.pool.max_connections);
        o.min_pool_size = Some(0);
        o.max_idle_time = Some(self.pool.connection_max_lifetime);
        o.server_selection_timeout = Some(self.server_selection_timeout);
        o.connect_timeout = Some(self.connect_timeout);
        if o.app_name.is_none() {
            o.app_name = Some("nvsentinel-datastore".to_owned());
        }
        Ok((o, pem))
    }
}

/// The client certificate and key in one PEM file, as the driver reads them: written to a new
/// private directory (0700, random name, created exclusively) as a 0600 file, and deleted with
/// the directory when this value is dropped (when the store is).
#[derive(Debug)]
pub(crate) struct CombinedPem {
    dir: PathBuf,
    file: PathBuf,
}

impl CombinedPem {
    fn write(cert: &Path, key: &Path) -> Result<CombinedPem> {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| {
                Error::configuration(format!("cannot read the client {what} {}", p.display()))
                    .with_source(e)
            })
        };
        let (c, k) = (read(cert, "certificate")?, read(key, "key")?);
        let failed = |e: std::io::Error| {
            Error::configuration("cannot write the combined client certificate file").with_source(e)
        };
        let mut attempt = 0;
        let dir = loop {
            let mut h = RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let dir = std::env::temp_dir().join(format!("datastore-mongo-{:016x}", h.finish()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let pem = CombinedPem {
            file: dir.join("client.pem"),
            dir,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pem.file)
            .map_err(failed)?;
        f.write_all(&c)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.write_all(&k))
            .and_then(|()| f.sync_all())
            .map_err(failed)?;
        Ok(pem)
    }
}

impl Drop for CombinedPem {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DatastoreConfig {
        let vars = [
            ("DATASTORE_PROVIDER", "mongodb"),
            ("DATASTORE_HOST", "db.example"),
            ("DATASTORE_USERNAME", "u"),
            ("DATASTORE_SSLMODE", "disable"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        DatastoreConfig::from_vars(&vars).unwrap()
    }

    fn vars(v: &[(&str, &str)]) -> HashMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn sslmodes_and_password_map_onto_the_driver() {
        let with = |extra: &[(&str, &str)]| {
            let mut v = vec![
                ("DATASTORE_PROVIDER", "mongodb"),
                ("DATASTORE_HOST", "db.example"),
            ];
            v.extend_from_slice(extra);
            let map = v
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let c = DatastoreConfig::from_vars(&map).unwrap();
            MongoSettings::from_config_and_vars(&c, &HashMap::new())
        };
        let tls = |o: &ClientOptions| match &o.tls {
            Some(Tls::Enabled(t)) => t.allow_invalid_certificates,
            _ => panic!("TLS must be on"),
        };
        // require without a CA: TLS without verification, as libpq.
        let (o, _) = with(&[("DATASTORE_SSLMODE", "require")])
            .unwrap()
            .client_options()
            .await
            .unwrap();
        assert_eq!(tls(&o), Some(true));
        // verify-full: verified.
        let (o, _) = with(&[("DATASTORE_SSLMODE", "verify-full")])
            .unwrap()
            .client_options()
            .await
            .unwrap();
        assert_eq!(tls(&o), None);
        // DATASTORE_USERNAME / DATASTORE_PASSWORD are used (SCRAM), never shown.
        let s = with(&[
            ("DATASTORE_SSLMODE", "disable"),
            ("DATASTORE_USERNAME", "alice"),
            ("DATASTORE_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let (o, _) = s.client_options().await.unwrap();
        let cred = o.credential.expect("credential");
        assert_eq!(cred.username.as_deref(), Some("alice"));
        assert_eq!(cred.password.as_deref(), Some("hunter2"));
        // A password without a user is a configuration error.
        let e = with(&[
            ("DATASTORE_SSLMODE", "disable"),
            ("DATASTORE_PASSWORD", "x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("DATASTORE_USERNAME"), "{e}");
    }

    #[test]
    fn reads_nvsentinel_variables() {
        let s = MongoSettings::from_config_and_vars(
            &config(),
            &vars(&[
                ("MONGODB_URI", "mongodb://user:hunter2@h:1/?replicaSet=rs0"),
                ("MONGODB_DATABASE_NAME", "db"),
                ("MONGODB_COLLECTION_NAME", "HE"),
                ("MONGODB_TOKEN_COLLECTION_NAME", "RT"),
                ("MONGODB_COLLECTION_EXPIRY_SECONDS", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database, "db");
        assert_eq!(s.health_event_collection, "HE");
        assert_eq!(s.maintenance_event_collection, "MaintenanceEvents");
        assert_eq!(s.token_collection, "RT");
        assert_eq!(s.expiry, None);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn builds_a_uri_from_the_shared_config() {
        let s = MongoSettings::from_config_and_vars(&config(), &HashMap::new()).unwrap();
        assert_eq!(s.uri.expose(), "mongodb://db.example:27017/");
        assert_eq!(s.database, "nvsentinel");
        assert_eq!(s.expiry, Some(DEFAULT_EXPIRY));
        assert!(!s.require_tls);
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        for v in [
            vars(&[("MONGODB_COLLECTION_EXPIRY_SECONDS", "30d")]),
            vars(&[("MONGODB_CA_CERT_PATH", "relative/ca.crt")]),
            vars(&[("MONGODB_CLIENT_CERT_PATH", "/etc/hostname")]),
        ] {
            let e = MongoSettings::from_config_and_vars(&config(), &v).unwrap_err();
            assert_eq!(e.kind(), datastore_api::ErrorKind::Configuration, "{v:?}");
        }
    }

    #[test]
    fn combined_pem_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir();
        let cert = dir.join(format!("pem-test-cert-{}", std::process::id()));
        let key = dir.join(format!("pem-test-key-{}", std::process::id()));
        std::fs::write(&cert, "CERT").unwrap();
        std::fs::write(&key, "KEY").unwrap();
        let pem = CombinedPem::write(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&pem.file).unwrap(), "CERT\nKEY");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pem.file), 0o600);
        assert_eq!(mode(&pem.dir), 0o700);
        let (file, d) = (pem.file.clone(), pem.dir.clone());
        drop(pem);
        assert!(!file.exists() && !d.exists());
        let _ = std::fs::remove_file(cert);
        let _ = std::fs::remove_file(key);
    }

    #[tokio::test]
    async fn invalid_uri_error_does_not_echo_the_password() {
        let s = MongoSettings::from_uri("mongodb://u:s3cret@/bad?x=", "db");
        let e = s.client_options().await.expect_err("invalid URI");
        assert_eq!(e.kind(), datastore_api::ErrorKind::Configuration);
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
