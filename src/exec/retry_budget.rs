//! A retry budget: retries, failovers and hedges may add at most a fixed fraction of load.
//!
//! A fixed "max retries" lets every request retry when an upstream is down, multiplying
//! the load on it exactly when it can least take it. A budget instead ties extra attempts
//! to recent traffic, as tower's `TpsBudget` and Envoy's retry budgets do: each original
//! request [`deposit`](RetryBudget::deposit)s, each extra attempt must
//! [`try_withdraw`](RetryBudget::try_withdraw), and a withdrawal succeeds only while
//!
//! ```text
//! withdrawals (in the last ttl) <= ratio · deposits (in the last ttl) + min_per_second · ttl
//! ```
//!
//! `min_per_second` lets a quiet service still retry a little.
//!
//! # Implementation and slack
//!
//! The last `ttl` is a ring of [`BUCKETS`] time buckets of `ttl / BUCKETS` each; a bucket
//! is one `AtomicU64` holding its window number (high 32 bits) and a count (low 32 bits),
//! so rotating a bucket and counting in it are the same compare-exchange: lock-free, no
//! allocation, nothing lost in a race. A withdrawal counts itself first, then checks the
//! sum, and takes itself back if over budget, so concurrent withdrawers can only be
//! refused too often, never admitted too often.
//!
//! The window a check sees covers the current, partial bucket plus the `BUCKETS - 1`
//! before it. Bound, for monotone time from the clock epoch to `T`:
//!
//! ```text
//! total withdrawals <= ratio · total deposits + min_per_second · (T + ttl)
//! ```
//!
//! (the `+ ttl` is the reserve of the first window; `ttl` here is rounded down to a
//! multiple of `BUCKETS` nanoseconds). Callers whose `now` lags a bucket behind another
//! thread's have their deposit counted in the newer bucket (expiring up to one bucket later)
//! — a slack of one bucket for deposits made by lagging threads. A bucket untouched for
//! 2^32 windows could alias; with `ttl = 10 s` that is 136 years.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::exec::retry_budget::{RetryBudget, RetryBudgetConfig};
//!
//! let budget = RetryBudget::new(RetryBudgetConfig {
//!     ratio: 0.2,
//!     min_per_second: 0.0,
//!     ttl: Duration::from_secs(10),
//! })
//! .unwrap();
//! for _ in 0..10 {
//!     budget.deposit(0);
//! }
//! assert!(budget.try_withdraw(0));
//! assert!(budget.try_withdraw(0));
//! assert!(!budget.try_withdraw(0)); // 20 % of 10 requests
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exec::clock::nanos;
use crate::exec::stripe::Striped;
pub use crate::spec::retry_budget::RetryBudgetConfig;

/// Number of time buckets the `ttl` is split into.
pub const BUCKETS: usize = 10;

/// Why a [`RetryBudgetConfig`] was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RetryBudgetError {
    /// `ratio` is not in `[0, 1000]`.
    #[error("retry budget ratio must be in [0, 1000], got {0}")]
    Ratio(f64),
    /// `min_per_second` is negative or not finite.
    #[error("retry budget min_per_second must be finite and >= 0, got {0}")]
    MinPerSecond(f64),
    /// `ttl` is below 1 ms.
    #[error("retry budget ttl must be at least 1ms, got {0:?}")]
    Ttl(Duration),
}

/// A lock-free retry budget; see the [module docs](self).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// `min_per_second * effective ttl`.
    reserve: f64,
    /// Nanoseconds per bucket.
    width: u64,
    /// One ring per thread stripe (`exec::stripe`): every request deposits, so two threads
    /// would otherwise write one line on every call; a withdrawal sums the rings.
    deposits: Striped<[AtomicU64; BUCKETS]>,
    withdrawals: [AtomicU64; BUCKETS],
}

#[inline]
fn pack(stamp: u32, count: u32) -> u64 {
    ((stamp as u64) << 32) | count as u64
}

#[inline]
fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Signed distance from bucket stamp `s` to window `w` (positive: `s` is older).
#[inline]
fn age(w: u32, s: u32) -> i32 {
    w.wrapping_sub(s) as i32
}

impl RetryBudget {
    /// Builds a budget, rejecting out-of-range values.
    pub fn new(cfg: RetryBudgetConfig) -> Result<Self, RetryBudgetError> {
        if !(0.0..=1000.0).contains(&cfg.ratio) {
            return Err(RetryBudgetError::Ratio(cfg.ratio));
        }
        if !(cfg.min_per_second.is_finite() && cfg.min_per_second >= 0.0) {
            return Err(RetryBudgetError::MinPerSecond(cfg.min_per_second));
        }
        if cfg.ttl < Duration::from_millis(1) {
            return Err(RetryBudgetError::Ttl(cfg.ttl));
        }
        let width = nanos(cfg.ttl) / BUCKETS as u64;
        let ttl_secs = (width * BUCKETS as u64) as f64 / 1e9;
        Ok(Self {
            ratio: cfg.ratio,
            reserve: cfg.min_per_second * ttl_secs,
            width,
            deposits: Default::default(),
            withdrawals: Default::default(),
        })
    }

