//! Static bounds: what the plan alone says a request can cost at worst.
//!
//! Per route, upper bounds of what the executor (`src/exec/executor.rs`) can do with one
//! request that stays on the route (a budget's reroute continues under the bounds of the
//! route it goes to):
//!
//! - **attempts**: on each target at most `A` attempts, `A` the largest `max_attempts` of
//!   the retry policy and its per-class overrides (1 when `retry_on` is empty), plus the
//!   hedges: the executor hedges only the request's first attempt, on the next targets in
//!   order, so at most `min(max_extra, targets - 1)` of them (none on a one-target route).
//! - **schedule**: the policy's own timetable: every attempt using its whole per-try
//!   timeout; before retry `k` on a target, the longest backoff any failure class still
//!   retried at `k` may draw (its override's backoff or the policy's, jitter included); and a
//!   hedge race lasting until its last hedge (launched `after` apart) times out.
//! - **retry_after**: what honoured `Retry-After` waits add to that: before retry `k`, the
//!   executor sleeps `max(backoff, Retry-After)` and refuses a `Retry-After` above
//!   `retry_after.max`, so at most `max(backoff_k, retry_after.max)`.
//! - **queueing**: limiter waits before each attempt (and each hedge) with `on_limit =
//!   "wait"`: up to one `queue_timeout` in all for the upstream's limiters (concurrency,
//!   tokens, request rate, every refill waited for: the executor takes every wait of one
//!   admission out of one queue timeout), plus one `[state.redis] timeout` for each shared
//!   budget or limiter on the way.
//! - **latency**: the sum of the three, cut by the route's total deadline (the executor
//!   gives an attempt only what is left of the deadline after its admission).
//! - **cost**: every attempt and hedge billed in full for the given token counts.
//!
//! Every step saturates (`Duration::MAX`, `u32::MAX`, `f64` infinity) and the work is
//! independent of `max_attempts`: a retry schedule is summed exactly for its first
//! [`EXACT_RETRIES`] retries per class of failure, and each later retry is counted at the
//! largest delay of its stretch (exact once the backoff has reached its cap, an upper bound
//! before).

use std::time::Duration;

use super::{Plan, RetryPolicy, Route, RouteId, RouteTarget, StateScope};
use crate::spec::backoff::BackoffConfig;
use crate::spec::limit::OnLimit;
use crate::spec::price::Usage;

/// Most attempts on one target a retry policy or one of its per-class overrides may ask
/// for (`max_attempts`); more is a compile error.
pub const MAX_ATTEMPTS: u32 = 1_000;

/// Retries of each stretch of a schedule summed one by one; later ones are counted at the
/// stretch's largest delay (see the [module docs](self)).
pub const EXACT_RETRIES: u32 = 64;

/// Token counts a cost bound is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounts {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
}

impl Default for TokenCounts {
    /// 1,000 in, 500 out.
    fn default() -> Self {
        TokenCounts {
            input: 1000,
            output: 500,
        }
    }
}

/// Worst-case figures for one route (see the [module docs](self) for each term).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteBounds {
    /// Most attempts one request can make, across targets and hedges.
    pub attempts: u32,
    /// Of those, the hedges (0 on a one-target route).
    pub hedges: u32,
    /// Longest one request can take: `unbounded_latency` cut by the total deadline.
    pub latency: Duration,
    /// `schedule + retry_after + queueing`: the longest without the deadline.
    pub unbounded_latency: Duration,
    /// The policy's own schedule: every attempt timing out, every backoff at its ceiling,
    /// hedges launched and timing out; no server-requested waits or limiter queueing. The
    /// compiler warns when this alone cannot fit the total timeout.
    pub schedule: Duration,
    /// What honoured `Retry-After` waits (each up to `retry_after.max`) add to `schedule`.
    pub retry_after: Duration,
    /// Limiter and shared-state waits before attempts and hedges.
    pub queueing: Duration,
    /// Cost if every attempt were billed in full; `None` if a target has no price.
    pub worst_cost_usd: Option<f64>,
    /// Cheapest and dearest single successful call over the targets with a price.
    pub success_cost_usd: Option<(f64, f64)>,
}

