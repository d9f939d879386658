//! Versioned schema migrations, embedded in the binary and applied under an advisory lock so
//! that many replicas starting at once are safe.

use datastore_api::{Error, Result};
use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::error::map_err;
use crate::locks::lock_xact;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version (the file's number).
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order (`migrations/NNNN_name.sql`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "change_streams",
        sql: include_str!("../migrations/0002_change_streams.sql"),
    },
    Migration {
        version: 3,
        name: "take_tick_function",
        sql: include_str!("../migrations/0003_take_tick_function.sql"),
    },
    Migration {
        version: 4,
        name: "consumer_checkpoint_time",
        sql: include_str!("../migrations/0004_consumer_checkpoint_time.sql"),
    },
    Migration {
        version: 5,
        name: "expression_numbers",
        sql: include_str!("../migrations/0005_expression_numbers.sql"),
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Key of the transaction-level advisory lock held while migrating ("nvsentinel-datastore" hashed).
const LOCK_KEY: i64 = 0x6e76_735f_6473_0001;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<i64>,
    /// The schema version now.
    pub version: i64,
}

fn checksum(sql: &str) -> String {
    // FNV-1a: enough to notice an edited migration file, no extra dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies the missing migrations. Refuses (a [`Configuration`](datastore_api::ErrorKind::Configuration)
/// error) a database whose schema is newer than this build, and (a
/// permanent [`Backend`](datastore_api::ErrorKind::Backend) error) one whose applied migration differs
/// from the embedded file.
pub async fn migrate(pool: &PgPool) -> Result<MigrationReport> {
    // One transaction holding a transaction-level advisory lock: concurrent starters wait, and
    // the lock cannot outlive the work (not even if this future is dropped half-way).
    let mut tx = pool.begin().await.map_err(map_err)?;
    lock_xact(&mut tx, LOCK_KEY).await?;
    let report = migrate_locked(&mut tx).await?;
    tx.commit().await.map_err(map_err)?;
    Ok(report)
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<MigrationReport> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS datastore_schema_migrations (
            version    bigint PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    let rows =
        sqlx::query("SELECT version, checksum FROM datastore_schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
    let applied: Vec<(i64, String)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(map_err)?;
    let latest = latest_version();
    if let Some((newest, _)) = applied.iter().max_by_key(|(v, _)| *v) {
        if *newest > latest {
            return Err(Error::configuration(format!(
                "the database schema is at version {newest}, newer than this build supports ({latest}); upgrade this component"
            )));
        }
    }
    let mut report = MigrationReport {
        applied: Vec::new(),
        version: applied.iter().map(|(v, _)| *v).max().unwrap_or(0),
    };
    for m in MIGRATIONS {
        if let Some((_, sum)) = applied.iter().find(|(v, _)| *v == m.version) {
            if *sum != checksum(m.sql) {
                return Err(Error::permanent(format!(
                    "migration {} ({}) was applied with different contents than this build embeds",
                    m.version, m.name
                )));
            }
            continue;
        }
        // A &str runs through the simple-query protocol, which allows several statements.
        (&mut *conn).execute(m.sql).await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO datastore_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
        report.applied.push(m.version);
        report.version = m.version;
    }
    Ok(report)
}
