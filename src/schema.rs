//! The JSON Schema of policy files, generated from the policy types by schemars.

use crate::policy::Policy;

/// The schema as pretty-printed JSON (what `tollgate schema` prints and
/// `schemas/policy.schema.json` holds).
pub fn policy_schema_json() -> String {
    let schema = schemars::schema_for!(Policy);
    // Serializing a JSON value to a string cannot fail.
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
