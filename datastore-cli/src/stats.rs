//! `datastore stats`: sizes and usage of the configured store ([`DataStore::stats`]): rows,
//! table and index sizes, index use, and the change history's size and age.

use chrono::{DateTime, Utc};
use datastore::{DataStore, StoreStats};
use serde_json::json;

use crate::cli::StatsArgs;
use datastore_tools::error::CliResult;

/// Opens the configured store and prints its statistics.
pub async fn run(args: &StatsArgs) -> CliResult<()> {
    crate::target::print_on_configured(async |store| run_on(store, args, Utc::now()).await).await
}

/// The statistics of `store` as text or JSON (`now` ages the oldest change).
pub async fn run_on(
    store: &dyn DataStore,
    args: &StatsArgs,
    now: DateTime<Utc>,
) -> CliResult<String> {
    let stats = store.stats().await?;
    Ok(if args.json {
        format!(
            "{}\n",
            json!({"provider": store.provider().as_str(), "stats": stats})
        )
    } else {
        text(&stats, now)
    })
}

fn text(stats: &StoreStats, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<40} {:>12} {:>10} {:>10}\n",
        "collection / index", "rows / scans", "data", "indexes"
    );
    for c in &stats.collections {
        out.push_str(&format!(
            "{:<40} {:>12} {:>10} {:>10}\n",
            c.name,
            c.documents,
            bytes(c.data_bytes),
            bytes(c.index_bytes)
        ));
        for i in &c.indexes {
            out.push_str(&format!(
                "  {:<38} {:>12} {:>10}\n",
                i.name,
                i.scans.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                bytes(i.bytes)
            ));
        }
    }
    match &stats.change_history {
        Some(h) => {
            let oldest = h.oldest.map_or_else(
                || "none".to_owned(),
                |t| {
                    format!(
                        "{} ({} ago)",
                        t.to_rfc3339(),
                        crate::consumers::age(now - t)
                    )
                },
            );
            out.push_str(&format!(
                "change history ({}): {} changes, {}, oldest {oldest}\n",
                h.source,
                h.changes,
                bytes(h.bytes)
            ));
        }
        None => out.push_str("change history: not reported by the server\n"),
    }
    out
}

/// Bytes in the largest binary unit that keeps a number ≥ 1 (`?` when unknown).
fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else {
        return "?".to_owned();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    async fn exercise(store: &dyn DataStore) -> Value {
        let collection = store.health_event_collection();
        for n in 0..3 {
            let doc = serde_json::from_value(json!({ "n": n })).expect("doc");
            collection.insert_one(doc).await.expect("insert");
        }
        let now = Utc::now();
        let out = run_on(store, &StatsArgs { json: false }, now)
            .await
            .expect("stats");
        assert!(out.contains(collection.name()), "{out}");
        let out = run_on(store, &StatsArgs { json: true }, now)
            .await
            .expect("stats --json");
        let out: Value = serde_json::from_str(&out).expect("json");
        let collections = out["stats"]["collections"].as_array().expect("collections");
        assert_eq!(collections.len(), 2);
        assert_eq!(collections[0]["name"], collection.name());
        assert_eq!(collections[0]["documents"], 3);
        assert_eq!(collections[1]["documents"], 0);
        assert!(
            !collections[0]["indexes"]
                .as_array()
                .expect("indexes")
                .is_empty(),
            "{out}"
        );
        out
    }

    #[test]
    fn stats_on_postgresql() {
        crate::testing::on_postgresql(async |store| {
            let out = exercise(store).await;
            let history = &out["stats"]["change_history"];
            assert_eq!(history["changes"], 3, "{out}");
            assert!(history["oldest"].is_string(), "{out}");
            let index = &out["stats"]["collections"][0]["indexes"][0];
            assert!(
                index["bytes"].as_u64() > Some(0) && index["scans"].is_u64(),
                "{out}"
            );
        });
    }

    #[test]
    fn stats_on_mongodb() {
        crate::testing::on_mongodb(async |store| {
            let out = exercise(store).await;
            println!("{out}");
        });
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(Some(512)), "512 B");
        assert_eq!(bytes(Some(1536)), "1.5 KiB");
        assert_eq!(bytes(Some(3 << 30)), "3.0 GiB");
        assert_eq!(bytes(None), "?");
    }
}
