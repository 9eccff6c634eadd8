//! A simulated shared-state backend (what Redis is to `state = "shared"`), on virtual
//! time: slow, failing, down over intervals, losing settlements, as scripted.
//!
//! The state and its algorithms are [`MemoryBackend`]'s (the same as the Redis scripts'),
//! on the simulation's clock; this adds the scripted round trip in front of every call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::scenario::SharedScript;
use crate::exec::clock::TokioClock;
use crate::exec::shared::{BoxFut, Grant, MemoryBackend, StateBackend, Unavailable};

/// The simulated backend.
#[derive(Debug)]
pub(crate) struct SimBackend {
    epoch: Instant,
    script: SharedScript,
    rng: Mutex<fastrand::Rng>,
    inner: MemoryBackend,
}

/// Locks a mutex; a poisoned one (a panicking `op` cannot hold these) is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimBackend {
    pub(crate) fn new(script: SharedScript, seed: u64) -> Self {
        SimBackend {
            epoch: Instant::now(),
            script,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            inner: MemoryBackend::on_clock(Arc::new(TokioClock::new())),
        }
    }

    /// One round trip: its latency, then an answer or a failure as scripted. A settlement
    /// (`adjust`, `adjust_rate`) may also be lost.
    async fn trip(&self, settlement: bool) -> Result<(), Unavailable> {
        let (latency, fails) = {
            let mut rng = lock(&self.rng);
            let (lo, hi) = self.script.latency_ms;
            let latency = Duration::from_millis(rng.u64(lo.min(hi)..=hi.max(lo)));
            let lost = settlement && rng.f64() < self.script.lose_settlements;
            (latency, lost || rng.f64() < self.script.fail)
        };
        tokio::time::sleep(latency).await;
        let ms = self.epoch.elapsed().as_millis() as u64;
        let down = self.script.down.iter().any(|&(a, b)| a <= ms && ms < b);
        if down || fails {
            return Err(Unavailable("simulated backend failure".into()));
        }
        Ok(())
    }
}

impl StateBackend for SimBackend {
    fn admit<'a>(
        &'a self,
        key: &'a str,
        t_us: u64,
        cap_us: u64,
        min: u64,
        max: u64,
    ) -> BoxFut<'a, Result<Grant, Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            self.inner.admit(key, t_us, cap_us, min, max).await
        })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a str,
        window_us: u64,
        limit: u64,
        amount: u64,
    ) -> BoxFut<'a, Result<Option<u64>, Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            self.inner.reserve(key, window_us, limit, amount).await
        })
    }

    fn adjust_rate<'a>(
        &'a self,
        key: &'a str,
        delta_us: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.trip(true).await?;
            self.inner.adjust_rate(key, delta_us).await
        })
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        delta: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.trip(true).await?;
            self.inner.adjust(key, window, delta).await
        })
    }

    fn signal_open<'a>(
        &'a self,
        key: &'a str,
        open_for: Duration,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            self.inner.signal_open(key, open_for).await
        })
    }

    fn open_signals<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFut<'a, Result<Vec<Option<Duration>>, Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            self.inner.open_signals(keys).await
        })
    }
}
