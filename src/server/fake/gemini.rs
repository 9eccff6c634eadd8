//! A strict in-process fake of Google's Gemini API on 127.0.0.1: `POST
//! /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
//!
//! Strict as the real API is: a call without `x-goog-api-key` is refused (`403
//! PERMISSION_DENIED`), one with an `Authorization` header (with or without the key) gets
//! `401 UNAUTHENTICATED`, and a body with a field Gemini does not know (an OpenAI field
//! forwarded, a `system` role, an unknown `generationConfig` key, a part with no data, a
//! tool schema with `additionalProperties`) is a `400 INVALID_ARGUMENT`. Every refusal is recorded ([`FakeGemini::rejections`]), so a test
//! can assert there were none.
//!
//! Answers are deterministic: the reply is `"gemini/{model}: {last user text}"`, with
//! `promptTokenCount` = ⌈prompt text bytes / 4⌉ and `candidatesTokenCount` = the reply's
//! words; a streamed reply comes in 2–3 events, `usageMetadata` on each and `finishReason:
//! STOP` on the last. With tools declared and `use tool` in the last user text, the
//! answer is a `functionCall` of the first tool with `args: {"q": text}` (one
//! candidate token).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tollgate::server::fake::gemini::{FakeGemini, GeminiBehavior};
//! let fake = FakeGemini::start().await.unwrap();
//! fake.set(GeminiBehavior { unavailable: true, ..GeminiBehavior::default() });
//! assert!(fake.base_url().ends_with("/v1beta"));
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// How the fake answers (changed at any time with [`FakeGemini::set`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiBehavior {
    /// Delay before answering (after the request is checked).
    pub latency: Duration,
    /// Share of calls (0.0–1.0) answered `429 RESOURCE_EXHAUSTED` with a `RetryInfo` of
    /// `retryDelay: "1s"` (drawn from a fixed seed: the same calls get the same answers).
    pub exhausted_share: f64,
    /// Every call gets `503 UNAVAILABLE`.
    pub unavailable: bool,
    /// Every call gets this status with an HTML body (as Google's front ends send).
    pub html_error: Option<u16>,
    /// Streams end after their first event, without a `finishReason`.
    pub cut_stream: bool,
}

impl Default for GeminiBehavior {
    fn default() -> Self {
        GeminiBehavior {
            latency: Duration::ZERO,
            exhausted_share: 0.0,
            unavailable: false,
            html_error: None,
            cut_stream: false,
        }
    }
}

struct Inner {
    behavior: Mutex<GeminiBehavior>,
    calls: AtomicU64,
    last_body: Mutex<Option<Value>>,
    last_path: Mutex<Option<String>>,
    last_api_key: Mutex<Option<String>>,
    rejections: Mutex<Vec<String>>,
    rng: Mutex<fastrand::Rng>,
}

/// A running fake Gemini upstream. Stops when dropped.
pub struct FakeGemini {
    server: super::Server,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeGemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGemini")
            .field("addr", &self.server.addr())
            .finish()
    }
}

/// The fixed seed of the `exhausted_share` draws.
const SEED: u64 = 0x6765_6d69_6e69;

impl FakeGemini {
    /// Starts one on a free port of 127.0.0.1, healthy.
    pub async fn start() -> std::io::Result<FakeGemini> {
        let inner = Arc::new(Inner {
            behavior: Mutex::new(GeminiBehavior::default()),
            calls: AtomicU64::new(0),
            last_body: Mutex::new(None),
            last_path: Mutex::new(None),
            last_api_key: Mutex::new(None),
            rejections: Mutex::new(Vec::new()),
            rng: Mutex::new(fastrand::Rng::with_seed(SEED)),
        });
        let app = Router::new()
            .route("/v1beta/models/{*rest}", post(handle))
            .with_state(inner.clone());
        let server = super::Server::start("127.0.0.1:0", app).await?;
        Ok(FakeGemini { server, inner })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Its base URL (`http://127.0.0.1:PORT/v1beta`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1beta", self.server.addr())
    }

    /// Sets how it answers from the next call on.
    pub fn set(&self, b: GeminiBehavior) {
        *lock(&self.inner.behavior) = b;
    }

    /// Calls received (refused ones included).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Relaxed)
    }

