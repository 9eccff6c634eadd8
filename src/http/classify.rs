//! Classification: an upstream's HTTP response becomes a [`Done`] or a [`Failure`] the
//! plan can match.
//!
//! Everything here is a pure function of the status, the headers and the (already capped)
//! body bytes, so every case is unit-tested without a server.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx with a JSON object body | `Done` with `usage.prompt_tokens` / `completion_tokens` |
//! | 2xx whose JSON body is `{"error": …}` | `Failure` with the body's code, status 502 |
//! | 2xx with a body that is not JSON (or not an object) | `Failure::status(502).code("invalid_upstream_response")` |
//! | 3xx (redirects are never followed: they would carry the key elsewhere) | `Failure::status(s).code("unexpected_redirect")` |
//! | 4xx / 5xx | `Failure::status(s)` with `error.code` (else `error.type`) as its code |
//! | 4xx (or 2xx error body) whose message says the input is over the context window (`maximum context length`, `prompt is too long`, …) | code [`CONTEXT_LENGTH_EXCEEDED`] (class `context_length`), the provider's own code kept in the message |
//! | body over [`MAX_BODY_BYTES`] | `Failure::status(502).code("upstream_body_too_large")` |
//! | body cut off mid-read | `Failure::status(502).code("upstream_body_incomplete")` |
//!
//! On every response, success or not: `Retry-After` (seconds, fractional seconds or an
//! HTTP date), `retry-after-ms`, or the body's `error.retry_after` become
//! [`Failure::retry_after`]; `x-ratelimit-remaining-requests` with
//! `x-ratelimit-reset-requests` (else plain `x-ratelimit-remaining` / `-reset`, else
//! Anthropic's `anthropic-ratelimit-requests-remaining` / `-reset`) become
//! [`RateLimitInfo`]. A reset is read as OpenAI's duration format (`6m0s`, `1s`, `20ms`,
//! `1h2m3.5s`), plain seconds (`1.5`), a Unix timestamp in seconds (a number above
//! 10⁹), or an RFC 3339 time (`2024-01-01T00:00:30Z`). A remaining count without a reset is ignored: the limiter cannot use half of it.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::exec::{Done, Failure, RateLimitInfo, Usage};

mod body;
mod counts;
use body::{Read, Shape};

/// Largest upstream body read (16 MiB); a larger one is a failure, not an allocation.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Longest detail message taken from an upstream body.
const MAX_MESSAGE_CHARS: usize = 200;

/// Code for a 2xx body that is not a JSON object.
pub const INVALID_RESPONSE: &str = "invalid_upstream_response";
/// Code for a body over [`MAX_BODY_BYTES`].
pub const BODY_TOO_LARGE: &str = "upstream_body_too_large";
/// Code for a body cut off while reading.
pub const BODY_INCOMPLETE: &str = "upstream_body_incomplete";
/// Code for a redirect.
pub const REDIRECT: &str = "unexpected_redirect";
/// Code of a request over the model's context window (OpenAI's), given to every such
/// error whatever its provider calls it: the class `context_length` matches it.
pub const CONTEXT_LENGTH_EXCEEDED: &str = crate::plan::CONTEXT_LENGTH_CODE;

/// Classifies a complete response. `now` is used only to read HTTP-date `Retry-After`
/// values and Unix-timestamp resets.
///
/// ```
/// use reqwest::header::HeaderMap;
/// use tollgate::http::classify::classify;
///
/// let body = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30}}"#;
/// let done = classify(200, &HeaderMap::new(), body, std::time::SystemTime::now()).unwrap();
/// assert_eq!(done.usage.unwrap().output_tokens, 30);
///
/// let err = br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
/// let f = classify(429, &HeaderMap::new(), err, std::time::SystemTime::now()).unwrap_err();
/// assert_eq!(f.to_string(), "429 rate_limit_exceeded: slow down");
/// ```
pub fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Done<()>, Failure> {
    outcome(status, headers, body, Read::of(body), now)
}

/// [`classify`] with the body already read (the tests give it both reads of a body).
fn outcome(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    read: Read,
    now: SystemTime,
) -> Result<Done<()>, Failure> {
    let rate_limit = rate_limit(headers, now);
    let header_wait = retry_after(headers, now);
    if (200..300).contains(&status) {
        return success(status, body, read, header_wait, rate_limit);
    }
    let mut f = if (300..400).contains(&status) {
        Failure::status(status)
            .code(REDIRECT)
            .message("redirects are not followed")
    } else {
        error_status(status, body, &read, header_wait)
    };
    if f.retry_after.is_none() {
        f.retry_after = header_wait;
    }
    f.rate_limit = rate_limit;
    f.usage = read.usage;
    Err(f)
}

