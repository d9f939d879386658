//! Properties of the typed NVSentinel stores. Each expectation is stated here as its own
//! filter and sort (the spec), evaluated by the model over the provider's stored documents.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore_api::domain::maintenance_fields as mf;
use datastore_api::model::{
    fields, Csp, EvictionStatus, HealthEvent, HealthEventRecord, HealthEventStatus, InternalStatus,
    MaintenanceEvent, MaintenanceEventRecord, MaintenanceType, OperationStatus, ProcessingStrategy,
    ProtoTimestamp, ProviderStatus, QuarantineStatus,
};
use datastore_api::value::truncate_to_millis;
use datastore_api::{DocumentId, ErrorKind, Filter, FindOptions, Sort};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{check, chrono_minutes, collect_batches, fail_ctx, ok, reset, snapshot};
use crate::model::{same_outcome, Model};
use crate::Ctx;

const NODES: &[&str] = &["node-0", "node-1", "node-2"];
const QUARANTINE: &[QuarantineStatus] = &[
    QuarantineStatus::Quarantined,
    QuarantineStatus::AlreadyQuarantined,
    QuarantineStatus::UnQuarantined,
    QuarantineStatus::Cancelled,
];
const EVICTION: &[EvictionStatus] = &[
    EvictionStatus::NotStarted,
    EvictionStatus::InProgress,
    EvictionStatus::Succeeded,
    EvictionStatus::Failed,
    EvictionStatus::AlreadyDrained,
    EvictionStatus::Cancelled,
];

