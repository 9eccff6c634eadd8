//! Upstream API keys: read from the environment variable the policy names, at start-up.

use crate::plan::ApiKeyRef;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use super::wire::Api;
use crate::policy::{check_key, KeyProblem, Secret};

/// Why an API key could not be used. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The variable is unset or empty.
    #[error(
        "upstream `{upstream}`: environment variable `{env}` is not set (it holds the API key)"
    )]
    Unset {
        /// The upstream.
        upstream: String,
        /// The variable.
        env: String,
    },
    /// The key does not start with an allowed prefix.
    #[error("upstream `{upstream}`: the key in `{env}` does not start with one of {prefixes} (value not shown)")]
    BadPrefix {
        /// The upstream.
        upstream: String,
        /// The variable.
        env: String,
        /// The allowed prefixes, quoted and joined.
        prefixes: String,
    },
    /// The key cannot be sent in a header (control characters, non-ASCII).
    #[error("upstream `{upstream}`: the key in `{env}` has characters not allowed in an HTTP header (value not shown)")]
    NotHeaderSafe {
        /// The upstream.
        upstream: String,
        /// The variable.
        env: String,
    },
}

/// Reads and checks the key an upstream names ([`check_key`]: trimmed, non-empty, with an
/// allowed prefix, and sendable as a header value). `env` looks a variable up (the process
/// environment in production; a map in tests and in `tollgate demo`).
pub fn resolve(
    upstream: &str,
    key: &ApiKeyRef,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, KeyError> {
    let raw = env(&key.env);
    let (upstream, env) = (upstream.to_string(), key.env.clone());
    match check_key(raw.as_deref(), &key.prefixes) {
        Ok(value) => Ok(Secret::new(value)),
        Err(KeyProblem::Unset) => Err(KeyError::Unset { upstream, env }),
        Err(KeyProblem::BadPrefix) => Err(KeyError::BadPrefix {
            upstream,
            env,
            prefixes: key
                .prefixes
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        Err(KeyProblem::NotHeaderSafe) => Err(KeyError::NotHeaderSafe { upstream, env }),
    }
}

/// An upstream's API keys in rotation (`api_keys`; one for `api_key`). Calls spread over
/// them round-robin. Each key keeps its own state from what the upstream answered with it:
/// a 429 (or `x-ratelimit-remaining: 0`) rests it until the reset the answer gave (one
/// second without one), while the others carry the calls; a 401 or 403 takes it out of
/// rotation for good (one warning, and `/status` and `/metrics` show it).
pub(crate) struct KeyPool {
    keys: Vec<PooledKey>,
    next: AtomicUsize,
    /// The pool's clock for rests (a key's reset is a duration from an answer).
    epoch: Instant,
}

/// One key of a [`KeyPool`].
pub(crate) struct PooledKey {
    /// The environment variable it came from: its name in logs and `/status`.
    pub env: String,
    secret: Secret,
    auth: HeaderValue,
    revoked: AtomicBool,
    /// Milliseconds since the pool's epoch until which the key rests; 0: not resting.
    rest_until_ms: AtomicU64,
}

/// How a key stands, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyView {
    /// The environment variable holding it (never the key).
    pub env: String,
    /// `active`, `resting` (a 429 or an exhausted window, until `rest_ms` from now) or
    /// `revoked` (answered 401/403: out of rotation).
    pub state: &'static str,
    /// Milliseconds of rest left, when resting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_ms: Option<u64>,
}

/// A key's rest without a reset in the answer.
const DEFAULT_REST: Duration = Duration::from_secs(1);

impl KeyPool {
    /// The pool of `keys` (environment variable, key), in the policy's order.
    /// Each key goes in the header `api` reads it from ([`Api::key_header`]).
    pub fn new(keys: Vec<(String, Secret)>, api: Api) -> Self {
        let keys = keys
            .into_iter()
            .map(|(env, secret)| {
                let auth = api
                    .key_value(secret.expose())
                    // `resolve` (check_key) only lets keys a header can carry through.
                    .expect("keys are checked to be visible ASCII");
                PooledKey {
                    env,
                    secret,
                    auth,
                    revoked: AtomicBool::new(false),
                    rest_until_ms: AtomicU64::new(0),
                }
            })
            .collect();
        KeyPool {
            keys,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// How many keys the upstream has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The secrets, for scrubbing an echoed key from a failure's message.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.keys.iter().map(|k| &k.secret)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The key for the next call: the next one in rotation that is neither revoked nor
    /// resting; if every usable key rests, the one whose rest ends first; `None` when the
    /// upstream has no key, or every key was revoked.
    pub fn pick(&self) -> Option<&PooledKey> {
        let n = self.keys.len();
        if n <= 1 {
            return self.keys.first().filter(|k| !k.revoked.load(Relaxed));
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Relaxed);
        let usable = (0..n)
            .map(|i| &self.keys[(start + i) % n])
            .filter(|k| !k.revoked.load(Relaxed));
        let mut soonest: Option<&PooledKey> = None;
        for k in usable {
            let until = k.rest_until_ms.load(Relaxed);
            if until <= now {
                return Some(k);
            }
            if soonest.is_none_or(|s| until < s.rest_until_ms.load(Relaxed)) {
                soonest = Some(k);
            }
        }
        soonest
    }

    /// Whether another key than `key` could take the call now.
    pub fn has_other(&self, key: &PooledKey) -> bool {
        let now = self.now_ms();
        self.keys.iter().any(|k| {
            !std::ptr::eq(k, key)
                && !k.revoked.load(Relaxed)
                && k.rest_until_ms.load(Relaxed) <= now
        })
    }

    /// Records what the upstream answered with `key`: a 401/403 revokes it, a 429 or an
    /// exhausted window rests it until `reset` (or [`DEFAULT_REST`]).
    pub fn observe(
        &self,
        upstream: &str,
        key: &PooledKey,
        status: u16,
        reset: Option<Duration>,
        exhausted: bool,
    ) {
        match status {
            // A guard with a side effect: the first refusal flips it and warns, once.
            401 | 403 if !key.revoked.swap(true, Relaxed) => {
                tracing::warn!(target: "tollgate::http", %upstream, key_env = %key.env, status, "API key refused: taken out of rotation");
            }
            401 | 403 => {}
            429 => key.rest(self.now_ms(), reset.unwrap_or(DEFAULT_REST)),
            _ if exhausted => key.rest(self.now_ms(), reset.unwrap_or(DEFAULT_REST)),
            _ => {}
        }
    }

    /// Each key's state.
    pub fn views(&self) -> Vec<KeyView> {
        let now = self.now_ms();
        self.keys
            .iter()
            .map(|k| {
                let until = k.rest_until_ms.load(Relaxed);
                let (state, rest_ms) = if k.revoked.load(Relaxed) {
                    ("revoked", None)
                } else if until > now {
                    ("resting", Some(until - now))
                } else {
                    ("active", None)
                };
                KeyView {
                    env: k.env.clone(),
                    state,
                    rest_ms,
                }
            })
            .collect()
    }
}

impl PooledKey {
    /// The header value for this key (`Bearer KEY` for OpenAI upstreams).
    pub fn auth(&self) -> &HeaderValue {
        &self.auth
    }

    fn rest(&self, now_ms: u64, d: Duration) {
        let until = now_ms
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .max(now_ms + 1);
        self.rest_until_ms.fetch_max(until, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(prefixes: &[&str]) -> ApiKeyRef {
        ApiKeyRef {
            env: "K".into(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn cases() {
        let get = |v: Option<&'static str>| move |_: &str| v.map(String::from);
        assert_eq!(
            resolve("u", &r(&[]), &get(Some("  sk-abc \n")))
                .unwrap()
                .expose(),
            "sk-abc"
        );
        assert!(matches!(
            resolve("u", &r(&[]), &get(None)),
            Err(KeyError::Unset { .. })
        ));
        assert!(matches!(
            resolve("u", &r(&[]), &get(Some("   "))),
            Err(KeyError::Unset { .. })
        ));
        let e = resolve(
            "u",
            &r(&["hs_live_", "hs_test_"]),
            &get(Some("sk-secret-value")),
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::BadPrefix { .. }));
        assert!(!e.to_string().contains("secret-value"), "{e}");
        assert!(resolve("u", &r(&["hs_test_"]), &get(Some("hs_test_1"))).is_ok());
        let e = resolve("u", &r(&[]), &get(Some("sk bad"))).unwrap_err();
        assert!(matches!(e, KeyError::NotHeaderSafe { .. }));
        assert!(!e.to_string().contains("sk bad"));
        let s = resolve("u", &r(&[]), &get(Some("sk-hidden"))).unwrap();
        assert!(!format!("{s:?} {s}").contains("hidden"));
    }

    fn pool(n: usize) -> KeyPool {
        KeyPool::new(
            (0..n)
                .map(|i| (format!("K{i}"), Secret::new(format!("sk-{i}"))))
                .collect(),
            Api::OpenAi,
        )
    }

    #[test]
    fn keys_rotate_rest_and_are_revoked() {
        let p = pool(3);
        let envs: Vec<String> = (0..6).map(|_| p.pick().unwrap().env.clone()).collect();
        assert_eq!(envs, ["K0", "K1", "K2", "K0", "K1", "K2"], "round-robin");
        let k0 = &p.keys[0];
        p.observe("up", k0, 429, Some(Duration::from_secs(60)), false);
        for _ in 0..4 {
            assert_ne!(p.pick().unwrap().env, "K0", "a 429'd key rests");
        }
        assert!(p.has_other(k0));
        p.observe("up", &p.keys[1], 401, None, false);
        for _ in 0..4 {
            assert_eq!(
                p.pick().unwrap().env,
                "K2",
                "revoked and resting keys are skipped"
            );
        }
        let states: Vec<&str> = p.views().iter().map(|v| v.state).collect();
        assert_eq!(states, ["resting", "revoked", "active"]);
        p.observe("up", &p.keys[2], 403, None, false);
        assert_eq!(
            p.pick().unwrap().env,
            "K0",
            "every other key revoked: the resting one still serves"
        );
        p.observe("up", &p.keys[0], 401, None, false);
        assert!(p.pick().is_none(), "every key revoked");
    }

    #[test]
    fn an_exhausted_window_rests_the_key_and_debug_hides_it() {
        let p = pool(2);
        p.observe("up", &p.keys[0], 200, Some(Duration::from_secs(5)), true);
        assert_eq!(p.views()[0].state, "resting");
        assert_eq!(p.pick().unwrap().env, "K1");
        assert!(!format!("{:?}", p.views()).contains("sk-"));
    }
}
