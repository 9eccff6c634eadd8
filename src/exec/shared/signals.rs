//! Shared breaker signals: instances share an upstream's trips, so the second replica does
//! not pay for the outage the first one already saw.
//!
//! A breaker policy with `state = "shared"` keeps deciding locally, on the breaker's atomics
//! ([`Breaker::try_acquire`] is unchanged: no backend round trip per call). What is shared
//! is the *trip*:
//!
//! - **Publish.** When such a breaker opens on this instance by itself (a rule tripped or a
//!   half-open probe failed, not a signal learned from elsewhere), its observer wakes the
//!   runtime's [`SignalTask`], which writes the signal with
//!   [`StateBackend::signal_open`] under `prefix + "breaker:" + entity` (`upstream:NAME`,
//!   `model:NAME`, `route:NAME:MODEL`), living for the time the breaker stays open.
//! - **Learn.** The same task reads every shared breaker's signal every `breaker_poll` ([`POLL`] by default) in one
//!   round trip ([`StateBackend::open_signals`]: remaining times, so clocks need not agree)
//!   and opens the local breaker for the time left ([`Breaker::force_open`]). Once it is
//!   up, the breaker probes half-open on its own, as a local one does; a probe that fails
//!   trips it again, and that trip is published in turn.
//!
//! **Bound.** A replica learns of another's trip within one `breaker_poll` interval plus two
//! backend round trips (the publish and its own poll, each bounded by `[state.redis]
//! timeout`), and stays open no longer than the instance that tripped (up to that rounding).
//!
//! **Failures.** Every backend call goes through the runtime's [`super::SharedHealth`] breaker
//! (bounded by the timeout, logged, counted); while it is open the task touches nothing and
//! shared breakers act as local ones. An unpublished trip is retried on the next poll while
//! the breaker is still open. Calls never wait for the task.
//!
//! **Lifetime.** One task per [`Runtime`](crate::exec::state::Runtime) that has shared breakers and
//! a backend; dropping the runtime's [`SignalTask`] (the runtime dropped or replaced by a
//! reload) aborts it, so no task outlives its plan.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::super::breaker::Breaker;
use super::super::clock::{nanos, Clock};
use super::{Shared, StateBackend};

/// How often an instance reads the shared breakers' signals by default (`[state.redis]
/// breaker_poll`).
pub const POLL: Duration = crate::plan::DEFAULT_BREAKER_POLL;

/// One shared breaker of a runtime.
#[derive(Debug, Clone)]
pub struct SignalEntry {
    /// Backend key (`prefix + "breaker:" + entity`).
    pub key: String,
    /// The local breaker.
    pub breaker: Arc<Breaker>,
}

/// What this instance last published or forced, per entry (clock nanoseconds).
#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    published: u64,
    forced: u64,
}

/// The background task of a runtime's shared breakers; dropping it aborts the task.
#[derive(Debug)]
pub struct SignalTask {
    handle: tokio::task::AbortHandle,
    keys: Vec<String>,
}

impl SignalTask {
    /// Starts the task for `entries` on the tokio runtime `on` (default: the current one;
    /// nothing for no entries, or with no runtime at all: shared breakers then act as local
    /// ones, with a warning). `wake` is notified by the breakers'
    /// observers when one trips by itself.
    pub fn start(
        shared: Shared,
        entries: Vec<SignalEntry>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        poll: Duration,
        on: Option<&tokio::runtime::Handle>,
    ) -> Option<SignalTask> {
        if entries.is_empty() {
            return None;
        }
        let Some(handle) = on
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            tracing::warn!(target: "tollgate::shared", "no tokio runtime: shared breakers act as local ones");
            return None;
        };
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        let task = handle.spawn(run(shared, entries, keys.clone(), clock, wake, poll));
        Some(SignalTask {
            handle: task.abort_handle(),
            keys,
        })
    }

    /// Ends the task (also done on drop).
    pub fn stop(&self) {
        self.handle.abort();
    }

    /// The backend keys it watches.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Whether the task has ended (aborted).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl Drop for SignalTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One backend call for the task, unless the breaker around the backend is open.
async fn try_backend<T>(
    shared: &Shared,
    what: &str,
    now: u64,
    f: super::BoxFut<'_, Result<T, super::Unavailable>>,
) -> Option<T> {
    if !shared.health.should_try(now) {
        return None;
    }
    shared.attempt(what, now, f).await
}

async fn run(
    shared: Shared,
    entries: Vec<SignalEntry>,
    keys: Vec<String>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    let backend: &dyn StateBackend = &*shared.backend;
    let mut marks = vec![Mark::default(); entries.len()];
    // A signal this instance published or forced is read back with up to a round trip
    // each way (and a millisecond of rounding) more to live: not a new trip.
    let slack = nanos(shared.settings.timeout) * 2 + nanos(Duration::from_millis(1));
    // A tick every `poll` on the executor's clock (the first at once; a late tick moves the
    // next ones, as tokio's `MissedTickBehavior::Delay`), or at once when woken.
    let p = nanos(poll).max(1);
    let mut next = clock.now();
    loop {
        let ticked = tokio::select! {
            _ = clock.sleep_until(next) => true,
            _ = wake.notified() => false,
        };
        if ticked {
            let now = clock.now();
            next = if now > next.saturating_add(p) {
                now
            } else {
                next
            }
            .saturating_add(p);
        }
        // Publish this instance's own trips.
        for (e, m) in entries.iter().zip(marks.iter_mut()) {
            let now = clock.now();
            let Some(until) = e.breaker.open_until() else {
                continue;
            };
            if until <= now || until == m.published || until == m.forced {
                continue;
            }
            let left = Duration::from_nanos(until - now);
            let f = backend.signal_open(&e.key, left);
            if try_backend(&shared, "breaker signal", now, f)
                .await
                .is_some()
            {
                m.published = until;
                shared.health.signals_sent.fetch_add(1, Relaxed);
            }
        }
        // Learn the others'.
        let now = clock.now();
        let f = backend.open_signals(&keys);
        let Some(left) = try_backend(&shared, "breaker signals (poll)", now, f).await else {
            continue;
        };
        let now = clock.now();
        for ((e, m), left) in entries.iter().zip(marks.iter_mut()).zip(left) {
            let Some(left) = left else { continue };
            let until = now.saturating_add(nanos(left));
            if until <= m.published.max(m.forced).saturating_add(slack) {
                continue;
            }
            e.breaker.force_open(until, now);
            if e.breaker.open_until() == Some(until) {
                m.forced = until;
                shared.health.signals_received.fetch_add(1, Relaxed);
                tracing::info!(target: "tollgate::breaker", key = %e.key, open_for = ?left, "breaker opened: tripped on another instance");
            }
        }
    }
}
