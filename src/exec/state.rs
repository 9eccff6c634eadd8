//! Runtime state: what outlives one call (limiter buckets, breaker windows, budget spend,
//! latency EWMAs), held per plan entity beside the immutable [`Plan`].
//!
//! A [`Runtime`] pairs a plan with its state. A reload builds a new runtime and carries the
//! state of every entity that still exists under the same name and compatible settings
//! (see [`Runtime::carry_over`]), then swaps the pair whole, so a request sees exactly one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::breaker::Breaker;
use super::limit::{
    ConcurrencyConfig, ConcurrencyLimiter, RateConfig, RateLimiter, TokenConfig, TokenLimiter,
};
use super::price::{BudgetConfig, BudgetLedger, SpendTracker, Usd};
use super::retry_budget::{RetryBudget, RetryBudgetConfig};
use crate::plan::{self, BreakerPolicy, Plan};

/// A plan's settings the executor could not build state from (a compiler bug if it happens:
/// the compiler checks the same ranges).
#[derive(Debug, thiserror::Error)]
#[error("cannot build runtime state for {entity}: {reason}")]
pub struct BuildError {
    /// The plan entity.
    pub entity: String,
    /// What was wrong.
    pub reason: String,
}

fn build<T, E: std::fmt::Display>(
    entity: impl FnOnce() -> String,
    r: Result<T, E>,
) -> Result<T, BuildError> {
    r.map_err(|e| BuildError {
        entity: entity(),
        reason: e.to_string(),
    })
}

fn new_breaker(
    plan: &Plan,
    id: plan::BreakerId,
    scope: String,
) -> Result<Breaker, BreakerBuildError> {
    let policy = &plan.breakers[id.index()];
    let name = scope.clone();
    Breaker::new(policy.config.clone())
        .map(|b| {
            b.with_observer(move |t| {
                tracing::info!(target: "tollgate::breaker", breaker = %name, from = t.from.name(), to = t.to.name(), reason = ?t.reason, "breaker transition");
            })
        })
        .map_err(|e| BreakerBuildError(scope, e.to_string()))
}

struct BreakerBuildError(String, String);

impl From<BreakerBuildError> for BuildError {
    fn from(e: BreakerBuildError) -> Self {
        BuildError {
            entity: e.0,
            reason: e.1,
        }
    }
}

/// A breaker with the policy it was built from (to carry it over only when unchanged).
#[derive(Debug)]
pub struct BreakerSlot {
    /// The breaker.
    pub breaker: Breaker,
    /// Its policy.
    pub policy: BreakerPolicy,
    /// Display name: `upstream relay`, `model gpt-4.1`, `route complex → gpt-4.1`.
    pub name: String,
}

/// Live state of an upstream.
#[derive(Debug)]
pub struct UpstreamState {
    /// Request rate limiter.
    pub rate: Option<RateLimiter>,
    /// Tokens-per-minute limiter.
    pub tokens: Option<TokenLimiter>,
    /// Concurrency cap.
    pub concurrency: Option<ConcurrencyLimiter>,
    /// The upstream's breaker.
    pub breaker: Option<BreakerSlot>,
}

/// Live state of a model (as a target).
#[derive(Debug, Default)]
pub struct ModelState {
    /// The model's own breaker, if its policy names one.
    pub breaker: Option<BreakerSlot>,
    /// Recent latency, exponentially weighted (nanoseconds, 0 = no sample yet).
    pub ewma_nanos: AtomicU64,
    /// Calls in flight.
    pub in_flight: AtomicU32,
    /// Successful attempts.
    pub successes: AtomicU64,
    /// Failed attempts.
    pub failures: AtomicU64,
}

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.3;

impl ModelState {
    /// Folds a latency sample into the EWMA (racing updates may drop a sample: it is an
    /// estimate, and this keeps it one atomic load and store).
    pub fn observe_latency(&self, d: Duration) {
        let sample = d.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.ewma_nanos.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old as f64 * (1.0 - EWMA_ALPHA) + sample as f64 * EWMA_ALPHA) as u64
        };
        self.ewma_nanos.store(new.max(1), Relaxed);
    }
}

