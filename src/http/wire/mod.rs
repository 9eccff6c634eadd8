//! Wire formats: what an upstream of each `api` is sent and answers, translated to and from
//! the OpenAI chat format the executor, the relay and the HTTP client work in.
//!
//! The executor and the policy stay format-free: a format is a property of an upstream
//! (`[upstreams.NAME] api = "openai" | "anthropic" | "gemini"`), and failing over from an
//! Anthropic upstream to a Gemini one is plain failover. Each format is one module of pure
//! functions (no I/O), unit-tested beside it:
//!
//! - [`anthropic`]: `POST {base_url}/messages` (Anthropic's Messages API), and the inbound
//!   direction for the relay's own `POST /v1/messages`;
//! - [`gemini`]: `POST {base_url}/models/{model}:generateContent` and
//!   `:streamGenerateContent?alt=sse`.
//!
//! - [`openai`]: the caller's body as it is, with `model` replaced, the stream flags set and
//!   the model's `max_tokens` when the request sets no length: no translation on the path
//!   of OpenAI-compatible upstreams.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::{Map, Value};

use super::classify::{self, classify};
use super::Endpoint;
use crate::exec::{Done, Failure, Target, Usage};

/// The API format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// OpenAI's chat completions (and every OpenAI-compatible server): `Authorization:
    /// Bearer KEY`.
    #[default]
    OpenAi,
    /// Anthropic's Messages API: `x-api-key: KEY`, `anthropic-version`.
    Anthropic,
    /// Google's Gemini API (`generativelanguage.googleapis.com`): `x-goog-api-key: KEY`.
    Gemini,
}

impl Api {
    /// Its name in policies.
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
        }
    }
}

/// What translating a request needs besides the caller's OpenAI-format body.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The model id the upstream knows (the target's `upstream_model`).
    pub model: &'a str,
    /// Whether the call is streamed.
    pub stream: bool,
    /// `max_tokens` when the body has none (the model's `max_tokens` in the policy).
    pub default_max_tokens: Option<u64>,
}

/// A request in the upstream's format.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Path and query under the upstream's `base_url`, without a leading `/`
    /// (`messages`, `models/gemini-2.5-flash:streamGenerateContent?alt=sse`).
    pub path: std::borrow::Cow<'static, str>,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// A successful answer translated to an OpenAI `chat.completion` object.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The `chat.completion` JSON.
    pub body: Bytes,
    /// Prompt and completion tokens, as the upstream reported them.
    pub usage: Option<Usage>,
}

/// Turns one upstream's server-sent events into OpenAI `chat.completion.chunk` events.
///
/// Each output is one complete OpenAI event (`data: {json}\n\n`). The final usage goes
/// out as OpenAI's usage chunk (`"choices": []` with `usage`), and a stream that ended
/// properly ends with `data: [DONE]\n\n`. An error the upstream sends mid-stream becomes
/// an OpenAI error event (`data: {"error": {"message", "type", "code"}}\n\n`), whose
/// `code` is a failure class a policy can name.
pub trait StreamTranslator: Send {
    /// One upstream event: the raw block of `event:`/`data:` lines with its blank line.
    /// Malformed data becomes an error event with code `invalid_upstream_response`.
    fn event(&mut self, raw: &[u8]) -> Vec<Bytes>;
    /// The upstream's body ended: what is left to send (the usage chunk and `[DONE]`),
    /// or nothing when the stream had not ended properly (the caller then reports it cut
    /// short).
    fn finish(&mut self) -> Vec<Bytes>;
}

impl Api {
    /// The header an API key goes in: `Authorization` (as `Bearer KEY`), `x-api-key` or
    /// `x-goog-api-key`.
    pub fn key_header(self) -> HeaderName {
        match self {
            Api::OpenAi => AUTHORIZATION,
            Api::Anthropic => HeaderName::from_static("x-api-key"),
            Api::Gemini => HeaderName::from_static("x-goog-api-key"),
        }
    }

