//! Planning a pipeline run: parse → plan → execute.
//!
//! A [`Plan`] is data: the filter the candidates are fetched by (`scan`, the conjuncts of
//! every leading `$match` an index can answer), the stages left, and what planning decided.
//! It prints as an explanation (`{plan}`).
//!
//! - **Constant folding.** `$$NOW` and bound placeholders are known before any document is
//!   read: every sub-expression that reads nothing else is evaluated once. A `$match` whose
//!   `$expr` is then constant is decided: true drops it, false means the pipeline returns
//!   nothing without touching the store. A top-level field an `$addFields` sets to a constant
//!   is known to the stages after it.
//! - **Pushdown.** The leading `$match` stages give their query and what their `$expr` implies
//!   ([`Filter::ExprCmp`] bounds, equalities) to the scan, in any order up to the first one
//!   whose `$expr` is still evaluated per document (a time window is not: its bounds say
//!   all of it; a gate folds away); that one's own conditions too.
//! - **Correlated `$lookup`.** For each document that reaches it, the `let` variables are
//!   bound and the sub-pipeline is planned again: its scan is the foreign fetch (an index
//!   range such as one node's last day), shared by documents with the same scan.
//! - **Early stop.** When everything after the scan works document by document and ends in
//!   `$limit n`, candidates are fetched in growing batches and the run stops at `n` results.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::expr::{truthy, Expr};
use super::fold::{fold, Known};
use super::limits::{self, Limits};
use super::{
    check_lookup_from, matching, run_stage, set_path, unreachable_doc, Ctx, Lookup, Pipeline,
    Stage, Vars,
};
use datastore_api::error::{Error, Result};
use datastore_api::filter::Filter;
use datastore_api::value::{Document, Value};

mod explain;

/// Where a plan's documents come from: a collection (its `find`), or documents in memory.
#[async_trait]
pub trait Fetch: Send + Sync {
    /// The collection's name (a `$lookup` must read the collection itself).
    fn name(&self) -> &str;
    /// The documents `filter` matches in `_id` order, from `skip` on, at most `limit`.
    async fn fetch(&self, filter: &Filter, skip: u64, limit: u64) -> Result<Vec<Document>>;
}

/// Documents in memory as a [`Fetch`] (the conformance model's store).
pub(super) struct InMemory {
    docs: Vec<Document>,
}

impl InMemory {
    pub(super) fn new(mut docs: Vec<Document>) -> InMemory {
        docs.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        InMemory { docs }
    }
}

fn id_of(d: &Document) -> &str {
    d.get("_id").and_then(Value::as_str).unwrap_or("")
}

#[async_trait]
impl Fetch for InMemory {
    fn name(&self) -> &str {
        // In memory every `$lookup` reads these documents.
        ""
    }

