//! Change streams: ordered, resumable feeds of the changes committed to a collection.
//!
//! # Contract
//! - [`Collection::watch`](crate::Collection::watch) returns the changes committed to the
//!   collection that match the filter, each with a [`ResumeToken`]. Tokens are totally ordered
//!   and every consumer sees the same order; a change of one document is never delivered before
//!   an earlier committed change of the same document.
//! - [`Collection::checkpoint`](crate::Collection::checkpoint) persists a consumer's position in
//!   the database. After a crash, a watch that starts from [`StartFrom::Checkpoint`] delivers
//!   exactly the matching changes after the checkpointed token. A consumer that checkpoints
//!   after handling each event therefore sees every matching committed change exactly once, in
//!   order.
//! - A transaction that commits late is delivered when it commits (never skipped because others
//!   committed first).
//! - A checkpoint older than the retained history is a [`HistoryLost`](crate::ErrorKind::HistoryLost)
//!   error, never a silent restart.
//!
//! # Filtering
//! The [`Filter`] DSL applies to each change seen as a document, with the
//! semantics of queries:
//! ```json
//! {
//!   "operationType": "insert" | "update" | "replace" | "delete",
//!   "documentKey": {"_id": "…"},
//!   "fullDocument": { …the document right after the change (absent for deletes)… },
//!   "updateDescription": {"updatedFields": ["a.b", …], "removedFields": ["c", …]}
//! }
//! ```
//! `updatedFields` lists the written paths whose value changed (as written by the update),
//! so `Filter::eq("updateDescription.updatedFields", "healtheventstatus.nodequarantined")`
//! selects updates of the quarantine status. Ready-made filters for NVSentinel's watchers are in
//! [`watchers`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde_json::json;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::value::{date_value, Document, DocumentId, Value, CREATED_AT_FIELD, ID_FIELD};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationType {
    /// A new document.
    Insert,
    /// Some fields changed.
    Update,
    /// The whole document was replaced.
    Replace,
    /// The document was removed.
    Delete,
}

impl OperationType {
    /// The name used in filters (`insert`, `update`, `replace`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Insert => "insert",
            OperationType::Update => "update",
            OperationType::Replace => "replace",
            OperationType::Delete => "delete",
        }
    }
}

impl fmt::Display for OperationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An opaque, totally ordered position in a change stream. Compare tokens with `<`; store them
/// as text with [`as_str`](ResumeToken::as_str) / [`from_string`](ResumeToken::from_string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResumeToken(String);

impl ResumeToken {
    /// Wraps a provider-made token (providers only).
    pub fn from_string(s: impl Into<String>) -> Self {
        ResumeToken(s.into())
    }
    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResumeToken({})", self.0)
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One committed change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// Position of this change; pass it to [`checkpoint`](crate::Collection::checkpoint) once handled.
    pub token: ResumeToken,
    /// What happened.
    pub operation: OperationType,
    /// The changed document's id.
    pub document_id: DocumentId,
    /// The whole document right after the change (with `_id` and `createdAt`); `None` for deletes.
    pub full_document: Option<Document>,
    /// Paths the update wrote whose value changed (updates only), as MongoDB reports them: a
    /// path whose parent was new is reported at its topmost new field, a push onto an array
    /// as the new element's index (`list.3`). A set: the order is the server's.
    pub updated_fields: Vec<String>,
    /// Paths the update removed (updates only). A set: the order is the server's.
    pub removed_fields: Vec<String>,
    /// When the change was committed, at the provider's precision (PostgreSQL: the time the
    /// change was first seen committed, at most a poll interval late).
    pub commit_time: DateTime<Utc>,
}

impl ChangeEvent {
    /// The change seen as a document, the shape change-stream filters apply to.
    pub fn to_filter_document(&self) -> Document {
        let mut doc = Document::new();
        doc.insert(
            "operationType".into(),
            Value::String(self.operation.as_str().into()),
        );
        doc.insert(
            "documentKey".into(),
            json!({ ID_FIELD: self.document_id.as_str() }),
        );
        if let Some(full) = &self.full_document {
            doc.insert("fullDocument".into(), Value::Object(full.clone()));
        }
        if self.operation == OperationType::Update {
            doc.insert(
                "updateDescription".into(),
                json!({ "updatedFields": self.updated_fields, "removedFields": self.removed_fields }),
            );
        }
        doc
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Right after the consumer's saved checkpoint; from [`Now`](StartFrom::Now) when it has none.
    #[default]
    Checkpoint,
    /// Only changes committed after the watch starts.
    Now,
    /// From the oldest retained change.
    Beginning,
    /// From the first change committed at or after this time (within retained history).
    Time(DateTime<Utc>),
}

/// Options of [`Collection::watch`](crate::Collection::watch).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The consumer's name: its checkpoint is stored under it (per collection).
    pub consumer: String,
    /// Which changes to deliver (see the module docs for the document shape).
    pub filter: Filter,
    /// Where to start.
    pub start: StartFrom,
    /// How many changes to read per round trip (1..=10,000).
    pub batch_size: u32,
    /// How long to wait between polls when nothing is new.
    pub poll_interval: Duration,
    /// How long the consumer's read lease lasts without renewal. Only one process at a time
    /// reads (and checkpoints) for a consumer; others wait as standbys and take over when the
    /// holder stops or has not renewed for this long.
    pub lease_ttl: Duration,
}

