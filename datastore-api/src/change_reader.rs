//! The algorithm behind every provider's [`ChangeStream`]: the consumer's lease, standby and
//! takeover, the start, the read loop with its retries, and handing the lease over on drop.
//! Providers implement its primitives ([`ChangeSource`]) the way sqlx's drivers implement
//! `Migrate` for its `Migrator`.
//!
//! - **Lease.** One reader per (collection, consumer) at a time: the stream takes the lease
//!   before its first read and renews it every fifth of [`WatchOptions::lease_ttl`]. While
//!   another process holds it, the stream is a standby: it retries every fifth of the lease
//!   lifetime (at least a poll interval) and takes over when the holder stops (a dropped stream
//!   releases its lease at once) or lets it expire. A stream that loses its lease ends with
//!   [`Conflict`](ErrorKind::Conflict).
//! - **Owner.** Each stream has an owner id unique to it (`<pid>-<random>-<n>`), registered in
//!   this process's [`LocalLeases`] while it holds the lease, so the process's own checkpoints
//!   pass while other processes' are refused.
//! - **Start.** Resolved once, when the lease is first held (a standby starts from the checkpoint
//!   its predecessor left). [`spawn_stream`] does it before returning when the lease is free, so
//!   a lost history is reported by `watch` itself and writes after `watch` returns are seen.
//! - **Retries.** A retryable failure (see [`Error::is_retryable`]) is logged and retried after a
//!   backoff that starts at the poll interval and doubles up to 5 s; the source keeps its
//!   position, so nothing is lost or repeated. Any other failure ends the stream with that
//!   error.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream;

use crate::change::{ChangeEvent, ChangeStream, StartFrom, WatchOptions};
use crate::metrics::lag::LagState;
use crate::{DocumentId, Error, ErrorKind, Result};

/// The longest wait between retries of a failing read.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one read of a [`ChangeSource`] gave.
#[derive(Debug, Default)]
pub struct Batch {
    /// The next changes, in order (possibly none, even when the position moved).
    pub events: Vec<ChangeEvent>,
    /// Nothing more is available now: the stream waits ([`ChangeSource::idle`]) before reading
    /// again.
    pub caught_up: bool,
}

/// The primitives of one consumer's change stream on one collection, implemented by each
/// provider.
#[async_trait]
pub trait ChangeSource: Send + 'static {
    /// The key of the consumer's lease in [`LocalLeases`] (unique per store, collection and
    /// consumer).
    fn lease_key(&self) -> String;

    /// Takes (`renew` false: the lease is free, expired or already `owner`'s) or renews
    /// (`renew` true: only while `owner` still holds it, expired or not) the consumer's lease
    /// until `ttl` from now; false when it is not `owner`'s. A renewal never takes a free lease
    /// and never re-creates a deleted consumer: a takeover, a reset or a delete in between
    /// (which free the lease) ended this stream's hold, and its position is stale.
    async fn acquire_lease(&mut self, owner: &str, ttl: Duration, renew: bool) -> Result<bool>;

    /// A future that releases `owner`'s lease if it still holds it (best effort; run in the
    /// background when the stream is dropped).
    fn release_lease(&self, owner: String) -> BoxFuture<'static, ()>;

    /// Resolves where to start (once, when the lease is first held). An error here ends the
    /// stream (for example `HistoryLost`) unless it is retryable.
    async fn start(&mut self, from: StartFrom) -> Result<()>;

    /// Reads what follows the position and moves past it.
    async fn read(&mut self) -> Result<Batch>;

    /// Waits before the next read when caught up: a poll interval by default; a provider that
    /// hears of new changes may return earlier.
    async fn idle(&mut self, poll: Duration) {
        tokio::time::sleep(poll).await;
    }

    /// Called after a failed read that will be retried: drop whatever is open (a server-side
    /// cursor) so the next read reopens it after the position.
    fn reset(&mut self) {}
}

/// Which stream holds which lease in this process, by [`ChangeSource::lease_key`].
pub struct LocalLeases;

impl LocalLeases {
    fn map() -> &'static Mutex<HashMap<String, String>> {
        static LEASES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
        LEASES.get_or_init(Default::default)
    }

    /// The owner id of the stream of this process that holds the lease `key`, if any.
    pub fn holder(key: &str) -> Option<String> {
        Self::map()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Records that `owner`, a stream of this process, holds the lease `key` (the reader does
    /// this whenever it takes or renews a lease).
    pub fn hold(key: &str, owner: &str) {
        Self::map()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), owner.to_owned());
    }

    /// A receiver that changes each time a stream of this process releases the lease `key`,
    /// so that a standby of this process takes it at once instead of at its next retry.
    fn releases_of(key: &str) -> tokio::sync::watch::Receiver<u64> {
        Self::released_senders()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Tells this process's standbys for `key` that its lease was released.
    fn released(key: &str) {
        if let Some(tx) = Self::released_senders()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn released_senders() -> &'static Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>> {
        static RELEASED: OnceLock<Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>> =
            OnceLock::new();
        RELEASED.get_or_init(Default::default)
    }

    /// Forgets `owner`'s hold of `key` (when its stream ends).
    pub fn forget(key: &str, owner: &str) {
        let mut map = Self::map().lock().unwrap_or_else(|e| e.into_inner());
        if map.get(key).map(String::as_str) == Some(owner) {
            map.remove(key);
        }
    }
}

