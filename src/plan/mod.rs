//! The plan: a policy compiled into an immutable, fully resolved form.
//!
//! Names are resolved to indices, defaults applied at every level, durations and classes
//! parsed, and every semantic rule checked (see [`compile`]). The executor reads only the
//! plan; a plan is cheap to clone (`Arc`) and never changes, so a reload swaps plans
//! whole and a request sees exactly one.
//!
//! # Shape
//! - this file: the plan's types ([`Plan`], [`Route`], [`Upstream`], …) and their ids;
//!   the settings it shares with the executor come from [`crate::spec`];
//! - `compile/`: the compiler, one file per policy section, each check reporting a
//!   [`Diagnostic`](crate::diagnostic::Diagnostic) with a [`Code`](crate::diagnostic::Code);
//! - `bounds`: the static worst-case bounds (`tollgate explain`, deadline warnings);
//! - `class`: failure classes; `matcher`: a route's compiled `when`.
//!
//! ```
//! use tollgate::plan::Plan;
//! use tollgate::policy::LoadOptions;
//!
//! let compiled = Plan::load(&LoadOptions::new(["policies/minimal.toml"]).with_env(Vec::<(String, String)>::new()))
//!     .expect("the minimal policy compiles");
//! let plan = compiled.plan;
//! assert!(plan.route_by_name("default").is_some());
//! ```

mod bounds;
mod class;
mod compile;
mod matcher;
mod model_names;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use bounds::{
    admission_wait, attempts_per_target, hedges, retry_waits, route_bounds, RetryWaits,
    RouteBounds, TokenCounts, EXACT_RETRIES, MAX_ATTEMPTS,
};
pub use class::{ClassError, ClassMatcher, ClassSet, FailureView, CONTEXT_LENGTH_CODE};
pub use compile::{compile, Compiled, DEFAULT_FAILOVER_ON, DEFAULT_RETRY_ON, DEFAULT_TRIP_ON};
pub use matcher::{Attr, AttrKind, Cmp, Matcher};

use crate::policy::Strategy;

macro_rules! id_type {
    ($($(#[$m:meta])* $name:ident),*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            /// The index into the plan's list.
            pub fn index(self) -> usize { self.0 as usize }
        }
    )*};
}

id_type!(
    /// Index of an upstream in [`Plan::upstreams`].
    UpstreamId,
    /// Index of a model in [`Plan::models`].
    ModelId,
    /// Index of a route in [`Plan::routes`].
    RouteId,
    /// Index of a retry policy in [`Plan::retries`].
    RetryId,
    /// Index of a breaker policy in [`Plan::breakers`].
    BreakerId,
    /// Index of a budget in [`Plan::budgets`].
    BudgetId
);

/// A compiled policy. Clone it freely: it is an `Arc`.
///
/// An `Arc` of an `Arc`: a [`replica`](Plan::replica) is the same plan under a reference
/// count of its own, so threads that clone the plan on every call (the executor hands one
/// to each attempt) each count on their own cache line (`exec::stripe`).
#[derive(Debug, Clone)]
// The outer allocation is the point: one reference count per replica.
#[allow(clippy::redundant_allocation)]
pub struct Plan(Arc<Arc<PlanData>>);

/// The contents of a [`Plan`].
#[derive(Debug)]
pub struct PlanData {
    /// Upstreams, in name order.
    pub upstreams: Vec<Upstream>,
    /// Models, in name order.
    pub models: Vec<Model>,
    /// Routes, in match order.
    pub routes: Vec<Route>,
    /// Retry policies, in name order; the last is the built-in single-attempt policy.
    pub retries: Vec<RetryPolicy>,
    /// Breaker policies, in name order.
    pub breakers: Vec<BreakerPolicy>,
    /// Budgets, in name order.
    pub budgets: Vec<Budget>,
    /// Model whose prices the savings report compares against.
    pub baseline_model: Option<ModelId>,
    /// `[state.redis]`, if the policy has one.
    pub redis: Option<RedisSettings>,
    /// Callers of the relay (`[callers.NAME]`), in name order.
    pub callers: Vec<Caller>,
    names: Names,
    /// The `model` values requests may name ([`Plan::knows_model_name`]).
    model_names: model_names::ModelNames,
}

