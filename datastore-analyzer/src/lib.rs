//! # datastore-analyzer
//!
//! NVSentinel's health-events-analyzer on this library: its rules, read as the chart carries
//! them, bound and decided exactly as the Go analyzer does, so that a component is a few lines.
//!
//! ```no_run
//! use std::sync::Arc;
//! use datastore_analyzer::{self as analyzer, Analyzer};
//! use datastore_api::processor::ProcessorOptions;
//! use datastore_api::DataStore;
//!
//! # async fn run(store: Arc<dyn DataStore>) -> datastore_api::Result<()> {
//! let text = std::fs::read_to_string("values.yaml").expect("the chart's values file");
//! let analyzer = Arc::new(Analyzer::new(analyzer::rules::from_values_yaml(&text)?)?);
//! let shutdown = tokio::time::sleep(std::time::Duration::from_secs(3600)); // or a signal
//! analyzer::run(store, analyzer, ProcessorOptions::default(), |found| async move {
//!     // Send found.event (the analyzer's new health event) to the platform connector.
//!     println!("{} matched on {}", found.rule, found.event["nodename"]);
//!     Ok(())
//! }, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! - **Which events:** inserts the watcher [`non_fatal_unhealthy_inserts`] admits (unhealthy,
//!   not the analyzer's own, processing strategy 1, 3 or unset).
//! - **Binding:** `"this.<path>"` as the Go parser resolves it on the event struct ([`binding`]):
//!   `this.healthevent.errorcode.0` is the first error code.
//! - **Pipeline:** the analyzer's own `$match` ([`ANALYZED`]) first, then the rule's stages.
//! - **Verdict:** no document is no match; a boolean `ruleMatched` in the first document
//!   decides; any other document is a match ([`verdict`]).
//! - **Errors:** a rule that fails (a placeholder the event cannot resolve, a type error in
//!   the data) is that rule's outcome; the others are still decided. [`run`] then fails the
//!   event, after publishing what matched, so the processor retries it.
//!
//! [`non_fatal_unhealthy_inserts`]: datastore_api::change::watchers::non_fatal_unhealthy_inserts

#![warn(missing_docs)]

pub mod binding;
pub mod rules;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use datastore_api::change::{watchers, ChangeEvent, WatchOptions};
use datastore_api::error::{Error, Result};
use datastore_api::processor::{self, ProcessorOptions, Summary};
use datastore_api::store::{Collection, DataStore};
use datastore_api::value::{Document, Value};
use datastore_query::{Aggregate, Pipeline};

pub use rules::Rule;

/// The analyzer's consumer name (its change-stream position).
pub const CONSUMER: &str = "health-events-analyzer";
/// The agent name of the events the analyzer publishes.
pub const AGENT: &str = "health-events-analyzer";

/// Seconds to decide all rules of one event (histogram, label `client`).
pub const EVENT_SECONDS: &str = "datastore_analyzer_event_seconds";
/// Rules decided (counter, labels `rule` and `outcome`: `matched`, `unmatched`, `failed`).
pub const RULE_OUTCOMES: &str = "datastore_analyzer_rule_outcomes_total";
/// Seconds one rule took (histogram, label `rule`). A rule run with others shares their
/// fetch: its time is the fetch plus its own evaluation.
pub const RULE_SECONDS: &str = "datastore_analyzer_rule_seconds";

/// The `$match` the analyzer puts before every rule's stages (its reconciler's, as JSON).
pub const ANALYZED: &str = r#"{"$match": {"healthevent.agent": {"$ne": "health-events-analyzer"}, "$or": [{"healthevent.processingstrategy": 1}, {"healthevent.processingstrategy": 3}, {"healthevent.processingstrategy": {"$exists": false}}]}}"#;

/// [`ANALYZED`] as a stage document.
pub fn analyzed_stage() -> Value {
    // A constant that parses; `Null` would fail the rules' parse, never silently pass.
    serde_json::from_str(ANALYZED).unwrap_or(Value::Null)
}

/// The analyzer's verdict on a rule's result.
pub fn verdict(result: &[Document]) -> bool {
    match result.first() {
        None => false,
        Some(first) => match first.get("ruleMatched") {
            Some(Value::Bool(b)) => *b,
            _ => true,
        },
    }
}

/// One rule's outcome for one event.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// Its verdict, or why it could not be decided.
    pub matched: Result<bool>,
}

/// A rule that matched, with the event the analyzer publishes for it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The rule's name.
    pub rule: String,
    /// The new health event (the `healthevent` body): the analysed event with `agent`,
    /// `checkname`, `recommendedaction`, `ishealthy`, `isfatal`, `message` and
    /// `processingstrategy` set as the Go publisher sets them.
    pub event: Document,
}

