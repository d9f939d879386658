//! The one error type of the test servers.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

use crate::mongo::StandIn;

/// Which kind of test server an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// A PostgreSQL server ([`crate::postgres`]).
    Postgres,
    /// A MongoDB server or stand-in ([`crate::mongo`]).
    Mongo,
}

/// Error type of the test servers.
///
/// Never contains a plain-text password: URLs are masked before they are put
/// into an error.
#[derive(Debug)]
pub enum HarnessError {
    /// No directory with the PostgreSQL server binaries (`postgres` and
    /// `initdb`) was found.
    BinariesMissing {
        /// The directories that were looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// The MongoDB stand-in server's binary was not found. The message names
    /// the path that was looked at and the exact command that installs the
    /// binary where the harness looks by default.
    StandInMissing {
        /// Which stand-in.
        kind: StandIn,
        /// The path that was looked at.
        path: PathBuf,
        /// Whether `path` came from the environment variable
        /// [`StandIn::bin_env`] rather than the default install location.
        from_env: bool,
    },
    /// [`StandIn::SELECT_ENV`] names no known stand-in.
    InvalidStandIn(String),
    /// An I/O operation (file system, spawning a process, …) failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A server (`initdb`, PostgreSQL, a stand-in, a Docker container) failed
    /// to start or did not become ready in time.
    StartFailed {
        /// Which kind of server.
        server: Server,
        /// What went wrong, including which lane was being started.
        message: String,
        /// The last lines of the server's log or output; may be empty.
        log_tail: String,
    },
    /// The URL of an external server (`DATASTORE_TEST_POSTGRES_URL`,
    /// `DATASTORE_TEST_MONGODB_URI`) is not usable (the message contains the
    /// URL with its password masked).
    InvalidUrl(Server, String),
}

impl HarnessError {
    /// Builds an [`HarnessError::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`HarnessError::StartFailed`].
    pub(crate) fn start_failed(
        server: Server,
        message: impl Into<String>,
        log_tail: impl Into<String>,
    ) -> Self {
        HarnessError::StartFailed {
            server,
            message: message.into(),
            log_tail: log_tail.into(),
        }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::BinariesMissing { searched } => {
                let searched: Vec<String> =
                    searched.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "PostgreSQL server binaries not found (searched {}); install the Debian \
                     package `postgresql` (apt-get install -y postgresql) or set PG_BIN_DIR, \
                     or point tests at a server with DATASTORE_TEST_POSTGRES_URL",
                    if searched.is_empty() {
                        "nothing".to_string()
                    } else {
                        searched.join(", ")
                    }
                )
            }
            HarnessError::StandInMissing {
                kind,
                path,
                from_env,
            } => stand_in_missing(f, *kind, path, *from_env),
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::StartFailed {
                server,
                message,
                log_tail,
            } => {
                let (what, tail) = match server {
                    Server::Postgres => ("PostgreSQL failed to start", "log tail"),
                    Server::Mongo => ("MongoDB test server failed to start", "output tail"),
                };
                write!(f, "{what}: {message}")?;
                if !log_tail.trim().is_empty() {
                    write!(f, "\n--- {tail} ---\n{}", log_tail.trim_end())?;
                }
                Ok(())
            }
            HarnessError::InvalidUrl(Server::Postgres, message) => {
                write!(f, "invalid PostgreSQL URL: {message}")
            }
            HarnessError::InvalidUrl(Server::Mongo, message) => {
                write!(f, "invalid MongoDB URI: {message}")
            }
            HarnessError::InvalidStandIn(name) => write!(
                f,
                "{}={name:?} names no stand-in; use {}",
                StandIn::SELECT_ENV,
                StandIn::ALL.map(StandIn::name).join(" or ")
            ),
        }
    }
}

