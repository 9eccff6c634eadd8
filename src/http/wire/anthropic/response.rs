//! Outbound: Anthropic answers → OpenAI.

use super::*;

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage: input counts the cache writes and reads too.
pub(super) fn anthropic_usage(u: Option<&Value>) -> Option<Usage> {
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

pub(super) fn openai_usage(u: &Usage) -> Value {
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
pub(super) fn split_blocks(blocks: &[Value]) -> (Value, Vec<Value>) {
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
