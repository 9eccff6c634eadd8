//! The OpenAI format: the caller's body goes as it is, with `model` replaced, the stream
//! flags set, and the model's `max_tokens` when the request sets no length.

use serde_json::{Map, Value};

use super::{Call, Outbound};
use crate::http::Endpoint;

/// The call for `endpoint`: `POST {base_url}/{endpoint}` with the caller's body.
pub fn request(body: &Map<String, Value>, out: &Outbound, endpoint: Endpoint) -> Call {
    let mut m = body.clone();
    m.insert("model".into(), Value::String(out.model.into()));
    let sets_length = m.contains_key("max_tokens") || m.contains_key("max_completion_tokens");
    if let (Some(n), false, false) = (
        out.default_max_tokens,
        sets_length,
        endpoint == Endpoint::Embeddings,
    ) {
        m.insert("max_tokens".into(), Value::from(n));
    }
    if out.stream {
        m.insert("stream".into(), Value::Bool(true));
        let opts = m
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(Map::new());
        }
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    } else {
        m.remove("stream");
        m.remove("stream_options");
    }
    Call {
        path: endpoint.path().into(),
        // A map of JSON values always serializes.
        body: serde_json::to_vec(&m).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(stream: bool, default_max_tokens: Option<u64>) -> Outbound<'static> {
        Outbound {
            model: "up-1",
            stream,
            default_max_tokens,
        }
    }

    fn json(c: &Call) -> Value {
        serde_json::from_slice(&c.body).unwrap()
    }

    #[test]
    fn the_body_gets_the_model_and_the_stream_options() {
        let body = serde_json::json!({"model": "auto", "messages": [], "stream": true, "stream_options": 3});
        let m = body.as_object().unwrap();
        let plain = request(m, &out(false, None), Endpoint::ChatCompletions);
        assert_eq!(plain.path, "chat/completions");
        let plain = json(&plain);
        assert_eq!(plain["model"], "up-1");
        assert!(plain.get("stream").is_none() && plain.get("stream_options").is_none());
        let s = json(&request(m, &out(true, None), Endpoint::ChatCompletions));
        assert_eq!(s["stream"], true);
        assert_eq!(s["stream_options"]["include_usage"], true);
    }

    #[test]
    fn the_models_max_tokens_fills_in_a_missing_length_only() {
        let open = serde_json::json!({"messages": []});
        let set = serde_json::json!({"messages": [], "max_completion_tokens": 7});
        let chat = Endpoint::ChatCompletions;
        let filled = json(&request(
            open.as_object().unwrap(),
            &out(false, Some(99)),
            chat,
        ));
        assert_eq!(filled["max_tokens"], 99);
        let kept = json(&request(
            set.as_object().unwrap(),
            &out(false, Some(99)),
            chat,
        ));
        assert!(kept.get("max_tokens").is_none());
        let e = Endpoint::Embeddings;
        let emb = json(&request(
            open.as_object().unwrap(),
            &out(false, Some(99)),
            e,
        ));
        assert!(emb.get("max_tokens").is_none());
    }
}
