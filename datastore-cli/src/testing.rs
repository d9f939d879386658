//! Test helpers: a test body run on each real server the harnesses start (a throwaway
//! PostgreSQL, the MongoDB stand-in), with the store closed afterwards; a consumer left
//! behind.

use std::time::Duration;

use datastore::{Collection, DataStore, StartFrom, WatchOptions};
use futures::StreamExt;

/// Runs `test` on a store of a fresh embedded PostgreSQL.
pub fn on_postgresql(test: impl for<'a> AsyncFnOnce(&'a dyn DataStore)) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_workload::embedded::start_embedded().expect("PostgreSQL");
    rt.block_on(async {
        let (store, _) = datastore_workload::embedded::connect_embedded(&server)
            .await
            .expect("store");
        test(&store).await;
        store.close().await;
    });
}

/// Runs `test` on a store of a fresh MongoDB stand-in.
pub fn on_mongodb(test: impl for<'a> AsyncFnOnce(&'a dyn DataStore)) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server =
        datastore_workload::embedded::start_mongo_stand_in().expect("the MongoDB stand-in");
    rt.block_on(async {
        let store = datastore_workload::embedded::connect_mongo_stand_in(&server)
            .await
            .expect("store");
        test(store.as_ref()).await;
        store.close().await;
    });
}

/// Inserts three documents and checkpoints `consumer` after the first: two stay behind it.
pub async fn checkpointed_after_first(collection: &dyn Collection, consumer: &str) {
    let mut stream = collection
        .watch(WatchOptions::new(consumer).start(StartFrom::Now))
        .await
        .expect("watch");
    for n in 0..3 {
        let doc = serde_json::from_value(serde_json::json!({ "n": n })).expect("doc");
        collection.insert_one(doc).await.expect("insert");
    }
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a change within 30 s")
        .expect("a change")
        .expect("no error");
    collection
        .checkpoint(consumer, &first.token)
        .await
        .expect("checkpoint");
    drop(stream);
}
