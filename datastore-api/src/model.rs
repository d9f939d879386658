//! Typed NVSentinel records and their canonical stored shape.
//!
//! Health events are stored the way NVSentinel's MongoDB collection holds them today:
//! `{_id, createdAt, healthevent: {…lowercase proto field names…}, healtheventstatus: {…}}`,
//! with false, zero and empty values stored rather than omitted. Protobuf timestamps are
//! `{"seconds", "nanos"}` objects; enums are integers; `faultremediated` is `null` or
//! `{"value": bool}`.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::value::{serde_date, Document, DocumentId, Value, CREATED_AT_FIELD, ID_FIELD};

/// A protobuf `google.protobuf.Timestamp`, stored as `{"seconds": s, "nanos": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct ProtoTimestamp {
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[serde(default)]
    pub nanos: i32,
}

impl ProtoTimestamp {
    /// The timestamp as a UTC time (`None` when out of range).
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_opt(self.seconds, self.nanos.max(0) as u32)
            .single()
    }
}

impl From<DateTime<Utc>> for ProtoTimestamp {
    fn from(t: DateTime<Utc>) -> Self {
        ProtoTimestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }
}

macro_rules! int_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know (kept as is).
            Unrecognized(i32),
        }
        impl From<i32> for $name {
            fn from(v: i32) -> Self {
                match v { $($value => $name::$variant,)* other => $name::Unrecognized(other) }
            }
        }
        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                match v { $($name::$variant => $value,)* $name::Unrecognized(other) => other }
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_i32((*self).into())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok(i32::deserialize(d)?.into())
            }
        }
    };
}

int_enum! {
    /// What the health monitor recommends (proto `RecommendedAction`).
    RecommendedAction {
        /// No action.
        None = 0,
        /// Reset the component.
        ComponentReset = 2,
        /// Contact support.
        ContactSupport = 5,
        /// Run field diagnostics.
        RunFieldDiag = 6,
        /// Restart the VM.
        RestartVm = 15,
        /// Restart bare metal.
        RestartBm = 24,
        /// Replace the VM.
        ReplaceVm = 25,
        /// Run DCGM EUD.
        RunDcgmEud = 26,
        /// Custom action (see `customrecommendedaction`).
        Custom = 27,
        /// Unknown.
        Unknown = 99,
    }
}

int_enum! {
    /// How downstream components treat an event (proto `ProcessingStrategy`).
    ProcessingStrategy {
        /// Not set (platform-connectors normalises it to `ExecuteRemediation`).
        Unspecified = 0,
        /// Quarantine, drain and remediate.
        ExecuteRemediation = 1,
        /// Store only.
        StoreOnly = 2,
        /// Store and analyse.
        StoreAndAnalyse = 3,
    }
}

#[allow(clippy::derivable_impls)] // the variants come from a macro
impl Default for RecommendedAction {
    fn default() -> Self {
        RecommendedAction::None
    }
}

#[allow(clippy::derivable_impls)]
impl Default for ProcessingStrategy {
    fn default() -> Self {
        ProcessingStrategy::Unspecified
    }
}

/// An impacted entity (`{"entitytype", "entityvalue"}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Entity {
    /// e.g. `GPU`, `GPU_UUID`, `PCI`.
    #[serde(rename = "entitytype", default)]
    pub entity_type: String,
    /// e.g. `0`, a UUID, a PCI address.
    #[serde(rename = "entityvalue", default)]
    pub entity_value: String,
}

/// Force/skip overrides for quarantine or drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BehaviourOverrides {
    /// Force the action.
    #[serde(default)]
    pub force: bool,
    /// Skip the action.
    #[serde(default)]
    pub skip: bool,
}

