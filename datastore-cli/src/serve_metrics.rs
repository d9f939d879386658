//! `datastore serve-metrics`: an operator's Prometheus exporter for the configured store. It
//! serves the library's metrics and samples, every `--interval`, what no component sees alone:
//! table and index sizes, the change history, and every consumer's backlog and checkpoint age
//! (`datastore::metrics::sample`, [`Sampled::Everything`]).

use std::net::SocketAddr;
use std::time::Duration;

use datastore::metrics::sample::{self, Sampled};
use datastore::prometheus::{self, METRICS_ADDR_VAR};

use crate::cli::ServeMetricsArgs;
use crate::{select, shutdown};
use datastore_tools::error::CliResult;
use datastore_tools::output;

/// Where to serve when neither `--addr` nor `DATASTORE_METRICS_ADDR` says.
const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Longest `--interval`: the exporter drops gauges not updated for 5 minutes.
const MAX_INTERVAL: Duration = Duration::from_secs(120);

/// Serves and samples until Ctrl-C or SIGTERM.
pub async fn run(args: &ServeMetricsArgs) -> CliResult<()> {
    let addr = address(args)?;
    let every = select::duration("--interval", &args.interval)?;
    if every.is_zero() || every > MAX_INTERVAL {
        return Err(select::invalid(format!(
            "--interval {}: give 1s to 2m (gauges not updated for 5 minutes are dropped)",
            args.interval
        )));
    }
    prometheus::install(addr)?;
    let store = datastore::connect_from_env().await?;
    output::print(&format!(
        "serve-metrics: serving http://{addr}/metrics for the {} store, sampling every {}; \
         Ctrl-C stops\n",
        store.provider(),
        args.interval
    ))?;
    let sampling = sample::spawn(&store, Sampled::Everything, every);
    shutdown::stopped().await;
    sampling.abort();
    store.close().await;
    Ok(())
}

fn address(args: &ServeMetricsArgs) -> CliResult<SocketAddr> {
    let from_env = std::env::var(METRICS_ADDR_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    Ok(match (&args.addr, from_env) {
        (Some(flag), _) => prometheus::parse_addr("--addr", flag)?,
        (None, Some(var)) => prometheus::parse_addr(METRICS_ADDR_VAR, &var)?,
        (None, None) => prometheus::parse_addr("the default address", DEFAULT_ADDR)?,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use datastore::{DataStore, Filter, Update};

    use super::*;

    /// The value of the sample of `name` whose labels include all of `labels`.
    fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn scrape(addr: SocketAddr) -> String {
        let mut conn = std::net::TcpStream::connect(addr).expect("connect to the exporter");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut response = String::new();
        conn.read_to_string(&mut response).expect("response");
        assert!(
            response.starts_with("HTTP/1.") && response[..12].ends_with(" 200"),
            "{response}"
        );
        response
    }

    /// Three documents, a consumer checkpointed after the first, a refused call; one sample.
    async fn exercise(store: &Arc<dyn DataStore>) {
        let collection = store.health_event_collection();
        crate::testing::checkpointed_after_first(collection, "scraped").await;
        let bad = Update::new().set("_id", "x");
        assert!(collection.update_one(&Filter::All, &bad).await.is_err());
        sample::sample_once(store.as_ref(), Sampled::Everything).await;
    }

    #[test]
    fn a_scrape_shows_operations_errors_pool_sizes_and_backlogs() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let pg = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
        let mongo =
            datastore_workload::embedded::start_mongo_stand_in().expect("the MongoDB stand-in");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        rt.block_on(async {
            prometheus::install(addr).expect("install the exporter");
            let (store, _) = datastore_workload::embedded::connect_embedded(&pg)
                .await
                .expect("store");
            let pg_store: Arc<dyn DataStore> = Arc::new(store);
            exercise(&pg_store).await;
            let mongo_store = datastore_workload::embedded::connect_mongo_stand_in(&mongo)
                .await
                .expect("store");
            exercise(&mongo_store).await;

            // The lag gauges are published once per interval by a thread of their own.
            tokio::time::sleep(datastore::metrics::lag::PUBLISH_INTERVAL * 2).await;
            let body = tokio::task::spawn_blocking(move || scrape(addr))
                .await
                .expect("scrape");
            // `collection` is the same label on both (MongoDB's is named HealthEvents).
            for provider in ["postgresql", "mongodb"] {
                let p = ("provider", provider);
                let c = ("collection", "health_events");
                let ops = value(
                    &body,
                    "datastore_operations_total",
                    &[p, c, ("operation", "insert_one"), ("outcome", "ok")],
                );
                // Counters are the process's: other tests running beside this one add to them.
                assert!(ops.is_some_and(|n| n >= 3.0), "{provider}: {body}");
                let errors = value(
                    &body,
                    "datastore_errors_total",
                    &[p, ("operation", "update_one"), ("kind", "invalid_input")],
                );
                assert!(errors.is_some_and(|n| n >= 1.0), "{provider}: {body}");
                let docs = value(&body, "datastore_collection_documents", &[p, c]);
                assert_eq!(docs, Some(3.0), "{provider}: {body}");
                let behind = value(
                    &body,
                    "datastore_consumer_events_behind",
                    &[p, c, ("client", "scraped")],
                );
                assert_eq!(behind, Some(2.0), "{provider}: {body}");
                assert!(
                    value(
                        &body,
                        "datastore_consumer_checkpoint_age_seconds",
                        &[p, c, ("client", "scraped")]
                    )
                    .is_some(),
                    "{body}"
                );
                assert!(
                    value(&body, "datastore_change_history_changes", &[p])
                        .is_some_and(|n| n >= 3.0),
                    "{body}"
                );
            }
            let idle = value(
                &body,
                "datastore_pool_connections",
                &[("provider", "postgresql"), ("state", "idle")],
            );
            assert!(idle.is_some(), "{body}");
            assert!(
                value(
                    &body,
                    "datastore_pool_max_connections",
                    &[("provider", "postgresql")]
                )
                .is_some_and(|n| n >= 1.0),
                "{body}"
            );
            assert!(
                body.contains("datastore_operation_duration_seconds_bucket"),
                "{body}"
            );
            assert!(
                value(&body, "change_stream_lag_known", &[("client", "scraped")]).is_some(),
                "{body}"
            );
            pg_store.close().await;
            mongo_store.close().await;
        });
    }

    #[test]
    fn bad_addresses_and_intervals_name_their_flag() {
        let args = |addr: &str, interval: &str| ServeMetricsArgs {
            addr: Some(addr.into()),
            interval: interval.into(),
        };
        let e = address(&args("nowhere", "15s")).expect_err("a bad address");
        assert!(e.to_string().contains("--addr"), "{e}");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let e = rt
            .block_on(run(&args("127.0.0.1:1", "soon")))
            .expect_err("a bad interval");
        assert!(e.to_string().contains("--interval"), "{e}");
    }
}
