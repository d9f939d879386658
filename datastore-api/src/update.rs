//! The update DSL and its one implementation of the semantics.
//!
//! Semantics (MongoDB's update operators):
//! - `Set(path, v)` writes `v`, creating missing parent objects. A parent that exists but is
//!   not an object (a number, a string, an array) is an [`InvalidInput`](crate::ErrorKind) error.
//! - `Unset(path)` removes the field; a missing field or parent is a no-op.
//! - `Inc(path, n)` adds `n`; a missing field is set to `n`. Integer + integer stays an integer:
//!   a sum outside the 64-bit signed range is an error, never a float (MongoDB's rule for `$inc`
//!   on an Int64). Anything with a float gives a float. A non-number target is an error.
//! - `Push(path, v)` appends to an array; a missing field becomes `[v]`; a non-array is an error.
//! - `CurrentDate(path, format)` sets the database server's current time.
//!
//! An update with no operations, more than [`MAX_UPDATE_OPS`] operations, two operations on
//! overlapping paths (`a` and `a.b`), or an operation on `_id` or `createdAt` is rejected, and so
//! is a value that nests deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH) or holds a NaN or an
//! infinite number (JSON, and so every backend, has no such numbers; they are never turned into
//! `null`). Every update applies atomically per document:
//! an error in any operation leaves the document unchanged, and `update_many` is all or nothing.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::guard::{self, Refusal};
use crate::path::FieldPath;
use crate::value::{
    canonicalize, check_depth, date_value, drop_iteratively, exceeds_max_depth, truncate_to_millis,
    Document, Number, Value,
};

/// The most operations one [`Update`] may hold; [`Update::validate`] rejects a larger update
/// with [`InvalidInput`](crate::ErrorKind::InvalidInput). Split a larger change into several
/// updates of at most this many operations (each is atomic on its own, not together; use a
/// transaction to apply them together).
pub const MAX_UPDATE_OPS: usize = 10_000;

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
    /// Add a number (any other value is rejected at validation). An integer added to an integer
    /// must give an integer in the 64-bit signed range (MongoDB's Int64): a sum outside it, such
    /// as `i64::MAX + 1`, is an [`InvalidInput`](crate::ErrorKind::InvalidInput) error when the
    /// update is applied, never a float; an integer amount outside that range is rejected at
    /// validation.
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
    /// Why the first refused value (one that does not serialize, nests too deep, or is or holds
    /// a NaN or infinite number) was refused; reported by [`validate`](Update::validate).
    refused: Option<String>,
}

impl Update {
    /// An empty update (add operations before use; empty updates are rejected).
    pub fn new() -> Self {
        Update::default()
    }

    fn refuse(&mut self, why: String) {
        self.refused.get_or_insert(why);
    }

    /// `value` as a [`Value`], or `null` with the reason recorded for
    /// [`validate`](Update::validate).
    fn serialized<T: Serialize>(&mut self, path: &str, value: T) -> Value {
        match guard::to_value(&value) {
            Ok(v) => v,
            Err(why) => {
                if let Refusal::TooDeep = why {
                    // Its drop could recurse as deep as it nests, past what the stack holds.
                    std::mem::forget(value);
                }
                self.refuse(why.describe(path));
                Value::Null
            }
        }
    }

    /// `value` if it nests no deeper than [`MAX_DEPTH`](crate::value::MAX_DEPTH), else `null`
    /// with the reason recorded (and `value` dropped without recursion).
    fn bounded(&mut self, path: &str, value: Value) -> Value {
        if !exceeds_max_depth(&value) {
            return value;
        }
        drop_iteratively(value);
        self.refuse(Refusal::TooDeep.describe(path));
        Value::Null
    }

    /// Adds a `Set`. A value that fails to serialize, nests deeper than
    /// [`MAX_DEPTH`](crate::value::MAX_DEPTH) or is or holds a NaN or infinite number makes
    /// [`validate`](Update::validate) fail with [`InvalidInput`](crate::ErrorKind::InvalidInput).
    ///
    /// The depth is checked while serializing, so a deeper value is never recursed into past the
    /// limit. Such a value passed by value (not by reference) is not dropped but leaked, because
    /// dropping it may recurse as deep as it nests; pass it by reference to keep it.
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

