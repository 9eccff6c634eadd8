//! What a stream keeps until it ends: the budget reservations and the token estimate of
//! its attempt.
//!
//! A streamed answer is served at its first event, before its usage is known (that comes
//! with the last chunk). Settling its budgets then, at a cost of zero, would let concurrent
//! streams overspend a budget many times over. So the attempt's reservations move into a
//! [`StreamHold`] that travels with the [`Served`](super::Served) value: usage learned
//! later ([`Executor::record_late_usage`](super::Executor::record_late_usage)) settles them
//! with the actual cost and reconciles the token limiter's estimate where it was reserved
//! (the upstream's limiter, its shared one, or that one's fallback). A hold dropped without
//! it (the stream reported no usage, or its caller left) settles each budget at what it
//! reserved, the most the call could have cost, and leaves the token estimate charged.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use super::admit::{Admission, Tokens};
use super::limit::TokenLimiter;
use super::price::{BudgetReservation, DetachedReservation, Usd};
use super::shared::{
    DetachedShared, DetachedTokens, SharedBudget, SharedReservation, SharedTokens,
};
use super::state::{BudgetState, Runtime};
use crate::plan::{ModelId, RouteId};

/// Budget reservations and a token estimate held by a call whose usage is known only
/// later (a stream). Boxed, and only when something is held: every served value carries
/// one, and a plain call's is a null pointer.
#[derive(Default)]
pub struct StreamHold(Option<Box<Inner>>);

/// What a hold holds.
#[derive(Default)]
struct Inner {
    held: SmallVec<[Held; 1]>,
    tokens: Option<HeldTokens>,
}

/// A token estimate still charged, and where.
enum HeldTokens {
    Local(Arc<TokenLimiter>, u64),
    Shared(Arc<SharedTokens>, DetachedTokens, u64),
}

impl HeldTokens {
    fn settle(self, actual: u64, now: u64) {
        match self {
            HeldTokens::Local(l, estimate) => l.reconcile(estimate, actual, now),
            HeldTokens::Shared(l, d, _) => l.settle_detached(d, actual, now),
        }
    }

    fn estimate(&self) -> u64 {
        match self {
            HeldTokens::Local(_, e) | HeldTokens::Shared(_, _, e) => *e,
        }
    }
}

enum Held {
    Local(Arc<BudgetState>, DetachedReservation),
    Shared(Arc<SharedBudget>, DetachedShared),
}

impl Held {
    fn settle(self, cost: Option<Usd>) {
        match self {
            Held::Local(b, d) => {
                let cost = cost.unwrap_or(d.amount());
                b.ledger.reattach(d).settle(cost);
            }
            Held::Shared(b, d) => {
                let cost = cost.unwrap_or(d.amount());
                b.reattach(d).settle(cost);
            }
        }
    }
}

impl StreamHold {
    /// Moves what an attempt on `model` of `route` still holds into a hold; no allocation
    /// when nothing is held.
    pub(super) fn take(
        rt: &Runtime,
        ids: (RouteId, ModelId),
        adm: &mut Admission<'_>,
        estimate: u64,
    ) -> Self {
        let inner = Inner::take(
            rt,
            ids,
            &mut adm.budgets,
            &mut adm.shared_budgets,
            &mut adm.tokens,
            estimate,
        );
        let empty = inner.held.is_empty() && inner.tokens.is_none();
        StreamHold((!empty).then(|| Box::new(inner)))
    }

    /// Whether no budget reservation is held.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|i| i.held.is_empty())
    }

    /// Tokens the upstream's token limiter still holds as this call's estimate (0 when it
    /// has no token limit, or once the usage is known).
    pub fn reserved_tokens(&self) -> u64 {
        self.0.as_ref().map_or(0, |i| i.reserved_tokens())
    }

    /// The total held, USD.
    pub fn reserved(&self) -> Usd {
        self.0.as_ref().map_or(Usd::ZERO, |i| i.reserved())
    }

    /// Settles every budget reservation with the call's actual cost.
    pub(super) fn settle(&mut self, cost: Usd) {
        if let Some(i) = self.0.as_mut() {
            i.settle(cost);
        }
    }

    /// Reconciles the token estimate with the `actual` tokens used.
    pub(super) fn settle_tokens(&mut self, actual: u64, now: u64) {
        if let Some(i) = self.0.as_mut() {
            i.settle_tokens(actual, now);
        }
    }
}

