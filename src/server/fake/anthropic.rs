//! A strict fake of Anthropic's Messages API, in-process on 127.0.0.1, for tests of the
//! `anthropic` wire format: `POST /v1/messages`, plain and streamed.
//!
//! Strict as the real API is: `401 authentication_error` without the right `x-api-key`
//! (or with an `Authorization` header instead), `400 invalid_request_error` without
//! `anthropic-version`, without `max_tokens`, with an unknown top-level field, a `system`
//! role in `messages`, roles that do not alternate or do not start with the user, or a
//! `tool_result` that answers no `tool_use` of the message before. The rules are
//! [`check_auth`] and [`check_request`], usable without a server.
//!
//! Answers are deterministic: the text is `"anthropic/{model}: {last user text}"`, usage
//! `input_tokens` = ⌈prompt bytes / 4⌉ and `output_tokens` = the reply's words. A request
//! with tools whose last user text contains `use tool` also gets a `tool_use` block for
//! the first tool, with input `{"q": last user text}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::http::wire::anthropic::error_body;

/// How the fake answers (changed at any time with [`FakeAnthropic::set`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnthropicBehavior {
    /// Delay before answering.
    pub latency: Duration,
    /// Share of (valid) calls answered `529 overloaded_error`, drawn from a seeded rng.
    pub overloaded_share: f64,
    /// Answer every valid call `429 rate_limit_error` with `retry-after: 1` and
    /// `anthropic-ratelimit-requests-remaining: 0` / `-reset` (RFC 3339, a second ahead).
    pub rate_limited: bool,
    /// Answer every valid call with an HTML page and this status.
    pub html_error: Option<u16>,
    /// End streams after their first content delta, without `message_stop`.
    pub cut_stream: bool,
}

struct Inner {
    behavior: Mutex<AnthropicBehavior>,
    key: Mutex<Option<String>>,
    calls: AtomicU64,
    last_body: Mutex<Option<Value>>,
    last_headers: Mutex<Option<HeaderMap>>,
    rejections: Mutex<Vec<String>>,
    rng: Mutex<fastrand::Rng>,
}

/// A running fake Anthropic upstream. Stops when dropped.
pub struct FakeAnthropic {
    server: super::Server,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeAnthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAnthropic")
            .field("addr", &self.server.addr())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeAnthropic {
    /// Starts one on a free port of 127.0.0.1, healthy, taking any non-empty key.
    pub async fn start() -> std::io::Result<FakeAnthropic> {
        let inner = Arc::new(Inner {
            behavior: Mutex::new(AnthropicBehavior::default()),
            key: Mutex::new(None),
            calls: AtomicU64::new(0),
            last_body: Mutex::new(None),
            last_headers: Mutex::new(None),
            rejections: Mutex::new(Vec::new()),
            rng: Mutex::new(fastrand::Rng::with_seed(0x616e_7468_726f_7069)),
        });
        let app = Router::new()
            .route("/v1/messages", post(handle))
            .with_state(inner.clone());
        let server = super::Server::start("127.0.0.1:0", app).await?;
        Ok(FakeAnthropic { server, inner })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Its base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// Sets how it answers from now on.
    pub fn set(&self, b: AnthropicBehavior) {
        *lock(&self.inner.behavior) = b;
    }

    /// Takes only `x-api-key: {key}` from now on.
    pub fn expect_key(&self, key: &str) {
        *lock(&self.inner.key) = Some(key.to_string());
    }

    /// Calls received (rejected ones included).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Relaxed)
    }

    /// The JSON body of the last call (if it was JSON).
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.inner.last_body).clone()
    }

    /// The headers of the last call.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        lock(&self.inner.last_headers).clone()
    }

    /// The `x-api-key` of the last call.
    pub fn last_api_key(&self) -> Option<String> {
        let h = lock(&self.inner.last_headers);
        h.as_ref()?
            .get("x-api-key")?
            .to_str()
            .ok()
            .map(String::from)
    }

    /// The messages of the 400s it sent, oldest first.
    pub fn rejections(&self) -> Vec<String> {
        lock(&self.inner.rejections).clone()
    }
}

