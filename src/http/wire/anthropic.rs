//! Anthropic's Messages API (`POST {base_url}/messages`), both ways.
//!
//! Outbound (an upstream with `api = "anthropic"`): [`request`] turns the caller's OpenAI
//! chat body into a Messages request, [`response`] and [`failure`] turn the answer back
//! into a `chat.completion` or a [`Failure`], and [`Stream`] turns Anthropic's typed
//! server-sent events into OpenAI `chat.completion.chunk` events.
//!
//! Inbound (the relay's own `POST /v1/messages`, for Anthropic-format clients):
//! [`chat_request`] turns a Messages request into an OpenAI chat body, [`messages_response`]
//! and [`MessagesEvents`] turn the OpenAI answer (or stream) back, and [`error_body`]
//! writes Anthropic's error JSON.
//!
//! Everything here is a pure function of its input: no I/O, no panics on bad input.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use super::{Answer, Call, Outbound, StreamTranslator};
use crate::exec::{Failure, Usage};
use crate::http::classify::{self, INVALID_RESPONSE};

/// The `anthropic-version` header sent when the upstream sets none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Anthropic's code for a request it cannot take (and ours for one we cannot translate).
const INVALID_REQUEST: &str = "invalid_request_error";

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::status(400)
        .code(INVALID_REQUEST)
        .message(message.into())
}

fn invalid_response(message: impl Into<String>) -> Failure {
    Failure::status(502)
        .code(INVALID_RESPONSE)
        .message(message.into())
}

// ---------------------------------------------------------------------------------------
// Outbound: OpenAI chat body → Anthropic Messages request.
// ---------------------------------------------------------------------------------------

/// Translates an OpenAI chat body into a Messages request for `out.model`.
///
/// `system`/`developer` messages become the top-level `system` (joined with a blank
/// line); `tool_calls` become `tool_use` blocks and `tool` messages `tool_result` blocks
/// of a user message; consecutive messages of one role are merged (Anthropic wants the
/// roles to alternate). `max_tokens` (or `max_completion_tokens`, else
/// `out.default_max_tokens`) is required. `temperature` (clamped to Anthropic's 0–1),
/// `top_p`, `stop`, `tools`, `tool_choice`, `parallel_tool_calls` and `user` (as
/// `metadata.user_id`) are translated; every other field is dropped (Anthropic rejects
/// unknown fields).
///
/// Errors: a 400 `invalid_request_error` [`Failure`] for what cannot be translated
/// (malformed tool-call arguments, an unsupported content part or role, no `max_tokens`,
/// a conversation that does not start with a user message).
pub fn request(body: &Map<String, Value>, out: &Outbound) -> Result<Call, Failure> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("`messages` must be an array"))?;
    let (system, turns) = translate_messages(messages)?;
    let mut b = Map::new();
    b.insert("model".into(), json!(out.model));
    b.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        b.insert("system".into(), json!(system.join("\n\n")));
    }
    b.insert("max_tokens".into(), json!(max_tokens(body, out)?));
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        b.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        b.insert("top_p".into(), p.clone());
    }
    let stops = stop_sequences(body.get("stop"))?;
    if !stops.is_empty() {
        b.insert("stop_sequences".into(), json!(stops));
    }
    translate_tools(body, &mut b)?;
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        b.insert("metadata".into(), json!({ "user_id": u }));
    }
    if out.stream {
        b.insert("stream".into(), json!(true));
    }
    Ok(Call {
        path: "messages".into(),
        body: Value::Object(b).to_string().into_bytes(),
    })
}

/// `max_tokens`, else `max_completion_tokens`, else the policy's default.
fn max_tokens(body: &Map<String, Value>, out: &Outbound) -> Result<u64, Failure> {
    for field in ["max_tokens", "max_completion_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return v
                    .as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad_request(format!("`{field}` must be a positive integer")))
            }
        }
    }
    out.default_max_tokens.filter(|n| *n > 0).ok_or_else(|| {
        bad_request("max_tokens is required for an Anthropic upstream (set it in the request or the model's max_tokens in the policy)")
    })
}

/// OpenAI's `stop` (a string or an array of strings) as `stop_sequences`.
fn stop_sequences(stop: Option<&Value>) -> Result<Vec<String>, Failure> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .filter(|v| v.as_str() != Some(""))
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad_request("`stop` must be a string or an array of strings"))
            })
            .collect(),
        Some(_) => Err(bad_request(
            "`stop` must be a string or an array of strings",
        )),
    }
}

/// One Anthropic message being built.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// The system texts and the alternating user/assistant messages.
fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), Failure> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request(format!("messages[{i}] has no `role`")))?;
        let content = m.get("content");
        match role {
            "system" | "developer" => {
                let text = plain_text(content);
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => push_turn(&mut turns, "user", content_blocks(content, i)?),
            "assistant" => {
                let mut blocks = content_blocks(content, i)?;
                blocks.extend(tool_use_blocks(m, i)?);
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => push_turn(&mut turns, "user", vec![tool_result_block(m, i)?]),
            other => {
                return Err(bad_request(format!(
                    "messages[{i}]: role `{other}` cannot be sent to an Anthropic upstream"
                )))
            }
        }
    }
    match turns.first() {
        None => Err(bad_request("no user or assistant message with content")),
        Some(t) if t.role != "user" => Err(bad_request(
            "an Anthropic upstream needs the first non-system message to be from the user",
        )),
        Some(_) => Ok((system, turns.into_iter().map(turn_json).collect())),
    }
}

/// Appends blocks as a message, merged into the previous one of the same role. Empty
/// messages are left out (Anthropic rejects them).
fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(t) if t.role == role => t.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

/// A message's JSON; in a user message the `tool_result` blocks go first, as Anthropic
/// requires.
fn turn_json(mut t: Turn) -> Value {
    t.blocks
        .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    json!({ "role": t.role, "content": t.blocks })
}

/// The text of a content that is a string or an array of text parts.
fn plain_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// OpenAI content (a string, parts, or null) as Anthropic blocks; empty texts left out.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, Failure> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for p in parts {
                if let Some(b) = part_block(p, i)? {
                    blocks.push(b);
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(bad_request(format!(
            "messages[{i}].content must be a string or an array of parts"
        ))),
    }
}

/// One OpenAI content part as a block (`None` for an empty text).
fn part_block(p: &Value, i: usize) -> Result<Option<Value>, Failure> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = p.get("text").and_then(Value::as_str).unwrap_or("");
            Ok((!text.is_empty()).then(|| json!({"type": "text", "text": text})))
        }
        Some("image_url") => {
            let url = match p.get("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(o) => o.get("url").and_then(Value::as_str),
                None => None,
            };
            let url = url.ok_or_else(|| {
                bad_request(format!("messages[{i}]: an image_url part without a url"))
            })?;
            image_block(url, i).map(Some)
        }
        other => Err(bad_request(format!(
            "messages[{i}]: content part type {} cannot be sent to an Anthropic upstream",
            other.map_or("(none)".to_string(), |t| format!("`{t}`"))
        ))),
    }
}

