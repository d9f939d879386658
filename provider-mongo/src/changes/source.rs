//! One consumer's change stream on one collection: the primitives of the shared reader
//! ([`datastore_api::change_reader`]) on MongoDB's `$changeStream`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datastore_api::change::{StartFrom, WatchOptions};
use datastore_api::change_reader::{Batch, ChangeSource};
use datastore_api::{Error, Result};
use futures::future::BoxFuture;
use mongodb::bson::{doc, Document, Timestamp};
use mongodb::options::FullDocumentBeforeChangeType;
use tracing::Instrument;

use super::lease::Slot;
use super::token::{self, driver_token, token_data};
use super::{decode_event, stream_error, Decoded, EventFilter};
use crate::clock::ServerClock;
use crate::collection::MongoCollection;

/// Where a server-side stream (re)opens.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Start {
    /// The server's present (no start option).
    Now,
    /// Right after this token (`_data`).
    After(String),
    /// At this cluster time.
    At(Timestamp),
}

/// The cluster time of the oldest oplog entry (`None` when `local.oplog.rs` is not readable).
async fn oldest_oplog_time(client: &mongodb::Client) -> Option<Timestamp> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    match oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "ts": 1 })
        .await
    {
        Ok(Some(entry)) => entry.get_timestamp("ts").ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the oldest oplog entry");
            None
        }
    }
}

/// The cluster time a watch from [`StartFrom::Beginning`] (the oldest retained change) or
/// [`StartFrom::Time`] starts at; `None` for the other starts.
async fn cluster_time_start(client: &mongodb::Client, from: StartFrom) -> Option<Timestamp> {
    match from {
        StartFrom::Beginning => Some(oldest_oplog_time(client).await.unwrap_or(Timestamp {
            time: 1,
            increment: 0,
        })),
        StartFrom::Time(t) => Some(time_start(t, oldest_oplog_time(client).await)),
        StartFrom::Now | StartFrom::Checkpoint => None,
    }
}

/// Where `consumer` reset to `to` resumes: for `Now`, right after the token of a stream opened
/// now (the server's present; the start of the current second if it gives none, which may
/// deliver that second's earlier changes again); otherwise the cluster time a watch from `to`
/// starts at.
pub(super) async fn reset_start(
    c: &MongoCollection,
    consumer: &str,
    to: StartFrom,
) -> Result<Start> {
    if let Some(at) = cluster_time_start(&c.client, to).await {
        return Ok(Start::At(at));
    }
    let opened = c
        .inner
        .watch()
        .await
        .map_err(|e| stream_error(e, consumer))?;
    // Fresh and idle: reading its token cannot hit the driver's panic.
    Ok(match opened.resume_token().as_ref().and_then(token_data) {
        Some(data) => Start::After(data),
        None => Start::At(time_start(c.clock.now(), None)),
    })
}

/// The start time of [`StartFrom::Time`]: the second of `t` (so the changes of that whole
/// second are included), but not before the oldest retained change.
pub(super) fn time_start(t: DateTime<Utc>, oldest: Option<Timestamp>) -> Timestamp {
    let secs = u32::try_from(t.timestamp().max(1)).unwrap_or(u32::MAX);
    let at = Timestamp {
        time: secs,
        increment: 0,
    };
    oldest.map_or(at, |o| o.max(at))
}

/// The state behind one change stream.
pub(super) struct MongoSource {
    pub(super) coll: mongodb::Collection<Document>,
    pub(super) client: mongodb::Client,
    pub(super) clock: Arc<ServerClock>,
    pub(super) slot: Slot,
    pub(super) options: WatchOptions,
    pub(super) filter: EventFilter,
    /// Where to (re)open: `None` until started; then the position after the last event read
    /// (or the server's post-batch token).
    pub(super) start: Option<Start>,
    pub(super) stream: Option<mongodb::change_stream::ChangeStream<Document>>,
    /// When the last read that found nothing was asked (its wait counts toward the poll).
    pub(super) asked: Option<Instant>,
}

#[async_trait]
impl ChangeSource for MongoSource {
    fn lease_key(&self) -> String {
        self.slot.key.clone()
    }

    async fn acquire_lease(&mut self, owner: &str, ttl: Duration, renew: bool) -> Result<bool> {
        self.slot.acquire(owner, ttl, self.clock.now(), renew).await
    }

