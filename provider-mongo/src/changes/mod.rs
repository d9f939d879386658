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
//!   ask for each change's pre-image (`fullDocumentBeforeChange: "whenAvailable"`: deletes and
//!   replaces do not need theirs; an update without one ends the stream with `HistoryLost`). The document
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
//!   server without `$changeStream` is a permanent [`Backend`](ErrorKind::Backend) error; transient
//!   failures are retried by the stream, which reopens after the last position it holds.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datastore_api::change::{ChangeStream, Lag, ResumeToken, WatchOptions};
use datastore_api::change_reader::{checkpoint_refused, spawn_stream, LocalLeases};
use datastore_api::{Error, ErrorKind, Filter, Result};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::FullDocumentBeforeChangeType;
use tracing::Instrument;

use crate::collection::MongoCollection;

mod consumers;
mod event;
mod failure;
mod lease;
mod pipeline;
mod post_image;
mod source;
mod token;

use event::commit_time;
pub(crate) use event::{decode_event, Decoded};
use failure::stream_error;
use lease::{Slot, Writer};
use source::{MongoSource, Start};

use token::driver_token;

pub(crate) use pipeline::EventFilter;

/// Operation types after which a change stream cannot continue (the server closes it).
const ENDING_OPERATIONS: [&str; 4] = ["invalidate", "drop", "rename", "dropDatabase"];

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
        let data = token::server_data(token)?;
        token::check_issued_for(&data, &c.inner.namespace().to_string())?;
        let slot = Slot::new(&self.tokens, &c.name, consumer);
        let owner = LocalLeases::holder(&slot.key);
        let writer = owner.as_deref().map_or(Writer::Free, Writer::Holder);
        let stored = slot
            .store(
                doc! { "resumeToken": { "_data": data } },
                writer,
                c.clock.now(),
            )
            .await?;
        if !stored {
            return Err(checkpoint_refused(consumer));
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
        let Some(start) = slot.saved_start().await? else {
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
            .batch_size(1_000)
            .max_await_time(Duration::from_millis(100));
        action = match start {
            Start::After(token) => action.resume_after(driver_token(&token)?),
            Start::At(ts) => action.start_at_operation_time(ts),
            Start::Now => action,
        };
        if decode {
            action =
                action.full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable);
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

#[cfg(test)]
mod tests {
    use super::event::fixtures::TOKEN_INSERT;
    use super::*;
    use datastore_api::change::watchers;
    use datastore_api::change::StartFrom;
    use datastore_api::change::{ChangeEvent, OperationType};
    use datastore_api::DocumentId;
    use futures::StreamExt;
    use serde_json::json;

    /// Against a live server (`DATASTORE_TEST_MONGODB_URI`): leases, checkpoints, and either a
    /// working stream or, on a server without `$changeStream`, the clear permanent error.
    #[tokio::test(flavor = "multi_thread")]
    async fn leases_and_checkpoints_on_a_live_server() {
        let server = datastore_testkit::mongo::TestMongo::shared().expect("a MongoDB server");
        if server.stand_in() == Some(datastore_testkit::mongo::StandIn::Jongodb) {
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
        assert!(slot.saved_start().await.unwrap().is_none());

        // One holder at a time; a racing upsert is "not acquired".
        assert!(slot
            .acquire("a", ttl, coll.clock.now(), false)
            .await
            .unwrap());
        assert!(slot
            .acquire("a", ttl, coll.clock.now(), true)
            .await
            .unwrap());
        assert!(!slot
            .acquire("b", ttl, coll.clock.now(), false)
            .await
            .unwrap());
        // This process's stream holds it, so this process may checkpoint ...
        LocalLeases::hold(&slot.key, "a");
        let token = ResumeToken::from_string(TOKEN_INSERT);
        support.checkpoint(coll, consumer, &token).await.unwrap();
        assert!(matches!(
            slot.saved_start().await.unwrap(),
            Some(Start::After(t)) if t == TOKEN_INSERT
        ));
        // ... another process may not.
        LocalLeases::forget(&slot.key, "a");
        let err = support
            .checkpoint(coll, consumer, &token)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(
            err.message().contains("another stream holds its lease"),
            "{err}"
        );
        // An expired lease is free for the next holder; the old one then cannot renew.
        assert!(slot
            .acquire("a", Duration::ZERO, coll.clock.now(), true)
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(slot
            .acquire("b", ttl, coll.clock.now(), false)
            .await
            .unwrap());
        assert!(!slot
            .acquire("a", ttl, coll.clock.now(), true)
            .await
            .unwrap());
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
            // From now, by time: the insert below is seen however late the standby opens.
            .start(StartFrom::Time(coll.clock.now()));
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
