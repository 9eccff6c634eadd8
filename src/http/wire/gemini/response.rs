//! Answers: a `GenerateContentResponse` → an OpenAI `chat.completion` with usage.

use super::*;

/// Translates a `GenerateContentResponse` into an OpenAI `chat.completion`.
///
/// The first candidate's text parts (thought summaries left out) become `content`, its
/// `functionCall` parts `tool_calls` (ids `call_{index}` unless Gemini gave one);
/// `finishReason` maps to `stop` / `tool_calls` / `length` / `content_filter`, and
/// `usageMetadata` to `usage` (thinking tokens are completion tokens). A prompt blocked
/// (`promptFeedback.blockReason`, no candidates) answers empty with `content_filter`. A
/// body that is not such a response is a `502 invalid_upstream_response` failure; a
/// 2xx body holding an `error` is a 502 with that error's status as its code.
pub fn response(bytes: &[u8], model: &str) -> Result<Answer, Failure> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| invalid("a body that is not JSON", bytes))?;
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("a body that is not a JSON object", bytes))?;
    if let Some(e) = error_object(&v) {
        return Err(error_failure(502, e, None));
    }
    let usage = usage_of(obj.get("usageMetadata"));
    let (message, finish) = match first_candidate(obj) {
        Some(c) => candidate_message(c).ok_or_else(|| invalid("a malformed candidate", bytes))?,
        None if block_reason(obj).is_some() => (
            json!({"role": "assistant", "content": ""}),
            "content_filter",
        ),
        None => return Err(invalid("a response without candidates", bytes)),
    };
    let mut body = json!({
        "id": response_id(obj),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    });
    if let Some(u) = usage {
        body["usage"] = usage_json(u);
    }
    Ok(Answer {
        body: Bytes::from(body.to_string()),
        usage,
    })
}

pub(super) fn response_id(obj: &Map<String, Value>) -> String {
    match obj.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("gemini-{id}"),
        _ => "gemini-response".into(),
    }
}

pub(super) fn first_candidate(obj: &Map<String, Value>) -> Option<&Value> {
    obj.get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
}

pub(super) fn block_reason(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("promptFeedback")
        .and_then(|p| p.get("blockReason"))
        .and_then(Value::as_str)
}

/// Text (thoughts left out) and function calls of a candidate's parts; `None` when the
/// parts are not an array of objects.
pub(super) fn candidate_parts(c: &Value, first_index: usize) -> Option<(String, bool, Vec<Value>)> {
    let parts = match c.get("content").and_then(|c| c.get("parts")) {
        None | Some(Value::Null) => return Some((String::new(), false, Vec::new())),
        Some(Value::Array(p)) => p,
        Some(_) => return None,
    };
    let mut text = String::new();
    let mut any_text = false;
    let mut calls = Vec::new();
    for p in parts {
        p.as_object()?;
        if let Some(call) = p.get("functionCall") {
            let index = first_index + calls.len();
            let mut c = tool_call(call, index)?;
            if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                c["extra_content"] = json!({"google": {"thought_signature": sig}});
            }
            calls.push(c);
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) != Some(true) {
                text.push_str(t);
                any_text = true;
            }
        }
    }
    Some((text, any_text, calls))
}

/// A `functionCall` as an OpenAI tool call (without the stream's `index`; the part's
/// `thoughtSignature` is added by the caller).
pub(super) fn tool_call(call: &Value, index: usize) -> Option<Value> {
    let name = call.get("name")?.as_str()?;
    let args = match call.get("args") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(a) => a.to_string(),
    };
    let id = match call.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("call_{index}"),
    };
    Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
}

pub(super) fn candidate_message(c: &Value) -> Option<(Value, &'static str)> {
    let (text, any_text, calls) = candidate_parts(c, 0)?;
    let content = if any_text {
        Value::String(text)
    } else if calls.is_empty() {
        Value::String(String::new())
    } else {
        Value::Null
    };
    let finish = finish_reason(
        c.get("finishReason").and_then(Value::as_str),
        !calls.is_empty(),
    );
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Some((message, finish))
}

/// Gemini's `finishReason` as OpenAI's.
pub(super) fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// `usageMetadata`: prompt tokens, and candidates + thoughts tokens as completion tokens.
pub(super) fn usage_of(meta: Option<&Value>) -> Option<Usage> {
    let meta = meta?.as_object()?;
    let get = |k: &str| meta.get(k).and_then(Value::as_u64);
    let prompt = get("promptTokenCount");
    let candidates = get("candidatesTokenCount");
    let thoughts = get("thoughtsTokenCount");
    if prompt.is_none() && candidates.is_none() && thoughts.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: prompt.unwrap_or(0),
        output_tokens: candidates
            .unwrap_or(0)
            .saturating_add(thoughts.unwrap_or(0)),
    })
}

pub(super) fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}
