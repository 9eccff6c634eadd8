//! The OpenAI format: the caller's body goes as it is, with `model` replaced, the stream
//! flags set, and the model's `max_tokens` when the request sets no length.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::{Call, Outbound};
use crate::http::Endpoint;

/// The call for `endpoint`: `POST {base_url}/{endpoint}` with the caller's body.
pub fn request(body: &Map<String, Value>, out: &Outbound, endpoint: Endpoint) -> Call {
    let sets_length = body.contains_key("max_tokens") || body.contains_key("max_completion_tokens");
    let max_tokens = out
        .default_max_tokens
        .filter(|_| !sets_length && endpoint != Endpoint::Embeddings);
    let outgoing = Outgoing {
        body,
        model: out.model,
        max_tokens,
        stream: out.stream,
    };
    Call {
        path: endpoint.path().into(),
        // String keys and JSON values always serialize.
        body: serde_json::to_vec(&outgoing).unwrap_or_default(),
    }
}

/// The caller's body as the upstream gets it, written straight from the caller's map:
/// copying the whole body (messages and all) only to change a few members cost a deep
/// clone per request (issue 12). Its members come first, less the ones set here; then
/// `model`, `max_tokens` when filled in, and for a stream `stream: true` with
/// `stream_options.include_usage: true` (the usage chunk prices the call). A plain call
/// drops the caller's `stream` and `stream_options`.
struct Outgoing<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    /// Set only when the body has no length of its own.
    max_tokens: Option<u64>,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let set_here = ["model", "stream", "stream_options"];
        for (k, v) in self.body {
            if !set_here.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("model", self.model)?;
        if let Some(n) = self.max_tokens {
            m.serialize_entry("max_tokens", &n)?;
        }
        if self.stream {
            m.serialize_entry("stream", &true)?;
            let caller = self.body.get("stream_options").and_then(Value::as_object);
            m.serialize_entry("stream_options", &StreamOptions(caller))?;
        }
        m.end()
    }
}

/// The caller's `stream_options` (an object; anything else is dropped) with
/// `include_usage: true`.
struct StreamOptions<'a>(Option<&'a Map<String, Value>>);

impl Serialize for StreamOptions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.into_iter().flatten() {
            if k != "include_usage" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("include_usage", &true)?;
        m.end()
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

    /// `request` as it was before it wrote the body without a copy (commit fc0a33f).
    fn request_before(body: &Map<String, Value>, out: &Outbound, endpoint: Endpoint) -> Call {
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

    #[test]
    fn the_body_is_the_one_the_copy_made() {
        let bodies = [
            serde_json::json!({}),
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
            serde_json::json!({"messages": [], "stream": true, "stream_options": 3}),
            serde_json::json!({"messages": [], "stream": false, "stream_options": null}),
            serde_json::json!({"messages": [], "stream_options": {"include_usage": false, "x": [1]}}),
            serde_json::json!({"messages": [], "stream_options": {}}),
            serde_json::json!({"messages": [], "max_completion_tokens": 7}),
            serde_json::json!({"messages": [], "max_tokens": 5, "temperature": 0.5}),
            serde_json::json!({"messages": [], "max_tokens": null}),
            serde_json::json!({"input": ["a", "b"], "model": "emb", "encoding_format": "float"}),
            serde_json::json!({"prompt": "once", "suffix": "\u{e9}\"\n", "n": 2}),
        ];
        let endpoints = [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
        ];
        for body in &bodies {
            let m = body.as_object().unwrap();
            for e in endpoints {
                for o in [
                    out(false, None),
                    out(true, None),
                    out(false, Some(9)),
                    out(true, Some(9)),
                ] {
                    let (new, old) = (request(m, &o, e), request_before(m, &o, e));
                    assert_eq!(new.path, old.path);
                    assert_eq!(json(&new), json(&old), "{body} {e:?} {o:?}");
                }
            }
        }
    }
}
