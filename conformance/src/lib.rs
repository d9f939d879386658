//! # conformance
//!
//! One suite of properties that every datastore provider must pass, generic over the provider.
//! An in-memory reference model ([`model`]) is the executable specification of the query and
//! update semantics; the properties ([`properties`]) run random operation sequences against a
//! real backend and the model and require identical results.
//!
//! A provider plugs in by implementing [`Backend`] (how to open a fresh, empty store) and calling
//! [`run_suite`]:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(backend: Arc<dyn conformance::Backend>) {
//! let runtime = tokio::runtime::Runtime::new().unwrap();
//! let report = conformance::run_suite(backend, &runtime, conformance::SuiteConfig::from_env());
//! print!("{}", conformance::render_table(std::slice::from_ref(&report)));
//! assert!(report.all_passed());
//! # }
//! ```
//!
//! Properties that need an optional capability (see [`Capabilities`]) are reported as "not run"
//! with the reason when the backend lacks it; nothing else may be skipped.

#![warn(missing_docs)]

pub mod gen;
pub mod histories;
pub mod hostile;
pub mod model;
pub mod properties;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datastore_api::{DataStore, Result};

/// Optional abilities of a backend. A property that needs one the backend lacks is reported
/// "not run" with the reason; every other property must run and pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Multi-document transactions across both collections.
    pub transactions: bool,
    /// Concurrent transactions that write the same document never both commit (one waits or
    /// fails with a transient conflict), so no committed write is lost. The MongoDB provider's
    /// `update_many` runs in a transaction; without isolation, concurrent ones lose increments.
    pub isolated_transactions: bool,
    /// Change streams (`watch` / `checkpoint`).
    pub change_streams: bool,
    /// The server applies the `$push` update operator (the properties' random updates then
    /// include `Push`; without it they are generated without).
    pub push_update: bool,
    /// Equality matches numbers across integer and floating-point types (`1 == 1.0`), as the
    /// API promises; without it the random values use integers only.
    pub numeric_equality: bool,
    /// A numeric path segment on an array also reaches the field of that name in the array's
    /// object elements (`a.0` on `[{"0": 7}]` finds 7), as MongoDB resolves paths; without it the
    /// random objects inside arrays have no key `"0"`.
    pub index_fields_in_arrays: bool,
    /// The provider keeps the change history and prunes it by
    /// [`prune_change_history`](datastore_api::DataStore::prune_change_history) (PostgreSQL);
    /// without it (MongoDB: the server's oplog is the history) pruning is not checked.
    pub provider_retention: bool,
    /// A `$count` stage over no documents gives no document, as MongoDB's does; without it
    /// (SecantusDB gives `{count: 0}`) the random pipelines have no `$count`.
    pub count_of_nothing_is_empty: bool,
    /// The server runs the aggregation stages, accumulators and operators of the random
    /// pipelines (jongodb lacks `$group`'s `$max`, among others).
    pub aggregation: bool,
    /// An expression's field path through an array reads the array of the elements' fields
    /// (`"$b.a"` over `[{a: 1}]` is `[1]`), as MongoDB's does; without it (SecantusDB reads it
    /// as missing) the random filters have no `Filter::ExprCmp`.
    pub expression_array_paths: bool,
    /// The server moves a `$match` ahead of the `$addFields` and `$project` stages before it
    /// when it reads none of the fields they compute, as MongoDB's optimizer does (and the
    /// planner does), so a document the `$match` drops never evaluates their expressions (nor
    /// fails on them); without it (SecantusDB runs stages in order) the random pipelines have
    /// no `$match` after such a stage.
    pub match_moves_before_projection: bool,
}

impl Capabilities {
    /// Everything supported.
    pub const ALL: Capabilities = Capabilities {
        transactions: true,
        isolated_transactions: true,
        change_streams: true,
        push_update: true,
        numeric_equality: true,
        index_fields_in_arrays: true,
        provider_retention: true,
        count_of_nothing_is_empty: true,
        aggregation: true,
        expression_array_paths: true,
        match_moves_before_projection: true,
    };
}