/// An image block from a `data:` URL (base64) or an http(s) URL.
fn image_block(url: &str, i: usize) -> Result<Value, Failure> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad_request(format!("messages[{i}]: a malformed data: URL")))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            bad_request(format!("messages[{i}]: an image data: URL must be base64"))
        })?;
        return Ok(json!({"type": "image", "source":
            {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad_request(format!(
        "messages[{i}]: an image URL must be a data: or http(s) URL"
    )))
}

/// An assistant message's `tool_calls` as `tool_use` blocks.
fn tool_use_blocks(m: &Value, i: usize) -> Result<Vec<Value>, Failure> {
    let Some(calls) = m.get("tool_calls").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .map(|c| {
            let id = c.get("id").and_then(Value::as_str);
            let f = c.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(bad_request(format!(
                    "messages[{i}]: a tool call needs an id and a function name"
                )));
            };
            let input = tool_arguments(f.and_then(|f| f.get("arguments")), name, i)?;
            Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
        })
        .collect()
}

/// A tool call's `arguments` (a JSON string, or already an object) as an object.
fn tool_arguments(args: Option<&Value>, name: &str, i: usize) -> Result<Value, Failure> {
    let parsed = match args {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
        Some(v) => Some(v.clone()),
    };
    match parsed {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad_request(format!(
            "messages[{i}]: the arguments of tool call `{name}` are not a JSON object"
        ))),
    }
}

/// A `tool` message as a `tool_result` block.
fn tool_result_block(m: &Value, i: usize) -> Result<Value, Failure> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": plain_text(m.get("content"))}))
}

/// `tools`, `tool_choice` and `parallel_tool_calls` into the Anthropic body.
fn translate_tools(body: &Map<String, Value>, b: &mut Map<String, Value>) -> Result<(), Failure> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => ts.iter().map(tool).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad_request("`tools` must be an array")),
    };
    if tools.is_empty() {
        return Ok(());
    }
    b.insert("tools".into(), Value::Array(tools));
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(tool_choice(c)?),
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c.get("type").and_then(Value::as_str) != Some("none") {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        b.insert("tool_choice".into(), c);
    }
    Ok(())
}

/// One OpenAI function tool as an Anthropic tool.
fn tool(t: &Value) -> Result<Value, Failure> {
    let f = t
        .get("function")
        .filter(|_| {
            t.get("type")
                .and_then(Value::as_str)
                .is_none_or(|ty| ty == "function")
        })
        .ok_or_else(|| bad_request("only function tools can be sent to an Anthropic upstream"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("a tool needs a function name"))?;
    let schema = f
        .get("parameters")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let mut out = json!({"name": name, "input_schema": schema});
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        out["description"] = json!(d);
    }
    Ok(out)
}

/// OpenAI's `tool_choice` as Anthropic's.
fn tool_choice(c: &Value) -> Result<Value, Failure> {
    match c {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => Err(bad_request(format!("unknown tool_choice `{other}`"))),
        },
        _ => c
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| json!({"type": "tool", "name": name}))
            .ok_or_else(|| bad_request("tool_choice must name a function")),
    }
}

// ---------------------------------------------------------------------------------------
// Outbound: Anthropic answers → OpenAI.
// ---------------------------------------------------------------------------------------

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage: input counts the cache writes and reads too.
fn anthropic_usage(u: Option<&Value>) -> Option<Usage> {
    let u = u?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (input, output) = (n("input_tokens"), n("output_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    let cache = n("cache_creation_input_tokens")
        .unwrap_or(0)
        .saturating_add(n("cache_read_input_tokens").unwrap_or(0));
    Some(Usage {
        input_tokens: input.unwrap_or(0).saturating_add(cache),
        output_tokens: output.unwrap_or(0),
    })
}

fn openai_usage(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens.saturating_add(u.output_tokens)})
}

/// Translates a 2xx Messages answer into an OpenAI `chat.completion`.
///
/// Text blocks are joined into `message.content` (null when there are none), `tool_use`
/// blocks become `tool_calls`, `stop_reason` becomes `finish_reason` (`end_turn`,
/// `stop_sequence` → `stop`; `max_tokens` → `length`; `tool_use` → `tool_calls`;
/// `refusal` → `content_filter`), and the usage counts cache tokens as prompt tokens.
///
/// Errors: a body that is not a message: `502 invalid_upstream_response`, or for an
/// `{"type": "error"}` body a 502 with the error's type as its code.
pub fn response(bytes: &[u8]) -> Result<Answer, Failure> {
    let v: Value = serde_json::from_slice(bytes).map_err(|_| {
        invalid_response(format!(
            "an Anthropic answer that is not JSON: {}",
            classify::snippet(bytes)
        ))
    })?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        let e = v.get("error").cloned().unwrap_or(Value::Null);
        return Err(classify::context_length(classify::error_failure(
            502, &e, None,
        )));
    }
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_response("an Anthropic answer without a content array"))?;
    let (text, tool_calls) = split_blocks(blocks);
    let usage = anthropic_usage(v.get("usage"));
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let mut out = json!({
        "id": v.get("id").cloned().unwrap_or(json!("msg_unknown")),
        "object": "chat.completion",
        "created": 0,
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str))}],
    });
    if let Some(u) = &usage {
        out["usage"] = openai_usage(u);
    }
    Ok(Answer {
        body: Bytes::from(out.to_string()),
        usage,
    })
}

/// The joined text (null if none) and the OpenAI tool calls of a message's blocks.
fn split_blocks(blocks: &[Value]) -> (Value, Vec<Value>) {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                text.get_or_insert_with(String::new).push_str(t);
            }
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                },
            })),
            _ => {}
        }
    }
    (text.map_or(Value::Null, Value::String), calls)
}

/// Classifies a non-2xx Anthropic answer.
///
/// The code is the body's `error.type` (`overloaded_error`, `rate_limit_error`,
/// `invalid_request_error`, …) and the message its `error.message`; a 4xx saying the
/// prompt is over the context window gets [`classify::CONTEXT_LENGTH_EXCEEDED`].
/// `retry-after` and `anthropic-ratelimit-requests-*` headers are read. A body that is not
/// Anthropic's error JSON (HTML, empty) gives a failure with the status only and the
/// body's start as its message.
pub fn failure(status: u16, headers: &HeaderMap, bytes: &[u8], now: SystemTime) -> Failure {
    let wait = classify::retry_after(headers, now);
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    let error = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .filter(|e| e.is_object() || e.is_string());
    let mut f = match error {
        Some(e) => {
            let f = classify::error_failure(status, e, wait);
            if (400..500).contains(&status) {
                classify::context_length(f)
            } else {
                f
            }
        }
        None if bytes.is_empty() => Failure::status(status),
        None => Failure::status(status).message(classify::snippet(bytes)),
    };
    if f.retry_after.is_none() {
        f.retry_after = wait;
    }
    f.rate_limit = classify::rate_limit(headers, now);
    f
}

// ---------------------------------------------------------------------------------------
// Outbound streams: Anthropic events → OpenAI chunks.
// ---------------------------------------------------------------------------------------

/// One server-sent event's `event:` name and joined `data:` lines (`None` when it has no
/// data line: a comment or keep-alive).
fn sse_fields(raw: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(raw);
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("event:") {
            event = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_string()),
            }
        }
    }
    (event, data)
}

/// An OpenAI SSE event.
fn data_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// An OpenAI error event with a failure-class code.
fn error_event(code: &str, message: &str) -> Bytes {
    data_event(&json!({"error": {"message": message, "type": "upstream_error", "code": code}}))
}

