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

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use datastore_api::change::{
    full_document, validate_consumer, ChangeEvent, ChangeStream, Lag, OperationType, ResumeToken,
    RetentionPolicy, StartFrom, WatchOptions,
};
use datastore_api::change_reader::{spawn_stream, Batch, ChangeSource, LocalLeases};
use datastore_api::{CmpOp, DocumentId, Error, ErrorKind, Filter, Lowered, Result, Scalar, Value};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::watch;

use crate::collection::Table;
use crate::compile::{push_filter_on, Target};
use crate::error::map_err;
use crate::locks::lock_xact;

/// Key of the transaction-level advisory lock that serialises tick creation (also written out in
/// migration 0003's `datastore_take_tick`).
const TICK_LOCK: i64 = 0x6e76_735f_6473_0002;

/// Change-event documents, built per change row in the `ev` lateral.
const EVENTS: Target = Target {
    doc: "ev.doc",
    reserved_columns: false,
};

const EVENT_DOCUMENT: &str = "jsonb_build_object(\
    'operationType', CASE c.operation WHEN 'i' THEN 'insert' WHEN 'u' THEN 'update' WHEN 'r' THEN 'replace' ELSE 'delete' END, \
    'documentKey', jsonb_build_object('_id', c.document_id)) \
 || CASE WHEN c.full_document IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('fullDocument', c.full_document \
    || jsonb_build_object('_id', c.document_id, 'createdAt', jsonb_build_object('$date', \
       to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))) END \
 || CASE WHEN c.operation = 'u' THEN jsonb_build_object('updateDescription', jsonb_build_object(\
    'updatedFields', to_jsonb(coalesce(c.updated_fields, '{}')), 'removedFields', to_jsonb(coalesce(c.removed_fields, '{}')))) \
    ELSE '{}'::jsonb END";

/// A batch spanning more than this many reads' worth of sequences is read by walking the
/// sequence index from its first read on.
const LARGE_BATCH_READS: i64 = 4;

/// Joins each change row to its event document, `ev.doc`. `OFFSET 0` keeps the subquery from
/// being flattened: flattened, the document is rebuilt for every `ev.doc` of the filter (a
/// dozen per row for the NVSentinel watchers), which made batch reads several times slower.
fn event_lateral() -> String {
    format!(" CROSS JOIN LATERAL (SELECT {EVENT_DOCUMENT} AS doc OFFSET 0) ev")
}

/// How `datastore_changes.operation` encodes each operation (the capture CTEs in `collection`
/// write these codes, and `EVENT_DOCUMENT` names them).
const OPERATION_CODES: [(OperationType, &str); 4] = [
    (OperationType::Insert, "i"),
    (OperationType::Update, "u"),
    (OperationType::Replace, "r"),
    (OperationType::Delete, "d"),
];

/// The operation codes (`c.operation`) a change must have for `filter` to match it, when the
/// filter pins `operationType` (every NVSentinel watcher does); `None` when it does not.
///
/// Reads test them on the column before building the event document. The filter itself still
/// decides: this only skips rows it would reject anyway.
fn implied_operations(filter: &Lowered) -> Option<Vec<&'static str>> {
    match filter {
        Lowered::False => Some(Vec::new()),
        Lowered::Cmp {
            path,
            op: CmpOp::Eq,
            value: Scalar::String(name),
        } if path.as_str() == "operationType" => Some(
            OPERATION_CODES
                .iter()
                .filter(|(op, _)| op.as_str() == name)
                .map(|(_, code)| *code)
                .collect(),
        ),
        Lowered::And(members) => members
            .iter()
            .filter_map(implied_operations)
            .reduce(|a, b| a.into_iter().filter(|c| b.contains(c)).collect()),
        Lowered::Or(members) => members
            .iter()
            .map(implied_operations)
            .collect::<Option<Vec<_>>>()
            .map(|sets| {
                let mut all: Vec<&'static str> = sets.into_iter().flatten().collect();
                all.sort_unstable();
                all.dedup();
                all
            }),
        _ => None,
    }
}

/// Appends `c.operation = ANY(…) AND ` when the filter pins the operation.
fn push_operation_prefilter(qb: &mut QueryBuilder<'_, Postgres>, filter: &Lowered) {
    if let Some(codes) = implied_operations(filter) {
        let codes: Vec<String> = codes.into_iter().map(str::to_owned).collect();
        qb.push("c.operation::text = ANY(")
            .push_bind(codes)
            .push(") AND ");
    }
}

/// A position: every change of batches before `tick`, and of batch `tick` up to sequence `seq`,
/// has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    tick: i64,
    seq: i64,
}

