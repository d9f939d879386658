//! The [`Collection`] implementation over one table, usable from the pool or inside a
//! transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datastore_api::change::{
    ChangeStream, ConsumerInfo, Lag, ResumeToken, StartFrom, WatchOptions,
};
use datastore_api::metrics::OperationLabels;
use datastore_api::raw::{
    ChangeFeed, Consumer, KeyedPrepared, Prepared, RawCollection, ValidFind, ValidPage,
};
use datastore_api::value::{date_value, CREATED_AT_FIELD, ID_FIELD};
use datastore_api::{
    Direction, Document, DocumentId, Error, FieldPath, Filter, IdempotentOutcome, ImportDocument,
    Imported, Inserted, Lowered, Page, PageToken, Result, UpdateResult, ValidUpdate, Value,
};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Mutex;

use crate::compile::{jsonpaths, push_filter, push_order_by, push_sort_lateral};
use crate::error::map_err;
use crate::wakeup::TickWakeups;

/// The provider label of metrics.
const PROVIDER: &str = "postgresql";

/// The tables behind the two collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `health_events`
    HealthEvents,
    /// `maintenance_events`
    MaintenanceEvents,
}

impl Table {
    /// The SQL table name.
    pub fn name(self) -> &'static str {
        match self {
            Table::HealthEvents => "health_events",
            Table::MaintenanceEvents => "maintenance_events",
        }
    }
}

pub(crate) type SharedTx = Arc<Mutex<Option<sqlx::Transaction<'static, Postgres>>>>;

/// Where statements run.
#[derive(Clone)]
pub(crate) enum Exec {
    Pool(PgPool),
    Tx(SharedTx),
}

/// A table as a [`Collection`](datastore_api::Collection) (its [`RawCollection`] side).
#[derive(Clone)]
pub struct PgCollection {
    table: Table,
    exec: Exec,
    capture: bool,
    /// The store's tick notifications, for its change streams (none inside transactions).
    wakeups: Option<Arc<TickWakeups>>,
}

/// Runs `$body` with `$conn: &mut PgConnection` from the pool or the open transaction. Inside a
/// transaction the statement runs under a savepoint, so a failed operation (a duplicate key, bad
/// input) is undone alone and the caller's transaction stays usable.
macro_rules! with_conn {
    ($self:ident, $conn:ident => $body:expr) => {{
        match &$self.exec {
            Exec::Pool(pool) => {
                let mut checkout = crate::checkout::Checkout::acquire(pool).await?;
                let out: Result<_> = async {
                    let $conn: &mut PgConnection = checkout.conn();
                    Ok($body)
                }
                .await;
                // Reached only if the call was not given up: back to the pool.
                checkout.finish();
                out?
            }
            Exec::Tx(tx) => {
                let mut guard = tx.lock().await;
                let open = guard
                    .as_mut()
                    .ok_or_else(|| Error::permanent("the transaction has already ended"))?;
                let mut savepoint = open.begin().await.map_err(map_err)?;
                let out: Result<_> = async {
                    let $conn: &mut PgConnection = &mut savepoint;
                    Ok($body)
                }
                .await;
                match out {
                    Ok(v) => {
                        savepoint.commit().await.map_err(map_err)?;
                        v
                    }
                    Err(e) => {
                        let _ = savepoint.rollback().await;
                        return Err(e);
                    }
                }
            }
        }
    }};
}

fn row_document(row: &PgRow) -> Result<Document> {
    let id: String = row.try_get("id").map_err(map_err)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(map_err)?;
    let body: Value = row.try_get("document").map_err(map_err)?;
    let mut doc = match body {
        Value::Object(m) => m,
        _ => {
            return Err(Error::permanent(format!(
                "stored document {id} is not an object"
            )))
        }
    };
    doc.insert(ID_FIELD.to_owned(), Value::String(id));
    doc.insert(CREATED_AT_FIELD.to_owned(), date_value(created_at)?);
    Ok(doc)
}

/// How often `update_one` re-reads a document that a concurrent writer changed between its
/// read and its write before giving up with a transient error.
const OPTIMISTIC_ATTEMPTS: usize = 32;

/// What a statement did, for the change log.
#[derive(Clone, Copy)]
enum Capture {
    Insert,
    Update,
    Delete,
}

