//! Change-stream lag per consumer, with NVSentinel's metric names (its ADR-054), so its
//! dashboards and alerts keep working:
//!
//! | name | kind | labels | value |
//! |---|---|---|---|
//! | `change_stream_lag_seconds` | gauge | `client` (the consumer) | seconds since the consumer last had evidence it was caught up: a read that found nothing new, or the commit time of the last change handed to it; absent until known, never negative |
//! | `change_stream_lag_known` | gauge | `client` | 1 once the lag is known, 0 before |
//!
//! Every change stream of this process reports to one [`LagState`] per consumer name (a name
//! watched on two collections reports the newer evidence of either), which outlives the
//! stream: a consumer that stops reading (stopped, wedged or blocked by a slow handler) shows
//! a lag that keeps rising until it reads again. A stream that loses its lease to another
//! process, and a deleted consumer, make it unknown again here (the lag is the new holder's
//! to report). A background thread publishes the gauges every [`PUBLISH_INTERVAL`], so they
//! never freeze at a stale value; [`current`] gives the same figure to a readiness check.
//!
//! As in NVSentinel, a change's commit time is the server's clock and "now" is this host's:
//! clock skew shifts the figure by the skew (a host behind the server reads low).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Gauge of each consumer's lag in seconds.
pub const LAG_SECONDS: &str = "change_stream_lag_seconds";
/// Gauge: 1 once a consumer's lag is known, 0 before.
pub const LAG_KNOWN: &str = "change_stream_lag_known";
/// How often the gauges are published.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// No observation yet.
const UNKNOWN: i64 = i64::MIN;

/// What one consumer's streams observed, as epoch microseconds (a sentinel before the first).
#[derive(Debug)]
pub struct LagState {
    /// When a read last found nothing new (local clock).
    caught_up: AtomicI64,
    /// Commit time of the newest change handed to the consumer (server clock).
    last_event: AtomicI64,
}

impl LagState {
    /// The state of `consumer` in this process (created on first use; never dropped).
    pub fn of(consumer: &str) -> Arc<LagState> {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        let state = map.entry(consumer.to_owned()).or_insert_with(|| {
            Arc::new(LagState {
                caught_up: AtomicI64::new(UNKNOWN),
                last_event: AtomicI64::new(UNKNOWN),
            })
        });
        start_publisher();
        Arc::clone(state)
    }

    /// A read found nothing new: the consumer is caught up now.
    pub fn caught_up(&self) {
        self.caught_up
            .fetch_max(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    /// A change committed at `commit_time` was handed to the consumer.
    pub fn delivered(&self, commit_time: DateTime<Utc>) {
        self.last_event
            .fetch_max(commit_time.timestamp_micros(), Ordering::Relaxed);
    }

    /// Forgets what was observed: the lag is unknown until the next observation.
    pub fn forget(&self) {
        self.caught_up.store(UNKNOWN, Ordering::Relaxed);
        self.last_event.store(UNKNOWN, Ordering::Relaxed);
    }

    /// The lag at `now`: `None` until anything was observed, never negative.
    pub fn lag_at(&self, now: DateTime<Utc>) -> Option<Duration> {
        let observed = self
            .caught_up
            .load(Ordering::Relaxed)
            .max(self.last_event.load(Ordering::Relaxed));
        if observed == UNKNOWN {
            return None;
        }
        let micros = now.timestamp_micros().saturating_sub(observed).max(0);
        Some(Duration::from_micros(micros.unsigned_abs()))
    }
}

/// The current lag of `consumer` in this process (`None` until known; see the module docs).
pub fn current(consumer: &str) -> Option<Duration> {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.get(consumer)?.lag_at(Utc::now())
}

/// Makes `consumer`'s lag unknown in this process (after it was deleted).
pub fn forget(consumer: &str) {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = map.get(consumer) {
        state.forget();
    }
}

/// Sets the two gauges of every consumer of this process once.
pub fn publish() {
    let now = Utc::now();
    let states: Vec<(String, Arc<LagState>)> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), Arc::clone(v)))
        .collect();
    for (client, state) in states {
        match state.lag_at(now) {
            Some(lag) => {
                metrics::gauge!(LAG_KNOWN, "client" => client.clone()).set(1.0);
                metrics::gauge!(LAG_SECONDS, "client" => client).set(lag.as_secs_f64());
            }
            None => metrics::gauge!(LAG_KNOWN, "client" => client).set(0.0),
        }
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<LagState>>> {
    static STATES: OnceLock<Mutex<HashMap<String, Arc<LagState>>>> = OnceLock::new();
    STATES.get_or_init(Default::default)
}

/// A plain thread, not a task: it must outlive any one runtime, and publishing never blocks.
fn start_publisher() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("datastore-lag-metrics".into())
            .spawn(|| loop {
                publish();
                std::thread::sleep(PUBLISH_INTERVAL);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the lag-metrics thread; change_stream_lag_seconds is not published");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_observed_then_never_negative() {
        let state = LagState::of("lag-unit-test");
        assert_eq!(state.lag_at(Utc::now()), None);
        assert_eq!(current("lag-unit-test"), None);
        let future = Utc::now() + chrono::Duration::seconds(5);
        state.delivered(future);
        assert_eq!(state.lag_at(Utc::now()), Some(Duration::ZERO));
        let later = future + chrono::Duration::seconds(3);
        assert_eq!(state.lag_at(later), Some(Duration::from_secs(3)));
        // An older observation never moves it back.
        state.delivered(Utc::now() - chrono::Duration::seconds(60));
        assert_eq!(state.lag_at(later), Some(Duration::from_secs(3)));
    }

    #[test]
    fn caught_up_counts_as_evidence() {
        let state = LagState::of("lag-unit-test-caught-up");
        state.delivered(Utc::now() - chrono::Duration::seconds(100));
        assert!(state.lag_at(Utc::now()).unwrap() >= Duration::from_secs(99));
        state.caught_up();
        assert!(state.lag_at(Utc::now()).unwrap() < Duration::from_secs(1));
    }
}
