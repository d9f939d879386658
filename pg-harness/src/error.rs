//! The harness error type.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

/// Error type for the harness.
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
    /// An I/O operation (file system, spawning a process, …) failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `initdb` or the server failed, or the server did not become ready.
    StartFailed {
        /// What went wrong.
        message: String,
        /// The last lines of the server log (or of the `initdb` output); may
        /// be empty.
        log_tail: String,
    },
    /// The URL in `DATASTORE_TEST_POSTGRES_URL` is not usable (the message
    /// contains the URL with its password masked).
    InvalidUrl(String),
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
    pub(crate) fn start_failed(message: impl Into<String>, log_tail: impl Into<String>) -> Self {
        HarnessError::StartFailed {
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
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::StartFailed { message, log_tail } => {
                write!(f, "PostgreSQL failed to start: {message}")?;
                if !log_tail.trim().is_empty() {
                    write!(f, "\n--- log tail ---\n{}", log_tail.trim_end())?;
                }
                Ok(())
            }
            HarnessError::InvalidUrl(message) => write!(f, "invalid PostgreSQL URL: {message}"),
        }
    }
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

    #[test]
    fn io_error_has_source() {
        let err = HarnessError::io("reading x", std::io::Error::other("boom"));
        assert!(err.source().is_some());
        assert_eq!(err.to_string(), "reading x: boom");
    }
}
