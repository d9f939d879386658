//! The CLI's error type: whatever stopped a command, with the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

use datastore::ErrorKind;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// A datastore operation failed (shown with the datastore error's `Display`).
    Datastore(datastore::Error),
    /// The embedded server (a throwaway PostgreSQL, a MongoDB stand-in) could not be started.
    Embedded(Box<dyn std::error::Error + Send + Sync>),
    /// A direct SQL statement (benchmark baseline, `EXPLAIN`) failed.
    Sql {
        /// What was being done.
        context: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A result was not what the NVSentinel component relies on, or a check failed.
    Check(String),
    /// An I/O error (building the runtime, writing output).
    Io(std::io::Error),
}

impl CliError {
    /// An embedded server that could not be started.
    pub fn embedded(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        CliError::Embedded(Box::new(e))
    }

    /// A failed check.
    pub fn check(message: impl Into<String>) -> Self {
        CliError::Check(message.into())
    }

    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Datastore(e) if e.kind() == ErrorKind::Configuration => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Datastore(e) => write!(f, "{e}"),
            CliError::Embedded(e) => write!(f, "embedded server: {e}"),
            CliError::Sql { context, source } => write!(f, "{context}: {source}"),
            CliError::Check(message) => write!(f, "check failed: {message}"),
            CliError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Datastore(e) => Some(e),
            CliError::Embedded(e) => Some(e.as_ref()),
            CliError::Sql { source, .. } => Some(source),
            CliError::Check(_) => None,
            CliError::Io(e) => Some(e),
        }
    }
}

impl From<datastore::Error> for CliError {
    fn from(e: datastore::Error) -> Self {
        CliError::Datastore(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

/// Adds context to sqlx results.
pub trait SqlContext<T> {
    /// Maps a sqlx error to [`CliError::Sql`] with `context`.
    fn sql_context(self, context: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn sql_context(self, context: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|source| CliError::Sql {
            context: context(),
            source,
        })
    }
}

/// Result alias of the CLI.
pub type CliResult<T> = Result<T, CliError>;
