//! Documents, values, dates and document ids in the canonical stored shape.
//!
//! A document is a JSON object ([`Document`]). Dates are stored the way MongoDB's relaxed
//! extended JSON writes a BSON date, `{"$date": "2024-05-01T12:00:00.000Z"}`, always with
//! millisecond precision and a fixed width, so that every backend orders them as time.
//! Keys may not be empty, contain NUL, or start with `$` (except the `$date` wrapper); arrays may
//! not directly contain arrays. Keys may contain `.` (label-style metadata keys), but such fields
//! cannot be addressed by field paths.

use std::cmp::Ordering;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
pub use serde_json::{json, Map, Number, Value};

use crate::error::{Error, Result};

/// A stored document: a JSON object in the canonical shape.
pub type Document = Map<String, Value>;

/// The key of the date wrapper object.
pub const DATE_KEY: &str = "$date";
/// The reserved top-level key holding the document id.
pub const ID_FIELD: &str = "_id";
/// The reserved top-level key holding the server-assigned insert time.
pub const CREATED_AT_FIELD: &str = "createdAt";

/// Truncates a time to the millisecond precision every backend stores.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or(t)
}

/// Formats a date in the canonical fixed-width form (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
///
/// Fails for years outside 0..=9999, which no backend can order as text.
pub fn format_date(t: DateTime<Utc>) -> Result<String> {
    use chrono::Datelike;
    if !(0..=9999).contains(&t.year()) {
        return Err(Error::invalid_input(format!(
            "date {t} is outside the supported years 0000-9999"
        )));
    }
    Ok(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The canonical JSON value of a date: `{"$date": "…"}` at millisecond precision.
///
/// ```
/// use datastore_api::value::date_value;
/// use chrono::{TimeZone, Utc};
/// let v = date_value(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()).unwrap();
/// assert_eq!(v, serde_json::json!({"$date": "2024-05-01T12:00:00.000Z"}));
/// ```
pub fn date_value(t: DateTime<Utc>) -> Result<Value> {
    let mut m = Map::new();
    m.insert(DATE_KEY.to_owned(), Value::String(format_date(t)?));
    Ok(Value::Object(m))
}

/// Reads a date wrapper (`{"$date": "…"}`); `None` for any other value.
pub fn as_date(v: &Value) -> Option<DateTime<Utc>> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let s = obj.get(DATE_KEY)?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// True when `v` is a date wrapper object.
pub fn is_date(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key(DATE_KEY))
}

/// Checks a document for the canonical shape and rewrites dates to the fixed-width form.
///
/// Rejects keys that are empty, contain NUL, or start with `$`, arrays nested directly in arrays,
/// and date wrappers that are malformed. Reserved top-level keys (`_id`, `createdAt`) are checked by the caller.
///
/// Values nested deeper than [`MAX_DEPTH`] are rejected; the recursion stops there.
pub fn canonicalize(value: &mut Value) -> Result<()> {
    canonicalize_at(value, &mut String::new(), 0)
}

/// [`canonicalize`] for a whole document: its top-level names are checked like every other,
/// since a document is never a date wrapper (`{"$date": …}` is a field named `$date`, refused).
pub(crate) fn canonicalize_document(doc: &mut Document) -> Result<()> {
    canonicalize_fields(doc, &mut String::new(), 0)
}

/// The deepest nesting a stored value may have. The value itself is at level 0 and whatever is
/// inside an object or array is one level deeper than the container; anything at a level above
/// 64 is rejected with [`InvalidInput`](crate::ErrorKind::InvalidInput) (the string inside a
/// date wrapper does not count). Documents to insert and update values are checked against it
/// without recursion before anything recurses into them, so even a value nested millions of
/// levels deep is rejected cleanly instead of overflowing the stack.
pub const MAX_DEPTH: usize = 64;

/// The error for a `what` (a document, a value) nested deeper than [`MAX_DEPTH`].
pub(crate) fn too_deep(what: &str) -> Error {
    Error::invalid_input(format!(
        "{what} nests deeper than {MAX_DEPTH} levels, the limit for stored values"
    ))
}

/// Checks that `value` nests no deeper than [`MAX_DEPTH`] levels, by the same rule as
/// [`canonicalize`], but without recursion (an explicit stack), so it is safe on any value
/// however deep. An [`InvalidInput`](crate::ErrorKind::InvalidInput) error names the limit.
pub fn check_depth(value: &Value) -> Result<()> {
    if exceeds_max_depth(value) {
        return Err(too_deep("value"));
    }
    Ok(())
}

/// True when some value inside `root` is more than [`MAX_DEPTH`] levels below it.
pub(crate) fn exceeds_max_depth(root: &Value) -> bool {
    nests_deeper_than(std::iter::once(root), 0, MAX_DEPTH)
}

/// True when some value inside `roots` (each at level `start`) is at a level above `limit`.
/// Without recursion, so it is safe on any value however deep. Every object and array is
/// entered, whatever its keys, except a well-formed date wrapper (`{"$date": "<text>"}`, its
/// string does not count as a level).
pub fn nests_deeper_than<'a>(
    roots: impl Iterator<Item = &'a Value>,
    start: usize,
    limit: usize,
) -> bool {
    let mut stack: Vec<(&Value, usize)> = roots.map(|r| (r, start)).collect();
    while let Some((v, depth)) = stack.pop() {
        if depth > limit {
            return true;
        }
        match v {
            Value::Object(o) if is_date_wrapper(o) => {}
            Value::Object(o) => stack.extend(o.values().map(|c| (c, depth + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    false
}

/// The largest document stored, in bytes of its BSON encoding: MongoDB's limit (16 MiB),
/// held on every provider so that a document one accepts the other does too.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The size of `body` encoded as BSON with its `_id` (an ObjectId) and `createdAt` (a date),
/// as MongoDB measures it against [`MAX_DOCUMENT_BYTES`]: an upper bound (every number
/// counted as 8 bytes). Without recursion.
pub fn bson_size(body: &Document) -> usize {
    // The document's length and terminator, `_id` and `createdAt` elements.
    let mut total = 5 + (2 + ID_FIELD.len() + 12) + (2 + CREATED_AT_FIELD.len() + 8);
    let mut stack: Vec<(usize, &Value)> = body.iter().map(|(k, v)| (k.len(), v)).collect();
    while let Some((key_len, v)) = stack.pop() {
        // Type byte, key, its NUL.
        total = total.saturating_add(2 + key_len);
        total = total.saturating_add(match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 8,
            Value::String(s) => 5 + s.len(),
            Value::Object(o) if is_date_wrapper(o) => 8,
            Value::Object(o) => {
                stack.extend(o.iter().map(|(k, c)| (k.len(), c)));
                5
            }
            Value::Array(items) => {
                stack.extend(items.iter().enumerate().map(|(i, c)| (decimal_len(i), c)));
                5
            }
        });
    }
    total
}

/// How many digits `i` has in decimal (an array element's BSON key).
fn decimal_len(i: usize) -> usize {
    i.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Refuses a body whose BSON size passes [`MAX_DOCUMENT_BYTES`].
pub(crate) fn check_document_size(body: &Document) -> Result<()> {
    let size = bson_size(body);
    if size > MAX_DOCUMENT_BYTES {
        return Err(Error::invalid_input(format!(
            "the document is {size} bytes as BSON, more than MongoDB's 16 MiB document limit \
             ({MAX_DOCUMENT_BYTES} bytes); store large data elsewhere and keep a reference"
        )));
    }
    Ok(())
}

/// Refuses a document (`what` names it) with a value more than [`MAX_DEPTH`] levels deep,
/// before anything copies or walks it recursively.
pub fn check_document_depth(doc: &Document, what: &str) -> Result<()> {
    if nests_deeper_than(doc.values(), 1, MAX_DEPTH) {
        return Err(too_deep(what));
    }
    Ok(())
}

/// `{"$date": <string>}` and nothing else.
fn is_date_wrapper(o: &Document) -> bool {
    o.len() == 1 && o.get(DATE_KEY).is_some_and(Value::is_string)
}

/// Drops `value` without recursion. Dropping a [`Value`] the ordinary way recurses once per
/// level of nesting, so a value nested deep enough (hundreds of thousands of levels, built
/// programmatically: the JSON parser stops at 128) overflows the stack when dropped; this takes
/// it apart level by level instead.
pub fn drop_iteratively(value: Value) {
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return;
    }
    let mut stack = vec![value];
    while let Some(mut v) = stack.pop() {
        match &mut v {
            Value::Array(items) => stack.append(items),
            Value::Object(o) => stack.extend(std::mem::take(o).into_iter().map(|(_, c)| c)),
            _ => {}
        }
        // `v` has no children left: dropping it does not recurse.
    }
}

/// The fields of the document at `at` (at `depth`): names checked, values canonicalized.
fn canonicalize_fields(obj: &mut Document, at: &mut String, depth: usize) -> Result<()> {
    for (key, child) in obj.iter_mut() {
        check_key(key, at)?;
        let len = at.len();
        if !at.is_empty() {
            at.push('.');
        }
        at.push_str(key);
        canonicalize_at(child, at, depth + 1)?;
        at.truncate(len);
    }
    Ok(())
}

fn canonicalize_at(value: &mut Value, at: &mut String, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep("document"));
    }
    match value {
        Value::Object(obj) => {
            if obj.contains_key(DATE_KEY) {
                let t = if obj.len() == 1 { as_date(value) } else { None };
                let Some(t) = t else {
                    return Err(Error::invalid_input(format!(
                        "malformed date at '{at}': expected {{\"$date\": \"<RFC 3339 time>\"}}"
                    )));
                };
                *value = date_value(t)?;
                return Ok(());
            }
            canonicalize_fields(obj, at, depth)
        }
        Value::Array(items) => {
            for item in items {
                if item.is_array() {
                    return Err(Error::invalid_input(format!(
                        "array at '{at}' contains an array: nested arrays are not supported"
                    )));
                }
                canonicalize_at(item, at, depth + 1)?;
            }
            Ok(())
        }
        // MongoDB stores 64-bit signed integers: a larger one is refused everywhere.
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => {
            Err(Error::invalid_input(format!(
                "integer {n} at '{at}' is above the 64-bit signed range MongoDB stores: store it \
                 as a string, or as a double if precision may be lost"
            )))
        }
        Value::String(s) if s.contains('\0') => Err(Error::invalid_input(format!(
            "string at '{at}' contains a NUL character"
        ))),
        _ => Ok(()),
    }
}

fn check_key(key: &str, at: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('$') || key.contains('\0') {
        return Err(Error::invalid_input(format!(
            "invalid field name {key:?} under '{at}': names must be non-empty and may not contain NUL or start with '$'"
        )));
    }
    Ok(())
}

/// The sort bracket of a value, following MongoDB's cross-type order:
/// null/missing < numbers < strings < objects < arrays < booleans < dates.
pub fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(v @ Value::Object(_)) if is_date(v) => 9,
        Some(Value::Object(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Bool(_)) => 8,
    }
}

/// Compares two numbers exactly (no rounding through `f64` when an integer is involved).
pub fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => compare_int_float(x, b.as_f64().unwrap_or(0.0)),
        (None, Some(y)) => compare_int_float(y, a.as_f64().unwrap_or(0.0)).reverse(),
        (None, None) => {
            let x = a.as_f64().unwrap_or(0.0);
            let y = b.as_f64().unwrap_or(0.0);
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// Compares an integer with a float the way JSON text (and PostgreSQL's `numeric`) means them:
/// the float stands for the decimal of its shortest round-trip form (`9.223372036854776e18` is
/// `9223372036854776000`), and that decimal is compared exactly.
pub fn compare_int_float(i: i128, f: f64) -> Ordering {
    let text = format!("{f}"); // shortest round-trip digits, never an exponent
    let (int_part, frac) = text.split_once('.').unwrap_or((&text, ""));
    let negative = text.starts_with('-');
    let fraction = frac.bytes().any(|b| b != b'0');
    match int_part.parse::<i128>() {
        Ok(whole) => match i.cmp(&whole) {
            // Same integer part: the fraction decides (it pulls the float away from zero).
            Ordering::Equal if fraction => {
                if negative {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            o => o,
        },
        Err(_) if negative => Ordering::Greater,
        Err(_) => Ordering::Less,
    }
}

/// Values reached by `path`, as MongoDB resolves a path: objects are entered by key; an array
/// met on the way is entered one level, taking the key from each object element, and a segment
/// that is an array index (`0`, `12`: digits without a leading zero) also takes that element of
/// the array. So `a.0` reaches the first element of an array `a`, the field `"0"` of an object
/// `a`, and the field `"0"` of objects inside an array `a`.
pub fn values_at<'a>(doc: &'a Document, path: &crate::path::FieldPath) -> Vec<&'a Value> {
    let mut current: Vec<&Value> = Vec::new();
    let segs = path.segments();
    match doc.get(&segs[0]) {
        Some(v) => current.push(v),
        None => return current,
    }
    for seg in &segs[1..] {
        let index = array_index(seg);
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(o) if !is_date(v) => next.extend(o.get(seg)),
                Value::Array(items) => {
                    next.extend(index.and_then(|i| items.get(i)));
                    for item in items {
                        if let Value::Object(o) = item {
                            if !is_date(item) {
                                next.extend(o.get(seg));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

/// The array index a path segment names, if it is one: decimal digits, no leading zero (as
/// MongoDB reads positional path components).
pub fn array_index(segment: &str) -> Option<usize> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    canonical.then(|| segment.parse().ok()).flatten()
}

/// The total order used for sorting: by [`type_rank`], then within a bracket numbers
/// numerically, strings by UTF-8 bytes, booleans false < true, dates by time. Objects and
/// arrays compare equal within their bracket (ties are broken by the document id).
pub fn sort_compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => compare_numbers(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) if ra == 9 => as_date(x).cmp(&as_date(y)),
        _ => Ordering::Equal,
    }
}

/// Semantic equality of stored values: numbers compare numerically (`1 == 1.0`), objects by
/// their key set and values, arrays element-wise.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equivalent(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equivalent(v, w)))
        }
        _ => a == b,
    }
}

/// Deduplicates values (numerically equal numbers count once) and sorts them by
/// [`sort_compare`], then by their JSON text, so every backend returns the same list.
pub fn distinct_values(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by(|a, b| {
        sort_compare(Some(a), Some(b)).then_with(|| a.to_string().cmp(&b.to_string()))
    });
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for v in values {
        let dup = out
            .iter()
            .rev()
            .take_while(|k| sort_compare(Some(k), Some(&v)) == Ordering::Equal)
            .any(|k| equivalent(k, &v));
        if !dup {
            out.push(v);
        }
    }
    out
}

/// Flattens one level of arrays (how `distinct` counts array fields).
pub fn unwrap_arrays(values: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Value::Array(items) => out.extend(items),
            v => out.push(v),
        }
    }
    out
}

