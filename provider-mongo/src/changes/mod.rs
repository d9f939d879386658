//! Change streams on MongoDB's native `$changeStream`.
//!
//! - **Filter.** The API filters a change seen as `{operationType, documentKey, fullDocument,
//!   updateDescription: {updatedFields: [paths], removedFields: [paths]}}`. MongoDB reports
//!   `updatedFields` as an object keyed by dotted path, so the pipeline first rewrites it into
//!   the array of its keys (plus the fields of `truncatedArrays`, whose value changed too), on
//!   events that have an `updateDescription` only, then `$match`es the compiled filter
//!   ([`Target::ChangeEvents`]). Events that end a stream (`invalidate`, `drop`, …) always pass,
//!   so the stream can report them. The resume token (`_id`) is never touched.
//! - **Full document.** [`ChangeSupport::prepare`] enables `changeStreamPreAndPostImages` on
//!   the data collections at connect (MongoDB 6.0+, needs the `collMod` privilege), and streams
//!   ask for each update's pre-image (`fullDocumentBeforeChange: "required"`). The document
//!   delivered with an update is that pre-image with the event's own `updateDescription`
//!   applied ([`post_image`]): what the server recorded at write time, never a lookup at read
//!   time (which can give the document of a later change, as SecantusDB's post-images do, or
//!   none once the document is deleted). Without pre-images streams are refused as
//!   `Unsupported`. Pre-images cost one stored document per update
//!   (`config.system.preimages`), kept as long as the oplog keeps the change.
//! - **Filters on the document of updates.** The server cannot see a computed document, so a
//!   filter with conditions on `fullDocument` is split: the server evaluates it exactly on
//!   inserts, replaces and deletes, and a relaxed superset on updates
//!   ([`datastore_api::Lowered::relaxed`]); the provider decides those updates on the computed
//!   document ([`datastore_api::Lowered::matches`]).
//! - **Tokens.** A [`ResumeToken`] is the event's `_id._data`: hex of a KeyString that starts
//!   with the cluster time, so tokens compare as strings in commit order. Tokens come from each
//!   event's `_id` (and, after an empty `next_if_any`, from the stream's post-batch token): the
//!   driver stream is only advanced with `next_if_any` and never cancelled, so
//!   `ChangeStream::resume_token` is never read in the state where it panics.
//! - **Checkpoints and leases.** One document per (collection, consumer) in the token
//!   collection, `{_id: "<collection>/<consumer>", clientName, collection, resumeToken: {_data},
//!   leaseOwner, leaseExpiresAt, updatedAt}`, written with majority concern. The lease is taken
//!   and renewed by one conditional upsert (a duplicate-key error means another holder); only
//!   the holder (or anyone while the lease is free or expired) may checkpoint.
//! - **Errors.** History errors (286, 260, 280, and older servers' "resume point may no longer
//!   be in the oplog") are [`HistoryLost`](ErrorKind::HistoryLost), never a silent restart; a
//!   server without `$changeStream` is a [`Permanent`](ErrorKind::Permanent) error; transient
//!   failures are retried by the stream, which reopens after the last position it holds.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use datastore_api::change::{
    validate_consumer, ChangeEvent, ChangeStream, Lag, OperationType, ResumeToken,
    WatchOptions,
};
use datastore_api::{DocumentId, Error, ErrorKind, Filter, Result};
use datastore_api::change_reader::{spawn_stream, LocalLeases};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::FullDocumentBeforeChangeType;
use tracing::Instrument;

use crate::collection::MongoCollection;
use crate::convert::{bson_date, chrono_date, from_bson_document};
use crate::error::{code_of, map_err, HISTORY_LOST_CODES};

mod lease;
mod pipeline;
mod post_image;
mod source;
mod token;

use lease::{is_duplicate_key, Slot};
use source::MongoSource;
#[cfg(test)]
use source::time_start;

use token::driver_token;

pub(crate) use pipeline::EventFilter;

/// Operation types after which a change stream cannot continue (the server closes it).
const ENDING_OPERATIONS: [&str; 4] = ["invalidate", "drop", "rename", "dropDatabase"];

/// Server codes meaning "this server cannot run `$changeStream`": the stage is only supported
/// on replica sets (40573), unrecognized pipeline stage (40324), CommandNotSupported (115),
/// CommandNotFound (59).
const UNSUPPORTED_CODES: &[i32] = &[40_573, 40_324, 115, 59];


/// NoMatchingDocument: with `fullDocumentBeforeChange: "required"`, the pre-image of an event is
/// missing.
const NO_MATCHING_DOCUMENT: i32 = 47;

/// CursorNotFound: the server-side cursor is gone (a resumable change-stream error).
const CURSOR_NOT_FOUND: i32 = 43;

/// Lag reads at most this many events.
const LAG_CAP: u64 = 100_000;

/// What the server offers for change streams (probed at connect) and the checkpoint store.
#[derive(Debug)]
pub(crate) struct ChangeSupport {
    /// The resume-token collection (`ResumeTokens` by default).
    tokens: mongodb::Collection<Document>,
    /// Per data collection: whether pre-images are recorded (`changeStreamPreAndPostImages`).
    images: Mutex<HashMap<String, bool>>,
}

impl ChangeSupport {
    /// Change support storing checkpoints and leases in `tokens`.
    pub(crate) fn new(tokens: mongodb::Collection<Document>) -> Self {
        ChangeSupport {
            tokens,
            images: Mutex::new(HashMap::new()),
        }
    }

