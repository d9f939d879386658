//! `$setWindowFields`: per partition, in `sortBy` order, each output field computed over a
//! window of neighbouring documents (`documents: [lo, hi]` positions or `range: [lo, hi]` of
//! the sort key, with a `unit` for dates), or `$shift`ed from another document.

use std::cmp::Ordering;

use super::expr::{compare, Expr};
use super::group::{Acc, State};
use super::keys::Keys;
use super::limits;
use super::{bad, set_path, sort_keys, split, Vars};
use datastore_api::error::{Error, Result};
use datastore_api::path::FieldPath;
use datastore_api::query::{sort_value, Direction};
use datastore_api::value::{as_date, sort_compare, Document, Value};

/// A `$setWindowFields` stage.
#[derive(Debug, Clone)]
pub(crate) struct Windows {
    partition: Option<Expr>,
    sort: Vec<(FieldPath, Direction)>,
    outputs: Vec<Output>,
}

#[derive(Debug, Clone)]
struct Output {
    path: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// An accumulator over a window.
    Window { acc: Acc, arg: Expr, bounds: Bounds },
    /// `$shift`: `output` of the document `by` positions away, else `default`.
    Shift {
        output: Expr,
        by: i64,
        default: Expr,
    },
}

/// A window's bounds: `None` is unbounded; `Some(0)` the current document (or value).
#[derive(Debug, Clone, Copy)]
enum Bounds {
    Documents(Option<i64>, Option<i64>),
    /// In sort-key units (milliseconds for dates).
    Range(Option<f64>, Option<f64>),
}