/// A health event as monitors report it (all 18 fields of the proto message).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthEvent {
    /// Schema version.
    #[serde(default)]
    pub version: u32,
    /// Reporting agent, e.g. `gpu-health-monitor`.
    #[serde(default)]
    pub agent: String,
    /// Component class, e.g. `GPU`.
    #[serde(rename = "componentclass", default)]
    pub component_class: String,
    /// Check name, e.g. `GpuXidError`.
    #[serde(rename = "checkname", default)]
    pub check_name: String,
    /// Whether the fault is fatal.
    #[serde(rename = "isfatal", default)]
    pub is_fatal: bool,
    /// Whether this reports a healthy state.
    #[serde(rename = "ishealthy", default)]
    pub is_healthy: bool,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Recommended action.
    #[serde(rename = "recommendedaction", default)]
    pub recommended_action: RecommendedAction,
    /// Error codes, e.g. `["119"]`.
    #[serde(rename = "errorcode", default)]
    pub error_code: Vec<String>,
    /// Impacted entities.
    #[serde(rename = "entitiesimpacted", default)]
    pub entities_impacted: Vec<Entity>,
    /// Free-form metadata (trace ids, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the monitor generated the event.
    #[serde(rename = "generatedtimestamp", default)]
    pub generated_timestamp: Option<ProtoTimestamp>,
    /// The node.
    #[serde(rename = "nodename", default)]
    pub node_name: String,
    /// Quarantine overrides.
    #[serde(rename = "quarantineoverrides", default)]
    pub quarantine_overrides: Option<BehaviourOverrides>,
    /// Drain overrides.
    #[serde(rename = "drainoverrides", default)]
    pub drain_overrides: Option<BehaviourOverrides>,
    /// Processing strategy.
    #[serde(rename = "processingstrategy", default)]
    pub processing_strategy: ProcessingStrategy,
    /// Record id, filled in by consumers.
    #[serde(default)]
    pub id: String,
    /// Action name when `recommended_action` is `Custom`.
    #[serde(rename = "customrecommendedaction", default)]
    pub custom_recommended_action: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }
        impl $name {
            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(Error::invalid_input(format!(concat!("unknown ", stringify!($name), " {:?}"), other))),
                }
            }
        }
    };
}

string_enum! {
    /// `healtheventstatus.nodequarantined`.
    QuarantineStatus {
        /// The node was quarantined for this event.
        Quarantined = "Quarantined",
        /// The node was already quarantined.
        AlreadyQuarantined = "AlreadyQuarantined",
        /// The node was released.
        UnQuarantined = "UnQuarantined",
        /// Cancelled (manual uncordon).
        Cancelled = "Cancelled",
    }
}

string_enum! {
    /// `healtheventstatus.userpodsevictionstatus.status`.
    EvictionStatus {
        /// Not started.
        NotStarted = "NotStarted",
        /// Draining.
        InProgress = "InProgress",
        /// Drained.
        Succeeded = "Succeeded",
        /// Drain failed.
        Failed = "Failed",
        /// Node was already drained.
        AlreadyDrained = "AlreadyDrained",
        /// Cancelled (tombstone for stale records).
        Cancelled = "Cancelled",
    }
}

/// Serde for `Option<enum>` stored as a string where `""` (or null/missing) means "not set".
mod empty_is_none {
    use super::*;

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<T>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<T>, D::Error> {
        let v = Option::<Value>::deserialize(d)?;
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for the tri-state `faultremediated`: `null` or `{"value": bool}` (a bare bool is read too).
mod bool_value {
    use super::*;

    pub fn serialize<S: Serializer>(
        v: &Option<bool>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(b) => serde_json::json!({ "value": b }).serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<bool>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::Object(o)) => match o.get("value") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(serde::de::Error::custom(format!(
                    "faultremediated.value: expected a bool, got {other}"
                ))),
            },
            Some(other) => Err(serde::de::Error::custom(format!(
                "faultremediated: expected null or {{value}}, got {other}"
            ))),
        }
    }
}