    /// Enables pre- and post-images on the data collections (MongoDB 6.0+) and remembers, per
    /// collection, whether that worked. Never fails: without them, streams are refused
    /// (queries and writes still work). Run after the collections exist (index creation makes
    /// them).
    pub(crate) async fn prepare(&self, db: &mongodb::Database, settings: &crate::MongoSettings) {
        for name in [
            &settings.health_event_collection,
            &settings.maintenance_event_collection,
        ] {
            let enabled = enable_images(db, name).await;
            if let Ok(mut m) = self.images.lock() {
                m.insert(name.clone(), enabled);
            }
        }
    }

    /// Streams on `collection` need its pre-images (the document of an update is computed
    /// from them); without them the stream is refused (`Unsupported`) rather than fed
    /// documents looked up when the event is read, which can belong to a later change.
    fn require_images(&self, collection: &str) -> Result<()> {
        let enabled = self
            .images
            .lock()
            .map(|m| m.get(collection).copied().unwrap_or(false))
            .unwrap_or(false);
        if enabled {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "change streams on {collection} need pre-images, which this server did not enable: they need MongoDB 6.0+ and the collMod privilege at connect (or an administrator's `collMod: {collection:?}, changeStreamPreAndPostImages: {{enabled: true}}`); without them an update event could carry the document of a later change"
                ),
            ))
        }
    }

    /// Opens a change stream on `c`. When another process holds the consumer's lease the stream
    /// waits as a standby; otherwise the start position is resolved and the server-side stream
    /// opened now, so writes after this returns are seen and a lost history is reported here.
    pub(crate) async fn watch(
        &self,
        c: &MongoCollection,
        options: WatchOptions,
    ) -> Result<ChangeStream> {
        let source = MongoSource {
            coll: c.inner.clone(),
            client: c.client.clone(),
            clock: Arc::clone(&c.clock),
            slot: Slot::new(&self.tokens, &c.name, &options.consumer),
            filter: {
                self.require_images(&c.name)?;
                EventFilter::new(&options.filter)?
            },
            options: options.clone(),
            start: None,
            stream: None,
            asked: None,
        };
        spawn_stream(source, options).await
    }

    /// Stores `consumer`'s checkpoint for `c`, unless another process holds its lease
    /// ([`ErrorKind::Conflict`]).
    pub(crate) async fn checkpoint(
        &self,
        c: &MongoCollection,
        consumer: &str,
        token: &ResumeToken,
    ) -> Result<()> {
        validate_consumer(consumer)?;
        let data = token::server_data(token)?;
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let owner = LocalLeases::holder(&slot.key);
        let now = bson_date(c.clock.now());
        let mut free = vec![
            doc! { "leaseOwner": Bson::Null },
            doc! { "leaseExpiresAt": { "$lt": now } },
        ];
        if let Some(owner) = owner {
            free.push(doc! { "leaseOwner": owner });
        }
        let result = self
            .tokens
            .update_one(
                doc! { "_id": &slot.id, "$or": free },
                doc! {
                    "$set": { "resumeToken": { "_data": data }, "updatedAt": now },
                    "$setOnInsert": { "clientName": consumer, "collection": &c.name },
                },
            )
            .upsert(true)
            .await;
        let stored = match result {
            Ok(r) => r.matched_count > 0 || r.upserted_id.is_some(),
            Err(e) if is_duplicate_key(&e) => false,
            Err(e) => return Err(map_err(e)),
        };
        if !stored {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("consumer {consumer:?}: another process holds its lease; not checkpointed"),
            ));
        }
        Ok(())
    }

    /// Matching changes after `consumer`'s checkpoint, and the age of the oldest (zero when it
    /// has no checkpoint).
    ///
    /// Cost: MongoDB cannot count a change stream, so this opens one at the checkpoint and reads
    /// the whole backlog (at most 100,000 events, projected to their type and time) until no
    /// event is immediately available: work proportional to the backlog, plus up to two
    /// server waits of 100 ms at its end. Call it at metrics intervals, not per event.
    pub(crate) async fn lag(
        &self,
        c: &MongoCollection,
        consumer: &str,
        filter: &Filter,
    ) -> Result<Lag> {
        validate_consumer(consumer)?;
        let filter = EventFilter::new(filter)?;
        // Events are only decoded when the provider must decide some of them itself.
        let decode = filter.needs_events();
        let mut stages = filter.stages.clone();
        if !decode {
            stages.push(doc! { "$project": {
                "operationType": 1, "ns": 1, "clusterTime": 1, "wallTime": 1,
            } });
        }
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let Some(token) = slot.saved_token().await? else {
            return Ok(Lag {
                events_behind: 0,
                oldest_undelivered_age: None,
            });
        };
        self.require_images(&c.name)?;
        let span =
            tracing::info_span!("datastore.lag.open", collection = %c.name, consumer = %consumer);
        let mut action = c
            .inner
            .watch()
            .pipeline(stages)
            .resume_after(driver_token(&token)?)
            .batch_size(1_000)
            .max_await_time(Duration::from_millis(100));
        if decode {
            action = action.full_document_before_change(FullDocumentBeforeChangeType::Required);
        }
        let mut stream = action
            .into_future()
            .instrument(span)
            .await
            .map_err(|e| stream_error(e, consumer))?
            .with_type::<Document>();
        let mut behind = 0u64;
        let mut oldest = None;
        let mut empty = 0;
        while behind < LAG_CAP {
            let next = stream
                .next_if_any()
                .await
                .map_err(|e| stream_error(e, consumer))?;
            match next {
                Some(raw) => {
                    let counts = match raw.get_str("operationType").unwrap_or_default() {
                        op if ENDING_OPERATIONS.contains(&op) => break,
                        "update" if decode => match decode_event(raw.clone())? {
                            Decoded::Change(event) => filter.accepts(&event),
                            _ => false,
                        },
                        "insert" | "update" | "replace" | "delete" => true,
                        _ => false,
                    };
                    if counts {
                        behind += 1;
                        if oldest.is_none() {
                            oldest = Some(commit_time(&raw)?);
                        }
                    }
                }
                // The first empty answer may be the initial batch; the second comes from a
                // getMore that found nothing more in time.
                None => {
                    empty += 1;
                    if empty >= 2 || !stream.is_alive() {
                        break;
                    }
                }
            }
        }
        Ok(Lag {
            events_behind: behind,
            oldest_undelivered_age: oldest
                .map(|t| (c.clock.now() - t).to_std().unwrap_or_default()),
        })
    }
}

