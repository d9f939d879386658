//! What one evaluation may spend: a deadline ([`Pipeline::max_time`](super::Pipeline::max_time)),
//! a cancellation flag (set when the caller drops the aggregation's future), and bytes a
//! stage may accumulate ([`Pipeline::max_bytes`](super::Pipeline::max_bytes)).
//!
//! The evaluator is synchronous and recursive (stages evaluate expressions that evaluate
//! expressions), so the limits of the stage running on this thread are kept in a
//! thread-local set by [`within`]: expression evaluation calls [`tick`] and accumulating
//! stages call [`charge`], without a parameter threaded through every function. Outside
//! [`within`] both are free and never fail.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore_api::error::{Error, Result};
use datastore_api::value::Value;

/// The default of [`Pipeline::max_time`](super::Pipeline::max_time): 30 seconds, the
/// `maxTimeMS` MongoDB deployments commonly set.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(30);

/// The default of [`Pipeline::max_bytes`](super::Pipeline::max_bytes): 100 MiB, MongoDB's
/// memory limit per blocking stage.
pub const DEFAULT_MAX_BYTES: usize = 100 * 1024 * 1024;

/// How many [`tick`]s pass between two looks at the clock.
const TICKS_PER_CHECK: u32 = 1024;

/// The limits of one run of a pipeline. Running out of time is
/// temporary, as a server's `maxTimeMS` or `statement_timeout` is.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    deadline: Instant,
    max_time: Duration,
    max_bytes: usize,
    cancelled: Arc<AtomicBool>,
}

impl Limits {
    /// Limits for a run starting now.
    pub(crate) fn start(max_time: Duration, max_bytes: usize) -> Limits {
        let now = Instant::now();
        Limits {
            deadline: now.checked_add(max_time).unwrap_or(now + DEFAULT_MAX_TIME),
            max_time,
            max_bytes,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A guard that cancels the run when dropped (with the future that owns it).
    pub(crate) fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.cancelled.clone())
    }

    /// The error for a run past its deadline.
    pub(crate) fn timed_out(&self) -> Error {
        Error::transient(format!(
            "aggregate: the pipeline ran longer than its limit of {:?} and was stopped \
                 (Pipeline::max_time); narrow its first $match or raise the limit",
            self.max_time
        ))
    }

    fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::transient(
                "aggregate: the pipeline was cancelled (its caller stopped waiting)",
            ));
        }
        if Instant::now() >= self.deadline {
            return Err(self.timed_out());
        }
        Ok(())
    }
}

/// Sets its run's cancellation flag when dropped.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The limits of the stage running on this thread, and the bytes it has accumulated.
struct Active {
    limits: Limits,
    bytes: usize,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// Runs `stage` (one stage over its documents) under `limits`, with a fresh byte count. The
/// limits active before are restored afterwards, also when `stage` panics.
pub(crate) fn within<T>(limits: &Limits, stage: impl FnOnce() -> Result<T>) -> Result<T> {
    limits.check()?;
    let active = Active {
        limits: limits.clone(),
        bytes: 0,
    };
    let before = ACTIVE.with(|a| a.replace(Some(active)));
    struct Restore(Option<Option<Active>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take().flatten();
            ACTIVE.with(|a| *a.borrow_mut() = before);
        }
    }
    let _restore = Restore(Some(before));
    stage()
}

/// One unit of evaluation work: every [`TICKS_PER_CHECK`]th call looks at the deadline and
/// the cancellation flag of the active limits.
pub(crate) fn tick() -> Result<()> {
    let n = TICKS.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n
    });
    if !n.is_multiple_of(TICKS_PER_CHECK) {
        return Ok(());
    }
    ACTIVE.with(|a| match &*a.borrow() {
        Some(active) => active.limits.check(),
        None => Ok(()),
    })
}

/// Counts `value` as held by the running stage; an error once the stage holds more than the
/// active limit.
pub(crate) fn charge(value: &Value) -> Result<()> {
    let size = approximate_size(value);
    ACTIVE.with(|a| match &mut *a.borrow_mut() {
        Some(active) => {
            active.bytes = active.bytes.saturating_add(size);
            if active.bytes > active.limits.max_bytes {
                return Err(Error::invalid_input(format!(
                    "aggregate: the stage holds more than {} bytes, the limit of \
                     Pipeline::max_bytes (MongoDB's 100 MiB per stage); narrow the \
                     pipeline's $match or accumulate less per document",
                    active.limits.max_bytes
                )));
            }
            active.limits.check()
        }
        None => Ok(()),
    })
}

/// Roughly the memory `value` takes: a fixed cost per value and field, plus its strings.
/// Without recursion, so any depth is safe.
pub(crate) fn approximate_size(value: &Value) -> usize {
    const PER_VALUE: usize = 32;
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(PER_VALUE);
        match v {
            Value::String(s) => total = total.saturating_add(s.len()),
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(o) => {
                for (k, c) in o {
                    total = total.saturating_add(k.len() + PER_VALUE);
                    stack.push(c);
                }
            }
            _ => {}
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ticks_and_charges_are_free_outside_a_run() {
        for _ in 0..10 * TICKS_PER_CHECK {
            tick().unwrap();
        }
        charge(&json!("x".repeat(1 << 20))).unwrap();
    }

    #[test]
    fn a_run_stops_at_its_deadline_and_when_cancelled() {
        let limits = Limits::start(Duration::from_millis(20), DEFAULT_MAX_BYTES);
        let r: Result<()> = within(&limits, || loop {
            tick()?;
        });
        let e = r.unwrap_err();
        assert!(e.is_retryable());
        assert!(e.message().contains("max_time"), "{e}");
        let limits = Limits::start(Duration::from_secs(60), DEFAULT_MAX_BYTES);
        drop(limits.cancel_on_drop());
        let e = within(&limits, || Ok(())).unwrap_err();
        assert!(e.message().contains("cancelled"), "{e}");
    }

    #[test]
    fn a_stage_is_limited_in_bytes_and_the_count_starts_again_per_stage() {
        let limits = Limits::start(Duration::from_secs(60), 10_000);
        let big = json!("x".repeat(6_000));
        within(&limits, || charge(&big)).unwrap();
        within(&limits, || charge(&big)).unwrap();
        let e = within(&limits, || {
            charge(&big)?;
            charge(&big)
        })
        .unwrap_err();
        assert_eq!(e.kind(), datastore_api::ErrorKind::InvalidInput);
        assert!(e.message().contains("max_bytes"), "{e}");
        // Restored: no limits outside.
        charge(&big).unwrap();
    }
}
