//! Google's Gemini API (`generativelanguage.googleapis.com/v1beta`): `POST
//! {base_url}/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, with
//! the key in `x-goog-api-key`.
//!
//! | OpenAI chat | Gemini |
//! |---|---|
//! | `system` / `developer` messages | `systemInstruction.parts[].text` |
//! | `user` / `assistant` | `contents[]` with role `user` / `model` (consecutive same roles merged) |
//! | `image_url` `data:` URL / `http(s)` URL | `inlineData {mimeType, data}` / `fileData {mimeType, fileUri}` |
//! | `file` with a `data:` URL `file_data`, `input_audio` | `inlineData` |
//! | assistant `tool_calls` | `functionCall {name, args}` parts |
//! | `tool` messages | a `user` content with `functionResponse {name, response: {content}}` |
//! | `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `stop`, `n` = 1, `seed`, penalties | `generationConfig` |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType` (+ `responseSchema`) |
//! | `tools` / `tool_choice` | `tools[].functionDeclarations` / `toolConfig.functionCallingConfig` |
//!
//! Other OpenAI fields are dropped, never forwarded (Gemini rejects unknown fields).
//! Answers become `chat.completion` objects and stream chunks; errors become failures
//! whose code is Gemini's `error.status` (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`, …).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use super::{Answer, Call, Outbound, StreamTranslator};
use crate::exec::{Failure, Usage};
use crate::http::classify::{self, INVALID_RESPONSE};

/// Code of a request that cannot be translated (a 400 before any call).
pub const INVALID_REQUEST: &str = "invalid_request_error";

fn bad(message: impl Into<String>) -> Failure {
    Failure::status(400).code(INVALID_REQUEST).message(message)
}

fn invalid(what: &str, bytes: &[u8]) -> Failure {
    Failure::status(502)
        .code(INVALID_RESPONSE)
        .message(format!("{what}: {}", classify::snippet(bytes)))
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Translates an OpenAI chat-completions body into a Gemini `generateContent` call.
///
/// The path is `models/{model}:generateContent`, or `:streamGenerateContent?alt=sse` when
/// `out.stream`; a model id with characters other than `[A-Za-z0-9._-]` (after an optional
/// `models/` prefix) is refused. A body that cannot be translated (no `messages`, an
/// unknown role, malformed tool-call arguments, a tool result for no earlier call, a
/// wrong type for a known field) is a `400 invalid_request_error` failure.
pub fn request(body: &Map<String, Value>, out: &Outbound) -> Result<Call, Failure> {
    let model = model_id(out.model)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array"))?;
    let (system, contents) = contents(messages)?;
    if contents.is_empty() {
        return Err(bad("`messages` has no user or assistant content"));
    }
    let mut req = Map::new();
    req.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        req.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(body, out)?;
    if !config.is_empty() {
        req.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = tools(body)? {
        req.insert("tools".into(), tools);
        if let Some(tc) = tool_config(body.get("tool_choice"))? {
            req.insert("toolConfig".into(), tc);
        }
    }
    let method = if out.stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    Ok(Call {
        path: format!("models/{model}:{method}"),
        body: Value::Object(req).to_string().into_bytes(),
    })
}

/// The model id, safe in a path: `[A-Za-z0-9._-]+` (a `models/` prefix is dropped).
fn model_id(model: &str) -> Result<&str, Failure> {
    let id = model.strip_prefix("models/").unwrap_or(model);
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(id)
    } else {
        Err(bad(format!(
            "model id {model:?} is not a Gemini model id ([A-Za-z0-9._-])"
        )))
    }
}

/// `systemInstruction` parts and `contents`, consecutive same roles merged.
fn contents(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), Failure> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}] has no string `role`")))?;
        let (role, parts) = match role {
            "system" | "developer" => {
                system.extend(content_parts(m.get("content"), i)?);
                continue;
            }
            "user" => ("user", content_parts(m.get("content"), i)?),
            "assistant" => {
                let mut parts = content_parts(m.get("content"), i)?;
                parts.extend(tool_call_parts(m, i, &mut names)?);
                ("model", parts)
            }
            "tool" | "function" => ("user", vec![function_response(m, i, &names)?]),
            other => {
                return Err(bad(format!(
                    "messages[{i}] has role `{other}`, which Gemini has no equivalent for"
                )))
            }
        };
        push_content(&mut contents, role, parts);
    }
    Ok((system, contents))
}

fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some(role) {
            if let Some(Value::Array(p)) = last.get_mut("parts") {
                p.extend(parts);
                return;
            }
        }
    }
    contents.push(json!({ "role": role, "parts": parts }));
}

