//! # datastore-query
//!
//! Aggregation pipelines in MongoDB's JSON form, so that the health-events-analyzer's rules
//! run as operators wrote them: parsed ([`Pipeline`]), planned ([`Plan`]: pushdown into an
//! index scan, folding after binding, shared fetches) and evaluated, for every provider that
//! does not run them natively (and for the conformance model). [`Aggregate`] runs them on
//! any collection: natively where its server aggregates, planned over `find` elsewhere.
//!
//! ```
//! use datastore_query::Pipeline;
//! use serde_json::json;
//!
//! let rule = Pipeline::parse(&json!([
//!     {"$match": {"healthevent.nodename": "this.healthevent.nodename", "healthevent.isfatal": true}},
//!     {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
//!     {"$match": {"n": {"$gte": 5}}},
//! ])).unwrap();
//! let event = json!({"healthevent": {"nodename": "node-7"}});
//! let bound = rule.bind_this(event.as_object().unwrap()).unwrap();
//! assert_eq!(bound.stages_json()[0]["$match"]["healthevent.nodename"], "node-7");
//! ```
//!
//! **Supported stages:** `$match` (query operators as [`Filter::from_query_json`] reads them,
//! plus `$expr`), `$addFields` / `$set`, `$project` (inclusion, exclusion, computed fields),
//! `$unset`, `$sort`, `$limit`, `$skip`, `$count`, `$group` (`$sum $avg $min $max $first $last
//! $push $addToSet $count`), `$unwind` (`path`, `preserveNullAndEmptyArrays`,
//! `includeArrayIndex`).
//!
//! **Supported expressions:** field paths, `$$ROOT $$CURRENT $$NOW $$REMOVE`, `$$this` and
//! `let` variables; `$literal`; `$and $or $not $eq $ne $gt $gte $lt $lte $cmp $in $cond $ifNull
//! $switch`; `$add $subtract $multiply $divide $mod $abs` (dates: date − date in ms, date ±
//! ms); `$toLong $toInt $toDouble $toString $toBool`; `$size $arrayElemAt $first $last
//! $concatArrays $setUnion $setIntersection $anyElementTrue $allElementsTrue $isArray $filter
//! $map $reduce`; `$concat $toLower $toUpper $substr $substrBytes $substrCP $regexMatch`
//! (options `i m s x`; the `regex` crate's syntax, so no lookaround or backreferences, and
//! `\d \w \s` are Unicode-aware); `$mergeObjects $objectToArray $arrayToObject $getField`;
//! `$max $min`; `$let`.
//!
//! `$setWindowFields` (`partitionBy`, `sortBy`, `output` with `$shift` and the accumulators
//! above over `window: {documents: [lo, hi]}` or `{range: [lo, hi], unit}`; no window: the
//! whole partition). `$lookup` in pipeline form on the same collection (`from`, `let`,
//! `pipeline`, `as`, with `$$` variables; not nested). Anything else is refused at parse time
//! with `InvalidInput` naming it and its position.
//!
//! **Bounded memory.** A run holds at most [`Pipeline::max_documents`] documents in a stage
//! (100,000 by default); a pipeline that needs more fails with `InvalidInput` instead. A
//! stage that accumulates (`$group`, `$setWindowFields`, `$lookup`) may hold at most
//! [`Pipeline::max_bytes`] more (100 MiB by default, MongoDB's limit per stage).
//!
//! **Bounded time.** A run stops after [`Pipeline::max_time`] (30 s by default) with a
//! `Transient` error, and within milliseconds of its future being dropped: evaluation
//! checks both as it goes, and a stage over many documents runs on tokio's blocking pool,
//! so it cannot starve the executor.

#![warn(missing_docs)]

use std::sync::Arc;

use datastore_api::error::{Error, Result};
use datastore_api::filter::{Filter, Lowered};
use datastore_api::path::FieldPath;
use datastore_api::query::{sort_documents, Direction};
use datastore_api::value::{date_value, Document, Value};

mod aggregate;
mod bind;
mod expr;
mod fetch;
mod fold;
mod group;
mod keys;
mod limits;
#[cfg(test)]
mod limits_tests;
mod objects;
mod plan;
#[cfg(test)]
mod plan_tests;
mod strings;
#[cfg(test)]
mod tests;
mod window;

