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
//! Sleeping goes through the same door: [`Clock::sleep`] (and [`Clock::sleep_until`])
//! waits until *this clock* reads a later time, so the executor's backoffs, limiter waits,
//! hedge timers and attempt timeouts follow whatever clock it was built with — tokio's
//! paused time in tests and the simulation, a [`ManualClock`] moved by hand, the real clock
//! in production (as backon's `Sleeper` does for retries).
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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A sleep on a [`Clock`]: resolves once the clock reads the time it was made for.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A monotonic time source, read as nanoseconds since the clock's own epoch, and the one
/// way the executor waits.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds elapsed since this clock's epoch. Never decreases.
    fn now(&self) -> u64;

    /// A future that resolves once [`now`](Clock::now) reads `at` or later.
    ///
    /// The default sleeps on tokio's timer for the difference from the current reading:
    /// right for any clock that advances with tokio's time (a real clock, or tokio's paused
    /// one). A clock that advances otherwise ([`ManualClock`]) overrides it.
    fn sleep_until(&self, at: u64) -> Sleep {
        let d = Duration::from_nanos(at.saturating_sub(self.now()));
        Box::pin(tokio::time::sleep(d))
    }

    /// A future that resolves once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now().saturating_add(nanos(d)))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> u64 {
        (**self).now()
    }

    fn sleep_until(&self, at: u64) -> Sleep {
        (**self).sleep_until(at)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        (**self).sleep(d)
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now(&self) -> u64 {
        (**self).now()
    }

    fn sleep_until(&self, at: u64) -> Sleep {
        (**self).sleep_until(at)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        (**self).sleep(d)
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

    fn sleep_until(&self, at: u64) -> Sleep {
        // On the clock's own epoch: no second reading to drift from. Saturates: a time
        // beyond tokio's range sleeps as long as tokio can.
        let when = self
            .epoch
            .checked_add(Duration::from_nanos(at))
            .unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
            });
        Box::pin(tokio::time::sleep_until(when))
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
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    // Shared with the sleeps made on it (a sleep outlives the borrow of the clock).
    inner: Arc<ManualInner>,
}

#[derive(Debug, Default)]
struct ManualInner {
    nanos: AtomicU64,
    /// Tasks sleeping on this clock; woken (all of them) whenever it moves.
    sleepers: Mutex<Vec<Waker>>,
}

impl ManualClock {
    /// A clock reading 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock reading `nanos`.
    pub fn at(nanos: u64) -> Self {
        let c = Self::default();
        c.inner.nanos.store(nanos, Ordering::Relaxed);
        c
    }

    /// Moves the clock forward by `d` (saturating), waking the sleeps it ends.
    pub fn advance(&self, d: Duration) {
        let d = nanos(d);
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .inner
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(d))
            });
        self.inner.wake();
    }

    /// Sets the clock to `nanos`, waking the sleeps it ends.
    pub fn set(&self, nanos: u64) {
        self.inner.nanos.store(nanos, Ordering::Relaxed);
        self.inner.wake();
    }
}

impl ManualInner {
    fn wake(&self) {
        let sleepers = std::mem::take(&mut *lock(&self.sleepers));
        for w in sleepers {
            w.wake();
        }
    }
}

/// The sleepers' list, even if a thread panicked while holding it (a list of wakers has no
/// invariant a panic could break).
fn lock(m: &Mutex<Vec<Waker>>) -> std::sync::MutexGuard<'_, Vec<Waker>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        self.inner.nanos.load(Ordering::Relaxed)
    }

    fn sleep_until(&self, at: u64) -> Sleep {
        Box::pin(ManualSleep {
            inner: self.inner.clone(),
            at,
        })
    }
}

/// A sleep on a [`ManualClock`]: ready once the clock has been moved to `at`.
struct ManualSleep {
    inner: Arc<ManualInner>,
    at: u64,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ready = |s: &Self| s.inner.nanos.load(Ordering::Relaxed) >= s.at;
        if ready(&self) {
            return Poll::Ready(());
        }
        lock(&self.inner.sleepers).push(cx.waker().clone());
        // Checked again after registering: a move in between is not missed.
        if ready(&self) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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
    async fn tokio_clock_sleeps_on_its_own_epoch() {
        tokio::time::advance(Duration::from_millis(10)).await;
        let c = TokioClock::new();
        c.sleep_until(nanos(Duration::from_millis(5))).await;
        assert_eq!(c.now(), 5_000_000);
        c.sleep(Duration::from_secs(1)).await;
        assert_eq!(c.now(), 1_005_000_000);
        // Far beyond tokio's range: still a sleep, not a panic.
        let far = c.sleep_until(u64::MAX);
        tokio::pin!(far);
        assert!(futures_poll_once(far.as_mut()).is_pending());
    }

    #[tokio::test]
    async fn manual_clock_sleeps_until_moved() {
        let c = ManualClock::at(100);
        c.sleep_until(50).await; // already past: ready at once
        let woke = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let (c, woke) = (c.clone(), woke.clone());
            async move {
                c.sleep(Duration::from_nanos(100)).await;
                woke.store(true, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        c.advance(Duration::from_nanos(99));
        tokio::task::yield_now().await;
        assert!(!woke.load(Ordering::SeqCst), "one nanosecond short");
        c.set(200);
        task.await.unwrap();
        assert!(woke.load(Ordering::SeqCst));
    }

    fn futures_poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        f.poll(&mut Context::from_waker(waker))
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
