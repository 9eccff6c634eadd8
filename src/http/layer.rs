//! A `tower` layer: the executor around any service that makes one attempt.
//!
//! [`ChatLayer`] turns a service taking an [`Attempt`] (one call to one target) into a
//! service taking a chat-completions body, run under the plan: routing, limits, breakers,
//! retries and failover. [`Client`] is such an attempt service.
//!
//! ```
//! # async fn run(exec: tollgate::exec::Executor, client: tollgate::http::Client) {
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tollgate::http::ChatLayer;
//!
//! let mut svc = ServiceBuilder::new().layer(ChatLayer::new(exec)).service(client);
//! let body = serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
//! let served = svc.ready().await.unwrap().call(body.as_object().unwrap().clone()).await;
//! # let _ = served; }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde_json::{Map, Value};
use tower::{Layer, Service, ServiceExt};

use super::{request_attributes, Client};
use crate::exec::{Done, ExecError, Executor, Failure, Served, Target};

/// One attempt: the target the executor picked and the caller's body.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Where to send it.
    pub target: Target,
    /// The chat-completions body (its `model` is replaced by the target's).
    pub body: Arc<Map<String, Value>>,
}

/// Wraps an attempt service in the executor.
#[derive(Debug, Clone)]
pub struct ChatLayer {
    exec: Executor,
}

impl ChatLayer {
    /// A layer running calls under `exec`'s plan.
    pub fn new(exec: Executor) -> Self {
        ChatLayer { exec }
    }
}

impl<S> Layer<S> for ChatLayer {
    type Service = ChatService<S>;
    fn layer(&self, inner: S) -> ChatService<S> {
        ChatService {
            exec: self.exec.clone(),
            inner,
        }
    }
}

/// The service [`ChatLayer`] makes: takes a chat-completions body, returns the served
/// response or the executor's error.
#[derive(Debug, Clone)]
pub struct ChatService<S> {
    exec: Executor,
    inner: S,
}

impl<S, T> Service<Map<String, Value>> for ChatService<S>
where
    S: Service<Attempt, Response = Done<T>, Error = Failure> + Clone + Send + Sync + 'static,
    S::Future: Send,
    T: Send + 'static,
{
    type Response = Served<T>;
    type Error = ExecError;
    type Future = Pin<Box<dyn Future<Output = Result<Served<T>, ExecError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ExecError>> {
        // Admission (limits, breakers) happens per attempt inside the executor.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, body: Map<String, Value>) -> Self::Future {
        let exec = self.exec.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let req = request_attributes(&body);
            let body = Arc::new(body);
            exec.execute(&req, |target, _| {
                let svc = inner.clone();
                let attempt = Attempt {
                    target,
                    body: body.clone(),
                };
                async move { svc.oneshot(attempt).await }
            })
            .await
        })
    }
}

impl Service<Attempt> for Client {
    type Response = Done<Bytes>;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Done<Bytes>, Failure>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, a: Attempt) -> Self::Future {
        let c = self.clone();
        Box::pin(async move { c.send(&a.target, &a.body).await })
    }
}
