//! What a reload changed: plan entities compared by name, with every reference to another
//! entity compared by that entity's name (ids are indices and shift when names are added).

use std::collections::BTreeMap;
use std::fmt;

use crate::plan::{
    BreakerId, BreakerPolicy, Budget, BudgetScope, Model, ModelId, OnExceed, Plan, RetryId,
    RetryPolicy, Route, RouteId, Upstream, UpstreamId,
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
            upstreams: Changes::between(upstreams(old), upstreams(new)),
            models: Changes::between(models(old), models(new)),
            routes: Changes::between(routes(old), routes(new)),
            retry: Changes::between(retries(old), retries(new)),
            breakers: Changes::between(breakers(old), breakers(new)),
            budgets: Changes::between(budgets(old), budgets(new)),
            callers: Changes::between(callers(old), callers(new)),
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

fn upstreams(p: &Plan) -> BTreeMap<String, Keyed<Upstream>> {
    p.upstreams
        .iter()
        .map(|u| {
            let refs = vec![breaker_name(p, u.breaker)];
            let mut u2 = u.clone();
            u2.breaker = None;
            (u.name.clone(), (u2, refs))
        })
        .collect()
}

fn models(p: &Plan) -> BTreeMap<String, Keyed<Model>> {
    p.models
        .iter()
        .map(|m| {
            let refs = vec![Some(up_name(p, m.upstream)), breaker_name(p, m.breaker)];
            let mut m2 = m.clone();
            m2.upstream = UpstreamId(0);
            m2.breaker = None;
            (m.name.clone(), (m2, refs))
        })
        .collect()
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

fn breakers(p: &Plan) -> BTreeMap<String, BreakerPolicy> {
    p.breakers
        .iter()
        .map(|b| (b.name.clone(), b.clone()))
        .collect()
}

fn callers(p: &Plan) -> BTreeMap<String, [u8; 32]> {
    p.callers
        .iter()
        .map(|c| (c.name.clone(), c.key_sha256))
        .collect()
}

fn budgets(p: &Plan) -> BTreeMap<String, Keyed<Budget>> {
    p.budgets
        .iter()
        .map(|b| {
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
            (b.name.clone(), (b2, refs))
        })
        .collect()
}
