//! Test helper: a test body run on each real server the harnesses start (a throwaway
//! PostgreSQL, the MongoDB stand-in), with the store closed afterwards.

use datastore::DataStore;

/// Runs `test` on a store of a fresh embedded PostgreSQL.
pub fn on_postgresql(test: impl for<'a> AsyncFnOnce(&'a dyn DataStore)) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_cli::server::start_embedded().expect("PostgreSQL");
    rt.block_on(async {
        let (store, _) = datastore_cli::server::connect_embedded(&server)
            .await
            .expect("store");
        test(&store).await;
        store.close().await;
    });
}

/// Runs `test` on a store of a fresh MongoDB stand-in.
pub fn on_mongodb(test: impl for<'a> AsyncFnOnce(&'a dyn DataStore)) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = datastore_cli::server::start_mongo_stand_in().expect("the MongoDB stand-in");
    rt.block_on(async {
        let store = datastore_cli::server::connect_mongo_stand_in(&server)
            .await
            .expect("store");
        test(store.as_ref()).await;
        store.close().await;
    });
}
