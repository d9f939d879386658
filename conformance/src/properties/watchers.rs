//! NVSentinel's five watcher filters against example histories taken from their pipelines'
//! definitions: each watcher must receive exactly the changes its pipeline matches.

use datastore_api::change::watchers;
use datastore_api::model::fields;
use datastore_api::value::ID_FIELD;
use datastore_api::{ChangeStream, DocumentId, Filter, OperationType, StartFrom, Update};
use serde_json::json;

use super::changes::{options, read_exactly, unique};
use crate::Ctx;

/// The watchers, by name.
fn watcher_filters() -> [(&'static str, Filter); 5] {
    [
        ("processable_inserts", watchers::processable_inserts()),
        (
            "node_quarantine_status_changes",
            watchers::node_quarantine_status_changes(),
        ),
        (
            "quarantined_and_drained",
            watchers::quarantined_and_drained(),
        ),
        (
            "non_fatal_unhealthy_inserts",
            watchers::non_fatal_unhealthy_inserts(),
        ),
        ("all_inserts", watchers::all_inserts()),
    ]
}

/// The inserted events: label, document, and the watchers that must see the insert.
fn inserts() -> Vec<(&'static str, serde_json::Value, &'static [&'static str])> {
    let event = |agent: &str, healthy: bool, fatal: bool, strategy: Option<i64>| {
        let mut e =
            json!({"agent": agent, "ishealthy": healthy, "isfatal": fatal, "nodename": "n1"});
        if let Some(s) = strategy {
            e["processingstrategy"] = json!(s);
        }
        e
    };
    const ALL: &str = "all_inserts";
    const PROC: &str = "processable_inserts";
    const ANALYZER: &str = "non_fatal_unhealthy_inserts";
    const REMEDIATION: &str = "quarantined_and_drained";
    vec![
        // Fatal, strategy 1: the analyzer sees it too (its pipeline ignores isfatal).
        (
            "fatal",
            json!({"healthevent": event("gpu", false, true, Some(1)), "healtheventstatus": {}}),
            &[PROC, ANALYZER, ALL],
        ),
        // No strategy counts as 1 for both.
        (
            "no-strategy",
            json!({"healthevent": event("gpu", false, false, None), "healtheventstatus": {}}),
            &[PROC, ANALYZER, ALL],
        ),
        // The analyzer's own events are not analysed again.
        (
            "analyzer-own",
            json!({"healthevent": event("health-events-analyzer", false, false, Some(1)), "healtheventstatus": {}}),
            &[PROC, ALL],
        ),
        (
            "strategy-2",
            json!({"healthevent": event("gpu", false, false, Some(2))}),
            &[ALL],
        ),
        (
            "healthy-3",
            json!({"healthevent": event("gpu", true, false, Some(3))}),
            &[ALL],
        ),
        // STORE_AND_ANALYSE: analysed, not remediated.
        (
            "unhealthy-3",
            json!({"healthevent": event("gpu", false, false, Some(3))}),
            &[ANALYZER, ALL],
        ),
        // The fail-safe path: inserted already drained and quarantined, or cancelled.
        (
            "inserted-drained",
            json!({"healthevent": event("gpu", true, false, Some(2)), "healtheventstatus": {"nodequarantined": "Quarantined", "userpodsevictionstatus": {"status": "Succeeded"}}}),
            &[REMEDIATION, ALL],
        ),
        (
            "inserted-cancelled",
            json!({"healthevent": event("gpu", true, false, Some(2)), "healtheventstatus": {"nodequarantined": "Cancelled"}}),
            &[REMEDIATION, ALL],
        ),
        // Released but the eviction not Succeeded: nothing to remediate.
        (
            "inserted-released-failed",
            json!({"healthevent": event("gpu", true, false, Some(2)), "healtheventstatus": {"nodequarantined": "UnQuarantined", "userpodsevictionstatus": {"status": "Failed"}}}),
            &[ALL],
        ),
    ]
}

/// The updates: the label of the event, the update, and the watchers that must see it.
fn updates() -> Vec<(&'static str, Update, &'static [&'static str])> {
    const DRAINER: &str = "node_quarantine_status_changes";
    const REMEDIATION: &str = "quarantined_and_drained";
    let quarantine = |s: &str| Update::new().set(fields::NODE_QUARANTINED, s);
    let eviction =
        |s: &str| Update::new().set(fields::EVICTION, json!({"status": s, "message": ""}));
    vec![
        ("fatal", quarantine("Quarantined"), &[DRAINER]),
        ("fatal", eviction("InProgress"), &[]),
        // node-drainer writes the whole eviction status: drained and quarantined.
        ("fatal", eviction("Succeeded"), &[REMEDIATION]),
        // The nested status alone is not node-drainer's write.
        (
            "fatal",
            Update::new().set(fields::EVICTION_STATUS, "AlreadyDrained"),
            &[],
        ),
        // A quarantine write that leaves the event drained is not the remediation's trigger.
        ("fatal", quarantine("AlreadyQuarantined"), &[DRAINER]),
        ("fatal", quarantine("UnQuarantined"), &[DRAINER]),
        // Released, then drained: remediate.
        ("fatal", eviction("Succeeded"), &[REMEDIATION]),
        // Cancelled is written: both see it.
        (
            "no-strategy",
            quarantine("Cancelled"),
            &[DRAINER, REMEDIATION],
        ),
        // An eviction write on a cancelled event is not a cancel.
        ("no-strategy", eviction("Failed"), &[]),
        // Another quarantine status is not a drainer trigger.
        ("analyzer-own", quarantine("Pending"), &[]),
        ("analyzer-own", quarantine("Quarantined"), &[DRAINER]),
    ]
}

/// Each of the five watchers, opened before an example history of inserts and updates (the
/// typed stores' writes), receives exactly the changes NVSentinel's pipeline matches, in order.
pub(super) fn watcher_filters_match_nvsentinel(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let store = ctx.store.clone();
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        // Each property runs on a fresh, empty store.
        let mut streams: Vec<(&str, ChangeStream)> = Vec::new();
        for (name, filter) in watcher_filters() {
            let stream = coll
                .watch(options(&unique(name), filter, StartFrom::Now))
                .await
                .map_err(|e| format!("watch {name}: {e}"))?;
            streams.push((name, stream));
        }
        let mut expected: Vec<(OperationType, &str, &[&str])> = Vec::new();
        let mut ids: Vec<(&str, DocumentId)> = Vec::new();
        for (label, doc, seen_by) in inserts() {
            let doc = serde_json::from_value(doc).map_err(|e| e.to_string())?;
            let id = coll.insert_one(doc).await.map_err(|e| e.to_string())?.id;
            ids.push((label, id));
            expected.push((OperationType::Insert, label, seen_by));
        }
        for (label, update, seen_by) in updates() {
            let id = ids
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, id)| id.clone());
            let id = id.ok_or_else(|| format!("no event {label}"))?;
            let r = coll
                .update_one(&Filter::eq(ID_FIELD, id.as_str()), &update)
                .await
                .map_err(|e| e.to_string())?;
            if r.modified != 1 {
                return Err(format!("update of {label} changed nothing: {update:?}"));
            }
            expected.push((OperationType::Update, label, seen_by));
        }
        let label_of = |id: &DocumentId| ids.iter().find(|(_, i)| i == id).map_or("?", |(l, _)| *l);
        for (name, stream) in &mut streams {
            let want: Vec<(OperationType, &str)> = expected
                .iter()
                .filter(|(_, _, seen)| seen.contains(name))
                .map(|(op, label, _)| (*op, *label))
                .collect();
            let got = read_exactly(stream, want.len())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let got: Vec<(OperationType, &str)> = got
                .iter()
                .map(|e| (e.operation, label_of(&e.document_id)))
                .collect();
            if got != want {
                return Err(format!("{name}: delivered {got:?}\n    expected {want:?}"));
            }
        }
        Ok(())
    })
}
