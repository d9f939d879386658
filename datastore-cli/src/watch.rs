//! `datastore watch`: tails a collection's changes as JSON lines, one change per line in the
//! shape change-stream filters see (`operationType`, `documentKey`, `fullDocument`,
//! `updateDescription`) plus its `token` and `commitTime`.
//!
//! Without `--consumer` the tail reads under a name of its own, so it never moves or holds up
//! a component's position, and forgets that name when it stops. With `--consumer NAME` it reads
//! as that consumer: from its checkpoint, checkpointing each change it prints (so a script can
//! resume where it stopped), and waiting while another process holds the consumer's lease.

use std::future::Future;
use std::io::{ErrorKind as IoErrorKind, Write};
use std::time::Duration;

use datastore::{ChangeEvent, Collection, DataStore, ErrorKind, Filter, StartFrom, WatchOptions};
use futures::StreamExt;
use serde_json::Value;

use crate::cli::WatchArgs;
use crate::{select, shutdown};
use datastore_tools::error::{CliError, CliResult};

/// Opens the configured store and tails it to stdout until Ctrl-C or SIGTERM, `--limit` or a
/// closed pipe.
pub async fn run(args: &WatchArgs) -> CliResult<()> {
    let store = datastore::connect_from_env().await?;
    let outcome = tail(
        store.as_ref(),
        args,
        &mut std::io::stdout(),
        shutdown::stopped(),
    )
    .await;
    store.close().await;
    outcome.map(|_| ())
}