/// The authentication rule: `x-api-key` equal to `key` (any non-empty one when `None`),
/// and no `Authorization` header. `Err` is the 401's message.
pub fn check_auth(headers: &HeaderMap, key: Option<&str>) -> Result<(), String> {
    if headers.contains_key("authorization") {
        return Err("Authorization headers are not accepted: send the key as x-api-key".into());
    }
    let got = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match (got, key) {
        (None, _) | (Some(""), _) => Err("x-api-key header is required".into()),
        (Some(g), Some(k)) if g != k => Err("invalid x-api-key".into()),
        _ => Ok(()),
    }
}

/// Top-level fields the Messages API takes.
const ALLOWED_FIELDS: [&str; 14] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
];

/// The request rules (besides the key) of the real API: `anthropic-version`, a JSON
/// object with known fields only, `model`, `max_tokens`, `messages` alternating from the
/// user, valid blocks, tool results answering the previous message's tool uses, tools
/// with an `input_schema`. `Err` is the 400's message.
pub fn check_request(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    if headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .is_none_or(str::is_empty)
    {
        return Err("anthropic-version: header is required".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let b = v.as_object().ok_or("the body must be a JSON object")?;
    if let Some(k) = b.keys().find(|k| !ALLOWED_FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    b.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("model: Field required")?;
    b.get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
        .ok_or("max_tokens: Field required (a positive integer)")?;
    check_scalars(b)?;
    check_system(b.get("system"))?;
    let messages = b
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: Field required (a non-empty array)")?;
    check_messages(messages)?;
    check_tools(b)
}

/// `temperature` 0–1, `top_p` 0–1, `stop_sequences` strings, `stream` a boolean.
fn check_scalars(b: &Map<String, Value>) -> Result<(), String> {
    for k in ["temperature", "top_p"] {
        if let Some(t) = b.get(k) {
            if !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)) {
                return Err(format!("{k}: must be a number from 0 to 1"));
            }
        }
    }
    if let Some(s) = b.get("stop_sequences") {
        if !s.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Err("stop_sequences: must be an array of strings".into());
        }
    }
    if b.get("stream").is_some_and(|s| !s.is_boolean()) {
        return Err("stream: must be a boolean".into());
    }
    Ok(())
}

fn check_system(s: Option<&Value>) -> Result<(), String> {
    match s {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(bs))
            if bs.iter().all(|b| {
                b.get("type").and_then(Value::as_str) == Some("text")
                    && b.get("text").is_some_and(Value::is_string)
            }) =>
        {
            Ok(())
        }
        Some(_) => Err("system: must be a string or an array of text blocks".into()),
    }
}

fn check_messages(messages: &[Value]) -> Result<(), String> {
    let mut prev_role = "";
    let mut prev_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "user" | "assistant" => {}
            "system" => return Err(format!("messages.{i}: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.")),
            other => return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant', not {other:?}")),
        }
        if i == 0 && role != "user" {
            return Err("messages: the first message must use the \"user\" role".into());
        }
        if role == prev_role {
            return Err(format!(
                "messages.{i}: roles must alternate between \"user\" and \"assistant\""
            ));
        }
        prev_tool_uses = check_content(m.get("content"), role, i, &prev_tool_uses)?;
        prev_role = role;
    }
    Ok(())
}

/// One message's content; the ids of its `tool_use` blocks.
fn check_content(
    content: Option<&Value>,
    role: &str,
    i: usize,
    prev_tool_uses: &[String],
) -> Result<Vec<String>, String> {
    let blocks = match content {
        Some(Value::String(s)) if !s.is_empty() => return Ok(Vec::new()),
        Some(Value::Array(bs)) if !bs.is_empty() => bs,
        _ => {
            return Err(format!(
                "messages.{i}: content must be a non-empty string or a non-empty array of blocks"
            ))
        }
    };
    let mut tool_uses = Vec::new();
    let mut seen_other = false;
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match (b.get("type").and_then(Value::as_str), role) {
            (Some("text"), _) => {
                if b.get("text")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!("{at}: text content blocks must be non-empty"));
                }
                seen_other = true;
            }
            (Some("image"), "user") => {
                check_image(b.get("source"), &at)?;
                seen_other = true;
            }
            (Some("tool_use"), "assistant") => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(format!("{at}.id: Field required"))?;
                b.get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("{at}.name: Field required"))?;
                if !b.get("input").is_some_and(Value::is_object) {
                    return Err(format!("{at}.input: Input should be an object"));
                }
                tool_uses.push(id.to_string());
            }
            (Some("tool_result"), "user") => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                if !prev_tool_uses.iter().any(|u| u == id) {
                    return Err(format!("{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."));
                }
                if seen_other {
                    return Err(format!(
                        "{at}: tool_result blocks must come first in the content"
                    ));
                }
            }
            (t, r) => {
                return Err(format!(
                    "{at}: block type {t:?} is not allowed in a {r} message"
                ))
            }
        }
    }
    Ok(tool_uses)
}