    /// Adds an `Inc` (see [`UpdateOp::Inc`] for integer overflow). A NaN or infinite amount
    /// makes [`validate`](Update::validate) fail with
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput), as any non-number does.
    pub fn inc(mut self, path: impl Into<String>, by: impl Serialize) -> Self {
        let path = path.into();
        let v = self.serialized(&path, by);
        self.ops.push(UpdateOp::Inc(path, v));
        self
    }

    /// Adds a `Push`; its value is checked as [`set`](Update::set)'s is.
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

    /// Adds an arbitrary operation. A value nested deeper than
    /// [`MAX_DEPTH`](crate::value::MAX_DEPTH) is checked without recursion, dropped without
    /// recursion, and makes [`validate`](Update::validate) fail.
    pub fn op(mut self, op: UpdateOp) -> Self {
        let op = match op {
            UpdateOp::Set(p, v) => {
                let v = self.bounded(&p, v);
                UpdateOp::Set(p, v)
            }
            UpdateOp::Inc(p, v) => {
                let v = self.bounded(&p, v);
                UpdateOp::Inc(p, v)
            }
            UpdateOp::Push(p, v) => {
                let v = self.bounded(&p, v);
                UpdateOp::Push(p, v)
            }
            op @ (UpdateOp::Unset(_) | UpdateOp::CurrentDate(..)) => op,
        };
        self.ops.push(op);
        self
    }

    /// The operations in order.
    pub fn ops(&self) -> &[UpdateOp] {
        &self.ops
    }

    /// Validates paths and values; the result can be applied to many documents.
    ///
    /// Rejects, with [`InvalidInput`](crate::ErrorKind::InvalidInput), an update with no
    /// operations or more than [`MAX_UPDATE_OPS`], overlapping paths, and bad values (see the
    /// [module docs](self)). Takes time linear in the number of operations.
    pub fn validate(&self) -> Result<ValidUpdate> {
        if let Some(why) = &self.refused {
            return Err(Error::invalid_input(why.clone()));
        }
        if self.ops.is_empty() {
            return Err(Error::invalid_input("update has no operations"));
        }
        if self.ops.len() > MAX_UPDATE_OPS {
            return Err(Error::invalid_input(format!(
                "update has {} operations, more than the limit of {MAX_UPDATE_OPS}: split it into \
                 several updates of at most {MAX_UPDATE_OPS} operations each",
                self.ops.len()
            )));
        }
        let ops = self
            .ops
            .iter()
            .map(validate_op)
            .collect::<Result<Vec<_>>>()?;
        check_conflicts(&ops)?;
        Ok(ValidUpdate { ops })
    }
}