/// The message of [`HarnessError::StandInMissing`]: where it looked, and how to install it.
fn stand_in_missing(
    f: &mut fmt::Formatter<'_>,
    kind: StandIn,
    path: &std::path::Path,
    from_env: bool,
) -> fmt::Result {
    let bin_env = kind.bin_env();
    let install = kind.install_command();
    if from_env {
        write!(
            f,
            "MongoDB stand-in {kind} not found at {} (from {bin_env}); fix or \
             unset {bin_env} (unset, the harness uses the copy installed from the \
             workspace root with `{install}`)",
            path.display(),
        )?;
    } else {
        write!(
            f,
            "MongoDB stand-in {kind} not found at {}; install it from the \
             workspace root with `{install}` (`cargo xtask test` does), or set \
             {bin_env} to the binary",
            path.display(),
        )?;
    }
    write!(
        f,
        ", or point tests at a MongoDB replica set with {} (a reachable Docker \
         engine is used automatically)",
        crate::mongo::TestMongo::URI_ENV,
    )
}

impl Error for HarnessError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_traits<T: Error + Send + Sync + 'static>() {}
        assert_traits::<HarnessError>();
    }

    #[test]
    fn stand_in_missing_gives_install_command() {
        let err = HarnessError::StandInMissing {
            kind: StandIn::Jongodb,
            path: PathBuf::from("/ws/target/jongodb/node_modules/x/bin/jongodb"),
            from_env: false,
        };
        let text = err.to_string();
        assert!(
            text.contains(
                "npm install --prefix target/jongodb @jongodb/memory-server-bin-linux-x64-gnu@0.1.6"
            ),
            "{text}"
        );
        assert!(
            text.contains("/ws/target/jongodb/node_modules/x/bin/jongodb"),
            "{text}"
        );
        assert!(text.contains("JONGODB_BIN"), "{text}");
        assert!(text.contains("DATASTORE_TEST_MONGODB_URI"), "{text}");
    }

    #[test]
    fn stand_in_missing_from_env_names_the_variable() {
        let err = HarnessError::StandInMissing {
            kind: StandIn::Jongodb,
            path: PathBuf::from("/opt/nowhere/jongodb"),
            from_env: true,
        };
        let text = err.to_string();
        assert!(
            text.contains("/opt/nowhere/jongodb (from JONGODB_BIN)"),
            "{text}"
        );
        assert!(text.contains("fix or unset JONGODB_BIN"), "{text}");
        assert!(
            text.contains("npm install --prefix target/jongodb"),
            "{text}"
        );
    }

    #[test]
    fn secantusdb_missing_gives_the_venv_command() {
        let err = HarnessError::StandInMissing {
            kind: StandIn::SecantusDb,
            path: PathBuf::from("/ws/target/secantusdb/bin/secantusd-py"),
            from_env: false,
        };
        let text = err.to_string();
        assert!(
            text.contains("python3 -m venv target/secantusdb && target/secantusdb/bin/pip install secantusdb==0.7.0b3"),
            "{text}"
        );
        assert!(text.contains("SECANTUSD_BIN"), "{text}");
    }

    #[test]
    fn start_failed_shows_tail() {
        let err = HarnessError::start_failed(Server::Mongo, "boom", "line 1\nline 2\n");
        assert_eq!(
            err.to_string(),
            "MongoDB test server failed to start: boom\n--- output tail ---\nline 1\nline 2"
        );
        let err = HarnessError::start_failed(Server::Mongo, "boom", " \n");
        assert_eq!(err.to_string(), "MongoDB test server failed to start: boom");
    }

    #[test]
    fn io_error_has_source() {
        let err = HarnessError::io("reading x", std::io::Error::other("boom"));
        assert!(err.source().is_some());
        assert_eq!(err.to_string(), "reading x: boom");
    }

    #[test]
    fn binaries_missing_message_is_actionable() {
        let err = HarnessError::BinariesMissing {
            searched: vec![PathBuf::from("/usr/lib/postgresql/15/bin")],
        };
        let text = err.to_string();
        assert!(text.contains("/usr/lib/postgresql/15/bin"), "{text}");
        assert!(text.contains("apt-get install -y postgresql"), "{text}");
        assert!(text.contains("PG_BIN_DIR"), "{text}");
        assert!(text.contains("DATASTORE_TEST_POSTGRES_URL"), "{text}");
    }
}