/// Pod-eviction status (`userpodsevictionstatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OperationStatus {
    /// The status; `None` is stored as `""` (not processed yet).
    #[serde(with = "empty_is_none", default)]
    pub status: Option<EvictionStatus>,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Extra metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The processing status that controllers write as they work on an event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthEventStatus {
    /// Quarantine outcome; `None` (stored `""`) until fault-quarantine has processed the event.
    #[serde(rename = "nodequarantined", with = "empty_is_none", default)]
    pub node_quarantined: Option<QuarantineStatus>,
    /// When quarantine finished.
    #[serde(rename = "quarantinefinishtimestamp", default)]
    pub quarantine_finish_timestamp: Option<ProtoTimestamp>,
    /// Pod eviction (drain) status.
    #[serde(rename = "userpodsevictionstatus", default)]
    pub user_pods_eviction_status: OperationStatus,
    /// When the drain finished.
    #[serde(rename = "drainfinishtimestamp", default)]
    pub drain_finish_timestamp: Option<ProtoTimestamp>,
    /// Tri-state remediation outcome: `None` is pending.
    #[serde(rename = "faultremediated", with = "bool_value", default)]
    pub fault_remediated: Option<bool>,
    /// When remediation last ran.
    #[serde(rename = "lastremediationtimestamp", default)]
    pub last_remediation_timestamp: Option<ProtoTimestamp>,
    /// Trace span ids per service.
    #[serde(rename = "spanids", default)]
    pub span_ids: BTreeMap<String, String>,
}

/// Stored field names of health-event documents, for filters.
pub mod fields {
    /// `healthevent.nodename`
    pub const NODE_NAME: &str = "healthevent.nodename";
    /// `healthevent.agent`
    pub const AGENT: &str = "healthevent.agent";
    /// `healthevent.checkname`
    pub const CHECK_NAME: &str = "healthevent.checkname";
    /// `healthevent.isfatal`
    pub const IS_FATAL: &str = "healthevent.isfatal";
    /// `healthevent.ishealthy`
    pub const IS_HEALTHY: &str = "healthevent.ishealthy";
    /// `healthevent.processingstrategy`
    pub const PROCESSING_STRATEGY: &str = "healthevent.processingstrategy";
    /// `healtheventstatus`
    pub const STATUS: &str = "healtheventstatus";
    /// `healtheventstatus.nodequarantined`
    pub const NODE_QUARANTINED: &str = "healtheventstatus.nodequarantined";
    /// `healtheventstatus.quarantinefinishtimestamp`
    pub const QUARANTINE_FINISH: &str = "healtheventstatus.quarantinefinishtimestamp";
    /// `healtheventstatus.userpodsevictionstatus`
    pub const EVICTION: &str = "healtheventstatus.userpodsevictionstatus";
    /// `healtheventstatus.userpodsevictionstatus.status`
    pub const EVICTION_STATUS: &str = "healtheventstatus.userpodsevictionstatus.status";
    /// `healtheventstatus.drainfinishtimestamp`
    pub const DRAIN_FINISH: &str = "healtheventstatus.drainfinishtimestamp";
    /// `healtheventstatus.faultremediated`
    pub const FAULT_REMEDIATED: &str = "healtheventstatus.faultremediated";
    /// `healtheventstatus.lastremediationtimestamp`
    pub const LAST_REMEDIATION: &str = "healtheventstatus.lastremediationtimestamp";
    /// `healtheventstatus.spanids`
    pub const SPAN_IDS: &str = "healtheventstatus.spanids";
}

/// A stored health event: id, server-assigned insert time, event and status.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthEventRecord {
    /// Document id.
    pub id: DocumentId,
    /// Server-assigned insert time.
    pub created_at: DateTime<Utc>,
    /// The event.
    pub event: HealthEvent,
    /// Its processing status.
    pub status: HealthEventStatus,
}

#[derive(Serialize, Deserialize)]
struct HealthEventBody {
    healthevent: HealthEvent,
    #[serde(default)]
    healtheventstatus: HealthEventStatus,
}

