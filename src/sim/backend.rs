//! A simulated shared-state backend (what Redis is to `state = "shared"`), on virtual
//! time: slow, failing, down over intervals, losing settlements, as scripted.
//!
//! Its algorithms are those of [`MemoryBackend`](crate::exec::shared::MemoryBackend) (and
//! the Redis scripts), on tokio's clock instead of the wall clock, which does not move in
//! a simulation. `gcra` and `shift` are copies of `exec::shared::memory`'s, which are not
//! public: they go once the executor offers a backend on an injectable clock.

use crate::exec::shared::memory::{gcra, shift};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::scenario::SharedScript;
use crate::exec::shared::{BoxFut, Grant, StateBackend, Unavailable};

/// The simulated backend.
#[derive(Debug)]
pub(crate) struct SimBackend {
    epoch: Instant,
    script: SharedScript,
    rng: Mutex<fastrand::Rng>,
    map: Mutex<HashMap<String, i128>>,
    signals: Mutex<HashMap<String, Instant>>,
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
            map: Mutex::new(HashMap::new()),
            signals: Mutex::new(HashMap::new()),
        }
    }

    /// The backend's clock, µs (from 1, so that 0 stays "never").
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX) + 1
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
            let now = self.now_us();
            let mut m = lock(&self.map);
            let tat = m.entry(key.to_string()).or_insert(0);
            Ok(match gcra(*tat as u64, now, t_us, cap_us, min, max) {
                Ok((n, next)) => {
                    *tat = i128::from(next);
                    Grant::Granted(n)
                }
                Err(wait) => Grant::Refused(Duration::from_micros(wait)),
            })
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
            let k = self.now_us() / window_us.max(1);
            let mut m = lock(&self.map);
            let cur = m.entry(format!("{key}:{k}")).or_insert(0);
            if *cur + i128::from(amount) > i128::from(limit) {
                return Ok(None);
            }
            *cur += i128::from(amount);
            Ok(Some(k))
        })
    }

    fn adjust_rate<'a>(
        &'a self,
        key: &'a str,
        delta_us: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.trip(true).await?;
            let now = i128::from(self.now_us());
            let mut m = lock(&self.map);
            let tat = m.entry(key.to_string()).or_insert(0);
            *tat = shift(*tat, now, delta_us);
            Ok(())
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
            if let Some(cur) = lock(&self.map).get_mut(&format!("{key}:{window}")) {
                *cur += i128::from(delta);
            }
            Ok(())
        })
    }

    fn signal_open<'a>(
        &'a self,
        key: &'a str,
        open_for: Duration,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            let until = Instant::now() + open_for;
            let mut m = lock(&self.signals);
            let e = m.entry(key.to_string()).or_insert(until);
            *e = (*e).max(until);
            Ok(())
        })
    }

    fn open_signals<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFut<'a, Result<Vec<Option<Duration>>, Unavailable>> {
        Box::pin(async move {
            self.trip(false).await?;
            let now = Instant::now();
            let mut m = lock(&self.signals);
            m.retain(|_, until| *until > now);
            Ok(keys.iter().map(|k| m.get(k).map(|u| *u - now)).collect())
        })
    }
}
