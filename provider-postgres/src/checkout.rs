//! Connections of calls that are given up. A caller that drops a store call (a timeout, a
//! cancelled task) would otherwise hand its connection back to the pool with the statement
//! still running; sqlx then waits for the statement to finish before reusing it, and the
//! server keeps working for nobody. A [`Checkout`] closes such a connection instead, and every
//! session asks the server to check for a closed client while a statement runs
//! (`client_connection_check_interval`, PostgreSQL 14+), so the server cancels the statement
//! within about a second.

use datastore_api::Result;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::error::map_err;

/// How often a running statement checks that its client is still there (ms).
pub(crate) const CLIENT_CHECK_INTERVAL_MS: u32 = 1_000;

/// A pooled connection that goes back to the pool when [`Checkout::finish`] is called, and is
/// closed when the checkout is dropped before that (the call was given up).
pub(crate) struct Checkout {
    conn: PoolConnection<Postgres>,
    finished: bool,
}

impl Checkout {
    /// A connection from `pool`.
    pub(crate) async fn acquire(pool: &PgPool) -> Result<Self> {
        Ok(Checkout {
            conn: pool.acquire().await.map_err(map_err)?,
            finished: false,
        })
    }

    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The call finished (well or with an error): the connection goes back to the pool.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Run on every new connection: the client check, where the server has it. A server that
/// cannot check on this platform (it refuses a non-zero interval) keeps working without it.
pub(crate) async fn prepare_session(
    conn: &mut PgConnection,
) -> std::result::Result<(), sqlx::Error> {
    if conn.server_version_num().unwrap_or(0) >= 140_000 {
        let set = format!("SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}");
        if let Err(e) = sqlx::query(&set).execute(conn).await {
            tracing::debug!(error = %e, "the server cannot check for closed clients");
        }
    }
    Ok(())
}
