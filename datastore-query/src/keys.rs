//! Distinct keys by the evaluator's equality (`$group`'s `_id`, `partitionBy`), found by hash
//! rather than by comparing with every key seen: 20,000 distinct keys cost 20,000 lookups,
//! not 200 million comparisons.
//!
//! The hash is coarser than equality (values that compare equal always hash alike: numbers
//! by their `f64` value, dates by their instant, documents by their sorted fields), and keys
//! in one bucket are told apart by [`compare`] itself, so equality stays exactly the
//! evaluator's.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::expr::compare;
use datastore_api::value::{as_date, Value};

/// Keys in the order they were first seen, each with its index.
#[derive(Debug, Default, Clone)]
pub(crate) struct Keys {
    keys: Vec<Value>,
    buckets: HashMap<u64, Vec<usize>>,
}

impl Keys {
    /// The index of the key equal to `key`, if one was seen.
    pub(crate) fn find(&self, key: &Value) -> Option<usize> {
        self.buckets
            .get(&hash(key))?
            .iter()
            .copied()
            .find(|&i| compare(Some(&self.keys[i]), Some(key)).is_eq())
    }

    /// Adds `key` (not seen before: see [`Keys::find`]) and returns its index.
    pub(crate) fn insert(&mut self, key: Value) -> usize {
        let i = self.keys.len();
        self.buckets.entry(hash(&key)).or_default().push(i);
        self.keys.push(key);
        i
    }

    /// How many distinct keys were seen.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys, by index.
    pub(crate) fn into_keys(self) -> Vec<Value> {
        self.keys
    }
}

fn hash(v: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    hash_into(v, &mut h);
    h.finish()
}

/// Hashes `v` so that values [`compare`] finds equal hash alike. Values are depth-limited
/// (stored and computed values alike), so the recursion is bounded.
fn hash_into(v: &Value, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            // 1 and 1.0 are equal; so are 0 and -0.
            let f = n.as_f64().unwrap_or(0.0);
            (2u8, if f == 0.0 { 0 } else { f.to_bits() }).hash(h);
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|i| hash_into(i, h));
        }
        Value::Object(o) => match as_date(v) {
            Some(t) => (5u8, t.timestamp_millis()).hash(h),
            None => {
                (6u8, o.len()).hash(h);
                let mut fields: Vec<_> = o.iter().collect();
                fields.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in fields {
                    k.hash(h);
                    hash_into(v, h);
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_share_a_key_and_different_ones_do_not() {
        let mut keys = Keys::default();
        let a = keys.insert(json!(1));
        assert_eq!(keys.find(&json!(1.0)), Some(a));
        assert_eq!(keys.find(&json!(-0.0)), None);
        let z = keys.insert(json!(0));
        assert_eq!(keys.find(&json!(-0.0)), Some(z));
        let d = keys.insert(json!({"$date": "2020-01-01T00:00:00.000Z"}));
        assert_eq!(
            keys.find(&json!({"$date": "2020-01-01T00:00:00Z"})),
            Some(d)
        );
        let o = keys.insert(json!({"a": [1, "x"], "b": null}));
        assert_eq!(keys.find(&json!({"a": [1.0, "x"], "b": null})), Some(o));
        assert_eq!(keys.find(&json!({"a": [1, "y"], "b": null})), None);
        assert_eq!(keys.find(&json!("1")), None);
        assert_eq!(keys.len(), 4);
    }
}
