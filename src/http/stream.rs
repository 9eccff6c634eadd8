//! Server-sent events from an upstream: read event by event, with usage picked out of the
//! final chunk and an idle timeout between chunks.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::classify::MAX_BODY_BYTES;
use crate::exec::{Failure, Usage};

use super::transport::{BodyError, ByteStream};

/// Code of the error event sent when an upstream stalls mid-stream.
pub const STREAM_IDLE: &str = "stream_idle_timeout";
/// Code of the error event sent when a stream runs out of its attempt's time (the per-try
/// timeout, cut by the request's total deadline).
pub const STREAM_TIMEOUT: &str = "stream_timeout";
/// Code of the error event sent when an upstream stream breaks mid-way.
pub const STREAM_INTERRUPTED: &str = "upstream_stream_interrupted";

/// Why a stream stopped early (after the first event reached the caller: no retry then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No chunk within the idle timeout.
    #[error("no chunk from the upstream within {0:?}")]
    Idle(Duration),
    /// The stream outlasted its attempt's time (per-try timeout, cut by the deadline).
    #[error("the stream ran out of its attempt's time")]
    OutOfTime,
    /// The upstream's stream failed.
    #[error("the upstream stream broke: {0}")]
    Interrupted(String),
    /// The upstream closed the stream without its final `data: [DONE]`: the answer may be
    /// cut short.
    #[error("the upstream ended the stream without `data: [DONE]`")]
    Truncated,
    /// One event was larger than the body cap.
    #[error("an event larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

impl StreamError {
    /// The stream-error code sent to the caller.
    pub fn code(&self) -> &'static str {
        match self {
            StreamError::Idle(_) => STREAM_IDLE,
            StreamError::OutOfTime => STREAM_TIMEOUT,
            StreamError::Interrupted(_) | StreamError::Truncated | StreamError::TooLarge => {
                STREAM_INTERRUPTED
            }
        }
    }
    /// The failure this is for the executor ([`Executor::record_late_outcome`]): a stall
    /// or a stream out of time is a `timeout`, a broken or truncated stream a `connect` failure (the connection
    /// broke), an
    /// oversized event a 502; each also carries the code sent to the caller.
    ///
    /// [`Executor::record_late_outcome`]: crate::exec::Executor::record_late_outcome
    pub fn to_failure(&self) -> Failure {
        let f = match self {
            StreamError::Idle(_) | StreamError::OutOfTime => Failure::timeout(),
            StreamError::Interrupted(_) | StreamError::Truncated => Failure::connect(""),
            StreamError::TooLarge => Failure::status(502),
        };
        f.code(self.code()).message(self.to_string())
    }
    /// An SSE event carrying this error, OpenAI style.
    pub fn to_event(&self) -> Bytes {
        error_event(self.code(), &self.to_string())
    }
}

/// What one SSE event holds, as far as the relay cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventKind {
    /// Only comments (keep-alives).
    Comment,
    /// `data: [DONE]`.
    Done,
    /// A JSON chunk, with its usage and whether it is a usage-only chunk (no choices).
    Chunk {
        usage: Option<Usage>,
        usage_only: bool,
        error: Option<Value>,
    },
    /// Data that is not JSON: passed through untouched.
    Other,
}

/// The `data:` lines of one server-sent event, joined with `\n` (one space after the colon
/// dropped, `\r\n` line ends read); `None` when it has none (a comment or keep-alive). The
/// one reader of SSE data, for OpenAI's events and the translators' upstream ones alike.
pub(crate) fn data_of(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(rest.to_vec()),
            }
        }
    }
    data
}

/// An OpenAI-format event carrying `v` (`data: {json}`).
pub(crate) fn data_event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// An OpenAI-format error event, as the relay's own stream errors are written: `code` is a
/// failure class (both it and `message` cut to the classifier's length).
pub(crate) fn error_event(code: &str, message: &str) -> Bytes {
    use super::classify::truncate;
    data_event(&serde_json::json!({"error": {
        "message": truncate(message),
        "type": "upstream_error",
        "code": truncate(code),
    }}))
}

pub(crate) fn event_kind(event: &[u8]) -> EventKind {
    let Some(data) = data_of(event) else {
        return EventKind::Comment;
    };
    if data.trim_ascii() == b"[DONE]" {
        return EventKind::Done;
    }
    match serde_json::from_slice::<Value>(&data) {
        Ok(v) => {
            let usage = super::classify::usage(&v);
            let usage_only = usage.is_some()
                && v.get("choices")
                    .is_none_or(|c| c.as_array().is_some_and(|a| a.is_empty()));
            let error = v.get("error").filter(|e| !e.is_null()).cloned();
            EventKind::Chunk {
                usage,
                usage_only,
                error,
            }
        }
        Err(_) => EventKind::Other,
    }
}

