//! Admission: every permit one attempt needs, taken by one sequence of checks.
//!
//! The sequence ([`Stage`]) is the same for every target, whatever is local or shared:
//! the target itself (context window, breakers) → each budget covering the call (worst-case
//! cost reserved) → the concurrency cap → the token limiter → the request rate → the
//! breakers again if admission awaited anything → counted in flight. Every limiter and budget is a
//! *slot* that is local (this process) or shared (the state backend); a stage reads its
//! slot and decides with the same code either way.
//!
//! [`Admitting::advance`] walks the sequence without awaiting anything. As long as every
//! slot it meets is local and no limiter asks to wait, it runs to the end: that is the
//! common path, with no future at all. When a slot is shared, or a local limiter asks to
//! wait (`on_limit = "wait"`), it stops with a [`Pause`]; [`Admitting::finish`] awaits it
//! (the one place admission waits, on the executor's clock, cut at the request's deadline)
//! and resumes the sequence where it stopped, handing the stage the answer.
//!
//! Permits go into an [`Admission`] that the caller keeps in place (moving it is a memcpy of
//! over 200 bytes); a refusal leaves it empty.

mod stages;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use smallvec::SmallVec;

use super::breaker::BreakerPermit;
use super::clock::Clock;
use super::error::SkipReason;
use super::limit::{ConcurrencyGuard, ConcurrencyLimiter, LimitError, OnLimit, TokenReservation};
use super::price::{BudgetReservation, Usd};
use super::request::Request;
use super::shared::{
    SharedBudget, SharedRate, SharedReservation, SharedTokenReservation, SharedTokens,
};
use super::state::{BreakerSlot, Runtime, UpstreamState};
use super::stripe::Counter;
use crate::plan::{Model, ModelId, RouteId, UpstreamId};

/// Breaker permits, the first (route or upstream) and the model's.
pub(super) type Breakers<'r> = [Option<(&'r BreakerSlot, BreakerPermit<'r>)>; 2];

/// Permits held for one attempt; dropping them releases everything not yet settled.
pub(super) struct Admission<'r> {
    /// Clock reading when the attempt was admitted (after any queueing).
    pub at: u64,
    pub breakers: Breakers<'r>,
    pub concurrency: Option<ConcurrencyGuard<'r>>,
    pub tokens: Option<Tokens<'r>>,
    pub budgets: SmallVec<[BudgetReservation<'r>; 2]>,
    pub shared_budgets: SmallVec<[SharedReservation<'r>; 1]>,
    pub in_flight: Option<InFlight<'r>>,
}

impl<'r> Admission<'r> {
    /// No permit yet.
    #[inline]
    pub fn empty(at: u64) -> Self {
        Admission {
            at,
            breakers: [None, None],
            concurrency: None,
            tokens: None,
            budgets: SmallVec::new(),
            shared_budgets: SmallVec::new(),
            in_flight: None,
        }
    }

    /// Gives back every permit taken so far (a refused admission): nothing was sent, so
    /// the tokens reserved go back in full.
    fn refuse(&mut self, now: u64) {
        if let Some(t) = self.tokens.take() {
            t.settle(0, now);
        }
        self.breakers = [None, None];
        self.concurrency = None;
        self.budgets.clear();
        self.shared_budgets.clear();
        self.in_flight = None;
    }

    /// Returns the concurrency permit and the in-flight count: what settling an attempt
    /// leaves. In place, because `drop(adm)` would move (memcpy) it first.
    pub fn release(&mut self) {
        self.concurrency = None;
        self.in_flight = None;
    }
}

/// Tokens reserved for one attempt, on the upstream's local or shared limiter.
pub(crate) enum Tokens<'r> {
    Local(TokenReservation<'r>),
    Shared(SharedTokenReservation<'r>),
}

impl Tokens<'_> {
    /// Replaces the estimate by the `actual` tokens used.
    pub fn settle(self, actual: u64, now: u64) {
        match self {
            Tokens::Local(r) => r.settle(actual, now),
            Tokens::Shared(r) => r.settle(actual, now),
        }
    }
}

/// Counts a call in flight on a model while alive.
pub(super) struct InFlight<'r>(&'r AtomicU64);