    /// The JSON body of the last call (`None` before any, or if it was not JSON).
    pub fn last_body(&self) -> Option<Value> {
        lock(&self.inner.last_body).clone()
    }

    /// The path and query of the last call (`/v1beta/models/m:generateContent`).
    pub fn last_path(&self) -> Option<String> {
        lock(&self.inner.last_path).clone()
    }

    /// The `x-goog-api-key` header of the last call.
    pub fn last_api_key(&self) -> Option<String> {
        lock(&self.inner.last_api_key).clone()
    }

    /// Why each refused call was refused (`"400 INVALID_ARGUMENT: …"`), oldest first.
    pub fn rejections(&self) -> Vec<String> {
        lock(&self.inner.rejections).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Strictness
// ---------------------------------------------------------------------------------------

/// A refused call: HTTP status, gRPC status name, message.
#[derive(Debug)]
struct Reject {
    status: u16,
    grpc: &'static str,
    message: String,
}

fn invalid(message: impl Into<String>) -> Reject {
    Reject {
        status: 400,
        grpc: "INVALID_ARGUMENT",
        message: message.into(),
    }
}

/// A checked call.
struct Checked {
    model: String,
    stream: bool,
    body: Value,
}

/// Checks a call as the real API would: `headers`, `path` (and query) under the base URL
/// (`models/m:generateContent`, with or without a leading `/v1beta/`) and the body.
/// `Err` says why it would be refused (`"400 INVALID_ARGUMENT: Unknown name …"`).
pub fn check_request(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<(), String> {
    check(headers, path, body)
        .map(|_| ())
        .map_err(|r| format!("{} {}: {}", r.status, r.grpc, r.message))
}

fn check(headers: &HeaderMap, path: &str, body: &[u8]) -> Result<Checked, Reject> {
    let (model, stream) = route(path)?;
    auth(headers)?;
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))?;
    check_body(&body)?;
    Ok(Checked {
        model,
        stream,
        body,
    })
}

fn route(path: &str) -> Result<(String, bool), Reject> {
    let not_found = |m: String| Reject {
        status: 404,
        grpc: "NOT_FOUND",
        message: m,
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v1beta/").unwrap_or(path);
    let rest = path
        .strip_prefix("models/")
        .ok_or_else(|| not_found(format!("no such path: {path}")))?;
    let (model, method) = rest
        .split_once(':')
        .ok_or_else(|| not_found(format!("no method in {path}")))?;
    let model_ok = !model.is_empty()
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !model_ok {
        return Err(not_found(format!("models/{model} is not found")));
    }
    let sse = query.split('&').any(|kv| kv == "alt=sse");
    match method {
        "generateContent" => Ok((model.to_string(), false)),
        "streamGenerateContent" if sse => Ok((model.to_string(), true)),
        "streamGenerateContent" => Err(invalid(
            "streamGenerateContent without alt=sse answers a JSON array, which this fake does not serve",
        )),
        other => Err(not_found(format!("method {other} is not found"))),
    }
}

/// A key in `x-goog-api-key` and no `Authorization`: Google reads a bearer token as an
/// OAuth token (an API key there is refused), and a caller's key forwarded upstream is a
/// leak a test should see.
fn auth(headers: &HeaderMap) -> Result<(), Reject> {
    if headers.contains_key("authorization") {
        return Err(Reject {
            status: 401,
            grpc: "UNAUTHENTICATED",
            message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.".into(),
        });
    }
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty());
    if key.is_some() {
        return Ok(());
    }
    Err(Reject {
        status: 403,
        grpc: "PERMISSION_DENIED",
        message: "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.".into(),
    })
}

/// `v` is an object whose keys are all in `allowed`.
fn known_keys<'v>(
    v: &'v Value,
    at: &str,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, Reject> {
    let o = v
        .as_object()
        .ok_or_else(|| invalid(format!("{at}: expected an object")))?;
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
        ))),
        None => Ok(o),
    }
}

const TOP_LEVEL: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
];

const GENERATION_CONFIG: &[&str] = &[
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
    "thinkingConfig",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
];

