//! Runtime state: what outlives one call (limiter buckets, breaker windows, budget spend,
//! latency EWMAs), held per plan entity beside the immutable [`Plan`].
//!
//! A [`Runtime`] pairs a plan with its state. A reload builds a new runtime and carries the
//! state of every entity that still exists under the same name and compatible settings
//! (see [`Runtime::carry_over`]), then swaps the pair whole, so a request sees exactly one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::breaker::Breaker;
use super::clock::Clock;
use super::limit::{ConcurrencyLimiter, RateConfig, RateLimiter, TokenConfig, TokenLimiter};
use super::price::{BudgetConfig, BudgetLedger, SpendTracker, Usd};
use super::retry_budget::RetryBudget;
use super::shared::signals::{SignalEntry, SignalTask};
use super::shared::{Shared, SharedBudget, SharedRate, SharedTokens, StateBackend};
use super::stripe::{Counter, Striped};
use crate::plan::StateScope;
use crate::plan::{self, BreakerPolicy, Plan};

mod carry;

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

pub(crate) fn build<T, E: std::fmt::Display>(
    entity: impl FnOnce() -> String,
    r: Result<T, E>,
) -> Result<T, BuildError> {
    r.map_err(|e| BuildError {
        entity: entity(),
        reason: e.to_string(),
    })
}

/// A breaker with the policy it was built from (to carry it over only when unchanged).
#[derive(Debug, Clone)]
pub struct BreakerSlot {
    /// The breaker (shared with the previous plan's runtime when a reload left its settings
    /// unchanged).
    pub breaker: Arc<Breaker>,
    /// Its policy.
    pub policy: BreakerPolicy,
    /// Display name: `upstream relay`, `model gpt-4.1`, `route complex → gpt-4.1`.
    pub name: String,
}

/// Live state of an upstream.
#[derive(Debug)]
pub struct UpstreamState {
    /// Request rate limiter (shared across reloads while its settings are unchanged).
    pub rate: Option<Arc<RateLimiter>>,
    /// Tokens-per-minute limiter (shared across reloads while its settings are unchanged).
    pub tokens: Option<Arc<TokenLimiter>>,
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
    /// The recent latency and failure share, one estimate per thread stripe (each thread
    /// folds its own attempts into its own; readers take the mean of those with a sample:
    /// [`Self::ewma_nanos`], [`Self::failure_ppm`]).
    pub(crate) estimates: Striped<Estimate>,
    /// Calls in flight ([`Self::in_flight`]); striped, as every call writes them.
    pub(crate) in_flight: Counter,
    /// Successful attempts ([`Self::successes`]).
    pub(crate) successes: Counter,
    /// Failed attempts ([`Self::failures`]).
    pub(crate) failures: Counter,
}

/// One thread stripe's estimates of a model (see [`ModelState::estimates`]).
#[derive(Debug, Default)]
pub(crate) struct Estimate {
    /// Recent latency, exponentially weighted (nanoseconds, 0 = no sample yet).
    ewma_nanos: AtomicU64,
    /// Recent share of failed attempts, exponentially weighted, in millionths.
    failure_ppm: AtomicU32,
    /// Whether this stripe's thread has folded in a sample of its own (not only the
    /// estimate a reload carried over).
    own: AtomicBool,
}

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.3;

