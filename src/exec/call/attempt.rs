//! One attempt of the operation, under the time it is given.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::exec::clock::Clock;
use crate::exec::outcome::{Done, Failure};
use crate::exec::timeout::AttemptTimeout;

/// The time an attempt admitted at `at` has: its per-try timeout, cut by the request
/// deadline; `None` when the deadline has passed (queueing for a permit can use it up).
#[inline]
pub(super) fn attempt_timeout(per_try: Duration, at: u64, deadline: u64) -> Option<Duration> {
    (at < deadline).then(|| per_try.min(Duration::from_nanos(deadline - at)))
}

pin_project_lite::pin_project! {
    /// The operation's future for one attempt; out of time, it fails as a timeout.
    pub(super) struct Attempt<'c, Fut> {
        #[pin]
        inner: AttemptTimeout<'c, Fut>,
        timeout: Duration,
    }
}

impl<'c, Fut> Attempt<'c, Fut> {
    pub fn new(fut: Fut, timeout: Duration, clock: &'c dyn Clock) -> Self {
        Attempt {
            inner: AttemptTimeout::new(fut, timeout, clock),
            timeout,
        }
    }
}

impl<T, Fut> Future for Attempt<'_, Fut>
where
    Fut: Future<Output = Result<Done<T>, Failure>>,
{
    type Output = Result<Done<T>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(r) => r,
            Err(_) => {
                Err(Failure::timeout().message(format!("no answer within {:?}", this.timeout)))
            }
        })
    }
}
