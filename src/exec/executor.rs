//! The executor: runs any async operation under the current plan.
//!
//! One call of [`Executor::execute`]:
//! 1. loads the current [`Runtime`] once (a request sees exactly one plan);
//! 2. picks the route (a route named by `model`, else the first whose `when` matches);
//! 3. orders the route's targets by its strategy;
//! 4. for each target: skips it if the request does not fit its context window, a budget
//!    covering it is spent (reject, or reroute the whole request), its breaker is open or a
//!    limiter cannot admit it (waiting up to the queue timeout where the policy says so);
//! 5. runs the attempt under the per-try timeout, never past the request deadline;
//! 6. classifies the outcome with the plan: success is accounted (breaker, EWMA, cost,
//!    budgets, token limiter); a failure is retried on the same target with backoff (the
//!    class's override, `Retry-After` up to its cap), or fails over to the next target if the
//!    route allows that class to cross targets, or stops;
//! 7. every attempt after the first draws on the route's retry budget, hedges included.
//!
//! The clock is read once per decision, and every time-dependent part takes that reading.
//!
//! Where each step lives: the request's loop and its decisions in [`call`](super::call)
//! (`Call::run`, `on_refusal`, `on_failure`, hedging in `call/race.rs`), admission — one
//! sequence of checks over local and shared slots — in [`admit`](super::admit), settling
//! an attempt's outcome in [`settle`](super::settle). This file is the public face: the
//! executor, its builder, reloads, and usage learned after a call was served.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::call::{self, select_route};
use super::clock::{Clock, TokioClock};
use super::error::ExecError;
use super::outcome::{Done, Failure, Usage};
use super::price::{Savings, SpendReport, Usd};
use super::request::Request;
use super::served::Served;
use super::settle::record_spend;
use super::shared::StateBackend;
use super::state::{BuildError, Runtime};
use super::target::Target;
use crate::plan::{ModelId, Plan, RouteId};