impl ModelState {
    /// Calls in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.get()
    }

    /// Successful attempts so far.
    pub fn successes(&self) -> u64 {
        self.successes.get()
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// Folds a latency sample into this thread's EWMA (racing updates may drop a sample: it
    /// is an estimate, and this keeps it one atomic load and store).
    pub fn observe_latency(&self, d: Duration) {
        let e = self.estimates.here();
        let sample = d.as_nanos().min(u64::MAX as u128) as u64;
        let old = e.ewma_nanos.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old as f64 * (1.0 - EWMA_ALPHA) + sample as f64 * EWMA_ALPHA) as u64
        };
        e.ewma_nanos.store(new.max(1), Relaxed);
        if !e.own.load(Relaxed) {
            e.own.store(true, Relaxed);
        }
    }

    /// Folds an attempt's outcome into this thread's failure share (as racy as the latency
    /// EWMA; a share that stays the same is not written again).
    pub fn observe_outcome(&self, failed: bool) {
        let e = self.estimates.here();
        let old = e.failure_ppm.load(Relaxed);
        let sample = if failed { 1e6 } else { 0.0 };
        let new = (f64::from(old) * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA).round() as u32;
        if new != old {
            e.failure_ppm.store(new, Relaxed);
        }
    }

    /// Recent latency, exponentially weighted (nanoseconds; 0 = no sample yet): successes at
    /// their latency, failures `failover_on` allows at their per-try timeout. The mean of
    /// the thread stripes' estimates that have a sample (one thread: its own).
    pub fn ewma_nanos(&self) -> u64 {
        self.mean(|e| e.ewma_nanos.load(Relaxed)).0
    }

    /// Recent share of failed attempts (failures `failover_on` allows), exponentially
    /// weighted, in millionths (0 = none yet); the mean as for [`Self::ewma_nanos`].
    pub fn failure_ppm(&self) -> u32 {
        let ppm = self.mean(|e| u64::from(e.failure_ppm.load(Relaxed))).1;
        u32::try_from(ppm).unwrap_or(u32::MAX)
    }

    /// The mean latency and the mean of `f` over the stripes with samples of their own, or,
    /// while none has one yet, over those with the estimate a reload carried over (so a
    /// stripe no thread uses does not hold a carried estimate in the mean for ever).
    fn mean(&self, f: impl Fn(&Estimate) -> u64) -> (u64, u64) {
        let any_own = self.estimates.iter().any(|e| e.own.load(Relaxed));
        let (mut n, mut lat, mut other) = (0u128, 0u128, 0u128);
        for e in self.estimates.iter() {
            let l = e.ewma_nanos.load(Relaxed);
            if l > 0 && (!any_own || e.own.load(Relaxed)) {
                n += 1;
                lat += u128::from(l);
                other += u128::from(f(e));
            }
        }
        match n {
            0 => (0, 0),
            // Means of u64s fit in a u64.
            n => ((lat / n) as u64, (other / n) as u64),
        }
    }

    /// Sets every stripe's estimates (of a new runtime's model, from the one it replaces):
    /// each thread continues from the carried mean.
    pub(crate) fn set_estimates(&self, ewma_nanos: u64, failure_ppm: u32) {
        for e in self.estimates.iter() {
            e.ewma_nanos.store(ewma_nanos, Relaxed);
            e.failure_ppm.store(failure_ppm, Relaxed);
            e.own.store(false, Relaxed);
        }
    }

    /// What `lowest-latency` orders targets by: the expected time to a successful answer,
    /// the latency EWMA divided by the recent success share (`u64::MAX` when every recent
    /// attempt failed); 0 before the first sample.
    pub fn latency_score(&self) -> u64 {
        let (latency, ppm) = self.mean(|e| u64::from(e.failure_ppm.load(Relaxed)));
        let latency = latency as f64;
        let success = 1.0 - (ppm.min(1_000_000) as f64) / 1e6;
        if success <= 0.0 {
            return u64::MAX;
        }
        // An `as` cast saturates: a huge quotient becomes u64::MAX.
        (latency / success) as u64
    }
}

/// Live state of a route.
#[derive(Debug)]
pub struct RouteState {
    /// The route's retry budget (shared by retries, failovers and hedges).
    pub retry_budget: Option<Arc<RetryBudget>>,
    /// Breakers replacing the upstreams' for this route, one per target, if the route names one.
    pub breakers: Vec<BreakerSlot>,
    /// Requests that came through it ([`Self::requests`]); striped, as every call counts.
    pub(crate) requests: Counter,
    /// Failovers of its requests ([`Self::failovers`]).
    pub(crate) failovers: Counter,
    retry: Option<plan::RetryBudget>,
}

