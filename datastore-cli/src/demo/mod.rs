//! `datastore demo`: the NVSentinel flow simulation over change streams (see [`datastore_workload::flow`]),
//! then (unless `--skip-queries`) a second ingest on which the queries of every NVSentinel
//! component (reference §3.4) run, each one timed.

mod analyzer;
mod csp_health_monitor;
mod event_exporter;
mod fault_quarantine;
mod fault_remediation;
mod node_drainer;
mod transaction;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datastore::aggregate::Pipeline;
use datastore::domain::maintenance_fields as mf;
use datastore::model::{
    fields, Csp, EvictionStatus, InternalStatus, OperationStatus, ProcessingStrategy,
    QuarantineStatus,
};
use datastore::value::{CREATED_AT_FIELD, ID_FIELD};
use datastore::{
    DataStore, DatastoreConfig, Direction, DocumentId, Filter, FindOptions, PageRequest, Sort,
    Update,
};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::runtime::Runtime;

use crate::cli::DemoArgs;
use datastore::ErrorKind;
use datastore_tools::error::{CliError, CliResult};
use datastore_workload::embedded;
use datastore_workload::flow::{self, FlowOptions, FlowReport};
use datastore_workload::synth::{self, per_second, Synth, CLUSTER};

/// Nodes whose events go through the quarantine → drain → remediation flows.
const SAMPLE_NODES: usize = 10;
/// Nodes whose unhealthy events the analyzer step counts one by one.
const ANALYZER_NODES: usize = 1_000;
/// Maintenance events the csp-health-monitor step upserts.
const MAINTENANCE_EVENTS: usize = 20;
/// Documents per page / batch of the streaming and paging queries.
const PAGE_SIZE: u32 = 1_000;

/// Runs the demo: against the configured server when the environment names one, otherwise
/// against a throwaway embedded PostgreSQL that is stopped (and deleted) before returning,
/// whether the demo succeeded or not.
pub fn run(rt: &Runtime, args: &DemoArgs) -> CliResult<()> {
    let started = Instant::now();
    let summary = if DatastoreConfig::env_names_a_server() {
        let config = DatastoreConfig::from_env()?;
        rt.block_on(async {
            let (store, description) = connect_configured(&config).await?;
            println!(
                "demo: using the configured {description}; the demo's events stay in that database"
            );
            let out = run_on(Arc::clone(&store), args, false).await;
            store.close().await;
            out
        })?
    } else if wants_mongodb() {
        println!(
            "demo: DATASTORE_PROVIDER=mongodb and no MONGODB_URI or DATASTORE_HOST set; starting the MongoDB stand-in"
        );
        let stand_in = embedded::start_mongo_stand_in()?;
        let out = rt.block_on(async {
            let store = embedded::connect_mongo_stand_in(&stand_in).await?;
            println!(
                "demo: started the {} stand-in on {} (database {:?}; it is stopped at exit)",
                stand_in.kind(),
                stand_in.uri(),
                embedded::DEMO_DATABASE
            );
            let out = run_on(Arc::clone(&store), args, true).await;
            store.close().await;
            out
        });
        drop(stand_in);
        out?
    } else {
        println!(
            "demo: no DATASTORE_HOST or DATASTORE_CONFIG_FILE set; starting an embedded PostgreSQL"
        );
        let pg = embedded::start_embedded()?;
        let out = rt.block_on(async {
            let (store, version) = embedded::connect_embedded(&pg).await?;
            println!(
                "demo: started an embedded PostgreSQL {version} on {}:{} (database {:?}; it is stopped and deleted at exit)",
                pg.host(),
                pg.port(),
                embedded::DEMO_DATABASE
            );
            let store: Arc<dyn DataStore> = Arc::new(store);
            let out = run_on(Arc::clone(&store), args, true).await;
            store.close().await;
            out
        });
        // Stop the server before reporting anything, on success and on error alike.
        drop(pg);
        out?
    };
    summary.print(started.elapsed());
    Ok(())
}

/// The flow simulation's settings for the demo. On a shared server (`exclusive` false) the run
/// marks its events and suffixes its consumer names, so that it leaves real NVSentinel
/// consumers and events alone.
fn flow_options(args: &DemoArgs, exclusive: bool) -> FlowOptions {
    FlowOptions {
        events: args.events,
        nodes: args.nodes as usize,
        batch: args.batch,
        seed: args.seed,
        poll_interval: Duration::from_millis(args.poll_ms),
        concurrency: args.stage_concurrency as usize,
        stall_timeout: flow::STALL_TIMEOUT,
        run_id: (!exclusive).then(|| {
            format!(
                "demo-{}-{}",
                std::process::id(),
                Utc::now().timestamp_millis()
            )
        }),
    }
}

