//! Which route a request takes, and the order in which its targets are tried.

use smallvec::SmallVec;

use crate::exec::outcome::Usage;
use crate::exec::request::Request;
use crate::exec::state::Runtime;
use crate::plan::{Plan, RouteId};
use crate::policy::Strategy;

/// The route for a request: the one named by `model`, else the first whose `when` matches.
pub fn select_route(plan: &Plan, req: &Request) -> Option<RouteId> {
    if let Some(r) = req.model.as_deref().and_then(|m| plan.route_by_name(m)) {
        return Some(r);
    }
    plan.routes
        .iter()
        .position(|r| r.when.as_ref().is_none_or(|w| req.matches(w)))
        .map(|i| RouteId(i as u32))
}

/// Target indices in the order to try them; inline for routes of up to 8 targets.
pub(super) type Order = SmallVec<[usize; 8]>;

/// The identity order of up to 8 targets.
const IDENTITY: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// The order in which a route's targets are tried, by its strategy.
pub(super) fn target_order(
    rt: &Runtime,
    route: RouteId,
    req: &Request,
    rng: &mut fastrand::Rng,
) -> Order {
    let r = rt.plan.route(route);
    let n = r.targets.len();
    let mut order: Order = if n <= IDENTITY.len() {
        // A copy of a constant array: cheaper than collecting a range element by element.
        SmallVec::from_buf_and_len(IDENTITY, n)
    } else {
        (0..n).collect()
    };
    match r.strategy {
        Strategy::Failover => {}
        Strategy::Weighted => {
            // Weighted sampling without replacement (Efraimidis–Spirakis): key = u^(1/w).
            let mut keyed: SmallVec<[(f64, usize); 8]> = order
                .iter()
                .map(|&i| (rng.f64().powf(1.0 / r.targets[i].weight), i))
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        Strategy::Cheapest => {
            let (input, output) = (req.estimated_input_tokens(), req.reserved_output_tokens());
            let usage = Usage {
                input_tokens: input,
                output_tokens: output,
            };
            let cost = |i: &usize| {
                rt.plan
                    .model(r.targets[*i].model)
                    .price
                    .map_or(u64::MAX, |p| p.cost(usage).nanos())
            };
            order.sort_by_key(cost);
        }
        Strategy::LowestLatency => {
            // The expected time to a success (`ModelState::latency_score`); no sample yet
            // counts as fastest, so every target gets measured.
            order.sort_by_key(|&i| rt.models[r.targets[i].model.index()].latency_score());
        }
        Strategy::LeastBusy => {
            order.sort_by_key(|&i| rt.models[r.targets[i].model.index()].in_flight());
        }
    }
    order
}
