//! Requests-per-second limiting with GCRA on a single `AtomicU64`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::gcra::{Gcra, MAX_SPAN};
use super::{LimitConfigError, LimitError};
use crate::exec::clock::nanos;
pub use crate::spec::limit::RateConfig;

/// The limiter is not admitting yet: retry at [`earliest`](NotUntil::earliest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil {
    earliest: u64,
    now: u64,
}

impl NotUntil {
    /// Clock time (nanoseconds) at which the same request would first be admitted, absent
    /// other callers.
    pub fn earliest(&self) -> u64 {
        self.earliest
    }

    /// How long to wait from the decision time.
    pub fn wait(&self) -> Duration {
        Duration::from_nanos(self.earliest.saturating_sub(self.now))
    }

    /// As a [`LimitError::RateLimited`].
    pub fn into_rate_error(self) -> LimitError {
        LimitError::RateLimited {
            retry_in: self.wait(),
        }
    }
}

impl From<NotUntil> for LimitError {
    fn from(n: NotUntil) -> Self {
        n.into_rate_error()
    }
}

/// A GCRA rate limiter: `rate_per_sec` sustained, `burst` at once.
///
/// In any window of length `w` it admits at most `rate·w + burst` calls, for any arrival
/// sequence, and is safe to share between threads (`&self` methods, one compare-exchange
/// per admission, a plain load per refusal).
///
/// ```
/// use tollgate::exec::limit::{RateConfig, RateLimiter};
///
/// let lim = RateLimiter::new(RateConfig { rate_per_sec: 10.0, burst: 2 }).unwrap();
/// let now = 0;
/// assert!(lim.check(now).is_ok());
/// assert!(lim.check(now).is_ok());
/// let refused = lim.check(now).unwrap_err();
/// assert_eq!(refused.wait(), std::time::Duration::from_millis(100));
/// assert!(lim.check(100_000_000).is_ok());
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    gcra: Gcra,
    burst: u32,
    tat: AtomicU64,
}

impl RateLimiter {
    /// Builds a limiter, rejecting non-finite or non-positive rates, a zero burst, and
    /// rates so low that `burst` calls span more than ~146 years.
    pub fn new(cfg: RateConfig) -> Result<Self, LimitConfigError> {
        let r = cfg.rate_per_sec;
        if !(r.is_finite() && r > 0.0) {
            return Err(LimitConfigError::Rate(r));
        }
        if cfg.burst == 0 {
            return Err(LimitConfigError::ZeroBurst);
        }
        let t = (1e9 / r).ceil().max(1.0);
        if t > MAX_SPAN as f64 {
            return Err(LimitConfigError::Rate(r));
        }
        let t = t as u64;
        let cap = t
            .checked_mul(cfg.burst as u64)
            .filter(|c| *c <= MAX_SPAN)
            .ok_or(LimitConfigError::Rate(r))?;
        Ok(Self {
            gcra: Gcra { t, cap },
            burst: cfg.burst,
            tat: AtomicU64::new(0),
        })
    }

    /// A limiter for `cfg` that continues `old`'s bucket (a reload that changed the rate or
    /// the burst): the calls `old` holds in its bucket at `now` stay counted, converted to
    /// the new emission interval, so the new limit applies at once and a reload never
    /// refills the bucket. If the new burst is smaller than what is in the bucket, nothing is
    /// admitted until enough has drained at the new rate.
    ///
    /// ```
    /// use tollgate::exec::limit::{RateConfig, RateLimiter};
    ///
    /// let old = RateLimiter::new(RateConfig { rate_per_sec: 10.0, burst: 5 }).unwrap();
    /// for _ in 0..5 {
    ///     old.check(0).unwrap();
    /// }
    /// // The policy now allows 20/s with a burst of 8: 5 calls are still in the bucket.
    /// let new = RateLimiter::new_from(RateConfig { rate_per_sec: 20.0, burst: 8 }, &old, 0).unwrap();
    /// assert_eq!(new.headroom(0), 3);
    /// ```
    pub fn new_from(
        cfg: RateConfig,
        old: &RateLimiter,
        now: u64,
    ) -> Result<Self, LimitConfigError> {
        let lim = Self::new(cfg)?;
        lim.gcra.inherit(&lim.tat, &old.gcra, &old.tat, now);
        Ok(lim)
    }

    /// Admits one call at `now`, or says when to come back.
    #[inline]
    pub fn check(&self, now: u64) -> Result<(), NotUntil> {
        self.gcra
            .take(&self.tat, self.gcra.t, now)
            .map_err(|earliest| NotUntil { earliest, now })
    }

    /// Admits `n` calls at once, or none. `n > burst` can never be admitted:
    /// [`LimitError::NeverAdmissible`]; otherwise refusals are [`LimitError::RateLimited`].
    /// `n == 0` is always admitted.
    pub fn check_n(&self, n: u32, now: u64) -> Result<(), LimitError> {
        if n == 0 {
            return Ok(());
        }
        if n > self.burst {
            return Err(LimitError::NeverAdmissible {
                requested: n as u64,
                capacity: self.burst as u64,
            });
        }
        // n <= burst, so n*t <= cap <= MAX_SPAN: no overflow.
        let cost = self.gcra.t * n as u64;
        self.gcra
            .take(&self.tat, cost, now)
            .map_err(|earliest| NotUntil { earliest, now }.into())
    }

