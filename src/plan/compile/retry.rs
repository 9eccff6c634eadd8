//! `[retry.NAME]`: attempts, backoff, the classes retried, `Retry-After`, the retry budget
//! and the per-class overrides.

use super::*;
use crate::spec::backoff::{BackoffKind, Jitter};

impl Compiler<'_> {
    pub(super) fn retry(&mut self, name: &str, r: &policy::RetryPolicy) -> RetryPolicy {
        let path = KeyPath::from(["retry", name]);
        let max_attempts = r.max_attempts.unwrap_or(3);
        self.attempts(
            Some(max_attempts),
            "max_attempts is 0: no call would ever be made",
            "expected at least 1 (1 = no retry)",
            &path.key("max_attempts"),
        );
        let backoff = match &r.backoff {
            Some(b) => self.backoff(b, &path.key("backoff")),
            None => DEFAULT_BACKOFF,
        };
        let retry_on = self.classes(
            r.retry_on.as_ref(),
            &DEFAULT_RETRY_ON,
            &path.key("retry_on"),
        );
        let (honor, ra_max) = match r.retry_after {
            Some(ra) => (
                ra.honor,
                ra.max.map_or(Duration::from_secs(60), |d| d.get()),
            ),
            None => (true, Duration::from_secs(60)),
        };
        let budget = r.budget.map(|b| self.retry_budget(b, &path.key("budget")));
        let overrides = self.overrides(r, &retry_on, &path.key("on"));
        RetryPolicy {
            name: name.to_string(),
            max_attempts: max_attempts.max(1),
            backoff,
            retry_on,
            retry_after_honor: honor,
            retry_after_max: ra_max,
            budget,
            overrides,
        }
    }

    /// A `max_attempts`: not 0 (`zero`, `expected` say why), not above [`MAX_ATTEMPTS`].
    fn attempts(&mut self, n: Option<u32>, zero: &str, expected: &str, at: &KeyPath) {
        let Some(n) = n else { return };
        if n == 0 {
            let d = self.error(Code::ZeroAttempts, zero, at);
            self.push(d.with_label(expected));
        }
        self.attempts_cap(n, at);
    }

    /// `max_attempts` above [`MAX_ATTEMPTS`]: the static bounds and the executor's counts
    /// are sized for that many attempts per target.
    fn attempts_cap(&mut self, n: u32, at: &KeyPath) {
        if n > MAX_ATTEMPTS {
            let message = format!(
                "`max_attempts` = {n} is above the most this executor supports ({MAX_ATTEMPTS})"
            );
            let d = self.error(Code::AttemptsAboveLimit, message, at)
                .with_label(format!("expected 1 to {MAX_ATTEMPTS}"))
                .with_help("a retry schedule this long outlasts any deadline; bound retries with `timeouts.total` and a retry budget instead");
            self.push(d);
        }
    }

    /// `on.CLASS` tables, most specific class first.
    fn overrides(
        &mut self,
        r: &policy::RetryPolicy,
        retry_on: &ClassSet,
        path: &KeyPath,
    ) -> Vec<RetryOverride> {
        let mut overrides = Vec::new();
        for (key, o) in &r.on {
            let op = path.key(key.clone());
            let class = match key.parse::<ClassMatcher>() {
                Ok(c) => c,
                Err(e) => {
                    let d = Diagnostic::error(
                        Code::InvalidClass,
                        format!("{e}"),
                        self.l.locate_key(&op),
                    );
                    self.push(d.with_label("expected a failure class as the key"));
                    continue;
                }
            };
            let covered = retry_on.0.iter().any(|m| {
                m == &class
                    || matches!((m, &class), (ClassMatcher::StatusRange(h), ClassMatcher::Status(s)) if s / 100 == *h)
            });
            if !covered {
                let message = format!("class `{class}` has an override but is not in retry_on");
                let help = format!("add \"{class}\" to retry_on, or the override is never used");
                let d = Diagnostic::warning(
                    Code::OverrideNeverApplies,
                    message,
                    self.l.locate_key(&op),
                );
                self.push(d.with_help(help));
            }
            self.attempts(
                o.max_attempts,
                "max_attempts is 0",
                "expected at least 1",
                &op.key("max_attempts"),
            );
            let backoff = o
                .backoff
                .as_ref()
                .map(|b| self.backoff(b, &op.key("backoff")));
            overrides.push(RetryOverride {
                class,
                max_attempts: o.max_attempts,
                backoff,
            });
        }
        overrides.sort_by_key(|o| std::cmp::Reverse(o.class.specificity()));
        overrides
    }

    fn backoff(&mut self, b: &policy::Backoff, path: &KeyPath) -> Backoff {
        let jitter = b.jitter.unwrap_or(policy::Jitter::Full);
        let jitter_ratio = b.jitter_ratio.unwrap_or(DEFAULT_JITTER_RATIO);
        let out = Backoff {
            kind: match b.kind {
                policy::BackoffKind::Exponential => BackoffKind::Exponential,
                policy::BackoffKind::Constant => BackoffKind::Constant,
                policy::BackoffKind::Decorrelated => BackoffKind::Decorrelated,
            },
            base: b.base.map_or(DEFAULT_BACKOFF.base, |d| d.get()),
            factor: b.factor.unwrap_or(DEFAULT_BACKOFF.factor),
            max: b.max.map_or(DEFAULT_BACKOFF.max, |d| d.get()),
            jitter: match jitter {
                policy::Jitter::None => Jitter::None,
                policy::Jitter::Full => Jitter::Full,
                policy::Jitter::Equal => Jitter::Equal,
                policy::Jitter::Proportional => Jitter::Proportional(jitter_ratio),
            },
        };
        if out.base > out.max {
            let at = path.key(if b.base.is_some() { "base" } else { "max" });
            let message = format!(
                "backoff base {} is above its cap {}",
                policy::Duration::new(out.base),
                policy::Duration::new(out.max)
            );
            let d = self.error(Code::BackoffBaseAboveMax, message, &at);
            self.push(d.with_label("expected base <= max"));
        }
        if !(out.factor.is_finite() && out.factor >= 1.0) {
            let message = format!("backoff factor {} is below 1", num(out.factor));
            let d = self.error(Code::InvalidValue, message, &path.key("factor"));
            self.push(d.with_label("expected a number >= 1 (1 = constant)"));
        }
        if !(jitter_ratio.is_finite() && jitter_ratio > 0.0 && jitter_ratio <= 1.0) {
            let message = format!("jitter_ratio {} is outside (0, 1]", num(jitter_ratio));
            let d = self.error(
                Code::ThresholdOutOfRange,
                message,
                &path.key("jitter_ratio"),
            );
            self.push(d.with_label("expected a number in (0, 1]"));
        }
        if b.jitter_ratio.is_some() && jitter != policy::Jitter::Proportional {
            let message = "jitter_ratio only applies to `jitter = \"proportional\"`";
            self.push(self.warning(Code::IgnoredKey, message, &path.key("jitter_ratio")));
        }
        if b.factor.is_some() && b.kind != policy::BackoffKind::Exponential {
            let message = "factor only applies to `kind = \"exponential\"`";
            self.push(self.warning(Code::IgnoredKey, message, &path.key("factor")));
        }
        out
    }

    /// A retry budget, key by key, then as the executor builds it.
    fn retry_budget(&mut self, b: policy::RetryBudget, path: &KeyPath) -> RetryBudget {
        if !(b.ratio.is_finite() && b.ratio >= 0.0) {
            let message = format!("retry budget ratio {} is negative", num(b.ratio));
            let d = self.error(Code::InvalidValue, message, &path.key("ratio"));
            self.push(d.with_label("expected a number >= 0"));
        }
        let min = b.min_per_second.unwrap_or(10.0);
        if !(min.is_finite() && min >= 0.0) {
            let message = format!("min_per_second {} is negative", num(min));
            let d = self.error(Code::InvalidValue, message, &path.key("min_per_second"));
            self.push(d.with_label("expected a number >= 0"));
        }
        let ttl = b.ttl.map_or(Duration::from_secs(10), |d| d.get());
        if ttl.is_zero() || ttl > Duration::from_secs(60) {
            let message = "retry budget ttl must be between 1ms and 60s";
            let d = self.error(Code::InvalidValue, message, &path.key("ttl"));
            self.push(d.with_label("expected a duration in (0, 60s]"));
        }
        let budget = RetryBudget {
            ratio: b.ratio,
            min_per_second: min,
            ttl,
        };
        self.retry_budget_range(budget, path);
        budget
    }

    /// The executor's own range checks of a retry budget, for the values the checks in
    /// [`retry_budget`](Self::retry_budget) do not name (e.g. a ratio above 1000).
    fn retry_budget_range(&mut self, b: RetryBudget, at: &KeyPath) {
        use crate::exec::retry_budget::{RetryBudget as Runtime, RetryBudgetError};
        let valid = b.ratio.is_finite()
            && b.ratio >= 0.0
            && b.min_per_second.is_finite()
            && b.min_per_second >= 0.0
            && !b.ttl.is_zero()
            && b.ttl <= Duration::from_secs(60);
        if !valid {
            return; // already reported, key by key
        }
        match Runtime::new(b) {
            Ok(_) => {}
            Err(RetryBudgetError::Ratio(r)) => {
                let message = format!("retry budget ratio {} is above 1000", num(r));
                let d = self.error(Code::InvalidValue, message, &at.key("ratio"));
                self.push(d.with_label("expected retries per request, 0 to 1000"));
            }
            Err(e) => {
                self.push(self.error(Code::InvalidValue, format!("retry budget: {e}"), at));
            }
        }
    }
}
