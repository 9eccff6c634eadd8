//! Streams: Gemini's server-sent `GenerateContentResponse` chunks → OpenAI `chat.completion.chunk` events.

use super::*;

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

use crate::http::stream::{data_event as sse, error_event};

/// The joined `data:` lines of an event; `None` for comments, empty data and `[DONE]`.
pub(super) fn sse_data(raw: &[u8]) -> Option<Vec<u8>> {
    let data = crate::http::stream::data_of(raw)?;
    let trimmed = data.trim_ascii();
    let keep = !trimmed.is_empty() && trimmed != b"[DONE]";
    keep.then_some(data)
}