fn validate_op(op: &UpdateOp) -> Result<(FieldPath, ValidOp)> {
    let (path, kind) = match op {
        UpdateOp::Set(p, v) => (p, ValidOp::Set(canonical_value(v)?)),
        UpdateOp::Unset(p) => (p, ValidOp::Unset),
        UpdateOp::Inc(p, Value::Number(n)) => (p, ValidOp::Inc(inc_amount(p, n)?)),
        UpdateOp::Inc(p, other) => {
            return Err(Error::invalid_input(format!(
                "cannot increment '{p}' by {}: the amount must be a number",
                type_name(other)
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
    Ok((path, kind))
}

/// An `Inc` amount: any float, or an integer in the 64-bit signed range.
fn inc_amount(path: &str, n: &Number) -> Result<Number> {
    if n.is_u64() && n.as_i64().is_none() {
        return Err(Error::invalid_input(format!(
            "cannot increment '{path}' by {n}: integer amounts must be in the 64-bit signed range"
        )));
    }
    Ok(n.clone())
}

/// Rejects two operations on the same path or on a path and one of its ancestors, naming the
/// same pair as comparing every operation with every later one would: the first operation that
/// conflicts with a later one, and the first of those.
fn check_conflicts(ops: &[(FieldPath, ValidOp)]) -> Result<()> {
    let Some(i) = first_conflicting(ops) else {
        return Ok(());
    };
    let a = &ops[i].0;
    let b = ops[i + 1..]
        .iter()
        .map(|(b, _)| b)
        .find(|b| a.is_prefix_of(b) || b.is_prefix_of(a));
    Err(Error::invalid_input(match b {
        Some(b) => format!("update paths '{a}' and '{b}' conflict"),
        None => format!("update path '{a}' conflicts with a later one"),
    }))
}

/// The first operation whose path equals, is an ancestor of, or is below a later one's. One pass
/// from the end over sets of the later paths and of their ancestors: linear in the operations.
fn first_conflicting(ops: &[(FieldPath, ValidOp)]) -> Option<usize> {
    let mut later: HashSet<&[String]> = HashSet::with_capacity(ops.len());
    let mut later_ancestors: HashSet<&[String]> = HashSet::with_capacity(ops.len());
    let mut first = None;
    for (i, (path, _)) in ops.iter().enumerate().rev() {
        let segs = path.segments();
        let ancestors = || (1..segs.len()).map(|n| &segs[..n]);
        if later.contains(segs)
            || later_ancestors.contains(segs)
            || ancestors().any(|a| later.contains(a))
        {
            first = Some(i);
        }
        later.insert(segs);
        later_ancestors.extend(ancestors());
    }
    first
}

fn canonical_value(v: &Value) -> Result<Value> {
    // Before the clone, which recurses.
    check_depth(v)?;
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
    /// operation order (MongoDB's own order differs; the API treats both as sets), as MongoDB's
    /// change events report them (`updatedFields` /
    /// `removedFields`): a written path whose value is unchanged is in neither list; a path
    /// whose parent did not exist is reported at its topmost new field (the whole new subtree
    /// changed); a push onto an existing array reports the new element's index (`list.3`).
    pub fn changed_paths(&self, before: &Document, after: &Document) -> (Vec<String>, Vec<String>) {
        let mut updated: Vec<String> = Vec::new();
        let mut removed = Vec::new();
        for (path, op) in &self.ops {
            let segments = path.segments();
            let new_parent =
                (1..segments.len()).find(|&k| value_at_segments(before, &segments[..k]).is_none());
            let reported = match (new_parent, op, value_at(before, path)) {
                (Some(k), _, _) => {
                    let top = &segments[..k];
                    value_at_segments(after, top).map(|_| top.join("."))
                }
                (None, ValidOp::Push(_), Some(Value::Array(old))) => match value_at(after, path) {
                    Some(Value::Array(new)) if new.len() > old.len() => {
                        Some(format!("{path}.{}", old.len()))
                    }
                    _ => None,
                },
                (None, _, old) => match (old, value_at(after, path)) {
                    (Some(_), None) => {
                        removed.push(path.to_string());
                        None
                    }
                    (old, Some(new)) if !old.is_some_and(|o| crate::value::equivalent(o, new)) => {
                        Some(path.to_string())
                    }
                    _ => None,
                },
            };
            if let Some(p) = reported {
                if !updated.contains(&p) {
                    updated.push(p);
                }
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
    let Some((last, parents)) = segs.split_last() else {
        return Err(Error::invalid_input("an update path has no segments"));
    };
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
    value_at_segments(doc, path.segments())
}

/// The value at a path given as its segments (objects only).
fn value_at_segments<'a>(doc: &'a Document, segments: &[String]) -> Option<&'a Value> {
    let (first, rest) = segments.split_first()?;
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
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        // Both fit in i128 with room to spare; the sum must fit in i64 (MongoDB's Int64).
        return i64::try_from(x + y).map(Number::from).map_err(|_| {
            Error::invalid_input(format!(
                "cannot increment '{path}' (an integer, {a}) by {b}: the sum overflows the \
                 64-bit signed integer range, and an integer increment stays an integer"
            ))
        });
    }
    let sum = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
    Number::from_f64(sum).ok_or_else(|| {
        Error::invalid_input(format!(
            "cannot increment '{path}' ({a}) by {b}: the sum is {sum}, and NaN and infinite \
             numbers cannot be stored"
        ))
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

    fn invalid(r: Result<ValidUpdate>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        e.message().to_owned()
    }

    /// `levels` nested arrays (or single-key objects) around `null`, built without recursion.
    fn nested(levels: usize, objects: bool) -> Value {
        let mut v = Value::Null;
        for _ in 0..levels {
            v = if objects {
                let mut m = crate::value::Map::new();
                m.insert("k".to_owned(), v);
                Value::Object(m)
            } else {
                Value::Array(vec![v])
            };
        }
        v
    }

    #[test]
    fn values_nested_100k_deep_are_invalid_input_at_every_entry_point() {
        const DEEP: usize = 100_000;
        let limit = crate::value::MAX_DEPTH.to_string();
        for objects in [false, true] {
            let deep = nested(DEEP, objects);
            // By reference: the builder serializes it, stopping at the limit.
            let msg = invalid(Update::new().set("a", &deep).validate());
            assert!(
                msg.contains("nests deeper than") && msg.contains(&limit),
                "{msg}"
            );
            invalid(Update::new().push("a", &deep).validate());
            invalid(Update::new().inc("a", &deep).validate());
            // By value: the value is refused (and, being too deep to drop safely, leaked).
            invalid(Update::new().set("a", nested(DEEP, objects)).validate());
            // Raw operations, as validation receives them.
            for op in [
                UpdateOp::Set("a".into(), nested(DEEP, objects)),
                UpdateOp::Inc("a".into(), nested(DEEP, objects)),
                UpdateOp::Push("a".into(), nested(DEEP, objects)),
            ] {
                let msg = invalid(Update::new().op(op).validate());
                assert!(msg.contains(&limit), "{msg}");
            }
            // Document validation, as every insert runs it.
            assert!(crate::value::check_depth(&deep).is_err());
            let mut doc = Document::new();
            doc.insert("a".to_owned(), nested(DEEP, objects));
            let e = crate::prepare::prepare_insert(doc).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(e.message().contains(&limit), "{e}");
            let mut copy = nested(DEEP, objects);
            let e = canonicalize(&mut copy).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            drop_iteratively(copy);
            drop_iteratively(deep);
        }
    }

    #[test]
    fn values_at_the_depth_limit_are_still_accepted() {
        let max = crate::value::MAX_DEPTH;
        // The innermost `null` is `max` levels below the value.
        let ok = nested(max, true);
        Update::new().set("a", &ok).validate().unwrap();
        Update::new()
            .op(UpdateOp::Set("a".into(), ok))
            .validate()
            .unwrap();
        let mut doc = Document::new();
        doc.insert("a".to_owned(), nested(max - 1, true));
        crate::prepare::prepare_insert(doc.clone()).unwrap();
        doc.insert("a".to_owned(), nested(max, true));
        crate::prepare::prepare_insert(doc).unwrap_err();
        invalid(Update::new().set("a", nested(max + 1, true)).validate());
        invalid(Update::new().set("a", nested(max + 1, false)).validate());
    }

    #[test]
    fn ten_thousand_sets_on_distinct_paths_validate() {
        let u = (0..MAX_UPDATE_OPS).fold(Update::new(), |u, i| {
            u.set(format!("f{}.g{}", i % 100, i), i)
        });
        assert_eq!(u.validate().unwrap().ops().len(), MAX_UPDATE_OPS);
        let msg = invalid(u.set("one.more", 1).validate());
        assert!(msg.contains("10000") && msg.contains("split"), "{msg}");
    }

    #[test]
    fn conflicts_hidden_at_the_end_of_a_long_list_are_found() {
        let long =
            |first: Update| (0..MAX_UPDATE_OPS - 2).fold(first, |u, i| u.set(format!("f{i}"), i));
        // A descendant of the first path, as the last operation.
        let msg = invalid(long(Update::new()).set("f0.x.y", 1).validate());
        assert_eq!(msg, "update paths 'f0' and 'f0.x.y' conflict");
        // An ancestor of the first path, as the last operation.
        let msg = invalid(long(Update::new().set("g.h.i", 1)).unset("g.h").validate());
        assert_eq!(msg, "update paths 'g.h.i' and 'g.h' conflict");
        // The same path again.
        let msg = invalid(long(Update::new()).inc("f9997", 1).validate());
        assert_eq!(msg, "update paths 'f9997' and 'f9997' conflict");
        long(Update::new().set("g.h.i", 1))
            .unset("g.hi")
            .validate()
            .unwrap();
        // The pair named is the first path that conflicts with a later one, and the first of those.
        let u = Update::new()
            .set("x", 1)
            .set("y", 1)
            .set("y", 2)
            .set("x.z", 1)
            .set("x", 3);
        assert_eq!(invalid(u.validate()), "update paths 'x' and 'x.z' conflict");
        // Siblings and shared prefixes of segment names do not conflict.
        Update::new()
            .set("a.b", 1)
            .set("a.c", 1)
            .set("a.bc", 1)
            .set("ab", 1)
            .validate()
            .unwrap();
    }

    #[test]
    fn nan_and_infinite_numbers_are_invalid_input_not_null() {
        #[derive(Serialize)]
        struct Reading {
            celsius: f64,
        }
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for u in [
                Update::new().set("x", f),
                Update::new().set("x", f as f32),
                Update::new().set("x", Some(f)),
                Update::new().set("x", vec![1.0, f]),
                Update::new().set("x", Reading { celsius: f }),
                Update::new().push("x", f),
                Update::new().inc("x", f),
                Update::new().set("ok", 1).set("x", f).set("ok2", 2),
            ] {
                let msg = invalid(u.validate());
                assert!(
                    msg.starts_with("NaN and infinite numbers cannot be stored")
                        && msg.contains("'x'"),
                    "{msg}"
                );
            }
        }
        // A finite sum that overflows to infinity is refused too.
        let u = Update::new().inc("f", f64::MAX).validate().unwrap();
        let mut d = doc(json!({"f": f64::MAX}));
        let e = u.apply(&mut d, Utc::now()).unwrap_err();
        assert!(e.message().contains("infinite"), "{e}");
        assert_eq!(Value::Object(d), json!({"f": f64::MAX}));
    }

    #[test]
    fn integer_increments_that_overflow_are_errors_not_floats() {
        let apply = |stored: Value, by: Value| {
            let mut d = doc(json!({ "n": stored }));
            let r = Update::new()
                .inc("n", by)
                .validate()
                .and_then(|u| u.apply(&mut d, Utc::now()));
            r.map(|_| d["n"].clone())
        };
        for (stored, by) in [
            (json!(i64::MAX), json!(1)),
            (json!(i64::MIN), json!(-1)),
            (json!(u64::MAX), json!(1)),
            (json!(u64::MAX), json!(0)),
            (json!(i64::MAX as u64 + 1), json!(0)),
        ] {
            let e = apply(stored.clone(), by.clone()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(e.message().contains("overflows"), "{stored} + {by}: {e}");
        }
        // An amount outside the range is refused up front, even for a missing field.
        let msg = invalid(Update::new().inc("n", u64::MAX).validate());
        assert!(msg.contains("64-bit signed range"), "{msg}");
        // Within the range the result stays an integer, even from a u64 operand.
        assert_eq!(
            apply(json!(i64::MAX - 1), json!(1)).unwrap(),
            json!(i64::MAX)
        );
        let back = apply(json!(i64::MAX as u64 + 1), json!(-1)).unwrap();
        assert_eq!(back, json!(i64::MAX));
        assert!(back.is_i64());
        // Floats still mix as before.
        assert_eq!(
            apply(json!(u64::MAX), json!(0.5)).unwrap(),
            json!(u64::MAX as f64 + 0.5)
        );
    }
}