/// The CTE that records one change row per document returned by `source`, in the same
/// statement (so in the same transaction) as the write. Rows are logged in `(createdAt, _id)`
/// order so that one statement's changes have a deterministic order.
fn capture(table: Table, what: Capture, source: &str) -> String {
    let (op, doc, fields) = match what {
        Capture::Insert => ("i", "document", "NULL::text[], NULL::text[]"),
        Capture::Update => (
            "u",
            "document",
            "ARRAY(SELECT jsonb_array_elements_text(upd)), ARRAY(SELECT jsonb_array_elements_text(rem))",
        ),
        Capture::Delete => ("d", "NULL::jsonb", "NULL::text[], NULL::text[]"),
    };
    format!(
        ", changes AS (INSERT INTO datastore_changes \
         (collection, operation, document_id, created_at, full_document, updated_fields, removed_fields) \
         SELECT '{table}', '{op}', id, created_at, {doc}, {fields} FROM {source} ORDER BY created_at, id)",
        table = table.name()
    )
}

fn inserted(row: &PgRow) -> Result<Inserted> {
    let id: String = row.try_get("id").map_err(map_err)?;
    Ok(Inserted {
        id: DocumentId::parse(&id)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

impl PgCollection {
    /// The pool, for calls that are not available inside a transaction (consumer admin).
    fn admin_pool(&self, call: &str) -> Result<&PgPool> {
        match &self.exec {
            Exec::Pool(pool) => Ok(pool),
            Exec::Tx(_) => Err(Error::invalid_input(format!(
                "{call} is not available inside a transaction"
            ))),
        }
    }

    pub(crate) fn new(table: Table, exec: Exec, capture: bool) -> Self {
        PgCollection {
            table,
            exec,
            capture,
            wakeups: None,
        }
    }

    /// The same collection, its change streams woken by `wakeups`.
    pub(crate) fn with_wakeups(self, wakeups: Arc<TickWakeups>) -> Self {
        PgCollection {
            wakeups: Some(wakeups),
            ..self
        }
    }

    /// The change-log CTE for this collection, or nothing when capture is off.
    fn capture(&self, what: Capture, source: &str) -> String {
        if self.capture {
            capture(self.table, what, source)
        } else {
            String::new()
        }
    }

    fn select_where<'a>(&self, lowered: &Lowered) -> Result<QueryBuilder<'a, Postgres>> {
        let mut qb = QueryBuilder::new(format!(
            "SELECT id, created_at, document FROM {} WHERE ",
            self.table.name()
        ));
        push_filter(&mut qb, lowered)?;
        Ok(qb)
    }
}

async fn insert_rows(
    conn: &mut PgConnection,
    table: Table,
    capture_sql: String,
    rows: Vec<(DocumentId, Document)>,
) -> Result<Vec<Inserted>> {
    let (ids, docs): (Vec<String>, Vec<Value>) = rows
        .into_iter()
        .map(|(id, d)| (id.to_string(), Value::Object(d)))
        .unzip();
    let sql = format!(
        "WITH ins AS (INSERT INTO {t} (id, document) SELECT * FROM unnest($1::text[], $2::jsonb[]) \
         RETURNING id, created_at, document){capture} SELECT id, created_at FROM ins",
        t = table.name(),
        capture = capture_sql,
    );
    let out = sqlx::query(&sql)
        .bind(&ids)
        .bind(&docs)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
    let mut by_id: HashMap<String, Inserted> = HashMap::with_capacity(out.len());
    for row in &out {
        let ins = inserted(row)?;
        by_id.insert(ins.id.to_string(), ins);
    }
    ids.iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| Error::permanent("insert did not return every row"))
        })
        .collect()
}

