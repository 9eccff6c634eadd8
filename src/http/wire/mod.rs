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
//! OpenAI-format upstreams get the caller's body as it is (with `model` replaced): no
//! translation, so nothing here is on their path.

pub mod anthropic;
pub mod gemini;

use bytes::Bytes;

use crate::exec::Usage;

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
    pub path: String,
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