impl Position {
    fn token(self) -> ResumeToken {
        // Fixed-width digits: text order is position order.
        ResumeToken::from_string(format!("{:019}.{:019}", self.tick, self.seq))
    }

    /// Parses a token exactly as [`Position::token`] writes it (19 digits, a dot, 19 digits),
    /// so a truncated, signed or hand-edited token is refused rather than read as another
    /// position.
    fn parse(token: &ResumeToken) -> Result<Self> {
        let bad = || {
            Error::invalid_input(format!(
                "malformed resume token {:?}: not a token this change stream issued",
                token.as_str()
            ))
        };
        let (t, s) = token.as_str().split_once('.').ok_or_else(bad)?;
        let digits = |part: &str| part.len() == 19 && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(t) || !digits(s) {
            return Err(bad());
        }
        let tick: i64 = t.parse().map_err(|_| bad())?;
        let seq: i64 = s.parse().map_err(|_| bad())?;
        if tick < 1 {
            return Err(bad());
        }
        Ok(Position { tick, seq })
    }
}

/// Takes a new tick when there are committed changes the latest tick does not cover (or always,
/// with `force`). Returns the latest tick after the call: the new one, or one that another
/// reader took meanwhile.
///
/// One round trip: `datastore_take_tick` (migration 0003) checks cheaply first, so an idle poll
/// takes no lock; takers queue on the tick lock rather than give up, since it is held for one
/// insert and a reader that waited finds the tick just taken by the holder and reads it at once
/// instead of sleeping a poll interval.
async fn take_tick(pool: &PgPool, force: bool) -> Result<i64> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT datastore_take_tick($1)")
        .bind(force)
        .fetch_one(pool)
        .await
        .map_err(map_err)?
        .ok_or_else(no_ticks)
}

fn no_ticks() -> Error {
    Error::permanent("the change-stream schema has no ticks; run the migrations")
}

async fn tick_bounds(pool: &PgPool) -> Result<(i64, i64)> {
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

async fn start_position(pool: &PgPool, table: Table, options: &WatchOptions) -> Result<Position> {
    let (oldest, _) = tick_bounds(pool).await?;
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
                None => now().await,
            }
        }
        StartFrom::Checkpoint => match saved_position(pool, table, &options.consumer).await? {
            None => now().await,
            Some(pos) if pos.tick <= oldest => Err(history_lost(&options.consumer)),
            Some(pos) => Ok(pos),
        },
    }
}

/// The key of a consumer's lease in [`LocalLeases`].
fn lease_key(table: Table, consumer: &str) -> String {
    format!("postgresql\u{0}{}\u{0}{consumer}", table.name())
}

