//! Errors: Gemini's error body (`error.status`, `RetryInfo`) → a [`Failure`] a policy can name.

use super::*;

/// Classifies a Gemini error response.
///
/// `{"error": {"code", "message", "status", "details"}}` (also inside an array, as
/// streamed errors come) gives code = `error.status` (`RESOURCE_EXHAUSTED`,
/// `UNAVAILABLE`, `INVALID_ARGUMENT`, …) and its message; the wait is the `retry-after`
/// header, else the `google.rpc.RetryInfo` detail's `retryDelay` (`"30s"`, `"1.5s"`). A
/// 4xx saying the input is over the context window gets
/// [`CONTEXT_LENGTH_EXCEEDED`](classify::CONTEXT_LENGTH_EXCEEDED). Any other body (HTML,
/// empty) gives the status with a short snippet. Rate-limit headers are read as
/// [`classify::rate_limit`] does.
pub fn failure(status: u16, headers: &HeaderMap, bytes: &[u8], now: SystemTime) -> Failure {
    let header_wait = classify::retry_after(headers, now);
    let json = serde_json::from_slice::<Value>(bytes).ok();
    let mut f = match json.as_ref().and_then(error_object) {
        Some(e) => error_failure(status, e, header_wait),
        None => Failure::status(status).message(classify::snippet(bytes)),
    };
    if f.retry_after.is_none() {
        f.retry_after = header_wait;
    }
    f.rate_limit = classify::rate_limit(headers, now);
    f
}

/// The non-null `error` of a streamed `{"error": …}` or `[{"error": …}]`, object or not.
pub(super) fn stream_error(v: &Value) -> Option<&Value> {
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    v.get("error").filter(|e| !e.is_null())
}

/// The `error` object of `{"error": …}` or `[{"error": …}]`.
pub(super) fn error_object(v: &Value) -> Option<&Value> {
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    v.get("error").filter(|e| e.is_object())
}

pub(super) fn error_failure(status: u16, e: &Value, header_wait: Option<Duration>) -> Failure {
    let mut f = Failure::status(status);
    if let Some(s) = e.get("status").and_then(Value::as_str).map(str::trim) {
        if !s.is_empty() {
            f = f.code(classify::truncate(s));
        }
    }
    if let Some(m) = e.get("message").and_then(Value::as_str) {
        f = f.message(classify::truncate(m));
    }
    f.retry_after = header_wait.or_else(|| retry_info(e));
    if (400..500).contains(&status) {
        f = classify::context_length(f);
    }
    f
}

/// `retryDelay` of a `google.rpc.RetryInfo` detail: `"30s"`, `"1.5s"` (or
/// `{"seconds", "nanos"}`); at most a day.
pub(super) fn retry_info(e: &Value) -> Option<Duration> {
    let details = e.get("details")?.as_array()?;
    let info = details.iter().find(|d| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
    })?;
    match info.get("retryDelay")? {
        Value::String(s) => {
            let s = s.trim();
            // A protobuf Duration in JSON: decimal seconds with an `s`.
            s.strip_suffix('s')
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                .and_then(|_| classify::parse_go_duration(s))
        }
        Value::Object(o) => {
            let secs = o.get("seconds").and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })?;
            let nanos = o.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            (secs <= 86_400 && nanos < 1_000_000_000)
                .then(|| Duration::from_secs(secs) + Duration::from_nanos(nanos))
        }
        _ => None,
    }
}
