//! Compiles lowered filters ([`Lowered`]) to MongoDB query documents.
//!
//! The API's filter semantics are MongoDB's, so most of the translation is direct. Three
//! places need care so that every server gives exactly the API's answer:
//! - `NullOrMissing` is `{$or: [{p: {$exists: false}}, {p: {$type: "null"}}]}` rather than
//!   `{p: null}`: the latter also matches an array of objects where one element lacks the
//!   field, which the API's rule ("no value reached, or a null reached") does not.
//! - Document ids are ObjectIds in MongoDB and 24-hex-digit strings in the API. Equality with a
//!   canonical id string compares the ObjectId; any other string can equal no id. A range
//!   against a string becomes a range against the nearest ObjectId bound, because ObjectIds
//!   order exactly like their lowercase hex strings.
//! - `True`/`False` have no literal, so they are `{}` and `{_id: {$in: []}}`.

use datastore_api::{CmpOp, FieldPath, Lowered, Result, Scalar};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};

use crate::convert::scalar_to_bson;

/// Which paths hold document ids (ObjectIds) in the documents being filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Stored documents: `_id`.
    Documents,
    /// Change events as the API shows them to filters: `documentKey._id`, `fullDocument._id`.
    ChangeEvents,
}

impl Target {
    fn is_id_path(self, path: &FieldPath) -> bool {
        let s = path.as_str();
        match self {
            Target::Documents => s == "_id",
            Target::ChangeEvents => s == "documentKey._id" || s == "fullDocument._id",
        }
    }
}

/// Compiles a lowered filter.
pub(crate) fn compile(filter: &Lowered, target: Target) -> Result<Document> {
    Ok(match filter {
        Lowered::True => Document::new(),
        Lowered::False => nothing(),
        Lowered::Cmp { path, op, value } => {
            if target.is_id_path(path) {
                if let Scalar::String(s) = value {
                    return Ok(id_comparison(path.as_str(), *op, s));
                }
            }
            doc! { path.as_str(): { operator(*op): scalar_to_bson(value) } }
        }
        Lowered::NullOrMissing(path) => doc! { "$or": [
            { path.as_str(): { "$exists": false } },
            { path.as_str(): { "$type": "null" } },
        ] },
        Lowered::Exists(path) => doc! { path.as_str(): { "$exists": true } },
        // Ids are ObjectIds: never arrays or documents.
        Lowered::EqValue { path, .. } if target.is_id_path(path) => nothing(),
        Lowered::EqValue { path, value } => {
            doc! { path.as_str(): { "$eq": crate::convert::to_bson(value)? } }
        }
        Lowered::ExprCmp { path, op, value } => doc! {
            "$expr": { operator(*op): [format!("${}", path.as_str()), scalar_to_bson(value)] }
        },
        Lowered::Not(inner) => doc! { "$nor": [compile(inner, target)?] },
        Lowered::And(parts) => doc! { "$and": compile_all(parts, target)? },
        Lowered::Or(parts) => doc! { "$or": compile_all(parts, target)? },
    })
}

fn compile_all(parts: &[Lowered], target: Target) -> Result<Vec<Bson>> {
    parts
        .iter()
        .map(|p| compile(p, target).map(Bson::Document))
        .collect()
}

fn nothing() -> Document {
    doc! { "_id": { "$in": [] } }
}

fn operator(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "$eq",
        CmpOp::Gt => "$gt",
        CmpOp::Gte => "$gte",
        CmpOp::Lt => "$lt",
        CmpOp::Lte => "$lte",
    }
}

/// `id <op> s` over ids, where ids are exactly the 24-lowercase-hex-digit strings.
fn id_comparison(path: &str, op: CmpOp, s: &str) -> Document {
    let bound = match op {
        CmpOp::Eq => is_id(s.as_bytes()).then(|| ("$eq", s.to_owned())),
        CmpOp::Gte => min_id_at_least(s.as_bytes()).map(|h| ("$gte", h)),
        CmpOp::Gt => min_id_above(s.as_bytes()).map(|h| ("$gte", h)),
        CmpOp::Lte => max_id_at_most(s.as_bytes()).map(|h| ("$lte", h)),
        CmpOp::Lt => max_id_below(s.as_bytes()).map(|h| ("$lte", h)),
    };
    match bound.and_then(|(o, h)| ObjectId::parse_str(&h).ok().map(|oid| (o, oid))) {
        Some((o, oid)) => doc! { path: { o: oid } },
        None => nothing(),
    }
}

const ID_LEN: usize = 24;
const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

