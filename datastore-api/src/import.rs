//! Imports: documents that keep their own `_id` and `createdAt`, as a migration from another
//! store needs ([`Collection::import`](crate::Collection::import)). Ordinary inserts may not
//! set `createdAt` (the server assigns it); this is the one path that may.
//!
//! An import is idempotent by `_id`: a document whose `_id` (or other unique key, such as a
//! maintenance event's `eventId`) is already stored is left as it is and counted as present, so
//! a re-run after a crash imports only what the crashed run had not committed. Each document
//! written is an insert to change streams, on every provider (MongoDB's oplog records it so):
//! after a migration, start consumers from now (`reset_consumer(…, StartFrom::Now)`) unless
//! they should see the history.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::prepare::prepare_insert;
use crate::value::{as_date, Document, DocumentId, Value, CREATED_AT_FIELD, ID_FIELD};

/// A document ready to import: its id, its original insert time and its canonical body.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportDocument {
    /// The document's `_id`.
    pub id: DocumentId,
    /// Its original `createdAt` (stored at millisecond precision).
    pub created_at: DateTime<Utc>,
    /// The canonical body, without `_id` and `createdAt`.
    pub body: Document,
}

/// What [`Collection::import`](crate::Collection::import) did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Documents written.
    pub inserted: u64,
    /// Documents left alone because their `_id` (or another unique key) was already stored.
    pub present: u64,
}

impl ImportDocument {
    /// Checks and canonicalizes a document that carries its `_id` (24 hex digits) and its
    /// `createdAt` (`{"$date": …}`), with the rules of an ordinary insert for the rest.
    pub fn prepare(mut document: Document) -> Result<ImportDocument> {
        if !matches!(document.get(ID_FIELD), Some(Value::String(_))) {
            return Err(Error::invalid_input(
                "_id: missing or not a string: an import keeps each document's _id (24 hex digits)",
            ));
        }
        let created_at = match document.remove(CREATED_AT_FIELD) {
            Some(v) => as_date(&v).ok_or_else(|| {
                Error::invalid_input(format!(
                    "createdAt: {v} is not a date: an import keeps each document's createdAt ({{\"$date\": …}})"
                ))
            })?,
            None => {
                return Err(Error::invalid_input(
                    "createdAt: missing: an import keeps each document's createdAt",
                ))
            }
        };
        let (id, body) = prepare_insert(document)?;
        let created_at = DateTime::from_timestamp_millis(created_at.timestamp_millis())
            .ok_or_else(|| Error::invalid_input("createdAt: out of range"))?;
        Ok(ImportDocument {
            id,
            created_at,
            body,
        })
    }

    /// The whole document as [`find`](crate::Collection::find) returns it: the body with `_id`
    /// and `createdAt`.
    pub fn to_document(&self) -> Result<Document> {
        let mut doc = Document::new();
        doc.insert(ID_FIELD.into(), Value::String(self.id.as_str().to_owned()));
        doc.insert(
            CREATED_AT_FIELD.into(),
            crate::value::date_value(self.created_at)?,
        );
        for (k, v) in &self.body {
            doc.insert(k.clone(), v.clone());
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(v: Value) -> Document {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn id_and_created_at_are_required_and_kept() {
        let ok = ImportDocument::prepare(doc(json!({
            "_id": "6b105a82bd0eee37b2e8862c",
            "createdAt": {"$date": "2026-01-02T03:04:05.678Z"},
            "healthevent": {"nodename": "n1"}
        })))
        .unwrap();
        assert_eq!(ok.id.as_str(), "6b105a82bd0eee37b2e8862c");
        assert_eq!(ok.created_at.timestamp_millis(), 1_767_323_045_678);
        assert!(!ok.body.contains_key("_id") && !ok.body.contains_key("createdAt"));
        let back = ok.to_document().unwrap();
        assert_eq!(
            back["createdAt"],
            json!({"$date": "2026-01-02T03:04:05.678Z"})
        );
        for (bad, says) in [
            (
                json!({"createdAt": {"$date": "2026-01-02T03:04:05Z"}}),
                "_id",
            ),
            (
                json!({"_id": "6b105a82bd0eee37b2e8862c"}),
                "createdAt: missing",
            ),
            (
                json!({"_id": "6b105a82bd0eee37b2e8862c", "createdAt": 5}),
                "not a date",
            ),
            (
                json!({"_id": "nope", "createdAt": {"$date": "2026-01-02T03:04:05Z"}}),
                "document id",
            ),
        ] {
            let e = ImportDocument::prepare(doc(bad)).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
