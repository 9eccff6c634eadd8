//! An in-process [`StateBackend`]: the same algorithms as the Redis scripts, behind a mutex,
//! for tests and single-process use of `state = "shared"` code paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BoxFut, Grant, StateBackend, Unavailable};
use crate::exec::clock::Clock;

/// In-process backend. [`set_down`](Self::set_down) simulates an outage,
/// [`fail_next`](Self::fail_next) a few failed calls. Its clock is the wall clock, or
/// one given with [`on_clock`](Self::on_clock) (the simulation's virtual time).
#[derive(Default)]
pub struct MemoryBackend {
    clock: Option<Arc<dyn Clock>>,
    map: Mutex<HashMap<String, i128>>,
    /// Breaker signals: key → expiry, on tokio's clock (so paused-time tests move it).
    signals: Mutex<HashMap<String, tokio::time::Instant>>,
    down: AtomicBool,
    fail_next: AtomicU64,
    calls: AtomicU64,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("virtual_clock", &self.clock.is_some())
            .field("down", &self.down)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// The backend's clock (µs since the Unix epoch), for tests.
#[cfg(test)]
pub(crate) fn now_us_for_tests() -> u64 {
    now_us()
}

/// One GCRA decision on TAT `tat` (µs) at `now`: the units granted and the new TAT, or the
/// wait. The Redis script computes the same.
pub(crate) fn gcra(
    tat: u64,
    now: u64,
    t: u64,
    cap: u64,
    min: u64,
    max: u64,
) -> Result<(u64, u64), u64> {
    let tat = tat.max(now);
    let free = cap.saturating_sub(tat - now) / t.max(1);
    if free < min {
        return Err((tat + min * t).saturating_sub(cap).saturating_sub(now));
    }
    let n = free.min(max);
    Ok((n, tat + n * t))
}

/// A TAT `tat` shifted by `delta_us` at `now`: a charge counts from `max(tat, now)`, a
/// refund never lowers the TAT below `now` (an empty bucket stays empty). The Redis script
/// computes the same.
pub(crate) fn shift(tat: i128, now: i128, delta_us: i64) -> i128 {
    let d = delta_us as i128;
    if d >= 0 {
        tat.max(now) + d
    } else {
        (tat + d).max(now.min(tat))
    }
}

impl MemoryBackend {
    /// A backend whose clock is `clock` (µs from 1, so that 0 stays "never"), e.g. tokio's
    /// paused time in a simulation, instead of the wall clock.
    pub fn on_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryBackend {
            clock: Some(clock),
            ..Self::default()
        }
    }

    /// The backend's clock, µs.
    fn now_us(&self) -> u64 {
        match &self.clock {
            Some(c) => c.now() / 1_000 + 1,
            None => now_us(),
        }
    }

    /// A fresh backend on the wall clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
    }

    /// Makes the next `n` calls fail (then the backend answers again).
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Relaxed);
    }

    /// Calls received (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// The GCRA TAT (µs, backend clock) of bucket `key`, 0 if none.
    pub fn tat(&self, key: &str) -> u64 {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).map_or(0, |v| (*v).max(0) as u64)
    }

    /// The committed spend (nano-dollars) of window `window` of budget `key`.
    pub fn spend(&self, key: &str, window: u64) -> i128 {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&format!("{key}:{window}")).copied().unwrap_or(0)
    }

    fn up(&self) -> Result<(), Unavailable> {
        self.calls.fetch_add(1, Relaxed);
        if self
            .fail_next
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Unavailable("memory backend: injected failure".into()));
        }
        if self.down.load(Relaxed) {
            Err(Unavailable("memory backend is down".into()))
        } else {
            Ok(())
        }
    }
}

impl StateBackend for MemoryBackend {
    fn admit<'a>(
        &'a self,
        key: &'a str,
        t_us: u64,
        cap_us: u64,
        min: u64,
        max: u64,
    ) -> BoxFut<'a, Result<Grant, Unavailable>> {
        Box::pin(async move {
            self.up()?;
            let now = self.now_us();
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let tat = m.entry(key.to_string()).or_insert(0);
            Ok(match gcra(*tat as u64, now, t_us, cap_us, min, max) {
                Ok((n, next)) => {
                    *tat = next as i128;
                    Grant::Granted(n)
                }
                Err(wait) => Grant::Refused(Duration::from_micros(wait)),
            })
        })
    }

    fn adjust_rate<'a>(
        &'a self,
        key: &'a str,
        delta_us: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.up()?;
            let now = self.now_us() as i128;
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let tat = m.entry(key.to_string()).or_insert(0);
            *tat = shift(*tat, now, delta_us);
            Ok(())
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
            self.up()?;
            let k = self.now_us() / window_us.max(1);
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let cur = m.entry(format!("{key}:{k}")).or_insert(0);
            if *cur + amount as i128 > limit as i128 {
                return Ok(None);
            }
            *cur += amount as i128;
            Ok(Some(k))
        })
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        delta: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            self.up()?;
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cur) = m.get_mut(&format!("{key}:{window}")) {
                *cur += delta as i128;
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
            self.up()?;
            let until = tokio::time::Instant::now() + open_for;
            let mut m = self.signals.lock().unwrap_or_else(|e| e.into_inner());
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
            self.up()?;
            let now = tokio::time::Instant::now();
            let mut m = self.signals.lock().unwrap_or_else(|e| e.into_inner());
            m.retain(|_, until| *until > now);
            Ok(keys
                .iter()
                .map(|k| m.get(k).map(|until| *until - now))
                .collect())
        })
    }
}
