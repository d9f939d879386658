//! Importing `mongoexport` output of `HealthEvents` or `MaintenanceEvents` into a collection,
//! keeping each document's `_id` and `createdAt` ([`Collection::import`]): streaming with
//! constant memory (a reader thread that parses and converts, two batches in flight), idempotent and therefore resumable
//! (a re-run skips what is stored), every rejected document reported with its position and
//! reason; or, with `verify`, comparing the file with the store. `datastore import` and the
//! import benchmark run it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datastore::value::ID_FIELD;
use datastore::{Collection, Document, ErrorKind, Filter, FindOptions, ImportDocument, Value};
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::error::{CliError, CliResult};

pub mod extended_json;
pub mod source;

use source::Item;
pub use source::Position;

/// Batches written at once: one is being written while the next is read and converted, and
/// PostgreSQL works on two at a time.
const IN_FLIGHT: usize = 2;

/// Rejections listed one by one; past this many only the count grows.
pub const LISTED_REJECTIONS: usize = 1_000;

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
    /// With `verify`: ids in the file the store lacks (the first [`LISTED_REJECTIONS`]).
    pub missing: Vec<String>,
    /// With `verify`: all ids in the file the store lacks.
    pub missing_count: u64,
    /// With `verify`: ids stored with other contents (the first [`LISTED_REJECTIONS`]).
    pub different: Vec<String>,
    /// With `verify`: all ids stored with other contents.
    pub different_count: u64,
    /// With `--verify`: documents in the store that the file does not hold.
    pub extra_in_store: u64,
    /// Documents whose `_id` is stored with other contents: where, and which fields differ
    /// (the first [`LISTED_REJECTIONS`]). Not written, and not counted as present.
    pub conflicts: Vec<(Position, String)>,
    /// All such documents.
    pub conflict_count: u64,
}

/// How [`run_on`] reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `mongoexport` file.
    pub file: PathBuf,
    /// Documents per write (at least 1).
    pub batch: usize,
    /// Compare the file with the store instead of importing.
    pub verify: bool,
    /// Draw a progress bar on stderr.
    pub show_progress: bool,
}

/// Imports (or, with `verify`, compares) `options.file` into `collection`.
pub async fn run_on(collection: &dyn Collection, options: &Options) -> CliResult<Summary> {
    let size = std::fs::metadata(&options.file)
        .map_err(|e| file_error(&options.file, e))?
        .len();
    let progress = Arc::new(AtomicU64::new(0));
    let batch_size = options.batch.max(1);
    let (tx, mut rx) = mpsc::channel::<Item<Result<ImportDocument, String>>>(batch_size * 2);
    let path = options.file.clone();
    let counted = Arc::clone(&progress);
    // Reading, parsing and converting run on the reader's thread, writing here: both cores work.
    let reader = tokio::task::spawn_blocking(move || {
        source::read(&path, |doc| doc.and_then(prepare), tx, counted)
    });
    let bar = progress_bar(size, options.show_progress, options.verify);
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    while reading || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                summary.add(done?);
                bar.set_position(progress.load(Ordering::Relaxed));
            }
            item = rx.recv(), if reading && in_flight.len() < IN_FLIGHT => match item {
                Some((at, doc)) => {
                    summary.read += 1;
                    match doc {
                        Ok(d) => batch.push((at, d)),
                        Err(why) => reject(&mut summary, &bar, at, why),
                    }
                    if batch.len() >= batch_size {
                        in_flight.push(write(collection, std::mem::take(&mut batch), options.verify));
                    }
                }
                None => {
                    reading = false;
                    in_flight.push(write(collection, std::mem::take(&mut batch), options.verify));
                }
            },
        }
    }
    let read = reader
        .await
        .map_err(|e| CliError::check(format!("the reader stopped: {e}")))?;
    read.map_err(|e| file_error(&options.file, e))?;
    bar.finish_and_clear();
    if options.verify {
        let stored = collection.count(&Filter::All).await?;
        summary.extra_in_store = stored.saturating_sub(summary.identical + summary.different_count);
    }
    Ok(summary)
}

