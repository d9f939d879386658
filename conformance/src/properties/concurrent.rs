//! Concurrent writers: no update reported as done is lost.

use std::sync::Arc;

use datastore_api::value::ID_FIELD;
use datastore_api::{DataStore, ErrorKind, Filter, FindOptions, Update};
use serde_json::json;

use crate::Ctx;

/// Writers per method.
const WRITERS: usize = 8;
/// Increments per writer.
const INCREMENTS: usize = 25;

/// 8 tasks each increment one field of the same document 25 times through `update_one`, and
/// (where the server isolates transactions) 8 more another field through `update_many`: each
/// field ends at exactly the number of calls that reported success, and every call succeeds
/// or fails with a retryable error (a conflict that lost a race is not a lost update).
pub(super) fn concurrent_increments_are_exact(ctx: &Ctx<'_>) -> std::result::Result<(), String> {
    let store = Arc::clone(&ctx.store);
    let with_many = ctx.capabilities.isolated_transactions;
    ctx.rt.block_on(async move {
        let coll = store.health_event_collection();
        // Each property runs on a fresh, empty store.
        let doc = serde_json::from_value(json!({"one": 0, "many": 0})).unwrap_or_default();
        let id = coll.insert_one(doc).await.map_err(|e| e.to_string())?.id;
        let mut writers = Vec::new();
        let methods: &[&str] = if with_many {
            &["one", "many"]
        } else {
            &["one"]
        };
        for &method in methods {
            for _ in 0..WRITERS {
                let (store, id) = (Arc::clone(&store), id.clone());
                writers.push(tokio::spawn(async move {
                    increment(store.as_ref(), id.as_str(), method).await
                }));
            }
        }
        let mut done = [0u64; 2];
        for (i, w) in writers.into_iter().enumerate() {
            let ok = w.await.map_err(|e| e.to_string())??;
            done[i / WRITERS] += ok;
        }
        let got = coll
            .find(&Filter::eq(ID_FIELD, id.as_str()), &FindOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let doc = got.first().ok_or("the document vanished")?;
        for (i, &method) in methods.iter().enumerate() {
            let value = doc.get(method).and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
            if value != done[i] {
                return Err(format!(
                    "update_{method}: {} increments reported done, the field holds {value}",
                    done[i]
                ));
            }
            if done[i] == 0 {
                return Err(format!("update_{method}: no increment succeeded"));
            }
        }
        Ok(())
    })
}

/// Runs one writer's increments of the field `method` through `update_<method>`; how many
/// reported success. A non-retryable error fails the property.
async fn increment(store: &dyn DataStore, id: &str, method: &str) -> Result<u64, String> {
    let coll = store.health_event_collection();
    let filter = Filter::eq(ID_FIELD, id);
    let update = Update::new().inc(method, 1);
    let mut ok = 0;
    for _ in 0..INCREMENTS {
        let r = if method == "one" {
            coll.update_one(&filter, &update).await
        } else {
            coll.update_many(&filter, &update).await
        };
        match r {
            Ok(r) if r.matched == 1 && r.modified == 1 => ok += 1,
            Ok(r) => return Err(format!("update_{method} reported {r:?}")),
            Err(e) if e.is_retryable() || e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(format!("update_{method} failed: {e}")),
        }
    }
    Ok(ok)
}
