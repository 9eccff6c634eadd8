//! What a stream keeps until it ends: the budget reservations of its attempt.
//!
//! A streamed answer is served at its first event, before its usage is known (that comes
//! with the last chunk). Settling its budgets then, at a cost of zero, would let concurrent
//! streams overspend a budget many times over. So the attempt's reservations move into a
//! [`BudgetHold`] that travels with the [`Served`](super::Served) value: usage learned
//! later ([`Executor::record_late_usage`](super::Executor::record_late_usage)) settles them
//! with the actual cost; a hold dropped without it (the stream reported no usage, or its
//! caller left) settles each at what it reserved, the most the call could have cost.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use super::price::{BudgetReservation, DetachedReservation, Usd};
use super::shared::{DetachedShared, SharedBudget, SharedReservation};
use super::state::{BudgetState, Runtime};
use crate::plan::RouteId;

/// Budget reservations held by a call whose cost is known only later (a stream).
#[derive(Default)]
pub struct BudgetHold {
    held: SmallVec<[Held; 1]>,
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

impl BudgetHold {
    /// Moves the reservations an attempt on `route` still holds into a hold.
    pub(crate) fn take(
        rt: &Runtime,
        route: RouteId,
        local: &mut SmallVec<[BudgetReservation<'_>; 2]>,
        shared: &mut SmallVec<[SharedReservation<'_>; 1]>,
    ) -> Self {
        let mut hold = BudgetHold::default();
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

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The total held, USD.
    pub fn reserved(&self) -> Usd {
        self.held.iter().fold(Usd::ZERO, |sum, h| {
            sum.saturating_add(match h {
                Held::Local(_, d) => d.amount(),
                Held::Shared(_, d) => d.amount(),
            })
        })
    }

    /// Settles every reservation with the call's actual cost; nothing is held after.
    pub(crate) fn settle(&mut self, cost: Usd) {
        for h in self.held.drain(..) {
            h.settle(Some(cost));
        }
    }
}

impl Drop for BudgetHold {
    /// No usage came: each reservation is charged in full.
    fn drop(&mut self) {
        for h in self.held.drain(..) {
            h.settle(None);
        }
    }
}

impl fmt::Debug for BudgetHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetHold")
            .field("budgets", &self.held.len())
            .field("reserved", &self.reserved())
            .finish()
    }
}
