//! `datastore demo`: the NVSentinel flow simulation over change streams (see [`crate::flow`]),
//! then (unless `--skip-queries`) a second ingest on which the queries of every NVSentinel
//! component (reference §3.4) run, each one timed.

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
use crate::error::{CliError, CliResult};
use crate::flow::{self, FlowOptions, FlowReport};
use crate::server;
use crate::synth::{self, per_second, Synth, CLUSTER};
use datastore::ErrorKind;

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
            let (store, description) = server::connect_configured(&config).await?;
            println!(
                "demo: using the configured {description}; the demo's events stay in that database"
            );
            let out = run_on(Arc::clone(&store), args, false).await;
            store.close().await;
            out
        })?
    } else if server::wants_mongodb() {
        println!(
            "demo: DATASTORE_PROVIDER=mongodb and no MONGODB_URI or DATASTORE_HOST set; starting the MongoDB stand-in"
        );
        let stand_in = server::start_mongo_stand_in()?;
        let out = rt.block_on(async {
            let store = server::connect_mongo_stand_in(&stand_in).await?;
            println!(
                "demo: started the {} stand-in on {} (database {:?}; it is stopped at exit)",
                stand_in.kind(),
                stand_in.uri(),
                server::DEMO_DATABASE
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
        let pg = server::start_embedded()?;
        let out = rt.block_on(async {
            let (store, version) = server::connect_embedded(&pg).await?;
            println!(
                "demo: started an embedded PostgreSQL {version} on {}:{} (database {:?}; it is stopped and deleted at exit)",
                pg.host(),
                pg.port(),
                server::DEMO_DATABASE
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

    /// fault-quarantine: the processable-inserts filter, quarantine updates, latest event of a
    /// node and the cancel flow. Returns the Quarantined event id of each sample node.
    async fn fault_quarantine(
        &mut self,
        sample: &[(String, Vec<DocumentId>)],
    ) -> CliResult<Vec<DocumentId>> {
        let health = self.store.health_events();
        let c = "fault-quarantine";

        let processable = Filter::eq(fields::PROCESSING_STRATEGY, 1)
            .or(Filter::exists(fields::PROCESSING_STRATEGY, false));
        let (n, t) = timed(health.collection().count(&processable)).await;
        self.step(
            c,
            "count processable inserts (strategy == 1 OR missing)",
            counted(n?, "event"),
            t,
        );

        // The first fatal event of a node quarantines it; later ones find it already quarantined.
        let mut updates = 0;
        let mut quarantined = Vec::with_capacity(sample.len());
        let t = Instant::now();
        for (_, ids) in sample {
            for (i, id) in ids.iter().enumerate() {
                let status = if i == 0 {
                    QuarantineStatus::Quarantined
                } else {
                    QuarantineStatus::AlreadyQuarantined
                };
                let span = format!("{:016x}", 0xfa_0000_0000_u64 + updates);
                health
                    .update_node_quarantine_status(id, status, &span)
                    .await?;
                updates += 1;
            }
            quarantined.push(ids[0].clone());
        }
        self.step(
            c,
            "update_node_quarantine_status (Quarantined / AlreadyQuarantined)",
            format!("{updates} events on {} nodes", sample.len()),
            t.elapsed(),
        );

        let node = &sample[0].0;
        let (latest, t) = timed(health.find_latest_event_for_node(node)).await;
        let latest = latest?.ok_or_else(|| CliError::check(format!("{node} has no events")))?;
        self.step(
            c,
            &format!("find_latest_event_for_node({node})"),
            format!("1 event ({})", latest.event.check_name),
            t,
        );

        // Cancel flow (manual uncordon) on the last sample node.
        let (node, ids) = &sample[sample.len() - 1];
        let newest_quarantined = Filter::eq(fields::NODE_NAME, node.as_str()).and(Filter::eq(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Quarantined.as_str(),
        ));
        let (latest, t) = timed(health.find_latest_by_query(&newest_quarantined)).await;
        let latest =
            latest?.ok_or_else(|| CliError::check(format!("{node} has no Quarantined event")))?;
        self.step(
            c,
            &format!("cancel: latest Quarantined event of {node}"),
            "1 event",
            t,
        );
        let filter = Filter::eq(fields::NODE_NAME, node.as_str())
            .and(Filter::gte(CREATED_AT_FIELD, latest.created_at))
            .and(Filter::is_in(
                fields::NODE_QUARANTINED,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                ],
            ));
        let cancel = Update::new().set(
            fields::NODE_QUARANTINED,
            QuarantineStatus::Cancelled.as_str(),
        );
        let (r, t) = timed(health.update_many(&filter, &cancel)).await;
        let r = r?;
        self.step(
            c,
            "cancel: update_many(node, createdAt >= latest, Q/AQ) -> Cancelled",
            format!("matched {}, modified {}", r.matched, r.modified),
            t,
        );
        if self.exclusive {
            ensure(r.modified == ids.len() as u64, || {
                format!(
                    "cancel flow modified {} events of {node}, expected {}",
                    r.modified,
                    ids.len()
                )
            })?;
        }
        if sample.len() > 1 {
            quarantined.pop();
        }
        Ok(quarantined)
    }

    /// node-drainer: compare-and-set to InProgress, eviction status, cold start and the
    /// already-drained check. Returns the drained event ids (at most two).
    async fn node_drainer(
        &mut self,
        sample: &[(String, Vec<DocumentId>)],
        quarantined: &[DocumentId],
    ) -> CliResult<Vec<DocumentId>> {
        let health = self.store.health_events();
        let c = "node-drainer";
        let id = &quarantined[0];

        let cas = Filter::eq(ID_FIELD, id.as_str()).and(Filter::ne(
            fields::EVICTION_STATUS,
            EvictionStatus::InProgress.as_str(),
        ));
        let in_progress =
            Update::new().set(fields::EVICTION_STATUS, EvictionStatus::InProgress.as_str());
        for attempt in 1..=2 {
            let (r, t) = timed(health.collection().update_one(&cas, &in_progress)).await;
            let r = r?;
            let expected = if attempt == 1 { 1 } else { 0 };
            self.step(
                c,
                &format!("CAS _id AND eviction != InProgress -> InProgress (#{attempt})"),
                format!("matched {} (expected {expected})", r.matched),
                t,
            );
            ensure(r.matched == expected, || {
                format!(
                    "compare-and-set #{attempt} matched {}, expected {expected}",
                    r.matched
                )
            })?;
        }

        let drained: Vec<DocumentId> = quarantined.iter().take(2).cloned().collect();
        let succeeded = OperationStatus {
            status: Some(EvictionStatus::Succeeded),
            message: "all user pods evicted".to_owned(),
            metadata: BTreeMap::new(),
        };
        let t = Instant::now();
        for id in &drained {
            health.update_pod_eviction_status(id, &succeeded).await?;
        }
        self.step(
            c,
            "update_pod_eviction_status Succeeded",
            counted(drained.len() as u64, "event"),
            t.elapsed(),
        );

        let cold_start = quarantined_events().and(Filter::is_in(
            fields::EVICTION_STATUS,
            ["", EvictionStatus::NotStarted.as_str()],
        ));
        let t = Instant::now();
        let mut stream = health.stream_by_query(cold_start, PAGE_SIZE);
        let (mut events, mut batches) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            events += batch?.len();
            batches += 1;
        }
        let t = t.elapsed();
        self.step(
            c,
            "cold start: stream_by_query Q/AQ AND eviction in (\"\", NotStarted)",
            format!(
                "{} in {}",
                counted(events as u64, "event"),
                if batches == 1 {
                    "1 batch".to_owned()
                } else {
                    format!("{batches} batches")
                }
            ),
            t,
        );

        let node = &sample[0].0;
        let (done, t) = timed(health.check_if_node_already_drained(node)).await;
        let done = done?;
        self.step(
            c,
            &format!("check_if_node_already_drained({node})"),
            done,
            t,
        );
        ensure(done, || {
            format!("{node} was drained but check_if_node_already_drained says no")
        })?;
        Ok(drained)
    }
}

impl Demo<'_> {
    /// fault-remediation: remediation status and its cold-start query.
    async fn fault_remediation(&mut self, drained: &[DocumentId]) -> CliResult<()> {
        let health = self.store.health_events();
        let c = "fault-remediation";
        let (r, t) = timed(health.update_remediation_status(&drained[0], true)).await;
        self.step(
            c,
            "update_remediation_status(true)",
            format!("matched {}", r?.matched),
            t,
        );

        let cold_start = quarantined_events()
            .and(Filter::is_in(
                fields::EVICTION_STATUS,
                [
                    EvictionStatus::Succeeded.as_str(),
                    EvictionStatus::AlreadyDrained.as_str(),
                ],
            ))
            .and(Filter::eq(
                fields::FAULT_REMEDIATED,
                datastore::Scalar::Null,
            ));
        let t = Instant::now();
        let mut stream = health.stream_by_query(cold_start, PAGE_SIZE);
        let mut events = 0usize;
        while let Some(batch) = stream.next().await {
            events += batch?.len();
        }
        let t = t.elapsed();
        self.step(
            c,
            "cold start: drained AND faultremediated null",
            counted(events as u64, "event"),
            t,
        );
        if self.exclusive {
            let expected = drained.len() - 1;
            ensure(events == expected, || {
                format!("remediation cold start found {events} events, expected {expected}")
            })?;
        }
        Ok(())
    }

    /// health-events-analyzer: non-fatal unhealthy events per node, distinct check names.
    async fn health_events_analyzer(&mut self) -> CliResult<()> {
        let health = self.store.health_events();
        let c = "health-events-analyzer";
        let nodes = (self.args.nodes as usize).min(ANALYZER_NODES);
        let prefix = Filter::ne(fields::AGENT, "health-events-analyzer").and(
            Filter::is_in(fields::PROCESSING_STRATEGY, [1, 3])
                .or(Filter::exists(fields::PROCESSING_STRATEGY, false)),
        );
        let t = Instant::now();
        let (mut total, mut max, mut max_node) = (0u64, 0u64, String::new());
        for i in 0..nodes {
            let node = synth::node_name(i);
            let f = prefix
                .clone()
                .and(Filter::eq(fields::NODE_NAME, node.as_str()))
                .and(Filter::eq(fields::IS_FATAL, false))
                .and(Filter::eq(fields::IS_HEALTHY, false));
            let n = health.collection().count(&f).await?;
            total += n;
            if n > max {
                (max, max_node) = (n, node);
            }
        }
        self.step(
            c,
            &format!("count non-fatal unhealthy events per node (x{nodes})"),
            format!("{total} total, max {max} ({max_node})"),
            t.elapsed(),
        );

        self.analyzer_rules(&prefix).await?;

        let (names, t) = timed(
            health
                .collection()
                .distinct(fields::CHECK_NAME, &Filter::All),
        )
        .await;
        self.step(
            c,
            "distinct(healthevent.checkname)",
            format!("{} check names", names?.len()),
            t,
        );
        Ok(())
    }

    /// health-events-analyzer's rules: MongoDB pipelines with `this.` placeholders, bound
    /// from one non-fatal unhealthy event and run through `aggregate` on either provider.
    async fn analyzer_rules(&mut self, analyzed: &Filter) -> CliResult<()> {
        let c = "health-events-analyzer";
        let collection = self.store.health_event_collection();
        let pick = analyzed
            .clone()
            .and(Filter::eq(fields::NODE_NAME, synth::node_name(1).as_str()))
            .and(Filter::eq(fields::IS_HEALTHY, false));
        let Some(event) = collection
            .find(&pick, &FindOptions::default().limit(1))
            .await?
            .pop()
        else {
            self.step(
                c,
                "rules: no unhealthy event on node-1 to analyse",
                "skipped",
                Duration::ZERO,
            );
            return Ok(());
        };
        let rules = [
            (
                "rule: same check >= 3 times on the node within 24 h",
                serde_json::json!([
                    {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                                "healthevent.ishealthy": false}},
                    {"$match": {"$expr": {"$gte": ["$healthevent.generatedtimestamp.seconds",
                        {"$subtract": ["this.healthevent.generatedtimestamp.seconds", 86_400]}]}}},
                    {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
                    {"$match": {"n": {"$gte": 3}}},
                    {"$sort": {"n": -1}},
                ]),
            ),
            (
                "rule: the node's errors on >= 2 distinct entities",
                serde_json::json!([
                    {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                                "healthevent.isfatal": false}},
                    {"$unwind": "$healthevent.entitiesimpacted"},
                    {"$group": {"_id": "$healthevent.nodename",
                                "entities": {"$addToSet": "$healthevent.entitiesimpacted.entityvalue"},
                                "events": {"$sum": 1}}},
                    {"$match": {"$expr": {"$gte": [{"$size": "$entities"}, 2]}}},
                ]),
            ),
        ];
        let mut bound = Vec::with_capacity(rules.len());
        let mut each = Vec::with_capacity(rules.len());
        for (what, json) in rules {
            let pipeline = Pipeline::parse(&json)?.bind_this(&event)?;
            let (out, t) = timed(collection.aggregate(&pipeline)).await;
            let out = out?;
            self.step(c, what, format!("{} result document(s)", out.len()), t);
            bound.push(pipeline);
            each.push(out);
        }
        let (together, t) = timed(collection.aggregate_each(&bound)).await;
        let together = together?
            .into_iter()
            .collect::<datastore::Result<Vec<_>>>()?;
        if together != each {
            return Err(CliError::check(
                "health-events-analyzer: aggregate_each gave other documents than aggregate",
            ));
        }
        self.step(
            c,
            "both rules at once: aggregate_each (one fetch on PostgreSQL)",
            "the same result documents",
            t,
        );
        Ok(())
    }

    /// event-exporter: the createdAt-range backfill and a keyset walk over this run's events.
    async fn event_exporter(
        &mut self,
        started_at: chrono::DateTime<Utc>,
        events: u64,
    ) -> CliResult<()> {
        let collection = self.store.health_event_collection();
        let c = "event-exporter";
        let until = collection.server_time().await? + chrono::Duration::milliseconds(1);
        let range =
            Filter::gte(CREATED_AT_FIELD, started_at).and(Filter::lt(CREATED_AT_FIELD, until));
        let options = FindOptions::sorted(Sort::asc(CREATED_AT_FIELD)).limit(u64::from(PAGE_SIZE));
        let (docs, t) = timed(collection.find(&range, &options)).await;
        let docs = docs?;
        self.step(
            c,
            &format!("backfill: find createdAt in [start, now) oldest first, limit {PAGE_SIZE}"),
            format!("{} docs", docs.len()),
            t,
        );
        let created: Vec<_> = docs
            .iter()
            .map(|d| d.get(CREATED_AT_FIELD).cloned())
            .collect();
        let sorted = created.windows(2).all(|w| {
            datastore::value::sort_compare(w[0].as_ref(), w[1].as_ref())
                != std::cmp::Ordering::Greater
        });
        ensure(sorted, || {
            "backfill documents are not oldest first".to_owned()
        })?;

        let mut request = PageRequest {
            direction: Direction::Ascending,
            size: PAGE_SIZE,
            after: None,
        };
        let this_run = Filter::gte(CREATED_AT_FIELD, started_at);
        let (mut pages, mut seen) = (0u64, 0u64);
        let t = Instant::now();
        loop {
            let page = collection.find_page(&this_run, &request).await?;
            pages += 1;
            seen += page.documents.len() as u64;
            match page.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        self.step(
            c,
            &format!("keyset walk: find_page x{pages} (size {PAGE_SIZE})"),
            format!("{seen} docs"),
            t.elapsed(),
        );
        if self.exclusive {
            ensure(seen == events, || {
                format!("keyset walk returned {seen} documents, expected {events}")
            })?;
        }
        Ok(())
    }

    /// csp-health-monitor: upserts, the trigger queries, status updates and lookups. Returns the
    /// event id the transaction step updates.
    async fn csp_health_monitor(&mut self) -> CliResult<String> {
        let maintenance = self.store.maintenance_events();
        let c = "csp-health-monitor";
        let now = maintenance.collection().server_time().await?;
        let mut synth = Synth::new(self.args.seed, self.args.nodes as usize, now);
        let events: Vec<_> = (0..MAINTENANCE_EVENTS)
            .map(|i| synth.maintenance_event(i, now))
            .collect();

        let t = Instant::now();
        let mut new = 0;
        for e in &events {
            new += usize::from(maintenance.upsert(e).await?.inserted);
        }
        self.step(
            c,
            &format!("upsert x{}", events.len()),
            format!("{new} new"),
            t.elapsed(),
        );
        let by_event_id = |id: &str| Filter::eq(mf::EVENT_ID, id);

        let again = &events[5];
        let (outcome, t) = timed(maintenance.upsert(again)).await;
        let outcome = outcome?;
        let copies = maintenance
            .collection()
            .count(&by_event_id(&again.event_id))
            .await?;
        self.step(
            c,
            &format!("upsert {} again (unchanged)", again.event_id),
            format!("inserted={}, {copies} stored", outcome.inserted),
            t,
        );
        ensure(!outcome.inserted && copies == 1, || {
            format!(
                "re-upsert of {} inserted={} with {copies} copies",
                again.event_id, outcome.inserted
            )
        })?;

        let (due, t) =
            timed(maintenance.find_events_to_trigger_quarantine(Duration::from_secs(3600))).await;
        let due = due?;
        self.step(
            c,
            "find_events_to_trigger_quarantine(within 1h)",
            counted(due.len() as u64, "event"),
            t,
        );
        let first = due
            .first()
            .map(|r| r.event.clone())
            .ok_or_else(|| CliError::check("no maintenance event is due for quarantine"))?;

        let (r, t) = timed(
            maintenance.update_event_status(&first.event_id, InternalStatus::QuarantineTriggered),
        )
        .await;
        self.step(
            c,
            &format!(
                "update_event_status({}, QUARANTINE_TRIGGERED)",
                first.event_id
            ),
            format!("matched {}", r?.matched),
            t,
        );

        // The provider re-polls the event (still DETECTED on its side): NVSentinel's progress stays.
        let (outcome, t) = timed(maintenance.upsert(&first)).await;
        let outcome = outcome?;
        let stored = maintenance
            .collection()
            .find(&by_event_id(&first.event_id), &FindOptions::default())
            .await?;
        let status = stored
            .first()
            .and_then(|d| d.get(mf::STATUS))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        self.step(
            c,
            &format!("upsert {} re-polled as DETECTED", first.event_id),
            format!("kept {status}"),
            t,
        );
        ensure(
            !outcome.inserted && status == InternalStatus::QuarantineTriggered.as_str(),
            || format!("re-polled upsert left status {status:?}, expected QUARANTINE_TRIGGERED"),
        )?;

        let (ready, t) =
            timed(maintenance.find_events_to_trigger_healthy(Duration::from_secs(15 * 60))).await;
        self.step(
            c,
            "find_events_to_trigger_healthy(15m after end)",
            counted(ready?.len() as u64, "event"),
            t,
        );

        let (last, t) = timed(maintenance.last_processed_event_timestamp(CLUSTER, Csp::Gcp)).await;
        let last = last?.map_or_else(
            || "none".to_owned(),
            |ts| ts.format("%H:%M:%S%.3f").to_string(),
        );
        self.step(c, "last_processed_event_timestamp(cluster, gcp)", last, t);

        let node = &first.node_name;
        let (ongoing, t) = timed(maintenance.find_latest_ongoing_event_by_node(node)).await;
        let ongoing = ongoing?.map_or_else(
            || "none".to_owned(),
            |r| format!("{} {}", r.event.event_id, r.event.status),
        );
        self.step(
            c,
            &format!("find_latest_ongoing_event_by_node({node})"),
            ongoing,
            t,
        );

        let other = due
            .iter()
            .map(|r| r.event.event_id.clone())
            .find(|id| *id != first.event_id)
            .unwrap_or(first.event_id);
        Ok(other)
    }

    /// A transaction spanning both stores: two writes, one commit.
    async fn transaction(&mut self, health_id: &DocumentId, event_id: &str) -> CliResult<()> {
        let t = Instant::now();
        let tx = self.store.begin().await?;
        let writes = async {
            tx.health_events()
                .update_span_id(health_id, "csp-health-monitor", "00f067aa0ba902b7")
                .await?;
            tx.maintenance_events()
                .update_event_status(event_id, InternalStatus::MaintenanceOngoing)
                .await?;
            Ok::<_, datastore::Error>(())
        }
        .await;
        match writes {
            Ok(()) => tx.commit().await?,
            Err(e) => {
                // The write's error is the one to report; rollback is best effort.
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        }
        let elapsed = t.elapsed();
        let stored = self.store.health_events().get(health_id).await?;
        let visible = stored.is_some_and(|r| r.status.span_ids.contains_key("csp-health-monitor"));
        self.step(
            "transaction",
            &format!("begin; update_span_id + update_event_status({event_id}); commit"),
            "2 writes committed",
            elapsed,
        );
        ensure(visible, || {
            "the committed span id is not visible".to_owned()
        })
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