fn check_body(body: &Value) -> Result<(), Reject> {
    let o = known_keys(body, "", TOP_LEVEL)?;
    let contents = match o.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => {
            return Err(invalid(
                "* GenerateContentRequest.contents: contents is not specified",
            ))
        }
    };
    for (i, c) in contents.iter().enumerate() {
        check_content(c, &format!("contents[{i}]"), true)?;
    }
    if let Some(s) = o.get("systemInstruction") {
        check_content(s, "system_instruction", false)?;
    }
    if let Some(g) = o.get("generationConfig") {
        known_keys(g, "generation_config", GENERATION_CONFIG)?;
    }
    if let Some(t) = o.get("tools") {
        check_tools(t)?;
    }
    if let Some(t) = o.get("toolConfig") {
        let t = known_keys(t, "tool_config", &["functionCallingConfig"])?;
        if let Some(f) = t.get("functionCallingConfig") {
            let f = known_keys(
                f,
                "tool_config.function_calling_config",
                &["mode", "allowedFunctionNames"],
            )?;
            let mode = f.get("mode").and_then(Value::as_str).unwrap_or("AUTO");
            if !["AUTO", "ANY", "NONE", "VALIDATED"].contains(&mode) {
                return Err(invalid(format!(
                    "Invalid value at 'tool_config.function_calling_config.mode': {mode}"
                )));
            }
        }
    }
    Ok(())
}

fn check_content(c: &Value, at: &str, in_contents: bool) -> Result<(), Reject> {
    let o = known_keys(c, at, &["role", "parts"])?;
    match o.get("role") {
        None => {}
        Some(Value::String(r)) if !in_contents || r == "user" || r == "model" => {}
        Some(r) => {
            return Err(invalid(format!(
                "Please use a valid role: user, model. Got {r} at '{at}.role'"
            )))
        }
    }
    let parts = match o.get("parts") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        _ => {
            return Err(invalid(format!(
                "* GenerateContentRequest.{at}.parts: contents.parts must not be empty."
            )))
        }
    };
    for (j, p) in parts.iter().enumerate() {
        check_part(p, &format!("{at}.parts[{j}]"))?;
    }
    Ok(())
}

const DATA_FIELDS: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
];

fn check_part(p: &Value, at: &str) -> Result<(), Reject> {
    let o = known_keys(
        p,
        at,
        &[
            "text",
            "inlineData",
            "fileData",
            "functionCall",
            "functionResponse",
            "thought",
            "thoughtSignature",
        ],
    )?;
    let data: Vec<&str> = DATA_FIELDS
        .iter()
        .copied()
        .filter(|f| o.contains_key(*f))
        .collect();
    if data.len() != 1 {
        return Err(invalid(format!(
            "* GenerateContentRequest.{at}.data: required oneof field 'data' must have one initialized field"
        )));
    }
    let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).is_some();
    let field = data[0];
    let v = o.get(field).unwrap_or(&Value::Null);
    let ok = match field {
        "text" => v.is_string(),
        "inlineData" => {
            known_keys(v, &format!("{at}.inline_data"), &["mimeType", "data"])?;
            str_field(v, "mimeType") && str_field(v, "data")
        }
        "fileData" => {
            known_keys(v, &format!("{at}.file_data"), &["mimeType", "fileUri"])?;
            str_field(v, "fileUri")
        }
        "functionCall" => {
            known_keys(v, &format!("{at}.function_call"), &["id", "name", "args"])?;
            str_field(v, "name") && v.get("args").is_none_or(Value::is_object)
        }
        _ => {
            known_keys(
                v,
                &format!("{at}.function_response"),
                &["id", "name", "response"],
            )?;
            str_field(v, "name") && v.get("response").is_some_and(Value::is_object)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "* GenerateContentRequest.{at}: a malformed {field}"
        )))
    }
}

const SCHEMA: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "minimum",
    "maximum",
];

