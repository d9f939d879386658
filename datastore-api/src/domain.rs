//! The typed NVSentinel stores, written once on top of [`Collection`] so that every provider
//! has exactly the same domain semantics.
//!
//! Where the two Go providers disagreed (reference §7.14), each method's rustdoc says which
//! behaviour this crate keeps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};

use crate::collection::{batches, Collection};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::Filter;
use crate::model::{
    fields, health_event_document, Csp, HealthEvent, HealthEventRecord, HealthEventStatus,
    InternalStatus, MaintenanceEvent, MaintenanceEventRecord, MaintenanceType, OperationStatus,
    ProviderStatus, QuarantineStatus,
};
use crate::query::{FindOptions, IdempotentOutcome, Inserted, KeyedDocument, Sort, UpdateResult};
use crate::update::{TimeFormat, Update};
use crate::value::{Document, DocumentId, Value, ID_FIELD};

/// The health-event store (reference §1.3).
#[derive(Clone, Copy)]
pub struct HealthEventStore<'a> {
    collection: &'a dyn Collection,
}

fn by_id(id: &DocumentId) -> Filter {
    Filter::eq(ID_FIELD, id.as_str())
}

fn newest_first() -> FindOptions {
    FindOptions::sorted(Sort::newest_first())
}

fn decode_all<T>(docs: Vec<Document>, decode: fn(Document) -> Result<T>) -> Result<Vec<T>> {
    docs.into_iter().map(decode).collect()
}

fn check_segment(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.contains('.') || s.starts_with('$') || s.contains('\0') {
        return Err(Error::invalid_input(format!(
            "{what} {s:?} must be non-empty and may not contain '.' or NUL or start with '$'"
        )));
    }
    Ok(())
}

fn require_non_empty(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid_input(format!("{what} must not be empty")));
    }
    Ok(())
}

impl<'a> HealthEventStore<'a> {
    /// Wraps a collection holding health events.
    pub fn new(collection: &'a dyn Collection) -> Self {
        HealthEventStore { collection }
    }