/// Takes or renews the consumer's lease for `owner`. False when another owner holds it.
async fn acquire_lease(
    pool: &PgPool,
    table: Table,
    consumer: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool> {
    let got: Option<i32> = sqlx::query_scalar(
        "INSERT INTO datastore_consumers (consumer, collection, lease_owner, lease_until) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (consumer, collection) DO UPDATE \
           SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until, updated_at = now() \
         WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_owner = EXCLUDED.lease_owner \
            OR datastore_consumers.lease_until < now() \
         RETURNING 1",
    )
    .bind(consumer)
    .bind(table.name())
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(map_err)?;
    Ok(got.is_some())
}

/// What delimits batch `tick`: the previous and current tick snapshots (as text, bound back as
/// `pg_snapshot`), the transaction-id range between them, and when the tick was taken.
#[derive(Debug, Clone)]
struct BatchBounds {
    tick: i64,
    previous: String,
    current: String,
    xmin: String,
    xmax: String,
    time: DateTime<Utc>,
    /// No change of the batch has a higher sequence (unknown on ticks older than migration 3).
    last_seq: Option<i64>,
    /// The previous tick's `last_seq`.
    previous_last_seq: Option<i64>,
}

enum BatchLookup {
    Ready(BatchBounds),
    /// Tick `tick - 1` is gone: the batch was pruned.
    Pruned,
    /// Tick `tick` has not been taken yet.
    NotYet,
}

async fn batch_bounds(pool: &PgPool, tick: i64) -> Result<BatchLookup> {
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
fn push_in_batch(
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

async fn tick_exists(pool: &PgPool, tick: i64) -> Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM datastore_change_ticks WHERE tick = $1)")
        .bind(tick)
        .fetch_one(pool)
        .await
        .map_err(map_err)
}

/// One consumer's change stream on one table: the primitives of the shared reader
/// ([`datastore_api::change_reader`]).
struct PgSource {
    pool: PgPool,
    table: Table,
    options: WatchOptions,
    filter: Lowered,
    /// `None` until the start position is known.
    pos: Option<Position>,
    /// The snapshots of the batch being read, fetched once per batch.
    bounds: Option<BatchBounds>,
    /// Tick notifications (see `wakeup`): end an idle wait early.
    wakeups: Option<watch::Receiver<u64>>,
}

fn decode(row: &PgRow, tick: i64, tick_time: DateTime<Utc>) -> Result<ChangeEvent> {
    let seq: i64 = row.try_get("seq").map_err(map_err)?;
    let op: i8 = row.try_get("operation").map_err(map_err)?;
    let id: String = row.try_get("document_id").map_err(map_err)?;
    let document_id = DocumentId::parse(&id)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(map_err)?;
    let body: Option<Value> = row.try_get("full_document").map_err(map_err)?;
    let operation = OPERATION_CODES
        .iter()
        .find(|(_, code)| code.as_bytes() == [op as u8])
        .map_or(OperationType::Delete, |(operation, _)| *operation);
    let full = match body {
        Some(Value::Object(b)) => Some(full_document(b, &document_id, created_at)?),
        _ => None,
    };
    let fields = |name: &str| -> Result<Vec<String>> {
        Ok(row
            .try_get::<Option<Vec<String>>, _>(name)
            .map_err(map_err)?
            .unwrap_or_default())
    };
    Ok(ChangeEvent {
        token: Position { tick, seq }.token(),
        operation,
        document_id,
        full_document: full,
        updated_fields: fields("updated_fields")?,
        removed_fields: fields("removed_fields")?,
        commit_time: tick_time,
    })
}

#[async_trait]
impl ChangeSource for PgSource {
    fn lease_key(&self) -> String {
        lease_key(self.table, &self.options.consumer)
    }

    async fn acquire_lease(&mut self, owner: &str, ttl: Duration) -> Result<bool> {
        acquire_lease(&self.pool, self.table, &self.options.consumer, owner, ttl).await
    }

    fn release_lease(&self, owner: String) -> BoxFuture<'static, ()> {
        let (pool, table, consumer) = (self.pool.clone(), self.table, self.options.consumer.clone());
        Box::pin(async move {
            let _ = sqlx::query(
                "UPDATE datastore_consumers SET lease_owner = NULL, lease_until = NULL \
                 WHERE consumer = $1 AND collection = $2 AND lease_owner = $3",
            )
            .bind(consumer)
            .bind(table.name())
            .bind(owner)
            .execute(&pool)
            .await;
        })
    }

    async fn start(&mut self, _from: StartFrom) -> Result<()> {
        self.pos = Some(start_position(&self.pool, self.table, &self.options).await?);
        Ok(())
    }

    async fn read(&mut self) -> Result<Batch> {
        self.read_batch().await
    }

    /// Waits a poll interval, or less when a new tick is announced.
    async fn idle(&mut self, poll: Duration) {
        let Some(wakeups) = self.wakeups.as_mut() else {
            return tokio::time::sleep(poll).await;
        };
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            changed = wakeups.changed() => {
                if changed.is_err() {
                    // The store is gone: poll only.
                    self.wakeups = None;
                }
            }
        }
    }
}

