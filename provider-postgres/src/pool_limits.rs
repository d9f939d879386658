//! The pool limits sqlx does not enforce exactly.
//!
//! - `max_idle_connections`, which sqlx does not have: a released connection is closed instead
//!   of kept when enough are idle, and a trimmer closes what concurrent releases kept beyond
//!   that. The release hook alone cannot be exact: sqlx pings a released connection after the
//!   hook said keep and only then counts it idle, so releases racing each other all see the same
//!   count.
//! - `connection_max_lifetime`: sqlx checks it on release and in a reaper that runs once per
//!   lifetime, so an idle connection could be handed out up to a lifetime late; checking on
//!   acquire makes it exact, as in Go's `database/sql`.

use std::time::Duration;

use sqlx::pool::PoolConnectionMetadata;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// How often the trimmer looks; an excess left by racing releases lives at most this long.
const TRIM_PERIOD: Duration = Duration::from_millis(500);

/// The `after_release` decision: keep the connection only while fewer than `max_idle` are idle
/// (and always before the pool is known).
pub(crate) fn keep_released(pool: Option<&PgPool>, max_idle: usize) -> bool {
    pool.is_none_or(|pool| pool.num_idle() < max_idle)
}

/// The `before_acquire` decision: an idle connection past `max_lifetime` is closed, not used.
pub(crate) fn usable_idle(meta: &PoolConnectionMetadata, max_lifetime: Duration) -> bool {
    meta.age <= max_lifetime
}

/// Closes idle connections beyond `max_idle` every [`TRIM_PERIOD`] until dropped.
pub(crate) struct IdleTrimmer(JoinHandle<()>);

impl IdleTrimmer {
    pub(crate) fn start(pool: PgPool, max_idle: usize) -> Self {
        IdleTrimmer(tokio::spawn(async move {
            let mut period = tokio::time::interval(TRIM_PERIOD);
            while !pool.is_closed() {
                period.tick().await;
                while pool.num_idle() > max_idle {
                    match pool.try_acquire() {
                        Some(conn) => {
                            let _ = conn.close().await;
                        }
                        None => break,
                    }
                }
            }
        }))
    }
}

impl Drop for IdleTrimmer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
