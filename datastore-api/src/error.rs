//! The one error type every provider returns.

use std::fmt;

/// What happened. Whether retrying may help is the error's [`ErrorStatus`], apart.
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
    /// The backend failed: connection lost, serialization conflict, timeout, server
    /// restarting (all [`Temporary`](ErrorStatus::Temporary): the same request may succeed if
    /// retried), or a schema mismatch, a stored document that does not decode, a permission
    /// error ([`Permanent`](ErrorStatus::Permanent)).
    Backend,
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
            ErrorKind::Backend => "backend",
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

/// Whether retrying may help, apart from what happened (OpenDAL's model).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Retrying the same request will not help.
    Permanent,
    /// The same request may succeed if retried ([`Error::is_retryable`]).
    Temporary,
    /// It was temporary, but retries did not help (a caller's retry loop gave up).
    Persistent,
}

impl ErrorStatus {
    /// A short lowercase name, stable for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::Permanent => "permanent",
            ErrorStatus::Temporary => "temporary",
            ErrorStatus::Persistent => "persistent",
        }
    }
}

impl fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The datastore error: what happened ([`kind`](Error::kind)), whether retrying may help
/// ([`status`](Error::status)), a message for humans, structured context a caller can read
/// ([`context`](Error::context): the operation, collection, consumer), and an optional source.
/// Messages and context never contain passwords or key material.
pub struct Error {
    kind: ErrorKind,
    status: ErrorStatus,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias used across the API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`, [`Permanent`](ErrorStatus::Permanent).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            status: ErrorStatus::Permanent,
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// With another status.
    pub fn with_status(mut self, status: ErrorStatus) -> Self {
        self.status = status;
        self
    }

    /// [`Temporary`](ErrorStatus::Temporary) (retryable) from here on.
    pub fn temporary(self) -> Self {
        self.with_status(ErrorStatus::Temporary)
    }

    /// Marks a [`Temporary`](ErrorStatus::Temporary) error whose retries did not help as
    /// [`Persistent`](ErrorStatus::Persistent); other statuses stay.
    pub fn persistent(self) -> Self {
        match self.status {
            ErrorStatus::Temporary => self.with_status(ErrorStatus::Persistent),
            _ => self,
        }
    }

    /// Adds a context field (`operation`, `collection`, `consumer`, `provider`, …); a key
    /// already present keeps its first value (the innermost, most precise).
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        if !self.context.iter().any(|(k, _)| *k == key) {
            self.context.push((key, value.into()));
        }
        self
    }

    /// The same error (kind, status, context, source) with its message rewritten by `f`, for
    /// a caller that adds where it happened (`rule X: …`).
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
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

    /// Shorthand for a permanent [`ErrorKind::Backend`] error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Backend, message)
    }

    /// Shorthand for a temporary (retryable) [`ErrorKind::Backend`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Backend, message).temporary()
    }

    /// What happened.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying may help.
    pub fn status(&self) -> ErrorStatus {
        self.status
    }

    /// The context fields, innermost first.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The value of context field `key`.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The label logs and metrics use: the kind, but for a backend failure its status
    /// (`transient`, `permanent`, `persistent`), as before the status was its own field.
    pub fn label(&self) -> &'static str {
        match (self.kind, self.status) {
            (ErrorKind::Backend, ErrorStatus::Temporary) => "transient",
            (ErrorKind::Backend, ErrorStatus::Permanent) => "permanent",
            (ErrorKind::Backend, ErrorStatus::Persistent) => "persistent",
            (kind, _) => kind.as_str(),
        }
    }

    /// True for a permanent [`ErrorKind::Backend`] failure.
    pub fn is_permanent_backend(&self) -> bool {
        self.kind == ErrorKind::Backend && self.status == ErrorStatus::Permanent
    }

    /// The human-readable message (without the source chain).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when retrying the same request may succeed (the status is
    /// [`Temporary`](ErrorStatus::Temporary)).
    pub fn is_retryable(&self) -> bool {
        self.status == ErrorStatus::Temporary
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
        write!(f, "{}: {}", self.label(), self.message)?;
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
            .field("status", &self.status)
            .field("message", &self.message)
            .field("context", &self.context)
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
    /// No index of that key exists. A permanent [`ErrorKind::Backend`] error.
    Missing {
        /// The collection (table).
        collection: String,
        /// What the index must be, e.g. `unique (idempotency_key)`.
        expected: String,
    },
    /// An index of that key exists but is not what the provider needs (for example not
    /// unique). A permanent [`ErrorKind::Backend`] error.
    Mismatch {
        /// The collection (table).
        collection: String,
        /// What the index must be.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The index is being built and does not enforce its constraint yet.
    /// Temporary: ready once the build finishes.
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
        let (status, message) = match &self {
            IndexProblem::Missing { collection, expected } => (
                ErrorStatus::Permanent,
                format!("{collection}: the index {expected} is missing; duplicates would not be refused. Recreate it (the provider creates it on a fresh database), then reconnect"),
            ),
            IndexProblem::Mismatch { collection, expected, found } => (
                ErrorStatus::Permanent,
                format!("{collection}: the index on that key is {found}, but it must be {expected}; drop it and reconnect so that the provider creates the right one"),
            ),
            IndexProblem::Building { collection, index } => (
                ErrorStatus::Temporary,
                format!("{collection}: the index {index} is still being built; retry when the build has finished"),
            ),
        };
        Error::new(ErrorKind::Backend, message)
            .with_status(status)
            .with_source(self)
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
        assert!(e.is_permanent_backend());
        assert!(e.message().contains("Recreate"), "{e}");
    }

    #[test]
    fn status_and_context_are_apart_from_the_kind() {
        let e = Error::transient("timeout")
            .with_context("operation", "find")
            .with_context("collection", "health_events")
            .with_context("operation", "outer");
        assert_eq!(
            (e.kind(), e.status()),
            (ErrorKind::Backend, ErrorStatus::Temporary)
        );
        assert!(e.is_retryable());
        assert_eq!(e.context_value("operation"), Some("find"));
        assert_eq!(e.context_value("collection"), Some("health_events"));
        let given_up = e.persistent();
        assert_eq!(given_up.status(), ErrorStatus::Persistent);
        assert!(!given_up.is_retryable());
        assert_eq!(given_up.label(), "persistent");
        let dup = Error::new(ErrorKind::Duplicate, "x").persistent();
        assert_eq!(dup.status(), ErrorStatus::Permanent);
    }
}