/// A message's `content` (a string or an array of parts) as Gemini parts.
fn content_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, Failure> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part(p, i, j))
            .collect(),
        Some(_) => Err(bad(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

fn part(p: &Value, i: usize, j: usize) -> Result<Value, Failure> {
    let at = || format!("messages[{i}].content[{j}]");
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text") {
            Some(Value::String(t)) => Ok(json!({ "text": t })),
            _ => Err(bad(format!("{} has no string `text`", at()))),
        },
        Some("image_url") => {
            let url = match p.get("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(o) => o.get("url").and_then(Value::as_str),
                None => None,
            };
            let url = url.ok_or_else(|| bad(format!("{} has no `image_url.url`", at())))?;
            image(url).map_err(|m| bad(format!("{}: {m}", at())))
        }
        Some("file") => {
            // Only inline files translate (`file_id`s are OpenAI's own storage).
            let data = p.pointer("/file/file_data").and_then(Value::as_str);
            let data = data.ok_or_else(|| bad(format!("{} has no `file.file_data`", at())))?;
            if !data.starts_with("data:") {
                return Err(bad(format!(
                    "{}: `file.file_data` must be a data: URL",
                    at()
                )));
            }
            image(data).map_err(|m| bad(format!("{}: {m}", at())))
        }
        Some("input_audio") => {
            let a = p.get("input_audio");
            let data = a.and_then(|a| a.get("data")).and_then(Value::as_str);
            let format = a.and_then(|a| a.get("format")).and_then(Value::as_str);
            match (data, format) {
                (Some(d), Some(f)) => {
                    Ok(json!({"inlineData": {"mimeType": format!("audio/{f}"), "data": d}}))
                }
                _ => Err(bad(format!(
                    "{} needs `input_audio.data` and `.format`",
                    at()
                ))),
            }
        }
        other => Err(bad(format!(
            "{} has type {:?}, which is not translated for Gemini",
            at(),
            other.unwrap_or("(none)")
        ))),
    }
}

/// An image URL as a part: `data:` URLs inline, `http(s)` URLs as `fileData`.
fn image(url: &str) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or("a data: URL without a comma")?;
        let meta = meta
            .strip_suffix(";base64")
            .ok_or("a data: URL that is not base64")?;
        let mime = meta.split(';').next().unwrap_or("").trim();
        let mime = if mime.is_empty() { "image/jpeg" } else { mime };
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(json!({"fileData": {"mimeType": guess_mime(&lower), "fileUri": url}}));
    }
    Err("an image URL must be a data: or http(s) URL".into())
}

/// The MIME type of an image URL from its extension (default `image/jpeg`).
fn guess_mime(lower_url: &str) -> &'static str {
    let path = lower_url.split(['?', '#']).next().unwrap_or("");
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// An assistant message's `tool_calls` as `functionCall` parts; records each id's name.
fn tool_call_parts(
    m: &Value,
    i: usize,
    names: &mut HashMap<String, String>,
) -> Result<Vec<Value>, Failure> {
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad(format!("messages[{i}].tool_calls must be an array"))),
    };
    let mut parts = Vec::with_capacity(calls.len());
    for (j, c) in calls.iter().enumerate() {
        let f = c.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad(format!(
                    "messages[{i}].tool_calls[{j}] has no function name"
                ))
            })?;
        let args = match f.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(bad(format!(
                        "messages[{i}].tool_calls[{j}].function.arguments is not a JSON object"
                    )))
                }
            },
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(bad(format!(
                    "messages[{i}].tool_calls[{j}].function.arguments must be a JSON string"
                )))
            }
        };
        if let Some(id) = c.get("id").and_then(Value::as_str) {
            names.insert(id.to_string(), name.to_string());
        }
        let mut part = json!({"functionCall": {"name": name, "args": args}});
        // Gemini 3 wants its thought signatures back (OpenAI-compatible clients keep them
        // in `extra_content.google.thought_signature`, as Google's own endpoint does).
        if let Some(sig) = c
            .pointer("/extra_content/google/thought_signature")
            .and_then(Value::as_str)
        {
            part["thoughtSignature"] = sig.into();
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A `tool` message as a `functionResponse` part, named after its call.
fn function_response(
    m: &Value,
    i: usize,
    names: &HashMap<String, String>,
) -> Result<Value, Failure> {
    let name = match m.get("tool_call_id").and_then(Value::as_str) {
        Some(id) => names.get(id).cloned().ok_or_else(|| {
            bad(format!(
                "messages[{i}].tool_call_id `{id}` matches no earlier tool call"
            ))
        })?,
        // The legacy `function` role names itself.
        None => m
            .get("name")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| bad(format!("messages[{i}] has no `tool_call_id`")))?,
    };
    let text = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let content = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    Ok(json!({"functionResponse": {"name": name, "response": {"content": content}}}))
}

/// A non-negative integer field (`null` counts as absent).
fn uint(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"))),
    }
}

/// A number field (`null` counts as absent).
fn number(body: &Map<String, Value>, key: &str) -> Result<Option<Value>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(bad(format!("`{key}` must be a number"))),
    }
}

fn generation_config(
    body: &Map<String, Value>,
    out: &Outbound,
) -> Result<Map<String, Value>, Failure> {
    let mut c = Map::new();
    let max = match uint(body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => uint(body, "max_tokens")?,
    };
    if let Some(n) = max.or(out.default_max_tokens) {
        c.insert("maxOutputTokens".into(), n.into());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = number(body, from)? {
            c.insert(to.into(), v);
        }
    }
    if let Some(v) = number(body, "seed")? {
        let seed = v.as_i64().ok_or_else(|| bad("`seed` must be an integer"))?;
        c.insert("seed".into(), seed.into());
    }
    if let Some(stop) = stop_sequences(body.get("stop"))? {
        c.insert("stopSequences".into(), stop);
    }
    if uint(body, "n")? == Some(1) {
        c.insert("candidateCount".into(), 1.into());
    }
    response_format(body.get("response_format"), &mut c);
    Ok(c)
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, Failure> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            Ok((!a.is_empty()).then(|| Value::Array(a.clone())))
        }
        Some(_) => Err(bad("`stop` must be a string or an array of strings")),
    }
}

