//! Advisory locks that serialise schema migrations and change-stream ticks.

use crate::error::map_err;

/// Takes a transaction-level advisory lock (released at commit or rollback).
pub(crate) async fn lock_xact(
    conn: &mut sqlx::PgConnection,
    key: i64,
) -> datastore_api::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}
