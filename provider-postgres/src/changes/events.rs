//! Change rows as change events: the event document filters see (built in SQL), the
//! operation prefilter, and decoding a row.

use chrono::{DateTime, Utc};
use datastore_api::change::{full_document, ChangeEvent, OperationType};
use datastore_api::{CmpOp, DocumentId, Lowered, Result, Scalar, Value};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::position::Position;
use crate::compile::Target;
use crate::error::map_err;

/// Change-event documents, built per change row in the `ev` lateral.
pub(super) const EVENTS: Target = Target {
    doc: "ev.doc",
    reserved_columns: false,
};

pub(super) const EVENT_DOCUMENT: &str = "jsonb_build_object(\
    'operationType', CASE c.operation WHEN 'i' THEN 'insert' WHEN 'u' THEN 'update' WHEN 'r' THEN 'replace' ELSE 'delete' END, \
    'documentKey', jsonb_build_object('_id', c.document_id)) \
 || CASE WHEN c.full_document IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('fullDocument', c.full_document \
    || jsonb_build_object('_id', c.document_id, 'createdAt', jsonb_build_object('$date', \
       to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))) END \
 || CASE WHEN c.operation = 'u' THEN jsonb_build_object('updateDescription', jsonb_build_object(\
    'updatedFields', to_jsonb(coalesce(c.updated_fields, '{}')), 'removedFields', to_jsonb(coalesce(c.removed_fields, '{}')))) \
    ELSE '{}'::jsonb END";

/// A batch spanning more than this many reads' worth of sequences is read by walking the
/// sequence index from its first read on.
pub(super) const LARGE_BATCH_READS: i64 = 4;

/// Joins each change row to its event document, `ev.doc`. `OFFSET 0` keeps the subquery from
/// being flattened: flattened, the document is rebuilt for every `ev.doc` of the filter (a
/// dozen per row for the NVSentinel watchers), which made batch reads several times slower.
pub(super) fn event_lateral() -> String {
    format!(" CROSS JOIN LATERAL (SELECT {EVENT_DOCUMENT} AS doc OFFSET 0) ev")
}

/// How `datastore_changes.operation` encodes each operation (the capture CTEs in `collection`
/// write these codes, and `EVENT_DOCUMENT` names them).
pub(super) const OPERATION_CODES: [(OperationType, &str); 4] = [
    (OperationType::Insert, "i"),
    (OperationType::Update, "u"),
    (OperationType::Replace, "r"),
    (OperationType::Delete, "d"),
];

/// The operation codes (`c.operation`) a change must have for `filter` to match it, when the
/// filter pins `operationType` (every NVSentinel watcher does); `None` when it does not.
///
/// Reads test them on the column before building the event document. The filter itself still
/// decides: this only skips rows it would reject anyway.
pub(super) fn implied_operations(filter: &Lowered) -> Option<Vec<&'static str>> {
    match filter {
        Lowered::False => Some(Vec::new()),
        Lowered::Cmp {
            path,
            op: CmpOp::Eq,
            value: Scalar::String(name),
        } if path.as_str() == "operationType" => Some(
            OPERATION_CODES
                .iter()
                .filter(|(op, _)| op.as_str() == name)
                .map(|(_, code)| *code)
                .collect(),
        ),
        Lowered::And(members) => members
            .iter()
            .filter_map(implied_operations)
            .reduce(|a, b| a.into_iter().filter(|c| b.contains(c)).collect()),
        Lowered::Or(members) => members
            .iter()
            .map(implied_operations)
            .collect::<Option<Vec<_>>>()
            .map(|sets| {
                let mut all: Vec<&'static str> = sets.into_iter().flatten().collect();
                all.sort_unstable();
                all.dedup();
                all
            }),
        _ => None,
    }
}

/// Appends `c.operation = ANY(…) AND ` when the filter pins the operation.
pub(super) fn push_operation_prefilter(qb: &mut QueryBuilder<'_, Postgres>, filter: &Lowered) {
    if let Some(codes) = implied_operations(filter) {
        let codes: Vec<String> = codes.into_iter().map(str::to_owned).collect();
        qb.push("c.operation::text = ANY(")
            .push_bind(codes)
            .push(") AND ");
    }
}

pub(super) fn decode(row: &PgRow, tick: i64, tick_time: DateTime<Utc>) -> Result<ChangeEvent> {
    let seq: i64 = row.try_get("seq").map_err(map_err)?;
    let op: i8 = row.try_get("operation").map_err(map_err)?;
    let id: String = row.try_get("document_id").map_err(map_err)?;
    let document_id = DocumentId::parse(&id)?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(map_err)?;
    let body: Option<Value> = row.try_get("full_document").map_err(map_err)?;
    let operation = OPERATION_CODES
        .iter()
        .find(|(_, code)| code.as_bytes() == [op as u8])
        .map_or(OperationType::Delete, |(operation, _)| *operation);
    let full = match body {
        Some(Value::Object(b)) => Some(full_document(b, &document_id, created_at)?),
        _ => None,
    };
    let fields = |name: &str| -> Result<Vec<String>> {
        Ok(row
            .try_get::<Option<Vec<String>>, _>(name)
            .map_err(map_err)?
            .unwrap_or_default())
    };
    Ok(ChangeEvent {
        token: Position { tick, seq }.token(),
        operation,
        document_id,
        full_document: full,
        updated_fields: fields("updated_fields")?,
        removed_fields: fields("removed_fields")?,
        commit_time: tick_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore_api::Filter;

    #[test]
    fn operations_implied_by_filters() {
        use datastore_api::change::watchers;
        let implied = |f: Filter| implied_operations(&f.lower().unwrap());
        assert_eq!(implied(watchers::processable_inserts()), Some(vec!["i"]));
        assert_eq!(
            implied(watchers::quarantined_and_drained()),
            Some(vec!["i", "u"])
        );
        let op = |name: &str| Filter::eq("operationType", name);
        assert_eq!(implied(op("insert").or(op("delete"))), Some(vec!["d", "i"]));
        assert_eq!(implied(op("insert").and(op("delete"))), Some(vec![]));
        assert_eq!(implied(op("nonsense")), Some(vec![]));
        // Not pinned: anything else in an Or, a negation, no condition on the operation.
        assert_eq!(
            implied(op("insert").or(Filter::eq("documentKey._id", "x"))),
            None
        );
        assert_eq!(implied(Filter::ne("operationType", "insert")), None);
        assert_eq!(implied(Filter::All), None);
    }
}
