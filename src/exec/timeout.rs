//! A per-attempt timeout that costs nothing for an operation that is ready at once.
//!
//! `tokio::time::timeout` reads the clock and builds its timer when it is created. An
//! attempt that completes on its first poll (a cache hit, a fake in tests, a benchmark's
//! no-op) never needs a timer, so this one arms it only when the operation is first
//! pending — a real network call pays the same as with tokio's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

/// The attempt did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// See the [module docs](self).
    pub struct AttemptTimeout<F> {
        #[pin]
        fut: F,
        limit: Duration,
        // Boxed so it can be created lazily; only pending attempts allocate it.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> AttemptTimeout<F> {
    /// `fut`, failing with [`Elapsed`] if it takes longer than `limit`.
    pub fn new(fut: F, limit: Duration) -> Self {
        AttemptTimeout {
            fut,
            limit,
            sleep: None,
        }
    }
}

impl<F: Future> Future for AttemptTimeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let limit = *this.limit;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_futures_pass_and_slow_ones_time_out() {
        assert_eq!(
            AttemptTimeout::new(async { 7 }, Duration::from_secs(1)).await,
            Ok(7)
        );
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            1
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            AttemptTimeout::new(slow, Duration::from_secs(2)).await,
            Err(Elapsed)
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let just_in_time = async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            2
        };
        assert_eq!(
            AttemptTimeout::new(just_in_time, Duration::from_secs(2)).await,
            Ok(2)
        );
    }
}