    async fn fetch(&self, filter: &Filter, skip: u64, limit: u64) -> Result<Vec<Document>> {
        let lowered = filter.lower()?;
        Ok(self
            .docs
            .iter()
            .filter(|d| lowered.matches(d))
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }
}

/// A pipeline planned for one run (see the module docs).
#[derive(Debug, Clone)]
pub struct Plan {
    vars: Vars,
    max: usize,
    max_time: std::time::Duration,
    max_bytes: usize,
    /// Every stage on the calling thread ([`Pipeline::run`], which cannot wait for another).
    pub(super) in_place: bool,
    names: Vec<String>,
    planned: Planned,
    /// `Some(n)`: the stages left stream document by document into a final `$limit n`.
    streaming: Option<usize>,
}

/// Stages planned with what is known.
#[derive(Debug, Clone)]
struct Planned {
    /// The `$match` stage that folded to false: the pipeline returns nothing.
    nothing_at: Option<usize>,
    scan: Filter,
    /// The stages left, with their index in the pipeline.
    rest: Vec<(usize, Stage)>,
    /// What planning did, stage by stage.
    notes: Vec<String>,
}

/// Plans `stages` with the variables in `vars`; `decide` lets a `$match` that folds to false
/// decide the run (off for an explanation of what a rule fetches once its gates pass).
fn plan_stages(
    stages: &[Stage],
    vars: &Vars,
    decide: bool,
    name: &dyn Fn(usize) -> String,
) -> Result<Planned> {
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut rest = Vec::with_capacity(stages.len());
    let mut notes = Vec::new();
    let mut nothing_at = None;
    for (i, stage) in stages.iter().enumerate() {
        let known = Known {
            vars,
            fields: &fields,
        };
        match stage {
            Stage::Match { query, expr, .. } => {
                let folded = expr.as_ref().map(|e| fold(e, &known));
                match &folded {
                    Some(Expr::Literal(v)) if truthy(Some(v)) => {
                        notes.push(format!("{}: $expr is always true", name(i)));
                        if query.is_none() {
                            continue;
                        }
                        rest.push((i, matching(query.clone(), None, &name(i))?));
                    }
                    Some(Expr::Literal(_)) if decide => {
                        notes.push(format!(
                            "{}: $expr is always false: nothing to fetch",
                            name(i)
                        ));
                        nothing_at = Some(i);
                        break;
                    }
                    _ => rest.push((i, matching(query.clone(), folded, &name(i))?)),
                }
            }
            Stage::AddFields(list) => {
                let folded: Vec<(Vec<String>, Expr)> = list
                    .iter()
                    .map(|(p, e)| (p.clone(), fold(e, &known)))
                    .collect();
                for (path, e) in &folded {
                    let Some(first) = path.first() else { continue };
                    fields.retain(|(n, _)| n != first);
                    if let (1, Expr::Literal(v)) = (path.len(), e) {
                        notes.push(format!("{}: {first} is a constant", name(i)));
                        fields.push((first.clone(), v.clone()));
                    }
                }
                rest.push((i, Stage::AddFields(folded)));
            }
            Stage::Sort(_) | Stage::Limit(_) | Stage::Skip(_) => rest.push((i, stage.clone())),
            other => {
                // Any other stage reshapes the documents: nothing about them is known after it.
                fields.clear();
                rest.push((i, other.clone()));
            }
        }
    }
    // The leading `$match` stages: their filters are the scan; a stage that is a filter only
    // is answered by it whole.
    // A stage with an expression left to evaluate ends the pushdown: that expression may fail
    // on a document a later stage would exclude, and it must still fail there (as it does
    // where stages run in order). A constant one (a gate kept for an explanation) cannot.
    let mut scan = Vec::new();
    let mut lead = 0;
    let mut in_order = true;
    while let Some((_, Stage::Match { filter, check, .. })) = rest.get(lead) {
        if let Some((f, _)) = filter {
            scan.push(f.clone());
        }
        match check {
            None => {
                rest.remove(lead);
            }
            Some(Expr::Literal(_)) => lead += 1,
            Some(_) => {
                lead += 1;
                in_order = false;
                break;
            }
        }
    }
    if in_order {
        scan.extend(past_added_fields(&rest[lead..]));
    }
    Ok(Planned {
        nothing_at,
        scan: Filter::And(scan),
        rest,
        notes,
    })
}

/// What the `$match` stages after the leading ones imply of the stored documents, while
/// only `$addFields` and `$match` stages come between (they drop documents but change no
/// field they do not write): conditions on fields no `$addFields` wrote, and through a
/// field made key by key from a list ([`super::fold::entries_source`]), on that list.
fn past_added_fields(rest: &[(usize, Stage)]) -> Vec<Filter> {
    let mut written: Vec<String> = Vec::new();
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for (_, stage) in rest {
        match stage {
            Stage::AddFields(list) => {
                for (path, e) in list {
                    let Some(first) = path.first() else { continue };
                    sources.retain(|(n, _)| n != first);
                    if let (1, Some(source)) = (path.len(), super::fold::entries_source(e)) {
                        sources.push((first.clone(), source));
                    }
                    written.push(first.clone());
                }
            }
            Stage::Match {
                filter: Some((f, _)),
                ..
            } if !written.is_empty() => {
                out.extend(super::fold::before_fields(f, &written, &sources));
            }
            Stage::Match { .. } => {}
            _ => break,
        }
    }
    out
}

/// Stages that work on each document alone.
fn per_document(stage: &Stage) -> bool {
    matches!(
        stage,
        Stage::Match { .. }
            | Stage::AddFields(_)
            | Stage::Project(_)
            | Stage::Unset(_)
            | Stage::Unwind { .. }
            | Stage::Lookup(_)
    )
}

/// From how many documents a stage runs on tokio's blocking pool rather than in place.
const OFF_THE_EXECUTOR: usize = 256;

/// One more than `max` documents: fetching that many shows that a stage would hold too many.
pub(super) fn bound(max: usize) -> u64 {
    (max as u64).saturating_add(1)
}

/// The foreign documents fetched for `$lookup`s, by their scan: for one run, or for the
/// pipelines of one `aggregate_each` (the analyzer's XID 74 rules share their lookup).
#[derive(Debug, Default)]
pub struct Fetched(HashMap<String, Arc<Vec<Document>>>);

impl Fetched {
    fn get(&self, key: &str) -> Option<&Arc<Vec<Document>>> {
        self.0.get(key)
    }

    fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn insert(&mut self, key: String, docs: Arc<Vec<Document>>) {
        self.0.insert(key, docs);
    }
}

impl Plan {
    /// Plans `pipeline` with `now` as `$$NOW`.
    pub fn new(pipeline: &Pipeline, now: Value) -> Result<Plan> {
        Plan::with(pipeline, now, true)
    }

    fn with(pipeline: &Pipeline, now: Value, decide: bool) -> Result<Plan> {
        let names: Vec<String> = (0..pipeline.stages.len())
            .map(|i| format!("stage {i} ({})", pipeline.stage_name(i)))
            .collect();
        let vars = Vars::new(now);
        let planned = plan_stages(&pipeline.stages, &vars, decide, &|i| {
            names.get(i).cloned().unwrap_or_default()
        })?;
        let streaming = match planned.rest.split_last() {
            Some(((_, Stage::Limit(n)), before)) if before.iter().all(|(_, s)| per_document(s)) => {
                Some(*n)
            }
            _ => None,
        };
        Ok(Plan {
            vars,
            max: pipeline.max_documents,
            max_time: pipeline.max_time,
            max_bytes: pipeline.max_bytes,
            in_place: false,
            names,
            planned,
            streaming,
        })
    }

    /// What the run fetches by: the leading `$match` stages' filter; `None` when planning
    /// decided that the pipeline returns nothing.
    pub fn scan(&self) -> Option<&Filter> {
        match self.planned.nothing_at {
            Some(_) => None,
            None => Some(&self.planned.scan),
        }
    }

    /// Whether planning decided that the pipeline returns nothing (a `$match` that is
    /// always false), so that running it touches no store.
    pub fn returns_nothing(&self) -> bool {
        self.planned.nothing_at.is_some()
    }

    /// Whether the run stops early: the stages after the scan work document by document and
    /// end in `$limit`, so candidates go through them one by one until there are enough
    /// results (fetched in growing batches when the scan has no index bound).
    pub fn stops_early(&self) -> bool {
        self.streaming.is_some()
    }

    /// Whether the candidates come in growing batches: an early stop with a scan that has no
    /// index bound (see [`Plan::stops_early`]).
    pub fn fetches_in_batches(&self) -> bool {
        self.stops_early() && !self.bounded()
    }

    /// The indexes of the stages left to run after the scan.
    pub fn stages_left(&self) -> Vec<usize> {
        self.planned.rest.iter().map(|(i, _)| *i).collect()
    }

    /// What planning decided, stage by stage (folded expressions, constants).
    pub fn notes(&self) -> &[String] {
        &self.planned.notes
    }

    /// Whether the scan has a condition an index can answer (an equality with a value, or a
    /// numeric bound), rather than reading every document the rest lets through.
    pub fn bounded(&self) -> bool {
        fn any(f: &Filter) -> bool {
            match f {
                Filter::And(parts) => parts.iter().any(any),
                Filter::Eq(_, v) => !matches!(v, datastore_api::filter::Scalar::Null),
                Filter::In(_, vs) => !vs.is_empty(),
                Filter::EqValue(..) => true,
                Filter::ExprCmp(..)
                | Filter::Gt(..)
                | Filter::Gte(..)
                | Filter::Lt(..)
                | Filter::Lte(..) => true,
                _ => false,
            }
        }
        self.scan().is_none_or(any)
    }

    /// Runs the plan, fetching from `source`.
    pub async fn execute(&self, source: &dyn Fetch) -> Result<Vec<Document>> {
        self.execute_sharing(source, &mut Fetched::default()).await
    }

    /// [`Plan::execute`] with the lookups' fetches of other plans of the same moment.
    pub async fn execute_sharing(
        &self,
        source: &dyn Fetch,
        fetched: &mut Fetched,
    ) -> Result<Vec<Document>> {
        if self.returns_nothing() {
            return Ok(Vec::new());
        }
        let limits = self.limits();
        let _cancel = limits.cancel_on_drop();
        // Without an index bound, candidates come in growing batches: a few may be enough.
        // With one, they come at once (a batch's `LIMIT` could lead the server's planner to
        // walk the whole table in `_id` order), and still go through the rest one by one.
        if let (Some(n), true) = (self.streaming, self.fetches_in_batches()) {
            return self.stream(source, n, fetched, &limits).await;
        }
        let docs = source.fetch(&self.planned.scan, 0, bound(self.max)).await?;
        self.check_size(docs.len())?;
        self.run_fetched(source, docs, fetched, &limits).await
    }

    /// The limits of a run starting now.
    fn limits(&self) -> Limits {
        Limits::start(self.max_time, self.max_bytes)
    }