/// How a rule's pipeline is bound ([`Pipeline::bind_with`] or its whole form).
type Binder = fn(&Pipeline, &dyn Fn(&str) -> Result<Value>) -> Result<Pipeline>;

/// The rules, ready to run.
#[derive(Debug, Clone)]
pub struct Analyzer {
    rules: Vec<Rule>,
    /// Each rule's stages after the analyzer's `$match`, placeholders unbound.
    prefixed: Vec<Pipeline>,
    /// The same with `$limit: 1` last: the verdict reads the first document only, so the
    /// run may stop there.
    deciding: Vec<Pipeline>,
    processing_strategy: i64,
}

impl Analyzer {
    /// An analyzer over `rules` (those with `evaluate_rule = false` are kept but never run).
    pub fn new(rules: Vec<Rule>) -> Result<Analyzer> {
        let stages = |r: &Rule, last: Option<Value>| {
            let mut stages = vec![analyzed_stage()];
            stages.extend(r.pipeline.stages_json().iter().cloned());
            stages.extend(last);
            Pipeline::parse(&Value::Array(stages))
        };
        let prefixed = rules
            .iter()
            .map(|r| stages(r, None))
            .collect::<Result<_>>()?;
        let deciding = rules
            .iter()
            .map(|r| stages(r, Some(serde_json::json!({"$limit": 1}))))
            .collect::<Result<_>>()?;
        Ok(Analyzer {
            rules,
            prefixed,
            deciding,
            processing_strategy: 1,
        })
    }

