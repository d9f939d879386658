//! The update DSL and its one implementation of the semantics.
//!
//! Semantics (MongoDB's update operators):
//! - `Set(path, v)` writes `v`, creating missing parent objects. A parent that exists but is
//!   not an object (a number, a string, an array) is an [`InvalidInput`](crate::ErrorKind) error.
//! - `Unset(path)` removes the field; a missing field or parent is a no-op.
//! - `Inc(path, n)` adds `n`; a missing field is set to `n`. Integer + integer stays an integer
//!   (overflow is an error); anything with a float gives a float. A non-number target is an error.
//! - `Push(path, v)` appends to an array; a missing field becomes `[v]`; a non-array is an error.
//! - `CurrentDate(path, format)` sets the database server's current time.
//!
//! An update with no operations, two operations on overlapping paths (`a` and `a.b`), or an
//! operation on `_id` or `createdAt` is rejected. Every update applies atomically per document:
//! an error in any operation leaves the document unchanged, and `update_many` is all or nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::path::FieldPath;
use crate::value::{canonicalize, date_value, truncate_to_millis, Document, Number, Value};

/// How [`UpdateOp::CurrentDate`] stores the server time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// A date, `{"$date": "…"}` (BSON date on MongoDB).
    Date,
    /// A protobuf timestamp, `{"seconds": s, "nanos": n}` (millisecond precision), the shape
    /// NVSentinel's status timestamps have.
    ProtoTimestamp,
}

/// One update operation.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    /// Set a field (creating parents).
    Set(String, Value),
    /// Remove a field.
    Unset(String),
    /// Add a number (any other value is rejected at validation).
    Inc(String, Value),
    /// Append to an array.
    Push(String, Value),
    /// Set the server's current time.
    CurrentDate(String, TimeFormat),
}

/// A list of update operations applied together.
///
/// ```
/// use datastore_api::{Update, TimeFormat};
/// let u = Update::new()
///     .set("healtheventstatus.nodequarantined", "Quarantined")
///     .current_date("healtheventstatus.quarantinefinishtimestamp", TimeFormat::ProtoTimestamp)
///     .inc("attempts", 1);
/// assert_eq!(u.ops().len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    ops: Vec<UpdateOp>,
    /// A value that failed to serialize; reported by [`validate`](Update::validate).
    unserializable: Option<String>,
}

impl Update {
    /// An empty update (add operations before use; empty updates are rejected).
    pub fn new() -> Self {
        Update::default()
    }

    fn serialized(&mut self, path: &str, value: impl Serialize) -> Value {
        serde_json::to_value(value).unwrap_or_else(|e| {
            self.unserializable
                .get_or_insert_with(|| format!("the value for '{path}' does not serialize: {e}"));
            Value::Null
        })
    }

    /// Adds a `Set`. A value that fails to serialize makes [`validate`](Update::validate) fail.
    pub fn set(mut self, path: impl Into<String>, value: impl Serialize) -> Self {
        let path = path.into();
        let v = self.serialized(&path, value);
        self.ops.push(UpdateOp::Set(path, v));
        self
    }

    /// Adds an `Unset`.
    pub fn unset(mut self, path: impl Into<String>) -> Self {
        self.ops.push(UpdateOp::Unset(path.into()));
        self
    }

    /// Adds an `Inc`.
    pub fn inc(mut self, path: impl Into<String>, by: impl Into<Value>) -> Self {
        self.ops.push(UpdateOp::Inc(path.into(), by.into()));
        self
    }

    /// Adds a `Push`.
    pub fn push(mut self, path: impl Into<String>, value: impl Serialize) -> Self {
        let path = path.into();
        let v = self.serialized(&path, value);
        self.ops.push(UpdateOp::Push(path, v));
        self
    }

    /// Adds a `CurrentDate`.
    pub fn current_date(mut self, path: impl Into<String>, format: TimeFormat) -> Self {
        self.ops.push(UpdateOp::CurrentDate(path.into(), format));
        self
    }

    /// Adds an arbitrary operation.
    pub fn op(mut self, op: UpdateOp) -> Self {
        self.ops.push(op);
        self
    }

    /// The operations in order.
    pub fn ops(&self) -> &[UpdateOp] {
        &self.ops
    }

