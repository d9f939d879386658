//! The Prometheus exporter (cargo feature `prometheus`): `metrics-exporter-prometheus` serving
//! every metric of the library (operations, errors, change-stream lag, the processor, the
//! sampled pool gauges) at `http://ADDR/metrics`.
//!
//! With the feature on, [`open`](crate::open) installs it when `DATASTORE_METRICS_ADDR` is set
//! and samples the store's pool (see [`metrics::sample`](crate::metrics::sample)) while the
//! store lives. A process installs one exporter; a second install on the same address is a
//! no-op.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;

use crate::{Error, Result};

/// The variable naming the address to serve on, e.g. `0.0.0.0:9464`.
pub const METRICS_ADDR_VAR: &str = "DATASTORE_METRICS_ADDR";

/// How often a store opened with the exporter on samples its pool.
pub const POOL_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// Gauges not updated for this long are dropped (a deleted consumer's, a closed store's).
const IDLE_GAUGES: Duration = Duration::from_secs(300);

/// Latency buckets, in seconds: 100 µs to 30 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

static SERVING: OnceLock<SocketAddr> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Serves this process's metrics on `addr` (once per process).
pub fn install(addr: SocketAddr) -> Result<SocketAddr> {
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(serving) = SERVING.get() {
        return if *serving == addr {
            Ok(addr)
        } else {
            Err(Error::configuration(format!(
                "metrics are already served on {serving}; a process serves them on one address"
            )))
        };
    }
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map(|b| b.idle_timeout(MetricKindMask::GAUGE, Some(IDLE_GAUGES)))
        .and_then(PrometheusBuilder::install)
        .map_err(|e| {
            Error::configuration(format!(
                "cannot serve metrics on {addr} ({e}): give {METRICS_ADDR_VAR} a free host:port"
            ))
        })?;
    let _ = SERVING.set(addr);
    Ok(addr)
}

/// Installs the exporter on `DATASTORE_METRICS_ADDR` when it is set (or returns the address
/// already served); `None` when it is not set.
pub fn install_from_env() -> Result<Option<SocketAddr>> {
    if let Some(serving) = SERVING.get() {
        return Ok(Some(*serving));
    }
    match std::env::var(METRICS_ADDR_VAR) {
        Ok(text) if !text.trim().is_empty() => {
            install(parse_addr(METRICS_ADDR_VAR, &text)?).map(Some)
        }
        _ => Ok(None),
    }
}

/// Reads `host:port` (a name is resolved), naming `what` in the error.
pub fn parse_addr(what: &str, text: &str) -> Result<SocketAddr> {
    let bad = |why: String| {
        Error::configuration(format!(
            "{what}={text:?} is not an address to serve on ({why}): give host:port such as \
             0.0.0.0:9464 or 127.0.0.1:9464"
        ))
    };
    text.trim()
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to nothing".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_name_the_variable() {
        let addr = parse_addr(METRICS_ADDR_VAR, "127.0.0.1:9464").unwrap();
        assert_eq!(addr.port(), 9464);
        for bad in ["9464", "host:", "not an address"] {
            let e = parse_addr(METRICS_ADDR_VAR, bad).unwrap_err();
            assert!(e.to_string().contains(METRICS_ADDR_VAR), "{e}");
        }
    }
}