pub use aggregate::Aggregate;
use expr::{truthy, walk, Expr};
pub use fetch::{aggregate_by_find, aggregate_each_by_find, own_outcome};
use futures::FutureExt;
use group::Group;
pub use limits::{DEFAULT_MAX_BYTES, DEFAULT_MAX_TIME};
pub use plan::{Fetch, Plan};
use window::Windows;

/// Default of [`Pipeline::max_documents`].
pub const DEFAULT_MAX_DOCUMENTS: usize = 100_000;

/// A parsed pipeline (see the module docs).
#[derive(Debug, Clone)]
pub struct Pipeline {
    source: Vec<Value>,
    stages: Vec<Stage>,
    max_documents: usize,
    max_time: std::time::Duration,
    max_bytes: usize,
}

/// One stage.
// A pipeline holds a handful of stages: their size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Stage {
    Match {
        /// The query part (outside `$expr`).
        query: Option<Filter>,
        /// The `$expr` as written (what a plan folds).
        expr: Option<Expr>,
        /// The query and what `expr` implies (see [`fold::implied_filters`]), checked first.
        filter: Option<(Filter, Arc<Lowered>)>,
        /// What is left to evaluate per document: `expr`, unless `filter` states it exactly.
        check: Option<Expr>,
    },
    AddFields(Vec<(Vec<String>, Expr)>),
    Project(Projection),
    Unset(Vec<Vec<String>>),
    Sort(Vec<(FieldPath, Direction)>),
    Limit(usize),
    Skip(usize),
    Count(String),
    Group(Group),
    Unwind {
        path: Vec<String>,
        preserve: bool,
        index: Option<String>,
    },
    Lookup(Box<Lookup>),
    SetWindowFields(Box<Windows>),
}

/// `$lookup` in pipeline form on the same collection: for each document, `stages` run over
/// the collection with the `let` variables bound, and their output is stored at `as_field`.
#[derive(Debug, Clone)]
struct Lookup {
    from: String,
    lets: Vec<(String, Expr)>,
    stages: Vec<Stage>,
    as_field: Vec<String>,
}

#[derive(Debug, Clone)]
enum Projection {
    /// Keep these paths (and `_id` unless excluded) and add computed fields.
    Include {
        keep: Vec<Vec<String>>,
        computed: Vec<(Vec<String>, Expr)>,
        id: bool,
    },
    /// Drop these paths.
    Exclude(Vec<Vec<String>>),
}

pub(crate) fn bad(at: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("aggregate: {at}: {what}"))
}

/// The deepest a pipeline's JSON may nest: the nesting `serde_json` allows in text, so a
/// pipeline given as a value is held to what [`Pipeline::from_json_str`] accepts.
pub const MAX_PIPELINE_DEPTH: usize = 128;

impl Pipeline {
    /// Parses MongoDB's JSON form: an array of stage documents.
    ///
    /// A pipeline nesting deeper than [`MAX_PIPELINE_DEPTH`] levels is refused before
    /// anything walks it, so a value built in code however deep cannot overflow the stack.
    pub fn parse(json: &Value) -> Result<Pipeline> {
        let Value::Array(list) = json else {
            return Err(bad("pipeline", "a pipeline is an array of stage documents"));
        };
        if datastore_api::value::nests_deeper_than(std::iter::once(json), 0, MAX_PIPELINE_DEPTH) {
            return Err(bad(
                "pipeline",
                format!("nests deeper than {MAX_PIPELINE_DEPTH} levels"),
            ));
        }
        let stages = list
            .iter()
            .enumerate()
            .map(|(i, s)| parse_stage(s, &format!("stage {i}"), false))
            .collect::<Result<_>>()?;
        Ok(Pipeline {
            source: list.clone(),
            stages,
            max_documents: DEFAULT_MAX_DOCUMENTS,
            max_time: DEFAULT_MAX_TIME,
            max_bytes: DEFAULT_MAX_BYTES,
        })
    }

    /// Parses a pipeline from JSON text.
    pub fn from_json_str(text: &str) -> Result<Pipeline> {
        let json: Value = serde_json::from_str(text).map_err(|e| {
            Error::invalid_input(format!("aggregate: the pipeline is not JSON: {e}"))
        })?;
        Pipeline::parse(&json)
    }

