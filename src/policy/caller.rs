//! `[callers.NAME]`: who may use the relay, by the SHA-256 hash of their key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A caller of the relay. Its name is what budgets (`scope.keys`) and routes
/// (`attr = "caller"`) refer to; its key is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// SHA-256 of the caller's key, as 64 hex digits (`tollgate hash-key` prints it). Never
    /// the key itself.
    pub key_sha256: String,
}