/// Writes imported rows with their own ids and insert times, skipping any that a unique key
/// (the id, a maintenance event's `eventId`, an idempotency key) already holds. Each row
/// written is an insert to change streams, as MongoDB's oplog records an imported document.
async fn import_rows(
    conn: &mut PgConnection,
    table: Table,
    capture_sql: String,
    documents: Vec<ImportDocument>,
) -> Result<Imported> {
    let total = documents.len() as u64;
    let mut ids = Vec::with_capacity(documents.len());
    let mut times = Vec::with_capacity(documents.len());
    let mut bodies = Vec::with_capacity(documents.len());
    for d in documents {
        ids.push(d.id.to_string());
        times.push(d.created_at);
        bodies.push(Value::Object(d.body));
    }
    let sql = format!(
        "WITH ins AS (INSERT INTO {t} (id, created_at, document) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[]) ON CONFLICT DO NOTHING \
         RETURNING id, created_at, document){capture_sql} SELECT count(*) FROM ins",
        t = table.name()
    );
    let inserted: i64 = sqlx::query_scalar(&sql)
        .bind(&ids)
        .bind(&times)
        .bind(&bodies)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let inserted = u64::try_from(inserted).unwrap_or(0);
    Ok(Imported {
        inserted,
        present: total.saturating_sub(inserted),
    })
}

#[async_trait]
impl RawCollection for PgCollection {
    fn name(&self) -> &str {
        self.table.name()
    }

    fn operation_labels(&self) -> OperationLabels {
        OperationLabels {
            provider: PROVIDER,
            collection: self.table.name(),
        }
    }

    fn change_feed(&self) -> Option<&dyn ChangeFeed> {
        Some(self)
    }

    async fn insert(&self, documents: Vec<Prepared>) -> Result<Vec<Inserted>> {
        let rows = documents.into_iter().map(Prepared::into_parts).collect();
        with_conn!(self, conn => insert_rows(conn, self.table, self.capture(Capture::Insert, "ins"), rows).await)
    }

    async fn import(&self, documents: Vec<ImportDocument>) -> Result<Imported> {
        let capture = self.capture(Capture::Insert, "ins");
        Ok(with_conn!(self, conn => import_rows(conn, self.table, capture, documents).await?))
    }

    async fn insert_idempotent(
        &self,
        documents: Vec<KeyedPrepared>,
    ) -> Result<Vec<IdempotentOutcome>> {
        self.insert_idempotent_inner(documents).await
    }

    async fn find(&self, filter: &Lowered, options: &ValidFind) -> Result<Vec<Document>> {
        let keys = options.sort();
        let mut qb = QueryBuilder::new(format!(
            "SELECT id, created_at, document FROM {}",
            self.table.name()
        ));
        push_sort_lateral(&mut qb, keys);
        qb.push(" WHERE ");
        push_filter(&mut qb, filter)?;
        push_order_by(&mut qb, keys);
        // Both within i64: ValidFind checked them.
        if let Some(limit) = options.limit() {
            qb.push(" LIMIT ").push_bind(limit as i64);
        }
        if options.skip() > 0 {
            qb.push(" OFFSET ").push_bind(options.skip() as i64);
        }
        let rows = with_conn!(self, conn => qb.build().fetch_all(conn).await.map_err(map_err)?);
        rows.iter().map(row_document).collect()
    }

