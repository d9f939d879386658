//! Running pipelines on a collection that has no native aggregation (PostgreSQL): each
//! pipeline is planned ([`Plan`]), its candidates come from [`Collection::find`] with the
//! plan's scan, so from an index, and the rest runs in the evaluator.

use async_trait::async_trait;

use super::plan::{bound, Fetch, Fetched, Plan};
use super::Pipeline;
use datastore_api::error::{ErrorKind, Result};
use datastore_api::filter::{CmpOp, Filter, Scalar};
use datastore_api::query::FindOptions;
use datastore_api::store::Collection;
use datastore_api::value::Document;

/// A collection as a plan's source.
struct Find<'a, C: ?Sized>(&'a C);

#[async_trait]
impl<C: Collection + ?Sized> Fetch for Find<'_, C> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn fetch(&self, filter: &Filter, skip: u64, limit: u64) -> Result<Vec<Document>> {
        let options = FindOptions::default().skip(skip).limit(limit);
        self.0.find(filter, &options).await
    }
}

/// What [`Aggregate::aggregate`](crate::Aggregate::aggregate) does without native aggregation: the pipeline's [`Plan`] run with
/// [`Collection::find`] as its source.
pub async fn aggregate_by_find<C: Collection + ?Sized>(
    collection: &C,
    pipeline: &Pipeline,
) -> Result<Vec<Document>> {
    pipeline.plan()?.execute(&Find(collection)).await
}

/// What [`Aggregate::aggregate_each`](crate::Aggregate::aggregate_each) does without native aggregation: every pipeline planned with one
/// `$$NOW`; those decided at plan time cost nothing. The plans whose scans hold the most
/// common equality (the node) and window share one `find` of their hull; the other bounded
/// plans share one `find` of the exact union of their scans; each picks its candidates from
/// its fetch in memory. A plan that fetches in batches runs on its own, and so does every
/// one whose shared fetch would hold more than a pipeline may. `$lookup` fetches are shared
/// by all.
pub async fn aggregate_each_by_find<C: Collection + ?Sized>(
    collection: &C,
    pipelines: &[Pipeline],
) -> Result<Vec<Result<Vec<Document>>>> {
    let source = Find(collection);
    // One `$$NOW` for all: their lookups' scans then match, and are fetched once.
    let now = datastore_api::value::date_value(chrono::Utc::now())?;
    let plans: Vec<Result<Plan>> = pipelines
        .iter()
        .map(|p| Plan::new(p, now.clone()))
        .collect();
    // The plans that share: those whose scans hold the equality most of them hold (the
    // node). A plan that fetches in batches, or scans by something else, runs on its own:
    // a union without an equality would read every node's documents.
    let scans: Vec<Option<&Filter>> = plans
        .iter()
        .map(|p| match p {
            Ok(p) if !p.returns_nothing() && !p.fetches_in_batches() => p.scan(),
            _ => None,
        })
        .collect();
    // Among those, the ones with the window most of them have: a wider window (7 days
    // among rules of one day) would make every one of them read seven times more.
    let key = shared_equality(scans.iter().flatten().copied());
    let holds_key = |s: &Filter| key.as_ref().is_some_and(|k| conjuncts(s).contains(k));
    let window = most_common(
        scans
            .iter()
            .flatten()
            .filter(|s| holds_key(s))
            .map(|s| bounds(s)),
    );
    let shares: Vec<bool> = scans
        .iter()
        .map(|s| s.is_some_and(|s| holds_key(s) && window.as_ref() == Some(&bounds(s))))
        .collect();
    let union: Vec<Filter> = scans
        .iter()
        .zip(&shares)
        .filter(|(_, share)| **share)
        .filter_map(|(s, _)| s.cloned())
        .collect();
    let limit = pipelines
        .iter()
        .map(|p| bound(p.max_documents()))
        .max()
        .unwrap_or(0);
    let shared = if union.len() < 2 { None } else { hull(&union) };
    let fetched = match &shared {
        Some(filter) => {
            let options = FindOptions::default().limit(limit);
            Some(collection.find(filter, &options).await?)
        }
        None => None,
    };
    let fetched = fetched.filter(|f| (f.len() as u64) < limit);
    // The other bounded plans: one fetch of the union of their scans (exact: each picks its
    // own), when there are several (the XID 74 rules, by time window and register values).
    let apart: Vec<Filter> = scans
        .iter()
        .zip(&shares)
        .filter(|(_, share)| !**share)
        .filter_map(|(s, _)| s.cloned())
        .collect();
    let together = match apart.len() {
        0 | 1 => None,
        _ => {
            let options = FindOptions::default().limit(limit);
            let all = collection.find(&Filter::Or(apart), &options).await?;
            ((all.len() as u64) < limit).then_some(all)
        }
    };
    let mut lookups = Fetched::default();
    let mut out = Vec::with_capacity(pipelines.len());
    let scanned: Vec<bool> = scans.iter().map(Option::is_some).collect();
    for ((plan, share), scanned) in plans.into_iter().zip(shares).zip(scanned) {
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let from = if share { &fetched } else { &together };
        let result = match (from, plan.scan(), scanned) {
            (Some(all), Some(scan), true) => {
                let lowered = scan.lower()?;
                let candidates: Vec<Document> =
                    all.iter().filter(|d| lowered.matches(d)).cloned().collect();
                plan.execute_on(&source, candidates, &mut lookups).await
            }
            _ => plan.execute_sharing(&source, &mut lookups).await,
        };
        out.push(own_outcome(result)?);
    }
    Ok(out)
}