    /// The value of [`Api::key_header`] for `key`; `None` for a key a header cannot carry.
    pub fn key_value(self, key: &str) -> Option<HeaderValue> {
        let mut v = match self {
            Api::OpenAi => HeaderValue::from_str(&format!("Bearer {key}")),
            Api::Anthropic | Api::Gemini => HeaderValue::from_str(key),
        }
        .ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// The call to `t`'s upstream in its format: `body` is the caller's OpenAI-format body
/// for `endpoint`. Only OpenAI upstreams serve `completions` and `embeddings`: to others
/// such a call is a 400 (`unsupported_endpoint`), not retried.
pub fn call_for(
    t: &Target,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<Call, Failure> {
    let plan = t.plan();
    let api = plan.upstream(t.upstream()).api;
    let out = Outbound {
        model: t.upstream_model(),
        stream,
        default_max_tokens: plan.model(t.model()).max_tokens,
    };
    match (api, endpoint) {
        (Api::OpenAi, e) => Ok(openai::request(body, &out, e)),
        (Api::Anthropic, Endpoint::ChatCompletions) => anthropic::request(body, &out),
        (Api::Gemini, Endpoint::ChatCompletions) => gemini::request(body, &out),
        (api, e) => Err(Failure::status(400)
            .code("unsupported_endpoint")
            .message(format!(
                "upstream `{}` speaks `{}`, which has no `{}` endpoint",
                t.upstream_name(),
                api.name(),
                e.path()
            ))),
    }
}

/// A complete answer of an `api` upstream: the OpenAI-format body with usage, or the
/// failure its status, headers and body describe (see [`classify`] for OpenAI's).
pub fn answer(
    api: Api,
    status: u16,
    headers: &HeaderMap,
    bytes: Bytes,
    model: &str,
) -> Result<Done<Bytes>, Failure> {
    let now = SystemTime::now();
    let ok = (200..300).contains(&status);
    let translated = match api {
        Api::OpenAi => {
            return classify(status, headers, &bytes, now).map(|d| Done {
                value: bytes,
                usage: d.usage,
                rate_limit: d.rate_limit,
                pending: false,
            })
        }
        Api::Anthropic if ok => anthropic::response(&bytes),
        Api::Gemini if ok => gemini::response(&bytes, model),
        Api::Anthropic => Err(anthropic::failure(status, headers, &bytes, now)),
        Api::Gemini => Err(gemini::failure(status, headers, &bytes, now)),
    };
    translated.map(|a| Done {
        value: a.body,
        usage: a.usage,
        rate_limit: classify::rate_limit(headers, now),
        pending: false,
    })
}

/// The failure of a stream call answered with an error (or without `text/event-stream`).
pub fn stream_failure(api: Api, status: u16, headers: &HeaderMap, bytes: &[u8]) -> Failure {
    let now = SystemTime::now();
    let not_a_stream = || {
        Failure::status(502)
            .code(classify::INVALID_RESPONSE)
            .message("a stream was asked for; the upstream answered without text/event-stream")
    };
    match api {
        // A 2xx body may still be an error object (OpenAI-compatible servers do that).
        Api::OpenAi => classify(status, headers, bytes, now)
            .err()
            .unwrap_or_else(not_a_stream),
        _ if (200..300).contains(&status) => not_a_stream(),
        Api::Anthropic => anthropic::failure(status, headers, bytes, now),
        Api::Gemini => gemini::failure(status, headers, bytes, now),
    }
}

/// The translator of a stream from an `api` upstream (`None` for OpenAI's, read as is).
pub fn stream_translator(api: Api, model: &str) -> Option<Box<dyn StreamTranslator>> {
    match api {
        Api::OpenAi => None,
        Api::Anthropic => Some(Box::new(anthropic::Stream::new())),
        Api::Gemini => Some(Box::new(gemini::Stream::new(model))),
    }
}
