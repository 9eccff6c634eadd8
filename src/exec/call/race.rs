//! Hedging: the request's first attempt raced by up to `max_extra` hedges on the route's
//! next targets, each started `after` the previous one.
//!
//! The first success wins and the others are cancelled (their permits return on drop). A
//! failure whose class the route's `failover_on` does not allow ends the race at once (a
//! hedge never fails over what a failover could not); one it allows starts the next hedge
//! at once when nothing else is running. If all fail, the last failure is returned. Hedges
//! draw on the retry budget as retries do.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::attempt::{attempt_timeout, Attempt};
use super::order::Order;
use super::{Call, Cursor, Ran};
use crate::exec::admit::{Admission, Admitting, Refusal};
use crate::exec::clock::Sleep;
use crate::exec::outcome::{Done, Failure};
use crate::exec::settle::{self, Ended};
use crate::exec::target::{AttemptTime, Target};

/// An attempt in the race, with the permits it holds.
struct Racer<'a, 'r, Fut> {
    ti: usize,
    adm: Admission<'r>,
    hedge: bool,
    fut: Pin<Box<Attempt<'a, Fut>>>,
}

/// A hedge's admission in progress (boxed: it may wait for permits), with the target and
/// the time it was launched.
type Pending<'a, 'r> = (
    usize,
    u64,
    Pin<Box<dyn Future<Output = Result<Admission<'r>, Refusal>> + Send + 'a>>,
);

/// A failed racer kept until we know whether it is the one to return.
type Lost<'r, T> = (Ran<T>, Admission<'r>);

/// What woke the race.
enum Event<T, A> {
    /// Racer `i` finished.
    Done(usize, Result<Done<T>, Failure>),
    /// The hedge timer ran out.
    Launch,
    /// The pending hedge's admission answered.
    Admitted(A),
}

/// The race's state.
struct Race<'a, 'r, T, Fut> {
    running: Vec<Racer<'a, 'r, Fut>>,
    /// The next hedge target (index into the hedge list).
    next: usize,
    timer: Sleep,
    /// A hedge waiting for its permits, polled beside the racers so that its queueing never
    /// holds up the attempts already running.
    pending: Option<Pending<'a, 'r>>,
    last: Option<Lost<'r, T>>,
}

