//! `datastore-bench`: write throughput of the provider against a bare-SQL baseline measured in
//! the same run on the same throwaway server, an index check of the domain queries, and the
//! change-stream cases ([`changes`]). `--cases` selects what runs.
//!
//! Every measurement gets a fresh database. Both sides start from the same typed events and
//! turn them into the same canonical JSON document
//! ([`datastore::model::health_event_document`]); the baseline then
//! writes it to a bare `jsonb` table with plain SQL (no indexes but the primary key).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datastore::model::{
    fields, health_event_document, HealthEvent, HealthEventStatus, QuarantineStatus,
};
use datastore::{DataStore, Filter, Update, Value};
use datastore_testkit::postgres::PgServer;
use futures::future::try_join_all;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use provider_postgres::PgDataStore;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::runtime::Runtime;

mod changes;
mod import;
mod read_ahead;
mod rules;

pub use changes::drain_worker;

use crate::cli::{BenchArgs, BenchCase};
use datastore_tools::error::{CliError, CliResult, SqlContext};
use datastore_workload::embedded;
use datastore_workload::synth::{self, per_second, Synth};

/// Concurrent writers of case (b) and of the capture on/off case.
const WRITERS: usize = 8;
/// Nodes of the fleet the write cases use.
const BENCH_NODES: usize = 200;
/// Events per `insert_many` while loading the index-check data.
const EXPLAIN_BATCH: usize = 5_000;
/// Nodes of the fleet the index check uses.
const EXPLAIN_NODES: usize = 1_000;
/// Maintenance events loaded for the index check.
const EXPLAIN_MAINTENANCE: usize = 2_000;
/// Nodes whose fatal events are marked Quarantined for the index check.
const EXPLAIN_QUARANTINED_NODES: usize = 50;

const BASELINE_TABLE: &str =
    "CREATE TABLE bench_baseline (id bigserial primary key, doc jsonb not null)";
const BASELINE_INSERT: &str = "INSERT INTO bench_baseline (doc) VALUES ($1)";
const BASELINE_COPY: &str = "COPY bench_baseline (doc) FROM STDIN";

type Events = Vec<(HealthEvent, HealthEventStatus)>;

/// Runs the benchmarks on a throwaway server, stopping it before returning.
pub fn run(rt: &Runtime, args: &BenchArgs) -> CliResult<()> {
    println!("bench: starting a throwaway PostgreSQL (datastore-testkit)");
    let pg = embedded::start_embedded()?;
    let out = rt.block_on(Bench { pg: &pg, args }.run());
    drop(pg);
    out
}

struct Bench<'a> {
    pg: &'a PgServer,
    args: &'a BenchArgs,
}

/// One row of the results table.
struct Row {
    case: String,
    /// Events/s of the provider's side (the median run).
    provider: f64,
    /// Events/s of the baseline (the median run).
    baseline: f64,
}

/// A bound parameter of an `EXPLAIN`ed statement.
enum Param {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
}

