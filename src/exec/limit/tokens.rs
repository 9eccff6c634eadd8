//! Tokens-per-minute limiting: reserve an estimate, settle with the actual usage.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::gcra::{Gcra, MAX_SPAN};
use super::{LimitConfigError, LimitError};
pub use crate::spec::limit::TokenConfig;

const NANOS_PER_MINUTE: u64 = 60_000_000_000;

/// A weighted GCRA limiter over tokens (one `AtomicU64`, lock-free).
///
/// Reserve the estimated tokens before a call; after it, [`TokenReservation::settle`]
/// with the usage the upstream reported gives back or charges the difference. Dropping a
/// reservation without settling keeps the estimate charged.
///
/// ```
/// use tollgate::exec::limit::{TokenConfig, TokenLimiter};
///
/// let lim = TokenLimiter::new(TokenConfig { tokens_per_minute: 60_000, burst: 10_000 }).unwrap();
/// let r = lim.reserve(4_000, 0).unwrap();
/// assert_eq!(lim.available(0), 6_000);
/// r.settle(1_500, 0); // the call used fewer tokens than estimated
/// assert_eq!(lim.available(0), 8_500);
/// ```
#[derive(Debug)]
pub struct TokenLimiter {
    gcra: Gcra,
    burst: u64,
    tat: AtomicU64,
}

impl TokenLimiter {
    /// Builds a limiter; rejects zero rates or bursts and bursts spanning more than ~146
    /// years at the given rate.
    pub fn new(cfg: TokenConfig) -> Result<Self, LimitConfigError> {
        if cfg.tokens_per_minute == 0 {
            return Err(LimitConfigError::Rate(0.0));
        }
        if cfg.burst == 0 {
            return Err(LimitConfigError::ZeroBurst);
        }
        let t = NANOS_PER_MINUTE.div_ceil(cfg.tokens_per_minute).max(1);
        let cap = t
            .checked_mul(cfg.burst)
            .filter(|c| *c <= MAX_SPAN)
            .ok_or(LimitConfigError::BurstTooLarge)?;
        Ok(Self {
            gcra: Gcra { t, cap },
            burst: cfg.burst,
            tat: AtomicU64::new(0),
        })
    }

    /// A limiter for `cfg` that continues `old`'s bucket (a reload that changed the rate or
    /// the burst): the tokens `old` counts at `now` stay counted under the new rate, so a
    /// reload never refills the bucket.
    ///
    /// ```
    /// use tollgate::exec::limit::{TokenConfig, TokenLimiter};
    ///
    /// let old = TokenLimiter::new(TokenConfig { tokens_per_minute: 60_000, burst: 10_000 }).unwrap();
    /// let _r = old.reserve(4_000, 0).unwrap();
    /// let new = TokenLimiter::new_from(TokenConfig { tokens_per_minute: 30_000, burst: 30_000 }, &old, 0).unwrap();
    /// assert_eq!(new.available(0), 26_000);
    /// ```
    pub fn new_from(
        cfg: TokenConfig,
        old: &TokenLimiter,
        now: u64,
    ) -> Result<Self, LimitConfigError> {
        let lim = Self::new(cfg)?;
        lim.gcra.inherit(&lim.tat, &old.gcra, &old.tat, now);
        Ok(lim)
    }

    /// Reserves `tokens` at `now`. Refusals: [`LimitError::TokensExhausted`] with the wait,
    /// or [`LimitError::NeverAdmissible`] when `tokens > burst`.
    pub fn reserve(&self, tokens: u64, now: u64) -> Result<TokenReservation<'_>, LimitError> {
        let cost = self.cost(tokens)?;
        match self.gcra.take(&self.tat, cost, now) {
            Ok(()) => Ok(TokenReservation {
                limiter: self,
                estimate: tokens,
            }),
            Err(earliest) => Err(LimitError::TokensExhausted {
                retry_in: Duration::from_nanos(earliest.saturating_sub(now)),
            }),
        }
    }

    fn cost(&self, tokens: u64) -> Result<u64, LimitError> {
        if tokens > self.burst {
            return Err(LimitError::NeverAdmissible {
                requested: tokens,
                capacity: self.burst,
            });
        }
        // tokens <= burst, so tokens*t <= cap: no overflow.
        Ok(tokens * self.gcra.t)
    }

    /// Charges `tokens` without asking (usage that was not reserved, e.g. a call that
    /// bypassed the limiter). May push the limiter past its burst; later reservations wait.
    pub fn charge(&self, tokens: u64, now: u64) {
        self.gcra
            .charge(&self.tat, tokens.saturating_mul(self.gcra.t), now);
    }

    /// Tokens that could be reserved right now (`0..=burst`).
    pub fn available(&self, now: u64) -> u64 {
        self.gcra.headroom_units(&self.tat, now)
    }

    /// Tokens currently counted against the bucket (may exceed `burst` after
    /// [`charge`](Self::charge) or a settle above the estimate).
    pub fn in_bucket(&self, now: u64) -> u64 {
        self.gcra.used(&self.tat, now).div_ceil(self.gcra.t)
    }

    /// The configured burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// Tokens reserved on a [`TokenLimiter`]. Settle it with the actual usage; dropping it
