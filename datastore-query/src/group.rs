//! `$group`: documents by their `_id` expression, and the accumulators.

use serde_json::Map;

use super::expr::{compare, Expr};
use super::keys::Keys;
use super::limits;
use super::{bad, Vars};
use datastore_api::error::{Error, Result};
use datastore_api::value::{Document, Value};

/// An accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acc {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

impl Acc {
    pub(crate) fn parse(name: &str, at: &str) -> Result<Acc> {
        Ok(match name {
            "$sum" => Acc::Sum,
            "$avg" => Acc::Avg,
            "$min" => Acc::Min,
            "$max" => Acc::Max,
            "$first" => Acc::First,
            "$last" => Acc::Last,
            "$push" => Acc::Push,
            "$addToSet" => Acc::AddToSet,
            "$count" => Acc::Count,
            other => return Err(bad(at, format!("unsupported accumulator {other}"))),
        })
    }
}

/// A `$group` stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) id: Expr,
    pub(crate) fields: Vec<(String, Acc, Expr)>,
}

impl Group {
    pub(crate) fn parse(spec: &Value, at: &str) -> Result<Group> {
        let Value::Object(o) = spec else {
            return Err(bad(at, "$group takes a document"));
        };
        let id = o
            .get("_id")
            .ok_or_else(|| bad(at, "$group needs an _id (null groups everything)"))?;
        let id = Expr::parse(id, &format!("{at}._id"))?;
        let mut fields = Vec::new();
        for (name, acc) in o.iter().filter(|(k, _)| k.as_str() != "_id") {
            let here = format!("{at}.{name}");
            let Value::Object(a) = acc else {
                return Err(bad(&here, "an accumulator document like {\"$sum\": 1}"));
            };
            let (Some((op, arg)), 1) = (a.iter().next(), a.len()) else {
                return Err(bad(&here, "exactly one accumulator"));
            };
            let acc = Acc::parse(op, &here)?;
            let expr = if acc == Acc::Count {
                Expr::Literal(Value::from(1))
            } else {
                Expr::parse(arg, &format!("{here}.{op}"))?
            };
            fields.push((name.clone(), acc, expr));
        }
        Ok(Group { id, fields })
    }

    /// Groups `docs` (in input order: `$first`/`$last` follow it); groups come out in the
    /// order their first document came.
    pub(crate) fn run(
        &self,
        docs: Vec<Document>,
        vars: &Vars,
        max: usize,
    ) -> Result<Vec<Document>> {
        let mut keys = Keys::default();
        let mut states: Vec<Vec<State>> = Vec::new();
        for doc in docs {
            let doc = Value::Object(doc);
            let key = self.id.eval(&doc, vars)?.unwrap_or(Value::Null);
            let slot = match keys.find(&key) {
                Some(i) => i,
                None => {
                    if keys.len() >= max {
                        return Err(Error::invalid_input(format!(
                            "$group: more than {max} groups; narrow the pipeline's $match"
                        )));
                    }
                    limits::charge(&key)?;
                    states.push(self.fields.iter().map(|_| State::default()).collect());
                    keys.insert(key)
                }
            };
            for ((_, acc, expr), state) in self.fields.iter().zip(&mut states[slot]) {
                state.add(*acc, expr.eval(&doc, vars)?)?;
            }
        }
        Ok(keys
            .into_keys()
            .into_iter()
            .zip(states)
            .map(|(key, states)| {
                let mut out = Map::new();
                out.insert("_id".into(), key);
                for ((name, acc, _), state) in self.fields.iter().zip(states) {
                    out.insert(name.clone(), state.finish(*acc));
                }
                out
            })
            .collect())
    }
}

/// One accumulator's running state.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    values: Vec<Value>,
    /// `$addToSet`'s values (in the order added), found by hash.
    set: Keys,
    sum: Option<Value>,
    count: u64,
    seen: bool,
}

impl State {
    pub(crate) fn add(&mut self, acc: Acc, v: Option<Value>) -> Result<()> {
        match acc {
            Acc::Sum | Acc::Count | Acc::Avg => {
                // Non-numbers are ignored, as MongoDB does.
                if let Some(v @ Value::Number(_)) = v {
                    let sum = self.sum.take().unwrap_or(Value::from(0));
                    self.sum = Some(numeric_add(&sum, &v));
                    self.count += 1;
                }
            }
            Acc::Min | Acc::Max => {
                // Missing and null are ignored.
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    let better = match self.values.first() {
                        None => true,
                        Some(cur) => {
                            let o = compare(Some(&v), Some(cur));
                            if acc == Acc::Min {
                                o.is_lt()
                            } else {
                                o.is_gt()
                            }
                        }
                    };
                    if better {
                        self.values = vec![v];
                    }
                }
            }
            Acc::First => {
                if !self.seen {
                    self.values = vec![v.unwrap_or(Value::Null)];
                }
            }
            Acc::Last => self.values = vec![v.unwrap_or(Value::Null)],
            Acc::Push => {
                if let Some(v) = v {
                    limits::charge(&v)?;
                    self.values.push(v);
                }
            }
            Acc::AddToSet => {
                if let Some(v) = v {
                    if self.set.find(&v).is_none() {
                        limits::charge(&v)?;
                        self.set.insert(v);
                    }
                }
            }
        }
        self.seen = true;
        Ok(())
    }

    pub(crate) fn finish(self, acc: Acc) -> Value {
        match acc {
            Acc::Sum | Acc::Count => self.sum.unwrap_or(Value::from(0)),
            Acc::Avg => match (self.sum, self.count) {
                (Some(Value::Number(n)), c) if c > 0 => {
                    serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0) / c as f64)
                        .map_or(Value::Null, Value::Number)
                }
                _ => Value::Null,
            },
            Acc::Min | Acc::Max | Acc::First | Acc::Last => {
                self.values.into_iter().next().unwrap_or(Value::Null)
            }
            Acc::Push => Value::Array(self.values),
            // Distinct already: the set admits a value only once.
            Acc::AddToSet => Value::Array(self.set.into_keys()),
        }
    }
}

/// Integer while exact, else float.
fn numeric_add(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_add(y)
            .map_or_else(|| Value::from(x as f64 + y as f64), Value::from),
        _ => serde_json::Number::from_f64(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            .map_or(Value::Null, Value::Number),
    }
}