    /// `"this.<path>"` placeholders bound as MongoDB expression paths: every such string is
    /// replaced by the value at `<path>` in `event` read as `"$<path>"` would read it (`null`
    /// when it has none; through arrays, element by element). The analyzer binds differently
    /// (see the `datastore-analyzer` crate), with [`Pipeline::bind_with`].
    ///
    /// An event nesting deeper than [`MAX_DEPTH`](datastore_api::value::MAX_DEPTH) (no stored
    /// document does) is refused before it is copied.
    pub fn bind_this(&self, event: &Document) -> Result<Pipeline> {
        datastore_api::value::check_document_depth(event, "the event to bind")?;
        let event = Value::Object(event.clone());
        self.bind_with(&|path: &str| Ok(walk(Some(&event), &split(path)).unwrap_or(Value::Null)))
    }

    /// Replaces every string value `"this.<path>"` by `resolve(<path>)`. A value bound where
    /// an expression is read and that it could read as more than data (a `$` string, a
    /// document, an array holding one) is bound as `{"$literal": …}`; in a query (a
    /// `$match` outside `$expr`) values are data already and are bound as they are.
    ///
    /// Every placeholder is resolved (so that one that cannot be is an error, wherever it
    /// is), but the pipeline ends at a `$match` that is then always false: nothing reaches
    /// the stages after it, so they are not parsed (an analyzer rule gated on another error
    /// code costs almost nothing to bind), and a server that runs pipelines natively is
    /// sent the shorter pipeline, with the same empty result.
    pub fn bind_with(&self, resolve: &dyn Fn(&str) -> Result<Value>) -> Result<Pipeline> {
        self.bind_stages(resolve, true)
    }

    /// [`Pipeline::bind_with`], keeping every stage after a `$match` that is always false
    /// (to explain what the pipeline reads once such a gate passes).
    pub fn bind_whole_with(&self, resolve: &dyn Fn(&str) -> Result<Value>) -> Result<Pipeline> {
        self.bind_stages(resolve, false)
    }

    fn bind_stages(
        &self,
        resolve: &dyn Fn(&str) -> Result<Value>,
        end_at_false_gate: bool,
    ) -> Result<Pipeline> {
        // Each placeholder resolved once, all of them first.
        let mut values: Vec<(&str, Value)> = Vec::new();
        for path in bind::placeholders(&self.source) {
            if !values.iter().any(|(p, _)| *p == path) {
                values.push((path, resolve(path)?));
            }
        }
        let known = |path: &str| {
            values
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::permanent(format!("aggregate: this.{path} was not resolved")))
        };
        let mut stages = Vec::with_capacity(self.source.len());
        let mut bound = Vec::with_capacity(self.source.len());
        for (i, s) in self.source.iter().enumerate() {
            let json = bind::stage(s, &known)?;
            let stage = parse_stage(&json, &format!("stage {i}"), false)?;
            let ends = matches!(&stage, Stage::Match { expr: Some(e), .. }
                if e.constant_value().is_some_and(|v| !truthy(Some(&v))));
            stages.push(stage);
            bound.push(json);
            if ends && end_at_false_gate {
                break;
            }
        }
        Ok(Pipeline {
            source: bound,
            stages,
            max_documents: self.max_documents,
            max_time: self.max_time,
            max_bytes: self.max_bytes,
        })
    }

    /// The stages as JSON (what a provider that runs pipelines natively sends).
    pub fn stages_json(&self) -> &[Value] {
        &self.source
    }

    /// The most documents a stage may hold.
    pub fn max_documents(&self) -> usize {
        self.max_documents
    }

    /// With another bound on the documents a stage may hold.
    pub fn with_max_documents(mut self, max: usize) -> Pipeline {
        self.max_documents = max.max(1);
        self
    }

    /// How long a run may take before it stops with a
    /// temporary (retryable) [`Backend`](datastore_api::ErrorKind::Backend) error naming the limit ([`DEFAULT_MAX_TIME`]
    /// unless set). A run is also cancelled within milliseconds when its future is dropped.
    pub fn max_time(&self) -> std::time::Duration {
        self.max_time
    }

    /// With another time limit (see [`Pipeline::max_time`]); at least a millisecond.
    pub fn with_max_time(mut self, max: std::time::Duration) -> Pipeline {
        self.max_time = max.max(std::time::Duration::from_millis(1));
        self
    }

    /// The most bytes (estimated) a stage may accumulate beyond its input: `$group`'s
    /// accumulators, `$setWindowFields`' outputs, what `$lookup` embeds
    /// ([`DEFAULT_MAX_BYTES`] unless set). Past it
    /// the run fails with [`InvalidInput`](datastore_api::ErrorKind::InvalidInput).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// With another byte limit per stage (see [`Pipeline::max_bytes`]).
    pub fn with_max_bytes(mut self, max: usize) -> Pipeline {
        self.max_bytes = max.max(1);
        self
    }

    /// Plans a run (see [`Plan`]): constants folded, the leading `$match` stages' filter to
    /// fetch by, and the rest.
    pub fn plan(&self) -> Result<Plan> {
        Plan::new(self, date_value(chrono::Utc::now())?)
    }

    /// Runs the whole pipeline over `docs`, the whole collection (in any order): `$lookup`
    /// stages read it too. What the providers do, on documents in memory.
    pub fn run(&self, docs: Vec<Document>) -> Result<Vec<Document>> {
        let mut plan = self.plan()?;
        plan.in_place = true;
        let source = plan::InMemory::new(docs);
        plan.execute(&source)
            .now_or_never()
            .unwrap_or_else(|| Err(Error::permanent("aggregate: an in-memory run waited")))
    }

    fn stage_name(&self, i: usize) -> &str {
        self.source
            .get(i)
            .and_then(Value::as_object)
            .and_then(|o| o.keys().next())
            .map_or("?", String::as_str)
    }
}

