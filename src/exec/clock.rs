//! Time sources for the executor.
//!
//! Every stateful part of [`crate::exec`] takes the current time as a plain `u64` of
//! nanoseconds since *its clock's* epoch. The executor reads a [`Clock`] once per decision
//! and hands the same value to the limiter, the breaker and the budget; tests feed any
//! time sequence they like without touching a real clock.
//!
//! Three clocks are provided:
//! - [`TokioClock`]: `tokio::time::Instant` based, so tests under
//!   `#[tokio::test(start_paused = true)]` are deterministic.
//! - [`StdClock`]: `std::time::Instant` based, for code outside a tokio runtime or where
//!   tokio's `test-util` indirection should be avoided.
//! - [`ManualClock`]: an atomic counter you move by hand.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::exec::clock::{nanos, Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! assert_eq!(clock.now(), 0);
//! clock.advance(Duration::from_millis(5));
//! assert_eq!(clock.now(), nanos(Duration::from_millis(5)));
//! clock.set(42);
//! assert_eq!(clock.now(), 42);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic time source, read as nanoseconds since the clock's own epoch.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds elapsed since this clock's epoch. Never decreases.
    fn now(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> u64 {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// Converts a [`Duration`] to nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock based on [`tokio::time::Instant`]; its epoch is the instant it was constructed.
///
/// Under a paused tokio runtime (`start_paused = true`, `tokio::time::advance`) it follows
/// tokio's virtual time, which makes time-based tests deterministic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

/// A clock based on [`std::time::Instant`]; its epoch is the instant it was constructed.
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    epoch: std::time::Instant,
}

impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    #[inline]
    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

/// A clock that only moves when told to: for tests and benchmarks.
///
/// [`ManualClock::set`] may move it backwards; the parts in [`crate::exec`] tolerate that
/// (they never admit more than their bound because time went backwards), but a real
/// [`Clock`] never does it.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock reading `nanos`.
    pub fn at(nanos: u64) -> Self {
        Self {
            nanos: AtomicU64::new(nanos),
        }
    }

    /// Moves the clock forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let d = nanos(d);
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(d))
            });
    }

    /// Sets the clock to `nanos`.
    pub fn set(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_saturates() {
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_secs(1)), 1_000_000_000);
    }

    #[test]
    fn manual_clock_advances_and_saturates() {
        let c = ManualClock::at(10);
        c.advance(Duration::from_nanos(5));
        assert_eq!(c.now(), 15);
        c.advance(Duration::MAX);
        assert_eq!(c.now(), u64::MAX);
        let shared: Arc<dyn Clock> = Arc::new(ManualClock::at(7));
        assert_eq!(shared.now(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::new();
        assert_eq!(c.now(), 0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(c.now(), 250_000_000);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(c.now(), 1_250_000_000);
    }

    #[test]
    fn std_clock_is_monotonic() {
        let c = StdClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