/// Turns on `changeStreamPreAndPostImages` for `name` unless it is on already (so that the
/// usual connect costs a `listCollections`, not a `collMod`); true when images are recorded.
async fn enable_images(db: &mongodb::Database, name: &str) -> bool {
    if images_already_enabled(db, name).await {
        tracing::info!(
            collection = name,
            "change streams use pre-images (changeStreamPreAndPostImages is enabled)"
        );
        return true;
    }
    let command = doc! { "collMod": name, "changeStreamPreAndPostImages": { "enabled": true } };
    match db.run_command(command).await {
        Ok(_) => {
            tracing::info!(
                collection = name,
                "change streams use pre-images (changeStreamPreAndPostImages enabled now)"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                collection = name,
                error = %e,
                "pre-images unavailable (they need MongoDB 6.0+ and the collMod privilege); change \
                 streams on this collection are refused"
            );
            false
        }
    }
}

/// Whether `listCollections` shows images enabled on `name` (set by an administrator).
async fn images_already_enabled(db: &mongodb::Database, name: &str) -> bool {
    let Ok(reply) = db
        .run_command(doc! { "listCollections": 1, "filter": { "name": name } })
        .await
    else {
        return false;
    };
    reply
        .get_document("cursor")
        .and_then(|c| c.get_array("firstBatch"))
        .ok()
        .and_then(|batch| batch.first())
        .and_then(Bson::as_document)
        .and_then(|spec| spec.get_document("options").ok())
        .and_then(|o| o.get_document("changeStreamPreAndPostImages").ok())
        .and_then(|p| p.get_bool("enabled").ok())
        .unwrap_or(false)
}

/// One decoded change-stream event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoded {
    /// A change of a document.
    Change(ChangeEvent),
    /// `invalidate`, `drop`, `rename` or `dropDatabase`: the stream cannot continue.
    Ended {
        /// The event's operation type.
        operation: String,
    },
    /// Any other event type (DDL events of newer servers): skipped, but its token is a
    /// position.
    Other {
        /// The event's position.
        token: ResumeToken,
        /// The event's operation type.
        operation: String,
    },
}

/// Maps a raw change event (MongoDB's shape, or after [`pipeline`]'s rewrite) to the API's.
pub(crate) fn decode_event(mut raw: Document) -> Result<Decoded> {
    let token = event_token(&raw)?;
    let op = raw
        .get_str("operationType")
        .map_err(|_| malformed("it has no operationType"))?
        .to_owned();
    let operation = match op.as_str() {
        "insert" => OperationType::Insert,
        "update" => OperationType::Update,
        "replace" => OperationType::Replace,
        "delete" => OperationType::Delete,
        ended if ENDING_OPERATIONS.contains(&ended) => return Ok(Decoded::Ended { operation: op }),
        _ => {
            return Ok(Decoded::Other {
                token,
                operation: op,
            })
        }
    };
    let commit_time = commit_time(&raw)?;
    let document_id = match raw
        .get_document("documentKey")
        .ok()
        .and_then(|k| k.get("_id"))
    {
        Some(Bson::ObjectId(oid)) => DocumentId::parse(&oid.to_hex())?,
        Some(Bson::String(s)) => DocumentId::parse(s)
            .map_err(|_| malformed(format!("its document key {s:?} is not a document id")))?,
        Some(other) => {
            return Err(malformed(format!(
                "its document key is a BSON {:?}, not an ObjectId",
                other.element_type()
            )))
        }
        None => return Err(malformed("it has no documentKey._id")),
    };
    let full_document = match operation {
        OperationType::Delete => None,
        OperationType::Update => Some(from_bson_document(updated_document(&mut raw)?)?),
        _ => match raw.remove("fullDocument") {
            None | Some(Bson::Null) => None,
            Some(Bson::Document(d)) => Some(from_bson_document(d)?),
            Some(other) => {
                return Err(malformed(format!(
                    "its fullDocument is a BSON {:?}",
                    other.element_type()
                )))
            }
        },
    };
    let (updated_fields, removed_fields) = if operation == OperationType::Update {
        update_description(raw.get("updateDescription"))?
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Decoded::Change(ChangeEvent {
        token,
        operation,
        document_id,
        full_document,
        updated_fields,
        removed_fields,
        commit_time,
    }))
}