/// Translates an Anthropic Messages stream into OpenAI `chat.completion.chunk` events.
///
/// `message_start` gives the first chunk (`delta.role = "assistant"`); text deltas become
/// `delta.content`, `tool_use` blocks `delta.tool_calls` (their `input_json_delta`s streamed
/// as `function.arguments`); `message_stop` gives the chunk with `finish_reason`. Then
/// [`StreamTranslator::finish`] gives the usage chunk (`choices: []`) and `data: [DONE]` —
/// or nothing when `message_stop` never came or the upstream sent an error (the stream was
/// cut short). An `error` event becomes an OpenAI error event whose `code` is the error's
/// type (`overloaded_error`); malformed data an error event `invalid_upstream_response`.
/// `ping`s, comments and unknown event types give nothing.
#[derive(Debug, Default)]
pub struct Stream {
    id: String,
    model: String,
    usage: Usage,
    /// The OpenAI tool-call index of each Anthropic block index that is a `tool_use`.
    tool_blocks: Vec<(u64, usize)>,
    stop_reason: Option<String>,
    /// `message_stop` came.
    stopped: bool,
    /// An error was sent: nothing more goes out.
    failed: bool,
}

impl Stream {
    /// A translator for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        data_event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }

    fn fail(&mut self, code: &str, message: &str) -> Vec<Bytes> {
        self.failed = true;
        vec![error_event(code, message)]
    }

    fn message_start(&mut self, v: &Value) -> Vec<Bytes> {
        let m = v.get("message").unwrap_or(&Value::Null);
        self.id = m
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("msg")
            .to_string();
        self.model = m
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(u) = anthropic_usage(m.get("usage")) {
            self.usage = u;
        }
        vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
    }

    fn block_start(&mut self, v: &Value) -> Vec<Bytes> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let block = v.get("content_block").unwrap_or(&Value::Null);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => match block.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => vec![self.chunk(json!({"content": t}), None)],
                _ => Vec::new(),
            },
            Some("tool_use") => {
                let n = self.tool_blocks.len();
                self.tool_blocks.push((index, n));
                let call = json!({"index": n, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}});
                vec![self.chunk(json!({"tool_calls": [call]}), None)]
            }
            _ => Vec::new(),
        }
    }

    fn block_delta(&mut self, v: &Value) -> Vec<Bytes> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let d = v.get("delta").unwrap_or(&Value::Null);
        match d.get("type").and_then(Value::as_str) {
            Some("text_delta") => match d.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => vec![self.chunk(json!({"content": t}), None)],
                _ => Vec::new(),
            },
            Some("input_json_delta") => {
                let Some(&(_, n)) = self.tool_blocks.iter().find(|(i, _)| *i == index) else {
                    return Vec::new();
                };
                match d.get("partial_json").and_then(Value::as_str) {
                    Some(p) if !p.is_empty() => {
                        let call = json!({"index": n, "function": {"arguments": p}});
                        vec![self.chunk(json!({"tool_calls": [call]}), None)]
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn message_delta(&mut self, v: &Value) {
        if let Some(r) = v
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str)
        {
            self.stop_reason = Some(r.to_string());
        }
        // message_delta's usage is cumulative; it may repeat input_tokens.
        if let Some(u) = v.get("usage") {
            if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
                self.usage.output_tokens = o;
            }
            if u.get("input_tokens").and_then(Value::as_u64).is_some() {
                if let Some(all) = anthropic_usage(Some(u)) {
                    self.usage.input_tokens = all.input_tokens;
                }
            }
        }
    }

    fn upstream_error(&mut self, v: &Value) -> Vec<Bytes> {
        let e = v.get("error").unwrap_or(&Value::Null);
        let code = e
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .unwrap_or("api_error")
            .to_string();
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the upstream sent an error")
            .to_string();
        self.fail(&code, &message)
    }
}

impl StreamTranslator for Stream {
    fn event(&mut self, raw: &[u8]) -> Vec<Bytes> {
        if self.failed || self.stopped {
            return Vec::new();
        }
        let (name, data) = sse_fields(raw);
        let Some(data) = data else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return self.fail(
                INVALID_RESPONSE,
                "an Anthropic stream event that is not JSON",
            );
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .map(String::from)
            .or(name);
        match kind.as_deref() {
            Some("message_start") => self.message_start(&v),
            Some("content_block_start") => self.block_start(&v),
            Some("content_block_delta") => self.block_delta(&v),
            Some("message_delta") => {
                self.message_delta(&v);
                Vec::new()
            }
            Some("message_stop") => {
                self.stopped = true;
                let finish = finish_reason(self.stop_reason.as_deref());
                vec![self.chunk(json!({}), Some(finish))]
            }
            Some("error") => self.upstream_error(&v),
            None => self.fail(INVALID_RESPONSE, "an Anthropic stream event without a type"),
            // ping, content_block_stop, and types added later.
            Some(_) => Vec::new(),
        }
    }

    fn finish(&mut self) -> Vec<Bytes> {
        if !self.stopped || self.failed {
            return Vec::new();
        }
        let usage = data_event(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
            "choices": [], "usage": openai_usage(&self.usage),
        }));
        vec![usage, Bytes::from_static(b"data: [DONE]\n\n")]
    }
}

// ---------------------------------------------------------------------------------------
// Inbound: the relay's `POST /v1/messages`.
// ---------------------------------------------------------------------------------------

/// Translates an Anthropic Messages request into an OpenAI chat body.
///
/// `system` (a string or text blocks) becomes a first system message; text and image
/// blocks become content parts (a lone text block a plain string), `tool_use` blocks
/// `tool_calls`, and `tool_result` blocks `tool` messages (placed before the rest of their
/// user message). `model`, `max_tokens`, `temperature`, `top_p` and `stream` are kept
/// (a stream asks for `stream_options.include_usage`), `stop_sequences` become `stop`,
/// `tools`/`tool_choice` (and `disable_parallel_tool_use`) OpenAI's function tools, and
/// `metadata.user_id` becomes `user`; `top_k`, `thinking` and `service_tier` are dropped.
///
/// Errors: a message for the caller when `model`, `max_tokens` or `messages` is missing
/// or a field has the wrong type.
pub fn chat_request(body: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("`model` is required and must be a string")?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("`max_tokens` is required and must be a non-negative integer")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is required and must be an array")?;
    let mut out_messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => {
            let text = system_text(s)?;
            if !text.is_empty() {
                out_messages.push(json!({"role": "system", "content": text}));
            }
        }
    }
    for (i, m) in messages.iter().enumerate() {
        out_messages.extend(inbound_message(m, i)?);
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(out_messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    inbound_sampling(body, &mut out)?;
    inbound_tools(body, &mut out)?;
    Ok(out)
}

/// `temperature`, `top_p`, `stop_sequences`, `stream`, `metadata.user_id`.
fn inbound_sampling(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    for k in ["temperature", "top_p"] {
        match body.get(k) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(k.into(), v.clone());
            }
            Some(_) => return Err(format!("`{k}` must be a number")),
        }
    }
    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            if !a.is_empty() {
                out.insert("stop".into(), Value::Array(a.clone()));
            }
        }
        Some(_) => return Err("`stop_sequences` must be an array of strings".into()),
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err("`stream` must be a boolean".into()),
    }
    if let Some(u) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), json!(u));
    }
    Ok(())
}

