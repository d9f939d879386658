//! Advisory locks that serialise schema migrations and change-stream ticks.

use crate::error::map_err;

/// Takes a transaction-level advisory lock (released at commit or rollback). The rest of the
/// transaction runs without the session's `statement_timeout`: the lock holders (migrations,
/// pruning a large backlog) and those waiting for them may rightly take longer than a query.
pub(crate) async fn lock_xact(
    conn: &mut sqlx::PgConnection,
    key: i64,
) -> datastore_api::Result<()> {
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}
