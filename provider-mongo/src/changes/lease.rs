//! A consumer's checkpoint and lease: one document per (collection, consumer) in the token
//! collection, `{_id: "<collection>/<consumer>", clientName, collection, resumeToken: {_data},
//! checkpointedAt, leaseOwner, leaseExpiresAt, updatedAt}`. A consumer reset to a time holds
//! `startAt` (a cluster time) instead of `resumeToken` until its next checkpoint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore_api::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

use super::source::Start;
use crate::convert::bson_date;
use crate::error::{code_of, map_err};

pub(super) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(code_of(e), Some(11_000 | 11_001))
}

/// A consumer's checkpoint document.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) tokens: mongodb::Collection<Document>,
    /// `_id`: `<collection>/<consumer>`.
    pub(super) id: String,
    pub(super) collection: String,
    pub(super) consumer: String,
    /// Process-wide key ([`datastore_api::change_reader::LocalLeases`]): the token
    /// collection's namespace and `id`.
    pub(super) key: String,
}

impl Slot {
    pub(super) fn new(
        tokens: &mongodb::Collection<Document>,
        collection: &str,
        consumer: &str,
    ) -> Slot {
        let id = format!("{collection}/{consumer}");
        Slot {
            key: format!("{}\u{0}{id}", tokens.namespace()),
            tokens: tokens.clone(),
            id,
            collection: collection.to_owned(),
            consumer: consumer.to_owned(),
        }
    }

    /// Where the checkpoint resumes: right after its token, or at the time a reset stored
    /// (`startAt`); `None` without a checkpoint.
    pub(super) async fn saved_start(&self) -> Result<Option<Start>> {
        let saved = self
            .tokens
            .find_one(doc! { "_id": &self.id })
            .projection(doc! { "resumeToken": 1, "startAt": 1 })
            .await
            .map_err(map_err)?;
        let Some(saved) = saved else { return Ok(None) };
        match (saved.get("resumeToken"), saved.get("startAt")) {
            (Some(Bson::Document(t)), _) => match t.get_str("_data") {
                Ok(data) => Ok(Some(Start::After(data.to_owned()))),
                Err(_) => Err(Error::permanent(format!(
                    "consumer {:?}: the stored resume token has no _data string",
                    self.consumer
                ))),
            },
            (None | Some(Bson::Null), Some(Bson::Timestamp(ts))) => Ok(Some(Start::At(*ts))),
            (None | Some(Bson::Null), None | Some(Bson::Null)) => Ok(None),
            _ => Err(Error::permanent(format!(
                "consumer {:?}: the stored checkpoint is neither a resume token document nor a startAt timestamp",
                self.consumer
            ))),
        }
    }

    /// Writes `checkpoint` (`resumeToken` or `startAt`, the other one removed, plus any other
    /// fields given) as `writer` may; false when the lease is not `writer`'s to write under.
    pub(super) async fn store(
        &self,
        checkpoint: Document,
        writer: Writer<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = bson_date(now);
        let other = if checkpoint.contains_key("resumeToken") {
            "startAt"
        } else {
            "resumeToken"
        };
        let mut set = checkpoint;
        set.insert("updatedAt", now);
        set.insert("checkpointedAt", now);
        self.write(writer, now, doc! { "$set": set, "$unset": { other: "" } })
            .await
    }

    /// Takes (`renew` false) or renews (`renew` true) the lease for `owner` until `now + ttl`;
    /// false when it is not `owner`'s (see
    /// [`ChangeSource::acquire_lease`](datastore_api::change_reader::ChangeSource::acquire_lease)).
    pub(super) async fn acquire(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
        renew: bool,
    ) -> Result<bool> {
        let until = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let now = bson_date(now);
        let set =
            doc! { "leaseOwner": owner, "leaseExpiresAt": bson_date(until), "updatedAt": now };
        let writer = if renew {
            Writer::Holder(owner)
        } else {
            Writer::Taker(owner)
        };
        self.write(writer, now, doc! { "$set": set }).await
    }

    /// Applies `update` when the lease lets `writer` write (creating the slot unless the writer
    /// is a holder: a deleted consumer stays deleted); false otherwise (an upsert racing a held
    /// lease fails with a duplicate key: not written either).
    async fn write(
        &self,
        writer: Writer<'_>,
        now: mongodb::bson::DateTime,
        mut update: Document,
    ) -> Result<bool> {
        let upsert = !matches!(writer, Writer::Holder(_));
        if upsert {
            update.insert(
                "$setOnInsert",
                doc! { "clientName": &self.consumer, "collection": &self.collection },
            );
        }
        let result = self
            .tokens
            .update_one(writer.condition(&self.id, now), update)
            .upsert(upsert)
            .await;
        match result {
            Ok(r) => Ok(r.matched_count > 0 || r.upserted_id.is_some()),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// Who writes a consumer's slot, and so under which lease condition.
#[derive(Debug, Clone, Copy)]
pub(super) enum Writer<'a> {
    /// No stream of this process (a direct checkpoint, a reset, a delete): only while no live
    /// lease is held.
    Free,
    /// This process's stream `owner`: only while it still holds the lease, expired or not.
    Holder(&'a str),
    /// A stream taking the lease: free, expired, or already its own.
    Taker(&'a str),
}

impl Writer<'_> {
    /// The filter selecting slot `id` when this writer may write it.
    pub(super) fn condition(self, id: &str, now: mongodb::bson::DateTime) -> Document {
        let free = [
            doc! { "leaseOwner": Bson::Null },
            doc! { "leaseExpiresAt": { "$lt": now } },
        ];
        match self {
            Writer::Free => doc! { "_id": id, "$or": free.to_vec() },
            Writer::Holder(owner) => doc! { "_id": id, "leaseOwner": owner },
            Writer::Taker(owner) => {
                let mut any = free.to_vec();
                any.push(doc! { "leaseOwner": owner });
                doc! { "_id": id, "$or": any }
            }
        }
    }
}