impl Pipeline {
    /// Whether every `$lookup` joins `collection` (see [`check_lookup_from`]).
    pub(crate) fn check_lookups(&self, collection: &str) -> Result<()> {
        for stage in &self.stages {
            if let Stage::Lookup(l) = stage {
                check_lookup_from(collection, &l.from)?;
            }
        }
        Ok(())
    }
}

/// A `$lookup`'s `from` must name the collection being aggregated (`collection`): by that
/// name or by NVSentinel's MongoDB name (`HealthEvents` for `health_events`), so that rules
/// run as written on every provider.
pub(crate) fn check_lookup_from(collection: &str, from: &str) -> Result<()> {
    let key = |s: &str| s.replace('_', "").to_ascii_lowercase();
    if key(collection) == key(from) {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "aggregate: $lookup from {from:?}: only the collection itself ({collection}) can be joined"
        )))
    }
}

/// What every stage of one run sees.
struct Ctx<'a> {
    vars: &'a Vars,
    max: usize,
}

/// The variables of an evaluation.
#[derive(Debug, Clone)]
pub(crate) struct Vars {
    now: Value,
    bound: Vec<(String, Value)>,
}

impl Vars {
    fn new(now: Value) -> Vars {
        Vars {
            now,
            bound: Vec::new(),
        }
    }

    /// For constant expressions, which read no variable.
    pub(crate) fn constant() -> Vars {
        Vars::new(Value::Null)
    }

    pub(crate) fn get(&self, name: &str, doc: &Value) -> Result<Option<Value>> {
        Ok(match name {
            "ROOT" | "CURRENT" => Some(doc.clone()),
            "NOW" => Some(self.now.clone()),
            "REMOVE" => None,
            _ => match self.bound.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => Some(v.clone()),
                None => {
                    return Err(Error::invalid_input(format!(
                        "aggregate: unknown variable $${name}"
                    )))
                }
            },
        })
    }

    /// Whether a `let` (or `$$this`-style) variable of that name is bound.
    pub(crate) fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|(n, _)| n == name)
    }

    pub(crate) fn with(&self, name: &str, value: Value) -> Vars {
        let mut v = self.clone();
        v.bound.push((name.to_owned(), value));
        v
    }
}

