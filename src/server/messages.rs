//! `POST /v1/messages`: Anthropic's Messages API, for the official `anthropic` SDK and the
//! tools built on it. The body is translated into a chat request
//! ([`anthropic::chat_request`]) and runs like one on `/v1/chat/completions` — routed by
//! the same policy (`model` names a route or a model), to upstreams of any format — and
//! the answer, its stream and its errors are translated back into Anthropic's format.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{bad_request, call, json_body, Dialect, Relay};
use crate::http::wire::anthropic;
use crate::http::Endpoint;

/// Largest error body read back to translate it (the relay's own errors are small).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The handler of `POST /v1/messages`.
pub(super) async fn messages(
    State(relay): State<Relay>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let resp = match json_body(&relay, body) {
        Ok(b) => match anthropic::chat_request(&b) {
            Ok(chat) => {
                call(
                    relay,
                    headers,
                    chat,
                    Endpoint::ChatCompletions,
                    Dialect::Anthropic,
                )
                .await
            }
            Err(why) => bad_request("invalid_request", &why),
        },
        Err(resp) => resp,
    };
    errors_in_anthropic_format(resp).await
}

/// A served chat completion as an Anthropic message; a body that cannot be translated is
/// a 502 (it came from the upstream, already checked, so this is not expected).
#[allow(clippy::result_large_err)] // the error is the response itself, built once
pub(super) fn answer(chat: &[u8], model: &str) -> Result<Bytes, Response> {
    anthropic::messages_response(chat, model)
        .map(Bytes::from)
        .map_err(|why| {
            super::error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "invalid_upstream_response",
                &format!("the answer could not be given in Anthropic's format: {why}"),
            )
        })
}

/// Rewrites an OpenAI-format error answer (`{"error": {"message", "type", "code"}}`) in
/// Anthropic's (`{"type": "error", "error": {"type", "message"}}`), keeping the status and
/// headers; successes pass as they are.
async fn errors_in_anthropic_format(resp: Response) -> Response {
    if resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            let m = e.get("message").and_then(Value::as_str).unwrap_or("");
            let code = e.get("code").and_then(Value::as_str).unwrap_or("");
            Some(if code.is_empty() {
                m.to_string()
            } else {
                format!("{code}: {m}")
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let out = anthropic::error_body(parts.status.as_u16(), &message);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(out))
}

/// Anything else under `/v1/messages/` (`count_tokens`, batches): a 404 in Anthropic's
/// format.
pub(super) async fn not_found() -> Response {
    let body = anthropic::error_body(404, "no such endpoint on this relay");
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