/// Name → index maps, one per kind, so a lookup by `&str` does not allocate.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) upstreams: HashMap<String, u32>,
    pub(crate) models: HashMap<String, u32>,
    pub(crate) routes: HashMap<String, u32>,
    pub(crate) budgets: HashMap<String, u32>,
    pub(crate) caller_hashes: HashMap<[u8; 32], u32>,
}

impl std::ops::Deref for Plan {
    type Target = PlanData;
    fn deref(&self) -> &PlanData {
        &self.0
    }
}

impl Plan {
    /// The same plan under another reference count (see the type's docs).
    pub(crate) fn replica(&self) -> Plan {
        Plan(Arc::new(Arc::clone(&self.0)))
    }

    /// Loads and compiles in one step.
    pub fn load(
        opts: &crate::policy::LoadOptions,
    ) -> Result<Compiled, crate::diagnostic::Diagnostics> {
        compile(crate::policy::load(opts))
    }
    /// An upstream by name.
    pub fn upstream_by_name(&self, name: &str) -> Option<UpstreamId> {
        self.names.upstreams.get(name).copied().map(UpstreamId)
    }
    /// A model by name.
    pub fn model_by_name(&self, name: &str) -> Option<ModelId> {
        self.names.models.get(name).copied().map(ModelId)
    }
    /// A route by name.
    pub fn route_by_name(&self, name: &str) -> Option<RouteId> {
        self.names.routes.get(name).copied().map(RouteId)
    }
    /// A budget by name.
    pub fn budget_by_name(&self, name: &str) -> Option<BudgetId> {
        self.names.budgets.get(name).copied().map(BudgetId)
    }
    /// Whether `m` is a route name, a model name, or a value some route's `when` tests
    /// `model` against (`eq`/`in`, or containing one of its words), from an index built
    /// at compile time.
    pub fn knows_model_name(&self, m: &str) -> bool {
        self.model_names.contains(m)
    }
    /// The name of the caller whose key hashes (SHA-256) to `hash`.
    pub fn caller_by_key_hash(&self, hash: &[u8; 32]) -> Option<&str> {
        self.names
            .caller_hashes
            .get(hash)
            .map(|&i| self.callers[i as usize].name.as_str())
    }
    /// An upstream.
    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        &self.upstreams[id.index()]
    }
    /// A model.
    pub fn model(&self, id: ModelId) -> &Model {
        &self.models[id.index()]
    }
    /// A route.
    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id.index()]
    }
    /// A retry policy.
    pub fn retry(&self, id: RetryId) -> &RetryPolicy {
        &self.retries[id.index()]
    }
}

/// Resolved timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout.
    pub connect: Duration,
    /// Per-attempt timeout.
    pub per_try: Duration,
    /// Whole-request deadline.
    pub total: Duration,
}

/// Built-in timeouts, used where no level sets one.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    per_try: Duration::from_secs(30),
    total: Duration::from_secs(120),
};

/// An API key reference. The key itself is read at start-up, never at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRef {
    /// The environment variable.
    pub env: String,
    /// Allowed prefixes (empty: any).
    pub prefixes: Vec<String>,
}

/// A resolved upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Its name.
    pub name: String,
    /// Base URL.
    pub base_url: String,
    /// The API format it speaks.
    pub api: crate::http::wire::Api,
    /// The `anthropic-version` header (for `api = "anthropic"`).
    pub anthropic_version: String,
    /// Where its keys come from (`api_key`: one; `api_keys`: several, in rotation; none:
    /// calls go without `Authorization`).
    pub api_keys: Vec<ApiKeyRef>,
    /// Pool: most connections.
    pub max_connections: u32,
    /// Pool: most idle connections.
    pub max_idle: u32,
    /// Pool: idle timeout.
    pub idle_timeout: Duration,
    /// Limits.
    pub limits: Limits,
    /// Follow rate-limit headers.
    pub rate_limit_headers: bool,
    /// Breaker policy for the upstream.
    pub breaker: Option<BreakerId>,
    /// Timeouts (upstream over defaults).
    pub timeouts: Timeouts,
}