    /// The generic operations on the same collection.
    pub fn collection(&self) -> &'a dyn Collection {
        self.collection
    }

    /// Inserts one event with its initial status.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn insert(
        &self,
        event: &HealthEvent,
        status: &HealthEventStatus,
    ) -> Result<Inserted> {
        self.collection
            .insert_one(health_event_document(event, status))
            .await
    }

    /// Inserts events atomically (all or none), as platform-connectors does per gRPC batch.
    #[tracing::instrument(level = "debug", skip_all, fields(count = events.len()))]
    pub async fn insert_many(
        &self,
        events: &[(HealthEvent, HealthEventStatus)],
    ) -> Result<Vec<Inserted>> {
        let docs = events
            .iter()
            .map(|(e, s)| health_event_document(e, s))
            .collect();
        self.collection.insert_many(docs).await
    }

    /// Inserts events keyed by an idempotency key: a retried batch reports duplicates instead
    /// of storing events twice.
    #[tracing::instrument(level = "debug", skip_all, fields(count = events.len()))]
    pub async fn insert_idempotent(
        &self,
        events: &[(String, HealthEvent, HealthEventStatus)],
    ) -> Result<Vec<IdempotentOutcome>> {
        let docs = events
            .iter()
            .map(|(k, e, s)| KeyedDocument {
                key: k.clone(),
                document: health_event_document(e, s),
            })
            .collect();
        self.collection.insert_idempotent(docs).await
    }

    /// The event with this id, if any.
    pub async fn get(&self, id: &DocumentId) -> Result<Option<HealthEventRecord>> {
        self.find_latest_by_query(&by_id(id)).await
    }

    /// Events matching `filter`, newest first (`createdAt` then `_id` descending). Replaces
    /// Go's `FindHealthEventsByFilter` and `FindHealthEventsByQuery`.
    pub async fn find(&self, filter: &Filter) -> Result<Vec<HealthEventRecord>> {
        let docs = self.collection.find(filter, &newest_first()).await?;
        decode_all(docs, HealthEventRecord::from_document)
    }

    /// The node's events, newest first.
    pub async fn find_by_node(&self, node_name: &str) -> Result<Vec<HealthEventRecord>> {
        self.find(&Filter::eq(fields::NODE_NAME, node_name)).await
    }

    /// Events whose quarantine status **or** pod-eviction status equals `status` (the MongoDB
    /// behaviour; the Go PostgreSQL provider only checked eviction), newest first.
    pub async fn find_by_status(&self, status: &str) -> Result<Vec<HealthEventRecord>> {
        let f = Filter::eq(fields::NODE_QUARANTINED, status)
            .or(Filter::eq(fields::EVICTION_STATUS, status));
        self.find(&f).await
    }

    /// The newest event matching `filter`, if any.
    pub async fn find_latest_by_query(&self, filter: &Filter) -> Result<Option<HealthEventRecord>> {
        let docs = self
            .collection
            .find(filter, &newest_first().limit(1))
            .await?;
        docs.into_iter()
            .next()
            .map(HealthEventRecord::from_document)
            .transpose()
    }

    /// The node's newest event, if any.
    pub async fn find_latest_event_for_node(
        &self,
        node_name: &str,
    ) -> Result<Option<HealthEventRecord>> {
        self.find_latest_by_query(&Filter::eq(fields::NODE_NAME, node_name))
            .await
    }

    /// Matching events in batches, oldest first, over keyset pages (stable under concurrent
    /// inserts and updates; never OFFSET). A document that does not decode ends the stream with
    /// a permanent [`Backend`](ErrorKind::Backend) error instead of being skipped silently.
    pub fn stream_by_query(
        &self,
        filter: Filter,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Vec<HealthEventRecord>>> {
        batches(self.collection, filter, batch_size)
            .map(|batch| batch.and_then(|docs| decode_all(docs, HealthEventRecord::from_document)))
            .boxed()
    }

    /// The ids of matching events in batches, oldest first (for lazy cold starts).
    pub fn stream_ids_by_query(
        &self,
        filter: Filter,
        batch_size: u32,
    ) -> BoxStream<'a, Result<Vec<DocumentId>>> {
        batches(self.collection, filter, batch_size)
            .map(|batch| {
                batch.and_then(|docs| {
                    docs.into_iter()
                        .map(|d| match d.get(ID_FIELD) {
                            Some(Value::String(s)) => DocumentId::parse(s),
                            _ => Err(Error::permanent("stored document has no string _id")),
                        })
                        .collect()
                })
            })
            .boxed()
    }

    /// Applies `update` to every matching event (Go's `UpdateHealthEventsByQuery`).
    pub async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateResult> {
        self.collection.update_many(filter, update).await
    }

    async fn update_by_id(&self, id: &DocumentId, update: Update) -> Result<UpdateResult> {
        let r = self.collection.update_one(&by_id(id), &update).await?;
        if r.matched == 0 {
            return Err(Error::not_found(format!("health event {id} not found")));
        }
        Ok(r)
    }

    /// Writes the fields of `status` that are set, leaving the others as stored (MongoDB's
    /// granular behaviour; the Go PostgreSQL provider overwrote unset fields with NULL): quarantine
    /// status and the three timestamps when `Some`, the eviction status (status, message and
    /// metadata together) when its `status` is `Some`, `faultremediated` when `Some`, and each
    /// span id entry (merged per service). [`NotFound`](ErrorKind::NotFound) if `id` does not exist;
    /// an all-empty `status` is [`InvalidInput`](ErrorKind::InvalidInput).
    #[tracing::instrument(level = "debug", skip(self, status))]
    pub async fn update_status(
        &self,
        id: &DocumentId,
        status: &HealthEventStatus,
    ) -> Result<UpdateResult> {
        let mut u = Update::new();
        if let Some(q) = status.node_quarantined {
            u = u.set(fields::NODE_QUARANTINED, q.as_str());
        }
        if let Some(t) = status.quarantine_finish_timestamp {
            u = u.set(fields::QUARANTINE_FINISH, t);
        }
        if status.user_pods_eviction_status.status.is_some() {
            u = u.set(fields::EVICTION, &status.user_pods_eviction_status);
        }
        if let Some(t) = status.drain_finish_timestamp {
            u = u.set(fields::DRAIN_FINISH, t);
        }
        if let Some(b) = status.fault_remediated {
            u = u.set(fields::FAULT_REMEDIATED, serde_json::json!({ "value": b }));
        }
        if let Some(t) = status.last_remediation_timestamp {
            u = u.set(fields::LAST_REMEDIATION, t);
        }
        for (service, span) in &status.span_ids {
            check_segment("service name", service)?;
            u = u.set(format!("{}.{service}", fields::SPAN_IDS), span);
        }
        if u.ops().is_empty() {
            return Err(Error::invalid_input("status update sets no field"));
        }
        self.update_by_id(id, u).await
    }

    /// Replaces the whole status of **every** event of the node (the Go MongoDB provider updated
    /// one arbitrary event, the PostgreSQL one only its columns; both were bugs). Returns the counts.
    #[tracing::instrument(level = "debug", skip(self, status))]
    pub async fn update_status_by_node(
        &self,
        node_name: &str,
        status: &HealthEventStatus,
    ) -> Result<UpdateResult> {
        require_non_empty("node name", node_name)?;
        self.collection
            .update_many(
                &Filter::eq(fields::NODE_NAME, node_name),
                &Update::new().set(fields::STATUS, status),
            )
            .await
    }

    /// Sets the quarantine status and `spanids.fault-quarantine`; for `Quarantined` and
    /// `AlreadyQuarantined` also `quarantinefinishtimestamp` to the server time (MongoDB's
    /// behaviour; the Go PostgreSQL provider forgot the timestamp).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn update_node_quarantine_status(
        &self,
        id: &DocumentId,
        status: QuarantineStatus,
        span_id: &str,
    ) -> Result<UpdateResult> {
        let mut u = Update::new()
            .set(fields::NODE_QUARANTINED, status.as_str())
            .set(format!("{}.fault-quarantine", fields::SPAN_IDS), span_id);
        if matches!(
            status,
            QuarantineStatus::Quarantined | QuarantineStatus::AlreadyQuarantined
        ) {
            u = u.current_date(fields::QUARANTINE_FINISH, TimeFormat::ProtoTimestamp);
        }
        self.update_by_id(id, u).await
    }

    /// Sets the pod-eviction status (status, message and metadata).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn update_pod_eviction_status(
        &self,
        id: &DocumentId,
        status: &OperationStatus,
    ) -> Result<UpdateResult> {
        self.update_by_id(id, Update::new().set(fields::EVICTION, status))
            .await
    }

    /// Sets `faultremediated` to `{value: remediated}` and `lastremediationtimestamp` to the server
    /// time (the Go MongoDB provider wrote an unused `remediation` field instead, a bug).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn update_remediation_status(
        &self,
        id: &DocumentId,
        remediated: bool,
    ) -> Result<UpdateResult> {
        let u = Update::new()
            .set(
                fields::FAULT_REMEDIATED,
                serde_json::json!({ "value": remediated }),
            )
            .current_date(fields::LAST_REMEDIATION, TimeFormat::ProtoTimestamp);
        self.update_by_id(id, u).await
    }

    /// Sets `spanids.<service>`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn update_span_id(
        &self,
        id: &DocumentId,
        service: &str,
        span_id: &str,
    ) -> Result<UpdateResult> {
        check_segment("service name", service)?;
        self.update_by_id(
            id,
            Update::new().set(format!("{}.{service}", fields::SPAN_IDS), span_id),
        )
        .await
    }

    /// Whether any event of the node (current or past) has eviction status `Succeeded`.
    pub async fn check_if_node_already_drained(&self, node_name: &str) -> Result<bool> {
        let f = Filter::eq(fields::NODE_NAME, node_name)
            .and(Filter::eq(fields::EVICTION_STATUS, "Succeeded"));
        Ok(self.collection.count(&f).await? > 0)
    }
}

