//! Per-request promises: deadline, per-try timeout, one plan, one outcome, explain's
//! bounds, failover and hedging classes.

use std::time::Duration;

use super::{Att, Checker, TICK_NS};
use crate::exec::{Executor, Failure};
use crate::plan::{route_bounds, Plan, Route, TokenCounts};
use crate::sim::event::{Event, Outcome};
use crate::sim::promise::Promise;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Whether leaving a target after `failure` (its attempt `number`) is allowed: the route
/// fails over on its class, or it was retryable with attempts left (a retry refused by a
/// breaker, limiter or budget moves on too).
fn may_leave(plan: &Plan, route: &Route, number: u32, failure: &Failure) -> bool {
    let view = failure.view();
    if route.failover_on.matches(&view) {
        return true;
    }
    let retry = plan.retry(route.retry);
    let max = retry
        .override_for(&view)
        .and_then(|o| o.max_attempts)
        .unwrap_or(retry.max_attempts);
    retry.retry_on.matches(&view) && number < max
}

impl Checker {
    pub(super) fn attempt_start(&mut self, ev: &Event, exec: &Executor) {
        let Event::AttemptStart {
            at,
            req,
            id,
            route,
            model,
            upstream,
            number,
            hedge,
            timeout,
            queued,
            plan_version,
        } = ev
        else {
            return;
        };
        let (at, req) = (*at, *req);
        let att = Att {
            req,
            start: at,
            timeout: *timeout,
            version: *plan_version,
            route: route.clone(),
            model: model.clone(),
            upstream: upstream.clone(),
            number: *number,
            hedge: *hedge,
            budgets: Vec::new(),
            probes: Vec::new(),
            tokens: None,
        };
        self.one_plan(at, &att);
        self.timeout_given(at, &att);
        self.moves(at, &att);
        let mut att = att;
        let plan = self.plan(att.version);
        if let Some(r) = self.reqs.get_mut(&req) {
            let retry = r.attempts > 0;
            r.attempts += 1;
            r.in_flight += 1;
            r.hedged |= att.hedge;
            r.last_start = at;
            if !att.hedge {
                if r.prev_model.as_ref().is_some_and(|m| *m != att.model) {
                    r.moves_seen += 1;
                }
                r.prev_model = Some(att.model.clone());
            }
            if !r.routes.contains(&att.route) {
                r.routes.push(att.route.clone());
            }
            let (deposit, caller) = (r.route.clone(), r.caller.clone());
            let tokens = (r.input, r.output);
            let mut found = Vec::new();
            // Retries and failovers draw on the budget of the route the request started on
            // (where it deposited); a hedge on the budget of the route it runs on.
            let from = if att.hedge {
                Some(att.route.clone())
            } else {
                deposit
            };
            if let (true, Some(d)) = (retry, from) {
                found.extend(self.limits.withdraw(&plan, &d, at));
            }
            att.budgets = self
                .limits
                // The budget decided at admission, `queued` before the call started.
                .reserve(
                    &plan,
                    &att,
                    caller.as_deref(),
                    tokens,
                    (at.saturating_sub(*queued), at),
                );
            att.tokens = self
                .limits
                .reserve_tokens(&plan, &att.upstream, tokens.0 + tokens.1, at);
            found.extend(self.limits.attempt_start(&plan, &att, at));
            r.suspect = self
                .limits
                .lowest_latency_start(&plan, &att, r.attempts == 1, r.start)
                .map(|(_, msg)| msg);
            found.extend(self.breakers_at_start(&mut att, exec, at));
            for (p, msg) in found {
                self.flag(p, at, Some(req), msg);
            }
        }
        self.atts.insert(*id, att);
    }

