//! MongoDB Extended JSON (what `mongoexport` writes, canonical or relaxed) read into the API's
//! canonical values, with the MongoDB provider's type mapping: ObjectId → its 24-hex string,
//! date → `{"$date": …}`, `$numberLong` / `$numberInt` → integers, `$numberDouble` → a float.
//! What has no canonical value is refused with the reason, as the provider refuses it: NaN and
//! the infinities (JSON has no such numbers), decimal128, binary, timestamps, regular
//! expressions and the other BSON-only types.

use chrono::{DateTime, Utc};
use datastore::value::date_value;
use serde_json::{Map, Number, Value};

/// How deep documents may nest (deeper ones are refused, not walked).
const MAX_DEPTH: usize = 100;

/// The canonical form of one Extended JSON value; `Err` says why it cannot be imported.
pub fn to_canonical(value: Value) -> Result<Value, String> {
    convert(value, 0, "")
}

fn convert(value: Value, depth: usize, at: &str) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: nests deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| convert(v, depth + 1, &format!("{at}.{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(fields) => {
            if let Some(special) = wrapper(&fields, at)? {
                return Ok(special);
            }
            let mut out = Map::with_capacity(fields.len());
            for (k, v) in fields {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let v = convert(v, depth + 1, &path)?;
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
        scalar => Ok(scalar),
    }
}

/// A type wrapper (`{"$oid": …}`, `{"$date": …}`, …) read as its value; `None` for an ordinary
/// object.
fn wrapper(fields: &Map<String, Value>, at: &str) -> Result<Option<Value>, String> {
    let Some((key, inner)) = fields.iter().next().filter(|(k, _)| k.starts_with('$')) else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(format!(
            "{}: {why}",
            if at.is_empty() { "document" } else { at }
        ))
    };
    let text = inner.as_str();
    let one = fields.len() == 1;
    match (key.as_str(), one) {
        ("$oid", true) => match text {
            Some(hex) if hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Some(Value::String(hex.to_ascii_lowercase())))
            }
            _ => bad("$oid is not 24 hex digits"),
        },
        ("$date", true) => date(inner).map(Some).or_else(|why| bad(&why)),
        ("$numberLong", true) => match text.and_then(|t| t.parse::<i64>().ok()) {
            Some(n) => Ok(Some(Value::Number(n.into()))),
            None => bad("$numberLong is not a 64-bit integer"),
        },
        ("$numberInt", true) => match text.and_then(|t| t.parse::<i32>().ok()) {
            Some(n) => Ok(Some(Value::Number(n.into()))),
            None => bad("$numberInt is not a 32-bit integer"),
        },
        ("$numberDouble", true) => match text {
            Some("NaN" | "Infinity" | "-Infinity") => bad(&format!(
                "$numberDouble {} has no JSON value, and the store keeps only finite numbers",
                text.unwrap_or_default()
            )),
            Some(t) => match t.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Ok(Some(Value::Number(n))),
                None => bad("$numberDouble is not a number"),
            },
            None => bad("$numberDouble is not a string"),
        },
        ("$numberDecimal", true) => bad(
            "decimal128 has no canonical value (the MongoDB provider refuses it too): store it \
             as a string or a double before exporting",
        ),
        ("$binary", _) | ("$uuid", true) => bad("binary data has no canonical value"),
        ("$timestamp", true) => bad(
            "a BSON timestamp is the server's internal clock, not a date: it has no canonical value",
        ),
        ("$regularExpression" | "$regex", _) => bad("a regular expression has no canonical value"),
        ("$minKey" | "$maxKey" | "$undefined" | "$symbol" | "$code" | "$dbPointer", _) => {
            bad(&format!("{key} has no canonical value"))
        }
        // Not a type wrapper: an ordinary object whose field names the import checks.
        _ => Ok(None),
    }
}

/// `$date`'s forms: an ISO-8601 string (relaxed), `{"$numberLong": "ms"}` (canonical), or a
/// number of milliseconds (mongoexport before 4.2).
fn date(inner: &Value) -> Result<Value, String> {
    let millis = match inner {
        Value::String(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("$date {s:?} is not an ISO-8601 time ({e})"))?;
            t.with_timezone(&Utc).timestamp_millis()
        }
        Value::Object(o) => match o.get("$numberLong").and_then(Value::as_str) {
            Some(ms) if o.len() == 1 => ms
                .parse::<i64>()
                .map_err(|_| "$date's $numberLong is not an integer".to_owned())?,
            _ => return Err("$date is not a time".into()),
        },
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| "$date's milliseconds are not an integer".to_owned())?,
        _ => return Err("$date is not a time".into()),
    };
    let t = DateTime::<Utc>::from_timestamp_millis(millis)
        .ok_or_else(|| format!("$date {millis} ms is out of range"))?;
    date_value(t).map_err(|e| e.message().to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_and_relaxed_forms_read_alike() {
        let canonical = json!({
            "_id": {"$oid": "6B105A82BD0EEE37B2E8862C"},
            "createdAt": {"$date": {"$numberLong": "1767323045678"}},
            "n": {"$numberLong": "9007199254740993"},
            "i": {"$numberInt": "-7"},
            "d": {"$numberDouble": "1.5"},
            "list": [{"$numberInt": "1"}, {"at": {"$date": "2026-01-02T03:04:05.678Z"}}],
            "plain": {"a": "b"}
        });
        let relaxed = json!({
            "_id": {"$oid": "6b105a82bd0eee37b2e8862c"},
            "createdAt": {"$date": "2026-01-02T03:04:05.678Z"},
            "n": 9007199254740993_i64,
            "i": -7,
            "d": 1.5,
            "list": [1, {"at": {"$date": 1767323045678_i64}}],
            "plain": {"a": "b"}
        });
        let a = to_canonical(canonical).unwrap();
        let b = to_canonical(relaxed).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["_id"], "6b105a82bd0eee37b2e8862c");
        assert_eq!(a["createdAt"], json!({"$date": "2026-01-02T03:04:05.678Z"}));
        assert_eq!(a["n"], json!(9007199254740993_i64));
    }

    #[test]
    fn values_without_a_canonical_form_are_refused_with_their_path() {
        for (bad, says) in [
            (
                json!({"x": {"$numberDouble": "NaN"}}),
                "x: $numberDouble NaN",
            ),
            (
                json!({"x": [{"$numberDouble": "-Infinity"}]}),
                "x.0: $numberDouble -Infinity",
            ),
            (json!({"x": {"$numberDecimal": "1.1"}}), "decimal128"),
            (
                json!({"x": {"$binary": {"base64": "AA==", "subType": "00"}}}),
                "binary",
            ),
            (json!({"x": {"$timestamp": {"t": 1, "i": 2}}}), "timestamp"),
            (json!({"x": {"$oid": "123"}}), "$oid"),
            (json!({"x": {"$date": "yesterday"}}), "ISO-8601"),
            (json!({"x": {"$numberLong": "1.5"}}), "64-bit"),
        ] {
            let e = to_canonical(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