/// The maintenance-event store (reference §1.4).
#[derive(Clone, Copy)]
pub struct MaintenanceEventStore<'a> {
    collection: &'a dyn Collection,
}

/// Maintenance-event field names.
pub mod maintenance_fields {
    /// `eventId`
    pub const EVENT_ID: &str = "eventId";
    /// `csp`
    pub const CSP: &str = "csp";
    /// `clusterName`
    pub const CLUSTER_NAME: &str = "clusterName";
    /// `nodeName`
    pub const NODE_NAME: &str = "nodeName";
    /// `maintenanceType`
    pub const MAINTENANCE_TYPE: &str = "maintenanceType";
    /// `status`
    pub const STATUS: &str = "status";
    /// `cspStatus`
    pub const CSP_STATUS: &str = "cspStatus";
    /// `scheduledStartTime`
    pub const SCHEDULED_START: &str = "scheduledStartTime";
    /// `actualEndTime`
    pub const ACTUAL_END: &str = "actualEndTime";
    /// `eventReceivedTimestamp`
    pub const RECEIVED: &str = "eventReceivedTimestamp";
    /// `lastUpdatedTimestamp`
    pub const LAST_UPDATED: &str = "lastUpdatedTimestamp";
}

use maintenance_fields as mf;

/// Whether an upsert inserted or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// The stored document's id.
    pub id: DocumentId,
    /// True when the event was new.
    pub inserted: bool,
}

const UPSERT_ATTEMPTS: usize = 8;

fn duration_chrono(d: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(d)
        .map_err(|_| Error::invalid_input(format!("duration {d:?} is too large")))
}

