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

    /// The lease conditions under which this process may write the slot: the lease is free,
    /// expired, or `owner`'s.
    pub(super) fn writable(owner: Option<&str>, now: Bson) -> Vec<Document> {
        let mut free = vec![
            doc! { "leaseOwner": Bson::Null },
            doc! { "leaseExpiresAt": { "$lt": now } },
        ];
        if let Some(owner) = owner {
            free.push(doc! { "leaseOwner": owner });
        }
        free
    }

    /// Writes `checkpoint` (`resumeToken` or `startAt`, the other one removed) if the lease
    /// lets `owner` write; false when another stream holds the lease.
    pub(super) async fn store(
        &self,
        checkpoint: Document,
        owner: Option<&str>,
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
        self.upsert_if_writable(owner, now, doc! { "$set": set, "$unset": { other: "" } })
            .await
    }

    /// Takes or renews the lease for `owner` until `now + ttl`. False when another owner holds
    /// it (an upsert racing a held lease fails with a duplicate key: not acquired either).
    pub(super) async fn acquire(
        &self,
        owner: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let until = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let now = bson_date(now);
        let set =
            doc! { "leaseOwner": owner, "leaseExpiresAt": bson_date(until), "updatedAt": now };
        self.upsert_if_writable(Some(owner), now, doc! { "$set": set })
            .await
    }

    /// Applies `update` (creating the slot if needed) when the lease lets `owner` write; false
    /// when another stream holds it (an upsert racing a held lease fails with a duplicate key:
    /// not written either).
    async fn upsert_if_writable(
        &self,
        owner: Option<&str>,
        now: mongodb::bson::DateTime,
        mut update: Document,
    ) -> Result<bool> {
        update.insert(
            "$setOnInsert",
            doc! { "clientName": &self.consumer, "collection": &self.collection },
        );
        let result = self
            .tokens
            .update_one(
                doc! { "_id": &self.id, "$or": Slot::writable(owner, Bson::DateTime(now)) },
                update,
            )
            .upsert(true)
            .await;
        match result {
            Ok(r) => Ok(r.matched_count > 0 || r.upserted_id.is_some()),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }
}