/// The flow, then the component queries.
async fn run_on(store: Arc<dyn DataStore>, args: &DemoArgs, exclusive: bool) -> CliResult<Summary> {
    let options = flow_options(args, exclusive);
    println!(
        "demo: flow simulation: ingest -> {} -> {} -> {} over change streams \
         on the library's processor (StartFrom::Now, poll every {} ms, low-water-mark checkpoints)",
        options.consumer(flow::Stage::Quarantine),
        options.consumer(flow::Stage::Drain),
        options.consumer(flow::Stage::Remediation),
        args.poll_ms
    );
    let flow = match flow::run(Arc::clone(&store), &options).await {
        Ok(report) => {
            report.print();
            Ok(report)
        }
        // A server without change streams (e.g. the MongoDB stand-in): say so, run the rest.
        Err(CliError::Datastore(e)) if e.kind() == ErrorKind::Unsupported => {
            println!("demo: SKIPPED the flow simulation: {}", e.message());
            Err(e.message().to_owned())
        }
        Err(e) => return Err(e),
    };
    let queries = if args.skip_queries {
        None
    } else {
        println!();
        println!(
            "demo: component queries on a second ingest of {} events",
            args.events
        );
        Some(Demo::new(store.as_ref(), args, exclusive).run().await?)
    };
    Ok(Summary { flow, queries })
}

/// What the demo measured.
struct Summary {
    /// The flow's report, or why it was skipped.
    flow: std::result::Result<FlowReport, String>,
    queries: Option<QuerySummary>,
}

/// What the component-query part measured.
struct QuerySummary {
    events: u64,
    batches: u64,
    batch_size: u64,
    ingest: Duration,
    steps: usize,
    query_time: Duration,
}

impl Summary {
    fn print(&self, total: Duration) {
        println!();
        println!("demo: summary");
        match &self.flow {
            Ok(f) => print_flow(f),
            Err(why) => println!("  flow              SKIPPED: {why}"),
        }
        if let Some(q) = &self.queries {
            println!(
                "  events ingested   {} ({} insert_many calls of up to {} events)",
                q.events, q.batches, q.batch_size
            );
            println!(
                "  ingest rate       {:.0} events/s ({:.2} s inside insert_many)",
                per_second(q.events, q.ingest),
                q.ingest.as_secs_f64()
            );
            println!(
                "  component steps   {} ({:.1} ms)",
                q.steps,
                ms(q.query_time)
            );
        }
        println!("  total time        {:.2} s", total.as_secs_f64());
        println!("demo: OK");
    }
}

/// The flow simulation's lines of the summary.
fn print_flow(f: &FlowReport) {
    println!(
        "  flow              {} events, first insert to last remediation {:.2} s: {:.0} events/s ({:.0} remediated/s)",
        f.ingested,
        f.elapsed.as_secs_f64(),
        f.events_per_second(),
        f.remediated_per_second()
    );
    let lags: Vec<String> = f
        .stages
        .iter()
        .map(|s| match s.lag {
            Some(p) => format!("{} {:.1}/{:.1} ms", s.stage.label(), p.p50, p.p99),
            None => format!("{} -", s.stage.label()),
        })
        .collect();
    println!("  stage lag p50/p99 {}", lags.join(", "));
    println!(
        "  exactly once      all {} fatal processable events quarantined, drained and remediated once each",
        f.flowing
    );
}

/// One ingested event, as far as the later steps need it.
struct Ingested {
    id: DocumentId,
    node: String,
    fatal_processable: bool,
}

/// The demo run against one store.
struct Demo<'a> {
    store: &'a dyn DataStore,
    args: &'a DemoArgs,
    /// True on the embedded server, where nothing else writes: exact counts are checked.
    exclusive: bool,
    steps: usize,
    query_time: Duration,
}

/// `1 event`, `2 events`.
fn counted(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `fut` and returns its output with the time it took.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = fut.await;
    (out, t.elapsed())
}

fn ensure(ok: bool, message: impl FnOnce() -> String) -> CliResult<()> {
    if ok {
        Ok(())
    } else {
        Err(CliError::check(message()))
    }
}

impl<'a> Demo<'a> {
    fn new(store: &'a dyn DataStore, args: &'a DemoArgs, exclusive: bool) -> Self {
        Demo {
            store,
            args,
            exclusive,
            steps: 0,
            query_time: Duration::ZERO,
        }
    }

    /// Prints one aligned result line.
    fn step(&mut self, component: &str, query: &str, result: impl Display, elapsed: Duration) {
        self.steps += 1;
        self.query_time += elapsed;
        println!(
            "  {component:<23} {query:<62} {:>30} {:>9.2} ms",
            result.to_string(),
            ms(elapsed)
        );
    }

