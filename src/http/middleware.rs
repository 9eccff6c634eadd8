//! A [`reqwest_middleware::Middleware`]: tollgate's executor under a service's own
//! `reqwest_middleware::ClientWithMiddleware` (feature `reqwest-middleware`, on by default).
//!
//! Each request the service sends runs under the plan like a relay request: the route is
//! picked from the JSON body's attributes ([`request_attributes`]; or from a
//! [`Request`] the service puts in the request's extensions), and each attempt goes to the
//! target's upstream with limits, breakers, retries, failover and budgets applied.
//!
//! What an attempt sends: the service's request, cloned, with
//! - the URL's scheme, host and port and the base path replaced by the target's `base_url`:
//!   the path after the `base_url`'s path (or the whole path, if it does not start with it)
//!   is appended, so `https://anything/v1/chat/completions` goes to
//!   `{base_url}/chat/completions` for a `base_url` ending in `/v1`, and so does
//!   `https://anything/chat/completions`; the query is kept;
//! - `model` in a JSON-object body replaced by the target's upstream model;
//! - the upstream's key in the header its `api` reads (`Authorization: Bearer`,
//!   `x-api-key`, `x-goog-api-key`), and every key header the service set removed (a key
//!   is never carried to another upstream on failover). The body is **not translated**:
//!   it goes in the format the service wrote, so route a middleware's calls to upstreams
//!   of that format (the relay and [`Client`] translate).
//!
//! The rest of the middleware chain (`next`) runs for every attempt.
//!
//! The service's reqwest client opens the connections, so its own connect timeout and
//! idle pool apply, not the plan's; the plan's `pool.max_connections` does hold (each
//! attempt takes one of the upstream's permits, shared with [`Client`]'s calls).
//!
//! # Limits
//! - **The body must be cloneable** (bytes, JSON, text: what `.json()`/`.body(Vec<u8>)`
//!   produce): a retry or a failover re-sends it. A streaming body cannot be re-sent, so such
//!   a request fails with [`MiddlewareError::BodyNotCloneable`] before anything is sent.
//! - **Responses are buffered** (up to the classifier's cap) to classify them (status, error
//!   body, `Retry-After`, usage): an SSE stream comes back whole, after it ends, and its
//!   breaks mid-way are not told apart. Stream through the relay or
//!   [`Client::chat_completion_stream`](super::Client::chat_completion_stream) instead.
//! - The returned [`reqwest::Response`] is rebuilt from the bytes: status, headers (plus
//!   `x-tollgate-route`, `-model`, `-upstream`, `-attempts`, `-failovers`, `-cost-usd`) and body are the upstream's,
//!   but `url()` and `remote_addr()` are not.
//! - When the executor gives up after an upstream answered (a 400, the last of several
//!   503s), that answer is returned as the response, as plain reqwest would; when no
//!   upstream answered (connect failures, timeouts, open breakers, a spent budget, no
//!   route), the error is [`MiddlewareError::Exec`] with the executor's account.
//!
//! ```
//! # async fn run(exec: tollgate::exec::Executor, client: tollgate::http::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use reqwest_middleware::ClientBuilder;
//! use tollgate::http::TollgateMiddleware;
//!
//! let http = ClientBuilder::new(reqwest::Client::new())
//!     .with(TollgateMiddleware::new(exec, client))
//!     .build();
//! // The host does not matter: tollgate sends each attempt to the upstream it picks.
//! let resp = http
//!     .post("http://tollgate.invalid/v1/chat/completions")
//!     .json(&serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
//!     .send()
//!     .await?;
//! println!("{} from {:?}", resp.status(), resp.headers().get("x-tollgate-model"));
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{Extensions, HeaderMap};
use bytes::Bytes;
use reqwest_middleware::{Middleware, Next};
use serde_json::Value;

use super::classify::classify;
use super::transport::{chain, BodyError};
use super::{read_capped, request_attributes, Client};
use crate::exec::{Done, ExecError, Executor, Failure, Request, Target};

/// Why the middleware could not run a request. Never contains a key.
#[derive(Debug, thiserror::Error)]
pub enum MiddlewareError {
    /// The body is a stream: it could not be re-sent on a retry or failover.
    #[error("tollgate: the request body is a stream and cannot be re-sent on a retry or failover; send bytes or JSON")]
    BodyNotCloneable,
    /// The executor gave up before any upstream answered.
    #[error("tollgate: {0}")]
    Exec(#[from] ExecError),
}

/// The middleware: runs every request under `exec`'s plan, attempts sent through the rest
/// of the chain with the keys of `client` (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct TollgateMiddleware {
    exec: Executor,
    client: Client,
}

impl TollgateMiddleware {
    /// Requests run under `exec`; `client` holds the upstreams' keys (its pools are not
    /// used: the service's client sends).
    pub fn new(exec: Executor, client: Client) -> Self {
        TollgateMiddleware { exec, client }
    }
}

