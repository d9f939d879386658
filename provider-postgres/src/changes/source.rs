//! One consumer's change stream on one table: the primitives of the shared reader
//! ([`datastore_api::change_reader`]), reading batch after batch.

use std::time::Duration;

use async_trait::async_trait;
use datastore_api::change::{StartFrom, WatchOptions};
use datastore_api::change_reader::{Batch, ChangeSource};
use datastore_api::{Lowered, Result};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::watch;

use super::events::{decode, event_lateral, push_operation_prefilter, EVENTS, LARGE_BATCH_READS};
use super::position::Position;
use super::ticks::{
    batch_bounds, push_in_batch, start_position, take_tick, tick_exists, BatchBounds, BatchLookup,
};
use super::{acquire_lease, history_lost, lease_key};
use crate::collection::Table;
use crate::compile::push_filter_on;
use crate::error::map_err;

/// One consumer's change stream on one table: the primitives of the shared reader
/// ([`datastore_api::change_reader`]).
pub(super) struct PgSource {
    pub(super) pool: PgPool,
    pub(super) table: Table,
    pub(super) options: WatchOptions,
    pub(super) filter: Lowered,
    /// `None` until the start position is known.
    pub(super) pos: Option<Position>,
    /// The snapshots of the batch being read, fetched once per batch.
    pub(super) bounds: Option<BatchBounds>,
    /// Tick notifications (see `wakeup`): end an idle wait early.
    pub(super) wakeups: Option<watch::Receiver<u64>>,
}

#[async_trait]
impl ChangeSource for PgSource {
    fn lease_key(&self) -> String {
        lease_key(self.table, &self.options.consumer)
    }

    async fn acquire_lease(&mut self, owner: &str, ttl: Duration, renew: bool) -> Result<bool> {
        acquire_lease(
            &self.pool,
            self.table,
            &self.options.consumer,
            owner,
            ttl,
            renew,
        )
        .await
    }

    fn release_lease(&self, owner: String) -> BoxFuture<'static, ()> {
        let (pool, table, consumer) =
            (self.pool.clone(), self.table, self.options.consumer.clone());
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