/// A capability a property may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// See [`Capabilities::transactions`].
    Transactions,
    /// See [`Capabilities::isolated_transactions`].
    IsolatedTransactions,
    /// See [`Capabilities::change_streams`].
    ChangeStreams,
    /// See [`Capabilities::push_update`].
    PushUpdate,
    /// See [`Capabilities::numeric_equality`].
    NumericEquality,
    /// See [`Capabilities::index_fields_in_arrays`].
    IndexFieldsInArrays,
    /// See [`Capabilities::provider_retention`].
    ProviderRetention,
    /// See [`Capabilities::count_of_nothing_is_empty`].
    CountOfNothingIsEmpty,
    /// See [`Capabilities::aggregation`].
    Aggregation,
    /// See [`Capabilities::expression_array_paths`].
    ExpressionArrayPaths,
}

impl Capability {
    fn available(self, caps: Capabilities) -> bool {
        match self {
            Capability::Transactions => caps.transactions,
            Capability::IsolatedTransactions => caps.isolated_transactions,
            Capability::ChangeStreams => caps.change_streams,
            Capability::PushUpdate => caps.push_update,
            Capability::NumericEquality => caps.numeric_equality,
            Capability::IndexFieldsInArrays => caps.index_fields_in_arrays,
            Capability::ProviderRetention => caps.provider_retention,
            Capability::CountOfNothingIsEmpty => caps.count_of_nothing_is_empty,
            Capability::Aggregation => caps.aggregation,
            Capability::ExpressionArrayPaths => caps.expression_array_paths,
        }
    }
    fn missing_reason(self) -> &'static str {
        match self {
            Capability::Transactions => "server lacks multi-document transactions",
            Capability::IsolatedTransactions => {
                "concurrent update_many (server's transactions do not isolate writers)"
            }
            Capability::ChangeStreams => "server lacks change streams",
            Capability::PushUpdate => "$push (server lacks the operator)",
            Capability::ProviderRetention => {
                "pruning (the server trims the change history, not the provider)"
            }
            Capability::NumericEquality => {
                "floats (server's equality treats 1 and 1.0 as different)"
            }
            Capability::IndexFieldsInArrays => {
                "\"0\" keys in array elements (server reads a.0 on an array as the index only)"
            }
            Capability::Aggregation => "server lacks parts of the aggregation language",
            Capability::ExpressionArrayPaths => {
                "Filter::ExprCmp (server's expression paths do not read through arrays)"
            }
            Capability::CountOfNothingIsEmpty => {
                "$count (server answers {count: 0} for no documents, MongoDB answers nothing)"
            }
        }
    }
}

/// A provider under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Name shown in the report (e.g. `postgresql`).
    fn name(&self) -> String;
    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;
    /// Opens a store on a fresh, empty database (isolation by construction).
    async fn fresh_store(&self) -> Result<Arc<dyn DataStore>>;
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct SuiteConfig {
    /// Random cases per property.
    pub cases: u32,
}

impl SuiteConfig {
    /// `CONFORMANCE_CASES` (default 128). `CONFORMANCE_ONLY=<text>` runs only the properties
    /// whose name contains the text.
    pub fn from_env() -> Self {
        let cases = std::env::var("CONFORMANCE_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(128)
            .max(1);
        SuiteConfig { cases }
    }
}

/// Result of one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Failed, with the minimal failing case.
    Failed(String),
    /// Not run, with the reason (a missing capability).
    NotRun(String),
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct PropertyResult {
    /// Property name.
    pub property: &'static str,
    /// Outcome.
    pub outcome: Outcome,
    /// Wall time.
    pub seconds: f64,
    /// What the run left out (operations the backend lacks), if anything.
    pub note: Option<String>,
}

/// All results for one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backend name.
    pub backend: String,
    /// One result per property.
    pub results: Vec<PropertyResult>,
}

impl Report {
    /// True when nothing failed (properties not run for a declared capability gap are fine).
    pub fn all_passed(&self) -> bool {
        self.results
            .iter()
            .all(|r| !matches!(r.outcome, Outcome::Failed(_)))
    }
}

