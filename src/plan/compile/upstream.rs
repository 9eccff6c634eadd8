//! `[upstreams.NAME]`: the URL, the API key's variable, the pool, limits, breaker and
//! timeouts.

use super::*;
use crate::diagnostic::one_of;
use crate::http::wire::Api;
use crate::policy::spans::{env_looks_like_key, is_env_name};
use crate::policy::ApiKey;

impl Compiler<'_> {
    pub(super) fn upstream(&mut self, name: &str, u: &policy::Upstream) -> Upstream {
        let path = KeyPath::from(["upstreams", name]);
        let url_ok = ["http://", "https://"]
            .iter()
            .any(|s| u.base_url.starts_with(s) && u.base_url.len() > s.len());
        if !url_ok {
            let message = format!("base_url `{}` is not an http(s) URL", u.base_url);
            let d = self.error(Code::InvalidUrl, message, &path.key("base_url"));
            self.push(d.with_label("expected `https://host[:port]/path`"));
        }
        let api_keys = self.api_keys(name, u, &path);
        let pool = u.pool.clone().unwrap_or(policy::Pool {
            max_connections: None,
            max_idle: None,
            idle_timeout: None,
        });
        let max_connections = pool.max_connections.unwrap_or(100);
        if max_connections == 0 {
            let at = path.key("pool").key("max_connections");
            let d = self.error(Code::InvalidValue, "max_connections is 0", &at);
            self.push(d.with_label("expected at least 1"));
        }
        // As many idle as may be in flight: with fewer, a burst past `max_idle` closes the
        // surplus connections after each call and opens new ones for the next.
        let max_idle = pool.max_idle.unwrap_or(max_connections);
        let limits = self.limits(u.limits.as_ref(), &path.key("limits"));
        self.rate_limit_headers_need_rate(name, u, &limits, &path);
        let breaker = match &u.breaker {
            Some(b) => (self.resolve(Section::Breakers, b, &path.key("breaker"))).map(BreakerId),
            None => self.defaults.breaker,
        };
        let timeouts = self.timeouts(
            self.defaults.timeouts,
            u.timeouts.as_ref(),
            &path.key("timeouts"),
        );
        let api = self.api(name, u, &path);
        Upstream {
            name: name.to_string(),
            base_url: u.base_url.clone(),
            api,
            anthropic_version: (u.anthropic_version.clone())
                .unwrap_or_else(|| crate::http::wire::anthropic::DEFAULT_VERSION.to_string()),
            api_keys,
            max_connections: max_connections.max(1),
            max_idle,
            idle_timeout: pool
                .idle_timeout
                .map_or(Duration::from_secs(90), |d| d.get()),
            limits,
            rate_limit_headers: u.rate_limit_headers,
            breaker,
            timeouts,
        }
    }

    /// The wire format; `anthropic_version` only means something to an anthropic upstream.
    fn api(&mut self, name: &str, u: &policy::Upstream, path: &KeyPath) -> Api {
        let api = match u.api {
            None | Some(policy::ApiFormat::Openai) => Api::OpenAi,
            Some(policy::ApiFormat::Anthropic) => Api::Anthropic,
            Some(policy::ApiFormat::Gemini) => Api::Gemini,
        };
        if u.anthropic_version.is_some() && api != Api::Anthropic {
            let message = format!(
                "upstream `{name}` speaks `{}`: `anthropic_version` has no effect",
                api.name()
            );
            let d = self.warning(Code::IgnoredKey, message, &path.key("anthropic_version"));
            self.push(d.with_help("it is sent only to `api = \"anthropic\"` upstreams"));
        }
        api
    }

    /// `api_key`, or `api_keys` (not both, not empty, each variable once).
    fn api_keys(&mut self, name: &str, u: &policy::Upstream, path: &KeyPath) -> Vec<ApiKeyRef> {
        let Some(list) = &u.api_keys else {
            return self
                .api_key(name, u.api_key.as_ref(), &path.key("api_key"))
                .into_iter()
                .collect();
        };
        let at = path.key("api_keys");
        if u.api_key.is_some() {
            let message = format!("upstream `{name}` sets both `api_key` and `api_keys`");
            let d = self.error(Code::ConflictingKeys, message, &at);
            self.push(d.with_help("list every key in `api_keys`"));
        }
        if list.is_empty() {
            let message = format!("upstream `{name}`: `api_keys` is empty");
            let d = self.error(Code::InvalidValue, message, &at);
            self.push(d.with_label("expected at least one `{ env = \"VAR\" }`"));
        }
        let mut keys: Vec<ApiKeyRef> = Vec::with_capacity(list.len());
        let mut seen: Vec<&str> = Vec::with_capacity(list.len());
        for k in list {
            if let ApiKey::Env(e) = k {
                if seen.contains(&e.env.as_str()) {
                    let message = format!("upstream `{name}`: `api_keys` names `{}` twice", e.env);
                    self.push(self.error(Code::InvalidValue, message, &at));
                    continue;
                }
                seen.push(&e.env);
            }
            keys.extend(self.api_key(name, Some(k), &at));
        }
        keys
    }

    /// `api_key`: the name of an environment variable, never a key.
    fn api_key(&mut self, name: &str, key: Option<&ApiKey>, path: &KeyPath) -> Option<ApiKeyRef> {
        match key? {
            ApiKey::Literal(_) => {
                let message = format!("upstream `{name}` has an API key written in the policy");
                let d = self.error(Code::LiteralSecret, message, path)
                    .with_label("a literal key (not shown)")
                    .with_help("put the key in an environment variable and write `api_key = { env = \"VAR_NAME\" }`; treat this key as leaked and rotate it");
                self.push(d);
                None
            }
            ApiKey::Env(k) => {
                let kp = path.key("env");
                if env_looks_like_key(&k.env, &k.prefixes) {
                    let why = if is_env_name(&k.env) {
                        "this starts with one of the allowed key prefixes, so it is a key"
                    } else {
                        "this does not look like one"
                    };
                    let message = format!(
                        "upstream `{name}`: `env` must name an environment variable, and {why}"
                    );
                    let d = self.error(Code::LiteralSecret, message, &kp)
                        .with_label("not a variable name but a key (value not shown)")
                        .with_help("write the variable's name (e.g. `OPENAI_API_KEY`), not the key; if this was a key, rotate it");
                    self.push(d);
                    return None;
                }
                self.check_env_key(name, k, &kp);
                Some(ApiKeyRef {
                    env: k.env.clone(),
                    prefixes: k.prefixes.clone(),
                })
            }
        }
    }

    /// `rate_limit_headers` tightens the upstream's local request-rate limiter to what the
    /// server says is left; without a request rate there is nothing to tighten, and a
    /// shared rate is admitted by the state backend, which the headers do not reach.
    fn rate_limit_headers_need_rate(
        &mut self,
        name: &str,
        u: &policy::Upstream,
        limits: &Limits,
        path: &KeyPath,
    ) {
        let at = path.key("rate_limit_headers");
        if u.rate_limit_headers && limits.rate.is_none() {
            let message = format!(
                "upstream `{name}`: rate_limit_headers has no effect without a request rate"
            );
            let d = self.warning(Code::IgnoredKey, message, &at)
                .with_help("the headers only tighten a request-rate limiter: add `limits.requests_per_second` or `limits.requests_per_minute` (the provider's published limit), or remove `rate_limit_headers`");
            self.push(d);
        } else if u.rate_limit_headers && limits.state == StateScope::Shared {
            let message = format!(
                "upstream `{name}`: rate_limit_headers has no effect on a shared request rate"
            );
            let d = self.warning(Code::IgnoredKey, message, &at)
                .with_help("a `state = \"shared\"` rate is admitted through [state.redis], which the headers do not tighten; the shared limit itself is the guard");
            self.push(d);
        }
    }

    fn check_env_key(&mut self, upstream: &str, k: &policy::EnvKey, path: &KeyPath) {
        let raw = std::env::var(&k.env).ok();
        match policy::check_key(raw.as_deref(), &k.prefixes) {
            // A key a header cannot carry is the HTTP client's to refuse, at start-up.
            Ok(_) | Err(policy::KeyProblem::NotHeaderSafe) => {}
            Err(policy::KeyProblem::BadPrefix) => {
                let message = format!("upstream `{upstream}`: the key in {} does not start with an allowed prefix (value not shown)", k.env);
                let expected = one_of(k.prefixes.iter().map(String::as_str));
                let d = self
                    .error(Code::ApiKeyPrefix, message, path)
                    .with_label(format!("expected a key starting with {expected}"));
                self.push(d);
            }
            Err(policy::KeyProblem::Unset) => {
                let message = format!(
                    "upstream `{upstream}`: environment variable {} is not set",
                    k.env
                );
                let d = self.warning(Code::EnvUnset, message, path).with_help(
                    "fine for `check`; `tollgate serve` refuses to start until it is set",
                );
                self.push(d);
            }
        }
    }
}
