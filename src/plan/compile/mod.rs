//! The compiler: resolves every name, applies defaults and checks every semantic rule of a
//! loaded policy, collecting all diagnostics in one pass.
//!
//! # Shape
//! `Compiler::run` is a short sequence of steps, one per policy section, each in its own
//! file: `upstream` (with `limits`), `model`, `retry`, `breaker`, `route` (with its
//! `condition`), `reachability`, `callers`, `budget` (with reroute cycles), `state`
//! (`[state.redis]`) and `deadline` (the static-bounds warnings); `timeouts` and
//! `classes` are what several sections share. `names` holds each section's names: the
//! compiler keeps them, and every reference resolves against them by [`Section`]. A
//! diagnostic is built one way everywhere: `self.error(code, message, at)` (or `warning`)
//! gives a located [`Diagnostic`], its `with_*` builders annotate it, `self.push` keeps it.
//!
//! # Environment variables named by `api_key`
//! At `tollgate check` and compile time, a variable that is **unset** is a warning (CI and
//! laptops rarely hold production keys); one that is set but does not start with an allowed
//! prefix is an error (its value is never shown). At start-up (`tollgate serve`, building
//! an HTTP client) an unset or empty key is an error: nothing is sent without it.

mod breaker;
mod budget;
mod callers;
mod classes;
mod condition;
mod deadline;
mod limits;
mod model;
mod names;
mod reachability;
mod retry;
mod route;
mod state;
mod timeouts;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::policy::spans::KeyPath;
use crate::policy::{self, Loaded};
use names::{Section, Sections};

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
            sources: Arc::new(loaded.sources),
        });
    }
    let mut c = Compiler {
        l: &loaded,
        diags: items,
        sections: Sections::default(),
        defaults: Defaults {
            timeouts: DEFAULT_TIMEOUTS,
            retry: RetryId(0),
            breaker: None,
        },
        caller_hashes: HashMap::new(),
        unpriced: Vec::new(),
    };
    let plan = c.run();
    let mut diags = Diagnostics {
        items: c.diags,
        sources: Arc::new(loaded.sources),
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

/// What `[defaults]` resolves to: what an upstream or route without its own takes.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    timeouts: Timeouts,
    retry: RetryId,
    breaker: Option<BreakerId>,
}

struct Compiler<'a> {
    l: &'a Loaded,
    diags: Vec<Diagnostic>,
    /// Each section's names, what every reference is resolved against.
    sections: Sections,
    /// `[defaults]`, resolved before the sections that fall back to it.
    defaults: Defaults,
    /// Caller key hash → index of the caller that holds it.
    caller_hashes: HashMap<[u8; 32], u32>,
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

/// `s` when `n` is not one, for plurals in messages.
fn plural(n: impl Into<u64>) -> &'static str {
    if n.into() == 1 {
        ""
    } else {
        "s"
    }
}

impl<'a> Compiler<'a> {
    /// The policy, borrowed for the compiler's whole life (not from `self`), so checks can
    /// walk it while they push diagnostics.
    fn p(&self) -> &'a policy::Policy {
        &self.l.policy
    }

    /// An error located at a key path (not yet kept: annotate it, then [`push`](Self::push)).
    fn error(&self, code: Code, message: impl Into<String>, at: &KeyPath) -> Diagnostic {
        Diagnostic::error(code, message, self.l.locate(at))
    }

    /// A warning located at a key path.
    fn warning(&self, code: Code, message: impl Into<String>, at: &KeyPath) -> Diagnostic {
        Diagnostic::warning(code, message, self.l.locate(at))
    }

    /// Keeps a diagnostic.
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn run(&mut self) -> Plan {
        self.version();
        self.sections = self.sections();
        let timeouts = self.p().defaults.timeouts.as_ref();
        let at = KeyPath::from(["defaults", "timeouts"]);
        self.defaults.timeouts = self.timeouts(DEFAULT_TIMEOUTS, timeouts, &at);
        let breakers: Vec<BreakerPolicy> = (self.p().breakers.iter())
            .map(|(n, b)| self.breaker(n, b))
            .collect();
        let (retries, baseline_model) = self.defaults_and_retries();
        let upstreams: Vec<Upstream> = (self.p().upstreams.iter())
            .map(|(n, u)| self.upstream(n, u))
            .collect();
        let models: Vec<Model> = (self.p().models.iter())
            .map(|(n, m)| self.model(n, m))
            .collect();
        self.baseline_price(baseline_model, &models);
        let mut routes: Vec<Route> = (self.p().routes.iter().enumerate())
            .map(|(i, r)| self.route(i, r, &models, &upstreams))
            .collect();
        self.reachability();
        let callers = self.callers();
        let budgets = self.budgets(&models);
        self.reroute_cycles(&budgets, routes.len());
        budget::attach(&mut routes, &budgets);
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
            names: self
                .sections
                .take_plan_names(std::mem::take(&mut self.caller_hashes)),
        };
        let plan = Plan(Arc::new(Arc::new(data)));
        self.deadline_warnings(&plan);
        plan
    }

    fn version(&mut self) {
        if let Some(v) = self.p().version.filter(|v| *v != 1) {
            let d = self.error(
                Code::UnsupportedVersion,
                format!("policy version {v} is not supported"),
                &KeyPath::from(["version"]),
            );
            self.push(d.with_label("expected `1`"));
        }
    }

    /// The retry policies, the built-in single attempt last, and the rest of `[defaults]`
    /// (kept in [`Compiler::defaults`]; its timeouts are resolved first); the baseline
    /// model, if one is named.
    fn defaults_and_retries(&mut self) -> (Vec<RetryPolicy>, Option<ModelId>) {
        let p = self.p();
        let path = KeyPath::from(["defaults"]);
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
        let retry = (p.defaults.retry.as_ref())
            .and_then(|n| self.resolve(Section::Retry, n, &path.key("retry")))
            .map_or(builtin_retry, RetryId);
        let breaker = (p.defaults.breaker.as_ref())
            .and_then(|n| self.resolve(Section::Breakers, n, &path.key("breaker")))
            .map(BreakerId);
        let baseline_model = (p.defaults.baseline_model.as_ref())
            .and_then(|n| self.resolve(Section::Models, n, &path.key("baseline_model")))
            .map(ModelId);
        self.defaults.retry = retry;
        self.defaults.breaker = breaker;
        (retries, baseline_model)
    }
}
