//! `[models.NAME]`: the upstream serving it, its price, context window and breaker.

use super::*;

impl Compiler<'_> {
    pub(super) fn model(&mut self, name: &str, m: &policy::Model) -> Model {
        let path = KeyPath::from(["models", name]);
        let upstream = self
            .resolve(Section::Upstreams, &m.upstream, &path.key("upstream"))
            .map_or(UpstreamId(0), UpstreamId);
        let price = m.price.map(|p| self.price(p, &path.key("price")));
        if m.context_window == Some(0) {
            let d = self.error(
                Code::InvalidValue,
                "context_window is 0",
                &path.key("context_window"),
            );
            self.push(d.with_label("expected a positive number of tokens"));
        }
        self.max_tokens_for_api(name, m, &path);
        let breaker = (m.breaker.as_ref())
            .and_then(|b| self.resolve(Section::Breakers, b, &path.key("breaker")))
            .map(BreakerId);
        Model {
            name: name.to_string(),
            upstream,
            upstream_model: m.upstream_model.clone().unwrap_or_else(|| name.to_string()),
            price,
            max_tokens: m.max_tokens,
            context_window: m.context_window,
            breaker,
        }
    }

    /// Anthropic's API requires `max_tokens`: a model on such an upstream needs a default
    /// for requests that set none. A `max_tokens` of 0 is no length at all.
    fn max_tokens_for_api(&mut self, name: &str, m: &policy::Model, path: &KeyPath) {
        if m.max_tokens == Some(0) {
            let d = self.error(
                Code::InvalidValue,
                "max_tokens is 0",
                &path.key("max_tokens"),
            );
            self.push(d.with_label("expected a positive number of tokens"));
        }
        let anthropic = (self.l.policy.upstreams.get(&m.upstream))
            .is_some_and(|u| u.api == Some(policy::ApiFormat::Anthropic));
        if anthropic && m.max_tokens.is_none() {
            let message = format!(
                "model `{name}` is served by the anthropic upstream `{}` and has no `max_tokens`",
                m.upstream
            );
            let d = self.error(Code::MissingMaxTokens, message, path);
            self.push(d.with_help(
                "Anthropic requires `max_tokens` on every call: add e.g. `max_tokens = 4096`, sent when a request sets none",
            ));
        }
    }

    fn price(&mut self, p: policy::Price, path: &KeyPath) -> Price {
        for (k, v) in [
            ("input_per_mtok", p.input_per_mtok),
            ("output_per_mtok", p.output_per_mtok),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                let d = self.error(
                    Code::NegativePrice,
                    format!("{k} is {}", num(v)),
                    &path.key(k),
                );
                self.push(d.with_label("expected a number >= 0"));
            } else {
                self.price_cap(k, v, &path.key(k));
            }
        }
        Price {
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
        }
    }

    /// A price above the executor's [`MAX_PRICE_PER_MTOK`].
    fn price_cap(&mut self, key: &str, v: f64, at: &KeyPath) {
        use crate::spec::price::MAX_PRICE_PER_MTOK;
        if v > MAX_PRICE_PER_MTOK {
            let message = format!("{key} = {} is above the most this executor supports ({MAX_PRICE_PER_MTOK} USD per million tokens)", num(v));
            let d = self.error(Code::PriceAboveLimit, message, at);
            self.push(d.with_label(format!("expected 0 to {MAX_PRICE_PER_MTOK}")));
        }
    }

    /// Savings are computed from the baseline model's price: it needs one.
    pub(super) fn baseline_price(&mut self, baseline: Option<ModelId>, models: &[Model]) {
        let Some(b) = baseline else { return };
        let model = &models[b.index()];
        if model.price.is_none() {
            let message = format!("baseline model `{}` has no price", model.name);
            let at = KeyPath::from(["defaults", "baseline_model"]);
            let d = self.error(Code::MissingPrice, message, &at).with_help(
                "savings are computed from the baseline's price: add `price` to the model",
            );
            self.push(d);
        }
    }
}
