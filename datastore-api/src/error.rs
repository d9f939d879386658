//! The one error type every provider returns.

use std::fmt;

/// What a caller can do about an [`Error`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The addressed document does not exist.
    NotFound,
    /// A unique key (document id, idempotency key, business key) already exists.
    Duplicate,
    /// The request itself is wrong (bad field path, bad value, impossible update); retrying the
    /// same request can never succeed. Nothing was changed.
    InvalidInput,
    /// A passing failure (connection lost, serialization conflict, timeout, server restarting);
    /// the same request may succeed if retried.
    Transient,
    /// The backend failed in a way that retrying will not fix (a schema mismatch, a stored
    /// document that does not decode, a permission error).
    Permanent,
    /// The configuration is missing, malformed or names an unavailable provider.
    Configuration,
    /// A change-stream position is older than the retained history: the changes after it are
    /// gone. Decide explicitly how to recover (for example a cold start from the current state).
    HistoryLost,
    /// Another process holds this change-stream consumer's lease: this one must not read or
    /// checkpoint for it now. Stop, and watch again to wait as a standby.
    Conflict,
    /// The provider or the server it talks to cannot do this at all (for example change
    /// streams on a MongoDB server that is not a replica set). Retrying will not help; use
    /// another server or do without the feature.
    Unsupported,
}

impl ErrorKind {
    /// A short lowercase name, stable for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Configuration => "configuration",
            ErrorKind::HistoryLost => "history_lost",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The datastore error: a [`kind`](Error::kind) to act on, a message for humans, and an optional
/// source. Messages never contain passwords or key material.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias used across the API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for an [`ErrorKind::Configuration`] error.
    pub fn configuration(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Configuration, message)
    }

    /// Shorthand for an [`ErrorKind::Permanent`] error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Permanent, message)
    }

    /// Shorthand for an [`ErrorKind::Transient`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Transient, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message (without the source chain).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// True for [`ErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// True for [`ErrorKind::Duplicate`].
    pub fn is_duplicate(&self) -> bool {
        self.kind == ErrorKind::Duplicate
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// What is wrong with an index the provider relies on (upstream's `ErrIndexMissing`,
/// `ErrIndexMismatch`, `ErrIndexBuilding`): the source of the [`Error`] that
/// connecting or [`DataStore::check_ready`](crate::DataStore::check_ready) returns; read it with
/// [`Error::index_problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexProblem {
    /// No index of that key exists. [`ErrorKind::Permanent`].
    Missing {
        /// The collection (table).
        collection: String,
        /// What the index must be, e.g. `unique (idempotency_key)`.
        expected: String,
    },
    /// An index of that key exists but is not what the provider needs (for example not
    /// unique). [`ErrorKind::Permanent`].
    Mismatch {
        /// The collection (table).
        collection: String,
        /// What the index must be.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The index is being built and does not enforce its constraint yet.
    /// [`ErrorKind::Transient`]: ready once the build finishes.
    Building {
        /// The collection (table).
        collection: String,
        /// The index being built.
        index: String,
    },
}

impl IndexProblem {
    /// The error a caller receives: transient while building, permanent otherwise, with what
    /// to do.
    pub fn into_error(self) -> Error {
        let (kind, message) = match &self {
            IndexProblem::Missing { collection, expected } => (
                ErrorKind::Permanent,
                format!("{collection}: the index {expected} is missing; duplicates would not be refused. Recreate it (the provider creates it on a fresh database), then reconnect"),
            ),
            IndexProblem::Mismatch { collection, expected, found } => (
                ErrorKind::Permanent,
                format!("{collection}: the index on that key is {found}, but it must be {expected}; drop it and reconnect so that the provider creates the right one"),
            ),
            IndexProblem::Building { collection, index } => (
                ErrorKind::Transient,
                format!("{collection}: the index {index} is still being built; retry when the build has finished"),
            ),
        };
        Error::new(kind, message).with_source(self)
    }
}

impl fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexProblem::Missing { .. } => f.write_str("index missing"),
            IndexProblem::Mismatch { .. } => f.write_str("index mismatch"),
            IndexProblem::Building { .. } => f.write_str("index building"),
        }
    }
}

impl std::error::Error for IndexProblem {}

impl Error {
    /// The index problem behind this error, if that is what it is.
    pub fn index_problem(&self) -> Option<&IndexProblem> {
        self.source.as_ref()?.downcast_ref::<IndexProblem>()
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::permanent("document does not decode into the requested type").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_kind_message_and_source() {
        let io = std::io::Error::other("boom");
        let e = Error::transient("connection lost").with_source(io);
        assert_eq!(e.to_string(), "transient: connection lost: boom");
        assert!(e.is_retryable());
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.index_problem().is_none());
    }

    #[test]
    fn index_problems_are_typed_and_say_what_to_do() {
        let e = IndexProblem::Building {
            collection: "health_events".into(),
            index: "idx".into(),
        }
        .into_error();
        assert!(e.is_retryable());
        assert!(matches!(
            e.index_problem(),
            Some(IndexProblem::Building { .. })
        ));
        let e = IndexProblem::Missing {
            collection: "health_events".into(),
            expected: "unique (idempotency_key)".into(),
        }
        .into_error();
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert!(e.message().contains("Recreate"), "{e}");
    }
}