impl WatchOptions {
    /// Options for `consumer` with defaults: every change, from the checkpoint, batches of 500,
    /// polling every 100 ms.
    pub fn new(consumer: impl Into<String>) -> Self {
        WatchOptions {
            consumer: consumer.into(),
            filter: Filter::All,
            start: StartFrom::Checkpoint,
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(10),
        }
    }
    /// With a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
    /// With a start position.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }
    /// With a poll interval.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }
    /// Defaults, with the poll interval from the configuration (`DATASTORE_POLL_INTERVAL`).
    pub fn from_config(consumer: impl Into<String>, config: &crate::DatastoreConfig) -> Self {
        WatchOptions::new(consumer).poll_interval(config.poll_interval)
    }
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        validate_consumer(&self.consumer)?;
        if self.batch_size == 0 || self.batch_size > crate::query::MAX_PAGE_SIZE {
            return Err(Error::invalid_input(format!(
                "watch batch size {} is outside 1..={}",
                self.batch_size,
                crate::query::MAX_PAGE_SIZE
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid_input(
                "watch poll interval must be greater than zero",
            ));
        }
        if self.lease_ttl.is_zero() {
            return Err(Error::invalid_input(
                "watch lease_ttl must be greater than zero (a lease that expires as it is taken lets two readers share a consumer)",
            ));
        }
        self.filter.lower().map(|_| ())
    }
}

/// Checks a consumer name (1..=200 bytes, no NUL).
pub fn validate_consumer(consumer: &str) -> Result<()> {
    if consumer.is_empty() || consumer.len() > 200 || consumer.contains('\0') {
        return Err(Error::invalid_input(
            "consumer names must be 1 to 200 bytes without NUL",
        ));
    }
    Ok(())
}

/// What [`DataStore::prune_change_history`](crate::DataStore::prune_change_history) keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Changes older than this are deleted, even if a consumer still needs them.
    pub max_age: Duration,
    /// Changes younger than this are kept, even if every consumer is past them (so new
    /// consumers can start from recent history).
    pub min_age: Duration,
}

impl Default for RetentionPolicy {
    /// Seven days at most, one hour at least.
    fn default() -> Self {
        RetentionPolicy {
            max_age: Duration::from_secs(7 * 24 * 3600),
            min_age: Duration::from_secs(3600),
        }
    }
}

/// How far a consumer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Committed changes matching the filter after the consumer's checkpoint.
    pub events_behind: u64,
    /// Age of the oldest of them (`None` when none is waiting).
    pub oldest_undelivered_age: Option<Duration>,
}

/// A change-stream consumer as stored (see
/// [`Collection::consumers`](crate::Collection::consumers)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub consumer: String,
    /// Whether it has a checkpoint (a watch from [`StartFrom::Checkpoint`] resumes there; without
    /// one it starts from [`StartFrom::Now`]).
    pub checkpointed: bool,
    /// When its checkpoint was last written or reset.
    pub checkpointed_at: Option<DateTime<Utc>>,
    /// The stream holding its lease (an owner id `<pid>-<random>-<n>`), while unexpired.
    pub lease_holder: Option<String>,
    /// Until when that lease lasts without renewal.
    pub lease_until: Option<DateTime<Utc>>,
}

impl ConsumerInfo {
    /// A consumer's record (for providers).
    pub fn new(
        consumer: impl Into<String>,
        checkpointed: bool,
        checkpointed_at: Option<DateTime<Utc>>,
        lease: Option<(String, DateTime<Utc>)>,
    ) -> ConsumerInfo {
        let (lease_holder, lease_until) = lease.unzip();
        ConsumerInfo {
            consumer: consumer.into(),
            checkpointed,
            checkpointed_at,
            lease_holder,
            lease_until,
        }
    }
}

/// The error of a consumer-admin call on a consumer whose lease a stream (`holder`, when
/// known) holds.
pub fn consumer_running(consumer: &str, holder: Option<&str>) -> crate::Error {
    let holder = holder.map_or_else(|| "a stream".to_owned(), |h| format!("stream {h}"));
    crate::Error::new(
        crate::ErrorKind::Conflict,
        format!(
            "consumer {consumer:?} is running ({holder} holds its lease): stop it, or wait for \
             its lease to expire, then retry"
        ),
    )
}

