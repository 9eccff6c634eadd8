//! What a reload changed: plan entities compared by name, with every reference to another
//! entity compared by that entity's name (ids are indices and shift when names are added).

use std::collections::BTreeMap;
use std::fmt;

use crate::plan::{
    BreakerId, Budget, BudgetScope, Model, ModelId, OnExceed, Plan, RetryId, RetryPolicy, Route,
    RouteId, Upstream, UpstreamId,
};

/// Names added, removed and changed in one kind of plan entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In the new plan only.
    pub added: Vec<String>,
    /// In the old plan only.
    pub removed: Vec<String>,
    /// In both, with different settings.
    pub changed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Between two lists in name order (as the plan keeps every kind but routes), by one
    /// walk of both; `same` compares the two entries of one name. No map, no copy: a
    /// reload of 50,000 callers compares them in a few milliseconds.
    fn between_sorted<T>(
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Self {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let sorted = |l: &[T]| l.windows(2).all(|w| name(&w[0]) < name(&w[1]));
        debug_assert!(sorted(old) && sorted(new), "entries in name order");
        let mut c = Changes::default();
        let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
        loop {
            let order = match (o.peek(), n.peek()) {
                (None, None) => break,
                (Some(_), None) => Less,
                (None, Some(_)) => Greater,
                (Some(a), Some(b)) => name(a).cmp(name(b)),
            };
            match order {
                Less => c.removed.extend(o.next().map(|a| name(a).to_string())),
                Greater => c.added.extend(n.next().map(|b| name(b).to_string())),
                Equal => {
                    let (a, b) = (o.next(), n.next());
                    if let (Some(a), Some(b)) = (a, b) {
                        if !same(a, b) {
                            c.changed.push(name(b).to_string());
                        }
                    }
                }
            }
        }
        c
    }

    fn between<K: PartialEq>(old: BTreeMap<String, K>, new: BTreeMap<String, K>) -> Self {
        let mut c = Changes::default();
        for (name, n) in &new {
            match old.get(name) {
                None => c.added.push(name.clone()),
                Some(o) if o != n => c.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        c
    }
}

/// What changed between two plans, by kind. Compared on the resolved plan, so defaults
/// count where they apply: changing `defaults.timeouts` shows as changed routes and
/// upstreams, and a comment or a reordering of tables changes nothing.
///
/// ```
/// use tollgate::plan::Plan;
/// use tollgate::policy::LoadOptions;
/// use tollgate::reload::Summary;
///
/// let load = |p: &str| Plan::load(&LoadOptions::new([p]).with_env(Vec::<(String, String)>::new())).unwrap().plan;
/// let a = load("policies/minimal.toml");
/// assert!(Summary::between(&a, &a).is_empty());
/// let b = load("policies/relay.toml");
/// let s = Summary::between(&a, &b);
/// assert!(!s.is_empty());
/// assert!(s.to_string().contains("routes"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Upstreams.
    pub upstreams: Changes,
    /// Models.
    pub models: Changes,
    /// Routes.
    pub routes: Changes,
    /// Retry policies.
    pub retry: Changes,
    /// Breaker policies.
    pub breakers: Changes,
    /// Budgets.
    pub budgets: Changes,
    /// Callers (a changed caller has a new key).
    pub callers: Changes,
    /// Whether routes that exist in both plans are matched in a different order.
    pub routes_reordered: bool,
    /// The savings baseline model, old and new, if it changed.
    pub baseline_model: Option<(Option<String>, Option<String>)>,
}

impl Summary {
    /// Compares two plans entity by entity.
    pub fn between(old: &Plan, new: &Plan) -> Self {
        Summary::compare(old, new, same_ids(old, new))
    }

    /// [`between`](Self::between), comparing budgets by their fields directly when
    /// `ids_agree` (see [`same_ids`]), else through the names their ids point to.
    fn compare(old: &Plan, new: &Plan, ids_agree: bool) -> Self {
        let kept = |p: &Plan, other: &Plan| -> Vec<String> {
            p.routes
                .iter()
                .filter(|r| other.route_by_name(&r.name).is_some())
                .map(|r| r.name.clone())
                .collect()
        };
        let baseline = |p: &Plan| p.baseline_model.map(|m| p.model(m).name.clone());
        let (ob, nb) = (baseline(old), baseline(new));
        Summary {
            upstreams: Changes::between_sorted(
                &old.upstreams,
                &new.upstreams,
                |u| &u.name,
                |a, b| upstream_key(old, a) == upstream_key(new, b),
            ),
            models: Changes::between_sorted(
                &old.models,
                &new.models,
                |m| &m.name,
                |a, b| model_key(old, a) == model_key(new, b),
            ),
            routes: Changes::between(routes(old), routes(new)),
            // Not in name order: the built-in `<none>` is last.
            retry: Changes::between(retries(old), retries(new)),
            breakers: Changes::between_sorted(
                &old.breakers,
                &new.breakers,
                |b| &b.name,
                |a, b| a == b,
            ),
            budgets: Changes::between_sorted(
                &old.budgets,
                &new.budgets,
                |b| &b.name,
                |a, b| {
                    // Ids that name the same entities in both plans compare as those names do.
                    if ids_agree {
                        a == b
                    } else {
                        budget_key(old, a) == budget_key(new, b)
                    }
                },
            ),
            callers: Changes::between_sorted(
                &old.callers,
                &new.callers,
                |c| &c.name,
                |a, b| a.key_sha256 == b.key_sha256,
            ),
            routes_reordered: kept(old, new) != kept(new, old),
            baseline_model: (ob != nb).then_some((ob, nb)),
        }
    }

    /// Whether the plans are equivalent (nothing to swap).
    pub fn is_empty(&self) -> bool {
        self.kinds().iter().all(|(_, c)| c.is_empty())
            && !self.routes_reordered
            && self.baseline_model.is_none()
    }

    /// Each kind with its changes, in display order.
    pub fn kinds(&self) -> [(&'static str, &Changes); 7] {
        [
            ("routes", &self.routes),
            ("upstreams", &self.upstreams),
            ("models", &self.models),
            ("retry", &self.retry),
            ("breakers", &self.breakers),
            ("budgets", &self.budgets),
            ("callers", &self.callers),
        ]
    }
}

impl fmt::Display for Summary {
    /// `routes +1 ~2 -0 (+fast ~a ~b), models +0 ~0 -1 (-old)`: only kinds that changed;
    /// `no changes` if none did.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { ", " };
            first = false;
            f.write_str(s)
        };
        for (kind, c) in self.kinds() {
            if c.is_empty() {
                continue;
            }
            sep(f)?;
            write!(
                f,
                "{kind} +{} ~{} -{} (",
                c.added.len(),
                c.changed.len(),
                c.removed.len()
            )?;
            let names = c
                .added
                .iter()
                .map(|n| format!("+{n}"))
                .chain(c.changed.iter().map(|n| format!("~{n}")))
                .chain(c.removed.iter().map(|n| format!("-{n}")))
                .collect::<Vec<_>>();
            write!(f, "{})", names.join(" "))?;
        }
        if self.routes_reordered {
            sep(f)?;
            f.write_str("routes reordered")?;
        }
        if let Some((o, n)) = &self.baseline_model {
            sep(f)?;
            let show = |m: &Option<String>| m.clone().unwrap_or_else(|| "none".into());
            write!(f, "baseline model {} → {}", show(o), show(n))?;
        }
        if first {
            f.write_str("no changes")?;
        }
        Ok(())
    }
}

