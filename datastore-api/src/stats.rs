//! Sizes and usage of a store, as its server reports them: what `datastore stats` prints and
//! the size metrics sample ([`DataStore::stats`](crate::DataStore::stats)).
//!
//! A figure the server does not report (a test server without storage statistics, an oplog
//! the user may not read) is `None`, never a guess.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Sizes and usage of a store's collections and change history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStats {
    /// The health events collection, then the maintenance events collection.
    pub collections: Vec<CollectionStats>,
    /// The change history streams read (`None` when the server does not say).
    pub change_history: Option<ChangeHistoryStats>,
}

/// One collection (a PostgreSQL table, a MongoDB collection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionStats {
    /// The collection's name.
    pub name: String,
    /// Documents stored (counted, not estimated).
    pub documents: u64,
    /// Bytes of the documents on disk (PostgreSQL: table and TOAST; MongoDB: storage size).
    pub data_bytes: Option<u64>,
    /// Bytes of all its indexes.
    pub index_bytes: Option<u64>,
    /// Its indexes, by name.
    pub indexes: Vec<IndexStats>,
}

/// One index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStats {
    /// The index's name.
    pub name: String,
    /// Bytes on disk.
    pub bytes: Option<u64>,
    /// Times it was used since the server's statistics were last reset (PostgreSQL) or the
    /// server started (MongoDB).
    pub scans: Option<u64>,
}

/// The change history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeHistoryStats {
    /// Where it lives: `datastore_changes` (PostgreSQL) or `local.oplog.rs` (MongoDB, shared
    /// by every database of the server).
    pub source: String,
    /// Changes retained (MongoDB: oplog entries of the whole server, estimated).
    pub changes: u64,
    /// When the oldest retained change was committed.
    pub oldest: Option<DateTime<Utc>>,
    /// Bytes on disk.
    pub bytes: Option<u64>,
}

/// A connection pool's state (providers that pool connections themselves).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStats {
    /// Open connections (idle and in use).
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// The pool's cap (`max_connections`).
    pub max: u32,
    /// How long a checkout took when this was sampled, in seconds (a checkout that timed out
    /// reports its wait; `None` when it failed).
    pub acquire_seconds: Option<f64>,
}

/// What the server says about itself and this session ([`DataStore::server_info`](crate::DataStore::server_info)),
/// for `datastore doctor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerInfo {
    /// The server's version string (PostgreSQL's `version()`, MongoDB's `buildInfo`).
    pub version: String,
    /// This session's encryption, as the server sees it.
    pub tls: TlsState,
    /// Connections the server accepts in all (`None` when it does not say).
    pub max_connections: Option<u64>,
    /// The schema version applied on the server, and the newest this build knows (`None` for
    /// providers without a versioned schema).
    pub schema: Option<SchemaVersion>,
}

/// A session's encryption.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TlsState {
    /// Encrypted, as the server reports it.
    Encrypted {
        /// The protocol version (`TLSv1.3`).
        version: Option<String>,
        /// The cipher suite.
        cipher: Option<String>,
        /// The client certificate's distinguished name, when one was presented.
        client_dn: Option<String>,
    },
    /// Not encrypted.
    Plaintext,
    /// The server does not report it.
    Unknown,
}

/// A versioned schema's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaVersion {
    /// The newest version applied on the server.
    pub applied: i64,
    /// The newest version this build embeds.
    pub latest: i64,
}
