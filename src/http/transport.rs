//! The wire under [`Client`](super::Client): hyper's pooled client (HTTP/1.1, and HTTP/2
//! where TLS negotiates it) over rustls with the webpki roots.
//!
//! Why hyper and not reqwest, which the client used before: the relay sends every call of
//! every request through here, and reqwest's layers cost more than the rest of the relay's
//! own work. A callgrind profile of `tollgate serve` (issue 12) counted ~46,000 instructions
//! per request inside reqwest's `send` alone, among them two full URL parses (one by its
//! redirect policy, which runs even when redirects are off, one to build the response's
//! URL) at ~6,500 each; calling hyper's client directly skips all of it (BENCHMARKS.md,
//! "Relay against an nginx reverse proxy"). What reqwest did for us and is done here:
//! connect timeouts, `TCP_NODELAY`, the idle pool's size and timeout, a `User-Agent`, the
//! attempt's time over the whole exchange body included, and error kinds (connect,
//! timeout, broken). What it did and is not done: `HTTP(S)_PROXY` variables (the relay
//! connects to upstreams directly; documented in docs/serve.md).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use tokio::time::Instant;

use crate::plan::Upstream;

const AGENT: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));

/// A body read chunk by chunk, each read cut at the exchange's deadline.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// Why a body stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// The exchange ran out of its time (the attempt's) while the body was being read.
    Timeout,
    /// The connection broke mid-body (the message says how).
    Broken(String),
}

/// Why an exchange produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No connection: refused, unreachable, a TLS failure, or the connect timeout. Nothing
    /// was sent.
    Connect(String),
    /// No response head within the exchange's time.
    Timeout(String),
    /// The connection broke after the request went out.
    Broken(String),
}

/// A response head, with its body still to read.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: ByteStream,
}

/// One pool of connections to one upstream, with one connect timeout.
#[derive(Clone)]
pub(crate) struct Transport {
    client: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why a [`Transport`] could not be built (the TLS configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

impl Transport {
    /// A pool for `u`'s calls with this connect timeout: its `pool.max_idle` and
    /// `pool.idle_timeout`, no redirects followed (hyper follows none).
    pub(crate) fn new(u: &Upstream, connect: Duration) -> Result<Transport, BuildError> {
        Self::with_pool(u.max_idle as usize, u.idle_timeout, connect)
    }

    fn with_pool(
        max_idle: usize,
        idle_timeout: Duration,
        connect: Duration,
    ) -> Result<Transport, BuildError> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| BuildError(format!("TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Transport { client })
    }

    /// `POST uri` with a JSON `body` and the `extra` headers; the response head within
    /// `time`, its body cut at the same deadline.
    pub(crate) async fn post(
        &self,
        uri: hyper::Uri,
        body: Bytes,
        extra: [Option<(HeaderName, HeaderValue)>; 2],
        time: Duration,
    ) -> Result<Answer, SendError> {
        let deadline = Instant::now() + time;
        let mut req = hyper::Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        for (name, value) in extra.into_iter().flatten() {
            h.insert(name, value);
        }
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_connect() => return Err(SendError::Connect(chain(&e))),
            Ok(Err(e)) => return Err(SendError::Broken(chain(&e))),
            Err(_) => return Err(SendError::Timeout(format!("no response within {time:?}"))),
        };
        let (head, body) = resp.into_parts();
        Ok(Answer {
            status: head.status.as_u16(),
            headers: head.headers,
            body: body_stream(body, deadline),
        })
    }
}

/// `body` as a stream of data chunks (trailers skipped), ending with
/// [`BodyError::Timeout`] at `deadline`.
fn body_stream(body: Incoming, deadline: Instant) -> ByteStream {
    let state = Some(body);
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let mut body = state?;
            loop {
                let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                    Err(_) => return Some((Err(BodyError::Timeout), None)),
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return Some((Err(BodyError::Broken(chain(&e))), None)),
                    Ok(Some(Ok(f))) => f,
                };
                if let Ok(data) = frame.into_data() {
                    return Some((Ok(data), Some(body)));
                }
            }
        },
    ))
}

/// An error with its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn transport() -> Transport {
        Transport::with_pool(4, Duration::from_secs(5), Duration::from_secs(1)).unwrap()
    }

    /// A server on 127.0.0.1 that answers every connection with `reply` after reading a
    /// little, then waits `hold` before closing.
    async fn server(reply: &'static [u8], hold: Duration) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                    tokio::time::sleep(hold).await;
                });
            }
        });
        addr
    }

    fn uri(scheme: &str, addr: std::net::SocketAddr) -> hyper::Uri {
        format!("{scheme}://{addr}/v1/chat/completions")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn an_https_upstream_that_does_not_speak_tls_is_a_connect_failure() {
        let addr = server(b"HTTP/1.1 200 OK\r\n\r\n", Duration::ZERO).await;
        let r = transport()
            .post(
                uri("https", addr),
                Bytes::new(),
                [None, None],
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(r, Err(SendError::Connect(_))), "{:?}", r.err());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = transport()
            .post(
                uri("http", addr),
                Bytes::new(),
                [None, None],
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(r, Err(SendError::Connect(_))), "{:?}", r.err());
    }

    #[tokio::test]
    async fn no_head_in_time_is_a_timeout_and_a_slow_body_is_cut_at_the_same_deadline() {
        let silent = server(b"", Duration::from_secs(5)).await;
        let r = transport()
            .post(
                uri("http", silent),
                Bytes::new(),
                [None, None],
                Duration::from_millis(100),
            )
            .await;
        assert!(matches!(r, Err(SendError::Timeout(_))), "{:?}", r.err());
        // A head at once, then a body that never comes.
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        let slow = server(head, Duration::from_secs(5)).await;
        let mut a = transport()
            .post(
                uri("http", slow),
                Bytes::new(),
                [None, None],
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        use futures_util::StreamExt;
        assert_eq!(a.body.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        assert_eq!(a.body.next().await, Some(Err(BodyError::Timeout)));
        assert_eq!(a.body.next().await, None);
    }

    #[tokio::test]
    async fn a_connection_closed_mid_body_is_broken() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        let addr = server(head, Duration::ZERO).await;
        let mut a = transport()
            .post(
                uri("http", addr),
                Bytes::new(),
                [None, None],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        use futures_util::StreamExt;
        let mut got = Vec::new();
        while let Some(c) = a.body.next().await {
            got.push(c);
        }
        assert!(
            matches!(got.last(), Some(Err(BodyError::Broken(_)))),
            "{got:?}"
        );
    }
}
