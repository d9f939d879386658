//! The backend-neutral filter DSL.
//!
//! Semantics follow MongoDB's query language, and every provider must match them exactly
//! (the conformance suite checks this against an in-memory reference model):
//!
//! - A path is resolved through nested objects. When a value on the way (or at the end) is an
//!   array, its elements are examined one level deep: `Eq("a.b", 1)` matches `{"a": [{"b": 1}]}`
//!   and `Eq("a", 1)` matches `{"a": [1, 2]}`. (Arrays nested in arrays are not searched.)
//! - Comparisons only match values of the same type bracket: numbers compare numerically
//!   (`1 == 1.0`), strings by their UTF-8 bytes, booleans `false < true`, dates as time. `Gt("a", 5)`
//!   never matches a string.
//! - `Eq(path, Null)` matches a missing field and an explicit `null`. `Ne` is the exact negation of
//!   `Eq`, so `Ne("a", 1)` matches documents without `a`. `Nin` negates `In`. `Gte`/`Lte` with
//!   `Null` behave as `Eq(path, Null)`; `Gt`/`Lt` with `Null` match nothing.
//! - `Exists(path, true)` matches when the path resolves to any value, `null` included.
//! - `And([])` matches everything, `Or([])` nothing, `In(path, [])` nothing.
//! - `_id` is the document id (a string) and `createdAt` the server-assigned insert time (a date).
//!
//! Values always travel to the backend as bound parameters; a malformed path is an
//! [`InvalidInput`](crate::ErrorKind::InvalidInput) error.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::path::FieldPath;
use crate::value::truncate_to_millis;

/// Filters drop without recursion: a caller can chain `Filter::not` (or nest `and`/`or`)
/// deeper than the stack holds, and the derived drop would recurse once per level. Each
/// filter's children are moved onto a list and dropped from it, childless.
impl Drop for Filter {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        take_children(self, &mut pending);
        while let Some(mut f) = pending.pop() {
            take_children(&mut f, &mut pending);
            // `f` has no children left: its own drop ends at once.
        }
    }
}

/// Moves the sub-filters of `f` onto `into`, leaving `f` without any.
fn take_children(f: &mut Filter, into: &mut Vec<Filter>) {
    match f {
        Filter::Not(inner) => into.push(std::mem::replace(&mut **inner, Filter::All)),
        Filter::And(parts) | Filter::Or(parts) => into.append(parts),
        _ => {}
    }
}

/// A scalar value to compare against.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// JSON `null` (also matches a missing field in `Eq`).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number (must be finite).
    Float(f64),
    /// A string.
    String(String),
    /// A date (compared at millisecond precision).
    Date(DateTime<Utc>),
}

macro_rules! scalar_from {
    ($($t:ty => $variant:ident via $conv:expr),* $(,)?) => {
        $(impl From<$t> for Scalar {
            fn from(v: $t) -> Self { Scalar::$variant($conv(v)) }
        })*
    };
}

scalar_from! {
    bool => Bool via |v| v,
    i32 => Int via i64::from,
    i64 => Int via |v| v,
    u32 => Int via i64::from,
    f64 => Float via |v| v,
    &str => String via str::to_owned,
    String => String via |v| v,
    &String => String via String::clone,
    DateTime<Utc> => Date via |v| v,
    f32 => Float via f64::from,
    &crate::value::DocumentId => String via |v: &crate::value::DocumentId| v.to_string(),
}

impl<T: Into<Scalar>> From<Option<T>> for Scalar {
    fn from(v: Option<T>) -> Self {
        v.map_or(Scalar::Null, Into::into)
    }
}

