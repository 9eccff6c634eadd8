//! Anthropic's Messages API (`POST {base_url}/messages`), both ways.
//!
//! Outbound (an upstream with `api = "anthropic"`): [`request`] turns the caller's OpenAI
//! chat body into a Messages request, [`response`] and [`failure`] turn the answer back
//! into a `chat.completion` or a [`Failure`], and [`Stream`] turns Anthropic's typed
//! server-sent events into OpenAI `chat.completion.chunk` events.
//!
//! Inbound (the relay's own `POST /v1/messages`, for Anthropic-format clients):
//! [`chat_request`] turns a Messages request into an OpenAI chat body, [`messages_response`]
//! and [`MessagesEvents`] turn the OpenAI answer (or stream) back, and [`error_body`]
//! writes Anthropic's error JSON.
//!
//! Everything here is a pure function of its input: no I/O, no panics on bad input.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};

use super::{Answer, Call, Outbound, StreamTranslator};
use crate::exec::{Failure, Usage};
use crate::http::classify::{self, INVALID_RESPONSE};

/// The `anthropic-version` header sent when the upstream sets none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Anthropic's code for a request it cannot take (and ours for one we cannot translate).
const INVALID_REQUEST: &str = "invalid_request_error";

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::status(400)
        .code(INVALID_REQUEST)
        .message(message.into())
}

fn invalid_response(message: impl Into<String>) -> Failure {
    Failure::status(502)
        .code(INVALID_RESPONSE)
        .message(message.into())
}

mod inbound;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use inbound::*;
pub use request::*;
pub use response::*;
pub use stream::*;