/// Live state of a route.
#[derive(Debug)]
pub struct RouteState {
    /// The route's retry budget (shared by retries, failovers and hedges).
    pub retry_budget: Option<RetryBudget>,
    /// Breakers replacing the upstreams' for this route, one per target, if the route names one.
    pub breakers: Vec<BreakerSlot>,
    /// Requests that came through it.
    pub requests: AtomicU64,
    retry: Option<plan::RetryBudget>,
}

/// Live state of a budget.
#[derive(Debug)]
pub struct BudgetState {
    /// Spend in the current window.
    pub ledger: BudgetLedger,
    limit_usd: f64,
    window: Duration,
}

/// A plan with its live state. Swapped whole by reloads.
#[derive(Debug)]
pub struct Runtime {
    /// The plan.
    pub plan: Plan,
    /// Increases by one on every swap.
    pub version: u64,
    /// Per upstream, by [`plan::UpstreamId`].
    pub upstreams: Vec<Arc<UpstreamState>>,
    /// Per model, by [`plan::ModelId`].
    pub models: Vec<Arc<ModelState>>,
    /// Per route, by [`plan::RouteId`].
    pub routes: Vec<Arc<RouteState>>,
    /// Per budget, by [`plan::BudgetId`].
    pub budgets: Vec<Arc<BudgetState>>,
    /// Spend and tokens by model, route and upstream of this plan (a reload starts a new
    /// report; budgets, not this report, carry spend across reloads).
    pub spend: SpendTracker,
}

impl Runtime {
    /// Fresh state for a plan.
    pub fn new(plan: Plan, version: u64) -> Result<Self, BuildError> {
        Self::carry_over(plan, version, None, 0)
    }

