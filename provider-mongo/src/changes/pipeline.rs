//! What the server evaluates of a change-stream filter (the stages after `$changeStream`), and
//! what the provider decides itself: conditions on the document of an update, which the
//! provider computes ([`super::post_image`]) and the server never sees.

use datastore_api::{ChangeEvent, FieldPath, Filter, Lowered, OperationType, Result};
use mongodb::bson::{doc, Document};

use super::ENDING_OPERATIONS;
use crate::filter::{compile, Target};

/// A change-stream filter split between the server and the provider.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    /// The stages after `$changeStream`: none for [`Filter::All`] (events keep MongoDB's own
    /// shape), else the `updatedFields` rewrite and a `$match`.
    pub(crate) stages: Vec<Document>,
    /// The whole filter, for update events that passed the server's relaxed `$match`; `None`
    /// when the server's `$match` is exact for every event.
    update_check: Option<Lowered>,
}

/// Whether a path is in the document of the change (which, for updates, the server lacks).
fn in_document(path: &FieldPath) -> bool {
    path.as_str() == "fullDocument" || path.as_str().starts_with("fullDocument.")
}

impl EventFilter {
    /// Splits `filter`: the server evaluates it exactly on every event but updates, and on
    /// updates the relaxed filter without its `fullDocument` conditions.
    pub(crate) fn new(filter: &Filter) -> Result<EventFilter> {
        let lowered = filter.lower()?;
        if lowered == Lowered::True {
            return Ok(EventFilter {
                stages: Vec::new(),
                update_check: None,
            });
        }
        let ending = doc! { "operationType": { "$in": ENDING_OPERATIONS.to_vec() } };
        let exact = compile(&lowered, Target::ChangeEvents)?;
        let (matched, update_check) = if lowered.mentions(&in_document) {
            let relaxed = compile(&lowered.relaxed(&in_document), Target::ChangeEvents)?;
            let matched = doc! { "$or": [
                { "$and": [{ "operationType": "update" }, relaxed] },
                { "$and": [{ "operationType": { "$ne": "update" } }, exact] },
                ending,
            ] };
            (matched, Some(lowered))
        } else {
            (doc! { "$or": [exact, ending] }, None)
        };
        Ok(EventFilter {
            stages: vec![updated_fields_stage(), doc! { "$match": matched }],
            update_check,
        })
    }

    /// Whether the provider decides some events itself (so they must be read whole).
    pub(crate) fn needs_events(&self) -> bool {
        self.update_check.is_some()
    }

    /// Whether a decoded event the server let through belongs to the stream.
    pub(crate) fn accepts(&self, event: &ChangeEvent) -> bool {
        match &self.update_check {
            Some(check) if event.operation == OperationType::Update => {
                check.matches(&event.to_filter_document())
            }
            _ => true,
        }
    }
}

/// `$addFields` turning `updateDescription.updatedFields` into the array of the updated paths
/// followed by the truncated arrays' paths (the shape filters see), keeping the written values
/// as `updatedValues` (the post-image needs them), on events that have an `updateDescription`
/// (the others keep their shape: no `updateDescription` is created).
fn updated_fields_stage() -> Document {
    let paths = doc! { "$concatArrays": [
        { "$map": {
            "input": { "$objectToArray": { "$ifNull": ["$updateDescription.updatedFields", {}] } },
            "in": "$$this.k",
        } },
        { "$map": {
            "input": { "$ifNull": ["$updateDescription.truncatedArrays", []] },
            "in": "$$this.field",
        } },
    ] };
    doc! { "$addFields": { "updateDescription": { "$cond": {
        "if": { "$eq": [{ "$type": "$updateDescription" }, "object"] },
        "then": { "$mergeObjects": ["$updateDescription", {
            "updatedFields": paths,
            "updatedValues": "$updateDescription.updatedFields",
        }] },
        "else": "$$REMOVE",
    } } } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore_api::change::watchers;
    use serde_json::json;

    #[test]
    fn the_server_decides_all_but_the_document_of_updates() {
        let filter = EventFilter::new(&watchers::node_quarantine_status_changes()).unwrap();
        let status = "fullDocument.healtheventstatus.nodequarantined";
        let updated = doc! { "updateDescription.updatedFields": { "$eq": "healtheventstatus.nodequarantined" } };
        let expected = vec![
            updated_fields_stage(),
            doc! { "$match": { "$or": [
                // Updates: the filter without its fullDocument conditions.
                { "$and": [
                    { "operationType": "update" },
                    { "$and": [{ "operationType": { "$eq": "update" } }, updated.clone()] },
                ] },
                // Everything else: the whole filter.
                { "$and": [
                    { "operationType": { "$ne": "update" } },
                    { "$and": [
                        { "operationType": { "$eq": "update" } },
                        updated,
                        { "$or": [
                            { status: { "$eq": "Quarantined" } },
                            { status: { "$eq": "AlreadyQuarantined" } },
                            { status: { "$eq": "UnQuarantined" } },
                            { status: { "$eq": "Cancelled" } },
                        ] },
                    ] },
                ] },
                { "operationType": { "$in": ["invalidate", "drop", "rename", "dropDatabase"] } },
            ] } },
        ];
        assert_eq!(filter.stages, expected);
        assert!(filter.needs_events());

        // The provider decides updates on the document it computed.
        let event = |status: &str| ChangeEvent {
            token: datastore_api::ResumeToken::from_string("82"),
            operation: OperationType::Update,
            document_id: datastore_api::DocumentId::generate(),
            full_document: Some(
                serde_json::from_value(json!({"healtheventstatus": {"nodequarantined": status}}))
                    .unwrap(),
            ),
            updated_fields: vec!["healtheventstatus.nodequarantined".into()],
            removed_fields: Vec::new(),
            commit_time: chrono::Utc::now(),
        };
        assert!(filter.accepts(&event("Quarantined")));
        assert!(!filter.accepts(&event("Pending")));
        // Without fullDocument conditions the server's match is exact.
        let inserts = EventFilter::new(&watchers::all_inserts()).unwrap();
        assert!(!inserts.needs_events());
        assert!(inserts.accepts(&event("Pending")));
        // Every watcher compiles; an unfiltered stream needs no stage.
        for f in [
            watchers::processable_inserts(),
            watchers::quarantined_and_drained(),
            watchers::non_fatal_unhealthy_inserts(),
        ] {
            assert_eq!(EventFilter::new(&f).unwrap().stages.len(), 2);
        }
        assert!(EventFilter::new(&Filter::All).unwrap().stages.is_empty());
    }

    #[test]
    fn the_rewrite_stage_keeps_the_token_and_creates_nothing() {
        let stage = updated_fields_stage();
        let fields = stage.get_document("$addFields").unwrap();
        // Only updateDescription is written: never _id (the resume token).
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["updateDescription"]);
        let cond = fields
            .get_document("updateDescription")
            .unwrap()
            .get_document("$cond")
            .unwrap();
        assert_eq!(
            cond.get_document("if").unwrap(),
            &doc! { "$eq": [{ "$type": "$updateDescription" }, "object"] }
        );
        // Events without an updateDescription stay without one.
        assert_eq!(cond.get_str("else").unwrap(), "$$REMOVE");
        let then = format!("{}", cond.get_document("then").unwrap());
        for part in [
            "$objectToArray",
            "$$this.k",
            "truncatedArrays",
            "$$this.field",
        ] {
            assert!(then.contains(part), "{then}");
        }
        // The written values are kept for the post-image.
        assert!(
            then.contains("\"updatedValues\": \"$updateDescription.updatedFields\""),
            "{then}"
        );
    }
}