impl RouteState {
    /// Requests that came through it.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// Failovers of its requests: moves from one target to another (see
    /// [`Served::failovers`](super::Served::failovers)).
    pub fn failovers(&self) -> u64 {
        self.failovers.get()
    }
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
    pub(crate) plan: Plan,
    /// The plan again, one replica per thread stripe: what each call hands out
    /// ([`plan_here`](Self::plan_here)).
    replicas: Striped<Plan>,
    /// Increases by one on every swap.
    pub(crate) version: u64,
    /// Per upstream, by [`plan::UpstreamId`].
    pub(crate) upstreams: Vec<Arc<UpstreamState>>,
    /// Per model, by [`plan::ModelId`].
    pub(crate) models: Vec<Arc<ModelState>>,
    /// Per route, by [`plan::RouteId`].
    pub(crate) routes: Vec<Arc<RouteState>>,
    /// Per budget, by [`plan::BudgetId`].
    pub(crate) budgets: Vec<Arc<BudgetState>>,
    /// Spend and tokens by model, route and upstream of this plan (a reload starts a new
    /// report; budgets, not this report, carry spend across reloads).
    pub(crate) spend: SpendTracker,
    /// Per upstream: its request-rate limiter when `limits.state = "shared"` and a backend
    /// is attached ([`Runtime::attach_shared`]); replaces the local `rate`.
    pub(crate) shared_rates: Vec<Option<Arc<SharedRate>>>,
    /// Per upstream: its tokens-per-minute limiter when `limits.state = "shared"` and a
    /// backend is attached; replaces the local `tokens`.
    pub(crate) shared_tokens: Vec<Option<Arc<SharedTokens>>>,
    /// Per budget: its shared ledger when `state = "shared"` and a backend is attached;
    /// replaces the local ledger.
    pub(crate) shared_budgets: Vec<Option<Arc<SharedBudget>>>,
    /// The backend the shared entities above use, with its settings and health (carried
    /// across reloads while `[state.redis]` is unchanged).
    pub(crate) shared: Option<Shared>,
    /// Woken by a breaker's own trip (carried across reloads, as breakers are).
    signal_wake: Arc<Notify>,
    /// The tokio runtime the signal task runs on: the one current when the first runtime
    /// was built, carried across reloads (a reload may run on a plain thread, e.g.
    /// [`crate::reload`]'s watcher).
    tokio: Option<tokio::runtime::Handle>,
    /// The task sharing `state = "shared"` breakers' trips ([`start_signals`](Self::start_signals)).
    pub(crate) signals: Option<SignalTask>,
}

impl Runtime {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The version: 1 for the first plan, one more on every swap.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The live state of an upstream of this plan.
    pub fn upstream(&self, id: plan::UpstreamId) -> &UpstreamState {
        &self.upstreams[id.index()]
    }

    /// The live state of a model of this plan.
    pub fn model(&self, id: plan::ModelId) -> &ModelState {
        &self.models[id.index()]
    }

    /// The live state of a route of this plan.
    pub fn route(&self, id: plan::RouteId) -> &RouteState {
        &self.routes[id.index()]
    }

    /// The live state of a budget of this plan.
    pub fn budget(&self, id: plan::BudgetId) -> &BudgetState {
        &self.budgets[id.index()]
    }

    /// An upstream's shared rate limiter, when it has one on an attached backend.
    pub fn shared_rate(&self, id: plan::UpstreamId) -> Option<&Arc<SharedRate>> {
        self.shared_rates[id.index()].as_ref()
    }

    /// An upstream's shared token limiter, when it has one on an attached backend.
    pub fn shared_tokens(&self, id: plan::UpstreamId) -> Option<&Arc<SharedTokens>> {
        self.shared_tokens[id.index()].as_ref()
    }

    /// A budget's shared ledger, when it has one on an attached backend.
    pub fn shared_budget(&self, id: plan::BudgetId) -> Option<&Arc<SharedBudget>> {
        self.shared_budgets[id.index()].as_ref()
    }

    /// The plan, for a call to keep: a clone of this thread's replica, whose count no other
    /// thread writes (a clone of `plan` itself would make every call on every core write
    /// one cache line).
    #[inline]
    pub(crate) fn plan_here(&self) -> Plan {
        self.replicas.here().clone()
    }