fn check_tools(t: &Value) -> Result<(), Reject> {
    let tools = t
        .as_array()
        .ok_or_else(|| invalid("tools: expected an array"))?;
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let o = known_keys(
            tool,
            &at,
            &[
                "functionDeclarations",
                "googleSearch",
                "codeExecution",
                "urlContext",
            ],
        )?;
        let Some(decls) = o.get("functionDeclarations") else {
            continue;
        };
        let decls = decls
            .as_array()
            .ok_or_else(|| invalid(format!("{at}.function_declarations: expected an array")))?;
        for (j, d) in decls.iter().enumerate() {
            let at = format!("{at}.function_declarations[{j}]");
            let d = known_keys(
                d,
                &at,
                &[
                    "name",
                    "description",
                    "parameters",
                    "parametersJsonSchema",
                    "response",
                ],
            )?;
            if !d.get("name").is_some_and(Value::is_string) {
                return Err(invalid(format!(
                    "* GenerateContentRequest.{at}.name: Invalid function name"
                )));
            }
            if let Some(p) = d.get("parameters") {
                check_schema(p, &format!("{at}.parameters"))?;
            }
        }
    }
    Ok(())
}

fn check_schema(s: &Value, at: &str) -> Result<(), Reject> {
    let o = known_keys(s, at, SCHEMA)?;
    let is_object = o
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("object"));
    let no_properties = o
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if is_object && no_properties {
        return Err(invalid(format!(
            "* GenerateContentRequest.{at}.properties: should be non-empty for OBJECT type"
        )));
    }
    if let Some(Value::Object(props)) = o.get("properties") {
        for (name, p) in props {
            check_schema(p, &format!("{at}.properties[{name}]"))?;
        }
    }
    if let Some(items) = o.get("items") {
        check_schema(items, &format!("{at}.items"))?;
    }
    if let Some(Value::Array(any)) = o.get("anyOf") {
        for (k, a) in any.iter().enumerate() {
            check_schema(a, &format!("{at}.any_of[{k}]"))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

fn google_error(status: u16, grpc: &str, message: &str, details: Option<Value>) -> Response {
    let mut error = json!({"code": status, "message": message, "status": grpc});
    if let Some(d) = details {
        error["details"] = d;
    }
    respond(
        status,
        "application/json",
        json!({ "error": error }).to_string(),
    )
}

fn respond(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap_or_else(|_| Response::new(Body::from("fake gemini: bad response")))
}

async fn handle(
    State(s): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.calls.fetch_add(1, Relaxed);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    *lock(&s.last_path) = Some(path.clone());
    *lock(&s.last_api_key) = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    *lock(&s.last_body) = serde_json::from_slice(&body).ok();
    let call = match check(&headers, &path, &body) {
        Ok(c) => c,
        Err(r) => {
            lock(&s.rejections).push(format!("{} {}: {}", r.status, r.grpc, r.message));
            return google_error(r.status, r.grpc, &r.message, None);
        }
    };
    let b = lock(&s.behavior).clone();
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if let Some(status) = b.html_error {
        let html = format!("<!DOCTYPE html>\n<html lang=en><title>Error {status}</title><p><b>{status}.</b> That’s an error.</p></html>");
        return respond(status, "text/html; charset=UTF-8", html);
    }
    if b.unavailable {
        return google_error(
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            None,
        );
    }
    if b.exhausted_share > 0.0 && lock(&s.rng).f64() < b.exhausted_share {
        let details =
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]);
        return google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            Some(details),
        );
    }
    let n = s.calls.load(Relaxed);
    answer(&call, n, b.cut_stream)
}

