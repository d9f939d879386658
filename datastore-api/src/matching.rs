//! Lowered filters evaluated in memory, with the semantics the providers' servers apply
//! (MongoDB's): for a provider that must decide part of a filter itself, on a document it built
//! (the MongoDB provider's computed post-images).
//!
//! Semantics, as in [`Lowered`]'s documentation: a comparison holds when some value at the
//! path, or an element of an array there, compares with the operator inside its type bracket
//! (numbers across integer and float, strings by bytes, booleans, dates); other types never
//! compare.

use std::cmp::Ordering;

use serde_json::Number;

use crate::filter::{Lowered, Scalar};
use crate::path::FieldPath;
use crate::value::{
    as_date, compare_numbers, equivalent, expr_compare, expr_walk, values_at, Document, Value,
};

impl Lowered {
    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Document) -> bool {
        match self {
            Lowered::True => true,
            Lowered::False => false,
            Lowered::Cmp { path, op, value } => {
                reached(doc, path).any(|v| scalar_order(v, value).is_some_and(|o| op.accepts(o)))
            }
            // Missing means no value at all (an empty array is a value); null may be an element.
            Lowered::NullOrMissing(path) => {
                values_at(doc, path).is_empty() || reached(doc, path).any(Value::is_null)
            }
            Lowered::Exists(path) => !values_at(doc, path).is_empty(),
            Lowered::EqValue { path, value } => values_at(doc, path).into_iter().any(|v| {
                equivalent(v, value)
                    || matches!(v, Value::Array(items) if items.iter().any(|i| equivalent(i, value)))
            }),
            Lowered::ExprCmp { path, op, value } => {
                op.accepts(compare_at(doc, path, value))
            }
            Lowered::Not(inner) => !inner.matches(doc),
            Lowered::And(parts) => parts.iter().all(|p| p.matches(doc)),
            Lowered::Or(parts) => parts.iter().any(|p| p.matches(doc)),
        }
    }

    /// Whether some condition of the filter is on a path that `pick` selects.
    pub fn mentions(&self, pick: &dyn Fn(&FieldPath) -> bool) -> bool {
        match self {
            Lowered::True | Lowered::False => false,
            Lowered::Cmp { path, .. }
            | Lowered::ExprCmp { path, .. }
            | Lowered::EqValue { path, .. }
            | Lowered::NullOrMissing(path)
            | Lowered::Exists(path) => pick(path),
            Lowered::Not(inner) => inner.mentions(pick),
            Lowered::And(parts) | Lowered::Or(parts) => parts.iter().any(|p| p.mentions(pick)),
        }
    }

    /// A filter that matches at least what this one matches, without the conditions on paths
    /// that `unknown` selects: each becomes whichever of true and false cannot exclude a
    /// document (true, or false under an odd number of negations). A provider lets its server
    /// evaluate this superset and decides the rest itself with [`Lowered::matches`].
    pub fn relaxed(&self, unknown: &dyn Fn(&FieldPath) -> bool) -> Lowered {
        self.relaxed_as(unknown, true)
    }

    fn relaxed_as(&self, unknown: &dyn Fn(&FieldPath) -> bool, positive: bool) -> Lowered {
        let open = if positive {
            Lowered::True
        } else {
            Lowered::False
        };
        match self {
            Lowered::Cmp { path, .. }
            | Lowered::ExprCmp { path, .. }
            | Lowered::EqValue { path, .. }
            | Lowered::NullOrMissing(path)
            | Lowered::Exists(path)
                if unknown(path) =>
            {
                open
            }
            Lowered::Not(inner) => match inner.relaxed_as(unknown, !positive) {
                Lowered::True => Lowered::False,
                Lowered::False => Lowered::True,
                other => Lowered::Not(Box::new(other)),
            },
            Lowered::And(parts) => {
                let parts = parts.iter().map(|p| p.relaxed_as(unknown, positive));
                joined(parts, Lowered::True, Lowered::False, Lowered::And)
            }
            Lowered::Or(parts) => {
                let parts = parts.iter().map(|p| p.relaxed_as(unknown, positive));
                joined(parts, Lowered::False, Lowered::True, Lowered::Or)
            }
            other => other.clone(),
        }
    }
}

