//! Binding `"this.<path>"` placeholders into a pipeline's JSON, aware of where each value
//! lands: in an expression a bound value must stay data, in a query it already is.

use datastore_api::error::Result;
use datastore_api::value::Value;

/// A resolver of placeholder paths.
pub(super) type Resolve<'a> = &'a dyn Fn(&str) -> Result<Value>;

/// Binds every stage of a pipeline.
fn stages(stages: &[Value], resolve: Resolve<'_>) -> Result<Vec<Value>> {
    stages.iter().map(|s| stage(s, resolve)).collect()
}

/// The placeholder paths (`<path>` of `"this.<path>"`) anywhere in `stages`, in order.
pub(super) fn placeholders(stages: &[Value]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut todo: Vec<&Value> = stages.iter().rev().collect();
    while let Some(v) = todo.pop() {
        match v {
            Value::String(s) => out.extend(s.strip_prefix("this.")),
            Value::Array(items) => todo.extend(items.iter().rev()),
            Value::Object(o) => todo.extend(o.values().rev()),
            _ => {}
        }
    }
    out
}

/// Binds one stage.
pub(super) fn stage(v: &Value, resolve: Resolve<'_>) -> Result<Value> {
    let Value::Object(o) = v else {
        return Ok(v.clone());
    };
    o.iter()
        .map(|(name, spec)| {
            let bound = match (name.as_str(), spec) {
                ("$match", _) => query(spec, resolve)?,
                ("$lookup", Value::Object(l)) => Value::Object(
                    l.iter()
                        .map(|(k, x)| {
                            Ok((
                                k.clone(),
                                match (k.as_str(), x) {
                                    ("pipeline", Value::Array(sub)) => {
                                        Value::Array(stages(sub, resolve)?)
                                    }
                                    ("let", _) => expression(x, resolve)?,
                                    _ => x.clone(),
                                },
                            ))
                        })
                        .collect::<Result<_>>()?,
                ),
                _ => expression(spec, resolve)?,
            };
            Ok((name.clone(), bound))
        })
        .collect::<Result<serde_json::Map<_, _>>>()
        .map(Value::Object)
}

/// A query document: `$expr` holds an expression, `$and`/`$or`/`$nor` hold queries, every
/// other value is data.
fn query(v: &Value, resolve: Resolve<'_>) -> Result<Value> {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| {
                let bound = match (k.as_str(), x) {
                    ("$expr", _) => expression(x, resolve)?,
                    ("$and" | "$or" | "$nor", Value::Array(list)) => Value::Array(
                        list.iter()
                            .map(|q| query(q, resolve))
                            .collect::<Result<_>>()?,
                    ),
                    _ => data(x, resolve)?,
                };
                Ok((k.clone(), bound))
            })
            .collect::<Result<serde_json::Map<_, _>>>()
            .map(Value::Object),
        other => data(other, resolve),
    }
}

/// Placeholders anywhere in `v`, bound as they are.
fn data(v: &Value, resolve: Resolve<'_>) -> Result<Value> {
    map_placeholders(v, resolve, &|bound| bound)
}

/// Placeholders anywhere in `v`, bound as literals where an expression could read more.
fn expression(v: &Value, resolve: Resolve<'_>) -> Result<Value> {
    map_placeholders(v, resolve, &|bound| {
        if expression_like(&bound) {
            serde_json::json!({ "$literal": bound })
        } else {
            bound
        }
    })
}

fn map_placeholders(
    v: &Value,
    resolve: Resolve<'_>,
    wrap: &dyn Fn(Value) -> Value,
) -> Result<Value> {
    Ok(match v {
        Value::String(s) => match s.strip_prefix("this.") {
            Some(path) => wrap(resolve(path)?),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| map_placeholders(i, resolve, wrap))
                .collect::<Result<_>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), map_placeholders(x, resolve, wrap)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Whether `v` would be read as more than data in an expression: a `$` string, a document
/// that is not a date, or an array holding one.
fn expression_like(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with('$'),
        Value::Object(_) => datastore_api::value::as_date(v).is_none(),
        Value::Array(items) => items.iter().any(expression_like),
        _ => false,
    }
}