fn check_image(source: Option<&Value>, at: &str) -> Result<(), String> {
    let s = source.ok_or(format!("{at}.source: Field required"))?;
    let str_of = |k: &str| s.get(k).and_then(Value::as_str);
    match str_of("type") {
        Some("base64") if str_of("media_type").is_some() && str_of("data").is_some() => Ok(()),
        Some("url") if str_of("url").is_some_and(|u| u.starts_with("http")) => Ok(()),
        _ => Err(format!("{at}.source: must be a base64 or url image source")),
    }
}

fn check_tools(b: &Map<String, Value>) -> Result<(), String> {
    if let Some(ts) = b.get("tools") {
        let ts = ts.as_array().ok_or("tools: must be an array")?;
        for (i, t) in ts.iter().enumerate() {
            if !t.get("name").is_some_and(Value::is_string) {
                return Err(format!("tools.{i}.name: Field required"));
            }
            if !t.get("input_schema").is_some_and(Value::is_object) {
                return Err(format!("tools.{i}.input_schema: Field required"));
            }
        }
    }
    if let Some(c) = b.get("tool_choice") {
        match c.get("type").and_then(Value::as_str) {
            Some("auto" | "any" | "none") => {}
            Some("tool") if c.get("name").is_some_and(Value::is_string) => {}
            _ => return Err("tool_choice: must be auto, any, tool (with a name) or none".into()),
        }
    }
    Ok(())
}

/// The texts of a content (a string, or text blocks and tool results' texts).
fn content_text(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(bs)) => bs
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("tool_result") => content_text(b.get("content")),
                _ => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            })
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The fake's answer to a valid request.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    text: String,
    /// A tool call: the tool's name and the input.
    tool: Option<(String, Value)>,
    input_tokens: u64,
    output_tokens: u64,
    stop_reason: &'static str,
}

fn reply(req: &Value) -> Reply {
    let model = req.get("model").and_then(Value::as_str).unwrap_or("");
    let messages: &[Value] = req
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], |m| m);
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let system = match req.get("system") {
        Some(Value::String(s)) => s.clone(),
        s => content_text(s),
    };
    let prompt_bytes = system.len()
        + messages
            .iter()
            .map(|m| content_text(m.get("content")).len())
            .sum::<usize>();
    let mut text = format!("anthropic/{model}: {last_user}");
    let mut stop_reason = "end_turn";
    let max = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() as u64 > max {
        text = words[..max as usize].join(" ");
        stop_reason = "max_tokens";
    }
    let tool = req
        .get("tools")
        .and_then(|t| t.get(0))
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| last_user.contains("use tool") && stop_reason == "end_turn")
        .map(|name| (name.to_string(), json!({ "q": last_user })));
    if tool.is_some() {
        stop_reason = "tool_use";
    }
    Reply {
        output_tokens: text.split_whitespace().count() as u64,
        text,
        tool,
        input_tokens: (prompt_bytes as u64).div_ceil(4),
        stop_reason,
    }
}

const TOOL_ID: &str = "toolu_fake_1";
const MESSAGE_ID: &str = "msg_fake_1";