/// `system` as one text: a string, or text blocks joined with a blank line.
fn system_text(s: &Value) -> Result<String, String> {
    match s {
        Value::String(t) => Ok(t.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| {
                b.get("text")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| "`system` blocks must be text blocks".to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|ts| ts.join("\n\n")),
        _ => Err("`system` must be a string or an array of text blocks".into()),
    }
}

/// One Anthropic message as OpenAI messages (tool results are messages of their own).
fn inbound_message(m: &Value, i: usize) -> Result<Vec<Value>, String> {
    let role = m.get("role").and_then(Value::as_str);
    let role = match role {
        Some(r @ ("user" | "assistant")) => r,
        _ => {
            return Err(format!(
                "messages.{i}.role must be \"user\" or \"assistant\""
            ))
        }
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => return Ok(vec![json!({"role": role, "content": s})]),
        Some(Value::Array(b)) => b,
        _ => return Err(format!("messages.{i}.content must be a string or an array")),
    };
    if role == "assistant" {
        return assistant_message(blocks, i).map(|m| vec![m]);
    }
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or(format!("messages.{i}: a text block needs `text`"))?;
                parts.push(json!({"type": "text", "text": t}));
            }
            Some("image") => parts.push(inbound_image(b, i)?),
            Some("tool_result") => out.push(inbound_tool_result(b, i)?),
            other => {
                return Err(format!(
                    "messages.{i}: content block type {other:?} is not supported"
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": collapse_parts(parts)}));
    }
    Ok(out)
}

/// A lone text part as a plain string (what every OpenAI-compatible server takes).
fn collapse_parts(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0].get("type").and_then(Value::as_str) == Some("text") {
        return parts.swap_remove(0)["text"].take();
    }
    Value::Array(parts)
}

/// An assistant message: texts joined, `tool_use` blocks as `tool_calls`, thinking dropped.
fn assistant_message(blocks: &[Value], i: usize) -> Result<Value, String> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let (Some(id), Some(name)) = (
                    b.get("id").and_then(Value::as_str),
                    b.get("name").and_then(Value::as_str),
                ) else {
                    return Err(format!(
                        "messages.{i}: a tool_use block needs `id` and `name`"
                    ));
                };
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking") | Some("redacted_thinking") => {}
            other => {
                return Err(format!(
                    "messages.{i}: content block type {other:?} is not supported"
                ))
            }
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut m = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

/// An image block as an `image_url` part (a base64 source as a `data:` URL).
fn inbound_image(b: &Value, i: usize) -> Result<Value, String> {
    let src = b
        .get("source")
        .ok_or(format!("messages.{i}: an image block needs `source`"))?;
    let str_of = |k: &str| src.get(k).and_then(Value::as_str);
    let url = match str_of("type") {
        Some("base64") => match (str_of("media_type"), str_of("data")) {
            (Some(mt), Some(d)) => format!("data:{mt};base64,{d}"),
            _ => {
                return Err(format!(
                    "messages.{i}: a base64 image needs `media_type` and `data`"
                ))
            }
        },
        Some("url") => str_of("url")
            .ok_or(format!("messages.{i}: a url image needs `url`"))?
            .to_string(),
        _ => {
            return Err(format!(
                "messages.{i}: image source type must be base64 or url"
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block as a `tool` message (its content's texts joined).
fn inbound_tool_result(b: &Value, i: usize) -> Result<Value, String> {
    let id = b.get("tool_use_id").and_then(Value::as_str).ok_or(format!(
        "messages.{i}: a tool_result block needs `tool_use_id`"
    ))?;
    let content = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(_) => {
            return Err(format!(
                "messages.{i}: tool_result content must be a string or an array"
            ))
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// Anthropic `tools` and `tool_choice` as OpenAI's.
fn inbound_tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ts)) => {
            let tools = ts
                .iter()
                .map(|t| {
                    let name = t.get("name").and_then(Value::as_str).ok_or("a tool needs a `name`")?;
                    let mut f = json!({"name": name,
                        "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
                    if let Some(d) = t.get("description").and_then(Value::as_str) {
                        f["description"] = json!(d);
                    }
                    Ok(json!({"type": "function", "function": f}))
                })
                .collect::<Result<Vec<_>, String>>()?;
            if !tools.is_empty() {
                out.insert("tools".into(), Value::Array(tools));
            }
        }
        Some(_) => return Err("`tools` must be an array".into()),
    }
    let Some(c) = body.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let choice = match c.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or("tool_choice of type tool needs a `name`")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err("tool_choice.type must be auto, any, tool or none".into()),
    };
    out.insert("tool_choice".into(), choice);
    if c.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ => "end_turn",
    }
}

/// An Anthropic message id: the OpenAI id with `msg_` in front (as it is if it has it).
fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_tollgate".to_string(),
    }
}

/// Translates an OpenAI `chat.completion` into an Anthropic message for `model` (the
/// model the client asked for).
///
/// `message.content` becomes a text block, `tool_calls` `tool_use` blocks (arguments
/// parsed), `finish_reason` the `stop_reason` (`length` → `max_tokens`, `tool_calls` →
/// `tool_use`, anything else `end_turn`), and the usage `input_tokens`/`output_tokens`.
///
/// Errors: a body that is not a chat completion, an `{"error": …}` body, or tool-call
/// arguments that are not a JSON object.
pub fn messages_response(chat_body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let v: Value =
        serde_json::from_slice(chat_body).map_err(|_| "the answer is not JSON".to_string())?;
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let m = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the upstream sent an error");
        return Err(m.to_string());
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the answer has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(t) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = c.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let input = match f.get("arguments") {
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    format!("the arguments of tool call `{name}` are not a JSON object")
                })?,
            _ => json!({}),
        };
        content.push(json!({"type": "tool_use", "id": c.get("id").and_then(Value::as_str).unwrap_or("toolu_tollgate"), "name": name, "input": input}));
    }
    let usage = classify::usage(&v).unwrap_or_default();
    let out = json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    });
    Ok(out.to_string().into_bytes())
}

/// Anthropic's error JSON, its type from the status (400 `invalid_request_error`, 401
/// `authentication_error`, 403 `permission_error`, 404 `not_found_error`, 413
/// `request_too_large`, 429 `rate_limit_error`, 529 `overloaded_error`, other 5xx
/// `api_error`, other 4xx `invalid_request_error`).
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    let t = error_type(status);
    json!({"type": "error", "error": {"type": t, "message": message}})
        .to_string()
        .into_bytes()
}

/// Anthropic's error types.
const ERROR_TYPES: [&str; 8] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
];

fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The block a [`MessagesEvents`] has open.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenBlock {
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u64),
}

/// Translates an OpenAI chunk stream into Anthropic's Messages events, for the relay's
/// `POST /v1/messages` with `stream: true`.
///
/// The first chunk gives `message_start` (empty content, usage so far); text deltas
/// become a text block and tool calls `tool_use` blocks (`content_block_start`,
/// `content_block_delta` with `text_delta` / `input_json_delta`, `content_block_stop`).
/// The `finish_reason` and the usage chunk that follows it are held until `[DONE]` (or
/// [`finish`](Self::finish)), which gives `message_delta` (`stop_reason`,
/// `usage.output_tokens` and `input_tokens`) and `message_stop`. An OpenAI error event
/// becomes an Anthropic `error` event, after which nothing more is sent.
#[derive(Debug)]
pub struct MessagesEvents {
    model: String,
    id: String,
    started: bool,
    open: Option<OpenBlock>,
    /// Index of the next Anthropic content block.
    next_block: u64,
    stop_reason: Option<String>,
    usage: Usage,
    /// `message_stop` or an error went out.
    done: bool,
}

