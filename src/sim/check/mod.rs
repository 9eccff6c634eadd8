//! The invariant checker: sees every event of a run and holds it to the promises of
//! `docs/guarantees.md` ([`Promise`]).
//!
//! It keeps per-request state only while a request (or its stream) is alive, and per
//! upstream, route, budget window and breaker a few counters: memory grows with what is in
//! flight and with the number of budget windows, not with the number of requests.

mod limits;
mod request;

use std::collections::HashMap;

use super::event::{AttemptResult, Event};
use super::promise::{Promise, Violation};
use crate::exec::{Executor, Failure, Usage};
use crate::plan::{Plan, RouteId};

/// Slack for "by the deadline" and "within the per-try timeout": one scheduler tick.
pub const TICK_NS: u64 = 1_000_000;

/// Most violations kept in a report (the count goes on).
const KEEP: usize = 50;

/// A request while it is alive.
#[derive(Debug)]
struct Req {
    start: u64,
    route: Option<String>,
    input: u64,
    output: u64,
    caller: Option<String>,
    version: Option<u64>,
    /// The plan current when the request started: the one it runs under (attempts confirm
    /// it through `version`; a request refused before any attempt has only this).
    start_version: u64,
    /// A lowest-latency first choice that looks wrong, judged when the request ends: only
    /// if no target was skipped before it (the checker sees attempts, not skips).
    suspect: Option<String>,
    /// Moves between targets seen in its attempts (hedges aside), and the last model.
    moves_seen: u32,
    prev_model: Option<String>,
    attempts: u32,
    in_flight: u32,
    hedged: bool,
    last_start: u64,
    /// The last attempt to end: its model, attempt number and failure (`None`: dropped,
    /// which the executor reports as a timeout).
    last_end: Option<(String, u32, Option<Failure>)>,
    /// The route that last attempt ran on (a budget reroute may follow it).
    last_route: Option<String>,
    routes: Vec<String>,
    cost_nanos: u64,
    max_usage: Usage,
}

/// An attempt while it runs (and, for a stream, until the stream ends).
#[derive(Debug)]
struct Att {
    req: u64,
    start: u64,
    timeout: u64,
    version: u64,
    route: String,
    model: String,
    upstream: String,
    number: u32,
    hedge: bool,
    /// Budgets covering it: (name, window, reserved nano-dollars).
    /// The window is a range (first, last): a shared budget decides at the backend, some
    /// time during the admission, which may span two windows.
    budgets: Vec<(String, (u64, u64), u64)>,
    /// Half-open breakers it probes.
    probes: Vec<String>,
    /// Its slot in its upstream's token account, if the upstream has a token limit.
    tokens: Option<usize>,
}

/// Sees every event; collects the violations.
pub struct Checker {
    plans: Vec<Plan>,
    reqs: HashMap<u64, Req>,
    ended: Vec<bool>,
    atts: HashMap<u64, Att>,
    limits: limits::Limits,
    violations: Vec<Violation>,
    total: u64,
}

impl Checker {
    /// A checker for a run starting under `plan` (version 1).
    pub fn new(plan: Plan) -> Self {
        Checker {
            plans: vec![plan],
            reqs: HashMap::new(),
            ended: Vec::new(),
            atts: HashMap::new(),
            limits: limits::Limits::default(),
            violations: Vec::new(),
            total: 0,
        }
    }

    /// The run has this simulated shared-state backend: shared entities are held to
    /// their bounds only while it cannot fail (see `shared_slack`).
    pub fn set_backend(&mut self, script: &crate::sim::SharedScript) {
        self.limits.backend = Some(script.clone());
    }

    /// Registers the plan of a reload (its version is the next one).
    pub fn add_plan(&mut self, plan: Plan) {
        self.plans.push(plan);
    }

    /// The plan of a version (the first one for an unknown version).
    fn plan(&self, version: u64) -> Plan {
        let i = (version.max(1) - 1) as usize;
        self.plans.get(i).unwrap_or(&self.plans[0]).clone()
    }

