//! An upstream's `limits`: request rate, tokens per minute, concurrency, and what happens
//! at a limit.

use super::*;
use crate::spec::limit::OnLimit;

/// `queue_timeout` when the policy leaves it out (docs/policy.md).
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// No `limits` table: nothing limited.
const UNLIMITED: Limits = Limits {
    rate: None,
    tokens_per_minute: None,
    concurrency: None,
    on_limit: OnLimit::Fail,
    state: StateScope::Local,
};

impl Compiler<'_> {
    pub(super) fn limits(&mut self, l: Option<&policy::Limits>, path: &KeyPath) -> Limits {
        let Some(l) = l else { return UNLIMITED };
        for (key, v) in [
            ("requests_per_second", l.requests_per_second),
            ("requests_per_minute", l.requests_per_minute),
            ("tokens_per_minute", l.tokens_per_minute),
        ] {
            if let Some(v) = v.filter(|v| !positive(*v)) {
                let d = self.error(
                    Code::NonPositiveRate,
                    format!("{key} is {}", num(v)),
                    &path.key(key),
                );
                self.push(d.with_label("expected a positive number"));
            }
        }
        if l.requests_per_second.is_some() && l.requests_per_minute.is_some() {
            let d = self.error(
                Code::ConflictingKeys,
                "both requests_per_second and requests_per_minute are set",
                &path.key("requests_per_minute"),
            );
            self.push(d.with_label("give one of them"));
        }
        let rate = self.rate(l, path);
        if l.concurrency == Some(0) {
            let message = "concurrency is 0: no call could ever run";
            let d = self.error(Code::InvalidValue, message, &path.key("concurrency"));
            self.push(d.with_label("expected at least 1"));
        }
        if l.queue_timeout.is_some() && l.on_limit == policy::OnLimit::Fail {
            let message = "queue_timeout has no effect with on_limit = \"fail\"";
            self.push(self.warning(Code::IgnoredKey, message, &path.key("queue_timeout")));
        }
        if let (Some(r), false) = (rate, l.burst == Some(0)) {
            let key = if l.requests_per_second.is_some() {
                "requests_per_second"
            } else {
                "requests_per_minute"
            };
            self.rate_range(r, &path.key(key));
        }
        if let Some(t) = l.tokens_per_minute.filter(|t| positive(*t)) {
            self.tokens_range(t, &path.key("tokens_per_minute"));
        }
        Limits {
            rate,
            tokens_per_minute: l.tokens_per_minute.filter(|t| positive(*t)),
            concurrency: l.concurrency.filter(|c| *c > 0),
            on_limit: match l.on_limit {
                policy::OnLimit::Fail => OnLimit::Fail,
                policy::OnLimit::Wait => OnLimit::Wait {
                    queue_timeout: l.queue_timeout.map_or(DEFAULT_QUEUE_TIMEOUT, |d| d.get()),
                },
            },
            state: l.state,
        }
    }

    /// The request rate and its burst (its range is checked once the other keys are).
    fn rate(&mut self, l: &policy::Limits, path: &KeyPath) -> Option<Rate> {
        let per_second = l
            .requests_per_second
            .or(l.requests_per_minute.map(|m| m / 60.0));
        if l.burst == Some(0) {
            let message = "burst is 0: no request could ever be admitted";
            let d = self.error(Code::InvalidValue, message, &path.key("burst"));
            self.push(d.with_label("expected at least 1"));
        }
        if l.burst.is_some() && per_second.is_none() {
            let message = "burst has no effect without a request rate";
            self.push(self.warning(Code::IgnoredKey, message, &path.key("burst")));
        }
        per_second.filter(|r| positive(*r)).map(|r| Rate {
            per_second: r,
            burst: l.burst.unwrap_or_else(|| (r.ceil() as u32).max(1)).max(1),
        })
    }

    /// The executor's own range checks of a request rate (its emission interval and burst
    /// must span less than ~146 years), so that what `check` accepts the executor builds.
    fn rate_range(&mut self, r: Rate, at: &KeyPath) {
        use crate::exec::limit::RateLimiter;
        use crate::spec::limit::RateConfig;
        let cfg = RateConfig {
            rate_per_sec: r.per_second,
            burst: r.burst,
        };
        if RateLimiter::new(cfg).is_err() {
            let message = format!(
                "a rate of {}/s with a burst of {} is out of range: the rate limiter needs a burst to span less than ~146 years",
                num(r.per_second),
                r.burst
            );
            let d = self.error(Code::InvalidValue, message, at);
            self.push(d.with_label("expected a higher rate or a smaller burst"));
        }
    }

    /// The executor's own range checks of a token limit (a minute's tokens, its burst, must
    /// span less than ~146 years at one token per nanosecond or slower).
    fn tokens_range(&mut self, tpm: f64, at: &KeyPath) {
        use crate::exec::limit::TokenLimiter;
        use crate::spec::limit::TokenConfig;
        // As the runtime builds it (`exec::state`): whole tokens, a minute's worth of burst.
        let whole = tpm.ceil().max(1.0) as u64;
        let cfg = TokenConfig {
            tokens_per_minute: whole,
            burst: whole,
        };
        if TokenLimiter::new(cfg).is_err() {
            let message = format!(
                "tokens_per_minute {} is above what the token limiter can count",
                num(tpm)
            );
            let d = self.error(Code::InvalidValue, message, at);
            self.push(d.with_label("expected at most ~4.6e18"));
        }
    }
}
