//! `datastore import FILE`: `mongoexport` output of `HealthEvents` or `MaintenanceEvents` into
//! the configured store, keeping each document's `_id` and `createdAt`
//! ([`Collection::import`]). Streaming with constant memory (a reader thread, one batch in
//! flight), idempotent and therefore resumable (a re-run skips what is stored), with a progress
//! bar, every rejected document reported with its position and reason, and a non-zero exit code
//! when anything was rejected. `--verify` compares the file with the store instead.
//! `ResumeTokens` are MongoDB oplog positions: reported as not portable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::value::ID_FIELD;
use datastore::{Collection, DataStore, Document, Filter, FindOptions, ImportDocument, Value};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::sync::mpsc;

use crate::cli::{ImportArgs, ImportTarget, Target};
use crate::select;
use datastore_cli::error::{CliError, CliResult};

pub mod extended_json;
pub mod source;

use source::{Item, Position};

/// Rejections listed one by one; past this many only the count grows.
const LISTED_REJECTIONS: usize = 1_000;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Documents read from the file.
    pub read: u64,
    /// Documents written now.
    pub inserted: u64,
    /// Documents already stored (by an earlier run, or another with the same unique key).
    pub present: u64,
    /// With `--verify`: documents stored exactly as in the file.
    pub identical: u64,
    /// Documents refused, with where and why (the first [`LISTED_REJECTIONS`]).
    pub rejected: Vec<(Position, String)>,
    /// All refused documents.
    pub rejected_count: u64,
    /// With `--verify`: ids in the file the store lacks, and ids stored differently.
    pub missing: Vec<String>,
    /// With `--verify`: ids stored with other contents.
    pub different: Vec<String>,
    /// With `--verify`: documents in the store that the file does not hold.
    pub extra_in_store: u64,
}

/// Opens the configured store and imports (or verifies) `args.file`.
pub async fn run(args: &ImportArgs) -> CliResult<()> {
    if args.collection == ImportTarget::ResumeTokens {
        print!("{}", resume_tokens(&args.file).await?);
        return Ok(());
    }
    let store = datastore::open_from_env().await?;
    let started = Instant::now();
    let outcome = run_on(store.as_ref(), args, true).await;
    store.close().await;
    let summary = outcome?;
    print!("{}", describe(&summary, args));
    if !args.json {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  in {secs:.1} s: {:.0} documents/s",
            summary.read as f64 / secs.max(1e-9)
        );
    }
    let problems = summary.rejected_count
        + (summary.missing.len() + summary.different.len()) as u64
        + summary.extra_in_store;
    if problems > 0 {
        return Err(CliError::check(format!(
            "{problems} documents were rejected or differ: see the lines above"
        )));
    }
    Ok(())
}

/// Imports (or, with `--verify`, compares) `args.file` on `store`, showing progress when
/// `show_progress`.
pub async fn run_on(
    store: &dyn DataStore,
    args: &ImportArgs,
    show_progress: bool,
) -> CliResult<Summary> {
    let target = match args.collection {
        ImportTarget::HealthEvents => Target::HealthEvents,
        ImportTarget::MaintenanceEvents => Target::MaintenanceEvents,
        ImportTarget::ResumeTokens => return Err(CliError::check("ResumeTokens are not imported")),
    };
    let collection = select::collection(store, target);
    let size = std::fs::metadata(&args.file)
        .map_err(|e| file_error(&args.file, e))?
        .len();
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::channel::<Item>(args.batch as usize * 2);
    let path = args.file.clone();
    let counted = Arc::clone(&progress);
    let reader = tokio::task::spawn_blocking(move || source::read(&path, tx, counted));
    let bar = progress_bar(size, show_progress, args.verify);
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(args.batch as usize);
    while let Some((at, doc)) = rx.recv().await {
        summary.read += 1;
        match doc.and_then(prepare) {
            Ok(d) => batch.push(d),
            Err(why) => reject(&mut summary, &bar, at, why),
        }
        if batch.len() >= args.batch as usize {
            write(
                collection,
                std::mem::take(&mut batch),
                args.verify,
                &mut summary,
            )
            .await?;
            bar.set_position(progress.load(Ordering::Relaxed));
        }
    }
    write(collection, batch, args.verify, &mut summary).await?;
    let read = reader
        .await
        .map_err(|e| CliError::check(format!("the reader stopped: {e}")))?;
    read.map_err(|e| file_error(&args.file, e))?;
    bar.finish_and_clear();
    if args.verify {
        let stored = collection.count(&Filter::All).await?;
        summary.extra_in_store =
            stored.saturating_sub(summary.identical + summary.different.len() as u64);
    }
    Ok(summary)
}

fn file_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// A file document as the store would hold it.
fn prepare(doc: Value) -> Result<ImportDocument, String> {
    let canonical = extended_json::to_canonical(doc)?;
    let Value::Object(fields) = canonical else {
        return Err("not a document (a JSON object)".into());
    };
    ImportDocument::prepare(fields).map_err(|e| e.message().to_owned())
}