/// [`equivalent`] for two documents.
pub fn equivalent_documents(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| equivalent(v, w)))
}

/// A document id: 12 bytes shown as 24 lowercase hex digits, in MongoDB ObjectId layout
/// (4-byte seconds, 5 random bytes per process, 3-byte counter), so ids sort roughly by
/// creation time on every backend.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentId(String);

impl DocumentId {
    /// A new, unique id.
    pub fn generate() -> Self {
        static PROCESS: OnceLock<[u8; 5]> = OnceLock::new();
        static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
        let process = PROCESS.get_or_init(rand::random);
        let counter = COUNTER
            .get_or_init(|| AtomicU32::new(rand::random::<u32>() & 0x00ff_ffff))
            .fetch_add(1, AtomicOrdering::Relaxed);
        let secs = Utc::now().timestamp() as u32;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..9].copy_from_slice(process);
        bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        let mut s = String::with_capacity(24);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        DocumentId(s)
    }

    /// Parses a 24-hex-digit id (upper or lower case; stored lowercase).
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(DocumentId(s.to_ascii_lowercase()))
        } else {
            Err(Error::invalid_input(format!(
                "invalid document id {s:?}: expected 24 hexadecimal digits"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({})", self.0)
    }
}

impl TryFrom<String> for DocumentId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        DocumentId::parse(&s)
    }
}

