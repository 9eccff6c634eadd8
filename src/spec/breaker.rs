//! A breaker's settings: the plan resolves them, [`exec::breaker`](crate::exec::breaker)
//! validates them and runs the breaker.

use std::time::Duration;

/// When and how a [`Breaker`](crate::exec::breaker::Breaker) opens and closes. Any configured rule trips it.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (at least 1).
    pub consecutive_failures: Option<u32>,
    /// Open when the failure rate over a sliding window reaches a threshold.
    pub failure_rate: Option<RateRule>,
    /// Open when the share of slow calls over a sliding window reaches a threshold.
    pub slow_call: Option<SlowRule>,
    /// How long the breaker stays open before admitting probes.
    pub open_for: Duration,
    /// Most calls admitted while half-open (1 ..= [`MAX_PROBES`](crate::exec::breaker::MAX_PROBES)).
    pub probes: u32,
    /// Successful probes that close the breaker (1 ..= `probes`).
    pub successes_to_close: u32,
}

/// Failure-rate rule: open when, over `window`, at least `min_calls` calls were recorded
/// and the share of failures is at least `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateRule {
    /// Failure share in (0, 1].
    pub threshold: f64,
    /// Calls the window must hold before the rate counts (1 ..= [`MAX_MIN_CALLS`](crate::exec::breaker::MAX_MIN_CALLS)).
    pub min_calls: u32,
    /// Sliding window length (at least [`MIN_WINDOW`](crate::exec::breaker::MIN_WINDOW)).
    pub window: Duration,
}

/// Slow-call rule: a call is slow when it took longer than `over`; open when, over
/// `window`, at least `min_calls` calls were recorded and the share of slow ones is at least
/// `rate_threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowRule {
    /// A call taking strictly longer than this is slow.
    pub over: Duration,
    /// Slow share in (0, 1].
    pub rate_threshold: f64,
    /// Calls the window must hold before the rate counts (1 ..= [`MAX_MIN_CALLS`](crate::exec::breaker::MAX_MIN_CALLS)).
    pub min_calls: u32,
    /// Sliding window length (at least [`MIN_WINDOW`](crate::exec::breaker::MIN_WINDOW)).
    pub window: Duration,
}