/// Parses one stage at `place`; `in_lookup` inside a `$lookup`'s pipeline, where another
/// `$lookup` is refused.
fn parse_stage(stage: &Value, place: &str, in_lookup: bool) -> Result<Stage> {
    let Value::Object(o) = stage else {
        return Err(bad(place, "a stage is a document"));
    };
    let (Some((name, spec)), 1) = (o.iter().next(), o.len()) else {
        return Err(bad(place, "a stage document has exactly one key"));
    };
    let at = format!("{place} ({name})");
    Ok(match name.as_str() {
        "$match" => parse_match(spec, &at)?,
        "$addFields" | "$set" => Stage::AddFields(computed_fields(spec, &at)?),
        "$project" => Stage::Project(parse_projection(spec, &at)?),
        "$unset" => Stage::Unset(match spec {
            Value::String(s) => vec![split(s)],
            Value::Array(list) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(split)
                        .ok_or_else(|| bad(&at, "field names must be strings"))
                })
                .collect::<Result<_>>()?,
            _ => return Err(bad(&at, "takes a field name or an array of them")),
        }),
        "$sort" => {
            let keys = sort_keys(spec, &at)?;
            if keys.is_empty() {
                return Err(bad(&at, "needs at least one key"));
            }
            Stage::Sort(keys)
        }
        "$limit" | "$skip" => {
            // MongoDB's integers are 64-bit signed: a larger count is not one.
            let n = spec
                .as_u64()
                .filter(|&n| i64::try_from(n).is_ok())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(&at, "takes a non-negative 64-bit integer"))?;
            if name == "$limit" {
                if n == 0 {
                    return Err(bad(&at, "the limit must be positive"));
                }
                Stage::Limit(n)
            } else {
                Stage::Skip(n)
            }
        }
        "$count" => match spec {
            Value::String(s) if !s.is_empty() && !s.starts_with('$') && !s.contains('.') => {
                Stage::Count(s.clone())
            }
            _ => return Err(bad(&at, "takes a field name (not empty, no '$' or '.')")),
        },
        "$group" => Stage::Group(Group::parse(spec, &at)?),
        "$unwind" => {
            let (path, preserve, index) = match spec {
                Value::String(s) => (s.clone(), false, None),
                Value::Object(u) => (
                    u.get("path")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&at, "needs a \"path\""))?
                        .to_owned(),
                    u.get("preserveNullAndEmptyArrays")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    u.get("includeArrayIndex")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                ),
                _ => return Err(bad(&at, "takes a \"$path\" or {path, …}")),
            };
            let path = path
                .strip_prefix('$')
                .filter(|p| !p.is_empty())
                .ok_or_else(|| bad(&at, "the path must start with '$'"))?;
            Stage::Unwind {
                path: split(path),
                preserve,
                index,
            }
        }
        "$setWindowFields" => Stage::SetWindowFields(Box::new(Windows::parse(spec, &at)?)),
        "$lookup" if in_lookup => {
            return Err(bad(
                &at,
                "a $lookup inside a $lookup's pipeline is not supported",
            ))
        }
        "$lookup" => Stage::Lookup(Box::new(parse_lookup(spec, &at)?)),
        other => return Err(bad(&at, format!("unsupported stage {other}"))),
    })
}

fn parse_lookup(spec: &Value, at: &str) -> Result<Lookup> {
    let Value::Object(o) = spec else {
        return Err(bad(at, "takes a document"));
    };
    if o.contains_key("localField") || o.contains_key("foreignField") {
        return Err(bad(
            at,
            "only the pipeline form (from, let, pipeline, as) is supported",
        ));
    }
    let text = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(at, format!("needs {k:?} (a string)")))
    };
    let lets = match o.get("let") {
        None => Vec::new(),
        Some(Value::Object(l)) => l
            .iter()
            .map(|(k, e)| Ok((k.clone(), Expr::parse(e, &format!("{at}.let.{k}"))?)))
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad(at, "\"let\" must be a document")),
    };
    let Some(Value::Array(sub)) = o.get("pipeline") else {
        return Err(bad(at, "needs \"pipeline\" (an array of stages)"));
    };
    let stages = sub
        .iter()
        .enumerate()
        .map(|(i, s)| parse_stage(s, &format!("{at}.pipeline[{i}]"), true))
        .collect::<Result<_>>()?;
    Ok(Lookup {
        from: text("from")?,
        lets,
        stages,
        as_field: split(&text("as")?),
    })
}

