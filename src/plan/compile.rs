//! The compiler: resolves every name, applies defaults and checks every semantic rule of a
//! loaded policy, collecting all diagnostics in one pass.
//!
//! # Environment variables named by `api_key`
//! At `tollgate check` and compile time, a variable that is **unset** is a warning (CI and
//! laptops rarely hold production keys); one that is set but does not start with an allowed
//! prefix is an error (its value is never shown). At start-up (`tollgate serve`, building
//! an HTTP client) an unset or empty key is an error: nothing is sent without it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::bounds::route_bounds;
use super::*;
use crate::diagnostic::{did_you_mean, one_of, Diagnostic, Diagnostics};
use crate::exec::backoff::{BackoffKind, Jitter};
use crate::exec::breaker::{BreakerConfig, RateRule, SlowRule};
use crate::policy::spans::{env_looks_like_key, is_env_name, KeyPath};
use crate::policy::{self, ApiKey, Condition, Loaded, Scalar};

/// A successful compilation: the plan and any warnings.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The plan.
    pub plan: Plan,
    /// Warnings (no errors).
    pub warnings: Diagnostics,
}

/// Default `retry_on`.
pub const DEFAULT_RETRY_ON: [&str; 4] = ["connect", "timeout", "429", "5xx"];
/// Default `failover_on`: besides the failures of an upstream's availability, a request
/// over one model's context window moves on (a later target may have a bigger one).
pub const DEFAULT_FAILOVER_ON: [&str; 7] = [
    "connect",
    "timeout",
    "429",
    "5xx",
    "breaker_open",
    "limited",
    "context_length",
];
/// The keywords a class list may hold (besides statuses, ranges and error codes).
const CLASS_KEYWORDS: [&str; 5] = [
    "connect",
    "timeout",
    "breaker_open",
    "limited",
    "context_length",
];
/// Default breaker `trip_on`.
pub const DEFAULT_TRIP_ON: [&str; 3] = ["connect", "timeout", "5xx"];

/// Compiles a loaded policy. Returns the plan with its warnings, or every diagnostic
/// (loading and compiling) when there is an error.
pub fn compile(mut loaded: Loaded) -> Result<Compiled, Diagnostics> {
    let items = std::mem::take(&mut loaded.diagnostics);
    if loaded.io_failed() {
        // A missing or unreadable file: what is left is not the policy the user meant, so
        // checking its semantics would only add noise.
        return Err(Diagnostics {
            items,
            sources: std::sync::Arc::new(loaded.sources),
        });
    }
    let mut c = Compiler {
        l: &loaded,
        diags: items,
        names: Names::default(),
        index: HashMap::new(),
        caller_names: Vec::new(),
        unpriced: Vec::new(),
    };
    let plan = c.run();
    let items = c.diags;
    let mut diags = Diagnostics {
        items,
        sources: std::sync::Arc::new(loaded.sources),
    };
    diags.sort();
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(Compiled {
            plan,
            warnings: diags,
        })
    }
}

/// A route's whole-request deadline. Each target's `timeouts.total` is already resolved
/// field by field (route → its upstream → defaults); the route takes the longest of them,
/// so with its own `total` that one, and with none its upstreams' (a failover to an
/// upstream with a longer `total` is not cut short by a shorter one's). A route with no
/// resolved target (already an error) takes the defaults'.
fn route_total(targets: &[RouteTarget], default_total: Duration) -> Duration {
    targets
        .iter()
        .map(|t| t.timeouts.total)
        .max()
        .unwrap_or(default_total)
}

/// A path through the reroute graph: (route reached, budget that rerouted there).
type Trail = Vec<(usize, usize)>;

/// Annotating a diagnostic already pushed.
trait Annotate {
    fn label(self, s: impl Into<String>) -> Self;
    fn hint(self, s: impl Into<String>) -> Self;
}

impl Annotate for &mut Diagnostic {
    fn label(self, s: impl Into<String>) -> Self {
        self.label = Some(s.into());
        self
    }
    fn hint(self, s: impl Into<String>) -> Self {
        self.help = Some(s.into());
        self
    }
}

struct Compiler<'a> {
    l: &'a Loaded,
    diags: Vec<Diagnostic>,
    names: Names,
    /// Each section's names → index of the first entry of that name, so resolving a
    /// reference costs one lookup (a scan of the names made a policy of N callers, each
    /// with its own budget, compile in O(N²)).
    index: HashMap<&'static str, HashMap<String, u32>>,
    /// `[callers]` names, in order (what an unknown `scope.keys` entry is offered).
    caller_names: Vec<String>,
    /// Models without a price, by index.
    unpriced: Vec<u32>,
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// A number for a message: plain, or in scientific notation when plain would be very long
/// (`5e-324`, not 324 digits).
fn num(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e15).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

