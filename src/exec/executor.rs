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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use smallvec::SmallVec;

use super::backoff::{next_delay, Delay};
use super::breaker::BreakerPermit;
use super::clock::{nanos, Clock, TokioClock};
use super::error::{AttemptRecord, ExecError, SkipReason, SkipRecord, StopReason};
use super::hold::StreamHold;
use super::limit::{ConcurrencyGuard, LimitError, OnLimit, TokenReservation};
use super::outcome::{Done, Failure, Usage};
use super::price::{BudgetReservation, Savings, SpendKey, SpendReport, Usd};
use super::request::Request;
use super::shared::{SharedReservation, SharedTokenReservation, StateBackend};
use super::state::{BreakerSlot, BuildError, Runtime, UpstreamState};
use super::timeout::AttemptTimeout;
use crate::plan::{FailureView, ModelId, OnExceed, Plan, RouteId, UpstreamId};
use crate::policy::Strategy;

/// Most reroutes one request follows (the compiler rejects cycles; this is a guard).
const MAX_REROUTES: usize = 4;

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
            rt.attach_shared(b)?;
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

/// What the operation is asked to call.
#[derive(Debug, Clone)]
pub struct Target {
    plan: Plan,
    version: u64,
    route: RouteId,
    model: ModelId,
    attempt: u32,
    hedge: bool,
    time: AttemptTime,
}

/// The time an attempt is given, and how long it queued for its permits before.
#[derive(Debug, Clone, Copy)]
struct AttemptTime {
    timeout: Duration,
    queued: Duration,
}

impl Target {
    /// The model's name in the plan.
    pub fn model_name(&self) -> &str {
        &self.plan.model(self.model).name
    }
    /// The model id to send upstream.
    pub fn upstream_model(&self) -> &str {
        &self.plan.model(self.model).upstream_model
    }
    /// The upstream's name.
    pub fn upstream_name(&self) -> &str {
        &self.plan.upstream(self.upstream()).name
    }
    /// The upstream's base URL.
    pub fn base_url(&self) -> &str {
        &self.plan.upstream(self.upstream()).base_url
    }
    /// The route's name.
    pub fn route_name(&self) -> &str {
        &self.plan.route(self.route).name
    }
    /// The route's id.
    pub fn route(&self) -> RouteId {
        self.route
    }
    /// The model's id.
    pub fn model(&self) -> ModelId {
        self.model
    }
    /// The upstream's id.
    pub fn upstream(&self) -> UpstreamId {
        self.plan.model(self.model).upstream
    }
    /// 1-based attempt number on this target.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Whether this attempt is a hedge racing another.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }
    /// The time this attempt has (per-try timeout, cut by the request deadline). The
    /// executor enforces it; an operation may pass it on (e.g. as an HTTP timeout).
    pub fn timeout(&self) -> Duration {
        self.time.timeout
    }
    /// How long this attempt waited for its permits (limiters with `on_limit = "wait"`,
    /// the shared backend) before it was admitted: its admission, budget reservations
    /// included, was decided that long before the operation was called.
    pub fn queued(&self) -> Duration {
        self.time.queued
    }
    /// The plan this request runs under.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    /// That plan's version (as [`Served::plan_version`]): every attempt of one request
    /// has the same.
    pub fn plan_version(&self) -> u64 {
        self.version
    }
}

/// A successful request.
#[derive(Debug)]
pub struct Served<T> {
    /// What the operation produced.
    pub value: T,
    /// The route that served it.
    pub route: RouteId,
    /// The model that served it.
    pub model: ModelId,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Cost of the successful attempt (and any billed failures), USD.
    pub cost_usd: f64,
    /// Token usage reported.
    pub usage: Option<Usage>,
    /// Failed attempts before the success.
    pub failed: Vec<AttemptRecord>,
    /// The plan it ran under.
    pub plan: Plan,
    /// That plan's version.
    pub plan_version: u64,
    /// What a served stream (no usage yet) keeps until its usage is known: its budget
    /// reservations and its token estimate. [`Executor::record_late_usage`] settles them;
    /// dropped without it, each budget is charged its reservation and the token estimate
    /// stays charged. Empty for a call that reported its usage.
    pub hold: StreamHold,
    /// Failovers: how many times the request moved on from one target to another (after
    /// its failures there, a skip — breaker open, limited, budget, context window — or a
    /// reroute). A hedge that wins is not a failover. 0 when the first target served it.
    pub failovers: u32,
}

impl<T> Served<T> {
    /// The value, and the account of how it was served without it (e.g. to keep while a
    /// stream is read from the value).
    pub fn into_parts(self) -> (T, Served<()>) {
        let Served {
            value,
            route,
            model,
            attempts,
            cost_usd,
            usage,
            failed,
            plan,
            plan_version,
            hold,
            failovers,
        } = self;
        let meta = Served {
            value: (),
            route,
            model,
            attempts,
            cost_usd,
            usage,
            failed,
            plan,
            plan_version,
            hold,
            failovers,
        };
        (value, meta)
    }
    /// The serving model's name.
    pub fn model_name(&self) -> &str {
        &self.plan.model(self.model).name
    }
    /// The serving model's upstream's name.
    pub fn upstream_name(&self) -> &str {
        &self
            .plan
            .upstream(self.plan.model(self.model).upstream)
            .name
    }
    /// The route's name.
    pub fn route_name(&self) -> &str {
        &self.plan.route(self.route).name
    }
}

/// How an attempt settled.
#[derive(Clone, Copy)]
enum Settled<'f> {
    Ok,
    /// A success whose outcome is final only later (see [`Done::pending`]).
    Pending,
    Failed(&'f Failure),
}

/// Breaker permits, the first (route or upstream) and the model's.
type Breakers<'r> = [Option<(&'r BreakerSlot, BreakerPermit<'r>)>; 2];

/// Permits held for one attempt; dropping them releases everything not yet settled.
struct Admission<'r> {
    /// Clock reading when the attempt was admitted (after any queueing).
    at: u64,
    breakers: Breakers<'r>,
    _concurrency: Option<ConcurrencyGuard<'r>>,
    tokens: Option<Tokens<'r>>,
    budgets: SmallVec<[BudgetReservation<'r>; 2]>,
    shared_budgets: SmallVec<[SharedReservation<'r>; 1]>,
    _in_flight: Option<InFlight<'r>>,
}

impl Admission<'_> {
    /// No permit yet.
    fn empty(at: u64) -> Self {
        Admission {
            at,
            breakers: [None, None],
            _concurrency: None,
            tokens: None,
            budgets: SmallVec::new(),
            shared_budgets: SmallVec::new(),
            _in_flight: None,
        }
    }

    /// Drops every permit taken so far (a refused admission), as returning early would.
    fn clear(&mut self) {
        self.breakers = [None, None];
        self._concurrency = None;
        self.tokens = None;
        self.budgets.clear();
        self.shared_budgets.clear();
        self._in_flight = None;
    }

    /// Returns the concurrency permit and the in-flight count: what [`Executor::settle`]
    /// leaves. In place, because `drop(adm)` would move (memcpy) it first.
    fn release(&mut self) {
        self._concurrency = None;
        self._in_flight = None;
    }
}

