//! MongoDB query documents (`{"healthevent.nodename": "n1", "createdAt": {"$gte": …}}`) read
//! into a [`Filter`], so that operators' queries and `$match` stages are used as written.
//! Parsing is strict: an operator or value the [`Filter`] DSL cannot express is
//! `InvalidInput` naming it, never a looser filter.

use crate::error::{Error, Result};
use crate::filter::{Filter, Scalar};
use crate::value::{as_date, Value};

impl Filter {
    /// Reads a MongoDB query document. Supported: implicit equality, `$eq $ne $gt $gte $lt
    /// $lte $in $nin $exists $not` on fields, and `$and $or $nor` at any level; values are
    /// scalars (`null`, booleans, numbers, strings, `{"$date": …}`). `$expr` is not a query
    /// operator here (an aggregation `$match` handles it).
    ///
    /// ```
    /// use datastore_api::Filter;
    /// let f = Filter::from_query_json(&serde_json::json!({
    ///     "healthevent.nodename": "node-1",
    ///     "healthevent.processingstrategy": {"$in": [1, 3]},
    /// })).unwrap();
    /// assert!(f.lower().is_ok());
    /// assert!(Filter::from_query_json(&serde_json::json!({"a": {"$regex": "x"}})).is_err());
    /// ```
    pub fn from_query_json(query: &Value) -> Result<Filter> {
        query_at(query, "query", 0)
    }
}

const MAX_DEPTH: usize = 64;

fn bad(at: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("{at}: {what}"))
}

fn query_at(query: &Value, at: &str, depth: usize) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(bad(at, format!("nests deeper than {MAX_DEPTH} levels")));
    }
    let Value::Object(fields) = query else {
        return Err(bad(at, "a query must be a document"));
    };
    let mut parts = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let here = format!("{at}.{key}");
        let part = match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Value::Array(list) = value else {
                    return Err(bad(&here, "expects an array of queries"));
                };
                if list.is_empty() {
                    return Err(bad(&here, "expects a non-empty array"));
                }
                let subs = list
                    .iter()
                    .enumerate()
                    .map(|(i, q)| query_at(q, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                match key.as_str() {
                    "$and" => Filter::And(subs),
                    "$or" => Filter::Or(subs),
                    _ => Filter::Or(subs).not(),
                }
            }
            k if k.starts_with('$') => {
                return Err(bad(&here, format!("unsupported query operator {k}")))
            }
            path => field_condition(path, value, &here)?,
        };
        parts.push(part);
    }
    Ok(all_of(parts))
}

/// The conjunction of `parts` (one part as itself).
fn all_of(mut parts: Vec<Filter>) -> Filter {
    match parts.len() {
        1 => parts.pop().unwrap_or(Filter::All),
        _ => Filter::And(parts),
    }
}

/// `{path: value}` or `{path: {$op: value, …}}`.
fn field_condition(path: &str, value: &Value, at: &str) -> Result<Filter> {
    match value {
        Value::Object(ops)
            if ops.keys().next().is_some_and(|k| k.starts_with('$'))
                && as_date(value).is_none() =>
        {
            let mut parts = Vec::with_capacity(ops.len());
            for (op, arg) in ops {
                let here = format!("{at}.{op}");
                parts.push(operator(path, op, arg, &here)?);
            }
            Ok(all_of(parts))
        }
        v => equality(path, v, at),
    }
}

/// `{path: value}` / `{path: {$eq: value}}`: an array or a document compares as a whole.
fn equality(path: &str, v: &Value, at: &str) -> Result<Filter> {
    Ok(match v {
        Value::Array(_) | Value::Object(_) if as_date(v).is_none() => {
            Filter::EqValue(path.to_owned(), v.clone())
        }
        v => Filter::Eq(path.to_owned(), scalar(v, at)?),
    })
}

