//! The model's own application of updates: a deliberately plain second implementation of the
//! API's update rules (the providers share `datastore_api`'s), so a mistake in either shows up
//! as a difference. Only the validation (paths parsed, values canonical) is the API's.
//!
//! Rules: `Set` writes, creating missing parents as objects; a parent that holds anything but
//! an object (a date included) is an error. `Unset` removes, and is no change when a parent is
//! missing or not an object. `Inc` adds to a number or creates it; integers stay integers and
//! must fit in 64 bits. `Push` appends to an array or creates `[value]`. `CurrentDate` writes
//! the server time (milliseconds) as a date or as `{seconds, nanos}`. Any error leaves the
//! document as it was.
//!
//! Changed paths are reported as MongoDB's change events do: a path whose parent the original
//! document lacked as its topmost missing field, a push onto an existing array as the new
//! element's index, a write that leaves the value as it was not at all.

use chrono::{DateTime, Utc};
use datastore_api::value::{equivalent, is_date};
use datastore_api::{Document, Error, Result, ValidOp, ValidUpdate, Value};
use serde_json::{Map, Number};

/// What an update did to one document.
pub(crate) struct Applied {
    /// The document afterwards.
    pub(crate) document: Document,
    /// Paths reported as updated.
    pub(crate) updated: Vec<String>,
    /// Paths reported as removed.
    pub(crate) removed: Vec<String>,
}

/// Applies `update` to a copy of `doc` at server time `now`; `None` when nothing changed.
pub(crate) fn apply(
    update: &ValidUpdate,
    doc: &Document,
    now: DateTime<Utc>,
) -> Result<Option<Applied>> {
    let mut root = Value::Object(doc.clone());
    let mut updated: Vec<String> = Vec::new();
    let mut removed = Vec::new();
    for (path, op) in update.ops() {
        let segments: Vec<&str> = path.segments().iter().map(String::as_str).collect();
        let before = lookup(&Value::Object(doc.clone()), &segments).cloned();
        let old_len = match &before {
            Some(Value::Array(items)) => Some(items.len()),
            _ => None,
        };
        match op {
            ValidOp::Unset => {
                if unset(&mut root, &segments) && before.is_some() {
                    removed.push(path.to_string());
                }
                continue;
            }
            ValidOp::Set(v) => write(&mut root, &segments, path.as_str(), |_| Ok(v.clone()))?,
            ValidOp::CurrentDate(format) => {
                let t = datastore_api::value::truncate_to_millis(now);
                let v = match format {
                    datastore_api::TimeFormat::Date => datastore_api::value::date_value(t)?,
                    datastore_api::TimeFormat::ProtoTimestamp => serde_json::json!({
                        "seconds": t.timestamp(),
                        "nanos": t.timestamp_subsec_nanos(),
                    }),
                };
                write(&mut root, &segments, path.as_str(), |_| Ok(v.clone()))?
            }
            ValidOp::Inc(n) => write(&mut root, &segments, path.as_str(), |old| match old {
                None => Ok(Value::Number(n.clone())),
                Some(Value::Number(o)) => sum(o, n).map(Value::Number),
                Some(_) => Err(Error::invalid_input(format!("{path} is not a number"))),
            })?,
            ValidOp::Push(v) => write(&mut root, &segments, path.as_str(), |old| match old {
                None => Ok(Value::Array(vec![v.clone()])),
                Some(Value::Array(items)) => {
                    let mut items = items.clone();
                    items.push(v.clone());
                    Ok(Value::Array(items))
                }
                Some(_) => Err(Error::invalid_input(format!("{path} is not an array"))),
            })?,
        }
        let after = lookup(&root, &segments);
        let missing_parent = (1..segments.len())
            .find(|&k| lookup(&Value::Object(doc.clone()), &segments[..k]).is_none());
        let reported = match (missing_parent, op, old_len) {
            (Some(k), _, _) => Some(segments[..k].join(".")),
            (None, ValidOp::Push(_), Some(len)) => Some(format!("{path}.{len}")),
            (None, _, _) => match (&before, after) {
                (Some(b), Some(a)) if equivalent(b, a) => None,
                _ => Some(path.to_string()),
            },
        };
        if let Some(p) = reported {
            if !updated.contains(&p) {
                updated.push(p);
            }
        }
    }
    let Value::Object(document) = root else {
        return Err(Error::permanent(
            "the model's document stopped being an object",
        ));
    };
    let same = document.len() == doc.len()
        && document
            .iter()
            .all(|(k, v)| doc.get(k).is_some_and(|o| equivalent(o, v)));
    Ok((!same).then_some(Applied {
        document,
        updated,
        removed,
    }))
}

/// The value at `segments`, through objects only (dates are values).
fn lookup<'a>(root: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    segments.iter().try_fold(root, |cur, s| match cur {
        Value::Object(o) if !is_date(cur) => o.get(*s),
        _ => None,
    })
}

/// Replaces the value at `segments` with `new(old)`, creating missing parents.
fn write(
    root: &mut Value,
    segments: &[&str],
    path: &str,
    new: impl FnOnce(Option<&Value>) -> Result<Value>,
) -> Result<()> {
    let mut cur = root;
    for (i, s) in segments.iter().enumerate() {
        if is_date(cur) || !cur.is_object() {
            return Err(Error::invalid_input(format!(
                "cannot write {path}: {} is not an object",
                segments[..i].join(".")
            )));
        }
        let Value::Object(map) = cur else {
            unreachable!("checked above")
        };
        if i + 1 == segments.len() {
            let value = new(map.get(*s))?;
            map.insert((*s).to_owned(), value);
            return Ok(());
        }
        cur = map
            .entry((*s).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// Removes the value at `segments`; whether something was there.
fn unset(root: &mut Value, segments: &[&str]) -> bool {
    let (last, parents) = match segments.split_last() {
        Some(split) => split,
        None => return false,
    };
    let mut cur = root;
    for s in parents {
        match cur {
            Value::Object(o) if !is_date(&Value::Object(o.clone())) => match o.get_mut(*s) {
                Some(next) => cur = next,
                None => return false,
            },
            _ => return false,
        }
    }
    match cur {
        Value::Object(o) => o.remove(*last).is_some(),
        _ => false,
    }
}

/// `a + b`: integers stay integers (and must fit in 64 bits), anything else is a float.
fn sum(a: &Number, b: &Number) -> Result<Number> {
    let int = |n: &Number| n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        return i64::try_from(x + y)
            .map(Number::from)
            .map_err(|_| Error::invalid_input("integer increment overflows"));
    }
    let f = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
    Number::from_f64(f).ok_or_else(|| Error::invalid_input("increment gives no finite number"))
}
