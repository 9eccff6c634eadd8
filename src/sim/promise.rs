//! The promises the checker holds a run to, and what a broken one looks like.

use serde::{Deserialize, Serialize};

/// One promise of `docs/guarantees.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Promise {
    /// A request ends by its route's total deadline (+ one tick), limiter queueing, hedges
    /// and a stream's first byte included; no attempt is given time past it.
    Deadline,
    /// An attempt is given at most its target's per-try timeout and ends within what it
    /// was given (+ one tick).
    PerTry,
    /// Attempts ≤ what `explain` (`route_bounds`) states for the route.
    ExplainAttempts,
    /// Latency ≤ what `explain` states.
    ExplainLatency,
    /// Cost ≤ what `explain` states for the request's tokens.
    ExplainCost,
    /// Spend of the calls a budget admitted in a window ≤ limit + what they under-reserved.
    BudgetSpend,
    /// Retries, failovers and hedges ≤ ratio × requests + min_per_second × (T + ttl).
    RetryBudget,
    /// Calls admitted to an upstream ≤ rate × w + burst in every window w.
    RateWindow,
    /// Tokens admitted to an upstream in every window w ≤ tokens_per_minute/60 × w + the
    /// bucket (one minute), each call counted at the smaller of its estimate and its usage.
    TokenWindow,
    /// Calls in flight on an upstream ≤ its concurrency cap.
    Concurrency,
    /// No call starts while a breaker covering it is open; at most `probes` half-open.
    Breaker,
    /// A breaker only moves closed → open → half-open → closed/open.
    BreakerTransition,
    /// A request moves to another target only for a class `failover_on` (or an exhausted
    /// retry) allows.
    FailoverClass,
    /// A hedge starts `after` the attempt it races, or for a class the route allows.
    Hedge,
    /// Every permit comes back: nothing in flight, no budget reserved at the end.
    PermitsReturned,
    /// Each request ends in exactly one outcome.
    OneOutcome,
    /// A request runs under one plan, the one it reports.
    OnePlan,
    /// `lowest-latency` does not keep trying first a target that keeps failing.
    LowestLatencyFailures,
}

impl Promise {
    /// Every promise, in the order of `docs/guarantees.md`'s tables.
    pub const ALL: [Promise; 18] = [
        Promise::Deadline,
        Promise::PerTry,
        Promise::ExplainAttempts,
        Promise::ExplainLatency,
        Promise::ExplainCost,
        Promise::OneOutcome,
        Promise::OnePlan,
        Promise::FailoverClass,
        Promise::Hedge,
        Promise::LowestLatencyFailures,
        Promise::BudgetSpend,
        Promise::RetryBudget,
        Promise::RateWindow,
        Promise::TokenWindow,
        Promise::Concurrency,
        Promise::Breaker,
        Promise::BreakerTransition,
        Promise::PermitsReturned,
    ];

    /// Its kebab-case name, as in `docs/guarantees.md`.
    pub fn name(self) -> &'static str {
        match self {
            Promise::Deadline => "deadline",
            Promise::PerTry => "per-try",
            Promise::ExplainAttempts => "explain-attempts",
            Promise::ExplainLatency => "explain-latency",
            Promise::ExplainCost => "explain-cost",
            Promise::BudgetSpend => "budget-spend",
            Promise::RetryBudget => "retry-budget",
            Promise::RateWindow => "rate-window",
            Promise::TokenWindow => "token-window",
            Promise::Concurrency => "concurrency",
            Promise::Breaker => "breaker",
            Promise::BreakerTransition => "breaker-transition",
            Promise::FailoverClass => "failover-class",
            Promise::Hedge => "hedge",
            Promise::PermitsReturned => "permits-returned",
            Promise::OneOutcome => "one-outcome",
            Promise::OnePlan => "one-plan",
            Promise::LowestLatencyFailures => "lowest-latency-failures",
        }
    }
}

impl std::fmt::Display for Promise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// Which.
    pub promise: Promise,
    /// Virtual time, ms.
    pub at_ms: f64,
    /// The request, if one is to blame.
    pub request: Option<u64>,
    /// What was seen against what was promised.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] at {:.3}ms", self.promise, self.at_ms)?;
        if let Some(r) = self.request {
            write!(f, " request #{r}")?;
        }
        write!(f, ": {}", self.detail)
    }
}
