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
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeAnthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAnthropic")
            .field("addr", &self.addr)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeAnthropic {
    /// Starts one on a free port of 127.0.0.1, healthy, taking any non-empty key.
    pub async fn start() -> std::io::Result<FakeAnthropic> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
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
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeAnthropic {
            addr,
            inner,
            stop: Some(tx),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
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

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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