/// keeps the estimate charged.
#[derive(Debug)]
#[must_use = "settle the reservation with the actual usage, or drop it to keep the estimate"]
pub struct TokenReservation<'a> {
    limiter: &'a TokenLimiter,
    estimate: u64,
}

impl TokenLimiter {
    /// Reconciles tokens reserved earlier whose reservation is gone (dropped, keeping the
    /// estimate, because the usage came later: a stream's last chunk): gives back
    /// `estimate - actual` or charges `actual - estimate`, as
    /// [`TokenReservation::settle`] would have.
    pub fn reconcile(&self, estimate: u64, actual: u64, now: u64) {
        TokenReservation {
            limiter: self,
            estimate,
        }
        .settle(actual, now);
    }
}

impl TokenReservation<'_> {
    /// Whether this reservation was taken from `limiter`.
    pub fn is_of(&self, limiter: &TokenLimiter) -> bool {
        std::ptr::eq(self.limiter, limiter)
    }

    /// The reserved estimate.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// Reconciles with the actual usage at `now`: gives back `estimate - actual`, or charges
    /// `actual - estimate` (unconditionally: the tokens were spent).
    pub fn settle(self, actual: u64, now: u64) {
        let l = self.limiter;
        let t = l.gcra.t;
        if actual < self.estimate {
            l.gcra.refund(&l.tat, (self.estimate - actual) * t);
        } else if actual > self.estimate {
            l.gcra
                .charge(&l.tat, (actual - self.estimate).saturating_mul(t), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn lim() -> TokenLimiter {
        TokenLimiter::new(TokenConfig {
            tokens_per_minute: 6_000,
            burst: 1_000,
        })
        .unwrap()
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(TokenLimiter::new(TokenConfig {
            tokens_per_minute: 0,
            burst: 1
        })
        .is_err());
        assert!(TokenLimiter::new(TokenConfig {
            tokens_per_minute: 1,
            burst: 0
        })
        .is_err());
        assert_eq!(
            TokenLimiter::new(TokenConfig {
                tokens_per_minute: 1,
                burst: u64::MAX
            })
            .unwrap_err(),
            LimitConfigError::BurstTooLarge
        );
        let l = TokenLimiter::new(TokenConfig {
            tokens_per_minute: u64::MAX,
            burst: 5,
        })
        .unwrap();
        assert_eq!(l.available(0), 5);
    }

    #[test]
    fn reserve_refuse_and_refill() {
        let l = lim(); // 100 tokens/s
        let _kept = l.reserve(800, 0).unwrap();
        assert_eq!(
            l.reserve(300, 0).unwrap_err(),
            LimitError::TokensExhausted {
                retry_in: Duration::from_secs(1)
            }
        );
        assert_eq!(
            l.reserve(1_001, 0).unwrap_err(),
            LimitError::NeverAdmissible {
                requested: 1_001,
                capacity: 1_000
            }
        );
        assert!(l.reserve(300, SEC).is_ok());
    }

    #[test]
    fn settle_refunds_and_charges() {
        let l = lim();
        let r = l.reserve(500, 0).unwrap();
        r.settle(200, 0);
        assert_eq!(l.in_bucket(0), 200);
        let r = l.reserve(100, 0).unwrap();
        r.settle(900, 0);
        assert_eq!(l.in_bucket(0), 1_100);
        assert_eq!(l.available(0), 0);
        // over the burst: wait until the excess drains (100 tokens/s -> 1 s for 100)
        assert!(l.reserve(1, SEC).is_err());
        assert!(l.reserve(1, SEC + SEC / 100).is_ok());
        // refund after the bucket drained changes nothing
        let r = l.reserve(10, 100 * SEC).unwrap();
        r.settle(0, 200 * SEC);
        assert_eq!(l.available(200 * SEC), 1_000);
    }
}