    /// The attached backend, with its settings and health.
    pub fn backend(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    /// Fresh state for a plan.
    pub fn new(plan: Plan, version: u64) -> Result<Self, BuildError> {
        Self::carry_over(plan, version, None, 0)
    }

    /// State for `plan`, carrying from `old` the state of every entity that still exists
    /// under the same name:
    /// - an entity whose settings are unchanged keeps its state as is (shared);
    /// - a rate or token limiter whose limit changed continues the old bucket under the new
    ///   limit ([`RateLimiter::new_from`]): the new limit applies at once and a reload never
    ///   refills a bucket;
    /// - a breaker whose policy changed is handed over ([`Breaker::new_from`]): open stays
    ///   open, closed keeps its consecutive failures, windows restart;
    /// - budgets keep their spend even when their limit or window changed, so a reload can
    ///   never reset a spent budget;
    /// - models keep their latency EWMA and counters, routes their request count; a route's
    ///   retry budget is kept while its settings are unchanged;
    /// - a concurrency limiter is kept, with its count of calls in flight (under either
    ///   plan), and a changed cap applies to it at once
    ///   ([`ConcurrencyLimiter::set_limit`]);
    /// - shared rate and token limiters and shared budgets (their lease, their backend
    ///   health) are kept when `[state.redis]` and the entity's settings are unchanged; one
    ///   whose settings changed is rebuilt by [`attach_shared`](Self::attach_shared) (its
    ///   bucket or spend lives in the backend, under the same key, so it continues there).
    ///
    /// Entities that no longer exist are dropped (the old runtime keeps them alive only for
    /// the calls still running under it).
    pub fn carry_over(
        plan: Plan,
        version: u64,
        old: Option<&Runtime>,
        now: u64,
    ) -> Result<Self, BuildError> {
        let wake = old.map_or_else(Default::default, |o| o.signal_wake.clone());
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| old.and_then(|o| o.tokio.clone()));
        let mut carry = carry::Carry::new(&plan, old, now, &wake);
        let upstreams = plan
            .upstreams
            .iter()
            .map(|u| carry.upstream(u))
            .collect::<Result<Vec<_>, _>>()?;
        let models = plan
            .models
            .iter()
            .map(|m| carry.model(m))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = plan
            .routes
            .iter()
            .map(|r| carry.route(r))
            .collect::<Result<Vec<_>, _>>()?;
        let budgets = plan
            .budgets
            .iter()
            .map(|b| carry.budget(b))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = carry.shared();
        // Every entity is built: only now may a changed concurrency cap apply (a failed
        // build leaves the running runtime as it was).
        carry.resize();
        let model_upstream: Vec<usize> = plan.models.iter().map(|m| m.upstream.index()).collect();
        let spend = SpendTracker::new(&model_upstream, plan.routes.len(), plan.upstreams.len());
        Ok(Runtime {
            shared_rates: shared.rates,
            shared_tokens: shared.tokens,
            shared_budgets: shared.budgets,
            shared: shared.backend,
            signal_wake: wake,
            tokio: handle,
            signals: None,
            replicas: Striped::new(|| plan.replica()),
            plan,
            version,
            upstreams,
            models,
            routes,
            budgets,
            spend,
        })
    }

    /// Puts the plan's `state = "shared"` rate and token limiters and budgets on `backend`
    /// (with the plan's `[state.redis]` settings). Without a call to this, or without
    /// `[state.redis]`, shared entities act as local ones. Entities carried over from the
    /// previous runtime on the same backend ([`carry_over`](Self::carry_over)) are kept;
    /// the others are built.
    pub fn attach_shared(
        &mut self,
        backend: &Arc<dyn StateBackend>,
        clock: &Arc<dyn Clock>,
    ) -> Result<(), BuildError> {
        let Some(settings) = self.plan.redis.clone() else {
            self.shared = None;
            self.detach_shared();
            return Ok(());
        };
        let shared = match &self.shared {
            Some(s) if Arc::ptr_eq(&s.backend, backend) && s.settings == settings => s.clone(),
            _ => {
                // Another backend: nothing carried over applies.
                self.detach_shared();
                Shared::with_clock(backend.clone(), settings, clock.clone())
            }
        };
        for (i, u) in self.plan.upstreams.iter().enumerate() {
            if u.limits.state != StateScope::Shared {
                continue;
            }
            let name = || format!("upstream `{}`", u.name);
            if let (None, Some(r)) = (&self.shared_rates[i], u.limits.rate) {
                let cfg = RateConfig {
                    rate_per_sec: r.per_second,
                    burst: r.burst,
                };
                let lim = build(name, SharedRate::new(shared.clone(), &u.name, cfg))?;
                self.shared_rates[i] = Some(Arc::new(lim));
            }
            if let (None, Some(t)) = (&self.shared_tokens[i], u.limits.tokens_per_minute) {
                let cfg = token_config(t);
                let lim = build(name, SharedTokens::new(shared.clone(), &u.name, cfg))?;
                self.shared_tokens[i] = Some(Arc::new(lim));
            }
        }
        for (i, b) in self.plan.budgets.iter().enumerate() {
            if b.state == StateScope::Shared && self.shared_budgets[i].is_none() {
                let name = || format!("budget `{}`", b.name);
                let limit = build(name, Usd::from_dollars(b.limit_usd))?;
                let cfg = BudgetConfig {
                    limit,
                    window: b.window,
                };
                let sb = build(name, SharedBudget::new(shared.clone(), &b.name, cfg))?;
                self.shared_budgets[i] = Some(Arc::new(sb));
            }
        }
        self.shared = Some(shared);
        Ok(())
    }

    /// Drops every shared limiter and budget (they act as local ones again).
    fn detach_shared(&mut self) {
        self.shared_rates.iter_mut().for_each(|s| *s = None);
        self.shared_tokens.iter_mut().for_each(|s| *s = None);
        self.shared_budgets.iter_mut().for_each(|s| *s = None);
    }
}

