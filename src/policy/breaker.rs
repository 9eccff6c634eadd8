//! `[breakers.NAME]`: when to stop calling a failing upstream, and how to come back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// A circuit breaker policy. It opens when any configured rule trips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Open after this many failures in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Open when the failure rate over a sliding window reaches a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// Open when too many calls are slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    /// How long the breaker stays open before probing (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Duration>,
    /// Probing after the open period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open: Option<HalfOpen>,
    /// Failure classes that count as failures (default `["connect", "timeout", "5xx"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_on: Option<Vec<String>>,
    /// `local` (default): each instance trips on what it sees; `shared`: an instance that
    /// trips publishes it in `[state.redis]` and the others open too, within one poll.
    #[serde(default)]
    pub state: super::StateScope,
}

/// Failure rate over a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// Fraction of failed calls, in (0, 1], that opens the breaker.
    pub threshold: f64,
    /// Calls the window must hold before the rate counts (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// Length of the sliding window (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Slow-call rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowCall {
    /// A call taking longer than this is slow.
    pub over: Duration,
    /// Fraction of slow calls, in (0, 1], that opens the breaker.
    pub rate_threshold: f64,
    /// Calls the window must hold before the rate counts (default: `failure_rate.min_calls`, or 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// Sliding window (default: `failure_rate.window`, or 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Half-open probing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HalfOpen {
    /// Most calls let through while half-open (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Successful probes that close the breaker (default 1; at most `probes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successes_to_close: Option<u32>,
}
