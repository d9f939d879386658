//! Consumer admin: list, delete and reset the checkpoint documents of the token collection. A
//! consumer whose lease a stream holds is left alone (`Conflict`): its stream would overwrite a
//! reset with its next checkpoint.

use datastore_api::change::{consumer_running, validate_consumer, validate_reset};
use datastore_api::{ConsumerInfo, Result, StartFrom};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::lease::Slot;
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
        validate_consumer(consumer)?;
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let deleted = self
            .tokens
            .delete_one(doc! { "_id": &slot.id, "$or": Slot::writable(None, Bson::DateTime(bson_date(c.clock.now()))) })
            .await
            .map_err(map_err)?
            .deleted_count;
        if deleted > 0 {
            return Ok(true);
        }
        match self.live_holder(c, &slot).await? {
            Some(holder) => Err(consumer_running(consumer, &holder)),
            None => Ok(false),
        }
    }

    /// Stores where `to` resolves as `consumer`'s checkpoint, unless its lease is held.
    pub(crate) async fn reset_consumer(
        &self,
        c: &MongoCollection,
        consumer: &str,
        to: StartFrom,
    ) -> Result<()> {
        validate_consumer(consumer)?;
        validate_reset(to)?;
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let checkpoint = match reset_start(c, to).await? {
            Start::After(data) => doc! { "resumeToken": { "_data": data } },
            Start::At(ts) => doc! { "startAt": ts },
            Start::Now => doc! { "startAt": time_start(c.clock.now(), None) },
        };
        if slot.store(checkpoint, None, c.clock.now()).await? {
            return Ok(());
        }
        let holder = self.live_holder(c, &slot).await?.unwrap_or_default();
        Err(consumer_running(consumer, &holder))
    }

    /// The holder of `slot`'s lease while it is unexpired.
    async fn live_holder(&self, c: &MongoCollection, slot: &Slot) -> Result<Option<String>> {
        let now = bson_date(c.clock.now());
        let held = self
            .tokens
            .find_one(doc! { "_id": &slot.id, "leaseExpiresAt": { "$gte": now } })
            .projection(doc! { "leaseOwner": 1 })
            .await
            .map_err(map_err)?;
        Ok(held.and_then(|d| d.get_str("leaseOwner").ok().map(str::to_owned)))
    }
}