/// Tails `store` into `out` until `stop` resolves, `--limit` changes were printed, the stream
/// ends or `out` is closed; returns how many changes were printed.
pub async fn tail(
    store: &dyn DataStore,
    args: &WatchArgs,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> CliResult<u64> {
    let collection = select::collection(store, args.collection);
    let filter = match &args.filter {
        Some(text) => filter(text)?,
        None => Filter::All,
    };
    let start = match (&args.from, &args.consumer) {
        (Some(from), _) => select::start_from("--from", from)?,
        (None, Some(_)) => StartFrom::Checkpoint,
        (None, None) => StartFrom::Now,
    };
    let consumer = args.consumer.clone().unwrap_or_else(own_name);
    let options = WatchOptions::new(&consumer).filter(filter).start(start);
    let mut stream = collection.watch(options).await?;
    tokio::pin!(stop);
    let mut printed = 0;
    let outcome = loop {
        if args.limit.is_some_and(|limit| printed >= limit) {
            break Ok(());
        }
        let next = tokio::select! {
            () = &mut stop => break Ok(()),
            next = stream.next() => next,
        };
        let change = match next {
            None => break Ok(()),
            Some(Err(e)) => break Err(e.into()),
            Some(Ok(change)) => change,
        };
        match writeln!(out, "{}", line(&change)).and_then(|()| out.flush()) {
            Ok(()) => printed += 1,
            Err(e) if e.kind() == IoErrorKind::BrokenPipe => break Ok(()),
            Err(e) => break Err(e.into()),
        }
        if args.consumer.is_some() {
            if let Err(e) = collection.checkpoint(&consumer, &change.token).await {
                break Err(e.into());
            }
        }
    };
    drop(stream);
    if args.consumer.is_none() {
        forget(collection, &consumer).await;
    }
    outcome.map(|()| printed)
}

/// `--filter`: a MongoDB query over change documents.
fn filter(text: &str) -> CliResult<Filter> {
    let query: Value = serde_json::from_str(text).map_err(|e| {
        CliError::Datastore(datastore::Error::invalid_input(format!(
            "--filter is not JSON ({e}); give a MongoDB query over change documents, e.g. \
             '{{\"operationType\": \"insert\", \"fullDocument.healthevent.isfatal\": true}}'"
        )))
    })?;
    Filter::from_query_json(&query).map_err(|e| {
        CliError::Datastore(datastore::Error::invalid_input(format!(
            "--filter: {}",
            e.message()
        )))
    })
}

/// The tail's own consumer name: unique per process and start.
fn own_name() -> String {
    let started = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("datastore-watch-{}-{started:x}", std::process::id())
}

/// One change as a JSON line.
fn line(change: &ChangeEvent) -> Value {
    let mut doc = change.to_filter_document();
    doc.insert("token".into(), Value::String(change.token.to_string()));
    doc.insert(
        "commitTime".into(),
        Value::String(change.commit_time.to_rfc3339()),
    );
    Value::Object(doc)
}

/// Deletes the tail's own consumer once the closed stream's lease is released (which the
/// stream does in the background, so a refusal is retried for up to 5 s).
async fn forget(collection: &dyn Collection, consumer: &str) {
    for _ in 0..50 {
        match collection.delete_consumer(consumer).await {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::Conflict => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                eprintln!("watch: warning: could not delete its consumer {consumer:?}: {e}");
                return;
            }
        }
    }
    eprintln!(
        "watch: warning: its consumer {consumer:?} still held a lease; delete it with \
         `datastore consumers delete {consumer}`"
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::Target;

    fn args(consumer: Option<&str>, from: Option<&str>, filter: Option<&str>) -> WatchArgs {
        WatchArgs {
            collection: Target::HealthEvents,
            consumer: consumer.map(str::to_owned),
            from: from.map(str::to_owned),
            filter: filter.map(str::to_owned),
            limit: Some(1),
        }
    }

    /// Tails with `args` (at most 30 s); returns the printed lines.
    async fn lines(store: &dyn DataStore, args: &WatchArgs) -> Vec<Value> {
        let mut out = Vec::new();
        let stop = tokio::time::sleep(Duration::from_secs(30));
        let printed = tail(store, args, &mut out, stop).await.expect("watch");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len() as u64, printed);
        lines
    }

    fn numbers(lines: &[Value]) -> Vec<i64> {
        lines
            .iter()
            .map(|l| l["fullDocument"]["n"].as_i64().expect("n"))
            .collect()
    }

    async fn exercise(store: &dyn DataStore) {
        let collection = store.health_event_collection();
        for (n, fatal) in [(1, false), (2, true), (3, true)] {
            let doc = serde_json::from_value(json!({"n": n, "fatal": fatal})).expect("doc");
            collection.insert_one(doc).await.expect("insert");
        }

        // A filtered tail from the beginning; it forgets its own consumer.
        let mut fatal = args(
            None,
            Some("beginning"),
            Some(r#"{"fullDocument.fatal": true}"#),
        );
        fatal.limit = Some(2);
        let seen = lines(store, &fatal).await;
        assert_eq!(numbers(&seen), [2, 3]);
        assert_eq!(seen[0]["operationType"], "insert");
        assert!(seen[0]["token"].is_string() && seen[0]["commitTime"].is_string());
        assert!(collection.consumers().await.expect("consumers").is_empty());

        // As a consumer: each run resumes after the change the last one printed.
        collection
            .reset_consumer("auditor", StartFrom::Beginning)
            .await
            .expect("reset");
        let auditor = args(Some("auditor"), None, None);
        assert_eq!(numbers(&lines(store, &auditor).await), [1]);
        assert_eq!(numbers(&lines(store, &auditor).await), [2]);

        // Bad filters change nothing and say what to give.
        for (bad, says) in [
            ("{not json", "not JSON"),
            (r#"{"a": {"$regex": "x"}}"#, "$regex"),
        ] {
            let e = tail(
                store,
                &args(None, None, Some(bad)),
                &mut Vec::new(),
                async {},
            )
            .await
            .expect_err("a bad filter");
            assert!(
                e.to_string().contains("--filter") && e.to_string().contains(says),
                "{e}"
            );
        }
        let e = tail(
            store,
            &args(None, Some("soon"), None),
            &mut Vec::new(),
            async {},
        )
        .await
        .expect_err("a bad --from");
        assert!(e.to_string().contains("--from"), "{e}");
    }

    #[test]
    fn watch_on_postgresql() {
        crate::testing::on_postgresql(async |store| {
            exercise(store).await;
        });
    }

    #[test]
    fn watch_on_mongodb() {
        crate::testing::on_mongodb(async |store| {
            exercise(store).await;
        });
    }
}
