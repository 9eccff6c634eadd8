//! The stages of admission, in the order [`Admitting::advance`] runs them. Each reads its
//! slot (local or shared) and decides with the same code: a shared slot's answer comes back
//! through `self.answer` after [`Admitting::finish`] awaited it.

use std::time::Duration;

use super::{
    Admission, Admitting, Answer, Breakers, Halt, InFlight, Pause, Refusal, Stage, Tokens,
};
use crate::exec::error::SkipReason;
use crate::exec::limit::{LimitError, OnLimit};
use crate::exec::outcome::Usage;
use crate::plan::{Budget, OnExceed};

/// Stops the sequence to await `p`, resuming at `stage`.
fn pause(stage: Stage, p: Pause<'_>) -> Result<(), Halt<'_>> {
    Err(Halt::Pause(stage, p))
}

/// Stops the sequence: the target is refused.
fn refuse<'r>(r: Refusal) -> Result<(), Halt<'r>> {
    Err(Halt::Refuse(r))
}

/// How a spent budget refuses the call.
fn exceeded(b: &Budget) -> Refusal {
    let budget = b.name.clone();
    match b.on_exceed {
        OnExceed::Reject => Refusal::Reject { budget },
        OnExceed::Reroute(to) => Refusal::Reroute { to, budget },
    }
}

/// A breaker's refusal as a target skip.
fn breaker_open(name: &str, retry_in: Duration) -> Refusal {
    Refusal::Skip(SkipReason::BreakerOpen {
        breaker: name.to_owned(),
        retry_in,
    })
}

impl<'r> Admitting<'_, 'r> {
    /// What is left of the queue timeout after the waits so far.
    #[inline]
    fn left(&self) -> OnLimit {
        self.on_limit
            .after(Duration::from_nanos(self.now.saturating_sub(self.start)))
    }

    /// The input estimate and the output reservation.
    #[inline]
    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.req.estimated_input_tokens(),
            output_tokens: self.req.reserved_output_tokens_on(self.model.max_tokens),
        }
    }

    /// A limiter refused: wait for what it asks if what is left of the queue timeout
    /// allows, then run `stage` again; else refuse the target.
    #[inline]
    fn wait_or_refuse(&self, stage: Stage, e: LimitError) -> Result<(), Halt<'r>> {
        match e.retry_in().and_then(|d| self.left().wait_for(d)) {
            Some(d) => pause(stage, Pause::Sleep(d)),
            None => refuse(super::limited(e)),
        }
    }

    /// The context window, then the breakers: the route's own (per target) replaces the
    /// upstream's; a model's adds to it.
    #[inline]
    pub(super) fn target(&mut self, adm: &mut Admission<'r>) -> Result<(), Halt<'r>> {
        let model = self.model;
        if let Some(window) = model.context_window {
            let needed = self
                .req
                .estimated_input_tokens()
                .saturating_add(self.req.max_tokens.or(model.max_tokens).unwrap_or(0));
            if needed > window {
                return refuse(Refusal::Skip(SkipReason::ContextWindow { needed, window }));
            }
        }
        let rs = &self.rt.routes[self.route.index()];
        let first = rs.breakers.get(self.ti).or(self.ups.breaker.as_ref());
        let ms = &self.rt.models[self.model_id.index()];
        for (slot, b) in [first, ms.breaker.as_ref()].into_iter().enumerate() {
            let Some(b) = b else { continue };
            match b.breaker.try_acquire(self.now) {
                Ok(p) => adm.breakers[slot] = Some((b, p)),
                Err(e) => return refuse(breaker_open(&b.name, e.retry_in)),
            }
        }
        Ok(())
    }

    /// Reserves the worst-case cost on every budget covering the call, from position
    /// `pos` of the route's list for this caller on.
    #[inline]
    pub(super) fn budgets(&mut self, adm: &mut Admission<'r>, pos: u32) -> Result<(), Halt<'r>> {
        let (rt, caller) = (self.rt, self.req.caller.as_deref());
        let Some(price) = self.model.price else {
            return Ok(());
        };
        let worst = price.cost(self.usage());
        let (model, upstream) = (self.model_id, self.up);
        let route = rt.plan.route(self.route);
        for (k, bid) in route.budgets_for(caller).enumerate().skip(pos as usize) {
            let b = &rt.plan.budgets[bid.index()];
            if !b.covers(self.route, model, upstream, caller) {
                continue;
            }
            let reserved = match &rt.shared_budgets[bid.index()] {
                None => rt.budgets[bid.index()]
                    .ledger
                    .reserve(worst, self.now)
                    .ok()
                    .map(|r| adm.budgets.push(r)),
                Some(sb) => match self.answer.take() {
                    Some(Answer::Budget(r)) => r.map(|r| adm.shared_budgets.push(r)),
                    _ => return pause(Stage::Budgets(k as u32), Pause::Budget(sb, worst)),
                },
            };
            if reserved.is_none() {
                return refuse(exceeded(b));
            }
        }
        Ok(())
    }

    /// The concurrency cap: a permit now, or a wait for one up to the queue timeout.
    #[inline]
    pub(super) fn concurrency(&mut self, adm: &mut Admission<'r>) -> Result<(), Halt<'r>> {
        let Some(c) = &self.ups.concurrency else {
            return Ok(());
        };
        let got = match self.answer.take() {
            Some(Answer::Concurrency(waited)) => waited,
            _ => match c.try_acquire_guard() {
                Ok(g) => Ok(g),
                Err(e) => match self.left() {
                    OnLimit::Wait { queue_timeout } if !queue_timeout.is_zero() => {
                        return pause(Stage::Concurrency, Pause::Concurrency(c, queue_timeout))
                    }
                    _ => Err(e),
                },
            },
        };
        match got {
            Ok(g) => {
                adm.concurrency = Some(g);
                Ok(())
            }
            Err(e) => refuse(super::limited(e)),
        }
    }

    /// The token limiter (shared when the backend holds it): the estimate reserved, or a
    /// wait for the refill.
    #[inline]
    pub(super) fn tokens(&mut self, adm: &mut Admission<'r>) -> Result<(), Halt<'r>> {
        let Some(local) = &self.ups.tokens else {
            return Ok(());
        };
        let usage = self.usage();
        let n = usage.input_tokens.saturating_add(usage.output_tokens);
        let got = match &self.rt.shared_tokens[self.up.index()] {
            None => local.reserve(n, self.now).map(Tokens::Local),
            Some(st) => match self.answer.take() {
                Some(Answer::Tokens(r)) => r.map(Tokens::Shared),
                _ => return pause(Stage::Tokens, Pause::Tokens(st, n)),
            },
        };
        match got {
            Ok(t) => {
                adm.tokens = Some(t);
                Ok(())
            }
            Err(e) => self.wait_or_refuse(Stage::Tokens, e),
        }
    }

    /// The request rate (shared when the backend holds it), at the time the call would
    /// start: after any wait or round trip before it.
    #[inline]
    pub(super) fn rate(&mut self) -> Result<(), Halt<'r>> {
        let checked = match &self.rt.shared_rates[self.up.index()] {
            Some(sr) => match self.answer.take() {
                Some(Answer::Rate(r)) => r,
                _ => return pause(Stage::Rate, Pause::Rate(sr)),
            },
            None => match &self.ups.rate {
                None => Ok(()),
                Some(r) => r.check(self.now).map_err(|nu| nu.into_rate_error()),
            },
        };
        match checked {
            Ok(()) => Ok(()),
            Err(e) => self.wait_or_refuse(Stage::Rate, e),
        }
    }

    /// If admission awaited anything since the breakers were asked, asks again those that
    /// changed state (one may have opened meanwhile, even within the same clock reading);
    /// then counts the call in flight.
    #[inline]
    pub(super) fn finish_stage(&mut self, adm: &mut Admission<'r>) -> Result<(), Halt<'r>> {
        if self.awaited {
            if let Err(r) = recheck_breakers(&mut adm.breakers, self.now) {
                return refuse(r);
            }
        }
        let ms = &self.rt.models[self.model_id.index()];
        adm.in_flight = Some(InFlight::enter(&ms.in_flight));
        adm.at = self.now;
        Ok(())
    }
}

/// Asks again every breaker whose state changed since its permit was taken.
#[cold]
fn recheck_breakers(breakers: &mut Breakers<'_>, now: u64) -> Result<(), Refusal> {
    for held in breakers.iter_mut() {
        let Some((slot, permit)) = held else { continue };
        if permit.is_current() {
            continue;
        }
        let slot = *slot;
        *held = None;
        match slot.breaker.try_acquire(now) {
            Ok(p) => *held = Some((slot, p)),
            Err(e) => return Err(breaker_open(&slot.name, e.retry_in)),
        }
    }
    Ok(())
}
