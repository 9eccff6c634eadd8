//! Carrying state over a reload, one short step per kind of entity: each finds the entity
//! of the same name in the old runtime and keeps, hands over or rebuilds its state (the
//! rules are listed on [`Runtime::carry_over`]).

use std::sync::Arc;

use tokio::sync::Notify;

use super::{
    build, token_config, BreakerSlot, BudgetState, BuildError, ModelState, RouteState, Runtime,
    UpstreamState,
};
use crate::exec::breaker::{Breaker, BreakerState, TransitionReason};
use crate::exec::limit::{
    ConcurrencyConfig, ConcurrencyLimiter, RateConfig, RateLimiter, TokenLimiter,
};
use crate::exec::price::{BudgetConfig, BudgetLedger, Usd};
use crate::exec::retry_budget::{RetryBudget, RetryBudgetConfig};
use crate::exec::shared::{Shared, SharedBudget, SharedRate, SharedTokens};
use crate::exec::stripe::Counter;
use crate::plan::{self, BreakerPolicy, Plan, StateScope};

/// What every step reads: the new plan, the old runtime, the time, the breakers' wake-up.
pub(super) struct Carry<'p> {
    plan: &'p Plan,
    old: Option<&'p Runtime>,
    now: u64,
    wake: &'p Arc<Notify>,
    /// Concurrency limiters kept with a changed cap: applied once everything is built.
    resized: Vec<(ConcurrencyLimiter, u32)>,
}

/// The shared entities carried on the same backend (rebuilt later by `attach_shared`
/// where missing).
pub(super) struct SharedCarried {
    pub backend: Option<Shared>,
    pub rates: Vec<Option<Arc<SharedRate>>>,
    pub tokens: Vec<Option<Arc<SharedTokens>>>,
    pub budgets: Vec<Option<Arc<SharedBudget>>>,
}

impl<'p> Carry<'p> {
    pub fn new(plan: &'p Plan, old: Option<&'p Runtime>, now: u64, wake: &'p Arc<Notify>) -> Self {
        Carry {
            plan,
            old,
            now,
            wake,
            resized: Vec::new(),
        }
    }

    /// Applies the changed concurrency caps (one count across the reload).
    pub fn resize(self) {
        for (lim, cap) in self.resized {
            lim.set_limit(cap);
        }
    }

    /// An upstream: shared as is when its limits and breaker policy are unchanged; else
    /// each limiter continued or built, and its breaker handed over.
    pub fn upstream(&mut self, u: &plan::Upstream) -> Result<Arc<UpstreamState>, BuildError> {
        let (plan, now) = (self.plan, self.now);
        let prev = self
            .old
            .and_then(|o| o.plan.upstream_by_name(&u.name).map(|id| (o, id)));
        let unchanged = prev.filter(|(o, id)| {
            let p = o.plan.upstream(*id);
            p.limits == u.limits
                && breaker_policy(&o.plan, p.breaker) == breaker_policy(plan, u.breaker)
        });
        if let Some((o, id)) = unchanged {
            return Ok(o.upstreams[id.index()].clone());
        }
        let name = || format!("upstream `{}`", u.name);
        let prev = prev.map(|(o, id)| (&o.plan.upstream(id).limits, &*o.upstreams[id.index()]));
        let l = &u.limits;
        let rate = l.rate.map(|r| {
            let cfg = RateConfig {
                rate_per_sec: r.per_second,
                burst: r.burst,
            };
            match prev.and_then(|(p, s)| Some((p, s.rate.as_ref()?))) {
                Some((p, lim)) if p.rate == l.rate => Ok(lim.clone()),
                Some((_, lim)) => build(name, RateLimiter::new_from(cfg, lim, now)).map(Arc::new),
                None => build(name, RateLimiter::new(cfg)).map(Arc::new),
            }
        });
        let tokens = l.tokens_per_minute.map(|t| {
            let cfg = token_config(t);
            match prev.and_then(|(p, s)| Some((p, s.tokens.as_ref()?))) {
                Some((p, lim)) if p.tokens_per_minute == l.tokens_per_minute => Ok(lim.clone()),
                Some((_, lim)) => build(name, TokenLimiter::new_from(cfg, lim, now)).map(Arc::new),
                None => build(name, TokenLimiter::new(cfg)).map(Arc::new),
            }
        });
        let concurrency = l
            .concurrency
            .map(|c| self.concurrency(prev.and_then(|(_, s)| s.concurrency.as_ref()), c, name));
        let old_breaker = prev.and_then(|(_, s)| s.breaker.as_ref());
        let breaker = u
            .breaker
            .map(|b| carry_breaker(self, b, old_breaker, format!("upstream {}", u.name)));
        Ok(Arc::new(UpstreamState {
            rate: rate.transpose()?,
            tokens: tokens.transpose()?,
            concurrency: concurrency.transpose()?,
            breaker: breaker.transpose()?,
        }))
    }

