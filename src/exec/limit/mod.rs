//! Rate, token and concurrency limits.
//!
//! Three independent limits guard an upstream:
//! - [`RateLimiter`]: calls per second with a burst;
//! - [`TokenLimiter`]: tokens per minute, reserved as an estimate and settled with the
//!   usage the upstream reports;
//! - [`ConcurrencyLimiter`]: calls in flight, with RAII permits.
//!
//! # Why GCRA
//!
//! The rate and token limiters use the generic cell rate algorithm (GCRA), as `governor`
//! does. It is a token bucket expressed as a single number, the *theoretical arrival time*
//! (TAT): each admission pushes the TAT forward by the cost of the request, and a request
//! is admitted while the TAT is no more than the burst ahead of now. So:
//! - the whole state is one `AtomicU64`, updated with one compare-exchange per admission
//!   and only read on refusal: lock-free, no allocation, cheap to keep per upstream;
//! - there is no background refill task and no timer: time enters only as the `now`
//!   argument, which the executor reads once per decision and tests choose freely;
//! - the bound is exact for any arrival sequence: in any window of length `w` at most
//!   `rate·w + burst` units are admitted, and a refusal says precisely how long to wait;
//! - upstream hints (`x-ratelimit-remaining`/`-reset`) fold in by pushing the TAT forward
//!   ([`RateLimiter::tighten`]), which can only make the limiter stricter.
//!
//! Sliding-window counters need a lock or several atomics and approximate the window;
//! leaky buckets with a refill task need a timer per limiter.
//!
//! # Refusals
//!
//! All refusals are a [`LimitError`]; [`OnLimit`] says whether the executor fails fast or
//! waits (bounded by a queue timeout) when a limit is hit.

use std::time::Duration;

mod concurrency;
mod gcra;
mod rate;
mod tokens;

pub use concurrency::{ConcurrencyConfig, ConcurrencyGuard, ConcurrencyLimiter, ConcurrencyPermit};
pub use rate::{NotUntil, RateConfig, RateLimiter, RateSnapshot};
pub use tokens::{TokenConfig, TokenLimiter, TokenReservation};

/// Why a limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The rate limiter is out of burst; retry after `retry_in`.
    #[error("rate limited: retry in {retry_in:?}")]
    RateLimited {
        /// How long until the call would be admitted.
        retry_in: Duration,
    },
    /// The token limiter cannot cover the estimate yet; retry after `retry_in`.
    #[error("token budget exhausted: retry in {retry_in:?}")]
    TokensExhausted {
        /// How long until the estimate would be admitted.
        retry_in: Duration,
    },
    /// All concurrency slots are taken.
    #[error("concurrency limit of {limit} reached")]
    ConcurrencyFull {
        /// The configured limit.
        limit: u32,
    },
    /// Waited for a concurrency slot for the whole queue timeout.
    #[error("no concurrency slot within {waited:?}")]
    QueueTimeout {
        /// How long we waited.
        waited: Duration,
    },
    /// The limit is shared (`state = "shared"`), its backend is unreachable and
    /// `fail_mode = "closed"`.
    #[error("shared limit unavailable (fail_mode = \"closed\")")]
    SharedUnavailable,
    /// The request is larger than the limiter's burst: it would never be admitted.
    #[error("request of {requested} exceeds the burst of {capacity}: it can never be admitted")]
    NeverAdmissible {
        /// Calls or tokens requested.
        requested: u64,
        /// The burst.
        capacity: u64,
    },
}

impl LimitError {
    /// How long to wait before the same request could pass, if waiting can help.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_in } | Self::TokensExhausted { retry_in } => Some(*retry_in),
            _ => None,
        }
    }
}

/// Why a limiter configuration was rejected.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LimitConfigError {
    /// The rate is zero, negative, not finite, or so low that one burst spans centuries.
    #[error("rate must be a finite positive number of reasonable size, got {0}")]
    Rate(f64),
    /// The burst is zero.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// The burst at the given rate spans more than ~146 years.
    #[error("burst too large for the rate")]
    BurstTooLarge,
    /// The concurrency limit is zero.
    #[error("concurrency limit must be at least 1")]
    ZeroConcurrency,
    /// The concurrency limit exceeds what the semaphore supports.
    #[error("concurrency limit too large")]
    ConcurrencyTooLarge,
}

pub use crate::spec::limit::OnLimit;

impl OnLimit {
    /// The same policy with its queue timeout cut to `max` (what is left before the
    /// request's deadline).
    #[inline]
    pub fn capped(self, max: Duration) -> OnLimit {
        match self {
            OnLimit::Fail => OnLimit::Fail,
            OnLimit::Wait { queue_timeout } => OnLimit::Wait {
                queue_timeout: queue_timeout.min(max),
            },
        }
    }

    /// For a refusal that says "retry in `retry_in`": `Some(retry_in)` to sleep and
    /// re-check, or `None` to fail now (fail-fast, or the wait exceeds the queue timeout).
    pub fn wait_for(&self, retry_in: Duration) -> Option<Duration> {
        match *self {
            OnLimit::Fail => None,
            OnLimit::Wait { queue_timeout } => (retry_in <= queue_timeout).then_some(retry_in),
        }
    }

    /// What is left of the policy once `waited` has gone by: an admission's waits, for
    /// every limiter and every refill it waits for, add up to at most one `queue_timeout`.
    pub fn after(self, waited: Duration) -> OnLimit {
        match self {
            OnLimit::Fail => OnLimit::Fail,
            OnLimit::Wait { queue_timeout } => OnLimit::Wait {
                queue_timeout: queue_timeout.saturating_sub(waited),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_limit_after_leaves_what_is_left_of_one_queue_timeout() {
        let s = Duration::from_secs;
        let w = OnLimit::Wait {
            queue_timeout: s(2),
        };
        assert_eq!(w.after(s(1)).wait_for(s(1)), Some(s(1)));
        assert_eq!(w.after(s(1)).wait_for(s(2)), None, "only 1 s is left");
        assert_eq!(w.after(s(5)).wait_for(Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(w.after(s(5)).wait_for(Duration::from_nanos(1)), None);
        assert!(matches!(OnLimit::Fail.after(s(1)), OnLimit::Fail));
    }

    #[test]
    fn on_limit_wait_for() {
        let s = Duration::from_secs;
        assert_eq!(OnLimit::Fail.wait_for(s(0)), None);
        let w = OnLimit::Wait {
            queue_timeout: s(2),
        };
        assert_eq!(w.wait_for(s(1)), Some(s(1)));
        assert_eq!(w.wait_for(s(3)), None);
        assert_eq!(
            LimitError::RateLimited { retry_in: s(1) }.retry_in(),
            Some(s(1))
        );
        assert_eq!(LimitError::ConcurrencyFull { limit: 1 }.retry_in(), None);
    }
}