/// The canonical body (without `_id`/`createdAt`) of a health event to insert.
pub fn health_event_document(event: &HealthEvent, status: &HealthEventStatus) -> Document {
    let body = HealthEventBody {
        healthevent: event.clone(),
        healtheventstatus: status.clone(),
    };
    match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        _ => Document::new(),
    }
}

fn split_reserved(mut doc: Document) -> Result<(DocumentId, DateTime<Utc>, Document)> {
    let id = match doc.remove(ID_FIELD) {
        Some(Value::String(s)) => DocumentId::parse(&s)?,
        _ => return Err(Error::permanent("stored document has no string _id")),
    };
    let created_at = doc
        .remove(CREATED_AT_FIELD)
        .as_ref()
        .and_then(serde_date::parse)
        .ok_or_else(|| Error::permanent(format!("stored document {id} has no createdAt date")))?;
    Ok((id, created_at, doc))
}

impl HealthEventRecord {
    /// Decodes a stored document.
    pub fn from_document(doc: Document) -> Result<Self> {
        let (id, created_at, body) = split_reserved(doc)?;
        let body: HealthEventBody = serde_json::from_value(Value::Object(body)).map_err(|e| {
            Error::permanent(format!("health event {id} does not decode")).with_source(e)
        })?;
        Ok(HealthEventRecord {
            id,
            created_at,
            event: body.healthevent,
            status: body.healtheventstatus,
        })
    }
}

string_enum! {
    /// Cloud provider.
    Csp {
        /// Google Cloud.
        Gcp = "gcp",
        /// AWS.
        Aws = "aws",
    }
}

string_enum! {
    /// Maintenance type.
    MaintenanceType {
        /// Planned.
        Scheduled = "SCHEDULED",
        /// Unplanned.
        Unscheduled = "UNSCHEDULED",
    }
}

string_enum! {
    /// NVSentinel's internal maintenance status (`status`).
    InternalStatus {
        /// Seen, nothing done yet.
        Detected = "DETECTED",
        /// Quarantine was triggered.
        QuarantineTriggered = "QUARANTINE_TRIGGERED",
        /// Maintenance is running.
        MaintenanceOngoing = "MAINTENANCE_ONGOING",
        /// Maintenance finished.
        MaintenanceComplete = "MAINTENANCE_COMPLETE",
        /// The node was declared healthy again.
        HealthyTriggered = "HEALTHY_TRIGGERED",
        /// The node did not become ready in time.
        NodeReadinessTimeout = "NODE_READINESS_TIMEOUT",
        /// Cancelled.
        Cancelled = "CANCELLED",
        /// Error.
        Error = "ERROR",
    }
}

string_enum! {
    /// The cloud provider's own maintenance status (`cspStatus`).
    ProviderStatus {
        /// Unknown.
        Unknown = "UNKNOWN",
        /// Pending.
        Pending = "PENDING",
        /// Ongoing.
        Ongoing = "ONGOING",
        /// Active.
        Active = "ACTIVE",
        /// Completed.
        Completed = "COMPLETED",
        /// Cancelled.
        Cancelled = "CANCELLED",
    }
}