/// Runs operations under a plan. Cheap to clone; clones share state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tollgate::exec::{Done, Executor, Failure, Request};
/// use tollgate::plan::Plan;
/// use tollgate::policy::LoadOptions;
///
/// let compiled = Plan::load(&LoadOptions::new(["policies/minimal.toml"]).with_env(Vec::<(String, String)>::new())).unwrap();
/// let exec = Executor::new(compiled.plan).unwrap();
/// let served = exec
///     .execute(&Request::new().prompt("hello"), |target, _attempt| async move {
///         // Call target.base_url() / target.upstream_model() here.
///         Ok::<_, Failure>(Done::with_usage(format!("answered by {}", target.model_name()), 12, 30))
///     })
///     .await
///     .unwrap();
/// assert_eq!(served.value, "answered by gpt-4.1-mini");
/// assert!(served.cost_usd > 0.0);
/// # }
/// ```
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Runtime>,
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    requests: AtomicU64,
    backend: Option<Arc<dyn StateBackend>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("version", &self.shared.current.load().version)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Executor`] with a chosen clock or random seed.
pub struct ExecutorBuilder {
    plan: Plan,
    clock: Option<Arc<dyn Clock>>,
    seed: Option<u64>,
    backend: Option<Arc<dyn StateBackend>>,
}

impl ExecutorBuilder {
    /// Uses this clock (default: [`TokioClock`], which follows tokio's paused time in tests).
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = Some(c);
        self
    }
    /// Seeds the random choices (weighted routing, jitter) for reproducible runs.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = Some(s);
        self
    }
    /// Keeps `state = "shared"` limiters and budgets in this backend (e.g. Redis, feature
    /// `redis`), with the plan's `[state.redis]` settings.
    pub fn state_backend(mut self, b: Arc<dyn StateBackend>) -> Self {
        self.backend = Some(b);
        self
    }
    /// Builds the executor.
    pub fn build(self) -> Result<Executor, BuildError> {
        let mut rt = Runtime::new(self.plan, 1)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        if let Some(b) = &self.backend {
            rt.attach_shared(b, &clock)?;
            rt.start_signals(&clock);
        }
        Ok(Executor {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(rt),
                clock,
                seed: self.seed,
                requests: AtomicU64::new(0),
                backend: self.backend,
            }),
        })
    }
}

impl Executor {
    /// An executor for a plan, on tokio's clock.
    pub fn new(plan: Plan) -> Result<Self, BuildError> {
        Self::builder(plan).build()
    }

    /// A builder to choose the clock or the random seed.
    pub fn builder(plan: Plan) -> ExecutorBuilder {
        ExecutorBuilder {
            plan,
            clock: None,
            seed: None,
            backend: None,
        }
    }

    /// The current plan.
    pub fn plan(&self) -> Plan {
        self.shared.current.load().plan.clone()
    }

    /// The current plan with its live state.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.current.load_full()
    }

    /// A snapshot of breakers, limiters, traffic, latency and spend under the current plan.
    pub fn stats(&self) -> super::Stats {
        super::Stats::of(&self.shared.current.load(), self.shared.clock.now())
    }

    /// Spend and tokens by model, route and upstream under the current plan, and what the
    /// same usage would have cost on `baseline` (default: the plan's `baseline_model`).
    pub fn spend_report(&self, baseline: Option<ModelId>) -> (SpendReport, Option<Savings>) {
        let rt = self.shared.current.load();
        let price = baseline
            .or(rt.plan.baseline_model)
            .and_then(|m| rt.plan.model(m).price);
        let report = rt.spend.report();
        let savings = price.map(|p| report.savings(p));
        (report, savings)
    }

    /// The clock the executor reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// Replaces the plan, carrying over the state of every entity that still exists. Calls
    /// in flight finish under the plan they started with. Returns the new version.
    pub fn swap_plan(&self, plan: Plan) -> Result<u64, BuildError> {
        let old = self.shared.current.load_full();
        let mut rt =
            Runtime::carry_over(plan, old.version + 1, Some(&old), self.shared.clock.now())?;
        if let Some(b) = &self.shared.backend {
            rt.attach_shared(b, &self.shared.clock)?;
            rt.start_signals(&self.shared.clock);
        }
        let v = rt.version;
        self.shared.current.swap(Arc::new(rt)).stop_signals();
        Ok(v)
    }

    /// The route a request would take (without running anything).
    pub fn route_for(&self, req: &Request) -> Option<RouteId> {
        select_route(&self.shared.current.load().plan, req)
    }

    /// Runs `op` under the plan: `op(target, attempt)` is called for every attempt (and
    /// hedge) and must return the value with its usage, or a [`Failure`] the plan
    /// classifies. See the [`exec` module docs](crate::exec) for the shape of the whole
    /// sequence.
    pub async fn execute<T, F, Fut>(&self, req: &Request, mut op: F) -> Result<Served<T>, ExecError>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        // A guard, not a clone: no refcount traffic on the shared runtime per request (arc-swap
        // falls back to a full clone by itself when too many guards are alive on a thread).
        let rt = self.shared.current.load();
        call::run(&rt, &*self.shared.clock, req, self.rng(), &mut op).await
    }

    /// The random stream of one request. Seeded: one stream per request, in request order.
    /// Unseeded: the thread's own generator, so concurrent requests share no counter.
    fn rng(&self) -> fastrand::Rng {
        match self.shared.seed {
            Some(seed) => {
                let n = self.shared.requests.fetch_add(1, Relaxed);
                fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
            None => fastrand::Rng::with_seed(fastrand::u64(..)),
        }
    }

    /// Accounts usage learned after the attempt was settled (a stream's final chunk, read
    /// after its first event released the attempt): the spend report, and the budgets
    /// covering the call — the reservations the stream held ([`Served::hold`]) settle at
    /// this cost. Returns the cost in USD. If the plan was swapped since, the route and
    /// model are found by name; if either is gone, only the held reservations are settled.
    pub fn record_late_usage<T>(
        &self,
        served: &mut Served<T>,
        caller: Option<&str>,
        usage: Usage,
    ) -> f64 {
        let now = self.shared.clock.now();
        // The reservations the stream held: settled where they were taken, whatever plan
        // is current now.
        served
            .hold
            .settle_tokens(usage.input_tokens.saturating_add(usage.output_tokens), now);
        let late = self.late(served);
        let cost = match &late {
            Some((rt, route, model)) => record_spend(rt, *route, *model, usage),
            None => served
                .plan
                .model(served.model)
                .price
                .map_or(Usd::ZERO, |p| p.cost(usage)),
        };
        if !served.hold.is_empty() {
            served.hold.settle(cost);
            return cost.as_dollars();
        }
        // Nothing held (usage reported twice, or for a call that held nothing): charge the
        // budgets covering the call on the current plan.
        let Some((rt, route, model)) = late else {
            return cost.as_dollars();
        };
        let plan = &rt.plan;
        let upstream = plan.model(model).upstream;
        for b in plan.route(route).budgets_for(caller) {
            if plan.budgets[b.index()].covers(route, model, upstream, caller) {
                match &rt.shared_budgets[b.index()] {
                    Some(sb) => sb.record_spend(cost),
                    None => rt.budgets[b.index()].ledger.record_spend(cost, now),
                }
            }
        }
        cost.as_dollars()
    }

    /// The current runtime and, in it, the route and model `served` ran on, found by name
    /// (a reload may have swapped the plan since); `None` if either is gone.
    fn late<T>(
        &self,
        served: &Served<T>,
    ) -> Option<(arc_swap::Guard<Arc<Runtime>>, RouteId, ModelId)> {
        let rt = self.shared.current.load();
        let route = rt.plan.route_by_name(served.route_name())?;
        let model = rt.plan.model_by_name(served.model_name())?;
        Some((rt, route, model))
    }

    /// Reports how a call settled as pending ([`Done::pending`]: a stream) ended:
    /// `failure` is `None` when it ended well (or the caller left), else why it broke.
    /// Its breakers then end a run of failures, or count the failure (the plan's
    /// `trip_on` decides, as for any attempt; it may open them); the model's stats count a
    /// failure instead of the success. If the plan was swapped since, the route and model
    /// are found by name; if either is gone, nothing is recorded.
    pub fn record_late_outcome<T>(&self, served: &Served<T>, failure: Option<&Failure>) {
        let Some((rt, route, model)) = self.late(served) else {
            return;
        };
        let plan = &rt.plan;
        let ti = plan
            .route(route)
            .targets
            .iter()
            .position(|t| t.model == model);
        let ups = &rt.upstreams[plan.model(model).upstream.index()];
        let ms = &rt.models[model.index()];
        let first = ti
            .and_then(|ti| rt.routes[route.index()].breakers.get(ti))
            .or(ups.breaker.as_ref());
        let now = self.shared.clock.now();
        for slot in [first, ms.breaker.as_ref()].into_iter().flatten() {
            match failure {
                Some(f) if slot.policy.trip_on.matches(&f.view()) => {
                    slot.breaker.late_failure(now);
                }
                _ => slot.breaker.late_success(),
            }
        }
        if failure.is_some() {
            ms.failures.incr();
            ms.successes.decr_above_zero();
        }
    }
}