    async fn run(mut self) -> CliResult<QuerySummary> {
        let health = self.store.health_events();
        let started_at = health.collection().server_time().await?;
        let (ingested, ingest, batches) = self.ingest().await?;
        let events = ingested.len() as u64;
        println!();
        println!(
            "  {:<23} {:<62} {:>30} {:>12}",
            "component", "query", "result", "time"
        );
        self.step(
            "platform-connectors",
            &format!("health_events().insert_many x{batches}"),
            format!("{events} events, {:.0}/s", per_second(events, ingest)),
            ingest,
        );

        // Nodes with fatal events that fault-quarantine acts on, in fleet order.
        let mut by_node: BTreeMap<usize, (String, Vec<DocumentId>)> = BTreeMap::new();
        for e in ingested.iter().filter(|e| e.fatal_processable) {
            let index = e
                .node
                .trim_start_matches("node-")
                .parse()
                .unwrap_or(usize::MAX);
            by_node
                .entry(index)
                .or_insert_with(|| (e.node.clone(), Vec::new()))
                .1
                .push(e.id.clone());
        }
        let sample: Vec<(String, Vec<DocumentId>)> =
            by_node.into_values().take(SAMPLE_NODES).collect();
        ensure(!sample.is_empty(), || {
            "no fatal ExecuteRemediation events were generated; use more --events".to_owned()
        })?;

        let quarantined = self.fault_quarantine(&sample).await?;
        let drained = self.node_drainer(&sample, &quarantined).await?;
        self.fault_remediation(&drained).await?;
        self.health_events_analyzer().await?;
        self.event_exporter(started_at, events).await?;
        let evt = self.csp_health_monitor().await?;
        self.transaction(&drained[0], &evt).await?;

        Ok(QuerySummary {
            events,
            batches,
            batch_size: self.args.batch,
            ingest,
            steps: self.steps,
            query_time: self.query_time,
        })
    }

    /// Inserts the synthetic events in batches, like platform-connectors does per gRPC call.
    async fn ingest(&mut self) -> CliResult<(Vec<Ingested>, Duration, u64)> {
        let total = self.args.events;
        let first_generated = Utc::now() - chrono::Duration::milliseconds(100 * total as i64);
        let mut synth = Synth::new(self.args.seed, self.args.nodes as usize, first_generated);
        println!(
            "demo: ingesting {total} synthetic health events from {} nodes in batches of {} (seed {})",
            synth.node_count(),
            self.args.batch,
            self.args.seed
        );
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template(
                "  ingest [{bar:40}] {pos:>8}/{len} events {per_sec:>14} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let store = self.store.health_events();
        let mut ingested = Vec::with_capacity(total as usize);
        let mut batches = 0;
        let mut elapsed = Duration::ZERO;
        let mut remaining = total;
        while remaining > 0 {
            let n = remaining.min(self.args.batch);
            let batch = synth.health_events(n as usize);
            let (inserted, took) = timed(store.insert_many(&batch)).await;
            elapsed += took;
            let inserted = match inserted {
                Ok(v) => v,
                Err(e) => {
                    bar.abandon();
                    return Err(e.into());
                }
            };
            ensure(inserted.len() == batch.len(), || {
                format!(
                    "insert_many returned {} ids for {} events",
                    inserted.len(),
                    batch.len()
                )
            })?;
            for ((event, _), ins) in batch.into_iter().zip(inserted) {
                ingested.push(Ingested {
                    id: ins.id,
                    fatal_processable: event.is_fatal
                        && event.processing_strategy == ProcessingStrategy::ExecuteRemediation,
                    node: event.node_name,
                });
            }
            batches += 1;
            remaining -= n;
            bar.inc(n);
        }
        bar.finish_and_clear();
        Ok((ingested, elapsed, batches))
    }
}

/// Events whose node is quarantined for them (Quarantined or AlreadyQuarantined).
fn quarantined_events() -> Filter {
    Filter::is_in(
        fields::NODE_QUARANTINED,
        [
            QuarantineStatus::Quarantined.as_str(),
            QuarantineStatus::AlreadyQuarantined.as_str(),
        ],
    )
}

/// Opens the store named by the configuration (migrating it) and describes the target
/// without the password.
pub async fn connect_configured(
    config: &DatastoreConfig,
) -> CliResult<(Arc<dyn DataStore>, String)> {
    let store = datastore::connect(config).await?;
    Ok((store, crate::target::describe(config)))
}

/// True when `DATASTORE_PROVIDER` asks for MongoDB.
pub fn wants_mongodb() -> bool {
    std::env::var("DATASTORE_PROVIDER")
        .ok()
        .and_then(|p| p.parse::<datastore::ProviderKind>().ok())
        == Some(datastore::ProviderKind::Mongodb)
}
