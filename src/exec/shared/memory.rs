//! An in-process [`StateBackend`]: the same algorithms as the Redis scripts, behind a mutex,
//! for tests and single-process use of `state = "shared"` code paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BoxFut, Grant, StateBackend, Unavailable};

/// In-process backend. [`set_down`](Self::set_down) simulates an outage.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: Mutex<HashMap<String, i128>>,
    down: AtomicBool,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
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

impl MemoryBackend {
    /// A fresh backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
    }

    fn up(&self) -> Result<(), Unavailable> {
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
            let now = now_us();
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

    fn reserve<'a>(
        &'a self,
        key: &'a str,
        window_us: u64,
        limit: u64,
        amount: u64,
    ) -> BoxFut<'a, Result<Option<u64>, Unavailable>> {
        Box::pin(async move {
            self.up()?;
            let k = now_us() / window_us.max(1);
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
}
