//! Ticks: the numbered snapshots that cut the change log into batches, and where a stream
//! starts.

use chrono::{DateTime, Utc};
use datastore_api::change::{StartFrom, WatchOptions};
use datastore_api::{Error, Result};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::position::Position;
use super::{history_lost, saved_position};
use crate::collection::Table;
use crate::error::map_err;

/// Key of the transaction-level advisory lock that serialises tick creation (also written out in
/// migration 0003's `datastore_take_tick`).
pub(super) const TICK_LOCK: i64 = 0x6e76_735f_6473_0002;

/// Takes a new tick when there are committed changes the latest tick does not cover (or always,
/// with `force`). Returns the latest tick after the call: the new one, or one that another
/// reader took meanwhile.
///
/// One round trip: `datastore_take_tick` (migration 0003) checks cheaply first, so an idle poll
/// takes no lock; takers queue on the tick lock rather than give up, since it is held for one
/// insert and a reader that waited finds the tick just taken by the holder and reads it at once
/// instead of sleeping a poll interval.
pub(super) async fn take_tick(pool: &PgPool, force: bool) -> Result<i64> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT datastore_take_tick($1)")
        .bind(force)
        .fetch_one(pool)
        .await
        .map_err(map_err)?
        .ok_or_else(no_ticks)
}

pub(super) fn no_ticks() -> Error {
    Error::permanent("the change-stream schema has no ticks; run the migrations")
}

pub(super) async fn tick_bounds(pool: &PgPool) -> Result<(i64, i64)> {
    let row = sqlx::query("SELECT min(tick), max(tick) FROM datastore_change_ticks")
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    let min: Option<i64> = row.try_get(0).map_err(map_err)?;
    let max: Option<i64> = row.try_get(1).map_err(map_err)?;
    match (min, max) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(no_ticks()),
    }
}

pub(super) async fn start_position(
    pool: &PgPool,
    table: Table,
    options: &WatchOptions,
) -> Result<Position> {
    let (oldest, newest) = tick_bounds(pool).await?;
    let now = || async {
        let tick = take_tick(pool, true).await?;
        Ok::<_, Error>(Position {
            tick: tick + 1,
            seq: 0,
        })
    };
    match options.start {
        StartFrom::Now => now().await,
        StartFrom::Beginning => Ok(Position {
            tick: oldest + 1,
            seq: 0,
        }),
        StartFrom::Time(t) => {
            // Before the history (and before any time PostgreSQL can hold): the beginning,
            // as on MongoDB.
            let t = t.max(chrono::DateTime::UNIX_EPOCH);
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT min(tick) FROM datastore_change_ticks WHERE created_at >= $1",
            )
            .bind(t)
            .fetch_one(pool)
            .await
            .map_err(map_err)?;
            match first {
                Some(tick) => Ok(Position {
                    tick: tick.max(oldest + 1),
                    seq: 0,
                }),
                // No tick since `t` yet: the changes committed since are in the batches after
                // the newest tick (starting after a fresh tick, as `Now` does, skipped them).
                None => Ok(Position {
                    tick: newest + 1,
                    seq: 0,
                }),
            }
        }
        StartFrom::Checkpoint => match saved_position(pool, table, &options.consumer).await? {
            None => now().await,
            Some(pos) if pos.tick <= oldest => Err(history_lost(&options.consumer)),
            Some(pos) => Ok(pos),
        },
    }
}

/// What delimits batch `tick`: the previous and current tick snapshots (as text, bound back as
/// `pg_snapshot`), the transaction-id range between them, and when the tick was taken.
#[derive(Debug, Clone)]
pub(super) struct BatchBounds {
    pub(super) tick: i64,
    pub(super) previous: String,
    pub(super) current: String,
    pub(super) xmin: String,
    pub(super) xmax: String,
    pub(super) time: DateTime<Utc>,
    /// No change of the batch has a higher sequence (unknown on ticks older than migration 3).
    pub(super) last_seq: Option<i64>,
    /// The previous tick's `last_seq`.
    pub(super) previous_last_seq: Option<i64>,
}

pub(super) enum BatchLookup {
    Ready(BatchBounds),
    /// Tick `tick - 1` is gone: the batch was pruned.
    Pruned,
    /// Tick `tick` has not been taken yet.
    NotYet,
}

pub(super) async fn batch_bounds(pool: &PgPool, tick: i64) -> Result<BatchLookup> {
    let row = sqlx::query(
        "SELECT p.snapshot::text AS previous, t.snapshot::text AS current, \
                pg_snapshot_xmin(p.snapshot)::text AS xmin, pg_snapshot_xmax(t.snapshot)::text AS xmax, \
                t.created_at AS time, t.last_seq, p.last_seq AS previous_last_seq \
         FROM datastore_change_ticks p LEFT JOIN datastore_change_ticks t ON t.tick = p.tick + 1 \
         WHERE p.tick = $1",
    )
    .bind(tick - 1)
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(BatchLookup::Pruned);
    };
    let current: Option<String> = row.try_get("current").map_err(map_err)?;
    let Some(current) = current else {
        return Ok(BatchLookup::NotYet);
    };
    Ok(BatchLookup::Ready(BatchBounds {
        tick,
        previous: row.try_get("previous").map_err(map_err)?,
        current,
        xmin: row.try_get("xmin").map_err(map_err)?,
        xmax: row.try_get("xmax").map_err(map_err)?,
        time: row.try_get("time").map_err(map_err)?,
        last_seq: row.try_get("last_seq").map_err(map_err)?,
        previous_last_seq: row.try_get("previous_last_seq").map_err(map_err)?,
    }))
}

/// Appends the condition that change row `alias` belongs to the batch `bounds` delimits, for
/// `table`: its transaction id in the batch's range (the cheap, indexed part), then visible in
/// the batch's tick and not in the previous one.
pub(super) fn push_in_batch(
    qb: &mut QueryBuilder<'_, Postgres>,
    alias: &str,
    bounds: &BatchBounds,
    table: Table,
) {
    qb.push(format!("{alias}.xid >= "))
        .push_bind(bounds.xmin.clone());
    qb.push(format!("::xid8 AND {alias}.xid < "))
        .push_bind(bounds.xmax.clone());
    qb.push(format!("::xid8 AND {alias}.collection = "))
        .push_bind(table.name());
    qb.push(format!(" AND pg_visible_in_snapshot({alias}.xid, "))
        .push_bind(bounds.current.clone());
    qb.push(format!(
        "::pg_snapshot) AND NOT pg_visible_in_snapshot({alias}.xid, "
    ))
    .push_bind(bounds.previous.clone());
    qb.push("::pg_snapshot)");
}

pub(super) async fn tick_exists(pool: &PgPool, tick: i64) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM datastore_change_ticks WHERE tick = $1)")
        .bind(tick)
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_tick_function_uses_the_tick_lock_and_channel() {
        let sql = include_str!("../../migrations/0003_take_tick_function.sql");
        assert!(sql.contains(&format!("pg_advisory_xact_lock({TICK_LOCK})")));
        assert!(sql.contains(&format!("pg_notify('{}'", crate::wakeup::TICK_CHANNEL)));
    }
}