    fn one_plan(&mut self, at: u64, att: &Att) {
        let Some(r) = self.reqs.get_mut(&att.req) else {
            return;
        };
        match r.version {
            None => r.version = Some(att.version),
            Some(v) if v != att.version => {
                let msg = format!(
                    "attempt under plan v{}, earlier ones under v{v}",
                    att.version
                );
                self.flag(Promise::OnePlan, at, Some(att.req), msg);
            }
            Some(_) => {}
        }
    }

    /// The time given: at most the per-try timeout, and not past the request's deadline.
    fn timeout_given(&mut self, at: u64, att: &Att) {
        let plan = self.plan(att.version);
        let Some(rid) = plan.route_by_name(&att.route) else {
            return;
        };
        let route = plan.route(rid);
        let per_try = route
            .targets
            .iter()
            .find(|t| plan.model(t.model).name == att.model)
            .map(|t| t.timeouts.per_try);
        if let Some(p) = per_try {
            if Duration::from_nanos(att.timeout) > p {
                let msg = format!("given {:.3}ms, per_try is {p:?}", ms(att.timeout));
                self.flag(Promise::PerTry, at, Some(att.req), msg);
            }
        }
        let Some(start) = self.reqs.get(&att.req).map(|r| r.start) else {
            return;
        };
        let deadline = start.saturating_add(crate::exec::clock::nanos(route.total_timeout));
        if at.saturating_add(att.timeout) > deadline + TICK_NS {
            let msg = format!(
                "attempt on {} at {:.3}ms given {:.3}ms: past the deadline at {:.3}ms (total {:?})",
                att.model,
                ms(at - start),
                ms(att.timeout),
                ms(deadline - start),
                route.total_timeout
            );
            self.flag(Promise::Deadline, at, Some(att.req), msg);
        }
    }

    /// Failover and hedging: a request leaves a target, or hedges, only as its route allows.
    fn moves(&mut self, at: u64, att: &Att) {
        let Some(r) = self.reqs.get(&att.req) else {
            return;
        };
        let plan = self.plan(att.version);
        let Some(rid) = plan.route_by_name(&att.route) else {
            return;
        };
        let route = plan.route(rid);
        let timeout = Failure::timeout();
        let last = r
            .last_end
            .as_ref()
            .map(|(m, n, f)| (m.clone(), *n, f.clone().unwrap_or_else(|| timeout.clone())));
        let mut found = Vec::new();
        if att.hedge {
            match (route.hedge, &last) {
                (None, _) => {
                    found.push((Promise::Hedge, "a hedge on a route without hedge".into()))
                }
                (Some(_), Some((m, n, f))) if r.in_flight == 0 => {
                    if !route.failover_on.matches(&f.view()) {
                        found.push((
                            Promise::Hedge,
                            format!("hedge on {} after {m}#{n} failed with `{f}`, a class failover_on does not allow", att.model),
                        ));
                    }
                }
                (Some(h), _) => {
                    let due = r.last_start + crate::exec::clock::nanos(h.after);
                    if at + TICK_NS < due {
                        found.push((
                            Promise::Hedge,
                            format!(
                                "hedge on {} {:.3}ms after the attempt it races, `after` is {:?}",
                                att.model,
                                ms(at - r.last_start),
                                h.after
                            ),
                        ));
                    }
                }
            }
        } else if let Some((m, n, f)) = &last {
            // Whether the failure may leave its target is the rule of the route it failed
            // on (a budget reroute may then carry the request to another route).
            let from = r
                .last_route
                .as_deref()
                .and_then(|name| plan.route_by_name(name))
                .map_or(route, |id| plan.route(id));
            if *m != att.model && !r.hedged && !may_leave(&plan, from, *n, f) {
                found.push((
                    Promise::FailoverClass,
                    format!("moved from {m}#{n} to {} after `{f}`, which neither failover_on nor retry_on allows", att.model),
                ));
            }
        }
        for (p, msg) in found {
            self.flag(p, at, Some(att.req), msg);
        }
    }

