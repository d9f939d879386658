//! `import`: `datastore import` of a `mongoexport`-shaped file of `--import-events` health
//! events (relaxed Extended JSON lines) into a fresh database, against `COPY` of the same rows
//! (id, createdAt, document, prepared beforehand) into the same table of another fresh
//! database: the fastest load the server offers for these rows, indexes included. The import
//! pays for reading and converting the file, batching and change capture. Goal: at least 50 %.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use datastore::{DataStore, Filter, Value};
use datastore_tools::error::{CliError, CliResult, SqlContext};
use datastore_tools::import::{self, Options};
use datastore_workload::synth::Synth;
use sqlx::Connection;

use super::{document, push_copy_text, thousands, Bench};

/// Nodes of the exported fleet.
const NODES: usize = 1_000;
/// Documents per import batch (`datastore import`'s default).
const BATCH: usize = 1_000;
/// The goal: import rate over COPY rate.
const GOAL: f64 = 0.5;

/// One exported document: its id, createdAt and canonical body.
type Row = (String, DateTime<Utc>, Value);

/// Runs the case `--runs` times and prints the medians and their ratio.
pub async fn run(bench: &Bench<'_>) -> CliResult<()> {
    let n = bench.args.import_events;
    println!("bench: import: writing a mongoexport file of {n} health events");
    let rows = rows(bench.args.seed, n);
    let dir = std::env::temp_dir().join(format!("datastore-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("HealthEvents.json");
    export(&file, &rows)?;
    let size = std::fs::metadata(&file)?.len();
    let measured = bench
        .compare(
            &format!("import of {n} events vs COPY"),
            n,
            || import_once(bench, &file, n),
            || copy_once(bench, &rows),
        )
        .await;
    std::fs::remove_dir_all(&dir)?;
    let measured = measured?;
    let (import, copy) = (measured.provider, measured.baseline);
    let ratio = import / copy;
    println!(
        "import: {n} events ({:.0} MiB file): datastore import {}/s, COPY {}/s: {:.0} % of COPY (goal >= {:.0} %): {}",
        size as f64 / (1 << 20) as f64,
        thousands(import),
        thousands(copy),
        ratio * 100.0,
        GOAL * 100.0,
        if ratio >= GOAL { "MET" } else { "MISS" }
    );
    Ok(())
}

fn rows(seed: u64, n: u64) -> Vec<Row> {
    let start = Utc::now() - chrono::Duration::days(30);
    let mut synth = Synth::new(seed, NODES, start).spread(n, chrono::Duration::days(30));
    synth
        .health_events(n as usize)
        .into_iter()
        .enumerate()
        .map(|(i, (event, status))| {
            let created = start + chrono::Duration::milliseconds(i as i64 * 2_500);
            (format!("6b{i:022x}"), created, document(&event, &status))
        })
        .collect()
}

/// The rows as `mongoexport --jsonFormat=relaxed` writes them, one per line.
fn export(path: &std::path::Path, rows: &[Row]) -> CliResult<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (id, created, body) in rows {
        let mut doc = serde_json::Map::new();
        doc.insert("_id".into(), serde_json::json!({ "$oid": id }));
        doc.insert(
            "createdAt".into(),
            serde_json::json!({ "$date": created.to_rfc3339_opts(SecondsFormat::Millis, true) }),
        );
        if let Value::Object(fields) = body {
            doc.extend(fields.clone());
        }
        serde_json::to_writer(&mut out, &doc).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

async fn import_once(bench: &Bench<'_>, file: &std::path::Path, n: u64) -> CliResult<Duration> {
    let (store, db) = bench.fresh_store().await?;
    let options = Options {
        file: file.to_owned(),
        batch: BATCH,
        verify: false,
        show_progress: true,
    };
    let t = Instant::now();
    let summary = import::run_on(store.health_event_collection(), &options).await;
    let elapsed = t.elapsed();
    let stored = store.health_event_collection().count(&Filter::All).await;
    store.close().await;
    bench.drop_database(&db).await?;
    let summary = summary?;
    if summary.inserted != n || summary.rejected_count > 0 || stored? != n {
        return Err(CliError::check(format!(
            "the import stored {} of {n} events ({} rejected)",
            summary.inserted, summary.rejected_count
        )));
    }
    Ok(elapsed)
}

async fn copy_once(bench: &Bench<'_>, rows: &[Row]) -> CliResult<Duration> {
    let (store, db) = bench.fresh_store().await?;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&bench.pg.url(&db))
        .await
        .sql_context(|| format!("connecting to {db}"))?;
    let t = Instant::now();
    let mut data = String::with_capacity(rows.len() * 1_024);
    for (id, created, body) in rows {
        data.push_str(id);
        data.push('\t');
        data.push_str(&created.to_rfc3339_opts(SecondsFormat::Millis, true));
        data.push('\t');
        push_copy_text(&mut data, &body.to_string());
        data.push('\n');
    }
    let copied = async {
        let mut copy = conn
            .copy_in_raw("COPY health_events (id, created_at, document) FROM STDIN")
            .await?;
        copy.send(data.as_bytes()).await?;
        copy.finish().await
    }
    .await
    .sql_context(|| "COPY of the exported rows".to_owned())?;
    let elapsed = t.elapsed();
    conn.close().await.sql_context(|| "closing".to_owned())?;
    bench.drop_database(&db).await?;
    if copied != rows.len() as u64 {
        return Err(CliError::check(format!(
            "COPY stored {copied} of {} rows",
            rows.len()
        )));
    }
    Ok(elapsed)
}