impl Runtime {
    /// The plan's `state = "shared"` breakers with their backend keys
    /// (`prefix + "breaker:" + entity`); none without an attached backend.
    pub fn shared_breakers(&self) -> Vec<SignalEntry> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        let prefix = &shared.settings.key_prefix;
        let mut out = Vec::new();
        let mut add = |slot: Option<&BreakerSlot>, entity: String| {
            if let Some(s) = slot.filter(|s| s.policy.state == StateScope::Shared) {
                out.push(SignalEntry {
                    key: format!("{prefix}breaker:{entity}"),
                    breaker: s.breaker.clone(),
                });
            }
        };
        for (u, st) in self.plan.upstreams.iter().zip(&self.upstreams) {
            add(st.breaker.as_ref(), format!("upstream:{}", u.name));
        }
        for (m, st) in self.plan.models.iter().zip(&self.models) {
            add(st.breaker.as_ref(), format!("model:{}", m.name));
        }
        for (r, st) in self.plan.routes.iter().zip(&self.routes) {
            for (t, slot) in r.targets.iter().zip(&st.breakers) {
                let model = &self.plan.model(t.model).name;
                add(Some(slot), format!("route:{}:{model}", r.name));
            }
        }
        out
    }

    /// Starts the task that shares the trips of the plan's `state = "shared"` breakers
    /// through the attached backend ([`crate::exec::shared::signals`]), replacing any
    /// previous one. Nothing without shared breakers or an attached backend. Call it after
    /// [`attach_shared`](Self::attach_shared); the task ends when the runtime is dropped or
    /// [`stop_signals`](Self::stop_signals) is called.
    pub fn start_signals(&mut self, clock: &Arc<dyn Clock>) {
        self.signals = None;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let entries = self.shared_breakers();
        let poll = shared.settings.breaker_poll;
        self.signals = SignalTask::start(
            shared,
            entries,
            clock.clone(),
            self.signal_wake.clone(),
            poll,
            self.tokio.as_ref(),
        );
    }

    /// Ends the signal task (a reload replaced this runtime; calls still running under it
    /// keep their breakers, which are local from now on).
    pub fn stop_signals(&self) {
        if let Some(t) = &self.signals {
            t.stop();
        }
    }
}

