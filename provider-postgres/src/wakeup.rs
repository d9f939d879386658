//! Wake-ups for change-stream readers: `datastore_take_tick` sends one NOTIFY per tick it takes
//! (never one per write, so writers pay nothing), and one listening connection per store wakes
//! that store's idle readers at once instead of at their next poll.
//!
//! A notification only ends a reader's sleep early; its payload is ignored and never moves a
//! position. Polling stays the safety net: a lost connection, a notification dropped by the
//! server, or a tick taken before the listener started cost at most one poll interval.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The NOTIFY channel of new ticks (also named in migration 0003).
pub(crate) const TICK_CHANNEL: &str = "datastore_change_ticks";

/// The listener holds one of the pool's connections (so the pool's cap stays exact); smaller
/// pools do without wake-ups and only poll.
pub(crate) const MIN_POOL_SIZE: u32 = 8;

/// Longest wait before listening again after the connection failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The tick notifications of one store. The listener starts with the first stream and holds one
/// of the pool's connections until the store is dropped or closed.
pub(crate) struct TickWakeups {
    pool: PgPool,
    /// The listening connection is replaced after this, like every pooled connection (so it
    /// too picks up rotated certificates).
    max_lifetime: Duration,
    /// Counts notifications; readers wait for it to change.
    ticks: Arc<watch::Sender<u64>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl TickWakeups {
    pub(crate) fn new(pool: PgPool, max_lifetime: Duration) -> Arc<Self> {
        Arc::new(TickWakeups {
            pool,
            max_lifetime,
            ticks: Arc::new(watch::channel(0).0),
            listener: Mutex::new(None),
        })
    }

    /// A receiver that changes with every tick notification from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        if let Ok(mut listener) = self.listener.lock() {
            if listener.as_ref().is_none_or(JoinHandle::is_finished) {
                let (pool, ticks) = (self.pool.clone(), Arc::clone(&self.ticks));
                *listener = Some(tokio::spawn(listen(pool, ticks, self.max_lifetime)));
            }
        }
        self.ticks.subscribe()
    }
}

impl Drop for TickWakeups {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// Listens until the pool closes, reconnecting with backoff, and on a fresh connection every
/// `max_lifetime`.
async fn listen(pool: PgPool, ticks: Arc<watch::Sender<u64>>, max_lifetime: Duration) {
    let mut backoff = Duration::from_millis(100);
    while !pool.is_closed() {
        let failure = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(TICK_CHANNEL).await {
                Ok(()) => {
                    // Counted from when the connection is in hand, so that by `retire_at` it
                    // is older than `max_lifetime` and the pool closes it instead of handing it
                    // out again. A year stands for "never" when the lifetime is too large to add.
                    let now = tokio::time::Instant::now();
                    let retire_at = now
                        .checked_add(max_lifetime)
                        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
                    loop {
                        match tokio::time::timeout_at(retire_at, listener.recv()).await {
                            Ok(Ok(_)) => {
                                backoff = Duration::from_millis(100);
                                ticks.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Ok(Err(e)) => break Some(e),
                            // Returned to the pool, which closes it for its age; a tick missed
                            // meanwhile costs one poll interval.
                            Err(_) => break None,
                        }
                    }
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        if pool.is_closed() {
            return;
        }
        let Some(failure) = failure else {
            // Wake readers once: a tick may have been taken while no one listened.
            ticks.send_modify(|n| *n = n.wrapping_add(1));
            continue;
        };
        // Readers keep polling meanwhile; nothing is lost, delivery is only slower.
        tracing::debug!(error = %failure, "tick notifications unavailable; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
