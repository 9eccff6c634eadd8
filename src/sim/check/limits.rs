//! Promises over many requests: rate windows, concurrency, retry budgets, budgets,
//! breakers and the lowest-latency strategy.

use std::collections::{BTreeMap, HashMap};

use super::{Att, Checker};
use crate::exec::breaker::BreakerState;
use crate::exec::state::BreakerSlot;
use crate::exec::{Executor, Usage};
use crate::plan::Plan;
use crate::policy::Strategy;
use crate::sim::promise::Promise;

/// A broken promise and what was seen.
pub(super) type Found = (Promise, String);

/// Calls admitted to one upstream with a request rate, in the O(1) form of "in every
/// window": with admissions `i` at times `t_i`, the window `[t_i, t_j]` holds `j - i + 1`,
/// so every window holds at most `rate·w + burst` iff for every `j`:
/// `(j + 1) - rate·t_j + max_{i ≤ j}(rate·t_i - i) ≤ burst`.
#[derive(Debug)]
struct RateTrack {
    per_second: f64,
    burst: f64,
    count: u64,
    best: f64,
}

/// Calls admitted to one upstream with a token limit: (admitted at, estimate, charge,
/// final). The charge is the estimate until the call settles, then the smaller of the two;
/// it is final once its attempt (and stream) ended. Final calls at the front are folded
/// into `scan` and dropped, so what is kept follows the calls in flight, not the run.
#[derive(Debug)]
struct TokenTrack {
    per_minute: f64,
    /// Sequence number of `calls[0]` (slots are sequence numbers).
    base: usize,
    calls: std::collections::VecDeque<(u64, u64, u64, bool)>,
    scan: TokenScan,
}

/// The state of [`Limits::token_windows`]'s scan over the calls folded so far.
#[derive(Debug, Clone, Copy)]
struct TokenScan {
    sum: f64,
    best: f64,
    worst: f64,
}

impl TokenScan {
    const START: TokenScan = TokenScan {
        sum: 0.0,
        best: f64::NEG_INFINITY,
        worst: 0.0,
    };

    /// One more call, `rate` tokens per ns.
    fn fold(&mut self, rate: f64, at: u64, charge: u64) {
        self.best = self.best.max(rate * at as f64 - self.sum);
        self.sum += charge as f64;
        self.worst = self.worst.max(self.sum - rate * at as f64 + self.best);
    }
}

impl TokenTrack {
    fn new(per_minute: f64, base: usize) -> Self {
        TokenTrack {
            per_minute,
            base,
            calls: std::collections::VecDeque::new(),
            scan: TokenScan::START,
        }
    }
}

#[derive(Debug, Default)]
struct RetryTrack {
    deposits: u64,
    withdrawals: u64,
}

/// A budget window: spend of the calls admitted in it, what they under-reserved, calls.
#[derive(Debug, Default)]
struct Window {
    spend: u64,
    excess: u64,
    calls: u64,
}

/// A lowest-latency route's current run of failed first attempts on one target.
#[derive(Debug, Default)]
struct Streak {
    model: String,
    failures: u32,
    /// Another target of the route succeeded during the run.
    other_ok: bool,
    /// When the run first held [`STREAK`] failures and another target's success: a
    /// request that chose its order after that is judged (one that chose before, while
    /// those attempts were still running, could not know).
    armed_at: Option<u64>,
}

impl Streak {
    fn arm(&mut self, at: u64) {
        if self.armed_at.is_none() && self.failures >= STREAK && self.other_ok {
            self.armed_at = Some(at);
        }
    }
}

/// Failed first choices in a row, while another target succeeds, past which
/// `lowest-latency` is taken to ignore failures.
const STREAK: u32 = 8;

#[derive(Debug, Default)]
pub(super) struct Limits {
    in_flight: HashMap<String, u32>,
    rates: HashMap<String, RateTrack>,
    tokens: BTreeMap<String, TokenTrack>,
    retries: HashMap<String, RetryTrack>,
    windows: BTreeMap<(String, u64), Window>,
    streaks: HashMap<String, Streak>,
    /// Breakers by name: (raw state, transitions) last seen, and the plan version.
    breakers: HashMap<String, (BreakerState, u64)>,
    breaker_version: u64,
    probes: HashMap<String, u32>,
    /// The simulated shared-state backend, if the run has one.
    pub(super) backend: Option<crate::sim::SharedScript>,
}

