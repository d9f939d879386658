//! Random documents, filters, sorts and updates over a small vocabulary, so that values collide
//! and every null / missing / false / wrong-type / nested / array case comes up often.

use chrono::{TimeZone, Utc};
use datastore_api::value::date_value;
use datastore_api::{CmpOp, Document, Filter, FindOptions, Scalar, Sort, Update, UpdateOp, Value};
use proptest::prelude::*;
use serde_json::{json, Map};

/// Field paths used in filters, sorts and updates (including reserved and deep ones).
pub const PATHS: &[&str] = &[
    "a",
    "b",
    "c",
    "a.a",
    "a.b",
    "a.x",
    "b.a",
    "b.b",
    "a.a.b",
    "x",
    // Array indexes (MongoDB's resolution: the element of an array, or the key "0").
    "a.0",
    "a.1",
    "a.0.a",
    "b.0.b",
    "_id",
    "createdAt",
];

/// Paths an update may write (reserved fields excluded; those are tested as invalid separately).
const UPDATE_PATHS: &[&str] = &["a", "b", "c", "a.a", "a.b", "b.a", "a.a.b", "d", "d.e"];

const KEYS: &[&str] = &["a", "b", "c", "x", "0"];
/// Keys of objects inside arrays when the server lacks
/// [`Vocabulary::index_fields`].
const KEYS_WITHOUT_INDEX_NAMES: &[&str] = &["a", "b", "c", "x"];
const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "A",
    "é",
    "10",
    "2",
    "null",
    "true",
    "q\"uote",
    "back\\slash",
    "new\nline",
    "😀",
    "it's",
];

fn date(i: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1 + i, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// What the random values may contain: narrowed to what the server under test can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocabulary {
    /// Floating-point numbers besides integers (off when the server's equality does not match
    /// `1` with `1.0`, so that no case depends on it).
    pub floats: bool,
    /// `Push` in random updates.
    pub push: bool,
    /// The key `"0"` in objects inside arrays (see
    /// [`Capabilities::index_fields_in_arrays`](crate::Capabilities::index_fields_in_arrays)).
    pub index_fields: bool,
    /// `Filter::ExprCmp` in random filters (see
    /// [`Capabilities::expression_array_paths`](crate::Capabilities::expression_array_paths)).
    pub expr_cmp: bool,
}

impl Vocabulary {
    /// Everything.
    pub const ALL: Vocabulary = Vocabulary {
        floats: true,
        push: true,
        index_fields: true,
        expr_cmp: true,
    };
}

impl From<crate::Capabilities> for Vocabulary {
    fn from(c: crate::Capabilities) -> Self {
        Vocabulary {
            floats: c.numeric_equality,
            push: c.push_update,
            index_fields: c.index_fields_in_arrays,
            expr_cmp: c.expression_array_paths,
        }
    }
}

/// Picks one of the weighted strategies (weights of left-out alternatives are simply absent).
fn one_of<T: std::fmt::Debug + 'static>(options: Vec<(u32, BoxedStrategy<T>)>) -> BoxedStrategy<T> {
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// A scalar stored value.
pub fn scalar_value(v: Vocabulary) -> BoxedStrategy<Value> {
    let mut options = vec![
        (1, Just(Value::Null).boxed()),
        (1, any::<bool>().prop_map(Value::Bool).boxed()),
        (1, (-3i64..4).prop_map(|i| json!(i)).boxed()),
        (
            1,
            prop::sample::select(vec![json!(9_007_199_254_740_993i64), json!(i64::MAX)]).boxed(),
        ),
        (
            1,
            prop::sample::select(STRINGS).prop_map(|s| json!(s)).boxed(),
        ),
        (
            1,
            (0u32..4)
                .prop_map(|i| date_value(date(i)).unwrap_or(Value::Null))
                .boxed(),
        ),
    ];
    if v.floats {
        options.push((
            1,
            (-6i32..7).prop_map(|i| json!(f64::from(i) / 2.0)).boxed(),
        ));
        options.push((
            1,
            prop::sample::select(vec![
                json!(9_007_199_254_740_992.0),
                json!(1e300),
                json!(-2.5e-8),
            ])
            .boxed(),
        ));
    }
    one_of(options)
}

/// A stored value: scalars, arrays of scalars, small objects.
pub fn value(v: Vocabulary) -> impl Strategy<Value = Value> {
    let element_keys = if v.index_fields {
        KEYS
    } else {
        KEYS_WITHOUT_INDEX_NAMES
    };
    scalar_value(v).prop_recursive(2, 12, 3, move |inner| {
        prop_oneof![
            3 => prop::collection::vec(scalar_value(v), 0..3).prop_map(Value::Array),
            3 => prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            2 => prop::collection::vec(
                prop::collection::btree_map(prop::sample::select(element_keys), scalar_value(v), 1..3)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
                1..3,
            )
            .prop_map(Value::Array),
        ]
    })
}

/// A document body (no `_id` / `createdAt`).
pub fn document(v: Vocabulary) -> impl Strategy<Value = Document> {
    prop::collection::btree_map(prop::sample::select(KEYS), value(v), 0..4).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<String, Value>>()
    })
}