fn file_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

impl Summary {
    /// Adds what one batch did.
    fn add(&mut self, batch: Summary) {
        self.inserted += batch.inserted;
        self.present += batch.present;
        self.identical += batch.identical;
        self.missing_count += batch.missing_count;
        self.different_count += batch.different_count;
        let room = LISTED_REJECTIONS.saturating_sub(self.missing.len());
        self.missing.extend(batch.missing.into_iter().take(room));
        let room = LISTED_REJECTIONS.saturating_sub(self.different.len());
        self.different
            .extend(batch.different.into_iter().take(room));
        self.rejected_count += batch.rejected_count;
        let room = LISTED_REJECTIONS.saturating_sub(self.rejected.len());
        self.rejected.extend(batch.rejected.into_iter().take(room));
        self.conflict_count += batch.conflict_count;
        let room = LISTED_REJECTIONS.saturating_sub(self.conflicts.len());
        self.conflicts
            .extend(batch.conflicts.into_iter().take(room));
    }
}

/// Copies every document of `from` into `to` (or, with `verify`, compares them), page by page
/// in `_id` order: the import's guarantees (kept ids and times, idempotent, resumable) for a
/// live source. Rejections are numbered in the source's order (`document N`).
pub async fn copy(
    from: &dyn Collection,
    to: &dyn Collection,
    batch: usize,
    verify: bool,
) -> CliResult<Summary> {
    let page_size = u32::try_from(batch.clamp(1, 10_000)).unwrap_or(1_000);
    let mut pages = datastore::batches(from, Filter::All, page_size);
    let mut summary = Summary::default();
    let hidden = ProgressBar::hidden();
    while let Some(page) = pages.next().await {
        let mut prepared = Vec::with_capacity(page_size as usize);
        for doc in page? {
            summary.read += 1;
            let at = Position::Element(summary.read);
            match ImportDocument::prepare(doc) {
                Ok(d) => prepared.push((at, d)),
                Err(e) => reject(&mut summary, &hidden, at, e.message().to_owned()),
            }
        }
        let done = write(to, prepared, verify).await?;
        summary.add(done);
    }
    if verify {
        let stored = to.count(&Filter::All).await?;
        summary.extra_in_store = stored.saturating_sub(summary.identical + summary.different_count);
    }
    Ok(summary)
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
        // Shown even where the bar is not drawn (stderr is not a terminal).
        bar.suspend(|| eprintln!("import: {at}: rejected: {why}"));
        summary.rejected.push((at, why));
    }
}

