//! Conversion between the API's canonical JSON documents and BSON.
//!
//! | API value | BSON |
//! |---|---|
//! | `_id` (24 lowercase hex digits, top level) | ObjectId |
//! | `{"$date": "…"}` | Date (milliseconds) |
//! | integer | Int64 (Int32 is read as an integer too) |
//! | float | Double |
//! | string, bool, null, array, object | the same |
//!
//! Integers above `i64::MAX` have no BSON integer type and are rejected as invalid input.
//! BSON types the API has no value for (binary, decimal, regex, …), which only a foreign
//! writer can store, are a permanent error naming the field.

use chrono::{DateTime, TimeZone, Utc};
use datastore_api::value::{as_date, date_value, ID_FIELD};
use datastore_api::{Document, DocumentId, Error, Result, Scalar, Value};
use mongodb::bson::{self, oid::ObjectId, Bson};

/// Hidden top-level field holding the idempotency key of documents inserted with
/// [`insert_idempotent`](datastore_api::Collection::insert_idempotent) (unique, partial index).
/// It is never returned to callers.
pub(crate) const IDEMPOTENCY_FIELD: &str = "_idempotencyKey";

/// A document id as an ObjectId.
pub(crate) fn object_id(id: &DocumentId) -> Result<ObjectId> {
    ObjectId::parse_str(id.as_str())
        .map_err(|_| Error::invalid_input(format!("document id {id} is not an ObjectId")))
}

/// A BSON date from a UTC time (millisecond precision, as stored).
pub(crate) fn bson_date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// A UTC time from a BSON date.
pub(crate) fn chrono_date(d: bson::DateTime) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(d.timestamp_millis())
        .single()
        .ok_or_else(|| Error::permanent("stored date is out of range"))
}

/// The BSON form of a canonical API document; a top-level `_id` string becomes an ObjectId.
pub(crate) fn to_bson_document(doc: &Document) -> Result<bson::Document> {
    let mut out = bson::Document::new();
    for (k, v) in doc {
        let b = if k == ID_FIELD {
            match v {
                Value::String(s) => Bson::ObjectId(object_id(&DocumentId::parse(s)?)?),
                other => to_bson(other)?,
            }
        } else {
            to_bson(v)?
        };
        out.insert(k.clone(), b);
    }
    Ok(out)
}

/// The BSON form of one canonical value.
pub(crate) fn to_bson(v: &Value) -> Result<Bson> {
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Bson::Int64(i)
            } else if n.is_u64() {
                return Err(Error::invalid_input(format!(
                    "integer {n} is above the 64-bit signed range MongoDB stores"
                )));
            } else {
                Bson::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<Result<_>>()?),
        Value::Object(o) => match as_date(v) {
            Some(t) => Bson::DateTime(bson_date(t)),
            None => {
                let mut d = bson::Document::new();
                for (k, v) in o {
                    d.insert(k.clone(), to_bson(v)?);
                }
                Bson::Document(d)
            }
        },
    })
}

/// The BSON form of a filter scalar.
pub(crate) fn scalar_to_bson(s: &Scalar) -> Bson {
    match s {
        Scalar::Null => Bson::Null,
        Scalar::Bool(b) => Bson::Boolean(*b),
        Scalar::Int(i) => Bson::Int64(*i),
        Scalar::Float(f) => Bson::Double(*f),
        Scalar::String(s) => Bson::String(s.clone()),
        Scalar::Date(t) => Bson::DateTime(bson_date(*t)),
    }
}

/// The API document of a stored BSON document: ObjectIds become hex strings, dates
/// `{"$date"}` values, and the hidden idempotency key is dropped.
pub(crate) fn from_bson_document(doc: bson::Document) -> Result<Document> {
    let mut out = Document::new();
    for (k, v) in doc {
        if k == IDEMPOTENCY_FIELD {
            continue;
        }
        let value = from_bson(v, &k)?;
        out.insert(k, value);
    }
    Ok(out)
}

/// The API value of one BSON value; `at` names the field in errors.
pub(crate) fn from_bson(v: Bson, at: &str) -> Result<Value> {
    Ok(match v {
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| {
                Error::permanent(format!("field '{at}' holds {f}, not a finite number"))
            })?,
        Bson::String(s) => Value::String(s),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(d) => date_value(chrono_date(d)?)?,
        Bson::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| from_bson(i, at))
                .collect::<Result<_>>()?,
        ),
        Bson::Document(d) => {
            let mut o = Document::new();
            for (k, v) in d {
                let child = format!("{at}.{k}");
                o.insert(k, from_bson(v, &child)?);
            }
            Value::Object(o)
        }
        other => {
            return Err(Error::permanent(format!(
                "field '{at}' holds a BSON {:?} value, which the datastore API cannot represent",
                other.element_type()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Document {
        match v {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trips_every_canonical_type() {
        let d = doc(json!({
            "_id": "65a1b2c3d4e5f60718293a4b",
            "n": null, "t": true, "i": -3, "big": i64::MAX, "f": 2.0, "g": -2.5e-8,
            "s": "é😀", "when": {"$date": "2024-01-02T03:04:05.678Z"},
            "arr": [1, "x", {"k": [2.5]}], "o": {"deep": {"x": 1}}
        }));
        let b = to_bson_document(&d).unwrap();
        assert!(matches!(b.get("_id"), Some(Bson::ObjectId(_))));
        assert!(matches!(b.get("when"), Some(Bson::DateTime(_))));
        assert!(matches!(b.get("i"), Some(Bson::Int64(-3))));
        assert!(matches!(b.get("f"), Some(Bson::Double(_))));
        let back = from_bson_document(b).unwrap();
        assert_eq!(back, d);
        // 2.0 stays a float, not the integer 2.
        assert!(back["f"].is_f64());
    }

    #[test]
    fn rejects_unrepresentable_values_with_the_field_name() {
        let err = to_bson(&json!(u64::MAX)).unwrap_err();
        assert_eq!(err.kind(), datastore_api::ErrorKind::InvalidInput);
        let mut d = bson::Document::new();
        d.insert(
            "x",
            bson::doc! { "y": Bson::Decimal128(bson::Decimal128::from_bytes([0; 16])) },
        );
        let err = from_bson_document(d).unwrap_err();
        assert!(err.message().contains("x.y"), "{err}");
    }

    #[test]
    fn hides_the_idempotency_key() {
        let d = bson::doc! { "a": 1, IDEMPOTENCY_FIELD: "k" };
        let out = from_bson_document(d).unwrap();
        assert_eq!(Value::Object(out), json!({"a": 1}));
    }
}
