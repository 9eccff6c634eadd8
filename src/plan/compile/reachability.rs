//! Routes that can never match, and a policy no request can be served by.

use std::collections::HashMap;

use super::*;

impl Compiler<'_> {
    /// Routes after a catch-all, or with the same condition as an earlier route, can never
    /// match; no catch-all at all is worth a warning.
    pub(super) fn reachability(&mut self) {
        let routes = &self.p().routes;
        let mut catch_all: Option<usize> = None;
        // Earlier routes by the text of their condition: equal conditions print equally, so
        // only routes in the same bucket are compared (a policy of 1,000 routes would
        // otherwise compare every pair).
        let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let path = self.l.route_path(i);
            if let Some(c) = catch_all {
                if routes[..i].iter().any(|e| e.name == r.name) {
                    continue; // a second definition: reported as `duplicate-name` already
                }
                let origin = self.l.locate(&self.l.route_path(c).key("name"));
                let message = format!(
                    "route `{}` can never match: it comes after the catch-all route `{}`",
                    r.name, routes[c].name
                );
                let d = self
                    .error(Code::UnreachableRoute, message, &path.key("name"))
                    .with_help("move the catch-all (the route without `when`) last")
                    .with_related(origin, "the catch-all is here");
                self.push(d);
                continue;
            }
            if r.when.is_none() {
                catch_all = Some(i);
                continue;
            }
            let earlier = by_text.entry(format!("{:?}", r.when)).or_default();
            let shadow = earlier.iter().copied().find(|&j| routes[j].when == r.when);
            earlier.push(i);
            if let Some(j) = shadow {
                let origin = self.l.locate(&self.l.route_path(j).key("when"));
                let message = format!(
                    "route `{}` can never match: route `{}` has the same condition and comes first",
                    r.name, routes[j].name
                );
                let d = self
                    .error(Code::UnreachableRoute, message, &path.key("when"))
                    .with_related(origin, "shadowed by this condition");
                self.push(d);
            }
        }
        self.no_routes(catch_all.is_some());
    }

    /// A policy without routes serves nothing; one without a catch-all fails what matches
    /// no route.
    fn no_routes(&mut self, has_catch_all: bool) {
        let routes = &self.p().routes;
        let routes_path = KeyPath::from(["routes"]);
        if routes.is_empty()
            && !self.l.is_partial()
            && !self.l.is_broken(&routes_path)
            && !(0..64).any(|i| self.l.is_broken(&routes_path.index(i)))
        {
            let message = "the policy defines no routes: no request could be served";
            let d = self.error(Code::NoRoutes, message, &KeyPath::root())
                .with_help("add a `[[routes]]` table with a `name` and `targets`; an empty file is not a policy");
            self.push(d);
        }
        if !has_catch_all && !routes.is_empty() {
            let last = self.l.route_path(routes.len() - 1).key("name");
            let message =
                "no route matches every request: a request that matches none fails with `no route`";
            let d = self
                .warning(Code::NoCatchAll, message, &last)
                .with_help("add a last route without `when`");
            self.push(d);
        }
    }
}