impl Inner {
    /// Moves what an attempt on `model` of `route` still holds into a hold: its budget
    /// reservations, and its token reservation (`estimate` tokens) when it has one.
    pub(super) fn take(
        rt: &Runtime,
        (route, model): (RouteId, ModelId),
        local: &mut SmallVec<[BudgetReservation<'_>; 2]>,
        shared: &mut SmallVec<[SharedReservation<'_>; 1]>,
        tokens: &mut Option<Tokens<'_>>,
        estimate: u64,
    ) -> Self {
        let mut hold = Inner::default();
        if let Some(t) = tokens.take() {
            hold.tokens = held_tokens(rt, model, t, estimate);
        }
        if local.is_empty() && shared.is_empty() {
            return hold;
        }
        let budgets = &rt.plan.route(route).budgets;
        for r in local.drain(..) {
            // Reservations come from the route's budgets: one of them is the owner.
            if let Some(b) = budgets
                .iter()
                .map(|b| &rt.budgets[b.index()])
                .find(|b| r.is_of(&b.ledger))
            {
                hold.held.push(Held::Local(b.clone(), r.detach()));
            }
        }
        for r in shared.drain(..) {
            if let Some(b) = budgets
                .iter()
                .filter_map(|b| rt.shared_budgets[b.index()].as_ref())
                .find(|b| r.is_of(b))
            {
                hold.held.push(Held::Shared(b.clone(), r.detach()));
            }
        }
        hold
    }

    /// Tokens the upstream's token limiter still holds as this call's estimate (0 when it
    /// has no token limit, or once the usage is known).
    fn reserved_tokens(&self) -> u64 {
        self.tokens.as_ref().map_or(0, HeldTokens::estimate)
    }

    fn reserved(&self) -> Usd {
        self.held.iter().fold(Usd::ZERO, |sum, h| {
            sum.saturating_add(match h {
                Held::Local(_, d) => d.amount(),
                Held::Shared(_, d) => d.amount(),
            })
        })
    }

    /// Settles every budget reservation with the call's actual cost; nothing is held after.
    fn settle(&mut self, cost: Usd) {
        for h in self.held.drain(..) {
            h.settle(Some(cost));
        }
    }

    /// Reconciles the token estimate with the `actual` tokens used.
    fn settle_tokens(&mut self, actual: u64, now: u64) {
        if let Some(t) = self.tokens.take() {
            t.settle(actual, now);
        }
    }
}

/// The token reservation `t` of an attempt on `model`, held with the limiter it came from.
fn held_tokens(rt: &Runtime, model: ModelId, t: Tokens<'_>, estimate: u64) -> Option<HeldTokens> {
    let up = rt.plan.model(model).upstream.index();
    match t {
        Tokens::Local(r) => {
            let l = rt.upstreams[up].tokens.as_ref().filter(|l| r.is_of(l))?;
            Some(HeldTokens::Local(l.clone(), r.estimate()))
        }
        Tokens::Shared(r) => {
            let l = rt.shared_tokens[up].as_ref().filter(|l| r.is_of(l))?;
            Some(HeldTokens::Shared(l.clone(), r.detach(), estimate))
        }
    }
}

impl Drop for Inner {
    /// No usage came: each budget reservation is charged in full; the token estimate
    /// stays charged.
    fn drop(&mut self) {
        for h in self.held.drain(..) {
            h.settle(None);
        }
    }
}

impl fmt::Debug for StreamHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHold")
            .field("budgets", &self.0.as_ref().map_or(0, |i| i.held.len()))
            .field("reserved", &self.reserved())
            .field("tokens", &self.reserved_tokens())
            .finish()
    }
}