/// A 2xx: `Done` for a JSON object, a 502 for an error object or anything else.
fn success(
    status: u16,
    body: &[u8],
    read: Read,
    header_wait: Option<Duration>,
    rate_limit: Option<RateLimitInfo>,
) -> Result<Done<()>, Failure> {
    match (read.shape, &read.error) {
        (Shape::Object, None) => Ok(Done {
            value: (),
            usage: read.usage,
            rate_limit,
            pending: false,
        }),
        (Shape::Object, Some(e)) => {
            // Some providers answer 200 with an error body.
            let mut f = context_length(error_failure(502, e, header_wait));
            f.usage = read.usage;
            Err(f.with_rate_limit(rate_limit))
        }
        _ => Err(Failure::status(502)
            .code(INVALID_RESPONSE)
            .message(format!(
                "status {status} with a body that is not a JSON object: {}",
                snippet(body)
            ))
            .with_rate_limit(rate_limit)),
    }
}

/// A 4xx or 5xx: the body's error when it has one, else the status alone (with the
/// start of a body that is not JSON).
fn error_status(status: u16, body: &[u8], read: &Read, header_wait: Option<Duration>) -> Failure {
    match &read.error {
        Some(e) if (400..500).contains(&status) => {
            context_length(error_failure(status, e, header_wait))
        }
        Some(e) => error_failure(status, e, header_wait),
        None => {
            let f = Failure::status(status);
            match read.shape {
                Shape::NotJson if !body.is_empty() => f.message(snippet(body)),
                _ => f,
            }
        }
    }
}

trait WithRateLimit {
    fn with_rate_limit(self, r: Option<RateLimitInfo>) -> Self;
}

impl WithRateLimit for Failure {
    fn with_rate_limit(mut self, r: Option<RateLimitInfo>) -> Self {
        self.rate_limit = r;
        self
    }
}

/// A failure from an `{"error": …}` object: code from `error.code`, else `error.type`;
/// wait from the header, else `error.retry_after`.
pub(crate) fn error_failure(status: u16, e: &Value, header_wait: Option<Duration>) -> Failure {
    let mut f = Failure::status(status);
    let code = e
        .get("code")
        .and_then(scalar_string)
        .or_else(|| e.get("type").and_then(scalar_string));
    if let Some(c) = code {
        f = f.code(c);
    }
    let message = match e {
        Value::String(s) => Some(s.as_str()),
        _ => e.get("message").and_then(Value::as_str),
    };
    if let Some(m) = message {
        f = f.message(truncate(m));
    }
    f.retry_after = header_wait.or_else(|| e.get("retry_after").and_then(seconds_value));
    f
}

/// What providers say when the input is over the model's context window (lowercase):
/// OpenAI and vLLM, OpenAI's Responses API, Anthropic, Bedrock, Gemini.
const CONTEXT_LENGTH_PHRASES: [&str; 5] = [
    "maximum context length",
    "exceeds the context window",
    "prompt is too long",
    "input is too long",
    "exceeds the maximum number of tokens",
];

/// A 4xx (or a 2xx error body) saying the request is over the context window gets the
/// code [`CONTEXT_LENGTH_EXCEEDED`], which the class `context_length` matches, whatever
/// code the provider gave it (that one is kept at the start of the message).
pub(crate) fn context_length(mut f: Failure) -> Failure {
    let already = f
        .code
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(CONTEXT_LENGTH_EXCEEDED));
    let lower = f.message.to_ascii_lowercase();
    if already || !CONTEXT_LENGTH_PHRASES.iter().any(|p| lower.contains(p)) {
        return f;
    }
    if let Some(original) = f.code.replace(CONTEXT_LENGTH_EXCEEDED.to_string()) {
        f.message = format!("{original}: {}", f.message);
    }
    f
}

/// A string or number as a string (`"code": 429` happens); empty strings are no code.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(truncate(s.trim())),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON number or numeric string of seconds.
fn seconds_value(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_f64().and_then(secs_f64),
        Value::String(s) => s.trim().parse::<f64>().ok().and_then(secs_f64),
        _ => None,
    }
}

fn secs_f64(s: f64) -> Option<Duration> {
    // Reject negatives, NaN and absurd values (more than a day) rather than panic.
    (s.is_finite() && (0.0..=86_400.0).contains(&s)).then(|| Duration::from_secs_f64(s))
}

