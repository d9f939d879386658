//! NVSentinel's real analyzer rules (the chart's values file, unchanged) bound from random
//! events of generated histories: every provider gives the model's results and verdicts,
//! and the binding gives what the analyzer's Go parser gives.

use std::collections::BTreeSet;
use std::sync::Mutex;

use datastore_analyzer::{self as analyzer, binding, Analyzer};
use datastore_api::{Document, Filter, FindOptions};
use datastore_query::Aggregate;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use super::aggregate::same_outcome;
use super::changes::unique;
use super::{check_cases, shrink_iters};
use crate::histories;
use crate::Ctx;

/// The chart's values file (see `datastore-analyzer/tests/fixtures/NOTICE.md`).
pub const VALUES: &str =
    include_str!("../../../datastore-analyzer/tests/fixtures/nvsentinel-analyzer-values.yaml");

/// The model's binding of a placeholder, written apart from the library's: the Go parser's
/// struct walk over the paths NVSentinel's rules use (lower-case field names, a numeric
/// segment indexes a list, a missing field is its zero value, numbers are doubles).
fn model_resolve(event: &Document, path: &str) -> Option<Value> {
    let parts: Vec<String> = path.split('.').map(str::to_lowercase).collect();
    let mut here = Value::Object(event.clone());
    for (i, seg) in parts.iter().enumerate() {
        here = match (&here, seg.parse::<usize>()) {
            (Value::Array(items), Ok(ix)) => match items.get(ix) {
                Some(v) => v.clone(),
                None => return Some(Value::Null),
            },
            (Value::Object(o), _) => match o.get(seg) {
                Some(v) => v.clone(),
                None => match (parts.get(i + 1), seg.as_str()) {
                    (None, "checkname" | "agent" | "nodename" | "message") => json!(""),
                    (None, "isfatal" | "ishealthy") => json!(false),
                    (_, "errorcode" | "entitiesimpacted") => return Some(Value::Null),
                    _ => return None,
                },
            },
            _ => return None,
        };
    }
    Some(doubles(here))
}

fn doubles(v: Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    // Entities keep their non-empty fields (encoding/json's omitempty).
                    Value::Object(o) => Value::Object(
                        o.into_iter()
                            .filter(|(_, v)| v != "" && !v.is_null())
                            .map(|(k, v)| (k, doubles(v)))
                            .collect(),
                    ),
                    other => doubles(other),
                })
                .collect(),
        ),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, doubles(v))).collect()),
        other => other,
    }
}

/// The `this.` paths a rule's stages use.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for piece in text.split("\"this.").skip(1) {
        if let Some(end) = piece.find('"') {
            out.insert(piece[..end].to_owned());
        }
    }
    out
}

/// Every real rule, bound from random analysed events of a generated history: the same
/// results (as multisets) and verdicts on the provider as in the model, and the binding as
/// the Go parser's.
pub(super) fn analyzer_rules_match_model(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let coll = ctx.store.health_event_collection();
    let rules = analyzer::rules::from_values_yaml(VALUES).map_err(|e| e.to_string())?;
    let analyzer = Analyzer::new(rules).map_err(|e| e.to_string())?;
    let fired = Mutex::new(BTreeSet::new());
    let cases = (ctx.cases / 16).max(2);
    let strategy = (
        any::<u64>(),
        16usize..48,
        prop::collection::vec(any::<prop::sample::Index>(), 2..5),
    );
    let outcome = check_cases(cases, shrink_iters(), strategy, |(seed, count, picks)| {
        ctx.rt.block_on(async {
            let run = unique("rules");
            // A case of its own: its nodes, and a time range far from every other case's
            // (the rules' windows are at most 7 days; `$$NOW` windows meet only future times).
            let nodes: Vec<String> = (0..2).map(|k| format!("{run}-n{k}")).collect();
            let base = 4_000_000_000 + (seed % 1_000_000) as i64 * 2_000_000;
            let mut docs = histories::analyzer_events(seed, &nodes, base, 3 * 86_400, count);
            for d in &mut docs {
                d.insert("run".into(), json!(run));
            }
            coll.insert_many(docs)
                .await
                .map_err(|e| TestCaseError::fail(format!("insert: {e}")))?;
            let stored = coll
                .find(&Filter::eq("run", run.as_str()), &FindOptions::default())
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let events: Vec<&Document> = stored.iter().filter(|d| histories::analyzed(d)).collect();
            if events.is_empty() {
                return Ok(());
            }
            for pick in &picks {
                let event = events[pick.index(events.len())];
                check_event(&analyzer, coll, &stored, event, &fired).await?;
            }
            Ok(())
        })
    });
    outcome?;
    let fired = fired.into_inner().unwrap_or_default();
    if fired.is_empty() {
        return Err("no rule matched in any case: the histories do not exercise the rules".into());
    }
    Ok(())
}

async fn check_event(
    analyzer: &Analyzer,
    coll: &dyn datastore_api::Collection,
    stored: &[Document],
    event: &Document,
    fired: &Mutex<BTreeSet<String>>,
) -> std::result::Result<(), TestCaseError> {
    let mut verdicts = Vec::new();
    for rule in analyzer.rules() {
        for path in placeholders(&rule.stages.join(" ")) {
            let library = binding::resolve(event, &path).ok();
            prop_assert_eq!(
                library.clone(),
                model_resolve(event, &path),
                "rule {}: this.{} binds to {:?}",
                &rule.name,
                &path,
                library
            );
        }
        let pipeline = analyzer
            .pipeline(rule, event)
            .map_err(|e| TestCaseError::fail(format!("rule {}: {e}", rule.name)))?;
        let expected = pipeline.run(stored.to_vec());
        let mut got = coll.aggregate(&pipeline).await;
        // A rule that names no node or time (XID74Reg2Bit13Set) reads every case's events:
        // its documents of this case are the model's.
        let whole_collection = pipeline.plan().is_ok_and(|p| !p.bounded());
        if let (true, Ok(docs), Some(run)) = (whole_collection, &mut got, event.get("run")) {
            docs.retain(|d| d.get("run") == Some(run));
        }
        same_outcome(&expected, got, &format!("rule {}", rule.name))?;
        verdicts.push(expected.map(|docs| analyzer::verdict(&docs)).ok());
    }
    let decided = analyzer
        .evaluate(coll, event)
        .await
        .map_err(|e| TestCaseError::fail(format!("evaluate: {e}")))?;
    for (outcome, want) in decided.iter().zip(&verdicts) {
        let got = outcome.matched.as_ref().ok().copied();
        prop_assert_eq!(got, *want, "rule {}: the verdict", &outcome.rule.name);
        if got == Some(true) {
            if let Ok(mut f) = fired.lock() {
                f.insert(outcome.rule.name.clone());
            }
        }
    }
    Ok(())
}