fn is_id(s: &[u8]) -> bool {
    s.len() == ID_LEN && s.iter().copied().all(is_hex)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// `prefix` (hex digits) plus one in its last digit, carrying; `None` if all digits are `f`.
fn increment(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    for i in (0..v.len()).rev() {
        let d = HEX.iter().position(|&h| h == v[i]).unwrap_or(15);
        if d < 15 {
            v[i] = HEX[d + 1];
            return Some(v);
        }
        v[i] = b'0';
    }
    None
}

/// `prefix` (hex digits) minus one in its last digit, borrowing; `None` if all digits are `0`.
fn decrement(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    for i in (0..v.len()).rev() {
        let d = HEX.iter().position(|&h| h == v[i]).unwrap_or(0);
        if d > 0 {
            v[i] = HEX[d - 1];
            return Some(v);
        }
        v[i] = b'f';
    }
    None
}

fn pad(mut v: Vec<u8>, with: u8) -> String {
    v.resize(ID_LEN, with);
    text(v)
}

/// The smallest id `>= s`.
fn min_id_at_least(s: &[u8]) -> Option<String> {
    for i in 0..ID_LEN {
        let Some(&c) = s.get(i) else {
            // `s` is a proper prefix of every id extending it, all of which are greater.
            return Some(pad(s.to_vec(), b'0'));
        };
        if is_hex(c) {
            continue;
        }
        return match HEX.iter().find(|&&h| h > c) {
            Some(&d) => {
                let mut v = s[..i].to_vec();
                v.push(d);
                Some(pad(v, b'0'))
            }
            None => increment(&s[..i]).map(|v| pad(v, b'0')),
        };
    }
    if s.len() == ID_LEN {
        Some(text(s.to_vec()))
    } else {
        // The first 24 bytes are an id smaller than `s` (a proper prefix of it).
        increment(&s[..ID_LEN]).map(text)
    }
}

/// The smallest id `> s`.
fn min_id_above(s: &[u8]) -> Option<String> {
    if is_id(s) {
        increment(s).map(text)
    } else {
        min_id_at_least(s)
    }
}

/// The largest id `<= s`.
fn max_id_at_most(s: &[u8]) -> Option<String> {
    for i in 0..ID_LEN {
        let Some(&c) = s.get(i) else {
            // Every id extending `s` is greater, so the answer precedes the prefix.
            return decrement(s).map(|v| pad(v, b'f'));
        };
        if is_hex(c) {
            continue;
        }
        return match HEX.iter().rev().find(|&&h| h < c) {
            Some(&d) => {
                let mut v = s[..i].to_vec();
                v.push(d);
                Some(pad(v, b'f'))
            }
            None => decrement(&s[..i]).map(|v| pad(v, b'f')),
        };
    }
    Some(text(s[..ID_LEN].to_vec()))
}

/// The largest id `< s`.
fn max_id_below(s: &[u8]) -> Option<String> {
    if is_id(s) {
        decrement(s).map(text)
    } else {
        max_id_at_most(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore_api::Filter;

    /// Brute force over a small alphabet agrees with the bound functions.
    #[test]
    fn id_bounds_match_byte_order() {
        let samples: Vec<String> = [
            "",
            "0",
            "a",
            "g",
            "A",
            "~",
            "é",
            "00000000000000000000000",
            "ffffffffffffffffffffffff",
            "fffffffffffffffffffffffff",
            "000000000000000000000000",
            "0000000000000000000000000",
            "65a1b2c3d4e5f60718293a4b",
            "65a1b2c3d4e5f60718293a4",
            "65a1b2c3d4e5f60718293a4bz",
            "65a1g",
            "65a1/",
            "65a1:",
            "f~",
            "/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Candidate ids near every sample (the bounds must be among them or absent).
        for s in &samples {
            let b = s.as_bytes();
            let check = |got: Option<String>, pred: &dyn Fn(&[u8]) -> bool, smallest: bool| {
                if let Some(h) = &got {
                    assert!(is_id(h.as_bytes()), "{s:?} -> {h:?}");
                    assert!(pred(h.as_bytes()), "{s:?} -> {h:?}");
                    // Its neighbour on the other side fails the predicate.
                    let next = if smallest {
                        decrement(h.as_bytes())
                    } else {
                        increment(h.as_bytes())
                    };
                    if let Some(n) = next {
                        assert!(!pred(&n), "{s:?} -> {h:?} is not the extreme");
                    }
                } else {
                    let edge = if smallest {
                        vec![b'f'; ID_LEN]
                    } else {
                        vec![b'0'; ID_LEN]
                    };
                    assert!(!pred(&edge), "{s:?}: no bound but {edge:?} qualifies");
                }
            };
            check(min_id_at_least(b), &|h: &[u8]| h >= b, true);
            check(min_id_above(b), &|h: &[u8]| h > b, true);
            check(max_id_at_most(b), &|h: &[u8]| h <= b, false);
            check(max_id_below(b), &|h: &[u8]| h < b, false);
        }
    }

    #[test]
    fn null_or_missing_does_not_use_null_equality() {
        let l = Filter::eq("a.b", Scalar::Null).lower().unwrap();
        let d = compile(&l, Target::Documents).unwrap();
        assert_eq!(
            d,
            doc! { "$or": [ { "a.b": { "$exists": false } }, { "a.b": { "$type": "null" } } ] }
        );
    }

    #[test]
    fn ids_compare_as_object_ids() {
        let id = "65a1b2c3d4e5f60718293a4b";
        let d = compile(&Filter::eq("_id", id).lower().unwrap(), Target::Documents).unwrap();
        assert_eq!(
            d,
            doc! { "_id": { "$eq": ObjectId::parse_str(id).unwrap() } }
        );
        let d = compile(
            &Filter::eq("_id", "nope").lower().unwrap(),
            Target::Documents,
        )
        .unwrap();
        assert_eq!(d, nothing());
        // Other paths keep strings.
        let d = compile(&Filter::eq("x._id", id).lower().unwrap(), Target::Documents).unwrap();
        assert_eq!(d, doc! { "x._id": { "$eq": id } });
    }
}
