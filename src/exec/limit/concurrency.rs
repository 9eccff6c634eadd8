//! A cap on calls in flight, with RAII permits.

use std::future::Future;
use std::sync::atomic::{
    AtomicU32,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;

use super::{LimitConfigError, LimitError, OnLimit};
use crate::exec::clock::{Clock, Sleep};

/// Configuration of a [`ConcurrencyLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyConfig {
    /// Most calls in flight at once; `>= 1`.
    pub max_in_flight: u32,
}

/// At most `max_in_flight` permits exist at once. A permit is returned when it is dropped,
/// which happens on success, error, panic (unwinding) and when the future holding it is
/// cancelled alike. A waiter that is cancelled leaves without taking a permit.
///
/// The fast path is lock-free: taking a permit is one compare-exchange on the in-flight
/// count, returning it one `fetch_sub` and one load. Waiters (only with
/// `on_limit = "wait"`) park on a [`Notify`], which a release touches only when someone
/// waits. Waiters are not served in strict FIFO order.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use tollgate::exec::limit::{ConcurrencyConfig, ConcurrencyLimiter, LimitError};
///
/// let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 1 }).unwrap();
/// let permit = lim.try_acquire().unwrap();
/// assert_eq!(lim.in_flight(), 1);
/// assert_eq!(lim.try_acquire().unwrap_err(), LimitError::ConcurrencyFull { limit: 1 });
/// drop(permit);
/// assert!(lim.acquire_timeout(Duration::from_millis(10)).await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    in_flight: AtomicU32,
    waiters: AtomicU32,
    notify: Notify,
    /// Changed only by a reload ([`ConcurrencyLimiter::set_limit`]).
    limit: AtomicU32,
}

impl Inner {
    /// Takes a slot if one is free.
    #[inline]
    fn try_take(&self) -> bool {
        let mut cur = self.in_flight.load(SeqCst);
        while cur < self.limit.load(Relaxed) {
            match self
                .in_flight
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Gives a slot back and wakes a waiter if there is one.
    #[inline]
    fn release(&self) {
        // SeqCst on both sides: either this load sees a waiter registered before its
        // attempt, or that waiter's attempt sees the slot freed here.
        self.in_flight.fetch_sub(1, SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// Waits for a slot for at most `timeout` (on tokio's timer).
    async fn wait_take(&self, timeout: Duration) -> Result<(), LimitError> {
        if self.try_take() {
            return Ok(());
        }
        self.wait_take_until(Box::pin(tokio::time::sleep(timeout)), timeout)
            .await
    }

    /// Waits for a slot until `expiry` resolves (a sleep on the caller's clock), then fails
    /// with a queue timeout that reports `waited`.
    async fn wait_take_until(&self, mut expiry: Sleep, waited: Duration) -> Result<(), LimitError> {
        self.waiters.fetch_add(1, SeqCst);
        let _unregister = Unregister(&self.waiters);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the attempt: a release after it is not missed.
            notified.as_mut().enable();
            if self.try_take() {
                return Ok(());
            }
            // The notification first, as `tokio::time::timeout` polls its future first.
            let woken = std::future::poll_fn(|cx| {
                if notified.as_mut().poll(cx).is_ready() {
                    Poll::Ready(true)
                } else if expiry.as_mut().poll(cx).is_ready() {
                    Poll::Ready(false)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if !woken {
                return Err(LimitError::QueueTimeout { waited });
            }
        }
    }
}

/// Unregisters a waiter however its wait ends (success, timeout or cancellation).
struct Unregister<'a>(&'a AtomicU32);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// An owned slot of a [`ConcurrencyLimiter`] (can outlive the borrow, e.g. in a spawned task).
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct ConcurrencyPermit {
    inner: Arc<Inner>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// A borrowed slot of a [`ConcurrencyLimiter`]: like [`ConcurrencyPermit`] without the
/// reference count, for callers that hold the limiter anyway (the executor).
#[derive(Debug)]
#[must_use = "the slot is released as soon as the guard is dropped"]
pub struct ConcurrencyGuard<'a> {
    inner: &'a Inner,
}

impl Drop for ConcurrencyGuard<'_> {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl ConcurrencyLimiter {
    /// A limiter; `max_in_flight` must be at least 1.
    pub fn new(cfg: ConcurrencyConfig) -> Result<Self, LimitConfigError> {
        if cfg.max_in_flight == 0 {
            return Err(LimitConfigError::ZeroConcurrency);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                in_flight: AtomicU32::new(0),
                waiters: AtomicU32::new(0),
                notify: Notify::new(),
                limit: AtomicU32::new(cfg.max_in_flight),
            }),
        })
    }

    /// Takes a permit now, or fails with [`LimitError::ConcurrencyFull`].
    pub fn try_acquire(&self) -> Result<ConcurrencyPermit, LimitError> {
        if self.inner.try_take() {
            Ok(ConcurrencyPermit {
                inner: self.inner.clone(),
            })
        } else {
            Err(self.full())
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), borrowing the limiter.
    pub fn try_acquire_guard(&self) -> Result<ConcurrencyGuard<'_>, LimitError> {
        if self.inner.try_take() {
            Ok(ConcurrencyGuard { inner: &self.inner })
        } else {
            Err(self.full())
        }
    }

    /// Waits up to `timeout` for a permit ([`LimitError::QueueTimeout`] after that).
    pub async fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ConcurrencyPermit, LimitError> {
        self.inner.wait_take(timeout).await?;
        Ok(ConcurrencyPermit {
            inner: self.inner.clone(),
        })
    }

    /// Like [`acquire_timeout`](Self::acquire_timeout), borrowing the limiter.
    pub async fn acquire_guard_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ConcurrencyGuard<'_>, LimitError> {
        self.inner.wait_take(timeout).await?;
        Ok(ConcurrencyGuard { inner: &self.inner })
    }

