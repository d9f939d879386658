//! `max_idle_connections`, which sqlx does not have: a released connection is closed instead of
//! kept when enough are idle, and a trimmer closes what concurrent releases kept beyond that.
//!
//! The release hook alone cannot be exact: sqlx pings a released connection after the hook said
//! keep and only then counts it idle, so releases racing each other all see the same count.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

/// How often the trimmer looks; an excess left by racing releases lives at most this long.
const TRIM_PERIOD: Duration = Duration::from_millis(500);

/// The `after_release` decision: keep the connection only while fewer than `max_idle` are idle
/// (and always before the pool is known).
pub(crate) fn keep_released(pool: Option<&PgPool>, max_idle: usize) -> bool {
    pool.is_none_or(|pool| pool.num_idle() < max_idle)
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
