//! Document expressions: `$objectToArray`, `$arrayToObject`, `$getField`.

use serde_json::Map;

use super::expr::type_name;
use datastore_api::error::{Error, Result};
use datastore_api::value::{as_date, Value};

fn document(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(o) if as_date(v).is_none() => Some(o),
        _ => None,
    }
}

/// `$objectToArray`: `{a: 1}` is `[{k: "a", v: 1}]`; null and missing are null.
pub(crate) fn object_to_array(v: Option<&Value>) -> Result<Option<Value>> {
    let o = match v {
        None | Some(Value::Null) => return Ok(Some(Value::Null)),
        Some(v) => document(v).ok_or_else(|| {
            Error::invalid_input(format!(
                "$objectToArray requires a document, got {}",
                type_name(v)
            ))
        })?,
    };
    Ok(Some(Value::Array(
        o.iter()
            .map(|(k, v)| serde_json::json!({"k": k, "v": v}))
            .collect(),
    )))
}

/// `$arrayToObject`: an array of `[k, v]` pairs or of `{k, v}` documents (all of one form);
/// a repeated key keeps its last value; null and missing are null.
pub(crate) fn array_to_object(v: Option<&Value>) -> Result<Option<Value>> {
    let fail = |why: String| Err(Error::invalid_input(format!("$arrayToObject: {why}")));
    let items = match v {
        None | Some(Value::Null) => return Ok(Some(Value::Null)),
        Some(Value::Array(a)) => a,
        Some(v) => return fail(format!("requires an array, got {}", type_name(v))),
    };
    let pairs = matches!(items.first(), Some(Value::Array(_)));
    let mut out = Map::new();
    for item in items {
        let (k, v) = match item {
            Value::Array(kv) if pairs => match kv.as_slice() {
                [k, v] => (k, v),
                _ => return fail(format!("a pair has {} elements, not 2", kv.len())),
            },
            Value::Object(o) if !pairs && o.len() == 2 => match (o.get("k"), o.get("v")) {
                (Some(k), Some(v)) => (k, v),
                _ => return fail("a document must have exactly the fields k and v".into()),
            },
            other => {
                return fail(format!(
                    "elements must all be [k, v] pairs or all {{k, v}} documents, got {}",
                    type_name(other)
                ))
            }
        };
        let Value::String(k) = k else {
            return fail(format!("a key must be a string, got {}", type_name(k)));
        };
        // Stored documents cannot hold such keys (`$date` would turn a string into a date).
        if k.starts_with('$') || k.contains('\0') {
            return fail(format!("the key {k:?} starts with '$' or holds a NUL"));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(Some(Value::Object(out)))
}

/// `$getField`: the field `name` (a literal key, dots and `$` included) of `input`; null and
/// missing inputs are null, a missing field is missing.
pub(crate) fn get_field(name: &str, input: Option<&Value>) -> Result<Option<Value>> {
    match input {
        None | Some(Value::Null) => Ok(Some(Value::Null)),
        Some(v) => match document(v) {
            Some(o) => Ok(o.get(name).cloned()),
            None => Err(Error::invalid_input(format!(
                "$getField requires 'input' to be a document, got {}",
                type_name(v)
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_arrays_convert_both_ways() {
        let o = json!({"b": 1, "a": [2]});
        let arr = object_to_array(Some(&o)).unwrap().unwrap();
        // In the document's key order (sorted, or insertion order where serde_json keeps it).
        let mut sorted = arr.as_array().unwrap().clone();
        sorted.sort_by_key(|kv| kv["k"].to_string());
        assert_eq!(
            sorted,
            [json!({"k": "a", "v": [2]}), json!({"k": "b", "v": 1})]
        );
        assert_eq!(array_to_object(Some(&arr)).unwrap(), Some(o));
        let pairs = json!([["x", 1], ["y", 2], ["x", 3]]);
        let back = array_to_object(Some(&pairs)).unwrap().unwrap();
        assert_eq!(back, json!({"x": 3, "y": 2}));
        assert_eq!(object_to_array(None).unwrap(), Some(Value::Null));
        assert!(object_to_array(Some(&json!([1]))).is_err());
        assert!(array_to_object(Some(&json!([["x", 1], {"k": "y", "v": 2}]))).is_err());
        assert!(array_to_object(Some(&json!([[1, 2]]))).is_err());
        assert!(array_to_object(Some(&json!([["x"]]))).is_err());
        assert!(array_to_object(Some(&json!([["$date", "2026-01-01T00:00:00.000Z"]]))).is_err());
    }

    #[test]
    fn get_field_reads_a_literal_key() {
        let o = json!({"a.b": 1, "a": {"b": 2}});
        assert_eq!(get_field("a.b", Some(&o)).unwrap(), Some(json!(1)));
        assert_eq!(get_field("nope", Some(&o)).unwrap(), None);
        assert_eq!(get_field("a", None).unwrap(), Some(Value::Null));
        assert!(get_field("a", Some(&json!(3))).is_err());
    }
}
