//! `[upstreams.NAME]`: where calls go.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize};

use super::{Duration, Timeouts};

/// An upstream API endpoint (a provider, or a relay in front of several).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL of the endpoint, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The API format it speaks: `openai` (chat completions at `{base_url}/chat/completions`,
    /// `Authorization: Bearer`; the default), `anthropic` (`{base_url}/messages`, key in
    /// `x-api-key`, an `anthropic-version` header; so `base_url =
    /// "https://api.anthropic.com/v1"`) or `gemini`
    /// (`{base_url}/models/MODEL:generateContent`, key in `x-goog-api-key`; so `base_url =
    /// "https://generativelanguage.googleapis.com/v1beta"`). Callers always speak OpenAI's
    /// format (or Anthropic's at the relay's `/v1/messages`): tollgate translates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiFormat>,
    /// The `anthropic-version` header sent to an `anthropic` upstream (default
    /// `2023-06-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// Where the API key comes from: always an environment variable, never a literal key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    /// Several API keys, each from an environment variable (instead of `api_key`): calls
    /// spread over them round-robin; a key answered with 429 rests until the reset the
    /// answer gives while the others carry the calls (the attempt moves to another key
    /// before it counts as the upstream's failure); a key answered with 401/403 is taken out
    /// of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<Vec<ApiKey>>,
    /// Connection pool settings for the HTTP client of this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool>,
    /// Request, token and concurrency limits the upstream imposes (or that you impose on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Follow `x-ratelimit-remaining(-requests)` / `x-ratelimit-reset(-requests)` headers to
    /// tighten the request-rate limiter until the reset. Needs `limits.requests_per_second`
    /// or `requests_per_minute`, local (without a request rate, or with a shared one, it has
    /// no effect: a warning).
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Name of a `[breakers.NAME]` policy for this upstream (default: `defaults.breaker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Timeouts for calls to this upstream, overriding `defaults.timeouts` field by field.
    /// Its `total` is the deadline of routes that set none (the longest of their upstreams').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// The API format of an upstream (`api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiFormat {
    /// OpenAI's chat completions, and every OpenAI-compatible server.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
}

/// An API key reference: `{ env = "VAR", prefixes = ["sk-"] }`.
///
/// A literal string is accepted by the parser only so that the compiler can reject it with
/// a precise diagnostic; its value is never printed.
#[derive(Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ApiKey {
    /// Read the key from this environment variable at start-up.
    Env(EnvKey),
    /// A key written into the policy: always an error. The value is kept redacted.
    #[serde(serialize_with = "serialize_redacted")]
    Literal(Secret),
}

/// `{ env = "VAR", prefixes = [...] }`.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvKey {
    /// Name of the environment variable holding the key.
    pub env: String,
    /// If set, the key must start with one of these prefixes (e.g. `["sk-"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
}

impl fmt::Debug for EnvKey {
    /// Shows the variable's name, unless it looks like a pasted key (then it is redacted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: &dyn fmt::Debug = if super::spans::env_looks_like_key(&self.env, &self.prefixes) {
            &"<redacted>"
        } else {
            &self.env
        };
        f.debug_struct("EnvKey")
            .field("env", env)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: call only where it is sent, never where it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What is wrong with an upstream's API key as read from its variable (never the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// The variable is unset or empty (blank).
    Unset,
    /// The key does not start with one of the allowed prefixes.
    BadPrefix,
    /// The key has characters an HTTP header value cannot carry.
    NotHeaderSafe,
}

/// The rule for an upstream's API key, one copy for `tollgate check` (the compiler) and the
/// HTTP client at start-up: the variable's value (`raw`) trimmed; not empty; starting
/// with one of `prefixes` when any are given; visible ASCII only (it is sent as a header).
/// Checked in that order; returns the trimmed key.
pub fn check_key<'a>(raw: Option<&'a str>, prefixes: &[String]) -> Result<&'a str, KeyProblem> {
    let value = raw.unwrap_or_default().trim();
    if value.is_empty() {
        return Err(KeyProblem::Unset);
    }
    if !prefixes.is_empty() && !prefixes.iter().any(|p| value.starts_with(p.as_str())) {
        return Err(KeyProblem::BadPrefix);
    }
    if !value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(KeyProblem::NotHeaderSafe);
    }
    Ok(value)
}

fn serialize_redacted<S: serde::Serializer>(_: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKey::Env(k) => f.debug_tuple("Env").field(k).finish(),
            ApiKey::Literal(s) => f.debug_tuple("Literal").field(s).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ApiKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table `{ env = \"VAR\" }` naming an environment variable")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ApiKey, E> {
                Ok(ApiKey::Literal(Secret::new(v)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ApiKey, A::Error> {
                EnvKey::deserialize(de::value::MapAccessDeserializer::new(map)).map(ApiKey::Env)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_pasted_key() {
        let pasted = EnvKey {
            env: "sk-live-abc123".into(),
            prefixes: vec![],
        };
        assert!(!format!("{pasted:?}").contains("abc123"));
        let by_prefix = EnvKey {
            env: "hs_live_abc123".into(),
            prefixes: vec!["hs_live_".into()],
        };
        assert!(!format!("{by_prefix:?}").contains("abc123"));
        let ok = EnvKey {
            env: "RELAY_API_KEY".into(),
            prefixes: vec![],
        };
        assert!(format!("{ok:?}").contains("RELAY_API_KEY"));
        assert!(!format!("{:?}", ApiKey::Literal(Secret::new("sk-zzz"))).contains("zzz"));
    }
}

impl JsonSchema for ApiKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ApiKey".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        // Only the environment-variable form is valid; literal keys are rejected.
        let mut s = EnvKey::json_schema(g);
        s.insert(
            "description".into(),
            "Where the API key comes from: `{ env = \"VAR\", prefixes = [...] }`. A literal key is an error.".into(),
        );
        s
    }
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Most requests in flight to this upstream at once, each holding its connection until
    /// its response (or stream) is read; a call past it waits within its attempt's time,
    /// then fails as `timeout` (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most idle connections kept for reuse, per pool (default `max_connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle: Option<u32>,
    /// How long an idle connection is kept (default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// What to do when a limiter cannot admit a call right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// Fail (or skip to the next target) at once.
    #[default]
    Fail,
    /// Wait for a permit, up to `queue_timeout`.
    Wait,
}

/// Limits on calls to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests admitted per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Requests admitted per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<f64>,
    /// Tokens (input estimate + max output) admitted per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<f64>,
    /// Requests that may burst above the steady rate (default: one second's worth, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Most calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// `fail` (default) or `wait` when a limit is reached.
    #[serde(default)]
    pub on_limit: OnLimit,
    /// With `on_limit = "wait"`, the longest wait for a permit (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<Duration>,
    /// `local` (default): this process's limiters; `shared`: the request rate and the tokens
    /// per minute hold for all instances together, in `[state.redis]` (the concurrency limit
    /// stays per instance).
    #[serde(default)]
    pub state: super::StateScope,
}