/// One domain query of the index check.
struct Explained {
    label: &'static str,
    sql: String,
    params: Vec<Param>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `12345.6` → `12,346`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "  {what} [{{bar:40}}] {{pos:>8}}/{{len}} {{per_sec:>14}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Appends `text` escaped for COPY's text format (backslash, tab, newline, carriage return).
fn push_copy_text(buf: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

fn document(event: &HealthEvent, status: &HealthEventStatus) -> Value {
    Value::Object(health_event_document(event, status))
}

fn join_error(e: tokio::task::JoinError) -> CliError {
    CliError::check(format!("a writer task failed: {e}"))
}

impl Bench<'_> {
    async fn run(&self) -> CliResult<()> {
        let admin = self.admin_url();
        let (version, cores) = {
            let mut conn = PgConnection::connect(&admin)
                .await
                .sql_context(|| "connecting".to_owned())?;
            let v: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .sql_context(|| "reading the server version".to_owned())?;
            conn.close().await.sql_context(|| "closing".to_owned())?;
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            (
                v.split_whitespace().next().unwrap_or_default().to_owned(),
                cores,
            )
        };
        println!(
            "bench: PostgreSQL {version} on {}:{}, {cores} CPU core(s); median of {} run(s) per measurement",
            self.pg.host(),
            self.pg.port(),
            self.args.runs
        );
        let start = Utc::now();
        let n = self.args.events;
        let selected = |c| self.args.selected(c);

        let mut rows = Vec::new();
        if selected(BenchCase::Single) || selected(BenchCase::Concurrent) {
            let events: Arc<Events> =
                Arc::new(Synth::new(self.args.seed, BENCH_NODES, start).health_events(n as usize));
            if selected(BenchCase::Single) {
                rows.push(
                    self.compare(
                        &format!("a. single writer, insert x{n}"),
                        n,
                        || self.provider_single(&events),
                        || self.baseline_single(&events),
                    )
                    .await?,
                );
            }
            if selected(BenchCase::Concurrent) {
                rows.push(
                    self.compare(
                        &format!("b. {WRITERS} writers, insert x{n}"),
                        n,
                        || self.provider_concurrent(Arc::clone(&events), true),
                        || self.baseline_concurrent(Arc::clone(&events)),
                    )
                    .await?,
                );
            }
        }
        if selected(BenchCase::Batch) {
            let batch: Events = Synth::new(self.args.seed.wrapping_add(1), BENCH_NODES, start)
                .health_events(self.args.batch as usize);
            let b = batch.len() as u64;
            rows.push(
                self.compare(
                    &format!("c. batch of {b}: insert_many vs COPY"),
                    b,
                    || self.provider_batch(&batch),
                    || self.baseline_copy(&batch),
                )
                .await?,
            );
        }
        if !rows.is_empty() {
            Self::print_rows(&rows, cores);
        }

        // A failed index check is an error, reported after the change-stream cases have run.
        let index = if !selected(BenchCase::Index) {
            Ok(())
        } else if self.args.explain_events > 0 {
            self.index_check().await
        } else {
            println!("bench: index check skipped (--explain-events 0)");
            Ok(())
        };
        let change_cases = [
            BenchCase::Capture,
            BenchCase::Lag,
            BenchCase::Backlog,
            BenchCase::Flow,
            BenchCase::ReadAhead,
            BenchCase::Rules,
        ];
        if change_cases.into_iter().any(selected) {
            changes::run(self).await?;
        }
        if selected(BenchCase::Import) {
            import::run(self).await?;
        }
        index
    }

    fn print_rows(rows: &[Row], cores: usize) {
        println!();
        println!(
            "{:<40} {:>16} {:>16} {:>8}",
            "case", "provider ev/s", "baseline ev/s", "ratio"
        );
        for r in rows {
            println!(
                "{:<40} {:>16} {:>16} {:>8.2}",
                r.case,
                thousands(r.provider),
                thousands(r.baseline),
                if r.baseline > 0.0 {
                    r.provider / r.baseline
                } else {
                    0.0
                }
            );
        }
        println!(
            "note: figures are ratios against the baseline measured in this run on the same server and \
             machine ({cores} core(s))."
        );
        println!(
            "      The throwaway server runs with fsync=off (also synchronous_commit=off, full_page_writes=off) \
             for both sides:"
        );
        println!(
            "      absolute events/s are not durable-write numbers and only the ratios carry over."
        );
        println!(
            "      The baseline table has only its primary key; the provider also maintains a (created_at, id) \
             btree and a GIN index, and (capture on) writes each change to the change log."
        );
    }

    fn admin_url(&self) -> String {
        self.pg.url("postgres")
    }

    /// Runs both sides `runs` times (interleaved) and returns the medians as events/s.
    async fn compare<P, PF, B, BF>(
        &self,
        case: &str,
        events: u64,
        provider: P,
        baseline: B,
    ) -> CliResult<Row>
    where
        P: Fn() -> PF,
        PF: std::future::Future<Output = CliResult<Duration>>,
        B: Fn() -> BF,
        BF: std::future::Future<Output = CliResult<Duration>>,
    {
        let (mut p, mut b) = (Vec::new(), Vec::new());
        for run in 1..=self.args.runs {
            let tp = provider().await?;
            let tb = baseline().await?;
            println!(
                "  {case:<40} run {run}/{}: provider {:>8.3} s ({:>9}/s), baseline {:>8.3} s ({:>9}/s)",
                self.args.runs,
                tp.as_secs_f64(),
                thousands(per_second(events, tp)),
                tb.as_secs_f64(),
                thousands(per_second(events, tb))
            );
            p.push(tp);
            b.push(tb);
        }
        Ok(Row {
            case: case.to_owned(),
            provider: per_second(events, median(p)),
            baseline: per_second(events, median(b)),
        })
    }

    /// A fresh database with the provider's schema, and the store connected to it.
    async fn fresh_store(&self) -> CliResult<(PgDataStore, String)> {
        let db = provider_postgres::fresh_test_database(&self.admin_url()).await?;
        let store = PgDataStore::connect_url(
            &self.pg.url(&db),
            datastore_workload::embedded::throwaway_pool(),
        )
        .await?;
        Ok((store, db))
    }

    /// A fresh database with the bare baseline table, and a pool of `size` connections to it.
    async fn fresh_baseline(&self, size: u32) -> CliResult<(PgPool, String)> {
        let db = provider_postgres::fresh_test_database(&self.admin_url()).await?;
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .connect(&self.pg.url(&db))
            .await
            .sql_context(|| format!("connecting to {db}"))?;
        sqlx::query(BASELINE_TABLE)
            .execute(&pool)
            .await
            .sql_context(|| "creating bench_baseline".to_owned())?;
        Ok((pool, db))
    }

    /// A fresh baseline database and one connection to it.
    async fn fresh_baseline_connection(
        &self,
    ) -> CliResult<(PgPool, PoolConnection<Postgres>, String)> {
        let (pool, db) = self.fresh_baseline(1).await?;
        let conn = pool
            .acquire()
            .await
            .sql_context(|| "acquiring".to_owned())?;
        Ok((pool, conn, db))
    }

    async fn drop_database(&self, db: &str) -> CliResult<()> {
        let mut conn = PgConnection::connect(&self.admin_url())
            .await
            .sql_context(|| "connecting to drop a database".to_owned())?;
        // The name comes from fresh_test_database (lowercase letters, digits, underscores).
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .sql_context(|| format!("dropping {db}"))?;
        conn.close().await.sql_context(|| "closing".to_owned())?;
        Ok(())
    }

    /// Opens `n` pooled connections at once so that no measurement pays for connecting.
    async fn warm_up(pool: &PgPool, n: usize) -> CliResult<()> {
        let conns = try_join_all((0..n).map(|_| pool.acquire()))
            .await
            .sql_context(|| "opening connections".to_owned())?;
        drop(conns);
        Ok(())
    }

    async fn provider_single(&self, events: &Events) -> CliResult<Duration> {
        let (store, db) = self.fresh_store().await?;
        Self::warm_up(store.pool(), 1).await?;
        let health = store.health_events();
        let t = Instant::now();
        let mut result = Ok(());
        for (event, status) in events {
            if let Err(e) = health.insert(event, status).await {
                result = Err(e);
                break;
            }
        }
        let elapsed = t.elapsed();
        store.close().await;
        self.drop_database(&db).await?;
        result?;
        Ok(elapsed)
    }

    async fn baseline_single(&self, events: &Events) -> CliResult<Duration> {
        let (pool, mut conn, db) = self.fresh_baseline_connection().await?;
        let t = Instant::now();
        for (event, status) in events {
            sqlx::query(BASELINE_INSERT)
                .bind(document(event, status))
                .execute(&mut *conn)
                .await
                .sql_context(|| "baseline insert".to_owned())?;
        }
        let elapsed = t.elapsed();
        drop(conn);
        pool.close().await;
        self.drop_database(&db).await?;
        Ok(elapsed)
    }

    /// 8 writers inserting one event at a time on a fresh database, with change capture on or
    /// off.
    async fn provider_concurrent(&self, events: Arc<Events>, capture: bool) -> CliResult<Duration> {
        let (store, db) = self.fresh_store().await?;
        let store = if capture {
            store
        } else {
            store.without_change_capture()
        };
        Self::warm_up(store.pool(), WRITERS).await?;
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (store, events, next) = (store.clone(), Arc::clone(&events), Arc::clone(&next));
                tokio::spawn(async move {
                    let health = store.health_events();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((event, status)) = events.get(i) else {
                            return Ok::<_, datastore::Error>(());
                        };
                        health.insert(event, status).await?;
                    }
                })
            })
            .collect();
        let mut result = Ok(());
        for task in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(CliError::from(e)),
                Err(e) => result = Err(join_error(e)),
            }
        }
        let elapsed = t.elapsed();
        store.close().await;
        self.drop_database(&db).await?;
        result?;
        Ok(elapsed)
    }

    async fn baseline_concurrent(&self, events: Arc<Events>) -> CliResult<Duration> {
        let (pool, db) = self.fresh_baseline(WRITERS as u32).await?;
        Self::warm_up(&pool, WRITERS).await?;
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (pool, events, next) = (pool.clone(), Arc::clone(&events), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((event, status)) = events.get(i) else {
                            return Ok::<_, sqlx::Error>(());
                        };
                        sqlx::query(BASELINE_INSERT)
                            .bind(document(event, status))
                            .execute(&pool)
                            .await?;
                    }
                })
            })
            .collect();
        let mut result = Ok(());
        for task in tasks {
            match task.await {
                Ok(r) => {
                    if let Err(e) = r.sql_context(|| "baseline insert".to_owned()) {
                        result = Err(e);
                    }
                }
                Err(e) => result = Err(join_error(e)),
            }
        }
        let elapsed = t.elapsed();
        pool.close().await;
        self.drop_database(&db).await?;
        result?;
        Ok(elapsed)
    }

    async fn provider_batch(&self, batch: &Events) -> CliResult<Duration> {
        let (store, db) = self.fresh_store().await?;
        Self::warm_up(store.pool(), 1).await?;
        let t = Instant::now();
        let result = store.health_events().insert_many(batch).await;
        let elapsed = t.elapsed();
        store.close().await;
        self.drop_database(&db).await?;
        let inserted = result?.len();
        if inserted != batch.len() {
            return Err(CliError::check(format!(
                "insert_many stored {inserted} of {} events",
                batch.len()
            )));
        }
        Ok(elapsed)
    }

    async fn baseline_copy(&self, batch: &Events) -> CliResult<Duration> {
        let (pool, mut conn, db) = self.fresh_baseline_connection().await?;
        let t = Instant::now();
        let mut data = String::with_capacity(batch.len() * 1_024);
        for (event, status) in batch {
            push_copy_text(&mut data, &document(event, status).to_string());
            data.push('\n');
        }
        let rows = async {
            let mut copy = conn.copy_in_raw(BASELINE_COPY).await?;
            copy.send(data.as_bytes()).await?;
            copy.finish().await
        }
        .await
        .sql_context(|| "baseline COPY".to_owned())?;
        let elapsed = t.elapsed();
        drop(conn);
        pool.close().await;
        self.drop_database(&db).await?;
        if rows != batch.len() as u64 {
            return Err(CliError::check(format!(
                "COPY stored {rows} of {} rows",
                batch.len()
            )));
        }
        Ok(elapsed)
    }

    /// Loads `--explain-events` events, then `EXPLAIN (ANALYZE)`s the statements the provider
    /// emits for the domain queries and requires an index in each plan.
    async fn index_check(&self) -> CliResult<()> {
        let total = self.args.explain_events;
        println!();
        println!(
            "bench: index check: {total} events from {EXPLAIN_NODES} nodes via insert_many batches of {EXPLAIN_BATCH}"
        );
        let (store, db) = self.fresh_store().await?;
        let result = self.index_check_on(&store, total).await;
        store.close().await;
        self.drop_database(&db).await?;
        result
    }

    async fn index_check_on(&self, store: &PgDataStore, total: u64) -> CliResult<()> {
        let health = store.health_events();
        let mut synth = Synth::new(self.args.seed, EXPLAIN_NODES, Utc::now());
        load_events(store, &mut synth, total, EXPLAIN_BATCH, "").await?;

        // Some quarantined events (fault-quarantine's decisions) and maintenance events.
        let quarantine_nodes: Vec<String> = (0..EXPLAIN_QUARANTINED_NODES)
            .map(synth::node_name)
            .collect();
        let r = health
            .update_many(
                &Filter::is_in(
                    fields::NODE_NAME,
                    quarantine_nodes.iter().map(String::as_str),
                )
                .and(Filter::eq(fields::IS_FATAL, true))
                .and(Filter::eq(fields::PROCESSING_STRATEGY, 1)),
                &Update::new().set(
                    fields::NODE_QUARANTINED,
                    QuarantineStatus::Quarantined.as_str(),
                ),
            )
            .await?;
        let now = Utc::now();
        let mut docs = Vec::with_capacity(EXPLAIN_MAINTENANCE);
        for i in 0..EXPLAIN_MAINTENANCE {
            docs.push(synth.maintenance_event(i, now).to_document()?);
        }
        store
            .maintenance_event_collection()
            .insert_many(docs)
            .await?;
        println!(
            "  marked {} events Quarantined, inserted {EXPLAIN_MAINTENANCE} maintenance events; VACUUM ANALYZE",
            r.modified
        );
        // VACUUM as autovacuum would after the load: it also flushes the GIN indexes' pending
        // lists, which otherwise make the planner price every GIN scan far too high.
        sqlx::raw_sql("VACUUM ANALYZE")
            .execute(store.pool())
            .await
            .sql_context(|| "VACUUM ANALYZE".to_owned())?;

        let queries = self.explained_queries(store.pool(), total).await?;
        println!();
        let mut failed = 0;
        for q in &queries {
            let plan = explain(store.pool(), q).await?;
            let index_line = plan.iter().find(|l| {
                ["Index Scan", "Index Only Scan", "Bitmap Index Scan"]
                    .iter()
                    .any(|k| l.contains(k))
            });
            let exec = plan
                .iter()
                .find_map(|l| l.trim().strip_prefix("Execution Time:"))
                .map_or_else(|| "?".to_owned(), |s| s.trim().to_owned());
            let verdict = if index_line.is_some() { "PASS" } else { "FAIL" };
            failed += usize::from(index_line.is_none());
            println!("  [{verdict}] {:<52} execution {exec}", q.label);
            println!("         plan:  {}", plan.first().map_or("", |s| s.trim()));
            match index_line {
                Some(l) => println!(
                    "         index: {}",
                    l.trim().trim_start_matches("->").trim()
                ),
                None => {
                    println!("         index: none; the whole plan:");
                    for l in &plan {
                        println!("           {l}");
                    }
                }
            }
        }
        if failed > 0 {
            return Err(CliError::check(format!(
                "{failed} domain quer(ies) did not use an index"
            )));
        }
        println!(
            "bench: index check: all {} queries use an index",
            queries.len()
        );
        Ok(())
    }

    /// The statements the provider emits for the domain queries, with realistic parameters.
    async fn explained_queries(&self, pool: &PgPool, total: u64) -> CliResult<Vec<Explained>> {
        let at = |fraction: f64| {
            let offset = ((total as f64 * fraction) as i64)
                .min(total as i64 - 1)
                .max(0);
            sqlx::query_as::<_, (DateTime<Utc>, String)>(
                "SELECT created_at, id FROM health_events ORDER BY created_at, id OFFSET $1 LIMIT 1",
            )
            .bind(offset)
            .fetch_one(pool)
        };
        let (mid_at, mid_id) = at(0.5)
            .await
            .sql_context(|| "finding a page position".to_owned())?;
        let (from, _) = at(0.4)
            .await
            .sql_context(|| "finding a range start".to_owned())?;
        let (until, _) = at(0.6)
            .await
            .sql_context(|| "finding a range end".to_owned())?;
        let node = synth::node_name(17);
        Ok(vec![
            Explained {
                label: "(i) latest event of a node",
                sql: "SELECT id, created_at, document FROM health_events WHERE document @? $1::jsonpath \
                      ORDER BY created_at DESC, id DESC, id ASC LIMIT $2"
                    .to_owned(),
                params: vec![
                    Param::Text(format!("$.\"healthevent\".\"nodename\" ? (@ == \"{node}\")")),
                    Param::Int(1),
                ],
            },
            Explained {
                label: "(ii) quarantine status (cold-start page)",
                sql: "SELECT id, created_at, document FROM health_events WHERE document @? $1::jsonpath \
                      ORDER BY created_at ASC, id ASC LIMIT $2"
                    .to_owned(),
                params: vec![
                    Param::Text("$.\"healtheventstatus\".\"nodequarantined\" ? (@ == \"Quarantined\")".to_owned()),
                    Param::Int(1_001),
                ],
            },
            Explained {
                label: "(iii) keyset page after a token",
                sql: "SELECT id, created_at, document FROM health_events WHERE TRUE \
                      AND (created_at, id) > ($1, $2) ORDER BY created_at ASC, id ASC LIMIT $3"
                    .to_owned(),
                params: vec![Param::Time(mid_at), Param::Text(mid_id), Param::Int(101)],
            },
            Explained {
                label: "(iv) maintenance event by eventId",
                sql: "SELECT id, created_at, document FROM maintenance_events WHERE document @? $1::jsonpath \
                      ORDER BY id ASC LIMIT $2"
                    .to_owned(),
                params: vec![Param::Text("$.\"eventId\" ? (@ == \"evt-1\")".to_owned()), Param::Int(1)],
            },
            Explained {
                label: "(v) createdAt range, oldest first (backfill)",
                sql: "SELECT id, created_at, document FROM health_events WHERE (created_at >= $1 AND created_at < $2) \
                      ORDER BY created_at ASC, id ASC LIMIT $3"
                    .to_owned(),
                params: vec![Param::Time(from), Param::Time(until), Param::Int(1_000)],
            },
        ])
    }
}