impl<'a, 'r> Call<'a, 'r> {
    /// Races the first attempt (`first`: its target, permits and time) with hedges on
    /// `hedges`; returns what won (or the last failure) and its permits.
    pub(super) async fn race<T, F, Fut>(
        &mut self,
        op: &mut F,
        at: &Cursor,
        first: (usize, Admission<'r>, AttemptTime),
        hedges: &[usize],
    ) -> (Ran<T>, Admission<'r>)
    where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        let after = self
            .rt
            .plan
            .route(at.route)
            .hedge
            .map(|h| h.after)
            .unwrap_or_default();
        let (ti, adm, time) = first;
        let fut = Box::pin(self.launch(op, at.route, ti, (1, false), time));
        let mut race = Race {
            running: vec![Racer {
                ti,
                adm,
                hedge: false,
                fut,
            }],
            next: 0,
            timer: self.clock.sleep(after),
            pending: None,
            last: None,
        };
        loop {
            let over =
                race.running.is_empty() && race.pending.is_none() && race.next >= hedges.len();
            if over {
                // Nothing runs and nothing more may start. `running` only empties through a
                // failure kept in `last`, so this is the last failure.
                if let Some((mut ran, adm)) = race.last.take() {
                    // Not the time it failed: the race went on after that (a hedge
                    // queueing), and what follows (a backoff within the deadline) starts
                    // from the time the race returns.
                    ran.now = self.clock.now();
                    return (ran, adm);
                }
            }
            match race.event(hedges.len()).await {
                Event::Launch => self.launch_hedge(&mut race, at, hedges),
                Event::Admitted(admitted) => {
                    let Some((hti, launched, _)) = race.pending.take() else {
                        continue;
                    };
                    self.start_hedge(op, &mut race, at, (hti, launched), admitted, after);
                }
                Event::Done(i, result) => {
                    if let Some(won) = self.finished(&mut race, at, i, result, hedges.len()) {
                        return won;
                    }
                }
            }
        }
    }

    /// The hedges of the request's first attempt, if the route asks for them: its next
    /// targets, up to `max_extra`.
    #[inline]
    pub(super) fn hedge_targets(&self, at: &mut Cursor) -> Order {
        match self.rt.plan.route(at.route).hedge {
            Some(h) if !at.hedged && self.trail.attempts == 1 => {
                at.hedged = true;
                let rest = &at.order[at.pos + 1..];
                rest.iter().copied().take(h.max_extra as usize).collect()
            }
            _ => Order::new(),
        }
    }

    /// The timer ran out: the next hedge draws on the retry budget and starts its admission.
    fn launch_hedge<T, Fut>(&self, race: &mut Race<'a, 'r, T, Fut>, at: &Cursor, hedges: &[usize]) {
        let hti = hedges[race.next];
        race.next += 1;
        let now = self.clock.now();
        if now >= at.deadline {
            race.next = hedges.len();
            return;
        }
        let budget_ok = self.rt.routes[at.route.index()]
            .retry_budget
            .as_ref()
            .is_none_or(|b| b.try_withdraw(now));
        if !budget_ok {
            race.next = hedges.len();
            return;
        }
        let admitting = Admitting::new(
            self.rt,
            self.clock,
            self.req,
            (at.route, hti),
            now,
            at.deadline,
        );
        race.pending = Some((hti, now, Box::pin(admitting.admit())));
    }

    /// A hedge's admission answered: admitted, it starts racing and the timer is set again
    /// (the next hedge comes `after` this one started, however long it queued); refused,
    /// the next hedge may start at once (the timer has run out already).
    fn start_hedge<T, F, Fut>(
        &mut self,
        op: &mut F,
        race: &mut Race<'a, 'r, T, Fut>,
        at: &Cursor,
        (hti, launched): (usize, u64),
        admitted: Result<Admission<'r>, Refusal>,
        after: std::time::Duration,
    ) where
        F: FnMut(Target, u32) -> Fut,
        Fut: Future<Output = Result<Done<T>, Failure>>,
    {
        let per_try = self.rt.plan.route(at.route).targets[hti].timeouts.per_try;
        // Measured after admission: the hedge may have queued for its permit.
        let Some((timeout, adm)) = admitted
            .ok()
            .and_then(|a| Some((attempt_timeout(per_try, a.at, at.deadline)?, a)))
        else {
            return;
        };
        self.trail.attempts += 1;
        race.timer = self.clock.sleep(after);
        let model = self.rt.plan.route(at.route).targets[hti].model;
        tracing::debug!(target: "tollgate::exec", model = %self.rt.plan.model(model).name, "hedging");
        let queued = Duration::from_nanos(adm.at.saturating_sub(launched));
        let fut = Box::pin(self.launch(
            op,
            at.route,
            hti,
            (1, true),
            AttemptTime { timeout, queued },
        ));
        race.running.push(Racer {
            ti: hti,
            adm,
            hedge: true,
            fut,
        });
    }

    /// Racer `i` finished with `result`: the race's outcome if it ends the race (a success,
    /// a failure that may not cross targets, or the last attempt); else the failure is kept.
    fn finished<T, Fut>(
        &mut self,
        race: &mut Race<'a, 'r, T, Fut>,
        at: &Cursor,
        i: usize,
        result: Result<Done<T>, Failure>,
        hedges: usize,
    ) -> Option<(Ran<T>, Admission<'r>)> {
        let Racer {
            ti, mut adm, hedge, ..
        } = race.running.swap_remove(i);
        let now = self.clock.now();
        let elapsed = Duration::from_nanos(now.saturating_sub(adm.at));
        // A failure that may not cross targets ends the race as it would end a request
        // without hedging: no hedge fails it over (the others are cancelled on return).
        let ends = match &result {
            Ok(_) => true,
            Err(f) => !self.rt.plan.route(at.route).failover_on.matches(&f.view()),
        };
        let ran = Ran {
            result,
            ti,
            hedge,
            elapsed,
            now,
        };
        let over = race.running.is_empty() && race.pending.is_none() && race.next >= hedges;
        if ends || over {
            // The winner, or the last failure: account any earlier failure first.
            if let Some(prev) = race.last.take() {
                self.record_lost(at, prev);
            }
            return Some((ran, adm));
        }
        // The failed attempt is over: its concurrency permit and in-flight count go back
        // now, not when the race ends (its outcome is settled then).
        adm.release();
        if let Some(prev) = race.last.replace((ran, adm)) {
            self.record_lost(at, prev);
        }
        if race.running.is_empty() {
            // Nothing in flight after a failure that may cross targets: the next hedge is
            // the failover that would come anyway, so it starts at once.
            race.timer = self.clock.sleep(Duration::ZERO);
        }
        None
    }

    /// Accounts a failed racer that is not the one returned.
    fn record_lost<T>(&mut self, at: &Cursor, (ran, mut adm): Lost<'r, T>) {
        let Err(failure) = ran.result else { return };
        let end = Ended {
            route: at.route,
            model: self.rt.plan.route(at.route).targets[ran.ti].model,
            elapsed: ran.elapsed,
            now: self.clock.now(),
        };
        settle::failure(self.rt, &mut adm, &failure, end);
        drop(adm);
        self.trail
            .record_failure(self.rt, &failure, end, (1, ran.hedge));
    }
}

impl<'a, 'r, T, Fut> Race<'a, 'r, T, Fut>
where
    Fut: Future<Output = Result<Done<T>, Failure>>,
{
    /// Waits for the next thing to happen: a racer finishing, the pending hedge admitted,
    /// or the timer (only while another hedge may start).
    async fn event(&mut self, hedges: usize) -> Event<T, Result<Admission<'r>, Refusal>> {
        let can_launch = self.next < hedges && self.pending.is_none();
        std::future::poll_fn(|cx| {
            for (i, r) in self.running.iter_mut().enumerate() {
                if let Poll::Ready(out) = r.fut.as_mut().poll(cx) {
                    return Poll::Ready(Event::Done(i, out));
                }
            }
            if let Some((_, _, adm)) = self.pending.as_mut() {
                if let Poll::Ready(a) = adm.as_mut().poll(cx) {
                    return Poll::Ready(Event::Admitted(a));
                }
            }
            if can_launch && self.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Launch);
            }
            Poll::Pending
        })
        .await
    }
}