fn message_json(model: &str, r: &Reply) -> Value {
    let mut content = vec![json!({"type": "text", "text": r.text})];
    if let Some((name, input)) = &r.tool {
        content.push(json!({"type": "tool_use", "id": TOOL_ID, "name": name, "input": input}));
    }
    json!({"id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model,
           "content": content, "stop_reason": r.stop_reason, "stop_sequence": null,
           "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens}})
}

/// The SSE events of a streamed answer, in order.
fn stream_events(model: &str, r: &Reply) -> Vec<(&'static str, Value)> {
    let mut ev = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": r.input_tokens, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for piece in pieces(&r.text, 3) {
        ev.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    ev.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some((name, input)) = &r.tool {
        ev.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": TOOL_ID, "name": name, "input": {}}}),
        ));
        for piece in pieces(&input.to_string(), 2) {
            ev.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        ev.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    ev.push((
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": r.stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": r.output_tokens}}),
    ));
    ev.push(("message_stop", json!({"type": "message_stop"})));
    ev
}

/// `s` in about `n` pieces, split on char boundaries.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn respond(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn api_error(status: u16, message: &str) -> Response {
    respond(status, "application/json", error_body(status, message))
}

/// `t` as RFC 3339 (UTC, whole seconds), as Anthropic sends rate-limit resets.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn rate_limited() -> Response {
    let mut r = api_error(429, "Number of requests has exceeded your rate limit");
    let reset = rfc3339(SystemTime::now() + Duration::from_secs(1));
    let h = r.headers_mut();
    h.insert("retry-after", 1.into());
    h.insert("anthropic-ratelimit-requests-remaining", 0.into());
    if let Ok(v) = reset.parse() {
        h.insert("anthropic-ratelimit-requests-reset", v);
    }
    r
}