/// A scan's numeric bounds (its window).
fn bounds(scan: &Filter) -> Vec<Filter> {
    conjuncts(scan)
        .into_iter()
        .filter(|c| matches!(c, Filter::ExprCmp(..)))
        .collect()
}

/// The value that occurs most often (the first of equals).
fn most_common<T: PartialEq>(items: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for item in items {
        match counts.iter_mut().find(|(i, _)| *i == item) {
            Some((_, n)) => *n += 1,
            None => counts.push((item, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(i, _)| i)
}

/// The equality with a value (`Eq` of a non-null, `In`) that most of `scans` hold among
/// their conjuncts, when at least two do.
fn shared_equality<'a>(scans: impl Iterator<Item = &'a Filter>) -> Option<Filter> {
    let mut counts: Vec<(Filter, usize)> = Vec::new();
    for scan in scans {
        let mut seen: Vec<Filter> = Vec::new();
        for c in conjuncts(scan) {
            let equality = match &c {
                Filter::Eq(_, v) => !matches!(v, Scalar::Null),
                Filter::In(_, vs) => !vs.is_empty(),
                _ => false,
            };
            if equality && !seen.contains(&c) {
                match counts.iter_mut().find(|(f, _)| *f == c) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((c.clone(), 1)),
                }
                seen.push(c);
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .max_by_key(|(_, n)| *n)
        .map(|(f, _)| f)
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
    for (bound_of, op) in [
        (lower_bound as BoundOf, CmpOp::Gte),
        (upper_bound, CmpOp::Lte),
    ] {
        let below = op == CmpOp::Gte;
        let mut paths: Vec<&str> = first
            .iter()
            .filter_map(|c| bound_of(c).map(|b| b.0))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        for path in paths {
            // Each filter's tightest bound on the path, then the loosest of those.
            let tighter = |a: f64, b: f64| if below { b > a } else { b < a };
            let loosest = parts
                .iter()
                .map(|p| {
                    p.iter()
                        .filter_map(bound_of)
                        .filter(|(q, _)| *q == path)
                        .map(|(_, v)| v)
                        .reduce(|a, b| if tighter(a.1, b.1) { b } else { a })
                })
                .try_fold(None, |loose: Option<(&Scalar, f64)>, b| {
                    b.map(|b| Some(loose.map_or(b, |l| if tighter(b.1, l.1) { b } else { l })))
                });
            if let Some(Some((value, _))) = loosest {
                shared.push(Filter::ExprCmp(path.to_owned(), op, value.clone()));
            }
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
    Some((path.as_str(), (value, exact(value)?)))
}

/// A number's value as a float, when exact: integers past 2^53 give none.
fn exact(value: &Scalar) -> Option<f64> {
    match value {
        Scalar::Int(i) if i.unsigned_abs() <= 1 << 53 => Some(*i as f64),
        Scalar::Float(x) if x.is_finite() => Some(*x),
        _ => None,
    }
}

/// How a conjunct bounds a path, if it does.
type BoundOf = fn(&Filter) -> Option<(&str, (&Scalar, f64))>;

/// `(path, n)` when `f` implies that the value an expression reads at `path` is at most the
/// number `n`: an `ExprCmp` `<`, `<=` or `==` only (a query comparison also matches an array,
/// which reads above every number).
fn upper_bound(f: &Filter) -> Option<(&str, (&Scalar, f64))> {
    match f {
        Filter::ExprCmp(p, CmpOp::Lt | CmpOp::Lte | CmpOp::Eq, v) => {
            Some((p.as_str(), (v, exact(v)?)))
        }
        _ => None,
    }
}

/// One pipeline's entry of [`Aggregate::aggregate_each`](crate::Aggregate::aggregate_each): its result, or its own error (bad
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
    fn plans_share_by_the_equality_most_of_them_hold() {
        let node = Filter::eq("n", "node-7");
        let window = |t: i64| Filter::expr_cmp("t", CmpOp::Gte, t);
        let scans = [
            Filter::And(vec![Filter::ne("a", "x"), node.clone(), window(10)]),
            Filter::And(vec![Filter::ne("a", "x"), node.clone(), window(20)]),
            // Every node's last day, narrowed by something else: not with the node's.
            Filter::And(vec![Filter::ne("a", "x"), window(20), Filter::eq("r", "1")]),
        ];
        assert_eq!(shared_equality(scans.iter()), Some(node));
        assert_eq!(shared_equality(scans[1..].iter()), None);
    }

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
        // Windows bounded on both sides: the widest of each side.
        let windows = vec![
            Filter::And(vec![
                node(),
                Filter::expr_cmp("t", CmpOp::Gte, 10),
                Filter::expr_cmp("t", CmpOp::Lte, 100),
            ]),
            Filter::And(vec![
                node(),
                Filter::expr_cmp("t", CmpOp::Gte, 50),
                Filter::expr_cmp("t", CmpOp::Lt, 200),
            ]),
        ];
        assert_eq!(
            hull(&windows),
            Some(Filter::And(vec![
                node(),
                Filter::expr_cmp("t", CmpOp::Gte, 10),
                Filter::expr_cmp("t", CmpOp::Lte, 200)
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
