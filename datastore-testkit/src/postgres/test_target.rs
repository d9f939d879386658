//! Choosing the server tests run against: external (env var) or throwaway.

use std::fmt;
use std::sync::OnceLock;

use crate::lane::{choose, Options};
use crate::postgres::PgServer;
use crate::shared::{shared_in, SharedSlot};
use crate::{HarnessError, Server};

/// Where tests should run: an external server named by the environment
/// variable [`TestPostgres::ENV`] (`DATASTORE_TEST_POSTGRES_URL`), else a
/// throwaway [`PgServer`] started here.
///
/// The external URL must point at a maintenance database (for example
/// `postgres://user:pw@host:5432/postgres`) whose user may `CREATE DATABASE`;
/// tests derive URLs for their own databases with [`TestPostgres::url_for`].
///
/// The `Debug` output never shows a password.
pub struct TestPostgres {
    admin_url: String,
    /// `None` for an external server.
    server: Option<Owned>,
}

/// The server a [`TestPostgres`] started and owns (held for its `Drop`, which stops it).
#[derive(Debug)]
#[allow(dead_code)]
enum Owned {
    Local(PgServer),
    #[cfg(feature = "docker")]
    Docker(Box<crate::postgres::docker::DockerPostgres>),
}

/// Outcome of the one start attempt made by [`TestPostgres::shared`]: the
/// instance, or the error's message and log tail.
static SHARED: OnceLock<SharedSlot<TestPostgres>> = OnceLock::new();

impl TestPostgres {
    /// Environment variable with the URL of an external server's maintenance
    /// database.
    pub const ENV: &'static str = "DATASTORE_TEST_POSTGRES_URL";

    /// Set (to `1`) beside [`TestPostgres::ENV`] by a runner such as `cargo xtask test` that
    /// started that server itself: tests may then start throwaway servers of their own (the
    /// TLS lane) instead of treating the server as the user's.
    pub const THROWAWAY_ENV: &'static str = "DATASTORE_TEST_POSTGRES_THROWAWAY";

    /// True unless the user named a server of their own with [`TestPostgres::ENV`].
    pub fn may_start_servers() -> bool {
        let named = std::env::var_os(Self::ENV).is_some_and(|v| !v.is_empty());
        !named || std::env::var_os(Self::THROWAWAY_ENV).is_some_and(|v| v == "1")
    }

    /// Uses the server named by [`TestPostgres::ENV`] if that variable is set
    /// and non-empty (validating that it is a `postgres://` or
    /// `postgresql://` URL), otherwise starts a throwaway [`PgServer`] that
    /// lives as long as the returned value; on a machine without the server
    /// binaries and with a Docker engine, a build with the cargo feature
    /// `docker` runs a `postgres:15` container instead.
    pub fn from_env_or_start() -> Result<TestPostgres, HarnessError> {
        match std::env::var(Self::ENV) {
            Ok(url) if !url.trim().is_empty() => {
                let url = url.trim().to_string();
                crate::postgres::url::validate(&url).map_err(|m| {
                    HarnessError::InvalidUrl(crate::Server::Postgres, format!("{}: {m}", Self::ENV))
                })?;
                Ok(TestPostgres {
                    admin_url: url,
                    server: None,
                })
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(HarnessError::InvalidUrl(
                crate::Server::Postgres,
                format!("{} is not valid UTF-8", Self::ENV),
            )),
            _ => {
                let binaries = crate::postgres::binaries::Binaries::locate().is_ok();
                let choice = choose(
                    Options {
                        external: false,
                        local_available: binaries,
                        docker_first: false,
                        docker_allowed: cfg!(feature = "docker"),
                    },
                    crate::process::docker::engine_available,
                );
                #[cfg(feature = "docker")]
                if choice == crate::lane::Choice::Docker {
                    let server = crate::postgres::docker::DockerPostgres::start()?;
                    return Ok(TestPostgres {
                        admin_url: server.admin_url().to_owned(),
                        server: Some(Owned::Docker(Box::new(server))),
                    });
                }
                let _ = choice;
                let server = PgServer::start()?;
                Ok(TestPostgres {
                    admin_url: server.url("postgres"),
                    server: Some(Owned::Local(server)),
                })
            }
        }
    }

    /// One instance per process, created on first use.
    ///
    /// A throwaway server started here is never dropped (statics are not);
    /// its watchdog stops it and deletes its directory within about a second
    /// after the process exits. If the first start fails, every call returns
    /// [`HarnessError::StartFailed`] with the same message.
    pub fn shared() -> Result<&'static TestPostgres, HarnessError> {
        shared_in(&SHARED, Server::Postgres, TestPostgres::from_env_or_start)
    }

    /// URL of the maintenance database (for the throwaway server:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`).
    ///
    /// For an external server this is the URL from the environment, including
    /// its password: do not print it (the `Debug` output masks it).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The same server, user and password as [`TestPostgres::admin_url`], but
    /// database `database` (the URL path is replaced, any query string is
    /// kept).
    pub fn url_for(&self, database: &str) -> String {
        crate::postgres::url::with_database(&self.admin_url, database)
    }

    /// Whether the server is external (named by [`TestPostgres::ENV`]).
    pub fn is_external(&self) -> bool {
        self.server.is_none()
    }
}

impl fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPostgres")
            .field("admin_url", &crate::url::mask_password(&self.admin_url))
            .field("external", &self.is_external())
            .field("server", &self.server)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(url: &str) -> TestPostgres {
        TestPostgres {
            admin_url: url.to_string(),
            server: None,
        }
    }

    #[test]
    fn url_for_replaces_database_and_keeps_query() {
        let pg = external(
            "postgres://app:pw@db.internal:5432/postgres?sslmode=require&connect_timeout=5",
        );
        assert!(pg.is_external());
        assert_eq!(
            pg.url_for("ds_test_1"),
            "postgres://app:pw@db.internal:5432/ds_test_1?sslmode=require&connect_timeout=5"
        );
        assert_eq!(
            pg.admin_url(),
            "postgres://app:pw@db.internal:5432/postgres?sslmode=require&connect_timeout=5"
        );
    }

    #[test]
    fn debug_masks_password() {
        let pg = external("postgresql://app:hunter2@db:5432/postgres");
        let debug = format!("{pg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("postgresql://app:***@db:5432/postgres"),
            "{debug}"
        );
    }

    #[test]
    fn shared_returns_same_instance() {
        let first = TestPostgres::shared().expect("shared server available");
        let second = TestPostgres::shared().expect("shared server available");
        assert!(std::ptr::eq(first, second));
        assert!(first.admin_url().starts_with("postgres"));
        if !first.is_external() {
            assert!(first
                .admin_url()
                .starts_with("postgres://postgres@127.0.0.1:"));
            assert!(first.admin_url().ends_with("/postgres"));
            let url = first.url_for("other");
            assert!(url.ends_with("/other"), "{url}");
            // The server really is reachable.
            let port: u16 = url
                .trim_start_matches("postgres://postgres@127.0.0.1:")
                .trim_end_matches("/other")
                .parse()
                .unwrap();
            let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
            assert!(std::net::TcpStream::connect(addr).is_ok());
        }
    }
}