/// How a `state = "shared"` entity is held to its bound: like a local one, plus this slack
/// (the rate limiter's lease), or not at all (`None`) when the backend may fail, lose
/// settlements or answer after the policy's `timeout` — then `fail_mode` decides, and
/// the cluster bound of `docs/policy.md` holds only while the backend answers.
fn shared_slack(plan: &Plan, backend: Option<&crate::sim::SharedScript>) -> Option<u32> {
    let (Some(redis), Some(b)) = (&plan.redis, backend) else {
        // No backend: shared entities act as local ones.
        return Some(0);
    };
    let timeout = u64::try_from(redis.timeout.as_millis()).unwrap_or(u64::MAX);
    let reliable =
        b.fail == 0.0 && b.lose_settlements == 0.0 && b.down.is_empty() && b.latency_ms.1 < timeout;
    reliable.then(|| redis.lease.saturating_sub(1))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Limits {
    /// A request arrived on `route`: a deposit in its retry budget.
    pub(super) fn deposit(&mut self, plan: &Plan, route: &str, _at: u64) {
        let has = plan
            .route_by_name(route)
            .is_some_and(|r| plan.retry(plan.route(r).retry).budget.is_some());
        if has {
            self.retries.entry(route.into()).or_default().deposits += 1;
        }
    }

    /// An attempt after the request's first: a withdrawal from its first route's budget.
    pub(super) fn withdraw(&mut self, plan: &Plan, route: &str, at: u64) -> Option<Found> {
        let id = plan.route_by_name(route)?;
        let b = plan.retry(plan.route(id).retry).budget?;
        let t = self.retries.entry(route.into()).or_default();
        t.withdrawals += 1;
        let bound =
            b.ratio * t.deposits as f64 + b.min_per_second * (secs(at) + b.ttl.as_secs_f64());
        (t.withdrawals as f64 > bound + 1e-9).then(|| {
            (
                Promise::RetryBudget,
                format!(
                    "route {route}: {} retries for {} requests at {:.3}s; bound {bound:.2} (ratio {}, min_per_second {}, ttl {:?})",
                    t.withdrawals, t.deposits, secs(at), b.ratio, b.min_per_second, b.ttl
                ),
            )
        })
    }

    /// Reserves the attempt's worst case in every budget covering it: (name, window,
    /// reserved nano-dollars), as the executor does.
    pub(super) fn reserve(
        &mut self,
        plan: &Plan,
        att: &Att,
        caller: Option<&str>,
        (input, output): (u64, u64),
        (admitted, started): (u64, u64),
    ) -> Vec<(String, (u64, u64), u64)> {
        let (Some(rid), Some(mid)) = (
            plan.route_by_name(&att.route),
            plan.model_by_name(&att.model),
        ) else {
            return Vec::new();
        };
        let Some(price) = plan.model(mid).price else {
            return Vec::new();
        };
        let up = plan.model(mid).upstream;
        let worst = price
            .cost(Usage {
                input_tokens: input,
                output_tokens: output,
            })
            .nanos();
        plan.route(rid)
            .budgets
            .iter()
            .map(|&b| &plan.budgets[b.index()])
            .filter(|b| b.covers(rid, mid, up, caller))
            .filter(|b| {
                b.state != crate::plan::StateScope::Shared
                    || shared_slack(plan, self.backend.as_ref()).is_some()
            })
            .map(|b| {
                let w = crate::exec::clock::nanos(b.window).max(1);
                // A local ledger decides when admission starts; a shared one when the
                // backend runs its script, somewhere before the call starts.
                let window = match b.state {
                    crate::plan::StateScope::Shared => (admitted / w, started / w),
                    _ => (admitted / w, admitted / w),
                };
                (b.name.clone(), window, worst)
            })
            .collect()
    }

    /// Books an attempt's actual cost in a budget window; says if the window broke its bound.
    pub(super) fn spend(
        &mut self,
        plan: &Plan,
        name: &str,
        (first, last): (u64, u64),
        reserved: u64,
        actual: u64,
    ) -> Option<String> {
        let b = &plan.budgets[plan.budget_by_name(name)?.index()];
        let limit = crate::exec::price::Usd::from_dollars(b.limit_usd)
            .ok()?
            .nanos();
        if first != last {
            // Which window took it is not observed: its spend is counted in neither, and
            // what it under-reserved widens both bounds (sound for each window's true set).
            for k in [first, last] {
                let w = self.windows.entry((name.into(), k)).or_default();
                w.excess += actual.saturating_sub(reserved);
                w.calls += 1;
            }
            return None;
        }
        let window = first;
        let w = self.windows.entry((name.into(), window)).or_default();
        w.spend += actual;
        w.excess += actual.saturating_sub(reserved);
        w.calls += 1;
        // One nano-dollar of rounding per call.
        let bound = limit + w.excess + w.calls;
        (w.spend > bound).then(|| {
            format!(
                "budget {name}: window {window} spent ${:.9} over {} calls; limit ${:.9} + under-reserved ${:.9}",
                w.spend as f64 / 1e9,
                w.calls,
                limit as f64 / 1e9,
                w.excess as f64 / 1e9
            )
        })
    }

    /// Rate window and concurrency cap of the attempt's upstream.
    pub(super) fn attempt_start(&mut self, plan: &Plan, att: &Att, at: u64) -> Vec<Found> {
        let mut found = Vec::new();
        let Some(uid) = plan.upstream_by_name(&att.upstream) else {
            return found;
        };
        let limits = &plan.upstream(uid).limits;
        let n = self.in_flight.entry(att.upstream.clone()).or_default();
        *n += 1;
        if let Some(cap) = limits.concurrency {
            if *n > cap {
                found.push((
                    Promise::Concurrency,
                    format!("upstream {}: {n} calls in flight, cap {cap}", att.upstream),
                ));
            }
        }
        let shared = limits.state == crate::plan::StateScope::Shared;
        let slack = if shared {
            shared_slack(plan, self.backend.as_ref())
        } else {
            Some(0)
        };
        if let (Some(rate), Some(slack)) = (limits.rate, slack) {
            let rate = crate::plan::Rate {
                burst: rate.burst.saturating_add(slack),
                ..rate
            };
            let t = self
                .rates
                .entry(att.upstream.clone())
                .or_insert_with(|| RateTrack {
                    per_second: rate.per_second,
                    burst: f64::from(rate.burst),
                    count: 0,
                    best: f64::NEG_INFINITY,
                });
            if t.per_second != rate.per_second || t.burst != f64::from(rate.burst) {
                // A reload changed the rate: the promise starts again.
                *t = RateTrack {
                    per_second: rate.per_second,
                    burst: f64::from(rate.burst),
                    count: 0,
                    best: f64::NEG_INFINITY,
                };
            }
            let x = t.per_second * secs(at);
            t.best = t.best.max(x - t.count as f64);
            t.count += 1;
            let worst = t.count as f64 - x + t.best;
            if worst > t.burst + 1e-6 {
                found.push((
                    Promise::RateWindow,
                    format!(
                        "upstream {}: a window holds {worst:.2} calls beyond rate·w; burst is {} (rate {}/s)",
                        att.upstream, t.burst, t.per_second
                    ),
                ));
            }
        }
        found
    }

    /// Books the attempt's estimate on its upstream's token account; returns its slot.
    pub(super) fn reserve_tokens(
        &mut self,
        plan: &Plan,
        upstream: &str,
        estimate: u64,
        at: u64,
    ) -> Option<usize> {
        let uid = plan.upstream_by_name(upstream)?;
        let limits = &plan.upstream(uid).limits;
        if limits.state == crate::plan::StateScope::Shared {
            shared_slack(plan, self.backend.as_ref())?;
        }
        let per_minute = limits.tokens_per_minute?.ceil().max(1.0);
        let t = self
            .tokens
            .entry(upstream.into())
            .or_insert_with(|| TokenTrack::new(per_minute, 0));
        if t.per_minute != per_minute {
            // A reload changed the limit: the promise starts again (calls admitted before
            // keep their slots, which no longer point into it).
            *t = TokenTrack::new(per_minute, t.base + t.calls.len());
        }
        t.calls.push_back((at, estimate, estimate, false));
        Some(t.base + t.calls.len() - 1)
    }

    /// The attempt (and its stream) ended: its charge is final.
    pub(super) fn finalize_tokens(&mut self, att: &Att) {
        let Some(slot) = att.tokens else { return };
        let Some(t) = self.tokens.get_mut(&att.upstream) else {
            return;
        };
        if let Some(c) = slot.checked_sub(t.base).and_then(|i| t.calls.get_mut(i)) {
            c.3 = true;
        }
        let rate = t.per_minute / 60e9;
        while let Some(&(at, _, charge, true)) = t.calls.front() {
            t.scan.fold(rate, at, charge);
            t.calls.pop_front();
            t.base += 1;
        }
    }

    /// The tokens an attempt turned out to use (`None`: unknown, the estimate stays).
    pub(super) fn settle_tokens(&mut self, att: &Att, actual: Option<u64>) {
        let (Some(slot), Some(actual)) = (att.tokens, actual) else {
            return;
        };
        if let Some(c) = self.tokens.get_mut(&att.upstream).and_then(|t| {
            let i = slot.checked_sub(t.base)?;
            t.calls.get_mut(i)
        }) {
            c.2 = c.1.min(actual);
        }
    }

    /// Every window of every token account, in O(n): with prefix sums `S`, the window
    /// `[t_i, t_j]` holds `S_j - S_(i-1)`, within `rate·(t_j - t_i) + burst` for all `i ≤ j`
    /// iff `(S_j - rate·t_j) + max_(i ≤ j)(rate·t_i - S_(i-1)) ≤ burst`.
    pub(super) fn token_windows(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (name, t) in &self.tokens {
            let rate = t.per_minute / 60e9;
            let mut scan = t.scan;
            for &(at, _, charge, _) in &t.calls {
                scan.fold(rate, at, charge);
            }
            let worst = scan.worst;
            // The limiter rounds each token's time up: no slack needed but float error.
            if worst > t.per_minute + 0.5 {
                found.push(format!(
                    "upstream {name}: a window holds {worst:.0} tokens beyond rate·w; the bucket is {} (tokens_per_minute)",
                    t.per_minute
                ));
            }
        }
        found
    }

    pub(super) fn attempt_end(&mut self, att: &Att) {
        if let Some(n) = self.in_flight.get_mut(&att.upstream) {
            *n = n.saturating_sub(1);
        }
        for b in &att.probes {
            if let Some(n) = self.probes.get_mut(b) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn lowest_latency(plan: &Plan, att: &Att) -> bool {
        plan.route_by_name(&att.route)
            .is_some_and(|r| plan.route(r).strategy == Strategy::LowestLatency)
    }

    /// A request's first attempt on a lowest-latency route goes to a target that has
    /// failed as first choice [`STREAK`] times in a row while another target succeeded.
    /// The order was chosen when the request started (`req_start`): only a run armed by
    /// then counts.
    pub(super) fn lowest_latency_start(
        &mut self,
        plan: &Plan,
        att: &Att,
        first: bool,
        req_start: u64,
    ) -> Option<Found> {
        if !first || att.hedge || !Self::lowest_latency(plan, att) {
            return None;
        }
        let s = self.streaks.get(&att.route)?;
        let armed = s.armed_at.is_some_and(|t| t <= req_start);
        (s.model == att.model && armed).then(|| {
            (
                Promise::LowestLatencyFailures,
                format!(
                    "route {}: {} tried first again after failing first {} times in a row while another target succeeded",
                    att.route, att.model, s.failures
                ),
            )
        })
    }

    pub(super) fn lowest_latency_end(&mut self, plan: &Plan, att: &Att, ok: bool, at: u64) {
        if !Self::lowest_latency(plan, att) {
            return;
        }
        let s = self.streaks.entry(att.route.clone()).or_default();
        match (ok, s.model == att.model) {
            (true, true) => *s = Streak::default(),
            (true, false) => s.other_ok = true,
            (false, true) if att.number == 1 && !att.hedge => s.failures += 1,
            (false, false) if att.number == 1 && !att.hedge => {
                *s = Streak {
                    model: att.model.clone(),
                    failures: 1,
                    ..Streak::default()
                }
            }
            (false, _) => {}
        }
        s.arm(at);
    }
}

/// The breakers covering a call to `model` through `route` in the current runtime: the
/// route's own for the target (else the upstream's), and the model's.
fn slots<'r>(
    rt: &'r crate::exec::state::Runtime,
    route: &str,
    model: &str,
) -> Vec<&'r BreakerSlot> {
    let plan = &rt.plan;
    let (Some(rid), Some(mid)) = (plan.route_by_name(route), plan.model_by_name(model)) else {
        return Vec::new();
    };
    let ti = plan.route(rid).targets.iter().position(|t| t.model == mid);
    let up = &rt.upstreams[plan.model(mid).upstream.index()];
    let first = ti
        .and_then(|i| rt.routes[rid.index()].breakers.get(i))
        .or(up.breaker.as_ref());
    [first, rt.models[mid.index()].breaker.as_ref()]
        .into_iter()
        .flatten()
        .collect()
}

/// The breaker's own state: open until its deadline even when `state()` already reports
/// half-open (the transition happens on the next acquire).
fn raw(s: &crate::exec::breaker::BreakerStats) -> BreakerState {
    if s.open_until.is_some() {
        BreakerState::Open
    } else {
        s.state
    }
}

impl Checker {
    /// No call while a breaker covering it is open; probes within `probes`.
    pub(super) fn breakers_at_start(
        &mut self,
        att: &mut Att,
        exec: &Executor,
        at: u64,
    ) -> Vec<Found> {
        let rt = exec.runtime();
        let mut found = Vec::new();
        if rt.version != att.version {
            return found;
        }
        for slot in slots(&rt, &att.route, &att.model) {
            let s = slot.breaker.snapshot(at);
            let probes = slot.breaker.config().probes;
            match s.state {
                BreakerState::Open => found.push((
                    Promise::Breaker,
                    format!(
                        "a call to {} while breaker `{}` is open",
                        att.model, slot.name
                    ),
                )),
                BreakerState::HalfOpen => {
                    // Per half-open period: a probe of an earlier one is not counted.
                    let key = format!("{}#{}", slot.name, s.transitions);
                    let n = self.limits.probes.entry(key.clone()).or_default();
                    *n += 1;
                    att.probes.push(key);
                    if *n > probes || s.probes_admitted > probes {
                        found.push((
                            Promise::Breaker,
                            format!(
                                "breaker `{}` half-open with {} probes in flight ({} admitted), probes = {probes}",
                                slot.name, n, s.probes_admitted
                            ),
                        ));
                    }
                }
                BreakerState::Closed => {}
            }
        }
        found
    }

    /// Legal transitions only, seen between two events (one step at a time; a jump of
    /// more than one transition cannot be judged and is skipped).
    pub(super) fn observe_breakers(&mut self, at: u64, exec: &Executor) {
        let rt = exec.runtime();
        if rt.version != self.limits.breaker_version {
            self.limits.breakers.clear();
            self.limits.probes.clear();
            self.limits.breaker_version = rt.version;
        }
        let all = rt
            .upstreams
            .iter()
            .filter_map(|u| u.breaker.as_ref())
            .chain(rt.models.iter().filter_map(|m| m.breaker.as_ref()))
            .chain(rt.routes.iter().flat_map(|r| r.breakers.iter()));
        let mut found = Vec::new();
        for slot in all {
            let s = slot.breaker.snapshot(at);
            let now = (raw(&s), s.transitions);
            let before = self.limits.breakers.insert(slot.name.clone(), now);
            let Some((from, n)) = before else { continue };
            if now.1 != n + 1 {
                continue;
            }
            let legal = matches!(
                (from, now.0),
                (BreakerState::Closed, BreakerState::Open)
                    | (BreakerState::Open, BreakerState::HalfOpen)
                    | (BreakerState::HalfOpen, BreakerState::Open)
                    | (BreakerState::HalfOpen, BreakerState::Closed)
            );
            if !legal {
                found.push(format!(
                    "breaker `{}` went {} → {}",
                    slot.name,
                    from.name(),
                    now.0.name()
                ));
            }
        }
        for msg in found {
            self.flag(Promise::BreakerTransition, at, None, msg);
        }
    }
}