/// Token usage from an OpenAI-style body (`usage.prompt_tokens` / `completion_tokens`;
/// Anthropic-style `input_tokens` / `output_tokens` too).
pub fn usage(body: &Value) -> Option<Usage> {
    body.get("usage").and_then(usage_of)
}

/// The tokens of a `usage` value (`None` when it names neither count as a `u64`).
fn usage_of(u: &Value) -> Option<Usage> {
    let get = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Value::as_u64);
    tokens(
        get("prompt_tokens", "input_tokens"),
        get("completion_tokens", "output_tokens"),
    )
}

/// The usage of an input and an output count; `None` when neither is given.
fn tokens(input: Option<u64>, output: Option<u64>) -> Option<Usage> {
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}

/// The server's requested wait: `retry-after-ms`, else `Retry-After` as seconds or an
/// HTTP date (a date in the past is a zero wait).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(d) = secs_f64(ms / 1000.0) {
            return Some(d);
        }
    }
    let v = header_str(headers, "retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return secs_f64(secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Rate-limit state from `x-ratelimit-remaining-requests` / `-reset-requests`, else plain
/// `x-ratelimit-remaining` / `-reset`, else Anthropic's
/// `anthropic-ratelimit-requests-remaining` / `-reset`.
pub fn rate_limit(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitInfo> {
    let pair = |rem: &str, reset: &str| -> Option<RateLimitInfo> {
        let remaining = header_str(headers, rem)?.parse::<f64>().ok()?;
        if !remaining.is_finite() || remaining < 0.0 {
            return None;
        }
        let reset = parse_reset(header_str(headers, reset)?, now)?;
        Some(RateLimitInfo {
            remaining: remaining as u64,
            reset,
        })
    };
    pair(
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    )
    .or_else(|| pair("x-ratelimit-remaining", "x-ratelimit-reset"))
    .or_else(|| {
        pair(
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        )
    })
}

/// A reset value: OpenAI duration (`6m0s`, `20ms`), plain seconds, a Unix timestamp, or
/// an RFC 3339 time (Anthropic's `2024-01-01T00:00:30Z`).
pub fn parse_reset(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Some(at) = parse_rfc3339(v) {
        return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
    }
    if let Ok(n) = v.parse::<f64>() {
        if n > 1e9 && n.is_finite() {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(n);
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
        return secs_f64(n);
    }
    parse_go_duration(v)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, as Anthropic sends resets; `None` for
/// anything else, an impossible date included.
pub fn parse_rfc3339(v: &str) -> Option<SystemTime> {
    let b = v.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = v.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &v[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let at = v.len() - rest.len();
            let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(frac))
}

/// Go-style durations as OpenAI sends them: `1h2m3.5s`, `6m0s`, `20ms`, `150us`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    secs_f64(total)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(crate) fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The start of a body, printable, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty)".into();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * MAX_MESSAGE_CHARS)]);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(clean.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::FailureKind;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// `Ok(usage)` or `Err((status, code))`.
    type Want = Result<Option<(u64, u64)>, (Option<u16>, Option<&'static str>)>;

    struct Case {
        name: &'static str,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        /// `Ok(usage)` or `Err((status, code))`.
        want: Want,
        retry_after: Option<Duration>,
        rate_limit: Option<(u64, Duration)>,
    }

    const fn ok(name: &'static str, body: &'static str, usage: Option<(u64, u64)>) -> Case {
        Case {
            name,
            status: 200,
            headers: &[],
            body,
            want: Ok(usage),
            retry_after: None,
            rate_limit: None,
        }
    }

    const fn err(
        name: &'static str,
        status: u16,
        body: &'static str,
        want_status: u16,
        code: Option<&'static str>,
    ) -> Case {
        Case {
            name,
            status,
            headers: &[],
            body,
            want: Err((Some(want_status), code)),
            retry_after: None,
            rate_limit: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn table() {
        let cases = [
            ok(
                "success with usage",
                r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
                Some((5, 7)),
            ),
            ok("success without usage", r#"{"choices":[]}"#, None),
            ok("success with null usage", r#"{"usage":null}"#, None),
            ok(
                "anthropic-style usage",
                r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#,
                Some((3, 4)),
            ),
            ok(
                "null error is not an error",
                r#"{"error":null,"choices":[]}"#,
                None,
            ),
            err(
                "2xx non-JSON",
                200,
                "<html>hi</html>",
                502,
                Some(INVALID_RESPONSE),
            ),
            err(
                "2xx truncated JSON",
                200,
                r#"{"choices":[{"mess"#,
                502,
                Some(INVALID_RESPONSE),
            ),
            err("2xx empty body", 200, "", 502, Some(INVALID_RESPONSE)),
            err("2xx JSON array", 200, "[1,2]", 502, Some(INVALID_RESPONSE)),
            err(
                "2xx JSON string",
                200,
                "\"ok\"",
                502,
                Some(INVALID_RESPONSE),
            ),
            err(
                "2xx with error body",
                200,
                r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#,
                502,
                Some("overloaded_error"),
            ),
            err(
                "429 with code",
                429,
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                429,
                Some("rate_limit_exceeded"),
            ),
            err(
                "500 type only",
                500,
                r#"{"error":{"message":"boom","type":"server_error","code":null}}"#,
                500,
                Some("server_error"),
            ),
            err(
                "numeric code",
                400,
                r#"{"error":{"code":400}}"#,
                400,
                Some("400"),
            ),
            err(
                "empty code falls back to type",
                400,
                r#"{"error":{"code":"","type":"invalid_request_error"}}"#,
                400,
                Some("invalid_request_error"),
            ),
            err("string error", 503, r#"{"error":"unavailable"}"#, 503, None),
            err(
                "502 HTML from a proxy",
                502,
                "<html>Bad gateway</html>",
                502,
                None,
            ),
            err("503 empty", 503, "", 503, None),
            err(
                "404 JSON without error",
                404,
                r#"{"detail":"nope"}"#,
                404,
                None,
            ),
            err(
                "401",
                401,
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                401,
                Some("invalid_api_key"),
            ),
            err("301 redirect", 301, "", 301, Some(REDIRECT)),
            err(
                "openai context length",
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                400,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "anthropic prompt too long",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                400,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "vllm maximum context length, no code",
                400,
                r#"{"object":"error","error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","code":400}}"#,
                400,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "gemini input token count",
                400,
                r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
                400,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "openai responses context window",
                400,
                r#"{"error":{"message":"Your input exceeds the context window of this model. Please adjust your input and try again.","type":"invalid_request_error","code":null}}"#,
                400,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "context length in a 200 error body",
                200,
                r#"{"error":{"message":"prompt is too long: 300000 tokens > 200000 maximum","type":"invalid_request_error"}}"#,
                502,
                Some(CONTEXT_LENGTH_EXCEEDED),
            ),
            err(
                "another 400 keeps its code",
                400,
                r#"{"error":{"message":"max_tokens is too large for this model","type":"invalid_request_error"}}"#,
                400,
                Some("invalid_request_error"),
            ),
            err(
                "a 500 mentioning the context length is a 500",
                500,
                r#"{"error":{"message":"maximum context length lookup failed","type":"server_error"}}"#,
                500,
                Some("server_error"),
            ),
            err("invalid UTF-8 body", 500, "\u{FFFD}", 500, None),
            Case {
                retry_after: Some(s(2)),
                headers: &[("retry-after", "2")],
                ..err("429 retry-after seconds", 429, "", 429, None)
            },
            Case {
                retry_after: Some(ms(1500)),
                headers: &[("retry-after", "1.5")],
                ..err("retry-after fractional", 429, "", 429, None)
            },
            Case {
                retry_after: Some(ms(250)),
                headers: &[("retry-after-ms", "250"), ("retry-after", "1")],
                ..err("retry-after-ms wins", 429, "", 429, None)
            },
            Case {
                retry_after: Some(s(30)),
                headers: &[("retry-after", "Tue, 14 Nov 2023 22:13:50 GMT")],
                ..err("retry-after HTTP date", 503, "", 503, None)
            },
            Case {
                retry_after: Some(Duration::ZERO),
                headers: &[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")],
                ..err("retry-after date in the past", 503, "", 503, None)
            },
            Case {
                retry_after: None,
                headers: &[("retry-after", "soon")],
                ..err("retry-after garbage", 503, "", 503, None)
            },
            Case {
                retry_after: None,
                headers: &[("retry-after", "-5")],
                ..err("retry-after negative", 503, "", 503, None)
            },
            Case {
                retry_after: Some(ms(2500)),
                ..err(
                    "body retry_after",
                    429,
                    r#"{"error":{"code":"rate_limit_exceeded","retry_after":2.5}}"#,
                    429,
                    Some("rate_limit_exceeded"),
                )
            },
            Case {
                retry_after: Some(s(1)),
                headers: &[("retry-after", "1")],
                ..err(
                    "header beats body retry_after",
                    429,
                    r#"{"error":{"retry_after":9}}"#,
                    429,
                    None,
                )
            },
            Case {
                rate_limit: Some((59, s(360))),
                headers: &[
                    ("x-ratelimit-remaining-requests", "59"),
                    ("x-ratelimit-reset-requests", "6m0s"),
                ],
                ..ok("openai rate-limit headers", "{}", None)
            },
            Case {
                rate_limit: Some((0, ms(20))),
                headers: &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "20ms"),
                ],
                ..err("rate-limit headers on a 429", 429, "{}", 429, None)
            },
            Case {
                rate_limit: Some((10, ms(1500))),
                headers: &[
                    ("x-ratelimit-remaining", "10"),
                    ("x-ratelimit-reset", "1.5"),
                ],
                ..ok("plain rate-limit headers, seconds", "{}", None)
            },
            Case {
                rate_limit: Some((3, s(42))),
                headers: &[
                    ("x-ratelimit-remaining", "3"),
                    ("x-ratelimit-reset", "1700000042"),
                ],
                ..ok("plain rate-limit headers, unix time", "{}", None)
            },
            Case {
                rate_limit: Some((1, Duration::from_secs_f64(3723.5))),
                headers: &[
                    ("x-ratelimit-remaining-requests", "1"),
                    ("x-ratelimit-reset-requests", "1h2m3.5s"),
                ],
                ..ok("compound duration", "{}", None)
            },
            Case {
                // now() is 2023-11-14T22:13:20Z.
                rate_limit: Some((4, s(40))),
                headers: &[
                    ("anthropic-ratelimit-requests-remaining", "4"),
                    ("anthropic-ratelimit-requests-reset", "2023-11-14T22:14:00Z"),
                ],
                ..ok("anthropic rate-limit headers, RFC 3339", "{}", None)
            },
            Case {
                rate_limit: Some((0, ms(1500))),
                headers: &[
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    (
                        "anthropic-ratelimit-requests-reset",
                        "2023-11-14T23:13:21.5+01:00",
                    ),
                ],
                ..err(
                    "anthropic headers with an offset and a fraction",
                    429,
                    "{}",
                    429,
                    None,
                )
            },
            Case {
                rate_limit: Some((2, s(1))),
                headers: &[
                    ("x-ratelimit-remaining-requests", "2"),
                    ("x-ratelimit-reset-requests", "1s"),
                    ("anthropic-ratelimit-requests-remaining", "9"),
                    ("anthropic-ratelimit-requests-reset", "2023-11-14T22:14:00Z"),
                ],
                ..ok("openai headers win", "{}", None)
            },
            Case {
                rate_limit: None,
                headers: &[
                    ("anthropic-ratelimit-requests-remaining", "3"),
                    ("anthropic-ratelimit-requests-reset", "2023-13-14T22:14:00Z"),
                ],
                ..ok("a bad RFC 3339 date is ignored", "{}", None)
            },
            Case {
                rate_limit: None,
                headers: &[("x-ratelimit-remaining-requests", "5")],
                ..ok("remaining without reset is ignored", "{}", None)
            },
            Case {
                rate_limit: None,
                headers: &[
                    ("x-ratelimit-remaining", "lots"),
                    ("x-ratelimit-reset", "1s"),
                ],
                ..ok("garbage remaining is ignored", "{}", None)
            },
            Case {
                rate_limit: None,
                headers: &[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "1x")],
                ..ok("garbage reset is ignored", "{}", None)
            },
        ];
        for c in cases {
            let h = headers(c.headers);
            let got = classify(c.status, &h, c.body.as_bytes(), now());
            match (&got, &c.want) {
                (Ok(d), Ok(u)) => {
                    assert_eq!(
                        d.usage.map(|u| (u.input_tokens, u.output_tokens)),
                        *u,
                        "{}",
                        c.name
                    );
                    assert_eq!(
                        d.rate_limit.map(|r| (r.remaining, r.reset)),
                        c.rate_limit,
                        "{}",
                        c.name
                    );
                }
                (Err(f), Err((status, code))) => {
                    assert_eq!(f.kind, FailureKind::Response, "{}", c.name);
                    assert_eq!(f.status, *status, "{}: {f}", c.name);
                    assert_eq!(f.code.as_deref(), *code, "{}: {f}", c.name);
                    assert_eq!(f.retry_after, c.retry_after, "{}", c.name);
                    assert_eq!(
                        f.rate_limit.map(|r| (r.remaining, r.reset)),
                        c.rate_limit,
                        "{}",
                        c.name
                    );
                }
                _ => panic!("{}: got {got:?}", c.name),
            }
        }
    }

    /// `classify` as it was before the fast read (commit fc0a33f), kept to prove the
    /// new one answers every body of the corpus the same.
    fn classify_before(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Done<()>, Failure> {
        let rate_limit = rate_limit(headers, now);
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let usage = json.as_ref().and_then(usage);
        let header_wait = retry_after(headers, now);
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .filter(|e| !e.is_null());
        if (200..300).contains(&status) {
            match (&json, error) {
                (Some(Value::Object(_)), None) => {
                    return Ok(Done {
                        value: (),
                        usage,
                        rate_limit,
                        pending: false,
                    });
                }
                (Some(Value::Object(_)), Some(e)) => {
                    // Some providers answer 200 with an error body.
                    let mut f = context_length(error_failure(502, e, header_wait));
                    f.rate_limit = rate_limit;
                    f.usage = usage;
                    return Err(f);
                }
                _ => {
                    return Err(Failure::status(502)
                        .code(INVALID_RESPONSE)
                        .message(format!(
                            "status {status} with a body that is not a JSON object: {}",
                            snippet(body)
                        ))
                        .with_rate_limit(rate_limit));
                }
            }
        }
        let mut f = if (300..400).contains(&status) {
            Failure::status(status)
                .code(REDIRECT)
                .message("redirects are not followed")
        } else {
            match error {
                Some(e) if (400..500).contains(&status) => {
                    context_length(error_failure(status, e, header_wait))
                }
                Some(e) => error_failure(status, e, header_wait),
                None => {
                    let f = Failure::status(status);
                    match json {
                        Some(_) => f,
                        None if body.is_empty() => f,
                        None => f.message(snippet(body)),
                    }
                }
            }
        };
        if f.retry_after.is_none() {
            f.retry_after = header_wait;
        }
        f.rate_limit = rate_limit;
        f.usage = usage;
        Err(f)
    }

    #[test]
    fn both_reads_classify_alike_and_as_before() {
        let h = headers(&[("retry-after", "3")]);
        for body in body::tests::corpus() {
            let name = String::from_utf8_lossy(&body);
            for status in [200, 204, 301, 400, 404, 429, 500, 503] {
                for h in [&HeaderMap::new(), &h] {
                    let fast = outcome(status, h, &body, Read::of(&body), now());
                    let value = outcome(status, h, &body, Read::by_value(&body), now());
                    assert_eq!(fast, value, "{status} {name}");
                    assert_eq!(
                        fast,
                        classify_before(status, h, &body, now()),
                        "{status} {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn messages_are_bounded_and_printable() {
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(10_000));
        let f = classify(500, &HeaderMap::new(), long.as_bytes(), now()).unwrap_err();
        assert!(f.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        let f = classify(200, &HeaderMap::new(), b"\x00\x01binary\xff", now()).unwrap_err();
        assert!(!f.message.chars().any(char::is_control), "{:?}", f.message);
    }

    #[test]
    fn rfc3339_times() {
        let at = |secs: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), at(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14t22:13:20z"), at(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T17:13:20-05:00"),
            at(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), at(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), at(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+5:00",
            "2023-11-14T22:13:2é0Z",
            "2023-11-14T22:13:20Zé",
            "+023-11-14T22:13:20Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("1s", Some(s(1))),
            ("20ms", Some(ms(20))),
            ("6m0s", Some(s(360))),
            ("0.5s", Some(ms(500))),
            ("150us", Some(Duration::from_micros(150))),
            ("", None),
            ("s", None),
            ("1d", None),
            ("1.2.3s", None),
            ("99999999h", None),
        ] {
            assert_eq!(parse_go_duration(text), want, "{text}");
        }
    }

    #[test]
    fn usage_tolerates_odd_shapes() {
        let v: Value =
            serde_json::from_str(r#"{"usage":{"prompt_tokens":-1,"completion_tokens":"7"}}"#)
                .unwrap();
        assert_eq!(usage(&v), None);
        let v: Value = serde_json::from_str(r#"{"usage":{"prompt_tokens":4}}"#).unwrap();
        assert_eq!(
            usage(&v).map(|u| (u.input_tokens, u.output_tokens)),
            Some((4, 0))
        );
        let v: Value = serde_json::from_str(r#"{"usage":[1]}"#).unwrap();
        assert_eq!(usage(&v), None);
    }
}