/// A tokens-per-minute limit as a limiter config: the bucket holds one minute of tokens
/// (a burst may use the whole minute).
pub(crate) fn token_config(tpm: f64) -> TokenConfig {
    let tpm = tpm.ceil().max(1.0) as u64;
    TokenConfig {
        tokens_per_minute: tpm,
        burst: tpm,
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::exec::breaker::BreakerState;
    use crate::exec::shared::signals::POLL;
    use crate::exec::shared::MemoryBackend;
    use crate::exec::Executor;
    use crate::policy::LoadOptions;

    /// One thread's estimates are its own EWMA, as before striping; several threads' are the
    /// mean of theirs; a carried estimate continues on every stripe.
    #[test]
    fn estimates_are_each_threads_ewma_and_their_mean() {
        let m = ModelState::default();
        assert_eq!(
            (m.ewma_nanos(), m.failure_ppm(), m.latency_score()),
            (0, 0, 0)
        );
        m.observe_latency(Duration::from_nanos(1_000));
        m.observe_latency(Duration::from_nanos(2_000));
        m.observe_outcome(true);
        assert_eq!(m.ewma_nanos(), 1_300, "0.7 · 1000 + 0.3 · 2000");
        assert_eq!(m.failure_ppm(), 300_000);
        // Another stripe (there are at least two: twice the cores) with 3,000 and no failure.
        let mine: *const Estimate = m.estimates.here();
        let other = (m.estimates.iter())
            .find(|e| !std::ptr::eq(*e, mine))
            .expect("at least two stripes");
        other.ewma_nanos.store(3_000, Relaxed);
        other.own.store(true, Relaxed);
        assert_eq!(m.ewma_nanos(), 2_150, "the mean of 1,300 and 3,000");
        assert_eq!(m.failure_ppm(), 150_000);
        let n = ModelState::default();
        n.set_estimates(5_000, 10);
        assert_eq!((n.ewma_nanos(), n.failure_ppm()), (5_000, 10), "carried");
        n.observe_latency(Duration::from_nanos(1_000));
        n.observe_outcome(false);
        // This thread's own 0.7 · 5000 + 0.3 · 1000 only: the other stripes hold the carried
        // estimate, which no longer counts once a thread has its own.
        assert_eq!((n.ewma_nanos(), n.failure_ppm()), (3_800, 7));
    }

    /// Compiles a test policy (no environment overrides).
    fn compile(toml: String) -> Plan {
        let opts =
            LoadOptions::from_text("policy.toml", toml).with_env(Vec::<(String, String)>::new());
        match Plan::load(&opts) {
            Ok(c) => c.plan,
            Err(d) => panic!("{}", d.render(false)),
        }
    }

    fn plan(rps: u32, tpm: u32, budget: f64) -> Plan {
        let toml = format!(
            r#"
version = 1
[state.redis]
url = {{ env = "REDIS_URL" }}
lease = 8

[upstreams.main]
base_url = "https://api.example.com/v1"
limits = {{ requests_per_second = {rps}, burst = {rps}, tokens_per_minute = {tpm}, state = "shared" }}

[models.small]
upstream = "main"
price = {{ input_per_mtok = 1, output_per_mtok = 1 }}

[[routes]]
name = "default"
targets = ["small"]

[budgets.daily]
limit_usd = {budget}
window = "1h"
state = "shared"
"#
        );
        compile(toml)
    }

    fn capped(concurrency: u32) -> Plan {
        let toml = format!(
            r#"
[upstreams.main]
base_url = "https://api.example.com/v1"
limits = {{ concurrency = {concurrency} }}
[models.small]
upstream = "main"
[[routes]]
name = "default"
targets = ["small"]
"#
        );
        compile(toml)
    }

    /// A changed concurrency cap applies at once to one count shared by the calls in flight
    /// under the old plan and the calls under the new one.
    #[test]
    fn a_changed_concurrency_cap_keeps_one_count() {
        let rt0 = Runtime::carry_over(capped(2), 0, None, 0).unwrap();
        let lim0 = rt0.upstreams[0].concurrency.clone().unwrap();
        let (a, b) = (lim0.try_acquire().unwrap(), lim0.try_acquire().unwrap());

        // Raised to 3: the two calls in flight count, one more fits.
        let rt1 = Runtime::carry_over(capped(3), 1, Some(&rt0), 0).unwrap();
        let lim1 = rt1.upstreams[0].concurrency.clone().unwrap();
        assert_eq!((lim1.in_flight(), lim1.limit()), (2, 3));
        let c = lim1.try_acquire().unwrap();
        assert!(lim1.try_acquire().is_err());

        // Lowered to 1: nothing new until the three in flight are down to none.
        let rt2 = Runtime::carry_over(capped(1), 2, Some(&rt1), 0).unwrap();
        let lim2 = rt2.upstreams[0].concurrency.clone().unwrap();
        drop((b, c));
        assert!(
            lim2.try_acquire().is_err(),
            "one call of the first plan still runs"
        );
        drop(a);
        assert!(lim2.try_acquire().is_ok());
        assert_eq!(lim0.limit(), 1, "the old plan's calls see the new cap too");
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_shared_state_and_rebuilds_changed() {
        let b: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
        let exec = Executor::builder(plan(1000, 60_000, 10.0))
            .state_backend(b)
            .build()
            .unwrap();
        let rt0 = exec.runtime();
        let rate0 = rt0.shared_rates[0].clone().unwrap();
        let tokens0 = rt0.shared_tokens[0].clone().unwrap();
        let budget0 = rt0.shared_budgets[0].clone().unwrap();
        // A batch of 8: one spent, 7 held.
        rate0.check(0).await.unwrap();
        let held = rate0.leased();
        assert_eq!(held, 7);

        // The same plan again (a reload that changed nothing shared).
        exec.swap_plan(plan(1000, 60_000, 10.0)).unwrap();
        let rt1 = exec.runtime();
        assert!(Arc::ptr_eq(rt1.shared_rates[0].as_ref().unwrap(), &rate0));
        assert!(Arc::ptr_eq(
            rt1.shared_tokens[0].as_ref().unwrap(),
            &tokens0
        ));
        assert!(Arc::ptr_eq(
            rt1.shared_budgets[0].as_ref().unwrap(),
            &budget0
        ));
        assert_eq!(rt1.shared_rates[0].as_ref().unwrap().leased(), held);
        assert!(Arc::ptr_eq(
            &rt1.shared.as_ref().unwrap().health,
            &rt0.shared.as_ref().unwrap().health
        ));

        // A changed request rate: a new rate limiter (empty lease); the others are kept,
        // and everything is still on the backend.
        exec.swap_plan(plan(500, 60_000, 10.0)).unwrap();
        let rt2 = exec.runtime();
        let rate2 = rt2.shared_rates[0].as_ref().unwrap();
        assert!(!Arc::ptr_eq(rate2, &rate0));
        assert_eq!(rate2.leased(), 0);
        assert!(Arc::ptr_eq(
            rt2.shared_tokens[0].as_ref().unwrap(),
            &tokens0
        ));
        assert!(Arc::ptr_eq(
            rt2.shared_budgets[0].as_ref().unwrap(),
            &budget0
        ));

        // Changed tokens and budget: rebuilt, still shared.
        exec.swap_plan(plan(500, 30_000, 20.0)).unwrap();
        let rt3 = exec.runtime();
        assert!(!Arc::ptr_eq(
            rt3.shared_tokens[0].as_ref().unwrap(),
            &tokens0
        ));
        assert!(!Arc::ptr_eq(
            rt3.shared_budgets[0].as_ref().unwrap(),
            &budget0
        ));
        assert!(Arc::ptr_eq(rt3.shared_rates[0].as_ref().unwrap(), rate2));
    }

    #[test]
    fn without_a_backend_nothing_is_shared() {
        let rt0 = Runtime::new(plan(1000, 60_000, 10.0), 0).unwrap();
        let rt1 = Runtime::carry_over(plan(1000, 60_000, 10.0), 1, Some(&rt0), 0).unwrap();
        assert!(rt1.shared.is_none());
        assert!(rt1.shared_rates.iter().all(Option::is_none));
        assert!(rt1.shared_tokens.iter().all(Option::is_none));
    }

    fn breaker_plan(state: &str) -> Plan {
        breaker_plan_with(state, "")
    }

    fn breaker_plan_with(state: &str, redis_extra: &str) -> Plan {
        let toml = format!(
            r#"
version = 1
[state.redis]
url = {{ env = "REDIS_URL" }}
timeout = "50ms"
{redis_extra}

[breakers.trip]
consecutive_failures = 2
open_for = "10s"
state = "{state}"

[upstreams.main]
base_url = "https://api.example.com/v1"
breaker = "trip"

[models.small]
upstream = "main"
price = {{ input_per_mtok = 1, output_per_mtok = 1 }}

[[routes]]
name = "default"
targets = ["small"]
"#
        );
        compile(toml)
    }

    fn instance(b: &Arc<MemoryBackend>, state: &str) -> Executor {
        let b: Arc<dyn StateBackend> = b.clone();
        Executor::builder(breaker_plan(state))
            .state_backend(b)
            .build()
            .unwrap()
    }

    fn breaker(e: &Executor) -> Arc<Breaker> {
        e.runtime().upstreams[0]
            .breaker
            .as_ref()
            .unwrap()
            .breaker
            .clone()
    }

    /// Two failures in a row on `e`'s breaker: it trips open by itself.
    fn trip(e: &Executor) {
        let (b, now) = (breaker(e), e.clock().now());
        for _ in 0..2 {
            let p = b.try_acquire(now).expect("closed");
            b.record(p, true, Duration::from_millis(1), now);
        }
        assert_eq!(b.state(now), BreakerState::Open);
    }

    /// Lets the signal tasks run (the memory backend answers at once).
    async fn run_tasks() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_interval_is_the_policys() {
        let backend = Arc::new(MemoryBackend::new());
        let b: Arc<dyn StateBackend> = backend.clone();
        let make = || {
            Executor::builder(breaker_plan_with("shared", "breaker_poll = \"1s\""))
                .state_backend(b.clone())
                .build()
                .unwrap()
        };
        let (a, b) = (make(), make());
        run_tasks().await;
        trip(&a);
        run_tasks().await;
        tokio::time::advance(POLL).await;
        run_tasks().await;
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Closed);
        tokio::time::advance(Duration::from_secs(1) - POLL).await;
        run_tasks().await;
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trip_on_one_instance_opens_the_others_within_one_poll() {
        let backend = Arc::new(MemoryBackend::new());
        let (a, b) = (instance(&backend, "shared"), instance(&backend, "shared"));
        assert_eq!(
            a.runtime().signals.as_ref().unwrap().keys(),
            ["tollgate:breaker:upstream:main"]
        );
        run_tasks().await;
        trip(&a);
        run_tasks().await; // A publishes at once (woken by the trip)
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Closed);
        tokio::time::advance(POLL).await;
        run_tasks().await;
        let now = b.clock().now();
        assert_eq!(breaker(&b).state(now), BreakerState::Open);
        let left = breaker(&b).open_until().unwrap() - now;
        assert!(
            left <= 10_000_000_000 && left > 9_000_000_000,
            "B open for what A has left: {left} ns"
        );
        let open_at_a = breaker(&a).open_until().unwrap();
        assert!(breaker(&b).try_acquire(now).is_err());

        // Past the remaining time both half-open and probe locally: neither is reopened by
        // the (expired) signal, the one that tripped included.
        tokio::time::advance(Duration::from_secs(10)).await;
        run_tasks().await;
        tokio::time::advance(POLL).await;
        run_tasks().await;
        assert!(a.clock().now() > open_at_a);
        assert_eq!(breaker(&a).state(a.clock().now()), BreakerState::HalfOpen);
        assert_eq!(breaker(&a).open_until(), Some(open_at_a));
        let bb = breaker(&b);
        let p = bb.try_acquire(b.clock().now()).expect("a probe");
        assert!(p.is_probe());
        // B's probe fails: B trips again, and A learns it.
        bb.record(p, true, Duration::from_millis(1), b.clock().now());
        run_tasks().await;
        tokio::time::advance(POLL).await;
        run_tasks().await;
        assert_eq!(breaker(&a).state(a.clock().now()), BreakerState::Open);
        let h = a.runtime().shared.as_ref().unwrap().health.clone();
        assert_eq!(h.failures.load(Relaxed), 0);
        assert_eq!(h.signals_sent.load(Relaxed), 1);
        assert_eq!(h.signals_received.load(Relaxed), 1);
        let stats = b.stats().shared.unwrap();
        assert_eq!(
            (stats.breaker_signals_sent, stats.breaker_signals_received),
            (1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn local_breakers_publish_nothing() {
        let backend = Arc::new(MemoryBackend::new());
        let (a, b) = (instance(&backend, "local"), instance(&backend, "local"));
        assert!(a.runtime().signals.is_none());
        trip(&a);
        tokio::time::advance(POLL * 2).await;
        run_tasks().await;
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Closed);
        assert_eq!(backend.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_backend_down_shared_breakers_are_local() {
        let backend = Arc::new(MemoryBackend::new());
        let (a, b) = (instance(&backend, "shared"), instance(&backend, "shared"));
        backend.set_down(true);
        trip(&a);
        for _ in 0..8 {
            tokio::time::advance(POLL).await;
            run_tasks().await;
        }
        // B never learns (and never waits): its breaker is its own.
        let now = b.clock().now();
        assert_eq!(breaker(&b).state(now), BreakerState::Closed);
        assert!(breaker(&b).try_acquire(now).is_ok());
        let h = b.runtime().shared.as_ref().unwrap().health.clone();
        assert!(h.failures.load(Relaxed) >= 1 && h.is_open());
        // Back up: A's trip, still open, is published on a later poll and B learns it.
        backend.set_down(false);
        for _ in 0..8 {
            tokio::time::advance(POLL).await;
            run_tasks().await;
        }
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_ends_the_old_task_and_starts_one_for_the_new_plan() {
        let backend = Arc::new(MemoryBackend::new());
        let (a, b) = (instance(&backend, "shared"), instance(&backend, "shared"));
        let old = b.runtime();
        b.swap_plan(breaker_plan("shared")).unwrap();
        run_tasks().await;
        assert!(old.signals.as_ref().unwrap().is_finished());
        assert!(!b.runtime().signals.as_ref().unwrap().is_finished());
        // The breaker was carried over; the new task shares its trips.
        trip(&a);
        tokio::time::advance(POLL).await;
        run_tasks().await;
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Open);
        // A reload to a local breaker: no task.
        b.swap_plan(breaker_plan("local")).unwrap();
        assert!(b.runtime().signals.is_none());
        drop(old);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_on_a_plain_thread_keeps_sharing_trips() {
        let backend = Arc::new(MemoryBackend::new());
        let (a, b) = (instance(&backend, "shared"), instance(&backend, "shared"));
        // The reload watcher swaps plans from its own thread, outside any tokio runtime.
        let b2 = b.clone();
        std::thread::spawn(move || b2.swap_plan(breaker_plan("shared")).map(drop))
            .join()
            .expect("no panic")
            .unwrap();
        assert_eq!(b.runtime().version, 2);
        assert!(b.runtime().signals.is_some());
        trip(&a);
        run_tasks().await;
        tokio::time::advance(POLL).await;
        run_tasks().await;
        assert_eq!(breaker(&b).state(b.clock().now()), BreakerState::Open);
    }
}
