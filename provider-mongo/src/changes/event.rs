//! Decoding MongoDB change events into the API's [`ChangeEvent`].

use chrono::{DateTime, TimeZone, Utc};
use datastore_api::change::{ChangeEvent, OperationType, ResumeToken};
use datastore_api::{DocumentId, Error, ErrorKind, Result};
use mongodb::bson::{Bson, Document};

use super::{post_image, token, ENDING_OPERATIONS};
use crate::convert::{chrono_date, from_bson_document};

/// One decoded change-stream event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoded {
    /// A change of a document.
    Change(ChangeEvent),
    /// `invalidate`, `drop`, `rename` or `dropDatabase`: the stream cannot continue.
    Ended {
        /// The event's operation type.
        operation: String,
    },
    /// Any other event type (DDL events of newer servers): skipped, but its token is a
    /// position.
    Other {
        /// The event's position.
        token: ResumeToken,
        /// The event's operation type.
        operation: String,
    },
}

/// Maps a raw change event (MongoDB's shape, or after [`pipeline`]'s rewrite) to the API's.
pub(crate) fn decode_event(mut raw: Document) -> Result<Decoded> {
    let token = event_token(&raw)?;
    let op = raw
        .get_str("operationType")
        .map_err(|_| malformed("it has no operationType"))?
        .to_owned();
    let operation = match op.as_str() {
        "insert" => OperationType::Insert,
        "update" => OperationType::Update,
        "replace" => OperationType::Replace,
        "delete" => OperationType::Delete,
        ended if ENDING_OPERATIONS.contains(&ended) => return Ok(Decoded::Ended { operation: op }),
        _ => {
            return Ok(Decoded::Other {
                token,
                operation: op,
            })
        }
    };
    let commit_time = commit_time(&raw)?;
    let document_id = match raw
        .get_document("documentKey")
        .ok()
        .and_then(|k| k.get("_id"))
    {
        Some(Bson::ObjectId(oid)) => DocumentId::parse(&oid.to_hex())?,
        Some(Bson::String(s)) => DocumentId::parse(s)
            .map_err(|_| malformed(format!("its document key {s:?} is not a document id")))?,
        Some(other) => {
            return Err(malformed(format!(
                "its document key is a BSON {:?}, not an ObjectId",
                other.element_type()
            )))
        }
        None => return Err(malformed("it has no documentKey._id")),
    };
    let full_document = match operation {
        OperationType::Delete => None,
        OperationType::Update => Some(from_bson_document(updated_document(&mut raw)?)?),
        _ => match raw.remove("fullDocument") {
            None | Some(Bson::Null) => None,
            Some(Bson::Document(d)) => Some(from_bson_document(d)?),
            Some(other) => {
                return Err(malformed(format!(
                    "its fullDocument is a BSON {:?}",
                    other.element_type()
                )))
            }
        },
    };
    let (updated_fields, removed_fields) = if operation == OperationType::Update {
        update_description(raw.get("updateDescription"))?
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Decoded::Change(ChangeEvent {
        token,
        operation,
        document_id,
        full_document,
        updated_fields,
        removed_fields,
        commit_time,
    }))
}

/// The document right after an update: the event's pre-image with its `updateDescription`
/// applied (the written values are `updatedValues` after [`EventFilter`]'s rewrite, else
/// MongoDB's `updatedFields` object).
pub(super) fn updated_document(raw: &mut Document) -> Result<Document> {
    let pre =
        match raw.remove("fullDocumentBeforeChange") {
            Some(Bson::Document(d)) => d,
            _ => return Err(Error::new(
                ErrorKind::HistoryLost,
                "a MongoDB update event came without its pre-image (pre-images expired, or were \
                 not enabled when the change was written)",
            )),
        };
    let mut description = match raw.get_document("updateDescription") {
        Ok(d) => d.clone(),
        Err(_) => return Err(malformed("an update without updateDescription")),
    };
    if let Some(values) = description.remove("updatedValues") {
        description.insert("updatedFields", values);
    }
    post_image::apply(pre, &description)
}

pub(super) fn malformed(why: impl std::fmt::Display) -> Error {
    Error::permanent(format!("malformed MongoDB change event: {why}"))
}