    /// Applies an upstream's `x-ratelimit-remaining` / `x-ratelimit-reset`: from `now`
    /// until `now + reset_in`, admit at most `remaining` more calls. Pushes the TAT
    /// forward as needed and never loosens the limiter.
    ///
    /// With TAT `T`, the `k`-th further admission needs `now >= T + k·t - cap`, so raising
    /// `T` to `reset_at + cap - (remaining+1)·t` keeps the `remaining+1`-th out until the
    /// reset. A single TAT cannot say "`remaining` now, then nothing until the reset": the
    /// remaining calls are admitted at the limiter's own pace, as late as needed to finish
    /// by the reset. When `remaining` is small next to `rate · reset_in` this means waiting
    /// for most of the reset window: conservative, never over the upstream's budget.
    pub fn tighten(&self, remaining: u64, reset_in: Duration, now: u64) {
        let reset_at = now.saturating_add(nanos(reset_in));
        let floor = reset_at
            .saturating_add(self.gcra.cap)
            .saturating_sub(remaining.saturating_add(1).saturating_mul(self.gcra.t));
        self.gcra.raise_to(&self.tat, floor);
    }

    /// How many calls would be admitted right now (0..=burst).
    pub fn headroom(&self, now: u64) -> u32 {
        // <= cap / t == burst, which fits in u32.
        self.gcra.headroom_units(&self.tat, now) as u32
    }

    /// A point-in-time view for metrics.
    pub fn snapshot(&self, now: u64) -> RateSnapshot {
        RateSnapshot {
            headroom: self.headroom(now),
            burst: self.burst,
            emission_interval: Duration::from_nanos(self.gcra.t),
            next_free_in: Duration::from_nanos(
                self.gcra
                    .used(&self.tat, now)
                    .saturating_sub(self.gcra.cap - self.gcra.t),
            ),
        }
    }

    /// Nanoseconds between admissions at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.gcra.t)
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// Observability view of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSnapshot {
    /// Calls that would be admitted right now.
    pub headroom: u32,
    /// Configured burst.
    pub burst: u32,
    /// Time between admissions at the sustained rate.
    pub emission_interval: Duration,
    /// Wait until one call would be admitted (zero if one is admitted now).
    pub next_free_in: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rejects_bad_configs() {
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-30] {
            assert!(RateLimiter::new(RateConfig {
                rate_per_sec: r,
                burst: 1
            })
            .is_err());
        }
        assert_eq!(
            RateLimiter::new(RateConfig {
                rate_per_sec: 1.0,
                burst: 0
            })
            .unwrap_err(),
            LimitConfigError::ZeroBurst
        );
        // huge rates clamp to 1 ns per call
        let l = RateLimiter::new(RateConfig {
            rate_per_sec: 1e12,
            burst: u32::MAX,
        })
        .unwrap();
        assert_eq!(l.emission_interval(), Duration::from_nanos(1));
    }

    #[test]
    fn check_n_and_never() {
        let l = RateLimiter::new(RateConfig {
            rate_per_sec: 100.0,
            burst: 5,
        })
        .unwrap();
        assert_eq!(
            l.check_n(6, 0),
            Err(LimitError::NeverAdmissible {
                requested: 6,
                capacity: 5
            })
        );
        l.check_n(3, 0).unwrap();
        assert_eq!(l.headroom(0), 2);
        assert_eq!(
            l.check_n(3, 0),
            Err(LimitError::RateLimited {
                retry_in: Duration::from_millis(10)
            })
        );
        l.check_n(3, 10 * MS).unwrap();
        assert!(l.check_n(0, 10 * MS).is_ok());
    }

    #[test]
    fn tighten_limits_until_reset_and_never_loosens() {
        let l = RateLimiter::new(RateConfig {
            rate_per_sec: 1000.0,
            burst: 100,
        })
        .unwrap();
        assert_eq!(l.headroom(0), 100);
        l.tighten(2, Duration::from_secs(1), 0);
        assert_eq!(l.headroom(0), 0);
        assert_eq!(l.check(0).unwrap_err().wait(), Duration::from_millis(998));
        l.check(998 * MS).unwrap();
        l.check(999 * MS).unwrap();
        assert!(l.check(999 * MS).is_err());
        assert!(l.check(1000 * MS).is_ok());
        // a looser report does nothing
        let before = l.snapshot(1000 * MS);
        l.tighten(1_000_000, Duration::from_secs(0), 1000 * MS);
        assert_eq!(l.snapshot(1000 * MS), before);
        l.tighten(0, Duration::from_millis(5), 1000 * MS);
        assert_eq!(l.headroom(1000 * MS), 0);
        let s = l.snapshot(1000 * MS);
        assert_eq!(s.next_free_in, Duration::from_millis(5));
    }

    #[test]
    fn concurrent_callers_never_exceed_burst() {
        let l = RateLimiter::new(RateConfig {
            rate_per_sec: 1.0,
            burst: 1000,
        })
        .unwrap();
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if l.check(0).is_ok() {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 1000);
    }
}