    /// State for `plan`, reusing from `old` every entity that still exists under the same
    /// name with the same settings: breakers keep their state and windows, limiters their
    /// buckets, budgets their spend, models their EWMAs. An entity whose settings changed
    /// starts fresh, except budgets, which keep their spend so a reload can never reset a
    /// spent budget.
    pub fn carry_over(
        plan: Plan,
        version: u64,
        old: Option<&Runtime>,
        now: u64,
    ) -> Result<Self, BuildError> {
        let mut upstreams = Vec::with_capacity(plan.upstreams.len());
        for u in &plan.upstreams {
            let prev = old.and_then(|o| o.plan.upstream_by_name(&u.name).map(|id| (o, id)));
            let reuse = prev.filter(|(o, id)| {
                let p = o.plan.upstream(*id);
                p.limits == u.limits
                    && breaker_policy(&o.plan, p.breaker) == breaker_policy(&plan, u.breaker)
            });
            if let Some((o, id)) = reuse {
                upstreams.push(o.upstreams[id.index()].clone());
                continue;
            }
            let name = || format!("upstream `{}`", u.name);
            let l = &u.limits;
            upstreams.push(Arc::new(UpstreamState {
                rate: l
                    .rate
                    .map(|r| {
                        build(
                            name,
                            RateLimiter::new(RateConfig {
                                rate_per_sec: r.per_second,
                                burst: r.burst,
                            }),
                        )
                    })
                    .transpose()?,
                tokens: l
                    .tokens_per_minute
                    .map(|t| {
                        // The bucket holds one minute of tokens: a burst may use the whole minute.
                        let tpm = t.ceil().max(1.0) as u64;
                        build(
                            name,
                            TokenLimiter::new(TokenConfig {
                                tokens_per_minute: tpm,
                                burst: tpm,
                            }),
                        )
                    })
                    .transpose()?,
                concurrency: l
                    .concurrency
                    .map(|c| {
                        build(
                            name,
                            ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: c }),
                        )
                    })
                    .transpose()?,
                breaker: u
                    .breaker
                    .map(|b| -> Result<BreakerSlot, BuildError> {
                        Ok(BreakerSlot {
                            breaker: new_breaker(&plan, b, format!("upstream {}", u.name))?,
                            policy: plan.breakers[b.index()].clone(),
                            name: format!("upstream {}", u.name),
                        })
                    })
                    .transpose()?,
            }));
        }
        let mut models = Vec::with_capacity(plan.models.len());
        for m in &plan.models {
            let prev = old.and_then(|o| o.plan.model_by_name(&m.name).map(|id| (o, id)));
            let same = prev.filter(|(o, id)| {
                breaker_policy(&o.plan, o.plan.model(*id).breaker)
                    == breaker_policy(&plan, m.breaker)
            });
            if let Some((o, id)) = same {
                models.push(o.models[id.index()].clone());
                continue;
            }
            let breaker = m
                .breaker
                .map(|b| -> Result<BreakerSlot, BuildError> {
                    Ok(BreakerSlot {
                        breaker: new_breaker(&plan, b, format!("model {}", m.name))?,
                        policy: plan.breakers[b.index()].clone(),
                        name: format!("model {}", m.name),
                    })
                })
                .transpose()?;
            models.push(Arc::new(ModelState {
                breaker,
                ..ModelState::default()
            }));
        }
        let mut routes = Vec::with_capacity(plan.routes.len());
        for r in &plan.routes {
            let retry = plan.retry(r.retry).budget;
            let prev = old.and_then(|o| o.plan.route_by_name(&r.name).map(|id| (o, id)));
            let same = prev.filter(|(o, id)| {
                let p = o.plan.route(*id);
                o.routes[id.index()].retry == retry
                    && breaker_policy(&o.plan, p.breaker) == breaker_policy(&plan, r.breaker)
                    && p.targets
                        .iter()
                        .map(|t| &o.plan.model(t.model).name)
                        .eq(r.targets.iter().map(|t| &plan.model(t.model).name))
            });
            if let Some((o, id)) = same {
                routes.push(o.routes[id.index()].clone());
                continue;
            }
            let name = || format!("route `{}`", r.name);
            let retry_budget = retry
                .map(|b| {
                    build(
                        name,
                        RetryBudget::new(RetryBudgetConfig {
                            ratio: b.ratio,
                            min_per_second: b.min_per_second,
                            ttl: b.ttl,
                        }),
                    )
                })
                .transpose()?;
            let mut breakers = Vec::new();
            if let Some(b) = r.breaker {
                for t in &r.targets {
                    let label = format!("route {} → {}", r.name, plan.model(t.model).name);
                    breakers.push(BreakerSlot {
                        breaker: new_breaker(&plan, b, label.clone())?,
                        policy: plan.breakers[b.index()].clone(),
                        name: label,
                    });
                }
            }
            routes.push(Arc::new(RouteState {
                retry_budget,
                breakers,
                requests: AtomicU64::new(0),
                retry,
            }));
        }
        let mut budgets = Vec::with_capacity(plan.budgets.len());
        for b in &plan.budgets {
            let prev = old.and_then(|o| {
                o.plan
                    .budget_by_name(&b.name)
                    .map(|id| o.budgets[id.index()].clone())
            });
            if let Some(p) = prev
                .as_ref()
                .filter(|p| p.limit_usd == b.limit_usd && p.window == b.window)
            {
                budgets.push(p.clone());
                continue;
            }
            let name = || format!("budget `{}`", b.name);
            let limit = build(name, Usd::from_dollars(b.limit_usd))?;
            let ledger = build(
                name,
                BudgetLedger::new(BudgetConfig {
                    limit,
                    window: b.window,
                }),
            )?;
            if let Some(p) = prev {
                // Limit or window changed: keep what was spent, so a reload never resets a budget.
                ledger.record_spend(p.ledger.spent(now), now);
            }
            budgets.push(Arc::new(BudgetState {
                ledger,
                limit_usd: b.limit_usd,
                window: b.window,
            }));
        }
        let model_upstream: Vec<usize> = plan.models.iter().map(|m| m.upstream.index()).collect();
        let spend = SpendTracker::new(&model_upstream, plan.routes.len(), plan.upstreams.len());
        Ok(Runtime {
            plan,
            version,
            upstreams,
            models,
            routes,
            budgets,
            spend,
        })
    }
}

fn breaker_policy(plan: &Plan, id: Option<plan::BreakerId>) -> Option<&BreakerPolicy> {
    id.map(|b| &plan.breakers[b.index()])
}