/// A filter over documents. Build with the constructor functions and combine with
/// [`and`](Filter::and), [`or`](Filter::or) and [`not`](Filter::not).
///
/// ```
/// use datastore_api::Filter;
/// let f = Filter::eq("healthevent.nodename", "node-1")
///     .and(Filter::ne("healthevent.agent", "health-events-analyzer"))
///     .and(Filter::is_in("healthevent.processingstrategy", [1, 3]).or(Filter::exists("healthevent.processingstrategy", false)));
/// assert!(f.lower().is_ok());
/// assert!(Filter::eq("bad..path", 1).lower().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches every document.
    All,
    /// Field equals value (or an array field contains it).
    Eq(String, Scalar),
    /// Negation of [`Filter::Eq`].
    Ne(String, Scalar),
    /// Field greater than value (same type bracket only).
    Gt(String, Scalar),
    /// Field greater than or equal to value.
    Gte(String, Scalar),
    /// Field less than value.
    Lt(String, Scalar),
    /// Field less than or equal to value.
    Lte(String, Scalar),
    /// Field equals any of the values.
    In(String, Vec<Scalar>),
    /// Negation of [`Filter::In`].
    Nin(String, Vec<Scalar>),
    /// The field is present (`true`) or absent (`false`).
    Exists(String, bool),
    /// Logical negation.
    Not(Box<Filter>),
    /// All sub-filters match.
    And(Vec<Filter>),
    /// At least one sub-filter matches.
    Or(Vec<Filter>),
    /// `{$expr: {$<op>: ["$<path>", <number>]}}`: the value an aggregation expression reads at
    /// the path compares with a number in BSON type order, without type brackets or array
    /// matching. Missing and `null` sort before every number; strings, documents, arrays
    /// (also one met on the way: `"$a.b"` over an array `a` is an array), booleans and dates
    /// after. What an aggregation's `$expr` time window pushes down (see
    /// the `datastore-query` crate's `Plan`); the value must be a finite number.
    ExprCmp(String, CmpOp, Scalar),
    /// Field equals an array or a document, with MongoDB's equality: the value there is
    /// equal (arrays element by element, numbers by value, documents field by field), or is
    /// an array holding an element equal to it. Documents compare without field order
    /// (PostgreSQL's JSONB keeps none; MongoDB's order-sensitive comparison agrees whenever
    /// both sides list their fields in the same order, as documents written through this
    /// API do). A date (`{"$date": …}`) is a [`Scalar::Date`] for [`Filter::Eq`] instead.
    EqValue(String, crate::value::Value),
}

impl Filter {
    /// `path == value`.
    pub fn eq(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Eq(path.into(), value.into())
    }
    /// `path == value` for an array or document `value` (see [`Filter::EqValue`]).
    pub fn eq_value(path: impl Into<String>, value: crate::value::Value) -> Filter {
        Filter::EqValue(path.into(), value)
    }
    /// `path != value` (matches missing fields).
    pub fn ne(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Ne(path.into(), value.into())
    }
    /// `path > value`.
    pub fn gt(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Gt(path.into(), value.into())
    }
    /// `path >= value`.
    pub fn gte(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Gte(path.into(), value.into())
    }
    /// `path < value`.
    pub fn lt(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Lt(path.into(), value.into())
    }
    /// `path <= value`.
    pub fn lte(path: impl Into<String>, value: impl Into<Scalar>) -> Filter {
        Filter::Lte(path.into(), value.into())
    }
    /// `path` equals one of `values`.
    pub fn is_in<V: Into<Scalar>>(
        path: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Filter {
        Filter::In(path.into(), values.into_iter().map(Into::into).collect())
    }
    /// `path` equals none of `values`.
    pub fn not_in<V: Into<Scalar>>(
        path: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Filter {
        Filter::Nin(path.into(), values.into_iter().map(Into::into).collect())
    }
    /// `path` is present (`true`) or absent (`false`).
    pub fn exists(path: impl Into<String>, present: bool) -> Filter {
        Filter::Exists(path.into(), present)
    }
    /// Both `self` and `other` (flattens nested `And`s).
    pub fn and(mut self, other: Filter) -> Filter {
        match &mut self {
            Filter::All => other,
            Filter::And(v) => {
                v.push(other);
                self
            }
            _ => Filter::And(vec![self, other]),
        }
    }
    /// Either `self` or `other` (flattens nested `Or`s).
    pub fn or(mut self, other: Filter) -> Filter {
        match &mut self {
            Filter::Or(v) => {
                v.push(other);
                self
            }
            _ => Filter::Or(vec![self, other]),
        }
    }
    /// The path and value of an [`Filter::Eq`]; any other filter back as it is.
    pub(crate) fn into_eq(mut self) -> std::result::Result<(String, Scalar), Filter> {
        match &mut self {
            Filter::Eq(p, v) => Ok((std::mem::take(p), std::mem::replace(v, Scalar::Null))),
            _ => Err(self),
        }
    }
    /// `{$expr: {$<op>: ["$<path>", value]}}` (see [`Filter::ExprCmp`]).
    pub fn expr_cmp(path: impl Into<String>, op: CmpOp, value: impl Into<Scalar>) -> Filter {
        Filter::ExprCmp(path.into(), op, value.into())
    }
    /// Negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Filter {
        Filter::Not(Box::new(self))
    }

    /// Validates the filter and rewrites it into the small core every backend compiles.
    pub fn lower(&self) -> Result<Lowered> {
        self.lower_at(0)
    }

    /// The combinators, recursively; everything else through [`Filter::lower_leaf`], kept
    /// out of this frame so that the recursion stays small on any stack.
    fn lower_at(&self, depth: usize) -> Result<Lowered> {
        if depth > MAX_FILTER_DEPTH {
            return Err(Error::invalid_input(format!(
                "filter nests deeper than {MAX_FILTER_DEPTH} levels"
            )));
        }
        let d = depth + 1;
        let (parts, short, empty) = match self {
            Filter::Not(f) => return Ok(not(f.lower_at(d)?)),
            Filter::And(fs) => (fs, Lowered::False, Lowered::True),
            Filter::Or(fs) => (fs, Lowered::True, Lowered::False),
            leaf => return leaf.lower_leaf(),
        };
        let mut out = Vec::with_capacity(parts.len());
        for f in parts {
            match f.lower_at(d)? {
                l if l == empty => {}
                l if l == short => return Ok(short),
                l => out.push(l),
            }
        }
        Ok(match (out.len(), self) {
            (0, _) => empty,
            (1, _) => out.pop().unwrap_or(empty),
            (_, Filter::And(_)) => Lowered::And(out),
            _ => Lowered::Or(out),
        })
    }

    #[inline(never)]
    fn lower_leaf(&self) -> Result<Lowered> {
        Ok(match self {
            Filter::All => Lowered::True,
            Filter::Eq(p, v) => eq(FieldPath::parse(p)?, v)?,
            Filter::Ne(p, v) => not(eq(FieldPath::parse(p)?, v)?),
            Filter::Gt(p, v) => range(p, CmpOp::Gt, v)?,
            Filter::Gte(p, v) => range(p, CmpOp::Gte, v)?,
            Filter::Lt(p, v) => range(p, CmpOp::Lt, v)?,
            Filter::Lte(p, v) => range(p, CmpOp::Lte, v)?,
            Filter::In(p, vs) => any_of(FieldPath::parse(p)?, vs)?,
            Filter::Nin(p, vs) => not(any_of(FieldPath::parse(p)?, vs)?),
            Filter::Exists(p, true) => Lowered::Exists(FieldPath::parse(p)?),
            Filter::Exists(p, false) => not(Lowered::Exists(FieldPath::parse(p)?)),
            Filter::EqValue(p, v) => eq_value(FieldPath::parse(p)?, v)?,
            Filter::ExprCmp(p, op, v) => match checked(v)? {
                value @ (Scalar::Int(_) | Scalar::Float(_)) => Lowered::ExprCmp {
                    path: FieldPath::parse(p)?,
                    op: *op,
                    value,
                },
                other => {
                    return Err(Error::invalid_input(format!(
                        "Filter::ExprCmp on '{p}' compares with numbers only, not {other:?}"
                    )))
                }
            },
            Filter::Not(_) | Filter::And(_) | Filter::Or(_) => {
                return Err(Error::permanent("Filter::lower_leaf given a combinator"))
            }
        })
    }
}

/// Deepest accepted nesting of `And`/`Or`/`Not`.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Most values one [`Filter::In`] / [`Filter::Nin`] may list; a longer list is
/// [`InvalidInput`](crate::ErrorKind::InvalidInput) on every provider (split the query, or filter
/// on a coarser field). Up to this many, PostgreSQL still answers from its index.
pub const MAX_IN_VALUES: usize = 1_000;

/// A comparison operator of the lowered core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

impl CmpOp {
    /// The operator's symbol (`==`, `>`, …).
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
        }
    }

    /// Whether `ordering` (field compared to value) satisfies the operator.
    pub fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ordering == Equal,
            CmpOp::Gt => ordering == Greater,
            CmpOp::Gte => ordering != Less,
            CmpOp::Lt => ordering == Less,
            CmpOp::Lte => ordering != Greater,
        }
    }
}