async fn handle(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Relaxed);
    *lock(&s.last_headers) = Some(headers.clone());
    let req = serde_json::from_slice::<Value>(&body).ok();
    *lock(&s.last_body) = req.clone();
    let key = lock(&s.key).clone();
    if let Err(m) = check_auth(&headers, key.as_deref()) {
        return api_error(401, &m);
    }
    if let Err(m) = check_request(&headers, &body) {
        lock(&s.rejections).push(m.clone());
        return api_error(400, &m);
    }
    let req = req.unwrap_or(Value::Null);
    let b = lock(&s.behavior).clone();
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if let Some(status) = b.html_error {
        let page = format!(
            "<html><head><title>{status}</title></head><body><h1>{status} Error</h1></body></html>"
        );
        return respond(status, "text/html", page);
    }
    if b.rate_limited {
        return rate_limited();
    }
    if b.overloaded_share > 0.0 && lock(&s.rng).f64() < b.overloaded_share {
        return api_error(529, "Overloaded");
    }
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let r = reply(&req);
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return respond(
            200,
            "application/json",
            message_json(&model, &r).to_string(),
        );
    }
    let mut events = stream_events(&model, &r);
    if b.cut_stream {
        if let Some(first) = events.iter().position(|(n, _)| *n == "content_block_delta") {
            events.truncate(first + 1);
        }
    }
    let chunks = events.into_iter().map(|(name, data)| {
        Ok::<_, std::io::Error>(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
    });
    respond(
        200,
        "text/event-stream",
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::anthropic::{self as wire, DEFAULT_VERSION};
    use crate::http::wire::{Outbound, StreamTranslator};
    use axum::http::HeaderValue;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-version",
            HeaderValue::from_static(DEFAULT_VERSION),
        );
        h.insert("x-api-key", HeaderValue::from_static("sk-ant-test"));
        h
    }

    fn check(body: Value) -> Result<(), String> {
        check_request(&headers(), body.to_string().as_bytes())
    }

    fn valid() -> Value {
        json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn auth_rules() {
        assert!(check_auth(&headers(), None).is_ok());
        assert!(check_auth(&headers(), Some("sk-ant-test")).is_ok());
        assert!(check_auth(&headers(), Some("other")).is_err());
        assert!(check_auth(&HeaderMap::new(), None).is_err());
        let mut h = headers();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-ant-test"),
        );
        assert!(check_auth(&h, None).unwrap_err().contains("Authorization"));
    }

    #[test]
    fn strictness_rules() {
        assert_eq!(check(valid()), Ok(()));
        assert!(
            check_request(&HeaderMap::new(), valid().to_string().as_bytes())
                .unwrap_err()
                .contains("anthropic-version")
        );
        let with = |k: &str, v: Value| {
            let mut b = valid();
            b[k] = v;
            check(b)
        };
        let mut no_max = valid();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert!(check(no_max).unwrap_err().contains("max_tokens"));
        assert!(with("n", json!(1)).unwrap_err().contains("n: Extra inputs"));
        assert!(with("stream_options", json!({})).is_err());
        assert!(with("temperature", json!(1.5)).is_err());
        let msgs = |m: Value| with("messages", m);
        assert!(msgs(
            json!([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])
        )
        .unwrap_err()
        .contains("system"));
        assert!(msgs(json!([{"role": "assistant", "content": "x"}]))
            .unwrap_err()
            .contains("first"));
        assert!(
            msgs(json!([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]))
                .unwrap_err()
                .contains("alternate")
        );
        assert!(msgs(json!([{"role": "tool", "content": "x"}])).is_err());
        assert!(msgs(json!([{"role": "user", "content": ""}])).is_err());
        assert!(
            msgs(json!([{"role": "user", "content": [{"type": "text", "text": ""}]}])).is_err()
        );
        assert!(msgs(json!([])).is_err());
        let tool_turns = |id: &str| {
            json!([{"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "r"}]}])
        };
        assert_eq!(msgs(tool_turns("t1")), Ok(()));
        assert!(msgs(tool_turns("t2")).unwrap_err().contains("tool_use_id"));
        assert!(with("tools", json!([{"name": "f"}]))
            .unwrap_err()
            .contains("input_schema"));
        assert!(with("tool_choice", json!({"type": "function"})).is_err());
        assert!(check_request(&headers(), b"not json").is_err());
        assert!(check_request(&headers(), b"[1]").is_err());
    }

    /// What `wire::anthropic::request` makes of OpenAI bodies, the fake takes.
    #[test]
    fn translated_requests_pass_the_strict_rules() {
        let bodies = [
            json!({"model": "gpt", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                   "n": 1, "stream_options": {"include_usage": true}, "user": "u", "temperature": 2.0, "stop": ["x"]}),
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [
                    {"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "res"},
                {"role": "system", "content": "late system"},
                {"role": "user", "content": "more"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "parallel_tool_calls": false, "response_format": {"type": "text"}}),
        ];
        for b in bodies {
            for stream in [false, true] {
                let out = Outbound {
                    model: "claude-x",
                    stream,
                    default_max_tokens: Some(100),
                };
                let call = wire::request(b.as_object().unwrap(), &out).unwrap();
                assert_eq!(
                    check_request(&headers(), &call.body),
                    Ok(()),
                    "{}",
                    String::from_utf8_lossy(&call.body)
                );
            }
        }
    }

    #[test]
    fn replies_are_deterministic() {
        let req = json!({"model": "m", "max_tokens": 100, "system": "sys",
            "messages": [{"role": "user", "content": "please use tool now"}],
            "tools": [{"name": "search", "input_schema": {"type": "object"}}]});
        let r = reply(&req);
        assert_eq!(r.text, "anthropic/m: please use tool now");
        assert_eq!(r.output_tokens, 5);
        assert_eq!(r.input_tokens, (3 + 19_u64).div_ceil(4));
        assert_eq!(
            r.tool,
            Some(("search".into(), json!({"q": "please use tool now"})))
        );
        assert_eq!(r.stop_reason, "tool_use");
        let short = reply(
            &json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]}),
        );
        assert_eq!(
            (short.text.as_str(), short.stop_reason),
            ("anthropic/m: a", "max_tokens")
        );
        assert_eq!(pieces("héllo", 2), ["hél", "lo"]);
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_010)),
            "2023-11-14T22:13:30Z"
        );
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    async fn post(fake: &FakeAnthropic, key: &str, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/messages", fake.base_url()))
            .header("x-api-key", key)
            .header("anthropic-version", DEFAULT_VERSION)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Splits an SSE body into its events.
    fn events(body: &[u8]) -> Vec<Vec<u8>> {
        let text = String::from_utf8_lossy(body);
        text.split_inclusive("\n\n")
            .map(|e| e.as_bytes().to_vec())
            .collect()
    }

    fn translate_stream(body: &[u8]) -> (Vec<Value>, bool) {
        let mut s = wire::Stream::new();
        let mut out: Vec<Bytes> = events(body).iter().flat_map(|e| s.event(e)).collect();
        out.extend(s.finish());
        let done = out.last().is_some_and(|b| &b[..] == b"data: [DONE]\n\n");
        let chunks = out
            .iter()
            .filter(|b| &b[..] != b"data: [DONE]\n\n")
            .map(|b| serde_json::from_slice(&b[6..]).unwrap())
            .collect();
        (chunks, done)
    }

    #[tokio::test]
    async fn serves_plain_and_streamed_calls() {
        let fake = FakeAnthropic::start().await.unwrap();
        fake.expect_key("sk-ant-test");
        let openai = json!({"model": "gpt", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20});
        let out = Outbound {
            model: "claude-x",
            stream: false,
            default_max_tokens: None,
        };
        let call = wire::request(openai.as_object().unwrap(), &out).unwrap();
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        let r = post(&fake, "sk-ant-test", &body).await;
        assert_eq!(r.status(), 200);
        let answer = wire::response(&r.bytes().await.unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "anthropic/claude-x: hello there"
        );
        assert_eq!(answer.usage.unwrap().output_tokens, 3);
        assert_eq!(fake.last_api_key().as_deref(), Some("sk-ant-test"));
        assert_eq!(fake.last_body().unwrap()["model"], "claude-x");

        // Streamed, with a tool call.
        let openai = json!({"messages": [{"role": "user", "content": "use tool please"}], "max_tokens": 20,
            "tools": [{"type": "function", "function": {"name": "search"}}]});
        let out = Outbound {
            model: "claude-x",
            stream: true,
            default_max_tokens: None,
        };
        let call = wire::request(openai.as_object().unwrap(), &out).unwrap();
        let r = post(
            &fake,
            "sk-ant-test",
            &serde_json::from_slice(&call.body).unwrap(),
        )
        .await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let (chunks, done) = translate_stream(&r.bytes().await.unwrap());
        assert!(done);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "anthropic/claude-x: use tool please");
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"q": "use tool please"})
        );
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("tool_calls")]);
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test]
    async fn refuses_and_misbehaves_on_request() {
        let fake = FakeAnthropic::start().await.unwrap();
        fake.expect_key("k1");
        let r = post(&fake, "wrong", &valid()).await;
        assert_eq!(r.status(), 401);
        let f = wire::failure(
            401,
            &HeaderMap::new(),
            &r.bytes().await.unwrap(),
            SystemTime::now(),
        );
        assert_eq!(f.code.as_deref(), Some("authentication_error"));
        let mut bad = valid();
        bad["n"] = json!(2);
        let r = post(&fake, "k1", &bad).await;
        assert_eq!(r.status(), 400);
        assert_eq!(fake.rejections(), ["n: Extra inputs are not permitted"]);

        fake.set(AnthropicBehavior {
            rate_limited: true,
            ..Default::default()
        });
        let r = post(&fake, "k1", &valid()).await;
        assert_eq!(r.status(), 429);
        let h = r.headers().clone();
        let f = wire::failure(429, &h, &r.bytes().await.unwrap(), SystemTime::now());
        assert_eq!(f.code.as_deref(), Some("rate_limit_error"));
        assert_eq!(f.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(f.rate_limit.unwrap().remaining, 0);

        fake.set(AnthropicBehavior {
            overloaded_share: 1.0,
            ..Default::default()
        });
        let r = post(&fake, "k1", &valid()).await;
        assert_eq!(r.status(), 529);
        let f = wire::failure(
            529,
            &HeaderMap::new(),
            &r.bytes().await.unwrap(),
            SystemTime::now(),
        );
        assert_eq!(f.code.as_deref(), Some("overloaded_error"));

        fake.set(AnthropicBehavior {
            html_error: Some(502),
            ..Default::default()
        });
        let r = post(&fake, "k1", &valid()).await;
        assert_eq!(r.status(), 502);
        let f = wire::failure(
            502,
            &HeaderMap::new(),
            &r.bytes().await.unwrap(),
            SystemTime::now(),
        );
        assert!(f.code.is_none() && f.message.contains("502 Error"));

        fake.set(AnthropicBehavior {
            cut_stream: true,
            ..Default::default()
        });
        let mut b = valid();
        b["stream"] = json!(true);
        let r = post(&fake, "k1", &b).await;
        let (chunks, done) = translate_stream(&r.bytes().await.unwrap());
        assert!(!done);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
    }
}