/// A filter scalar.
pub fn scalar(v: Vocabulary) -> BoxedStrategy<Scalar> {
    let mut options = vec![
        (1, Just(Scalar::Null).boxed()),
        (1, any::<bool>().prop_map(Scalar::Bool).boxed()),
        (1, (-3i64..4).prop_map(Scalar::Int).boxed()),
        (
            1,
            prop::sample::select(vec![
                Scalar::Int(9_007_199_254_740_993),
                Scalar::Int(i64::MAX),
            ])
            .boxed(),
        ),
        (
            1,
            prop::sample::select(STRINGS)
                .prop_map(|s| Scalar::String(s.to_owned()))
                .boxed(),
        ),
        (1, (0u32..4).prop_map(|i| Scalar::Date(date(i))).boxed()),
    ];
    if v.floats {
        options.push((
            1,
            (-6i32..7)
                .prop_map(|i| Scalar::Float(f64::from(i) / 2.0))
                .boxed(),
        ));
        options.push((
            1,
            prop::sample::select(vec![
                Scalar::Float(9_007_199_254_740_992.0),
                Scalar::Float(1e300),
            ])
            .boxed(),
        ));
    }
    one_of(options)
}

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS).prop_map(str::to_owned)
}

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Gt,
        CmpOp::Gte,
        CmpOp::Lt,
        CmpOp::Lte,
    ])
}

/// A number for `Filter::ExprCmp` (a float only where the vocabulary has floats).
fn number(v: Vocabulary) -> BoxedStrategy<Scalar> {
    let ints = (-2i64..4).prop_map(Scalar::Int);
    if v.floats {
        prop_oneof![3 => ints, 1 => Just(Scalar::Float(1.5))].boxed()
    } else {
        ints.boxed()
    }
}

/// An array or a one-field document to compare as a whole (one field: MongoDB compares a
/// document's fields in order, which this API does not promise to keep).
fn whole(v: Vocabulary) -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(scalar_value(v), 0..3).prop_map(Value::Array),
        (prop::sample::select(KEYS), scalar_value(v))
            .prop_map(|(k, x)| serde_json::json!({ k: x })),
    ]
}

/// A random filter tree.
pub fn filter(v: Vocabulary) -> impl Strategy<Value = Filter> {
    let scalar = || scalar(v);
    let leaf = prop_oneof![
        (path(), scalar()).prop_map(|(p, v)| Filter::Eq(p, v)),
        (path(), scalar()).prop_map(|(p, v)| Filter::Ne(p, v)),
        (path(), scalar()).prop_map(|(p, v)| Filter::Gt(p, v)),
        (path(), scalar()).prop_map(|(p, v)| Filter::Gte(p, v)),
        (path(), scalar()).prop_map(|(p, v)| Filter::Lt(p, v)),
        (path(), scalar()).prop_map(|(p, v)| Filter::Lte(p, v)),
        (path(), prop::collection::vec(scalar(), 0..3)).prop_map(|(p, v)| Filter::In(p, v)),
        (path(), prop::collection::vec(scalar(), 0..3)).prop_map(|(p, v)| Filter::Nin(p, v)),
        (path(), any::<bool>()).prop_map(|(p, b)| Filter::Exists(p, b)),
        (path(), whole(v)).prop_map(|(p, w)| Filter::EqValue(p, w)),
        Just(Filter::All),
    ];
    let leaf = if v.expr_cmp {
        prop_oneof![
            10 => leaf,
            1 => (path(), cmp_op(), number(v)).prop_map(|(p, op, n)| Filter::ExprCmp(p, op, n)),
        ]
        .boxed()
    } else {
        leaf.boxed()
    };
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

/// A filter that is invalid input (bad path).
pub fn invalid_filter() -> impl Strategy<Value = Filter> {
    prop::sample::select(vec!["", "a..b", "$where", "a.$gt", ".a"]).prop_map(|p| Filter::eq(p, 1))
}

/// Find options with a random sort, skip and limit.
pub fn find_options() -> impl Strategy<Value = FindOptions> {
    (
        prop::collection::vec((path(), any::<bool>()), 0..3),
        prop_oneof![Just(0u64), 0u64..4],
        prop::option::of(0u64..6),
    )
        .prop_map(|(keys, skip, limit)| {
            let mut sort = Sort::default();
            for (p, asc) in keys {
                sort = if asc {
                    sort.then_asc(p)
                } else {
                    sort.then_desc(p)
                };
            }
            FindOptions { sort, skip, limit }
        })
}

/// A random update (may be invalid: conflicting paths, bad targets).
pub fn update(v: Vocabulary) -> impl Strategy<Value = Update> {
    let path = || prop::sample::select(UPDATE_PATHS).prop_map(str::to_owned);
    let mut ops: Vec<(u32, BoxedStrategy<UpdateOp>)> = vec![
        (
            3,
            (path(), value(v))
                .prop_map(|(p, v)| UpdateOp::Set(p, v))
                .boxed(),
        ),
        (1, path().prop_map(UpdateOp::Unset).boxed()),
        (
            2,
            (
                path(),
                if v.floats {
                    prop_oneof![(-2i64..3).prop_map(|i| json!(i)), Just(json!(0.5))].boxed()
                } else {
                    (-2i64..3).prop_map(|i| json!(i)).boxed()
                },
            )
                .prop_map(|(p, n)| UpdateOp::Inc(p, n))
                .boxed(),
        ),
    ];
    if v.push {
        ops.push((
            1,
            (path(), scalar_value(v))
                .prop_map(|(p, v)| UpdateOp::Push(p, v))
                .boxed(),
        ));
    }
    let op = one_of(ops);
    prop::collection::vec(op, 1..3).prop_map(|ops| ops.into_iter().fold(Update::new(), Update::op))
}