/// The validated core that providers compile. Produced by [`Filter::lower`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lowered {
    /// Always true.
    True,
    /// Always false.
    False,
    /// Some value at `path` (or an element of an array there) compares to `value` with `op`.
    /// `value` is never `Null`, floats are finite and dates are truncated to milliseconds.
    Cmp {
        /// The field.
        path: FieldPath,
        /// The comparison.
        op: CmpOp,
        /// The value compared against.
        value: Scalar,
    },
    /// The path is missing, or some value at it is `null`.
    NullOrMissing(FieldPath),
    /// The path resolves to at least one value (`null` included).
    Exists(FieldPath),
    /// [`Filter::ExprCmp`]: the value an aggregation expression reads at `path` compares to
    /// the number `value` (an `Int` or a finite `Float`) in BSON type order.
    ExprCmp {
        /// The field.
        path: FieldPath,
        /// The comparison.
        op: CmpOp,
        /// The number compared against.
        value: Scalar,
    },
    /// [`Filter::EqValue`]: some value at `path` equals the array or document `value`, or is
    /// an array holding an element equal to it.
    EqValue {
        /// The field.
        path: FieldPath,
        /// An array or a document (not a date).
        value: crate::value::Value,
    },
    /// Negation.
    Not(Box<Lowered>),
    /// Conjunction (at least two members).
    And(Vec<Lowered>),
    /// Disjunction (at least two members).
    Or(Vec<Lowered>),
}

