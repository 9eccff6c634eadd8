//! `[callers.NAME]`: who may call the relay, each by the SHA-256 hash of its key.

use super::*;

impl Compiler<'_> {
    /// Each key hash well-formed and used by one caller only.
    pub(super) fn callers(&mut self) -> Vec<Caller> {
        let mut out: Vec<Caller> = Vec::new();
        for (name, c) in &self.p().callers {
            let path = KeyPath::from(["callers", name.as_str()]);
            if name.trim().is_empty() {
                self.push(self.error(Code::InvalidValue, "a caller name must not be empty", &path));
            }
            let at = path.key("key_sha256");
            let Some(hash) = crate::policy::spans::parse_sha256_hex(&c.key_sha256) else {
                // The value is not shown: it may be the key itself.
                let message = format!("caller `{name}`: `key_sha256` is not a SHA-256 hash");
                let found = match c.key_sha256.chars().count() {
                    64 => "expected 64 hex digits, found other characters".to_string(),
                    1 => "expected 64 hex digits, found 1 character".to_string(),
                    n => format!("expected 64 hex digits, found {n} characters"),
                };
                let d = self
                    .error(Code::InvalidKeyHash, message, &at)
                    .with_label(found)
                    .with_help(
                        "store the hash, never the key: `printf %s \"$KEY\" | tollgate hash-key`",
                    );
                self.push(d);
                continue;
            };
            if let Some(&i) = self.caller_hashes.get(&hash) {
                let other = &out[i as usize].name;
                let first = KeyPath::from(["callers", other.as_str()]).key("key_sha256");
                let message = format!("callers `{other}` and `{name}` have the same key");
                let d = self
                    .error(Code::DuplicateKeyHash, message, &at)
                    .with_label("the same hash again here")
                    .with_help("give each caller its own key: a key must say who is calling")
                    .with_related(self.l.locate(&first), "first used here");
                self.push(d);
                continue;
            }
            self.caller_hashes.insert(hash, out.len() as u32);
            out.push(Caller {
                name: name.clone(),
                key_sha256: hash,
            });
        }
        out
    }
}
