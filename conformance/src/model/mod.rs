//! The in-memory reference model: the executable specification of the query and update
//! semantics, written independently of any backend.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use datastore_api::query::sort_documents;
use datastore_api::value::{
    as_date, compare_numbers, distinct_values, unwrap_arrays, values_at, CREATED_AT_FIELD, ID_FIELD,
};
use datastore_api::{
    ChangeEvent, Direction, Document, DocumentId, Error, ErrorKind, FieldPath, Filter, FindOptions,
    Lowered, OperationType, PageRequest, Result, ResumeToken, Scalar, Update, UpdateResult, Value,
};
use serde_json::Number;

mod update;

/// Compares a stored value with a filter scalar inside the same type bracket.
fn compare(v: &Value, s: &Scalar) -> Option<Ordering> {
    match (v, s) {
        (Value::Number(n), Scalar::Int(i)) => Some(compare_numbers(n, &Number::from(*i))),
        (Value::Number(n), Scalar::Float(f)) => Some(compare_numbers(n, &Number::from_f64(*f)?)),
        (Value::String(x), Scalar::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        (v, Scalar::Date(t)) => as_date(v).map(|d| d.cmp(t)),
        _ => None,
    }
}

/// Each candidate value, with arrays examined one level deep.
fn candidates(values: Vec<&Value>) -> impl Iterator<Item = &Value> {
    values.into_iter().flat_map(|v| match v {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        v => vec![v],
    })
}

/// Whether `doc` (with `_id` and `createdAt`) matches the lowered filter.
pub fn matches(filter: &Lowered, doc: &Document) -> bool {
    match filter {
        Lowered::True => true,
        Lowered::False => false,
        Lowered::Cmp { path, op, value } => candidates(values_at(doc, path))
            .any(|v| compare(v, value).is_some_and(|o| op.accepts(o))),
        Lowered::NullOrMissing(path) => {
            let vals = values_at(doc, path);
            vals.is_empty() || candidates(vals).any(Value::is_null)
        }
        Lowered::Exists(path) => !values_at(doc, path).is_empty(),
        Lowered::EqValue { path, value } => values_at(doc, path).into_iter().any(|v| {
            // The whole value, or one element of an array there.
            let whole = std::iter::once(v);
            let elements = v.as_array().into_iter().flatten();
            whole
                .chain(elements)
                .any(|c| datastore_api::value::equivalent(c, value))
        }),
        Lowered::ExprCmp { path, op, value } => op.accepts(expression_order(doc, path, value)),
        Lowered::Not(inner) => !matches(inner, doc),
        Lowered::And(parts) => parts.iter().all(|p| matches(p, doc)),
        Lowered::Or(parts) => parts.iter().any(|p| matches(p, doc)),
    }
}

/// How the value an aggregation expression reads at `path` orders against the number `n`:
/// BSON type order puts missing and null below every number, every other type above; an
/// array met anywhere on the path makes the value an array.
fn expression_order(doc: &Document, path: &FieldPath, n: &Scalar) -> Ordering {
    let mut here: Option<&Value> = None;
    for (i, seg) in path.segments().iter().enumerate() {
        let next = if i == 0 {
            doc.get(seg)
        } else {
            match here {
                Some(Value::Object(o)) if as_date(here.unwrap_or(&Value::Null)).is_none() => {
                    o.get(seg)
                }
                Some(Value::Array(_)) => return Ordering::Greater,
                _ => None,
            }
        };
        match next {
            Some(v) => here = Some(v),
            None => return Ordering::Less,
        }
    }
    match here {
        None | Some(Value::Null) => Ordering::Less,
        Some(v @ Value::Number(_)) => compare(v, n).unwrap_or(Ordering::Less),
        Some(_) => Ordering::Greater,
    }
}

fn id_of(doc: &Document) -> &str {
    doc.get(ID_FIELD)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn created_of(doc: &Document) -> Option<DateTime<Utc>> {
    doc.get(CREATED_AT_FIELD).and_then(as_date)
}

/// A change the model expects a change stream to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedChange {
    /// What happened.
    pub operation: OperationType,
    /// The document id.
    pub id: String,
    /// The document after the change (none for deletes).
    pub full_document: Option<Document>,
    /// Changed paths (updates).
    pub updated_fields: Vec<String>,
    /// Removed paths (updates).
    pub removed_fields: Vec<String>,
}

impl ExpectedChange {
    /// The change as the document change-stream filters see.
    pub fn filter_document(&self) -> Document {
        let event = ChangeEvent {
            token: ResumeToken::from_string(""),
            operation: self.operation,
            document_id: DocumentId::parse(&self.id).unwrap_or_else(|_| DocumentId::generate()),
            full_document: self.full_document.clone(),
            updated_fields: self.updated_fields.clone(),
            removed_fields: self.removed_fields.clone(),
            commit_time: DateTime::<Utc>::UNIX_EPOCH,
        };
        event.to_filter_document()
    }

    /// Whether a delivered event is this change (the changed paths are sets: their order is
    /// the server's).
    pub fn is(&self, e: &ChangeEvent) -> bool {
        let same_set = |a: &[String], b: &[String]| {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort();
            b.sort();
            a == b
        };
        e.operation == self.operation
            && e.document_id.as_str() == self.id
            && same_set(&e.updated_fields, &self.updated_fields)
            && same_set(&e.removed_fields, &self.removed_fields)
            && match (&e.full_document, &self.full_document) {
                (Some(a), Some(b)) => datastore_api::value::equivalent_documents(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// A collection held in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Stored documents, each with `_id` and `createdAt`.
    pub docs: Vec<Document>,
    /// Every change, in commit order.
    pub changes: Vec<ExpectedChange>,
}

impl Model {
    /// Adds a stored document (already carrying `_id` and `createdAt`).
    pub fn insert(&mut self, doc: Document) {
        self.insert_batch(vec![doc]);
    }

    /// Adds the documents of one insert statement; their changes are ordered by `(createdAt, _id)`.
    pub fn insert_batch(&mut self, mut docs: Vec<Document>) {
        docs.sort_by(|a, b| (created_of(a), id_of(a)).cmp(&(created_of(b), id_of(b))));
        for doc in docs {
            self.changes.push(ExpectedChange {
                operation: OperationType::Insert,
                id: id_of(&doc).to_owned(),
                full_document: Some(doc.clone()),
                updated_fields: Vec::new(),
                removed_fields: Vec::new(),
            });
            self.docs.push(doc);
        }
    }

    /// Copies of the documents matching `filter`, in storage order.
    pub fn matching(&self, filter: &Filter) -> Result<Vec<Document>> {
        let lowered = filter.lower()?;
        Ok(self
            .docs
            .iter()
            .filter(|d| matches(&lowered, d))
            .cloned()
            .collect())
    }

    /// Matching documents per `options`.
    pub fn find(&self, filter: &Filter, options: &FindOptions) -> Result<Vec<Document>> {
        let keys = options.sort.validate()?;
        let mut out = self.matching(filter)?;
        sort_documents(&mut out, &keys);
        let skip = options.skip.min(out.len() as u64) as usize;
        let mut out: Vec<Document> = out.into_iter().skip(skip).collect();
        if let Some(limit) = options.limit {
            out.truncate(limit.min(out.len() as u64) as usize);
        }
        Ok(out)
    }

    /// Number of matches.
    pub fn count(&self, filter: &Filter) -> Result<u64> {
        let lowered = filter.lower()?;
        Ok(self.docs.iter().filter(|d| matches(&lowered, d)).count() as u64)
    }

    /// Distinct values at `path`.
    pub fn distinct(&self, path: &str, filter: &Filter) -> Result<Vec<Value>> {
        let path = FieldPath::parse(path)?;
        let lowered = filter.lower()?;
        let mut vals = Vec::new();
        for d in self.docs.iter().filter(|d| matches(&lowered, d)) {
            vals.extend(values_at(d, &path).into_iter().cloned());
        }
        Ok(distinct_values(unwrap_arrays(vals)))
    }

    /// All matches in `(createdAt, _id)` order of the page request's direction.
    pub fn keyset_order(&self, filter: &Filter, page: &PageRequest) -> Result<Vec<Document>> {
        let mut out = self.matching(filter)?;
        out.sort_by(|a, b| (created_of(a), id_of(a)).cmp(&(created_of(b), id_of(b))));
        if page.direction == Direction::Descending {
            out.reverse();
        }
        Ok(out)
    }

    /// Applies an update to the first match in `(createdAt, _id)` order, or to every match.
    /// All or nothing.
    pub fn update(
        &mut self,
        filter: &Filter,
        update: &Update,
        only_first: bool,
        now: DateTime<Utc>,
    ) -> Result<UpdateResult> {
        let valid = update.validate()?;
        let lowered = filter.lower()?;
        let mut idx: Vec<usize> = (0..self.docs.len())
            .filter(|i| matches(&lowered, &self.docs[*i]))
            .collect();
        idx.sort_by(|a, b| {
            let (x, y) = (&self.docs[*a], &self.docs[*b]);
            (created_of(x), id_of(x)).cmp(&(created_of(y), id_of(y)))
        });
        if only_first {
            idx.truncate(1);
        }
        let mut staged = Vec::new();
        for i in &idx {
            if let Some(applied) = update::apply(&valid, &self.docs[*i], now)? {
                staged.push((*i, applied));
            }
        }
        let modified = staged.len() as u64;
        for (i, applied) in staged {
            let d = applied.document;
            self.changes.push(ExpectedChange {
                operation: OperationType::Update,
                id: id_of(&d).to_owned(),
                full_document: Some(d.clone()),
                updated_fields: applied.updated,
                removed_fields: applied.removed,
            });
            self.docs[i] = d;
        }
        Ok(UpdateResult {
            matched: idx.len() as u64,
            modified,
        })
    }

    /// Deletes matches; returns how many.
    pub fn delete(&mut self, filter: &Filter) -> Result<u64> {
        let lowered = filter.lower()?;
        let (mut gone, kept): (Vec<Document>, Vec<Document>) = std::mem::take(&mut self.docs)
            .into_iter()
            .partition(|d| matches(&lowered, d));
        self.docs = kept;
        gone.sort_by(|a, b| (created_of(a), id_of(a)).cmp(&(created_of(b), id_of(b))));
        for d in &gone {
            self.changes.push(ExpectedChange {
                operation: OperationType::Delete,
                id: id_of(d).to_owned(),
                full_document: None,
                updated_fields: Vec::new(),
                removed_fields: Vec::new(),
            });
        }
        Ok(gone.len() as u64)
    }

    /// Every document, by `_id`.
    pub fn snapshot(&self) -> Vec<Document> {
        let mut all = self.docs.clone();
        sort_documents(&mut all, &[]);
        all
    }
}

/// Whether two results are the same: equal document lists (numbers compared numerically), or
/// errors of the same kind.
pub fn same_outcome<T: PartialEq + std::fmt::Debug>(
    provider: &Result<T>,
    model: &Result<T>,
) -> std::result::Result<(), String> {
    match (provider, model) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Err(a), Err(b)) if a.kind() == b.kind() => Ok(()),
        _ => Err(format!(
            "provider returned {provider:?}\n    model expects {model:?}"
        )),
    }
}

/// The same for document lists, with numeric equivalence.
pub fn same_documents(
    provider: &Result<Vec<Document>>,
    model: &Result<Vec<Document>>,
) -> std::result::Result<(), String> {
    match (provider, model) {
        (Ok(a), Ok(b))
            if a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    datastore_api::value::equivalent(
                        &Value::Object(x.clone()),
                        &Value::Object(y.clone()),
                    )
                }) =>
        {
            Ok(())
        }
        (Err(a), Err(b)) if a.kind() == b.kind() => Ok(()),
        _ => Err(format!(
            "provider returned {}\n    model expects {}",
            show(provider),
            show(model)
        )),
    }
}

