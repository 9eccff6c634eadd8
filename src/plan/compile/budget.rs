//! `[budgets.NAME]`: a spending limit over a window, what it covers, and what happens when
//! it is spent (including reroutes that would go round forever).

use std::collections::HashSet;

use super::*;
use crate::diagnostic::one_of;

/// A path through the reroute graph: (route reached, budget that rerouted there).
type Trail = Vec<(usize, usize)>;

/// Each route's budgets in id order: those scoped to no route go to every route, the
/// others only to the routes they name (no scan of every route per budget).
pub(super) fn attach(routes: &mut [Route], budgets: &[Budget]) {
    for (j, b) in budgets.iter().enumerate() {
        let id = BudgetId(j as u32);
        if b.scope.routes.is_empty() {
            routes.iter_mut().for_each(|r| r.budgets.push(id));
        }
        for r in &b.scope.routes {
            let list = &mut routes[r.index()].budgets;
            // A route named twice in one scope lists the budget once.
            if list.last() != Some(&id) {
                list.push(id);
            }
        }
    }
    for r in routes {
        r.budget_index = BudgetIndex::new(&r.budgets, budgets);
    }
}

impl Compiler<'_> {
    /// Every budget, over the models already compiled.
    pub(super) fn budgets(&mut self, models: &[Model]) -> Vec<Budget> {
        self.unpriced = (models.iter().enumerate())
            .filter(|(_, m)| m.price.is_none())
            .map(|(i, _)| i as u32)
            .collect();
        (self.p().budgets.iter())
            .map(|(n, b)| self.budget(n, b, models))
            .collect()
    }

    fn budget(&mut self, name: &str, b: &policy::Budget, models: &[Model]) -> Budget {
        let path = KeyPath::from(["budgets", name]);
        self.limit_usd(b.limit_usd, &path.key("limit_usd"));
        if b.window.get().is_zero() {
            let d = self.error(
                Code::InvalidValue,
                "the budget window is zero",
                &path.key("window"),
            );
            self.push(d.with_label("expected a positive duration"));
        }
        let scope = match &b.scope {
            Some(s) => self.scope(s, &path.key("scope")),
            None => BudgetScope::default(),
        };
        let unpriced: Vec<&str> = (self.unpriced.iter())
            .filter(|&&i| scope.models.is_empty() || scope.models.contains(&ModelId(i)))
            .map(|&i| models[i as usize].name.as_str())
            .collect();
        if !unpriced.is_empty() && (scope.upstreams.is_empty() && scope.routes.is_empty()) {
            let message = format!(
                "budget `{name}` covers model(s) without a price, whose calls count as free: {}",
                one_of(unpriced.iter().copied())
            );
            let d = self
                .warning(Code::UnpricedModel, message, &path)
                .with_help("add a price to every model a budget covers");
            self.push(d);
        }
        let on_exceed = match &b.on_exceed {
            policy::OnExceed::Reject => OnExceed::Reject,
            policy::OnExceed::Reroute(r) => {
                let at = path.key("on_exceed").key("reroute");
                match self.resolve(Section::Routes, r, &at) {
                    Some(id) => OnExceed::Reroute(RouteId(id)),
                    None => OnExceed::Reject,
                }
            }
        };
        Budget {
            name: name.to_string(),
            limit_usd: b.limit_usd,
            window: b.window.get(),
            scope,
            on_exceed,
            state: b.state,
        }
    }

    fn limit_usd(&mut self, limit: f64, at: &KeyPath) {
        if !positive(limit) {
            let d = self.error(
                Code::InvalidValue,
                format!("limit_usd is {}", num(limit)),
                at,
            );
            self.push(d.with_label("expected a positive amount"));
        } else if crate::exec::price::Usd::from_dollars(limit).is_err() {
            let message = format!(
                "limit_usd {} is above the most a budget can count (about 1.8e10 USD)",
                num(limit)
            );
            let d = self.error(Code::InvalidValue, message, at);
            self.push(d.with_label("expected a positive amount up to 1.8e10"));
        }
    }

    /// `scope`: the routes, models, upstreams and caller keys a budget covers.
    fn scope(&mut self, s: &policy::Scope, path: &KeyPath) -> BudgetScope {
        let mut scope = BudgetScope::default();
        for (i, r) in s.routes.iter().enumerate() {
            let at = path.key("routes").index(i);
            scope
                .routes
                .extend(self.resolve(Section::Routes, r, &at).map(RouteId));
        }
        for (i, m) in s.models.iter().enumerate() {
            let at = path.key("models").index(i);
            scope
                .models
                .extend(self.resolve(Section::Models, m, &at).map(ModelId));
        }
        for (i, u) in s.upstreams.iter().enumerate() {
            let at = path.key("upstreams").index(i);
            scope
                .upstreams
                .extend(self.resolve(Section::Upstreams, u, &at).map(UpstreamId));
        }
        scope.keys = s.keys.clone();
        if !self.p().callers.is_empty() {
            for (i, k) in s.keys.iter().enumerate() {
                self.resolve(Section::Callers, k, &path.key("keys").index(i));
            }
        }
        scope
    }

    /// A reroute whose target is covered by a budget that reroutes (back) again loops
    /// forever once both budgets are spent: report each cycle once.
    pub(super) fn reroute_cycles(&mut self, budgets: &[Budget], n_routes: usize) {
        // Edge route -> (target route, budget) for every route a rerouting budget covers.
        let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_routes];
        for (bi, b) in budgets.iter().enumerate() {
            if let OnExceed::Reroute(t) = b.on_exceed {
                for (r, e) in edges.iter_mut().enumerate() {
                    if b.scope.routes.is_empty() || b.scope.routes.contains(&RouteId(r as u32)) {
                        e.push((t.index(), bi));
                    }
                }
            }
        }
        let mut reported: HashSet<Vec<usize>> = HashSet::new();
        for start in 0..n_routes {
            // Depth-first search for a path back to `start`.
            let mut stack: Vec<(usize, Trail)> = vec![(start, Vec::new())];
            let mut visited = HashSet::new();
            while let Some((node, trail)) = stack.pop() {
                for &(next, bi) in &edges[node] {
                    let mut t = trail.clone();
                    t.push((next, bi));
                    if next != start {
                        if visited.insert(next) {
                            stack.push((next, t));
                        }
                        continue;
                    }
                    let mut key: Vec<usize> = t.iter().map(|(r, _)| *r).collect();
                    key.sort();
                    if reported.insert(key) {
                        self.reroute_cycle(start, &t, budgets);
                    }
                }
            }
        }
    }

    fn reroute_cycle(&mut self, start: usize, trail: &Trail, budgets: &[Budget]) {
        let names: Vec<String> = std::iter::once(start)
            .chain(trail.iter().map(|(r, _)| *r))
            .map(|r| format!("`{}`", self.p().routes[r].name))
            .collect();
        let b = &budgets[trail[0].1];
        let message = format!("budgets reroute in a cycle: {}", names.join(" → "));
        let at = KeyPath::from(["budgets", b.name.as_str()]).key("on_exceed");
        let d = self.error(Code::RerouteCycle, message, &at)
            .with_help("once these budgets are spent, requests would be rerouted forever; end the chain with `on_exceed = \"reject\"`");
        self.push(d);
    }
}