// ---- name-keyed, id-free views of each kind ------------------------------------------

fn up_name(p: &Plan, id: UpstreamId) -> String {
    p.upstream(id).name.clone()
}
fn model_name(p: &Plan, id: ModelId) -> String {
    p.model(id).name.clone()
}
fn route_name(p: &Plan, id: RouteId) -> String {
    p.route(id).name.clone()
}
fn retry_name(p: &Plan, id: RetryId) -> String {
    p.retry(id).name.clone()
}
fn breaker_name(p: &Plan, id: Option<BreakerId>) -> Option<String> {
    id.map(|b| p.breakers[b.index()].name.clone())
}

/// An entity with its id fields zeroed, and the names those ids pointed to.
type Keyed<T> = (T, Vec<Option<String>>);

fn upstream_key(p: &Plan, u: &Upstream) -> Keyed<Upstream> {
    let refs = vec![breaker_name(p, u.breaker)];
    let mut u2 = u.clone();
    u2.breaker = None;
    (u2, refs)
}

fn model_key(p: &Plan, m: &Model) -> Keyed<Model> {
    let refs = vec![Some(up_name(p, m.upstream)), breaker_name(p, m.breaker)];
    let mut m2 = m.clone();
    m2.upstream = UpstreamId(0);
    m2.breaker = None;
    (m2, refs)
}

/// Whether every route, model and upstream id (what a budget refers to) names the same
/// entity in both plans.
fn same_ids(old: &Plan, new: &Plan) -> bool {
    fn same<T>(a: &[T], b: &[T], name: impl Fn(&T) -> &str) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| name(x) == name(y))
    }
    same(&old.routes, &new.routes, |r| &r.name)
        && same(&old.models, &new.models, |m| &m.name)
        && same(&old.upstreams, &new.upstreams, |u| &u.name)
}