/// The document right after an update: the event's pre-image with its `updateDescription`
/// applied (the written values are `updatedValues` after [`EventFilter`]'s rewrite, else
/// MongoDB's `updatedFields` object).
fn updated_document(raw: &mut Document) -> Result<Document> {
    let pre =
        match raw.remove("fullDocumentBeforeChange") {
            Some(Bson::Document(d)) => d,
            _ => return Err(Error::new(
                ErrorKind::HistoryLost,
                "a MongoDB update event came without its pre-image (pre-images expired, or were \
                 not enabled when the change was written)",
            )),
        };
    let mut description = match raw.get_document("updateDescription") {
        Ok(d) => d.clone(),
        Err(_) => return Err(malformed("an update without updateDescription")),
    };
    if let Some(values) = description.remove("updatedValues") {
        description.insert("updatedFields", values);
    }
    post_image::apply(pre, &description)
}

fn malformed(why: impl std::fmt::Display) -> Error {
    Error::permanent(format!("malformed MongoDB change event: {why}"))
}

/// The event's resume token, made from `_id._data`.
fn event_token(raw: &Document) -> Result<ResumeToken> {
    raw.get_document("_id")
        .and_then(|id| id.get_str("_data"))
        .map(token::api_token)
        .map_err(|_| malformed("it has no resume token (_id._data)"))
}

/// When the change was committed: `wallTime` (MongoDB 6.0+, milliseconds) when present, else
/// the cluster time (seconds).
fn commit_time(raw: &Document) -> Result<DateTime<Utc>> {
    if let Ok(t) = raw.get_datetime("wallTime") {
        return chrono_date(*t);
    }
    match raw.get_timestamp("clusterTime") {
        Ok(ts) => Utc
            .timestamp_opt(i64::from(ts.time), 0)
            .single()
            .ok_or_else(|| malformed("its clusterTime is out of range")),
        Err(_) => Err(malformed("it has neither wallTime nor clusterTime")),
    }
}

/// `(updated, removed)` paths of an `updateDescription`. `updatedFields` may be MongoDB's
/// object keyed by path or the array of paths of [`pipeline`]'s rewrite; the fields of
/// `truncatedArrays` count as updated.
fn update_description(v: Option<&Bson>) -> Result<(Vec<String>, Vec<String>)> {
    let d = match v {
        None | Some(Bson::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Bson::Document(d)) => d,
        Some(_) => return Err(malformed("its updateDescription is not a document")),
    };
    let strings = |name: &str, items: &[Bson]| -> Result<Vec<String>> {
        items
            .iter()
            .map(|b| {
                b.as_str().map(str::to_owned).ok_or_else(|| {
                    malformed(format!("updateDescription.{name} holds a non-string"))
                })
            })
            .collect()
    };
    let mut updated = match d.get("updatedFields") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Document(o)) => o.keys().cloned().collect(),
        Some(Bson::Array(a)) => strings("updatedFields", a)?,
        Some(_) => {
            return Err(malformed(
                "updateDescription.updatedFields has an unknown shape",
            ))
        }
    };
    let removed = match d.get("removedFields") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Array(a)) => strings("removedFields", a)?,
        Some(_) => return Err(malformed("updateDescription.removedFields is not an array")),
    };
    if let Ok(truncated) = d.get_array("truncatedArrays") {
        for t in truncated {
            let field = t
                .as_document()
                .and_then(|t| t.get_str("field").ok())
                .ok_or_else(|| {
                    malformed("updateDescription.truncatedArrays has an unknown shape")
                })?;
            if !updated.iter().any(|u| u == field) {
                updated.push(field.to_owned());
            }
        }
    }
    Ok((updated, removed))
}


/// What a change-stream failure means beyond [`map_err`]'s general mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamFailure {
    /// The server has no `$changeStream` (not a replica set, or a stand-in).
    Unsupported,
    /// The position is older than the oplog.
    HistoryLost,
    /// A required post-image is gone.
    PostImageMissing,
}

fn classify(code: Option<i32>, message: &str) -> Option<StreamFailure> {
    let m = message.to_ascii_lowercase();
    let in_code = |codes: &[i32]| code.is_some_and(|c| codes.contains(&c));
    if in_code(HISTORY_LOST_CODES) {
        Some(StreamFailure::HistoryLost)
    } else if in_code(UNSUPPORTED_CODES) {
        Some(StreamFailure::Unsupported)
    } else if code == Some(NO_MATCHING_DOCUMENT) && m.contains("post-image") {
        Some(StreamFailure::PostImageMissing)
    } else if m.contains("resume point may no longer be in the oplog") {
        Some(StreamFailure::HistoryLost)
    } else if m.contains("$changestream")
        && [
            "unrecognized",
            "unknown",
            "not supported",
            "unsupported",
            "only supported",
            "not implemented",
        ]
        .iter()
        .any(|w| m.contains(w))
    {
        // Other servers and stand-ins, e.g. "unsupported aggregation stage: $changeStream"
        // (NotImplemented, 238).
        Some(StreamFailure::Unsupported)
    } else {
        None
    }
}