/// A `{field: 1 | -1, …}` sort specification.
pub(crate) fn sort_keys(spec: &Value, at: &str) -> Result<Vec<(FieldPath, Direction)>> {
    let Value::Object(keys) = spec else {
        return Err(bad(at, "a sort is a document of fields and 1 or -1"));
    };
    keys.iter()
        .map(|(k, d)| {
            let dir = match d.as_i64() {
                Some(1) => Direction::Ascending,
                Some(-1) => Direction::Descending,
                _ => return Err(bad(at, format!("{k}: the direction must be 1 or -1"))),
            };
            Ok((FieldPath::parse(k)?, dir))
        })
        .collect()
}

pub(crate) fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

fn parse_match(spec: &Value, at: &str) -> Result<Stage> {
    let Value::Object(q) = spec else {
        return Err(bad(at, "takes a query document"));
    };
    let mut rest = q.clone();
    let expr = match rest.remove("$expr") {
        Some(e) => Some(Expr::parse(&e, &format!("{at}.$expr"))?),
        None => None,
    };
    let query = if rest.is_empty() {
        None
    } else {
        Some(Filter::from_query_json(&Value::Object(rest)).map_err(|e| bad(at, e.message()))?)
    };
    matching(query, expr, at)
}

/// A `$match` stage of a query and an expression. As MongoDB rewrites `$expr`, the
/// conditions it implies that a query states are checked first, so a document they exclude
/// never evaluates the rest (nor its errors).
fn matching(query: Option<Filter>, expr: Option<Expr>, at: &str) -> Result<Stage> {
    let mut parts: Vec<Filter> = query.iter().cloned().collect();
    parts.extend(expr.iter().flat_map(fold::implied_filters));
    // An expression the filter states exactly (a time window) needs no evaluation.
    let check = expr.clone().filter(|e| !fold::exactly_bounds(e));
    let filter = match parts.len() {
        0 => None,
        _ => {
            let f = match parts.len() {
                1 => parts.remove(0),
                _ => Filter::And(parts),
            };
            let lowered = f.lower().map_err(|e| bad(at, e.message()))?;
            Some((f, Arc::new(lowered)))
        }
    };
    Ok(Stage::Match {
        query,
        expr,
        filter,
        check,
    })
}

fn computed_fields(spec: &Value, at: &str) -> Result<Vec<(Vec<String>, Expr)>> {
    let Value::Object(o) = spec else {
        return Err(bad(at, "takes a document of fields"));
    };
    let fields = flattened(o, at)?
        .iter()
        .map(|(k, e)| Ok((split(k), Expr::parse(e, &format!("{at}.{k}"))?)))
        .collect::<Result<Vec<_>>>()?;
    // As MongoDB: a path and a path below it (`a` and `a.b`) conflict.
    for (i, (a, _)) in fields.iter().enumerate() {
        if let Some((b, _)) = fields[i + 1..]
            .iter()
            .find(|(b, _)| a.starts_with(b) || b.starts_with(a))
        {
            return Err(bad(
                at,
                format!(
                    "the paths '{}' and '{}' conflict: one would overwrite the other",
                    a.join("."),
                    b.join(".")
                ),
            ));
        }
    }
    Ok(fields)
}