fn routes(p: &Plan) -> BTreeMap<String, Keyed<Route>> {
    p.routes
        .iter()
        .map(|r| {
            let mut refs: Vec<Option<String>> = r
                .targets
                .iter()
                .map(|t| Some(model_name(p, t.model)))
                .collect();
            refs.push(Some(retry_name(p, r.retry)));
            refs.push(breaker_name(p, r.breaker));
            refs.extend(
                r.budgets
                    .iter()
                    .map(|b| Some(p.budgets[b.index()].name.clone())),
            );
            let mut r2 = r.clone();
            for t in &mut r2.targets {
                t.model = ModelId(0);
            }
            r2.retry = RetryId(0);
            r2.breaker = None;
            r2.budgets.clear();
            // Derived from the budgets (by id): their changes show as budget changes.
            r2.budget_index = Default::default();
            (r.name.clone(), (r2, refs))
        })
        .collect()
}

fn retries(p: &Plan) -> BTreeMap<String, RetryPolicy> {
    p.retries
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect()
}

fn budget_key(p: &Plan, b: &Budget) -> Keyed<Budget> {
    let s = &b.scope;
    let mut refs: Vec<Option<String>> = Vec::new();
    refs.extend(s.routes.iter().map(|r| Some(route_name(p, *r))));
    refs.push(None); // separators: a name moved between lists is a change
    refs.extend(s.models.iter().map(|m| Some(model_name(p, *m))));
    refs.push(None);
    refs.extend(s.upstreams.iter().map(|u| Some(up_name(p, *u))));
    refs.push(None);
    if let OnExceed::Reroute(r) = b.on_exceed {
        refs.push(Some(route_name(p, r)));
    }
    let mut b2 = b.clone();
    b2.scope = BudgetScope {
        keys: b.scope.keys.clone(),
        ..BudgetScope::default()
    };
    if let OnExceed::Reroute(_) = b2.on_exceed {
        b2.on_exceed = OnExceed::Reroute(RouteId(0));
    }
    (b2, refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LoadOptions;
    use proptest::prelude::*;

    proptest! {
        /// The walk of two name-ordered lists finds what the maps find.
        #[test]
        fn a_walk_of_sorted_lists_is_the_map_comparison(
            old in proptest::collection::btree_map("[a-e]{1,2}", 0u8..3, 0..12),
            new in proptest::collection::btree_map("[a-e]{1,2}", 0u8..3, 0..12),
        ) {
            let list = |m: &BTreeMap<String, u8>| m.clone().into_iter().collect::<Vec<_>>();
            let walked = Changes::between_sorted(&list(&old), &list(&new), |e| &e.0, |a, b| a.1 == b.1);
            prop_assert_eq!(walked, Changes::between(old, new));
        }
    }

    fn plan(routes: &[&str], budget_routes: &[&str]) -> Plan {
        let mut text = String::from(
            "[upstreams.u]\nbase_url = \"http://127.0.0.1:1/v1\"\n[models.m]\nupstream = \"u\"\nprice = { input_per_mtok = 1.0, output_per_mtok = 1.0 }\n",
        );
        for r in routes {
            text.push_str(&format!("[[routes]]\nname = \"{r}\"\nwhen = {{ attr = \"task\", eq = \"{r}\" }}\ntargets = [\"m\"]\n"));
        }
        text.push_str("[[routes]]\nname = \"last\"\ntargets = [\"m\"]\n");
        let scope = budget_routes
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(
            "[budgets.b]\nlimit_usd = 1.0\nwindow = \"1d\"\nscope = {{ routes = [{scope}] }}\n"
        ));
        let opts = LoadOptions::from_text("p.toml", text).with_env(Vec::<(String, String)>::new());
        Plan::load(&opts).expect("compiles").plan
    }

    /// A budget compares by the names its ids point to: the same when routes before its own
    /// shift its ids, changed when it names another route; and the shortcut taken when the
    /// ids agree gives what comparing by names gives.
    #[test]
    fn budgets_compare_by_the_names_their_ids_point_to() {
        let a = plan(&["x", "y"], &["y"]);
        let shifted = plan(&["w", "x", "y"], &["y"]);
        let other = plan(&["x", "y"], &["x"]);
        for (old, new, changed) in [(&a, &shifted, false), (&a, &other, true), (&a, &a, false)] {
            let s = Summary::between(old, new);
            assert_eq!(s.budgets.changed.is_empty(), !changed, "{s}");
            assert_eq!(s, Summary::compare(old, new, false), "the shortcut agrees");
        }
        assert!(!same_ids(&a, &shifted) && same_ids(&a, &other));
    }
}