fn health_event() -> impl Strategy<Value = (HealthEvent, HealthEventStatus)> {
    (
        prop::sample::select(NODES),
        any::<bool>(),
        prop::sample::select(vec![0, 1, 2, 3]),
        prop::option::of(prop::sample::select(QUARANTINE)),
        prop::option::of(prop::sample::select(EVICTION)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(node, fatal, strategy, q, ev, fr)| {
            let event = HealthEvent {
                version: 1,
                agent: "gpu-health-monitor".into(),
                component_class: "GPU".into(),
                check_name: "GpuXidError".into(),
                is_fatal: fatal,
                is_healthy: !fatal,
                node_name: node.into(),
                processing_strategy: ProcessingStrategy::from(strategy),
                error_code: if fatal { vec!["119".into()] } else { vec![] },
                ..Default::default()
            };
            let status = HealthEventStatus {
                node_quarantined: q,
                user_pods_eviction_status: OperationStatus {
                    status: ev,
                    ..Default::default()
                },
                fault_remediated: fr,
                ..Default::default()
            };
            (event, status)
        })
}

fn decode(
    docs: Vec<datastore_api::Document>,
) -> std::result::Result<Vec<HealthEventRecord>, TestCaseError> {
    docs.into_iter()
        .map(|d| {
            HealthEventRecord::from_document(d).map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .collect()
}

fn within(t: Option<ProtoTimestamp>, lo: DateTime<Utc>, hi: DateTime<Utc>) -> bool {
    t.and_then(ProtoTimestamp::to_datetime)
        .is_some_and(|t| truncate_to_millis(lo) <= t && t <= hi)
}

/// Every `HealthEventStore` method against its spec.
pub(super) fn health_event_domain_methods(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let strategy = (
        prop::collection::vec(health_event(), 1..10),
        health_event(),
        1u32..4,
        any::<bool>(),
        0usize..16,
    );
    check(
        ctx,
        strategy,
        |(events, (_, new_status), batch, remediated, pick)| {
            ctx.rt.block_on(async {
                let store = ctx.store.health_events();
                let coll = store.collection();
                reset(coll).await?;
                let ins = ok(store.insert_many(&events).await, "insert_many")?;
                prop_assert_eq!(ins.len(), events.len());
                let model = Model {
                    docs: ok(snapshot(coll).await, "snapshot")?,
                    ..Model::default()
                };
                let newest = FindOptions::sorted(Sort::newest_first());
                let spec =
                    |f: Filter| -> std::result::Result<Vec<HealthEventRecord>, TestCaseError> {
                        decode(
                            model
                                .find(&f, &newest)
                                .map_err(|e| TestCaseError::fail(e.to_string()))?,
                        )
                    };
                for node in NODES {
                    let by_node = spec(Filter::eq(fields::NODE_NAME, *node))?;
                    prop_assert_eq!(
                        &ok(store.find_by_node(node).await, "find_by_node")?,
                        &by_node
                    );
                    prop_assert_eq!(
                        ok(store.find_latest_event_for_node(node).await, "latest")?,
                        by_node.first().cloned()
                    );
                    let drained = by_node.iter().any(|r| {
                        r.status.user_pods_eviction_status.status == Some(EvictionStatus::Succeeded)
                    });
                    prop_assert_eq!(
                        ok(store.check_if_node_already_drained(node).await, "drained")?,
                        drained
                    );
                }
                for s in ["Quarantined", "Succeeded", "Cancelled"] {
                    let want = spec(Filter::eq("healtheventstatus.nodequarantined", s).or(
                        Filter::eq("healtheventstatus.userpodsevictionstatus.status", s),
                    ))?;
                    prop_assert_eq!(&ok(store.find_by_status(s).await, "find_by_status")?, &want);
                }
                // Processable inserts (fault-quarantine's filter), through find and batched streams.
                let processable = Filter::eq(fields::PROCESSING_STRATEGY, 1)
                    .or(Filter::exists(fields::PROCESSING_STRATEGY, false));
                prop_assert_eq!(
                    &ok(store.find(&processable).await, "find")?,
                    &spec(processable.clone())?
                );
                let streamed = ok(
                    collect_batches(coll, processable.clone(), batch).await,
                    "stream",
                )?;
                let mut oldest_first = spec(processable.clone())?;
                oldest_first.reverse();
                prop_assert_eq!(decode(streamed)?, oldest_first.clone());
                let mut ids = Vec::new();
                let mut s = store.stream_ids_by_query(processable.clone(), batch);
                while let Some(b) = futures::StreamExt::next(&mut s).await {
                    ids.extend(ok(b, "stream ids")?);
                }
                drop(s);
                prop_assert_eq!(
                    ids,
                    oldest_first
                        .iter()
                        .map(|r| r.id.clone())
                        .collect::<Vec<_>>()
                );

                // Targeted updates change exactly the fields they promise.
                let target = ins[pick % ins.len()].id.clone();
                let before = ok(store.get(&target).await, "get")?
                    .ok_or_else(|| TestCaseError::fail("inserted event missing"))?;
                let t0 = ok(coll.server_time().await, "time")?;
                ok(
                    store
                        .update_node_quarantine_status(
                            &target,
                            QuarantineStatus::Quarantined,
                            "span-q",
                        )
                        .await,
                    "quarantine",
                )?;
                ok(
                    store.update_remediation_status(&target, remediated).await,
                    "remediation",
                )?;
                ok(
                    store
                        .update_span_id(&target, "node-drainer", "span-d")
                        .await,
                    "span",
                )?;
                let eviction = OperationStatus {
                    status: Some(EvictionStatus::Succeeded),
                    message: "drained".into(),
                    metadata: BTreeMap::from([("pods".to_owned(), "3".to_owned())]),
                };
                ok(
                    store.update_pod_eviction_status(&target, &eviction).await,
                    "eviction",
                )?;
                let t1 = ok(coll.server_time().await, "time")?;
                let after = ok(store.get(&target).await, "get")?
                    .ok_or_else(|| TestCaseError::fail("event vanished"))?;
                prop_assert_eq!(
                    after.status.node_quarantined,
                    Some(QuarantineStatus::Quarantined)
                );
                prop_assert!(
                    within(after.status.quarantine_finish_timestamp, t0, t1),
                    "quarantine finish time not server now"
                );
                prop_assert_eq!(after.status.fault_remediated, Some(remediated));
                prop_assert!(
                    within(after.status.last_remediation_timestamp, t0, t1),
                    "remediation time not server now"
                );
                prop_assert_eq!(
                    after
                        .status
                        .span_ids
                        .get("fault-quarantine")
                        .map(String::as_str),
                    Some("span-q")
                );
                prop_assert_eq!(
                    after
                        .status
                        .span_ids
                        .get("node-drainer")
                        .map(String::as_str),
                    Some("span-d")
                );
                prop_assert_eq!(&after.status.user_pods_eviction_status, &eviction);
                prop_assert_eq!(&after.event, &before.event);
                prop_assert_eq!(
                    after.status.drain_finish_timestamp,
                    before.status.drain_finish_timestamp
                );
                prop_assert_eq!(after.created_at, before.created_at);

                // Granular status update: set fields change, unset fields stay.
                let before = after;
                ok(
                    store
                        .update_status(&target, &new_status)
                        .await
                        .or_else(|e| {
                            if e.kind() == ErrorKind::InvalidInput {
                                Ok(Default::default())
                            } else {
                                Err(e)
                            }
                        }),
                    "update_status",
                )?;
                let after = ok(store.get(&target).await, "get")?
                    .ok_or_else(|| TestCaseError::fail("event vanished"))?;
                let mut want = before.status.clone();
                if new_status.node_quarantined.is_some() {
                    want.node_quarantined = new_status.node_quarantined;
                }
                if new_status.user_pods_eviction_status.status.is_some() {
                    want.user_pods_eviction_status = new_status.user_pods_eviction_status.clone();
                }
                if new_status.fault_remediated.is_some() {
                    want.fault_remediated = new_status.fault_remediated;
                }
                prop_assert_eq!(&after.status, &want);

                // Whole-status replacement for every event of a node.
                let node = before.event.node_name.clone();
                let others_before = spec(Filter::ne(fields::NODE_NAME, node.as_str()))?;
                let r = ok(
                    store.update_status_by_node(&node, &new_status).await,
                    "by node",
                )?;
                let of_node = ok(store.find_by_node(&node).await, "find_by_node")?;
                prop_assert_eq!(r.matched, of_node.len() as u64);
                prop_assert!(
                    of_node.iter().all(|e| e.status == new_status),
                    "by-node update missed an event"
                );
                let others_after = ok(
                    store
                        .find(&Filter::ne(fields::NODE_NAME, node.as_str()))
                        .await,
                    "others",
                )?;
                prop_assert_eq!(others_after, others_before);

                // Unknown ids are NotFound; bad names are InvalidInput; nothing changes.
                let ghost = DocumentId::generate();
                let snap = ok(snapshot(coll).await, "snapshot")?;
                let kinds = [
                    store
                        .update_node_quarantine_status(&ghost, QuarantineStatus::Cancelled, "s")
                        .await
                        .map(|_| ()),
                    store
                        .update_remediation_status(&ghost, true)
                        .await
                        .map(|_| ()),
                    store
                        .update_pod_eviction_status(&ghost, &eviction)
                        .await
                        .map(|_| ()),
                    store.update_span_id(&ghost, "svc", "s").await.map(|_| ()),
                    store
                        .update_status(
                            &ghost,
                            &HealthEventStatus {
                                fault_remediated: Some(true),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(|_| ()),
                ];
                for k in kinds {
                    prop_assert!(
                        matches!(&k, Err(e) if e.kind() == ErrorKind::NotFound),
                        "expected NotFound, got {:?}",
                        k
                    );
                }
                let bad = store.update_span_id(&target, "a.b", "s").await;
                prop_assert!(matches!(&bad, Err(e) if e.kind() == ErrorKind::InvalidInput));
                let bad = store.update_status_by_node("", &new_status).await;
                prop_assert!(matches!(&bad, Err(e) if e.kind() == ErrorKind::InvalidInput));
                prop_assert_eq!(ok(snapshot(coll).await, "snapshot")?, snap);

                // Idempotent insert: a retried batch reports duplicates and stores nothing twice.
                let keyed: Vec<(String, HealthEvent, HealthEventStatus)> = events
                    .iter()
                    .enumerate()
                    .map(|(i, (e, s))| (format!("batch-key-{}", i % 3), e.clone(), s.clone()))
                    .collect();
                let first = ok(store.insert_idempotent(&keyed).await, "idempotent")?;
                let second = ok(store.insert_idempotent(&keyed).await, "idempotent retry")?;
                let fresh = first.iter().filter(|o| !o.is_duplicate()).count();
                prop_assert_eq!(fresh, keyed.len().min(3));
                prop_assert!(
                    second.iter().all(|o| o.is_duplicate()),
                    "retry stored duplicates"
                );
                prop_assert_eq!(
                    ok(coll.count(&Filter::All).await, "count")?,
                    (events.len() + fresh) as u64
                );
                Ok(())
            })
        },
    )
}

fn maintenance_event() -> impl Strategy<Value = (u8, MaintenanceEvent, i64, Option<i64>)> {
    (
        0u8..4,
        prop::sample::select(vec![
            InternalStatus::Detected,
            InternalStatus::QuarantineTriggered,
            InternalStatus::MaintenanceOngoing,
            InternalStatus::MaintenanceComplete,
            InternalStatus::HealthyTriggered,
            InternalStatus::NodeReadinessTimeout,
        ]),
        prop::sample::select(vec![
            ProviderStatus::Pending,
            ProviderStatus::Active,
            ProviderStatus::Completed,
        ]),
        prop::sample::select(vec![
            MaintenanceType::Scheduled,
            MaintenanceType::Unscheduled,
        ]),
        prop::sample::select(NODES),
        prop::sample::select(vec!["", "cluster-a", "cluster-b"]),
        -12i64..24,
        prop::option::of(-24i64..0),
        0i64..50,
    )
        .prop_map(
            |(id, status, csp_status, mtype, node, cluster, start, end, received)| {
                let now = Utc::now();
                // Times sit on 10-minute steps plus 5 minutes, far from the query boundaries.
                let at = |steps: i64| now + chrono_minutes(steps * 10 + 5);
                let event = MaintenanceEvent {
                    event_id: format!("evt-{id}"),
                    csp: if id % 2 == 0 { Csp::Gcp } else { Csp::Aws },
                    cluster_name: cluster.into(),
                    resource_type: "instance".into(),
                    resource_id: format!("res-{id}"),
                    maintenance_type: mtype,
                    status,
                    csp_status,
                    scheduled_start_time: Some(truncate_to_millis(at(start))),
                    scheduled_end_time: None,
                    actual_start_time: None,
                    actual_end_time: end.map(|e| truncate_to_millis(at(e))),
                    event_received_timestamp: truncate_to_millis(now - chrono_minutes(received)),
                    last_updated_timestamp: truncate_to_millis(now - chrono_minutes(received)),
                    recommended_action: String::new(),
                    metadata: BTreeMap::new(),
                    node_name: node.into(),
                };
                (id, event, start, end)
            },
        )
}

fn records(
    docs: Vec<datastore_api::Document>,
) -> std::result::Result<Vec<MaintenanceEventRecord>, TestCaseError> {
    docs.into_iter()
        .map(|d| {
            MaintenanceEventRecord::from_document(d).map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .collect()
}

/// Every `MaintenanceEventStore` method against its spec.
pub(super) fn maintenance_event_domain_methods(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    check(
        ctx,
        prop::collection::vec(maintenance_event(), 1..10),
        |upserts| {
            ctx.rt.block_on(async {
            let store = ctx.store.maintenance_events();
            let coll = store.collection();
            reset(coll).await?;
            let mut expected: HashMap<String, MaintenanceEvent> = HashMap::new();
            for (_, event, _, _) in &upserts {
                let out = ok(store.upsert(event).await, "upsert")?;
                let mut want = event.clone();
                match expected.get(&event.event_id) {
                    None => prop_assert!(out.inserted, "first upsert of {} did not insert", event.event_id),
                    Some(prev) => {
                        prop_assert!(!out.inserted);
                        let sticky = matches!(
                            prev.status,
                            InternalStatus::QuarantineTriggered | InternalStatus::HealthyTriggered | InternalStatus::NodeReadinessTimeout
                        );
                        if sticky && event.status != InternalStatus::MaintenanceComplete {
                            want.status = prev.status;
                        }
                    }
                }
                expected.insert(event.event_id.clone(), want);
            }
            let stored = records(ok(snapshot(coll).await, "snapshot")?)?;
            prop_assert_eq!(stored.len(), expected.len(), "upserts created duplicates");
            for r in &stored {
                prop_assert_eq!(Some(&r.event), expected.get(&r.event.event_id));
            }
            let model = Model { docs: ok(snapshot(coll).await, "snapshot")?, ..Model::default() };
            let spec = |f: Filter, sort: Sort, limit: Option<u64>| -> std::result::Result<Vec<MaintenanceEventRecord>, TestCaseError> {
                let opts = FindOptions { sort, skip: 0, limit };
                records(model.find(&f, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?)
            };
            let now = ok(coll.server_time().await, "time")?;
            let got = ok(store.find_events_to_trigger_quarantine(Duration::from_secs(3600)).await, "trigger quarantine")?;
            let want = spec(
                Filter::eq(mf::STATUS, "DETECTED").and(Filter::lte(mf::SCHEDULED_START, now + chrono_minutes(60))),
                Sort::asc(mf::SCHEDULED_START),
                None,
            )?;
            prop_assert_eq!(got, want);
            let got = ok(store.find_events_to_trigger_healthy(Duration::from_secs(1800)).await, "trigger healthy")?;
            let want = spec(
                Filter::eq(mf::STATUS, "MAINTENANCE_COMPLETE")
                    .and(Filter::exists(mf::ACTUAL_END, true))
                    .and(Filter::ne(mf::ACTUAL_END, datastore_api::Scalar::Null))
                    .and(Filter::lte(mf::ACTUAL_END, now - chrono_minutes(30))),
                Sort::asc(mf::ACTUAL_END),
                None,
            )?;
            prop_assert_eq!(got, want);
            for cluster in ["", "cluster-a"] {
                for csp in [Csp::Gcp, Csp::Aws] {
                    let mut f = Filter::eq(mf::CSP, csp.as_str());
                    if !cluster.is_empty() {
                        f = f.and(Filter::eq(mf::CLUSTER_NAME, cluster));
                    }
                    let want = stored
                        .iter()
                        .filter(|r| r.event.csp == csp && (cluster.is_empty() || r.event.cluster_name == cluster))
                        .map(|r| r.event.event_received_timestamp)
                        .max();
                    prop_assert_eq!(ok(store.last_processed_event_timestamp(cluster, csp).await, "last processed")?, want);
                    let statuses = [ProviderStatus::Active, ProviderStatus::Pending];
                    let want = spec(
                        Filter::eq(mf::CSP, csp.as_str()).and(Filter::is_in(mf::CSP_STATUS, ["ACTIVE", "PENDING"])),
                        Sort::desc(mf::RECEIVED),
                        None,
                    )?;
                    prop_assert_eq!(ok(store.find_active_events_by_statuses(csp, &statuses).await, "active")?, want);
                }
            }
            for node in NODES {
                let want = spec(
                    Filter::eq(mf::NODE_NAME, *node).and(Filter::is_in(mf::STATUS, ["DETECTED", "QUARANTINE_TRIGGERED", "MAINTENANCE_ONGOING"])),
                    Sort::desc(mf::LAST_UPDATED),
                    Some(1),
                )?;
                prop_assert_eq!(ok(store.find_latest_ongoing_event_by_node(node).await, "ongoing")?, want.into_iter().next());
                let statuses = [InternalStatus::Detected, InternalStatus::MaintenanceComplete];
                let want = spec(
                    Filter::eq(mf::NODE_NAME, *node)
                        .and(Filter::eq(mf::MAINTENANCE_TYPE, "SCHEDULED"))
                        .and(Filter::is_in(mf::STATUS, ["DETECTED", "MAINTENANCE_COMPLETE"])),
                    Sort::desc(mf::LAST_UPDATED),
                    Some(1),
                )?;
                let got = ok(
                    store.find_latest_active_event_by_node_and_type(node, MaintenanceType::Scheduled, &statuses).await,
                    "latest active",
                )?;
                prop_assert_eq!(got, want.into_iter().next());
            }
            let empty = store.find_latest_active_event_by_node_and_type("node-0", MaintenanceType::Scheduled, &[]).await;
            prop_assert!(matches!(&empty, Err(e) if e.kind() == ErrorKind::InvalidInput));

            // Status updates by business key, with the server's time.
            let target = &stored[0];
            let t0 = ok(coll.server_time().await, "time")?;
            ok(store.update_event_status(&target.event.event_id, InternalStatus::Cancelled).await, "update status")?;
            let t1 = ok(coll.server_time().await, "time")?;
            let f = Filter::eq(mf::EVENT_ID, target.event.event_id.as_str());
            let after = records(ok(coll.find(&f, &FindOptions::default()).await, "find")?)?;
            prop_assert_eq!(after.len(), 1);
            prop_assert_eq!(after[0].event.status, InternalStatus::Cancelled);
            let lu = after[0].event.last_updated_timestamp;
            prop_assert!(truncate_to_millis(t0) <= lu && lu <= t1, "lastUpdatedTimestamp not server now");
            let missing = store.update_event_status("no-such-event", InternalStatus::Cancelled).await;
            prop_assert!(matches!(&missing, Err(e) if e.kind() == ErrorKind::NotFound));
            same_outcome(&coll.count(&datastore_api::Filter::All).await, &Ok(expected.len() as u64)).map_err(fail_ctx("count"))?;
            Ok(())
        })
        },
    )
}