    fn flag(&mut self, promise: Promise, at: u64, request: Option<u64>, detail: String) {
        self.total += 1;
        if self.violations.len() < KEEP {
            self.violations.push(Violation {
                promise,
                at_ms: at as f64 / 1e6,
                request,
                detail,
            });
        }
    }

    /// Violations found (the first ones), and how many in all.
    pub fn violations(&self) -> (&[Violation], u64) {
        (&self.violations, self.total)
    }

    /// Checks one event; `exec` is read for live state (breakers).
    pub fn on(&mut self, ev: &Event, exec: &Executor) {
        match ev {
            Event::RequestStart {
                at,
                req,
                route,
                input_tokens,
                output_tokens,
                caller,
                ..
            } => self.request_start(*at, *req, route, (*input_tokens, *output_tokens), caller),
            Event::AttemptStart { .. } => self.attempt_start(ev, exec),
            Event::AttemptEnd {
                at,
                req,
                id,
                result,
            } => self.attempt_end(*at, *req, *id, result),
            Event::RequestEnd { at, req, outcome } => self.request_end(*at, *req, outcome),
            Event::StreamEnd { at, id, usage, .. } => {
                if let Some(att) = self.atts.remove(id) {
                    self.settle_budgets(*at, &att, *usage);
                    // Reconciled by `record_late_usage`; a broken stream keeps the estimate.
                    if let Some(u) = usage {
                        self.limits
                            .settle_tokens(&att, Some(u.input_tokens + u.output_tokens));
                    }
                    self.limits.finalize_tokens(&att);
                }
            }
            Event::Reload { .. } => {}
        }
        self.observe_breakers(ev.at(), exec);
    }

    fn request_start(
        &mut self,
        at: u64,
        req: u64,
        route: &Option<String>,
        (input, output): (u64, u64),
        caller: &Option<String>,
    ) {
        let version = self.plans.len() as u64;
        if let Some(r) = route {
            let plan = self.plan(version);
            self.limits.deposit(&plan, r, at);
        }
        self.reqs.insert(
            req,
            Req {
                start: at,
                route: route.clone(),
                input,
                output,
                caller: caller.clone(),
                version: None,
                start_version: version,
                suspect: None,
                moves_seen: 0,
                prev_model: None,
                attempts: 0,
                in_flight: 0,
                hedged: false,
                last_start: at,
                last_end: None,
                last_route: None,
                routes: route.iter().cloned().collect(),
                cost_nanos: 0,
                max_usage: Usage::default(),
            },
        );
    }

