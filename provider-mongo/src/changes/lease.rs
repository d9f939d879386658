//! A consumer's checkpoint and lease: one document per (collection, consumer) in the token
//! collection, `{_id: "<collection>/<consumer>", clientName, collection, resumeToken: {_data},
//! leaseOwner, leaseExpiresAt, updatedAt}`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore_api::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

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

    /// The checkpointed token's `_data`, if any.
    pub(super) async fn saved_token(&self) -> Result<Option<String>> {
        let saved = self
            .tokens
            .find_one(doc! { "_id": &self.id })
            .projection(doc! { "resumeToken": 1 })
            .await
            .map_err(map_err)?;
        match saved.as_ref().and_then(|d| d.get("resumeToken")) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Document(t)) => match t.get_str("_data") {
                Ok(data) => Ok(Some(data.to_owned())),
                Err(_) => Err(Error::permanent(format!(
                    "consumer {:?}: the stored resume token has no _data string",
                    self.consumer
                ))),
            },
            Some(_) => Err(Error::permanent(format!(
                "consumer {:?}: the stored resume token is not a document",
                self.consumer
            ))),
        }
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
        let result = self
            .tokens
            .update_one(
                doc! { "_id": &self.id, "$or": [
                    { "leaseOwner": Bson::Null },
                    { "leaseOwner": owner },
                    { "leaseExpiresAt": { "$lt": now } },
                ] },
                doc! {
                    "$set": { "leaseOwner": owner, "leaseExpiresAt": bson_date(until), "updatedAt": now },
                    "$setOnInsert": { "clientName": &self.consumer, "collection": &self.collection },
                },
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