/// Text parts of a content, joined with spaces.
fn content_text(c: &Value) -> String {
    c.get("parts")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn is_user(c: &Value) -> bool {
    c.get("role")
        .and_then(Value::as_str)
        .is_none_or(|r| r == "user")
}

/// The reply's parts per event (one event unless streamed), and the tokens.
struct Reply {
    events: Vec<Value>,
    prompt_tokens: u64,
    words: Vec<u64>,
}

fn reply(call: &Checked) -> Reply {
    let contents = call.body["contents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let system = call
        .body
        .get("systemInstruction")
        .map(content_text)
        .unwrap_or_default();
    let prompt_bytes = system.len()
        + contents
            .iter()
            .map(|c| content_text(c).len())
            .sum::<usize>();
    let prompt_tokens = (prompt_bytes as u64).div_ceil(4);
    let last_user = contents
        .iter()
        .rev()
        .filter(|c| is_user(c))
        .map(content_text)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let tool = call.body["tools"][0]["functionDeclarations"][0]["name"].as_str();
    let last_asks = contents
        .last()
        .is_some_and(|c| is_user(c) && content_text(c).contains("use tool"));
    if let (Some(name), true) = (tool, last_asks) {
        let part = json!({"functionCall": {"name": name, "args": {"q": last_user}}});
        return Reply {
            events: vec![json!([part])],
            prompt_tokens,
            words: vec![1],
        };
    }
    let text = format!("gemini/{}: {last_user}", call.model);
    let pieces: Vec<String> = if call.stream {
        split3(&text)
    } else {
        vec![text]
    };
    Reply {
        words: pieces
            .iter()
            .map(|p| p.split_whitespace().count() as u64)
            .collect(),
        events: pieces.into_iter().map(|p| json!([{ "text": p }])).collect(),
        prompt_tokens,
    }
}

/// The text in 2 or 3 pieces at word boundaries (the last may be empty).
fn split3(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let per = words.len().div_ceil(3).max(1);
    let mut pieces: Vec<String> = words.chunks(per).map(|c| c.concat()).collect();
    while pieces.len() < 2 {
        pieces.push(String::new());
    }
    pieces
}

fn answer(call: &Checked, n: u64, cut: bool) -> Response {
    let r = reply(call);
    let mut done_words = 0;
    let last = r.events.len().saturating_sub(1);
    let mut events = Vec::with_capacity(r.events.len());
    for (i, parts) in r.events.into_iter().enumerate() {
        done_words += r.words.get(i).copied().unwrap_or(0);
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if i == last && !(call.stream && cut) {
            candidate["finishReason"] = json!("STOP");
        }
        events.push(json!({
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": r.prompt_tokens, "candidatesTokenCount": done_words,
                              "totalTokenCount": r.prompt_tokens + done_words},
            "modelVersion": call.model,
            "responseId": format!("fake-{n}"),
        }));
    }
    if !call.stream {
        let body = events.pop().unwrap_or_default();
        return respond(200, "application/json", body.to_string());
    }
    if cut {
        events.truncate(1);
    }
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = events
        .iter()
        .map(|e| Ok(Bytes::from(format!("data: {e}\r\n\r\n"))))
        .collect();
    respond(
        200,
        "text/event-stream",
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::gemini::{self as wire, Stream};
    use crate::http::wire::{Outbound, StreamTranslator};

    fn key() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", "k".parse().unwrap());
        h
    }

    fn ok_body() -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    }

    fn check_json(path: &str, body: &Value) -> Result<(), String> {
        check_request(&key(), path, body.to_string().as_bytes())
    }

    const PLAIN: &str = "models/gemini-2.5-flash:generateContent";

    #[test]
    fn auth_is_strict() {
        let body = ok_body().to_string();
        assert_eq!(check_request(&key(), PLAIN, body.as_bytes()), Ok(()));
        let e = check_request(&HeaderMap::new(), PLAIN, body.as_bytes()).unwrap_err();
        assert!(e.starts_with("403 PERMISSION_DENIED"), "{e}");
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", "Bearer k".parse().unwrap());
        let e = check_request(&bearer, PLAIN, body.as_bytes()).unwrap_err();
        assert!(e.starts_with("401 UNAUTHENTICATED"), "{e}");
        bearer.insert("x-goog-api-key", "k".parse().unwrap());
        let e = check_request(&bearer, PLAIN, body.as_bytes()).unwrap_err();
        assert!(e.starts_with("401 UNAUTHENTICATED"), "{e}");
        let mut empty = HeaderMap::new();
        empty.insert("x-goog-api-key", "".parse().unwrap());
        let e = check_request(&empty, PLAIN, body.as_bytes()).unwrap_err();
        assert!(e.starts_with("403"), "{e}");
    }

    #[test]
    fn paths() {
        let b = ok_body();
        assert_eq!(
            check_json("/v1beta/models/m-1.5:generateContent", &b),
            Ok(())
        );
        assert_eq!(
            check_json("models/m:streamGenerateContent?alt=sse", &b),
            Ok(())
        );
        let e = check_json("models/m:streamGenerateContent", &b).unwrap_err();
        assert!(e.starts_with("400 INVALID_ARGUMENT"), "{e}");
        for p in [
            "models/m:countTokens",
            "models/m",
            "chat/completions",
            "models/a%2Fb:generateContent",
        ] {
            assert!(check_json(p, &b).unwrap_err().starts_with("404"), "{p}");
        }
    }

    #[test]
    fn bodies_are_strict() {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let with = |k: &str, v: Value| {
            let mut b = ok_body();
            b[k] = v;
            b
        };
        cases.push((with("messages", json!([])), "Unknown name \"messages\""));
        cases.push((with("max_tokens", json!(5)), "Unknown name \"max_tokens\""));
        cases.push((with("contents", json!([])), "contents is not specified"));
        cases.push((json!({}), "contents is not specified"));
        cases.push((json!([1]), "expected an object"));
        cases.push((
            with(
                "contents",
                json!([{"role": "system", "parts": [{"text": "x"}]}]),
            ),
            "valid role",
        ));
        cases.push((
            with(
                "contents",
                json!([{"role": "assistant", "parts": [{"text": "x"}]}]),
            ),
            "valid role",
        ));
        cases.push((
            with("contents", json!([{"role": "user", "parts": []}])),
            "must not be empty",
        ));
        cases.push((
            with("contents", json!([{"role": "user", "parts": [{}]}])),
            "oneof",
        ));
        cases.push((
            with(
                "contents",
                json!([{"role": "user", "parts": [{"type": "text", "text": "x"}]}]),
            ),
            "Unknown name \"type\"",
        ));
        cases.push((with("contents", json!([{"role": "user", "parts": [{"text": "x", "inlineData": {"mimeType": "a", "data": "b"}}]}])), "oneof"));
        cases.push((
            with(
                "contents",
                json!([{"role": "user", "parts": [{"inlineData": {"data": "b"}}]}]),
            ),
            "malformed",
        ));
        cases.push((with("contents", json!([{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": "x"}}]}])), "malformed"));
        cases.push((
            with("generationConfig", json!({"max_tokens": 5})),
            "Unknown name \"max_tokens\"",
        ));
        cases.push((
            with("generationConfig", json!({"stop": ["x"]})),
            "Unknown name \"stop\"",
        ));
        cases.push((
            with("tools", json!([{"type": "function"}])),
            "Unknown name \"type\"",
        ));
        cases.push((with("tools", json!([{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}}}]}])), "additionalProperties"));
        cases.push((with("tools", json!([{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "properties": {}}}]}])), "non-empty"));
        cases.push((
            with(
                "toolConfig",
                json!({"functionCallingConfig": {"mode": "REQUIRED"}}),
            ),
            "mode",
        ));
        for (body, want) in cases {
            let e = check_json(PLAIN, &body).unwrap_err();
            assert!(
                e.starts_with("400 INVALID_ARGUMENT") && e.contains(want),
                "{body}: {e}"
            );
        }
        let e = check_request(&key(), PLAIN, b"{not json").unwrap_err();
        assert!(e.contains("Invalid JSON payload"), "{e}");
        let full = json!({
            "contents": [{"role": "user", "parts": [{"text": "x"}, {"fileData": {"mimeType": "image/png", "fileUri": "https://a"}}]},
                         {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                         {"parts": [{"functionResponse": {"name": "f", "response": {"content": 1}}}]}],
            "systemInstruction": {"parts": [{"text": "s"}]},
            "generationConfig": {"maxOutputTokens": 5, "topK": 3, "thinkingConfig": {"thinkingBudget": 0}},
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
            "safetySettings": [],
        });
        assert_eq!(check_json(PLAIN, &full), Ok(()));
    }

    /// Everything `wire::gemini::request` sends passes the fake's checks.
    #[test]
    fn translated_requests_pass() {
        let bodies = [
            json!({"model": "x", "stream": true, "stream_options": {"include_usage": true},
                   "user": "u", "logit_bias": {}, "parallel_tool_calls": true,
                   "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                   "max_tokens": 10, "temperature": 1, "top_p": 1, "stop": ["x"], "n": 1, "seed": 3,
                   "presence_penalty": 0, "frequency_penalty": 0, "response_format": {"type": "json_schema",
                   "json_schema": {"name": "n", "strict": true, "schema": {"type": "object", "additionalProperties": false,
                   "properties": {"a": {"type": "string"}}, "required": ["a"]}}}}),
            json!({"messages": [
                {"role": "developer", "content": "d"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.gif"}}]},
                {"role": "assistant", "content": "ok", "tool_calls": [{"id": "a", "type": "function",
                    "function": {"name": "f", "arguments": "{\"q\": 1}"}}]},
                {"role": "tool", "tool_call_id": "a", "content": "not json"},
                {"role": "user", "content": "use tool"}],
              "tools": [{"type": "function", "function": {"name": "f", "description": "d", "strict": true,
                  "parameters": {"type": "object", "additionalProperties": false, "properties": {"q": {"type": "integer"}}}}},
                  {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {}}}}],
              "tool_choice": {"type": "function", "function": {"name": "f"}}}),
        ];
        for (i, b) in bodies.into_iter().enumerate() {
            let Value::Object(m) = b else { unreachable!() };
            for stream in [false, true] {
                let o = Outbound {
                    model: "gemini-2.5-flash",
                    stream,
                    default_max_tokens: Some(100),
                };
                let call = wire::request(&m, &o).unwrap();
                assert_eq!(
                    check_request(&key(), &call.path, &call.body),
                    Ok(()),
                    "body {i}"
                );
            }
        }
    }

    #[test]
    fn splitting() {
        assert_eq!(split3("a b c d e"), vec!["a b ", "c d ", "e"]);
        assert_eq!(split3("a b"), vec!["a ", "b"]);
        assert_eq!(split3("gemini/m: "), vec!["gemini/m: ", ""]);
        assert_eq!(split3(""), vec!["", ""]);
    }

    async fn post(fake: &FakeGemini, body: &Value, stream: bool) -> reqwest::Response {
        let Value::Object(m) = body else {
            unreachable!()
        };
        let o = Outbound {
            model: "gemini-2.5-flash",
            stream,
            default_max_tokens: None,
        };
        let call = wire::request(m, &o).unwrap();
        reqwest::Client::new()
            .post(format!("{}/{}", fake.base_url(), call.path))
            .header("x-goog-api-key", "secret")
            .header("content-type", "application/json")
            .body(call.body)
            .send()
            .await
            .unwrap()
    }

    /// The stream's OpenAI events: `(content, finish reasons, tool calls, [DONE] seen)`.
    async fn read_stream(
        r: reqwest::Response,
    ) -> (String, Vec<String>, Vec<Value>, bool, Option<u64>) {
        let text = r.text().await.unwrap();
        let mut t = Stream::new("gemini-2.5-flash");
        let mut out = Vec::new();
        for ev in text.split_inclusive("\r\n\r\n") {
            out.extend(t.event(ev.as_bytes()));
        }
        out.extend(t.finish());
        let (mut content, mut finish, mut calls, mut done) =
            (String::new(), Vec::new(), Vec::new(), false);
        for e in out {
            let data = std::str::from_utf8(&e)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap()
                .trim();
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            let c = &v["choices"][0];
            if let Some(s) = c["delta"]["content"].as_str() {
                content.push_str(s);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish.push(f.to_string());
            }
            if let Some(tc) = c["delta"]["tool_calls"].as_array() {
                calls.extend(tc.iter().cloned());
            }
        }
        (
            content,
            finish,
            calls,
            done,
            t.usage().map(|u| u.output_tokens),
        )
    }

    fn chat(text: &str) -> Value {
        json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]})
    }

    #[tokio::test]
    async fn plain_and_streaming_calls() {
        let fake = FakeGemini::start().await.unwrap();
        let r = post(&fake, &chat("hello there"), false).await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        let a = wire::response(&bytes, "gemini-2.5-flash").unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "gemini/gemini-2.5-flash: hello there"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        // "be brief" + "hello there": 19 bytes.
        assert_eq!(
            a.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((5, 3))
        );
        assert_eq!(fake.last_api_key().as_deref(), Some("secret"));
        assert_eq!(
            fake.last_path().as_deref(),
            Some("/v1beta/models/gemini-2.5-flash:generateContent")
        );
        assert_eq!(
            fake.last_body().unwrap()["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );

        let r = post(&fake, &chat("one two three four"), true).await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let (content, finish, calls, done, out_tokens) = read_stream(r).await;
        assert_eq!(content, "gemini/gemini-2.5-flash: one two three four");
        assert_eq!(
            (finish, calls.len(), done, out_tokens),
            (vec!["stop".to_string()], 0, true, Some(5))
        );
        assert_eq!(
            fake.last_path().as_deref(),
            Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        );
        assert_eq!((fake.calls(), fake.rejections()), (2, Vec::<String>::new()));
    }

    #[tokio::test]
    async fn tool_calls() {
        let fake = FakeGemini::start().await.unwrap();
        let mut body = chat("please use tool now");
        body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
        let r = post(&fake, &body, false).await;
        let a = wire::response(&r.bytes().await.unwrap(), "m").unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "lookup");
        assert_eq!(
            call["function"]["arguments"],
            json!({"q": "please use tool now"}).to_string()
        );
        // The result goes back; the model answers in text.
        let mut next = body.clone();
        let msgs = next["messages"].as_array_mut().unwrap();
        msgs.push(v["choices"][0]["message"].clone());
        msgs.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"hits\": 3}"}));
        let (content, finish, calls, done, _) = read_stream(post(&fake, &next, true).await).await;
        assert_eq!(content, "gemini/gemini-2.5-flash: please use tool now");
        assert_eq!(
            (finish, calls.len(), done),
            (vec!["stop".to_string()], 0, true)
        );
        assert_eq!(
            fake.last_body().unwrap()["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "lookup", "response": {"content": {"hits": 3}}})
        );
        // Streamed, the call comes whole.
        let (_, finish, calls, _, _) = read_stream(post(&fake, &body, true).await).await;
        assert_eq!((finish, calls.len()), (vec!["tool_calls".to_string()], 1));
        assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    }

    #[tokio::test]
    async fn behaviours_and_refusals() {
        let fake = FakeGemini::start().await.unwrap();
        let now = std::time::SystemTime::now();
        let fail = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let h = r.headers().clone();
            wire::failure(status, &h, &r.bytes().await.unwrap(), now)
        };
        let r = reqwest::Client::new()
            .post(format!("{}/models/m:generateContent", fake.base_url()))
            .bearer_auth("k")
            .body(ok_body().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(fail(r).await.code.as_deref(), Some("UNAUTHENTICATED"));
        assert_eq!(fake.rejections().len(), 1);

        fake.set(GeminiBehavior {
            exhausted_share: 1.0,
            ..GeminiBehavior::default()
        });
        let f = fail(post(&fake, &chat("x"), false).await).await;
        assert_eq!(
            (f.status, f.code.as_deref(), f.retry_after),
            (
                Some(429),
                Some("RESOURCE_EXHAUSTED"),
                Some(Duration::from_secs(1))
            )
        );
        fake.set(GeminiBehavior {
            unavailable: true,
            ..GeminiBehavior::default()
        });
        let f = fail(post(&fake, &chat("x"), false).await).await;
        assert_eq!(
            (f.status, f.code.as_deref()),
            (Some(503), Some("UNAVAILABLE"))
        );
        fake.set(GeminiBehavior {
            html_error: Some(502),
            ..GeminiBehavior::default()
        });
        let f = fail(post(&fake, &chat("x"), false).await).await;
        assert_eq!((f.status, f.code.as_deref()), (Some(502), None));
        assert!(f.message.contains("Error 502"), "{f}");
        fake.set(GeminiBehavior {
            cut_stream: true,
            ..GeminiBehavior::default()
        });
        let (content, finish, _, done, _) =
            read_stream(post(&fake, &chat("a b c d e f"), true).await).await;
        assert_eq!(
            (content.as_str(), finish.len(), done),
            ("gemini/gemini-2.5-flash: a b ", 0, false)
        );

        // About half of the calls are exhausted, the same ones each run.
        fake.set(GeminiBehavior {
            exhausted_share: 0.5,
            ..GeminiBehavior::default()
        });
        let mut exhausted = 0;
        for _ in 0..20 {
            if post(&fake, &chat("x"), false).await.status() == 429 {
                exhausted += 1;
            }
        }
        assert!((4..=16).contains(&exhausted), "{exhausted}");
        assert_eq!(fake.rejections().len(), 1);
    }
}