/// Resolved limits of an upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per second and burst.
    pub rate: Option<Rate>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<f64>,
    /// Concurrency cap.
    pub concurrency: Option<u32>,
    /// Fail fast, or wait up to the queue timeout (`on_limit` with its `queue_timeout`).
    pub on_limit: crate::spec::limit::OnLimit,
    /// Whether the rate and token limits are this process's or shared through Redis.
    pub state: StateScope,
}

pub use crate::policy::{FailMode, StateScope};

/// Default `[state.redis] key_prefix`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tollgate:";
/// Default `[state.redis] timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `[state.redis] breaker_poll`.
pub const DEFAULT_BREAKER_POLL: Duration = Duration::from_millis(250);

/// Resolved `[state.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Environment variable holding the URL (read at start-up, never at compile time).
    pub url_env: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Longest wait for one Redis operation.
    pub timeout: Duration,
    /// Connections.
    pub pool_size: u32,
    /// Behaviour while Redis is unreachable.
    pub fail_mode: FailMode,
    /// Instances expected to share the limits (fail-open scaling), >= 1.
    pub expected_instances: u32,
    /// Rate-limiter permits taken from Redis at once, >= 1.
    pub lease: u32,
    /// How often shared breakers' signals are read (> 0).
    pub breaker_poll: Duration,
}

/// A request rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Steady rate.
    pub per_second: f64,
    /// Burst above it.
    pub burst: u32,
}

/// Token prices, USD per million: the executor's own type.
pub use crate::spec::price::Price;

/// A resolved model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Its name.
    pub name: String,
    /// The upstream serving it.
    pub upstream: UpstreamId,
    /// The id sent upstream.
    pub upstream_model: String,
    /// Its price, if known.
    pub price: Option<Price>,
    /// `max_tokens` sent when a request sets none.
    pub max_tokens: Option<u64>,
    /// Its context window, if known.
    pub context_window: Option<u64>,
    /// A breaker of its own, if any.
    pub breaker: Option<BreakerId>,
}

/// Resolved backoff: the executor's own configuration.
pub use crate::spec::backoff::BackoffConfig as Backoff;

/// Spread of `proportional` jitter when `jitter_ratio` is not set.
pub const DEFAULT_JITTER_RATIO: f64 = 0.2;

/// Built-in backoff: exponential from 100ms, factor 2, cap 10s, full jitter.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    kind: crate::spec::backoff::BackoffKind::Exponential,
    base: Duration::from_millis(100),
    factor: 2.0,
    max: Duration::from_secs(10),
    jitter: crate::spec::backoff::Jitter::Full,
};

/// A resolved retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Its name (`<none>` for the built-in single attempt).
    pub name: String,
    /// Attempts per target.
    pub max_attempts: u32,
    /// Backoff.
    pub backoff: Backoff,
    /// Retried classes.
    pub retry_on: ClassSet,
    /// Honour `Retry-After`.
    pub retry_after_honor: bool,
    /// Cap on a honoured `Retry-After`.
    pub retry_after_max: Duration,
    /// Retry budget.
    pub budget: Option<RetryBudget>,
    /// Per-class overrides, most specific first.
    pub overrides: Vec<RetryOverride>,
}

impl RetryPolicy {
    /// The override for a failure, if one applies.
    pub fn override_for(&self, f: &FailureView<'_>) -> Option<&RetryOverride> {
        self.overrides.iter().find(|o| o.class.matches(f))
    }
    /// Most attempts any failure class allows.
    pub fn max_attempts_any(&self) -> u32 {
        self.overrides
            .iter()
            .filter_map(|o| o.max_attempts)
            .chain([self.max_attempts])
            .max()
            .unwrap_or(1)
    }
}

/// A per-class override.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOverride {
    /// The class.
    pub class: ClassMatcher,
    /// Attempts, if overridden.
    pub max_attempts: Option<u32>,
    /// Backoff, if overridden.
    pub backoff: Option<Backoff>,
}

/// A resolved retry budget: the executor's settings for it.
pub use crate::spec::retry_budget::RetryBudgetConfig as RetryBudget;

/// A resolved breaker policy.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Its name.
    pub name: String,
    /// When it opens and closes: the executor's own configuration.
    pub config: crate::spec::breaker::BreakerConfig,
    /// Classes counted as failures.
    pub trip_on: ClassSet,
    /// `shared`: trips are published to and learned from the state backend.
    pub state: StateScope,
}