/// One Anthropic SSE event.
fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl MessagesEvents {
    /// A translator for one stream; `model` is the model the client asked for.
    pub fn new(model: &str) -> Self {
        MessagesEvents {
            model: model.to_string(),
            id: message_id(None),
            started: false,
            open: None,
            next_block: 0,
            stop_reason: None,
            usage: Usage::default(),
            done: false,
        }
    }

    /// One OpenAI event (a raw `data: …\n\n` block) as Anthropic events.
    pub fn chunk(&mut self, openai_event: &[u8]) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let (_, data) = sse_fields(openai_event);
        let Some(data) = data else {
            return Vec::new();
        };
        if data.trim() == "[DONE]" {
            return self.finish();
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return self.error("api_error", "the upstream sent an event that is not JSON");
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            let m = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream failed");
            let known = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .filter(|t| ERROR_TYPES.contains(t))
            };
            let t = known("code")
                .or_else(|| known("type"))
                .unwrap_or("api_error");
            return self.error(t, m);
        }
        let mut out = self.start(&v);
        if let Some(u) = classify::usage(&v) {
            self.usage = u;
        }
        let choice = v.get("choices").and_then(|c| c.get(0));
        if let Some(d) = choice.and_then(|c| c.get("delta")) {
            out.extend(self.delta(d));
        }
        if let Some(f) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.stop_reason = Some(f.to_string());
        }
        out
    }

    /// The OpenAI stream ended: closes the message with what is known (nothing if it was
    /// already closed).
    pub fn finish(&mut self) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        let mut out = self.start(&Value::Null);
        out.extend(self.close_block());
        self.done = true;
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.stop_reason.as_deref()), "stop_sequence": null},
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens}});
        out.push(named_event("message_delta", &delta));
        out.push(named_event(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
        out
    }

    fn error(&mut self, kind: &str, message: &str) -> Vec<Bytes> {
        self.done = true;
        let e = json!({"type": "error", "error": {"type": kind, "message": message}});
        vec![named_event("error", &e)]
    }

    /// `message_start`, once.
    fn start(&mut self, v: &Value) -> Vec<Bytes> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        self.id = message_id(v.get("id").and_then(Value::as_str));
        if let Some(u) = classify::usage(v) {
            self.usage = u;
        }
        let m = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": 0}}});
        vec![named_event("message_start", &m)]
    }

    fn close_block(&mut self) -> Vec<Bytes> {
        if self.open.take().is_none() {
            return Vec::new();
        }
        let index = self.next_block;
        self.next_block += 1;
        vec![named_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        )]
    }

    fn open_block(&mut self, kind: OpenBlock, block: Value) -> Vec<Bytes> {
        let mut out = self.close_block();
        self.open = Some(kind);
        let start = json!({"type": "content_block_start", "index": self.next_block, "content_block": block});
        out.push(named_event("content_block_start", &start));
        out
    }

    fn block_delta(&self, delta: Value) -> Bytes {
        let d = json!({"type": "content_block_delta", "index": self.next_block, "delta": delta});
        named_event("content_block_delta", &d)
    }

    /// A chunk's `delta`: text and tool-call pieces.
    fn delta(&mut self, d: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(t) = d
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.open != Some(OpenBlock::Text) {
                out.extend(self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""})));
            }
            out.push(self.block_delta(json!({"type": "text_delta", "text": t})));
        }
        for c in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = c.get("function").unwrap_or(&Value::Null);
            let new_call = c.get("id").and_then(Value::as_str).is_some();
            if new_call || self.open != Some(OpenBlock::Tool(index)) {
                let block = json!({"type": "tool_use",
                    "id": c.get("id").and_then(Value::as_str).map_or_else(|| format!("toolu_{index}"), String::from),
                    "name": f.get("name").and_then(Value::as_str).unwrap_or(""), "input": {}});
                out.extend(self.open_block(OpenBlock::Tool(index), block));
            }
            if let Some(a) = f
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push(self.block_delta(json!({"type": "input_json_delta", "partial_json": a})));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::Duration;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn out(stream: bool, default_max_tokens: Option<u64>) -> Outbound<'static> {
        Outbound {
            model: "claude-sonnet-4-5",
            stream,
            default_max_tokens,
        }
    }

    fn translate(body: Value) -> Value {
        let call = request(&obj(body), &out(false, Some(1000))).unwrap();
        assert_eq!(call.path, "messages");
        serde_json::from_slice(&call.body).unwrap()
    }

    fn translate_err(body: Value) -> Failure {
        request(&obj(body), &out(false, Some(1000))).unwrap_err()
    }

    #[test]
    fn system_messages_go_top_level_and_roles_alternate() {
        let v = translate(json!({"model": "x", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "there"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ]}));
        assert_eq!(v["system"], "be brief\n\nbe kind");
        assert_eq!(v["model"], "claude-sonnet-4-5");
        assert_eq!(v["max_tokens"], 1000);
        let ms = v["messages"].as_array().unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0]["role"], "user");
        assert_eq!(
            ms[0]["content"],
            json!([{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}])
        );
        assert_eq!(ms[1]["role"], "assistant");
        assert_eq!(ms[2]["content"][0]["text"], "bye");
        assert!(v.get("stream").is_none());
    }

    #[test]
    fn unknown_fields_are_dropped_and_known_ones_translated() {
        let v = translate(
            json!({"model": "x", "messages": [{"role": "user", "content": "hi"}],
            "n": 2, "logprobs": true, "response_format": {"type": "json_object"},
            "stream_options": {"include_usage": true}, "user": "u-1", "seed": 3,
            "temperature": 1.7, "top_p": 0.9, "stop": "END", "max_completion_tokens": 55,
            "frequency_penalty": 0.5}),
        );
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for k in &keys {
            assert!(
                [
                    "model",
                    "messages",
                    "max_tokens",
                    "temperature",
                    "top_p",
                    "stop_sequences",
                    "metadata"
                ]
                .contains(&k.as_str()),
                "unexpected field {k}"
            );
        }
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["top_p"], 0.9);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["max_tokens"], 55);
        assert_eq!(v["metadata"], json!({"user_id": "u-1"}));
        let v = translate(
            json!({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "", "b"], "max_tokens": 7}),
        );
        assert_eq!(v["stop_sequences"], json!(["a", "b"]));
        assert_eq!(v["max_tokens"], 7);
    }

    #[test]
    fn max_tokens_default_and_missing() {
        let body = obj(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let call = request(&body, &out(true, Some(64))).unwrap();
        let v: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["stream"], true);
        let f = request(&body, &out(false, None)).unwrap_err();
        assert_eq!(f.status, Some(400));
        assert_eq!(f.code.as_deref(), Some("invalid_request_error"));
        assert!(
            f.message.contains("max_tokens is required"),
            "{}",
            f.message
        );
        let f = translate_err(
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}),
        );
        assert!(f.message.contains("positive integer"));
        let f = translate_err(
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
        );
        assert_eq!(f.status, Some(400));
    }

    #[test]
    fn images_from_data_and_http_urls() {
        let v = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}]}));
        let c = &v["messages"][0]["content"];
        assert_eq!(
            c[1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}})
        );
        assert_eq!(
            c[2],
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
        );
        for url in ["data:image/png,plain", "ftp://x/y.png", "data:nocomma"] {
            let f = translate_err(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]}));
            assert_eq!(f.status, Some(400), "{url}");
        }
        let f = translate_err(
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        );
        assert!(f.message.contains("input_audio"));
    }

    #[test]
    fn tool_calls_and_results() {
        let v = translate(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
        ], "tools": [{"type": "function", "function": {"name": "weather", "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "time"}}],
            "tool_choice": "required"}));
        let ms = v["messages"].as_array().unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(
            ms[1]["content"],
            json!([
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "time", "input": {}}])
        );
        assert_eq!(ms[2]["role"], "user");
        assert_eq!(
            ms[2]["content"],
            json!([
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
            {"type": "text", "text": "thanks"}])
        );
        assert_eq!(
            v["tools"][0],
            json!({"name": "weather", "description": "w",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
        );
        assert_eq!(
            v["tools"][1]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(v["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn malformed_tool_arguments_are_a_400() {
        let f = translate_err(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]}));
        assert_eq!(f.status, Some(400));
        assert_eq!(f.code.as_deref(), Some("invalid_request_error"));
        assert!(
            f.message.contains("arguments of tool call `f`"),
            "{}",
            f.message
        );
        let f = translate_err(json!({"messages": [{"role": "tool", "content": "x"}]}));
        assert!(f.message.contains("tool_call_id"));
    }

    #[test]
    fn tool_choice_forms() {
        let base = |c: Value| {
            translate(json!({"messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": c}))
        };
        assert_eq!(base(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(base(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            base(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        let v = translate(json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": false}));
        assert_eq!(
            v["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let f = translate_err(json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}));
        assert_eq!(f.status, Some(400));
        // No tools: no tool_choice either.
        let v = translate(
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}),
        );
        assert!(v.get("tool_choice").is_none());
    }

    #[test]
    fn conversations_anthropic_cannot_take_are_400s() {
        let f = translate_err(json!({"messages": [{"role": "assistant", "content": "hi"}]}));
        assert!(f.message.contains("first non-system message"));
        let f = translate_err(json!({"messages": [{"role": "system", "content": "only"}]}));
        assert_eq!(f.status, Some(400));
        let f = translate_err(json!({"messages": [{"role": "wizard", "content": "x"}]}));
        assert!(f.message.contains("wizard"));
        let f = translate_err(json!({"messages": "nope"}));
        assert_eq!(f.status, Some(400));
        let f = translate_err(json!({"messages": [{"content": "x"}]}));
        assert!(f.message.contains("role"));
    }

    #[test]
    fn response_text_tools_finish_and_usage() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Hello "}, {"type": "thinking", "thinking": "hm"},
                        {"type": "text", "text": "world"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5,
                      "cache_creation_input_tokens": 3, "cache_read_input_tokens": 2}});
        let a = response(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            a.usage,
            Some(Usage {
                input_tokens: 15,
                output_tokens: 5
            })
        );
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "msg_1");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["created"], 0);
        let c = &v["choices"][0];
        assert_eq!(c["message"]["content"], "Hello world");
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(
            c["message"]["tool_calls"][0],
            json!({"id": "toolu_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\":1}"}})
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20})
        );
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
        ] {
            let b = json!({"content": [], "stop_reason": stop});
            let v: Value =
                serde_json::from_slice(&response(b.to_string().as_bytes()).unwrap().body).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], finish);
            assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
            assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        }
    }

    #[test]
    fn response_that_is_not_a_message() {
        for bad in [
            &b"<html>oops</html>"[..],
            b"",
            b"{}",
            b"[1]",
            b"{\"content\": 3}",
        ] {
            let f = response(bad).unwrap_err();
            assert_eq!(f.status, Some(502));
            assert_eq!(f.code.as_deref(), Some(INVALID_RESPONSE));
        }
        let f = response(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert_eq!(f.status, Some(502));
        assert_eq!(f.code.as_deref(), Some("overloaded_error"));
        assert_eq!(f.message, "Overloaded");
    }

    fn fail(status: u16, headers: &[(&'static str, &str)], body: &str) -> Failure {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        failure(
            status,
            &h,
            body.as_bytes(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn failure_classes() {
        let f = fail(
            529,
            &[],
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert_eq!(
            (f.status, f.code.as_deref(), f.message.as_str()),
            (Some(529), Some("overloaded_error"), "Overloaded")
        );
        let f = fail(
            429,
            &[
                ("retry-after", "7"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:30Z"),
            ],
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!(f.code.as_deref(), Some("rate_limit_error"));
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        let rl = f.rate_limit.unwrap();
        assert_eq!(rl.remaining, 0);
        assert_eq!(rl.reset, Duration::from_secs(10));
        let f = fail(
            400,
            &[],
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        );
        assert_eq!(f.code.as_deref(), Some("invalid_request_error"));
        assert!(f.message.contains("max_tokens"));
        let f = fail(
            401,
            &[],
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(f.code.as_deref(), Some("authentication_error"));
        let f = fail(
            500,
            &[],
            r#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#,
        );
        assert_eq!(f.code.as_deref(), Some("api_error"));
    }

    #[test]
    fn failure_context_length_html_and_empty() {
        let f = fail(
            400,
            &[],
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        );
        assert_eq!(f.code.as_deref(), Some(classify::CONTEXT_LENGTH_EXCEEDED));
        assert!(f
            .message
            .starts_with("invalid_request_error: prompt is too long"));
        let f = fail(
            502,
            &[("retry-after", "2")],
            "<html><body>\n<h1>Bad Gateway</h1></body></html>",
        );
        assert_eq!(f.status, Some(502));
        assert_eq!(f.code, None);
        assert!(f.message.contains("Bad Gateway"));
        assert_eq!(f.retry_after, Some(Duration::from_secs(2)));
        let f = fail(503, &[], "");
        assert_eq!(
            (f.status, f.code.as_deref(), f.message.as_str()),
            (Some(503), None, "")
        );
        let long = "x".repeat(100_000);
        assert!(fail(500, &[], &long).message.chars().count() < 300);
        // Wrong shapes never panic.
        for body in [
            r#"{"error": 3}"#,
            r#"{"error": {"type": 5, "message": []}}"#,
            "null",
            "\u{0}\u{1}",
        ] {
            assert_eq!(fail(418, &[], body).status, Some(418));
        }
    }

    // ----- streams -----

    fn ev(name: &str, data: Value) -> Vec<u8> {
        format!("event: {name}\ndata: {data}\n\n").into_bytes()
    }

    fn data_of(b: &Bytes) -> Value {
        let s = std::str::from_utf8(b).unwrap();
        assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s:?}");
        serde_json::from_str(s["data: ".len()..].trim()).unwrap()
    }

    fn start_events() -> Vec<Vec<u8>> {
        vec![ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_9", "type": "message",
                "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null,
                "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
        )]
    }

    #[test]
    fn stream_text_event_by_event() {
        let mut s = Stream::new();
        let out = s.event(&start_events()[0]);
        assert_eq!(out.len(), 1);
        let first = data_of(&out[0]);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["id"], "msg_9");
        assert_eq!(first["model"], "claude-x");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(s
            .event(&ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})
            ))
            .is_empty());
        assert!(s.event(&ev("ping", json!({"type": "ping"}))).is_empty());
        assert!(s.event(b": keep-alive\n\n").is_empty());
        for t in ["Hel", "lo"] {
            let out = s.event(&ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": t}}),
            ));
            assert_eq!(data_of(&out[0])["choices"][0]["delta"]["content"], t);
        }
        assert!(s
            .event(&ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0})
            ))
            .is_empty());
        assert!(s.event(&ev("message_delta", json!({"type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 12}}))).is_empty());
        let out = s.event(&ev("message_stop", json!({"type": "message_stop"})));
        assert_eq!(out.len(), 1);
        assert_eq!(data_of(&out[0])["choices"][0]["finish_reason"], "length");
        let end = s.finish();
        assert_eq!(end.len(), 2);
        let usage = data_of(&end[0]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42})
        );
        assert_eq!(&end[1][..], b"data: [DONE]\n\n");
        // What the relay's own reader makes of it.
        assert!(matches!(
            crate::http::stream::event_kind(&end[0]),
            crate::http::stream::EventKind::Chunk {
                usage: Some(Usage {
                    input_tokens: 30,
                    output_tokens: 12
                }),
                usage_only: true,
                ..
            }
        ));
    }

    #[test]
    fn stream_tool_call_with_partial_json() {
        let mut s = Stream::new();
        s.event(&start_events()[0]);
        let out = s.event(&ev("content_block_start", json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})));
        let d = &data_of(&out[0])["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            *d,
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
        );
        let mut args = String::new();
        for p in ["{\"city\":", "", " \"Paris\"}"] {
            let out = s.event(&ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": p}}),
            ));
            for o in out {
                let d = &data_of(&o)["choices"][0]["delta"]["tool_calls"][0];
                assert_eq!(d["index"], 0);
                args.push_str(d["function"]["arguments"].as_str().unwrap());
            }
        }
        assert_eq!(args, "{\"city\": \"Paris\"}");
        // A second tool gets index 1.
        let out = s.event(&ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}}),
        ));
        assert_eq!(
            data_of(&out[0])["choices"][0]["delta"]["tool_calls"][0]["index"],
            1
        );
        s.event(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}})));
        let out = s.event(&ev("message_stop", json!({"type": "message_stop"})));
        assert_eq!(
            data_of(&out[0])["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn stream_error_event_malformed_and_cut() {
        let mut s = Stream::new();
        s.event(&start_events()[0]);
        let out = s.event(&ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
        let e = data_of(&out[0]);
        assert_eq!(e["error"]["code"], "overloaded_error");
        assert_eq!(e["error"]["message"], "Overloaded");
        assert!(matches!(
            crate::http::stream::event_kind(&out[0]),
            crate::http::stream::EventKind::Chunk { error: Some(_), .. }
        ));
        assert!(s.finish().is_empty());

        let mut s = Stream::new();
        let out = s.event(b"event: content_block_delta\ndata: {not json\n\n");
        assert_eq!(data_of(&out[0])["error"]["code"], INVALID_RESPONSE);
        let mut s = Stream::new();
        let out = s.event(b"data: {\"no\": \"type\"}\n\n");
        assert_eq!(data_of(&out[0])["error"]["code"], INVALID_RESPONSE);

        // Cut after the first delta: finish() gives nothing, the caller reports it cut.
        let mut s = Stream::new();
        s.event(&start_events()[0]);
        s.event(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}})));
        assert!(s.finish().is_empty());
        // Unknown event types and garbage shapes pass quietly.
        let mut s = Stream::new();
        assert!(s
            .event(&ev("brand_new_event", json!({"type": "brand_new_event"})))
            .is_empty());
        assert!(s
            .event(&ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": "x", "delta": 5})
            ))
            .is_empty());
        assert!(s
            .event(&ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 9,
            "delta": {"type": "input_json_delta", "partial_json": "{"}})
            ))
            .is_empty());
    }

    #[test]
    fn stream_event_name_alone_is_enough() {
        let mut s = Stream::new();
        assert!(s.event(b"event: ping\ndata: {}\n\n").is_empty());
        assert_eq!(
            s.event(b"event: message_start\r\ndata: {}\r\n\r\n").len(),
            1
        );
    }

    // ----- inbound -----

    #[test]
    fn chat_request_translates_a_messages_request() {
        let body = obj(
            json!({"model": "claude-x", "max_tokens": 300, "stream": true,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "temperature": 0.5, "top_p": 0.8, "top_k": 5, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-7"}, "thinking": {"type": "disabled"},
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"},
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "and?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            ],
            "tools": [{"name": "weather", "description": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": true}}),
        );
        let c = chat_request(&body).unwrap();
        assert_eq!(c["model"], "claude-x");
        assert_eq!(c["max_tokens"], 300);
        assert_eq!(c["stream"], true);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        assert_eq!(c["temperature"], 0.5);
        assert_eq!(c["top_p"], 0.8);
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["user"], "u-7");
        assert!(
            c.get("top_k").is_none() && c.get("thinking").is_none() && c.get("metadata").is_none()
        );
        let ms = c["messages"].as_array().unwrap();
        assert_eq!(ms[0], json!({"role": "system", "content": "a\n\nb"}));
        assert_eq!(
            ms[1],
            json!({"role": "user", "content": "weather in Paris?"})
        );
        assert_eq!(
            ms[2],
            json!({"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        );
        assert_eq!(
            ms[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(ms[4]["role"], "user");
        assert_eq!(
            ms[4]["content"],
            json!([{"type": "text", "text": "and?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
        );
        assert_eq!(
            c["tools"],
            json!([{"type": "function", "function": {"name": "weather", "description": "w", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(c["parallel_tool_calls"], false);
        for (choice, want) in [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
        ] {
            let b =
                obj(json!({"model": "m", "max_tokens": 1, "messages": [], "tool_choice": choice}));
            assert_eq!(chat_request(&b).unwrap()["tool_choice"], want);
        }
    }

    #[test]
    fn chat_request_rejects_invalid_input() {
        let ok =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        assert!(chat_request(&obj(ok.clone())).is_ok());
        let cases = [
            ("model", Value::Null, "model"),
            ("max_tokens", json!("5"), "max_tokens"),
            ("messages", json!({}), "messages"),
            (
                "messages",
                json!([{"role": "system", "content": "x"}]),
                "role",
            ),
            (
                "messages",
                json!([{"role": "user", "content": 5}]),
                "content",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "document"}]}]),
                "document",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]),
                "image",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "tool_result"}]}]),
                "tool_use_id",
            ),
            ("system", json!(5), "system"),
            ("stop_sequences", json!("END"), "stop_sequences"),
            ("stream", json!("yes"), "stream"),
            ("temperature", json!("hot"), "temperature"),
            ("tools", json!([{"description": "no name"}]), "name"),
            ("tool_choice", json!({"type": "sometimes"}), "tool_choice"),
        ];
        for (field, value, needle) in cases {
            let mut b = obj(ok.clone());
            if value.is_null() {
                b.remove(field);
            } else {
                b.insert(field.into(), value);
            }
            let e = chat_request(&b).unwrap_err();
            assert!(e.contains(needle), "{field}: {e}");
        }
    }

    #[test]
    fn messages_response_translates_a_completion() {
        let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
        let m: Value = serde_json::from_slice(
            &messages_response(chat.to_string().as_bytes(), "claude-x").unwrap(),
        )
        .unwrap();
        assert_eq!(
            m,
            json!({"id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "hi there"}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 4}})
        );
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "end_turn"),
        ] {
            let chat = json!({"id": "msg_x", "choices": [{"message": {"content": "a"}, "finish_reason": finish}]});
            let m: Value = serde_json::from_slice(
                &messages_response(chat.to_string().as_bytes(), "c").unwrap(),
            )
            .unwrap();
            assert_eq!(m["stop_reason"], stop);
            assert_eq!(m["id"], "msg_x");
            assert_eq!(m["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
        }
        assert!(messages_response(b"nope", "c").is_err());
        assert!(messages_response(b"{\"choices\": []}", "c").is_err());
        assert_eq!(
            messages_response(br#"{"error": {"message": "boom"}}"#, "c").unwrap_err(),
            "boom"
        );
        let bad_args = json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}}]});
        assert!(messages_response(bad_args.to_string().as_bytes(), "c")
            .unwrap_err()
            .contains("`f`"));
    }

    #[test]
    fn error_bodies_by_status() {
        for (status, t) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (529, "overloaded_error"),
            (500, "api_error"),
            (503, "api_error"),
            (422, "invalid_request_error"),
        ] {
            let v: Value = serde_json::from_slice(&error_body(status, "why")).unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": t, "message": "why"}}),
                "{status}"
            );
        }
    }

    /// An Anthropic event's name and data.
    fn anthropic_event(b: &Bytes) -> (String, Value) {
        let s = std::str::from_utf8(b).unwrap();
        let (name, rest) = s
            .strip_prefix("event: ")
            .unwrap()
            .split_once("\ndata: ")
            .unwrap();
        assert!(rest.ends_with("\n\n"));
        let v: Value = serde_json::from_str(rest.trim()).unwrap();
        assert_eq!(v["type"], name);
        (name.to_string(), v)
    }

    fn openai_chunk(delta: Value, finish: Value) -> Vec<u8> {
        let c = json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n").into_bytes()
    }

    #[test]
    fn messages_events_text_and_tools() {
        let mut m = MessagesEvents::new("claude-x");
        let mut all = Vec::new();
        all.extend(m.chunk(&openai_chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )));
        all.extend(m.chunk(&openai_chunk(json!({"content": "Hel"}), Value::Null)));
        all.extend(m.chunk(&openai_chunk(json!({"content": "lo"}), Value::Null)));
        all.extend(m.chunk(&openai_chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null)));
        all.extend(m.chunk(&openai_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            Value::Null,
        )));
        all.extend(m.chunk(&openai_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Value::Null,
        )));
        all.extend(m.chunk(&openai_chunk(json!({}), json!("tool_calls"))));
        all.extend(m.chunk(b"data: {\"id\":\"chatcmpl-7\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":6,\"total_tokens\":17}}\n\n"));
        all.extend(m.chunk(b"data: [DONE]\n\n"));
        assert!(m.finish().is_empty());
        assert!(m
            .chunk(&openai_chunk(json!({"content": "late"}), Value::Null))
            .is_empty());
        let evs: Vec<(String, Value)> = all.iter().map(anthropic_event).collect();
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let start = &evs[0].1["message"];
        assert_eq!(start["id"], "msg_chatcmpl-7");
        assert_eq!(start["model"], "claude-x");
        assert_eq!(start["content"], json!([]));
        assert_eq!(
            evs[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            evs[2].1["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(evs[4].1["index"], 0);
        assert_eq!(
            evs[5].1,
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}})
        );
        assert_eq!(
            evs[6].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"a\":"})
        );
        assert_eq!(evs[7].1["index"], 1);
        assert_eq!(evs[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            evs[9].1["usage"],
            json!({"input_tokens": 11, "output_tokens": 6})
        );
    }

    #[test]
    fn messages_events_errors_and_early_end() {
        let mut m = MessagesEvents::new("c");
        m.chunk(&openai_chunk(json!({"content": "a"}), Value::Null));
        let out = m.chunk(b"data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"upstream_error\",\"code\":\"overloaded_error\"}}\n\n");
        let (name, v) = anthropic_event(&out[0]);
        assert_eq!(name, "error");
        assert_eq!(
            v["error"],
            json!({"type": "overloaded_error", "message": "Overloaded"})
        );
        assert!(m.finish().is_empty());
        let mut m = MessagesEvents::new("c");
        let (_, v) = anthropic_event(
            &m.chunk(b"data: {\"error\":{\"message\":\"x\",\"code\":\"stream_idle_timeout\"}}\n\n")
                [0],
        );
        assert_eq!(v["error"]["type"], "api_error");
        // Never got [DONE]: finish() closes with what is known.
        let mut m = MessagesEvents::new("c");
        m.chunk(&openai_chunk(json!({"content": "a"}), Value::Null));
        assert!(m.chunk(b": comment\n\n").is_empty());
        let names: Vec<String> = m.finish().iter().map(|b| anthropic_event(b).0).collect();
        assert_eq!(
            names,
            ["content_block_stop", "message_delta", "message_stop"]
        );
        // Nothing at all: still a whole message.
        let names: Vec<String> = MessagesEvents::new("c")
            .finish()
            .iter()
            .map(|b| anthropic_event(b).0)
            .collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        let mut m = MessagesEvents::new("c");
        assert_eq!(anthropic_event(&m.chunk(b"data: {nope\n\n")[0]).0, "error");
    }

    #[test]
    fn round_trip_through_both_directions() {
        // An Anthropic client's request → OpenAI chat body → back out to an Anthropic upstream.
        let inbound = obj(json!({"model": "claude-x", "max_tokens": 50, "system": "s",
            "messages": [{"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"k": "v"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}, {"type": "text", "text": "ok"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}));
        let chat = chat_request(&inbound).unwrap();
        let call = request(&chat, &out(false, None)).unwrap();
        let v: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(v["system"], "s");
        assert_eq!(
            v["messages"],
            json!(inbound["messages"].clone())
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    if m["content"].is_string() {
                        m["content"] = json!([{"type": "text", "text": m["content"]}]);
                    }
                    m
                })
                .collect::<Value>()
        );
        assert_eq!(
            v["tools"],
            json!([{"name": "f", "input_schema": {"type": "object"}}])
        );
    }

    /// Garbage of every shape: errors, never panics.
    #[test]
    fn garbage_never_panics() {
        let junk = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(1e300),
            json!(u64::MAX),
            json!("s"),
            json!([]),
            json!([null, 1, "x", {"role": 5}]),
            json!({}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": 3}]}),
            json!({"role": "assistant", "tool_calls": [{"id": 1, "function": []}]}),
            json!({"role": "assistant", "tool_calls": "x"}),
            json!({"type": "tool_use", "input": "x"}),
        ];
        for j in &junk {
            for field in [
                "messages",
                "tools",
                "tool_choice",
                "stop",
                "max_tokens",
                "temperature",
                "system",
                "stream",
                "metadata",
            ] {
                let mut b = Map::new();
                b.insert("messages".into(), json!([{"role": "user", "content": "x"}]));
                b.insert("model".into(), json!("m"));
                b.insert("max_tokens".into(), json!(5));
                b.insert(field.into(), j.clone());
                let _ = request(&b, &out(true, None));
                let _ = chat_request(&b);
                let mut with_msg = b.clone();
                with_msg.insert("messages".into(), json!([j]));
                let _ = request(&with_msg, &out(false, Some(1)));
                let _ = chat_request(&with_msg);
            }
            let text = j.to_string();
            let _ = response(text.as_bytes());
            let _ = response(json!({"content": [j], "usage": j}).to_string().as_bytes());
            let _ = messages_response(text.as_bytes(), "m");
            let _ = messages_response(
                json!({"choices": [{"message": j, "finish_reason": j}]})
                    .to_string()
                    .as_bytes(),
                "m",
            );
            let _ = failure(
                500,
                &HeaderMap::new(),
                text.as_bytes(),
                SystemTime::UNIX_EPOCH,
            );
            let mut st = Stream::new();
            let mut me = MessagesEvents::new("m");
            for t in [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "message_delta",
                "message_stop",
                "error",
            ] {
                let e = json!({"type": t, "index": j, "delta": j, "content_block": j, "message": j, "usage": j, "error": j});
                let _ = st.event(format!("data: {e}\n\n").as_bytes());
                let c = json!({"choices": [{"delta": {"content": j, "tool_calls": [j]}, "finish_reason": j}], "usage": j, "error": j});
                let _ = me.chunk(format!("data: {c}\n\n").as_bytes());
            }
            let _ = st.finish();
            let _ = me.finish();
        }
        let _ = Stream::new().event(&[0xff, 0xfe, b'\n', b'\n']);
        let _ = MessagesEvents::new("m").chunk(&[0xff, b'd', b'a']);
    }
}
