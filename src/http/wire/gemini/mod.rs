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

mod failure;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use failure::*;
pub use request::*;
pub use response::*;
pub use stream::*;
