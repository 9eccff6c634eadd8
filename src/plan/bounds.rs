//! Static bounds: what the plan alone says a request can cost at worst.
//!
//! Per route: the most attempts a request can make (every target's retries, plus hedges),
//! the longest it can take (every attempt timing out, every backoff at its ceiling, every
//! honoured `Retry-After` at its cap, every limiter wait at its queue timeout — then cut by
//! the route's total deadline), and what it can cost for given token counts.

use std::time::Duration;

use super::{Plan, RouteId};
use crate::exec::price::Usage;
use crate::policy::OnLimit;

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

/// Worst-case figures for one route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteBounds {
    /// Most attempts one request can make, across targets and hedges.
    pub attempts: u32,
    /// Longest one request can take: `unbounded_latency` cut by the total deadline.
    pub latency: Duration,
    /// Longest the schedule would take without the deadline.
    pub unbounded_latency: Duration,
    /// The policy's own schedule: every attempt timing out and every backoff at its
    /// ceiling, without server-requested `Retry-After` waits or limiter queueing. The
    /// compiler warns when this alone cannot fit the total timeout.
    pub schedule: Duration,
    /// Cost if every attempt were billed in full; `None` if a target has no price.
    pub worst_cost_usd: Option<f64>,
    /// Cheapest and dearest single successful call over the targets with a price.
    pub success_cost_usd: Option<(f64, f64)>,
}

/// Computes the bounds of a route.
pub fn route_bounds(plan: &Plan, route: RouteId, tokens: TokenCounts) -> RouteBounds {
    let r = plan.route(route);
    let retry = plan.retry(r.retry);
    let per_target_attempts = retry.max_attempts_any();
    let mut attempts: u32 = 0;
    let mut latency = Duration::ZERO;
    let mut schedule = Duration::ZERO;
    let mut worst_cost = Some(0.0);
    let mut success: Option<(f64, f64)> = None;
    for t in &r.targets {
        let model = plan.model(t.model);
        let upstream = plan.upstream(model.upstream);
        attempts = attempts.saturating_add(per_target_attempts);
        let wait = match upstream.limits.on_limit {
            OnLimit::Wait => upstream.limits.queue_timeout,
            OnLimit::Fail => Duration::ZERO,
        };
        latency += (t.timeouts.per_try + wait) * per_target_attempts;
        schedule += t.timeouts.per_try * per_target_attempts;
        for n in 1..per_target_attempts {
            let backoff = retry
                .overrides
                .iter()
                .filter_map(|o| o.backoff.as_ref())
                .chain([&retry.backoff])
                .map(|b| b.worst_case(n))
                .max()
                .unwrap_or_default();
            schedule += backoff;
            latency += if retry.retry_after_honor {
                backoff.max(retry.retry_after_max)
            } else {
                backoff
            };
        }
        match model.price {
            Some(p) => {
                let c = p
                    .cost(Usage {
                        input_tokens: tokens.input,
                        output_tokens: tokens.output,
                    })
                    .as_dollars();
                worst_cost = worst_cost.map(|w| w + c * f64::from(per_target_attempts));
                success = Some(success.map_or((c, c), |(lo, hi)| (lo.min(c), hi.max(c))));
            }
            None => worst_cost = None,
        }
    }
    if let Some(h) = r.hedge {
        attempts = attempts.saturating_add(h.max_extra);
        if let (Some(w), Some((_, hi))) = (worst_cost, success) {
            worst_cost = Some(w + hi * f64::from(h.max_extra));
        }
    }
    RouteBounds {
        attempts,
        latency: latency.min(r.total_timeout),
        unbounded_latency: latency,
        schedule,
        worst_cost_usd: worst_cost,
        success_cost_usd: success,
    }
}