    #[inline]
    fn window(&self, now: u64) -> u64 {
        now / self.width
    }

    /// Counts one in the bucket of window `w`; returns the stamp counted under.
    #[inline]
    fn add(ring: &[AtomicU64; BUCKETS], w: u64) -> u32 {
        let slot = &ring[(w % BUCKETS as u64) as usize];
        let stamp = w as u32;
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (s, c) = unpack(cur);
            let (s, c) = if s == stamp || age(stamp, s) < 0 {
                // same window, or a newer one written by a thread ahead of us
                (s, c.saturating_add(1))
            } else {
                (stamp, 1)
            };
            match slot.compare_exchange_weak(cur, pack(s, c), Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return s,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes back one count made under `stamp`, unless the bucket has since rotated (which
    /// already discarded it).
    fn undo(ring: &[AtomicU64; BUCKETS], w: u64, stamp: u32) {
        let slot = &ring[(w % BUCKETS as u64) as usize];
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            let (s, c) = unpack(cur);
            (s == stamp && c > 0).then(|| pack(s, c - 1))
        });
    }

    /// Sum of the buckets in the window ending at `w`. With `newer`, buckets stamped after
    /// `w` (by threads ahead of us) count too.
    #[inline]
    fn sum(ring: &[AtomicU64; BUCKETS], w: u64, newer: bool) -> u64 {
        let w = w as u32;
        ring.iter()
            .map(|slot| {
                let (s, c) = unpack(slot.load(Ordering::Relaxed));
                let a = age(w, s);
                if a < BUCKETS as i32 && (newer || a >= 0) {
                    c as u64
                } else {
                    0
                }
            })
            .sum()
    }

    /// Deposits in the window ending at `w`, over every stripe.
    fn deposited(&self, w: u64) -> u64 {
        (self.deposits.iter())
            .map(|ring| Self::sum(ring, w, false))
            .sum()
    }

    /// Records one original request at `now`.
    #[inline]
    pub fn deposit(&self, now: u64) {
        Self::add(self.deposits.here(), self.window(now));
    }

    /// Asks for one extra attempt (retry, failover or hedge) at `now`.
    pub fn try_withdraw(&self, now: u64) -> bool {
        let w = self.window(now);
        let stamp = Self::add(&self.withdrawals, w);
        // Counted ourselves first: concurrent withdrawers see each other.
        let withdrawn = Self::sum(&self.withdrawals, w, true) as f64;
        let deposited = self.deposited(w) as f64;
        if withdrawn <= self.ratio * deposited + self.reserve {
            true
        } else {
            Self::undo(&self.withdrawals, w, stamp);
            false
        }
    }

    /// Extra attempts that would be allowed right now (may be fractional; negative never,
    /// clamped to 0).
    pub fn balance(&self, now: u64) -> f64 {
        let w = self.window(now);
        let withdrawn = Self::sum(&self.withdrawals, w, true) as f64;
        let deposited = self.deposited(w) as f64;
        (self.ratio * deposited + self.reserve - withdrawn).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn budget(ratio: f64, min: f64) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_per_second: min,
            ttl: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[test]
    fn rejects_bad_configs() {
        let ok = RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 1.0,
            ttl: Duration::from_secs(1),
        };
        assert!(RetryBudget::new(ok).is_ok());
        for ratio in [f64::NAN, -0.1, 1001.0] {
            assert!(RetryBudget::new(RetryBudgetConfig { ratio, ..ok }).is_err());
        }
        for min_per_second in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(RetryBudget::new(RetryBudgetConfig {
                min_per_second,
                ..ok
            })
            .is_err());
        }
        assert!(RetryBudget::new(RetryBudgetConfig {
            ttl: Duration::ZERO,
            ..ok
        })
        .is_err());
        assert!(RetryBudget::new(RetryBudgetConfig {
            ttl: Duration::MAX,
            ..ok
        })
        .is_ok());
    }

    #[test]
    fn reserve_allows_min_per_second() {
        let b = budget(0.0, 1.0); // 10 per 10 s
        for _ in 0..10 {
            assert!(b.try_withdraw(0));
        }
        assert!(!b.try_withdraw(SEC));
        assert_eq!(b.balance(SEC), 0.0);
        // withdrawals expire after ttl
        assert!(b.try_withdraw(10 * SEC));
    }

    #[test]
    fn deposits_expire() {
        let b = budget(0.5, 0.0);
        for _ in 0..4 {
            b.deposit(0);
        }
        assert_eq!(b.balance(5 * SEC), 2.0);
        assert_eq!(b.balance(10 * SEC), 0.0);
        assert!(!b.try_withdraw(10 * SEC));
        assert!(b.try_withdraw(9 * SEC));
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let b = budget(1.0, 0.0);
        for _ in 0..100 {
            b.deposit(0);
        }
        let ok = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        if b.try_withdraw(0) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let ok = ok.into_inner();
        assert!(ok <= 100, "{ok}");
        assert!(ok >= 90, "{ok}"); // refusals from races are rare
    }
}
