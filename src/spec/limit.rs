//! A limiter's settings: a request rate and a token rate; [`exec::limit`](crate::exec::limit)
//! builds the limiters; and what admission does when one cannot admit a call at once.

use std::time::Duration;

/// Configuration of a [`RateLimiter`](crate::exec::limit::RateLimiter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Sustained rate in calls per second; finite and `> 0`. Rounded *down* to a whole
    /// number of nanoseconds per call (rates above 1e9/s act as 1e9/s), so the limiter is
    /// never looser than configured.
    pub rate_per_sec: f64,
    /// Calls that may be admitted at once after an idle period; `>= 1`.
    pub burst: u32,
}

/// Configuration of a [`TokenLimiter`](crate::exec::limit::TokenLimiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenConfig {
    /// Sustained tokens per minute; `>= 1`. Each token costs `ceil(60 s / tokens_per_minute)`
    /// nanoseconds of bucket time (at least 1 ns), so rounding only ever makes the limiter
    /// stricter (by under 0.01 % below 6e8 tokens/minute).
    pub tokens_per_minute: u64,
    /// Most tokens admissible at once (bucket size); `>= 1`. A single reservation above it
    /// is [`LimitError::NeverAdmissible`](crate::exec::limit::LimitError::NeverAdmissible).
    pub burst: u64,
}

/// What to do when a limit is hit: the policy's `on_limit` with its `queue_timeout`,
/// compiled once into the plan and read as is by admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLimit {
    /// Refuse at once.
    Fail,
    /// Wait, but no longer than `queue_timeout` in all.
    Wait {
        /// Longest wait for the permits of one admission (see
        /// [`OnLimit::after`](crate::exec::limit::OnLimit::after)).
        queue_timeout: Duration,
    },
}