    /// Validates paths and values; the result can be applied to many documents.
    pub fn validate(&self) -> Result<ValidUpdate> {
        if let Some(why) = &self.unserializable {
            return Err(Error::invalid_input(why.clone()));
        }
        if self.ops.is_empty() {
            return Err(Error::invalid_input("update has no operations"));
        }
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let (path, kind) = match op {
                UpdateOp::Set(p, v) => (p, ValidOp::Set(canonical_value(v)?)),
                UpdateOp::Unset(p) => (p, ValidOp::Unset),
                UpdateOp::Inc(p, Value::Number(n)) => (p, ValidOp::Inc(n.clone())),
                UpdateOp::Inc(p, other) => {
                    return Err(Error::invalid_input(format!(
                        "cannot increment '{p}' by {other}: the amount must be a number"
                    )))
                }
                UpdateOp::Push(p, v) if v.is_array() => {
                    return Err(Error::invalid_input(format!(
                        "cannot push an array to '{p}': nested arrays are not supported"
                    )))
                }
                UpdateOp::Push(p, v) => (p, ValidOp::Push(canonical_value(v)?)),
                UpdateOp::CurrentDate(p, f) => (p, ValidOp::CurrentDate(*f)),
            };
            let path = FieldPath::parse(path)?;
            if path.reserved_root().is_some() {
                return Err(Error::invalid_input(format!(
                    "cannot update '{path}': _id and createdAt are immutable"
                )));
            }
            ops.push((path, kind));
        }
        for (i, (a, _)) in ops.iter().enumerate() {
            for (b, _) in &ops[i + 1..] {
                if a.is_prefix_of(b) || b.is_prefix_of(a) {
                    return Err(Error::invalid_input(format!(
                        "update paths '{a}' and '{b}' conflict"
                    )));
                }
            }
        }
        Ok(ValidUpdate { ops })
    }
}

fn canonical_value(v: &Value) -> Result<Value> {
    let mut v = v.clone();
    canonicalize(&mut v)?;
    Ok(v)
}

/// One validated update operation (its value canonical), as providers translate it.
#[derive(Debug, Clone)]
pub enum ValidOp {
    /// Write the value.
    Set(Value),
    /// Remove the field.
    Unset,
    /// Add the number.
    Inc(Number),
    /// Append the value to an array.
    Push(Value),
    /// Write the server's current time in this format.
    CurrentDate(TimeFormat),
}

/// A validated [`Update`], ready to apply.
#[derive(Debug, Clone)]
pub struct ValidUpdate {
    ops: Vec<(FieldPath, ValidOp)>,
}

impl ValidUpdate {
    /// The operations in order, each with its parsed path.
    pub fn ops(&self) -> &[(FieldPath, ValidOp)] {
        &self.ops
    }

    /// The paths this update writes, in order.
    pub fn paths(&self) -> impl Iterator<Item = &FieldPath> {
        self.ops.iter().map(|(p, _)| p)
    }

    /// True when any operation needs the server's clock.
    pub fn needs_server_time(&self) -> bool {
        self.ops
            .iter()
            .any(|(_, op)| matches!(op, ValidOp::CurrentDate(_)))
    }

    /// The paths this update changed between `before` and `after`: `(updated, removed)`, in
    /// operation order. A written path whose value is unchanged is in neither list. This is what
    /// change events report as `updatedFields` / `removedFields`.
    pub fn changed_paths(&self, before: &Document, after: &Document) -> (Vec<String>, Vec<String>) {
        let mut updated = Vec::new();
        let mut removed = Vec::new();
        for (path, _) in &self.ops {
            let old = value_at(before, path);
            match (old, value_at(after, path)) {
                (Some(_), None) => removed.push(path.to_string()),
                (old, Some(new)) if !old.is_some_and(|o| crate::value::equivalent(o, new)) => {
                    updated.push(path.to_string())
                }
                _ => {}
            }
        }
        (updated, removed)
    }

    /// Applies the update to `doc` with `now` as the server time. Returns whether the document
    /// changed. On error `doc` is left unchanged.
    pub fn apply(&self, doc: &mut Document, now: DateTime<Utc>) -> Result<bool> {
        let mut work = doc.clone();
        for (path, op) in &self.ops {
            apply_op(&mut work, path, op, now)?;
        }
        let changed = !crate::value::equivalent_documents(&work, doc);
        if changed {
            *doc = work;
        }
        Ok(changed)
    }
}

