//! [`DataStore::stats`](datastore_api::DataStore::stats) from MongoDB's own reports: exact
//! document counts, `collStats` sizes, `$indexStats` use, and the oplog (`local.oplog.rs`),
//! which is the change history of the whole server.
//!
//! What a server refuses (a test server without storage statistics, a user who may not read
//! `local`) is left out (`None`) instead of failing the whole report.

use chrono::{DateTime, Utc};
use datastore_api::{
    ChangeHistoryStats, CollectionStats, IndexStats, Result, ServerInfo, StoreStats, TlsState,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Database;

use crate::error::map_err;
use crate::{MongoCollection, MongoDataStore};

/// Both collections and the oplog.
pub(crate) async fn stats(store: &MongoDataStore) -> Result<StoreStats> {
    let mut collections = Vec::new();
    for c in [&store.health, &store.maintenance] {
        collections.push(collection(&store.database, c).await?);
    }
    Ok(StoreStats {
        collections,
        change_history: oplog(&store.client.database("local")).await,
    })
}

async fn collection(database: &Database, c: &MongoCollection) -> Result<CollectionStats> {
    let documents = c.inner.count_documents(doc! {}).await.map_err(map_err)?;
    let sizes = database
        .run_command(doc! { "collStats": &c.name })
        .await
        .ok();
    let index_sizes = sizes
        .as_ref()
        .and_then(|s| s.get_document("indexSizes").ok());
    let scans: Option<Vec<Document>> = match c.inner.aggregate([doc! { "$indexStats": {} }]).await {
        Ok(cursor) => cursor.try_collect().await.ok(),
        Err(_) => None,
    };
    let mut names = c.inner.list_index_names().await.map_err(map_err)?;
    names.sort();
    let indexes = names
        .into_iter()
        .map(|name| IndexStats {
            bytes: index_sizes.and_then(|s| s.get(&name)).and_then(count),
            scans: scans.as_ref().and_then(|all| {
                let entry = all
                    .iter()
                    .find(|e| e.get_str("name") == Ok(name.as_str()))?;
                count(entry.get_document("accesses").ok()?.get("ops")?)
            }),
            name,
        })
        .collect();
    Ok(CollectionStats {
        name: c.name.clone(),
        documents,
        data_bytes: sizes
            .as_ref()
            .and_then(|s| s.get("storageSize"))
            .and_then(count),
        index_bytes: sizes
            .as_ref()
            .and_then(|s| s.get("totalIndexSize"))
            .and_then(count),
        indexes,
    })
}

/// The oplog's size and oldest entry, or `None` where the server does not let us read it.
async fn oplog(local: &Database) -> Option<ChangeHistoryStats> {
    let oplog = local.collection::<Document>("oplog.rs");
    let changes = oplog.estimated_document_count().await.ok()?;
    let first = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .await
        .ok()
        .flatten();
    let oldest = first.as_ref().and_then(|e| match e.get("ts") {
        Some(Bson::Timestamp(ts)) => DateTime::<Utc>::from_timestamp(i64::from(ts.time), 0),
        _ => None,
    });
    let sizes = local
        .run_command(doc! { "collStats": "oplog.rs" })
        .await
        .ok();
    Some(ChangeHistoryStats {
        source: "local.oplog.rs".to_owned(),
        changes,
        oldest,
        bytes: sizes
            .as_ref()
            .and_then(|s| s.get("storageSize"))
            .and_then(count),
    })
}

/// A count or size, whichever numeric type the server sent it as.
fn count(value: &Bson) -> Option<u64> {
    match value {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if n.is_finite() && *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

/// `buildInfo`'s version and `serverStatus`'s connection limit. The server does not report this
/// session's TLS to the client.
pub(crate) async fn server_info(store: &MongoDataStore) -> Result<ServerInfo> {
    let admin = store.client.database("admin");
    let build = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(map_err)?;
    let version = build.get_str("version").unwrap_or("unknown").to_owned();
    let status = admin.run_command(doc! { "serverStatus": 1 }).await.ok();
    let connections = status
        .as_ref()
        .and_then(|s| s.get_document("connections").ok());
    let max_connections =
        connections.and_then(|c| Some(count(c.get("current")?)? + count(c.get("available")?)?));
    Ok(ServerInfo {
        version: format!("MongoDB {version}"),
        tls: TlsState::Unknown,
        max_connections,
        schema: None,
    })
}