impl PgSource {
    /// Reads the next part of the current batch.
    async fn read_batch(&mut self) -> Result<Batch> {
        let pos = match self.pos {
            Some(p) => p,
            None => {
                let p = start_position(&self.pool, self.table, &self.options).await?;
                self.pos = Some(p);
                p
            }
        };
        let b = pos.tick;
        let bounds = match &self.bounds {
            Some(bb) if bb.tick == b => bb.clone(),
            _ => match batch_bounds(&self.pool, b).await? {
                BatchLookup::Pruned => return Err(history_lost(&self.options.consumer)),
                // A new tick means there is something to read now; otherwise wait a poll.
                BatchLookup::NotYet => {
                    let ticked = take_tick(&self.pool, false).await? >= b;
                    return Ok(Batch {
                        events: Vec::new(),
                        caught_up: !ticked,
                    });
                }
                BatchLookup::Ready(bb) => {
                    self.bounds = Some(bb.clone());
                    bb
                }
            },
        };
        // The batch's transaction-id range and snapshots are constants here, so the planner can
        // use the xid index or walk the sequence index in order under the LIMIT; the cheap
        // visibility tests run before the costlier filter. `alive` (computed once per
        // statement) says whether tick b-1 still exists: pruning deletes ticks and their changes
        // in one transaction, so in this statement's snapshot either the batch is whole or
        // `alive` is false.
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT c.seq, c.operation, c.document_id, c.created_at, c.full_document, c.updated_fields, \
             c.removed_fields, (SELECT EXISTS (SELECT 1 FROM datastore_change_ticks WHERE tick = ",
        );
        qb.push_bind(b - 1);
        qb.push(")) AS alive FROM datastore_changes c");
        if self.filter != Lowered::True {
            qb.push(event_lateral());
        }
        qb.push(" WHERE ");
        push_in_batch(&mut qb, "c", &bounds, self.table);
        qb.push(" AND c.seq > ").push_bind(pos.seq);
        // A batch far larger than one read (a backlog left by a consumer outage or a bulk load):
        // start its first read at its lowest sequence (`seq + 0`: found by scanning the batch's
        // xid range, not by walking the sequence index from the start of history), so that
        // this read also walks the sequence index instead of sorting the whole batch.
        let batch = i64::from(self.options.batch_size);
        // (The first tick, from migration 2, records no sequence: count from 0.)
        let large = bounds.last_seq.is_some_and(|last| {
            last - bounds.previous_last_seq.unwrap_or(0) > LARGE_BATCH_READS * batch
        });
        if pos.seq == 0 && large {
            qb.push(" AND c.seq >= (SELECT min(f.seq + 0) FROM datastore_changes f WHERE ");
            push_in_batch(&mut qb, "f", &bounds, self.table);
            qb.push(")");
        }
        if let Some(last) = bounds.last_seq {
            qb.push(" AND c.seq <= ").push_bind(last);
        }
        qb.push(" AND ");
        push_operation_prefilter(&mut qb, &self.filter);
        push_filter_on(&mut qb, &self.filter, EVENTS)?;
        qb.push(" ORDER BY c.seq LIMIT ").push_bind(batch);
        // Reading on in a batch that filled the previous read (`seq > 0`): walk the sequence
        // index from the position. The planner may not know that (right after a bulk load its
        // statistics miss the new rows) and would re-read and sort the whole rest of the batch
        // through the xid index on every read, quadratic in the batch size. The walk stops at
        // the batch's last sequence.
        let mut read_on = None;
        if pos.seq > 0 || large {
            let mut tx = self.pool.begin().await.map_err(map_err)?;
            sqlx::query("SET LOCAL enable_sort = off")
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            read_on = Some(tx);
        }
        let query = qb.build();
        let mut rows = match read_on.as_mut() {
            Some(tx) => query.fetch(&mut **tx),
            None => query.fetch(&self.pool),
        };
        // Collected apart and buffered only once the whole read succeeded: a read that fails
        // halfway is retried from the same position and must not leave changes to repeat.
        let mut read = Vec::with_capacity(self.options.batch_size.min(10_000) as usize);
        let mut last_seq = pos.seq;
        let mut alive = true;
        while let Some(row) = rows.try_next().await.map_err(map_err)? {
            alive = row.try_get("alive").map_err(map_err)?;
            read.push(decode(&row, b, bounds.time)?);
            last_seq = row.try_get("seq").map_err(map_err)?;
        }
        drop(rows);
        if let Some(tx) = read_on {
            tx.commit().await.map_err(map_err)?;
        }
        let count = read.len();
        // An empty read carries no `alive`: ask separately.
        if !alive || (count == 0 && !tick_exists(&self.pool, b - 1).await?) {
            // History was pruned under this read: do not step over what may be missing.
            return Err(history_lost(&self.options.consumer));
        }
        let full = count == self.options.batch_size as usize;
        self.pos = Some(if full {
            Position {
                tick: b,
                seq: last_seq,
            }
        } else {
            Position {
                tick: b + 1,
                seq: 0,
            }
        });
        Ok(Batch {
            events: read,
            caught_up: false,
        })
    }
}

fn history_lost(consumer: &str) -> Error {
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
    validate_consumer(consumer)?;
    let position = Position::parse(token)?;
    let owner = LocalLeases::holder(&lease_key(table, consumer)).unwrap_or_default();
    // One statement: the position must not lie beyond the newest tick (no stream issued it),
    // and only the lease holder may store it.
    let (issued, stored): (bool, bool) = sqlx::query_as(
        "WITH latest AS (SELECT tick, last_seq FROM datastore_change_ticks ORDER BY tick DESC LIMIT 1), \
         valid AS (SELECT EXISTS (SELECT 1 FROM latest WHERE $5 <= tick AND $6 <= coalesce(last_seq, $6)) AS ok), \
         stored AS (INSERT INTO datastore_consumers (consumer, collection, token) \
             SELECT $1, $2, $3 FROM valid WHERE ok \
             ON CONFLICT (consumer, collection) DO UPDATE SET token = EXCLUDED.token, updated_at = now() \
             WHERE datastore_consumers.lease_owner IS NULL OR datastore_consumers.lease_until < now() \
                OR datastore_consumers.lease_owner = $4 \
             RETURNING 1) \
         SELECT (SELECT ok FROM valid), EXISTS (SELECT 1 FROM stored)",
    )
    .bind(consumer)
    .bind(table.name())
    .bind(token.as_str())
    .bind(owner)
    .bind(position.tick)
    .bind(position.seq)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    if !issued {
        return Err(Error::invalid_input(format!(
            "resume token {:?} lies beyond the newest change: not a token this change stream issued",
            token.as_str()
        )));
    }
    if !stored {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("consumer {consumer:?}: another process holds its lease; not checkpointed"),
        ));
    }
    Ok(())
}