/// The event's resume token, made from `_id._data`.
pub(super) fn event_token(raw: &Document) -> Result<ResumeToken> {
    raw.get_document("_id")
        .and_then(|id| id.get_str("_data"))
        .map(token::api_token)
        .map_err(|_| malformed("it has no resume token (_id._data)"))
}

/// When the change was committed: `wallTime` (MongoDB 6.0+, milliseconds) when present, else
/// the cluster time (seconds).
pub(super) fn commit_time(raw: &Document) -> Result<DateTime<Utc>> {
    if let Ok(t) = raw.get_datetime("wallTime") {
        return chrono_date(*t);
    }
    match raw.get_timestamp("clusterTime") {
        Ok(ts) => Utc
            .timestamp_opt(i64::from(ts.time), 0)
            .single()
            .ok_or_else(|| malformed("its clusterTime is out of range")),
        Err(_) => Err(malformed("it has neither wallTime nor clusterTime")),
    }
}

/// `(updated, removed)` paths of an `updateDescription`. `updatedFields` may be MongoDB's
/// object keyed by path or the array of paths of [`pipeline`]'s rewrite; the fields of
/// `truncatedArrays` count as updated.
pub(super) fn update_description(v: Option<&Bson>) -> Result<(Vec<String>, Vec<String>)> {
    let d = match v {
        None | Some(Bson::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Bson::Document(d)) => d,
        Some(_) => return Err(malformed("its updateDescription is not a document")),
    };
    let strings = |name: &str, items: &[Bson]| -> Result<Vec<String>> {
        items
            .iter()
            .map(|b| {
                b.as_str().map(str::to_owned).ok_or_else(|| {
                    malformed(format!("updateDescription.{name} holds a non-string"))
                })
            })
            .collect()
    };
    let mut updated = match d.get("updatedFields") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Document(o)) => o.keys().cloned().collect(),
        Some(Bson::Array(a)) => strings("updatedFields", a)?,
        Some(_) => {
            return Err(malformed(
                "updateDescription.updatedFields has an unknown shape",
            ))
        }
    };
    let removed = match d.get("removedFields") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Array(a)) => strings("removedFields", a)?,
        Some(_) => return Err(malformed("updateDescription.removedFields is not an array")),
    };
    if let Ok(truncated) = d.get_array("truncatedArrays") {
        for t in truncated {
            let field = t
                .as_document()
                .and_then(|t| t.get_str("field").ok())
                .ok_or_else(|| {
                    malformed("updateDescription.truncatedArrays has an unknown shape")
                })?;
            if !updated.iter().any(|u| u == field) {
                updated.push(field.to_owned());
            }
        }
    }
    Ok((updated, removed))
}