/// Tokens reserved for one attempt, on the upstream's local or shared limiter.
pub(super) enum Tokens<'r> {
    Local(TokenReservation<'r>),
    Shared(SharedTokenReservation<'r>),
}

impl Tokens<'_> {
    fn settle(self, actual: u64, now: u64) {
        match self {
            Tokens::Local(r) => r.settle(actual, now),
            Tokens::Shared(r) => r.settle(actual, now),
        }
    }
}

/// Counts a call in flight on a model while alive.
struct InFlight<'r>(&'r std::sync::atomic::AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What the synchronous admission ([`Executor::try_admit`]) decided. The permits are in
/// the admission it filled in place (moving one is a memcpy of over 200 bytes).
enum Admit {
    /// Every permit taken.
    Ready,
    /// The target is refused; nothing is held.
    Refused(Refusal),
    /// A local limiter asks to wait (`on_limit = "wait"`): the admission holds the permits
    /// taken so far; what to wait for, and the policy that allowed it.
    /// [`Executor::wait_admit`] continues.
    Wait(Wait, OnLimit),
    /// A shared backend (budget, token or rate limiter) is involved: nothing was taken, and
    /// admission must await it ([`Executor::admit_shared`]).
    Shared,
}

/// What a local limiter asked admission to wait for.
#[derive(Clone, Copy)]
enum Wait {
    /// A concurrency permit, up to this queue timeout.
    Concurrency(Duration),
    /// This long, then the token limiter again.
    Tokens(Duration),
    /// This long, then the rate limiter again.
    Rate(Duration),
}

/// The first local limiter [`Executor::local_limits`] checks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Concurrency,
    Tokens,
    Rate,
}

/// Why [`Executor::local_limits`] stopped.
enum Halt {
    Wait(Wait),
    Refused(Refusal),
}

fn limited(e: LimitError) -> Refusal {
    Refusal::Skip(SkipReason::Limited(e.to_string()))
}

/// Why admission refused a target.
enum Refusal {
    /// The request's deadline came while admission waited (for the shared backend).
    Deadline,
    Skip(SkipReason),
    Reroute {
        to: RouteId,
        budget: String,
    },
    Reject {
        budget: String,
    },
}

/// An attempt in a hedge race.
struct Racer<'r, MF> {
    ti: usize,
    adm: Option<Admission<'r>>,
    hedge: bool,
    fut: Pin<Box<MF>>,
}

/// A hedge's admission in progress (boxed: hedges are rare, and it may wait for permits).
type HedgeAdmission<'r, 'a> = dyn Future<Output = Result<Admission<'r>, Refusal>> + Send + 'a;

/// A finished attempt with the permits it held.
struct Finished<'r, T> {
    result: Result<Done<T>, Failure>,
    elapsed: Duration,
    adm: Admission<'r>,
    ti: usize,
    hedge: bool,
}

