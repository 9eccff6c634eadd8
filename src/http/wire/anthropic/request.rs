//! Outbound: OpenAI chat body → Anthropic Messages request.

use super::*;

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
pub(super) fn max_tokens(body: &Map<String, Value>, out: &Outbound) -> Result<u64, Failure> {
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
pub(super) fn stop_sequences(stop: Option<&Value>) -> Result<Vec<String>, Failure> {
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
pub(super) struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// The system texts and the alternating user/assistant messages.
pub(super) fn translate_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), Failure> {
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
pub(super) fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
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
pub(super) fn turn_json(mut t: Turn) -> Value {
    t.blocks
        .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
    json!({ "role": t.role, "content": t.blocks })
}

/// The text of a content that is a string or an array of text parts.
pub(super) fn plain_text(content: Option<&Value>) -> String {
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
pub(super) fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, Failure> {
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
pub(super) fn part_block(p: &Value, i: usize) -> Result<Option<Value>, Failure> {
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
pub(super) fn image_block(url: &str, i: usize) -> Result<Value, Failure> {
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
pub(super) fn tool_use_blocks(m: &Value, i: usize) -> Result<Vec<Value>, Failure> {
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
pub(super) fn tool_arguments(args: Option<&Value>, name: &str, i: usize) -> Result<Value, Failure> {
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
pub(super) fn tool_result_block(m: &Value, i: usize) -> Result<Value, Failure> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": plain_text(m.get("content"))}))
}

/// `tools`, `tool_choice` and `parallel_tool_calls` into the Anthropic body.
pub(super) fn translate_tools(
    body: &Map<String, Value>,
    b: &mut Map<String, Value>,
) -> Result<(), Failure> {
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
pub(super) fn tool(t: &Value) -> Result<Value, Failure> {
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
pub(super) fn tool_choice(c: &Value) -> Result<Value, Failure> {
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
