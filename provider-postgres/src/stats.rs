//! [`DataStore::stats`](datastore_api::DataStore::stats) from PostgreSQL's catalog and
//! statistics views: sizes from `pg_table_size` / `pg_relation_size`, index use from
//! `pg_stat_user_indexes`, the change log from `datastore_changes`; and
//! [`DataStore::server_info`](datastore_api::DataStore::server_info) from `version()`,
//! `pg_stat_ssl` and the migrations table.

use chrono::{DateTime, Utc};
use datastore_api::{
    ChangeHistoryStats, CollectionStats, IndexStats, Result, SchemaVersion, ServerInfo, StoreStats,
    TlsState,
};
use sqlx::PgPool;

use crate::collection::Table;
use crate::error::map_err;

/// One round of catalog queries over both tables and the change log.
pub(crate) async fn stats(pool: &PgPool) -> Result<StoreStats> {
    let mut collections = Vec::new();
    for table in [Table::HealthEvents, Table::MaintenanceEvents] {
        collections.push(collection(pool, table).await?);
    }
    Ok(StoreStats {
        collections,
        change_history: Some(change_history(pool).await?),
    })
}

async fn collection(pool: &PgPool, table: Table) -> Result<CollectionStats> {
    let name = table.name();
    // The name is one of two constants, never input.
    let (documents, data_bytes, index_bytes): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM {name}), pg_table_size('{name}'), pg_indexes_size('{name}')"
    ))
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    let indexes: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT indexrelname::text, pg_relation_size(indexrelid), idx_scan \
         FROM pg_stat_user_indexes WHERE relid = $1::regclass ORDER BY indexrelname",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(CollectionStats {
        name: name.to_owned(),
        documents: unsigned(documents),
        data_bytes: Some(unsigned(data_bytes)),
        index_bytes: Some(unsigned(index_bytes)),
        indexes: indexes
            .into_iter()
            .map(|(name, bytes, scans)| IndexStats {
                name,
                bytes: Some(unsigned(bytes)),
                scans: Some(unsigned(scans)),
            })
            .collect(),
    })
}

async fn change_history(pool: &PgPool) -> Result<ChangeHistoryStats> {
    let (changes, oldest, bytes): (i64, Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "SELECT count(*), min(changed_at), pg_total_relation_size('datastore_changes') \
         FROM datastore_changes",
    )
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    Ok(ChangeHistoryStats {
        source: "datastore_changes".to_owned(),
        changes: unsigned(changes),
        oldest,
        bytes: Some(unsigned(bytes)),
    })
}

/// Counts and sizes are never negative; a server that said otherwise reads as 0.
fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The server, this session's TLS as `pg_stat_ssl` shows it, and the schema version.
pub(crate) async fn server_info(pool: &PgPool) -> Result<ServerInfo> {
    type Row = (
        String,
        i64,
        Option<bool>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let (version, max_connections, ssl, tls_version, cipher, client_dn, applied): Row =
        sqlx::query_as(
            "SELECT version(), current_setting('max_connections')::bigint, \
                    s.ssl, s.version, s.cipher, s.client_dn, \
                    (SELECT max(version) FROM datastore_schema_migrations) \
             FROM (SELECT 1) one LEFT JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()",
        )
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    let tls = match ssl {
        Some(true) => TlsState::Encrypted {
            version: tls_version,
            cipher,
            client_dn: client_dn.filter(|dn| !dn.is_empty()),
        },
        Some(false) => TlsState::Plaintext,
        None => TlsState::Unknown,
    };
    Ok(ServerInfo {
        version,
        tls,
        max_connections: Some(unsigned(max_connections)),
        schema: Some(SchemaVersion {
            applied: applied.unwrap_or(0),
            latest: crate::migrate::latest_version(),
        }),
    })
}
