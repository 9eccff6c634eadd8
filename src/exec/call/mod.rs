//! One request, from its route to its outcome: the per-request context and its loop.
//!
//! [`Call::run`] is the whole control flow. It picks the route, then repeats one step —
//! [`Call::step`]: admit and run one attempt at the [`Cursor`]'s target — and applies the
//! [`Next`] that step decided: retry the same target after a delay, fail over to the next
//! target, reroute to another route, or stop. Each decision is one short function in
//! [`next`]: [`Call::on_refusal`] (admission said no), [`Call::on_failure`] (the attempt
//! failed); a success ends the request ([`Call::on_success`]). Hedging is [`race`].

mod attempt;
mod next;
mod order;
mod race;
mod trail;

use std::future::Future;
use std::time::Duration;

use super::admit::{Admission, Admitting, Progress};
use super::clock::{nanos, Clock};
use super::error::{ExecError, StopReason};
use super::hold::StreamHold;
use super::outcome::{Done, Failure};
use super::request::Request;
use super::served::Served;
use super::settle::{self, Ended, Settled};
use super::state::Runtime;
use super::target::{AttemptTime, Target};
use crate::plan::RouteId;
use attempt::attempt_timeout;
use next::Next;
pub use order::select_route;
use order::{target_order, Order};
use trail::Trail;

/// Runs one request under `rt` to its outcome (see the [module docs](self)). The context is
/// built inside the future, not moved into it.
pub(super) async fn run<T, F, Fut>(
    rt: &Runtime,
    clock: &dyn Clock,
    req: &Request,
    rng: fastrand::Rng,
    op: &mut F,
) -> Result<Served<T>, ExecError>
where
    F: FnMut(Target, u32) -> Fut,
    Fut: Future<Output = Result<Done<T>, Failure>>,
{
    let start = clock.now();
    let mut call = Call {
        rt,
        clock,
        req,
        start,
        rng,
        trail: Trail::default(),
        fresh: Some(start),
        first_route: None,
        reroutes: 0,
    };
    call.run(op).await
}

/// Most reroutes one request follows (the compiler rejects cycles; this is a guard).
const MAX_REROUTES: usize = 4;

/// One request under one plan: what every decision about it reads.
pub(super) struct Call<'a, 'r: 'a> {
    rt: &'r Runtime,
    clock: &'a dyn Clock,
    req: &'a Request,
    /// The clock reading the request started at.
    start: u64,
    rng: fastrand::Rng,
    trail: Trail,
    /// The reading taken at the start, for the first decision (no second read).
    fresh: Option<u64>,
    /// The request's first route: its retry budget pays for every later attempt.
    first_route: Option<RouteId>,
    reroutes: usize,
}

/// Where a request stands: its route, that route's target order, the target being tried.
struct Cursor {
    route: RouteId,
    deadline: u64,
    order: Order,
    pos: usize,
    /// 1-based attempt number on the current target.
    attempt: u32,
    /// The last backoff on this target (decorrelated jitter grows from it).
    prev_delay: Duration,
    /// Why the request stops if no target is left.
    stop: StopReason,
    /// Whether this route's first attempt was hedged already.
    hedged: bool,
}

impl Cursor {
    #[inline]
    fn target(&self) -> usize {
        self.order[self.pos]
    }
}

/// What one step ended with.
enum Stepped<T> {
    Served(Served<T>),
    Then(Next),
}

/// An attempt (or the winner of a hedge race) that ran.
struct Ran<T> {
    result: Result<Done<T>, Failure>,
    /// The target it ran on.
    ti: usize,
    hedge: bool,
    elapsed: Duration,
    /// When it ended.
    now: u64,
}