fn operator(path: &str, op: &str, arg: &Value, at: &str) -> Result<Filter> {
    let p = path.to_owned();
    Ok(match op {
        "$eq" => equality(path, arg, at)?,
        "$ne" => match equality(path, arg, at)?.into_eq() {
            Ok((p, v)) => Filter::Ne(p, v),
            Err(whole) => whole.not(),
        },
        "$gt" => Filter::Gt(p, scalar(arg, at)?),
        "$gte" => Filter::Gte(p, scalar(arg, at)?),
        "$lt" => Filter::Lt(p, scalar(arg, at)?),
        "$lte" => Filter::Lte(p, scalar(arg, at)?),
        "$in" | "$nin" => {
            let Value::Array(list) = arg else {
                return Err(bad(at, "expects an array"));
            };
            // Arrays and documents in the list compare as wholes, each an `EqValue`.
            let mut values = Vec::with_capacity(list.len());
            let mut wholes = Vec::new();
            for (i, v) in list.iter().enumerate() {
                match equality(path, v, &format!("{at}[{i}]"))?.into_eq() {
                    Ok((_, s)) => values.push(s),
                    Err(whole) => wholes.push(whole),
                }
            }
            let any = if wholes.is_empty() {
                Filter::In(p, values)
            } else {
                wholes.push(Filter::In(p, values));
                Filter::Or(wholes)
            };
            if op == "$in" {
                any
            } else {
                any.not()
            }
        }
        "$exists" => match arg {
            Value::Bool(b) => Filter::Exists(p, *b),
            Value::Number(n) => Filter::Exists(p, n.as_f64() != Some(0.0)),
            _ => return Err(bad(at, "expects a boolean")),
        },
        "$not" => match arg {
            Value::Object(_) => field_condition(path, arg, at)?.not(),
            _ => return Err(bad(at, "expects an operator document")),
        },
        other => return Err(bad(at, format!("unsupported query operator {other}"))),
    })
}

/// A comparison value: what [`Scalar`] holds.
fn scalar(v: &Value, at: &str) -> Result<Scalar> {
    Ok(match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::String(s) => Scalar::String(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        v => match as_date(v) {
            Some(d) => Scalar::Date(d),
            None => {
                return Err(bad(
                    at,
                    "only null, booleans, numbers, strings and {\"$date\": …} can be compared here (not documents or arrays)",
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_what_nvsentinel_writes() {
        let f = Filter::from_query_json(&json!({
            "healthevent.nodename": "n1",
            "healthevent.isfatal": {"$ne": true},
            "$or": [{"a": {"$exists": false}}, {"a": {"$in": [1, 3]}}],
            "createdAt": {"$gte": {"$date": "2024-01-01T00:00:00Z"}, "$lt": {"$date": "2024-02-01T00:00:00Z"}},
        }))
        .unwrap();
        let doc = json!({"healthevent": {"nodename": "n1", "isfatal": false}, "a": 3,
            "createdAt": {"$date": "2024-01-05T00:00:00Z"}});
        assert!(f.lower().unwrap().matches(doc.as_object().unwrap()));
    }

    #[test]
    fn arrays_and_documents_compare_as_wholes() {
        let doc = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let f = |q: serde_json::Value| Filter::from_query_json(&q).unwrap().lower().unwrap();
        let whole = f(json!({"a": [1, 2]}));
        assert!(whole.matches(&doc(json!({"a": [1, 2]}))));
        assert!(
            whole.matches(&doc(json!({"a": [[1, 2.0], 3]}))),
            "an element equal"
        );
        assert!(!whole.matches(&doc(json!({"a": [2, 1]}))), "order matters");
        assert!(!whole.matches(&doc(json!({"a": 1}))));
        let nested = f(json!({"a.b": {"c": "x"}}));
        assert!(nested.matches(&doc(json!({"a": [{"b": {"c": "x"}}]}))));
        assert!(!nested.matches(&doc(json!({"a": {"b": {"c": "x", "d": 1}}}))));
        let listed = f(json!({"a": {"$in": [[1], 3]}}));
        assert!(listed.matches(&doc(json!({"a": [1]}))));
        assert!(listed.matches(&doc(json!({"a": 3}))));
        assert!(!listed.matches(&doc(json!({"a": 1}))));
        let not = f(json!({"a": {"$ne": [1]}}));
        assert!(not.matches(&doc(json!({}))));
        assert!(!not.matches(&doc(json!({"a": [1]}))));
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        for q in [
            json!({"a": {"$regex": "x"}}),
            json!({"$where": "1"}),
            json!({"$or": []}),
            json!([1]),
        ] {
            let e = Filter::from_query_json(&q).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{q}");
        }
    }
}