/// A cloud-provider maintenance event (stored with camelCase keys; times are dates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceEvent {
    /// The provider's event id: the unique business key.
    pub event_id: String,
    /// Cloud provider.
    pub csp: Csp,
    /// Cluster.
    #[serde(default)]
    pub cluster_name: String,
    /// Resource type.
    #[serde(default)]
    pub resource_type: String,
    /// Resource id.
    #[serde(default)]
    pub resource_id: String,
    /// Scheduled or not.
    pub maintenance_type: MaintenanceType,
    /// Internal status.
    pub status: InternalStatus,
    /// Provider status.
    pub csp_status: ProviderStatus,
    /// Scheduled start.
    #[serde(with = "serde_date::option", default)]
    pub scheduled_start_time: Option<DateTime<Utc>>,
    /// Scheduled end.
    #[serde(with = "serde_date::option", default)]
    pub scheduled_end_time: Option<DateTime<Utc>>,
    /// Actual start.
    #[serde(with = "serde_date::option", default)]
    pub actual_start_time: Option<DateTime<Utc>>,
    /// Actual end.
    #[serde(with = "serde_date::option", default)]
    pub actual_end_time: Option<DateTime<Utc>>,
    /// When the monitor received the event.
    #[serde(with = "serde_date")]
    pub event_received_timestamp: DateTime<Utc>,
    /// Last update time.
    #[serde(with = "serde_date")]
    pub last_updated_timestamp: DateTime<Utc>,
    /// Recommended action.
    #[serde(default)]
    pub recommended_action: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Node name.
    #[serde(default)]
    pub node_name: String,
}

impl MaintenanceEvent {
    /// The canonical body to store.
    pub fn to_document(&self) -> Result<Document> {
        match serde_json::to_value(self)
            .map_err(|e| Error::invalid_input("maintenance event does not encode").with_source(e))?
        {
            Value::Object(m) => Ok(m),
            _ => Err(Error::invalid_input(
                "maintenance event does not encode to an object",
            )),
        }
    }
}

/// A stored maintenance event.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceEventRecord {
    /// Document id.
    pub id: DocumentId,
    /// Server-assigned insert time.
    pub created_at: DateTime<Utc>,
    /// The event.
    pub event: MaintenanceEvent,
}

impl MaintenanceEventRecord {
    /// Decodes a stored document.
    pub fn from_document(doc: Document) -> Result<Self> {
        let (id, created_at, body) = split_reserved(doc)?;
        let event = serde_json::from_value(Value::Object(body)).map_err(|e| {
            Error::permanent(format!("maintenance event {id} does not decode")).with_source(e)
        })?;
        Ok(MaintenanceEventRecord {
            id,
            created_at,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_event_has_the_mongodb_shape() {
        let ev = HealthEvent {
            node_name: "n1".into(),
            is_fatal: true,
            recommended_action: RecommendedAction::ComponentReset,
            error_code: vec!["119".into()],
            ..Default::default()
        };
        let doc = health_event_document(&ev, &HealthEventStatus::default());
        let v = Value::Object(doc);
        assert_eq!(v["healthevent"]["nodename"], json!("n1"));
        assert_eq!(v["healthevent"]["isfatal"], json!(true));
        assert_eq!(v["healthevent"]["ishealthy"], json!(false));
        assert_eq!(v["healthevent"]["recommendedaction"], json!(2));
        assert_eq!(v["healthevent"]["processingstrategy"], json!(0));
        assert_eq!(v["healtheventstatus"]["nodequarantined"], json!(""));
        assert_eq!(v["healtheventstatus"]["faultremediated"], Value::Null);
        assert_eq!(
            v["healtheventstatus"]["userpodsevictionstatus"],
            json!({"status": "", "message": "", "metadata": {}})
        );
    }

    #[test]
    fn status_decodes_legacy_forms() {
        let s: HealthEventStatus = serde_json::from_value(json!({
            "nodequarantined": "Quarantined",
            "faultremediated": true,
            "userpodsevictionstatus": {"status": "Succeeded"}
        }))
        .unwrap();
        assert_eq!(s.node_quarantined, Some(QuarantineStatus::Quarantined));
        assert_eq!(s.fault_remediated, Some(true));
        assert_eq!(
            s.user_pods_eviction_status.status,
            Some(EvictionStatus::Succeeded)
        );
        let s: HealthEventStatus =
            serde_json::from_value(json!({"faultremediated": {"value": false}})).unwrap();
        assert_eq!(s.fault_remediated, Some(false));
        assert_eq!(
            RecommendedAction::from(1234),
            RecommendedAction::Unrecognized(1234)
        );
    }
}
