//! Failure classes as the policy names them: `connect`, `timeout`, `429`, `5xx`,
//! `rate_limit_exceeded`, `breaker_open`, `limited`, `context_length`.

use std::fmt;

/// A failure an attempt ended with, as far as classification needs it.
///
/// `status` and `code` may both be set: a 429 whose body says `rate_limit_exceeded` matches
/// both `"429"` and `"rate_limit_exceeded"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureView<'a> {
    /// The connection could not be made.
    pub connect: bool,
    /// The attempt timed out.
    pub timeout: bool,
    /// HTTP-like status code, if there was a response.
    pub status: Option<u16>,
    /// Error code from the response body (`error.code` or `error.type`).
    pub code: Option<&'a str>,
    /// Not attempted: the target's breaker was open.
    pub breaker_open: bool,
    /// Not attempted: a limiter could not admit the call.
    pub limited: bool,
}

/// One entry of a `retry_on`, `failover_on` or `trip_on` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClassMatcher {
    /// `connect`: the connection failed.
    Connect,
    /// `timeout`: the attempt timed out.
    Timeout,
    /// `429`: exactly this status.
    Status(u16),
    /// `5xx`: any status in this hundred (the digit).
    StatusRange(u16),
    /// `rate_limit_exceeded`: this error-body code.
    Code(String),
    /// `breaker_open`: the target's breaker was open.
    BreakerOpen,
    /// `limited`: a limiter could not admit the call.
    Limited,
    /// `context_length`: the request is over the model's context window — the error code
    /// [`CONTEXT_LENGTH_CODE`], which the HTTP client gives to every provider's way of
    /// saying so (see [`crate::http::classify`]).
    ContextLength,
}

/// The error code the `context_length` class matches (OpenAI's).
pub const CONTEXT_LENGTH_CODE: &str = "context_length_exceeded";

/// Why a class entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    /// A status outside 100..=599.
    #[error("status {0} is not an HTTP status (100 to 599)")]
    Status(u32),
    /// Neither keyword, status, range nor code.
    #[error("`{0}` is not a failure class")]
    Invalid(String),
}

impl ClassMatcher {
    /// Reads one class entry.
    ///
    /// ```
    /// use tollgate::plan::ClassMatcher;
    /// assert_eq!("5xx".parse::<ClassMatcher>(), Ok(ClassMatcher::StatusRange(5)));
    /// assert_eq!("429".parse::<ClassMatcher>(), Ok(ClassMatcher::Status(429)));
    /// assert!("9xx".parse::<ClassMatcher>().is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, ClassError> {
        s.parse()
    }

    /// Whether a failure is of this class.
    pub fn matches(&self, f: &FailureView<'_>) -> bool {
        match self {
            ClassMatcher::Connect => f.connect,
            ClassMatcher::Timeout => f.timeout,
            ClassMatcher::Status(s) => f.status == Some(*s),
            ClassMatcher::StatusRange(h) => f.status.is_some_and(|s| s / 100 == *h),
            ClassMatcher::Code(c) => f.code.is_some_and(|x| x.eq_ignore_ascii_case(c)),
            ClassMatcher::BreakerOpen => f.breaker_open,
            ClassMatcher::Limited => f.limited,
            ClassMatcher::ContextLength => f
                .code
                .is_some_and(|x| x.eq_ignore_ascii_case(CONTEXT_LENGTH_CODE)),
        }
    }

    /// How specific the match is, for picking the override that applies: an exact status
    /// or code beats a range, which beats a keyword.
    pub fn specificity(&self) -> u8 {
        match self {
            ClassMatcher::Status(_) | ClassMatcher::Code(_) | ClassMatcher::ContextLength => 2,
            ClassMatcher::StatusRange(_) => 1,
            _ => 0,
        }
    }
}

