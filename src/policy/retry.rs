//! `[retry.NAME]`: how failed attempts are retried.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// A retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts on one target, the first included (default 3; `1` means no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts (default exponential, base 100ms, factor 2, max 10s, full jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Failure classes that are retried: `connect`, `timeout`, status codes (`429`), status
    /// ranges (`5xx`), or error-body codes (`rate_limit_exceeded`).
    /// Default: `["connect", "timeout", "429", "5xx"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    /// Whether and how far to honour a server's `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfter>,
    /// A retry budget: retries may add at most this much load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Overrides for one failure class, keyed like `retry_on` entries (e.g. `[retry.x.on.429]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub on: BTreeMap<String, RetryOverride>,
}

/// A per-class override of a retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// Attempts on one target when failures are of this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff used after a failure of this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// The shape of the delay before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// `base · factor^(n-1)`, capped at `max`.
    #[default]
    Exponential,
    /// Always `base`.
    Constant,
    /// AWS "decorrelated jitter": random in `[base, previous · 3]`, capped at `max`.
    Decorrelated,
}

/// How the delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in `[0, d]`.
    #[default]
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[d·(1-r), d·(1+r)]`, capped at `max`; `r` is `jitter_ratio`.
    Proportional,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// `exponential` (default), `constant` or `decorrelated`.
    #[serde(default)]
    pub kind: BackoffKind,
    /// First delay (default 100ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Growth per attempt for `exponential` (default 2.0; at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Cap on any one delay (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    /// `none`, `full` (default), `equal` or `proportional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// Spread for `proportional` jitter, in (0, 1] (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ratio: Option<f64>,
}

/// Honouring a server's `Retry-After` (header or `error.retry_after` in the body).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryAfter {
    /// Wait at least what the server asks (default true).
    #[serde(default = "yes")]
    pub honor: bool,
    /// Never wait longer than this for one retry (default 60s); a server asking more fails
    /// over or gives up instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

fn yes() -> bool {
    true
}

/// A retry budget, as in Envoy and tower: retries are allowed while they stay under
/// `ratio` of recent requests, plus `min_per_second` always.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed per request, on average (e.g. 0.2 = 20% extra load).
    pub ratio: f64,
    /// Retries per second always allowed, so low traffic can still retry (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<f64>,
    /// How long a request counts towards the budget (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}