/// Maps an error of opening or reading a change stream.
fn stream_error(e: mongodb::error::Error, consumer: &str) -> Error {
    let message = match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => c.message.clone(),
        other => other.to_string(),
    };
    match classify(code_of(&e), &message) {
        Some(StreamFailure::Unsupported) => Error::new(
            ErrorKind::Unsupported,
            "this MongoDB server does not support change streams (needs a replica set)",
        )
        .with_source(e),
        Some(StreamFailure::HistoryLost) => Error::new(
            ErrorKind::HistoryLost,
            format!(
                "consumer {consumer:?}: its position is older than the retained change history (the oplog)"
            ),
        )
        .with_source(e),
        Some(StreamFailure::PostImageMissing) => Error::new(
            ErrorKind::HistoryLost,
            format!(
                "consumer {consumer:?}: the post-image of a change is no longer available (post-images \
                 expired, or were not enabled when the change was written)"
            ),
        )
        .with_source(e),
        None => {
            // CursorNotFound and labelled errors are worth reopening for even if the driver's
            // one automatic resume failed.
            let resumable = code_of(&e) == Some(CURSOR_NOT_FOUND)
                || e.contains_label("ResumableChangeStreamError");
            let mapped = map_err(e);
            if resumable && mapped.kind() == ErrorKind::Permanent {
                Error::transient(format!("change stream interrupted: {}", mapped.message()))
            } else {
                mapped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore_api::change::watchers;
    use futures::StreamExt;
    use super::token::token_data;
    use datastore_api::change::StartFrom;
    use mongodb::bson::{self, oid::ObjectId, Timestamp};
    use serde_json::json;

    // Tokens shaped like the manual's examples (KeyString hex: 0x82, cluster time seconds and
    // increment, then the event's identity).
    const TOKEN_INSERT: &str = "82635019A0000000012B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F463C6F7065726174696F6E54797065003C696E736572740046646F63756D656E744B65790046645F69640064635019A078BE67426D7CF4D2000004";
    const TOKEN_UPDATE: &str = "8262A3713F000000012B022C0100296E5A10046B9C7F4A0AD74DCF8EB8EF3E2C8F1A5C46645F69640064635019A078BE67426D7CF4D20004";
    const ID: &str = "635019a078be67426d7cf4d2";

    fn oid() -> ObjectId {
        ObjectId::parse_str(ID).unwrap()
    }

    fn wall() -> bson::DateTime {
        bson::DateTime::from_millis(1_666_193_824_604)
    }

    fn change(raw: Document) -> ChangeEvent {
        match decode_event(raw).unwrap() {
            Decoded::Change(e) => e,
            other => panic!("not a change: {other:?}"),
        }
    }

    fn stored_document() -> Document {
        doc! {
            "_id": oid(),
            "createdAt": bson::DateTime::from_millis(1_666_193_824_000),
            "healthevent": { "nodename": "node-1", "isfatal": true, "generatedtimestamp": { "seconds": 1_666_193_824_i64 } },
            "healtheventstatus": { "nodequarantined": "Quarantined" },
            "_idempotencyKey": "k-1",
        }
    }

    fn api_document() -> serde_json::Value {
        json!({
            "_id": ID,
            "createdAt": {"$date": "2022-10-19T15:37:04.000Z"},
            "healthevent": {"nodename": "node-1", "isfatal": true, "generatedtimestamp": {"seconds": 1_666_193_824}},
            "healtheventstatus": {"nodequarantined": "Quarantined"},
        })
    }

    fn insert_event() -> Document {
        doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "insert",
            "clusterTime": Timestamp { time: 1_666_193_824, increment: 1 },
            "collectionUUID": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![0xab; 16] },
            "wallTime": wall(),
            "fullDocument": stored_document(),
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
        }
    }

    /// An update as MongoDB emits it with `fullDocumentBeforeChange`: `updatedFields` keyed by
    /// (dotted) path, no `wallTime` (servers before 6.0).
    fn update_event() -> Document {
        let mut pre = stored_document();
        pre.insert(
            "healthevent",
            doc! { "nodename": "node-1", "entitiesimpacted": [1, 2, 3] },
        );
        pre.insert(
            "healtheventstatus",
            doc! { "nodequarantined": "Pending", "faultremediated": false },
        );
        doc! {
            "_id": { "_data": TOKEN_UPDATE },
            "operationType": "update",
            "clusterTime": Timestamp { time: 1_654_878_527, increment: 1 },
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
            "updateDescription": {
                "updatedFields": {
                    "healtheventstatus.nodequarantined": "Quarantined",
                    "healtheventstatus.userpodsevictionstatus": { "status": "InProgress" },
                    "quarantineFinishTimestamp": bson::DateTime::from_millis(1_654_878_527_000),
                },
                "removedFields": ["healtheventstatus.faultremediated"],
                "truncatedArrays": [ { "field": "healthevent.entitiesimpacted", "newSize": 2 } ],
            },
            "fullDocumentBeforeChange": pre,
        }
    }

    #[test]
    fn decodes_an_insert() {
        let e = change(insert_event());
        assert_eq!(e.token, ResumeToken::from_string(TOKEN_INSERT));
        assert_eq!(e.operation, OperationType::Insert);
        assert_eq!(e.document_id.as_str(), ID);
        // ObjectId -> hex, date -> {"$date"}, the idempotency key hidden.
        assert_eq!(
            e.full_document.map(serde_json::Value::Object),
            Some(api_document())
        );
        assert!(e.updated_fields.is_empty() && e.removed_fields.is_empty());
        // wallTime (milliseconds) wins over the cluster time.
        assert_eq!(e.commit_time.timestamp_millis(), 1_666_193_824_604);
    }

    #[test]
    fn decodes_an_update_in_mongodb_shape() {
        let e = change(update_event());
        assert_eq!(e.token.as_str(), TOKEN_UPDATE);
        assert_eq!(e.operation, OperationType::Update);
        assert_eq!(e.document_id.as_str(), ID);
        assert_eq!(
            e.updated_fields,
            [
                "healtheventstatus.nodequarantined",
                "healtheventstatus.userpodsevictionstatus",
                "quarantineFinishTimestamp",
                "healthevent.entitiesimpacted",
            ]
        );
        assert_eq!(e.removed_fields, ["healtheventstatus.faultremediated"]);
        // The pre-image with the update applied.
        assert_eq!(
            e.full_document.clone().map(serde_json::Value::Object),
            Some(json!({
                "_id": ID,
                "createdAt": {"$date": "2022-10-19T15:37:04.000Z"},
                "healthevent": {"nodename": "node-1", "entitiesimpacted": [1, 2]},
                "healtheventstatus": {
                    "nodequarantined": "Quarantined",
                    "userpodsevictionstatus": {"status": "InProgress"},
                },
                "quarantineFinishTimestamp": {"$date": "2022-06-10T16:28:47.000Z"},
            }))
        );
        // No wallTime: the cluster time's second.
        assert_eq!(e.commit_time.timestamp(), 1_654_878_527);
        assert_eq!(e.commit_time.timestamp_subsec_millis(), 0);
        // The filter document the API defines sees the same paths.
        let f = e.to_filter_document();
        assert_eq!(
            f["updateDescription"]["updatedFields"][0],
            json!("healtheventstatus.nodequarantined")
        );
    }

    #[test]
    fn decodes_an_update_after_the_pipeline_rewrite() {
        let mut raw = update_event();
        let values = raw
            .get_document("updateDescription")
            .unwrap()
            .get_document("updatedFields")
            .unwrap()
            .clone();
        // What the $addFields stage makes of it: the keys, then the truncated arrays' fields,
        // and the values aside.
        raw.insert(
            "updateDescription",
            doc! {
                "updatedValues": values,
                "updatedFields": [
                    "healtheventstatus.nodequarantined",
                    "healtheventstatus.userpodsevictionstatus",
                    "quarantineFinishTimestamp",
                    "healthevent.entitiesimpacted",
                ],
                "removedFields": ["healtheventstatus.faultremediated"],
                "truncatedArrays": [ { "field": "healthevent.entitiesimpacted", "newSize": 2 } ],
            },
        );
        assert_eq!(change(raw), change(update_event()));
    }

    #[test]
    fn decodes_replace_delete_and_missing_pre_images() {
        let mut replace = insert_event();
        replace.insert("operationType", "replace");
        let e = change(replace);
        assert_eq!(e.operation, OperationType::Replace);
        assert_eq!(
            e.full_document.map(serde_json::Value::Object),
            Some(api_document())
        );
        assert!(e.updated_fields.is_empty());

        let delete = doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "delete",
            "clusterTime": Timestamp { time: 1_666_193_824, increment: 3 },
            "wallTime": wall(),
            "ns": { "db": "nvsentinel", "coll": "HealthEvents" },
            "documentKey": { "_id": oid() },
        };
        let e = change(delete);
        assert_eq!(e.operation, OperationType::Delete);
        assert_eq!(e.full_document, None);
        assert!(e.to_filter_document().get("fullDocument").is_none());

        // An update without its pre-image cannot be given its document.
        let mut update = update_event();
        update.insert("fullDocumentBeforeChange", Bson::Null);
        let err = decode_event(update).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    }

    #[test]
    fn stream_ending_events_are_reported() {
        for (op, extra) in [
            ("invalidate", doc! {}),
            (
                "drop",
                doc! { "ns": { "db": "nvsentinel", "coll": "HealthEvents" } },
            ),
            (
                "rename",
                doc! { "ns": { "db": "nvsentinel", "coll": "HealthEvents" }, "to": { "db": "nvsentinel", "coll": "Old" } },
            ),
            ("dropDatabase", doc! { "ns": { "db": "nvsentinel" } }),
        ] {
            let mut raw = doc! {
                "_id": { "_data": TOKEN_INSERT },
                "operationType": op,
                "clusterTime": Timestamp { time: 1_666_193_900, increment: 1 },
                "wallTime": wall(),
            };
            raw.extend(extra);
            assert_eq!(
                decode_event(raw).unwrap(),
                Decoded::Ended {
                    operation: op.to_owned()
                }
            );
        }
        let other = doc! {
            "_id": { "_data": TOKEN_INSERT },
            "operationType": "createIndexes",
            "clusterTime": Timestamp { time: 1_666_193_900, increment: 1 },
        };
        assert!(matches!(
            decode_event(other).unwrap(),
            Decoded::Other { ref operation, .. } if operation == "createIndexes"
        ));
    }

    #[test]
    fn malformed_events_are_permanent_errors() {
        let mut no_token = insert_event();
        no_token.insert("_id", doc! { "other": 1 });
        let mut bad_key = insert_event();
        bad_key.insert("documentKey", doc! { "_id": 7 });
        let mut no_time = insert_event();
        no_time.remove("wallTime");
        no_time.remove("clusterTime");
        let mut bad_fields = update_event();
        bad_fields.insert("updateDescription", doc! { "updatedFields": [1] });
        for raw in [no_token, bad_key, no_time, bad_fields] {
            let err = decode_event(raw).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
            assert!(
                err.message().contains("malformed MongoDB change event"),
                "{err}"
            );
        }
        // A string key that is a document id is accepted.
        let mut string_key = insert_event();
        string_key.insert("documentKey", doc! { "_id": ID });
        assert_eq!(change(string_key).document_id.as_str(), ID);
    }

    #[test]
    fn tokens_order_like_their_positions() {
        // Same event identity, cluster times (t, i): (0x635019A0, 1) < (0x635019A0, 2) <
        // (0x635019A1, 1).
        let at = |time: &str, inc: &str| {
            ResumeToken::from_string(format!(
                "82{time}{inc}2B042C0100296E5A1004AB1154ACACD849A48C61756D70D3B21F04"
            ))
        };
        let a = at("635019A0", "00000001");
        let b = at("635019A0", "00000002");
        let c = at("635019A1", "00000001");
        assert!(a < b && b < c);
        assert!(ResumeToken::from_string(TOKEN_UPDATE) < ResumeToken::from_string(TOKEN_INSERT));
        // Checkpoints accept MongoDB tokens only.
        assert!(token::server_data(&a).is_ok());
        for bad in ["", "0000000000000000001.0000000000000000002", "82zz"] {
            let err = token::server_data(&ResumeToken::from_string(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn driver_tokens_round_trip() {
        let t = driver_token(TOKEN_INSERT).unwrap();
        assert_eq!(token_data(&t).as_deref(), Some(TOKEN_INSERT));
    }

    #[test]
    fn failures_are_classified() {
        use StreamFailure::*;
        let lost = "Resume of change stream was not possible, as the resume point may no longer be in the oplog.";
        assert_eq!(classify(Some(286), lost), Some(HistoryLost));
        assert_eq!(
            classify(Some(260), "Invalid resume token"),
            Some(HistoryLost)
        );
        assert_eq!(classify(Some(280), "fatal"), Some(HistoryLost));
        assert_eq!(classify(Some(40_576), lost), Some(HistoryLost));
        assert_eq!(classify(None, lost), Some(HistoryLost));
        assert_eq!(
            classify(
                Some(40_573),
                "The $changeStream stage is only supported on replica sets"
            ),
            Some(Unsupported)
        );
        assert_eq!(
            classify(
                Some(40_324),
                "Unrecognized pipeline stage name: '$changeStream'"
            ),
            Some(Unsupported)
        );
        assert_eq!(classify(Some(59), "no such command"), Some(Unsupported));
        assert_eq!(
            classify(Some(2), "unsupported aggregation stage: $changeStream"),
            Some(Unsupported)
        );
        assert_eq!(
            classify(
                Some(47),
                "Change stream was configured to require a post-image for all update events, but the post-image was not found for event: {...}"
            ),
            Some(PostImageMissing)
        );
        assert_eq!(
            classify(
                Some(238),
                "unsupported aggregation stage: $changeStream [feature=aggregation.stage.$changeStream]"
            ),
            Some(Unsupported)
        );
        // Codes decide before words.
        assert_eq!(
            classify(Some(286), "unknown $changeStream resume point"),
            Some(HistoryLost)
        );
        assert_eq!(classify(Some(47), "no matching document"), None);
        assert_eq!(
            classify(Some(2), "change stream not supported for this option"),
            None
        );
        assert_eq!(classify(Some(11_600), "interrupted at shutdown"), None);
    }

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

    /// Against a live server (`DATASTORE_TEST_MONGODB_URI`): leases, checkpoints, and either a
    /// working stream or, on a server without `$changeStream`, the clear permanent error.
    #[tokio::test(flavor = "multi_thread")]
    async fn leases_and_checkpoints_on_a_live_server() {
        let server = mongo_harness::TestMongo::shared().expect("a MongoDB server");
        if server.stand_in() == Some(mongo_harness::StandIn::Jongodb) {
            eprintln!("NOTE: skipped: jongodb has no change streams");
            return;
        }
        let db = format!("changes_{}", DocumentId::generate());
        let settings = crate::MongoSettings::from_uri(server.uri(), &db);
        let store = crate::MongoDataStore::connect_with(&settings)
            .await
            .unwrap();
        let coll = &store.health;
        let support = &coll.changes;
        let consumer = "live-test";
        let slot = Slot::new(&support.tokens, &coll.name, consumer);
        let ttl = Duration::from_secs(10);

        // No checkpoint: zero lag, start from now.
        let lag = support.lag(coll, consumer, &Filter::All).await.unwrap();
        assert_eq!(lag.events_behind, 0);
        assert_eq!(slot.saved_token().await.unwrap(), None);

        // One holder at a time; a racing upsert is "not acquired".
        assert!(slot.acquire("a", ttl, coll.clock.now()).await.unwrap());
        assert!(slot.acquire("a", ttl, coll.clock.now()).await.unwrap());
        assert!(!slot.acquire("b", ttl, coll.clock.now()).await.unwrap());
        // This process's stream holds it, so this process may checkpoint ...
        LocalLeases::hold(&slot.key, "a");
        let token = ResumeToken::from_string(TOKEN_INSERT);
        support.checkpoint(coll, consumer, &token).await.unwrap();
        assert_eq!(
            slot.saved_token().await.unwrap().as_deref(),
            Some(TOKEN_INSERT)
        );
        // ... another process may not.
        LocalLeases::forget(&slot.key, "a");
        let err = support
            .checkpoint(coll, consumer, &token)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(
            err.message().contains("another process holds its lease"),
            "{err}"
        );
        // An expired lease is free for the next holder; the old one then cannot renew.
        assert!(slot
            .acquire("a", Duration::ZERO, coll.clock.now())
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(slot.acquire("b", ttl, coll.clock.now()).await.unwrap());
        assert!(!slot.acquire("a", ttl, coll.clock.now()).await.unwrap());
        // The stored document has the documented shape.
        let stored = support
            .tokens
            .find_one(doc! { "_id": &slot.id })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.get_str("clientName").unwrap(), consumer);
        assert_eq!(stored.get_str("collection").unwrap(), coll.name);
        assert_eq!(stored.get_str("leaseOwner").unwrap(), "b");
        assert!(stored.get_datetime("leaseExpiresAt").is_ok());
        // A consumer checkpoint of another provider's token is invalid input.
        let err = support
            .checkpoint(coll, consumer, &ResumeToken::from_string("1.2"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        // A fresh consumer's stream: it works, or the server says it cannot stream.
        let options = WatchOptions::new("live-stream").start(StartFrom::Now);
        let streams = match support.watch(coll, options).await {
            Ok(stream) => {
                drop(stream);
                true
            }
            Err(e) => {
                eprintln!("watch on this server: {e}");
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
                assert!(
                    e.message().contains("does not support change streams"),
                    "{e}"
                );
                // The lease taken for the attempt was handed back.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let left = support
                    .tokens
                    .find_one(doc! { "_id": format!("{}/live-stream", coll.name) })
                    .await
                    .unwrap()
                    .unwrap();
                assert!(left.get("leaseOwner").is_none(), "{left}");
                false
            }
        };

        // A standby waits while "b" holds the lease, takes over once it is released, then
        // streams (or, without `$changeStream`, reports the permanent error and ends).
        let mut options = WatchOptions::new(consumer)
            .filter(watchers::all_inserts())
            .start(StartFrom::Beginning);
        options.lease_ttl = Duration::from_millis(500);
        options.poll_interval = Duration::from_millis(20);
        let mut standby = support.watch(coll, options).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), standby.next())
                .await
                .is_err(),
            "a standby read while another holder had the lease"
        );
        support
            .tokens
            .update_one(
                doc! { "_id": &slot.id },
                doc! { "$unset": { "leaseOwner": "", "leaseExpiresAt": "" } },
            )
            .await
            .unwrap();
        // Its checkpoint is a made-up token: a real server would call it lost history, so
        // checkpoint nothing for a real run and start from now.
        support
            .tokens
            .update_one(
                doc! { "_id": &slot.id },
                doc! { "$unset": { "resumeToken": "" } },
            )
            .await
            .unwrap();
        let doc = |v: serde_json::Value| match v {
            serde_json::Value::Object(o) => o,
            _ => unreachable!(),
        };
        if streams {
            use datastore_api::Collection as _;
            coll.insert_one(doc(json!({"after": "takeover"})))
                .await
                .unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(5), standby.next())
            .await
            .expect("the standby never took over");
        match first {
            Some(Ok(event)) if streams => {
                assert_eq!(event.operation, OperationType::Insert);
                assert_eq!(event.full_document.unwrap()["after"], json!("takeover"));
            }
            Some(Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
                assert!(
                    e.message().contains("does not support change streams"),
                    "{e}"
                );
                assert!(
                    standby.next().await.is_none(),
                    "the stream goes on after its error"
                );
            }
            other => panic!("unexpected first item {other:?}"),
        }
        drop(standby);

        // With change streams (a real replica set): events decode end to end.
        let mut s = match support
            .watch(coll, WatchOptions::new("live-events").start(StartFrom::Now))
            .await
        {
            Ok(s) => s,
            Err(_) => {
                let _ = store.database.drop().await;
                return;
            }
        };
        use datastore_api::Collection as _;
        let inserted = coll
            .insert_one(doc(json!({"x": 1, "y": {"z": "v"}})))
            .await
            .unwrap();
        // Paths under existing parents: MongoDB reports them as written.
        let update = datastore_api::Update::new().set("x", 2).set("y.z", "w");
        coll.update_one(&Filter::eq("_id", inserted.id.as_str()), &update)
            .await
            .unwrap();
        async fn read(s: &mut ChangeStream) -> ChangeEvent {
            tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .expect("no event")
                .expect("stream ended")
                .unwrap()
        }
        let e1 = read(&mut s).await;
        assert_eq!(e1.operation, OperationType::Insert);
        assert_eq!(e1.document_id, inserted.id);
        let e2 = read(&mut s).await;
        assert_eq!(e2.operation, OperationType::Update);
        assert_eq!(e2.updated_fields, ["x", "y.z"]);
        assert!(e1.token < e2.token);
        assert_eq!(e2.full_document.unwrap()["x"], json!(2));
        support
            .checkpoint(coll, "live-events", &e1.token)
            .await
            .unwrap();
        let lag = support
            .lag(coll, "live-events", &Filter::All)
            .await
            .unwrap();
        assert_eq!(lag.events_behind, 1);
        let _ = store.database.drop().await;
    }
}
