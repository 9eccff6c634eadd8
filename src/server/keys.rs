//! Caller keys: who may use the relay, each under a name that budgets can scope
//! (`scope.keys`) and routes can match (`attr = "caller"`).
//!
//! Keys come from the policy (`[callers.NAME] key_sha256`, which hot reload updates) and
//! from `name=KEY` or `name=sha256:HEX` pairs, separated by commas or newlines
//! (`tollgate serve` reads them from `TOLLGATE_CALLER_KEYS`); a name or a key in both is an
//! error. Only SHA-256 hashes are kept in memory; a presented key is hashed and looked up.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A malformed caller-key list. Never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerKeyError {
    /// An entry is not `name=KEY` or `name=sha256:HEX`.
    #[error("caller key entry {0} is not `name=KEY` or `name=sha256:HEX` (value not shown)")]
    Malformed(usize),
    /// Two entries have the same key.
    #[error("caller key entry {0} repeats an earlier key")]
    Duplicate(usize),
    /// A caller named in the list is also declared in the policy.
    #[error("caller `{0}` has a key both in the policy ([callers.{0}]) and in the caller-key list: keep one")]
    AlsoInPolicy(String),
    /// A key of the list is also the key of a caller of the policy.
    #[error("caller `{listed}` of the caller-key list has the same key as caller `{declared}` of the policy")]
    SameKeyAsPolicy {
        /// The caller in the list.
        listed: String,
        /// The caller in the policy.
        declared: String,
    },
}

/// Hashed caller keys → caller names.
#[derive(Clone, Default)]
pub struct CallerKeys {
    by_hash: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for CallerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.by_hash.values().collect();
        names.sort();
        f.debug_struct("CallerKeys").field("names", &names).finish()
    }
}

impl CallerKeys {
    /// Parses a list.
    ///
    /// ```
    /// use tollgate::server::CallerKeys;
    /// let keys = CallerKeys::parse("team-a=tk-123, team-b=sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b").unwrap();
    /// assert_eq!(keys.caller("tk-123"), Some("team-a"));
    /// assert_eq!(keys.caller("secret"), Some("team-b"));
    /// assert_eq!(keys.caller("nope"), None);
    /// ```
    pub fn parse(spec: &str) -> Result<CallerKeys, CallerKeyError> {
        let mut by_hash = HashMap::new();
        for (i, entry) in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (name, key) = entry.split_once('=').ok_or(CallerKeyError::Malformed(n))?;
            let (name, key) = (name.trim(), key.trim());
            if name.is_empty() || key.is_empty() {
                return Err(CallerKeyError::Malformed(n));
            }
            let hash = match key.strip_prefix("sha256:") {
                Some(hex) => crate::policy::spans::parse_sha256_hex(hex)
                    .ok_or(CallerKeyError::Malformed(n))?,
                None => hash(key),
            };
            if by_hash.insert(hash, name.to_string()).is_some() {
                return Err(CallerKeyError::Duplicate(n));
            }
        }
        Ok(CallerKeys { by_hash })
    }

    /// The caller a presented key belongs to.
    pub fn caller(&self, key: &str) -> Option<&str> {
        self.by_hash.get(&hash(key)).map(String::as_str)
    }

    /// The caller whose key hashes to `hash`.
    pub(crate) fn caller_by_hash(&self, hash: &[u8; 32]) -> Option<&str> {
        self.by_hash.get(hash).map(String::as_str)
    }

    /// Checks that no caller of this list is also a caller of the plan, by name or by key.
    pub fn check_against(&self, plan: &crate::plan::Plan) -> Result<(), CallerKeyError> {
        let mut listed: Vec<(&[u8; 32], &String)> = self.by_hash.iter().collect();
        listed.sort_by(|a, b| a.1.cmp(b.1));
        for (h, name) in listed {
            if plan.callers.iter().any(|c| &c.name == name) {
                return Err(CallerKeyError::AlsoInPolicy(name.clone()));
            }
            if let Some(declared) = plan.caller_by_key_hash(h) {
                return Err(CallerKeyError::SameKeyAsPolicy {
                    listed: name.clone(),
                    declared: declared.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The SHA-256 of a key as 64 lowercase hex digits: what `[callers.NAME] key_sha256` holds
/// (`tollgate hash-key` prints it).
///
/// ```
/// assert_eq!(
///     tollgate::server::hash_key_hex("secret"),
///     "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
/// );
/// ```
pub fn hash_key_hex(key: &str) -> String {
    use std::fmt::Write;
    hash(key)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_entries_are_rejected_without_showing_keys() {
        let signs = format!("a=sha256:{}", "+a".repeat(32));
        for bad in ["novalue", "=k", "a=", "a=sha256:zz", "a=sha256:ü", &signs] {
            let e = CallerKeys::parse(bad).unwrap_err();
            assert_eq!(e, CallerKeyError::Malformed(1), "{bad}");
            assert!(!e.to_string().contains("zz"));
        }
        assert_eq!(
            CallerKeys::parse("a=k,b=k").unwrap_err(),
            CallerKeyError::Duplicate(2)
        );
        assert!(CallerKeys::parse(" \n ").unwrap().is_empty());
        let k = CallerKeys::parse("a=k1\nb=k2").unwrap();
        assert!(!format!("{k:?}").contains("k1"));
    }
}
