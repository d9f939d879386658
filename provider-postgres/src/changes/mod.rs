//! Change streams on PostgreSQL: a change log written in the same transaction as each write,
//! read in batches cut by numbered snapshots ("ticks", as in PgQ).
//!
//! Batch `k` holds the changes of the transactions visible in tick `k`'s snapshot and not in
//! tick `k-1`'s. A transaction still running when a tick is taken is simply not in that batch;
//! it lands in the batch of the first tick taken after it commits. So no position can ever move
//! past a change that commits later, and a long transaction delays only itself. Inside a batch,
//! changes are ordered by their log sequence; two changes of one document are always in write
//! order (the second writer waited for the first's row lock, so it commits later or in the same
//! batch with a higher sequence). Every consumer sees the same order.

use std::time::Duration;

use datastore_api::change::{ChangeStream, Lag, ResumeToken, RetentionPolicy, WatchOptions};
use datastore_api::change_reader::{checkpoint_refused, spawn_stream, LocalLeases};
use datastore_api::{Error, ErrorKind, Filter, Lowered, Result};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::watch;

use crate::collection::Table;
use crate::compile::push_filter_on;
use crate::error::map_err;
use crate::locks::lock_xact;

mod consumers;
mod events;
mod position;
mod source;
mod ticks;

pub(crate) use consumers::{consumers, delete_consumer, reset_consumer};
use events::{event_lateral, push_operation_prefilter, EVENTS};
pub(crate) use position::Position;
use source::PgSource;
use ticks::{tick_bounds, TICK_LOCK};

/// The key of a consumer's lease in [`LocalLeases`].
pub(super) fn lease_key(table: Table, consumer: &str) -> String {
    format!("postgresql\u{0}{}\u{0}{consumer}", table.name())
}

/// Takes (`renew` false) or renews (`renew` true) the consumer's lease for `owner`; false when
/// it is not `owner`'s (see [`ChangeSource::acquire_lease`](datastore_api::change_reader::ChangeSource::acquire_lease)).
pub(super) async fn acquire_lease(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    owner: &str,
    ttl: Duration,
    renew: bool,
) -> Result<bool> {
    let sql = if renew {
        // An update only: a deleted consumer stays deleted, a freed lease stays free.
        "UPDATE datastore_consumers SET lease_until = now() + make_interval(secs => $4), updated_at = now() \
         WHERE consumer = $1 AND collection = $2 AND lease_owner = $3 RETURNING 1"
    } else {
        "INSERT INTO datastore_consumers (consumer, collection, lease_owner, lease_until) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (consumer, collection) DO UPDATE \
           SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until, updated_at = now() \
         WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_owner = EXCLUDED.lease_owner \
            OR datastore_consumers.lease_until < now() \
         RETURNING 1"
    };
    let got: Option<i32> = sqlx::query_scalar(sql)
        .bind(consumer)
        .bind(table.name())
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    Ok(got.is_some())
}

pub(super) fn history_lost(consumer: &str) -> Error {
    Error::new(
        ErrorKind::HistoryLost,
        format!("consumer {consumer:?}: its position is older than the retained change history"),
    )
}

/// Opens a change stream on `table`. When another process holds the consumer's lease, the
/// stream waits as a standby; otherwise the start position is resolved now, so a lost history
/// is reported here.
pub(crate) async fn watch(
    pool: &PgPool,
    table: Table,
    options: WatchOptions,
    wakeups: Option<watch::Receiver<u64>>,
) -> Result<ChangeStream> {
    let source = PgSource {
        pool: pool.clone(),
        table,
        filter: options.filter.lower()?,
        options: options.clone(),
        pos: None,
        bounds: None,
        wakeups,
    };
    spawn_stream(source, options).await
}

/// Stores `consumer`'s checkpoint for `table`, unless another process holds its lease.
pub(crate) async fn checkpoint(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    token: &ResumeToken,
) -> Result<()> {
    let position = Position::parse(token)?;
    let owner = LocalLeases::holder(&lease_key(table, consumer));
    // This process's stream holds the lease: only while it still does (an update: a reset or
    // delete since then freed it). No stream here: only while no other stream holds it.
    let store = if owner.is_some() {
        "stored AS (UPDATE datastore_consumers SET token = $3, updated_at = now(), checkpointed_at = now() \
             WHERE consumer = $1 AND collection = $2 AND lease_owner = $4 AND (SELECT ok FROM valid) \
             RETURNING 1) "
    } else {
        "stored AS (INSERT INTO datastore_consumers (consumer, collection, token, checkpointed_at) \
             SELECT $1, $2, $3, now() FROM valid WHERE ok \
             ON CONFLICT (consumer, collection) DO UPDATE \
               SET token = EXCLUDED.token, updated_at = now(), checkpointed_at = now() \
             WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_until < now() \
             RETURNING 1) "
    };
    // One statement: the position must not lie beyond the newest tick (no stream issued it),
    // and only the lease holder may store it.
    let sql = format!(
        "WITH latest AS (SELECT tick, last_seq FROM datastore_change_ticks ORDER BY tick DESC LIMIT 1), \
         other_stream AS (SELECT collection FROM datastore_changes WHERE seq = $6 AND collection <> $2), \
         valid AS (SELECT EXISTS (SELECT 1 FROM latest WHERE $5 <= tick AND $6 <= coalesce(last_seq, $6)) \
                          AND NOT EXISTS (SELECT 1 FROM other_stream) AS ok), \
         {store}SELECT (SELECT ok FROM valid), EXISTS (SELECT 1 FROM stored), (SELECT collection FROM other_stream)"
    );
    let (issued, stored, other_stream): (bool, bool, Option<String>) = sqlx::query_as(&sql)
        .bind(consumer)
        .bind(table.name())
        .bind(token.as_str())
        .bind(owner.unwrap_or_default())
        .bind(position.tick)
        .bind(position.seq)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    if let Some(other) = other_stream {
        return Err(Error::invalid_input(format!(
            "resume token {:?} belongs to the change stream of {other}, not of {}",
            token.as_str(),
            table.name()
        )));
    }
    if !issued {
        return Err(Error::invalid_input(format!(
            "resume token {:?} lies beyond the newest change: not a token this change stream issued",
            token.as_str()
        )));
    }
    if !stored {
        return Err(checkpoint_refused(consumer));
    }
    Ok(())
}