/// Computes the bounds of a route.
pub fn route_bounds(plan: &Plan, route: RouteId, tokens: TokenCounts) -> RouteBounds {
    let r = plan.route(route);
    let retry = plan.retry(r.retry);
    let per_target = attempts_per_target(retry);
    let waits = retry_waits(retry, per_target);
    let hedges = hedges(r);
    let mut b = RouteBounds {
        attempts: 0,
        hedges,
        latency: Duration::ZERO,
        unbounded_latency: Duration::ZERO,
        schedule: Duration::ZERO,
        retry_after: Duration::ZERO,
        queueing: Duration::ZERO,
        worst_cost_usd: Some(0.0),
        success_cost_usd: None,
    };
    let (mut per_try_min, mut per_try_max) = (Duration::MAX, Duration::ZERO);
    let mut max_wait = Duration::ZERO;
    for t in &r.targets {
        let wait = admission_wait(plan, r, t);
        let per_try = t.timeouts.per_try;
        b.attempts = b.attempts.saturating_add(per_target);
        b.schedule = b
            .schedule
            .saturating_add(per_try.saturating_mul(per_target))
            .saturating_add(waits.backoff);
        b.retry_after = b.retry_after.saturating_add(waits.retry_after);
        b.queueing = b.queueing.saturating_add(wait.saturating_mul(per_target));
        max_wait = max_wait.max(wait);
        per_try_min = per_try_min.min(per_try);
        per_try_max = per_try_max.max(per_try);
        let model = plan.model(t.model);
        match model.price {
            Some(p) => {
                let c = p
                    .cost(Usage {
                        input_tokens: tokens.input,
                        output_tokens: tokens.output,
                    })
                    .as_dollars();
                b.worst_cost_usd = b.worst_cost_usd.map(|w| w + c * f64::from(per_target));
                b.success_cost_usd = Some(
                    b.success_cost_usd
                        .map_or((c, c), |(lo, hi)| (lo.min(c), hi.max(c))),
                );
            }
            None => b.worst_cost_usd = None,
        }
    }
    if let (Some(h), true) = (r.hedge, hedges > 0) {
        // The race lasts until the last hedge (launched `after` apart, each after its own
        // admission) has timed out, instead of the first attempt's per-try timeout.
        b.attempts = b.attempts.saturating_add(hedges);
        b.schedule = b
            .schedule
            .saturating_add(h.after.saturating_mul(hedges))
            .saturating_add(per_try_max.saturating_sub(per_try_min));
        b.queueing = b.queueing.saturating_add(max_wait.saturating_mul(hedges));
        if let (Some(w), Some((_, hi))) = (b.worst_cost_usd, b.success_cost_usd) {
            b.worst_cost_usd = Some(w + hi * f64::from(hedges));
        }
    }
    b.unbounded_latency = b
        .schedule
        .saturating_add(b.retry_after)
        .saturating_add(b.queueing);
    b.latency = b.unbounded_latency.min(r.total_timeout);
    b
}

/// Most attempts on one target: the largest `max_attempts` of the policy and its
/// overrides, or 1 when no class is retried.
pub fn attempts_per_target(retry: &RetryPolicy) -> u32 {
    if retry.retry_on.0.is_empty() {
        1
    } else {
        retry.max_attempts_any().max(1)
    }
}

/// Hedges a request on this route can send: `max_extra`, at most one per other target.
pub fn hedges(route: &Route) -> u32 {
    let others = u32::try_from(route.targets.len().saturating_sub(1)).unwrap_or(u32::MAX);
    route.hedge.map_or(0, |h| h.max_extra.min(others))
}