/// Splits a byte stream into SSE events (each with its blank-line terminator).
pub(crate) struct EventReader {
    inner: ByteStream,
    buf: BytesMut,
    ended: bool,
}

impl EventReader {
    pub(crate) fn new(inner: ByteStream) -> Self {
        EventReader {
            inner,
            buf: BytesMut::new(),
            ended: false,
        }
    }

    fn split_event(&mut self) -> Option<Bytes> {
        let b = &self.buf[..];
        let mut i = 0;
        while i + 1 < b.len() {
            if b[i] == b'\n' && b[i + 1] == b'\n' {
                return Some(self.buf.split_to(i + 2).freeze());
            }
            if b[i] == b'\n' && b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some(self.buf.split_to(i + 3).freeze());
            }
            i += 1;
        }
        None
    }

    /// The next complete event; `None` at the end of the stream (a trailing partial event
    /// is returned as it is). Each read from the upstream waits at most `idle`.
    pub(crate) async fn next(
        &mut self,
        idle: Option<Duration>,
    ) -> Option<Result<Bytes, StreamError>> {
        loop {
            if let Some(ev) = self.split_event() {
                return Some(Ok(ev));
            }
            if self.ended {
                if self.buf.is_empty() {
                    return None;
                }
                let rest = self.buf.split().freeze();
                return Some(Ok(rest));
            }
            if self.buf.len() > MAX_BODY_BYTES {
                self.ended = true;
                self.buf.clear();
                return Some(Err(StreamError::TooLarge));
            }
            let next = match idle {
                Some(d) => match tokio::time::timeout(d, self.inner.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.ended = true;
                        self.buf.clear();
                        return Some(Err(StreamError::Idle(d)));
                    }
                },
                None => self.inner.next().await,
            };
            match next {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.ended = true;
                    self.buf.clear();
                    // The exchange's time (the attempt's) covers the whole body.
                    return Some(Err(match e {
                        BodyError::Timeout => StreamError::OutOfTime,
                        BodyError::Broken(m) => StreamError::Interrupted(m),
                    }));
                }
                None => self.ended = true,
            }
        }
    }
}