/// `json_object` → `responseMimeType`; `json_schema` → that and `responseSchema`.
fn response_format(rf: Option<&Value>, c: &mut Map<String, Value>) {
    let Some(rf) = rf else { return };
    match rf.get("type").and_then(Value::as_str) {
        Some("json_object") => {
            c.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            c.insert("responseMimeType".into(), "application/json".into());
            if let Some(s) = rf.get("json_schema").and_then(|j| j.get("schema")) {
                c.insert("responseSchema".into(), schema(s));
            }
        }
        _ => {}
    }
}

/// A JSON Schema as Gemini's OpenAPI subset: `$schema`, `additionalProperties` and
/// `strict` (which Gemini refuses) are dropped in every (sub)schema, and a type list
/// with `"null"` (`["string", "null"]`) becomes that type with `nullable: true`. Values
/// (`enum`, `default`, `example`) are kept as they are.
fn schema(s: &Value) -> Value {
    let Value::Object(o) = s else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in o {
        let v = match (k.as_str(), v) {
            ("$schema" | "additionalProperties" | "strict", _) => continue,
            // Property names are names, not keywords.
            ("properties", Value::Object(p)) => {
                Value::Object(p.iter().map(|(n, v)| (n.clone(), schema(v))).collect())
            }
            ("items", v) => schema(v),
            ("anyOf", Value::Array(a)) => Value::Array(a.iter().map(schema).collect()),
            ("type", Value::Array(types)) => {
                let named: Vec<&Value> = types
                    .iter()
                    .filter(|t| t.as_str() != Some("null"))
                    .collect();
                if named.len() < types.len() {
                    out.insert("nullable".into(), true.into());
                }
                match named.as_slice() {
                    [one] => (*one).clone(),
                    _ => v.clone(),
                }
            }
            (_, v) => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// OpenAI function tools as one `functionDeclarations` tool; `None` without any.
fn tools(body: &Map<String, Value>) -> Result<Option<Value>, Failure> {
    let list = match body.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("`tools` must be an array")),
    };
    let mut decls = Vec::new();
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let f = t.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools[{i}] has no function name")))?;
        let mut d = Map::new();
        d.insert("name".into(), name.into());
        if let Some(desc) = f.and_then(|f| f.get("description")).and_then(Value::as_str) {
            d.insert("description".into(), desc.into());
        }
        if let Some(p) = f
            .and_then(|f| f.get("parameters"))
            .filter(|p| has_properties(p))
        {
            d.insert("parameters".into(), schema(p));
        }
        decls.push(Value::Object(d));
    }
    Ok((!decls.is_empty()).then(|| json!([{ "functionDeclarations": decls }])))
}

/// Gemini refuses an object schema with no properties: such parameters are left out.
fn has_properties(p: &Value) -> bool {
    p.get("properties")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
}

fn tool_config(choice: Option<&Value>) -> Result<Option<Value>, Failure> {
    let config = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => return Err(bad(format!("`tool_choice` {other:?} is not known"))),
        },
        Some(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("`tool_choice` names no function"))?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

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

fn response_id(obj: &Map<String, Value>) -> String {
    match obj.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("gemini-{id}"),
        _ => "gemini-response".into(),
    }
}

fn first_candidate(obj: &Map<String, Value>) -> Option<&Value> {
    obj.get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
}

fn block_reason(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("promptFeedback")
        .and_then(|p| p.get("blockReason"))
        .and_then(Value::as_str)
}

