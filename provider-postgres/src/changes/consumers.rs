//! Consumer admin: list, delete and reset the rows of `datastore_consumers`. A consumer whose
//! lease a stream holds is left alone (`Conflict`): its stream would overwrite a reset with its
//! next checkpoint. A reset or delete frees the lease, so a stream whose lease had lapsed
//! cannot undo it: its renewal and checkpoints fail with `Conflict`.

use chrono::{DateTime, Utc};
use datastore_api::change::{consumer_running, validate_reset};
use datastore_api::metrics::lag;
use datastore_api::{ConsumerInfo, Result, StartFrom, WatchOptions};
use sqlx::PgPool;

use super::ticks::start_position;
use crate::collection::Table;
use crate::error::map_err;

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
    let deleted = guarded(
        pool,
        table,
        consumer,
        None,
        "DELETE FROM datastore_consumers WHERE consumer = $1 AND collection = $2 \
         AND NOT coalesce((SELECT held FROM target), false) RETURNING 1",
    )
    .await?;
    if deleted {
        lag::forget(consumer);
    }
    Ok(deleted)
}

/// Stores the position `to` resolves to as `consumer`'s checkpoint and frees its lease, unless
/// the lease is held.
pub(crate) async fn reset_consumer(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    to: StartFrom,
) -> Result<()> {
    validate_reset(to)?;
    let position = start_position(pool, table, &WatchOptions::new(consumer).start(to)).await?;
    let wrote = guarded(
        pool,
        table,
        consumer,
        Some(position.token().as_str()),
        "INSERT INTO datastore_consumers (consumer, collection, token, checkpointed_at) \
         SELECT $1, $2, $3, now() WHERE NOT coalesce((SELECT held FROM target), false) \
         ON CONFLICT (consumer, collection) DO UPDATE \
           SET token = EXCLUDED.token, checkpointed_at = now(), updated_at = now(), \
               lease_owner = NULL, lease_until = NULL \
         WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_until < now() \
         RETURNING 1",
    )
    .await?;
    if wrote {
        Ok(())
    } else {
        // A stream took the lease between the check and the write.
        Err(consumer_running(consumer, None))
    }
}

/// Runs `write` (a data-modifying statement that may read CTE `target`: the consumer's row,
/// locked, with `held` for a live lease) in one statement with the lease check: a `Conflict`
/// naming the holder when the lease is held, else whether `write` changed a row.
async fn guarded(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    token: Option<&str>,
    write: &str,
) -> Result<bool> {
    let sql = format!(
        "WITH target AS (SELECT lease_owner, lease_owner IS NOT NULL AND lease_until >= now() AS held \
                         FROM datastore_consumers WHERE consumer = $1 AND collection = $2 FOR UPDATE), \
              wrote AS ({write}) \
         SELECT coalesce((SELECT held FROM target), false), (SELECT lease_owner FROM target), \
                EXISTS (SELECT 1 FROM wrote)"
    );
    let mut query = sqlx::query_as(&sql).bind(consumer).bind(table.name());
    if let Some(token) = token {
        query = query.bind(token);
    }
    let (held, holder, wrote): (bool, Option<String>, bool) =
        query.fetch_one(pool).await.map_err(map_err)?;
    if held {
        return Err(consumer_running(consumer, holder.as_deref()));
    }
    Ok(wrote)
}
