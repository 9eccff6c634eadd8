//! Outbound streams: Anthropic events → OpenAI chunks.

use super::*;

/// One server-sent event's `event:` name and joined `data:` lines (`None` when it has no
/// data line: a comment or keep-alive).
pub(super) fn sse_fields(raw: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(raw);
    let event = (text.lines())
        .find_map(|l| l.strip_prefix("event:"))
        .map(|e| e.trim().to_string());
    let data = crate::http::stream::data_of(raw).map(|d| String::from_utf8_lossy(&d).into_owned());
    (event, data)
}

pub(super) use crate::http::stream::{data_event, error_event};

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
