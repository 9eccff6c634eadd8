//! The diagnostic codes: a closed set. Each code is listed, with what it means, in
//! `docs/policy.md` (`tests/docs.rs` keeps the list and this enum in step), and every code
//! a policy file can trigger is produced by a fixture of `tests/invalid/`
//! (`tests/corpus.rs`); the scenario codes ([`Code::SCENARIO`]) by one of
//! `tests/scenarios_invalid/` (`tests/scenario_corpus.rs`).

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! codes {
    ($($(#[doc = $doc:literal])+ $name:ident = $s:literal,)+) => {
        /// A diagnostic's stable, kebab-case identifier (shown as `error[code]`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])+ $name,)+
        }

        impl Code {
            /// Every code, in the order `docs/policy.md` lists them.
            pub const ALL: &'static [Code] = &[$(Code::$name,)+];

            /// The code as shown (`unknown-reference`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $s,)+
                }
            }
        }
    };
}

codes! {
    /// The key in an `api_key` variable does not start with an allowed prefix.
    ApiKeyPrefix = "api-key-prefix",
    /// `max_attempts` above what the executor supports.
    AttemptsAboveLimit = "attempts-above-limit",
    /// A condition tests an attribute with a value or test of the wrong type.
    AttributeType = "attribute-type",
    /// A backoff's `base` is above its `max`.
    BackoffBaseAboveMax = "backoff-base-above-max",
    /// A breaker with no rule that opens it.
    BreakerNeverOpens = "breaker-never-opens",
    /// Two keys that exclude each other are both set.
    ConflictingKeys = "conflicting-keys",
    /// Two callers have the same key hash.
    DuplicateKeyHash = "duplicate-key-hash",
    /// A name defined twice (a route, or an entry in two files).
    DuplicateName = "duplicate-name",
    /// A route lists a model twice.
    DuplicateTarget = "duplicate-target",
    /// A scenario's duration is zero or longer than a simulation allows.
    DurationOutOfRange = "duration-out-of-range",
    /// A named environment variable is not set.
    EnvUnset = "env-unset",
    /// A hedge's `max_extra` beyond the route's other targets.
    HedgeCapped = "hedge-capped",
    /// A hedge on a route with one target.
    HedgeNeverRuns = "hedge-never-runs",
    /// A key that has no effect where it is.
    IgnoredKey = "ignored-key",
    /// Not a failure class.
    InvalidClass = "invalid-class",
    /// A malformed `when` condition.
    InvalidCondition = "invalid-condition",
    /// A caller's `key_sha256` is not a SHA-256 hash.
    InvalidKeyHash = "invalid-key-hash",
    /// A malformed override variable name.
    InvalidOverride = "invalid-override",
    /// A value of the wrong type.
    InvalidType = "invalid-type",
    /// A `base_url` that is not an http(s) URL.
    InvalidUrl = "invalid-url",
    /// A value out of its range.
    InvalidValue = "invalid-value",
    /// A policy path that cannot be read.
    Io = "io",
    /// An API key written in the policy.
    LiteralSecret = "literal-secret",
    /// A required key is missing.
    MissingKey = "missing-key",
    /// A model on an `api = "anthropic"` upstream has no `max_tokens` (Anthropic requires one).
    MissingMaxTokens = "missing-max-tokens",
    /// A model that needs a price has none.
    MissingPrice = "missing-price",
    /// A negative price.
    NegativePrice = "negative-price",
    /// No route matches every request.
    NoCatchAll = "no-catch-all",
    /// The policy has no routes.
    NoRoutes = "no-routes",
    /// A route without targets.
    NoTargets = "no-targets",
    /// A scenario in which no request arrives.
    NoTraffic = "no-traffic",
    /// A rate that is not positive.
    NonPositiveRate = "non-positive-rate",
    /// A weight that is not positive.
    NonPositiveWeight = "non-positive-weight",
    /// A scenario time past its duration (it never happens).
    OutsideDuration = "outside-duration",
    /// A retry override for a class not retried.
    OverrideNeverApplies = "override-never-applies",
    /// `per_try` longer than `total`.
    PerTryExceedsTotal = "per-try-exceeds-total",
    /// An error code one typo away from a class keyword.
    PossibleTypo = "possible-typo",
    /// A price above what the executor supports.
    PriceAboveLimit = "price-above-limit",
    /// Budgets that reroute in a cycle.
    RerouteCycle = "reroute-cycle",
    /// A route's worst-case retry schedule outlasts its deadline.
    ScheduleExceedsDeadline = "schedule-exceeds-deadline",
    /// A scenario share outside 0–1, or failure shares summing above 1.
    ShareOutOfRange = "share-out-of-range",
    /// Shared state without `[state.redis]`.
    SharedWithoutRedis = "shared-without-redis",
    /// A file that is not valid TOML.
    Syntax = "syntax",
    /// A fraction outside (0, 1].
    ThresholdOutOfRange = "threshold-out-of-range",
    /// A scenario with more requests (or a higher rate) than a simulation allows.
    TooMuchTraffic = "too-much-traffic",
    /// An unknown request attribute in a condition.
    UnknownAttribute = "unknown-attribute",
    /// A key the policy language does not have.
    UnknownKey = "unknown-key",
    /// A reference to a name that is not defined.
    UnknownReference = "unknown-reference",
    /// A budget covers a model without a price.
    UnpricedModel = "unpriced-model",
    /// A route that can never match.
    UnreachableRoute = "unreachable-route",
    /// A policy `version` other than 1.
    UnsupportedVersion = "unsupported-version",
    /// `max_attempts` of 0.
    ZeroAttempts = "zero-attempts",
    /// A breaker's half-open `probes` of 0.
    ZeroProbes = "zero-probes",
}

impl Code {
    /// The codes only a scenario file (`tollgate simulate --scenario`) can trigger.
    pub const SCENARIO: &'static [Code] = &[
        Code::DurationOutOfRange,
        Code::NoTraffic,
        Code::OutsideDuration,
        Code::ShareOutOfRange,
        Code::TooMuchTraffic,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_kebab_case_and_sorted() {
        let names: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "Code::ALL must be sorted and distinct");
        for n in names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{n}"
            );
        }
    }
}