impl std::str::FromStr for ClassMatcher {
    type Err = ClassError;
    fn from_str(s: &str) -> Result<Self, ClassError> {
        Ok(match s {
            "connect" => ClassMatcher::Connect,
            "timeout" => ClassMatcher::Timeout,
            "breaker_open" => ClassMatcher::BreakerOpen,
            "limited" => ClassMatcher::Limited,
            "context_length" => ClassMatcher::ContextLength,
            _ if s.len() == 3 && s.as_bytes()[0].is_ascii_digit() && &s[1..] == "xx" => {
                let h = u16::from(s.as_bytes()[0] - b'0');
                if !(1..=5).contains(&h) {
                    return Err(ClassError::Status(u32::from(h) * 100));
                }
                ClassMatcher::StatusRange(h)
            }
            _ if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                let n: u32 = s.parse().unwrap_or(u32::MAX);
                if !(100..=599).contains(&n) {
                    return Err(ClassError::Status(n));
                }
                ClassMatcher::Status(n as u16)
            }
            _ if !s.is_empty()
                && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
            {
                ClassMatcher::Code(s.to_string())
            }
            _ => return Err(ClassError::Invalid(s.to_string())),
        })
    }
}

impl fmt::Display for ClassMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassMatcher::Connect => f.write_str("connect"),
            ClassMatcher::Timeout => f.write_str("timeout"),
            ClassMatcher::Status(s) => write!(f, "{s}"),
            ClassMatcher::StatusRange(h) => write!(f, "{h}xx"),
            ClassMatcher::Code(c) => f.write_str(c),
            ClassMatcher::BreakerOpen => f.write_str("breaker_open"),
            ClassMatcher::Limited => f.write_str("limited"),
            ClassMatcher::ContextLength => f.write_str("context_length"),
        }
    }
}

/// A set of classes; a failure is in it when any entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassSet(pub Vec<ClassMatcher>);

impl ClassSet {
    /// Whether any entry matches.
    pub fn matches(&self, f: &FailureView<'_>) -> bool {
        self.0.iter().any(|m| m.matches(f))
    }
    /// Parses a list of built-in defaults (which are known to be valid).
    pub(crate) fn builtin(entries: &[&str]) -> Self {
        ClassSet(entries.iter().filter_map(|e| e.parse().ok()).collect())
    }
}

impl fmt::Display for ClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|m| m.to_string()).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("connect".parse(), Ok(ClassMatcher::Connect));
        assert_eq!("4xx".parse(), Ok(ClassMatcher::StatusRange(4)));
        assert_eq!("503".parse(), Ok(ClassMatcher::Status(503)));
        assert_eq!(
            "rate_limit_exceeded".parse(),
            Ok(ClassMatcher::Code("rate_limit_exceeded".into()))
        );
        assert_eq!("700".parse::<ClassMatcher>(), Err(ClassError::Status(700)));
        assert_eq!("0xx".parse::<ClassMatcher>(), Err(ClassError::Status(0)));
        assert!("".parse::<ClassMatcher>().is_err());
        assert!("not a class!".parse::<ClassMatcher>().is_err());
        assert_eq!(
            "99999999999".parse::<ClassMatcher>(),
            Err(ClassError::Status(u32::MAX))
        );
    }

    #[test]
    fn context_length_is_a_keyword_for_the_context_window_code() {
        assert_eq!("context_length".parse(), Ok(ClassMatcher::ContextLength));
        assert_eq!(ClassMatcher::ContextLength.to_string(), "context_length");
        let over = FailureView {
            status: Some(400),
            code: Some("context_length_exceeded"),
            ..Default::default()
        };
        assert!(ClassMatcher::ContextLength.matches(&over));
        assert!(ClassMatcher::ContextLength.matches(&FailureView {
            code: Some("Context_Length_Exceeded"),
            ..over
        }));
        for other in [
            FailureView {
                code: Some("invalid_request_error"),
                ..over
            },
            FailureView { code: None, ..over },
            FailureView {
                timeout: true,
                ..Default::default()
            },
        ] {
            assert!(!ClassMatcher::ContextLength.matches(&other), "{other:?}");
        }
        // As exact as a code when overrides are ranked.
        assert_eq!(ClassMatcher::ContextLength.specificity(), 2);
    }

    #[test]
    fn a_429_with_a_code_matches_both() {
        let f = FailureView {
            status: Some(429),
            code: Some("rate_limit_exceeded"),
            ..Default::default()
        };
        assert!(ClassMatcher::Status(429).matches(&f));
        assert!(ClassMatcher::StatusRange(4).matches(&f));
        assert!(ClassMatcher::Code("rate_limit_exceeded".into()).matches(&f));
        assert!(!ClassMatcher::StatusRange(5).matches(&f));
        assert!(!ClassMatcher::Timeout.matches(&f));
    }
}