    fn release_lease(&self, owner: String) -> BoxFuture<'static, ()> {
        let (tokens, id) = (self.slot.tokens.clone(), self.slot.id.clone());
        Box::pin(async move {
            let _ = tokens
                .update_one(
                    doc! { "_id": id, "leaseOwner": owner },
                    doc! { "$unset": { "leaseOwner": "", "leaseExpiresAt": "" } },
                )
                .await;
        })
    }

    /// Resolves the start and opens the server-side stream now, so writes after `watch`
    /// returns are seen and a lost history is reported by `watch`.
    async fn start(&mut self, from: StartFrom) -> Result<()> {
        self.start = Some(self.resolve_start(from).await?);
        self.open().await
    }

    async fn read(&mut self) -> Result<Batch> {
        if self.stream.is_none() {
            self.open().await?;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Batch::default());
        };
        self.asked = Some(Instant::now());
        let next = stream
            .next_if_any()
            .await
            .map_err(|e| stream_error(e, &self.options.consumer))?;
        let Some(raw) = next else {
            // next_if_any completed, so the stream is idle and its token readable.
            if let Some(data) = stream.resume_token().as_ref().and_then(token_data) {
                self.start = Some(Start::After(data));
            }
            if !stream.is_alive() {
                self.stream = None;
                return Err(Error::transient("the server closed the change stream"));
            }
            return Ok(Batch {
                events: Vec::new(),
                caught_up: true,
            });
        };
        let events = match decode_event(raw)? {
            Decoded::Change(event) => {
                self.start = Some(Start::After(token::server_data(&event.token)?));
                self.filter
                    .accepts(&event)
                    .then_some(event)
                    .into_iter()
                    .collect()
            }
            Decoded::Other { token, operation } => {
                tracing::debug!(operation = %operation, "skipping a change-stream event");
                self.start = Some(Start::After(token::server_data(&token)?));
                Vec::new()
            }
            Decoded::Ended { operation } => {
                return Err(Error::permanent(format!(
                    "consumer {:?}: the collection {:?} was dropped or renamed ({operation} \
                     event); the change stream ended",
                    self.options.consumer, self.slot.collection
                )))
            }
        };
        Ok(Batch {
            events,
            caught_up: false,
        })
    }

    /// The server waited for new events already (`maxAwaitTimeMS`); only the rest of the poll
    /// interval is slept, so a server that does not wait cannot make the stream spin.
    async fn idle(&mut self, poll: Duration) {
        let waited = self.asked.map_or(Duration::ZERO, |t| t.elapsed());
        if waited < poll {
            tokio::time::sleep(poll - waited).await;
        }
    }

    fn reset(&mut self) {
        self.stream = None;
    }
}

impl MongoSource {
    /// Where `from` says to start (run once the lease is held, so a standby reads the
    /// checkpoint its predecessor left).
    async fn resolve_start(&mut self, from: StartFrom) -> Result<Start> {
        Ok(match from {
            StartFrom::Now => Start::Now,
            StartFrom::Checkpoint => self.slot.saved_start().await?.unwrap_or(Start::Now),
            StartFrom::Beginning | StartFrom::Time(_) => {
                match cluster_time_start(&self.client, from).await {
                    Some(at) => Start::At(at),
                    None => Start::Now,
                }
            }
        })
    }

    /// How long a getMore waits on the server for new events: short enough to renew the lease
    /// in time between reads.
    fn await_time(&self) -> Duration {
        (self.options.lease_ttl / 5).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Opens the server-side stream at `self.start`.
    async fn open(&mut self) -> Result<()> {
        let start = self.start.clone().unwrap_or(Start::Now);
        let span = tracing::info_span!(
            "datastore.watch.open",
            collection = %self.slot.collection,
            consumer = %self.options.consumer,
            start = ?start,
        );
        let mut action = self
            .coll
            .watch()
            .pipeline(self.filter.stages.clone())
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
            .batch_size(self.options.batch_size)
            .max_await_time(self.await_time());
        action = match &start {
            Start::Now => action,
            Start::After(token) => action.resume_after(driver_token(token)?),
            Start::At(ts) => action.start_at_operation_time(*ts),
        };
        let opened = action
            .into_future()
            .instrument(span)
            .await
            .map_err(|e| stream_error(e, &self.options.consumer))?
            .with_type::<Document>();
        // The stream is fresh and idle: reading its token cannot hit the driver's panic.
        if let Some(data) = opened.resume_token().as_ref().and_then(token_data) {
            self.start = Some(Start::After(data));
        } else {
            self.start = Some(start);
        }
        self.stream = Some(opened);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_starts_are_clamped_to_the_oplog() {
        let t = Utc.timestamp_opt(1_700_000_000, 900_000_000).unwrap();
        let at = Timestamp {
            time: 1_700_000_000,
            increment: 0,
        };
        assert_eq!(time_start(t, None), at);
        let older = Timestamp {
            time: 1_600_000_000,
            increment: 5,
        };
        assert_eq!(time_start(t, Some(older)), at);
        let newer = Timestamp {
            time: 1_700_000_000,
            increment: 7,
        };
        assert_eq!(time_start(t, Some(newer)), newer);
        assert_eq!(time_start(DateTime::<Utc>::UNIX_EPOCH, None).time, 1);
    }
}
