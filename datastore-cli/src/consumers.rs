//! `datastore consumers list|delete|reset`: the change-stream consumers of a collection on the
//! configured server (`DATASTORE_*`, the YAML file), through the library's consumer admin
//! calls, as a table or, with `--json`, as JSON.

use chrono::{DateTime, Utc};
use datastore::{ConsumerInfo, DataStore};
use serde_json::{json, Value};

use crate::cli::{ConsumerAction, ConsumersArgs};
use crate::select;
use datastore_tools::error::CliResult;

/// Opens the configured store, runs the action, prints its output.
pub async fn run(args: &ConsumersArgs) -> CliResult<()> {
    crate::target::print_on_configured(async |store| run_on(store, args, Utc::now()).await).await
}

/// Runs the action on `store`; returns what to print (`now` ages the checkpoints).
pub async fn run_on(
    store: &dyn DataStore,
    args: &ConsumersArgs,
    now: DateTime<Utc>,
) -> CliResult<String> {
    let collection = select::collection(store, args.collection);
    let name = collection.name().to_owned();
    Ok(match &args.action {
        ConsumerAction::List => {
            let consumers = collection.consumers().await?;
            if args.json {
                let rows: Vec<Value> = consumers.iter().map(as_json).collect();
                format!("{}\n", Value::Array(rows))
            } else {
                table(&name, &consumers, now)
            }
        }
        ConsumerAction::Delete { consumer } => {
            let deleted = collection.delete_consumer(consumer).await?;
            if args.json {
                format!("{}\n", json!({"consumer": consumer, "deleted": deleted}))
            } else if deleted {
                format!("deleted consumer {consumer:?} of {name} (its checkpoint and lease)\n")
            } else {
                format!("{name} has no consumer {consumer:?}: nothing deleted\n")
            }
        }
        ConsumerAction::Reset { consumer, to } => {
            let start = select::start_from("--to", to)?;
            collection.reset_consumer(consumer, start).await?;
            if args.json {
                format!("{}\n", json!({"consumer": consumer, "reset_to": to}))
            } else {
                format!(
                    "reset consumer {consumer:?} of {name} to {to}: its next watch from its \
                     checkpoint starts there\n"
                )
            }
        }
    })
}

fn as_json(c: &ConsumerInfo) -> Value {
    json!({
        "consumer": c.consumer,
        "checkpointed": c.checkpointed,
        "checkpointed_at": c.checkpointed_at.map(|t| t.to_rfc3339()),
        "lease_holder": c.lease_holder,
        "lease_until": c.lease_until.map(|t| t.to_rfc3339()),
    })
}

fn table(collection: &str, consumers: &[ConsumerInfo], now: DateTime<Utc>) -> String {
    if consumers.is_empty() {
        return format!("{collection} has no change-stream consumers\n");
    }
    let width = consumers
        .iter()
        .map(|c| c.consumer.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = format!(
        "{:<width$}  {:<22}  {:<28}  {}\n",
        "consumer", "checkpoint", "lease holder", "lease until"
    );
    for c in consumers {
        let checkpoint = match (c.checkpointed, c.checkpointed_at) {
            (false, _) => "none (starts from now)".to_owned(),
            (true, Some(t)) => format!("{} ago", age(now - t)),
            (true, None) => "yes".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$}  {:<22}  {:<28}  {}\n",
            c.consumer,
            checkpoint,
            c.lease_holder.as_deref().unwrap_or("-"),
            c.lease_until
                .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
        ));
    }
    out
}

/// A duration as the largest whole unit (`3 s`, `5 min`, `2 h`, `4 d`).
pub fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3_600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datastore::{ChangeEvent, Collection, StartFrom, WatchOptions};

    use crate::cli::Target;
    use futures::StreamExt;

    use super::*;

    fn args(action: ConsumerAction, json: bool) -> ConsumersArgs {
        ConsumersArgs {
            collection: Target::HealthEvents,
            json,
            action,
        }
    }

    /// One checkpointed consumer, `analyzer`, on the store.
    async fn checkpointed(collection: &dyn Collection) {
        let watch = WatchOptions::new("analyzer")
            .start(StartFrom::Beginning)
            .poll_interval(Duration::from_millis(5));
        let mut stream = collection.watch(watch).await.expect("watch");
        let doc = serde_json::from_value(json!({"probe": 1})).expect("doc");
        collection.insert_one(doc).await.expect("insert");
        let event: ChangeEvent = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("a change")
            .expect("no error");
        collection
            .checkpoint("analyzer", &event.token)
            .await
            .expect("checkpoint");
        // Closing the stream releases the lease (in the background).
        drop(stream);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    async fn exercise(store: &dyn DataStore) {
        checkpointed(store.health_event_collection()).await;
        let now = Utc::now();
        let listed = run_on(store, &args(ConsumerAction::List, false), now)
            .await
            .expect("list");
        assert!(listed.contains("analyzer"), "{listed}");
        let listed = run_on(store, &args(ConsumerAction::List, true), now)
            .await
            .expect("list --json");
        let rows: Value = serde_json::from_str(&listed).expect("json");
        assert_eq!(rows[0]["consumer"], "analyzer");
        assert_eq!(rows[0]["checkpointed"], true);
        let reset = ConsumerAction::Reset {
            consumer: "analyzer".into(),
            to: "2026-01-01T00:00:00Z".into(),
        };
        run_on(store, &args(reset, false), now)
            .await
            .expect("reset");
        let bad = ConsumerAction::Reset {
            consumer: "analyzer".into(),
            to: "yesterday".into(),
        };
        let e = run_on(store, &args(bad, false), now)
            .await
            .expect_err("bad --to");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
        let delete = || ConsumerAction::Delete {
            consumer: "analyzer".into(),
        };
        let out = run_on(store, &args(delete(), true), now)
            .await
            .expect("delete");
        assert!(out.contains("\"deleted\":true"), "{out}");
        let out = run_on(store, &args(delete(), false), now)
            .await
            .expect("delete");
        assert!(out.contains("nothing deleted"), "{out}");
        let listed = run_on(store, &args(ConsumerAction::List, false), now)
            .await
            .expect("list");
        assert!(listed.contains("no change-stream consumers"), "{listed}");
    }

    #[test]
    fn consumers_on_postgresql() {
        crate::testing::on_postgresql(async |store| {
            exercise(store).await;
        });
    }

    #[test]
    fn consumers_on_mongodb() {
        crate::testing::on_mongodb(async |store| {
            exercise(store).await;
        });
    }

    #[test]
    fn ages_read_as_whole_units() {
        assert_eq!(age(chrono::Duration::seconds(5)), "5 s");
        assert_eq!(age(chrono::Duration::minutes(5)), "5 min");
        assert_eq!(age(chrono::Duration::hours(50)), "2 d");
    }
}