/// The conjunction or disjunction of `parts`: `identity` members dropped, `absorbing` if any
/// member is, `identity` for no members, the member itself for one, else `join` of them
/// (`And`/`Or` keep at least two members).
fn joined(
    parts: impl Iterator<Item = Lowered>,
    identity: Lowered,
    absorbing: Lowered,
    join: fn(Vec<Lowered>) -> Lowered,
) -> Lowered {
    let mut kept: Vec<Lowered> = Vec::new();
    for part in parts {
        if part == absorbing {
            return absorbing;
        }
        if part != identity {
            kept.push(part);
        }
    }
    match kept.len() {
        0 => identity,
        1 => kept.pop().unwrap_or(identity),
        _ => join(kept),
    }
}

/// The values a path reaches, with arrays there examined one level deep.
fn reached<'a>(doc: &'a Document, path: &FieldPath) -> impl Iterator<Item = &'a Value> {
    values_at(doc, path).into_iter().flat_map(|v| match v {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        v => vec![v],
    })
}

/// How a stored value orders against a filter value of its type bracket; `None` across
/// brackets.
fn scalar_order(v: &Value, s: &Scalar) -> Option<Ordering> {
    match (v, s) {
        (Value::Number(n), Scalar::Int(i)) => Some(compare_numbers(n, &Number::from(*i))),
        (Value::Number(n), Scalar::Float(f)) => {
            Number::from_f64(*f).map(|f| compare_numbers(n, &f))
        }
        (Value::String(a), Scalar::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        (v, Scalar::Date(t)) => as_date(v).map(|d| d.cmp(t)),
        _ => None,
    }
}

/// How the value an expression reads at `path` in `doc` orders against the number `value`
/// (what [`Filter::ExprCmp`] compares).
fn compare_at(doc: &Document, path: &FieldPath, value: &Scalar) -> std::cmp::Ordering {
    let number = match value {
        Scalar::Int(i) => Value::from(*i),
        Scalar::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        _ => Value::Null,
    };
    let segments = path.segments();
    let here = segments
        .split_first()
        .and_then(|(head, rest)| expr_walk(doc.get(head), rest));
    expr_compare(here.as_ref(), Some(&number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Filter;
    use serde_json::json;

    fn doc(v: serde_json::Value) -> Document {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn comparisons_follow_type_brackets_and_arrays() {
        let d = doc(json!({"n": 1, "s": "b", "list": [3, "x", {"k": 1}], "z": null, "e": []}));
        let yes = [
            Filter::eq("n", 1.0),
            Filter::gt("s", "a"),
            Filter::eq("list", 3),
            Filter::eq("list", "x"),
            Filter::eq("list.k", 1),
            Filter::eq("z", Option::<i64>::None),
            Filter::eq("missing", Option::<i64>::None),
            Filter::exists("z", true),
            Filter::ne("n", 2),
            Filter::ne("e", Option::<i64>::None),
        ];
        let no = [
            Filter::gt("n", "a"),
            Filter::lt("s", 5),
            Filter::eq("list", 4),
            Filter::exists("missing", true),
            Filter::eq("n", Option::<i64>::None),
            Filter::eq("e", Option::<i64>::None),
        ];
        for f in yes {
            assert!(f.lower().unwrap().matches(&d), "{f:?}");
        }
        for f in no {
            assert!(!f.lower().unwrap().matches(&d), "{f:?}");
        }
    }

    #[test]
    fn relaxing_keeps_a_superset() {
        let unknown = |p: &FieldPath| p.as_str().starts_with("fullDocument.");
        let f = Filter::eq("operationType", "update")
            .and(Filter::eq("fullDocument.a", 1).not())
            .or(Filter::eq("operationType", "insert").and(Filter::eq("fullDocument.b", 2)))
            .lower()
            .unwrap();
        assert!(f.mentions(&unknown));
        let relaxed = f.relaxed(&unknown);
        assert!(!relaxed.mentions(&unknown));
        // Whatever fullDocument holds, an update or an insert passes the relaxed filter, and
        // a delete does not.
        for op in ["update", "insert"] {
            for full in [json!({"a": 1, "b": 2}), json!({"a": 2}), json!({})] {
                let event = doc(json!({"operationType": op, "fullDocument": full}));
                assert!(relaxed.matches(&event), "{op} {full}");
                if f.matches(&event) {
                    assert!(relaxed.matches(&event));
                }
            }
        }
        assert!(!relaxed.matches(&doc(json!({"operationType": "delete"}))));
        assert_eq!(
            Filter::eq("fullDocument.a", 1)
                .lower()
                .unwrap()
                .relaxed(&unknown),
            Lowered::True
        );
        assert_eq!(
            Filter::eq("fullDocument.a", 1)
                .not()
                .lower()
                .unwrap()
                .relaxed(&unknown),
            Lowered::True
        );
    }
}
