//! Unit tests of the format, both ways.

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
    Ok((
        call.path.into_owned(),
        serde_json::from_slice(&call.body).unwrap(),
    ))
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
