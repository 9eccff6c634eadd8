//! Settling an attempt: its outcome recorded everywhere it counts — breakers, the model's
//! stats and latency, the spend report, budgets and the token limiter (actual cost and use
//! replace the reservations), the rate limiter tightened by the upstream's headers.

use std::time::Duration;

use super::admit::Admission;
use super::outcome::{Done, Failure, FailureKind, Usage};
use super::price::{SpendKey, Usd};
use super::state::Runtime;
use crate::plan::{ModelId, RouteId};

/// How an attempt settled.
#[derive(Clone, Copy)]
pub(super) enum Settled<'f> {
    Ok,
    /// A success whose outcome is final only later (see [`Done::pending`]).
    Pending,
    Failed(&'f Failure),
}

/// An attempt that ended: where it ran, how long it took, and when it ended.
#[derive(Clone, Copy)]
pub(super) struct Ended {
    pub route: RouteId,
    pub model: ModelId,
    pub elapsed: Duration,
    pub now: u64,
}

/// Whether an attempt that settled so keeps its reservations in a
/// [`StreamHold`](super::StreamHold): a pending success (a stream) with no usage yet.
pub(super) fn holds(outcome: Settled<'_>, usage: Option<Usage>) -> bool {
    matches!(outcome, Settled::Pending) && usage.is_none()
}

/// Settles a success; returns its cost in USD.
pub(super) fn success<T>(rt: &Runtime, adm: &mut Admission<'_>, done: &Done<T>, end: Ended) -> f64 {
    let ms = &rt.models[end.model.index()];
    ms.successes.incr();
    ms.observe_latency(end.elapsed);
    ms.observe_outcome(false);
    let outcome = if done.pending {
        Settled::Pending
    } else {
        Settled::Ok
    };
    let rate_limit = done.rate_limit.map(|r| (r.remaining, r.reset));
    settle(rt, adm, end, (outcome, done.usage, rate_limit))
}

/// Settles a failure; returns its cost in USD (a failure may still report usage).
pub(super) fn failure(rt: &Runtime, adm: &mut Admission<'_>, f: &Failure, end: Ended) -> f64 {
    let ms = &rt.models[end.model.index()];
    ms.failures.incr();
    let r = rt.plan.route(end.route);
    if r.failover_on.matches(&f.view()) {
        // A failure of the target itself (one the route would move away from) counts in
        // the latency score as its per-try timeout, so lowest-latency does not keep
        // choosing a target that fails fast.
        let per_try = r
            .targets
            .iter()
            .find(|t| t.model == end.model)
            .map(|t| t.timeouts.per_try);
        ms.observe_latency(per_try.unwrap_or_default().max(end.elapsed));
        ms.observe_outcome(true);
    }
    let rate_limit = f.rate_limit.map(|r| (r.remaining, r.reset));
    settle(rt, adm, end, (Settled::Failed(f), f.usage, rate_limit))
}

/// What an attempt reported: how it settled, its usage, the upstream's rate-limit headers.
type Report<'f> = (Settled<'f>, Option<Usage>, Option<(u64, Duration)>);

/// Records an attempt's outcome everywhere it counts; returns its cost in USD. Takes the
/// breaker permits and reservations out of `adm` (by reference: moving it is a memcpy);
/// the caller drops what remains (concurrency permit, in-flight count) right after.
fn settle(rt: &Runtime, adm: &mut Admission<'_>, end: Ended, report: Report<'_>) -> f64 {
    let (outcome, usage, rate_limit) = report;
    let failure = match outcome {
        Settled::Failed(f) => Some(f),
        Settled::Ok | Settled::Pending => None,
    };
    for (slot, permit) in adm.breakers.iter_mut().filter_map(Option::take) {
        if let Settled::Pending = outcome {
            slot.breaker.record_pending(permit, end.elapsed, end.now);
            continue;
        }
        let trips = failure.is_some_and(|f| slot.policy.trip_on.matches(&f.view()));
        slot.breaker.record(permit, trips, end.elapsed, end.now);
    }
    let cost = usage.map_or(Usd::ZERO, |u| record_spend(rt, end.route, end.model, u));
    // A pending success without usage (a stream) keeps its budget and token reservations:
    // the caller moves them into the served value's hold.
    if !holds(outcome, usage) {
        reservations(adm, cost, usage, failure, end.now);
    }
    let upstream = rt.plan.model(end.model).upstream;
    if let (Some((remaining, reset)), Some(rate)) =
        (rate_limit, &rt.upstreams[upstream.index()].rate)
    {
        if rt.plan.upstream(upstream).rate_limit_headers {
            rate.tighten(remaining, reset, end.now);
        }
    }
    cost.as_dollars()
}

/// Replaces an attempt's budget and token reservations by what it actually cost and used.
fn reservations(
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
            None if failure.is_some_and(|f| f.kind == FailureKind::Connect) => t.settle(0, now),
            None => {}
        }
    }
}

/// Prices `usage` on `model` and records it in the spend report; returns the cost.
pub(super) fn record_spend(rt: &Runtime, route: RouteId, model: ModelId, usage: Usage) -> Usd {
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