pub(super) async fn saved_position(
    pool: &PgPool,
    table: Table,
    consumer: &str,
) -> Result<Option<Position>> {
    let saved: Option<Option<String>> = sqlx::query_scalar(
        "SELECT token FROM datastore_consumers WHERE consumer = $1 AND collection = $2",
    )
    .bind(consumer)
    .bind(table.name())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    saved
        .flatten()
        .map(|t| Position::parse(&ResumeToken::from_string(t)))
        .transpose()
}

/// Matching changes after `consumer`'s checkpoint, and the age of the oldest.
pub(crate) async fn lag(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    filter: &Filter,
) -> Result<Lag> {
    let lowered = filter.lower()?;
    let Some(pos) = saved_position(pool, table, consumer).await? else {
        return Ok(Lag {
            events_behind: 0,
            oldest_undelivered_age: None,
        });
    };
    if pos.tick <= tick_bounds(pool).await?.0 {
        return Err(history_lost(consumer));
    }
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(c.changed_at))::float8 \
         FROM datastore_change_ticks p \
         JOIN datastore_changes c ON c.xid >= pg_snapshot_xmin(p.snapshot) \
         LEFT JOIN datastore_change_ticks t ON t.tick = p.tick + 1",
    );
    if lowered != Lowered::True {
        qb.push(event_lateral());
    }
    qb.push(" WHERE p.tick = ").push_bind(pos.tick - 1);
    qb.push(" AND c.collection = ").push_bind(table.name());
    qb.push(" AND NOT pg_visible_in_snapshot(c.xid, p.snapshot)");
    qb.push(
        " AND NOT (t.tick IS NOT NULL AND pg_visible_in_snapshot(c.xid, t.snapshot) AND c.seq <= ",
    )
    .push_bind(pos.seq)
    .push(") AND ");
    push_operation_prefilter(&mut qb, &lowered);
    push_filter_on(&mut qb, &lowered, EVENTS)?;
    let row = qb.build().fetch_one(pool).await.map_err(map_err)?;
    let behind: i64 = row.try_get(0).map_err(map_err)?;
    let age: Option<f64> = row.try_get(1).map_err(map_err)?;
    Ok(Lag {
        events_behind: behind as u64,
        oldest_undelivered_age: age.map(|s| Duration::from_secs_f64(s.max(0.0))),
    })
}

/// `age` in seconds for `now() - make_interval(…)`: a thousand years at most (an age that
/// large keeps everything; a larger one would take `now()` out of the range of a timestamp).
fn interval_secs(age: Duration) -> f64 {
    age.as_secs_f64().min(1_000.0 * 365.25 * 86_400.0)
}

/// Deletes change history per `policy`; returns the number of changes deleted.
pub(crate) async fn prune(pool: &PgPool, policy: &RetentionPolicy) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    lock_xact(&mut tx, TICK_LOCK).await?;
    // The newest tick to become the new base: everything older than max_age, or, among ticks
    // older than min_age, everything before the slowest consumer's checkpoint. LEAST and
    // GREATEST skip NULLs, so "no tick older than min_age" must stay NULL explicitly (else the
    // slowest checkpoint alone would prune young changes).
    let target: Option<i64> = sqlx::query_scalar(
        "SELECT GREATEST( \
            (SELECT max(tick) FROM datastore_change_ticks WHERE created_at < now() - make_interval(secs => $1)), \
            (SELECT CASE WHEN young.tick IS NOT NULL THEN LEAST(young.tick, passed.tick) END \
               FROM (SELECT max(tick) AS tick FROM datastore_change_ticks \
                      WHERE created_at < now() - make_interval(secs => $2)) young, \
                    (SELECT min(split_part(token, '.', 1)::bigint) - 1 AS tick \
                       FROM datastore_consumers WHERE token IS NOT NULL) passed))",
    )
    .bind(interval_secs(policy.max_age))
    .bind(interval_secs(policy.min_age))
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    let Some(target) = target else {
        tx.commit().await.map_err(map_err)?;
        return Ok(0);
    };
    // Ticks first, then their changes, in one transaction: a reader sees either neither
    // deleted or both (and then reports HistoryLost instead of skipping).
    sqlx::query("DELETE FROM datastore_change_ticks WHERE tick < $1")
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let done = sqlx::query(
        "DELETE FROM datastore_changes c USING datastore_change_ticks t \
         WHERE t.tick = $1 AND c.xid < pg_snapshot_xmax(t.snapshot) AND pg_visible_in_snapshot(c.xid, t.snapshot)",
    )
    .bind(target)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(done.rows_affected())
}