fn apply_op(doc: &mut Document, path: &FieldPath, op: &ValidOp, now: DateTime<Utc>) -> Result<()> {
    let segs = path.segments();
    let (last, parents) = segs.split_last().expect("paths have at least one segment");
    if let ValidOp::Unset = op {
        let mut cur = doc;
        for s in parents {
            match cur.get_mut(s) {
                Some(Value::Object(o)) => cur = o,
                _ => return Ok(()),
            }
        }
        cur.remove(last);
        return Ok(());
    }
    let mut cur = doc;
    for (i, s) in parents.iter().enumerate() {
        let entry = cur
            .entry(s.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        // A date is a value, not an object to write into.
        let kind = type_name(entry);
        match entry {
            Value::Object(o) if kind == "an object" => cur = o,
            _ => {
                return Err(Error::invalid_input(format!(
                    "cannot write '{path}': '{}' holds {kind}, not an object",
                    segs[..=i].join(".")
                )))
            }
        }
    }
    match op {
        ValidOp::Set(v) => {
            cur.insert(last.clone(), v.clone());
        }
        ValidOp::Unset => unreachable!("handled above"),
        ValidOp::Inc(n) => {
            let new = match cur.get(last) {
                None => Value::Number(n.clone()),
                Some(Value::Number(old)) => Value::Number(add(old, n, path)?),
                Some(other) => {
                    return Err(Error::invalid_input(format!(
                        "cannot increment '{path}': it holds {}, not a number",
                        type_name(other)
                    )))
                }
            };
            cur.insert(last.clone(), new);
        }
        ValidOp::Push(v) => match cur.get_mut(last) {
            None => {
                cur.insert(last.clone(), Value::Array(vec![v.clone()]));
            }
            Some(Value::Array(items)) => items.push(v.clone()),
            Some(other) => {
                return Err(Error::invalid_input(format!(
                    "cannot push to '{path}': it holds {}, not an array",
                    type_name(other)
                )))
            }
        },
        ValidOp::CurrentDate(format) => {
            cur.insert(last.clone(), time_value(now, *format)?);
        }
    }
    Ok(())
}

/// The value at `path` through nested objects only.
fn value_at<'a>(doc: &'a Document, path: &FieldPath) -> Option<&'a Value> {
    let (first, rest) = path.segments().split_first()?;
    let mut cur = doc.get(first)?;
    for seg in rest {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// The stored form of `now` in `format`.
pub fn time_value(now: DateTime<Utc>, format: TimeFormat) -> Result<Value> {
    let now = truncate_to_millis(now);
    Ok(match format {
        TimeFormat::Date => date_value(now)?,
        TimeFormat::ProtoTimestamp => serde_json::json!({
            "seconds": now.timestamp(),
            "nanos": now.timestamp_subsec_nanos(),
        }),
    })
}

fn add(a: &Number, b: &Number, path: &FieldPath) -> Result<Number> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.checked_add(y).map(Number::from).ok_or_else(|| {
            Error::invalid_input(format!("incrementing '{path}' overflows a 64-bit integer"))
        });
    }
    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
    Number::from_f64(sum).ok_or_else(|| {
        Error::invalid_input(format!("incrementing '{path}' gives a non-finite number"))
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) if crate::value::is_date(v) => "a date",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Document {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn set_creates_parents_and_reports_change() {
        let u = Update::new().set("a.b.c", 1).validate().unwrap();
        let mut d = doc(json!({"x": 1}));
        assert!(u.apply(&mut d, Utc::now()).unwrap());
        assert_eq!(
            Value::Object(d.clone()),
            json!({"x": 1, "a": {"b": {"c": 1}}})
        );
        assert!(!u.apply(&mut d, Utc::now()).unwrap());
    }

    #[test]
    fn errors_leave_document_unchanged() {
        let u = Update::new().set("ok", 1).set("x.y", 2).validate().unwrap();
        let mut d = doc(json!({"x": 5}));
        let before = d.clone();
        assert!(u.apply(&mut d, Utc::now()).is_err());
        assert_eq!(d, before);
        let inc = Update::new().inc("x", i64::MAX).validate().unwrap();
        assert!(inc.apply(&mut d, Utc::now()).is_err());
        let push = Update::new().push("x", 1).validate().unwrap();
        assert!(push.apply(&mut d, Utc::now()).is_err());
    }

    #[test]
    fn inc_push_unset() {
        let u = Update::new()
            .inc("n", 2)
            .inc("f", 0.5)
            .push("list", "a")
            .unset("gone")
            .unset("missing.deep")
            .validate()
            .unwrap();
        let mut d = doc(json!({"n": 1, "f": 1, "gone": true}));
        u.apply(&mut d, Utc::now()).unwrap();
        assert_eq!(Value::Object(d), json!({"n": 3, "f": 1.5, "list": ["a"]}));
    }

    #[test]
    fn invalid_updates_are_rejected() {
        for u in [
            Update::new(),
            Update::new().set("a", 1).set("a.b", 2),
            Update::new().set("_id", "x"),
            Update::new().set("createdAt", 1),
            Update::new().set("a..b", 1),
            Update::new().set("a", json!({"$bad": 1})),
        ] {
            assert_eq!(
                u.validate().unwrap_err().kind(),
                crate::ErrorKind::InvalidInput
            );
        }
    }
}
