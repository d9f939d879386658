//! # datastore-api
//!
//! The backend-neutral API of the NVSentinel datastore: the store traits ([`DataStore`],
//! [`Collection`], [`Transaction`]), the typed health- and maintenance-event stores
//! ([`HealthEventStore`], [`MaintenanceEventStore`]), the [`Filter`] and [`Update`] DSLs with
//! MongoDB semantics, the one [`Error`] type, and the [`DatastoreConfig`]; change streams
//! ([`change`], with the reader both providers share in [`change_reader`]), the event
//! [`processor`], and [`metrics`].
//!
//! Providers (`provider-postgres`, `provider-mongo`) implement [`DataStore`] and
//! [`Collection`]; the domain methods are written once here, on top of [`Collection`], so they
//! behave identically on every backend. Aggregation pipelines live in the `datastore-query`
//! crate (a server that aggregates hands out a [`NativeAggregation`]), NVSentinel's analyzer
//! in `datastore-analyzer`.
//!
//! ## Stored document shape
//! ```json
//! {
//!   "_id": "6650c0de0a1b2c3d4e5f6789",
//!   "createdAt": {"$date": "2024-05-24T10:00:00.000Z"},
//!   "healthevent": {"nodename": "node-1", "isfatal": true, "checkname": "GpuXidError", "...": "..."},
//!   "healtheventstatus": {"nodequarantined": "", "faultremediated": null, "...": "..."}
//! }
//! ```
//! `createdAt` is assigned by the database server; dates use the `{"$date": …}` wrapper.

#![warn(missing_docs)]

pub mod change;
pub mod change_reader;
pub mod collection;
pub mod config;
pub mod domain;
pub mod error;
pub mod filter;
pub mod front;
mod guard;
pub mod import;
mod matching;
pub mod metrics;
pub mod model;
pub mod native_aggregation;
pub mod path;
pub mod prepare;
pub mod processor;
pub mod provider;
pub mod query;
mod query_json;
pub mod raw;
pub mod stats;
pub mod store;
pub mod update;
pub mod value;

pub use change::{
    ChangeEvent, ChangeStream, ConsumerInfo, Lag, OperationType, ResumeToken, RetentionPolicy,
    StartFrom, WatchOptions,
};
pub use config::{ConnectionConfig, DatastoreConfig, PoolConfig, Secret, SslMode};
pub use domain::{HealthEventStore, MaintenanceEventStore, UpsertOutcome};
pub use error::{Error, ErrorKind, ErrorStatus, IndexProblem, Result};
pub use filter::{CmpOp, Filter, Lowered, Scalar};
pub use import::{ImportDocument, Imported};
pub use metrics::OperationLabels;
pub use native_aggregation::{NativeAggregation, NativeLimits};
pub use path::{FieldPath, ReservedField};
pub use query::{
    Direction, FindOptions, IdempotentOutcome, Inserted, KeyedDocument, Page, PageRequest,
    PageToken, Sort, SortKey, UpdateResult,
};
pub use stats::{
    ChangeHistoryStats, CollectionStats, IndexStats, PoolStats, SchemaVersion, ServerInfo,
    StoreStats, TlsState,
};
pub use store::{
    batches, prepare_insert, prepare_inserts, with_transaction, Collection, CollectionExt,
    DataStore, ProviderKind, Transaction,
};
pub use update::{TimeFormat, Update, UpdateOp, ValidOp, ValidUpdate};
pub use value::{Document, DocumentId, Value};
