//! A per-attempt timeout that costs nothing for an operation that is ready at once.
//!
//! `tokio::time::timeout` reads the clock and builds its timer when it is created. An
//! attempt that completes on its first poll (a cache hit, a fake in tests, a benchmark's
//! no-op) never needs a timer, so this one arms it only when the operation is first
//! pending — a real network call pays the same as with tokio's. The timer is a sleep on the
//! executor's [`Clock`], so an attempt's time runs on the same clock as everything else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::clock::{Clock, Sleep};

/// The attempt did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// See the [module docs](self).
    pub struct AttemptTimeout<'c, F> {
        #[pin]
        fut: F,
        limit: Duration,
        clock: &'c dyn Clock,
        // Created lazily; only pending attempts allocate it.
        sleep: Option<Sleep>,
    }
}

impl<'c, F> AttemptTimeout<'c, F> {
    /// `fut`, failing with [`Elapsed`] if it takes longer than `limit` on `clock`.
    pub fn new(fut: F, limit: Duration, clock: &'c dyn Clock) -> Self {
        AttemptTimeout {
            fut,
            limit,
            clock,
            sleep: None,
        }
    }
}

impl<F: Future> Future for AttemptTimeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let (limit, clock) = (*this.limit, *this.clock);
        let sleep = this.sleep.get_or_insert_with(|| clock.sleep(limit));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::clock::{ManualClock, TokioClock};

    #[tokio::test(start_paused = true)]
    async fn ready_futures_pass_and_slow_ones_time_out() {
        let clock = TokioClock::new();
        let clock: &dyn Clock = &clock;
        assert_eq!(
            AttemptTimeout::new(async { 7 }, Duration::from_secs(1), clock).await,
            Ok(7)
        );
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            1
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            AttemptTimeout::new(slow, Duration::from_secs(2), clock).await,
            Err(Elapsed)
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let just_in_time = async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            2
        };
        assert_eq!(
            AttemptTimeout::new(just_in_time, Duration::from_secs(2), clock).await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn the_timer_runs_on_the_clock_it_is_given() {
        let clock = ManualClock::new();
        let never = std::future::pending::<()>();
        let t = tokio::spawn({
            let clock = clock.clone();
            async move {
                let c: &dyn Clock = &clock;
                AttemptTimeout::new(never, Duration::from_secs(3), c).await
            }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3));
        assert_eq!(t.await.unwrap(), Err(Elapsed));
    }
}
