//! Requests: an OpenAI chat body → a `generateContent` request (path and body).

use super::*;

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
        path: format!("models/{model}:{method}").into(),
        body: Value::Object(req).to_string().into_bytes(),
    })
}

/// The model id, safe in a path: `[A-Za-z0-9._-]+` (a `models/` prefix is dropped).
pub(super) fn model_id(model: &str) -> Result<&str, Failure> {
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
pub(super) fn contents(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), Failure> {
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

pub(super) fn push_content(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
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
pub(super) fn content_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, Failure> {
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

pub(super) fn part(p: &Value, i: usize, j: usize) -> Result<Value, Failure> {
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
pub(super) fn image(url: &str) -> Result<Value, String> {
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
pub(super) fn guess_mime(lower_url: &str) -> &'static str {
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
pub(super) fn tool_call_parts(
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
pub(super) fn function_response(
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
pub(super) fn uint(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"))),
    }
}

/// A number field (`null` counts as absent).
pub(super) fn number(body: &Map<String, Value>, key: &str) -> Result<Option<Value>, Failure> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(bad(format!("`{key}` must be a number"))),
    }
}

pub(super) fn generation_config(
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

pub(super) fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, Failure> {
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
pub(super) fn response_format(rf: Option<&Value>, c: &mut Map<String, Value>) {
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
pub(super) fn schema(s: &Value) -> Value {
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
pub(super) fn tools(body: &Map<String, Value>) -> Result<Option<Value>, Failure> {
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
pub(super) fn has_properties(p: &Value) -> bool {
    p.get("properties")
        .and_then(Value::as_object)
        .is_some_and(|o| !o.is_empty())
}

pub(super) fn tool_config(choice: Option<&Value>) -> Result<Option<Value>, Failure> {
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