/// A streamed completion whose first event has arrived (so it can no longer be retried).
///
/// Read it with [`SseStream::next_event`] until `None`; the events are passed through as
/// the upstream sent them, except that a usage-only chunk the caller did not ask for
/// (`stream_options.include_usage`, which tollgate always asks upstream for, to price the
/// call) is held back. After the end, [`SseStream::usage`] holds the usage, if reported.
pub struct SseStream {
    pub(crate) first: Option<Bytes>,
    pub(crate) reader: EventReader,
    pub(crate) idle: Option<Duration>,
    pub(crate) usage: Option<Usage>,
    pub(crate) forward_usage: bool,
    pub(crate) done: bool,
    pub(crate) failure: Option<Failure>,
    /// The upstream's `pool.max_connections` permit, given back when the stream ends or
    /// is dropped.
    pub(crate) connection: Option<tokio::sync::OwnedSemaphorePermit>,
    /// For an upstream of another format: its events become OpenAI chunks here.
    pub(crate) translate: Option<Box<dyn super::wire::StreamTranslator>>,
    /// Translated events not handed out yet.
    pub(crate) queue: std::collections::VecDeque<Bytes>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("idle", &self.idle)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// The next event to send on. An error ends the stream: send
    /// [`StreamError::to_event`] to the caller and stop.
    pub async fn next_event(&mut self) -> Option<Result<Bytes, StreamError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        loop {
            if self.done {
                self.connection = None;
                return None;
            }
            let ev = match self.pull(self.idle).await {
                // `[DONE]` ends the loop above: the upstream closed without it.
                None => {
                    self.done = true;
                    self.connection = None;
                    let e = StreamError::Truncated;
                    self.failure = Some(e.to_failure());
                    return Some(Err(e));
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.connection = None;
                    self.failure = Some(e.to_failure());
                    return Some(Err(e));
                }
                Some(Ok(ev)) => ev,
            };
            if self.book(event_kind(&ev)) {
                return Some(Ok(ev));
            }
        }
    }

    /// Books an event: its usage, an error the upstream reports in it (passed on to the
    /// caller as is, and a failure of the attempt for breakers and stats), the end. Returns
    /// whether to pass the event on (a usage-only chunk the caller did not ask for is not).
    /// The next OpenAI-format event: the upstream's own, or what its translator made of
    /// them (its last ones once the body ends). `None` at the end of the body.
    pub(crate) async fn pull(
        &mut self,
        idle: Option<Duration>,
    ) -> Option<Result<Bytes, StreamError>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(Ok(ev));
            }
            let Some(t) = self.translate.as_mut() else {
                return self.reader.next(idle).await;
            };
            match self.reader.next(idle).await {
                Some(Ok(raw)) => self.queue.extend(t.event(&raw)),
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    self.queue.extend(t.finish());
                    // Whatever comes after the end is the end too.
                    self.translate = None;
                    if self.queue.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    pub(crate) fn book(&mut self, kind: EventKind) -> bool {
        match kind {
            EventKind::Chunk {
                usage,
                usage_only,
                error,
            } => {
                if usage.is_some() {
                    self.usage = usage;
                }
                if let Some(e) = error {
                    self.failure = Some(super::classify::error_failure(502, &e, None));
                }
                !usage_only || self.forward_usage
            }
            EventKind::Done => {
                self.done = true;
                true
            }
            EventKind::Comment | EventKind::Other => true,
        }
    }

    /// Why the stream stopped early, if it did (after [`SseStream::next_event`] returned an
    /// error): for [`Executor::record_late_outcome`](crate::exec::Executor::record_late_outcome).
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Usage reported so far (the final chunk's, with `include_usage`).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(chunks: Vec<&'static [u8]>) -> EventReader {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        EventReader::new(Box::pin(s))
    }

    #[tokio::test]
    async fn events_split_across_chunks() {
        let mut r = reader(vec![
            b"data: {\"a\"",
            b":1}\n\ndata: [DO",
            b"NE]\n\n",
            b"data: tail",
        ]);
        assert_eq!(
            r.next(None).await.unwrap().unwrap(),
            &b"data: {\"a\":1}\n\n"[..]
        );
        assert_eq!(
            r.next(None).await.unwrap().unwrap(),
            &b"data: [DONE]\n\n"[..]
        );
        assert_eq!(r.next(None).await.unwrap().unwrap(), &b"data: tail"[..]);
        assert!(r.next(None).await.is_none());
    }

    fn sse(chunks: Vec<&'static [u8]>) -> SseStream {
        SseStream {
            first: None,
            reader: reader(chunks),
            idle: None,
            usage: None,
            forward_usage: false,
            done: false,
            failure: None,
            connection: None,
            translate: None,
            queue: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_connection_permit_is_given_back_when_the_stream_ends() {
        for chunks in [
            vec![&b"data: {\"choices\":[]}\n\n"[..], b"data: [DONE]\n\n"],
            vec![&b"data: {\"choices\":[]}\n\n"[..]], // truncated
        ] {
            let pool = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
            let mut s = sse(chunks);
            s.connection = Some(pool.clone().try_acquire_owned().unwrap());
            assert_eq!(pool.available_permits(), 0);
            drain(&mut s).await;
            assert_eq!(pool.available_permits(), 1);
            assert!(s.next_event().await.is_none());
        }
    }

    async fn drain(s: &mut SseStream) -> (usize, Option<StreamError>) {
        let mut n = 0;
        while let Some(ev) = s.next_event().await {
            match ev {
                Ok(_) => n += 1,
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }

    #[tokio::test]
    async fn a_stream_closed_without_done_is_truncated_and_a_failure() {
        let mut s = sse(vec![b"data: {\"choices\":[]}\n\n"]);
        assert_eq!(drain(&mut s).await, (1, Some(StreamError::Truncated)));
        let f = s.failure().expect("a failure for the breaker");
        assert_eq!(f.kind, crate::exec::FailureKind::Connect);

        let mut ok = sse(vec![b"data: {\"choices\":[]}\n\n", b"data: [DONE]\n\n"]);
        assert_eq!(drain(&mut ok).await, (2, None));
        assert!(ok.failure().is_none());
    }

    #[tokio::test]
    async fn an_error_event_mid_stream_is_passed_on_and_is_a_failure() {
        let mut s = sse(vec![
            b"data: {\"choices\":[]}\n\n",
            b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n",
            b"data: [DONE]\n\n",
        ]);
        assert_eq!(
            drain(&mut s).await,
            (3, None),
            "every event reaches the caller"
        );
        let f = s.failure().expect("a failure for the breaker");
        assert_eq!(
            (f.status, f.code.as_deref()),
            (Some(502), Some("overloaded"))
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(event_kind(b": keep-alive\n\n"), EventKind::Comment);
        assert_eq!(event_kind(b"data: [DONE]\n\n"), EventKind::Done);
        assert_eq!(event_kind(b"data: not json\n\n"), EventKind::Other);
        match event_kind(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n") {
            EventKind::Chunk {
                usage: Some(u),
                usage_only: true,
                error: None,
            } => assert_eq!((u.input_tokens, u.output_tokens), (1, 2)),
            k => panic!("{k:?}"),
        }
        match event_kind(b"data: {\"error\":{\"code\":\"overloaded\"}}\n\n") {
            EventKind::Chunk { error: Some(_), .. } => {}
            k => panic!("{k:?}"),
        }
    }
}
