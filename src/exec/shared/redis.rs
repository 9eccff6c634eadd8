//! The Redis [`StateBackend`] (cargo feature `redis`).
//!
//! One Lua script per decision, so every check-and-update is atomic in Redis and no two
//! instances can race between a read and a write:
//! - [`GCRA`]: the rate limiter's theoretical arrival time, in microseconds of Redis's own
//!   clock (`TIME`), under `prefix + "rate:" + upstream`, expiring once the bucket is empty;
//! - [`SHIFT`]: a token limiter's reconciliation (actual minus estimated usage) on the same
//!   kind of bucket, under `prefix + "tokens:" + upstream`;
//! - [`RESERVE`] / [`ADJUST`]: a budget's committed spend per window, in nano-dollars, under
//!   `prefix + "budget:" + name + ":" + window index`, expiring with the window.
//! - [`SIGNAL`]: a shared breaker's trip under `prefix + "breaker:" + entity`, living for
//!   the time the breaker stays open (read back by one pipeline of `PTTL`s per poll; see
//!   [`super::signals`]).
//!
//! Scripts go by `EVALSHA` and are re-sent after a Redis restart (`redis::Script` handles
//! `NOSCRIPT`). The connection is a `redis::aio::ConnectionManager` (multiplexed,
//! reconnecting); its creation is retried lazily, so a Redis that is down at start-up is
//! one more failure for the breaker in [`super::Shared`], not an error.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::Mutex;

use super::{BoxFut, Grant, StateBackend, Unavailable};
use crate::plan::RedisSettings;

/// GCRA: KEYS[1] = bucket; ARGV = t (µs per unit), cap (µs), min, max.
/// Returns `{granted, wait_us}`.
pub const GCRA: &str = r#"
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local minn = tonumber(ARGV[3])
local maxn = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local free = math.floor((cap - (tat - now)) / t)
if free < minn then
  return {0, tat + minn * t - cap - now}
end
local n = math.min(free, maxn)
tat = tat + n * t
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {n, 0}
"#;

/// GCRA shift (token reconciliation): KEYS[1] = bucket; ARGV = delta (µs). A charge counts
/// from `max(TAT, now)`; a refund never lowers the TAT below now. Returns 0.
pub const SHIFT: &str = r#"
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local d = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if d >= 0 then
  if tat < now then tat = now end
  tat = tat + d
else
  if tat <= now then return 0 end
  tat = tat + d
end
if tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 0
"#;

/// Budget reserve: KEYS[1] = budget base key; ARGV = window (µs), limit, amount
/// (nano-dollars). Returns the window index, or -1 when refused.
pub const RESERVE: &str = r#"
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local w = tonumber(ARGV[1])
local k = math.floor(now / w)
local key = KEYS[1] .. ':' .. string.format('%.0f', k)
local cur = tonumber(redis.call('GET', key) or '0')
if cur + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return -1 end
redis.call('INCRBY', key, ARGV[3])
redis.call('PEXPIRE', key, math.ceil(((k + 1) * w - now) / 1000) + 1000)
return k
"#;

/// Budget adjust: KEYS[1] = budget base key; ARGV = window index, delta (nano-dollars).
pub const ADJUST: &str = r#"
local key = KEYS[1] .. ':' .. ARGV[1]
if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[2]) end
return 0
"#;

/// Breaker signal: KEYS[1] = signal key; ARGV = open_for (ms). Sets the key for that long
/// unless it already has longer to live. Returns 0.
pub const SIGNAL: &str = r#"
local p = redis.call('PTTL', KEYS[1])
if p < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 0
"#;

/// Shared state in a Redis server.
pub struct RedisBackend {
    client: redis::Client,
    timeout: Duration,
    conns: Vec<Mutex<Option<ConnectionManager>>>,
    next: std::sync::atomic::AtomicUsize,
    gcra: Script,
    shift: Script,
    reserve: Script,
    adjust: Script,
    signal: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisBackend")
            .field("pool_size", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable(e.to_string())
}

impl RedisBackend {
    /// A backend for `url` (`redis://host:port/db`); connects lazily.
    pub fn new(url: &str, settings: &RedisSettings) -> Result<Self, Unavailable> {
        Ok(RedisBackend {
            client: redis::Client::open(url).map_err(err)?,
            timeout: settings.timeout,
            conns: (0..settings.pool_size.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: Default::default(),
            gcra: Script::new(GCRA),
            shift: Script::new(SHIFT),
            reserve: Script::new(RESERVE),
            adjust: Script::new(ADJUST),
            signal: Script::new(SIGNAL),
        })
    }

    /// A backend for `[state.redis]`, with the URL read from its environment variable.
    pub fn from_env(settings: &RedisSettings) -> Result<Self, Unavailable> {
        let url = std::env::var(&settings.url_env)
            .map_err(|_| Unavailable(format!("{} is not set", settings.url_env)))?;
        Self::new(url.trim(), settings)
    }

    async fn conn(&self) -> Result<ConnectionManager, Unavailable> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let c = ConnectionManager::new_with_config(self.client.clone(), cfg)
            .await
            .map_err(err)?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

impl StateBackend for RedisBackend {
    fn admit<'a>(
        &'a self,
        key: &'a str,
        t_us: u64,
        cap_us: u64,
        min: u64,
        max: u64,
    ) -> BoxFut<'a, Result<Grant, Unavailable>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (n, wait): (u64, u64) = self
                .gcra
                .key(key)
                .arg(t_us)
                .arg(cap_us)
                .arg(min)
                .arg(max)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(if n > 0 {
                Grant::Granted(n)
            } else {
                Grant::Refused(Duration::from_micros(wait))
            })
        })
    }

    fn adjust_rate<'a>(
        &'a self,
        key: &'a str,
        delta_us: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .shift
                .key(key)
                .arg(delta_us)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
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
            let mut c = self.conn().await?;
            let k: i64 = self
                .reserve
                .key(key)
                .arg(window_us)
                .arg(limit)
                .arg(amount)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(u64::try_from(k).ok())
        })
    }

    fn adjust<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        delta: i64,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .adjust
                .key(key)
                .arg(window)
                .arg(delta)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn signal_open<'a>(
        &'a self,
        key: &'a str,
        open_for: Duration,
    ) -> BoxFut<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            let ms = u64::try_from(open_for.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let _: i64 = self
                .signal
                .key(key)
                .arg(ms)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn open_signals<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFut<'a, Result<Vec<Option<Duration>>, Unavailable>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut c = self.conn().await?;
            // One round trip: a pipeline of PTTLs (-2: no key, -1: no expiry, which a
            // signal never lacks; both read as no signal).
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.cmd("PTTL").arg(k);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut c).await.map_err(err)?;
            Ok(ttls
                .into_iter()
                .map(|ms| {
                    u64::try_from(ms)
                        .ok()
                        .filter(|&ms| ms > 0)
                        .map(Duration::from_millis)
                })
                .collect())
        })
    }
}
