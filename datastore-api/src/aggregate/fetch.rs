//! Running pipelines on a collection that has no native aggregation (PostgreSQL): the
//! candidates come from [`Collection::find`] with the pushed-down filter, so from an index,
//! and the rest of each pipeline runs in the evaluator.

use super::{check_lookup_from, Pipeline};
use crate::error::{ErrorKind, Result};
use crate::filter::{CmpOp, Filter, Scalar};
use crate::query::FindOptions;
use crate::store::Collection;
use crate::value::Document;

/// What [`Collection::aggregate`] does by default: one `find` for the leading `$match`
/// stages, one per `$lookup` for its leading `$match`, then the evaluator.
pub async fn aggregate_by_find<C: Collection + ?Sized>(
    collection: &C,
    pipeline: &Pipeline,
) -> Result<Vec<Document>> {
    let (first, sources) = sources(collection.name(), pipeline)?;
    let options = FindOptions::default().limit(bound(pipeline.max_documents()));
    let mut fetched = Vec::with_capacity(sources.len());
    for filter in &sources {
        fetched.push(collection.find(filter, &options).await?);
    }
    let candidates = fetched.remove(0);
    pipeline.run_with(first, candidates, &fetched)
}

/// The first stage left to run, and the filters a pipeline fetches by: its own, then its
/// lookups' (each checked to read this collection).
fn sources(collection: &str, pipeline: &Pipeline) -> Result<(usize, Vec<Filter>)> {
    let (filter, first) = pipeline.pushdown();
    let mut sources = vec![filter];
    for (from, filter) in pipeline.lookup_sources() {
        check_lookup_from(collection, &from)?;
        sources.push(filter);
    }
    Ok((first, sources))
}

/// One more than `max` documents: fetching that many shows that a stage would hold too many.
fn bound(max: usize) -> u64 {
    (max as u64).saturating_add(1)
}

/// The filters one pipeline fetches by: its own, then its lookups'.
struct Fetches {
    first: usize,
    filters: Vec<crate::filter::Lowered>,
    sources: Vec<Filter>,
}

fn fetches(collection: &str, pipeline: &Pipeline) -> Result<Fetches> {
    let (first, sources) = sources(collection, pipeline)?;
    let filters = sources.iter().map(Filter::lower).collect::<Result<_>>()?;
    Ok(Fetches {
        first,
        filters,
        sources,
    })
}

/// What [`Collection::aggregate_each`] does by default: one `find` for the union of every
/// pipeline's (and lookup's) pushed-down filter, each pipeline's candidates picked from it in
/// memory by its own filter, then the evaluator per pipeline. When the pipelines share no
/// condition, or the shared fetch holds more than one pipeline may, each fetches on its own.
pub async fn aggregate_each_by_find<C: Collection + ?Sized>(
    collection: &C,
    pipelines: &[Pipeline],
) -> Result<Vec<Result<Vec<Document>>>> {
    let planned: Vec<Result<Fetches>> = pipelines
        .iter()
        .map(|p| fetches(collection.name(), p))
        .collect();
    let union: Vec<Filter> = planned
        .iter()
        .flatten()
        .flat_map(|f| f.sources.iter().cloned())
        .collect();
    // More than one pipeline may hold: then each fetches on its own (as it does when the
    // pipelines share no condition), so the shared fetch never outgrows a single one.
    let limit = pipelines
        .iter()
        .map(|p| bound(p.max_documents()))
        .max()
        .unwrap_or(0);
    let shared = if union.is_empty() { None } else { hull(&union) };
    let fetched = match &shared {
        Some(filter) => {
            let options = FindOptions::default().limit(limit);
            collection.find(filter, &options).await?
        }
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(pipelines.len());
    for (pipeline, plan) in pipelines.iter().zip(planned) {
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        if shared.is_none() || fetched.len() as u64 >= limit {
            out.push(own_outcome(aggregate_by_find(collection, pipeline).await)?);
            continue;
        }
        let mut picked = plan.filters.iter().map(|f| {
            fetched
                .iter()
                .filter(|d| f.matches(d))
                .take(bound(pipeline.max_documents()) as usize)
                .cloned()
                .collect::<Vec<Document>>()
        });
        let candidates = picked.next().unwrap_or_default();
        let foreign: Vec<Vec<Document>> = picked.collect();
        out.push(pipeline.run_with(plan.first, candidates, &foreign));
    }
    Ok(out)
}

/// One filter that matches whatever any of `filters` matches, and that an index answers: the
/// conditions all of them share, plus for each path that every one bounds from below the
/// lowest bound (as [`Filter::ExprCmp`] `>=`). An analyzer's rules for one event share the
/// node and differ in their time windows, so this is "the node's events in the widest
/// window", one index range instead of one per rule. `None` without a shared condition.
fn hull(filters: &[Filter]) -> Option<Filter> {
    let parts: Vec<Vec<Filter>> = filters.iter().map(conjuncts).collect();
    let (first, rest) = parts.split_first()?;
    let mut shared: Vec<Filter> = first
        .iter()
        .filter(|c| !matches!(c, Filter::All) && rest.iter().all(|r| r.contains(c)))
        .cloned()
        .collect();
    let mut paths: Vec<&str> = first
        .iter()
        .filter_map(|c| lower_bound(c).map(|b| b.0))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        // Each filter's tightest bound on the path, then the loosest of those.
        let lowest = parts
            .iter()
            .map(|p| {
                p.iter()
                    .filter_map(lower_bound)
                    .filter(|(q, _)| *q == path)
                    .map(|(_, v)| v)
                    .reduce(|a, b| if b.1 > a.1 { b } else { a })
            })
            .try_fold(None, |low: Option<(&Scalar, f64)>, b| {
                b.map(|b| Some(low.map_or(b, |l| if b.1 < l.1 { b } else { l })))
            });
        if let Some(Some((value, _))) = lowest {
            shared.push(Filter::ExprCmp(path.to_owned(), CmpOp::Gte, value.clone()));
        }
    }
    (!shared.is_empty()).then_some(Filter::And(shared))
}