/// Imports a batch, or compares it with the store.
async fn write(
    collection: &dyn Collection,
    batch: Vec<(Position, ImportDocument)>,
    verify: bool,
) -> CliResult<Summary> {
    if batch.is_empty() {
        return Ok(Summary::default());
    }
    if verify {
        return compare(collection, batch).await;
    }
    let docs = batch.iter().map(|(_, d)| d.clone()).collect();
    match collection.import(docs).await {
        Ok(done) => conflicts(collection, batch, done).await,
        // One document the server refuses fails the batch on some servers: each alone.
        Err(e) if e.kind() == ErrorKind::InvalidInput && batch.len() > 1 => {
            let mut out = Summary::default();
            for (at, doc) in batch {
                match collection.import(vec![doc.clone()]).await {
                    Ok(done) => out.add(conflicts(collection, vec![(at, doc)], done).await?),
                    Err(e) if e.kind() == ErrorKind::InvalidInput => {
                        eprintln!("import: {at}: rejected: {}", e.message());
                        out.rejected_count += 1;
                        out.rejected.push((at, e.message().to_owned()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(out)
        }
        Err(e) => Err(e.into()),
    }
}

/// What an import of `batch` did, with the documents found present checked against what
/// is stored: a present `_id` with other contents is a conflict, not a document already
/// imported.
async fn conflicts(
    collection: &dyn Collection,
    batch: Vec<(Position, ImportDocument)>,
    done: datastore::Imported,
) -> CliResult<Summary> {
    let mut out = Summary {
        inserted: done.inserted,
        present: done.present,
        ..Summary::default()
    };
    if done.present == 0 {
        return Ok(out);
    }
    let mut stored = stored_by_id(collection, &batch).await?;
    for (at, d) in batch {
        let id = d.id.to_string();
        let Some(stored) = stored.remove(&id) else {
            continue;
        };
        let expected = d.to_document()?;
        let fields = differing_fields(&expected, &stored);
        if fields.is_empty() {
            continue;
        }
        let why = format!(
            "_id {id} is already stored with other contents (differs at {}): not imported",
            fields.join(", ")
        );
        eprintln!("import: {at}: conflict: {why}");
        out.present = out.present.saturating_sub(1);
        out.conflict_count += 1;
        if out.conflicts.len() < LISTED_REJECTIONS {
            out.conflicts.push((at, why));
        }
    }
    Ok(out)
}

/// `--verify`: how `batch` compares with the store.
async fn compare(
    collection: &dyn Collection,
    batch: Vec<(Position, ImportDocument)>,
) -> CliResult<Summary> {
    let mut out = Summary::default();
    let mut by_id = stored_by_id(collection, &batch).await?;
    for (_, d) in batch {
        let id = d.id.to_string();
        match by_id.remove(&id) {
            None => {
                out.missing_count += 1;
                out.missing.push(id);
            }
            Some(stored) => {
                let expected = d.to_document()?;
                if checksum(&Value::Object(expected)) == checksum(&Value::Object(stored)) {
                    out.identical += 1;
                } else {
                    out.different_count += 1;
                    out.different.push(id);
                }
            }
        }
    }
    Ok(out)
}

/// The stored documents with the ids of `batch`, by id.
async fn stored_by_id(
    collection: &dyn Collection,
    batch: &[(Position, ImportDocument)],
) -> CliResult<HashMap<String, Document>> {
    let ids: Vec<String> = batch.iter().map(|(_, d)| d.id.to_string()).collect();
    let stored = collection
        .find(&Filter::is_in(ID_FIELD, ids), &FindOptions::default())
        .await?;
    Ok(stored
        .into_iter()
        .filter_map(|d| Some((d.get(ID_FIELD)?.as_str()?.to_owned(), d)))
        .collect())
}

/// The dotted paths where `a` and `b` differ (at most ten): fields of nested documents
/// compared one by one, anything else as a whole.
fn differing_fields(a: &Document, b: &Document) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending: Vec<(String, &Document, &Document)> = vec![(String::new(), a, b)];
    while let Some((prefix, a, b)) = pending.pop() {
        let mut keys: Vec<&String> = a
            .keys()
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .collect();
        keys.sort();
        for k in keys {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match (a.get(k), b.get(k)) {
                (Some(Value::Object(x)), Some(Value::Object(y))) => pending.push((path, x, y)),
                (x, y) if x.map(checksum) == y.map(checksum) => {}
                _ => out.push(path),
            }
            if out.len() >= 10 {
                return out;
            }
        }
    }
    out.sort();
    out
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

/// The first 20 names, then how many more.
fn listed(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(20) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// `ResumeTokens`: MongoDB change-stream positions no other store can resume from.
pub async fn resume_tokens(path: &Path) -> CliResult<String> {
    let (tx, mut rx) = mpsc::channel::<Item<Result<Value, String>>>(64);
    let owned = path.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        source::read(&owned, |doc| doc, tx, Arc::new(AtomicU64::new(0)))
    });
    let mut names = Vec::new();
    while let Some((_, doc)) = rx.recv().await {
        if let Ok(doc) = doc {
            // NVSentinel keys a token by its client's name; an ObjectId key reads as its hex.
            let key = doc.get("clientName").or_else(|| doc.get(ID_FIELD));
            let name = match key.map(|v| extended_json::to_canonical(v.clone())) {
                Some(Ok(Value::String(s))) => s,
                Some(Ok(other)) => other.to_string(),
                _ => "?".to_owned(),
            };
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
        listed(&names)
    ))
}