    /// The stages after the scan over `docs`; with an early stop, document by document
    /// until there are enough results.
    async fn run_fetched(
        &self,
        source: &dyn Fetch,
        docs: Vec<Document>,
        fetched: &mut Fetched,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        let Some(n) = self.streaming else {
            return self
                .run_rest(source, &self.planned.rest, docs, fetched, limits)
                .await;
        };
        let tail = &self.planned.rest[..self.planned.rest.len().saturating_sub(1)];
        // A few documents at a time: a `$lookup` among the stages fetches for them together.
        let mut out = Vec::new();
        let mut docs = docs.into_iter().peekable();
        let mut chunk = 1;
        while docs.peek().is_some() {
            let part: Vec<Document> = docs.by_ref().take(chunk).collect();
            out.extend(self.run_rest(source, tail, part, fetched, limits).await?);
            if out.len() >= n {
                out.truncate(n);
                break;
            }
            chunk = (chunk * 4).min(256);
        }
        Ok(out)
    }

    /// Runs the stages after the scan over `candidates` (what the scan selects, fetched
    /// elsewhere: a fetch shared with other pipelines).
    pub async fn execute_on(
        &self,
        source: &dyn Fetch,
        candidates: Vec<Document>,
        fetched: &mut Fetched,
    ) -> Result<Vec<Document>> {
        if self.returns_nothing() {
            return Ok(Vec::new());
        }
        self.check_size(candidates.len())?;
        let limits = self.limits();
        let _cancel = limits.cancel_on_drop();
        self.run_fetched(source, candidates, fetched, &limits).await
    }

    /// Candidates in growing batches, each document through the stages on its own, until
    /// `n` results.
    async fn stream(
        &self,
        source: &dyn Fetch,
        n: usize,
        fetched: &mut Fetched,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        let tail = &self.planned.rest[..self.planned.rest.len().saturating_sub(1)];
        let mut out = Vec::new();
        let (mut skip, mut batch) = (0u64, (n as u64).clamp(1, 64));
        loop {
            let docs = source.fetch(&self.planned.scan, skip, batch).await?;
            let got = docs.len() as u64;
            for d in docs {
                out.extend(
                    self.run_rest(source, tail, vec![d], fetched, limits)
                        .await?,
                );
                if out.len() >= n {
                    out.truncate(n);
                    return Ok(out);
                }
            }
            if got < batch {
                return Ok(out);
            }
            skip += got;
            batch = (batch * 8).min(bound(self.max));
        }
    }

    async fn run_rest(
        &self,
        source: &dyn Fetch,
        stages: &[(usize, Stage)],
        mut docs: Vec<Document>,
        fetched: &mut Fetched,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        for (i, stage) in stages {
            let result = match stage {
                Stage::Lookup(l) => self.lookup(source, l, docs, fetched, limits).await,
                s => self.run_limited(s, docs, limits).await,
            };
            docs = result.map_err(|e| e.map_message(|m| format!("{}: {m}", self.name(*i))))?;
            self.check_size(docs.len())?;
        }
        Ok(docs)
    }

    /// One stage (not a `$lookup`) under `limits`: over many documents on tokio's blocking
    /// pool (where it cannot starve the executor, and stops when the run's future is
    /// dropped), over a few in place.
    async fn run_limited(
        &self,
        stage: &Stage,
        docs: Vec<Document>,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        let handle = tokio::runtime::Handle::try_current();
        let (Ok(handle), true) = (handle, !self.in_place && docs.len() >= OFF_THE_EXECUTOR) else {
            let ctx = Ctx {
                vars: &self.vars,
                max: self.max,
            };
            return limits::within(limits, || run_stage(stage, docs, &ctx));
        };
        let (stage, vars, max, limits) =
            (stage.clone(), self.vars.clone(), self.max, limits.clone());
        handle
            .spawn_blocking(move || {
                let ctx = Ctx { vars: &vars, max };
                limits::within(&limits, || run_stage(&stage, docs, &ctx))
            })
            .await
            .map_err(|e| Error::permanent(format!("aggregate: the evaluation failed: {e}")))?
    }