    /// Waits up to `timeout` for a permit, measured on `clock` (the executor's way: its
    /// waits run on the clock it was built with). Borrows the limiter.
    pub async fn acquire_guard_on(
        &self,
        clock: &dyn Clock,
        timeout: Duration,
    ) -> Result<ConcurrencyGuard<'_>, LimitError> {
        if !self.inner.try_take() {
            self.inner
                .wait_take_until(clock.sleep(timeout), timeout)
                .await?;
        }
        Ok(ConcurrencyGuard { inner: &self.inner })
    }

    /// Fails fast or waits, as `on_limit` says.
    pub async fn acquire(&self, on_limit: OnLimit) -> Result<ConcurrencyPermit, LimitError> {
        match on_limit {
            OnLimit::Fail => self.try_acquire(),
            OnLimit::Wait { queue_timeout } => self.acquire_timeout(queue_timeout).await,
        }
    }

    /// Permits held right now.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(SeqCst)
    }

    /// Changes the cap for every holder of this limiter (a reload keeps one limiter per
    /// upstream, so calls in flight under the old plan and new calls share one count).
    /// Calls in flight keep their permits; a lower cap admits new calls only once enough of
    /// them finish; a higher one wakes waiters at once. `0` is ignored (the compiler
    /// rejects it).
    ///
    /// ```
    /// use tollgate::exec::limit::{ConcurrencyConfig, ConcurrencyLimiter};
    ///
    /// let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 2 }).unwrap();
    /// let (a, _b) = (lim.try_acquire().unwrap(), lim.try_acquire().unwrap());
    /// lim.set_limit(1);
    /// drop(a);
    /// assert!(lim.try_acquire().is_err(), "still 1 in flight: the new cap is full");
    /// lim.set_limit(3);
    /// assert!(lim.try_acquire().is_ok());
    /// ```
    pub fn set_limit(&self, max_in_flight: u32) {
        if max_in_flight == 0 {
            return;
        }
        let was = self.inner.limit.swap(max_in_flight, SeqCst);
        if max_in_flight > was && self.inner.waiters.load(SeqCst) > 0 {
            self.inner.notify.notify_waiters();
        }
    }

    /// The current cap.
    pub fn limit(&self) -> u32 {
        self.inner.limit.load(Relaxed)
    }

    fn full(&self) -> LimitError {
        LimitError::ConcurrencyFull {
            limit: self.limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rejected() {
        assert_eq!(
            ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 0 }).unwrap_err(),
            LimitConfigError::ZeroConcurrency
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_then_times_out_and_cancellation_frees() {
        let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 2 }).unwrap();
        let a = lim.try_acquire().unwrap();
        let _b = lim.acquire(OnLimit::Fail).await.unwrap();
        assert_eq!(lim.in_flight(), 2);
        assert_eq!(
            lim.acquire_timeout(Duration::from_secs(1))
                .await
                .unwrap_err(),
            LimitError::QueueTimeout {
                waited: Duration::from_secs(1)
            }
        );
        let l2 = lim.clone();
        let waiter = tokio::spawn(async move {
            l2.acquire(OnLimit::Wait {
                queue_timeout: Duration::from_secs(5),
            })
            .await
            .map(|_p| ())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!(lim.in_flight(), 1);

        // a task holding a permit that is aborted gives it back
        let l3 = lim.clone();
        let holder = tokio::spawn(async move {
            let _p = l3.try_acquire().unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(lim.in_flight(), 2);
        holder.abort();
        assert!(holder.await.unwrap_err().is_cancelled());
        assert_eq!(lim.in_flight(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_on_many_threads_are_woken_and_the_cap_holds() {
        use std::sync::atomic::AtomicU32;
        let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 2 }).unwrap();
        let peak = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (lim, peak) = (lim.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    // Generous timeout: a lost wake-up would show as a QueueTimeout.
                    let g = lim
                        .acquire_guard_timeout(Duration::from_secs(10))
                        .await
                        .unwrap();
                    peak.fetch_max(lim.in_flight(), SeqCst);
                    tokio::task::yield_now().await;
                    drop(g);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(SeqCst) <= 2);
        assert_eq!(lim.in_flight(), 0);
        assert_eq!(
            lim.inner.waiters.load(SeqCst),
            0,
            "every waiter unregistered"
        );
    }

    #[test]
    fn panics_return_permits() {
        let lim = ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: 1 }).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _p = lim.try_acquire().unwrap();
            panic!("boom");
        }));
        assert!(r.is_err());
        assert_eq!(lim.in_flight(), 0);
    }
}