fn show(r: &Result<Vec<Document>>) -> String {
    match r {
        Ok(docs) => serde_json::to_string(docs).unwrap_or_default(),
        Err(e) => format!("error {e}"),
    }
}

/// An error of `kind` for expectations.
pub fn expect_error(kind: ErrorKind) -> Error {
    Error::new(kind, "expected by the model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Document {
        v.as_object().unwrap().clone()
    }

    fn m(f: Filter, d: &Document) -> bool {
        matches(&f.lower().unwrap(), d)
    }

    #[test]
    fn null_missing_and_ne() {
        let missing = doc(json!({"_id": "x"}));
        let null = doc(json!({"a": null}));
        let one = doc(json!({"a": 1}));
        assert!(m(Filter::eq("a", Scalar::Null), &missing));
        assert!(m(Filter::eq("a", Scalar::Null), &null));
        assert!(!m(Filter::eq("a", Scalar::Null), &one));
        assert!(m(Filter::ne("a", 1), &missing));
        assert!(!m(Filter::ne("a", 1.0), &one));
        assert!(m(Filter::exists("a", true), &null));
    }

    #[test]
    fn arrays_and_brackets() {
        let d = doc(json!({"a": [1, "x"], "o": [{"b": 2}, {"b": 3}], "s": "5"}));
        assert!(m(Filter::eq("a", 1), &d));
        assert!(m(Filter::eq("a", "x"), &d));
        assert!(m(Filter::gt("o.b", 2), &d));
        assert!(!m(Filter::gt("s", 1), &d));
        assert!(m(Filter::gt("s", "4"), &d));
    }
}