impl<'a, 'r> Call<'a, 'r> {
    /// Runs the request to its outcome: see the [module docs](self).
    async fn run<T, F, Fut>(&mut self, op: &mut F) -> Result<Served<T>, ExecError>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        let Some(route) = select_route(&self.rt.plan, self.req) else {
            tracing::debug!(target: "tollgate::exec", "no route matches the request");
            return Err(self.fail(None, StopReason::NoRoute));
        };
        self.first_route = Some(route);
        if let Some(b) = &self.rt.routes[route.index()].retry_budget {
            b.deposit(self.start);
        }
        let mut at = self.enter(route);
        loop {
            let next = match self.step(op, &mut at).await {
                Stepped::Served(s) => return Ok(s),
                Stepped::Then(next) => next,
            };
            match next {
                Next::Retry { after } => {
                    self.clock.sleep(after).await;
                    at.attempt += 1;
                    at.prev_delay = after;
                }
                Next::Failover(why) => {
                    if let Some(why) = why {
                        at.stop = why;
                    }
                    if !self.next_target(&mut at) {
                        let stop = std::mem::replace(&mut at.stop, StopReason::NoTargetAvailable);
                        return Err(self.fail(Some(at.route), stop));
                    }
                }
                Next::Reroute(to) => {
                    self.reroutes += 1;
                    at = self.enter(to);
                }
                Next::Stop(why) => return Err(self.fail(Some(at.route), why)),
            }
        }
    }

    /// Starts on `route`: its first target in its strategy's order.
    #[inline]
    fn enter(&mut self, route: RouteId) -> Cursor {
        self.rt.routes[route.index()].requests.incr();
        if self.reroutes > 0 {
            // The reroute is a move from one target to another.
            self.count_failover(route);
        }
        let total = self.rt.plan.route(route).total_timeout;
        Cursor {
            route,
            deadline: self.start.saturating_add(nanos(total)),
            order: target_order(self.rt, route, self.req, &mut self.rng),
            pos: 0,
            attempt: 1,
            prev_delay: Duration::ZERO,
            stop: StopReason::NoTargetAvailable,
            hedged: false,
        }
    }

    /// Moves to the route's next target; `false` when none is left.
    #[inline]
    fn next_target(&mut self, at: &mut Cursor) -> bool {
        at.pos += 1;
        at.attempt = 1;
        at.prev_delay = Duration::ZERO;
        if at.pos >= at.order.len() {
            return false;
        }
        self.count_failover(at.route);
        true
    }

    #[inline]
    fn count_failover(&mut self, route: RouteId) {
        self.trail.failovers += 1;
        self.rt.routes[route.index()].failovers.incr();
    }

    /// One attempt at the cursor's target: the deadline and the retry budget, admission,
    /// the call (raced by hedges where the route asks), and what comes next.
    async fn step<T, F, Fut>(&mut self, op: &mut F, at: &mut Cursor) -> Stepped<T>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        let now = self.fresh.take().unwrap_or_else(|| self.clock.now());
        if now >= at.deadline {
            return Stepped::Then(Next::Stop(StopReason::Deadline));
        }
        if self.trail.attempts > 0 && !self.withdraw_retry(now) {
            return Stepped::Then(Next::Stop(StopReason::RetryBudgetExhausted));
        }
        let ti = at.target();
        // The admission stays in this binding on the common path (no hedge) and is settled
        // by reference: each move of it is a memcpy. Synchronous unless a limiter must wait
        // or a shared backend is involved; that slow path is boxed so that it does not grow
        // every request's future.
        let mut adm = Admission::empty(now);
        let mut admitting = Admitting::new(
            self.rt,
            self.clock,
            self.req,
            (at.route, ti),
            now,
            at.deadline,
        );
        let admitted = match admitting.advance(&mut adm) {
            Progress::Ready => Ok(()),
            Progress::Refused(r) => Err(r),
            Progress::Await(p) => Box::pin(admitting.finish(&mut adm, p)).await,
        };
        if let Err(r) = admitted {
            return Stepped::Then(self.on_refusal(at, r));
        }
        // Time spent queueing for a permit is the request's: the attempt gets what is left
        // of the deadline after admission, not before it.
        let per_try = self.rt.plan.route(at.route).targets[ti].timeouts.per_try;
        let Some(timeout) = attempt_timeout(per_try, adm.at, at.deadline) else {
            return Stepped::Then(Next::Stop(StopReason::Deadline));
        };
        let queued = Duration::from_nanos(adm.at.saturating_sub(now));
        let time = AttemptTime { timeout, queued };
        self.trail.attempts += 1;
        let hedges = self.hedge_targets(at);
        let ran = if hedges.is_empty() {
            let result = self
                .launch(op, at.route, ti, (at.attempt, false), time)
                .await;
            let now = self.clock.now();
            let elapsed = Duration::from_nanos(now.saturating_sub(adm.at));
            Ran {
                result,
                ti,
                hedge: false,
                elapsed,
                now,
            }
        } else {
            // Boxed: the race is rare and large; inline it would grow every request's future.
            let (ran, raced) = Box::pin(self.race(op, at, (ti, adm, time), &hedges)).await;
            adm = raced;
            ran
        };
        self.conclude(at, &mut adm, ran)
    }

    /// Draws on the first route's retry budget for an attempt after the request's first.
    fn withdraw_retry(&self, now: u64) -> bool {
        let budget = self
            .first_route
            .and_then(|r| self.rt.routes[r.index()].retry_budget.as_ref());
        let ok = budget.is_none_or(|b| b.try_withdraw(now));
        if !ok {
            tracing::warn!(target: "tollgate::exec", "retry budget exhausted");
        }
        ok
    }

    /// Settles what ran and decides: a success is served, a failure goes to
    /// [`on_failure`](Self::on_failure).
    #[inline]
    fn conclude<T>(&mut self, at: &Cursor, adm: &mut Admission<'r>, ran: Ran<T>) -> Stepped<T> {
        let model = self.rt.plan.route(at.route).targets[ran.ti].model;
        let end = Ended {
            route: at.route,
            model,
            elapsed: ran.elapsed,
            now: ran.now,
        };
        match ran.result {
            Ok(done) => Stepped::Served(self.on_success(adm, done, end)),
            Err(f) => {
                self.trail.cost += settle::failure(self.rt, adm, &f, end);
                // Releases the concurrency permit and the in-flight count before any backoff.
                adm.release();
                self.trail
                    .record_failure(self.rt, &f, end, (at.attempt, ran.hedge));
                Stepped::Then(self.on_failure(at, &f, ran.now))
            }
        }
    }

    /// A success ends the request: settled, and its stream's reservations held.
    #[inline]
    fn on_success<T>(&mut self, adm: &mut Admission<'r>, done: Done<T>, end: Ended) -> Served<T> {
        let cost = settle::success(self.rt, adm, &done, end);
        let settled = if done.pending {
            Settled::Pending
        } else {
            Settled::Ok
        };
        // A stream's reservations stay held until its usage is known.
        let hold = if settle::holds(settled, done.usage) {
            let model_default = self.rt.plan().model(end.model).max_tokens;
            let estimate = self
                .req
                .estimated_input_tokens()
                .saturating_add(self.req.reserved_output_tokens_on(model_default));
            StreamHold::take(self.rt, (end.route, end.model), adm, estimate)
        } else {
            StreamHold::default()
        };
        adm.release();
        self.trail.cost += cost;
        Served {
            value: done.value,
            route: end.route,
            model: end.model,
            attempts: self.trail.attempts,
            cost_usd: self.trail.cost,
            usage: done.usage,
            failed: std::mem::take(&mut self.trail.failed),
            plan: self.rt.plan_here(),
            plan_version: self.rt.version,
            hold,
            failovers: self.trail.failovers,
        }
    }

    /// The request's error: why it stopped, and every attempt and skip on the way.
    fn fail(&mut self, route: Option<RouteId>, reason: StopReason) -> ExecError {
        let now = self.clock.now();
        ExecError {
            route: route.map(|r| self.rt.plan.route(r).name.clone()),
            reason,
            attempts: std::mem::take(&mut self.trail.failed),
            skipped: std::mem::take(&mut self.trail.skipped),
            elapsed: Duration::from_nanos(now.saturating_sub(self.start)),
        }
    }

    /// Starts one attempt of `op` at target `ti`, under its time.
    #[inline]
    fn launch<T, F, Fut>(
        &self,
        op: &mut F,
        route: RouteId,
        ti: usize,
        (attempt, hedge): (u32, bool),
        time: AttemptTime,
    ) -> attempt::Attempt<'a, Fut>
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        let t = Target {
            plan: self.rt.plan_here(),
            version: self.rt.version,
            route,
            model: self.rt.plan.route(route).targets[ti].model,
            attempt,
            hedge,
            time,
        };
        attempt::Attempt::new(op(t, attempt), time.timeout, self.clock)
    }
}