/// A target of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    /// The model.
    pub model: ModelId,
    /// Its weight.
    pub weight: f64,
    /// Timeouts for this target (route over upstream over defaults).
    pub timeouts: Timeouts,
}

/// Hedging settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedge {
    /// Delay before each extra attempt.
    pub after: Duration,
    /// Most extra attempts.
    pub max_extra: u32,
}

/// Streaming timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamingTimeouts {
    /// First byte.
    pub first_byte: Option<Duration>,
    /// Gap between chunks.
    pub idle_chunk: Option<Duration>,
}

/// A resolved route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// What it matches; `None` matches everything.
    pub when: Option<Matcher>,
    /// How a target is picked.
    pub strategy: Strategy,
    /// Its targets.
    pub targets: Vec<RouteTarget>,
    /// Classes that may move a request to the next target.
    pub failover_on: ClassSet,
    /// Hedging.
    pub hedge: Option<Hedge>,
    /// Retry policy.
    pub retry: RetryId,
    /// Breaker policy replacing the upstreams' for this route.
    pub breaker: Option<BreakerId>,
    /// The route's whole-request deadline (route over defaults).
    pub total_timeout: Duration,
    /// Streaming timeouts.
    pub streaming: Option<StreamingTimeouts>,
    /// Budgets that cover calls through this route (some only for some models).
    pub budgets: Vec<BudgetId>,
    /// The same budgets indexed by the callers they name, so a call visits only those that
    /// may cover it ([`Route::budgets_for`]).
    pub budget_index: BudgetIndex,
}

impl Route {
    /// The budgets of [`budgets`](Self::budgets) that may cover a call by `caller`, in the
    /// same (id) order: those without a `keys` scope and those naming this caller. A
    /// per-caller budget of another caller is not visited, so the cost of a call does not
    /// grow with the number of callers. [`Budget::covers`] still decides for each.
    pub fn budgets_for<'a>(&'a self, caller: Option<&str>) -> MergedBudgets<'a> {
        let keyed = caller
            .and_then(|c| self.budget_index.by_key.get(c))
            .map_or(&[][..], Vec::as_slice);
        MergedBudgets {
            a: &self.budget_index.unkeyed,
            b: keyed,
        }
    }
}

/// A route's budgets split by whether they name callers (`scope.keys`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BudgetIndex {
    /// Budgets without a `keys` scope, in id order.
    unkeyed: Vec<BudgetId>,
    /// For each caller name, the budgets naming it in `scope.keys`, in id order.
    by_key: HashMap<String, Vec<BudgetId>>,
}

impl BudgetIndex {
    /// Indexes `ids` (in id order), budgets of `budgets`.
    pub(crate) fn new(ids: &[BudgetId], budgets: &[Budget]) -> Self {
        let mut ix = BudgetIndex::default();
        for &id in ids {
            let keys = &budgets[id.index()].scope.keys;
            if keys.is_empty() {
                ix.unkeyed.push(id);
            }
            for k in keys {
                let list = ix.by_key.entry(k.clone()).or_default();
                // A key named twice in one budget is visited once.
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
        }
        ix
    }
}

/// Two id-ordered budget lists merged in id order (see [`Route::budgets_for`]).
#[derive(Debug, Clone)]
pub struct MergedBudgets<'a> {
    a: &'a [BudgetId],
    b: &'a [BudgetId],
}

impl Iterator for MergedBudgets<'_> {
    type Item = BudgetId;
    fn next(&mut self) -> Option<BudgetId> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(x), Some(y)) => x <= y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let list = if take_a { &mut self.a } else { &mut self.b };
        let (first, rest) = list.split_first()?;
        *list = rest;
        Some(*first)
    }
}

/// A caller of the relay (`[callers.NAME]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its name: what budgets (`scope.keys`) and routes (`attr = "caller"`) refer to.
    pub name: String,
    /// SHA-256 of its key.
    pub key_sha256: [u8; 32],
}