/// A `$project` / `$addFields` specification with its nested field documents as dotted
/// paths, as MongoDB reads them: `{a: {b: 1}}` is `{"a.b": 1}` (an operator document such as
/// `{a: {$size: "$x"}}` is a value; an empty nested document is an error).
fn flattened(spec: &serde_json::Map<String, Value>, at: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::with_capacity(spec.len());
    for (k, v) in spec {
        match v {
            Value::Object(inner) if inner.is_empty() => {
                return Err(bad(at, format!("{k}: an empty nested specification")))
            }
            Value::Object(inner) if !inner.keys().any(|key| key.starts_with('$')) => {
                for (path, value) in flattened(inner, &format!("{at}.{k}"))? {
                    out.push((format!("{k}.{path}"), value));
                }
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    Ok(out)
}

fn parse_projection(spec: &Value, at: &str) -> Result<Projection> {
    let Value::Object(o) = spec else {
        return Err(bad(at, "takes a document of fields"));
    };
    let flag = |v: &Value| match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    };
    let mut keep = Vec::new();
    let mut drop = Vec::new();
    let mut computed = Vec::new();
    let mut id = true;
    for (k, v) in &flattened(o, at)? {
        match (k.as_str(), flag(v)) {
            ("_id", Some(b)) => id = b,
            (_, Some(true)) => keep.push(split(k)),
            (_, Some(false)) => drop.push(split(k)),
            (_, None) => computed.push((split(k), Expr::parse(v, &format!("{at}.{k}"))?)),
        }
    }
    if !keep.is_empty() || !computed.is_empty() {
        if !drop.is_empty() {
            return Err(bad(at, "cannot mix inclusion and exclusion (except _id)"));
        }
        return Ok(Projection::Include { keep, computed, id });
    }
    if o.is_empty() {
        return Err(bad(at, "needs at least one field"));
    }
    if !id {
        drop.push(vec!["_id".into()]);
    }
    Ok(if drop.is_empty() {
        // Only `_id: 1`: the documents keep nothing but their id.
        Projection::Include { keep, computed, id }
    } else {
        Projection::Exclude(drop)
    })
}

fn run_stage(stage: &Stage, docs: Vec<Document>, ctx: &Ctx<'_>) -> Result<Vec<Document>> {
    let (vars, max) = (ctx.vars, ctx.max);
    Ok(match stage {
        Stage::Match { filter, check, .. } => {
            let mut out = Vec::new();
            for d in docs {
                if let Some((_, lowered)) = filter {
                    if !lowered.matches(&d) {
                        continue;
                    }
                }
                let doc = Value::Object(d);
                if let Some(e) = check {
                    if !truthy(e.eval(&doc, vars)?.as_ref()) {
                        continue;
                    }
                }
                if let Value::Object(d) = doc {
                    out.push(d);
                }
            }
            out
        }
        Stage::AddFields(fields) => docs
            .into_iter()
            .map(|d| {
                let doc = Value::Object(d);
                let values = fields
                    .iter()
                    .map(|(p, e)| Ok((p, e.eval(&doc, vars)?)))
                    .collect::<Result<Vec<_>>>()?;
                let Value::Object(mut d) = doc else {
                    unreachable_doc()?
                };
                for (path, v) in values {
                    match v {
                        Some(v) => set_path(&mut d, path, v),
                        None => {
                            // The documents on the way exist even when the value is missing.
                            parents_of_missing(&mut d, path);
                            remove_path(&mut d, path);
                        }
                    }
                }
                Ok(d)
            })
            .collect::<Result<_>>()?,
        Stage::Project(Projection::Exclude(paths)) | Stage::Unset(paths) => docs
            .into_iter()
            .map(|mut d| {
                for p in paths {
                    remove_path(&mut d, p);
                }
                d
            })
            .collect(),
        Stage::Project(Projection::Include { keep, computed, id }) => docs
            .into_iter()
            .map(|d| {
                let doc = Value::Object(d);
                let mut out = Document::new();
                if *id {
                    if let Some(v) = doc.get("_id") {
                        out.insert("_id".into(), v.clone());
                    }
                }
                if let Value::Object(src) = &doc {
                    for path in keep {
                        keep_path(&mut out, src, path);
                    }
                }
                for (path, e) in computed {
                    match e.eval(&doc, vars)? {
                        Some(v) => set_path(&mut out, path, v),
                        None => parents_of_missing(&mut out, path),
                    }
                }
                Ok(out)
            })
            .collect::<Result<_>>()?,
        Stage::Sort(keys) => {
            let mut docs = docs;
            sort_documents(&mut docs, keys);
            docs
        }
        Stage::Limit(n) => docs.into_iter().take(*n).collect(),
        Stage::Skip(n) => docs.into_iter().skip(*n).collect(),
        Stage::Count(name) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                let mut d = Document::new();
                d.insert(name.clone(), Value::from(docs.len()));
                vec![d]
            }
        }
        Stage::Group(g) => g.run(docs, vars, max)?,
        // Run by the plan, which fetches for each document.
        Stage::Lookup(_) => return Err(Error::permanent("aggregate: a $lookup outside a plan")),
        Stage::SetWindowFields(w) => w.run(docs, vars)?,
        Stage::Unwind {
            path,
            preserve,
            index,
        } => {
            let mut out = Vec::new();
            for d in docs {
                let doc = Value::Object(d);
                let at = walk_plain(&doc, path).cloned();
                let Value::Object(d) = doc else {
                    unreachable_doc()?
                };
                match at {
                    Some(Value::Array(items)) if !items.is_empty() => {
                        for (i, item) in items.into_iter().enumerate() {
                            let mut e = d.clone();
                            set_path(&mut e, path, item);
                            if let Some(ix) = index {
                                e.insert(ix.clone(), Value::from(i));
                            }
                            out.push(e);
                            if out.len() > max {
                                return Err(Error::invalid_input(format!(
                                    "aggregate: $unwind produces more than {max} documents"
                                )));
                            }
                        }
                    }
                    Some(Value::Array(_)) | None | Some(Value::Null) => {
                        if *preserve {
                            let mut e = d;
                            // MongoDB drops an empty array (null stays null).
                            if matches!(at, Some(Value::Array(_))) {
                                remove_path(&mut e, path);
                            }
                            if let Some(ix) = index {
                                e.insert(ix.clone(), Value::Null);
                            }
                            out.push(e);
                        }
                    }
                    Some(_) => {
                        let mut e = d;
                        if let Some(ix) = index {
                            e.insert(ix.clone(), Value::Null);
                        }
                        out.push(e);
                    }
                }
            }
            out
        }
    })
}