/// The longest wait before one attempt on a target may be admitted: with `on_limit =
/// "wait"` and any limiter, one `queue_timeout` (every wait of an admission comes out of
/// it: [`OnLimit::after`](crate::exec::limit::OnLimit::after)); and one
/// `[state.redis] timeout` per shared budget or limiter consulted.
pub fn admission_wait(plan: &Plan, route: &Route, target: &RouteTarget) -> Duration {
    let model = plan.model(target.model);
    let limits = &plan.upstream(model.upstream).limits;
    let limiters = u32::from(limits.concurrency.is_some())
        + u32::from(limits.tokens_per_minute.is_some())
        + u32::from(limits.rate.is_some());
    let queue = match limits.on_limit {
        OnLimit::Wait { queue_timeout } if limiters > 0 => queue_timeout,
        OnLimit::Wait { .. } | OnLimit::Fail => Duration::ZERO,
    };
    let Some(redis) = &plan.redis else {
        return queue;
    };
    let shared_limits = if limits.state == StateScope::Shared {
        u32::from(limits.tokens_per_minute.is_some()) + u32::from(limits.rate.is_some())
    } else {
        0
    };
    let shared_budgets = if model.price.is_some() {
        route
            .budgets
            .iter()
            .filter(|b| plan.budgets[b.index()].state == StateScope::Shared)
            .count()
    } else {
        0
    };
    let trips = shared_limits.saturating_add(u32::try_from(shared_budgets).unwrap_or(u32::MAX));
    queue.saturating_add(redis.timeout.saturating_mul(trips))
}

/// The waits between the attempts on one target, summed over its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryWaits {
    /// Backoff at its ceiling (jitter included) before every retry.
    pub backoff: Duration,
    /// What honoured `Retry-After` waits add to it.
    pub retry_after: Duration,
}

/// The waits before retries `1..attempts` on one target. Before retry `k`, the failure's
/// class decides the backoff (its override's, or the policy's) and whether `k` is still
/// below its `max_attempts`; the bound takes the longest over the classes still retried.
pub fn retry_waits(retry: &RetryPolicy, attempts: u32) -> RetryWaits {
    // (attempts the class allows, its backoff): the policy's own, then each override's.
    let classes: Vec<(u32, &BackoffConfig)> = std::iter::once((retry.max_attempts, &retry.backoff))
        .chain(retry.overrides.iter().map(|o| {
            (
                o.max_attempts.unwrap_or(retry.max_attempts),
                o.backoff.as_ref().unwrap_or(&retry.backoff),
            )
        }))
        .collect();
    let honored = retry.retry_after_honor.then_some(retry.retry_after_max);
    let mut ends: Vec<u32> = classes.iter().map(|c| c.0.min(attempts)).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut out = RetryWaits::default();
    // Retries `lo..end` are retried by the same classes: those allowing `end` or more.
    let mut lo = 1;
    for end in ends {
        if end <= lo {
            lo = lo.max(end);
            continue;
        }
        let active: Vec<&BackoffConfig> =
            classes.iter().filter(|c| c.0 >= end).map(|c| c.1).collect();
        let stretch = stretch_waits(&active, honored, lo, end - 1);
        out.backoff = out.backoff.saturating_add(stretch.backoff);
        out.retry_after = out.retry_after.saturating_add(stretch.retry_after);
        lo = end;
    }
    out
}

/// The waits before retries `lo..=hi`, each the longest of `backoffs` at that retry (and of
/// an honoured `Retry-After` cap).
fn stretch_waits(
    backoffs: &[&BackoffConfig],
    honored: Option<Duration>,
    lo: u32,
    hi: u32,
) -> RetryWaits {
    let backoff_at = |k: u32| {
        backoffs
            .iter()
            .map(|b| b.worst_case(k))
            .max()
            .unwrap_or_default()
    };
    let with_retry_after = |d: Duration| honored.map_or(d, |cap| d.max(cap));
    let mut out = RetryWaits::default();
    let exact_end = hi.min(lo.saturating_add(EXACT_RETRIES - 1));
    for k in lo..=exact_end {
        let d = backoff_at(k);
        out.backoff = out.backoff.saturating_add(d);
        out.retry_after = out
            .retry_after
            .saturating_add(with_retry_after(d).saturating_sub(d));
    }
    if hi > exact_end {
        // Every worst case is non-decreasing in `k`: the stretch's last is the largest.
        let rest = hi - exact_end;
        let d = backoff_at(hi);
        out.backoff = out.backoff.saturating_add(d.saturating_mul(rest));
        out.retry_after = out
            .retry_after
            .saturating_add(with_retry_after(d).saturating_sub(d).saturating_mul(rest));
    }
    out
}

#[cfg(test)]
mod tests;
