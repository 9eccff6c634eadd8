//! `[breakers.NAME]`: the rules that open a breaker, how long it stays open, how it
//! closes, and the classes that count as failures.

use super::*;
use crate::diagnostic::Severity;
use crate::spec::breaker::{BreakerConfig, RateRule, SlowRule};

/// A rule's `window` when not set.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// A rule's `min_calls` when not set.
const DEFAULT_MIN_CALLS: u32 = 10;
/// `open_for` when not set.
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);

impl Compiler<'_> {
    pub(super) fn breaker(&mut self, name: &str, b: &policy::Breaker) -> BreakerPolicy {
        let path = KeyPath::from(["breakers", name]);
        let errors_before = self.diags.len();
        if b.consecutive_failures == Some(0) {
            let message = "consecutive_failures is 0: the breaker would open on nothing";
            let d = self.error(
                Code::InvalidValue,
                message,
                &path.key("consecutive_failures"),
            );
            self.push(d.with_label("expected at least 1"));
        }
        let failure_rate = b
            .failure_rate
            .map(|f| self.failure_rate(f, &path.key("failure_rate")));
        let slow_call = b
            .slow_call
            .map(|s| self.slow_call(s, failure_rate, &path.key("slow_call")));
        let open_for = b.open_for.map_or(DEFAULT_OPEN_FOR, |d| d.get());
        if open_for.is_zero() {
            let message = "open_for is zero: the breaker could never stay open";
            let d = self.error(Code::InvalidValue, message, &path.key("open_for"));
            self.push(d.with_label("expected a positive duration"));
        }
        let (probes, successes) = self.half_open(b.half_open, &path.key("half_open"));
        if b.consecutive_failures.is_none() && failure_rate.is_none() && slow_call.is_none() {
            let message = format!("breaker `{name}` has no rule that opens it");
            let d = self
                .warning(Code::BreakerNeverOpens, message, &path)
                .with_help("set consecutive_failures, failure_rate or slow_call");
            self.push(d);
        }
        let trip_on = self.classes(b.trip_on.as_ref(), &DEFAULT_TRIP_ON, &path.key("trip_on"));
        let config = BreakerConfig {
            consecutive_failures: b.consecutive_failures,
            failure_rate,
            slow_call,
            open_for,
            probes: probes.max(1),
            successes_to_close: successes.clamp(1, probes.max(1)),
        };
        // The executor's own range checks (e.g. caps on probes and min_calls) catch what
        // the checks above do not name one by one.
        let own_errors = self.diags[errors_before..]
            .iter()
            .any(|d| d.severity == Severity::Error);
        if let (false, Err(e)) = (own_errors, config.validate()) {
            self.push(self.error(Code::InvalidValue, format!("breaker `{name}`: {e}"), &path));
        }
        BreakerPolicy {
            name: name.to_string(),
            config,
            trip_on,
            state: b.state,
        }
    }

    fn failure_rate(&mut self, f: policy::FailureRate, path: &KeyPath) -> RateRule {
        self.fraction(
            f.threshold,
            "failure_rate threshold",
            &path.key("threshold"),
        );
        let min_calls = f.min_calls.unwrap_or(DEFAULT_MIN_CALLS);
        self.min_calls(min_calls, &path.key("min_calls"));
        let window = f.window.map_or(DEFAULT_WINDOW, |d| d.get());
        if window.is_zero() {
            let message = "the failure-rate window is zero";
            let d = self.error(Code::InvalidValue, message, &path.key("window"));
            self.push(d.with_label("expected a positive duration"));
        }
        RateRule {
            threshold: f.threshold,
            min_calls,
            window,
        }
    }

    /// `slow_call`, taking `min_calls` and `window` from `failure_rate` when it has none.
    fn slow_call(
        &mut self,
        s: policy::SlowCall,
        failure_rate: Option<RateRule>,
        path: &KeyPath,
    ) -> SlowRule {
        let what = "slow_call rate_threshold";
        self.fraction(s.rate_threshold, what, &path.key("rate_threshold"));
        if s.over.get().is_zero() {
            let message = "slow_call `over` is zero: every call would be slow";
            let d = self.error(Code::InvalidValue, message, &path.key("over"));
            self.push(d.with_label("expected a positive duration"));
        }
        let min_calls = s
            .min_calls
            .or(failure_rate.map(|f| f.min_calls))
            .unwrap_or(DEFAULT_MIN_CALLS);
        self.min_calls(min_calls, &path.key("min_calls"));
        let window = s
            .window
            .map(|d| d.get())
            .or(failure_rate.map(|f| f.window))
            .unwrap_or(DEFAULT_WINDOW);
        SlowRule {
            over: s.over.get(),
            rate_threshold: s.rate_threshold,
            min_calls,
            window,
        }
    }

    fn min_calls(&mut self, n: u32, at: &KeyPath) {
        if n == 0 {
            let d = self.error(Code::InvalidValue, "min_calls is 0", at);
            self.push(d.with_label("expected at least 1"));
        }
    }

    /// `half_open`: (probes, successes to close), as written.
    fn half_open(&mut self, h: Option<policy::HalfOpen>, path: &KeyPath) -> (u32, u32) {
        let (probes, successes) = match h {
            Some(h) => (h.probes.unwrap_or(1), h.successes_to_close.unwrap_or(1)),
            None => (1, 1),
        };
        if probes == 0 {
            let message = "half_open probes is 0: an open breaker could never close";
            let d = self.error(Code::ZeroProbes, message, &path.key("probes"));
            self.push(d.with_label("expected at least 1"));
        }
        let at = path.key("successes_to_close");
        if successes == 0 {
            let d = self.error(Code::InvalidValue, "successes_to_close is 0", &at);
            self.push(d.with_label("expected at least 1"));
        } else if successes > probes && probes > 0 {
            let message = format!("successes_to_close ({successes}) is more than probes ({probes}): the breaker could never close");
            let d = self.error(Code::InvalidValue, message, &at);
            self.push(d.with_label(format!("expected at most {probes}")));
        }
        (probes, successes)
    }

    fn fraction(&mut self, x: f64, what: &str, path: &KeyPath) {
        if !(x.is_finite() && x > 0.0 && x <= 1.0) {
            let message = format!("{what} {} is outside (0, 1]", num(x));
            let d = self.error(Code::ThresholdOutOfRange, message, path);
            self.push(d.with_label("expected a number in (0, 1]"));
        }
    }
}