    pub(super) fn request_end(&mut self, at: u64, req: u64, outcome: &Outcome) {
        let i = req as usize;
        if self.ended.len() <= i {
            self.ended.resize(i + 1, false);
        }
        if std::mem::replace(&mut self.ended[i], true) {
            self.flag(
                Promise::OneOutcome,
                at,
                Some(req),
                "a second outcome".into(),
            );
            return;
        }
        let Some(r) = self.reqs.remove(&req) else {
            return;
        };
        // The first attempt's target was the first choice only if nothing was skipped.
        let skipped = match outcome {
            Outcome::Served { failovers, .. } => *failovers > r.moves_seen,
            Outcome::Failed { skipped, .. } => *skipped > 0,
            Outcome::Cancelled | Outcome::Panicked => true,
        };
        if let (Some(msg), false) = (&r.suspect, skipped) {
            self.flag(Promise::LowestLatencyFailures, at, Some(req), msg.clone());
        }
        let (route, version) = match outcome {
            Outcome::Served {
                route,
                plan_version,
                ..
            } => {
                if r.version.is_some_and(|v| v != *plan_version) {
                    let msg = format!(
                        "served under v{plan_version}, attempts under v{:?}",
                        r.version
                    );
                    self.flag(Promise::OnePlan, at, Some(req), msg);
                }
                (Some(route.clone()), *plan_version)
            }
            Outcome::Failed { route, .. } => (route.clone(), r.version.unwrap_or(r.start_version)),
            Outcome::Cancelled | Outcome::Panicked => return,
        };
        let mut routes = r.routes.clone();
        if let Some(x) = &route {
            if !routes.contains(x) {
                routes.push(x.clone());
            }
        }
        self.deadline(at, req, &r, version, &routes);
        if let (Some(x), true) = (route, routes.len() == 1) {
            self.bounds(at, req, &r, version, &x);
        }
    }

    fn deadline(&mut self, at: u64, req: u64, r: &super::Req, version: u64, routes: &[String]) {
        let plan = self.plan(version);
        let total = routes
            .iter()
            .filter_map(|n| plan.route_by_name(n))
            .map(|id| plan.route(id).total_timeout)
            .max();
        let Some(total) = total else { return };
        let elapsed = at - r.start;
        if elapsed > crate::exec::clock::nanos(total) + TICK_NS {
            let msg = format!(
                "answered after {:.3}ms, total is {total:?} (routes {routes:?})",
                ms(elapsed)
            );
            self.flag(Promise::Deadline, at, Some(req), msg);
        }
    }

    /// Attempts, latency and cost within `explain`'s bounds (a request that stayed on one
    /// route).
    fn bounds(&mut self, at: u64, req: u64, r: &super::Req, version: u64, route: &str) {
        let Some(id) = self.route_id(version, route) else {
            return;
        };
        let tokens = TokenCounts {
            input: r.max_usage.input_tokens,
            output: r.max_usage.output_tokens,
        };
        let b = route_bounds(&self.plan(version), id, tokens);
        let elapsed = at - r.start;
        if r.attempts > b.attempts {
            let msg = format!(
                "{} attempts, explain says at most {}",
                r.attempts, b.attempts
            );
            self.flag(Promise::ExplainAttempts, at, Some(req), msg);
        }
        if elapsed > crate::exec::clock::nanos(b.latency) + TICK_NS {
            let msg = format!("{:.3}ms, explain says at most {:?}", ms(elapsed), b.latency);
            self.flag(Promise::ExplainLatency, at, Some(req), msg);
        }
        if let Some(worst) = b.worst_cost_usd {
            let cost = r.cost_nanos as f64 / 1e9;
            if cost > worst + 1e-9 * f64::from(r.attempts.max(1)) {
                let msg =
                    format!("cost ${cost:.9}, explain says at most ${worst:.9} for {tokens:?}");
                self.flag(Promise::ExplainCost, at, Some(req), msg);
            }
        }
    }
}
