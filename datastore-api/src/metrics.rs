//! Metrics every provider records, through the [`metrics`](https://docs.rs/metrics) facade:
//! install any exporter (for example `metrics-exporter-prometheus`) to scrape them.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `datastore_operations_total` | counter | `provider`, `collection`, `operation`, `outcome` (`ok` or the error's [`label`](crate::Error::label)) |
//! | `datastore_operation_duration_seconds` | histogram | `provider`, `collection`, `operation` |
//!
//! | `datastore_errors_total` | counter | `provider`, `operation`, `kind` (the error's [`label`](crate::Error::label): an [`ErrorKind`](crate::ErrorKind) name, or for a backend failure `transient` / `permanent` / `persistent`) |
//!
//! Change-stream lag per consumer: [`lag`]; sampled pool, size and backlog gauges: [`sample`];
//! the event processor's counters: [`processor`](crate::processor#metrics).

use std::future::Future;
use std::time::Instant;

use crate::error::Result;

pub mod lag;
pub mod sample;

/// Counter of store operations.
pub const OPERATIONS_TOTAL: &str = "datastore_operations_total";
/// Histogram of store-operation latency.
pub const OPERATION_DURATION: &str = "datastore_operation_duration_seconds";
/// Counter of failed store operations by error kind.
pub const ERRORS_TOTAL: &str = "datastore_errors_total";

/// The labels of one collection's operations: its provider and its collection (the role,
/// `health_events` or `maintenance_events`, whatever the table or collection is named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationLabels {
    /// The provider's name (`postgresql`, `mongodb`).
    pub provider: &'static str,
    /// The collection's role.
    pub collection: &'static str,
}

impl OperationLabels {
    /// [`observe`] with these labels.
    pub async fn observe<T>(
        self,
        operation: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        observe(self.provider, self.collection, operation, fut).await
    }
}

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
        Err(e) => {
            let kind = e.label();
            metrics::counter!(ERRORS_TOTAL, "provider" => provider, "operation" => operation, "kind" => kind)
                .increment(1);
            kind
        }
    };
    metrics::counter!(OPERATIONS_TOTAL, "provider" => provider, "collection" => collection, "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(OPERATION_DURATION, "provider" => provider, "collection" => collection, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::*;
    use crate::Error;

    #[derive(Default)]
    struct Seen {
        counters: Mutex<Vec<(String, Arc<AtomicU64>)>>,
        gauges: Mutex<Vec<(String, Arc<AtomicU64>)>>,
        histograms: Mutex<Vec<String>>,
    }
    /// A gauge's value, as `f64` bits.
    struct Level(Arc<AtomicU64>);
    impl metrics::GaugeFn for Level {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, v: f64) {
            self.0.store(v.to_bits(), Ordering::Relaxed);
        }
    }
    struct Count(Arc<AtomicU64>);
    impl CounterFn for Count {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::Relaxed);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::Relaxed);
        }
    }
    struct Hist;
    impl HistogramFn for Hist {
        fn record(&self, _: f64) {}
    }
    struct TestRecorder(Arc<Seen>);
    fn describe(key: &Key) -> String {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let cell = Arc::new(AtomicU64::new(0));
            self.0
                .counters
                .lock()
                .unwrap()
                .push((describe(key), Arc::clone(&cell)));
            Counter::from_arc(Arc::new(Count(cell)))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let cell = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
            self.0
                .gauges
                .lock()
                .unwrap()
                .push((describe(key), Arc::clone(&cell)));
            Gauge::from_arc(Arc::new(Level(cell)))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.0.histograms.lock().unwrap().push(describe(key));
            Histogram::from_arc(Arc::new(Hist))
        }
    }

    #[test]
    fn outcomes_and_durations_are_recorded() {
        let seen = Arc::new(Seen::default());
        let recorder = TestRecorder(Arc::clone(&seen));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                observe("postgresql", "health_events", "find", async { Ok(()) })
                    .await
                    .unwrap();
                let _ = observe::<()>("postgresql", "health_events", "find", async {
                    Err(Error::invalid_input("bad"))
                })
                .await;
            })
        });
        let counters = seen.counters.lock().unwrap();
        let names: Vec<&String> = counters.iter().map(|(n, _)| n).collect();
        assert!(
            names
                .iter()
                .any(|n| n.contains("outcome=ok") && n.starts_with(OPERATIONS_TOTAL)),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.contains("outcome=invalid_input")),
            "{names:?}"
        );
        assert!(counters.iter().all(|(_, c)| c.load(Ordering::Relaxed) == 1));
        assert!(seen
            .histograms
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with(OPERATION_DURATION)));
    }

    #[test]
    fn lag_gauges_carry_nvsentinel_names_and_are_absent_until_known() {
        let seen = Arc::new(Seen::default());
        let recorder = TestRecorder(Arc::clone(&seen));
        lag::LagState::of("gauge-test-known")
            .delivered(chrono::Utc::now() - chrono::Duration::seconds(5));
        let _unknown = lag::LagState::of("gauge-test-unknown");
        metrics::with_local_recorder(&recorder, lag::publish);
        let gauges = seen.gauges.lock().unwrap();
        let value = |name: &str| {
            gauges
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| f64::from_bits(v.load(Ordering::Relaxed)))
        };
        assert_eq!(
            value("change_stream_lag_known{client=gauge-test-known}"),
            Some(1.0)
        );
        let lag = value("change_stream_lag_seconds{client=gauge-test-known}").unwrap();
        assert!((5.0..60.0).contains(&lag), "{lag}");
        assert_eq!(
            value("change_stream_lag_known{client=gauge-test-unknown}"),
            Some(0.0)
        );
        assert_eq!(
            value("change_stream_lag_seconds{client=gauge-test-unknown}"),
            None
        );
    }
}