/// Bookkeeping of one request.
struct Trail {
    attempts: u32,
    /// Moves from one target to another ([`Served::failovers`]).
    failovers: u32,
    failed: Vec<AttemptRecord>,
    skipped: Vec<SkipRecord>,
    cost: f64,
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
            rt.attach_shared(b)?;
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
    /// classifies. See the [module docs](self) for the whole sequence.
    pub async fn execute<T, F, Fut>(&self, req: &Request, mut op: F) -> Result<Served<T>, ExecError>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        // A guard, not a clone: no refcount traffic on the shared runtime per request (arc-swap
        // falls back to a full clone by itself when too many guards are alive on a thread).
        let rt = self.shared.current.load();
        let clock = &self.shared.clock;
        let start = clock.now();
        // Seeded: one stream per request, in request order. Unseeded: the thread's own
        // generator, so concurrent requests share no counter.
        let mut rng = match self.shared.seed {
            Some(seed) => {
                let n = self.shared.requests.fetch_add(1, Relaxed);
                fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            }
            None => fastrand::Rng::with_seed(fastrand::u64(..)),
        };
        let mut trail = Trail {
            attempts: 0,
            failovers: 0,
            failed: Vec::new(),
            skipped: Vec::new(),
            cost: 0.0,
        };
        let fail = |trail: Trail, route: Option<RouteId>, reason: StopReason, now: u64| ExecError {
            route: route.map(|r| rt.plan.route(r).name.clone()),
            reason,
            attempts: trail.failed,
            skipped: trail.skipped,
            elapsed: Duration::from_nanos(now.saturating_sub(start)),
        };
        let Some(mut route_id) = select_route(&rt.plan, req) else {
            tracing::debug!(target: "tollgate::exec", "no route matches the request");
            return Err(fail(trail, None, StopReason::NoRoute, start));
        };
        let mut reroutes = 0;
        let mut fresh = Some(start);
        let deposit_route = route_id;
        if let Some(b) = &rt.routes[route_id.index()].retry_budget {
            b.deposit(start);
        }
        'route: loop {
            let route = rt.plan.route(route_id);
            rt.routes[route_id.index()].requests.fetch_add(1, Relaxed);
            let deadline = start.saturating_add(nanos(route.total_timeout));
            let retry = rt.plan.retry(route.retry);
            let order = target_order(&rt, route_id, req, &mut rng);
            let mut stop = StopReason::NoTargetAvailable;
            let mut hedged = false;
            for (pos, &ti) in order.iter().enumerate() {
                if pos > 0 || reroutes > 0 {
                    // Every target after the request's first is a failover (at a route's
                    // first target, the reroute that led there).
                    trail.failovers += 1;
                    rt.routes[route_id.index()].failovers.fetch_add(1, Relaxed);
                }
                let target = &route.targets[ti];
                let model = rt.plan.model(target.model);
                let mut attempt_no = 1;
                let mut prev_delay = Duration::ZERO;
                loop {
                    // The request's first decision uses the reading taken at its start.
                    let now = fresh.take().unwrap_or_else(|| clock.now());
                    if now >= deadline {
                        return Err(fail(trail, Some(route_id), StopReason::Deadline, now));
                    }
                    // Every attempt after the request's first draws on the retry budget.
                    if trail.attempts > 0 {
                        if let Some(b) = &rt.routes[deposit_route.index()].retry_budget {
                            if !b.try_withdraw(now) {
                                tracing::warn!(target: "tollgate::exec", route = %route.name, "retry budget exhausted");
                                return Err(fail(
                                    trail,
                                    Some(route_id),
                                    StopReason::RetryBudgetExhausted,
                                    now,
                                ));
                            }
                        }
                    }
                    // The admission stays in this binding on the common path (no hedge) and is
                    // settled by reference: each move of it (over 200 bytes) is a memcpy.
                    // Synchronous unless a local limiter must wait or a shared backend is
                    // involved: no admission future on the common path. The slow paths are
                    // boxed so that they do not grow every request's future.
                    let mut adm = Admission::empty(now);
                    let admitted = match self.try_admit(&rt, route_id, ti, req, deadline, &mut adm)
                    {
                        Admit::Ready => Ok(()),
                        Admit::Refused(r) => Err(r),
                        Admit::Wait(w, on_limit) => {
                            Box::pin(self.wait_admit(&rt, route_id, ti, req, &mut adm, w, on_limit))
                                .await
                        }
                        Admit::Shared => {
                            Box::pin(self.admit_shared_by(&rt, route_id, ti, req, now, deadline))
                                .await
                                .map(|a| adm = a)
                        }
                    };
                    match admitted {
                        Ok(()) => {}
                        Err(Refusal::Deadline) => {
                            return Err(fail(
                                trail,
                                Some(route_id),
                                StopReason::Deadline,
                                clock.now(),
                            ));
                        }
                        Err(Refusal::Skip(reason)) => {
                            tracing::debug!(target: "tollgate::exec", route = %route.name, model = %model.name, %reason, "target skipped");
                            let class = match reason {
                                SkipReason::BreakerOpen { .. } => FailureView {
                                    breaker_open: true,
                                    ..Default::default()
                                },
                                _ => FailureView {
                                    limited: true,
                                    ..Default::default()
                                },
                            };
                            let crosses = matches!(
                                reason,
                                SkipReason::ContextWindow { .. }
                                    | SkipReason::BudgetExceeded { .. }
                            ) || route.failover_on.matches(&class);
                            trail.skipped.push(SkipRecord {
                                model: model.name.clone(),
                                reason,
                            });
                            if crosses {
                                break;
                            }
                            return Err(fail(
                                trail,
                                Some(route_id),
                                StopReason::NoTargetAvailable,
                                now,
                            ));
                        }
                        Err(Refusal::Reroute { to, budget }) => {
                            tracing::info!(target: "tollgate::exec", route = %route.name, %budget, to = %rt.plan.route(to).name, "budget spent: rerouting");
                            trail.skipped.push(SkipRecord {
                                model: model.name.clone(),
                                reason: SkipReason::BudgetExceeded { budget },
                            });
                            if reroutes < MAX_REROUTES && to != route_id {
                                reroutes += 1;
                                route_id = to;
                                continue 'route;
                            }
                            break;
                        }
                        Err(Refusal::Reject { budget }) => {
                            tracing::info!(target: "tollgate::exec", route = %route.name, %budget, "budget spent: rejecting");
                            trail.skipped.push(SkipRecord {
                                model: model.name.clone(),
                                reason: SkipReason::BudgetExceeded {
                                    budget: budget.clone(),
                                },
                            });
                            stop = StopReason::BudgetExceeded { budget };
                            break;
                        }
                    };
                    // Time spent queueing for a permit is the request's: the attempt gets
                    // what is left of the deadline after admission, not before it.
                    let Some(timeout) = attempt_timeout(target.timeouts.per_try, adm.at, deadline)
                    else {
                        return Err(fail(trail, Some(route_id), StopReason::Deadline, adm.at));
                    };
                    let mk =
                        |op: &mut F, ti: usize, attempt: u32, hedge: bool, time: AttemptTime| {
                            let t = Target {
                                plan: rt.plan.clone(),
                                version: rt.version,
                                route: route_id,
                                model: route.targets[ti].model,
                                attempt,
                                hedge,
                                time,
                            };
                            let timeout = time.timeout;
                            let fut = AttemptTimeout::new(op(t, attempt), timeout);
                            async move {
                                match fut.await {
                                    Ok(r) => r,
                                    Err(_) => Err(Failure::timeout()
                                        .message(format!("no answer within {timeout:?}"))),
                                }
                            }
                        };
                    let time = AttemptTime {
                        timeout,
                        queued: Duration::from_nanos(adm.at.saturating_sub(now)),
                    };
                    trail.attempts += 1;
                    // Hedge the request's first attempt if the route asks for it.
                    let hedge_targets: Order = match route.hedge {
                        Some(h) if !hedged && trail.attempts == 1 => {
                            hedged = true;
                            order[pos + 1..]
                                .iter()
                                .copied()
                                .take(h.max_extra as usize)
                                .collect()
                        }
                        _ => Order::new(),
                    };
                    let (result, elapsed, served_ti, hedge, now);
                    if hedge_targets.is_empty() {
                        result = mk(&mut op, ti, attempt_no, false, time).await;
                        now = clock.now();
                        elapsed = Duration::from_nanos(now.saturating_sub(adm.at));
                        served_ti = ti;
                        hedge = false;
                    } else {
                        let after = route.hedge.map(|h| h.after).unwrap_or_default();
                        // Boxed: the race is rare and large; inline it would grow every
                        // request's future.
                        let f = Box::pin(self.race(
                            &rt,
                            route_id,
                            req,
                            deadline,
                            &mut op,
                            &mk,
                            (ti, adm, time),
                            &hedge_targets,
                            after,
                            &mut trail,
                        ))
                        .await;
                        adm = f.adm;
                        result = f.result;
                        elapsed = f.elapsed;
                        served_ti = f.ti;
                        hedge = f.hedge;
                        // Not `f.at`: the race may have gone on after that attempt ended
                        // (a hedge still queueing), and what follows (a backoff within the
                        // deadline) must start from the time it returned.
                        now = clock.now();
                    }
                    let served_model = route.targets[served_ti].model;
                    match result {
                        Ok(done) => {
                            let cost = self.settle_success(
                                &rt,
                                route_id,
                                served_model,
                                &mut adm,
                                &done,
                                elapsed,
                                now,
                            );
                            // A stream's reservations stay held until its usage is known.
                            let settled = if done.pending {
                                Settled::Pending
                            } else {
                                Settled::Ok
                            };
                            let hold = if holds(settled, done.usage) {
                                let estimate = req
                                    .estimated_input_tokens()
                                    .saturating_add(req.reserved_output_tokens());
                                StreamHold::take(
                                    &rt,
                                    (route_id, served_model),
                                    &mut adm.budgets,
                                    &mut adm.shared_budgets,
                                    &mut adm.tokens,
                                    estimate,
                                )
                            } else {
                                StreamHold::default()
                            };
                            adm.release();
                            trail.cost += cost;
                            return Ok(Served {
                                value: done.value,
                                route: route_id,
                                model: served_model,
                                attempts: trail.attempts,
                                cost_usd: trail.cost,
                                usage: done.usage,
                                failed: trail.failed,
                                plan: rt.plan.clone(),
                                plan_version: rt.version,
                                hold,
                                failovers: trail.failovers,
                            });
                        }
                        Err(f) => {
                            trail.cost += self.settle_failure(
                                &rt,
                                route_id,
                                served_model,
                                &mut adm,
                                &f,
                                elapsed,
                                now,
                            );
                            // Releases the concurrency permit and the in-flight count before
                            // any backoff.
                            adm.release();
                            let view = f.view();
                            tracing::debug!(target: "tollgate::exec", route = %route.name, model = %rt.plan.model(served_model).name, attempt = attempt_no, failure = %f, "attempt failed");
                            trail.failed.push(AttemptRecord {
                                model: rt.plan.model(served_model).name.clone(),
                                upstream: rt
                                    .plan
                                    .upstream(rt.plan.model(served_model).upstream)
                                    .name
                                    .clone(),
                                attempt: attempt_no,
                                failure: f.to_string(),
                                kind: f.kind,
                                status: f.status,
                                elapsed,
                                delay: None,
                                hedge,
                            });
                            let retryable = retry.retry_on.matches(&view);
                            let ov = retry.override_for(&view);
                            let max = ov
                                .and_then(|o| o.max_attempts)
                                .unwrap_or(retry.max_attempts);
                            let crosses = route.failover_on.matches(&view);
                            if retryable && attempt_no < max {
                                let backoff = ov
                                    .and_then(|o| o.backoff.as_ref())
                                    .unwrap_or(&retry.backoff);
                                let computed = backoff.delay(attempt_no, prev_delay, &mut rng);
                                let remaining = Duration::from_nanos(deadline.saturating_sub(now));
                                match next_delay(
                                    computed,
                                    f.retry_after,
                                    retry.retry_after_honor,
                                    retry.retry_after_max,
                                    remaining,
                                ) {
                                    Delay::Sleep(d) => {
                                        if let Some(last) = trail.failed.last_mut() {
                                            last.delay = Some(d);
                                        }
                                        tracing::debug!(target: "tollgate::exec", route = %route.name, model = %model.name, delay = ?d, "retrying");
                                        tokio::time::sleep(d).await;
                                        prev_delay = d;
                                        attempt_no += 1;
                                        continue;
                                    }
                                    Delay::TooLong { requested } => {
                                        trail.skipped.push(SkipRecord {
                                            model: model.name.clone(),
                                            reason: SkipReason::RetryAfterTooLong(requested),
                                        });
                                        if crosses {
                                            stop = StopReason::AttemptsExhausted;
                                            break;
                                        }
                                        return Err(fail(
                                            trail,
                                            Some(route_id),
                                            StopReason::AttemptsExhausted,
                                            now,
                                        ));
                                    }
                                    Delay::PastDeadline => {
                                        return Err(fail(
                                            trail,
                                            Some(route_id),
                                            StopReason::Deadline,
                                            now,
                                        ))
                                    }
                                }
                            }
                            let why = if retryable {
                                StopReason::AttemptsExhausted
                            } else {
                                StopReason::NotRetryable
                            };
                            if crosses {
                                stop = why;
                                break;
                            }
                            return Err(fail(trail, Some(route_id), why, now));
                        }
                    }
                }
            }
            return Err(fail(trail, Some(route_id), stop, clock.now()));
        }
    }

    /// Takes every permit a call to target `ti` of the route needs, or says why not
    /// (any path: used by the hedge race).
    async fn admit<'r>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        now: u64,
        deadline: u64,
    ) -> Result<Admission<'r>, Refusal> {
        let mut adm = Admission::empty(now);
        match self.try_admit(rt, route_id, ti, req, deadline, &mut adm) {
            Admit::Ready => Ok(adm),
            Admit::Refused(r) => Err(r),
            Admit::Wait(w, on_limit) => {
                self.wait_admit(rt, route_id, ti, req, &mut adm, w, on_limit)
                    .await?;
                Ok(adm)
            }
            Admit::Shared => {
                self.admit_shared_by(rt, route_id, ti, req, now, deadline)
                    .await
            }
        }
    }

    /// The context window and the breakers: the checks every admission starts with.
    #[inline]
    fn check_target<'r>(
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        now: u64,
    ) -> Result<Breakers<'r>, Refusal> {
        let target = &rt.plan.route(route_id).targets[ti];
        let model = rt.plan.model(target.model);
        let ups = &rt.upstreams[model.upstream.index()];
        let ms = &rt.models[target.model.index()];
        if let Some(window) = model.context_window {
            let needed = req
                .estimated_input_tokens()
                .saturating_add(req.max_tokens.unwrap_or(0));
            if needed > window {
                return Err(Refusal::Skip(SkipReason::ContextWindow { needed, window }));
            }
        }
        // Breakers: the route's own (per target) replaces the upstream's; a model's adds to it.
        let rs = &rt.routes[route_id.index()];
        let first = rs.breakers.get(ti).or(ups.breaker.as_ref());
        let mut breakers: Breakers<'r> = [None, None];
        for (slot, b) in [first, ms.breaker.as_ref()].into_iter().enumerate() {
            if let Some(b) = b {
                match b.breaker.try_acquire(now) {
                    Ok(p) => breakers[slot] = Some((b, p)),
                    Err(e) => {
                        return Err(Refusal::Skip(SkipReason::BreakerOpen {
                            breaker: b.name.clone(),
                            retry_in: e.retry_in,
                        }))
                    }
                }
            }
        }
        Ok(breakers)
    }

    /// After a wait for a limiter: asks again every breaker that changed state since its
    /// permit was taken (it may have opened meanwhile: then the target is refused).
    #[cold]
    fn recheck_breakers(breakers: &mut Breakers<'_>, now: u64) -> Result<(), Refusal> {
        for held in breakers.iter_mut() {
            let Some((slot, permit)) = held else { continue };
            if permit.is_current() {
                continue;
            }
            let slot = *slot;
            *held = None;
            match slot.breaker.try_acquire(now) {
                Ok(p) => *held = Some((slot, p)),
                Err(e) => {
                    return Err(Refusal::Skip(SkipReason::BreakerOpen {
                        breaker: slot.name.clone(),
                        retry_in: e.retry_in,
                    }))
                }
            }
        }
        Ok(())
    }

    /// How long the upstream's limiters may make this attempt wait.
    fn on_limit(rt: &Runtime, up_id: UpstreamId, now: u64, deadline: u64) -> OnLimit {
        let upstream = rt.plan.upstream(up_id);
        match upstream.limits.on_limit {
            crate::policy::OnLimit::Fail => OnLimit::Fail,
            crate::policy::OnLimit::Wait => OnLimit::Wait {
                queue_timeout: upstream
                    .limits
                    .queue_timeout
                    .min(Duration::from_nanos(deadline.saturating_sub(now))),
            },
        }
    }

    /// Admission without awaiting, when the target's budgets and limiters are all local; the
    /// same checks in the same order as [`admit_shared`](Self::admit_shared). Fills `adm`
    /// (empty, taken at `adm.at`) in place.
    #[inline]
    fn try_admit<'r>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        deadline: u64,
        adm: &mut Admission<'r>,
    ) -> Admit {
        let now = adm.at;
        let route = rt.plan.route(route_id);
        let target = &route.targets[ti];
        let model = rt.plan.model(target.model);
        let up_id = model.upstream;
        let ups = &rt.upstreams[up_id.index()];
        // Without a backend nothing is shared (every `shared_*` entry is `None`): one load.
        let shared = rt.shared.is_some()
            && (rt.shared_tokens[up_id.index()].is_some()
                || rt.shared_rates[up_id.index()].is_some()
                || (model.price.is_some()
                    && route
                        .budgets_for(req.caller.as_deref())
                        .any(|b| rt.shared_budgets[b.index()].is_some())));
        if shared {
            return Admit::Shared;
        }
        match Self::check_target(rt, route_id, ti, req, now) {
            Ok(b) => adm.breakers = b,
            Err(r) => return Admit::Refused(r),
        }
        let input = req.estimated_input_tokens();
        let output = req.reserved_output_tokens();
        // Budgets: reserve the worst-case cost before the call.
        if let Some(price) = model.price {
            let worst = price.cost(Usage {
                input_tokens: input,
                output_tokens: output,
            });
            for bid in route.budgets_for(req.caller.as_deref()) {
                let b = &rt.plan.budgets[bid.index()];
                if !b.covers(route_id, target.model, up_id, req.caller.as_deref()) {
                    continue;
                }
                match rt.budgets[bid.index()].ledger.reserve(worst, now) {
                    Ok(r) => adm.budgets.push(r),
                    Err(_) => {
                        adm.clear();
                        let budget = b.name.clone();
                        return Admit::Refused(match b.on_exceed {
                            OnExceed::Reject => Refusal::Reject { budget },
                            OnExceed::Reroute(to) => Refusal::Reroute { to, budget },
                        });
                    }
                }
            }
        }
        let on_limit = Self::on_limit(rt, up_id, now, deadline);
        let tokens = input.saturating_add(output);
        match Self::local_limits(ups, tokens, adm, Step::Concurrency, on_limit, now) {
            Ok(()) => {
                let ms = &rt.models[target.model.index()];
                ms.in_flight.fetch_add(1, Relaxed);
                adm._in_flight = Some(InFlight(&ms.in_flight));
                Admit::Ready
            }
            Err(Halt::Wait(w)) => Admit::Wait(w, on_limit),
            Err(Halt::Refused(r)) => {
                adm.clear();
                Admit::Refused(r)
            }
        }
    }

    /// The local limiters from `from` on: concurrency (returned on drop), then tokens, then
    /// the request rate, each tried once; their permits go into `adm`.
    #[inline]
    fn local_limits<'r>(
        ups: &'r UpstreamState,
        tokens: u64,
        adm: &mut Admission<'r>,
        from: Step,
        on_limit: OnLimit,
        now: u64,
    ) -> Result<(), Halt> {
        if from <= Step::Concurrency {
            if let Some(c) = &ups.concurrency {
                match c.try_acquire_guard() {
                    Ok(g) => adm._concurrency = Some(g),
                    Err(e) => {
                        return Err(match on_limit {
                            OnLimit::Wait { queue_timeout } if !queue_timeout.is_zero() => {
                                Halt::Wait(Wait::Concurrency(queue_timeout))
                            }
                            _ => Halt::Refused(limited(e)),
                        })
                    }
                }
            }
        }
        if from <= Step::Tokens {
            if let Some(t) = &ups.tokens {
                match t.reserve(tokens, now) {
                    Ok(r) => adm.tokens = Some(Tokens::Local(r)),
                    Err(e) => {
                        return Err(match e.retry_in().and_then(|d| on_limit.wait_for(d)) {
                            Some(d) => Halt::Wait(Wait::Tokens(d)),
                            None => Halt::Refused(limited(e)),
                        })
                    }
                }
            }
        }
        if let Some(r) = &ups.rate {
            if let Err(nu) = r.check(now) {
                return Err(match on_limit.wait_for(nu.wait()) {
                    Some(d) => Halt::Wait(Wait::Rate(d)),
                    None => {
                        if let Some(t) = adm.tokens.take() {
                            t.settle(0, now);
                        }
                        Halt::Refused(limited(nu.into_rate_error()))
                    }
                });
            }
        }
        Ok(())
    }

    /// Finishes an admission a local limiter paused: waits as it asked, then tries the
    /// limiters again from where it stopped.
    #[allow(clippy::too_many_arguments)]
    async fn wait_admit<'r>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        adm: &mut Admission<'r>,
        mut wait: Wait,
        on_limit: OnLimit,
    ) -> Result<(), Refusal> {
        let model_id = rt.plan.route(route_id).targets[ti].model;
        let up_id = rt.plan.model(model_id).upstream;
        let ups = &rt.upstreams[up_id.index()];
        let tokens = req
            .estimated_input_tokens()
            .saturating_add(req.reserved_output_tokens());
        let mut now;
        loop {
            let from = match wait {
                Wait::Concurrency(queue_timeout) => {
                    if let Some(c) = &ups.concurrency {
                        match c.acquire_guard_timeout(queue_timeout).await {
                            Ok(g) => adm._concurrency = Some(g),
                            Err(e) => {
                                adm.clear();
                                return Err(limited(e));
                            }
                        }
                    }
                    now = self.shared.clock.now();
                    Step::Tokens
                }
                Wait::Tokens(d) => {
                    tokio::time::sleep(d).await;
                    now = self.shared.clock.now();
                    Step::Tokens
                }
                Wait::Rate(d) => {
                    tokio::time::sleep(d).await;
                    now = self.shared.clock.now();
                    Step::Rate
                }
            };
            let left = on_limit.after(Duration::from_nanos(now.saturating_sub(adm.at)));
            match Self::local_limits(ups, tokens, adm, from, left, now) {
                Ok(()) => break,
                Err(Halt::Wait(w)) => wait = w,
                Err(Halt::Refused(r)) => {
                    adm.clear();
                    return Err(r);
                }
            }
        }
        if let Err(r) = Self::recheck_breakers(&mut adm.breakers, now) {
            // Nothing was sent: the tokens reserved go back.
            if let Some(t) = adm.tokens.take() {
                t.settle(0, now);
            }
            adm.clear();
            return Err(r);
        }
        let ms = &rt.models[model_id.index()];
        ms.in_flight.fetch_add(1, Relaxed);
        adm._in_flight = Some(InFlight(&ms.in_flight));
        adm.at = now;
        Ok(())
    }

    /// [`admit_shared`](Self::admit_shared), cut at the request's deadline: the backend's
    /// round trips (each up to `[state.redis] timeout`) are the request's time too.
    async fn admit_shared_by<'r>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        now: u64,
        deadline: u64,
    ) -> Result<Admission<'r>, Refusal> {
        let left = Duration::from_nanos(deadline.saturating_sub(now));
        let admission = self.admit_shared(rt, route_id, ti, req, now, deadline);
        // Cut: the admission future is dropped, and with it every permit it took.
        tokio::time::timeout(left, admission)
            .await
            .unwrap_or(Err(Refusal::Deadline))
    }

    /// Takes every permit a call to target `ti` of the route needs, or says why not, when a
    /// shared backend is involved (it awaits the backend).
    async fn admit_shared<'r>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        ti: usize,
        req: &Request,
        now: u64,
        deadline: u64,
    ) -> Result<Admission<'r>, Refusal> {
        let route = rt.plan.route(route_id);
        let target = &route.targets[ti];
        let model = rt.plan.model(target.model);
        let up_id = model.upstream;
        let ups = &rt.upstreams[up_id.index()];
        let ms = &rt.models[target.model.index()];
        let input = req.estimated_input_tokens();
        let output = req.reserved_output_tokens();
        let breakers = Self::check_target(rt, route_id, ti, req, now)?;
        // Budgets: reserve the worst-case cost before the call.
        let mut budgets = SmallVec::new();
        let mut shared_budgets = SmallVec::new();
        if let Some(price) = model.price {
            let worst = price.cost(Usage {
                input_tokens: input,
                output_tokens: output,
            });
            for bid in route.budgets_for(req.caller.as_deref()) {
                let b = &rt.plan.budgets[bid.index()];
                if !b.covers(route_id, target.model, up_id, req.caller.as_deref()) {
                    continue;
                }
                let reserved = match &rt.shared_budgets[bid.index()] {
                    Some(sb) => sb.reserve(worst, now).await.map(|r| shared_budgets.push(r)),
                    None => rt.budgets[bid.index()]
                        .ledger
                        .reserve(worst, now)
                        .ok()
                        .map(|r| budgets.push(r)),
                };
                match reserved {
                    Some(()) => {}
                    None => {
                        let budget = b.name.clone();
                        return Err(match b.on_exceed {
                            OnExceed::Reject => Refusal::Reject { budget },
                            OnExceed::Reroute(to) => Refusal::Reroute { to, budget },
                        });
                    }
                }
            }
        }
        // Limiters: concurrency (returned on drop), then tokens, then the request rate.
        let on_limit = Self::on_limit(rt, up_id, now, deadline);
        let concurrency = match &ups.concurrency {
            None => None,
            Some(c) => match c.try_acquire_guard() {
                Ok(p) => Some(p),
                Err(e) => match on_limit {
                    OnLimit::Wait { queue_timeout } if !queue_timeout.is_zero() => Some(
                        c.acquire_guard_timeout(queue_timeout)
                            .await
                            .map_err(limited)?,
                    ),
                    _ => return Err(limited(e)),
                },
            },
        };
        // A wait for the permit is the request's time too.
        let start = now;
        let mut now = if concurrency.is_some() {
            self.shared.clock.now()
        } else {
            now
        };
        // Every wait of this admission comes out of one queue timeout.
        let left = |now: u64| on_limit.after(Duration::from_nanos(now.saturating_sub(start)));
        let shared_tokens = rt.shared_tokens[up_id.index()].as_ref();
        let tokens = match (&ups.tokens, shared_tokens) {
            (None, _) => None,
            (Some(_), Some(st)) => loop {
                match st.reserve(input.saturating_add(output), now).await {
                    Ok(r) => break Some(Tokens::Shared(r)),
                    Err(e) => match e.retry_in().and_then(|d| left(now).wait_for(d)) {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            now = self.shared.clock.now();
                        }
                        None => return Err(limited(e)),
                    },
                }
            },
            (Some(t), None) => loop {
                match t.reserve(input.saturating_add(output), now) {
                    Ok(r) => break Some(Tokens::Local(r)),
                    Err(e) => match e.retry_in().and_then(|d| left(now).wait_for(d)) {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            now = self.shared.clock.now();
                        }
                        None => return Err(limited(e)),
                    },
                }
            },
        };
        // The rate limiter decides at the time the call will start: after the backend's
        // round trips for budgets and tokens, not at the reading from before them (calls
        // checked early but started late would crowd one window).
        now = self.shared.clock.now();
        if let Some(sr) = &rt.shared_rates[up_id.index()] {
            loop {
                match sr.check(now).await {
                    Ok(()) => break,
                    Err(e) => match e.retry_in().and_then(|d| left(now).wait_for(d)) {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            now = self.shared.clock.now();
                        }
                        None => {
                            if let Some(t) = tokens {
                                t.settle(0, now);
                            }
                            return Err(limited(e));
                        }
                    },
                }
            }
        } else if let Some(r) = &ups.rate {
            loop {
                match r.check(now) {
                    Ok(()) => break,
                    Err(nu) => match left(now).wait_for(nu.wait()) {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            now = self.shared.clock.now();
                        }
                        None => {
                            if let Some(t) = tokens {
                                t.settle(0, now);
                            }
                            return Err(limited(nu.into_rate_error()));
                        }
                    },
                }
            }
        }
        // The backend's round trips took time too: the attempt starts from a fresh reading.
        let now = self.shared.clock.now();
        let mut breakers = breakers;
        if now != start {
            if let Err(r) = Self::recheck_breakers(&mut breakers, now) {
                if let Some(t) = tokens {
                    t.settle(0, now);
                }
                return Err(r);
            }
        }
        ms.in_flight.fetch_add(1, Relaxed);
        Ok(Admission {
            at: now,
            breakers,
            _concurrency: concurrency,
            tokens,
            budgets,
            shared_budgets,
            _in_flight: Some(InFlight(&ms.in_flight)),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_success<T>(
        &self,
        rt: &Runtime,
        route: RouteId,
        model: ModelId,
        adm: &mut Admission<'_>,
        done: &Done<T>,
        elapsed: Duration,
        now: u64,
    ) -> f64 {
        let ms = &rt.models[model.index()];
        ms.successes.fetch_add(1, Relaxed);
        ms.observe_latency(elapsed);
        ms.observe_outcome(false);
        self.settle(
            rt,
            route,
            model,
            adm,
            done.usage,
            done.rate_limit.map(|r| (r.remaining, r.reset)),
            if done.pending {
                Settled::Pending
            } else {
                Settled::Ok
            },
            elapsed,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_failure(
        &self,
        rt: &Runtime,
        route: RouteId,
        model: ModelId,
        adm: &mut Admission<'_>,
        f: &Failure,
        elapsed: Duration,
        now: u64,
    ) -> f64 {
        let ms = &rt.models[model.index()];
        ms.failures.fetch_add(1, Relaxed);
        let r = rt.plan.route(route);
        if r.failover_on.matches(&f.view()) {
            // A failure of the target itself (one the route would move away from) counts
            // in the latency score as its per-try timeout, so lowest-latency does not keep
            // choosing a target that fails fast.
            let per_try = r
                .targets
                .iter()
                .find(|t| t.model == model)
                .map(|t| t.timeouts.per_try);
            ms.observe_latency(per_try.unwrap_or_default().max(elapsed));
            ms.observe_outcome(true);
        }
        self.settle(
            rt,
            route,
            model,
            adm,
            f.usage,
            f.rate_limit.map(|r| (r.remaining, r.reset)),
            Settled::Failed(f),
            elapsed,
            now,
        )
    }

    /// Records an attempt's outcome everywhere it counts; returns its cost in USD. Takes the
    /// breaker permits and reservations out of `adm` (by reference: moving it is a memcpy);
    /// the caller drops what remains (concurrency permit, in-flight count) right after.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        rt: &Runtime,
        route: RouteId,
        model: ModelId,
        adm: &mut Admission<'_>,
        usage: Option<Usage>,
        rate_limit: Option<(u64, Duration)>,
        outcome: Settled<'_>,
        elapsed: Duration,
        now: u64,
    ) -> f64 {
        let failure = match outcome {
            Settled::Failed(f) => Some(f),
            Settled::Ok | Settled::Pending => None,
        };
        let m = rt.plan.model(model);
        for (slot, permit) in adm.breakers.iter_mut().filter_map(Option::take) {
            if let Settled::Pending = outcome {
                slot.breaker.record_pending(permit, elapsed, now);
                continue;
            }
            let trips = failure.is_some_and(|f| slot.policy.trip_on.matches(&f.view()));
            slot.breaker.record(permit, trips, elapsed, now);
        }
        let cost = usage.map_or(Usd::ZERO, |u| record_spend(rt, route, model, u));
        // A pending success without usage (a stream) keeps its budget and token
        // reservations: the caller moves them into the served value's hold.
        if !holds(outcome, usage) {
            Self::settle_reservations(adm, cost, usage, failure, now);
        }
        let ups = &rt.upstreams[m.upstream.index()];
        if let (Some((remaining, reset)), Some(rate)) = (rate_limit, &ups.rate) {
            if rt.plan.upstream(m.upstream).rate_limit_headers {
                rate.tighten(remaining, reset, now);
            }
        }
        cost.as_dollars()
    }

    /// Replaces an attempt's budget and token reservations by what it actually cost and used.
    fn settle_reservations(
        adm: &mut Admission<'_>,
        cost: Usd,
        usage: Option<Usage>,
        failure: Option<&Failure>,
        now: u64,
    ) {
        for r in adm.budgets.drain(..) {
            r.settle(cost);
        }
        for r in adm.shared_budgets.drain(..) {
            r.settle(cost);
        }
        if let Some(t) = adm.tokens.take() {
            match usage {
                Some(u) => t.settle(u.input_tokens.saturating_add(u.output_tokens), now),
                // A connection that never opened used no tokens; otherwise keep the estimate.
                None if failure.is_some_and(|f| f.kind == super::outcome::FailureKind::Connect) => {
                    t.settle(0, now)
                }
                None => {}
            }
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
            ms.failures.fetch_add(1, Relaxed);
            let _ = ms
                .successes
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }

    /// Races the first attempt with up to `hedges.len()` hedges, each started `after` the
    /// previous one. The first success wins and the others are cancelled (their permits
    /// return on drop). A failure whose class the route's `failover_on` does not allow
    /// ends the race at once and is returned (a hedge never fails over what a failover
    /// could not); one it allows starts the next hedge at once when nothing else is
    /// running. If all fail, the last failure is returned.
    #[allow(clippy::too_many_arguments)]
    async fn race<'r, T, F, Fut, M, MF>(
        &self,
        rt: &'r Runtime,
        route_id: RouteId,
        req: &Request,
        deadline: u64,
        op: &mut F,
        mk: &M,
        first: (usize, Admission<'r>, AttemptTime),
        hedges: &[usize],
        after: Duration,
        trail: &mut Trail,
    ) -> Finished<'r, T>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
        M: Fn(&mut F, usize, u32, bool, AttemptTime) -> MF,
        MF: Future<Output = Result<Done<T>, Failure>>,
    {
        let (ti, adm, time) = first;
        let mut running: Vec<Racer<'r, MF>> = vec![Racer {
            ti,
            adm: Some(adm),
            hedge: false,
            fut: Box::pin(mk(op, ti, 1, false, time)),
        }];
        let mut next = 0;
        let mut timer = Box::pin(tokio::time::sleep(after));
        // The latest failure, kept until we know whether it is the one to return.
        let mut last: Option<Finished<'r, T>> = None;
        // A hedge waiting for its permits, polled beside the racers so that its queueing
        // never holds up the attempts already running.
        let mut pending: Option<(usize, u64, Pin<Box<HedgeAdmission<'r, '_>>>)> = None;
        loop {
            if running.is_empty() && pending.is_none() && next >= hedges.len() {
                // Nothing runs and nothing more may start. `running` only empties through
                // a failure kept in `last`, so this is the last failure.
                if let Some(f) = last.take() {
                    return f;
                }
            }
            enum Ev<R, A> {
                Done(usize, R),
                Launch,
                Admitted(usize, u64, A),
            }
            let can_launch = next < hedges.len() && pending.is_none();
            let ev = std::future::poll_fn(|cx| {
                for (i, r) in running.iter_mut().enumerate() {
                    if let Poll::Ready(out) = r.fut.as_mut().poll(cx) {
                        return Poll::Ready(Ev::Done(i, out));
                    }
                }
                if let Some((hti, launched, adm)) = pending.as_mut() {
                    if let Poll::Ready(a) = adm.as_mut().poll(cx) {
                        return Poll::Ready(Ev::Admitted(*hti, *launched, a));
                    }
                }
                if can_launch && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ev::Launch);
                }
                Poll::Pending
            })
            .await;
            match ev {
                Ev::Launch => {
                    let hti = hedges[next];
                    next += 1;
                    // The timer is set again when this hedge starts: the next one comes
                    // `after` that, however long this one queued for its permits.
                    let now = self.shared.clock.now();
                    if now >= deadline {
                        next = hedges.len();
                        continue;
                    }
                    // Hedges draw on the same retry budget as retries and failovers.
                    let budget_ok = rt.routes[route_id.index()]
                        .retry_budget
                        .as_ref()
                        .is_none_or(|b| b.try_withdraw(now));
                    if !budget_ok {
                        next = hedges.len();
                        continue;
                    }
                    pending = Some((
                        hti,
                        now,
                        Box::pin(self.admit(rt, route_id, hti, req, now, deadline)),
                    ));
                }
                Ev::Admitted(hti, launched, admitted) => {
                    pending = None;
                    let target = &rt.plan.route(route_id).targets[hti];
                    // Measured after admission: the hedge may have queued for its permit.
                    let timeout = admitted.ok().and_then(|a| {
                        Some((attempt_timeout(target.timeouts.per_try, a.at, deadline)?, a))
                    });
                    let Some((timeout, a)) = timeout else {
                        // Refused: the next hedge may start at once (the timer has run out:
                        // the last attempt started at least `after` ago, or failed).
                        continue;
                    };
                    trail.attempts += 1;
                    let a_at = a.at;
                    timer.as_mut().reset(tokio::time::Instant::now() + after);
                    tracing::debug!(target: "tollgate::exec", model = %rt.plan.model(target.model).name, "hedging");
                    running.push(Racer {
                        ti: hti,
                        adm: Some(a),
                        hedge: true,
                        fut: Box::pin(mk(
                            op,
                            hti,
                            1,
                            true,
                            AttemptTime {
                                timeout,
                                queued: Duration::from_nanos(a_at.saturating_sub(launched)),
                            },
                        )),
                    });
                }
                Ev::Done(i, result) => {
                    let Racer { ti, adm, hedge, .. } = running.swap_remove(i);
                    let adm = adm.expect("a racer's admission is taken once, when it finishes");
                    let at = self.shared.clock.now();
                    let finished = Finished {
                        result,
                        elapsed: Duration::from_nanos(at.saturating_sub(adm.at)),
                        adm,
                        ti,
                        hedge,
                    };
                    // A failure that may not cross targets ends the race as it would end a
                    // request without hedging: no hedge fails it over (the others are
                    // cancelled on return).
                    let ends = match &finished.result {
                        Ok(_) => true,
                        Err(f) => !rt.plan.route(route_id).failover_on.matches(&f.view()),
                    };
                    let over = running.is_empty() && pending.is_none() && next >= hedges.len();
                    if ends || over {
                        // The winner, or the last failure: account any earlier failure first.
                        if let Some(prev) = last.take() {
                            self.record_lost(rt, route_id, prev, trail);
                        }
                        return finished;
                    }
                    // The failed attempt is over: its concurrency permit and in-flight count
                    // go back now, not when the race ends (its outcome is settled then).
                    let mut finished = finished;
                    finished.adm.release();
                    if let Some(prev) = last.replace(finished) {
                        self.record_lost(rt, route_id, prev, trail);
                    }
                    if running.is_empty() {
                        // Nothing in flight after a failure that may cross targets: the next
                        // hedge is the failover that would come anyway, so it starts at once.
                        timer.as_mut().reset(tokio::time::Instant::now());
                    }
                }
            }
        }
    }

    /// Accounts a failed racer that is not the one returned.
    fn record_lost<T>(
        &self,
        rt: &Runtime,
        route_id: RouteId,
        f: Finished<'_, T>,
        trail: &mut Trail,
    ) {
        let Finished {
            result,
            mut adm,
            elapsed,
            ti,
            hedge,
            ..
        } = f;
        let Err(failure) = result else { return };
        let model = rt.plan.route(route_id).targets[ti].model;
        self.settle_failure(
            rt,
            route_id,
            model,
            &mut adm,
            &failure,
            elapsed,
            self.shared.clock.now(),
        );
        drop(adm);
        trail.failed.push(AttemptRecord {
            model: rt.plan.model(model).name.clone(),
            upstream: rt.plan.upstream(rt.plan.model(model).upstream).name.clone(),
            attempt: 1,
            failure: failure.to_string(),
            kind: failure.kind,
            status: failure.status,
            elapsed,
            delay: None,
            hedge,
        });
    }
}

