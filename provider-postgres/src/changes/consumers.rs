//! Consumer admin: list, delete and reset the rows of `datastore_consumers`. A consumer whose
//! lease a stream holds is left alone (`Conflict`): its stream would overwrite a reset with its
//! next checkpoint.

use chrono::{DateTime, Utc};
use datastore_api::change::{consumer_running, validate_consumer, validate_reset};
use datastore_api::{ConsumerInfo, Result, StartFrom, WatchOptions};
use sqlx::PgPool;

use super::ticks::start_position;
use crate::collection::Table;
use crate::error::map_err;

/// The lease holder of `consumer` while its lease is unexpired.
async fn live_holder(pool: &PgPool, table: Table, consumer: &str) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT lease_owner FROM datastore_consumers WHERE consumer = $1 AND collection = $2 \
         AND lease_owner IS NOT NULL AND lease_until >= now()",
    )
    .bind(consumer)
    .bind(table.name())
    .fetch_optional(pool)
    .await
    .map_err(map_err)
}

/// Every consumer of `table`, by name.
pub(crate) async fn consumers(pool: &PgPool, table: Table) -> Result<Vec<ConsumerInfo>> {
    type Row = (
        String,
        bool,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT consumer, token IS NOT NULL, checkpointed_at, \
                CASE WHEN lease_until >= now() THEN lease_owner END, \
                CASE WHEN lease_until >= now() AND lease_owner IS NOT NULL THEN lease_until END \
         FROM datastore_consumers WHERE collection = $1 ORDER BY consumer COLLATE \"C\"",
    )
    .bind(table.name())
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows
        .into_iter()
        .map(|(name, checkpointed, at, holder, until)| {
            ConsumerInfo::new(name, checkpointed, at, holder.zip(until))
        })
        .collect())
}

/// Deletes `consumer`'s row unless its lease is held.
pub(crate) async fn delete_consumer(pool: &PgPool, table: Table, consumer: &str) -> Result<bool> {
    validate_consumer(consumer)?;
    let deleted = sqlx::query(
        "DELETE FROM datastore_consumers WHERE consumer = $1 AND collection = $2 \
         AND (lease_owner IS NULL OR lease_until < now())",
    )
    .bind(consumer)
    .bind(table.name())
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    if deleted > 0 {
        return Ok(true);
    }
    match live_holder(pool, table, consumer).await? {
        Some(holder) => Err(consumer_running(consumer, &holder)),
        None => Ok(false),
    }
}

/// Stores the position `to` resolves to as `consumer`'s checkpoint, unless its lease is held.
pub(crate) async fn reset_consumer(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    to: StartFrom,
) -> Result<()> {
    validate_consumer(consumer)?;
    validate_reset(to)?;
    let position = start_position(pool, table, &WatchOptions::new(consumer).start(to)).await?;
    let stored: Option<i32> = sqlx::query_scalar(
        "INSERT INTO datastore_consumers (consumer, collection, token, checkpointed_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (consumer, collection) DO UPDATE \
           SET token = EXCLUDED.token, checkpointed_at = now(), updated_at = now() \
         WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_until < now() \
         RETURNING 1",
    )
    .bind(consumer)
    .bind(table.name())
    .bind(position.token().as_str())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    if stored.is_some() {
        return Ok(());
    }
    let holder = live_holder(pool, table, consumer)
        .await?
        .unwrap_or_default();
    Err(consumer_running(consumer, &holder))
}
