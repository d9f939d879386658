//! `datastore prune`: deletes change history on the configured server by the library's
//! retention policy (`DataStore::prune_change_history`).

use datastore::{DataStore, ProviderKind, RetentionPolicy};
use serde_json::json;

use crate::cli::PruneArgs;
use datastore_tools::error::CliResult;

use crate::select;

/// Opens the configured store, prunes, prints what was deleted.
pub async fn run(args: &PruneArgs) -> CliResult<()> {
    crate::target::print_on_configured(async |store| run_on(store, args).await).await
}

/// Prunes `store` by `args`; returns what to print.
pub async fn run_on(store: &dyn DataStore, args: &PruneArgs) -> CliResult<String> {
    let policy = RetentionPolicy {
        max_age: select::duration("--max-age", &args.max_age)?,
        min_age: select::duration("--min-age", &args.min_age)?,
    };
    if policy.min_age > policy.max_age {
        return Err(select::invalid(format!(
            "--min-age {} is longer than --max-age {}: nothing could be both; give a --min-age \
             up to the --max-age",
            args.min_age, args.max_age
        )));
    }
    let deleted = store.prune_change_history(&policy).await?;
    if store.provider() == ProviderKind::Mongodb && !args.json {
        return Ok(
            "nothing to prune: MongoDB keeps change history in its oplog, whose size the \
                   server bounds (replSetResizeOplog)\n"
                .to_owned(),
        );
    }
    Ok(if args.json {
        format!(
            "{}\n",
            json!({
                "provider": store.provider().as_str(),
                "deleted": deleted,
                "max_age_seconds": policy.max_age.as_secs(),
                "min_age_seconds": policy.min_age.as_secs(),
            })
        )
    } else {
        format!(
            "deleted {deleted} changes: those older than {}, and those older than {} that every \
             consumer had checkpointed past\n",
            args.max_age, args.min_age
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datastore::{StartFrom, WatchOptions};
    use futures::StreamExt;
    use serde_json::Value;

    use super::*;

    fn args(max_age: &str, min_age: &str, json: bool) -> PruneArgs {
        PruneArgs {
            max_age: max_age.into(),
            min_age: min_age.into(),
            json,
        }
    }

    #[test]
    fn prune_on_postgresql() {
        crate::testing::on_postgresql(async |store| {
            let collection = store.health_event_collection();
            for n in 0..3 {
                let doc = serde_json::from_value(json!({ "n": n })).expect("doc");
                collection.insert_one(doc).await.expect("insert");
            }
            // History is pruned up to the newest tick a reader took: read once.
            let options = WatchOptions::new("reader").start(StartFrom::Now);
            let mut stream = collection.watch(options).await.expect("watch");
            let _ = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
            drop(stream);
            // The changes are seconds old: a long max-age keeps them, a zero one deletes them.
            let kept = run_on(store, &args("7d", "1h", true)).await.expect("prune");
            let kept: Value = serde_json::from_str(&kept).expect("json");
            assert_eq!(kept["deleted"], 0);
            assert_eq!(kept["max_age_seconds"], 7 * 86_400);
            let out = run_on(store, &args("0s", "0s", false))
                .await
                .expect("prune");
            assert!(out.starts_with("deleted 3 changes"), "{out}");
            let options = WatchOptions::new("late").start(StartFrom::Beginning);
            let mut stream = collection.watch(options).await.expect("watch");
            let next = tokio::time::timeout(Duration::from_millis(500), stream.next());
            assert!(next.await.is_err(), "nothing is left to read");

            for (bad, says) in [
                (args("a week", "1h", false), "--max-age"),
                (args("1h", "2h", false), "--min-age"),
            ] {
                let e = run_on(store, &bad).await.expect_err("refused");
                assert!(e.to_string().contains(says), "{e}");
            }
        });
    }

    #[test]
    fn prune_on_mongodb_says_the_oplog_keeps_history() {
        crate::testing::on_mongodb(async |store| {
            let out = run_on(store, &args("0s", "0s", false))
                .await
                .expect("prune");
            assert!(out.contains("oplog"), "{out}");
            let out = run_on(store, &args("0s", "0s", true)).await.expect("prune");
            let out: Value = serde_json::from_str(&out).expect("json");
            assert_eq!(
                (out["provider"].as_str(), out["deleted"].as_u64()),
                (Some("mongodb"), Some(0))
            );
        });
    }
}