/// `EXPLAIN (ANALYZE)` of the query: the plan's lines.
async fn explain(pool: &PgPool, q: &Explained) -> CliResult<Vec<String>> {
    let sql = format!("EXPLAIN (ANALYZE) {}", q.sql);
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for p in &q.params {
        query = match p {
            Param::Text(s) => query.bind(s.clone()),
            Param::Time(t) => query.bind(*t),
            Param::Int(i) => query.bind(*i),
        };
    }
    query
        .fetch_all(pool)
        .await
        .sql_context(|| format!("EXPLAIN {}", q.label))
}

/// Inserts `total` events from `synth` through `insert_many` batches of `batch`, with a progress
/// bar, then prints the load rate (`what` qualifies the events in that line).
async fn load_events(
    store: &dyn DataStore,
    synth: &mut Synth,
    total: u64,
    batch: usize,
    what: &str,
) -> CliResult<()> {
    let health = store.health_events();
    let bar = progress(total, "load");
    let t = Instant::now();
    let mut remaining = total;
    while remaining > 0 {
        let n = remaining.min(batch as u64);
        let events = synth.health_events(n as usize);
        if let Err(e) = health.insert_many(&events).await {
            bar.abandon();
            return Err(e.into());
        }
        remaining -= n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    println!(
        "  loaded {total} events{what} in {:.1} s ({}/s)",
        t.elapsed().as_secs_f64(),
        thousands(per_second(total, t.elapsed()))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escaping() {
        let mut buf = String::new();
        push_copy_text(&mut buf, "a\\b\tc\nd\re");
        assert_eq!(buf, "a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(
            median(vec![
                Duration::from_secs(3),
                Duration::from_secs(1),
                Duration::from_secs(2)
            ])
            .as_secs(),
            2
        );
    }
}
