//! Running pipelines on a collection that has no native aggregation (PostgreSQL): the
//! candidates come from [`Collection::find`] with the pushed-down filter, so from an index,
//! and the rest of each pipeline runs in the evaluator.

use super::{check_lookup_from, Pipeline};
use crate::error::{ErrorKind, Result};
use crate::filter::Filter;
use crate::query::FindOptions;
use crate::store::Collection;
use crate::value::Document;

/// What [`Collection::aggregate`] does by default: one `find` for the leading `$match`
/// stages, one per `$lookup` for its leading `$match`, then the evaluator.
pub async fn aggregate_by_find<C: Collection + ?Sized>(
    collection: &C,
    pipeline: &Pipeline,
) -> Result<Vec<Document>> {
    let (filter, first) = pipeline.pushdown();
    let options = FindOptions::default().limit(bound(pipeline.max_documents()));
    let candidates = collection.find(&filter, &options).await?;
    let mut foreign = Vec::new();
    for (from, filter) in pipeline.lookup_sources() {
        check_lookup_from(collection.name(), &from)?;
        foreign.push(collection.find(&filter, &options).await?);
    }
    pipeline.run_with(first, candidates, &foreign)
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
    let (filter, first) = pipeline.pushdown();
    let mut sources = vec![filter];
    for (from, filter) in pipeline.lookup_sources() {
        check_lookup_from(collection, &from)?;
        sources.push(filter);
    }
    let filters = sources.iter().map(Filter::lower).collect::<Result<_>>()?;
    Ok(Fetches {
        first,
        filters,
        sources,
    })
}

/// What [`Collection::aggregate_each`] does by default: one `find` for the union of every
/// pipeline's (and lookup's) pushed-down filter, each pipeline's candidates picked from it in
/// memory by its own filter, then the evaluator per pipeline. When the union holds more than
/// all the pipelines' bounds together, each pipeline fetches on its own instead.
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
    let limit = pipelines
        .iter()
        .map(|p| bound(p.max_documents()))
        .fold(0u64, u64::saturating_add);
    let fetched = if union.is_empty() {
        Vec::new()
    } else {
        let options = FindOptions::default().limit(limit);
        collection.find(&Filter::Or(union), &options).await?
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
        if fetched.len() as u64 >= limit {
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

/// One pipeline's entry of [`Collection::aggregate_each`]: its result, or its own error (bad
/// input, or a part the server lacks); any other error (the server unreachable, a timeout)
/// fails the whole call.
pub fn own_outcome(result: Result<Vec<Document>>) -> Result<Result<Vec<Document>>> {
    match result {
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) => Err(e),
        r => Ok(r),
    }
}