    /// A concurrency limiter: the old one kept (its count of calls in flight under either
    /// plan), its cap changed once the whole runtime is built; or a new one.
    fn concurrency(
        &mut self,
        old: Option<&ConcurrencyLimiter>,
        cap: u32,
        name: impl FnOnce() -> String,
    ) -> Result<ConcurrencyLimiter, BuildError> {
        match old {
            Some(lim) => {
                if lim.limit() != cap {
                    self.resized.push((lim.clone(), cap));
                }
                Ok(lim.clone())
            }
            None => build(
                name,
                ConcurrencyLimiter::new(ConcurrencyConfig { max_in_flight: cap }),
            ),
        }
    }

    /// A model: shared as is when its breaker policy is unchanged; else its breaker handed
    /// over, and its latency EWMA and counters copied.
    pub fn model(&mut self, m: &plan::Model) -> Result<Arc<ModelState>, BuildError> {
        let prev = self
            .old
            .and_then(|o| o.plan.model_by_name(&m.name).map(|id| (o, id)));
        let unchanged = prev.filter(|(o, id)| {
            breaker_policy(&o.plan, o.plan.model(*id).breaker)
                == breaker_policy(self.plan, m.breaker)
        });
        if let Some((o, id)) = unchanged {
            return Ok(o.models[id.index()].clone());
        }
        let prev = prev.map(|(o, id)| &*o.models[id.index()]);
        let old_breaker = prev.and_then(|p| p.breaker.as_ref());
        let breaker = m
            .breaker
            .map(|b| carry_breaker(self, b, old_breaker, format!("model {}", m.name)))
            .transpose()?;
        let state = ModelState {
            breaker,
            ..ModelState::default()
        };
        if let Some(p) = prev {
            state.set_estimates(p.ewma_nanos(), p.failure_ppm());
            state.successes.set(p.successes.get());
            state.failures.set(p.failures.get());
        }
        Ok(Arc::new(state))
    }

    /// A route: shared as is when its retry budget, breaker policy and targets are
    /// unchanged; else its retry budget kept or built, each target's breaker handed over
    /// from the old route's breaker for the same model, and its counters copied.
    pub fn route(&mut self, r: &plan::Route) -> Result<Arc<RouteState>, BuildError> {
        let plan = self.plan;
        let retry = plan.retry(r.retry).budget;
        let prev = self
            .old
            .and_then(|o| o.plan.route_by_name(&r.name).map(|id| (o, id)));
        let unchanged = prev.filter(|(o, id)| {
            let p = o.plan.route(*id);
            o.routes[id.index()].retry == retry
                && breaker_policy(&o.plan, p.breaker) == breaker_policy(plan, r.breaker)
                && p.targets
                    .iter()
                    .map(|t| &o.plan.model(t.model).name)
                    .eq(r.targets.iter().map(|t| &plan.model(t.model).name))
        });
        if let Some((o, id)) = unchanged {
            return Ok(o.routes[id.index()].clone());
        }
        let prev = prev.map(|(o, id)| (o, o.plan.route(id), &*o.routes[id.index()]));
        let retry_budget = match (retry, prev) {
            (None, _) => None,
            (Some(_), Some((_, _, p))) if p.retry == retry => p.retry_budget.clone(),
            (Some(b), _) => {
                let cfg = RetryBudgetConfig {
                    ratio: b.ratio,
                    min_per_second: b.min_per_second,
                    ttl: b.ttl,
                };
                Some(Arc::new(build(
                    || format!("route `{}`", r.name),
                    RetryBudget::new(cfg),
                )?))
            }
        };
        let mut breakers = Vec::new();
        if let Some(b) = r.breaker {
            for t in &r.targets {
                let model = &plan.model(t.model).name;
                // The old route's breaker for the same model, if it had one.
                let old_slot = prev.and_then(|(o, p, s)| {
                    let i = p
                        .targets
                        .iter()
                        .position(|ot| &o.plan.model(ot.model).name == model)?;
                    s.breakers.get(i)
                });
                breakers.push(carry_breaker(
                    self,
                    b,
                    old_slot,
                    format!("route {} → {}", r.name, model),
                )?);
            }
        }
        let state = RouteState {
            retry_budget,
            breakers,
            requests: Counter::default(),
            failovers: Counter::default(),
            retry,
        };
        if let Some((_, _, s)) = prev {
            state.requests.set(s.requests());
            state.failovers.set(s.failovers());
        }
        Ok(Arc::new(state))
    }

