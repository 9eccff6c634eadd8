//! `[[routes]]`: the condition, the targets with their timeouts, failover classes, hedging,
//! retry policy, breaker and streaming timeouts.

use std::collections::HashSet;

use super::*;

/// A route's whole-request deadline. Each target's `timeouts.total` is already resolved
/// field by field (route → its upstream → defaults); the route takes the longest of them,
/// so with its own `total` that one, and with none its upstreams' (a failover to an
/// upstream with a longer `total` is not cut short by a shorter one's). A route with no
/// resolved target (already an error) takes the defaults'.
fn route_total(targets: &[RouteTarget], default_total: Duration) -> Duration {
    targets
        .iter()
        .map(|t| t.timeouts.total)
        .max()
        .unwrap_or(default_total)
}

impl Compiler<'_> {
    /// Route `i`, over the models and upstreams already compiled.
    pub(super) fn route(
        &mut self,
        i: usize,
        r: &policy::Route,
        models: &[Model],
        upstreams: &[Upstream],
    ) -> Route {
        let path = self.l.route_path(i);
        let when = (r.when.as_ref()).and_then(|w| self.condition(w, &path.key("when")));
        if r.targets.is_empty() {
            let message = format!("route `{}` has no targets", r.name);
            let d = self.error(Code::NoTargets, message, &path.key("targets"));
            self.push(d.with_label("expected at least one model"));
        }
        let targets = self.targets(r, &path, models, upstreams);
        let failover_on = self.classes(
            r.failover_on.as_ref(),
            &DEFAULT_FAILOVER_ON,
            &path.key("failover_on"),
        );
        let hedge = r.hedge.map(|h| self.hedge(h, &path.key("hedge")));
        if let Some(h) = hedge {
            self.hedge_reach(&r.name, h, r.targets.len(), &path.key("hedge"));
        }
        let retry = (r.retry.as_ref())
            .and_then(|n| self.resolve(Section::Retry, n, &path.key("retry")))
            .map_or(self.defaults.retry, RetryId);
        let breaker = (r.breaker.as_ref())
            .and_then(|b| self.resolve(Section::Breakers, b, &path.key("breaker")))
            .map(BreakerId);
        let total_timeout = route_total(&targets, self.defaults.timeouts.total);
        let streaming = r
            .streaming
            .map(|s| self.streaming(s, &path.key("streaming")));
        Route {
            name: r.name.clone(),
            when,
            strategy: r.strategy,
            targets,
            failover_on,
            hedge,
            retry,
            breaker,
            total_timeout,
            streaming,
            budgets: Vec::new(),
            budget_index: BudgetIndex::default(),
        }
    }

    /// The targets that resolve, each with its timeouts (the route's over its upstream's).
    fn targets(
        &mut self,
        r: &policy::Route,
        path: &KeyPath,
        models: &[Model],
        upstreams: &[Upstream],
    ) -> Vec<RouteTarget> {
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for (j, t) in r.targets.iter().enumerate() {
            let tp = path.key("targets").index(j);
            let Some(mid) = self.resolve(Section::Models, &t.model, &tp).map(ModelId) else {
                continue;
            };
            if !seen.insert(mid) {
                let message = format!("model `{}` is listed twice in route `{}`", t.model, r.name);
                self.push(self.warning(Code::DuplicateTarget, message, &tp));
            }
            if let Some(w) = t.weight {
                self.weight(r, w, &tp.key("weight"));
            }
            let model = &models[mid.index()];
            if r.strategy == policy::Strategy::Cheapest && model.price.is_none() {
                let message = format!(
                    "route `{}` is `cheapest` but model `{}` has no price",
                    r.name, t.model
                );
                let d = self.error(Code::MissingPrice, message, &tp)
                    .with_help(format!("add `price = {{ input_per_mtok = …, output_per_mtok = … }}` to [models.\"{}\"]", t.model));
                self.push(d);
            }
            let up = upstreams
                .get(model.upstream.index())
                .map_or(DEFAULT_TIMEOUTS, |u| u.timeouts);
            let timeouts = self.timeouts(up, r.timeouts.as_ref(), &path.key("timeouts"));
            targets.push(RouteTarget {
                model: mid,
                weight: t.weight.filter(|w| positive(*w)).unwrap_or(1.0),
                timeouts,
            });
        }
        targets
    }

    fn weight(&mut self, r: &policy::Route, w: f64, at: &KeyPath) {
        if !positive(w) {
            let message = format!("weight {} is not positive", num(w));
            let d = self.error(Code::NonPositiveWeight, message, at);
            self.push(d.with_label("expected a number > 0"));
        }
        if r.strategy != policy::Strategy::Weighted {
            let message = format!(
                "weights only apply to `weighted` routes; route `{}` is `{}`",
                r.name, r.strategy
            );
            self.push(self.warning(Code::IgnoredKey, message, at));
        }
    }

    fn hedge(&mut self, h: policy::Hedge, path: &KeyPath) -> Hedge {
        if h.after.get().is_zero() {
            let message = "hedge `after` is zero: every request would be sent twice at once";
            let d = self.error(Code::InvalidValue, message, &path.key("after"));
            self.push(d.with_label("expected a positive duration"));
        }
        let max_extra = h.max_extra.unwrap_or(1);
        if max_extra == 0 {
            let d = self.error(
                Code::InvalidValue,
                "hedge max_extra is 0",
                &path.key("max_extra"),
            );
            self.push(d.with_label("expected at least 1 (or remove `hedge`)"));
        }
        Hedge {
            after: h.after.get(),
            max_extra,
        }
    }

    /// A hedge goes to the targets after the first attempt's, one per extra attempt: on a
    /// one-target route it never runs, and `max_extra` beyond the other targets is unused.
    fn hedge_reach(&mut self, route: &str, h: Hedge, targets: usize, at: &KeyPath) {
        let others = u32::try_from(targets.saturating_sub(1)).unwrap_or(u32::MAX);
        if targets == 1 {
            let message = format!("route `{route}` hedges, but has one target: a hedge is only sent to another target, so none is ever sent");
            let d = self
                .warning(Code::HedgeNeverRuns, message, at)
                .with_help("add a second target, or remove `hedge`");
            self.push(d);
        } else if targets > 1 && h.max_extra > others {
            let s = plural(others);
            let message = format!(
                "route `{route}`: hedge max_extra is {} but the route has {others} other target{s}: at most {others} hedge{s} per request",
                h.max_extra,
            );
            let d = self
                .warning(Code::HedgeCapped, message, &at.key("max_extra"))
                .with_help(format!("lower max_extra to {others}, or add targets"));
            self.push(d);
        }
    }

    fn streaming(&mut self, s: policy::Streaming, path: &KeyPath) -> StreamingTimeouts {
        for (k, v) in [("first_byte", s.first_byte), ("idle_chunk", s.idle_chunk)] {
            if v.is_some_and(|d| d.get().is_zero()) {
                let message = format!("streaming {k} is zero");
                let d = self.error(Code::InvalidValue, message, &path.key(k));
                self.push(d.with_label("expected a positive duration"));
            }
        }
        StreamingTimeouts {
            first_byte: s.first_byte.map(|d| d.get()),
            idle_chunk: s.idle_chunk.map(|d| d.get()),
        }
    }
}