impl<'a> Compiler<'a> {
    /// The policy, borrowed for the compiler's whole life (not from `self`), so checks can
    /// walk it while they push diagnostics.
    fn p(&self) -> &'a policy::Policy {
        &self.l.policy
    }

    fn error(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        at: &KeyPath,
    ) -> &mut Diagnostic {
        let d = Diagnostic::error(code, message, self.l.locate(at));
        self.diags.push(d);
        self.diags.last_mut().expect("just pushed")
    }

    fn warning(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        at: &KeyPath,
    ) -> &mut Diagnostic {
        let d = Diagnostic::warning(code, message, self.l.locate(at));
        self.diags.push(d);
        self.diags.last_mut().expect("just pushed")
    }

    /// Resolves a reference to a named entry in a section, reporting an unknown name with
    /// the names that exist and the nearest one.
    fn resolve(
        &mut self,
        section: &'static str,
        candidates: &[String],
        name: &str,
        at: &KeyPath,
    ) -> Option<u32> {
        if let Some(&i) = self.index.get(section).and_then(|m| m.get(name)) {
            return Some(i);
        }
        if self.l.is_partial() {
            // A file that failed to parse may define it.
            return None;
        }
        if section == "routes" {
            // Routes that failed to parse are not in the list: do not also call them unknown.
            if (0..self.p().routes.len() + 64)
                .any(|i| self.l.is_broken(&KeyPath::from(["routes"]).index(i)))
            {
                return None;
            }
        } else if self.l.is_broken(&KeyPath::from([section, name])) {
            return None;
        }
        let what = section.trim_end_matches('s');
        let help = did_you_mean(name, candidates.iter().map(String::as_str));
        self.error("unknown-reference", format!("unknown {what} `{name}`"), at)
            .label(format!(
                "expected one of {}",
                one_of(candidates.iter().map(String::as_str))
            ))
            .help = help;
        None
    }

    fn run(&mut self) -> Plan {
        if let Some(v) = self.p().version {
            if v != 1 {
                self.error(
                    "unsupported-version",
                    format!("policy version {v} is not supported"),
                    &KeyPath::from(["version"]),
                )
                .label("expected `1`");
            }
        }
        let p = self.p();
        let upstream_names: Vec<String> = p.upstreams.keys().cloned().collect();
        let model_names: Vec<String> = p.models.keys().cloned().collect();
        let retry_names: Vec<String> = p.retry.keys().cloned().collect();
        let breaker_names: Vec<String> = p.breakers.keys().cloned().collect();
        let budget_names: Vec<String> = p.budgets.keys().cloned().collect();
        let route_names = self.route_names();
        self.caller_names = p.callers.keys().cloned().collect();
        for (section, names) in [
            ("upstreams", &upstream_names),
            ("models", &model_names),
            ("routes", &route_names),
            ("retry", &retry_names),
            ("breakers", &breaker_names),
            ("budgets", &budget_names),
            ("callers", &self.caller_names),
        ] {
            let mut m = HashMap::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                m.entry(n.clone()).or_insert(i as u32);
            }
            self.index.insert(section, m);
        }
        for (map, names) in [
            (&mut self.names.upstreams, &upstream_names),
            (&mut self.names.models, &model_names),
            (&mut self.names.routes, &route_names),
            (&mut self.names.budgets, &budget_names),
        ] {
            for (i, n) in names.iter().enumerate() {
                map.entry(n.clone()).or_insert(i as u32);
            }
        }

        let defaults_path = KeyPath::from(["defaults"]);
        let default_timeouts = self.timeouts(
            DEFAULT_TIMEOUTS,
            p.defaults.timeouts.as_ref(),
            &defaults_path.key("timeouts"),
        );
        let breakers: Vec<BreakerPolicy> =
            p.breakers.iter().map(|(n, b)| self.breaker(n, b)).collect();
        let mut retries: Vec<RetryPolicy> = p.retry.iter().map(|(n, r)| self.retry(n, r)).collect();
        retries.push(RetryPolicy {
            name: "<none>".into(),
            max_attempts: 1,
            backoff: DEFAULT_BACKOFF,
            retry_on: ClassSet::default(),
            retry_after_honor: true,
            retry_after_max: Duration::from_secs(60),
            budget: None,
            overrides: Vec::new(),
        });
        let builtin_retry = RetryId(retries.len() as u32 - 1);
        let default_retry = match &p.defaults.retry {
            Some(n) => self
                .resolve("retry", &retry_names, n, &defaults_path.key("retry"))
                .map(RetryId)
                .unwrap_or(builtin_retry),
            None => builtin_retry,
        };
        let default_breaker = p.defaults.breaker.as_ref().and_then(|n| {
            self.resolve("breakers", &breaker_names, n, &defaults_path.key("breaker"))
                .map(BreakerId)
        });
        let baseline_model = p.defaults.baseline_model.as_ref().and_then(|n| {
            self.resolve(
                "models",
                &model_names,
                n,
                &defaults_path.key("baseline_model"),
            )
            .map(ModelId)
        });

        let upstreams: Vec<Upstream> = p
            .upstreams
            .iter()
            .map(|(n, u)| self.upstream(n, u, &breaker_names, default_breaker, default_timeouts))
            .collect();
        let models: Vec<Model> = p
            .models
            .iter()
            .map(|(n, m)| self.model(n, m, &upstream_names, &breaker_names))
            .collect();
        if let Some(b) = baseline_model {
            if models[b.index()].price.is_none() {
                self.error(
                    "missing-price",
                    format!("baseline model `{}` has no price", models[b.index()].name),
                    &defaults_path.key("baseline_model"),
                )
                .hint("savings are computed from the baseline's price: add `price` to the model");
            }
        }
        let mut routes = Vec::new();
        for (i, r) in p.routes.iter().enumerate() {
            let path = self.l.route_path(i);
            let route = self.route(
                r,
                &path,
                &model_names,
                &retry_names,
                &breaker_names,
                default_retry,
                &models,
                &upstreams,
                default_timeouts.total,
            );
            routes.push(route);
        }
        self.reachability();
        let callers = self.callers();
        self.unpriced = (models.iter().enumerate())
            .filter(|(_, m)| m.price.is_none())
            .map(|(i, _)| i as u32)
            .collect();
        let budgets: Vec<Budget> = p
            .budgets
            .iter()
            .map(|(n, b)| self.budget(n, b, &route_names, &model_names, &upstream_names, &models))
            .collect();
        self.reroute_cycles(&budgets, routes.len());
        // Each route's budgets in id order: those scoped to no route go to every route,
        // the others only to the routes they name (no scan of every route per budget).
        for (j, b) in budgets.iter().enumerate() {
            let id = BudgetId(j as u32);
            if b.scope.routes.is_empty() {
                routes.iter_mut().for_each(|r| r.budgets.push(id));
            }
            for r in &b.scope.routes {
                let list = &mut routes[r.index()].budgets;
                // A route named twice in one scope lists the budget once.
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
        }
        for r in &mut routes {
            r.budget_index = BudgetIndex::new(&r.budgets, &budgets);
        }

        let redis = self.redis();
        self.shared_needs_redis(redis.is_some());

        let data = PlanData {
            model_names: super::model_names::ModelNames::new(&routes, &models),
            redis,
            callers,
            upstreams,
            models,
            routes,
            retries,
            breakers,
            budgets,
            baseline_model,
            names: std::mem::take(&mut self.names),
        };
        let plan = Plan(std::sync::Arc::new(data));
        self.deadline_warnings(&plan);
        plan
    }

    /// Static bounds: warns where a route's own retry schedule cannot fit its deadline. The
    /// figures are [`route_bounds`]'s, the same `tollgate explain` prints.
    fn deadline_warnings(&mut self, plan: &Plan) {
        for (i, r) in plan.routes.iter().enumerate() {
            // A model whose upstream did not resolve (already an error) holds a placeholder
            // id, which may not exist when no upstream parsed: no bounds for its routes.
            let resolved = r
                .targets
                .iter()
                .all(|t| plan.model(t.model).upstream.index() < plan.upstreams.len());
            if !resolved {
                continue;
            }
            let b = route_bounds(plan, RouteId(i as u32), TokenCounts::default());
            if b.schedule <= r.total_timeout {
                continue;
            }
            let d = |x| crate::policy::Duration::new(x);
            let mut message = format!(
                "route `{}`: its worst-case retry schedule ({} attempt{} timing out, backoff at its ceiling) takes {} but its total timeout is {}",
                r.name,
                b.attempts,
                if b.attempts == 1 { "" } else { "s" },
                d(b.schedule),
                d(r.total_timeout)
            );
            let retry = plan.retry(r.retry);
            let mut waits = Vec::new();
            if !b.retry_after.is_zero() {
                waits.push(format!(
                    "Retry-After waits of up to {}",
                    d(retry.retry_after_max)
                ));
            }
            if !b.queueing.is_zero() {
                waits.push("limiter queueing".to_string());
            }
            if !waits.is_empty() {
                message += &format!(" ({} with {})", d(b.unbounded_latency), waits.join(" and "));
            }
            let path = self.l.route_path(i);
            self.warning("schedule-exceeds-deadline", message, &path.key("name"))
                .hint("the deadline will cut later attempts short; lower max_attempts or per_try, or raise the total timeout");
        }
    }

    /// The executor's own range checks of a request rate (its emission interval and burst
    /// must span less than ~146 years), so that what `check` accepts the executor builds.
    fn rate_range(&mut self, r: Rate, at: &KeyPath) {
        use crate::exec::limit::{RateConfig, RateLimiter};
        let cfg = RateConfig {
            rate_per_sec: r.per_second,
            burst: r.burst,
        };
        if RateLimiter::new(cfg).is_err() {
            self.error(
                "invalid-value",
                format!(
                    "a rate of {}/s with a burst of {} is out of range: the rate limiter needs a burst to span less than ~146 years",
                    num(r.per_second),
                    r.burst
                ),
                at,
            )
            .label("expected a higher rate or a smaller burst");
        }
    }

    /// The executor's own range checks of a token limit (a minute's tokens, its burst, must
    /// span less than ~146 years at one token per nanosecond or slower).
    fn tokens_range(&mut self, tpm: f64, at: &KeyPath) {
        use crate::exec::limit::{TokenConfig, TokenLimiter};
        // As the runtime builds it (`exec::state`): whole tokens, a minute's worth of burst.
        let whole = tpm.ceil().max(1.0) as u64;
        let cfg = TokenConfig {
            tokens_per_minute: whole,
            burst: whole,
        };
        if TokenLimiter::new(cfg).is_err() {
            self.error(
                "invalid-value",
                format!(
                    "tokens_per_minute {} is above what the token limiter can count",
                    num(tpm)
                ),
                at,
            )
            .label("expected at most ~4.6e18");
        }
    }

    /// The executor's own range checks of a retry budget, for the values the checks in
    /// [`retry`](Self::retry) do not name (e.g. a ratio above 1000).
    fn retry_budget_range(&mut self, b: RetryBudget, at: &KeyPath) {
        use crate::exec::retry_budget::{
            RetryBudget as Runtime, RetryBudgetConfig, RetryBudgetError,
        };
        let valid = b.ratio.is_finite()
            && b.ratio >= 0.0
            && b.min_per_second.is_finite()
            && b.min_per_second >= 0.0
            && !b.ttl.is_zero()
            && b.ttl <= Duration::from_secs(60);
        if !valid {
            return; // already reported, key by key
        }
        let cfg = RetryBudgetConfig {
            ratio: b.ratio,
            min_per_second: b.min_per_second,
            ttl: b.ttl,
        };
        match Runtime::new(cfg) {
            Ok(_) => {}
            Err(RetryBudgetError::Ratio(r)) => {
                self.error(
                    "invalid-value",
                    format!("retry budget ratio {} is above 1000", num(r)),
                    &at.key("ratio"),
                )
                .label("expected retries per request, 0 to 1000");
            }
            Err(e) => {
                self.error("invalid-value", format!("retry budget: {e}"), at);
            }
        }
    }

    /// A price above the executor's [`MAX_PRICE_PER_MTOK`](crate::exec::price::MAX_PRICE_PER_MTOK).
    fn price_cap(&mut self, key: &str, v: f64, at: &KeyPath) {
        use crate::exec::price::MAX_PRICE_PER_MTOK;
        if v > MAX_PRICE_PER_MTOK {
            self.error(
                "price-above-limit",
                format!("{key} = {} is above the most this executor supports ({MAX_PRICE_PER_MTOK} USD per million tokens)", num(v)),
                at,
            )
            .label(format!("expected 0 to {MAX_PRICE_PER_MTOK}"));
        }
    }

    /// `max_attempts` above [`MAX_ATTEMPTS`]: the static bounds and the executor's counts
    /// are sized for that many attempts per target.
    fn attempts_cap(&mut self, n: u32, at: &KeyPath) {
        if n > MAX_ATTEMPTS {
            self.error(
                "attempts-above-limit",
                format!("`max_attempts` = {n} is above the most this executor supports ({MAX_ATTEMPTS})"),
                at,
            )
            .label(format!("expected 1 to {MAX_ATTEMPTS}"))
            .hint("a retry schedule this long outlasts any deadline; bound retries with `timeouts.total` and a retry budget instead");
        }
    }

    /// A hedge goes to the targets after the first attempt's, one per extra attempt: on a
    /// one-target route it never runs, and `max_extra` beyond the other targets is unused.
    fn hedge_reach(&mut self, route: &str, h: Hedge, targets: usize, at: &KeyPath) {
        let others = u32::try_from(targets.saturating_sub(1)).unwrap_or(u32::MAX);
        if targets == 1 {
            self.warning(
                "hedge-never-runs",
                format!("route `{route}` hedges, but has one target: a hedge is only sent to another target, so none is ever sent"),
                at,
            )
            .hint("add a second target, or remove `hedge`");
        } else if targets > 1 && h.max_extra > others {
            self.warning(
                "hedge-capped",
                format!(
                    "route `{route}`: hedge max_extra is {} but the route has {others} other target{}: at most {others} hedge{} per request",
                    h.max_extra,
                    if others == 1 { "" } else { "s" },
                    if others == 1 { "" } else { "s" },
                ),
                &at.key("max_extra"),
            )
            .hint(format!("lower max_extra to {others}, or add targets"));
        }
    }

    fn route_names(&mut self) -> Vec<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut names = Vec::new();
        let routes = &self.p().routes;
        for (i, r) in routes.iter().enumerate() {
            let path = self.l.route_path(i).key("name");
            if r.name.trim().is_empty() {
                self.error("invalid-value", "a route name must not be empty", &path);
            }
            if let Some(first) = seen.get(&r.name) {
                let first_origin = self.l.locate(&self.l.route_path(*first).key("name"));
                self.error(
                    "duplicate-name",
                    format!("route `{}` is defined twice", r.name),
                    &path,
                )
                .label("defined again here")
                .related
                .push((first_origin, "first defined here".into()));
            } else {
                seen.insert(r.name.clone(), i);
            }
            names.push(r.name.clone());
        }
        names
    }

    fn timeouts(
        &mut self,
        base: Timeouts,
        t: Option<&policy::Timeouts>,
        path: &KeyPath,
    ) -> Timeouts {
        let Some(t) = t else { return base };
        let mut out = base;
        for (name, v, slot) in [
            ("connect", t.connect, &mut out.connect),
            ("per_try", t.per_try, &mut out.per_try),
            ("total", t.total, &mut out.total),
        ] {
            if let Some(v) = v {
                if v.get().is_zero() {
                    self.diags.push(
                        Diagnostic::error(
                            "invalid-value",
                            format!("timeout `{name}` must be above zero"),
                            self.l.locate(&path.key(name)),
                        )
                        .with_label("expected a positive duration"),
                    );
                }
                *slot = v.get();
            }
        }
        if (t.per_try.is_some() || t.total.is_some()) && out.per_try > out.total {
            self.warning(
                "per-try-exceeds-total",
                format!(
                    "per_try ({}) is longer than total ({})",
                    policy::Duration::new(out.per_try),
                    policy::Duration::new(out.total)
                ),
                &path.key(if t.per_try.is_some() {
                    "per_try"
                } else {
                    "total"
                }),
            )
            .hint("an attempt can never use more than the total timeout");
        }
        out
    }

    fn classes(
        &mut self,
        entries: Option<&Vec<String>>,
        default: &[&str],
        path: &KeyPath,
    ) -> ClassSet {
        let Some(entries) = entries else {
            return ClassSet::builtin(default);
        };
        let mut set = ClassSet::default();
        for (i, e) in entries.iter().enumerate() {
            match e.parse::<ClassMatcher>() {
                Ok(m) => {
                    if let ClassMatcher::Code(code) = &m {
                        self.possible_class_typo(code, &path.index(i));
                    }
                    set.0.push(m);
                }
                Err(err) => {
                    self.error("invalid-class", format!("{err}"), &path.index(i))
                        .label("expected `connect`, `timeout`, `breaker_open`, `limited`, `context_length`, a status (`429`), a range (`5xx`) or an error code")
                        .help = did_you_mean(e, CLASS_KEYWORDS);
                }
            }
        }
        set
    }

    /// An error code one typo away from a keyword (`timout`, `breaker-open`) is almost
    /// certainly the keyword misspelt: as a code it would never match anything.
    fn possible_class_typo(&mut self, code: &str, at: &KeyPath) {
        if code.eq_ignore_ascii_case(CONTEXT_LENGTH_CODE) {
            // The code `context_length` stands for: not a misspelt keyword.
            return;
        }
        if let Some(help) = did_you_mean(code, CLASS_KEYWORDS) {
            self.warning(
                "possible-typo",
                format!("`{code}` is taken as an error code from response bodies, not a keyword"),
                at,
            )
            .label("expected `connect`, `timeout`, `breaker_open`, `limited` or `context_length` for a keyword")
            .help = Some(help);
        }
    }

    fn backoff(&mut self, b: &policy::Backoff, path: &KeyPath) -> Backoff {
        let jitter = b.jitter.unwrap_or(policy::Jitter::Full);
        let jitter_ratio = b.jitter_ratio.unwrap_or(DEFAULT_JITTER_RATIO);
        let out = Backoff {
            kind: match b.kind {
                policy::BackoffKind::Exponential => BackoffKind::Exponential,
                policy::BackoffKind::Constant => BackoffKind::Constant,
                policy::BackoffKind::Decorrelated => BackoffKind::Decorrelated,
            },
            base: b.base.map_or(DEFAULT_BACKOFF.base, |d| d.get()),
            factor: b.factor.unwrap_or(DEFAULT_BACKOFF.factor),
            max: b.max.map_or(DEFAULT_BACKOFF.max, |d| d.get()),
            jitter: match jitter {
                policy::Jitter::None => Jitter::None,
                policy::Jitter::Full => Jitter::Full,
                policy::Jitter::Equal => Jitter::Equal,
                policy::Jitter::Proportional => Jitter::Proportional(jitter_ratio),
            },
        };
        if out.base > out.max {
            let at = if b.base.is_some() {
                path.key("base")
            } else {
                path.key("max")
            };
            self.error(
                "backoff-base-above-max",
                format!(
                    "backoff base {} is above its cap {}",
                    policy::Duration::new(out.base),
                    policy::Duration::new(out.max)
                ),
                &at,
            )
            .label("expected base <= max");
        }
        if !(out.factor.is_finite() && out.factor >= 1.0) {
            self.error(
                "invalid-value",
                format!("backoff factor {} is below 1", num(out.factor)),
                &path.key("factor"),
            )
            .label("expected a number >= 1 (1 = constant)");
        }
        if !(jitter_ratio.is_finite() && jitter_ratio > 0.0 && jitter_ratio <= 1.0) {
            self.error(
                "threshold-out-of-range",
                format!("jitter_ratio {} is outside (0, 1]", num(jitter_ratio)),
                &path.key("jitter_ratio"),
            )
            .label("expected a number in (0, 1]");
        }
        if b.jitter_ratio.is_some() && jitter != policy::Jitter::Proportional {
            self.warning(
                "ignored-key",
                "jitter_ratio only applies to `jitter = \"proportional\"`",
                &path.key("jitter_ratio"),
            );
        }
        if b.factor.is_some() && b.kind != policy::BackoffKind::Exponential {
            self.warning(
                "ignored-key",
                "factor only applies to `kind = \"exponential\"`",
                &path.key("factor"),
            );
        }
        out
    }

    fn retry(&mut self, name: &str, r: &policy::RetryPolicy) -> RetryPolicy {
        let path = KeyPath::from(["retry", name]);
        let max_attempts = r.max_attempts.unwrap_or(3);
        if max_attempts == 0 {
            self.error(
                "zero-attempts",
                "max_attempts is 0: no call would ever be made",
                &path.key("max_attempts"),
            )
            .label("expected at least 1 (1 = no retry)");
        }
        self.attempts_cap(max_attempts, &path.key("max_attempts"));
        let backoff = match &r.backoff {
            Some(b) => self.backoff(b, &path.key("backoff")),
            None => DEFAULT_BACKOFF,
        };
        let retry_on = self.classes(
            r.retry_on.as_ref(),
            &DEFAULT_RETRY_ON,
            &path.key("retry_on"),
        );
        let (honor, ra_max) = match r.retry_after {
            Some(ra) => (
                ra.honor,
                ra.max.map_or(Duration::from_secs(60), |d| d.get()),
            ),
            None => (true, Duration::from_secs(60)),
        };
        let budget = r.budget.map(|b| {
            let bp = path.key("budget");
            if !(b.ratio.is_finite() && b.ratio >= 0.0) {
                self.error(
                    "invalid-value",
                    format!("retry budget ratio {} is negative", num(b.ratio)),
                    &bp.key("ratio"),
                )
                .label("expected a number >= 0");
            }
            let min = b.min_per_second.unwrap_or(10.0);
            if !(min.is_finite() && min >= 0.0) {
                self.error(
                    "invalid-value",
                    format!("min_per_second {} is negative", num(min)),
                    &bp.key("min_per_second"),
                )
                .label("expected a number >= 0");
            }
            let ttl = b.ttl.map_or(Duration::from_secs(10), |d| d.get());
            if ttl.is_zero() || ttl > Duration::from_secs(60) {
                self.error(
                    "invalid-value",
                    "retry budget ttl must be between 1ms and 60s",
                    &bp.key("ttl"),
                )
                .label("expected a duration in (0, 60s]");
            }
            let budget = RetryBudget {
                ratio: b.ratio,
                min_per_second: min,
                ttl,
            };
            self.retry_budget_range(budget, &bp);
            budget
        });
        let mut overrides = Vec::new();
        for (key, o) in &r.on {
            let op = path.key("on").key(key.clone());
            let class = match key.parse::<ClassMatcher>() {
                Ok(c) => c,
                Err(e) => {
                    self.diags.push(
                        Diagnostic::error("invalid-class", format!("{e}"), self.l.locate_key(&op))
                            .with_label("expected a failure class as the key"),
                    );
                    continue;
                }
            };
            let covered = retry_on.0.iter().any(|m| {
                m == &class
                    || matches!((m, &class), (ClassMatcher::StatusRange(h), ClassMatcher::Status(s)) if s / 100 == *h)
            });
            if !covered {
                self.diags.push(
                    Diagnostic::warning(
                        "override-never-applies",
                        format!("class `{class}` has an override but is not in retry_on"),
                        self.l.locate_key(&op),
                    )
                    .with_help(format!(
                        "add \"{class}\" to retry_on, or the override is never used"
                    )),
                );
            }
            if o.max_attempts == Some(0) {
                self.error(
                    "zero-attempts",
                    "max_attempts is 0",
                    &op.key("max_attempts"),
                )
                .label("expected at least 1");
            }
            if let Some(n) = o.max_attempts {
                self.attempts_cap(n, &op.key("max_attempts"));
            }
            let backoff = o
                .backoff
                .as_ref()
                .map(|b| self.backoff(b, &op.key("backoff")));
            overrides.push(RetryOverride {
                class,
                max_attempts: o.max_attempts,
                backoff,
            });
        }
        overrides.sort_by_key(|o| std::cmp::Reverse(o.class.specificity()));
        RetryPolicy {
            name: name.to_string(),
            max_attempts: max_attempts.max(1),
            backoff,
            retry_on,
            retry_after_honor: honor,
            retry_after_max: ra_max,
            budget,
            overrides,
        }
    }

    fn fraction(&mut self, x: f64, what: &str, path: &KeyPath) {
        if !(x.is_finite() && x > 0.0 && x <= 1.0) {
            self.error(
                "threshold-out-of-range",
                format!("{what} {} is outside (0, 1]", num(x)),
                path,
            )
            .label("expected a number in (0, 1]");
        }
    }

    fn breaker(&mut self, name: &str, b: &policy::Breaker) -> BreakerPolicy {
        let path = KeyPath::from(["breakers", name]);
        let errors_before = self.diags.len();
        if b.consecutive_failures == Some(0) {
            self.error(
                "invalid-value",
                "consecutive_failures is 0: the breaker would open on nothing",
                &path.key("consecutive_failures"),
            )
            .label("expected at least 1");
        }
        let failure_rate = b.failure_rate.map(|f| {
            let fp = path.key("failure_rate");
            self.fraction(f.threshold, "failure_rate threshold", &fp.key("threshold"));
            let min_calls = f.min_calls.unwrap_or(10);
            if min_calls == 0 {
                self.error("invalid-value", "min_calls is 0", &fp.key("min_calls"))
                    .label("expected at least 1");
            }
            let window = f.window.map_or(Duration::from_secs(30), |d| d.get());
            if window.is_zero() {
                self.error(
                    "invalid-value",
                    "the failure-rate window is zero",
                    &fp.key("window"),
                )
                .label("expected a positive duration");
            }
            RateRule {
                threshold: f.threshold,
                min_calls,
                window,
            }
        });
        let slow_call = b.slow_call.map(|s| {
            let sp = path.key("slow_call");
            self.fraction(
                s.rate_threshold,
                "slow_call rate_threshold",
                &sp.key("rate_threshold"),
            );
            if s.over.get().is_zero() {
                self.error(
                    "invalid-value",
                    "slow_call `over` is zero: every call would be slow",
                    &sp.key("over"),
                )
                .label("expected a positive duration");
            }
            let min_calls = s
                .min_calls
                .or(failure_rate.map(|f| f.min_calls))
                .unwrap_or(10);
            if min_calls == 0 {
                self.error("invalid-value", "min_calls is 0", &sp.key("min_calls"))
                    .label("expected at least 1");
            }
            let window = s
                .window
                .map(|d| d.get())
                .or(failure_rate.map(|f| f.window))
                .unwrap_or(Duration::from_secs(30));
            SlowRule {
                over: s.over.get(),
                rate_threshold: s.rate_threshold,
                min_calls,
                window,
            }
        });
        let open_for = b.open_for.map_or(Duration::from_secs(30), |d| d.get());
        if open_for.is_zero() {
            self.error(
                "invalid-value",
                "open_for is zero: the breaker could never stay open",
                &path.key("open_for"),
            )
            .label("expected a positive duration");
        }
        let (probes, successes) = match b.half_open {
            Some(h) => (h.probes.unwrap_or(1), h.successes_to_close.unwrap_or(1)),
            None => (1, 1),
        };
        let hp = path.key("half_open");
        if probes == 0 {
            self.error(
                "zero-probes",
                "half_open probes is 0: an open breaker could never close",
                &hp.key("probes"),
            )
            .label("expected at least 1");
        }
        if successes == 0 {
            self.error(
                "invalid-value",
                "successes_to_close is 0",
                &hp.key("successes_to_close"),
            )
            .label("expected at least 1");
        } else if successes > probes && probes > 0 {
            self.error("invalid-value", format!("successes_to_close ({successes}) is more than probes ({probes}): the breaker could never close"), &hp.key("successes_to_close"))
                .label(format!("expected at most {probes}"));
        }
        if b.consecutive_failures.is_none() && failure_rate.is_none() && slow_call.is_none() {
            self.warning(
                "breaker-never-opens",
                format!("breaker `{name}` has no rule that opens it"),
                &path,
            )
            .hint("set consecutive_failures, failure_rate or slow_call");
        }
        let trip_on = self.classes(b.trip_on.as_ref(), &DEFAULT_TRIP_ON, &path.key("trip_on"));
        let config = BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            failure_rate,
            slow_call,
            open_for,
            probes: probes.max(1),
            successes_to_close: successes.clamp(1, probes.max(1)),
        };
        // The executor's own range checks (e.g. caps on probes and min_calls) catch what
        // the checks above do not name one by one.
        let own_errors = self.diags[errors_before..]
            .iter()
            .any(|d| d.severity == crate::diagnostic::Severity::Error);
        if let (false, Err(e)) = (own_errors, config.validate()) {
            self.error("invalid-value", format!("breaker `{name}`: {e}"), &path);
        }
        BreakerPolicy {
            name: name.to_string(),
            config,
            trip_on,
            state: b.state,
        }
    }

    fn upstream(
        &mut self,
        name: &str,
        u: &policy::Upstream,
        breakers: &[String],
        default_breaker: Option<BreakerId>,
        default_timeouts: Timeouts,
    ) -> Upstream {
        let path = KeyPath::from(["upstreams", name]);
        let url_ok = ["http://", "https://"]
            .iter()
            .any(|s| u.base_url.starts_with(s) && u.base_url.len() > s.len());
        if !url_ok {
            self.error(
                "invalid-url",
                format!("base_url `{}` is not an http(s) URL", u.base_url),
                &path.key("base_url"),
            )
            .label("expected `https://host[:port]/path`");
        }
        let api_key = match &u.api_key {
            None => None,
            Some(ApiKey::Literal(_)) => {
                self.error("literal-secret", format!("upstream `{name}` has an API key written in the policy"), &path.key("api_key"))
                    .label("a literal key (not shown)")
                    .hint("put the key in an environment variable and write `api_key = { env = \"VAR_NAME\" }`; treat this key as leaked and rotate it");
                None
            }
            Some(ApiKey::Env(k)) => {
                let kp = path.key("api_key").key("env");
                if env_looks_like_key(&k.env, &k.prefixes) {
                    let why = if is_env_name(&k.env) {
                        "this starts with one of the allowed key prefixes, so it is a key"
                    } else {
                        "this does not look like one"
                    };
                    self.error("literal-secret", format!("upstream `{name}`: `env` must name an environment variable, and {why}"), &kp)
                        .label("not a variable name but a key (value not shown)")
                        .hint("write the variable's name (e.g. `OPENAI_API_KEY`), not the key; if this was a key, rotate it");
                    None
                } else {
                    self.check_env_key(name, k, &kp);
                    Some(ApiKeyRef {
                        env: k.env.clone(),
                        prefixes: k.prefixes.clone(),
                    })
                }
            }
        };
        let pool = u.pool.clone().unwrap_or(policy::Pool {
            max_connections: None,
            max_idle: None,
            idle_timeout: None,
        });
        let max_connections = pool.max_connections.unwrap_or(100);
        if max_connections == 0 {
            self.error(
                "invalid-value",
                "max_connections is 0",
                &path.key("pool").key("max_connections"),
            )
            .label("expected at least 1");
        }
        let max_idle = pool.max_idle.unwrap_or(32.min(max_connections));
        let limits = self.limits(u.limits.as_ref(), &path.key("limits"));
        self.rate_limit_headers_need_rate(name, u, &limits, &path);
        let breaker = match &u.breaker {
            Some(b) => self
                .resolve("breakers", breakers, b, &path.key("breaker"))
                .map(BreakerId),
            None => default_breaker,
        };
        let timeouts = self.timeouts(default_timeouts, u.timeouts.as_ref(), &path.key("timeouts"));
        Upstream {
            name: name.to_string(),
            base_url: u.base_url.clone(),
            api_key,
            max_connections: max_connections.max(1),
            max_idle,
            idle_timeout: pool
                .idle_timeout
                .map_or(Duration::from_secs(90), |d| d.get()),
            limits,
            rate_limit_headers: u.rate_limit_headers,
            breaker,
            timeouts,
        }
    }

    /// `rate_limit_headers` tightens the upstream's local request-rate limiter to what the
    /// server says is left; without a request rate there is nothing to tighten, and a
    /// shared rate is admitted by the state backend, which the headers do not reach.
    fn rate_limit_headers_need_rate(
        &mut self,
        name: &str,
        u: &policy::Upstream,
        limits: &Limits,
        path: &KeyPath,
    ) {
        if u.rate_limit_headers && limits.rate.is_none() {
            self.warning(
                "ignored-key",
                format!("upstream `{name}`: rate_limit_headers has no effect without a request rate"),
                &path.key("rate_limit_headers"),
            )
            .hint("the headers only tighten a request-rate limiter: add `limits.requests_per_second` or `limits.requests_per_minute` (the provider's published limit), or remove `rate_limit_headers`");
        } else if u.rate_limit_headers && limits.state == StateScope::Shared {
            self.warning(
                "ignored-key",
                format!("upstream `{name}`: rate_limit_headers has no effect on a shared request rate"),
                &path.key("rate_limit_headers"),
            )
            .hint("a `state = \"shared\"` rate is admitted through [state.redis], which the headers do not tighten; the shared limit itself is the guard");
        }
    }

    /// `[state.redis]`, resolved with its defaults.
    fn redis(&mut self) -> Option<RedisSettings> {
        let r = self.p().state.as_ref()?.redis.clone()?;
        let path = KeyPath::from(["state", "redis"]);
        if !is_env_name(&r.url.env) {
            self.error(
                "invalid-value",
                "`url.env` must name an environment variable, and this is not one (value not shown)",
                &path.key("url").key("env"),
            )
            .label("expected a name like `REDIS_URL`")
            .hint("the URL may hold a password: keep it in the environment and name the variable here");
        } else if std::env::var(&r.url.env).map_or(true, |v| v.trim().is_empty()) {
            self.warning(
                "env-unset",
                format!("state.redis: environment variable {} is not set", r.url.env),
                &path.key("url").key("env"),
            )
            .hint("fine for `check`; shared state needs it at start-up");
        }
        let timeout = r.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.get());
        if timeout.is_zero() {
            self.error(
                "invalid-value",
                "the Redis timeout is zero",
                &path.key("timeout"),
            )
            .label("expected a positive duration, e.g. `50ms`");
        }
        let breaker_poll = r.breaker_poll.map_or(DEFAULT_BREAKER_POLL, |d| d.get());
        if breaker_poll.is_zero() {
            self.error(
                "invalid-value",
                "the breaker poll interval is zero",
                &path.key("breaker_poll"),
            )
            .label("expected a positive duration, e.g. `250ms`");
        }
        for (key, v) in [
            ("pool_size", r.pool_size),
            ("expected_instances", r.expected_instances),
            ("lease", r.lease),
        ] {
            if v == Some(0) {
                self.error("invalid-value", format!("{key} is 0"), &path.key(key))
                    .label("expected at least 1");
            }
        }
        Some(RedisSettings {
            url_env: r.url.env.clone(),
            key_prefix: r
                .key_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string()),
            timeout,
            pool_size: r.pool_size.unwrap_or(1).max(1),
            fail_mode: r.fail_mode,
            expected_instances: r.expected_instances.unwrap_or(1).max(1),
            lease: r.lease.unwrap_or(1).max(1),
            breaker_poll,
        })
    }

    /// `state = "shared"` needs `[state.redis]`.
    fn shared_needs_redis(&mut self, have_redis: bool) {
        if have_redis {
            return;
        }
        let p = self.p();
        let mut at: Vec<(String, KeyPath)> = Vec::new();
        for (n, u) in &p.upstreams {
            if u.limits
                .as_ref()
                .is_some_and(|l| l.state == StateScope::Shared)
            {
                at.push((
                    format!("upstream `{n}`"),
                    KeyPath::from(["upstreams", n.as_str(), "limits", "state"]),
                ));
            }
        }
        for (n, b) in &p.budgets {
            if b.state == StateScope::Shared {
                at.push((
                    format!("budget `{n}`"),
                    KeyPath::from(["budgets", n.as_str(), "state"]),
                ));
            }
        }
        for (n, b) in &p.breakers {
            if b.state == StateScope::Shared {
                at.push((
                    format!("breaker `{n}`"),
                    KeyPath::from(["breakers", n.as_str(), "state"]),
                ));
            }
        }
        for (what, path) in at {
            self.error(
                "shared-without-redis",
                format!("{what} keeps its state shared, but the policy has no `[state.redis]`"),
                &path,
            )
            .label("`shared` needs a Redis server")
            .hint("add `[state.redis]` with `url = { env = \"REDIS_URL\" }`, or write `state = \"local\"`");
        }
    }

    fn check_env_key(&mut self, upstream: &str, k: &policy::EnvKey, path: &KeyPath) {
        let raw = std::env::var(&k.env).ok();
        match policy::check_key(raw.as_deref(), &k.prefixes) {
            // A key a header cannot carry is the HTTP client's to refuse, at start-up.
            Ok(_) | Err(policy::KeyProblem::NotHeaderSafe) => {}
            Err(policy::KeyProblem::BadPrefix) => {
                self.error("api-key-prefix", format!("upstream `{upstream}`: the key in {} does not start with an allowed prefix (value not shown)", k.env), path)
                    .label(format!("expected a key starting with {}", one_of(k.prefixes.iter().map(String::as_str))));
            }
            Err(policy::KeyProblem::Unset) => {
                self.warning(
                    "env-unset",
                    format!(
                        "upstream `{upstream}`: environment variable {} is not set",
                        k.env
                    ),
                    path,
                )
                .hint("fine for `check`; `tollgate serve` refuses to start until it is set");
            }
        }
    }

    fn limits(&mut self, l: Option<&policy::Limits>, path: &KeyPath) -> Limits {
        let Some(l) = l else {
            return Limits {
                rate: None,
                tokens_per_minute: None,
                concurrency: None,
                on_limit: policy::OnLimit::Fail,
                queue_timeout: Duration::from_secs(1),
                state: StateScope::Local,
            };
        };
        for (key, v) in [
            ("requests_per_second", l.requests_per_second),
            ("requests_per_minute", l.requests_per_minute),
            ("tokens_per_minute", l.tokens_per_minute),
        ] {
            if let Some(v) = v {
                if !positive(v) {
                    self.error(
                        "non-positive-rate",
                        format!("{key} is {}", num(v)),
                        &path.key(key),
                    )
                    .label("expected a positive number");
                }
            }
        }
        if l.requests_per_second.is_some() && l.requests_per_minute.is_some() {
            self.error(
                "conflicting-keys",
                "both requests_per_second and requests_per_minute are set",
                &path.key("requests_per_minute"),
            )
            .label("give one of them");
        }
        let per_second = l
            .requests_per_second
            .or(l.requests_per_minute.map(|m| m / 60.0));
        if l.burst == Some(0) {
            self.error(
                "invalid-value",
                "burst is 0: no request could ever be admitted",
                &path.key("burst"),
            )
            .label("expected at least 1");
        }
        if l.burst.is_some() && per_second.is_none() {
            self.warning(
                "ignored-key",
                "burst has no effect without a request rate",
                &path.key("burst"),
            );
        }
        if l.concurrency == Some(0) {
            self.error(
                "invalid-value",
                "concurrency is 0: no call could ever run",
                &path.key("concurrency"),
            )
            .label("expected at least 1");
        }
        if l.queue_timeout.is_some() && l.on_limit == policy::OnLimit::Fail {
            self.warning(
                "ignored-key",
                "queue_timeout has no effect with on_limit = \"fail\"",
                &path.key("queue_timeout"),
            );
        }
        let rate = per_second.filter(|r| positive(*r)).map(|r| Rate {
            per_second: r,
            burst: l.burst.unwrap_or_else(|| (r.ceil() as u32).max(1)).max(1),
        });
        if let (Some(r), false) = (rate, l.burst == Some(0)) {
            let key = if l.requests_per_second.is_some() {
                "requests_per_second"
            } else {
                "requests_per_minute"
            };
            self.rate_range(r, &path.key(key));
        }
        if let Some(t) = l.tokens_per_minute.filter(|t| positive(*t)) {
            self.tokens_range(t, &path.key("tokens_per_minute"));
        }
        Limits {
            rate,
            tokens_per_minute: l.tokens_per_minute.filter(|t| positive(*t)),
            concurrency: l.concurrency.filter(|c| *c > 0),
            on_limit: l.on_limit,
            queue_timeout: l.queue_timeout.map_or(Duration::from_secs(1), |d| d.get()),
            state: l.state,
        }
    }

    fn model(
        &mut self,
        name: &str,
        m: &policy::Model,
        upstreams: &[String],
        breakers: &[String],
    ) -> Model {
        let path = KeyPath::from(["models", name]);
        let upstream = self
            .resolve("upstreams", upstreams, &m.upstream, &path.key("upstream"))
            .map(UpstreamId)
            .unwrap_or(UpstreamId(0));
        let price = m.price.map(|p| {
            for (k, v) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    self.error(
                        "negative-price",
                        format!("{k} is {}", num(v)),
                        &path.key("price").key(k),
                    )
                    .label("expected a number >= 0");
                } else {
                    self.price_cap(k, v, &path.key("price").key(k));
                }
            }
            Price {
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
            }
        });
        if m.context_window == Some(0) {
            self.error(
                "invalid-value",
                "context_window is 0",
                &path.key("context_window"),
            )
            .label("expected a positive number of tokens");
        }
        let breaker = m.breaker.as_ref().and_then(|b| {
            self.resolve("breakers", breakers, b, &path.key("breaker"))
                .map(BreakerId)
        });
        Model {
            name: name.to_string(),
            upstream,
            upstream_model: m.upstream_model.clone().unwrap_or_else(|| name.to_string()),
            price,
            context_window: m.context_window,
            breaker,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        r: &policy::Route,
        path: &KeyPath,
        model_names: &[String],
        retry_names: &[String],
        breaker_names: &[String],
        default_retry: RetryId,
        models: &[Model],
        upstreams: &[Upstream],
        default_total: Duration,
    ) -> Route {
        let when = r
            .when
            .as_ref()
            .and_then(|w| self.condition(w, &path.key("when")));
        if r.targets.is_empty() {
            self.error(
                "no-targets",
                format!("route `{}` has no targets", r.name),
                &path.key("targets"),
            )
            .label("expected at least one model");
        }
        let weighted = r.strategy == policy::Strategy::Weighted;
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        let route_timeouts = r.timeouts;
        for (j, t) in r.targets.iter().enumerate() {
            let tp = path.key("targets").index(j);
            let Some(mid) = self
                .resolve("models", model_names, &t.model, &tp)
                .map(ModelId)
            else {
                continue;
            };
            if !seen.insert(mid) {
                self.warning(
                    "duplicate-target",
                    format!("model `{}` is listed twice in route `{}`", t.model, r.name),
                    &tp,
                );
            }
            if let Some(w) = t.weight {
                if !positive(w) {
                    self.error(
                        "non-positive-weight",
                        format!("weight {} is not positive", num(w)),
                        &tp.key("weight"),
                    )
                    .label("expected a number > 0");
                }
                if !weighted {
                    self.warning(
                        "ignored-key",
                        format!(
                            "weights only apply to `weighted` routes; route `{}` is `{}`",
                            r.name, r.strategy
                        ),
                        &tp.key("weight"),
                    );
                }
            }
            let model = &models[mid.index()];
            if r.strategy == policy::Strategy::Cheapest && model.price.is_none() {
                self.error("missing-price", format!("route `{}` is `cheapest` but model `{}` has no price", r.name, t.model), &tp)
                    .hint(format!("add `price = {{ input_per_mtok = …, output_per_mtok = … }}` to [models.\"{}\"]", t.model));
            }
            let up = upstreams
                .get(model.upstream.index())
                .map_or(DEFAULT_TIMEOUTS, |u| u.timeouts);
            let timeouts = self.timeouts(up, route_timeouts.as_ref(), &path.key("timeouts"));
            targets.push(RouteTarget {
                model: mid,
                weight: t.weight.filter(|w| positive(*w)).unwrap_or(1.0),
                timeouts,
            });
        }
        let failover_on = self.classes(
            r.failover_on.as_ref(),
            &DEFAULT_FAILOVER_ON,
            &path.key("failover_on"),
        );
        let hedge = r.hedge.map(|h| {
            if h.after.get().is_zero() {
                self.error(
                    "invalid-value",
                    "hedge `after` is zero: every request would be sent twice at once",
                    &path.key("hedge").key("after"),
                )
                .label("expected a positive duration");
            }
            let max_extra = h.max_extra.unwrap_or(1);
            if max_extra == 0 {
                self.error(
                    "invalid-value",
                    "hedge max_extra is 0",
                    &path.key("hedge").key("max_extra"),
                )
                .label("expected at least 1 (or remove `hedge`)");
            }
            Hedge {
                after: h.after.get(),
                max_extra,
            }
        });
        if let Some(h) = hedge {
            self.hedge_reach(&r.name, h, r.targets.len(), &path.key("hedge"));
        }
        let retry = match &r.retry {
            Some(n) => self
                .resolve("retry", retry_names, n, &path.key("retry"))
                .map(RetryId)
                .unwrap_or(default_retry),
            None => default_retry,
        };
        let breaker = r.breaker.as_ref().and_then(|b| {
            self.resolve("breakers", breaker_names, b, &path.key("breaker"))
                .map(BreakerId)
        });
        let total_timeout = route_total(&targets, default_total);
        let streaming = r.streaming.map(|s| {
            for (k, v) in [("first_byte", s.first_byte), ("idle_chunk", s.idle_chunk)] {
                if v.is_some_and(|d| d.get().is_zero()) {
                    self.error(
                        "invalid-value",
                        format!("streaming {k} is zero"),
                        &path.key("streaming").key(k),
                    )
                    .label("expected a positive duration");
                }
            }
            StreamingTimeouts {
                first_byte: s.first_byte.map(|d| d.get()),
                idle_chunk: s.idle_chunk.map(|d| d.get()),
            }
        });
        Route {
            name: r.name.clone(),
            when,
            strategy: r.strategy,
            targets,
            failover_on,
            hedge,
            retry,
            breaker,
            total_timeout,
            streaming,
            budgets: Vec::new(),
            budget_index: BudgetIndex::default(),
        }
    }

    /// Routes after a catch-all, or with the same condition as an earlier route, can never
    /// match; no catch-all at all is worth a warning.
    fn reachability(&mut self) {
        let routes = &self.p().routes;
        let mut catch_all: Option<usize> = None;
        // Earlier routes by the text of their condition: equal conditions print equally, so
        // only routes in the same bucket are compared (a policy of 1,000 routes would
        // otherwise compare every pair).
        let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let path = self.l.route_path(i);
            if let Some(c) = catch_all {
                if routes[..i].iter().any(|e| e.name == r.name) {
                    continue; // a second definition: reported as `duplicate-name` already
                }
                let origin = self.l.locate(&self.l.route_path(c).key("name"));
                self.error(
                    "unreachable-route",
                    format!(
                        "route `{}` can never match: it comes after the catch-all route `{}`",
                        r.name, routes[c].name
                    ),
                    &path.key("name"),
                )
                .hint("move the catch-all (the route without `when`) last")
                .related
                .push((origin, "the catch-all is here".into()));
                continue;
            }
            if r.when.is_none() {
                catch_all = Some(i);
                continue;
            }
            let earlier = by_text.entry(format!("{:?}", r.when)).or_default();
            let shadow = earlier.iter().copied().find(|&j| routes[j].when == r.when);
            earlier.push(i);
            if let Some(j) = shadow {
                let origin = self.l.locate(&self.l.route_path(j).key("when"));
                self.error("unreachable-route", format!("route `{}` can never match: route `{}` has the same condition and comes first", r.name, routes[j].name), &path.key("when"))
                    .related
                    .push((origin, "shadowed by this condition".into()));
            }
        }
        if routes.is_empty()
            && !self.l.is_partial()
            && !self.l.is_broken(&KeyPath::from(["routes"]))
            && !(0..64).any(|i| self.l.is_broken(&KeyPath::from(["routes"]).index(i)))
        {
            self.error("no-routes", "the policy defines no routes: no request could be served", &KeyPath::root())
                .hint("add a `[[routes]]` table with a `name` and `targets`; an empty file is not a policy");
        }
        if catch_all.is_none() && !routes.is_empty() {
            let last = self.l.route_path(routes.len() - 1).key("name");
            self.warning(
                "no-catch-all",
                "no route matches every request: a request that matches none fails with `no route`",
                &last,
            )
            .hint("add a last route without `when`");
        }
    }

    fn condition(&mut self, c: &Condition, path: &KeyPath) -> Option<Matcher> {
        let combos = [c.any.is_some(), c.all.is_some(), c.not.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let tests: Vec<&str> = [
            ("eq", c.eq.is_some()),
            ("one_of", c.one_of.is_some()),
            ("gt", c.gt.is_some()),
            ("gte", c.gte.is_some()),
            ("lt", c.lt.is_some()),
            ("lte", c.lte.is_some()),
            ("contains_any", c.contains_any.is_some()),
            ("exists", c.exists.is_some()),
        ]
        .iter()
        .filter(|(_, b)| *b)
        .map(|(n, _)| *n)
        .collect();
        if combos > 0 {
            if combos > 1 || !tests.is_empty() || c.attr.is_some() {
                self.error(
                    "invalid-condition",
                    "a condition is either a test of one attribute or one of `any`, `all`, `not`",
                    path,
                )
                .hint("nest them: `{ all = [{ attr = … }, { any = [...] }] }`");
                return None;
            }
            let list = |this: &mut Self, v: &[Condition], key: &str| -> Option<Vec<Matcher>> {
                if v.is_empty() {
                    this.error(
                        "invalid-condition",
                        format!("`{key}` is empty"),
                        &path.key(key),
                    )
                    .label("expected at least one condition");
                    return None;
                }
                let ms: Vec<Option<Matcher>> = v
                    .iter()
                    .enumerate()
                    .map(|(i, c)| this.condition(c, &path.key(key).index(i)))
                    .collect();
                ms.into_iter().collect()
            };
            if let Some(v) = &c.any {
                return list(self, v, "any").map(Matcher::Any);
            }
            if let Some(v) = &c.all {
                return list(self, v, "all").map(Matcher::All);
            }
            if let Some(n) = &c.not {
                return self
                    .condition(n, &path.key("not"))
                    .map(|m| Matcher::Not(Box::new(m)));
            }
        }
        let Some(attr_name) = &c.attr else {
            self.error(
                "invalid-condition",
                if tests.is_empty() {
                    "empty condition".to_string()
                } else {
                    format!("`{}` needs an `attr` to test", tests[0])
                },
                path,
            )
            .label("expected `attr` and a test, or `any`/`all`/`not`");
            return None;
        };
        let names: Vec<&str> = Attr::ALL.iter().map(|(n, _)| *n).collect();
        let Some(attr) = Attr::from_name(attr_name) else {
            self.error(
                "unknown-attribute",
                format!("unknown request attribute `{attr_name}`"),
                &path.key("attr"),
            )
            .label(format!("expected one of {}", one_of(names.iter().copied())))
            .help = did_you_mean(attr_name, names.iter().copied());
            return None;
        };
        let numeric: Vec<(Cmp, f64, &str)> = [
            (Cmp::Gt, c.gt, "gt"),
            (Cmp::Gte, c.gte, "gte"),
            (Cmp::Lt, c.lt, "lt"),
            (Cmp::Lte, c.lte, "lte"),
        ]
        .into_iter()
        .filter_map(|(op, v, n)| v.map(|v| (op, v, n)))
        .collect();
        let others = tests.len() - numeric.len();
        if tests.is_empty() {
            self.error("invalid-condition", format!("condition on `{attr_name}` has no test"), path)
                .label("expected one of `eq`, `one_of`, `gt`, `gte`, `lt`, `lte`, `contains_any`, `exists`");
            return None;
        }
        if others > 1 || (others == 1 && !numeric.is_empty()) {
            self.error(
                "invalid-condition",
                format!(
                    "one condition may hold one test; found {}",
                    tests.join(", ")
                ),
                path,
            )
            .hint("combine several tests with `all = [...]`");
            return None;
        }
        if c.min_hits.is_some() && c.contains_any.is_none() {
            self.error(
                "invalid-condition",
                "min_hits only applies to contains_any",
                &path.key("min_hits"),
            );
        }
        let kind = attr.kind();
        if !numeric.is_empty() {
            if kind != AttrKind::Number {
                self.error(
                    "attribute-type",
                    format!(
                        "`{}` compares numbers but `{attr_name}` is not numeric",
                        numeric[0].2
                    ),
                    &path.key(numeric[0].2),
                )
                .label("numeric attributes: `max_tokens`, `input_tokens`");
                return None;
            }
            let ms: Vec<Matcher> = numeric
                .iter()
                .map(|(op, v, _)| Matcher::Compare(attr, *op, *v))
                .collect();
            return Some(if ms.len() == 1 {
                ms.into_iter().next().expect("len is 1")
            } else {
                Matcher::All(ms)
            });
        }
        if let Some(words) = &c.contains_any {
            if kind == AttrKind::Number {
                self.error(
                    "attribute-type",
                    format!("contains_any tests text but `{attr_name}` is numeric"),
                    &path.key("contains_any"),
                );
                return None;
            }
            if words.is_empty() {
                self.error(
                    "invalid-condition",
                    "contains_any is empty",
                    &path.key("contains_any"),
                )
                .label("expected at least one word");
                return None;
            }
            let min_hits = c.min_hits.unwrap_or(1);
            if min_hits == 0 || min_hits as usize > words.len() {
                self.error(
                    "invalid-condition",
                    format!(
                        "min_hits {min_hits} can never be met by {} word(s)",
                        words.len()
                    ),
                    &path.key("min_hits"),
                )
                .label(format!("expected 1 to {}", words.len()));
                return None;
            }
            return Some(Matcher::ContainsAny {
                attr,
                words: words.iter().map(|w| w.to_lowercase()).collect(),
                min_hits,
            });
        }
        if let Some(e) = c.exists {
            return Some(Matcher::Exists(attr, e));
        }
        let (values, key): (Vec<Scalar>, &str) = match (&c.eq, &c.one_of) {
            (Some(v), _) => (vec![v.clone()], "eq"),
            (_, Some(vs)) => (vs.clone(), "one_of"),
            _ => unreachable!("tests is non-empty and every other test returned above"),
        };
        if values.is_empty() {
            self.error("invalid-condition", "one_of is empty", &path.key(key))
                .label("expected at least one value");
            return None;
        }
        for (i, v) in values.iter().enumerate() {
            let ok = match kind {
                AttrKind::Number => matches!(v, Scalar::Int(_) | Scalar::Float(_)),
                AttrKind::Text | AttrKind::List => matches!(v, Scalar::Str(_)),
            };
            if !ok {
                let at = if key == "eq" {
                    path.key("eq")
                } else {
                    path.key("one_of").index(i)
                };
                self.error(
                    "attribute-type",
                    format!(
                        "`{attr_name}` is compared with {v}, which is not a {}",
                        if kind == AttrKind::Number {
                            "number"
                        } else {
                            "string"
                        }
                    ),
                    &at,
                );
                return None;
            }
        }
        if attr == Attr::Caller && !self.p().callers.is_empty() {
            let callers: Vec<String> = self.p().callers.keys().cloned().collect();
            for (i, v) in values.iter().enumerate() {
                if let Scalar::Str(name) = v {
                    let at = if key == "eq" {
                        path.key("eq")
                    } else {
                        path.key("one_of").index(i)
                    };
                    self.resolve("callers", &callers, name, &at);
                }
            }
        }
        Some(Matcher::OneOf(attr, values))
    }

    /// `[callers.NAME]`: each key hash well-formed and used by one caller only.
    fn callers(&mut self) -> Vec<Caller> {
        let mut out: Vec<Caller> = Vec::new();
        for (name, c) in &self.p().callers {
            let path = KeyPath::from(["callers", name.as_str()]);
            if name.trim().is_empty() {
                self.error("invalid-value", "a caller name must not be empty", &path);
            }
            let at = path.key("key_sha256");
            let Some(hash) = crate::policy::spans::parse_sha256_hex(&c.key_sha256) else {
                // The value is not shown: it may be the key itself.
                self.error(
                    "invalid-key-hash",
                    format!("caller `{name}`: `key_sha256` is not a SHA-256 hash"),
                    &at,
                )
                .label(match c.key_sha256.chars().count() {
                    64 => "expected 64 hex digits, found other characters".to_string(),
                    1 => "expected 64 hex digits, found 1 character".to_string(),
                    n => format!("expected 64 hex digits, found {n} characters"),
                })
                .hint("store the hash, never the key: `printf %s \"$KEY\" | tollgate hash-key`");
                continue;
            };
            if let Some(&i) = self.names.caller_hashes.get(&hash) {
                let other = &out[i as usize].name;
                let first_origin = self
                    .l
                    .locate(&KeyPath::from(["callers", other.as_str()]).key("key_sha256"));
                self.error(
                    "duplicate-key-hash",
                    format!("callers `{other}` and `{name}` have the same key"),
                    &at,
                )
                .label("the same hash again here")
                .hint("give each caller its own key: a key must say who is calling")
                .related
                .push((first_origin, "first used here".into()));
                continue;
            }
            self.names.caller_hashes.insert(hash, out.len() as u32);
            out.push(Caller {
                name: name.clone(),
                key_sha256: hash,
            });
        }
        out
    }

    fn budget(
        &mut self,
        name: &str,
        b: &policy::Budget,
        routes: &[String],
        models: &[String],
        upstreams: &[String],
        model_plans: &[Model],
    ) -> Budget {
        let path = KeyPath::from(["budgets", name]);
        if !positive(b.limit_usd) {
            self.error(
                "invalid-value",
                format!("limit_usd is {}", num(b.limit_usd)),
                &path.key("limit_usd"),
            )
            .label("expected a positive amount");
        } else if crate::exec::price::Usd::from_dollars(b.limit_usd).is_err() {
            self.error(
                "invalid-value",
                format!(
                    "limit_usd {} is above the most a budget can count (about 1.8e10 USD)",
                    num(b.limit_usd)
                ),
                &path.key("limit_usd"),
            )
            .label("expected a positive amount up to 1.8e10");
        }
        if b.window.get().is_zero() {
            self.error(
                "invalid-value",
                "the budget window is zero",
                &path.key("window"),
            )
            .label("expected a positive duration");
        }
        let mut scope = BudgetScope::default();
        if let Some(s) = &b.scope {
            let sp = path.key("scope");
            for (i, r) in s.routes.iter().enumerate() {
                scope.routes.extend(
                    self.resolve("routes", routes, r, &sp.key("routes").index(i))
                        .map(RouteId),
                );
            }
            for (i, m) in s.models.iter().enumerate() {
                scope.models.extend(
                    self.resolve("models", models, m, &sp.key("models").index(i))
                        .map(ModelId),
                );
            }
            for (i, u) in s.upstreams.iter().enumerate() {
                scope.upstreams.extend(
                    self.resolve("upstreams", upstreams, u, &sp.key("upstreams").index(i))
                        .map(UpstreamId),
                );
            }
            scope.keys = s.keys.clone();
            if !self.p().callers.is_empty() {
                let callers = std::mem::take(&mut self.caller_names);
                for (i, k) in s.keys.iter().enumerate() {
                    self.resolve("callers", &callers, k, &sp.key("keys").index(i));
                }
                self.caller_names = callers;
            }
        }
        let unpriced: Vec<&str> = (self.unpriced.iter())
            .filter(|&&i| scope.models.is_empty() || scope.models.contains(&ModelId(i)))
            .map(|&i| model_plans[i as usize].name.as_str())
            .collect();
        if !unpriced.is_empty() && (scope.upstreams.is_empty() && scope.routes.is_empty()) {
            self.warning("unpriced-model", format!("budget `{name}` covers model(s) without a price, whose calls count as free: {}", one_of(unpriced.iter().copied())), &path)
                .hint("add a price to every model a budget covers");
        }
        let on_exceed = match &b.on_exceed {
            policy::OnExceed::Reject => OnExceed::Reject,
            policy::OnExceed::Reroute(r) => {
                match self.resolve("routes", routes, r, &path.key("on_exceed").key("reroute")) {
                    Some(id) => OnExceed::Reroute(RouteId(id)),
                    None => OnExceed::Reject,
                }
            }
        };
        Budget {
            name: name.to_string(),
            limit_usd: b.limit_usd,
            window: b.window.get(),
            scope,
            on_exceed,
            state: b.state,
        }
    }

    /// A reroute whose target is covered by a budget that reroutes (back) again loops
    /// forever once both budgets are spent: report each cycle once.
    fn reroute_cycles(&mut self, budgets: &[Budget], n_routes: usize) {
        // Edge route -> (target route, budget) for every route a rerouting budget covers.
        let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_routes];
        for (bi, b) in budgets.iter().enumerate() {
            if let OnExceed::Reroute(t) = b.on_exceed {
                for (r, e) in edges.iter_mut().enumerate() {
                    if b.scope.routes.is_empty() || b.scope.routes.contains(&RouteId(r as u32)) {
                        e.push((t.index(), bi));
                    }
                }
            }
        }
        let mut reported: HashSet<Vec<usize>> = HashSet::new();
        for start in 0..n_routes {
            // Depth-first search for a path back to `start`.
            let mut stack: Vec<(usize, Trail)> = vec![(start, Vec::new())];
            let mut visited = HashSet::new();
            while let Some((node, trail)) = stack.pop() {
                for &(next, bi) in &edges[node] {
                    let mut t = trail.clone();
                    t.push((next, bi));
                    if next == start {
                        let mut key: Vec<usize> = t.iter().map(|(r, _)| *r).collect();
                        key.sort();
                        if reported.insert(key) {
                            let names: Vec<String> = std::iter::once(start)
                                .chain(t.iter().map(|(r, _)| *r))
                                .map(|r| format!("`{}`", self.p().routes[r].name))
                                .collect();
                            let b = &budgets[t[0].1];
                            self.error("reroute-cycle", format!("budgets reroute in a cycle: {}", names.join(" → ")), &KeyPath::from(["budgets", b.name.as_str()]).key("on_exceed"))
                                .hint("once these budgets are spent, requests would be rerouted forever; end the chain with `on_exceed = \"reject\"`");
                        }
                    } else if visited.insert(next) {
                        stack.push((next, t));
                    }
                }
            }
        }
    }
}