/// What a property gets: a runtime to drive async code, a fresh store, the case budget.
pub struct Ctx<'a> {
    /// Runtime for `block_on`.
    pub rt: &'a tokio::runtime::Runtime,
    /// The store under test.
    pub store: Arc<dyn DataStore>,
    /// Random cases to run.
    pub cases: u32,
    /// What the backend offers; properties narrow their random operations to it.
    pub capabilities: Capabilities,
}

/// A named property.
pub struct Property {
    /// Name.
    pub name: &'static str,
    /// Capabilities it needs (not run without them).
    pub needs: &'static [Capability],
    /// Optional capabilities whose operations it leaves out of its random cases when the
    /// backend lacks them (it still runs; the report says what was left out).
    pub narrowed_by: &'static [Capability],
    /// The check; `Err` holds the failure report.
    pub run: fn(&Ctx<'_>) -> std::result::Result<(), String>,
}

/// Runs every property of [`properties::ALL`] against `backend`, each on a fresh store
/// (`CONFORMANCE_ONLY=<text>` keeps those whose name contains the text).
pub fn run_suite(
    backend: Arc<dyn Backend>,
    rt: &tokio::runtime::Runtime,
    config: SuiteConfig,
) -> Report {
    let only = std::env::var("CONFORMANCE_ONLY")
        .ok()
        .filter(|s| !s.is_empty());
    let results = properties::ALL
        .iter()
        .filter(|p| only.as_deref().is_none_or(|o| p.name.contains(o)))
        .map(|p| run_property(backend.as_ref(), p, rt, config))
        .collect();
    Report {
        backend: backend.name(),
        results,
    }
}

/// Runs one property against `backend` on a fresh store: "not run" when the backend lacks a
/// capability it needs.
pub fn run_property(
    backend: &dyn Backend,
    property: &Property,
    rt: &tokio::runtime::Runtime,
    config: SuiteConfig,
) -> PropertyResult {
    let caps = backend.capabilities();
    let started = Instant::now();
    let outcome = if let Some(missing) = property.needs.iter().find(|c| !c.available(caps)) {
        Outcome::NotRun(missing.missing_reason().to_owned())
    } else {
        match rt.block_on(backend.fresh_store()) {
            Err(e) => Outcome::Failed(format!("could not open a fresh store: {e}")),
            Ok(store) => {
                let ctx = Ctx {
                    rt,
                    store: Arc::clone(&store),
                    cases: config.cases,
                    capabilities: caps,
                };
                let r = (property.run)(&ctx);
                rt.block_on(store.close());
                match r {
                    Ok(()) => Outcome::Passed,
                    Err(msg) => Outcome::Failed(msg),
                }
            }
        }
    };
    let left_out: Vec<&str> = property
        .narrowed_by
        .iter()
        .filter(|c| !c.available(caps))
        .map(|c| c.missing_reason())
        .collect();
    PropertyResult {
        property: property.name,
        note: (!left_out.is_empty() && !matches!(outcome, Outcome::NotRun(_)))
            .then(|| format!("ran without: {}", left_out.join("; "))),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A plain-text table: one row per property and backend.
pub fn render_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let width = properties::ALL
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(10)
        .max(8);
    out.push_str(&format!(
        "{:<12} {:<width$} {:<8} {:>7}  detail\n",
        "provider", "property", "result", "seconds"
    ));
    for r in reports {
        for p in &r.results {
            let (word, detail) = match &p.outcome {
                Outcome::Passed => ("passed", p.note.clone().unwrap_or_default()),
                Outcome::Failed(m) => ("FAILED", m.lines().next().unwrap_or_default().to_owned()),
                Outcome::NotRun(why) => ("not run", why.clone()),
            };
            out.push_str(&format!(
                "{:<12} {:<width$} {:<8} {:>7.1}  {}\n",
                r.backend, p.property, word, p.seconds, detail
            ));
        }
    }
    out
}
