//! Breaker configuration: plain values, validated once when a [`Breaker`](super::Breaker)
//! is built.

use std::time::Duration;

use super::window::BUCKETS;
pub use crate::spec::breaker::{BreakerConfig, RateRule, SlowRule};

/// Most half-open probes a breaker can track (they are counted in 16 bits).
pub const MAX_PROBES: u32 = u16::MAX as u32;

/// Largest `min_calls` a window can ever reach (each of its buckets counts up to 65 535).
pub const MAX_MIN_CALLS: u32 = BUCKETS as u32 * u16::MAX as u32;

/// Shortest sliding window: one nanosecond per bucket.
pub const MIN_WINDOW: Duration = Duration::from_nanos(BUCKETS);

/// A [`BreakerConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// `consecutive_failures = Some(0)`.
    #[error("consecutive_failures must be at least 1")]
    ZeroConsecutiveFailures,
    /// A rate threshold outside (0, 1] (or NaN).
    #[error("{rule}: threshold must be in (0, 1], got {value}")]
    Threshold {
        /// `"failure_rate"` or `"slow_call"`.
        rule: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// `min_calls` of 0 or more than a window can hold.
    #[error("{rule}: min_calls must be in 1..={MAX_MIN_CALLS}, got {value}")]
    MinCalls {
        /// `"failure_rate"` or `"slow_call"`.
        rule: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// A window shorter than [`MIN_WINDOW`].
    #[error("{rule}: window must be at least {MIN_WINDOW:?}, got {value:?}")]
    Window {
        /// `"failure_rate"` or `"slow_call"`.
        rule: &'static str,
        /// The rejected value.
        value: Duration,
    },
    /// `probes` of 0 or above [`MAX_PROBES`].
    #[error("probes must be in 1..={MAX_PROBES}, got {0}")]
    Probes(u32),
    /// `successes_to_close` of 0 or above `probes`.
    #[error("successes_to_close must be in 1..={probes} (probes), got {value}")]
    SuccessesToClose {
        /// The rejected value.
        value: u32,
        /// The configured `probes`.
        probes: u32,
    },
}

fn check_rate(
    rule: &'static str,
    threshold: f64,
    min_calls: u32,
    window: Duration,
) -> Result<(), BreakerConfigError> {
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(BreakerConfigError::Threshold {
            rule,
            value: threshold,
        });
    }
    if min_calls == 0 || min_calls > MAX_MIN_CALLS {
        return Err(BreakerConfigError::MinCalls {
            rule,
            value: min_calls,
        });
    }
    if window < MIN_WINDOW {
        return Err(BreakerConfigError::Window {
            rule,
            value: window,
        });
    }
    Ok(())
}

impl BreakerConfig {
    /// Check every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        if self.consecutive_failures == Some(0) {
            return Err(BreakerConfigError::ZeroConsecutiveFailures);
        }
        if let Some(r) = &self.failure_rate {
            check_rate("failure_rate", r.threshold, r.min_calls, r.window)?;
        }
        if let Some(s) = &self.slow_call {
            check_rate("slow_call", s.rate_threshold, s.min_calls, s.window)?;
        }
        if self.probes == 0 || self.probes > MAX_PROBES {
            return Err(BreakerConfigError::Probes(self.probes));
        }
        if self.successes_to_close == 0 || self.successes_to_close > self.probes {
            return Err(BreakerConfigError::SuccessesToClose {
                value: self.successes_to_close,
                probes: self.probes,
            });
        }
        Ok(())
    }
}

/// Duration to clock nanoseconds, saturating at `u64::MAX` (≈ 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
