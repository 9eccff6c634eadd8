//! A retry budget's settings; [`exec::retry_budget`](crate::exec::retry_budget) keeps the
//! budget.

use std::time::Duration;

/// Configuration of a [`RetryBudget`](crate::exec::retry_budget::RetryBudget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Extra attempts allowed per original request, in `[0, 1000]`.
    pub ratio: f64,
    /// Extra attempts allowed per second regardless of traffic, finite and `>= 0`.
    pub min_per_second: f64,
    /// How long a deposit or withdrawal counts, at least 1 ms.
    pub ttl: Duration,
}