/// Whether an attempt that settled so keeps its reservations in a [`StreamHold`]: a
/// pending success (a stream) that reported no usage yet.
fn holds(outcome: Settled<'_>, usage: Option<Usage>) -> bool {
    matches!(outcome, Settled::Pending) && usage.is_none()
}

/// The time an attempt admitted at `at` has: its per-try timeout, cut by the request
/// deadline; `None` when the deadline has passed (queueing for a permit can use it up).
#[inline]
fn attempt_timeout(per_try: Duration, at: u64, deadline: u64) -> Option<Duration> {
    (at < deadline).then(|| per_try.min(Duration::from_nanos(deadline - at)))
}

/// Prices `usage` on `model` and records it in the spend report; returns the cost.
fn record_spend(rt: &Runtime, route: RouteId, model: ModelId, usage: Usage) -> Usd {
    let cost = rt
        .plan
        .model(model)
        .price
        .map_or(Usd::ZERO, |p| p.cost(usage));
    rt.spend.record(
        SpendKey {
            model: model.index(),
            route: route.index(),
        },
        usage,
        cost,
    );
    cost
}

/// The route for a request: the one named by `model`, else the first whose `when` matches.
pub fn select_route(plan: &Plan, req: &Request) -> Option<RouteId> {
    if let Some(r) = req.model.as_deref().and_then(|m| plan.route_by_name(m)) {
        return Some(r);
    }
    plan.routes
        .iter()
        .position(|r| r.when.as_ref().is_none_or(|w| req.matches(w)))
        .map(|i| RouteId(i as u32))
}