impl<'a> MaintenanceEventStore<'a> {
    /// Wraps a collection holding maintenance events.
    pub fn new(collection: &'a dyn Collection) -> Self {
        MaintenanceEventStore { collection }
    }

    /// The generic operations on the same collection.
    pub fn collection(&self) -> &'a dyn Collection {
        self.collection
    }

    /// Inserts or updates the event keyed by `eventId`. On update every field is overwritten,
    /// except that a stored `QUARANTINE_TRIGGERED`, `HEALTHY_TRIGGERED` or
    /// `NODE_READINESS_TIMEOUT` status is kept unless the incoming status is
    /// `MAINTENANCE_COMPLETE` (the Go PostgreSQL behaviour: a re-polled provider event must not
    /// roll NVSentinel's own progress back to `DETECTED`; the Go MongoDB provider did, a bug).
    /// Safe under concurrent upserts of the same event (optimistic retry).
    #[tracing::instrument(level = "debug", skip_all, fields(event_id = %event.event_id))]
    pub async fn upsert(&self, event: &MaintenanceEvent) -> Result<UpsertOutcome> {
        require_non_empty("eventId", &event.event_id)?;
        let key = Filter::eq(mf::EVENT_ID, event.event_id.as_str());
        for _ in 0..UPSERT_ATTEMPTS {
            let existing = self
                .collection
                .find(&key, &FindOptions::default().limit(1))
                .await?;
            let Some(existing) = existing.into_iter().next() else {
                match self.collection.insert_one(event.to_document()?).await {
                    Ok(ins) => {
                        return Ok(UpsertOutcome {
                            id: ins.id,
                            inserted: true,
                        })
                    }
                    Err(e) if e.kind() == ErrorKind::Duplicate => continue,
                    Err(e) => return Err(e),
                }
            };
            let stored = MaintenanceEventRecord::from_document(existing)?;
            let mut incoming = event.clone();
            let keep = matches!(
                stored.event.status,
                InternalStatus::QuarantineTriggered
                    | InternalStatus::HealthyTriggered
                    | InternalStatus::NodeReadinessTimeout
            ) && incoming.status != InternalStatus::MaintenanceComplete;
            if keep {
                incoming.status = stored.event.status;
            }
            let mut u = Update::new();
            for (k, v) in incoming.to_document()? {
                u = u.set(k, v);
            }
            // Compare-and-set on the status we based the decision on.
            let cas = by_id(&stored.id).and(Filter::eq(mf::STATUS, stored.event.status.as_str()));
            if self.collection.update_one(&cas, &u).await?.matched == 1 {
                return Ok(UpsertOutcome {
                    id: stored.id,
                    inserted: false,
                });
            }
        }
        Err(Error::transient(format!(
            "maintenance event {} kept changing during upsert; retry",
            event.event_id
        )))
    }

    async fn find_sorted(
        &self,
        filter: Filter,
        sort: Sort,
        limit: Option<u64>,
    ) -> Result<Vec<MaintenanceEventRecord>> {
        let opts = FindOptions {
            sort,
            skip: 0,
            limit,
        };
        let docs = self.collection.find(&filter, &opts).await?;
        decode_all(docs, MaintenanceEventRecord::from_document)
    }

    async fn now(&self) -> Result<DateTime<Utc>> {
        self.collection.server_time().await
    }

    /// `DETECTED` events whose scheduled start is at or before server-now + `within`, earliest
    /// start first. Past starts are included (the Go MongoDB provider excluded them, so a
    /// missed poll meant a maintenance window that never triggered quarantine).
    pub async fn find_events_to_trigger_quarantine(
        &self,
        within: Duration,
    ) -> Result<Vec<MaintenanceEventRecord>> {
        let until = self
            .now()
            .await?
            .checked_add_signed(duration_chrono(within)?)
            .ok_or_else(|| Error::invalid_input(format!("window {within:?} is too large")))?;
        let f = Filter::eq(mf::STATUS, InternalStatus::Detected.as_str())
            .and(Filter::lte(mf::SCHEDULED_START, until));
        self.find_sorted(f, Sort::asc(mf::SCHEDULED_START), None)
            .await
    }

    /// `MAINTENANCE_COMPLETE` events whose actual end is set and at or before server-now − `delay`
    /// (the MongoDB behaviour), earliest end first.
    pub async fn find_events_to_trigger_healthy(
        &self,
        delay: Duration,
    ) -> Result<Vec<MaintenanceEventRecord>> {
        let before = self
            .now()
            .await?
            .checked_sub_signed(duration_chrono(delay)?)
            .ok_or_else(|| Error::invalid_input(format!("delay {delay:?} is too large")))?;
        let f = Filter::eq(mf::STATUS, InternalStatus::MaintenanceComplete.as_str())
            .and(Filter::lte(mf::ACTUAL_END, before));
        self.find_sorted(f, Sort::asc(mf::ACTUAL_END), None).await
    }

    /// Sets the internal status of the event with business key `event_id` (the Go MongoDB
    /// provider looked up the document `_id` instead) and `lastUpdatedTimestamp` to server time.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn update_event_status(
        &self,
        event_id: &str,
        status: InternalStatus,
    ) -> Result<UpdateResult> {
        require_non_empty("eventId", event_id)?;
        let u = Update::new()
            .set(mf::STATUS, status.as_str())
            .current_date(mf::LAST_UPDATED, TimeFormat::Date);
        let r = self
            .collection
            .update_one(&Filter::eq(mf::EVENT_ID, event_id), &u)
            .await?;
        if r.matched == 0 {
            return Err(Error::not_found(format!(
                "maintenance event {event_id:?} not found"
            )));
        }
        Ok(r)
    }

    /// The newest `eventReceivedTimestamp` for the provider; the cluster is only matched when
    /// non-empty (the MongoDB behaviour). `None` when there is no event.
    pub async fn last_processed_event_timestamp(
        &self,
        cluster_name: &str,
        csp: Csp,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut f = Filter::eq(mf::CSP, csp.as_str());
        if !cluster_name.is_empty() {
            f = f.and(Filter::eq(mf::CLUSTER_NAME, cluster_name));
        }
        let found = self
            .find_sorted(f, Sort::desc(mf::RECEIVED), Some(1))
            .await?;
        Ok(found
            .into_iter()
            .next()
            .map(|r| r.event.event_received_timestamp))
    }

    /// The node's newest event (by `lastUpdatedTimestamp`) of `maintenance_type` in one of
    /// `statuses`. Empty arguments are [`InvalidInput`](ErrorKind::InvalidInput).
    pub async fn find_latest_active_event_by_node_and_type(
        &self,
        node_name: &str,
        maintenance_type: MaintenanceType,
        statuses: &[InternalStatus],
    ) -> Result<Option<MaintenanceEventRecord>> {
        require_non_empty("node name", node_name)?;
        if statuses.is_empty() {
            return Err(Error::invalid_input("statuses must not be empty"));
        }
        let f = Filter::eq(mf::NODE_NAME, node_name)
            .and(Filter::eq(mf::MAINTENANCE_TYPE, maintenance_type.as_str()))
            .and(Filter::is_in(
                mf::STATUS,
                statuses.iter().map(|s| s.as_str()),
            ));
        Ok(self
            .find_sorted(f, Sort::desc(mf::LAST_UPDATED), Some(1))
            .await?
            .into_iter()
            .next())
    }

    /// The node's newest (by `lastUpdatedTimestamp`) event that is `DETECTED`,
    /// `QUARANTINE_TRIGGERED` or `MAINTENANCE_ONGOING`, of any type (the Go PostgreSQL provider
    /// never matched here, a bug).
    pub async fn find_latest_ongoing_event_by_node(
        &self,
        node_name: &str,
    ) -> Result<Option<MaintenanceEventRecord>> {
        require_non_empty("node name", node_name)?;
        let ongoing = [
            InternalStatus::Detected,
            InternalStatus::QuarantineTriggered,
            InternalStatus::MaintenanceOngoing,
        ];
        let f = Filter::eq(mf::NODE_NAME, node_name).and(Filter::is_in(
            mf::STATUS,
            ongoing.iter().map(|s| s.as_str()),
        ));
        Ok(self
            .find_sorted(f, Sort::desc(mf::LAST_UPDATED), Some(1))
            .await?
            .into_iter()
            .next())
    }

    /// The provider's events whose **provider** status (`cspStatus`) is one of `statuses` (the
    /// MongoDB behaviour; the Go PostgreSQL provider compared the internal status), newest
    /// received first.
    pub async fn find_active_events_by_statuses(
        &self,
        csp: Csp,
        statuses: &[ProviderStatus],
    ) -> Result<Vec<MaintenanceEventRecord>> {
        let f = Filter::eq(mf::CSP, csp.as_str()).and(Filter::is_in(
            mf::CSP_STATUS,
            statuses.iter().map(|s| s.as_str()),
        ));
        self.find_sorted(f, Sort::desc(mf::RECEIVED), None).await
    }
}
