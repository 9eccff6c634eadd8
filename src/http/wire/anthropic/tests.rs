//! Unit tests of the format, both ways.

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
    let f =
        translate_err(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}));
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
    let v =
        translate(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}));
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
    let f =
        response(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
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
    let out = s.event(&ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
    ));
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
    let out = s.event(&ev(
        "error",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
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
    assert!(c.get("top_k").is_none() && c.get("thinking").is_none() && c.get("metadata").is_none());
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
        let b = obj(json!({"model": "m", "max_tokens": 1, "messages": [], "tool_choice": choice}));
        assert_eq!(chat_request(&b).unwrap()["tool_choice"], want);
    }
}

#[test]
fn chat_request_rejects_invalid_input() {
    let ok = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
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
        let m: Value =
            serde_json::from_slice(&messages_response(chat.to_string().as_bytes(), "c").unwrap())
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
        &m.chunk(b"data: {\"error\":{\"message\":\"x\",\"code\":\"stream_idle_timeout\"}}\n\n")[0],
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