/// The error of a checkpoint refused because another stream holds the consumer's lease, or
/// this process's stream lost it.
pub fn checkpoint_refused(consumer: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "consumer {consumer:?}: not checkpointed: another stream holds its lease, or this \
             process's stream lost it (a takeover, a reset or a delete); watch again"
        ),
    )
}

/// A fresh owner id: unique to one stream of one process.
fn new_owner() -> String {
    static OWNERS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        DocumentId::generate(),
        OWNERS.fetch_add(1, Ordering::Relaxed)
    )
}

/// The change stream over `source`: validates `options`, takes the lease if it is free and
/// resolves the start before returning (see the module docs).
pub async fn spawn_stream<S: ChangeSource>(
    source: S,
    options: WatchOptions,
) -> Result<ChangeStream> {
    options.validate()?;
    let key = source.lease_key();
    let mut reader = Reader {
        lag: LagState::of(&options.consumer),
        source,
        releases: LocalLeases::releases_of(&key),
        key,
        owner: new_owner(),
        options,
        renewed: None,
        started: false,
        buffer: VecDeque::new(),
        done: false,
    };
    if reader.lease().await? {
        reader.source.start(reader.options.start).await?;
        reader.started = true;
    }
    Ok(Box::pin(stream::unfold(reader, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    })))
}

struct Reader<S: ChangeSource> {
    source: S,
    /// Changes when a stream of this process releases this lease (see [`LocalLeases`]).
    releases: tokio::sync::watch::Receiver<u64>,
    key: String,
    owner: String,
    options: WatchOptions,
    /// When the lease was last taken or renewed; `None` until first held.
    renewed: Option<Instant>,
    started: bool,
    buffer: VecDeque<ChangeEvent>,
    done: bool,
    /// The consumer's lag metrics: fed by every read that finds nothing new and every change
    /// handed out.
    lag: Arc<LagState>,
}

impl<S: ChangeSource> Reader<S> {
    /// Holds the lease (taking it, or renewing it every fifth of its lifetime). False while
    /// another process holds it; a `Conflict` error when this stream lost it.
    async fn lease(&mut self) -> Result<bool> {
        let ttl = self.options.lease_ttl;
        if self.renewed.is_some_and(|t| t.elapsed() < ttl / 5) {
            return Ok(true);
        }
        let renew = self.renewed.is_some();
        let held = self.source.acquire_lease(&self.owner, ttl, renew).await?;
        match (held, self.renewed) {
            (true, _) => {
                self.renewed = Some(Instant::now());
                LocalLeases::hold(&self.key, &self.owner);
                Ok(true)
            }
            (false, None) => Ok(false),
            (false, Some(_)) => {
                self.lag.forget();
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "consumer {:?}: this stream lost its lease (another stream took over, or \
                         the consumer was reset or deleted); watch again",
                        self.options.consumer
                    ),
                ))
            }
        }
    }

    /// One step: fills the buffer, waits as a standby or idles. Errors are the caller's.
    async fn step(&mut self) -> Result<()> {
        if !self.lease().await? {
            // A standby retries every fifth of the lease lifetime, or at once when a stream
            // of this process releases the lease (a consumer reopened after a drop).
            let wait = (self.options.lease_ttl / 5).max(self.options.poll_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Ok(()) = self.releases.changed() => {}
            }
            return Ok(());
        }
        if !self.started {
            self.source.start(self.options.start).await?;
            self.started = true;
        }
        let batch = self.source.read().await?;
        let caught_up = batch.caught_up && batch.events.is_empty();
        self.buffer.extend(batch.events);
        if caught_up {
            self.lag.caught_up();
            self.source.idle(self.options.poll_interval).await;
        }
        Ok(())
    }

    /// Whether the lease is due for renewal (a fifth of its lifetime has passed).
    fn renewal_due(&self) -> bool {
        self.renewed
            .is_some_and(|t| t.elapsed() >= self.options.lease_ttl / 5)
    }

    async fn next(&mut self) -> Option<Result<ChangeEvent>> {
        let poll = self.options.poll_interval;
        let mut backoff = poll;
        loop {
            // Buffered events are handed out only while the lease is held: a consumer slower
            // than the lease lifetime renews it here, or learns that a standby took over.
            if !self.buffer.is_empty() && !self.renewal_due() {
                let event = self.buffer.pop_front()?;
                self.lag.delivered(event.commit_time);
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let attempt = if self.buffer.is_empty() {
                self.step().await
            } else {
                self.lease().await.map(|_| ())
            };
            match attempt {
                Ok(()) => backoff = poll,
                Err(e) if e.is_retryable() => {
                    // The source keeps its position: retrying loses and repeats nothing.
                    tracing::warn!(
                        error = %e,
                        consumer = %self.options.consumer,
                        retry_in = ?backoff,
                        "change stream read failed; retrying"
                    );
                    self.source.reset();
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(MAX_BACKOFF).max(poll);
                }
                Err(e) => {
                    self.done = true;
                    self.buffer.clear();
                    self.source.reset();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<S: ChangeSource> Drop for Reader<S> {
    fn drop(&mut self) {
        LocalLeases::forget(&self.key, &self.owner);
        // Hand the lease over at once instead of letting it expire (best effort).
        if self.renewed.is_some() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (release, key) = (
                    self.source.release_lease(self.owner.clone()),
                    self.key.clone(),
                );
                rt.spawn(async move {
                    release.await;
                    LocalLeases::released(&key);
                });
            }
        }
    }
}