    fn attempt_end(&mut self, at: u64, req: u64, id: u64, result: &AttemptResult) {
        let Some(att) = self.atts.remove(&id) else {
            return;
        };
        if at.saturating_sub(att.start) > att.timeout + TICK_NS {
            self.flag(
                Promise::PerTry,
                at,
                Some(req),
                format!(
                    "attempt on {} ran {:.3}ms, given {:.3}ms",
                    att.model,
                    (at - att.start) as f64 / 1e6,
                    att.timeout as f64 / 1e6
                ),
            );
        }
        self.limits.attempt_end(&att);
        let (usage, failure, pending) = match result {
            AttemptResult::Ok { usage, pending } => (*usage, None, *pending),
            AttemptResult::Failed(f) => (f.usage, Some(f.clone()), false),
            AttemptResult::Dropped | AttemptResult::Panicked => (None, None, false),
        };
        let connect = matches!(&failure, Some(f) if f.kind == crate::exec::FailureKind::Connect);
        let plan = self.plan(att.version);
        self.limits
            .lowest_latency_end(&plan, &att, failure.is_none(), at);
        let cost = usage.map_or(0, |u| self.cost(&att, u));
        if let Some(r) = self.reqs.get_mut(&req) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.last_end = Some((att.model.clone(), att.number, failure));
            r.last_route = Some(att.route.clone());
            if let Some(u) = usage {
                r.max_usage.input_tokens = r.max_usage.input_tokens.max(u.input_tokens);
                r.max_usage.output_tokens = r.max_usage.output_tokens.max(u.output_tokens);
                r.cost_nanos += cost;
            }
        }
        match usage {
            Some(u) => self
                .limits
                .settle_tokens(&att, Some(u.input_tokens + u.output_tokens)),
            // A connection that never opened used no tokens; otherwise the estimate stays.
            None if connect => self.limits.settle_tokens(&att, Some(0)),
            None => {}
        }
        if pending {
            // A stream: its usage comes at its end.
            self.atts.insert(id, att);
        } else {
            self.settle_budgets(at, &att, usage);
            self.limits.finalize_tokens(&att);
        }
    }

    /// What `usage` costs on the attempt's model, nano-dollars.
    fn cost(&self, att: &Att, usage: Usage) -> u64 {
        let plan = self.plan(att.version);
        plan.model_by_name(&att.model)
            .and_then(|m| plan.model(m).price)
            .map_or(0, |p| p.cost(usage).nanos())
    }

    fn settle_budgets(&mut self, at: u64, att: &Att, usage: Option<Usage>) {
        let actual = usage.map_or(0, |u| self.cost(att, u));
        let plan = self.plan(att.version);
        let mut broken = Vec::new();
        for (name, window, reserved) in &att.budgets {
            if let Some(msg) = self.limits.spend(&plan, name, *window, *reserved, actual) {
                broken.push(msg);
            }
        }
        for msg in broken {
            self.flag(Promise::BudgetSpend, at, Some(att.req), msg);
        }
    }

    /// The run hit its horizon with requests still running: each is reported (a hang).
    pub fn hung(&mut self, at: u64) {
        let mut open: Vec<u64> = self.reqs.keys().copied().collect();
        open.sort_unstable();
        for r in open {
            let start = self.reqs[&r].start;
            let msg = format!(
                "still running {:.3}s after it started: a hang",
                (at - start) as f64 / 1e9
            );
            self.flag(Promise::OneOutcome, at, Some(r), msg);
            self.reqs.remove(&r);
            if self.ended.len() <= r as usize {
                self.ended.resize(r as usize + 1, false);
            }
            self.ended[r as usize] = true;
        }
    }

    /// Checks what must hold once the run is over: every request ended, every permit back.
    pub fn finish(&mut self, at: u64, exec: &Executor) {
        let mut missing: Vec<u64> = self.reqs.keys().copied().collect();
        missing.sort_unstable();
        for r in missing {
            if !self.ended.get(r as usize).copied().unwrap_or(false) {
                self.flag(
                    Promise::OneOutcome,
                    at,
                    Some(r),
                    "the request never ended".into(),
                );
            }
        }
        if !self.atts.is_empty() {
            let n = self.atts.len();
            self.flag(
                Promise::PermitsReturned,
                at,
                None,
                format!("{n} attempt(s) (or streams) never ended"),
            );
        }
        for msg in self.limits.token_windows() {
            self.flag(Promise::TokenWindow, at, None, msg);
        }
        let stats = exec.stats();
        let mut leaks = Vec::new();
        for m in &stats.models {
            if m.in_flight != 0 {
                leaks.push(format!("model {} has {} in flight", m.name, m.in_flight));
            }
        }
        for u in &stats.upstreams {
            if let Some((n, cap)) = u.concurrency {
                if n != 0 {
                    leaks.push(format!("upstream {} holds {n}/{cap} permits", u.name));
                }
            }
        }
        for b in &stats.budgets {
            if b.reserved_usd != 0.0 {
                leaks.push(format!(
                    "budget {} has ${} reserved",
                    b.name, b.reserved_usd
                ));
            }
        }
        for l in leaks {
            self.flag(Promise::PermitsReturned, at, None, l);
        }
    }

    /// The route id of `name` in the plan of `version`.
    fn route_id(&self, version: u64, name: &str) -> Option<RouteId> {
        self.plan(version).route_by_name(name)
    }
}

#[cfg(test)]
mod tests;
