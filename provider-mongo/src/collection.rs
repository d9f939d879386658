//! [`MongoCollection`]: the [`Collection`] trait on one MongoDB collection, optionally bound
//! to the session of a [`MongoTransaction`](crate::MongoTransaction).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datastore_api::change::{
    ChangeStream, ConsumerInfo, Lag, ResumeToken, StartFrom, WatchOptions,
};
use datastore_api::query::sort_documents;
use datastore_api::raw::{
    ChangeFeed, Consumer, KeyedPrepared, Prepared, RawCollection, ValidFind, ValidPage,
};
use datastore_api::value::{values_at, CREATED_AT_FIELD, ID_FIELD};
use datastore_api::{
    Direction, Document, DocumentId, Error, ErrorKind, FieldPath, Filter, IdempotentOutcome,
    ImportDocument, Imported, Inserted, Lowered, NativeAggregation, NativeLimits, OperationLabels,
    Page, PageToken, ReservedField, Result, UpdateResult, ValidUpdate, Value,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{self, doc, Bson};
use mongodb::{Client, ClientSession};
use tokio::sync::Mutex;

use crate::changes::ChangeSupport;
use crate::clock::ServerClock;
use crate::convert::{
    bson_date, chrono_date, from_bson_document, object_id, to_bson, to_bson_document,
    IDEMPOTENCY_FIELD,
};
use crate::error::{map_aggregate_err, map_err};
use crate::filter::{compile, Target};
use crate::update::compile_update;

pub(crate) const PROVIDER: &str = "mongodb";

/// How many times an update by filter re-reads its target when a concurrent writer changed
/// the document between finding and updating it.
const UPDATE_ONE_ATTEMPTS: usize = 16;

/// How often a transaction the provider opens itself is run when it fails transiently.
const TRANSACTION_ATTEMPTS: usize = 5;

/// A session shared by the collections of one transaction.
pub(crate) type SharedSession = Arc<Mutex<ClientSession>>;

/// One MongoDB collection behind the [`Collection`](datastore_api::Collection) trait (its [`RawCollection`] side).
#[derive(Clone)]
pub struct MongoCollection {
    pub(crate) name: String,
    /// The collection's role as metrics label (`health_events`, `maintenance_events`), the
    /// same on every provider whatever the collection is called.
    pub(crate) role: &'static str,
    pub(crate) client: Client,
    pub(crate) inner: mongodb::Collection<bson::Document>,
    pub(crate) clock: Arc<ServerClock>,
    pub(crate) session: Option<SharedSession>,
    pub(crate) changes: Arc<ChangeSupport>,
}

/// Runs a driver action, inside the collection's transaction when it has one.
macro_rules! run {
    ($self:ident, $action:expr) => {
        match &$self.session {
            Some(s) => {
                let mut guard = s.lock().await;
                $action.session(&mut *guard).await
            }
            None => $action.await,
        }
    };
}

impl MongoCollection {
    /// The same collection bound to `session`.
    pub(crate) fn in_session(&self, session: SharedSession) -> MongoCollection {
        MongoCollection {
            session: Some(session),
            ..self.clone()
        }
    }

    /// Runs `body` atomically: inside the current transaction, or in a new one that commits
    /// when `body` succeeds. A transaction of its own that fails with a transient error (a
    /// write conflict, an election) is run again from the start, up to
    /// [`TRANSACTION_ATTEMPTS`] times; so is one that fails with a duplicate key when
    /// `retry_duplicates` (a concurrent insert of the same idempotency key: the rerun reads it
    /// and reports it as a duplicate).
    ///
    /// The transaction runs in a task of its own, so a caller that gives up (drops the future)
    /// never leaves a session behind mid-transaction: the task still commits or aborts, and
    /// only then is the session reused (a dropped call may therefore still take effect, as
    /// with any database).
    async fn atomically<T: Send + 'static>(
        &self,
        retry_duplicates: bool,
        body: impl for<'c> Fn(&'c MongoCollection) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    ) -> Result<T> {
        if self.session.is_some() {
            return body(self).await;
        }
        let this = self.clone();
        tokio::spawn(async move { this.transaction(retry_duplicates, body).await })
            .await
            .map_err(|e| Error::permanent(format!("the MongoDB transaction task failed: {e}")))?
    }

    /// [`MongoCollection::atomically`]'s transaction, with its retries.
    async fn transaction<T: Send>(
        &self,
        retry_duplicates: bool,
        body: impl for<'c> Fn(&'c MongoCollection) -> BoxFuture<'c, Result<T>> + Send + Sync,
    ) -> Result<T> {
        let mut attempt = 1;
        loop {
            let session = crate::begin_session(&self.client).await?;
            let tx = self.in_session(Arc::clone(&session));
            let out = body(&tx).await;
            let mut s = session.lock().await;
            let out = match out {
                Ok(v) => s.commit_transaction().await.map_err(map_err).map(|()| v),
                Err(e) => {
                    // The body's error is the one to report; the abort only releases server state.
                    let _ = s.abort_transaction().await;
                    Err(e)
                }
            };
            match out {
                Err(e)
                    if attempt < TRANSACTION_ATTEMPTS
                        && (e.is_retryable()
                            || (retry_duplicates && e.kind() == ErrorKind::Duplicate)) =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
                }
                out => return out,
            }
        }
    }

    async fn find_raw(
        &self,
        filter: bson::Document,
        sort: Option<bson::Document>,
        skip: u64,
        limit: Option<i64>,
    ) -> Result<Vec<bson::Document>> {
        let mut action = self.inner.find(filter);
        if let Some(sort) = sort {
            action = action.sort(sort);
        }
        if skip > 0 {
            action = action.skip(skip);
        }
        if let Some(limit) = limit {
            action = action.limit(limit);
        }
        match &self.session {
            Some(s) => {
                let mut guard = s.lock().await;
                let mut cursor = action.session(&mut *guard).await.map_err(map_err)?;
                cursor
                    .stream(&mut guard)
                    .try_collect()
                    .await
                    .map_err(map_err)
            }
            None => action
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err),
        }
    }

    /// A `$lookup` stage joins this collection only, under its name here, and its documents
    /// hide the idempotency key too.
    fn native_lookup(&self, stage: &mut bson::Document) -> Result<()> {
        let Ok(lookup) = stage.get_document_mut("$lookup") else {
            return Ok(());
        };
        lookup.insert("from", self.name.clone());
        if let Ok(sub) = lookup.get_array_mut("pipeline") {
            sub.insert(
                0,
                Bson::Document(doc! { "$project": { IDEMPOTENCY_FIELD: 0 } }),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl NativeAggregation for MongoCollection {
    /// Runs the stages natively (behind a stage that hides the idempotency key), inside the
    /// collection's transaction when it has one; at most `limits.max_documents` come back.
    async fn aggregate_native(
        &self,
        pipeline: &[Value],
        limits: NativeLimits,
    ) -> Result<Vec<Document>> {
        let mut stages = vec![doc! { "$project": { IDEMPOTENCY_FIELD: 0 } }];
        for (i, stage) in pipeline.iter().enumerate() {
            match to_bson(stage)? {
                Bson::Document(mut d) => {
                    self.native_lookup(&mut d)?;
                    stages.push(d)
                }
                _ => {
                    return Err(Error::invalid_input(format!(
                        "aggregate: stage {i} is not a document"
                    )))
                }
            }
        }
        let max = limits.max_documents;
        // The server stops the run at the pipeline's time limit, as the evaluator does.
        let action = self.inner.aggregate(stages).max_time(limits.max_time);
        let raw: Vec<bson::Document> = match &self.session {
            Some(s) => {
                let mut guard = s.lock().await;
                let mut cursor = action
                    .session(&mut *guard)
                    .await
                    .map_err(map_aggregate_err)?;
                cursor
                    .stream(&mut guard)
                    .take(max.saturating_add(1))
                    .try_collect()
                    .await
                    .map_err(map_aggregate_err)?
            }
            None => action
                .await
                .map_err(map_aggregate_err)?
                .take(max.saturating_add(1))
                .try_collect()
                .await
                .map_err(map_aggregate_err)?,
        };
        if raw.len() > max {
            return Err(Error::invalid_input(format!(
                "aggregate: the pipeline returns more than {max} documents; narrow it (or raise Pipeline::with_max_documents)"
            )));
        }
        raw.into_iter().map(from_bson_document).collect()
    }
}

impl MongoCollection {
    async fn find_documents(
        &self,
        filter: bson::Document,
        sort: Option<bson::Document>,
        skip: u64,
        limit: Option<i64>,
    ) -> Result<Vec<Document>> {
        self.find_raw(filter, sort, skip, limit)
            .await?
            .into_iter()
            .map(from_bson_document)
            .collect()
    }

    /// Stamps `createdAt` and converts a prepared document for insertion.
    fn stored(
        id: &DocumentId,
        body: &Document,
        created_at: DateTime<Utc>,
    ) -> Result<bson::Document> {
        let mut d = bson::Document::new();
        d.insert(ID_FIELD, object_id(id)?);
        d.insert(CREATED_AT_FIELD, bson_date(created_at));
        d.extend(to_bson_document(body)?);
        Ok(d)
    }

    async fn insert_prepared(&self, docs: Vec<bson::Document>) -> Result<()> {
        match docs.len() {
            0 => Ok(()),
            1 => {
                let d = docs.into_iter().next().unwrap_or_default();
                run!(self, self.inner.insert_one(d)).map_err(map_err)?;
                Ok(())
            }
            _ => {
                run!(self, self.inner.insert_many(docs).ordered(true)).map_err(map_err)?;
                Ok(())
            }
        }
    }

    /// Inserts imported documents unordered; a duplicate key (the `_id` or another unique
    /// index) leaves the stored document alone and counts as present.
    async fn import_prepared(&self, docs: Vec<bson::Document>) -> Result<Imported> {
        let total = docs.len() as u64;
        match run!(self, self.inner.insert_many(docs).ordered(false)) {
            Ok(done) => Ok(Imported {
                inserted: done.inserted_ids.len() as u64,
                present: total - done.inserted_ids.len() as u64,
            }),
            Err(e) => {
                let mongodb::error::ErrorKind::InsertMany(failure) = e.kind.as_ref() else {
                    return Err(map_err(e));
                };
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                if failure.write_concern_error.is_some() || errors.iter().any(|w| w.code != 11000) {
                    return Err(map_err(e));
                }
                let present = errors.len() as u64;
                Ok(Imported {
                    inserted: total.saturating_sub(present),
                    present,
                })
            }
        }
    }

    async fn update_inner(
        &self,
        filter: &Lowered,
        valid: &ValidUpdate,
        only_first: bool,
    ) -> Result<UpdateResult> {
        let valid = valid.clone();
        let filter = compile(filter, Target::Documents)?;
        let now = self.clock.now();
        let change = compile_update(&valid, now)?;
        if !only_first {
            // Which documents change is decided by the API's rule (numerically equal values of
            // another type are no change; MongoDB would count them), then only those are written.
            return self
                .atomically(false, move |c| {
                    let (filter, change, valid) = (filter.clone(), change.clone(), valid.clone());
                    Box::pin(async move {
                        let docs = c.find_raw(filter, None, 0, None).await?;
                        let matched = docs.len() as u64;
                        let mut changed = Vec::new();
                        for d in docs {
                            let id = d.get(ID_FIELD).cloned().unwrap_or(Bson::Null);
                            let mut api = from_bson_document(d)?;
                            if valid.apply(&mut api, now)? {
                                changed.push(id);
                            }
                        }
                        if changed.is_empty() {
                            return Ok(UpdateResult {
                                matched,
                                modified: 0,
                            });
                        }
                        let modified = changed.len() as u64;
                        run!(
                            c,
                            c.inner
                                .update_many(doc! { ID_FIELD: { "$in": changed } }, change)
                        )
                        .map_err(map_err)?;
                        Ok(UpdateResult { matched, modified })
                    })
                })
                .await;
        }
        // The API updates the first match in (createdAt, _id) order; MongoDB's update_one
        // takes any, so find the target first, then update it if it still matches.
        for _ in 0..UPDATE_ONE_ATTEMPTS {
            let first = self
                .find_raw(filter.clone(), Some(keyset_sort(1)), 0, Some(1))
                .await?;
            let Some(target) = first.into_iter().next() else {
                return Ok(UpdateResult::default());
            };
            let id = target.get(ID_FIELD).cloned().unwrap_or(Bson::Null);
            let mut api = from_bson_document(target)?;
            if !valid.apply(&mut api, now)? {
                return Ok(UpdateResult {
                    matched: 1,
                    modified: 0,
                });
            }
            let pinned = doc! { "$and": [ { ID_FIELD: id }, filter.clone() ] };
            let r = run!(self, self.inner.update_one(pinned, change.clone())).map_err(map_err)?;
            if r.matched_count == 1 {
                return Ok(UpdateResult {
                    matched: 1,
                    modified: r.modified_count,
                });
            }
        }
        Err(Error::transient(
            "update_one: the first matching document kept changing under concurrent writers; retry",
        ))
    }

    async fn insert_idempotent_inner(
        &self,
        documents: Vec<KeyedPrepared>,
    ) -> Result<Vec<IdempotentOutcome>> {
        let created_at = self.clock.now();
        let mut prepared = Vec::with_capacity(documents.len());
        for kd in documents {
            let (key, document) = kd.into_parts();
            let (id, body) = document.into_parts();
            let mut stored = Self::stored(&id, &body, created_at)?;
            stored.insert(IDEMPOTENCY_FIELD, key.clone());
            prepared.push((key, id, stored));
        }
        let keys: Vec<String> = prepared.iter().map(|(k, _, _)| k.clone()).collect();
        let existing = self
            .find_raw(doc! { IDEMPOTENCY_FIELD: { "$in": &keys } }, None, 0, None)
            .await?;
        let mut owner: HashMap<String, DocumentId> = HashMap::new();
        for d in existing {
            if let (Ok(key), Ok(id)) = (d.get_str(IDEMPOTENCY_FIELD), d.get_object_id(ID_FIELD)) {
                owner.insert(key.to_owned(), DocumentId::parse(&id.to_hex())?);
            }
        }
        let mut outcomes = Vec::with_capacity(prepared.len());
        let mut fresh = Vec::new();
        for (key, id, stored) in prepared {
            match owner.get(&key) {
                Some(first) => outcomes.push(IdempotentOutcome::Duplicate(first.clone())),
                None => {
                    owner.insert(key, id.clone());
                    outcomes.push(IdempotentOutcome::Inserted(Inserted { id, created_at }));
                    fresh.push(stored);
                }
            }
        }
        self.insert_prepared(fresh).await?;
        Ok(outcomes)
    }
}

/// `{createdAt: dir, _id: dir}`: the keyset order of pages and of `update_one`.
fn keyset_sort(dir: i32) -> bson::Document {
    doc! { CREATED_AT_FIELD: dir, ID_FIELD: dir }
}

/// The server-side sort for keys on `_id`/`createdAt` only (whose values MongoDB and the API
/// order identically), ending with `_id` ascending as the API's tie-break. `None` when a key
/// is on a user path: those sort in the provider, because MongoDB orders arrays by their
/// elements and objects field by field, where the API treats each bracket as equal.
fn server_sort(keys: &[(FieldPath, Direction)]) -> Option<bson::Document> {
    let mut sort = bson::Document::new();
    for (path, dir) in keys {
        let field = match path.reserved_root() {
            Some(ReservedField::Id) if path.segments().len() == 1 => ID_FIELD,
            Some(ReservedField::CreatedAt) if path.segments().len() == 1 => CREATED_AT_FIELD,
            _ => return None,
        };
        if !sort.contains_key(field) {
            sort.insert(field, if *dir == Direction::Descending { -1 } else { 1 });
        }
    }
    if !sort.contains_key(ID_FIELD) {
        sort.insert(ID_FIELD, 1);
    }
    Some(sort)
}

#[async_trait]
impl RawCollection for MongoCollection {
    fn name(&self) -> &str {
        &self.name
    }

    fn operation_labels(&self) -> OperationLabels {
        OperationLabels {
            provider: PROVIDER,
            collection: self.role,
        }
    }

    fn native_aggregation(&self) -> Option<&dyn NativeAggregation> {
        Some(self)
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        Some(self)
    }

    async fn insert(&self, documents: Vec<Prepared>) -> Result<Vec<Inserted>> {
        let created_at = self.clock.now();
        let mut out = Vec::with_capacity(documents.len());
        let mut stored = Vec::with_capacity(documents.len());
        for d in documents {
            stored.push(Self::stored(d.id(), d.body(), created_at)?);
            out.push(Inserted {
                id: d.into_parts().0,
                created_at,
            });
        }
        if stored.len() <= 1 {
            self.insert_prepared(stored).await?;
        } else {
            self.atomically(false, move |c| Box::pin(c.insert_prepared(stored.clone())))
                .await?;
        }
        Ok(out)
    }

    async fn import(&self, documents: Vec<ImportDocument>) -> Result<Imported> {
        let stored = documents
            .iter()
            .map(|d| Self::stored(&d.id, &d.body, d.created_at))
            .collect::<Result<Vec<_>>>()?;
        self.import_prepared(stored).await
    }

    async fn insert_idempotent(
        &self,
        documents: Vec<KeyedPrepared>,
    ) -> Result<Vec<IdempotentOutcome>> {
        self.atomically(true, move |c| {
            Box::pin(c.insert_idempotent_inner(documents.clone()))
        })
        .await
    }

    async fn find(&self, filter: &Lowered, options: &ValidFind) -> Result<Vec<Document>> {
        let f = compile(filter, Target::Documents)?;
        let keys = options.sort();
        // Within i64: ValidFind checked it.
        let limit = options.limit().map(|l| l as i64);
        if let Some(sort) = server_sort(keys) {
            if limit == Some(0) {
                return Ok(Vec::new());
            }
            return self
                .find_documents(f, Some(sort), options.skip(), limit)
                .await;
        }
        let mut docs = self.find_documents(f, None, 0, None).await?;
        sort_documents(&mut docs, keys);
        let skip = usize::try_from(options.skip()).unwrap_or(usize::MAX);
        let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(docs.into_iter().skip(skip).take(take).collect())
    }

    async fn find_page(&self, filter: &Lowered, page: ValidPage<'_>) -> Result<Page> {
        let page = page.request();
        let mut f = compile(filter, Target::Documents)?;
        let (cmp, dir) = match page.direction {
            Direction::Ascending => ("$gt", 1),
            Direction::Descending => ("$lt", -1),
        };
        if let Some(after) = &page.after {
            let t = bson_date(after.created_at);
            let id = object_id(&after.id)?;
            let keyset = doc! { "$or": [
                { CREATED_AT_FIELD: { cmp: t } },
                { CREATED_AT_FIELD: t, ID_FIELD: { cmp: id } },
            ] };
            f = doc! { "$and": [f, keyset] };
        }
        let raw = self
            .find_raw(f, Some(keyset_sort(dir)), 0, Some(i64::from(page.size) + 1))
            .await?;
        let more = raw.len() > page.size as usize;
        let mut documents = Vec::with_capacity(raw.len().min(page.size as usize));
        let mut last = None;
        for d in raw.into_iter().take(page.size as usize) {
            let created_at = chrono_date(
                d.get_datetime(CREATED_AT_FIELD)
                    .copied()
                    .map_err(|_| Error::permanent("stored document lacks a createdAt date"))?,
            )?;
            let id = d
                .get_object_id(ID_FIELD)
                .map_err(|_| Error::permanent("stored document lacks an ObjectId _id"))?;
            last = Some(PageToken {
                created_at,
                id: DocumentId::parse(&id.to_hex())?,
            });
            documents.push(from_bson_document(d)?);
        }
        Ok(Page {
            documents,
            next: if more { last } else { None },
        })
    }

    async fn count(&self, filter: &Lowered) -> Result<u64> {
        let f = compile(filter, Target::Documents)?;
        run!(self, self.inner.count_documents(f)).map_err(map_err)
    }

    async fn distinct(&self, path: &FieldPath, filter: &Lowered) -> Result<Vec<Value>> {
        // The values, read here: the `distinct` command de-duplicates numbers and orders them
        // otherwise than the API's rule, which the front applies.
        let docs = self
            .find_documents(compile(filter, Target::Documents)?, None, 0, None)
            .await?;
        let mut values = Vec::new();
        for d in &docs {
            values.extend(values_at(d, path).into_iter().cloned());
        }
        Ok(values)
    }

    async fn update(
        &self,
        filter: &Lowered,
        update: &ValidUpdate,
        only_first: bool,
    ) -> Result<UpdateResult> {
        self.update_inner(filter, update, only_first).await
    }

    async fn delete_many(&self, filter: &Lowered) -> Result<u64> {
        let f = compile(filter, Target::Documents)?;
        let r = run!(self, self.inner.delete_many(f)).map_err(map_err)?;
        Ok(r.deleted_count)
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        Ok(self.clock.now())
    }
}

#[async_trait]
impl ChangeFeed for MongoCollection {
    async fn watch(&self, options: WatchOptions) -> Result<ChangeStream> {
        self.changes.watch(self, options).await
    }

    async fn checkpoint(&self, consumer: Consumer<'_>, token: &ResumeToken) -> Result<()> {
        self.changes
            .checkpoint(self, consumer.as_str(), token)
            .await
    }

    async fn lag(&self, consumer: Consumer<'_>, filter: &Filter) -> Result<Lag> {
        self.changes.lag(self, consumer.as_str(), filter).await
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.changes.consumers(self).await
    }

    async fn delete_consumer(&self, consumer: Consumer<'_>) -> Result<bool> {
        self.changes.delete_consumer(self, consumer.as_str()).await
    }

    async fn reset_consumer(&self, consumer: Consumer<'_>, to: StartFrom) -> Result<()> {
        self.changes
            .reset_consumer(self, consumer.as_str(), to)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reserved_keys_sort_on_the_server() {
        let k = |p: &str, d| (FieldPath::parse(p).unwrap(), d);
        assert_eq!(
            server_sort(&[k("createdAt", Direction::Descending)]),
            Some(doc! { "createdAt": -1, "_id": 1 })
        );
        assert_eq!(server_sort(&[k("a", Direction::Ascending)]), None);
        assert_eq!(server_sort(&[]), Some(doc! { "_id": 1 }));
    }
}
