//! [`Aggregate`]: what every [`Collection`] does with a pipeline, written once: natively
//! when its server aggregates ([`Collection::native_aggregation`]), else planned over
//! [`Collection::find`]; in a `datastore.aggregate` span, with the collection's metrics.

use async_trait::async_trait;
use datastore_api::error::Result;
use datastore_api::value::Document;
use datastore_api::{Collection, NativeLimits};
use tracing::Instrument;

use crate::fetch::{aggregate_by_find, aggregate_each_by_find, own_outcome};
use crate::Pipeline;

/// Aggregation on any collection (implemented for every [`Collection`]).
///
/// ```no_run
/// # async fn demo(store: &dyn datastore_api::DataStore) -> datastore_api::Result<()> {
/// use datastore_query::{Aggregate, Pipeline};
/// let per_check = Pipeline::parse(&serde_json::json!([
///     {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
/// ]))?;
/// let counts = store.health_event_collection().aggregate(&per_check).await?;
/// # let _ = counts; Ok(()) }
/// ```
#[async_trait]
pub trait Aggregate {
    /// Runs `pipeline` over this collection. Without native aggregation the leading
    /// `$match` stages select the candidates through [`find`](Collection::find) (so from an
    /// index), each `$lookup` fetches what its pipeline's leading `$match` selects, and the
    /// rest runs in the evaluator; more candidates than [`Pipeline::max_documents`] is
    /// `InvalidInput`.
    async fn aggregate(&self, pipeline: &Pipeline) -> Result<Vec<Document>>;

    /// Runs several pipelines (an analyzer's rules, bound to one event): one result per
    /// pipeline, in order, each what [`aggregate`](Aggregate::aggregate) would give. A
    /// pipeline's own error (see [`own_outcome`]) is its entry; any other error fails the
    /// call. Without native aggregation the plans share their fetches
    /// ([`aggregate_each_by_find`]).
    async fn aggregate_each(&self, pipelines: &[Pipeline]) -> Result<Vec<Result<Vec<Document>>>>;
}

#[async_trait]
impl<C: Collection + ?Sized> Aggregate for C {
    async fn aggregate(&self, pipeline: &Pipeline) -> Result<Vec<Document>> {
        let span = tracing::info_span!(
            "datastore.aggregate",
            collection = self.name(),
            stages = pipeline.stages_json().len()
        );
        self.operation_labels()
            .observe("aggregate", run_one(self, pipeline))
            .instrument(span)
            .await
    }

    async fn aggregate_each(&self, pipelines: &[Pipeline]) -> Result<Vec<Result<Vec<Document>>>> {
        let span = tracing::info_span!(
            "datastore.aggregate_each",
            collection = self.name(),
            pipelines = pipelines.len()
        );
        let run = async {
            if self.native_aggregation().is_none() {
                return aggregate_each_by_find(self, pipelines).await;
            }
            // Each runs natively: the server reads its own candidates from its indexes.
            let mut out = Vec::with_capacity(pipelines.len());
            for p in pipelines {
                out.push(own_outcome(run_one(self, p).await)?);
            }
            Ok(out)
        };
        self.operation_labels()
            .observe("aggregate_each", run)
            .instrument(span)
            .await
    }
}

/// One pipeline, natively or planned.
async fn run_one<C: Collection + ?Sized>(
    collection: &C,
    pipeline: &Pipeline,
) -> Result<Vec<Document>> {
    match collection.native_aggregation() {
        Some(native) => {
            pipeline.check_lookups(collection.name())?;
            // Decided at plan time (a gate false once bound): nothing to ask the server, as on
            // every provider, and the stages before the gate do not run (nor fail).
            if pipeline.plan().is_ok_and(|plan| plan.returns_nothing()) {
                return Ok(Vec::new());
            }
            let limits = NativeLimits {
                max_documents: pipeline.max_documents(),
                max_time: pipeline.max_time(),
            };
            native
                .aggregate_native(pipeline.stages_json(), limits)
                .await
        }
        None => aggregate_by_find(collection, pipeline).await,
    }
}