/// Events shaped like MongoDB's, for the tests of this folder.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use mongodb::bson::{self, doc, oid::ObjectId, Timestamp};
    use serde_json::json;

    // Tokens shaped like the manual's examples (KeyString hex: 0x82, cluster time seconds and
    // increment, then the event's identity).
    pub(in crate::changes) const TOKEN_INSERT: &str = "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F69640064635019A078BE67426D7CF4D2000004";
    pub(in crate::changes) const TOKEN_UPDATE: &str = "8262A3713F000000012B022C0100296E5A10046B9C7F4A0AD74DCF8EB8EF3E2C8F1A5C46645F69640064635019A078BE67426D7CF4D20004";
    pub(in crate::changes) const ID: &str = "635019a078be67426d7cf4d2";

    pub(in crate::changes) fn oid() -> ObjectId {
        ObjectId::parse_str(ID).unwrap()
    }

    pub(in crate::changes) fn wall() -> bson::DateTime {
        bson::DateTime::from_millis(1_666_193_824_604)
    }

    pub(in crate::changes) fn change(raw: Document) -> ChangeEvent {
        match decode_event(raw).unwrap() {
            Decoded::Change(e) => e,
            other => panic!("not a change: {other:?}"),
        }
    }

    pub(in crate::changes) fn stored_document() -> Document {
        doc! {
            "_id": oid(),
            "createdAt": bson::DateTime::from_millis(1_666_193_824_000),
            "healthevent": { "nodename": "node-1", "isfatal": true, "generatedtimestamp": { "seconds": 1_666_193_824_i64 } },
            "healtheventstatus": { "nodequarantined": "Quarantined" },
            "_idempotencyKey": "k-1",
        }
    }

    pub(in crate::changes) fn api_document() -> serde_json::Value {
        json!({
            "_id": ID,
            "createdAt": {"$date": "2022-10-19T15:37:04.000Z"},
            "healthevent": {"nodename": "node-1", "isfatal": true, "generatedtimestamp": {"seconds": 1_666_193_824}},
            "healtheventstatus": {"nodequarantined": "Quarantined"},
        })
    }

    pub(in crate::changes) fn insert_event() -> Document {
        doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_666_193_824, increment: 1 },
            "collectionUUID": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![0xab; 16] },
            "wallTime": wall(),
            "fullDocument": stored_document(),
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
        }
    }

    /// An update as MongoDB emits it with `fullDocumentBeforeChange`: `updatedFields` keyed by
    /// (dotted) path, no `wallTime` (servers before 6.0).
    pub(in crate::changes) fn update_event() -> Document {
        let mut pre = stored_document();
        pre.insert(
            "healthevent",
            doc! { "nodename": "node-1", "entitiesimpacted": [1, 2, 3] },
        );
        pre.insert(
            "healtheventstatus",
            doc! { "nodequarantined": "Pending", "faultremediated": false },
        );
        doc! {
            "_id": { "_data": TOKEN_UPDATE },
            "operationType": "update",
            "clusterTime": Timestamp { time: 1_654_878_527, increment: 1 },
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
            "updateDescription": {
                "updatedFields": {
                    "healtheventstatus.nodequarantined": "Quarantined",
                    "healtheventstatus.userpodsevictionstatus": { "status": "InProgress" },
                    "quarantineFinishTimestamp": bson::DateTime::from_millis(1_654_878_527_000),
                },
                "removedFields": ["healtheventstatus.faultremediated"],
                "truncatedArrays": [ { "field": "healthevent.entitiesimpacted", "newSize": 2 } ],
            },
            "fullDocumentBeforeChange": pre,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use mongodb::bson::{doc, Timestamp};
    use serde_json::json;

    #[test]
    fn decodes_an_insert() {
        let e = change(insert_event());
        assert_eq!(e.token, ResumeToken::from_string(TOKEN_INSERT));
        assert_eq!(e.operation, OperationType::Insert);
        assert_eq!(e.document_id.as_str(), ID);
        // ObjectId -> hex, date -> {"$date"}, the idempotency key hidden.
        assert_eq!(
            e.full_document.map(serde_json::Value::Object),
            Some(api_document())
        );
        assert!(e.updated_fields.is_empty() && e.removed_fields.is_empty());
        // wallTime (milliseconds) wins over the cluster time.
        assert_eq!(e.commit_time.timestamp_millis(), 1_666_193_824_604);
    }

    #[test]
    fn decodes_an_update_in_mongodb_shape() {
        let e = change(update_event());
        assert_eq!(e.token.as_str(), TOKEN_UPDATE);
        assert_eq!(e.operation, OperationType::Update);
        assert_eq!(e.document_id.as_str(), ID);
        assert_eq!(
            e.updated_fields,
            [
                "healtheventstatus.nodequarantined",
                "healtheventstatus.userpodsevictionstatus",
                "quarantineFinishTimestamp",
                "healthevent.entitiesimpacted",
            ]
        );
        assert_eq!(e.removed_fields, ["healtheventstatus.faultremediated"]);
        // The pre-image with the update applied.
        assert_eq!(
            e.full_document.clone().map(serde_json::Value::Object),
            Some(json!({
                "_id": ID,
                "createdAt": {"$date": "2022-10-19T15:37:04.000Z"},
                "healthevent": {"nodename": "node-1", "entitiesimpacted": [1, 2]},
                "healtheventstatus": {
                    "nodequarantined": "Quarantined",
                    "userpodsevictionstatus": {"status": "InProgress"},
                },
                "quarantineFinishTimestamp": {"$date": "2022-06-10T16:28:47.000Z"},
            }))
        );
        // No wallTime: the cluster time's second.
        assert_eq!(e.commit_time.timestamp(), 1_654_878_527);
        assert_eq!(e.commit_time.timestamp_subsec_millis(), 0);
        // The filter document the API defines sees the same paths.
        let f = e.to_filter_document();
        assert_eq!(
            f["updateDescription"]["updatedFields"][0],
            json!("healtheventstatus.nodequarantined")
        );
    }

    #[test]
    fn decodes_an_update_after_the_pipeline_rewrite() {
        let mut raw = update_event();
        let values = raw
            .get_document("updateDescription")
            .unwrap()
            .get_document("updatedFields")
            .unwrap()
            .clone();
        // What the $addFields stage makes of it: the keys, then the truncated arrays' fields,
        // and the values aside.
        raw.insert(
            "updateDescription",
            doc! {
                "updatedValues": values,
                "updatedFields": [
                    "healtheventstatus.nodequarantined",
                    "healtheventstatus.userpodsevictionstatus",
                    "quarantineFinishTimestamp",
                    "healthevent.entitiesimpacted",
                ],
                "removedFields": ["healtheventstatus.faultremediated"],
                "truncatedArrays": [ { "field": "healthevent.entitiesimpacted", "newSize": 2 } ],
            },
        );
        assert_eq!(change(raw), change(update_event()));
    }

    #[test]
    fn decodes_replace_delete_and_missing_pre_images() {
        let mut replace = insert_event();
        replace.insert("operationType", "replace");
        let e = change(replace);
        assert_eq!(e.operation, OperationType::Replace);
        assert_eq!(
            e.full_document.map(serde_json::Value::Object),
            Some(api_document())
        );
        assert!(e.updated_fields.is_empty());

        let delete = doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "delete",
            "clusterTime": Timestamp { time: 1_666_193_824, increment: 3 },
            "wallTime": wall(),
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
        };
        let e = change(delete);
        assert_eq!(e.operation, OperationType::Delete);
        assert_eq!(e.full_document, None);
        assert!(e.to_filter_document().get("fullDocument").is_none());

        // An update without its pre-image cannot be given its document.
        let mut update = update_event();
        update.insert("fullDocumentBeforeChange", Bson::Null);
        let err = decode_event(update).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    }

    #[test]
    fn stream_ending_events_are_reported() {
        for (op, extra) in [
            ("invalidate", doc! {}),
            (
                "drop",
                doc! { "ns": { "db": "nvsentinel", "coll": "HealthEvents" } },
            ),
            (
                "rename",
                doc! { "ns": { "db": "nvsentinel", "coll": "HealthEvents" }, "to": { "db": "nvsentinel", "coll": "Old" } },
            ),
            ("dropDatabase", doc! { "ns": { "db": "nvsentinel" } }),
        ] {
            let mut raw = doc! {
                "_id": { "_data": TOKEN_INSERT },
                "operationType": op,
                "clusterTime": Timestamp { time: 1_666_193_900, increment: 1 },
                "wallTime": wall(),
            };
            raw.extend(extra);
            assert_eq!(
                decode_event(raw).unwrap(),
                Decoded::Ended {
                    operation: op.to_owned()
                }
            );
        }
        let other = doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "createIndexes",
            "clusterTime": Timestamp { time: 1_666_193_900, increment: 1 },
        };
        assert!(matches!(
            decode_event(other).unwrap(),
            Decoded::Other { ref operation, .. } if operation == "createIndexes"
        ));
    }

    #[test]
    fn malformed_events_are_permanent_errors() {
        let mut no_token = insert_event();
        no_token.insert("_id", doc! { "other": 1 });
        let mut bad_key = insert_event();
        bad_key.insert("documentKey", doc! { "_id": 7 });
        let mut no_time = insert_event();
        no_time.remove("wallTime");
        no_time.remove("clusterTime");
        let mut bad_fields = update_event();
        bad_fields.insert("updateDescription", doc! { "updatedFields": [1] });
        for raw in [no_token, bad_key, no_time, bad_fields] {
            let err = decode_event(raw).unwrap_err();
            assert!(err.is_permanent_backend(), "{err}");
            assert!(
                err.message().contains("malformed MongoDB change event"),
                "{err}"
            );
        }
        // A string key that is a document id is accepted.
        let mut string_key = insert_event();
        string_key.insert("documentKey", doc! { "_id": ID });
        assert_eq!(change(string_key).document_id.as_str(), ID);
    }
}