/// Refuses a reset to [`StartFrom::Checkpoint`] (for providers' `reset_consumer`).
pub fn validate_reset(to: StartFrom) -> crate::Result<()> {
    if to == StartFrom::Checkpoint {
        return Err(crate::Error::invalid_input(
            "reset_consumer: reset to Now, Beginning or a time; Checkpoint is where it already is",
        ));
    }
    Ok(())
}

/// A stream of changes. It ends only after an error (which is its last item); dropping it stops
/// watching.
pub type ChangeStream = BoxStream<'static, Result<ChangeEvent>>;

/// Helper for providers: the full document of a change with its reserved fields.
pub fn full_document(
    mut body: Document,
    id: &DocumentId,
    created_at: DateTime<Utc>,
) -> Result<Document> {
    body.insert(ID_FIELD.into(), Value::String(id.to_string()));
    body.insert(CREATED_AT_FIELD.into(), date_value(created_at)?);
    Ok(body)
}

/// Ready-made filters for NVSentinel's five watchers (reference §3.4).
pub mod watchers {
    use crate::filter::Filter;
    use crate::model::fields;

    fn op(name: &str) -> Filter {
        Filter::eq("operationType", name)
    }

    fn full(path: &str) -> String {
        format!("fullDocument.{path}")
    }

    /// fault-quarantine: inserts whose processing strategy is EXECUTE_REMEDIATION (1) or unset.
    pub fn processable_inserts() -> Filter {
        op("insert").and(
            Filter::eq(full(fields::PROCESSING_STRATEGY), 1)
                .or(Filter::exists(full(fields::PROCESSING_STRATEGY), false)),
        )
    }

    /// node-drainer: updates that changed the quarantine status to Quarantined,
    /// AlreadyQuarantined, UnQuarantined or Cancelled.
    pub fn node_quarantine_status_changes() -> Filter {
        op("update")
            .and(Filter::eq(
                "updateDescription.updatedFields",
                fields::NODE_QUARANTINED,
            ))
            .and(Filter::is_in(
                full(fields::NODE_QUARANTINED),
                [
                    "Quarantined",
                    "AlreadyQuarantined",
                    "UnQuarantined",
                    "Cancelled",
                ],
            ))
    }

    /// fault-remediation, as NVSentinel's pipeline: an update that writes the whole eviction
    /// status (`healtheventstatus.userpodsevictionstatus`, as node-drainer does; a write of its
    /// `.status` alone does not count) and leaves the event drained (Succeeded or
    /// AlreadyDrained) and quarantined (Quarantined or AlreadyQuarantined), or released
    /// (UnQuarantined) with the eviction Succeeded; or an update that writes `Cancelled` to the
    /// quarantine status; or an insert (the fail-safe path) of an event already in one of those
    /// three states.
    ///
    /// "The value written" is the document's value at a written path: change documents are
    /// exact (the document right after that change) on every provider.
    pub fn quarantined_and_drained() -> Filter {
        let drained = Filter::is_in(
            full(fields::EVICTION_STATUS),
            ["Succeeded", "AlreadyDrained"],
        );
        let quarantined = Filter::is_in(
            full(fields::NODE_QUARANTINED),
            ["Quarantined", "AlreadyQuarantined"],
        );
        let released = Filter::eq(full(fields::NODE_QUARANTINED), "UnQuarantined")
            .and(Filter::eq(full(fields::EVICTION_STATUS), "Succeeded"));
        let cancelled = Filter::eq(full(fields::NODE_QUARANTINED), "Cancelled");
        let wrote = |path: &str| Filter::eq("updateDescription.updatedFields", path);
        let drained_or_released = drained.and(quarantined).or(released);
        let updates = op("update").and(
            wrote(fields::EVICTION)
                .and(drained_or_released.clone())
                .or(wrote(fields::NODE_QUARANTINED).and(cancelled.clone())),
        );
        let inserts = op("insert").and(drained_or_released.or(cancelled));
        updates.or(inserts)
    }

    /// health-events-analyzer, as NVSentinel's pipeline: inserts of unhealthy events not
    /// produced by the analyzer itself, with processing strategy 1 (EXECUTE_REMEDIATION), 3
    /// (STORE_AND_ANALYSE) or unset. Fatal or not: the pipeline has no condition on `isfatal`,
    /// whatever its name says.
    pub fn non_fatal_unhealthy_inserts() -> Filter {
        op("insert")
            .and(Filter::ne(full(fields::AGENT), "health-events-analyzer"))
            .and(Filter::eq(full(fields::IS_HEALTHY), false))
            .and(
                Filter::is_in(full(fields::PROCESSING_STRATEGY), [1, 3])
                    .or(Filter::exists(full(fields::PROCESSING_STRATEGY), false)),
            )
    }

    /// event-exporter: every insert.
    pub fn all_inserts() -> Filter {
        op("insert")
    }
}