    /// With the processing strategy of published events (the analyzer's
    /// `--processing-strategy`; `EXECUTE_REMEDIATION` by default).
    pub fn with_processing_strategy(mut self, name: &str) -> Result<Analyzer> {
        self.processing_strategy = rules::PROCESSING_STRATEGIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                Error::configuration(format!("analyzer: unknown processing strategy {name:?}"))
            })?;
        Ok(self)
    }

    /// Every rule, in configuration order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules that run (`evaluate_rule = true`).
    pub fn enabled(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.evaluate_rule)
    }

    /// The pipeline the analyzer runs for `rule` and `event` (a stored health-event
    /// document): its own `$match`, then the rule's stages with `this.` bound as the Go
    /// analyzer binds them.
    pub fn pipeline(&self, rule: &Rule, event: &Document) -> Result<Pipeline> {
        self.bind(&self.prefixed, rule, event)
    }

    /// [`Analyzer::pipeline`] with `$limit: 1` last: what [`Analyzer::evaluate`] runs, since
    /// the verdict reads the first document only.
    pub fn deciding_pipeline(&self, rule: &Rule, event: &Document) -> Result<Pipeline> {
        self.bind(&self.deciding, rule, event)
    }

    /// [`Analyzer::pipeline`] with every stage, also those after a gate that is false for
    /// this event (what `datastore rules check` explains).
    pub fn whole_pipeline(&self, rule: &Rule, event: &Document) -> Result<Pipeline> {
        self.bind_as(&self.prefixed, rule, event, Pipeline::bind_whole_with)
    }

    fn bind(&self, pipelines: &[Pipeline], rule: &Rule, event: &Document) -> Result<Pipeline> {
        self.bind_as(pipelines, rule, event, Pipeline::bind_with)
    }

    fn bind_as(
        &self,
        pipelines: &[Pipeline],
        rule: &Rule,
        event: &Document,
        bind: Binder,
    ) -> Result<Pipeline> {
        datastore_api::value::check_document_depth(event, "analyzer: the event")?;
        let unbound = self
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule) || r.name == rule.name)
            .and_then(|i| pipelines.get(i))
            .ok_or_else(|| {
                Error::invalid_input(format!("analyzer: no rule {:?} here", rule.name))
            })?;
        bind(unbound, &|path: &str| binding::resolve(event, path))
            .map_err(|e| e.map_message(|m| format!("rule {}: {m}", rule.name)))
    }

    /// Decides every enabled rule for `event`, sharing the store's work among them
    /// ([`Aggregate::aggregate_each`]).
    pub async fn evaluate<'a>(
        &'a self,
        collection: &dyn Collection,
        event: &Document,
    ) -> Result<Vec<Outcome<'a>>> {
        let started = Instant::now();
        let rules: Vec<&Rule> = self.enabled().collect();
        let mut outcomes: Vec<Option<Result<bool>>> = Vec::with_capacity(rules.len());
        let mut pipelines = Vec::new();
        let mut runs = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match self.deciding_pipeline(rule, event) {
                Ok(p) => {
                    pipelines.push(p);
                    runs.push(i);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let results = collection.aggregate_each(&pipelines).await?;
        for (i, result) in runs.into_iter().zip(results) {
            outcomes[i] = Some(
                result
                    .map(|docs| verdict(&docs))
                    .map_err(|e| e.map_message(|m| format!("rule {}: {m}", rules[i].name))),
            );
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!(EVENT_SECONDS, "client" => CONSUMER).record(seconds);
        Ok(rules
            .into_iter()
            .zip(outcomes)
            .map(|(rule, matched)| {
                let matched = matched.unwrap_or_else(|| Err(Error::permanent("not decided")));
                let outcome = match &matched {
                    Ok(true) => "matched",
                    Ok(false) => "unmatched",
                    Err(_) => "failed",
                };
                metrics::counter!(RULE_OUTCOMES, "rule" => rule.name.clone(), "outcome" => outcome)
                    .increment(1);
                metrics::histogram!(RULE_SECONDS, "rule" => rule.name.clone()).record(seconds);
                Outcome { rule, matched }
            })
            .collect())
    }

    /// The event the analyzer publishes when `rule` matches `event` (see [`Found::event`]).
    pub fn published(&self, rule: &Rule, event: &Document) -> Result<Found> {
        datastore_api::value::check_document_depth(event, "analyzer: the event")?;
        let mut body = match event.get("healthevent") {
            Some(Value::Object(o)) => o.clone(),
            _ => {
                return Err(Error::invalid_input(
                    "analyzer: the event has no healthevent document",
                ))
            }
        };
        let action = rule.recommended_action_value();
        let strategy = match &rule.processing_strategy {
            Some(name) => rules::PROCESSING_STRATEGIES
                .iter()
                .find(|(n, _)| n == name)
                .map_or(self.processing_strategy, |(_, v)| *v),
            None => self.processing_strategy,
        };
        let set = |body: &mut Document, k: &str, v: Value| {
            body.insert(k.to_owned(), v);
        };
        set(&mut body, "agent", Value::from(AGENT));
        set(&mut body, "checkname", Value::from(rule.name.clone()));
        set(&mut body, "recommendedaction", Value::from(action));
        set(&mut body, "ishealthy", Value::Bool(false));
        set(&mut body, "message", Value::from(rule.message.clone()));
        set(&mut body, "processingstrategy", Value::from(strategy));
        // As the publisher: fatal unless the action is NONE.
        set(&mut body, "isfatal", Value::Bool(action != 0));
        Ok(Found {
            rule: rule.name.clone(),
            event: body,
        })
    }
}

/// The analyzer end to end: the watcher ([`watchers::non_fatal_unhealthy_inserts`], consumer
/// [`CONSUMER`]), the event processor (partitioned by node unless `options` says otherwise),
/// every enabled rule per event, and `publish` for each match. An event with a failed rule
/// or a failed publish fails (and is retried as `options` says), after the rest of its
/// rules were decided and published.
pub async fn run<P, F>(
    store: Arc<dyn DataStore>,
    analyzer: Arc<Analyzer>,
    mut options: ProcessorOptions,
    publish: P,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary>
where
    P: Fn(Found) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    if options.partition_key.is_none() {
        options.partition_key = Some(processor::by_path("fullDocument.healthevent.nodename"));
    }
    let watch = WatchOptions::new(CONSUMER).filter(watchers::non_fatal_unhealthy_inserts());
    let publish = Arc::new(publish);
    let handler = {
        let store = Arc::clone(&store);
        move |change: ChangeEvent| {
            let (store, analyzer, publish) = (
                Arc::clone(&store),
                Arc::clone(&analyzer),
                Arc::clone(&publish),
            );
            async move { analyse(&*store, &analyzer, &*publish, change).await }
        }
    };
    processor::run(
        store.health_event_collection(),
        watch,
        options,
        handler,
        shutdown,
    )
    .await
}

async fn analyse<P, F>(
    store: &dyn DataStore,
    analyzer: &Analyzer,
    publish: &P,
    change: ChangeEvent,
) -> Result<()>
where
    P: Fn(Found) -> F,
    F: Future<Output = Result<()>>,
{
    let Some(event) = change.full_document else {
        return Ok(());
    };
    let mut failure = None;
    for outcome in analyzer
        .evaluate(store.health_event_collection(), &event)
        .await?
    {
        let done = match outcome.matched {
            Ok(true) => match analyzer.published(outcome.rule, &event) {
                Ok(found) => publish(found).await,
                Err(e) => Err(e),
            },
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(rule = %outcome.rule.name, error = %e, "analyzer rule failed");
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}