    /// A `$lookup`, correlated: for each document its `let` variables are bound, its
    /// sub-pipeline planned with them, and what that plan scans fetched (once per scan).
    async fn lookup(
        &self,
        source: &dyn Fetch,
        l: &Lookup,
        docs: Vec<Document>,
        fetched: &mut Fetched,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        if !source.name().is_empty() {
            check_lookup_from(source.name(), &l.from)?;
        }
        // Every document's sub-plan first, so that the scans not fetched yet are fetched
        // together, in one round trip.
        let mut planned = Vec::with_capacity(docs.len());
        for d in docs {
            let doc = Value::Object(d);
            let mut vars = self.vars.clone();
            for (name, e) in &l.lets {
                let v = e.eval(&doc, &self.vars)?.unwrap_or(Value::Null);
                vars = vars.with(name, v);
            }
            let sub = plan_stages(&l.stages, &vars, true, &|i| format!("pipeline[{i}]"))?;
            planned.push((doc, vars, sub));
        }
        let wanted: Vec<&Filter> = planned
            .iter()
            .filter(|(_, _, sub)| sub.nothing_at.is_none())
            .map(|(_, _, sub)| &sub.scan)
            .collect();
        self.fetch_scans(source, &wanted, fetched).await?;
        limits::within(limits, || self.embed(l, planned, fetched, limits))
    }

    /// Each document of a `$lookup` with what its sub-plan finds among `fetched`, embedded
    /// at `as`; run within `limits`, so what is embedded counts against the byte limit.
    fn embed(
        &self,
        l: &Lookup,
        planned: Vec<(Value, Vars, Planned)>,
        fetched: &Fetched,
        limits: &Limits,
    ) -> Result<Vec<Document>> {
        let mut embedded = 0usize;
        let mut out = Vec::with_capacity(planned.len());
        for (doc, vars, sub) in planned {
            let mut found = match sub.nothing_at {
                Some(_) => Vec::new(),
                None => (**fetched
                    .get(&format!("{:?}", sub.scan))
                    .unwrap_or(&Arc::default()))
                .clone(),
            };
            if sub.nothing_at.is_none() {
                let ctx = Ctx {
                    vars: &vars,
                    max: self.max,
                };
                for (i, stage) in &sub.rest {
                    found =
                        limits::within(limits, || run_stage(stage, found, &ctx)).map_err(|e| {
                            e.map_message(|m| format!("aggregate: $lookup pipeline[{i}]: {m}"))
                        })?;
                }
            }
            embedded += found.len();
            if embedded > self.max {
                return Err(Error::invalid_input(format!(
                    "aggregate: $lookup embeds more than {} documents in all; narrow its pipeline",
                    self.max
                )));
            }
            let Value::Object(mut d) = doc else {
                return unreachable_doc();
            };
            let found = Value::Array(found.into_iter().map(Value::Object).collect());
            limits::charge(&found)?;
            set_path(&mut d, &l.as_field, found);
            out.push(d);
        }
        Ok(out)
    }

    /// Fetches the scans of `wanted` that `fetched` lacks: one alone, several as one fetch
    /// of their union, each then picking its documents from it (each on its own when the
    /// union would hold more than a stage may).
    async fn fetch_scans(
        &self,
        source: &dyn Fetch,
        wanted: &[&Filter],
        fetched: &mut Fetched,
    ) -> Result<()> {
        let mut missing: Vec<&Filter> = Vec::new();
        for scan in wanted {
            let key = format!("{scan:?}");
            if !fetched.contains_key(&key) && !missing.iter().any(|m| format!("{m:?}") == key) {
                missing.push(scan);
            }
        }
        let union = match missing.len() {
            0 => return Ok(()),
            1 => None,
            _ => {
                let all = Filter::Or(missing.iter().map(|f| (*f).clone()).collect());
                let docs = source.fetch(&all, 0, bound(self.max)).await?;
                (docs.len() <= self.max).then_some(docs)
            }
        };
        for scan in missing {
            let docs = match &union {
                Some(all) => {
                    let lowered = scan.lower()?;
                    all.iter().filter(|d| lowered.matches(d)).cloned().collect()
                }
                None => source.fetch(scan, 0, bound(self.max)).await?,
            };
            self.check_size(docs.len())?;
            fetched.insert(format!("{scan:?}"), Arc::new(docs));
        }
        Ok(())
    }

    fn name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("stage {i}"))
    }

    fn check_size(&self, n: usize) -> Result<()> {
        if n > self.max {
            return Err(Error::invalid_input(format!(
                "aggregate: a stage would hold {n} documents, more than the limit of {}; narrow the leading $match (or raise Pipeline::with_max_documents)",
                self.max
            )));
        }
        Ok(())
    }
}

impl Pipeline {
    /// A plan that explains what the pipeline fetches once its constant `$match` gates pass:
    /// like [`Pipeline::plan`], but a `$match` that folds to false is kept, not decided.
    pub fn plan_undecided(&self) -> Result<Plan> {
        Plan::with(
            self,
            datastore_api::value::date_value(chrono::Utc::now())?,
            false,
        )
    }
}
