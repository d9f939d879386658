//! The analyzer's `"this.<path>"` placeholders, resolved as NVSentinel's Go parser resolves
//! them (`health-events-analyzer/pkg/parser/parser.go`): on the event *struct*, not as a
//! MongoDB expression path.
//!
//! - Segments name struct fields case-insensitively; at least two segments (`this.healthevent`
//!   alone is an error); an unknown field is an error.
//! - A numeric segment on a list *indexes* it (`this.healthevent.errorcode.0` is the first
//!   code); out of range (or negative) is `null`, a non-numeric segment an error.
//! - A field the stored document lacks has its Go zero value (`""`, `false`, `0`; `null` for a
//!   list or a message, and walking on into a missing message is an error).
//! - Map keys (`metadata`, `spanids`) are exact; a missing key is an error.
//! - The value then makes Go's JSON round trip: every number becomes a double, a message
//!   becomes a document of its non-empty fields, and every document key is lower-cased.

use datastore_api::error::{Error, Result};
use datastore_api::value::{Document, Value};

/// What a field of the event struct is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Num,
    /// `[]string`.
    Strings,
    /// A `map[string]string`.
    Map,
    /// A pointer to a message.
    Message(Msg),
    /// A list of pointers to messages.
    Messages(Msg),
    /// A `time.Time` (the wrapper's `createdAt`): nothing inside it is reachable.
    Time,
}

/// The messages of `HealthEventWithStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Root,
    HealthEvent,
    Status,
    Entity,
    Timestamp,
    Overrides,
    OperationStatus,
    BoolValue,
}

/// The fields of a message, by their stored (lower-case) names.
fn fields(msg: Msg) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match msg {
        Msg::Root => &[
            ("createdat", Time),
            ("healthevent", Message(Msg::HealthEvent)),
            ("healtheventstatus", Message(Msg::Status)),
        ],
        Msg::HealthEvent => &[
            ("version", Num),
            ("agent", Str),
            ("componentclass", Str),
            ("checkname", Str),
            ("isfatal", Bool),
            ("ishealthy", Bool),
            ("message", Str),
            ("recommendedaction", Num),
            ("errorcode", Strings),
            ("entitiesimpacted", Messages(Msg::Entity)),
            ("metadata", Map),
            ("generatedtimestamp", Message(Msg::Timestamp)),
            ("nodename", Str),
            ("quarantineoverrides", Message(Msg::Overrides)),
            ("drainoverrides", Message(Msg::Overrides)),
            ("processingstrategy", Num),
            ("id", Str),
            ("customrecommendedaction", Str),
        ],
        Msg::Status => &[
            ("nodequarantined", Str),
            ("quarantinefinishtimestamp", Message(Msg::Timestamp)),
            ("userpodsevictionstatus", Message(Msg::OperationStatus)),
            ("drainfinishtimestamp", Message(Msg::Timestamp)),
            ("faultremediated", Message(Msg::BoolValue)),
            ("lastremediationtimestamp", Message(Msg::Timestamp)),
            ("spanids", Map),
        ],
        Msg::Entity => &[("entitytype", Str), ("entityvalue", Str)],
        Msg::Timestamp => &[("seconds", Num), ("nanos", Num)],
        Msg::Overrides => &[("force", Bool), ("skip", Bool)],
        Msg::OperationStatus => &[("status", Str), ("message", Str)],
        Msg::BoolValue => &[("value", Bool)],
    }
}

fn failed(path: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!(
        "analyzer: cannot resolve \"this.{path}\" on the event: {why}"
    ))
}

/// The value of `this.<path>` for `event` (a stored health-event document), as the Go
/// analyzer binds it.
pub fn resolve(event: &Document, path: &str) -> Result<Value> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.len() < 2 {
        return Err(failed(
            path,
            "a path names a field of healthevent or healtheventstatus (two segments at least)",
        ));
    }
    let mut kind = Kind::Message(Msg::Root);
    // The value at the path so far; `None` is a field the stored document lacks (or null).
    let mut here: Option<&Value> = None;
    let mut at_root = true;
    for seg in &segments {
        match kind {
            Kind::Message(msg) => {
                let holder = match (at_root, here) {
                    (true, _) => event,
                    (false, Some(Value::Object(o))) => o,
                    // A nil message with path left: Go's "invalid value".
                    _ => return Err(failed(path, format!("{seg}: the value before it is nil"))),
                };
                let Some((name, next)) = fields(msg)
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(seg))
                else {
                    return Err(failed(path, format!("no field {seg:?}")));
                };
                at_root = false;
                kind = *next;
                here = holder.get(*name).filter(|v| !v.is_null());
            }
            Kind::Strings | Kind::Messages(_) => {
                let index: i64 = seg
                    .parse()
                    .map_err(|_| failed(path, format!("{seg:?} is not an index of a list")))?;
                let item = match here {
                    Some(Value::Array(items)) => usize::try_from(index)
                        .ok()
                        .and_then(|i| items.get(i))
                        .filter(|v| !v.is_null()),
                    Some(_) => return Err(failed(path, "the stored value is not a list")),
                    None => None,
                };
                // Out of range is nil, as in the analyzer (and MongoDB's $arrayElemAt).
                let Some(item) = item else {
                    return Ok(Value::Null);
                };
                kind = match kind {
                    Kind::Messages(m) => Kind::Message(m),
                    _ => Kind::Str,
                };
                here = Some(item);
            }
            Kind::Map => {
                let value = match here {
                    Some(Value::Object(o)) => o.get(*seg),
                    _ => None,
                };
                let Some(value) = value else {
                    return Err(failed(path, format!("no key {seg:?} in the map")));
                };
                kind = Kind::Str;
                here = Some(value);
            }
            Kind::Str | Kind::Bool | Kind::Num | Kind::Time => {
                return Err(failed(
                    path,
                    format!("{seg}: the value before it has no fields"),
                ))
            }
        }
    }
    Ok(normalized(kind, here))
}

