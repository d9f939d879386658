//! `datastore copy --from MONGODB_URI`: a live MongoDB's `HealthEvents` and
//! `MaintenanceEvents` into the configured store, through the MongoDB provider, with the
//! import's guarantees ([`datastore_tools::import::copy`]); `--verify` compares instead. Exit
//! code 1 when anything was rejected or differs.
//!
//! Connecting to the source is what the MongoDB provider does at start: it creates the indexes
//! it needs there if they are missing (idempotently), and writes nothing else.

use std::sync::Arc;

use datastore::DataStore;
use datastore_tools::error::{CliError, CliResult};
use datastore_tools::import::{self, Summary};
use serde_json::json;

use crate::cli::{CopyArgs, Target};
use crate::select;

/// Copies (or verifies) every selected collection.
pub async fn run(args: &CopyArgs) -> CliResult<()> {
    let settings = provider_mongo::MongoSettings::from_uri(&args.from, &args.from_database);
    let source: Arc<dyn DataStore> = Arc::new(
        provider_mongo::MongoDataStore::connect_with(&settings)
            .await
            .map_err(|e| {
                CliError::Datastore(e.map_message(|m| format!("--from: the source MongoDB: {m}")))
            })?,
    );
    let store = datastore::connect_from_env().await?;
    let outcome = copy_between(source.as_ref(), store.as_ref(), args).await;
    source.close().await;
    store.close().await;
    let report = outcome?;
    let mut problems = 0;
    let mut out = String::new();
    for (target, summary) in &report {
        problems += summary.rejected_count
            + summary.conflict_count
            + summary.missing_count
            + summary.different_count
            + summary.extra_in_store;
        out.push_str(&describe(*target, summary, args));
    }
    datastore_tools::output::print(&out)?;
    if problems > 0 {
        return Err(CliError::check(format!(
            "{problems} documents were rejected, conflict with what is stored, or differ: see \
             the lines above"
        )));
    }
    Ok(())
}

/// Copies (or verifies) the collections `args` selects from `source` into `store`.
pub async fn copy_between(
    source: &dyn DataStore,
    store: &dyn DataStore,
    args: &CopyArgs,
) -> CliResult<Vec<(Target, Summary)>> {
    let targets = match args.collection {
        Some(one) => vec![one],
        None => vec![Target::HealthEvents, Target::MaintenanceEvents],
    };
    let mut report = Vec::new();
    for target in targets {
        let summary = import::copy(
            select::collection(source, target),
            select::collection(store, target),
            args.batch as usize,
            args.verify,
        )
        .await?;
        report.push((target, summary));
    }
    Ok(report)
}

fn describe(target: Target, s: &Summary, args: &CopyArgs) -> String {
    let name = match target {
        Target::HealthEvents => "health events",
        Target::MaintenanceEvents => "maintenance events",
    };
    if args.json {
        return format!(
            "{}\n",
            json!({
                "collection": name, "read": s.read, "inserted": s.inserted, "present": s.present,
                "rejected": s.rejected_count, "identical": s.identical,
                "missing": s.missing_count, "different": s.different_count,
                "extra_in_store": s.extra_in_store,
            })
        );
    }
    if args.verify {
        for id in s.missing.iter().take(100) {
            eprintln!("copy: {name}: {id}: in the source, not in the store");
        }
        for id in s.different.iter().take(100) {
            eprintln!("copy: {name}: {id}: stored with other contents");
        }
        return format!(
            "verified {} {name}: {} identical, {} missing, {} different, {} rejected; the store \
             holds {} the source does not\n",
            s.read,
            s.identical,
            s.missing_count,
            s.different_count,
            s.rejected_count,
            s.extra_in_store
        );
    }
    format!(
        "copied {} of {} {name} ({} already stored, {} conflicting, {} rejected)\n",
        s.inserted, s.read, s.present, s.conflict_count, s.rejected_count
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn args(verify: bool) -> CopyArgs {
        CopyArgs {
            from: String::new(),
            from_database: String::new(),
            collection: None,
            batch: 2,
            verify,
            json: false,
        }
    }

    #[test]
    fn a_live_mongodb_into_postgresql() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let pg = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
        let mongo =
            datastore_workload::embedded::start_mongo_stand_in().expect("the MongoDB stand-in");
        rt.block_on(async {
            let source = datastore_workload::embedded::connect_mongo_stand_in(&mongo)
                .await
                .expect("source");
            let (store, _) = datastore_workload::embedded::connect_embedded(&pg)
                .await
                .expect("store");
            for n in 0..5 {
                let doc = serde_json::from_value(json!({"healthevent": {"n": n}})).expect("doc");
                source
                    .health_event_collection()
                    .insert_one(doc)
                    .await
                    .expect("insert");
            }
            let first = copy_between(source.as_ref(), &store, &args(false))
                .await
                .expect("copy");
            assert_eq!(
                (first[0].1.inserted, first[1].1.inserted),
                (5, 0),
                "{first:?}"
            );
            let again = copy_between(source.as_ref(), &store, &args(false))
                .await
                .expect("again");
            assert_eq!(
                (again[0].1.inserted, again[0].1.present),
                (0, 5),
                "{again:?}"
            );
            let same = copy_between(source.as_ref(), &store, &args(true))
                .await
                .expect("verify");
            assert_eq!(
                (same[0].1.identical, same[0].1.different_count),
                (5, 0),
                "{same:?}"
            );
            // The same ids and times on both sides.
            let read = |docs: Vec<datastore::Document>| -> Vec<(Value, Value)> {
                let mut v: Vec<_> = docs
                    .into_iter()
                    .map(|d| (d["_id"].clone(), d["createdAt"].clone()))
                    .collect();
                v.sort_by_key(|(id, _)| id.to_string());
                v
            };
            let all = datastore::FindOptions::default();
            let from = source
                .health_event_collection()
                .find(&datastore::Filter::All, &all)
                .await
                .expect("find");
            let to = store
                .health_event_collection()
                .find(&datastore::Filter::All, &all)
                .await
                .expect("find");
            assert_eq!(read(from), read(to));
            source.close().await;
            store.close().await;
        });
    }
}
