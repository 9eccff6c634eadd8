//! Inbound: the relay's `POST /v1/messages`.

use super::*;

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
pub(super) fn inbound_sampling(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
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
pub(super) fn system_text(s: &Value) -> Result<String, String> {
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
pub(super) fn inbound_message(m: &Value, i: usize) -> Result<Vec<Value>, String> {
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
pub(super) fn collapse_parts(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0].get("type").and_then(Value::as_str) == Some("text") {
        return parts.swap_remove(0)["text"].take();
    }
    Value::Array(parts)
}

/// An assistant message: texts joined, `tool_use` blocks as `tool_calls`, thinking dropped.
pub(super) fn assistant_message(blocks: &[Value], i: usize) -> Result<Value, String> {
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
pub(super) fn inbound_image(b: &Value, i: usize) -> Result<Value, String> {
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
pub(super) fn inbound_tool_result(b: &Value, i: usize) -> Result<Value, String> {
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
pub(super) fn inbound_tools(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
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
pub(super) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ => "end_turn",
    }
}

/// An Anthropic message id: the OpenAI id with `msg_` in front (as it is if it has it).
pub(super) fn message_id(id: Option<&str>) -> String {
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
pub(super) const ERROR_TYPES: [&str; 8] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
];

pub(super) fn error_type(status: u16) -> &'static str {
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
pub(super) enum OpenBlock {
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
pub(super) fn named_event(name: &str, data: &Value) -> Bytes {
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