impl From<DocumentId> for String {
    fn from(id: DocumentId) -> String {
        id.0
    }
}

impl std::str::FromStr for DocumentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DocumentId::parse(s)
    }
}

/// Serde helpers for `DateTime<Utc>` fields stored as `{"$date": "…"}`.
pub mod serde_date {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Serializes a date as `{"$date": "…"}`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        date_value(*t)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    /// Deserializes `{"$date": "…"}` (or a bare RFC 3339 string) into a date.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let v = Value::deserialize(d)?;
        parse(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a date, got {v}")))
    }

    pub(crate) fn parse(v: &Value) -> Option<DateTime<Utc>> {
        as_date(v).or_else(|| {
            v.as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
        })
    }

    /// The same for `Option<DateTime<Utc>>`, stored as the date or `null`.
    pub mod option {
        use super::*;

        /// Serializes `Some(t)` as a date and `None` as `null`.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Deserializes a date, `null` or a missing field.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let v = Value::deserialize(d)?;
            if v.is_null() {
                return Ok(None);
            }
            super::parse(&v)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("expected a date, got {v}")))
        }
    }
}

/// Follows `path` through objects; through an array, collects the path from each element
/// (MongoDB's `"$a.b"` over `a: [{b: 1}, {b: 2}]` is `[1, 2]`).
pub fn expr_walk(start: Option<&Value>, path: &[String]) -> Option<Value> {
    let Some((first, rest)) = path.split_first() else {
        return start.cloned();
    };
    match start? {
        Value::Object(o) => expr_walk(o.get(first), rest),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter(|i| i.is_object())
                .filter_map(|i| expr_walk(Some(i), path))
                .collect(),
        )),
        _ => None,
    }
}