/// An upstream's answer, buffered.
struct Answer {
    status: reqwest::StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[async_trait::async_trait]
impl Middleware for TollgateMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if req.try_clone().is_none() {
            return Err(reqwest_middleware::Error::middleware(
                MiddlewareError::BodyNotCloneable,
            ));
        }
        let json: Option<serde_json::Map<String, Value>> = req
            .body()
            .and_then(|b| b.as_bytes())
            .and_then(|b| serde_json::from_slice(b).ok());
        let attrs = extensions
            .get::<Request>()
            .cloned()
            .or_else(|| json.as_ref().map(request_attributes))
            .unwrap_or_default();
        // The last answer of a failed attempt: returned as is if the executor gives up.
        let last: Arc<Mutex<Option<Answer>>> = Arc::default();
        let (req, json, ext) = (&req, &json, &*extensions);
        let result = self
            .exec
            .execute(&attrs, |t, _| {
                let next = next.clone();
                let last = last.clone();
                async move {
                    let attempt = self.attempt(req, json.as_ref(), &t)?;
                    // `pool.max_connections` holds here too, until the body is read.
                    let _connection = self.client.connection_for(&t).await?;
                    let mut ext = ext.clone();
                    let resp = next.run(attempt, &mut ext).await.map_err(|e| match e {
                        reqwest_middleware::Error::Reqwest(e) => transport_failure(&e),
                        reqwest_middleware::Error::Middleware(e) => {
                            Failure::connect(format!("middleware: {e}"))
                        }
                    })?;
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    let body = read_response(resp).await?;
                    match classify(status.as_u16(), &headers, &body, SystemTime::now()) {
                        Ok(d) => Ok(Done {
                            value: Answer {
                                status,
                                headers,
                                body,
                            },
                            usage: d.usage,
                            rate_limit: d.rate_limit,
                            pending: false,
                        }),
                        Err(f) => {
                            // A poisoned lock only means another attempt panicked: the
                            // slot is still a plain Option.
                            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Answer {
                                status,
                                headers,
                                body,
                            });
                            Err(f)
                        }
                    }
                }
            })
            .await;
        match result {
            Ok(served) => {
                let (mut a, served) = served.into_parts();
                super::headers::write_served(&mut a.headers, &served);
                Ok(response(a))
            }
            Err(e) => {
                let answer = last.lock().unwrap_or_else(|p| p.into_inner()).take();
                match answer {
                    Some(a) if !e.attempts.is_empty() => Ok(response(a)),
                    _ => Err(reqwest_middleware::Error::middleware(
                        MiddlewareError::Exec(e),
                    )),
                }
            }
        }
    }
}

fn response(a: Answer) -> reqwest::Response {
    let mut r = axum::http::Response::new(a.body);
    *r.status_mut() = a.status;
    *r.headers_mut() = a.headers;
    reqwest::Response::from(r)
}

impl TollgateMiddleware {
    /// The service's request as sent to `t`.
    fn attempt(
        &self,
        req: &reqwest::Request,
        json: Option<&serde_json::Map<String, Value>>,
        t: &Target,
    ) -> Result<reqwest::Request, Failure> {
        let mut out = req
            .try_clone()
            .ok_or_else(|| Failure::connect("the request body cannot be cloned"))?;
        *out.url_mut() = target_url(req.url(), t.base_url())?;
        *out.timeout_mut() = Some(t.timeout());
        if let Some(body) = json {
            if body.contains_key("model") {
                let mut body = body.clone();
                body.insert("model".into(), Value::String(t.upstream_model().into()));
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| Failure::connect(format!("re-encoding the body: {e}")))?;
                *out.body_mut() = Some(bytes.into());
                out.headers_mut().remove(reqwest::header::CONTENT_LENGTH);
            }
        }
        // No key the service set is carried to another upstream, in any key header.
        for h in ["authorization", "x-api-key", "x-goog-api-key"] {
            out.headers_mut().remove(h);
        }
        if let Some((name, value)) = self.client.auth_for(t)? {
            out.headers_mut().insert(name, value);
        }
        Ok(out)
    }
}

/// `url`'s path (less `base`'s path, if it starts with it) and query on `base`.
fn target_url(url: &reqwest::Url, base: &str) -> Result<reqwest::Url, Failure> {
    let base_url = reqwest::Url::parse(base)
        .map_err(|e| Failure::connect(format!("upstream base_url `{base}`: {e}")))?;
    let base_path = base_url.path().trim_end_matches('/');
    let path = url.path();
    let rest = match path.strip_prefix(base_path) {
        Some(r) if !base_path.is_empty() && (r.is_empty() || r.starts_with('/')) => r,
        _ => path,
    };
    let mut out = base_url.clone();
    out.set_path(&format!("{base_path}{rest}"));
    out.set_query(url.query());
    Ok(out)
}

/// A reqwest error as a failure class: connect (no connection, a connect timeout included:
/// nothing was sent), timeout, or a broken exchange (a `connect` failure too).
fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() && !e.is_connect() {
        Failure::timeout().message(chain(e))
    } else {
        Failure::connect(chain(e))
    }
}

/// The service client's response body, read as the relay's own are (capped, its
/// timeout a `timeout`, a break `upstream_body_incomplete`).
async fn read_response(resp: reqwest::Response) -> Result<Bytes, Failure> {
    use futures_util::StreamExt;
    let length = resp.content_length();
    let body = resp.bytes_stream().map(|r| {
        r.map_err(|e| match e.is_timeout() {
            true => BodyError::Timeout,
            false => BodyError::Broken(chain(&e)),
        })
    });
    read_capped(Box::pin(body), length).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rebased_on_the_target() {
        let cases = [
            (
                "http://x/v1/chat/completions",
                "http://up:1/v1",
                "http://up:1/v1/chat/completions",
            ),
            (
                "http://x/chat/completions",
                "http://up:1/v1/",
                "http://up:1/v1/chat/completions",
            ),
            (
                "http://x/v1x/a?q=1",
                "http://up:1/v1",
                "http://up:1/v1/v1x/a?q=1",
            ),
            ("http://x/a", "https://up", "https://up/a"),
        ];
        for (url, base, want) in cases {
            let got = target_url(&reqwest::Url::parse(url).unwrap(), base).unwrap();
            assert_eq!(got.as_str(), want, "{url} on {base}");
        }
    }
}