impl Windows {
    pub(crate) fn parse(spec: &Value, at: &str) -> Result<Windows> {
        let Value::Object(o) = spec else {
            return Err(bad(at, "takes a document"));
        };
        let partition = o
            .get("partitionBy")
            .map(|p| Expr::parse(p, &format!("{at}.partitionBy")))
            .transpose()?;
        let sort = match o.get("sortBy") {
            None => Vec::new(),
            Some(spec) => sort_keys(spec, &format!("{at}.sortBy"))?,
        };
        let Some(Value::Object(out)) = o.get("output") else {
            return Err(bad(at, "needs an \"output\" document"));
        };
        let outputs = out
            .iter()
            .map(|(name, spec)| {
                let here = format!("{at}.output.{name}");
                Ok(Output {
                    path: split(name),
                    kind: parse_output(spec, &here, &sort)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Windows {
            partition,
            sort,
            outputs,
        })
    }

    /// Each partition's outputs are computed in one pass over it: every document's
    /// argument evaluated once, a window equal to the one before reused, a window that only
    /// grows at its end extended, range windows found by binary search. What a window
    /// accumulates counts against [`Pipeline::max_bytes`](super::Pipeline::max_bytes).
    pub(crate) fn run(&self, docs: Vec<Document>, vars: &Vars) -> Result<Vec<Document>> {
        // Partitions in first-seen order, each sorted (stably) by sortBy.
        let mut keys = Keys::default();
        let mut parts: Vec<Vec<Document>> = Vec::new();
        for d in docs {
            let (key, d) = match &self.partition {
                Some(p) => {
                    let doc = Value::Object(d);
                    let key = p.eval(&doc, vars)?.unwrap_or(Value::Null);
                    let Value::Object(d) = doc else {
                        continue;
                    };
                    (key, d)
                }
                None => (Value::Null, d),
            };
            match keys.find(&key) {
                Some(i) => parts[i].push(d),
                None => {
                    keys.insert(key);
                    parts.push(vec![d]);
                }
            }
        }
        // Output partition by partition, in partition-key order, as MongoDB sorts them.
        let keys = keys.into_keys();
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by(|&a, &b| compare(Some(&keys[a]), Some(&keys[b])));
        let mut slots: Vec<Option<Vec<Document>>> = parts.into_iter().map(Some).collect();
        let mut out = Vec::new();
        for mut part in order.into_iter().filter_map(|i| slots[i].take()) {
            part.sort_by(|a, b| self.order(a, b));
            let values: Vec<Value> = part.into_iter().map(Value::Object).collect();
            let mut columns = Vec::with_capacity(self.outputs.len());
            for o in &self.outputs {
                columns.push(self.column(o, &values, vars)?.into_iter());
            }
            for v in values {
                let Value::Object(mut d) = v else {
                    continue;
                };
                for (o, column) in self.outputs.iter().zip(&mut columns) {
                    set_path(&mut d, &o.path, column.next().unwrap_or(Value::Null));
                }
                out.push(d);
            }
        }
        Ok(out)
    }

    fn order(&self, a: &Document, b: &Document) -> Ordering {
        for (path, dir) in &self.sort {
            let o = sort_compare(sort_value(a, path), sort_value(b, path));
            let o = if *dir == Direction::Descending {
                o.reverse()
            } else {
                o
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Output `o` for every document of the (sorted) partition `part`.
    fn column(&self, o: &Output, part: &[Value], vars: &Vars) -> Result<Vec<Value>> {
        let (acc, arg, bounds) = match &o.kind {
            Kind::Shift {
                output,
                by,
                default,
            } => {
                return (0..part.len())
                    .map(|i| {
                        let j = (i as i64).checked_add(*by);
                        let v = match j
                            .and_then(|j| usize::try_from(j).ok())
                            .and_then(|j| part.get(j))
                        {
                            Some(doc) => output.eval(doc, vars)?,
                            None => default.eval(&part[i], vars)?,
                        };
                        Ok(v.unwrap_or(Value::Null))
                    })
                    .collect();
            }
            Kind::Window { acc, arg, bounds } => (*acc, arg, *bounds),
        };
        let args = part
            .iter()
            .map(|d| arg.eval(d, vars))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(part.len());
        // The window before, its state and its value.
        let mut before: Option<((usize, usize), State, Value)> = None;
        for (lo, hi) in self.windows(bounds, part)? {
            let state = match before.take() {
                Some((window, state, value)) if window == (lo, hi) => {
                    limits::charge(&value)?;
                    out.push(value.clone());
                    before = Some((window, state, value));
                    continue;
                }
                // Same start, same or later end: only the new end is added.
                Some(((l, h), mut state, _)) if l == lo && h <= hi && lo <= hi => {
                    for a in &args[h + 1..=hi] {
                        state.add(acc, a.clone())?;
                    }
                    state
                }
                _ => {
                    let mut state = State::default();
                    if lo <= hi {
                        for a in &args[lo..=hi] {
                            state.add(acc, a.clone())?;
                        }
                    }
                    state
                }
            };
            let value = state.clone().finish(acc);
            limits::charge(&value)?;
            out.push(value.clone());
            before = Some(((lo, hi), state, value));
        }
        Ok(out)
    }

    /// Every document's window as an inclusive index range (empty: `(1, 0)`).
    fn windows(&self, bounds: Bounds, part: &[Value]) -> Result<Vec<(usize, usize)>> {
        let n = part.len() as i64;
        match bounds {
            Bounds::Documents(lo, hi) => Ok((0..n)
                .map(|i| {
                    let lo = lo.map_or(0, |l| i.saturating_add(l).max(0));
                    let hi = hi.map_or(n - 1, |h| i.saturating_add(h).min(n - 1));
                    if lo > hi {
                        (1, 0)
                    } else {
                        (lo as usize, hi as usize)
                    }
                })
                .collect()),
            Bounds::Range(lo, hi) => {
                let keys = part
                    .iter()
                    .map(|d| self.range_key(d))
                    .collect::<Result<Vec<f64>>>()?;
                Ok(keys
                    .iter()
                    .map(|here| {
                        let (from, to) = (lo.map(|l| here + l), hi.map(|h| here + h));
                        range_window(&keys, from, to)
                    })
                    .collect())
            }
        }
    }

    /// The number a range window measures `d` by: its (first) sort key.
    fn range_key(&self, d: &Value) -> Result<f64> {
        let (path, _) = &self.sort[0];
        let v = d.as_object().and_then(|o| sort_value(o, path));
        match v {
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0)),
            Some(v) if as_date(v).is_some() => {
                Ok(as_date(v).map_or(0.0, |t| t.timestamp_millis() as f64))
            }
            _ => Err(Error::invalid_input(
                "aggregate: $setWindowFields: a range window needs a number or date sort key in every document",
            )),
        }
    }
}

/// The first and last index whose key lies in `[from, to]` (either end open when `None`);
/// `(1, 0)` when none does. By binary search when the keys are sorted (as `sortBy` leaves
/// them), else by looking at each.
fn range_window(keys: &[f64], from: Option<f64>, to: Option<f64>) -> (usize, usize) {
    let inside = |k: f64| from.is_none_or(|f| k >= f) && to.is_none_or(|t| k <= t);
    let (first, end) = if keys.is_sorted() {
        (
            keys.partition_point(|&k| from.is_some_and(|f| k < f)),
            keys.partition_point(|&k| to.is_none_or(|t| k <= t)),
        )
    } else if keys.is_sorted_by(|a, b| a >= b) {
        (
            keys.partition_point(|&k| to.is_some_and(|t| k > t)),
            keys.partition_point(|&k| from.is_none_or(|f| k >= f)),
        )
    } else {
        let first = keys.iter().position(|&k| inside(k));
        let last = keys.iter().rposition(|&k| inside(k));
        return match (first, last) {
            (Some(a), Some(b)) => (a, b),
            _ => (1, 0),
        };
    };
    if first < end {
        (first, end - 1)
    } else {
        (1, 0)
    }
}

fn parse_output(spec: &Value, at: &str, sort: &[(FieldPath, Direction)]) -> Result<Kind> {
    let Value::Object(o) = spec else {
        return Err(bad(
            at,
            "an output is a document like {\"$sum\": 1, \"window\": {…}}",
        ));
    };
    let mut ops = o.iter().filter(|(k, _)| k.as_str() != "window");
    let (Some((op, arg)), None) = (ops.next(), ops.next()) else {
        return Err(bad(at, "exactly one window operator"));
    };
    if op == "$shift" {
        if o.contains_key("window") {
            return Err(bad(at, "$shift takes no window"));
        }
        if sort.is_empty() {
            return Err(bad(at, "$shift needs a sortBy"));
        }
        let output = arg
            .get("output")
            .ok_or_else(|| bad(at, "$shift needs \"output\""))?;
        let by = arg
            .get("by")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad(at, "$shift needs an integer \"by\""))?;
        return Ok(Kind::Shift {
            output: Expr::parse(output, &format!("{at}.$shift.output"))?,
            by,
            default: match arg.get("default") {
                Some(d) => Expr::parse(d, &format!("{at}.$shift.default"))?,
                None => Expr::parse(&Value::Null, at)?,
            },
        });
    }
    let acc = Acc::parse(op, at)?;
    let arg = if acc == Acc::Count {
        Expr::parse(&Value::from(1), at)?
    } else {
        Expr::parse(arg, &format!("{at}.{op}"))?
    };
    let bounds = match o.get("window") {
        None => Bounds::Documents(None, None),
        Some(w) => parse_window(w, at, sort)?,
    };
    Ok(Kind::Window { acc, arg, bounds })
}

fn parse_window(w: &Value, at: &str, sort: &[(FieldPath, Direction)]) -> Result<Bounds> {
    let at = format!("{at}.window");
    let bound = |v: &Value| -> Result<Option<f64>> {
        match v {
            Value::String(s) if s == "unbounded" => Ok(None),
            Value::String(s) if s == "current" => Ok(Some(0.0)),
            Value::Number(n) => Ok(n.as_f64()),
            _ => Err(bad(
                &at,
                "a bound is \"unbounded\", \"current\" or a number",
            )),
        }
    };
    let pair = |v: Option<&Value>| -> Result<(Option<f64>, Option<f64>)> {
        match v {
            Some(Value::Array(b)) if b.len() == 2 => Ok((bound(&b[0])?, bound(&b[1])?)),
            _ => Err(bad(&at, "bounds are a pair [lower, upper]")),
        }
    };
    if let Some(docs) = w.get("documents") {
        let (lo, hi) = pair(Some(docs))?;
        if sort.is_empty() && (lo.is_some() || hi.is_some()) {
            return Err(bad(&at, "a bounded documents window needs a sortBy"));
        }
        let int = |b: Option<f64>| b.map(|x| x as i64);
        return Ok(Bounds::Documents(int(lo), int(hi)));
    }
    let (lo, hi) = pair(w.get("range"))?;
    if sort.len() != 1 || sort[0].1 != Direction::Ascending {
        return Err(bad(
            &at,
            "a range window needs exactly one ascending sortBy key",
        ));
    }
    let scale = match w.get("unit").map(|u| u.as_str()) {
        None => 1.0,
        Some(Some("millisecond")) => 1.0,
        Some(Some("second")) => 1_000.0,
        Some(Some("minute")) => 60_000.0,
        Some(Some("hour")) => 3_600_000.0,
        Some(Some("day")) => 86_400_000.0,
        Some(Some("week")) => 604_800_000.0,
        Some(_) => {
            return Err(bad(
                &at,
                "unit: millisecond, second, minute, hour, day or week",
            ))
        }
    };
    Ok(Bounds::Range(lo.map(|x| x * scale), hi.map(|x| x * scale)))
}