fn unreachable_doc<T>() -> Result<T> {
    Err(Error::permanent(
        "aggregate: a document turned into a non-document",
    ))
}

/// Follows `path` through objects only.
fn walk_plain<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(doc, |cur, seg| cur.as_object()?.get(seg))
}

/// Sets `path` in `doc`, creating (or replacing non-document values with) documents on the way.
pub(crate) fn set_path(doc: &mut Document, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = doc;
    for seg in parents {
        let slot = cur
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Document::new()));
        if !slot.is_object() {
            *slot = Value::Object(Document::new());
        }
        let Value::Object(next) = slot else { return };
        cur = next;
    }
    cur.insert(last.clone(), value);
}

/// What a computed field whose value is missing leaves: the documents on the way to it,
/// made where missing. An array or other value on the way is left as it is.
fn parents_of_missing(doc: &mut Document, path: &[String]) {
    let Some((_, parents)) = path.split_last() else {
        return;
    };
    let mut cur = doc;
    for seg in parents {
        let slot = cur
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Document::new()));
        match slot {
            Value::Object(next) if !next.contains_key("$date") => cur = next,
            _ => return,
        }
    }
}

/// An inclusion projection of `path` from `src` into `out`, as MongoDB's: the documents on
/// the way are kept (empty if nothing below them is), an array on the way is projected
/// element by element (elements that are not documents dropped), anything else ends it.
fn keep_path(out: &mut Document, src: &Document, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(v) = src.get(first) else {
        return;
    };
    if rest.is_empty() {
        out.insert(first.clone(), v.clone());
        return;
    }
    // A scalar below the path ends it (and leaves what an earlier path kept there).
    if is_container(v) {
        // Taken in place (not removed), so the field keeps its position.
        let already = out.get_mut(first).map(std::mem::take);
        let kept = keep_below(already, v, rest);
        out.insert(first.clone(), kept);
    }
}

/// A document (not a date) or an array: what an inclusion projection descends into.
fn is_container(v: &Value) -> bool {
    v.is_array() || (v.is_object() && datastore_api::value::as_date(v).is_none())
}

/// What [`keep_path`] keeps of the container `v` for the rest of the path, merged into
/// `already` (what an earlier kept path put there).
fn keep_below(already: Option<Value>, v: &Value, rest: &[String]) -> Value {
    match v {
        Value::Array(items) => {
            let mut before = match already {
                Some(Value::Array(a)) => a.into_iter(),
                _ => Vec::new().into_iter(),
            };
            // Each kept element takes its turn of `before`, in order.
            Value::Array(
                items
                    .iter()
                    .filter(|i| is_container(i))
                    .map(|i| keep_below(before.next(), i, rest))
                    .collect(),
            )
        }
        _ => {
            let mut o = match already {
                Some(Value::Object(o)) => o,
                _ => Document::new(),
            };
            if let Value::Object(inner) = v {
                keep_path(&mut o, inner, rest);
            }
            Value::Object(o)
        }
    }
}

fn remove_path(doc: &mut Document, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = doc;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(Value::Object(next)) => cur = next,
            _ => return,
        }
    }
    cur.remove(last);
}
