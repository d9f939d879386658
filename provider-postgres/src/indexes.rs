//! Verifies the indexes correctness depends on (upstream #1814): the unique indexes behind
//! idempotent inserts and the maintenance events' business key. The migrations create them; an
//! operator can still drop one, replace it with a non-unique one, or be rebuilding it
//! (`CREATE INDEX CONCURRENTLY`, whose index enforces nothing until it is valid). Run at
//! connect and by [`check_ready`](datastore_api::DataStore::check_ready).
//!
//! A build by another role shows in `pg_stat_progress_create_index` without its table or
//! index (unless this role has `pg_read_all_stats`), so an invalid index counts as building
//! while any unreadable build runs in this database: a transient answer, never a permanent
//! one for an index that is about to become valid.

use datastore_api::{IndexProblem, Result};
use sqlx::PgPool;

use crate::error::map_err;

/// An index the provider needs: its table, its key as `pg_get_indexdef` writes the first
/// column, and how to describe it.
struct Required {
    table: &'static str,
    key: &'static str,
    expected: &'static str,
}

const REQUIRED: &[Required] = &[
    Required {
        table: "health_events",
        key: "idempotency_key",
        expected: "unique (idempotency_key)",
    },
    Required {
        table: "maintenance_events",
        key: "idempotency_key",
        expected: "unique (idempotency_key)",
    },
    Required {
        table: "maintenance_events",
        key: "(document ->> 'eventId'::text)",
        expected: "unique ((document ->> 'eventId'))",
    },
];

/// One index of a table, as the catalog describes it.
#[derive(Debug)]
struct Found {
    name: String,
    key: String,
    columns: i16,
    unique: bool,
    valid: bool,
    partial: bool,
    building: bool,
}

impl Found {
    fn usable(&self) -> bool {
        self.unique && self.valid && !self.partial && self.columns == 1
    }

    fn describe(&self) -> String {
        let mut traits = vec![if self.unique { "unique" } else { "not unique" }];
        if self.partial {
            traits.push("partial");
        }
        if self.columns != 1 {
            traits.push("over several columns");
        }
        if !self.valid {
            traits.push("invalid (a failed concurrent build; REINDEX it)");
        }
        format!("{} ({})", self.name, traits.join(", "))
    }
}

/// The first problem with a required index, if any.
pub(crate) async fn verify(pool: &PgPool) -> Result<()> {
    for required in REQUIRED {
        type Row = (String, String, i16, bool, bool, bool, bool);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid, 1, true), i.indnkeyatts, \
                    i.indisunique, i.indisvalid AND i.indisready, i.indpred IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_stat_progress_create_index p \
                            WHERE p.index_relid = i.indexrelid \
                               OR (NOT i.indisvalid AND p.datname = current_database() \
                                   AND (p.relid = i.indrelid OR p.relid IS NULL))) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1)",
        )
        .bind(required.table)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
        let found: Vec<Found> = rows
            .into_iter()
            .map(
                |(name, key, columns, unique, valid, partial, building)| Found {
                    name,
                    key,
                    columns,
                    unique,
                    valid,
                    partial,
                    building,
                },
            )
            .collect();
        let same_key: Vec<&Found> = found.iter().filter(|f| f.key == required.key).collect();
        if same_key.iter().any(|f| f.usable()) {
            continue;
        }
        let problem = match (same_key.iter().find(|f| f.building), same_key.first()) {
            (Some(b), _) => IndexProblem::Building {
                collection: required.table.to_owned(),
                index: b.name.clone(),
            },
            (None, Some(f)) => IndexProblem::Mismatch {
                collection: required.table.to_owned(),
                expected: required.expected.to_owned(),
                found: f.describe(),
            },
            (None, None) => IndexProblem::Missing {
                collection: required.table.to_owned(),
                expected: required.expected.to_owned(),
            },
        };
        return Err(problem.into_error());
    }
    Ok(())
}
