//! TLS exactly as libpq defines `sslmode`, on rustls:
//!
//! | sslmode | transports tried | server certificate |
//! |---|---|---|
//! | `disable` | plaintext | — |
//! | `allow` | plaintext, then TLS if the server refuses it | checked against the root certificate if one is given |
//! | `prefer` | TLS, then plaintext if the server has no TLS, the handshake fails or the server refuses | as `allow` |
//! | `require` | TLS only | none; with a root certificate, as `verify-ca` |
//! | `verify-ca` | TLS only | signed by the root certificate (the only trust anchor), valid now |
//! | `verify-full` | TLS only | as `verify-ca`, and it names the host |
//!
//! The root certificate is `DATASTORE_SSLROOTCERT`, else libpq's `~/.postgresql/root.crt`;
//! the client certificate and key likewise default to `~/.postgresql/postgresql.{crt,key}`.
//! Every new connection reads the files again, so rotated certificates are picked up; a new
//! certificate whose key does not match (or any file that stops parsing) keeps the last good
//! set in use and logs a warning.

mod files;
mod verify;

use std::sync::{Arc, Mutex};

use datastore_api::{ConnectionConfig, Error, Result, SslMode};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::ClientConfig;

pub(crate) use files::TlsFile;
pub(crate) use verify::explain;

/// One way of talking to the server, tried in the order of [`TlsSetup::transports`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// No TLS.
    Plain,
    /// TLS; with `fallback_plain` a server that answers "no TLS" is used in plaintext on the
    /// same connection (`prefer`).
    Tls { fallback_plain: bool },
}

/// The TLS part of a connection's settings.
pub(crate) struct TlsSetup {
    mode: SslMode,
    root: Option<TlsFile>,
    client: Option<(TlsFile, TlsFile)>,
    provider: Arc<CryptoProvider>,
    last_good: Mutex<Option<Arc<ClientConfig>>>,
}

impl TlsSetup {
    /// Resolves the files and checks that they exist, can be read and hold what they must;
    /// every problem is a `Configuration` error naming the variable and the path.
    pub(crate) fn from_config(c: &ConnectionConfig) -> Result<Self> {
        let root = match &c.ssl_root_cert {
            Some(p) => Some(TlsFile::new("DATASTORE_SSLROOTCERT", p)),
            None => files::default_file("DATASTORE_SSLROOTCERT", "root.crt"),
        };
        let client = match (&c.ssl_cert, &c.ssl_key) {
            (Some(cert), Some(key)) => Some((
                TlsFile::new("DATASTORE_SSLCERT", cert),
                TlsFile::new("DATASTORE_SSLKEY", key),
            )),
            (None, None) => files::default_file("DATASTORE_SSLCERT", "postgresql.crt")
                .zip(files::default_file("DATASTORE_SSLKEY", "postgresql.key")),
            _ => {
                return Err(Error::configuration(
                    "DATASTORE_SSLCERT and DATASTORE_SSLKEY must be set together",
                ))
            }
        };
        if root.is_none() && matches!(c.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(Error::configuration(format!(
                "DATASTORE_SSLMODE={} verifies the server certificate and needs the CA that signed it: set DATASTORE_SSLROOTCERT to its PEM file (libpq's default ~/.postgresql/root.crt does not exist)",
                c.ssl_mode.as_str()
            )));
        }
        let setup = TlsSetup {
            mode: c.ssl_mode,
            root,
            client,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            last_good: Mutex::new(None),
        };
        if setup.mode != SslMode::Disable {
            setup.client_config()?;
        }
        Ok(setup)
    }

    /// The transports to try, in libpq's order for the mode.
    pub(crate) fn transports(&self) -> &'static [Transport] {
        match self.mode {
            SslMode::Disable => &[Transport::Plain],
            SslMode::Allow => &[
                Transport::Plain,
                Transport::Tls {
                    fallback_plain: false,
                },
            ],
            SslMode::Prefer => &[
                Transport::Tls {
                    fallback_plain: true,
                },
                Transport::Plain,
            ],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[Transport::Tls {
                fallback_plain: false,
            }],
        }
    }

    /// The sslmode, as configured.
    pub(crate) fn mode(&self) -> SslMode {
        self.mode
    }

    /// The rustls configuration for a new connection, built from the files as they are now.
    /// When they no longer load (a half-written rotation, a key that does not match the new
    /// certificate), the last good configuration is used and a warning logged.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut last_good = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        match self.build() {
            Ok(config) => {
                let config = Arc::new(config);
                *last_good = Some(Arc::clone(&config));
                Ok(config)
            }
            Err(e) => match last_good.as_ref() {
                Some(good) => {
                    tracing::warn!(error = %e, "the TLS files changed and no longer load; new connections keep using the previous certificates");
                    Ok(Arc::clone(good))
                }
                None => Err(e),
            },
        }
    }

    fn build(&self) -> Result<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::configuration(format!("TLS setup failed: {e}")))?;
        let builder = match &self.root {
            Some(root) if self.mode == SslMode::VerifyFull => {
                builder.with_root_certificates(root.root_store()?)
            }
            Some(root) => {
                let inner = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(root.root_store()?),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| root_error(root, e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verify::ChainOnly { inner }))
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::AnyCertificate {
                    provider: Arc::clone(&self.provider),
                })),
        };
        let mut config = match &self.client {
            Some((cert, key)) => builder
                .with_client_auth_cert(cert.certificates()?, key.private_key()?)
                .map_err(|e| {
                    Error::configuration(format!(
                        "{} and {} do not belong together: {e}",
                        cert.describe(),
                        key.describe()
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        // libpq 17 announces the protocol by ALPN; servers before 17 ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }

    /// How messages name the root certificate.
    pub(crate) fn describe_root(&self) -> String {
        self.root.as_ref().map_or_else(
            || "DATASTORE_SSLROOTCERT (not set)".to_owned(),
            TlsFile::describe,
        )
    }

    /// How messages name the client certificate.
    pub(crate) fn describe_client(&self) -> String {
        self.client.as_ref().map_or_else(
            || "(none: DATASTORE_SSLCERT is not set)".to_owned(),
            |(cert, _)| cert.describe(),
        )
    }
}

fn root_error(root: &TlsFile, e: impl std::fmt::Display) -> Error {
    Error::configuration(format!(
        "{}: unusable as a trust anchor: {e}",
        root.describe()
    ))
}