/// Go's JSON round trip of the resolved value: numbers become doubles, messages keep their
/// non-empty fields, document keys are lower-cased; a missing value is the zero value.
fn normalized(kind: Kind, value: Option<&Value>) -> Value {
    match (kind, value) {
        (Kind::Str, None) => Value::String(String::new()),
        (Kind::Bool, None) => Value::Bool(false),
        (Kind::Num, None) => double(0.0),
        (Kind::Time, _) | (_, None) => Value::Null,
        (Kind::Message(msg), Some(Value::Object(o))) => message(msg, o),
        (Kind::Messages(msg), Some(Value::Array(items))) => Value::Array(
            items
                .iter()
                .map(|i| match i {
                    Value::Object(o) => message(msg, o),
                    _ => Value::Null,
                })
                .collect(),
        ),
        (_, Some(v)) => json_round_trip(v),
    }
}

/// A message as `encoding/json` writes it (every proto field is `omitempty`).
fn message(msg: Msg, stored: &Document) -> Value {
    let mut out = Document::new();
    for (name, kind) in fields(msg) {
        let v = normalized(*kind, stored.get(*name).filter(|v| !v.is_null()));
        if !empty(&v) {
            out.insert((*name).to_owned(), v);
        }
    }
    Value::Object(out)
}

/// `omitempty`: false, 0, "", nil, and an empty list or map.
fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn double(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Numbers as doubles and keys lower-cased, all the way down.
fn json_round_trip(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, double),
        Value::Array(items) => Value::Array(items.iter().map(json_round_trip).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.to_lowercase(), json_round_trip(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Document {
        let v = json!({
            "_id": "abc",
            "healthevent": {
                "nodename": "node-7",
                "errorcode": ["119", "x"],
                "entitiesimpacted": [
                    {"entitytype": "GPU_UUID", "entityvalue": "GPU-1"},
                    {"entitytype": "PCI", "entityvalue": ""}
                ],
                "generatedtimestamp": {"seconds": 1_700_000_000, "nanos": 0},
                "metadata": {"Trace_ID": "t"},
                "isfatal": true,
                "processingstrategy": 1
            },
            "healtheventstatus": {"faultremediated": null}
        });
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn numeric_segments_index_lists() {
        let e = event();
        assert_eq!(
            resolve(&e, "healthevent.errorcode.0").unwrap(),
            json!("119")
        );
        assert_eq!(resolve(&e, "healthevent.errorcode.1").unwrap(), json!("x"));
        assert_eq!(resolve(&e, "healthevent.errorcode.9").unwrap(), json!(null));
        assert_eq!(
            resolve(&e, "healthevent.errorcode.-1").unwrap(),
            json!(null)
        );
        assert!(resolve(&e, "healthevent.errorcode.first").is_err());
        assert_eq!(
            resolve(&e, "healthevent.entitiesimpacted.0.entityvalue").unwrap(),
            json!("GPU-1")
        );
    }

    #[test]
    fn field_names_are_case_insensitive_and_numbers_doubles() {
        let e = event();
        assert_eq!(
            resolve(&e, "HealthEvent.NodeName").unwrap(),
            json!("node-7")
        );
        let seconds = resolve(&e, "healthevent.generatedtimestamp.seconds").unwrap();
        assert!(seconds.is_f64());
        assert_eq!(seconds.as_f64(), Some(1.7e9));
        assert_eq!(
            resolve(&e, "healthevent.processingstrategy").unwrap(),
            json!(1.0)
        );
    }

    #[test]
    fn missing_fields_are_zero_values_unknown_ones_errors() {
        let e = event();
        assert_eq!(resolve(&e, "healthevent.checkname").unwrap(), json!(""));
        assert_eq!(resolve(&e, "healthevent.ishealthy").unwrap(), json!(false));
        assert_eq!(resolve(&e, "healthevent.version").unwrap(), json!(0.0));
        assert_eq!(
            resolve(&e, "healthevent.drainoverrides").unwrap(),
            json!(null)
        );
        assert!(resolve(&e, "healthevent.drainoverrides.force").is_err());
        assert!(resolve(&e, "healthevent.nosuchfield").is_err());
        assert!(resolve(&e, "healthevent").is_err());
        assert!(resolve(&e, "createdat").is_err());
        assert!(resolve(&e, "healthevent.nodename.x").is_err());
        assert!(resolve(&e, "healtheventstatus.faultremediated.value").is_err());
    }

    #[test]
    fn maps_are_exact_and_messages_drop_empty_fields() {
        let e = event();
        assert_eq!(
            resolve(&e, "healthevent.metadata.Trace_ID").unwrap(),
            json!("t")
        );
        assert!(resolve(&e, "healthevent.metadata.trace_id").is_err());
        assert_eq!(
            resolve(&e, "healthevent.entitiesimpacted").unwrap(),
            json!([{"entitytype": "GPU_UUID", "entityvalue": "GPU-1"}, {"entitytype": "PCI"}])
        );
        assert_eq!(
            resolve(&e, "healthevent.generatedtimestamp").unwrap(),
            json!({"seconds": 1.7e9})
        );
        assert_eq!(
            resolve(&e, "healthevent.metadata").unwrap(),
            json!({"trace_id": "t"})
        );
    }
}