/// The members of nested `And`s.
fn conjuncts(f: &Filter) -> Vec<Filter> {
    match f {
        Filter::And(parts) => parts.iter().flat_map(conjuncts).collect(),
        other => vec![other.clone()],
    }
}

/// `(path, n)` when `f` implies that the value an expression reads at `path` is at least the
/// number `n`: an `ExprCmp` `>`, `>=` or `==`, or a query `==`, `>`, `>=` on a number (a number
/// that matches is at least `n`; an array that matches reads as an array, above every number).
/// The number comes with its value as a float, exact: integers past 2^53 give no bound.
fn lower_bound(f: &Filter) -> Option<(&str, (&Scalar, f64))> {
    let (path, value) = match f {
        Filter::ExprCmp(p, CmpOp::Gt | CmpOp::Gte | CmpOp::Eq, v) => (p, v),
        Filter::Eq(p, v) | Filter::Gt(p, v) | Filter::Gte(p, v) => (p, v),
        _ => return None,
    };
    let exact = match value {
        Scalar::Int(i) if i.unsigned_abs() <= 1 << 53 => *i as f64,
        Scalar::Float(x) if x.is_finite() => *x,
        _ => return None,
    };
    Some((path.as_str(), (value, exact)))
}

/// One pipeline's entry of [`Collection::aggregate_each`]: its result, or its own error (bad
/// input, or a part the server lacks); any other error (the server unreachable, a timeout)
/// fails the whole call.
pub fn own_outcome(result: Result<Vec<Document>>) -> Result<Result<Vec<Document>>> {
    match result {
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) => Err(e),
        r => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_keeps_shared_conditions_and_the_widest_window() {
        let node = || Filter::eq("n", "node-7");
        let rules = vec![
            Filter::And(vec![
                node(),
                Filter::eq("h", false),
                Filter::expr_cmp("t", CmpOp::Gte, 100),
            ]),
            Filter::And(vec![
                Filter::And(vec![node(), Filter::eq("f", true)]),
                Filter::expr_cmp("t", CmpOp::Gt, 40),
                Filter::expr_cmp("t", CmpOp::Gte, 20),
            ]),
            Filter::And(vec![node(), Filter::eq("t", 70)]),
        ];
        assert_eq!(
            hull(&rules),
            Some(Filter::And(vec![
                node(),
                Filter::expr_cmp("t", CmpOp::Gte, 40)
            ]))
        );
        // No shared condition: none (each pipeline fetches on its own).
        assert_eq!(hull(&[Filter::eq("a", 1), Filter::eq("b", 1)]), None);
        // An integer a float cannot hold exactly gives no bound.
        let big = vec![
            Filter::And(vec![node(), Filter::expr_cmp("t", CmpOp::Gte, i64::MAX)]),
            Filter::And(vec![node(), Filter::expr_cmp("t", CmpOp::Gte, 1)]),
        ];
        assert_eq!(hull(&big), Some(Filter::And(vec![node()])));
    }
}