/// Text (thoughts left out) and function calls of a candidate's parts; `None` when the
/// parts are not an array of objects.
fn candidate_parts(c: &Value, first_index: usize) -> Option<(String, bool, Vec<Value>)> {
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
fn tool_call(call: &Value, index: usize) -> Option<Value> {
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

fn candidate_message(c: &Value) -> Option<(Value, &'static str)> {
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
fn finish_reason(reason: Option<&str>, has_calls: bool) -> &'static str {
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
fn usage_of(meta: Option<&Value>) -> Option<Usage> {
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

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

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
fn stream_error(v: &Value) -> Option<&Value> {
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    v.get("error").filter(|e| !e.is_null())
}

/// The `error` object of `{"error": …}` or `[{"error": …}]`.
fn error_object(v: &Value) -> Option<&Value> {
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    v.get("error").filter(|e| e.is_object())
}

fn error_failure(status: u16, e: &Value, header_wait: Option<Duration>) -> Failure {
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
fn retry_info(e: &Value) -> Option<Duration> {
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

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// Turns Gemini's `alt=sse` stream (each event `data: {GenerateContentResponse}`) into
/// OpenAI `chat.completion.chunk` events.
///
/// The first chunk carries `delta.role = "assistant"`; text parts go out as
/// `delta.content`, `functionCall` parts as complete `delta.tool_calls` entries; a
/// candidate's `finishReason` becomes a chunk with `finish_reason`. The last
/// `usageMetadata` seen is the usage. Gemini sends no terminal marker: [`finish`] sends
/// the usage chunk and `[DONE]` only if a `finishReason` was seen.
///
/// [`finish`]: StreamTranslator::finish
#[derive(Debug, Clone)]
pub struct Stream {
    model: String,
    id: Option<String>,
    started: bool,
    finished: bool,
    calls: usize,
    usage: Option<Usage>,
}

impl Stream {
    /// A translator for one stream, answering as `model`.
    pub fn new(model: &str) -> Self {
        Stream {
            model: model.to_string(),
            id: None,
            started: false,
            finished: false,
            calls: 0,
            usage: None,
        }
    }

    /// The last usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let body = json!({
            "id": self.id.as_deref().unwrap_or("gemini-stream"),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse(&body)
    }

    fn translate(&mut self, obj: &Map<String, Value>) -> Vec<Bytes> {
        if self.id.is_none() && obj.contains_key("responseId") {
            self.id = Some(response_id(obj));
        }
        if let Some(u) = usage_of(obj.get("usageMetadata")) {
            self.usage = Some(u);
        }
        let mut out = Vec::new();
        let Some(c) = first_candidate(obj) else {
            if block_reason(obj).is_some() {
                out.extend(self.delta(String::new(), false, Vec::new()));
                out.push(self.chunk(json!({}), Some("content_filter")));
                self.finished = true;
            }
            return out;
        };
        let Some((text, any_text, calls)) = candidate_parts(c, self.calls) else {
            return vec![error_event(
                INVALID_RESPONSE,
                "a malformed candidate in the stream",
            )];
        };
        let has_calls = !calls.is_empty();
        out.extend(self.delta(text, any_text, calls));
        if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
            let finish = finish_reason(Some(reason), self.calls > 0 || has_calls);
            out.push(self.chunk(json!({}), Some(finish)));
            self.finished = true;
        }
        out
    }

    /// The chunk for new text and tool calls (and the role, the first time); none if
    /// there is nothing to say.
    fn delta(&mut self, text: String, any_text: bool, calls: Vec<Value>) -> Option<Bytes> {
        let mut delta = Map::new();
        if !self.started {
            delta.insert("role".into(), "assistant".into());
            if !any_text && calls.is_empty() {
                delta.insert("content".into(), "".into());
            }
            self.started = true;
        }
        if any_text && !text.is_empty() {
            delta.insert("content".into(), text.into());
        }
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|mut c| {
                    c["index"] = self.calls.into();
                    self.calls += 1;
                    c
                })
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        (!delta.is_empty()).then(|| self.chunk(Value::Object(delta), None))
    }
}

impl StreamTranslator for Stream {
    fn event(&mut self, raw: &[u8]) -> Vec<Bytes> {
        let Some(data) = sse_data(raw) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            return vec![error_event(
                INVALID_RESPONSE,
                &format!("stream data that is not JSON: {}", classify::snippet(&data)),
            )];
        };
        if let Some(e) = stream_error(&v) {
            let code = e
                .get("status")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .unwrap_or("upstream_error");
            let message = match e {
                Value::String(s) => s.as_str(),
                e => e.get("message").and_then(Value::as_str).unwrap_or(""),
            };
            return vec![error_event(code, message)];
        }
        match v.as_object() {
            Some(obj) => self.translate(obj),
            None => vec![error_event(
                INVALID_RESPONSE,
                "stream data that is not a JSON object",
            )],
        }
    }

    fn finish(&mut self) -> Vec<Bytes> {
        if !self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(u) = self.usage {
            let body = json!({
                "id": self.id.as_deref().unwrap_or("gemini-stream"),
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [],
                "usage": usage_json(u),
            });
            out.push(sse(&body));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

fn sse(body: &Value) -> Bytes {
    Bytes::from(format!("data: {body}\n\n"))
}

fn error_event(code: &str, message: &str) -> Bytes {
    sse(&json!({"error": {
        "message": classify::truncate(message),
        "type": "upstream_error",
        "code": classify::truncate(code),
    }}))
}

/// The joined `data:` lines of an event; `None` for comments, empty data and `[DONE]`.
fn sse_data(raw: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut any = false;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if any {
                data.push(b'\n');
            }
            data.extend_from_slice(rest);
            any = true;
        }
    }
    let trimmed = data.trim_ascii();
    (any && !trimmed.is_empty() && trimmed != b"[DONE]").then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn out(model: &str) -> Outbound<'_> {
        Outbound {
            model,
            stream: false,
            default_max_tokens: None,
        }
    }

    fn translate(body: Value) -> Result<(String, Value), Failure> {
        translate_with(body, &out("gemini-2.5-flash"))
    }

    fn translate_with(body: Value, o: &Outbound) -> Result<(String, Value), Failure> {
        let Value::Object(m) = body else {
            panic!("not an object")
        };
        let call = request(&m, o)?;
        Ok((call.path, serde_json::from_slice(&call.body).unwrap()))
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

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

    #[test]
    fn system_roles_and_merging() {
        let (path, b) = translate(json!({
            "model": "x", "stream": false, "user": "u1", "logprobs": true,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "there"}]},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"},
            ]
        }))
        .unwrap();
        assert_eq!(path, "models/gemini-2.5-flash:generateContent");
        assert_eq!(
            b,
            json!({
                "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "be kind"}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                    {"role": "user", "parts": [{"text": "bye"}]},
                ]
            })
        );
    }

    #[test]
    fn images_inline_and_by_url() {
        let (_, b) = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.WEBP?size=2"}},
            {"type": "image_url", "image_url": {"url": "http://x.test/photo"}},
        ]}]}))
        .unwrap();
        assert_eq!(
            b["contents"][0]["parts"],
            json!([
                {"text": "what?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/a/cat.WEBP?size=2"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "http://x.test/photo"}},
            ])
        );
        let (_, b) = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ]}]}))
        .unwrap();
        assert_eq!(
            b["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
            ])
        );
        let f = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-1"}}]}]}))
        .unwrap_err();
        assert_eq!(f.status, Some(400));
        for url in ["ftp://x/a.png", "data:image/png,notbase64", "data:nocomma"] {
            let f = translate(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]}))
            .unwrap_err();
            assert_eq!(f.status, Some(400), "{url}");
            assert_eq!(f.code.as_deref(), Some(INVALID_REQUEST));
        }
    }

    fn tool_body() -> Value {
        json!({
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 20}"},
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "description": "Weather",
                  "parameters": {"type": "object", "$schema": "x", "additionalProperties": false,
                     "properties": {"city": {"type": "string"}, "additionalProperties": {"type": "string"}},
                     "required": ["city"]}}},
                {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}},
                {"type": "web_search"},
            ],
            "tool_choice": "required",
        })
    }

    #[test]
    fn tools_calls_and_results() {
        let (_, b) = translate(tool_body()).unwrap();
        assert_eq!(
            b["contents"],
            json!([
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"content": {"temp": 20}}}},
                    {"functionResponse": {"name": "time", "response": {"content": "noon"}}},
                ]},
            ])
        );
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations": [
                {"name": "weather", "description": "Weather", "parameters": {"type": "object",
                  "properties": {"city": {"type": "string"}, "additionalProperties": {"type": "string"}},
                  "required": ["city"]}},
                {"name": "time"},
            ]}])
        );
        assert_eq!(
            b["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
    }

    #[test]
    fn thought_signatures_round_trip() {
        let a = response(
            br#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP"}]}"#,
            "m",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let msg = v["choices"][0]["message"].clone();
        assert_eq!(
            msg["tool_calls"][0]["extra_content"],
            json!({"google": {"thought_signature": "c2ln"}})
        );
        let (_, b) = translate(json!({"messages": [{"role": "user", "content": "x"}, msg,
            {"role": "tool", "tool_call_id": "call_0", "content": "1"}]}))
        .unwrap();
        assert_eq!(
            b["contents"][1]["parts"][0],
            json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"})
        );
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "f", "response": {"content": 1}})
        );
    }

    #[test]
    fn tool_choice_modes() {
        for (choice, want) in [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (
                json!({"type": "function", "function": {"name": "weather"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["weather"]}),
            ),
        ] {
            let mut body = tool_body();
            body["tool_choice"] = choice;
            let (_, b) = translate(body).unwrap();
            assert_eq!(b["toolConfig"]["functionCallingConfig"], want);
        }
        let mut body = tool_body();
        body["tool_choice"] = json!("sometimes");
        assert_eq!(translate(body).unwrap_err().status, Some(400));
    }

    #[test]
    fn bad_tool_messages_are_400() {
        let mut body = tool_body();
        body["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("{city: Paris");
        let f = translate(body).unwrap_err();
        assert_eq!(f.code.as_deref(), Some(INVALID_REQUEST));
        assert!(f.message.contains("arguments"), "{f}");
        let mut body = tool_body();
        body["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("[1]");
        assert_eq!(translate(body).unwrap_err().status, Some(400));
        let mut body = tool_body();
        body["messages"][2]["tool_call_id"] = json!("nope");
        let f = translate(body).unwrap_err();
        assert!(f.message.contains("nope"), "{f}");
    }

    #[test]
    fn generation_config() {
        let (_, b) = translate(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END", "n": 1,
            "seed": 7, "presence_penalty": 0.1, "response_format": {"type": "json_object"},
        }))
        .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9,
                   "stopSequences": ["END"], "candidateCount": 1, "seed": 7,
                   "presencePenalty": 0.1, "responseMimeType": "application/json"})
        );
        let (_, b) = translate(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5, "max_tokens": 100, "stop": ["a", "b"], "n": 2,
        }))
        .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"maxOutputTokens": 5, "stopSequences": ["a", "b"]})
        );
        for bad_body in [
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            json!({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}),
        ] {
            assert_eq!(translate(bad_body).unwrap_err().status, Some(400));
        }
    }

    #[test]
    fn schemas_are_cleaned() {
        let s = schema(
            &json!({"type": "object", "$schema": "x", "additionalProperties": false,
            "properties": {"strict": {"type": ["string", "null"], "enum": ["a"]},
                           "list": {"type": "array", "items": {"type": "object", "additionalProperties": true,
                                    "properties": {"x": {"type": "integer", "default": {"strict": 1}}}}},
                           "either": {"anyOf": [{"type": "string", "$schema": "y"}, {"type": "null"}]}},
            "required": ["strict"]}),
        );
        assert_eq!(
            s,
            json!({"type": "object",
                "properties": {"strict": {"type": "string", "nullable": true, "enum": ["a"]},
                               "list": {"type": "array", "items": {"type": "object",
                                        "properties": {"x": {"type": "integer", "default": {"strict": 1}}}}},
                               "either": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                "required": ["strict"]})
        );
    }

    #[test]
    fn json_schema_format() {
        let (_, b) = translate(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true,
                "schema": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "integer"}}}}},
        }))
        .unwrap();
        assert_eq!(
            b["generationConfig"],
            json!({"responseMimeType": "application/json",
                   "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}})
        );
    }

    #[test]
    fn default_max_tokens_and_streamed_path() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        let o = Outbound {
            model: "gemini-2.5-pro",
            stream: true,
            default_max_tokens: Some(64),
        };
        let (path, b) = translate_with(body.clone(), &o).unwrap();
        assert_eq!(path, "models/gemini-2.5-pro:streamGenerateContent?alt=sse");
        assert_eq!(b["generationConfig"], json!({"maxOutputTokens": 64}));
        let (_, b) = translate(body.clone()).unwrap();
        assert_eq!(b.get("generationConfig"), None);
        let (path, _) = translate_with(body, &out("models/gemini-2.0-flash-001")).unwrap();
        assert_eq!(path, "models/gemini-2.0-flash-001:generateContent");
    }

    #[test]
    fn bad_model_ids_and_bodies() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        for model in ["", "a/b", "x:generateContent", "a?b", "é", "a b", "../x"] {
            let f = translate_with(body.clone(), &out(model)).unwrap_err();
            assert_eq!(f.status, Some(400), "{model}");
        }
        for b in [
            json!({}),
            json!({"messages": "hi"}),
            json!({"messages": []}),
            json!({"messages": [{"role": "system", "content": "only"}]}),
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            json!({"messages": [{"content": "x"}]}),
            json!({"messages": [{"role": "user", "content": 5}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        ] {
            assert_eq!(translate(b.clone()).unwrap_err().status, Some(400), "{b}");
        }
    }

    fn answer(body: Value) -> (Value, Option<Usage>) {
        let a = response(body.to_string().as_bytes(), "gemini-2.5-flash").unwrap();
        (serde_json::from_slice(&a.body).unwrap(), a.usage)
    }

    #[test]
    fn text_answer() {
        let (v, usage) = answer(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking…", "thought": true}, {"text": "Hello "}, {"text": "world"}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                              "thoughtsTokenCount": 7, "totalTokenCount": 22},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc",
        }));
        assert_eq!(
            v,
            json!({"id": "gemini-abc", "object": "chat.completion", "created": 0,
                   "model": "gemini-2.5-flash",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}})
        );
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 10,
                output_tokens: 12
            })
        );
    }

    #[test]
    fn function_call_answer() {
        let (v, _) = answer(
            json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "time"}},
        ]}, "finishReason": "STOP"}]}),
        );
        assert_eq!(v["id"], "gemini-response");
        assert_eq!(v.get("usage"), None);
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], Value::Null);
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn finish_reasons() {
        for (reason, want) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
        ] {
            let (v, _) = answer(json!({"candidates": [{"finishReason": reason}]}));
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
            assert_eq!(v["choices"][0]["message"]["content"], "", "{reason}");
        }
    }

    #[test]
    fn blocked_prompt() {
        let (v, usage) = answer(json!({"promptFeedback": {"blockReason": "SAFETY"},
                                        "usageMetadata": {"promptTokenCount": 8}}));
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(
            usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((8, 0))
        );
    }

    #[test]
    fn bad_answers_are_502() {
        for body in [
            &b"not json"[..],
            b"",
            b"[1,2]",
            b"{}",
            b"{\"candidates\": []}",
            b"{\"candidates\": [{\"content\": {\"parts\": \"x\"}}]}",
            b"{\"candidates\": [{\"content\": {\"parts\": [5]}}]}",
            b"{\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {}}]}}]}",
        ] {
            let f = response(body, "m").unwrap_err();
            assert_eq!(f.status, Some(502), "{body:?}");
            assert_eq!(f.code.as_deref(), Some(INVALID_RESPONSE), "{body:?}");
        }
        let f = response(
            br#"{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!((f.status, f.code.as_deref()), (Some(502), Some("INTERNAL")));
    }

    #[test]
    fn huge_and_odd_usage() {
        let (_, usage) = answer(json!({"candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 5}}));
        assert_eq!(usage.unwrap().output_tokens, u64::MAX);
        let (v, usage) = answer(json!({"candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": "1"}}));
        assert_eq!((usage, v.get("usage")), (None, None));
    }

    #[test]
    fn failure_classes() {
        let body = json!({"error": {"code": 429, "message": "Resource has been exhausted",
            "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}});
        let bytes = body.to_string();
        let f = failure(429, &HeaderMap::new(), bytes.as_bytes(), now());
        assert_eq!(
            f.to_string(),
            "429 RESOURCE_EXHAUSTED: Resource has been exhausted"
        );
        assert_eq!(f.retry_after, Some(Duration::from_secs(30)));
        // The header wins.
        let f = failure(
            429,
            &headers(&[("retry-after", "2")]),
            bytes.as_bytes(),
            now(),
        );
        assert_eq!(f.retry_after, Some(Duration::from_secs(2)));
        let frac = bytes.replace("30s", "1.5s");
        let f = failure(429, &HeaderMap::new(), frac.as_bytes(), now());
        assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));
        for odd in ["-1s", "s", "1.2.3s", "99999999s", "5"] {
            let b = bytes.replace("30s", odd);
            assert_eq!(
                failure(429, &HeaderMap::new(), b.as_bytes(), now()).retry_after,
                None,
                "{odd}"
            );
        }
        let obj = bytes.replace("\"30s\"", "{\"seconds\": 3, \"nanos\": 500000000}");
        let f = failure(429, &HeaderMap::new(), obj.as_bytes(), now());
        assert_eq!(f.retry_after, Some(Duration::from_millis(3500)));

        let f = failure(503, &HeaderMap::new(),
            br#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#, now());
        assert_eq!(
            (f.status, f.code.as_deref(), f.retry_after),
            (Some(503), Some("UNAVAILABLE"), None)
        );
        let f = failure(400, &HeaderMap::new(),
            br#"[{"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}]"#, now());
        assert_eq!(f.code.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn context_length_failure() {
        let body = br#"{"error": {"code": 400, "message": "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}"#;
        let f = failure(400, &HeaderMap::new(), body, now());
        assert_eq!(f.code.as_deref(), Some(classify::CONTEXT_LENGTH_EXCEEDED));
        assert!(f.message.starts_with("INVALID_ARGUMENT: "), "{f}");
        // Only a 4xx is the caller's input.
        let f = failure(500, &HeaderMap::new(), body, now());
        assert_eq!(f.code.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn failure_without_a_gemini_body() {
        let f = failure(
            502,
            &HeaderMap::new(),
            b"<html><body>Bad Gateway</body></html>",
            now(),
        );
        assert_eq!((f.status, f.code.as_deref()), (Some(502), None));
        assert!(f.message.contains("Bad Gateway"), "{f}");
        let f = failure(500, &HeaderMap::new(), b"", now());
        assert_eq!((f.status, f.message.as_str()), (Some(500), "(empty)"));
        let f = failure(500, &headers(&[("retry-after", "3")]), b"\xff\x00", now());
        assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
        for odd in [
            &br#"{"error": "x"}"#[..],
            br#"{"error": {"status": 5, "message": []}}"#,
            b"[]",
            b"null",
        ] {
            let f = failure(500, &HeaderMap::new(), odd, now());
            assert_eq!(f.status, Some(500));
        }
    }

    fn events(s: &mut Stream, data: Value) -> Vec<Value> {
        let raw = format!("data: {data}\r\n\r\n");
        s.event(raw.as_bytes()).iter().map(parse_event).collect()
    }

    fn parse_event(b: &Bytes) -> Value {
        let text = std::str::from_utf8(b).unwrap();
        let data = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        if data == "[DONE]" {
            return json!("[DONE]");
        }
        serde_json::from_str(data).unwrap()
    }

    fn text_event(text: &str, finish: Option<&str>, out_tokens: u64) -> Value {
        let mut c = json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        json!({"candidates": [c], "responseId": "r1",
               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": out_tokens}})
    }

    #[test]
    fn stream_text() {
        let mut s = Stream::new("gemini-2.5-flash");
        let e = events(&mut s, text_event("Hel", None, 1));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["id"], "gemini-r1");
        assert_eq!(e[0]["object"], "chat.completion.chunk");
        assert_eq!(e[0]["model"], "gemini-2.5-flash");
        assert_eq!(
            e[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(e[0]["choices"][0]["finish_reason"], Value::Null);
        // Comments and empty data are nothing.
        assert!(s.event(b": keep-alive\n\n").is_empty());
        assert!(s.event(b"data: \n\n").is_empty());
        let e = events(&mut s, text_event("lo", Some("STOP"), 2));
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["choices"][0]["delta"], json!({"content": "lo"}));
        assert_eq!(e[1]["choices"][0]["delta"], json!({}));
        assert_eq!(e[1]["choices"][0]["finish_reason"], "stop");
        let end: Vec<Value> = s.finish().iter().map(parse_event).collect();
        assert_eq!(end.len(), 2);
        assert_eq!(end[0]["choices"], json!([]));
        assert_eq!(
            end[0]["usage"],
            json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})
        );
        assert_eq!(end[1], "[DONE]");
        assert_eq!(s.usage().map(|u| u.output_tokens), Some(2));
    }

    #[test]
    fn stream_function_calls() {
        let mut s = Stream::new("m");
        let call = |name: &str| {
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": name, "args": {"q": 1}}}]}}]})
        };
        let e = events(&mut s, call("a"));
        assert_eq!(
            e[0]["choices"][0]["delta"],
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                   "function": {"name": "a", "arguments": "{\"q\":1}"}}]})
        );
        let mut last = call("b");
        last["candidates"][0]["finishReason"] = json!("STOP");
        let e = events(&mut s, last);
        assert_eq!(e[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(e[0]["choices"][0]["delta"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(e[1]["choices"][0]["finish_reason"], "tool_calls");
        // No usage reported: only [DONE].
        assert_eq!(s.finish(), vec![Bytes::from_static(b"data: [DONE]\n\n")]);
    }

    #[test]
    fn stream_errors() {
        let mut s = Stream::new("m");
        let e = events(
            &mut s,
            json!({"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}),
        );
        assert_eq!(
            e,
            vec![
                json!({"error": {"message": "slow", "type": "upstream_error", "code": "RESOURCE_EXHAUSTED"}})
            ]
        );
        let e = events(
            &mut s,
            json!([{"error": {"code": 500, "message": "x", "status": "INTERNAL"}}]),
        );
        assert_eq!(e[0]["error"]["code"], "INTERNAL");
        for raw in [
            &b"data: {not json\n\n"[..],
            b"data: 5\n\n",
            b"data: {\"candidates\": [{\"content\": {\"parts\": 1}}]}\n\n",
        ] {
            let e: Vec<Value> = s.event(raw).iter().map(parse_event).collect();
            assert_eq!(e.len(), 1);
            assert_eq!(e[0]["error"]["code"], INVALID_RESPONSE, "{raw:?}");
        }
        assert!(s.finish().is_empty());
    }

    #[test]
    fn cut_stream_finishes_empty() {
        let mut s = Stream::new("m");
        assert_eq!(events(&mut s, text_event("Hel", None, 1)).len(), 1);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn stream_blocked_prompt() {
        let mut s = Stream::new("m");
        let e = events(&mut s, json!({"promptFeedback": {"blockReason": "OTHER"}}));
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(e[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(s.finish().len(), 1);
    }

    /// Odd values anywhere never panic: each is an answer or the documented failure.
    #[test]
    fn odd_values_never_panic() {
        let odd = [
            json!(null),
            json!(-1),
            json!(1e300),
            json!(u64::MAX),
            json!("x"),
            json!([]),
            json!([null, 1, "a", {}]),
            json!({}),
            json!({"a": [[[]]]}),
        ];
        let paths = [
            "/messages",
            "/messages/0",
            "/messages/0/role",
            "/messages/0/content",
            "/messages/0/content/0",
            "/messages/0/content/0/type",
            "/messages/0/content/0/image_url",
            "/messages/1/tool_calls",
            "/messages/1/tool_calls/0",
            "/messages/1/tool_calls/0/function",
            "/messages/1/tool_calls/0/function/arguments",
            "/messages/2/tool_call_id",
            "/messages/2/content",
            "/tools",
            "/tools/0",
            "/tools/0/function",
            "/tools/0/function/parameters",
            "/tool_choice",
            "/stop",
            "/n",
            "/seed",
            "/max_tokens",
            "/response_format",
            "/temperature",
        ];
        let base = json!({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}]},
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {}}}}}],
            "tool_choice": "auto", "stop": "s", "n": 1, "seed": 1, "max_tokens": 1,
            "response_format": {"type": "json_object"}, "temperature": 1});
        for path in paths {
            for v in &odd {
                let mut b = base.clone();
                if let Some(slot) = b.pointer_mut(path) {
                    *slot = v.clone();
                }
                let _ = translate(b);
            }
        }
        let answer = json!({"candidates": [{"content": {"parts": [{"text": "a"}, {"functionCall": {"name": "f", "args": {}}}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 1}, "promptFeedback": {"blockReason": "X"},
            "responseId": "r"});
        let answer_paths = [
            "/candidates",
            "/candidates/0",
            "/candidates/0/content",
            "/candidates/0/content/parts",
            "/candidates/0/content/parts/0",
            "/candidates/0/content/parts/1/functionCall",
            "/candidates/0/content/parts/1/functionCall/name",
            "/candidates/0/content/parts/1/functionCall/args",
            "/candidates/0/finishReason",
            "/usageMetadata",
            "/usageMetadata/promptTokenCount",
            "/promptFeedback",
            "/responseId",
        ];
        let error = json!({"error": {"code": 429, "message": "m", "status": "S",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}});
        let error_paths = [
            "/error",
            "/error/message",
            "/error/status",
            "/error/details",
            "/error/details/0",
            "/error/details/0/@type",
            "/error/details/0/retryDelay",
        ];
        for v in &odd {
            for path in answer_paths {
                let mut a = answer.clone();
                if let Some(slot) = a.pointer_mut(path) {
                    *slot = v.clone();
                }
                let text = a.to_string();
                let _ = response(text.as_bytes(), "m");
                let mut s = Stream::new("m");
                let _ = s.event(format!("data: {text}\n\n").as_bytes());
                let _ = s.finish();
            }
            for path in error_paths {
                let mut e = error.clone();
                if let Some(slot) = e.pointer_mut(path) {
                    *slot = v.clone();
                }
                let text = e.to_string();
                let f = failure(429, &HeaderMap::new(), text.as_bytes(), now());
                assert_eq!(f.status, Some(429));
                let mut s = Stream::new("m");
                let events = s.event(format!("data: {text}\n\n").as_bytes());
                let null_error = path == "/error" && v.is_null();
                assert_eq!(events.len(), usize::from(!null_error), "{text}");
            }
        }
    }
}
