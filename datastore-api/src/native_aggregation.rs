//! The ability of a server that runs aggregation pipelines itself (MongoDB).
//!
//! Pipelines belong to the `datastore-query` crate (parse, plan, evaluate). A collection
//! whose server aggregates hands out a [`NativeAggregation`] through
//! [`Collection::native_aggregation`](crate::Collection::native_aggregation); `datastore-query`
//! then sends it the pipeline's stages as written instead of planning them over
//! [`find`](crate::Collection::find). A collection without one (PostgreSQL) is aggregated by
//! the planner.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::value::{Document, Value};

/// What a native run may use, from the pipeline's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeLimits {
    /// More result documents than this is an `InvalidInput` error.
    pub max_documents: usize,
    /// The server stops the run after this (MongoDB's `maxTimeMS`).
    pub max_time: Duration,
}

/// A server that runs MongoDB aggregation stages itself.
#[async_trait]
pub trait NativeAggregation: Send + Sync {
    /// Runs `stages` (MongoDB stages in their JSON form, parsed and bound by the caller; a
    /// `$lookup` among them joins this collection, whatever its `from` says: the caller
    /// checked it) on this collection, within `limits`.
    async fn aggregate_native(
        &self,
        stages: &[Value],
        limits: NativeLimits,
    ) -> Result<Vec<Document>>;
}