impl std::fmt::Debug for Caller {
    /// The name only: a hash of a weak key is still worth keeping out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Which calls a budget covers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BudgetScope {
    /// Routes (empty: any).
    pub routes: Vec<RouteId>,
    /// Models (empty: any).
    pub models: Vec<ModelId>,
    /// Upstreams (empty: any).
    pub upstreams: Vec<UpstreamId>,
    /// Caller keys (empty: any).
    pub keys: Vec<String>,
}

/// What happens past a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    /// Refuse.
    Reject,
    /// Use another route.
    Reroute(RouteId),
}

/// A resolved budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Its name.
    pub name: String,
    /// USD per window.
    pub limit_usd: f64,
    /// The window.
    pub window: Duration,
    /// What it covers.
    pub scope: BudgetScope,
    /// What happens past it.
    pub on_exceed: OnExceed,
    /// Whether spend is this process's or shared through Redis.
    pub state: StateScope,
}

impl Budget {
    /// Whether a call through this route to this model (by this caller) counts.
    pub fn covers(
        &self,
        route: RouteId,
        model: ModelId,
        upstream: UpstreamId,
        caller: Option<&str>,
    ) -> bool {
        let s = &self.scope;
        (s.routes.is_empty() || s.routes.contains(&route))
            && (s.models.is_empty() || s.models.contains(&model))
            && (s.upstreams.is_empty() || s.upstreams.contains(&upstream))
            && (s.keys.is_empty() || caller.is_some_and(|c| s.keys.iter().any(|k| k == c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `budgets_for` visits, in the same order, exactly the budgets of the route that cover
    /// a call by that caller (with a full scan as the reference).
    #[test]
    fn budgets_for_a_caller_are_the_covering_ones_in_order() {
        let toml = r#"
            [upstreams.up]
            base_url = "http://127.0.0.1:1/v1"
            [models.m]
            upstream = "up"
            price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
            [models.n]
            upstream = "up"
            price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
            [[routes]]
            name = "a"
            when = { attr = "task", eq = "x" }
            targets = ["m", "n"]
            [[routes]]
            name = "b"
            targets = ["m"]
            [budgets.all]
            limit_usd = 1.0
            window = "1d"
            [budgets.c1_only]
            limit_usd = 1.0
            window = "1d"
            scope = { keys = ["c1"] }
            [budgets.c1_c2_twice]
            limit_usd = 1.0
            window = "1d"
            scope = { keys = ["c2", "c1", "c2"], routes = ["a", "a"] }
            [budgets.route_b_model_m]
            limit_usd = 1.0
            window = "1d"
            scope = { routes = ["b"], models = ["m"] }
            [budgets.z_c2]
            limit_usd = 1.0
            window = "1d"
            scope = { keys = ["c2"], models = ["n"] }
        "#;
        let opts =
            crate::policy::LoadOptions::from_text("p.toml", toml)
                .with_env(Vec::<(String, String)>::new());
        let plan = Plan::load(&opts).expect("compiles").plan;
        let mut visited_fewer = false;
        for (ri, r) in plan.routes.iter().enumerate() {
            let route = RouteId(ri as u32);
            for caller in [None, Some("c1"), Some("c2"), Some("c3")] {
                for t in &r.targets {
                    let up = plan.model(t.model).upstream;
                    let covers =
                        |b: &BudgetId| plan.budgets[b.index()].covers(route, t.model, up, caller);
                    let scan: Vec<BudgetId> = r.budgets.iter().copied().filter(covers).collect();
                    let visited: Vec<BudgetId> = r.budgets_for(caller).collect();
                    let indexed: Vec<BudgetId> = visited.iter().copied().filter(covers).collect();
                    assert_eq!(indexed, scan, "route {} caller {caller:?}", r.name);
                    assert!(visited.windows(2).all(|w| w[0] < w[1]), "{visited:?}");
                    visited_fewer |= visited.len() < r.budgets.len();
                }
            }
        }
        assert!(visited_fewer, "some call skips another caller's budget");
        let b = plan.route_by_name("b").expect("route b");
        let names: Vec<&str> = (plan.route(b).budgets_for(Some("c2")))
            .map(|id| plan.budgets[id.index()].name.as_str())
            .collect();
        assert_eq!(names, ["all", "route_b_model_m", "z_c2"]);
    }
}