fn reject(summary: &mut Summary, bar: &ProgressBar, at: Position, why: String) {
    summary.rejected_count += 1;
    if summary.rejected.len() < LISTED_REJECTIONS {
        bar.println(format!("import: {at}: rejected: {why}"));
        summary.rejected.push((at, why));
    }
}

/// Imports a batch, or compares it with the store.
async fn write(
    collection: &dyn Collection,
    batch: Vec<ImportDocument>,
    verify: bool,
    summary: &mut Summary,
) -> CliResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if !verify {
        let done = collection.import(batch).await?;
        summary.inserted += done.inserted;
        summary.present += done.present;
        return Ok(());
    }
    let ids: Vec<String> = batch.iter().map(|d| d.id.to_string()).collect();
    let stored = collection
        .find(&Filter::is_in(ID_FIELD, ids), &FindOptions::default())
        .await?;
    let mut by_id: HashMap<String, Document> = stored
        .into_iter()
        .filter_map(|d| Some((d.get(ID_FIELD)?.as_str()?.to_owned(), d)))
        .collect();
    for d in batch {
        let id = d.id.to_string();
        match by_id.remove(&id) {
            None => summary.missing.push(id),
            Some(stored) => {
                let expected = d.to_document()?;
                if checksum(&Value::Object(expected)) == checksum(&Value::Object(stored)) {
                    summary.identical += 1;
                } else {
                    summary.different.push(id);
                }
            }
        }
    }
    Ok(())
}

/// A checksum of a value's canonical form (object keys sorted), FNV-1a 64.
pub fn checksum(value: &Value) -> u64 {
    let mut text = String::new();
    canonical(value, &mut text);
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&fields[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn progress_bar(size: u64, show: bool, verify: bool) -> ProgressBar {
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(size), target);
    let verb = if verify { "verify" } else { "import" };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "  {verb} [{{bar:40}}] {{bytes:>10}}/{{total_bytes}} {{bytes_per_sec:>12}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The run's report: text, or JSON with `--json`.
pub fn describe(s: &Summary, args: &ImportArgs) -> String {
    if args.json {
        let rejected: Vec<_> = s
            .rejected
            .iter()
            .map(|(at, why)| json!({"at": at.to_string(), "reason": why}))
            .collect();
        return format!(
            "{}\n",
            json!({
                "file": args.file.display().to_string(),
                "read": s.read, "inserted": s.inserted, "present": s.present,
                "rejected": s.rejected_count, "rejections": rejected,
                "identical": s.identical, "missing": s.missing, "different": s.different,
                "extra_in_store": s.extra_in_store,
            })
        );
    }
    if args.verify {
        let mut out = String::new();
        for id in s.missing.iter().take(100) {
            out.push_str(&format!("verify: {id}: in the file, not in the store\n"));
        }
        for id in s.different.iter().take(100) {
            out.push_str(&format!("verify: {id}: stored with other contents\n"));
        }
        out.push_str(&format!(
            "verified {} documents of {}: {} identical, {} missing, {} different, {} rejected; \
             the store holds {} documents the file does not\n",
            s.read,
            args.file.display(),
            s.identical,
            s.missing.len(),
            s.different.len(),
            s.rejected_count,
            s.extra_in_store
        ));
        return out;
    }
    format!(
        "imported {} of {} documents from {} ({} already stored, {} rejected)\n",
        s.inserted,
        s.read,
        args.file.display(),
        s.present,
        s.rejected_count
    )
}

/// `ResumeTokens`: MongoDB change-stream positions no other store can resume from.
async fn resume_tokens(path: &Path) -> CliResult<String> {
    let (tx, mut rx) = mpsc::channel::<Item>(64);
    let owned = path.to_owned();
    let reader =
        tokio::task::spawn_blocking(move || source::read(&owned, tx, Arc::new(AtomicU64::new(0))));
    let mut names = Vec::new();
    while let Some((_, doc)) = rx.recv().await {
        if let Ok(doc) = doc {
            let name = doc
                .get("clientName")
                .or_else(|| doc.get(ID_FIELD))
                .map_or_else(
                    || "?".to_owned(),
                    |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                );
            names.push(name);
        }
    }
    reader
        .await
        .map_err(|e| CliError::check(format!("the reader stopped: {e}")))?
        .map_err(|e| file_error(path, e))?;
    Ok(format!(
        "{}: {} change-stream checkpoints ({}) are MongoDB resume tokens, positions in one \
         server's oplog that no other store can resume from: nothing imported. Once the events \
         are imported, start each consumer where it should with `datastore consumers reset NAME \
         --to now` (or an RFC 3339 time, or `beginning`).\n",
        path.display(),
        names.len(),
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests;
