//! Preparing documents to insert: the one place that decides which documents every backend
//! accepts.

use crate::error::{Error, Result};
use crate::query::{validate_idempotency_key, KeyedDocument};
use crate::value::{
    drop_iteratively, exceeds_max_depth, too_deep, Document, DocumentId, Value, CREATED_AT_FIELD,
    ID_FIELD,
};

/// Splits a document to insert into its id and its canonical body (without `_id`).
/// Shared by providers so that every backend accepts and rejects the same documents.
///
/// A document nested deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH) is rejected first,
/// without recursion, and dropped without recursion ([`drop_iteratively`]), so that no depth of
/// nesting can overflow the stack. For a batch, use [`prepare_inserts`].
pub fn prepare_insert(document: Document) -> Result<(DocumentId, Document)> {
    let document = Value::Object(document);
    if exceeds_max_depth(&document) {
        drop_iteratively(document);
        return Err(too_deep("document"));
    }
    let Value::Object(mut document) = document else {
        unreachable!("built as an object above")
    };
    if document.contains_key(CREATED_AT_FIELD) {
        return Err(Error::invalid_input(
            "documents may not set createdAt: the database server assigns it at insert",
        ));
    }
    let id = match document.remove(ID_FIELD) {
        None => DocumentId::generate(),
        Some(Value::String(s)) => DocumentId::parse(&s)?,
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "_id must be a 24-hex-digit string, got {other}"
            )))
        }
    };
    if let Some(name) = document.keys().find(|k| crate::path::is_reserved_name(k)) {
        return Err(Error::invalid_input(format!(
            "document field {name:?}: {}",
            crate::path::RESERVED_WHY
        )));
    }
    crate::value::check_document_size(&document)?;
    crate::value::canonicalize_document(&mut document)?;
    Ok((id, document))
}

/// [`prepare_insert`] for a batch: every document's id and canonical body, in order, or the
/// first error. After an error the documents not yet prepared are dropped without recursion
/// ([`drop_iteratively`]), so a batch holding several documents nested too deep fails cleanly
/// instead of overflowing the stack while the rest of the batch is dropped.
pub fn prepare_inserts(documents: Vec<Document>) -> Result<Vec<(DocumentId, Document)>> {
    prepare_each(documents, prepare_insert, |d| d)
}

/// [`prepare_insert`] for a batch of documents with idempotency keys: each key checked
/// ([`validate_idempotency_key`]) and each document prepared, in order, or the first error;
/// what is left after an error is dropped without recursion, as in [`prepare_inserts`].
pub fn prepare_keyed(documents: Vec<KeyedDocument>) -> Result<Vec<(String, DocumentId, Document)>> {
    let prepare = |kd: KeyedDocument| match validate_idempotency_key(&kd.key) {
        Ok(()) => prepare_insert(kd.document).map(|(id, body)| (kd.key, id, body)),
        Err(e) => {
            drop_iteratively(Value::Object(kd.document));
            Err(e)
        }
    };
    prepare_each(documents, prepare, |kd| kd.document)
}

/// `prepare` for each item, in order, or the first error. After an error the items not yet
/// prepared are dropped without recursion (their documents, `document_of`, through
/// [`drop_iteratively`]), so a batch holding several documents nested too deep fails cleanly
/// instead of overflowing the stack while the rest of the batch is dropped. `prepare` must
/// do the same with the document of an item it refuses ([`prepare_insert`] does).
fn prepare_each<T, U>(
    items: Vec<T>,
    mut prepare: impl FnMut(T) -> Result<U>,
    document_of: impl Fn(T) -> Document,
) -> Result<Vec<U>> {
    let mut prepared = Vec::with_capacity(items.len());
    let mut rest = items.into_iter();
    for item in rest.by_ref() {
        match prepare(item) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                rest.for_each(|i| drop_iteratively(Value::Object(document_of(i))));
                return Err(e);
            }
        }
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_document_that_looks_like_a_date_is_refused() {
        let doc = serde_json::json!({"$date": "1970-01-01T00:00:00Z"});
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        let e = prepare_insert(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("'$'"), "{e}");
    }

    #[test]
    fn a_document_over_16_mib_is_refused_as_mongodb_refuses_it() {
        let mut doc = Document::new();
        doc.insert("big".into(), Value::String("x".repeat(17 * 1024 * 1024)));
        let e = prepare_insert(doc).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("16 MiB"), "{e}");
        let mut doc = Document::new();
        doc.insert(
            "fits".into(),
            Value::String("x".repeat(16 * 1024 * 1024 - 100)),
        );
        assert!(prepare_insert(doc).is_ok());
    }

    /// A document whose field `a` nests `levels` objects deep, built without recursion.
    fn deep_document(levels: usize) -> Document {
        let mut v = Value::Null;
        for _ in 0..levels {
            let mut m = Document::new();
            m.insert("k".to_owned(), v);
            v = Value::Object(m);
        }
        let mut doc = Document::new();
        doc.insert("a".to_owned(), v);
        doc
    }

    #[test]
    fn batches_with_several_deep_documents_fail_cleanly() {
        let mut bad_id = Document::new();
        bad_id.insert(ID_FIELD.to_owned(), Value::from("not an id"));
        for batch in [
            vec![deep_document(100_000), deep_document(100_000)],
            vec![bad_id, deep_document(100_000)],
        ] {
            let e = prepare_inserts(batch).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let ok = prepare_inserts(vec![deep_document(3), Document::new()]).unwrap();
        assert_eq!(ok.len(), 2);
    }
}