    async fn find_page(&self, filter: &Lowered, page: ValidPage<'_>) -> Result<Page> {
        let page = page.request();
        let mut qb = self.select_where(filter)?;
        let (cmp, order) = match page.direction {
            Direction::Ascending => (">", "ASC"),
            Direction::Descending => ("<", "DESC"),
        };
        if let Some(after) = &page.after {
            qb.push(format!(" AND (created_at, id) {cmp} ("))
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id.to_string())
                .push(")");
        }
        qb.push(format!(" ORDER BY created_at {order}, id {order} LIMIT "))
            .push_bind(i64::from(page.size) + 1);
        let rows = with_conn!(self, conn => qb.build().fetch_all(conn).await.map_err(map_err)?);
        let more = rows.len() > page.size as usize;
        let mut documents = Vec::with_capacity(rows.len().min(page.size as usize));
        let mut last = None;
        for row in rows.iter().take(page.size as usize) {
            let id: String = row.try_get("id").map_err(map_err)?;
            let created_at: DateTime<Utc> = row.try_get("created_at").map_err(map_err)?;
            last = Some(PageToken {
                created_at,
                id: DocumentId::parse(&id)?,
            });
            documents.push(row_document(row)?);
        }
        Ok(Page {
            documents,
            next: if more { last } else { None },
        })
    }

    async fn count(&self, filter: &Lowered) -> Result<u64> {
        let mut qb =
            QueryBuilder::new(format!("SELECT count(*) FROM {} WHERE ", self.table.name()));
        push_filter(&mut qb, filter)?;
        let n: i64 = with_conn!(self, conn => qb.build_query_scalar().fetch_one(conn).await.map_err(map_err)?);
        Ok(n as u64)
    }

    async fn distinct(&self, path: &FieldPath, filter: &Lowered) -> Result<Vec<Value>> {
        let select = match (path.reserved_root(), path.segments().len()) {
            (Some(datastore_api::ReservedField::Id), 1) => "to_jsonb(id)".to_owned(),
            (Some(datastore_api::ReservedField::CreatedAt), 1) => {
                "jsonb_build_object('$date', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))"
                    .to_owned()
            }
            (Some(_), _) => return Ok(Vec::new()),
            (None, _) => String::new(),
        };
        let mut qb = QueryBuilder::new("SELECT ");
        let by_path = select.is_empty();
        if by_path {
            qb.push("jsonb_path_query(document, p::jsonpath)");
        } else {
            qb.push(select);
        }
        qb.push(format!(" AS v FROM {}", self.table.name()));
        if by_path {
            // Every way of resolving the path (array indexes); the values are de-duplicated
            // below.
            qb.push(" CROSS JOIN unnest(")
                .push_bind(jsonpaths(path, None))
                .push("::text[]) p");
        }
        qb.push(" WHERE ");
        push_filter(&mut qb, filter)?;
        let values: Vec<Value> = with_conn!(self, conn => qb.build_query_scalar().fetch_all(conn).await.map_err(map_err)?);
        Ok(values)
    }

    async fn update(
        &self,
        filter: &Lowered,
        update: &ValidUpdate,
        only_first: bool,
    ) -> Result<UpdateResult> {
        self.update_rows(filter, update, only_first).await
    }

    async fn delete_many(&self, filter: &Lowered) -> Result<u64> {
        let mut qb = QueryBuilder::new(format!(
            "WITH del AS (DELETE FROM {} WHERE ",
            self.table.name()
        ));
        push_filter(&mut qb, filter)?;
        qb.push(format!(
            " RETURNING id, created_at){} SELECT count(*) FROM del",
            self.capture(Capture::Delete, "del")
        ));
        let n: i64 = with_conn!(self, conn => qb.build_query_scalar().fetch_one(conn).await.map_err(map_err)?);
        Ok(n as u64)
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        with_conn!(self, conn => sqlx::query_scalar("SELECT now()").fetch_one(conn).await.map_err(map_err))
    }
}

#[async_trait]
impl ChangeFeed for PgCollection {
    async fn watch(&self, options: WatchOptions) -> Result<ChangeStream> {
        match &self.exec {
            Exec::Pool(pool) => {
                let wakeups = self.wakeups.as_ref().map(|w| w.subscribe());
                crate::changes::watch(pool, self.table, options, wakeups).await
            }
            Exec::Tx(_) => Err(Error::invalid_input(
                "watch is not available inside a transaction",
            )),
        }
    }

    async fn checkpoint(&self, consumer: Consumer<'_>, token: &ResumeToken) -> Result<()> {
        match &self.exec {
            Exec::Pool(pool) => {
                crate::changes::checkpoint(pool, self.table, consumer.as_str(), token).await
            }
            Exec::Tx(_) => Err(Error::invalid_input(
                "checkpoint is not available inside a transaction",
            )),
        }
    }

    async fn lag(&self, consumer: Consumer<'_>, filter: &Filter) -> Result<Lag> {
        match &self.exec {
            Exec::Pool(pool) => {
                crate::changes::lag(pool, self.table, consumer.as_str(), filter).await
            }
            Exec::Tx(_) => Err(Error::invalid_input(
                "lag is not available inside a transaction",
            )),
        }
    }

    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        crate::changes::consumers(self.admin_pool("consumers")?, self.table).await
    }

    async fn delete_consumer(&self, consumer: Consumer<'_>) -> Result<bool> {
        crate::changes::delete_consumer(
            self.admin_pool("delete_consumer")?,
            self.table,
            consumer.as_str(),
        )
        .await
    }

    async fn reset_consumer(&self, consumer: Consumer<'_>, to: StartFrom) -> Result<()> {
        crate::changes::reset_consumer(
            self.admin_pool("reset_consumer")?,
            self.table,
            consumer.as_str(),
            to,
        )
        .await
    }
}

