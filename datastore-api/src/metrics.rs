//! Metrics every provider records, through the [`metrics`](https://docs.rs/metrics) facade:
//! install any exporter (for example `metrics-exporter-prometheus`) to scrape them.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `datastore_operations_total` | counter | `provider`, `collection`, `operation`, `outcome` (`ok` or an [`ErrorKind`](crate::ErrorKind) name) |
//! | `datastore_operation_duration_seconds` | histogram | `provider`, `collection`, `operation` |

use std::future::Future;
use std::time::Instant;

use crate::error::Result;

/// Counter of store operations.
pub const OPERATIONS_TOTAL: &str = "datastore_operations_total";
/// Histogram of store-operation latency.
pub const OPERATION_DURATION: &str = "datastore_operation_duration_seconds";

/// Runs `fut` and records its outcome and duration.
pub async fn observe<T>(
    provider: &'static str,
    collection: &'static str,
    operation: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let out = fut.await;
    let outcome = match &out {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    };
    metrics::counter!(OPERATIONS_TOTAL, "provider" => provider, "collection" => collection, "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(OPERATION_DURATION, "provider" => provider, "collection" => collection, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    out
}