/// Total order of values: BSON type order, then within the type (arrays and documents
/// element by element). Missing sorts with null.
pub fn expr_compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    // Scalars and brackets as sorting orders them; arrays and documents, which sorting
    // leaves equal within their bracket, element by element.
    match (a, b) {
        // In expressions missing sorts before null.
        (None, Some(Value::Null)) => return Ordering::Less,
        (Some(Value::Null), None) => return Ordering::Greater,
        _ => {}
    }
    let o = sort_compare(a, b);
    if o != Ordering::Equal {
        return o;
    }
    match (a, b) {
        (Some(Value::Array(x)), Some(Value::Array(y))) => x
            .iter()
            .zip(y)
            .map(|(p, q)| expr_compare(Some(p), Some(q)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Some(Value::Object(x)), Some(Value::Object(y))) if type_rank(a) == 4 => x
            .iter()
            .zip(y)
            .map(|((kp, p), (kq, q))| kp.cmp(kq).then_with(|| expr_compare(Some(p), Some(q))))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_rewrites_dates_to_fixed_width() {
        let mut v = json!({"a": {"$date": "2024-01-02T03:04:05Z"}, "b": [{"$date": "2024-01-02T03:04:05.123456+01:00"}]});
        canonicalize(&mut v).unwrap();
        assert_eq!(v["a"], json!({"$date": "2024-01-02T03:04:05.000Z"}));
        assert_eq!(v["b"][0], json!({"$date": "2024-01-02T02:04:05.123Z"}));
    }

    #[test]
    fn canonicalize_rejects_bad_keys_and_dates() {
        for bad in [
            json!({"a": [[1]]}),
            json!({"": 1}),
            json!({"$set": 1}),
            json!({"x": {"$date": "nope"}}),
            json!({"x": {"$date": "2024-01-01T00:00:00Z", "y": 1}}),
            json!({"x": "nul\u{0}"}),
        ] {
            let mut v = bad.clone();
            let e = canonicalize(&mut v).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn ids_are_unique_and_parse() {
        let a = DocumentId::generate();
        let b = DocumentId::generate();
        assert_ne!(a, b);
        assert_eq!(DocumentId::parse(a.as_str()).unwrap(), a);
        assert!(DocumentId::parse("xyz").is_err());
    }

    #[test]
    fn sort_order_follows_type_brackets() {
        let vals = [
            None,
            Some(json!(1)),
            Some(json!(2.5)),
            Some(json!("a")),
            Some(json!({"k": 1})),
            Some(json!([1])),
            Some(json!(false)),
            Some(json!(true)),
            Some(json!({"$date": "2024-01-01T00:00:00.000Z"})),
        ];
        for w in vals.windows(2) {
            assert_eq!(
                sort_compare(w[0].as_ref(), w[1].as_ref()),
                Ordering::Less,
                "{:?}",
                w
            );
        }
        assert!(equivalent(&json!({"a": 1}), &json!({"a": 1.0})));
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;

    #[test]
    fn ints_and_floats_compare_as_their_json_decimals() {
        assert_eq!(compare_int_float(2, 2.5), Ordering::Less);
        assert_eq!(compare_int_float(3, 2.5), Ordering::Greater);
        assert_eq!(compare_int_float(-2, -2.5), Ordering::Greater);
        assert_eq!(compare_int_float(-3, -2.5), Ordering::Less);
        assert_eq!(compare_int_float(2, 2.0), Ordering::Equal);
        assert_eq!(
            compare_int_float(9_223_372_036_854_776_000, 9.223372036854776e18),
            Ordering::Equal
        );
        assert_eq!(
            compare_int_float(i128::from(i64::MAX), 9.223372036854776e18),
            Ordering::Less
        );
        assert_eq!(compare_int_float(0, 1e300), Ordering::Less);
        assert_eq!(compare_int_float(0, -1e300), Ordering::Greater);
        assert_eq!(compare_int_float(0, -0.0), Ordering::Equal);
    }
}
