//! Consumer admin: list, delete and reset the checkpoint documents of the token collection. A
//! consumer whose lease a stream holds is left alone (`Conflict`): its stream would overwrite a
//! reset with its next checkpoint. A reset or delete frees the lease, so a stream whose lease
//! had lapsed cannot undo it: its renewal and checkpoints fail with `Conflict`.

use datastore_api::change::{consumer_running, validate_reset};
use datastore_api::metrics::lag;
use datastore_api::{ConsumerInfo, Result, StartFrom};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::lease::{Slot, Writer};
use super::source::{reset_start, time_start, Start};
use super::ChangeSupport;
use crate::collection::MongoCollection;
use crate::convert::{bson_date, chrono_date};
use crate::error::map_err;

impl ChangeSupport {
    /// Every consumer of `c`, by name.
    pub(crate) async fn consumers(&self, c: &MongoCollection) -> Result<Vec<ConsumerInfo>> {
        let now = c.clock.now();
        let docs: Vec<Document> = self
            .tokens
            .find(doc! { "collection": &c.name })
            .sort(doc! { "clientName": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                let name = d.get_str("clientName").ok()?;
                let present = |k| !matches!(d.get(k), None | Some(Bson::Null));
                let date = |k| d.get_datetime(k).ok().and_then(|t| chrono_date(*t).ok());
                let lease = match (d.get_str("leaseOwner"), date("leaseExpiresAt")) {
                    (Ok(owner), Some(until)) if until >= now => Some((owner.to_owned(), until)),
                    _ => None,
                };
                Some(ConsumerInfo::new(
                    name,
                    present("resumeToken") || present("startAt"),
                    date("checkpointedAt"),
                    lease,
                ))
            })
            .collect())
    }

    /// Deletes `consumer`'s document unless its lease is held.
    pub(crate) async fn delete_consumer(
        &self,
        c: &MongoCollection,
        consumer: &str,
    ) -> Result<bool> {
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        // Twice at most: a lease that expires between the delete and the check is free.
        for _ in 0..2 {
            let now = bson_date(c.clock.now());
            let deleted = self
                .tokens
                .find_one_and_delete(Writer::Free.condition(&slot.id, now))
                .await
                .map_err(map_err)?;
            if deleted.is_some() {
                lag::forget(consumer);
                return Ok(true);
            }
            match self.live_holder(c, &slot).await? {
                Held::Absent => return Ok(false),
                Held::By(holder) => return Err(consumer_running(consumer, holder.as_deref())),
                Held::Free => {}
            }
        }
        Err(consumer_running(consumer, None))
    }

    /// Stores where `to` resolves as `consumer`'s checkpoint and frees its lease, unless the
    /// lease is held.
    pub(crate) async fn reset_consumer(
        &self,
        c: &MongoCollection,
        consumer: &str,
        to: StartFrom,
    ) -> Result<()> {
        validate_reset(to)?;
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let mut checkpoint = match reset_start(c, consumer, to).await? {
            Start::After(data) => doc! { "resumeToken": { "_data": data } },
            Start::At(ts) => doc! { "startAt": ts },
            Start::Now => doc! { "startAt": time_start(c.clock.now(), None) },
        };
        // A stream whose lease lapsed must not renew it and undo the reset.
        checkpoint.insert("leaseOwner", Bson::Null);
        checkpoint.insert("leaseExpiresAt", Bson::Null);
        if slot.store(checkpoint, Writer::Free, c.clock.now()).await? {
            return Ok(());
        }
        let holder = match self.live_holder(c, &slot).await? {
            Held::By(holder) => holder,
            Held::Absent | Held::Free => None,
        };
        Err(consumer_running(consumer, holder.as_deref()))
    }

    /// Whether `slot` exists and a live lease is held on it (and by whom).
    async fn live_holder(&self, c: &MongoCollection, slot: &Slot) -> Result<Held> {
        let found = self
            .tokens
            .find_one(doc! { "_id": &slot.id })
            .projection(doc! { "leaseOwner": 1, "leaseExpiresAt": 1 })
            .await
            .map_err(map_err)?;
        let Some(found) = found else {
            return Ok(Held::Absent);
        };
        let live = found
            .get_datetime("leaseExpiresAt")
            .ok()
            .and_then(|t| chrono_date(*t).ok())
            .is_some_and(|until| until >= c.clock.now());
        let owner = found.get_str("leaseOwner").ok().map(str::to_owned);
        Ok(match (live, owner) {
            (true, Some(owner)) => Held::By(Some(owner)),
            _ => Held::Free,
        })
    }
}

/// A consumer slot's lease, as read.
enum Held {
    /// No slot.
    Absent,
    /// A slot whose lease is free or expired.
    Free,
    /// A live lease, by this holder.
    By(Option<String>),
}
