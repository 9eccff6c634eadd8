//! A cap on calls in flight, with RAII permits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{LimitConfigError, LimitError, OnLimit};

/// Configuration of a [`ConcurrencyLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyConfig {
    /// Most calls in flight at once; `>= 1`.
    pub max_in_flight: u32,
}

/// At most `max_in_flight` permits exist at once. A permit is returned when it is dropped,
/// which happens on success, error, panic (unwinding) and when the future holding it is
/// cancelled alike. A waiter that is cancelled leaves the queue without taking a permit.
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
    sem: Arc<Semaphore>,
    limit: u32,
}

/// Proof of a slot in a [`ConcurrencyLimiter`]; the slot is freed on drop.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct ConcurrencyPermit {
    _permit: OwnedSemaphorePermit,
}

impl ConcurrencyLimiter {
    /// Builds a limiter; rejects a zero limit.
    pub fn new(cfg: ConcurrencyConfig) -> Result<Self, LimitConfigError> {
        if cfg.max_in_flight == 0 {
            return Err(LimitConfigError::ZeroConcurrency);
        }
        // u32::MAX is below Semaphore::MAX_PERMITS (usize::MAX >> 3) on 64-bit targets;
        // reject rather than panic on smaller ones.
        if cfg.max_in_flight as usize > Semaphore::MAX_PERMITS {
            return Err(LimitConfigError::ConcurrencyTooLarge);
        }
        Ok(Self {
            sem: Arc::new(Semaphore::new(cfg.max_in_flight as usize)),
            limit: cfg.max_in_flight,
        })
    }

    /// Takes a slot if one is free right now (lock-free), else
    /// [`LimitError::ConcurrencyFull`].
    pub fn try_acquire(&self) -> Result<ConcurrencyPermit, LimitError> {
        // The semaphore is never closed, so the only error is "no permits".
        self.sem
            .clone()
            .try_acquire_owned()
            .map(|p| ConcurrencyPermit { _permit: p })
            .map_err(|_| LimitError::ConcurrencyFull { limit: self.limit })
    }

    /// Waits (FIFO) up to `timeout` for a slot, else [`LimitError::QueueTimeout`].
    pub async fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ConcurrencyPermit, LimitError> {
        if let Ok(p) = self.try_acquire() {
            return Ok(p);
        }
        match tokio::time::timeout(timeout, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(ConcurrencyPermit { _permit: p }),
            // Closed: never happens, we never close the semaphore.
            Ok(Err(_)) => Err(LimitError::ConcurrencyFull { limit: self.limit }),
            Err(_) => Err(LimitError::QueueTimeout { waited: timeout }),
        }
    }

    /// Fails fast or waits, as `on_limit` says.
    pub async fn acquire(&self, on_limit: OnLimit) -> Result<ConcurrencyPermit, LimitError> {
        match on_limit {
            OnLimit::Fail => self.try_acquire(),
            OnLimit::Wait { queue_timeout } => self.acquire_timeout(queue_timeout).await,
        }
    }

    /// Calls currently holding a permit.
    pub fn in_flight(&self) -> u32 {
        // available <= limit always, so the subtraction cannot underflow; saturate anyway.
        (self.limit as usize).saturating_sub(self.sem.available_permits()) as u32
    }

    /// The configured limit.
    pub fn limit(&self) -> u32 {
        self.limit
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