/// Largest nesting of a [`Filter::EqValue`] value (as for stored values).
const MAX_VALUE_DEPTH: usize = crate::value::MAX_DEPTH;

fn eq_value(path: FieldPath, value: &crate::value::Value) -> Result<Lowered> {
    use crate::value::Value;
    if let Some(date) = crate::value::as_date(value) {
        return eq(path, &Scalar::Date(date));
    }
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return Err(Error::invalid_input(format!(
            "Filter::EqValue on '{path}' takes an array or a document; use Filter::Eq for {value}"
        )));
    }
    // Checked without recursion: a caller-built value may nest deeper than a stack allows.
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_VALUE_DEPTH {
            return Err(Error::invalid_input(format!(
                "Filter::EqValue on '{path}': the value nests deeper than {MAX_VALUE_DEPTH} levels"
            )));
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(o) => stack.extend(o.values().map(|i| (i, depth + 1))),
            Value::Number(n) if n.as_f64().is_none_or(|f| !f.is_finite()) => {
                return Err(Error::invalid_input(format!(
                    "Filter::EqValue on '{path}': numbers must be finite"
                )))
            }
            _ => {}
        }
    }
    Ok(Lowered::EqValue {
        path,
        value: value.clone(),
    })
}

fn not(l: Lowered) -> Lowered {
    match l {
        Lowered::True => Lowered::False,
        Lowered::False => Lowered::True,
        Lowered::Not(inner) => *inner,
        l => Lowered::Not(Box::new(l)),
    }
}

fn checked(value: &Scalar) -> Result<Scalar> {
    Ok(match value {
        Scalar::Float(f) if !f.is_finite() => {
            return Err(Error::invalid_input(format!(
                "filter value {f} is not a finite number"
            )))
        }
        Scalar::Date(t) => {
            crate::value::format_date(*t)?;
            Scalar::Date(truncate_to_millis(*t))
        }
        Scalar::String(s) if s.contains('\0') => {
            return Err(Error::invalid_input(
                "filter string contains a NUL character",
            ))
        }
        v => v.clone(),
    })
}

fn eq(path: FieldPath, value: &Scalar) -> Result<Lowered> {
    Ok(match checked(value)? {
        Scalar::Null => Lowered::NullOrMissing(path),
        value => Lowered::Cmp {
            path,
            op: CmpOp::Eq,
            value,
        },
    })
}

fn range(path: &str, op: CmpOp, value: &Scalar) -> Result<Lowered> {
    let path = FieldPath::parse(path)?;
    Ok(match checked(value)? {
        Scalar::Null if matches!(op, CmpOp::Gte | CmpOp::Lte) => Lowered::NullOrMissing(path),
        Scalar::Null => Lowered::False,
        value => Lowered::Cmp { path, op, value },
    })
}

fn any_of(path: FieldPath, values: &[Scalar]) -> Result<Lowered> {
    if values.len() > MAX_IN_VALUES {
        return Err(Error::invalid_input(format!(
            "the list of values for '{path}' has {} values, more than {MAX_IN_VALUES}: split the query into several, or filter on a coarser field",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(eq(path.clone(), v)?);
    }
    Ok(match out.len() {
        0 => Lowered::False,
        1 => out.pop().unwrap_or(Lowered::False),
        _ => Lowered::Or(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ne_is_negated_eq_and_nin_negated_in() {
        let l = Filter::ne("a", 1).lower().unwrap();
        assert!(matches!(l, Lowered::Not(_)));
        assert_eq!(
            Filter::is_in("a", Vec::<i64>::new()).lower().unwrap(),
            Lowered::False
        );
        assert_eq!(
            Filter::not_in("a", Vec::<i64>::new()).lower().unwrap(),
            Lowered::True
        );
        assert_eq!(Filter::And(vec![]).lower().unwrap(), Lowered::True);
        assert_eq!(Filter::Or(vec![]).lower().unwrap(), Lowered::False);
    }

    #[test]
    fn null_ranges_follow_mongodb() {
        assert!(matches!(
            Filter::gte("a", Scalar::Null).lower().unwrap(),
            Lowered::NullOrMissing(_)
        ));
        assert_eq!(
            Filter::gt("a", Scalar::Null).lower().unwrap(),
            Lowered::False
        );
    }

    #[test]
    fn bad_input_is_invalid_input() {
        for f in [
            Filter::eq("", 1),
            Filter::eq("a.$b", 1),
            Filter::eq("a", f64::NAN),
            Filter::eq("a", "nul\0"),
        ] {
            assert_eq!(
                f.lower().unwrap_err().kind(),
                crate::ErrorKind::InvalidInput
            );
        }
        let mut deep = Filter::All;
        for _ in 0..100 {
            deep = deep.not();
        }
        assert_eq!(
            deep.lower().unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
    }
}
