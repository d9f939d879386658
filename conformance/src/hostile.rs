//! Hostile input for the fuzz properties: values deep and wide, long strings, NUL, `$` keys,
//! dates and numbers at their limits, and text that is almost JSON. Deep values are built
//! without recursion, so that only the code under test can overflow, and every case can run
//! on a small stack ([`on_small_stack`]) so that recursion shows.

use datastore_api::{Document, Value};
use proptest::prelude::*;
use serde_json::{Map, Number};

/// The stack the fuzz properties run on: 256 KiB, an eighth of a tokio worker's, in an
/// optimised build (`cargo xtask fuzz`); 1 MiB in a debug build (`cargo xtask test`), whose
/// frames are several times larger (`serde_json`'s own 128 levels need more than 256 KiB
/// there).
pub const SMALL_STACK: usize = if cfg!(debug_assertions) {
    1024 * 1024
} else {
    256 * 1024
};

/// How long one fuzz case may take before it counts as a hang.
pub const CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `f` on a thread with a [`SMALL_STACK`]; a panic is returned as its message, a case
/// still running after [`CASE_LIMIT`] as a hang (an overflow aborts the process, which fails
/// the run as surely).
pub fn on_small_stack<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out);
        })
        .map_err(|e| format!("spawn: {e}"))?;
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned())),
        Err(_) => Err(format!("still running after {CASE_LIMIT:?}: a hang")),
    }
}

/// Keys: ordinary, empty, dotted, `$`-prefixed (operators and not), reserved, with NUL.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,3}",
        1 => Just(String::new()),
        1 => Just("a.b".to_owned()),
        1 => prop::sample::select(vec![
            "$date", "$numberLong", "$oid", "$expr", "$and", "$in", "$literal", "$where", "$x",
        ])
        .prop_map(str::to_owned),
        1 => Just("_id".to_owned()),
        1 => Just("createdAt".to_owned()),
        1 => Just("_idempotencyKey".to_owned()),
        1 => Just("a\0b".to_owned()),
        1 => "\\PC{0,6}",
    ]
}

/// Strings: short, long, with NUL, date-like, path-like, placeholder-like.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,8}",
        1 => (1usize..100_000).prop_map(|n| "x".repeat(n)),
        1 => Just("a\0".to_owned()),
        1 => prop::sample::select(vec![
            "2020-01-01T00:00:00Z",
            "-262143-01-01T00:00:00Z",
            "+262142-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.000000001Z",
            "not a date",
            "$field",
            "$$NOW",
            "$$ROOT.a",
            "this.healthevent.errorcode.0",
            "this.",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Numbers at their limits.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![
            i64::MIN as f64,
            i64::MAX as f64,
            u64::MAX as f64,
            f64::MAX,
            f64::MIN_POSITIVE,
            -0.0,
            1e308,
            9_007_199_254_740_993.0,
        ])
        .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(u64::MAX)),
    ]
}

/// A leaf value.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
        string().prop_map(|s| date_wrapper(Value::String(s))),
        number().prop_map(date_wrapper),
    ]
}

fn date_wrapper(v: Value) -> Value {
    let mut m = Map::new();
    m.insert("$date".into(), v);
    Value::Object(m)
}

/// A value: a few levels of documents and arrays with hostile keys and leaves, sometimes
/// wide, sometimes wrapped in a chain far deeper than any limit (or just at it), sometimes
/// beside a `$date`. At most 500 levels: proptest clones what it generates, recursively,
/// on the test's thread (`datastore-api/tests/deep_values.rs` goes to 100,000 levels).
pub fn value() -> impl Strategy<Value = Value> {
    (
        shallow(),
        prop_oneof![
            6 => Just(Shape::AsIs),
            1 => (1usize..20_000).prop_map(Shape::Wide),
            1 => prop::sample::select(vec![63usize, 64, 65, 127, 128, 129, 500])
                .prop_map(Shape::Deep),
            1 => Just(Shape::BesideDate),
        ],
    )
        .prop_map(|(v, shape)| shape.apply(v))
}

/// A few levels of documents and arrays with hostile keys and leaves.
fn shallow() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// How [`value`] reshapes a generated value.
#[derive(Debug, Clone, Copy)]
enum Shape {
    AsIs,
    Wide(usize),
    Deep(usize),
    BesideDate,
}

impl Shape {
    fn apply(self, v: Value) -> Value {
        match self {
            Shape::AsIs => v,
            Shape::Wide(n) => {
                let mut m: Map<String, Value> =
                    (0..n).map(|i| (format!("k{i}"), Value::from(i))).collect();
                m.insert("v".into(), v);
                Value::Object(m)
            }
            Shape::Deep(levels) => nest(v, levels),
            Shape::BesideDate => {
                let mut m = Map::new();
                m.insert("$date".into(), Value::from("2020-01-01T00:00:00Z"));
                m.insert("a".into(), nest(v, 500));
                Value::Object(m)
            }
        }
    }
}

/// `v` inside `levels` alternating documents and arrays, built without recursion.
pub fn nest(mut v: Value, levels: usize) -> Value {
    for i in 0..levels {
        v = if i % 2 == 0 {
            let mut m = Map::new();
            m.insert("a".into(), v);
            Value::Object(m)
        } else {
            Value::Array(vec![v])
        };
    }
    v
}

/// A document: the fields of a hostile [`value`] (a non-document becomes one field).
pub fn document() -> impl Strategy<Value = Shown<Document>> {
    value().prop_map(|v| {
        Shown(match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("v".into(), other);
                m
            }
        })
    })
}

/// A generated value whose `Debug` is a bounded summary (the derived one would recurse as
/// deep as the value nests, and print megabytes).
#[derive(Clone)]
pub struct Shown<T>(pub T);

impl std::fmt::Debug for Shown<Document> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mut nodes, mut depth, mut stack) = (0usize, 0usize, vec![]);
        stack.extend(self.0.values().map(|v| (v, 1usize)));
        while let Some((v, d)) = stack.pop() {
            nodes += 1;
            depth = depth.max(d);
            match v {
                Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
                Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
                _ => {}
            }
        }
        let keys: Vec<&String> = self.0.keys().take(8).collect();
        write!(
            f,
            "document of {} fields (first keys {keys:?}), {nodes} values, {depth} levels deep, \
             {} bytes as BSON",
            self.0.len(),
            datastore_api::value::bson_size(&self.0)
        )
    }
}

/// Text that is almost JSON (or almost a pipeline): JSON of a hostile value, cut or
/// corrupted, nested far past every limit, or anything at all. (Deep text is written as
/// text: serializing a deep value would recurse here, in the generator.)
pub fn text() -> impl Strategy<Value = String> {
    let json = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    prop_oneof![
        2 => shallow().prop_map(move |v| json(&v)),
        1 => (shallow(), any::<prop::sample::Index>()).prop_map(move |(v, at)| {
            let s = json(&v);
            let cut = at.index(s.chars().count() + 1);
            s.chars().take(cut).collect()
        }),
        1 => any::<String>(),
        1 => (1usize..5_000).prop_map(|n| "[".repeat(n)),
        1 => (60usize..5_000).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
        1 => (60usize..5_000).prop_map(|n| format!("[{{\"$match\":{}1{}}}]", "{\"$and\":[".repeat(n), "]}".repeat(n))),
    ]
}

/// Drops `v` without recursion (a generated value may nest far deeper than the stack holds).
pub fn drop_value(v: Value) {
    datastore_api::value::drop_iteratively(v);
}
