//! Upstream API keys: read from the environment variable the policy names, at start-up.

use crate::plan::ApiKeyRef;
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
}
