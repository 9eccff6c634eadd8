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
            if let Some(c) = catch_all {
                if routes[..i].iter().any(|e| e.name == r.name) {
                    continue; // a second definition: reported as `duplicate-name` already
                }
                let why = format!("it comes after the catch-all route `{}`", routes[c].name);
                let d = self
                    .unreachable(i, c, "name", why, "the catch-all is here")
                    .with_help("move the catch-all (the route without `when`) last");
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
                let why = format!(
                    "route `{}` has the same condition and comes first",
                    routes[j].name
                );
                let d = self.unreachable(i, j, "when", why, "shadowed by this condition");
                self.push(d);
            }
        }
        self.no_routes(catch_all.is_some());
    }

    /// Route `i` can never match because of the `earlier` one (`why`); both are pointed
    /// at by their `key`.
    fn unreachable(
        &self,
        i: usize,
        earlier: usize,
        key: &str,
        why: String,
        note: &str,
    ) -> Diagnostic {
        let origin = self.l.locate(&self.l.route_path(earlier).key(key));
        let message = format!("route `{}` can never match: {why}", self.p().routes[i].name);
        let at = self.l.route_path(i).key(key);
        self.error(Code::UnreachableRoute, message, &at)
            .with_related(origin, note)
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
