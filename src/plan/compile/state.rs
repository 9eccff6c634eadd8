//! `[state.redis]`, and the entries that keep their state shared and so need it.

use super::*;
use crate::policy::spans::is_env_name;

impl Compiler<'_> {
    /// `[state.redis]`, resolved with its defaults.
    pub(super) fn redis(&mut self) -> Option<RedisSettings> {
        let r = self.p().state.as_ref()?.redis.clone()?;
        let path = KeyPath::from(["state", "redis"]);
        let url = path.key("url").key("env");
        if !is_env_name(&r.url.env) {
            let message = "`url.env` must name an environment variable, and this is not one (value not shown)";
            let d = self.error(Code::InvalidValue, message, &url)
                .with_label("expected a name like `REDIS_URL`")
                .with_help("the URL may hold a password: keep it in the environment and name the variable here");
            self.push(d);
        } else if std::env::var(&r.url.env).map_or(true, |v| v.trim().is_empty()) {
            let message = format!("state.redis: environment variable {} is not set", r.url.env);
            let d = self
                .warning(Code::EnvUnset, message, &url)
                .with_help("fine for `check`; shared state needs it at start-up");
            self.push(d);
        }
        let timeout = r.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.get());
        if timeout.is_zero() {
            let d = self.error(
                Code::InvalidValue,
                "the Redis timeout is zero",
                &path.key("timeout"),
            );
            self.push(d.with_label("expected a positive duration, e.g. `50ms`"));
        }
        let breaker_poll = r.breaker_poll.map_or(DEFAULT_BREAKER_POLL, |d| d.get());
        if breaker_poll.is_zero() {
            let message = "the breaker poll interval is zero";
            let d = self.error(Code::InvalidValue, message, &path.key("breaker_poll"));
            self.push(d.with_label("expected a positive duration, e.g. `250ms`"));
        }
        for (key, v) in [
            ("pool_size", r.pool_size),
            ("expected_instances", r.expected_instances),
            ("lease", r.lease),
        ] {
            if v == Some(0) {
                let d = self.error(Code::InvalidValue, format!("{key} is 0"), &path.key(key));
                self.push(d.with_label("expected at least 1"));
            }
        }
        Some(RedisSettings {
            url_env: r.url.env.clone(),
            key_prefix: r
                .key_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string()),
            timeout,
            pool_size: r.pool_size.unwrap_or(1).max(1),
            fail_mode: r.fail_mode,
            expected_instances: r.expected_instances.unwrap_or(1).max(1),
            lease: r.lease.unwrap_or(1).max(1),
            breaker_poll,
        })
    }

    /// `state = "shared"` needs `[state.redis]`.
    pub(super) fn shared_needs_redis(&mut self, have_redis: bool) {
        if have_redis {
            return;
        }
        let p = self.p();
        let mut at: Vec<(String, KeyPath)> = Vec::new();
        for (n, u) in &p.upstreams {
            if u.limits
                .as_ref()
                .is_some_and(|l| l.state == StateScope::Shared)
            {
                at.push((
                    format!("upstream `{n}`"),
                    KeyPath::from(["upstreams", n.as_str(), "limits", "state"]),
                ));
            }
        }
        for (n, b) in &p.budgets {
            if b.state == StateScope::Shared {
                at.push((
                    format!("budget `{n}`"),
                    KeyPath::from(["budgets", n.as_str(), "state"]),
                ));
            }
        }
        for (n, b) in &p.breakers {
            if b.state == StateScope::Shared {
                at.push((
                    format!("breaker `{n}`"),
                    KeyPath::from(["breakers", n.as_str(), "state"]),
                ));
            }
        }
        for (what, path) in at {
            let message =
                format!("{what} keeps its state shared, but the policy has no `[state.redis]`");
            let d = self.error(Code::SharedWithoutRedis, message, &path)
                .with_label("`shared` needs a Redis server")
                .with_help("add `[state.redis]` with `url = { env = \"REDIS_URL\" }`, or write `state = \"local\"`");
            self.push(d);
        }
    }
}