impl<'r> InFlight<'r> {
    /// Counts the call on this thread's stripe, and uncounts it there when dropped
    /// (wherever that is).
    fn enter(count: &'r Counter) -> Self {
        let stripe = count.here();
        stripe.fetch_add(1, Relaxed);
        InFlight(stripe)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Why admission refused a target.
pub(super) enum Refusal {
    /// The request's deadline came while admission waited.
    Deadline,
    /// The target cannot take the call now (breaker open, limited, context window).
    Skip(SkipReason),
    /// A budget covering the call is spent, and it reroutes the request.
    Reroute { to: RouteId, budget: String },
    /// A budget covering the call is spent, and it rejects the request.
    Reject { budget: String },
}

/// A limiter's refusal as a target skip.
pub(super) fn limited(e: LimitError) -> Refusal {
    Refusal::Skip(SkipReason::Limited(e.to_string()))
}

/// Where the sequence of checks stands (in the order they run: the order of the variants;
/// the last step, breakers again and in flight, never pauses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Context window and breakers.
    Target,
    /// The budgets covering the call, from this position of the route's list on.
    Budgets(u32),
    Concurrency,
    Tokens,
    Rate,
}

/// What the sequence stopped to await; [`Admitting::finish`] does it and resumes.
pub(super) enum Pause<'r> {
    /// A concurrency permit, waited for up to this long.
    Concurrency(&'r ConcurrencyLimiter, Duration),
    /// This long (a limiter's refill), then the same stage again.
    Sleep(Duration),
    /// A shared budget's reservation of this worst-case cost.
    Budget(&'r SharedBudget, Usd),
    /// A shared token limiter's reservation of this many tokens.
    Tokens(&'r SharedTokens, u64),
    /// A shared rate limiter's check.
    Rate(&'r Arc<SharedRate>),
}

/// What an awaited [`Pause`] answered, for the stage that asked.
enum Answer<'r> {
    Concurrency(Result<ConcurrencyGuard<'r>, LimitError>),
    Budget(Option<SharedReservation<'r>>),
    Tokens(Result<SharedTokenReservation<'r>, LimitError>),
    Rate(Result<(), LimitError>),
}

/// How the sequence ended, or that it must await something first.
pub(super) enum Progress<'r> {
    /// Every permit taken.
    Ready,
    /// The target is refused; nothing is held.
    Refused(Refusal),
    /// Await this ([`Admitting::finish`]), then go on.
    Await(Pause<'r>),
}

/// Why the sequence stopped before the end.
enum Halt<'r> {
    /// Await this, then resume at this stage.
    Pause(Stage, Pause<'r>),
    Refuse(Refusal),
}

/// One admission in progress: the target, the request, and where the sequence stands.
pub(super) struct Admitting<'a, 'r> {
    rt: &'r Runtime,
    clock: &'a dyn Clock,
    req: &'a Request,
    route: RouteId,
    ti: usize,
    /// The target's model and its upstream, looked up once.
    model_id: ModelId,
    model: &'r Model,
    up: UpstreamId,
    ups: &'r UpstreamState,
    deadline: u64,
    /// The reading admission started at: every wait comes out of one queue timeout from it.
    start: u64,
    /// The current reading: moves on after every wait and round trip.
    now: u64,
    /// The upstream's `on_limit`, its queue timeout cut at the deadline.
    on_limit: OnLimit,
    stage: Stage,
    answer: Option<Answer<'r>>,
    /// Whether the sequence awaited anything (other tasks ran meanwhile, even if the
    /// clock did not move: a breaker may have opened).
    awaited: bool,
}

impl<'a, 'r> Admitting<'a, 'r> {
    /// An admission to target `ti` of `route`, starting at `now`.
    #[inline]
    pub fn new(
        rt: &'r Runtime,
        clock: &'a dyn Clock,
        req: &'a Request,
        (route, ti): (RouteId, usize),
        now: u64,
        deadline: u64,
    ) -> Self {
        let model_id = rt.plan.route(route).targets[ti].model;
        let model = rt.plan.model(model_id);
        let up = model.upstream;
        let left = Duration::from_nanos(deadline.saturating_sub(now));
        let on_limit = rt.plan.upstream(up).limits.on_limit.capped(left);
        Admitting {
            rt,
            clock,
            req,
            route,
            ti,
            model_id,
            model,
            up,
            ups: &rt.upstreams[up.index()],
            deadline,
            start: now,
            now,
            on_limit,
            stage: Stage::Target,
            answer: None,
            awaited: false,
        }
    }

    /// Walks the sequence from where it stands without awaiting; fills `adm` in place.
    #[inline]
    pub fn advance(&mut self, adm: &mut Admission<'r>) -> Progress<'r> {
        match self.sequence(adm) {
            Ok(()) => Progress::Ready,
            Err(Halt::Pause(stage, pause)) => {
                self.stage = stage;
                Progress::Await(pause)
            }
            Err(Halt::Refuse(r)) => {
                adm.refuse(self.now);
                Progress::Refused(r)
            }
        }
    }

    /// The checks in their order, from the stage the sequence stands at (a stage that
    /// paused runs again with its answer).
    #[inline]
    fn sequence(&mut self, adm: &mut Admission<'r>) -> Result<(), Halt<'r>> {
        let from = self.stage;
        if from == Stage::Target {
            self.target(adm)?;
        }
        if from <= Stage::Budgets(u32::MAX) {
            let pos = match from {
                Stage::Budgets(pos) => pos,
                _ => 0,
            };
            self.budgets(adm, pos)?;
        }
        if from <= Stage::Concurrency {
            self.concurrency(adm)?;
        }
        if from <= Stage::Tokens {
            self.tokens(adm)?;
        }
        if from <= Stage::Rate {
            self.rate()?;
        }
        self.finish_stage(adm)
    }

    /// Runs the rest of the sequence, awaiting `pause` and whatever else it asks for; cut
    /// at the request's deadline (a cut gives back every permit taken).
    pub async fn finish(
        mut self,
        adm: &mut Admission<'r>,
        pause: Pause<'r>,
    ) -> Result<(), Refusal> {
        let mut cut = self.clock.sleep_until(self.deadline);
        let done = {
            let run = self.resume(adm, pause);
            let mut run = std::pin::pin!(run);
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = run.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                cut.as_mut().poll(cx).map(|()| None)
            })
            .await
        };
        done.unwrap_or_else(|| {
            adm.refuse(self.clock.now());
            Err(Refusal::Deadline)
        })
    }

    /// Admission from scratch to the end, the permits returned by value (the hedge race
    /// holds several at once).
    pub async fn admit(mut self) -> Result<Admission<'r>, Refusal> {
        let mut adm = Admission::empty(self.now);
        match self.advance(&mut adm) {
            Progress::Ready => Ok(adm),
            Progress::Refused(r) => Err(r),
            Progress::Await(p) => self.finish(&mut adm, p).await.map(|()| adm),
        }
    }

    async fn resume(
        &mut self,
        adm: &mut Admission<'r>,
        mut pause: Pause<'r>,
    ) -> Result<(), Refusal> {
        loop {
            self.answer = self.wait(pause).await;
            self.now = self.clock.now();
            self.awaited = true;
            match self.advance(adm) {
                Progress::Ready => return Ok(()),
                Progress::Refused(r) => return Err(r),
                Progress::Await(p) => pause = p,
            }
        }
    }

    /// The one place admission waits: for a permit, a refill or the backend.
    async fn wait(&self, pause: Pause<'r>) -> Option<Answer<'r>> {
        let now = self.now;
        Some(match pause {
            Pause::Sleep(d) => {
                self.clock.sleep(d).await;
                return None;
            }
            Pause::Concurrency(c, up_to) => {
                Answer::Concurrency(c.acquire_guard_on(self.clock, up_to).await)
            }
            Pause::Budget(b, worst) => Answer::Budget(b.reserve(worst, now).await),
            Pause::Tokens(t, n) => Answer::Tokens(t.reserve(n, now).await),
            Pause::Rate(r) => Answer::Rate(r.check(now).await),
        })
    }
}