    /// A budget: shared as is when its limit and window are unchanged; else a new ledger
    /// that keeps what was spent, so a reload never resets a spent budget.
    pub fn budget(&mut self, b: &plan::Budget) -> Result<Arc<BudgetState>, BuildError> {
        let prev = self.old.and_then(|o| {
            o.plan
                .budget_by_name(&b.name)
                .map(|id| o.budgets[id.index()].clone())
        });
        if let Some(p) = prev
            .as_ref()
            .filter(|p| p.limit_usd == b.limit_usd && p.window == b.window)
        {
            return Ok(p.clone());
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
            ledger.record_spend(p.ledger.spent(self.now), self.now);
        }
        Ok(Arc::new(BudgetState {
            ledger,
            limit_usd: b.limit_usd,
            window: b.window,
        }))
    }

    /// The shared entities kept on the same backend: when `[state.redis]` is unchanged,
    /// each shared rate or token limiter and shared budget whose settings are unchanged.
    pub fn shared(&self) -> SharedCarried {
        let plan = self.plan;
        let mut carried = SharedCarried {
            backend: None,
            rates: vec![None; plan.upstreams.len()],
            tokens: vec![None; plan.upstreams.len()],
            budgets: vec![None; plan.budgets.len()],
        };
        let Some(o) = self
            .old
            .filter(|o| o.shared.is_some() && o.plan.redis == plan.redis)
        else {
            return carried;
        };
        carried.backend = o.shared.clone();
        for (i, u) in plan.upstreams.iter().enumerate() {
            let Some(id) = o.plan.upstream_by_name(&u.name) else {
                continue;
            };
            let p = &o.plan.upstream(id).limits;
            if u.limits.state != StateScope::Shared || p.state != StateScope::Shared {
                continue;
            }
            if p.rate == u.limits.rate {
                carried.rates[i] = o.shared_rates[id.index()].clone();
            }
            if p.tokens_per_minute == u.limits.tokens_per_minute {
                carried.tokens[i] = o.shared_tokens[id.index()].clone();
            }
        }
        for (i, b) in plan.budgets.iter().enumerate() {
            let Some(id) = o.plan.budget_by_name(&b.name) else {
                continue;
            };
            let p = &o.plan.budgets[id.index()];
            let same = p.limit_usd == b.limit_usd && p.window == b.window;
            if b.state == StateScope::Shared && p.state == StateScope::Shared && same {
                carried.budgets[i] = o.shared_budgets[id.index()].clone();
            }
        }
        carried
    }
}

/// The breaker for policy `id` of `plan`, continuing `old` where there is one: shared as is
/// when the policy's settings are unchanged, handed over with [`Breaker::new_from`] (an
/// open breaker stays open) when they changed, fresh otherwise.
fn carry_breaker(
    cx: &Carry<'_>,
    id: plan::BreakerId,
    old: Option<&BreakerSlot>,
    scope: String,
) -> Result<BreakerSlot, BuildError> {
    let (plan, now, wake) = (cx.plan, cx.now, cx.wake);
    let policy = &plan.breakers[id.index()];
    let cfg = policy.config.clone();
    if let Some(o) = old.filter(|o| o.breaker.config() == &cfg) {
        return Ok(BreakerSlot {
            breaker: o.breaker.clone(),
            policy: policy.clone(),
            name: scope,
        });
    }
    let name = scope.clone();
    let wake = wake.clone();
    let built = match old {
        Some(o) => Breaker::new_from(cfg, &o.breaker, now),
        None => Breaker::new(cfg),
    };
    let breaker = built
        .map(|b| {
            b.with_observer(move |t| {
                tracing::info!(target: "tollgate::breaker", breaker = %name, from = t.from.name(), to = t.to.name(), reason = ?t.reason, "breaker transition");
                // A trip of its own: a shared breaker's signal task publishes it now.
                if t.to == BreakerState::Open && t.reason != TransitionReason::Signalled {
                    wake.notify_one();
                }
            })
        })
        .map_err(|e| BuildError {
            entity: scope.clone(),
            reason: e.to_string(),
        })?;
    Ok(BreakerSlot {
        breaker: Arc::new(breaker),
        policy: policy.clone(),
        name: scope,
    })
}

fn breaker_policy(plan: &Plan, id: Option<plan::BreakerId>) -> Option<&BreakerPolicy> {
    id.map(|b| &plan.breakers[b.index()])
}