async fn saved_position(pool: &PgPool, table: Table, consumer: &str) -> Result<Option<Position>> {
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
    validate_consumer(consumer)?;
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

/// Deletes change history per `policy`; returns the number of changes deleted.
pub(crate) async fn prune(pool: &PgPool, policy: &RetentionPolicy) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    lock_xact(&mut tx, TICK_LOCK).await?;
    // The newest tick to become the new base: everything older than max_age, or, among ticks
    // older than min_age, everything before the slowest consumer's checkpoint.
    let target: Option<i64> = sqlx::query_scalar(
        "SELECT GREATEST( \
            (SELECT max(tick) FROM datastore_change_ticks WHERE created_at < now() - make_interval(secs => $1)), \
            LEAST( \
              (SELECT max(tick) FROM datastore_change_ticks WHERE created_at < now() - make_interval(secs => $2)), \
              (SELECT min(split_part(token, '.', 1)::bigint) - 1 FROM datastore_consumers WHERE token IS NOT NULL)))",
    )
    .bind(policy.max_age.as_secs_f64())
    .bind(policy.min_age.as_secs_f64())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_tick_function_uses_the_tick_lock_and_channel() {
        let sql = include_str!("../migrations/0003_take_tick_function.sql");
        assert!(sql.contains(&format!("pg_advisory_xact_lock({TICK_LOCK})")));
        assert!(sql.contains(&format!("pg_notify('{}'", crate::wakeup::TICK_CHANNEL)));
    }

    #[test]
    fn operations_implied_by_filters() {
        use datastore_api::change::watchers;
        let implied = |f: Filter| implied_operations(&f.lower().unwrap());
        assert_eq!(implied(watchers::processable_inserts()), Some(vec!["i"]));
        assert_eq!(
            implied(watchers::quarantined_and_drained()),
            Some(vec!["u"])
        );
        let op = |name: &str| Filter::eq("operationType", name);
        assert_eq!(implied(op("insert").or(op("delete"))), Some(vec!["d", "i"]));
        assert_eq!(implied(op("insert").and(op("delete"))), Some(vec![]));
        assert_eq!(implied(op("nonsense")), Some(vec![]));
        // Not pinned: anything else in an Or, a negation, no condition on the operation.
        assert_eq!(
            implied(op("insert").or(Filter::eq("documentKey._id", "x"))),
            None
        );
        assert_eq!(implied(Filter::ne("operationType", "insert")), None);
        assert_eq!(implied(Filter::All), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2048,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any text: a typed refusal or a position that writes back as the same token.
        #[test]
        fn arbitrary_tokens_are_refused_or_round_trip(
            text in proptest::prop_oneof![
                proptest::arbitrary::any::<String>(),
                "[0-9+ .-]{0,45}",
                "[0-9]{19}\\.[0-9]{19}",
            ]
        ) {
            if let Ok(p) = Position::parse(&ResumeToken::from_string(text.clone())) {
                let written = p.token();
                proptest::prop_assert_eq!(written.as_str(), text.as_str());
            }
        }
    }

    #[test]
    fn tokens_order_like_positions_and_round_trip() {
        let a = Position { tick: 2, seq: 900 };
        let b = Position { tick: 10, seq: 1 };
        assert!(a.token() < b.token());
        assert_eq!(Position::parse(&b.token()).unwrap(), b);
        for bad in [
            "",
            "x",
            "1",
            "0.5",
            "-1.2",
            "1.-2",
            "+1.+0",
            "0000000000000000001.000000000000000000",
            " 000000000000000001.0000000000000000001",
        ] {
            assert!(
                Position::parse(&ResumeToken::from_string(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