/// The order in which a route's targets are tried, by its strategy.
/// Target indices in the order to try them; inline for routes of up to 8 targets.
type Order = SmallVec<[usize; 8]>;

/// The identity order of up to 8 targets.
const IDENTITY: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

fn target_order(rt: &Runtime, route: RouteId, req: &Request, rng: &mut fastrand::Rng) -> Order {
    let r = rt.plan.route(route);
    let n = r.targets.len();
    let mut order: Order = if n <= IDENTITY.len() {
        // A copy of a constant array: cheaper than collecting a range element by element.
        SmallVec::from_buf_and_len(IDENTITY, n)
    } else {
        (0..n).collect()
    };
    match r.strategy {
        Strategy::Failover => {}
        Strategy::Weighted => {
            // Weighted sampling without replacement (Efraimidis–Spirakis): key = u^(1/w).
            let mut keyed: SmallVec<[(f64, usize); 8]> = order
                .iter()
                .map(|&i| (rng.f64().powf(1.0 / r.targets[i].weight), i))
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        Strategy::Cheapest => {
            let (input, output) = (req.estimated_input_tokens(), req.reserved_output_tokens());
            let usage = Usage {
                input_tokens: input,
                output_tokens: output,
            };
            let cost = |i: &usize| {
                rt.plan
                    .model(r.targets[*i].model)
                    .price
                    .map_or(u64::MAX, |p| p.cost(usage).nanos())
            };
            order.sort_by_key(cost);
        }
        Strategy::LowestLatency => {
            // The expected time to a success (`ModelState::latency_score`); no sample yet
            // counts as fastest, so every target gets measured.
            order.sort_by_key(|&i| rt.models[r.targets[i].model.index()].latency_score());
        }
        Strategy::LeastBusy => {
            order.sort_by_key(|&i| {
                rt.models[r.targets[i].model.index()]
                    .in_flight
                    .load(Relaxed)
            });
        }
    }
    order
}