impl PgCollection {
    async fn insert_idempotent_inner(
        &self,
        documents: Vec<KeyedPrepared>,
    ) -> Result<Vec<IdempotentOutcome>> {
        let mut first_of_key: HashMap<String, usize> = HashMap::new();
        let mut prepared = Vec::with_capacity(documents.len());
        for (i, kd) in documents.into_iter().enumerate() {
            let (key, document) = kd.into_parts();
            let (id, body) = document.into_parts();
            first_of_key.entry(key.clone()).or_insert(i);
            prepared.push((key, id, body));
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let unique: Vec<&(String, DocumentId, Document)> = prepared
            .iter()
            .enumerate()
            .filter(|(i, (k, _, _))| first_of_key[k] == *i)
            .map(|(_, p)| p)
            .collect();
        let keys: Vec<String> = unique.iter().map(|(k, _, _)| k.clone()).collect();
        let ids: Vec<String> = unique.iter().map(|(_, id, _)| id.to_string()).collect();
        let docs: Vec<Value> = unique
            .iter()
            .map(|(_, _, d)| Value::Object(d.clone()))
            .collect();
        let table = self.table.name();
        let (new_rows, existing) = with_conn!(self, conn => {
            let mut tx = conn.begin().await.map_err(map_err)?;
            let new_rows = sqlx::query(&format!(
                "WITH ins AS (INSERT INTO {table} (id, idempotency_key, document) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, created_at, idempotency_key, document){} \
                 SELECT id, created_at, idempotency_key FROM ins",
                self.capture(Capture::Insert, "ins")
            ))
            .bind(&ids)
            .bind(&keys)
            .bind(&docs)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let existing = sqlx::query(&format!(
                "SELECT id, idempotency_key FROM {table} WHERE idempotency_key = ANY($1::text[])"
            ))
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            (new_rows, existing)
        });
        let mut fresh: HashMap<String, Inserted> = HashMap::new();
        for row in &new_rows {
            let key: String = row.try_get("idempotency_key").map_err(map_err)?;
            fresh.insert(key, inserted(row)?);
        }
        let mut owner: HashMap<String, DocumentId> = HashMap::new();
        for row in &existing {
            let key: String = row.try_get("idempotency_key").map_err(map_err)?;
            let id: String = row.try_get("id").map_err(map_err)?;
            owner.insert(key, DocumentId::parse(&id)?);
        }
        prepared
            .iter()
            .enumerate()
            .map(|(i, (key, _, _))| {
                if first_of_key[key] == i {
                    if let Some(ins) = fresh.remove(key) {
                        return Ok(IdempotentOutcome::Inserted(ins));
                    }
                }
                owner
                    .get(key)
                    .cloned()
                    .map(IdempotentOutcome::Duplicate)
                    .ok_or_else(|| {
                        Error::transient("an idempotency key vanished during insert; retry")
                    })
            })
            .collect()
    }

    /// Read-modify-write under row locks: the update semantics live in one place
    /// ([`datastore_api::ValidUpdate::apply`]) and are identical on every backend.
    async fn update_rows(
        &self,
        lowered: &Lowered,
        valid: &ValidUpdate,
        only_first: bool,
    ) -> Result<UpdateResult> {
        if let (true, Exec::Pool(pool)) = (only_first, &self.exec) {
            return self.update_first_optimistic(pool, lowered, valid).await;
        }
        let table = self.table.name();
        let mut qb = QueryBuilder::new(format!(
            "SELECT id, created_at, document, now() AS server_now FROM {table} WHERE "
        ));
        push_filter(&mut qb, lowered)?;
        qb.push(" ORDER BY created_at, id");
        if only_first {
            qb.push(" LIMIT 1");
        }
        qb.push(" FOR UPDATE");
        with_conn!(self, conn => {
            let mut tx = conn.begin().await.map_err(map_err)?;
            let rows = qb.build().fetch_all(&mut *tx).await.map_err(map_err)?;
            let mut ids = Vec::new();
            let mut docs = Vec::new();
            let mut updated = Vec::new();
            let mut removed = Vec::new();
            for row in &rows {
                let now: DateTime<Utc> = row.try_get("server_now").map_err(map_err)?;
                let before = row_document(row)?;
                let mut doc = before.clone();
                if valid.apply(&mut doc, now)? {
                    let (upd, rem) = valid.changed_paths(&before, &doc);
                    updated.push(serde_json::json!(upd));
                    removed.push(serde_json::json!(rem));
                    doc.remove(ID_FIELD);
                    doc.remove(CREATED_AT_FIELD);
                    ids.push(row.try_get::<String, _>("id").map_err(map_err)?);
                    docs.push(Value::Object(doc));
                }
            }
            if !ids.is_empty() {
                sqlx::query(&format!(
                    "WITH v AS (SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::jsonb[]) AS v(id, doc, upd, rem)), \
                     up AS (UPDATE {table} AS t SET document = v.doc FROM v WHERE t.id = v.id \
                     RETURNING t.id, t.created_at, t.document, v.upd, v.rem){} SELECT count(*) FROM up",
                    self.capture(Capture::Update, "up")
                ))
                .bind(&ids)
                .bind(&docs)
                .bind(&updated)
                .bind(&removed)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)?;
            Ok(UpdateResult { matched: rows.len() as u64, modified: ids.len() as u64 })
        })
    }

    /// `update_one` outside a transaction in two autocommit statements instead of a locking
    /// transaction's four: read the first match with its row version (`xmin`), apply the update
    /// in Rust (the one shared implementation), then write it only if the row version is
    /// unchanged. A concurrent writer makes the write match nothing (PostgreSQL re-checks the
    /// condition on the newest version after waiting for its lock), and the read is retried.
    async fn update_first_optimistic(
        &self,
        pool: &PgPool,
        lowered: &Lowered,
        valid: &ValidUpdate,
    ) -> Result<UpdateResult> {
        let table = self.table.name();
        let write_sql = format!(
            "WITH up AS (UPDATE {table} AS t SET document = $2 WHERE t.id = $1 AND t.xmin::text = $3 \
             RETURNING t.id, t.created_at, t.document, $4::jsonb AS upd, $5::jsonb AS rem){} \
             SELECT count(*) FROM up",
            self.capture(Capture::Update, "up")
        );
        let mut checkout = crate::checkout::Checkout::acquire(pool).await?;
        let out = self
            .update_first_on(checkout.conn(), lowered, valid, &write_sql)
            .await;
        checkout.finish();
        out
    }

    /// [`PgCollection::update_first_optimistic`]'s reads and writes on one connection.
    async fn update_first_on(
        &self,
        conn: &mut PgConnection,
        lowered: &Lowered,
        valid: &ValidUpdate,
        write_sql: &str,
    ) -> Result<UpdateResult> {
        let table = self.table.name();
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let mut qb = QueryBuilder::new(format!(
                "SELECT id, created_at, document, xmin::text AS version, now() AS server_now FROM {table} WHERE "
            ));
            push_filter(&mut qb, lowered)?;
            qb.push(" ORDER BY created_at, id LIMIT 1");
            let Some(row) = qb
                .build()
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?
            else {
                return Ok(UpdateResult::default());
            };
            let now: DateTime<Utc> = row.try_get("server_now").map_err(map_err)?;
            let before = row_document(&row)?;
            let mut doc = before.clone();
            if !valid.apply(&mut doc, now)? {
                return Ok(UpdateResult {
                    matched: 1,
                    modified: 0,
                });
            }
            let (upd, rem) = valid.changed_paths(&before, &doc);
            doc.remove(ID_FIELD);
            doc.remove(CREATED_AT_FIELD);
            let id: String = row.try_get("id").map_err(map_err)?;
            let version: String = row.try_get("version").map_err(map_err)?;
            let written: i64 = sqlx::query_scalar(write_sql)
                .bind(&id)
                .bind(Value::Object(doc))
                .bind(&version)
                .bind(serde_json::json!(upd))
                .bind(serde_json::json!(rem))
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?;
            if written == 1 {
                return Ok(UpdateResult {
                    matched: 1,
                    modified: 1,
                });
            }
        }
        Err(Error::transient(
            "update_one: the first matching document kept changing under concurrent writers; retry",
        ))
    }
}
